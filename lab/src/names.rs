//! Rules for the names users give labs and clusters, chosen so that every
//! derived netns and interface name stays valid and unambiguous.

use anyhow::{Result, bail};

/// A lab name: 1 to 12 lowercase letters and digits, starting with a
/// letter. No dashes, so `mc-<lab>-` prefixes never overlap between labs.
pub fn validate_lab_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 12
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !ok {
        bail!(
            "lab name {name:?} must be 1-12 lowercase letters and digits, starting with a letter"
        );
    }
    Ok(())
}

/// A cluster name: a DNS label of at most 20 characters (it is part of
/// Node names, netns names and kubeconfig contexts).
pub fn validate_cluster_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 20
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        bail!("cluster name {name:?} must be a DNS label of at most 20 characters");
    }
    Ok(())
}

/// A `<cluster>/<namespace>/<name>` reference to a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    /// Cluster name.
    pub cluster: String,
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
}

impl std::str::FromStr for PodRef {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [cluster, namespace, name]
                if !cluster.is_empty() && !namespace.is_empty() && !name.is_empty() =>
            {
                Ok(PodRef {
                    cluster: cluster.to_string(),
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                })
            }
            _ => bail!("expected <cluster>/<namespace>/<pod>, got {s:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_names_cannot_prefix_each_other() {
        assert!(validate_lab_name("mc").is_ok());
        assert!(validate_lab_name("t123x4").is_ok());
        assert!(validate_lab_name("a-b").is_err());
        assert!(validate_lab_name("").is_err());
        assert!(validate_lab_name("1a").is_err());
    }

    #[test]
    fn pod_refs_need_three_parts() {
        let r: PodRef = "east/default/web".parse().unwrap();
        assert_eq!(r.cluster, "east");
        assert!("east/web".parse::<PodRef>().is_err());
        assert!("east//web".parse::<PodRef>().is_err());
    }
}
