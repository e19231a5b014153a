//! Checks of each Link, mostly as the controller reports them in the Link's
//! status (the controller's view is what matters: the laptop may reach
//! networks the cluster cannot, and the other way round).

use std::collections::BTreeSet;

use kube::config::Kubeconfig;
use mc_api::Link;

use super::snapshot::{Snapshot, fetched_text, selector_string};
use super::tls_probe::{GatewayTls, chains_to};
use super::{Check, Outcome};
use crate::gateways::condition;
use crate::manifests::meta::{LINK_KUBECONFIG_KEY, TRUST_ANCHOR_SECRET};

const NS: &str = mc_api::NAMESPACE;

fn cluster(link: &Link) -> &str {
    &link.spec.target_cluster_name
}

fn relink_hint(link: &Link, this: &str) -> String {
    format!(
        "re-run `kubectl mc --context <{c}'s context> link --cluster-name {c} --apply-to {this}`",
        c = cluster(link)
    )
}

fn no_report(link: &Link, kind: &str) -> Outcome {
    Outcome::Fail(format!(
        "the controller has not reported {kind} for Link {} yet: is mc-controller running and ready \
         (`kubectl -n {NS} logs deployment/mc-controller`)?",
        cluster(link)
    ))
}

fn condition_outcome(link: &Link, kind: &str, hint: String) -> Outcome {
    match condition(link, kind) {
        Some(c) if c.status == "True" => Outcome::Pass,
        Some(c) => Outcome::Fail(format!("{}: {} — {hint}", c.reason, c.message)),
        None => no_report(link, kind),
    }
}

/// The remote API server named in a Link's credentials.
fn credentials_server(s: &Snapshot, link: &Link) -> Result<String, String> {
    let name = &link.spec.credentials_secret;
    let secret = s.secrets.get(name).cloned().unwrap_or(Ok(None));
    let text = fetched_text(&secret, LINK_KUBECONFIG_KEY)?
        .ok_or_else(|| format!("Secret {NS}/{name} (key {LINK_KUBECONFIG_KEY}) is missing"))?;
    let config = Kubeconfig::from_yaml(&text)
        .map_err(|e| format!("Secret {NS}/{name} holds no valid kubeconfig: {e}"))?;
    config
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .ok_or_else(|| format!("the kubeconfig in Secret {NS}/{name} names no server"))
}

/// `Link east: credentials valid`.
pub struct CredentialsValid(pub Link);

impl Check for CredentialsValid {
    fn name(&self) -> String {
        format!("Link {}: credentials valid", cluster(&self.0))
    }
    fn run(&self, s: &Snapshot) -> Outcome {
        if let Err(e) = credentials_server(s, &self.0) {
            return Outcome::Fail(format!("{e}: {}", relink_hint(&self.0, &s.context)));
        }
        condition_outcome(
            &self.0,
            "CredentialsValid",
            format!(
                "the token was rejected or lacks read access to Services: {}",
                relink_hint(&self.0, &s.context)
            ),
        )
    }
}

/// `Link east: remote API reachable`.
pub struct RemoteApiReachable(pub Link);

impl Check for RemoteApiReachable {
    fn name(&self) -> String {
        format!(
            "Link {}: remote API reachable from the controller",
            cluster(&self.0)
        )
    }
    fn run(&self, s: &Snapshot) -> Outcome {
        let server = credentials_server(s, &self.0).unwrap_or_else(|_| "the remote API".into());
        condition_outcome(
            &self.0,
            "RemoteAPIReachable",
            format!(
                "mc-controller cannot reach {server}; it must be reachable from this cluster's pods \
                 (link --api-server-address sets another address). Mirrors stay as they are meanwhile"
            ),
        )
    }
}

/// `Link east: gateway alive`.
pub struct GatewayAlive(pub Link);

