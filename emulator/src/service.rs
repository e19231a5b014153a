//! Service defaulting, validation and ClusterIP / NodePort allocation, as the
//! kube-apiserver Service registry does them (single-stack IPv4 cluster).
//!
//! The Service *name* is checked by `validation::validate_object_name`, not here.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;

use ipnet::Ipv4Net;
use rand::Rng;
use serde_json::{Value, json};

use crate::validation::{
    FieldError, validate_dns1123_label, validate_dns1123_subdomain, validate_labels,
};

const SUPPORTED_TYPES: [&str; 4] = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const SUPPORTED_PROTOCOLS: [&str; 3] = ["SCTP", "TCP", "UDP"];
const SUPPORTED_AFFINITY: [&str; 2] = ["ClientIP", "None"];
const SUPPORTED_TRAFFIC_POLICIES: [&str; 2] = ["Cluster", "Local"];
const SUPPORTED_FAMILIES: [&str; 2] = ["IPv4", "IPv6"];
const SUPPORTED_FAMILY_POLICIES: [&str; 3] = ["PreferDualStack", "RequireDualStack", "SingleStack"];
const KUBELET_PORT: i64 = 10250;
const INVALID_IP: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";

/// The cluster's Service IP and NodePort allocators.
#[derive(Debug)]
pub struct ServiceAllocator {
    cidr: Ipv4Net,
    node_ports: RangeInclusive<u16>,
    used_ips: BTreeSet<Ipv4Addr>,
    used_ports: BTreeSet<u16>,
}

/// What one Service holds from the allocators.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Holdings {
    ips: BTreeSet<Ipv4Addr>,
    ports: BTreeSet<u16>,
}

impl ServiceAllocator {
    /// An allocator for `service_cidr` (e.g. 10.96.0.0/12) and a NodePort range (e.g. 30000..=32767).
    pub fn new(service_cidr: Ipv4Net, node_ports: RangeInclusive<u16>) -> Self {
        ServiceAllocator {
            cidr: service_cidr.trunc(),
            node_ports,
            used_ips: BTreeSet::new(),
            used_ports: BTreeSet::new(),
        }
    }

    /// The Service CIDR.
    pub fn cidr(&self) -> Ipv4Net {
        self.cidr
    }

    /// Whether an address is currently allocated.
    pub fn ip_in_use(&self, ip: Ipv4Addr) -> bool {
        self.used_ips.contains(&ip)
    }

    /// Whether a NodePort is currently allocated.
    pub fn node_port_in_use(&self, port: u16) -> bool {
        self.used_ports.contains(&port)
    }

    /// Defaults, validates and allocates a new Service in place: fills
    /// `spec.clusterIP(s)`, `ipFamilies`, `ipFamilyPolicy`, NodePorts and
    /// the health-check NodePort. Nothing is allocated on error.
    pub fn create(&mut self, svc: &mut Value) -> Result<(), Vec<FieldError>> {
        ensure_spec(svc);
        svc["status"] = json!({"loadBalancer": {}});
        set_defaults(svc);
        normalize_cluster_ips_create(svc);
        let mut errs = validate_service(svc);
        errs.extend(self.init_ip_families(svc, None));
        if !errs.is_empty() {
            return Err(errs);
        }
        let mut txn = Txn::new(self);
        txn.alloc_cluster_ip(svc)?;
        txn.alloc_node_ports(svc)?;
        txn.alloc_health_check_port(svc, None)?;
        let held = txn.taken;
        self.commit(&held, &Holdings::default());
        Ok(())
    }

    /// Defaults, validates and re-allocates an updated Service in place, as
    /// the registry does: allocated values the new object omits are carried
    /// over from `old`; the cluster IP may not change (except to or from
    /// ExternalName); NodePorts are allocated for new ports and released for
    /// dropped ones. Nothing changes on error.
    pub fn update(&mut self, old: &Value, new: &mut Value) -> Result<(), Vec<FieldError>> {
        ensure_spec(new);
        set_defaults(new);
        new["status"] = old
            .get("status")
            .cloned()
            .unwrap_or_else(|| json!({"loadBalancer": {}}));
        drop_type_dependent_fields(new, old);
        patch_allocated_values(new, old);
        normalize_cluster_ips_update(new, old);
        let mut errs = validate_upgrade_downgrade_cluster_ips(old, new);
        errs.extend(validate_service(new));
        errs.extend(self.init_ip_families(new, Some(old)));
        if !errs.is_empty() {
            return Err(errs);
        }
        let old_held = self.holdings(old);
        let mut txn = Txn::new(self);
        txn.already = old_held.clone();
        if needs_cluster_ip(new) {
            txn.alloc_cluster_ip(new)?;
        }
        txn.alloc_node_ports(new)?;
        txn.alloc_health_check_port(new, Some(old))?;
        let taken = txn.taken;
        let kept = self.holdings(new);
        let released = Holdings {
            ips: old_held.ips.difference(&kept.ips).copied().collect(),
            ports: old_held.ports.difference(&kept.ports).copied().collect(),
        };
        self.commit(&taken, &released);
        Ok(())
    }

    /// Frees what a deleted Service held.
    pub fn release(&mut self, svc: &Value) {
        let held = self.holdings(svc);
        self.commit(&Holdings::default(), &held);
    }

    /// Marks an existing (stored) Service's addresses and ports as used.
    pub fn restore(&mut self, svc: &Value) {
        let held = self.holdings(svc);
        self.commit(&held, &Holdings::default());
    }

    fn commit(&mut self, take: &Holdings, release: &Holdings) {
        for ip in &release.ips {
            self.used_ips.remove(ip);
        }
        for port in &release.ports {
            self.used_ports.remove(port);
        }
        self.used_ips.extend(take.ips.iter().copied());
        self.used_ports.extend(take.ports.iter().copied());
    }

