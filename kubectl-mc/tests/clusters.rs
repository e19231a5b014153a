//! The real binary against two real control planes, east and west.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Clusters, eventually, link_east_args, yaml_docs};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use mc_api::Link;

fn by_kind_and_name(docs: Vec<serde_yaml::Value>) -> BTreeMap<(String, String), serde_yaml::Value> {
    docs.into_iter()
        .map(|d| {
            let kind = d["kind"].as_str().unwrap_or_default().to_string();
            let name = d["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            ((kind, name), d)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_applies_everything_and_prints_what_deploy_holds() {
    let c = Clusters::start().await;
    c.install_both().await;
    for ctx in ["east", "west"] {
        let client = c.client(ctx).await;
        let crd = Api::<CustomResourceDefinition>::all(client.clone())
            .get("links.mc.dev")
            .await
            .expect("CRD installed");
        let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
        assert!(
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        );
        let cm = Api::<ConfigMap>::namespaced(client.clone(), "mc-system")
            .get("mc-config")
            .await
            .expect("mc-config");
        assert_eq!(cm.data.unwrap()["clusterName"], ctx);
        let deploy = Api::<Deployment>::namespaced(client.clone(), "mc-system")
            .get("mc-controller")
            .await
            .expect("controller Deployment");
        let container = &deploy.spec.unwrap().template.spec.unwrap().containers[0];
        assert_eq!(
            container.command.as_deref(),
            Some(&["mc-controller".to_string()][..])
        );
        assert_eq!(
            container.args.as_deref(),
            Some(
                &[
                    format!("--cluster-name={ctx}"),
                    "--leaf-lifetime=86400s".to_string()
                ][..]
            )
        );
        Api::<DaemonSet>::namespaced(client.clone(), "mc-system")
            .get("mc-node-agent")
            .await
            .expect("node agent DaemonSet");
        let gateway_role = Api::<ClusterRole>::all(client.clone())
            .get("mc-gateway")
            .await
            .expect("gateway ClusterRole");
        let rules = gateway_role.rules.unwrap();
        let mut granted: Vec<(String, String, Vec<String>)> = rules
            .iter()
            .flat_map(|r| {
                let groups = r.api_groups.clone().unwrap_or_default();
                let resources = r.resources.clone().unwrap_or_default();
                groups.into_iter().flat_map(move |g| {
                    let verbs = r.verbs.clone();
                    resources
                        .clone()
                        .into_iter()
                        .map(move |res| (g.clone(), res, verbs.clone()))
                })
            })
            .collect();
        granted.sort();
        let read = vec!["get".to_string(), "list".to_string(), "watch".to_string()];
        assert_eq!(
            granted,
            vec![
                (String::new(), "services".to_string(), read.clone()),
                (
                    "certificates.k8s.io".to_string(),
                    "certificatesigningrequests".to_string(),
                    vec!["create".to_string(), "get".to_string(), "watch".to_string()]
                ),
                (
                    "discovery.k8s.io".to_string(),
                    "endpointslices".to_string(),
                    read.clone()
                ),
            ]
        );
        let agent_role = Api::<Role>::namespaced(client.clone(), "mc-system")
            .get("mc-node-agent")
            .await
            .expect("agent Role");
        assert_eq!(
            agent_role.rules.unwrap()[0].resources.as_deref(),
            Some(&["links".to_string()][..])
        );
        let anchor = Api::<Secret>::namespaced(client.clone(), "mc-system")
            .get("mc-trust-anchor")
            .await
            .expect("anchor Secret");
        let data = anchor.data.unwrap();
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            vec!["ca.crt"],
            "never the key"
        );
        let shared = std::fs::read(c.identity_dir().join("ca.crt")).unwrap();
        assert_eq!(data["ca.crt"].0, shared);
        // This cluster's issuer, signed by the shared anchor; no leaf is
        // rendered (agents and gateways request theirs through CSRs).
        let issuer = Api::<Secret>::namespaced(client.clone(), "mc-system")
            .get("mc-identity-issuer")
            .await
            .expect("issuer Secret");
        assert_eq!(issuer.type_.as_deref(), Some("kubernetes.io/tls"));
        let issuer = issuer.data.unwrap();
        let issuer = mc_identity::ClusterIssuer::from_pem(
            &String::from_utf8_lossy(&issuer["tls.crt"].0),
            &String::from_utf8_lossy(&issuer["tls.key"].0),
            &String::from_utf8_lossy(&shared),
        )
        .expect("the issuer chains to the shared anchor");
        assert_eq!(issuer.cluster().cluster, ctx);
        for leaf in ["mc-gateway-identity", "mc-node-agent-identity"] {
            assert!(
                Api::<Secret>::namespaced(client.clone(), "mc-system")
                    .get_opt(leaf)
                    .await
                    .expect("read")
                    .is_none(),
                "{leaf} is not rendered any more"
            );
        }
    }

    // Applying again replaces in place.
    let dir = c.identity_dir();
    let again = c
        .mc(&[
            "--context",
            "east",
            "install",
            "--cluster-name",
            "east",
            "--identity-dir",
            dir.to_str().unwrap(),
            "--apply",
        ])
        .await
        .ok();
    assert!(
        again.stdout.contains("deployment/mc-gateway configured"),
        "{}",
        again.stdout
    );

    // Printing without --apply gives the identity Secrets, and without them
    // exactly deploy/mc.yaml.
    let printed = c
        .mc(&[
            "install",
            "--cluster-name",
            "east",
            "--identity-dir",
            dir.to_str().unwrap(),
        ])
        .await
        .ok();
    let printed = by_kind_and_name(yaml_docs(&printed.stdout));
    for secret in ["mc-trust-anchor", "mc-identity-issuer"] {
        assert!(
            printed.contains_key(&("Secret".to_string(), secret.to_string())),
            "{secret} printed"
        );
    }
    let printed = c
        .mc(&[
            "install",
            "--cluster-name",
            "CLUSTER",
            "--no-identity-secrets",
        ])
        .await
        .ok();
    let printed = by_kind_and_name(yaml_docs(&printed.stdout));
    let deploy =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/mc.yaml")).unwrap();
    assert_eq!(printed, by_kind_and_name(yaml_docs(&deploy)));

    // -o json is one valid List.
    let json = c
        .mc(&[
            "install",
            "--cluster-name",
            "x",
            "--no-identity-secrets",
            "-o",
            "json",
        ])
        .await
        .ok();
    let list: serde_json::Value = serde_json::from_str(&json.stdout).expect("valid JSON");
    assert_eq!(list["kind"], "List");
    assert!(list["items"].as_array().unwrap().len() > 10);

    // A generated anchor is never overwritten.
    c.mc(&["install", "--cluster-name", "x"]).await.ok();
    let second = c.mc(&["install", "--cluster-name", "x"]).await.failed();
    assert!(
        second.stderr.contains("already holds a trust anchor"),
        "{}",
        second.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_context_is_named_with_a_hint() {
    let c = Clusters::start().await;
    let bad = c.dir.path().join("bad-kubeconfig");
    let text = std::fs::read_to_string(&c.kubeconfig).unwrap();
    let port = c.west.port();
    std::fs::write(
        &bad,
        text.replace(&format!("127.0.0.1:{port}"), "127.0.0.1:1"),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-mc"))
        .args([
            "--kubeconfig",
            bad.to_str().unwrap(),
            "--context",
            "west",
            "gateways",
        ])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach context \"west\" at https://127.0.0.1:1"),
        "{stderr}"
    );
    assert!(
        stderr.contains("is the cluster up and the context right?"),
        "{stderr}"
    );
    let missing = c.mc(&["--context", "north", "gateways"]).await.failed();
    assert!(
        missing
            .stderr
            .contains("context \"north\" is not in the kubeconfig"),
        "{}",
        missing.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_applies_working_read_only_credentials_and_unlink_removes_them() {
    let c = Clusters::start().await;
    c.install_both().await;

    // The gateway's LoadBalancer gets no address: no cloud provider runs.
    let pending = c
        .mc(&["--context", "east", "link", "--cluster-name", "east"])
        .await
        .failed();
    assert!(
        pending.stderr.contains("no LoadBalancer address yet"),
        "{}",
        pending.stderr
    );
    assert!(
        pending.stderr.contains("--gateway-address"),
        "{}",
        pending.stderr
    );
    let wrong = c
        .mc(&[
            "--context",
            "east",
            "link",
            "--cluster-name",
            "west",
            "--gateway-address",
            "1.2.3.4",
        ])
        .await
        .failed();
    assert!(
        wrong.stderr.contains("installed as cluster \"east\""),
        "{}",
        wrong.stderr
    );

    // Printing needs the name of the cluster that will use the Link.
    let unnamed = c.mc(&link_east_args("192.0.2.10", &[])).await.failed();
    assert!(
        unnamed.stderr.contains("--from-cluster NAME"),
        "{}",
        unnamed.stderr
    );
    // Printing: a Secret then a Link.
    let printed = c.print_link_east_from_west("192.0.2.10", &[]).await;
    let docs = yaml_docs(&printed.stdout);
    assert_eq!(docs.len(), 2, "{}", printed.stdout);
    assert_eq!(docs[0]["kind"], "Secret");
    assert_eq!(docs[1]["kind"], "Link");
    let json = c
        .print_link_east_from_west("192.0.2.10", &["-o", "json"])
        .await;
    let list: serde_json::Value = serde_json::from_str(&json.stdout).expect("valid JSON");
    assert_eq!(
        list["items"][1]["spec"]["gatewayAddresses"][0],
        "192.0.2.10"
    );
    assert!(json.stderr.contains("loopback address"), "{}", json.stderr);
    let overridden = c
        .print_link_east_from_west(
            "192.0.2.10",
            &["--api-server-address", "https://east.example:6443"],
        )
        .await;
    let docs = yaml_docs(&overridden.stdout);
    let encoded = docs[0]["data"]["kubeconfig"].as_str().unwrap();
    let text = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded).unwrap(),
    )
    .unwrap();
    assert!(text.contains("server: https://east.example:6443"), "{text}");
    assert!(
        !overridden.stderr.contains("loopback"),
        "{}",
        overridden.stderr
    );

    c.link_west_to_east("192.0.2.10").await;
    let west = c.client("west").await;
    let link = Api::<Link>::namespaced(west.clone(), "mc-system")
        .get("east")
        .await
        .expect("Link in west");
    assert_eq!(link.spec.target_cluster_name, "east");
    assert_eq!(link.spec.credentials_secret, "mc-link-east");
    assert_eq!(link.spec.gateway_addresses, vec!["192.0.2.10".to_string()]);
    assert_eq!(link.spec.gateway_port, 4143);
    assert_eq!(link.spec.probe.port, 4191);
    assert_eq!(
        link.spec.gateway_identity,
        "spiffe://mc.local/ns/mc-system/sa/mc-gateway"
    );
    let secret = Api::<Secret>::namespaced(west.clone(), "mc-system")
        .get("mc-link-east")
        .await
        .expect("Secret in west");
    assert_eq!(secret.type_.as_deref(), Some("mc.dev/link-credentials"));
    let kubeconfig = String::from_utf8(secret.data.unwrap()["kubeconfig"].0.clone()).unwrap();

    // The credentials read east's Services and nothing more.
    let reader = {
        let kc = kube::config::Kubeconfig::from_yaml(&kubeconfig).expect("kubeconfig parses");
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("config");
        kube::Client::try_from(cfg).expect("client")
    };
    let services: Api<Service> = Api::all(reader.clone());
    services
        .list(&Default::default())
        .await
        .expect("reader lists Services");
    let created = Api::<Service>::namespaced(reader.clone(), "default")
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "nope"}, "spec": {"ports": [{"port": 80}]}
            }))
            .unwrap(),
        )
        .await;
    match created {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403),
        other => panic!("expected 403, got {other:?}"),
    }
    let secrets = Api::<Secret>::namespaced(reader, "mc-system")
        .list(&Default::default())
        .await;
    assert!(matches!(secrets, Err(kube::Error::Api(s)) if s.code == 403));
    let east = c.client("east").await;
    let account = Api::<ServiceAccount>::namespaced(east.clone(), "mc-system")
        .get("mc-link-west")
        .await
        .expect("west's reader SA");
    assert_eq!(
        account.metadata.labels.unwrap()["mc.dev/linked-cluster"],
        "west",
        "the account names the linked cluster for the gateway"
    );
    let reader_role = Api::<ClusterRole>::all(east)
        .get("mc-link-reader")
        .await
        .expect("reader role");
    for rule in reader_role.rules.unwrap() {
        assert_eq!(rule.verbs, vec!["get", "list", "watch"]);
    }

    // unlink removes both, and with --remote-context revokes west's access
    // in east too.
    let unlinked = c
        .mc(&[
            "--context",
            "west",
            "unlink",
            "--cluster-name",
            "east",
            "--remote-context",
            "east",
        ])
        .await
        .ok();
    assert!(
        unlinked
            .stdout
            .contains("serviceaccount/mc-link-west deleted in context \"east\""),
        "{}",
        unlinked.stdout
    );
    assert!(
        Api::<ServiceAccount>::namespaced(c.client("east").await, "mc-system")
            .get_opt("mc-link-west")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<Link>::namespaced(west.clone(), "mc-system")
            .get_opt("east")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<Secret>::namespaced(west.clone(), "mc-system")
            .get_opt("mc-link-east")
            .await
            .unwrap()
            .is_none()
    );
    let again = c
        .mc(&["--context", "west", "unlink", "--cluster-name", "east"])
        .await
        .failed();
    assert!(
        again.stderr.contains("has no Link \"east\""),
        "{}",
        again.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlink_force_cleans_up_when_the_controller_does_not() {
    let c = Clusters::start().await;
    c.install_both().await;
    c.link_west_to_east("192.0.2.10").await;
    let west = c.client("west").await;
    let links: Api<Link> = Api::namespaced(west.clone(), "mc-system");
    let finalizer = serde_json::json!({"metadata": {"finalizers": ["mc.dev/link-cleanup"]}});
    links
        .patch("east", &PatchParams::default(), &Patch::Merge(&finalizer))
        .await
        .unwrap();
    let mirror: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "backend-east", "namespace": "default",
                     "labels": {"mc.dev/mirror-of-cluster": "east", "mc.dev/mirror-of-service": "backend"}},
        "spec": {"ports": [{"port": 8080}]}
    }))
    .unwrap();
    Api::<Service>::namespaced(west.clone(), "default")
        .create(&PostParams::default(), &mirror)
        .await
        .unwrap();

    let stuck = c
        .mc(&[
            "--context",
            "west",
            "unlink",
            "--cluster-name",
            "east",
            "--timeout",
            "1s",
        ])
        .await
        .failed();
    assert!(
        stuck.stderr.contains("still terminating"),
        "{}",
        stuck.stderr
    );
    assert!(stuck.stderr.contains("--force"), "{}", stuck.stderr);

    c.mc(&[
        "--context",
        "west",
        "unlink",
        "--cluster-name",
        "east",
        "--timeout",
        "1s",
        "--force",
    ])
    .await
    .ok();
    assert!(links.get_opt("east").await.unwrap().is_none());
    assert!(
        Api::<Service>::namespaced(west.clone(), "default")
            .get_opt("backend-east")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<Secret>::namespaced(west, "mc-system")
            .get_opt("mc-link-east")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodeport_gateways_link_with_their_node_ports() {
    let c = Clusters::start().await;
    let dir = c.identity_dir();
    let dir = dir.to_str().unwrap();
    c.mc(&["identity", "init", "--out", dir]).await.ok();
    c.mc(&[
        "--context",
        "east",
        "install",
        "--cluster-name",
        "east",
        "--identity-dir",
        dir,
        "--gateway-service-type",
        "NodePort",
        "--apply",
    ])
    .await
    .ok();
    let east = c.client("east").await;
    let svc = Api::<Service>::namespaced(east, "mc-system")
        .get("mc-gateway")
        .await
        .unwrap();
    let ports = svc.spec.unwrap().ports.unwrap();
    let node_port = |name: &str| {
        ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .unwrap()
            .node_port
            .unwrap()
    };
    let no_address = c
        .mc(&["--context", "east", "link", "--cluster-name", "east"])
        .await
        .failed();
    assert!(
        no_address
            .stderr
            .contains("NodePort: pass --gateway-address"),
        "{}",
        no_address.stderr
    );
    let printed = c
        .print_link_east_from_west("192.0.2.20", &["-o", "json"])
        .await;
    let list: serde_json::Value = serde_json::from_str(&printed.stdout).unwrap();
    assert_eq!(list["items"][1]["spec"]["gatewayPort"], node_port("tunnel"));
    assert_eq!(
        list["items"][1]["spec"]["probe"]["port"],
        node_port("admin")
    );

    // The `<node-ip>:<nodePort>` habit: the port is the tunnel port, not
    // part of the address.
    let tunnel = node_port("tunnel").to_string();
    let with_port = format!("192.0.2.20:{tunnel}");
    let printed = c
        .print_link_east_from_west(&with_port, &["-o", "json"])
        .await;
    let list: serde_json::Value = serde_json::from_str(&printed.stdout).unwrap();
    assert_eq!(
        list["items"][1]["spec"]["gatewayAddresses"],
        serde_json::json!(["192.0.2.20"])
    );
    assert_eq!(list["items"][1]["spec"]["gatewayPort"], node_port("tunnel"));
    let mut args = link_east_args(&with_port, &["--from-cluster", "west"]);
    args.extend(["--gateway-port", "4143"]);
    let conflict = c.mc(&args).await.failed();
    assert!(
        conflict.stderr.contains("give the port once"),
        "{}",
        conflict.stderr
    );
    let garbage = c
        .mc(&link_east_args(
            "https://192.0.2.20",
            &["--from-cluster", "west"],
        ))
        .await
        .failed();
    assert!(
        garbage.stderr.contains("is not HOST or HOST:PORT"),
        "{}",
        garbage.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_unexport_label_services_and_refuse_missing_ones() {
    let c = Clusters::start().await;
    let east = c.client("east").await;
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "backend", "namespace": "shop"},
        "spec": {"selector": {"app": "backend"}, "ports": [{"port": 8080}]}
    }))
    .unwrap();
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "shop"}})).unwrap();
    Api::<Namespace>::all(east.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let services: Api<Service> = Api::namespaced(east.clone(), "shop");
    services.create(&PostParams::default(), &svc).await.unwrap();
    let label = |s: &Service| {
        s.metadata
            .labels
            .clone()
            .unwrap_or_default()
            .get("mc.dev/exported")
            .cloned()
    };

    let out = c
        .mc(&["--context", "east", "-n", "shop", "export", "svc/backend"])
        .await
        .ok();
    assert!(
        out.stdout.contains("service/backend exported"),
        "{}",
        out.stdout
    );
    assert_eq!(
        label(&services.get("backend").await.unwrap()).as_deref(),
        Some("true")
    );
    // Narrowing who may call, then widening again.
    let allowed = |svc: &Service| {
        svc.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("mc.dev/allowed-callers"))
            .cloned()
    };
    let out = c
        .mc(&[
            "--context",
            "east",
            "-n",
            "shop",
            "export",
            "svc/backend",
            "--allow",
            "west/shop/frontend, north",
        ])
        .await
        .ok();
    assert!(
        out.stdout
            .contains("service/backend exported to west/shop/frontend,north"),
        "{}",
        out.stdout
    );
    assert_eq!(
        allowed(&services.get("backend").await.unwrap()).as_deref(),
        Some("west/shop/frontend,north")
    );
    let bad = c
        .mc(&[
            "--context",
            "east",
            "-n",
            "shop",
            "export",
            "svc/backend",
            "--allow",
            "west/shop",
        ])
        .await
        .failed();
    assert!(bad.stderr.contains("neither a cluster"), "{}", bad.stderr);
    assert_eq!(
        allowed(&services.get("backend").await.unwrap()).as_deref(),
        Some("west/shop/frontend,north"),
        "a rejected --allow leaves the list as it was"
    );
    c.mc(&[
        "--context",
        "east",
        "-n",
        "shop",
        "export",
        "svc/backend",
        "--allow-any-linked",
    ])
    .await
    .ok();
    assert_eq!(allowed(&services.get("backend").await.unwrap()), None);

    c.mc(&["--context", "east", "-n", "shop", "unexport", "svc/backend"])
        .await
        .ok();
    assert_eq!(label(&services.get("backend").await.unwrap()), None);

    let missing = c
        .mc(&["--context", "east", "-n", "shop", "export", "svc/nope"])
        .await
        .failed();
    assert!(
        missing.stderr.contains("cannot export service \"nope\""),
        "{}",
        missing.stderr
    );
    assert!(
        missing
            .stderr
            .contains("namespace \"shop\" of context \"east\""),
        "{}",
        missing.stderr
    );
    let wrong_kind = c
        .mc(&["--context", "east", "export", "deploy/backend"])
        .await
        .failed();
    assert!(
        wrong_kind.stderr.contains("only Services can be exported"),
        "{}",
        wrong_kind.stderr
    );
}

