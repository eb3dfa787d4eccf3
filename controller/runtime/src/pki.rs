//! The certificate authority and tokens `devplane up` creates on first start and reuses after.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Failures setting up keys, certificates and tokens.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Key or certificate generation failed.
    #[error("cannot generate {what}: {source}")]
    Generate {
        /// What was being generated.
        what: &'static str,
        /// The cause.
        source: rcgen::Error,
    },
    /// A stored file is not what it should be.
    #[error("{path} is not valid: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write a file only the owner can read.
pub fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).map_err(io(path))?;
    file.write_all(contents.as_bytes()).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

/// The CA (certificate PEM and key) and the API server's certificate and key.
pub struct Pki {
    /// CA certificate, PEM.
    pub ca_cert_pem: String,
    /// Server certificate, PEM.
    pub server_cert_pem: String,
    /// Server key, PEM.
    pub server_key_pem: String,
}

fn ca_params() -> Result<CertificateParams, PkiError> {
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(|source| PkiError::Generate {
            what: "CA parameters",
            source,
        })?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "devplane-ca");
    dn.push(DnType::OrganizationName, "devplane");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// Load the CA from `dir` (creating it on first start) and issue a fresh server certificate for
/// `hosts` (names and IP addresses the server is reached at).
pub fn ensure(dir: &Path, hosts: &[String]) -> Result<Pki, PkiError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let ca_cert_path = dir.join("ca.crt");
    let ca_key_path = dir.join("ca.key");
    let (ca_cert_pem, ca_key) = if ca_cert_path.exists() && ca_key_path.exists() {
        let cert = std::fs::read_to_string(&ca_cert_path).map_err(io(&ca_cert_path))?;
        let key_pem = std::fs::read_to_string(&ca_key_path).map_err(io(&ca_key_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::Invalid {
            path: ca_key_path.clone(),
            reason: e.to_string(),
        })?;
        (cert, key)
    } else {
        let key = KeyPair::generate().map_err(|source| PkiError::Generate {
            what: "CA key",
            source,
        })?;
        let cert = ca_params()?
            .self_signed(&key)
            .map_err(|source| PkiError::Generate {
                what: "CA certificate",
                source,
            })?;
        write_private(&ca_key_path, &key.serialize_pem())?;
        std::fs::write(&ca_cert_path, cert.pem()).map_err(io(&ca_cert_path))?;
        (cert.pem(), key)
    };
    // The issuer is rebuilt from the same name and key, so what it signs verifies against the
    // stored CA certificate.
    let issuer = Issuer::new(ca_params()?, ca_key);
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(|source| PkiError::Generate {
            what: "server parameters",
            source,
        })?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "devplane-apiserver");
    params.distinguished_name = dn;
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    names.extend(hosts.iter().cloned());
    names.sort();
    names.dedup();
    for name in names {
        let san =
            match name.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(name.clone().try_into().map_err(|source| {
                    PkiError::Generate {
                        what: "server name",
                        source,
                    }
                })?),
            };
        params.subject_alt_names.push(san);
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate().map_err(|source| PkiError::Generate {
        what: "server key",
        source,
    })?;
    let server_cert =
        params
            .signed_by(&server_key, &issuer)
            .map_err(|source| PkiError::Generate {
                what: "server certificate",
                source,
            })?;
    let server_cert_path = dir.join("apiserver.crt");
    let server_key_path = dir.join("apiserver.key");
    std::fs::write(&server_cert_path, server_cert.pem()).map_err(io(&server_cert_path))?;
    write_private(&server_key_path, &server_key.serialize_pem())?;
    Ok(Pki {
        ca_cert_pem,
        server_cert_pem: server_cert.pem(),
        server_key_pem: server_key.serialize_pem(),
    })
}

/// A rustls server configuration from PEM certificate and key.
pub fn server_config(cert_pem: &str, key_pem: &str) -> Result<rustls::ServerConfig, String> {
    server_config_with(cert_pem, key_pem, false)
}

/// [`server_config`]; with `client_certificates`, clients are asked for a certificate (not
/// required): the device HTTPS listener, where certificate attestation checks it per
/// provisioning policy.
pub fn server_config_with(
    cert_pem: &str,
    key_pem: &str,
    client_certificates: bool,
) -> Result<rustls::ServerConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("server certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("server key: {e}"))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = if client_certificates {
        builder.with_client_cert_verifier(
            devplane_frontdoor::provision::x509::OptionalClientCertificates::new(&provider),
        )
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS configuration: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A random bearer token: 32 bytes, hex.
pub fn new_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Tokens of `devplane up`'s users, kept in `<data-dir>/tokens.json`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Tokens {
    /// Full access, for people and kubectl.
    pub admin: String,
    /// For `devplane controller` processes that connect from outside.
    pub controller: String,
}

/// Load the tokens, creating them on first start.
pub fn tokens(path: &Path) -> Result<Tokens, PkiError> {
    if path.exists() {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        return serde_json::from_str(&text).map_err(|e| PkiError::Invalid {
            path: path.to_path_buf(),
            reason: e.to_string(),
        });
    }
    let tokens = Tokens {
        admin: new_token(),
        controller: new_token(),
    };
    let text = serde_json::to_string_pretty(&tokens).map_err(|e| PkiError::Invalid {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    write_private(path, &text)?;
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_created_once_and_signs_a_server_certificate_each_start() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = ensure(dir.path(), &["devplane.local".into()]).expect("first start");
        let second = ensure(dir.path(), &[]).expect("second start");
        assert_eq!(first.ca_cert_pem, second.ca_cert_pem, "the CA is kept");
        assert_ne!(
            first.server_key_pem, second.server_key_pem,
            "the server key is new"
        );
        server_config(&second.server_cert_pem, &second.server_key_pem)
            .expect("rustls accepts the pair");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("ca.key"))
                .expect("ca.key")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the CA key is private");
        }
    }

    #[test]
    fn tokens_are_random_and_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tokens.json");
        let first = tokens(&path).expect("created");
        let again = tokens(&path).expect("loaded");
        assert_eq!(first.admin, again.admin);
        assert_ne!(first.admin, first.controller);
        assert_eq!(first.admin.len(), 64);
    }
}
