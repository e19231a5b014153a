//! Certificate signing requests (PKCS#10) for SPIFFE leaves.
//!
//! * Requester side, [`LeafRequest`]: a fresh ECDSA P-256 key, kept in
//!   memory only, and a CSR asking for one URI SAN, the SPIFFE ID. Once
//!   the chain comes back, [`LeafRequest::into_identity`] checks it against
//!   the key and the ID and builds the [`Identity`].
//! * Signer side, [`parse_request`]: verifies the CSR's own signature,
//!   that the key is ECDSA P-256 and that it asks for exactly one SAN, an
//!   mc SPIFFE ID; the result ([`RequestedLeaf`]) goes to
//!   [`crate::ClusterIssuer::sign`].

use anyhow::{Context, Result, bail};
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, IsCa, KeyPair, PKCS_ECDSA_P256_SHA256,
    SanType,
};
use thiserror::Error;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
use x509_parser::prelude::FromDer;

use crate::material::Identity;
use crate::spiffe::SpiffeId;

/// `spec.signerName` of mc's CertificateSigningRequests: the controller
/// signs these with the cluster issuer.
pub const SIGNER_NAME: &str = "mc.dev/identity";

/// A private key held in memory and the CSR that asks for its certificate.
pub struct LeafRequest {
    id: SpiffeId,
    key: KeyPair,
    csr_pem: String,
}

impl std::fmt::Debug for LeafRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafRequest")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl LeafRequest {
    /// Generates a key and a CSR for `id`.
    pub fn generate(id: &SpiffeId) -> Result<LeafRequest> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generating a key")?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let uri =
            rcgen::string::Ia5String::try_from(id.to_string()).context("SPIFFE ID is not IA5")?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        let csr = params
            .serialize_request(&key)
            .context("building the certificate signing request")?;
        let csr_pem = csr.pem().context("encoding the CSR as PEM")?;
        Ok(LeafRequest {
            id: id.clone(),
            key,
            csr_pem,
        })
    }

    /// The identity asked for.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// The CSR (PEM `CERTIFICATE REQUEST`).
    pub fn csr_pem(&self) -> &str {
        &self.csr_pem
    }

    /// Builds the identity from the signed chain (leaf first) and the
    /// anchors. Fails unless the leaf certifies this request's key, carries
    /// the requested ID and chains to the anchors.
    pub fn into_identity(self, chain_pem: &str, anchors_pem: &str) -> Result<Identity> {
        let identity = Identity::from_pem(chain_pem, &self.key.serialize_pem(), anchors_pem)
            .context("the signed certificate is not usable")?;
        if identity.id() != &self.id {
            bail!(
                "the signer issued {} instead of the requested {}",
                identity.id(),
                self.id
            );
        }
        Ok(identity)
    }
}

/// Why a CSR was not acceptable. The signer reports it as the reason of a
/// denial.
#[derive(Debug, Error)]
pub enum RequestError {
    /// Not a PEM/DER PKCS#10 request, or its self-signature is wrong.
    #[error("not a valid certificate signing request: {0}")]
    Unparseable(String),
    /// The key is not ECDSA P-256.
    #[error("the key must be ECDSA P-256")]
    KeyType,
    /// The request asks to be a CA.
    #[error("the request asks for a CA certificate")]
    AsksForCa,
    /// Not exactly one SAN, or not an mc SPIFFE ID.
    #[error("the request must carry exactly one SAN, an mc SPIFFE ID ({0})")]
    Identity(String),
}

/// A checked request: the identity it asks for and its public key.
#[derive(Debug, Clone)]
pub struct RequestedLeaf {
    id: SpiffeId,
    public_key: rcgen::PublicKey,
}

impl RequestedLeaf {
    /// The SPIFFE ID the request asks for.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// The requester's public key.
    pub(crate) fn public_key(&self) -> &rcgen::PublicKey {
        &self.public_key
    }
}

