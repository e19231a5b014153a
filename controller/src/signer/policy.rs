//! What the signer does with one CertificateSigningRequest, decided from
//! the object alone: ignore it, deny it (with a reason), or sign it.
//!
//! A request is signed only when its requester (`spec.username`, set by
//! the API server from the authenticated user) is a ServiceAccount on the
//! allow list and the CSR asks for exactly that account's SPIFFE ID in
//! the issuer's trust domain.

use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use mc_identity::{RequestedLeaf, SIGNER_NAME, SpiffeId, parse_request};

/// Usages a request may ask for (`spec.usages`).
const ALLOWED_USAGES: &[&str] = &[
    "digital signature",
    "key encipherment",
    "client auth",
    "server auth",
];

/// Shortest leaf the signer issues, whatever `spec.expirationSeconds` says.
pub const MIN_LIFETIME: Duration = Duration::from_secs(10);

/// Who may get certificates, and for how long.
#[derive(Debug, Clone)]
pub struct SignerPolicy {
    /// `(namespace, service account)` pairs allowed to request their own identity.
    pub allowed: Vec<(String, String)>,
    /// Longest (and default) leaf lifetime.
    pub lifetime: Duration,
}

/// Stable reasons of a denial (the condition's `reason`, and a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// `spec.username` is not `system:serviceaccount:<ns>:<sa>`.
    NotAServiceAccount,
    /// The ServiceAccount is not on the allow list.
    ServiceAccountNotAllowed,
    /// The CSR cannot be parsed, has the wrong key type or asks for a CA.
    InvalidRequest,
    /// The CSR asks for another identity than the requester's.
    IdentityMismatch,
    /// `spec.usages` asks for more than TLS client and server use.
    UsagesNotAllowed,
}

impl DenyReason {
    /// The condition reason (CamelCase, as Kubernetes reasons are).
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NotAServiceAccount => "NotAServiceAccount",
            DenyReason::ServiceAccountNotAllowed => "ServiceAccountNotAllowed",
            DenyReason::InvalidRequest => "InvalidRequest",
            DenyReason::IdentityMismatch => "IdentityMismatch",
            DenyReason::UsagesNotAllowed => "UsagesNotAllowed",
        }
    }
}

/// The signer's decision about one request.
#[derive(Debug)]
pub enum Decision {
    /// Not for this signer, or already decided, denied, failed or issued.
    Ignore,
    /// Refuse it: `Denied` when not yet approved, `Failed` when someone
    /// else approved what this signer will not sign.
    Refuse {
        /// Why.
        reason: DenyReason,
        /// For people.
        message: String,
        /// Whether the request is already approved (then it fails instead).
        approved: bool,
    },
    /// Approve (unless already approved) and sign.
    Sign {
        /// The checked request.
        request: RequestedLeaf,
        /// The identity to certify.
        id: SpiffeId,
        /// The leaf's lifetime.
        lifetime: Duration,
        /// Whether the request is already approved.
        approved: bool,
    },
}

