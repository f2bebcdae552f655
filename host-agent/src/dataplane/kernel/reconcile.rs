//! What to change, per kind of kernel object: the plan diffed against what
//! the kernel reports. Pure functions; the kernel backend reads, calls
//! these, and writes only what they return.

use super::super::netlink_route::{KernelAddress, KernelNeighbour, KernelRoute, MAIN_TABLE};
use crate::{
    config::Mp0Routes,
    plan::{self, HostPlan, PlannedAddress, PlannedNeighbour, PlannedRoute},
};
use ipnet::IpNet;
use std::collections::{HashMap, HashSet};

/// Planned addresses the gateway interface lacks.
pub fn missing_addresses<'a>(
    plan: &'a HostPlan,
    actual: &[KernelAddress],
    gateway: u32,
) -> Vec<&'a PlannedAddress> {
    plan.addresses
        .iter()
        .filter(|wanted| {
            !actual
                .iter()
                .any(|a| a.index == gateway && a.addr == wanted.addr)
        })
        .collect()
}

/// Planned neighbours missing, not permanent or with another MAC.
pub fn missing_neighbours<'a>(
    plan: &'a HostPlan,
    actual: &[KernelNeighbour],
    gateway: u32,
) -> Vec<&'a PlannedNeighbour> {
    plan.neighbours
        .iter()
        .filter(|wanted| {
            !actual.iter().any(|n| {
                n.index == gateway
                    && n.ip == wanted.ip
                    && n.permanent
                    && n.mac.as_deref() == Some(&wanted.mac[..])
            })
        })
        .collect()
}

/// What to do for one planned route.
#[derive(Debug, PartialEq, Eq)]
pub enum RoutePut<'a> {
    Add(&'a PlannedRoute),
    /// Replace the route with the same key (ours that differs, or a broad
    /// mp0 route swapped for ours in one step: never a moment without).
    Replace(&'a PlannedRoute),
    /// Someone else's route has the key: ours by contract, so it is taken
    /// back unless the key is fought over ([`super::contest`]).
    Foreign {
        wanted: &'a PlannedRoute,
        theirs: &'a KernelRoute,
        /// Ours is still there, behind these (IPv4 aliases prepended at the
        /// key, `theirs` first): taking back is deleting them; a replace
        /// would find ours and fail with EEXIST. Empty: ours is not there.
        ahead_of_ours: Vec<&'a KernelRoute>,
    },
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

/// A route through mp0 that covers a cluster CIDR: it must go, unless the
/// plan keeps mp0's routes (and outdoes them with more specific ones).
pub fn is_broad_mp0(plan: &HostPlan, route: &KernelRoute, mp0: Option<u32>) -> bool {
    plan.mp0_routes == Mp0Routes::Remove
        && mp0.is_some()
        && route.oif == mp0
        && plan::is_broad_cluster_route(&route.dst, &plan.cluster_cidrs)
}

/// The kernel's routes by key (destination and metric in the main table):
/// a planned route's counterparts are found in one lookup, so a reconcile
/// costs in proportion to the routes, not their square (2,048 planned
/// against as many listed at 1,024 CIDRs). What is rare (a second route at
/// a key, a better metric than ours at a destination) is kept apart, so
/// the common case costs one map.
pub struct RoutesByKey<'a> {
    /// The first listed at each key: the one traffic takes.
    first: HashMap<(IpNet, u32), &'a KernelRoute>,
    /// The others at a key, in listing order (aliases, rare).
    behind: HashMap<(IpNet, u32), Vec<&'a KernelRoute>>,
    /// At each destination, the best route with a better metric than the
    /// family's default, ours (IPv6 under 1024; rare).
    better: HashMap<IpNet, &'a KernelRoute>,
}

impl<'a> RoutesByKey<'a> {
    pub fn new(routes: &'a [KernelRoute]) -> Self {
        let mut first = HashMap::with_capacity(routes.len());
        let mut behind: HashMap<_, Vec<_>> = HashMap::new();
        let mut better: HashMap<IpNet, &KernelRoute> = HashMap::new();
        for route in routes {
            let priority = effective_priority(route);
            let key = (route.dst, priority);
            match first.entry(key) {
                std::collections::hash_map::Entry::Occupied(_) => {
                    behind.entry(key).or_default().push(route)
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(route);
                }
            }
            let default = if route.dst.addr().is_ipv6() { 1024 } else { 0 };
            if priority < default {
                better
                    .entry(route.dst)
                    .and_modify(|best| {
                        if priority < effective_priority(best) {
                            *best = route;
                        }
                    })
                    .or_insert(route);
            }
        }
        RoutesByKey {
            first,
            behind,
            better,
        }
    }

    /// The kernel's route with the key of our planned `wanted` (the first:
    /// the one traffic takes).
    pub fn get(&self, wanted: &PlannedRoute) -> Option<&'a KernelRoute> {
        self.first
            .get(&(wanted.dst, default_priority(wanted)))
            .copied()
    }

    /// The kernel's other routes at that key, behind the first.
    pub fn behind(&self, wanted: &PlannedRoute) -> &[&'a KernelRoute] {
        self.behind
            .get(&(wanted.dst, default_priority(wanted)))
            .map_or(&[], Vec::as_slice)
    }

    /// A route at `wanted`'s destination with a better metric than ours:
    /// traffic takes it, not ours. Another metric is not our key, so it is
    /// not taken back, only reported.
    pub fn shadowing(&self, wanted: &PlannedRoute) -> Option<&'a KernelRoute> {
        self.better
            .get(&wanted.dst)
            .copied()
            .filter(|best| effective_priority(best) < default_priority(wanted))
    }
}

