//! The API server's derived indexes (the registry from the CRDs, the RBAC index, the admission
//! webhooks) kept in step with their objects in the store, by one prefix watch each.

use std::sync::Arc;
use std::time::Duration;

use devplane_store::StoreError;
use futures::StreamExt;

use super::{Inner, RBAC_PREFIX, WEBHOOKS_PREFIX, sleep_or_shutdown};

/// What a prefix watch keeps current.
#[derive(Clone, Copy, Debug)]
pub(super) enum Follow {
    /// The registry, from the CRDs.
    Crds,
    /// The RBAC index.
    Rbac,
    /// The admission webhooks.
    Webhooks,
}

impl Follow {
    fn prefix(self) -> &'static str {
        match self {
            Follow::Crds => "/registry/apiextensions.k8s.io/customresourcedefinitions/",
            Follow::Rbac => RBAC_PREFIX,
            Follow::Webhooks => WEBHOOKS_PREFIX,
        }
    }

    async fn refresh(self, inner: &Inner) {
        let result = match self {
            Follow::Crds => inner.refresh_registry().await,
            Follow::Rbac => inner.refresh_rbac().await,
            Follow::Webhooks => inner.refresh_webhooks().await,
        };
        if let Err(e) = result {
            tracing::warn!(what = ?self, error = %e, "cannot reload from the store");
        }
    }
}

/// Keep one derived index in step with its objects in the store (written by this or another
/// process sharing the store).
pub(super) async fn follow(inner: Arc<Inner>, what: Follow) {
    loop {
        let start = match inner.store.current_revision().await {
            Ok(rev) => rev,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the store revision");
                if sleep_or_shutdown(&inner, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
        };
        what.refresh(&inner).await;
        let mut stream = match inner.store.watch(what.prefix(), start).await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(what = ?what, error = %e, "cannot watch the store");
                if sleep_or_shutdown(&inner, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
        };
        loop {
            tokio::select! {
                _ = inner.shutdown.cancelled() => return,
                next = stream.next() => match next {
                    Some(Ok(_)) => what.refresh(&inner).await,
                    Some(Err(StoreError::Compacted { .. })) | None => break,
                    Some(Err(e)) => {
                        tracing::warn!(what = ?what, error = %e, "store watch failed");
                        break;
                    }
                }
            }
        }
    }
}
