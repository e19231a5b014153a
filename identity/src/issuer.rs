//! Per-cluster issuers: intermediate CAs signed by the shared trust anchor,
//! one per cluster, that sign the leaf certificates of that cluster's
//! agents and gateways.
//!
//! An issuer certificate names its cluster in its single URI SAN,
//! `spiffe://<trust-domain>/cluster/<cluster>`. A leaf's chain is
//! `leaf, issuer`; whoever verifies it against the anchor learns which
//! cluster vouched for the leaf from the issuer on the verified path
//! ([`cluster_of_chain`]). Leaf SPIFFE IDs are the same in every cluster
//! (`.../ns/mc-system/sa/mc-node-agent`), so this is what tells clusters
//! apart.

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    SanType,
};
use rustls::pki_types::{CertificateDer, TrustAnchor as WebPkiAnchor, UnixTime};
use thiserror::Error;

use crate::authority::{IssuedLeaf, TrustAnchor};
use crate::csr::RequestedLeaf;
use crate::files::parse_certs;
use crate::peer::uri_sans;
use crate::spiffe::SpiffeId;
use crate::verify::verify_chain;

/// Secret (in `mc-system`) holding the cluster issuer: `tls.crt` (the
/// issuer certificate), `tls.key` (its key) and `ca.crt` (the anchors).
/// Only the controller may read it.
pub const ISSUER_SECRET: &str = "mc-identity-issuer";

/// Default lifetime of a cluster issuer: one year.
pub const ISSUER_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// How far back `not_before` is set, to tolerate clock skew between nodes.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// The URI SAN of the issuer of `cluster`:
/// `spiffe://<trust-domain>/cluster/<cluster>`.
pub fn issuer_uri(trust_domain: &str, cluster: &str) -> String {
    format!("spiffe://{trust_domain}/cluster/{cluster}")
}

/// Whether `name` is a valid cluster name (a DNS label).
pub fn valid_cluster_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The cluster a verified chain was issued for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IssuingCluster {
    /// Trust domain named by the issuer.
    pub trust_domain: String,
    /// Cluster named by the issuer.
    pub cluster: String,
}

/// Why no cluster could be read from a chain.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// The chain does not verify against the anchors.
    #[error("the certificate chain does not verify against the trust anchors: {0}")]
    Chain(String),
    /// The leaf is signed by the anchor itself: no cluster vouches for it.
    #[error("the certificate is not issued by a cluster issuer")]
    NoIssuer,
    /// The issuer certificate does not name a cluster.
    #[error("the issuer certificate does not name a cluster: {0}")]
    NotAClusterIssuer(String),
}

/// Reads `(trust domain, cluster)` from an issuer certificate's URI SAN.
pub fn issuing_cluster_of(cert: &CertificateDer<'_>) -> Result<IssuingCluster, ClusterError> {
    let uris = uri_sans(cert).map_err(ClusterError::NotAClusterIssuer)?;
    let [uri] = uris.as_slice() else {
        return Err(ClusterError::NotAClusterIssuer(format!(
            "{} URI SANs",
            uris.len()
        )));
    };
    let parse = || {
        let rest = uri.strip_prefix("spiffe://")?;
        let (trust_domain, path) = rest.split_once('/')?;
        let cluster = path.strip_prefix("cluster/")?;
        // Same trust-domain rule as SPIFFE IDs.
        SpiffeId::system(trust_domain, "mc-controller").ok()?;
        valid_cluster_name(cluster).then(|| IssuingCluster {
            trust_domain: trust_domain.to_owned(),
            cluster: cluster.to_owned(),
        })
    };
    parse().ok_or_else(|| ClusterError::NotAClusterIssuer((*uri).to_owned()))
}