/// Whether the kernel's `route` is our `wanted` as planned.
fn in_place(route: &KernelRoute, wanted: &PlannedRoute, gateway: u32) -> bool {
    route.protocol == wanted.protocol
        && route.kind.is_none()
        && route.via == Some(wanted.via)
        && route.oif == Some(gateway)
        && route.mtu == Some(wanted.mtu)
}

/// Whether two entries are the same route (a lookup's answer against a
/// listing's entry: their messages differ in flags).
fn same_route(a: &KernelRoute, b: &KernelRoute) -> bool {
    a.kind == b.kind
        && a.dst == b.dst
        && a.via == b.via
        && a.oif == b.oif
        && a.mtu == b.mtu
        && a.protocol == b.protocol
        && effective_priority(a) == effective_priority(b)
        && a.table == b.table
}

/// What the kernel holds after puts, without listing every route again:
/// `read` has, for each put, the route as the kernel echoed it. None when
/// an echo is missing or is not the planned route (another metric or
/// protocol): then only a listing says what is there.
pub fn with_read_back(
    plan: &HostPlan,
    mut listed: Vec<KernelRoute>,
    read: Vec<(&PlannedRoute, Option<KernelRoute>)>,
) -> Option<Vec<KernelRoute>> {
    let mut keys = HashSet::new();
    let mut found = Vec::with_capacity(read.len());
    for (wanted, entry) in read {
        let entry = entry.filter(|e| {
            e.dst == wanted.dst
                && effective_priority(e) == default_priority(wanted)
                && e.protocol == plan.route_protocol
        })?;
        keys.insert((entry.dst, effective_priority(&entry)));
        found.push(entry);
    }
    listed.retain(|r| !keys.contains(&(r.dst, effective_priority(r))));
    listed.extend(found);
    Some(listed)
}

/// The main table's routes now, from `known` (a listing or an apply's
/// result) and one lookup for each destination events touched since
/// (`looked_up`: the entry the kernel matched for the destination's own
/// address, None for no route). A lookup shows only the route traffic
/// takes: it says all that is at its destination when it matched a shorter
/// prefix covering it (nothing at the destination), or the destination
/// itself where nothing was known or the known route is still the one
/// matched. For anything else (another table, a more specific route,
/// several routes known at the destination, another route matched where
/// one was known: an alias prepended before ours, a better metric) None:
/// only a listing can say.
pub fn with_lookups(
    mut known: Vec<KernelRoute>,
    looked_up: Vec<(IpNet, Option<KernelRoute>)>,
) -> Option<Vec<KernelRoute>> {
    let touched: HashSet<IpNet> = looked_up.iter().map(|(dst, _)| *dst).collect();
    let mut known_at: HashMap<IpNet, &KernelRoute> = HashMap::new();
    for route in known.iter().filter(|r| touched.contains(&r.dst)) {
        if known_at.insert(route.dst, route).is_some() {
            return None;
        }
    }
    let mut found = Vec::new();
    for (dst, entry) in looked_up {
        match entry {
            None => {}
            Some(e) if e.table != MAIN_TABLE => return None,
            Some(e) if e.dst == dst => match known_at.get(&dst) {
                Some(k) if !same_route(k, &e) => return None,
                _ => found.push(e),
            },
            Some(e) if e.dst.prefix_len() < dst.prefix_len() && e.dst.contains(&dst) => {}
            Some(_) => return None,
        }
    }
    known.retain(|r| !touched.contains(&r.dst));
    known.extend(found);
    Some(known)
}

