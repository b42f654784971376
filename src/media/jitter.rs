//! An adaptive jitter buffer for one incoming RTP stream of one codec, for the legs the
//! media engine decodes (transcoding, mixing, recording), and [`JitterDecoder`], which puts
//! a codec behind it and gives one PCM frame per media tick.
//!
//! Owns: the packets waiting for their playout time (copied into a slot pool allocated
//! once, so nothing is allocated per packet), their order by sequence number, the playout
//! schedule, the delay estimate and the stream's counters. Must not: touch sockets, tokio
//! or a clock (the media task passes `now` in on each call; tests pass a fake one), parse
//! RTP (it takes a [`RtpView`]), or pick payload types (the caller sends only the codec's
//! packets here; telephone-events go to `dtmf`).
//!
//! Timing. Each packet's transit `D = arrival - ts / clock` is measured against the
//! first packet of the stream. The fastest recent packet (`D_min`) is the reference, and
//! a packet with timestamp `ts` is played `lag` after `ts / clock`, where the schedule
//! `lag` is fixed inside a talkspurt. The delay reported is `lag - D_min`: how long the
//! fastest packet waits.
//!
//! The target delay is the spread of `D` over the last [`WINDOW`] packets (`max - min`)
//! plus one tick (playout happens on 20 ms ticks, so a packet may wait up to one tick
//! more than planned), between `min_delay` and `max_delay`. It rises at once to a higher
//! spread and decays towards a lower one by 1/128 of the difference per packet (half-life
//! about 1.8 s at 50 packets/s). RFC 3550 A.8's estimator was not chosen for this: it is
//! a smoothed *mean* deviation (fine for RTCP, and reported in the stats for that), while
//! the delay must cover the *tail*: a buffer sized to the mean drops a good share of the
//! packets, and one spike moves A.8 by only 1/16 of its size. A window max is what a
//! percentile becomes at the sizes that matter here (no packet late), costs one scan of
//! 128 values per packet, and needs no sorting or allocation.
//!
//! The schedule follows the target without audible cuts: at a talkspurt start (marker
//! bit, a timestamp jump with contiguous sequence numbers, or the first packet after the
//! buffer ran dry) the schedule is set afresh to `D_min + target`, which lengthens or
//! shortens the silence before it. Inside a long talkspurt (no DTX: G.711 phones without
//! VAD never pause) a delay more than one packet over the target loses one packet at a
//! time, at most once a second, while the next is already here; a buffer that runs dry
//! waits (the decoder conceals) until the late packets come, which is how the delay
//! grows on a spike.
//!
//! Losses. A packet missing at its time is reported lost ([`Playout::Conceal`], with the
//! next packet when it is here, for Opus in-band FEC) only when a later packet is
//! already in the buffer; with nothing behind it the gap may be DTX or a late packet, so
//! it is reported as [`Quiet::Gap`] and counted nowhere; if a later sequence number comes
//! first, the skipped ones count as lost then. A packet that comes after its sequence
//! number was concealed is late (dropped, counted); one already played is a duplicate.

use std::time::{Duration, Instant};

use thiserror::Error;

use super::codec::{CodecError, Decoder};
use super::transcode::RtpView;

/// Packets whose transit the delay estimate remembers (2.56 s at 20 ms).
pub const WINDOW: usize = 128;
/// Sequence numbers behind the playout point still told apart as duplicate or late.
const HISTORY: u16 = 64;
/// Behind the playout point by more than this, a packet is taken for a restarted sender
/// once a second one follows it in sequence (RFC 3550 A.1's MAX_MISORDER).
const MAX_MISORDER: u16 = 100;
/// A forward jump in sequence numbers larger than this is a restart, not a loss (RFC 3550
/// A.1's MAX_DROPOUT).
const MAX_DROPOUT: u16 = 3000;
/// A transit change larger than this is a jump of the sender's clock, not jitter: the
/// delay estimate starts over instead of rising to the maximum.
const MAX_TRANSIT_JUMP_US: i64 = 5_000_000;
/// The target decays by 1/TARGET_DECAY of its excess over the measured need per packet.
const TARGET_DECAY: i64 = 128;
/// Ticks between two packets dropped to shrink the delay inside a talkspurt.
const SHRINK_EVERY_TICKS: u32 = 50;
/// The longest packet whose timestamp step is learnt as the packetization time (Opus'
/// longest); a longer step between consecutive sequence numbers is DTX.
const MAX_PTIME_US: i64 = 120_000;

/// Errors of the jitter buffer.
#[derive(Debug, Error)]
pub enum JitterError {
    #[error("jitter buffer config: {0}")]
    Config(&'static str),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// How a buffer is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// The stream's RTP clock rate (`CodecKind::clock_rate`).
    pub clock_rate: u32,
    /// How often the media task calls `pop` (the media clock: 20 ms).
    pub tick: Duration,
    /// The least delay the buffer plays with.
    pub min_delay: Duration,
    /// The most delay it grows to, however bad the jitter.
    pub max_delay: Duration,
    /// Packets it can hold (sequence numbers ahead of the playout point); must cover
    /// `max_delay` at the shortest packetization (10 ms) with room for reordering.
    pub slots: usize,
    /// The largest payload it keeps; a larger one is dropped.
    pub max_payload: usize,
}

impl JitterConfig {
    /// Defaults for a stream on `clock_rate`: 20 ms ticks, 20..200 ms delay, 32 slots,
    /// payloads up to 1500 bytes.
    pub fn new(clock_rate: u32) -> JitterConfig {
        JitterConfig {
            clock_rate,
            tick: Duration::from_millis(20),
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            slots: 32,
            max_payload: 1500,
        }
    }

    fn check(&self) -> Result<(), JitterError> {
        if self.clock_rate == 0 {
            return Err(JitterError::Config("clock rate is 0"));
        }
        if self.tick.is_zero() {
            return Err(JitterError::Config("tick is 0"));
        }
        if self.min_delay > self.max_delay {
            return Err(JitterError::Config("min_delay above max_delay"));
        }
        let need = (self.max_delay.as_millis() / 10) as usize + 2;
        if self.slots < need || self.slots > usize::from(MAX_MISORDER) {
            return Err(JitterError::Config(
                "slots must hold max_delay of 10 ms packets, and at most 100",
            ));
        }
        if self.max_payload == 0 {
            return Err(JitterError::Config("max_payload is 0"));
        }
        Ok(())
    }
}

/// What `push` did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Kept for playout.
    Stored,
    /// Already buffered or already played: dropped.
    Duplicate,
    /// Its time passed (it was concealed) or it is far behind: dropped.
    Late,
    /// Larger than `max_payload`: dropped.
    TooLarge,
}

