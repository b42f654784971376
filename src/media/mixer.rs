//! The conference mixer: every participant hears the loudest talkers but not itself, on
//! 20 ms ticks, sans-IO (frames in, frames out; no sockets, no clock: the caller ticks).
//!
//! Owns: the participants' per-tick frames, voice activity (energy with hangover), the
//! choice of the K loudest talkers, the mix and its soft limit, mute/deaf, the join and
//! leave tones, the frame counter, the resamplers between a participant's rate and the
//! mixer's, and (in [`Participant`] / [`SharedEncoders`]) a helper that runs each
//! participant's codec pair and encodes the shared mix once per codec. Must not: touch
//! RTP, sockets, timers or jitter buffers (the conference task feeds one decoded frame
//! per participant per tick, or none when nothing arrived).
//!
//! Cost grows with talkers, not N²: only the K selected talkers are summed, only they get
//! a personal mix (the sum minus their own frame, done at the mixer rate before the
//! limit, so their own voice cancels exactly), and everyone else hears one shared mix,
//! resampled once per rate and encoded once per codec ([`SharedEncoders`]). The O(N)
//! part left is the energy of each incoming frame, and the decoding and the packet copy
//! the caller does anyway.
//!
//! The mixer rate is 16 kHz by default: wideband, so G.722 and Opus phones keep their
//! bandwidth; Opus decodes and encodes at 16 kHz itself and G.722 is native, so only
//! G.711 legs are resampled, and of those only the talkers and one shared stream per tick
//! (the energy is measured at the participant's own rate). 48 kHz would triple the mixing
//! and resampling work and buffer sizes for a band no telephone path carries; 8 kHz
//! would make every wideband phone narrowband. [`MixerConfig::rate`] takes any of the
//! three.
//!
//! A resampler is only run while its participant needs it, so its state goes stale
//! between talkspurts; on the tick it is needed again it is first fed the frame before
//! (the previous input, or the shared mix the participant heard), so the overlap it
//! carries matches the signal and the switch does not click.

use std::f64::consts::TAU;

use thiserror::Error;

use super::codec::{self, CodecError, CodecKind, CodecParams, Decoder, Encoder};
use super::resample::{FrameResampler, ResampleError};

/// The tick: every frame in and out is this long.
pub const FRAME_MS: u32 = 20;
/// The rates the mixer and its participants may run at.
pub const RATES: [u32; 3] = [8000, 16000, 48000];
/// The largest frame (20 ms at 48 kHz).
const MAX_FRAME: usize = 960;
/// The limiter passes samples below this untouched (-2.5 dBFS) and bends the rest
/// smoothly towards full scale, so a loud sum is compressed, never wrapped or hard-clipped.
const KNEE: i32 = 24_576;
/// A talker already in the mix keeps its seat unless a newcomer is 3 dB louder, so two
/// close talkers do not swap seats every frame.
const SEAT_BONUS: f32 = 2.0;
/// Power of a full-scale square wave: 0 dBov.
const FULL_SCALE_POWER: f32 = 32768.0 * 32768.0;
/// The payload buffer of one encoded frame (Opus' largest is far below).
const PAYLOAD_MAX: usize = 1500;
const NO_FRAME: u64 = u64::MAX;

/// Samples in one 20 ms frame at `rate`.
pub fn frame_len(rate: u32) -> usize {
    (rate * FRAME_MS / 1000) as usize
}

