//! A media endpoint: the PBX itself as the far end of one leg's RTP (an IVR, voicemail,
//! a prompt), where the relay would only pass packets on.
//!
//! Owns: the sans-IO core of such a leg ([`Endpoint`]): the incoming stream decoded
//! behind a jitter buffer, key presses taken out of it (RFC 4733 events, or in-band tones
//! when the leg negotiated no telephone-event) or handed in from SIP INFO, what is played
//! to the phone ([`Player`]) encoded into our own RTP stream, and what the phone says
//! written to a [`Recorder`] with its ends (longest duration, silence, a terminating key).
//! Must not: open sockets or files, read the clock or spawn tasks: the endpoint task
//! ([`super::endpoint_task`]) feeds packets and 20 ms ticks in with `now` and sends what
//! comes out; the app layer opens the files and decodes the prompts.
//!
//! Pacing: one tick per 20 ms from the task's single clock; each tick plays out one frame
//! of the incoming stream (detection, recording) and sends one frame of ours (the player's
//! audio, else silence, so the phone's jitter buffer and NAT binding stay fed).

use std::time::{Duration, Instant};

use thiserror::Error;

use super::codec::{self, CodecError, CodecKind, Encoder};
use super::dtmf::{
    Detector, DetectorConfig, DetectorEvent, Digit, EventReceiver, EventSender, ReceivedEvent,
    ReceiverConfig, SenderConfig,
};
use super::jitter::{JitterConfig, JitterDecoder, JitterError, Source};
use super::player::{FrameOutcome, Item, Player, PlayerError};
use super::recorder::Recorder;
use super::resample::{FrameResampler, ResampleError};
use super::transcode::{write_header, LegFormat, RtpView, TICK_MS};

/// The largest RTP packet the endpoint writes.
const OUT_MAX: usize = 1500;
/// The rate the in-band detector works at.
const DETECTOR_RATE: u32 = 8000;

/// Why an endpoint could not be set up.
#[derive(Debug, Error)]
pub enum EndpointError {
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    #[error("jitter buffer: {0}")]
    Jitter(#[from] JitterError),
    #[error("resampler: {0}")]
    Resample(#[from] ResampleError),
    #[error("player: {0}")]
    Player(#[from] PlayerError),
    #[error("DTMF sender: {0}")]
    Dtmf(String),
}

/// How a key press reached the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfMethod {
    /// RFC 4733 telephone-event packets.
    Rfc4733,
    /// Tones in the audio.
    InBand,
    /// SIP INFO (handed in by the call layer).
    Info,
}

/// How a playback ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayEnd {
    /// The playlist played to its end.
    Finished,
    /// Stopped on request (or replaced by another playback).
    Stopped,
    /// A key was pressed during a playback that allows barge-in.
    BargeIn(Digit),
}

/// How a recording ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordEnd {
    MaxDuration,
    /// The phone was silent for the silence limit.
    Silence,
    /// A terminating key was pressed (it is consumed: it does not reach the digits).
    Digit(Digit),
    /// Stopped on request.
    Stopped,
    /// The caller hung up (how a message usually ends): what was said is kept.
    HungUp,
    /// Writing failed (disk full...): what was written is kept.
    Failed(String),
}

/// When a recording ends by itself.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordLimits {
    pub max: Duration,
    /// End after this long without speech (`None`: never).
    pub silence: Option<Duration>,
    /// A frame whose RMS is below this counts as silence (16-bit sample units).
    pub silence_rms: f64,
    /// Keys that end the recording.
    pub terminators: Vec<Digit>,
}

impl Default for RecordLimits {
    fn default() -> Self {
        RecordLimits {
            max: Duration::from_secs(180),
            silence: Some(Duration::from_secs(5)),
            // About -42 dBFS: line noise stays under it, quiet speech does not.
            silence_rms: 256.0,
            terminators: vec![Digit::Hash],
        }
    }
}

/// Where a leg's audio goes and comes from besides the player: a conference room (or
/// another leg). `put` gets every frame the phone sends (silence included, so the other
/// side keeps its timing), `take` gives the frame to send, false when there is none.
pub trait MediaLink: Send {
    fn put(&mut self, pcm: &[i16]);
    fn take(&mut self, out: &mut [i16]) -> bool;
}

/// What the endpoint reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointEvent {
    /// A key press (reported once, when it begins).
    Digit { digit: Digit, method: DtmfMethod },
    /// Playback `id` ended.
    PlayDone { id: u64, end: PlayEnd },
    /// Recording `id` ended after `duration` of audio, file closed.
    RecordDone {
        id: u64,
        end: RecordEnd,
        duration: Duration,
    },
}

