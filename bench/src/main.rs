//! `mc-bench`: the data-path benchmark. In one lab run it measures direct
//! pod -> pod against pod -> agent -> gateway -> pod (bulk throughput with
//! iperf3, small requests with wrk against nginx, unloaded latency), the
//! CPU the agent and the gateway spend and their memory, and prints ratios
//! to direct. Not a test: run it by hand with `bench/run.sh` (see
//! `bench/README.md`). Needs root and release builds of the workspace.

mod cleanup;
mod files;
mod load;
mod measure;
mod procstat;
mod profile;
mod record;
mod report;
mod topology;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;

use crate::files::Files;
use crate::load::Test;
use crate::measure::Sample;
use crate::report::MemoryReport;
use crate::topology::Lab;

/// Data-path benchmark: direct pod -> pod against the mc mesh, in the lab.
#[derive(Parser, Debug)]
#[command(name = "mc-bench")]
struct Cli {
    /// Seconds every measurement runs.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Runs of every measurement over every path; medians are reported.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Append the results (with date, commit, machine, command) to this
    /// Markdown file.
    #[arg(long)]
    record: Option<PathBuf>,
    /// The command line to write with the results.
    #[arg(long, default_value = "bench/run.sh")]
    command: String,
    /// After the measurements, profile the mesh path (perf, strace -c) and
    /// write the reports into this directory.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Set up the lab, print its paths and PIDs, and wait until
    /// interrupted (for profiling by hand); measures nothing.
    #[arg(long)]
    hold: bool,
    /// Extra environment of the agents and the gateway, KEY=VALUE
    /// (repeatable), e.g. `TOKIO_WORKER_THREADS=1`; recorded with the results.
    #[arg(long = "proxy-env", value_name = "KEY=VALUE", value_parser = parse_env)]
    proxy_env: Vec<(String, String)>,
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mc_lab = match mc_lab_bin() {
        Ok(path) => path,
        Err(error) => {
            eprintln!("mc-bench: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    // SAFETY: no other thread exists yet (the runtime starts below).
    unsafe { std::env::set_var("MC_LAB_BIN", &mc_lab) };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mc-bench: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.spawn(cleanup::on_signal(mc_lab));
    match runtime.block_on(run(&cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mc-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `mc-lab` next to this binary (the release build), or `$MC_LAB_BIN`.
fn mc_lab_bin() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("MC_LAB_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("locating mc-bench")?;
    let bin = exe.with_file_name("mc-lab");
    anyhow::ensure!(
        bin.exists(),
        "{} does not exist: build the workspace first (cargo build --release --workspace --bins)",
        bin.display()
    );
    Ok(bin)
}

async fn run(cli: &Cli) -> Result<()> {
    let ticks = procstat::ticks_per_second()?;
    let duration = Duration::from_secs(cli.duration);
    let machine_before = record::Machine::now();
    let files = Files::create()?;
    eprintln!("mc-bench: bringing up the lab and the mesh");
    let lab = Lab::start(&files, cli.proxy_env.clone()).await?;
    eprintln!(
        "mc-bench: lab {} up (gateway and direct client on {}, servers on {}); warming up",
        lab.name(),
        lab.gateway_node,
        lab.server_node
    );
    if cli.hold {
        eprintln!(
            "mc-bench: holding lab {}: direct {:?}, mesh {:?}, processes {:?}, files in {}; Ctrl-C removes it",
            lab.name(),
            lab.direct,
            lab.meshed,
            lab.procs,
            files.wrk_script().display()
        );
        return std::future::pending().await;
    }
    for path in [&lab.direct, &lab.meshed] {
        Test::KeepAlive.run(&lab, &files, path, Duration::from_secs(2))?;
        Test::Bulk1.run(&lab, &files, path, Duration::from_secs(2))?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut memory = MemoryReport {
        agent_idle: procstat::memory(lab.procs.agent)?,
        gateway_idle: procstat::memory(lab.procs.gateway)?,
        ..MemoryReport::default()
    };

    let mut samples: Vec<Sample> = Vec::new();
    for rep in 1..=cli.reps {
        for test in Test::ALL {
            for path in [&lab.direct, &lab.meshed] {
                let sample = measure::sample(&lab, &files, test, path, duration, ticks)?;
                eprintln!(
                    "mc-bench: run {rep}/{}: {} over {}: {}",
                    cli.reps,
                    test.label(),
                    path.name,
                    record::one_line(&sample)
                );
                samples.push(sample);
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    memory.agent_after = procstat::memory(lab.procs.agent)?;
    memory.gateway_after = procstat::memory(lab.procs.gateway)?;

    if let Some(dir) = &cli.profile {
        profile::run(&lab, &files, dir, duration)?;
    }
    let machine_after = record::Machine::now();
    let run = record::Run {
        command: &cli.command,
        reps: cli.reps,
        duration,
        before: &machine_before,
        after: &machine_after,
    };
    let text = record::render(&run, &lab, &samples, &memory);
    println!("{text}");
    if let Some(path) = &cli.record {
        record::append(path, &text)?;
        eprintln!("mc-bench: results appended to {}", path.display());
    }
    drop(lab);
    drop(files);
    Ok(())
}
