//! The controller's settings, and the duration syntax of its flags.

use std::net::SocketAddr;
use std::time::Duration;

/// How one controller instance runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Name of this cluster.
    pub cluster_name: String,
    /// Namespace of Links, their Secrets and the leader Lease (`mc-system`).
    pub namespace: String,
    /// This instance's identity in the Lease and in Events (the pod name).
    pub identity: String,
    /// Where the admin server listens; `None` serves no admin endpoints.
    pub admin_listen: Option<SocketAddr>,
    /// Period of full reconciliations of every mirror loop.
    pub resync: Duration,
    /// Most frequent rewrite of a Link status for probe details alone.
    pub status_refresh: Duration,
    /// Name of the leader Lease (`mc-controller`).
    pub lease_name: String,
    /// Lease duration (15 s).
    pub lease_duration: Duration,
    /// Leader renewal period (5 s).
    pub renew_period: Duration,
    /// Follower retry period (2 s).
    pub retry_period: Duration,
    /// Lifetime of the leaf certificates the signer issues (24 h); a
    /// request's `spec.expirationSeconds` may only shorten it.
    pub leaf_lifetime: Duration,
    /// `(namespace, service account)` pairs whose own SPIFFE ID the signer
    /// issues (mc's agent and gateway).
    pub signer_accounts: Vec<(String, String)>,
    /// Secret in `namespace` holding the cluster issuer.
    pub issuer_secret: String,
    /// Which loops the leader runs.
    pub loops: Vec<Loop>,
}

/// One of the loops the leader runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Loop {
    /// The service mirror, link probes and status, one supervisor per Link.
    Links,
    /// The certificate signer for the agents' and gateways' CSRs.
    Signer,
}

/// The accounts the signer serves by default: mc's node agent and gateway.
pub fn default_signer_accounts() -> Vec<(String, String)> {
    ["mc-node-agent", "mc-gateway"]
        .into_iter()
        .map(|sa| (mc_api::NAMESPACE.to_string(), sa.to_string()))
        .collect()
}

/// Parses `<namespace>/<serviceaccount>`.
pub fn parse_account(text: &str) -> Result<(String, String), String> {
    match text.split_once('/') {
        Some((ns, sa)) if !ns.is_empty() && !sa.is_empty() && !sa.contains('/') => {
            Ok((ns.to_string(), sa.to_string()))
        }
        _ => Err(format!("{text:?} is not <namespace>/<serviceaccount>")),
    }
}

impl Config {
    /// The defaults for `cluster_name`, with identity `identity`.
    pub fn new(cluster_name: &str, identity: &str) -> Config {
        Config {
            cluster_name: cluster_name.to_string(),
            namespace: mc_api::NAMESPACE.to_string(),
            identity: identity.to_string(),
            admin_listen: None,
            resync: Duration::from_secs(300),
            status_refresh: Duration::from_secs(10),
            lease_name: "mc-controller".to_string(),
            lease_duration: Duration::from_secs(15),
            renew_period: Duration::from_secs(5),
            retry_period: Duration::from_secs(2),
            leaf_lifetime: Duration::from_secs(24 * 3600),
            signer_accounts: default_signer_accounts(),
            issuer_secret: mc_identity::ISSUER_SECRET.to_string(),
            loops: vec![Loop::Links, Loop::Signer],
        }
    }
}

/// Parses `500ms`, `5s`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 5s, 2m or 1h"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("unknown unit {unit:?} in {text:?} (ms, s, m, h)")),
    };
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn accounts_parse() {
        assert_eq!(
            parse_account("mc-system/mc-gateway"),
            Ok(("mc-system".to_string(), "mc-gateway".to_string()))
        );
        assert!(parse_account("mc-gateway").is_err());
        assert!(parse_account("a/b/c").is_err());
    }
}
