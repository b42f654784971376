//! Conference mixer benchmark: N participants, 10 % of them talking, through
//! `ringfort::media::mixer` with a real decoder and encoder per participant, as fast as
//! one thread can go. Not part of the test suite.
//!
//!   mixer_bench [participants=500] [seconds=10] [codecs=pcmu,opus]
//!
//! Each tick does what the conference task will: decode every participant's 20 ms payload
//! into the mixer, tick, encode what each participant hears (the shared mix once per
//! codec, a personal mix per talker) and touch every payload as a send would. Talkers say
//! syllables of two tones (on 150-250 ms, off 80-150 ms) at -16..-28 dBFS; the others send
//! low noise below the voice threshold. Prints the CPU time per 20 ms tick (thread CPU
//! time from /proc, and wall time), its split into decode / mix / encode, the
//! participants one core could carry in real time (N / (cpu per tick / 20 ms)) and the
//! allocations per tick after warm-up (a counting global allocator: must be 0) and the
//! encoder calls per tick (about K + 1: the talkers' own mixes and one shared one).

use std::f64::consts::TAU;
use std::hint::black_box;
use std::time::{Duration, Instant};

use ringfort::media::codec::{self, CodecKind, CodecParams};
use ringfort::media::mixer::{frame_len, Mixer, MixerConfig, Participant, SharedEncoders};

#[path = "../alloc_count.rs"]
mod alloc_count;
use alloc_count::allocations;

/// Distinct talker recordings; talkers share them at different offsets.
const VOICES: usize = 8;
/// Frames per recording (4 s), looped.
const LOOP: usize = 200;
const WARMUP_TICKS: usize = 50;

/// This thread's CPU time (user + system), from /proc in clock ticks (10 ms).
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // The command name may hold spaces; the fields after its ')' are fixed.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// A pseudo-random stream (xorshift), so runs are repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo) as u64) as usize
    }
}

/// `LOOP` frames of syllables at `rate`: two tones gated on and off.
fn voice(rate: u32, seed: u64) -> Vec<i16> {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let len = frame_len(rate) * LOOP;
    let (f1, f2) = (180.0 + 20.0 * seed as f64, 900.0 + 90.0 * seed as f64);
    let amp = 32767.0 * 10f64.powf(-(16.0 + 1.5 * seed as f64) / 20.0);
    let ms = |n: usize| n * rate as usize / 1000;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let on = ms(rng.range(150, 250));
        for i in 0..on {
            let t = i as f64 / f64::from(rate);
            let env = (std::f64::consts::PI * i as f64 / on as f64).sin();
            let v = amp * env * 0.5 * ((TAU * f1 * t).sin() + (TAU * f2 * t).sin());
            out.push(v as i16);
        }
        let off = ms(rng.range(80, 150));
        out.extend((0..off).map(|_| (rng.next() % 7) as i16 - 3));
    }
    out.truncate(len);
    out
}

/// Low noise (about -75 dBFS), below the voice threshold.
fn hush(rate: u32) -> Vec<i16> {
    let mut rng = Rng(12345);
    (0..frame_len(rate) * LOOP)
        .map(|_| (rng.next() % 9) as i16 - 4)
        .collect()
}

/// `pcm` as the phone would send it: one payload per 20 ms.
fn encode_all(kind: CodecKind, rate: u32, pcm: &[i16]) -> Vec<Vec<u8>> {
    let mut enc = match codec::encoder(kind, rate, CodecParams::default()) {
        Ok(e) => e,
        Err(e) => panic!("encoder: {e}"),
    };
    let mut buf = [0u8; 1500];
    pcm.chunks_exact(frame_len(rate))
        .map(|f| match enc.encode(f, &mut buf) {
            Ok(n) => buf[..n].to_vec(),
            Err(e) => panic!("encode: {e}"),
        })
        .collect()
}

struct Report {
    ticks: usize,
    cpu: Option<Duration>,
    wall: Duration,
    decode: Duration,
    mix: Duration,
    encode: Duration,
    allocs: u64,
    /// Encoder calls over the whole run, warm-up included.
    encodes: u64,
    bytes: u64,
}

