//! Route writes in batches: many RTM_NEWROUTE requests per `sendmsg`.
//!
//! Through the rtnetlink handle every route is one request, one system call,
//! one acknowledgement and one round of task wake-ups: 14.6 ms for the 2,048
//! routes of 1,024 CIDRs on the bench machine. Here only the last request of
//! each send asks for an acknowledgement (the kernel answers a refused
//! request whether asked or not, and handles a send's requests in order), so
//! the replies are the refusals and one acknowledgement per send: about
//! 4 ms for the same routes. Replies cost more than the kernel's inserts:
//! reading one per route took 9-10 ms.
//!
//! A caller that writes a few routes can ask for echoes (NLM_F_ECHO): each
//! route as the kernel inserted it, in the form a listing shows it, read
//! back without listing every route again.

use rtnetlink::{
    packet_core::{
        NLM_F_ACK, NLM_F_CREATE, NLM_F_ECHO, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
        NetlinkHeader, NetlinkMessage, NetlinkPayload,
    },
    packet_route::{RouteNetlinkMessage, route::RouteMessage},
    sys::{AsyncSocket, AsyncSocketExt, TokioSocket, protocols::NETLINK_ROUTE},
};
use std::{collections::HashMap, io, sync::Arc, time::Duration};
use tokio::sync::Mutex;

/// Requests per `sendmsg` (about 80 bytes each): even if the kernel refused
/// every one, the refusals (each quoting its request) fit the socket's
/// default receive buffer.
const REQUESTS_PER_SEND: usize = 512;

/// How long the kernel may take to answer one send of requests.
const REPLY_DEADLINE: Duration = Duration::from_secs(5);

/// One route to write: added (refused if its key exists) or replacing the
/// route with its key.
pub struct RouteWrite {
    pub message: RouteMessage,
    pub replace: bool,
}

/// The kernel's answer to one write: the route as it was inserted (None if
/// no echo was asked for or none came), or the kernel's refusal.
pub type WriteResult = Result<Option<RouteMessage>, rtnetlink::Error>;

/// A netlink socket of its own for batches, so that the replies to a batch
/// are all it reads.
#[derive(Clone)]
pub struct RouteBatches {
    socket: Arc<Mutex<Batcher>>,
    port: u32,
}

struct Batcher {
    socket: TokioSocket,
    /// Sequence numbers keep growing across batches, so that a late reply
    /// to an abandoned batch is never taken for a reply to this one.
    next_sequence: u32,
}

impl RouteBatches {
    pub fn open() -> io::Result<Self> {
        let mut socket = TokioSocket::new(NETLINK_ROUTE)?;
        let address = socket.socket_mut().bind_auto()?;
        Ok(RouteBatches {
            socket: Arc::new(Mutex::new(Batcher {
                socket,
                next_sequence: 1,
            })),
            port: address.port_number(),
        })
    }

    /// The socket's netlink port: the kernel names it as the origin of the
    /// events these writes cause.
    pub fn port(&self) -> u32 {
        self.port
    }

    /// Writes every route, `REQUESTS_PER_SEND` to a system call, and returns
    /// the kernel's answer to each, in order; with `echo`, each written
    /// route as the kernel holds it. Err only when the socket fails or the
    /// kernel does not answer in time; then routes may have been written
    /// without their answers read, and only a listing says which.
    pub async fn write(&self, writes: &[RouteWrite], echo: bool) -> io::Result<Vec<WriteResult>> {
        self.socket.lock().await.write(writes, echo).await
    }
}

impl Batcher {
    async fn write(&mut self, writes: &[RouteWrite], echo: bool) -> io::Result<Vec<WriteResult>> {
        let mut results = Vec::with_capacity(writes.len());
        for chunk in writes.chunks(REQUESTS_PER_SEND) {
            let first = self.next_sequence;
            self.next_sequence = first.wrapping_add(chunk.len() as u32);
            let mut buffer = Vec::new();
            for (offset, write) in chunk.iter().enumerate() {
                let mut flags = if echo { NLM_F_ECHO } else { 0 };
                if offset + 1 == chunk.len() {
                    flags |= NLM_F_ACK;
                }
                append_request(&mut buffer, write, first.wrapping_add(offset as u32), flags);
            }
            let sent = self.socket.send(&buffer).await?;
            if sent != buffer.len() {
                return Err(io::Error::other(format!(
                    "the kernel took {sent} of {} bytes of route requests",
                    buffer.len()
                )));
            }
            results.extend(self.answers(first, chunk.len()).await?);
        }
        Ok(results)
    }

