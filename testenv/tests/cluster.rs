//! A test cluster starts, serves tokens from the TokenRequest API, and
//! restarts on its port with its data.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use mc_testenv::{Options, TestCluster};
use serde_json::json;

async fn client(yaml: &str) -> kube::Client {
    let kc = Kubeconfig::from_yaml(yaml).expect("kubeconfig parses");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    kube::Client::try_from(cfg).expect("client")
}

#[tokio::test]
async fn starts_mints_tokens_and_restarts_with_its_data() {
    let started = std::time::Instant::now();
    let mut cluster = TestCluster::start(Options::default())
        .await
        .expect("cluster starts");
    eprintln!("started in {:?}", started.elapsed());
    let admin = cluster.admin_client();
    cluster
        .wait_for_controller_manager()
        .await
        .expect("kube-controller-manager works");
    eprintln!("controller manager ready after {:?}", started.elapsed());
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), "default");
    // kube-controller-manager publishes the root CA.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let root = loop {
        if let Some(cm) = cms.get_opt("kube-root-ca.crt").await.expect("get") {
            break cm;
        }
        assert!(std::time::Instant::now() < deadline, "no kube-root-ca.crt");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(root.data.expect("data")["ca.crt"], cluster.ca_pem());

    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
    let request = serde_json::from_value(json!({"spec": {"audiences": []}})).expect("request");
    let token = sas
        .create_token_request("default", &PostParams::default(), &request)
        .await
        .expect("token")
        .status
        .expect("status")
        .token;
    let as_sa = client(&cluster.kubeconfig_with_token("t", &token)).await;
    let denied = Api::<ConfigMap>::namespaced(as_sa.clone(), "default")
        .list(&Default::default())
        .await;
    assert!(matches!(denied, Err(kube::Error::Api(s)) if s.code == 403));

    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "kept"}, "data": {"a": "b"}}))
            .expect("cm");
    cms.create(&PostParams::default(), &cm).await.expect("cm");
    let port = cluster.port();
    cluster.stop().await;
    assert!(cms.get("kept").await.is_err(), "down");
    let restarted = std::time::Instant::now();
    cluster.restart().await.expect("restarts");
    eprintln!("restarted in {:?}", restarted.elapsed());
    assert_eq!(cluster.port(), port);
    assert_eq!(
        cms.get("kept").await.expect("kept").data.expect("data")["a"],
        "b"
    );
    let denied = Api::<ConfigMap>::namespaced(as_sa, "default")
        .list(&Default::default())
        .await;
    assert!(
        matches!(denied, Err(kube::Error::Api(s)) if s.code == 403),
        "the token still authenticates"
    );
}
