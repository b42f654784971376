//! The detector against synthetic signals: every digit with noise, frequency offsets,
//! twist, short tones, fast sequences, and speech- and music-like signals that must
//! give nothing. Levels are per tone in dBm0; the noise is white and 20 dB below a tone.

use std::f64::consts::TAU;

use super::*;
use crate::media::dtmf::generator::{ToneGenerator, SAMPLE_RATE};

/// A small deterministic PRNG (xorshift64*) with uniform and Gaussian draws.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    /// Standard normal (Box-Muller).
    fn gauss(&mut self) -> f64 {
        let u = self.unit().max(1e-12);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (TAU * v).cos()
    }
}

fn ms(n: u64) -> usize {
    (n * 8) as usize
}

/// A signal under construction, in floating point until the end.
struct Signal(Vec<f64>);

impl Signal {
    fn new() -> Signal {
        Signal(Vec::new())
    }
    fn silence(&mut self, samples: usize) -> &mut Signal {
        self.0.extend(std::iter::repeat(0.0).take(samples));
        self
    }
    fn tone(&mut self, mut g: ToneGenerator, samples: usize) -> &mut Signal {
        self.0.extend(g.samples(samples).into_iter().map(f64::from));
        self
    }
    fn digit(&mut self, d: Digit, dbm0: f64, samples: usize) -> &mut Signal {
        self.tone(ToneGenerator::for_digit(d, dbm0), samples)
    }
    /// Adds white Gaussian noise at `dbm0` over the whole signal.
    fn noise(&mut self, dbm0: f64, rng: &mut Rng) -> &mut Signal {
        let sigma = dbm0_to_amplitude(dbm0) / 2f64.sqrt();
        for s in &mut self.0 {
            *s += sigma * rng.gauss();
        }
        self
    }
    fn samples(&self) -> Vec<i16> {
        self.0
            .iter()
            .map(|v| v.round().clamp(-32768.0, 32767.0) as i16)
            .collect()
    }
}

/// Feeds `samples` in chunks of changing sizes, as RTP frames and resamplers would.
fn detect(samples: &[i16]) -> Vec<DetectorEvent> {
    let mut d = Detector::default();
    let mut out = Vec::new();
    let sizes = [160, 1, 79, 240, 13, 80, 333, 160];
    let mut rest = samples;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].min(rest.len());
        d.push(&rest[..n], &mut out);
        rest = &rest[n..];
        i += 1;
    }
    d.finish(&mut out);
    out
}

fn digits(events: &[DetectorEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            DetectorEvent::Start { digit, .. } => Some(digit.to_char()),
            DetectorEvent::End { .. } => None,
        })
        .collect()
}

/// Start/end pairs, checked to alternate and match.
fn spans(events: &[DetectorEvent]) -> Vec<(Digit, u64, u64)> {
    assert_eq!(events.len() % 2, 0, "{events:?}");
    events
        .chunks(2)
        .map(|pair| match *pair {
            [DetectorEvent::Start { digit, at: s }, DetectorEvent::End { digit: d2, at: e }] => {
                assert_eq!(digit, d2, "{events:?}");
                (digit, s, e)
            }
            _ => panic!("events do not alternate: {events:?}"),
        })
        .collect()
}

/// Each digit as a `tone_ms` tone after `gap_ms` of silence, tone level `dbm0`, noise
/// 20 dB below; returns the signal and where each tone starts and ends.
fn digit_train(
    seq: &[Digit],
    dbm0: f64,
    tone_ms: u64,
    gap_ms: u64,
    seed: u64,
) -> (Vec<i16>, Vec<(usize, usize)>) {
    let mut s = Signal::new();
    let mut at = Vec::new();
    for d in seq {
        s.silence(ms(gap_ms));
        let start = s.0.len();
        s.digit(*d, dbm0, ms(tone_ms));
        at.push((start, s.0.len()));
    }
    s.silence(ms(gap_ms));
    s.noise(dbm0 - 20.0, &mut Rng::new(seed));
    (s.samples(), at)
}

fn assert_train_detected(seq: &[Digit], dbm0: f64, tone_ms: u64, gap_ms: u64, seed: u64) {
    let (samples, at) = digit_train(seq, dbm0, tone_ms, gap_ms, seed);
    let events = detect(&samples);
    let found = spans(&events);
    let want: String = seq.iter().map(|d| d.to_char()).collect();
    assert_eq!(digits(&events), want, "{dbm0} dBm0, {tone_ms}/{gap_ms} ms");
    for ((_, s, e), (ts, te)) in found.iter().zip(&at) {
        let tol = ms(8) as i64;
        assert!((*s as i64 - *ts as i64).abs() <= tol, "start {s} vs {ts}");
        assert!((*e as i64 - *te as i64).abs() <= tol, "end {e} vs {te}");
    }
}

