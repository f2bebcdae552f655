//! nftables messages read back into something a person can check: parsed by
//! libnftnl itself, then
//!
//! - [`expressions`]: every chain and rule as libnftnl prints it, expression
//!   by expression (`[ payload load 4b @ network header + 16 => reg 1 ]`):
//!   what the golden test of the programmed rules compares;
//! - [`render_table`]: a table in `nft list table` syntax, its rules decoded
//!   from their expressions by the caller's renderer (which knows the
//!   shapes of its own rules), counters included: what the agents report.
//!   A rule whose shape the renderer does not know is shown expression by
//!   expression, so nothing is hidden.

use super::{
    TableId,
    netlink::{
        NFT_MSG_NEWCHAIN, NFT_MSG_NEWRULE, NFT_MSG_NEWSET, NFT_MSG_NEWSETELEM, NetlinkMessages,
        nft_message, nft_type,
    },
    sets::{SetElement, parse_set_elements, render_intervals},
};
use nftnl::{
    ProtoFamily,
    nftnl_sys::{self as sys, libc},
};
use std::{
    ffi::CStr,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// Every chain, rule, set and set elements message in `buffer`, as
/// libnftnl prints it (what golden tests of programmed rules compare).
pub fn expressions(buffer: &[u8]) -> Vec<String> {
    parse(buffer).iter().map(Item::printed).collect()
}

/// A chain, rule, set or set elements message, parsed.
pub struct Item {
    pub table: String,
    pub kind: ItemKind,
    /// The message, for [`Item::printed`] (printing every rule up front
    /// would cost more than decoding them).
    message: Vec<u8>,
}

impl Item {
    /// libnftnl's own rendering (expression by expression for a rule).
    pub fn printed(&self) -> String {
        let printed = match &self.kind {
            ItemKind::Chain { .. } => print_chain(&self.message),
            ItemKind::Rule { .. } => print_rule(&self.message),
            ItemKind::Set { .. } => print_set(&self.message),
            ItemKind::SetElements { set, elements } => {
                Some(print_elements(&self.table, set, elements))
            }
        };
        printed.unwrap_or_default()
    }
}

pub enum ItemKind {
    Chain {
        name: String,
        /// "nat", "filter"...; None for a regular chain.
        chain_type: Option<String>,
        hook: u32,
        /// The device of a netdev base chain.
        device: Option<String>,
        priority: i32,
        policy: u32,
    },
    Rule {
        chain: String,
        expressions: Vec<Expr>,
    },
    Set {
        name: String,
        /// nft's data type of the key (7 ipv4_addr, 8 ipv6_addr).
        key_type: u32,
        /// NFT_SET_* flags (interval, constant...).
        flags: u32,
    },
    /// Some of a set's elements (a set's elements span several messages).
    SetElements {
        set: String,
        elements: Vec<SetElement>,
    },
}

/// The parts of an expression we recognise ours by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Meta(u32),
    Cmp { op: u32, data: Vec<u8> },
    Payload { base: u32, offset: u32, len: u32 },
    Bitwise { mask: Vec<u8>, xor: Vec<u8> },
    Counter { packets: u64, bytes: u64 },
    Data(Vec<u8>),
    Verdict(i32),
    Nat { kind: u32, family: u32 },
    Lookup { set: String, inverted: bool },
    Other(String),
}

/// Parses every chain, rule, set and set elements message in `buffer`;
/// other messages (batch markers, tables, acks) are skipped.
pub fn parse(buffer: &[u8]) -> Vec<Item> {
    NetlinkMessages::new(buffer)
        .filter_map(|message| match message.kind {
            k if k == nft_type(NFT_MSG_NEWCHAIN) => parse_chain(message.bytes),
            k if k == nft_type(NFT_MSG_NEWRULE) => parse_rule(message.bytes),
            k if k == nft_type(NFT_MSG_NEWSET) => parse_set(message.bytes),
            k if k == nft_type(NFT_MSG_NEWSETELEM) => parse_elements(message.bytes),
            _ => None,
        })
        .collect()
}

/// Room for a rule of a dozen expressions; libnftnl truncates beyond it.
const TEXT_CAPACITY: usize = 4096;

