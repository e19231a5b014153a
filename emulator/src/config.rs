//! The emulator's configuration.

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::Ipv4Net;

/// How to run one emulated API server.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Address clients should use: the `default/kubernetes` Endpoints, the
    /// kubeconfig server and a SAN of the serving certificate. A port of 0
    /// means "the port actually bound".
    pub advertise: SocketAddr,
    /// The Service ClusterIP range; its first address is the `kubernetes` Service's.
    pub service_cidr: Ipv4Net,
    /// The NodePort range.
    pub node_port_range: RangeInclusive<u16>,
    /// Name of the cluster (kubeconfig cluster/context names, CA subject).
    pub cluster_name: String,
    /// DNS domain of the cluster (`cluster.local`).
    pub cluster_domain: String,
    /// Where the CA, keys and kubeconfig live; reused when present.
    pub pki_dir: PathBuf,
    /// Where the store snapshot is kept; `None` keeps everything in memory only.
    pub data_dir: Option<PathBuf>,
    /// Extra subject alternative names (IPs or DNS names) for the serving certificate.
    pub extra_sans: Vec<String>,
    /// Interval between BOOKMARK events on watches that allow them.
    pub bookmark_interval: Duration,
    /// How many changes watches can replay before answering 410 Gone.
    pub history_len: usize,
}

impl EmulatorConfig {
    /// A configuration with the defaults of a kubeadm cluster, listening on `listen`.
    pub fn new(listen: SocketAddr, pki_dir: PathBuf) -> Self {
        EmulatorConfig {
            listen,
            advertise: listen,
            service_cidr: Ipv4Net::new(Ipv4Addr::new(10, 96, 0, 0), 12).unwrap_or_default(),
            node_port_range: 30000..=32767,
            cluster_name: "kubernetes".into(),
            cluster_domain: "cluster.local".into(),
            pki_dir,
            data_dir: None,
            extra_sans: Vec::new(),
            bookmark_interval: Duration::from_secs(1),
            history_len: 10_000,
        }
    }

    /// The ClusterIP of the `default/kubernetes` Service: the first address of the range.
    pub fn kubernetes_service_ip(&self) -> Ipv4Addr {
        let base = u32::from(self.service_cidr.network());
        Ipv4Addr::from(base.wrapping_add(1))
    }

    /// The API audience tokens must carry (`https://kubernetes.default.svc.<domain>`).
    pub fn api_audience(&self) -> String {
        format!("https://kubernetes.default.svc.{}", self.cluster_domain)
    }

    /// Subject alternative names of the serving certificate.
    pub fn sans(&self) -> Vec<String> {
        let mut s = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default".to_string(),
            "kubernetes.default.svc".to_string(),
            format!("kubernetes.default.svc.{}", self.cluster_domain),
            self.kubernetes_service_ip().to_string(),
        ];
        for extra in [
            self.advertise.ip().to_string(),
            self.listen.ip().to_string(),
        ] {
            if !extra.starts_with("0.0.0.0") && extra != "::" {
                s.push(extra);
            }
        }
        s.extend(self.extra_sans.iter().cloned());
        s.sort();
        s.dedup();
        s
    }
}
