//! `mc-emulator`: a Kubernetes API server emulator for the mc lab.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use ipnet::Ipv4Net;
use mc_emulator::{Emulator, EmulatorConfig};

/// Serves an emulated Kubernetes API over HTTPS (a generated CA, client
/// certificates and ServiceAccount tokens, RBAC, watches, CRDs). Writes an
/// admin kubeconfig to <pki-dir>/kubeconfig.
#[derive(Parser, Debug)]
#[command(name = "mc-emulator", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:6443", env = "MC_EMULATOR_LISTEN")]
    listen: SocketAddr,
    /// Address clients use (kubernetes Service endpoints, kubeconfig); defaults to --listen.
    #[arg(long = "advertise-address")]
    advertise_address: Option<SocketAddr>,
    /// Service ClusterIP range; its first address is the `kubernetes` Service's.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cidr: Ipv4Net,
    /// NodePort range, `first-last`.
    #[arg(long, default_value = "30000-32767")]
    node_port_range: String,
    /// Cluster name (kubeconfig names, CA subject).
    #[arg(long, default_value = "kubernetes")]
    cluster_name: String,
    /// Cluster DNS domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Directory for the CA, keys and kubeconfig (reused when present).
    #[arg(long)]
    pki_dir: PathBuf,
    /// Directory for the store snapshot; without it nothing survives a restart.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Extra serving-certificate SANs (IPs or DNS names), repeatable.
    #[arg(long = "tls-san")]
    tls_san: Vec<String>,
    /// Milliseconds between watch BOOKMARK events.
    #[arg(long, default_value_t = 1000)]
    bookmark_interval_ms: u64,
    /// Changes kept for watches to replay before answering 410 Gone.
    #[arg(long, default_value_t = 10_000)]
    history_len: usize,
}

fn parse_range(s: &str) -> Result<std::ops::RangeInclusive<u16>> {
    let (a, b) = s
        .split_once('-')
        .context("--node-port-range must look like 30000-32767")?;
    let (a, b): (u16, u16) = (
        a.trim().parse().context("range start")?,
        b.trim().parse().context("range end")?,
    );
    if a > b {
        bail!("--node-port-range start {a} is above its end {b}");
    }
    Ok(a..=b)
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let a = Args::parse();
    let mut cfg = EmulatorConfig::new(a.listen, a.pki_dir);
    cfg.advertise = a.advertise_address.unwrap_or(a.listen);
    cfg.service_cidr = a.service_cidr;
    cfg.node_port_range = parse_range(&a.node_port_range)?;
    cfg.cluster_name = a.cluster_name;
    cfg.cluster_domain = a.cluster_domain;
    cfg.data_dir = a.data_dir;
    cfg.extra_sans = a.tls_san;
    cfg.bookmark_interval = Duration::from_millis(a.bookmark_interval_ms.max(10));
    cfg.history_len = a.history_len;
    let emu = Emulator::start(cfg).await?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = terminate() => {}
    }
    tracing::info!("shutting down");
    emu.shutdown().await;
    Ok(())
}

#[cfg(unix)]
async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM");
            std::future::pending::<()>().await
        }
    }
}

#[cfg(not(unix))]
async fn terminate() {
    std::future::pending::<()>().await
}
