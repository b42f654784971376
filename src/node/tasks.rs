//! The node's background tasks besides the core: the binding writer (group commits of
//! REGISTERs), NAT keepalives, the per-minute samples for the panel's charts, and the
//! sweeper of expired bindings. Each owns its loop and its timer and ends on shutdown.
//! Must not: touch the transaction layer (the writer hands its answers back to the core).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use super::core::Answer;
use super::reach::Reacher;
use crate::metrics::NodeMetrics;
use crate::registrar::{PendingWrite, Registrar};
use crate::sip::transaction::TxKey;
use crate::store::Store;

/// REGISTERs waiting for their bindings to be written; past this the node answers 500
/// with Retry-After rather than queue without bound.
pub const WRITE_QUEUE: usize = 8192;
/// The most binding sets one transaction commits.
const WRITE_BATCH: usize = 512;

/// Commits pending binding sets in batches: one transaction (one disk sync) for all the
/// REGISTERs that queued up while the previous one was committing. No linger: an idle
/// node commits a lone REGISTER at once (its 200 waits only for its own disk sync), and
/// a busy one batches by itself, since REGISTERs queue up while a commit runs.
pub async fn binding_writer(
    registrar: Arc<Registrar>,
    mut writes: mpsc::Receiver<(TxKey, PendingWrite)>,
    answers: mpsc::Sender<Answer>,
    metrics: Arc<NodeMetrics>,
) {
    let mut batch: Vec<(TxKey, PendingWrite)> = Vec::with_capacity(WRITE_BATCH);
    while let Some(first) = writes.recv().await {
        batch.push(first);
        while batch.len() < WRITE_BATCH {
            match writes.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let (keys, pending): (Vec<TxKey>, Vec<PendingWrite>) = batch.drain(..).unzip();
        let started = std::time::Instant::now();
        let results = registrar.persist(&pending).await;
        let took = started.elapsed();
        metrics.binding_commits.observe(took);
        debug!(
            count = pending.len(),
            elapsed_us = took.as_micros() as u64,
            "binding batch committed"
        );
        for ((key, w), ok) in keys.into_iter().zip(pending).zip(results) {
            let resp = if ok {
                w.response
            } else {
                registrar.unavailable(&w.response)
            };
            if answers.send(Answer::Respond(key, resp)).await.is_err() {
                return;
            }
        }
    }
}

/// Keeps NAT mappings of UDP phones open: a CRLF pair from the socket each registered to,
/// which phones ignore (RFC 5626 keepalive bytes) and NATs count as traffic.
pub async fn nat_keepalives(
    reach: Arc<Reacher>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let (registrar, transport) = (&reach.registrar, &reach.transport);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // The node that would ring a phone keeps its NAT pinhole open: in a
                // cluster, whoever holds the VIP it registered through now.
                for (local, remote) in registrar.nat_keepalive_targets(|b| reach.reaches(b)) {
                    if let Err(e) = transport.send_datagram(local, remote, b"\r\n\r\n") {
                        debug!(to = %remote, error = %e, "keepalive not sent");
                    }
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// How often a node samples its counts for the panel's charts.
const SAMPLE_EVERY: Duration = Duration::from_secs(60);
/// How long samples are kept (the charts show a day; a week back stays possible).
const SAMPLES_KEPT_SECS: i64 = 8 * 24 * 3600;

/// Writes this node's calls and the live registrations once a minute (on the minute,
/// and once at start) to the store, and prunes its samples past a week.
pub async fn sample_counts(
    store: Store,
    node_id: String,
    metrics: Arc<NodeMetrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let now = crate::now_unix();
        let at = now - now.rem_euclid(SAMPLE_EVERY.as_secs() as i64);
        let sample = async {
            let sample = crate::store::NodeSample {
                node_id: node_id.clone(),
                at,
                registrations: store.count_live_bindings(now).await?,
                calls: metrics.calls_up.load(Relaxed) as i64,
            };
            store.record_sample(&sample).await?;
            store.prune_samples(&node_id, at - SAMPLES_KEPT_SECS).await
        };
        if let Err(e) = sample.await {
            debug!(error = %e, "cannot write the node's sample");
        }
        let next = (at + SAMPLE_EVERY.as_secs() as i64 - now).max(1) as u64;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(next)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Deletes expired bindings every `every`.
pub async fn sweeper(
    registrar: Arc<Registrar>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = registrar.sweep().await {
                    warn!(error = %e, "sweeping expired bindings failed");
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}
