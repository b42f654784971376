//! G.722 wideband speech (ITU-T G.722, "7 kHz audio-coding within 64 kbit/s"): the
//! sub-band ADPCM encoder and decoder, written from the standard's fixed-point algorithm.
//!
//! Owns: the codec arithmetic only (QMF analysis and synthesis, the lower sub-band 6-bit
//! and higher sub-band 2-bit ADPCM with their adaptive quantisers and predictors). Must
//! not: know RTP, packetisation or the codec trait; another layer wraps it.
//!
//! PCM is 16 kHz, 16-bit linear. Each octet carries two input samples: the higher
//! sub-band's 2-bit code in bits 7-6 and the lower sub-band's 6-bit code in bits 5-0,
//! as G.722 lays it out (and as RTP sends it, RFC 3551 4.5.2). Although the audio is
//! sampled at 16 kHz, G.722's RTP clock rate is 8000 Hz (an error in RFC 1890 kept for
//! compatibility): a 20 ms packet holds 320 samples in 160 octets and its timestamp
//! advances by 160.
//!
//! The encoder always produces 64 kbit/s octets (mode 1). The decoder also decodes modes
//! 2 and 3 (56 and 48 kbit/s), where the lowest one or two bits of each octet carry
//! auxiliary data and the lower sub-band is read from the bits above them.
//!
//! Arithmetic follows the standard's 16-bit description: every add saturates, every
//! "multiply" is `(a * b) >> 15`. Sub-band signals are 15-bit (the standard limits the
//! reconstructed ones to -16384..=16383), so the analysis filter halves the 16-bit input
//! and the synthesis filter doubles its output back: unity gain end to end, with a delay
//! of 22 samples through both filters.
//!
//! Tests prove bit-exactness against spandsp's G.722, an independent implementation,
//! through vectors committed in `tests/data/g722/` (see its README). The one deliberate
//! difference: an output sample that overshoots 16 bits is saturated here, where
//! spandsp 0.0.6 wraps it round (see [`to_pcm`]).

/// Coefficients h(0)..h(23) of G.722's transmit and receive QMF, in units of 2^-13.
/// The filter is symmetric: h(i) == h(23 - i).
const QMF: [i32; 24] = [
    3, -11, -11, 53, 12, -156, 32, 362, -210, -805, 951, 3876, 3876, 951, -805, -210, 362, 32,
    -156, 12, 53, -11, -11, 3,
];

/// Decision levels of the lower sub-band's 6-bit quantiser: `LOW_DECISION[i] * scale >> 12`
/// is the upper edge of magnitude level i (1..=29); magnitudes above the last edge are
/// level 30. Index 0 is unused.
const LOW_DECISION: [i32; 30] = [
    0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650, 714, 786, 858, 940,
    1023, 1121, 1219, 1339, 1458, 1612, 1765, 1980, 2195, 2557, 2919,
];

/// The 6-bit code of a negative lower sub-band difference at magnitude level 0..=30.
const LOW_CODE_NEGATIVE: [u8; 31] = [
    0, 63, 62, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11,
    10, 9, 8, 7, 6, 5, 4,
];

/// The 6-bit code of a non-negative lower sub-band difference at magnitude level 0..=30.
const LOW_CODE_POSITIVE: [u8; 31] = [
    0, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42, 41, 40, 39,
    38, 37, 36, 35, 34, 33, 32,
];

/// Inverse quantiser of the lower sub-band's full 6-bit code (64 kbit/s output).
const LOW_INVERSE_6BIT: [i32; 64] = [
    -136, -136, -136, -136, -24808, -21904, -19008, -16704, -14984, -13512, -12280, -11192, -10232,
    -9360, -8576, -7856, -7192, -6576, -6000, -5456, -4944, -4464, -4008, -3576, -3168, -2776,
    -2400, -2032, -1688, -1360, -1040, -728, 24808, 21904, 19008, 16704, 14984, 13512, 12280,
    11192, 10232, 9360, 8576, 7856, 7192, 6576, 6000, 5456, 4944, 4464, 4008, 3576, 3168, 2776,
    2400, 2032, 1688, 1360, 1040, 728, 432, 136, -432, -136,
];