/// Why `pop` has nothing for this tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quiet {
    /// Nothing played since the stream (re)started: waiting for the first packet's time.
    Buffering,
    /// The next packet is not here and nothing is behind it: silence (DTX), or a late
    /// packet. A decoder with concealment may conceal a few ticks of it.
    Gap,
    /// The next packet's time has not come (`pop` was called before the audio of the last
    /// packet ran out, as with 40 ms packets on 20 ms ticks).
    Waiting,
}

/// A packet due for playout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub seq: u16,
    pub ts: u32,
    /// The marker bit: this packet starts a talkspurt.
    pub marker: bool,
    pub payload: &'a [u8],
}

/// What to play on this tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Playout<'a> {
    /// Decode this.
    Packet(Frame<'a>),
    /// Packet `seq` is lost: conceal it. `next` is the following packet's payload when it
    /// is already here, so a codec with in-band FEC can rebuild the lost one from it.
    Conceal { seq: u16, next: Option<&'a [u8]> },
    /// Nothing to decode on this tick.
    Nothing(Quiet),
}

/// The stream's counters, for the relay's statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets pushed (all of them, dropped ones too).
    pub received: u64,
    /// Packets given out for decoding.
    pub played: u64,
    /// Sequence numbers concealed or skipped because their packet was not here in time.
    pub lost: u64,
    /// Packets that came after their sequence number was concealed (or far behind).
    pub late: u64,
    pub duplicates: u64,
    /// Packets dropped for other reasons: to shrink the delay, too large, flushed by a
    /// reset or a jump of the sequence numbers.
    pub discarded: u64,
    /// Times the stream started over (SSRC change, sequence restart).
    pub resets: u64,
    /// How long the fastest recent packet waits before it is played.
    pub current_delay: Duration,
    /// The delay the buffer aims for.
    pub target_delay: Duration,
    /// RFC 3550 A.8 interarrival jitter (for RTCP reports).
    pub jitter: Duration,
}

/// One packet's place in the pool.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    filled: bool,
    seq: u16,
    ts: u32,
    /// The timestamp unwrapped, relative to the stream's first packet.
    ext_ts: i64,
    marker: bool,
    len: usize,
}

/// A jitter buffer for one RTP stream (see the module comment).
pub struct JitterBuffer {
    cfg: JitterConfig,
    slots: Vec<Slot>,
    /// `slots.len() * max_payload` bytes; slot `i` owns `pool[i * max_payload..]`.
    pool: Vec<u8>,
    tick_us: i64,
    min_us: i64,
    max_us: i64,
    ssrc: Option<u32>,
    /// Set by the first packet of a stream: the origin of times and timestamps.
    epoch: Option<Instant>,
    /// The highest timestamp seen and its unwrapped value, to unwrap the next.
    ref_ts: u32,
    ref_ext: i64,
    /// The next sequence number to play.
    next_seq: u16,
    /// Packets in `slots`.
    buffered: usize,
    /// Whether anything was played or concealed since the stream started.
    started: bool,
    /// Bit `i` set: `next_seq - 1 - i` was played (else it was concealed or skipped).
    history: u64,
    /// The unwrapped timestamp of the last packet played or concealed.
    prev_ext: i64,
    /// The timestamp step of one packet, learnt from consecutive packets.
    ptime_ticks: i64,
    /// The schedule: a packet plays `lag` after its timestamp.
    lag_us: i64,
    /// Inside a talkspurt (the schedule holds); else the next packet sets it afresh.
    talking: bool,
    /// The last pushed packet's sequence number and unwrapped timestamp, to learn the
    /// packetization time from consecutive packets.
    last_push: Option<(u16, i64)>,
    transits: [i64; WINDOW],
    transit_len: usize,
    transit_pos: usize,
    d_min: i64,
    target_us: i64,
    /// RFC 3550 A.8 jitter, in microseconds, and the previous packet's transit.
    jitter_us: f64,
    prev_transit: Option<i64>,
    /// A sequence number far behind the playout point, whose successor would prove a
    /// restarted sender.
    bad_seq: Option<u16>,
    ticks_since_shrink: u32,
    stats: JitterStats,
}

impl JitterBuffer {
    pub fn new(cfg: JitterConfig) -> Result<JitterBuffer, JitterError> {
        cfg.check()?;
        let us = |d: Duration| d.as_micros().min(i64::MAX as u128) as i64;
        let tick_us = us(cfg.tick);
        let mut b = JitterBuffer {
            cfg,
            slots: vec![Slot::default(); cfg.slots],
            pool: vec![0; cfg.slots * cfg.max_payload],
            tick_us,
            min_us: us(cfg.min_delay),
            max_us: us(cfg.max_delay),
            ssrc: None,
            epoch: None,
            ref_ts: 0,
            ref_ext: 0,
            next_seq: 0,
            buffered: 0,
            started: false,
            history: 0,
            prev_ext: 0,
            ptime_ticks: 0,
            lag_us: 0,
            talking: false,
            last_push: None,
            transits: [0; WINDOW],
            transit_len: 0,
            transit_pos: 0,
            d_min: 0,
            target_us: 0,
            jitter_us: 0.0,
            prev_transit: None,
            bad_seq: None,
            ticks_since_shrink: 0,
            stats: JitterStats::default(),
        };
        b.restart();
        Ok(b)
    }

    pub fn config(&self) -> &JitterConfig {
        &self.cfg
    }

    /// The counters, with the delays as they are now.
    pub fn stats(&self) -> JitterStats {
        let dur = |us: i64| Duration::from_micros(us.max(0) as u64);
        JitterStats {
            current_delay: dur(if self.started {
                self.lag_us - self.d_min
            } else {
                0
            }),
            target_delay: dur(self.target_us),
            jitter: dur(self.jitter_us as i64),
            ..self.stats
        }
    }

    /// The packetization time learnt from the stream (the tick until it is known).
    pub fn ptime(&self) -> Duration {
        Duration::from_micros(self.ticks_to_us(self.ptime_ticks).max(0) as u64)
    }