    /// The in-range addresses and ports a stored Service holds.
    fn holdings(&self, svc: &Value) -> Holdings {
        let mut held = Holdings::default();
        let spec = &svc["spec"];
        let mut ips: Vec<&str> = spec["clusterIPs"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(ip) = spec["clusterIP"].as_str() {
            ips.push(ip);
        }
        for ip in ips {
            if let Ok(ip) = ip.parse::<Ipv4Addr>()
                && self.cidr.contains(&ip)
            {
                held.ips.insert(ip);
            }
        }
        let mut ports: Vec<i64> = ports_of(svc).iter().map(|p| p.node_port).collect();
        ports.push(spec["healthCheckNodePort"].as_i64().unwrap_or(0));
        for port in ports {
            if let Ok(port) = u16::try_from(port)
                && self.node_ports.contains(&port)
            {
                held.ports.insert(port);
            }
        }
        held
    }

    /// Fills `ipFamilies` / `ipFamilyPolicy` for this IPv4-only cluster and
    /// refuses what it cannot serve (initIPFamilyFields).
    fn init_ip_families(&self, svc: &mut Value, old: Option<&Value>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if svc_type(svc) == "ExternalName" {
            return errs;
        }
        if let Some(old) = old.filter(|o| needs_cluster_ip(o)) {
            for key in ["ipFamilies", "ipFamilyPolicy"] {
                if svc["spec"][key].is_null() && !old["spec"][key].is_null() {
                    svc["spec"][key] = old["spec"][key].clone();
                }
            }
        }
        let spec = &mut svc["spec"];
        if let Some(families) = spec["ipFamilies"].as_array() {
            for (i, family) in families.iter().enumerate() {
                if family.as_str() == Some("IPv6") {
                    errs.push(FieldError::invalid(
                        format!("spec.ipFamilies[{i}]"),
                        family,
                        "not configured on this cluster",
                    ));
                }
            }
        }
        if spec["ipFamilyPolicy"].as_str() == Some("RequireDualStack") {
            errs.push(FieldError::invalid(
                "spec.ipFamilyPolicy",
                &spec["ipFamilyPolicy"],
                "this cluster is not configured for dual-stack services",
            ));
        }
        if let Some(ips) = spec["clusterIPs"].as_array() {
            for (i, ip) in ips.iter().enumerate() {
                if let Some(Ok(IpAddr::V6(_))) = ip.as_str().map(str::parse::<IpAddr>) {
                    errs.push(FieldError::invalid(
                        format!("spec.clusterIPs[{i}]"),
                        ip,
                        "IPv6 is not configured on this cluster",
                    ));
                }
            }
        }
        if spec["ipFamilies"].as_array().is_none_or(Vec::is_empty) {
            spec["ipFamilies"] = json!(["IPv4"]);
        }
        if spec["ipFamilyPolicy"].is_null() {
            spec["ipFamilyPolicy"] = json!("SingleStack");
        }
        errs
    }

    /// Dynamic allocations use the upper band first, leaving the lower band
    /// for static requests (KEP-3070 / KEP-3668).
    fn pick_ip(&self, taken: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        let base = u32::from(self.cidr.network());
        let size = u64::from(u32::from(self.cidr.broadcast()) - base) + 1;
        // usable offsets exclude network and broadcast (for /31 and /32: none excluded)
        let (first, last) = if size > 2 {
            (1u64, size - 2)
        } else {
            (0, size - 1)
        };
        let reserved = (size / 16).clamp(16, 256);
        let free = |off: u64| {
            let ip = Ipv4Addr::from(base + off as u32);
            (!self.used_ips.contains(&ip) && !taken.contains(&ip)).then_some(ip)
        };
        let lower_end = (first + reserved).min(last + 1);
        random_scan(lower_end, last, free)
            .or_else(|| random_scan(first, lower_end.saturating_sub(1), free))
    }

    fn pick_port(&self, taken: &BTreeSet<u16>) -> Option<u16> {
        let (lo, hi) = (
            u64::from(*self.node_ports.start()),
            u64::from(*self.node_ports.end()),
        );
        if hi < lo {
            return None;
        }
        let size = hi - lo + 1;
        let reserved = (size / 32).clamp(16, 128);
        let free = |p: u64| {
            let port = p as u16;
            (!self.used_ports.contains(&port) && !taken.contains(&port)).then_some(port)
        };
        let lower_end = (lo + reserved).min(hi + 1);
        random_scan(lower_end, hi, free)
            .or_else(|| random_scan(lo, lower_end.saturating_sub(1), free))
    }
}

/// Tries every value of `lo..=hi` once, from a random start, wrapping.
fn random_scan<T>(lo: u64, hi: u64, free: impl Fn(u64) -> Option<T>) -> Option<T> {
    if hi < lo {
        return None;
    }
    let count = hi - lo + 1;
    let start = rand::rng().random_range(0..count);
    (0..count).find_map(|i| free(lo + (start + i) % count))
}

/// One create or update's allocations, committed only when all succeed.
struct Txn<'a> {
    alloc: &'a ServiceAllocator,
    /// What the Service already holds (update): reusing it is not a conflict.
    already: Holdings,
    /// What this operation newly takes.
    taken: Holdings,
}

impl<'a> Txn<'a> {
    fn new(alloc: &'a ServiceAllocator) -> Self {
        Txn {
            alloc,
            already: Holdings::default(),
            taken: Holdings::default(),
        }
    }

    fn ip_free(&self, ip: Ipv4Addr) -> bool {
        self.already.ips.contains(&ip)
            || (!self.alloc.used_ips.contains(&ip) && !self.taken.ips.contains(&ip))
    }

    fn port_free(&self, port: u16) -> bool {
        self.already.ports.contains(&port)
            || (!self.alloc.used_ports.contains(&port) && !self.taken.ports.contains(&port))
    }

