//! Throw-away network topologies for the kernel tests: a "node" and a "pod"
//! network namespace joined by a veth, removed again on drop (also when a
//! test panics). Needs root, iproute2 and nftables.

#![allow(dead_code)]

use std::fs::File;
use std::future::Future;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::sched::{CloneFlags, setns};

/// Pod address on the veth.
pub const POD_IP: &str = "10.244.0.2";
/// Node address on the pod's veth (the pod's gateway).
pub const NODE_POD_GW: &str = "10.244.0.1";
/// Node address on its uplink; source of host-network connections.
pub const NODE_IP: &str = "192.168.50.2";

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// Runs a command, panics with its stderr if it fails, returns its stdout.
pub fn sh(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot start {program} {args:?}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Fails the test early with a clear message when it cannot do its job.
pub fn require_root_and_tools() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "the kernel tests need root (network namespaces, nftables)"
    );
    for tool in ["ip", "nft"] {
        let found = Command::new(tool).arg("-V").output().is_ok();
        assert!(
            found,
            "`{tool}` is missing: apt-get install -y iproute2 nftables"
        );
    }
}

/// A named network namespace, deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    fn create(prefix: &str, role: &str) -> Self {
        let name = format!("{prefix}-{role}");
        sh("ip", &["netns", "add", &name]);
        Self { name }
    }

    /// The namespace's name (as in `ip netns`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` on a thread that has entered this namespace. Sockets created
    /// there belong to the namespace; processes started there inherit it.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.name, f)
    }

    /// Runs a future to completion on a current-thread runtime inside the
    /// namespace.
    pub fn block_on<F: Future + Send>(&self, future: F) -> F::Output
    where
        F::Output: Send,
    {
        self.run(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("building a tokio runtime")
                .block_on(future)
        })
    }

    /// Runs a command inside the namespace and returns its stdout.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(args);
        sh("ip", &full)
    }

    /// Everything the node's networking state consists of, as text: the
    /// nftables ruleset, the policy rules and every routing table, both
    /// families.
    pub fn snapshot(&self) -> String {
        [
            self.exec(&["nft", "list", "ruleset"]),
            self.exec(&["ip", "-4", "rule"]),
            self.exec(&["ip", "-6", "rule"]),
            self.exec(&["ip", "-4", "route", "show", "table", "all"]),
            self.exec(&["ip", "-6", "route", "show", "table", "all"]),
        ]
        .join("\n----\n")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs `f` on a scoped thread inside the named network namespace.
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{name}");
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            let file = File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
            setns(&file, CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("entering {path}: {e}"));
            f()
        });
        match thread.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// A node with one pod, and a kube-proxy-like table that rejects NEW
/// connections to every ClusterIP (Services without endpoints, as mirrors
/// are), in prerouting, input, forward and output.
pub struct Topology {
    /// The node (host network of the agent).
    pub node: Netns,
    /// A pod on that node, routed through it.
    pub pod: Netns,
}

/// The kube-proxy stand-in: same hooks and conntrack gating as kube-proxy's
/// nftables mode (`ct state new` ... `reject`), in its own table.
pub const KUBE_PROXY_LIKE: &str = "table ip kube-proxy-test {
	chain filter-input {
		type filter hook input priority -110; policy accept;
		ct state new ip daddr 10.96.0.0/12 reject
	}
	chain filter-forward {
		type filter hook forward priority -110; policy accept;
		ct state new ip daddr 10.96.0.0/12 reject
	}
	chain filter-output {
		type filter hook output priority -110; policy accept;
		ct state new ip daddr 10.96.0.0/12 reject
	}
	chain nat-prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr 10.96.0.0/12 counter
	}
}
";

impl Topology {
    /// Builds the namespaces, links and addresses (names are unique per
    /// process and per call).
    pub fn new() -> Self {
        require_root_and_tools();
        let prefix = format!(
            "mcna-{}-{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        );
        let node = Netns::create(&prefix, "node");
        let pod = Netns::create(&prefix, "pod");
        let (n, p) = (node.name(), pod.name());
        sh(
            "ip",
            &[
                "link", "add", "vpod", "netns", n, "type", "veth", "peer", "name", "eth0", "netns",
                p,
            ],
        );
        for (ns, dev, addr) in [(n, "vpod", "10.244.0.1/24"), (p, "eth0", "10.244.0.2/24")] {
            sh("ip", &["-n", ns, "link", "set", "lo", "up"]);
            sh("ip", &["-n", ns, "addr", "add", addr, "dev", dev]);
            sh("ip", &["-n", ns, "link", "set", dev, "up"]);
        }
        sh(
            "ip",
            &["-n", p, "route", "add", "default", "via", NODE_POD_GW],
        );
        // The node's uplink: the default route that ClusterIPs follow.
        sh(
            "ip",
            &[
                "-n",
                n,
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                "eth0-peer",
            ],
        );
        sh(
            "ip",
            &["-n", n, "addr", "add", "192.168.50.2/24", "dev", "eth0"],
        );
        sh("ip", &["-n", n, "link", "set", "eth0", "up"]);
        sh("ip", &["-n", n, "link", "set", "eth0-peer", "up"]);
        sh(
            "ip",
            &["-n", n, "route", "add", "default", "via", "192.168.50.1"],
        );
        node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        node.run(|| apply_nft(KUBE_PROXY_LIKE));
        Self { node, pod }
    }
}

/// Applies an nft script in the calling thread's namespace.
pub fn apply_nft(script: &str) {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("starting nft");
    child
        .stdin
        .take()
        .expect("nft stdin")
        .write_all(script.as_bytes())
        .expect("writing to nft");
    assert!(
        child.wait().expect("waiting for nft").success(),
        "nft failed on:\n{script}"
    );
}
