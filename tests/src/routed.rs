//! Two routers between the testbed's underlay and a far remote node, with a
//! link narrower than the contract's MTU in the middle: what path MTU
//! discovery, traceroute and fragments need to be tested against.
//!
//! ```text
//!  ns dpu ── p0 ─── eth0 198.18.0.20   ns underlay (router 1, hop 2)
//!                   nar0 198.18.2.1/30 ─┐ MTU `narrow_mtu` on both ends
//!                   nar0 198.18.2.2/30 ─┘ ns r2 (router 2, hop 3)
//!                   far0 198.18.3.1/30 ─── eth0 198.18.3.2/30 ns far (MTU 1500)
//!                                           lo 198.18.201.1, fd00:10:244:201::1 (pod)
//! ```
//!
//! The far node's own link is 1500 bytes and it advertises the MSS that
//! gives (1460), so the host learns of the narrow hop only from the routers' ICMP
//! errors. Its IPv4 route knows the narrow MTU (not its MSS): Linux sends
//! the fragments of a large UDP datagram without DF, and router 2 would cut
//! 1500-byte fragments into pieces smaller than Open vSwitch's conntrack
//! takes (see docs/design.md, "ICMP errors, path MTU and fragments");
//! [`RoutedUnderlay::forget_narrow_mtu`] brings that case back. The gateway router
//! already routes the cluster CIDRs via router 1 (the testbed's remote
//! node), which routes the far pod's /24 (and /64) onwards.

use crate::{e2e::Testbed, netns::NetNs};
use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

/// The far pod, behind the narrow hop (inside the testbed's cluster CIDRs).
pub const FAR_POD: &str = "198.18.201.1";
pub const FAR_POD6: &str = "fd00:10:244:201::1";
/// The routers' addresses on the path from the DPU: hop 2 (router 1's
/// side towards the DPU) and hop 3 (router 2's side of the narrow link).
pub const HOP2: &str = "198.18.0.20";
pub const HOP2_6: &str = "2001:db8::20";
pub const HOP3: &str = "198.18.2.2";
pub const HOP3_6: &str = "2001:db8:2::2";
/// The far pod's TCP sink (reads to the end, answers with the byte count)
/// and UDP echo.
pub const SINK_PORT: u16 = 7778;
pub const ECHO_PORT: u16 = 7779;

pub struct RoutedUnderlay {
    pub r2: NetNs,
    pub far: NetNs,
    stop: Arc<AtomicBool>,
}

impl RoutedUnderlay {
    /// Makes the testbed's underlay namespace a router and adds router 2
    /// and the far node behind it, with `narrow_mtu` between the routers.
    pub fn attach(bed: &Testbed, narrow_mtu: u32) -> anyhow::Result<Self> {
        let r2 = NetNs::new("r2")?;
        let far = NetNs::new("far")?;
        bed.underlay.sh(&format!(
            "set -e
            sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
            ip link add nar0 mtu {narrow_mtu} type veth peer name nar0 netns {r2}
            ip addr add 198.18.2.1/30 dev nar0
            ip -6 addr add 2001:db8:2::1/64 dev nar0 nodad
            ip link set nar0 up
            ethtool -K nar0 tx off >/dev/null
            ip route add 198.18.201.0/24 via {HOP3}
            ip -6 route add fd00:10:244:201::/64 via {HOP3_6}",
            r2 = r2.name
        ))?;
        r2.sh(&format!(
            "set -e
            sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
            ip link set nar0 mtu {narrow_mtu}
            ip addr add {HOP3}/30 dev nar0
            ip -6 addr add {HOP3_6}/64 dev nar0 nodad
            ip link add far0 type veth peer name eth0 netns {far}
            ip addr add 198.18.3.1/30 dev far0
            ip -6 addr add 2001:db8:3::1/64 dev far0 nodad
            for l in nar0 far0; do ip link set $l up; ethtool -K $l tx off >/dev/null; done
            ip route add default via 198.18.2.1
            ip -6 route add default via 2001:db8:2::1
            ip route add 198.18.201.0/24 via 198.18.3.2
            ip -6 route add fd00:10:244:201::/64 via 2001:db8:3::2",
            far = far.name
        ))?;
        far.sh(&format!(
            "set -e
            ip addr add 198.18.3.2/30 dev eth0
            ip -6 addr add 2001:db8:3::2/64 dev eth0 nodad
            ip link set eth0 up
            ethtool -K eth0 tx off >/dev/null
            ip addr add {FAR_POD}/32 dev lo
            ip -6 addr add {FAR_POD6}/128 dev lo nodad
            ip route add default via 198.18.3.1 mtu {narrow_mtu} advmss 1460
            ip -6 route add default via 2001:db8:3::1"
        ))?;
        let routed = RoutedUnderlay {
            r2,
            far,
            stop: Arc::new(AtomicBool::new(false)),
        };
        routed.start_servers()?;
        Ok(routed)
    }