/// The planned routes that are missing or differ, and how to put each.
pub fn route_puts<'a>(
    plan: &'a HostPlan,
    actual: &'a [KernelRoute],
    gateway: u32,
    mp0: Option<u32>,
) -> Vec<RoutePut<'a>> {
    let actual = RoutesByKey::new(actual);
    plan.routes
        .iter()
        .filter_map(|wanted| match actual.get(wanted) {
            None => Some(RoutePut::Add(wanted)),
            Some(r) if r.protocol == wanted.protocol => {
                (!in_place(r, wanted, gateway)).then_some(RoutePut::Replace(wanted))
            }
            Some(r) if is_broad_mp0(plan, r, mp0) => Some(RoutePut::Replace(wanted)),
            Some(r) => {
                let behind = actual.behind(wanted);
                let ahead_of_ours = match behind.iter().position(|o| in_place(o, wanted, gateway)) {
                    Some(ours) => std::iter::once(r)
                        .chain(behind[..ours].iter().copied())
                        .collect(),
                    None => Vec::new(),
                };
                Some(RoutePut::Foreign {
                    wanted,
                    theirs: r,
                    ahead_of_ours,
                })
            }
        })
        .collect()
}

/// Routes with our protocol that the plan no longer has, in two groups:
/// those to destinations no cluster CIDR covers any more (they go before
/// their SNAT rules do), and those still inside a planned cluster CIDR
/// (the whole CIDR swapped for its halves or back): those go after the
/// new routes are in, so that the CIDR is never without a route of ours.
pub struct StaleRoutes<'a> {
    pub uncovered: Vec<&'a KernelRoute>,
    pub covered: Vec<&'a KernelRoute>,
}