impl Check for GatewayAlive {
    fn name(&self) -> String {
        format!("Link {}: gateway alive", cluster(&self.0))
    }
    fn run(&self, s: &Snapshot) -> Outcome {
        let link = &self.0;
        let probe = &link.spec.probe;
        let target = format!(
            "http://{}:{}{}",
            link.spec
                .gateway_addresses
                .first()
                .map(String::as_str)
                .unwrap_or("?"),
            probe.port,
            probe.path
        );
        let hint = format!(
            "probes to {target} fail: check the gateway pods of {c} (`kubectl --context <{c}> -n {NS} get pods -l app=mc-gateway`) \
             and that the address is reachable from this cluster",
            c = cluster(link)
        );
        let gateway = link.status.as_ref().and_then(|st| st.gateway.clone());
        let outcome = match (condition(link, "GatewayAlive"), &gateway) {
            (Some(_), _) => condition_outcome(link, "GatewayAlive", hint),
            (None, Some(g)) if g.alive => Outcome::Pass,
            (None, Some(_)) => Outcome::Fail(hint),
            (None, None) => no_report(link, "GatewayAlive"),
        };
        if outcome != Outcome::Pass {
            return outcome;
        }
        let last = gateway
            .and_then(|g| g.last_probe_time)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok());
        let stale_after = i64::from(probe.period_seconds.max(1)) * 10 + 60;
        match last {
            Some(t) if s.now - t.timestamp() > stale_after => Outcome::Warn(format!(
                "the last probe was at {t}; the controller may have stopped probing (is it leading?)"
            )),
            _ => Outcome::Pass,
        }
    }
}

/// `Link east: gateway presents the expected identity`.
pub struct GatewayIdentity(pub Link);

fn local_anchor(s: &Snapshot) -> Option<String> {
    let secret = s
        .secrets
        .get(TRUST_ANCHOR_SECRET)
        .cloned()
        .unwrap_or(Ok(None));
    fetched_text(&secret, "ca.crt").ok().flatten()
}

impl Check for GatewayIdentity {
    fn name(&self) -> String {
        format!(
            "Link {}: gateway presents the expected identity",
            cluster(&self.0)
        )
    }
    fn run(&self, s: &Snapshot) -> Outcome {
        let link = &self.0;
        let name = link.metadata.name.clone().unwrap_or_default();
        let chain = match s.gateway_tls.get(&name) {
            Some(GatewayTls::Presented(chain)) => chain,
            Some(GatewayTls::Unreachable(why)) => {
                return Outcome::Skip(format!(
                    "gateway not reachable from here ({why}); the controller's probe result is in `gateway alive`"
                ));
            }
            Some(GatewayTls::NoCertificate(why)) => {
                return Outcome::Fail(format!(
                    "the gateway address answered without a TLS certificate ({why}): is {}:{} really mc-gateway?",
                    link.spec
                        .gateway_addresses
                        .first()
                        .map(String::as_str)
                        .unwrap_or("?"),
                    link.spec.gateway_port
                ));
            }
            None => return Outcome::Skip("no gateway address to try".into()),
        };
        let leaf = rustls::pki_types::CertificateDer::from(chain[0].as_slice());
        let id = match mc_identity::spiffe_id_of(&leaf) {
            Ok(id) => id.to_string(),
            Err(e) => {
                return Outcome::Fail(format!(
                    "the gateway's certificate carries no mc identity: {e}"
                ));
            }
        };
        if id != link.spec.gateway_identity {
            return Outcome::Fail(format!(
                "the gateway presents {id}, the Link expects {}: re-run link, or check the gateway's identity Secret",
                link.spec.gateway_identity
            ));
        }
        match local_anchor(s) {
            Some(anchor) => match chains_to(chain, &anchor) {
                Ok(()) => Outcome::Pass,
                Err(e) => Outcome::Fail(format!(
                    "the gateway's certificate does not chain to this cluster's trust anchor ({e}): \
                     install both clusters with the same --identity-dir"
                )),
            },
            None => Outcome::Warn(format!(
                "identity {id} matches, but this cluster has no {TRUST_ANCHOR_SECRET} to verify it against"
            )),
        }
    }
}

/// `Link east: trust anchors shared`.
pub struct TrustAnchorsShared(pub Link);

