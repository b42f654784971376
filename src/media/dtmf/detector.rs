//! In-band DTMF detection on 8 kHz 16-bit linear samples, for legs that offer no
//! telephone-event.
//!
//! Owns: turning samples (fed in chunks of any size) into digit start/end events with
//! sample positions. Must not: decode codecs, read clocks or act on digits; and it never
//! mutes the audio (the caller decides whether detected tones go on to the other leg).
//!
//! How (checked against ITU-T Q.24 / Q.23 limits):
//! - Windows of [`WINDOW`] samples (20 ms), Hann-weighted, every [`HOP`] samples (5 ms).
//!   The Hann window keeps the leakage of one group's tone out of the other's filters
//!   (its side lobes fall fast) where a rectangular 20 ms block would not; the 5 ms hop
//!   is what measures a tone's length finely enough to tell 25 ms from 40 ms.
//! - Goertzel power at the 8 frequencies; the strongest of each group is the candidate
//!   pair. A window is a *hit* for a digit when:
//!   1. each tone reaches [`DetectorConfig::min_level_dbm0`];
//!   2. twist: the high tone is at most `max_normal_twist_db` louder than the low one,
//!      the low one at most `max_reverse_twist_db` louder than the high one (8 / 4 dB);
//!   3. the two tones carry at least `min_tone_share` of the window's power (80 %):
//!      speech and music spread theirs over many frequencies, noise over all of them.
//!      A tone's power is the best of its nominal frequency and 1.25 % either side, so
//!      a tone 1.5 % off is not counted short. The share also measures how much of the
//!      window the tone fills: a window 70 % covered keeps ~80 % (coherent amplitude
//!      falls with the covered weight, energy only with its square root), so hits are
//!      windows mostly inside the tone;
//!   4. frequency: each tone is within 2.5 % of nominal, the middle of Q.24's "accept
//!      1.5 %, reject 3.5 %": the power at the nominal frequency must not be below the
//!      power at nominal -5 % or +5 %. The Hann main lobe is symmetric around the real
//!      frequency, so the two are equal exactly at 2.5 % off, at any level and twist;
//!   5. no second harmonic: a DTMF tone is a pure sine, a voice or an instrument at
//!      that pitch has overtones (`max_harmonic_db` below the tone). Not measured for a
//!      row whose harmonic falls next to the pair's column (2 x 697 = 1394 Hz beside
//!      1336 Hz): that filter would hear the column tone itself.
//! - Duration: a digit starts once [`DetectorConfig::min_steady_windows`] hit windows of
//!   the same digit are within `steady_db` of its loudest window. With the defaults a
//!   tone of 35 ms or more always starts a digit and one of 28 ms or less never does
//!   (Q.24: operate at 40 ms, reject about 20-25 ms), at any alignment.
//! - End and pause: the digit ends after `end_after_windows` windows in a row that are
//!   not steady hits of it (a 10 ms drop-out is bridged, a 40 ms pause is not), and the
//!   next digit can only start after a window with no hit at all: a pause, not a change
//!   of tone pair.
//! - Positions count samples since the detector was created; starts and ends are
//!   reported within 8 ms of the real ones.
//!
//! Measured with the tests' signals (white noise 20 dB below each tone): detected down
//! to -35 dBm0 per tone, not at -37; accepted at +-2 % off, rejected from +-2.5 %;
//! normal twist 7.5 dB accepted, 8.5 rejected; reverse 3.5 accepted, 4.5 rejected; no
//! digit in 20 minutes of synthetic vowels and chords at -20 dBm0.
//!
//! Cost: 8 Goertzel filters plus 10 for the candidate pair over 160 samples every
//! 40 samples, about 70 multiply-adds per input sample.

use std::f64::consts::TAU;

use super::digit::{HIGH_GROUP_HZ, LOW_GROUP_HZ};
use super::generator::{dbm0_to_amplitude, SAMPLE_RATE};
use super::Digit;

