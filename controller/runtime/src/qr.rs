//! `devplane qr`: QR codes that hand a device what it needs to come online.
//!
//! - `--policy P --id ID` / `--policy P --all`: provisioning links (`devplane:provision?…`) for
//!   a ProvisioningPolicy, with the proof derived from the group key (symmetricKey) and the
//!   serial number and one-time token of pre-registered entries (preRegistered).
//! - `--batch B`: connect links (`devplane:connect?…`) from the credentials Secrets of the
//!   devices OnboardingBatch B created.
//!
//! Codes go to one `.png`/`.svg` file, or a directory with `<id>.png` and `<id>.svg` each, and
//! optionally to one printable HTML sheet. The link format is
//! `devplane_core::provisioning::Link`; `docs/provisioning.md` describes it for app authors.

mod links;
mod render;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use devplane_api::constants::labels;
use devplane_api::v1alpha1::{Device, OnboardingBatch, ProvisioningPolicy};
use devplane_core::naming::credentials_secret_name;
use devplane_core::provisioning::GROUP_KEY;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::ListParams;

pub use links::{Code, LinkError, PolicyAt, Select, connect_code, file_stems, provision_codes};
pub use render::{Matrix, PNG_SCALE, QUIET_ZONE, RenderError, SheetEntry, escape, sheet};

use crate::cli::QrArgs;

/// Why `devplane qr` drew nothing.
#[derive(Debug, thiserror::Error)]
pub enum QrError {
    /// A policy mode without `--endpoint`.
    #[error(
        "--endpoint is required with --policy: the base URL of the front door's HTTP(S) \
         listener that devices reach, e.g. https://devices.example.com:8443"
    )]
    MissingEndpoint,
    /// `--endpoint` is not an HTTP(S) URL.
    #[error("--endpoint {0:?} is not an http:// or https:// URL with a host")]
    BadEndpoint(String),
    /// No client could be built.
    #[error("{0}")]
    Client(String),
    /// An API call failed.
    #[error("cannot {what}: {source}")]
    Api {
        /// What was being read.
        what: String,
        /// The API's answer.
        #[source]
        source: kube::Error,
    },
    /// The policy does not exist.
    #[error("ProvisioningPolicy {namespace}/{name} not found")]
    PolicyNotFound {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// The group key Secret does not exist or holds no key.
    #[error(
        "ProvisioningPolicy {policy} derives proofs from Secret {namespace}/{secret}, key \
         {GROUP_KEY}: {problem}"
    )]
    GroupKey {
        /// The policy.
        policy: String,
        /// The Secret's namespace.
        namespace: String,
        /// The Secret.
        secret: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The policy gives no code for what was asked.
    #[error(transparent)]
    Links(#[from] LinkError),
    /// No device carries the batch's label.
    #[error("no Device in namespace {namespace} was created by OnboardingBatch {batch}{hint}")]
    NoDevices {
        /// The namespace.
        namespace: String,
        /// The batch.
        batch: String,
        /// Whether the batch exists, as advice.
        hint: &'static str,
    },
    /// Devices exist, none has credentials yet.
    #[error(
        "none of the {count} devices of OnboardingBatch {batch} has credentials yet: {names} \
         (a Device gets its Secret once its lifecycle is Provisioned or later)",
        count = devices.len(),
        names = devices.join(", ")
    )]
    NoCredentials {
        /// The batch.
        batch: String,
        /// Its devices.
        devices: Vec<String>,
    },
    /// Nothing to draw (an empty allow-list).
    #[error("{0} gives no code: it lists no device")]
    NoCodes(String),
    /// One file was named for several codes.
    #[error(
        "--out {path} takes one code, but there are {count}: name a directory instead",
        path = path.display()
    )]
    OneFileManyCodes {
        /// The file.
        path: PathBuf,
        /// How many codes.
        count: usize,
    },
    /// A code could not be drawn.
    #[error("cannot draw the code of {id}: {source}")]
    Render {
        /// The code's id.
        id: String,
        /// Why.
        #[source]
        source: RenderError,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}", path = path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Where `--out` puts the codes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// One PNG file.
    Png(PathBuf),
    /// One SVG file.
    Svg(PathBuf),
    /// A directory receiving `<id>.png` and `<id>.svg` for each code.
    Directory(PathBuf),
}

impl Target {
    /// A path ending in `.png` or `.svg` (any case) is one file; anything else a directory.
    pub fn of(path: &Path) -> Target {
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("png") => Target::Png(path.to_path_buf()),
            Some("svg") => Target::Svg(path.to_path_buf()),
            _ => Target::Directory(path.to_path_buf()),
        }
    }
}

/// The base URL of `--endpoint`, without a trailing `/`.
pub fn endpoint_of(text: &str) -> Result<String, QrError> {
    let trimmed = text.trim().trim_end_matches('/');
    let host = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"));
    match host {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(trimmed.to_string()),
        _ => Err(QrError::BadEndpoint(text.to_string())),
    }
}

