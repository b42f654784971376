//! Feeds arbitrary bytes to everything in `sip::message` that faces the network.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringfort::sip::message::{error_response_for, parse, Frame, SipMessage, StreamFramer};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(msg) => {
            // Whatever parses must serialize into something that parses again.
            let again = parse(&msg.to_bytes()).expect("serialized message parses");
            assert_eq!(again.to_bytes(), msg.to_bytes());
        }
        Err(err) => {
            if let Some(resp) = error_response_for(data, &err) {
                let _ = parse(&SipMessage::Response(resp).to_bytes());
            }
        }
    }
    let mut framer = StreamFramer::new(64 * 1024);
    for chunk in data.chunks(13) {
        framer.push(chunk);
        while let Ok(Some(frame)) = framer.next_frame() {
            if let Frame::Message(m) = frame {
                let _ = parse(&m);
            }
        }
    }
});
