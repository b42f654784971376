//! The node's background tasks besides the core: the binding writer (group commits of
//! REGISTERs), NAT keepalives, the per-minute samples for the panel's charts, and the
//! sweeper of expired bindings. Each owns its loop and its timer and ends on shutdown.
//! Must not: touch the transaction layer (the writer hands its answers back to the core).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use super::reach::Reacher;
use super::NodeControl;
use crate::metrics::NodeMetrics;
use crate::registrar::{PendingWrite, Registrar};
use crate::sip::message::{HeaderName, Request, Response};
use crate::sip::shard::ShardId;
use crate::sip::transaction::TxKey;
use crate::sip::Peer;
use crate::store::Store;
use crate::voicemail::mwi_task::MwiCommand;

/// REGISTERs waiting for their bindings to be written; past this the node answers 500
/// with Retry-After rather than queue without bound.
pub const WRITE_QUEUE: usize = 8192;
/// The most binding sets one transaction commits.
const WRITE_BATCH: usize = 512;

/// Work that other tasks hand back to a shard's core, the only owner of its transaction
/// layer.
pub enum Answer {
    /// Send this final response on the server transaction.
    Respond(TxKey, Response),
    /// Admit this request again (the registrar loaded what it needed).
    Retry(TxKey, Request, Peer),
}

/// A binding set to make durable, and the REGISTER transaction (of which shard) whose
/// answer waits for it.
pub struct WriteJob {
    pub shard: ShardId,
    pub key: TxKey,
    pub write: PendingWrite,
}

