//! Key presses heard in the audio of a relayed leg whose phone negotiated no
//! telephone-event, so they can reach the other leg the way it takes them (RFC 4733).
//!
//! Owns: decoding that leg's audio packets as they arrive (no jitter buffer: the detector
//! only needs the tones in order, and a late packet is at worst a short gap) to 8 kHz,
//! and the in-band [`Detector`]. Must not: touch sockets or change the packets, which are
//! relayed untouched (the tones also reach the other phone as audio).

use super::codec::{self, CodecError, CodecKind, Decoder};
use super::dtmf::{Detector, DetectorConfig, DetectorEvent, Digit};
use super::resample::{FrameResampler, ResampleError};
use super::transcode::{LegFormat, RtpView, TICK_MS};

const RATE: u32 = 8000;
/// Decoded audio of one packet at most (120 ms at 16 kHz).
const DECODE_MAX: usize = 1920;

/// Why a listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum InBandError {
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    #[error("resampler: {0}")]
    Resample(#[from] ResampleError),
}

/// See the module comment.
pub struct InBandListener {
    pt: u8,
    decoder: Box<dyn Decoder>,
    /// G.722 (16 kHz only) to 8 kHz, 20 ms at a time.
    resampler: Option<FrameResampler>,
    /// Wideband samples waiting to fill a resampler frame.
    wide: Vec<i16>,
    pcm: Vec<i16>,
    narrow: Vec<i16>,
    detector: Detector,
    events: Vec<DetectorEvent>,
    started: Option<(Digit, u64)>,
}

impl InBandListener {
    /// Listens to the audio of a leg that negotiated `format`.
    pub fn new(format: &LegFormat) -> Result<InBandListener, InBandError> {
        // Opus decodes straight to 8 kHz; G.722 only gives 16 kHz.
        let (rate, resampler) = match format.codec {
            CodecKind::G722 => (16000, Some(FrameResampler::new(16000, RATE, TICK_MS)?)),
            _ => (RATE, None),
        };
        Ok(InBandListener {
            pt: format.pt,
            decoder: codec::decoder(format.codec, rate)?,
            resampler,
            wide: Vec::with_capacity(DECODE_MAX * 2),
            pcm: vec![0; DECODE_MAX],
            narrow: vec![0; (RATE * TICK_MS / 1000) as usize * 2],
            detector: Detector::new(DetectorConfig::default()),
            events: Vec::with_capacity(4),
            started: None,
        })
    }

    /// Takes one RTP packet of the leg; each key press that ended in it goes to `out`
    /// with its duration in milliseconds.
    pub fn on_rtp(&mut self, packet: &[u8], out: &mut Vec<(Digit, u32)>) {
        let Some(rtp) = RtpView::parse(packet) else {
            return;
        };
        if rtp.pt != self.pt {
            return;
        }
        let Ok(n) = self.decoder.decode(rtp.payload, &mut self.pcm) else {
            return;
        };
        let n = n.min(self.pcm.len());
        self.events.clear();
        match &mut self.resampler {
            None => self.detector.push(&self.pcm[..n], &mut self.events),
            Some(r) => {
                self.wide.extend_from_slice(&self.pcm[..n]);
                let frame = r.input_len();
                let mut used = 0;
                while self.wide.len() - used >= frame {
                    if let Ok(m) = r.process(&self.wide[used..used + frame], &mut self.narrow) {
                        self.detector.push(&self.narrow[..m], &mut self.events);
                    }
                    used += frame;
                }
                self.wide.drain(..used);
            }
        }
        for ev in self.events.drain(..) {
            match ev {
                DetectorEvent::Start { digit, at } => self.started = Some((digit, at)),
                DetectorEvent::End { digit, at } => {
                    let from = match self.started.take() {
                        Some((d, s)) if d == digit => s,
                        _ => at,
                    };
                    let ms = (at.saturating_sub(from) * 1000 / u64::from(RATE)) as u32;
                    out.push((digit, ms));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::CodecParams;
    use crate::media::dtmf::ToneGenerator;
    use crate::media::transcode::write_header;

    /// RTP packets (20 ms) of `pcm` at 8 kHz through `kind`'s encoder.
    fn packets(kind: CodecKind, pt: u8, pcm: &[i16]) -> Vec<Vec<u8>> {
        let rate = if kind == CodecKind::G722 { 16000 } else { 8000 };
        let pcm = if rate == 8000 {
            pcm.to_vec()
        } else {
            crate::media::player::resample(pcm, 8000, rate).expect("resample")
        };
        let mut enc = codec::encoder(kind, rate, CodecParams::default()).expect("encoder");
        let frame = (rate / 50) as usize;
        pcm.chunks_exact(frame)
            .enumerate()
            .map(|(i, f)| {
                let mut out = vec![0u8; 1500];
                let n = enc.encode(f, &mut out[12..]).expect("encode");
                write_header(&mut out, i == 0, pt, i as u16, (i * 160) as u32, 1);
                out.truncate(12 + n);
                out
            })
            .collect()
    }

    fn keys_then_pauses(keys: &[Digit]) -> Vec<i16> {
        let mut pcm = vec![0i16; 800];
        for d in keys {
            pcm.extend(ToneGenerator::for_digit(*d, -20.0).samples(960));
            pcm.extend(vec![0i16; 800]);
        }
        pcm.extend(vec![0i16; 1600]);
        pcm
    }

    #[test]
    fn key_presses_in_the_audio_are_heard_with_their_durations_whatever_the_codec() {
        for (kind, pt) in [
            (CodecKind::Pcmu, 0),
            (CodecKind::Pcma, 8),
            (CodecKind::G722, 9),
            (CodecKind::Opus, 111),
        ] {
            let mut l = InBandListener::new(&LegFormat::new(kind, pt)).expect("listener");
            let pcm = keys_then_pauses(&[Digit::D1, Digit::Hash, Digit::D9]);
            let mut got = Vec::new();
            for p in packets(kind, pt, &pcm) {
                l.on_rtp(&p, &mut got);
            }
            let digits: Vec<Digit> = got.iter().map(|(d, _)| *d).collect();
            assert_eq!(digits, vec![Digit::D1, Digit::Hash, Digit::D9], "{kind:?}");
            for (_, ms) in &got {
                assert!(
                    (90..=150).contains(ms),
                    "{kind:?}: 120 ms tone heard as {ms} ms"
                );
            }
        }
    }

    #[test]
    fn other_payload_types_and_plain_tones_are_not_key_presses() {
        let mut l = InBandListener::new(&LegFormat::new(CodecKind::Pcmu, 0)).expect("listener");
        let mut got = Vec::new();
        // A single 440 Hz tone and a chord that is no DTMF pair.
        let tone = crate::media::test_signal::tone(8000, 440.0, 8000, 8000.0);
        let chord: Vec<i16> = crate::media::test_signal::tone(8000, 500.0, 8000, 6000.0)
            .iter()
            .zip(crate::media::test_signal::tone(8000, 1100.0, 8000, 6000.0))
            .map(|(a, b)| a.saturating_add(b))
            .collect();
        for p in
            packets(CodecKind::Pcmu, 0, &tone)
                .iter()
                .chain(&packets(CodecKind::Pcmu, 0, &chord))
        {
            l.on_rtp(p, &mut got);
        }
        // Key presses with another payload type are not this leg's audio.
        for p in packets(CodecKind::Pcmu, 96, &keys_then_pauses(&[Digit::D5])) {
            l.on_rtp(&p, &mut got);
        }
        assert!(got.is_empty(), "{got:?}");
    }
}
