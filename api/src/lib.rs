//! The names every part of mc agrees on, and the `Link` custom resource.
//!
//! Everything here is data: constants, label keys, the CRD types and the
//! format of the allowed-callers annotation. Behaviour lives in the crates
//! that use them.

pub mod allowed_callers;
pub mod labels;
pub mod link;

pub use allowed_callers::{AllowedCallers, AllowedCallersError};
pub use link::{Link, LinkSpec, LinkStatus};

/// API group of mc's custom resources.
pub const GROUP: &str = "mc.dev";
/// API version of mc's custom resources.
pub const VERSION: &str = "v1alpha1";
/// Namespace that holds mc's components and Links.
pub const NAMESPACE: &str = "mc-system";
/// Port of the gateway's mTLS tunnel listener.
pub const GATEWAY_TUNNEL_PORT: u16 = 4143;
/// Admin port of every mc component: `/live`, `/ready`, `/metrics`.
pub const ADMIN_PORT: u16 = 4191;
/// Default cluster DNS domain.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
/// Default SPIFFE trust domain.
pub const DEFAULT_TRUST_DOMAIN: &str = "mc.local";

/// Name of the mirror of `service` from `cluster`, before any shortening.
pub fn mirror_name(service: &str, cluster: &str) -> String {
    format!("{service}-{cluster}")
}

/// SPIFFE ID of a workload: `spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>`.
pub fn spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}
