//! Our flows as structures: the subset of ovs-ofctl's flow syntax that the
//! planner writes, parsed strictly (anything else is an error naming it),
//! and rendered back the way ovs-ofctl prints it. What the codec encodes.

use crate::nxm::{self, Subfield};
use ipnet::IpNet;
use std::net::IpAddr;

/// A match field our flows use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    InPort(u32),
    EthDst([u8; 6]),
    EthSrc([u8; 6]),
    EthType(u16),
    /// nw_src / ipv6_src (a host address or a prefix).
    IpSrc(IpNet),
    IpDst(IpNet),
    CtState {
        value: u32,
        mask: u32,
    },
    CtMark(u32),
    /// ct_nw_src / ct_ipv6_src: the source address of the original
    /// direction of the connection a tracked packet belongs to (for an
    /// ICMP error: of the connection it is about).
    CtIpSrc(IpAddr),
    /// The IP protocol (`icmp` and `icmp6` are `ip`/`ipv6` with this).
    IpProto(u8),
    /// icmp_type (ICMPv4 or ICMPv6, by the flow's Ethernet type).
    IcmpType(u8),
    /// nw_frag: `no` (not a fragment) or `yes` (any fragment).
    Fragment(bool),
    /// nw_ttl: the IPv4 TTL or the IPv6 hop limit.
    IpTtl(u8),
    /// A register (reg0 .. reg15) under a mask (all ones: exact).
    Reg {
        index: u8,
        value: u32,
        mask: u32,
    },
    /// Only in probes: flows a controller adds to be refused where another
    /// flow overlaps them.
    Metadata {
        value: u64,
        mask: u64,
    },
}

/// OFPP_NORMAL.
pub const PORT_NORMAL: u32 = 0xffff_fffa;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Output(u32),
    SetEthDst([u8; 6]),
    /// move:<src>->NXM_...[]: copies `src`'s bits into `dst` (the same
    /// width).
    Move {
        src: Subfield,
        dst: Subfield,
    },
    /// set_field:<value>->reg<index>: a whole register.
    SetReg {
        index: u8,
        value: u32,
    },
    /// resubmit(,<table>): looks the packet up in `table` and runs that
    /// flow's actions, then carries on with the actions after this one.
    Resubmit(u8),
    Ct(Ct),
    /// ct_clear: forgets what conntrack said of the packet, so the flows
    /// after see it as if no ct() had run.
    CtClear,
    SetEthSrc([u8; 6]),
    /// set_field:<address>->ip_src (or ->ipv6_src).
    SetIpSrc(IpAddr),
}

/// ct(...) as our flows use it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ct {
    pub commit: bool,
    pub zone: u16,
    /// Recirculate to this table; None: no recirculation.
    pub table: Option<u8>,
    pub nat: Option<Nat>,
    /// exec(set_field:<mark>->ct_mark)
    pub set_mark: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// `nat`: un-NAT replies of NATed connections.
    Reverse,
    /// `nat(src=<ip>)`.
    Src(IpAddr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    GotoTable(u8),
    Apply(Vec<Action>),
}

/// One flow, ready to encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSpec {
    pub cookie: u64,
    pub table: u8,
    pub priority: u16,
    pub fields: Vec<Field>,
    pub instructions: Vec<Instruction>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode {part:?}: {reason}")]
pub struct SpecError {
    pub part: String,
    pub reason: &'static str,
}

fn error(part: &str, reason: &'static str) -> SpecError {
    SpecError {
        part: part.to_string(),
        reason,
    }
}

pub const ETH_TYPE_IPV4: u16 = 0x0800;
pub const ETH_TYPE_IPV6: u16 = 0x86dd;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;

impl FlowSpec {
    /// From a planned flow's parts: its match fields and actions in
    /// ovs-ofctl syntax.
    pub fn parse(
        cookie: u64,
        table: u8,
        priority: u16,
        matches: &str,
        actions: &str,
    ) -> Result<Self, SpecError> {
        let mut fields = Vec::new();
        for token in matches.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            fields.extend(parse_field(token)?);
        }
        // Canonical order (prerequisites first), as OVS lists them.
        fields.sort_by_key(field_rank);
        let mut instructions = Vec::new();
        let mut apply = Vec::new();
        for token in split_top_level(actions) {
            if token == "drop" {
                // No actions at all: what OpenFlow means by drop.
                continue;
            }
            if let Some(table) = token.strip_prefix("goto_table:") {
                let table = table.parse().map_err(|_| error(token, "not a table"))?;
                instructions.push(Instruction::GotoTable(table));
            } else {
                apply.push(parse_action(token)?);
            }
        }
        if !apply.is_empty() {
            // Apply-actions first, as OVS orders instructions.
            instructions.insert(0, Instruction::Apply(apply));
        }
        Ok(FlowSpec {
            cookie,
            table,
            priority,
            fields,
            instructions,
        })
    }
}

