//! Where the time goes under mesh load: a system-wide `perf` profile per
//! load (kept as `<load>.perf.data`, with kernel call chains, for
//! `perf report -i`), the agent's and the gateway's share of kernel and
//! user space and their hottest symbols, and `strace -c` system-call
//! counts of both.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::files::Files;
use crate::load::Test;
use crate::topology::Lab;

/// Profiles keep-alive, new-connection and single-stream bulk loads over
/// the mesh path, writing `<load>.*.txt` reports into `dir`.
pub fn run(lab: &Lab, files: &Files, dir: &Path, duration: Duration) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let loads = [
        (Test::KeepAlive, "keepalive"),
        (Test::NewConnection, "newconn"),
        (Test::Bulk1, "bulk1"),
    ];
    let secs = duration.as_secs().max(2);
    for (test, name) in loads {
        eprintln!("mc-bench: perf during {} over the mesh", test.label());
        let data = dir.join(format!("{name}.perf.data"));
        // Record a little less than the load lasts, so only loaded time counts.
        let perf = Command::new("perf")
            .args(["record", "-a", "-g", "-F", "997", "-o"])
            .arg(&data)
            .args(["--", "sleep", &(secs - 1).to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting perf record")?;
        let outcome = test.run(lab, files, &lab.meshed, duration);
        let status = wait(perf)?;
        outcome?;
        if !status {
            bail!("perf record failed");
        }
        // `perf report --pid/--tid` filters proved unreliable here: take
        // every sample by thread and group the proxies' threads ourselves.
        report(
            &data,
            &dir.join(format!("{name}.machine.txt")),
            &["--sort", "comm,dso", "--percent-limit", "1"],
        )?;
        let all = report_text(&data, &["--sort", "pid,dso,sym", "--percent-limit", "0"])?;
        for (who, pid) in [("agent", lab.procs.agent), ("gateway", lab.procs.gateway)] {
            let summary = summarize(&all, &threads(pid)?);
            let out = dir.join(format!("{name}.{who}.txt"));
            std::fs::write(&out, summary).with_context(|| format!("writing {}", out.display()))?;
        }
    }
    for (test, name) in loads.into_iter().take(2) {
        for (who, pid) in [("agent", lab.procs.agent), ("gateway", lab.procs.gateway)] {
            eprintln!("mc-bench: strace -c of the {who} during {}", test.label());
            let out = dir.join(format!("{name}.{who}.strace.txt"));
            let strace = Command::new("timeout")
                .args(["--signal=INT", &(secs - 1).to_string()])
                .args(["strace", "-c", "-f", "-p", &pid.to_string(), "-o"])
                .arg(&out)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting strace")?;
            let outcome = test.run(lab, files, &lab.meshed, duration);
            wait(strace)?;
            let sample = outcome?;
            // strace slows the process down a lot: keep the rate with the counts.
            let note = format!(
                "\n# load under strace: {:.0} requests/s over {:.1} s\n",
                sample.requests_per_second(),
                sample.seconds
            );
            let mut text = std::fs::read_to_string(&out).unwrap_or_default();
            text.push_str(&note);
            std::fs::write(&out, text).with_context(|| format!("writing {}", out.display()))?;
        }
    }
    Ok(())
}

/// The thread IDs of `pid`.
fn threads(pid: u32) -> Result<Vec<String>> {
    let dir = format!("/proc/{pid}/task");
    let mut tids = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        let entry = entry.with_context(|| format!("listing {dir}"))?;
        tids.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(tids)
}

/// One process's share of the machine's samples, its split by shared
/// object (kernel, binary, libc) and its 30 hottest symbols, as shares of
/// the process's own samples; `all` is `perf report --sort pid,dso,sym`.
fn summarize(all: &str, tids: &[String]) -> String {
    use std::collections::BTreeMap;
    use std::fmt::Write as _;
    let mut by_dso: BTreeMap<String, f64> = BTreeMap::new();
    let mut by_symbol: BTreeMap<String, f64> = BTreeMap::new();
    let mut total = 0.0;
    for line in all.lines() {
        let mut words = line.split_whitespace();
        let (Some(percent), Some(thread), Some(dso)) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        let Some(Ok(percent)) = percent.strip_suffix('%').map(str::parse::<f64>) else {
            continue;
        };
        let tid = thread.split(':').next().unwrap_or_default();
        if !tids.iter().any(|t| t == tid) {
            continue;
        }
        let symbol: Vec<&str> = words.collect();
        total += percent;
        *by_dso.entry(dso.to_string()).or_default() += percent;
        *by_symbol
            .entry(format!("{dso:<20} {}", symbol.join(" ")))
            .or_default() += percent;
    }
    let sorted = |map: BTreeMap<String, f64>| {
        let mut v: Vec<(String, f64)> = map.into_iter().collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v
    };
    let share = |x: f64| if total > 0.0 { 100.0 * x / total } else { 0.0 };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{total:.1}% of all samples on the machine\n\nby shared object:"
    );
    for (dso, p) in sorted(by_dso) {
        let _ = writeln!(out, "{:6.1}%  {dso}", share(p));
    }
    let _ = writeln!(out, "\nhottest symbols:");
    for (symbol, p) in sorted(by_symbol).into_iter().take(30) {
        let _ = writeln!(out, "{:6.1}%  {symbol}", share(p));
    }
    out
}

fn wait(mut child: std::process::Child) -> Result<bool> {
    Ok(child.wait().context("waiting for the profiler")?.success())
}

fn report(data: &Path, out: &Path, args: &[&str]) -> Result<()> {
    let text = report_text(data, args)?;
    std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))
}

fn report_text(data: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new("perf")
        .arg("report")
        .arg("-i")
        .arg(data)
        .args(["--stdio", "--no-children", "-g", "none"])
        .args(args)
        .output()
        .context("running perf report")?;
    if !output.status.success() {
        bail!(
            "perf report failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_keeps_only_the_process_threads() {
        let all = "    30.00%    11:tokio-rt-worker  [kernel.kallsyms]  [k] tcp_sendmsg\n\
                   \x20   10.00%    12:tokio-rt-worker  mc-gateway  [.] h2::poll\n\
                   \x20   60.00%    99:rustc  rustc  [.] other\n";
        let text = summarize(all, &["11".to_string(), "12".to_string()]);
        assert!(text.starts_with("40.0% of all samples"), "{text}");
        assert!(text.contains("75.0%  [kernel.kallsyms]"), "{text}");
        assert!(!text.contains("other"), "{text}");
    }
}
