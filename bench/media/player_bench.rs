//! Player benchmark: "player streams per core". A player stream is one call hearing a
//! prompt or music on hold from the PBX: a `ringfort::media::endpoint::Endpoint` (the
//! sans-IO core of an app's leg) playing a looping playlist, fed the phone's RTP and
//! ticked every 20 ms, as `endpoint_task` does. Not part of the test suite.
//!
//!   player_bench [streams=200] [seconds=10] [cases=pcmu-te,pcmu,g722-te,opus-te] [prompt.wav]
//!
//! Cases: a codec (`pcmu`, `pcma`, `g722`, `opus`), with `-te` when the leg negotiated
//! telephone-event (key presses come as RFC 4733 packets), without it the endpoint runs
//! its in-band DTMF detector over the phone's decoded audio (resampled to 8 kHz for
//! G.722 and Opus). Each tick, per stream: one incoming packet (`on_rtp`: the jitter
//! buffer) and `on_tick`, which plays out one frame of the phone's stream (decode, DTMF
//! detection) and encodes one packet of the prompt.
//!
//! The prompt is the 12 s of real speech in `tests/data/speech/speech-8k.s16` (espeak-ng,
//! 8 kHz; converted once to the endpoint's rate, as `Prompt::load` converts a file), so
//! the encoder codes speech, not a tone; 8 copies start at different points so the
//! streams do not all encode the same frame. A WAV/FLAC file given as the last argument
//! is played instead (`media::player::Prompt::load`). The phones send the same speech,
//! encoded once before the run in the leg's codec at the endpoint's rate, looped, each
//! phone from its own offset with its own SSRC, seq and timestamps: the bench measures
//! the endpoint, not the phone. Call time is simulated (a fake clock advanced 20 ms per
//! tick, every stream ticked per tick, no sleeping), as fast as one thread goes.
//!
//! Prints per case: CPU per stream-tick (process CPU time from /proc/self/stat over the
//! measured ticks, after a 1 s warm-up), the % of one core a stream costs
//! (`us per stream-tick / 20,000 us x 100`), the streams one core carries, the split
//! between `on_rtp` and `on_tick` (wall time), the heap allocations per tick in the
//! steady state (a counting global allocator; the goal is 0) and the digits the endpoints
//! reported (in-band detection must not hear digits in speech: "talk-off"), and the bit
//! rate each stream sends (RTP headers included).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringfort::media::codec::{self, CodecKind, CodecParams};
use ringfort::media::endpoint::{Endpoint, EndpointEvent};
use ringfort::media::player::{self, Item, Prompt};
use ringfort::media::transcode::LegFormat;

#[path = "../alloc_count.rs"]
mod alloc_count;
use alloc_count::allocations;

const SPEECH: &[u8] = include_bytes!("../../tests/data/speech/speech-8k.s16");
/// Copies of the prompt, each starting elsewhere in it.
const PROMPTS: usize = 8;
const WARMUP_TICKS: usize = 50;
const TICK: Duration = Duration::from_millis(20);

/// utime + stime of this process, in seconds (10 ms grain).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of the whole line are 12 and 13 after the comm field.
    (ticks(11) + ticks(12)) / 100.0
}

struct Case {
    name: String,
    format: LegFormat,
}

fn case(name: &str) -> Option<Case> {
    let (codec, te) = match name.strip_suffix("-te") {
        Some(c) => (c, true),
        None => (name, false),
    };
    let (kind, pt) = match codec {
        "pcmu" => (CodecKind::Pcmu, 0),
        "pcma" => (CodecKind::Pcma, 8),
        "g722" => (CodecKind::G722, 9),
        "opus" => (CodecKind::Opus, 111),
        _ => return None,
    };
    Some(Case {
        name: name.to_string(),
        format: LegFormat {
            dtmf_pt: te.then_some(101),
            ..LegFormat::new(kind, pt)
        },
    })
}

/// The phone's payloads: `pcm` in 20 ms frames of `kind` at `rate`.
fn encode_all(kind: CodecKind, rate: u32, pcm: &[i16]) -> Vec<Vec<u8>> {
    let mut enc = codec::encoder(kind, rate, CodecParams::default()).expect("phone encoder");
    let mut buf = [0u8; 1500];
    pcm.chunks_exact(rate as usize / 50)
        .map(|f| {
            let n = enc.encode(f, &mut buf).expect("phone encode");
            buf[..n].to_vec()
        })
        .collect()
}

/// One phone's stream: where it is in the payloads and its RTP identity.
struct Phone {
    offset: usize,
    ssrc: u32,
    seq: u16,
    ts: u32,
}

struct Report {
    ticks: usize,
    cpu_s: f64,
    wall: Duration,
    rtp: Duration,
    tick: Duration,
    allocs: u64,
    packets_out: u64,
    bytes_out: u64,
    digits: u64,
    other_events: u64,
}

