//! One pod's life on its node, as a kubelet lives it: set up the sandbox
//! (netns, address, resolv.conf, ServiceAccount files), run the first
//! container's command, report status and readiness, restart by policy,
//! and on deletion kill the process group, tear the sandbox down and
//! remove the object with grace period 0.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::plan::{ClusterPlan, NodePlan};
use crate::pod_status::{ContainerState, Report, now};
use crate::podinit::PodInit;
use crate::podnet::{self, Ipam};
use crate::probe;
use crate::state::LabDir;
use crate::volumes::FileVolumes;

/// What every pod worker of a cluster shares.
pub struct Shared {
    /// Admin client of the cluster.
    pub client: kube::Client,
    /// The cluster.
    pub cluster: ClusterPlan,
    /// The lab's state directory.
    pub dir: LabDir,
    /// mc-lab's own executable (runs `pod-init`).
    pub exe: PathBuf,
    /// The Kubernetes binaries (on pods' PATH after mc-lab's own).
    pub components: PathBuf,
    /// Pod addresses in use.
    pub ipam: Mutex<Ipam>,
}

/// Longest wait between restarts of a crashing container.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The sandbox of a running pod.
struct Sandbox {
    init: PodInit,
    pod_ip: Ipv4Addr,
    pod_dir: PathBuf,
    host_network: bool,
}

/// Tells a pod worker to stop the pod, with the grace period its
/// processes get between SIGTERM and SIGKILL.
pub type Stop = watch::Receiver<Option<Duration>>;

/// Runs pod `pod` on `node` until `stop` carries a grace period, then
/// stops the container within it and cleans up.
pub async fn run(shared: Arc<Shared>, pod: Pod, node: NodePlan, mut stop: Stop) {
    let key = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    if stop.borrow().is_some() {
        // Deleted before it ever ran here: clear leftovers, drop the object.
        let (node_c, uid) = (node.clone(), pod.metadata.uid.clone().unwrap_or_default());
        let _ = tokio::task::spawn_blocking(move || podnet::destroy(&node_c, &uid)).await;
        delete_object(&shared, &pod).await;
        return;
    }
    let sandbox = match create_sandbox(&shared, &pod, &node).await {
        Ok(sandbox) => Some(sandbox),
        Err(error) => {
            tracing::error!(pod = %key, error = format!("{error:#}"), "cannot create the pod sandbox");
            report_failure(
                &shared,
                &pod,
                &node,
                "CreatePodSandboxError",
                &format!("{error:#}"),
            )
            .await;
            None
        }
    };
    let mut refresher = None;
    if let Some(sandbox) = &sandbox {
        let mut files = FileVolumes::new(&pod, &sandbox.pod_dir);
        if wait_for_volumes(&shared, &pod, &node, &mut files, &mut stop).await {
            if !files.is_empty() {
                refresher = Some(tokio::spawn(keep_volumes(
                    shared.client.clone(),
                    key.clone(),
                    files,
                )));
            }
            if let Err(error) = supervise(&shared, &pod, &node, sandbox, &mut stop).await {
                tracing::error!(pod = %key, error = format!("{error:#}"), "pod failed");
            }
        }
    }
    // Wait for deletion when the pod ended by itself.
    while stop.borrow().is_none() {
        if stop.changed().await.is_err() {
            break;
        }
    }
    if let Some(refresher) = refresher {
        refresher.abort();
    }
    if let Some(sandbox) = sandbox {
        destroy_sandbox(&shared, &pod, &node, sandbox).await;
    }
    delete_object(&shared, &pod).await;
    tracing::info!(pod = %key, "pod removed");
}

