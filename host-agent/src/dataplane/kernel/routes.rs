//! The kernel backend's routes: listing the main table, deleting stale
//! routes of ours, putting planned ones (taking back a key another writer
//! took from us, see [`super::contest`]), and reporting what the kernel has.

use super::{
    Kernel, Progress, contest, kernel_error, reconcile, reconcile::RoutePut,
    rendered::render_kernel_route,
};
use crate::{
    dataplane::{
        DataplaneError,
        netlink_route::{self, KernelLink, KernelRoute},
    },
    plan::{self, HostPlan},
};
use std::collections::HashMap;
use tokio::time::Instant;

/// Up to this many routes put by one reconcile (a repair) are read back
/// from the kernel's echoes; more, and one listing of every route is
/// cheaper than their echoes.
const ECHO_AT_MOST: usize = 16;

/// Up to this many destinations touched by events are looked up one by one
/// (a repair); more, and one listing is cheaper.
const LOOK_UP_AT_MOST: usize = 16;

/// Known routes are trusted this long after the listing they grew from:
/// the periodic reconcile (every 60 s) always lists.
const KNOWN_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// What [`Kernel::put_routes`] did: the routes it wrote, each with its
/// echo, and whether it deleted another writer's route in front of ours
/// (then only a listing says what is left).
pub(super) struct Puts {
    pub written: Vec<(plan::PlannedRoute, Option<KernelRoute>)>,
    pub aliases_deleted: bool,
}

/// The main table's routes as the last apply left them, for `plan`.
pub(super) struct KnownRoutes {
    plan: HostPlan,
    routes: Vec<KernelRoute>,
    /// When every route was last listed (lookups since do not count).
    listed_at: Instant,
}

impl Kernel {
    /// The main table's routes now, and when they were last listed whole.
    /// After an apply of the same plan, with only route events since (a
    /// repair), the last apply's routes with each touched destination looked
    /// up; otherwise a listing.
    pub(super) async fn routes_now(
        &mut self,
        plan: &HostPlan,
    ) -> Result<(Vec<KernelRoute>, Instant), DataplaneError> {
        let touched = self.wakeups.take_touched();
        if let Some(known) = self.known_routes.take()
            && known.plan == *plan
            && known.listed_at.elapsed() < KNOWN_FOR
            && !touched.other
            && touched.route_dsts.len() <= LOOK_UP_AT_MOST
        {
            let touched_count = touched.route_dsts.len();
            let mut looked_up = Vec::with_capacity(touched_count);
            for dst in touched.route_dsts {
                match self.rt.route_for(dst).await {
                    Ok(entry) => looked_up.push((dst, entry)),
                    Err(e) => {
                        tracing::debug!(route = %dst, error = %e, "route lookup failed; listing instead");
                        break;
                    }
                }
            }
            if looked_up.len() == touched_count
                && let Some(routes) = reconcile::with_lookups(known.routes, looked_up)
            {
                return Ok((routes, known.listed_at));
            }
        }
        let listed_at = Instant::now();
        Ok((self.main_routes().await?, listed_at))
    }

    /// What this apply left in the main table (`routes`, grown from the
    /// listing at `listed_at`), for the next apply of the same plan; None
    /// when it is not known (an error, routes deleted after the listing).
    pub(super) fn remember_routes(
        &mut self,
        plan: &HostPlan,
        routes: Option<Vec<KernelRoute>>,
        listed_at: Instant,
    ) {
        self.known_routes = routes.map(|routes| KnownRoutes {
            plan: plan.clone(),
            routes,
            listed_at,
        });
    }

    pub(super) async fn main_routes(&self) -> Result<Vec<KernelRoute>, DataplaneError> {
        self.rt
            .main_routes()
            .await
            .map_err(|e| kernel_error("list routes", e))
    }

    pub(super) async fn delete_routes(&self, routes: &[&KernelRoute], progress: &mut Progress) {
        for route in routes {
            match self.rt.del_route(route).await {
                Ok(()) => progress.changes += 1,
                // Already gone (e.g. removed with its link): nothing to do.
                Err(e) if netlink_route::errno(&e) == Some(libc::ESRCH) => {}
                Err(e) => progress
                    .errors
                    .push(kernel_error(format!("delete route {}", route.dst), e)),
            }
        }
    }

