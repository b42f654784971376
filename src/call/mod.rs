//! The B2BUA: calls between extensions, each call two legs (the caller's dialog and one
//! dialog per fork towards the callee's contacts), media anchored in the relay, a CDR at
//! the end.
//!
//! Owns: call policy (who is called, forking, which final response the caller gets, when
//! to give up), the SDP rewriting between the legs (through `sip::sdp`), the relay of one
//! call ([`crate::media::RelayHandle`]), the call's rows in the store (`active_calls`, the
//! CDR). Must not: parse bytes, touch sockets or the transaction layer: the node's core
//! task owns that one and routes a call's messages here; a call answers through
//! [`CoreCommand`]s.
//!
//! Split: [`machine::Call`] is the sans-IO state machine (one per call, owning both legs'
//! [`crate::sip::dialog::DialogSet`]), fed events with `now` and returning [`Command`]s;
//! unit-tested with a fake clock. [`task`] is the thin tokio task per call around it: it
//! forwards SIP commands to the core, drives the relay, and writes the store.
//!
//! Calls to a number an app answers (IVR, voicemail...) have one leg: [`app_leg::AppLeg`]
//! (sans-IO UAS) in [`app_task`], with a media endpoint instead of the relay; the app
//! drives it through the [`channel::Channel`] API. An app's bridge dials a leg of its own:
//! [`out_leg::OutLeg`] (sans-IO UAC, parallel forking), with a second media endpoint
//! linked to the caller's.

pub mod app_leg;
pub mod app_task;
pub mod channel;
pub mod codecs;
mod forks;
pub mod lookup;
pub mod machine;
pub mod out_leg;
mod own_leg;
pub mod records;
pub mod task;
#[cfg(test)]
pub(crate) mod test_sip;

use thiserror::Error;

pub use app_task::{
    app, spawn_app_call, AppFn, AppTaskParams, Apps, SipChannel, SoundLibrary, TargetResolver,
};
pub use channel::Channel;
pub use machine::{
    Call, CallParams, CallSettings, Command, DialOutcome, Disposition, HangupLeg, RecordSettings,
    SipIn, Target,
};
pub use records::{spawn_writer, CallLog};
pub use task::{
    spawn_call, CallHandle, CallInput, CallRef, CallerLeg, CoreCommand, Fallback, Record,
    TaskParams, CALL_QUEUE,
};

/// Why a call could not start or could not be recorded. Mapped to SIP statuses in
/// [`CallError::status`], the one place.
#[derive(Debug, Error)]
pub enum CallError {
    #[error("the INVITE carries no SDP offer")]
    NoOffer,
    #[error("the SDP offer is unusable: {0}")]
    BadOffer(String),
    #[error("no audio stream in the offer")]
    NoAudio,
    #[error("none of the offered codecs is one the media engine has")]
    NoCodec,
    #[error("dialog: {0}")]
    Dialog(#[from] crate::sip::dialog::DialogError),
    #[error("media: {0}")]
    Media(#[from] crate::media::MediaError),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
}

impl CallError {
    /// The final response the caller gets when its call cannot start for this reason.
    pub fn status(&self) -> u16 {
        match self {
            CallError::NoOffer | CallError::NoAudio | CallError::NoCodec => 488,
            CallError::BadOffer(_) => 400,
            CallError::Dialog(e) => e.status(),
            CallError::Media(_) | CallError::Store(_) => 503,
        }
    }
}