/// Inverse quantiser of the code's upper 5 bits (56 kbit/s output).
const LOW_INVERSE_5BIT: [i32; 32] = [
    -280, -280, -23352, -17560, -14120, -11664, -9752, -8184, -6864, -5712, -4696, -3784, -2960,
    -2208, -1520, -880, 23352, 17560, 14120, 11664, 9752, 8184, 6864, 5712, 4696, 3784, 2960, 2208,
    1520, 880, 280, -280,
];

/// Inverse quantiser of the code's upper 4 bits: the predictor always adapts on these, so
/// that the encoder and a decoder of any mode stay in step, and mode 3 outputs them.
const LOW_INVERSE_4BIT: [i32; 16] = [
    0, -20456, -12896, -8968, -6288, -4240, -2584, -1200, 20456, 12896, 8968, 6288, 4240, 2584,
    1200, 0,
];

/// The lower sub-band's log scale factor multiplier class of each 4-bit code, into
/// [`LOW_LOG_STEP`].
const LOW_LOG_CLASS: [usize; 16] = [0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0];
const LOW_LOG_STEP: [i32; 8] = [-60, -30, 58, 172, 334, 538, 1198, 3042];
const LOW_LOG_SCALE_MAX: i32 = 18432;

/// Higher sub-band: the single decision level, the codes of the two magnitude levels
/// (index 0 unused) by sign, the inverse quantiser, and the log scale factor adaptation.
const HIGH_DECISION: i32 = 564;
const HIGH_CODE_NEGATIVE: [u8; 3] = [0, 1, 0];
const HIGH_CODE_POSITIVE: [u8; 3] = [0, 3, 2];
const HIGH_INVERSE: [i32; 4] = [-7408, -1616, 7408, 1616];
const HIGH_LOG_CLASS: [usize; 4] = [2, 1, 2, 1];
const HIGH_LOG_STEP: [i32; 3] = [0, -214, 798];
const HIGH_LOG_SCALE_MAX: i32 = 22528;

/// Antilog table of the scale factor: 2048 * 2^(i/32), as the standard tabulates it.
const SCALE_ANTILOG: [i32; 32] = [
    2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834,
    2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
];

/// Limits of a reconstructed sub-band signal (15 bits).
const SUBBAND_MIN: i32 = -16384;
const SUBBAND_MAX: i32 = 16383;

/// The standard's 16-bit saturating result.
fn saturate(value: i32) -> i32 {
    value.clamp(i32::from(i16::MIN), i32::from(i16::MAX))
}

/// The standard's fractional multiply of two 16-bit values: (a * b) >> 15, saturated.
fn mult(a: i32, b: i32) -> i32 {
    saturate((a * b) >> 15)
}

/// The magnitude the quantisers compare: one's complement for negatives, so that -1 and
/// 0 fall on the same (smallest) level.
fn quantiser_magnitude(difference: i32) -> i32 {
    if difference >= 0 {
        difference
    } else {
        -(difference + 1)
    }
}

fn is_negative(value: i32) -> bool {
    value < 0
}

/// Scale factor from log scale factor (blocks SCALEL and SCALEH): `offset` is 8 for the
/// lower and 10 for the higher sub-band.
fn scale_from_log(log_scale: i32, offset: i32) -> i32 {
    // `log_scale` is kept within 0..=22528, so the index is 0..=31 and the shift -1..=10.
    let mantissa = SCALE_ANTILOG[((log_scale >> 6) & 31) as usize];
    let shift = offset - (log_scale >> 11);
    let scale = if shift < 0 {
        mantissa << -shift
    } else {
        mantissa >> shift
    };
    scale << 2
}

/// The adaptive state of one sub-band: its quantiser scale and its pole-zero predictor
/// (two poles on the reconstructed signal, six zeros on the quantised difference).
/// Encoder and decoder hold the same state and update it from the same codes.
#[derive(Debug, Clone)]
struct SubBand {
    /// Log of the quantiser scale factor (nabla), 0..=LOG_SCALE_MAX of the band.
    log_scale: i32,
    /// Quantiser scale factor (delta), derived from `log_scale`.
    scale: i32,
    /// Predicted signal s(n) for the sample about to be coded.
    estimate: i32,
    /// The zero section's share of `estimate`, sz(n).
    zero_estimate: i32,
    /// Reconstructed signal r(n-1), r(n-2).
    reconstructed: [i32; 2],
    /// Partially reconstructed signal p(n-1), p(n-2) (difference plus zero estimate).
    partial: [i32; 2],
    /// Pole coefficients a1, a2.
    poles: [i32; 2],
    /// Quantised differences d(n-1)..d(n-6).
    differences: [i32; 6],
    /// Zero coefficients b1..b6.
    zeros: [i32; 6],
}

