//! Opus (RFC 6716, RTP per RFC 7587) through libopus (the `opus` crate). Mono, VoIP
//! application; codes and decodes at 8, 16 or 48 kHz so a leg bridged to a narrowband one
//! needs no resampler. In-band FEC and DTX follow the negotiated [`CodecParams`].

use super::{CodecError, CodecKind, CodecParams, Decoder, Encoder};

const NAME: &str = "opus";

fn lib_err(e: ::opus::Error) -> CodecError {
    CodecError::Library {
        codec: NAME,
        what: e.to_string(),
    }
}

fn check_rate(rate: u32) -> Result<(), CodecError> {
    match rate {
        8000 | 16000 | 48000 => Ok(()),
        _ => Err(CodecError::Rate { codec: NAME, rate }),
    }
}

pub struct OpusEncoder {
    inner: ::opus::Encoder,
    rate: u32,
}

impl OpusEncoder {
    pub fn new(rate: u32, params: CodecParams) -> Result<OpusEncoder, CodecError> {
        check_rate(rate)?;
        let mut inner =
            ::opus::Encoder::new(rate, ::opus::Channels::Mono, ::opus::Application::Voip)
                .map_err(lib_err)?;
        inner.set_inband_fec(params.fec).map_err(lib_err)?;
        inner
            .set_packet_loss_perc(i32::from(params.expected_loss_percent.min(100)))
            .map_err(lib_err)?;
        inner.set_dtx(params.dtx).map_err(lib_err)?;
        inner
            .set_complexity(i32::from(params.complexity.min(10)))
            .map_err(lib_err)?;
        if params.bitrate > 0 {
            // RFC 7587 6.1: maxaveragebitrate is 6000 to 510000.
            let bits = params.bitrate.clamp(6000, 510_000) as i32;
            inner
                .set_bitrate(::opus::Bitrate::Bits(bits))
                .map_err(lib_err)?;
        }
        Ok(OpusEncoder { inner, rate })
    }
}

impl Encoder for OpusEncoder {
    fn kind(&self) -> CodecKind {
        CodecKind::Opus
    }
    fn pcm_rate(&self) -> u32 {
        self.rate
    }
    /// With DTX on, silence gives payloads of 1-2 bytes that the sender need not send
    /// (RFC 7587 3.1.3); the caller decides.
    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        self.inner.encode(pcm, out).map_err(lib_err)
    }
}

pub struct OpusDecoder {
    inner: ::opus::Decoder,
    rate: u32,
}

impl OpusDecoder {
    pub fn new(rate: u32) -> Result<OpusDecoder, CodecError> {
        check_rate(rate)?;
        let inner = ::opus::Decoder::new(rate, ::opus::Channels::Mono).map_err(lib_err)?;
        Ok(OpusDecoder { inner, rate })
    }
}

