//! nftables through nftnl, shared by both agents: a table of ours is
//! marked by a comment and replaced atomically in one netlink batch
//! ([`Transaction`]), may hold interval sets of prefixes ([`sets`]), is
//! read back from the kernel ([`Nftables::read`]) and decoded into nft
//! syntax ([`describe`]); [`ownership`] tells ours from a
//! same-named table of someone else's, and [`watch_foreign_changes`]
//! reports ruleset changes made by anyone else.
//!
//! The netlink socket is blocking (nftnl's world); every exchange runs on
//! the blocking pool under a deadline, so the async runtime never waits on
//! the kernel.

pub mod describe;
pub mod netlink;
pub mod ownership;
pub mod sets;
mod watch;

use netlink::{
    NFT_MSG_GETCHAIN, NFT_MSG_GETRULE, NFT_MSG_GETSET, NFT_MSG_GETSETELEM, NLMSG_DONE, NLMSG_ERROR,
    NetlinkMessages, nft_type,
};
pub use nftnl;
use nftnl::{
    Batch, ProtoFamily,
    nftnl_sys::{self as sys, libc},
};
use rtnetlink::sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use std::{
    ffi::CString,
    fmt,
    os::fd::AsRawFd,
    sync::{Arc, Mutex},
    time::Duration,
};
pub use watch::{ChangeListener, is_foreign_commit, watch_foreign_changes};

/// How long the kernel may take to answer one exchange (the socket's own
/// receive timeout; the async deadline adds a margin over it).
const KERNEL_TIMEOUT: Duration = Duration::from_secs(5);
const EXCHANGE_DEADLINE: Duration = Duration::from_secs(7);

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("nftables: invalid name {0:?}")]
    Name(String),
    #[error("nftables netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("nftables refused the batch: {0}")]
    Refused(std::io::Error),
    #[error("nftables set: {0}")]
    Set(String),
    #[error("nftables did not answer within {EXCHANGE_DEADLINE:?}")]
    Timeout,
}

impl NftError {
    /// The errno the kernel refused a batch with, if it did.
    pub fn refused_with(&self) -> Option<i32> {
        match self {
            NftError::Refused(e) => e.raw_os_error(),
            _ => None,
        }
    }
}

/// A table, by family and name, as nftables addresses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableId {
    pub family: ProtoFamily,
    pub name: String,
}

impl TableId {
    pub fn new(family: ProtoFamily, name: impl Into<String>) -> Self {
        TableId {
            family,
            name: name.into(),
        }
    }

    /// The family as nft names it ("inet", "netdev"...).
    pub fn family_name(&self) -> &'static str {
        family_name(self.family)
    }

    pub(crate) fn c_name(&self) -> Result<CString, NftError> {
        cstring(&self.name)
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.family_name(), self.name)
    }
}

fn family_name(family: ProtoFamily) -> &'static str {
    match family {
        ProtoFamily::Inet => "inet",
        ProtoFamily::Ipv4 => "ip",
        ProtoFamily::Ipv6 => "ip6",
        ProtoFamily::NetDev => "netdev",
        ProtoFamily::Bridge => "bridge",
        ProtoFamily::Arp => "arp",
        _ => "unspec",
    }
}

/// A finalized batch: its bytes (sent in one sendmsg) and the sequence
/// numbers whose acks complete it.
pub struct Transaction {
    pub bytes: Vec<u8>,
    pub sequences: Vec<u32>,
}

impl Transaction {
    pub fn new(batch: Batch) -> Self {
        let batch = batch.finalize();
        Transaction {
            bytes: batch.iter().flatten().copied().collect(),
            sequences: batch.sequence_numbers().collect(),
        }
    }

    /// Removes a table of ours and everything in it; absent is fine (the
    /// table is added first so that the delete cannot fail). The caller
    /// checks first that the table is ours.
    pub fn delete_table(table: &TableId, mark: &str) -> Result<Self, NftError> {
        let marked = ownership::MarkedTable::new(table, mark)?;
        let mut batch = Batch::new();
        batch.add(&marked, nftnl::MsgType::Add);
        batch.add(&marked, nftnl::MsgType::Del);
        Ok(Transaction::new(batch))
    }
}

