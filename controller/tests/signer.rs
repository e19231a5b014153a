//! The certificate signer against a real API server: CSRs are created by
//! real ServiceAccount tokens, so `spec.username` is what the API server
//! authenticated.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Client;
use kube::api::{Api, PostParams};
use mc_identity::{
    CertSource, ClusterIssuer, CsrCertSource, CsrConfig, ISSUER_SECRET, LeafRequest, SIGNER_NAME,
    SpiffeId, TrustAnchor, anchors_of, cluster_of_chain, files::parse_certs,
};
use rustls::pki_types::UnixTime;
use serde_json::json;

const TD: &str = "mc.local";
const SOON: Duration = Duration::from_secs(10);
const REQUESTER_ROLE: &str = "test-csr-requester";

/// One cluster (`west`) with its issuer Secret and a running controller.
struct Signing {
    cluster: Cluster,
    anchor: TrustAnchor,
    _dir: tempfile::TempDir,
    controller: Running,
}

async fn put_issuer(cluster: &Cluster, issuer: &ClusterIssuer) {
    let secrets: Api<Secret> = Api::namespaced(cluster.admin.clone(), NS);
    let data = |s: &str| ByteString(s.as_bytes().to_vec());
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(ISSUER_SECRET.into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            ("tls.crt".to_string(), data(issuer.cert_pem())),
            ("tls.key".to_string(), data(&issuer.key_pem())),
            ("ca.crt".to_string(), data(issuer.anchors_pem())),
        ])),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("issuer secret");
}

impl Signing {
    async fn start(with_issuer: bool) -> Signing {
        Signing::start_with(with_issuer, |_| {}).await
    }

    async fn start_with(
        with_issuer: bool,
        tweak: impl FnOnce(&mut mc_controller::Config),
    ) -> Signing {
        init_tracing();
        let dir = tempfile::tempdir().expect("tempdir");
        let cluster = Cluster::start().await;
        cluster.namespace(NS).await;
        let anchor = TrustAnchor::generate(TD).expect("anchor");
        if with_issuer {
            let issuer = anchor
                .issue_cluster_issuer("west", Duration::from_secs(3600))
                .expect("issuer");
            put_issuer(&cluster, &issuer).await;
        }
        let roles: Api<ClusterRole> = Api::all(cluster.admin.clone());
        let role: ClusterRole = serde_json::from_value(json!({
            "metadata": {"name": REQUESTER_ROLE},
            "rules": [{"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"],
                       "verbs": ["create", "get", "list", "watch"]}]
        }))
        .expect("role");
        roles
            .create(&PostParams::default(), &role)
            .await
            .expect("role created");
        let mut config = fast_config("signer");
        tweak(&mut config);
        let controller = start_controller(cluster.admin.clone(), config);
        Signing {
            cluster,
            anchor,
            _dir: dir,
            controller,
        }
    }

    /// A client authenticated as ServiceAccount `ns/sa`, allowed to create
    /// and read CSRs.
    async fn client_as(&self, ns: &str, sa: &str) -> Client {
        self.cluster.namespace(ns).await;
        let admin = &self.cluster.admin;
        let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns);
        let account: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": sa}})).expect("sa");
        let _ = sas.create(&PostParams::default(), &account).await;
        let bindings: Api<ClusterRoleBinding> = Api::all(admin.clone());
        let binding: ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": {"name": format!("{REQUESTER_ROLE}-{ns}-{sa}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": REQUESTER_ROLE},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}]
        }))
        .expect("binding");
        let _ = bindings.create(&PostParams::default(), &binding).await;
        let request =
            serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}}))
                .expect("token request");
        let token = sas
            .create_token_request(sa, &PostParams::default(), &request)
            .await
            .expect("token")
            .status
            .expect("token status")
            .token;
        client_from_yaml(&self.cluster.env.kubeconfig_with_token("west", &token)).await
    }
}

/// Creates a CSR for `asks_for` as `client`; returns its name and the request.
async fn request(client: &Client, name: &str, asks_for: &str) -> LeafRequest {
    let id = SpiffeId::parse(asks_for).expect("id");
    let leaf = LeafRequest::generate(&id).expect("csr");
    let mut csr: CertificateSigningRequest = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"signerName": SIGNER_NAME, "request": "",
                 "usages": ["digital signature", "client auth", "server auth"]}
    }))
    .expect("csr object");
    csr.spec.request = ByteString(leaf.csr_pem().as_bytes().to_vec());
    Api::<CertificateSigningRequest>::all(client.clone())
        .create(&PostParams::default(), &csr)
        .await
        .expect("CSR created");
    leaf
}

/// Waits until the CSR is decided: `(condition type, reason, certificate)`.
async fn decision(client: &Client, name: &str) -> (String, String, Option<String>) {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    eventually(SOON, "a decision on the CSR", || async {
        let csr = api.get(name).await.ok()?;
        let status = csr.status?;
        let certificate = status
            .certificate
            .map(|c| String::from_utf8(c.0).expect("PEM"));
        let conditions = status.conditions.unwrap_or_default();
        let denied = conditions
            .iter()
            .find(|c| c.type_ == "Denied" || c.type_ == "Failed");
        if let Some(c) = denied {
            return Some((c.type_.clone(), c.reason.clone().unwrap_or_default(), None));
        }
        let approved = conditions.iter().find(|c| c.type_ == "Approved")?;
        certificate.map(|cert| {
            (
                approved.type_.clone(),
                approved.reason.clone().unwrap_or_default(),
                Some(cert),
            )
        })
    })
    .await
}

