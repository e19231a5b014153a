//! The data path end to end, in the lab, with the real binaries: a west pod
//! calls the ClusterIP of `backend-east` and gets east's answer, through the
//! node agent's interception, the mTLS tunnel and east's gateway. Mirrors
//! are created directly through the API (the service mirror is tested on its
//! own). Needs root, nftables and the built binaries (`cargo build`).

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use mc_e2e::caller::{client_config, open_stream, west_source};
use mc_e2e::eventually;
use mc_e2e::mesh::{Mesh, east_service, node_network_state};
use mc_identity::{SpiffeId, TrustAnchor};
use mc_tunnel::Status;

const CLIENT: &str = "west/default/client";

async fn mesh_with_backend(backends: usize) -> Result<(Mesh, String)> {
    let mesh = Mesh::start().await?;
    let ip = mesh.export_echo_backend(backends).await?;
    mesh.lab.run_pod(
        CLIENT,
        "app=client",
        Some("west-node-0"),
        None,
        &["sleep", "3600"],
    )?;
    Ok((mesh, ip))
}

/// An HTTP GET through the mesh that must answer from east.
async fn http_from_east(mesh: &Mesh, pod: &str, addr: &str) -> Result<String> {
    eventually(Duration::from_secs(15), || async {
        let answer = mesh.lab.http_from(pod, addr)?;
        if answer.contains("cluster=east") {
            Ok(answer)
        } else {
            bail!("unexpected answer: {answer}")
        }
    })
    .await
}

