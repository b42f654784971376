//! Transcoding benchmark: CPU per transcoded call, both directions, through
//! `ringfort::media::transcode` (the code calls run when their phones share no codec).
//! Not part of the test suite.
//!
//!   transcode_bench [calls=100] [seconds=12] [pair=opus-pcmu|g722-pcmu|pcmu-pcma]
//!
//! Input: the 12 s of real speech in `tests/data/speech/speech-8k.s16` (espeak-ng,
//! 8 kHz), looped, packetized in 20 ms RTP packets of both codecs beforehand (the phones'
//! encoding is not ours to count). Each call is a pair of transcoders (A->B and B->A) fed
//! one packet each per 20 ms of call time and ticked (jitter buffer, decode, re-encode),
//! as fast as the CPU goes on one thread (call time is simulated); the
//! figure is the CPU time per second of call, as a percentage of one core:
//! `% of a core per call = cpu seconds / (calls x call seconds) x 100`.
//! The process's CPU time (user + system) is read from /proc/self/stat, so other work on
//! the machine does not count, though it may slow caches.
//!
//! Environment: `OPUS_COMPLEXITY` (default: `CodecParams`'), `OPUS_FEC=0` (in-band FEC
//! off), `OPUS_BITRATE` (bit/s, as a negotiated `maxaveragebitrate`; default 0 = libopus'
//! choice) set the Opus leg's encoder, and the phone's Opus encoder alike.

use std::time::Instant;

use ringfort::media::codec::{self, CodecKind, CodecParams};
use ringfort::media::transcode::{LegFormat, Transcoder};

const SPEECH: &[u8] = include_bytes!("../../tests/data/speech/speech-8k.s16");

/// utime + stime of this process, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of the whole line are 12 and 13 after the comm field.
    (ticks(11) + ticks(12)) / 100.0
}

/// 20 ms RTP packets of `pcm` (8 kHz) in `fmt`, `count` of them (looping the audio).
fn packets(fmt: LegFormat, pcm8k: &[i16], count: usize) -> Vec<Vec<u8>> {
    let rate = match fmt.codec {
        CodecKind::G722 => 16000,
        _ => 8000,
    };
    let mut enc = codec::encoder(fmt.codec, rate, fmt.params).expect("encoder");
    let frame = rate as usize / 50;
    let mut out = Vec::with_capacity(count);
    let mut pos = 0;
    for i in 0..count {
        let mut pcm = vec![0i16; frame];
        for (j, s) in pcm.iter_mut().enumerate() {
            // Upsample G.722's input by repeating samples: fine for a CPU figure.
            let k = if rate == 16000 { j / 2 } else { j };
            *s = pcm8k[(pos + k) % pcm8k.len()];
        }
        pos += 160;
        let mut p = vec![0u8; 1500];
        let n = enc.encode(&pcm, &mut p[12..]).expect("encode");
        p.truncate(12 + n);
        p[0] = 0x80;
        p[1] = fmt.pt;
        p[2..4].copy_from_slice(&(i as u16).to_be_bytes());
        let ts = fmt.codec.rtp_ticks(frame * i, rate);
        p[4..8].copy_from_slice(&ts.to_be_bytes());
        p[8..12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        out.push(p);
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let calls: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let seconds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(12);
    let pair = args.get(3).map(String::as_str).unwrap_or("opus-pcmu");
    let pcm8k: Vec<i16> = SPEECH
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let fmt = |kind: CodecKind, pt: u8| LegFormat {
        params: CodecParams {
            fec: std::env::var("OPUS_FEC").map_or(true, |v| v != "0"),
            complexity: std::env::var("OPUS_COMPLEXITY")
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(CodecParams::default().complexity),
            // 0: libopus' own choice (about 9.5 kbit/s for 8 kHz speech).
            bitrate: std::env::var("OPUS_BITRATE")
                .ok()
                .and_then(|b| b.parse().ok())
                .unwrap_or(0),
            ..CodecParams::default()
        },
        ..LegFormat::new(kind, pt)
    };
    let (a, b) = match pair {
        "g722-pcmu" => (fmt(CodecKind::G722, 9), fmt(CodecKind::Pcmu, 0)),
        "pcmu-pcma" => (fmt(CodecKind::Pcmu, 0), fmt(CodecKind::Pcma, 8)),
        _ => (fmt(CodecKind::Opus, 111), fmt(CodecKind::Pcmu, 0)),
    };
    let ticks = seconds * 50;
    let from_a = packets(a, &pcm8k, ticks);
    let from_b = packets(b, &pcm8k, ticks);
    let mut pairs: Vec<[Transcoder; 2]> = (0..calls)
        .map(|_| {
            [
                Transcoder::new(a, b).expect("a->b"),
                Transcoder::new(b, a).expect("b->a"),
            ]
        })
        .collect();
    let mut out_packets = 0u64;
    let mut out_bytes = 0u64;
    let wall = Instant::now();
    let cpu0 = cpu_seconds();
    // Call time: the packets of tick t arrive at t x 20 ms, then the tick runs.
    let start = Instant::now();
    for t in 0..ticks {
        let now = start + std::time::Duration::from_millis(20 * t as u64);
        let mut count = |o: &[u8]| {
            out_packets += 1;
            out_bytes += o.len() as u64;
        };
        for p in pairs.iter_mut() {
            p[0].on_rtp(&from_a[t], now, &mut count);
            p[1].on_rtp(&from_b[t], now, &mut count);
            p[0].on_tick(now, &mut count);
            p[1].on_tick(now, &mut count);
        }
    }
    let cpu = cpu_seconds() - cpu0;
    let elapsed = wall.elapsed().as_secs_f64();
    let call_seconds = (calls * seconds) as f64;
    let pct = cpu / call_seconds * 100.0;
    println!(
        "pair={pair} calls={calls} call_seconds={call_seconds} cpu_s={cpu:.2} wall_s={elapsed:.2} \
         out_packets={out_packets} out_kbytes={} pct_core_per_call={pct:.3} calls_per_core={:.0}",
        out_bytes / 1000,
        100.0 / pct.max(1e-9)
    );
}
