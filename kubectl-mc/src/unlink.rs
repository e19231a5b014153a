//! `unlink`: delete the Link (the controller's finalizer removes its
//! mirrors), then its credentials Secret. With --force, finish the cleanup
//! from here when the controller does not.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use mc_api::Link;

use crate::cli::{Global, UnlinkArgs};
use crate::kube_ctx::{KubeContext, status_code};
use crate::manifests::meta::{LINK_FINALIZER, link_secret};
use crate::manifests::rbac;
use crate::mesh_config;

const POLL: Duration = Duration::from_millis(250);

async fn wait_gone(
    ctx: &KubeContext,
    links: &Api<Link>,
    name: &str,
    timeout: Duration,
) -> Result<Option<Link>> {
    let deadline = Instant::now() + timeout;
    loop {
        let current = links
            .get_opt(name)
            .await
            .map_err(|e| ctx.error(format!("reading Link {name}"), &e))?;
        if current.is_none() || Instant::now() >= deadline {
            return Ok(current);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Deletes every mirror Service of `cluster`, in all namespaces.
pub async fn delete_mirrors(ctx: &KubeContext, cluster: &str) -> Result<usize> {
    let services: Api<Service> = Api::all(ctx.client.clone());
    let selector = format!("{}={cluster}", mc_api::labels::MIRROR_OF_CLUSTER);
    let list = services
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| ctx.error(format!("listing mirror Services ({selector})"), &e))?;
    let mut deleted = 0;
    for svc in list {
        let (Some(ns), Some(name)) = (
            svc.metadata.namespace.as_deref(),
            svc.metadata.name.as_deref(),
        ) else {
            continue;
        };
        let api: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                deleted += 1;
                println!("service/{name} deleted (namespace {ns})");
            }
            Err(e) if status_code(&e) == Some(404) => {}
            Err(e) => return Err(ctx.error(format!("deleting mirror Service {ns}/{name}"), &e)),
        }
    }
    Ok(deleted)
}

/// Removes mc's finalizer from a Link.
pub async fn release_finalizer(ctx: &KubeContext, links: &Api<Link>, link: &Link) -> Result<()> {
    let name = link.metadata.name.clone().unwrap_or_default();
    let remaining: Vec<String> = link
        .metadata
        .finalizers
        .iter()
        .flatten()
        .filter(|f| f.as_str() != LINK_FINALIZER)
        .cloned()
        .collect();
    let patch = serde_json::json!({"metadata": {
        "finalizers": remaining,
        "resourceVersion": link.metadata.resource_version,
    }});
    match links
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if status_code(&e) == Some(404) => Ok(()),
        Err(e) => Err(ctx.error(format!("removing the finalizer of Link {name}"), &e)),
    }
}

/// Deletes a Link and waits for it; with `force`, cleans up after a
/// controller that did not. Returns whether the Link existed.
pub async fn delete_link(
    ctx: &KubeContext,
    cluster: &str,
    timeout: Duration,
    force: bool,
) -> Result<bool> {
    let links: Api<Link> = Api::namespaced(ctx.client.clone(), mc_api::NAMESPACE);
    match links.delete(cluster, &DeleteParams::default()).await {
        Ok(_) => println!("link.mc.dev/{cluster} deleted"),
        Err(e) if status_code(&e) == Some(404) => return Ok(false),
        Err(e) => return Err(ctx.error(format!("deleting Link {cluster}"), &e)),
    }
    let Some(stuck) = wait_gone(ctx, &links, cluster, timeout).await? else {
        return Ok(true);
    };
    if !force {
        bail!(
            "Link {cluster} in context {:?} is still terminating after {}s: its finalizer {LINK_FINALIZER} waits for \
             mc-controller to remove the mirrors. Is mc-controller running (kubectl --context {} -n {} get pods)? \
             Re-run with --force to remove the mirrors and the finalizer from here",
            ctx.name,
            timeout.as_secs(),
            ctx.name,
            mc_api::NAMESPACE
        );
    }
    let deleted = delete_mirrors(ctx, cluster).await?;
    release_finalizer(ctx, &links, &stuck).await?;
    let created = stuck
        .status
        .as_ref()
        .map(|s| s.created_namespaces.clone())
        .unwrap_or_default();
    eprintln!(
        "removed {deleted} mirror Service(s) of {cluster} and the Link's finalizer from here"
    );
    if !created.is_empty() {
        eprintln!(
            "namespaces the controller created for this Link are left in place: {}",
            created.join(", ")
        );
    }
    if wait_gone(ctx, &links, cluster, timeout).await?.is_some() {
        bail!(
            "Link {cluster} in context {:?} still exists after its finalizer was removed",
            ctx.name
        );
    }
    Ok(true)
}

