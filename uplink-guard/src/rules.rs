//! The guard as one nftables transaction: the table (marked ours) is added,
//! deleted and created again with its egress chain and two rules per
//! masquerade subnet (source, destination), all in one batch: the uplink sees the old guard or
//! the new one, never none.

use super::{Field, GUARD_CHAIN, GUARD_MARK, GUARD_TABLE, GuardPlan, table_id};
use ipnet::IpNet;
use noverlay_nft::{
    NftError, Transaction, cstring,
    nftnl::{
        Batch, Chain, MsgType, NlMsg, ProtoFamily, Rule, Table,
        expr::{self, CmpOp, Ipv4HeaderField, Ipv6HeaderField, NetworkHeaderField, Payload},
        nft_expr,
        nftnl_sys::{self as sys, libc},
    },
    ownership::MarkedTable,
};
use std::{
    ffi::{CString, c_void},
    net::IpAddr,
};

/// The netdev egress hook (NF_NETDEV_EGRESS; nftnl's Hook has no name
/// for it).
const NF_NETDEV_EGRESS: u32 = 1;
/// "priority filter".
const FILTER_PRIORITY: i32 = 0;

/// Replaces the guard with `plan` in one transaction. The caller checks
/// first that a table of that name is ours.
pub fn replace(plan: &GuardPlan) -> Result<Transaction, NftError> {
    let table_name = cstring(GUARD_TABLE)?;
    let chain_name = cstring(GUARD_CHAIN)?;
    let marked = MarkedTable::new(&table_id(), GUARD_MARK)?;
    let mut batch = Batch::new();
    batch.add(&marked, MsgType::Add);
    batch.add(&marked, MsgType::Del);
    batch.add(&marked, MsgType::Add);
    batch.add(
        &EgressChain {
            table: table_name.clone(),
            name: chain_name.clone(),
            device: cstring(&plan.uplink)?,
        },
        MsgType::Add,
    );
    // Rules name their table and chain (the chain message above creates it).
    let table = Table::new(&table_name, ProtoFamily::NetDev);
    let chain = Chain::new(&chain_name, &table);
    for subnet in &plan.subnets {
        for field in Field::BOTH {
            let mut rule = Rule::new(&chain);
            add_drop_exprs(&mut rule, subnet, field);
            batch.add(&rule, MsgType::Add);
        }
    }
    Ok(Transaction::new(batch))
}

/// Removes the guard (absent is fine). The caller checks first that a
/// table of that name is ours.
pub fn delete() -> Result<Transaction, NftError> {
    Transaction::delete_table(&table_id(), GUARD_MARK)
}

/// `meta protocol <ip|ip6> <family> <saddr|daddr> <subnet> counter drop`
fn add_drop_exprs(rule: &mut Rule, subnet: &IpNet, field: Field) {
    // The ethertype, in network byte order as the kernel compares it.
    let ethertype: &[u8] = match subnet {
        IpNet::V4(_) => &[0x08, 0x00],
        IpNet::V6(_) => &[0x86, 0xdd],
    };
    rule.add_expr(&nft_expr!(meta proto));
    rule.add_expr(&expr::Cmp::new(CmpOp::Eq, ethertype));
    let address = match (subnet, field) {
        (IpNet::V4(_), Field::Source) => NetworkHeaderField::Ipv4(Ipv4HeaderField::Saddr),
        (IpNet::V4(_), Field::Destination) => NetworkHeaderField::Ipv4(Ipv4HeaderField::Daddr),
        (IpNet::V6(_), Field::Source) => NetworkHeaderField::Ipv6(Ipv6HeaderField::Saddr),
        (IpNet::V6(_), Field::Destination) => NetworkHeaderField::Ipv6(Ipv6HeaderField::Daddr),
    };
    rule.add_expr(&Payload::Network(address));
    let zero = match subnet {
        IpNet::V4(_) => IpAddr::from([0u8; 4]),
        IpNet::V6(_) => IpAddr::from([0u8; 16]),
    };
    rule.add_expr(&expr::Bitwise::new(subnet.netmask(), zero));
    rule.add_expr(&expr::Cmp::new(CmpOp::Eq, subnet.network()));
    rule.add_expr(&nft_expr!(counter));
    rule.add_expr(&nft_expr!(verdict drop));
}

/// A netdev base chain on the egress hook of one device, policy accept.
struct EgressChain {
    table: CString,
    name: CString,
    device: CString,
}

// SAFETY: writes one chain message (a few short strings and integers), far
// below nft_nlmsg_maxsize().
unsafe impl NlMsg for EgressChain {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, msg_type: MsgType) {
        let (kind, flags) = match msg_type {
            MsgType::Add => (libc::NFT_MSG_NEWCHAIN, libc::NLM_F_ACK | libc::NLM_F_CREATE),
            MsgType::Del => (libc::NFT_MSG_DELCHAIN, libc::NLM_F_ACK),
        };
        // SAFETY: the chain is freed here; libnftnl copies what it is given.
        unsafe {
            let chain = sys::nftnl_chain_alloc();
            if chain.is_null() {
                return;
            }
            let attr = |a: u32| a as u16;
            sys::nftnl_chain_set_u32(
                chain,
                attr(sys::NFTNL_CHAIN_FAMILY),
                libc::NFPROTO_NETDEV as u32,
            );
            sys::nftnl_chain_set_str(chain, attr(sys::NFTNL_CHAIN_TABLE), self.table.as_ptr());
            sys::nftnl_chain_set_str(chain, attr(sys::NFTNL_CHAIN_NAME), self.name.as_ptr());
            if msg_type == MsgType::Add {
                sys::nftnl_chain_set_str(chain, attr(sys::NFTNL_CHAIN_TYPE), c"filter".as_ptr());
                sys::nftnl_chain_set_u32(chain, attr(sys::NFTNL_CHAIN_HOOKNUM), NF_NETDEV_EGRESS);
                sys::nftnl_chain_set_s32(chain, attr(sys::NFTNL_CHAIN_PRIO), FILTER_PRIORITY);
                sys::nftnl_chain_set_str(chain, attr(sys::NFTNL_CHAIN_DEV), self.device.as_ptr());
                sys::nftnl_chain_set_u32(
                    chain,
                    attr(sys::NFTNL_CHAIN_POLICY),
                    libc::NF_ACCEPT as u32,
                );
            }
            let header = sys::nftnl_nlmsg_build_hdr(
                buf.cast(),
                kind as u16,
                libc::NFPROTO_NETDEV as u16,
                flags as u16,
                seq,
            );
            sys::nftnl_chain_nlmsg_build_payload(header, chain);
            sys::nftnl_chain_free(chain);
        }
    }
}
