//! Reading what the switch sends: message headers, multipart replies, the
//! entries of a flow-stats reply, errors. Every length is checked against
//! the bytes at hand; a malformed message is refused, never trusted.

use super::consts::*;

/// A message's header, read from the start of `bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub kind: u8,
    pub length: usize,
    pub xid: u32,
}

pub const HEADER_LEN: usize = 8;

impl Header {
    pub fn parse(bytes: &[u8]) -> Option<Header> {
        let b = bytes.get(..HEADER_LEN)?;
        Some(Header {
            version: b[0],
            kind: b[1],
            length: usize::from(u16::from_be_bytes([b[2], b[3]])),
            xid: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        })
    }
}

/// One entry of a flow-stats reply: what the programmer compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowStats {
    pub table: u8,
    pub priority: u16,
    pub cookie: u64,
    pub packets: u64,
    pub bytes: u64,
    /// The match's OXM fields and the instructions, as the switch encoded
    /// them (compared as bytes; decoded only for people).
    pub match_fields: Vec<u8>,
    pub instructions: Vec<u8>,
}

impl FlowStats {
    /// The entry a switch reports for `spec` once it is added, with these
    /// counters: the match and instructions encoded as [`crate::wire`]
    /// encodes the add. What a switch double answers.
    pub fn of(spec: &crate::spec::FlowSpec, packets: u64, bytes: u64) -> Option<FlowStats> {
        let (match_fields, instructions) =
            flow_mod_match_and_instructions(&crate::wire::flow_add(0, spec, 0))?;
        Some(FlowStats {
            table: spec.table,
            priority: spec.priority,
            cookie: spec.cookie,
            packets,
            bytes,
            match_fields,
            instructions,
        })
    }
}

/// A multipart reply's type, flags and body (after the 16-byte prefix).
pub fn multipart_reply(message: &[u8]) -> Option<(u16, u16, &[u8])> {
    let kind = u16::from_be_bytes([*message.get(8)?, *message.get(9)?]);
    let flags = u16::from_be_bytes([*message.get(10)?, *message.get(11)?]);
    Some((kind, flags, message.get(16..)?))
}

/// More replies of this multipart exchange follow.
pub const OFPMPF_REPLY_MORE: u16 = 1;

/// The entries of a flow-stats reply body; None if it is malformed.
pub fn parse_flow_stats(mut body: &[u8]) -> Option<Vec<FlowStats>> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
        let entry = body.get(..len)?;
        if len < 56 {
            return None;
        }
        let u16_at = |i: usize| u16::from_be_bytes([entry[i], entry[i + 1]]);
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&entry[i..i + 8]);
            u64::from_be_bytes(b)
        };
        let match_len = usize::from(u16_at(50));
        let match_end = 48 + match_len.next_multiple_of(8);
        if match_len < 4 || match_end > len {
            return None;
        }
        out.push(FlowStats {
            table: entry[2],
            priority: u16_at(12),
            cookie: u64_at(24),
            packets: u64_at(32),
            bytes: u64_at(40),
            match_fields: entry[52..48 + match_len].to_vec(),
            instructions: entry[match_end..].to_vec(),
        });
        body = &body[len..];
    }
    Some(out)
}

/// The match fields and instructions of a flow mod we encoded, in the form
/// a flow-stats entry carries them: what read-back compares against.
pub fn flow_mod_match_and_instructions(flow_mod: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let match_len = usize::from(u16::from_be_bytes([*flow_mod.get(50)?, *flow_mod.get(51)?]));
    let match_end = 48 + match_len.next_multiple_of(8);
    Some((
        flow_mod.get(52..48 + match_len)?.to_vec(),
        flow_mod.get(match_end..)?.to_vec(),
    ))
}