/// Parses and checks a PEM CSR (see the module docs).
pub fn parse_request(csr_pem: &str) -> Result<RequestedLeaf, RequestError> {
    let der = rustls_pemfile::csr(&mut csr_pem.as_bytes())
        .map_err(|e| RequestError::Unparseable(e.to_string()))?
        .ok_or_else(|| RequestError::Unparseable("no CERTIFICATE REQUEST block".to_owned()))?;
    let (_, parsed) = X509CertificationRequest::from_der(der.as_ref())
        .map_err(|e| RequestError::Unparseable(e.to_string()))?;
    let spki = &parsed.certification_request_info.subject_pki;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY || curve != Some(OID_EC_P256) {
        return Err(RequestError::KeyType);
    }
    let request = CertificateSigningRequestParams::from_der(&der)
        .map_err(|e| RequestError::Unparseable(e.to_string()))?;
    if matches!(request.params.is_ca, IsCa::Ca(_)) {
        return Err(RequestError::AsksForCa);
    }
    let id = match request.params.subject_alt_names.as_slice() {
        [SanType::URI(uri)] => {
            SpiffeId::parse(uri.as_str()).map_err(|e| RequestError::Identity(e.to_string()))?
        }
        other => return Err(RequestError::Identity(format!("{} SANs", other.len()))),
    };
    Ok(RequestedLeaf {
        id,
        public_key: request.public_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TD: &str = "mc.test";

    #[test]
    fn a_generated_request_parses_back_to_its_id() {
        let id = SpiffeId::system(TD, "mc-node-agent").unwrap();
        let request = LeafRequest::generate(&id).unwrap();
        assert!(
            request
                .csr_pem()
                .starts_with("-----BEGIN CERTIFICATE REQUEST-----")
        );
        assert_eq!(parse_request(request.csr_pem()).unwrap().id(), &id);
    }

    fn csr_with(params: CertificateParams, key: &KeyPair) -> String {
        params.serialize_request(key).unwrap().pem().unwrap()
    }

    #[test]
    fn requests_for_other_names_keys_or_a_ca_are_refused() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let dns = CertificateParams::new(vec!["example.com".to_string()]).unwrap();
        assert!(matches!(
            parse_request(&csr_with(dns, &key)),
            Err(RequestError::Identity(_))
        ));
        let mut two = CertificateParams::default();
        for uri in [
            "spiffe://mc.test/ns/a/sa/b",
            "spiffe://mc.test/ns/mc-system/sa/mc-gateway",
        ] {
            two.subject_alt_names
                .push(SanType::URI(uri.try_into().unwrap()));
        }
        assert!(matches!(
            parse_request(&csr_with(two, &key)),
            Err(RequestError::Identity(_))
        ));
        let mut ca = CertificateParams::default();
        ca.subject_alt_names.push(SanType::URI(
            "spiffe://mc.test/ns/a/sa/b".try_into().unwrap(),
        ));
        ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        assert!(matches!(
            parse_request(&csr_with(ca, &key)),
            Err(RequestError::AsksForCa)
        ));
        let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names.push(SanType::URI(
            "spiffe://mc.test/ns/a/sa/b".try_into().unwrap(),
        ));
        assert!(matches!(
            parse_request(&csr_with(params, &p384)),
            Err(RequestError::KeyType)
        ));
        assert!(matches!(
            parse_request("not a csr"),
            Err(RequestError::Unparseable(_))
        ));
    }

    #[test]
    fn a_chain_for_another_id_or_key_is_not_accepted() {
        let anchor = crate::TrustAnchor::generate(TD).unwrap();
        let issuer = anchor
            .issue_cluster_issuer("east", std::time::Duration::from_secs(3600))
            .unwrap();
        let id = SpiffeId::system(TD, "mc-node-agent").unwrap();
        let request = LeafRequest::generate(&id).unwrap();
        // A chain for a different key (another leaf of the same issuer).
        let other = issuer
            .issue_leaf(&id, std::time::Duration::from_secs(3600))
            .unwrap();
        assert!(
            request
                .into_identity(&other.cert_pem, anchor.cert_pem())
                .is_err()
        );
        // The right key but another identity.
        let request = LeafRequest::generate(&id).unwrap();
        let parsed = parse_request(request.csr_pem()).unwrap();
        let gateway = SpiffeId::system(TD, "mc-gateway").unwrap();
        let chain = issuer
            .sign(&parsed, &gateway, std::time::Duration::from_secs(3600))
            .unwrap();
        assert!(request.into_identity(&chain, anchor.cert_pem()).is_err());
    }
}
