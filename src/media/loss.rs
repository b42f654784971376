//! Packet loss of a received RTP stream, as RFC 3550 A.3 counts it: packets expected
//! (from the extended highest sequence number seen and the first one) minus packets
//! received, so a reordered packet is not lost (and, as there, a late duplicate can
//! hide a loss: never more received than expected). A new SSRC (a phone restarting its stream) starts a new count and
//! keeps what the old one lost. Pure and allocation-free: the relay calls it per packet.

/// A gap larger than this (forward or back) is a restart of the sequence, not loss
/// (RFC 3550 A.1's MAX_DROPOUT).
const MAX_DROPOUT: u32 = 3000;

#[derive(Debug, Default, Clone, Copy)]
pub struct LossCounter {
    stream: Option<Stream>,
    /// Lost by streams that ended (SSRC changes, restarts).
    lost_before: u64,
}

#[derive(Debug, Clone, Copy)]
struct Stream {
    ssrc: u32,
    /// Extended (with wrap count) sequence numbers.
    base: u64,
    max: u64,
    received: u64,
}

impl Stream {
    fn new(ssrc: u32, seq: u16) -> Stream {
        Stream {
            ssrc,
            base: u64::from(seq),
            max: u64::from(seq),
            received: 1,
        }
    }

    fn lost(&self) -> u64 {
        (self.max - self.base + 1).saturating_sub(self.received)
    }
}

impl LossCounter {
    /// One received RTP packet.
    pub fn on_packet(&mut self, ssrc: u32, seq: u16) {
        let Some(s) = self.stream.as_mut().filter(|s| s.ssrc == ssrc) else {
            self.restart(ssrc, seq);
            return;
        };
        let max16 = (s.max & 0xffff) as u16;
        let ahead = u32::from(seq.wrapping_sub(max16));
        if ahead == 0 {
            // A duplicate of the newest packet: nothing new was received.
            return;
        }
        if ahead < MAX_DROPOUT {
            s.max += u64::from(ahead);
            s.received += 1;
        } else if 65536 - ahead <= MAX_DROPOUT {
            // Late (reordered) and within reach: received, the expected count stands.
            if s.received < s.max - s.base + 1 {
                s.received += 1;
            }
        } else {
            // A jump: the sender restarted its numbering.
            self.restart(ssrc, seq);
        }
    }

    fn restart(&mut self, ssrc: u32, seq: u16) {
        if let Some(old) = self.stream.take() {
            self.lost_before += old.lost();
        }
        self.stream = Some(Stream::new(ssrc, seq));
    }

    /// Packets lost so far, over every stream this counter saw.
    pub fn lost(&self) -> u64 {
        self.lost_before + self.stream.map_or(0, |s| s.lost())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(seqs: &[u16]) -> u64 {
        let mut c = LossCounter::default();
        for &s in seqs {
            c.on_packet(7, s);
        }
        c.lost()
    }

    #[test]
    fn gaps_are_lost_and_reordering_or_duplicates_are_not() {
        assert_eq!(feed(&[1, 2, 3, 4]), 0);
        assert_eq!(feed(&[1, 2, 5, 6]), 2);
        assert_eq!(feed(&[1, 3, 2, 4]), 0, "reordered");
        assert_eq!(feed(&[1, 2, 2, 3]), 0, "duplicate");
        assert_eq!(feed(&[65534, 65535, 0, 2]), 1, "across the wrap");
    }

    #[test]
    fn a_new_ssrc_or_a_jump_starts_a_new_count_and_keeps_the_old_loss() {
        let mut c = LossCounter::default();
        for s in [10, 11, 14] {
            c.on_packet(1, s);
        }
        assert_eq!(c.lost(), 2);
        for s in [500, 501, 503] {
            c.on_packet(2, s);
        }
        assert_eq!(c.lost(), 3);
        // Same SSRC, numbering jumps far: a restart, not 20,000 lost packets.
        c.on_packet(2, 20_000);
        c.on_packet(2, 20_001);
        assert_eq!(c.lost(), 3);
    }
}