/// The versions a peer's hello offers: its version bitmap, or without
/// one every version up to the header's (the rule of OpenFlow 1.3.1).
/// None if the message is not a well-formed hello.
pub fn hello_versions(message: &[u8]) -> Option<Vec<u8>> {
    let header = Header::parse(message)?;
    if header.kind != OFPT_HELLO || header.length != message.len() {
        return None;
    }
    let mut elements = message.get(HEADER_LEN..)?;
    while elements.len() >= 4 {
        let kind = u16::from_be_bytes([elements[0], elements[1]]);
        let len = usize::from(u16::from_be_bytes([elements[2], elements[3]]));
        let element = elements.get(..len).filter(|_| len >= 4)?;
        if kind == OFPHET_VERSIONBITMAP {
            // Bit v of the bitmaps (32 versions each) offers version v.
            let versions = element[4..]
                .chunks_exact(4)
                .enumerate()
                .flat_map(|(word, bits)| {
                    let bits = u32::from_be_bytes([bits[0], bits[1], bits[2], bits[3]]);
                    (0..32u8)
                        .filter(move |bit| bits & 1 << bit != 0)
                        .map(move |bit| (word as u8).saturating_mul(32).saturating_add(bit))
                })
                .collect();
            return Some(versions);
        }
        elements = elements.get(len.next_multiple_of(8).min(elements.len())..)?;
    }
    Some((1..=header.version).collect())
}

/// The highest version both `ours` and `theirs` offer.
pub fn negotiate(ours: &[u8], theirs: &[u8]) -> Option<u8> {
    ours.iter().copied().filter(|v| theirs.contains(v)).max()
}

/// A flow-monitor update in either version's form (1.4's multipart type;
/// 1.3's Open Networking Foundation experimenter multipart, or its
/// paused/resumed messages): something may have changed on the bridge.
pub fn is_flow_monitor_event(message: &[u8]) -> bool {
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(
            message.get(at..at + 4)?.try_into().ok()?,
        ))
    };
    match message.get(1) {
        Some(&OFPT_MULTIPART_REPLY) => match multipart_reply(message) {
            Some((OFPMP_FLOW_MONITOR, _, _)) => true,
            Some((OFPMP_EXPERIMENTER, _, _)) => {
                u32_at(16) == Some(ONF_EXPERIMENTER) && u32_at(20) == Some(ONFST_FLOW_MONITOR)
            }
            _ => false,
        },
        Some(&OFPT_EXPERIMENTER) => {
            u32_at(8) == Some(ONF_EXPERIMENTER)
                && matches!(
                    u32_at(12),
                    Some(ONFT_FLOW_MONITOR_PAUSED | ONFT_FLOW_MONITOR_RESUMED)
                )
        }
        _ => false,
    }
}

/// An OFPT_ERROR's type and code.
pub fn error_type_code(message: &[u8]) -> Option<(u16, u16)> {
    Some((
        u16::from_be_bytes([*message.get(8)?, *message.get(9)?]),
        u16::from_be_bytes([*message.get(10)?, *message.get(11)?]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(version: u8, elements: &[u8]) -> Vec<u8> {
        let len = (HEADER_LEN + elements.len()) as u16;
        let mut m = vec![version, 0];
        m.extend_from_slice(&len.to_be_bytes());
        m.extend_from_slice(&[0, 0, 0, 1]);
        m.extend_from_slice(elements);
        m
    }

    #[test]
    fn the_highest_version_both_hellos_offer_is_chosen() {
        // Open vSwitch on a bridge with protocols=OpenFlow13: 1.3 only.
        let only_13 = hello(OF13, &[0, 1, 0, 8, 0, 0, 0, 0x10]);
        assert_eq!(hello_versions(&only_13), Some(vec![OF13]));
        assert_eq!(negotiate(&VERSIONS, &[OF13]), Some(OF13));
        // Its default set (1.0 to 1.5).
        let defaults = hello(0x06, &[0, 1, 0, 8, 0, 0, 0, 0x7e]);
        let offered = hello_versions(&defaults).unwrap_or_default();
        assert_eq!(negotiate(&VERSIONS, &offered), Some(OF14));
        // No bitmap: every version up to the header's.
        assert_eq!(hello_versions(&hello(OF13, &[])), Some(vec![1, 2, 3, 4]));
        assert_eq!(negotiate(&VERSIONS, &[1]), None);
    }

    #[test]
    fn a_malformed_hello_is_refused() {
        assert_eq!(hello_versions(&[0, 0, 0]), None);
        // An element longer than the message.
        assert_eq!(
            hello_versions(&hello(OF14, &[0, 1, 0, 40, 0, 0, 0, 0])),
            None
        );
        // An element shorter than its own header.
        assert_eq!(
            hello_versions(&hello(OF14, &[0, 1, 0, 2, 0, 0, 0, 0])),
            None
        );
        // The header's length disagrees with the bytes.
        let mut short = hello(OF14, &[]);
        short[3] = 200;
        assert_eq!(hello_versions(&short), None);
    }
}