fn pod_of(answer: &str) -> Option<String> {
    answer
        .split_whitespace()
        .find_map(|w| w.strip_prefix("pod="))
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_west_pod_reaches_east_backends_through_agent_tunnel_and_gateway() -> Result<()> {
    let (mesh, ip) = mesh_with_backend(3).await?;
    let addr = format!("{ip}:8080");

    // By ClusterIP, then by name through the lab's DNS.
    http_from_east(&mesh, CLIENT, &addr).await?;
    let by_name = http_from_east(&mesh, CLIENT, "backend-east:8080").await?;
    assert!(by_name.contains("pod=backend-"), "{by_name}");

    // Every backend pod gets traffic.
    let mut seen = BTreeSet::new();
    for _ in 0..40 {
        let answer = mesh.lab.http_from(CLIENT, &addr)?;
        seen.extend(pod_of(&answer));
        if seen.len() == 3 {
            break;
        }
    }
    assert_eq!(seen.len(), 3, "only {seen:?} answered");

    // A host-network process on a west node (the agent pod's netns is the node's).
    let host = http_from_east(&mesh, "west/mc-system/mc-node-agent-west-node-1", &addr).await?;
    assert!(host.contains("cluster=east"), "{host}");

    // Half-close: the client sends, closes its side, and still gets the echo.
    let echoed = mesh
        .lab
        .tcp_from(CLIENT, &format!("{ip}:9000"), "ping through the mesh")?;
    assert_eq!(echoed, "ping through the mesh");

    // 100 MB each way, byte-identical (the bulk client checks every byte).
    let out = mesh.lab.exec(
        CLIENT,
        &[
            "mc-lab",
            "bulk",
            &format!("{ip}:9000"),
            "--bytes",
            "104857600",
        ],
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bulk failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("received=104857600"), "{text}");

    // A server-speaks-first protocol.
    mesh.lab.run_pod(
        "east/default/greeter-0",
        "app=greeter",
        None,
        Some(7000),
        &[
            "mc-lab",
            "echo",
            "--http-port",
            "0",
            "--tcp-port",
            "7000",
            "--banner",
            "hello from east",
        ],
    )?;
    east_service(&mesh.east, "greeter", true, &[("banner", 7000)]).await?;
    let greeter = mesh
        .mirror("default", "greeter", &[("banner", 7000)])
        .await?;
    let banner = eventually(Duration::from_secs(10), || async {
        let answer = mesh.lab.tcp_from(CLIENT, &format!("{greeter}:7000"), "")?;
        if answer.starts_with("hello from east") {
            Ok(answer)
        } else {
            bail!("got {answer:?}")
        }
    })
    .await?;
    assert_eq!(banner, "hello from east\n");
    Ok(())
}

/// A refused connection must reach the client as a closed connection, fast.
fn assert_refused_promptly(mesh: &Mesh, addr: &str) {
    let started = Instant::now();
    let result = mesh
        .lab
        .tcp_from(CLIENT, addr, "GET / HTTP/1.0\\r\\n\\r\\n");
    let elapsed = started.elapsed();
    match result {
        Err(_) => {}
        Ok(answer) => assert!(answer.is_empty(), "{addr} answered {answer:?}"),
    }
    assert!(
        elapsed < Duration::from_millis(1500),
        "{addr} took {elapsed:?} to be refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_not_allowed_is_refused_promptly() -> Result<()> {
    let (mesh, ip) = mesh_with_backend(1).await?;
    http_from_east(&mesh, CLIENT, &format!("{ip}:8080")).await?;

    // A Service east does not export, even with a mirror pointing at it.
    mesh.lab
        .run_echo("east/default/private-0", "app=private", None)?;
    east_service(&mesh.east, "private", false, &[("http", 8080)]).await?;
    let private = mesh.mirror("default", "private", &[("http", 8080)]).await?;
    assert_refused_promptly(&mesh, &format!("{private}:8080"));

    // A port the exported Service does not declare.
    let wrong_port = mesh
        .mirror_named(
            "backend-more-east",
            "default",
            "backend",
            &[("extra", 8081)],
        )
        .await?;
    assert_refused_promptly(&mesh, &format!("{wrong_port}:8081"));

    // Callers that cannot prove themselves never get a stream.
    let gateway = format!("{}:{}", mesh.gateway_ip, mc_api::GATEWAY_TUNNEL_PORT);
    let agent_identity = mesh.west_agent_identity()?;
    let gateway_id = SpiffeId::parse(&mesh.gateway_identity())?;
    let no_cert = client_config(&agent_identity, &gateway_id, None)?;
    assert_gateway_refuses(&gateway, no_cert).await;
    // Another anchor's issuer for west: right names, wrong root.
    let stranger = TrustAnchor::generate(mc_e2e::mesh::TRUST_DOMAIN)?
        .issue_cluster_issuer("west", Duration::from_secs(3600))?
        .issue_leaf(
            &SpiffeId::system(mc_e2e::mesh::TRUST_DOMAIN, "mc-node-agent")?,
            Duration::from_secs(3600),
        )?;
    let foreign = client_config(
        &agent_identity,
        &gateway_id,
        Some((&stranger.cert_pem, &stranger.key_pem)),
    )?;
    assert_gateway_refuses(&gateway, foreign).await;
    // The same client with the real certificate is let through: the checks
    // above failed for the certificate, not for the test's plumbing.
    let own = mesh.issue("west", "mc-node-agent", Duration::from_secs(3600))?;
    let good = client_config(
        &agent_identity,
        &gateway_id,
        Some((&own.cert_pem, &own.key_pem)),
    )?;
    assert_eq!(
        open_stream(&gateway, good, west_source()).await?,
        Status::Ok
    );

    // A gateway that does not carry the identity the Link names.
    mesh.apply_link("east", "spiffe://mc.local/ns/mc-system/sa/impostor")
        .await?;
    eventually(Duration::from_secs(10), || async {
        match mesh.lab.http_from(CLIENT, &format!("{ip}:8080")) {
            Err(_) => Ok(()),
            Ok(answer) if answer.is_empty() => Ok(()),
            Ok(answer) => bail!("still answered: {answer}"),
        }
    })
    .await?;
    assert_refused_promptly(&mesh, &format!("{ip}:8080"));
    mesh.apply_link("east", &mesh.gateway_identity()).await?;
    http_from_east(&mesh, CLIENT, &format!("{ip}:8080")).await?;
    Ok(())
}

async fn assert_gateway_refuses(gateway: &str, config: Arc<rustls::ClientConfig>) {
    let started = Instant::now();
    let answer = open_stream(gateway, config, west_source()).await;
    assert!(
        !matches!(answer, Ok(Status::Ok)),
        "the gateway accepted a caller it must refuse"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refusal took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_restart_reconciles_and_cleanup_restores_the_node() -> Result<()> {
    let (mesh, ip) = mesh_with_backend(1).await?;
    http_from_east(&mesh, CLIENT, &format!("{ip}:8080")).await?;

    // A west-local Service, reached by a long transfer while the agent restarts.
    mesh.lab
        .run_echo("west/default/local-0", "app=local", Some("west-node-1"))?;
    east_service(&mesh.west, "local", false, &[("tcp", 9000)]).await?;
    // kube-proxy rejects the Service until its EndpointSlice arrives.
    eventually(Duration::from_secs(10), || async {
        mesh.lab.tcp_from(CLIENT, "local.default:9000", "ready?")
    })
    .await?;
    let long = Command::new(mc_e2e::mc_lab_bin()?)
        .args([
            "--lab",
            &mesh.lab.name,
            "exec",
            CLIENT,
            "--",
            "mc-lab",
            "bulk",
            "local.default:9000",
        ])
        .args(["--bytes", "2000000000", "--timeout", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;

    mesh.stop_agent("west-node-0").await?;
    mesh.start_agent("west-node-0").await?;
    let state = node_network_state(&mesh.lab.name, "west", 0)?;
    assert_eq!(
        state.matches("lookup 4140").count(),
        1,
        "one policy rule, no duplicate:\n{state}"
    );
    assert_eq!(
        state.matches("tproxy ip to").count(),
        1,
        "one tproxy rule, no duplicate:\n{state}"
    );
    http_from_east(&mesh, CLIENT, &format!("{ip}:8080")).await?;

    let out = tokio::task::spawn_blocking(move || long.wait_with_output()).await??;
    assert!(
        out.status.success(),
        "the transfer to a local Service broke during the agent restart: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Cleanup (on SIGTERM, and again by `mc-node-agent cleanup`) leaves the
    // node exactly as it was before the agent started.
    mesh.stop_agent("west-node-1").await?;
    let status = Command::new("ip")
        .args(["netns", "exec", &format!("mc-{}-west-n1", mesh.lab.name)])
        .args([
            mc_e2e::mc_lab_bin()?
                .with_file_name("mc-node-agent")
                .as_os_str(),
            "cleanup".as_ref(),
        ])
        .status()?;
    assert!(status.success());
    let cleaned = node_network_state(&mesh.lab.name, "west", 1)?;
    assert_eq!(
        cleaned, mesh.before_agents[1],
        "cleanup left the node different from before the agent"
    );
    Ok(())
}
