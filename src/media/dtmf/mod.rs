//! DTMF: the pure parts of carrying keypad digits through a call.
//!
//! Owns: the [`Digit`] type; RFC 4733 telephone events ([`rfc4733`] payload, [`sender`]
//! and [`receiver`] state machines driven by 20 ms ticks); SIP INFO bodies ([`info`]:
//! `application/dtmf-relay` and `application/dtmf`); in-band tones ([`detector`]: Goertzel
//! with level, twist, frequency and second-harmonic checks and duration/pause rules;
//! [`generator`]: two sines). Must not: open sockets, read clocks, spawn tasks or know SIP
//! messages: the media and call tasks feed samples, payloads and bodies in, and translate
//! between legs that use different methods with what comes out (a digit from a
//! [`receiver`], an [`info`] body or the [`detector`] goes out through a [`sender`], an
//! [`info`] body or the [`generator`]).
//!
//! Samples are 8 kHz 16-bit linear; RTP timestamps count 8000 per second. Levels are in
//! dBm0 with the G.711 convention that a full-scale sine is +3.17 dBm0
//! ([`generator::DBM0_FULL_SCALE`]).

pub mod detector;
pub mod digit;
pub mod generator;
pub mod info;
pub mod receiver;
pub mod rfc4733;
pub mod sender;

use thiserror::Error;

pub use detector::{Detector, DetectorConfig, DetectorEvent};
pub use digit::Digit;
pub use generator::ToneGenerator;
pub use info::{format_info, parse_info, InfoDigit, InfoFormat};
pub use receiver::{EventReceiver, ReceivedEvent, ReceiverConfig};
pub use rfc4733::EventPayload;
pub use sender::{EventPacket, EventSender, SenderConfig};

/// Errors of the DTMF parts of the media layer.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DtmfError {
    #[error("{0:?} is not a DTMF digit (0-9, *, #, A-D)")]
    NotADigit(char),
    #[error("{0:?} is not one DTMF digit")]
    BadDigitText(String),
    #[error("telephone-event payload of {0} bytes: an event needs 4")]
    ShortEventPayload(usize),
    #[error("telephone-event volume {0} does not fit the field (0-63, as -dBm0)")]
    VolumeOutOfRange(u8),
    #[error("telephone-event packet interval must be positive")]
    ZeroInterval,
    #[error("a telephone event ({0}) is still being sent")]
    SenderBusy(Digit),
    #[error("DTMF INFO body is not UTF-8 text")]
    InfoNotText,
    #[error("DTMF INFO body names no signal")]
    InfoNoSignal,
    #[error("DTMF INFO signal {0:?} is not a digit (0-9, *, #, A-D or event code 0-15)")]
    InfoBadSignal(String),
    #[error("DTMF INFO duration {0:?} is not a number of milliseconds")]
    InfoBadDuration(String),
    #[error("DTMF INFO line {0:?} is not key=value")]
    InfoBadLine(String),
}

#[cfg(test)]
mod tests {
    //! Translation between legs that use different methods, the way the media task will
    //! chain these parts: in-band -> RFC 4733 -> SIP INFO -> in-band.

    use std::collections::VecDeque;

    use super::*;

    const FRAME: usize = 160;

    fn tones(seq: &str, tone: usize, gap: usize) -> Vec<i16> {
        let mut out = vec![0; gap];
        for c in seq.chars() {
            let d = Digit::from_char(c).unwrap();
            out.extend(ToneGenerator::for_digit(d, -12.0).samples(tone));
            out.extend(std::iter::repeat(0).take(gap));
        }
        out
    }

    /// In-band audio of one leg to RFC 4733 packets on the other, frame by frame (the RTP
    /// timestamp of a frame is its first sample); returns what the far receiver reports.
    fn in_band_to_rfc4733(audio: &[i16]) -> Vec<ReceivedEvent> {
        let mut detector = Detector::default();
        let mut sender = EventSender::new(SenderConfig::default()).unwrap();
        let mut receiver = EventReceiver::new(ReceiverConfig::default());
        let mut detected = Vec::new();
        let mut queue: VecDeque<(Digit, u64, u64)> = VecDeque::new();
        let mut started = None;
        let mut received = Vec::new();
        for frame in audio
            .chunks(FRAME)
            .chain(std::iter::repeat([0i16; FRAME].as_slice()).take(20))
        {
            detector.push(frame, &mut detected);
            for e in detected.drain(..) {
                match e {
                    DetectorEvent::Start { digit, at } => started = Some((digit, at)),
                    DetectorEvent::End { digit, at } => {
                        if let Some((d, s)) = started.take() {
                            assert_eq!(d, digit);
                            queue.push_back((digit, s, at - s));
                        }
                    }
                }
            }
            // Events of one stream do not overlap: a digit waits while the previous one's
            // end packets go out.
            if sender.is_idle() {
                if let Some((digit, at, duration)) = queue.pop_front() {
                    sender.start(digit, at as u32, duration as u32).unwrap();
                }
            }
            if let Some(p) = sender.tick() {
                receiver
                    .on_packet(
                        p.timestamp,
                        p.marker,
                        &p.payload.encode().unwrap(),
                        &mut received,
                    )
                    .unwrap();
            }
            receiver.on_tick(&mut received);
        }
        received
    }

    #[test]
    fn in_band_to_rfc4733_to_info_to_in_band() {
        let audio = tones("159#0*", 480, 480);
        let received = in_band_to_rfc4733(&audio);
        let mut infos = Vec::new();
        for e in &received {
            if let ReceivedEvent::End {
                digit, duration, ..
            } = *e
            {
                assert!(duration.abs_diff(480) <= 64, "{digit}: {duration}");
                let info = InfoDigit {
                    digit,
                    duration_ms: Some(duration / 8),
                };
                infos.push(format_info(InfoFormat::DtmfRelay, &info));
            }
        }
        assert_eq!(infos.len(), 6, "{received:?}");
        // The INFO leg's digits, played in-band on a third leg and detected there.
        let mut audio = vec![0i16; 400];
        for body in &infos {
            let info = parse_info(InfoFormat::DtmfRelay, body.as_bytes()).unwrap();
            let samples = info.duration_ms.unwrap() as usize * 8;
            audio.extend(ToneGenerator::for_digit(info.digit, -10.0).samples(samples));
            audio.extend(std::iter::repeat(0).take(400));
        }
        let mut detector = Detector::default();
        let mut events = Vec::new();
        detector.push(&audio, &mut events);
        let heard: String = events
            .iter()
            .filter_map(|e| match e {
                DetectorEvent::Start { digit, .. } => Some(digit.to_char()),
                DetectorEvent::End { .. } => None,
            })
            .collect();
        assert_eq!(heard, "159#0*");
    }
}
