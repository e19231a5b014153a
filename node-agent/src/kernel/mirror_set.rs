//! The desired set of mirrored Service addresses, one element per port.

use std::collections::BTreeSet;
use std::net::SocketAddrV4;

/// Every (ClusterIP, port) of a mirrored Service that the node must intercept.
///
/// IPv4 only for now: the nftables table is `inet` and the set is named
/// `mirrors_v4`, so an IPv6 set can join it later without moving anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MirrorSet {
    addrs: BTreeSet<SocketAddrV4>,
}

impl MirrorSet {
    /// An empty set: nothing is intercepted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one (ClusterIP, port); returns false if it was already present.
    pub fn insert(&mut self, addr: SocketAddrV4) -> bool {
        self.addrs.insert(addr)
    }

    /// Removes one (ClusterIP, port); returns false if it was absent.
    pub fn remove(&mut self, addr: &SocketAddrV4) -> bool {
        self.addrs.remove(addr)
    }

    /// Whether connections to `addr` are intercepted.
    pub fn contains(&self, addr: &SocketAddrV4) -> bool {
        self.addrs.contains(addr)
    }

    /// Number of (ClusterIP, port) elements.
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// The elements in a stable order (address, then port).
    pub fn iter(&self) -> impl Iterator<Item = &SocketAddrV4> {
        self.addrs.iter()
    }
}

impl FromIterator<SocketAddrV4> for MirrorSet {
    fn from_iter<I: IntoIterator<Item = SocketAddrV4>>(iter: I) -> Self {
        Self {
            addrs: iter.into_iter().collect(),
        }
    }
}
