//! [`Identity`]: one consistent set of identity material, the leaf chain
//! with its key and the trust anchors, checked when it is built.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use rustls::pki_types::{CertificateDer, TrustAnchor, UnixTime};
use rustls::sign::CertifiedKey;

use crate::files::{IdentityPaths, parse_certs, parse_key, read_text};
use crate::peer::{spiffe_id_of, validity_of};
use crate::spiffe::SpiffeId;
use crate::verify::{crypto_provider, verify_chain};

/// A certified key, the SPIFFE ID it proves and the trust anchors peers
/// must chain to. Immutable: rotation swaps in a whole new `Identity`.
pub struct Identity {
    id: SpiffeId,
    certified_key: Arc<CertifiedKey>,
    anchors: Arc<[TrustAnchor<'static>]>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.id)
            .field("anchors", &self.anchors.len())
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn epoch_seconds(secs: i64) -> SystemTime {
    match u64::try_from(secs) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => UNIX_EPOCH,
    }
}

impl Identity {
    /// Builds an identity from PEM texts: the chain (leaf first), the leaf's
    /// key and the anchors bundle. Fails unless the key matches the leaf,
    /// the leaf carries one SPIFFE ID and it chains to one of the anchors.
    pub fn from_pem(cert_chain_pem: &str, key_pem: &str, anchors_pem: &str) -> Result<Identity> {
        let chain = parse_certs(cert_chain_pem, "certificate chain")?;
        let key = parse_key(key_pem)?;
        let anchor_certs = parse_certs(anchors_pem, "trust anchors")?;
        let anchors = anchor_certs
            .iter()
            .map(|der| {
                webpki::anchor_from_trusted_cert(der)
                    .map(|anchor| anchor.to_owned())
                    .context("trust anchor is not a usable CA certificate")
            })
            .collect::<Result<Vec<_>>>()?;
        let leaf: &CertificateDer<'static> = &chain[0];
        let id = spiffe_id_of(leaf).context("reading the leaf's SPIFFE ID")?;
        let (not_before, not_after) = validity_of(leaf).context("reading the leaf's validity")?;
        verify_chain(
            &anchors,
            &chain,
            UnixTime::now(),
            webpki::KeyUsage::client_auth(),
        )
        .or_else(|_| {
            verify_chain(
                &anchors,
                &chain,
                UnixTime::now(),
                webpki::KeyUsage::server_auth(),
            )
        })
        .with_context(|| format!("the certificate of {id} does not chain to the trust anchors"))?;
        let certified_key = CertifiedKey::from_der(chain, key, &crypto_provider())
            .context("the private key does not match the certificate")?;
        Ok(Identity {
            id,
            certified_key: Arc::new(certified_key),
            anchors: anchors.into(),
            not_before: epoch_seconds(not_before),
            not_after: epoch_seconds(not_after),
        })
    }

    /// Reads and checks the three files of an identity.
    pub fn load(paths: &IdentityPaths) -> Result<Identity> {
        Identity::from_pem(
            &read_text(&paths.cert_chain)?,
            &read_text(&paths.key)?,
            &read_text(&paths.anchors)?,
        )
        .with_context(|| format!("loading identity from {}", paths.cert_chain.display()))
    }

    /// The SPIFFE ID the certificate proves.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// The chain and signing key, as rustls uses them.
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified_key
    }

    /// The anchors peers' chains are verified against.
    pub fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }

    /// Start of the leaf's validity.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// End of the leaf's validity.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// When to renew: two thirds into the leaf's lifetime.
    pub fn renew_at(&self) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + lifetime * 2 / 3
    }
}
