//! The command line: global kubectl-style flags and one subcommand per verb.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Connect Kubernetes Services across clusters.
#[derive(Debug, Parser)]
#[command(name = "kubectl-mc", bin_name = "kubectl mc", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command understands, as kubectl users expect them.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// The kubeconfig context to talk to (default: the current context).
    #[arg(long, global = true, value_name = "CONTEXT")]
    pub context: Option<String>,
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace for namespaced commands (default: the context's namespace, then "default").
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Output format; each command has its own default.
    #[arg(short = 'o', long, global = true, value_enum)]
    pub output: Option<OutputFormat>,
}

/// How data is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// JSON (a `List` for manifests).
    Json,
    /// YAML (multi-document for manifests).
    Yaml,
}

/// Service type of the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GatewayServiceType {
    /// A cloud load balancer (the default).
    #[value(name = "LoadBalancer")]
    LoadBalancer,
    /// A port on every node, for clusters without load balancers.
    #[value(name = "NodePort")]
    NodePort,
}

impl GatewayServiceType {
    /// The Service `spec.type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            GatewayServiceType::LoadBalancer => "LoadBalancer",
            GatewayServiceType::NodePort => "NodePort",
        }
    }
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print (or with --apply, apply) every object mc needs in a cluster.
    Install(InstallArgs),
    /// Remove mc from a cluster; refuses while Links exist unless --force.
    Uninstall(UninstallArgs),
    /// Run against the target cluster: mint read-only credentials and print
    /// (or apply elsewhere with --apply-to) the Secret and Link for the other side.
    Link(LinkArgs),
    /// Remove a Link, its credentials and its mirrors from this cluster.
    Unlink(UnlinkArgs),
    /// Export a Service to linked clusters (label mc.dev/exported=true).
    Export(ExportArgs),
    /// Stop exporting a Service.
    Unexport(ExportArgs),
    /// Named health checks with a hint for each failure; exits non-zero on failure.
    Check(CheckArgs),
    /// Per Link: remote cluster, gateway alive, mirrored Services, probe latency.
    Gateways,
    /// Per remote cluster: link health and mirror counts as the controller reports them.
    Stat,
    /// Trust anchor material.
    Identity {
        #[command(subcommand)]
        command: IdentityCommand,
    },
}

/// `install` flags.
#[derive(Debug, Clone, Args)]
pub struct InstallArgs {
    /// This cluster's name, as other clusters will know it (mirrors are `<svc>-<name>`).
    #[arg(long)]
    pub cluster_name: String,
    /// SPIFFE trust domain shared by every linked cluster.
    #[arg(long, default_value = mc_api::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// Cluster DNS domain.
    #[arg(long, default_value = mc_api::DEFAULT_CLUSTER_DOMAIN)]
    pub cluster_domain: String,
    /// Directory with the shared trust anchor (ca.crt, ca.key) from `identity init`
    /// or an earlier install.
    #[arg(long, value_name = "DIR", conflicts_with = "no_identity_secrets")]
    pub identity_dir: Option<PathBuf>,
    /// Where a newly generated trust anchor is saved when --identity-dir is not given.
    #[arg(long, value_name = "DIR", default_value = "mc-identity")]
    pub identity_out: PathBuf,
    /// Trust anchors (PEM) to install instead of the one in --identity-dir;
    /// needs --identity-issuer-certificate-file and --identity-issuer-key-file
    /// (an issuer signed by one of these anchors, for this cluster).
    #[arg(long, value_name = "FILE", requires_all = ["identity_issuer_certificate_file", "identity_issuer_key_file"], conflicts_with = "no_identity_secrets")]
    pub identity_trust_anchors_file: Option<PathBuf>,
    /// This cluster's issuer certificate (PEM, an intermediate CA signed by
    /// the trust anchor, URI SAN `spiffe://<trust-domain>/cluster/<name>`);
    /// default: generated from the anchor in --identity-dir.
    #[arg(
        long,
        value_name = "FILE",
        requires = "identity_issuer_key_file",
        conflicts_with = "no_identity_secrets"
    )]
    pub identity_issuer_certificate_file: Option<PathBuf>,
    /// The issuer's private key (PEM).
    #[arg(
        long,
        value_name = "FILE",
        requires = "identity_issuer_certificate_file",
        conflicts_with = "no_identity_secrets"
    )]
    pub identity_issuer_key_file: Option<PathBuf>,
    /// Lifetime of the leaf certificates the controller signs for the
    /// gateway and the node agents (renewed at two thirds of it).
    #[arg(long, value_parser = parse_duration, default_value = "24h")]
    pub identity_leaf_lifetime: Duration,
    /// Leave the identity Secrets out (you provide mc-trust-anchor and
    /// mc-identity-issuer yourself).
    #[arg(long)]
    pub no_identity_secrets: bool,
    /// Service type of the gateway.
    #[arg(long, value_enum, default_value = "LoadBalancer")]
    pub gateway_service_type: GatewayServiceType,
    /// Number of gateway replicas.
    #[arg(long, default_value_t = 1)]
    pub gateway_replicas: i32,
    /// Container image of the components.
    #[arg(long, default_value_t = default_image())]
    pub image: String,
    /// Apply to the context instead of printing.
    #[arg(long)]
    pub apply: bool,
}