    /// Reads the answers to the `count` requests from `first` on, up to the
    /// last one's acknowledgement: before it come every refusal and echo.
    async fn answers(&mut self, first: u32, count: usize) -> io::Result<Vec<WriteResult>> {
        let mut echoed: HashMap<usize, RouteMessage> = HashMap::new();
        let mut refused: HashMap<usize, rtnetlink::Error> = HashMap::new();
        let mut answered = 0;
        let mut complete = false;
        let mut buffer = Vec::with_capacity(64 * 1024);
        let deadline = tokio::time::Instant::now() + REPLY_DEADLINE;
        while !complete {
            buffer.clear();
            let received = tokio::time::timeout_at(deadline, self.socket.recv(&mut buffer)).await;
            received.map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the kernel answered {answered} of {count} route writes within {REPLY_DEADLINE:?}"
                    ),
                )
            })??;
            let mut offset = 0;
            while offset < buffer.len() {
                let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buffer[offset..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let length = message.header.length as usize;
                if length == 0 {
                    break;
                }
                offset += length.next_multiple_of(4);
                let index = message.header.sequence_number.wrapping_sub(first) as usize;
                if index >= count {
                    continue; // a late answer to an abandoned batch
                }
                match message.payload {
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(route)) => {
                        echoed.insert(index, route);
                    }
                    NetlinkPayload::Error(answer) => {
                        answered = index + 1;
                        if answer.code.is_some() {
                            refused.insert(index, rtnetlink::Error::NetlinkError(answer));
                        }
                        // The last request always answers: with its refusal
                        // or its acknowledgement.
                        complete = index + 1 == count;
                    }
                    _ => {}
                }
            }
        }
        Ok((0..count)
            .map(|index| match refused.remove(&index) {
                Some(refusal) => Err(refusal),
                None => Ok(echoed.remove(&index)),
            })
            .collect())
    }
}

fn append_request(buffer: &mut Vec<u8>, write: &RouteWrite, sequence: u32, flags: u16) {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST
        | flags
        | NLM_F_CREATE
        | if write.replace {
            NLM_F_REPLACE
        } else {
            NLM_F_EXCL
        };
    header.sequence_number = sequence;
    let mut message = NetlinkMessage::new(
        header,
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(write.message.clone())),
    );
    message.finalize();
    let start = buffer.len();
    buffer.resize(start + message.buffer_len(), 0);
    message.serialize(&mut buffer[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::RouteMessageBuilder;
    use std::{net::Ipv4Addr, process::Command};

    fn ip(args: &str) {
        let status = Command::new("ip")
            .args(args.split_whitespace())
            .status()
            .expect("run ip");
        assert!(status.success(), "ip {args}");
    }

    fn route(dst: [u8; 4], via: [u8; 4], oif: u32) -> RouteWrite {
        let message = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::from(dst), 25)
            .gateway(Ipv4Addr::from(via))
            .output_interface(oif)
            .build();
        RouteWrite {
            message,
            replace: false,
        }
    }

    /// Each answer belongs to its own write, though only each send's last
    /// request is acknowledged: a refusal in the middle of a batch is that
    /// write's, the writes around it are in, echoed when asked.
    #[test]
    #[ignore = "privileged: needs root and a network namespace; run as root with --include-ignored (CI does)"]
    fn each_write_gets_its_own_answer() {
        // A thread of its own in a network namespace of its own: the
        // namespace goes with the thread.
        std::thread::spawn(|| {
            // SAFETY: unshare affects only this thread.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
            ip("link add d0 type veth peer name d1");
            ip("link set d0 up");
            ip("link set d1 up");
            ip("addr add 169.254.0.2/17 dev d0");
            let oif = link_index("d0");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let batches = RouteBatches::open().expect("open");
                let gateway = [169, 254, 0, 4];
                for echo in [false, true] {
                    let third = if echo { 2 } else { 1 };
                    let writes = [
                        route([198, 18, third, 0], gateway, oif),
                        // Not on any link: refused.
                        route([198, 18, third, 128], [10, 9, 9, 9], oif),
                        route([198, 19, third, 0], gateway, oif),
                    ];
                    let answers = batches.write(&writes, echo).await.expect("batch");
                    assert_eq!(answers.len(), 3);
                    assert!(answers[1].is_err(), "{:?}", answers[1]);
                    for answer in [&answers[0], &answers[2]] {
                        let echoed = answer.as_ref().expect("written");
                        assert_eq!(echoed.is_some(), echo);
                    }
                    // The same again: each added route is refused as there.
                    let again = batches.write(&writes, false).await.expect("batch");
                    assert!(again.iter().all(Result::is_err));
                }
            });
            let listed = Command::new("ip")
                .args(["-4", "route", "show", "dev", "d0"])
                .output()
                .expect("ip route");
            let listed = String::from_utf8_lossy(&listed.stdout);
            for dst in [
                "198.18.1.0/25",
                "198.19.1.0/25",
                "198.18.2.0/25",
                "198.19.2.0/25",
            ] {
                assert!(listed.contains(dst), "{dst} missing from:\n{listed}");
            }
            assert!(!listed.contains(".128/25"), "{listed}");
        })
        .join()
        .expect("test thread");
    }

    fn link_index(name: &str) -> u32 {
        let name = std::ffi::CString::new(name).expect("name");
        // SAFETY: a valid C string.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert_ne!(index, 0, "no link {name:?}");
        index
    }
}
