//! Two media endpoints back to back: the [`MediaLink`] pair that bridges an app's caller
//! to a leg the PBX dialled, and the ringback tone the caller hears meanwhile.
//!
//! Owns: the PCM path between the two endpoints (one bounded [`FrameQueue`] per
//! direction, as a conference member has towards its room, so the two endpoint tasks'
//! unaligned 20 ms clocks cost at most a frame) and the conversion between their rates
//! when the legs speak codecs of different rates (each side resamples what it puts).
//! Must not: touch sockets, codecs or SIP: each endpoint decodes its phone and encodes
//! what the other side gives; the call layer decides when to link.

use std::sync::Arc;

use super::conference::FrameQueue;
use super::endpoint::MediaLink;
use super::player::{Item, Prompt};
use super::resample::{FrameResampler, ResampleError};
use super::transcode::TICK_MS;

/// One endpoint's side of a bridge. Dropping it (the endpoint unlinks) leaves the other
/// side silent.
pub struct BridgeLink {
    to_peer: Arc<FrameQueue>,
    from_peer: Arc<FrameQueue>,
    /// From this side's rate to the peer's, when they differ.
    resampler: Option<FrameResampler>,
    scratch: Vec<i16>,
}

/// Links an endpoint at `rate_a` with one at `rate_b`: give the first to A, the second
/// to B ([`super::endpoint::Endpoint::set_link`]).
pub fn link_pair(rate_a: u32, rate_b: u32) -> Result<(BridgeLink, BridgeLink), ResampleError> {
    let a_to_b = Arc::new(FrameQueue::default());
    let b_to_a = Arc::new(FrameQueue::default());
    let side = |from: u32, to: u32, out: &Arc<FrameQueue>, inn: &Arc<FrameQueue>| {
        let resampler = if from == to {
            None
        } else {
            Some(FrameResampler::new(from, to, TICK_MS)?)
        };
        let scratch = vec![0; (to * TICK_MS / 1000) as usize * 2];
        Ok::<_, ResampleError>(BridgeLink {
            to_peer: out.clone(),
            from_peer: inn.clone(),
            resampler,
            scratch,
        })
    };
    Ok((
        side(rate_a, rate_b, &a_to_b, &b_to_a)?,
        side(rate_b, rate_a, &b_to_a, &a_to_b)?,
    ))
}

impl MediaLink for BridgeLink {
    fn put(&mut self, pcm: &[i16]) {
        match &mut self.resampler {
            None => self.to_peer.push(pcm),
            Some(r) => {
                // A frame of the wrong size (never from an endpoint) is dropped: the peer
                // hears a frame of silence, not garbage.
                if let Ok(n) = r.process(pcm, &mut self.scratch) {
                    self.to_peer.push(&self.scratch[..n]);
                }
            }
        }
    }

    fn take(&mut self, out: &mut [i16]) -> bool {
        self.from_peer.pop_into(out)
    }
}

/// The ringback tone (North American: 440 + 480 Hz, 2 s on, 4 s off) at `rate`, as a
/// looping playlist: what a caller already answered hears while the bridge rings.
pub fn ringback(rate: u32) -> Vec<Item> {
    let n = rate as usize * 2;
    // About -19 dBm0 per tone: audible, well under clipping when summed.
    let amp = 2300.0;
    let samples: Vec<i16> = (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            let v = amp * (2.0 * std::f64::consts::PI * 440.0 * t).sin()
                + amp * (2.0 * std::f64::consts::PI * 480.0 * t).sin();
            v.round() as i16
        })
        .collect();
    vec![
        Item::Sound(Arc::new(Prompt::from_samples("ringback", rate, samples))),
        Item::Silence { ms: 4000 },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::test_signal::{power_at, tone};

    #[test]
    fn frames_cross_both_ways_and_are_resampled_between_rates() {
        let (mut a, mut b) = link_pair(8000, 16000).expect("pair");
        let mut got16 = vec![0i16; 320];
        assert!(!b.take(&mut got16), "nothing yet");
        let narrow = tone(8000, 1000.0, 160 * 10, 8000.0);
        let mut heard = Vec::new();
        for f in narrow.chunks(160) {
            a.put(f);
            assert!(b.take(&mut got16));
            heard.extend_from_slice(&got16);
        }
        assert_eq!(heard.len(), 3200);
        // The 1 kHz tone arrives at 16 kHz (after the resampler's delay).
        assert!(
            power_at(&heard[1600..], 16000, 1000.0)
                > power_at(&heard[1600..], 16000, 3000.0) * 100.0
        );
        let wide = tone(16000, 500.0, 320, 8000.0);
        b.put(&wide);
        let mut got8 = vec![0i16; 160];
        assert!(a.take(&mut got8));
        // Same rates: frames pass untouched.
        let (mut c, mut d) = link_pair(8000, 8000).expect("pair");
        c.put(&narrow[..160]);
        assert!(d.take(&mut got8));
        assert_eq!(got8[..], narrow[..160]);
    }

    #[test]
    fn ringback_is_two_seconds_of_tone_then_four_of_silence() {
        let items = ringback(8000);
        match &items[0] {
            Item::Sound(p) => {
                assert_eq!(p.samples().len(), 16000);
                assert!(
                    power_at(p.samples(), 8000, 440.0)
                        > power_at(p.samples(), 8000, 1000.0) * 100.0
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(items[1], Item::Silence { ms: 4000 }));
    }
}
