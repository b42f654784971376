//! One direction of a transcoded call: RTP in one codec in, RTP in another codec out.
//!
//! Owns: the jitter buffer and decoder of the incoming stream, the optional resampler and
//! the encoder of that direction, the PCM waiting to fill an outgoing packet, and the
//! outgoing stream's own RTP identity (SSRC, sequence, timestamps: a new stream, since
//! its payloads are new). Must not: touch sockets or read a clock (sans-IO: packets in
//! with their arrival time, one [`Transcoder::on_tick`] per 20 ms from the relay task's
//! media clock, packets out through a callback), or run when the legs share a codec (the
//! relay forwards those untouched).
//!
//! Timing: incoming packets go through the adaptive jitter buffer
//! ([`super::jitter::JitterDecoder`]: reordering, Opus FEC and PLC for losses), one
//! 20 ms frame comes out per tick and is re-encoded. The output timeline advances 20 ms a
//! tick; ticks of silence (nothing received, DTX, a gap the codec cannot conceal) send
//! nothing, and the next talkspurt starts with the marker bit at its right time.
//!
//! RFC 4733 telephone-events pass through with their payload type, timestamp and
//! duration mapped to the other leg's clock; when that leg negotiated no telephone-event
//! they are dropped.

use std::time::Instant;

use super::codec::{self, CodecError, CodecKind, CodecParams, Encoder};
use super::jitter::{JitterConfig, JitterDecoder, JitterError, JitterStats, Pushed, Source};
use super::resample::{FrameResampler, ResampleError};
use thiserror::Error;

/// The media clock of a transcoded call: one tick of audio every 20 ms.
pub const TICK_MS: u32 = 20;

#[derive(Debug, Error)]
pub enum TranscodeError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Resample(#[from] ResampleError),
    #[error(transparent)]
    Jitter(#[from] JitterError),
    #[error("unsupported packetization: {0} ms")]
    Ptime(u32),
}

/// What one leg negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegFormat {
    pub codec: CodecKind,
    /// The payload type of the codec on this leg.
    pub pt: u8,
    /// The payload type of telephone-event on this leg, if negotiated.
    pub dtmf_pt: Option<u8>,
    /// Milliseconds of audio per packet sent to this leg (`a=ptime`, default 20).
    pub ptime_ms: u32,
    pub params: CodecParams,
}

impl LegFormat {
    pub fn new(codec: CodecKind, pt: u8) -> LegFormat {
        LegFormat {
            codec,
            pt,
            dtmf_pt: None,
            ptime_ms: 20,
            params: CodecParams::default(),
        }
    }
}

/// The largest RTP packet this path writes.
const OUT_MAX: usize = 1500;
/// Audio of one tick at most, with room (120 ms at 48 kHz, Opus' longest packet).
const DECODE_MAX: usize = 5760;

/// A parsed RTP packet (RFC 3550 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpView<'a> {
    pub marker: bool,
    pub pt: u8,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    pub payload: &'a [u8],
}

