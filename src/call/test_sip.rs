//! What the call layer's unit tests share: a peer, a request parsed from text as a phone
//! would send it, and the settings of a test call (RFC 3261 timers, no session timer, no
//! 100rel of ours, default codecs, no recording).

use std::time::Duration;

use crate::media::codec::{CodecList, CodecParams};
use crate::sip::dialog::DialogConfig;
use crate::sip::message::{self, Request, SipMessage};
use crate::sip::transaction::Timers;
use crate::sip::{Peer, Transport};

use super::machine::CallSettings;

/// A UDP phone at `remote`, reached from the PBX's 203.0.113.1:5060.
pub fn peer(remote: &str) -> Peer {
    Peer {
        transport: Transport::Udp,
        remote: remote.parse().expect("addr"),
        local: "203.0.113.1:5060".parse().expect("addr"),
        conn: None,
    }
}

/// `head` (LF line ends) and `body` as one request with its Content-Length.
pub fn parse_req(head: &str, body: &str) -> Request {
    let text = format!(
        "{}\r\nContent-Length: {}\r\n\r\n{body}",
        head.trim_end().replace('\n', "\r\n"),
        body.len()
    );
    match message::parse(text.as_bytes()) {
        Ok(SipMessage::Request(r)) => r,
        other => panic!("not a request: {other:?}"),
    }
}

pub fn settings() -> CallSettings {
    CallSettings {
        no_answer_timeout: Duration::from_secs(30),
        dialog: DialogConfig {
            timers: Timers::default(),
            session_expires: None,
            support_100rel: false,
            ..DialogConfig::default()
        },
        codec: CodecParams::default(),
        codecs: CodecList::default(),
        record: None,
    }
}
