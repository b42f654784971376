//! `GET /metrics`: the node's counters in the Prometheus text exposition format 0.0.4,
//! through a small encoder of our own (the format is a few lines of text; a crate would
//! bring a registry we do not need). Owns the metric names and their help texts, and
//! reads: [`crate::metrics::NodeMetrics`] (the core's and the binding writer's counters),
//! [`crate::metrics::RELAYS`] (relay totals) and the store (extensions, registrations).
//! Must not change anything it reads.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::auth::AdminOnly;
use super::error::ApiError;
use super::AppState;
use crate::metrics::{HistogramSnapshot, RELAYS};
use crate::store::now_unix;
use std::sync::atomic::Ordering::Relaxed;

/// The content type Prometheus asks for and expects back.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's kind (`# TYPE`).
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Builds an exposition: one `# HELP` and `# TYPE` per family, then its samples.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    fn header(&mut self, name: &str, help: &str, kind: Kind) {
        // HELP escapes backslash and newline (0.0.4); a `fmt::Write` into a String
        // cannot fail.
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.as_str());
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.text, "{k}=\"{v}\"");
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", number(value));
    }

    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.header(name, help, Kind::Counter);
        self.sample(name, &[], value as f64);
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.header(name, help, Kind::Gauge);
        self.sample(name, &[], value);
    }

    /// A gauge of one sample with labels (an "info" metric, value 1).
    pub fn labelled_gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.header(name, help, Kind::Gauge);
        self.sample(name, labels, value);
    }

    pub fn histogram(&mut self, name: &str, help: &str, h: &HistogramSnapshot) {
        self.header(name, help, Kind::Histogram);
        let bucket = format!("{name}_bucket");
        for (bound, count) in &h.cumulative {
            let le = number(*bound);
            self.sample(&bucket, &[("le", &le)], *count as f64);
        }
        self.sample(&format!("{name}_sum"), &[], h.sum_secs);
        self.sample(&format!("{name}_count"), &[], h.count as f64);
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// A sample value as the format spells it (Go's float syntax: `+Inf`, `NaN`).
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        v.to_string()
    }
}

/// `GET /metrics` (admin role, session or token, like the rest of the admin API).
pub async fn metrics(
    State(state): State<AppState>,
    _: AdminOnly,
) -> Result<impl IntoResponse, ApiError> {
    let s = &state.inner;
    let m = &s.node.metrics;
    let now = now_unix();
    // The same count as `/api/v1/status`: the store's bindings that have not expired
    // (the whole cluster's, since bindings are shared).
    let registrations = s.store.count_live_bindings(now).await?;
    let extensions = s.store.count_extensions().await?;

    let mut out = Exposition::default();
    out.labelled_gauge(
        "ringfort_node_info",
        "This node: its version and id (always 1).",
        &[("version", env!("CARGO_PKG_VERSION")), ("node", &s.node.id)],
        1.0,
    );
    out.gauge(
        "ringfort_uptime_seconds",
        "Seconds since the node started.",
        s.node.started.elapsed().as_secs_f64(),
    );
    out.gauge(
        "ringfort_registrations",
        "Registered contacts (bindings) not expired, in the store (all nodes).",
        registrations as f64,
    );
    out.gauge(
        "ringfort_extensions",
        "Extensions configured.",
        extensions as f64,
    );
    out.gauge(
        "ringfort_calls_active",
        "Calls this node runs now (B2BUA calls and app calls).",
        m.calls_up.load(Relaxed) as f64,
    );
    out.counter(
        "ringfort_calls_started_total",
        "Calls this node started (B2BUA and app calls); calls per second is rate() of it.",
        m.calls_started.load(Relaxed),
    );
    out.gauge(
        "ringfort_sip_transactions",
        "SIP transactions in progress in this node's transaction layer.",
        m.transactions.load(Relaxed) as f64,
    );
    out.gauge(
        "ringfort_rtp_relays_active",
        "RTP relays running now (one per B2BUA call with media).",
        RELAYS.running.load(Relaxed) as f64,
    );
    out.counter(
        "ringfort_rtp_relayed_packets_total",
        "RTP packets relayed to a phone; added when a call's relay ends, so live calls count at their end.",
        RELAYS.rtp_relayed.load(Relaxed),
    );
    out.counter(
        "ringfort_rtp_dropped_packets_total",
        "Datagrams the relays received and did not forward (unknown source, no destination yet, send failed); added when a call's relay ends.",
        RELAYS.dropped.load(Relaxed),
    );
    out.counter(
        "ringfort_rtp_lost_packets_total",
        "RTP packets missing from what the phones sent to the relays (sequence gaps, RFC 3550 A.3); added when a call's relay ends.",
        RELAYS.lost.load(Relaxed),
    );
    out.histogram(
        "ringfort_binding_commit_seconds",
        "Time to commit one batch of registrations to the store.",
        &m.binding_commits.snapshot(),
    );
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], out.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Histogram;
    use std::time::Duration;

    #[test]
    fn families_have_help_and_type_before_their_samples() {
        let mut e = Exposition::default();
        e.counter("ringfort_x_total", "Things.\nMore \\ things.", 7);
        e.labelled_gauge(
            "ringfort_info",
            "Info.",
            &[("version", "1.0"), ("node", "a\"b\\c\nd")],
            1.0,
        );
        e.gauge("ringfort_g", "A gauge.", 0.25);
        let text = e.finish();
        assert_eq!(
            text,
            "# HELP ringfort_x_total Things.\\nMore \\\\ things.\n\
             # TYPE ringfort_x_total counter\n\
             ringfort_x_total 7\n\
             # HELP ringfort_info Info.\n\
             # TYPE ringfort_info gauge\n\
             ringfort_info{version=\"1.0\",node=\"a\\\"b\\\\c\\nd\"} 1\n\
             # HELP ringfort_g A gauge.\n\
             # TYPE ringfort_g gauge\n\
             ringfort_g 0.25\n"
        );
    }

    #[test]
    fn histograms_have_cumulative_buckets_inf_sum_and_count() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(2));
        h.observe(Duration::from_millis(20));
        let mut e = Exposition::default();
        e.histogram("ringfort_h_seconds", "H.", &h.snapshot());
        let text = e.finish();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "# HELP ringfort_h_seconds H.");
        assert_eq!(lines[1], "# TYPE ringfort_h_seconds histogram");
        assert!(text.contains("ringfort_h_seconds_bucket{le=\"0.001\"} 0\n"));
        assert!(text.contains("ringfort_h_seconds_bucket{le=\"0.0025\"} 1\n"));
        assert!(text.contains("ringfort_h_seconds_bucket{le=\"0.025\"} 2\n"));
        assert!(text.contains("ringfort_h_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("ringfort_h_seconds_sum 0.022\n"));
        assert!(text.ends_with("ringfort_h_seconds_count 2\n"));
    }

    #[test]
    fn special_numbers_are_spelt_as_the_format_wants() {
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(1e-4), "0.0001");
    }
}
