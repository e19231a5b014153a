//! A pod's network: its netns `mc-<lab>-<cluster>-p<id>`, a routed veth
//! from the node to the pod's `eth0` (as Calico, Cilium, the AWS VPC CNI and
//! kindnet do: no bridge, so every pod packet is routed by the node and seen
//! by its netfilter hooks once), an address from the node's pod CIDR with a
//! /32 route to it on the node, a default route via the node's pod gateway
//! address, and its resolv.conf in `/etc/netns/<netns>/` pointing at the
//! cluster DNS.
//!
//! Why not a bridge: with `br_netfilter`, which bridge CNIs need, packets
//! from bridge ports pass the IPv4 PREROUTING hooks at the bridge layer and
//! `ip_rcv` then drops the socket a TPROXY rule assigned there; node-level
//! TPROXY (mc's node agent) does not work on bridge CNIs.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::cmd::{ip, ip_quiet};
use crate::plan::{CLUSTER_DOMAIN, ClusterPlan, NodePlan};

/// Short id of a pod derived from its UID: 8 lowercase hex digits (or
/// letters and digits for non-UUID UIDs).
pub fn short_id(uid: &str) -> String {
    let clean: String = uid
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    clean.chars().take(8).collect()
}

/// The netns of the (non-host-network) pod with UID `uid`.
pub fn pod_netns(cluster: &ClusterPlan, uid: &str) -> String {
    format!(
        "mc-{}-{}-p{}",
        cluster.lab.name,
        cluster.name,
        short_id(uid)
    )
}

/// The pod's veth end in the node's netns (at most 15 characters).
fn host_veth(uid: &str) -> String {
    format!("v{}", short_id(uid))
}

/// `/etc/netns/<netns>/resolv.conf`, which `ip netns exec` and `pod-init`
/// mount over `/etc/resolv.conf`.
pub fn resolv_conf_path(netns: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(netns).join("resolv.conf")
}

/// The resolv.conf of a pod in `namespace` (Kubernetes' ClusterFirst).
pub fn resolv_conf(cluster: &ClusterPlan, namespace: &str) -> String {
    format!(
        "nameserver {}\nsearch {namespace}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}\noptions ndots:5\n",
        cluster.dns_service_ip()
    )
}

/// Creates the netns, link, address, route and resolv.conf of a pod with
/// UID `uid` in `namespace` on `node`, with address `addr`. Leftovers of an
/// earlier attempt with the same UID are removed first.
pub fn create(node: &NodePlan, uid: &str, namespace: &str, addr: Ipv4Addr) -> Result<String> {
    let netns = pod_netns(&node.cluster, uid);
    destroy(node, uid);
    let node_ns = node.netns();
    let veth = host_veth(uid);
    ip(&["netns", "add", &netns]).with_context(|| format!("creating pod netns {netns}"))?;
    ip(&["-n", &netns, "link", "set", "lo", "up"])?;
    ip(&[
        "-n", &node_ns, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
        &netns,
    ])
    .with_context(|| format!("creating the veth of pod netns {netns}"))?;
    ip(&["-n", &node_ns, "link", "set", &veth, "up"])?;
    // The pod ARPs for its gateway on eth0: the node end answers (the
    // gateway is a local address of the node), and routes the rest.
    sysctl(&node_ns, &format!("net/ipv4/conf/{veth}/proxy_arp"), "1")?;
    ip(&[
        "-n",
        &netns,
        "addr",
        "add",
        &format!("{addr}/32"),
        "dev",
        "eth0",
    ])?;
    ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
    let gateway = node.pod_gateway().to_string();
    ip(&[
        "-n", &netns, "route", "add", &gateway, "dev", "eth0", "scope", "link",
    ])?;
    ip(&[
        "-n", &netns, "route", "add", "default", "via", &gateway, "dev", "eth0",
    ])?;
    ip(&[
        "-n",
        &node_ns,
        "route",
        "add",
        &format!("{addr}/32"),
        "dev",
        &veth,
    ])
    .with_context(|| format!("routing {addr} to {veth}"))?;
    let resolv = resolv_conf_path(&netns);
    if let Some(parent) = resolv.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(&resolv, resolv_conf(&node.cluster, namespace))
        .with_context(|| format!("cannot write {}", resolv.display()))?;
    Ok(netns)
}

