//! A small Prometheus endpoint: `GET /metrics` over plain HTTP/1.1 on an
//! opt-in listen address, and the text exposition format. Enough for a
//! scraper; nothing else is served.

use std::{fmt::Write as _, sync::Arc, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tokio_util::sync::CancellationToken;

/// Renders the current metrics as Prometheus text.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Serves `GET /metrics` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, render: Render, shutdown: CancellationToken) {
    loop {
        let (mut stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let render = render.clone();
        tokio::spawn(async move {
            let mut request = vec![0u8; 4096];
            let read =
                tokio::time::timeout(Duration::from_secs(5), stream.read(&mut request)).await;
            let Ok(Ok(n)) = read else { return };
            let line = String::from_utf8_lossy(&request[..n]);
            let response = if line.starts_with("GET /metrics ") || line.starts_with("GET /metrics?")
            {
                let body = render();
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string()
            };
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Builds the exposition text, one metric family at a time.
#[derive(Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) -> &mut Self {
        self.family(name, help, "gauge");
        let _ = writeln!(self.text, "{name} {value}");
        self
    }

    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> &mut Self {
        self.family(name, help, "counter");
        let _ = writeln!(self.text, "{name} {value}");
        self
    }

    /// One family with a sample per label value.
    pub fn labelled(
        &mut self,
        name: &str,
        help: &str,
        kind: &str,
        label: &str,
        samples: &[(String, f64)],
    ) -> &mut Self {
        self.family(name, help, kind);
        for (value, sample) in samples {
            let _ = writeln!(
                self.text,
                "{name}{{{label}=\"{}\"}} {sample}",
                escape(value)
            );
        }
        self
    }

    pub fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) -> &mut Self {
        self.family(name, help, "histogram");
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(histogram.counts) {
            cumulative += count;
            let _ = writeln!(self.text, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(
            self.text,
            "{name}_bucket{{le=\"+Inf\"}} {}",
            histogram.count
        );
        let _ = writeln!(self.text, "{name}_sum {}", histogram.sum);
        let _ = writeln!(self.text, "{name}_count {}", histogram.count);
        self
    }

    fn family(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.text)
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Upper bounds (seconds) of the latency histogram buckets.
pub const BUCKETS: [f64; 9] = [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// A latency histogram with [`BUCKETS`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Histogram {
    /// Per-bucket (not cumulative) counts.
    pub counts: [u64; BUCKETS.len()],
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        if let Some(i) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_is_prometheus_text() {
        let mut h = Histogram::default();
        h.observe(0.002);
        h.observe(7.0);
        let text = Exposition::default()
            .counter("x_total", "X.", 3)
            .labelled("f", "F.", "counter", "flow", &[("a\"b".into(), 2.0)])
            .histogram("lat_seconds", "Latency.", &h)
            .finish();
        assert!(text.contains("# TYPE x_total counter\nx_total 3\n"));
        assert!(text.contains("f{flow=\"a\\\"b\"} 2\n"));
        assert!(text.contains("lat_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("lat_seconds_bucket{le=\"5\"} 1\n"));
        assert!(text.contains("lat_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("lat_seconds_count 2\n"));
    }
}
