//! Named interval sets of address prefixes: one rule then matches any
//! number of CIDRs with one lookup in the kernel's interval tree, instead
//! of one rule (and one transaction message) per CIDR. Built into a batch
//! here; read back by [`crate::describe`].

use super::{
    NftError,
    netlink::{Attributes, nft_attributes},
};
use ipnet::IpNet;
use nftnl::{
    Batch, MsgType, Table,
    expr::Lookup,
    nftnl_sys::{self as sys, libc},
    set::{Set, SetKey},
};
use std::{
    ffi::CStr,
    net::{Ipv4Addr, Ipv6Addr},
};

/// Adds to `batch` the named set `name` (`id` unique within the batch) of
/// addresses with flag interval, holding each of `nets` as one interval,
/// and returns the expression that looks register 1 up in it. The set's
/// address family is that of the first net; all must share it, and none
/// may overlap another (the kernel refuses overlapping intervals).
pub fn add_prefix_set(
    batch: &mut Batch,
    table: &Table,
    name: &CStr,
    id: u32,
    nets: &[IpNet],
) -> Result<Lookup, NftError> {
    match nets.first() {
        Some(IpNet::V6(_)) => add::<Ipv6Addr>(batch, table, name, id, nets),
        _ => add::<Ipv4Addr>(batch, table, name, id, nets),
    }
}

fn add<K: SetKey>(
    batch: &mut Batch,
    table: &Table,
    name: &CStr,
    id: u32,
    nets: &[IpNet],
) -> Result<Lookup, NftError> {
    let set = Set::<K>::new_named(name, id, table, table.get_family());
    let raw = set.as_ptr().as_ptr();
    // SAFETY: `raw` is the live set owned by `set`; elements handed to
    // nftnl_set_elem_add become the set's and are freed with it.
    unsafe {
        sys::nftnl_set_set_u32(
            raw,
            sys::NFTNL_SET_FLAGS as u16,
            libc::NFT_SET_INTERVAL as u32,
        );
    }
    for net in nets {
        let (start, end) = interval(net);
        if start.len() != K::LEN as usize {
            return Err(NftError::Set(format!(
                "{net} is not of the address family of set {}",
                name.to_string_lossy()
            )));
        }
        // SAFETY: as above.
        unsafe {
            add_element(raw, &start, false)?;
            if let Some(end) = end {
                add_element(raw, &end, true)?;
            }
        }
    }
    batch.add(&set, MsgType::Add);
    batch.add_iter(set.elems_iter(), MsgType::Add);
    Ok(Lookup::new(&set))
}

/// The first address of `net` and the first one past it (None when `net`
/// reaches the top of its address space: the interval stays open).
fn interval(net: &IpNet) -> (Vec<u8>, Option<Vec<u8>>) {
    match net {
        IpNet::V4(net) => (
            net.network().octets().to_vec(),
            u32::from(net.broadcast())
                .checked_add(1)
                .map(|end| end.to_be_bytes().to_vec()),
        ),
        IpNet::V6(net) => (
            net.network().octets().to_vec(),
            u128::from(net.broadcast())
                .checked_add(1)
                .map(|end| end.to_be_bytes().to_vec()),
        ),
    }
}

/// # Safety
/// `set` is a valid set.
unsafe fn add_element(set: *mut sys::nftnl_set, key: &[u8], end: bool) -> Result<(), NftError> {
    // SAFETY: the caller's promise; the key is copied into the element.
    unsafe {
        let element = sys::nftnl_set_elem_alloc();
        if element.is_null() {
            return Err(NftError::Set("out of memory for a set element".into()));
        }
        sys::nftnl_set_elem_set(
            element,
            sys::NFTNL_SET_ELEM_KEY as u16,
            key.as_ptr().cast(),
            key.len() as u32,
        );
        if end {
            sys::nftnl_set_elem_set_u32(
                element,
                sys::NFTNL_SET_ELEM_FLAGS as u16,
                libc::NFT_SET_ELEM_INTERVAL_END as u32,
            );
        }
        sys::nftnl_set_elem_add(set, element);
    }
    Ok(())
}

/// One element of an interval set as the kernel holds it: a key that
/// starts an interval, or (flag interval-end) the first key past one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetElement {
    pub key: Vec<u8>,
    pub interval_end: bool,
}

const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_DATA_VALUE: u16 = 1;

/// Elements of one set, as one NEWSETELEM message carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetElements {
    pub table: String,
    pub set: String,
    pub elements: Vec<SetElement>,
}

/// A NEWSETELEM message (a kernel dump's or one of our batch), parsed here
/// rather than by libnftnl: libnftnl numbers the elements of the messages
/// it builds 1, 2, 3... but parses only lists whose every element is
/// numbered 1 (as the kernel's are), so it cannot read our batches back.
pub fn parse_set_elements(message: &[u8]) -> Option<SetElements> {
    let mut parsed = SetElements {
        table: String::new(),
        set: String::new(),
        elements: Vec::new(),
    };
    let text = |bytes: &[u8]| {
        CStr::from_bytes_until_nul(bytes)
            .ok()
            .map(|name| name.to_string_lossy().into_owned())
    };
    for (kind, payload) in Attributes::new(nft_attributes(message)?) {
        match kind {
            NFTA_SET_ELEM_LIST_TABLE => parsed.table = text(payload)?,
            NFTA_SET_ELEM_LIST_SET => parsed.set = text(payload)?,
            NFTA_SET_ELEM_LIST_ELEMENTS => {
                for (_, element) in Attributes::new(payload) {
                    parsed.elements.push(parse_element(element)?);
                }
            }
            _ => {}
        }
    }
    Some(parsed)
}

