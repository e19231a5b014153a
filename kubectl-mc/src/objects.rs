//! [`Object`]: one typed Kubernetes object kept in the two forms mc needs,
//! YAML in the type's field order for printing and a `DynamicObject` for
//! applying, plus the multi-document printing of a list of them.

use anyhow::{Context, Result, anyhow};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Resource;
use kube::api::{ApiResource, DynamicObject};
use serde::Serialize;

use crate::cli::OutputFormat;

/// A rendered object.
#[derive(Debug, Clone)]
pub struct Object {
    /// Group, version, kind and plural.
    pub resource: ApiResource,
    /// Whether the kind is namespaced.
    pub namespaced: bool,
    /// The object, for the API.
    pub dynamic: DynamicObject,
    /// The object as YAML, fields in the order of the typed struct.
    pub yaml: String,
    /// The object as JSON.
    pub json: serde_json::Value,
}

impl Object {
    /// Renders a typed object.
    pub fn from_typed<K>(object: &K, namespaced: bool) -> Result<Object>
    where
        K: Resource<DynamicType = ()> + Serialize,
    {
        let resource = ApiResource::erase::<K>(&());
        let what = format!(
            "{} {}",
            K::kind(&()),
            object.meta().name.clone().unwrap_or_default()
        );
        let json = serde_json::to_value(object).with_context(|| format!("serializing {what}"))?;
        let dynamic: DynamicObject =
            serde_json::from_value(json.clone()).with_context(|| format!("converting {what}"))?;
        let yaml = serde_yaml::to_string(object).with_context(|| format!("rendering {what}"))?;
        Ok(Object {
            resource,
            namespaced,
            dynamic,
            yaml,
            json,
        })
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        self.dynamic.metadata.name.as_deref().unwrap_or_default()
    }

    /// The object's namespace, for namespaced kinds.
    pub fn namespace(&self) -> Option<&str> {
        self.dynamic.metadata.namespace.as_deref()
    }

    /// `Kind/namespace/name` for messages.
    pub fn describe(&self) -> String {
        match self.namespace() {
            Some(ns) => format!("{} {ns}/{}", self.resource.kind, self.name()),
            None => format!("{} {}", self.resource.kind, self.name()),
        }
    }
}

/// Types mc renders, each with its scope.
pub trait Renderable: Resource<DynamicType = ()> + Serialize {
    /// Whether the kind is namespaced.
    const NAMESPACED: bool;
}

macro_rules! renderable {
    ($($t:ty => $ns:expr),* $(,)?) => {
        $(impl Renderable for $t { const NAMESPACED: bool = $ns; })*
    };
}

renderable!(
    Namespace => false,
    CustomResourceDefinition => false,
    ClusterRole => false,
    ClusterRoleBinding => false,
    ServiceAccount => true,
    Role => true,
    RoleBinding => true,
    ConfigMap => true,
    Secret => true,
    Service => true,
    Deployment => true,
    DaemonSet => true,
    mc_api::Link => true,
);

/// Renders a typed object of a known scope.
pub fn object<K: Renderable>(object: &K) -> Result<Object> {
    Object::from_typed(object, K::NAMESPACED)
}

/// Fails for formats manifests cannot be printed in.
pub fn check_format(format: OutputFormat) -> Result<()> {
    match format {
        OutputFormat::Table => Err(anyhow!(
            "manifests print as YAML or JSON: use -o yaml or -o json"
        )),
        OutputFormat::Json | OutputFormat::Yaml => Ok(()),
    }
}

/// Prints objects as a YAML stream or a JSON `List`.
pub fn print(objects: &[Object], format: OutputFormat) -> Result<String> {
    match format {
        OutputFormat::Yaml => Ok(to_yaml_stream(objects)),
        OutputFormat::Json => {
            let list = serde_json::json!({
                "apiVersion": "v1",
                "kind": "List",
                "items": objects.iter().map(|o| o.json.clone()).collect::<Vec<_>>(),
            });
            let mut text = serde_json::to_string_pretty(&list).context("rendering JSON")?;
            text.push('\n');
            Ok(text)
        }
        OutputFormat::Table => Err(anyhow!(
            "manifests print as YAML or JSON: use -o yaml or -o json"
        )),
    }
}

/// `---`-separated YAML documents.
pub fn to_yaml_stream(objects: &[Object]) -> String {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&o.yaml);
    }
    out
}