impl<'a> RtpView<'a> {
    /// Parses `p`, skipping CSRCs, the header extension and padding; `None` when it is not
    /// a whole RTP version 2 packet.
    pub fn parse(p: &'a [u8]) -> Option<RtpView<'a>> {
        if p.len() < 12 || p[0] >> 6 != 2 {
            return None;
        }
        let cc = usize::from(p[0] & 0x0f);
        let mut start = 12 + 4 * cc;
        if p[0] & 0x10 != 0 {
            let ext = p.get(start + 2..start + 4)?;
            start += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
        }
        let mut end = p.len();
        if p[0] & 0x20 != 0 {
            let pad = usize::from(*p.last()?);
            end = end.checked_sub(pad)?;
        }
        Some(RtpView {
            marker: p[1] & 0x80 != 0,
            pt: p[1] & 0x7f,
            seq: u16::from_be_bytes([p[2], p[3]]),
            ts: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
            payload: p.get(start..end)?,
        })
    }
}

/// Writes a 12-byte RTP header into `out`.
pub(crate) fn write_header(out: &mut [u8], marker: bool, pt: u8, seq: u16, ts: u32, ssrc: u32) {
    out[0] = 0x80;
    out[1] = (u8::from(marker) << 7) | (pt & 0x7f);
    out[2..4].copy_from_slice(&seq.to_be_bytes());
    out[4..8].copy_from_slice(&ts.to_be_bytes());
    out[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

/// Converts timestamp differences between two RTP clocks.
#[derive(Debug, Clone, Copy)]
struct ClockMap {
    in_clock: u64,
    out_clock: u64,
}

impl ClockMap {
    fn map(self, in_delta: u32) -> u32 {
        (u64::from(in_delta) * self.out_clock / self.in_clock) as u32
    }
}

/// Transcodes one direction of a call.
pub struct Transcoder {
    from: LegFormat,
    to: LegFormat,
    /// The incoming stream's jitter buffer and decoder.
    jitter: JitterDecoder,
    encoder: Box<dyn Encoder>,
    /// Between the decoder's and the encoder's PCM rates, when they differ.
    resampler: Option<FrameResampler>,
    clocks: ClockMap,
    /// PCM at the encoder's rate waiting to fill a packet.
    pending: Vec<i16>,
    /// Output timestamp of `pending[0]`.
    pending_ts: u32,
    /// Samples per outgoing packet, at the encoder's rate.
    out_frame: usize,
    /// RTP ticks of one media tick (20 ms) on the output clock.
    tick_ticks: u32,
    resampled: Vec<i16>,
    out: [u8; OUT_MAX],
    ssrc: u32,
    seq: u16,
    marker_next: bool,
    /// Input timestamp of the telephone-event being relayed and its output timestamp.
    dtmf_event: Option<(u32, u32)>,
}

impl Transcoder {
    pub fn new(from: LegFormat, to: LegFormat) -> Result<Transcoder, TranscodeError> {
        // Opus codes at any of our rates: let it meet the other side's native rate so
        // Opus<->G.711 needs no resampler.
        let dec_rate = match (from.codec, to.codec) {
            (CodecKind::Opus, CodecKind::Opus) => 48000,
            (CodecKind::Opus, other) => other.pcm_rate(),
            (own, _) => own.pcm_rate(),
        };
        let enc_rate = match to.codec {
            CodecKind::Opus => dec_rate,
            own => own.pcm_rate(),
        };
        let decoder = codec::decoder(from.codec, dec_rate)?;
        let jitter = JitterDecoder::new(decoder, JitterConfig::new(from.codec.clock_rate()))?;
        let encoder = codec::encoder(to.codec, enc_rate, to.params)?;
        let resampler = if dec_rate != enc_rate {
            Some(FrameResampler::new(dec_rate, enc_rate, TICK_MS)?)
        } else {
            None
        };
        let ptime = to.ptime_ms;
        let valid = match to.codec {
            CodecKind::Opus => matches!(ptime, 10 | 20 | 40 | 60),
            _ => (10..=60).contains(&ptime) && ptime % 10 == 0,
        };
        if !valid {
            return Err(TranscodeError::Ptime(ptime));
        }
        Ok(Transcoder {
            from,
            to,
            jitter,
            encoder,
            resampler,
            clocks: ClockMap {
                in_clock: u64::from(from.codec.clock_rate()),
                out_clock: u64::from(to.codec.clock_rate()),
            },
            pending: Vec::with_capacity(DECODE_MAX * 2),
            pending_ts: rand::random(),
            out_frame: (enc_rate * ptime / 1000) as usize,
            tick_ticks: to.codec.clock_rate() * TICK_MS / 1000,
            resampled: vec![0; DECODE_MAX],
            out: [0; OUT_MAX],
            ssrc: rand::random(),
            seq: rand::random(),
            marker_next: true,
            dtmf_event: None,
        })
    }

    pub fn formats(&self) -> (LegFormat, LegFormat) {
        (self.from, self.to)
    }

    /// The incoming stream's jitter buffer figures.
    pub fn stats(&self) -> JitterStats {
        self.jitter.stats()
    }

    /// Takes one RTP packet from the `from` leg that arrived at `now`. Audio goes into the
    /// jitter buffer (out at the next ticks); a telephone-event goes out at once through
    /// `emit`. Returns false when the packet was dropped (not RTP, an unknown payload
    /// type, a duplicate, too late).
    pub fn on_rtp(&mut self, packet: &[u8], now: Instant, emit: &mut dyn FnMut(&[u8])) -> bool {
        let Some(rtp) = RtpView::parse(packet) else {
            return false;
        };
        if Some(rtp.pt) == self.from.dtmf_pt {
            return self.on_dtmf(&rtp, emit);
        }
        if rtp.pt != self.from.pt {
            return false;
        }
        matches!(self.jitter.push(now, rtp), Pushed::Stored)
    }

    /// One media tick (every [`TICK_MS`]): the jitter buffer's audio for it is re-encoded,
    /// and every whole outgoing packet goes out through `emit`. Silence (nothing received,
    /// or a gap the codec cannot conceal) sends nothing: the receiving phone conceals, and
    /// the next talkspurt starts with the marker bit at its right time.
    pub fn on_tick(&mut self, now: Instant, emit: &mut dyn FnMut(&[u8])) {
        let tick = self.jitter.tick(now);
        if tick.source == Source::Silence {
            let end = self.pending_ts.wrapping_add(
                self.to
                    .codec
                    .rtp_ticks(self.pending.len(), self.encoder.pcm_rate()),
            );
            self.pending.clear();
            self.pending_ts = end.wrapping_add(self.tick_ticks);
            self.marker_next = true;
            return;
        }
        match self.resampler.as_mut() {
            None => self.pending.extend_from_slice(tick.pcm),
            Some(r) => match r.process(tick.pcm, &mut self.resampled) {
                Ok(m) => self.pending.extend_from_slice(&self.resampled[..m]),
                Err(_) => return,
            },
        }
        self.flush(emit);
    }

    /// Encodes and emits every whole outgoing packet that is pending.
    fn flush(&mut self, emit: &mut dyn FnMut(&[u8])) {
        let mut used = 0;
        let step = self
            .to
            .codec
            .rtp_ticks(self.out_frame, self.encoder.pcm_rate());
        while self.pending.len() - used >= self.out_frame {
            let frame = &self.pending[used..used + self.out_frame];
            used += self.out_frame;
            if let Ok(len) = self.encoder.encode(frame, &mut self.out[12..]) {
                write_header(
                    &mut self.out,
                    self.marker_next,
                    self.to.pt,
                    self.seq,
                    self.pending_ts,
                    self.ssrc,
                );
                self.marker_next = false;
                self.seq = self.seq.wrapping_add(1);
                emit(&self.out[..12 + len]);
            }
            self.pending_ts = self.pending_ts.wrapping_add(step);
        }
        self.pending.drain(..used);
    }

    /// Relays an RFC 4733 event packet with its timing mapped to the other clock. The
    /// event starts where the outgoing audio is now (its audio went through the jitter
    /// buffer, the event does not wait).
    fn on_dtmf(&mut self, rtp: &RtpView<'_>, emit: &mut dyn FnMut(&[u8])) -> bool {
        let Some(out_pt) = self.to.dtmf_pt else {
            return false;
        };
        if rtp.payload.len() < 4 {
            return false;
        }
        let out_ts = match self.dtmf_event {
            Some((in_ts, out_ts)) if in_ts == rtp.ts => out_ts,
            _ => {
                self.dtmf_event = Some((rtp.ts, self.pending_ts));
                self.pending_ts
            }
        };
        let duration = u16::from_be_bytes([rtp.payload[2], rtp.payload[3]]);
        let mapped = self.clocks.map(u32::from(duration)).min(0xffff) as u16;
        write_header(
            &mut self.out,
            rtp.marker,
            out_pt,
            self.seq,
            out_ts,
            self.ssrc,
        );
        self.out[12..14].copy_from_slice(&rtp.payload[..2]);
        self.out[14..16].copy_from_slice(&mapped.to_be_bytes());
        self.seq = self.seq.wrapping_add(1);
        emit(&self.out[..16]);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::test_signal::{goertzel, tone};
    use std::time::Duration;

    /// RTP packets of `pcm` in `fmt`, `ptime` each, starting at seq 100, ts 1000.
    fn packets(fmt: LegFormat, rate: u32, pcm: &[i16]) -> Vec<Vec<u8>> {
        let mut enc = codec::encoder(fmt.codec, rate, fmt.params).expect("encoder");
        let frame = (rate * fmt.ptime_ms / 1000) as usize;
        pcm.chunks_exact(frame)
            .enumerate()
            .map(|(i, c)| {
                let mut p = vec![0u8; 1500];
                let n = enc.encode(c, &mut p[12..]).expect("encode");
                let ts = 1000 + fmt.codec.rtp_ticks(frame * i, rate);
                write_header(&mut p, i == 0, fmt.pt, 100 + i as u16, ts, 0xabcd);
                p.truncate(12 + n);
                p
            })
            .collect()
    }

    /// Decodes a stream of output packets back to PCM at `rate`.
    fn decode_all(fmt: LegFormat, rate: u32, out: &[Vec<u8>]) -> Vec<i16> {
        let mut dec = codec::decoder(fmt.codec, rate).expect("decoder");
        let mut pcm = Vec::new();
        let mut buf = vec![0i16; 5760];
        for p in out {
            let rtp = RtpView::parse(p).expect("rtp");
            assert_eq!(rtp.pt, fmt.pt);
            let n = dec.decode(rtp.payload, &mut buf).expect("decode");
            pcm.extend_from_slice(&buf[..n]);
        }
        pcm
    }

    /// Feeds `input` as a phone would send it in real time (each packet arriving when its
    /// timestamp says, on the input clock `clock`), ticking every 20 ms, plus `drain`
    /// ticks after the last packet; returns what came out.
    fn run_timed(t: &mut Transcoder, input: &[Vec<u8>], drain: u32) -> Vec<Vec<u8>> {
        let clock = u64::from(t.formats().0.codec.clock_rate());
        let base = Instant::now();
        let ts0 = RtpView::parse(&input[0]).expect("rtp").ts;
        let arrival = |p: &Vec<u8>| {
            let ts = RtpView::parse(p).expect("rtp").ts.wrapping_sub(ts0);
            base + Duration::from_micros(u64::from(ts) * 1_000_000 / clock)
        };
        let last = input.iter().map(arrival).max().expect("packets");
        let mut out = Vec::new();
        let mut next = 0;
        let mut k = 0u32;
        loop {
            let now = base + Duration::from_millis(20 * u64::from(k));
            while next < input.len() && arrival(&input[next]) <= now {
                t.on_rtp(&input[next], now, &mut |o| out.push(o.to_vec()));
                next += 1;
            }
            t.on_tick(now, &mut |o| out.push(o.to_vec()));
            if now >= last + Duration::from_millis(20 * u64::from(drain)) {
                break;
            }
            k += 1;
        }
        out
    }

    fn run(t: &mut Transcoder, input: &[Vec<u8>]) -> Vec<Vec<u8>> {
        run_timed(t, input, 1)
    }

    /// Power at `hz` over power at `other` (Goertzel).
    fn tone_ratio(pcm: &[i16], rate: u32, hz: f64, other: f64) -> f64 {
        goertzel(pcm, rate, hz) / goertzel(pcm, rate, other).max(1.0)
    }

    fn pcmu() -> LegFormat {
        LegFormat {
            dtmf_pt: Some(101),
            ..LegFormat::new(CodecKind::Pcmu, 0)
        }
    }

    fn opus() -> LegFormat {
        LegFormat {
            dtmf_pt: Some(96),
            ..LegFormat::new(CodecKind::Opus, 111)
        }
    }

    #[test]
    fn pcmu_to_opus_and_back_keeps_the_tone_and_the_timing() {
        let pcm = tone(8000, 700.0, 8000, 8000.0);
        let mut up = Transcoder::new(pcmu(), opus()).expect("up");
        let out = run(&mut up, &packets(pcmu(), 8000, &pcm));
        assert_eq!(out.len(), 50, "one Opus packet per 20 ms PCMU packet");
        let views: Vec<RtpView> = out.iter().filter_map(|p| RtpView::parse(p)).collect();
        assert!(views[0].marker && !views[1].marker);
        for w in views.windows(2) {
            assert_eq!(w[1].seq, w[0].seq.wrapping_add(1));
            assert_eq!(w[1].ts.wrapping_sub(w[0].ts), 960, "48 kHz clock, 20 ms");
            assert_eq!(w[1].ssrc, w[0].ssrc);
        }
        assert_ne!(views[0].ssrc, 0xabcd, "a new stream, its own SSRC");
        let heard = decode_all(opus(), 8000, &out);
        assert!(tone_ratio(&heard[1600..], 8000, 700.0, 1500.0) > 1000.0);

        let mut down = Transcoder::new(opus(), pcmu()).expect("down");
        let back = run(&mut down, &out);
        assert_eq!(back.len(), 50);
        let views: Vec<RtpView> = back.iter().filter_map(|p| RtpView::parse(p)).collect();
        for w in views.windows(2) {
            assert_eq!(w[1].ts.wrapping_sub(w[0].ts), 160, "8 kHz clock, 20 ms");
        }
        let heard = decode_all(pcmu(), 8000, &back);
        assert!(tone_ratio(&heard[1600..], 8000, 700.0, 1500.0) > 1000.0);
    }

    #[test]
    fn g711_laws_convert_without_a_resampler_and_ptime_is_repacketized() {
        let mut from = pcmu();
        from.ptime_ms = 30;
        let to = LegFormat::new(CodecKind::Pcma, 8);
        let pcm = tone(8000, 1000.0, 2400 * 4, 8000.0);
        let mut t = Transcoder::new(from, to).expect("t");
        assert!(t.resampler.is_none());
        let out = run(&mut t, &packets(from, 8000, &pcm));
        assert_eq!(out.len(), 60, "40 packets of 30 ms become 60 of 20 ms");
        let heard = decode_all(to, 8000, &out);
        let snr = codec::snr_db(&pcm[..heard.len()], &heard);
        assert!(snr > 30.0, "PCMU->PCMA SNR {snr:.1} dB");
    }

    #[test]
    fn a_lost_opus_packet_is_rebuilt_and_the_timing_holds() {
        let pcm = tone(8000, 500.0, 8000, 8000.0);
        let params = CodecParams {
            expected_loss_percent: 20,
            bitrate: 24000,
            ..CodecParams::default()
        };
        let from = LegFormat { params, ..opus() };
        let mut input = packets(from, 8000, &pcm);
        input.remove(20);
        let mut t = Transcoder::new(from, pcmu()).expect("t");
        let out = run(&mut t, &input);
        assert_eq!(out.len(), 50, "the lost packet's 20 ms came back");
        let views: Vec<RtpView> = out.iter().filter_map(|p| RtpView::parse(p)).collect();
        for w in views.windows(2) {
            assert_eq!(w[1].ts.wrapping_sub(w[0].ts), 160);
        }
    }

    #[test]
    fn reordered_packets_are_put_back_in_order_by_the_jitter_buffer() {
        let pcm = tone(8000, 600.0, 8000, 8000.0);
        let mut input = packets(pcmu(), 8000, &pcm);
        input.swap(10, 11);
        input.swap(30, 32);
        let mut t = Transcoder::new(pcmu(), opus()).expect("t");
        let out = run_timed(&mut t, &input, 3);
        let views: Vec<RtpView> = out.iter().filter_map(|p| RtpView::parse(p)).collect();
        // Cold, the buffer plays at its minimum delay: a held-up packet costs a tick of
        // silence (the timeline keeps its length) while the buffer grows; none is lost
        // and the stream goes on in order.
        assert!(views.len() >= 47, "{} packets", views.len());
        for w in views.windows(2) {
            assert_eq!(w[1].seq, w[0].seq.wrapping_add(1));
            let step = w[1].ts.wrapping_sub(w[0].ts);
            assert!(step % 960 == 0 && (960..=960 * 4).contains(&step), "{step}");
        }
        let heard = decode_all(opus(), 8000, &out);
        assert!(tone_ratio(&heard[1600..], 8000, 600.0, 1500.0) > 1000.0);
        assert_eq!(t.stats().lost, 0, "{:?}", t.stats());
    }

    #[test]
    fn silence_suppression_gaps_keep_their_length_and_mark_the_talkspurt() {
        let pcm = tone(8000, 500.0, 1600, 8000.0);
        let mut input = packets(pcmu(), 8000, &pcm);
        // The sender stops for 200 ms (no packets), then goes on with seq + 1.
        let mut later = packets(pcmu(), 8000, &pcm);
        for (i, p) in later.iter_mut().enumerate() {
            let seq = 110 + i as u16;
            let ts = 1000 + 1600 + 1600 + 160 * i as u32;
            p[2..4].copy_from_slice(&seq.to_be_bytes());
            p[4..8].copy_from_slice(&ts.to_be_bytes());
        }
        input.extend(later);
        let mut t = Transcoder::new(pcmu(), opus()).expect("t");
        let out = run(&mut t, &input);
        let views: Vec<RtpView> = out.iter().filter_map(|p| RtpView::parse(p)).collect();
        assert_eq!(views.len(), 20);
        assert_eq!(views[10].ts.wrapping_sub(views[9].ts), 960 + 1600 * 6);
        assert!(views[10].marker, "a talkspurt starts with the marker bit");
    }

    #[test]
    fn telephone_events_pass_with_their_clock_mapped() {
        let mut t = Transcoder::new(pcmu(), opus()).expect("t");
        let audio = packets(pcmu(), 8000, &tone(8000, 500.0, 320, 8000.0));
        let mut out = run(&mut t, &audio);
        // Event "5", start at ts 1320, durations 160 then 320 (8 kHz), then end.
        for (seq, dur, end) in [(102u16, 160u16, false), (103, 320, false), (104, 480, true)] {
            let mut p = vec![0u8; 16];
            write_header(&mut p, seq == 102, 101, seq, 1320, 0xabcd);
            p[12] = 5;
            p[13] = if end { 0x80 | 10 } else { 10 };
            p[14..16].copy_from_slice(&dur.to_be_bytes());
            assert!(t.on_rtp(&p, Instant::now(), &mut |o| out.push(o.to_vec())));
        }
        let events: Vec<RtpView> = out[2..].iter().filter_map(|p| RtpView::parse(p)).collect();
        assert_eq!(events.len(), 3);
        let audio0 = RtpView::parse(&out[0]).expect("rtp");
        for (e, dur) in events.iter().zip([960u16, 1920, 2880]) {
            assert_eq!(e.pt, 96);
            assert_eq!(e.payload[0], 5);
            assert_eq!(u16::from_be_bytes([e.payload[2], e.payload[3]]), dur);
            assert_eq!(e.ts.wrapping_sub(audio0.ts), 320 * 6, "same event, same ts");
        }
        assert!(events[0].marker && events[2].payload[1] & 0x80 != 0);
        // A leg without telephone-event gets none.
        let mut t = Transcoder::new(pcmu(), LegFormat::new(CodecKind::Opus, 111)).expect("t");
        let mut p = vec![0u8; 16];
        write_header(&mut p, true, 101, 1, 0, 1);
        assert!(!t.on_rtp(&p, Instant::now(), &mut |_| panic!("no event expected")));
    }

    #[test]
    fn g722_wideband_meets_narrowband_through_the_resampler() {
        let g722 = LegFormat::new(CodecKind::G722, 9);
        let pcm = tone(16000, 1000.0, 16000, 8000.0);
        let mut down = Transcoder::new(g722, pcmu()).expect("down");
        assert!(down.resampler.is_some());
        let out = run(&mut down, &packets(g722, 16000, &pcm));
        assert!(out.len() >= 49, "{} packets", out.len());
        let heard = decode_all(pcmu(), 8000, &out);
        assert!(tone_ratio(&heard[1600..], 8000, 1000.0, 2500.0) > 1000.0);
        let mut up = Transcoder::new(pcmu(), g722).expect("up");
        let back = run(&mut up, &out);
        let views: Vec<RtpView> = back.iter().filter_map(|p| RtpView::parse(p)).collect();
        for w in views.windows(2) {
            assert_eq!(
                w[1].ts.wrapping_sub(w[0].ts),
                160,
                "G.722's 8 kHz RTP clock"
            );
        }
        let heard = decode_all(g722, 16000, &back);
        assert!(tone_ratio(&heard[3200..], 16000, 1000.0, 2500.0) > 1000.0);
    }

    #[test]
    fn junk_is_dropped_without_output() {
        let mut t = Transcoder::new(opus(), pcmu()).expect("t");
        let mut emitted = 0;
        for p in [
            &[][..],
            &[0x80, 111, 0, 1][..],
            &[0x40; 40][..],
            &[0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xff][..], // wrong PT
            &[0xb0, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 9][..], // bad extension
            &[0xa0, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 200][..], // bad padding
        ] {
            assert!(!t.on_rtp(p, Instant::now(), &mut |_| emitted += 1));
        }
        assert_eq!(emitted, 0);
        assert!(Transcoder::new(
            LegFormat {
                ptime_ms: 25,
                ..pcmu()
            },
            LegFormat {
                ptime_ms: 25,
                ..opus()
            }
        )
        .is_err());
    }
}
