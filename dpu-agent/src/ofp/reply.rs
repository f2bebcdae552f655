//! Reading what the switch sends: message headers, multipart replies, the
//! entries of a flow-stats reply, errors. Every length is checked against
//! the bytes at hand; a malformed message is refused, never trusted.

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

/// An OFPT_ERROR's type and code.
pub fn error_type_code(message: &[u8]) -> Option<(u16, u16)> {
    Some((
        u16::from_be_bytes([*message.get(8)?, *message.get(9)?]),
        u16::from_be_bytes([*message.get(10)?, *message.get(11)?]),
    ))
}
