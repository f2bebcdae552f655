//! Any bytes as a read from an nftables netlink socket: the decoders we own
//! (the message walk, the bound that lets a message reach libnftnl, the
//! error code of an ack, the watcher's test for another writer's commit,
//! the table comment's records, set element lists and their rendering as
//! intervals, addresses and netmasks) must never panic,
//! and a message handed on must lie within the bytes read.
//!
//! libnftnl's own parse is not fed these bytes: it ends the process on a
//! message that breaks the kernel's ABI (by its design), and our sockets
//! take messages from the kernel only (they are connected to it; a test in
//! the nft crate shows another process refused).
#![no_main]

use libfuzzer_sys::fuzz_target;
use noverlay_nft::{
    describe, is_foreign_commit,
    netlink::{NetlinkMessages, nft_message},
    ownership, sets,
};

fuzz_target!(|data: &[u8]| {
    let _ = is_foreign_commit(data, 4242);
    let mut walked = 0;
    for message in NetlinkMessages::new(data) {
        walked += message.bytes.len();
        assert!(walked <= data.len(), "messages walked past the read");
        let _ = message.error_code();
        if let Some(whole) = nft_message(message.bytes) {
            assert!(whole.len() <= message.bytes.len());
        }
        let _ = ownership::comment(message.payload);
        let _ = describe::address(message.payload);
        let _ = describe::prefix_len(message.payload);
        if let Some(parsed) = sets::parse_set_elements(message.bytes) {
            let _ = sets::render_intervals(&parsed.elements);
        }
    }
});