impl SubBand {
    /// The reset state; the initial scale factors are the standard's (32 and 8).
    fn new(initial_scale: i32) -> Self {
        SubBand {
            log_scale: 0,
            scale: initial_scale,
            estimate: 0,
            zero_estimate: 0,
            reconstructed: [0; 2],
            partial: [0; 2],
            poles: [0; 2],
            differences: [0; 6],
            zeros: [0; 6],
        }
    }

    /// Blocks LOGSCL/LOGSCH and SCALEL/SCALEH: the scale factor for the next sample.
    fn adapt_scale(&mut self, log_step: i32, log_scale_max: i32, offset: i32) {
        // Leakage of 127/128 per sample pulls the scale back towards its floor.
        self.log_scale = (mult(self.log_scale, 32512) + log_step).clamp(0, log_scale_max);
        self.scale = scale_from_log(self.log_scale, offset);
    }

    /// Block 4: reconstruct, adapt the predictor on the quantised difference, and
    /// predict the next sample.
    fn adapt_predictor(&mut self, difference: i32) {
        let reconstructed = saturate(self.estimate + difference);
        let partial = saturate(self.zero_estimate + difference);
        let partial_negative = is_negative(partial);
        let same_sign_as_p1 = partial_negative == is_negative(self.partial[0]);
        let same_sign_as_p2 = partial_negative == is_negative(self.partial[1]);
        let [a1, a2] = self.poles;

        // UPPOL2. 4 * a1 saturating is the standard's f(a1): it caps at 2 once |a1| > 1/2.
        let four_a1 = saturate(a1 << 2);
        let a1_term = if same_sign_as_p1 {
            saturate(-four_a1)
        } else {
            four_a1
        };
        let p2_term = if same_sign_as_p2 { 128 } else { -128 };
        let new_a2 = saturate((a1_term >> 7) + p2_term + mult(a2, 32512)).clamp(-12288, 12288);

        // UPPOL1, limited so that the two poles stay inside the stability triangle.
        let p1_term = if same_sign_as_p1 { 192 } else { -192 };
        let a1_limit = 15360 - new_a2;
        let new_a1 = saturate(p1_term + mult(a1, 32640)).clamp(-a1_limit, a1_limit);

        // UPZERO: a zero difference only leaks the coefficients.
        let zero_step = if difference == 0 { 0 } else { 128 };
        let difference_negative = is_negative(difference);
        for (zero, &past) in self.zeros.iter_mut().zip(&self.differences) {
            let step = if is_negative(past) == difference_negative {
                zero_step
            } else {
                -zero_step
            };
            *zero = saturate(step + mult(*zero, 32640));
        }

        // DELAYA
        self.differences.copy_within(0..5, 1);
        self.differences[0] = difference;
        self.reconstructed = [reconstructed, self.reconstructed[0]];
        self.partial = [partial, self.partial[0]];
        self.poles = [new_a1, new_a2];

        // FILTEP
        let pole_estimate = saturate(
            mult(new_a1, saturate(reconstructed * 2))
                + mult(new_a2, saturate(self.reconstructed[1] * 2)),
        );
        // FILTEZ: oldest tap first, each partial sum saturated as the standard's 16-bit
        // adds are; saturating only the total differs (tests/data/g722/extreme.g722).
        let mut zero_estimate = 0;
        for (&zero, &past) in self.zeros.iter().zip(&self.differences).rev() {
            zero_estimate = saturate(zero_estimate + mult(zero, saturate(past * 2)));
        }
        self.zero_estimate = zero_estimate;
        // PREDIC
        self.estimate = saturate(pole_estimate + zero_estimate);
    }