impl Check for TrustAnchorsShared {
    fn name(&self) -> String {
        format!("Link {}: trust anchors shared", cluster(&self.0))
    }
    fn run(&self, s: &Snapshot) -> Outcome {
        let link = &self.0;
        let Some(local) = local_anchor(s) else {
            return Outcome::Fail(format!(
                "this cluster has no {NS}/{TRUST_ANCHOR_SECRET}: re-run install"
            ));
        };
        let remote = s.remotes.iter().find(|r| {
            r.config
                .as_ref()
                .map(|c| c.cluster_name == cluster(link))
                .unwrap_or(false)
        });
        if let Some(remote) = remote {
            return match &remote.anchor_pem {
                Ok(Some(theirs)) if theirs.trim() == local.trim() => Outcome::Pass,
                Ok(Some(_)) => Outcome::Fail(format!(
                    "context {:?} has a different trust anchor: install both clusters with the same --identity-dir",
                    remote.context
                )),
                Ok(None) => Outcome::Fail(format!(
                    "context {:?} has no {NS}/{TRUST_ANCHOR_SECRET}",
                    remote.context
                )),
                Err(e) => Outcome::Fail(format!(
                    "cannot read the anchor of {:?}: {e}",
                    remote.context
                )),
            };
        }
        let name = link.metadata.name.clone().unwrap_or_default();
        if let Some(GatewayTls::Presented(chain)) = s.gateway_tls.get(&name) {
            return match chains_to(chain, &local) {
                Ok(()) => Outcome::Pass,
                Err(e) => Outcome::Fail(format!(
                    "the gateway of {} does not chain to this cluster's anchor ({e}): install both clusters with the same --identity-dir",
                    cluster(link)
                )),
            };
        }
        let unmatched: Vec<String> = s
            .remotes
            .iter()
            .map(|r| match &r.config {
                Ok(c) => format!("{} is cluster {}", r.context, c.cluster_name),
                Err(e) => format!("{}: {e}", r.context),
            })
            .collect();
        Outcome::Skip(if unmatched.is_empty() {
            format!(
                "pass --remote-context <context of {}> to compare the anchors",
                cluster(link)
            )
        } else {
            format!(
                "no --remote-context is cluster {} ({})",
                cluster(link),
                unmatched.join("; ")
            )
        })
    }
}

/// `Link east: mirrors in step with remote exports`.
pub struct MirrorsInStep(pub Link);

impl Check for MirrorsInStep {
    fn name(&self) -> String {
        format!(
            "Link {}: mirrors in step with remote exports",
            cluster(&self.0)
        )
    }
    fn run(&self, s: &Snapshot) -> Outcome {
        let link = &self.0;
        let c = cluster(link);
        let Some(status) = link.status.as_ref() else {
            return no_report(link, "mirrors");
        };
        let mut problems: Vec<String> = status
            .mirrors
            .iter()
            .filter(|m| m.state != "Mirrored")
            .map(|m| {
                format!(
                    "{}/{} is {}{}",
                    m.namespace,
                    m.service,
                    m.state,
                    if m.message.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", m.message)
                    }
                )
            })
            .collect();
        let local: BTreeSet<String> = match &s.mirrors {
            Ok(list) => list
                .iter()
                .filter(|svc| {
                    svc.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(mc_api::labels::MIRROR_OF_CLUSTER))
                        .map(String::as_str)
                        == Some(c)
                })
                .map(|svc| {
                    format!(
                        "{}/{}",
                        svc.metadata.namespace.clone().unwrap_or_default(),
                        svc.metadata.name.clone().unwrap_or_default()
                    )
                })
                .collect(),
            Err(e) => return Outcome::Fail(format!("cannot list mirror Services: {e}")),
        };
        let reported: BTreeSet<String> = status
            .mirrors
            .iter()
            .filter(|m| m.state == "Mirrored")
            .map(|m| format!("{}/{}", m.namespace, m.mirror))
            .collect();
        for missing in reported.difference(&local) {
            problems.push(format!("{missing} is reported mirrored but does not exist"));
        }
        for extra in local.difference(&reported) {
            problems.push(format!(
                "{extra} exists but the Link's status does not list it"
            ));
        }
        let remote = s.remotes.iter().find(|r| {
            r.config
                .as_ref()
                .map(|cfg| cfg.cluster_name == c)
                .unwrap_or(false)
        });
        if let Some(remote) = remote
            && let Some(Ok(selected)) = remote
                .selected
                .get(&selector_string(link.spec.selector.as_ref()))
        {
            let known: BTreeSet<String> = status
                .mirrors
                .iter()
                .map(|m| format!("{}/{}", m.namespace, m.service))
                .collect();
            for svc in selected {
                if !known.contains(svc) {
                    problems.push(format!("{c} exports {svc} but it is not mirrored"));
                }
            }
            let selected: BTreeSet<&String> = selected.iter().collect();
            for m in status.mirrors.iter().filter(|m| m.state == "Mirrored") {
                if !selected.contains(&format!("{}/{}", m.namespace, m.service)) {
                    problems.push(format!(
                        "{ns}/{} still mirrors {ns}/{}, which {c} no longer exports",
                        m.mirror,
                        m.service,
                        ns = m.namespace
                    ));
                }
            }
        }
        if problems.is_empty() {
            Outcome::Pass
        } else {
            Outcome::Fail(format!(
                "{}: see `kubectl -n {NS} get link {} -o yaml` and the controller's Events",
                problems.join("; "),
                link.metadata.name.clone().unwrap_or_default()
            ))
        }
    }
}