#[test]
fn every_digit_at_minus_20_dbm0_with_noise() {
    assert_train_detected(&Digit::ALL, -20.0, 80, 80, 1);
}

#[test]
fn every_digit_at_minus_30_dbm0_with_noise() {
    assert_train_detected(&Digit::ALL, -30.0, 80, 80, 2);
}

#[test]
fn loud_digits_are_detected() {
    assert_train_detected(&Digit::ALL, -3.0, 60, 60, 3);
}

#[test]
fn below_the_floor_nothing_is_detected() {
    let (samples, _) = digit_train(&Digit::ALL, -40.0, 100, 100, 4);
    assert_eq!(detect(&samples), vec![]);
}

#[test]
fn fifty_ms_tones_with_fifty_ms_gaps_give_each_digit_once() {
    let seq: Vec<Digit> = "0123456789*#ABCD5551234##**00"
        .chars()
        .map(|c| Digit::from_char(c).unwrap())
        .collect();
    assert_train_detected(&seq, -20.0, 50, 50, 5);
}

#[test]
fn forty_ms_tones_are_detected_at_every_alignment() {
    for offset in (0..HOP).step_by(8) {
        let mut s = Signal::new();
        s.silence(ms(60) + offset);
        for d in Digit::ALL {
            s.digit(d, -20.0, ms(40)).silence(ms(40));
        }
        s.noise(-40.0, &mut Rng::new(offset as u64));
        let events = detect(&s.samples());
        assert_eq!(digits(&events), "0123456789*#ABCD", "offset {offset}");
    }
}

#[test]
fn tones_shorter_than_30_ms_are_never_detected() {
    for tone in [10, 20, 25] {
        for offset in (0..HOP).step_by(8) {
            let mut s = Signal::new();
            s.silence(ms(60) + offset);
            for d in Digit::ALL {
                s.digit(d, -10.0, ms(tone)).silence(ms(60));
            }
            s.noise(-30.0, &mut Rng::new(offset as u64));
            let events = detect(&s.samples());
            assert_eq!(digits(&events), "", "{tone} ms, offset {offset}");
        }
    }
}

fn off_nominal(d: Digit, low_off: f64, high_off: f64, low_db: f64, high_db: f64) -> Vec<i16> {
    let (lo, hi) = d.frequencies();
    let g = ToneGenerator::new(
        f64::from(lo) * (1.0 + low_off),
        f64::from(hi) * (1.0 + high_off),
        low_db,
        high_db,
    );
    let mut s = Signal::new();
    s.silence(ms(50)).tone(g, ms(100)).silence(ms(50));
    s.noise(
        low_db.min(high_db) - 20.0,
        &mut Rng::new(u64::from(d.event()) + 100),
    );
    s.samples()
}

#[test]
fn frequencies_off_by_1_5_percent_are_accepted() {
    for d in Digit::ALL {
        for (lo, hi) in [
            (0.015, 0.015),
            (-0.015, -0.015),
            (0.015, -0.015),
            (-0.015, 0.015),
        ] {
            let events = detect(&off_nominal(d, lo, hi, -20.0, -20.0));
            assert_eq!(digits(&events), d.to_string(), "{d} at {lo}/{hi}");
        }
    }
}

#[test]
fn frequencies_off_by_3_5_percent_are_rejected() {
    for d in Digit::ALL {
        for (lo, hi) in [(0.035, 0.0), (-0.035, 0.0), (0.0, 0.035), (0.0, -0.035)] {
            let events = detect(&off_nominal(d, lo, hi, -20.0, -20.0));
            assert_eq!(digits(&events), "", "{d} at {lo}/{hi}");
        }
    }
}

#[test]
fn twist_within_limits_is_accepted_beyond_is_rejected() {
    for d in Digit::ALL {
        // Normal twist: the high tone louder.
        let ok = detect(&off_nominal(d, 0.0, 0.0, -26.0, -20.0));
        assert_eq!(digits(&ok), d.to_string(), "{d} with 6 dB normal twist");
        // Reverse twist: the low tone louder.
        let ok = detect(&off_nominal(d, 0.0, 0.0, -20.0, -23.0));
        assert_eq!(digits(&ok), d.to_string(), "{d} with 3 dB reverse twist");
        let bad = detect(&off_nominal(d, 0.0, 0.0, -30.0, -20.0));
        assert_eq!(digits(&bad), "", "{d} with 10 dB normal twist");
        let bad = detect(&off_nominal(d, 0.0, 0.0, -20.0, -26.0));
        assert_eq!(digits(&bad), "", "{d} with 6 dB reverse twist");
    }
}

