//! `link`: run against the target cluster (east). Ensures the read-only
//! remote reader there, mints a token for it, and prints (or applies to
//! --apply-to) the credentials Secret and the Link for the linking side.

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::PostParams;
use mc_api::link::ProbeSpec;
use mc_api::{Link, LinkSpec};

use crate::apply::{self, Progress};
use crate::cli::{Global, LinkArgs, OutputFormat};
use crate::kube_ctx::{ClusterAccess, KubeContext};
use crate::manifests::meta::{
    GATEWAY, LINK_CREDENTIALS_TYPE, LINK_KUBECONFIG_KEY, LINK_READER, TRUST_ANCHOR_SECRET,
    link_secret, system_meta,
};
use crate::manifests::rbac;
use crate::mesh_config::{self, MeshConfig};
use crate::objects::{self, Object, object};

/// Where the linking side reaches the target's gateways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayEndpoint {
    /// IPs or DNS names.
    pub addresses: Vec<String>,
    /// Tunnel port.
    pub port: u16,
    /// Probe (admin) port.
    pub probe_port: u16,
}

fn node_port(service: &Service, name: &str) -> Option<u16> {
    service
        .spec
        .as_ref()?
        .ports
        .as_ref()?
        .iter()
        .find(|p| p.name.as_deref() == Some(name))?
        .node_port
        .and_then(|p| u16::try_from(p).ok())
}

/// Works out the gateway endpoint from the flags and the `mc-gateway` Service.
pub fn gateway_endpoint(
    service: &Service,
    args: &LinkArgs,
    context: &str,
) -> Result<GatewayEndpoint> {
    let service_type = service
        .spec
        .as_ref()
        .and_then(|s| s.type_.clone())
        .unwrap_or_else(|| "ClusterIP".to_string());
    let node_port_type = service_type == "NodePort";
    let given = parse_gateway_addresses(&args.gateway_addresses)?;
    let addresses = if !given.hosts.is_empty() {
        given.hosts
    } else {
        let ingress: Vec<String> = service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|ingress| {
                ingress
                    .iter()
                    .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
                    .collect()
            })
            .unwrap_or_default();
        if ingress.is_empty() {
            if service_type == "LoadBalancer" {
                bail!(
                    "the {GATEWAY} Service in context {context:?} has no LoadBalancer address yet: \
                     wait for it (kubectl --context {context} -n {} get svc {GATEWAY}) or pass --gateway-address",
                    mc_api::NAMESPACE
                );
            }
            bail!(
                "the {GATEWAY} Service in context {context:?} is of type {service_type}: pass \
                 --gateway-address with an address of a node (or of whatever fronts the gateway) the other cluster can reach"
            );
        }
        ingress
    };
    let pick = |flag: Option<u16>, name: &str, default: u16| -> Result<u16> {
        match (flag, node_port_type) {
            (Some(port), _) => Ok(port),
            (None, false) => Ok(default),
            (None, true) => node_port(service, name).ok_or_else(|| {
                anyhow!(
                    "the {GATEWAY} Service in context {context:?} is a NodePort Service without a nodePort for port {name:?}"
                )
            }),
        }
    };
    let tunnel_port = match (args.gateway_port, given.port) {
        (Some(flag), Some(port)) if flag != port => bail!(
            "--gateway-address names port {port} but --gateway-port says {flag}: give the port once"
        ),
        (flag, port) => flag.or(port),
    };
    Ok(GatewayEndpoint {
        addresses,
        port: pick(tunnel_port, "tunnel", mc_api::GATEWAY_TUNNEL_PORT)?,
        probe_port: pick(args.probe_port, "admin", mc_api::ADMIN_PORT)?,
    })
}

/// The `--gateway-address` values: the hosts, and the tunnel port when
/// they were given as `HOST:PORT` (the `<node-ip>:<nodePort>` habit).
#[derive(Debug, Default, PartialEq, Eq)]
struct GivenAddresses {
    hosts: Vec<String>,
    port: Option<u16>,
}

/// Parses every `--gateway-address`: an IPv4 or IPv6 address or a DNS
/// name, optionally with `:PORT` (`[v6]:PORT` for IPv6). A Link holds one
/// tunnel port, so addresses naming different ports are refused, as is
/// anything that is not a host (a URL, a path, spaces).
fn parse_gateway_addresses(values: &[String]) -> Result<GivenAddresses> {
    let mut given = GivenAddresses::default();
    for value in values {
        let (host, port) = split_host_port(value.trim()).with_context(|| {
            format!(
                "--gateway-address {value:?} is not HOST or HOST:PORT \
                 (an IP address or DNS name; [IPv6]:PORT with a port)"
            )
        })?;
        if let Some(port) = port {
            match given.port {
                Some(seen) if seen != port => bail!(
                    "--gateway-address values name ports {seen} and {port}: a Link has one tunnel port"
                ),
                _ => given.port = Some(port),
            }
        }
        given.hosts.push(host);
    }
    Ok(given)
}

