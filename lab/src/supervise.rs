//! Child processes the cluster daemon keeps running: the control plane's
//! components and each node's kube-proxy. A child that exits is started
//! again (with a growing pause) until the daemon stops it; each appends its
//! output to its own log and dies with the daemon.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a stopped child has to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Shortest and longest pause before a restart.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(10));
/// A child that ran this long before exiting restarts after the shortest pause.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// What to run.
#[derive(Clone, Debug)]
pub struct ProcessSpec {
    /// Name in logs and errors.
    pub name: String,
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// File its stdout and stderr are appended to.
    pub log: PathBuf,
    /// Network namespace (under `/run/netns`) to run it in; the daemon's
    /// own when `None`.
    pub netns: Option<String>,
}

/// A running, supervised child.
pub struct Supervised {
    name: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Supervised {
    /// Starts `spec` and keeps it running.
    pub fn start(spec: ProcessSpec) -> Self {
        let (stop, stopped) = watch::channel(false);
        let name = spec.name.clone();
        let task = tokio::spawn(keep_running(spec, stopped));
        Supervised { name, stop, task }
    }

    /// Stops the child (SIGTERM, then SIGKILL) and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await {
            tracing::warn!(process = %self.name, %error, "supervisor task failed");
        }
    }
}

async fn keep_running(spec: ProcessSpec, mut stopped: watch::Receiver<bool>) {
    let mut pause = BACKOFF.0;
    loop {
        let started = tokio::time::Instant::now();
        match spawn(&spec) {
            Ok(mut child) => {
                tracing::info!(process = %spec.name, pid = child.id(), "started");
                tokio::select! {
                    status = child.wait() => {
                        let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                        tracing::warn!(process = %spec.name, %status, log = %spec.log.display(), "exited; restarting");
                    }
                    _ = stop_requested(&mut stopped) => {
                        terminate(&spec.name, &mut child).await;
                        return;
                    }
                }
            }
            Err(error) => {
                tracing::error!(process = %spec.name, error = format!("{error:#}"), "cannot start");
            }
        }
        if started.elapsed() > HEALTHY_RUN {
            pause = BACKOFF.0;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop_requested(&mut stopped) => return,
        }
        pause = (pause * 2).min(BACKOFF.1);
    }
}

/// Resolves once the supervisor is asked to stop (or dropped).
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

async fn terminate(name: &str, child: &mut Child) {
    if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        tracing::warn!(process = %name, "did not stop in time; killing it");
        let _ = child.kill().await;
    }
}

fn spawn(spec: &ProcessSpec) -> Result<Child> {
    let log = File::options()
        .create(true)
        .append(true)
        .open(&spec.log)
        .with_context(|| format!("cannot open {}", spec.log.display()))?;
    let err = log.try_clone().context("duplicating the log file handle")?;
    let netns = spec
        .netns
        .as_ref()
        .map(|ns| {
            let path = PathBuf::from("/run/netns").join(ns);
            File::open(&path).with_context(|| format!("cannot open {}", path.display()))
        })
        .transpose()?;
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(err)
        .kill_on_drop(true);
    let netns_fd = netns.as_ref().map(|f| f.as_raw_fd());
    // SAFETY: prctl and setns are single system calls, async-signal-safe,
    // and touch no memory of the parent; the netns file outlives the spawn.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            if let Some(fd) = netns_fd {
                let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
                setns(fd, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .with_context(|| format!("cannot run {}", spec.program.display()))?;
    drop(netns);
    Ok(child)
}