#[test]
fn a_10_ms_dropout_does_not_split_a_digit() {
    let mut g = ToneGenerator::for_digit(Digit::D6, -20.0);
    let mut s = Signal::new();
    s.silence(ms(50)).tone(g, ms(100));
    // The tone keeps its phase through the drop-out, as a line glitch would.
    g.samples(ms(100));
    s.silence(ms(10));
    g.samples(ms(10));
    s.tone(g, ms(100)).silence(ms(50));
    s.noise(-40.0, &mut Rng::new(6));
    assert_eq!(digits(&detect(&s.samples())), "6");
}

#[test]
fn a_tone_pair_change_without_a_pause_is_not_a_new_digit() {
    let mut s = Signal::new();
    s.silence(ms(50))
        .digit(Digit::D1, -20.0, ms(100))
        .digit(Digit::D2, -20.0, ms(100))
        .silence(ms(50));
    assert_eq!(digits(&detect(&s.samples())), "1");
}

#[test]
fn a_long_tone_is_one_digit() {
    let mut s = Signal::new();
    s.silence(ms(50))
        .digit(Digit::Hash, -20.0, ms(3000))
        .silence(ms(50));
    s.noise(-40.0, &mut Rng::new(7));
    let events = detect(&s.samples());
    let found = spans(&events);
    assert_eq!(found.len(), 1);
    let (_, start, end) = found[0];
    assert!((end - start).abs_diff(ms(3000) as u64) <= ms(16) as u64);
}

/// Two-pole resonator (a formant): y = x + 2 r cos(theta) y1 - r^2 y2.
struct Resonator {
    a1: f64,
    a2: f64,
    gain: f64,
    y1: f64,
    y2: f64,
}

impl Resonator {
    fn new(hz: f64, bandwidth: f64) -> Resonator {
        let r = (-std::f64::consts::PI * bandwidth / SAMPLE_RATE).exp();
        let theta = TAU * hz / SAMPLE_RATE;
        Resonator {
            a1: 2.0 * r * theta.cos(),
            a2: -r * r,
            // Unit gain at the formant frequency, roughly.
            gain: (1.0 - r) * (1.0 + r * r - 2.0 * r * (2.0 * theta).cos()).sqrt(),
            y1: 0.0,
            y2: 0.0,
        }
    }
    fn retune(&mut self, hz: f64, bandwidth: f64) {
        let fresh = Resonator::new(hz, bandwidth);
        (self.a1, self.a2, self.gain) = (fresh.a1, fresh.a2, fresh.gain);
    }
    fn run(&mut self, x: f64) -> f64 {
        let y = self.gain * x + self.a1 * self.y1 + self.a2 * self.y2;
        self.y2 = self.y1;
        self.y1 = y;
        y
    }
}

/// Scales to a mean level of `dbm0`.
fn at_level(x: &[f64], dbm0: f64) -> Vec<i16> {
    let power = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let target = dbm0_to_amplitude(dbm0).powi(2) / 2.0;
    let k = (target / power.max(1e-30)).sqrt();
    x.iter()
        .map(|v| (v * k).round().clamp(-32768.0, 32767.0) as i16)
        .collect()
}

/// Vowel-like sound: a glottal pulse train (100-250 Hz, gliding) through three formant
/// resonators, the vowel changing every syllable, with syllable-shaped loudness.
fn vowels(seconds: f64, rng: &mut Rng) -> Vec<f64> {
    // (F1, F2, F3) of a, i, u, e, o, ae, er, and two vowels with formants on DTMF rows
    // and columns, the hardest case.
    const VOWELS: [(f64, f64, f64); 9] = [
        (730.0, 1090.0, 2440.0),
        (270.0, 2290.0, 3010.0),
        (300.0, 870.0, 2240.0),
        (530.0, 1840.0, 2480.0),
        (570.0, 840.0, 2410.0),
        (660.0, 1720.0, 2410.0),
        (490.0, 1350.0, 1690.0),
        (697.0, 1209.0, 2500.0),
        (941.0, 1477.0, 2600.0),
    ];
    let n = (seconds * SAMPLE_RATE) as usize;
    let mut out = Vec::with_capacity(n);
    let mut formants = [
        Resonator::new(700.0, 80.0),
        Resonator::new(1200.0, 100.0),
        Resonator::new(2500.0, 120.0),
    ];
    let mut glottal = 0.0;
    let mut phase = 1.0;
    let mut i = 0;
    while i < n {
        let syllable = (rng.range(0.12, 0.35) * SAMPLE_RATE) as usize;
        let (f1, f2, f3) = VOWELS[(rng.next() % VOWELS.len() as u64) as usize];
        let bw = rng.range(50.0, 110.0);
        formants[0].retune(f1, bw);
        formants[1].retune(f2, bw * 1.2);
        formants[2].retune(f3, bw * 1.5);
        let (p0, p1) = (rng.range(100.0, 250.0), rng.range(100.0, 250.0));
        for k in 0..syllable.min(n - i) {
            let t = k as f64 / syllable as f64;
            let pitch = p0 + (p1 - p0) * t;
            phase += pitch / SAMPLE_RATE;
            let pulse = if phase >= 1.0 {
                phase -= 1.0;
                1.0
            } else {
                0.0
            };
            // Smooth the pulses into a glottal flow derivative-ish shape.
            glottal = 0.7 * glottal + pulse;
            let loudness = (std::f64::consts::PI * t).sin().powf(0.5);
            let v = formants.iter_mut().fold(0.0, |acc, f| acc + f.run(glottal));
            out.push(v * loudness);
        }
        i += syllable;
    }
    out
}

