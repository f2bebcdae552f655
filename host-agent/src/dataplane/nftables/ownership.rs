//! Telling our nftables table from someone else's of the same name: ours
//! carries a comment (table userdata, shown by `nft list table`) that
//! marks it, and a table without our mark is never replaced or deleted.

use super::describe::{Item, ItemKind};
use nftnl::{
    MsgType, NlMsg,
    nftnl_sys::{self as sys, libc},
};
use std::ffi::{CStr, CString, c_void};

/// The comment on our table.
pub use crate::plan::NFT_TABLE_MARK as OWNER_MARK;

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

/// Decides from the table's comment and chains. A table without any
/// comment whose only chain is ours was made by an agent from before the
/// mark: adopted (and marked at its next rewrite).
pub fn owner(comment: Option<&str>, chains: &[Item], our_chain: &str) -> TableOwner {
    let chain_names: Vec<&str> = chains
        .iter()
        .filter_map(|item| match &item.kind {
            ItemKind::Chain { name, .. } => Some(name.as_str()),
            ItemKind::Rule { .. } => None,
        })
        .collect();
    match comment {
        Some(OWNER_MARK) => TableOwner::Ours,
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

/// Our inet table, with the mark when it is created.
pub struct MarkedTable {
    name: CString,
}

impl MarkedTable {
    pub fn new(name: CString) -> Self {
        MarkedTable { name }
    }
}

// SAFETY: writes one table message, far below nft_nlmsg_maxsize().
unsafe impl NlMsg for MarkedTable {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, msg_type: MsgType) {
        let mut userdata = vec![UDATA_COMMENT, (OWNER_MARK.len() + 1) as u8];
        userdata.extend_from_slice(OWNER_MARK.as_bytes());
        userdata.push(0);
        // SAFETY: the table is freed here; libnftnl copies what it is given.
        unsafe {
            let table = sys::nftnl_table_alloc();
            if table.is_null() {
                return;
            }
            sys::nftnl_table_set_str(table, sys::NFTNL_TABLE_NAME as u16, self.name.as_ptr());
            sys::nftnl_table_set_u32(
                table,
                sys::NFTNL_TABLE_FAMILY as u16,
                libc::NFPROTO_INET as u32,
            );
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
                libc::NFPROTO_INET as u16,
                libc::NLM_F_ACK as u16,
                seq,
            );
            sys::nftnl_table_nlmsg_build_payload(header, table);
            sys::nftnl_table_free(table);
        }
    }
}

/// A GETTABLE request for the inet table `name`.
pub fn get_table_request(name: &CString, seq: u32) -> Vec<u8> {
    let mut buffer = vec![0u8; 512];
    // SAFETY: the buffer holds a header plus one name attribute (names are
    // checked to be at most 64 bytes by the config); the table is freed.
    unsafe {
        let header = sys::nftnl_nlmsg_build_hdr(
            buffer.as_mut_ptr().cast(),
            libc::NFT_MSG_GETTABLE as u16,
            libc::NFPROTO_INET as u16,
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
    // SAFETY: one whole netlink message; data is copied before the table is
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

    #[test]
    fn the_mark_round_trips_through_userdata() {
        let mut userdata = vec![7, 2, 1, 2, UDATA_COMMENT, (OWNER_MARK.len() + 1) as u8];
        userdata.extend_from_slice(OWNER_MARK.as_bytes());
        userdata.push(0);
        assert_eq!(comment(&userdata).as_deref(), Some(OWNER_MARK));
        assert_eq!(comment(&[UDATA_COMMENT, 50, 1]), None, "truncated record");
        assert_eq!(comment(&[]), None);
    }

    #[test]
    fn only_marked_or_legacy_tables_are_ours() {
        assert_eq!(owner(Some(OWNER_MARK), &[], "c"), TableOwner::Ours);
        assert_eq!(owner(None, &[], "c"), TableOwner::Ours);
        assert!(matches!(
            owner(Some("firewalld"), &[], "c"),
            TableOwner::Foreign(why) if why.contains("firewalld")
        ));
    }
}
