//! Who may call what through this gateway.
//!
//! Two decisions, both on proven facts only:
//!
//! * **Per tunnel connection** ([`authenticate`]): the client certificate
//!   must be a node agent's (only agents vouch for the pods behind them) and
//!   must chain through a cluster issuer: the issuer's URI SAN
//!   `spiffe://<td>/cluster/<name>` proves which cluster the agent runs in.
//!   A leaf signed by the anchor directly proves no cluster and is refused.
//!   The connection is retired (HTTP/2 GOAWAY: open streams finish, the
//!   agent reconnects with its renewed certificate) when the certificate
//!   it was authenticated with expires.
//! * **Per proxied connection** ([`authorize`]): the proven cluster must be
//!   linked here (a `kubectl mc link` for it made its ServiceAccount), the
//!   cluster the agent claims in the request must be that cluster, and the
//!   target Service's `mc.dev/allowed-callers` list, when it has one, must
//!   name the cluster or the workload. The workload's namespace and
//!   ServiceAccount come from the agent, which saw the pod's source address;
//!   they are trusted as far as that cluster's agent is.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use mc_api::AllowedCallers;
use mc_identity::{IssuingCluster, SpiffeId};
use mc_tunnel::Source;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use rustls::pki_types::{CertificateDer, TrustAnchor, UnixTime};

/// An authenticated tunnel: a node agent of the cluster its issuer proves.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The cluster whose issuer signed the agent's certificate.
    pub cluster: String,
    /// When the certificate the tunnel was authenticated with expires.
    pub expires: SystemTime,
}

/// Why a tunnel connection was closed right after its handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The certificate names no cluster (signed by the anchor directly, or
    /// by an issuer without a cluster URI SAN).
    NoClusterIssuer,
    /// The certificate is not a node agent's.
    NotAnAgent,
}

impl Rejection {
    /// Stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::NoClusterIssuer => "no_cluster_issuer",
            Rejection::NotAnAgent => "not_an_agent",
        }
    }
}

/// Checks the peer of a finished handshake. `chain` is the peer's chain as
/// sent (leaf first); the TLS verifier has already checked it reaches an
/// anchor, this reads which cluster's issuer is on the path.
pub fn authenticate(
    anchors: &[TrustAnchor<'_>],
    chain: &[CertificateDer<'_>],
    agent: &SpiffeId,
    now: UnixTime,
) -> Result<Peer, Rejection> {
    let id = chain
        .first()
        .and_then(|leaf| mc_identity::spiffe_id_of(leaf).ok())
        .ok_or(Rejection::NotAnAgent)?;
    if id != *agent {
        return Err(Rejection::NotAnAgent);
    }
    let IssuingCluster { cluster, .. } = mc_identity::cluster_of_chain(anchors, chain, now)
        .map_err(|_| Rejection::NoClusterIssuer)?;
    // The chain was just verified as valid now, so not_after is in the future.
    let (_, not_after) = chain
        .first()
        .and_then(|leaf| mc_identity::validity_of(leaf).ok())
        .ok_or(Rejection::NotAnAgent)?;
    let expires =
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(not_after).unwrap_or(0));
    Ok(Peer { cluster, expires })
}

/// Who may call one exported Service.
#[derive(Clone, Debug, Default)]
pub enum Access {
    /// No annotation: any caller from a linked cluster.
    #[default]
    AnyLinked,
    /// Only the listed callers.
    Only(AllowedCallers),
    /// The annotation does not parse: nobody, until it is fixed (failing
    /// open would widen access on a typo).
    Invalid(String),
}

impl Access {
    /// Reads the annotation value, if any.
    pub fn from_annotation(value: Option<&str>) -> Access {
        match value {
            None => Access::AnyLinked,
            Some(value) => match value.parse::<AllowedCallers>() {
                Ok(list) => Access::Only(list),
                Err(error) => Access::Invalid(error.to_string()),
            },
        }
    }
}

/// Why a proxied connection was denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    /// The caller's cluster has not linked to this one.
    UnlinkedCluster,
    /// The request claims another cluster than the certificate proves.
    ClusterMismatch,
    /// The Service's allowed-callers list does not name the caller.
    NotAllowed,
    /// The Service's allowed-callers annotation is malformed.
    InvalidPolicy,
}