fn parse_rule(message: &[u8]) -> Option<Item> {
    let message = nft_message(message)?;
    // SAFETY: `message` is one whole nftables message (nft_message checked
    // its length); libnftnl reads only within the length in its header. Strings
    // and data are copied before the rule is freed, on every path.
    unsafe {
        let rule = sys::nftnl_rule_alloc();
        if rule.is_null() {
            return None;
        }
        let item =
            (sys::nftnl_rule_nlmsg_parse(message.as_ptr().cast(), rule) >= 0).then(|| Item {
                table: string(sys::nftnl_rule_get_str(rule, sys::NFTNL_RULE_TABLE as u16)),
                kind: ItemKind::Rule {
                    chain: string(sys::nftnl_rule_get_str(rule, sys::NFTNL_RULE_CHAIN as u16)),
                    expressions: rule_expressions(rule),
                },
                message: message.to_vec(),
            });
        sys::nftnl_rule_free(rule);
        item
    }
}

fn print_rule(message: &[u8]) -> Option<String> {
    let message = nft_message(message)?;
    // SAFETY: as in parse_rule.
    unsafe {
        let rule = sys::nftnl_rule_alloc();
        if rule.is_null() {
            return None;
        }
        let printed =
            (sys::nftnl_rule_nlmsg_parse(message.as_ptr().cast(), rule) >= 0).then(|| {
                print(|buffer, size| {
                    sys::nftnl_rule_snprintf(buffer, size, rule, sys::NFTNL_OUTPUT_DEFAULT, 0)
                })
            });
        sys::nftnl_rule_free(rule);
        printed
    }
}

fn print_chain(message: &[u8]) -> Option<String> {
    let message = nft_message(message)?;
    // SAFETY: as in parse_rule.
    unsafe {
        let chain = sys::nftnl_chain_alloc();
        if chain.is_null() {
            return None;
        }
        let printed =
            (sys::nftnl_chain_nlmsg_parse(message.as_ptr().cast(), chain) >= 0).then(|| {
                print(|buffer, size| {
                    sys::nftnl_chain_snprintf(buffer, size, chain, sys::NFTNL_OUTPUT_DEFAULT, 0)
                })
            });
        sys::nftnl_chain_free(chain);
        printed
    }
}

/// # Safety
/// `rule` is a valid, parsed rule.
unsafe fn rule_expressions(rule: *mut sys::nftnl_rule) -> Vec<Expr> {
    let mut out = Vec::new();
    // SAFETY: the iterator lives within this call and the rule outlives it.
    unsafe {
        let iter = sys::nftnl_expr_iter_create(rule);
        if iter.is_null() {
            return out;
        }
        loop {
            let expr = sys::nftnl_expr_iter_next(iter);
            if expr.is_null() {
                break;
            }
            out.push(expression(expr));
        }
        sys::nftnl_expr_iter_destroy(iter);
    }
    out
}

/// # Safety
/// `expr` is a valid expression of a parsed rule.
unsafe fn expression(expr: *mut sys::nftnl_expr) -> Expr {
    // SAFETY: getters of a valid expression; data is copied out.
    unsafe {
        let u32_of = |attr: u32| sys::nftnl_expr_get_u32(expr, attr as u16);
        let data_of = |attr: u32| {
            let mut len = 0u32;
            let data = sys::nftnl_expr_get(expr, attr as u16, &mut len);
            if data.is_null() {
                Vec::new()
            } else {
                std::slice::from_raw_parts(data.cast::<u8>(), len as usize).to_vec()
            }
        };
        let name = string(sys::nftnl_expr_get_str(expr, sys::NFTNL_EXPR_NAME as u16));
        match name.as_str() {
            "meta" => Expr::Meta(u32_of(sys::NFTNL_EXPR_META_KEY)),
            "cmp" => Expr::Cmp {
                op: u32_of(sys::NFTNL_EXPR_CMP_OP),
                data: data_of(sys::NFTNL_EXPR_CMP_DATA),
            },
            "payload" => Expr::Payload {
                base: u32_of(sys::NFTNL_EXPR_PAYLOAD_BASE),
                offset: u32_of(sys::NFTNL_EXPR_PAYLOAD_OFFSET),
                len: u32_of(sys::NFTNL_EXPR_PAYLOAD_LEN),
            },
            "bitwise" => Expr::Bitwise {
                mask: data_of(sys::NFTNL_EXPR_BITWISE_MASK),
                xor: data_of(sys::NFTNL_EXPR_BITWISE_XOR),
            },
            "counter" => Expr::Counter {
                packets: sys::nftnl_expr_get_u64(expr, sys::NFTNL_EXPR_CTR_PACKETS as u16),
                bytes: sys::nftnl_expr_get_u64(expr, sys::NFTNL_EXPR_CTR_BYTES as u16),
            },
            "immediate" if sys::nftnl_expr_is_set(expr, sys::NFTNL_EXPR_IMM_VERDICT as u16) => {
                Expr::Verdict(u32_of(sys::NFTNL_EXPR_IMM_VERDICT) as i32)
            }
            "immediate" => Expr::Data(data_of(sys::NFTNL_EXPR_IMM_DATA)),
            "lookup" => Expr::Lookup {
                set: string(sys::nftnl_expr_get_str(
                    expr,
                    sys::NFTNL_EXPR_LOOKUP_SET as u16,
                )),
                inverted: u32_of(sys::NFTNL_EXPR_LOOKUP_FLAGS) & libc::NFT_LOOKUP_F_INV as u32 != 0,
            },
            "nat" => Expr::Nat {
                kind: u32_of(sys::NFTNL_EXPR_NAT_TYPE),
                family: u32_of(sys::NFTNL_EXPR_NAT_FAMILY),
            },
            _ => Expr::Other(name),
        }
    }
}