    /// Lower sub-band update from a 6-bit code (blocks INVQAL, LOGSCL, SCALEL, 4).
    fn update_low(&mut self, code: u8) {
        let code4 = usize::from(code >> 2);
        let difference = mult(self.scale, LOW_INVERSE_4BIT[code4]);
        self.adapt_scale(LOW_LOG_STEP[LOW_LOG_CLASS[code4]], LOW_LOG_SCALE_MAX, 8);
        self.adapt_predictor(difference);
    }

    /// Higher sub-band update from a 2-bit code (blocks INVQAH, LOGSCH, SCALEH, 4).
    fn update_high(&mut self, code: u8) {
        let code = usize::from(code & 3);
        let difference = mult(self.scale, HIGH_INVERSE[code]);
        self.adapt_scale(HIGH_LOG_STEP[HIGH_LOG_CLASS[code]], HIGH_LOG_SCALE_MAX, 10);
        self.adapt_predictor(difference);
    }
}

/// G.722 encoder, 64 kbit/s. Keeps the state between calls, so a stream may be fed in
/// packets of any size.
#[derive(Debug, Clone)]
pub struct G722Encoder {
    /// The last 24 input samples, oldest first, for the analysis filter.
    history: [i32; 24],
    low: SubBand,
    high: SubBand,
    /// The odd sample left over from the previous call, waiting for its pair.
    held: Option<i16>,
}

impl Default for G722Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl G722Encoder {
    pub fn new() -> Self {
        G722Encoder {
            history: [0; 24],
            low: SubBand::new(32),
            high: SubBand::new(8),
            held: None,
        }
    }

    /// Encodes 16 kHz PCM into octets (two samples each) and returns the octets written.
    ///
    /// With an even number of samples in total (this call's plus any held one), that is
    /// `pcm.len() / 2` octets. An odd sample left at the end is held and paired with the
    /// first sample of the next call, so splitting a stream anywhere gives the same octets.
    /// If `out` is too small, the octets that fit are written and the rest of `pcm` is
    /// dropped, a gap in the stream: size `out` to `pcm.len() / 2 + 1` to never lose
    /// audio.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> usize {
        let mut pcm = pcm;
        let mut written = 0;
        if let Some(first) = self.held {
            match (pcm.split_first(), out.first_mut()) {
                (Some((&second, rest)), Some(slot)) => {
                    *slot = self.encode_pair(first, second);
                    self.held = None;
                    written = 1;
                    pcm = rest;
                }
                // Nothing to pair it with, or nowhere to put the octet: keep waiting.
                _ => return 0,
            }
        }
        let pairs = pcm.chunks_exact(2);
        let leftover = pairs.remainder();
        let all_pairs_fit = pairs.len() <= out.len() - written;
        for (pair, slot) in pairs.zip(&mut out[written..]) {
            *slot = self.encode_pair(pair[0], pair[1]);
            written += 1;
        }
        if all_pairs_fit {
            self.held = leftover.first().copied();
        }
        written
    }

    /// Encodes two consecutive samples (`first` is the earlier) into one octet.
    fn encode_pair(&mut self, first: i16, second: i16) -> u8 {
        // Analysis QMF: split the band into lower and higher halves at 8 kHz.
        self.history.copy_within(2.., 0);
        self.history[22] = i32::from(first);
        self.history[23] = i32::from(second);
        let (mut even, mut odd) = (0, 0);
        for k in (0..24).step_by(2) {
            even += QMF[k] * self.history[23 - k];
            odd += QMF[k + 1] * self.history[22 - k];
        }
        // Coefficients are in 2^-13 and the sub-bands are 15-bit: shift by 14.
        let low_input = (even + odd) >> 14;
        let high_input = (even - odd) >> 14;

        // Lower sub-band: SUBTRA, QUANTL.
        let low_error = saturate(low_input - self.low.estimate);
        let magnitude = quantiser_magnitude(low_error);
        let level = LOW_DECISION[1..]
            .iter()
            .position(|&level| magnitude < (level * self.low.scale) >> 12)
            .map_or(30, |below| below + 1);
        let low_code = if is_negative(low_error) {
            LOW_CODE_NEGATIVE[level]
        } else {
            LOW_CODE_POSITIVE[level]
        };
        self.low.update_low(low_code);

        // Higher sub-band: SUBTRA, QUANTH.
        let high_error = saturate(high_input - self.high.estimate);
        let outer = quantiser_magnitude(high_error) >= (HIGH_DECISION * self.high.scale) >> 12;
        let level = if outer { 2 } else { 1 };
        let high_code = if is_negative(high_error) {
            HIGH_CODE_NEGATIVE[level]
        } else {
            HIGH_CODE_POSITIVE[level]
        };
        self.high.update_high(high_code);

        (high_code << 6) | low_code
    }
}

