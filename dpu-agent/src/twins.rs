//! Guarding an install against a twin that another controller writes
//! between our read of the bridge and our commit. Pure code.
//!
//! [`crate::coexist`] leaves out every planned flow whose twin (same table,
//! priority and match) it saw on the bridge, since adding it would replace
//! that flow. A twin written after the read would still be replaced, and
//! `OFPFF_CHECK_OVERLAP` does not stop that: Open vSwitch looks for an
//! identical flow first and replaces it, and only checks for overlaps when
//! there is none (measured on OVS 3.1: an identical flow of another cookie
//! added with `check_overlap` is replaced without an error).
//!
//! So each install's bundle, after deleting our own flows, adds probes
//! with `check_overlap` and no actions, under a cookie of their own, each
//! with a `metadata` value of its own (probes never overlap each other). A
//! probe is never identical to a twin, so OVS checks it for overlaps, and a
//! twin overlaps it: the probe is refused (`OFPFMFC_OVERLAP`), the atomic
//! bundle with it, and nothing is replaced. Otherwise our flows are added
//! and one delete removes the probes before the commit: no packet ever
//! sees one. Where the last read showed no other controller's flow at one
//! of our (table, priority) places (our path flows next to ovnkube-node),
//! one probe matching only `metadata` guards the whole place: any flow
//! written there since overlaps it. Where others have flows at the place,
//! each of our flows there gets a probe: our match narrowed by `metadata`.
//! A flow that merely overlaps one of ours at the same priority (not a
//! twin) refuses that probe too; once a fresh read shows it is no twin,
//! our flow goes unprobed (see [`TwinChecks`]). The cost is a few messages
//! per install where nobody shares our places, one per flow where they do.

use crate::coexist::ForeignFlow;
use crate::flows::{Flow, MatchKey};
use std::collections::{BTreeMap, BTreeSet};

/// The high half of every probe's `metadata` ("prob"); the low half is the
/// probe's index in the install.
pub const PROBE_TAG: u64 = 0x7072_6f62_0000_0000;
/// The part of `metadata` that marks a probe.
pub const PROBE_MASK: u64 = 0xffff_ffff_0000_0000;

/// The cookie of the probes of an install with `cookie`: never ours, and
/// the delete that removes them also matches [`PROBE_TAG`], so no other
/// controller's flow is removed even if it carried this cookie.
pub fn probe_cookie(cookie: u64) -> u64 {
    cookie ^ PROBE_TAG
}

/// The `metadata` of the probe at `index`.
pub fn probe_metadata(index: usize) -> u64 {
    PROBE_TAG | (index as u64 & !PROBE_MASK)
}

/// The index of the probe with `metadata`.
pub fn probed_index(metadata: u64) -> Option<usize> {
    (metadata & PROBE_MASK == PROBE_TAG).then_some((metadata & !PROBE_MASK) as usize)
}

/// One probe of an install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Any flow at this table and priority (nobody else's was there).
    Place { table: u8, priority: u16 },
    /// The twin (or an overlap) of the planned flow at this index.
    Flow(usize),
}

/// What a refused probe found, for the error and the next round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contested {
    Place { table: u8, priority: u16 },
    Flow(Flow),
}

impl Contested {
    /// What `probe` guarded in `flows`.
    pub fn of(probe: Probe, flows: &[Flow]) -> Option<Self> {
        Some(match probe {
            Probe::Place { table, priority } => Contested::Place { table, priority },
            Probe::Flow(index) => Contested::Flow(flows.get(index)?.clone()),
        })
    }

    /// Ours, as the error names it.
    pub fn describe(&self, cookie: u64) -> String {
        match self {
            Contested::Place { table, priority } => {
                format!("a new flow at table {table}, priority {priority}, where ours are")
            }
            Contested::Flow(flow) => format!("ours: {}", flow.render(cookie)),
        }
    }
}

/// Which probes an install carries: it knows where other controllers had
/// flows at the last read, and which of our flows go unprobed (their probe
/// was refused while a fresh read showed no twin: a flow overlapping ours
/// at the same priority, which adding ours does not replace).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TwinChecks {
    /// Others' flows at each (table, priority) place, at the last read.
    shared_places: BTreeMap<(u8, u16), Vec<MatchKey>>,
    unprobed: BTreeSet<MatchKey>,
}

impl TwinChecks {
    /// Whether `flow` gets a probe of its own where its place is shared.
    pub fn probes(&self, flow: &Flow) -> bool {
        !self.unprobed.contains(&flow.match_key())
    }

    /// Where other controllers' flows were at the last read.
    pub fn read(&mut self, foreign: &[ForeignFlow]) {
        self.shared_places.clear();
        for flow in foreign {
            self.shared_places
                .entry((flow.key.table, flow.key.priority))
                .or_default()
                .push(flow.key.clone());
        }
    }

