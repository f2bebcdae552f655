//! The real host dataplane: rtnetlink for address, neighbour and routes,
//! nftables for the SNAT table, and filtered kernel events ([`events`]) to
//! notice drift.
//!
//! `apply` is a reconcile, one small step per kind of object: each reads
//! what the kernel has, diffs it against the plan ([`reconcile`]) and
//! changes only what differs. Order matters: stale routes go before the
//! SNAT table changes, new routes come after it, an old route of ours
//! inside a planned CIDR and a broad mp0 route (when the plan removes
//! those) go only once ours are in place; so no moment has a route of ours
//! without its SNAT rule, or a cluster CIDR without a route. Running it
//! again is a no-op. What is reported is read back from the kernel: our
//! routes as listed, our table decoded from the kernel's own rules.

mod contest;
pub mod events;
mod reconcile;
mod rendered;
mod routes;
mod teardown;

use super::{
    Applied, Dataplane, DataplaneError,
    netlink_route::{KernelLink, KernelRoute, RouteNetlink},
    nftables::rules,
};
use crate::plan::{self, HostAddress, HostPlan, HostSettings};
use events::{Interest, Wakeups};
use noverlay_nft::{
    Depth, Nftables,
    ownership::{self, TableOwner},
};
use noverlay_proto::contract::Masquerade;
use std::collections::HashMap;

pub struct Kernel {
    rt: RouteNetlink,
    nft: Nftables,
    /// Our table may differ from the last one we wrote (start-up, someone
    /// else changed nftables, a write failed).
    nft_dirty: bool,
    last_nft: Option<plan::NftPlan>,
    wakeups: Wakeups,
    /// The configured masquerade subnets: what teardown looks for.
    masquerades: Vec<Masquerade>,
    /// ovnkube's management port was missing at the last apply (said once).
    mp0_missing: bool,
    /// Keys of ours that other writers took.
    contests: contest::Contests,
    /// A take-back is logged once a minute per key.
    takeback_log: noverlay_runtime::logging::Repeats,
    rendered: rendered::RenderedRoutes,
    /// The main table's routes as the last apply left them.
    known_routes: Option<routes::KnownRoutes>,
    /// The next apply reads everything and trusts nothing remembered.
    audit: bool,
}

fn kernel_error(operation: impl Into<String>, error: impl std::fmt::Display) -> DataplaneError {
    DataplaneError::Kernel {
        operation: operation.into(),
        reason: error.to_string(),
    }
}

/// Changes made and errors met by one apply; it goes on past errors.
#[derive(Default)]
struct Progress {
    changes: usize,
    errors: Vec<DataplaneError>,
}

impl Progress {
    fn record(&mut self, result: Result<(), DataplaneError>) {
        match result {
            Ok(()) => self.changes += 1,
            Err(e) => self.errors.push(e),
        }
    }
}

fn link_index(links: &HashMap<u32, KernelLink>, name: &str) -> Option<u32> {
    links
        .iter()
        .find(|(_, link)| link.name == name)
        .map(|(index, _)| *index)
}

impl Kernel {
    /// Opens the netlink sockets in the current network namespace and
    /// subscribes to route, link, address, neighbour and nftables events.
    pub fn open(masquerades: Vec<Masquerade>) -> Result<Self, DataplaneError> {
        Self::open_with_event_buffer(masquerades, events::EVENT_BUFFER_BYTES)
    }

    /// As [`Kernel::open`], with a route event socket of `buffer_bytes`
    /// (tests make it small to overrun it).
    pub fn open_with_event_buffer(
        masquerades: Vec<Masquerade>,
        buffer_bytes: usize,
    ) -> Result<Self, DataplaneError> {
        let rt = RouteNetlink::open().map_err(|e| kernel_error("open rtnetlink", e))?;
        let nft = Nftables::open().map_err(|e| kernel_error("open nftables", e))?;
        let wakeups = Wakeups::default();
        noverlay_nft::watch_foreign_changes(nft.port(), wakeups.clone())
            .map_err(|e| kernel_error("watch nftables", e))?;
        events::watch_route_events(wakeups.clone(), buffer_bytes)
            .map_err(|e| kernel_error("watch rtnetlink", e))?;
        Ok(Kernel {
            rt,
            nft,
            nft_dirty: true,
            last_nft: None,
            wakeups,
            masquerades,
            mp0_missing: false,
            contests: contest::Contests::default(),
            takeback_log: noverlay_runtime::logging::Repeats::default(),
            rendered: rendered::RenderedRoutes::default(),
            known_routes: None,
            audit: false,
        })
    }