async fn make_ready(c: &Clusters, ctx: &str) {
    let client = c.client(ctx).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "mc-system");
    for name in ["mc-controller", "mc-gateway"] {
        let status = serde_json::json!({"status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "observedGeneration": 1}});
        deployments
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    }
    let status = serde_json::json!({"status": {"desiredNumberScheduled": 2, "numberReady": 2, "currentNumberScheduled": 2, "numberMisscheduled": 0}});
    Api::<DaemonSet>::namespaced(client, "mc-system")
        .patch_status(
            "mc-node-agent",
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .unwrap();
}

async fn report_link_status(c: &Clusters, alive: bool) {
    let west = c.client("west").await;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let condition = |kind: &str, ok: bool| {
        serde_json::json!({
            "type": kind, "status": if ok { "True" } else { "False" }, "reason": if ok { "Ok" } else { "ProbeFailed" },
            "message": if ok { "fine" } else { "connection refused" }, "lastTransitionTime": now,
        })
    };
    let status = serde_json::json!({"status": {
        "conditions": [condition("CredentialsValid", true), condition("RemoteAPIReachable", true), condition("GatewayAlive", alive)],
        "gateway": {"alive": alive, "latencyMs": 7, "address": "192.0.2.10", "lastProbeTime": now},
        "mirroredServices": 1,
        "mirrors": [{"namespace": "default", "service": "backend", "mirror": "backend-east", "state": "Mirrored"}],
    }});
    Api::<Link>::namespaced(west.clone(), "mc-system")
        .patch_status("east", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let mirror: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "backend-east", "namespace": "default",
                     "labels": {"mc.dev/mirror-of-cluster": "east", "mc.dev/mirror-of-service": "backend"}},
        "spec": {"ports": [{"port": 8080}]}
    }))
    .unwrap();
    let services: Api<Service> = Api::namespaced(west, "default");
    if services.get_opt("backend-east").await.unwrap().is_none() {
        services
            .create(&PostParams::default(), &mirror)
            .await
            .unwrap();
    }
}