pub fn stale_routes<'a>(plan: &HostPlan, actual: &'a [KernelRoute]) -> StaleRoutes<'a> {
    let planned: HashSet<IpNet> = plan.routes.iter().map(|w| w.dst).collect();
    let (covered, uncovered) = actual
        .iter()
        .filter(|r| r.protocol == plan.route_protocol && !planned.contains(&r.dst))
        .partition(|r| plan.cluster_cidrs.iter().any(|c| c.contains(&r.dst)));
    StaleRoutes { uncovered, covered }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{HostSettings, plan};
    use noverlay_proto::contract::{Contract, FamilyContract, Masquerade, Mode, Offer};
    use rtnetlink::packet_route::route::RouteMessage;

    fn host_plan() -> HostPlan {
        host_plan_with(Mp0Routes::Remove)
    }

    fn host_plan_with(mp0_routes: Mp0Routes) -> HostPlan {
        let offer = Offer::new(
            1,
            Mode::IN_SCOPE,
            vec![FamilyContract {
                masquerade: Masquerade::from_subnet("169.254.0.0/17".parse().expect("net"))
                    .expect("masq"),
                cluster_cidrs: vec![
                    "198.18.128.0/17".parse().expect("cidr"),
                    "198.19.0.0/24".parse().expect("cidr"),
                ],
                underlay_ip: "198.18.0.10".parse().expect("ip"),
            }],
            1400,
        )
        .expect("offer");
        let contract: Contract = offer.contract_for("eth0").expect("contract");
        plan(
            &contract,
            &HostSettings {
                gateway_interface: "eth0".into(),
                mp0_interface: "ovn-k8s-mp0".into(),
                mp0_routes,
                route_protocol: 240,
                nft_table: "noverlay".into(),
            },
        )
    }

    const GATEWAY: u32 = 2;
    const MP0: u32 = 3;

    fn kernel_route(
        dst: &str,
        via: Option<&str>,
        oif: u32,
        protocol: u8,
        mtu: Option<u32>,
    ) -> KernelRoute {
        KernelRoute {
            kind: None,
            dst: dst.parse().expect("dst"),
            via: via.map(|v| v.parse().expect("via")),
            oif: Some(oif),
            mtu,
            protocol,
            priority: None,
            table: 254,
            message: RouteMessage::default(),
        }
    }

    #[test]
    fn a_read_back_replaces_the_listed_route_or_asks_for_a_listing() {
        let plan = host_plan();
        let wanted = &plan.routes[0];
        let ours = |mtu| {
            kernel_route(
                &wanted.dst.to_string(),
                Some("169.254.0.4"),
                GATEWAY,
                240,
                mtu,
            )
        };
        let other = kernel_route(
            "198.19.0.0/24",
            Some("169.254.0.4"),
            GATEWAY,
            240,
            Some(1400),
        );
        // A foreign route had our key; the echo shows ours now.
        let listed = vec![
            kernel_route(&wanted.dst.to_string(), Some("10.0.0.1"), 9, 16, None),
            other.clone(),
        ];
        let merged = with_read_back(
            &plan,
            listed.clone(),
            vec![(wanted, Some(ours(Some(1400))))],
        )
        .expect("ours read back");
        assert_eq!(merged.len(), 2);
        assert!(
            merged
                .iter()
                .any(|r| r.dst == wanted.dst && r.protocol == 240)
        );
        assert!(merged.iter().all(|r| r.protocol == 240));
        // An echo that is not the planned route, or none: only a listing
        // can say what is there.
        let wider = kernel_route("198.18.0.0/15", None, MP0, 3, None);
        let foreign = kernel_route(&wanted.dst.to_string(), Some("10.0.0.1"), 9, 16, None);
        for entry in [Some(wider), Some(foreign), None] {
            assert_eq!(
                with_read_back(&plan, listed.clone(), vec![(wanted, entry)]),
                None
            );
        }
    }

    #[test]
    fn lookups_of_touched_destinations_update_the_known_routes_or_ask_for_a_listing() {
        let half = "198.18.128.0/25".parse::<IpNet>().expect("net");
        let ours = |dst: &str| kernel_route(dst, Some("169.254.0.4"), GATEWAY, 240, Some(1400));
        let known = vec![ours("198.18.128.0/25"), ours("198.18.128.128/25")];
        let mp0_route = kernel_route("198.18.128.0/17", None, MP0, 3, None);
        // Deleted: the lookup matched mp0's covering route, or nothing.
        for entry in [Some(mp0_route.clone()), None] {
            let now = with_lookups(known.clone(), vec![(half, entry)]).expect("known");
            assert_eq!(now, vec![ours("198.18.128.128/25")]);
        }
        // Still ours: nothing changed there.
        let now = with_lookups(known.clone(), vec![(half, Some(ours("198.18.128.0/25")))])
            .expect("known");
        assert_eq!(now.len(), 2);
        // Another writer's route where none was known: it is what is there.
        let theirs = kernel_route("198.18.128.0/25", None, MP0, 3, None);
        let without_ours = vec![ours("198.18.128.128/25")];
        let now = with_lookups(without_ours, vec![(half, Some(theirs.clone()))]).expect("known");
        assert!(now.contains(&theirs) && now.len() == 2);
        // Another writer's route where ours was: a replace, or an alias
        // prepended before ours, or a better metric with ours behind; the
        // lookup cannot tell them apart, a listing can.
        let mut better_metric = ours("198.18.128.0/25");
        better_metric.protocol = 3;
        better_metric.priority = Some(100);
        for entry in [theirs, better_metric] {
            assert_eq!(with_lookups(known.clone(), vec![(half, Some(entry))]), None);
        }
        // A more specific route, another table, or several routes known at
        // the destination: only a listing says.
        let narrower = ours("198.18.128.0/26");
        let mut elsewhere = ours("198.18.128.0/25");
        elsewhere.table = 100;
        for entry in [narrower, elsewhere] {
            assert_eq!(with_lookups(known.clone(), vec![(half, Some(entry))]), None);
        }
        let mut twice = known.clone();
        twice.push(kernel_route("198.18.128.0/25", None, MP0, 3, None));
        assert_eq!(with_lookups(twice, vec![(half, None)]), None);
    }

    #[test]
    fn routes_are_added_fixed_swapped_or_refused() {
        let plan = host_plan();
        let actual = [
            // Ours, already right.
            kernel_route(
                "198.19.0.0/24",
                Some("169.254.0.4"),
                GATEWAY,
                240,
                Some(1400),
            ),
            // ovnkube's broad route via mp0 for the other CIDR.
            kernel_route("198.18.128.0/17", None, MP0, 3, None),
        ];
        let puts = route_puts(&plan, &actual, GATEWAY, Some(MP0));
        assert_eq!(puts, vec![RoutePut::Replace(&plan.routes[0])]);

        // Ours with a stale MTU is replaced; a foreign route at our key is named.
        let actual = [
            kernel_route(
                "198.19.0.0/24",
                Some("169.254.0.4"),
                GATEWAY,
                240,
                Some(9000),
            ),
            kernel_route("198.18.128.0/17", Some("10.0.0.1"), 9, 16, None),
        ];
        let puts = route_puts(&plan, &actual, GATEWAY, Some(MP0));
        assert_eq!(
            puts,
            vec![
                RoutePut::Foreign {
                    wanted: &plan.routes[0],
                    theirs: &actual[1],
                    ahead_of_ours: Vec::new(),
                },
                RoutePut::Replace(&plan.routes[1]),
            ]
        );
        // A route that drops at our key: ours (our protocol) is put right,
        // another writer's is named to be taken back like any other.
        let blackhole = |protocol| KernelRoute {
            kind: Some("blackhole"),
            via: None,
            oif: None,
            ..kernel_route("198.18.128.0/17", None, 0, protocol, None)
        };
        let actual = [blackhole(240)];
        assert_eq!(
            route_puts(&plan, &actual, GATEWAY, Some(MP0))[0],
            RoutePut::Replace(&plan.routes[0])
        );
        let actual = [blackhole(4)];
        assert_eq!(
            route_puts(&plan, &actual, GATEWAY, Some(MP0))[0],
            RoutePut::Foreign {
                wanted: &plan.routes[0],
                theirs: &actual[0],
                ahead_of_ours: Vec::new(),
            }
        );
        // An alias prepended before ours: ours is behind it, in place.
        let ours = kernel_route(
            "198.18.128.0/17",
            Some("169.254.0.4"),
            GATEWAY,
            240,
            Some(1400),
        );
        let prepended = kernel_route("198.18.128.0/17", Some("10.0.0.1"), 9, 16, None);
        let again = kernel_route("198.18.128.0/17", Some("10.0.0.2"), 9, 16, None);
        let appended = kernel_route("198.18.128.0/17", Some("10.0.0.3"), 9, 16, None);
        let actual = [prepended, again, ours, appended];
        assert_eq!(
            route_puts(&plan, &actual, GATEWAY, Some(MP0))[0],
            RoutePut::Foreign {
                wanted: &plan.routes[0],
                theirs: &actual[0],
                ahead_of_ours: vec![&actual[0], &actual[1]],
            }
        );
        assert_eq!(
            route_puts(&plan, &[], GATEWAY, None),
            vec![
                RoutePut::Add(&plan.routes[0]),
                RoutePut::Add(&plan.routes[1])
            ]
        );
    }

    #[test]
    fn a_route_at_another_metric_is_not_at_our_key() {
        let plan = host_plan();
        let ours = &plan.routes[1];
        let mut elsewhere = kernel_route(&ours.dst.to_string(), Some("10.0.0.1"), 9, 16, None);
        elsewhere.priority = Some(100);
        let at_key = kernel_route(&ours.dst.to_string(), Some("10.0.0.2"), 9, 16, None);
        let listed = [elsewhere, at_key.clone(), at_key];
        let by_key = RoutesByKey::new(&listed);
        // The first listed at the key, as a scan of the dump would find it.
        assert!(
            by_key
                .get(ours)
                .is_some_and(|r| std::ptr::eq(r, &listed[1]))
        );
        assert!(RoutesByKey::new(&listed[..1]).get(ours).is_none());
        // IPv4's metric 0 is the best there is: nothing shadows ours.
        assert!(by_key.shadowing(ours).is_none());
        // IPv6's is 1024: a route at 100 is the one traffic takes.
        let ours_v6 = PlannedRoute {
            dst: "fd00:10:244::/49".parse().expect("net"),
            via: "fd69::4".parse().expect("ip"),
            ..ours.clone()
        };
        let mut better = kernel_route("fd00:10:244::/49", None, 9, 16, None);
        better.priority = Some(100);
        let ours_listed = kernel_route(
            "fd00:10:244::/49",
            Some("fd69::4"),
            GATEWAY,
            240,
            Some(1400),
        );
        let listed_v6 = [ours_listed, better];
        let by_key = RoutesByKey::new(&listed_v6);
        assert!(by_key.get(&ours_v6).is_some_and(|r| r.protocol == 240));
        assert!(
            by_key
                .shadowing(&ours_v6)
                .is_some_and(|r| std::ptr::eq(r, &listed_v6[1]))
        );
    }

    #[test]
    fn only_our_unplanned_routes_are_stale() {
        let plan = host_plan();
        let actual = [
            kernel_route(
                "198.19.0.0/24",
                Some("169.254.0.4"),
                GATEWAY,
                240,
                Some(1400),
            ),
            kernel_route(
                "198.20.0.0/16",
                Some("169.254.0.4"),
                GATEWAY,
                240,
                Some(1400),
            ),
            kernel_route("198.21.0.0/16", Some("10.0.0.1"), 9, 16, None),
        ];
        let stale = stale_routes(&plan, &actual);
        let dsts = |routes: &[&KernelRoute]| -> Vec<String> {
            routes.iter().map(|r| r.dst.to_string()).collect()
        };
        assert_eq!(dsts(&stale.uncovered), ["198.20.0.0/16"]);
        assert!(stale.covered.is_empty());
        assert!(is_broad_mp0(
            &plan,
            &kernel_route("198.18.0.0/16", None, MP0, 3, None),
            Some(MP0)
        ));
        assert!(!is_broad_mp0(
            &plan,
            &kernel_route("198.18.130.0/24", None, MP0, 2, None),
            Some(MP0)
        ));
    }

    #[test]
    fn kept_mp0_routes_are_left_and_outdone_by_halves() {
        let plan = host_plan_with(Mp0Routes::Keep);
        let dsts: Vec<String> = plan.routes.iter().map(|r| r.dst.to_string()).collect();
        assert_eq!(
            dsts,
            [
                "198.18.128.0/18",
                "198.18.192.0/18",
                "198.19.0.0/25",
                "198.19.0.128/25"
            ]
        );
        // ovnkube's route via mp0 for the whole CIDR: not replaced, not
        // removed; the halves are added next to it.
        let theirs = kernel_route("198.18.128.0/17", None, MP0, 3, None);
        assert!(!is_broad_mp0(&plan, &theirs, Some(MP0)));
        let puts = route_puts(&plan, std::slice::from_ref(&theirs), GATEWAY, Some(MP0));
        assert!(
            puts.iter().all(|p| matches!(p, RoutePut::Add(_))),
            "{puts:?}"
        );
        assert_eq!(puts.len(), 4);
        // Switching from whole-CIDR routes: ours for the whole CIDR goes
        // only after its halves are in (covered), one outside every CIDR
        // before the SNAT rules change (uncovered).
        let actual = [
            kernel_route(
                "198.18.128.0/17",
                Some("169.254.0.4"),
                GATEWAY,
                240,
                Some(1400),
            ),
            kernel_route(
                "198.20.0.0/16",
                Some("169.254.0.4"),
                GATEWAY,
                240,
                Some(1400),
            ),
            theirs,
        ];
        let stale = stale_routes(&plan, &actual);
        assert_eq!(stale.covered.len(), 1);
        assert_eq!(stale.covered[0].dst.to_string(), "198.18.128.0/17");
        assert_eq!(stale.uncovered.len(), 1);
        assert_eq!(stale.uncovered[0].dst.to_string(), "198.20.0.0/16");
    }
}