fn parse_chain(message: &[u8]) -> Option<Item> {
    let message = nft_message(message)?;
    // SAFETY: as for rules.
    unsafe {
        let chain = sys::nftnl_chain_alloc();
        if chain.is_null() {
            return None;
        }
        let item = (sys::nftnl_chain_nlmsg_parse(message.as_ptr().cast(), chain) >= 0).then(|| {
            let attr = |a: u32| a as u16;
            let optional = |a: u32| {
                sys::nftnl_chain_is_set(chain, attr(a))
                    .then(|| string(sys::nftnl_chain_get_str(chain, attr(a))))
            };
            let chain_type = optional(sys::NFTNL_CHAIN_TYPE);
            let device = optional(sys::NFTNL_CHAIN_DEV);
            Item {
                table: string(sys::nftnl_chain_get_str(
                    chain,
                    attr(sys::NFTNL_CHAIN_TABLE),
                )),
                message: message.to_vec(),
                kind: ItemKind::Chain {
                    name: string(sys::nftnl_chain_get_str(chain, attr(sys::NFTNL_CHAIN_NAME))),
                    chain_type,
                    device,
                    hook: sys::nftnl_chain_get_u32(chain, attr(sys::NFTNL_CHAIN_HOOKNUM)),
                    priority: sys::nftnl_chain_get_s32(chain, attr(sys::NFTNL_CHAIN_PRIO)),
                    policy: sys::nftnl_chain_get_u32(chain, attr(sys::NFTNL_CHAIN_POLICY)),
                },
            }
        });
        sys::nftnl_chain_free(chain);
        item
    }
}

/// A set, parsed.
fn parse_set(message: &[u8]) -> Option<Item> {
    let message = nft_message(message)?;
    // SAFETY: as for rules.
    unsafe {
        let set = sys::nftnl_set_alloc();
        if set.is_null() {
            return None;
        }
        let item = (sys::nftnl_set_nlmsg_parse(message.as_ptr().cast(), set) >= 0).then(|| {
            let attr = |a: u32| a as u16;
            Item {
                table: string(sys::nftnl_set_get_str(set, attr(sys::NFTNL_SET_TABLE))),
                message: message.to_vec(),
                kind: ItemKind::Set {
                    name: string(sys::nftnl_set_get_str(set, attr(sys::NFTNL_SET_NAME))),
                    key_type: sys::nftnl_set_get_u32(set, attr(sys::NFTNL_SET_KEY_TYPE)),
                    flags: sys::nftnl_set_get_u32(set, attr(sys::NFTNL_SET_FLAGS)),
                },
            }
        });
        sys::nftnl_set_free(set);
        item
    }
}

fn parse_elements(message: &[u8]) -> Option<Item> {
    let parsed = parse_set_elements(message)?;
    Some(Item {
        table: parsed.table,
        message: message.to_vec(),
        kind: ItemKind::SetElements {
            set: parsed.set,
            elements: parsed.elements,
        },
    })
}

fn print_set(message: &[u8]) -> Option<String> {
    let message = nft_message(message)?;
    // SAFETY: as in parse_set.
    unsafe {
        let set = sys::nftnl_set_alloc();
        if set.is_null() {
            return None;
        }
        let printed = (sys::nftnl_set_nlmsg_parse(message.as_ptr().cast(), set) >= 0).then(|| {
            print(|buffer, size| {
                sys::nftnl_set_snprintf(buffer, size, set, sys::NFTNL_OUTPUT_DEFAULT, 0)
            })
        });
        sys::nftnl_set_free(set);
        printed
    }
}