#[tokio::test]
async fn the_agent_gets_its_own_identity_signed_by_the_cluster_issuer() {
    let signing = Signing::start(true).await;
    let agent = signing.client_as(NS, "mc-node-agent").await;
    let id = "spiffe://mc.local/ns/mc-system/sa/mc-node-agent";
    let leaf = request(&agent, "agent-1", id).await;
    let (kind, _, certificate) = decision(&agent, "agent-1").await;
    assert_eq!(kind, "Approved");
    let chain_pem = certificate.expect("certificate issued");
    // Leaf then issuer; the issuer names this cluster.
    let chain = parse_certs(&chain_pem, "chain").expect("chain");
    assert_eq!(chain.len(), 2);
    let anchors = anchors_of(signing.anchor.cert_pem()).expect("anchors");
    let cluster = cluster_of_chain(&anchors, &chain, UnixTime::now()).expect("verifies");
    assert_eq!(cluster.cluster, "west");
    // It makes a working identity with the key that never left the requester,
    // valid for the default 24 hours.
    let identity = leaf
        .into_identity(&chain_pem, signing.anchor.cert_pem())
        .expect("identity");
    assert_eq!(identity.id().to_string(), id);
    let lifetime = identity
        .not_after()
        .duration_since(identity.not_before())
        .expect("ordered");
    assert!(
        lifetime >= Duration::from_secs(24 * 3600) && lifetime <= Duration::from_secs(25 * 3600),
        "{lifetime:?}"
    );
    signing.controller.shutdown().await;
}

#[tokio::test]
async fn a_request_for_another_account_or_from_another_account_is_denied() {
    let signing = Signing::start(true).await;
    let agent = signing.client_as(NS, "mc-node-agent").await;
    request(
        &agent,
        "agent-as-gateway",
        "spiffe://mc.local/ns/mc-system/sa/mc-gateway",
    )
    .await;
    let (kind, reason, certificate) = decision(&agent, "agent-as-gateway").await;
    assert_eq!(
        (kind.as_str(), reason.as_str()),
        ("Denied", "IdentityMismatch")
    );
    assert!(certificate.is_none());

    let frontend = signing.client_as("default", "frontend").await;
    request(
        &frontend,
        "frontend",
        "spiffe://mc.local/ns/default/sa/frontend",
    )
    .await;
    let (kind, reason, _) = decision(&frontend, "frontend").await;
    assert_eq!(
        (kind.as_str(), reason.as_str()),
        ("Denied", "ServiceAccountNotAllowed")
    );
    signing.controller.shutdown().await;
}

#[tokio::test]
async fn requests_wait_for_the_issuer_and_are_signed_once_it_exists() {
    let signing = Signing::start(false).await;
    let gateway = signing.client_as(NS, "mc-gateway").await;
    request(
        &gateway,
        "gateway-1",
        "spiffe://mc.local/ns/mc-system/sa/mc-gateway",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let api: Api<CertificateSigningRequest> = Api::all(gateway.clone());
    let pending = api.get("gateway-1").await.expect("csr");
    assert!(
        pending
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .is_empty(),
        "no decision without an issuer"
    );
    let issuer = signing
        .anchor
        .issue_cluster_issuer("west", Duration::from_secs(3600))
        .expect("issuer");
    put_issuer(&signing.cluster, &issuer).await;
    let (kind, _, certificate) = decision(&gateway, "gateway-1").await;
    assert_eq!(kind, "Approved");
    assert!(certificate.is_some());
    signing.controller.shutdown().await;
}

#[tokio::test]
async fn a_csr_source_gets_its_identity_renews_it_and_keeps_it_while_the_signer_is_down() {
    let lifetime = Duration::from_secs(9);
    let signing = Signing::start_with(true, |c| c.leaf_lifetime = lifetime).await;
    let agent = signing.client_as(NS, "mc-node-agent").await;
    let anchors = signing._dir.path().join("ca.crt");
    std::fs::write(&anchors, signing.anchor.cert_pem()).expect("anchors file");
    let id = SpiffeId::system(TD, "mc-node-agent").expect("id");
    let cfg = CsrConfig::new(id.clone(), anchors, "mc-node-agent-node-0");
    let source = tokio::time::timeout(SOON, CsrCertSource::start(agent, cfg))
        .await
        .expect("first certificate within 10 s");
    let first = source.current();
    assert_eq!(first.id(), &id);

    // Renewed at two thirds of the lifetime, before the first one expires.
    let second = eventually(SOON, "a renewed certificate", || async {
        let now = source.current();
        (now.not_after() > first.not_after()).then_some(now)
    })
    .await;
    assert!(std::time::SystemTime::now() < first.not_after());

    // Signer down: the current certificate stays in use past its renewal time.
    signing.controller.shutdown().await;
    tokio::time::sleep(
        second
            .renew_at()
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default()
            + Duration::from_secs(1),
    )
    .await;
    assert_eq!(source.current().not_after(), second.not_after());

    // Signer back: renewal succeeds.
    let controller = start_controller(signing.cluster.admin.clone(), {
        let mut config = fast_config("signer-2");
        config.leaf_lifetime = lifetime;
        config
    });
    eventually(
        Duration::from_secs(20),
        "renewal once the signer is back",
        || async { (source.current().not_after() > second.not_after()).then_some(()) },
    )
    .await;
    controller.shutdown().await;
}
