//! The node's operational counters, kept as relaxed atomics so the tasks that own the
//! work (the core, the binding writer, relay tasks) can add to them without locks or
//! channels, and the HTTP layer (`/metrics`, [`crate::http::metrics`]) can read them at
//! any time. Owns the counters only: no formatting (the HTTP layer encodes them), no I/O.
//! Depends on nothing else in the crate, so any layer may add to it without calling
//! upward.
//!
//! What is not here is read where it already lives at scrape time: extensions and
//! registrations from the store.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Counters of one running node ([`crate::node::RunningNode::metrics`]).
#[derive(Debug, Default)]
pub struct NodeMetrics {
    /// Calls the core started (B2BUA dials and app calls), since start.
    pub calls_started: AtomicU64,
    /// Calls the core routes to now (B2BUA and app calls); each signalling shard adds the
    /// change in its own count after each event.
    pub calls_up: AtomicU64,
    /// Live SIP transactions in the transaction layers; each shard adds the change in its
    /// own count after each event.
    pub transactions: AtomicU64,
    /// How long each batch of binding sets took to commit (`binding_writer`).
    pub binding_commits: Histogram,
}

/// Upper bounds (seconds) of [`NodeMetrics::binding_commits`]' buckets: from a fast
/// SQLite commit (sub-millisecond) to a stalled PostgreSQL (seconds).
pub const COMMIT_BUCKETS_SECS: [f64; 11] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];

/// A fixed-bucket histogram of durations (Prometheus' shape: cumulative at read time).
#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative counts per bucket of [`COMMIT_BUCKETS_SECS`]; the last slot is +Inf.
    buckets: [AtomicU64; COMMIT_BUCKETS_SECS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

/// A reading of a [`Histogram`].
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// (upper bound in seconds, cumulative count), ending with (+Inf, count).
    pub cumulative: Vec<(f64, u64)>,
    pub sum_secs: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let slot = COMMIT_BUCKETS_SECS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(COMMIT_BUCKETS_SECS.len());
        self.buckets[slot].fetch_add(1, Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// Relaxed reads: a scrape racing an observation may see the count one ahead of the
    /// buckets, which Prometheus tolerates (the next scrape agrees).
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let mut cumulative = Vec::with_capacity(self.buckets.len());
        for (i, bucket) in self.buckets.iter().enumerate() {
            running += bucket.load(Relaxed);
            let bound = COMMIT_BUCKETS_SECS.get(i).copied().unwrap_or(f64::INFINITY);
            cumulative.push((bound, running));
        }
        HistogramSnapshot {
            cumulative,
            sum_secs: self.sum_micros.load(Relaxed) as f64 / 1e6,
            count: running,
        }
    }
}

/// RTP totals of every relay of this process, added once per relay when its task ends
/// (not per packet: the relay's own per-call counters are what the hot path touches).
/// A process-wide static rather than a field of the node because [`crate::media`]'s
/// `RelayConfig` is a plain `Copy` value handed to every call; one process runs one
/// node in production (tests that start several share these totals).
#[derive(Debug, Default)]
pub struct RelayTotals {
    /// RTP packets (RTCP excluded) sent on to the other leg's phone.
    pub rtp_relayed: AtomicU64,
    /// Datagrams received and not forwarded (unknown source, no destination yet, a send
    /// that would block or failed).
    pub dropped: AtomicU64,
    /// RTP packets missing from what the phones sent (sequence gaps).
    pub lost: AtomicU64,
    /// Relay tasks running now.
    pub running: AtomicU64,
}

/// See [`RelayTotals`].
pub static RELAYS: RelayTotals = RelayTotals {
    rtp_relayed: AtomicU64::new(0),
    dropped: AtomicU64::new(0),
    lost: AtomicU64::new(0),
    running: AtomicU64::new(0),
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_inf() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(10));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.cumulative.first(), Some(&(0.0005, 1)));
        assert_eq!(s.cumulative.get(3), Some(&(0.005, 2)));
        assert_eq!(s.cumulative.last(), Some(&(f64::INFINITY, 3)));
        assert!((s.sum_secs - 10.0033).abs() < 1e-9, "{}", s.sum_secs);
    }
}
