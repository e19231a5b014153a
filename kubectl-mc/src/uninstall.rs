//! `uninstall`: the reverse of install. Refuses while Links exist unless
//! --force, in which case Links are unlinked first (mirrors included).

use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Api;
use kube::api::{DeleteParams, ListParams};

use crate::apply::{self, Progress};
use crate::cli::{Global, OutputFormat, UninstallArgs};
use crate::gateways::list_links;
use crate::kube_ctx::{KubeContext, status_code};
use crate::manifests::meta::{
    self, GATEWAY, ISSUER_SECRET, NODE_AGENT, PART_OF_SELECTOR, TRUST_ANCHOR_SECRET,
    identity_secret, system_meta,
};
use crate::manifests::{self, rbac};
use crate::mesh_config;
use crate::objects::{self, Object, object};
use crate::unlink;

/// Every object install (and `link`, when this cluster is a link target)
/// may have created, in apply order.
pub fn installed_objects(cluster_name: &str) -> Result<Vec<Object>> {
    let mut objects = manifests::render(&manifests::default_options(cluster_name), None)?;
    // Identity Secrets and the remote reader go after the namespace and CRD.
    let mut extra = Vec::new();
    // The leaf Secrets are what installs before CSR issuance wrote.
    for name in [
        TRUST_ANCHOR_SECRET.to_string(),
        ISSUER_SECRET.to_string(),
        identity_secret(GATEWAY),
        identity_secret(NODE_AGENT),
    ] {
        extra.push(object(&Secret {
            metadata: system_meta(&name, None),
            ..Secret::default()
        })?);
    }
    extra.extend(rbac::link_reader()?);
    let tail = objects.split_off(2);
    objects.extend(extra);
    objects.extend(tail);
    Ok(objects)
}

async fn delete_link_secrets(ctx: &KubeContext) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), mc_api::NAMESPACE);
    let selector = format!("{PART_OF_SELECTOR},{}=link", meta::COMPONENT);
    let secrets = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| ctx.error("listing Link credentials Secrets", &e))?;
    for secret in secrets {
        let name = secret.metadata.name.unwrap_or_default();
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => println!("secret/{name} deleted"),
            Err(e) if status_code(&e) == Some(404) => {}
            Err(e) => return Err(ctx.error(format!("deleting Secret {name}"), &e)),
        }
    }
    Ok(())
}

/// The readers (and their cluster-wide bindings) `link` made here for the
/// clusters that link to this one.
async fn linked_cluster_objects(ctx: &KubeContext) -> Result<Vec<Object>> {
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), mc_api::NAMESPACE);
    let accounts = match api
        .list(&ListParams::default().labels(mc_api::labels::LINKED_CLUSTER))
        .await
    {
        Ok(accounts) => accounts,
        Err(e) if status_code(&e) == Some(404) => return Ok(Vec::new()),
        Err(e) => return Err(ctx.error("listing the linked clusters' ServiceAccounts", &e)),
    };
    let mut objects = Vec::new();
    for account in accounts {
        if let Some(cluster) = account
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(mc_api::labels::LINKED_CLUSTER))
        {
            objects.extend(rbac::linked_cluster(cluster)?);
        }
    }
    Ok(objects)
}

/// `kubectl mc uninstall`.
pub async fn run(global: &Global, args: &UninstallArgs) -> Result<()> {
    let format = global.output.unwrap_or(OutputFormat::Yaml);
    if !args.apply {
        objects::check_format(format)?;
    }
    let ctx = KubeContext::connect_reachable(global, None).await?;
    let links = match list_links(&ctx).await {
        Ok(links) => links,
        Err(e) => {
            // No CRD means no Links; anything else is a real failure.
            let crd_missing = crate::link::ensure_link_crd(&ctx).await.is_err();
            if !crd_missing {
                return Err(e);
            }
            Vec::new()
        }
    };
    let names: Vec<String> = links
        .iter()
        .filter_map(|l| l.metadata.name.clone())
        .collect();
    if !names.is_empty() && !args.force {
        bail!(
            "context {:?} still has {} Link(s): {}. Unlink them first (`kubectl mc --context {} unlink --cluster-name {}`) \
             or pass --force to delete them and their mirrors",
            ctx.name,
            names.len(),
            names.join(", "),
            ctx.name,
            names[0]
        );
    }
    let cluster_name = match mesh_config::read(&ctx).await {
        Ok(config) => config.cluster_name,
        Err(_) => "unknown".to_string(),
    };
    let mut objects = installed_objects(&cluster_name)?;
    objects.extend(linked_cluster_objects(&ctx).await?);
    if !args.apply {
        let mut all = Vec::new();
        for link in &links {
            all.push(object(link)?);
        }
        all.append(&mut objects);
        print!("{}", objects::print(&all, format)?);
        return Ok(());
    }
    for name in &names {
        unlink::delete_link(&ctx, name, args.timeout, true).await?;
    }
    delete_link_secrets(&ctx).await?;
    let deleted = apply::delete_all(&ctx, &objects, Progress::Stdout).await?;
    eprintln!(
        "mc is uninstalled from context {:?} ({deleted} object(s) deleted; the namespace {} finishes terminating in the background)",
        ctx.name,
        mc_api::NAMESPACE
    );
    Ok(())
}
