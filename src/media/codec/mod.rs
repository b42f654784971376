//! Audio codecs: turn RTP payloads into 16-bit linear PCM and back, for the legs the
//! media engine has to decode (transcoding, prompts, recording, mixing). The relay's fast
//! path never comes here: legs that share a codec are relayed untouched.
//!
//! Owns: the codec table ([`CodecKind`], names and clock rates as SDP spells them), the
//! encoder/decoder objects behind one interface ([`Encoder`], [`Decoder`]) and their
//! errors. Must not: know SDP text, sockets or RTP headers (the caller strips them).
//!
//! PCM is mono i16 at the codec's *audio* rate ([`CodecKind::pcm_rate`]), which is not
//! always its RTP clock rate: G.722 samples at 16 kHz on an 8 kHz RTP clock (RFC 3551
//! 4.5.2), Opus runs its RTP clock at 48 kHz whatever it codes (RFC 7587) and can code and
//! decode at 8, 16 or 48 kHz itself, so an Opus leg bridged to G.711 needs no resampler.

pub mod g711;
pub mod g722;
pub mod opus;

use thiserror::Error;

/// Errors of the codec layer.
#[derive(Debug, Error)]
pub enum CodecError {
    #[error("{codec}: cannot code at {rate} Hz")]
    Rate { codec: &'static str, rate: u32 },
    #[error("{codec}: {what}")]
    Library { codec: &'static str, what: String },
    #[error("{codec}: output buffer too small ({have} < {need})")]
    Buffer {
        codec: &'static str,
        have: usize,
        need: usize,
    },
}

/// The codecs the engine can decode and encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodecKind {
    Pcmu,
    Pcma,
    G722,
    Opus,
}

impl CodecKind {
    /// All of them, in the default order of preference for a new offer.
    pub const ALL: [CodecKind; 4] = [
        CodecKind::Opus,
        CodecKind::G722,
        CodecKind::Pcmu,
        CodecKind::Pcma,
    ];

    /// The encoding name of `a=rtpmap` (compared case-insensitively).
    pub fn name(self) -> &'static str {
        match self {
            CodecKind::Pcmu => "PCMU",
            CodecKind::Pcma => "PCMA",
            CodecKind::G722 => "G722",
            CodecKind::Opus => "opus",
        }
    }

    /// The RTP clock rate of `a=rtpmap`.
    pub fn clock_rate(self) -> u32 {
        match self {
            CodecKind::Pcmu | CodecKind::Pcma | CodecKind::G722 => 8000,
            CodecKind::Opus => 48000,
        }
    }

    /// The static payload type (RFC 3551), if it has one.
    pub fn static_payload_type(self) -> Option<u8> {
        match self {
            CodecKind::Pcmu => Some(0),
            CodecKind::Pcma => Some(8),
            CodecKind::G722 => Some(9),
            CodecKind::Opus => None,
        }
    }

    /// The rate of the PCM this codec natively codes.
    pub fn pcm_rate(self) -> u32 {
        match self {
            CodecKind::Pcmu | CodecKind::Pcma => 8000,
            CodecKind::G722 => 16000,
            CodecKind::Opus => 48000,
        }
    }

    /// Finds a codec by its rtpmap name and clock rate.
    pub fn from_rtpmap(name: &str, clock_rate: u32) -> Option<CodecKind> {
        CodecKind::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name) && c.clock_rate() == clock_rate)
    }

    /// RTP timestamp units per PCM sample at `pcm_rate`.
    pub fn rtp_ticks(self, samples: usize, pcm_rate: u32) -> u32 {
        (samples as u64 * u64::from(self.clock_rate()) / u64::from(pcm_rate.max(1))) as u32
    }
}

/// The codecs the engine may code (transcoding, apps) and adds to offers, in order of
/// preference (`[media] codecs`). Codecs the phones share are relayed whatever it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecList {
    kinds: [CodecKind; 4],
    len: usize,
}

impl CodecList {
    /// `kinds` in order, repeats dropped.
    pub fn new(kinds: &[CodecKind]) -> CodecList {
        let mut list = CodecList {
            kinds: CodecKind::ALL,
            len: 0,
        };
        for k in kinds {
            if !list.as_slice().contains(k) && list.len < list.kinds.len() {
                list.kinds[list.len] = *k;
                list.len += 1;
            }
        }
        list
    }

    pub fn as_slice(&self) -> &[CodecKind] {
        &self.kinds[..self.len]
    }

    pub fn contains(&self, kind: CodecKind) -> bool {
        self.as_slice().contains(&kind)
    }
}

