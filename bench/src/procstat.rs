//! What `/proc` says about a process: CPU time (user + system, all threads,
//! including exited ones) and resident memory.

use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::resource::{UsageWho, getrusage};
use nix::unistd::{SysconfVar, sysconf};

/// Clock ticks per second of `/proc/<pid>/stat` times.
pub fn ticks_per_second() -> Result<u64> {
    let ticks = sysconf(SysconfVar::CLK_TCK)
        .context("sysconf(CLK_TCK)")?
        .context("CLK_TCK is not defined")?;
    u64::try_from(ticks).context("CLK_TCK is negative")
}

/// User plus system CPU time of `pid` so far.
pub fn cpu_time(pid: u32, ticks_per_second: u64) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) may hold spaces: fields restart after ')'.
    let (_, rest) = stat
        .rsplit_once(')')
        .with_context(|| format!("{path} has no command field"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .with_context(|| format!("{path} has no field {n}"))?
            .parse()
            .with_context(|| format!("field {n} of {path}"))
    };
    let ticks = field(14)? + field(15)?;
    Ok(Duration::from_secs_f64(
        ticks as f64 / ticks_per_second as f64,
    ))
}

/// CPU time of a set of processes, summed.
pub fn cpu_time_of(pids: &[u32], ticks_per_second: u64) -> Result<Duration> {
    pids.iter()
        .map(|&pid| cpu_time(pid, ticks_per_second))
        .sum()
}

/// CPU time the whole machine spent busy so far (every CPU; everything but
/// idle and iowait in `/proc/stat`).
pub fn machine_busy(ticks_per_second: u64) -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("/proc/stat has no cpu line")?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().context("a /proc/stat cpu field"))
        .collect::<Result<_>>()?;
    // user nice system idle iowait irq softirq steal guest guest_nice;
    // guest time is already inside user.
    let busy: u64 = values
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    Ok(Duration::from_secs_f64(
        busy as f64 / ticks_per_second as f64,
    ))
}

/// Resident memory of a process, in bytes: now and the high-water mark.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// `VmRSS`.
    pub rss: u64,
    /// `VmHWM`: the largest `VmRSS` the process ever had.
    pub peak: u64,
}

/// Reads `VmRSS` and `VmHWM` of `pid`.
pub fn memory(pid: u32) -> Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kib = |key: &str| -> Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(key))
            .with_context(|| format!("{path} has no {key}"))?;
        let value = line[key.len()..]
            .split_whitespace()
            .next()
            .with_context(|| format!("{path}: empty {key}"))?;
        Ok(value
            .parse::<u64>()
            .with_context(|| format!("{path}: {key} {value}"))?
            * 1024)
    };
    Ok(Memory {
        rss: kib("VmRSS:")?,
        peak: kib("VmHWM:")?,
    })
}

/// Direct children of `pid` (e.g. nginx's workers), from every process's
/// parent field.
pub fn children(pid: u32) -> Result<Vec<u32>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").context("listing /proc")? {
        let entry = entry.context("listing /proc")?;
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // Processes may exit while we look: skip what cannot be read.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent == Some(pid) {
            found.push(child);
        }
    }
    Ok(found)
}

/// User plus system CPU time of this process's waited-for descendants
/// (the load generators started through `mc-lab exec`).
pub fn children_cpu_time() -> Result<Duration> {
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).context("getrusage(RUSAGE_CHILDREN)")?;
    let as_duration = |tv: nix::sys::time::TimeVal| {
        Duration::from_secs(u64::try_from(tv.tv_sec()).unwrap_or(0))
            + Duration::from_micros(u64::try_from(tv.tv_usec()).unwrap_or(0))
    };
    Ok(as_duration(usage.user_time()) + as_duration(usage.system_time()))
}
