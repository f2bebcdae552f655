//! What the host said of the contracts it was sent: the offer it last
//! applied, a revision it refuses, and the offers served lately (a report
//! may come after the next revision is served). The flows are planned from
//! it ([`HostView::flow_offer`]).

use noverlay_proto::{contract::Offer, pb};
use std::collections::VecDeque;

/// Offers kept for reports that come late.
const SERVED_KEPT: usize = 8;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostView {
    pub applied: Option<Offer>,
    pub refused: Option<u64>,
    served: VecDeque<Offer>,
}

impl HostView {
    /// Nothing heard yet; `first` served.
    pub(super) fn new(first: Offer) -> Self {
        HostView {
            served: [first].into(),
            ..HostView::default()
        }
    }

    /// `offer` is served now. What the host said does not change (false):
    /// nothing does until it speaks of this one.
    pub(super) fn serve(&mut self, offer: &Offer) -> bool {
        if self.served.back() != Some(offer) {
            self.served.push_back(offer.clone());
            if self.served.len() > SERVED_KEPT {
                self.served.pop_front();
            }
        }
        false
    }

    /// A report of the host; whether what it said changed.
    pub(super) fn hear(&mut self, report: &pb::HostReport) -> bool {
        let before = self.clone();
        if report.applied {
            if let Some(offer) = self.served.iter().find(|o| o.revision == report.revision) {
                self.applied = Some(offer.clone());
            }
            if self.refused.is_some_and(|r| r <= report.revision) {
                self.refused = None;
            }
        } else if report.refused {
            self.refused = Some(report.revision);
        }
        *self != before
    }

    /// The offer the flows are planned from, given the one `served`: see
    /// [`super::AgentHandle::flow_offer`].
    pub(super) fn flow_offer(&self, served: Offer) -> Offer {
        // Not knowing what the host holds (a restarted agent), nothing is
        // withdrawn: the host may route any of it to us.
        if self.refused != Some(served.revision) || self.applied.is_none() {
            return served;
        }
        let mut narrowed = served;
        for family in &mut narrowed.families {
            let applied = self
                .applied
                .as_ref()
                .and_then(|offer| offer.family(family.family()))
                .map(|f| f.cluster_cidrs.clone())
                .unwrap_or_default();
            family.cluster_cidrs.retain(|cidr| applied.contains(cidr));
        }
        narrowed
    }
}
