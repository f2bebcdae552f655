//! Shared pieces of the integration tests and the demo: certificates, config
//! files as a user writes them, and agents started in-process.

pub mod bgp;
pub mod e2e;
pub mod frr;
pub mod harness;
pub mod mock_dpu;
pub mod netns;
pub mod ovn;
pub mod ovnkube;
pub mod ovs;
pub mod pki;
pub mod route_import;
pub mod routed;
