//! Kernel events that can matter to us, and only those, wake the reconcile.
//!
//! Every rtnetlink event is checked against what we own ([`Interest`]):
//! links and addresses of the gateway interface and mp0, routes to our
//! prefixes or with our protocol or through mp0, the dummy neighbours. The
//! rest (a busy host's neighbour churn, other routes) costs one check and
//! nothing else. Relevant events are coalesced in a [`Notify`]: a burst of
//! them wakes one reconcile, and nothing queues up unbounded.

use super::super::netlink_route::{self, parse_route};
use crate::config::Mp0Routes;
use futures::{FutureExt, StreamExt};
use ipnet::IpNet;
use noverlay_runtime::lock;
use rtnetlink::{
    MulticastGroup,
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::{RouteNetlinkMessage, neighbour::NeighbourState},
};
use std::{
    collections::HashSet,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};
use tokio::sync::Notify;

/// What our state depends on, as the last apply saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interest {
    /// The netlink ports of our own rtnetlink sockets: events our writes
    /// cause carry one of them and wake nothing.
    pub own_ports: Vec<u32>,
    pub gateway_name: String,
    pub gateway_index: Option<u32>,
    pub mp0_name: String,
    pub mp0_index: Option<u32>,
    /// Kept mp0 routes are someone else's business: their churn (ovnkube's
    /// route manager restoring them) wakes nothing.
    pub mp0_routes: Mp0Routes,
    pub route_protocol: u8,
    /// The cluster CIDRs: routes overlapping them matter.
    pub prefixes: Vec<IpNet>,
    /// Our planned routes' destinations: any route written there matters,
    /// through mp0 too (someone replacing one of ours).
    pub route_dsts: Vec<IpNet>,
    /// The dummy next hops and their MACs: their neighbour entries matter,
    /// unless an event only re-asserts the permanent entry we want (as
    /// ovnkube's masquerade reconciler does on its timer).
    pub neighbours: Vec<(IpAddr, [u8; 6])>,
    /// Our addresses on the gateway interface: an event that adds one of
    /// them as it is wakes nothing; any other address event on it does.
    pub addresses: Vec<IpNet>,
}

impl Interest {
    fn is_ours(&self, index: u32) -> bool {
        self.gateway_index == Some(index) || self.mp0_index == Some(index)
    }

    /// Whether `message` can change anything we own or depend on.
    pub fn matters(&self, message: &RouteNetlinkMessage) -> bool {
        self.touches(message).is_some()
    }

    /// What `message` touches of what we own or depend on; None when it
    /// cannot change any of it.
    pub fn touches(&self, message: &RouteNetlinkMessage) -> Option<Touch> {
        let other = |matters: bool| matters.then_some(Touch::Other);
        match message {
            RouteNetlinkMessage::NewLink(link) | RouteNetlinkMessage::DelLink(link) => other(
                self.is_ours(link.header.index)
                    || netlink_route::link_name(link)
                        .is_some_and(|n| n == self.gateway_name || n == self.mp0_name),
            ),
            RouteNetlinkMessage::NewAddress(a) => other(
                self.is_ours(a.header.index)
                    && !(self.gateway_index == Some(a.header.index)
                        && netlink_route::address_net(a)
                            .is_some_and(|n| self.addresses.contains(&n))),
            ),
            RouteNetlinkMessage::DelAddress(a) => other(self.is_ours(a.header.index)),
            RouteNetlinkMessage::NewRoute(r) | RouteNetlinkMessage::DelRoute(r) => {
                let route = parse_route(r.clone())?;
                let through_mp0 = route.oif.is_some() && route.oif == self.mp0_index;
                let overlapping = || {
                    self.prefixes
                        .iter()
                        .any(|p| p.contains(&route.dst) || route.dst.contains(p))
                };
                let matters = route.protocol == self.route_protocol
                    || self.route_dsts.contains(&route.dst)
                    || match self.mp0_routes {
                        Mp0Routes::Remove => through_mp0 || overlapping(),
                        Mp0Routes::Keep => !through_mp0 && overlapping(),
                    };
                matters.then_some(Touch::Route(route.dst))
            }
            RouteNetlinkMessage::NewNeighbour(n) => {
                let wanted = self
                    .neighbours
                    .iter()
                    .find(|(ip, _)| netlink_route::neighbour_ip(n) == Some(*ip));
                other(
                    self.gateway_index == Some(n.header.ifindex)
                        && wanted.is_some_and(|(_, mac)| {
                            n.header.state != NeighbourState::Permanent
                                || netlink_route::neighbour_mac(n) != Some(mac.as_slice())
                        }),
                )
            }
            RouteNetlinkMessage::DelNeighbour(n) => other(
                self.gateway_index == Some(n.header.ifindex)
                    && netlink_route::neighbour_ip(n)
                        .is_some_and(|ip| self.neighbours.iter().any(|(ours, _)| *ours == ip)),
            ),
            _ => None,
        }
    }
}

