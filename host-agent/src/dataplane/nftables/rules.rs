//! Our SNAT table in nftables, both ways: the plan as a netlink transaction
//! (built with nftnl: per family an interval set of the cluster CIDRs and
//! one rule that looks the destination up in it, committed by the kernel as
//! one unit), and our rules' expressions decoded back into nft syntax
//! ([`render_rule`]) for what the host reports.

use crate::plan::{NFT_TABLE_MARK, NftPlan, SnatFamily};
use noverlay_nft::{
    NftError, TableId, Transaction, cstring,
    describe::{Expr, address},
    nftnl::{
        Batch, Chain, ChainType, Hook, MsgType, Policy, ProtoFamily, Rule, Table,
        expr::{self, CmpOp, InterfaceName, Lookup},
        nft_expr,
        nftnl_sys::libc,
    },
    ownership::MarkedTable,
    sets::add_prefix_set,
};
use std::{ffi::CStr, net::IpAddr};

/// Chain priority of srcnat in the nat postrouting hook.
const SRCNAT_PRIORITY: i32 = 100;

/// Our table: family inet.
pub fn table_id(name: &str) -> TableId {
    TableId::new(ProtoFamily::Inet, name)
}

/// Replaces our table with `plan` in one transaction: add (so that the
/// delete cannot fail), delete, then create table (marked as ours), chain
/// sets and rules. The caller checks first that the table is ours.
/// Packets see either the old table or the new one, never neither.
pub fn replace(plan: &NftPlan) -> Result<Transaction, NftError> {
    let id = table_id(&plan.table);
    let table_name = cstring(&plan.table)?;
    let chain_name = cstring(plan.chain)?;
    let gateway = cstring(&plan.gateway_interface)?;
    // Chains and rules name their table; the table messages carry our mark.
    let table = Table::new(&table_name, ProtoFamily::Inet);
    let marked = MarkedTable::new(&id, NFT_TABLE_MARK)?;
    let mut batch = Batch::new();
    batch.add(&marked, MsgType::Add);
    batch.add(&marked, MsgType::Del);
    batch.add(&marked, MsgType::Add);
    let mut chain = Chain::new(&chain_name, &table);
    chain.set_type(ChainType::Nat);
    chain.set_hook(Hook::PostRouting, SRCNAT_PRIORITY);
    chain.set_policy(Policy::Accept);
    batch.add(&chain, MsgType::Add);

    // oifname != "<gateway>" return
    let mut other_interfaces = Rule::new(&chain);
    other_interfaces.add_expr(&nft_expr!(meta oifname));
    other_interfaces.add_expr(&expr::Cmp::new(
        CmpOp::Neq,
        InterfaceName::Exact(gateway.clone()),
    ));
    other_interfaces.add_expr(&nft_expr!(verdict return));
    batch.add(&other_interfaces, MsgType::Add);

    for (id, family) in (1..).zip(&plan.families) {
        let set_name = cstring(family.set_name())?;
        let lookup = add_prefix_set(&mut batch, &table, &set_name, id, &family.cidrs)?;
        let mut rule = Rule::new(&chain);
        add_snat_exprs(&mut rule, family, &lookup);
        batch.add(&rule, MsgType::Add);
    }
    Ok(Transaction::new(batch))
}

/// Removes our table and everything in it; absent is fine.
pub fn delete(table_name: &str) -> Result<Transaction, NftError> {
    Transaction::delete_table(&table_id(table_name), NFT_TABLE_MARK)
}

/// `meta nfproto <family> <fam> daddr @<set> <fam> saddr != <to> counter snat <fam> to <to>`
fn add_snat_exprs(rule: &mut Rule, family: &SnatFamily, lookup: &Lookup) {
    let (nfproto, proto_family) = match family.to {
        IpAddr::V4(_) => (libc::NFPROTO_IPV4 as u8, ProtoFamily::Ipv4),
        IpAddr::V6(_) => (libc::NFPROTO_IPV6 as u8, ProtoFamily::Ipv6),
    };
    rule.add_expr(&nft_expr!(meta nfproto));
    rule.add_expr(&nft_expr!(cmp == nfproto));
    match family.to {
        IpAddr::V4(_) => rule.add_expr(&nft_expr!(payload ipv4 daddr)),
        IpAddr::V6(_) => rule.add_expr(&nft_expr!(payload ipv6 daddr)),
    }
    rule.add_expr(lookup);
    match family.to {
        IpAddr::V4(_) => rule.add_expr(&nft_expr!(payload ipv4 saddr)),
        IpAddr::V6(_) => rule.add_expr(&nft_expr!(payload ipv6 saddr)),
    }
    rule.add_expr(&expr::Cmp::new(CmpOp::Neq, family.to));
    rule.add_expr(&nft_expr!(counter));
    match family.to {
        IpAddr::V4(v4) => rule.add_expr(&expr::Immediate::new(v4.octets(), expr::Register::Reg1)),
        IpAddr::V6(v6) => rule.add_expr(&expr::Immediate::new(v6.octets(), expr::Register::Reg1)),
    }
    rule.add_expr(&expr::Nat {
        nat_type: expr::NatType::SNat,
        family: proto_family,
        ip_register: expr::Register::Reg1,
        port_register: None,
    });
}