/// Removes a pod's netns (which removes its veth), its node-side veth if
/// it survived, and its `/etc/netns` directory. Missing pieces are fine.
pub fn destroy(node: &NodePlan, uid: &str) {
    let netns = pod_netns(&node.cluster, uid);
    ip_quiet(&["netns", "delete", &netns]);
    if ip(&["-n", &node.netns(), "link", "show", "dev", &host_veth(uid)]).is_ok() {
        ip_quiet(&["-n", &node.netns(), "link", "delete", &host_veth(uid)]);
    }
    if let Some(dir) = resolv_conf_path(&netns).parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Pod address allocation per node: the lowest free host address of the
/// node's pod CIDR, skipping the bridge's.
#[derive(Default, Debug)]
pub struct Ipam {
    used: HashMap<String, BTreeSet<Ipv4Addr>>,
}

impl Ipam {
    /// Marks `addr` used on `node` (pods found running at start).
    pub fn reserve(&mut self, node: &NodePlan, addr: Ipv4Addr) -> bool {
        if !node.pod_cidr().contains(&addr) || addr == node.pod_gateway() {
            return false;
        }
        self.used.entry(node.name()).or_default().insert(addr)
    }

    /// Takes the lowest free address of `node`.
    pub fn allocate(&mut self, node: &NodePlan) -> Result<Ipv4Addr> {
        let used = self.used.entry(node.name()).or_default();
        for host in node.pod_cidr().hosts() {
            if host != node.pod_gateway() && !used.contains(&host) {
                used.insert(host);
                return Ok(host);
            }
        }
        bail!(
            "node {} has no free pod address in {}",
            node.name(),
            node.pod_cidr()
        )
    }

    /// Returns `addr` to `node`'s pool.
    pub fn release(&mut self, node: &NodePlan, addr: Ipv4Addr) {
        if let Some(used) = self.used.get_mut(&node.name()) {
            used.remove(&addr);
        }
    }
}

/// Sets a sysctl (`/proc/sys/<key>`) inside `netns`.
fn sysctl(netns: &str, key: &str, value: &str) -> Result<()> {
    let status = std::process::Command::new("ip")
        .args(["netns", "exec", netns, "sysctl", "-q", "-w"])
        .arg(format!("{}={value}", key.replace('/', ".")))
        .status()
        .with_context(|| format!("running sysctl in {netns}"))?;
    if !status.success() {
        bail!("sysctl {key}={value} failed in {netns}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::LabPlan;

    #[test]
    fn addresses_are_unique_and_reused_after_release() {
        let lab = LabPlan {
            name: "t".into(),
            slot: 1,
        };
        let node = lab.cluster(0, "east").node(1);
        let mut ipam = Ipam::default();
        let a = ipam.allocate(&node).unwrap();
        let b = ipam.allocate(&node).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 10, 2, 2));
        assert_eq!(b, Ipv4Addr::new(10, 10, 2, 3));
        ipam.release(&node, a);
        assert_eq!(ipam.allocate(&node).unwrap(), a);
    }

    #[test]
    fn resolv_conf_searches_the_pod_namespace_first() {
        let lab = LabPlan {
            name: "t".into(),
            slot: 1,
        };
        let text = resolv_conf(&lab.cluster(1, "west"), "shop");
        assert!(text.starts_with("nameserver 10.101.0.10\n"));
        assert!(text.contains("search shop.svc.cluster.local svc.cluster.local cluster.local"));
        assert!(text.contains("options ndots:5"));
    }

    #[test]
    fn names_fit_interface_limits() {
        let lab = LabPlan {
            name: "t".into(),
            slot: 1,
        };
        let uid = "0f3c9a2e-1111-2222-3333-444455556666";
        assert_eq!(host_veth(uid), "v0f3c9a2e");
        assert_eq!(
            pod_netns(&lab.cluster(0, "east"), uid),
            "mc-t-east-p0f3c9a2e"
        );
    }
}