impl Default for CodecList {
    fn default() -> Self {
        CodecList::new(&CodecKind::ALL)
    }
}

/// Per-leg codec settings negotiated in SDP (`a=fmtp`) or configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecParams {
    /// Opus: in-band forward error correction (`useinbandfec=1`).
    pub fec: bool,
    /// Opus: discontinuous transmission (`usedtx=1`).
    pub dtx: bool,
    /// Opus: the loss the encoder should expect, in percent (gates FEC).
    pub expected_loss_percent: u8,
    /// Opus: target bitrate in bit/s (`maxaveragebitrate`); 0 = the library's choice.
    pub bitrate: u32,
    /// Opus: encoder complexity, 0 (cheapest) to 10 (libopus' default).
    pub complexity: u8,
}

impl Default for CodecParams {
    /// Cheap and good for speech: bench/media measured complexity 1 at 16 kbit/s at about
    /// half the CPU of complexity 5 at libopus' own rate (~9 kbit/s), and half a MOS point
    /// better (PESQ 3.78 against 3.29 through PCMU); the bitrate buys more than the search.
    fn default() -> Self {
        CodecParams {
            fec: true,
            dtx: false,
            expected_loss_percent: 5,
            bitrate: 16_000,
            complexity: 1,
        }
    }
}

/// Turns PCM frames into payloads.
pub trait Encoder: Send {
    fn kind(&self) -> CodecKind;
    /// The rate of the PCM it takes.
    fn pcm_rate(&self) -> u32;
    /// Encodes one frame (10, 20, 40 or 60 ms of samples); returns the payload length.
    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError>;
}

/// Turns payloads into PCM.
pub trait Decoder: Send {
    fn kind(&self) -> CodecKind;
    /// The rate of the PCM it gives.
    fn pcm_rate(&self) -> u32;
    /// Decodes one payload; returns the samples written.
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError>;
    /// How many samples `payload` decodes to, when that can be told without decoding.
    fn samples_in(&self, payload: &[u8]) -> Option<usize>;
    /// Fills `out` for a lost packet of `out.len()` samples with the codec's own
    /// concealment, or returns `None` when it has none (the jitter buffer conceals then).
    fn conceal(&mut self, out: &mut [i16]) -> Result<Option<usize>, CodecError>;
    /// Rebuilds a lost packet of `out.len()` samples from the forward error correction
    /// data in `next` (the packet after it), when the codec carries any.
    fn recover(&mut self, next: &[u8], out: &mut [i16]) -> Result<Option<usize>, CodecError> {
        let _ = (next, out);
        Ok(None)
    }
}

struct G711Encoder(g711::Law, CodecKind);
struct G711Decoder(g711::Law, CodecKind);

impl Encoder for G711Encoder {
    fn kind(&self) -> CodecKind {
        self.1
    }
    fn pcm_rate(&self) -> u32 {
        8000
    }
    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        if out.len() < pcm.len() {
            return Err(CodecError::Buffer {
                codec: self.1.name(),
                have: out.len(),
                need: pcm.len(),
            });
        }
        Ok(g711::encode(self.0, pcm, out))
    }
}

impl Decoder for G711Decoder {
    fn kind(&self) -> CodecKind {
        self.1
    }
    fn pcm_rate(&self) -> u32 {
        8000
    }
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        if out.len() < payload.len() {
            return Err(CodecError::Buffer {
                codec: self.1.name(),
                have: out.len(),
                need: payload.len(),
            });
        }
        Ok(g711::decode(self.0, payload, out))
    }
    fn samples_in(&self, payload: &[u8]) -> Option<usize> {
        Some(payload.len())
    }
    fn conceal(&mut self, _out: &mut [i16]) -> Result<Option<usize>, CodecError> {
        Ok(None)
    }
}

/// An encoder for `kind` taking PCM at `pcm_rate` (G.711 and G.722 only at their own
/// rate; Opus at 8, 16 or 48 kHz).
pub fn encoder(
    kind: CodecKind,
    pcm_rate: u32,
    params: CodecParams,
) -> Result<Box<dyn Encoder>, CodecError> {
    match kind {
        CodecKind::Pcmu | CodecKind::Pcma => {
            Ok(Box::new(G711Encoder(g711_law(kind, pcm_rate)?, kind)))
        }
        CodecKind::G722 => {
            check_native(kind, pcm_rate)?;
            Ok(Box::new(g722::G722Encoder::new()))
        }
        CodecKind::Opus => Ok(Box::new(opus::OpusEncoder::new(pcm_rate, params)?)),
    }
}