    fn alloc_cluster_ip(&mut self, svc: &mut Value) -> Result<(), Vec<FieldError>> {
        if !needs_cluster_ip(svc) {
            return Ok(());
        }
        let requested = svc["spec"]["clusterIP"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if requested == "None" {
            svc["spec"]["clusterIPs"] = json!(["None"]);
            return Ok(());
        }
        if requested.is_empty() {
            let Some(ip) = self.alloc.pick_ip(&self.taken.ips) else {
                return Err(vec![FieldError::invalid(
                    "spec.clusterIPs",
                    &json!([]),
                    "failed to allocate a serviceIP: range is full",
                )]);
            };
            self.taken.ips.insert(ip);
            svc["spec"]["clusterIP"] = json!(ip.to_string());
            svc["spec"]["clusterIPs"] = json!([ip.to_string()]);
            return Ok(());
        }
        let fail = |svc: &Value, why: String| {
            vec![FieldError::invalid(
                "spec.clusterIPs",
                &svc["spec"]["clusterIPs"],
                &format!("failed to allocate IP {requested}: {why}"),
            )]
        };
        let Ok(ip) = requested.parse::<Ipv4Addr>() else {
            return Err(fail(svc, "not a valid IPv4 address".to_string()));
        };
        let base = u32::from(self.alloc.cidr.network());
        let last = u32::from(self.alloc.cidr.broadcast());
        let usable = self.alloc.cidr.contains(&ip)
            && (last - base < 2
                || (ip != self.alloc.cidr.network() && ip != self.alloc.cidr.broadcast()));
        if !usable {
            return Err(fail(
                svc,
                format!(
                    "the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}",
                    self.alloc.cidr
                ),
            ));
        }
        if !self.ip_free(ip) {
            return Err(fail(svc, "provided IP is already allocated".to_string()));
        }
        if !self.already.ips.contains(&ip) {
            self.taken.ips.insert(ip);
        }
        Ok(())
    }

    /// Claims a requested NodePort; the error is the allocator's reason.
    fn take_port(&mut self, port: i64) -> Result<u16, String> {
        let in_range = u16::try_from(port)
            .ok()
            .filter(|p| self.alloc.node_ports.contains(p));
        let Some(p) = in_range else {
            return Err(format!(
                "provided port is not in the valid range. The range of valid ports is {}-{}",
                self.alloc.node_ports.start(),
                self.alloc.node_ports.end()
            ));
        };
        if !self.port_free(p) {
            return Err("provided port is already allocated".to_string());
        }
        if !self.already.ports.contains(&p) {
            self.taken.ports.insert(p);
        }
        Ok(p)
    }

    /// Claims a requested NodePort for `spec.ports[i].nodePort`.
    fn take_node_port(&mut self, port: i64, field: &str) -> Result<u16, Vec<FieldError>> {
        self.take_port(port)
            .map_err(|why| vec![FieldError::invalid(field, &json!(port), &why)])
    }

    fn next_port(&mut self, field: &str) -> Result<u16, FieldError> {
        let Some(p) = self.alloc.pick_port(&self.taken.ports) else {
            return Err(FieldError::invalid(
                field,
                &json!(0),
                "failed to allocate a nodePort: range is full",
            ));
        };
        self.taken.ports.insert(p);
        Ok(p)
    }

    /// initNodePorts / updateNodePorts: ports sharing a port number share
    /// one NodePort; requested values are honoured when free.
    fn alloc_node_ports(&mut self, svc: &mut Value) -> Result<(), Vec<FieldError>> {
        if !needs_node_port(svc) {
            return Ok(());
        }
        let allocate = should_allocate_node_ports(svc);
        let ports = ports_of(svc);
        let mut by_port: BTreeMap<i64, i64> = BTreeMap::new();
        let mut assigned: Vec<i64> = ports.iter().map(|p| p.node_port).collect();
        for (i, p) in ports.iter().enumerate() {
            let field = format!("spec.ports[{i}].nodePort");
            if p.node_port == 0 && !allocate {
                continue;
            }
            match by_port.get(&p.port).copied() {
                None => {
                    let requested = ports
                        .iter()
                        .skip(i)
                        .find(|q| q.port == p.port && q.node_port != 0)
                        .map(|q| q.node_port);
                    let np = match requested {
                        Some(np) => {
                            self.take_node_port(np, &field)?;
                            np
                        }
                        None => i64::from(self.next_port(&field).map_err(|e| vec![e])?),
                    };
                    if p.node_port == 0 || p.node_port == np {
                        assigned[i] = np;
                    }
                    by_port.insert(p.port, np);
                }
                Some(shared) if p.node_port == 0 => assigned[i] = shared,
                Some(shared) if p.node_port != shared => {
                    self.take_node_port(p.node_port, &field)?;
                }
                Some(_) => {}
            }
        }
        if let Some(list) = svc["spec"]["ports"].as_array_mut() {
            for (port, np) in list.iter_mut().zip(assigned) {
                if np != 0 {
                    port["nodePort"] = json!(np);
                }
            }
        }
        Ok(())
    }

    fn alloc_health_check_port(
        &mut self,
        svc: &mut Value,
        old: Option<&Value>,
    ) -> Result<(), Vec<FieldError>> {
        if !needs_hc_node_port(svc) {
            return Ok(());
        }
        let requested = svc["spec"]["healthCheckNodePort"].as_i64().unwrap_or(0);
        let old_port = old
            .filter(|o| needs_hc_node_port(o))
            .and_then(|o| o["spec"]["healthCheckNodePort"].as_i64())
            .unwrap_or(0);
        let field = "spec.healthCheckNodePort";
        if requested == 0 {
            if old_port != 0 {
                svc["spec"]["healthCheckNodePort"] = json!(old_port);
                return Ok(());
            }
            let p = self.next_port(field).map_err(|e| vec![e])?;
            svc["spec"]["healthCheckNodePort"] = json!(p);
            return Ok(());
        }
        self.take_port(requested).map_err(|why| {
            vec![FieldError::invalid(
                field,
                &json!(requested),
                &format!("failed to allocate requested HealthCheck NodePort {requested}: {why}"),
            )]
        })?;
        Ok(())
    }
}

/// One entry of `spec.ports`, read leniently (absent numbers are 0).
#[derive(Clone, Debug)]
struct PortView {
    name: String,
    protocol: String,
    port: i64,
    target_port: Value,
    node_port: i64,
    app_protocol: Option<String>,
}

fn ports_of(svc: &Value) -> Vec<PortView> {
    svc["spec"]["ports"]
        .as_array()
        .map(|ports| {
            ports
                .iter()
                .map(|p| PortView {
                    name: p["name"].as_str().unwrap_or_default().to_string(),
                    protocol: p["protocol"].as_str().unwrap_or_default().to_string(),
                    port: p["port"].as_i64().unwrap_or(0),
                    target_port: p["targetPort"].clone(),
                    node_port: p["nodePort"].as_i64().unwrap_or(0),
                    app_protocol: p["appProtocol"].as_str().map(str::to_string),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn ensure_spec(svc: &mut Value) {
    if !svc.is_object() {
        *svc = json!({});
    }
    if !svc["spec"].is_object() {
        svc["spec"] = json!({});
    }
}

fn svc_type(svc: &Value) -> &str {
    svc["spec"]["type"].as_str().unwrap_or_default()
}

fn spec_str<'a>(svc: &'a Value, key: &str) -> &'a str {
    svc["spec"][key].as_str().unwrap_or_default()
}

fn needs_cluster_ip(svc: &Value) -> bool {
    svc_type(svc) != "ExternalName"
}

fn needs_node_port(svc: &Value) -> bool {
    matches!(svc_type(svc), "NodePort" | "LoadBalancer")
}

fn should_allocate_node_ports(svc: &Value) -> bool {
    match svc_type(svc) {
        "NodePort" => true,
        "LoadBalancer" => svc["spec"]["allocateLoadBalancerNodePorts"]
            .as_bool()
            .unwrap_or(true),
        _ => false,
    }
}

fn needs_hc_node_port(svc: &Value) -> bool {
    svc_type(svc) == "LoadBalancer" && spec_str(svc, "externalTrafficPolicy") == "Local"
}

fn is_headless(svc: &Value) -> bool {
    spec_str(svc, "clusterIP") == "None"
}

fn externally_accessible(svc: &Value) -> bool {
    match svc_type(svc) {
        "LoadBalancer" | "NodePort" => true,
        "ClusterIP" => svc["spec"]["externalIPs"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        _ => false,
    }
}

/// The v1 defaulting of `SetDefaults_Service`.
fn set_defaults(svc: &mut Value) {
    let spec = &mut svc["spec"];
    if spec["sessionAffinity"].as_str().is_none_or(str::is_empty) {
        spec["sessionAffinity"] = json!("None");
    }
    if let Some(map) = spec.as_object_mut() {
        match map.get("sessionAffinity").and_then(Value::as_str) {
            Some("None") => {
                map.remove("sessionAffinityConfig");
            }
            Some("ClientIP") => {
                let timeout = map
                    .get("sessionAffinityConfig")
                    .and_then(|c| c.get("clientIP"))
                    .and_then(|c| c.get("timeoutSeconds"));
                if timeout.is_none_or(Value::is_null) {
                    map.insert(
                        "sessionAffinityConfig".into(),
                        json!({"clientIP": {"timeoutSeconds": 10800}}),
                    );
                }
            }
            _ => {}
        }
    }
    if spec["type"].as_str().is_none_or(str::is_empty) {
        spec["type"] = json!("ClusterIP");
    }
    if let Some(ports) = spec["ports"].as_array_mut() {
        for port in ports.iter_mut().filter(|p| p.is_object()) {
            if port["protocol"].as_str().is_none_or(str::is_empty) {
                port["protocol"] = json!("TCP");
            }
            let target = &port["targetPort"];
            if target.is_null() || target.as_i64() == Some(0) || target.as_str() == Some("") {
                port["targetPort"] = port["port"].clone();
            }
        }
    }
    let ty = spec["type"].as_str().unwrap_or_default().to_string();
    if externally_accessible(svc) && spec_str(svc, "externalTrafficPolicy").is_empty() {
        svc["spec"]["externalTrafficPolicy"] = json!("Cluster");
    }
    let spec = &mut svc["spec"];
    if spec["internalTrafficPolicy"].is_null()
        && matches!(ty.as_str(), "NodePort" | "LoadBalancer" | "ClusterIP")
    {
        spec["internalTrafficPolicy"] = json!("Cluster");
    }
    if ty == "LoadBalancer" && spec["allocateLoadBalancerNodePorts"].is_null() {
        spec["allocateLoadBalancerNodePorts"] = json!(true);
    }
}

fn normalize_cluster_ips_create(svc: &mut Value) {
    let ip = spec_str(svc, "clusterIP").to_string();
    if !ip.is_empty()
        && svc["spec"]["clusterIPs"]
            .as_array()
            .is_none_or(Vec::is_empty)
    {
        svc["spec"]["clusterIPs"] = json!([ip]);
    }
}

fn cluster_ips(svc: &Value) -> Vec<Value> {
    svc["spec"]["clusterIPs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn normalize_cluster_ips_update(new: &mut Value, old: &Value) {
    let (old_ip, new_ip) = (
        spec_str(old, "clusterIP").to_string(),
        spec_str(new, "clusterIP").to_string(),
    );
    if !cluster_ips(old).is_empty() && cluster_ips(new).is_empty() && old_ip == new_ip {
        new["spec"]["clusterIPs"] = old["spec"]["clusterIPs"].clone();
    }
    if old_ip != new_ip {
        let same = cluster_ips(old) == cluster_ips(new);
        if !old_ip.is_empty() && new_ip.is_empty() && same {
            remove_spec(new, "clusterIPs");
        }
        if !new_ip.is_empty() && same {
            new["spec"]["clusterIPs"] = json!([new_ip]);
        }
    }
}

fn remove_spec(svc: &mut Value, key: &str) {
    if let Some(spec) = svc["spec"].as_object_mut() {
        spec.remove(key);
    }
}

/// patchAllocatedValues: carry over what the registry allocated and the
/// client omitted (NodePorts are matched by port name, as the real one does).
fn patch_allocated_values(new: &mut Value, old: &Value) {
    if needs_cluster_ip(old) && needs_cluster_ip(new) {
        if spec_str(new, "clusterIP").is_empty() && !spec_str(old, "clusterIP").is_empty() {
            new["spec"]["clusterIP"] = old["spec"]["clusterIP"].clone();
        }
        if cluster_ips(new).is_empty() && !cluster_ips(old).is_empty() {
            new["spec"]["clusterIPs"] = old["spec"]["clusterIPs"].clone();
        }
    }
    if needs_node_port(old) && needs_node_port(new) {
        let old_ports = ports_of(old);
        let new_ports = ports_of(new);
        let used_old: BTreeSet<i64> = old_ports.iter().map(|p| p.node_port).collect();
        let used: BTreeSet<i64> = new_ports
            .iter()
            .map(|p| p.node_port)
            .filter(|np| used_old.contains(np))
            .collect();
        let by_name: BTreeMap<&str, i64> = old_ports
            .iter()
            .map(|p| (p.name.as_str(), p.node_port))
            .collect();
        if let Some(list) = new["spec"]["ports"].as_array_mut() {
            for (port, view) in list.iter_mut().zip(&new_ports) {
                if view.node_port == 0
                    && let Some(&np) = by_name.get(view.name.as_str())
                    && np != 0
                    && !used.contains(&np)
                {
                    port["nodePort"] = json!(np);
                }
            }
        }
    }
    if needs_hc_node_port(old)
        && needs_hc_node_port(new)
        && new["spec"]["healthCheckNodePort"].as_i64().unwrap_or(0) == 0
        && let Some(hc) = old["spec"]["healthCheckNodePort"].as_i64()
    {
        new["spec"]["healthCheckNodePort"] = json!(hc);
    }
}

/// dropTypeDependentFields: on a type change, clear what the old type had
/// allocated or defaulted and the client left unchanged.
fn drop_type_dependent_fields(new: &mut Value, old: &Value) {
    if needs_cluster_ip(old) && !needs_cluster_ip(new) {
        if old["spec"]["clusterIP"] == new["spec"]["clusterIP"]
            && cluster_ips(old) == cluster_ips(new)
        {
            remove_spec(new, "clusterIP");
            remove_spec(new, "clusterIPs");
        }
        for key in ["ipFamilies", "ipFamilyPolicy"] {
            if old["spec"][key] == new["spec"][key] {
                remove_spec(new, key);
            }
        }
    }
    let node_ports = |s: &Value| ports_of(s).iter().map(|p| p.node_port).collect::<Vec<_>>();
    if needs_node_port(old)
        && !needs_node_port(new)
        && node_ports(old) == node_ports(new)
        && let Some(list) = new["spec"]["ports"].as_array_mut()
    {
        for port in list.iter_mut().filter_map(Value::as_object_mut) {
            port.remove("nodePort");
        }
    }
    if needs_hc_node_port(old)
        && !needs_hc_node_port(new)
        && old["spec"]["healthCheckNodePort"] == new["spec"]["healthCheckNodePort"]
    {
        remove_spec(new, "healthCheckNodePort");
    }
    if svc_type(old) == "LoadBalancer"
        && svc_type(new) != "LoadBalancer"
        && !new["spec"]["allocateLoadBalancerNodePorts"].is_null()
        && old["spec"]["allocateLoadBalancerNodePorts"]
            == new["spec"]["allocateLoadBalancerNodePorts"]
    {
        remove_spec(new, "allocateLoadBalancerNodePorts");
    }
    if externally_accessible(old)
        && !externally_accessible(new)
        && old["spec"]["externalTrafficPolicy"] == new["spec"]["externalTrafficPolicy"]
    {
        remove_spec(new, "externalTrafficPolicy");
    }
    if svc_type(new) != "LoadBalancer" {
        new["status"] = json!({"loadBalancer": {}});
    }
}

/// validateUpgradeDowngradeClusterIPs (single-stack: only the primary matters).
fn validate_upgrade_downgrade_cluster_ips(old: &Value, new: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if !needs_cluster_ip(old) || !needs_cluster_ip(new) || (is_headless(old) && is_headless(new)) {
        return errs;
    }
    let (old_ips, new_ips) = (cluster_ips(old), cluster_ips(new));
    let value = Value::Array(new_ips.clone());
    if new_ips.is_empty() && !old_ips.is_empty() {
        errs.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            &value,
            "primary clusterIP can not be unset",
        ));
    } else if let (Some(o), Some(n)) = (old_ips.first(), new_ips.first())
        && o != n
    {
        errs.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            &value,
            "may not change once set",
        ));
    }
    errs
}

/// Go's `%#v` of the `core.ServicePort` key the duplicate check uses.
fn render_port_key(protocol: &str, port: i64) -> String {
    format!(
        "core.ServicePort{{Name:\"\", Protocol:\"{protocol}\", AppProtocol:(*string)(nil), Port:{port}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}"
    )
}

/// apimachinery `IsValidPortName` (IANA_SVC_NAME).
fn validate_port_name(name: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if name.len() > 15 {
        errs.push("must be no more than 15 characters".to_string());
    }
    if name.is_empty()
        || !name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        errs.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string(),
        );
    }
    if !name.bytes().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".to_string());
    }
    if name.contains("--") {
        errs.push("must not contain consecutive hyphens".to_string());
    }
    if name.starts_with('-') || name.ends_with('-') {
        errs.push("must not begin or end with a hyphen".to_string());
    }
    errs
}

