//! The contract on the wire: [`pb::Contract`] carries strings; parsing
//! them into the typed model enforces every rule a peer must not be trusted
//! with (see [`super::Contract::new`]), and bounds the work first.

use super::{
    Contract, ContractError, Family, FamilyContract, MAX_CLUSTER_CIDRS, Masquerade, Mode, truncate,
};
use crate::{PROTOCOL_VERSION, pb};
use ipnet::IpNet;
use std::{net::IpAddr, str::FromStr};

impl Contract {
    pub fn to_pb(&self) -> pb::Contract {
        pb::Contract {
            revision: self.revision,
            protocol_version: self.protocol_version,
            mode: Some(self.mode.to_pb()),
            families: self
                .families
                .iter()
                .map(|f| pb::FamilyContract {
                    family: f.family().to_pb() as i32,
                    masquerade_subnet: f.masquerade.subnet.to_string(),
                    host_masquerade_ip: f.masquerade.host_ip.to_string(),
                    dummy_next_hop: f.masquerade.dummy_next_hop.to_string(),
                    cluster_cidrs: f.cluster_cidrs.iter().map(ToString::to_string).collect(),
                    underlay_ip: f.underlay_ip.to_string(),
                })
                .collect(),
            mtu: self.mtu,
            gateway_interface: self.gateway_interface.clone(),
            // Where each fact came from is the serving agent's to add.
            facts: Vec::new(),
        }
    }
}

impl TryFrom<&pb::Contract> for Contract {
    type Error = ContractError;

    /// Parses and validates a contract received from the wire.
    fn try_from(wire: &pb::Contract) -> Result<Self, ContractError> {
        if wire.protocol_version != PROTOCOL_VERSION {
            return Err(ContractError::Version {
                ours: PROTOCOL_VERSION,
                theirs: wire.protocol_version,
            });
        }
        let mode = Mode::from_pb(wire.mode.as_ref())?;
        let mut families = Vec::with_capacity(wire.families.len());
        for f in &wire.families {
            let family = Family::from_pb(f.family)?;
            let subnet = parse_net("masquerade_subnet", &f.masquerade_subnet)?;
            if Family::of_net(&subnet) != family {
                return Err(ContractError::FamilyMismatch {
                    field: "masquerade_subnet",
                    value: subnet.to_string(),
                    family,
                });
            }
            let masquerade = Masquerade::from_subnet(subnet)?;
            // The addresses on the wire must be the ones the subnet gives.
            for (field, text, expected) in [
                (
                    "host_masquerade_ip",
                    &f.host_masquerade_ip,
                    masquerade.host_ip,
                ),
                (
                    "dummy_next_hop",
                    &f.dummy_next_hop,
                    masquerade.dummy_next_hop,
                ),
            ] {
                let got = parse_addr(field, text)?;
                if got != expected {
                    return Err(ContractError::MasqueradeAddress {
                        field,
                        got,
                        expected,
                        subnet,
                    });
                }
            }
            // Bound the work before parsing thousands of strings.
            if f.cluster_cidrs.len() > MAX_CLUSTER_CIDRS {
                return Err(ContractError::TooManyCidrs {
                    count: f.cluster_cidrs.len(),
                    max: MAX_CLUSTER_CIDRS,
                });
            }
            let cluster_cidrs = f
                .cluster_cidrs
                .iter()
                .map(|c| parse_net("cluster_cidrs", c))
                .collect::<Result<Vec<_>, _>>()?;
            families.push(FamilyContract {
                masquerade,
                cluster_cidrs,
                underlay_ip: parse_addr("underlay_ip", &f.underlay_ip)?,
            });
        }
        Contract::new(
            wire.revision,
            mode,
            families,
            wire.mtu,
            wire.gateway_interface.clone(),
        )
    }
}

fn parse_net(field: &'static str, text: &str) -> Result<IpNet, ContractError> {
    IpNet::from_str(text).map_err(|_| ContractError::BadValue {
        field,
        value: truncate(text),
        expected: "an IP prefix such as 198.18.128.0/17 or fd00:10::/64",
    })
}

fn parse_addr(field: &'static str, text: &str) -> Result<IpAddr, ContractError> {
    IpAddr::from_str(text).map_err(|_| ContractError::BadValue {
        field,
        value: truncate(text),
        expected: "an IP address",
    })
}