    /// Takes a packet of the stream that arrived at `arrival`; its payload is copied.
    pub fn push(&mut self, arrival: Instant, rtp: RtpView<'_>) -> Pushed {
        self.stats.received += 1;
        if self.ssrc != Some(rtp.ssrc) {
            if self.ssrc.is_some() {
                self.stats.resets += 1;
            }
            self.restart();
            self.ssrc = Some(rtp.ssrc);
        }
        if rtp.payload.len() > self.cfg.max_payload {
            self.stats.discarded += 1;
            return Pushed::TooLarge;
        }
        let epoch = match self.epoch {
            Some(e) => e,
            None => {
                // The stream's first packet: the origin of times, sequence numbers and
                // timestamps.
                self.epoch = Some(arrival);
                self.next_seq = rtp.seq;
                self.ref_ts = rtp.ts;
                self.ref_ext = 0;
                arrival
            }
        };
        let ext_ts = self.unwrap_ts(rtp.ts);
        let arrival_us = micros(arrival.saturating_duration_since(epoch));
        // Late packets feed the delay estimate too (they are the ones that say it is too
        // short); duplicates do not: a copy made on the way says nothing of the jitter.
        let transit = arrival_us - self.ticks_to_us(ext_ts);
        self.learn_ptime(rtp.seq, ext_ts, rtp.marker);

        let ahead = rtp.seq.wrapping_sub(self.next_seq);
        if ahead >= 0x8000 {
            let behind = ahead.wrapping_neg();
            if !self.started && behind < self.cfg.slots as u16 - self.span() {
                // Reordered before anything played: this one comes first after all.
                self.next_seq = rtp.seq;
            } else if behind > MAX_MISORDER && self.bad_seq == Some(rtp.seq) {
                // Two in sequence far behind ours: the sender restarted its numbering.
                self.stats.resets += 1;
                self.resequence(rtp.seq);
            } else {
                let pushed = self.behind(behind, rtp.seq);
                if pushed == Pushed::Late {
                    self.measure(transit);
                }
                return pushed;
            }
        } else if usize::from(ahead) >= self.cfg.slots {
            // Too far ahead to hold: a long outage, or a sender that restarted its
            // numbering. The sequence starts over at this packet; the timing stays.
            if ahead < MAX_DROPOUT {
                self.stats.lost += u64::from(ahead);
            } else {
                self.stats.resets += 1;
            }
            self.resequence(rtp.seq);
        }
        self.bad_seq = None;
        let i = self.slot_of(rtp.seq);
        if self.slots[i].filled {
            // The only packet that maps here with `ahead < slots` is this sequence number.
            self.stats.duplicates += 1;
            return Pushed::Duplicate;
        }
        self.measure(transit);
        let at = i * self.cfg.max_payload;
        self.pool[at..at + rtp.payload.len()].copy_from_slice(rtp.payload);
        self.slots[i] = Slot {
            filled: true,
            seq: rtp.seq,
            ts: rtp.ts,
            ext_ts,
            marker: rtp.marker,
            len: rtp.payload.len(),
        };
        self.buffered += 1;
        Pushed::Stored
    }

