//! Checks of this cluster's installation: CRD, config, RBAC, components,
//! gateway Service, identity Secrets and certificate expiry.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::rbac::v1::PolicyRule;

use super::certs::{self, Expiry};
use super::snapshot::{Fetched, Snapshot, fetched_text};
use super::{Check, Outcome};
use crate::manifests::meta::{
    CONFIG_MAP, CONTROLLER, GATEWAY, ISSUER_SECRET, NODE_AGENT, TRUST_ANCHOR_SECRET,
};
use crate::manifests::rbac;
use crate::mesh_config::MeshConfig;

const NS: &str = mc_api::NAMESPACE;

fn install_hint() -> String {
    "run `kubectl mc install --cluster-name NAME --identity-dir DIR --apply` against this context"
        .to_string()
}

fn fetched<'a, T>(value: &'a Fetched<T>, what: &str) -> Result<&'a T, Outcome> {
    match value {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(Outcome::Fail(format!(
            "{what} is missing: {}",
            install_hint()
        ))),
        Err(e) => Err(Outcome::Fail(format!("cannot read {what}: {e}"))),
    }
}

/// The config of the snapshot's cluster, if readable.
pub fn mesh_config(snapshot: &Snapshot) -> Option<MeshConfig> {
    match &snapshot.config {
        Ok(Some(cm)) => MeshConfig::from_config_map(cm),
        _ => None,
    }
}

/// `links.mc.dev CRD is installed`.
pub struct CrdInstalled;

impl Check for CrdInstalled {
    fn name(&self) -> String {
        "links.mc.dev CRD is installed".to_string()
    }
    fn run(&self, s: &Snapshot) -> Outcome {
        let crd = match fetched(&s.crd, "CRD links.mc.dev") {
            Ok(crd) => crd,
            Err(o) => return o,
        };
        let established = crd
            .status
            .as_ref()
            .and_then(|st| st.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            Outcome::Pass
        } else {
            Outcome::Fail("the CRD exists but is not Established: `kubectl get crd links.mc.dev -o yaml` shows why".into())
        }
    }
}

/// `mc-config names this cluster`.
pub struct ConfigPresent;

impl Check for ConfigPresent {
    fn name(&self) -> String {
        format!("{NS}/{CONFIG_MAP} names this cluster")
    }
    fn run(&self, s: &Snapshot) -> Outcome {
        if let Err(o) = fetched(&s.config, &format!("ConfigMap {NS}/{CONFIG_MAP}")) {
            return o;
        }
        match mesh_config(s) {
            Some(_) => Outcome::Pass,
            None => Outcome::Fail(format!(
                "ConfigMap {NS}/{CONFIG_MAP} has no clusterName: {}",
                install_hint()
            )),
        }
    }
}

fn lookup<T: Clone>(name: &str, map: &BTreeMap<String, Fetched<T>>) -> Fetched<T> {
    map.get(name).cloned().unwrap_or(Ok(None))
}

/// `<component> ServiceAccount and RBAC are installed`.
pub struct RbacInstalled {
    service_account: &'static str,
    cluster_rules: Vec<PolicyRule>,
    namespace_rules: Vec<PolicyRule>,
}

