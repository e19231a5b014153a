//! Starting the lab's detached daemons and stopping them again by PID,
//! only while `/proc/<pid>/cmdline` still shows the process we started.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// Starts `program args...` in a new session, detached from the caller's
/// terminal, with stdout and stderr appended to `log`. Returns its PID.
pub fn spawn_detached(program: &Path, args: &[String], log: &Path) -> Result<u32> {
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let err = out.try_clone().context("duplicating the log file handle")?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: setsid is async-signal-safe and touches no state of the parent.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let child = command
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))?;
    Ok(child.id())
}

/// The NUL-separated arguments of process `pid`, if it still exists.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|part| !part.is_empty())
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect(),
    )
}

/// Whether process `pid` exists and its command line contains every one of
/// `needles` as an argument.
pub fn is_ours(pid: u32, needles: &[&str]) -> bool {
    cmdline(pid).is_some_and(|args| needles.iter().all(|n| args.iter().any(|a| a == n)))
}

/// Stops the process group led by `pid` (TERM, then KILL after `grace`),
/// provided the process still matches `needles`. Returns whether it was
/// found.
pub fn stop_group(pid: u32, needles: &[&str], grace: Duration) -> bool {
    if !is_ours(pid, needles) {
        return false;
    }
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    let target = Pid::from_raw(raw);
    if killpg(target, Signal::SIGTERM).is_err() {
        let _ = kill(target, Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if killpg(target, Signal::SIGKILL).is_err() {
        let _ = kill(target, Signal::SIGKILL);
    }
    true
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}