fn field_rank(field: &Field) -> u8 {
    match field {
        Field::InPort(_) => 0,
        Field::EthDst(_) => 1,
        Field::EthSrc(_) => 2,
        Field::EthType(_) => 3,
        Field::IpSrc(_) => 4,
        Field::IpDst(_) => 5,
        Field::Fragment(_) => 6,
        Field::IpTtl(_) => 7,
        Field::IpProto(_) => 8,
        Field::IcmpType(_) => 9,
        Field::CtState { .. } => 10,
        Field::CtMark(_) => 11,
        Field::CtIpSrc(_) => 12,
        Field::Reg { .. } => 13,
        Field::Metadata { .. } => 14,
    }
}

fn parse_field(token: &str) -> Result<Vec<Field>, SpecError> {
    let (key, value) = token.split_once('=').unwrap_or((token, ""));
    let net = |v: &str| -> Result<IpNet, SpecError> {
        v.parse::<IpNet>()
            .or_else(|_| v.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| error(token, "not an address or prefix"))
    };
    if let Some(index) = register(key) {
        let (value, mask) = match value.split_once('/') {
            Some((value, mask)) => (hex_u32(value), hex_u32(mask)),
            None => (hex_u32(value), Some(u32::MAX)),
        };
        return match (value, mask) {
            (Some(value), Some(mask)) => Ok(vec![Field::Reg { index, value, mask }]),
            _ => Err(error(token, "not a register value")),
        };
    }
    Ok(vec![match key {
        "icmp" => {
            return Ok(vec![
                Field::EthType(ETH_TYPE_IPV4),
                Field::IpProto(IPPROTO_ICMP),
            ]);
        }
        "icmp6" => {
            return Ok(vec![
                Field::EthType(ETH_TYPE_IPV6),
                Field::IpProto(IPPROTO_ICMPV6),
            ]);
        }
        "ip" => Field::EthType(ETH_TYPE_IPV4),
        "ipv6" => Field::EthType(ETH_TYPE_IPV6),
        "in_port" => Field::InPort(value.parse().map_err(|_| error(token, "not a port"))?),
        "dl_src" => Field::EthSrc(mac(value).ok_or_else(|| error(token, "not a MAC"))?),
        "dl_dst" => Field::EthDst(mac(value).ok_or_else(|| error(token, "not a MAC"))?),
        "nw_src" | "ipv6_src" => Field::IpSrc(net(value)?),
        "nw_dst" | "ipv6_dst" => Field::IpDst(net(value)?),
        "ct_state" => ct_state(value).ok_or_else(|| error(token, "not ct_state flags"))?,
        "ct_mark" => Field::CtMark(hex_u32(value).ok_or_else(|| error(token, "not a mark"))?),
        "ct_nw_src" | "ct_ipv6_src" => {
            Field::CtIpSrc(value.parse().map_err(|_| error(token, "not an address"))?)
        }
        "icmp_type" => Field::IcmpType(value.parse().map_err(|_| error(token, "not a type"))?),
        "nw_ttl" => Field::IpTtl(value.parse().map_err(|_| error(token, "not a TTL"))?),
        "nw_frag" => Field::Fragment(match value {
            "yes" => true,
            "no" => false,
            _ => return Err(error(token, "not a fragment match our flows use")),
        }),
        _ => return Err(error(token, "not a match field our flows use")),
    }])
}

/// The ct_state flags, in the kernel's bit order (also how the decoder
/// writes them back).
pub(super) const CT_FLAGS: [(&str, u32); 8] = [
    ("new", 0x01),
    ("est", 0x02),
    ("rel", 0x04),
    ("rpl", 0x08),
    ("inv", 0x10),
    ("trk", 0x20),
    ("snat", 0x40),
    ("dnat", 0x80),
];

fn ct_state(text: &str) -> Option<Field> {
    let (mut value, mut mask) = (0, 0);
    let mut rest = text;
    while !rest.is_empty() {
        let set = match rest.as_bytes()[0] {
            b'+' => true,
            b'-' => false,
            _ => return None,
        };
        rest = &rest[1..];
        let end = rest.find(['+', '-']).unwrap_or(rest.len());
        let bit = CT_FLAGS.iter().find(|(n, _)| *n == &rest[..end])?.1;
        mask |= bit;
        if set {
            value |= bit;
        }
        rest = &rest[end..];
    }
    (mask != 0).then_some(Field::CtState { value, mask })
}

