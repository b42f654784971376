//! Real audio through the node: two baresip phones registered to it call each other;
//! each sends its own tone (440 Hz from the caller, 1000 Hz from the callee) and the test
//! checks that each heard the other's tone for about the whole call. With a shared codec
//! the relay forwards packets untouched; with none (Opus-only against PCMU-only) the node
//! transcodes.

use std::time::Duration;

use crate::baresip::{Baresip, PhoneSetup};
use crate::support::{free_port, wait_for, Node, NodeOptions};

const PASSWORD: &str = "audio-test-pass";
pub const CALLER_HZ: u32 = 440;
pub const CALLEE_HZ: u32 = 1000;

fn audio_node() -> Node {
    let mut node = Node::new(NodeOptions {
        extra: "[media]\nrtp_port_min = 41000\nrtp_port_max = 41998\n".into(),
        ..NodeOptions::default()
    });
    node.add_extension("100", PASSWORD);
    node.add_extension("200", PASSWORD);
    node.start();
    node
}

/// 100 (offering `caller_codecs`) calls 200 (accepting `callee_codecs`); both must hear
/// the other's tone; the CDR says answered, for about the tone's length.
fn call_and_listen(node: &Node, caller_codecs: &str, callee_codecs: &str) {
    let phone = |number, tone_hz, codecs| PhoneSetup {
        number,
        password: PASSWORD,
        registrar: node.addr(),
        ip: "127.0.0.1",
        sip_port: free_port(),
        tone_hz,
        netns: None,
        codecs,
    };
    let mut callee = Baresip::new(node.dir.path(), &phone("200", CALLEE_HZ, callee_codecs));
    let mut caller = Baresip::new(node.dir.path(), &phone("100", CALLER_HZ, caller_codecs));
    callee.start(&[], Duration::from_secs(40));
    callee.wait_registered();
    caller.start(&["/dial 200".to_owned()], Duration::from_secs(30));

    caller.wait_call_ended(Duration::from_secs(25));
    callee.wait_call_ended(Duration::from_secs(5));
    caller
        .received()
        .assert_tone("the caller", CALLEE_HZ, CALLER_HZ);
    callee
        .received()
        .assert_tone("the callee", CALLER_HZ, CALLEE_HZ);

    let cdr = wait_for("the CDR", Duration::from_secs(10), || {
        node.cli_ok(&["cdr", "--limit", "1"])
            .lines()
            .next()
            .map(str::to_owned)
    });
    let fields: Vec<&str> = cdr.split('\t').collect();
    assert_eq!(fields.get(1), Some(&"100"), "{cdr}");
    assert_eq!(fields.get(2), Some(&"200"), "{cdr}");
    assert_eq!(fields.get(3), Some(&"answered"), "{cdr}");
    let duration: f64 = fields
        .get(4)
        .and_then(|d| d.strip_prefix("duration="))
        .and_then(|d| d.trim_end_matches('s').parse().ok())
        .unwrap_or_else(|| panic!("no duration in {cdr}"));
    assert!(
        (3.0..=8.0).contains(&duration),
        "the call lasted about the tone: {cdr}"
    );
    caller.stop();
    callee.stop();
}

#[test]
fn two_baresip_phones_hear_each_other_through_the_relay() {
    let mut node = audio_node();
    call_and_listen(&node, "PCMU,PCMA", "PCMU,PCMA");
    assert!(
        !node.log_text().contains("transcoding"),
        "a shared codec is relayed"
    );
    node.stop();
}

#[test]
fn an_opus_only_phone_and_a_pcmu_only_phone_hear_each_other_transcoded() {
    let mut node = audio_node();
    call_and_listen(&node, "opus/48000/2", "PCMU");
    assert!(
        node.log_text().contains("transcoding"),
        "{}",
        node.log_text()
    );
    node.stop();
}
