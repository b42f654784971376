//! What the two legs the PBX ends on its own media endpoint share
//! ([`super::app_leg::AppLeg`], the caller's leg of an app; [`super::out_leg::OutLeg`],
//! the leg an app dials): the SDP they send, and their answers to in-dialog INFO and
//! OPTIONS.
//!
//! Owns: those two pure pieces. Must not: hold a leg's state or touch its dialog.

use std::net::IpAddr;

use tracing::info;

use crate::media::dtmf::{parse_info, Digit, InfoFormat};
use crate::sip::dialog::{Body, MsgOpts};
use crate::sip::message::{HeaderName, Method, Request};
use crate::sip::sdp::{Connection, MediaDescription, OriginState, SessionDescription, Timing};

use super::machine::ALLOW;

const SDP: &str = "application/sdp";

/// Our SDP with `media` on `media_ip`, its origin version stepped by `origin`.
pub(super) fn endpoint_sdp(
    media_ip: IpAddr,
    origin: &mut OriginState,
    media: Vec<MediaDescription>,
) -> Body {
    let mut sdp = SessionDescription {
        session_name: "ringfort".into(),
        connection: Some(Connection::from_ip(media_ip)),
        times: vec![Timing {
            start: 0,
            stop: 0,
            repeats: Vec::new(),
        }],
        media,
        ..SessionDescription::default()
    };
    origin.stamp(&mut sdp);
    Body::new(SDP, sdp.to_string().into_bytes())
}

/// The answer to an in-dialog request other than INVITE and UPDATE: an INFO with a key
/// press (200, and the key), an INFO of another package (415, RFC 6086 4.2.2) or a bad
/// one (400), OPTIONS (200 with what we take), anything else 501.
pub(super) fn answer_in_dialog(req: &Request) -> (u16, MsgOpts, Option<Digit>) {
    match &req.method {
        Method::Info => {
            let format = req
                .headers
                .get(&HeaderName::ContentType)
                .and_then(InfoFormat::from_content_type);
            match format.map(|f| parse_info(f, &req.body)) {
                Some(Ok(d)) => {
                    info!(digit = %d.digit, "DTMF by INFO");
                    (200, MsgOpts::default(), Some(d.digit))
                }
                Some(Err(e)) => {
                    info!(error = %e, "bad DTMF INFO");
                    (400, MsgOpts::default(), None)
                }
                None => (415, MsgOpts::default(), None),
            }
        }
        Method::Options => {
            let opts = MsgOpts {
                headers: vec![
                    (HeaderName::Allow, ALLOW.into()),
                    (HeaderName::Other("Accept".into()), SDP.into()),
                ],
                ..MsgOpts::default()
            };
            (200, opts, None)
        }
        _ => (501, MsgOpts::default(), None),
    }
}
