//! host-agent: the host side of DPU host no-overlay routing.
//!
//! It negotiates the contract with dpu-agent over mTLS ([`client`],
//! [`agent`]), checks it against its own config and addresses, plans the host
//! state ([`plan`]) and applies it through a [`dataplane::Dataplane`].

pub mod agent;
pub mod backoff;
pub mod client;
pub mod config;
pub mod dataplane;
pub mod metrics;
pub mod plan;
pub mod status;