fn run(case: &Case, streams: usize, seconds: usize, prompt_file: Option<&Path>) -> Report {
    let kind = case.format.codec;
    let rate = Endpoint::rate_for(kind);
    let speech8k: Vec<i16> = SPEECH
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let speech = player::resample(&speech8k, 8000, rate).expect("speech at the leg's rate");
    let prompts: Vec<Arc<Prompt>> = match prompt_file {
        Some(path) => vec![Arc::new(Prompt::load(path, rate).expect("prompt file"))],
        None => (0..PROMPTS)
            .map(|k| {
                let mut s = speech.clone();
                s.rotate_left(k * speech.len() / PROMPTS);
                Arc::new(Prompt::from_samples(format!("speech-{k}"), rate, s))
            })
            .collect(),
    };
    let payloads = encode_all(kind, rate, &speech);
    let tick_ts = kind.clock_rate() / 50;

    let mut events = Vec::with_capacity(64);
    let mut endpoints: Vec<Endpoint> = (0..streams)
        .map(|i| {
            let mut ep = Endpoint::new(case.format, 0x5000 + i as u32, i as u16, 7 * i as u32)
                .expect("endpoint");
            let prompt = prompts[i % prompts.len()].clone();
            ep.play(1, vec![Item::Sound(prompt)], true, false, &mut events)
                .expect("play");
            ep
        })
        .collect();
    let mut phones: Vec<Phone> = (0..streams)
        .map(|i| Phone {
            offset: (i * 37) % payloads.len(),
            ssrc: 0x9000 + i as u32,
            seq: (i * 1000) as u16,
            ts: (i as u32).wrapping_mul(123_457),
        })
        .collect();

    let ticks = seconds * 50;
    let mut packet = [0u8; 1500];
    let (mut packets_out, mut bytes_out) = (0u64, 0u64);
    let (mut digits, mut other_events) = (0u64, 0u64);
    let (mut rtp, mut tick_time) = (Duration::ZERO, Duration::ZERO);
    let (mut cpu0, mut wall0, mut allocs0) = (0.0, Instant::now(), 0);
    let t0 = Instant::now();
    for t in 0..WARMUP_TICKS + ticks {
        if t == WARMUP_TICKS {
            (packets_out, bytes_out, digits, other_events) = (0, 0, 0, 0);
            (rtp, tick_time) = (Duration::ZERO, Duration::ZERO);
            cpu0 = cpu_seconds();
            wall0 = Instant::now();
            allocs0 = allocations();
        }
        // The packets of tick t arrive at t x 20 ms, then the tick runs.
        let now = t0 + TICK * t as u32;
        let a = Instant::now();
        for (ep, phone) in endpoints.iter_mut().zip(phones.iter_mut()) {
            let payload = &payloads[(phone.offset + t) % payloads.len()];
            packet[0] = 0x80;
            packet[1] = case.format.pt;
            packet[2..4].copy_from_slice(&phone.seq.to_be_bytes());
            packet[4..8].copy_from_slice(&phone.ts.to_be_bytes());
            packet[8..12].copy_from_slice(&phone.ssrc.to_be_bytes());
            packet[12..12 + payload.len()].copy_from_slice(payload);
            phone.seq = phone.seq.wrapping_add(1);
            phone.ts = phone.ts.wrapping_add(tick_ts);
            ep.on_rtp(&packet[..12 + payload.len()], now, &mut events);
        }
        let b = Instant::now();
        for ep in endpoints.iter_mut() {
            ep.on_tick(
                now,
                &mut |p| {
                    packets_out += 1;
                    bytes_out += p.len() as u64;
                },
                &mut events,
            );
        }
        let c = Instant::now();
        rtp += b - a;
        tick_time += c - b;
        for e in events.drain(..) {
            match e {
                EndpointEvent::Digit { .. } => digits += 1,
                _ => other_events += 1,
            }
        }
    }
    let wall = wall0.elapsed();
    // Read before cpu_seconds(), which allocates.
    let allocs = allocations() - allocs0;
    let cpu_s = cpu_seconds() - cpu0;
    Report {
        ticks,
        cpu_s,
        wall,
        rtp,
        tick: tick_time,
        allocs,
        packets_out,
        bytes_out,
        digits,
        other_events,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let streams: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let seconds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let cases = args
        .get(3)
        .map(String::as_str)
        .unwrap_or("pcmu-te,pcmu,g722-te,opus-te");
    let prompt_file = args.get(4).map(Path::new);
    println!(
        "{:<8} {:>5} {:>6} {:>7} {:>13} {:>11} {:>12} {:>8} {:>8} {:>11} {:>8} {:>7} {:>7}",
        "case",
        "N",
        "ticks",
        "cpu_s",
        "us/strm-tick",
        "%core/strm",
        "streams/core",
        "rtp_us",
        "tick_us",
        "allocs/tick",
        "kbit/s",
        "pkts_ok",
        "digits"
    );
    for name in cases.split(',') {
        let Some(c) = case(name) else {
            eprintln!("unknown case {name} (pcmu, pcma, g722, opus; -te for telephone-event)");
            std::process::exit(2);
        };
        let r = run(&c, streams, seconds, prompt_file);
        let stream_ticks = (streams * r.ticks) as f64;
        // The /proc figure has a 10 ms grain; over a short run wall time is the better one.
        let cpu = if r.cpu_s >= 0.5 {
            r.cpu_s
        } else {
            r.wall.as_secs_f64()
        };
        let us = cpu * 1e6 / stream_ticks;
        let pct = us / 20_000.0 * 100.0;
        let per = |d: Duration| d.as_secs_f64() * 1e6 / stream_ticks;
        println!(
            "{:<8} {:>5} {:>6} {:>7.2} {:>13.2} {:>11.4} {:>12.0} {:>8.2} {:>8.2} {:>11.3} {:>8.1} {:>7} {:>7}",
            c.name,
            streams,
            r.ticks,
            r.cpu_s,
            us,
            pct,
            100.0 / pct,
            per(r.rtp),
            per(r.tick),
            r.allocs as f64 / r.ticks as f64,
            // RTP (header included) per stream, as sent.
            r.bytes_out as f64 * 8.0 / (stream_ticks / 50.0) / 1000.0,
            if r.packets_out == stream_ticks as u64 && r.other_events == 0 {
                "yes"
            } else {
                "NO"
            },
            r.digits,
        );
    }
}
