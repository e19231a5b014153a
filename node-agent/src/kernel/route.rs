//! Policy routing through rtnetlink: a rule on mc's mark and a `local`
//! default route in mc's own table, so marked packets are delivered locally
//! (to the TPROXY listener) instead of being forwarded.
//!
//! Everything mc adds carries the routing protocol [`RTPROT_MC`]; that tag is
//! how the agent recognises its own rules and routes on reconcile and
//! cleanup, whatever table, priority or mark an earlier run used. Rules and
//! routes without the tag are never touched.

use std::net::Ipv4Addr;

use anyhow::{Context, Result, anyhow};
use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::route::{
    RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::{Handle, IpVersion, RouteMessageBuilder};
use tokio::task::JoinHandle;
use tracing::{debug, info};

use super::config::KernelConfig;

/// Routing protocol number that tags mc's rules and routes (`proto 109` in
/// `ip rule` / `ip route`; unassigned in iproute2's `rt_protos`).
pub const RTPROT_MC: u8 = 109;

/// A netlink connection whose background task ends with it.
struct Netlink {
    handle: Handle,
    task: JoinHandle<()>,
}

impl Netlink {
    /// Opens a route netlink socket in the calling thread's network namespace.
    fn open() -> Result<Self> {
        let (connection, handle, _) =
            rtnetlink::new_connection().context("opening a route netlink socket")?;
        let task = tokio::spawn(connection);
        Ok(Self { handle, task })
    }
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// mc's rule as it should be: `fwmark M/K lookup T priority P proto mc`.
fn rule_matches(rule: &RuleMessage, config: &KernelConfig) -> bool {
    let mut priority = None;
    let mut fwmark = None;
    let mut fwmask = None;
    let mut table = u32::from(rule.header.table);
    let mut extra_selector = false;
    for attr in &rule.attributes {
        match attr {
            RuleAttribute::Priority(p) => priority = Some(*p),
            RuleAttribute::FwMark(m) => fwmark = Some(*m),
            RuleAttribute::FwMask(m) => fwmask = Some(*m),
            RuleAttribute::Table(t) => table = *t,
            RuleAttribute::Protocol(_) => {}
            RuleAttribute::Destination(_)
            | RuleAttribute::Source(_)
            | RuleAttribute::Iifname(_)
            | RuleAttribute::Oifname(_)
            | RuleAttribute::Goto(_)
            | RuleAttribute::UidRange(_)
            | RuleAttribute::IpProtocol(_)
            | RuleAttribute::SourcePortRange(_)
            | RuleAttribute::DestinationPortRange(_) => extra_selector = true,
            _ => {}
        }
    }
    rule.header.action == RuleAction::ToTable
        && rule.header.src_len == 0
        && rule.header.dst_len == 0
        && !extra_selector
        && priority == Some(config.rule_priority)
        && fwmark == Some(config.fwmark)
        && fwmask == Some(config.fwmark_mask)
        && table == config.route_table
}

fn rule_is_mc(rule: &RuleMessage) -> bool {
    rule.attributes
        .iter()
        .any(|a| matches!(a, RuleAttribute::Protocol(p) if u8::from(*p) == RTPROT_MC))
}

fn route_table(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table))
}

fn route_is_mc(route: &RouteMessage) -> bool {
    u8::from(route.header.protocol) == RTPROT_MC
}

/// mc's route as it should be: `local 0.0.0.0/0 dev lo table T proto mc`.
fn route_matches(route: &RouteMessage, config: &KernelConfig, lo_index: u32) -> bool {
    let oif = route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    });
    route.header.address_family == AddressFamily::Inet
        && route.header.kind == RouteType::Local
        && route.header.destination_prefix_length == 0
        && route.header.source_prefix_length == 0
        && route_table(route) == config.route_table
        && oif == Some(lo_index)
}

async fn loopback_index(handle: &Handle) -> Result<u32> {
    let link = handle
        .link()
        .get()
        .match_name("lo".to_string())
        .execute()
        .try_next()
        .await
        .context("looking up the loopback interface")?
        .ok_or_else(|| anyhow!("no loopback interface in this network namespace"))?;
    Ok(link.header.index)
}

async fn mc_rules(handle: &Handle) -> Result<Vec<RuleMessage>> {
    let rules: Vec<RuleMessage> = handle
        .rule()
        .get(IpVersion::V4)
        .execute()
        .try_collect()
        .await
        .context("listing IPv4 policy routing rules")?;
    Ok(rules.into_iter().filter(rule_is_mc).collect())
}

async fn mc_routes(handle: &Handle) -> Result<Vec<RouteMessage>> {
    let query = RouteMessageBuilder::<Ipv4Addr>::new().build();
    let routes: Vec<RouteMessage> = handle
        .route()
        .get(query)
        .execute()
        .try_collect()
        .await
        .context("listing IPv4 routes")?;
    Ok(routes.into_iter().filter(route_is_mc).collect())
}