fn check_result<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["categories"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["checks"].as_array().unwrap())
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {report:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_failures_and_passes_once_installed_and_linked() {
    // No kube-controller-manager: `make_ready` writes the status kubelets
    // and the workload controllers would.
    let c = Clusters::start_with(false).await;
    let bare = c.mc(&["--context", "west", "check"]).await.failed();
    assert!(
        bare.stdout
            .contains("× links.mc.dev CRD is installed — hint:"),
        "{}",
        bare.stdout
    );
    assert!(bare.stdout.contains("install"), "{}", bare.stdout);

    c.install_both().await;
    let installed = c
        .mc(&["--context", "west", "check", "-o", "json"])
        .await
        .failed();
    let report: serde_json::Value = serde_json::from_str(&installed.stdout).expect("valid JSON");
    assert_eq!(report["success"], false);
    for name in [
        "links.mc.dev CRD is installed",
        "mc-system/mc-config names this cluster",
        "mc-controller ServiceAccount and RBAC are installed",
        "mc-gateway ServiceAccount and RBAC are installed",
        "mc-node-agent ServiceAccount and RBAC are installed",
        "identity Secrets chain to the trust anchor",
        "certificates are not near expiry",
    ] {
        assert_eq!(
            check_result(&report, name)["result"],
            "pass",
            "{name}: {report:#}"
        );
    }
    let controller = check_result(&report, "mc-controller Deployment is running and ready");
    assert_eq!(controller["result"], "fail");
    assert!(
        controller["hint"]
            .as_str()
            .unwrap()
            .contains("no ready replica")
    );

    make_ready(&c, "west").await;
    c.link_west_to_east("127.0.0.1").await;
    let backend: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "backend", "namespace": "default", "labels": {"mc.dev/exported": "true"}},
        "spec": {"ports": [{"port": 8080}]}
    }))
    .unwrap();
    Api::<Service>::namespaced(c.client("east").await, "default")
        .create(&PostParams::default(), &backend)
        .await
        .unwrap();
    let unreported = c.mc(&["--context", "west", "check"]).await.failed();
    assert!(
        unreported
            .stdout
            .contains("× Link east: credentials valid — hint: the controller has not reported"),
        "{}",
        unreported.stdout
    );

    report_link_status(&c, true).await;
    let linked = c
        .mc(&[
            "--context",
            "west",
            "check",
            "--remote-context",
            "east",
            "-o",
            "json",
        ])
        .await;
    let report: serde_json::Value = serde_json::from_str(&linked.stdout).expect("valid JSON");
    for name in [
        "Link east: credentials valid",
        "Link east: remote API reachable from the controller",
        "Link east: gateway alive",
        "Link east: trust anchors shared",
        "Link east: mirrors in step with remote exports",
        "every mirror Service belongs to a Link",
    ] {
        assert_eq!(
            check_result(&report, name)["result"],
            "pass",
            "{name}: {report:#}"
        );
    }
    // Nothing listens on 127.0.0.1:4143 here: the identity check is skipped, not failed.
    assert_eq!(
        check_result(&report, "Link east: gateway presents the expected identity")["result"],
        "skip"
    );
    // The gateway LoadBalancer has no address (no cloud provider): a warning only.
    assert_eq!(
        check_result(
            &report,
            "mc-gateway Service has an address other clusters can use"
        )["result"],
        "warn"
    );
    assert_eq!(report["success"], true, "{report:#}");
    assert_eq!(linked.code, 0);

    // east exports a Service west has not mirrored: the mirror check says which.
    let east = c.client("east").await;
    let exported: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "cart", "namespace": "default", "labels": {"mc.dev/exported": "true"}},
        "spec": {"ports": [{"port": 80}]}
    }))
    .unwrap();
    Api::<Service>::namespaced(east, "default")
        .create(&PostParams::default(), &exported)
        .await
        .unwrap();
    report_link_status(&c, false).await;
    let broken = c
        .mc(&["--context", "west", "check", "--remote-context", "east"])
        .await
        .failed();
    assert!(
        broken
            .stdout
            .contains("× Link east: gateway alive — hint: ProbeFailed: connection refused"),
        "{}",
        broken.stdout
    );
    assert!(
        broken
            .stdout
            .contains("east exports default/cart but it is not mirrored"),
        "{}",
        broken.stdout
    );
    assert!(
        broken.stdout.contains("Status check results are ×"),
        "{}",
        broken.stdout
    );

    // A malformed allowed-callers list on a Service west exports.
    let payments: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "payments", "namespace": "default",
            "labels": {"mc.dev/exported": "true"},
            "annotations": {"mc.dev/allowed-callers": "east/default"}},
        "spec": {"ports": [{"port": 80}]}
    }))
    .unwrap();
    Api::<Service>::namespaced(c.client("west").await, "default")
        .create(&PostParams::default(), &payments)
        .await
        .unwrap();
    let policy = c.mc(&["--context", "west", "check"]).await.failed();
    let line = policy
        .stdout
        .lines()
        .find(|l| l.contains("allowed-callers lists are valid"))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.starts_with('×') && line.contains("default/payments: \"east/default\" is neither"),
        "{}",
        policy.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_and_stat_show_the_link_status() {
    let c = Clusters::start().await;
    c.install_both().await;
    c.link_west_to_east("192.0.2.10").await;
    let unknown = c.mc(&["--context", "west", "gateways"]).await.ok();
    assert!(unknown.stdout.contains("Unknown"), "{}", unknown.stdout);
    report_link_status(&c, true).await;
    let table = c.mc(&["--context", "west", "gateways"]).await.ok();
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(
        lines[0].starts_with("CLUSTER   ALIVE   NUM_SVC   LATENCY"),
        "{}",
        table.stdout
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        &row[..5],
        &["east", "True", "1", "7ms", "192.0.2.10"],
        "{}",
        table.stdout
    );
    let json = c
        .mc(&["--context", "west", "gateways", "-o", "json"])
        .await
        .ok();
    let rows: serde_json::Value = serde_json::from_str(&json.stdout).expect("valid JSON");
    assert_eq!(rows[0]["clusterName"], "east");
    assert_eq!(rows[0]["alive"], true);
    assert_eq!(rows[0]["numberOfServices"], 1);
    assert_eq!(rows[0]["latencyMs"], 7);
    let stat = c
        .mc(&["--context", "west", "stat", "-o", "yaml"])
        .await
        .ok();
    let stat: serde_yaml::Value = serde_yaml::from_str(&stat.stdout).expect("valid YAML");
    assert_eq!(stat[0]["clusterName"], "east");
    assert_eq!(stat[0]["gatewayAlive"], "True");
    assert_eq!(stat[0]["mirrored"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninstall_refuses_while_links_exist_and_forces_through() {
    let c = Clusters::start().await;
    c.install_both().await;
    c.link_west_to_east("192.0.2.10").await;
    let refused = c
        .mc(&["--context", "west", "uninstall", "--apply"])
        .await
        .failed();
    assert!(
        refused.stderr.contains("still has 1 Link(s): east"),
        "{}",
        refused.stderr
    );
    let west = c.client("west").await;
    assert!(
        Api::<Link>::namespaced(west.clone(), "mc-system")
            .get_opt("east")
            .await
            .unwrap()
            .is_some()
    );

    c.mc(&["--context", "west", "uninstall", "--apply", "--force"])
        .await
        .ok();
    // The API server deletes a CRD once its Links are cleaned up.
    let crds: Api<CustomResourceDefinition> = Api::all(west.clone());
    eventually(Duration::from_secs(10), "the Link CRD gone", || async {
        crds.get_opt("links.mc.dev")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        Api::<ClusterRole>::all(west.clone())
            .get_opt("mc-controller")
            .await
            .unwrap()
            .is_none()
    );
    let ns = Api::<Namespace>::all(west.clone())
        .get_opt("mc-system")
        .await
        .unwrap();
    assert!(ns.is_none_or(|n| n.metadata.deletion_timestamp.is_some()));

    // east has no Links, but west's reader is there again (a printed link
    // makes it): uninstall prints what it would delete, then deletes.
    c.print_link_east_from_west("192.0.2.10", &[]).await;
    let printed = c.mc(&["--context", "east", "uninstall"]).await.ok();
    let docs = yaml_docs(&printed.stdout);
    assert!(
        docs.iter()
            .any(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == "mc-link-reader")
    );
    c.mc(&["--context", "east", "uninstall", "--apply"])
        .await
        .ok();
    let east = c.client("east").await;
    assert!(
        Api::<ServiceAccount>::namespaced(east.clone(), "mc-system")
            .get_opt("mc-link-west")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<ClusterRoleBinding>::all(east.clone())
            .get_opt("mc-link-west")
            .await
            .unwrap()
            .is_none(),
        "uninstall removes the linked cluster's cluster-wide binding"
    );
}

/// A TLS listener presenting a leaf for `service_account` issued by `anchor`.
async fn fake_gateway(anchor: &mc_identity::TrustAnchor, service_account: &str) -> u16 {
    let leaf = anchor
        .issue(
            "mc-system",
            service_account,
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
    let identity =
        mc_identity::Identity::from_pem(&leaf.cert_pem, &leaf.key_pem, anchor.cert_pem()).unwrap();
    let source = std::sync::Arc::new(mc_identity::SharedIdentity::new(identity));
    let acceptor = tokio_rustls::TlsAcceptor::from(mc_identity::server_config(source).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(stream).await;
            });
        }
    });
    port
}

async fn link_to(c: &Clusters, port: u16) {
    let port = port.to_string();
    c.mc(&[
        "--context",
        "east",
        "link",
        "--cluster-name",
        "east",
        "--gateway-address",
        "127.0.0.1",
        "--gateway-port",
        &port,
        "--apply-to",
        "west",
    ])
    .await
    .ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_verifies_the_identity_a_reachable_gateway_presents() {
    let c = Clusters::start().await;
    c.install_both().await;
    let anchor = mc_identity::TrustAnchor::read("mc.local", &c.identity_dir()).unwrap();
    let identity_check = "Link east: gateway presents the expected identity";
    let anchors_check = "Link east: trust anchors shared";

    link_to(&c, fake_gateway(&anchor, "mc-gateway").await).await;
    let out = c.mc(&["--context", "west", "check", "-o", "json"]).await;
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        check_result(&report, identity_check)["result"],
        "pass",
        "{report:#}"
    );
    assert_eq!(
        check_result(&report, anchors_check)["result"],
        "pass",
        "{report:#}"
    );

    link_to(&c, fake_gateway(&anchor, "impostor").await).await;
    let out = c.mc(&["--context", "west", "check", "-o", "json"]).await;
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let result = check_result(&report, identity_check);
    assert_eq!(result["result"], "fail");
    assert!(
        result["hint"]
            .as_str()
            .unwrap()
            .contains("presents spiffe://mc.local/ns/mc-system/sa/impostor"),
        "{result}"
    );

    let stranger = mc_identity::TrustAnchor::generate("mc.local").unwrap();
    link_to(&c, fake_gateway(&stranger, "mc-gateway").await).await;
    let out = c.mc(&["--context", "west", "check", "-o", "json"]).await;
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        check_result(&report, identity_check)["result"],
        "fail",
        "{report:#}"
    );
    let anchors = check_result(&report, anchors_check);
    assert_eq!(anchors["result"], "fail", "{report:#}");
    assert!(
        anchors["hint"]
            .as_str()
            .unwrap()
            .contains("same --identity-dir"),
        "{anchors}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_refuses_clusters_installed_with_different_anchors() {
    let c = Clusters::start().await;
    for ctx in ["east", "west"] {
        // Each install generates its own anchor.
        let out = c.identity_dir().join(ctx);
        c.mc(&[
            "--context",
            ctx,
            "install",
            "--cluster-name",
            ctx,
            "--identity-out",
            out.to_str().unwrap(),
            "--apply",
        ])
        .await
        .ok();
    }
    let refused = c
        .mc(&[
            "--context",
            "east",
            "link",
            "--cluster-name",
            "east",
            "--gateway-address",
            "127.0.0.1",
            "--apply-to",
            "west",
        ])
        .await
        .failed();
    assert!(
        refused.stderr.contains("trust anchors differ"),
        "{}",
        refused.stderr
    );
    let links = Api::<Link>::namespaced(c.client("west").await, "mc-system")
        .list(&Default::default())
        .await
        .expect("links");
    assert!(links.items.is_empty(), "nothing linked");
}
