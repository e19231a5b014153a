//! PID files of pod processes, so `down` can stop pods a crashed daemon
//! left behind. A file holds `<pid> <start time>`; the start time (field 22
//! of `/proc/<pid>/stat`) tells our process from a later one reusing the PID.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// Name of the PID file inside a pod's directory.
pub const PID_FILE: &str = "pid";

/// Start time of process `pid` in clock ticks since boot.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // rest starts with field 3 (state); start time is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Records process `pid` in `dir/pid`.
pub fn write(dir: &Path, pid: u32) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let started = start_time(pid).unwrap_or(0);
    let path = dir.join(PID_FILE);
    std::fs::write(&path, format!("{pid} {started}\n"))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Removes `dir/pid`.
pub fn remove(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(PID_FILE));
}

/// Kills the process group recorded in `path` if the process is still the
/// one recorded.
fn stop(path: &Path) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    let mut parts = text.split_whitespace();
    let (Some(Ok(pid)), Some(Ok(started))) = (
        parts.next().map(str::parse::<u32>),
        parts.next().map(str::parse::<u64>),
    ) else {
        return;
    };
    if start_time(pid) != Some(started) {
        return;
    }
    let Ok(raw) = i32::try_from(pid) else { return };
    let _ = killpg(Pid::from_raw(raw), Signal::SIGTERM);
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline && crate::procs::alive(pid) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = killpg(Pid::from_raw(raw), Signal::SIGKILL);
    tracing::info!(pid, "stopped a pod process left behind");
}

/// Stops every pod process recorded under `clusters_dir/<c>/pods/<uid>/pid`.
pub fn stop_all_under(clusters_dir: &Path) {
    let Ok(clusters) = std::fs::read_dir(clusters_dir) else {
        return;
    };
    for cluster in clusters.flatten() {
        let Ok(pods) = std::fs::read_dir(cluster.path().join("pods")) else {
            continue;
        };
        for pod in pods.flatten() {
            stop(&pod.path().join(PID_FILE));
        }
    }
}
