//! `gateways` and `stat`: what the controller reports in each Link's status.
//!
//! `stat` shows link health and mirror counts only: traffic numbers live in
//! the agents' and gateways' `/metrics`, which a laptop cannot reach in
//! general; a later issue should have the controller aggregate them (or
//! scrape them through the API server's pod proxy) into something `stat`
//! can read.

use anyhow::Result;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::ListParams;
use mc_api::Link;
use serde::Serialize;

use crate::cli::{Global, OutputFormat};
use crate::kube_ctx::KubeContext;
use crate::output::{self, Table};

/// One row of `gateways`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayRow {
    /// The remote cluster.
    pub cluster_name: String,
    /// Whether the last probes reached its gateway; `None` before the first report.
    pub alive: Option<bool>,
    /// Local mirror Services of that cluster.
    pub number_of_services: u32,
    /// Last probe latency in milliseconds.
    pub latency_ms: Option<u64>,
    /// The address probed.
    pub address: Option<String>,
    /// When it was probed.
    pub last_probe_time: Option<String>,
}

/// One row of `stat`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatRow {
    /// The remote cluster.
    pub cluster_name: String,
    /// `CredentialsValid` condition status.
    pub credentials_valid: Option<String>,
    /// `RemoteAPIReachable` condition status.
    pub remote_api_reachable: Option<String>,
    /// `GatewayAlive` condition status, else the probe's view.
    pub gateway_alive: Option<String>,
    /// Last probe latency in milliseconds.
    pub latency_ms: Option<u64>,
    /// Remote Services mirrored now.
    pub mirrored: u32,
    /// Remote Services the Link selects (mirrored or not).
    pub selected: usize,
    /// Mirrors in a state other than `Mirrored`.
    pub problems: usize,
}

/// Links of the context's `mc-system`.
pub async fn list_links(ctx: &KubeContext) -> Result<Vec<Link>> {
    let api: Api<Link> = Api::namespaced(ctx.client.clone(), mc_api::NAMESPACE);
    let mut links = api
        .list(&ListParams::default())
        .await
        .map_err(|e| {
            ctx.error(
                format!("listing Links in {} (is mc installed?)", mc_api::NAMESPACE),
                &e,
            )
        })?
        .items;
    links.sort_by(|a, b| a.spec.target_cluster_name.cmp(&b.spec.target_cluster_name));
    Ok(links)
}

async fn mirror_count(ctx: &KubeContext, cluster: &str) -> Result<u32> {
    let api: Api<Service> = Api::all(ctx.client.clone());
    let selector = format!("{}={cluster}", mc_api::labels::MIRROR_OF_CLUSTER);
    let list = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| ctx.error(format!("listing mirror Services ({selector})"), &e))?;
    Ok(u32::try_from(list.items.len()).unwrap_or(u32::MAX))
}

/// The status of a Link's condition `kind`.
pub fn condition<'a>(
    link: &'a Link,
    kind: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    link.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
}

fn opt(value: Option<impl ToString>) -> String {
    value
        .map(|v| v.to_string())
        .unwrap_or_else(|| "-".to_string())
}

/// The rows of `gateways`.
pub async fn gateway_rows(ctx: &KubeContext) -> Result<Vec<GatewayRow>> {
    let mut rows = Vec::new();
    for link in list_links(ctx).await? {
        let cluster = link.spec.target_cluster_name.clone();
        let gateway = link.status.as_ref().and_then(|s| s.gateway.clone());
        rows.push(GatewayRow {
            number_of_services: mirror_count(ctx, &cluster).await?,
            cluster_name: cluster,
            alive: gateway.as_ref().map(|g| g.alive),
            latency_ms: gateway
                .as_ref()
                .filter(|g| g.alive)
                .and_then(|g| g.latency_ms),
            address: gateway.as_ref().and_then(|g| g.address.clone()),
            last_probe_time: gateway.and_then(|g| g.last_probe_time),
        });
    }
    Ok(rows)
}

/// `kubectl mc gateways`.
pub async fn run_gateways(global: &Global) -> Result<()> {
    let ctx = KubeContext::connect_reachable(global, None).await?;
    let rows = gateway_rows(&ctx).await?;
    let table = Table {
        headers: vec![
            "CLUSTER",
            "ALIVE",
            "NUM_SVC",
            "LATENCY",
            "ADDRESS",
            "LAST PROBE",
        ],
        rows: rows
            .iter()
            .map(|r| {
                vec![
                    r.cluster_name.clone(),
                    match r.alive {
                        Some(true) => "True".to_string(),
                        Some(false) => "False".to_string(),
                        None => "Unknown".to_string(),
                    },
                    r.number_of_services.to_string(),
                    r.latency_ms
                        .map(|ms| format!("{ms}ms"))
                        .unwrap_or_else(|| "-".into()),
                    opt(r.address.as_ref()),
                    opt(r.last_probe_time.as_ref()),
                ]
            })
            .collect(),
    };
    if rows.is_empty() && global.output.unwrap_or(OutputFormat::Table) == OutputFormat::Table {
        eprintln!("no Links in context {:?}", ctx.name);
        return Ok(());
    }
    print!(
        "{}",
        output::render(global.output.unwrap_or(OutputFormat::Table), &table, &rows)?
    );
    Ok(())
}

/// The rows of `stat`.
pub fn stat_rows(links: &[Link]) -> Vec<StatRow> {
    links
        .iter()
        .map(|link| {
            let status = link.status.clone().unwrap_or_default();
            let cond = |kind: &str| condition(link, kind).map(|c| c.status.clone());
            StatRow {
                cluster_name: link.spec.target_cluster_name.clone(),
                credentials_valid: cond("CredentialsValid"),
                remote_api_reachable: cond("RemoteAPIReachable"),
                gateway_alive: cond("GatewayAlive").or_else(|| {
                    status
                        .gateway
                        .as_ref()
                        .map(|g| if g.alive { "True" } else { "False" }.to_string())
                }),
                latency_ms: status.gateway.as_ref().and_then(|g| g.latency_ms),
                mirrored: status.mirrored_services,
                selected: status.mirrors.len(),
                problems: status
                    .mirrors
                    .iter()
                    .filter(|m| m.state != "Mirrored")
                    .count(),
            }
        })
        .collect()
}

/// `kubectl mc stat`.
pub async fn run_stat(global: &Global) -> Result<()> {
    let ctx = KubeContext::connect_reachable(global, None).await?;
    let rows = stat_rows(&list_links(&ctx).await?);
    let table = Table {
        headers: vec![
            "CLUSTER",
            "CREDENTIALS",
            "API",
            "GATEWAY",
            "LATENCY",
            "MIRRORED",
            "PROBLEMS",
        ],
        rows: rows
            .iter()
            .map(|r| {
                vec![
                    r.cluster_name.clone(),
                    opt(r.credentials_valid.as_ref()),
                    opt(r.remote_api_reachable.as_ref()),
                    opt(r.gateway_alive.as_ref()),
                    r.latency_ms
                        .map(|ms| format!("{ms}ms"))
                        .unwrap_or_else(|| "-".into()),
                    format!("{}/{}", r.mirrored, r.selected),
                    r.problems.to_string(),
                ]
            })
            .collect(),
    };
    if rows.is_empty() && global.output.unwrap_or(OutputFormat::Table) == OutputFormat::Table {
        eprintln!("no Links in context {:?}", ctx.name);
        return Ok(());
    }
    print!(
        "{}",
        output::render(global.output.unwrap_or(OutputFormat::Table), &table, &rows)?
    );
    Ok(())
}