    async fn reconcile_addresses(
        &self,
        plan: &HostPlan,
        gateway: u32,
        progress: &mut Progress,
    ) -> Result<(), DataplaneError> {
        let actual = self
            .rt
            .addresses()
            .await
            .map_err(|e| kernel_error("list addresses", e))?;
        for wanted in reconcile::missing_addresses(plan, &actual, gateway) {
            let added = self
                .rt
                .add_address(gateway, wanted.addr, plan.route_protocol)
                .await
                .map_err(|e| {
                    kernel_error(format!("add address {} dev {}", wanted.addr, wanted.dev), e)
                });
            progress.record(added);
        }
        Ok(())
    }

    async fn reconcile_neighbours(
        &self,
        plan: &HostPlan,
        gateway: u32,
        progress: &mut Progress,
    ) -> Result<(), DataplaneError> {
        let actual = self
            .rt
            .neighbours()
            .await
            .map_err(|e| kernel_error("list neighbours", e))?;
        for wanted in reconcile::missing_neighbours(plan, &actual, gateway) {
            let set = self
                .rt
                .set_permanent_neighbour(gateway, wanted.ip, &wanted.mac, plan.route_protocol)
                .await
                .map_err(|e| {
                    kernel_error(format!("set neighbour {} dev {}", wanted.ip, wanted.dev), e)
                });
            progress.record(set);
        }
        Ok(())
    }

    /// Replaces our table when it may differ from the plan. Ok(false) when
    /// nothing needed writing. An audit reads the table back and compares
    /// it with the plan: a table in place is left (its counters go on).
    async fn reconcile_nft(
        &mut self,
        plan: &HostPlan,
        audit: bool,
    ) -> Result<bool, DataplaneError> {
        // While the watcher is deaf nothing tells us of a flushed table:
        // every reconcile (the periodic one too) rewrites it.
        if self.wakeups.take_nft_changed() || self.wakeups.nft_watch_lost().is_some() {
            self.nft_dirty = true;
        }
        if audit && !self.nft_dirty && self.last_nft.as_ref() == Some(&plan.nft) {
            let held = self.nft_table(&plan.nft.table).await?;
            if rules::without_counters(&held) != plan.nft.render() {
                tracing::warn!(
                    table = %plan.nft.table,
                    "our nft table differs from the plan though no event said so; rewriting it"
                );
                self.nft_dirty = true;
            }
        }
        if !self.nft_dirty && self.last_nft.as_ref() == Some(&plan.nft) {
            return Ok(false);
        }
        let table = &plan.nft.table;
        self.refuse_foreign_table(table, plan.nft.chain, "replace")
            .await?;
        let written = match rules::replace(&plan.nft) {
            Ok(transaction) => self.nft.commit(transaction).await,
            Err(e) => Err(e),
        };
        match written {
            Ok(()) => {
                self.nft_dirty = false;
                self.last_nft = Some(plan.nft.clone());
                Ok(true)
            }
            Err(e) => {
                self.nft_dirty = true;
                self.last_nft = None;
                Err(kernel_error(format!("replace nft table inet {table}"), e))
            }
        }
    }
}

impl Kernel {
    /// What kernel events told since the last apply (tests drop it, as a
    /// lost event would, to show what the audit finds without them).
    pub fn wakeups(&self) -> &Wakeups {
        &self.wakeups
    }

    /// Errs when an inet table named `table` exists that is not ours: it is
    /// never replaced or deleted.
    async fn refuse_foreign_table(
        &self,
        table: &str,
        chain: &'static str,
        operation: &str,
    ) -> Result<(), DataplaneError> {
        let id = rules::table_id(table);
        let dump = self
            .nft
            .read(&id, Depth::Chains)
            .await
            .map_err(|e| kernel_error(format!("read nft table {id}"), e))?;
        match ownership::owner(dump.as_ref(), plan::NFT_TABLE_MARK, chain) {
            TableOwner::Absent | TableOwner::Ours => Ok(()),
            TableOwner::Foreign(why) => Err(kernel_error(
                format!("{operation} nft table inet {table}"),
                format!(
                    "the table exists and is not ours ({why}); refusing to touch it: choose another ownership.nft_table"
                ),
            )),
        }
    }
}