/// Music-like chords: three or four equal-tempered notes with overtones, each chord
/// 150-600 ms with a decaying envelope.
fn chords(seconds: f64, rng: &mut Rng) -> Vec<f64> {
    let n = (seconds * SAMPLE_RATE) as usize;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let len = (rng.range(0.15, 0.6) * SAMPLE_RATE) as usize;
        let notes: Vec<f64> = (0..3 + rng.next() % 2)
            .map(|_| {
                let midi = 55.0 + (rng.next() % 36) as f64; // G3 .. F#6
                440.0 * 2f64.powf((midi - 69.0) / 12.0)
            })
            .collect();
        // Overtone strengths: brighter or duller instruments.
        let rolloff = rng.range(0.3, 0.8);
        for k in 0..len {
            let t = k as f64 / SAMPLE_RATE;
            // Decays to about -20 dB by the chord's end.
            let env = (-t * 2.3 * SAMPLE_RATE / len as f64).exp();
            let mut v = 0.0;
            for f in &notes {
                let mut amp = 1.0;
                for h in 1..=6 {
                    let fh = f * h as f64;
                    if fh < 3900.0 {
                        v += amp * (TAU * fh * t).sin();
                    }
                    amp *= rolloff;
                }
            }
            out.push(v * env);
        }
    }
    out.truncate(n);
    out
}

#[test]
fn no_digit_in_vowel_like_speech() {
    for seed in 1..=4 {
        let mut rng = Rng::new(seed);
        let x = vowels(15.0, &mut rng);
        for dbm0 in [-25.0, -15.0] {
            let events = detect(&at_level(&x, dbm0));
            assert_eq!(events, vec![], "seed {seed}, {dbm0} dBm0");
        }
    }
}

#[test]
fn no_digit_in_music_like_chords() {
    for seed in 1..=4 {
        let mut rng = Rng::new(seed + 50);
        let x = chords(15.0, &mut rng);
        let events = detect(&at_level(&x, -18.0));
        assert_eq!(events, vec![], "seed {seed}");
    }
}

#[test]
fn no_digit_in_recorded_speech() {
    // tests/data/speech/make.sh: espeak-ng, two voices, 8 kHz s16le, about -20 dBm0.
    let bytes = include_bytes!("../../../../tests/data/speech/speech-8k.s16");
    let samples: Vec<i16> = bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    assert!(samples.len() > 8000 * 5);
    for gain_db in [-10.0, 0.0, 8.0] {
        let k = 10f64.powf(gain_db / 20.0);
        let scaled: Vec<i16> = samples
            .iter()
            .map(|&s| (f64::from(s) * k).round().clamp(-32768.0, 32767.0) as i16)
            .collect();
        assert_eq!(detect(&scaled), vec![], "gain {gain_db} dB");
    }
}

#[test]
fn digits_mixed_with_speech_are_still_found() {
    let mut rng = Rng::new(9);
    let speech = at_level(&vowels(2.0, &mut rng), -30.0);
    let mut s = Signal::new();
    s.0.extend(speech.iter().map(|&v| f64::from(v)));
    s.digit(Digit::D4, -10.0, ms(100)).silence(ms(100));
    assert_eq!(digits(&detect(&s.samples())), "4");
}

#[test]
fn a_40_ms_pause_separates_the_same_digit() {
    for offset in (0..HOP).step_by(8) {
        let mut s = Signal::new();
        s.silence(ms(50) + offset);
        for _ in 0..5 {
            s.digit(Digit::D5, -20.0, ms(60)).silence(ms(40));
        }
        s.noise(-40.0, &mut Rng::new(offset as u64 + 20));
        assert_eq!(digits(&detect(&s.samples())), "55555", "offset {offset}");
    }
}
