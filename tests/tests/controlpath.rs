//! The control path end to end, the way a user drives it: `kubectl mc
//! install` in east and west, `link` both ways, a `backend` Deployment in
//! east exported with `kubectl mc export`, and then what the user relies on:
//! the mirror `backend-east` in west follows export, port changes and
//! unexport; long names mirror; a Service mc does not own is left alone and
//! reported; an outage of east's API keeps mirrors and traffic; a rotated
//! link token is picked up; unlink removes every mirror; `check` tells a
//! healthy setup from a broken one, naming the check.
//!
//! Every step goes through the real binaries (kubectl-mc on the host, the
//! components as the lab's Deployments and DaemonSet). Needs root, nftables
//! and the built binaries (`cargo build`). Each test brings up its own lab.

use std::collections::BTreeSet;
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Node, Secret, Service, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use mc_api::Link;
use mc_api::labels::{EXPORTED, MIRROR_OF_CLUSTER, MIRROR_OF_SERVICE};
use mc_e2e::{Lab, eventually};
use serde_json::json;

/// The client pod in west, on a node of its own choosing.
const CLIENT: &str = "west/default/client";
/// The issue's promise: after export, port change or unexport, the mirror
/// in west is in step (and, after export, a west pod's call is answered)
/// within 2 s. Asserted because it holds with a wide margin here: measured
/// 10-540 ms with two labs side by side and two CPU hogs on 2 cores (the
/// tests print each measurement; the benchmark tracks the numbers).
const ISSUE_TARGET: Duration = Duration::from_secs(2);
/// Waits that are no part of the promise (setup, recovery after an outage
/// or a token rotation, traffic through a new port).
const MIRROR_DEADLINE: Duration = Duration::from_secs(5);
/// Longest wait for something the controller does in the background
/// (conflict reports, health after an outage, credentials).
const SETTLE: Duration = Duration::from_secs(20);
/// The name `check` gives to each Link check it fails on below.
const CHECK_REMOTE_API: &str = "Link east: remote API reachable from the controller";
const CHECK_CREDENTIALS: &str = "Link east: credentials valid";
const CHECK_MIRRORS: &str = "Link east: mirrors in step with remote exports";

/// Two clusters with mc installed and linked both ways, and a `backend`
/// Deployment (3 echo pods) with its Service in east, not exported yet.
struct Linked {
    lab: Lab,
    east: Client,
    west: Client,
}

