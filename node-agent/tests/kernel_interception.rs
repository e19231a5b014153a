//! Kernel interception, for real: network namespaces, nftables, TPROXY and
//! policy routing. Needs root and nftables (`apt-get install -y nftables`).

mod support;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use mc_node_agent::intercept::{Intercepted, TransparentListener};
use mc_node_agent::kernel::{DEFAULT_LISTEN, Interceptor, KernelConfig, MirrorSet};
use support::{NODE_IP, NODE_POD_GW, POD_IP, Topology, in_netns};
use tokio::time::timeout;

const MIRROR: &str = "10.96.0.10:8080";
const SAME_IP_OTHER_PORT: &str = "10.96.0.10:9090";
const OTHER_SERVICE: &str = "10.96.0.11:8080";

fn addr(text: &str) -> SocketAddrV4 {
    text.parse().expect("test addresses are valid")
}

fn mirrors(addrs: &[&str]) -> MirrorSet {
    addrs.iter().map(|a| addr(a)).collect()
}

fn connect(dst: SocketAddrV4) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&SocketAddr::V4(dst), Duration::from_secs(3))?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    Ok(stream)
}

/// Connects from namespace `ns`, sends `ping`, expects `pong` back.
fn ping_from(ns: &str, dst: SocketAddrV4) -> io::Result<TcpStream> {
    in_netns(ns, || {
        let mut stream = connect(dst)?;
        stream.write_all(b"ping")?;
        let mut reply = [0u8; 4];
        stream.read_exact(&mut reply)?;
        if &reply != b"pong" {
            return Err(io::Error::other(format!("unexpected reply {reply:?}")));
        }
        Ok(stream)
    })
}

/// Accepts one intercepted connection and answers its `ping` with `pong`.
async fn serve_one(listener: &TransparentListener) -> Intercepted {
    let mut conn = timeout(Duration::from_secs(5), listener.accept())
        .await
        .expect("a connection is intercepted within 5 s")
        .expect("accept succeeds");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut request = [0u8; 4];
    conn.stream
        .read_exact(&mut request)
        .await
        .expect("read ping");
    assert_eq!(&request, b"ping");
    conn.stream.write_all(b"pong").await.expect("write pong");
    conn
}

async fn nothing_intercepted(listener: &TransparentListener) {
    let next = timeout(Duration::from_millis(300), listener.accept()).await;
    assert!(next.is_err(), "unexpected interception: {next:?}");
}

fn assert_refused(result: io::Result<TcpStream>, what: &str) {
    match result {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
        other => panic!("{what}: expected connection refused, got {other:?}"),
    }
}

async fn apply(config: &KernelConfig, set: &MirrorSet) {
    Interceptor::new(config.clone())
        .expect("valid config")
        .apply(set)
        .await
        .expect("apply succeeds");
}

#[test]
fn pod_connection_to_a_mirror_is_intercepted_despite_kube_proxy_reject() {
    let topo = Topology::new();
    let pod = topo.pod.name().to_string();
    // Control: without mc, the kube-proxy stand-in refuses the Service.
    assert_refused(ping_from(&pod, addr(MIRROR)), "mirror before apply");

    topo.node.block_on(async {
        let listener = TransparentListener::bind(DEFAULT_LISTEN).expect("bind");
        apply(&KernelConfig::default(), &mirrors(&[MIRROR])).await;
        let client = tokio::task::spawn_blocking(move || ping_from(&pod, addr(MIRROR)));
        let conn = serve_one(&listener).await;
        assert_eq!(conn.original_dst, SocketAddr::V4(addr(MIRROR)));
        assert_eq!(conn.peer.ip(), POD_IP.parse::<IpAddr>().expect("ip"));
        client
            .await
            .expect("client thread")
            .expect("the pod gets the agent's reply");
    });
}

