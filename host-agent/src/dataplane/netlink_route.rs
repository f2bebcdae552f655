//! rtnetlink: links, addresses, neighbours and routes, as small typed reads
//! and writes. No policy here; the kernel backend decides what to change.

use super::route_batch::{RouteBatches, RouteWrite};
use crate::plan::PlannedRoute;
use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::{
    Handle, RouteMessageBuilder,
    packet_route::{
        AddressFamily,
        address::{AddressAttribute, AddressFlags, AddressMessage, AddressProtocol},
        link::{LinkAttribute, LinkFlags, LinkMessage},
        neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
        route::{
            RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteMetric,
            RouteProtocol, RouteType,
        },
    },
    sys::AsyncSocket,
};
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

pub type NlResult<T> = Result<T, rtnetlink::Error>;

/// The main routing table.
pub const MAIN_TABLE: u32 = RouteHeader::RT_TABLE_MAIN as u32;

/// A route as the kernel reports it, reduced to what we compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRoute {
    pub dst: IpNet,
    /// The route's type when it is not unicast ("blackhole", "unreachable",
    /// "prohibit", "throw"): another writer's at our key is taken back
    /// like any other.
    pub kind: Option<&'static str>,
    pub via: Option<IpAddr>,
    pub oif: Option<u32>,
    pub mtu: Option<u32>,
    pub protocol: u8,
    pub priority: Option<u32>,
    pub table: u32,
    pub message: RouteMessage,
}

/// An address as the kernel reports it.
#[derive(Debug, Clone)]
pub struct KernelAddress {
    pub index: u32,
    pub addr: IpNet,
    /// The address protocol (ours marks what we added); None when unset.
    pub protocol: Option<u8>,
    pub message: AddressMessage,
}

/// A neighbour entry as the kernel reports it.
#[derive(Debug, Clone)]
pub struct KernelNeighbour {
    pub index: u32,
    pub ip: IpAddr,
    pub mac: Option<Vec<u8>>,
    pub permanent: bool,
    /// NDA_PROTOCOL (ours marks what we added); None when unset, as for
    /// entries made by ovnkube-node or by hand.
    pub protocol: Option<u8>,
    pub message: NeighbourMessage,
}

/// A link's name and whether it is administratively up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelLink {
    pub name: String,
    pub up: bool,
}

#[derive(Clone)]
pub struct RouteNetlink {
    handle: Handle,
    port: u32,
    batches: RouteBatches,
}

impl RouteNetlink {
    /// Opens an rtnetlink socket in the current network namespace and spawns
    /// its connection task (without it every request would hang).
    pub fn open() -> std::io::Result<Self> {
        let (mut connection, handle, _) = rtnetlink::new_connection()?;
        // Bound now (not on first send) so that its port is known.
        let address = connection.socket_mut().socket_mut().bind_auto()?;
        tokio::spawn(connection);
        Ok(RouteNetlink {
            handle,
            port: address.port_number(),
            batches: RouteBatches::open()?,
        })
    }

    /// The netlink ports of our sockets: the kernel names one of them as
    /// the origin of the events our own writes cause.
    pub fn ports(&self) -> [u32; 2] {
        [self.port, self.batches.port()]
    }

    pub async fn links(&self) -> NlResult<HashMap<u32, KernelLink>> {
        let mut links = HashMap::new();
        let mut stream = self.handle.link().get().execute();
        while let Some(link) = stream.try_next().await? {
            if let Some(name) = link_name(&link) {
                let up = link.header.flags.contains(LinkFlags::Up);
                links.insert(link.header.index, KernelLink { name, up });
            }
        }
        Ok(links)
    }

