//! The recording of a call as it runs: the tap the relay copies packets into, and the
//! small tokio task that owns the call's [`CallRecorder`].
//!
//! Owns: the tap's two bounded queues and its buffers ([`RecordTap`], the relay's end),
//! the recording task with its one 20 ms timer, and [`RecordingHandle`], the call task's
//! grip on it. Must not: block the relay (the tap only `try_send`s; a full queue is a
//! dropped packet, counted), know SIP (formats come as [`LegFormat`]s), or decide what is
//! recorded (the call task starts it at answer).
//!
//! Per packet the relay takes a buffer from a pool (a queue of empty `Vec`s, allocated
//! once with the tap), copies the packet into it (the one copy), and queues it with its
//! leg and arrival time; no pool buffer free, a packet larger than a buffer, or a full
//! queue drops the packet from the recording (never from the call). Both queues are
//! `std::sync::mpsc::sync_channel`s, fixed arrays allocated up front: nothing allocates
//! per packet, and the relay never wakes the recording task. The task drains the queue on
//! its own 20 ms tick, feeds the packets with their arrival times to the core, writes one
//! tick, and hands the buffers back.
//!
//! Disk: the task writes through the [`super::recorder::Recorder`]'s buffer (640 bytes a
//! tick at most, flushed with a header update once a second) directly, without
//! `spawn_blocking`: those are page-cache writes of a few microseconds, on this task, not
//! the relay's; a hop to the blocking pool per tick would cost more than the write.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self as std_mpsc, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tracing::{debug, info, warn};

use super::call_recorder::{CallRecorder, CallRecorderError, RecordingStats};
use super::recorder::Layout;
use super::relay::{Leg, RelayHandle};
use super::transcode::{LegFormat, TICK_MS};

/// Packets queued between two ticks at most: 20 ms ticks see 2-4 packets normally; this
/// covers a recording task late by more than half a second.
const TAP_PACKETS: usize = 64;
/// The largest packet recorded (an RTP audio packet is far smaller; a bigger one is
/// dropped from the recording).
const TAP_PACKET_MAX: usize = 1500;

/// One packet on its way to the recording task.
struct Tapped {
    leg: Leg,
    at: Instant,
    data: Vec<u8>,
}

/// What the relay and the recording task share of a tap.
#[derive(Debug, Default)]
struct TapShared {
    /// Packets the tap could not pass on.
    dropped: AtomicU64,
    /// The recording task has ended.
    closed: AtomicBool,
}

/// The relay's end of a recording: where it copies each accepted RTP packet.
pub struct RecordTap {
    full: SyncSender<Tapped>,
    /// The pool: empty buffers to take, and to put back when a packet cannot go.
    empty: Receiver<Vec<u8>>,
    pool: SyncSender<Vec<u8>>,
    shared: Arc<TapShared>,
}

impl std::fmt::Debug for RecordTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordTap")
    }
}

/// What [`RecordTap::offer`] says of the recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tap {
    /// Taken, or dropped and counted.
    Open,
    /// The recording has ended: the relay can forget the tap.
    Closed,
}

impl RecordTap {
    /// Copies `packet`, received from `leg`'s phone at `at`, to the recording; never
    /// blocks.
    pub fn offer(&self, leg: Leg, packet: &[u8], at: Instant) -> Tap {
        let Ok(mut data) = self.empty.try_recv() else {
            // Every buffer is queued: the task is late, or gone.
            if self.shared.closed.load(Relaxed) {
                return Tap::Closed;
            }
            self.shared.dropped.fetch_add(1, Relaxed);
            return Tap::Open;
        };
        if packet.len() > data.capacity() {
            self.shared.dropped.fetch_add(1, Relaxed);
            // The pool holds every buffer: there is room for this one.
            let _ = self.pool.try_send(data);
            return Tap::Open;
        }
        data.clear();
        data.extend_from_slice(packet);
        match self.full.try_send(Tapped { leg, at, data }) {
            Ok(()) => Tap::Open,
            Err(TrySendError::Full(t)) => {
                self.shared.dropped.fetch_add(1, Relaxed);
                let _ = self.pool.try_send(t.data);
                Tap::Open
            }
            Err(TrySendError::Disconnected(_)) => Tap::Closed,
        }
    }
}

/// The recording task's end of the tap.
struct TapRx {
    full: Receiver<Tapped>,
    pool: SyncSender<Vec<u8>>,
    shared: Arc<TapShared>,
}

impl Drop for TapRx {
    fn drop(&mut self) {
        self.shared.closed.store(true, Relaxed);
    }
}

/// A tap and the task's end of it, with the pool filled.
fn tap() -> (RecordTap, TapRx) {
    // As many queue places as buffers: the queue of packets is never the limit, the
    // pool is; both are arrays allocated here.
    let (full_tx, full_rx) = std_mpsc::sync_channel(TAP_PACKETS);
    let (pool, empty) = std_mpsc::sync_channel(TAP_PACKETS);
    for _ in 0..TAP_PACKETS {
        // Cannot fail: the pool's queue has room for every buffer.
        let _ = pool.try_send(Vec::with_capacity(TAP_PACKET_MAX));
    }
    let shared = Arc::new(TapShared::default());
    (
        RecordTap {
            full: full_tx,
            empty,
            pool: pool.clone(),
            shared: shared.clone(),
        },
        TapRx {
            full: full_rx,
            pool,
            shared,
        },
    )
}

