//! SPIFFE IDs of mc workloads: `spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>`.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// The namespace mc's own components run in.
pub const SYSTEM_NAMESPACE: &str = "mc-system";

/// Why a string is not an mc SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SpiffeIdError {
    /// It does not start with `spiffe://`.
    #[error("{0:?} does not start with spiffe://")]
    Scheme(String),
    /// The trust domain is empty, too long or has characters outside
    /// `[a-z0-9._-]`.
    #[error("invalid trust domain in {0:?}")]
    TrustDomain(String),
    /// The path is not `/ns/<namespace>/sa/<serviceaccount>`.
    #[error("{0:?} is not of the form spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>")]
    Path(String),
    /// A namespace or service account segment is empty, too long or has
    /// characters outside `[a-z0-9.-]`.
    #[error("invalid namespace or service account in {0:?}")]
    Segment(String),
}

/// A workload identity: trust domain, namespace and service account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

fn valid_trust_domain(td: &str) -> bool {
    !td.is_empty()
        && td.len() <= 255
        && td
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

fn valid_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment.len() <= 253
        && segment != "."
        && segment != ".."
        && segment
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-".contains(&b))
}

impl SpiffeId {
    /// Builds an ID from its parts, checking each.
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<SpiffeId, SpiffeIdError> {
        let id = SpiffeId {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        };
        if !valid_trust_domain(trust_domain) {
            return Err(SpiffeIdError::TrustDomain(id.to_string()));
        }
        if !valid_segment(namespace) || !valid_segment(service_account) {
            return Err(SpiffeIdError::Segment(id.to_string()));
        }
        Ok(id)
    }

    /// The ID of an mc component's service account in `mc-system`.
    pub fn system(trust_domain: &str, service_account: &str) -> Result<SpiffeId, SpiffeIdError> {
        SpiffeId::new(trust_domain, SYSTEM_NAMESPACE, service_account)
    }

    /// Parses `spiffe://<td>/ns/<ns>/sa/<sa>`.
    pub fn parse(uri: &str) -> Result<SpiffeId, SpiffeIdError> {
        let rest = uri
            .strip_prefix("spiffe://")
            .ok_or_else(|| SpiffeIdError::Scheme(uri.to_owned()))?;
        let (trust_domain, path) = rest
            .split_once('/')
            .ok_or_else(|| SpiffeIdError::Path(uri.to_owned()))?;
        if !valid_trust_domain(trust_domain) {
            return Err(SpiffeIdError::TrustDomain(uri.to_owned()));
        }
        let mut parts = path.split('/');
        let (Some("ns"), Some(namespace), Some("sa"), Some(service_account), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(SpiffeIdError::Path(uri.to_owned()));
        };
        if !valid_segment(namespace) || !valid_segment(service_account) {
            return Err(SpiffeIdError::Segment(uri.to_owned()));
        }
        Ok(SpiffeId {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        })
    }

    /// The trust domain, e.g. `mc.local`.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The workload's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The workload's service account.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SpiffeId::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_same_uri() {
        let uri = "spiffe://mc.local/ns/mc-system/sa/mc-gateway";
        let id: SpiffeId = uri.parse().unwrap();
        assert_eq!(id.trust_domain(), "mc.local");
        assert_eq!(id.namespace(), "mc-system");
        assert_eq!(id.service_account(), "mc-gateway");
        assert_eq!(id.to_string(), uri);
        assert_eq!(SpiffeId::system("mc.local", "mc-gateway").unwrap(), id);
    }

    #[test]
    fn refuses_what_is_not_an_mc_identity() {
        for bad in [
            "https://mc.local/ns/a/sa/b",
            "spiffe://mc.local",
            "spiffe:///ns/a/sa/b",
            "spiffe://MC.local/ns/a/sa/b",
            "spiffe://mc.local/ns/a/sa/b/extra",
            "spiffe://mc.local/ns/a/sa/",
            "spiffe://mc.local/ns//sa/b",
            "spiffe://mc.local/sa/b/ns/a",
            "spiffe://mc.local/ns/../sa/b",
            "spiffe://mc.local/ns/A/sa/b",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad} must be refused");
        }
        assert!(SpiffeId::new("mc.local", "a b", "c").is_err());
    }
}