struct Playback {
    id: u64,
    player: Player,
    barge_in: bool,
}

struct Recording {
    id: u64,
    recorder: Recorder,
    limits: RecordLimits,
    frames: u64,
    silent_frames: u64,
}

/// The sans-IO core of one terminated leg. See the module comment.
pub struct Endpoint {
    format: LegFormat,
    rate: u32,
    decoder: JitterDecoder,
    encoder: Box<dyn Encoder>,
    events_in: EventReceiver,
    received: Vec<ReceivedEvent>,
    /// In-band detection, with a resampler to its rate when the leg's differs.
    detector: Option<(Detector, Option<FrameResampler>)>,
    detected: Vec<DetectorEvent>,
    narrow: Vec<i16>,
    playback: Option<Playback>,
    recording: Option<Recording>,
    link: Option<Box<dyn MediaLink>>,
    /// Key presses sent to the phone as RFC 4733 events (only when it negotiated
    /// telephone-event), one at a time, the rest queued.
    events_out: Option<EventSender>,
    digits_out: std::collections::VecDeque<(Digit, u32)>,
    frame: Vec<i16>,
    out: [u8; OUT_MAX],
    ssrc: u32,
    seq: u16,
    ts: u32,
    /// RTP timestamp units per tick.
    tick_ticks: u32,
    marker_next: bool,
    /// Send our stream (false on hold, when the phone does not want it).
    sending: bool,
}

impl Endpoint {
    /// An endpoint for a leg that negotiated `format`. `ssrc`, `seq` and `ts` start our
    /// stream (random in production, fixed in tests). We send 20 ms packets whatever
    /// `a=ptime` the phone asked for: ptime is a preference (RFC 4566 6), and one packet
    /// per tick of the media clock keeps the endpoint simple and its latency low.
    pub fn new(format: LegFormat, ssrc: u32, seq: u16, ts: u32) -> Result<Endpoint, EndpointError> {
        let rate = Self::rate_for(format.codec);
        let decoder = JitterDecoder::new(
            codec::decoder(format.codec, rate)?,
            JitterConfig::new(format.codec.clock_rate()),
        )?;
        let encoder = codec::encoder(format.codec, rate, format.params)?;
        let detector = if format.dtmf_pt.is_none() {
            let resampler = if rate != DETECTOR_RATE {
                Some(FrameResampler::new(rate, DETECTOR_RATE, TICK_MS)?)
            } else {
                None
            };
            Some((Detector::new(DetectorConfig::default()), resampler))
        } else {
            None
        };
        Ok(Endpoint {
            format,
            rate,
            decoder,
            encoder,
            events_in: EventReceiver::new(ReceiverConfig::default()),
            received: Vec::new(),
            detector,
            detected: Vec::new(),
            narrow: vec![0; (DETECTOR_RATE * TICK_MS / 1000) as usize * 2],
            playback: None,
            recording: None,
            link: None,
            events_out: match format.dtmf_pt {
                Some(_) => Some(
                    EventSender::new(SenderConfig {
                        interval: format.codec.clock_rate() * TICK_MS / 1000,
                        ..SenderConfig::default()
                    })
                    .map_err(|e| EndpointError::Dtmf(e.to_string()))?,
                ),
                None => None,
            },
            digits_out: std::collections::VecDeque::new(),
            frame: vec![0; (rate * TICK_MS / 1000) as usize],
            out: [0; OUT_MAX],
            ssrc,
            seq,
            ts,
            tick_ticks: format.codec.clock_rate() * TICK_MS / 1000,
            marker_next: true,
            sending: true,
        })
    }

    /// The PCM rate an endpoint of `codec` plays and records at: the codec's own, but
    /// wideband for Opus (prompts are speech; 48 kHz would triple the work for nothing).
    pub fn rate_for(codec: CodecKind) -> u32 {
        match codec {
            CodecKind::Opus => 16000,
            other => other.pcm_rate(),
        }
    }

