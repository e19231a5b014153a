//! Medians of the samples, ratios to direct, and the Markdown tables.

use std::fmt::Write as _;

use crate::load::Test;
use crate::measure::Sample;
use crate::procstat::Memory;

/// Agent and gateway memory at the three moments the benchmark looks.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemoryReport {
    /// Agent after set-up and warm-up, before any measured load.
    pub agent_idle: Memory,
    /// Gateway at the same moment.
    pub gateway_idle: Memory,
    /// Agent after every load (VmHWM is the peak of the whole run).
    pub agent_after: Memory,
    /// Gateway after every load.
    pub gateway_after: Memory,
}

/// Median of `values` (0 when empty).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// The samples of one test over one path.
fn of(samples: &[Sample], test: Test, mesh: bool) -> Vec<&Sample> {
    samples
        .iter()
        .filter(|s| s.test == test && s.mesh == mesh)
        .collect()
}

/// Median, min and max of `metric` over the samples of (test, path).
fn stat(samples: &[Sample], test: Test, mesh: bool, metric: fn(&Sample) -> f64) -> Spread {
    let values: Vec<f64> = of(samples, test, mesh).into_iter().map(metric).collect();
    Spread {
        median: median(&values),
        min: values.iter().copied().fold(f64::INFINITY, f64::min),
        max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    }
}

#[derive(Clone, Copy, Debug)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn show(&self, decimals: usize) -> String {
        if self.min.is_finite() && self.min != self.max {
            format!(
                "{:.d$} ({:.d$}–{:.d$})",
                self.median,
                self.min,
                self.max,
                d = decimals
            )
        } else {
            format!("{:.d$}", self.median, d = decimals)
        }
    }
}

fn gbps(s: &Sample) -> f64 {
    s.outcome.bits_per_second / 1e9
}
fn rps(s: &Sample) -> f64 {
    s.outcome.requests_per_second()
}
fn p50(s: &Sample) -> f64 {
    s.outcome.p50_us
}
fn p99(s: &Sample) -> f64 {
    s.outcome.p99_us
}
fn errors(s: &Sample) -> f64 {
    s.outcome.errors as f64
}

/// Per-request (wrk) or per-GB (bulk) CPU of one process class.
fn per_unit(s: &Sample, cpu: std::time::Duration) -> f64 {
    if s.test.is_bulk() {
        let gb = s.outcome.bytes() / 1e9;
        if gb > 0.0 {
            cpu.as_secs_f64() / gb
        } else {
            0.0
        }
    } else if s.outcome.requests > 0 {
        cpu.as_secs_f64() * 1e6 / s.outcome.requests as f64
    } else {
        0.0
    }
}

/// A target on a ratio (or an added latency), with the peer's value.
struct Goal {
    test: Test,
    metric: fn(&Sample) -> f64,
    unit: &'static str,
    decimals: usize,
    target: f64,
    ztunnel: f64,
}

const THROUGHPUT_GOALS: [Goal; 4] = [
    Goal {
        test: Test::Bulk1,
        metric: gbps,
        unit: "Gbit/s",
        decimals: 2,
        target: 0.45,
        ztunnel: 0.33,
    },
    Goal {
        test: Test::Bulk4,
        metric: gbps,
        unit: "Gbit/s",
        decimals: 2,
        target: 0.30,
        ztunnel: 0.18,
    },
    Goal {
        test: Test::KeepAlive,
        metric: rps,
        unit: "req/s",
        decimals: 0,
        target: 0.38,
        ztunnel: 0.28,
    },
    Goal {
        test: Test::NewConnection,
        metric: rps,
        unit: "req/s",
        decimals: 0,
        target: 0.40,
        ztunnel: 0.24,
    },
];

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

/// The main table: absolute numbers, ratios to direct, targets.
pub fn results_table(samples: &[Sample]) -> String {
    let mut out = String::new();
    out.push_str(
        "| measurement | direct | mesh | mesh / direct | mc target | ztunnel | |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for goal in &THROUGHPUT_GOALS {
        let direct = stat(samples, goal.test, false, goal.metric);
        let mesh = stat(samples, goal.test, true, goal.metric);
        let ratio = ratio(mesh.median, direct.median);
        let _ = writeln!(
            out,
            "| {} ({}) | {} | {} | **{ratio:.2}** | ≥ {:.2} | {:.2} | {} |",
            goal.test.label(),
            goal.unit,
            direct.show(goal.decimals),
            mesh.show(goal.decimals),
            goal.target,
            goal.ztunnel,
            verdict(ratio >= goal.target)
        );
    }
    for test in [Test::KeepAlive, Test::NewConnection] {
        for (name, metric) in [("p50", p50 as fn(&Sample) -> f64), ("p99", p99)] {
            let direct = stat(samples, test, false, metric);
            let mesh = stat(samples, test, true, metric);
            let _ = writeln!(
                out,
                "| {}: {name} (µs) | {} | {} | {:.2} | | | |",
                test.label(),
                direct.show(0),
                mesh.show(0),
                ratio(mesh.median, direct.median)
            );
        }
    }
    let direct = stat(samples, Test::Unloaded, false, p50);
    let mesh = stat(samples, Test::Unloaded, true, p50);
    let added = mesh.median - direct.median;
    let _ = writeln!(
        out,
        "| {}: p50 (µs) | {} | {} | **{added:+.0} µs** | ≤ +80 µs | +120 µs | {} |",
        Test::Unloaded.label(),
        direct.show(0),
        mesh.show(0),
        verdict(added <= 80.0)
    );
    let direct = stat(samples, Test::Unloaded, false, p99);
    let mesh = stat(samples, Test::Unloaded, true, p99);
    let _ = writeln!(
        out,
        "| {}: p99 (µs) | {} | {} | {:+.0} µs | | | |",
        Test::Unloaded.label(),
        direct.show(0),
        mesh.show(0),
        mesh.median - direct.median
    );
    let direct = stat(samples, Test::Unloaded, false, rps);
    let mesh = stat(samples, Test::Unloaded, true, rps);
    let _ = writeln!(
        out,
        "| {} (req/s) | {} | {} | {:.2} | | | |",
        Test::Unloaded.label(),
        direct.show(0),
        mesh.show(0),
        ratio(mesh.median, direct.median)
    );
    let total = |mesh: bool| -> f64 {
        samples
            .iter()
            .filter(|s| s.mesh == mesh && !s.test.is_bulk())
            .map(errors)
            .sum()
    };
    let _ = writeln!(
        out,
        "| wrk errors, all runs (socket + non-2xx) | {:.0} | {:.0} | | | | |",
        total(false),
        total(true)
    );
    out
}

