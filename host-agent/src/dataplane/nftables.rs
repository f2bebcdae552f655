//! nftables through nftnl: our table replaced atomically in one netlink
//! batch, removed in one batch, and a watcher that reports ruleset changes
//! made by anyone else.

use crate::plan::{NftPlan, SnatRule};
use ipnet::IpNet;
use nftnl::{
    Batch, Chain, ChainType, FinalizedBatch, Hook, MsgType, Policy, ProtoFamily, Rule, Table,
    expr::{self, CmpOp, InterfaceName},
    nft_expr,
};
use rtnetlink::sys::{Socket, protocols::NETLINK_NETFILTER};
use std::{ffi::CString, net::IpAddr, os::fd::AsRawFd, time::Duration};
use tokio::sync::mpsc;

/// Chain priority of srcnat in the nat postrouting hook.
const SRCNAT_PRIORITY: i32 = 100;
/// nfnetlink multicast group of nftables ruleset changes.
const NFNLGRP_NFTABLES: u32 = 7;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWGEN: u16 = 15;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HDRLEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("nftables: invalid name {0:?}")]
    Name(String),
    #[error("nftables netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("nftables refused the batch: {0}")]
    Refused(std::io::Error),
}

/// A netlink socket to nftables, opened in the current network namespace.
pub struct Nftables {
    socket: Socket,
    port: u32,
}

impl Nftables {
    pub fn open() -> Result<Self, NftError> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(NftError::Socket)?;
        let address = socket.bind_auto().map_err(NftError::Socket)?;
        set_receive_timeout(&socket, Duration::from_secs(5)).map_err(NftError::Socket)?;
        // One ack per message of a batch (a rule per CIDR): acks without the
        // echoed request, and room for a thousand of them.
        socket.set_cap_ack(true).map_err(NftError::Socket)?;
        socket.set_ext_ack(true).map_err(NftError::Socket)?;
        socket
            .set_rx_buf_sz(4 * 1024 * 1024)
            .map_err(NftError::Socket)?;
        Ok(Nftables {
            socket,
            port: address.port_number(),
        })
    }

    /// The netlink port of our socket: nftables events name it as their
    /// origin, which tells our own changes from everyone else's.
    pub fn port(&self) -> u32 {
        self.port
    }

    /// Replaces our table with `plan` in one transaction: add (so that the
    /// delete cannot fail), delete, then create table, chain and rules.
    /// Packets see either the old table or the new one, never neither.
    pub fn replace(&self, plan: &NftPlan) -> Result<(), NftError> {
        let table_name = cstring(&plan.table)?;
        let chain_name = cstring(plan.chain)?;
        let gateway = cstring(&plan.gateway_interface)?;
        let table = Table::new(&table_name, ProtoFamily::Inet);
        let mut batch = Batch::new();
        batch.add(&table, MsgType::Add);
        batch.add(&table, MsgType::Del);
        batch.add(&table, MsgType::Add);
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
        self.send(&batch.finalize())
    }

    /// Removes our table and everything in it; absent is fine.
    pub fn delete(&self, table_name: &str) -> Result<(), NftError> {
        let name = cstring(table_name)?;
        let table = Table::new(&name, ProtoFamily::Inet);
        let mut batch = Batch::new();
        batch.add(&table, MsgType::Add);
        batch.add(&table, MsgType::Del);
        self.send(&batch.finalize())
    }

    fn send(&self, batch: &FinalizedBatch) -> Result<(), NftError> {
        drain(&self.socket);
        // One sendmsg carries the whole batch: the kernel commits it as one
        // transaction or not at all.
        let bytes: Vec<u8> = batch.iter().flatten().copied().collect();
        self.socket.send(&bytes, 0).map_err(NftError::Socket)?;
        let mut expected: Vec<u32> = batch.sequence_numbers().collect();
        let mut buffer = vec![0u8; 64 * 1024];
        while !expected.is_empty() {
            let received = self
                .socket
                .recv(&mut &mut buffer[..], 0)
                .map_err(NftError::Socket)?;
            for message in NetlinkMessages::new(&buffer[..received]) {
                if message.kind != NLMSG_ERROR {
                    continue;
                }
                let code = message
                    .payload
                    .get(..4)
                    .and_then(|b| b.try_into().ok())
                    .map(i32::from_ne_bytes)
                    .unwrap_or(0);
                if code != 0 {
                    return Err(NftError::Refused(std::io::Error::from_raw_os_error(-code)));
                }
                expected.retain(|seq| *seq != message.seq);
            }
        }
        Ok(())
    }
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

