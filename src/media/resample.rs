//! Sample-rate conversion between the rates the engine meets (8, 16, 48 kHz, and whatever
//! a sound file has), frame by frame, with rubato's FFT resampler: a band-limited
//! conversion (anti-aliasing filter on the way down, no imaging on the way up), not the
//! linear interpolation that makes narrowband prompts buzz.
//!
//! Owns: one stream's conversion state. Must not: know codecs or RTP. Allocates only when
//! built; [`FrameResampler::process`] allocates nothing.

use rubato::{FftFixedInOut, Resampler};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ResampleError {
    #[error("cannot resample {from} Hz to {to} Hz in {frame} sample frames: {why}")]
    Setup {
        from: u32,
        to: u32,
        frame: usize,
        why: String,
    },
    #[error("resampler expects {want} input samples, got {got}")]
    FrameSize { want: usize, got: usize },
    #[error("resampler: {0}")]
    Process(String),
}

/// Converts fixed frames of mono i16 PCM from one rate to another.
pub struct FrameResampler {
    inner: FftFixedInOut<f32>,
    input: [Vec<f32>; 1],
    output: [Vec<f32>; 1],
    from: u32,
    to: u32,
}

impl FrameResampler {
    /// A resampler taking `frame_ms` of audio at `from` Hz per call (e.g. 20 ms: 160
    /// samples at 8 kHz) and giving the same duration at `to` Hz.
    pub fn new(from: u32, to: u32, frame_ms: u32) -> Result<FrameResampler, ResampleError> {
        let frame = (from * frame_ms / 1000) as usize;
        let setup = |why: String| ResampleError::Setup {
            from,
            to,
            frame,
            why,
        };
        if from == 0 || to == 0 || frame == 0 {
            return Err(setup("rates and frame must be positive".into()));
        }
        let inner = FftFixedInOut::<f32>::new(from as usize, to as usize, frame, 1)
            .map_err(|e| setup(e.to_string()))?;
        // The FFT resampler rounds the chunk to a multiple of its block; frames of other
        // sizes would not line up with the 20 ms packets.
        if inner.input_frames_next() != frame {
            return Err(setup(format!(
                "the frame must be a multiple of {} samples",
                inner.input_frames_next()
            )));
        }
        let out = inner.output_frames_max();
        Ok(FrameResampler {
            input: [vec![0.0; frame]],
            output: [vec![0.0; out]],
            inner,
            from,
            to,
        })
    }

    pub fn input_len(&self) -> usize {
        self.input[0].len()
    }

    pub fn output_len(&self) -> usize {
        self.inner.output_frames_next()
    }

    pub fn rates(&self) -> (u32, u32) {
        (self.from, self.to)
    }

    /// The delay the conversion adds, in output samples.
    pub fn delay(&self) -> usize {
        self.inner.output_delay()
    }

    /// Converts one frame of exactly [`Self::input_len`] samples into `out` (at least
    /// [`Self::output_len`] long); returns the samples written.
    pub fn process(&mut self, pcm: &[i16], out: &mut [i16]) -> Result<usize, ResampleError> {
        if pcm.len() != self.input[0].len() {
            return Err(ResampleError::FrameSize {
                want: self.input[0].len(),
                got: pcm.len(),
            });
        }
        for (f, s) in self.input[0].iter_mut().zip(pcm) {
            *f = f32::from(*s) / 32768.0;
        }
        let (_, written) = self
            .inner
            .process_into_buffer(&self.input, &mut self.output, None)
            .map_err(|e| ResampleError::Process(e.to_string()))?;
        let n = written.min(out.len());
        for (o, f) in out.iter_mut().zip(&self.output[0][..n]) {
            *o = (f * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::test_signal::{rms, tone};

    /// Gain in dB of a tone at `hz` through `from` -> `to`, after the start-up transient.
    fn gain_db(from: u32, to: u32, hz: f64) -> f64 {
        let mut r = FrameResampler::new(from, to, 20).expect("resampler");
        let input = tone(from, hz, from as usize, 10000.0);
        let mut out = Vec::new();
        let mut buf = vec![0i16; r.output_len()];
        for frame in input.chunks_exact(r.input_len()) {
            let n = r.process(frame, &mut buf).expect("process");
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out.len(), to as usize, "one second in, one second out");
        let skip = to as usize / 5;
        20.0 * (rms(&out[skip..]) / rms(&input[from as usize / 5..])).log10()
    }

    #[test]
    fn passband_is_flat_both_ways() {
        for (from, to) in [
            (8000, 48000),
            (48000, 8000),
            (8000, 16000),
            (16000, 8000),
            (16000, 48000),
            (48000, 16000),
        ] {
            let nyquist = f64::from(from.min(to)) / 2.0;
            for hz in [100.0, 300.0, 1000.0, 2000.0, nyquist * 0.8] {
                let g = gain_db(from, to, hz);
                assert!(g.abs() < 0.5, "{from}->{to} at {hz} Hz: {g:.2} dB");
            }
        }
    }

    #[test]
    fn what_does_not_fit_below_the_new_nyquist_is_filtered_out() {
        // A tone above the output's Nyquist frequency must not fold back as an alias.
        for (from, to, hz) in [
            (48000, 8000, 6000.0),
            (16000, 8000, 5000.0),
            (48000, 16000, 12000.0),
        ] {
            let g = gain_db(from, to, hz);
            assert!(
                g < -40.0,
                "{from}->{to} at {hz} Hz leaks through at {g:.1} dB"
            );
        }
    }

    #[test]
    fn wrong_frames_are_errors() {
        let mut r = FrameResampler::new(8000, 16000, 20).expect("resampler");
        let mut out = [0i16; 320];
        assert!(matches!(
            r.process(&[0; 100], &mut out),
            Err(ResampleError::FrameSize {
                want: 160,
                got: 100
            })
        ));
        assert!(FrameResampler::new(0, 8000, 20).is_err());
        // 44.1 kHz files: 20 ms is 882 samples, a multiple of the 441 block.
        let r = FrameResampler::new(44100, 8000, 20).expect("44.1k");
        assert_eq!((r.input_len(), r.output_len()), (882, 160));
    }
}