    pub async fn addresses(&self) -> NlResult<Vec<KernelAddress>> {
        let mut out = Vec::new();
        let mut stream = self.handle.address().get().execute();
        while let Some(message) = stream.try_next().await? {
            if let Some(net) = address_net(&message) {
                let protocol = message.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Protocol(p) => Some(u8::from(*p)),
                    _ => None,
                });
                out.push(KernelAddress {
                    index: message.header.index,
                    addr: net,
                    protocol,
                    message,
                });
            }
        }
        Ok(out)
    }

    /// Adds an address marked with our protocol; IPv6 without duplicate
    /// address detection so that it is usable at once.
    pub async fn add_address(&self, index: u32, addr: IpNet, protocol: u8) -> NlResult<()> {
        let mut request = self
            .handle
            .address()
            .add(index, addr.addr(), addr.prefix_len());
        let attributes = &mut request.message_mut().attributes;
        attributes.push(AddressAttribute::Protocol(AddressProtocol::Other(protocol)));
        if addr.addr().is_ipv6() {
            attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        request.replace().execute().await
    }

    pub async fn del_address(&self, address: &KernelAddress) -> NlResult<()> {
        self.handle
            .address()
            .del(address.message.clone())
            .execute()
            .await
    }

    pub async fn neighbours(&self) -> NlResult<Vec<KernelNeighbour>> {
        let mut out = Vec::new();
        let mut stream = self.handle.neighbours().get().execute();
        while let Some(message) = stream.try_next().await? {
            let ip = neighbour_ip(&message);
            let mac = neighbour_mac(&message).map(<[u8]>::to_vec);
            let protocol = message.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::Protocol(p) => Some(u8::from(*p)),
                _ => None,
            });
            if let Some(ip) = ip {
                out.push(KernelNeighbour {
                    index: message.header.ifindex,
                    ip,
                    mac,
                    permanent: message.header.state == NeighbourState::Permanent,
                    protocol,
                    message,
                });
            }
        }
        Ok(out)
    }

    /// A permanent neighbour marked with our protocol (NDA_PROTOCOL), so
    /// that cleanup can tell it from one ovnkube-node or a person made.
    pub async fn set_permanent_neighbour(
        &self,
        index: u32,
        ip: IpAddr,
        mac: &[u8],
        protocol: u8,
    ) -> NlResult<()> {
        let mut request = self
            .handle
            .neighbours()
            .add(index, ip)
            .state(NeighbourState::Permanent)
            .link_layer_address(mac)
            .replace();
        request
            .message_mut()
            .attributes
            .push(NeighbourAttribute::Protocol(RouteProtocol::from(protocol)));
        request.execute().await
    }

    pub async fn del_neighbour(&self, neighbour: &KernelNeighbour) -> NlResult<()> {
        self.handle
            .neighbours()
            .del(neighbour.message.clone())
            .execute()
            .await
    }

    /// The main table's routes of both families (see [`parse_route`]).
    pub async fn main_routes(&self) -> NlResult<Vec<KernelRoute>> {
        let mut out = Vec::new();
        for request in [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ] {
            let mut stream = self.handle.route().get(request).execute();
            while let Some(message) = stream.try_next().await? {
                if let Some(route) = parse_route(message)
                    && route.table == MAIN_TABLE
                {
                    out.push(route);
                }
            }
        }
        Ok(out)
    }

    /// The table entry the kernel uses for `dst`'s own address, read with
    /// one lookup (RTM_F_FIB_MATCH: the matched route as listed, not a
    /// computed next hop), instead of listing every route. None when there
    /// is no route; the caller compares the entry's prefix with `dst`, and
    /// lists on an error (a route that drops is one).
    pub async fn route_for(&self, dst: IpNet) -> NlResult<Option<KernelRoute>> {
        let mut message = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dst.network(), dst.max_prefix_len())
            .map_err(invalid)?
            .build();
        message.header.flags |= RouteFlags::FibMatch;
        let mut stream = self.handle.route().get(message).execute();
        match stream.try_next().await {
            Ok(reply) => Ok(reply.and_then(parse_route)),
            // No route. A route that drops answers otherwise (blackhole
            // EINVAL, unreachable EHOSTUNREACH, prohibit EACCES): an error,
            // so that the caller lists and sees it.
            Err(e) if errno(&e) == Some(libc::ENETUNREACH) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Adds or replaces (same destination, table and metric) every planned
    /// route through `oif`, in batches ([`super::route_batch`]); the
    /// kernel's answer to each, in order, with its echo if `echo`. Err when
    /// the batch itself failed.
    pub async fn put_routes(
        &self,
        routes: &[(&PlannedRoute, bool)],
        oif: u32,
        echo: bool,
    ) -> std::io::Result<Vec<NlResult<Option<KernelRoute>>>> {
        let mut writes = Vec::with_capacity(routes.len());
        for (route, replace) in routes {
            let message = route_message(route, oif).map_err(std::io::Error::other)?;
            writes.push(RouteWrite {
                message,
                replace: *replace,
            });
        }
        let answers = self.batches.write(&writes, echo).await?;
        Ok(answers
            .into_iter()
            .map(|answer| answer.map(|echo| echo.and_then(parse_route)))
            .collect())
    }

    pub async fn del_route(&self, route: &KernelRoute) -> NlResult<()> {
        self.handle
            .route()
            .del(route.message.clone())
            .execute()
            .await
    }
}