/// Verifies `chain` (leaf first) against `anchors` for client
/// authentication at `now` and returns the cluster whose issuer is on the
/// verified path. Certificates the peer sent but the path does not use
/// are ignored, so a peer cannot claim a cluster by adding an unrelated
/// issuer certificate.
pub fn cluster_of_chain(
    anchors: &[WebPkiAnchor<'_>],
    chain: &[CertificateDer<'_>],
    now: UnixTime,
) -> Result<IssuingCluster, ClusterError> {
    let issuer = verify_chain(anchors, chain, now, webpki::KeyUsage::client_auth())
        .map_err(|e| ClusterError::Chain(e.to_string()))?
        .ok_or(ClusterError::NoIssuer)?;
    issuing_cluster_of(&issuer)
}

/// A cluster's issuer: an intermediate CA certificate (signed by the trust
/// anchor, naming the cluster) and its key, plus the anchors it chains to.
pub struct ClusterIssuer {
    cluster: IssuingCluster,
    cert_pem: String,
    anchors_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for ClusterIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterIssuer")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

fn issuer_params(trust_domain: &str, cluster: &str) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("mc issuer {cluster}"));
    params
        .distinguished_name
        .push(DnType::OrganizationName, trust_domain);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let uri = rcgen::string::Ia5String::try_from(issuer_uri(trust_domain, cluster))
        .context("issuer URI is not IA5")?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// The parameters of a leaf for `id`, valid from now (minus skew) for
/// `lifetime`: one URI SAN, server and client authentication, not a CA.
pub(crate) fn leaf_params(id: &SpiffeId, lifetime: Duration) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, id.trust_domain());
    let uri = rcgen::string::Ia5String::try_from(id.to_string()).context("SPIFFE ID is not IA5")?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    // Backdated for clock skew, but by at most a tenth of the lifetime so
    // that renewing at two thirds of it stays meaningful for short leaves.
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE.min(lifetime / 10)).into();
    params.not_after = (now + lifetime).into();
    Ok(params)
}

impl TrustAnchor {
    /// Issues the intermediate CA of `cluster`, valid for `lifetime`.
    pub fn issue_cluster_issuer(&self, cluster: &str, lifetime: Duration) -> Result<ClusterIssuer> {
        if !valid_cluster_name(cluster) {
            bail!("{cluster:?} is not a valid cluster name (a DNS label)");
        }
        let key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generating the issuer key")?;
        let mut params = issuer_params(self.trust_domain(), cluster)?;
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + lifetime).into();
        let cert = params
            .signed_by(&key, self.rcgen_issuer())
            .with_context(|| format!("signing the issuer of cluster {cluster}"))?;
        ClusterIssuer::from_pem(&cert.pem(), &key.serialize_pem(), self.cert_pem())
    }
}

impl ClusterIssuer {
    /// Loads an issuer: its certificate, key and the anchors bundle. Fails
    /// unless the certificate names a cluster, the key matches it and it
    /// chains to one of the anchors (checked by issuing and verifying a
    /// throw-away leaf).
    pub fn from_pem(cert_pem: &str, key_pem: &str, anchors_pem: &str) -> Result<ClusterIssuer> {
        let certs = parse_certs(cert_pem, "issuer certificate")?;
        let cluster = issuing_cluster_of(&certs[0]).context("reading the issuer's cluster")?;
        let key = KeyPair::from_pem(key_pem).context("parsing the issuer key")?;
        let issuer =
            Issuer::from_ca_cert_pem(cert_pem, key).context("parsing the issuer certificate")?;
        let issuer = ClusterIssuer {
            cluster,
            cert_pem: cert_pem.to_owned(),
            anchors_pem: anchors_pem.to_owned(),
            issuer,
        };
        issuer.self_test().context(
            "the issuer does not chain to the trust anchors (or its key does not match)",
        )?;
        Ok(issuer)
    }

