//! Negotiation: the host's proposal against the DPU's offer.
//!
//! Both sides are configured separately, so they can disagree. Every value
//! they must share is compared and every difference is reported with both
//! values; only a full match yields a contract.

use crate::{
    PROTOCOL_VERSION,
    contract::{Contract, ContractError, Family, Mode, Offer},
    pb,
};
use ipnet::IpNet;
use std::{fmt, str::FromStr};

/// One value on which host and DPU disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub what: String,
    pub host: String,
    pub dpu: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: host {}, dpu {}", self.what, self.host, self.dpu)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NegotiationError {
    #[error("{}", join(.0))]
    Mismatch(Vec<Mismatch>),
    #[error("invalid proposal: {0}")]
    Invalid(#[from] ContractError),
}

fn join(mismatches: &[Mismatch]) -> String {
    let parts: Vec<String> = mismatches.iter().map(ToString::to_string).collect();
    format!("host and dpu disagree on {}", parts.join("; "))
}

/// Checks the proposal against the offer and returns the host's contract.
pub fn negotiate(
    proposal: &pb::NegotiateRequest,
    offer: &Offer,
) -> Result<Contract, NegotiationError> {
    if proposal.protocol_version != PROTOCOL_VERSION {
        // Nothing else can be trusted to mean the same across versions.
        return Err(NegotiationError::Mismatch(vec![Mismatch {
            what: "protocol version".into(),
            host: proposal.protocol_version.to_string(),
            dpu: PROTOCOL_VERSION.to_string(),
        }]));
    }
    let mut mismatches = Vec::new();
    match Mode::from_pb(proposal.mode.as_ref()) {
        Ok(mode) if mode == offer.mode => {}
        Ok(mode) => mismatches.push(Mismatch {
            what: "mode".into(),
            host: format!("({mode})"),
            dpu: format!("({})", offer.mode),
        }),
        Err(e) => mismatches.push(Mismatch {
            what: "mode".into(),
            host: format!("(unreadable: {e})"),
            dpu: format!("({})", offer.mode),
        }),
    }
    let mut host_families = Vec::new();
    for proposed in &proposal.families {
        let family = Family::from_pb(proposed.family)?;
        if host_families.iter().any(|(f, _)| *f == family) {
            return Err(ContractError::DuplicateFamily(family).into());
        }
        let subnet =
            IpNet::from_str(&proposed.masquerade_subnet).map_err(|_| ContractError::BadValue {
                field: "families.masquerade_subnet",
                value: proposed.masquerade_subnet.chars().take(64).collect(),
                expected: "an IP prefix such as 169.254.0.0/17",
            })?;
        host_families.push((family, subnet));
    }
    host_families.sort();
    let dpu_families: Vec<Family> = offer.families.iter().map(|f| f.family()).collect();
    let host_family_names: Vec<Family> = host_families.iter().map(|(f, _)| *f).collect();
    if host_family_names != dpu_families {
        mismatches.push(Mismatch {
            what: "address families".into(),
            host: list(&host_family_names),
            dpu: list(&dpu_families),
        });
    }
    for (family, subnet) in &host_families {
        if let Some(dpu) = offer.family(*family)
            && dpu.masquerade.subnet != *subnet
        {
            mismatches.push(Mismatch {
                what: format!("masquerade subnet for {family}"),
                host: subnet.to_string(),
                dpu: dpu.masquerade.subnet.to_string(),
            });
        }
    }
    if !mismatches.is_empty() {
        return Err(NegotiationError::Mismatch(mismatches));
    }
    Ok(offer.contract_for(&proposal.gateway_interface)?)
}

fn list(families: &[Family]) -> String {
    if families.is_empty() {
        return "(none)".into();
    }
    families
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("+")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{FamilyContract, Masquerade, Transport};

    fn offer() -> Offer {
        Offer::new(
            3,
            Mode::IN_SCOPE,
            vec![FamilyContract {
                masquerade: Masquerade::from_subnet("169.254.0.0/17".parse().expect("net"))
                    .expect("masq"),
                cluster_cidrs: vec!["198.18.128.0/17".parse().expect("cidr")],
                underlay_ip: "198.18.0.10".parse().expect("ip"),
            }],
            1400,
        )
        .expect("offer")
    }

    fn proposal() -> pb::NegotiateRequest {
        pb::NegotiateRequest {
            protocol_version: PROTOCOL_VERSION,
            mode: Some(Mode::IN_SCOPE.to_pb()),
            families: vec![pb::FamilyProposal {
                family: pb::AddressFamily::Ipv4 as i32,
                masquerade_subnet: "169.254.0.0/17".into(),
            }],
            gateway_interface: "eth0".into(),
            host_name: "node1".into(),
        }
    }

    #[test]
    fn matching_proposal_yields_the_offer_for_that_interface() {
        let contract = negotiate(&proposal(), &offer()).expect("agrees");
        assert_eq!(contract.revision, 3);
        assert_eq!(contract.gateway_interface, "eth0");
        assert_eq!(contract.families, offer().families);
    }

    #[test]
    fn every_mismatch_is_named_with_both_values() {
        let mut p = proposal();
        p.mode = Some(
            Mode {
                transport: Transport::Geneve,
                ..Mode::IN_SCOPE
            }
            .to_pb(),
        );
        p.families[0].masquerade_subnet = "169.254.0.0/16".into();
        p.families.push(pb::FamilyProposal {
            family: pb::AddressFamily::Ipv6 as i32,
            masquerade_subnet: "fd69::/112".into(),
        });
        let err = negotiate(&p, &offer())
            .expect_err("three mismatches")
            .to_string();
        for needle in [
            "mode: host (node dpu-host, gateway shared, transport geneve), dpu (node dpu-host, gateway shared, transport no-overlay)",
            "address families: host ipv4+ipv6, dpu ipv4",
            "masquerade subnet for ipv4: host 169.254.0.0/16, dpu 169.254.0.0/17",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in {err}");
        }
    }

    #[test]
    fn version_mismatch_names_both_versions() {
        let mut p = proposal();
        p.protocol_version = 9;
        let err = negotiate(&p, &offer()).expect_err("version").to_string();
        assert!(
            err.contains(&format!("protocol version: host 9, dpu {PROTOCOL_VERSION}")),
            "{err}"
        );
    }

    #[test]
    fn malformed_proposals_are_invalid_not_panics() {
        let mut p = proposal();
        p.gateway_interface = String::new();
        assert!(matches!(
            negotiate(&p, &offer()),
            Err(NegotiationError::Invalid(_))
        ));
        let mut p = proposal();
        p.families[0].masquerade_subnet = "x".repeat(10_000);
        let err = negotiate(&p, &offer()).expect_err("garbage").to_string();
        assert!(
            err.len() < 300,
            "error echoes hostile input: {} bytes",
            err.len()
        );
        let mut p = proposal();
        p.families[0].family = 42;
        assert!(negotiate(&p, &offer()).is_err());
        let mut p = proposal();
        p.mode = None;
        assert!(
            negotiate(&p, &offer())
                .expect_err("no mode")
                .to_string()
                .contains("mode")
        );
    }
}
