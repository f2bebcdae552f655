//! The uplink guard: an nftables table of family netdev with an egress
//! chain on the DPU's uplink that drops every packet to or from a
//! masquerade subnet: no such packet belongs on the underlay. One with a
//! masquerade source is host traffic that left without its SNAT, one with a
//! masquerade destination a reply to the host that OVN handed back and
//! NORMAL flooded: both happen while another controller (ovnkube-node) has
//! just rewritten the bridge and our flows are not back yet. They are
//! counted apart. OpenFlow
//! rewrites cannot touch the guard; it lives below OVS, in the kernel's
//! transmit path of the uplink device.
//!
//! - The plan (pure, here): the offer's masquerade subnets and the uplink
//!   -> the table, rendered in nft syntax; what the kernel has is decoded
//!   back into the same syntax and compared ([`GuardPlan::is_met_by`]).
//! - The transaction that writes it: [`rules`].
//! - The loop that keeps it converged: [`run`], reporting to the agent's
//!   state through [`GuardHub`].
//!
//! Needs the netdev egress hook (Linux >= 5.16 with
//! CONFIG_NETFILTER_EGRESS). Flows offloaded to NIC hardware never reach
//! the DPU kernel and bypass it.

pub mod rules;
pub mod run;

use ipnet::IpNet;
use noverlay_nft::{
    TableDump, TableId,
    describe::{self, Expr, ItemKind},
    nftnl::{ProtoFamily, nftnl_sys::libc},
};
use noverlay_proto::{contract::Offer, pb};
use std::{ffi::CStr, fmt::Write as _};
use tokio::sync::watch;

/// Where the guard's loop reads what to guard and reports what it did: the
/// agent's state hub.
pub trait GuardHub: Clone + Send + Sync + 'static {
    /// The offer in force (its masquerade subnets), followed.
    fn offers(&self) -> watch::Receiver<Offer>;
    /// The uplink's name once known (configured, or found in OVSDB).
    fn uplinks(&self) -> watch::Receiver<Option<String>>;
    /// Changes the guard's record (status and metrics read it).
    fn update(&self, change: impl FnOnce(&mut GuardRecord));
    /// The guard's outcome: its source in status.
    fn report(&self, outcome: Result<(), String>);
    /// The error last reported, if the last outcome was one.
    fn reported_error(&self) -> Option<String>;
}

/// Where the uplink guard stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GuardState {
    #[default]
    Pending,
    On,
    /// Disabled in the config.
    Off,
    /// The kernel has no netdev egress hook.
    Unsupported,
    Failed,
}

impl GuardState {
    pub fn name(self) -> &'static str {
        match self {
            GuardState::Pending => "pending",
            GuardState::On => "on",
            GuardState::Off => "off",
            GuardState::Unsupported => "unsupported",
            GuardState::Failed => "failed",
        }
    }
}

/// The uplink guard as last read from the kernel.
#[derive(Debug, Clone, Default)]
pub struct GuardRecord {
    pub state: GuardState,
    pub device: String,
    pub subnets: Vec<String>,
    /// In `nft list table` syntax, counters included.
    pub ruleset: String,
    /// The guard's counters of masquerade sources as last read.
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
    /// Every masquerade-sourced drop seen since start, across rewrites (for
    /// metrics).
    pub dropped_packets_total: u64,
    /// The same for masquerade destinations.
    pub to_masquerade_packets: u64,
    pub to_masquerade_bytes: u64,
    pub to_masquerade_packets_total: u64,
    pub repairs: u64,
    pub last_repair_unix: i64,
}

impl GuardRecord {
    pub fn to_pb(&self) -> pb::UplinkGuard {
        pb::UplinkGuard {
            state: self.state.name().into(),
            device: self.device.clone(),
            subnets: self.subnets.clone(),
            dropped_packets: self.dropped_packets,
            dropped_bytes: self.dropped_bytes,
            repairs: self.repairs,
            last_repair_unix: self.last_repair_unix,
            ruleset: self.ruleset.clone(),
            dropped_to_masquerade_packets: self.to_masquerade_packets,
            dropped_to_masquerade_bytes: self.to_masquerade_bytes,
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Our table (family netdev), its chain and the comment that marks it ours.
pub const GUARD_TABLE: &str = "noverlay_guard";
pub const GUARD_CHAIN: &str = "uplink_egress";
pub const GUARD_MARK: &str = "owned by noverlay dpu-agent";

/// The guard's table, as nftables addresses it.
pub fn table_id() -> TableId {
    TableId::new(ProtoFamily::NetDev, GUARD_TABLE)
}

/// What the guard must be: two drop rules per masquerade subnet (as source,
/// as destination), on the egress of the uplink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardPlan {
    pub uplink: String,
    pub subnets: Vec<IpNet>,
}

impl GuardPlan {
    pub fn new(offer: &Offer, uplink: &str) -> Self {
        GuardPlan {
            uplink: uplink.to_string(),
            subnets: offer
                .families
                .iter()
                .map(|family| family.masquerade.subnet)
                .collect(),
        }
    }

    /// The table in `nft list table` syntax, counters at zero.
    pub fn render(&self) -> String {
        let mut out = format!(
            "table netdev {GUARD_TABLE} {{\n\tcomment \"{GUARD_MARK}\"\n\tchain {GUARD_CHAIN} {{\n\t\ttype filter hook egress device \"{}\" priority filter; policy accept;\n",
            self.uplink
        );
        for subnet in &self.subnets {
            for field in Field::BOTH {
                let _ = writeln!(
                    out,
                    "\t\t{} {} {subnet} counter packets 0 bytes 0 drop",
                    family_keyword(subnet),
                    field.keyword()
                );
            }
        }
        out.push_str("\t}\n}\n");
        out
    }

    /// True when the table the kernel has is this plan (counters aside).
    pub fn is_met_by(&self, observed: &Observed) -> bool {
        without_counters(&observed.text) == without_counters(&self.render())
    }
}

/// Which address of a packet a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Source,
    Destination,
}

impl Field {
    pub const BOTH: [Field; 2] = [Field::Source, Field::Destination];

