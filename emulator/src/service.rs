//! Service defaulting, validation and ClusterIP / NodePort allocation, as the
//! kube-apiserver Service registry does them.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use ipnet::Ipv4Net;
use serde_json::Value;

use crate::validation::FieldError;

/// The cluster's Service IP and NodePort allocators.
#[derive(Debug)]
pub struct ServiceAllocator {
    cidr: Ipv4Net,
    node_ports: RangeInclusive<u16>,
    used_ips: BTreeSet<Ipv4Addr>,
    used_ports: BTreeSet<u16>,
}

impl ServiceAllocator {
    /// An allocator for `service_cidr` (e.g. 10.96.0.0/12) and a NodePort range (e.g. 30000..=32767).
    pub fn new(service_cidr: Ipv4Net, node_ports: RangeInclusive<u16>) -> Self {
        ServiceAllocator {
            cidr: service_cidr,
            node_ports,
            used_ips: BTreeSet::new(),
            used_ports: BTreeSet::new(),
        }
    }

    /// Defaults, validates and allocates a new Service in place.
    pub fn create(&mut self, _svc: &mut Value) -> Result<(), Vec<FieldError>> {
        Ok(())
    }

    /// Defaults, validates and re-allocates an updated Service in place.
    pub fn update(&mut self, _old: &Value, _new: &mut Value) -> Result<(), Vec<FieldError>> {
        Ok(())
    }

    /// Frees what a deleted Service held.
    pub fn release(&mut self, _svc: &Value) {}

    /// Marks an existing (stored) Service's addresses and ports as used.
    pub fn restore(&mut self, _svc: &Value) {}
}
