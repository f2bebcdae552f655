//! Flow-stats entries back into text in `ovs-ofctl dump-flows` form, so
//! that the programmer and the coexistence rules read a natively dumped
//! bridge as they read ovs-ofctl's. Fields and actions our flows use are
//! written as ovs-ofctl writes them (so a twin of ours compares equal);
//! anything else is written generically (`oxm(0x8000:13)=...`,
//! `nx_action(40)`): never equal to a flow of ours, and still shown.

use super::{
    nxm::{self, NxmField, Subfield},
    spec::CT_FLAGS,
    wire::FlowStats,
};
use crate::format_mac;
use std::{
    fmt::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
};

/// One entry as a dump line (durations are not kept: shown as 0).
pub fn dump_line(flow: &FlowStats) -> String {
    let fields = match_text(&flow.match_fields);
    let mut line = format!(
        "cookie={:#x}, duration=0s, table={}, n_packets={}, n_bytes={}, priority={}",
        flow.cookie, flow.table, flow.packets, flow.bytes, flow.priority
    );
    if !fields.is_empty() {
        line.push(',');
        line.push_str(&fields);
    }
    line.push_str(" actions=");
    line.push_str(&instructions_text(&flow.instructions));
    line
}

/// One OXM/NXM entry: class, field, value and mask (if any).
struct Entry<'a> {
    class: u16,
    field: u8,
    value: &'a [u8],
    mask: Option<&'a [u8]>,
}

fn entries(mut bytes: &[u8]) -> Vec<Entry<'_>> {
    let mut out = Vec::new();
    while bytes.len() >= 4 {
        let header = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let len = (header & 0xff) as usize;
        let masked = header & 0x100 != 0;
        let Some(payload) = bytes.get(4..4 + len) else {
            break;
        };
        let (value, mask) = if masked {
            let (v, m) = payload.split_at(len / 2);
            (v, Some(m))
        } else {
            (payload, None)
        };
        out.push(Entry {
            class: (header >> 16) as u16,
            field: ((header >> 9) & 0x7f) as u8,
            value,
            mask,
        });
        bytes = &bytes[4 + len..];
    }
    out
}

fn be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |acc, b| acc << 8 | u64::from(*b))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An address with its mask as ovs-ofctl writes it: a prefix when the
/// mask is one.
fn prefix(value: &[u8], mask: Option<&[u8]>) -> String {
    let address = match value.len() {
        4 => {
            let mut a = [0u8; 4];
            a.copy_from_slice(value);
            Ipv4Addr::from(a).to_string()
        }
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(value);
            Ipv6Addr::from(a).to_string()
        }
        _ => return format!("0x{}", hex(value)),
    };
    match mask {
        None => address,
        Some(mask) => match crate::prefix_len(mask) {
            Some(ones) => format!("{address}/{ones}"),
            None => format!("{address}/0x{}", hex(mask)),
        },
    }
}

fn mac(value: &[u8]) -> String {
    <[u8; 6]>::try_from(value).map_or_else(|_| hex(value), |m| format_mac(&m))
}

fn ct_state(value: &[u8], mask: Option<&[u8]>) -> String {
    let (value, mask) = (be(value), mask.map_or(u64::MAX, be));
    let mut out = String::new();
    for (name, bit) in CT_FLAGS {
        let bit = u64::from(bit);
        if mask & bit != 0 {
            out.push(if value & bit != 0 { '+' } else { '-' });
            out.push_str(name);
        }
    }
    out
}

