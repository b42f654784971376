//! Real audio through the node: two baresip phones registered to it call each other;
//! each sends its own tone (440 Hz from the caller, 1000 Hz from the callee) and the test
//! checks that each heard the other's tone for about the whole call. With a shared codec
//! the relay forwards packets untouched; with none (Opus-only against PCMU-only) the node
//! transcodes. With `[calls] record = "stereo"` the node's recording of the call holds
//! the caller's tone on the left and the callee's on the right.

use std::time::Duration;

use crate::baresip::{Baresip, PhoneSetup};
use crate::support::{free_port, wait_for, Node, NodeOptions};

const PASSWORD: &str = "audio-test-pass";
pub const CALLER_HZ: u32 = 440;
pub const CALLEE_HZ: u32 = 1000;

fn audio_node() -> Node {
    let mut node = audio_node_with("");
    node.start();
    node
}

/// An audio node with `calls` as its `[calls]` section, not started yet.
fn audio_node_with(calls: &str) -> Node {
    let node = Node::new(NodeOptions {
        extra: format!("[media]\nrtp_port_min = 41000\nrtp_port_max = 41998\n[calls]\n{calls}\n"),
        ..NodeOptions::default()
    });
    node.add_extension("100", PASSWORD);
    node.add_extension("200", PASSWORD);
    node
}

/// 100 (offering `caller_codecs`) calls 200 (accepting `callee_codecs`); both must hear
/// the other's tone; the CDR says answered, for about the tone's length. Returns the CDR
/// line.
fn call_and_listen(node: &Node, caller_codecs: &str, callee_codecs: &str) -> String {
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
    cdr
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

/// Power at `hz` per sample squared (Goertzel), comparable across lengths.
fn power_at(pcm: &[i16], rate: u32, hz: u32) -> f64 {
    let c = 2.0 * (std::f64::consts::TAU * f64::from(hz) / f64::from(rate)).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for x in pcm {
        let s0 = f64::from(*x) + c * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - c * s1 * s2) / (pcm.len().max(1) as f64).powi(2)
}

#[test]
fn a_recorded_call_holds_the_caller_left_and_the_callee_right() {
    let mut node = audio_node_with("record = \"stereo\"");
    // A recording a crash cut short (its header still says empty) is made playable at
    // start.
    let dir = node.dir.path().join("data/recordings");
    std::fs::create_dir_all(&dir).expect("recordings folder");
    let cut = dir.join("cut-by-a-crash.wav");
    let mut w = hound::WavWriter::create(
        &cut,
        hound::WavSpec {
            channels: 2,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        },
    )
    .expect("a WAV");
    for i in 0..1600 {
        w.write_sample(i as i16).expect("sample");
    }
    w.flush().expect("flush");
    std::mem::forget(w);
    let mut bytes = std::fs::read(&cut).expect("read");
    bytes[4..8].copy_from_slice(&36u32.to_le_bytes());
    bytes[40..44].copy_from_slice(&0u32.to_le_bytes());
    std::fs::write(&cut, &bytes).expect("write");
    node.start();
    assert!(
        node.log_text()
            .contains("recording cut by a crash repaired"),
        "{}",
        node.log_text()
    );
    let repaired = hound::WavReader::open(&cut).expect("repaired");
    assert_eq!(repaired.len(), 1600);

    let cdr = call_and_listen(&node, "PCMU,PCMA", "PCMU,PCMA");
    let path = cdr
        .split('\t')
        .find_map(|f| f.strip_prefix("recording="))
        .unwrap_or_else(|| panic!("the CDR names no recording: {cdr}"));
    let duration: f64 = cdr
        .split('\t')
        .find_map(|f| f.strip_prefix("duration="))
        .and_then(|d| d.trim_end_matches('s').parse().ok())
        .expect("duration");
    let mut wav = hound::WavReader::open(path).expect("the recording is a WAV file");
    let spec = wav.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (2, 8000, 16),
        "PCMU on both legs: 8 kHz stereo"
    );
    let samples: Vec<i16> = wav
        .samples::<i16>()
        .collect::<Result<_, _>>()
        .expect("samples");
    let secs = samples.len() as f64 / 2.0 / 8000.0;
    // The CDR counts whole seconds from answer to hang-up; the file runs over the same.
    assert!(
        (duration - 1.5..=duration + 1.5).contains(&secs),
        "a {secs:.2} s recording of a {duration} s call"
    );
    let left: Vec<i16> = samples.iter().step_by(2).copied().collect();
    let right: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
    for (side, pcm, hz, other) in [
        ("left", &left, CALLER_HZ, CALLEE_HZ),
        ("right", &right, CALLEE_HZ, CALLER_HZ),
    ] {
        let (want, unwanted) = (power_at(pcm, 8000, hz), power_at(pcm, 8000, other));
        assert!(
            want > 100.0 * unwanted,
            "{side} channel: power at {hz} Hz {want:e} is not 20 dB over {other} Hz {unwanted:e}"
        );
        // Tone in every 100 ms from the first to the last (a 0.5 full-scale sine has an
        // RMS of 11600; silence is 0).
        let loud = pcm
            .chunks(800)
            .filter(|c| {
                (c.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / c.len() as f64).sqrt()
                    > 5000.0
            })
            .count() as f64
            / 10.0;
        assert!(
            loud >= secs - 0.5,
            "{side} channel holds {loud:.1} s of tone in {secs:.2} s"
        );
    }
    assert!(node.log_text().contains("recording finished"));
    node.stop();
}
