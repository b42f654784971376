//! Conference rooms: one tokio task per room running a [`Mixer`] on its own 20 ms clock,
//! and the [`RoomLink`]s media endpoints join it through.
//!
//! Owns: the rooms of the node by name ([`Rooms`]), each room's mixer and members, the
//! frame queues between a member's endpoint and its room. Must not: touch sockets or
//! codecs: each member's endpoint decodes what its phone sends and encodes what the room
//! gives back (as FreeSWITCH's members do), so a room only moves PCM frames.
//!
//! Clocks: the endpoints and the room tick every 20 ms on their own timers, at different
//! phases. Each direction between them is a queue of at most [`QUEUE_MAX`] frames: a late
//! tick finds the frame waiting, an early one finds nothing (silence, counted as a lost
//! frame by nobody), and drift beyond 60 ms drops the oldest frame so delay never grows.
//! Buffers are recycled: no allocation per frame in the steady state.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::MissedTickBehavior;
use tracing::{debug, info};

use super::endpoint::MediaLink;
use super::mixer::{Mixer, MixerConfig, MixerError, ParticipantId};
use super::transcode::TICK_MS;

/// Why joining a room failed.
#[derive(Debug, thiserror::Error)]
pub enum ConferenceError {
    #[error(transparent)]
    Mixer(#[from] MixerError),
    #[error("the room's task is gone")]
    Closed,
}

/// Frames a queue holds before it drops the oldest (60 ms).
pub const QUEUE_MAX: usize = 3;

/// Frames from one side to the other. See the module comment.
#[derive(Default)]
pub struct FrameQueue {
    inner: Mutex<Frames>,
}

#[derive(Default)]
struct Frames {
    ready: VecDeque<Vec<i16>>,
    free: Vec<Vec<i16>>,
}

impl FrameQueue {
    pub fn push(&self, pcm: &[i16]) {
        let Ok(mut q) = self.inner.lock() else {
            return;
        };
        if q.ready.len() >= QUEUE_MAX {
            if let Some(old) = q.ready.pop_front() {
                q.free.push(old);
            }
        }
        let mut buf = q.free.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(pcm);
        q.ready.push_back(buf);
    }