/// The bit rate a G.722 stream was sent at: how many low bits of each octet are
/// auxiliary data rather than audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum G722Mode {
    /// Mode 1: all 8 bits are audio.
    #[default]
    Kbps64,
    /// Mode 2: bit 0 is data; the lower sub-band is decoded from 5 bits.
    Kbps56,
    /// Mode 3: bits 1-0 are data; the lower sub-band is decoded from 4 bits.
    Kbps48,
}

/// G.722 decoder. Keeps the state between calls, so a stream may be fed in packets of
/// any size.
#[derive(Debug, Clone)]
pub struct G722Decoder {
    mode: G722Mode,
    low: SubBand,
    high: SubBand,
    /// The last 12 sub-band differences r_low - r_high, newest first.
    band_difference: [i32; 12],
    /// The last 12 sub-band sums r_low + r_high, newest first.
    band_sum: [i32; 12],
}

impl Default for G722Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl G722Decoder {
    /// A 64 kbit/s decoder.
    pub fn new() -> Self {
        Self::with_mode(G722Mode::Kbps64)
    }

    /// A decoder for a stream sent at `mode`'s bit rate.
    pub fn with_mode(mode: G722Mode) -> Self {
        G722Decoder {
            mode,
            low: SubBand::new(32),
            high: SubBand::new(8),
            band_difference: [0; 12],
            band_sum: [0; 12],
        }
    }

    /// Decodes octets into 16 kHz PCM and returns the samples written: `2 * data.len()`
    /// when `out` is large enough. Otherwise only the octets whose two samples both fit
    /// are decoded (`out.len() / 2` of them) and the rest of `data` is dropped. Any octet
    /// is valid input.
    pub fn decode(&mut self, data: &[u8], out: &mut [i16]) -> usize {
        let mut written = 0;
        for (&octet, pair) in data.iter().zip(out.chunks_exact_mut(2)) {
            let (first, second) = self.decode_octet(octet);
            pair[0] = first;
            pair[1] = second;
            written += 2;
        }
        written
    }

    fn decode_octet(&mut self, octet: u8) -> (i16, i16) {
        let (first, second) = self.decode_octet_unlimited(octet);
        (to_pcm(first), to_pcm(second))
    }

    /// The two output samples of an octet before they are limited to 16 bits: the filter
    /// overshoots full scale on clipped input or hostile octets.
    fn decode_octet_unlimited(&mut self, octet: u8) -> (i32, i32) {
        let low_code = octet & 0x3f;
        let high_code = octet >> 6;

        // Lower sub-band: INVQBL at the mode's resolution, RECONS, LIMIT.
        let inverse = match self.mode {
            G722Mode::Kbps64 => LOW_INVERSE_6BIT[usize::from(low_code)],
            G722Mode::Kbps56 => LOW_INVERSE_5BIT[usize::from(low_code >> 1)],
            G722Mode::Kbps48 => LOW_INVERSE_4BIT[usize::from(low_code >> 2)],
        };
        let low_difference = mult(self.low.scale, inverse);
        let low = saturate(self.low.estimate + low_difference).clamp(SUBBAND_MIN, SUBBAND_MAX);
        self.low.update_low(low_code);

        // Higher sub-band: INVQAH, RECONS, LIMIT.
        let high_difference = mult(self.high.scale, HIGH_INVERSE[usize::from(high_code)]);
        let high = saturate(self.high.estimate + high_difference).clamp(SUBBAND_MIN, SUBBAND_MAX);
        self.high.update_high(high_code);

        self.synthesize(low, high)
    }

