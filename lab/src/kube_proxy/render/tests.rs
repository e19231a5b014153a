use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::time::Duration;

use super::super::model::Protocol;
use super::super::netns::TempNetns;
use super::*;

fn config() -> ProxyConfig {
    ProxyConfig {
        cluster_cidr: "10.10.0.0/16".parse().expect("cidr"),
        service_cidr: "10.100.0.0/16".parse().expect("cidr"),
    }
}

fn port(name: &str, cluster_ip: [u8; 4], port: u16, endpoints: &[&str]) -> ServicePortRules {
    ServicePortRules {
        name: name.into(),
        protocol: Protocol::Tcp,
        cluster_ip: Some(Ipv4Addr::from(cluster_ip)),
        port,
        node_port: None,
        external_ips: Vec::new(),
        endpoints: endpoints
            .iter()
            .map(|e| e.parse().expect("endpoint"))
            .collect(),
    }
}

fn sample() -> Vec<ServicePortRules> {
    let mut web = port(
        "shop/web/tcp/http",
        [10, 100, 0, 20],
        80,
        &["10.10.1.5:8080", "10.10.2.5:8080"],
    );
    web.node_port = Some(30080);
    web.external_ips = vec![Ipv4Addr::new(198, 18, 0, 160)];
    let mut dns = port(
        "kube-system/kube-dns/udp/dns",
        [10, 100, 0, 10],
        53,
        &["198.18.0.2:53"],
    );
    dns.protocol = Protocol::Udp;
    let mut down = port("shop/down/tcp/", [10, 100, 0, 21], 81, &[]);
    down.node_port = Some(30081);
    vec![web, dns, down]
}

/// The text of the chain, set or map whose name starts with `name_prefix`.
fn chain<'a>(ruleset: &'a str, name_prefix: &str) -> &'a str {
    let start = ["chain", "map", "set"]
        .iter()
        .find_map(|kind| ruleset.find(&format!("\t{kind} {name_prefix}")))
        .unwrap_or_else(|| panic!("no chain or map {name_prefix}"));
    let rest = &ruleset[start..];
    &rest[..rest.find("\n\t}\n").unwrap_or(rest.len())]
}

#[test]
fn ruleset_replaces_the_whole_table_atomically() {
    let text = ruleset(&config(), &sample());
    assert!(text.starts_with(
        "add table ip lab-kube-proxy\ndelete table ip lab-kube-proxy\ntable ip lab-kube-proxy {"
    ));
    assert_eq!(
        text.matches("table ip").count(),
        3,
        "touches only its own table"
    );
}

#[test]
fn services_with_endpoints_dnat_to_a_random_endpoint() {
    let text = ruleset(&config(), &sample());
    let web_chain = chain_name("service", "shop/web/tcp/http");
    assert!(text.contains(&format!("10.100.0.20 . tcp . 80 : goto {web_chain}")));
    let body = chain(&text, &web_chain);
    assert!(body.contains(
        "ip daddr 10.100.0.20 tcp dport 80 ip saddr != 10.10.0.0/16 jump mark-for-masquerade"
    ));
    assert!(body.contains("numgen random mod 2 vmap { 0 : goto endpoint-"));
    let endpoint = chain_name("endpoint", "shop/web/tcp/http__10.10.2.5/8080");
    let endpoint_body = chain(&text, &endpoint);
    assert!(endpoint_body.contains("ip saddr 10.10.2.5 jump mark-for-masquerade"));
    assert!(endpoint_body.contains("meta l4proto tcp dnat to 10.10.2.5:8080"));
    assert!(text.contains("meta l4proto udp dnat to 198.18.0.2:53"));
}

#[test]
fn node_ports_and_load_balancer_addresses_are_masqueraded() {
    let text = ruleset(&config(), &sample());
    let external = chain_name("external", "shop/web/tcp/http");
    assert!(text.contains(&format!("tcp . 30080 : goto {external}")));
    assert!(text.contains(&format!("198.18.0.160 . tcp . 80 : goto {external}")));
    let body = chain(&text, &external);
    assert!(body.contains("jump mark-for-masquerade"));
    assert!(body.contains(&format!(
        "goto {}",
        chain_name("service", "shop/web/tcp/http")
    )));
    assert!(chain(&text, "masquerading").contains("masquerade fully-random"));
    assert!(chain(&text, "nat-postrouting").contains("jump masquerading"));
}

#[test]
fn services_without_endpoints_reject_new_connections() {
    let text = ruleset(&config(), &sample());
    let no_endpoints = chain(&text, "no-endpoint-services");
    assert!(no_endpoints.contains("10.100.0.21 . tcp . 81 : goto reject-chain"));
    assert!(chain(&text, "no-endpoint-nodeports").contains("tcp . 30081 : goto reject-chain"));
    assert!(!chain(&text, "service-ips").contains("10.100.0.21"));
    for hook in ["filter-input", "filter-forward", "filter-output"] {
        assert!(
            chain(&text, hook).contains("ct state new jump service-endpoints-check"),
            "{hook}"
        );
    }
    assert!(!text.contains(&chain_name("service", "shop/down/tcp/")));
}

