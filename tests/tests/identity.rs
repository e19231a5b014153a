//! Identity end to end, in the lab, with the real binaries: the signer in
//! each cluster issues the agents' and the gateway's certificates through
//! CSRs; east's gateway lets in only agents of a linked cluster, and each
//! Service may narrow that to named workloads. The real API server
//! enforces the CSR approval RBAC `kubectl mc install` ships. Needs root, nftables and
//! the built binaries (`cargo build`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::ByteString;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use mc_e2e::caller::{client_config, open_stream, west_source};
use mc_e2e::eventually;
use mc_e2e::mesh::{Mesh, MeshOptions, NS, TRUST_DOMAIN};
use mc_identity::{LeafRequest, SIGNER_NAME, SpiffeId};
use mc_tunnel::{Reason, Source, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FRONTEND: &str = "west/default/frontend";
const OTHER: &str = "west/default/other";

/// A mesh with an exported echo `backend` in east (HTTP 8080, TCP 9000),
/// its mirror in west, and a `frontend` pod (account `frontend`) and an
/// `other` pod (account `default`) on the same west node.
async fn mesh_with_backend(options: MeshOptions) -> Result<(Mesh, String)> {
    let mesh = Mesh::start_with(options).await?;
    let ip = mesh.export_echo_backend(1).await?;
    let sleeper = ["sleep", "3600"];
    mesh.lab.run_pod_as(
        FRONTEND,
        "frontend",
        "app=frontend",
        Some("west-node-0"),
        None,
        &sleeper,
    )?;
    mesh.lab
        .run_pod(OTHER, "app=other", Some("west-node-0"), None, &sleeper)?;
    Ok((mesh, format!("{ip}:8080")))
}

/// Waits until `pod`'s GET of `addr` is answered by east.
async fn answered(mesh: &Mesh, pod: &str, addr: &str) -> Result<()> {
    eventually(Duration::from_secs(15), || async {
        let answer = mesh.lab.http_from(pod, addr)?;
        if answer.contains("cluster=east") {
            Ok(())
        } else {
            bail!("{pod} got {answer:?}")
        }
    })
    .await
    .with_context(|| format!("{pod} -> {addr}"))
}

/// Whether `pod`'s call of `addr` is refused: no answer, and quickly.
fn refused(mesh: &Mesh, pod: &str, addr: &str) -> Result<()> {
    let started = Instant::now();
    let answer = mesh.lab.http_from(pod, addr).unwrap_or_default();
    let took = started.elapsed();
    if !answer.is_empty() {
        bail!("{pod} -> {addr} answered {answer:?}");
    }
    if took > Duration::from_millis(1500) {
        bail!("{pod} -> {addr} took {took:?} to be refused");
    }
    Ok(())
}

/// The gateway's Prometheus text, from its admin port.
async fn gateway_metrics(mesh: &Mesh) -> Result<String> {
    let mut tcp = TcpStream::connect((mesh.gateway_ip.as_str(), mc_api::ADMIN_PORT)).await?;
    tcp.write_all(b"GET /metrics HTTP/1.0\r\nHost: gateway\r\n\r\n")
        .await?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_string(&mut text))
        .await
        .context("reading /metrics timed out")??;
    Ok(text)
}

