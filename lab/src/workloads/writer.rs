//! The controllers' writes to the API. A failed write is logged and left
//! to the next pass (every pass starts from a fresh read of the cluster),
//! so one refused object never stops the others.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::nodes::FIELD_MANAGER;

/// Writes to one cluster's API on behalf of the workload controllers.
#[derive(Clone)]
pub struct Writer {
    client: Client,
}

fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

impl Writer {
    /// A writer using `client`.
    pub fn new(client: Client) -> Self {
        Writer { client }
    }

    fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Creates an object; returns whether it was created.
    pub async fn create<K>(&self, namespace: &str, object: &K) -> bool
    where
        K: Resource<Scope = NamespaceResourceScope> + Clone + Debug + Serialize + DeserializeOwned,
        <K as Resource>::DynamicType: Default,
    {
        match self
            .api::<K>(namespace)
            .create(&PostParams::default(), object)
            .await
        {
            Ok(made) => {
                tracing::info!(kind = %K::kind(&Default::default()), %namespace, name = ?made.meta().name, "created");
                true
            }
            Err(error) => {
                tracing::warn!(kind = %K::kind(&Default::default()), %namespace, %error, "cannot create");
                false
            }
        }
    }

    /// Creates a pod for controller `owner`.
    pub async fn create_pod(&self, namespace: &str, pod: &Pod, owner: &str) {
        tracing::debug!(%namespace, %owner, "creating a pod");
        self.create(namespace, pod).await;
    }

    /// Deletes a pod (gracefully, as any client does) for controller `owner`.
    pub async fn delete_pod(&self, pod: &Pod, owner: &str) {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.api::<Pod>(&namespace).delete(&name, &params).await {
            Ok(_) => tracing::info!(%namespace, pod = %name, %owner, "deleting pod"),
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
            Err(error) => tracing::warn!(%namespace, pod = %name, %error, "cannot delete pod"),
        }
    }

    /// Deletes an object by name.
    pub async fn delete<K>(&self, namespace: &str, name: &str)
    where
        K: Resource<Scope = NamespaceResourceScope> + Clone + Debug + DeserializeOwned,
        <K as Resource>::DynamicType: Default,
    {
        match self
            .api::<K>(namespace)
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => {
                tracing::info!(kind = %K::kind(&Default::default()), %namespace, %name, "deleted")
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => tracing::warn!(%namespace, %name, %error, "cannot delete"),
        }
    }

    /// Merge-patches the object itself (spec, metadata).
    pub async fn patch<K>(&self, namespace: &str, name: &str, patch: serde_json::Value)
    where
        K: Resource<Scope = NamespaceResourceScope> + Clone + Debug + DeserializeOwned,
        <K as Resource>::DynamicType: Default,
    {
        if let Err(error) = self
            .api::<K>(namespace)
            .patch(name, &params(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!(kind = %K::kind(&Default::default()), %namespace, %name, %error, "cannot patch");
        }
    }

    /// Replaces the status through the `status` subresource.
    pub async fn patch_status<K>(&self, namespace: &str, name: &str, status: &impl Serialize)
    where
        K: Resource<Scope = NamespaceResourceScope> + Clone + Debug + DeserializeOwned,
        <K as Resource>::DynamicType: Default,
    {
        let patch = json!({ "status": status });
        if let Err(error) = self
            .api::<K>(namespace)
            .patch_status(name, &params(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!(kind = %K::kind(&Default::default()), %namespace, %name, %error, "cannot write status");
        }
    }

    /// Binds `pod` to `node` through `pods/<name>/binding`, as a scheduler.
    pub async fn bind(&self, pod: &Pod, node: &str) -> bool {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let binding = json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name, "namespace": namespace, "uid": pod.metadata.uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        let body = match serde_json::to_vec(&binding) {
            Ok(body) => body,
            Err(error) => {
                tracing::warn!(%error, "cannot encode a Binding");
                return false;
            }
        };
        let request = http::Request::post(format!(
            "/api/v1/namespaces/{namespace}/pods/{name}/binding"
        ))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body);
        let request = match request {
            Ok(request) => request,
            Err(error) => {
                tracing::warn!(%error, "cannot build a binding request");
                return false;
            }
        };
        match self.client.request_text(request).await {
            Ok(_) => {
                tracing::info!(%namespace, pod = %name, %node, "scheduled");
                true
            }
            Err(error) => {
                tracing::warn!(%namespace, pod = %name, %node, %error, "cannot bind");
                false
            }
        }
    }
}