/// The output of a command that must succeed.
fn succeeded(out: Output, what: &str) -> Result<String> {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

impl Linked {
    async fn start() -> Result<Linked> {
        let lab = Lab::up(&["east", "west"], 2)?;
        let east = lab.client("east").await?;
        let west = lab.client("west").await?;
        let identity = std::path::PathBuf::from("/run/mc-lab")
            .join(&lab.name)
            .join("mc-identity");
        let identity = identity.to_string_lossy().into_owned();
        succeeded(
            lab.kubectl_mc(&["identity", "init", "--out", &identity])?,
            "identity init",
        )?;
        for (cluster, client) in [("east", &east), ("west", &west)] {
            succeeded(
                lab.kubectl_mc(&[
                    "--context",
                    cluster,
                    "install",
                    "--cluster-name",
                    cluster,
                    "--identity-dir",
                    &identity,
                    "--apply",
                ])?,
                &format!("install in {cluster}"),
            )?;
            wait_installed(client)
                .await
                .with_context(|| format!("mc in {cluster} did not become ready"))?;
        }
        for (from, to) in [("east", "west"), ("west", "east")] {
            succeeded(
                lab.kubectl_mc(&[
                    "--context",
                    from,
                    "link",
                    "--cluster-name",
                    from,
                    "--apply-to",
                    to,
                ])?,
                &format!("link {from} -> {to}"),
            )?;
        }
        lab.apply("east", BACKEND, &["--wait"])?;
        lab.run_pod(CLIENT, "app=client", None, None, &["sleep", "3600"])?;
        Ok(Linked { lab, east, west })
    }

    fn mc(&self, args: &[&str]) -> Result<String> {
        succeeded(
            self.lab.kubectl_mc(args)?,
            &format!("kubectl mc {}", args.join(" ")),
        )
    }

    /// `kubectl mc --context east export svc/<name>`, then the time until
    /// the mirror `mirror` exists in west.
    async fn export_and_time(&self, name: &str, mirror: &str) -> Result<Duration> {
        self.mc(&["--context", "east", "export", &format!("svc/{name}")])?;
        let started = Instant::now();
        wait_for(ISSUE_TARGET, || async {
            get_service(&self.west, mirror).await.map(|s| s.is_some())
        })
        .await
        .with_context(|| format!("mirror {mirror} did not appear after exporting {name}"))?;
        Ok(started.elapsed())
    }

    /// `curl` from the west client pod; its output when it succeeded.
    fn curl(&self, url: &str) -> Result<String> {
        succeeded(
            self.lab.exec(
                CLIENT,
                &["curl", "-sS", "--connect-timeout", "2", "-m", "3", url],
            )?,
            &format!("curl {url}"),
        )
    }

    /// Waits until `url` answers from one of east's backend pods.
    async fn answered_by_east(&self, url: &str) -> Result<String> {
        eventually(MIRROR_DEADLINE, || async {
            let answer = self.curl(url)?;
            ensure!(
                answer.contains("cluster=east") && answer.contains("pod=backend-"),
                "{url} answered {answer:?}"
            );
            Ok(answer)
        })
        .await
    }

    /// `kubectl mc --context <context> check`: whether it passed, and what
    /// it printed.
    fn check(&self, context: &str) -> Result<(bool, String)> {
        let out = self.lab.kubectl_mc(&["--context", context, "check"])?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.success(), text))
    }

    /// Waits until west's check passes.
    async fn check_passes(&self) -> Result<String> {
        eventually(SETTLE, || async {
            let (passed, text) = self.check("west")?;
            ensure!(passed, "check fails:\n{text}");
            Ok(text)
        })
        .await
    }

    /// Waits until west's check fails on a line naming `check`.
    async fn check_fails_naming(&self, check: &str) -> Result<String> {
        eventually(SETTLE, || async {
            let (passed, text) = self.check("west")?;
            ensure!(!passed, "check still passes:\n{text}");
            let line = failed_line(&text, check)
                .with_context(|| format!("check fails, but not on {check:?}:\n{text}"))?;
            Ok(line.to_string())
        })
        .await
    }
}

/// The line of a failed check (marked `×`) that names `check`.
fn failed_line<'a>(text: &'a str, check: &str) -> Option<&'a str> {
    text.lines()
        .find(|line| line.trim_start().starts_with('×') && line.contains(check))
}

/// 3 `mc-lab echo` pods (HTTP 8080, TCP 9000) behind Service `backend`.
const BACKEND: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: backend, labels: {app: backend}}
spec:
  replicas: 3
  selector: {matchLabels: {app: backend}}
  template:
    metadata: {labels: {app: backend}}
    spec:
      containers:
      - name: echo
        image: mc-lab/echo
        command: [mc-lab, echo]
        ports: [{name: http, containerPort: 8080}, {name: tcp, containerPort: 9000}]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: backend, labels: {app: backend, tier: api}}
spec:
  selector: {app: backend}
  ports: [{name: http, port: 8080}, {name: tcp, port: 9000}]
"#;

/// A Service in `default` selecting the backend pods.
fn service_yaml(name: &str, ports: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\n\
         spec: {{selector: {{app: backend}}, ports: {ports}}}\n"
    )
}

