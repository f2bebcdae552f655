//! Why a contract, or one of its values, was refused: each error names the
//! field and the value.

use super::{Family, Mode};
use ipnet::IpNet;
use std::net::IpAddr;

/// Why a contract (or one of its values) was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContractError {
    #[error("protocol version mismatch: ours is {ours}, the peer's is {theirs}")]
    Version { ours: u32, theirs: u32 },
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("unknown value {1} for `{0}`")]
    UnknownEnum(&'static str, i32),
    #[error("unknown address family {0}")]
    UnknownFamily(i32),
    #[error("mode ({0}) is out of scope: only node dpu-host, gateway shared, transport no-overlay")]
    OutOfScope(Mode),
    #[error("invalid `{field}` value {value:?}: expected {expected}")]
    BadValue {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("prefix {0} has host bits set; write it as its network address")]
    NotCanonical(String),
    #[error("masquerade subnet {0} is too small: it must hold offsets up to .5")]
    MasqueradeTooSmall(IpNet),
    #[error("masquerade subnet {subnet} refused: {reason}")]
    BadMasquerade { subnet: IpNet, reason: &'static str },
    #[error("cluster CIDRs {0} and {1} overlap")]
    OverlappingCidrs(IpNet, IpNet),
    #[error("underlay IP {ip} refused: {reason}")]
    BadUnderlayIp { ip: IpAddr, reason: &'static str },
    #[error("`{field}` is {got}, but masquerade subnet {subnet} gives {expected}")]
    MasqueradeAddress {
        field: &'static str,
        got: IpAddr,
        expected: IpAddr,
        subnet: IpNet,
    },
    #[error("`{field}` value {value} is not {family}")]
    FamilyMismatch {
        field: &'static str,
        value: String,
        family: Family,
    },
    #[error("address family {0} appears twice")]
    DuplicateFamily(Family),
    #[error("no cluster CIDRs for {0}")]
    NoCidrs(Family),
    #[error("cluster CIDR {cidr} rejected: {reason}")]
    RejectedCidr { cidr: IpNet, reason: &'static str },
    #[error("{count} cluster CIDRs is more than the limit of {max}")]
    TooManyCidrs { count: usize, max: usize },
    #[error("MTU {mtu} is outside {min}..={max}")]
    BadMtu { mtu: u32, min: u32, max: u32 },
}