    /// What to play on the tick at `now`: called once per tick, or whenever the consumer
    /// needs the next packet's audio.
    pub fn pop(&mut self, now: Instant) -> Playout<'_> {
        self.ticks_since_shrink = self.ticks_since_shrink.saturating_add(1);
        let Some(epoch) = self.epoch else {
            return Playout::Nothing(Quiet::Buffering);
        };
        let now_us = micros(now.saturating_duration_since(epoch));
        if self.talking {
            match self.playing(now_us, self.lag_us) {
                Step::Play(i) => return self.play(i),
                Step::Conceal => return self.conceal(),
                Step::Wait => return Playout::Nothing(Quiet::Waiting),
                Step::Idle => self.talking = false,
            }
        }
        self.idle(now_us)
    }

    /// Decides a tick inside a talkspurt.
    fn playing(&mut self, now_us: i64, lag: i64) -> Step {
        let expected = self.prev_ext + self.ptime_ticks;
        let i = self.slot_of(self.next_seq);
        if self.slots[i].filled {
            let slot = self.slots[i];
            if slot.marker || slot.ext_ts > expected {
                // A talkspurt starts: the schedule may change here unheard.
                return Step::Idle;
            }
            if !self.due(slot.ext_ts, lag, now_us) {
                return Step::Wait;
            }
            return Step::Play(self.maybe_shrink(i, lag));
        }
        if !self.due(expected, lag, now_us) {
            return Step::Wait;
        }
        if self.buffered > 0 {
            Step::Conceal
        } else {
            Step::Idle
        }
    }

    /// Between talkspurts (or before the first): plays the next packet here once
    /// `D_min + target` has passed since its timestamp, setting the schedule from it.
    fn idle(&mut self, now_us: i64) -> Playout<'_> {
        let quiet = if self.started {
            Quiet::Gap
        } else {
            Quiet::Buffering
        };
        let Some(skip) = (0..self.cfg.slots as u16)
            .find(|k| self.slots[self.slot_of(self.next_seq.wrapping_add(*k))].filled)
        else {
            return Playout::Nothing(quiet);
        };
        let i = self.slot_of(self.next_seq.wrapping_add(skip));
        let sent = self.ticks_to_us(self.slots[i].ext_ts);
        if !self.due(self.slots[i].ext_ts, self.d_min + self.target_us, now_us) {
            return Playout::Nothing(quiet);
        }
        if self.started {
            // Skipped in the silence: lost, but there is nothing left to conceal.
            self.stats.lost += u64::from(skip);
        }
        self.history = self.history.checked_shl(u32::from(skip)).unwrap_or(0);
        self.next_seq = self.next_seq.wrapping_add(skip);
        // The packet plays now: that is the schedule for the rest of the talkspurt.
        self.lag_us = now_us - sent;
        self.talking = true;
        self.ticks_since_shrink = 0;
        self.play(i)
    }

    /// Inside a long talkspurt with more delay than needed: drops the due packet at `i`
    /// when the next one is here to take its place; returns the slot to play.
    fn maybe_shrink(&mut self, i: usize, lag: i64) -> usize {
        let excess = lag - self.d_min - self.target_us;
        let step = self.ticks_to_us(self.ptime_ticks);
        if excess < step || self.ticks_since_shrink < SHRINK_EVERY_TICKS {
            return i;
        }
        let j = self.slot_of(self.next_seq.wrapping_add(1));
        let next = self.slots[j];
        if !next.filled || next.marker || next.ext_ts - self.slots[i].ext_ts != self.ptime_ticks {
            return i;
        }
        self.take(i);
        self.stats.discarded += 1;
        self.lag_us = lag - step;
        self.ticks_since_shrink = 0;
        j
    }

    /// Gives out the packet in slot `i` (the one of `next_seq`).
    fn play(&mut self, i: usize) -> Playout<'_> {
        let slot = self.slots[i];
        self.take(i);
        self.stats.played += 1;
        let at = i * self.cfg.max_payload;
        Playout::Packet(Frame {
            seq: slot.seq,
            ts: slot.ts,
            marker: slot.marker,
            payload: &self.pool[at..at + slot.len],
        })
    }

    /// Reports `next_seq` lost.
    fn conceal(&mut self) -> Playout<'_> {
        let seq = self.next_seq;
        self.stats.lost += 1;
        self.history <<= 1;
        self.next_seq = seq.wrapping_add(1);
        self.prev_ext += self.ptime_ticks;
        self.started = true;
        let j = self.slot_of(self.next_seq);
        let next = self.slots[j];
        // Any packet in this slot is the next sequence number (the pool holds one window).
        let next = next.filled.then(|| {
            let at = j * self.cfg.max_payload;
            &self.pool[at..at + next.len]
        });
        Playout::Conceal { seq, next }
    }

    /// Empties slot `i` (holding `next_seq`) and moves the playout point past it.
    fn take(&mut self, i: usize) {
        let slot = self.slots[i];
        self.slots[i].filled = false;
        self.buffered -= 1;
        self.history = (self.history << 1) | 1;
        self.next_seq = slot.seq.wrapping_add(1);
        self.prev_ext = slot.ext_ts;
        self.started = true;
    }

    /// A packet `behind` sequence numbers before the playout point: a duplicate of one
    /// played, or late.
    fn behind(&mut self, behind: u16, seq: u16) -> Pushed {
        if behind <= HISTORY && (self.history >> (behind - 1)) & 1 == 1 {
            self.stats.duplicates += 1;
            return Pushed::Duplicate;
        }
        if behind > MAX_MISORDER {
            // Far behind: late, unless its successor follows (see `push`).
            self.bad_seq = Some(seq.wrapping_add(1));
        }
        self.stats.late += 1;
        Pushed::Late
    }

    /// Starts the sequence over at `seq`, dropping what is buffered.
    fn resequence(&mut self, seq: u16) {
        self.flush();
        self.next_seq = seq;
        self.history = 0;
        self.talking = false;
        self.bad_seq = None;
    }

    /// Learns the packetization time from two consecutive packets; a marker or a step
    /// longer than any packet is a talkspurt start, not a packet's length.
    fn learn_ptime(&mut self, seq: u16, ext_ts: i64, marker: bool) {
        if let Some((prev_seq, prev_ext)) = self.last_push {
            let step = ext_ts - prev_ext;
            if seq == prev_seq.wrapping_add(1)
                && !marker
                && step > 0
                && self.ticks_to_us(step) <= MAX_PTIME_US
            {
                self.ptime_ticks = step;
            }
        }
        self.last_push = Some((seq, ext_ts));
    }

    /// Whether audio with timestamp `ext_ts` starts before the end of this tick.
    fn due(&self, ext_ts: i64, lag: i64, now_us: i64) -> bool {
        self.ticks_to_us(ext_ts) + lag < now_us + self.tick_us
    }

    /// Feeds one packet's transit (arrival minus timestamp, in microseconds) to the delay
    /// estimate and the RFC 3550 jitter.
    fn measure(&mut self, transit: i64) {
        if let Some(prev) = self.prev_transit {
            let d = (transit - prev).abs();
            if d > MAX_TRANSIT_JUMP_US {
                // The sender's clock jumped: what came before says nothing of this.
                self.transit_len = 0;
                self.transit_pos = 0;
            } else {
                self.jitter_us += (d as f64 - self.jitter_us) / 16.0;
            }
        }
        self.prev_transit = Some(transit);
        self.transits[self.transit_pos] = transit;
        self.transit_pos = (self.transit_pos + 1) % WINDOW;
        self.transit_len = (self.transit_len + 1).min(WINDOW);
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        for &d in &self.transits[..self.transit_len] {
            lo = lo.min(d);
            hi = hi.max(d);
        }
        self.d_min = lo;
        let need = (hi - lo + self.tick_us).clamp(self.min_us, self.max_us);
        if need >= self.target_us {
            self.target_us = need;
        } else {
            let excess = self.target_us - need;
            self.target_us -= if excess < 1000 {
                excess
            } else {
                excess / TARGET_DECAY
            };
        }
    }

    /// Forgets the stream (not the counters).
    fn restart(&mut self) {
        self.flush();
        self.epoch = None;
        self.ssrc = None;
        self.started = false;
        self.history = 0;
        self.prev_ext = 0;
        self.ptime_ticks = self.us_to_ticks(self.tick_us);
        self.lag_us = 0;
        self.talking = false;
        self.last_push = None;
        self.transit_len = 0;
        self.transit_pos = 0;
        self.d_min = 0;
        self.target_us = self.tick_us.clamp(self.min_us, self.max_us);
        self.jitter_us = 0.0;
        self.prev_transit = None;
        self.bad_seq = None;
    }

    /// Drops every buffered packet.
    fn flush(&mut self) {
        for s in &mut self.slots {
            if s.filled {
                s.filled = false;
                self.stats.discarded += 1;
            }
        }
        self.buffered = 0;
    }

    /// Sequence numbers from `next_seq` to the last buffered one.
    fn span(&self) -> u16 {
        (0..self.cfg.slots as u16)
            .rev()
            .find(|k| self.slots[self.slot_of(self.next_seq.wrapping_add(*k))].filled)
            .map_or(0, |k| k + 1)
    }

    fn slot_of(&self, seq: u16) -> usize {
        usize::from(seq) % self.cfg.slots
    }

    fn unwrap_ts(&mut self, ts: u32) -> i64 {
        let ext = self.ref_ext + i64::from(ts.wrapping_sub(self.ref_ts) as i32);
        if ext > self.ref_ext {
            self.ref_ext = ext;
            self.ref_ts = ts;
        }
        ext
    }

    fn ticks_to_us(&self, ticks: i64) -> i64 {
        ticks * 1_000_000 / i64::from(self.cfg.clock_rate)
    }

    fn us_to_ticks(&self, us: i64) -> i64 {
        us * i64::from(self.cfg.clock_rate) / 1_000_000
    }
}

/// What `playing` decided.
enum Step {
    Play(usize),
    Conceal,
    Wait,
    Idle,
}

fn micros(d: Duration) -> i64 {
    d.as_micros().min(i64::MAX as u128) as i64
}

/// Decoded audio of one packet at most (120 ms at 48 kHz, Opus' longest).
const DECODE_MAX: usize = 5760;
/// Ticks of a gap (DTX or a late packet) the codec's concealment fills before silence:
/// libopus' PLC has faded out by then, and concealing seconds of DTX wastes CPU.
const MAX_GAP_CONCEAL: u32 = 5;

/// Where a tick's audio came from (the last of it, when a tick spans two packets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A packet, decoded.
    Decoded,
    /// A lost packet rebuilt from the next one's in-band FEC.
    Recovered,
    /// The codec's loss concealment (a lost packet, or the start of a gap).
    Concealed,
    /// Zeros: before the first packet, in a long gap, or a loss on a codec without
    /// concealment (G.711, G.722).
    Silence,
}

