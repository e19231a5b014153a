//! Where the time goes under mesh load: a system-wide `perf` profile per
//! load (split by process, then the agent's and the gateway's symbols) and
//! `strace -c` system-call counts of the agent and the gateway.

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
            .args(["record", "-a", "-F", "997", "-o"])
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
        let pids = format!("{},{}", lab.procs.agent, lab.procs.gateway);
        report(
            &data,
            &dir.join(format!("{name}.processes.txt")),
            &["--sort", "pid,dso", "--percent-limit", "0.5"],
        )?;
        report(
            &data,
            &dir.join(format!("{name}.proxies.txt")),
            &[
                "--pid",
                &pids,
                "--sort",
                "pid,dso,symbol",
                "--percent-limit",
                "0.3",
            ],
        )?;
        let _ = std::fs::remove_file(&data);
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

fn wait(mut child: std::process::Child) -> Result<bool> {
    Ok(child.wait().context("waiting for the profiler")?.success())
}

fn report(data: &Path, out: &Path, args: &[&str]) -> Result<()> {
    let output = Command::new("perf")
        .arg("report")
        .arg("-i")
        .arg(data)
        .args(["--stdio", "--no-children"])
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