fn parse_action(token: &str) -> Result<Action, SpecError> {
    if token == "NORMAL" {
        return Ok(Action::Output(PORT_NORMAL));
    }
    if token == "ct_clear" {
        return Ok(Action::CtClear);
    }
    if let Some(args) = token.strip_prefix("move:") {
        let parsed = args
            .split_once("->")
            .and_then(|(src, dst)| Some((Subfield::parse(src)?, Subfield::parse(dst)?)));
        return match parsed {
            Some((src, dst)) if src.bits == dst.bits => Ok(Action::Move { src, dst }),
            Some(_) => Err(error(token, "source and destination differ in width")),
            None => Err(error(token, "not a move between fields our flows use")),
        };
    }
    if let Some(table) = token
        .strip_prefix("resubmit(,")
        .and_then(|t| t.strip_suffix(')'))
    {
        return Ok(Action::Resubmit(
            table.parse().map_err(|_| error(token, "not a table"))?,
        ));
    }
    if let Some((value, index)) = token
        .strip_prefix("set_field:")
        .and_then(|v| v.split_once("->"))
        .and_then(|(value, reg)| Some((value, register(reg)?)))
    {
        return Ok(Action::SetReg {
            index,
            value: hex_u32(value).ok_or_else(|| error(token, "not a register value"))?,
        });
    }
    if let Some(port) = token.strip_prefix("output:") {
        return Ok(Action::Output(
            port.parse().map_err(|_| error(token, "not a port"))?,
        ));
    }
    if let Some(value) = token
        .strip_prefix("set_field:")
        .and_then(|v| v.strip_suffix("->eth_dst"))
    {
        return Ok(Action::SetEthDst(
            mac(value).ok_or_else(|| error(token, "not a MAC"))?,
        ));
    }
    if let Some(value) = token.strip_prefix("set_field:").and_then(|v| {
        v.strip_suffix("->ip_src")
            .or_else(|| v.strip_suffix("->ipv6_src"))
    }) {
        return Ok(Action::SetIpSrc(
            value.parse().map_err(|_| error(token, "not an address"))?,
        ));
    }
    if let Some(value) = token
        .strip_prefix("set_field:")
        .and_then(|v| v.strip_suffix("->eth_src"))
    {
        return Ok(Action::SetEthSrc(
            mac(value).ok_or_else(|| error(token, "not a MAC"))?,
        ));
    }
    if let Some(args) = token.strip_prefix("ct(").and_then(|a| a.strip_suffix(')')) {
        let mut ct = Ct::default();
        for arg in split_top_level(args) {
            match arg {
                "commit" => ct.commit = true,
                "nat" => ct.nat = Some(Nat::Reverse),
                _ => {
                    if let Some(zone) = arg.strip_prefix("zone=") {
                        ct.zone = zone.parse().map_err(|_| error(arg, "not a zone"))?;
                    } else if let Some(table) = arg.strip_prefix("table=") {
                        ct.table = Some(table.parse().map_err(|_| error(arg, "not a table"))?);
                    } else if let Some(src) = arg
                        .strip_prefix("nat(src=")
                        .and_then(|s| s.strip_suffix(')'))
                    {
                        let src = src.trim_start_matches('[').trim_end_matches(']');
                        ct.nat = Some(Nat::Src(
                            src.parse().map_err(|_| error(arg, "not an address"))?,
                        ));
                    } else if let Some(mark) = arg
                        .strip_prefix("exec(set_field:")
                        .and_then(|s| s.strip_suffix("->ct_mark)"))
                    {
                        ct.set_mark = Some(hex_u32(mark).ok_or_else(|| error(arg, "not a mark"))?);
                    } else {
                        return Err(error(arg, "not a ct() argument our flows use"));
                    }
                }
            }
        }
        return Ok(Action::Ct(ct));
    }
    Err(error(token, "not an action our flows use"))
}

/// Splits at commas outside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(text[start..].trim());
    parts.retain(|p| !p.is_empty());
    parts
}

/// `reg<N>` with N below 16.
fn register(name: &str) -> Option<u8> {
    let index: u8 = name.strip_prefix("reg")?.parse().ok()?;
    (index < nxm::REGISTERS).then_some(index)
}

fn mac(text: &str) -> Option<[u8; 6]> {
    crate::parse_mac(text)
}

fn hex_u32(text: &str) -> Option<u32> {
    match text.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_syntax_parses_and_anything_else_is_named() {
        let spec = FlowSpec::parse(
            0x6e6f7672,
            0,
            510,
            "in_port=2,dl_src=02:00:c6:12:00:0a,ip,nw_src=169.254.0.2,nw_dst=198.18.128.0/17",
            "ct(commit,zone=64000,nat(src=198.18.0.10),exec(set_field:0x1->ct_mark)),output:3",
        )
        .expect("parses");
        assert_eq!(
            spec.fields,
            vec![
                Field::InPort(2),
                Field::EthSrc([2, 0, 0xc6, 0x12, 0, 0x0a]),
                Field::EthType(0x0800),
                Field::IpSrc("169.254.0.2/32".parse().expect("net")),
                Field::IpDst("198.18.128.0/17".parse().expect("net")),
            ]
        );
        assert_eq!(
            spec.instructions,
            vec![Instruction::Apply(vec![
                Action::Ct(Ct {
                    commit: true,
                    zone: 64000,
                    table: None,
                    nat: Some(Nat::Src("198.18.0.10".parse().expect("ip"))),
                    set_mark: Some(1),
                }),
                Action::Output(3),
            ])]
        );
        assert_eq!(
            ct_state("+trk+est"),
            Some(Field::CtState {
                value: 0x22,
                mask: 0x22
            })
        );
        let refused = FlowSpec::parse(1, 0, 1, "udp", "drop").expect_err("unknown");
        assert_eq!(refused.part, "udp");
        assert!(FlowSpec::parse(1, 0, 1, "ip", "learn(table=1)").is_err());
    }
}