/// One tick of audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick<'a> {
    /// One tick of PCM at the decoder's rate.
    pub pcm: &'a [i16],
    pub source: Source,
}

/// A decoder behind a jitter buffer: packets in as they arrive, one PCM frame out per
/// tick, for the transcoder and the mixer.
pub struct JitterDecoder {
    buffer: JitterBuffer,
    decoder: Box<dyn Decoder>,
    /// Samples per tick at the decoder's rate.
    frame: usize,
    /// Decoded audio not given out yet (a packet longer than a tick leaves some).
    fifo: Vec<i16>,
    scratch: Vec<i16>,
    out: Vec<i16>,
    /// Ticks since the last real audio (decoded or rebuilt).
    gap_ticks: u32,
    /// Where the audio last put in `fifo` came from.
    last_source: Source,
    decode_errors: u64,
}

impl JitterDecoder {
    pub fn new(decoder: Box<dyn Decoder>, cfg: JitterConfig) -> Result<JitterDecoder, JitterError> {
        let buffer = JitterBuffer::new(cfg)?;
        let frame = (u128::from(decoder.pcm_rate()) * cfg.tick.as_micros() / 1_000_000) as usize;
        if frame == 0 || frame > DECODE_MAX {
            return Err(JitterError::Config(
                "a tick must be 1 sample to 120 ms of the codec's PCM",
            ));
        }
        Ok(JitterDecoder {
            buffer,
            decoder,
            frame,
            fifo: Vec::with_capacity(DECODE_MAX + frame),
            scratch: vec![0; DECODE_MAX],
            out: vec![0; frame],
            gap_ticks: MAX_GAP_CONCEAL,
            last_source: Source::Silence,
            decode_errors: 0,
        })
    }

    /// Takes a packet of the stream (see [`JitterBuffer::push`]).
    pub fn push(&mut self, arrival: Instant, rtp: RtpView<'_>) -> Pushed {
        self.buffer.push(arrival, rtp)
    }

    pub fn stats(&self) -> JitterStats {
        self.buffer.stats()
    }

    /// Payloads the codec refused (each was concealed as a loss).
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }

    /// The rate of the PCM it gives.
    pub fn pcm_rate(&self) -> u32 {
        self.decoder.pcm_rate()
    }

    /// The audio of the tick at `now`.
    pub fn tick(&mut self, now: Instant) -> Tick<'_> {
        while self.fifo.len() < self.frame {
            let need = self.frame - self.fifo.len();
            // A lost packet is as long as the one after it, else as the stream's packets.
            let ptime = self.buffer.ptime();
            let lost_len =
                (u128::from(self.decoder.pcm_rate()) * ptime.as_micros() / 1_000_000) as usize;
            let (n, got) = match self.buffer.pop(now) {
                Playout::Packet(f) => match self.decoder.decode(f.payload, &mut self.scratch) {
                    Ok(n) => (n, Source::Decoded),
                    Err(_) => {
                        // A payload the codec refuses is a lost packet.
                        self.decode_errors += 1;
                        let len = self.decoder.samples_in(f.payload).unwrap_or(lost_len);
                        conceal(&mut *self.decoder, None, &mut self.scratch, len)
                    }
                },
                Playout::Conceal { next, .. } => {
                    let len = next
                        .and_then(|p| self.decoder.samples_in(p))
                        .unwrap_or(lost_len);
                    conceal(&mut *self.decoder, next, &mut self.scratch, len)
                }
                Playout::Nothing(quiet) => {
                    let may_conceal = quiet != Quiet::Buffering && self.gap_ticks < MAX_GAP_CONCEAL;
                    let got = if may_conceal {
                        conceal(&mut *self.decoder, None, &mut self.scratch, need)
                    } else {
                        (0, Source::Silence)
                    };
                    let (n, got) = match got {
                        (n, Source::Concealed) => (n, Source::Concealed),
                        _ => {
                            self.scratch[..need].fill(0);
                            (need, Source::Silence)
                        }
                    };
                    self.fifo.extend_from_slice(&self.scratch[..n.min(need)]);
                    self.last_source = got;
                    self.gap_ticks = self.gap_ticks.saturating_add(1);
                    break;
                }
            };
            self.fifo
                .extend_from_slice(&self.scratch[..n.min(DECODE_MAX)]);
            self.last_source = got;
            self.gap_ticks = match got {
                Source::Decoded | Source::Recovered => 0,
                _ => self.gap_ticks,
            };
        }
        let frame = self.frame;
        if self.fifo.len() < frame {
            // Concealment shorter than asked: the rest is silence.
            self.fifo.resize(frame, 0);
        }
        self.out.copy_from_slice(&self.fifo[..frame]);
        self.fifo.drain(..frame);
        Tick {
            pcm: &self.out,
            source: self.last_source,
        }
    }
}

