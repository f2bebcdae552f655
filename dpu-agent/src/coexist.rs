//! Sharing the bridge with other controllers (ovnkube-node rewrites the
//! whole bridge with its own flows): which planned flows we install, given
//! the flows others have. Pure code.
//!
//! In OpenFlow, adding a flow with the same table, priority and match as an
//! existing one replaces it, cookie included: installing such a flow would
//! seize the other controller's flow, and our next cookie-scoped delete
//! would remove it. So a planned flow with a foreign twin is never
//! installed: when the twin's actions are equivalent, it already does the
//! job ("provided"); when they differ, that is a conflict, reported with
//! both flows.

use crate::flows::{BasePipeline, Flow, MatchKey};
use noverlay_openflow::dump::{dumped_cookie, without_counters};

/// A flow on the bridge that carries another cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignFlow {
    pub cookie: u64,
    pub key: MatchKey,
    /// Actions, normalised (see [`normalize_actions`]).
    pub actions: String,
    /// As dumped, without counters.
    pub text: String,
}

impl ForeignFlow {
    /// From a dump line; None for unparsable lines.
    pub fn parse(dumped: &str) -> Option<Self> {
        let cookie = dumped_cookie(dumped)?;
        let (key, _) = MatchKey::dumped(dumped);
        let actions = dumped.split_once(" actions=")?.1;
        Some(ForeignFlow {
            cookie,
            key,
            actions: normalize_actions(actions),
            text: without_counters(dumped),
        })
    }
}

/// Action lists compared as OVS means them: `output:NORMAL` is `NORMAL`,
/// the arguments of `ct(...)` are a set (OVS prints them in its own
/// order), and an IPv6 address in `nat(...)` is the same with or without
/// the brackets its parser needs (its dump leaves them out). The order of
/// the actions themselves is kept.
pub fn normalize_actions(actions: &str) -> String {
    split_top_level(actions.trim())
        .into_iter()
        .map(|action| {
            if action == "output:NORMAL" {
                "NORMAL".to_string()
            } else if let Some(args) = action.strip_prefix("ct(").and_then(|a| a.strip_suffix(')'))
            {
                let mut args: Vec<String> = split_top_level(args)
                    .into_iter()
                    .map(|arg| {
                        if arg.starts_with("nat(") {
                            arg.replace(['[', ']'], "")
                        } else {
                            arg.to_string()
                        }
                    })
                    .collect();
                args.sort_unstable();
                format!("ct({})", args.join(","))
            } else {
                action.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Splits at commas outside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < text.len() {
        parts.push(&text[start..]);
    }
    parts
}

/// A planned flow left out because another controller has its twin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shared {
    /// Our flow, as we would have written it.
    pub ours: String,
    /// Theirs, as dumped.
    pub theirs: String,
    pub their_cookie: u64,
}

impl std::fmt::Display for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ours {{{}}} vs cookie {:#x}'s {{{}}}",
            self.ours, self.their_cookie, self.theirs
        )
    }
}

/// What goes on the bridge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// Our flows to install.
    pub install: Vec<Flow>,
    /// Planned flows another controller's flow already does.
    pub provided: Vec<Shared>,
    /// Planned flows whose twin does something else: not installed.
    pub conflicts: Vec<Shared>,
    /// Planned flows left out because the other flow of their lookup/path
    /// pair conflicts (rendered): both or neither.
    pub withheld: Vec<String>,
    /// Foreign flows in our tables or registers (see [`trespassing`]).
    pub trespassing: Vec<String>,
}

/// Places `plan` next to `foreign` (flows of every other cookie).
pub fn place(plan: &[Flow], foreign: &[ForeignFlow], mode: BasePipeline, cookie: u64) -> Placement {
    let mut placement = Placement::default();
    // The partners of conflicting flows, by role and family.
    let mut broken = Vec::new();
    for flow in plan {
        let key = flow.match_key();
        let shared = |theirs: &ForeignFlow| Shared {
            ours: flow.render(cookie),
            theirs: theirs.text.clone(),
            their_cookie: theirs.cookie,
        };
        if let Some(twin) = foreign.iter().find(|f| f.key == key) {
            if twin.actions == normalize_actions(&flow.actions) {
                placement.provided.push(shared(twin));
            } else {
                placement.conflicts.push(shared(twin));
                if let Some(partner) = flow.role.partner() {
                    broken.push((partner, flow.family_name()));
                }
            }
        } else if let Some(provider) = foreign
            .iter()
            .find(|f| mode == BasePipeline::Auto && flow.role.is_base() && f.key.same_match(&key))
        {
            placement.provided.push(shared(provider));
        } else {
            placement.install.push(flow.clone());
        }
    }
    // Half a pair would look traffic up and drop it: neither goes in.
    let (withheld, install): (Vec<Flow>, Vec<Flow>) = std::mem::take(&mut placement.install)
        .into_iter()
        .partition(|f| broken.contains(&(f.role, f.family_name())));
    placement.install = install;
    placement.withheld = withheld.iter().map(|f| f.render(cookie)).collect();
    placement.trespassing = trespassing(foreign);
    placement
}