#[derive(Debug, Error)]
pub enum MixerError {
    #[error("mixer: unsupported rate {0} Hz (8000, 16000 or 48000)")]
    Rate(u32),
    #[error("mixer: max_talkers must be at least 1")]
    NoTalkers,
    #[error("mixer: no participant {0:?} (left, or never joined)")]
    Unknown(ParticipantId),
    #[error("mixer: frame of {got} samples at {rate} Hz, want {want} (20 ms)")]
    FrameLen { rate: u32, want: usize, got: usize },
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Resample(#[from] ResampleError),
}

/// A participant of one mixer. The generation makes an id of a participant that left
/// useless even when its slot is reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParticipantId {
    slot: u32,
    generation: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MixerConfig {
    /// The rate the mix is made at (8000, 16000 or 48000).
    pub rate: u32,
    /// K: at most this many talkers are mixed at once.
    pub max_talkers: usize,
    /// A frame with more energy than this (dB relative to a full-scale square wave) is
    /// speech.
    pub vad_threshold_dbov: f32,
    /// How long a talker stays active after its last loud frame, so it is not cut
    /// between syllables.
    pub hangover_ms: u32,
    /// Play a rising tone when someone joins and a falling one when someone leaves.
    pub tones: bool,
    /// The tones' peak level, dB below full scale.
    pub tone_peak_dbfs: f32,
}

impl Default for MixerConfig {
    fn default() -> Self {
        MixerConfig {
            rate: 16000,
            max_talkers: 3,
            vad_threshold_dbov: -45.0,
            hangover_ms: 300,
            tones: true,
            tone_peak_dbfs: -18.0,
        }
    }
}

/// What a participant hears this tick, at its own rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Output<'a> {
    /// The mix everyone who is not a talker hears: the same buffer for all participants
    /// at one rate, so it can be encoded once per codec.
    Shared(&'a [i16]),
    /// A talker's own mix: everyone else's voices without its own.
    Own(&'a [i16]),
    /// Deaf: nothing.
    Silence(&'a [i16]),
}

impl<'a> Output<'a> {
    pub fn pcm(&self) -> &'a [i16] {
        match *self {
            Output::Shared(p) | Output::Own(p) | Output::Silence(p) => p,
        }
    }
}

/// Work counters, for tests and benchmarks to check that cost follows the talkers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MixerStats {
    /// Ticks done (the frame counter).
    pub frames: u64,
    /// Samples whose energy was measured (O(N) per tick).
    pub samples_measured: u64,
    /// Samples added into or subtracted from a mix (O(K) per tick).
    pub samples_mixed: u64,
    /// Personal mixes built (at most K per tick).
    pub personal_mixes: u64,
    /// Resampler runs, priming included (O(K) per tick plus one per shared rate).
    pub resamples: u64,
}

struct Slot {
    generation: u32,
    live: bool,
    rate: u32,
    muted: bool,
    deaf: bool,
    /// The frames at the participant's rate, by frame parity: the current one and the
    /// one before (which primes the upsampler when the talker comes back).
    input: [Vec<i16>; 2],
    /// The tick each input buffer was last supplied for (`NO_FRAME`: never).
    supplied: [u64; 2],
    /// Smoothed frame power: rises at once, falls over ~100 ms; ranks the talkers.
    level: f32,
    /// Frames of hangover left.
    hang: u32,
    active: bool,
    selected: bool,
    was_selected: bool,
    personal: bool,
    was_personal: bool,
    /// Present only when the participant's rate is not the mixer's.
    up: Option<FrameResampler>,
    down: Option<FrameResampler>,
    /// This tick's input at the mixer rate (talkers only).
    mixin: Vec<i16>,
    /// The personal mix at the mixer rate, then (when resampled) at the participant's.
    mix: Vec<i16>,
    out: Vec<i16>,
}

impl Slot {
    /// The input supplied for tick `frame`, if it was.
    fn input_for(&self, frame: u64) -> Option<&[i16]> {
        let i = (frame & 1) as usize;
        (self.supplied[i] == frame).then(|| &self.input[i][..])
    }
}

/// The shared mix at one rate other than the mixer's.
struct RateGroup {
    rate: u32,
    members: usize,
    down: Option<FrameResampler>,
    out: Vec<i16>,
}

pub struct Mixer {
    config: MixerConfig,
    frame_len: usize,
    threshold: f32,
    hangover_frames: u32,
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
    /// This tick's talkers, loudest first: (score, slot).
    talkers: Vec<(f32, usize)>,
    sum: Vec<i32>,
    shared: Vec<i16>,
    shared_prev: Vec<i16>,
    groups: Vec<RateGroup>,
    zeros: Vec<i16>,
    scratch: Vec<i16>,
    join_tone: Vec<i16>,
    leave_tone: Vec<i16>,
    join_pos: Option<usize>,
    leave_pos: Option<usize>,
    stats: MixerStats,
}

impl Mixer {
    pub fn new(config: MixerConfig) -> Result<Mixer, MixerError> {
        check_rate(config.rate)?;
        if config.max_talkers == 0 {
            return Err(MixerError::NoTalkers);
        }
        let len = frame_len(config.rate);
        let peak = 32767.0 * 10f64.powf(f64::from(config.tone_peak_dbfs) / 20.0);
        Ok(Mixer {
            frame_len: len,
            threshold: FULL_SCALE_POWER * 10f32.powf(config.vad_threshold_dbov / 10.0),
            hangover_frames: config.hangover_ms.div_ceil(FRAME_MS),
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            talkers: Vec::with_capacity(config.max_talkers + 1),
            sum: vec![0; len],
            shared: vec![0; len],
            shared_prev: vec![0; len],
            groups: Vec::new(),
            zeros: vec![0; MAX_FRAME],
            scratch: vec![0; MAX_FRAME],
            // C5 then G5 on joining, the other way round on leaving.
            join_tone: two_notes(config.rate, 523.25, 783.99, peak),
            leave_tone: two_notes(config.rate, 783.99, 523.25, peak),
            join_pos: None,
            leave_pos: None,
            stats: MixerStats::default(),
            config,
        })
    }

    pub fn config(&self) -> &MixerConfig {
        &self.config
    }

    /// The mixer's rate.
    pub fn rate(&self) -> u32 {
        self.config.rate
    }

    /// Ticks done so far.
    pub fn frames(&self) -> u64 {
        self.stats.frames
    }

    pub fn stats(&self) -> MixerStats {
        self.stats
    }

