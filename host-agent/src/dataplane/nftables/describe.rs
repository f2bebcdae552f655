//! nftables messages as text, printed by libnftnl itself: each chain with
//! its hook and each rule as its list of expressions
//! (`[ payload load 4b @ network header + 16 => reg 1 ]`...). The same
//! printer serves the rules the agent builds (golden tests) and the rules
//! the kernel reports (what the host tells the DPU it has).

use super::netlink::{NFT_MSG_NEWCHAIN, NFT_MSG_NEWRULE, NetlinkMessages, nft_type};
use nftnl::nftnl_sys::{self as sys, libc};
use std::ffi::CStr;

/// Describes every chain and rule message in `buffer`, in order; other
/// messages (batch markers, tables, acks) are skipped.
pub fn describe(buffer: &[u8]) -> Vec<String> {
    NetlinkMessages::new(buffer)
        .filter_map(|message| match message.kind {
            k if k == nft_type(NFT_MSG_NEWCHAIN) => describe_chain(message.bytes),
            k if k == nft_type(NFT_MSG_NEWRULE) => describe_rule(message.bytes),
            _ => None,
        })
        .collect()
}

/// Room for a rule of a dozen expressions; libnftnl truncates beyond it.
const TEXT_CAPACITY: usize = 4096;

fn describe_rule(message: &[u8]) -> Option<String> {
    // SAFETY: `message` is one whole netlink message (the walker checked its
    // length); libnftnl only reads within the length in its header. The rule
    // is freed on every path.
    unsafe {
        let rule = sys::nftnl_rule_alloc();
        if rule.is_null() {
            return None;
        }
        let parsed = sys::nftnl_rule_nlmsg_parse(message.as_ptr().cast::<libc::nlmsghdr>(), rule);
        let text = (parsed >= 0).then(|| {
            print(|buffer, size| {
                sys::nftnl_rule_snprintf(buffer, size, rule, sys::NFTNL_OUTPUT_DEFAULT, 0)
            })
        });
        sys::nftnl_rule_free(rule);
        text
    }
}

fn describe_chain(message: &[u8]) -> Option<String> {
    // SAFETY: as for rules.
    unsafe {
        let chain = sys::nftnl_chain_alloc();
        if chain.is_null() {
            return None;
        }
        let parsed = sys::nftnl_chain_nlmsg_parse(message.as_ptr().cast::<libc::nlmsghdr>(), chain);
        let text = (parsed >= 0).then(|| {
            print(|buffer, size| {
                sys::nftnl_chain_snprintf(buffer, size, chain, sys::NFTNL_OUTPUT_DEFAULT, 0)
            })
        });
        sys::nftnl_chain_free(chain);
        text
    }
}

/// Runs a libnftnl snprintf into a buffer and returns the text, trimmed.
fn print(snprintf: impl FnOnce(*mut libc::c_char, usize) -> libc::c_int) -> String {
    let mut buffer = vec![0u8; TEXT_CAPACITY];
    let written = snprintf(buffer.as_mut_ptr().cast(), buffer.len());
    if written < 0 {
        return String::new();
    }
    // snprintf always terminates within the buffer.
    CStr::from_bytes_until_nul(&buffer)
        .map(|text| text.to_string_lossy().trim_end().to_string())
        .unwrap_or_default()
}
