//! Signals and measures shared by the media unit tests: sine tones, RMS and Goertzel
//! power at one frequency (what a test asks of audio that came back through a codec, a
//! resampler, a transcoder or the mixer).

use std::f64::consts::TAU;

/// `samples` of a sine at `hz` sampled at `rate`, peak `amp`.
pub fn tone(rate: u32, hz: f64, samples: usize, amp: f64) -> Vec<i16> {
    (0..samples)
        .map(|i| (amp * (TAU * hz * i as f64 / f64::from(rate)).sin()) as i16)
        .collect()
}

pub(crate) use super::rms;

/// Goertzel energy at `hz` over all of `pcm` (grows with the square of its length).
pub fn goertzel(pcm: &[i16], rate: u32, hz: f64) -> f64 {
    let c = 2.0 * (TAU * hz / f64::from(rate)).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for x in pcm {
        let s0 = f64::from(*x) + c * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - c * s1 * s2
}

/// [`goertzel`] per sample squared: comparable across lengths.
pub fn power_at(pcm: &[i16], rate: u32, hz: f64) -> f64 {
    goertzel(pcm, rate, hz) / (pcm.len() as f64).powi(2)
}