/// CPU per request (wrk tests) and per GB (bulk), medians over the runs.
pub fn cpu_table(samples: &[Sample]) -> String {
    let mut out = String::new();
    out.push_str(
        "| load | unit | agent | gateway | agent + gateway | ztunnel (both) | server, direct | server, mesh | client, direct | client, mesh |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for test in Test::ALL {
        let (unit, decimals, peer) = match test {
            Test::Bulk1 | Test::Bulk4 => ("CPU s / GB", 2, String::new()),
            Test::KeepAlive => ("CPU µs / request", 0, "97".to_string()),
            Test::NewConnection => ("CPU µs / request", 0, "460".to_string()),
            Test::Unloaded => ("CPU µs / request", 0, String::new()),
        };
        let m = |mesh: bool, f: fn(&Sample) -> f64| stat(samples, test, mesh, f).median;
        let _ = writeln!(
            out,
            "| {} | {unit} | {:.d$} | {:.d$} | **{:.d$}** | {peer} | {:.d$} | {:.d$} | {:.d$} | {:.d$} |",
            test.label(),
            m(true, |s| per_unit(s, s.cpu.agent)),
            m(true, |s| per_unit(s, s.cpu.gateway)),
            m(true, |s| per_unit(s, s.cpu.agent + s.cpu.gateway)),
            m(false, |s| per_unit(s, s.cpu.server)),
            m(true, |s| per_unit(s, s.cpu.server)),
            m(false, |s| per_unit(s, s.cpu.client)),
            m(true, |s| per_unit(s, s.cpu.client)),
            d = decimals
        );
    }
    out
}

/// Cores busy during the runs: the benchmark's own processes, and the rest
/// of the machine (other work on the box, lab daemons, ksoftirqd).
pub fn machine_table(samples: &[Sample]) -> String {
    let mut out = String::new();
    out.push_str(
        "| load | benchmark processes, direct | rest of machine, direct | benchmark processes, mesh | rest of machine, mesh |\n\
         |---|---|---|---|---|\n",
    );
    let cores = |s: &Sample, cpu: std::time::Duration| {
        if s.outcome.seconds > 0.0 {
            cpu.as_secs_f64() / s.outcome.seconds
        } else {
            0.0
        }
    };
    let ours = |s: &Sample| cores(s, s.cpu.agent + s.cpu.gateway + s.cpu.server + s.cpu.client);
    let rest = |s: &Sample| cores(s, s.cpu.rest);
    for test in Test::ALL {
        let m = |mesh: bool, f: &dyn Fn(&Sample) -> f64| {
            let values: Vec<f64> = of(samples, test, mesh).into_iter().map(f).collect();
            median(&values)
        };
        let _ = writeln!(
            out,
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            test.label(),
            m(false, &ours),
            m(false, &rest),
            m(true, &ours),
            m(true, &rest)
        );
    }
    out
}

/// Agent and gateway resident memory.
pub fn memory_table(m: &MemoryReport) -> String {
    let mb = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let mut out = String::new();
    out.push_str(
        "| resident memory (MiB) | agent | gateway | mc target | ztunnel |\n|---|---|---|---|---|\n",
    );
    let _ = writeln!(
        out,
        "| idle, after set-up and one request (VmRSS) | {:.1} | {:.1} | ≤ 10 ({}) | ~18 |",
        mb(m.agent_idle.rss),
        mb(m.gateway_idle.rss),
        verdict(m.agent_idle.rss.max(m.gateway_idle.rss) <= 10 * 1024 * 1024)
    );
    let _ = writeln!(
        out,
        "| peak over the whole run (VmHWM) | {:.1} | {:.1} | | |",
        mb(m.agent_after.peak),
        mb(m.gateway_after.peak)
    );
    let _ = writeln!(
        out,
        "| idle again, after every load (VmRSS) | {:.1} | {:.1} | | |",
        mb(m.agent_after.rss),
        mb(m.gateway_after.rss)
    );
    out
}

fn ratio(mesh: f64, direct: f64) -> f64 {
    if direct > 0.0 { mesh / direct } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}
