//! What happens after a failed reconcile. A transient failure (the API unavailable, a conflict,
//! a timeout) is retried with an exponential backoff per object — 1 s, doubling to 5 minutes,
//! with jitter so a fleet does not retry in step — and the count starts over after a success.
//! Invalid input (the API refused what was written as invalid) is not retried hot: once every
//! 5 minutes, with a Warning Event on the object naming the cause.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kube::Resource;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use parking_lot::Mutex;

use crate::context::Context;
use crate::error::{Error, chain};

/// First retry of a transient failure.
const FIRST: Duration = Duration::from_secs(1);
/// Longest wait between retries, and the wait after invalid input.
const LONGEST: Duration = Duration::from_secs(300);

/// An object a controller reconciles: controller, namespace, name.
type Key = (&'static str, String, String);

/// Consecutive failures per object.
#[derive(Debug, Default)]
pub struct Retries(Mutex<HashMap<Key, u32>>);

impl Retries {
    /// One more failure of `key`; how many in a row now.
    fn failed(&self, key: Key) -> u32 {
        let mut failures = self.0.lock();
        let n = failures.entry(key).or_default();
        *n = n.saturating_add(1);
        *n
    }

    /// `key` reconciled: its next failure waits the shortest again. True when it was waiting.
    pub fn succeeded(
        &self,
        controller: &'static str,
        namespace: Option<String>,
        name: String,
    ) -> bool {
        let mut failures = self.0.lock();
        !failures.is_empty()
            && failures
                .remove(&(controller, namespace.unwrap_or_default(), name))
                .is_some()
    }

    /// Objects of `controller` waiting for a retry.
    pub fn waiting(&self, controller: &str) -> usize {
        self.0.lock().keys().filter(|k| k.0 == controller).count()
    }
}

/// The wait before the `failures`-th retry (1-based): doubling from [`FIRST`] up to
/// [`LONGEST`], then up to a quarter less at random.
pub fn backoff(failures: u32) -> Duration {
    let doubled = FIRST.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let capped = doubled.min(LONGEST);
    let jitter = rand::random::<f64>() * 0.25;
    capped.mul_f64(1.0 - jitter)
}

/// The error policy every controller shares: logs the error with its whole cause chain, then
/// backs off (transient) or waits long and says why on the object (invalid input).
pub fn error_policy<K>(
    controller: &'static str,
    object: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
{
    let key = (
        controller,
        object.namespace().unwrap_or_default(),
        object.name_any(),
    );
    if error.is_namespace_terminating() {
        tracing::debug!(controller, object = %format!("{}/{}", key.1, key.2), error = %chain(error), "namespace is being deleted; the object goes with it");
        return Action::await_change();
    }
    let failures = ctx.retries.failed(key.clone());
    ctx.observer
        .waiting(controller, ctx.retries.waiting(controller));
    let object_name = format!("{}/{}", key.1, key.2);
    if error.is_invalid() {
        tracing::warn!(controller, object = %object_name, error = %chain(error), category = error.category(), "reconcile refused as invalid; retrying in 5 minutes");
        if failures == 1 {
            let note = chain(error);
            tokio::spawn(async move {
                ctx.event(
                    object.as_ref(),
                    EventType::Warning,
                    "ReconcileRefused",
                    "Reconcile",
                    note,
                )
                .await;
            });
        }
        return Action::requeue(LONGEST);
    }
    let wait = backoff(failures);
    tracing::warn!(controller, object = %object_name, error = %chain(error), category = error.category(), failures, retry_in_ms = wait.as_millis() as u64, "reconcile failed; retrying with backoff");
    Action::requeue(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_from_a_second_to_five_minutes_with_jitter() {
        for (failures, full) in [
            (1, 1.0),
            (2, 2.0),
            (3, 4.0),
            (9, 256.0),
            (10, 300.0),
            (40, 300.0),
        ] {
            let wait = backoff(failures).as_secs_f64();
            assert!(wait <= full && wait >= full * 0.75, "{failures}: {wait}");
        }
    }

    #[test]
    fn a_success_starts_the_count_over_and_objects_waiting_are_counted_per_controller() {
        let retries = Retries::default();
        let key = |name: &str| ("device", "ns".to_string(), name.to_string());
        assert_eq!(retries.failed(key("a")), 1);
        assert_eq!(retries.failed(key("a")), 2);
        retries.failed(key("b"));
        retries.failed(("gateway", "ns".into(), "a".into()));
        assert_eq!(retries.waiting("device"), 2);
        retries.succeeded("device", Some("ns".into()), "a".into());
        assert_eq!(retries.failed(key("a")), 1);
    }
}