/// A table as read from the kernel.
pub struct TableDump {
    /// The table's comment, if it has one.
    pub comment: Option<String>,
    /// Its chains, then (when asked for) its rules, sets' elements and sets.
    pub items: Vec<describe::Item>,
}

/// How much of a table to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    Chains,
    ChainsAndRules,
}

/// A netlink socket to nftables, opened in the current network namespace.
pub struct Nftables {
    socket: Arc<Mutex<Socket>>,
    port: u32,
}

impl Nftables {
    pub fn open() -> Result<Self, NftError> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(NftError::Socket)?;
        let address = socket.bind_auto().map_err(NftError::Socket)?;
        kernel_only(&mut socket).map_err(NftError::Socket)?;
        set_receive_timeout(&socket, KERNEL_TIMEOUT).map_err(NftError::Socket)?;
        // One ack per message of a batch (a rule, or a message's worth of a
        // set's elements): acks without the echoed request, and room for a
        // thousand of them.
        socket.set_cap_ack(true).map_err(NftError::Socket)?;
        socket.set_ext_ack(true).map_err(NftError::Socket)?;
        socket
            .set_rx_buf_sz(4 * 1024 * 1024)
            .map_err(NftError::Socket)?;
        Ok(Nftables {
            socket: Arc::new(Mutex::new(socket)),
            port: address.port_number(),
        })
    }

    /// The netlink port of our socket: nftables events name it as their
    /// origin, which tells our own changes from everyone else's.
    pub fn port(&self) -> u32 {
        self.port
    }

    /// Commits a transaction: all of it or none of it.
    pub async fn commit(&self, transaction: Transaction) -> Result<(), NftError> {
        self.exchange(move |socket| send_and_wait_for_acks(socket, &transaction))
            .await
    }

    /// The table as the kernel has it (None when absent): its comment and
    /// chains, and its rules (counters included) and sets (elements
    /// included) at [`Depth::ChainsAndRules`].
    pub async fn read(&self, table: &TableId, depth: Depth) -> Result<Option<TableDump>, NftError> {
        let family = table.family as u16;
        let name = table.c_name()?;
        self.exchange(move |socket| {
            let Some(comment) = get_table(socket, family, &name)? else {
                return Ok(None);
            };
            let mut items = dump(socket, family, Dump::Chains, &name)?;
            if depth == Depth::ChainsAndRules {
                items.extend(dump(socket, family, Dump::Rules, &name)?);
                let sets = dump(socket, family, Dump::Sets, &name)?;
                for set in &sets {
                    if let describe::ItemKind::Set { name: set_name, .. } = &set.kind {
                        let set_name = cstring(set_name)?;
                        items.extend(dump(socket, family, Dump::SetElements(&set_name), &name)?);
                    }
                }
                items.extend(sets);
            }
            Ok(Some(TableDump { comment, items }))
        })
        .await
    }

    async fn exchange<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Socket) -> Result<T, NftError> + Send + 'static,
    ) -> Result<T, NftError> {
        let socket = self.socket.clone();
        let task = tokio::task::spawn_blocking(move || {
            let socket = noverlay_runtime::lock(&socket);
            drain(&socket);
            work(&socket)
        });
        match tokio::time::timeout(EXCHANGE_DEADLINE, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(NftError::Socket(std::io::Error::other(join))),
            Err(_) => Err(NftError::Timeout),
        }
    }
}

/// One sendmsg carries the whole batch: the kernel commits it as one
/// transaction or not at all.
fn send_and_wait_for_acks(socket: &Socket, transaction: &Transaction) -> Result<(), NftError> {
    // A batch larger than the send buffer fails with EMSGSIZE (from ~500
    // rules at the default 208 KiB): grow the buffer to fit, as nft does.
    ensure_send_buffer(socket, transaction.bytes.len()).map_err(NftError::Socket)?;
    socket
        .send(&transaction.bytes, 0)
        .map_err(NftError::Socket)?;
    let mut expected = transaction.sequences.clone();
    let mut buffer = vec![0u8; 64 * 1024];
    while !expected.is_empty() {
        let received = socket
            .recv(&mut &mut buffer[..], 0)
            .map_err(NftError::Socket)?;
        for message in NetlinkMessages::new(&buffer[..received]) {
            if message.kind != NLMSG_ERROR {
                continue;
            }
            let code = message.error_code();
            if code != 0 {
                return Err(NftError::Refused(std::io::Error::from_raw_os_error(-code)));
            }
            expected.retain(|seq| *seq != message.seq);
        }
    }
    Ok(())
}