/// `kubectl mc unlink`.
pub async fn run(global: &Global, args: &UnlinkArgs) -> Result<()> {
    let ctx = KubeContext::connect_reachable(global, None).await?;
    let cluster = &args.cluster_name;
    let links: Api<Link> = Api::namespaced(ctx.client.clone(), mc_api::NAMESPACE);
    let secret_name = match links
        .get_opt(cluster)
        .await
        .map_err(|e| ctx.error(format!("reading Link {cluster}"), &e))?
    {
        Some(link) => link.spec.credentials_secret.clone(),
        None => link_secret(cluster),
    };
    let existed = delete_link(&ctx, cluster, args.timeout, args.force).await?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), mc_api::NAMESPACE);
    let secret_existed = delete_if_present(&ctx, &secrets, "Secret", &secret_name).await?;
    if secret_existed {
        println!("secret/{secret_name} deleted");
    }
    let this = mesh_config::read(&ctx).await.map(|c| c.cluster_name);
    let revoked = match (&args.remote_context, &this) {
        (Some(remote), Ok(this)) => {
            let remote = KubeContext::connect_reachable(global, Some(remote)).await?;
            revoke(&remote, this).await?
        }
        (Some(_), Err(error)) => {
            return Err(anyhow::anyhow!(
                "cannot tell which cluster context {:?} is, so nothing was revoked in --remote-context: {error:#}",
                ctx.name
            ));
        }
        (None, _) => false,
    };
    if !existed && !secret_existed && !revoked {
        bail!(
            "context {:?} has no Link {cluster:?} (nor Secret {secret_name}): `kubectl mc --context {} gateways` lists the Links",
            ctx.name,
            ctx.name
        );
    }
    if args.remote_context.is_none()
        && let Ok(this) = &this
    {
        let account = rbac::linked_cluster_account(this);
        eprintln!(
            "note: cluster {cluster:?} still accepts {this:?} (its token and its agents) until its ServiceAccount {}/{account} is deleted there: \
             re-run with --remote-context CONTEXT, or `kubectl --context CONTEXT -n {} delete serviceaccount {account}` and `delete clusterrolebinding {account}`",
            mc_api::NAMESPACE,
            mc_api::NAMESPACE
        );
    }
    Ok(())
}

/// Deletes `cluster`'s reader account and its binding in `remote`: what
/// `link` made there for it. Returns whether anything was there.
async fn revoke(remote: &KubeContext, cluster: &str) -> Result<bool> {
    let name = rbac::linked_cluster_account(cluster);
    let accounts: Api<ServiceAccount> = Api::namespaced(remote.client.clone(), mc_api::NAMESPACE);
    let bindings: Api<ClusterRoleBinding> = Api::all(remote.client.clone());
    let account = delete_if_present(remote, &accounts, "ServiceAccount", &name).await?;
    if account {
        println!("serviceaccount/{name} deleted in context {:?}", remote.name);
    }
    let binding = delete_if_present(remote, &bindings, "ClusterRoleBinding", &name).await?;
    if binding {
        println!(
            "clusterrolebinding/{name} deleted in context {:?}",
            remote.name
        );
    }
    Ok(account || binding)
}

/// Deletes `name` through `api`; `false` when it was not there.
async fn delete_if_present<K>(
    ctx: &KubeContext,
    api: &Api<K>,
    kind: &str,
    name: &str,
) -> Result<bool>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(true),
        Err(e) if status_code(&e) == Some(404) => Ok(false),
        Err(e) => Err(ctx.error(format!("deleting {kind} {name}"), &e)),
    }
}
