//! What the server serves: built-in kinds and the kinds of every established CRD.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use devplane_schema::{CompiledSchema, Schema};

use crate::builtin::{self, Builtin};
use crate::table::Column;

/// One served resource (a kind in one group-version).
#[derive(Debug)]
pub struct Resource {
    /// API group ("" for core).
    pub group: String,
    /// API version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Kind of its lists.
    pub list_kind: String,
    /// Plural (the path segment).
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Short names for kubectl.
    pub short_names: Vec<String>,
    /// Categories (`kubectl get <category>`).
    pub categories: Vec<String>,
    /// Whether `/status` is a subresource (status is then reset on main-resource writes).
    pub status_subresource: bool,
    /// Built-in behaviour, if a built-in kind.
    pub builtin: Option<Builtin>,
    /// Schema that validates, prunes and defaults objects (CRs: the CRD version's schema;
    /// built-ins: derived from the upstream types).
    pub schema: Option<Arc<CompiledSchema>>,
    /// Type information for server-side apply.
    pub type_info: Option<Arc<Schema>>,
    /// Columns of `kubectl get`.
    pub columns: Vec<Column>,
    /// Field selectors allowed beyond metadata.name and metadata.namespace.
    pub selectable_fields: Vec<String>,
    /// Storage key segment: objects live under `/registry/<storage>/`.
    pub storage: String,
    /// Name of the kind's schema in OpenAPI documents.
    pub openapi_name: String,
    /// Whether PUT without a resourceVersion is allowed (ConfigMaps, Secrets, …).
    pub unconditional_update: bool,
    /// For CR kinds: the owning CRD's name.
    pub crd: Option<String>,
}

impl Resource {
    /// `apiVersion` of objects of this resource.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Store key prefix of all objects, or of one namespace's.
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{}/{ns}/", self.storage),
            _ => format!("/registry/{}/", self.storage),
        }
    }

    /// Store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{}/{ns}/{name}", self.storage),
            _ => format!("/registry/{}/{name}", self.storage),
        }
    }

    /// Verbs for discovery.
    pub fn verbs(&self) -> Vec<&'static str> {
        if self.builtin.is_some_and(Builtin::is_review) {
            return vec!["create"];
        }
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

/// Every served resource, indexed.
#[derive(Debug, Default)]
pub struct Registry {
    resources: Vec<Arc<Resource>>,
    by_path: HashMap<(String, String, String), Arc<Resource>>,
    /// Bumped on every change; discovery and OpenAPI derive their ETags from it.
    pub generation: u64,
}

impl Registry {
    /// A registry with the built-in kinds and the given CRD-derived resources.
    pub fn new(custom: Vec<Resource>, generation: u64) -> Registry {
        let mut registry = Registry {
            generation,
            ..Registry::default()
        };
        for resource in builtin::resources().into_iter().chain(custom) {
            let resource = Arc::new(resource);
            registry.by_path.insert(
                (
                    resource.group.clone(),
                    resource.version.clone(),
                    resource.plural.clone(),
                ),
                resource.clone(),
            );
            registry.resources.push(resource);
        }
        registry
    }

    /// The resource at a group, version and plural.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<Resource>> {
        self.by_path
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .cloned()
    }

    /// Whether a plural of a group-version is namespaced.
    pub fn is_namespaced(&self, group: &str, version: &str, plural: &str) -> bool {
        self.get(group, version, plural)
            .is_some_and(|r| r.namespaced)
    }

    /// The other resources that serve the objects of `resource`: its kind's other served
    /// versions, and Events through the other group (kube-apiserver's equivalent resources).
    pub fn equivalents(&self, resource: &Resource) -> Vec<Arc<Resource>> {
        self.resources
            .iter()
            .filter(|r| {
                r.storage == resource.storage
                    && (r.group != resource.group || r.version != resource.version)
            })
            .cloned()
            .collect()
    }

    /// Every resource.
    pub fn resources(&self) -> &[Arc<Resource>] {
        &self.resources
    }

    /// Group → versions (preferred first) → resources.
    pub fn groups(&self) -> BTreeMap<String, BTreeMap<String, Vec<Arc<Resource>>>> {
        let mut groups: BTreeMap<String, BTreeMap<String, Vec<Arc<Resource>>>> = BTreeMap::new();
        for r in &self.resources {
            groups
                .entry(r.group.clone())
                .or_default()
                .entry(r.version.clone())
                .or_default()
                .push(r.clone());
        }
        groups
    }

    /// Resources that share a storage segment with `resource` (Events are served by two
    /// group-versions from one store).
    pub fn namespaced_storages(&self) -> Vec<Arc<Resource>> {
        let mut seen = std::collections::HashSet::new();
        self.resources
            .iter()
            .filter(|r| r.namespaced && seen.insert(r.storage.clone()))
            .cloned()
            .collect()
    }
}

/// The preferred version of a group: the first served version, by Kubernetes version priority
/// (GA > beta > alpha, higher numbers first).
pub fn version_priority(a: &str, b: &str) -> std::cmp::Ordering {
    fn rank(v: &str) -> (u8, u32, u32) {
        let Some(rest) = v.strip_prefix('v') else {
            return (0, 0, 0);
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let major = digits.parse().unwrap_or(0);
        let tail = &rest[digits.len()..];
        if tail.is_empty() {
            return (3, major, 0);
        }
        let (stage, n) = if let Some(n) = tail.strip_prefix("beta") {
            (2, n)
        } else if let Some(n) = tail.strip_prefix("alpha") {
            (1, n)
        } else {
            return (0, 0, 0);
        };
        (stage, major, n.parse().unwrap_or(0))
    }
    rank(b).cmp(&rank(a)).then_with(|| a.cmp(b))
}

/// The OpenAPI component name of a kind: `io.devplane.iot.v1alpha1.Device` for group
/// `iot.devplane.io` (reversed, as kube-apiserver names CRD schemas).
pub fn openapi_name(group: &str, version: &str, kind: &str) -> String {
    let reversed: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{version}.{kind}", reversed.join("."))
}

/// A value derived from the registry (the OpenAPI documents), built on first use and rebuilt
/// once the registry has changed (a CRD was established or removed).
#[derive(Debug)]
pub struct RegistryCache<T> {
    slot: parking_lot::Mutex<Option<(u64, Arc<T>)>>,
}

impl<T> Default for RegistryCache<T> {
    fn default() -> Self {
        RegistryCache {
            slot: parking_lot::Mutex::new(None),
        }
    }
}

impl<T> RegistryCache<T> {
    /// The value for `registry`, built by `build` unless the cached one is of its generation.
    pub fn get(&self, registry: &Registry, build: impl FnOnce(&Registry) -> T) -> Arc<T> {
        let mut slot = self.slot.lock();
        if let Some((generation, value)) = slot.as_ref()
            && *generation == registry.generation
        {
            return value.clone();
        }
        let value = Arc::new(build(registry));
        *slot = Some((registry.generation, value.clone()));
        value
    }
}