/// The match fields in ovs-ofctl's words where they are ours.
pub fn match_text(bytes: &[u8]) -> String {
    let mut parts = Vec::new();
    for e in entries(bytes) {
        let part = match (e.class, e.field, e.mask) {
            (0x8000, 0, None) => format!("in_port={}", be(e.value)),
            (0x8000, 3, None) => format!("dl_dst={}", mac(e.value)),
            (0x8000, 4, None) => format!("dl_src={}", mac(e.value)),
            (0x8000, 5, None) => match be(e.value) {
                0x0800 => "ip".to_string(),
                0x86dd => "ipv6".to_string(),
                0x0806 => "arp".to_string(),
                t => format!("dl_type={t:#06x}"),
            },
            (0x8000, 10, None) => format!("nw_proto={}", be(e.value)),
            (0x8000, 11, m) => format!("nw_src={}", prefix(e.value, m)),
            (0x8000, 12, m) => format!("nw_dst={}", prefix(e.value, m)),
            (0x8000, 26, m) => format!("ipv6_src={}", prefix(e.value, m)),
            (0x8000, 27, m) => format!("ipv6_dst={}", prefix(e.value, m)),
            (0x8000, 19 | 29, None) => format!("icmp_type={}", be(e.value)),
            (0x0001, 26, m) => fragment(e.value, m),
            (0x0001, 29, None) => format!("nw_ttl={}", be(e.value)),
            (0x0001, 120 | 122, None) => format!(
                "ct_{}_src={}",
                if e.field == 120 { "nw" } else { "ipv6" },
                prefix(e.value, None)
            ),
            (0x0001, 105, m) => format!("ct_state={}", ct_state(e.value, m)),
            (0x0001, 107, None) => format!("ct_mark={:#x}", be(e.value)),
            (0x0001, index, mask) if index < nxm::REGISTERS && e.value.len() == 4 => {
                let mask = mask.map_or(u32::MAX, |m| be(m) as u32);
                nxm::format_reg_match(index, be(e.value) as u32, mask)
            }
            (class, field, mask) => {
                let mut generic = format!("oxm({class:#06x}:{field})=0x{}", hex(e.value));
                if let Some(mask) = mask {
                    let _ = write!(generic, "/0x{}", hex(mask));
                }
                generic
            }
        };
        parts.push(part);
    }
    fold_protocol(&mut parts);
    parts.join(",")
}

/// `ip,nw_proto=1` as ovs-ofctl writes it: `icmp` (and `icmp6`, `tcp`,
/// `udp` and their IPv6 forms alike).
fn fold_protocol(parts: &mut Vec<String>) {
    let Some(at) = parts.iter().position(|p| p == "ip" || p == "ipv6") else {
        return;
    };
    let ipv6 = parts[at] == "ipv6";
    let Some(proto_at) = parts.iter().position(|p| p.starts_with("nw_proto=")) else {
        return;
    };
    let name = match (parts[proto_at].as_str(), ipv6) {
        ("nw_proto=1", false) => "icmp",
        ("nw_proto=58", true) => "icmp6",
        ("nw_proto=6", false) => "tcp",
        ("nw_proto=6", true) => "tcp6",
        ("nw_proto=17", false) => "udp",
        ("nw_proto=17", true) => "udp6",
        _ => return,
    };
    parts[at] = name.to_string();
    parts.remove(proto_at);
}

/// nw_frag as ovs-ofctl writes it (its bits: 1 a fragment, 2 not the
/// first one).
fn fragment(value: &[u8], mask: Option<&[u8]>) -> String {
    let (value, mask) = (be(value), mask.map_or(3, be));
    let name = match (value & mask, mask) {
        (0, 1) => "no",
        (1, 1) => "yes",
        (0, 3) => "no",
        (1, 3) => "first",
        (3, 3) => "later",
        (0, 2) => "not_later",
        _ => return format!("nw_frag={value:#x}/{mask:#x}"),
    };
    format!("nw_frag={name}")
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]))
}

fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *b.get(i)?,
        *b.get(i + 1)?,
        *b.get(i + 2)?,
        *b.get(i + 3)?,
    ]))
}

/// The entries of an instruction or action list: each starts with its
/// type and length (at least 8, padding included). Walks while at least
/// `min_left` bytes remain; yields None once for an entry whose length
/// does not fit, and stops there.
fn type_length_entries(
    mut bytes: &[u8],
    min_left: usize,
) -> impl Iterator<Item = Option<(u16, &[u8])>> {
    std::iter::from_fn(move || {
        if bytes.len() < min_left.max(4) {
            return None;
        }
        let (kind, len) = (u16_at(bytes, 0)?, usize::from(u16_at(bytes, 2)?));
        match bytes.get(..len).filter(|_| len >= 8) {
            Some(body) => {
                bytes = &bytes[len..];
                Some(Some((kind, body)))
            }
            None => {
                bytes = &[];
                Some(None)
            }
        }
    })
}