    /// Participants present.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Adds a participant whose frames are at `rate` (8000, 16000 or 48000; a rate other
    /// than the mixer's costs a resampler pair, run only while it talks). Everyone hears
    /// the join tone over the next 200 ms.
    pub fn join(&mut self, rate: u32) -> Result<ParticipantId, MixerError> {
        check_rate(rate)?;
        let mine = self.config.rate;
        let (up, down) = if rate == mine {
            (None, None)
        } else {
            (
                Some(FrameResampler::new(rate, mine, FRAME_MS)?),
                Some(FrameResampler::new(mine, rate, FRAME_MS)?),
            )
        };
        if rate != mine && !self.groups.iter().any(|g| g.rate == rate) {
            self.groups.push(RateGroup {
                rate,
                members: 0,
                down: Some(FrameResampler::new(mine, rate, FRAME_MS)?),
                out: vec![0; frame_len(rate)],
            });
        }
        if let Some(g) = self.groups.iter_mut().find(|g| g.rate == rate) {
            g.members += 1;
        }
        let own = frame_len(rate);
        let slot = Slot {
            generation: 0,
            live: true,
            rate,
            muted: false,
            deaf: false,
            input: [vec![0; own], vec![0; own]],
            supplied: [NO_FRAME; 2],
            level: 0.0,
            hang: 0,
            active: false,
            selected: false,
            was_selected: false,
            personal: false,
            was_personal: false,
            up,
            down,
            mixin: vec![0; self.frame_len],
            mix: vec![0; self.frame_len],
            out: vec![0; own],
        };
        let index = match self.free.pop() {
            Some(i) => {
                let s = &mut self.slots[i as usize];
                let generation = s.generation.wrapping_add(1);
                *s = Slot { generation, ..slot };
                i
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        self.live += 1;
        if self.config.tones {
            self.join_pos = Some(0);
        }
        Ok(ParticipantId {
            slot: index,
            generation: self.slots[index as usize].generation,
        })
    }

    /// Removes a participant; everyone left hears the leave tone.
    pub fn leave(&mut self, id: ParticipantId) -> Result<(), MixerError> {
        let s = self.slot_mut(id)?;
        s.live = false;
        // Its buffers stay until the slot is reused; the resamplers go now (most memory).
        s.up = None;
        s.down = None;
        let rate = s.rate;
        if let Some(g) = self.groups.iter_mut().find(|g| g.rate == rate) {
            g.members = g.members.saturating_sub(1);
        }
        self.free.push(id.slot);
        self.live -= 1;
        if self.config.tones {
            self.leave_pos = Some(0);
        }
        Ok(())
    }

    /// A muted participant is never mixed (nor chosen as a talker).
    pub fn set_muted(&mut self, id: ParticipantId, muted: bool) -> Result<(), MixerError> {
        self.slot_mut(id)?.muted = muted;
        Ok(())
    }

    /// A deaf participant hears silence (and may still talk).
    pub fn set_deaf(&mut self, id: ParticipantId, deaf: bool) -> Result<(), MixerError> {
        self.slot_mut(id)?.deaf = deaf;
        Ok(())
    }

    /// The participant's rate.
    pub fn rate_of(&self, id: ParticipantId) -> Result<u32, MixerError> {
        Ok(self.slot(id)?.rate)
    }

    /// The buffer for this tick's frame of `id`, 20 ms at its rate. The caller must
    /// overwrite all of it (it holds an older frame). A participant that supplies no frame
    /// for a tick is silent for that tick.
    pub fn input_mut(&mut self, id: ParticipantId) -> Result<&mut [i16], MixerError> {
        let frame = self.stats.frames;
        let s = self.slot_mut(id)?;
        s.supplied[(frame & 1) as usize] = frame;
        Ok(&mut s.input[(frame & 1) as usize][..])
    }

    /// Copies this tick's frame of `id` in.
    pub fn set_input(&mut self, id: ParticipantId, pcm: &[i16]) -> Result<(), MixerError> {
        let rate = self.slot(id)?.rate;
        let buf = self.input_mut(id)?;
        if buf.len() != pcm.len() {
            return Err(MixerError::FrameLen {
                rate,
                want: buf.len(),
                got: pcm.len(),
            });
        }
        buf.copy_from_slice(pcm);
        Ok(())
    }

    /// Runs one 20 ms tick: voice activity, the choice of talkers, the mixes. Read each
    /// participant's result with [`Mixer::output`] before the next tick.
    pub fn tick(&mut self) -> Result<(), MixerError> {
        let frame = self.stats.frames;
        self.select(frame);
        self.sum_talkers(frame)?;
        self.add_tones();
        self.make_shared()?;
        self.make_personal()?;
        self.stats.frames += 1;
        Ok(())
    }

    /// What `id` hears after the last tick, at its own rate.
    pub fn output(&self, id: ParticipantId) -> Result<Output<'_>, MixerError> {
        let s = self.slot(id)?;
        let len = s.input[0].len();
        if s.deaf {
            return Ok(Output::Silence(&self.zeros[..len]));
        }
        if s.personal {
            let own = if s.rate == self.config.rate {
                &s.mix
            } else {
                &s.out
            };
            return Ok(Output::Own(own));
        }
        Ok(Output::Shared(self.shared_at(s.rate)))
    }

    /// The talkers mixed in the last tick, loudest first.
    pub fn talkers(&self) -> impl Iterator<Item = ParticipantId> + '_ {
        self.talkers.iter().map(|&(_, i)| ParticipantId {
            slot: i as u32,
            generation: self.slots[i].generation,
        })
    }

    /// Whether `id`'s voice activity (with hangover) was on in the last tick.
    pub fn is_active(&self, id: ParticipantId) -> Result<bool, MixerError> {
        Ok(self.slot(id)?.active)
    }

    fn shared_at(&self, rate: u32) -> &[i16] {
        if rate == self.config.rate {
            return &self.shared;
        }
        match self.groups.iter().find(|g| g.rate == rate) {
            Some(g) => &g.out,
            // Every rate in use has a group; a rate without one has no participant.
            None => &self.zeros[..frame_len(rate)],
        }
    }

    fn slot(&self, id: ParticipantId) -> Result<&Slot, MixerError> {
        match self.slots.get(id.slot as usize) {
            Some(s) if s.live && s.generation == id.generation => Ok(s),
            _ => Err(MixerError::Unknown(id)),
        }
    }

    fn slot_mut(&mut self, id: ParticipantId) -> Result<&mut Slot, MixerError> {
        match self.slots.get_mut(id.slot as usize) {
            Some(s) if s.live && s.generation == id.generation => Ok(s),
            _ => Err(MixerError::Unknown(id)),
        }
    }

    /// Energy, hangover and the K loudest active participants.
    fn select(&mut self, frame: u64) {
        let k = self.config.max_talkers;
        self.talkers.clear();
        for (i, s) in self.slots.iter_mut().enumerate() {
            if !s.live {
                continue;
            }
            s.was_selected = s.selected;
            s.was_personal = s.personal;
            s.selected = false;
            s.personal = false;
            let power = match s.input_for(frame) {
                Some(pcm) if !s.muted => {
                    self.stats.samples_measured += pcm.len() as u64;
                    mean_power(pcm)
                }
                _ => 0.0,
            };
            // Rise at once so a talker is heard from its first loud frame; fall slowly so
            // the ranking does not follow every syllable.
            s.level = if power > s.level {
                power
            } else {
                0.75 * s.level + 0.25 * power
            };
            let loud = power >= self.threshold;
            // `hang` counts the quiet frames still allowed, so the pause that ends a
            // talkspurt is exactly the configured hangover.
            s.active = !s.muted && (loud || s.hang > 0);
            s.hang = match (s.muted, loud) {
                (true, _) => 0,
                (false, true) => self.hangover_frames,
                (false, false) => s.hang.saturating_sub(1),
            };
            if s.active {
                let score = if s.was_selected {
                    s.level * SEAT_BONUS
                } else {
                    s.level
                };
                insert_top(&mut self.talkers, k, score, i);
            }
        }
    }

