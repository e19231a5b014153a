//! Settings of the kernel interception: listener, firewall mark, routing table.

use std::net::{Ipv4Addr, SocketAddrV4};

use anyhow::{Result, bail};

/// Default address of the transparent listener. Loopback keeps the listener
/// out of reach of direct connections from pods; TPROXY still delivers the
/// intercepted flows to it.
pub const DEFAULT_LISTEN: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 4140);
/// Default firewall mark bit set on intercepted packets (bit 23). Chosen away
/// from kube-proxy's (0x4000, 0x8000), Cilium's (0x0f00) and the low bits
/// Calico allocates first; change it with `--fwmark` if it collides.
pub const DEFAULT_FWMARK: u32 = 0x0080_0000;
/// Default routing table holding the `local 0.0.0.0/0 dev lo` route.
pub const DEFAULT_ROUTE_TABLE: u32 = 4140;
/// Default priority of the `ip rule` on the mark: early, so that CNI source
/// rules (e.g. AWS VPC CNI at 512+) cannot steer intercepted packets away.
pub const DEFAULT_RULE_PRIORITY: u32 = 90;

/// Where intercepted connections go and how they are marked and routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelConfig {
    /// Address of the IP_TRANSPARENT listener that TPROXY hands flows to.
    pub listen: SocketAddrV4,
    /// Mark value set on intercepted packets (only the bits in `fwmark_mask`).
    pub fwmark: u32,
    /// Bits of the packet mark owned by mc; other bits are left untouched.
    pub fwmark_mask: u32,
    /// Routing table that holds mc's `local` default route.
    pub route_table: u32,
    /// Priority of mc's policy routing rule (lower runs earlier).
    pub rule_priority: u32,
}

impl Default for KernelConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            fwmark: DEFAULT_FWMARK,
            fwmark_mask: DEFAULT_FWMARK,
            route_table: DEFAULT_ROUTE_TABLE,
            rule_priority: DEFAULT_RULE_PRIORITY,
        }
    }
}

/// Routing table ids the kernel reserves (unspec, compat, default, main, local).
const RESERVED_TABLES: [u32; 5] = [0, 252, 253, 254, 255];
/// Priority of the kernel's `lookup main` rule; mc's rule must come before it.
const MAIN_RULE_PRIORITY: u32 = 32766;

impl KernelConfig {
    /// Checks that the settings can be programmed without touching anything
    /// that is not mc's.
    pub fn validate(&self) -> Result<()> {
        if self.fwmark == 0 {
            bail!("fwmark must not be 0");
        }
        if self.fwmark & !self.fwmark_mask != 0 {
            bail!(
                "fwmark {:#x} has bits outside fwmark mask {:#x}",
                self.fwmark,
                self.fwmark_mask
            );
        }
        if RESERVED_TABLES.contains(&self.route_table) {
            bail!("route table {} is reserved by the kernel", self.route_table);
        }
        if self.rule_priority == 0 || self.rule_priority >= MAIN_RULE_PRIORITY {
            bail!(
                "rule priority {} must be between 1 and {}",
                self.rule_priority,
                MAIN_RULE_PRIORITY - 1
            );
        }
        if self.listen.port() == 0 {
            bail!("listener port must not be 0");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        KernelConfig::default()
            .validate()
            .expect("default kernel config must validate");
    }

    #[test]
    fn rejects_mark_outside_mask_reserved_table_and_late_priority() {
        let bad_mark = KernelConfig {
            fwmark: 0x3,
            fwmark_mask: 0x1,
            ..KernelConfig::default()
        };
        assert!(bad_mark.validate().is_err());
        let main_table = KernelConfig {
            route_table: 254,
            ..KernelConfig::default()
        };
        assert!(main_table.validate().is_err());
        let after_main = KernelConfig {
            rule_priority: 32766,
            ..KernelConfig::default()
        };
        assert!(after_main.validate().is_err());
    }
}
