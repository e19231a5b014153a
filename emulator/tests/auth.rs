//! Authentication and authorization through kube-rs: TokenRequest tokens,
//! RBAC-enforced read-only ServiceAccounts, client certificates, 401s,
//! legacy token Secrets, and discovery for authenticated users.

mod common;

use common::{status, status_code};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::discovery::Discovery;
use serde_json::json;

async fn token_for(client: &kube::Client, ns: &str, sa: &str) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let tr: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}}))
            .expect("tr");
    let resp = sas
        .create_token_request(sa, &PostParams::default(), &tr)
        .await
        .expect("token request");
    let status = resp.status.expect("token status");
    let exp = status.expiration_timestamp.0;
    let secs = exp.as_second() - jiff_now().as_second();
    assert!(
        (3500..=3700).contains(&secs),
        "expiry about an hour away, got {secs}s"
    );
    status.token
}

fn jiff_now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

async fn setup_reader(admin: &kube::Client) {
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "reader"}})).expect("sa"),
    )
    .await
    .expect("sa");
    let roles: Api<Role> = Api::namespaced(admin.clone(), "default");
    roles
        .create(&PostParams::default(), &serde_json::from_value(json!({
            "metadata": {"name": "read-cm"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}]
        }))
        .expect("role"))
        .await
        .expect("role");
    let rbs: Api<RoleBinding> = Api::namespaced(admin.clone(), "default");
    rbs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-cm"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": "default"}]
        }))
        .expect("rb"),
    )
    .await
    .expect("rb");
}

#[tokio::test]
async fn a_read_only_service_account_token_reads_but_cannot_write() {
    let t = common::start().await;
    let admin = t.admin().await;
    setup_reader(&admin).await;
    let token = token_for(&admin, "default", "reader").await;
    let reader = t.with_token(&token).await;
    let cms: Api<ConfigMap> = Api::namespaced(reader.clone(), "default");
    cms.list(&ListParams::default())
        .await
        .expect("reader may list configmaps");

    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "x"}})).expect("cm");
    let err = status(
        cms.create(&PostParams::default(), &cm)
            .await
            .expect_err("reader may not create"),
    );
    assert_eq!((err.code, err.reason.as_str()), (403, "Forbidden"));
    assert!(
        err.message.contains(
            "User \"system:serviceaccount:default:reader\" cannot create resource \"configmaps\""
        ),
        "{}",
        err.message
    );
    let secrets: Api<Secret> = Api::namespaced(reader.clone(), "default");
    assert_eq!(
        status_code(
            secrets
                .list(&ListParams::default())
                .await
                .expect_err("no secrets")
        ),
        403
    );

    // Discovery works for any authenticated user.
    let d = Discovery::new(reader.clone())
        .run()
        .await
        .expect("discovery");
    assert!(d.groups().any(|g| g.name() == "apps"));

    // Deleting the ServiceAccount invalidates its tokens.
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
    sas.delete("reader", &DeleteParams::default())
        .await
        .expect("delete sa");
    assert_eq!(
        status_code(
            cms.list(&ListParams::default())
                .await
                .expect_err("token revoked")
        ),
        401
    );
}

#[tokio::test]
async fn bad_tokens_are_401_and_client_certificates_name_the_user() {
    let t = common::start().await;
    let bad = t.with_token("not-a-token").await;
    let cms: Api<ConfigMap> = Api::namespaced(bad, "default");
    let err = status(cms.list(&ListParams::default()).await.expect_err("401"));
    assert_eq!((err.code, err.reason.as_str()), (401, "Unauthorized"));

    let alice = t.with_cert("alice", &["devs"]).await;
    let cms: Api<ConfigMap> = Api::namespaced(alice.clone(), "default");
    let err = status(
        cms.list(&ListParams::default())
            .await
            .expect_err("no rights yet"),
    );
    assert_eq!(err.code, 403);
    assert!(err.message.contains("User \"alice\""), "{}", err.message);

    // Grant the group, and alice can list.
    let admin = t.admin().await;
    let rbs: Api<RoleBinding> = Api::namespaced(admin.clone(), "default");
    rbs.create(&PostParams::default(), &serde_json::from_value(json!({
        "metadata": {"name": "devs-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "devs"}]
    }))
    .expect("rb"))
    .await
    .expect("rb");
    cms.list(&ListParams::default())
        .await
        .expect("alice may list now");
    assert_eq!(
        status_code(
            cms.create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "x"}})).expect("cm")
            )
            .await
            .expect_err("view cannot create")
        ),
        403
    );
}

#[tokio::test]
async fn legacy_token_secrets_are_filled_and_authenticate() {
    let t = common::start().await;
    let admin = t.admin().await;
    setup_reader(&admin).await;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "default");
    let s: Secret = serde_json::from_value(json!({
        "metadata": {"name": "reader-token", "annotations": {"kubernetes.io/service-account.name": "reader"}},
        "type": "kubernetes.io/service-account-token",
        "stringData": {"extra": "1"}
    }))
    .expect("secret");
    let s = secrets
        .create(&PostParams::default(), &s)
        .await
        .expect("secret");
    let data = s.data.expect("data");
    assert_eq!(data.get("extra").map(|b| b.0.clone()), Some(b"1".to_vec()));
    assert_eq!(
        data.get("namespace").map(|b| b.0.clone()),
        Some(b"default".to_vec())
    );
    assert!(
        String::from_utf8_lossy(&data.get("ca.crt").expect("ca").0).contains("BEGIN CERTIFICATE")
    );
    let token = String::from_utf8(data.get("token").expect("token").0.clone()).expect("utf8");
    let reader = t.with_token(&token).await;
    let cms: Api<ConfigMap> = Api::namespaced(reader, "default");
    cms.list(&ListParams::default())
        .await
        .expect("legacy token works");
    secrets
        .delete("reader-token", &DeleteParams::default())
        .await
        .expect("delete secret");
    assert_eq!(
        status_code(cms.list(&ListParams::default()).await.expect_err("revoked")),
        401
    );
}
