//! Running the system tools the lab is built with (`ip`, `nft`) and
//! turning their failures into errors that say what was attempted.

use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// Runs `program args...`, failing with its stderr when it exits non-zero.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{program}` (is it installed?)"))?;
    if !output.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `ip args...`.
pub fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

/// Runs `ip args...` and ignores a failure (used by teardown, where the
/// object may already be gone).
pub fn ip_quiet(args: &[&str]) {
    if let Err(error) = ip(args) {
        tracing::debug!(%error, "ignored failure during cleanup");
    }
}

/// Loads an nftables ruleset (`nft -f -`) inside network namespace `netns`.
pub fn nft_in(netns: &str, ruleset: &str) -> Result<()> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start `ip netns exec ... nft` (are iproute2 and nftables installed?)")?;
    child
        .stdin
        .take()
        .context("nft stdin is not piped")?
        .write_all(ruleset.as_bytes())
        .context("cannot write the ruleset to nft")?;
    let output = child.wait_with_output().context("waiting for nft")?;
    if !output.status.success() {
        bail!(
            "nft in netns {netns} rejected the ruleset ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Sets a sysctl inside network namespace `netns` (net.* sysctls are per
/// namespace).
pub fn sysctl_in(netns: &str, key: &str, value: &str) -> Result<()> {
    run(
        "ip",
        &[
            "netns",
            "exec",
            netns,
            "sysctl",
            "-qw",
            &format!("{key}={value}"),
        ],
    )
    .map(|_| ())
    .with_context(|| format!("setting {key}={value} in netns {netns}"))
}

/// Names of every network namespace `ip netns list` knows.
pub fn netns_list() -> Result<Vec<String>> {
    let out = ip(&["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect())
}
