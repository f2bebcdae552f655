//! The real host dataplane: rtnetlink for address, neighbour and routes,
//! nftables for the SNAT table, and netlink events to notice drift.
//!
//! `apply` is a reconcile: it reads what the kernel has, changes only what
//! differs from the plan (adding before removing, so traffic always has a
//! route), and counts its changes. Running it again is a no-op.

use super::{
    Applied, Dataplane, DataplaneError,
    netlink_route::{self, KernelRoute, RouteNetlink},
    nftables::{self, Nftables},
};
use crate::plan::{self, HostAddress, HostPlan, HostSettings, PlannedRoute};
use futures::StreamExt;
use noverlay_proto::contract::Masquerade;
use rtnetlink::MulticastGroup;
use std::collections::HashMap;
use tokio::sync::mpsc;

pub struct Kernel {
    rt: RouteNetlink,
    nft: Nftables,
    /// Set when someone else changed the nftables ruleset.
    nft_dirty: bool,
    last_nft: Option<plan::NftPlan>,
    drift: mpsc::UnboundedReceiver<()>,
    nft_events: mpsc::UnboundedReceiver<()>,
    /// The configured masquerade subnets: what teardown looks for.
    masquerades: Vec<Masquerade>,
}

fn kernel_error(operation: impl Into<String>, error: impl std::fmt::Display) -> DataplaneError {
    DataplaneError::Kernel {
        operation: operation.into(),
        reason: error.to_string(),
    }
}

impl Kernel {
    /// Opens the netlink sockets in the current network namespace and
    /// subscribes to route, link, address and neighbour events.
    pub fn open(masquerades: Vec<Masquerade>) -> Result<Self, DataplaneError> {
        let rt = RouteNetlink::open().map_err(|e| kernel_error("open rtnetlink", e))?;
        let nft = Nftables::open().map_err(|e| kernel_error("open nftables", e))?;
        let nft_events = nftables::watch_foreign_changes(nft.port())
            .map_err(|e| kernel_error("watch nftables", e))?;
        let drift = watch_route_events().map_err(|e| kernel_error("watch rtnetlink", e))?;
        Ok(Kernel {
            rt,
            nft,
            nft_dirty: true,
            last_nft: None,
            drift,
            nft_events,
            masquerades,
        })
    }

    fn link_index(links: &HashMap<u32, netlink_route::KernelLink>, name: &str) -> Option<u32> {
        links
            .iter()
            .find(|(_, link)| link.name == name)
            .map(|(index, _)| *index)
    }
}

/// A route of ours as `ip route` prints it, for the report to the DPU.
fn render_kernel_route(
    route: &KernelRoute,
    links: &HashMap<u32, netlink_route::KernelLink>,
) -> String {
    let dev = route
        .oif
        .and_then(|i| links.get(&i))
        .map(|l| l.name.as_str())
        .unwrap_or("?");
    let via = route.via.map(|v| format!(" via {v}")).unwrap_or_default();
    let mtu = route.mtu.map(|m| format!(" mtu {m}")).unwrap_or_default();
    format!("{}{via} dev {dev} proto {}{mtu}", route.dst, route.protocol)
}

/// IPv6 routes without an explicit metric get 1024; IPv4 ones 0.
fn effective_priority(route: &KernelRoute) -> u32 {
    route
        .priority
        .unwrap_or(if route.dst.addr().is_ipv6() { 1024 } else { 0 })
}

/// The metric our routes get (we never set one).
fn default_priority(route: &PlannedRoute) -> u32 {
    if route.dst.addr().is_ipv6() { 1024 } else { 0 }
}

