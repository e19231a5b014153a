//! The lab's network, built with `ip` and `nft`: the WAN netns and bridge,
//! the user's veth into it, and the nodes (netns with `eth0` on the WAN, a
//! pod bridge `mcbr0`, host-gw routes to the other nodes of the same
//! cluster, and the `lab-node` nftables table).

use anyhow::{Context, Result};

use crate::cmd::{ip, ip_quiet, netns_list, nft_in, sysctl_in};
use crate::plan::{ClusterPlan, LabPlan, NodePlan};

/// Name of the WAN bridge inside the WAN netns.
pub const WAN_BRIDGE: &str = "wan";
/// Name of the pod bridge inside every node netns.
pub const POD_BRIDGE: &str = "mcbr0";
/// The nftables table this module owns in every node netns.
pub const NODE_TABLE: &str = "lab-node";
/// WAN-netns end of the user's veth.
const HOST_PEER: &str = "host";

/// Creates the WAN netns, its bridge with the gateway and every cluster's
/// API address, and the user's veth into it.
pub fn create_wan(lab: &LabPlan, clusters: &[ClusterPlan]) -> Result<()> {
    let ns = lab.wan_netns();
    ip(&["netns", "add", &ns]).with_context(|| format!("creating the WAN netns {ns}"))?;
    ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    ip(&["-n", &ns, "link", "add", WAN_BRIDGE, "type", "bridge"])?;
    ip(&[
        "-n",
        &ns,
        "addr",
        "add",
        &format!("{}/24", lab.wan_gateway()),
        "dev",
        WAN_BRIDGE,
    ])?;
    for cluster in clusters {
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/32", cluster.api_addr()),
            "dev",
            WAN_BRIDGE,
        ])
        .with_context(|| format!("adding cluster {}'s API address", cluster.name))?;
    }
    ip(&["-n", &ns, "link", "set", WAN_BRIDGE, "up"])?;
    let veth = lab.host_veth();
    ip(&[
        "link", "add", &veth, "type", "veth", "peer", "name", HOST_PEER, "netns", &ns,
    ])
    .with_context(|| format!("creating the user's veth {veth}"))?;
    ip(&[
        "-n", &ns, "link", "set", HOST_PEER, "master", WAN_BRIDGE, "up",
    ])?;
    ip(&[
        "addr",
        "add",
        &format!("{}/24", lab.host_addr()),
        "dev",
        &veth,
    ])?;
    ip(&["link", "set", &veth, "up"])?;
    Ok(())
}

/// WAN-netns end of node `node`'s `eth0` veth.
fn wan_port(node: &NodePlan) -> String {
    format!("c{}n{}", node.cluster.index, node.index)
}

/// Creates one node: netns, `eth0` on the WAN, pod bridge, forwarding,
/// routes to the pod CIDRs of `peers` (the other nodes of its cluster), and
/// masquerading of pod traffic that leaves the cluster's pod network.
pub fn create_node(node: &NodePlan, peers: &[NodePlan]) -> Result<()> {
    let ns = node.netns();
    let wan_ns = node.cluster.lab.wan_netns();
    let port = wan_port(node);
    ip(&["netns", "add", &ns]).with_context(|| format!("creating node netns {ns}"))?;
    ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    ip(&[
        "-n", &wan_ns, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
    ])
    .with_context(|| format!("creating {}'s WAN link", node.name()))?;
    ip(&[
        "-n", &wan_ns, "link", "set", &port, "master", WAN_BRIDGE, "up",
    ])?;
    ip(&[
        "-n",
        &ns,
        "addr",
        "add",
        &format!("{}/24", node.wan_addr()),
        "dev",
        "eth0",
    ])?;
    ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
    let gateway = node.cluster.lab.wan_gateway().to_string();
    ip(&[
        "-n", &ns, "route", "add", "default", "via", &gateway, "dev", "eth0",
    ])?;
    ip(&["-n", &ns, "link", "add", POD_BRIDGE, "type", "bridge"])?;
    let bridge_addr = format!("{}/{}", node.pod_gateway(), node.pod_cidr().prefix_len());
    ip(&["-n", &ns, "addr", "add", &bridge_addr, "dev", POD_BRIDGE])?;
    ip(&["-n", &ns, "link", "set", POD_BRIDGE, "up"])?;
    sysctl_in(&ns, "net.ipv4.ip_forward", "1")?;
    for peer in peers.iter().filter(|p| p.index != node.index) {
        ip(&[
            "-n",
            &ns,
            "route",
            "add",
            &peer.pod_cidr().to_string(),
            "via",
            &peer.wan_addr().to_string(),
            "dev",
            "eth0",
        ])
        .with_context(|| format!("routing {} to {}", node.name(), peer.name()))?;
    }
    nft_in(&ns, &node_ruleset(&node.cluster))
        .with_context(|| format!("loading table {NODE_TABLE} on {}", node.name()))?;
    Ok(())
}

/// The `lab-node` table: pods' traffic leaving the cluster's pod CIDR
/// through `eth0` takes the node's address, so pods reach API servers and
/// LoadBalancers on the WAN while pod-to-pod traffic keeps its addresses.
fn node_ruleset(cluster: &ClusterPlan) -> String {
    let cidr = cluster.pod_cidr();
    format!(
        "table ip {NODE_TABLE} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\toifname \"eth0\" ip saddr {cidr} ip daddr != {cidr} masquerade\n\
         \t}}\n\
         }}\n"
    )
}

/// Removes every netns whose name starts with the lab's prefix (also ones
/// no state records), the user's veth, and `/etc/netns/<ns>` directories.
/// Returns the namespaces it removed.
pub fn destroy(lab: &LabPlan) -> Result<Vec<String>> {
    let prefix = lab.netns_prefix();
    let mut removed = Vec::new();
    for ns in netns_list()?
        .into_iter()
        .filter(|ns| ns.starts_with(&prefix))
    {
        ip_quiet(&["netns", "delete", &ns]);
        removed.push(ns);
    }
    remove_etc_netns(&prefix);
    // Deleting the WAN netns takes the veth with it; delete explicitly in
    // case the netns was already gone but the root end survived.
    if link_exists(&lab.host_veth()) {
        ip_quiet(&["link", "delete", &lab.host_veth()]);
    }
    Ok(removed)
}

/// Removes `/etc/netns/<prefix>*` (resolv.conf files of pods).
pub fn remove_etc_netns(prefix: &str) {
    let Ok(entries) = std::fs::read_dir("/etc/netns") else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(prefix)
            && let Err(error) = std::fs::remove_dir_all(entry.path())
        {
            tracing::warn!(path = %entry.path().display(), %error, "cannot remove");
        }
    }
}

/// Whether a link called `name` exists in the caller's netns.
pub fn link_exists(name: &str) -> bool {
    ip(&["link", "show", "dev", name]).is_ok()
}