/// The instructions as an ovs-ofctl action list.
pub fn instructions_text(bytes: &[u8]) -> String {
    let parts: Vec<String> = type_length_entries(bytes, 4)
        .map(|entry| match entry {
            Some((1, body)) => format!("goto_table:{}", body[4]),
            Some((4, body)) => actions_text(&body[8..]),
            Some((other, _)) => format!("instruction({other})"),
            None => "malformed_instruction".to_string(),
        })
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        "drop".into()
    } else {
        parts.join(",")
    }
}

/// An action list as ovs-ofctl writes it, for the actions our flows use.
pub fn actions_text(bytes: &[u8]) -> String {
    type_length_entries(bytes, 4)
        .map(|entry| match entry {
            Some((kind, body)) => action_text(kind, body, 0),
            None => "malformed_action".to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// How deep action lists nest inside ct(exec(...)) before the rest is
/// not decoded: ours nest once; a switch's reply may nest anything, and
/// decoding must not recurse without bound.
const MAX_NESTING: usize = 4;

fn action_text(kind: u16, body: &[u8], depth: usize) -> String {
    match kind {
        0 => match u32_at(body, 4) {
            Some(0xffff_fffa) => "NORMAL".into(),
            Some(0xffff_fff8) => "IN_PORT".into(),
            Some(0xffff_fffd) => "CONTROLLER".into(),
            Some(port) => format!("output:{port}"),
            None => "malformed_output".into(),
        },
        25 => {
            let field = entries(&body[4..]);
            match field.first() {
                Some(e) if (e.class, e.field) == (0x8000, 3) => {
                    format!("set_field:{}->eth_dst", mac(e.value))
                }
                Some(e) if (e.class, e.field) == (0x8000, 4) => {
                    format!("set_field:{}->eth_src", mac(e.value))
                }
                Some(e) if (e.class, e.field) == (0x8000, 11) => {
                    format!("set_field:{}->ip_src", prefix(e.value, None))
                }
                Some(e) if (e.class, e.field) == (0x8000, 26) => {
                    format!("set_field:{}->ipv6_src", prefix(e.value, None))
                }
                Some(e) if (e.class, e.field) == (0x0001, 107) => {
                    format!("set_field:{:#x}->ct_mark", be(e.value))
                }
                Some(e) if e.class == 0x0001 && e.field < nxm::REGISTERS && e.value.len() == 4 => {
                    nxm::format_reg_set(e.field, be(e.value) as u32)
                }
                Some(e) => format!(
                    "set_field:0x{}->oxm({:#06x}:{})",
                    hex(e.value),
                    e.class,
                    e.field
                ),
                None => "malformed_set_field".into(),
            }
        }
        0xffff if u32_at(body, 4) == Some(0x0000_2320) => nx_action_text(body, depth),
        other => format!("action({other})"),
    }
}

fn nx_action_text(body: &[u8], depth: usize) -> String {
    let subtype = u16_at(body, 8).unwrap_or(0);
    match subtype {
        6 => move_text(body).unwrap_or_else(|| "nx_action(6)".into()),
        14 => match (u16_at(body, 10), body.get(12)) {
            (Some(0xfff8), Some(table)) => format!("resubmit(,{table})"),
            _ => "nx_action(14)".into(),
        },
        35 => ct_text(body, depth),
        36 => nat_text(body),
        43 => "ct_clear".into(),
        other => format!("nx_action({other})"),
    }
}

/// NXAST_REG_MOVE between fields our flows name: n_bits, src_ofs,
/// dst_ofs, then the two NXM headers.
fn move_text(body: &[u8]) -> Option<String> {
    let (bits, src_ofs, dst_ofs) = (u16_at(body, 10)?, u16_at(body, 12)?, u16_at(body, 14)?);
    let src = Subfield::new(NxmField::of_header(u32_at(body, 16)?)?, src_ofs, bits)?;
    let dst = Subfield::new(NxmField::of_header(u32_at(body, 20)?)?, dst_ofs, bits)?;
    Some(format!("move:{src}->{dst}"))
}

fn ct_text(body: &[u8], depth: usize) -> String {
    let (Some(flags), Some(zone_src), Some(zone)) =
        (u16_at(body, 10), u32_at(body, 12), u16_at(body, 16))
    else {
        return "malformed_ct".into();
    };
    let mut args = Vec::new();
    if flags & 1 != 0 {
        args.push("commit".to_string());
    }
    if flags & !1 != 0 {
        args.push(format!("flags({flags:#x})"));
    }
    if zone_src == 0 {
        args.push(format!("zone={zone}"));
    } else {
        args.push(format!("zone_from({zone_src:#x})"));
    }
    let table = body.get(18).copied().unwrap_or(0xff);
    if table != 0xff {
        args.push(format!("table={table}"));
    }
    if let Some(alg) = u16_at(body, 22).filter(|a| *a != 0) {
        args.push(format!("alg={alg}"));
    }
    let nested = body.get(24..).unwrap_or_default();
    let mut exec = Vec::new();
    if depth >= MAX_NESTING && !nested.is_empty() {
        exec.push("nested_too_deep".to_string());
    }
    let entries = type_length_entries(nested, 8).take_while(|_| depth < MAX_NESTING);
    for entry in entries {
        let text = match entry {
            Some((kind, action)) => action_text(kind, action, depth + 1),
            None => {
                exec.push("malformed".to_string());
                break;
            }
        };
        if text.starts_with("nat") {
            args.push(text);
        } else {
            exec.push(text);
        }
    }
    if !exec.is_empty() {
        args.push(format!("exec({})", exec.join(",")));
    }
    format!("ct({})", args.join(","))
}

fn nat_text(body: &[u8]) -> String {
    let (Some(flags), Some(range)) = (u16_at(body, 12), u16_at(body, 14)) else {
        return "malformed_nat".into();
    };
    if flags == 0 && range == 0 {
        return "nat".into();
    }
    let direction = match flags & 0b11 {
        1 => "src",
        2 => "dst",
        _ => return format!("nat(flags={flags:#x},range={range:#x})"),
    };
    let addresses = body.get(16..).unwrap_or_default();
    let address = match range {
        1 => addresses.get(..4).map(|a| prefix(a, None)),
        4 => addresses
            .get(..16)
            .map(|a| format!("[{}]", prefix(a, None))),
        _ => None,
    };
    match (address, flags & !0b11) {
        (Some(address), 0) => format!("nat({direction}={address})"),
        _ => format!("nat(flags={flags:#x},range={range:#x})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_actions_from_the_switch_are_decoded_to_a_bound_never_overflowing() {
        // ct(exec(ct(exec(...)))) 2,000 deep (48 KB, within one OpenFlow
        // message), as a hostile or broken reply
        // could carry: each ct is a 24-byte Nicira header holding the next.
        let mut action: Vec<u8> = Vec::new();
        for _ in 0..2000 {
            let len = 24 + action.len();
            let mut ct = vec![0xff, 0xff];
            ct.extend_from_slice(&u16::try_from(len).expect("fits").to_be_bytes());
            ct.extend_from_slice(&[0, 0, 0x23, 0x20, 0, 35, 0, 1]);
            ct.extend_from_slice(&[0, 0, 0, 0, 0, 7, 0xff, 0, 0, 0, 0, 0]);
            ct.extend_from_slice(&action);
            action = ct;
        }
        let text = actions_text(&action);
        assert!(
            text.contains("nested_too_deep"),
            "{}",
            &text[..text.len().min(300)]
        );
        assert!(
            text.starts_with("ct(commit,zone=7,exec(ct(commit,zone=7,exec("),
            "{}",
            &text[..200]
        );
    }

    #[test]
    fn what_is_not_ours_is_shown_generically() {
        // udp_dst=6081 (OXM basic field 16), then an unknown action type.
        let fields = [0x80, 0x00, 0x20, 0x02, 0x17, 0xc1];
        assert_eq!(match_text(&fields), "oxm(0x8000:16)=0x17c1");
        assert_eq!(actions_text(&[0, 99, 0, 8, 0, 0, 0, 0]), "action(99)");
        assert_eq!(instructions_text(&[]), "drop");
        assert_eq!(instructions_text(&[0, 1, 0, 200]), "malformed_instruction");
    }
}
