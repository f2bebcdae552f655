//! Teardown: everything the host agent owns, and nothing else, removed.

use super::{Kernel, kernel_error, link_index};
use crate::{
    dataplane::{DataplaneError, netlink_route, nftables::rules},
    plan::{self, HostSettings},
};

impl Kernel {
    /// Removes everything we own (routes with our protocol, our neighbour
    /// and address, our nft table if it carries our mark). Keeps going past
    /// errors and returns them all.
    pub(super) async fn remove_what_is_ours(
        &mut self,
        settings: &HostSettings,
    ) -> Result<(), DataplaneError> {
        let mut errors = Vec::new();
        match self.rt.main_routes().await {
            Ok(routes) => {
                for route in routes
                    .iter()
                    .filter(|r| r.protocol == settings.route_protocol)
                {
                    if let Err(e) = self.rt.del_route(route).await
                        && netlink_route::errno(&e) != Some(libc::ESRCH)
                    {
                        errors.push(kernel_error(format!("delete route {}", route.dst), e));
                    }
                }
            }
            Err(e) => errors.push(kernel_error("list routes", e)),
        }
        let gateway = match self.rt.links().await {
            Ok(links) => link_index(&links, &settings.gateway_interface),
            Err(e) => {
                errors.push(kernel_error("list links", e));
                None
            }
        };
        if let Some(gateway) = gateway {
            match self.rt.neighbours().await {
                Ok(neighbours) => {
                    for masq in &self.masquerades {
                        let mac = masq.dummy_next_hop_mac();
                        // Only the entry we made: one that ovnkube-node
                        // made (shared while we ran) stays.
                        for n in neighbours.iter().filter(|n| {
                            n.index == gateway
                                && n.ip == masq.dummy_next_hop
                                && n.permanent
                                && n.mac.as_deref() == Some(&mac[..])
                                && n.protocol == Some(settings.route_protocol)
                        }) {
                            if let Err(e) = self.rt.del_neighbour(n).await {
                                errors.push(kernel_error(format!("delete neighbour {}", n.ip), e));
                            }
                        }
                    }
                }
                Err(e) => errors.push(kernel_error("list neighbours", e)),
            }
            match self.rt.addresses().await {
                Ok(addresses) => {
                    for masq in &self.masquerades {
                        // Only the address we added, likewise.
                        for a in addresses.iter().filter(|a| {
                            a.index == gateway
                                && a.addr == masq.host_address()
                                && a.protocol == Some(settings.route_protocol)
                        }) {
                            if let Err(e) = self.rt.del_address(a).await {
                                errors.push(kernel_error(format!("delete address {}", a.addr), e));
                            }
                        }
                    }
                }
                Err(e) => errors.push(kernel_error("list addresses", e)),
            }
        }
        match self
            .refuse_foreign_table(&settings.nft_table, plan::NFT_CHAIN, "delete")
            .await
        {
            Ok(()) => {
                let deleted = match rules::delete(&settings.nft_table) {
                    Ok(transaction) => self.nft.commit(transaction).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = deleted {
                    errors.push(kernel_error(
                        format!("delete nft table inet {}", settings.nft_table),
                        e,
                    ));
                }
            }
            Err(e) => errors.push(e),
        }
        self.last_nft = None;
        self.nft_dirty = true;
        if errors.is_empty() {
            Ok(())
        } else {
            Err(DataplaneError::Many(errors))
        }
    }
}
