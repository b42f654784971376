//! ITU-T G.711: PCMU (mu-law) and PCMA (A-law), 8 kHz, one byte a sample.
//!
//! Encoding follows the standard's segment/step rules (bit-exact with the reference:
//! round-trips of every code word are tested); decoding goes through 256-entry tables
//! built at compile time, so the hot path is one lookup per sample.

/// Mu-law: add the bias so every segment boundary is a power of two, then the segment is
/// the position of the top bit.
const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 32635;

pub fn linear_to_ulaw(sample: i16) -> u8 {
    let mut pcm = i32::from(sample);
    let sign = if pcm < 0 {
        pcm = -pcm;
        0x80
    } else {
        0
    };
    let pcm = pcm.min(ULAW_CLIP) + ULAW_BIAS;
    // Segment 0 covers biased values below 0x100 (top bit 7).
    let segment = (31 - (pcm as u32).leading_zeros()).saturating_sub(7).min(7) as i32;
    let mantissa = (pcm >> (segment + 3)) & 0x0f;
    !((sign | (segment << 4) | mantissa) as u8)
}

const fn ulaw_to_linear_const(code: u8) -> i16 {
    let u = !code;
    let sign = u & 0x80;
    let segment = ((u >> 4) & 0x07) as i32;
    let mantissa = (u & 0x0f) as i32;
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << segment) - ULAW_BIAS;
    if sign != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

pub fn linear_to_alaw(sample: i16) -> u8 {
    // A-law works on 13-bit magnitudes; even bits are inverted on the line (0x55).
    let pcm = i32::from(sample) >> 3;
    let (mask, magnitude) = if pcm >= 0 {
        (0xd5, pcm)
    } else {
        (0x55, -pcm - 1)
    };
    let magnitude = magnitude.min(0x0fff);
    let code = if magnitude < 32 {
        magnitude >> 1
    } else {
        // Segment n (1..7) holds magnitudes with their top bit at position n + 4.
        let segment = (31 - (magnitude as u32).leading_zeros()) as i32 - 4;
        (segment << 4) | ((magnitude >> segment) & 0x0f)
    };
    (code as u8) ^ mask
}

const fn alaw_to_linear_const(code: u8) -> i16 {
    let a = code ^ 0x55;
    let segment = ((a >> 4) & 0x07) as i32;
    let mantissa = (a & 0x0f) as i32;
    let magnitude = if segment == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (segment - 1)
    };
    if a & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

const fn table(ulaw: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if ulaw {
            ulaw_to_linear_const(i as u8)
        } else {
            alaw_to_linear_const(i as u8)
        };
        i += 1;
    }
    t
}

static ULAW_TO_LINEAR: [i16; 256] = table(true);
static ALAW_TO_LINEAR: [i16; 256] = table(false);

pub fn ulaw_to_linear(code: u8) -> i16 {
    ULAW_TO_LINEAR[usize::from(code)]
}

pub fn alaw_to_linear(code: u8) -> i16 {
    ALAW_TO_LINEAR[usize::from(code)]
}

/// Which of the two laws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    Ulaw,
    Alaw,
}

/// Encodes as many samples as fit in `out`; returns the bytes written.
pub fn encode(law: Law, pcm: &[i16], out: &mut [u8]) -> usize {
    let n = pcm.len().min(out.len());
    let f = match law {
        Law::Ulaw => linear_to_ulaw,
        Law::Alaw => linear_to_alaw,
    };
    for (o, s) in out.iter_mut().zip(&pcm[..n]) {
        *o = f(*s);
    }
    n
}

/// Decodes as many bytes as fit in `out`; returns the samples written.
pub fn decode(law: Law, data: &[u8], out: &mut [i16]) -> usize {
    let n = data.len().min(out.len());
    let t = match law {
        Law::Ulaw => &ULAW_TO_LINEAR,
        Law::Alaw => &ALAW_TO_LINEAR,
    };
    for (o, c) in out.iter_mut().zip(&data[..n]) {
        *o = t[usize::from(*c)];
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_word_round_trips() {
        for code in 0..=255u8 {
            // 0x7f and 0xff are both zero in mu-law; the encoder gives the positive one.
            let back = linear_to_ulaw(ulaw_to_linear(code));
            assert!(
                back == code || (ulaw_to_linear(code) == 0 && back == 0xff),
                "ulaw {code:#x}"
            );
            assert_eq!(linear_to_alaw(alaw_to_linear(code)), code, "alaw {code:#x}");
        }
    }

    #[test]
    fn known_values_of_the_standard() {
        // Silence on the line: 0xff (mu-law), 0xd5 (A-law).
        assert_eq!(linear_to_ulaw(0), 0xff);
        assert_eq!(linear_to_alaw(0), 0xd5);
        // Full scale: the sign bit is inverted on the line in mu-law (0x80 positive).
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x7f), 0);
        assert_eq!(alaw_to_linear(0xd5), 8);
        assert_eq!(alaw_to_linear(0xaa), 32256);
        assert_eq!(alaw_to_linear(0x2a), -32256);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
    }

    #[test]
    fn quantising_is_monotonic_and_within_half_a_step() {
        for law in [Law::Ulaw, Law::Alaw] {
            let mut worst = 0.0f64;
            let mut previous = i16::MIN;
            for x in (-32000..32000).step_by(7) {
                let mut code = [0u8];
                encode(law, &[x as i16], &mut code);
                let mut y = [0i16];
                decode(law, &code, &mut y);
                assert!(
                    y[0] >= previous,
                    "{law:?}: {x} decodes below a smaller input"
                );
                previous = y[0];
                // Half a step of a logarithmic quantiser: at most 1/32 of the value for
                // A-law, up to about 1/24 for mu-law where its bias shifts the segments.
                let err = f64::from((i32::from(y[0]) - x).abs());
                if x.abs() > 256 {
                    worst = worst.max(err / f64::from(x.abs()));
                } else {
                    assert!(err <= 16.0, "{law:?} {x} -> {}", y[0]);
                }
            }
            assert!(worst < 0.045, "{law:?} worst relative error {worst}");
        }
    }

    #[test]
    fn a_tone_keeps_its_signal_to_noise_ratio() {
        // G.711's SNR for a sine well inside the range is about 38 dB.
        let pcm: Vec<i16> = (0..8000)
            .map(|i| {
                (10000.0 * (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / 8000.0).sin()) as i16
            })
            .collect();
        for law in [Law::Ulaw, Law::Alaw] {
            let mut enc = vec![0u8; pcm.len()];
            encode(law, &pcm, &mut enc);
            let mut dec = vec![0i16; pcm.len()];
            decode(law, &enc, &mut dec);
            let snr = crate::media::codec::snr_db(&pcm, &dec);
            assert!(snr > 35.0, "{law:?} SNR {snr:.1} dB");
        }
    }
}