/// What an event that matters touched: a route's destination (the repair
/// looks it up alone) or something else (a link, an address, a neighbour).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    Route(IpNet),
    Other,
}

/// The coalesced wake-ups of the reconcile and what set them off.
#[derive(Clone, Default)]
pub struct Wakeups {
    notify: Arc<Notify>,
    interest: Arc<Mutex<Interest>>,
    /// Someone else changed nftables since our last write.
    nft_changed: Arc<AtomicBool>,
    /// Why the nftables watcher is deaf, while it is.
    nft_watch_lost: Arc<Mutex<Option<String>>>,
    /// Times the nftables watcher got its socket back.
    nft_watch_restarts: Arc<std::sync::atomic::AtomicU64>,
    /// The dataplane is gone: watchers stop.
    closed: Arc<AtomicBool>,
    /// What events that matter touched since the reconcile last took it.
    touched: Arc<Mutex<Touched>>,
    /// Times route events were lost (an overrun, a socket error, the
    /// stream ending).
    overruns: Arc<std::sync::atomic::AtomicU64>,
    /// Lost events are logged once a minute per kind.
    lost_log: Arc<Mutex<noverlay_runtime::logging::Repeats>>,
}

/// What kernel events that matter touched: route destinations, or
/// anything else (a link, an address, a neighbour, lost events).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Touched {
    pub route_dsts: HashSet<IpNet>,
    pub other: bool,
}

impl Wakeups {
    pub fn set_interest(&self, interest: Interest) {
        *lock(&self.interest) = interest;
    }

    /// A change that matters happened (or events were lost).
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    pub fn nft_changed(&self) {
        self.nft_changed.store(true, Ordering::Release);
        self.wake();
    }

    /// Why the nftables watcher hears nothing now (None: it hears).
    pub fn nft_watch_lost(&self) -> Option<String> {
        lock(&self.nft_watch_lost).clone()
    }

    pub fn nft_watch_restarts(&self) -> u64 {
        self.nft_watch_restarts.load(Ordering::Acquire)
    }

    /// Takes the "nftables changed" flag.
    pub fn take_nft_changed(&self) -> bool {
        self.nft_changed.swap(false, Ordering::AcqRel)
    }

    /// Resolves at the next wake-up; wake-ups since the last one count as
    /// one. Cancel-safe.
    pub async fn woken(&self) {
        self.notify.notified().await
    }

    /// Forgets pending wake-ups (a reconcile is about to answer them).
    pub fn absorb(&self) {
        // One poll takes a stored permit, if there is one.
        let _ = self.notify.notified().now_or_never();
    }

    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether `message` matters; if so, what it touched is recorded.
    fn matters(&self, origin: u32, message: &RouteNetlinkMessage) -> bool {
        let interest = lock(&self.interest);
        let touch = if interest.own_ports.contains(&origin) {
            None
        } else {
            interest.touches(message)
        };
        drop(interest);
        match touch {
            Some(Touch::Route(dst)) => {
                lock(&self.touched).route_dsts.insert(dst);
            }
            Some(Touch::Other) => lock(&self.touched).other = true,
            None => {}
        }
        touch.is_some()
    }