impl Dataplane for Kernel {
    async fn apply(&mut self, plan: &HostPlan) -> Result<Applied, DataplaneError> {
        let links = self
            .rt
            .links()
            .await
            .map_err(|e| kernel_error("list links", e))?;
        let gateway_name = &plan.nft.gateway_interface;
        let gateway = Self::link_index(&links, gateway_name).ok_or_else(|| {
            kernel_error(
                "find gateway interface",
                format!("no interface named {gateway_name:?}"),
            )
        })?;
        let mp0 = Self::link_index(&links, &plan.mp0_interface);
        let mut errors = Vec::new();
        let mut changes = 0usize;

        // The masquerade address: its connected route puts the dummy next hop on-link.
        let addresses = self
            .rt
            .addresses()
            .await
            .map_err(|e| kernel_error("list addresses", e))?;
        let protocol = plan.route_protocol;
        for wanted in &plan.addresses {
            if addresses
                .iter()
                .any(|a| a.index == gateway && a.addr == wanted.addr)
            {
                continue;
            }
            match self.rt.add_address(gateway, wanted.addr, protocol).await {
                Ok(()) => changes += 1,
                Err(e) => errors.push(kernel_error(
                    format!("add address {} dev {}", wanted.addr, wanted.dev),
                    e,
                )),
            }
        }

        // The dummy next hop's permanent neighbour.
        let neighbours = self
            .rt
            .neighbours()
            .await
            .map_err(|e| kernel_error("list neighbours", e))?;
        for wanted in &plan.neighbours {
            let present = neighbours.iter().any(|n| {
                n.index == gateway
                    && n.ip == wanted.ip
                    && n.permanent
                    && n.mac.as_deref() == Some(&wanted.mac[..])
            });
            if present {
                continue;
            }
            match self
                .rt
                .set_permanent_neighbour(gateway, wanted.ip, &wanted.mac)
                .await
            {
                Ok(()) => changes += 1,
                Err(e) => errors.push(kernel_error(
                    format!("set neighbour {} dev {}", wanted.ip, wanted.dev),
                    e,
                )),
            }
        }

        // Routes: add or fix ours first, then remove what must go.
        let routes = self
            .rt
            .main_routes()
            .await
            .map_err(|e| kernel_error("list routes", e))?;
        let is_broad_mp0 = |r: &KernelRoute| {
            mp0.is_some()
                && r.oif == mp0
                && plan::is_broad_cluster_route(&r.dst, &plan.cluster_cidrs)
        };
        let mut routes_changed = false;
        for wanted in &plan.routes {
            let same_key = routes
                .iter()
                .find(|r| r.dst == wanted.dst && effective_priority(r) == default_priority(wanted));
            let replace = match same_key {
                None => false,
                Some(r) if r.protocol == wanted.protocol => {
                    if r.via == Some(wanted.via)
                        && r.oif == Some(gateway)
                        && r.mtu == Some(wanted.mtu)
                    {
                        continue;
                    }
                    true
                }
                // A broad route through mp0 is swapped for ours in one step.
                Some(r) if is_broad_mp0(r) => true,
                Some(r) => {
                    errors.push(kernel_error(
                        format!("add route {}", plan::render_route(wanted)),
                        format!(
                            "a route to {} with proto {} that is not ours already exists; refusing to replace it",
                            r.dst, r.protocol
                        ),
                    ));
                    continue;
                }
            };
            match self.rt.put_route(wanted, gateway, replace).await {
                Ok(()) => {
                    changes += 1;
                    routes_changed = true;
                }
                Err(e) => errors.push(kernel_error(
                    format!("add route {}", plan::render_route(wanted)),
                    e,
                )),
            }
        }
        // What is there now: read again only if the loop above changed it.
        let routes = if routes_changed {
            self.rt
                .main_routes()
                .await
                .map_err(|e| kernel_error("list routes", e))?
        } else {
            routes
        };
        let mut ours = Vec::new();
        for route in &routes {
            let stale_ours =
                route.protocol == protocol && !plan.routes.iter().any(|w| w.dst == route.dst);
            if !(stale_ours || is_broad_mp0(route)) {
                if route.protocol == protocol {
                    ours.push(render_kernel_route(route, &links));
                }
                continue;
            }
            match self.rt.del_route(route).await {
                Ok(()) => changes += 1,
                // Already gone (e.g. removed with its link): nothing to do.
                Err(e) if netlink_route::errno(&e) == Some(libc::ESRCH) => {}
                Err(e) => errors.push(kernel_error(format!("delete route {}", route.dst), e)),
            }
        }

        // nftables: replaced atomically when it may differ.
        while self.nft_events.try_recv().is_ok() {
            self.nft_dirty = true;
        }
        if self.nft_dirty || self.last_nft.as_ref() != Some(&plan.nft) {
            match self.nft.replace(&plan.nft) {
                Ok(()) => {
                    // A replace after someone else touched nftables counts:
                    // it may have restored a flushed table.
                    changes += 1;
                    self.nft_dirty = false;
                    self.last_nft = Some(plan.nft.clone());
                }
                Err(e) => {
                    self.last_nft = None;
                    errors.push(kernel_error(
                        format!("replace nft table inet {}", plan.nft.table),
                        e,
                    ));
                }
            }
        }

        if !errors.is_empty() {
            return Err(DataplaneError::Many(errors));
        }
        Ok(Applied {
            routes: ours,
            nft_ruleset: plan.nft.render(),
            changes,
        })
    }

