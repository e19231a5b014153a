//! Renders the nftables table of the lab's kube-proxy (no I/O).
//!
//! The layout follows kube-proxy's nftables mode: maps from
//! (address, protocol, port) to per-Service chains that pick an endpoint
//! with `numgen random`, reject rules for Services without endpoints in
//! filter chains that run before DNAT, and a mark that makes postrouting
//! masquerade traffic that must return through the node that received it.

use std::fmt::Write as _;

use ipnet::Ipv4Net;

use super::model::ServicePortRules;

/// The nftables table the lab's kube-proxy owns (family `ip`).
pub const TABLE: &str = "lab-kube-proxy";
/// Mark bit asking postrouting to masquerade.
const MASQUERADE_MARK: u32 = 0x4000;
/// Longest readable part of a chain name (nftables allows 255 bytes).
const MAX_CHAIN_LABEL: usize = 180;

/// Addresses the ruleset depends on besides the Services.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Pod CIDR of the cluster: ClusterIP traffic from elsewhere is masqueraded.
    pub cluster_cidr: Ipv4Net,
    /// Service CIDR: traffic to unallocated ClusterIPs is dropped.
    pub service_cidr: Ipv4Net,
}

/// The complete nft script that atomically replaces the table with rules
/// for `services` (feed it to `nft -f -`).
pub fn ruleset(config: &ProxyConfig, services: &[ServicePortRules]) -> String {
    let mut maps = Maps::default();
    let mut chains = String::new();
    for service in services {
        let svc_chain = chain_name("service", &service.name);
        let ext_chain = chain_name("external", &service.name);
        let proto = service.protocol;
        let port = service.port;
        let has_endpoints = !service.endpoints.is_empty();
        let cluster_target = if has_endpoints {
            format!("goto {svc_chain}")
        } else {
            "goto reject-chain".into()
        };
        let external_target = if has_endpoints {
            format!("goto {ext_chain}")
        } else {
            "goto reject-chain".into()
        };
        let (ips, node_ports) = if has_endpoints {
            (&mut maps.service_ips, &mut maps.service_nodeports)
        } else {
            (
                &mut maps.no_endpoint_services,
                &mut maps.no_endpoint_nodeports,
            )
        };
        if let Some(cluster_ip) = service.cluster_ip {
            maps.cluster_ips.push(cluster_ip.to_string());
            ips.push(format!(
                "{cluster_ip} . {proto} . {port} : {cluster_target}"
            ));
        }
        for external in &service.external_ips {
            ips.push(format!("{external} . {proto} . {port} : {external_target}"));
        }
        if let Some(node_port) = service.node_port {
            node_ports.push(format!("{proto} . {node_port} : {external_target}"));
        }
        if !has_endpoints {
            continue;
        }

        let mut body = Vec::new();
        if let Some(cluster_ip) = service.cluster_ip {
            body.push(format!(
                "ip daddr {cluster_ip} {proto} dport {port} ip saddr != {} jump mark-for-masquerade",
                config.cluster_cidr
            ));
        }
        let endpoint_chains: Vec<String> = service
            .endpoints
            .iter()
            .map(|ep| {
                chain_name(
                    "endpoint",
                    &format!("{}__{}/{}", service.name, ep.ip(), ep.port()),
                )
            })
            .collect();
        let choices: Vec<String> = endpoint_chains
            .iter()
            .enumerate()
            .map(|(i, chain)| format!("{i} : goto {chain}"))
            .collect();
        body.push(format!(
            "numgen random mod {} vmap {{ {} }}",
            choices.len(),
            choices.join(", ")
        ));
        push_chain(&mut chains, &svc_chain, &body);

        if service.node_port.is_some() || !service.external_ips.is_empty() {
            push_chain(
                &mut chains,
                &ext_chain,
                &[
                    "jump mark-for-masquerade".into(),
                    format!("goto {svc_chain}"),
                ],
            );
        }
        for (endpoint, chain) in service.endpoints.iter().zip(&endpoint_chains) {
            push_chain(
                &mut chains,
                chain,
                &[
                    format!("ip saddr {} jump mark-for-masquerade", endpoint.ip()),
                    format!("meta l4proto {proto} dnat to {endpoint}"),
                ],
            );
        }
    }

    let mut out = String::new();
    // Create-then-delete makes the script work whether or not the table
    // exists; the whole file is one transaction.
    let _ = writeln!(
        out,
        "add table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{"
    );
    push_set(
        &mut out,
        "set",
        "cluster-ips",
        "ipv4_addr",
        &maps.cluster_ips,
    );
    let addr_key = "ipv4_addr . inet_proto . inet_service : verdict";
    let port_key = "inet_proto . inet_service : verdict";
    push_set(&mut out, "map", "service-ips", addr_key, &maps.service_ips);
    push_set(
        &mut out,
        "map",
        "service-nodeports",
        port_key,
        &maps.service_nodeports,
    );
    push_set(
        &mut out,
        "map",
        "no-endpoint-services",
        addr_key,
        &maps.no_endpoint_services,
    );
    push_set(
        &mut out,
        "map",
        "no-endpoint-nodeports",
        port_key,
        &maps.no_endpoint_nodeports,
    );

    // Numeric priorities (dstnat = -100, srcnat = 100): nft 1.0.6 accepts
    // the names only for some hooks. Filters run before DNAT, as kube-proxy's.
    let base = |hook: &str, kind: &str, priority: &str| {
        format!("type {kind} hook {hook} priority {priority}; policy accept;")
    };
    let fixed: Vec<(&str, Vec<String>)> = vec![
        (
            "filter-input",
            vec![
                base("input", "filter", "-110"),
                "ct state new jump nodeport-endpoints-check".into(),
                "ct state new jump service-endpoints-check".into(),
            ],
        ),
        (
            "filter-forward",
            vec![
                base("forward", "filter", "-110"),
                "ct state new jump service-endpoints-check".into(),
                "ct state new jump cluster-ips-check".into(),
            ],
        ),
        ("filter-output", vec![base("output", "filter", "-110"), "ct state new jump service-endpoints-check".into()]),
        ("filter-output-post-dnat", vec![base("output", "filter", "-90"), "ct state new jump cluster-ips-check".into()]),
        ("nat-prerouting", vec![base("prerouting", "nat", "-100"), "jump services".into()]),
        ("nat-output", vec![base("output", "nat", "-100"), "jump services".into()]),
        ("nat-postrouting", vec![base("postrouting", "nat", "100"), "jump masquerading".into()]),
        (
            "nodeport-endpoints-check",
            vec!["ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @no-endpoint-nodeports".into()],
        ),
        ("service-endpoints-check", vec!["ip daddr . meta l4proto . th dport vmap @no-endpoint-services".into()]),
        (
            "cluster-ips-check",
            vec![
                "ip daddr @cluster-ips reject comment \"no such port on this ClusterIP\"".into(),
                format!("ip daddr {} drop comment \"unallocated ClusterIP\"", config.service_cidr),
            ],
        ),
        ("reject-chain", vec!["reject comment \"Service without ready endpoints\"".into()]),
        ("mark-for-masquerade", vec![format!("meta mark set meta mark | {MASQUERADE_MARK:#x}")]),
        (
            "masquerading",
            vec![
                format!("meta mark & {MASQUERADE_MARK:#x} == 0 return"),
                format!("meta mark set meta mark ^ {MASQUERADE_MARK:#x}"),
                "masquerade fully-random".into(),
            ],
        ),
        (
            "services",
            vec![
                "ip daddr . meta l4proto . th dport vmap @service-ips".into(),
                "ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @service-nodeports".into(),
            ],
        ),
    ];
    for (name, body) in &fixed {
        push_chain(&mut out, name, body);
    }
    out.push_str(&chains);
    out.push_str("}\n");
    out
}

