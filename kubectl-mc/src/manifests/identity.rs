//! The identity Secrets install writes: the trust anchor certificate alone,
//! and a leaf (tls.crt, tls.key, ca.crt) for the gateway and the node agent.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use mc_identity::TrustAnchor;

use super::meta::{self, GATEWAY, NODE_AGENT, TRUST_ANCHOR_SECRET, identity_secret, system_meta};
use crate::objects::{Object, object};

/// Lifetime of the leaves install issues, until the controller signs them.
pub const LEAF_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

fn data(entries: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect()
}

/// Secret `mc-trust-anchor` (ca.crt only) and the gateway's and node agent's
/// identity Secrets, leaves freshly issued by `anchor`.
pub fn secrets(anchor: &TrustAnchor) -> Result<Vec<Object>> {
    let mut objects = vec![object(&Secret {
        metadata: system_meta(TRUST_ANCHOR_SECRET, None),
        type_: Some("Opaque".to_string()),
        data: Some(data(&[("ca.crt", anchor.cert_pem())])),
        ..Secret::default()
    })?];
    for service_account in [GATEWAY, NODE_AGENT] {
        let leaf = anchor
            .issue(mc_api::NAMESPACE, service_account, LEAF_LIFETIME)
            .with_context(|| format!("issuing the certificate of {service_account}"))?;
        objects.push(object(&Secret {
            metadata: system_meta(
                &identity_secret(service_account),
                Some(meta::component_of(service_account)),
            ),
            type_: Some("kubernetes.io/tls".to_string()),
            data: Some(data(&[
                ("tls.crt", &leaf.cert_pem),
                ("tls.key", &leaf.key_pem),
                ("ca.crt", anchor.cert_pem()),
            ])),
            ..Secret::default()
        })?);
    }
    Ok(objects)
}