/// Samples per analysis window: 20 ms.
pub const WINDOW: usize = 160;
/// Samples between two windows: 5 ms.
pub const HOP: usize = 40;
/// Relative offset of the frequency probes; the accept/reject boundary is half of it.
const PROBE: f64 = 0.05;
/// Relative offset of the extra filters that measure an off-nominal tone's power.
const NEAR: f64 = 0.0125;
/// A second harmonic this close to the other tone of the pair is not measured: 4 bins
/// of the 20 ms window, where the Hann side lobes are below -40 dB.
const HARMONIC_CLEARANCE_HZ: f32 = 200.0;
/// Windows of a candidate run kept to judge its steadiness.
const RUN_MAX: usize = 16;
/// Where in the first hit window the tone is taken to start (and symmetrically where
/// in the last one it ends): a hit window is at least ~70 % tone.
const EDGE: u64 = 48;

/// Detection thresholds. The defaults follow ITU-T Q.24 where it says something.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorConfig {
    /// The quietest tone (each of the two) that is detected, dBm0.
    pub min_level_dbm0: f64,
    /// How much louder the high tone may be than the low one, dB.
    pub max_normal_twist_db: f64,
    /// How much louder the low tone may be than the high one, dB.
    pub max_reverse_twist_db: f64,
    /// The share of the window's power the two tones must carry (0..1).
    pub min_tone_share: f64,
    /// The loudest a tone's second harmonic may be, relative to the tone, dB.
    pub max_harmonic_db: f64,
    /// A hit window counts towards the duration when within this of the loudest, dB.
    pub steady_db: f64,
    /// Steady windows needed to start a digit (5 ms apart; at most 16).
    pub min_steady_windows: usize,
    /// Windows in a row without the digit that end it.
    pub end_after_windows: u32,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            min_level_dbm0: -36.0,
            max_normal_twist_db: 8.0,
            max_reverse_twist_db: 4.0,
            min_tone_share: 0.8,
            max_harmonic_db: -20.0,
            steady_db: 4.5,
            min_steady_windows: 5,
            end_after_windows: 6,
        }
    }
}

/// What the detector reports. `at` is a sample position since the detector's creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectorEvent {
    Start { digit: Digit, at: u64 },
    End { digit: Digit, at: u64 },
}

/// The Goertzel coefficients (2 cos w) of one DTMF tone and its check frequencies.
#[derive(Debug, Clone, Copy)]
struct ToneFilters {
    nominal: f64,
    near_below: f64,
    near_above: f64,
    below: f64,
    above: f64,
    harmonic: f64,
}

fn coefficient(hz: f64) -> f64 {
    2.0 * (TAU * hz / SAMPLE_RATE).cos()
}

/// |X(w)|^2 of `x` at the frequency whose coefficient is `coeff`.
fn goertzel(x: &[f64; WINDOW], coeff: f64) -> f64 {
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s0 = v + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - coeff * s1 * s2).max(0.0)
}

/// [`goertzel`] of eight frequencies in one pass: eight independent recurrences the CPU
/// runs side by side, where eight passes would each wait on their own chain.
fn goertzel8(x: &[f64; WINDOW], coeffs: &[f64; 8]) -> [f64; 8] {
    let mut s1 = [0.0f64; 8];
    let mut s2 = [0.0f64; 8];
    for &v in x {
        for k in 0..8 {
            let s0 = v + coeffs[k] * s1[k] - s2[k];
            s2[k] = s1[k];
            s1[k] = s0;
        }
    }
    std::array::from_fn(|k| (s1[k] * s1[k] + s2[k] * s2[k] - coeffs[k] * s1[k] * s2[k]).max(0.0))
}

/// Linear power ratio of `db`.
fn ratio(db: f64) -> f64 {
    10f64.powf(db / 10.0)
}

/// The latest consecutive hit windows of one digit, while no digit is active.
#[derive(Debug, Clone)]
struct Run {
    digit: Option<Digit>,
    /// (power of the tone pair, window start) of the latest windows, oldest first; a
    /// fixed array so that detection allocates nothing.
    windows: [(f64, u64); RUN_MAX],
    len: usize,
}

impl Run {
    fn clear(&mut self) {
        self.digit = None;
        self.len = 0;
    }