/// The value of the `mc_gateway_authorization_total` series whose labels
/// include every `labels` pair (0 when there is none).
fn decisions(metrics: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with("mc_gateway_authorization_total{"))
        .filter(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Names of the CSRs (through `client`) that got a certificate for `sa`.
async fn issued_csrs(client: &kube::Client, sa: &str) -> Result<Vec<String>> {
    let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
    let wanted = format!("system:serviceaccount:{NS}:{sa}");
    Ok(csrs
        .list(&ListParams::default())
        .await?
        .into_iter()
        .filter(|csr| csr.spec.username.as_deref() == Some(wanted.as_str()))
        .filter(|csr| {
            csr.status
                .as_ref()
                .and_then(|s| s.certificate.as_ref())
                .is_some()
        })
        .filter_map(|csr| csr.metadata.name)
        .collect())
}

/// Whether the API server lets ServiceAccount `mc-system/<sa>` `verb`
/// (approve, sign) for `signer`, by a SubjectAccessReview.
async fn may_on_signer(client: &kube::Client, sa: &str, verb: &str, signer: &str) -> Result<bool> {
    let review: SubjectAccessReview = serde_json::from_value(serde_json::json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": format!("system:serviceaccount:{NS}:{sa}"),
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{NS}")],
            "resourceAttributes": {"group": "certificates.k8s.io", "resource": "signers",
                                   "verb": verb, "name": signer},
        },
    }))?;
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .context("creating a SubjectAccessReview")?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_agents_of_linked_clusters_get_through() -> Result<()> {
    let (mesh, addr) = mesh_with_backend(MeshOptions::default()).await?;
    answered(&mesh, FRONTEND, &addr).await?;

    // The signer works under the RBAC `kubectl mc install` ships, and the
    // API server lets mc's controller approve and sign for mc's signer
    // only; the proxies may only ask.
    for (sa, verb, signer, allowed) in [
        ("mc-controller", "approve", SIGNER_NAME, true),
        ("mc-controller", "sign", SIGNER_NAME, true),
        (
            "mc-controller",
            "approve",
            "kubernetes.io/kube-apiserver-client",
            false,
        ),
        (
            "mc-controller",
            "sign",
            "kubernetes.io/kubelet-serving",
            false,
        ),
        ("mc-node-agent", "approve", SIGNER_NAME, false),
        ("mc-gateway", "sign", SIGNER_NAME, false),
    ] {
        let may = may_on_signer(&mesh.west, sa, verb, signer).await?;
        ensure!(
            may == allowed,
            "{sa} may {verb} for {signer}: {may}, expected {allowed}"
        );
    }

    // The issuer key is the controller's alone.
    for cluster in ["east", "west"] {
        for sa in ["mc-node-agent", "mc-gateway"] {
            let client = mesh.lab.client_as(cluster, NS, sa).await?;
            let secrets: Api<Secret> = Api::namespaced(client, NS);
            match secrets.get(mc_identity::ISSUER_SECRET).await {
                Err(kube::Error::Api(status)) if status.code == 403 => {}
                other => bail!("{cluster} {sa} reading the issuer: {other:?}"),
            }
        }
        let controller = mesh.lab.client_as(cluster, NS, "mc-controller").await?;
        Api::<Secret>::namespaced(controller, NS)
            .get(mc_identity::ISSUER_SECRET)
            .await
            .context("the controller reads its issuer")?;
    }

    // An agent asking for the gateway's identity is denied, with a reason.
    let agent = mesh.lab.client_as("west", NS, "mc-node-agent").await?;
    let csrs: Api<CertificateSigningRequest> = Api::all(agent);
    let wants = SpiffeId::system(TRUST_DOMAIN, "mc-gateway")?;
    let request = LeafRequest::generate(&wants)?;
    let csr = CertificateSigningRequest {
        metadata: kube::api::ObjectMeta {
            name: Some("agent-wants-gateway".into()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            signer_name: SIGNER_NAME.to_string(),
            request: ByteString(request.csr_pem().as_bytes().to_vec()),
            usages: Some(vec!["digital signature".into(), "client auth".into()]),
            ..Default::default()
        },
        status: None,
    };
    csrs.create(&PostParams::default(), &csr).await?;
    let denial = eventually(Duration::from_secs(15), || async {
        let csr = csrs.get("agent-wants-gateway").await?;
        let status = csr.status.unwrap_or_default();
        match status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Denied")
        {
            Some(denied) => Ok((denied.reason, denied.message, status.certificate)),
            None => bail!("no decision yet"),
        }
    })
    .await?;
    assert!(denial.2.is_none(), "a denied CSR carries no certificate");
    assert!(
        denial
            .1
            .as_deref()
            .unwrap_or_default()
            .contains("mc-gateway"),
        "{denial:?}"
    );

    // Hand-made callers at east's gateway.
    let gateway = format!("{}:{}", mesh.gateway_ip, mc_api::GATEWAY_TUNNEL_PORT);
    let verify_with = mesh.west_agent_identity()?;
    let gateway_id = SpiffeId::parse(&mesh.gateway_identity())?;
    let hour = Duration::from_secs(3600);
    let call = |leaf: mc_identity::IssuedLeaf, source: Source| {
        let config = client_config(
            &verify_with,
            &gateway_id,
            Some((&leaf.cert_pem, &leaf.key_pem)),
        );
        let gateway = gateway.clone();
        async move { open_stream(&gateway, config?, source).await }
    };
    // The control: west's agent certificate is let through.
    let west_agent = mesh.issue("west", "mc-node-agent", hour)?;
    assert_eq!(call(west_agent, west_source()).await?, Status::Ok);
    // Expired.
    let short = mesh.issue("west", "mc-node-agent", Duration::from_secs(1))?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let expired = call(short, west_source()).await;
    assert!(expired.is_err(), "an expired certificate got {expired:?}");
    // Same anchor, but a cluster east has no link from.
    let north = mesh
        .anchor
        .issue_cluster_issuer("north", hour)?
        .issue_leaf(&SpiffeId::system(TRUST_DOMAIN, "mc-node-agent")?, hour)?;
    let north_source = Source {
        cluster: "north".into(),
        ..west_source()
    };
    assert_eq!(
        call(north, north_source.clone()).await?,
        Status::Refused(Reason::Forbidden)
    );
    // West's certificate claiming to call for north.
    let lying = mesh.issue("west", "mc-node-agent", hour)?;
    assert_eq!(
        call(lying, north_source).await?,
        Status::Refused(Reason::Forbidden)
    );
    // A leaf the anchor signed directly proves no cluster; a gateway's
    // certificate is not an agent's: both tunnels are closed unanswered.
    let direct = mesh.anchor.issue(NS, "mc-node-agent", hour)?;
    let answer = call(direct, west_source()).await;
    assert!(answer.is_err(), "an anchor-signed leaf got {answer:?}");
    let not_agent = mesh.issue("west", "mc-gateway", hour)?;
    let answer = call(not_agent, west_source()).await;
    assert!(answer.is_err(), "a gateway certificate got {answer:?}");

    let metrics = gateway_metrics(&mesh).await?;
    assert!(
        decisions(
            &metrics,
            &[
                ("src_cluster", "north"),
                ("decision", "deny"),
                ("reason", "unlinked_cluster")
            ]
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        decisions(
            &metrics,
            &[
                ("src_cluster", "west"),
                ("src_identity", "default/frontend"),
                ("decision", "allow")
            ]
        ) >= 1.0,
        "{metrics}"
    );
    for reason in ["no_cluster_issuer", "not_an_agent"] {
        // At least one: the tunnel client may retry a closed connection.
        let series = format!("mc_gateway_tunnels_rejected_total{{reason=\"{reason}\"}} ");
        let count = metrics
            .lines()
            .find_map(|line| line.strip_prefix(&series)?.parse::<f64>().ok());
        assert!(count.is_some_and(|n| n >= 1.0), "{reason}: {metrics}");
    }

    // Removing west's link account in east cuts west's pods off at once;
    // linking again lets them back in.
    mesh.unlink_west().await?;
    eventually(Duration::from_secs(10), || async {
        refused(&mesh, FRONTEND, &addr)
    })
    .await
    .context("west is still let in after its link account was removed")?;
    mesh.link_west().await?;
    answered(&mesh, FRONTEND, &addr).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_can_allow_one_workload_only() -> Result<()> {
    let (mesh, addr) = mesh_with_backend(MeshOptions::default()).await?;
    answered(&mesh, OTHER, &addr).await?;
    let services: Api<Service> = Api::namespaced(mesh.east.clone(), "default");
    let allow = |value: &str| {
        let patch = serde_json::json!({"metadata": {"annotations": {
            mc_api::labels::ALLOWED_CALLERS: value,
        }}});
        let services = services.clone();
        async move {
            services
                .patch("backend", &PatchParams::default(), &Patch::Merge(&patch))
                .await
        }
    };
    allow("west/default/frontend").await?;

    // Same node, same agent, same tunnel: only the account differs.
    eventually(Duration::from_secs(10), || async {
        refused(&mesh, OTHER, &addr)
    })
    .await?;
    answered(&mesh, FRONTEND, &addr).await?;
    refused(&mesh, OTHER, &addr)?;

    let metrics = gateway_metrics(&mesh).await?;
    assert!(
        decisions(
            &metrics,
            &[
                ("src_identity", "default/default"),
                ("decision", "deny"),
                ("reason", "not_allowed")
            ]
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        decisions(
            &metrics,
            &[("src_identity", "default/frontend"), ("decision", "allow")]
        ) >= 1.0,
        "{metrics}"
    );

    // A malformed list denies everyone rather than everyone passing.
    allow("west/default").await?;
    eventually(Duration::from_secs(10), || async {
        refused(&mesh, FRONTEND, &addr)
    })
    .await?;
    // Widening to the whole cluster lets the other pod in again.
    allow("west").await?;
    answered(&mesh, OTHER, &addr).await?;
    answered(&mesh, FRONTEND, &addr).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_under_a_long_transfer_without_dropping_it() -> Result<()> {
    // Leaves live 12 s and are renewed at 8 s; the transfer lasts 30 s.
    let lifetime = Duration::from_secs(12);
    let (mesh, addr) = mesh_with_backend(MeshOptions {
        leaf_lifetime: lifetime,
        ..MeshOptions::default()
    })
    .await?;
    answered(&mesh, FRONTEND, &addr).await?;
    let tcp = addr.replace(":8080", ":9000");
    let started = Instant::now();
    let transfer = mesh.lab.exec(
        FRONTEND,
        &[
            "mc-lab",
            "bulk",
            &tcp,
            "--bytes",
            "15000000",
            "--rate",
            "500000",
            "--timeout",
            "10",
        ],
    )?;
    let took = started.elapsed();
    assert!(
        transfer.status.success(),
        "the transfer broke: {}",
        String::from_utf8_lossy(&transfer.stderr)
    );
    assert!(took > lifetime * 2, "the transfer took only {took:?}");

    // The gateway retired the tunnels whose agent certificate expired
    // (GOAWAY) while the transfer's stream on one of them went on.
    let metrics = gateway_metrics(&mesh).await?;
    let retired = metrics.lines().find_map(|line| {
        line.strip_prefix("mc_gateway_tunnels_expired_total ")?
            .parse::<f64>()
            .ok()
    });
    assert!(retired.is_some_and(|n| n >= 1.0), "{metrics}");

    // Both sides renewed meanwhile: each agent and the gateway got more
    // than one certificate.
    let agents = issued_csrs(&mesh.west, "mc-node-agent").await?;
    let gateways = issued_csrs(&mesh.east, "mc-gateway").await?;
    assert!(agents.len() >= 4, "agent certificates: {agents:?}");
    assert!(gateways.len() >= 2, "gateway certificates: {gateways:?}");

    // Every certificate of the start has expired: new connections work on
    // the renewed ones.
    answered(&mesh, FRONTEND, &addr).await?;
    Ok(())
}