impl Check for RbacInstalled {
    fn name(&self) -> String {
        format!(
            "{} ServiceAccount and RBAC are installed",
            self.service_account
        )
    }
    fn run(&self, s: &Snapshot) -> Outcome {
        let sa = self.service_account;
        if let Err(o) = fetched(
            &lookup(sa, &s.service_accounts),
            &format!("ServiceAccount {NS}/{sa}"),
        ) {
            return o;
        }
        if let Err(o) = fetched(
            &lookup(sa, &s.cluster_role_bindings),
            &format!("ClusterRoleBinding {sa}"),
        ) {
            return o;
        }
        let cluster_role =
            match fetched(&lookup(sa, &s.cluster_roles), &format!("ClusterRole {sa}")) {
                Ok(r) => r.clone(),
                Err(o) => return o,
            };
        let mut drift = Vec::new();
        if cluster_role.rules.clone().unwrap_or_default() != self.cluster_rules {
            drift.push(format!("ClusterRole {sa}"));
        }
        if !self.namespace_rules.is_empty() {
            if let Err(o) = fetched(
                &lookup(sa, &s.role_bindings),
                &format!("RoleBinding {NS}/{sa}"),
            ) {
                return o;
            }
            let role = match fetched(&lookup(sa, &s.roles), &format!("Role {NS}/{sa}")) {
                Ok(r) => r.clone(),
                Err(o) => return o,
            };
            if role.rules.clone().unwrap_or_default() != self.namespace_rules {
                drift.push(format!("Role {NS}/{sa}"));
            }
        }
        if drift.is_empty() {
            Outcome::Pass
        } else {
            Outcome::Warn(format!(
                "{} differ(s) from what this version installs: re-run install with --apply",
                drift.join(" and ")
            ))
        }
    }
}