#[test]
fn host_network_connection_to_a_mirror_is_intercepted() {
    let topo = Topology::new();
    let node = topo.node.name().to_string();
    assert_refused(ping_from(&node, addr(MIRROR)), "mirror before apply");

    topo.node.block_on(async {
        let listener = TransparentListener::bind(DEFAULT_LISTEN).expect("bind");
        apply(&KernelConfig::default(), &mirrors(&[MIRROR])).await;
        let client = tokio::task::spawn_blocking(move || ping_from(&node, addr(MIRROR)));
        let conn = serve_one(&listener).await;
        assert_eq!(conn.original_dst, SocketAddr::V4(addr(MIRROR)));
        assert_eq!(conn.peer.ip(), NODE_IP.parse::<IpAddr>().expect("ip"));
        client
            .await
            .expect("client thread")
            .expect("the host process gets the agent's reply");
    });
}

#[test]
fn destinations_outside_the_set_are_not_intercepted() {
    let topo = Topology::new();
    let (pod, node) = (topo.pod.name().to_string(), topo.node.name().to_string());
    // An ordinary server on the node, reachable from the pod.
    let plain_addr = SocketAddrV4::new(NODE_POD_GW.parse().expect("ip"), 7000);
    let plain = topo
        .node
        .run(|| TcpListener::bind(plain_addr))
        .expect("plain bind");

    topo.node.block_on(async {
        let listener = TransparentListener::bind(DEFAULT_LISTEN).expect("bind");
        apply(&KernelConfig::default(), &mirrors(&[MIRROR])).await;

        let to_plain = tokio::task::spawn_blocking({
            let pod = pod.clone();
            move || in_netns(&pod, || connect(plain_addr))
        });
        let (_server_side, from) = plain.accept().expect("plain server accepts");
        assert_eq!(from.ip(), POD_IP.parse::<IpAddr>().expect("ip"));
        to_plain
            .await
            .expect("client thread")
            .expect("plain connect");

        for dst in [SAME_IP_OTHER_PORT, OTHER_SERVICE] {
            let (pod, node) = (pod.clone(), node.clone());
            let (from_pod, from_host) = tokio::task::spawn_blocking(move || {
                (ping_from(&pod, addr(dst)), ping_from(&node, addr(dst)))
            })
            .await
            .expect("client thread");
            // Still kube-proxy's business: refused by its reject rule.
            assert_refused(from_pod, dst);
            assert_refused(from_host, dst);
        }
        nothing_intercepted(&listener).await;
    });
}

#[test]
fn a_mirror_without_a_listener_is_refused_at_once() {
    let topo = Topology::new();
    topo.node
        .block_on(async { apply(&KernelConfig::default(), &mirrors(&[MIRROR])).await });
    for client in [topo.pod.name(), topo.node.name()] {
        let started = std::time::Instant::now();
        assert_refused(ping_from(client, addr(MIRROR)), client);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "refusal must be immediate"
        );
    }
}