    /// Events were lost, or may have been: nothing is known of what they
    /// touched.
    fn touched_anything(&self) {
        lock(&self.touched).other = true;
    }

    /// Weighs one message from the event socket: an event that matters
    /// wakes the reconcile, and so does news of lost events.
    pub fn hear(&self, message: &NetlinkMessage<RouteNetlinkMessage>) {
        match &message.payload {
            NetlinkPayload::InnerMessage(inner)
                if self.matters(message.header.port_number, inner) =>
            {
                self.wake()
            }
            NetlinkPayload::Overrun(_) => self.lost_events("receive buffer overrun"),
            NetlinkPayload::Error(e) if e.code.is_some() => {
                self.lost_events(&format!("socket error {e}"))
            }
            _ => {}
        }
    }

    /// The kernel dropped events (or the socket reported an error): any of
    /// them may have mattered, so the next reconcile lists everything.
    fn lost_events(&self, why: &str) {
        let total = self.overruns.fetch_add(1, Ordering::AcqRel) + 1;
        if let Some(suppressed) = lock(&self.lost_log).due(why) {
            tracing::warn!(
                total,
                suppressed,
                "rtnetlink events lost ({why}); reading everything from the kernel"
            );
        }
        self.touched_anything();
        self.wake();
    }

    /// Times route events were lost since the agent started.
    pub fn event_overruns(&self) -> u64 {
        self.overruns.load(Ordering::Acquire)
    }

    /// Takes what events touched since the last take.
    pub fn take_touched(&self) -> Touched {
        std::mem::take(&mut *lock(&self.touched))
    }
}

impl noverlay_nft::ChangeListener for Wakeups {
    fn foreign_change(&self) {
        self.nft_changed();
    }

    fn is_closed(&self) -> bool {
        Wakeups::is_closed(self)
    }

    fn watching(&self, lost: Option<&str>) {
        let mut state = lock(&self.nft_watch_lost);
        if lost.is_none() && state.is_some() {
            self.nft_watch_restarts.fetch_add(1, Ordering::AcqRel);
        }
        *state = lost.map(str::to_string);
        drop(state);
        // The status says so at once.
        self.wake();
    }
}

/// The event socket's receive buffer: about 20,000 route events, so a
/// routing daemon's bulk change is held while a reconcile runs. Beyond it
/// the kernel drops events and says so (an overrun): then everything is
/// read again.
pub const EVENT_BUFFER_BYTES: usize = 4 << 20;

/// Subscribes to link, address, neighbour and route events and wakes
/// `wakeups` for those that matter, with a receive buffer of
/// `buffer_bytes`. Lost events (an overrun, an error on the socket, the
/// stream ending) wake the reconcile to read everything; a stream that
/// ended is subscribed again.
pub fn watch_route_events(wakeups: Wakeups, buffer_bytes: usize) -> std::io::Result<()> {
    let mut messages = subscribe(buffer_bytes)?;
    tokio::spawn(async move {
        loop {
            while let Some((message, _)) = messages.next().await {
                if wakeups.is_closed() {
                    return;
                }
                wakeups.hear(&message);
            }
            wakeups.lost_events("event stream ended; subscribing again");
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                if wakeups.is_closed() {
                    return;
                }
                match subscribe(buffer_bytes) {
                    Ok(fresh) => {
                        messages = fresh;
                        // Anything missed while unsubscribed is caught by this.
                        wakeups.touched_anything();
                        wakeups.wake();
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "resubscribing to rtnetlink events failed")
                    }
                }
            }
        }
    });
    Ok(())
}

type RouteEvents = futures::channel::mpsc::UnboundedReceiver<(
    NetlinkMessage<RouteNetlinkMessage>,
    rtnetlink::sys::SocketAddr,
)>;

