//! Apps: IVR menus, voicemail, conference rooms, built on the call layer's
//! [`crate::call::Channel`] and the media engine.
//!
//! Owns: what an app does with a call. Must not: open sockets, or reach under the channel
//! into SIP or RTP. Apps are written as `async fn(&mut impl Channel, ...)` so they run on
//! real calls ([`crate::call::SipChannel`]) and, in unit tests, on [`fake::FakeChannel`].

pub mod dialplan;
pub mod fake;
pub mod voicemail;
