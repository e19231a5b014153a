//! The controller when things go wrong: the remote API goes down and comes
//! back, the link token is replaced and the old one revoked, instances
//! compete for leadership, gateways stop answering; and the binary starts
//! and stops cleanly.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SOON: Duration = Duration::from_secs(2);

async fn mirror(west: &Cluster, ns: &str, name: &str) -> Option<Service> {
    west.services(ns).get_opt(name).await.expect("get mirror")
}

async fn export(cluster: &Cluster, ns: &str, name: &str) {
    cluster
        .services(ns)
        .create(
            &PostParams::default(),
            &service(name, ns, &[("http", 80)], true),
        )
        .await
        .expect("exported service");
}

async fn holder(west: &Cluster) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(west.admin.clone(), NS);
    leases
        .get_opt("mc-controller")
        .await
        .ok()??
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

/// `GET path` on 127.0.0.1:port: (status code, body).
async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    tcp.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut text = String::new();
    tcp.read_to_string(&mut text).await.ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

#[tokio::test]
async fn mirrors_stay_while_the_remote_api_is_down_and_the_loop_recovers() {
    init_tracing();
    let mut pair = Pair::linked(|_| {}).await;
    pair.east.namespace("shop").await;
    pair.west.namespace("shop").await;
    let controller = start_controller(pair.west.admin.clone(), fast_config("a"));
    export(&pair.east, "shop", "backend").await;
    let before = eventually(SOON, "backend-east", || async {
        mirror(&pair.west, "shop", "backend-east").await
    })
    .await;

    pair.stop_east().await;
    let west = &pair.west;
    let (_, reason, message) = eventually(
        Duration::from_secs(10),
        "RemoteAPIReachable=False",
        || async {
            condition(west, "RemoteAPIReachable")
                .await
                .filter(|(status, _, _)| status == "False")
        },
    )
    .await;
    assert_eq!(reason, "Unreachable");
    assert!(message.contains("mirrors are kept"), "{message}");
    // Well past the first retries, the mirror is still the same object.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = mirror(west, "shop", "backend-east")
        .await
        .expect("mirror kept while east is down");
    assert_eq!(during.metadata.uid, before.metadata.uid);
    let (still, _, _) = condition(west, "RemoteAPIReachable")
        .await
        .expect("condition");
    assert_eq!(still, "False", "the status keeps saying unreachable");

    // East comes back with its state: the loop reconnects by itself.
    pair.restart_east().await;
    let west = &pair.west;
    eventually(
        Duration::from_secs(40),
        "RemoteAPIReachable=True again",
        || async {
            condition(west, "RemoteAPIReachable")
                .await
                .filter(|(status, _, _)| status == "True")
        },
    )
    .await;
    export(&pair.east, "shop", "cart").await;
    eventually(SOON, "new export mirrored after recovery", || async {
        mirror(west, "shop", "cart-east").await
    })
    .await;
    let after = mirror(west, "shop", "backend-east").await.expect("kept");
    assert_eq!(after.metadata.uid, before.metadata.uid);
    controller.shutdown().await;
}

