//! mc's nftables table: rendering and atomic replacement.
//!
//! The table is rendered as an `nft -f` script and applied by the `nft`
//! binary. Why a script rather than the `nftables` crate's JSON: both end up
//! in the same `nft` binary (the crate only serialises JSON for it), the
//! script is exactly what an operator reads in `nft list ruleset`, and it adds
//! no dependency. The script starts with `add table` + `delete table` and then
//! declares the whole table, and `nft -f` sends all of it to the kernel as one
//! netlink batch: the kernel commits it as a single transaction (one ruleset
//! generation), so packets see either the old table or the new one, never a
//! partial state, and whatever was in the table before (stale elements,
//! chains from an older version) is gone.
//!
//! Layout, for each mirrored (ClusterIP, port) in the set `mirrors_v4`:
//! * `prerouting_notrack` (prerouting, raw): `notrack`, so that kube-proxy
//!   (which rejects NEW connections to Services without endpoints, and NATs
//!   tracked ones) never sees the flow: untracked packets skip conntrack-gated
//!   rules and NAT entirely.
//! * `output_notrack` (output, raw): the same for host-network clients, and
//!   for the agent's replies (source in the set).
//! * `prerouting_tproxy` (prerouting, mangle): set mc's mark bits, then
//!   TPROXY to the listener. Established packets find their accepted socket
//!   through the same rule. With no listener the packet is still marked, so it
//!   is delivered locally, never forwarded blindly.
//! * `input_refuse` (input, mangle): a mirror packet that reaches input
//!   without the agent's transparent socket (no listener) is answered with a
//!   TCP reset, so the client is refused at once. (The kernel's own reset
//!   would be dropped: its source, the ClusterIP, is not a local address.)
//!   Reject runs in input rather than prerouting because prerouting reject
//!   needs kernel 5.9+.
//! * `output_reroute` (output, type route, mangle): mark host-network packets
//!   so the policy rule reroutes them to `lo`, where they re-enter prerouting
//!   and are TPROXYed like pod traffic.
//!
//! All hooks run at priorities (raw -300, mangle -150) before kube-proxy's
//! (dstnat -100, filter -110 or 0).

use std::process::Stdio;

use anyhow::{Context, Result, bail};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::config::KernelConfig;
use super::mirror_set::MirrorSet;

/// Family of mc's nftables table; `inet` so IPv6 can join the same table.
pub const TABLE_FAMILY: &str = "inet";
/// Name of the one nftables table mc owns.
pub const TABLE_NAME: &str = "mc";
/// Name of the set of mirrored IPv4 (address, port) pairs.
pub const SET_V4: &str = "mirrors_v4";
/// The nft binary, looked up in `PATH`.
const NFT_BINARY: &str = "nft";

/// Renders the script that atomically replaces mc's table with one that
/// intercepts exactly `mirrors`.
pub fn render(config: &KernelConfig, mirrors: &MirrorSet) -> String {
    let table = format!("{TABLE_FAMILY} {TABLE_NAME}");
    let matches_dst = format!("ip daddr . tcp dport @{SET_V4}");
    let matches_src = format!("ip saddr . tcp sport @{SET_V4}");
    let set_mark = format!(
        "meta mark set meta mark & {:#010x} | {:#010x}",
        !config.fwmark_mask, config.fwmark
    );
    let listen = config.listen;
    let elements = if mirrors.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = mirrors
            .iter()
            .map(|addr| format!("{} . {}", addr.ip(), addr.port()))
            .collect();
        format!("\t\telements = {{ {} }}\n", list.join(", "))
    };
    format!(
        "add table {table}\n\
         delete table {table}\n\
         table {table} {{\n\
         \tset {SET_V4} {{\n\
         \t\ttype ipv4_addr . inet_service\n\
         {elements}\
         \t}}\n\
         \tchain prerouting_notrack {{\n\
         \t\ttype filter hook prerouting priority raw; policy accept;\n\
         \t\t{matches_dst} notrack\n\
         \t}}\n\
         \tchain output_notrack {{\n\
         \t\ttype filter hook output priority raw; policy accept;\n\
         \t\t{matches_dst} notrack\n\
         \t\t{matches_src} notrack\n\
         \t}}\n\
         \tchain prerouting_tproxy {{\n\
         \t\ttype filter hook prerouting priority mangle; policy accept;\n\
         \t\t{matches_dst} {set_mark} tproxy ip to {listen}\n\
         \t}}\n\
         \tchain input_refuse {{\n\
         \t\ttype filter hook input priority mangle; policy accept;\n\
         \t\t{matches_dst} socket transparent 1 accept\n\
         \t\t{matches_dst} reject with tcp reset\n\
         \t}}\n\
         \tchain output_reroute {{\n\
         \t\ttype route hook output priority mangle; policy accept;\n\
         \t\t{matches_dst} {set_mark}\n\
         \t}}\n\
         }}\n"
    )
}

/// Script that removes mc's table if present and does nothing otherwise.
pub fn render_removal() -> String {
    format!("add table {TABLE_FAMILY} {TABLE_NAME}\ndelete table {TABLE_FAMILY} {TABLE_NAME}\n")
}

/// Applies `script` with `nft -f -` as one kernel transaction.
pub async fn run_script(script: &str) -> Result<()> {
    let mut child = Command::new(NFT_BINARY)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting `{NFT_BINARY} -f -` (is nftables installed?)"))?;
    let mut stdin = child
        .stdin
        .take()
        .context("nft child process has no stdin pipe")?;
    stdin
        .write_all(script.as_bytes())
        .await
        .context("writing the ruleset to nft")?;
    drop(stdin);
    let output = child
        .wait_with_output()
        .await
        .context("waiting for nft to apply the ruleset")?;
    if !output.status.success() {
        bail!(
            "nft rejected the ruleset ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use super::*;

    #[test]
    fn renders_one_element_per_port_and_replaces_the_table() {
        let mirrors: MirrorSet = [
            SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 10), 8080),
            SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 10), 9090),
        ]
        .into_iter()
        .collect();
        let script = render(&KernelConfig::default(), &mirrors);
        let mut lines = script.lines();
        assert_eq!(lines.next(), Some("add table inet mc"));
        assert_eq!(lines.next(), Some("delete table inet mc"));
        assert!(script.contains("elements = { 10.96.0.10 . 8080, 10.96.0.10 . 9090 }"));
        assert!(script.contains(
            "meta mark set meta mark & 0xff7fffff | 0x00800000 tproxy ip to 127.0.0.1:4140"
        ));
        assert_eq!(script.matches("table inet mc {").count(), 1);
    }

    #[test]
    fn empty_set_has_no_elements_clause() {
        let script = render(&KernelConfig::default(), &MirrorSet::new());
        assert!(!script.contains("elements"));
        assert!(script.contains("type ipv4_addr . inet_service"));
    }
}
