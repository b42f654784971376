//! The API apps are written against: one call leg the PBX answers itself, as a
//! [`Channel`] with `answer`, `play`, `record`, `collect_digits`, `hangup`.
//!
//! Owns: the trait and its plain types (options, outcomes, errors). Must not: know how a
//! channel is carried out: [`super::app_task::SipChannel`] does it over SIP and the
//! media endpoint, `crate::apps::fake::FakeChannel` in memory for tests of apps.
//!
//! Contract, the same for every implementation:
//! - Key presses are never lost: every digit the caller presses (RFC 4733, in-band or
//!   INFO) goes into the channel's buffer, whatever operation runs, and
//!   [`Channel::collect_digits`] takes from that buffer first (type-ahead: a caller may
//!   answer a menu before its prompt ends). [`Channel::flush_digits`] empties it.
//! - Cancel-safe: dropping an operation's future stops what it started (the prompt stops,
//!   the recording is closed and kept); digits pressed meanwhile stay in the buffer.
//! - Once the caller hangs up, every operation returns [`ChannelError::HungUp`] at once,
//!   so an app unwinds with `?`; except a recording in progress, which a hang-up ends
//!   normally (that is how callers finish a message): `record` returns the file, closed
//!   at the hang-up, with [`RecordEnd::HungUp`].

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::media::dtmf::Digit;
pub use crate::media::endpoint::{PlayEnd, RecordEnd, RecordLimits};

/// What an operation on a channel can fail with.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ChannelError {
    #[error("the caller hung up")]
    HungUp,
    #[error("sound {path}: {reason}")]
    Sound { path: PathBuf, reason: String },
    #[error("recording {path}: {reason}")]
    Recording { path: PathBuf, reason: String },
    #[error("the call's media is gone")]
    MediaGone,
    #[error("conference {room}: {reason}")]
    Conference { room: String, reason: String },
}

/// One entry of a playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sound {
    /// A sound; a relative path is under the `sounds` folder (`[paths] sounds`), and a
    /// name without extension finds its `.wav` or `.flac` (`Sound::file("vm/you-have")`).
    File(PathBuf),
    /// Silence of this many milliseconds (a pause between prompts).
    Silence(u32),
}

impl Sound {
    pub fn file(path: impl Into<PathBuf>) -> Sound {
        Sound::File(path.into())
    }
}

/// How to play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlayOptions {
    /// A key press stops the playlist (the digit stays in the buffer); a key already
    /// typed ahead skips it (nothing plays).
    pub barge_in: bool,
    /// Start over at the end until stopped (music on hold): the future only ends by
    /// barge-in, by being dropped, or by the caller hanging up.
    pub looping: bool,
}

/// How to collect digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectOptions {
    /// Stop after this many digits (terminators not counted).
    pub max_digits: usize,
    /// How long to wait for the first digit.
    pub first_timeout: Duration,
    /// How long to wait for each next digit.
    pub inter_digit_timeout: Duration,
    /// Keys that end the input (not included in the digits).
    pub terminators: Vec<Digit>,
}

impl Default for CollectOptions {
    fn default() -> Self {
        CollectOptions {
            max_digits: 1,
            first_timeout: Duration::from_secs(5),
            inter_digit_timeout: Duration::from_secs(3),
            terminators: vec![Digit::Hash],
        }
    }
}

/// Why collecting ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollectEnd {
    MaxDigits,
    Terminator(Digit),
    Timeout,
}

/// What [`Channel::collect_digits`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collected {
    /// The keys, as typed (`0-9`, `*`, `#`, `A-D`).
    pub digits: String,
    pub end: CollectEnd,
}

/// A finished recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub path: PathBuf,
    pub duration: Duration,
    pub end: RecordEnd,
}

/// How to be in a conference.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConferenceOptions {
    /// Heard by nobody (a listener).
    pub muted: bool,
    /// Hears nothing.
    pub deaf: bool,
    /// Keys that take the caller out of the room (consumed).
    pub leave_keys: Vec<Digit>,
    /// The room's moderator: `1` mutes everyone else, pressed again unmutes them.
    pub moderator: bool,
    /// Join and leave tones, when this caller starts the room.
    pub announce: bool,
}

/// The key a moderator mutes (and unmutes) the others with.
pub const MODERATOR_MUTE_KEY: Digit = Digit::D1;

/// Why [`Channel::join_conference`] returned (while the caller is still on the line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConferenceEnd {
    /// One of the leave keys was pressed.
    Key(Digit),
}

/// Whom [`Channel::bridge`] rings: extension numbers, all at once (every registered
/// phone of each).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BridgeRequest {
    pub numbers: Vec<String>,
}

impl BridgeRequest {
    /// Rings one extension.
    pub fn to(number: impl Into<String>) -> BridgeRequest {
        BridgeRequest {
            numbers: vec![number.into()],
        }
    }
}

/// How to bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeOptions {
    /// Give up ringing after this long ([`BridgeEnd::NoAnswer`]).
    pub ring_timeout: Duration,
    /// The caller hears ringing meanwhile: a 180 when the call is not answered yet, else
    /// a ringback tone played to it.
    pub ringback: bool,
}

impl Default for BridgeOptions {
    fn default() -> Self {
        BridgeOptions {
            ring_timeout: Duration::from_secs(30),
            ringback: true,
        }
    }
}