/// Default lifetime of the leaf certificates the controller signs.
pub const DEFAULT_LEAF_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The image of this version of mc.
pub fn default_image() -> String {
    format!("ghcr.io/mc-dev/mc:{}", env!("CARGO_PKG_VERSION"))
}

/// `uninstall` flags.
#[derive(Debug, Clone, Args)]
pub struct UninstallArgs {
    /// Delete from the context instead of printing what would be deleted.
    #[arg(long)]
    pub apply: bool,
    /// Proceed even while Links exist: delete them (and their mirrors) first.
    #[arg(long)]
    pub force: bool,
    /// How long to wait for the controller to clean up deleted Links.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub timeout: Duration,
}

/// `link` flags.
#[derive(Debug, Clone, Args)]
pub struct LinkArgs {
    /// Name of the cluster this command runs against (the target of the Link).
    #[arg(long)]
    pub cluster_name: String,
    /// Gateway address(es) to put in the Link instead of the LoadBalancer's
    /// (NodePort setups: a node address): HOST or HOST:PORT (`[v6]:PORT`),
    /// where PORT is the tunnel port. Repeat or separate with commas.
    #[arg(long = "gateway-address", value_delimiter = ',')]
    pub gateway_addresses: Vec<String>,
    /// Gateway tunnel port (default: 4143, or the `tunnel` nodePort for NodePort gateways).
    #[arg(long)]
    pub gateway_port: Option<u16>,
    /// Gateway probe (admin) port (default: 4191, or the `admin` nodePort for NodePort gateways).
    #[arg(long)]
    pub probe_port: Option<u16>,
    /// API server URL the other cluster should use (default: the context's server).
    #[arg(long, value_name = "URL")]
    pub api_server_address: Option<String>,
    /// Lifetime of the minted token.
    #[arg(long, value_parser = parse_duration, default_value = "8760h")]
    pub token_duration: Duration,
    /// Let the other cluster's controller create missing namespaces for mirrors.
    #[arg(long)]
    pub create_namespaces: bool,
    /// Apply the Secret and Link to this context instead of printing them.
    #[arg(long, value_name = "CONTEXT")]
    pub apply_to: Option<String>,
    /// Name of the cluster that will use the Link (where its Secret and Link
    /// are applied). Read from --apply-to's cluster when that is given. It
    /// gets its own read-only account here, and this cluster's gateway
    /// accepts its agents from now on.
    #[arg(long, value_name = "NAME")]
    pub from_cluster: Option<String>,
}

/// `unlink` flags.
#[derive(Debug, Clone, Args)]
pub struct UnlinkArgs {
    /// Name of the linked (remote) cluster.
    #[arg(long)]
    pub cluster_name: String,
    /// How long to wait for the controller to remove the Link's mirrors.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub timeout: Duration,
    /// When the controller has not cleaned up in time, delete the mirrors and
    /// release the Link's finalizer from here.
    #[arg(long)]
    pub force: bool,
    /// Context of the linked cluster: also revoke this cluster's access
    /// there (its reader account, so the Link's token stops working and
    /// that cluster's gateway stops accepting this cluster's agents).
    #[arg(long, value_name = "CONTEXT")]
    pub remote_context: Option<String>,
}

/// `export` / `unexport` arguments.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Services as `svc/NAME` (or `service/NAME`, or `NAME`).
    #[arg(required = true, value_name = "svc/NAME")]
    pub services: Vec<String>,
    /// Export only to these callers: clusters (`west`) and/or workload
    /// identities (`west/NAMESPACE/SERVICEACCOUNT`, `*` for any part),
    /// comma-separated. Sets the mc.dev/allowed-callers annotation.
    #[arg(long, value_name = "CALLERS", conflicts_with = "allow_any_linked")]
    pub allow: Option<String>,
    /// Let any caller of a linked cluster in again (removes the
    /// mc.dev/allowed-callers annotation). This is the default for a
    /// Service without it.
    #[arg(long)]
    pub allow_any_linked: bool,
}

/// `check` flags.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Context of a linked cluster, to compare trust anchors and exports with
    /// it directly. Repeatable; matched to Links by the cluster's name.
    #[arg(long = "remote-context", value_name = "CONTEXT")]
    pub remote_contexts: Vec<String>,
    /// Warn when a certificate expires within this time.
    #[arg(long, value_parser = parse_duration, default_value = "30d")]
    pub expiry_warning: Duration,
    /// Timeout of each network check (TLS to gateways, remote contexts).
    #[arg(long, value_parser = parse_duration, default_value = "3s")]
    pub timeout: Duration,
}

/// `identity` subcommands.
#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Generate a trust anchor (DIR/ca.crt, DIR/ca.key) to share between clusters.
    Init {
        /// Directory to write to.
        #[arg(long, value_name = "DIR", default_value = "mc-identity")]
        out: PathBuf,
        /// SPIFFE trust domain.
        #[arg(long, default_value = mc_api::DEFAULT_TRUST_DOMAIN)]
        trust_domain: String,
        /// Overwrite an existing anchor in DIR.
        #[arg(long)]
        force: bool,
    },
}

/// Parses `30s`, `5m`, `8760h`, `30d` and combinations like `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("invalid duration {text:?}: {e}"))
}
