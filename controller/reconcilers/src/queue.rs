//! The controllers' queue depth: objects a watch event asked to reconcile that no reconcile has
//! picked up yet, by controller. kube-runtime's scheduler does not say how many it holds, so
//! the triggers are counted on their way in (deduplicated per object, as the scheduler does)
//! and each leaves when its reconcile starts, or when the scheduler drops it because the object
//! is gone. Retries after a failure are counted apart (`retry.rs`).

use std::collections::{HashMap, HashSet};

use kube::Resource;
use kube::runtime::reflector::ObjectRef;
use parking_lot::Mutex;

/// Namespace and name.
type Object = (String, String);

/// Objects waiting for a reconcile, by controller.
#[derive(Default)]
pub struct Queue(Mutex<HashMap<&'static str, HashSet<Object>>>);

impl Queue {
    /// A watch event asks `controller` to reconcile `object`; returns the objects now waiting.
    pub fn triggered<K: Resource>(&self, controller: &'static str, object: &ObjectRef<K>) -> usize {
        let mut queue = self.0.lock();
        let waiting = queue.entry(controller).or_default();
        waiting.insert(key(object));
        waiting.len()
    }

    /// A reconcile of `object` started, or the scheduler dropped it; returns the objects still
    /// waiting.
    pub fn left<K: Resource>(&self, controller: &'static str, object: &ObjectRef<K>) -> usize {
        let mut queue = self.0.lock();
        let waiting = queue.entry(controller).or_default();
        waiting.remove(&key(object));
        waiting.len()
    }
}

fn key<K: Resource>(object: &ObjectRef<K>) -> Object {
    (
        object.namespace.clone().unwrap_or_default(),
        object.name.clone(),
    )
}

#[cfg(test)]
mod tests {
    use devplane_api::v1alpha1::Device;

    use super::*;

    #[test]
    fn an_object_waits_once_however_often_it_is_triggered_and_leaves_when_picked_up() {
        let queue = Queue::default();
        let a = ObjectRef::<Device>::new("a").within("ns");
        let b = ObjectRef::<Device>::new("b").within("ns");
        assert_eq!(queue.triggered("device", &a), 1);
        assert_eq!(queue.triggered("device", &a), 1);
        assert_eq!(queue.triggered("device", &b), 2);
        assert_eq!(queue.triggered("gateway", &a), 1, "per controller");
        assert_eq!(queue.left("device", &a), 1);
        assert_eq!(queue.left("device", &a), 1, "leaving twice is harmless");
        assert_eq!(queue.left("device", &b), 0);
    }
}
