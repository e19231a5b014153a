//! `export` / `unexport`: the `mc.dev/exported` label on a Service, and
//! with `--allow` the `mc.dev/allowed-callers` annotation naming who may
//! call it.

use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::{Patch, PatchParams};
use mc_api::AllowedCallers;
use mc_api::labels::{ALLOWED_CALLERS, EXPORTED, EXPORTED_VALUE, MIRROR_OF_CLUSTER};

use crate::cli::{ExportArgs, Global};
use crate::kube_ctx::KubeContext;

/// Parses `svc/NAME`, `service/NAME`, `services/NAME` or `NAME`.
pub fn service_name(target: &str) -> Result<&str> {
    let name = match target.split_once('/') {
        Some(("svc" | "service" | "services", name)) => name,
        Some((kind, _)) => bail!("only Services can be exported, not {kind:?}: use svc/NAME"),
        None => target,
    };
    if name.is_empty() {
        bail!("{target:?} names no Service: use svc/NAME");
    }
    Ok(name)
}

/// `kubectl mc export` (`exported` true) and `unexport` (false).
pub async fn run(global: &Global, args: &ExportArgs, exported: bool) -> Result<()> {
    let names = args
        .services
        .iter()
        .map(|t| service_name(t))
        .collect::<Result<Vec<_>>>()?;
    if !exported && (args.allow.is_some() || args.allow_any_linked) {
        bail!("--allow and --allow-any-linked go with export, not unexport");
    }
    // The annotation's wanted value: Some(Some(list)), Some(None) to
    // remove it, None to leave it as it is.
    let allowed: Option<Option<String>> = match (&args.allow, args.allow_any_linked) {
        (Some(list), _) => {
            let parsed: AllowedCallers = list
                .parse()
                .map_err(|e| anyhow::anyhow!("--allow {list:?}: {e}"))?;
            Some(Some(parsed.to_string()))
        }
        (None, true) => Some(None),
        (None, false) => None,
    };
    let ctx = KubeContext::connect_reachable(global, None).await?;
    let ns = ctx.namespace.clone();
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    let verb = if exported { "export" } else { "unexport" };
    for name in names {
        let service = api
            .get_opt(name)
            .await
            .map_err(|e| ctx.error(format!("reading Service {ns}/{name}"), &e))?;
        let Some(service) = service else {
            bail!(
                "cannot {verb} service {name:?}: it does not exist in namespace {ns:?} of context {:?} \
                 (list them with `kubectl --context {} -n {ns} get services`, or pick the namespace with -n)",
                ctx.name,
                ctx.name
            );
        };
        let labels = service.metadata.labels.unwrap_or_default();
        if exported && let Some(cluster) = labels.get(MIRROR_OF_CLUSTER) {
            bail!(
                "service {ns}/{name} is mc's mirror of a Service of cluster {cluster:?}: only local Services can be exported"
            );
        }
        let already = labels.get(EXPORTED).map(String::as_str) == Some(EXPORTED_VALUE);
        let current_allowed = service
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ALLOWED_CALLERS))
            .cloned();
        let allowed_unchanged = allowed.as_ref().is_none_or(|want| *want == current_allowed);
        if already == exported && allowed_unchanged {
            println!("service/{name} {verb}ed (unchanged)");
            continue;
        }
        let value = if exported {
            serde_json::Value::from(EXPORTED_VALUE)
        } else {
            serde_json::Value::Null
        };
        let mut patch = serde_json::json!({"metadata": {"labels": {EXPORTED: value}}});
        if let Some(want) = &allowed {
            patch["metadata"]["annotations"] = serde_json::json!({ ALLOWED_CALLERS: want });
        }
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| ctx.error(format!("labelling Service {ns}/{name}"), &e))?;
        match allowed.as_ref().and_then(Option::as_ref) {
            Some(list) => println!("service/{name} {verb}ed to {list}"),
            None => println!("service/{name} {verb}ed"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::service_name;

    #[test]
    fn accepts_kubectl_style_service_references() {
        assert_eq!(service_name("svc/backend").unwrap(), "backend");
        assert_eq!(service_name("service/backend").unwrap(), "backend");
        assert_eq!(service_name("backend").unwrap(), "backend");
        assert!(service_name("deploy/backend").is_err());
        assert!(service_name("svc/").is_err());
    }
}
