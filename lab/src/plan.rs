//! The lab's address plan: every name and address the lab's parts agree on.
//!
//! One lab has a slot `n` (0..=255) that keeps side-by-side labs apart, and
//! clusters indexed `k` (0..8) in the order given to `mc-lab up --clusters`.
//!
//! | what | value |
//! |---|---|
//! | WAN (a bridge `wan` in netns `mc-<lab>-wan`) | `198.18.n.0/24`, bridge address `.1` |
//! | the user's shell (root netns, veth `mc<n>w`) | `198.18.n.254/24` |
//! | API server and DNS of cluster k (bound in the WAN netns) | `198.18.n.(2+k)`, ports 6443 and 53 |
//! | node j (0-based) of cluster k, on the WAN (`eth0`) | `198.18.n.(10 + 16k + j)` |
//! | LoadBalancer pool (all clusters) | `198.18.n.160` .. `198.18.n.250` |
//! | pod CIDR of cluster k | `10.(10+k).0.0/16` |
//! | pod CIDR of node j, bridge `mcbr0` address `.1` | `10.(10+k).(j+1).0/24` |
//! | service CIDR of cluster k | `10.(100+k).0.0/16`; `kubernetes` `.0.1`, `kube-dns` `.0.10` |
//! | node netns | `mc-<lab>-<cluster>-n<j>`, Node name `<cluster>-node-<j>` |
//! | pod netns | `mc-<lab>-<cluster>-p<id>` |

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Most clusters one lab holds.
pub const MAX_CLUSTERS: usize = 8;
/// Most nodes one cluster holds.
pub const MAX_NODES: usize = 16;
/// API server port of every cluster.
pub const API_PORT: u16 = 6443;
/// Cluster DNS domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// First and last host octet of the LoadBalancer pool.
pub const LB_POOL: (u8, u8) = (160, 250);

/// How kube-proxy programs the nodes' packet path (`KubeProxyConfiguration.mode`).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ProxyMode {
    /// One nftables table per node (`table ip kube-proxy`).
    #[default]
    Nftables,
    /// iptables chains (through iptables-nft on current distributions).
    Iptables,
}

impl std::fmt::Display for ProxyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProxyMode::Nftables => "nftables",
            ProxyMode::Iptables => "iptables",
        })
    }
}

/// Addresses of one lab.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabPlan {
    /// Lab name, part of every netns name.
    pub name: String,
    /// Slot that keeps side-by-side labs' WAN ranges apart.
    pub slot: u8,
}

impl LabPlan {
    /// The WAN network.
    pub fn wan(&self) -> Ipv4Net {
        net(Ipv4Addr::new(198, 18, self.slot, 0), 24)
    }
    /// Address of the WAN bridge (the nodes' default gateway).
    pub fn wan_gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.slot, 1)
    }
    /// Address of the user's shell (root netns) on the WAN.
    pub fn host_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.slot, 254)
    }
    /// Name of the WAN netns.
    pub fn wan_netns(&self) -> String {
        format!("mc-{}-wan", self.name)
    }
    /// Name of the root-netns end of the veth into the WAN.
    pub fn host_veth(&self) -> String {
        format!("mc{}w", self.slot)
    }
    /// Prefix shared by every netns of this lab.
    pub fn netns_prefix(&self) -> String {
        format!("mc-{}-", self.name)
    }
    /// LoadBalancer address number `i` of the pool, if the pool has it.
    pub fn lb_addr(&self, i: usize) -> Option<Ipv4Addr> {
        let host = usize::from(LB_POOL.0) + i;
        (host <= usize::from(LB_POOL.1)).then(|| Ipv4Addr::new(198, 18, self.slot, host as u8))
    }
    /// Plan of cluster `k` called `name`.
    pub fn cluster(&self, k: usize, name: &str) -> ClusterPlan {
        assert!(
            k < MAX_CLUSTERS,
            "a lab holds at most {MAX_CLUSTERS} clusters"
        );
        ClusterPlan {
            lab: self.clone(),
            index: k,
            name: name.to_string(),
        }
    }
}

/// Addresses of one cluster of a lab.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterPlan {
    pub lab: LabPlan,
    pub index: usize,
    pub name: String,
}

impl ClusterPlan {
    /// Address of this cluster's API server and DNS server, on the WAN.
    pub fn api_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.lab.slot, 2 + self.index as u8)
    }
    /// `https://<api_addr>:6443`.
    pub fn api_url(&self) -> String {
        format!("https://{}:{}", self.api_addr(), API_PORT)
    }
    /// The pod CIDR of the whole cluster.
    pub fn pod_cidr(&self) -> Ipv4Net {
        net(Ipv4Addr::new(10, 10 + self.index as u8, 0, 0), 16)
    }
    /// The service CIDR.
    pub fn service_cidr(&self) -> Ipv4Net {
        net(Ipv4Addr::new(10, 100 + self.index as u8, 0, 0), 16)
    }
    /// ClusterIP of `default/kubernetes`.
    pub fn kubernetes_service_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 100 + self.index as u8, 0, 1)
    }
    /// ClusterIP of `kube-system/kube-dns`.
    pub fn dns_service_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 100 + self.index as u8, 0, 10)
    }
    /// Plan of node `j`.
    pub fn node(&self, j: usize) -> NodePlan {
        assert!(j < MAX_NODES, "a cluster holds at most {MAX_NODES} nodes");
        NodePlan {
            cluster: self.clone(),
            index: j,
        }
    }
}

/// Addresses of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePlan {
    pub cluster: ClusterPlan,
    pub index: usize,
}

impl NodePlan {
    /// The Node object's name.
    pub fn name(&self) -> String {
        format!("{}-node-{}", self.cluster.name, self.index)
    }
    /// The node's netns.
    pub fn netns(&self) -> String {
        format!(
            "mc-{}-{}-n{}",
            self.cluster.lab.name, self.cluster.name, self.index
        )
    }
    /// The node's address on the WAN (its InternalIP).
    pub fn wan_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(
            198,
            18,
            self.cluster.lab.slot,
            10 + 16 * self.cluster.index as u8 + self.index as u8,
        )
    }
    /// The node's pod CIDR.
    pub fn pod_cidr(&self) -> Ipv4Net {
        net(
            Ipv4Addr::new(10, 10 + self.cluster.index as u8, self.index as u8 + 1, 0),
            24,
        )
    }
    /// The node's address on its pod bridge: the pods' default gateway.
    pub fn pod_gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 10 + self.cluster.index as u8, self.index as u8 + 1, 1)
    }
}

fn net(addr: Ipv4Addr, prefix: u8) -> Ipv4Net {
    Ipv4Net::new(addr, prefix).expect("prefix length is at most 32")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clusters_and_nodes_get_disjoint_addresses() {
        let lab = LabPlan {
            name: "t".into(),
            slot: 7,
        };
        let east = lab.cluster(0, "east");
        let west = lab.cluster(1, "west");
        assert_eq!(east.api_addr(), Ipv4Addr::new(198, 18, 7, 2));
        assert_ne!(east.pod_cidr(), west.pod_cidr());
        assert!(!east.pod_cidr().contains(&west.node(0).pod_gateway()));
        assert_eq!(west.node(1).wan_addr(), Ipv4Addr::new(198, 18, 7, 27));
        assert_eq!(west.node(1).netns(), "mc-t-west-n1");
        assert!(
            east.node(2)
                .pod_cidr()
                .contains(&east.node(2).pod_gateway())
        );
        assert!(lab.wan().contains(&lab.lb_addr(0).unwrap()));
        assert_eq!(lab.lb_addr(91), None);
    }
}