    /// Puts the planned routes that are missing or differ, in one batch;
    /// those the kernel took, each with its echo. A route of another
    /// writer's in front of ours at our key is deleted instead.
    pub(super) async fn put_routes(
        &mut self,
        plan: &HostPlan,
        actual: &[KernelRoute],
        links: &HashMap<u32, KernelLink>,
        gateway: u32,
        mp0: Option<u32>,
        progress: &mut Progress,
    ) -> Puts {
        let mut writes = Vec::new();
        let mut in_front = Vec::new();
        let now = tokio::time::Instant::now();
        for put in reconcile::route_puts(plan, actual, gateway, mp0) {
            let (wanted, replace) = match put {
                RoutePut::Add(wanted) => (wanted, false),
                RoutePut::Replace(wanted) => (wanted, true),
                // A key where ours is (behind another writer's) is ours.
                RoutePut::Foreign {
                    wanted,
                    theirs,
                    ahead_of_ours,
                } if ahead_of_ours.is_empty() && !self.contests.owns(&wanted.dst) => {
                    progress.errors.push(kernel_error(
                        format!("add route {}", plan::render_route(wanted)),
                        format!(
                            "a route to {} with proto {} that is not ours was there first; refusing to replace it (remove it, or leave that CIDR out of the contract)",
                            wanted.dst, theirs.protocol
                        ),
                    ));
                    continue;
                }
                RoutePut::Foreign {
                    wanted,
                    theirs: route,
                    ahead_of_ours,
                } => {
                    let theirs = render_kernel_route(route, links);
                    match self.contests.decide(wanted.dst, theirs.clone(), now) {
                        contest::Decision::TakeBack if !ahead_of_ours.is_empty() => {
                            self.warn_of_writer(
                                "take back",
                                wanted,
                                &theirs,
                                &format!(
                                    "another writer put {} routes in front of ours; deleting them",
                                    ahead_of_ours.len()
                                ),
                            );
                            in_front.extend(ahead_of_ours);
                            continue;
                        }
                        contest::Decision::TakeBack => {
                            self.warn_of_writer(
                                "take back",
                                wanted,
                                &theirs,
                                "another writer replaced a route of ours; taking it back",
                            );
                            (wanted, true)
                        }
                        contest::Decision::HoldOff(_) => {
                            self.warn_of_writer(
                                "fought over",
                                wanted,
                                &theirs,
                                "another writer keeps replacing a route of ours; holding off (see status)",
                            );
                            continue;
                        }
                    }
                }
            };
            writes.push((wanted, replace));
        }
        let aliases_deleted = !in_front.is_empty();
        self.delete_routes(&in_front, progress).await;
        if writes.is_empty() {
            return Puts {
                written: Vec::new(),
                aliases_deleted,
            };
        }
        // A repair's few routes are read back from their echoes; a listing
        // reads many for less.
        let echo = writes.len() <= ECHO_AT_MOST;
        let answers = match self.rt.put_routes(&writes, gateway, echo).await {
            Ok(answers) => answers,
            Err(e) => {
                progress
                    .errors
                    .push(kernel_error(format!("add {} routes", writes.len()), e));
                return Puts {
                    written: Vec::new(),
                    aliases_deleted,
                };
            }
        };
        let mut put = Vec::with_capacity(writes.len());
        for ((wanted, _), answer) in writes.into_iter().zip(answers) {
            match answer {
                Ok(echo) => {
                    progress.changes += 1;
                    put.push((wanted.clone(), echo));
                }
                Err(e) => progress.errors.push(kernel_error(
                    format!("add route {}", plan::render_route(wanted)),
                    e,
                )),
            }
        }
        Puts {
            written: put,
            aliases_deleted,
        }
    }

    /// Says what another writer did to the route planned as `wanted`, once
    /// a minute per `kind` and destination.
    fn warn_of_writer(
        &mut self,
        kind: &str,
        wanted: &plan::PlannedRoute,
        theirs: &str,
        what: &str,
    ) {
        let key = format!("{kind} {}", wanted.dst);
        if let Some(suppressed) = self.takeback_log.due(&key) {
            tracing::warn!(
                theirs,
                ours = %plan::render_route(wanted),
                suppressed,
                "{what}"
            );
        }
    }

    /// Our routes after `put` went in: the listing with each put route as
    /// the kernel echoed it; the kernel's whole listing again where there
    /// is no echo or it does not show the planned route.
    pub(super) async fn routes_after_puts(
        &self,
        plan: &HostPlan,
        listed: Vec<KernelRoute>,
        put: Vec<(plan::PlannedRoute, Option<KernelRoute>)>,
    ) -> Result<Vec<KernelRoute>, DataplaneError> {
        let (wanted, echoes): (Vec<_>, Vec<_>) = put.into_iter().unzip();
        match reconcile::with_read_back(plan, listed, wanted.iter().zip(echoes).collect()) {
            Some(routes) => Ok(routes),
            None => self.main_routes().await,
        }
    }

    /// Our routes as the kernel lists them, and where a planned one is not
    /// ours (or not there) what the kernel has instead, marked. Keys found
    /// holding our route become ours (see [`contest::Contests::own`]).
    pub(super) fn report_routes(
        &mut self,
        plan: &HostPlan,
        routes: &[KernelRoute],
        broad: &[&KernelRoute],
        links: &HashMap<u32, KernelLink>,
    ) -> Vec<String> {
        let now = tokio::time::Instant::now();
        let ours = routes
            .iter()
            .filter(|r| r.protocol == plan.route_protocol && !broad.iter().any(|b| b.dst == r.dst));
        let mut reported = self.rendered.render(ours, links);
        let by_key = reconcile::RoutesByKey::new(routes);
        for wanted in &plan.routes {
            match by_key.get(wanted) {
                Some(r) if r.protocol == plan.route_protocol => {
                    self.contests.own(wanted.dst);
                    self.contests.settled(&wanted.dst, now);
                    if let Some(better) = by_key.shadowing(wanted) {
                        reported.push(format!(
                            "{} [shadows ours: a better metric at our destination; planned {}]",
                            render_kernel_route(better, links),
                            plan::render_route(wanted)
                        ));
                    }
                }
                Some(r) => reported.push(format!(
                    "{} [not ours: planned {}]",
                    render_kernel_route(r, links),
                    plan::render_route(wanted)
                )),
                None => reported.push(format!("[missing: planned {}]", plan::render_route(wanted))),
            }
        }
        let planned: Vec<_> = plan.routes.iter().map(|r| r.dst).collect();
        self.contests.retain_planned(&planned);
        reported
    }
}