/// A decoder for `kind` giving PCM at `pcm_rate` (as for [`encoder`]).
pub fn decoder(kind: CodecKind, pcm_rate: u32) -> Result<Box<dyn Decoder>, CodecError> {
    match kind {
        CodecKind::Pcmu | CodecKind::Pcma => {
            Ok(Box::new(G711Decoder(g711_law(kind, pcm_rate)?, kind)))
        }
        CodecKind::G722 => {
            check_native(kind, pcm_rate)?;
            Ok(Box::new(g722::G722Decoder::new()))
        }
        CodecKind::Opus => Ok(Box::new(opus::OpusDecoder::new(pcm_rate)?)),
    }
}

impl Encoder for g722::G722Encoder {
    fn kind(&self) -> CodecKind {
        CodecKind::G722
    }
    fn pcm_rate(&self) -> u32 {
        16000
    }
    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        let need = pcm.len().div_ceil(2);
        if out.len() < need {
            return Err(CodecError::Buffer {
                codec: "G722",
                have: out.len(),
                need,
            });
        }
        Ok(g722::G722Encoder::encode(self, pcm, out))
    }
}

impl Decoder for g722::G722Decoder {
    fn kind(&self) -> CodecKind {
        CodecKind::G722
    }
    fn pcm_rate(&self) -> u32 {
        16000
    }
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        if out.len() < payload.len() * 2 {
            return Err(CodecError::Buffer {
                codec: "G722",
                have: out.len(),
                need: payload.len() * 2,
            });
        }
        Ok(g722::G722Decoder::decode(self, payload, out))
    }
    fn samples_in(&self, payload: &[u8]) -> Option<usize> {
        Some(payload.len() * 2)
    }
    fn conceal(&mut self, _out: &mut [i16]) -> Result<Option<usize>, CodecError> {
        Ok(None)
    }
}

/// The law of a G.711 codec, which codes only at 8 kHz.
fn g711_law(kind: CodecKind, pcm_rate: u32) -> Result<g711::Law, CodecError> {
    check_native(kind, pcm_rate)?;
    Ok(if kind == CodecKind::Pcmu {
        g711::Law::Ulaw
    } else {
        g711::Law::Alaw
    })
}

fn check_native(kind: CodecKind, pcm_rate: u32) -> Result<(), CodecError> {
    if pcm_rate == kind.pcm_rate() {
        Ok(())
    } else {
        Err(CodecError::Rate {
            codec: kind.name(),
            rate: pcm_rate,
        })
    }
}

/// Signal-to-noise ratio of `got` against `want`, in dB, over their common length.
pub fn snr_db(want: &[i16], got: &[i16]) -> f64 {
    let (mut signal, mut noise) = (0.0f64, 0.0f64);
    for (w, g) in want.iter().zip(got) {
        let (w, g) = (f64::from(*w), f64::from(*g));
        signal += w * w;
        noise += (w - g) * (w - g);
    }
    10.0 * (signal / noise.max(1e-9)).log10()
}

/// The lag (0..max_lag) at which `got` best matches `want` (codec delay), by
/// cross-correlation.
pub fn best_lag(want: &[i16], got: &[i16], max_lag: usize) -> usize {
    (0..max_lag)
        .max_by(|a, b| {
            let corr = |lag: usize| -> f64 {
                want.iter()
                    .zip(got.iter().skip(lag))
                    .map(|(w, g)| f64::from(*w) * f64::from(*g))
                    .sum()
            };
            corr(*a).total_cmp(&corr(*b))
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codecs_are_found_by_their_rtpmap() {
        assert_eq!(CodecKind::from_rtpmap("pcmu", 8000), Some(CodecKind::Pcmu));
        assert_eq!(CodecKind::from_rtpmap("OPUS", 48000), Some(CodecKind::Opus));
        assert_eq!(CodecKind::from_rtpmap("G722", 8000), Some(CodecKind::G722));
        assert_eq!(CodecKind::from_rtpmap("G722", 16000), None);
        assert_eq!(CodecKind::from_rtpmap("GSM", 8000), None);
        // 20 ms of 16 kHz G.722 audio is 160 RTP ticks; of 8 kHz Opus, 960.
        assert_eq!(CodecKind::G722.rtp_ticks(320, 16000), 160);
        assert_eq!(CodecKind::Opus.rtp_ticks(160, 8000), 960);
    }

    #[test]
    fn g711_needs_its_own_rate() {
        assert!(encoder(CodecKind::Pcmu, 16000, CodecParams::default()).is_err());
        let mut e = encoder(CodecKind::Pcma, 8000, CodecParams::default()).expect("pcma");
        let mut small = [0u8; 10];
        assert!(e.encode(&[0; 160], &mut small).is_err());
    }
}
