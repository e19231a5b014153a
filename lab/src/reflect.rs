//! Shared plumbing of the lab's controllers: a reflector that keeps a cache
//! of one kind and wakes its controller on every change.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures::StreamExt;
use kube::Api;
use kube::Resource;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

/// Starts a reflector over `api` (filtered by `config`) and returns its
/// cache. Every event (including a relist after a watch restart) wakes
/// `changed`. The watcher restarts with exponential backoff on errors; the
/// task runs until the runtime shuts down.
pub(crate) fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    changed: Arc<Notify>,
    kind: &'static str,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let events = watcher(api, config).default_backoff().reflect(writer);
    tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(_) => changed.notify_one(),
                Err(error) => tracing::warn!(kind, %error, "watch failed; retrying with backoff"),
            }
        }
        tracing::error!(kind, "watch stream ended");
    });
    reader
}