async fn wait_installed(client: &Client) -> Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), mc_api::NAMESPACE);
    let daemon_sets: Api<DaemonSet> = Api::namespaced(client.clone(), mc_api::NAMESPACE);
    let services: Api<Service> = Api::namespaced(client.clone(), mc_api::NAMESPACE);
    eventually(Duration::from_secs(60), || async {
        for name in ["mc-controller", "mc-gateway"] {
            let ready = deployments
                .get(name)
                .await?
                .status
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            ensure!(ready >= 1, "Deployment {name} has no ready replica");
        }
        let status = daemon_sets
            .get("mc-node-agent")
            .await?
            .status
            .context("DaemonSet mc-node-agent has no status")?;
        ensure!(
            status.desired_number_scheduled == 2 && status.number_ready == 2,
            "DaemonSet mc-node-agent: {} of {} ready",
            status.number_ready,
            status.desired_number_scheduled
        );
        let ingress = services
            .get("mc-gateway")
            .await?
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|lb| lb.ingress)
            .unwrap_or_default();
        ensure!(
            !ingress.is_empty(),
            "mc-gateway has no LoadBalancer address"
        );
        Ok(())
    })
    .await
}

async fn get_service(client: &Client, name: &str) -> Result<Option<Service>> {
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    Ok(services.get_opt(name).await?)
}

/// Polls `done` quickly (the tests measure how long things take) until it
/// returns true or `timeout` passes.
async fn wait_for<F, Fut>(timeout: Duration, mut done: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match done().await {
            Ok(true) => return Ok(()),
            Ok(false) => "not yet".to_string(),
            Err(error) => format!("{error:#}"),
        };
        if Instant::now() > deadline {
            bail!("not within {timeout:?} ({last})");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// (name, port, targetPort, protocol) of a Service's ports.
fn ports(service: &Service) -> Vec<(String, i32, String, String)> {
    service
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let target = match p.target_port {
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => {
                    n.to_string()
                }
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s)) => s,
                None => String::new(),
            };
            (
                p.name.unwrap_or_default(),
                p.port,
                target,
                p.protocol.unwrap_or_default(),
            )
        })
        .collect()
}

fn port(name: &str, port: i32) -> (String, i32, String, String) {
    (name.into(), port, port.to_string(), "TCP".into())
}

/// Asserts that `mirror` is what mc makes of east's `service`.
fn assert_is_mirror(mirror: &Service, service: &str) {
    let labels = mirror.labels();
    assert_eq!(
        labels.get(MIRROR_OF_CLUSTER).map(String::as_str),
        Some("east")
    );
    assert_eq!(
        labels.get(MIRROR_OF_SERVICE).map(String::as_str),
        Some(service)
    );
    assert_eq!(
        mirror
            .annotations()
            .get("mc.dev/remote-service")
            .map(String::as_str),
        Some(format!("default/{service}").as_str())
    );
    let spec = mirror.spec.clone().unwrap_or_default();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert!(
        spec.selector.unwrap_or_default().is_empty(),
        "a mirror has no selector"
    );
    assert!(
        spec.cluster_ip
            .is_some_and(|ip| !ip.is_empty() && ip != "None"),
        "a mirror has a ClusterIP"
    );
}

/// The pod named in an echo answer.
fn pod_of(answer: &str) -> Option<String> {
    answer
        .split_whitespace()
        .find_map(|w| w.strip_prefix("pod="))
        .map(str::to_string)
}