/// Foreign flows in what the design keeps ours alone: our tables (the
/// CIDR table and the related table), and registers reg11-reg15 (or the
/// wider registers holding them: xreg5-xreg7, xxreg2-xxreg3), matched or
/// written (`set_field`, `move`, `load`, `pop`, nested ones included). One
/// line each, as dumped. Actions the decoder shows only by number
/// (`nx_action(N)`) cannot be told apart.
pub fn trespassing(foreign: &[ForeignFlow]) -> Vec<String> {
    const OURS: [&str; 15] = [
        "reg11",
        "reg12",
        "reg13",
        "reg14",
        "reg15",
        "xreg5",
        "xreg6",
        "xreg7",
        "xxreg2",
        "xxreg3",
        "NXM_NX_REG11",
        "NXM_NX_REG12",
        "NXM_NX_REG13",
        "NXM_NX_REG14",
        "NXM_NX_REG15",
    ];
    // A field name, without a bit range (`[0..15]`) or a value.
    let ours = |field: &str| {
        let name = field
            .split(['[', '=', ',', ')', ' '])
            .next()
            .unwrap_or(field);
        OURS.contains(&name)
    };
    let ours_in_actions = |actions: &str| {
        ["->", "pop:"]
            .iter()
            .any(|mark| actions.split(mark).skip(1).any(&ours))
    };
    foreign
        .iter()
        .filter(|f| {
            f.key.table == crate::flows::CIDR_TABLE
                || f.key.table == crate::flows::RELATED_TABLE
                || f.key.fields().iter().any(|field| ours(field))
                || ours_in_actions(&f.actions)
        })
        .map(|f| f.text.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::{FlowRole, FlowSettings, PortMap, plan_flows, test_offer};
    use noverlay_openflow::decode;

    const COOKIE: u64 = 0x6e6f7672;
    /// Port numbers and MAC of the ovnkube flow set below.
    const PORTS: PortMap = PortMap {
        host_representor: 1,
        patch: 3,
        uplink: 2,
        bridge_mac: [0x02, 0x00, 0xc6, 0x12, 0x01, 0x02],
    };

    /// Our flows for the one CIDR below, base pipeline aside: a lookup and
    /// a path flow per direction in table 0, the CIDR's flow and the miss
    /// in our CIDR table; from the underlay, one flow per ICMPv4 error type
    /// and one for fragments, the first hop's two, and our related table's
    /// three.
    const PATH_FLOWS: usize = 8 + 4 + 3 + 2;

    fn plan(mode: BasePipeline) -> Vec<Flow> {
        plan_flows(
            &test_offer(&["198.18.128.0/17"], "198.18.1.2"),
            &PORTS,
            &FlowSettings {
                cookie: COOKIE,
                base_pipeline: mode,
                ct_zone: 64000,
            },
        )
    }

    /// Some of ovnkube's breth0 flows as `ovs-ofctl dump-flows` prints them.
    fn ovnkube() -> Vec<ForeignFlow> {
        [
            "cookie=0xdeff105, duration=5.1s, table=0, n_packets=0, n_bytes=0, priority=50,ip,dl_dst=02:00:c6:12:01:02 actions=ct(table=1,zone=64000,nat)",
            "cookie=0xdeff105, duration=5.1s, table=0, n_packets=0, n_bytes=0, priority=100,ip,in_port=1 actions=ct(commit,zone=64000,exec(set_field:0x2->ct_mark)),output:2",
            "cookie=0xdeff105, duration=5.1s, table=1, n_packets=0, n_bytes=0, priority=100,ct_state=+est+trk,ct_mark=0x1,ip actions=output:3",
            "cookie=0xdeff105, duration=5.1s, table=1, n_packets=0, n_bytes=0, priority=100,ct_state=+rel+trk,ct_mark=0x1,ip actions=output:3",
            "cookie=0xdeff105, duration=5.1s, table=1, n_packets=0, n_bytes=0, priority=0 actions=NORMAL",
            "cookie=0xdeff105, duration=5.1s, table=2, n_packets=0, n_bytes=0, priority=100 actions=set_field:02:00:c6:12:01:02->eth_dst,output:3",
            "cookie=0xdeff105, duration=5.1s, table=3, n_packets=0, n_bytes=0 actions=move:NXM_OF_ETH_DST[]->NXM_OF_ETH_SRC[],set_field:02:00:c6:12:01:02->eth_dst,output:1",
        ]
        .iter()
        .filter_map(|line| ForeignFlow::parse(line))
        .collect()
    }

    #[test]
    fn next_to_ovnkube_auto_installs_only_the_path_flows_and_seizes_nothing() {
        let placement = place(
            &plan(BasePipeline::Auto),
            &ovnkube(),
            BasePipeline::Auto,
            COOKIE,
        );
        assert!(placement.conflicts.is_empty(), "{:?}", placement.conflicts);
        assert_eq!(
            placement.install.len(),
            PATH_FLOWS,
            "{:?}",
            placement.install
        );
        assert!(placement.install.iter().all(|f| !f.role.is_base()));
        // All six base flows are provided by ovnkube (table 3 at another priority).
        assert_eq!(placement.provided.len(), 6);
        assert!(
            placement
                .provided
                .iter()
                .all(|p| p.their_cookie == 0xdeff105)
        );
    }

    #[test]
    fn on_never_installs_over_a_twin_and_names_a_conflict() {
        let mut foreign = ovnkube();
        // Someone's table-2 flow with our match but other actions.
        foreign.retain(|f| f.key.table != 2);
        foreign.extend(ForeignFlow::parse(
            "cookie=0x99, duration=1s, table=2, n_packets=0, n_bytes=0, priority=100 actions=drop",
        ));
        let placement = place(&plan(BasePipeline::On), &foreign, BasePipeline::On, COOKIE);
        let installed: Vec<&Flow> = placement.install.iter().collect();
        // Path flows plus table 3 (theirs is at another priority: no twin).
        assert_eq!(installed.len(), PATH_FLOWS + 1, "{installed:?}");
        assert_eq!(placement.provided.len(), 4);
        assert_eq!(placement.conflicts.len(), 1);
        let conflict = placement.conflicts[0].to_string();
        assert!(
            conflict.contains("table=2,priority=100")
                && conflict.contains("cookie 0x99")
                && conflict.contains("actions=drop"),
            "{conflict}"
        );
    }

    #[test]
    fn a_conflict_on_one_flow_of_a_pair_leaves_the_other_out_too() {
        let plan = plan(BasePipeline::Off);
        for role in [FlowRole::HostToOvnLookup, FlowRole::OvnToUplink] {
            let ours = plan
                .iter()
                .find(|f| f.role == role)
                .expect("a flow of the role");
            // Another controller's flow at its key with other actions.
            let twin = ForeignFlow::parse(&format!(
                "cookie=0x99, duration=1s, table={}, n_packets=0, n_bytes=0, priority={},{} actions=drop",
                ours.table, ours.priority, ours.matches
            ))
            .expect("parsed");
            let placement = place(&plan, &[twin], BasePipeline::Off, COOKIE);
            assert_eq!(placement.conflicts.len(), 1);
            let partner = role.partner().expect("a pair");
            assert!(
                !placement
                    .install
                    .iter()
                    .any(|f| f.role == role || f.role == partner),
                "{role:?}: half a pair installed"
            );
            assert_eq!(placement.withheld.len(), 1, "{:?}", placement.withheld);
            assert_eq!(placement.install.len(), PATH_FLOWS - 2);
        }
    }

    #[test]
    fn foreign_flows_in_our_tables_or_registers_are_named() {
        let lines = [
            // Ours alone: our CIDR table, our registers matched or set.
            "cookie=0x99, duration=1s, table=100, n_packets=0, n_bytes=0, priority=200,ip actions=drop",
            "cookie=0x99, duration=1s, table=0, n_packets=0, n_bytes=0, priority=600,reg11=0x2,ip actions=drop",
            "cookie=0x99, duration=1s, table=0, n_packets=0, n_bytes=0, priority=600,ip actions=set_field:0x1->reg13,NORMAL",
            "cookie=0x99, duration=1s, table=0, n_packets=0, n_bytes=0, priority=600,ip actions=move:NXM_OF_IP_DST[]->NXM_NX_REG12[],NORMAL",
            // Nested, popped, or a wider register holding ours.
            "cookie=0x99, duration=1s, table=0, n_packets=0, n_bytes=0, priority=600,ip actions=ct(commit,exec(set_field:0x1->reg14)),NORMAL",
            "cookie=0x99, duration=1s, table=0, n_packets=0, n_bytes=0, priority=600,ip actions=pop:NXM_NX_REG15[],NORMAL",
            "cookie=0x99, duration=1s, table=0, n_packets=0, n_bytes=0, priority=600,xxreg3=0x1,ip actions=NORMAL",
            // Not ours: reg1 and reg10, another table.
            "cookie=0x99, duration=1s, table=0, n_packets=0, n_bytes=0, priority=600,reg1=0x2,ip actions=set_field:0x1->reg10,NORMAL",
            "cookie=0x99, duration=1s, table=10, n_packets=0, n_bytes=0, priority=1 actions=NORMAL",
        ];
        let foreign: Vec<ForeignFlow> =
            lines.iter().filter_map(|l| ForeignFlow::parse(l)).collect();
        assert_eq!(foreign.len(), lines.len());
        let named = trespassing(&foreign);
        assert_eq!(named.len(), 7, "{named:#?}");
        assert!(trespassing(&ovnkube()).is_empty());
    }

    #[test]
    fn standalone_everything_is_installed() {
        for mode in [BasePipeline::Auto, BasePipeline::On] {
            let plan = plan(mode);
            let placement = place(&plan, &[], mode, COOKIE);
            assert_eq!(placement.install, plan);
        }
        assert_eq!(plan(BasePipeline::Off).len(), PATH_FLOWS);
    }

    #[test]
    fn actions_compare_as_ovs_means_them() {
        assert_eq!(
            normalize_actions("ct(zone=64000,nat,table=1)"),
            normalize_actions("ct(table=1,zone=64000,nat)")
        );
        assert_eq!(
            normalize_actions("output:NORMAL"),
            normalize_actions("NORMAL")
        );
        assert_ne!(
            normalize_actions("output:1,output:2"),
            normalize_actions("output:2,output:1")
        );
        // Our plan's IPv6 NAT as we write it and as ovs-ofctl dumps it.
        assert_eq!(
            normalize_actions(
                "ct(commit,zone=64000,nat(src=[2001:db8::10]),exec(set_field:0x1->ct_mark)),output:3"
            ),
            normalize_actions(
                "ct(commit,zone=64000,nat(src=2001:db8::10),exec(set_field:0x1->ct_mark)),output:3"
            )
        );
        assert_ne!(
            normalize_actions("ct(commit,nat(src=2001:db8::10))"),
            normalize_actions("ct(commit,nat(src=2001:db8::11))")
        );
        assert_eq!(
            dumped_cookie("cookie=0xdeff105, duration=1s, table=0"),
            Some(0xdeff105)
        );
    }

    /// Our own flows survive encode + decode as the planner wrote them
    /// (up to field order, which comparisons ignore).
    #[test]
    fn our_flows_decode_to_their_own_text() {
        for (matches, actions) in [
            (
                "in_port=2,dl_src=02:00:c6:12:00:0a,ip,nw_src=169.254.0.2,nw_dst=198.18.128.0/17",
                "ct(commit,zone=64000,nat(src=198.18.0.10),exec(set_field:0x1->ct_mark)),output:3",
            ),
            (
                "in_port=2,ipv6,ipv6_src=fd00:10:244::/48,ipv6_dst=fd69::2",
                "goto_table:3",
            ),
            ("ip,dl_dst=02:00:c6:12:00:0a", "ct(zone=64000,nat,table=1)"),
            ("ip,ct_state=+trk+est,ct_mark=0x1", "output:2"),
            ("", "NORMAL"),
            (
                "",
                "move:NXM_OF_ETH_DST[]->NXM_OF_ETH_SRC[],set_field:02:00:c6:12:00:0a->eth_dst,output:1",
            ),
            (
                "in_port=2,dl_src=02:00:c6:12:00:0a,ipv6,ipv6_src=fd69::2,ipv6_dst=fd00:10:244::/48",
                "ct(commit,zone=64000,nat(src=[2001:db8::10]),exec(set_field:0x1->ct_mark)),output:3",
            ),
        ] {
            let spec =
                noverlay_openflow::spec::FlowSpec::parse(1, 0, 10, matches, actions).expect("spec");
            let encoded = noverlay_openflow::wire::flow_add(1, &spec, 0);
            let (fields, instructions) =
                noverlay_openflow::wire::flow_mod_match_and_instructions(&encoded).expect("parts");
            let key = |text: &str| MatchKey::new(0, 10, text);
            assert_eq!(key(&decode::match_text(&fields)), key(matches), "{matches}");
            assert_eq!(
                normalize_actions(&decode::instructions_text(&instructions)),
                normalize_actions(actions),
                "{actions}"
            );
        }
    }
}
