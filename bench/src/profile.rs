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
        for (who, pid) in [("agent", lab.procs.agent), ("gateway", lab.procs.gateway)] {
            // `perf report --pid` keeps only the main thread: name every thread.
            let tids = threads(pid)?;
            // Kernel against user space, then the hottest symbols; percentages
            // of this process's own samples.
            report(
                &data,
                &dir.join(format!("{name}.{who}.dso.txt")),
                &["--tid", &tids, "--sort", "dso", "--percentage", "relative"],
            )?;
            report(
                &data,
                &dir.join(format!("{name}.{who}.symbols.txt")),
                &[
                    "--tid",
                    &tids,
                    "--sort",
                    "dso,symbol",
                    "--percentage",
                    "relative",
                    "--percent-limit",
                    "0.4",
                ],
            )?;
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

/// The thread IDs of `pid`, comma separated.
fn threads(pid: u32) -> Result<String> {
    let dir = format!("/proc/{pid}/task");
    let mut tids = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        let entry = entry.with_context(|| format!("listing {dir}"))?;
        tids.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(tids.join(","))
}

fn wait(mut child: std::process::Child) -> Result<bool> {
    Ok(child.wait().context("waiting for the profiler")?.success())
}

fn report(data: &Path, out: &Path, args: &[&str]) -> Result<()> {
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
    std::fs::write(out, &output.stdout).with_context(|| format!("writing {}", out.display()))
}
