//! dpu-agent: the DPU side of DPU host no-overlay routing.
//!
//! It serves the contract to the host over mTLS gRPC ([`server`]),
//! negotiating it ([`negotiation`]) from its own config ([`config`]), and
//! plans the gateway bridge flows ([`flows`]).

pub mod config;
pub mod flows;
pub mod negotiation;
pub mod server;
pub mod tls_listener;