    /// The probes of an install of `flows`, in order: one per unshared
    /// place; at a shared place, one per probed flow that none of the
    /// others' flows there already overlaps (its probe would be refused
    /// by that flow, not by a twin).
    pub fn plan(&self, flows: &[Flow]) -> Vec<Probe> {
        let mut probes = Vec::new();
        let mut places = BTreeSet::new();
        for (index, flow) in flows.iter().enumerate() {
            let place = (flow.table, flow.priority);
            match self.shared_places.get(&place) {
                None => {
                    if places.insert(place) {
                        probes.push(Probe::Place {
                            table: flow.table,
                            priority: flow.priority,
                        });
                    }
                }
                Some(others) => {
                    let key = flow.match_key();
                    if self.probes(flow) && !others.iter().any(|o| may_overlap(&key, o)) {
                        probes.push(Probe::Flow(index));
                    }
                }
            }
        }
        probes
    }

    /// After a refused probe of `contested` and a fresh read: if the
    /// placement still installs it (the read showed no twin), its probe
    /// stops, or every install would be refused again. Keys no longer
    /// installed are forgotten. Returns whether `contested` was unprobed.
    pub fn settle(&mut self, contested: Option<&MatchKey>, install: &[Flow]) -> bool {
        let planned: BTreeSet<MatchKey> = install.iter().map(Flow::match_key).collect();
        self.unprobed.retain(|key| planned.contains(key));
        match contested {
            Some(key) if planned.contains(key) => self.unprobed.insert(key.clone()),
            _ => false,
        }
    }

    /// Planned flows installed without a probe (for the log).
    pub fn unprobed(&self) -> usize {
        self.unprobed.len()
    }
}

/// Whether a packet could match both keys, as far as their fields tell:
/// fields only one of them has do not separate them, nor do forms this
/// does not read (a masked value, a port by name). A wrong "yes" leaves a
/// flow of ours unprobed; a wrong "no" costs one refused install.
pub fn may_overlap(ours: &MatchKey, theirs: &MatchKey) -> bool {
    if let (Some(a), Some(b)) = (ethertype(ours.fields()), ethertype(theirs.fields()))
        && a != b
    {
        return false;
    }
    let values = |key: &MatchKey| -> Vec<(String, String)> {
        key.fields()
            .iter()
            .filter_map(|f| f.split_once('='))
            .map(|(n, v)| (n.to_string(), v.to_ascii_lowercase()))
            .collect()
    };
    let theirs = values(theirs);
    !values(ours).iter().any(|(name, a)| {
        theirs
            .iter()
            .any(|(other, b)| other == name && disjoint(name, a, b))
    })
}

/// The Ethernet type a flow's keywords (`ip`, `tcp6`, `arp`...) or its
/// `dl_type` imply.
fn ethertype(fields: &[String]) -> Option<u16> {
    fields.iter().find_map(|f| match f.as_str() {
        "ip" | "tcp" | "udp" | "icmp" | "sctp" | "igmp" => Some(0x0800),
        "ipv6" | "tcp6" | "udp6" | "icmp6" | "sctp6" => Some(0x86dd),
        "arp" => Some(0x0806),
        "rarp" => Some(0x8035),
        _ => {
            let value = f.strip_prefix("dl_type=").or(f.strip_prefix("eth_type="))?;
            u16::from_str_radix(value.trim_start_matches("0x"), 16).ok()
        }
    })
}

/// Whether two values of field `name` exclude each other.
fn disjoint(name: &str, a: &str, b: &str) -> bool {
    match name {
        "nw_src" | "nw_dst" | "ipv6_src" | "ipv6_dst" | "ip_src" | "ip_dst" => {
            match (prefix(a), prefix(b)) {
                (Some(a), Some(b)) => !a.contains(&b.network()) && !b.contains(&a.network()),
                _ => false,
            }
        }
        "ct_state" => {
            let theirs = ct_flags(b);
            ct_flags(a)
                .iter()
                .any(|(set, flag)| theirs.iter().any(|(s, f)| f == flag && s != set))
        }
        "in_port" => matches!((a.parse::<u32>(), b.parse::<u32>()), (Ok(x), Ok(y)) if x != y),
        _ if a.contains('/') || b.contains('/') => false,
        _ => a != b,
    }
}

/// `+est-rel` as [('+', "est"), ('-', "rel")]; nothing for other forms.
fn ct_flags(value: &str) -> Vec<(char, &str)> {
    let mut flags = Vec::new();
    let mut rest = value;
    while let Some(sign @ ('+' | '-')) = rest.chars().next() {
        let body = &rest[1..];
        let end = body.find(['+', '-']).unwrap_or(body.len());
        flags.push((sign, &body[..end]));
        rest = &body[end..];
    }
    flags
}