/// Prints a measured time (run with `--nocapture` to see them).
fn report(what: &str, took: Duration) {
    eprintln!("measured: {what} in {took:?} (the issue promises {ISSUE_TARGET:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_services_mirror_follow_changes_and_leave_foreign_services_alone() -> Result<()> {
    let linked = Linked::start().await?;
    let (east, west) = (&linked.east, &linked.west);

    // Export: the mirror appears with the same ports, and a west pod's call
    // by name is answered by east's pods.
    let took = linked.export_and_time("backend", "backend-east").await?;
    report("export -> mirror in west", took);
    let started = Instant::now();
    let answer = linked.answered_by_east("http://backend-east:8080/").await?;
    let answered = took + started.elapsed();
    report("export -> first answer from east", answered);
    assert!(
        answered <= ISSUE_TARGET,
        "a west pod's first answer from east came {answered:?} after export"
    );
    assert!(answer.contains("namespace=default"), "{answer}");
    let mirror = get_service(west, "backend-east")
        .await?
        .context("backend-east is gone")?;
    assert_is_mirror(&mirror, "backend");
    assert_eq!(ports(&mirror), [port("http", 8080), port("tcp", 9000)]);
    assert_eq!(
        mirror.labels().get("tier").map(String::as_str),
        Some("api"),
        "the remote Service's own labels are carried over"
    );
    let mut seen = BTreeSet::new();
    for _ in 0..40 {
        seen.extend(pod_of(&linked.curl("http://backend-east:8080/")?));
        if seen.len() == 3 {
            break;
        }
    }
    assert_eq!(seen.len(), 3, "only {seen:?} of east's 3 pods answered");
    let (passed, text) = linked.check("west")?;
    assert!(passed, "check fails on a healthy setup:\n{text}");

    // A Service exported in its own manifest, applied twice with kubectl
    // as users do: created, then unchanged, and its mirror with it.
    let manifest = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: default\n  \
         labels:\n    {EXPORTED}: \"true\"\nspec:\n  selector:\n    app: backend\n  \
         ports:\n  - name: http\n    port: 8080\n"
    );
    let first = succeeded(
        linked
            .lab
            .kubectl(&["--context", "east", "apply", "-f", "-"], &manifest)?,
        "kubectl apply -f web",
    )?;
    assert_eq!(first.trim(), "service/web created");
    wait_for(MIRROR_DEADLINE, || async {
        Ok(get_service(west, "web-east").await?.is_some())
    })
    .await
    .context("no mirror of a Service exported by kubectl apply")?;
    let before = get_service(west, "web-east").await?.context("web-east")?;
    let again = succeeded(
        linked
            .lab
            .kubectl(&["--context", "east", "apply", "-f", "-"], &manifest)?,
        "kubectl apply -f web, again",
    )?;
    assert_eq!(again.trim(), "service/web unchanged");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = get_service(west, "web-east").await?.context("web-east")?;
    assert_eq!(
        (before.uid(), before.resource_version()),
        (after.uid(), after.resource_version()),
        "re-applying an unchanged export rewrote its mirror"
    );
    assert!(
        text.contains(CHECK_MIRRORS),
        "check names the mirror check:\n{text}"
    );

    // Ports change in east (as `kubectl patch` does it): the mirror follows
    // and the new port carries traffic to the old target port.
    let services: Api<Service> = Api::namespaced(east.clone(), "default");
    let patch = json!({"spec": {"ports": [
        {"name": "http", "port": 80, "targetPort": 8080},
        {"name": "tcp", "port": 9000},
        {"name": "tcp-alt", "port": 9001, "targetPort": 9000},
    ]}});
    services
        .patch("backend", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let started = Instant::now();
    wait_for(ISSUE_TARGET, || async {
        let mirror = get_service(west, "backend-east").await?;
        Ok(mirror.is_some_and(|m| {
            ports(&m) == [port("http", 80), port("tcp", 9000), port("tcp-alt", 9001)]
        }))
    })
    .await
    .context("the mirror's ports did not follow east's")?;
    report("port change -> mirror updated", started.elapsed());
    linked.answered_by_east("http://backend-east:80/").await?;
    let echoed = eventually(MIRROR_DEADLINE, || async {
        linked
            .lab
            .tcp_from(CLIENT, "backend-east:9001", "through the new port")
    })
    .await?;
    assert_eq!(echoed, "through the new port");

    // Unexport: the mirror goes and the call fails, by name and by the
    // address a client may still hold.
    let old_ip = get_service(west, "backend-east")
        .await?
        .and_then(|s| s.spec)
        .and_then(|s| s.cluster_ip)
        .context("backend-east has no ClusterIP")?;
    linked.mc(&["--context", "east", "unexport", "svc/backend"])?;
    let started = Instant::now();
    wait_for(ISSUE_TARGET, || async {
        Ok(get_service(west, "backend-east").await?.is_none())
    })
    .await
    .context("the mirror stayed after unexport")?;
    report("unexport -> mirror removed", started.elapsed());
    let refused = linked.curl("http://backend-east:80/");
    assert!(
        refused.is_err(),
        "still answered after unexport: {refused:?}"
    );
    let refused = linked.curl(&format!("http://{old_ip}:80/"));
    assert!(
        refused.is_err(),
        "the old ClusterIP still answered after unexport: {refused:?}"
    );

    // A 60-character name mirrors under the shortened, deterministic name
    // and carries traffic.
    let long = "orders-fulfilment-reconciliation-service-for-warehouse-apis1";
    assert_eq!(long.len(), 60);
    linked.lab.apply(
        "east",
        &service_yaml(long, "[{name: http, port: 8080}]"),
        &[],
    )?;
    let shortened = shortened_mirror_name(long, "east");
    assert_eq!(shortened.len(), 63, "{shortened}");
    let took = linked.export_and_time(long, &shortened).await?;
    report("export of a 60-character name -> mirror", took);
    let mirror = get_service(west, &shortened)
        .await?
        .context("the long mirror is gone")?;
    assert_is_mirror(&mirror, long);
    assert_eq!(ports(&mirror), [port("http", 8080)]);
    linked
        .answered_by_east(&format!("http://{shortened}:8080/"))
        .await?;
    // Deleting the exported Service in east removes its mirror too.
    services.delete(long, &DeleteParams::default()).await?;
    let started = Instant::now();
    wait_for(ISSUE_TARGET, || async {
        Ok(get_service(west, &shortened).await?.is_none())
    })
    .await
    .context("the mirror stayed after its Service was deleted in east")?;
    report("remote deletion -> mirror removed", started.elapsed());

    // A west Service called backend-east that mc did not make: exporting
    // backend again leaves it untouched and reports the conflict.
    linked.lab.apply(
        "west",
        "apiVersion: v1\nkind: Service\nmetadata: {name: backend-east, labels: {team: west}}\n\
         spec: {selector: {app: legacy}, ports: [{name: web, port: 7000}]}\n",
        &[],
    )?;
    let foreign = get_service(west, "backend-east")
        .await?
        .context("the foreign backend-east is missing")?;
    linked.mc(&["--context", "east", "export", "svc/backend"])?;
    let links: Api<Link> = Api::namespaced(west.clone(), mc_api::NAMESPACE);
    let message = eventually(SETTLE, || async {
        let link = links.get("east").await?;
        let mirrors = link.status.map(|s| s.mirrors).unwrap_or_default();
        let entry = mirrors
            .iter()
            .find(|m| m.service == "backend")
            .context("no status for backend yet")?;
        ensure!(entry.state == "Conflict", "backend is {}", entry.state);
        Ok(entry.message.clone())
    })
    .await
    .context("the conflict was not reported in the Link's status")?;
    assert!(message.contains("backend-east"), "{message}");
    let line = linked.check_fails_naming(CHECK_MIRRORS).await?;
    assert!(
        line.contains("backend-east") || line.contains("Conflict"),
        "{line}"
    );
    let events: Api<Event> = Api::namespaced(west.clone(), mc_api::NAMESPACE);
    let warned = events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .any(|e| {
            e.reason.as_deref() == Some("MirrorConflict") && e.type_.as_deref() == Some("Warning")
        });
    assert!(warned, "no MirrorConflict Warning Event in west");
    // Give the controller more than one chance to (wrongly) take it over.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = get_service(west, "backend-east")
        .await?
        .context("the foreign backend-east was deleted")?;
    assert_eq!(after.metadata.uid, foreign.metadata.uid, "it was recreated");
    assert_eq!(
        after.metadata.resource_version, foreign.metadata.resource_version,
        "it was modified"
    );
    assert_eq!(after.labels().get(MIRROR_OF_CLUSTER), None);

    // Once the owner removes it, mc mirrors, and check is healthy again.
    let west_services: Api<Service> = Api::namespaced(west.clone(), "default");
    west_services
        .delete("backend-east", &DeleteParams::default())
        .await?;
    let mirror = eventually(SETTLE, || async {
        let mirror = get_service(west, "backend-east")
            .await?
            .context("no mirror yet")?;
        ensure!(
            mirror.labels().contains_key(MIRROR_OF_CLUSTER),
            "not a mirror yet"
        );
        Ok(mirror)
    })
    .await?;
    assert_is_mirror(&mirror, "backend");
    linked.check_passes().await?;
    linked.answered_by_east("http://backend-east:80/").await?;
    Ok(())
}

/// The contract's mirror name for names too long for `<svc>-<cluster>`:
/// `<svc truncated>-<8 hex of sha256(svc)>-<cluster>`, 63 characters.
fn shortened_mirror_name(service: &str, cluster: &str) -> String {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(service.as_bytes()));
    let room = 63 - cluster.len() - 8 - 2;
    format!("{}-{}-{cluster}", &service[..room], &digest[..8])
}

