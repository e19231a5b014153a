//! LoadBalancer address allocation from one cluster's share of the lab's
//! pool (no I/O).
//!
//! The pool `198.18.n.160-250` is shared by every cluster of the lab and
//! each cluster's daemon allocates on its own, so each cluster gets a fixed,
//! disjoint slice: cluster k owns pool addresses `k*S .. k*S+S` where
//! `S = pool size / MAX_CLUSTERS` (11 addresses).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use crate::plan::{LB_POOL, LabPlan, MAX_CLUSTERS};

/// Addresses of `lab`'s pool that cluster number `cluster_index` may hand
/// out, in order.
pub fn share(lab: &LabPlan, cluster_index: usize) -> Vec<Ipv4Addr> {
    let size = usize::from(LB_POOL.1 - LB_POOL.0) + 1;
    let per_cluster = size / MAX_CLUSTERS;
    let first = cluster_index * per_cluster;
    (first..first + per_cluster)
        .filter_map(|i| lab.lb_addr(i))
        .collect()
}

/// One LoadBalancer Service asking for an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// `(namespace, name)`.
    pub key: (String, String),
    /// Older claims win conflicts: creation time as RFC 3339 (sorts as text).
    pub created: String,
    /// `spec.loadBalancerIP`, if set.
    pub requested: Option<Ipv4Addr>,
    /// The address its status already shows, if any.
    pub current: Option<Ipv4Addr>,
}

/// Why a claim got no address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("requested address {0} is not in this cluster's share of the lab's LoadBalancer pool")]
    NotInShare(Ipv4Addr),
    #[error("requested address {0} is already used by another Service")]
    Taken(Ipv4Addr),
    #[error("this cluster's share of the lab's LoadBalancer pool is exhausted")]
    Exhausted,
}

