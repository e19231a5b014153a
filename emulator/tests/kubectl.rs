//! kubectl against the emulator: create -f, get (tables, selectors, -o json),
//! label, delete and api-resources. Skipped with a note when kubectl is not on PATH.

mod common;

use tokio::process::Command;

async fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .await
        .expect("kubectl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn ok(kubeconfig: &std::path::Path, args: &[&str]) -> String {
    let (success, stdout, stderr) = kubectl(kubeconfig, args).await;
    assert!(success, "kubectl {args:?} failed: {stderr}");
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_get_label_delete() {
    if std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        eprintln!("NOTE: kubectl not on PATH; skipping the kubectl test");
        return;
    }
    let t = common::start().await;
    let kc = t.dir.path().join("kubeconfig");
    std::fs::write(&kc, t.emu.admin_kubeconfig("emu")).expect("write kubeconfig");
    let manifest = t.dir.path().join("objs.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c1\n  namespace: demo\ndata:\n  a: b\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: demo\nspec:\n  ports:\n  - port: 80\n",
    )
    .expect("manifest");

    let out = ok(
        &kc,
        &["create", "-f", manifest.to_str().expect("utf8 path")],
    )
    .await;
    assert!(out.contains("configmap/c1 created"), "{out}");
    let out = ok(&kc, &["get", "ns"]).await;
    assert!(
        out.contains("demo") && out.contains("Active") && out.contains("kube-system"),
        "{out}"
    );
    let out = ok(&kc, &["-n", "demo", "get", "svc"]).await;
    assert!(out.contains("web") && out.contains("10.96.0."), "{out}");

    ok(
        &kc,
        &["-n", "demo", "label", "configmap", "c1", "tier=gold"],
    )
    .await;
    let out = ok(
        &kc,
        &["-n", "demo", "get", "cm", "-l", "tier=gold", "-o", "name"],
    )
    .await;
    assert_eq!(out.trim(), "configmap/c1");
    let out = ok(
        &kc,
        &[
            "-n",
            "demo",
            "get",
            "cm",
            "c1",
            "-o",
            "jsonpath={.metadata.labels.tier}",
        ],
    )
    .await;
    assert_eq!(out, "gold");
    let out = ok(&kc, &["api-resources", "--api-group=apps", "-o", "name"]).await;
    assert!(out.contains("deployments.apps"), "{out}");

    let (success, _, stderr) = kubectl(&kc, &["-n", "demo", "get", "cm", "nope"]).await;
    assert!(
        !success && stderr.contains("configmaps \"nope\" not found"),
        "{stderr}"
    );

    ok(&kc, &["-n", "demo", "delete", "configmap", "c1"]).await;
    ok(&kc, &["delete", "namespace", "demo"]).await;
    let (success, _, stderr) = kubectl(&kc, &["get", "ns", "demo"]).await;
    assert!(!success && stderr.contains("not found"), "{stderr}");
}