/// `<name> Deployment is running and ready`.
pub struct DeploymentReady(&'static str);

impl Check for DeploymentReady {
    fn name(&self) -> String {
        format!("{} Deployment is running and ready", self.0)
    }
    fn run(&self, s: &Snapshot) -> Outcome {
        let name = self.0;
        let found = lookup(name, &s.deployments);
        let deployment = match fetched(&found, &format!("Deployment {NS}/{name}")) {
            Ok(d) => d,
            Err(o) => return o,
        };
        let want = deployment
            .spec
            .as_ref()
            .and_then(|sp| sp.replicas)
            .unwrap_or(1);
        let status = deployment.status.clone().unwrap_or_default();
        let ready = status.ready_replicas.unwrap_or(0);
        let hint = format!(
            "see `kubectl -n {NS} describe deployment {name}` and `kubectl -n {NS} logs deployment/{name}`"
        );
        if want == 0 {
            return Outcome::Fail(format!(
                "it is scaled to 0 replicas: `kubectl -n {NS} scale deployment {name} --replicas=1`"
            ));
        }
        if ready == 0 {
            return Outcome::Fail(format!("no ready replica (0/{want}): {hint}"));
        }
        if ready < want {
            return Outcome::Warn(format!("{ready}/{want} replicas ready: {hint}"));
        }
        Outcome::Pass
    }
}

/// `mc-node-agent DaemonSet is running and ready on every node`.
pub struct DaemonSetReady;

impl Check for DaemonSetReady {
    fn name(&self) -> String {
        format!("{NODE_AGENT} DaemonSet is running and ready on every node")
    }
    fn run(&self, s: &Snapshot) -> Outcome {
        let ds = match fetched(&s.daemon_set, &format!("DaemonSet {NS}/{NODE_AGENT}")) {
            Ok(d) => d,
            Err(o) => return o,
        };
        let status = ds.status.clone().unwrap_or_default();
        let hint =
            format!("see `kubectl -n {NS} get pods -l app={NODE_AGENT} -o wide` and their logs");
        if status.desired_number_scheduled == 0 {
            return Outcome::Fail(format!(
                "scheduled on no node: check node taints and selectors; {hint}"
            ));
        }
        if status.number_ready < status.desired_number_scheduled {
            return Outcome::Fail(format!(
                "{}/{} agents ready; nodes without a ready agent cannot reach mirrored Services: {hint}",
                status.number_ready, status.desired_number_scheduled
            ));
        }
        Outcome::Pass
    }
}

/// `exported Services' allowed-callers lists are valid`: a malformed
/// `mc.dev/allowed-callers` makes the gateway deny every caller.
pub struct AllowedCallersValid;

impl Check for AllowedCallersValid {
    fn name(&self) -> String {
        format!(
            "exported Services' {} lists are valid",
            mc_api::labels::ALLOWED_CALLERS
        )
    }
    fn run(&self, s: &Snapshot) -> Outcome {
        let exported = match &s.exported {
            Ok(exported) => exported,
            Err(error) => return Outcome::Skip(error.clone()),
        };
        let broken: Vec<String> = exported
            .iter()
            .filter_map(|svc| {
                let value = svc
                    .metadata
                    .annotations
                    .as_ref()?
                    .get(mc_api::labels::ALLOWED_CALLERS)?;
                let error = value.parse::<mc_api::AllowedCallers>().err()?;
                Some(format!(
                    "{}/{}: {error}",
                    svc.metadata.namespace.as_deref().unwrap_or_default(),
                    svc.metadata.name.as_deref().unwrap_or_default()
                ))
            })
            .collect();
        if broken.is_empty() {
            return Outcome::Pass;
        }
        Outcome::Fail(format!(
            "the gateway denies every caller of {}; fix with `kubectl mc -n NAMESPACE export svc/NAME --allow CALLERS` (or --allow-any-linked)",
            broken.join("; ")
        ))
    }
}

/// `mc-gateway Service has an address other clusters can use`.
pub struct GatewayServiceAddress;

impl Check for GatewayServiceAddress {
    fn name(&self) -> String {
        format!("{GATEWAY} Service has an address other clusters can use")
    }
    fn run(&self, s: &Snapshot) -> Outcome {
        let svc = match fetched(&s.gateway_service, &format!("Service {NS}/{GATEWAY}")) {
            Ok(svc) => svc,
            Err(o) => return o,
        };
        let kind = svc
            .spec
            .as_ref()
            .and_then(|sp| sp.type_.clone())
            .unwrap_or_default();
        let ingress = svc
            .status
            .as_ref()
            .and_then(|st| st.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|i| !i.is_empty())
            .unwrap_or(false);
        match kind.as_str() {
            "LoadBalancer" if ingress => Outcome::Pass,
            "LoadBalancer" => Outcome::Warn(format!(
                "the LoadBalancer has no address yet; `link` needs one (or --gateway-address): `kubectl -n {NS} get svc {GATEWAY}`"
            )),
            "NodePort" => Outcome::Pass,
            other => Outcome::Fail(format!(
                "type {other:?} is not reachable from other clusters: re-run install with --gateway-service-type LoadBalancer or NodePort"
            )),
        }
    }
}

/// `identity Secrets chain to the trust anchor`: the issuer Secret holds
/// an issuer for this cluster, signed by the anchor in `mc-trust-anchor`.
pub struct IdentitySecrets;

impl IdentitySecrets {
    fn issuer(s: &Snapshot, anchor: &str, config: Option<&MeshConfig>) -> Result<(), String> {
        let secret = s.secrets.get(ISSUER_SECRET).cloned().unwrap_or(Ok(None));
        let text = |key: &str| -> Result<String, String> {
            fetched_text(&secret, key)?
                .ok_or_else(|| format!("Secret {NS}/{ISSUER_SECRET} has no {key}"))
        };
        let (crt, key, ca) = (text("tls.crt")?, text("tls.key")?, text("ca.crt")?);
        if ca.trim() != anchor.trim() {
            return Err(format!(
                "{ISSUER_SECRET}'s ca.crt is not the anchor in {TRUST_ANCHOR_SECRET}"
            ));
        }
        let issuer = mc_identity::ClusterIssuer::from_pem(&crt, &key, &ca)
            .map_err(|e| format!("{ISSUER_SECRET}: {e:#}"))?;
        if let Some(config) = config {
            let named = issuer.cluster();
            if named.cluster != config.cluster_name || named.trust_domain != config.trust_domain {
                return Err(format!(
                    "{ISSUER_SECRET} is the issuer of cluster {:?} in trust domain {:?}, not {:?} in {:?}",
                    named.cluster, named.trust_domain, config.cluster_name, config.trust_domain
                ));
            }
        }
        Ok(())
    }
}

impl Check for IdentitySecrets {
    fn name(&self) -> String {
        "identity Secrets chain to the trust anchor".to_string()
    }
    fn run(&self, s: &Snapshot) -> Outcome {
        let anchor = s
            .secrets
            .get(TRUST_ANCHOR_SECRET)
            .cloned()
            .unwrap_or(Ok(None));
        let anchor = match fetched_text(&anchor, "ca.crt") {
            Ok(Some(a)) => a,
            Ok(None) => {
                return Outcome::Fail(format!(
                    "Secret {NS}/{TRUST_ANCHOR_SECRET} (ca.crt) is missing: {}",
                    install_hint()
                ));
            }
            Err(e) => return Outcome::Fail(format!("cannot read {TRUST_ANCHOR_SECRET}: {e}")),
        };
        match Self::issuer(s, &anchor, mesh_config(s).as_ref()) {
            Ok(()) => Outcome::Pass,
            Err(problem) => Outcome::Fail(format!(
                "{problem}: re-run install with --identity-dir pointing at the shared anchor"
            )),
        }
    }
}

/// `certificates are not near expiry`.
pub struct CertificatesNotExpiring {
    warn_within: Duration,
}

impl Check for CertificatesNotExpiring {
    fn name(&self) -> String {
        "certificates are not near expiry".to_string()
    }
    fn run(&self, s: &Snapshot) -> Outcome {
        let mut expired = Vec::new();
        let mut soon = Vec::new();
        let mut seen = 0;
        for (secret, key) in [(TRUST_ANCHOR_SECRET, "ca.crt"), (ISSUER_SECRET, "tls.crt")] {
            let fetched = s.secrets.get(secret).cloned().unwrap_or(Ok(None));
            let Ok(Some(pem)) = fetched_text(&fetched, key) else {
                continue;
            };
            let validities = match certs::validities(&pem) {
                Ok(v) => v,
                Err(e) => return Outcome::Fail(format!("{secret} {key}: {e}")),
            };
            for v in validities.iter().take(1) {
                seen += 1;
                match certs::expiry(v.not_after, s.now, self.warn_within) {
                    Expiry::Valid => {}
                    Expiry::Soon(days) => {
                        soon.push(format!("{secret} {key} expires in {days} day(s)"))
                    }
                    Expiry::Expired => expired.push(format!("{secret} {key} has expired")),
                }
            }
        }
        let renew = "re-run install --apply with the shared --identity-dir to issue a new issuer (leaves renew themselves)";
        if seen == 0 {
            Outcome::Skip("no identity Secret to inspect".into())
        } else if !expired.is_empty() {
            expired.extend(soon);
            Outcome::Fail(format!("{}: {renew}", expired.join("; ")))
        } else if !soon.is_empty() {
            Outcome::Warn(format!("{}: {renew}", soon.join("; ")))
        } else {
            Outcome::Pass
        }
    }
}

/// The cluster checks, in order.
pub fn checks(expiry_warning: Duration) -> Vec<Box<dyn Check>> {
    vec![
        Box::new(CrdInstalled),
        Box::new(ConfigPresent),
        Box::new(RbacInstalled {
            service_account: CONTROLLER,
            cluster_rules: rbac::controller_cluster_rules(),
            namespace_rules: rbac::controller_namespace_rules(),
        }),
        Box::new(RbacInstalled {
            service_account: GATEWAY,
            cluster_rules: rbac::gateway_cluster_rules(),
            namespace_rules: rbac::gateway_namespace_rules(),
        }),
        Box::new(RbacInstalled {
            service_account: NODE_AGENT,
            cluster_rules: rbac::node_agent_cluster_rules(),
            namespace_rules: rbac::node_agent_namespace_rules(),
        }),
        Box::new(IdentitySecrets),
        Box::new(CertificatesNotExpiring {
            warn_within: expiry_warning,
        }),
        Box::new(DeploymentReady(CONTROLLER)),
        Box::new(DeploymentReady(GATEWAY)),
        Box::new(DaemonSetReady),
        Box::new(GatewayServiceAddress),
        Box::new(AllowedCallersValid),
    ]
}