/// `every mirror Service belongs to a Link`.
pub struct NoOrphanMirrors;

impl Check for NoOrphanMirrors {
    fn name(&self) -> String {
        "every mirror Service belongs to a Link".to_string()
    }
    fn run(&self, s: &Snapshot) -> Outcome {
        let (Ok(links), Ok(mirrors)) = (&s.links, &s.mirrors) else {
            return Outcome::Skip("Links or mirrors could not be listed".into());
        };
        let clusters: BTreeSet<&str> = links.iter().map(cluster).collect();
        let orphans: Vec<String> = mirrors
            .iter()
            .filter(|svc| {
                let of = svc
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(mc_api::labels::MIRROR_OF_CLUSTER));
                of.map(|c| !clusters.contains(c.as_str())).unwrap_or(false)
            })
            .map(|svc| {
                format!(
                    "{}/{}",
                    svc.metadata.namespace.clone().unwrap_or_default(),
                    svc.metadata.name.clone().unwrap_or_default()
                )
            })
            .collect();
        if orphans.is_empty() {
            Outcome::Pass
        } else {
            Outcome::Warn(format!(
                "{} belong to no Link: delete them, or re-link their cluster",
                orphans.join(", ")
            ))
        }
    }
}

/// The Link checks of a snapshot: per Link, then orphans.
pub fn checks(s: &Snapshot) -> Vec<Box<dyn Check>> {
    let mut checks: Vec<Box<dyn Check>> = Vec::new();
    let links = match &s.links {
        Ok(links) => links.clone(),
        Err(e) => {
            let error = e.clone();
            checks.push(Box::new(ListLinks(error)));
            return checks;
        }
    };
    for link in links {
        checks.push(Box::new(CredentialsValid(link.clone())));
        checks.push(Box::new(RemoteApiReachable(link.clone())));
        checks.push(Box::new(GatewayAlive(link.clone())));
        checks.push(Box::new(GatewayIdentity(link.clone())));
        checks.push(Box::new(TrustAnchorsShared(link.clone())));
        checks.push(Box::new(MirrorsInStep(link)));
    }
    if matches!(s.crd, Ok(Some(_))) {
        checks.push(Box::new(NoOrphanMirrors));
    }
    checks
}

/// `Links can be listed` (only shown when they cannot).
pub struct ListLinks(String);

impl Check for ListLinks {
    fn name(&self) -> String {
        "Links can be listed".to_string()
    }
    fn run(&self, _: &Snapshot) -> Outcome {
        Outcome::Fail(self.0.clone())
    }
}