    fn start_servers(&self) -> anyhow::Result<()> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        // Detached: they end with the stop flag (checked every 100 ms).
        let (stop, ready) = (self.stop.clone(), ready_tx.clone());
        drop(
            self.far
                .spawn(move || async move { tcp_sink(&stop, &ready) }),
        );
        // One echo per pod address, so that replies leave from it (an
        // unbound socket would answer from the far node's own address).
        for pod in [FAR_POD, FAR_POD6] {
            let (stop, ready) = (self.stop.clone(), ready_tx.clone());
            let address = SocketAddr::new(pod.parse()?, ECHO_PORT);
            drop(
                self.far
                    .spawn(move || async move { udp_echo(address, &stop, &ready) }),
            );
        }
        for _ in 0..3 {
            ready_rx
                .recv_timeout(Duration::from_secs(5))
                .map_err(|_| anyhow::anyhow!("the far pod's servers did not start"))?;
        }
        Ok(())
    }
}

impl RoutedUnderlay {
    /// The far node's IPv4 route without the narrow MTU: its fragments are
    /// cut again by router 2.
    pub fn forget_narrow_mtu(&self) -> anyhow::Result<()> {
        self.far
            .sh("ip route replace default via 198.18.3.1 && ip route flush cache")?;
        Ok(())
    }
}

impl Drop for RoutedUnderlay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn tcp_sink(stop: &AtomicBool, ready: &std::sync::mpsc::Sender<()>) -> anyhow::Result<()> {
    // Both families (IPv4 peers arrive as mapped addresses).
    let listener = TcpListener::bind(("::", SINK_PORT))?;
    listener.set_nonblocking(true)?;
    let _ = ready.send(());
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            // A thread each: a stuck upload never holds up the next one.
            Ok((mut stream, _)) => drop(std::thread::spawn(move || {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                let mut total = 0usize;
                let mut buf = vec![0u8; 65536];
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    total += n;
                }
                let _ = stream.write_all(total.to_string().as_bytes());
            })),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    Ok(())
}

fn udp_echo(
    address: SocketAddr,
    stop: &AtomicBool,
    ready: &std::sync::mpsc::Sender<()>,
) -> anyhow::Result<()> {
    let socket = UdpSocket::bind(address)?;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let _ = ready.send(());
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, peer)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], peer);
        }
    }
    Ok(())
}

/// From the host: sends `bytes` over TCP to the far pod's sink and returns
/// how many it counted and how long the upload took (each write and the
/// answer within `deadline`).
pub fn tcp_upload(
    bed: &Testbed,
    dst: &str,
    bytes: usize,
    deadline: Duration,
) -> anyhow::Result<(usize, Duration)> {
    let target = SocketAddr::new(dst.parse()?, SINK_PORT);
    bed.host.run(move || async move {
        let started = Instant::now();
        let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
        stream.set_write_timeout(Some(deadline))?;
        stream.set_read_timeout(Some(deadline))?;
        stream.write_all(&vec![0x5a; bytes])?;
        stream.shutdown(Shutdown::Write)?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        let counted = reply
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("the sink answered {reply:?}"))?;
        Ok((counted, started.elapsed()))
    })
}

/// From the host: one UDP datagram of `size` bytes to the far pod's echo,
/// resent each second until the same bytes come back, at most `tries`
/// times. Returns the try that got its echo (1 = the first), or None.
pub fn udp_echo_from_host(
    bed: &Testbed,
    dst: &str,
    size: usize,
    tries: u32,
) -> anyhow::Result<Option<u32>> {
    let target = SocketAddr::new(dst.parse()?, ECHO_PORT);
    bed.host.run(move || async move {
        let bind: SocketAddr = if target.is_ipv4() {
            "0.0.0.0:0".parse()?
        } else {
            "[::]:0".parse()?
        };
        let socket = UdpSocket::bind(bind)?;
        socket.set_read_timeout(Some(Duration::from_secs(1)))?;
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let mut buf = vec![0u8; size + 1];
        for attempt in 1..=tries {
            // A send may fail with EMSGSIZE right after the path MTU
            // dropped; the next try fragments to the new size.
            let _ = socket.send_to(&payload, target);
            let deadline = Instant::now() + Duration::from_secs(1);
            while Instant::now() < deadline {
                match socket.recv_from(&mut buf) {
                    Ok((n, _)) if buf[..n] == payload[..] => return Ok(Some(attempt)),
                    Ok(_) => continue,
                    Err(_) => break,
                }
            }
        }
        Ok(None)
    })
}