fn invalid(error: impl std::fmt::Display) -> rtnetlink::Error {
    rtnetlink::Error::InvalidNla(error.to_string())
}

fn route_message(route: &PlannedRoute, oif: u32) -> NlResult<RouteMessage> {
    let mut message = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(route.dst.addr(), route.dst.prefix_len())
        .map_err(invalid)?
        .gateway(route.via)
        .map_err(invalid)?
        .output_interface(oif)
        .protocol(RouteProtocol::Other(route.protocol))
        .table_id(MAIN_TABLE)
        .kind(RouteType::Unicast)
        .build();
    message
        .attributes
        .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(route.mtu)]));
    Ok(message)
}

fn route_address(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

/// A link message's interface name.
pub fn link_name(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.clone()),
        _ => None,
    })
}

/// A neighbour message's IP address.
pub fn neighbour_ip(message: &NeighbourMessage) -> Option<IpAddr> {
    message.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
        _ => None,
    })
}

/// A neighbour message's link-layer address.
pub fn neighbour_mac(message: &NeighbourMessage) -> Option<&[u8]> {
    message.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(mac) => Some(mac.as_slice()),
        _ => None,
    })
}

/// An address message's address and prefix length. IFA_LOCAL is the
/// interface's own address (IFA_ADDRESS is the peer on point-to-point
/// links); IFA_ADDRESS where there is no IFA_LOCAL.
pub fn address_net(message: &AddressMessage) -> Option<IpNet> {
    let ip = message
        .attributes
        .iter()
        .find_map(|a| match a {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        })
        .or_else(|| {
            message.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })
        })?;
    IpNet::new(ip, message.header.prefix_len).ok()
}

/// A route message of the kinds a routing table holds (unicast, and the
/// ones that drop: blackhole, unreachable, prohibit, throw) reduced to what
/// we compare; None for the others (local, broadcast, ...: the local table's).
pub fn parse_route(message: RouteMessage) -> Option<KernelRoute> {
    let kind = match message.header.kind {
        RouteType::Unicast => None,
        RouteType::BlackHole => Some("blackhole"),
        RouteType::Unreachable => Some("unreachable"),
        RouteType::Prohibit => Some("prohibit"),
        RouteType::Throw => Some("throw"),
        _ => return None,
    };
    let mut dst = None;
    let mut via = None;
    let mut oif = None;
    let mut mtu = None;
    let mut priority = None;
    let mut table = u32::from(message.header.table);
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Destination(a) => dst = route_address(a),
            RouteAttribute::Gateway(a) => via = route_address(a),
            RouteAttribute::Oif(index) => oif = Some(*index),
            RouteAttribute::Priority(p) => priority = Some(*p),
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Metrics(metrics) => {
                mtu = metrics.iter().find_map(|m| match m {
                    RouteMetric::Mtu(mtu) => Some(*mtu),
                    _ => None,
                });
            }
            _ => {}
        }
    }
    // A route without RTA_DST is a default route of its family.
    let dst = dst.unwrap_or(match message.header.address_family {
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    });
    Some(KernelRoute {
        dst: IpNet::new(dst, message.header.destination_prefix_length).ok()?,
        kind,
        via,
        oif,
        mtu,
        protocol: u8::from(message.header.protocol),
        priority,
        table,
        // Kept whole (not copied): deleting a route sends it back as listed.
        message,
    })
}

/// The errno of a kernel refusal, if that is what the error is.
pub fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|c| -c.get()),
        _ => None,
    }
}
