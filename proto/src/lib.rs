//! The contract between `host-agent` and `dpu-agent`.
//!
//! - [`pb`]: the generated gRPC types and the descriptor set for reflection.
//! - [`contract`]: the validated domain model both agents plan from; every wire
//!   message is parsed into it before anything is applied.
//! - [`negotiation`]: the host's proposal against the DPU's offer, every
//!   difference named with both values.
//! - [`text`]: peer text made safe to log and to keep.
//! - [`tls`]: the mutual TLS setup both agents share (TLS 1.3, peer identity
//!   pinned to a certificate SAN).

pub mod contract;
pub mod negotiation;
pub mod text;
pub mod tls;

/// Generated protobuf and gRPC code for package `noverlay.v1`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("noverlay.v1");

    /// Encoded `FileDescriptorSet` of the API, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/noverlay_descriptor.bin"));

    /// Fully qualified gRPC service name, as health checks and grpcurl name it.
    pub const DPU_AGENT_SERVICE: &str = "noverlay.v1.DpuAgent";
}

/// Version of the agent-to-agent protocol. Bump it on any change a peer must
/// understand; peers on different versions are refused with both named.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest gRPC message either agent accepts. Contracts are small (a few KiB
/// even at the CIDR limit); anything near this size is hostile.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Largest response the DPU agent sends: GetStatus at the CIDR limit lists
/// ~3,000 desired and installed flows (~0.5 MB). Requests stay bounded by
/// [`MAX_MESSAGE_BYTES`]; a client reading GetStatus (grpcurl's default is
/// 4 MiB) must accept this much.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