/// Elements in the manner of libnftnl's printing: each key's 32-bit words
/// as it prints registers, and the flags of an end.
fn print_elements(table: &str, set: &str, elements: &[SetElement]) -> String {
    let mut out = format!("{table} {set}");
    for element in elements {
        let words: Vec<String> = element
            .key
            .chunks(4)
            .map(|word| {
                let mut bytes = [0u8; 4];
                bytes[..word.len()].copy_from_slice(word);
                format!("0x{:08x}", u32::from_ne_bytes(bytes))
            })
            .collect();
        let _ = write!(out, "\n  element {}", words.join(" "));
        if element.interval_end {
            out.push_str(" interval-end");
        }
    }
    out
}

/// A C string from libnftnl, copied; empty for null.
///
/// # Safety
/// `text` is null or a valid NUL-terminated string.
unsafe fn string(text: *const libc::c_char) -> String {
    if text.is_null() {
        String::new()
    } else {
        // SAFETY: the caller's promise.
        unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned()
    }
}

/// Runs a libnftnl snprintf into a buffer and returns the text, trimmed.
fn print(snprintf: impl FnOnce(*mut libc::c_char, usize) -> libc::c_int) -> String {
    let mut buffer = vec![0u8; TEXT_CAPACITY];
    if snprintf(buffer.as_mut_ptr().cast(), buffer.len()) < 0 {
        return String::new();
    }
    // snprintf always terminates within the buffer.
    CStr::from_bytes_until_nul(&buffer)
        .map(|text| text.to_string_lossy().trim_end().to_string())
        .unwrap_or_default()
}

/// The table in `nft list table` syntax, from its comment and parsed
/// items; `render_rule` turns the expressions of a rule of a known shape
/// into nft syntax (None for any other shape).
pub fn render_table(
    table: &TableId,
    comment: Option<&str>,
    items: &[Item],
    render_rule: impl Fn(&[Expr]) -> Option<String>,
) -> String {
    let mut out = format!("table {table} {{\n");
    if let Some(comment) = comment {
        let _ = writeln!(out, "\tcomment \"{comment}\"");
    }
    let ours = || items.iter().filter(|i| i.table == table.name);
    for item in ours() {
        if let ItemKind::Set {
            name,
            key_type,
            flags,
        } = &item.kind
        {
            render_set(&mut out, name, *key_type, *flags, ours());
        }
    }
    for item in ours() {
        let ItemKind::Chain {
            name,
            chain_type,
            hook,
            device,
            priority,
            policy,
        } = &item.kind
        else {
            continue;
        };
        let _ = writeln!(out, "\tchain {name} {{");
        if let Some(chain_type) = chain_type {
            let priority = priority_name(chain_type, table.family, *hook, *priority);
            let verdict = if *policy == libc::NF_ACCEPT as u32 {
                "accept"
            } else {
                "drop"
            };
            let device = device
                .as_ref()
                .map(|d| format!(" device \"{d}\""))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "\t\ttype {chain_type} hook {}{device} priority {priority}; policy {verdict};",
                hook_name(table.family, *hook)
            );
        }
        for rule in ours() {
            if let ItemKind::Rule { chain, expressions } = &rule.kind
                && chain == name
            {
                let text = render_rule(expressions).unwrap_or_else(|| {
                    // Not one of the caller's shapes: show it all, on one line.
                    format!(
                        "# unrecognised: {}",
                        rule.printed()
                            .split_whitespace()
                            .collect::<Vec<_>>()
                            .join(" ")
                    )
                });
                let _ = writeln!(out, "\t\t{text}");
            }
        }
        out.push_str("\t}\n");
    }
    out.push_str("}\n");
    out
}

/// Where an element continues on its own line: under the first one.
const ELEMENT_INDENT: &str = "\t\t\t     ";

/// A set as `nft list table` shows it, but with one element per line.
fn render_set<'a>(
    out: &mut String,
    name: &str,
    key_type: u32,
    flags: u32,
    items: impl Iterator<Item = &'a Item>,
) {
    let flag_names: Vec<&str> = [
        (libc::NFT_SET_CONSTANT, "constant"),
        (libc::NFT_SET_INTERVAL, "interval"),
        (libc::NFT_SET_TIMEOUT, "timeout"),
    ]
    .into_iter()
    .filter(|(flag, _)| flags & *flag as u32 != 0)
    .map(|(_, flag_name)| flag_name)
    .collect();
    let elements: Vec<SetElement> = items
        .filter_map(|item| match &item.kind {
            ItemKind::SetElements { set, elements } if set == name => Some(elements.iter()),
            _ => None,
        })
        .flatten()
        .cloned()
        .collect();
    let shown = if flags & libc::NFT_SET_INTERVAL as u32 != 0 {
        render_intervals(&elements)
    } else {
        elements
            .iter()
            .map(|element| match address(&element.key) {
                Some(address) => address.to_string(),
                None => format!("{:02x?}", element.key),
            })
            .collect()
    };
    write_set(out, name, &key_type_name(key_type), &flag_names, &shown);
}