/// The address of every claim: addresses already held stay put, requested
/// addresses are honoured when in `share` and free, the rest get the lowest
/// free address. Conflicts go to the older Service.
pub fn assign(
    claims: &[Claim],
    share: &[Ipv4Addr],
) -> BTreeMap<(String, String), Result<Ipv4Addr, Refusal>> {
    let in_share: BTreeSet<Ipv4Addr> = share.iter().copied().collect();
    let mut order: Vec<&Claim> = claims.iter().collect();
    order.sort_by(|a, b| (&a.created, &a.key).cmp(&(&b.created, &b.key)));

    let mut used = BTreeSet::new();
    let mut result = BTreeMap::new();
    // Keep what is held (if still consistent with the request).
    for claim in &order {
        if let Some(ip) = claim.current
            && in_share.contains(&ip)
            && claim.requested.is_none_or(|r| r == ip)
            && used.insert(ip)
        {
            result.insert(claim.key.clone(), Ok(ip));
        }
    }
    // Then explicit requests.
    for claim in &order {
        let Some(ip) = claim.requested.filter(|_| !result.contains_key(&claim.key)) else {
            continue;
        };
        let outcome = if !in_share.contains(&ip) {
            Err(Refusal::NotInShare(ip))
        } else if !used.insert(ip) {
            Err(Refusal::Taken(ip))
        } else {
            Ok(ip)
        };
        result.insert(claim.key.clone(), outcome);
    }
    // Then everyone else, lowest free address first.
    for claim in &order {
        if result.contains_key(&claim.key) {
            continue;
        }
        let free = share.iter().copied().find(|ip| !used.contains(ip));
        let outcome = match free {
            Some(ip) => {
                used.insert(ip);
                Ok(ip)
            }
            None => Err(Refusal::Exhausted),
        };
        result.insert(claim.key.clone(), outcome);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::LabPlan;

    fn claim(
        name: &str,
        created: &str,
        requested: Option<[u8; 4]>,
        current: Option<[u8; 4]>,
    ) -> Claim {
        Claim {
            key: ("shop".into(), name.into()),
            created: created.into(),
            requested: requested.map(Ipv4Addr::from),
            current: current.map(Ipv4Addr::from),
        }
    }

    fn lab() -> LabPlan {
        LabPlan {
            name: "t".into(),
            slot: 3,
        }
    }

    #[test]
    fn clusters_get_disjoint_shares_inside_the_pool() {
        let lab = lab();
        let shares: Vec<Vec<Ipv4Addr>> = (0..MAX_CLUSTERS).map(|k| share(&lab, k)).collect();
        assert_eq!(shares[0].first(), Some(&Ipv4Addr::new(198, 18, 3, 160)));
        assert_eq!(shares[1].first(), Some(&Ipv4Addr::new(198, 18, 3, 171)));
        let all: BTreeSet<Ipv4Addr> = shares.iter().flatten().copied().collect();
        assert_eq!(
            all.len(),
            shares.iter().map(Vec::len).sum::<usize>(),
            "no address in two shares"
        );
        assert!(shares.iter().all(|s| s.len() == 11));
        assert!(all.iter().all(|ip| (160..=250).contains(&ip.octets()[3])));
    }

    #[test]
    fn new_services_get_the_lowest_free_address_and_held_ones_stay() {
        let share = share(&lab(), 0);
        let claims = [
            claim("old", "2025-01-01T00:00:00Z", None, Some([198, 18, 3, 161])),
            claim("new", "2025-01-02T00:00:00Z", None, None),
            claim("newer", "2025-01-03T00:00:00Z", None, None),
        ];
        let got = assign(&claims, &share);
        assert_eq!(
            got[&("shop".into(), "old".into())],
            Ok(Ipv4Addr::new(198, 18, 3, 161))
        );
        assert_eq!(
            got[&("shop".into(), "new".into())],
            Ok(Ipv4Addr::new(198, 18, 3, 160))
        );
        assert_eq!(
            got[&("shop".into(), "newer".into())],
            Ok(Ipv4Addr::new(198, 18, 3, 162))
        );
    }

    #[test]
    fn requested_addresses_are_honoured_only_in_the_share_and_when_free() {
        let share = share(&lab(), 1);
        let claims = [
            claim("a", "1", Some([198, 18, 3, 175]), None),
            claim("b", "2", Some([198, 18, 3, 175]), None),
            claim("c", "3", Some([198, 18, 3, 160]), None),
            claim("d", "4", None, None),
        ];
        let got = assign(&claims, &share);
        assert_eq!(
            got[&("shop".into(), "a".into())],
            Ok(Ipv4Addr::new(198, 18, 3, 175))
        );
        assert_eq!(
            got[&("shop".into(), "b".into())],
            Err(Refusal::Taken(Ipv4Addr::new(198, 18, 3, 175)))
        );
        assert_eq!(
            got[&("shop".into(), "c".into())],
            Err(Refusal::NotInShare(Ipv4Addr::new(198, 18, 3, 160)))
        );
        assert_eq!(
            got[&("shop".into(), "d".into())],
            Ok(Ipv4Addr::new(198, 18, 3, 171))
        );
    }

    #[test]
    fn a_changed_request_moves_the_service_and_conflicts_go_to_the_older() {
        let share = share(&lab(), 0);
        let claims = [
            claim(
                "moved",
                "1",
                Some([198, 18, 3, 165]),
                Some([198, 18, 3, 160]),
            ),
            claim("dup-old", "2", None, Some([198, 18, 3, 161])),
            claim("dup-new", "3", None, Some([198, 18, 3, 161])),
        ];
        let got = assign(&claims, &share);
        assert_eq!(
            got[&("shop".into(), "moved".into())],
            Ok(Ipv4Addr::new(198, 18, 3, 165))
        );
        assert_eq!(
            got[&("shop".into(), "dup-old".into())],
            Ok(Ipv4Addr::new(198, 18, 3, 161))
        );
        assert_eq!(
            got[&("shop".into(), "dup-new".into())],
            Ok(Ipv4Addr::new(198, 18, 3, 160))
        );
    }

    #[test]
    fn an_exhausted_share_refuses_further_services() {
        let share = share(&lab(), 0);
        let claims: Vec<Claim> = (0..12)
            .map(|i| claim(&format!("s{i:02}"), &format!("{i:02}"), None, None))
            .collect();
        let got = assign(&claims, &share);
        assert_eq!(got.values().filter(|r| r.is_ok()).count(), 11);
        assert_eq!(got[&("shop".into(), "s11".into())], Err(Refusal::Exhausted));
    }
}