#[tokio::test]
async fn a_replaced_token_takes_effect_without_a_restart() {
    init_tracing();
    let pair = Pair::linked(|_| {}).await;
    pair.east.namespace("shop").await;
    pair.west.namespace("shop").await;
    let controller = start_controller(pair.west.admin.clone(), fast_config("a"));
    export(&pair.east, "shop", "backend").await;
    let before = eventually(SOON, "backend-east", || async {
        mirror(&pair.west, "shop", "backend-east").await
    })
    .await;

    // An edited Secret is picked up at once: a token east rejects...
    pair.put_secret("not-a-valid-token").await;
    let (_, reason, _) = eventually(Duration::from_secs(5), "CredentialsValid=False", || async {
        condition(&pair.west, "CredentialsValid")
            .await
            .filter(|(status, _, _)| status == "False")
    })
    .await;
    assert_eq!(reason, "Unauthorized");
    let (reachable, _, _) = condition(&pair.west, "RemoteAPIReachable")
        .await
        .expect("condition");
    assert_eq!(reachable, "True", "east answers, it just refuses the token");
    assert_eq!(
        mirror(&pair.west, "shop", "backend-east")
            .await
            .expect("kept")
            .metadata
            .uid,
        before.metadata.uid,
        "rejected credentials never delete mirrors"
    );

    // A kubeconfig that would run a program in the controller is refused
    // with its own reason, and the program never runs.
    let marker = tempfile::tempdir().expect("tempdir");
    let ran = marker.path().join("ran");
    pair.put_kubeconfig(format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: east\n  cluster:\n    server: {}\n\
         users:\n- name: east\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      \
         command: /bin/sh\n      args: [-c, 'touch {}']\n      interactiveMode: Never\n\
         contexts:\n- name: east\n  context: {{cluster: east, user: east}}\ncurrent-context: east\n",
        pair.east.env.url(),
        ran.display()
    ))
    .await;
    let (_, reason, message) =
        eventually(Duration::from_secs(5), "CredentialsValid=False", || async {
            condition(&pair.west, "CredentialsValid")
                .await
                .filter(|(status, reason, _)| status == "False" && reason != "Unauthorized")
        })
        .await;
    assert_eq!(reason, "RefusedKubeconfig", "{message}");
    assert!(message.contains("exec"), "{message}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !ran.exists(),
        "the Link Secret's exec command ran in the controller"
    );

    // ...then rotation: revoke every old token, mint a new one, update the Secret.
    let old_token = pair.reader_token().await;
    pair.revoke_reader().await;
    let old = client_from_yaml(&pair.east.env.kubeconfig_with_token("east", &old_token)).await;
    assert!(
        Api::<Service>::all(old)
            .list(&ListParams::default())
            .await
            .is_err(),
        "the old token is revoked"
    );
    let token = pair.reader_token().await;
    pair.put_secret(&token).await;
    eventually(Duration::from_secs(5), "CredentialsValid=True", || async {
        condition(&pair.west, "CredentialsValid")
            .await
            .filter(|(status, _, _)| status == "True")
    })
    .await;
    export(&pair.east, "shop", "cart").await;
    eventually(SOON, "mirroring with the new token", || async {
        mirror(&pair.west, "shop", "cart-east").await
    })
    .await;
    assert_eq!(
        mirror(&pair.west, "shop", "backend-east")
            .await
            .expect("kept")
            .metadata
            .uid,
        before.metadata.uid
    );
    controller.shutdown().await;
}

#[tokio::test]
async fn only_the_leader_mirrors_and_a_standby_takes_over() {
    init_tracing();
    let pair = Pair::linked(|_| {}).await;
    pair.east.namespace("shop").await;
    pair.west.namespace("shop").await;
    // Someone else holds the Lease and keeps renewing it.
    let leases: Api<Lease> = Api::namespaced(pair.west.admin.clone(), NS);
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "mc-controller", "namespace": NS},
        "spec": {"holderIdentity": "someone-else", "leaseDurationSeconds": 3,
                 "renewTime": MicroTime(Timestamp::now()), "leaseTransitions": 0}
    }))
    .expect("lease");
    leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("lease held");
    let renewer = {
        let leases = leases.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Ok(mut lease) = leases.get("mc-controller").await {
                    if let Some(spec) = lease.spec.as_mut() {
                        spec.renew_time = Some(MicroTime(Timestamp::now()));
                    }
                    let _ = leases
                        .replace("mc-controller", &PostParams::default(), &lease)
                        .await;
                }
            }
        })
    };
    let a = start_controller(pair.west.admin.clone(), fast_config("a"));
    let b = start_controller(pair.west.admin.clone(), fast_config("b"));
    export(&pair.east, "shop", "backend").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        mirror(&pair.west, "shop", "backend-east").await.is_none(),
        "followers do not mirror"
    );
    assert_eq!(holder(&pair.west).await.as_deref(), Some("someone-else"));

    // The holder dies: one of a and b takes over after the lease expires.
    renewer.abort();
    eventually(
        Duration::from_secs(10),
        "backend-east by the new leader",
        || async { mirror(&pair.west, "shop", "backend-east").await },
    )
    .await;
    let leader = holder(&pair.west).await.expect("a leader");
    assert!(leader == "a" || leader == "b", "{leader}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        holder(&pair.west).await,
        Some(leader.clone()),
        "leadership is stable"
    );

    // The leader crashes (no release): the standby takes over and mirrors.
    let (crashed, standby, survivor) = if leader == "a" {
        (a, "b", b)
    } else {
        (b, "a", a)
    };
    crashed.task.abort();
    export(&pair.east, "shop", "cart").await;
    eventually(
        Duration::from_secs(10),
        "standby leads and mirrors",
        || async {
            let leads = holder(&pair.west).await.as_deref() == Some(standby);
            (leads && mirror(&pair.west, "shop", "cart-east").await.is_some()).then_some(())
        },
    )
    .await;
    survivor.shutdown().await;
    assert_eq!(
        holder(&pair.west).await,
        None,
        "a clean stop releases the lease"
    );
}