const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";

fn validate_port(
    p: &PortView,
    raw: &Value,
    i: usize,
    require_name: bool,
    names: &mut BTreeSet<String>,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let path = format!("spec.ports[{i}]");
    if require_name && p.name.is_empty() {
        errs.push(FieldError::required(format!("{path}.name"), ""));
    } else if !p.name.is_empty() {
        for msg in validate_dns1123_label(&p.name) {
            errs.push(FieldError::invalid(
                format!("{path}.name"),
                &json!(p.name),
                &msg,
            ));
        }
        if !names.insert(p.name.clone()) {
            errs.push(FieldError::duplicate(
                format!("{path}.name"),
                &json!(p.name),
            ));
        }
    }
    if !raw["port"].is_null() && !raw["port"].is_i64() {
        errs.push(FieldError::type_invalid(
            format!("{path}.port"),
            &raw["port"],
            "must be an integer",
        ));
    } else if !(1..=65535).contains(&p.port) {
        errs.push(FieldError::invalid(
            format!("{path}.port"),
            &json!(p.port),
            PORT_RANGE,
        ));
    }
    if p.protocol.is_empty() {
        errs.push(FieldError::required(format!("{path}.protocol"), ""));
    } else if !SUPPORTED_PROTOCOLS.contains(&p.protocol.as_str()) {
        errs.push(FieldError::not_supported(
            format!("{path}.protocol"),
            &json!(p.protocol),
            &SUPPORTED_PROTOCOLS,
        ));
    }
    let target_path = format!("{path}.targetPort");
    match &p.target_port {
        Value::Number(n) => match n.as_i64() {
            Some(t) if (1..=65535).contains(&t) => {}
            _ => errs.push(FieldError::invalid(
                &target_path,
                &p.target_port,
                PORT_RANGE,
            )),
        },
        Value::String(s) => {
            for msg in validate_port_name(s) {
                errs.push(FieldError::invalid(&target_path, &p.target_port, &msg));
            }
        }
        other => errs.push(FieldError::type_invalid(
            &target_path,
            other,
            "must be an integer or a string",
        )),
    }
    if let Some(app) = &p.app_protocol {
        for msg in crate::validation::validate_qualified_name(app) {
            errs.push(FieldError::invalid(
                format!("{path}.appProtocol"),
                &json!(app),
                &msg,
            ));
        }
    }
    if !raw["nodePort"].is_null() && !raw["nodePort"].is_i64() {
        errs.push(FieldError::type_invalid(
            format!("{path}.nodePort"),
            &raw["nodePort"],
            "must be an integer",
        ));
    }
    errs
}

