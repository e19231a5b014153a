//! Readiness probes, run as the kubelet runs them: from the node's network
//! namespace against the pod's IP (tcpSocket, httpGet) or inside the pod
//! (exec).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Probe;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use nix::sched::{CloneFlags, setns};

use crate::podinit::PodInit;

/// A probe's timing, with Kubernetes' defaults.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Delay before the first probe.
    pub initial_delay: Duration,
    /// Interval between probes.
    pub period: Duration,
    /// Time a single probe may take.
    pub timeout: Duration,
    /// Consecutive failures that make a ready pod unready.
    pub failure_threshold: u32,
}

impl Timing {
    /// Timing of `probe`.
    pub fn of(probe: &Probe) -> Self {
        let secs = |v: Option<i32>, default: u64| {
            Duration::from_secs(v.map_or(default, |s| s.max(0) as u64))
        };
        Timing {
            initial_delay: secs(probe.initial_delay_seconds, 0),
            period: secs(probe.period_seconds, 10).max(Duration::from_millis(200)),
            timeout: secs(probe.timeout_seconds, 1).max(Duration::from_millis(100)),
            failure_threshold: probe.failure_threshold.map_or(3, |t| t.max(1) as u32),
        }
    }
}

/// Where and how a probe runs.
#[derive(Clone, Debug)]
pub struct Target {
    /// The node's netns, from which tcpSocket and httpGet connect.
    pub node_netns: String,
    /// The pod's IP.
    pub pod_ip: IpAddr,
    /// How to enter the pod, for exec probes.
    pub pod_init: PodInit,
    /// The container's named ports, to resolve named probe ports.
    pub named_ports: Vec<(String, u16)>,
}

/// Runs `probe` once; `Ok(())` means success.
pub async fn run(probe: &Probe, target: &Target, timeout: Duration) -> Result<()> {
    if let Some(tcp) = &probe.tcp_socket {
        let addr = SocketAddr::new(target.pod_ip, port(&tcp.port, target)?);
        return in_netns(&target.node_netns, move || {
            TcpStream::connect_timeout(&addr, timeout)
                .with_context(|| format!("connecting to {addr}"))?;
            Ok(())
        })
        .await;
    }
    if let Some(http) = &probe.http_get {
        let addr = SocketAddr::new(target.pod_ip, port(&http.port, target)?);
        let path = http.path.clone().unwrap_or_else(|| "/".to_string());
        return in_netns(&target.node_netns, move || http_get(addr, &path, timeout)).await;
    }
    if let Some(exec) = &probe.exec {
        let command = exec.command.clone().unwrap_or_default();
        let exe = std::env::current_exe().context("locating mc-lab")?;
        let mut child = tokio::process::Command::new(exe)
            .args(target.pod_init.args(&command))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting the exec probe")?;
        let status = tokio::time::timeout(timeout, child.wait())
            .await
            .context("exec probe timed out")?
            .context("waiting for the exec probe")?;
        if !status.success() {
            bail!("exec probe exited with {status}");
        }
        return Ok(());
    }
    bail!("probe has no tcpSocket, httpGet or exec handler")
}

fn port(value: &IntOrString, target: &Target) -> Result<u16> {
    match value {
        IntOrString::Int(p) => {
            u16::try_from(*p).with_context(|| format!("probe port {p} is out of range"))
        }
        IntOrString::String(name) => target
            .named_ports
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
            .with_context(|| format!("the container has no port named {name}")),
    }
}

/// One HTTP/1.1 GET; statuses 200-399 succeed.
fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .context("setting a read timeout")?;
    stream
        .set_write_timeout(Some(timeout))
        .context("setting a write timeout")?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.33\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .context("sending the probe request")?;
    let mut head = [0u8; 64];
    let n = stream
        .read(&mut head)
        .context("reading the probe response")?;
    let line = String::from_utf8_lossy(&head[..n]);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("not an HTTP response: {line:?}"))?;
    if !(200..400).contains(&code) {
        bail!("HTTP probe got status {code}");
    }
    Ok(())
}

/// Runs `f` on a fresh thread that has entered netns `netns`, so sockets it
/// creates live there. (A pooled thread must never change its netns.)
pub async fn in_netns<T, F>(netns: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let path = std::path::Path::new("/run/netns").join(netns);
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("netns-probe".into())
        .spawn(move || {
            let result = std::fs::File::open(&path)
                .with_context(|| format!("cannot open {}", path.display()))
                .and_then(|file| setns(&file, CloneFlags::CLONE_NEWNET).context("setns"))
                .and_then(|()| f());
            let _ = tx.send(result);
        })
        .context("spawning a probe thread")?;
    rx.await.context("probe thread vanished")?
}
