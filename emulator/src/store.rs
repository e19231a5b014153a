//! The in-memory object store: every object as JSON, one resourceVersion
//! counter for the whole emulator, and a bounded history of changes that
//! watches replay.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// (namespace, name); the namespace is empty for cluster-scoped objects.
pub type ObjectKey = (String, String);
/// (group, plural resource).
pub type ResourceKey = (String, String);

/// The type of a watch event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

impl ChangeType {
    /// The watch event `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// One change, as kept in the history.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub resource: ResourceKey,
    pub namespace: String,
    pub change: ChangeType,
    /// The object after the change (for a deletion: its last state, with the deletion's resourceVersion).
    pub object: Arc<Value>,
    /// The object before the change, for selector transitions.
    pub prev: Option<Arc<Value>>,
}

/// The store. Not synchronised itself: the server wraps it in a mutex.
#[derive(Debug)]
pub struct Store {
    rv: u64,
    objects: BTreeMap<ResourceKey, BTreeMap<ObjectKey, Arc<Value>>>,
    history: VecDeque<Arc<Change>>,
    history_len: usize,
    /// Every change with a resourceVersion above this one is still in `history`.
    compacted_rv: u64,
}

/// The on-disk snapshot format (`store.json` in the data dir).
#[derive(Serialize, Deserialize)]
pub struct Snapshot {
    #[serde(rename = "resourceVersion")]
    pub resource_version: u64,
    pub objects: Vec<SnapshotEntry>,
}

/// One object of a snapshot, with the resource it belongs to.
#[derive(Serialize, Deserialize)]
pub struct SnapshotEntry {
    pub group: String,
    pub resource: String,
    pub object: Value,
}

fn object_key(obj: &Value) -> ObjectKey {
    let md = obj.get("metadata");
    let s = |f: &str| {
        md.and_then(|m| m.get(f))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (s("namespace"), s("name"))
}

/// The resourceVersion of an object as a number (0 when absent or not numeric).
pub fn object_rv(obj: &Value) -> u64 {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

impl Store {
    /// An empty store keeping `history_len` changes for watches.
    pub fn new(history_len: usize) -> Self {
        Store {
            rv: 1,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_len: history_len.max(1),
            compacted_rv: 1,
        }
    }

    /// A store restored from a snapshot; the history starts empty, so watches
    /// from before the snapshot's version answer 410 like after an etcd compaction.
    pub fn from_snapshot(snap: Snapshot, history_len: usize) -> Self {
        let mut s = Store::new(history_len);
        s.rv = snap.resource_version;
        s.compacted_rv = snap.resource_version;
        for e in snap.objects {
            let key = object_key(&e.object);
            s.objects
                .entry((e.group, e.resource))
                .or_default()
                .insert(key, Arc::new(e.object));
        }
        s
    }

    /// The snapshot of everything stored.
    pub fn snapshot(&self) -> Snapshot {
        let objects = self
            .objects
            .iter()
            .flat_map(|((g, r), objs)| {
                objs.values().map(move |o| SnapshotEntry {
                    group: g.clone(),
                    resource: r.clone(),
                    object: (**o).clone(),
                })
            })
            .collect();
        Snapshot {
            resource_version: self.rv,
            objects,
        }
    }

    /// The latest resourceVersion handed out.
    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    /// Watches may start at any version at or above this one.
    pub fn oldest_replayable_rv(&self) -> u64 {
        self.compacted_rv
    }

    /// One object.
    pub fn get(&self, res: &ResourceKey, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.objects
            .get(res)?
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Objects of a resource, optionally of one namespace, ordered by (namespace, name).
    pub fn list(&self, res: &ResourceKey, ns: Option<&str>) -> Vec<Arc<Value>> {
        let Some(objs) = self.objects.get(res) else {
            return Vec::new();
        };
        match ns {
            Some(ns) => objs
                .range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, v)| v.clone())
                .collect(),
            None => objs.values().cloned().collect(),
        }
    }

    /// Every stored object with its resource.
    pub fn all(&self) -> impl Iterator<Item = (&ResourceKey, &Arc<Value>)> {
        self.objects
            .iter()
            .flat_map(|(r, objs)| objs.values().map(move |o| (r, o)))
    }

    /// Stores `obj` (created or replaced) with a fresh resourceVersion, records the change, and returns it.
    pub fn put(&mut self, res: &ResourceKey, mut obj: Value) -> Arc<Value> {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let key = object_key(&obj);
        let obj = Arc::new(obj);
        let prev = self
            .objects
            .entry(res.clone())
            .or_default()
            .insert(key.clone(), obj.clone());
        let change = if prev.is_some() {
            ChangeType::Modified
        } else {
            ChangeType::Added
        };
        self.record(res, key.0, change, obj.clone(), prev);
        obj
    }

    /// Removes an object, records the deletion, and returns the object's last state.
    pub fn remove(&mut self, res: &ResourceKey, ns: &str, name: &str) -> Option<Arc<Value>> {
        let prev = self
            .objects
            .get_mut(res)?
            .remove(&(ns.to_string(), name.to_string()))?;
        self.rv += 1;
        let mut last = (*prev).clone();
        last["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let last = Arc::new(last);
        self.record(
            res,
            ns.to_string(),
            ChangeType::Deleted,
            last.clone(),
            Some(prev),
        );
        Some(last)
    }

    fn record(
        &mut self,
        res: &ResourceKey,
        ns: String,
        change: ChangeType,
        object: Arc<Value>,
        prev: Option<Arc<Value>>,
    ) {
        self.history.push_back(Arc::new(Change {
            rv: self.rv,
            resource: res.clone(),
            namespace: ns,
            change,
            object,
            prev,
        }));
        while self.history.len() > self.history_len {
            if let Some(old) = self.history.pop_front() {
                self.compacted_rv = old.rv;
            }
        }
    }

    /// Changes of `res` after `rv`, or `Err(oldest)` when `rv` is older than the history.
    pub fn changes_since(&self, res: &ResourceKey, rv: u64) -> Result<Vec<Arc<Change>>, u64> {
        if rv < self.compacted_rv {
            return Err(self.compacted_rv);
        }
        let start = self.history.partition_point(|c| c.rv <= rv);
        Ok(self
            .history
            .range(start..)
            .filter(|c| &c.resource == res)
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res() -> ResourceKey {
        (String::new(), "configmaps".into())
    }

    fn cm(ns: &str, name: &str) -> Value {
        json!({"metadata": {"namespace": ns, "name": name}})
    }

    #[test]
    fn history_is_bounded_and_reports_the_oldest_version() {
        let mut s = Store::new(2);
        s.put(&res(), cm("a", "x"));
        s.put(&res(), cm("a", "y"));
        s.put(&res(), cm("a", "z"));
        assert_eq!(s.changes_since(&res(), 1).err(), Some(2));
        let ch = s.changes_since(&res(), 2).unwrap_or_default();
        assert_eq!(ch.iter().map(|c| c.rv).collect::<Vec<_>>(), vec![3, 4]);
    }

    #[test]
    fn list_by_namespace_only_returns_that_namespace() {
        let mut s = Store::new(10);
        s.put(&res(), cm("a", "x"));
        s.put(&res(), cm("ab", "y"));
        s.put(&res(), cm("b", "z"));
        assert_eq!(s.list(&res(), Some("a")).len(), 1);
        assert_eq!(s.list(&res(), None).len(), 3);
    }
}