/// Fills `scratch[..len]` for a lost packet: from `next`'s FEC, else the codec's
/// concealment, else silence.
fn conceal(
    decoder: &mut dyn Decoder,
    next: Option<&[u8]>,
    scratch: &mut [i16],
    len: usize,
) -> (usize, Source) {
    let len = len.clamp(1, scratch.len());
    let out = &mut scratch[..len];
    if let Some(next) = next {
        if let Ok(Some(n)) = decoder.recover(next, out) {
            return (n, Source::Recovered);
        }
    }
    if let Ok(Some(n)) = decoder.conceal(out) {
        return (n, Source::Concealed);
    }
    out.fill(0);
    (len, Source::Silence)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::{self, CodecKind, CodecParams};
    use crate::media::test_signal::{rms, tone};

    const MS: u64 = 1000;

    /// One packet's arrival: at `at` microseconds after the start of the test.
    #[derive(Debug, Clone, Copy)]
    struct Arrival {
        at: u64,
        seq: u16,
        ts: u32,
        marker: bool,
        ssrc: u32,
    }

    /// What a tick gave, with sequence numbers only (payloads are checked in `run`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Out {
        Play(u16),
        Conceal(u16, bool),
        Quiet(Quiet),
    }

    /// `n` packets of 20 ms at 8 kHz from `seq0`/`ts0`, each arriving 1 ms after it was
    /// sent plus `late(k)` ms.
    fn stream(n: usize, seq0: u16, ts0: u32, late: impl Fn(usize) -> u64) -> Vec<Arrival> {
        (0..n)
            .map(|k| Arrival {
                at: (20 * k as u64 + 1 + late(k)) * MS,
                seq: seq0.wrapping_add(k as u16),
                ts: ts0.wrapping_add(160 * k as u32),
                marker: k == 0,
                ssrc: 7,
            })
            .collect()
    }

    fn payload(seq: u16) -> [u8; 2] {
        seq.to_be_bytes()
    }

    fn config(min_ms: u64) -> JitterConfig {
        JitterConfig {
            min_delay: Duration::from_millis(min_ms),
            ..JitterConfig::new(8000)
        }
    }

    /// Ticks at 10 ms + 20 ms * k from `t0`, pushing each arrival due by then first.
    fn run(b: &mut JitterBuffer, t0: Instant, arrivals: &[Arrival], ticks: usize) -> Vec<Out> {
        let mut arrivals = arrivals.to_vec();
        arrivals.sort_by_key(|a| a.at);
        let mut next = 0;
        let mut outs = Vec::new();
        for k in 0..ticks {
            let now = t0 + Duration::from_micros((10 + 20 * k as u64) * MS);
            while let Some(a) = arrivals
                .get(next)
                .filter(|a| t0 + Duration::from_micros(a.at) <= now)
            {
                let p = payload(a.seq);
                let rtp = RtpView {
                    marker: a.marker,
                    pt: 0,
                    seq: a.seq,
                    ts: a.ts,
                    ssrc: a.ssrc,
                    payload: &p,
                };
                b.push(t0 + Duration::from_micros(a.at), rtp);
                next += 1;
            }
            outs.push(match b.pop(now) {
                Playout::Packet(f) => {
                    assert_eq!(f.payload, payload(f.seq), "the payload of {}", f.seq);
                    Out::Play(f.seq)
                }
                Playout::Conceal { seq, next } => {
                    if let Some(p) = next {
                        assert_eq!(p, payload(seq.wrapping_add(1)), "FEC from the next");
                    }
                    Out::Conceal(seq, next.is_some())
                }
                Playout::Nothing(q) => Out::Quiet(q),
            });
        }
        outs
    }

    fn played(outs: &[Out]) -> Vec<u16> {
        outs.iter()
            .filter_map(|o| match o {
                Out::Play(s) => Some(*s),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_steady_stream_plays_at_the_minimum_delay() {
        let mut b = JitterBuffer::new(config(20)).expect("buffer");
        let outs = run(&mut b, Instant::now(), &stream(200, 100, 5000, |_| 0), 200);
        let want: Vec<Out> = (0..200).map(|k| Out::Play(100 + k)).collect();
        assert_eq!(outs, want, "each packet on the first tick after it came");
        let s = b.stats();
        assert_eq!(s.target_delay, Duration::from_millis(20));
        assert!(s.current_delay <= Duration::from_millis(20), "{s:?}");
        assert_eq!((s.received, s.played, s.lost, s.late), (200, 200, 0, 0));
    }

    #[test]
    fn reordered_packets_come_out_in_order() {
        // Transit varies 0..90 ms, so packets overtake each other up to four places.
        let arrivals = stream(300, 0, 0, |k| (k as u64 * 37) % 90);
        assert!(
            arrivals.windows(2).any(|w| w[1].at < w[0].at),
            "some reordering"
        );
        // With a floor above the spread nothing is lost.
        let mut b = JitterBuffer::new(config(110)).expect("buffer");
        let outs = run(&mut b, Instant::now(), &arrivals, 320);
        assert_eq!(played(&outs), (0..300).collect::<Vec<u16>>());
        let s = b.stats();
        assert_eq!((s.lost, s.late, s.duplicates), (0, 0, 0), "{s:?}");

        // From the 20 ms floor the delay has to learn the spread first: the first
        // packets held up more than any before them are lost, then none.
        let mut b = JitterBuffer::new(config(20)).expect("buffer");
        let outs = run(&mut b, Instant::now(), &arrivals, 320);
        let played = played(&outs);
        assert!(
            played.windows(2).all(|w| w[0] < w[1]),
            "in order: {played:?}"
        );
        let tail = played.len() - 290;
        assert_eq!(played[tail..], (10..300).collect::<Vec<u16>>()[..]);
        let s = b.stats();
        assert!(s.lost <= 5 && s.late <= 5, "{s:?}");
        assert!(s.target_delay >= Duration::from_millis(100), "{s:?}");
        assert!(s.jitter > Duration::ZERO);
    }

    #[test]
    fn a_lost_packet_is_concealed_once_and_the_timing_holds() {
        // 40 ms of delay: the packet after the lost one is here in time for FEC.
        let mut arrivals = stream(50, 0, 0, |_| 0);
        arrivals.remove(20);
        let mut b = JitterBuffer::new(config(40)).expect("buffer");
        let outs = run(&mut b, Instant::now(), &arrivals, 52);
        assert_eq!(outs[0], Out::Quiet(Quiet::Buffering));
        for k in 0..50u16 {
            let want = if k == 20 {
                Out::Conceal(20, true)
            } else {
                Out::Play(k)
            };
            assert_eq!(outs[1 + usize::from(k)], want, "tick {}", 1 + k);
        }
        assert_eq!(b.stats().lost, 1);

        // At 20 ms the next one is not here yet: a gap, then the next on its own tick.
        let mut b = JitterBuffer::new(config(20)).expect("buffer");
        let outs = run(&mut b, Instant::now(), &arrivals, 50);
        assert_eq!(outs[20], Out::Quiet(Quiet::Gap));
        assert_eq!(outs[21], Out::Play(21));
        assert_eq!(played(&outs).len(), 49);
        assert_eq!(b.stats().lost, 1);
    }

    #[test]
    fn duplicates_and_late_packets_are_dropped_and_counted() {
        let mut arrivals = stream(40, 0, 0, |_| 0);
        // Packet 5 twice while buffered, once more long after; 20 comes after its time.
        let mut dup = arrivals[5];
        dup.at += 100;
        arrivals.push(dup);
        dup.at += 200 * MS;
        arrivals.push(dup);
        arrivals[20].at += 60 * MS;
        // A stray from far behind.
        let mut stray = arrivals[30];
        stray.seq = stray.seq.wrapping_sub(1000);
        arrivals.push(stray);
        let mut b = JitterBuffer::new(config(40)).expect("buffer");
        let outs = run(&mut b, Instant::now(), &arrivals, 45);
        assert!(outs.contains(&Out::Conceal(20, true)));
        let want: Vec<u16> = (0..40).filter(|k| *k != 20).collect();
        assert_eq!(played(&outs), want);
        let s = b.stats();
        assert_eq!(
            (s.received, s.duplicates, s.late, s.lost),
            (43, 2, 2, 1),
            "{s:?}"
        );
        // The packet 60 ms late raised the target; the copy 200 ms late did not.
        assert!(s.target_delay >= Duration::from_millis(60), "{s:?}");
        assert!(s.target_delay < Duration::from_millis(100), "{s:?}");
    }

    #[test]
    fn a_jitter_spike_raises_the_delay_which_decays_afterwards() {
        // 30 s of packets; 100..=104 are held up and come in one burst with 105.
        let n = 1500;
        let arrivals = stream(n, 0, 0, |k| match k {
            100..=104 => (105 - k as u64) * 20,
            _ => 0,
        });
        let t0 = Instant::now();
        let mut b = JitterBuffer::new(config(20)).expect("buffer");
        let outs = run(&mut b, t0, &arrivals, 110);
        let s = b.stats();
        assert!(s.target_delay >= Duration::from_millis(100), "{s:?}");
        assert!(s.current_delay >= Duration::from_millis(80), "{s:?}");
        assert_eq!(
            (s.lost, s.late),
            (0, 0),
            "the spike is waited out, not lost"
        );
        assert!(outs[100..105].iter().all(|o| *o == Out::Quiet(Quiet::Gap)));

        let mut b = JitterBuffer::new(config(20)).expect("buffer");
        let outs = run(&mut b, t0, &arrivals, n + 10);
        let s = b.stats();
        assert_eq!(s.target_delay, Duration::from_millis(20), "{s:?}");
        assert!(s.current_delay < Duration::from_millis(40), "{s:?}");
        let played = played(&outs);
        assert!(played.windows(2).all(|w| w[0] < w[1]), "in order");
        assert_eq!(played.len() as u64 + s.discarded, n as u64, "{s:?}");
        assert!(
            s.discarded >= 3,
            "the delay came down a packet at a time: {s:?}"
        );
        assert_eq!((s.lost, s.late), (0, 0));
    }

    #[test]
    fn sequence_numbers_and_timestamps_wrap() {
        let mut arrivals = stream(30, 65530, u32::MAX - 800, |_| 0);
        arrivals.remove(6); // seq 0
        let mut b = JitterBuffer::new(config(40)).expect("buffer");
        let outs = run(&mut b, Instant::now(), &arrivals, 32);
        assert!(outs.contains(&Out::Conceal(0, true)), "{outs:?}");
        let want: Vec<u16> = (0..30u16)
            .map(|k| 65530u16.wrapping_add(k))
            .filter(|s| *s != 0)
            .collect();
        assert_eq!(played(&outs), want);
        assert_eq!(b.stats().lost, 1);
    }

    #[test]
    fn a_dtx_pause_is_no_loss() {
        // 10 packets, 1 s of silence (timestamps jump, sequence numbers do not), 10 more;
        // no marker bit, to show the timestamp alone tells.
        let mut arrivals = stream(10, 0, 0, |_| 0);
        for mut a in stream(10, 10, 160 * 10 + 8000, |_| 0) {
            a.at += 1200 * MS;
            a.marker = false;
            arrivals.push(a);
        }
        let mut b = JitterBuffer::new(config(20)).expect("buffer");
        let outs = run(&mut b, Instant::now(), &arrivals, 80);
        assert_eq!(played(&outs), (0..20).collect::<Vec<u16>>());
        assert!(!outs.iter().any(|o| matches!(o, Out::Conceal(..))));
        assert!(outs[10..60].iter().all(|o| *o == Out::Quiet(Quiet::Gap)));
        let s = b.stats();
        assert_eq!((s.lost, s.late), (0, 0));
        assert!(s.current_delay <= Duration::from_millis(20), "{s:?}");
    }

    #[test]
    fn a_new_ssrc_starts_over() {
        let mut arrivals = stream(20, 0, 0, |_| 0);
        // The new sender starts after the old one's last packet, while two of them are
        // still buffered.
        for mut a in stream(20, 5000, 777, |_| 0) {
            a.at += 400 * MS;
            a.ssrc = 8;
            arrivals.push(a);
        }
        let mut b = JitterBuffer::new(config(60)).expect("buffer");
        let outs = run(&mut b, Instant::now(), &arrivals, 40);
        let played = played(&outs);
        assert_eq!(
            played[..18],
            (0..18).collect::<Vec<u16>>()[..],
            "{played:?}"
        );
        let rest = played.len() - 18;
        assert_eq!(played[18..], (5000..5020).collect::<Vec<u16>>()[..rest]);
        let first_new = outs
            .iter()
            .position(|o| *o == Out::Play(5000))
            .expect("B plays");
        assert_eq!(outs[first_new - 1], Out::Quiet(Quiet::Buffering));
        let s = b.stats();
        assert_eq!((s.resets, s.discarded), (1, 2), "18 and 19 flushed: {s:?}");
        assert_eq!((s.lost, s.late), (0, 0), "{s:?}");
    }

    #[test]
    fn bad_configs_are_refused() {
        let ok = JitterConfig::new(8000);
        assert!(JitterBuffer::new(ok).is_ok());
        for bad in [
            JitterConfig {
                clock_rate: 0,
                ..ok
            },
            JitterConfig {
                tick: Duration::ZERO,
                ..ok
            },
            JitterConfig {
                min_delay: Duration::from_millis(300),
                ..ok
            },
            JitterConfig { slots: 8, ..ok },
        ] {
            assert!(JitterBuffer::new(bad).is_err(), "{bad:?}");
        }
        let mut b = JitterBuffer::new(JitterConfig {
            max_payload: 4,
            ..ok
        })
        .expect("b");
        let rtp = RtpView {
            marker: false,
            pt: 0,
            seq: 1,
            ts: 1,
            ssrc: 1,
            payload: &[0; 5],
        };
        assert_eq!(b.push(Instant::now(), rtp), Pushed::TooLarge);
    }

    /// Encodes `pcm` in 20 ms payloads.
    fn encode(kind: CodecKind, rate: u32, params: CodecParams, pcm: &[i16]) -> Vec<Vec<u8>> {
        let mut enc = codec::encoder(kind, rate, params).expect("encoder");
        pcm.chunks_exact(rate as usize / 50)
            .map(|c| {
                let mut p = [0u8; 1500];
                let n = enc.encode(c, &mut p).expect("encode");
                p[..n].to_vec()
            })
            .collect()
    }

    /// Feeds `payloads` (but `lost`) to `d`, one every 20 ms, and ticks it; returns
    /// every tick's audio and source.
    fn play_through(
        d: &mut JitterDecoder,
        kind: CodecKind,
        payloads: &[Vec<u8>],
        lost: usize,
    ) -> Vec<(Vec<i16>, Source)> {
        let t0 = Instant::now();
        let step = kind.clock_rate() / 50;
        let mut ticks = Vec::new();
        for k in 0..payloads.len() + 3 {
            if let Some(p) = payloads.get(k).filter(|_| k != lost) {
                let rtp = RtpView {
                    marker: k == 0,
                    pt: 0,
                    seq: k as u16,
                    ts: step * k as u32,
                    ssrc: 3,
                    payload: p,
                };
                d.push(t0 + Duration::from_millis(20 * k as u64 + 1), rtp);
            }
            let t = d.tick(t0 + Duration::from_millis(20 * k as u64 + 10));
            ticks.push((t.pcm.to_vec(), t.source));
        }
        ticks
    }

    #[test]
    fn opus_rebuilds_a_lost_packet_from_fec() {
        let rate = 16000;
        let params = CodecParams {
            expected_loss_percent: 20,
            bitrate: 32000,
            ..CodecParams::default()
        };
        let payloads = encode(
            CodecKind::Opus,
            rate,
            params,
            &tone(rate, 300.0, 16000, 8000.0),
        );
        // What the lost packet would have sounded like.
        let mut reference = codec::decoder(CodecKind::Opus, rate).expect("decoder");
        let mut real = vec![0i16; 320];
        for p in &payloads[..=20] {
            reference.decode(p, &mut real).expect("decode");
        }
        let dec = codec::decoder(CodecKind::Opus, rate).expect("decoder");
        let mut d = JitterDecoder::new(dec, config(40).with_clock(48000)).expect("jd");
        let ticks = play_through(&mut d, CodecKind::Opus, &payloads, 20);
        let first = ticks
            .iter()
            .position(|t| t.1 == Source::Decoded)
            .expect("audio");
        let (pcm, source) = &ticks[first + 20];
        assert_eq!(*source, Source::Recovered);
        assert_eq!(pcm.len(), 320);
        let ratio = rms(pcm) / rms(&real);
        assert!(
            (0.5..2.0).contains(&ratio),
            "rebuilt/real energy {ratio:.2}"
        );
        assert!(ticks[first..first + 50]
            .iter()
            .enumerate()
            .all(|(i, t)| i == 20 || t.1 == Source::Decoded));
        assert_eq!(d.stats().lost, 1);
    }

    #[test]
    fn pcmu_has_silence_for_a_loss() {
        let payloads = encode(
            CodecKind::Pcmu,
            8000,
            CodecParams::default(),
            &tone(8000, 400.0, 8000, 8000.0),
        );
        let dec = codec::decoder(CodecKind::Pcmu, 8000).expect("decoder");
        let mut d = JitterDecoder::new(dec, config(40)).expect("jd");
        let ticks = play_through(&mut d, CodecKind::Pcmu, &payloads, 20);
        let first = ticks
            .iter()
            .position(|t| t.1 == Source::Decoded)
            .expect("audio");
        let (pcm, source) = &ticks[first + 20];
        assert_eq!(*source, Source::Silence);
        assert!(pcm.len() == 160 && pcm.iter().all(|s| *s == 0));
        assert!(rms(&ticks[first + 19].0) > 1000.0 && rms(&ticks[first + 21].0) > 1000.0);
        assert_eq!(ticks[0].1, Source::Silence, "buffering is silence");
    }

    #[test]
    fn packets_longer_than_a_tick_are_spread_over_ticks() {
        // 60 ms Opus packets on 20 ms ticks: three ticks of audio each, no gaps.
        let rate = 8000;
        let pcm = tone(rate, 300.0, 8000, 8000.0);
        let mut enc = codec::encoder(CodecKind::Opus, rate, CodecParams::default()).expect("e");
        let dec = codec::decoder(CodecKind::Opus, rate).expect("decoder");
        let mut d = JitterDecoder::new(dec, config(20).with_clock(48000)).expect("jd");
        let t0 = Instant::now();
        let mut sources = Vec::new();
        for (k, chunk) in pcm.chunks_exact(480).enumerate() {
            let mut p = [0u8; 1500];
            let n = enc.encode(chunk, &mut p).expect("encode");
            let rtp = RtpView {
                marker: k == 0,
                pt: 111,
                seq: k as u16,
                ts: 2880 * k as u32,
                ssrc: 3,
                payload: &p[..n],
            };
            d.push(t0 + Duration::from_millis(60 * k as u64 + 1), rtp);
            for j in 0..3 {
                let now = t0 + Duration::from_millis(60 * k as u64 + 20 * j + 10);
                let t = d.tick(now);
                assert_eq!(t.pcm.len(), 160);
                sources.push(t.source);
            }
        }
        assert!(sources.iter().all(|s| *s == Source::Decoded), "{sources:?}");
        assert_eq!(d.buffer.ptime(), Duration::from_millis(60));
    }

    #[test]
    fn nothing_is_allocated_per_packet() {
        let payloads = encode(
            CodecKind::Pcmu,
            8000,
            CodecParams::default(),
            &tone(8000, 400.0, 8000 * 4, 8000.0),
        );
        let dec = codec::decoder(CodecKind::Pcmu, 8000).expect("decoder");
        let mut d = JitterDecoder::new(dec, config(20)).expect("jd");
        // Where every buffer lives and how big it is: unchanged = nothing reallocated.
        let buffers = |d: &JitterDecoder| {
            (
                d.buffer.pool.as_ptr(),
                d.buffer.pool.capacity(),
                d.buffer.slots.as_ptr(),
                d.buffer.slots.capacity(),
                d.fifo.as_ptr(),
                d.fifo.capacity(),
                d.scratch.as_ptr(),
                d.out.as_ptr(),
            )
        };
        let before = buffers(&d);
        let t0 = Instant::now();
        let step = 160u32;
        for k in 0..payloads.len() {
            // Neighbours swapped, a loss every 37th, a duplicate every 11th.
            let seq = k ^ 1;
            let now = t0 + Duration::from_millis(20 * k as u64 + 10);
            if let Some(payload) = payloads.get(seq).filter(|_| seq % 37 != 5) {
                let rtp = RtpView {
                    marker: false,
                    pt: 0,
                    seq: seq as u16,
                    ts: step * seq as u32,
                    ssrc: 3,
                    payload,
                };
                d.push(now, rtp);
                if seq % 11 == 0 {
                    d.push(now, rtp);
                }
            }
            d.tick(now);
        }
        let after = buffers(&d);
        assert_eq!(before, after);
        let s = d.stats();
        assert!(s.played > 150 && s.lost > 0 && s.duplicates > 0, "{s:?}");
    }

    impl JitterConfig {
        fn with_clock(self, clock_rate: u32) -> JitterConfig {
            JitterConfig { clock_rate, ..self }
        }
    }
}