impl Denial {
    /// Stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Denial::UnlinkedCluster => "unlinked_cluster",
            Denial::ClusterMismatch => "cluster_mismatch",
            Denial::NotAllowed => "not_allowed",
            Denial::InvalidPolicy => "invalid_policy",
        }
    }
}

/// The decision for one proxied connection from `peer` on behalf of `source`
/// to a Service with `access`, given the clusters linked here.
pub fn authorize(
    peer: &Peer,
    source: &Source,
    access: &Access,
    linked: &HashSet<String>,
) -> Result<(), Denial> {
    if !linked.contains(&peer.cluster) {
        return Err(Denial::UnlinkedCluster);
    }
    if source.cluster != peer.cluster {
        return Err(Denial::ClusterMismatch);
    }
    match access {
        Access::AnyLinked => Ok(()),
        Access::Invalid(_) => Err(Denial::InvalidPolicy),
        Access::Only(list) => {
            if list.allows(&peer.cluster, account_of(source)) {
                Ok(())
            } else {
                Err(Denial::NotAllowed)
            }
        }
    }
}

fn account_of(source: &Source) -> Option<(&str, &str)> {
    match (&source.namespace, &source.service_account) {
        (Some(ns), Some(sa)) => Some((ns.as_str(), sa.as_str())),
        _ => None,
    }
}

