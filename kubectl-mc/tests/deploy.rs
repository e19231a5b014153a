//! deploy/mc.yaml is exactly what `install --cluster-name CLUSTER
//! --no-identity-secrets` prints. `MC_UPDATE_DEPLOY=1` rewrites it.

use std::path::PathBuf;

fn deploy_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/mc.yaml")
}

#[test]
fn deploy_manifest_is_current() {
    let rendered = kubectl_mc::manifests::deploy_yaml().expect("renders");
    let path = deploy_file();
    if std::env::var_os("MC_UPDATE_DEPLOY").is_some() {
        std::fs::write(&path, &rendered).expect("deploy/mc.yaml written");
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == rendered,
        "deploy/mc.yaml is stale: run `MC_UPDATE_DEPLOY=1 cargo test -p kubectl-mc --test deploy`"
    );
}

#[test]
fn binary_prints_the_deploy_manifest() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-mc"))
        .args([
            "install",
            "--cluster-name",
            "CLUSTER",
            "--no-identity-secrets",
        ])
        .output()
        .expect("kubectl-mc runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = kubectl_mc::manifests::deploy_yaml().expect("renders");
    let body = rendered
        .lines()
        .skip_while(|l| l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        body.trim_end()
    );
}
