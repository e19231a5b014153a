//! Running commands inside a named network namespace (`ip netns exec`).

use std::process::Stdio;

use anyhow::{Context as _, bail};
use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

/// Runs `program args...` inside netns `netns`, feeding it `stdin`, and
/// returns its standard output. Fails with the command's standard error
/// when it exits unsuccessfully.
pub(crate) async fn exec(
    netns: &str,
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> anyhow::Result<String> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, program])
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting `ip netns exec {netns} {program}`"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .await
            .with_context(|| format!("writing to {program} in {netns}"))?;
        // Dropping the pipe closes it, so the program sees end of input.
    }
    let output = child
        .wait_with_output()
        .await
        .with_context(|| format!("waiting for {program} in {netns}"))?;
    if !output.status.success() {
        bail!(
            "`{program} {}` in netns {netns} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A network namespace for tests, deleted when dropped (also on panic).
#[cfg(test)]
pub(crate) struct TempNetns(pub(crate) String);

#[cfg(test)]
impl TempNetns {
    /// Creates `mclabkp-<pid>-<tag>`.
    pub(crate) fn new(tag: &str) -> anyhow::Result<Self> {
        let name = format!("mclabkp-{}-{tag}", std::process::id());
        let status = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .context("running ip")?;
        if !status.success() {
            bail!("`ip netns add {name}` failed ({status}); tests need root and iproute2");
        }
        Ok(Self(name))
    }
}

#[cfg(test)]
impl Drop for TempNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}