/// ValidateService (the spec part), single-stack IPv4.
fn validate_service(svc: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = &svc["spec"];
    let ty = svc_type(svc);
    let headless = is_headless(svc);
    let ports = ports_of(svc);
    let raw_ports: Vec<Value> = spec["ports"].as_array().cloned().unwrap_or_default();
    if !spec["ports"].is_null() && !spec["ports"].is_array() {
        errs.push(FieldError::type_invalid(
            "spec.ports",
            &spec["ports"],
            "must be a list",
        ));
    }
    if ports.is_empty() && !headless && ty != "ExternalName" {
        errs.push(FieldError::required("spec.ports", ""));
    }
    let first_ip = cluster_ips(svc).first().cloned().unwrap_or(Value::Null);
    match ty {
        "LoadBalancer" => {
            if headless {
                errs.push(FieldError::invalid(
                    "spec.clusterIPs[0]",
                    &first_ip,
                    "may not be set to 'None' for LoadBalancer services",
                ));
            }
            for (i, p) in ports.iter().enumerate() {
                if p.port == KUBELET_PORT {
                    errs.push(FieldError::invalid(
                        format!("spec.ports[{i}]"),
                        &json!(p.port),
                        &format!("may not expose port {KUBELET_PORT} externally since it is used by kubelet"),
                    ));
                }
            }
        }
        "NodePort" if headless => {
            errs.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                &first_ip,
                "may not be set to 'None' for NodePort services",
            ));
        }
        "ExternalName" => {
            if !cluster_ips(svc).is_empty() || !spec_str(svc, "clusterIP").is_empty() {
                errs.push(FieldError::forbidden(
                    "spec.clusterIPs",
                    "may not be set for ExternalName services",
                ));
            }
            if spec["ipFamilies"].as_array().is_some_and(|a| !a.is_empty()) {
                errs.push(FieldError::forbidden(
                    "spec.ipFamilies",
                    "may not be set for ExternalName services",
                ));
            }
            if !spec["ipFamilyPolicy"].is_null() {
                errs.push(FieldError::forbidden(
                    "spec.ipFamilyPolicy",
                    "may not be set for ExternalName services",
                ));
            }
            let cname = spec_str(svc, "externalName");
            let cname = cname.strip_suffix('.').unwrap_or(cname);
            if cname.is_empty() {
                errs.push(FieldError::required("spec.externalName", ""));
            } else {
                for msg in validate_dns1123_subdomain(cname) {
                    errs.push(FieldError::invalid(
                        "spec.externalName",
                        &json!(cname),
                        &msg,
                    ));
                }
            }
        }
        _ => {}
    }
    let mut names = BTreeSet::new();
    for (i, (p, raw)) in ports.iter().zip(&raw_ports).enumerate() {
        errs.extend(validate_port(p, raw, i, ports.len() > 1, &mut names));
    }
    if !spec["selector"].is_null() {
        errs.extend(validate_labels(&spec["selector"], "spec.selector"));
    }
    let affinity = spec_str(svc, "sessionAffinity");
    if affinity.is_empty() {
        errs.push(FieldError::required("spec.sessionAffinity", ""));
    } else if !SUPPORTED_AFFINITY.contains(&affinity) {
        errs.push(FieldError::not_supported(
            "spec.sessionAffinity",
            &json!(affinity),
            &SUPPORTED_AFFINITY,
        ));
    }
    if affinity == "ClientIP" {
        let timeout = &spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"];
        if !timeout.as_i64().is_some_and(|t| t > 0 && t <= 86400) {
            errs.push(FieldError::invalid(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                timeout,
                "must be greater than 0 and less than 86400",
            ));
        }
    }
    errs.extend(validate_cluster_ips_related(svc));
    if let Some(ips) = spec["externalIPs"].as_array() {
        for (i, ip) in ips.iter().enumerate() {
            if ip.as_str().and_then(|s| s.parse::<IpAddr>().ok()).is_none() {
                errs.push(FieldError::invalid(
                    format!("spec.externalIPs[{i}]"),
                    ip,
                    INVALID_IP,
                ));
            }
        }
    }
    if ty.is_empty() {
        errs.push(FieldError::required("spec.type", ""));
    } else if !SUPPORTED_TYPES.contains(&ty) {
        errs.push(FieldError::not_supported(
            "spec.type",
            &json!(ty),
            &SUPPORTED_TYPES,
        ));
    }
    if ty == "ClusterIP" {
        for (i, p) in ports.iter().enumerate() {
            if p.node_port != 0 {
                errs.push(FieldError::forbidden(
                    format!("spec.ports[{i}].nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
    }
    let mut node_keys = BTreeSet::new();
    for (i, p) in ports.iter().enumerate().filter(|(_, p)| p.node_port != 0) {
        if !node_keys.insert((p.protocol.clone(), p.node_port)) {
            errs.push(FieldError::duplicate(
                format!("spec.ports[{i}].nodePort"),
                &json!(p.node_port),
            ));
        }
    }
    let mut port_keys = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        if !port_keys.insert((p.protocol.clone(), p.port)) {
            errs.push(FieldError::duplicate_rendered(
                format!("spec.ports[{i}]"),
                &render_port_key(&p.protocol, p.port),
            ));
        }
    }
    if let Some(ranges) = spec["loadBalancerSourceRanges"]
        .as_array()
        .filter(|r| !r.is_empty())
    {
        if ty != "LoadBalancer" {
            errs.push(FieldError::forbidden(
                "spec.loadBalancerSourceRanges",
                "may only be used when `type` is 'LoadBalancer'",
            ));
        } else {
            for (i, r) in ranges.iter().enumerate() {
                if r.as_str()
                    .and_then(|s| s.trim().parse::<ipnet::IpNet>().ok())
                    .is_none()
                {
                    errs.push(FieldError::invalid(
                        format!("spec.loadBalancerSourceRanges[{i}]"),
                        r,
                        "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                    ));
                }
            }
        }
    }
    if !spec["allocateLoadBalancerNodePorts"].is_null() && ty != "LoadBalancer" {
        errs.push(FieldError::forbidden(
            "spec.allocateLoadBalancerNodePorts",
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    let etp = spec_str(svc, "externalTrafficPolicy");
    let hc = spec["healthCheckNodePort"].as_i64().unwrap_or(0);
    if !externally_accessible(svc) {
        if !etp.is_empty() {
            errs.push(FieldError::invalid(
                "spec.externalTrafficPolicy",
                &json!(etp),
                "may only be set for externally-accessible services",
            ));
        }
    } else if etp.is_empty() {
        errs.push(FieldError::required("spec.externalTrafficPolicy", ""));
    } else if !SUPPORTED_TRAFFIC_POLICIES.contains(&etp) {
        errs.push(FieldError::not_supported(
            "spec.externalTrafficPolicy",
            &json!(etp),
            &SUPPORTED_TRAFFIC_POLICIES,
        ));
    }
    if hc != 0 && !needs_hc_node_port(svc) {
        errs.push(FieldError::invalid(
            "spec.healthCheckNodePort",
            &json!(hc),
            "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
        ));
    }
    let itp = &spec["internalTrafficPolicy"];
    if itp.is_null() {
        if ty != "ExternalName" {
            errs.push(FieldError::required("spec.internalTrafficPolicy", ""));
        }
    } else if !itp
        .as_str()
        .is_some_and(|s| SUPPORTED_TRAFFIC_POLICIES.contains(&s))
    {
        errs.push(FieldError::not_supported(
            "spec.internalTrafficPolicy",
            itp,
            &SUPPORTED_TRAFFIC_POLICIES,
        ));
    }
    errs
}

/// ValidateServiceClusterIPsRelatedFields.
fn validate_cluster_ips_related(svc: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if svc_type(svc) == "ExternalName" {
        return errs;
    }
    let spec = &svc["spec"];
    let ips = cluster_ips(svc);
    let list = Value::Array(ips.clone());
    let ip = spec_str(svc, "clusterIP");
    if !ip.is_empty() {
        match ips.first() {
            None => errs.push(FieldError::required("spec.clusterIPs", "")),
            Some(first) if first.as_str() != Some(ip) => errs.push(FieldError::invalid(
                "spec.clusterIPs",
                &list,
                "first value must match `clusterIP`",
            )),
            Some(_) => {}
        }
    } else if !ips.is_empty() {
        errs.push(FieldError::invalid(
            "spec.clusterIPs",
            &list,
            "must be empty when `clusterIP` is not specified",
        ));
    }
    let mut seen = BTreeSet::new();
    if let Some(families) = spec["ipFamilies"].as_array() {
        for (i, f) in families.iter().enumerate() {
            let name = f.as_str().unwrap_or_default();
            if !SUPPORTED_FAMILIES.contains(&name) {
                errs.push(FieldError::not_supported(
                    format!("spec.ipFamilies[{i}]"),
                    f,
                    &SUPPORTED_FAMILIES,
                ));
            }
            if !seen.insert(name.to_string()) {
                errs.push(FieldError::duplicate(format!("spec.ipFamilies[{i}]"), f));
            }
        }
    }
    let policy = &spec["ipFamilyPolicy"];
    if !policy.is_null()
        && !policy
            .as_str()
            .is_some_and(|p| SUPPORTED_FAMILY_POLICIES.contains(&p))
    {
        errs.push(FieldError::not_supported(
            "spec.ipFamilyPolicy",
            policy,
            &SUPPORTED_FAMILY_POLICIES,
        ));
    }
    for (i, value) in ips.iter().enumerate() {
        let s = value.as_str().unwrap_or_default();
        if i == 0 && s == "None" {
            if ips.len() > 1 {
                errs.push(FieldError::invalid(
                    "spec.clusterIPs",
                    &list,
                    "'None' must be the first and only value",
                ));
            }
            continue;
        }
        if s.parse::<IpAddr>().is_err() {
            errs.push(FieldError::invalid(
                format!("spec.clusterIPs[{i}]"),
                value,
                INVALID_IP,
            ));
        }
    }
    let v4_count = ips
        .iter()
        .filter(|v| {
            matches!(
                v.as_str().map(str::parse::<IpAddr>),
                Some(Ok(IpAddr::V4(_)))
            )
        })
        .count();
    if v4_count > 1 {
        errs.push(FieldError::invalid(
            "spec.clusterIPs",
            &list,
            "may specify no more than one IP for each IP family",
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc() -> ServiceAllocator {
        let cidr: Ipv4Net = "10.96.0.0/24".parse().unwrap_or_default();
        ServiceAllocator::new(cidr, 30000..=30099)
    }

    fn svc(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "backend", "namespace": "default"}, "spec": spec})
    }

    fn errors_of(r: Result<(), Vec<FieldError>>) -> Vec<String> {
        r.err()
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn create_defaults_like_kube_apiserver() {
        let mut a = alloc();
        let mut s = svc(json!({"selector": {"app": "backend"}, "ports": [{"port": 8080}]}));
        assert_eq!(a.create(&mut s), Ok(()));
        let spec = &s["spec"];
        assert_eq!(spec["type"], "ClusterIP");
        assert_eq!(spec["sessionAffinity"], "None");
        assert_eq!(spec["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["ports"][0]["targetPort"], 8080);
        assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
        assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
        assert_eq!(spec["internalTrafficPolicy"], "Cluster");
        assert!(spec.get("externalTrafficPolicy").is_none());
        assert!(spec["ports"][0].get("nodePort").is_none());
        assert_eq!(s["status"], json!({"loadBalancer": {}}));
        let ip: Ipv4Addr = spec["clusterIP"]
            .as_str()
            .unwrap_or_default()
            .parse()
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        assert!(a.cidr().contains(&ip));
        assert_ne!(ip, a.cidr().network());
        assert_ne!(ip, a.cidr().broadcast());
        assert_eq!(spec["clusterIPs"], json!([ip.to_string()]));
        assert!(a.ip_in_use(ip));
    }

    #[test]
    fn load_balancer_and_node_port_defaults() {
        let mut a = alloc();
        let mut s = svc(
            json!({"type": "LoadBalancer", "ports": [{"port": 4143, "targetPort": "tunnel", "name": "tunnel"}]}),
        );
        assert_eq!(a.create(&mut s), Ok(()));
        assert_eq!(s["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(s["spec"]["allocateLoadBalancerNodePorts"], true);
        assert_eq!(s["spec"]["ports"][0]["targetPort"], "tunnel");
        let np = s["spec"]["ports"][0]["nodePort"].as_u64().unwrap_or(0) as u16;
        assert!((30000..=30099).contains(&np), "{np}");
        assert!(a.node_port_in_use(np));
        let mut n = svc(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30005}]}));
        assert_eq!(a.create(&mut n), Ok(()));
        assert_eq!(n["spec"]["ports"][0]["nodePort"], 30005);
        assert_eq!(n["spec"]["externalTrafficPolicy"], "Cluster");
        assert!(n["spec"].get("allocateLoadBalancerNodePorts").is_none());
    }

    #[test]
    fn requested_cluster_ip_must_be_free_and_in_range() {
        let mut a = alloc();
        let mut s = svc(json!({"clusterIP": "10.96.0.10", "ports": [{"port": 53}]}));
        assert_eq!(a.create(&mut s), Ok(()));
        assert_eq!(s["spec"]["clusterIPs"], json!(["10.96.0.10"]));
        let mut again = svc(json!({"clusterIP": "10.96.0.10", "ports": [{"port": 53}]}));
        assert_eq!(
            errors_of(a.create(&mut again)),
            vec![
                "spec.clusterIPs: Invalid value: []string{\"10.96.0.10\"}: failed to allocate IP 10.96.0.10: provided IP is already allocated"
            ]
        );
        let mut outside = svc(json!({"clusterIP": "10.1.0.5", "ports": [{"port": 53}]}));
        assert_eq!(
            errors_of(a.create(&mut outside)),
            vec![
                "spec.clusterIPs: Invalid value: []string{\"10.1.0.5\"}: failed to allocate IP 10.1.0.5: the provided IP (10.1.0.5) is not in the valid range. The range of valid IPs is 10.96.0.0/24"
            ]
        );
        for special in ["10.96.0.0", "10.96.0.255"] {
            let mut s = svc(json!({"clusterIP": special, "ports": [{"port": 53}]}));
            assert!(errors_of(a.create(&mut s))[0].contains("is not in the valid range"));
        }
        let mut bad = svc(json!({"clusterIP": "banana", "ports": [{"port": 53}]}));
        assert_eq!(
            errors_of(a.create(&mut bad)),
            vec![
                "spec.clusterIPs[0]: Invalid value: \"banana\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
            ]
        );
    }

    #[test]
    fn release_frees_and_restore_reserves() {
        let mut a = alloc();
        let mut s = svc(
            json!({"type": "NodePort", "clusterIP": "10.96.0.20", "ports": [{"port": 80, "nodePort": 30010}]}),
        );
        assert_eq!(a.create(&mut s), Ok(()));
        a.release(&s);
        assert!(!a.ip_in_use("10.96.0.20".parse().unwrap_or(Ipv4Addr::UNSPECIFIED)));
        assert!(!a.node_port_in_use(30010));
        let mut again = svc(
            json!({"type": "NodePort", "clusterIP": "10.96.0.20", "ports": [{"port": 80, "nodePort": 30010}]}),
        );
        assert_eq!(a.create(&mut again), Ok(()));
        let mut fresh = alloc();
        fresh.restore(&again);
        assert!(fresh.ip_in_use("10.96.0.20".parse().unwrap_or(Ipv4Addr::UNSPECIFIED)));
        assert!(fresh.node_port_in_use(30010));
        let mut clash =
            svc(json!({"type": "NodePort", "ports": [{"port": 81, "nodePort": 30010}]}));
        assert_eq!(
            errors_of(fresh.create(&mut clash)),
            vec![
                "spec.ports[0].nodePort: Invalid value: 30010: provided port is already allocated"
            ]
        );
        assert_eq!(fresh.used_ips.len(), 1, "a failed create allocates nothing");
    }

    #[test]
    fn node_port_range_and_sharing() {
        let mut a = alloc();
        let mut out = svc(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 31000}]}));
        assert_eq!(
            errors_of(a.create(&mut out)),
            vec![
                "spec.ports[0].nodePort: Invalid value: 31000: provided port is not in the valid range. The range of valid ports is 30000-30099"
            ]
        );
        let mut dns = svc(json!({"type": "NodePort", "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}));
        assert_eq!(a.create(&mut dns), Ok(()));
        assert_eq!(
            dns["spec"]["ports"][0]["nodePort"],
            dns["spec"]["ports"][1]["nodePort"]
        );
        assert_eq!(a.used_ports.len(), 1);
        let mut lb = svc(
            json!({"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false, "ports": [{"port": 80}]}),
        );
        assert_eq!(a.create(&mut lb), Ok(()));
        assert!(lb["spec"]["ports"][0].get("nodePort").is_none());
    }

    #[test]
    fn spec_validation_messages() {
        let mut a = alloc();
        let cases: Vec<(Value, Vec<&str>)> = vec![
            (json!({}), vec!["spec.ports: Required value"]),
            (
                json!({"ports": [{"port": 0}]}),
                vec![
                    "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                    "spec.ports[0].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive",
                ],
            ),
            (
                json!({"ports": [{"port": 70000}]}),
                vec![
                    "spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
                    "spec.ports[0].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                ],
            ),
            (
                json!({"type": "Foo", "ports": [{"port": 80}]}),
                vec![
                    "spec.type: Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
                    "spec.internalTrafficPolicy: Required value",
                ],
            ),
            (
                json!({"ports": [{"port": 80}, {"port": 81}]}),
                vec![
                    "spec.ports[0].name: Required value",
                    "spec.ports[1].name: Required value",
                ],
            ),
            (
                json!({"ports": [{"port": 80, "name": "a"}, {"port": 81, "name": "a"}]}),
                vec!["spec.ports[1].name: Duplicate value: \"a\""],
            ),
            (
                json!({"ports": [{"port": 80, "name": "a"}, {"port": 80, "name": "b"}]}),
                vec![
                    "spec.ports[1]: Duplicate value: core.ServicePort{Name:\"\", Protocol:\"TCP\", AppProtocol:(*string)(nil), Port:80, TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}, NodePort:0}",
                ],
            ),
            (
                json!({"ports": [{"port": 80, "name": "Http"}]}),
                vec![
                    "spec.ports[0].name: Invalid value: \"Http\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
                ],
            ),
            (
                json!({"ports": [{"port": 80, "protocol": "ICMP"}]}),
                vec![
                    "spec.ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                ],
            ),
            (json!({"ports": [{"port": 80, "targetPort": 0}]}), vec![]),
            (
                json!({"ports": [{"port": 80, "targetPort": 65536}]}),
                vec![
                    "spec.ports[0].targetPort: Invalid value: 65536: must be between 1 and 65535, inclusive",
                ],
            ),
            (
                json!({"ports": [{"port": 80, "targetPort": "Web_Port"}]}),
                vec![
                    "spec.ports[0].targetPort: Invalid value: \"Web_Port\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                ],
            ),
            (
                json!({"ports": [{"port": 80, "targetPort": "8080"}]}),
                vec![
                    "spec.ports[0].targetPort: Invalid value: \"8080\": must contain at least one letter (a-z)",
                ],
            ),
            (
                json!({"ports": [{"port": 80, "nodePort": 30001}]}),
                vec![
                    "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'",
                ],
            ),
            (
                json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}]}),
                vec![
                    "spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for NodePort services",
                ],
            ),
            (
                json!({"type": "LoadBalancer", "clusterIP": "None", "ports": [{"port": 80}]}),
                vec![
                    "spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for LoadBalancer services",
                ],
            ),
            (
                json!({"selector": {"app": "a b"}, "ports": [{"port": 80}]}),
                vec![
                    "spec.selector: Invalid value: \"a b\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
                ],
            ),
            (
                json!({"externalTrafficPolicy": "Local", "ports": [{"port": 80}]}),
                vec![
                    "spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set for externally-accessible services",
                ],
            ),
            (
                json!({"type": "ExternalName", "ports": []}),
                vec!["spec.externalName: Required value"],
            ),
            (
                json!({"ipFamilyPolicy": "RequireDualStack", "ports": [{"port": 80}]}),
                vec![
                    "spec.ipFamilyPolicy: Invalid value: \"RequireDualStack\": this cluster is not configured for dual-stack services",
                ],
            ),
        ];
        for (spec, want) in cases {
            let mut s = svc(spec.clone());
            let got = errors_of(a.create(&mut s));
            assert_eq!(got, want, "spec {spec}");
        }
        assert!(
            a.used_ips.is_empty() || a.used_ips.len() == 1,
            "only the valid targetPort: 0 case allocated"
        );
    }

    #[test]
    fn headless_and_external_name() {
        let mut a = alloc();
        let mut h = svc(json!({"clusterIP": "None", "selector": {"app": "db"}}));
        assert_eq!(a.create(&mut h), Ok(()));
        assert_eq!(h["spec"]["clusterIPs"], json!(["None"]));
        assert!(a.used_ips.is_empty());
        let mut e = svc(json!({"type": "ExternalName", "externalName": "db.example.com."}));
        assert_eq!(a.create(&mut e), Ok(()));
        assert!(e["spec"].get("clusterIP").is_none());
        assert!(e["spec"].get("ipFamilies").is_none());
        assert!(e["spec"].get("internalTrafficPolicy").is_none());
        let mut e =
            svc(json!({"type": "ExternalName", "externalName": "x", "clusterIP": "10.96.0.9"}));
        assert_eq!(
            errors_of(a.create(&mut e)),
            vec!["spec.clusterIPs: Forbidden: may not be set for ExternalName services"]
        );
    }

    #[test]
    fn update_carries_allocations_and_refuses_ip_changes() {
        let mut a = alloc();
        let mut old = svc(json!({"type": "NodePort", "ports": [{"name": "http", "port": 80}]}));
        assert_eq!(a.create(&mut old), Ok(()));
        let ip = old["spec"]["clusterIP"].clone();
        let np = old["spec"]["ports"][0]["nodePort"].clone();
        // a client that sends only what it knows (kubectl apply, mirrors)
        let mut new = svc(
            json!({"type": "NodePort", "ports": [{"name": "http", "port": 80}, {"name": "admin", "port": 9000}]}),
        );
        assert_eq!(a.update(&old, &mut new), Ok(()));
        assert_eq!(new["spec"]["clusterIP"], ip);
        assert_eq!(new["spec"]["clusterIPs"], json!([ip]));
        assert_eq!(new["spec"]["ports"][0]["nodePort"], np);
        let np2 = new["spec"]["ports"][1]["nodePort"].as_u64().unwrap_or(0) as u16;
        assert!(a.node_port_in_use(np2));
        assert_eq!(a.used_ports.len(), 2);
        // dropping a port releases its NodePort
        let mut fewer = svc(json!({"type": "NodePort", "ports": [{"name": "http", "port": 80}]}));
        assert_eq!(a.update(&new, &mut fewer), Ok(()));
        assert!(!a.node_port_in_use(np2));
        assert_eq!(a.used_ports.len(), 1);
        // changing the cluster IP is refused, and nothing moves
        let mut moved = fewer.clone();
        moved["spec"]["clusterIP"] = json!("10.96.0.77");
        moved["spec"]["clusterIPs"] = json!(["10.96.0.77"]);
        assert_eq!(
            errors_of(a.update(&fewer, &mut moved)),
            vec![
                "spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.77\"}: may not change once set"
            ]
        );
        assert!(!a.ip_in_use("10.96.0.77".parse().unwrap_or(Ipv4Addr::UNSPECIFIED)));
        // back to ClusterIP (as kubectl edit sends it): nodePorts are released
        let mut cluster = fewer.clone();
        cluster["spec"]["type"] = json!("ClusterIP");
        assert_eq!(a.update(&fewer, &mut cluster), Ok(()));
        assert!(cluster["spec"]["ports"][0].get("nodePort").is_none());
        assert!(cluster["spec"].get("externalTrafficPolicy").is_none());
        assert!(a.used_ports.is_empty());
        assert_eq!(cluster["spec"]["clusterIP"], ip);
    }

    #[test]
    fn update_to_and_from_external_name() {
        let mut a = alloc();
        let mut old = svc(json!({"ports": [{"port": 80}]}));
        assert_eq!(a.create(&mut old), Ok(()));
        let mut ext = old.clone();
        ext["spec"]["type"] = json!("ExternalName");
        ext["spec"]["externalName"] = json!("db.example.com");
        assert_eq!(a.update(&old, &mut ext), Ok(()));
        assert!(ext["spec"].get("clusterIP").is_none());
        assert!(a.used_ips.is_empty(), "the address is released");
        let mut back = svc(json!({"type": "ClusterIP", "ports": [{"port": 80}]}));
        assert_eq!(a.update(&ext, &mut back), Ok(()));
        assert!(
            back["spec"]["clusterIP"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
        );
        assert_eq!(a.used_ips.len(), 1);
    }

    #[test]
    fn update_type_change_allocates_node_ports_atomically() {
        let mut a = alloc();
        let mut taken = svc(json!({"type": "NodePort", "ports": [{"port": 1, "nodePort": 30050}]}));
        assert_eq!(a.create(&mut taken), Ok(()));
        let mut old = svc(json!({"ports": [{"port": 80, "name": "a"}, {"port": 81, "name": "b"}]}));
        assert_eq!(a.create(&mut old), Ok(()));
        let mut bad = old.clone();
        bad["spec"]["type"] = json!("NodePort");
        bad["spec"]["ports"][1]["nodePort"] = json!(30050);
        assert_eq!(
            errors_of(a.update(&old, &mut bad)),
            vec![
                "spec.ports[1].nodePort: Invalid value: 30050: provided port is already allocated"
            ]
        );
        assert_eq!(
            a.used_ports.len(),
            1,
            "the first port's NodePort was not kept"
        );
        let mut good = old.clone();
        good["spec"]["type"] = json!("NodePort");
        assert_eq!(a.update(&old, &mut good), Ok(()));
        assert_eq!(a.used_ports.len(), 3);
    }

    #[test]
    fn health_check_node_port_for_local_load_balancers() {
        let mut a = alloc();
        let mut lb = svc(
            json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [{"port": 80}]}),
        );
        assert_eq!(a.create(&mut lb), Ok(()));
        let hc = lb["spec"]["healthCheckNodePort"].as_u64().unwrap_or(0) as u16;
        assert!(a.node_port_in_use(hc));
        assert_eq!(a.used_ports.len(), 2);
        a.release(&lb);
        assert!(a.used_ports.is_empty());
    }

    #[test]
    fn dynamic_allocation_fills_the_whole_range() {
        let mut a =
            ServiceAllocator::new("10.96.0.0/29".parse().unwrap_or_default(), 30000..=30001);
        let mut ips = BTreeSet::new();
        for i in 0..6 {
            let mut s = svc(json!({"ports": [{"port": 80}]}));
            assert_eq!(a.create(&mut s), Ok(()), "service {i}");
            ips.insert(
                s["spec"]["clusterIP"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        assert_eq!(ips.len(), 6);
        let mut full = svc(json!({"ports": [{"port": 80}]}));
        assert!(errors_of(a.create(&mut full))[0].contains("range is full"));
    }
}