    /// Sums the talkers' frames at the mixer rate into `sum`.
    fn sum_talkers(&mut self, frame: u64) -> Result<(), MixerError> {
        self.sum.fill(0);
        for t in 0..self.talkers.len() {
            let i = self.talkers[t].1;
            let s = &mut self.slots[i];
            s.selected = true;
            let zeros = &self.zeros[..s.input[0].len()];
            let (now, before) = ((frame & 1) as usize, (frame.wrapping_sub(1) & 1) as usize);
            let cur: &[i16] = if s.supplied[now] == frame {
                &s.input[now]
            } else {
                zeros
            };
            match s.up.as_mut() {
                None => s.mixin.copy_from_slice(cur),
                Some(up) => {
                    if !s.was_selected {
                        let prev: &[i16] = if frame > 0 && s.supplied[before] == frame - 1 {
                            &s.input[before]
                        } else {
                            zeros
                        };
                        up.process(prev, &mut self.scratch)?;
                        self.stats.resamples += 1;
                    }
                    up.process(cur, &mut s.mixin)?;
                    self.stats.resamples += 1;
                }
            }
            for (a, x) in self.sum.iter_mut().zip(&s.mixin) {
                *a += i32::from(*x);
            }
            self.stats.samples_mixed += self.frame_len as u64;
        }
        Ok(())
    }

    fn add_tones(&mut self) {
        for (tone, pos) in [
            (&self.join_tone, &mut self.join_pos),
            (&self.leave_tone, &mut self.leave_pos),
        ] {
            let Some(p) = *pos else { continue };
            let end = (p + self.frame_len).min(tone.len());
            for (a, x) in self.sum.iter_mut().zip(&tone[p..end]) {
                *a += i32::from(*x);
            }
            *pos = (end < tone.len()).then_some(end);
        }
    }

    /// The limited sum, and its copy at each other rate in use.
    fn make_shared(&mut self) -> Result<(), MixerError> {
        std::mem::swap(&mut self.shared, &mut self.shared_prev);
        for (o, a) in self.shared.iter_mut().zip(&self.sum) {
            *o = limit(*a);
        }
        for g in self.groups.iter_mut().filter(|g| g.members > 0) {
            if let Some(down) = g.down.as_mut() {
                down.process(&self.shared, &mut g.out)?;
                self.stats.resamples += 1;
            }
        }
        Ok(())
    }

    /// Each talker that can hear gets the sum without itself.
    fn make_personal(&mut self) -> Result<(), MixerError> {
        for t in 0..self.talkers.len() {
            let s = &mut self.slots[self.talkers[t].1];
            if s.deaf {
                continue;
            }
            s.personal = true;
            for ((o, a), x) in s.mix.iter_mut().zip(&self.sum).zip(&s.mixin) {
                *o = limit(*a - i32::from(*x));
            }
            self.stats.samples_mixed += self.frame_len as u64;
            self.stats.personal_mixes += 1;
            if let Some(down) = s.down.as_mut() {
                if !s.was_personal {
                    // Last tick it heard the shared mix: carry on from there.
                    down.process(&self.shared_prev, &mut self.scratch)?;
                    self.stats.resamples += 1;
                }
                down.process(&s.mix, &mut s.out)?;
                self.stats.resamples += 1;
            }
        }
        Ok(())
    }
}

fn check_rate(rate: u32) -> Result<(), MixerError> {
    if RATES.contains(&rate) {
        Ok(())
    } else {
        Err(MixerError::Rate(rate))
    }
}

fn mean_power(pcm: &[i16]) -> f32 {
    let sum: i64 = pcm
        .iter()
        .map(|&x| {
            let x = i32::from(x);
            i64::from(x * x)
        })
        .sum();
    sum as f32 / pcm.len().max(1) as f32
}

/// Keeps `top` sorted loudest first and at most `k` long.
fn insert_top(top: &mut Vec<(f32, usize)>, k: usize, score: f32, slot: usize) {
    if top.len() == k {
        match top.last() {
            Some(&(last, _)) if score > last => {
                top.pop();
            }
            _ => return,
        }
    }
    let at = top
        .iter()
        .position(|&(s, _)| score > s)
        .unwrap_or(top.len());
    top.insert(at, (score, slot));
}

/// Linear below the knee, then a tanh curve that reaches full scale only at infinity.
fn limit(x: i32) -> i16 {
    if (-KNEE..=KNEE).contains(&x) {
        return x as i16;
    }
    let range = (i32::from(i16::MAX) - KNEE) as f32;
    let over = (x.unsigned_abs() - KNEE as u32) as f32 / range;
    let y = (KNEE as f32 + range * over.tanh()) as i32;
    let y = y.min(i32::from(i16::MAX)) as i16;
    if x < 0 {
        -y
    } else {
        y
    }
}

/// Two 100 ms notes with 5 ms fades (no clicks), 200 ms in all.
fn two_notes(rate: u32, first: f64, second: f64, peak: f64) -> Vec<i16> {
    let note = (rate / 10) as usize;
    let fade = (rate / 200) as usize;
    (0..2 * note)
        .map(|i| {
            let (hz, k) = if i < note {
                (first, i)
            } else {
                (second, i - note)
            };
            let edge = k.min(note - 1 - k);
            let env = if edge < fade {
                0.5 - 0.5 * (std::f64::consts::PI * edge as f64 / fade as f64).cos()
            } else {
                1.0
            };
            (peak * env * (TAU * hz * k as f64 / f64::from(rate)).sin()).round() as i16
        })
        .collect()
}

/// The codec side of one participant: decodes its payloads into the mixer and encodes
/// what it hears. The conference task owns one per leg; tests and the benchmark use it to
/// run real codecs end to end.
pub struct Participant {
    id: ParticipantId,
    codec: CodecKind,
    params: CodecParams,
    rate: u32,
    decoder: Box<dyn Decoder>,
    encoder: Box<dyn Encoder>,
    payload: Vec<u8>,
    encodes: u64,
}

impl Participant {
    /// Joins `mixer` speaking `codec`: G.711 at 8 kHz, G.722 at 16 kHz, Opus at the
    /// mixer's rate (libopus codes 8, 16 and 48 kHz itself, so it never needs resampling).
    pub fn join(
        mixer: &mut Mixer,
        codec: CodecKind,
        params: CodecParams,
    ) -> Result<Participant, MixerError> {
        let rate = match codec {
            CodecKind::Opus => mixer.rate(),
            other => other.pcm_rate(),
        };
        let decoder = codec::decoder(codec, rate)?;
        let encoder = codec::encoder(codec, rate, params)?;
        let id = mixer.join(rate)?;
        Ok(Participant {
            id,
            codec,
            params,
            rate,
            decoder,
            encoder,
            payload: vec![0; PAYLOAD_MAX],
            encodes: 0,
        })
    }

