//! Hearing about nftables changes made by anyone else.

use super::{
    NftError,
    netlink::{NFT_MSG_NEWGEN, NetlinkMessages, nft_type},
    set_receive_timeout,
};
use nftnl::nftnl_sys::libc;
use rtnetlink::sys::{Socket, protocols::NETLINK_NETFILTER};
use std::time::Duration;

/// nfnetlink multicast group of nftables ruleset changes.
const NFNLGRP_NFTABLES: u32 = 7;

/// Who hears of changes made by others.
pub trait ChangeListener: Send + 'static {
    /// Someone else committed a transaction (or events were lost).
    fn foreign_change(&self);
    /// Nobody listens any more: the watcher ends.
    fn is_closed(&self) -> bool;
}

/// Watches nftables for transactions by anyone else and tells `listener`
/// of each (or of lost events), on a thread of its own, until the listener
/// is closed. Our own transactions are recognised by the netlink port that
/// NEWGEN names as their origin (`own_port`) and ignored.
pub fn watch_foreign_changes(own_port: u32, listener: impl ChangeListener) -> Result<(), NftError> {
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
    std::thread::Builder::new()
        .name("nft-watch".into())
        .spawn(move || {
            let mut buffer = vec![0u8; 256 * 1024];
            loop {
                if listener.is_closed() {
                    return;
                }
                match socket.recv(&mut &mut buffer[..], 0) {
                    Ok(n) => {
                        let foreign = NetlinkMessages::new(&buffer[..n])
                            .any(|m| m.kind == nft_type(NFT_MSG_NEWGEN) && m.port != own_port);
                        if foreign {
                            listener.foreign_change();
                        }
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        // Events were lost: assume the worst.
                        listener.foreign_change();
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
    Ok(())
}
