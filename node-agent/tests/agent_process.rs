//! The real binary: `run` programs the node and undoes it on SIGTERM.
//! Needs root and nftables.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::Topology;

/// Kills the agent if the test fails before it stops on its own.
struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn run_programs_the_node_and_sigterm_restores_it_exactly() {
    let topo = Topology::new();
    let before = topo.node.snapshot();
    let child = Command::new("ip")
        .args(["netns", "exec", topo.node.name()])
        .args([
            env!("CARGO_BIN_EXE_mc-node-agent"),
            "run",
            "--static-only",
            "--mirror",
            "10.96.0.10:8080",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("starting mc-node-agent run");
    let mut agent = Agent(child);

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let table = Command::new("ip")
            .args([
                "netns",
                "exec",
                topo.node.name(),
                "nft",
                "list",
                "table",
                "inet",
                "mc",
            ])
            .output()
            .expect("running nft");
        if String::from_utf8_lossy(&table.stdout).contains("10.96.0.10 . 8080") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent never programmed the node"
        );
        assert!(
            matches!(agent.0.try_wait(), Ok(None)),
            "the agent exited early"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let rules = topo.node.exec(&["ip", "rule"]);
    assert!(rules.contains("lookup 4140 proto 109"), "{rules}");

    // ip netns exec execs the agent in place: its pid is the agent's.
    let pid = Pid::from_raw(i32::try_from(agent.0.id()).expect("pid fits"));
    kill(pid, Signal::SIGTERM).expect("sending SIGTERM");
    let status = agent.0.wait().expect("waiting for the agent");
    assert!(status.success(), "agent exit status {status}");
    assert_eq!(topo.node.snapshot(), before);
}