/// Draw the codes `args` asks for; a summary goes to stdout, warnings to stderr.
pub async fn run(args: &QrArgs) -> Result<(), QrError> {
    // Argument problems fail before any connection is attempted.
    let endpoint = match (&args.policy, &args.endpoint) {
        (Some(_), None) => return Err(QrError::MissingEndpoint),
        (_, Some(endpoint)) => Some(endpoint_of(endpoint)?),
        (None, None) => None,
    };
    let target = args.out.as_deref().map(Target::of);
    let client = crate::controller::client_from(args.kubeconfig.as_deref())
        .await
        .map_err(QrError::Client)?;
    let namespace = args.namespace.as_str();
    let (codes, title) = match (&args.policy, &args.batch) {
        (Some(policy), _) => {
            let select = match &args.id {
                Some(id) => Select::Id(id),
                None => Select::All,
            };
            let at = PolicyAt {
                endpoint: endpoint.as_deref().unwrap_or_default(),
                namespace,
                name: policy,
            };
            let codes = policy_codes(&client, at, select).await?;
            (codes, format!("ProvisioningPolicy {namespace}/{policy}"))
        }
        (None, Some(batch)) => {
            let codes = batch_codes(&client, namespace, batch).await?;
            (codes, format!("OnboardingBatch {namespace}/{batch}"))
        }
        // clap requires one of --id, --all (both with --policy) and --batch.
        (None, None) => (Vec::new(), String::new()),
    };
    write(&codes, target.as_ref(), args.sheet.as_deref(), &title)
}

/// Read the policy (and its group key when it has one) and make its codes.
async fn policy_codes(
    client: &kube::Client,
    at: PolicyAt<'_>,
    select: Select<'_>,
) -> Result<Vec<Code>, QrError> {
    let policies: Api<ProvisioningPolicy> = Api::namespaced(client.clone(), at.namespace);
    let policy = policies
        .get_opt(at.name)
        .await
        .map_err(|source| QrError::Api {
            what: format!("read ProvisioningPolicy {}/{}", at.namespace, at.name),
            source,
        })?
        .ok_or_else(|| QrError::PolicyNotFound {
            namespace: at.namespace.to_string(),
            name: at.name.to_string(),
        })?;
    let attestation = &policy.spec.attestation;
    let group_key = match &attestation.symmetric_key {
        Some(symmetric) => Some(group_key(client, at, &symmetric.secret_ref.name).await?),
        None => None,
    };
    if attestation.x509.is_some() {
        eprintln!(
            "note: ProvisioningPolicy {} also requires a client certificate (x509); the codes \
             do not carry it",
            at.name
        );
    }
    Ok(provision_codes(
        at,
        &policy.spec,
        group_key.as_deref(),
        select,
    )?)
}

async fn group_key(
    client: &kube::Client,
    at: PolicyAt<'_>,
    secret: &str,
) -> Result<Vec<u8>, QrError> {
    let problem = |problem| QrError::GroupKey {
        policy: at.name.to_string(),
        namespace: at.namespace.to_string(),
        secret: secret.to_string(),
        problem,
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), at.namespace);
    let found = secrets
        .get_opt(secret)
        .await
        .map_err(|source| QrError::Api {
            what: format!("read Secret {}/{secret}", at.namespace),
            source,
        })?
        .ok_or_else(|| problem("the Secret does not exist"))?;
    found
        .data
        .and_then(|mut data| data.remove(GROUP_KEY))
        .map(|key| key.0)
        .filter(|key| !key.is_empty())
        .ok_or_else(|| problem("the Secret has no such key, or it is empty"))
}