    /// Synthesis QMF: x_out(j) = 2 sum h(2i) xd(j-i), x_out(j+1) = 2 sum h(2i+1) xs(j-i),
    /// where xd and xs are the difference and the sum of the sub-band signals.
    fn synthesize(&mut self, low: i32, high: i32) -> (i32, i32) {
        self.band_difference.copy_within(0..11, 1);
        self.band_difference[0] = low - high;
        self.band_sum.copy_within(0..11, 1);
        self.band_sum[0] = low + high;
        let (mut first, mut second) = (0, 0);
        for i in 0..12 {
            first += QMF[2 * i] * self.band_difference[i];
            second += QMF[2 * i + 1] * self.band_sum[i];
        }
        // 2^-13 coefficients, the standard's factor 2, and 15-bit back to 16-bit: shift 11.
        (first >> 11, second >> 11)
    }
}

/// Limits an output sample to 16 bits. (spandsp 0.0.6 wraps it instead, which turns an
/// overshoot into a full-scale click of the other sign: freeswitch/spandsp pull request
/// 14 and sippy/libg722 pull request 4 report and fix it.)
fn to_pcm(value: i32) -> i16 {
    // Saturated first, so the conversion cannot fail.
    i16::try_from(saturate(value)).unwrap_or(i16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Vectors from spandsp (tests/data/g722/README.md): the input signal, spandsp's
    // 64 kbit/s bitstream of it and its decoding, and random octets decoded in each mode.
    const INPUT: &[u8] = include_bytes!("../../../tests/data/g722/input.s16le");
    const ENCODED: &[u8] = include_bytes!("../../../tests/data/g722/encoded.g722");
    const DECODED: &[u8] = include_bytes!("../../../tests/data/g722/decoded.s16le");
    const RANDOM: &[u8] = include_bytes!("../../../tests/data/g722/random.g722");
    const RANDOM_64K: &[u8] = include_bytes!("../../../tests/data/g722/random_64k.s16le");
    const RANDOM_56K: &[u8] = include_bytes!("../../../tests/data/g722/random_56k.s16le");
    const RANDOM_48K: &[u8] = include_bytes!("../../../tests/data/g722/random_48k.s16le");
    const EXTREME: &[u8] = include_bytes!("../../../tests/data/g722/extreme.g722");
    const EXTREME_64K: &[u8] = include_bytes!("../../../tests/data/g722/extreme_64k.s16le");

    fn samples(bytes: &[u8]) -> Vec<i16> {
        bytes
            .chunks_exact(2)
            .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
            .collect()
    }

    fn encode_all(pcm: &[i16]) -> Vec<u8> {
        let mut out = vec![0; pcm.len() / 2];
        let written = G722Encoder::new().encode(pcm, &mut out);
        assert_eq!(written, out.len());
        out
    }

    fn decode_all(mode: G722Mode, data: &[u8]) -> Vec<i16> {
        let mut out = vec![0; data.len() * 2];
        let written = G722Decoder::with_mode(mode).decode(data, &mut out);
        assert_eq!(written, out.len());
        out
    }

    /// Asserts equality element by element, naming the first difference and the count.
    fn assert_same<T: PartialEq + std::fmt::Debug>(ours: &[T], reference: &[T], what: &str) {
        assert_eq!(ours.len(), reference.len(), "{what}: lengths differ");
        let differing = ours.iter().zip(reference).filter(|(a, b)| a != b).count();
        if let Some(first) = ours.iter().zip(reference).position(|(a, b)| a != b) {
            panic!(
                "{what}: {differing} of {} differ, first at {first}: ours {:?}, spandsp {:?}",
                ours.len(),
                ours[first],
                reference[first]
            );
        }
    }

    #[test]
    fn encoder_matches_spandsp_byte_for_byte() {
        let input = samples(INPUT);
        assert_eq!(input.len(), 32_000);
        assert_eq!(ENCODED.len(), 16_000);
        assert_same(&encode_all(&input), ENCODED, "encoded octets");
    }

    #[test]
    fn encoder_in_20ms_packets_matches_spandsp() {
        let input = samples(INPUT);
        let mut encoder = G722Encoder::new();
        let mut ours = Vec::new();
        let mut packet = [0u8; 160];
        for frame in input.chunks(320) {
            let written = encoder.encode(frame, &mut packet);
            ours.extend_from_slice(&packet[..written]);
        }
        assert_same(&ours, ENCODED, "encoded octets, 20 ms packets");
    }

    /// Decodes `data` and checks it against spandsp's decoding of the same octets.
    /// spandsp wraps output samples that overshoot 16 bits where we saturate, so: our
    /// unlimited output wrapped to 16 bits must equal spandsp's everywhere (the whole
    /// arithmetic is the same), and `decode` must return it saturated. Returns how many
    /// samples overshot.
    fn assert_decoder_matches_spandsp(mode: G722Mode, data: &[u8], reference: &[u8]) -> usize {
        let reference = samples(reference);
        let decoded = decode_all(mode, data);
        let mut unlimited_decoder = G722Decoder::with_mode(mode);
        let unlimited: Vec<i32> = data
            .iter()
            .flat_map(|&octet| {
                let (first, second) = unlimited_decoder.decode_octet_unlimited(octet);
                [first, second]
            })
            .collect();
        let wrapped: Vec<i16> = unlimited.iter().map(|&sample| sample as i16).collect();
        assert_same(
            &wrapped,
            &reference,
            &format!("{mode:?}, wrapped like spandsp"),
        );
        let saturated: Vec<i16> = unlimited.iter().map(|&sample| to_pcm(sample)).collect();
        assert_same(&decoded, &saturated, &format!("{mode:?}, decode saturates"));
        unlimited
            .iter()
            .filter(|&&sample| i16::try_from(sample).is_err())
            .count()
    }

    #[test]
    fn decoder_matches_spandsp_sample_for_sample() {
        assert_eq!(DECODED.len(), 64_000);
        let overshoots = assert_decoder_matches_spandsp(G722Mode::Kbps64, ENCODED, DECODED);
        // The clipped square waves of the input overshoot: the saturation is exercised.
        assert!(overshoots > 0);
        // Everywhere else the output is spandsp's, sample for sample.
        let reference = samples(DECODED);
        let same = decode_all(G722Mode::Kbps64, ENCODED)
            .iter()
            .zip(&reference)
            .filter(|(ours, theirs)| ours == theirs)
            .count();
        assert_eq!(same + overshoots, reference.len());
    }

    #[test]
    fn decoder_matches_spandsp_on_random_octets_in_every_mode() {
        for (mode, reference) in [
            (G722Mode::Kbps64, RANDOM_64K),
            (G722Mode::Kbps56, RANDOM_56K),
            (G722Mode::Kbps48, RANDOM_48K),
        ] {
            assert_eq!(reference.len(), 4 * RANDOM.len());
            assert_decoder_matches_spandsp(mode, RANDOM, reference);
        }
    }

    fn round_trip(input: &[i16]) -> Vec<i16> {
        decode_all(G722Mode::Kbps64, &encode_all(input))
    }

    /// The lag of `output` behind `input` that maximises their cross-correlation.
    fn delay_by_cross_correlation(input: &[i16], output: &[i16], max_lag: usize) -> usize {
        let correlation = |lag: usize| -> f64 {
            (0..input.len() - max_lag)
                .map(|n| f64::from(input[n]) * f64::from(output[n + lag]))
                .sum()
        };
        (0..max_lag)
            .max_by(|&a, &b| correlation(a).total_cmp(&correlation(b)))
            .unwrap_or(0)
    }

    /// Runs of extreme codes overflow the predictor's 16-bit sums (FILTEZ, FILTEP,
    /// PREDIC), which neither the test signal nor random octets reach: where the
    /// saturation happens must agree too.
    #[test]
    fn decoder_matches_spandsp_on_saturating_code_runs() {
        assert_eq!(EXTREME_64K.len(), 4 * EXTREME.len());
        assert_decoder_matches_spandsp(G722Mode::Kbps64, EXTREME, EXTREME_64K);
    }

    /// Round trip of a 1 kHz tone at -10 dBFS (peak 10^(-10/20) of full scale). A tone
    /// repeats every 16 samples, so its own cross-correlation cannot tell the codec's
    /// delay from that plus a period: the delay is measured on white noise first.
    /// The floor is 42 dB; this code measures 47.6 dB.
    #[test]
    fn tone_round_trip_snr_is_above_floor() {
        const FLOOR_DB: f64 = 42.0;
        let mut lcg: u32 = 1;
        let noise: Vec<i16> = (0..4_000)
            .map(|_| {
                lcg = lcg.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (lcg >> 19) as i16 - 4096
            })
            .collect();
        let delay = delay_by_cross_correlation(&noise, &round_trip(&noise), 64);
        assert_eq!(delay, 22, "QMF analysis and synthesis delay");

        let peak = 32767.0 * 10f64.powf(-10.0 / 20.0);
        let input: Vec<i16> = (0..16_000)
            .map(|n| {
                let t = f64::from(n) / 16_000.0;
                (peak * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()).round() as i16
            })
            .collect();
        let output = round_trip(&input);
        // The tone's own best alignment agrees with the delay, modulo its period.
        assert_eq!(delay_by_cross_correlation(&input, &output, 16), delay % 16);

        // Measured after the first 100 ms, while the quantiser scales adapt.
        let span = 1_600..input.len() - delay;
        let signal: f64 = span.clone().map(|n| f64::from(input[n]).powi(2)).sum();
        let error: f64 = span
            .map(|n| (f64::from(output[n + delay]) - f64::from(input[n])).powi(2))
            .sum();
        let snr = 10.0 * (signal / error).log10();
        println!("1 kHz at -10 dBFS: delay {delay} samples, SNR {snr:.2} dB");
        assert!(
            snr >= FLOOR_DB,
            "SNR {snr:.1} dB under the {FLOOR_DB} dB floor"
        );
    }

    #[test]
    fn short_output_buffers_get_what_fits() {
        let input = samples(INPUT);
        let mut encoder = G722Encoder::new();
        let mut three = [0u8; 3];
        assert_eq!(encoder.encode(&input[..10], &mut three), 3);
        assert_eq!(three[..], ENCODED[..3]);
        assert_eq!(encoder.encode(&input[..10], &mut []), 0);

        let mut decoder = G722Decoder::new();
        let mut five = [0i16; 5];
        assert_eq!(decoder.decode(&ENCODED[..4], &mut five), 4);
        assert_eq!(five[..4], samples(&DECODED[..8])[..]);
        assert_eq!(decoder.decode(&ENCODED[..4], &mut [0i16; 1]), 0);
    }

    #[test]
    fn an_odd_sample_waits_for_the_next_call() {
        let input = samples(INPUT);
        let mut encoder = G722Encoder::new();
        let mut out = [0u8; 4];
        assert_eq!(encoder.encode(&input[..3], &mut out), 1);
        assert_eq!(encoder.encode(&[], &mut out[1..]), 0);
        assert_eq!(encoder.encode(&input[3..4], &mut []), 0);
        assert_eq!(encoder.encode(&input[3..8], &mut out[1..]), 3);
        assert_eq!(out[..], ENCODED[..4]);
    }

    proptest! {
        #[test]
        fn decoding_any_octets_never_panics(
            data in proptest::collection::vec(any::<u8>(), 0..2_000),
            mode in prop_oneof![
                Just(G722Mode::Kbps64),
                Just(G722Mode::Kbps56),
                Just(G722Mode::Kbps48),
            ],
            room in 0usize..5_000,
        ) {
            let mut out = vec![0i16; room];
            let written = G722Decoder::with_mode(mode).decode(&data, &mut out);
            prop_assert_eq!(written, (2 * data.len()).min(room / 2 * 2));
        }

        #[test]
        fn splitting_the_input_anywhere_gives_the_same_octets(
            cuts in proptest::collection::vec(0usize..2_000, 0..8),
        ) {
            let input = &samples(INPUT)[..2_000];
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut encoder = G722Encoder::new();
            let mut ours = Vec::new();
            let mut out = [0u8; 1_001];
            let mut from = 0;
            for to in cuts.into_iter().chain([input.len()]) {
                let written = encoder.encode(&input[from..to], &mut out);
                ours.extend_from_slice(&out[..written]);
                from = to;
            }
            prop_assert_eq!(&ours[..], &ENCODED[..1_000]);
        }
    }
}