/// A table in `nft list` syntax with every counter at zero: what the
/// plan renders, to compare a table read back with it.
pub fn without_counters(listing: &str) -> String {
    let mut out = String::with_capacity(listing.len());
    for line in listing.split_inclusive('\n') {
        match line.split_once("counter packets ") {
            Some((before, after)) => {
                let rest = after
                    .split_once(" bytes ")
                    .and_then(|(_, bytes)| bytes.split_once(' ').map(|(_, rest)| rest));
                match rest {
                    Some(rest) => {
                        out.push_str(before);
                        out.push_str("counter packets 0 bytes 0 ");
                        out.push_str(rest);
                    }
                    None => out.push_str(line),
                }
            }
            None => out.push_str(line),
        }
    }
    out
}

/// One of our two rule shapes in nft syntax; None for anything else.
pub fn render_rule(expressions: &[Expr]) -> Option<String> {
    use Expr::*;
    const META_OIFNAME: u32 = libc::NFT_META_OIFNAME as u32;
    const META_NFPROTO: u32 = libc::NFT_META_NFPROTO as u32;
    const EQ: u32 = libc::NFT_CMP_EQ as u32;
    const NEQ: u32 = libc::NFT_CMP_NEQ as u32;
    const NETWORK: u32 = libc::NFT_PAYLOAD_NETWORK_HEADER as u32;
    const SNAT: u32 = libc::NFT_NAT_SNAT as u32;
    match expressions {
        [
            Meta(META_OIFNAME),
            Cmp { op: NEQ, data },
            Verdict(libc::NFT_RETURN),
        ] => {
            let name = CStr::from_bytes_until_nul(data).ok()?.to_string_lossy();
            Some(format!("oifname != \"{name}\" return"))
        }
        [
            Meta(META_NFPROTO),
            Cmp {
                op: EQ,
                data: nfproto,
            },
            Payload {
                base: NETWORK,
                offset: dst_offset,
                len,
            },
            Expr::Lookup {
                set,
                inverted: false,
            },
            Payload {
                base: NETWORK,
                offset: src_offset,
                len: src_len,
            },
            Cmp {
                op: NEQ,
                data: not_from,
            },
            Counter { packets, bytes },
            Data(to),
            Nat { kind: SNAT, family },
        ] => {
            let (name, expected) = match (nfproto.first().copied()?, *family) {
                (p, f) if p == libc::NFPROTO_IPV4 as u8 && f == libc::NFPROTO_IPV4 as u32 => {
                    ("ip", (16, 12, 4))
                }
                (p, f) if p == libc::NFPROTO_IPV6 as u8 && f == libc::NFPROTO_IPV6 as u32 => {
                    ("ip6", (24, 8, 16))
                }
                _ => return None,
            };
            if (*dst_offset, *src_offset, *len) != expected || src_len != len {
                return None;
            }
            let not_from = address(not_from)?;
            let to = address(to)?;
            Some(format!(
                "{name} daddr @{set} {name} saddr != {not_from} counter packets {packets} bytes {bytes} snat {name} to {to}"
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::NFT_CHAIN;
    use noverlay_nft::describe;
    use std::path::PathBuf;

    #[test]
    fn counters_are_zeroed_and_nothing_else_changes() {
        let held = "\t\toifname != \"eth0\" return\n\t\tip daddr @cluster_cidrs_v4 ip saddr != 169.254.0.2 counter packets 12 bytes 1008 snat ip to 169.254.0.2\n";
        assert_eq!(
            without_counters(held),
            "\t\toifname != \"eth0\" return\n\t\tip daddr @cluster_cidrs_v4 ip saddr != 169.254.0.2 counter packets 0 bytes 0 snat ip to 169.254.0.2\n"
        );
        // A counter of another shape is left as it is: it compares unequal.
        let odd = "\t\tcounter packets 3 bytes\n";
        assert_eq!(without_counters(odd), odd);
    }

    fn plan() -> NftPlan {
        NftPlan {
            table: "noverlay".into(),
            chain: NFT_CHAIN,
            gateway_interface: "eth0".into(),
            families: vec![
                SnatFamily {
                    to: "169.254.0.2".parse().expect("ip"),
                    cidrs: vec![
                        "198.19.0.0/24".parse().expect("net"),
                        "198.18.128.0/17".parse().expect("net"),
                    ],
                },
                SnatFamily {
                    to: "fd69::2".parse().expect("ip"),
                    cidrs: vec!["fd00:10:244::/48".parse().expect("net")],
                },
            ],
        }
    }

    /// The expressions the agent programs, as libnftnl prints them.
    #[test]
    fn the_programmed_expressions_match_golden() {
        let transaction = replace(&plan()).expect("transaction");
        let text = describe::expressions(&transaction.bytes).join("\n") + "\n";
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
        noverlay_test_support::assert_golden(&dir, "nft_exprs_dual.txt", &text);
    }

    /// Decoded back into nft syntax, the programmed rules say what the plan
    /// says: the expressions and the plan's text cannot drift apart.
    #[test]
    fn the_programmed_rules_decode_to_the_plan() {
        let plan = plan();
        let transaction = replace(&plan).expect("transaction");
        let items = describe::parse(&transaction.bytes);
        assert_eq!(
            describe::render_table(
                &table_id(&plan.table),
                Some(NFT_TABLE_MARK),
                &items,
                render_rule
            ),
            plan.render()
        );
    }
}