/// An outage of one cluster's API server as the other clusters see it:
/// nftables in the lab's WAN netns resets every connection to it that does
/// not come from the cluster's own control plane (the daemon, on loopback),
/// so new connections are refused and established ones are cut, as when
/// the API server process dies. Removed on drop.
struct ApiOutage {
    netns: String,
    table: String,
}

impl ApiOutage {
    fn start(lab: &Lab, api: &str) -> Result<ApiOutage> {
        let outage = ApiOutage {
            netns: wan_netns(lab),
            table: format!("mc-e2e-outage-{}", lab.name),
        };
        let rules = format!(
            "table inet {table} {{\n chain input {{\n  type filter hook input priority -10; policy accept;\n  \
             iifname != \"lo\" ip daddr {api} tcp dport 6443 reject with tcp reset\n }}\n}}\n",
            table = outage.table
        );
        run_with_stdin(
            &["ip", "netns", "exec", &outage.netns, "nft", "-f", "-"],
            &rules,
        )?;
        reset_connections(lab, api, None)?;
        Ok(outage)
    }
}

impl ApiOutage {
    fn remove_rules(&self) -> Result<Output> {
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "nft",
                "delete",
                "table",
                "inet",
            ])
            .arg(&self.table)
            .output()
            .context("running nft delete table")
    }

    /// Ends the outage, failing when the rules could not be removed.
    fn end(mut self) -> Result<()> {
        let out = self.remove_rules()?;
        self.table.clear();
        ensure!(
            out.status.success(),
            "removing the outage rules: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

impl Drop for ApiOutage {
    /// Ends the outage when a test fails during it (the lab may be kept).
    fn drop(&mut self) {
        if !self.table.is_empty() {
            let _ = self.remove_rules();
        }
    }
}

/// The lab's WAN netns, where every cluster's API server listens.
fn wan_netns(lab: &Lab) -> String {
    format!("mc-{}-wan", lab.name)
}

/// East's API address on the lab's WAN.
fn east_api(lab: &Lab) -> Result<String> {
    let slot = lab.state()?["slot"]
        .as_u64()
        .context("state.json has no slot")?;
    Ok(format!("198.18.{slot}.2"))
}

fn run_with_stdin(command: &[&str], input: &str) -> Result<()> {
    use std::io::Write;
    let mut child = std::process::Command::new(command[0])
        .args(&command[1..])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {command:?}"))?;
    child
        .stdin
        .take()
        .context("no stdin")?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Cuts (with a TCP reset, as a dying server does) the established
/// connections to the API at `api` from `peers` (addresses), or from
/// every address but the control plane's own.
fn reset_connections(lab: &Lab, api: &str, peers: Option<&[String]>) -> Result<()> {
    let netns = wan_netns(lab);
    let mut filters: Vec<Vec<String>> = Vec::new();
    match peers {
        Some(peers) => {
            for peer in peers {
                filters.push(vec!["dst".into(), peer.clone()]);
            }
        }
        None => filters.push(vec!["not".into(), "dst".into(), api.into()]),
    }
    for filter in filters {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &netns,
                "ss",
                "-K",
                "-tn",
                "state",
                "established",
            ])
            .args(["src", api, "sport", "=", ":6443"])
            .args(&filter)
            .output()?;
        ensure!(
            out.status.success(),
            "ss -K: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The WAN addresses of a cluster's nodes (what its pods' traffic to other
/// clusters comes from).
async fn node_addresses(client: &Client) -> Result<Vec<String>> {
    let nodes: Api<Node> = Api::all(client.clone());
    Ok(nodes
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .flat_map(|n| n.status.and_then(|s| s.addresses).unwrap_or_default())
        .filter(|a| a.type_ == "InternalIP")
        .map(|a| a.address)
        .collect())
}

/// Snapshot of a mirror for "left as it was".
async fn mirror_state(client: &Client, name: &str) -> Result<(Option<String>, Option<String>)> {
    let svc = get_service(client, name)
        .await?
        .with_context(|| format!("mirror {name} is gone"))?;
    Ok((svc.metadata.uid, svc.metadata.resource_version))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_survive_an_outage_follow_a_rotated_token_and_go_with_unlink() -> Result<()> {
    let linked = Linked::start().await?;
    let (east, west) = (&linked.east, &linked.west);
    linked.lab.apply(
        "east",
        &service_yaml("second", "[{name: http, port: 8080}]"),
        &[],
    )?;
    linked.lab.apply(
        "west",
        "apiVersion: v1\nkind: Service\nmetadata: {name: frontend}\n\
         spec: {selector: {app: frontend}, ports: [{name: http, port: 8080}]}\n",
        &[],
    )?;
    linked.export_and_time("backend", "backend-east").await?;
    linked.export_and_time("second", "second-east").await?;
    linked.mc(&["--context", "west", "export", "svc/frontend"])?;
    wait_for(MIRROR_DEADLINE, || async {
        Ok(get_service(east, "frontend-west").await?.is_some())
    })
    .await
    .context("east did not mirror west's frontend")?;
    linked.answered_by_east("http://backend-east:8080/").await?;
    linked.check_passes().await?;

    // East's API goes down: west keeps its mirrors, calls still go through
    // the agents and east's gateway, and check says what is wrong.
    let api = east_api(&linked.lab)?;
    let before = (
        mirror_state(west, "backend-east").await?,
        mirror_state(west, "second-east").await?,
    );
    let outage = ApiOutage::start(&linked.lab, &api)?;
    let line = linked.check_fails_naming(CHECK_REMOTE_API).await?;
    eprintln!("check during the outage: {line}");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        let answer = linked.curl("http://backend-east:8080/")?;
        assert!(answer.contains("cluster=east"), "{answer}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let during = (
        mirror_state(west, "backend-east").await?,
        mirror_state(west, "second-east").await?,
    );
    assert_eq!(during, before, "mirrors changed during the outage");
    outage.end()?;
    linked.check_passes().await?;
    // The watch is back: an unexport made after the outage is followed.
    linked.mc(&["--context", "east", "unexport", "svc/second"])?;
    wait_for(MIRROR_DEADLINE, || async {
        Ok(get_service(west, "second-east").await?.is_none())
    })
    .await
    .context("unexport after the outage was not followed")?;

    // Token rotation: the old token dies with its ServiceAccount; check
    // names the credentials; `link` again mints a new one, which the
    // controller picks up, and mirrors follow changes again.
    let west_nodes = node_addresses(west).await?;
    ensure!(west_nodes.len() == 2, "west nodes: {west_nodes:?}");
    let old_secret = Api::<Secret>::namespaced(west.clone(), mc_api::NAMESPACE)
        .get("mc-link-east")
        .await?;
    Api::<ServiceAccount>::namespaced(east.clone(), mc_api::NAMESPACE)
        .delete("mc-link-west", &DeleteParams::default())
        .await?;
    // Established watches outlive a revoked token (as on a real API server);
    // a dropped connection makes the controller present it again.
    reset_connections(&linked.lab, &api, Some(&west_nodes))?;
    linked.check_fails_naming(CHECK_CREDENTIALS).await?;
    linked.mc(&[
        "--context",
        "east",
        "link",
        "--cluster-name",
        "east",
        "--apply-to",
        "west",
    ])?;
    let new_secret = Api::<Secret>::namespaced(west.clone(), mc_api::NAMESPACE)
        .get("mc-link-east")
        .await?;
    assert_ne!(
        new_secret.data, old_secret.data,
        "link did not mint a new token"
    );
    linked.check_passes().await?;
    reset_connections(&linked.lab, &api, Some(&west_nodes))?;
    let services: Api<Service> = Api::namespaced(east.clone(), "default");
    let patch = json!({"spec": {"ports": [{"name": "http", "port": 8081, "targetPort": 8080}]}});
    services
        .patch("backend", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    wait_for(MIRROR_DEADLINE, || async {
        let mirror = get_service(west, "backend-east").await?;
        Ok(mirror.is_some_and(|m| ports(&m) == [port("http", 8081)]))
    })
    .await
    .context("the mirror did not follow a change made after the token rotation")?;
    linked.answered_by_east("http://backend-east:8081/").await?;
    linked.check_passes().await?;

    // Unlink: every mirror from east goes, with the Link and its
    // credentials; the other direction is untouched.
    linked.mc(&["--context", "east", "export", "svc/second"])?;
    wait_for(MIRROR_DEADLINE, || async {
        Ok(get_service(west, "second-east").await?.is_some())
    })
    .await?;
    linked.mc(&["--context", "west", "unlink", "--cluster-name", "east"])?;
    let all: Api<Service> = Api::all(west.clone());
    let left = all
        .list(&ListParams::default().labels(&format!("{MIRROR_OF_CLUSTER}=east")))
        .await?
        .items;
    assert!(
        left.is_empty(),
        "mirrors of east left after unlink: {:?}",
        left.iter().map(|s| s.name_any()).collect::<Vec<_>>()
    );
    let links: Api<Link> = Api::namespaced(west.clone(), mc_api::NAMESPACE);
    assert!(links.get_opt("east").await?.is_none(), "the Link stayed");
    let secrets: Api<Secret> = Api::namespaced(west.clone(), mc_api::NAMESPACE);
    assert!(
        secrets.get_opt("mc-link-east").await?.is_none(),
        "the credentials stayed"
    );
    assert!(
        get_service(east, "frontend-west").await?.is_some(),
        "unlinking east from west removed east's mirror of west"
    );
    let east_links: Api<Link> = Api::namespaced(east.clone(), mc_api::NAMESPACE);
    assert!(east_links.get_opt("west").await?.is_some());
    let refused = linked.curl("http://backend-east:8081/");
    assert!(refused.is_err(), "still answered after unlink: {refused:?}");
    let (passed, text) = linked.check("west")?;
    assert!(passed, "check fails after a clean unlink:\n{text}");
    let exported = services.get("backend").await?;
    assert_eq!(
        exported.labels().get(EXPORTED).map(String::as_str),
        Some("true"),
        "unlink in west must not touch east's exports"
    );
    Ok(())
}
