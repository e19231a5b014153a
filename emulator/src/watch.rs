//! Watch streams: newline-delimited JSON events with the apiserver's
//! resourceVersion semantics, selector transitions, bookmarks and the
//! streaming-list initial events.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::errors::ApiError;
use crate::handlers::{Filters, Format, present};
use crate::resources::ResourceInfo;
use crate::shared::Shared;
use crate::state::rkey;
use crate::store::ChangeType;
use crate::table;

/// What a watch asked for.
pub struct WatchRequest {
    pub info: ResourceInfo,
    pub version: String,
    pub namespace: Option<String>,
    pub filters: Filters,
    /// `resourceVersion` (None when unset or empty).
    pub resource_version: Option<String>,
    pub bookmarks: bool,
    pub send_initial_events: bool,
    pub timeout: Option<Duration>,
    pub format: Format,
}

struct Emitter {
    tx: mpsc::Sender<Bytes>,
    info: ResourceInfo,
    version: String,
    format: Format,
}

impl Emitter {
    async fn send(&self, kind: &str, obj: &Value) -> bool {
        let object = match self.format {
            Format::Table { full_objects } if kind != "BOOKMARK" && kind != "ERROR" => {
                table::table(
                    &self.info,
                    &self.version,
                    std::slice::from_ref(obj),
                    full_objects,
                    "",
                    None,
                )
            }
            _ => obj.clone(),
        };
        let mut line = json!({"type": kind, "object": object})
            .to_string()
            .into_bytes();
        line.push(b'\n');
        self.tx.send(Bytes::from(line)).await.is_ok()
    }

    async fn bookmark(&self, rv: u64, initial_end: bool) -> bool {
        let mut md = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            md["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": self.info.kind, "apiVersion": self.info.api_version(&self.version), "metadata": md});
        self.send("BOOKMARK", &obj).await
    }
}

fn in_namespace(ns: &Option<String>, obj: &Value) -> bool {
    match ns {
        None => true,
        Some(n) => obj.pointer("/metadata/namespace").and_then(Value::as_str) == Some(n.as_str()),
    }
}

/// Starts a watch; the receiver yields the encoded events until the stream ends.
pub fn start(shared: Arc<Shared>, req: WatchRequest) -> Result<mpsc::Receiver<Bytes>, ApiError> {
    let rv_param = req.resource_version.clone().filter(|v| !v.is_empty());
    let start_rv: Option<u64> = match rv_param.as_deref() {
        None | Some("0") => None,
        Some(v) => Some(
            v.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {v}")))?,
        ),
    };
    let (tx, rx) = mpsc::channel(256);
    let em = Emitter {
        tx,
        info: req.info.clone(),
        version: req.version.clone(),
        format: req.format,
    };
    let bookmark_every = shared.config.bookmark_interval;
    tokio::spawn(async move {
        let mut changed = shared.subscribe();
        let key = rkey(&req.info);
        // Initial events: synthetic ADDED for current objects when no version
        // (or "0") was given, or when the client asked for initial events.
        let initial = start_rv.is_none() || req.send_initial_events;
        let mut last_rv = match start_rv {
            Some(rv) if !initial => rv,
            _ => {
                let (objs, rv) = shared.read(|st| {
                    (
                        st.store.list(&key, req.namespace.as_deref()),
                        st.store.current_rv(),
                    )
                });
                for o in objs.iter().filter(|o| req.filters.matches(o)) {
                    if !em.send("ADDED", &present(&req.info, &req.version, o)).await {
                        return;
                    }
                }
                if req.send_initial_events && req.bookmarks && !em.bookmark(rv, true).await {
                    return;
                }
                rv
            }
        };
        let deadline = req.timeout.map(|t| tokio::time::Instant::now() + t);
        let mut ticker = tokio::time::interval(bookmark_every);
        ticker.tick().await;
        loop {
            let (changes, current) =
                shared.read(|st| (st.store.changes_since(&key, last_rv), st.store.current_rv()));
            let changes = match changes {
                Ok(c) => c,
                Err(oldest) => {
                    let status = ApiError::too_old_resource_version(last_rv, oldest).to_status();
                    em.send("ERROR", &status).await;
                    return;
                }
            };
            for ch in changes {
                if !in_namespace(&req.namespace, &ch.object) {
                    continue;
                }
                let now_matches =
                    ch.change != ChangeType::Deleted && req.filters.matches(&ch.object);
                let was_matching = ch.prev.as_ref().is_some_and(|p| req.filters.matches(p));
                let kind = match (ch.change, was_matching, now_matches) {
                    (ChangeType::Deleted, true, _) => "DELETED",
                    (ChangeType::Deleted, false, _) => continue,
                    (_, false, true) => "ADDED",
                    (_, true, true) => "MODIFIED",
                    (_, true, false) => "DELETED",
                    (_, false, false) => continue,
                };
                if !em
                    .send(kind, &present(&req.info, &req.version, &ch.object))
                    .await
                {
                    return;
                }
            }
            last_rv = last_rv.max(current);
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                _ = ticker.tick(), if req.bookmarks => {
                    if !em.bookmark(last_rv, false).await { return }
                }
                _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => return,
                _ = em.tx.closed() => return,
            }
        }
    });
    Ok(rx)
}
