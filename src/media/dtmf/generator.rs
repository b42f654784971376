//! In-band DTMF generation: two sines, for legs that offer no telephone-event and for
//! the detector's tests.
//!
//! Owns: synthesizing a tone pair at given frequencies and levels, continuing its phase
//! across calls so 20 ms frames join without clicks. Must not: decide durations or
//! pauses (the caller asks for as many samples as the digit lasts, ITU-T Q.23 suggests
//! tones and pauses of at least 40 ms) or encode (G.711 is the codec's job).

use std::f64::consts::TAU;

use super::Digit;

/// The sample rate of in-band DTMF.
pub const SAMPLE_RATE: f64 = 8000.0;
/// The level of a full-scale 16-bit sine: +3.17 dBm0, the G.711 mu-law "digital
/// milliwatt" convention (A-law says +3.14; the 0.03 dB do not matter here).
pub const DBM0_FULL_SCALE: f64 = 3.17;

/// The peak amplitude (in 16-bit sample units) of a sine at `dbm0`.
pub fn dbm0_to_amplitude(dbm0: f64) -> f64 {
    32767.0 * 10f64.powf((dbm0 - DBM0_FULL_SCALE) / 20.0)
}

/// The level in dBm0 of a signal whose mean power (mean of squared samples) is `power`.
pub fn power_to_dbm0(power: f64) -> f64 {
    let zero = dbm0_to_amplitude(0.0);
    10.0 * (power / (zero * zero / 2.0)).log10()
}

#[derive(Debug, Clone, Copy)]
struct Sine {
    amplitude: f64,
    step: f64,
    phase: f64,
}

impl Sine {
    fn new(hz: f64, dbm0: f64) -> Sine {
        Sine {
            amplitude: dbm0_to_amplitude(dbm0),
            step: TAU * hz / SAMPLE_RATE,
            phase: 0.0,
        }
    }

    fn next(&mut self) -> f64 {
        let v = self.amplitude * self.phase.sin();
        // Kept in [0, TAU) so precision does not drain away over a long tone.
        self.phase = (self.phase + self.step) % TAU;
        v
    }
}

/// A tone pair whose phase continues from one [`ToneGenerator::fill`] to the next.
#[derive(Debug, Clone, Copy)]
pub struct ToneGenerator {
    low: Sine,
    high: Sine,
}

impl ToneGenerator {
    /// Any two sines: frequencies in Hz, levels in dBm0 each (tests use off-nominal
    /// frequencies and unequal levels, "twist").
    pub fn new(low_hz: f64, high_hz: f64, low_dbm0: f64, high_dbm0: f64) -> ToneGenerator {
        ToneGenerator {
            low: Sine::new(low_hz, low_dbm0),
            high: Sine::new(high_hz, high_dbm0),
        }
    }

    /// The tone pair of `digit`, each tone at `dbm0`.
    pub fn for_digit(digit: Digit, dbm0: f64) -> ToneGenerator {
        let (low, high) = digit.frequencies();
        ToneGenerator::new(f64::from(low), f64::from(high), dbm0, dbm0)
    }

    /// Writes the next `out.len()` samples (clipped to 16 bits if the levels ask for
    /// more than full scale).
    pub fn fill(&mut self, out: &mut [i16]) {
        for s in out {
            let v = self.low.next() + self.high.next();
            *s = v.round().clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16;
        }
    }

    /// The next `n` samples in a new buffer.
    pub fn samples(&mut self, n: usize) -> Vec<i16> {
        let mut v = vec![0; n];
        self.fill(&mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_power(s: &[i16]) -> f64 {
        s.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / s.len() as f64
    }

    #[test]
    fn levels_are_dbm0() {
        let mut g = ToneGenerator::new(1000.0, 1000.0, -10.0, f64::NEG_INFINITY);
        let s = g.samples(8000);
        assert!((power_to_dbm0(mean_power(&s)) + 10.0).abs() < 0.05);
        // Two tones at -20 dBm0 each carry -17 dBm0 together.
        let s = ToneGenerator::for_digit(Digit::D8, -20.0).samples(8000);
        assert!((power_to_dbm0(mean_power(&s)) + 16.99).abs() < 0.1);
        assert!((dbm0_to_amplitude(DBM0_FULL_SCALE) - 32767.0).abs() < 1e-6);
    }

    #[test]
    fn frames_join_without_a_phase_jump() {
        let mut g = ToneGenerator::for_digit(Digit::D1, -6.0);
        let whole = ToneGenerator::for_digit(Digit::D1, -6.0).samples(480);
        let mut pieces = Vec::new();
        for n in [160, 7, 153, 160] {
            pieces.extend(g.samples(n));
        }
        assert_eq!(pieces, whole);
    }

    #[test]
    fn loud_levels_clip_instead_of_wrapping() {
        let s = ToneGenerator::for_digit(Digit::D0, 6.0).samples(800);
        assert!(s.contains(&i16::MAX) && s.contains(&i16::MIN));
    }
}