async fn create_sandbox(shared: &Shared, pod: &Pod, node: &NodePlan) -> Result<Sandbox> {
    let uid = pod.metadata.uid.clone().context("pod has no uid")?;
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let spec = pod.spec.as_ref().context("pod has no spec")?;
    let host_network = spec.host_network.unwrap_or(false);
    let pod_dir = shared.dir.pod_dir(&shared.cluster.name, &uid);
    std::fs::create_dir_all(&pod_dir)
        .with_context(|| format!("cannot create {}", pod_dir.display()))?;
    let (netns, pod_ip, resolv) = if host_network {
        let cluster_first = spec.dns_policy.as_deref() == Some("ClusterFirstWithHostNet");
        let resolv = if cluster_first {
            let path = pod_dir.join("resolv.conf");
            std::fs::write(&path, podnet::resolv_conf(&shared.cluster, &namespace))
                .with_context(|| format!("cannot write {}", path.display()))?;
            Some(path)
        } else {
            None
        };
        (node.netns(), node.wan_addr(), resolv)
    } else {
        let previous = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_ref())
            .and_then(|ip| ip.parse().ok());
        let pod_ip = {
            let mut ipam = shared
                .ipam
                .lock()
                .map_err(|_| anyhow::anyhow!("IPAM lock poisoned"))?;
            match previous {
                Some(ip) if ipam.reserve(node, ip) => ip,
                _ => ipam.allocate(node)?,
            }
        };
        let (node_c, uid_c, ns_c) = (node.clone(), uid.clone(), namespace.clone());
        let created =
            tokio::task::spawn_blocking(move || podnet::create(&node_c, &uid_c, &ns_c, pod_ip))
                .await
                .context("pod network task panicked")?;
        let netns = match created {
            Ok(netns) => netns,
            Err(error) => {
                if let Ok(mut ipam) = shared.ipam.lock() {
                    ipam.release(node, pod_ip);
                }
                return Err(error);
            }
        };
        let resolv = podnet::resolv_conf_path(&netns);
        (netns, pod_ip, Some(resolv))
    };
    let mounts = crate::volumes::mounts(pod, &pod_dir)?;
    crate::volumes::create_dirs(pod, &pod_dir)?;
    Ok(Sandbox {
        init: PodInit {
            netns,
            resolv_conf: resolv,
            mounts,
        },
        pod_ip,
        pod_dir,
        host_network,
    })
}

/// How often the kubelet re-reads the Secrets and ConfigMaps of running
/// pods' volumes.
const VOLUME_SYNC: Duration = Duration::from_secs(2);

/// Writes the pod's Secret and ConfigMap volumes, retrying while a
/// non-optional object is missing (the pod waits in ContainerCreating).
/// Returns false when the pod was stopped meanwhile.
async fn wait_for_volumes(
    shared: &Shared,
    pod: &Pod,
    node: &NodePlan,
    files: &mut FileVolumes,
    stop: &mut Stop,
) -> bool {
    let mut reported = String::new();
    loop {
        match files.sync(&shared.client).await {
            Ok(()) => return true,
            Err(error) => {
                let message = format!("{error:#}");
                if message != reported {
                    tracing::warn!(pod = ?pod.metadata.name, error = %message, "cannot mount volumes yet");
                    report_failure(shared, pod, node, "ContainerCreating", &message).await;
                    reported = message;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(VOLUME_SYNC) => {}
            _ = wait_true(stop) => return false,
        }
    }
}

/// Keeps a running pod's Secret and ConfigMap volumes in step with their
/// objects, until aborted.
async fn keep_volumes(client: kube::Client, pod: String, mut files: FileVolumes) {
    let mut failing = false;
    loop {
        tokio::time::sleep(VOLUME_SYNC).await;
        match files.sync(&client).await {
            Ok(()) => failing = false,
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(%pod, error = format!("{error:#}"), "cannot refresh volumes; keeping the last files");
            }
            Err(_) => {}
        }
    }
}

async fn destroy_sandbox(shared: &Shared, pod: &Pod, node: &NodePlan, sandbox: Sandbox) {
    crate::pidfile::remove(&sandbox.pod_dir);
    if !sandbox.host_network {
        let (node_c, uid) = (node.clone(), pod.metadata.uid.clone().unwrap_or_default());
        if let Err(error) =
            tokio::task::spawn_blocking(move || podnet::destroy(&node_c, &uid)).await
        {
            tracing::warn!(%error, "pod network teardown panicked");
        }
        if let Ok(mut ipam) = shared.ipam.lock() {
            ipam.release(node, sandbox.pod_ip);
        }
    }
    let _ = std::fs::remove_dir_all(&sandbox.pod_dir);
}

/// Deletes the pod object with grace period 0, if it is still the same pod.
async fn delete_object(shared: &Shared, pod: &Pod) {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api = Api::<Pod>::namespaced(shared.client.clone(), &namespace);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&name, &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
        Err(error) => tracing::warn!(pod = %name, %error, "cannot delete the pod object"),
    }
}

