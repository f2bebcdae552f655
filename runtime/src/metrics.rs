//! The Prometheus endpoint: `GET /metrics` over HTTP/1.1 (hyper), the
//! registry encoded in the OpenMetrics text format (prometheus-client) for
//! a scraper that asks for it (Prometheus does), else in Prometheus' own
//! text format 0.0.4 (curl, `promtool check metrics`). Anything else is a
//! 404. Opt-in, plain HTTP: bind it to a trusted address.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use std::{convert::Infallible, net::IpAddr, sync::Arc, time::Duration};
use tokio::{net::TcpListener, time::Instant};
use tokio_util::sync::CancellationToken;

/// A scrape that takes longer than this (slow client) is dropped.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that has not sent its request headers by then is dropped:
/// idle connections cannot pile up.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections served at once (a scraper needs one, a local flood must not
/// take the agent's descriptors); and from one source (an IPv4 address or
/// an IPv6 /64), so that a loop on one machine cannot take them all. Past
/// either, a connection goes: of the same source, or (all full) one that
/// never sent a request, else one of the sources holding the most; of
/// those, one that never sent a request first, then the longest idle.
pub const MAX_CONNECTIONS: usize = 32;
pub const MAX_CONNECTIONS_PER_SOURCE: usize = 8;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The connections being served, each with its source and when it last
/// asked for something.
#[derive(Clone, Default)]
struct Connections {
    inner: Arc<std::sync::Mutex<(u64, Vec<Connection>)>>,
}

struct Connection {
    id: u64,
    source: IpAddr,
    /// It has sent a request (a scraper); a connection that never has goes
    /// first.
    requested: bool,
    last_active: Instant,
    close: CancellationToken,
}

impl Connection {
    /// The order in which connections go: never asked for anything first,
    /// then the longest idle.
    fn idleness(&self) -> (bool, Instant, u64) {
        (self.requested, self.last_active, self.id)
    }
}

/// One connection's place; dropping it frees it.
struct Place {
    connections: Connections,
    id: u64,
    close: CancellationToken,
}

impl Connections {
    /// Makes room for a connection from `source` (closing the idlest one
    /// past a bound) and takes it.
    fn admit(&self, source: IpAddr) -> Place {
        let source = crate::source_key(source);
        let mut guard = crate::lock(&self.inner);
        let (next_id, open) = &mut *guard;
        let from = |source: IpAddr| open.iter().filter(|c| c.source == source).count();
        let idlest = |pick: &dyn Fn(&Connection) -> bool| {
            open.iter()
                .enumerate()
                .filter(|(_, c)| pick(c))
                .min_by_key(|(_, c)| c.idleness())
                .map(|(i, _)| i)
        };
        let victim = if from(source) >= MAX_CONNECTIONS_PER_SOURCE {
            idlest(&|c| c.source == source)
        } else if open.len() >= MAX_CONNECTIONS {
            // One that never asked for anything, else the idlest of the
            // sources holding the most.
            let most = open.iter().map(|c| from(c.source)).max().unwrap_or(0);
            idlest(&|c| !c.requested).or_else(|| idlest(&|c| from(c.source) == most))
        } else {
            None
        };
        if let Some(victim) = victim {
            open.swap_remove(victim).close.cancel();
        }
        let id = *next_id;
        *next_id += 1;
        let close = CancellationToken::new();
        open.push(Connection {
            id,
            source,
            requested: false,
            last_active: Instant::now(),
            close: close.clone(),
        });
        Place {
            connections: self.clone(),
            id,
            close,
        }
    }

    fn active(&self, id: u64) {
        if let Some(c) = crate::lock(&self.inner).1.iter_mut().find(|c| c.id == id) {
            c.requested = true;
            c.last_active = Instant::now();
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        crate::lock(&self.connections.inner)
            .1
            .retain(|c| c.id != self.id);
    }
}

/// Serves `registry` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>, shutdown: CancellationToken) {
    let connections = Connections::default();
    loop {
        let (stream, remote) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::debug!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let place = connections.admit(remote.ip());
        let registry = registry.clone();
        let activity = (connections.clone(), place.id);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let registry = registry.clone();
                activity.0.active(activity.1);
                async move { Ok::<_, Infallible>(answer(&request, &registry)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            // Closed to make room, timed out, or done.
            tokio::select! {
                _ = place.close.cancelled() => {}
                _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection) => {}
            }
            drop(place);
        });
    }
}

fn answer(request: &Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    if request.method() != Method::GET || request.uri().path() != "/metrics" {
        return respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into());
    }
    let openmetrics = request
        .headers()
        .get_all(hyper::header::ACCEPT)
        .iter()
        .any(|accept| {
            String::from_utf8_lossy(accept.as_bytes()).contains("application/openmetrics-text")
        });
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, registry) {
        Ok(()) if openmetrics => respond(StatusCode::OK, OPENMETRICS, text),
        Ok(()) => respond(StatusCode::OK, PROMETHEUS_TEXT, prometheus_text(&text)),
        Err(e) => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("encoding metrics failed: {e}\n"),
        ),
    }
}