/// The table `name` of `family`: None when absent, else its comment (if any).
fn get_table(
    socket: &Socket,
    family: u16,
    name: &CString,
) -> Result<Option<Option<String>>, NftError> {
    socket
        .send(&ownership::get_table_request(family, name, DUMP_SEQ), 0)
        .map_err(NftError::Socket)?;
    let mut buffer = vec![0u8; 64 * 1024];
    let mut table = None;
    loop {
        let received = socket
            .recv(&mut &mut buffer[..], 0)
            .map_err(NftError::Socket)?;
        for message in NetlinkMessages::new(&buffer[..received]) {
            match message.kind {
                NLMSG_ERROR => {
                    return match message.error_code() {
                        0 => Ok(table),
                        code if -code == libc::ENOENT => Ok(None),
                        code => Err(NftError::Refused(std::io::Error::from_raw_os_error(-code))),
                    };
                }
                kind if kind == nft_type(netlink::NFT_MSG_NEWTABLE) => {
                    table = Some(ownership::table_comment(message.bytes));
                }
                _ => {}
            }
        }
    }
}

/// Sequence number of our dump requests (acks are matched by type, not seq).
const DUMP_SEQ: u32 = 1;

/// What of a table to dump.
#[derive(Clone, Copy)]
enum Dump<'a> {
    Chains,
    Rules,
    Sets,
    /// The elements of the named set.
    SetElements(&'a CString),
}

/// Dumps the chains, rules, sets or a set's elements of the table `table`,
/// parsed.
fn dump(
    socket: &Socket,
    family: u16,
    what: Dump<'_>,
    table: &CString,
) -> Result<Vec<describe::Item>, NftError> {
    let request = dump_request(family, what, table)?;
    socket.send(&request, 0).map_err(NftError::Socket)?;
    let mut lines = Vec::new();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let received = socket
            .recv(&mut &mut buffer[..], 0)
            .map_err(NftError::Socket)?;
        for message in NetlinkMessages::new(&buffer[..received]) {
            match message.kind {
                NLMSG_DONE => return Ok(lines),
                NLMSG_ERROR => match message.error_code() {
                    0 => {}
                    // No such table (or set): nothing of ours.
                    code if -code == libc::ENOENT => return Ok(lines),
                    code => {
                        return Err(NftError::Refused(std::io::Error::from_raw_os_error(-code)));
                    }
                },
                _ => lines.extend(describe::parse(message.bytes)),
            }
        }
    }
}

