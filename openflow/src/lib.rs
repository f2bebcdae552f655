//! OpenFlow 1.4 (or 1.3, where a bridge allows no later version) as Open
//! vSwitch speaks it, for a controller that keeps a cookie-scoped flow set
//! on one bridge.
//!
//! The codec is sans-IO (no tokio, bytes in and out): [`spec`] holds flows
//! as structures, parsed from ovs-ofctl's flow syntax; [`wire`] encodes
//! messages (hello, flow mods, bundles, flow-stats and flow-monitor
//! requests); [`reply`] decodes what the switch sends (headers, errors,
//! flow-stats entries kept binary, monitor events, hello versions);
//! [`decode`] turns match fields and instructions into ovs-ofctl's dump
//! text, for people, and [`dump`] reads that text back. [`session`] is the thin tokio session on a unix
//! management socket or a TCP listener: one long-lived connection, version
//! negotiation, requests with deadlines, echoes answered, bundles, a flow
//! monitor.

mod consts;
pub mod decode;
pub mod dump;
mod message;
pub mod nxm;
pub mod reply;
pub mod session;
pub mod spec;
pub mod wire;

/// Six bytes as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `aa:bb:cc:dd:ee:ff` as six bytes; None for anything else.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The prefix length of a contiguous network mask; None for others.
fn prefix_len(mask: &[u8]) -> Option<u32> {
    let ones: u32 = mask.iter().map(|b| b.count_ones()).sum();
    let contiguous = mask
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| b >> i & 1 == 1))
        .skip(ones as usize)
        .all(|bit| !bit);
    contiguous.then_some(ones)
}

/// A mutex's data even if a holder panicked: the data are plain records,
/// never left half-written.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    #[test]
    fn macs_round_trip_and_malformed_ones_are_refused() {
        let mac = [2, 0, 0xc6, 0x12, 0, 0x0a];
        assert_eq!(super::format_mac(&mac), "02:00:c6:12:00:0a");
        assert_eq!(super::parse_mac("02:00:c6:12:00:0a"), Some(mac));
        for bad in [
            "02:00:c6:12:00",
            "02:00:c6:12:00:0a:0b",
            "+2:00:c6:12:00:0a",
            "zz:00:c6:12:00:0a",
        ] {
            assert_eq!(super::parse_mac(bad), None, "{bad}");
        }
        assert_eq!(super::prefix_len(&[255, 255, 128, 0]), Some(17));
        assert_eq!(super::prefix_len(&[255, 0, 255, 0]), None);
    }
}