impl Decoder for OpusDecoder {
    fn kind(&self) -> CodecKind {
        CodecKind::Opus
    }
    fn pcm_rate(&self) -> u32 {
        self.rate
    }
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        self.inner.decode(payload, out, false).map_err(lib_err)
    }
    fn samples_in(&self, payload: &[u8]) -> Option<usize> {
        self.inner.get_nb_samples(payload).ok()
    }
    /// libopus' packet loss concealment: an empty packet asks for it.
    fn conceal(&mut self, out: &mut [i16]) -> Result<Option<usize>, CodecError> {
        self.inner
            .decode(&[], out, false)
            .map(Some)
            .map_err(lib_err)
    }
    fn recover(&mut self, next: &[u8], out: &mut [i16]) -> Result<Option<usize>, CodecError> {
        self.inner
            .decode(next, out, true)
            .map(Some)
            .map_err(lib_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::{best_lag, snr_db};
    use crate::media::test_signal::tone;

    /// Encodes and decodes `pcm` in 20 ms frames; returns the decoded audio and the total
    /// payload bytes.
    fn round_trip(rate: u32, pcm: &[i16], params: CodecParams) -> (Vec<i16>, usize) {
        let mut enc = OpusEncoder::new(rate, params).expect("encoder");
        let mut dec = OpusDecoder::new(rate).expect("decoder");
        let frame = rate as usize / 50;
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut payload = [0u8; 1500];
        let mut pcm_out = vec![0i16; frame];
        for chunk in pcm.chunks_exact(frame) {
            let n = enc.encode(chunk, &mut payload).expect("encode");
            bytes += n;
            let m = dec.decode(&payload[..n], &mut pcm_out).expect("decode");
            out.extend_from_slice(&pcm_out[..m]);
        }
        (out, bytes)
    }

    #[test]
    fn a_tone_survives_at_every_rate_with_a_measured_snr() {
        // A perceptual codec is not waveform-exact; a steady tone still comes back
        // within a stated floor once the codec delay is aligned.
        for rate in [8000, 16000, 48000] {
            let pcm = tone(rate, 440.0, rate as usize, 8000.0);
            let (out, bytes) = round_trip(rate, &pcm, CodecParams::default());
            let lag = best_lag(&pcm[..2000], &out, rate as usize / 50);
            let snr = snr_db(&pcm[rate as usize / 5..], &out[rate as usize / 5 + lag..]);
            assert!(snr > 10.0, "{rate} Hz: SNR {snr:.1} dB (lag {lag})");
            assert!(bytes > 0 && bytes < pcm.len(), "{rate} Hz: {bytes} bytes");
        }
    }

    #[test]
    fn dtx_shrinks_silence() {
        let silence = vec![0i16; 16000 * 2];
        let (_, with_dtx) = round_trip(
            16000,
            &silence,
            CodecParams {
                dtx: true,
                ..CodecParams::default()
            },
        );
        let (_, without) = round_trip(16000, &silence, CodecParams::default());
        assert!(with_dtx < without, "DTX {with_dtx} bytes vs {without}");
    }

    #[test]
    fn a_lost_packet_is_recovered_from_fec_or_concealed() {
        let rate = 16000;
        let frame = 320;
        let pcm = tone(rate, 300.0, rate as usize, 8000.0);
        let mut enc = OpusEncoder::new(
            rate,
            CodecParams {
                expected_loss_percent: 20,
                bitrate: 32000,
                ..CodecParams::default()
            },
        )
        .expect("encoder");
        let packets: Vec<Vec<u8>> = pcm
            .chunks_exact(frame)
            .map(|c| {
                let mut p = [0u8; 1500];
                let n = enc.encode(c, &mut p).expect("encode");
                p[..n].to_vec()
            })
            .collect();
        let mut dec = OpusDecoder::new(rate).expect("decoder");
        let mut out = vec![0i16; frame];
        for p in &packets[..20] {
            dec.decode(p, &mut out).expect("decode");
        }
        // Packet 20 is lost: rebuild it from packet 21's FEC, then PLC for 22.
        let n = dec.recover(&packets[21], &mut out).expect("fec");
        assert_eq!(n, Some(frame));
        let energy: f64 = out.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / frame as f64;
        assert!(
            energy.sqrt() > 1000.0,
            "recovered audio has the tone: rms {}",
            energy.sqrt()
        );
        dec.decode(&packets[21], &mut out).expect("decode");
        assert_eq!(dec.conceal(&mut out).expect("plc"), Some(frame));
    }

    #[test]
    fn garbage_payloads_are_errors_not_panics() {
        let mut dec = OpusDecoder::new(8000).expect("decoder");
        let mut out = [0i16; 160];
        let mut seed = 0x1234_5678u32;
        for len in 0..200 {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (seed >> 24) as u8
                })
                .collect();
            let _ = dec.decode(&junk, &mut out);
        }
        assert!(OpusEncoder::new(44100, CodecParams::default()).is_err());
    }
}
