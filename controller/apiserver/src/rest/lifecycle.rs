//! Namespace lifecycle: objects are created only in namespaces that exist and are not
//! terminating.
//!
//! kube-apiserver checks this against an informer's cache. Here the namespace's revision as
//! last read is kept in memory and the create is guarded by it in the store: the store
//! refuses the create if the namespace changed since (deleted, terminating, or merely
//! relabelled), also when another API server sharing the store changed it, and reports the
//! namespace's current state, which is checked again. So the check costs no read while the
//! namespace is unchanged, and no create can slip into a namespace that went away.

use std::collections::HashMap;

use devplane_store::{Guard, KeyValue, Rev};
use parking_lot::Mutex;
use serde_json::Value;

use super::codec::decode;
use crate::error::{ApiError, ApiResult};
use crate::object;
use crate::server::Inner;

/// Namespaces remembered at most; beyond that the memory starts over (namespaces are few).
const MAX_REMEMBERED: usize = 4096;

/// Active namespaces and the revision they were read at.
#[derive(Default)]
pub struct ActiveNamespaces(Mutex<HashMap<String, Rev>>);

impl ActiveNamespaces {
    fn get(&self, name: &str) -> Option<Rev> {
        self.0.lock().get(name).copied()
    }

    fn remember(&self, name: &str, rev: Rev) {
        let mut active = self.0.lock();
        if active.len() >= MAX_REMEMBERED && !active.contains_key(name) {
            active.clear();
        }
        active.insert(name.to_owned(), rev);
    }

    fn forget(&self, name: &str) {
        self.0.lock().remove(name);
    }
}

impl Inner {
    /// The guard for a create in `namespace`, which must exist and not be terminating; `None`
    /// when namespaces are not served.
    pub(super) async fn namespace_guard(&self, namespace: &str) -> ApiResult<Option<Guard>> {
        let registry = self.registry();
        let Some(namespaces) = registry.get("", "v1", "namespaces") else {
            return Ok(None);
        };
        let key = namespaces.key(None, namespace);
        if let Some(mod_rev) = self.active_namespaces.get(namespace) {
            return Ok(Some(Guard { key, mod_rev }));
        }
        let current = self.read(&namespaces, None, namespace).await?;
        self.admit_namespace(namespace, key, current).map(Some)
    }

    /// The guard after a create was refused because the namespace changed to `current`.
    pub(super) fn namespace_changed(
        &self,
        namespace: &str,
        current: Option<KeyValue>,
    ) -> ApiResult<Guard> {
        let registry = self.registry();
        let namespaces = registry
            .get("", "v1", "namespaces")
            .ok_or_else(|| ApiError::internal("a namespace guard without namespaces"))?;
        let key = namespaces.key(None, namespace);
        let current = match current {
            Some(kv) => Some((decode(&namespaces, &kv)?, kv.mod_rev)),
            None => None,
        };
        self.admit_namespace(namespace, key, current)
    }

    fn admit_namespace(
        &self,
        namespace: &str,
        key: String,
        current: Option<(Value, Rev)>,
    ) -> ApiResult<Guard> {
        match current {
            None => {
                self.active_namespaces.forget(namespace);
                Err(ApiError::not_found("", "namespaces", namespace))
            }
            Some((ns, _)) if object::is_terminating(&ns) => {
                self.active_namespaces.forget(namespace);
                Err(ApiError::namespace_terminating(namespace))
            }
            Some((_, mod_rev)) => {
                self.active_namespaces.remember(namespace, mod_rev);
                Ok(Guard { key, mod_rev })
            }
        }
    }
}