    fn keyword(self) -> &'static str {
        match self {
            Field::Source => "saddr",
            Field::Destination => "daddr",
        }
    }

    /// (offset, length) of the address in the network header.
    fn place(self, ipv6: bool) -> (u32, u32) {
        match (self, ipv6) {
            (Field::Source, false) => (12, 4),
            (Field::Destination, false) => (16, 4),
            (Field::Source, true) => (8, 16),
            (Field::Destination, true) => (24, 16),
        }
    }
}

fn family_keyword(subnet: &IpNet) -> &'static str {
    match subnet {
        IpNet::V4(_) => "ip",
        IpNet::V6(_) => "ip6",
    }
}

/// The guard's table as the kernel has it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observed {
    /// In `nft list table` syntax, counters included.
    pub text: String,
    /// Masquerade-sourced packets and bytes dropped, summed over our rules.
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
    /// Masquerade-destined ones.
    pub to_masquerade_packets: u64,
    pub to_masquerade_bytes: u64,
}

/// Decodes a table read from the kernel (None: absent).
pub fn observe(dump: Option<&TableDump>) -> Observed {
    let Some(dump) = dump else {
        return Observed::default();
    };
    let mut observed = Observed::default();
    for item in &dump.items {
        if let ItemKind::Rule { expressions, .. } = &item.kind
            && let Some((field, _)) = parse_rule(expressions)
            && let Some((p, b)) = counter(expressions)
        {
            let (packets, bytes) = match field {
                Field::Source => (&mut observed.dropped_packets, &mut observed.dropped_bytes),
                Field::Destination => (
                    &mut observed.to_masquerade_packets,
                    &mut observed.to_masquerade_bytes,
                ),
            };
            *packets += p;
            *bytes += b;
        }
    }
    Observed {
        text: describe::render_table(
            &table_id(),
            dump.comment.as_deref(),
            &dump.items,
            render_rule,
        ),
        ..observed
    }
}

fn counter(expressions: &[Expr]) -> Option<(u64, u64)> {
    expressions.iter().find_map(|e| match e {
        Expr::Counter { packets, bytes } => Some((*packets, *bytes)),
        _ => None,
    })
}

/// Our rule shape in nft syntax; None for anything else:
/// `meta protocol <ip|ip6> <family> <saddr|daddr> <subnet> counter drop`.
pub fn render_rule(expressions: &[Expr]) -> Option<String> {
    parse_rule(expressions).map(|(_, text)| text)
}

/// Our rule shape: which address it matches, and its nft syntax.
fn parse_rule(expressions: &[Expr]) -> Option<(Field, String)> {
    use Expr::*;
    const META_PROTOCOL: u32 = libc::NFT_META_PROTOCOL as u32;
    const EQ: u32 = libc::NFT_CMP_EQ as u32;
    const NETWORK: u32 = libc::NFT_PAYLOAD_NETWORK_HEADER as u32;
    let [
        Meta(META_PROTOCOL),
        Cmp {
            op: EQ,
            data: ethertype,
        },
        Payload {
            base: NETWORK,
            offset,
            len,
        },
        Bitwise { mask, xor },
        Cmp {
            op: EQ,
            data: network,
        },
        Counter { packets, bytes },
        Verdict(libc::NF_DROP),
    ] = expressions
    else {
        return None;
    };
    let (keyword, ipv6) = match ethertype.as_slice() {
        [0x08, 0x00] => ("ip", false),
        [0x86, 0xdd] => ("ip6", true),
        _ => return None,
    };
    let field = Field::BOTH
        .into_iter()
        .find(|f| f.place(ipv6) == (*offset, *len))?;
    if xor.iter().any(|b| *b != 0) {
        return None;
    }
    let prefix = describe::prefix_len(mask)?;
    let network = describe::address(network)?;
    Some((
        field,
        format!(
            "{keyword} {} {network}/{prefix} counter packets {packets} bytes {bytes} drop",
            field.keyword()
        ),
    ))
}

