//! Applying rendered objects: create, or replace what exists (keeping its
//! resourceVersion), in the given order, waiting for CRDs to be Established
//! before anything that may use them. Namespaces are merge-patched instead of
//! replaced so their finalizers and other labels stay. Deleting is the reverse.

use std::time::Duration;

use anyhow::{Result, anyhow};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};

use crate::kube_ctx::{KubeContext, status_code};
use crate::objects::Object;

/// How long a new CRD may take to become Established.
const CRD_ESTABLISH_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts at a replace that races another writer.
const REPLACE_ATTEMPTS: usize = 3;

/// What happened to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// It did not exist.
    Created,
    /// It existed and was replaced or patched.
    Configured,
}

fn api_for(ctx: &KubeContext, object: &Object) -> Api<DynamicObject> {
    match object.namespace() {
        Some(ns) if object.namespaced => {
            Api::namespaced_with(ctx.client.clone(), ns, &object.resource)
        }
        _ => Api::all_with(ctx.client.clone(), &object.resource),
    }
}

/// `kind/name`, as kubectl prints it.
pub fn short_name(object: &Object) -> String {
    format!("{}/{}", object.resource.kind.to_lowercase(), object.name())
}

/// Applies one object.
pub async fn apply_one(ctx: &KubeContext, object: &Object) -> Result<Applied> {
    let api = api_for(ctx, object);
    match api.create(&PostParams::default(), &object.dynamic).await {
        Ok(_) => return Ok(Applied::Created),
        Err(e) if status_code(&e) == Some(409) => {}
        Err(e) => return Err(ctx.error(format!("creating {}", object.describe()), &e)),
    }
    if object.resource.kind == "Namespace" {
        let patch = serde_json::json!({"metadata": {"labels": object.dynamic.metadata.labels}});
        api.patch(
            object.name(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| ctx.error(format!("updating {}", object.describe()), &e))?;
        return Ok(Applied::Configured);
    }
    let mut last = None;
    for _ in 0..REPLACE_ATTEMPTS {
        let current = api
            .get(object.name())
            .await
            .map_err(|e| ctx.error(format!("reading {}", object.describe()), &e))?;
        let mut desired = object.dynamic.clone();
        desired.metadata.resource_version = current.metadata.resource_version.clone();
        match api
            .replace(object.name(), &PostParams::default(), &desired)
            .await
        {
            Ok(_) => return Ok(Applied::Configured),
            Err(e) if status_code(&e) == Some(409) => last = Some(e),
            Err(e) => return Err(ctx.error(format!("replacing {}", object.describe()), &e)),
        }
    }
    Err(match last {
        Some(e) => ctx.error(
            format!("replacing {} (changed concurrently)", object.describe()),
            &e,
        ),
        None => anyhow!("replacing {}: no attempt made", object.describe()),
    })
}

/// Waits until the CRD `name` is Established.
pub async fn wait_established(ctx: &KubeContext, name: &str) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(ctx.client.clone());
    match tokio::time::timeout(
        CRD_ESTABLISH_TIMEOUT,
        await_condition(api, name, conditions::is_crd_established()),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(anyhow!(
            "in context {:?}: waiting for CRD {name} to be Established: {e}",
            ctx.name
        )),
        Err(_) => Err(anyhow!(
            "in context {:?}: CRD {name} was not Established within {}s; see `kubectl --context {} get crd {name} -o yaml`",
            ctx.name,
            CRD_ESTABLISH_TIMEOUT.as_secs(),
            ctx.name
        )),
    }
}

/// Where progress lines go: stdout, or stderr when stdout carries data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Standard output, like `kubectl apply`.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Progress {
    /// Prints one line.
    pub fn line(self, text: &str) {
        match self {
            Progress::Stdout => println!("{text}"),
            Progress::Stderr => eprintln!("{text}"),
        }
    }
}

/// Applies `objects` in order, printing one line per object like kubectl.
pub async fn apply_all(ctx: &KubeContext, objects: &[Object], progress: Progress) -> Result<()> {
    for object in objects {
        let applied = apply_one(ctx, object).await?;
        if object.resource.kind == "CustomResourceDefinition" {
            wait_established(ctx, object.name()).await?;
        }
        let verb = match applied {
            Applied::Created => "created",
            Applied::Configured => "configured",
        };
        progress.line(&format!("{} {verb}", short_name(object)));
        tracing::debug!(object = %object.describe(), context = %ctx.name, verb, "applied");
    }
    Ok(())
}

/// Deletes `objects` in reverse order; missing ones are skipped. Returns
/// how many were deleted.
pub async fn delete_all(
    ctx: &KubeContext,
    objects: &[Object],
    progress: Progress,
) -> Result<usize> {
    let mut deleted = 0;
    for object in objects.iter().rev() {
        let api = api_for(ctx, object);
        match api.delete(object.name(), &DeleteParams::background()).await {
            Ok(_) => {
                deleted += 1;
                progress.line(&format!("{} deleted", short_name(object)));
            }
            Err(e) if status_code(&e) == Some(404) => {
                tracing::debug!(object = %object.describe(), "already absent");
            }
            Err(e) => return Err(ctx.error(format!("deleting {}", object.describe()), &e)),
        }
    }
    Ok(deleted)
}