/// `nft monitor` in the node, read line by line on a thread.
struct Monitor {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Monitor {
    fn start(node: &str) -> Self {
        let mut child = Command::new("ip")
            .args(["netns", "exec", node, "nft", "monitor"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting nft monitor");
        let stdout = child.stdout.take().expect("monitor stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut monitor = Self { child, lines };
        // Wait until the monitor is subscribed: make a probe transaction
        // until it shows up, then drain.
        let mut seen = false;
        for _ in 0..50 {
            support::in_netns(node, || {
                support::apply_nft("add table inet mc_probe\ndelete table inet mc_probe\n")
            });
            if monitor
                .lines
                .recv_timeout(Duration::from_millis(100))
                .is_ok()
            {
                seen = true;
                break;
            }
        }
        assert!(seen, "nft monitor never reported the probe transaction");
        monitor.drain(Duration::from_millis(300));
        monitor
    }

    fn drain(&mut self, quiet: Duration) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(quiet) {
            out.push(line);
        }
        out
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mc_state(topo: &Topology) -> String {
    [
        topo.node.exec(&["nft", "list", "table", "inet", "mc"]),
        topo.node.exec(&["ip", "rule"]),
        topo.node.exec(&["ip", "route", "show", "table", "all"]),
    ]
    .join("\n----\n")
}

#[test]
fn reapply_is_idempotent_and_a_set_change_is_one_transaction() {
    let topo = Topology::new();
    let pod = topo.pod.name().to_string();
    let node = topo.node.name().to_string();
    let plain_addr = SocketAddrV4::new(NODE_POD_GW.parse().expect("ip"), 7000);
    let plain = topo
        .node
        .run(|| TcpListener::bind(plain_addr))
        .expect("plain bind");
    let config = KernelConfig::default();
    let before = mirrors(&[MIRROR, OTHER_SERVICE]);
    let after = mirrors(&[MIRROR, "10.96.0.12:80"]);

    topo.node.block_on(async {
        let listener = TransparentListener::bind(config.listen).expect("bind");
        apply(&config, &before).await;
        let first = mc_state(&topo);
        apply(&config, &before).await;
        assert_eq!(mc_state(&topo), first, "second apply changed the state");
        let rules = topo.node.exec(&["ip", "rule"]);
        assert_eq!(rules.matches("lookup 4140").count(), 1, "{rules}");
        let routes = topo.node.exec(&["ip", "route", "show", "table", "4140"]);
        assert_eq!(routes.lines().count(), 1, "{routes}");

        // Established flows: one through the agent, one to an ordinary server.
        let mirrored = tokio::task::spawn_blocking({
            let pod = pod.clone();
            move || ping_from(&pod, addr(MIRROR))
        });
        let mut agent_side = serve_one(&listener).await;
        let mut mirrored = mirrored.await.expect("thread").expect("mirrored flow");
        let mut plain_client = tokio::task::spawn_blocking({
            let pod = pod.clone();
            move || in_netns(&pod, || connect(plain_addr))
        })
        .await
        .expect("thread")
        .expect("plain connect");
        let (mut plain_server, _) = plain.accept().expect("plain accept");

        let mut monitor = tokio::task::spawn_blocking({
            let node = node.clone();
            move || Monitor::start(&node)
        })
        .await
        .expect("monitor thread");
        apply(&config, &after).await;
        let events = tokio::task::spawn_blocking(move || monitor.drain(Duration::from_millis(500)))
            .await
            .expect("monitor thread");
        let generations = events
            .iter()
            .filter(|l| l.starts_with("# new generation"))
            .count();
        assert_eq!(
            generations, 1,
            "one apply must be one transaction: {events:#?}"
        );
        assert!(
            events.iter().any(|l| l.contains("10.96.0.12 . 80")),
            "the new element is in the transaction: {events:#?}"
        );

        // Both established flows still carry data.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        mirrored.write_all(b"more").expect("write on mirrored flow");
        let mut buf = [0u8; 4];
        agent_side
            .stream
            .read_exact(&mut buf)
            .await
            .expect("agent reads");
        assert_eq!(&buf, b"more");
        agent_side
            .stream
            .write_all(b"back")
            .await
            .expect("agent writes");
        mirrored.read_exact(&mut buf).expect("client reads");
        assert_eq!(&buf, b"back");
        plain_client.write_all(b"more").expect("plain write");
        plain_server.read_exact(&mut buf).expect("plain read");
        assert_eq!(&buf, b"more");

        // The new element is intercepted, the removed one is kube-proxy's again.
        let added = tokio::task::spawn_blocking({
            let pod = pod.clone();
            move || ping_from(&pod, addr("10.96.0.12:80"))
        });
        let conn = serve_one(&listener).await;
        assert_eq!(conn.original_dst, SocketAddr::V4(addr("10.96.0.12:80")));
        added
            .await
            .expect("thread")
            .expect("added mirror reachable");
        let removed = tokio::task::spawn_blocking(move || ping_from(&pod, addr(OTHER_SERVICE)))
            .await
            .expect("thread");
        assert_refused(removed, "removed mirror");
    });
}

#[test]
fn restart_with_other_settings_reconciles_stale_and_duplicate_entries() {
    let topo = Topology::new();
    let old = KernelConfig {
        fwmark: 0x100,
        fwmark_mask: 0x100,
        route_table: 4150,
        rule_priority: 95,
        ..KernelConfig::default()
    };
    let new = KernelConfig::default();
    topo.node
        .block_on(async { apply(&old, &mirrors(&[MIRROR])).await });
    // A duplicate of mc's rule, as a crashed older agent might leave.
    topo.node.exec(&[
        "ip",
        "rule",
        "add",
        "fwmark",
        "0x800000/0x800000",
        "lookup",
        "4140",
        "priority",
        "90",
        "proto",
        "109",
    ]);
    topo.node.exec(&[
        "ip",
        "rule",
        "add",
        "fwmark",
        "0x800000/0x800000",
        "lookup",
        "4140",
        "priority",
        "91",
        "proto",
        "109",
    ]);
    topo.node
        .block_on(async { apply(&new, &mirrors(&[MIRROR])).await });

    let rules = topo.node.exec(&["ip", "rule"]);
    let mc_rules: Vec<&str> = rules.lines().filter(|l| l.contains("proto 109")).collect();
    assert_eq!(
        mc_rules,
        vec!["90:\tfrom all fwmark 0x800000/0x800000 lookup 4140 proto 109"],
        "{rules}"
    );
    let routes = topo.node.exec(&["ip", "route", "show", "table", "all"]);
    let mc_routes: Vec<&str> = routes.lines().filter(|l| l.contains("proto 109")).collect();
    assert_eq!(mc_routes.len(), 1, "{routes}");
    assert!(mc_routes[0].contains("table 4140"), "{routes}");
    let table = topo.node.exec(&["nft", "list", "table", "inet", "mc"]);
    assert!(
        table.contains("0x00800000") && !table.contains("0x00000100"),
        "{table}"
    );

    // And the result works.
    let pod = topo.pod.name().to_string();
    topo.node.block_on(async {
        let listener = TransparentListener::bind(new.listen).expect("bind");
        let client = tokio::task::spawn_blocking(move || ping_from(&pod, addr(MIRROR)));
        serve_one(&listener).await;
        client
            .await
            .expect("thread")
            .expect("intercepted after reconcile");
    });
}

#[test]
fn cleanup_leaves_ruleset_and_routing_exactly_as_before() {
    let topo = Topology::new();
    // Foreign entries that look like mc's but are not tagged as mc's.
    topo.node.exec(&[
        "ip", "rule", "add", "fwmark", "0x1", "lookup", "4141", "priority", "90",
    ]);
    topo.node.exec(&[
        "ip",
        "route",
        "add",
        "local",
        "0.0.0.0/0",
        "dev",
        "lo",
        "table",
        "4141",
    ]);
    let before = topo.node.snapshot();

    let other = KernelConfig {
        route_table: 4160,
        rule_priority: 80,
        ..KernelConfig::default()
    };
    topo.node.block_on(async {
        apply(&KernelConfig::default(), &mirrors(&[MIRROR, OTHER_SERVICE])).await;
        apply(&other, &mirrors(&[MIRROR])).await;
    });
    assert_ne!(topo.node.snapshot(), before, "apply changed nothing?");

    // The CLI, as an operator or the uninstall hook runs it.
    let agent = env!("CARGO_BIN_EXE_mc-node-agent");
    topo.node.exec(&[agent, "cleanup"]);
    assert_eq!(topo.node.snapshot(), before);
    // Idempotent: nothing left to remove is not an error.
    topo.node.exec(&[agent, "cleanup"]);
    assert_eq!(topo.node.snapshot(), before);
}