/// The text with every `counter packets N bytes M` at zero.
fn without_counters(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut words = line.split(' ').peekable();
        let mut first = true;
        while let Some(word) = words.next() {
            if !first {
                out.push(' ');
            }
            first = false;
            out.push_str(word);
            if matches!(word, "packets" | "bytes") && words.peek().is_some() {
                words.next();
                out.push_str(" 0");
            }
        }
        out.push('\n');
    }
    out
}

/// The kernel's errno as a name for messages (e.g. "EOPNOTSUPP").
pub(crate) fn errno_text(errno: i32) -> String {
    // SAFETY: strerror returns a valid static or thread-local string.
    let text = unsafe { CStr::from_ptr(libc::strerror(errno)) };
    text.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use noverlay_proto::contract::{FamilyContract, Masquerade, Mode};

    fn test_offer(cidrs: &[&str], underlay_ip: &str) -> Offer {
        Offer::new(
            1,
            Mode::IN_SCOPE,
            vec![FamilyContract {
                masquerade: Masquerade::from_subnet("169.254.0.0/17".parse().expect("net"))
                    .expect("masq"),
                cluster_cidrs: cidrs.iter().map(|c| c.parse().expect("cidr")).collect(),
                underlay_ip: underlay_ip.parse().expect("ip"),
            }],
            1400,
        )
        .expect("offer")
    }

    fn dual_plan() -> GuardPlan {
        GuardPlan {
            uplink: "p0".into(),
            subnets: vec![
                "169.254.0.0/17".parse().expect("net"),
                "fd69::/112".parse().expect("net"),
            ],
        }
    }

    #[test]
    fn the_plan_has_a_drop_rule_per_masquerade_subnet_on_the_uplink() {
        let offer = test_offer(&["198.18.128.0/17"], "198.18.0.10");
        let plan = GuardPlan::new(&offer, "p0");
        assert_eq!(plan.subnets, vec!["169.254.0.0/17".parse().expect("net")]);
        assert_eq!(
            plan.render(),
            "table netdev noverlay_guard {\n\tcomment \"owned by noverlay dpu-agent\"\n\tchain uplink_egress {\n\t\ttype filter hook egress device \"p0\" priority filter; policy accept;\n\t\tip saddr 169.254.0.0/17 counter packets 0 bytes 0 drop\n\t\tip daddr 169.254.0.0/17 counter packets 0 bytes 0 drop\n\t}\n}\n"
        );
    }

    /// The programmed transaction, decoded back from its own messages,
    /// says what the plan says: encoder and decoder cannot drift apart.
    #[test]
    fn the_programmed_guard_decodes_to_the_plan() {
        let plan = dual_plan();
        let transaction = rules::replace(&plan).expect("transaction");
        let dump = TableDump {
            comment: Some(GUARD_MARK.into()),
            items: describe::parse(&transaction.bytes),
        };
        let observed = observe(Some(&dump));
        assert_eq!(observed.text, plan.render());
        assert!(plan.is_met_by(&observed));
        assert_eq!(observed.dropped_packets, 0);
    }

    #[test]
    fn counters_do_not_make_a_difference_but_anything_else_does() {
        let plan = dual_plan();
        let counted = Observed {
            text: plan
                .render()
                .replace("packets 0 bytes 0", "packets 36 bytes 3528"),
            dropped_packets: 72,
            dropped_bytes: 7056,
            to_masquerade_packets: 72,
            to_masquerade_bytes: 7056,
        };
        assert!(plan.is_met_by(&counted));
        let other_uplink = GuardPlan {
            uplink: "p1".into(),
            ..plan.clone()
        };
        assert!(!other_uplink.is_met_by(&counted));
        let one_family = GuardPlan {
            subnets: plan.subnets[..1].to_vec(),
            ..plan.clone()
        };
        assert!(!one_family.is_met_by(&counted));
        assert!(!plan.is_met_by(&Observed::default()), "absent table");
        // The guard an earlier version wrote (sources only, our mark) is
        // not this plan: rewritten on upgrade, not taken for another's.
        let sources_only = Observed {
            text: plan
                .render()
                .lines()
                .filter(|l| !l.contains(" daddr "))
                .map(|l| format!("{l}\n"))
                .collect(),
            ..Observed::default()
        };
        assert!(!plan.is_met_by(&sources_only));
    }

    /// The expressions as libnftnl prints them: what the kernel is given.
    #[test]
    fn the_programmed_expressions_match_golden() {
        let transaction = rules::replace(&dual_plan()).expect("transaction");
        let text = describe::expressions(&transaction.bytes).join("\n") + "\n";
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
        noverlay_test_support::assert_golden(&dir, "guard_exprs_dual.txt", &text);
    }
}
