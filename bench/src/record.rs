//! The record of one run: when, which commit, which machine, which command,
//! what each path is, and the tables; appended to `bench/README.md`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::measure::Sample;
use crate::report::{self, MemoryReport};
use crate::topology::Lab;

/// Facts about the machine at one moment.
#[derive(Clone, Debug)]
pub struct Machine {
    /// Local date and time.
    pub date: String,
    /// `git describe` of the checkout, with uncommitted data-path changes named.
    pub commit: String,
    /// Online CPUs.
    pub cpus: usize,
    /// `uname -r`.
    pub kernel: String,
    /// CPU model.
    pub cpu_model: String,
    /// `/proc/loadavg`'s first three fields.
    pub load: String,
}

impl Machine {
    /// Reads everything now (unknown facts read as `?`).
    pub fn now() -> Machine {
        let first = |text: &str| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        };
        Machine {
            date: chrono::Local::now().format("%Y-%m-%d %H:%M %Z").to_string(),
            commit: commit(),
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            kernel: output("uname", &["-r"]),
            cpu_model: std::fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(|t| {
                    t.lines()
                        .find(|l| l.starts_with("model name"))
                        .and_then(|l| l.split_once(':'))
                        .map(|(_, m)| m.trim().to_string())
                })
                .unwrap_or_else(|| "?".into()),
            load: std::fs::read_to_string("/proc/loadavg")
                .map(|t| first(&t))
                .unwrap_or_else(|_| "?".into()),
        }
    }
}

fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into())
}

fn commit() -> String {
    let head = output("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = output(
        "git",
        &[
            "status",
            "--porcelain",
            "--",
            "node-agent",
            "gateway",
            "tunnel",
            "identity",
            "admin",
        ],
    );
    if dirty.is_empty() || dirty == "?" {
        head
    } else {
        let files: Vec<&str> = dirty.lines().filter_map(|l| l.get(3..)).collect();
        format!("{head} + uncommitted changes in {}", files.join(", "))
    }
}

/// How the run was made.
pub struct Run<'a> {
    /// The command line to record.
    pub command: &'a str,
    /// Runs per measurement and path.
    pub reps: usize,
    /// Length of each run.
    pub duration: Duration,
    /// The machine when the run started.
    pub before: &'a Machine,
    /// The machine when it ended.
    pub after: &'a Machine,
}

/// The Markdown record of a run.
pub fn render(run: &Run, lab: &Lab, samples: &[Sample], memory: &MemoryReport) -> String {
    let m = run.before;
    let mut out = String::new();
    let _ = writeln!(out, "### Run of {}\n", m.date);
    let _ = writeln!(out, "- command: `{}`", run.command);
    let _ = writeln!(out, "- commit: {}", m.commit);
    let _ = writeln!(
        out,
        "- machine: {} CPUs ({}), kernel {}, load average {} at the start, {} at the end",
        m.cpus, m.cpu_model, m.kernel, m.load, run.after.load
    );
    let _ = writeln!(
        out,
        "- {} runs of {} s per measurement and path, interleaved; medians, (min–max) when they differ",
        run.reps,
        run.duration.as_secs()
    );
    let _ = writeln!(
        out,
        "- direct: `{}` on {} -> server pod IP on {}; mesh: `{}` on west-node-0 -> mirror ClusterIP -> agent (west-node-0) -> gateway LoadBalancer -> gateway pod on {} -> the same server pod\n",
        lab.direct.client, lab.gateway_node, lab.server_node, lab.meshed.client, lab.gateway_node
    );
    out.push_str(&report::results_table(samples));
    out.push('\n');
    out.push_str(&report::cpu_table(samples));
    out.push('\n');
    out.push_str(&report::memory_table(memory));
    out.push('\n');
    out.push_str(&report::machine_table(samples));
    out
}

/// A one-line summary of a sample, for progress output.
pub fn one_line(s: &Sample) -> String {
    let cpu = format!(
        "cpu agent {:.2}s gateway {:.2}s server {:.2}s client {:.2}s rest of machine {:.2}s",
        s.cpu.agent.as_secs_f64(),
        s.cpu.gateway.as_secs_f64(),
        s.cpu.server.as_secs_f64(),
        s.cpu.client.as_secs_f64(),
        s.cpu.rest.as_secs_f64()
    );
    if s.test.is_bulk() {
        format!("{:.2} Gbit/s, {cpu}", s.outcome.bits_per_second / 1e9)
    } else {
        format!(
            "{:.0} req/s p50 {:.0} µs p99 {:.0} µs errors {}, {cpu}",
            s.outcome.requests_per_second(),
            s.outcome.p50_us,
            s.outcome.p99_us,
            s.outcome.errors
        )
    }
}

/// Appends `text` to the Markdown file at `path`.
pub fn append(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::options()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    write!(file, "\n{text}").with_context(|| format!("writing {}", path.display()))
}
