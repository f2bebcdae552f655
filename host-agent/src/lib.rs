//! host-agent: the host side of DPU host no-overlay routing.
//!
//! It negotiates the contract with dpu-agent over mTLS ([`client`],
//! [`agent`]), checks it against its own config and addresses, plans the host
//! state ([`plan`]) and applies it through a [`dataplane::Dataplane`].
//! What it has done ([`status`]) is served to `host-agent status` over an
//! owner-only local socket ([`local_status`]).

pub mod agent;
pub mod backoff;
pub mod client;
pub mod config;
pub mod dataplane;
pub mod local_status;
pub mod metrics;
pub mod plan;
pub mod reload;
pub mod status;
