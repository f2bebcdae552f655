//! The protocol numbers that both writing ([`super::wire`]) and reading
//! ([`super::reply`]) need: versions, message and multipart types, the
//! Open Networking Foundation extensions that carry 1.4's bundles and flow
//! monitor in OpenFlow 1.3, bundle control types.

/// OpenFlow 1.4, what we build and prefer.
pub const VERSION: u8 = OF14;
pub const OF13: u8 = 0x04;
pub const OF14: u8 = 0x05;
/// The versions we speak, oldest first.
pub const VERSIONS: [u8; 2] = [OF13, OF14];

/// A version number as Open vSwitch's `protocols` column spells it.
pub fn version_name(version: u8) -> String {
    match version {
        0x01..=0x06 => format!("OpenFlow1{}", version - 1),
        other => format!("OpenFlow version {other:#04x}"),
    }
}

// Message types (OpenFlow 1.4).
pub const OFPT_HELLO: u8 = 0;
pub const OFPT_ERROR: u8 = 1;
pub const OFPT_ECHO_REQUEST: u8 = 2;
pub const OFPT_ECHO_REPLY: u8 = 3;
pub const OFPT_EXPERIMENTER: u8 = 4;
pub const OFPT_FLOW_MOD: u8 = 14;
pub const OFPT_MULTIPART_REQUEST: u8 = 18;
pub const OFPT_MULTIPART_REPLY: u8 = 19;
pub const OFPT_BARRIER_REQUEST: u8 = 20;
pub const OFPT_BARRIER_REPLY: u8 = 21;
pub const OFPT_BUNDLE_CONTROL: u8 = 33;
pub const OFPT_BUNDLE_ADD_MESSAGE: u8 = 34;

pub const OFPMP_FLOW: u16 = 1;
pub const OFPMP_FLOW_MONITOR: u16 = 16;
pub const OFPMP_EXPERIMENTER: u16 = 0xffff;

/// OpenFlow 1.3's bundles and flow monitor: Open Networking Foundation
/// extensions (experimenter messages), with 1.4's bodies.
pub const ONF_EXPERIMENTER: u32 = 0x4f4e_4600;
pub const ONFT_BUNDLE_CONTROL: u32 = 2300;
pub const ONFT_BUNDLE_ADD_MESSAGE: u32 = 2301;
pub const ONFST_FLOW_MONITOR: u32 = 1870;
pub const ONFT_FLOW_MONITOR_PAUSED: u32 = 1871;
pub const ONFT_FLOW_MONITOR_RESUMED: u32 = 1872;

pub const OFPHET_VERSIONBITMAP: u16 = 1;

/// Bundle control types.
pub const OFPBCT_OPEN_REQUEST: u16 = 0;
pub const OFPBCT_OPEN_REPLY: u16 = 1;
pub const OFPBCT_COMMIT_REQUEST: u16 = 4;
pub const OFPBCT_COMMIT_REPLY: u16 = 5;
pub const OFPBCT_DISCARD_REQUEST: u16 = 6;
/// All or nothing, in order.
pub const OFPBF_ATOMIC_ORDERED: u16 = 0b11;

/// Flow mod flag: refuse the add if a flow of the same priority overlaps.
pub const OFPFF_CHECK_OVERLAP: u16 = 1 << 1;
/// Error type and code of a refused `OFPFF_CHECK_OVERLAP` add.
pub const OFPET_FLOW_MOD_FAILED: u16 = 5;
pub const OFPFMFC_OVERLAP: u16 = 3;
