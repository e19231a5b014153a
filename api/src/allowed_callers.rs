//! Who may call an exported Service: the value of the
//! [`ALLOWED_CALLERS`](crate::labels::ALLOWED_CALLERS) annotation.
//!
//! Without the annotation, any caller from a linked cluster may reach the
//! Service. With it, only the listed callers may: entries separated by
//! commas or white space, each either a cluster (`west`: any workload of
//! that cluster) or one workload identity (`west/default/frontend`: the
//! ServiceAccount `frontend` in namespace `default` of cluster `west`).
//! A segment may be `*` (`west/payments/*`: any account of that namespace).
//!
//! The format is shared by the gateway (which enforces it), `kubectl mc
//! export --allow` (which writes it) and `kubectl mc check` (which reads it).

use std::fmt;
use std::str::FromStr;

/// One segment of an entry: a name, or `*` for any.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Any,
    Name(String),
}

impl Segment {
    fn parse(entry: &str, segment: &str) -> Result<Segment, AllowedCallersError> {
        if segment == "*" {
            return Ok(Segment::Any);
        }
        let valid = !segment.is_empty()
            && segment.len() <= 253
            && segment
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if valid {
            Ok(Segment::Name(segment.to_owned()))
        } else {
            Err(AllowedCallersError::BadName {
                entry: entry.to_owned(),
                segment: segment.to_owned(),
            })
        }
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            Segment::Any => true,
            Segment::Name(name) => name == value,
        }
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Segment::Any => f.write_str("*"),
            Segment::Name(name) => f.write_str(name),
        }
    }
}

/// One allowed caller: a cluster, or a namespace and ServiceAccount in it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    cluster: Segment,
    account: Option<(Segment, Segment)>,
}

/// Why an annotation value is not a list of callers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowedCallersError {
    /// Nothing listed: that would deny everyone, which is what unexporting
    /// is for.
    #[error(
        "the list of allowed callers is empty (remove the annotation to allow every linked cluster, or unexport the Service)"
    )]
    Empty,
    /// An entry with two, or more than three, `/`-separated parts.
    #[error("{0:?} is neither a cluster (west) nor an identity (west/NAMESPACE/SERVICEACCOUNT)")]
    Shape(String),
    /// A part that is not a Kubernetes name or `*`.
    #[error("{segment:?} in {entry:?} is not a name (lower-case letters, digits, '-', '.') or '*'")]
    BadName {
        /// The whole entry.
        entry: String,
        /// The offending part.
        segment: String,
    },
}

/// A parsed allowed-callers list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedCallers {
    entries: Vec<Entry>,
}

impl AllowedCallers {
    /// Whether a caller from `cluster`, running as `account` (namespace,
    /// ServiceAccount) when known, is listed. An identity entry never
    /// matches a caller whose account is unknown (a host-network process,
    /// or a pod the caller's agent could not name).
    pub fn allows(&self, cluster: &str, account: Option<(&str, &str)>) -> bool {
        self.entries.iter().any(|entry| {
            entry.cluster.matches(cluster)
                && match (&entry.account, account) {
                    (None, _) => true,
                    (Some((ns, sa)), Some((caller_ns, caller_sa))) => {
                        ns.matches(caller_ns) && sa.matches(caller_sa)
                    }
                    (Some(_), None) => false,
                }
        })
    }
}

impl FromStr for AllowedCallers {
    type Err = AllowedCallersError;

    fn from_str(value: &str) -> Result<AllowedCallers, AllowedCallersError> {
        let mut entries = Vec::new();
        for raw in value
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
        {
            let parts: Vec<&str> = raw.split('/').collect();
            let entry = match parts.as_slice() {
                [cluster] => Entry {
                    cluster: Segment::parse(raw, cluster)?,
                    account: None,
                },
                [cluster, ns, sa] => Entry {
                    cluster: Segment::parse(raw, cluster)?,
                    account: Some((Segment::parse(raw, ns)?, Segment::parse(raw, sa)?)),
                },
                _ => return Err(AllowedCallersError::Shape(raw.to_owned())),
            };
            entries.push(entry);
        }
        if entries.is_empty() {
            return Err(AllowedCallersError::Empty);
        }
        Ok(AllowedCallers { entries })
    }
}

impl fmt::Display for AllowedCallers {
    /// The canonical form: entries joined by `,`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, entry) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}", entry.cluster)?;
            if let Some((ns, sa)) = &entry.account {
                write!(f, "/{ns}/{sa}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> AllowedCallers {
        value.parse().expect("valid list")
    }

    #[test]
    fn a_cluster_entry_allows_every_workload_of_that_cluster_only() {
        let list = parse("west");
        assert!(list.allows("west", Some(("default", "frontend"))));
        assert!(list.allows("west", None));
        assert!(!list.allows("north", Some(("default", "frontend"))));
    }

    #[test]
    fn an_identity_entry_allows_that_account_and_nothing_else() {
        let list = parse("west/default/frontend");
        assert!(list.allows("west", Some(("default", "frontend"))));
        assert!(!list.allows("west", Some(("default", "default"))));
        assert!(!list.allows("west", Some(("other", "frontend"))));
        assert!(!list.allows("north", Some(("default", "frontend"))));
        assert!(
            !list.allows("west", None),
            "an unknown account is not the listed one"
        );
    }

    #[test]
    fn wildcards_and_separators() {
        let list = parse(" west/payments/* ,\n north  */ops/deployer");
        assert!(list.allows("west", Some(("payments", "anything"))));
        assert!(!list.allows("west", Some(("default", "anything"))));
        assert!(list.allows("north", None));
        assert!(list.allows("south", Some(("ops", "deployer"))));
        assert!(!list.allows("south", Some(("ops", "other"))));
        assert_eq!(
            list.to_string(),
            "west/payments/*,north,*/ops/deployer",
            "canonical form"
        );
    }

    #[test]
    fn malformed_lists_are_errors_not_silently_narrower_or_wider() {
        assert_eq!(
            "".parse::<AllowedCallers>(),
            Err(AllowedCallersError::Empty)
        );
        assert_eq!(
            " , ".parse::<AllowedCallers>(),
            Err(AllowedCallersError::Empty)
        );
        assert_eq!(
            "west/default".parse::<AllowedCallers>(),
            Err(AllowedCallersError::Shape("west/default".into()))
        );
        assert_eq!(
            "west/a/b/c".parse::<AllowedCallers>(),
            Err(AllowedCallersError::Shape("west/a/b/c".into()))
        );
        assert!(matches!(
            "West/default/frontend".parse::<AllowedCallers>(),
            Err(AllowedCallersError::BadName { segment, .. }) if segment == "West"
        ));
        assert!(matches!(
            "west//frontend".parse::<AllowedCallers>(),
            Err(AllowedCallersError::BadName { .. })
        ));
    }
}