/// OpenMetrics text as Prometheus' text format 0.0.4: a counter family's
/// HELP and TYPE name its `_total` sample (OpenMetrics names the family
/// without it), and there is no `# EOF` or `# UNIT`.
fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|tag| Some((tag, line.strip_prefix(tag)?)));
        match meta {
            Some((tag, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                text.push_str(&format!("{tag}{name}{suffix} {tail}"));
            }
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

/// Writing an agent's state as metrics at scrape time (a
/// [`prometheus_client::collector::Collector`] reads the agent's status and
/// calls these), so the numbers are always the status's own.
pub mod encode {
    use prometheus_client::{
        encoding::{DescriptorEncoder, EncodeMetric},
        metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    };
    use std::fmt;

    /// Latency buckets (seconds) of the agents' histograms.
    pub const LATENCY_BUCKETS: [f64; 9] = [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

    /// Label pairs of one sample.
    pub type Labels = Vec<(&'static str, String)>;

    pub fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> fmt::Result {
        let metric = ConstGauge::new(value);
        metric.encode(e.encode_descriptor(name, help, None, metric.metric_type())?)
    }

    /// A counter; the exposition names it `<name>_total`.
    pub fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
        let metric = ConstCounter::new(value);
        metric.encode(e.encode_descriptor(name, help, None, metric.metric_type())?)
    }

    pub fn labelled_gauges(
        e: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        samples: &[(Labels, f64)],
    ) -> fmt::Result {
        let mut family = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, value) in samples {
            ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
        }
        Ok(())
    }

    pub fn labelled_counters(
        e: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        samples: &[(Labels, u64)],
    ) -> fmt::Result {
        let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, value) in samples {
            ConstCounter::new(*value).encode(family.encode_family(labels)?)?;
        }
        Ok(())
    }

    pub fn metric(
        e: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        metric: &impl EncodeMetric,
    ) -> fmt::Result {
        metric.encode(e.encode_descriptor(name, help, None, metric.metric_type())?)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters_are_named_by_their_samples_in_the_prometheus_text_format() {
        let openmetrics = "# HELP a_repairs Repairs.\n# TYPE a_repairs counter\na_repairs_total 3\n\
            # HELP a_up Up.\n# TYPE a_up gauge\na_up 1\n# UNIT a_up seconds\n# EOF\n";
        assert_eq!(
            prometheus_text(openmetrics),
            "# HELP a_repairs_total Repairs.\n# TYPE a_repairs_total counter\na_repairs_total 3\n\
             # HELP a_up Up.\n# TYPE a_up gauge\na_up 1\n"
        );
    }

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A local flood of idle connections: at most [`MAX_CONNECTIONS`] are
    /// held, and they are dropped once idle past the header timeout, after
    /// which a scrape is answered.
    #[tokio::test]
    async fn a_flood_of_idle_connections_is_bounded_and_does_not_stop_scrapes() {
        let (addr, shutdown) = serving().await;
        let mut idle = Vec::new();
        for _ in 0..200 {
            idle.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Closed by the server: a read ends at once.
        let mut held = 0;
        for stream in &mut idle {
            let mut byte = [0u8; 1];
            let read =
                tokio::time::timeout(Duration::from_millis(20), stream.read(&mut byte)).await;
            if read.is_err() {
                held += 1;
            }
        }
        assert!(held <= MAX_CONNECTIONS, "{held} idle connections held");
        tokio::time::sleep(HEADER_TIMEOUT + Duration::from_millis(500)).await;
        let mut scrape = tokio::net::TcpStream::connect(addr).await.expect("connect");
        scrape
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("request");
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), scrape.read_to_string(&mut answer))
            .await
            .expect("answered in time")
            .expect("read");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        shutdown.cancel();
    }

    /// The endpoint serving an empty registry on a loopback port.
    async fn serving() -> (std::net::SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            Arc::new(Registry::default()),
            shutdown.clone(),
        ));
        (addr, shutdown)
    }

    /// One scrape on a kept-alive connection: the answer's first bytes.
    async fn scrape(stream: &mut tokio::net::TcpStream) -> String {
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("request");
        let mut answer = vec![0u8; 64 * 1024];
        let n = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut answer))
            .await
            .expect("answered in time")
            .expect("read");
        String::from_utf8_lossy(&answer[..n]).into_owned()
    }

    /// A scraper on the loop's own address (the shipped 127.0.0.1 bind with
    /// a local Prometheus) keeps its connection: the loop's connections,
    /// which never ask for anything, go first.
    #[tokio::test]
    async fn a_scraper_sharing_the_loops_address_keeps_its_connection() {
        let (addr, shutdown) = serving().await;
        let mut scraper = tokio::net::TcpStream::connect(addr).await.expect("connect");
        assert!(scrape(&mut scraper).await.starts_with("HTTP/1.1 200"));
        let mut idle = Vec::new();
        for _ in 0..100 {
            idle.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The same connection, asked again (keep-alive).
        let again = scrape(&mut scraper).await;
        assert!(again.starts_with("HTTP/1.1 200"), "{again:?}");
        shutdown.cancel();
    }

    /// A local loop holding idle connections from one address takes at
    /// most its share: a scraper from another address is answered at once,
    /// while the loop goes on.
    #[tokio::test]
    async fn a_loop_from_one_source_never_starves_a_scraper_from_another() {
        let (addr, shutdown) = serving().await;
        let from = |source: &'static str| async move {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket
                .bind(format!("{source}:0").parse().expect("addr"))
                .expect("bind");
            socket.connect(addr).await.expect("connect")
        };
        let mut idle = Vec::new();
        for _ in 0..200 {
            idle.push(from("127.0.0.1").await);
        }
        let mut scrape = from("127.0.0.2").await;
        scrape
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("request");
        // The loop goes on while the scrape is answered.
        for _ in 0..50 {
            idle.push(from("127.0.0.1").await);
        }
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(1), scrape.read_to_string(&mut answer))
            .await
            .expect("answered at once, not after the loop's connections time out")
            .expect("read");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let mut held = 0;
        for stream in &mut idle {
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_millis(5), stream.read(&mut byte)).await;
            if read.is_err() {
                held += 1;
            }
        }
        assert!(
            held <= MAX_CONNECTIONS_PER_SOURCE,
            "{held} of the loop's connections held"
        );
        shutdown.cancel();
    }
}
