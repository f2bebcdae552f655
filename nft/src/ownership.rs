//! Telling a table of ours from someone else's of the same name: ours
//! carries a comment (table userdata, shown by `nft list table`) that
//! marks it, and a table without our mark is never replaced or deleted.

use super::{
    NftError, TableDump, TableId,
    describe::{Item, ItemKind},
    netlink::nft_message,
};
use nftnl::{
    MsgType, NlMsg,
    nftnl_sys::{self as sys, libc},
};
use std::ffi::{CStr, CString, c_void};

/// Type of a comment in table userdata (NFTNL_UDATA_TABLE_COMMENT).
const UDATA_COMMENT: u8 = 0;

/// Whose the table of a given name is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableOwner {
    Absent,
    Ours,
    /// Someone else's: what tells it apart, for the error.
    Foreign(String),
}

/// Decides from the table as read (None: absent), our mark and our chain's
/// name. A table without any comment whose only chain is ours was made by
/// an agent from before the mark: adopted (and marked at its next rewrite).
pub fn owner(table: Option<&TableDump>, mark: &str, our_chain: &str) -> TableOwner {
    match table {
        None => TableOwner::Absent,
        Some(table) => owner_of(table.comment.as_deref(), &table.items, mark, our_chain),
    }
}

fn owner_of(comment: Option<&str>, chains: &[Item], mark: &str, our_chain: &str) -> TableOwner {
    let chain_names: Vec<&str> = chains
        .iter()
        .filter_map(|item| match &item.kind {
            ItemKind::Chain { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    match comment {
        Some(comment) if comment == mark => TableOwner::Ours,
        Some(other) => TableOwner::Foreign(format!("its comment is {other:?}")),
        None if chain_names.iter().all(|c| *c == our_chain) => TableOwner::Ours,
        None => TableOwner::Foreign(format!("it has no mark of ours and chains {chain_names:?}")),
    }
}

/// The comment in table userdata (type-length-value records), if any.
pub fn comment(userdata: &[u8]) -> Option<String> {
    let mut rest = userdata;
    while let [kind, len, tail @ ..] = rest {
        let len = usize::from(*len);
        let value = tail.get(..len)?;
        if *kind == UDATA_COMMENT {
            return CStr::from_bytes_until_nul(value)
                .ok()
                .map(|c| c.to_string_lossy().into_owned());
        }
        rest = &tail[len..];
    }
    None
}

/// A table of ours, with our mark when it is created.
pub struct MarkedTable {
    family: u16,
    name: CString,
    userdata: Vec<u8>,
}

impl MarkedTable {
    /// The mark is at most 127 bytes (nft's own limit on comments).
    pub fn new(table: &TableId, mark: &str) -> Result<Self, NftError> {
        let len = u8::try_from(mark.len() + 1)
            .ok()
            .filter(|len| *len <= 128)
            .ok_or_else(|| NftError::Name(mark.to_string()))?;
        let mut userdata = vec![UDATA_COMMENT, len];
        userdata.extend_from_slice(mark.as_bytes());
        userdata.push(0);
        Ok(MarkedTable {
            family: table.family as u16,
            name: table.c_name()?,
            userdata,
        })
    }
}

// SAFETY: writes one table message, far below nft_nlmsg_maxsize().
unsafe impl NlMsg for MarkedTable {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, msg_type: MsgType) {
        let userdata = &self.userdata;
        // SAFETY: the table is freed here; libnftnl copies what it is given.
        unsafe {
            let table = sys::nftnl_table_alloc();
            if table.is_null() {
                return;
            }
            sys::nftnl_table_set_str(table, sys::NFTNL_TABLE_NAME as u16, self.name.as_ptr());
            sys::nftnl_table_set_u32(table, sys::NFTNL_TABLE_FAMILY as u16, self.family.into());
            let kind = match msg_type {
                MsgType::Add => {
                    sys::nftnl_table_set_data(
                        table,
                        sys::NFTNL_TABLE_USERDATA as u16,
                        userdata.as_ptr().cast(),
                        userdata.len() as u32,
                    );
                    libc::NFT_MSG_NEWTABLE
                }
                MsgType::Del => libc::NFT_MSG_DELTABLE,
            };
            let header = sys::nftnl_nlmsg_build_hdr(
                buf.cast(),
                kind as u16,
                self.family,
                libc::NLM_F_ACK as u16,
                seq,
            );
            sys::nftnl_table_nlmsg_build_payload(header, table);
            sys::nftnl_table_free(table);
        }
    }
}

/// A GETTABLE request for the table `name` of `family`.
pub fn get_table_request(family: u16, name: &CString, seq: u32) -> Vec<u8> {
    let mut buffer = vec![0u8; 512];
    // SAFETY: the buffer holds a header plus one name attribute (names are
    // checked to be at most 64 bytes by the config); the table is freed.
    unsafe {
        let header = sys::nftnl_nlmsg_build_hdr(
            buffer.as_mut_ptr().cast(),
            libc::NFT_MSG_GETTABLE as u16,
            family,
            (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16,
            seq,
        );
        let table = sys::nftnl_table_alloc();
        if !table.is_null() {
            sys::nftnl_table_set_str(table, sys::NFTNL_TABLE_NAME as u16, name.as_ptr());
            sys::nftnl_table_nlmsg_build_payload(header, table);
            sys::nftnl_table_free(table);
        }
        buffer.truncate((*header).nlmsg_len as usize);
    }
    buffer
}

/// The comment of a NEWTABLE reply message, if it has one.
pub fn table_comment(message: &[u8]) -> Option<String> {
    let message = nft_message(message)?;
    // SAFETY: one whole nftables message (nft_message checked it); data is copied before the table is
    // freed.
    unsafe {
        let table = sys::nftnl_table_alloc();
        if table.is_null() {
            return None;
        }
        let mut comment_text = None;
        if sys::nftnl_table_nlmsg_parse(message.as_ptr().cast(), table) >= 0
            && sys::nftnl_table_is_set(table, sys::NFTNL_TABLE_USERDATA as u16)
        {
            let mut len = 0u32;
            let data = sys::nftnl_table_get_data(table, sys::NFTNL_TABLE_USERDATA as u16, &mut len);
            if !data.is_null() {
                let bytes = std::slice::from_raw_parts(data.cast::<u8>(), len as usize);
                comment_text = comment(bytes);
            }
        }
        sys::nftnl_table_free(table);
        comment_text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER_MARK: &str = "owned by a test";

    #[test]
    fn the_mark_round_trips_through_userdata() {
        let table = TableId::new(nftnl::ProtoFamily::NetDev, "t");
        let marked = MarkedTable::new(&table, OWNER_MARK).expect("mark");
        let mut userdata = vec![7, 2, 1, 2];
        userdata.extend_from_slice(&marked.userdata);
        assert_eq!(comment(&userdata).as_deref(), Some(OWNER_MARK));
        assert_eq!(comment(&[UDATA_COMMENT, 50, 1]), None, "truncated record");
        assert_eq!(comment(&[]), None);
    }

    #[test]
    fn only_marked_or_legacy_tables_are_ours() {
        let table = |comment: Option<&str>| TableDump {
            comment: comment.map(str::to_string),
            items: Vec::new(),
        };
        let owner_of = |comment| owner(Some(&table(comment)), OWNER_MARK, "c");
        assert_eq!(owner(None, OWNER_MARK, "c"), TableOwner::Absent);
        assert_eq!(owner_of(Some(OWNER_MARK)), TableOwner::Ours);
        assert_eq!(owner_of(None), TableOwner::Ours);
        assert!(matches!(
            owner_of(Some("firewalld")),
            TableOwner::Foreign(why) if why.contains("firewalld")
        ));
    }

    #[test]
    fn a_mark_too_long_for_a_comment_is_refused() {
        let table = TableId::new(nftnl::ProtoFamily::Inet, "t");
        assert!(MarkedTable::new(&table, &"x".repeat(200)).is_err());
    }
}