fn cstring(name: &str) -> Result<CString, NftError> {
    CString::new(name).map_err(|_| NftError::Name(name.to_string()))
}

fn set_receive_timeout(socket: &Socket, timeout: Duration) -> std::io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: a valid fd and a timeval of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Discards replies left over from an earlier, failed batch.
fn drain(socket: &Socket) {
    let mut buffer = vec![0u8; 64 * 1024];
    while socket
        .recv(&mut &mut buffer[..], libc::MSG_DONTWAIT)
        .is_ok_and(|n| n > 0)
    {}
}

/// Watches nftables for transactions by anyone else and sends one `()` per
/// change (or per lost batch of events) on the returned channel. Our own
/// transactions are recognised by the netlink port that NEWGEN names as
/// their origin (`own_port`) and ignored.
pub fn watch_foreign_changes(own_port: u32) -> Result<mpsc::UnboundedReceiver<()>, NftError> {
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(NftError::Socket)?;
    socket.bind_auto().map_err(NftError::Socket)?;
    socket
        .add_membership(NFNLGRP_NFTABLES)
        .map_err(NftError::Socket)?;
    socket
        .set_rx_buf_sz(4 * 1024 * 1024)
        .map_err(NftError::Socket)?;
    // Wake up now and then to notice that nobody listens any more.
    set_receive_timeout(&socket, Duration::from_secs(1)).map_err(NftError::Socket)?;
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("nft-watch".into())
        .spawn(move || {
            let mut buffer = vec![0u8; 256 * 1024];
            loop {
                if tx.is_closed() {
                    return;
                }
                match socket.recv(&mut &mut buffer[..], 0) {
                    Ok(n) => {
                        let foreign = NetlinkMessages::new(&buffer[..n]).any(|m| {
                            m.kind == (NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWGEN)
                                && m.port != own_port
                        });
                        if foreign && tx.send(()).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        // Events were lost: assume the worst.
                        if tx.send(()).is_err() {
                            return;
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "nftables event socket failed; periodic reconcile only");
                        return;
                    }
                }
            }
        })
        .map_err(NftError::Socket)?;
    Ok(rx)
}

/// One netlink message: its type, sequence number, origin and payload.
struct NetlinkMessage<'a> {
    kind: u16,
    seq: u32,
    /// The sender's netlink port (0 for the kernel itself).
    port: u32,
    payload: &'a [u8],
}

/// Iterates over the netlink messages in a buffer; stops at the first
/// malformed header instead of trusting its length.
struct NetlinkMessages<'a> {
    rest: &'a [u8],
}

impl<'a> NetlinkMessages<'a> {
    fn new(buffer: &'a [u8]) -> Self {
        NetlinkMessages { rest: buffer }
    }
}

impl<'a> Iterator for NetlinkMessages<'a> {
    type Item = NetlinkMessage<'a>;

    fn next(&mut self) -> Option<NetlinkMessage<'a>> {
        let header = self.rest.get(..NLMSG_HDRLEN)?;
        let len = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len < NLMSG_HDRLEN || len > self.rest.len() {
            self.rest = &[];
            return None;
        }
        let message = NetlinkMessage {
            kind: u16::from_ne_bytes([header[4], header[5]]),
            seq: u32::from_ne_bytes([header[8], header[9], header[10], header[11]]),
            port: u32::from_ne_bytes([header[12], header[13], header[14], header[15]]),
            payload: &self.rest[NLMSG_HDRLEN..len],
        };
        let aligned = ((len + 3) & !3).min(self.rest.len());
        self.rest = &self.rest[aligned..];
        Some(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netlink_walker_stops_at_garbage_instead_of_panicking() {
        let mut buffer = Vec::new();
        // A valid 20-byte NLMSG_ERROR with code 0, then a header claiming
        // more bytes than exist.
        buffer.extend_from_slice(&20u32.to_ne_bytes());
        buffer.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        buffer.extend_from_slice(&0u16.to_ne_bytes());
        buffer.extend_from_slice(&7u32.to_ne_bytes());
        buffer.extend_from_slice(&0u32.to_ne_bytes());
        buffer.extend_from_slice(&0i32.to_ne_bytes());
        buffer.extend_from_slice(&999u32.to_ne_bytes());
        buffer.extend_from_slice(&[0u8; 12]);
        let messages: Vec<_> = NetlinkMessages::new(&buffer).collect();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].seq, 7);
        assert_eq!(messages[0].kind, NLMSG_ERROR);
        assert!(NetlinkMessages::new(&[1, 2, 3]).next().is_none());
    }
}
