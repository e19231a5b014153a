//! The load generators, run in a client pod with `mc-lab exec`: iperf3 for
//! bulk throughput, wrk against nginx for small requests.

use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::files::{Files, HTTP_PORT, IPERF_PORT};
use crate::topology::{Lab, Path};

/// One kind of measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Test {
    /// iperf3, one TCP stream.
    Bulk1,
    /// iperf3, four parallel TCP streams.
    Bulk4,
    /// wrk, 8 keep-alive connections (2 threads).
    KeepAlive,
    /// wrk, 8 connections, `Connection: close` (one connection per request).
    NewConnection,
    /// wrk, one keep-alive connection, one request at a time.
    Unloaded,
}

impl Test {
    /// Every test, in the order they run.
    pub const ALL: [Test; 5] = [
        Test::Bulk1,
        Test::Bulk4,
        Test::KeepAlive,
        Test::NewConnection,
        Test::Unloaded,
    ];

    /// A short name.
    pub fn label(self) -> &'static str {
        match self {
            Test::Bulk1 => "bulk, 1 stream",
            Test::Bulk4 => "bulk, 4 streams",
            Test::KeepAlive => "keep-alive, 8 connections",
            Test::NewConnection => "new connection per request, 8 connections",
            Test::Unloaded => "unloaded, 1 connection",
        }
    }

    /// True for iperf3 tests (the iperf3 server does the work), false for
    /// wrk tests (nginx does).
    pub fn is_bulk(self) -> bool {
        matches!(self, Test::Bulk1 | Test::Bulk4)
    }

    /// Runs the load for `duration` from `path`'s client.
    pub fn run(self, lab: &Lab, files: &Files, path: &Path, duration: Duration) -> Result<Outcome> {
        match self {
            Test::Bulk1 => iperf(lab, path, 1, duration),
            Test::Bulk4 => iperf(lab, path, 4, duration),
            Test::KeepAlive => wrk(lab, files, path, 8, 2, false, duration),
            Test::NewConnection => wrk(lab, files, path, 8, 2, true, duration),
            Test::Unloaded => wrk(lab, files, path, 1, 1, false, duration),
        }
    }
}

/// What a load generator reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outcome {
    /// Received bits per second (bulk).
    pub bits_per_second: f64,
    /// Completed requests (wrk).
    pub requests: u64,
    /// Seconds the load ran, as the generator measured it.
    pub seconds: f64,
    /// Median request latency in µs (wrk).
    pub p50_us: f64,
    /// 99th percentile request latency in µs (wrk).
    pub p99_us: f64,
    /// Socket errors plus non-2xx answers (wrk).
    pub errors: u64,
}

impl Outcome {
    /// Requests per second (wrk).
    pub fn requests_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.requests as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// Bytes received (bulk).
    pub fn bytes(&self) -> f64 {
        self.bits_per_second * self.seconds / 8.0
    }
}

fn exec(lab: &Lab, pod: &str, command: &[&str]) -> Result<String> {
    let out = lab
        .mesh
        .lab
        .exec(pod, command)
        .with_context(|| format!("running {command:?} in {pod}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{command:?} in {pod} failed ({}): {stdout} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

fn iperf(lab: &Lab, path: &Path, streams: u32, duration: Duration) -> Result<Outcome> {
    let seconds = duration.as_secs().max(1).to_string();
    let streams_arg = streams.to_string();
    let port = IPERF_PORT.to_string();
    let command = [
        "iperf3",
        "-c",
        &path.iperf_ip,
        "-p",
        &port,
        "-t",
        &seconds,
        "-P",
        &streams_arg,
        "-O",
        "1",
        "-J",
        "--connect-timeout",
        "5000",
    ];
    // The server runs one test at a time and may still be closing the last.
    let mut last = None;
    for _ in 0..3 {
        match exec(lab, path.client, &command).and_then(|json| parse_iperf(&json)) {
            Ok(outcome) => return Ok(outcome),
            Err(error) => {
                last = Some(error);
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
    Err(last.context("iperf3 never ran")?)
}

fn parse_iperf(json: &str) -> Result<Outcome> {
    let report: serde_json::Value = serde_json::from_str(json).context("iperf3 -J output")?;
    if let Some(error) = report.get("error") {
        bail!("iperf3: {error}");
    }
    let received = &report["end"]["sum_received"];
    Ok(Outcome {
        bits_per_second: received["bits_per_second"]
            .as_f64()
            .context("iperf3: no end.sum_received.bits_per_second")?,
        seconds: received["seconds"]
            .as_f64()
            .context("iperf3: no end.sum_received.seconds")?,
        ..Outcome::default()
    })
}

fn wrk(
    lab: &Lab,
    files: &Files,
    path: &Path,
    connections: u32,
    threads: u32,
    close: bool,
    duration: Duration,
) -> Result<Outcome> {
    let url = format!("http://{}:{HTTP_PORT}/", path.web_ip);
    let connections = connections.to_string();
    let threads = threads.to_string();
    let seconds = format!("{}s", duration.as_secs().max(1));
    let script = files.wrk_script().display().to_string();
    let mut command = vec![
        "wrk",
        "-t",
        &threads,
        "-c",
        &connections,
        "-d",
        &seconds,
        "--timeout",
        "5s",
        "-s",
        &script,
    ];
    if close {
        command.extend(["-H", "Connection: close"]);
    }
    command.push(&url);
    parse_wrk(&exec(lab, path.client, &command)?)
}

fn parse_wrk(stdout: &str) -> Result<Outcome> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("MCBENCH "))
        .with_context(|| format!("wrk printed no summary: {stdout}"))?;
    let field = |key: &str| -> Result<f64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .with_context(|| format!("wrk summary has no {key}: {line}"))?
            .parse()
            .with_context(|| format!("wrk summary {key}: {line}"))
    };
    Ok(Outcome {
        requests: field("requests")? as u64,
        seconds: field("duration_us")? / 1e6,
        p50_us: field("p50_us")?,
        p99_us: field("p99_us")?,
        errors: (field("socket_errors")? + field("status_errors")?) as u64,
        ..Outcome::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_summary_is_read() -> Result<()> {
        let out = "Running 1s test\nMCBENCH requests=1000 duration_us=2000000 \
                   socket_errors=1 status_errors=2 p50_us=95 p99_us=410\n";
        let o = parse_wrk(out)?;
        assert_eq!(o.requests, 1000);
        assert_eq!(o.requests_per_second(), 500.0);
        assert_eq!((o.p50_us, o.p99_us, o.errors), (95.0, 410.0, 3));
        Ok(())
    }

    #[test]
    fn iperf_errors_are_errors() {
        assert!(parse_iperf(r#"{"error": "the server is busy"}"#).is_err());
        let ok =
            parse_iperf(r#"{"end": {"sum_received": {"bits_per_second": 8e9, "seconds": 10.0}}}"#);
        assert!(ok.is_ok_and(|o| o.bytes() == 1e10));
    }
}