impl Dataplane for Kernel {
    async fn apply(&mut self, plan: &HostPlan) -> Result<Applied, DataplaneError> {
        // Asked until the table is compared: an apply that fails before
        // that (a missing gateway interface) leaves it asked.
        let audit = self.audit;
        if audit {
            // Routes are listed, not taken from the last apply.
            self.known_routes = None;
        }
        let links = self
            .rt
            .links()
            .await
            .map_err(|e| kernel_error("list links", e))?;
        let mp0 = link_index(&links, &plan.mp0_interface);
        if mp0.is_none() != self.mp0_missing {
            self.mp0_missing = mp0.is_none();
            if self.mp0_missing {
                tracing::warn!(
                    "no interface named {:?} (config mp0_interface: ovnkube-node's management port): ovnkube-node has not made it yet, or names it otherwise; set mp0_interface to its name",
                    plan.mp0_interface
                );
            } else {
                tracing::info!(interface = %plan.mp0_interface, "the management port is there");
            }
        }
        let gateway_index = link_index(&links, &plan.nft.gateway_interface);
        // Kernel events are weighed against this from now on.
        self.wakeups.set_interest(Interest {
            own_ports: self.rt.ports().to_vec(),
            gateway_name: plan.nft.gateway_interface.clone(),
            gateway_index,
            mp0_name: plan.mp0_interface.clone(),
            mp0_index: mp0,
            mp0_routes: plan.mp0_routes,
            route_protocol: plan.route_protocol,
            prefixes: plan.cluster_cidrs.clone(),
            route_dsts: plan.routes.iter().map(|r| r.dst).collect(),
            neighbours: plan.neighbours.iter().map(|n| (n.ip, n.mac)).collect(),
            addresses: plan
                .addresses
                .iter()
                .filter(|a| a.dev == plan.nft.gateway_interface)
                .map(|a| a.addr)
                .collect(),
        });
        let gateway = gateway_index.ok_or_else(|| {
            kernel_error(
                "find gateway interface",
                format!(
                    "no interface named {:?} (config gateway_interface: the interface facing the DPU's host representor)",
                    plan.nft.gateway_interface
                ),
            )
        })?;
        let mut progress = Progress::default();

        // The masquerade address (its connected route puts the dummy next
        // hop on-link) and the dummy next hop's permanent neighbour.
        self.reconcile_addresses(plan, gateway, &mut progress)
            .await?;
        self.reconcile_neighbours(plan, gateway, &mut progress)
            .await?;

        // Routes of ours the plan dropped go before their SNAT rules do.
        let (routes, listed_at) = self.routes_now(plan).await?;
        let stale = reconcile::stale_routes(plan, &routes);
        self.delete_routes(&stale.uncovered, &mut progress).await;

        // The SNAT table before any new route: a route never goes out
        // without its SNAT. If it cannot be written, no route is added.
        let nft = self.reconcile_nft(plan, audit).await;
        self.audit = false;
        match nft {
            Ok(true) => progress.changes += 1,
            Ok(false) => {}
            Err(e) => {
                progress.errors.push(e);
                return Err(DataplaneError::Many(progress.errors));
            }
        }

        let put = self
            .put_routes(plan, &routes, &links, gateway, mp0, &mut progress)
            .await;
        // Old routes of ours inside a planned CIDR go once the new ones are
        // in; broad mp0 routes (when the plan removes them) once ours cover
        // their CIDRs.
        self.delete_routes(&stale.covered, &mut progress).await;
        let routes =
            if !stale.uncovered.is_empty() || !stale.covered.is_empty() || put.aliases_deleted {
                self.main_routes().await?
            } else if !put.written.is_empty() {
                self.routes_after_puts(plan, routes, put.written).await?
            } else {
                routes
            };
        let broad: Vec<&KernelRoute> = routes
            .iter()
            .filter(|r| reconcile::is_broad_mp0(plan, r, mp0))
            .collect();
        self.delete_routes(&broad, &mut progress).await;

        if !progress.errors.is_empty() {
            return Err(DataplaneError::Many(progress.errors));
        }
        // Report what the kernel has, not what we meant to write.
        let reported = self.report_routes(plan, &routes, &broad, &links);
        let left = broad.is_empty().then_some(routes);
        self.remember_routes(plan, left, listed_at);
        let now = tokio::time::Instant::now();
        Ok(Applied {
            routes: reported,
            changes: progress.changes,
            conflicts: self.contests.conflicts(now),
            retry_at: self.contests.next_retry(),
            takebacks: self.contests.takebacks_total(),
            nft_watch_lost: self.wakeups.nft_watch_lost(),
            nft_watch_restarts: self.wakeups.nft_watch_restarts(),
            route_event_overruns: self.wakeups.event_overruns(),
        })
    }

    async fn nft_table(&mut self, table: &str) -> Result<String, DataplaneError> {
        let id = rules::table_id(table);
        let dump = self
            .nft
            .read(&id, Depth::ChainsAndRules)
            .await
            .map_err(|e| kernel_error(format!("list nft table {id}"), e))?;
        // An absent table is shown without chains.
        let (comment, items) = dump.map(|d| (d.comment, d.items)).unwrap_or_default();
        Ok(noverlay_nft::describe::render_table(
            &id,
            comment.as_deref(),
            &items,
            rules::render_rule,
        ))
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
        self.remove_what_is_ours(settings).await
    }

    async fn drift(&mut self) {
        // Cancel-safe: the agent polls this in a select.
        self.wakeups.woken().await
    }

    fn absorb_drift(&mut self) {
        self.wakeups.absorb();
    }

    fn audit_next(&mut self) {
        self.audit = true;
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        // The nftables watcher thread ends with us.
        self.wakeups.close();
    }
}
