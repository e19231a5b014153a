//! What every loop of the controller shares.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder};

use crate::config::Config;
use crate::metrics::Metrics;

/// The local client, the event recorder, the metrics and the configuration.
#[derive(Clone)]
pub struct Context {
    /// Client for this cluster's API.
    pub client: Client,
    /// Publishes `events.k8s.io/v1` Events as `mc-controller`.
    pub recorder: Recorder,
    /// The controller's metric families.
    pub metrics: Metrics,
    /// The controller's configuration.
    pub config: Arc<Config>,
}

impl Context {
    /// Publishes an Event about `regarding` (optionally related to
    /// `related`); a failure is logged, never fatal.
    pub async fn event(
        &self,
        regarding: &ObjectReference,
        related: Option<ObjectReference>,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: related,
        };
        if let Err(error) = self.recorder.publish(&event, regarding).await {
            tracing::warn!(%error, reason, "publishing an event failed");
        }
    }
}