    /// The rate of the PCM this endpoint plays and records.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    pub fn format(&self) -> LegFormat {
        self.format
    }

    /// Connects the leg to a room (or lets go of it: `None`, which drops the old link).
    /// A playback in progress is heard over the link's audio until it ends.
    pub fn set_link(&mut self, link: Option<Box<dyn MediaLink>>) {
        self.link = link;
    }

    /// Send our stream or not (hold: the phone said `sendonly`/`inactive`).
    pub fn set_sending(&mut self, on: bool) {
        if on && !self.sending {
            self.marker_next = true;
        }
        self.sending = on;
    }

    /// Takes one RTP packet from the phone.
    pub fn on_rtp(&mut self, packet: &[u8], now: Instant, events: &mut Vec<EndpointEvent>) {
        let Some(rtp) = RtpView::parse(packet) else {
            return;
        };
        if Some(rtp.pt) == self.format.dtmf_pt {
            self.received.clear();
            if self
                .events_in
                .on_packet(rtp.ts, rtp.marker, rtp.payload, &mut self.received)
                .is_ok()
            {
                for i in 0..self.received.len() {
                    if let ReceivedEvent::Begin { digit, .. } = self.received[i] {
                        self.on_digit(digit, DtmfMethod::Rfc4733, events);
                    }
                }
            }
            return;
        }
        if rtp.pt == self.format.pt {
            self.decoder.push(now, rtp);
        }
    }

    /// A key press that came another way (SIP INFO).
    pub fn on_signal_digit(&mut self, digit: Digit, events: &mut Vec<EndpointEvent>) {
        self.on_digit(digit, DtmfMethod::Info, events);
    }

    /// Sends a key press to the phone as RFC 4733 events lasting `duration_ms` in our
    /// stream (audio is held back while they go out, RFC 4733 2.5.1.1). False when the
    /// leg negotiated no telephone-event: the call layer sends it by SIP INFO instead.
    pub fn send_digit(&mut self, digit: Digit, duration_ms: u32) -> bool {
        if self.events_out.is_none() {
            return false;
        }
        // A bounded queue: a stuck key cannot grow it without end.
        if self.digits_out.len() < 32 {
            self.digits_out
                .push_back((digit, duration_ms.clamp(40, 2000)));
        }
        true
    }

    /// Starts playback `id` of `items` (at [`Self::rate`]), replacing one in progress
    /// (which ends as [`PlayEnd::Stopped`]). `looping`: music on hold, until stopped.
    pub fn play(
        &mut self,
        id: u64,
        items: Vec<Item>,
        looping: bool,
        barge_in: bool,
        events: &mut Vec<EndpointEvent>,
    ) -> Result<(), EndpointError> {
        let mut player = Player::with_items(self.rate, items)?;
        player.set_loop(looping);
        self.stop_play(events);
        self.playback = Some(Playback {
            id,
            player,
            barge_in,
        });
        Ok(())
    }

    pub fn stop_play(&mut self, events: &mut Vec<EndpointEvent>) {
        if let Some(p) = self.playback.take() {
            events.push(EndpointEvent::PlayDone {
                id: p.id,
                end: PlayEnd::Stopped,
            });
        }
    }

    /// Starts recording `id` of what the phone says into `recorder` (opened at
    /// [`Self::rate`]), replacing one in progress.
    pub fn record(
        &mut self,
        id: u64,
        recorder: Recorder,
        limits: RecordLimits,
        events: &mut Vec<EndpointEvent>,
    ) {
        self.finish_recording(RecordEnd::Stopped, events);
        self.recording = Some(Recording {
            id,
            recorder,
            limits,
            frames: 0,
            silent_frames: 0,
        });
    }

    pub fn stop_record(&mut self, events: &mut Vec<EndpointEvent>) {
        self.finish_recording(RecordEnd::Stopped, events);
    }

    /// The caller hung up: the recording in progress ends (reported as
    /// [`RecordEnd::HungUp`]), the playback and the link stop.
    pub fn hung_up(&mut self, events: &mut Vec<EndpointEvent>) {
        self.finish_recording(RecordEnd::HungUp, events);
        self.stop_play(events);
        self.link = None;
    }

    /// One 20 ms tick: plays out a frame of the phone's audio (detection, recording) and
    /// sends one packet of ours through `emit`.
    pub fn on_tick(
        &mut self,
        now: Instant,
        emit: &mut dyn FnMut(&[u8]),
        events: &mut Vec<EndpointEvent>,
    ) {
        self.inbound_tick(now, events);
        self.outbound_tick(emit, events);
    }

    fn inbound_tick(&mut self, now: Instant, events: &mut Vec<EndpointEvent>) {
        self.received.clear();
        self.events_in.on_tick(&mut self.received);
        let tick = self.decoder.tick(now);
        let heard = tick.source != Source::Silence;
        self.frame.copy_from_slice(tick.pcm);
        if let Some(link) = &mut self.link {
            link.put(&self.frame);
        }
        if let Some((detector, resampler)) = &mut self.detector {
            self.detected.clear();
            let narrow = match resampler {
                None => Some(&self.frame[..]),
                Some(r) => match r.process(&self.frame, &mut self.narrow) {
                    Ok(n) => Some(&self.narrow[..n]),
                    Err(_) => None,
                },
            };
            if let Some(pcm) = narrow {
                detector.push(pcm, &mut self.detected);
            }
            for i in 0..self.detected.len() {
                if let DetectorEvent::Start { digit, .. } = self.detected[i] {
                    self.on_digit(digit, DtmfMethod::InBand, events);
                }
            }
        }
        let Some(rec) = &mut self.recording else {
            return;
        };
        let result = rec.recorder.write(&self.frame, &[]);
        rec.frames += 1;
        let quiet = !heard || super::rms(&self.frame) < rec.limits.silence_rms;
        rec.silent_frames = if quiet { rec.silent_frames + 1 } else { 0 };
        let elapsed = Duration::from_millis(rec.frames * u64::from(TICK_MS));
        let silent = Duration::from_millis(rec.silent_frames * u64::from(TICK_MS));
        let end = match result {
            Err(e) => Some(RecordEnd::Failed(e.to_string())),
            Ok(()) if elapsed >= rec.limits.max => Some(RecordEnd::MaxDuration),
            Ok(()) if rec.limits.silence.is_some_and(|s| silent >= s) => Some(RecordEnd::Silence),
            Ok(()) => None,
        };
        if let Some(end) = end {
            self.finish_recording(end, events);
        }
    }

    fn outbound_tick(&mut self, emit: &mut dyn FnMut(&[u8]), events: &mut Vec<EndpointEvent>) {
        let mut pcm = std::mem::take(&mut self.frame);
        if self.playback.is_some() {
            // The room's frame of this tick is dropped, not queued: a prompt to one
            // member must not delay the room's audio after it.
            if let Some(link) = &mut self.link {
                link.take(&mut pcm);
            }
        }
        match &mut self.playback {
            Some(p) => match p.player.next_frame(&mut pcm) {
                FrameOutcome::Playing => {}
                FrameOutcome::Finished | FrameOutcome::Stopped => {
                    let id = p.id;
                    self.playback = None;
                    events.push(EndpointEvent::PlayDone {
                        id,
                        end: PlayEnd::Finished,
                    });
                }
            },
            None => {
                let linked = self.link.as_mut().is_some_and(|l| l.take(&mut pcm));
                if !linked {
                    pcm.fill(0);
                }
            }
        }
        let event = self.next_event_packet();
        if let (true, Some((pt, packet))) = (self.sending, event) {
            if let Ok(payload) = packet.payload.encode() {
                write_header(
                    &mut self.out,
                    packet.marker,
                    pt,
                    self.seq,
                    packet.timestamp,
                    self.ssrc,
                );
                self.out[12..16].copy_from_slice(&payload);
                self.seq = self.seq.wrapping_add(1);
                emit(&self.out[..16]);
            }
        } else if self.sending {
            if let Ok(n) = self.encoder.encode(&pcm, &mut self.out[12..]) {
                write_header(
                    &mut self.out,
                    self.marker_next,
                    self.format.pt,
                    self.seq,
                    self.ts,
                    self.ssrc,
                );
                self.marker_next = false;
                self.seq = self.seq.wrapping_add(1);
                emit(&self.out[..12 + n]);
            }
        }
        // The clock runs on while we do not send, so a resumed stream keeps its timing.
        self.ts = self.ts.wrapping_add(self.tick_ticks);
        self.frame = pcm;
    }

    /// The telephone-event packet of this tick, if a key is being sent: the next queued
    /// key starts at this tick's timestamp once the previous one is done.
    fn next_event_packet(&mut self) -> Option<(u8, crate::media::dtmf::EventPacket)> {
        let pt = self.format.dtmf_pt?;
        let sender = self.events_out.as_mut()?;
        if sender.is_idle() {
            let (digit, ms) = self.digits_out.pop_front()?;
            let duration = self.format.codec.clock_rate() / 1000 * ms;
            sender.start(digit, self.ts, duration).ok()?;
        }
        sender.tick().map(|p| (pt, p))
    }

    fn on_digit(&mut self, digit: Digit, method: DtmfMethod, events: &mut Vec<EndpointEvent>) {
        if let Some(rec) = &self.recording {
            if rec.limits.terminators.contains(&digit) {
                self.finish_recording(RecordEnd::Digit(digit), events);
                return;
            }
        }
        if self.playback.as_ref().is_some_and(|p| p.barge_in) {
            if let Some(p) = self.playback.take() {
                events.push(EndpointEvent::PlayDone {
                    id: p.id,
                    end: PlayEnd::BargeIn(digit),
                });
            }
        }
        events.push(EndpointEvent::Digit { digit, method });
    }

    fn finish_recording(&mut self, end: RecordEnd, events: &mut Vec<EndpointEvent>) {
        let Some(rec) = self.recording.take() else {
            return;
        };
        let duration = Duration::from_millis(rec.frames * u64::from(TICK_MS));
        let end = match rec.recorder.finish() {
            Ok(_) => end,
            Err(e) => RecordEnd::Failed(e.to_string()),
        };
        events.push(EndpointEvent::RecordDone {
            id: rec.id,
            end,
            duration,
        });
    }

    /// Ends what is in progress (the call is over): the recording is closed and kept.
    pub fn close(&mut self, events: &mut Vec<EndpointEvent>) {
        self.stop_play(events);
        self.finish_recording(RecordEnd::Stopped, events);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::CodecKind;
    use crate::media::dtmf::{EventPayload, ToneGenerator};
    use crate::media::player::Prompt;
    use crate::media::recorder::Layout;
    use crate::media::test_signal::{power_at, tone};
    use std::sync::Arc;

    const PCMU_DTMF: LegFormat = LegFormat {
        codec: CodecKind::Pcmu,
        pt: 0,
        dtmf_pt: Some(101),
        ptime_ms: 20,
        params: crate::media::codec::CodecParams {
            fec: true,
            dtx: false,
            expected_loss_percent: 5,
            bitrate: 0,
            complexity: 5,
        },
    };

    /// A phone sending a stream of one codec.
    struct Phone {
        encoder: Box<dyn Encoder>,
        rate: u32,
        pt: u8,
        seq: u16,
        ts: u32,
    }

    impl Phone {
        fn new(kind: CodecKind, pt: u8) -> Phone {
            let rate = Endpoint::rate_for(kind);
            Phone {
                encoder: codec::encoder(kind, rate, Default::default()).expect("encoder"),
                rate,
                pt,
                seq: 100,
                ts: 1000,
            }
        }

        fn packet(&mut self, pcm: &[i16]) -> Vec<u8> {
            let mut out = vec![0u8; 1500];
            let n = self.encoder.encode(pcm, &mut out[12..]).expect("encode");
            write_header(&mut out, false, self.pt, self.seq, self.ts, 7);
            self.seq = self.seq.wrapping_add(1);
            self.ts = self
                .ts
                .wrapping_add(self.encoder.kind().clock_rate() * TICK_MS / 1000);
            out.truncate(12 + n);
            out
        }

        fn event(&mut self, digit: Digit, duration: u16, end: bool, marker: bool) -> Vec<u8> {
            let mut out = vec![0u8; 16];
            write_header(&mut out, marker, 101, self.seq, self.ts, 7);
            self.seq = self.seq.wrapping_add(1);
            let p = EventPayload {
                event: digit.event(),
                end,
                volume: 10,
                duration,
            };
            out[12..16].copy_from_slice(&p.encode().expect("event"));
            out
        }
    }

    /// Runs `ticks` ticks, feeding each the frame `input(i)` from `phone`; returns the
    /// events and what the endpoint sent.
    fn run(
        ep: &mut Endpoint,
        phone: &mut Phone,
        t0: Instant,
        ticks: usize,
        mut input: impl FnMut(usize) -> Option<Vec<i16>>,
    ) -> (Vec<EndpointEvent>, Vec<Vec<u8>>) {
        let mut events = Vec::new();
        let mut sent = Vec::new();
        for i in 0..ticks {
            let now = t0 + Duration::from_millis(20 * i as u64);
            if let Some(pcm) = input(i) {
                let p = phone.packet(&pcm);
                ep.on_rtp(&p, now, &mut events);
            }
            ep.on_tick(now, &mut |p| sent.push(p.to_vec()), &mut events);
        }
        (events, sent)
    }

    fn digits(events: &[EndpointEvent]) -> Vec<(Digit, DtmfMethod)> {
        events
            .iter()
            .filter_map(|e| match e {
                EndpointEvent::Digit { digit, method } => Some((*digit, *method)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn telephone_events_are_one_digit_each_despite_retransmitted_ends() {
        let mut ep = Endpoint::new(PCMU_DTMF, 1, 2, 3).expect("endpoint");
        let mut phone = Phone::new(CodecKind::Pcmu, 0);
        let t0 = Instant::now();
        let mut events = Vec::new();
        for (k, digit) in [Digit::D1, Digit::Hash].into_iter().enumerate() {
            phone.ts = 8000 * (k as u32 + 1);
            for (i, (dur, end)) in [(160, false), (320, false), (640, true), (640, true)]
                .into_iter()
                .enumerate()
            {
                let p = phone.event(digit, dur, end, i == 0);
                ep.on_rtp(&p, t0, &mut events);
            }
        }
        assert_eq!(
            digits(&events),
            vec![
                (Digit::D1, DtmfMethod::Rfc4733),
                (Digit::Hash, DtmfMethod::Rfc4733)
            ]
        );
    }

    #[test]
    fn a_key_sent_to_the_phone_goes_as_telephone_events_in_our_stream() {
        let mut ep = Endpoint::new(PCMU_DTMF, 1, 2, 3).expect("endpoint");
        let t0 = Instant::now();
        let mut sent: Vec<Vec<u8>> = Vec::new();
        let mut events = Vec::new();
        ep.on_tick(t0, &mut |p| sent.push(p.to_vec()), &mut events);
        assert!(ep.send_digit(Digit::D4, 100));
        for _ in 0..12 {
            ep.on_tick(t0, &mut |p| sent.push(p.to_vec()), &mut events);
        }
        let view = |p: &Vec<u8>| RtpView::parse(p).map(|r| (r.pt, r.marker, r.ts, r.seq));
        let evs: Vec<_> = sent
            .iter()
            .filter_map(view)
            .filter(|v| v.0 == 101)
            .collect();
        // 100 ms in 20 ms packets, the end three times, all at the event's start.
        assert_eq!(evs.len(), 5 + 2);
        assert!(evs[0].1 && evs[1..].iter().all(|e| !e.1));
        assert!(evs.iter().all(|e| e.2 == 3 + 160));
        let ends: Vec<_> = sent
            .iter()
            .filter(|p| p.get(1).map(|b| b & 0x7f) == Some(101))
            .filter_map(|p| EventPayload::decode(&p[12..]).ok())
            .collect();
        assert_eq!(ends[0].event, Digit::D4.event());
        assert_eq!(ends.iter().filter(|e| e.end).count(), 3);
        // Sequence numbers run on across events and audio.
        let seqs: Vec<u16> = sent.iter().filter_map(view).map(|v| v.3).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
        // Without telephone-event the call layer must use INFO.
        let mut plain = Endpoint::new(LegFormat::new(CodecKind::Pcmu, 0), 1, 2, 3).expect("ep");
        assert!(!plain.send_digit(Digit::D4, 100));
    }

    #[test]
    fn in_band_tones_are_detected_on_a_leg_without_telephone_event() {
        for (kind, pt) in [(CodecKind::Pcmu, 0), (CodecKind::G722, 9)] {
            let format = LegFormat::new(kind, pt);
            let mut ep = Endpoint::new(format, 1, 2, 3).expect("endpoint");
            let mut phone = Phone::new(kind, pt);
            let rate = phone.rate;
            let frame = (rate / 50) as usize;
            // "7", silence, "0": 100 ms tones at -20 dBm0 with 100 ms gaps.
            let mut signal = vec![0i16; frame * 5];
            for d in [Digit::D7, Digit::D0] {
                let mut g = ToneGenerator::for_digit(d, -20.0);
                let tone8k = g.samples(800);
                let tone = if rate == 8000 {
                    tone8k
                } else {
                    crate::media::player::resample(&tone8k, 8000, rate).expect("resample")
                };
                signal.extend(tone);
                signal.extend(vec![0; frame * 5]);
            }
            signal.extend(vec![0; frame * 10]);
            let ticks = signal.len() / frame;
            let t0 = Instant::now();
            let (events, _) = run(&mut ep, &mut phone, t0, ticks, |i| {
                Some(signal[i * frame..(i + 1) * frame].to_vec())
            });
            assert_eq!(
                digits(&events),
                vec![
                    (Digit::D7, DtmfMethod::InBand),
                    (Digit::D0, DtmfMethod::InBand)
                ],
                "{kind:?}"
            );
        }
    }

    #[test]
    fn a_leg_with_telephone_event_does_not_listen_for_tones() {
        let mut ep = Endpoint::new(PCMU_DTMF, 1, 2, 3).expect("endpoint");
        let mut phone = Phone::new(CodecKind::Pcmu, 0);
        let mut g = ToneGenerator::for_digit(Digit::D5, -10.0);
        let tone = g.samples(1600);
        let (events, _) = run(&mut ep, &mut phone, Instant::now(), 15, |i| {
            tone.get(i * 160..(i + 1) * 160).map(<[i16]>::to_vec)
        });
        assert!(digits(&events).is_empty(), "{events:?}");
    }

    #[test]
    fn playback_is_encoded_into_one_paced_stream_and_ends() {
        let mut ep = Endpoint::new(PCMU_DTMF, 0xabc, 10, 5000).expect("endpoint");
        let mut phone = Phone::new(CodecKind::Pcmu, 0);
        let prompt = Arc::new(Prompt::from_samples(
            "tone",
            8000,
            tone(8000, 440.0, 8000 * 3 / 10, 8000.0),
        ));
        let mut events = Vec::new();
        ep.play(7, vec![Item::Sound(prompt)], false, false, &mut events)
            .expect("play");
        let (events, sent) = run(&mut ep, &mut phone, Instant::now(), 20, |_| None);
        assert_eq!(
            events,
            vec![EndpointEvent::PlayDone {
                id: 7,
                end: PlayEnd::Finished
            }]
        );
        // One packet per tick, silence after the prompt, seq and timestamps in steps.
        assert_eq!(sent.len(), 20);
        let mut decoded = Vec::new();
        for (i, p) in sent.iter().enumerate() {
            let v = RtpView::parse(p).expect("rtp");
            assert_eq!((v.pt, v.ssrc), (0, 0xabc));
            assert_eq!(v.seq, 10 + i as u16);
            assert_eq!(v.ts, 5000 + 160 * i as u32);
            assert_eq!(v.marker, i == 0);
            let mut pcm = vec![0i16; 160];
            crate::media::codec::g711::decode(
                crate::media::codec::g711::Law::Ulaw,
                v.payload,
                &mut pcm,
            );
            decoded.push(pcm);
        }
        let played: Vec<i16> = decoded[..15].concat();
        assert!(power_at(&played, 8000, 440.0) > 1e6, "the prompt was sent");
        let after: Vec<i16> = decoded[16..].concat();
        assert!(
            crate::media::test_signal::rms(&after) < 10.0,
            "then silence"
        );
    }

    #[test]
    fn a_key_barges_in_on_a_prompt_that_allows_it_and_is_still_reported() {
        let mut ep = Endpoint::new(PCMU_DTMF, 1, 2, 3).expect("endpoint");
        let prompt = Arc::new(Prompt::from_samples("p", 8000, vec![1000; 16000]));
        let mut events = Vec::new();
        ep.play(
            1,
            vec![Item::Sound(prompt.clone())],
            false,
            true,
            &mut events,
        )
        .expect("play");
        ep.on_signal_digit(Digit::D3, &mut events);
        assert_eq!(
            events,
            vec![
                EndpointEvent::PlayDone {
                    id: 1,
                    end: PlayEnd::BargeIn(Digit::D3)
                },
                EndpointEvent::Digit {
                    digit: Digit::D3,
                    method: DtmfMethod::Info
                }
            ]
        );
        // Without barge-in the prompt plays on; the digit is reported all the same.
        events.clear();
        ep.play(2, vec![Item::Sound(prompt)], false, false, &mut events)
            .expect("play");
        ep.on_signal_digit(Digit::D4, &mut events);
        assert_eq!(
            events,
            vec![EndpointEvent::Digit {
                digit: Digit::D4,
                method: DtmfMethod::Info
            }]
        );
        // A new playback stops the one in progress.
        events.clear();
        ep.play(3, Vec::new(), false, false, &mut events)
            .expect("play");
        assert_eq!(
            events,
            vec![EndpointEvent::PlayDone {
                id: 2,
                end: PlayEnd::Stopped
            }]
        );
    }

    fn recorded(path: &std::path::Path) -> Vec<i16> {
        let mut r = hound::WavReader::open(path).expect("wav");
        assert_eq!(r.spec().channels, 1);
        r.samples::<i16>().map(|s| s.expect("sample")).collect()
    }

    #[test]
    fn recording_ends_on_silence_after_speech_and_keeps_the_audio() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("r.wav");
        let mut ep = Endpoint::new(PCMU_DTMF, 1, 2, 3).expect("endpoint");
        let mut phone = Phone::new(CodecKind::Pcmu, 0);
        let rec = Recorder::create(&path, Layout::Mixed, 8000).expect("recorder");
        let mut events = Vec::new();
        let limits = RecordLimits {
            silence: Some(Duration::from_millis(400)),
            ..RecordLimits::default()
        };
        ep.record(9, rec, limits, &mut events);
        let speech = tone(8000, 300.0, 8000, 6000.0);
        let (events, _) = run(&mut ep, &mut phone, Instant::now(), 100, |i| {
            Some(
                speech
                    .get(i * 160..(i + 1) * 160)
                    .map_or(vec![0; 160], <[i16]>::to_vec),
            )
        });
        let done: Vec<_> = events
            .iter()
            .filter(|e| matches!(e, EndpointEvent::RecordDone { .. }))
            .collect();
        let [EndpointEvent::RecordDone { id, end, duration }] = done[..] else {
            panic!("one end: {events:?}");
        };
        assert_eq!((*id, end), (9, &RecordEnd::Silence));
        // 1 s of speech (plus the jitter buffer's delay), then 400 ms of silence.
        assert!(
            (1400..=1600).contains(&duration.as_millis()),
            "{duration:?}"
        );
        let pcm = recorded(&path);
        assert_eq!(pcm.len() as u128, duration.as_millis() * 8);
        assert!(power_at(&pcm, 8000, 300.0) > 1e6);
    }

    #[test]
    fn a_terminating_key_ends_a_recording_and_is_consumed() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("r.wav");
        let mut ep = Endpoint::new(PCMU_DTMF, 1, 2, 3).expect("endpoint");
        let mut phone = Phone::new(CodecKind::Pcmu, 0);
        let rec = Recorder::create(&path, Layout::Mixed, 8000).expect("recorder");
        let mut events = Vec::new();
        ep.record(1, rec, RecordLimits::default(), &mut events);
        let (mut events, _) = run(&mut ep, &mut phone, Instant::now(), 10, |_| {
            Some(vec![3000; 160])
        });
        ep.on_signal_digit(Digit::D1, &mut events);
        ep.on_signal_digit(Digit::Hash, &mut events);
        assert_eq!(
            events,
            vec![
                EndpointEvent::Digit {
                    digit: Digit::D1,
                    method: DtmfMethod::Info
                },
                EndpointEvent::RecordDone {
                    id: 1,
                    end: RecordEnd::Digit(Digit::Hash),
                    duration: Duration::from_millis(200)
                }
            ]
        );
        assert_eq!(recorded(&path).len(), 1600);
    }

    #[test]
    fn recording_stops_at_its_longest_duration() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("r.wav");
        let mut ep = Endpoint::new(LegFormat::new(CodecKind::G722, 9), 1, 2, 3).expect("endpoint");
        let mut phone = Phone::new(CodecKind::G722, 9);
        let rec = Recorder::create(&path, Layout::Mixed, ep.rate()).expect("recorder");
        let mut events = Vec::new();
        let limits = RecordLimits {
            max: Duration::from_millis(500),
            silence: None,
            ..RecordLimits::default()
        };
        ep.record(1, rec, limits, &mut events);
        let (events, _) = run(&mut ep, &mut phone, Instant::now(), 40, |_| {
            Some(vec![0; 320])
        });
        assert_eq!(
            events,
            vec![EndpointEvent::RecordDone {
                id: 1,
                end: RecordEnd::MaxDuration,
                duration: Duration::from_millis(500)
            }]
        );
        assert_eq!(recorded(&path).len(), 8000);
    }

    #[test]
    fn on_hold_the_stream_pauses_and_resumes_with_a_marker_and_its_clock() {
        let mut ep = Endpoint::new(PCMU_DTMF, 1, 0, 0).expect("endpoint");
        let mut phone = Phone::new(CodecKind::Pcmu, 0);
        let t0 = Instant::now();
        let (_, a) = run(&mut ep, &mut phone, t0, 2, |_| None);
        ep.set_sending(false);
        let (_, b) = run(&mut ep, &mut phone, t0, 3, |_| None);
        ep.set_sending(true);
        let (_, c) = run(&mut ep, &mut phone, t0, 1, |_| None);
        assert_eq!((a.len(), b.len(), c.len()), (2, 0, 1));
        let v = RtpView::parse(&c[0]).expect("rtp");
        assert_eq!((v.seq, v.ts, v.marker), (2, 5 * 160, true));
    }

    #[test]
    fn opus_legs_play_and_record_wideband() {
        let format = LegFormat::new(CodecKind::Opus, 111);
        let mut ep = Endpoint::new(format, 1, 2, 3).expect("endpoint");
        assert_eq!(ep.rate(), 16000);
        let mut phone = Phone::new(CodecKind::Opus, 111);
        let speech = tone(16000, 5000.0, 16000, 6000.0);
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("r.wav");
        let rec = Recorder::create(&path, Layout::Mixed, 16000).expect("recorder");
        let mut events = Vec::new();
        ep.record(1, rec, RecordLimits::default(), &mut events);
        let (_, sent) = run(&mut ep, &mut phone, Instant::now(), 50, |i| {
            speech.get(i * 320..(i + 1) * 320).map(<[i16]>::to_vec)
        });
        ep.close(&mut events);
        assert_eq!(sent.len(), 50);
        // 5 kHz survives: the recording is wideband, not telephone band.
        let pcm = recorded(&path);
        assert!(power_at(&pcm[4000..], 16000, 5000.0) > 1e6);
    }
}