#[tokio::test]
async fn gateway_probes_report_liveness_latency_and_metrics() {
    init_tracing();
    // The remote gateway's admin server, as the gateway runs it.
    let gateway = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let gateway_port = gateway.local_addr().expect("addr").port();
    let readiness = mc_admin::Readiness::new();
    readiness.set(true);
    let state = mc_admin::AdminState::new(
        prometheus_client::registry::Registry::default(),
        readiness.clone(),
    );
    let server = tokio::spawn(mc_admin::serve_on(gateway, state));

    let pair = Pair::linked(|link| {
        link["spec"]["probe"]["port"] = json!(gateway_port);
    })
    .await;
    let admin_port = free_port();
    let mut config = fast_config("a");
    config.admin_listen = Some(format!("127.0.0.1:{admin_port}").parse().expect("addr"));
    config.status_refresh = Duration::from_secs(5);
    let controller = start_controller(pair.west.admin.clone(), config);

    let gateway_status = eventually(Duration::from_secs(5), "gateway alive", || async {
        let status = pair.west.links().get("east").await.ok()?.status?;
        status.gateway.filter(|g| g.alive)
    })
    .await;
    assert!(gateway_status.latency_ms.is_some());
    // Probes every second, but latency alone does not rewrite the status
    // more than once per refresh interval: no write storms.
    let version = pair
        .west
        .links()
        .get("east")
        .await
        .expect("link")
        .metadata
        .resource_version;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        pair.west
            .links()
            .get("east")
            .await
            .expect("link")
            .metadata
            .resource_version,
        version,
        "steady probes do not rewrite the Link"
    );
    assert_eq!(gateway_status.address.as_deref(), Some("127.0.0.1"));
    let (alive, reason, _) = condition(&pair.west, "GatewayAlive")
        .await
        .expect("condition");
    assert_eq!(
        (alive.as_str(), reason.as_str()),
        ("True", "ProbeSucceeded")
    );
    let (code, ready) = http_get(admin_port, "/ready")
        .await
        .expect("controller /ready");
    assert_eq!(code, 200, "{ready}");
    let metrics = eventually(SOON, "metrics", || async {
        let (_, body) = http_get(admin_port, "/metrics").await?;
        body.contains("mc_gateway_alive{target_cluster=\"east\"} 1")
            .then_some(body)
    })
    .await;
    assert!(
        metrics.contains("mc_gateway_probe_latency_seconds_count{target_cluster=\"east\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("mc_controller_leader 1"), "{metrics}");

    // Not ready (503), then gone: dead after the failure threshold.
    readiness.set(false);
    eventually(
        Duration::from_secs(5),
        "gateway dead when not ready",
        || async {
            let status = pair.west.links().get("east").await.ok()?.status?;
            status.gateway.filter(|g| !g.alive)
        },
    )
    .await;
    let (alive, reason, message) = condition(&pair.west, "GatewayAlive")
        .await
        .expect("condition");
    assert_eq!((alive.as_str(), reason.as_str()), ("False", "ProbeFailed"));
    assert!(message.contains("503"), "{message}");
    readiness.set(true);
    eventually(Duration::from_secs(5), "alive again", || async {
        let status = pair.west.links().get("east").await.ok()?.status?;
        status.gateway.filter(|g| g.alive)
    })
    .await;
    server.abort();
    eventually(
        Duration::from_secs(5),
        "gateway dead when stopped",
        || async {
            let (_, body) = http_get(admin_port, "/metrics").await?;
            body.contains("mc_gateway_alive{target_cluster=\"east\"} 0")
                .then_some(())
        },
    )
    .await;
    let status = pair
        .west
        .links()
        .get("east")
        .await
        .expect("link")
        .status
        .expect("status");
    assert!(!status.gateway.expect("gateway").alive);
    controller.shutdown().await;
}

/// Kills the child when a test fails half-way.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_leads_serves_admin_and_stops_on_sigterm() {
    init_tracing();
    let west = Cluster::start().await;
    west.namespace(NS).await;
    let kubeconfig = west.env.dir().join("admin.kubeconfig");
    std::fs::write(&kubeconfig, west.env.admin_kubeconfig_yaml("west")).expect("kubeconfig");
    let admin_port = free_port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_mc-controller"))
        .args([
            "--cluster-name=west",
            &format!("--admin-listen=127.0.0.1:{admin_port}"),
            "--lease-duration=3s",
            "--renew-period=1s",
            "--retry-period=300ms",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAME", "mc-controller-bin")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("binary starts");
    let mut child = ChildGuard(child);
    eventually(Duration::from_secs(10), "/ready", || async {
        let (code, _) = http_get(admin_port, "/ready").await?;
        (code == 200).then_some(())
    })
    .await;
    eventually(SOON, "the binary leads", || async {
        let (_, body) = http_get(admin_port, "/metrics").await?;
        let leads = holder(&west).await.as_deref() == Some("mc-controller-bin");
        (leads && body.contains("mc_controller_leader 1")).then_some(())
    })
    .await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.0.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit within 10 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");
    assert_eq!(
        holder(&west).await,
        None,
        "the lease is released on SIGTERM"
    );
}