/// A set in `nft list table` syntax from its parts (the key type and flags
/// as nft names them, the elements as text), one element per line: what
/// both the reader and a planner that renders its own table write.
pub fn write_set(
    out: &mut String,
    name: &str,
    key_type: &str,
    flags: &[&str],
    elements: &[String],
) {
    let _ = writeln!(out, "\tset {name} {{");
    let _ = writeln!(out, "\t\ttype {key_type}");
    if !flags.is_empty() {
        let _ = writeln!(out, "\t\tflags {}", flags.join(","));
    }
    if !elements.is_empty() {
        let separator = format!(",\n{ELEMENT_INDENT}");
        let _ = writeln!(out, "\t\telements = {{ {} }}", elements.join(&separator));
    }
    out.push_str("\t}\n");
}

fn key_type_name(key_type: u32) -> String {
    match key_type {
        7 => "ipv4_addr".into(),
        8 => "ipv6_addr".into(),
        other => format!("type {other}"),
    }
}

const HOOK_POSTROUTING: u32 = libc::NF_INET_POST_ROUTING as u32;

/// nft's names for the standard priorities it would print by name.
fn priority_name(chain_type: &str, family: ProtoFamily, hook: u32, priority: i32) -> String {
    match (chain_type, family, hook, priority) {
        ("nat", _, HOOK_POSTROUTING, 100) => "srcnat".into(),
        ("filter", _, _, 0) => "filter".into(),
        (_, _, _, p) => p.to_string(),
    }
}

fn hook_name(family: ProtoFamily, hook: u32) -> String {
    match (family, hook) {
        (ProtoFamily::NetDev, 0) => "ingress".into(),
        (ProtoFamily::NetDev, 1) => "egress".into(),
        (ProtoFamily::NetDev, other) => other.to_string(),
        (_, 0) => "prerouting".into(),
        (_, 1) => "input".into(),
        (_, 2) => "forward".into(),
        (_, 3) => "output".into(),
        (_, HOOK_POSTROUTING) => "postrouting".into(),
        (_, other) => other.to_string(),
    }
}

/// An IPv4 or IPv6 address from 4 or 16 bytes.
pub fn address(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(bytes).ok()?,
        ))),
        _ => None,
    }
}

/// The prefix length of a contiguous netmask; None if it is not one.
pub fn prefix_len(mask: &[u8]) -> Option<u32> {
    let ones: u32 = mask.iter().map(|b| b.count_ones()).sum();
    let contiguous = mask
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| b >> i & 1 == 1))
        .skip(ones as usize)
        .all(|bit| !bit);
    contiguous.then_some(ones)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nftnl::{Batch, Chain, MsgType, ProtoFamily, Rule, Table, nft_expr};

    #[test]
    fn a_rule_of_another_shape_is_shown_in_full_not_hidden() {
        let table = Table::new(c"noverlay", ProtoFamily::Inet);
        let chain = Chain::new(c"masquerade_to_dpu", &table);
        let mut rule = Rule::new(&chain);
        rule.add_expr(&nft_expr!(counter));
        rule.add_expr(&nft_expr!(verdict accept));
        let mut batch = Batch::new();
        batch.add(&chain, MsgType::Add);
        batch.add(&rule, MsgType::Add);
        let bytes: Vec<u8> = batch.finalize().iter().flatten().copied().collect();
        let id = TableId::new(ProtoFamily::Inet, "noverlay");
        let text = render_table(&id, None, &parse(&bytes), |_| None);
        assert!(
            text.contains("\t\t# unrecognised: inet noverlay masquerade_to_dpu [ counter pkts 0 bytes 0 ] [ immediate reg 0 accept ]"),
            "{text}"
        );
        // Another table's items are not ours to show.
        let other = TableId::new(ProtoFamily::Inet, "other");
        assert_eq!(
            render_table(&other, None, &parse(&bytes), |_| None),
            "table inet other {\n}\n"
        );
    }

    #[test]
    fn only_contiguous_masks_are_prefixes() {
        assert_eq!(prefix_len(&[255, 255, 128, 0]), Some(17));
        assert_eq!(prefix_len(&[0, 0, 0, 0]), Some(0));
        assert_eq!(prefix_len(&[255, 0, 255, 0]), None);
    }
}
