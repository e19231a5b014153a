//! A small object cache fed by a kube-runtime watcher. A relist (after a
//! watch error or at start) is buffered and only replaces the cache once
//! complete, so a failed or partial list never makes objects disappear.

use std::collections::BTreeMap;

use kube::Resource;
use kube::runtime::watcher::Event;

/// `(namespace, name)`; the namespace is empty for cluster-scoped objects.
pub type ObjKey = (String, String);

/// The key of an object.
pub fn key_of<K: Resource>(obj: &K) -> ObjKey {
    let meta = obj.meta();
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// What one watcher event changed.
#[derive(Debug)]
pub enum Change<K> {
    /// Nothing visible yet (a relist in progress).
    Nothing,
    /// One object was added, changed or deleted (the last known object).
    Object(K),
    /// A complete list replaced the contents: anything may have changed.
    Everything,
}

/// The objects one watcher sees.
#[derive(Debug)]
pub struct Cache<K> {
    items: BTreeMap<ObjKey, K>,
    relist: Option<BTreeMap<ObjKey, K>>,
    synced: bool,
}

impl<K> Default for Cache<K> {
    fn default() -> Self {
        Cache {
            items: BTreeMap::new(),
            relist: None,
            synced: false,
        }
    }
}

impl<K: Resource + Clone> Cache<K> {
    /// Applies one watcher event.
    pub fn apply(&mut self, event: Event<K>) -> Change<K> {
        match event {
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                Change::Nothing
            }
            Event::InitApply(obj) => {
                if let Some(relist) = self.relist.as_mut() {
                    relist.insert(key_of(&obj), obj);
                } else {
                    self.items.insert(key_of(&obj), obj);
                }
                Change::Nothing
            }
            Event::InitDone => {
                if let Some(relist) = self.relist.take() {
                    self.items = relist;
                }
                self.synced = true;
                Change::Everything
            }
            Event::Apply(obj) => {
                self.items.insert(key_of(&obj), obj.clone());
                Change::Object(obj)
            }
            Event::Delete(obj) => {
                self.items.remove(&key_of(&obj));
                Change::Object(obj)
            }
        }
    }

    /// Whether a complete list has been seen at least once.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// The object with `key`.
    pub fn get(&self, key: &ObjKey) -> Option<&K> {
        self.items.get(key)
    }

    /// Every object, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&ObjKey, &K)> {
        self.items.iter()
    }

    /// How many objects are cached.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn cm(name: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    #[test]
    fn a_relist_replaces_the_contents_only_when_complete() {
        let mut cache = Cache::default();
        cache.apply(Event::Init);
        cache.apply(Event::InitApply(cm("a")));
        cache.apply(Event::InitApply(cm("b")));
        assert!(!cache.synced());
        assert!(matches!(cache.apply(Event::InitDone), Change::Everything));
        assert_eq!(cache.len(), 2);

        // A relist that is interrupted (watch error, never InitDone) keeps the old view.
        cache.apply(Event::Init);
        cache.apply(Event::InitApply(cm("a")));
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&("ns".into(), "b".into())).is_some());

        // The next complete relist drops what is gone.
        cache.apply(Event::Init);
        cache.apply(Event::InitApply(cm("a")));
        cache.apply(Event::InitDone);
        assert_eq!(cache.len(), 1);
        assert!(cache.get(&("ns".into(), "b".into())).is_none());

        assert!(matches!(
            cache.apply(Event::Delete(cm("a"))),
            Change::Object(_)
        ));
        assert!(cache.is_empty());
    }
}
