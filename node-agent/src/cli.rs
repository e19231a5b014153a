//! Command line of `mc-node-agent`.

use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use mc_identity::SourceKind;

use crate::kernel::{
    DEFAULT_FWMARK, DEFAULT_LISTEN, DEFAULT_ROUTE_TABLE, DEFAULT_RULE_PRIORITY, KernelConfig,
};

/// mc's per-node agent: intercepts connections to mirrored Services.
#[derive(Debug, Parser)]
#[command(name = "mc-node-agent", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Sub-commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Program the kernel and serve intercepted connections until SIGTERM,
    /// then remove everything it added.
    Run(Box<RunArgs>),
    /// Remove everything mc added on this node (nftables table `inet mc`,
    /// rules and routes tagged `proto 109`), whatever flags the agent ran with.
    Cleanup,
}

/// Flags of `mc-node-agent run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Threads that run the proxy (0: one per CPU). One (tokio's
    /// current-thread scheduler) keeps each proxied connection and its
    /// tunnel on one thread, without cross-thread wake-ups, and leaves the
    /// other cores to the node's workloads; raise it for nodes with heavy
    /// cross-cluster traffic (bench/README.md has the measurements).
    #[arg(long, env = "MC_WORKER_THREADS", default_value_t = 1)]
    pub worker_threads: usize,
    /// Address of the transparent listener that TPROXY delivers to.
    #[arg(long, env = "MC_LISTEN", default_value_t = DEFAULT_LISTEN)]
    pub listen: SocketAddrV4,
    /// Firewall mark bits set on intercepted packets (decimal or 0x hex).
    #[arg(long, env = "MC_FWMARK", default_value_t = DEFAULT_FWMARK, value_parser = parse_u32)]
    pub fwmark: u32,
    /// Mark bits owned by mc (default: the bits of --fwmark).
    #[arg(long, env = "MC_FWMARK_MASK", value_parser = parse_u32)]
    pub fwmark_mask: Option<u32>,
    /// Routing table for mc's `local 0.0.0.0/0 dev lo` route.
    #[arg(long, env = "MC_ROUTE_TABLE", default_value_t = DEFAULT_ROUTE_TABLE)]
    pub route_table: u32,
    /// Priority of mc's `ip rule` on the mark (must be below 32766).
    #[arg(long, env = "MC_RULE_PRIORITY", default_value_t = DEFAULT_RULE_PRIORITY)]
    pub rule_priority: u32,
    /// A (ClusterIP:port) to intercept in addition to watched mirrors;
    /// repeatable. Connections to it are refused unless a mirror Service
    /// says where it leads. Meant for debugging the kernel rules.
    #[arg(long = "mirror", value_name = "IP:PORT")]
    pub mirrors: Vec<SocketAddrV4>,
    /// Do not watch Kubernetes: intercept only the --mirror addresses (and
    /// refuse them). For debugging the kernel rules without a cluster.
    #[arg(long)]
    pub static_only: bool,
    /// Name of this cluster, sent to remote gateways as the source cluster.
    #[arg(long, env = "MC_CLUSTER_NAME", required_unless_present = "static_only")]
    pub cluster_name: Option<String>,
    /// This node's name, to learn which pod opened a connection
    /// (the DaemonSet sets it from spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Directory holding the agent's identity: ca.crt (trust anchors) and,
    /// with `--identity-source files`, tls.crt and tls.key.
    #[arg(long, env = "MC_IDENTITY_DIR", default_value = "/var/run/mc/identity")]
    pub identity_dir: PathBuf,
    /// Where the certificate comes from: `csr` (a key generated in memory,
    /// the certificate from the controller's signer through a
    /// CertificateSigningRequest, renewed at two thirds of its lifetime) or
    /// `files` (tls.crt and tls.key in --identity-dir, from a PKI of your
    /// own, which must renew them; the leaf must be signed by a cluster
    /// issuer, `spiffe://<td>/cluster/<name>`).
    #[arg(long, env = "MC_IDENTITY_SOURCE", default_value = "csr")]
    pub identity_source: SourceKind,
    /// Trust domain of the SPIFFE ID requested with `--identity-source csr`.
    #[arg(long, env = "MC_TRUST_DOMAIN", default_value = mc_api::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// Namespace the agent runs in (its SPIFFE ID).
    #[arg(long, env = "POD_NAMESPACE", default_value = mc_api::NAMESPACE)]
    pub pod_namespace: String,
    /// ServiceAccount the agent runs as (its SPIFFE ID).
    #[arg(long, env = "MC_SERVICE_ACCOUNT", default_value = "mc-node-agent")]
    pub service_account: String,
    /// Namespace of the Link resources.
    #[arg(long, env = "MC_LINKS_NAMESPACE", default_value = mc_api::NAMESPACE)]
    pub links_namespace: String,
    /// Address of the admin server (/live, /ready, /metrics).
    #[arg(long, env = "MC_ADMIN_LISTEN", default_value = "0.0.0.0:4191")]
    pub admin_listen: SocketAddr,
    /// mTLS connections kept open to each gateway address; proxied
    /// connections are multiplexed over them as HTTP/2 streams.
    #[arg(long, env = "MC_TUNNEL_CONNECTIONS", default_value_t = 2)]
    pub tunnel_connections: usize,
    /// Close a proxied connection after this many seconds without a byte either way.
    #[arg(long, default_value_t = 3600)]
    pub idle_timeout_secs: u64,
}

impl RunArgs {
    /// The kernel settings these flags describe.
    pub fn kernel_config(&self) -> KernelConfig {
        KernelConfig {
            listen: self.listen,
            fwmark: self.fwmark,
            fwmark_mask: self.fwmark_mask.unwrap_or(self.fwmark),
            route_table: self.route_table,
            rule_priority: self.rule_priority,
        }
    }
}

fn parse_u32(text: &str) -> Result<u32, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|e| format!("`{text}` is not a 32-bit number: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_flags_accept_hex_marks_and_default_the_mask_to_the_mark() {
        let cli = Cli::try_parse_from([
            "mc-node-agent",
            "run",
            "--static-only",
            "--fwmark",
            "0x100",
            "--route-table",
            "200",
            "--mirror",
            "10.96.0.10:8080",
        ])
        .expect("valid flags parse");
        let Command::Run(args) = cli.command else {
            panic!("expected the run command");
        };
        let config = args.kernel_config();
        assert_eq!(config.fwmark, 0x100);
        assert_eq!(config.fwmark_mask, 0x100);
        assert_eq!(config.route_table, 200);
        assert_eq!(config.listen, DEFAULT_LISTEN);
        assert_eq!(args.mirrors.len(), 1);
    }
}