fn subscribe(buffer_bytes: usize) -> std::io::Result<RouteEvents> {
    let (mut connection, _handle, messages) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
        MulticastGroup::Neigh,
    ])?;
    let socket = rtnetlink::sys::AsyncSocket::socket_mut(connection.socket_mut());
    set_receive_buffer(std::os::fd::AsRawFd::as_raw_fd(socket), buffer_bytes)?;
    tokio::spawn(connection);
    Ok(messages)
}

/// Sets the socket's receive buffer: past net.core.rmem_max with
/// CAP_NET_ADMIN (which the agent has), else as large as the host allows.
fn set_receive_buffer(fd: std::os::fd::RawFd, bytes: usize) -> std::io::Result<()> {
    let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let set = |option: libc::c_int| {
        // SAFETY: `fd` is an open socket owned by the caller; the option
        // value is a c_int that outlives the call, its length passed.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                std::ptr::from_ref(&size).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    set(libc::SO_RCVBUFFORCE).or_else(|forced| {
        tracing::debug!(error = %forced, "SO_RCVBUFFORCE refused; capped by net.core.rmem_max");
        set(libc::SO_RCVBUF)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_route::{
        AddressFamily,
        link::{LinkAttribute, LinkMessage},
        neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage},
        route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteType},
    };
    use std::net::Ipv4Addr;

    fn interest() -> Interest {
        Interest {
            own_ports: Vec::new(),
            gateway_name: "eth0".into(),
            gateway_index: Some(2),
            mp0_name: "ovn-k8s-mp0".into(),
            mp0_index: Some(3),
            mp0_routes: Mp0Routes::Remove,
            route_protocol: 240,
            prefixes: vec!["198.18.128.0/17".parse().expect("net")],
            route_dsts: Vec::new(),
            neighbours: vec![(
                "169.254.0.4".parse().expect("ip"),
                [0x0a, 0x58, 0xa9, 0xfe, 0, 4],
            )],
            addresses: vec!["169.254.0.2/17".parse().expect("net")],
        }
    }

    fn route(dst: [u8; 4], prefix: u8, protocol: u8, oif: u32) -> RouteNetlinkMessage {
        let mut message = RouteMessage::default();
        message.header.address_family = AddressFamily::Inet;
        message.header.destination_prefix_length = prefix;
        message.header.kind = RouteType::Unicast;
        message.header.protocol = RouteProtocol::from(protocol);
        message.header.table = 254;
        message
            .attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(
                Ipv4Addr::from(dst),
            )));
        message.attributes.push(RouteAttribute::Oif(oif));
        RouteNetlinkMessage::NewRoute(message)
    }

    fn neighbour(ip: [u8; 4], ifindex: u32) -> RouteNetlinkMessage {
        let mut message = NeighbourMessage::default();
        message.header.ifindex = ifindex;
        message
            .attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                Ipv4Addr::from(ip),
            )));
        RouteNetlinkMessage::NewNeighbour(message)
    }

    fn link(name: &str, index: u32) -> RouteNetlinkMessage {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.attributes.push(LinkAttribute::IfName(name.into()));
        RouteNetlinkMessage::NewLink(message)
    }

    #[test]
    fn only_what_we_own_or_depend_on_matters() {
        let i = interest();
        // Ours: our protocol, a route covering or inside a cluster CIDR,
        // anything through mp0, the dummy neighbour, our links.
        assert!(i.matters(&route([10, 0, 0, 0], 8, 240, 9)));
        assert!(i.matters(&route([198, 18, 128, 0], 17, 4, 2)));
        assert!(i.matters(&route([198, 18, 0, 0], 16, 3, 3)));
        assert!(i.matters(&route([198, 18, 200, 0], 24, 4, 9)));
        assert!(i.matters(&route([198, 19, 1, 0], 24, 2, 3)));
        assert!(i.matters(&neighbour([169, 254, 0, 4], 2)));
        assert!(i.matters(&link("eth0", 2)));
        assert!(i.matters(&link("ovn-k8s-mp0", 30)));
        // Not ours: unrelated routes, neighbours and links.
        assert!(!i.matters(&route([10, 1, 0, 0], 16, 4, 9)));
        assert!(!i.matters(&route([198, 18, 0, 0], 24, 2, 2)));
        assert!(!i.matters(&neighbour([10, 1, 0, 7], 9)));
        assert!(!i.matters(&neighbour([169, 254, 0, 4], 9)));
        assert!(!i.matters(&link("veth9", 9)));
    }

    #[test]
    fn a_route_that_drops_at_our_key_is_heard() {
        let i = Interest {
            mp0_routes: Mp0Routes::Keep,
            route_dsts: vec!["198.18.128.0/18".parse().expect("net")],
            ..interest()
        };
        for kind in [
            RouteType::BlackHole,
            RouteType::Unreachable,
            RouteType::Prohibit,
            RouteType::Throw,
        ] {
            let RouteNetlinkMessage::NewRoute(mut message) = route([198, 18, 128, 0], 18, 3, 0)
            else {
                unreachable!("route() makes a NewRoute");
            };
            message.header.kind = kind;
            message
                .attributes
                .retain(|a| !matches!(a, RouteAttribute::Oif(_)));
            assert!(
                i.matters(&RouteNetlinkMessage::NewRoute(message)),
                "{kind:?}"
            );
        }
        // The local table's kinds are not routes of ours to follow.
        let RouteNetlinkMessage::NewRoute(mut local) = route([198, 18, 128, 1], 32, 2, 2) else {
            unreachable!("route() makes a NewRoute");
        };
        local.header.kind = RouteType::Local;
        local.header.table = 255;
        assert!(!i.matters(&RouteNetlinkMessage::NewRoute(local)));
    }

    #[test]
    fn kept_mp0_routes_churning_wake_nothing() {
        let i = Interest {
            mp0_routes: Mp0Routes::Keep,
            ..interest()
        };
        // ovnkube's route manager restoring its cluster route via mp0, or
        // anything else through mp0: not ours to follow.
        assert!(!i.matters(&route([198, 18, 128, 0], 17, 3, 3)));
        assert!(!i.matters(&route([198, 18, 130, 0], 24, 2, 3)));
        // Ours, and someone else's route into a cluster CIDR elsewhere, still do.
        assert!(i.matters(&route([198, 18, 128, 0], 18, 240, 2)));
        assert!(i.matters(&route([198, 18, 200, 0], 24, 4, 9)));
        // A route through mp0 written over one of ours (a half) does.
        let i = Interest {
            route_dsts: vec!["198.18.128.0/18".parse().expect("net")],
            ..i
        };
        assert!(i.matters(&route([198, 18, 128, 0], 18, 3, 3)));
        assert!(!i.matters(&route([198, 18, 128, 0], 17, 3, 3)));
    }

    #[test]
    fn re_asserting_what_we_want_wakes_nothing() {
        use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
        let i = interest();
        let permanent = |mac: [u8; 6]| {
            let RouteNetlinkMessage::NewNeighbour(mut message) = neighbour([169, 254, 0, 4], 2)
            else {
                unreachable!("a neighbour message")
            };
            message.header.state = NeighbourState::Permanent;
            message
                .attributes
                .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
            message
        };
        // ovnkube's masquerade reconciler replacing the entry as we want it.
        let same = permanent([0x0a, 0x58, 0xa9, 0xfe, 0, 4]);
        assert!(!i.matters(&RouteNetlinkMessage::NewNeighbour(same.clone())));
        assert!(i.matters(&RouteNetlinkMessage::DelNeighbour(same)));
        let other_mac = permanent([0x0a, 0x58, 0xa9, 0xfe, 0, 5]);
        assert!(i.matters(&RouteNetlinkMessage::NewNeighbour(other_mac)));
        let address = |ip: [u8; 4], prefix: u8| {
            let mut message = AddressMessage::default();
            message.header.index = 2;
            message.header.prefix_len = prefix;
            message
                .attributes
                .push(AddressAttribute::Local(Ipv4Addr::from(ip).into()));
            message
        };
        let ours = address([169, 254, 0, 2], 17);
        assert!(!i.matters(&RouteNetlinkMessage::NewAddress(ours.clone())));
        assert!(i.matters(&RouteNetlinkMessage::DelAddress(ours)));
        assert!(i.matters(&RouteNetlinkMessage::NewAddress(address(
            [169, 254, 0, 2],
            24
        ))));
        assert!(i.matters(&RouteNetlinkMessage::NewAddress(address(
            [198, 18, 0, 9],
            24
        ))));
    }

    #[test]
    fn our_own_writes_wake_nothing() {
        let wakeups = Wakeups::default();
        wakeups.set_interest(Interest {
            own_ports: vec![4242],
            ..interest()
        });
        let ours = route([198, 18, 128, 0], 17, 240, 2);
        assert!(!wakeups.matters(4242, &ours));
        assert!(wakeups.matters(0, &ours), "a kernel event was ignored");
        assert!(
            wakeups.matters(777, &ours),
            "someone else's write was ignored"
        );
    }

    #[test]
    fn what_events_touched_is_recorded_for_the_repair() {
        let wakeups = Wakeups::default();
        wakeups.set_interest(Interest {
            own_ports: vec![4242],
            ..interest()
        });
        let ours = route([198, 18, 128, 0], 17, 240, 2);
        assert!(!wakeups.matters(4242, &ours));
        assert!(!wakeups.matters(0, &route([10, 0, 0, 0], 8, 3, 9)));
        assert_eq!(wakeups.take_touched(), Touched::default());
        // Someone else's route events: their destinations, nothing else.
        assert!(wakeups.matters(0, &ours));
        assert!(wakeups.matters(777, &route([198, 18, 192, 0], 18, 240, 2)));
        let touched = wakeups.take_touched();
        assert_eq!(
            touched.route_dsts,
            HashSet::from([
                "198.18.128.0/17".parse().expect("net"),
                "198.18.192.0/18".parse().expect("net"),
            ])
        );
        assert!(!touched.other);
        // Taken: nothing is left to take.
        assert_eq!(wakeups.take_touched(), Touched::default());
        // A link event touches something other than routes.
        assert!(wakeups.matters(0, &link("eth0", 2)));
        assert!(wakeups.take_touched().other);
    }

    #[tokio::test]
    async fn an_overrun_wakes_a_reconcile_that_reads_everything() {
        let wakeups = Wakeups::default();
        wakeups.set_interest(interest());
        // An event that does not matter wakes nothing.
        wakeups.hear(&NetlinkMessage::from(route([10, 1, 0, 0], 16, 4, 9)));
        let idle =
            tokio::time::timeout(std::time::Duration::from_millis(50), wakeups.woken()).await;
        assert!(idle.is_err(), "an event that does not matter woke");
        // The kernel dropped events: any may have mattered.
        let mut overrun = NetlinkMessage::new(
            rtnetlink::packet_core::NetlinkHeader::default(),
            NetlinkPayload::<RouteNetlinkMessage>::Overrun(Vec::new()),
        );
        overrun.finalize();
        wakeups.hear(&overrun);
        tokio::time::timeout(std::time::Duration::from_secs(1), wakeups.woken())
            .await
            .expect("an overrun woke nothing");
        assert!(
            wakeups.take_touched().other,
            "an overrun asked for no listing"
        );
        assert_eq!(wakeups.event_overruns(), 1);
    }

    #[tokio::test]
    async fn a_burst_of_wakeups_is_one_reconcile() {
        let wakeups = Wakeups::default();
        for _ in 0..10_000 {
            wakeups.wake();
        }
        tokio::time::timeout(std::time::Duration::from_secs(1), wakeups.woken())
            .await
            .expect("woken");
        let again =
            tokio::time::timeout(std::time::Duration::from_millis(50), wakeups.woken()).await;
        assert!(again.is_err(), "one burst woke the reconcile twice");
        wakeups.wake();
        wakeups.absorb();
        let absorbed =
            tokio::time::timeout(std::time::Duration::from_millis(50), wakeups.woken()).await;
        assert!(absorbed.is_err(), "an absorbed wake-up still woke");
    }
}