    fn push(&mut self, digit: Digit, power: f64, start: u64) {
        if self.digit != Some(digit) {
            self.digit = Some(digit);
            self.len = 0;
        }
        if self.len == RUN_MAX {
            self.windows.copy_within(1.., 0);
            self.len -= 1;
        }
        self.windows[self.len] = (power, start);
        self.len += 1;
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    Idle {
        /// A digit just ended: wait for a window without any hit.
        need_pause: bool,
    },
    Active {
        digit: Digit,
        peak: f64,
        missed: u32,
        last_steady_start: u64,
    },
}

/// Detects DTMF tones in one direction of one leg.
#[derive(Debug, Clone)]
pub struct Detector {
    config: DetectorConfig,
    filters: [ToneFilters; 8],
    /// The eight nominal coefficients, for the one-pass first look.
    nominal: [f64; 8],
    hann: [f64; WINDOW],
    /// Sum of the window weights (scales Goertzel output to tone amplitude).
    hann_sum: f64,
    hann_energy: f64,
    /// Minimum tone power (mean square, sample units).
    floor: f64,
    /// `[row][column]`: the row's second harmonic lies so close to the column tone
    /// (1394 Hz next to 1336, 1540 next to 1477, ...) that its filter hears that tone.
    harmonic_near_column: [[bool; 4]; 4],
    buf: [f64; WINDOW],
    buffered: usize,
    seen: u64,
    state: State,
    run: Run,
}

impl Detector {
    pub fn new(config: DetectorConfig) -> Detector {
        let mut hann = [0.0; WINDOW];
        for (n, w) in hann.iter_mut().enumerate() {
            *w = 0.5 - 0.5 * (TAU * n as f64 / WINDOW as f64).cos();
        }
        let filters = std::array::from_fn(|i| {
            let hz = f64::from(if i < 4 {
                LOW_GROUP_HZ[i]
            } else {
                HIGH_GROUP_HZ[i - 4]
            });
            ToneFilters {
                nominal: coefficient(hz),
                near_below: coefficient(hz * (1.0 - NEAR)),
                near_above: coefficient(hz * (1.0 + NEAR)),
                below: coefficient(hz * (1.0 - PROBE)),
                above: coefficient(hz * (1.0 + PROBE)),
                harmonic: coefficient(2.0 * hz),
            }
        });
        let floor_amplitude = dbm0_to_amplitude(config.min_level_dbm0);
        let harmonic_near_column = std::array::from_fn(|r| {
            std::array::from_fn(|c| {
                (2.0 * LOW_GROUP_HZ[r] - HIGH_GROUP_HZ[c]).abs() < HARMONIC_CLEARANCE_HZ
            })
        });
        Detector {
            config,
            nominal: std::array::from_fn(|i: usize| filters[i].nominal),
            filters,
            hann,
            hann_sum: hann.iter().sum(),
            hann_energy: hann.iter().map(|w| w * w).sum(),
            floor: floor_amplitude * floor_amplitude / 2.0,
            harmonic_near_column,
            buf: [0.0; WINDOW],
            buffered: 0,
            seen: 0,
            state: State::Idle { need_pause: false },
            run: Run {
                digit: None,
                windows: [(0.0, 0); RUN_MAX],
                len: 0,
            },
        }
    }

    /// Samples fed so far.
    pub fn position(&self) -> u64 {
        self.seen
    }

    /// The digit whose tone is being heard, if any.
    pub fn active(&self) -> Option<Digit> {
        match self.state {
            State::Active { digit, .. } => Some(digit),
            State::Idle { .. } => None,
        }
    }

    /// Feeds the next samples; events found are pushed to `out`.
    pub fn push(&mut self, samples: &[i16], out: &mut Vec<DetectorEvent>) {
        for &s in samples {
            self.buf[self.buffered] = f64::from(s);
            self.buffered += 1;
            self.seen += 1;
            if self.buffered == WINDOW {
                let start = self.seen - WINDOW as u64;
                let hit = self.analyze();
                self.step(hit, start, out);
                self.buf.copy_within(HOP.., 0);
                self.buffered = WINDOW - HOP;
            }
        }
    }

    /// The stream is over: a digit still sounding ends where it was last heard.
    pub fn finish(&mut self, out: &mut Vec<DetectorEvent>) {
        if let State::Active {
            digit,
            last_steady_start,
            ..
        } = self.state
        {
            out.push(DetectorEvent::End {
                digit,
                at: last_steady_start + WINDOW as u64 - EDGE,
            });
        }
        self.state = State::Idle { need_pause: false };
        self.run.clear();
    }

    /// Tone power (mean square of a sine of the measured amplitude) from |X|^2.
    fn tone_power(&self, x: &[f64; WINDOW], coeff: f64) -> f64 {
        2.0 * goertzel(x, coeff) / (self.hann_sum * self.hann_sum)
    }