    async fn host_addresses(&mut self) -> Result<Vec<HostAddress>, DataplaneError> {
        let links = self
            .rt
            .links()
            .await
            .map_err(|e| kernel_error("list links", e))?;
        let addresses = self
            .rt
            .addresses()
            .await
            .map_err(|e| kernel_error("list addresses", e))?;
        Ok(addresses
            .into_iter()
            .map(|a| HostAddress {
                dev: links
                    .get(&a.index)
                    .map(|l| l.name.clone())
                    .unwrap_or_else(|| format!("if{}", a.index)),
                addr: a.addr,
            })
            .collect())
    }

    async fn teardown(&mut self, settings: &HostSettings) -> Result<(), DataplaneError> {
        let mut errors = Vec::new();
        match self.rt.main_routes().await {
            Ok(routes) => {
                for route in routes
                    .iter()
                    .filter(|r| r.protocol == settings.route_protocol)
                {
                    if let Err(e) = self.rt.del_route(route).await
                        && netlink_route::errno(&e) != Some(libc::ESRCH)
                    {
                        errors.push(kernel_error(format!("delete route {}", route.dst), e));
                    }
                }
            }
            Err(e) => errors.push(kernel_error("list routes", e)),
        }
        let gateway = match self.rt.links().await {
            Ok(links) => Self::link_index(&links, &settings.gateway_interface),
            Err(e) => {
                errors.push(kernel_error("list links", e));
                None
            }
        };
        if let Some(gateway) = gateway {
            match self.rt.neighbours().await {
                Ok(neighbours) => {
                    for masq in &self.masquerades {
                        let mac = masq.dummy_next_hop_mac();
                        for n in neighbours.iter().filter(|n| {
                            n.index == gateway
                                && n.ip == masq.dummy_next_hop
                                && n.permanent
                                && n.mac.as_deref() == Some(&mac[..])
                        }) {
                            if let Err(e) = self.rt.del_neighbour(n).await {
                                errors.push(kernel_error(format!("delete neighbour {}", n.ip), e));
                            }
                        }
                    }
                }
                Err(e) => errors.push(kernel_error("list neighbours", e)),
            }
            match self.rt.addresses().await {
                Ok(addresses) => {
                    for masq in &self.masquerades {
                        for a in addresses
                            .iter()
                            .filter(|a| a.index == gateway && a.addr == masq.host_address())
                        {
                            if let Err(e) = self.rt.del_address(a).await {
                                errors.push(kernel_error(format!("delete address {}", a.addr), e));
                            }
                        }
                    }
                }
                Err(e) => errors.push(kernel_error("list addresses", e)),
            }
        }
        if let Err(e) = self.nft.delete(&settings.nft_table) {
            errors.push(kernel_error(
                format!("delete nft table inet {}", settings.nft_table),
                e,
            ));
        }
        self.last_nft = None;
        self.nft_dirty = true;
        if errors.is_empty() {
            Ok(())
        } else {
            Err(DataplaneError::Many(errors))
        }
    }

    async fn drift(&mut self) {
        // Only cancel-safe receives here: the agent polls this in a select.
        tokio::select! {
            Some(()) = self.drift.recv() => {}
            Some(()) = self.nft_events.recv() => self.nft_dirty = true,
            else => std::future::pending::<()>().await,
        }
    }

    fn absorb_drift(&mut self) {
        while self.drift.try_recv().is_ok() {}
        while self.nft_events.try_recv().is_ok() {
            self.nft_dirty = true;
        }
    }
}

/// Subscribes to link, address, neighbour and route events; each event is
/// one `()` on the channel. When the event socket fails (a multicast overrun
/// ends it), the watcher says so with one more `()` (the agent then
/// reconciles fully) and subscribes again.
fn watch_route_events() -> std::io::Result<mpsc::UnboundedReceiver<()>> {
    let mut messages = subscribe_route_events()?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            while messages.next().await.is_some() {
                if tx.send(()).is_err() {
                    return;
                }
            }
            tracing::warn!("rtnetlink event stream ended (overrun?); resyncing and resubscribing");
            if tx.send(()).is_err() {
                return;
            }
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                match subscribe_route_events() {
                    Ok(fresh) => {
                        messages = fresh;
                        // Anything missed while unsubscribed is caught by this.
                        let _ = tx.send(());
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "resubscribing to rtnetlink events failed")
                    }
                }
                if tx.is_closed() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}

type RouteEvents = futures::channel::mpsc::UnboundedReceiver<(
    rtnetlink::packet_core::NetlinkMessage<rtnetlink::packet_route::RouteNetlinkMessage>,
    rtnetlink::sys::SocketAddr,
)>;

fn subscribe_route_events() -> std::io::Result<RouteEvents> {
    let (connection, _handle, messages) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
        MulticastGroup::Neigh,
    ])?;
    tokio::spawn(connection);
    Ok(messages)
}
