//! The call records writer: every call's rows in the store (`active_calls` when it starts
//! and is answered, the CDR when it ends) go through one task that commits what all calls
//! produced meanwhile in one transaction, so a call never waits on the disk and a busy
//! node syncs once per batch instead of three times per call.
//!
//! Owns: the queue of [`CallRecord`]s and the writer task. Must not: decide anything about
//! calls; the call tasks say what happened, in order, and move on.
//!
//! Durability: a record reaches the disk within the linger plus one commit (tens of
//! milliseconds). A crash in that window loses only the newest step of a call: a call
//! whose start was committed but not its end comes back as a `failed` CDR at the next
//! start ([`crate::store::Store::recover_active_calls`]). A failing store is retried with
//! backoff, the records kept in memory; a batch refused as a whole is applied record by
//! record so one bad row cannot hold back the others.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::store::{CallRecord, Store};

/// How long the writer waits for more records before a commit.
const LINGER: Duration = Duration::from_millis(25);
/// Most records in one transaction.
const BATCH: usize = 512;
/// Attempts at a batch before it is applied record by record.
const ATTEMPTS: u32 = 5;

/// Where call tasks send their records. Cheap to clone.
#[derive(Clone, Debug)]
pub struct CallLog {
    /// `None`: another node keeps this call's rows ([`CallLog::kept_elsewhere`]).
    tx: Option<mpsc::UnboundedSender<CallRecord>>,
}

impl CallLog {
    /// Queues a record; never waits. Unbounded on purpose: records are small and a store
    /// outage must not stall calls (the queue drains when the store is back).
    pub fn record(&self, r: CallRecord) {
        let Some(tx) = &self.tx else { return };
        if tx.send(r).is_err() {
            warn!("call records writer has stopped: record lost");
        }
    }

    /// The log of a leg this node rings for another node: the node that took the call
    /// writes its row and its one CDR, so this one writes nothing.
    pub fn kept_elsewhere() -> CallLog {
        CallLog { tx: None }
    }
}

/// Starts the writer. It ends once every [`CallLog`] clone is dropped and the queue is
/// written, so awaiting the handle at shutdown flushes the last CDRs.
pub fn spawn_writer(store: Store) -> (CallLog, JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (CallLog { tx: Some(tx) }, tokio::spawn(writer(store, rx)))
}

async fn writer(store: Store, mut rx: mpsc::UnboundedReceiver<CallRecord>) {
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        let linger = tokio::time::sleep(LINGER);
        tokio::pin!(linger);
        while batch.len() < BATCH {
            tokio::select! {
                r = rx.recv() => match r {
                    Some(r) => batch.push(r),
                    None => break,
                },
                _ = &mut linger => break,
            }
        }
        commit(&store, &batch).await;
        batch.clear();
    }
}

async fn commit(store: &Store, batch: &[CallRecord]) {
    for attempt in 0..ATTEMPTS {
        match store.apply_call_records(batch).await {
            Ok(()) => {
                debug!(count = batch.len(), "call records committed");
                return;
            }
            Err(e) => {
                warn!(error = %e, attempt, count = batch.len(), "cannot write call records");
                if matches!(e, crate::store::StoreError::Conflict(_)) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
        }
    }
    for r in batch {
        if let Err(e) = store.apply_call_records(std::slice::from_ref(r)).await {
            warn!(error = %e, record = ?r, "call record lost");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ActiveCall, Cdr};

    fn active(id: &str) -> ActiveCall {
        ActiveCall {
            id: id.into(),
            caller: "100".into(),
            callee: "200".into(),
            state: "ringing".into(),
            started_at: 1,
            answered_at: None,
            caller_call_id: format!("a-{id}"),
            callee_call_id: format!("b-{id}"),
            node_id: "n1".into(),
        }
    }

    fn cdr(id: &str) -> Cdr {
        Cdr {
            id: id.into(),
            caller: "100".into(),
            callee: "200".into(),
            started_at: 1,
            answered_at: Some(2),
            ended_at: 5,
            disposition: "answered".into(),
            duration: 3,
            hangup_leg: "caller".into(),
            caller_call_id: format!("a-{id}"),
            callee_call_id: format!("b-{id}"),
            node_id: "n1".into(),
            recording: None,
        }
    }

    #[tokio::test]
    async fn records_of_many_calls_land_in_order_and_a_bad_one_does_not_hold_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("r.db").display());
        let store = Store::connect(&url, 2).await.expect("store");
        store.migrate().await.expect("migrate");
        let (log, writer) = spawn_writer(store.clone());
        for i in 0..100 {
            let id = format!("c{i}");
            log.record(CallRecord::Started(active(&id)));
            log.record(CallRecord::Answered {
                id: id.clone(),
                at: 2,
                callee_call_id: format!("b2-{id}"),
            });
            if i % 2 == 0 {
                log.record(CallRecord::Finished(cdr(&id)));
            }
        }
        // A duplicate start fails its batch; the others still land.
        log.record(CallRecord::Started(active("c1")));
        log.record(CallRecord::Finished(cdr("c1")));
        drop(log);
        writer.await.expect("writer");
        let active = store.list_active_calls().await.expect("active");
        assert_eq!(active.len(), 49, "odd calls but c1 still in progress");
        assert!(active.iter().all(|c| c.state == "answered"));
        assert_eq!(store.list_cdrs(1000).await.expect("cdrs").len(), 51);
    }
}