    /// The power of tone `i` as the best of its nominal frequency and 1.25 % either
    /// side: a tone 1.5 % off loses up to 1.4 dB at the nominal frequency alone (half a
    /// bin at 1633 Hz), which the share test would count as foreign power.
    fn peak_power(&self, x: &[f64; WINDOW], i: usize) -> f64 {
        let f = &self.filters[i];
        let nominal = self.tone_power(x, f.nominal);
        nominal
            .max(self.tone_power(x, f.near_below))
            .max(self.tone_power(x, f.near_above))
    }

    /// The digit this window holds, with the power of its tone pair.
    fn analyze(&self) -> Option<(Digit, f64)> {
        let mut x = [0.0; WINDOW];
        let mut energy = 0.0;
        for ((xw, s), w) in x.iter_mut().zip(&self.buf).zip(&self.hann) {
            *xw = s * w;
            energy += *xw * *xw;
        }
        let total = energy / self.hann_energy;
        if total < self.floor {
            return None;
        }
        let scale = 2.0 / (self.hann_sum * self.hann_sum);
        let power = goertzel8(&x, &self.nominal).map(|g| g * scale);
        let strongest = |range: std::ops::Range<usize>| {
            range
                .max_by(|&a, &b| power[a].total_cmp(&power[b]))
                .unwrap_or(0)
        };
        let (row, col) = (strongest(0..4), strongest(4..8));
        let (low, high) = (self.peak_power(&x, row), self.peak_power(&x, col));
        let c = &self.config;
        if low < self.floor
            || high < self.floor
            || high > low * ratio(c.max_normal_twist_db)
            || low > high * ratio(c.max_reverse_twist_db)
            || low + high < c.min_tone_share * total
        {
            return None;
        }
        for i in [row, col] {
            let f = &self.filters[i];
            let p = power[i];
            if self.tone_power(&x, f.below) > p || self.tone_power(&x, f.above) > p {
                return None;
            }
            let near_other_tone = i < 4 && self.harmonic_near_column[i][col - 4];
            if !near_other_tone && self.tone_power(&x, f.harmonic) > p * ratio(c.max_harmonic_db) {
                return None;
            }
        }
        let digit = Digit::from_position(row, col - 4)?;
        Some((digit, low + high))
    }

    fn step(&mut self, hit: Option<(Digit, f64)>, start: u64, out: &mut Vec<DetectorEvent>) {
        let steady = ratio(-self.config.steady_db);
        match &mut self.state {
            State::Active {
                digit,
                peak,
                missed,
                last_steady_start,
            } => match hit {
                Some((d, p)) if d == *digit && p >= *peak * steady => {
                    *peak = peak.max(p);
                    *missed = 0;
                    *last_steady_start = start;
                }
                _ => {
                    *missed += 1;
                    if *missed >= self.config.end_after_windows.max(1) {
                        out.push(DetectorEvent::End {
                            digit: *digit,
                            at: *last_steady_start + WINDOW as u64 - EDGE,
                        });
                        self.state = State::Idle {
                            need_pause: hit.is_some(),
                        };
                        self.run.clear();
                    }
                }
            },
            State::Idle { need_pause } => {
                let Some((d, p)) = hit else {
                    self.run.clear();
                    *need_pause = false;
                    return;
                };
                if *need_pause {
                    return;
                }
                self.run.push(d, p, start);
                let windows = &self.run.windows[..self.run.len];
                let peak = windows.iter().map(|w| w.0).fold(0.0, f64::max);
                let mut steady_windows = windows.iter().filter(|w| w.0 >= peak * steady);
                let first = steady_windows.next().map(|w| w.1);
                let count = steady_windows.count() + 1;
                if let Some(first) = first {
                    if count >= self.config.min_steady_windows.clamp(1, RUN_MAX) {
                        out.push(DetectorEvent::Start {
                            digit: d,
                            at: first + EDGE,
                        });
                        self.state = State::Active {
                            digit: d,
                            peak,
                            missed: 0,
                            last_steady_start: start,
                        };
                    }
                }
            }
        }
    }
}

impl Default for Detector {
    fn default() -> Self {
        Detector::new(DetectorConfig::default())
    }
}

#[cfg(test)]
mod tests;