enum Control {
    Formats([Option<LegFormat>; 2]),
}

/// How a recording ended.
#[derive(Debug, Clone)]
pub struct RecordingSummary {
    pub path: PathBuf,
    pub stats: RecordingStats,
    /// Audio in the file.
    pub duration: Duration,
    /// Packets the tap could not pass on (queue full, packet too large).
    pub dropped: u64,
}

/// The call task's grip on a running recording. Dropping it ends the recording (the task
/// finishes the file); [`RecordingHandle::finish`] waits for that.
#[derive(Debug)]
pub struct RecordingHandle {
    ctrl: mpsc::UnboundedSender<Control>,
    task: JoinHandle<Option<RecordingSummary>>,
    path: PathBuf,
}

impl RecordingHandle {
    /// Starts recording the call `relay` carries into a new file at `path`: the relay's
    /// RTP goes to the tap from now on. `formats` are the legs' as far as known.
    pub fn start(
        relay: &RelayHandle,
        path: &Path,
        layout: Layout,
        formats: [Option<LegFormat>; 2],
    ) -> Result<RecordingHandle, CallRecorderError> {
        let core = CallRecorder::create(path, layout, formats)?;
        let (tap, rx) = tap();
        relay.record(Some(tap));
        let (ctrl_tx, ctrl_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(core, rx, ctrl_rx));
        info!(path = %path.display(), ?layout, "recording");
        Ok(RecordingHandle {
            ctrl: ctrl_tx,
            task,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The legs' formats changed (re-INVITE, UPDATE).
    pub fn set_formats(&self, formats: [Option<LegFormat>; 2]) {
        // Fails only when the task has ended; then there is nothing to update.
        let _ = self.ctrl.send(Control::Formats(formats));
    }

    /// Ends the recording and waits until the file is complete. `None` when the task
    /// failed (logged there).
    pub async fn finish(self) -> Option<RecordingSummary> {
        let RecordingHandle { ctrl, task, .. } = self;
        drop(ctrl);
        task.await.ok().flatten()
    }
}

async fn run(
    mut core: CallRecorder,
    mut tap: TapRx,
    mut ctrl: mpsc::UnboundedReceiver<Control>,
) -> Option<RecordingSummary> {
    let mut tick = tokio::time::interval(Duration::from_millis(u64::from(TICK_MS)));
    // Late ticks catch up: the file must stay as long as the call.
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let path = core.path().to_owned();
    loop {
        tokio::select! {
            biased;
            c = ctrl.recv() => match c {
                Some(Control::Formats(f)) => {
                    if let Err(e) = core.set_formats(f) {
                        warn!(error = %e, "recording: a leg's codec cannot be decoded");
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                let relay_gone = drain(&mut core, &mut tap);
                if let Err(e) = core.tick(Instant::now()) {
                    // A full disk or the WAV size limit: what is written stays playable.
                    warn!(error = %e, "recording stopped");
                    return None;
                }
                if relay_gone {
                    break;
                }
            }
        }
    }
    drain(&mut core, &mut tap);
    let duration = core.duration();
    match core.finish() {
        Ok(stats) => {
            let dropped = tap.shared.dropped.load(Relaxed);
            let summary = RecordingSummary {
                path,
                stats,
                duration,
                dropped,
            };
            debug!(?summary, "recording finished");
            Some(summary)
        }
        Err(e) => {
            warn!(error = %e, "recording could not be finished");
            None
        }
    }
}

/// Feeds the queued packets to the core and returns their buffers to the pool; true
/// when the relay has dropped the tap (it stopped).
fn drain(core: &mut CallRecorder, tap: &mut TapRx) -> bool {
    loop {
        match tap.full.try_recv() {
            Ok(t) => {
                core.push(t.leg, &t.data, t.at);
                // The pool has room: every buffer came from it.
                let _ = tap.pool.try_send(t.data);
            }
            Err(TryRecvError::Empty) => return false,
            Err(TryRecvError::Disconnected) => return true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tap_drops_when_full_and_closes_with_the_recording() {
        let (tap, rx) = tap();
        let dropped = || rx.shared.dropped.load(Relaxed);
        let t0 = Instant::now();
        let pkt = [0x80u8, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0xff];
        for _ in 0..TAP_PACKETS + 3 {
            assert_eq!(tap.offer(Leg::B, &pkt, t0), Tap::Open);
        }
        assert_eq!(dropped(), 3, "the task is late: the pool ran dry");
        let mut n = 0;
        while let Ok(t) = rx.full.try_recv() {
            assert_eq!((t.leg, &t.data[..]), (Leg::B, &pkt[..]));
            let _ = rx.pool.try_send(t.data);
            n += 1;
        }
        assert_eq!(n, TAP_PACKETS);
        assert_eq!(tap.offer(Leg::A, &[0; TAP_PACKET_MAX + 1], t0), Tap::Open);
        assert_eq!(dropped(), 4, "too large");
        for _ in 0..TAP_PACKETS {
            assert_eq!(tap.offer(Leg::A, &pkt, t0), Tap::Open);
        }
        assert_eq!(dropped(), 4, "the pool is whole again");
        drop(rx);
        assert_eq!(tap.offer(Leg::A, &pkt, t0), Tap::Closed);
    }
}