/// A dump request for the chains, rules, sets or a set's elements of one
/// table.
fn dump_request(family: u16, what: Dump<'_>, table: &CString) -> Result<Vec<u8>, NftError> {
    let kind = nft_type(match what {
        Dump::Chains => NFT_MSG_GETCHAIN,
        Dump::Rules => NFT_MSG_GETRULE,
        Dump::Sets => NFT_MSG_GETSET,
        Dump::SetElements(_) => NFT_MSG_GETSETELEM,
    });
    let mut buffer = vec![0u8; 1024];
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP | libc::NLM_F_ACK) as u16;
    let out_of_memory = || NftError::Socket(std::io::ErrorKind::OutOfMemory.into());
    // SAFETY: the buffer is larger than a header plus a table and a set
    // name attribute (names are at most 256 bytes, checked by the kernel's
    // limits on what we created); the filter objects are freed here.
    unsafe {
        let header =
            sys::nftnl_nlmsg_build_hdr(buffer.as_mut_ptr().cast(), kind, family, flags, DUMP_SEQ);
        match what {
            Dump::Chains => {
                let chain = sys::nftnl_chain_alloc();
                if chain.is_null() {
                    return Err(out_of_memory());
                }
                sys::nftnl_chain_set_str(chain, sys::NFTNL_CHAIN_TABLE as u16, table.as_ptr());
                sys::nftnl_chain_nlmsg_build_payload(header, chain);
                sys::nftnl_chain_free(chain);
            }
            Dump::Rules => {
                let rule = sys::nftnl_rule_alloc();
                if rule.is_null() {
                    return Err(out_of_memory());
                }
                sys::nftnl_rule_set_str(rule, sys::NFTNL_RULE_TABLE as u16, table.as_ptr());
                sys::nftnl_rule_nlmsg_build_payload(header, rule);
                sys::nftnl_rule_free(rule);
            }
            Dump::Sets | Dump::SetElements(_) => {
                let set = sys::nftnl_set_alloc();
                if set.is_null() {
                    return Err(out_of_memory());
                }
                sys::nftnl_set_set_str(set, sys::NFTNL_SET_TABLE as u16, table.as_ptr());
                if let Dump::SetElements(name) = what {
                    sys::nftnl_set_set_str(set, sys::NFTNL_SET_NAME as u16, name.as_ptr());
                    sys::nftnl_set_elems_nlmsg_build_payload(header, set);
                } else {
                    sys::nftnl_set_nlmsg_build_payload(header, set);
                }
                sys::nftnl_set_free(set);
            }
        }
        let len = (*header).nlmsg_len as usize;
        buffer.truncate(len);
    }
    Ok(buffer)
}

pub fn cstring(name: &str) -> Result<CString, NftError> {
    CString::new(name).map_err(|_| NftError::Name(name.to_string()))
}

/// Connects the socket to the kernel: the kernel then refuses unicast to it
/// from any other process (ECONNREFUSED), so what libnftnl parses comes from
/// nf_tables itself. (libnftnl ends the process on a message that breaks the
/// kernel's ABI, by its design; it is never handed another sender's bytes.)
pub(crate) fn kernel_only(socket: &mut Socket) -> std::io::Result<()> {
    socket.connect(&SocketAddr::new(0, 0))
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

/// Makes the socket's send buffer hold `len` bytes. SO_SNDBUFFORCE (we run
/// with CAP_NET_ADMIN) passes net.core.wmem_max; SO_SNDBUF is the fallback.
fn ensure_send_buffer(socket: &Socket, len: usize) -> std::io::Result<()> {
    let mut current: libc::c_int = 0;
    let mut size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid fd, an int and its size.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&mut current as *mut libc::c_int).cast(),
            &mut size,
        )
    };
    // The kernel reports twice what was set (bookkeeping overhead).
    if rc == 0 && current as usize >= len.saturating_mul(2) {
        return Ok(());
    }
    let wanted = libc::c_int::try_from(len.saturating_mul(2)).unwrap_or(libc::c_int::MAX);
    for option in [libc::SO_SNDBUFFORCE, libc::SO_SNDBUF] {
        // SAFETY: valid fd, an int and its size.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&wanted as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return Ok(());
        }
    }
    Err(std::io::Error::last_os_error())
}

/// Discards replies left over from an earlier, failed exchange.
fn drain(socket: &Socket) {
    let mut buffer = vec![0u8; 64 * 1024];
    while socket
        .recv(&mut &mut buffer[..], libc::MSG_DONTWAIT)
        .is_ok_and(|n| n > 0)
    {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_process_cannot_write_to_our_nftables_socket() {
        let ours = Nftables::open().expect("nftables socket");
        let mut stranger = Socket::new(NETLINK_NETFILTER).expect("socket");
        stranger.bind_auto().expect("bind");
        // 16 bytes: a netlink header of its own length, nothing more.
        let message = [16u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let sent = stranger.send_to(&message, &SocketAddr::new(ours.port(), 0), 0);
        assert_eq!(
            sent.map_err(|e| e.raw_os_error()),
            Err(Some(libc::ECONNREFUSED)),
            "a stranger's message reached our socket"
        );
    }
}
