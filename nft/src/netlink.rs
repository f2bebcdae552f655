//! Walking the netlink messages in a buffer, and the few nfnetlink
//! constants nftnl does not export.

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
/// struct nfgenmsg, which follows the header of every nftables message.
const NFGENMSG_LEN: usize = 4;
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub const NFT_MSG_NEWTABLE: u16 = 0;
pub const NFT_MSG_NEWCHAIN: u16 = 3;
pub const NFT_MSG_GETCHAIN: u16 = 4;
pub const NFT_MSG_NEWRULE: u16 = 6;
pub const NFT_MSG_GETRULE: u16 = 7;
pub const NFT_MSG_NEWSET: u16 = 9;
pub const NFT_MSG_GETSET: u16 = 10;
pub const NFT_MSG_NEWSETELEM: u16 = 12;
pub const NFT_MSG_GETSETELEM: u16 = 13;
pub const NFT_MSG_NEWGEN: u16 = 15;

/// The netlink message type of an nftables message.
pub const fn nft_type(message: u16) -> u16 {
    NFNL_SUBSYS_NFTABLES << 8 | message
}

/// One netlink message: its type, sequence number, origin and payload.
pub struct NetlinkMessage<'a> {
    pub kind: u16,
    pub seq: u32,
    /// The sender's netlink port (0 for the kernel itself).
    pub port: u32,
    /// The whole message, header included.
    pub bytes: &'a [u8],
    pub payload: &'a [u8],
}

impl NetlinkMessage<'_> {
    /// The error code of an NLMSG_ERROR (0 is an ack).
    pub fn error_code(&self) -> i32 {
        self.payload
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(i32::from_ne_bytes)
            .unwrap_or(0)
    }
}

/// `bytes` as one whole nftables message that libnftnl may parse: its
/// header's length lies within `bytes` and covers the nfgenmsg (libnftnl
/// trusts that length and reads the nfgenmsg without checking it).
pub fn nft_message(bytes: &[u8]) -> Option<&[u8]> {
    let len = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    (NLMSG_HDRLEN + NFGENMSG_LEN..=bytes.len())
        .contains(&len)
        .then(|| &bytes[..len])
}

/// Iterates over the netlink messages in a buffer; stops at the first
/// malformed header instead of trusting its length.
pub struct NetlinkMessages<'a> {
    rest: &'a [u8],
}

impl<'a> NetlinkMessages<'a> {
    pub fn new(buffer: &'a [u8]) -> Self {
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
            bytes: &self.rest[..len],
            payload: &self.rest[NLMSG_HDRLEN..len],
        };
        let aligned = ((len + 3) & !3).min(self.rest.len());
        self.rest = &self.rest[aligned..];
        Some(message)
    }
}

/// The payload after the nfgenmsg of an nftables message (its attributes).
pub fn nft_attributes(message: &[u8]) -> Option<&[u8]> {
    nft_message(message).map(|message| &message[NLMSG_HDRLEN + NFGENMSG_LEN..])
}

/// Iterates over netlink attributes as (type, payload), the nested and
/// byte-order flags cleared from the type; stops at the first malformed one.
pub struct Attributes<'a> {
    rest: &'a [u8],
}

impl<'a> Attributes<'a> {
    pub fn new(buffer: &'a [u8]) -> Self {
        Attributes { rest: buffer }
    }
}

impl<'a> Iterator for Attributes<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<(u16, &'a [u8])> {
        let header = self.rest.get(..4)?;
        let len = usize::from(u16::from_ne_bytes([header[0], header[1]]));
        let kind = u16::from_ne_bytes([header[2], header[3]]) & 0x3fff;
        let Some(payload) = self.rest.get(4..len) else {
            self.rest = &[];
            return None;
        };
        let aligned = ((len + 3) & !3).min(self.rest.len());
        self.rest = &self.rest[aligned..];
        Some((kind, payload))
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
        assert_eq!(messages[0].error_code(), 0);
        assert!(NetlinkMessages::new(&[1, 2, 3]).next().is_none());
    }

    /// Found by the nft_messages fuzz target: a 16-byte NEWTABLE header
    /// made libnftnl read its nfgenmsg past the end of the buffer.
    #[test]
    fn only_messages_that_cover_their_nfgenmsg_reach_libnftnl() {
        let message = |kind: u16, len: u32| {
            let mut bytes = len.to_ne_bytes().to_vec();
            bytes.extend_from_slice(&nft_type(kind).to_ne_bytes());
            bytes.extend_from_slice(&[0; 10]);
            bytes
        };
        let header = |len| message(NFT_MSG_NEWTABLE, len);
        assert!(nft_message(&header(16)).is_none(), "no nfgenmsg");
        let mut whole = header(20);
        whole.extend_from_slice(&[2, 0, 0, 0]);
        assert_eq!(nft_message(&whole).map(<[u8]>::len), Some(20));
        assert!(nft_message(&whole[..19]).is_none(), "length past the end");
        whole.extend_from_slice(&[9; 8]);
        assert_eq!(
            nft_message(&whole).map(<[u8]>::len),
            Some(20),
            "cut to its length"
        );
        assert!(nft_message(&[20, 0]).is_none());
        let found_by_fuzzing = b"NNNNNN[\x00\x01\x00NN\xff\xff\xff\xffN[\x00\x01\x00\x01\x01\x00";
        assert_eq!(crate::ownership::table_comment(&header(16)), None);
        assert_eq!(crate::ownership::table_comment(found_by_fuzzing), None);
        for kind in [NFT_MSG_NEWRULE, NFT_MSG_NEWCHAIN] {
            assert!(crate::describe::parse(&message(kind, 16)).is_empty());
        }
    }
}
