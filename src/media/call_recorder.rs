//! The recording of one call, from the RTP of its two legs to a WAV file: the sans-IO core
//! the recording task ([`super::recording`]) feeds.
//!
//! Owns: per leg, a [`JitterDecoder`] for that leg's audio codec (reordering, loss
//! concealment, one 20 ms frame per tick) and the resampler to the recording's rate, and
//! the [`Recorder`] of the file. Must not: touch sockets, tokio or a clock (packets come
//! in with their arrival time, ticks with `now`), or know SIP: the call layer tells it
//! each leg's [`LegFormat`].
//!
//! Time: the file advances exactly 20 ms per [`CallRecorder::tick`], whatever the legs
//! send: a leg with nothing to play (not talking yet, a loss G.711 cannot conceal, no
//! format known) is written as silence for that tick, so a loss on one leg never shifts
//! the other in time, and both parties stay where they were heard.
//!
//! Rate: 16 kHz when either leg is wideband (G.722, Opus) when the recording starts, else
//! 8 kHz; fixed for the file. Opus decodes at the recording's rate itself; G.711 and G.722
//! go through [`FrameResampler`] when their rate differs (a codec change mid-call).
//! RFC 4733 telephone-events and any other payload type are not audio and are ignored.

use std::path::Path;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::codec::{self, CodecError, CodecKind};
use super::jitter::{JitterConfig, JitterDecoder, JitterError};
use super::recorder::{Layout, Recorder, RecorderError};
use super::relay::Leg;
use super::resample::{FrameResampler, ResampleError};
use super::transcode::{LegFormat, RtpView, TICK_MS};

