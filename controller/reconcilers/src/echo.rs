//! A controller's own writes come back to it through its watches. When such an event carries
//! exactly what the controller wrote (the same resourceVersion) and the controller had nothing
//! more to do, it is an echo: reconciling it again would only confirm that nothing changed.
//! Dropping echoes halves the reconciles of an onboarding (a device's Secret and status each
//! used to trigger one more pass).
//!
//! The echo can overtake the write's answer: the watch may hand it on before the reconcile that
//! wrote has read the answer. So while a write is under way ([`Echoes::writing`]) the object's
//! events are held back. Once the answer is in, the echo among them is dropped; any other (a
//! change by someone else, or one from before the write) has the controller reconcile its
//! object again, through the controller's [`Echoes::retriggers`]. A change to the object after
//! the write has another resourceVersion and always gets through.
//!
//! An echo may never come: the watch started over after the object had changed again, or the
//! object was deleted. What was left to recognise it is forgotten after [`ECHO_WAIT`], so that
//! a fleet's churn leaves nothing behind.

use std::any::TypeId;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::Stream;
use kube::{Resource, ResourceExt};
use parking_lot::Mutex;
use tokio::sync::mpsc;

/// Which controller wrote, the object's kind (its Rust type: a Device may have the name of
/// another device's Secret), namespace and name.
type Key = (&'static str, TypeId, String, String);

/// Namespace and name of the object a controller reconciles.
pub type Owner = (String, String);

/// What a controller's write to one object left to recognise.
enum Slot {
    /// The write is under way: the resourceVersions of the events held back meanwhile, and
    /// whom to reconcile again should one of them not be the write's echo.
    Writing { held: Vec<String>, owner: Owner },
    /// The write's answer was this version, and its echo has not come yet.
    Wrote { version: String, at: Instant },
}

/// How long a write's echo is waited for. It comes within moments; one that has not come by
/// then never will, and an echo that did come later would only cost a reconcile.
const ECHO_WAIT: Duration = Duration::from_secs(300);

/// How often the slots are looked through for echoes waited for too long.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The slots, and when they were last swept.
struct Slots {
    by_key: HashMap<Key, Slot>,
    swept: Instant,
}

impl Default for Slots {
    fn default() -> Self {
        Slots {
            by_key: HashMap::new(),
            swept: Instant::now(),
        }
    }
}

impl Slots {
    /// Forgets the echoes waited for longer than [`ECHO_WAIT`] at `now`, once per
    /// [`SWEEP_EVERY`].
    fn sweep(&mut self, now: Instant) {
        if now.saturating_duration_since(self.swept) < SWEEP_EVERY {
            return;
        }
        self.swept = now;
        self.by_key.retain(|_, slot| match slot {
            Slot::Wrote { at, .. } => now.saturating_duration_since(*at) < ECHO_WAIT,
            Slot::Writing { .. } => true,
        });
    }
}

/// Writes whose watch events need no reconcile, by controller and object.
#[derive(Default)]
pub struct Echoes {
    slots: Mutex<Slots>,
    /// Where each controller takes the objects to reconcile again.
    retriggers: Mutex<HashMap<&'static str, mpsc::UnboundedSender<Owner>>>,
}

impl Echoes {
    /// The objects `controller` must reconcile again because an event held back during one of
    /// its writes was not that write's echo. One stream per controller (a later call takes the
    /// place of an earlier one).
    pub fn retriggers(
        &self,
        controller: &'static str,
    ) -> impl Stream<Item = Owner> + Send + 'static + use<> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.retriggers.lock().insert(controller, sender);
        futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|owner| (owner, receiver))
        })
    }

    /// `controller` is about to write the `K` `namespace/name` while reconciling `owner`: the
    /// object's events are held back until the write's answer (or failure) is known.
    pub fn writing<K: 'static>(
        &self,
        controller: &'static str,
        namespace: &str,
        name: &str,
        owner: Owner,
    ) -> Writing<'_> {
        let key = (
            controller,
            TypeId::of::<K>(),
            namespace.to_string(),
            name.to_string(),
        );
        let held = Vec::new();
        self.slots
            .lock()
            .by_key
            .insert(key.clone(), Slot::Writing { held, owner });
        Writing {
            echoes: self,
            key: Some(key),
        }
    }

    /// Whether a watch event of `object` is to be dropped: the echo of `controller`'s last
    /// write (each echo is recognised once), or an event held back while a write is under way.
    pub fn is_echo<K: Resource + 'static>(&self, controller: &'static str, object: &K) -> bool {
        let (Some(namespace), Some(version)) = (object.namespace(), object.resource_version())
        else {
            return false;
        };
        let key = (controller, TypeId::of::<K>(), namespace, object.name_any());
        let slots = &mut self.slots.lock().by_key;
        match slots.get_mut(&key) {
            Some(Slot::Writing { held, .. }) => {
                held.push(version);
                true
            }
            Some(Slot::Wrote {
                version: written, ..
            }) if *written == version => {
                slots.remove(&key);
                true
            }
            _ => false,
        }
    }

    /// End the write of `key`: `answer` is the version it made when the controller has nothing
    /// more to do (its echo needs no reconcile), None otherwise. Held-back events other than
    /// the echo have the owner reconciled again.
    fn finish(&self, key: Key, answer: Option<String>) {
        let controller = key.0;
        let mut slots = self.slots.lock();
        let Some(Slot::Writing { held, owner }) = slots.by_key.remove(&key) else {
            return;
        };
        let others = match &answer {
            Some(version) => held.iter().any(|v| v != version),
            None => !held.is_empty(),
        };
        let echoed = answer.as_ref().is_some_and(|v| held.contains(v));
        let now = Instant::now();
        if let Some(version) = answer.filter(|_| !echoed) {
            slots.by_key.insert(key, Slot::Wrote { version, at: now });
        }
        slots.sweep(now);
        drop(slots);
        if others && let Some(sender) = self.retriggers.lock().get(controller) {
            let _ = sender.send(owner);
        }
    }
}

