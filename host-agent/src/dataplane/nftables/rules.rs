//! Our nftables table as a netlink transaction: built from the plan with
//! nftnl, one rule per CIDR (nftnl has no interval sets), committed by the
//! kernel as one unit.

use super::{NftError, cstring, ownership::MarkedTable};
use crate::plan::{NftPlan, SnatRule};
use ipnet::IpNet;
use nftnl::{
    Batch, Chain, ChainType, Hook, MsgType, Policy, ProtoFamily, Rule, Table,
    expr::{self, CmpOp, InterfaceName},
    nft_expr,
};
use std::net::IpAddr;

/// Chain priority of srcnat in the nat postrouting hook.
const SRCNAT_PRIORITY: i32 = 100;

/// A finalized batch: its bytes (sent in one sendmsg) and the sequence
/// numbers whose acks complete it.
pub struct Transaction {
    pub bytes: Vec<u8>,
    pub sequences: Vec<u32>,
}

fn finish(batch: Batch) -> Transaction {
    let batch = batch.finalize();
    Transaction {
        bytes: batch.iter().flatten().copied().collect(),
        sequences: batch.sequence_numbers().collect(),
    }
}

/// Replaces our table with `plan` in one transaction: add (so that the
/// delete cannot fail), delete, then create table (marked as ours), chain
/// and rules. The caller checks first that the table is ours.
/// Packets see either the old table or the new one, never neither.
pub fn replace(plan: &NftPlan) -> Result<Transaction, NftError> {
    let table_name = cstring(&plan.table)?;
    let chain_name = cstring(plan.chain)?;
    let gateway = cstring(&plan.gateway_interface)?;
    // Chains and rules name their table; the table messages carry our mark.
    let table = Table::new(&table_name, ProtoFamily::Inet);
    let marked = MarkedTable::new(table_name.clone());
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

    for snat in &plan.rules {
        let mut rule = Rule::new(&chain);
        add_snat_exprs(&mut rule, snat);
        batch.add(&rule, MsgType::Add);
    }
    Ok(finish(batch))
}

/// Removes our table and everything in it; absent is fine.
pub fn delete(table_name: &str) -> Result<Transaction, NftError> {
    let table = MarkedTable::new(cstring(table_name)?);
    let mut batch = Batch::new();
    batch.add(&table, MsgType::Add);
    batch.add(&table, MsgType::Del);
    Ok(finish(batch))
}

/// `meta nfproto <family> <fam> daddr <cidr> <fam> saddr != <to> counter snat <fam> to <to>`
fn add_snat_exprs(rule: &mut Rule, snat: &SnatRule) {
    let (nfproto, proto_family) = match snat.cidr {
        IpNet::V4(_) => (libc::NFPROTO_IPV4 as u8, ProtoFamily::Ipv4),
        IpNet::V6(_) => (libc::NFPROTO_IPV6 as u8, ProtoFamily::Ipv6),
    };
    rule.add_expr(&nft_expr!(meta nfproto));
    rule.add_expr(&nft_expr!(cmp == nfproto));
    match snat.cidr {
        IpNet::V4(_) => rule.add_expr(&nft_expr!(payload ipv4 daddr)),
        IpNet::V6(_) => rule.add_expr(&nft_expr!(payload ipv6 daddr)),
    }
    let zero = match snat.cidr {
        IpNet::V4(_) => IpAddr::from([0u8; 4]),
        IpNet::V6(_) => IpAddr::from([0u8; 16]),
    };
    rule.add_expr(&expr::Bitwise::new(snat.cidr.netmask(), zero));
    rule.add_expr(&expr::Cmp::new(CmpOp::Eq, snat.cidr.network()));
    match snat.cidr {
        IpNet::V4(_) => rule.add_expr(&nft_expr!(payload ipv4 saddr)),
        IpNet::V6(_) => rule.add_expr(&nft_expr!(payload ipv6 saddr)),
    }
    rule.add_expr(&expr::Cmp::new(CmpOp::Neq, snat.to));
    rule.add_expr(&nft_expr!(counter));
    match snat.to {
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

#[cfg(test)]
mod tests {
    use super::super::describe;
    use super::*;
    use crate::plan::NFT_CHAIN;
    use std::path::PathBuf;

    fn plan() -> NftPlan {
        NftPlan {
            table: "noverlay".into(),
            chain: NFT_CHAIN,
            gateway_interface: "eth0".into(),
            rules: vec![
                SnatRule {
                    cidr: "198.18.128.0/17".parse().expect("net"),
                    to: "169.254.0.2".parse().expect("ip"),
                },
                SnatRule {
                    cidr: "fd00:10:244::/48".parse().expect("net"),
                    to: "fd69::2".parse().expect("ip"),
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
        let marked = super::super::ownership::OWNER_MARK;
        assert_eq!(
            describe::render_table(&plan.table, Some(marked), &items),
            plan.render()
        );
    }
}
