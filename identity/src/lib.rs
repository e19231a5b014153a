//! mc-identity: workload identities (SPIFFE IDs in X.509 certificates) and
//! the mutual-TLS configs of the tunnel.
//!
//! * [`SpiffeId`]: the parsed form of
//!   `spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>`.
//! * [`Identity`]: a checked leaf chain + key + trust anchors.
//! * [`CertSource`]: where the current [`Identity`] comes from; implemented
//!   by [`SharedIdentity`] (in memory, swappable), [`FileCertSource`]
//!   (`tls.crt`/`tls.key`/`ca.crt`) and [`CsrCertSource`] (issued through
//!   Kubernetes CSRs, renewed at two thirds of the lifetime). Configs ask it
//!   on every handshake, so
//!   rotation needs no new config.
//! * [`server_config`] (gateway) and [`client_config`] (agent): TLS 1.3
//!   only, mutual, no resumption (a renewed certificate is used at once).
//! * [`peer_spiffe_id`]: who is on the other end of a connection.
//! * [`TrustAnchor`]: the self-signed root every linked cluster shares.
//! * [`ClusterIssuer`]: a cluster's intermediate CA, naming the cluster;
//!   [`cluster_of_chain`] reads which cluster vouched for a peer.
//! * [`LeafRequest`] / [`parse_request`]: CSRs with the key kept in memory,
//!   and their checks on the signer's side.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use mc_identity::{FileCertSource, IdentityPaths, SpiffeId, client_config};
//! let source = Arc::new(FileCertSource::load(IdentityPaths::in_dir("/var/run/mc/identity".as_ref()))?);
//! let gateway = SpiffeId::parse("spiffe://mc.local/ns/mc-system/sa/mc-gateway")?;
//! let config = client_config(source, gateway)?;
//! # Ok(()) }
//! ```

pub mod authority;
pub mod csr;
pub mod csr_source;
pub mod files;
pub mod issuer;
pub mod material;
pub mod peer;
pub mod source;
pub mod spiffe;
pub mod tls;
pub mod verify;

pub use authority::{IssuedLeaf, TrustAnchor};
pub use csr::{LeafRequest, RequestError, RequestedLeaf, SIGNER_NAME, parse_request};
pub use csr_source::{CsrCertSource, CsrConfig, IdentityFlags, SourceKind};
pub use files::IdentityPaths;
pub use issuer::{
    ClusterError, ClusterIssuer, ISSUER_LIFETIME, ISSUER_SECRET, IssuingCluster, anchors_of,
    cluster_of_chain, issuer_uri, issuing_cluster_of, valid_cluster_name,
};
pub use material::Identity;
pub use peer::{PeerIdError, peer_spiffe_id, spiffe_id_of, validity_of};
pub use source::{CertSource, FileCertSource, SharedIdentity};
pub use spiffe::{SYSTEM_NAMESPACE, SpiffeId, SpiffeIdError};
pub use tls::{SourceResolver, client_config, cluster_client_config, server_config};
pub use verify::{
    AgentVerifier, GatewayVerifier, UnexpectedCluster, UnexpectedIdentity, crypto_provider,
};