    /// The oldest frame into `out` (padded with silence); false when there is none.
    pub fn pop_into(&self, out: &mut [i16]) -> bool {
        let Ok(mut q) = self.inner.lock() else {
            return false;
        };
        let Some(buf) = q.ready.pop_front() else {
            return false;
        };
        let n = buf.len().min(out.len());
        out[..n].copy_from_slice(&buf[..n]);
        out[n..].fill(0);
        q.free.push(buf);
        true
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |q| q.ready.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How a member joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemberOptions {
    /// Heard by nobody (a listener, or muted by a moderator).
    pub muted: bool,
    /// Hears nothing.
    pub deaf: bool,
}

enum Command {
    Join {
        rate: u32,
        opts: MemberOptions,
        reply: oneshot::Sender<Result<Member, MixerError>>,
    },
    Leave(ParticipantId),
    Mute(ParticipantId, bool),
    MuteAll(bool),
    /// Everyone but this member (the moderator).
    MuteOthers(ParticipantId, bool),
}

struct Member {
    id: ParticipantId,
    to_room: Arc<FrameQueue>,
    from_room: Arc<FrameQueue>,
}

/// A member's end of the room: the endpoint puts the phone's frames in and takes what
/// the member hears. Dropping it leaves the room.
pub struct RoomLink {
    id: ParticipantId,
    to_room: Arc<FrameQueue>,
    from_room: Arc<FrameQueue>,
    room: mpsc::UnboundedSender<Command>,
}

impl RoomLink {
    pub fn set_muted(&self, on: bool) {
        let _ = self.room.send(Command::Mute(self.id, on));
    }

    /// What a member keeps to act on the room once the link itself is handed to the
    /// media endpoint.
    pub fn controls(&self) -> MemberControls {
        MemberControls {
            id: self.id,
            room: self.room.clone(),
        }
    }
}

/// A member's controls over the room (a moderator's "mute everyone else").
#[derive(Clone)]
pub struct MemberControls {
    id: ParticipantId,
    room: mpsc::UnboundedSender<Command>,
}

impl MemberControls {
    /// Mutes (or unmutes) every other member.
    pub fn mute_others(&self, on: bool) {
        let _ = self.room.send(Command::MuteOthers(self.id, on));
    }
}

impl MediaLink for RoomLink {
    fn put(&mut self, pcm: &[i16]) {
        self.to_room.push(pcm);
    }

    fn take(&mut self, out: &mut [i16]) -> bool {
        self.from_room.pop_into(out)
    }
}

impl Drop for RoomLink {
    fn drop(&mut self) {
        let _ = self.room.send(Command::Leave(self.id));
    }
}

/// A room's task handle.
#[derive(Clone)]
pub struct RoomHandle {
    cmds: mpsc::UnboundedSender<Command>,
}

impl RoomHandle {
    /// Starts an empty room; it ends when its last member leaves.
    pub fn spawn(name: &str, config: MixerConfig) -> Result<RoomHandle, MixerError> {
        let mixer = Mixer::new(config)?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(name.to_owned(), mixer, rx));
        Ok(RoomHandle { cmds: tx })
    }

    /// Joins with frames at `rate`. `Ok(None)`: the room has ended (it was empty).
    pub async fn join(
        &self,
        rate: u32,
        opts: MemberOptions,
    ) -> Result<Option<RoomLink>, MixerError> {
        let (reply, answer) = oneshot::channel();
        if self.cmds.send(Command::Join { rate, opts, reply }).is_err() {
            return Ok(None);
        }
        match answer.await {
            Ok(Ok(m)) => Ok(Some(RoomLink {
                id: m.id,
                to_room: m.to_room,
                from_room: m.from_room,
                room: self.cmds.clone(),
            })),
            Ok(Err(e)) => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// Mutes (or unmutes) everyone: a moderator's "mute all".
    pub fn mute_all(&self, on: bool) {
        let _ = self.cmds.send(Command::MuteAll(on));
    }
}

/// The rooms of a node, by name, started on first join.
pub struct Rooms {
    config: MixerConfig,
    rooms: Mutex<HashMap<String, RoomHandle>>,
}

impl Rooms {
    pub fn new(config: MixerConfig) -> Rooms {
        Rooms {
            config,
            rooms: Mutex::new(HashMap::new()),
        }
    }

    /// The room called `name`, started if it is not running (with join and leave tones
    /// when `tones`, as its first member asks).
    fn handle(&self, name: &str, fresh: bool, tones: bool) -> Result<RoomHandle, ConferenceError> {
        let mut rooms = self.rooms.lock().map_err(|_| ConferenceError::Closed)?;
        if !fresh {
            if let Some(h) = rooms.get(name) {
                return Ok(h.clone());
            }
        }
        let config = MixerConfig {
            tones: self.config.tones && tones,
            ..self.config
        };
        let h = RoomHandle::spawn(name, config)?;
        rooms.insert(name.to_owned(), h.clone());
        Ok(h)
    }

    /// Joins room `name` with frames at `rate`; a room this starts plays join and leave
    /// tones when `tones`.
    pub async fn join(
        &self,
        name: &str,
        rate: u32,
        opts: MemberOptions,
        tones: bool,
    ) -> Result<RoomLink, ConferenceError> {
        if let Some(link) = self.handle(name, false, tones)?.join(rate, opts).await? {
            return Ok(link);
        }
        // The room ended between its last leave and this join: start it again.
        self.handle(name, true, tones)?
            .join(rate, opts)
            .await?
            .ok_or(ConferenceError::Closed)
    }

    /// The room called `name` if it is running (a moderator's controls).
    pub fn get(&self, name: &str) -> Option<RoomHandle> {
        self.rooms.lock().ok()?.get(name).cloned()
    }
}

async fn run(name: String, mut mixer: Mixer, mut cmds: mpsc::UnboundedReceiver<Command>) {
    let mut members: Vec<Member> = Vec::new();
    let mut clock = tokio::time::interval(Duration::from_millis(u64::from(TICK_MS)));
    clock.set_missed_tick_behavior(MissedTickBehavior::Burst);
    info!(room = %name, "conference started");
    loop {
        tokio::select! {
            biased;
            cmd = cmds.recv() => {
                let Some(cmd) = cmd else { break };
                match cmd {
                    Command::Join { rate, opts, reply } => {
                        let joined = mixer.join(rate).and_then(|id| {
                            mixer.set_muted(id, opts.muted)?;
                            mixer.set_deaf(id, opts.deaf)?;
                            Ok(id)
                        });
                        let answer = joined.map(|id| {
                            let m = Member {
                                id,
                                to_room: Arc::new(FrameQueue::default()),
                                from_room: Arc::new(FrameQueue::default()),
                            };
                            members.push(Member {
                                id,
                                to_room: m.to_room.clone(),
                                from_room: m.from_room.clone(),
                            });
                            m
                        });
                        debug!(room = %name, members = members.len(), "joined");
                        let _ = reply.send(answer);
                    }
                    Command::Leave(id) => {
                        members.retain(|m| m.id != id);
                        let _ = mixer.leave(id);
                        debug!(room = %name, members = members.len(), "left");
                        if members.is_empty() {
                            break;
                        }
                    }
                    Command::Mute(id, on) => {
                        let _ = mixer.set_muted(id, on);
                    }
                    Command::MuteAll(on) => {
                        for m in &members {
                            let _ = mixer.set_muted(m.id, on);
                        }
                    }
                    Command::MuteOthers(keep, on) => {
                        for m in members.iter().filter(|m| m.id != keep) {
                            let _ = mixer.set_muted(m.id, on);
                        }
                        info!(room = %name, muted = on, "moderator muted the others");
                    }
                }
            }
            _ = clock.tick(), if !members.is_empty() => {
                for m in &members {
                    if let Ok(input) = mixer.input_mut(m.id) {
                        if !m.to_room.pop_into(input) {
                            input.fill(0);
                        }
                    }
                }
                if mixer.tick().is_err() {
                    break;
                }
                for m in &members {
                    if let Ok(out) = mixer.output(m.id) {
                        m.from_room.push(out.pcm());
                    }
                }
            }
        }
    }
    info!(room = %name, "conference ended");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_keeps_order_bounds_its_delay_and_recycles_buffers() {
        let q = FrameQueue::default();
        let mut out = [0i16; 4];
        assert!(!q.pop_into(&mut out));
        for v in 1..=5i16 {
            q.push(&[v; 4]);
        }
        assert_eq!(q.len(), QUEUE_MAX);
        // The two oldest were dropped; the rest come out in order.
        for v in 3..=5i16 {
            assert!(q.pop_into(&mut out));
            assert_eq!(out, [v; 4]);
        }
        // A short frame is padded with silence.
        q.push(&[9, 9]);
        assert!(q.pop_into(&mut out));
        assert_eq!(out, [9, 9, 0, 0]);
        let free = q.inner.lock().expect("lock").free.len();
        assert!(free <= QUEUE_MAX + 1, "buffers are reused: {free}");
    }

    fn tone(hz: f64, amplitude: f64, start: usize) -> Vec<i16> {
        (start..start + 160)
            .map(|i| (amplitude * (std::f64::consts::TAU * hz * i as f64 / 8000.0).sin()) as i16)
            .collect()
    }

    /// Feeds the members for `frames` ticks; returns the peak each heard in the last half.
    async fn talk(links: &mut [RoomLink], voices: &[Option<f64>], frames: usize) -> Vec<i16> {
        let mut peak = vec![0i16; links.len()];
        let mut out = vec![0i16; 160];
        for f in 0..frames {
            for (link, voice) in links.iter_mut().zip(voices) {
                let frame = match voice {
                    Some(hz) => tone(*hz, 8000.0, f * 160),
                    None => vec![0; 160],
                };
                link.put(&frame);
            }
            tokio::time::sleep(Duration::from_millis(u64::from(TICK_MS))).await;
            for (i, link) in links.iter_mut().enumerate() {
                while link.take(&mut out) {
                    if f >= frames / 2 {
                        let p = out.iter().map(|s| s.saturating_abs()).max().unwrap_or(0);
                        peak[i] = peak[i].max(p);
                    }
                }
            }
        }
        peak
    }

    #[tokio::test]
    async fn a_moderator_mutes_everyone_else_and_is_still_heard() {
        let rooms = Rooms::new(MixerConfig {
            tones: false,
            ..MixerConfig::default()
        });
        let mut links = Vec::new();
        for _ in 0..3 {
            links.push(
                rooms
                    .join("r", 8000, MemberOptions::default(), false)
                    .await
                    .expect("join"),
            );
        }
        // The moderator (0) is silent, 1 talks: the moderator hears 1.
        let peak = talk(&mut links, &[None, Some(500.0), None], 20).await;
        assert!(peak[0] > 1000, "the moderator hears member 1: {peak:?}");
        links[0].controls().mute_others(true);
        let peak = talk(&mut links, &[Some(700.0), Some(500.0), None], 20).await;
        assert!(peak[0] < 100, "member 1 is muted: {peak:?}");
        assert!(peak[2] > 1000, "member 2 hears the moderator: {peak:?}");
        links[0].controls().mute_others(false);
        let peak = talk(&mut links, &[None, Some(500.0), None], 20).await;
        assert!(peak[0] > 1000, "member 1 is heard again: {peak:?}");
    }
}