/// `HOST`, `HOST:PORT`, `IPv6` or `[IPv6]:PORT`, with the host checked.
fn split_host_port(value: &str) -> Result<(String, Option<u16>)> {
    let port = |text: &str| -> Result<u16> {
        match text.parse::<u16>() {
            Ok(0) | Err(_) => bail!("{text:?} is not a port (1-65535)"),
            Ok(port) => Ok(port),
        }
    };
    if let Some(rest) = value.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').context("no closing ]")?;
        let ip: std::net::Ipv6Addr = host.parse().context("not an IPv6 address")?;
        let port = match tail {
            "" => None,
            _ => Some(port(tail.strip_prefix(':').context("junk after ]")?)?),
        };
        return Ok((ip.to_string(), port));
    }
    if let Ok(ip) = value.parse::<std::net::IpAddr>() {
        return Ok((ip.to_string(), None));
    }
    let (host, port) = match value.rsplit_once(':') {
        Some((host, text)) => (host, Some(port(text)?)),
        None => (value, None),
    };
    if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
        return Ok((ip.to_string(), port));
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let name = host.trim_end_matches('.');
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        bail!("{host:?} is not an IP address or DNS name");
    }
    Ok((name.to_ascii_lowercase(), port))
}

/// Whether an API server URL points at this machine only.
pub fn is_loopback_url(url: &str) -> bool {
    let host = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split('/')
        .next()
        .unwrap_or_default();
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// A kubeconfig (YAML) that reaches `access` with `token`.
pub fn reader_kubeconfig(cluster: &str, access: &ClusterAccess, token: &str) -> Result<String> {
    let mut cluster_entry = serde_json::Map::new();
    cluster_entry.insert("server".into(), access.server.clone().into());
    if let Some(ca) = &access.certificate_authority_data {
        cluster_entry.insert("certificate-authority-data".into(), ca.clone().into());
    }
    if access.insecure_skip_tls_verify {
        cluster_entry.insert("insecure-skip-tls-verify".into(), true.into());
    }
    if let Some(name) = &access.tls_server_name {
        cluster_entry.insert("tls-server-name".into(), name.clone().into());
    }
    let user = format!("{LINK_READER}-{cluster}");
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": cluster_entry}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "current-context": cluster,
    });
    serde_yaml::to_string(&config).context("rendering the link kubeconfig")
}

/// The Secret and the Link the linking side needs.
pub fn link_objects(
    config: &MeshConfig,
    gateway: &GatewayEndpoint,
    kubeconfig: &str,
    create_namespaces: bool,
) -> Result<Vec<Object>> {
    let cluster = &config.cluster_name;
    let secret = Secret {
        metadata: system_meta(&link_secret(cluster), Some("link")),
        type_: Some(LINK_CREDENTIALS_TYPE.to_string()),
        data: Some(BTreeMap::from([(
            LINK_KUBECONFIG_KEY.to_string(),
            ByteString(kubeconfig.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    };
    let mut link = Link::new(
        cluster,
        LinkSpec {
            target_cluster_name: cluster.clone(),
            target_cluster_domain: config.cluster_domain.clone(),
            credentials_secret: link_secret(cluster),
            gateway_addresses: gateway.addresses.clone(),
            gateway_port: gateway.port,
            gateway_identity: mc_api::spiffe_id(&config.trust_domain, mc_api::NAMESPACE, GATEWAY),
            probe: ProbeSpec {
                port: gateway.probe_port,
                ..ProbeSpec::default()
            },
            selector: None,
            create_namespaces,
        },
    );
    link.metadata = system_meta(cluster, Some("link"));
    Ok(vec![object(&secret)?, object(&link)?])
}

async fn mint_token(ctx: &KubeContext, account: &str, seconds: i64) -> Result<String> {
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), mc_api::NAMESPACE);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(seconds),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let response = api
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .map_err(|e| {
            ctx.error(
                format!(
                    "minting a token for ServiceAccount {}/{account}",
                    mc_api::NAMESPACE
                ),
                &e,
            )
        })?;
    response
        .status
        .map(|s| s.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            anyhow!(
                "in context {:?}: the TokenRequest returned no token",
                ctx.name
            )
        })
}

/// Fails unless mc is installed in `ctx` (the Link CRD exists).
pub async fn ensure_link_crd(ctx: &KubeContext) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(ctx.client.clone());
    let name = "links.mc.dev";
    match crds
        .get_opt(name)
        .await
        .map_err(|e| ctx.error(format!("reading CRD {name}"), &e))?
    {
        Some(_) => Ok(()),
        None => bail!(
            "mc is not installed in context {:?} (no CRD {name}): run `kubectl mc --context {} install --cluster-name NAME --identity-dir DIR --apply` first",
            ctx.name,
            ctx.name
        ),
    }
}

/// The trust anchors (`mc-trust-anchor` ca.crt, DER) of a cluster, or
/// `None` when the Secret is absent.
async fn trust_anchors(ctx: &KubeContext) -> Result<Option<Vec<Vec<u8>>>> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), mc_api::NAMESPACE);
    let secret = secrets
        .get_opt(TRUST_ANCHOR_SECRET)
        .await
        .map_err(|e| ctx.error(format!("reading Secret {TRUST_ANCHOR_SECRET}"), &e))?;
    let Some(pem) = secret
        .and_then(|s| s.data)
        .and_then(|d| d.get("ca.crt").cloned())
    else {
        return Ok(None);
    };
    let pem = String::from_utf8_lossy(&pem.0).into_owned();
    let certs = mc_identity::files::parse_certs(&pem, "trust anchors")
        .with_context(|| format!("the trust anchors of context {:?}", ctx.name))?;
    Ok(Some(certs.into_iter().map(|c| c.to_vec()).collect()))
}