/// The caller as it appears in logs and metrics: `<ns>/<sa>`, or `unknown`
/// when the agent could not name the pod.
pub fn caller_identity(source: &Source) -> String {
    match account_of(source) {
        Some((ns, sa)) => format!("{ns}/{sa}"),
        None => "unknown".to_owned(),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    src_cluster: String,
    src_identity: String,
    dst_namespace: String,
    dst_service: String,
    decision: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectionLabels {
    reason: &'static str,
}

/// Counters of the gateway's access decisions.
#[derive(Clone, Debug)]
pub struct AuthzMetrics {
    decisions: Family<DecisionLabels, Counter>,
    rejected_tunnels: Family<RejectionLabels, Counter>,
    expired_tunnels: Counter,
}

impl AuthzMetrics {
    /// Registers `mc_gateway_authorization_total`,
    /// `mc_gateway_tunnels_rejected_total` and
    /// `mc_gateway_tunnels_expired_total`.
    pub fn register(registry: &mut Registry) -> AuthzMetrics {
        let metrics = AuthzMetrics {
            decisions: Family::default(),
            rejected_tunnels: Family::default(),
            expired_tunnels: Counter::default(),
        };
        registry.register(
            "mc_gateway_authorization",
            "Proxied connections allowed or denied, by source cluster and identity, target and reason",
            metrics.decisions.clone(),
        );
        registry.register(
            "mc_gateway_tunnels_rejected",
            "Tunnel connections closed after the handshake, by reason",
            metrics.rejected_tunnels.clone(),
        );
        registry.register(
            "mc_gateway_tunnels_expired",
            "Tunnel connections retired (GOAWAY) because the caller's certificate expired",
            metrics.expired_tunnels.clone(),
        );
        metrics
    }

    /// Counts one tunnel retired at its certificate's expiry.
    pub fn expired(&self) {
        self.expired_tunnels.inc();
    }

    /// Counts one decision.
    pub fn decided(
        &self,
        source: &Source,
        namespace: &str,
        service: &str,
        decision: Result<(), Denial>,
    ) {
        let (decision, reason) = match decision {
            Ok(()) => ("allow", ""),
            Err(denial) => ("deny", denial.as_str()),
        };
        self.decisions
            .get_or_create(&DecisionLabels {
                src_cluster: source.cluster.clone(),
                src_identity: caller_identity(source),
                dst_namespace: namespace.to_owned(),
                dst_service: service.to_owned(),
                decision,
                reason,
            })
            .inc();
    }

    /// Counts one rejected tunnel.
    pub fn rejected(&self, rejection: Rejection) {
        self.rejected_tunnels
            .get_or_create(&RejectionLabels {
                reason: rejection.as_str(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mc_identity::TrustAnchor as Anchor;

    use super::*;

    const TD: &str = "mc.local";

    fn source(cluster: &str, account: Option<(&str, &str)>) -> Source {
        Source {
            cluster: cluster.to_owned(),
            namespace: account.map(|(ns, _)| ns.to_owned()),
            service_account: account.map(|(_, sa)| sa.to_owned()),
        }
    }

    fn peer(cluster: &str) -> Peer {
        Peer {
            cluster: cluster.to_owned(),
            expires: SystemTime::now() + Duration::from_secs(3600),
        }
    }

    fn linked(clusters: &[&str]) -> HashSet<String> {
        clusters.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn any_caller_of_a_linked_cluster_by_default() {
        let west = peer("west");
        let links = linked(&["west"]);
        assert_eq!(
            authorize(&west, &source("west", None), &Access::AnyLinked, &links),
            Ok(())
        );
        assert_eq!(
            authorize(
                &peer("north"),
                &source("north", None),
                &Access::AnyLinked,
                &links
            ),
            Err(Denial::UnlinkedCluster)
        );
    }

    #[test]
    fn the_claimed_cluster_must_be_the_proven_one() {
        assert_eq!(
            authorize(
                &peer("west"),
                &source("north", Some(("default", "frontend"))),
                &Access::AnyLinked,
                &linked(&["west", "north"])
            ),
            Err(Denial::ClusterMismatch)
        );
    }

    #[test]
    fn an_allow_list_narrows_and_a_broken_one_denies_everyone() {
        let west = peer("west");
        let links = linked(&["west"]);
        let only_frontend = Access::from_annotation(Some("west/default/frontend"));
        assert_eq!(
            authorize(
                &west,
                &source("west", Some(("default", "frontend"))),
                &only_frontend,
                &links
            ),
            Ok(())
        );
        assert_eq!(
            authorize(
                &west,
                &source("west", Some(("default", "default"))),
                &only_frontend,
                &links
            ),
            Err(Denial::NotAllowed)
        );
        assert_eq!(
            authorize(&west, &source("west", None), &only_frontend, &links),
            Err(Denial::NotAllowed)
        );
        let broken = Access::from_annotation(Some("west/default"));
        assert_eq!(
            authorize(
                &west,
                &source("west", Some(("default", "frontend"))),
                &broken,
                &links
            ),
            Err(Denial::InvalidPolicy)
        );
    }

    #[test]
    fn only_agents_with_a_cluster_issuer_are_authenticated() -> anyhow::Result<()> {
        let anchor = Anchor::generate(TD)?;
        let anchors = mc_identity::anchors_of(anchor.cert_pem())?;
        let chain = |pem: &str| mc_identity::files::parse_certs(pem, "chain");
        let agent = SpiffeId::system(TD, "mc-node-agent")?;
        let gateway = SpiffeId::system(TD, "mc-gateway")?;
        let day = Duration::from_secs(24 * 3600);
        let west = anchor.issue_cluster_issuer("west", day)?;
        let now = UnixTime::now();

        let leaf = chain(&west.issue_leaf(&agent, day)?.cert_pem)?;
        let peer = authenticate(&anchors, &leaf, &agent, now).expect("accepted");
        assert_eq!(peer.cluster, "west");
        let left = peer.expires.duration_since(SystemTime::now())?;
        assert!(
            left > day - Duration::from_secs(60) && left <= day,
            "{left:?}"
        );

        let not_agent = chain(&west.issue_leaf(&gateway, day)?.cert_pem)?;
        assert_eq!(
            authenticate(&anchors, &not_agent, &agent, now).err(),
            Some(Rejection::NotAnAgent)
        );

        let direct = chain(&anchor.issue("mc-system", "mc-node-agent", day)?.cert_pem)?;
        assert_eq!(
            authenticate(&anchors, &direct, &agent, now).err(),
            Some(Rejection::NoClusterIssuer)
        );
        Ok(())
    }
}
