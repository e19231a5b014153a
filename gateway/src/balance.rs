//! Endpoint choice: power of two choices on open connections.
//!
//! Two distinct endpoints are drawn at random and the one with fewer open
//! connections wins. This spreads load nearly as well as least-connections
//! without scanning every endpoint or sharing a lock between connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::Rng;

use crate::targets::Endpoint;

/// Picks an endpoint among `endpoints`, skipping the indexes in `exclude`
/// (endpoints that already failed to connect for this connection).
pub fn pick<'a>(
    endpoints: &'a [Endpoint],
    exclude: &[usize],
    rng: &mut impl Rng,
) -> Option<(usize, &'a Endpoint)> {
    let candidates = endpoints.len().checked_sub(exclude.len())?;
    let nth_allowed = |mut n: usize| {
        (0..endpoints.len()).find(|i| {
            if exclude.contains(i) {
                return false;
            }
            if n == 0 {
                return true;
            }
            n -= 1;
            false
        })
    };
    let chosen = match candidates {
        0 => return None,
        1 => nth_allowed(0)?,
        n => {
            let a = rng.random_range(0..n);
            let mut b = rng.random_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            let (a, b) = (nth_allowed(a)?, nth_allowed(b)?);
            let load = |i: usize| endpoints[i].active.load(Ordering::Relaxed);
            if load(b) < load(a) { b } else { a }
        }
    };
    Some((chosen, &endpoints[chosen]))
}

/// Counts one open connection on an endpoint for as long as it lives.
#[derive(Debug)]
pub struct ActiveGuard(Arc<AtomicUsize>);

impl ActiveGuard {
    /// Counts a connection on `endpoint` until the guard is dropped.
    pub fn new(endpoint: &Endpoint) -> Self {
        endpoint.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(endpoint.active.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn endpoints(loads: &[usize]) -> Vec<Endpoint> {
        loads
            .iter()
            .enumerate()
            .map(|(i, &l)| Endpoint {
                addr: format!("10.0.0.{}:80", i + 1).parse().unwrap(),
                active: Arc::new(AtomicUsize::new(l)),
            })
            .collect()
    }

    #[test]
    fn the_less_loaded_of_two_wins_and_the_most_loaded_never_does() {
        let eps = endpoints(&[0, 5, 10]);
        let mut rng = StdRng::seed_from_u64(7);
        let mut wins = [0usize; 3];
        for _ in 0..3000 {
            let (i, _) = pick(&eps, &[], &mut rng).unwrap();
            wins[i] += 1;
        }
        assert_eq!(
            wins[2], 0,
            "the busiest endpoint is always the loser of its pair"
        );
        assert!(wins[0] > wins[1], "{wins:?}");
    }

    #[test]
    fn equal_load_spreads_over_every_endpoint() {
        let eps = endpoints(&[0, 0, 0]);
        let mut rng = StdRng::seed_from_u64(1);
        let mut wins = [0usize; 3];
        for _ in 0..3000 {
            let (i, ep) = pick(&eps, &[], &mut rng).unwrap();
            let _guard = ActiveGuard::new(ep);
            wins[i] += 1;
        }
        assert!(wins.iter().all(|&w| w > 700), "{wins:?}");
        assert!(
            eps.iter().all(|e| e.active.load(Ordering::Relaxed) == 0),
            "guards release their count"
        );
    }

    #[test]
    fn excluded_endpoints_are_skipped_until_none_is_left() {
        let eps = endpoints(&[0, 0, 0]);
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..100 {
            let (i, _) = pick(&eps, &[0, 2], &mut rng).unwrap();
            assert_eq!(i, 1);
        }
        assert!(pick(&eps, &[0, 1, 2], &mut rng).is_none());
        assert!(pick(&[], &[], &mut rng).is_none());
    }
}