/// A connect code for every device of the batch that has credentials; the others are named
/// on stderr (an error when none has any).
async fn batch_codes(
    client: &kube::Client,
    namespace: &str,
    batch: &str,
) -> Result<Vec<Code>, QrError> {
    let devices: Api<Device> = Api::namespaced(client.clone(), namespace);
    let selector = format!(
        "{}={}",
        labels::BATCH,
        devplane_core::naming::owner_label_value(batch)
    );
    let mut devices = devices
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| QrError::Api {
            what: format!("list the Devices of OnboardingBatch {namespace}/{batch}"),
            source,
        })?
        .items;
    if devices.is_empty() {
        let batches: Api<OnboardingBatch> = Api::namespaced(client.clone(), namespace);
        let exists = batches
            .get_opt(batch)
            .await
            .map_err(|source| QrError::Api {
                what: format!("read OnboardingBatch {namespace}/{batch}"),
                source,
            })?
            .is_some();
        return Err(QrError::NoDevices {
            namespace: namespace.to_string(),
            batch: batch.to_string(),
            hint: if exists {
                " (yet: is it complete? `devplane onboard --wait` follows it)"
            } else {
                " (and no such batch exists)"
            },
        });
    }
    devices.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    // One list instead of a read per device.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secrets: BTreeMap<String, Secret> = secrets
        .list(&ListParams::default().labels(labels::DEVICE))
        .await
        .map_err(|source| QrError::Api {
            what: format!("list the credentials Secrets in namespace {namespace}"),
            source,
        })?
        .items
        .into_iter()
        .filter_map(|s| Some((s.metadata.name.clone()?, s)))
        .collect();
    let mut codes = Vec::with_capacity(devices.len());
    let mut without = Vec::new();
    for device in &devices {
        let name = device.metadata.name.clone().unwrap_or_default();
        let code = secrets
            .get(&credentials_secret_name(&name))
            .filter(|s| credentials_owner(s) == Some(name.as_str()))
            .and_then(|s| {
                let data: BTreeMap<String, Vec<u8>> = s
                    .data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.0.clone()))
                    .collect();
                connect_code(&name, device.spec.serial_number.as_deref(), &data)
            });
        match code {
            Some(code) => codes.push(code),
            None => without.push(name),
        }
    }
    if codes.is_empty() {
        return Err(QrError::NoCredentials {
            batch: batch.to_string(),
            devices: without,
        });
    }
    for name in &without {
        eprintln!("warning: device {namespace}/{name} has no credentials yet: no code for it");
    }
    Ok(codes)
}

/// The device a credentials Secret belongs to, by its label (and the annotation that holds a
/// name too long for the label).
fn credentials_owner(secret: &Secret) -> Option<&str> {
    let label = secret.metadata.labels.as_ref()?.get(labels::DEVICE)?;
    Some(devplane_core::naming::owner_from_label(
        label,
        secret.metadata.annotations.as_ref(),
    ))
}

/// Draw every code into the target and the sheet; says on stdout what was written.
pub fn write(
    codes: &[Code],
    target: Option<&Target>,
    sheet_path: Option<&Path>,
    title: &str,
) -> Result<(), QrError> {
    if codes.is_empty() {
        return Err(QrError::NoCodes(title.to_string()));
    }
    let drawn = codes
        .iter()
        .map(|code| {
            Matrix::encode(&code.link.to_uri()).map_err(|source| QrError::Render {
                id: code.id.clone(),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let render = |id: &str, result: Result<Vec<u8>, RenderError>| {
        result.map_err(|source| QrError::Render {
            id: id.to_string(),
            source,
        })
    };
    match target {
        Some(Target::Png(path) | Target::Svg(path)) if codes.len() != 1 => {
            return Err(QrError::OneFileManyCodes {
                path: path.clone(),
                count: codes.len(),
            });
        }
        Some(Target::Png(path)) => {
            write_private(path, &render(&codes[0].id, drawn[0].png(PNG_SCALE))?)?;
            println!("wrote the code of {} to {}", codes[0].id, path.display());
        }
        Some(Target::Svg(path)) => {
            write_private(path, drawn[0].svg(Some(svg_pixels(&drawn[0]))).as_bytes())?;
            println!("wrote the code of {} to {}", codes[0].id, path.display());
        }
        Some(Target::Directory(dir)) => {
            std::fs::create_dir_all(dir).map_err(|source| QrError::Write {
                path: dir.clone(),
                source,
            })?;
            for ((code, matrix), stem) in codes.iter().zip(&drawn).zip(file_stems(codes)) {
                let png = render(&code.id, matrix.png(PNG_SCALE))?;
                write_private(&dir.join(format!("{stem}.png")), &png)?;
                let svg = matrix.svg(Some(svg_pixels(matrix)));
                write_private(&dir.join(format!("{stem}.svg")), svg.as_bytes())?;
            }
            println!(
                "wrote {} codes to {} (<id>.png and <id>.svg each)",
                codes.len(),
                dir.display()
            );
        }
        None => {}
    }
    if let Some(path) = sheet_path {
        let entries: Vec<SheetEntry> = codes
            .iter()
            .zip(&drawn)
            .map(|(code, matrix)| SheetEntry {
                svg: matrix.svg(None),
                caption: code.caption.clone(),
            })
            .collect();
        write_private(path, sheet(title, &entries).as_bytes())?;
        println!(
            "wrote a sheet of {} codes to {}",
            codes.len(),
            path.display()
        );
    }
    Ok(())
}

/// A standalone SVG is as large as its PNG.
fn svg_pixels(matrix: &Matrix) -> usize {
    matrix.size() * PNG_SCALE
}

/// Codes carry secrets: files are created readable by their owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), QrError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .and_then(|mut file| file.write_all(bytes))
        .map_err(|source| QrError::Write {
            path: path.to_path_buf(),
            source,
        })
}