    pub fn leave(self, mixer: &mut Mixer) -> Result<(), MixerError> {
        mixer.leave(self.id)
    }

    pub fn id(&self) -> ParticipantId {
        self.id
    }

    pub fn codec(&self) -> CodecKind {
        self.codec
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Frames this participant's own encoder has coded (its personal or deaf output).
    pub fn encodes(&self) -> u64 {
        self.encodes
    }

    /// Decodes this tick's payload (20 ms) into the mixer; a shorter one is padded with
    /// silence (other packet times are a jitter buffer's business).
    pub fn receive(&mut self, mixer: &mut Mixer, payload: &[u8]) -> Result<(), MixerError> {
        let buf = mixer.input_mut(self.id)?;
        let n = self.decoder.decode(payload, buf)?.min(buf.len());
        buf[n..].fill(0);
        Ok(())
    }

    /// This tick's packet was lost: the codec's concealment when it has one, else
    /// nothing (the participant is silent this tick).
    pub fn lost(&mut self, mixer: &mut Mixer) -> Result<(), MixerError> {
        let mut scratch = [0i16; MAX_FRAME];
        let len = frame_len(self.rate);
        if let Some(n) = self.decoder.conceal(&mut scratch[..len])? {
            let buf = mixer.input_mut(self.id)?;
            buf[..n.min(len)].copy_from_slice(&scratch[..n.min(len)]);
            buf[n.min(len)..].fill(0);
        }
        Ok(())
    }

    /// The payload this participant is sent for the last tick: its own mix through its own
    /// encoder, or the shared mix encoded once for everyone with the same codec, rate and
    /// parameters.
    ///
    /// An Opus decoder moving between its own stream and the shared one sees another
    /// encoder's state; libopus decodes that with at most a short blip at the switch,
    /// which happens only when the participant starts or stops talking.
    pub fn send<'a>(
        &'a mut self,
        mixer: &Mixer,
        shared: &'a mut SharedEncoders,
    ) -> Result<&'a [u8], MixerError> {
        match mixer.output(self.id)? {
            Output::Shared(pcm) => {
                shared.encode(self.codec, self.rate, self.params, mixer.frames(), pcm)
            }
            Output::Own(pcm) | Output::Silence(pcm) => {
                let n = self.encoder.encode(pcm, &mut self.payload)?;
                self.encodes += 1;
                Ok(&self.payload[..n])
            }
        }
    }
}

struct SharedEncoding {
    codec: CodecKind,
    rate: u32,
    params: CodecParams,
    encoder: Box<dyn Encoder>,
    payload: Vec<u8>,
    len: usize,
    frame: u64,
}

/// One encoder per (codec, rate, parameters) for the shared mix; each tick's shared mix
/// is encoded once, by the first participant asking, and handed to the rest.
#[derive(Default)]
pub struct SharedEncoders {
    groups: Vec<SharedEncoding>,
    encodes: u64,
}

impl SharedEncoders {
    pub fn new() -> SharedEncoders {
        SharedEncoders::default()
    }

    /// Frames encoded so far, over all groups.
    pub fn encodes(&self) -> u64 {
        self.encodes
    }