/// How the container's process ended.
enum Ended {
    Exited(ExitStatus),
    Stopped,
}

async fn supervise(
    shared: &Shared,
    pod: &Pod,
    node: &NodePlan,
    sandbox: &Sandbox,
    stop: &mut Stop,
) -> Result<()> {
    let spec = pod.spec.as_ref().context("pod has no spec")?;
    let container = spec.containers.first().context("pod has no containers")?;
    let command: Vec<String> = container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .cloned()
        .collect();
    if command.is_empty() {
        report_failure(
            shared,
            pod,
            node,
            "CreateContainerError",
            "the lab runs containers[0].command; it is empty",
        )
        .await;
        bail!("containers[0] has no command");
    }
    let policy = spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".into());
    let exe_dir = shared.exe.parent().map(PathBuf::from).unwrap_or_default();
    let facts = crate::pod_env::PodFacts {
        pod,
        pod_ip: sandbox.pod_ip,
        host_ip: node.wan_addr(),
        node_name: &node.name(),
        cluster: &shared.cluster,
    };
    let env = match crate::pod_env::build(
        &shared.client,
        &facts,
        container,
        &[&exe_dir, &shared.components],
    )
    .await
    {
        Ok(env) => env,
        Err(error) => {
            report_failure(
                shared,
                pod,
                node,
                "CreateContainerConfigError",
                &format!("{error:#}"),
            )
            .await;
            return Err(error);
        }
    };
    let start_time = now();
    let mut restarts = 0u32;
    let mut backoff = Duration::from_secs(1);
    loop {
        let started_at = now();
        let log = shared.dir.pod_log(
            &shared.cluster.name,
            facts.pod.metadata.namespace.as_deref().unwrap_or(""),
            facts.pod.metadata.name.as_deref().unwrap_or(""),
        );
        let report =
            |phase: &'static str, ready: bool, state: ContainerState, restarts: u32| Report {
                phase,
                pod_ip: sandbox.pod_ip,
                host_ip: node.wan_addr(),
                start_time: start_time.clone(),
                container: container.name.clone(),
                image: container.image.clone().unwrap_or_default(),
                ready,
                restarts,
                state,
            };
        let (mut child, pid) = match start(shared, sandbox, &command, &env, &log) {
            Ok(started) => started,
            Err(error) => {
                // As a container runtime reports it: StartError, exit code
                // 128, then restarts by policy with back-off.
                let message = format!("{error:#}");
                tracing::warn!(pod = ?pod.metadata.name, error = %message, "the container cannot start");
                append_log(&log, &format!("mc-lab kubelet: {message}\n"));
                let terminated = ContainerState::Terminated {
                    exit_code: 128,
                    started_at: started_at.clone(),
                    finished_at: now(),
                    reason: Some("StartError".into()),
                    message: Some(message.clone()),
                };
                if policy == "Never" {
                    patch_status(shared, pod, &report("Failed", false, terminated, restarts)).await;
                    return Ok(());
                }
                restarts += 1;
                let waiting = ContainerState::Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: format!(
                        "back-off {}s restarting failed container: {message}",
                        backoff.as_secs()
                    ),
                };
                patch_status(shared, pod, &report("Running", false, waiting, restarts)).await;
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = wait_true(stop) => return Ok(()),
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let probe = container.readiness_probe.clone();
        let mut ready = probe.is_none();
        patch_status(
            shared,
            pod,
            &report(
                "Running",
                ready,
                ContainerState::Running {
                    started_at: started_at.clone(),
                    pid,
                },
                restarts,
            ),
        )
        .await;
        tracing::info!(pod = ?pod.metadata.name, pid, ip = %sandbox.pod_ip, "container started");
        let ended = watch_container(
            shared,
            pod,
            container,
            node,
            sandbox,
            &mut child,
            stop,
            probe.as_ref(),
            &mut ready,
            |ready| {
                report(
                    "Running",
                    ready,
                    ContainerState::Running {
                        started_at: started_at.clone(),
                        pid,
                    },
                    restarts,
                )
            },
        )
        .await;
        let status = match ended {
            Ended::Stopped => {
                let grace = (*stop.borrow()).unwrap_or_else(|| grace(pod));
                kill_group(pid, &mut child, grace).await;
                return Ok(());
            }
            Ended::Exited(status) => status,
        };
        crate::pidfile::remove(&sandbox.pod_dir);
        let exit_code = status.code().unwrap_or_else(|| {
            128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
        });
        tracing::info!(pod = ?pod.metadata.name, exit_code, "container exited");
        let restart = match policy.as_str() {
            "Never" => false,
            "OnFailure" => !status.success(),
            _ => true,
        };
        let terminated = ContainerState::Terminated {
            exit_code,
            started_at: started_at.clone(),
            finished_at: now(),
            reason: None,
            message: None,
        };
        if !restart {
            let phase = if status.success() {
                "Succeeded"
            } else {
                "Failed"
            };
            patch_status(shared, pod, &report(phase, false, terminated, restarts)).await;
            return Ok(());
        }
        restarts += 1;
        let waiting = ContainerState::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: format!(
                "back-off {}s restarting the container (exit code {exit_code})",
                backoff.as_secs()
            ),
        };
        patch_status(shared, pod, &report("Running", false, waiting, restarts)).await;
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = wait_true(stop) => return Ok(()),
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Waits for the process, probing readiness, until it exits or the pod is
/// stopped.
#[allow(clippy::too_many_arguments)]
async fn watch_container(
    shared: &Shared,
    pod: &Pod,
    container: &Container,
    node: &NodePlan,
    sandbox: &Sandbox,
    child: &mut tokio::process::Child,
    stop: &mut Stop,
    probe: Option<&k8s_openapi::api::core::v1::Probe>,
    ready: &mut bool,
    report: impl Fn(bool) -> Report,
) -> Ended {
    let timing = probe.map(probe::Timing::of);
    let target = probe::Target {
        node_netns: node.netns(),
        pod_ip: IpAddr::V4(sandbox.pod_ip),
        pod_init: sandbox.init.clone(),
        named_ports: container
            .ports
            .iter()
            .flatten()
            .filter_map(|p| Some((p.name.clone()?, u16::try_from(p.container_port).ok()?)))
            .collect(),
    };
    let mut next_probe = Instant::now() + timing.map_or(Duration::ZERO, |t| t.initial_delay);
    let mut failures = 0u32;
    loop {
        tokio::select! {
            status = child.wait() => {
                return match status {
                    Ok(status) => Ended::Exited(status),
                    Err(error) => {
                        tracing::warn!(%error, "cannot wait for the container");
                        Ended::Stopped
                    }
                };
            }
            _ = wait_true(stop) => return Ended::Stopped,
            _ = tokio::time::sleep_until(next_probe), if probe.is_some() => {
                let (Some(probe), Some(timing)) = (probe, timing) else { continue };
                let outcome = probe::run(probe, &target, timing.timeout).await;
                let was = *ready;
                match outcome {
                    Ok(()) => { failures = 0; *ready = true; }
                    Err(error) => {
                        failures += 1;
                        tracing::debug!(pod = ?pod.metadata.name, error = format!("{error:#}"), "readiness probe failed");
                        if failures >= timing.failure_threshold || !was { *ready = false; }
                    }
                }
                if *ready != was {
                    tracing::info!(pod = ?pod.metadata.name, ready = *ready, "readiness changed");
                    patch_status(shared, pod, &report(*ready)).await;
                }
                next_probe = Instant::now() + timing.period;
            }
        }
    }
}

/// Resolves when `stop` carries (or comes to carry) a grace period; never
/// when its sender is gone.
async fn wait_true(stop: &mut Stop) {
    loop {
        if stop.borrow_and_update().is_some() {
            return;
        }
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Starts the container's command (through `pod-init`) and records its
/// PID; fails when the program cannot be found on the container's PATH.
fn start(
    shared: &Shared,
    sandbox: &Sandbox,
    command: &[String],
    env: &std::collections::BTreeMap<String, String>,
    log: &std::path::Path,
) -> Result<(tokio::process::Child, u32)> {
    let program = command.first().context("the command is empty")?;
    if !program.contains('/') {
        let path = env.get("PATH").map(String::as_str).unwrap_or_default();
        if crate::pod_env::find_program(program, path).is_none() {
            bail!("exec: {program:?}: executable file not found in $PATH");
        }
    }
    let child = spawn(shared, sandbox, command, env, log)?;
    let pid = child.id().context("the container exited at once")?;
    crate::pidfile::write(&sandbox.pod_dir, pid)?;
    Ok((child, pid))
}

/// Appends a line of the kubelet's own to the pod's log.
fn append_log(log: &std::path::Path, line: &str) {
    use std::io::Write;
    if let Some(parent) = log.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let written = std::fs::File::options()
        .create(true)
        .append(true)
        .open(log)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(error) = written {
        tracing::warn!(log = %log.display(), %error, "cannot write the pod log");
    }
}

fn spawn(
    shared: &Shared,
    sandbox: &Sandbox,
    command: &[String],
    env: &std::collections::BTreeMap<String, String>,
    log: &std::path::Path,
) -> Result<tokio::process::Child> {
    if let Some(parent) = log.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let out = std::fs::File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let err = out.try_clone().context("duplicating the log handle")?;
    tokio::process::Command::new(&shared.exe)
        .args(sandbox.init.args(command))
        .env_clear()
        .envs(env)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", command.join(" ")))
}

/// The shortest time a kubelet gives a container between SIGTERM and
/// SIGKILL, even when the pod is force-deleted.
pub const MIN_GRACE: Duration = Duration::from_secs(2);

/// The pod's grace period: the deletion's, else the spec's (default 30
/// seconds), never below [`MIN_GRACE`].
pub fn grace(pod: &Pod) -> Duration {
    let seconds = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0)).max(MIN_GRACE)
}

/// TERM to the process group, KILL after `grace`.
async fn kill_group(pid: u32, child: &mut tokio::process::Child, grace: Duration) {
    let Ok(raw) = i32::try_from(pid) else { return };
    let group = Pid::from_raw(raw);
    let _ = killpg(group, Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait().await;
    }
    // Children that left the group's leader behind still get the KILL.
    let _ = killpg(group, Signal::SIGKILL);
}

async fn patch_status(shared: &Shared, pod: &Pod, report: &Report) {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api = Api::<Pod>::namespaced(shared.client.clone(), &namespace);
    let params = PatchParams {
        field_manager: Some(crate::nodes::FIELD_MANAGER.into()),
        ..Default::default()
    };
    if let Err(error) = api
        .patch_status(&name, &params, &Patch::Merge(report.patch()))
        .await
    {
        tracing::warn!(pod = %name, %error, "cannot update the pod status");
    }
}

async fn report_failure(shared: &Shared, pod: &Pod, node: &NodePlan, reason: &str, message: &str) {
    let report = Report {
        phase: "Pending",
        pod_ip: node.wan_addr(),
        host_ip: node.wan_addr(),
        start_time: now(),
        container: pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .map(|c| c.name.clone())
            .unwrap_or_default(),
        image: String::new(),
        ready: false,
        restarts: 0,
        state: ContainerState::Waiting {
            reason: reason.into(),
            message: message.into(),
        },
    };
    let mut patch = report.patch();
    if let Some(status) = patch.get_mut("status").and_then(|s| s.as_object_mut()) {
        status.remove("podIP");
        status.remove("podIPs");
    }
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api = Api::<Pod>::namespaced(shared.client.clone(), &namespace);
    if let Err(error) = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        tracing::warn!(pod = %name, %error, "cannot update the pod status");
    }
}