/// A write under way (see [`Echoes::writing`]). Dropped without [`Writing::wrote`] or
/// [`Writing::forget`] (the write failed), it lets the object's events through again, and the
/// owner is reconciled again if any were held back.
pub struct Writing<'a> {
    echoes: &'a Echoes,
    key: Option<Key>,
}

impl Writing<'_> {
    /// The write's answer was `written` and the controller has nothing more to do: its echo,
    /// held back or still to come, needs no reconcile.
    pub fn wrote<K: Resource>(mut self, written: &K) {
        if let Some(key) = self.key.take() {
            self.echoes.finish(key, written.resource_version());
        }
    }

    /// The controller is to reconcile again whatever comes back: the write's echo is let
    /// through, or, when it was held back, the owner is reconciled again.
    pub fn forget(self) {
        // What dropping it does.
        drop(self);
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.echoes.finish(key, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::{FutureExt, StreamExt};
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::ObjectMeta;

    use super::*;

    fn secret(version: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some("d-credentials".into()),
                namespace: Some("ns".into()),
                resource_version: Some(version.into()),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        }
    }

    fn owner() -> Owner {
        ("ns".into(), "d".into())
    }

    fn write(echoes: &Echoes) -> Writing<'_> {
        echoes.writing::<Secret>("device", "ns", "d-credentials", owner())
    }

    #[test]
    fn only_the_written_version_is_an_echo_and_only_once() {
        let echoes = Echoes::default();
        write(&echoes).wrote(&secret("7"));
        assert!(
            !echoes.is_echo("gateway", &secret("7")),
            "another controller's"
        );
        assert!(!echoes.is_echo("device", &secret("8")), "a later change");
        assert!(echoes.is_echo("device", &secret("7")));
        assert!(!echoes.is_echo("device", &secret("7")), "recognised once");
        write(&echoes).forget();
        assert!(!echoes.is_echo("device", &secret("9")), "forgotten");
    }

    #[test]
    fn an_echo_that_never_comes_is_forgotten_and_a_write_under_way_is_not() {
        let echoes = Echoes::default();
        write(&echoes).wrote(&secret("7"));
        let under_way = echoes.writing::<Secret>("device", "ns", "other", owner());
        let start = Instant::now();
        let sweep = |at: Instant| echoes.slots.lock().sweep(at);
        let last = start + ECHO_WAIT - Duration::from_secs(10);
        sweep(last);
        assert_eq!(echoes.slots.lock().by_key.len(), 2, "still waited for");
        sweep(start + ECHO_WAIT + Duration::from_secs(10));
        assert_eq!(echoes.slots.lock().by_key.len(), 2, "swept moments ago");
        sweep(last + SWEEP_EVERY);
        assert_eq!(
            echoes.slots.lock().by_key.len(),
            1,
            "the write under way stays"
        );
        assert!(
            !echoes.is_echo("device", &secret("7")),
            "a late echo is reconciled"
        );
        under_way.forget();
        assert!(echoes.slots.lock().by_key.is_empty());
    }

    #[test]
    fn an_object_of_another_kind_with_the_same_name_is_not_held_back() {
        let echoes = Echoes::default();
        let writing = write(&echoes);
        let other_kind = k8s_openapi::api::core::v1::ConfigMap {
            metadata: secret("7").metadata,
            ..Default::default()
        };
        assert!(
            !echoes.is_echo("device", &other_kind),
            "not the Secret being written"
        );
        assert!(
            echoes.is_echo("device", &secret("7")),
            "the Secret is held back"
        );
        writing.wrote(&secret("7"));
    }

    #[tokio::test]
    async fn events_during_a_write_are_held_back_and_only_the_echo_is_dropped() {
        let echoes = Echoes::default();
        let mut retriggers = Box::pin(echoes.retriggers("device"));
        let mut retriggered = || retriggers.next().now_or_never().flatten();

        // The echo overtakes the answer: held back, then dropped; nothing to reconcile.
        let writing = write(&echoes);
        assert!(echoes.is_echo("device", &secret("7")), "held back");
        writing.wrote(&secret("7"));
        assert_eq!(retriggered(), None);
        assert!(!echoes.is_echo("device", &secret("7")), "recognised once");

        // Another change came during the write: the owner is reconciled again.
        let writing = write(&echoes);
        assert!(echoes.is_echo("device", &secret("8")), "held back");
        writing.wrote(&secret("9"));
        assert_eq!(retriggered(), Some(owner()));
        assert!(
            echoes.is_echo("device", &secret("9")),
            "the echo still to come"
        );

        // The echo and another change: reconciled again once.
        let writing = write(&echoes);
        assert!(echoes.is_echo("device", &secret("10")));
        assert!(echoes.is_echo("device", &secret("11")));
        writing.wrote(&secret("11"));
        assert_eq!(retriggered(), Some(owner()));
        assert_eq!(retriggered(), None);

        // Not settled: the held-back echo has the owner reconciled again.
        let writing = write(&echoes);
        assert!(echoes.is_echo("device", &secret("12")));
        writing.forget();
        assert_eq!(retriggered(), Some(owner()));

        // A failed write: events pass again, and what was held back is reconciled.
        let writing = write(&echoes);
        assert!(echoes.is_echo("device", &secret("13")));
        drop(writing);
        assert_eq!(retriggered(), Some(owner()));
        assert!(!echoes.is_echo("device", &secret("14")), "passes again");

        // Nothing held back, nothing reconciled again.
        write(&echoes).forget();
        drop(write(&echoes));
        assert_eq!(retriggered(), None);
        assert!(!echoes.is_echo("device", &secret("15")));
    }
}