    fn encode(
        &mut self,
        codec: CodecKind,
        rate: u32,
        params: CodecParams,
        frame: u64,
        pcm: &[i16],
    ) -> Result<&[u8], MixerError> {
        let found = self
            .groups
            .iter()
            .position(|g| g.codec == codec && g.rate == rate && g.params == params);
        let at = match found {
            Some(at) => at,
            None => {
                // A new codec group: allocates once, on the first tick it is heard.
                self.groups.push(SharedEncoding {
                    codec,
                    rate,
                    params,
                    encoder: codec::encoder(codec, rate, params)?,
                    payload: vec![0; PAYLOAD_MAX],
                    len: 0,
                    frame: NO_FRAME,
                });
                self.groups.len() - 1
            }
        };
        let g = &mut self.groups[at];
        if g.frame != frame {
            g.len = g.encoder.encode(pcm, &mut g.payload)?;
            g.frame = frame;
            self.encodes += 1;
        }
        Ok(&g.payload[..g.len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::test_signal::power_at;

    /// A sine frame source whose phase runs on across frames.
    struct Tone {
        rate: u32,
        hz: f64,
        amp: f64,
        n: usize,
    }

    impl Tone {
        fn new(rate: u32, hz: f64, dbfs: f64) -> Tone {
            Tone {
                rate,
                hz,
                amp: 32767.0 * 10f64.powf(dbfs / 20.0),
                n: 0,
            }
        }

        fn frame(&mut self) -> Vec<i16> {
            let len = frame_len(self.rate);
            let v = (self.n..self.n + len)
                .map(|i| {
                    let t = i as f64 / f64::from(self.rate);
                    (self.amp * (TAU * self.hz * t).sin()).round() as i16
                })
                .collect();
            self.n += len;
            v
        }
    }

    /// The far end of a leg: the phone's own encoder and decoder, and what it says.
    type Phone = (Box<dyn Encoder>, Box<dyn Decoder>, Tone);

    fn quiet() -> MixerConfig {
        MixerConfig {
            tones: false,
            ..MixerConfig::default()
        }
    }

    fn ids(m: &Mixer) -> Vec<ParticipantId> {
        m.talkers().collect()
    }

    #[test]
    fn three_codecs_each_hear_the_other_two_and_not_themselves() {
        let mut m = Mixer::new(quiet()).expect("mixer");
        let mut shared = SharedEncoders::new();
        let codecs = [CodecKind::Pcmu, CodecKind::G722, CodecKind::Opus];
        let freqs = [400.0, 700.0, 1100.0];
        let mut ps: Vec<Participant> = codecs
            .iter()
            .map(|&c| Participant::join(&mut m, c, CodecParams::default()).expect("join"))
            .collect();
        let mut phones: Vec<Phone> = ps
            .iter()
            .zip(freqs)
            .map(|(p, hz)| {
                let enc = codec::encoder(p.codec(), p.rate(), CodecParams::default());
                let dec = codec::decoder(p.codec(), p.rate());
                (
                    enc.expect("enc"),
                    dec.expect("dec"),
                    Tone::new(p.rate(), hz, -12.0),
                )
            })
            .collect();
        let mut heard: Vec<Vec<i16>> = vec![Vec::new(); 3];
        let mut payload = [0u8; 1500];
        let mut pcm = [0i16; MAX_FRAME];
        for _ in 0..50 {
            for (p, (enc, _, tone)) in ps.iter_mut().zip(&mut phones) {
                let n = enc.encode(&tone.frame(), &mut payload).expect("encode");
                p.receive(&mut m, &payload[..n]).expect("receive");
            }
            m.tick().expect("tick");
            for (i, p) in ps.iter_mut().enumerate() {
                let out = p.send(&m, &mut shared).expect("send");
                let n = phones[i].1.decode(out, &mut pcm).expect("decode");
                heard[i].extend_from_slice(&pcm[..n]);
            }
        }
        assert_eq!(m.frames(), 50);
        assert_eq!(m.talkers().count(), 3);
        for (i, p) in ps.iter().enumerate() {
            let tail = &heard[i][heard[i].len() / 2..];
            let own = power_at(tail, p.rate(), freqs[i]);
            for (j, hz) in freqs.iter().enumerate().filter(|&(j, _)| j != i) {
                let other = power_at(tail, p.rate(), *hz);
                assert!(
                    other > 1000.0 * own.max(1e-3),
                    "{:?} hears {hz} Hz at {other:.1}, its own {} Hz at {own:.1} (from {:?})",
                    p.codec(),
                    freqs[i],
                    codecs[j]
                );
            }
        }
        assert_eq!(shared.encodes(), 0, "three talkers: all mixes are personal");
    }

    #[test]
    fn silent_participants_share_one_buffer_encoded_once_per_tick() {
        let mut m = Mixer::new(quiet()).expect("mixer");
        let mut shared = SharedEncoders::new();
        let mut ps: Vec<Participant> = (0..20)
            .map(|_| Participant::join(&mut m, CodecKind::Pcmu, CodecParams::default()))
            .collect::<Result<_, _>>()
            .expect("join");
        let mut tones = [Tone::new(8000, 500.0, -15.0), Tone::new(8000, 900.0, -15.0)];
        let silence = [0xffu8; 160]; // mu-law zero
        let mut payload = [0u8; 160];
        let ticks = 10;
        for _ in 0..ticks {
            for (i, p) in ps.iter_mut().enumerate() {
                if i < 2 {
                    let n = g711_encode(&tones[i].frame(), &mut payload);
                    p.receive(&mut m, &payload[..n]).expect("receive");
                } else {
                    p.receive(&mut m, &silence).expect("receive");
                }
            }
            m.tick().expect("tick");
            let first = m.output(ps[2].id()).expect("out").pcm().as_ptr();
            for p in &ps[2..] {
                let out = m.output(p.id()).expect("out");
                assert!(matches!(out, Output::Shared(_)));
                assert_eq!(out.pcm().as_ptr(), first, "the very same buffer");
            }
            for p in &ps[..2] {
                assert!(matches!(m.output(p.id()).expect("out"), Output::Own(_)));
            }
            let mut sent: Vec<Vec<u8>> = Vec::new();
            for p in &mut ps {
                sent.push(p.send(&m, &mut shared).expect("send").to_vec());
            }
            assert!(sent[3..].iter().all(|s| *s == sent[2]));
            assert_ne!(sent[0], sent[2], "a talker hears the other one only");
        }
        assert_eq!(shared.encodes(), ticks, "the shared mix: once a tick");
        let own: u64 = ps.iter().map(|p| p.encodes()).sum();
        assert_eq!(own, 2 * ticks, "one personal encode per talker a tick");
        assert_eq!(m.stats().personal_mixes, 2 * ticks);
    }

    fn g711_encode(pcm: &[i16], out: &mut [u8]) -> usize {
        codec::g711::encode(codec::g711::Law::Ulaw, pcm, out)
    }

    #[test]
    fn the_k_loudest_of_five_talkers_are_mixed() {
        let mut m = Mixer::new(quiet()).expect("mixer");
        let listener = m.join(16000).expect("join");
        let levels = [-30.0, -10.0, -26.0, -14.0, -18.0];
        let freqs = [300.0, 500.0, 700.0, 900.0, 1100.0];
        let talkers: Vec<ParticipantId> = (0..5).map(|_| m.join(16000).expect("j")).collect();
        let mut tones: Vec<Tone> = freqs
            .iter()
            .zip(levels)
            .map(|(&hz, db)| Tone::new(16000, hz, db))
            .collect();
        let mut heard = Vec::new();
        for _ in 0..20 {
            for (t, tone) in talkers.iter().zip(&mut tones) {
                m.set_input(*t, &tone.frame()).expect("input");
            }
            m.set_input(listener, &[0; 320]).expect("input");
            m.tick().expect("tick");
            heard.extend_from_slice(m.output(listener).expect("out").pcm());
        }
        // Loudest first: -10, -14, -18 dB.
        assert_eq!(ids(&m), vec![talkers[1], talkers[3], talkers[4]]);
        let p: Vec<f64> = freqs
            .iter()
            .map(|&hz| power_at(&heard, 16000, hz))
            .collect();
        for i in [1, 3, 4] {
            assert!(p[i] > 1000.0 * p[0].max(p[2]).max(1e-3), "{p:?}");
        }
        // The two quiet talkers were active but not chosen.
        assert!(m.is_active(talkers[0]).expect("active"));
        assert!(matches!(m.output(talkers[0]), Ok(Output::Shared(_))));
    }

    #[test]
    fn hangover_keeps_a_talker_through_a_short_pause() {
        let mut m = Mixer::new(quiet()).expect("mixer");
        let a = m.join(16000).expect("join");
        let b = m.join(16000).expect("join");
        let mut tone = Tone::new(16000, 440.0, -20.0);
        let mut run = |m: &mut Mixer, frames: usize, loud: bool| -> Vec<bool> {
            (0..frames)
                .map(|_| {
                    let f = tone.frame();
                    let f = if loud { f } else { vec![0; f.len()] };
                    m.set_input(a, &f).expect("a");
                    m.set_input(b, &[0; 320]).expect("b");
                    m.tick().expect("tick");
                    ids(m) == vec![a]
                })
                .collect()
        };
        assert!(run(&mut m, 10, true).iter().all(|&t| t));
        // 100 ms between two words: still the talker all along.
        assert!(run(&mut m, 5, false).iter().all(|&t| t));
        assert!(run(&mut m, 10, true).iter().all(|&t| t));
        // A long pause ends the talkspurt once the 300 ms hangover ran out.
        let after = run(&mut m, 25, false);
        assert!(after[..15].iter().all(|&t| t), "{after:?}");
        assert!(after[15..].iter().all(|&t| !t), "{after:?}");
        assert!(!m.is_active(a).expect("active"));
        assert!(matches!(m.output(a), Ok(Output::Shared(_))));
    }

    #[test]
    fn a_resampled_talker_coming_back_resumes_without_a_click() {
        // K = 1: the 8 kHz talker A is pushed out mid-speech by a louder B, then comes
        // back. Its upsampler idled meanwhile; primed with the frame before, it must give
        // exactly what one run without a break gives.
        let cfg = MixerConfig {
            max_talkers: 1,
            ..quiet()
        };
        let mut m = Mixer::new(cfg).expect("mixer");
        let a = m.join(8000).expect("join");
        let b = m.join(16000).expect("join");
        let c = m.join(16000).expect("join");
        let mut ta = Tone::new(8000, 440.0, -20.0);
        let mut tb = Tone::new(16000, 1000.0, -6.0);
        let mut reference = FrameResampler::new(8000, 16000, FRAME_MS).expect("resampler");
        let mut want = vec![0i16; 320];
        let (mut a_was_on, mut came_back, mut checked) = (true, false, 0);
        for f in 0..60 {
            let fa = ta.frame();
            let fb = if (10..20).contains(&f) {
                tb.frame()
            } else {
                vec![0; 320]
            };
            m.set_input(a, &fa).expect("a");
            m.set_input(b, &fb).expect("b");
            m.set_input(c, &[0; 320]).expect("c");
            m.tick().expect("tick");
            reference.process(&fa, &mut want).expect("reference");
            let a_on = ids(&m) == vec![a];
            came_back |= a_on && !a_was_on;
            if a_on {
                assert_eq!(m.output(c).expect("out").pcm(), &want[..], "frame {f}");
                checked += u32::from(came_back);
            }
            a_was_on = a_on;
        }
        assert!(
            came_back && checked > 10,
            "A came back for {checked} frames"
        );
    }

    #[test]
    fn muted_is_not_heard_and_deaf_hears_nothing() {
        let mut m = Mixer::new(quiet()).expect("mixer");
        let talker = m.join(16000).expect("join");
        let muted = m.join(16000).expect("join");
        let deaf = m.join(16000).expect("join");
        let listener = m.join(8000).expect("join");
        m.set_muted(muted, true).expect("mute");
        m.set_deaf(deaf, true).expect("deaf");
        let mut t1 = Tone::new(16000, 500.0, -12.0);
        let mut t2 = Tone::new(16000, 1300.0, -12.0);
        let mut t3 = Tone::new(16000, 2100.0, -12.0);
        let (mut heard, mut deaf_heard) = (Vec::new(), Vec::new());
        for _ in 0..20 {
            m.set_input(talker, &t1.frame()).expect("in");
            m.set_input(muted, &t2.frame()).expect("in");
            m.set_input(deaf, &t3.frame()).expect("in");
            m.set_input(listener, &[0; 160]).expect("in");
            m.tick().expect("tick");
            heard.extend_from_slice(m.output(listener).expect("out").pcm());
            let out = m.output(deaf).expect("out");
            assert!(matches!(out, Output::Silence(_)));
            deaf_heard.extend_from_slice(out.pcm());
        }
        assert!(!ids(&m).contains(&muted));
        assert!(!m.is_active(muted).expect("active"));
        let heard = &heard[heard.len() / 2..];
        let talker_p = power_at(heard, 8000, 500.0);
        assert!(talker_p > 1000.0 * power_at(heard, 8000, 1300.0).max(1e-3));
        // The deaf participant still talks.
        assert!(power_at(heard, 8000, 2100.0) > talker_p / 4.0);
        assert!(deaf_heard.iter().all(|&s| s == 0));
        // Unmuted, it is heard again.
        m.set_muted(muted, false).expect("unmute");
        for _ in 0..3 {
            for (id, t) in [(talker, &mut t1), (muted, &mut t2), (deaf, &mut t3)] {
                m.set_input(id, &t.frame()).expect("in");
            }
            m.tick().expect("tick");
        }
        assert!(ids(&m).contains(&muted));
    }

    #[test]
    fn joining_and_leaving_play_a_tone_for_everyone() {
        let mut m = Mixer::new(MixerConfig::default()).expect("mixer");
        let a = m.join(8000).expect("join");
        // Let the first join's tone finish.
        for _ in 0..12 {
            m.tick().expect("tick");
        }
        assert!(m.output(a).expect("out").pcm().iter().all(|&s| s == 0));
        let b = m.join(16000).expect("join");
        let mut heard = Vec::new();
        for _ in 0..15 {
            m.tick().expect("tick");
            heard.push(m.output(a).expect("out").pcm().to_vec());
        }
        let first: Vec<i16> = heard[1..4].concat();
        let second: Vec<i16> = heard[6..9].concat();
        let (lo, hi) = (523.25, 783.99);
        assert!(power_at(&first, 8000, lo) > 100.0 * power_at(&first, 8000, hi));
        assert!(power_at(&second, 8000, hi) > 100.0 * power_at(&second, 8000, lo));
        assert!(power_at(&first, 8000, lo) > 1000.0, "loud enough to hear");
        assert!(heard[12..].iter().flatten().all(|&s| s.abs() < 50));
        // Leaving: falling notes.
        m.leave(b).expect("leave");
        assert!(matches!(m.output(b), Err(MixerError::Unknown(_))));
        m.tick().expect("tick");
        m.tick().expect("tick");
        let out = m.output(a).expect("out").pcm();
        assert!(power_at(out, 8000, hi) > 100.0 * power_at(out, 8000, lo));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn full_scale_inputs_saturate_and_never_wrap() {
        let mut cfg = quiet();
        cfg.max_talkers = 4;
        let mut m = Mixer::new(cfg).expect("mixer");
        let ps: Vec<ParticipantId> = (0..4).map(|_| m.join(16000).expect("j")).collect();
        // Square waves at full scale, all in phase: the sum is 4x full scale.
        let frame: Vec<i16> = (0..320)
            .map(|i| {
                if (i / 20) % 2 == 0 {
                    i16::MAX
                } else {
                    i16::MIN
                }
            })
            .collect();
        for _ in 0..3 {
            for p in &ps {
                m.set_input(*p, &frame).expect("in");
            }
            m.tick().expect("tick");
        }
        for p in &ps {
            let out = m.output(*p).expect("out").pcm();
            for (o, x) in out.iter().zip(&frame) {
                assert_eq!(o.signum(), x.signum(), "no wrap: {o} for {x}");
                assert!(o.abs() > 30000, "three full-scale voices stay loud: {o}");
            }
        }
        assert_eq!(limit(0), 0);
        assert_eq!(limit(KNEE), KNEE as i16);
        assert_eq!(limit(i32::MAX), i16::MAX);
        assert_eq!(limit(i32::MIN + 1), -i16::MAX);
        let mut last = i16::MIN;
        for x in (-200_000..200_000).step_by(97) {
            let y = limit(x);
            assert!(y >= last, "monotonic at {x}");
            last = y;
        }
    }

    #[test]
    fn per_tick_work_follows_the_talkers_not_the_participants() {
        // 500 G.711-rate participants, 50 of them talking: the mixing and resampling work
        // per tick must be that of K talkers; only the energy measure grows with N.
        let per_tick = |n: usize, talking: usize| -> MixerStats {
            let mut m = Mixer::new(quiet()).expect("mixer");
            let ps: Vec<ParticipantId> = (0..n).map(|_| m.join(8000).expect("j")).collect();
            let mut tones: Vec<Tone> = (0..talking)
                .map(|i| Tone::new(8000, 300.0 + 7.0 * i as f64, -20.0 - (i % 10) as f64))
                .collect();
            let noise = vec![3i16; 160];
            let mut run = |m: &mut Mixer| {
                for (i, p) in ps.iter().enumerate() {
                    match tones.get_mut(i) {
                        Some(t) => m.set_input(*p, &t.frame()).expect("in"),
                        None => m.set_input(*p, &noise).expect("in"),
                    }
                }
                m.tick().expect("tick");
            };
            for _ in 0..5 {
                run(&mut m);
            }
            let before = m.stats();
            for _ in 0..10 {
                run(&mut m);
            }
            let after = m.stats();
            assert_eq!(m.talkers().count(), 3);
            MixerStats {
                frames: after.frames - before.frames,
                samples_measured: (after.samples_measured - before.samples_measured) / 10,
                samples_mixed: (after.samples_mixed - before.samples_mixed) / 10,
                personal_mixes: (after.personal_mixes - before.personal_mixes) / 10,
                resamples: (after.resamples - before.resamples) / 10,
            }
        };
        let small = per_tick(100, 10);
        let big = per_tick(500, 50);
        let frame = frame_len(16000) as u64;
        assert_eq!(big.personal_mixes, 3);
        assert_eq!(big.samples_mixed, 2 * 3 * frame, "sum + sum-minus-own of 3");
        // Steady talkers: 3 up, 3 down, 1 shared stream down.
        assert_eq!(big.resamples, 7);
        assert_eq!(
            (big.samples_mixed, big.resamples),
            (small.samples_mixed, small.resamples)
        );
        assert_eq!(big.samples_measured, 500 * 160);
    }

    #[test]
    fn bad_ids_rates_and_frames_are_errors() {
        assert!(matches!(
            Mixer::new(MixerConfig {
                rate: 44100,
                ..MixerConfig::default()
            }),
            Err(MixerError::Rate(44100))
        ));
        assert!(Mixer::new(MixerConfig {
            max_talkers: 0,
            ..MixerConfig::default()
        })
        .is_err());
        let mut m = Mixer::new(quiet()).expect("mixer");
        assert!(m.join(22050).is_err());
        let a = m.join(8000).expect("join");
        assert!(matches!(
            m.set_input(a, &[0; 320]),
            Err(MixerError::FrameLen { want: 160, .. })
        ));
        m.leave(a).expect("leave");
        assert!(m.leave(a).is_err());
        // The slot is reused; the old id does not reach the newcomer.
        let b = m.join(16000).expect("join");
        assert_ne!(a, b);
        assert!(m.set_muted(a, true).is_err());
        assert!(m.set_input(b, &[0; 320]).is_ok());
        m.tick().expect("tick");
        assert_eq!(m.output(b).expect("out").pcm().len(), 320);
        // A participant that sent nothing this tick is silent, not its old frame.
        let mut loud = Tone::new(16000, 440.0, -6.0);
        m.set_input(b, &loud.frame()).expect("in");
        m.tick().expect("tick");
        assert!(m.is_active(b).expect("active"));
        m.tick().expect("tick");
        assert_eq!(m.stats().samples_measured, 2 * 320);
    }
}
