//! One measurement: a load from one path's client, with the CPU time every
//! followed process spent while it ran.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::files::Files;
use crate::load::{Outcome, Test};
use crate::procstat;
use crate::topology::{Lab, Path};

/// CPU time spent during one measurement.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    /// mc-node-agent on the client's node.
    pub agent: Duration,
    /// mc-gateway.
    pub gateway: Duration,
    /// The server (nginx or iperf3).
    pub server: Duration,
    /// The load generator (wrk or iperf3 client, with its `mc-lab exec`).
    pub client: Duration,
    /// Everything else the machine did meanwhile: other engineers' work,
    /// the lab's daemons, ksoftirqd, interrupts.
    pub rest: Duration,
}

/// One run of one test over one path.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Which test.
    pub test: Test,
    /// True for the mesh path.
    pub mesh: bool,
    /// What the load generator reported.
    pub outcome: Outcome,
    /// CPU time spent meanwhile.
    pub cpu: Cpu,
}

/// Runs `test` from `path` and accounts CPU time around it.
pub fn sample(
    lab: &Lab,
    files: &Files,
    test: Test,
    path: &Path,
    duration: Duration,
    ticks: u64,
) -> Result<Sample> {
    let server: &[u32] = if test.is_bulk() {
        std::slice::from_ref(&lab.procs.iperf)
    } else {
        &lab.procs.nginx
    };
    let read = || -> Result<(Cpu, Duration)> {
        let busy = procstat::machine_busy(ticks)?;
        let cpu = Cpu {
            agent: procstat::cpu_time(lab.procs.agent, ticks).context("agent CPU")?,
            gateway: procstat::cpu_time(lab.procs.gateway, ticks).context("gateway CPU")?,
            server: procstat::cpu_time_of(server, ticks).context("server CPU")?,
            client: procstat::children_cpu_time()?,
            rest: Duration::ZERO,
        };
        Ok((cpu, busy))
    };
    let (before, busy_before) = read()?;
    let outcome = test
        .run(lab, files, path, duration)
        .with_context(|| format!("{} over the {} path", test.label(), path.name))?;
    let (after, busy_after) = read()?;
    let agent = after.agent.saturating_sub(before.agent);
    let gateway = after.gateway.saturating_sub(before.gateway);
    let server = after.server.saturating_sub(before.server);
    let client = after.client.saturating_sub(before.client);
    let rest = busy_after
        .saturating_sub(busy_before)
        .saturating_sub(agent + gateway + server + client);
    Ok(Sample {
        test,
        mesh: path.name == "mesh",
        outcome,
        cpu: Cpu {
            agent,
            gateway,
            server,
            client,
            rest,
        },
    })
}