fn has_condition(csr: &CertificateSigningRequest, type_: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// `system:serviceaccount:<ns>:<sa>` → `(ns, sa)`.
pub fn service_account_of(username: &str) -> Option<(&str, &str)> {
    let rest = username.strip_prefix("system:serviceaccount:")?;
    let (namespace, name) = rest.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then_some((namespace, name))
}

/// Decides what to do with `csr` for an issuer of `trust_domain`.
pub fn decide(
    csr: &CertificateSigningRequest,
    policy: &SignerPolicy,
    trust_domain: &str,
) -> Decision {
    let spec = &csr.spec;
    if spec.signer_name != SIGNER_NAME {
        return Decision::Ignore;
    }
    let issued = csr
        .status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty());
    if issued || has_condition(csr, "Denied") || has_condition(csr, "Failed") {
        return Decision::Ignore;
    }
    let approved = has_condition(csr, "Approved");
    let refuse = |reason, message| Decision::Refuse {
        reason,
        message,
        approved,
    };
    let username = spec.username.as_deref().unwrap_or_default();
    let Some((namespace, account)) = service_account_of(username) else {
        return refuse(
            DenyReason::NotAServiceAccount,
            format!("{username:?} is not a ServiceAccount; mc signs only for its own components"),
        );
    };
    if !policy
        .allowed
        .iter()
        .any(|(ns, sa)| ns == namespace && sa == account)
    {
        return refuse(
            DenyReason::ServiceAccountNotAllowed,
            format!("ServiceAccount {namespace}/{account} may not request mc identities"),
        );
    }
    if let Some(usage) = spec
        .usages
        .iter()
        .flatten()
        .find(|u| !ALLOWED_USAGES.contains(&u.as_str()))
    {
        return refuse(
            DenyReason::UsagesNotAllowed,
            format!("usage {usage:?} is not allowed (only {ALLOWED_USAGES:?})"),
        );
    }
    let pem = match std::str::from_utf8(&spec.request.0) {
        Ok(pem) => pem,
        Err(_) => {
            return refuse(
                DenyReason::InvalidRequest,
                "spec.request is not PEM text".to_string(),
            );
        }
    };
    let request = match parse_request(pem) {
        Ok(request) => request,
        Err(error) => return refuse(DenyReason::InvalidRequest, error.to_string()),
    };
    let expected = match SpiffeId::new(trust_domain, namespace, account) {
        Ok(id) => id,
        Err(error) => {
            return refuse(
                DenyReason::IdentityMismatch,
                format!("no SPIFFE ID for {namespace}/{account}: {error}"),
            );
        }
    };
    if request.id() != &expected {
        return refuse(
            DenyReason::IdentityMismatch,
            format!(
                "the request asks for {} but its requester {namespace}/{account} is {expected}",
                request.id()
            ),
        );
    }
    let lifetime = spec
        .expiration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .map_or(policy.lifetime, |asked| {
            asked.clamp(MIN_LIFETIME, policy.lifetime.max(MIN_LIFETIME))
        });
    Decision::Sign {
        request,
        id: expected,
        lifetime,
        approved,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use mc_identity::LeafRequest;
    use serde_json::json;

    const TD: &str = "mc.test";

    fn policy() -> SignerPolicy {
        SignerPolicy {
            allowed: vec![
                ("mc-system".into(), "mc-node-agent".into()),
                ("mc-system".into(), "mc-gateway".into()),
            ],
            lifetime: Duration::from_secs(24 * 3600),
        }
    }

    fn csr(user: &str, asks_for: &str) -> CertificateSigningRequest {
        let id = SpiffeId::parse(asks_for).unwrap();
        let request = LeafRequest::generate(&id).unwrap();
        let mut csr: CertificateSigningRequest = serde_json::from_value(json!({
            "metadata": {"name": "x"},
            "spec": {"signerName": SIGNER_NAME, "request": "", "username": user,
                     "usages": ["digital signature", "client auth", "server auth"]}
        }))
        .unwrap();
        csr.spec.request = ByteString(request.csr_pem().as_bytes().to_vec());
        csr
    }

    fn reason(decision: Decision) -> DenyReason {
        match decision {
            Decision::Refuse { reason, .. } => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    const AGENT: &str = "system:serviceaccount:mc-system:mc-node-agent";
    const AGENT_ID: &str = "spiffe://mc.test/ns/mc-system/sa/mc-node-agent";

    #[test]
    fn the_agent_gets_its_own_identity_for_the_default_lifetime() {
        match decide(&csr(AGENT, AGENT_ID), &policy(), TD) {
            Decision::Sign {
                id,
                lifetime,
                approved,
                ..
            } => {
                assert_eq!(id.to_string(), AGENT_ID);
                assert_eq!(lifetime, Duration::from_secs(24 * 3600));
                assert!(!approved);
            }
            other => panic!("expected Sign, got {other:?}"),
        }
    }

    #[test]
    fn another_identity_another_account_or_a_person_is_refused() {
        let gateway_id = "spiffe://mc.test/ns/mc-system/sa/mc-gateway";
        assert_eq!(
            reason(decide(&csr(AGENT, gateway_id), &policy(), TD)),
            DenyReason::IdentityMismatch
        );
        assert_eq!(
            reason(decide(
                &csr(AGENT, "spiffe://other.test/ns/mc-system/sa/mc-node-agent"),
                &policy(),
                TD
            )),
            DenyReason::IdentityMismatch
        );
        assert_eq!(
            reason(decide(
                &csr(
                    "system:serviceaccount:default:frontend",
                    "spiffe://mc.test/ns/default/sa/frontend"
                ),
                &policy(),
                TD
            )),
            DenyReason::ServiceAccountNotAllowed
        );
        assert_eq!(
            reason(decide(&csr("alice", AGENT_ID), &policy(), TD)),
            DenyReason::NotAServiceAccount
        );
        let mut signing = csr(AGENT, AGENT_ID);
        signing.spec.usages = Some(vec!["cert sign".into()]);
        assert_eq!(
            reason(decide(&signing, &policy(), TD)),
            DenyReason::UsagesNotAllowed
        );
        let mut garbage = csr(AGENT, AGENT_ID);
        garbage.spec.request = ByteString(b"garbage".to_vec());
        assert_eq!(
            reason(decide(&garbage, &policy(), TD)),
            DenyReason::InvalidRequest
        );
    }

    #[test]
    fn decided_or_foreign_requests_are_left_alone_and_lifetimes_are_capped() {
        let mut other = csr(AGENT, AGENT_ID);
        other.spec.signer_name = "kubernetes.io/kube-apiserver-client".into();
        assert!(matches!(decide(&other, &policy(), TD), Decision::Ignore));
        let mut denied = csr(AGENT, AGENT_ID);
        denied.status =
            serde_json::from_value(json!({"conditions": [{"type": "Denied", "status": "True"}]}))
                .unwrap();
        assert!(matches!(decide(&denied, &policy(), TD), Decision::Ignore));
        let mut long = csr(AGENT, AGENT_ID);
        long.spec.expiration_seconds = Some(10 * 24 * 3600);
        let mut short = csr(AGENT, AGENT_ID);
        short.spec.expiration_seconds = Some(1);
        for (csr, want) in [
            (long, Duration::from_secs(24 * 3600)),
            (short, MIN_LIFETIME),
        ] {
            match decide(&csr, &policy(), TD) {
                Decision::Sign { lifetime, .. } => assert_eq!(lifetime, want),
                other => panic!("expected Sign, got {other:?}"),
            }
        }
        assert_eq!(
            service_account_of("system:serviceaccount:ns:sa"),
            Some(("ns", "sa"))
        );
        assert_eq!(service_account_of("system:serviceaccount:ns"), None);
    }
}
