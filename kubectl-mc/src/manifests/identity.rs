//! The identity Secrets install writes: the trust anchors alone (mounted by
//! the gateway and the node agent) and this cluster's issuer (read only by
//! the controller's signer). Leaf certificates are not rendered: agents
//! and gateways request them through CertificateSigningRequests.

use std::collections::BTreeMap;

use anyhow::Result;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use mc_identity::ClusterIssuer;

use super::meta::{ISSUER_SECRET, TRUST_ANCHOR_SECRET, system_meta};
use crate::objects::{Object, object};

fn data(entries: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect()
}

/// Secret `mc-trust-anchor` (`ca.crt` only) and Secret
/// `mc-identity-issuer` (`tls.crt`, `tls.key`, `ca.crt`).
pub fn secrets(issuer: &ClusterIssuer) -> Result<Vec<Object>> {
    Ok(vec![
        object(&Secret {
            metadata: system_meta(TRUST_ANCHOR_SECRET, None),
            type_: Some("Opaque".to_string()),
            data: Some(data(&[("ca.crt", issuer.anchors_pem())])),
            ..Secret::default()
        })?,
        object(&Secret {
            metadata: system_meta(ISSUER_SECRET, Some("controller")),
            type_: Some("kubernetes.io/tls".to_string()),
            data: Some(data(&[
                ("tls.crt", issuer.cert_pem()),
                ("tls.key", &issuer.key_pem()),
                ("ca.crt", issuer.anchors_pem()),
            ])),
            ..Secret::default()
        })?,
    ])
}