fn run(kind: CodecKind, n: usize, seconds: usize) -> Result<Report, Box<dyn std::error::Error>> {
    let mut mixer = Mixer::new(MixerConfig::default())?;
    let mut shared = SharedEncoders::new();
    let mut ps = Vec::with_capacity(n);
    for _ in 0..n {
        ps.push(Participant::join(&mut mixer, kind, CodecParams::default())?);
    }
    let rate = ps.first().map(|p| p.rate()).unwrap_or(8000);
    let voices: Vec<Vec<Vec<u8>>> = (0..VOICES as u64)
        .map(|v| encode_all(kind, rate, &voice(rate, v)))
        .collect();
    let quiet = encode_all(kind, rate, &hush(rate));
    // Every tenth participant talks.
    let source = |i: usize| -> (&Vec<Vec<u8>>, usize) {
        if i % 10 == 0 {
            (&voices[(i / 10) % VOICES], (i * 7) % LOOP)
        } else {
            (&quiet, i % LOOP)
        }
    };

    let ticks = seconds * 50;
    let (mut decode, mut mix, mut encode) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut bytes = 0u64;
    let (mut cpu0, mut wall0, mut allocs0) = (None, Instant::now(), 0);
    for tick in 0..WARMUP_TICKS + ticks {
        if tick == WARMUP_TICKS {
            (decode, mix, encode) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
            cpu0 = thread_cpu();
            wall0 = Instant::now();
            allocs0 = allocations();
        }
        let t0 = Instant::now();
        for (i, p) in ps.iter_mut().enumerate() {
            let (frames, offset) = source(i);
            p.receive(&mut mixer, &frames[(offset + tick) % LOOP])?;
        }
        let t1 = Instant::now();
        mixer.tick()?;
        let t2 = Instant::now();
        for p in ps.iter_mut() {
            let payload = p.send(&mixer, &mut shared)?;
            // What a send would read: the first and last byte.
            bytes += payload.len() as u64
                + u64::from(*payload.first().unwrap_or(&0))
                + u64::from(*payload.last().unwrap_or(&0));
        }
        let t3 = Instant::now();
        decode += t1 - t0;
        mix += t2 - t1;
        encode += t3 - t2;
    }
    let wall = wall0.elapsed();
    // Read before thread_cpu(), which allocates.
    let allocs = allocations() - allocs0;
    let cpu = match (cpu0, thread_cpu()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    Ok(Report {
        ticks,
        cpu,
        wall,
        decode,
        mix,
        encode,
        allocs,
        encodes: shared.encodes() + ps.iter().map(|p| p.encodes()).sum::<u64>(),
        bytes: black_box(bytes),
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(500);
    let seconds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let codecs = args.get(3).map(String::as_str).unwrap_or("pcmu,opus");
    println!(
        "{:<5} {:>5} {:>7} {:>6} {:>11} {:>11} {:>9} {:>9} {:>9} {:>12} {:>11} {:>12}",
        "codec",
        "N",
        "talking",
        "ticks",
        "cpu/tick",
        "wall/tick",
        "decode",
        "mix",
        "encode",
        "per core",
        "allocs/tick",
        "encodes/tick"
    );
    for name in codecs.split(',') {
        let kind = match name {
            "pcmu" => CodecKind::Pcmu,
            "pcma" => CodecKind::Pcma,
            "g722" => CodecKind::G722,
            "opus" => CodecKind::Opus,
            other => {
                eprintln!("unknown codec {other} (pcmu, pcma, g722, opus)");
                std::process::exit(2);
            }
        };
        let r = match run(kind, n, seconds) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{name}: {e}");
                std::process::exit(1);
            }
        };
        let per_tick = |d: Duration| d.as_secs_f64() * 1e6 / r.ticks as f64;
        // The /proc figure has a 10 ms grain; over a short run wall time is the better one.
        let cpu = r
            .cpu
            .filter(|c| *c >= Duration::from_millis(500))
            .unwrap_or(r.wall);
        let per_core = n as f64 / (per_tick(cpu) / 20_000.0);
        println!(
            "{:<5} {:>5} {:>7} {:>6} {:>9.1}us {:>9.1}us {:>7.1}us {:>7.1}us {:>7.1}us {:>12.0} {:>11.3} {:>12.2}",
            name,
            n,
            n.div_ceil(10),
            r.ticks,
            per_tick(cpu),
            per_tick(r.wall),
            per_tick(r.decode),
            per_tick(r.mix),
            per_tick(r.encode),
            per_core,
            r.allocs as f64 / r.ticks as f64,
            r.encodes as f64 / (r.ticks + WARMUP_TICKS) as f64,
        );
        black_box(r.bytes);
    }
}