#[derive(Debug, Error)]
pub enum CallRecorderError {
    #[error(transparent)]
    Recorder(#[from] RecorderError),
    #[error("recording decoder: {0}")]
    Codec(#[from] CodecError),
    #[error("recording jitter buffer: {0}")]
    Jitter(#[from] JitterError),
    #[error("recording resampler: {0}")]
    Resample(#[from] ResampleError),
}

/// One leg's way from RTP to PCM at the recording's rate.
struct LegDecoder {
    format: LegFormat,
    jitter: JitterDecoder,
    resampler: Option<FrameResampler>,
}

impl LegDecoder {
    fn new(format: LegFormat, rate: u32) -> Result<LegDecoder, CallRecorderError> {
        // Opus decodes at any of the recording's rates; the others at their own.
        let dec_rate = match format.codec {
            CodecKind::Opus => rate,
            own => own.pcm_rate(),
        };
        let decoder = codec::decoder(format.codec, dec_rate)?;
        let jitter = JitterDecoder::new(decoder, JitterConfig::new(format.codec.clock_rate()))?;
        let resampler = if dec_rate != rate {
            Some(FrameResampler::new(dec_rate, rate, TICK_MS)?)
        } else {
            None
        };
        Ok(LegDecoder {
            format,
            jitter,
            resampler,
        })
    }

    /// This tick's audio into `out` (one tick at the recording's rate).
    fn tick(&mut self, now: Instant, out: &mut [i16]) {
        let tick = self.jitter.tick(now);
        let n = match self.resampler.as_mut() {
            None => {
                let n = tick.pcm.len().min(out.len());
                out[..n].copy_from_slice(&tick.pcm[..n]);
                n
            }
            // Cannot fail with the fixed frames the jitter decoder gives; silence if it
            // ever does.
            Some(r) => r.process(tick.pcm, out).unwrap_or(0),
        };
        out[n..].fill(0);
    }
}

/// Counters of a recording.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordingStats {
    /// Ticks written (20 ms each).
    pub ticks: u64,
    /// Packets taken into a leg's jitter buffer, per leg.
    pub packets: [u64; 2],
    /// Packets that were not audio of the leg's codec (telephone-events, other payload
    /// types, not RTP, no format known yet).
    pub ignored: u64,
}

/// A call being recorded. See the module comment.
pub struct CallRecorder {
    recorder: Recorder,
    rate: u32,
    formats: [Option<LegFormat>; 2],
    legs: [Option<LegDecoder>; 2],
    /// One tick of each leg at the recording's rate (reused every tick).
    frames: [Vec<i16>; 2],
    stats: RecordingStats,
}

/// The recording rate for legs in these formats: 16 kHz when either is wideband.
pub fn rate_for(formats: &[Option<LegFormat>; 2]) -> u32 {
    let wideband = formats.iter().flatten().any(|f| f.codec.pcm_rate() > 8000);
    if wideband {
        16000
    } else {
        8000
    }
}

impl CallRecorder {
    /// Starts recording into a new file at `path` (an existing file is an error); a leg
    /// whose format is `None` is silent until [`Self::set_formats`] names it.
    pub fn create(
        path: &Path,
        layout: Layout,
        formats: [Option<LegFormat>; 2],
    ) -> Result<CallRecorder, CallRecorderError> {
        let rate = rate_for(&formats);
        let recorder = Recorder::create(path, layout, rate)?;
        let frame = (rate * TICK_MS / 1000) as usize;
        let mut rec = CallRecorder {
            recorder,
            rate,
            formats: [None, None],
            legs: [None, None],
            frames: [vec![0; frame], vec![0; frame]],
            stats: RecordingStats::default(),
        };
        rec.set_formats(formats)?;
        Ok(rec)
    }

    pub fn path(&self) -> &Path {
        self.recorder.path()
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    pub fn stats(&self) -> RecordingStats {
        self.stats
    }

    /// The audio recorded so far.
    pub fn duration(&self) -> Duration {
        Duration::from_micros(self.recorder.frames() * 1_000_000 / u64::from(self.rate))
    }

    /// The legs' formats changed (answer, re-INVITE). A leg whose codec changed gets a new
    /// decoder (its buffered packets are dropped: they were in the old codec); a new
    /// payload type for the same codec is just noted. On error the leg whose decoder could
    /// not be made is silent, the other is updated.
    pub fn set_formats(
        &mut self,
        formats: [Option<LegFormat>; 2],
    ) -> Result<(), CallRecorderError> {
        let mut result = Ok(());
        for (i, format) in formats.into_iter().enumerate() {
            match (format, self.legs[i].as_mut()) {
                (None, _) => self.legs[i] = None,
                (Some(f), Some(leg)) if leg.format.codec == f.codec => leg.format = f,
                (Some(f), _) => match LegDecoder::new(f, self.rate) {
                    Ok(leg) => self.legs[i] = Some(leg),
                    Err(e) => {
                        self.legs[i] = None;
                        result = Err(e);
                    }
                },
            }
            self.formats[i] = format;
        }
        result
    }

    /// An RTP packet as `leg`'s phone sent it, received at `at`.
    pub fn push(&mut self, leg: Leg, packet: &[u8], at: Instant) {
        let i = leg.index();
        let other = self.formats[1 - i];
        let (Some(rtp), Some(dec)) = (RtpView::parse(packet), self.legs[i].as_mut()) else {
            self.stats.ignored += 1;
            return;
        };
        let f = dec.format;
        // A phone sends with the payload types of the SDP it received, which an answerer
        // should (RFC 3264 6.1) but need not make its own: the other leg's number for the
        // same codec counts too. Telephone-events never match a codec's number.
        let audio = rtp.pt == f.pt
            || other
                .is_some_and(|o| o.codec == f.codec && o.pt == rtp.pt && f.dtmf_pt != Some(rtp.pt));
        if !audio {
            self.stats.ignored += 1;
            return;
        }
        dec.jitter.push(at, rtp);
        self.stats.packets[i] += 1;
    }

    /// The tick at `now` (every 20 ms): 20 ms of each leg into the file.
    pub fn tick(&mut self, now: Instant) -> Result<(), CallRecorderError> {
        for (leg, frame) in self.legs.iter_mut().zip(self.frames.iter_mut()) {
            match leg {
                Some(leg) => leg.tick(now, frame),
                None => frame.fill(0),
            }
        }
        self.recorder.write(&self.frames[0], &self.frames[1])?;
        self.stats.ticks += 1;
        Ok(())
    }

    /// Ends the recording (the file's header tells its final length).
    pub fn finish(self) -> Result<RecordingStats, CallRecorderError> {
        let stats = self.stats;
        self.recorder.finish()?;
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::{CodecParams, Encoder};
    use crate::media::test_signal::{power_at, rms, tone};

    const A_HZ: f64 = 440.0;
    const B_HZ: f64 = 1000.0;

    /// 20 ms RTP packets of a tone in `kind`, with payload type `pt`.
    fn packets(kind: CodecKind, pt: u8, hz: f64, count: usize, ssrc: u32) -> Vec<Vec<u8>> {
        let rate = kind.pcm_rate();
        let frame = (rate / 50) as usize;
        let pcm = tone(rate, hz, frame * count, 8000.0);
        let mut enc: Box<dyn Encoder> =
            codec::encoder(kind, rate, CodecParams::default()).expect("encoder");
        let step = kind.clock_rate() / 50;
        pcm.chunks(frame)
            .enumerate()
            .map(|(k, f)| {
                let mut p = vec![0u8; 1500];
                p[0] = 0x80;
                p[1] = pt | if k == 0 { 0x80 } else { 0 };
                p[2..4].copy_from_slice(&(k as u16).to_be_bytes());
                p[4..8].copy_from_slice(&(1000 + step * k as u32).to_be_bytes());
                p[8..12].copy_from_slice(&ssrc.to_be_bytes());
                let n = enc.encode(f, &mut p[12..]).expect("encode");
                p.truncate(12 + n);
                p
            })
            .collect()
    }

    /// A call of `ticks` 20 ms ticks: each leg's packet `k` arrives 5 ms into tick `k`
    /// unless `lost` says otherwise; returns the WAV's spec and samples.
    fn record(
        layout: Layout,
        a: (CodecKind, u8),
        b: (CodecKind, u8),
        ticks: usize,
        lost: impl Fn(Leg, usize) -> bool,
    ) -> (hound::WavSpec, Vec<i16>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("call.wav");
        let formats = [
            Some(LegFormat::new(a.0, a.1)),
            Some(LegFormat::new(b.0, b.1)),
        ];
        let mut rec = CallRecorder::create(&path, layout, formats).expect("create");
        let pa = packets(a.0, a.1, A_HZ, ticks, 0xa);
        let pb = packets(b.0, b.1, B_HZ, ticks, 0xb);
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        for k in 0..ticks {
            for (leg, p) in [(Leg::A, &pa[k]), (Leg::B, &pb[k])] {
                if !lost(leg, k) {
                    rec.push(leg, p, ms(20 * k as u64 + 5));
                }
            }
            // A telephone-event in between is not audio.
            rec.push(
                Leg::A,
                &[0x80, 101, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0xa, 1, 0x0a, 0, 160],
                ms(20 * k as u64 + 6),
            );
            rec.tick(ms(20 * k as u64 + 10)).expect("tick");
        }
        let stats = rec.finish().expect("finish");
        assert_eq!(stats.ticks, ticks as u64);
        assert_eq!(stats.ignored, ticks as u64, "the telephone-events");
        let mut r = hound::WavReader::open(&path).expect("a WAV hound reads");
        let spec = r.spec();
        let s = r
            .samples::<i16>()
            .collect::<Result<Vec<_>, _>>()
            .expect("samples");
        (spec, s)
    }

    fn channel(s: &[i16], ch: usize) -> Vec<i16> {
        s.iter().skip(ch).step_by(2).copied().collect()
    }

    /// Power at `want` over power at `other`, in dB.
    fn ratio_db(pcm: &[i16], rate: u32, want: f64, other: f64) -> f64 {
        10.0 * (power_at(pcm, rate, want) / power_at(pcm, rate, other).max(1e-9)).log10()
    }

    #[test]
    fn stereo_puts_the_caller_left_and_the_callee_right() {
        let (spec, s) = record(
            Layout::Stereo,
            (CodecKind::Pcmu, 0),
            (CodecKind::Pcmu, 0),
            100,
            |_, _| false,
        );
        assert_eq!((spec.channels, spec.sample_rate), (2, 8000));
        assert_eq!(
            s.len(),
            2 * 100 * 160,
            "20 ms a tick, whatever was received"
        );
        let (l, r) = (channel(&s, 0), channel(&s, 1));
        // After the jitter buffer's start-up delay.
        let (l, r) = (&l[800..], &r[800..]);
        assert!(rms(l) > 4000.0 && rms(r) > 4000.0, "{} {}", rms(l), rms(r));
        assert!(ratio_db(l, 8000, A_HZ, B_HZ) > 30.0);
        assert!(ratio_db(r, 8000, B_HZ, A_HZ) > 30.0);
    }

    #[test]
    fn a_wideband_leg_makes_a_16_khz_recording() {
        let (spec, s) = record(
            Layout::Stereo,
            (CodecKind::Pcmu, 0),
            (CodecKind::G722, 9),
            100,
            |_, _| false,
        );
        assert_eq!((spec.channels, spec.sample_rate), (2, 16000));
        assert_eq!(s.len(), 2 * 100 * 320);
        let (l, r) = (channel(&s, 0), channel(&s, 1));
        let (l, r) = (&l[1600..], &r[1600..]);
        assert!(rms(l) > 4000.0 && rms(r) > 4000.0, "{} {}", rms(l), rms(r));
        assert!(ratio_db(l, 16000, A_HZ, B_HZ) > 30.0);
        assert!(ratio_db(r, 16000, B_HZ, A_HZ) > 30.0);
    }

    #[test]
    fn mixed_holds_both_tones_in_one_channel() {
        let (spec, s) = record(
            Layout::Mixed,
            (CodecKind::Pcmu, 0),
            (CodecKind::Opus, 111),
            100,
            |_, _| false,
        );
        assert_eq!((spec.channels, spec.sample_rate), (1, 16000));
        assert_eq!(s.len(), 100 * 320);
        let s = &s[3200..];
        let (pa, pb) = (power_at(s, 16000, A_HZ), power_at(s, 16000, B_HZ));
        let off = power_at(s, 16000, 700.0);
        assert!(
            pa > 100.0 * off && pb > 100.0 * off,
            "{pa:e} {pb:e} {off:e}"
        );
        assert!((0.25..4.0).contains(&(pa / pb)), "{pa:e} {pb:e}");
    }

    #[test]
    fn a_loss_on_one_leg_is_silence_in_its_place_not_a_shift() {
        let (_, s) = record(
            Layout::Stereo,
            (CodecKind::Pcmu, 0),
            (CodecKind::Pcmu, 0),
            60,
            |leg, k| leg == Leg::A && k == 30,
        );
        let (l, r) = (channel(&s, 0), channel(&s, 1));
        // Both legs' first packets play on the same tick, from a tick's first sample.
        let first = |c: &[i16]| c.iter().position(|v| v.abs() > 100).expect("audio") / 160;
        assert_eq!(first(&l), first(&r));
        let start = first(&l) * 160;
        let packet = |c: &[i16], k: usize| c[start + 160 * k..start + 160 * (k + 1)].to_vec();
        // Packet 30 of the left leg was lost: its 20 ms are silence, in its place (G.711
        // has no concealment), and only there.
        assert!(packet(&l, 30).iter().all(|v| *v == 0));
        for k in [29, 31] {
            assert!(rms(&packet(&l, k)) > 4000.0, "packet {k}");
        }
        assert!(
            rms(&packet(&r, 30)) > 4000.0,
            "the right channel has no gap"
        );
        // What follows the gap is where the sender put it: packet 31 is the tone's
        // samples 31 * 160.., not shifted by the lost packet.
        let want = tone(8000, A_HZ, 60 * 160, 8000.0);
        let err = packet(&l, 31)
            .iter()
            .zip(&want[31 * 160..32 * 160])
            .map(|(g, w)| f64::from(*g - *w).abs())
            .sum::<f64>()
            / 160.0;
        assert!(err < 400.0, "the tone after the gap is on time: {err}");
        assert_eq!(l.len(), r.len());
    }

    #[test]
    fn payload_types_of_either_leg_count_and_formats_can_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pt.wav");
        let mut rec = CallRecorder::create(&path, Layout::Stereo, [None, None]).expect("create");
        assert_eq!(rec.rate(), 8000);
        let t0 = Instant::now();
        let p = packets(CodecKind::Opus, 96, A_HZ, 1, 1).remove(0);
        rec.push(Leg::A, &p, t0);
        assert_eq!(rec.stats().ignored, 1, "no format yet");
        // Leg A's SDP says 111, leg B's says 96 for the same codec: the phone used 96.
        rec.set_formats([
            Some(LegFormat::new(CodecKind::Opus, 111)),
            Some(LegFormat::new(CodecKind::Opus, 96)),
        ])
        .expect("formats");
        rec.push(Leg::A, &p, t0);
        assert_eq!(rec.stats().packets, [1, 0]);
        rec.set_formats([Some(LegFormat::new(CodecKind::Pcmu, 0)), None])
            .expect("formats");
        rec.push(Leg::A, &p, t0);
        assert_eq!(rec.stats().ignored, 2, "96 is no longer leg A's audio");
        rec.tick(t0).expect("tick");
        assert_eq!(rec.duration(), Duration::from_millis(20));
        assert!(CallRecorder::create(&path, Layout::Mixed, [None, None]).is_err());
    }
}