#[test]
fn long_names_stay_within_the_nftables_limit_and_stay_distinct() {
    let long = "n".repeat(63);
    let a = chain_name(
        "endpoint",
        &format!("{long}/{long}/tcp/{long}__10.10.1.5/8080"),
    );
    let b = chain_name(
        "endpoint",
        &format!("{long}/{long}/tcp/{long}__10.10.1.6/8080"),
    );
    assert!(a.len() < 256);
    assert_ne!(a, b);
}

/// Loads the rendered table into a throwaway netns, twice (create, then
/// replace), and checks that the kernel accepted every chain.
#[test]
fn kernel_accepts_the_ruleset() -> anyhow::Result<()> {
    let ns = TempNetns::new("render")?;
    let text = ruleset(&config(), &sample());
    nft(&ns, &["-c", "-f", "-"], &text)?;
    nft(&ns, &["-f", "-"], &text)?;
    nft(&ns, &["-f", "-"], &ruleset(&config(), &sample()[..1]))?;
    let listed = nft(&ns, &["list", "table", "ip", TABLE], "")?;
    assert!(listed.contains(&chain_name("service", "shop/web/tcp/http")));
    assert!(!listed.contains(&chain_name(
        "endpoint",
        "kube-system/kube-dns/udp/dns__198.18.0.2/53"
    )));
    Ok(())
}

/// Real traffic through the loaded rules: a connection to a ClusterIP
/// reaches the endpoint; one to a Service without endpoints is refused.
#[test]
fn cluster_ip_connections_reach_an_endpoint_and_empty_services_refuse() -> anyhow::Result<()> {
    let ns = TempNetns::new("traffic")?;
    for args in [
        vec!["link", "set", "lo", "up"],
        vec![
            "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
        ],
        vec!["link", "set", "veth0", "up"],
        vec!["link", "set", "veth1", "up"],
        vec!["addr", "add", "10.10.1.5/24", "dev", "veth0"],
        vec!["route", "add", "10.100.0.0/16", "dev", "veth0"],
    ] {
        run("ip", &[&["-n", &ns.0][..], &args].concat(), "")?;
    }
    let services = vec![
        port(
            "shop/web/tcp/http",
            [10, 100, 0, 20],
            80,
            &["10.10.1.5:8080"],
        ),
        port("shop/down/tcp/", [10, 100, 0, 21], 81, &[]),
    ];
    nft(&ns, &["-f", "-"], &ruleset(&config(), &services))?;

    let netns_file = std::fs::File::open(format!("/run/netns/{}", ns.0))?;
    let outcome = std::thread::spawn(move || -> anyhow::Result<(String, ErrorKind)> {
        nix::sched::setns(&netns_file, nix::sched::CloneFlags::CLONE_NEWNET)?;
        let listener = TcpListener::bind("10.10.1.5:8080")?;
        let server = std::thread::spawn(move || -> std::io::Result<()> {
            let (mut conn, _) = listener.accept()?;
            conn.write_all(b"hello from the endpoint")
        });
        let timeout = Duration::from_secs(3);
        let mut client = TcpStream::connect_timeout(
            &SocketAddrV4::new(Ipv4Addr::new(10, 100, 0, 20), 80).into(),
            timeout,
        )?;
        client.set_read_timeout(Some(timeout))?;
        let mut reply = String::new();
        client.read_to_string(&mut reply)?;
        server
            .join()
            .map_err(|_| anyhow::anyhow!("server thread panicked"))??;
        let refused = TcpStream::connect_timeout(
            &SocketAddrV4::new(Ipv4Addr::new(10, 100, 0, 21), 81).into(),
            timeout,
        )
        .err()
        .map_or(ErrorKind::Other, |e| e.kind());
        Ok((reply, refused))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("test thread panicked"))??;
    assert_eq!(outcome.0, "hello from the endpoint");
    assert_eq!(outcome.1, ErrorKind::ConnectionRefused);
    Ok(())
}

fn nft(ns: &TempNetns, args: &[&str], stdin: &str) -> anyhow::Result<String> {
    run(
        "ip",
        &[&["netns", "exec", &ns.0, "nft"][..], args].concat(),
        stdin,
    )
}

fn run(program: &str, args: &[&str], stdin: &str) -> anyhow::Result<String> {
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .map(|mut pipe| pipe.write_all(stdin.as_bytes()))
        .transpose()?;
    let output = child.wait_with_output()?;
    anyhow::ensure!(
        output.status.success(),
        "{program} {args:?}: {}\n{stdin}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
