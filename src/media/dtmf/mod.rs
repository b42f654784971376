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