/// Which side of a bridge hung up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeSide {
    Caller,
    Callee,
}

/// How [`Channel::bridge`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeEnd {
    /// Someone answered and the two talked until `hangup_by` hung up. After the callee
    /// hangs up the caller is still on the line: the app decides (usually hangs up);
    /// after the caller, every later operation returns [`ChannelError::HungUp`].
    Answered { hangup_by: BridgeSide },
    /// Every phone was busy (or declined).
    Busy,
    /// It rang until the ring timeout (or the phones gave up).
    NoAnswer,
    /// Nothing rang: no registered phone, none reachable, or no common codec.
    Unavailable,
}

/// Who is calling whom.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallInfo {
    /// The store's id of the call (the CDR's).
    pub id: String,
    /// The calling extension.
    pub caller: String,
    /// The number dialled.
    pub dialled: String,
}

/// One call leg an app drives. See the module comment for the contract.
pub trait Channel: Send {
    fn info(&self) -> &CallInfo;

    /// Lets the caller hear ringing (before [`Channel::answer`]).
    fn ring(&mut self) -> impl Future<Output = Result<(), ChannelError>> + Send;

    /// Answers the call; media flows from then on.
    fn answer(&mut self) -> impl Future<Output = Result<(), ChannelError>> + Send;

    /// Plays a playlist to the caller.
    fn play(
        &mut self,
        sounds: &[Sound],
        opts: PlayOptions,
    ) -> impl Future<Output = Result<PlayEnd, ChannelError>> + Send;

    /// Records what the caller says to a new WAV file at `path` (mono, the leg's rate),
    /// until one of `limits` ends it; the file is complete and playable whatever ends it.
    fn record(
        &mut self,
        path: PathBuf,
        limits: RecordLimits,
    ) -> impl Future<Output = Result<Recorded, ChannelError>> + Send;

    /// Collects key presses (the buffer first).
    fn collect_digits(
        &mut self,
        opts: CollectOptions,
    ) -> impl Future<Output = Result<Collected, ChannelError>> + Send;

    /// Puts the caller in conference room `room` (started on first join) until a leave key
    /// or a hang-up; the room hears the caller and the caller hears the room, less itself.
    fn join_conference(
        &mut self,
        room: &str,
        opts: ConferenceOptions,
    ) -> impl Future<Output = Result<ConferenceEnd, ChannelError>> + Send;

    /// Rings `dial`'s extensions and, when one answers, connects the caller to it (the
    /// caller is answered then if it was not yet) until one of them hangs up. While the
    /// two talk, the caller's key presses go to the callee (and not to the buffer), the
    /// callee's to the caller. Dropping the future hangs up the dialled leg (CANCEL or
    /// BYE). A caller hanging up before an answer is [`ChannelError::HungUp`].
    fn bridge(
        &mut self,
        dial: BridgeRequest,
        opts: BridgeOptions,
    ) -> impl Future<Output = Result<BridgeEnd, ChannelError>> + Send;

    /// Forgets the key presses buffered so far.
    fn flush_digits(&mut self);

    /// Ends the call (BYE once answered, else `480`).
    fn hangup(&mut self) -> impl Future<Output = Result<(), ChannelError>> + Send;

    /// Ends a call not answered yet with `status` (400-699; e.g. 486 busy, 404); an
    /// answered one is hung up.
    fn refuse(&mut self, status: u16) -> impl Future<Output = Result<(), ChannelError>> + Send;
}

/// Collects from a buffer of typed-ahead digits: what [`Channel::collect_digits`] starts
/// with. Returns the result when the buffer alone settles it.
pub fn collect_from(
    buffer: &mut std::collections::VecDeque<Digit>,
    got: &mut String,
    opts: &CollectOptions,
) -> Option<Collected> {
    while let Some(d) = buffer.pop_front() {
        if let Some(end) = take_digit(d, got, opts) {
            return Some(Collected {
                digits: std::mem::take(got),
                end,
            });
        }
    }
    None
}

/// Adds one key press to `got`; the end it makes, if any.
pub fn take_digit(d: Digit, got: &mut String, opts: &CollectOptions) -> Option<CollectEnd> {
    if opts.terminators.contains(&d) {
        return Some(CollectEnd::Terminator(d));
    }
    got.push(d.to_char());
    (got.len() >= opts.max_digits).then_some(CollectEnd::MaxDigits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    #[test]
    fn type_ahead_digits_settle_a_collection_up_to_its_end_and_keep_the_rest() {
        let mut buf: VecDeque<Digit> = [Digit::D1, Digit::D2, Digit::Hash, Digit::D9].into();
        let opts = CollectOptions {
            max_digits: 4,
            ..CollectOptions::default()
        };
        let mut got = String::new();
        assert_eq!(
            collect_from(&mut buf, &mut got, &opts),
            Some(Collected {
                digits: "12".into(),
                end: CollectEnd::Terminator(Digit::Hash)
            })
        );
        assert_eq!(buf, VecDeque::from([Digit::D9]));
        // Not enough yet: the digits so far stay in `got` for the live part.
        assert_eq!(collect_from(&mut buf, &mut got, &opts), None);
        assert_eq!(got, "9");
        let one = CollectOptions::default();
        let mut got = String::new();
        assert_eq!(
            take_digit(Digit::Star, &mut got, &one),
            Some(CollectEnd::MaxDigits)
        );
        assert_eq!(got, "*");
    }
}