fn parse_element(attributes: &[u8]) -> Option<SetElement> {
    let mut key = None;
    let mut flags = 0u32;
    for (kind, payload) in Attributes::new(attributes) {
        match kind {
            NFTA_SET_ELEM_KEY => {
                key = Attributes::new(payload)
                    .find(|(kind, _)| *kind == NFTA_DATA_VALUE)
                    .map(|(_, value)| value.to_vec());
            }
            NFTA_SET_ELEM_FLAGS => flags = u32::from_be_bytes(payload.get(..4)?.try_into().ok()?),
            _ => {}
        }
    }
    Some(SetElement {
        key: key?,
        interval_end: flags & libc::NFT_SET_ELEM_INTERVAL_END as u32 != 0,
    })
}

/// The intervals of an interval set in nft syntax, lowest first: a prefix
/// (`198.18.0.0/17`) where the interval is one, else a range
/// (`198.18.0.1-198.18.0.9`). An end without a start before it (nft's
/// marker at the bottom of the space) opens nothing and is not shown.
pub fn render_intervals(elements: &[SetElement]) -> Vec<String> {
    let mut sorted: Vec<&SetElement> = elements.iter().collect();
    // At a shared key the end of one interval comes before the start of
    // the next.
    sorted.sort_by(|a, b| a.key.cmp(&b.key).then(b.interval_end.cmp(&a.interval_end)));
    let mut out = Vec::new();
    let mut iter = sorted.into_iter().peekable();
    while let Some(element) = iter.next() {
        if element.interval_end {
            continue;
        }
        let width = element.key.len() * 8;
        let Some(start) = number(&element.key) else {
            continue;
        };
        let top = if width == 128 {
            u128::MAX
        } else {
            (1u128 << width) - 1
        };
        let last = match iter.peek() {
            Some(next) if next.interval_end => {
                let end = number(&next.key);
                iter.next();
                match end {
                    Some(end) if end > start => end - 1,
                    _ => continue,
                }
            }
            _ => top,
        };
        out.push(interval_text(start, last, width));
    }
    out
}

/// Bytes (big endian, 4 or 16 of them) as a number.
fn number(key: &[u8]) -> Option<u128> {
    (key.len() == 4 || key.len() == 16)
        .then(|| key.iter().fold(0u128, |n, b| n << 8 | u128::from(*b)))
}

fn interval_text(start: u128, last: u128, width: usize) -> String {
    let address = |n: u128| match width {
        32 => Ipv4Addr::from(n as u32).to_string(),
        _ => Ipv6Addr::from(n).to_string(),
    };
    let span = last - start;
    let is_prefix = span & span.wrapping_add(1) == 0 && start & span == 0;
    if is_prefix {
        format!("{}/{}", address(start), width as u32 - span.count_ones())
    } else {
        format!("{}-{}", address(start), address(last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elements(nets: &[&str]) -> Vec<SetElement> {
        nets.iter()
            .flat_map(|net| {
                let (start, end) = interval(&net.parse().expect("net"));
                std::iter::once(SetElement {
                    key: start,
                    interval_end: false,
                })
                .chain(end.map(|key| SetElement {
                    key,
                    interval_end: true,
                }))
            })
            .collect()
    }

    #[test]
    fn intervals_of_prefixes_render_as_the_prefixes_lowest_first() {
        let nets = [
            "198.19.0.0/24",
            "198.18.128.0/17",
            "198.18.0.0/17",
            "255.255.255.0/24",
            "0.0.0.0/0",
        ];
        // Adjacent intervals (the second and third) stay apart; the last
        // /24 has no end element; /0 neither.
        let mut rendered = render_intervals(&elements(&nets[..4]));
        assert_eq!(
            rendered,
            [
                "198.18.0.0/17",
                "198.18.128.0/17",
                "198.19.0.0/24",
                "255.255.255.0/24"
            ]
        );
        rendered = render_intervals(&elements(&nets[4..]));
        assert_eq!(rendered, ["0.0.0.0/0"]);
        assert_eq!(
            render_intervals(&elements(&["fd00:10:244::/48", "ffff::/16", "::/0"][..2])),
            ["fd00:10:244::/48", "ffff::/16"]
        );
        assert_eq!(render_intervals(&elements(&["::/0"])), ["::/0"]);
    }

    #[test]
    fn intervals_that_are_no_prefix_render_as_ranges() {
        let key = |a: [u8; 4], interval_end| SetElement {
            key: a.to_vec(),
            interval_end,
        };
        let written_by_someone_else = [
            key([0, 0, 0, 0], true),
            key([198, 18, 0, 1], false),
            key([198, 18, 0, 10], true),
            key([198, 18, 0, 16], false),
        ];
        assert_eq!(
            render_intervals(&written_by_someone_else),
            ["198.18.0.1-198.18.0.9", "198.18.0.16-255.255.255.255"]
        );
    }

    #[test]
    fn a_net_of_another_family_is_refused_by_name() {
        let table = Table::new(c"noverlay", nftnl::ProtoFamily::Inet);
        let mut batch = Batch::new();
        let nets = [
            "198.18.0.0/17".parse().expect("net"),
            "fd00::/8".parse().expect("net"),
        ];
        let refused = add_prefix_set(&mut batch, &table, c"cidrs", 1, &nets).err();
        assert_eq!(
            refused.map(|e| e.to_string()),
            Some("nftables set: fd00::/8 is not of the address family of set cidrs".into())
        );
    }
}