    fn self_test(&self) -> Result<()> {
        let id = SpiffeId::system(&self.cluster.trust_domain, "mc-self-test")?;
        let leaf = self.issue_leaf(&id, Duration::from_secs(600))?;
        let chain = parse_certs(&leaf.cert_pem, "test leaf")?;
        let anchors = anchors_of(&self.anchors_pem)?;
        verify_chain(
            &anchors,
            &chain,
            UnixTime::now(),
            webpki::KeyUsage::client_auth(),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    }

    /// The cluster (and trust domain) this issuer vouches for.
    pub fn cluster(&self) -> &IssuingCluster {
        &self.cluster
    }

    /// The issuer certificate (PEM), sent after every leaf it signs.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The issuer's private key (PKCS#8 PEM). Keep it secret.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// The trust anchors bundle (PEM) the issuer chains to.
    pub fn anchors_pem(&self) -> &str {
        &self.anchors_pem
    }

    /// Signs the public key of a checked request as a leaf for `id`, valid
    /// for `lifetime`. Only the request's key is used: the SAN, usages and
    /// lifetime come from here. Returns the chain PEM, leaf then issuer.
    /// The caller decides whether the requester may have `id`.
    pub fn sign(
        &self,
        request: &RequestedLeaf,
        id: &SpiffeId,
        lifetime: Duration,
    ) -> Result<String> {
        self.check_domain(id)?;
        let csr = CertificateSigningRequestParams {
            params: leaf_params(id, lifetime)?,
            public_key: request.public_key().clone(),
        };
        let cert = csr
            .signed_by(&self.issuer)
            .with_context(|| format!("signing the leaf of {id}"))?;
        Ok(format!("{}{}", cert.pem(), self.cert_pem))
    }

    /// Issues a leaf with a fresh key (for tests and files): `cert_pem` is
    /// the chain, leaf then issuer.
    pub fn issue_leaf(&self, id: &SpiffeId, lifetime: Duration) -> Result<IssuedLeaf> {
        self.check_domain(id)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generating leaf key")?;
        let cert = leaf_params(id, lifetime)?
            .signed_by(&key, &self.issuer)
            .with_context(|| format!("signing the leaf for {id}"))?;
        Ok(IssuedLeaf {
            id: id.clone(),
            cert_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
        })
    }

    fn check_domain(&self, id: &SpiffeId) -> Result<()> {
        if id.trust_domain() != self.cluster.trust_domain {
            bail!(
                "{id} is outside the issuer's trust domain {}",
                self.cluster.trust_domain
            );
        }
        Ok(())
    }
}

/// Parses an anchors bundle into webpki trust anchors.
pub fn anchors_of(anchors_pem: &str) -> Result<Vec<WebPkiAnchor<'static>>> {
    parse_certs(anchors_pem, "trust anchors")?
        .iter()
        .map(|der| {
            webpki::anchor_from_trusted_cert(der)
                .map(|anchor| anchor.to_owned())
                .context("trust anchor is not a usable CA certificate")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csr::LeafRequest;

    const TD: &str = "mc.test";
    const HOUR: Duration = Duration::from_secs(3600);

    fn chain(pem: &str) -> Vec<CertificateDer<'static>> {
        parse_certs(pem, "chain").unwrap()
    }

    #[test]
    fn a_leaf_of_an_issuer_tells_its_cluster() {
        let anchor = TrustAnchor::generate(TD).unwrap();
        let east = anchor.issue_cluster_issuer("east", HOUR).unwrap();
        let id = SpiffeId::system(TD, "mc-node-agent").unwrap();
        let leaf = east.issue_leaf(&id, HOUR).unwrap();
        let anchors = anchors_of(anchor.cert_pem()).unwrap();
        let found = cluster_of_chain(&anchors, &chain(&leaf.cert_pem), UnixTime::now()).unwrap();
        assert_eq!(found.cluster, "east");
        assert_eq!(found.trust_domain, TD);
        // The leaf and chain make a usable identity.
        let identity =
            crate::Identity::from_pem(&leaf.cert_pem, &leaf.key_pem, anchor.cert_pem()).unwrap();
        assert_eq!(identity.id(), &id);
    }

    #[test]
    fn a_leaf_without_an_issuer_or_from_another_anchor_has_no_cluster() {
        let anchor = TrustAnchor::generate(TD).unwrap();
        let anchors = anchors_of(anchor.cert_pem()).unwrap();
        let direct = anchor.issue("mc-system", "mc-node-agent", HOUR).unwrap();
        assert!(matches!(
            cluster_of_chain(&anchors, &chain(&direct.cert_pem), UnixTime::now()),
            Err(ClusterError::NoIssuer)
        ));
        let other = TrustAnchor::generate(TD).unwrap();
        let foreign = other.issue_cluster_issuer("east", HOUR).unwrap();
        let id = SpiffeId::system(TD, "mc-node-agent").unwrap();
        let leaf = foreign.issue_leaf(&id, HOUR).unwrap();
        assert!(matches!(
            cluster_of_chain(&anchors, &chain(&leaf.cert_pem), UnixTime::now()),
            Err(ClusterError::Chain(_))
        ));
    }

    #[test]
    fn an_unused_issuer_in_the_chain_does_not_change_the_cluster() {
        let anchor = TrustAnchor::generate(TD).unwrap();
        let anchors = anchors_of(anchor.cert_pem()).unwrap();
        let west = anchor.issue_cluster_issuer("west", HOUR).unwrap();
        let east = anchor.issue_cluster_issuer("east", HOUR).unwrap();
        let id = SpiffeId::system(TD, "mc-node-agent").unwrap();
        let leaf = west.issue_leaf(&id, HOUR).unwrap();
        // leaf (signed by west), then east's issuer, then west's.
        let mut certs = chain(&leaf.cert_pem);
        certs.insert(1, chain(east.cert_pem()).remove(0));
        let found = cluster_of_chain(&anchors, &certs, UnixTime::now()).unwrap();
        assert_eq!(found.cluster, "west");
    }

    #[test]
    fn an_expired_leaf_does_not_verify() {
        let anchor = TrustAnchor::generate(TD).unwrap();
        let anchors = anchors_of(anchor.cert_pem()).unwrap();
        let east = anchor.issue_cluster_issuer("east", HOUR).unwrap();
        let id = SpiffeId::system(TD, "mc-node-agent").unwrap();
        let leaf = east.issue_leaf(&id, Duration::from_secs(60)).unwrap();
        let later = UnixTime::since_unix_epoch(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                + Duration::from_secs(120),
        );
        assert!(matches!(
            cluster_of_chain(&anchors, &chain(&leaf.cert_pem), later),
            Err(ClusterError::Chain(_))
        ));
    }

    #[test]
    fn an_issuer_round_trips_through_pem_and_refuses_a_foreign_anchor() {
        let anchor = TrustAnchor::generate(TD).unwrap();
        let east = anchor.issue_cluster_issuer("east", HOUR).unwrap();
        let again =
            ClusterIssuer::from_pem(east.cert_pem(), &east.key_pem(), anchor.cert_pem()).unwrap();
        assert_eq!(again.cluster().cluster, "east");
        let other = TrustAnchor::generate(TD).unwrap();
        assert!(
            ClusterIssuer::from_pem(east.cert_pem(), &east.key_pem(), other.cert_pem()).is_err()
        );
        assert!(anchor.issue_cluster_issuer("East!", HOUR).is_err());
    }

    #[test]
    fn signing_a_request_uses_only_its_key() {
        let anchor = TrustAnchor::generate(TD).unwrap();
        let east = anchor.issue_cluster_issuer("east", HOUR).unwrap();
        let id = SpiffeId::system(TD, "mc-gateway").unwrap();
        let request = LeafRequest::generate(&id).unwrap();
        let parsed = crate::csr::parse_request(request.csr_pem()).unwrap();
        assert_eq!(parsed.id(), &id);
        let chain_pem = east.sign(&parsed, &id, HOUR).unwrap();
        let identity = request
            .into_identity(&chain_pem, anchor.cert_pem())
            .unwrap();
        assert_eq!(identity.id(), &id);
        let lifetime = identity
            .not_after()
            .duration_since(identity.not_before())
            .unwrap();
        assert!(
            lifetime <= HOUR + BACKDATE && lifetime >= HOUR,
            "{lifetime:?}"
        );
        // Another trust domain is refused.
        let foreign = SpiffeId::system("other.test", "mc-gateway").unwrap();
        assert!(east.sign(&parsed, &foreign, HOUR).is_err());
    }
}