/// Commits pending binding sets in batches: one transaction (one disk sync) for all the
/// REGISTERs that queued up while the previous one was committing. No linger: an idle
/// node commits a lone REGISTER at once (its 200 waits only for its own disk sync), and
/// a busy one batches by itself, since REGISTERs queue up while a commit runs.
pub async fn binding_writer(
    registrar: Arc<Registrar>,
    mut writes: mpsc::Receiver<WriteJob>,
    answers: Vec<mpsc::Sender<Answer>>,
    metrics: Arc<NodeMetrics>,
) {
    let mut batch: Vec<WriteJob> = Vec::with_capacity(WRITE_BATCH);
    while let Some(first) = writes.recv().await {
        batch.push(first);
        while batch.len() < WRITE_BATCH {
            match writes.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let (keys, pending): (Vec<(ShardId, TxKey)>, Vec<PendingWrite>) =
            batch.drain(..).map(|j| ((j.shard, j.key), j.write)).unzip();
        let started = std::time::Instant::now();
        let results = registrar.persist(&pending).await;
        let took = started.elapsed();
        metrics.binding_commits.observe(took);
        debug!(
            count = pending.len(),
            elapsed_us = took.as_micros() as u64,
            "binding batch committed"
        );
        for (((shard, key), w), ok) in keys.into_iter().zip(pending).zip(results) {
            let resp = if ok {
                w.response
            } else {
                registrar.unavailable(&w.response)
            };
            let Some(to) = answers.get(shard.index) else {
                continue;
            };
            if to.send(Answer::Respond(key, resp)).await.is_err() {
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

/// Where an order from outside a shard goes: the shard whose Call-ID it concerns.
pub struct ShardOrders {
    pub mwi: mpsc::Sender<MwiCommand>,
    pub control: mpsc::Sender<NodeControl>,
}

/// Hands the MWI task's commands and the admin API's orders to the shard they concern:
/// a response or NOTIFY to the shard of its subscription's Call-ID (where its
/// transactions live), a hang-up to the shard of the call's caller leg. An unsolicited
/// NOTIFY makes a new transaction: the mailbox picks the shard, to spread them.
pub async fn route_orders(
    mut mwi: mpsc::Receiver<MwiCommand>,
    mut control: mpsc::Receiver<NodeControl>,
    shards: Vec<ShardOrders>,
    mut shutdown: watch::Receiver<bool>,
) {
    let count = shards.len();
    loop {
        tokio::select! {
            Some(cmd) = mwi.recv() => {
                let key = match &cmd {
                    MwiCommand::Respond { resp, .. } => resp.headers.get(&HeaderName::CallId),
                    MwiCommand::SendNotify { req, .. } => req.headers.get(&HeaderName::CallId),
                    MwiCommand::Unsolicited { mailbox, .. } => Some(mailbox.as_str()),
                };
                let shard = ShardId::of(key.unwrap_or_default(), count);
                if let Some(s) = shards.get(shard.index) {
                    if s.mwi.send(cmd).await.is_err() {
                        return;
                    }
                }
            }
            Some(order) = control.recv() => {
                let shard = match &order {
                    NodeControl::HangUp { caller_call_id, .. } => ShardId::of(caller_call_id, count),
                    // Any shard reloads the plan for all: they share it.
                    NodeControl::ReloadPlan { .. } => ShardId::of("", 1),
                };
                if let Some(s) = shards.get(shard.index) {
                    if s.control.send(order).await.is_err() {
                        return;
                    }
                }
            }
            _ = shutdown.changed() => return,
            else => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{self, Request, Response, SipMessage};
    use crate::sip::{Peer, Transport};
    use tokio::sync::oneshot;

    fn request(call_id: &str) -> Request {
        let text = format!(
            "NOTIFY sip:200@192.0.2.10 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-{call_id}\r\n\
             From: <sip:200@pbx>;tag=a\r\nTo: <sip:200@pbx>;tag=b\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 NOTIFY\r\nContent-Length: 0\r\n\r\n"
        );
        match message::parse(text.as_bytes()) {
            Ok(SipMessage::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    /// Every order reaches the shard whose Call-ID it concerns, whichever it is.
    #[tokio::test]
    async fn orders_go_to_the_shard_of_their_call_id() {
        const SHARDS: usize = 3;
        let (mwi_tx, mwi_rx) = mpsc::channel(16);
        let (control_tx, control_rx) = mpsc::channel(16);
        let (_stop, shutdown) = watch::channel(false);
        let mut mwis = Vec::new();
        let mut controls = Vec::new();
        let mut orders = Vec::new();
        for _ in 0..SHARDS {
            let (m, mr) = mpsc::channel(16);
            let (c, cr) = mpsc::channel(16);
            orders.push(ShardOrders { mwi: m, control: c });
            mwis.push(mr);
            controls.push(cr);
        }
        tokio::spawn(route_orders(mwi_rx, control_rx, orders, shutdown));
        let to = Peer {
            transport: Transport::Udp,
            remote: "192.0.2.10:5060".parse().expect("addr"),
            local: "192.0.2.1:5060".parse().expect("addr"),
            conn: None,
        };
        for i in 0..12 {
            let call_id = format!("subscription-{i}");
            let want = ShardId::of(&call_id, SHARDS).index;
            let req = request(&call_id);
            mwi_tx
                .send(MwiCommand::SendNotify {
                    req: req.clone(),
                    to,
                })
                .await
                .expect("send");
            let got = mwis[want].recv().await.expect("routed");
            assert!(matches!(got, MwiCommand::SendNotify { .. }), "{call_id}");
            let key = TxKey::server(&req).expect("key");
            let resp = Response::for_request(&req, 200, "OK");
            mwi_tx
                .send(MwiCommand::Respond { key, resp })
                .await
                .expect("send");
            let got = mwis[want].recv().await.expect("routed");
            assert!(matches!(got, MwiCommand::Respond { .. }), "{call_id}");
            let (done, _) = oneshot::channel();
            control_tx
                .send(NodeControl::HangUp {
                    caller_call_id: call_id.clone(),
                    done,
                })
                .await
                .expect("send");
            let got = controls[want].recv().await.expect("routed");
            assert!(matches!(got, NodeControl::HangUp { .. }), "{call_id}");
        }
        // Nothing went anywhere else.
        for (i, (m, c)) in mwis.iter_mut().zip(&mut controls).enumerate() {
            assert!(m.try_recv().is_err(), "shard {i}");
            assert!(c.try_recv().is_err(), "shard {i}");
        }
    }
}