/// Makes the node's policy routing hold exactly mc's rule and route for
/// `config`: adds what is missing, removes mc-tagged leftovers (duplicates,
/// older marks, tables or priorities), leaves everything else alone.
pub async fn reconcile(config: &KernelConfig) -> Result<()> {
    let netlink = Netlink::open()?;
    let handle = &netlink.handle;
    let lo_index = loopback_index(handle).await?;

    let mut route_present = false;
    for route in mc_routes(handle).await? {
        if !route_present && route_matches(&route, config, lo_index) {
            route_present = true;
            continue;
        }
        info!(table = route_table(&route), "removing stale mc route");
        handle
            .route()
            .del(route)
            .execute()
            .await
            .context("removing a stale mc route")?;
    }
    if route_present {
        debug!(table = config.route_table, "mc local route already present");
    } else {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
            .output_interface(lo_index)
            .table_id(config.route_table)
            .kind(RouteType::Local)
            .scope(RouteScope::Host)
            .protocol(RouteProtocol::from(RTPROT_MC))
            .build();
        handle.route().add(route).execute().await.with_context(|| {
            format!(
                "adding `local 0.0.0.0/0 dev lo table {}`",
                config.route_table
            )
        })?;
        info!(table = config.route_table, "added mc local route");
    }

    let mut rule_present = false;
    for rule in mc_rules(handle).await? {
        if !rule_present && rule_matches(&rule, config) {
            rule_present = true;
            continue;
        }
        info!("removing stale mc policy rule");
        handle
            .rule()
            .del(rule)
            .execute()
            .await
            .context("removing a stale mc policy rule")?;
    }
    if rule_present {
        debug!(
            priority = config.rule_priority,
            "mc policy rule already present"
        );
    } else {
        let mut request = handle
            .rule()
            .add()
            .v4()
            .priority(config.rule_priority)
            .fw_mark(config.fwmark)
            .table_id(config.route_table)
            .action(RuleAction::ToTable);
        let message = request.message_mut();
        message
            .attributes
            .push(RuleAttribute::FwMask(config.fwmark_mask));
        message
            .attributes
            .push(RuleAttribute::Protocol(RouteProtocol::from(RTPROT_MC)));
        request.execute().await.with_context(|| {
            format!(
                "adding `ip rule fwmark {:#x}/{:#x} lookup {} priority {}`",
                config.fwmark, config.fwmark_mask, config.route_table, config.rule_priority
            )
        })?;
        info!(
            priority = config.rule_priority,
            fwmark = config.fwmark,
            table = config.route_table,
            "added mc policy rule"
        );
    }
    Ok(())
}

/// Removes every rule and route tagged as mc's, and nothing else.
pub async fn remove_all() -> Result<()> {
    let netlink = Netlink::open()?;
    let handle = &netlink.handle;
    for rule in mc_rules(handle).await? {
        handle
            .rule()
            .del(rule)
            .execute()
            .await
            .context("removing an mc policy rule")?;
        info!("removed mc policy rule");
    }
    for route in mc_routes(handle).await? {
        let table = route_table(&route);
        handle
            .route()
            .del(route)
            .execute()
            .await
            .context("removing an mc route")?;
        info!(table, "removed mc route");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired_rule(config: &KernelConfig) -> RuleMessage {
        let mut rule = RuleMessage::default();
        rule.header.family = AddressFamily::Inet;
        rule.header.action = RuleAction::ToTable;
        rule.attributes = vec![
            RuleAttribute::Priority(config.rule_priority),
            RuleAttribute::FwMark(config.fwmark),
            RuleAttribute::FwMask(config.fwmark_mask),
            RuleAttribute::Table(config.route_table),
            RuleAttribute::Protocol(RouteProtocol::from(RTPROT_MC)),
        ];
        rule
    }

    #[test]
    fn recognises_its_rule_and_nothing_narrower_or_different() {
        let config = KernelConfig::default();
        let rule = desired_rule(&config);
        assert!(rule_is_mc(&rule));
        assert!(rule_matches(&rule, &config));

        let mut narrower = desired_rule(&config);
        narrower
            .attributes
            .push(RuleAttribute::Iifname("eth0".to_string()));
        assert!(!rule_matches(&narrower, &config));

        let other_mark = KernelConfig {
            fwmark: 0x100,
            fwmark_mask: 0x100,
            ..config.clone()
        };
        assert!(!rule_matches(&rule, &other_mark));

        let mut foreign = desired_rule(&config);
        foreign
            .attributes
            .retain(|a| !matches!(a, RuleAttribute::Protocol(_)));
        assert!(!rule_is_mc(&foreign));
    }
}