/// An address or prefix (a bare address is a host prefix).
fn prefix(value: &str) -> Option<ipnet::IpNet> {
    value.parse().ok().or_else(|| {
        let address: std::net::IpAddr = value.parse().ok()?;
        Some(ipnet::IpNet::from(address))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::FlowRole;

    fn flow(table: u8, priority: u16, matches: &str) -> Flow {
        Flow {
            table,
            priority,
            role: FlowRole::HostToOvn,
            cidr: None,
            matches: matches.into(),
            actions: "goto_table:2".into(),
        }
    }

    /// Another controller's flow at a place that overlaps none of ours.
    fn foreign(table: u8, priority: u16) -> ForeignFlow {
        ForeignFlow::parse(&format!(
            "cookie=0x7, table={table}, priority={priority},arp actions=drop"
        ))
        .expect("dump line")
    }

    #[test]
    fn probe_metadata_names_its_probe_and_nothing_else() {
        assert_eq!(probed_index(probe_metadata(0)), Some(0));
        assert_eq!(probed_index(probe_metadata(4095)), Some(4095));
        assert_eq!(probed_index(0), None);
        assert_eq!(probed_index(0x1234), None);
        assert_ne!(probe_cookie(0x6e6f_7672), 0x6e6f_7672);
    }

    #[test]
    fn an_unshared_place_gets_one_probe_a_shared_one_a_probe_per_flow() {
        let flows = [
            flow(0, 510, "ip,in_port=1"),
            flow(0, 510, "ip,in_port=2"),
            flow(1, 100, "ip,ct_mark=0x1"),
            flow(1, 100, "ip,ct_mark=0x3"),
        ];
        let mut checks = TwinChecks::default();
        checks.read(&[foreign(1, 100), foreign(0, 500)]);
        assert_eq!(
            checks.plan(&flows),
            [
                Probe::Place {
                    table: 0,
                    priority: 510
                },
                Probe::Flow(2),
                Probe::Flow(3),
            ]
        );
        // Nobody else anywhere: one probe per place.
        checks.read(&[]);
        assert_eq!(checks.plan(&flows).len(), 2);
    }

    #[test]
    fn overlap_is_told_from_the_fields_both_have() {
        let key = |m: &str| MatchKey::new(0, 510, m);
        let ours = key("ip,in_port=1,nw_src=169.254.0.2,nw_dst=198.18.128.0/17");
        for theirs in [
            "ip",
            "in_port=1",
            "tcp,nw_dst=198.18.200.0/24",
            "ip,nw_src=169.254.0.0/16",
            "ip,in_port=pf0hpf",
            "ip,ct_mark=0x2",
            "ip,dl_src=02:00:00:00:00:01",
        ] {
            assert!(may_overlap(&ours, &key(theirs)), "{theirs}");
        }
        for theirs in [
            "ipv6",
            "arp",
            "ip,in_port=2",
            "ip,nw_dst=198.18.0.0/17",
            "ip,nw_src=169.254.0.3",
            "dl_type=0x86dd",
        ] {
            assert!(!may_overlap(&ours, &key(theirs)), "{theirs}");
        }
        let est = key("ip,ct_state=+est+trk,ct_mark=0x1");
        assert!(may_overlap(&est, &key("ip,ct_state=+rel+trk")));
        assert!(!may_overlap(&est, &key("ip,ct_state=-est")));
        assert!(!may_overlap(&est, &key("ip,ct_mark=0x2")));
        assert!(may_overlap(&est, &key("ip,ct_mark=0x1/0x1")));
    }

    #[test]
    fn a_neighbour_that_overlaps_ours_leaves_it_unprobed_from_the_start() {
        let flows = [flow(0, 510, "ip,in_port=1"), flow(0, 510, "ip,in_port=2")];
        let mut checks = TwinChecks::default();
        checks.read(&[
            ForeignFlow::parse("cookie=0x7, priority=510,ip,in_port=2 actions=drop")
                .expect("dump line"),
        ]);
        assert_eq!(checks.plan(&flows), [Probe::Flow(0)]);
    }

    #[test]
    fn a_contested_flow_still_placed_goes_unprobed_and_is_forgotten_when_unplanned() {
        let a = flow(1, 100, "ip,in_port=1");
        let b = flow(1, 100, "ip,in_port=2");
        let mut checks = TwinChecks::default();
        checks.read(&[foreign(1, 100)]);
        assert_eq!(checks.plan(&[a.clone(), b.clone()]).len(), 2);
        // A twin was found on the fresh read: the placement left `a` out.
        assert!(!checks.settle(Some(&a.match_key()), std::slice::from_ref(&b)));
        assert!(checks.probes(&a));
        // No twin: `a` is still placed, its probe stops; `b` keeps its own.
        assert!(checks.settle(Some(&a.match_key()), &[a.clone(), b.clone()]));
        assert_eq!(checks.plan(&[a.clone(), b.clone()]), [Probe::Flow(1)]);
        assert_eq!(checks.unprobed(), 1);
        // A plan without `a` forgets it.
        checks.settle(None, std::slice::from_ref(&b));
        assert_eq!(checks.unprobed(), 0);
    }
}