/// Refuses to link clusters whose trust anchors have nothing in common:
/// their agents and gateways could never authenticate each other.
pub async fn check_shared_anchor(target: &KubeContext, destination: &KubeContext) -> Result<()> {
    match (
        trust_anchors(target).await?,
        trust_anchors(destination).await?,
    ) {
        (Some(ours), Some(theirs)) => {
            if !ours.iter().any(|anchor| theirs.contains(anchor)) {
                bail!(
                    "trust anchors differ: {:?} and {:?} were installed with different anchors, so their \
                     gateways and agents would refuse each other; re-install one with the other's \
                     --identity-dir (the same ca.crt and ca.key)",
                    target.name,
                    destination.name
                );
            }
        }
        _ => eprintln!(
            "warning: Secret {}/{TRUST_ANCHOR_SECRET} is missing in {:?} or {:?}; cannot compare trust anchors",
            mc_api::NAMESPACE,
            target.name,
            destination.name
        ),
    }
    Ok(())
}

/// `kubectl mc link`.
pub async fn run(global: &Global, args: &LinkArgs) -> Result<()> {
    let format = global.output.unwrap_or(OutputFormat::Yaml);
    if args.apply_to.is_none() {
        objects::check_format(format)?;
    }
    let target = KubeContext::connect_reachable(global, None).await?;
    let config = mesh_config::read(&target).await?;
    if config.cluster_name != args.cluster_name {
        bail!(
            "context {:?} was installed as cluster {:?}, not {:?}: pass --cluster-name {} (mirrors are named after it)",
            target.name,
            config.cluster_name,
            args.cluster_name,
            config.cluster_name
        );
    }
    let seconds =
        i64::try_from(args.token_duration.as_secs()).context("--token-duration is too long")?;
    let services: Api<Service> = Api::namespaced(target.client.clone(), mc_api::NAMESPACE);
    let gateway_service = services
        .get_opt(GATEWAY)
        .await
        .map_err(|e| {
            target.error(
                format!("reading Service {}/{GATEWAY}", mc_api::NAMESPACE),
                &e,
            )
        })?
        .ok_or_else(|| {
            anyhow!(
                "context {:?} has no Service {}/{GATEWAY}: re-run install there",
                target.name,
                mc_api::NAMESPACE
            )
        })?;
    let gateway = gateway_endpoint(&gateway_service, args, &target.name)?;
    // The linking side is checked before anything is created in the target.
    let (destination, linking) = match &args.apply_to {
        Some(name) => {
            let destination = KubeContext::connect_reachable(global, Some(name)).await?;
            ensure_link_crd(&destination).await?;
            let theirs = mesh_config::read(&destination).await?;
            if theirs.cluster_name == config.cluster_name {
                bail!(
                    "context {:?} is cluster {:?} too: a cluster cannot link to itself",
                    destination.name,
                    theirs.cluster_name
                );
            }
            if theirs.trust_domain != config.trust_domain {
                bail!(
                    "trust domains differ: {:?} uses {:?}, {:?} uses {:?}; linked clusters must share one trust domain and anchor",
                    target.name,
                    config.trust_domain,
                    destination.name,
                    theirs.trust_domain
                );
            }
            check_shared_anchor(&target, &destination).await?;
            if let Some(named) = &args.from_cluster
                && *named != theirs.cluster_name
            {
                bail!(
                    "--from-cluster {named:?} but context {:?} was installed as cluster {:?}",
                    destination.name,
                    theirs.cluster_name
                );
            }
            (Some(destination), theirs.cluster_name)
        }
        None => match &args.from_cluster {
            Some(named) => (None, named.clone()),
            None => bail!(
                "name the cluster that will use this Link: --from-cluster NAME (or --apply-to CONTEXT to apply it there directly)"
            ),
        },
    };
    if !mc_identity::valid_cluster_name(&linking) {
        bail!("{linking:?} is not a valid cluster name (a DNS label)");
    }
    if linking == config.cluster_name {
        bail!("a cluster cannot link to itself ({linking:?})");
    }
    let mut reader = rbac::link_reader()?;
    reader.extend(rbac::linked_cluster(&linking)?);
    apply::apply_all(&target, &reader, Progress::Stderr).await?;
    let token = mint_token(&target, &rbac::linked_cluster_account(&linking), seconds).await?;
    let mut access = target.cluster_access()?;
    match &args.api_server_address {
        Some(server) => access.server = server.clone(),
        None if is_loopback_url(&access.server) => eprintln!(
            "warning: context {:?} reaches its API at {}, a loopback address the other cluster's controller \
             cannot use unless it runs on this machine; pass --api-server-address with an address it can reach",
            target.name, access.server
        ),
        None => {}
    }
    let kubeconfig = reader_kubeconfig(&config.cluster_name, &access, &token)?;
    let objects = link_objects(&config, &gateway, &kubeconfig, args.create_namespaces)?;
    match destination {
        None => print!("{}", objects::print(&objects, format)?),
        Some(destination) => {
            apply::apply_all(&destination, &objects, Progress::Stdout).await?;
            eprintln!(
                "context {:?} now links to cluster {:?} (gateway {}:{}); see `kubectl mc --context {} gateways`",
                destination.name,
                config.cluster_name,
                gateway.addresses.join(","),
                gateway.port,
                destination.name
            );
        }
    }
    tracing::info!(cluster = %config.cluster_name, "link done");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{GivenAddresses, is_loopback_url, parse_gateway_addresses};

    fn parse(values: &[&str]) -> anyhow::Result<GivenAddresses> {
        parse_gateway_addresses(&values.iter().map(|v| v.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn gateway_addresses_take_an_optional_port() {
        let given = parse(&["198.18.0.10:31329"]).expect("node-ip:nodePort");
        assert_eq!(given.hosts, ["198.18.0.10"]);
        assert_eq!(given.port, Some(31329));
        let given = parse(&[
            "10.0.0.1",
            "gw.East.example.com.:4143",
            "[fd00::1]:4143",
            "fd00::2",
        ])
        .expect("mixed forms");
        assert_eq!(
            given.hosts,
            ["10.0.0.1", "gw.east.example.com", "fd00::1", "fd00::2"]
        );
        assert_eq!(given.port, Some(4143));
        assert_eq!(parse(&["10.0.0.1"]).expect("host").port, None);
    }

    #[test]
    fn bad_gateway_addresses_are_refused() {
        for bad in [
            "",
            "https://10.0.0.1:4143",
            "10.0.0.1:0",
            "10.0.0.1:70000",
            "10.0.0.1:4143:4143",
            "host name",
            "[fd00::1",
            "[fd00::1]4143",
            "-gw.example.com",
        ] {
            assert!(parse(&[bad]).is_err(), "{bad:?} was accepted");
        }
        let conflict = parse(&["10.0.0.1:4143", "10.0.0.2:4144"]).expect_err("two ports");
        assert!(
            conflict.to_string().contains("one tunnel port"),
            "{conflict}"
        );
    }

    #[test]
    fn loopback_api_urls_are_recognised() {
        assert!(is_loopback_url("https://127.0.0.1:6443"));
        assert!(is_loopback_url("https://localhost:6443/"));
        assert!(is_loopback_url("https://[::1]:6443"));
        assert!(!is_loopback_url("https://10.0.0.1:6443"));
        assert!(!is_loopback_url("https://east.example.com"));
    }
}