/// Elements of the table's sets and maps.
#[derive(Default)]
struct Maps {
    cluster_ips: Vec<String>,
    service_ips: Vec<String>,
    service_nodeports: Vec<String>,
    no_endpoint_services: Vec<String>,
    no_endpoint_nodeports: Vec<String>,
}

fn push_set(out: &mut String, kind: &str, name: &str, key: &str, elements: &[String]) {
    let _ = writeln!(out, "\t{kind} {name} {{\n\t\ttype {key}");
    let mut elements: Vec<&String> = elements.iter().collect();
    elements.sort();
    elements.dedup();
    if !elements.is_empty() {
        let joined: Vec<&str> = elements.iter().map(|e| e.as_str()).collect();
        let _ = writeln!(
            out,
            "\t\telements = {{\n\t\t\t{}\n\t\t}}",
            joined.join(",\n\t\t\t")
        );
    }
    out.push_str("\t}\n");
}

fn push_chain(out: &mut String, name: &str, body: &[String]) {
    let _ = writeln!(out, "\tchain {name} {{");
    for line in body {
        let _ = writeln!(out, "\t\t{line}");
    }
    out.push_str("\t}\n");
}

/// `<prefix>-<hash>-<label>`: unique through the hash, readable through the
/// label (truncated so the name stays within nftables' limit).
fn chain_name(prefix: &str, label: &str) -> String {
    let readable: String = label.chars().take(MAX_CHAIN_LABEL).collect();
    format!("{prefix}-{}-{readable}", hash8(label))
}

/// Eight base-32 characters of an FNV-1a hash of `key`.
fn hash8(key: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    const DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..8)
        .map(|i| char::from(DIGITS[((hash >> (5 * i)) & 31) as usize]))
        .collect()
}

#[cfg(test)]
mod tests;
