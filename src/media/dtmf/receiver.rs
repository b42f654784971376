//! The RFC 4733 receiver of one stream: telephone-event packets in, each digit out once.
//!
//! Owns: telling events apart by RTP timestamp (RFC 4733 2.5.2), reporting the start and
//! the end of each event exactly once whatever the network did: end retransmits and
//! duplicate updates are dropped, a late packet of an event already reported is dropped,
//! an event whose end packets are all lost ends when a packet with a newer timestamp
//! comes or after [`ReceiverConfig::timeout_ticks`] ticks without a packet for it, and
//! the segments of a long event (2.5.1.3, the next segment's timestamp is the previous
//! one plus 65535) are one event. A new SSRC is a new stream: the caller makes a new
//! receiver. Must not: own a clock or read the RTP header (the media
//! task passes timestamp, marker and payload, and calls [`EventReceiver::on_tick`] every
//! 20 ms), or act on the digits.
//!
//! Events other than the 16 digits (flash, tones, 2.5.2 does not make us understand them)
//! are ignored.

use super::rfc4733::EventPayload;
use super::sender::MAX_SEGMENT;
use super::{Digit, DtmfError};

/// Timestamps of ended events remembered to drop their late packets.
const RECENT: usize = 8;

/// Receiver parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverConfig {
    /// Ticks (20 ms) without a packet after which an event with no end packet is taken
    /// as ended. Senders update at least every 50 ms (2.5.1.2), so a few of those lost
    /// in a row is the event's end.
    pub timeout_ticks: u32,
    /// How far back (timestamp units) a packet older than the current event is taken as
    /// reordered and dropped; an older one means the sender restarted its timestamps
    /// and starts a new event. 8000 = 1 s at 8 kHz, far more than any reordering.
    pub reorder_window: u32,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            timeout_ticks: 10,
            reorder_window: 8000,
        }
    }
}

/// What the receiver reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceivedEvent {
    /// A digit began at RTP `timestamp`.
    Begin { digit: Digit, timestamp: u32 },
    /// The digit that began at `timestamp` ended after `duration` timestamp units (the
    /// longest duration received; all segments of a long event added up).
    End {
        digit: Digit,
        timestamp: u32,
        duration: u32,
    },
}

#[derive(Debug, Clone, Copy)]
struct Current {
    digit: Digit,
    /// The event's first timestamp.
    timestamp: u32,
    /// The timestamp of the segment being received.
    segment_ts: u32,
    /// The longest duration seen in this segment.
    duration: u16,
    ended: bool,
    idle_ticks: u32,
}

impl Current {
    fn total(&self) -> u32 {
        self.segment_ts
            .wrapping_sub(self.timestamp)
            .saturating_add(u32::from(self.duration))
    }

    fn end_event(&self) -> ReceivedEvent {
        ReceivedEvent::End {
            digit: self.digit,
            timestamp: self.timestamp,
            duration: self.total(),
        }
    }
}

/// `a` is later than `b` in RTP timestamp order (modulo 2^32).
fn later(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// Receives the telephone events of one stream.
#[derive(Debug, Clone)]
pub struct EventReceiver {
    config: ReceiverConfig,
    current: Option<Current>,
    /// Segment timestamps of events already reported, newest last.
    recent: [Option<u32>; RECENT],
    recent_next: usize,
}

impl EventReceiver {
    pub fn new(config: ReceiverConfig) -> EventReceiver {
        EventReceiver {
            config,
            current: None,
            recent: [None; RECENT],
            recent_next: 0,
        }
    }

    /// Takes one telephone-event packet. What it means is pushed to `out` (nothing for
    /// a duplicate). A payload that cannot be decoded is an error and changes nothing.
    pub fn on_packet(
        &mut self,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
        out: &mut Vec<ReceivedEvent>,
    ) -> Result<(), DtmfError> {
        let p = EventPayload::decode(payload)?;
        let Some(digit) = Digit::from_event(p.event) else {
            return Ok(());
        };
        if self.recent.contains(&Some(timestamp)) {
            return Ok(()); // an end retransmit or a late packet of a reported event
        }
        if let Some(cur) = &mut self.current {
            if timestamp == cur.segment_ts && digit == cur.digit {
                cur.idle_ticks = 0;
                if cur.ended {
                    return Ok(());
                }
                cur.duration = cur.duration.max(p.duration);
                if p.end {
                    cur.ended = true;
                    out.push(cur.end_event());
                    self.remember(timestamp);
                }
                return Ok(());
            }
            let next_segment = cur.segment_ts.wrapping_add(MAX_SEGMENT);
            if timestamp == next_segment && digit == cur.digit && !marker && !cur.ended {
                // The event goes on in a new segment: the last one was full.
                cur.segment_ts = timestamp;
                cur.duration = p.duration;
                cur.idle_ticks = 0;
                if p.end {
                    cur.ended = true;
                    out.push(cur.end_event());
                    self.remember(timestamp);
                }
                return Ok(());
            }
            let age = cur.segment_ts.wrapping_sub(timestamp);
            if !later(timestamp, cur.segment_ts) && age <= self.config.reorder_window {
                // Older than the event in progress: reordered from an event that is over.
                return Ok(());
            }
            if !cur.ended {
                // Its end packets were lost: a newer event ends it (2.5.2).
                let ended = *cur;
                out.push(ended.end_event());
                self.remember(ended.segment_ts);
            }
        }
        let cur = Current {
            digit,
            timestamp,
            segment_ts: timestamp,
            duration: p.duration,
            ended: p.end,
            idle_ticks: 0,
        };
        out.push(ReceivedEvent::Begin { digit, timestamp });
        if p.end {
            out.push(cur.end_event());
            self.remember(timestamp);
        }
        self.current = Some(cur);
        Ok(())
    }

    /// One tick (20 ms) passed: an event silent for too long is reported ended.
    pub fn on_tick(&mut self, out: &mut Vec<ReceivedEvent>) {
        let timeout = self.config.timeout_ticks.max(1);
        let Some(cur) = &mut self.current else {
            return;
        };
        if cur.ended {
            return;
        }
        cur.idle_ticks += 1;
        if cur.idle_ticks >= timeout {
            cur.ended = true;
            let ended = *cur;
            out.push(ended.end_event());
            self.remember(ended.segment_ts);
        }
    }

    /// The digit being received (begun, not ended), if any.
    pub fn active(&self) -> Option<Digit> {
        self.current.filter(|c| !c.ended).map(|c| c.digit)
    }

    fn remember(&mut self, segment_ts: u32) {
        self.recent[self.recent_next] = Some(segment_ts);
        self.recent_next = (self.recent_next + 1) % RECENT;
    }
}

#[cfg(test)]
mod tests {
    use super::super::sender::{EventPacket, EventSender, SenderConfig};
    use super::*;

    /// A small deterministic PRNG (xorshift64*), enough to shuffle and drop packets.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// The packets of `digits`, each `duration` long, one every tick, with a gap of
    /// `gap` ticks between events: (tick number, packet).
    fn send(digits: &[Digit], duration: u32, gap: u32) -> Vec<(u32, EventPacket)> {
        let mut s = EventSender::new(SenderConfig::default()).unwrap();
        let mut out = Vec::new();
        let mut tick = 0u32;
        for d in digits {
            s.start(*d, tick * 160, duration).unwrap();
            while let Some(p) = s.tick() {
                out.push((tick, p));
                tick += 1;
            }
            tick += gap;
        }
        out
    }

    fn feed(r: &mut EventReceiver, p: &EventPacket, out: &mut Vec<ReceivedEvent>) {
        r.on_packet(p.timestamp, p.marker, &p.payload.encode().unwrap(), out)
            .unwrap();
    }

    fn ends(events: &[ReceivedEvent]) -> Vec<Digit> {
        events
            .iter()
            .filter_map(|e| match e {
                ReceivedEvent::End { digit, .. } => Some(*digit),
                _ => None,
            })
            .collect()
    }

    fn begins(events: &[ReceivedEvent]) -> Vec<Digit> {
        events
            .iter()
            .filter_map(|e| match e {
                ReceivedEvent::Begin { digit, .. } => Some(*digit),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn every_digit_round_trips_once_with_its_duration() {
        let packets = send(&Digit::ALL, 800, 2);
        let mut r = EventReceiver::new(ReceiverConfig::default());
        let mut out = Vec::new();
        for (_, p) in &packets {
            feed(&mut r, p, &mut out);
        }
        assert_eq!(begins(&out), Digit::ALL.to_vec());
        assert_eq!(ends(&out), Digit::ALL.to_vec());
        for e in &out {
            if let ReceivedEvent::End { duration, .. } = e {
                assert_eq!(*duration, 800);
            }
        }
        assert_eq!(out.len(), 32, "nothing reported twice: {out:?}");
    }

    #[test]
    fn same_digit_twice_is_two_events() {
        let packets = send(&[Digit::D7, Digit::D7], 480, 3);
        let mut r = EventReceiver::new(ReceiverConfig::default());
        let mut out = Vec::new();
        for (_, p) in &packets {
            feed(&mut r, p, &mut out);
        }
        assert_eq!(ends(&out), vec![Digit::D7, Digit::D7]);
    }

    #[test]
    fn all_end_packets_lost_ends_by_next_event_or_timeout() {
        let packets = send(&[Digit::D1, Digit::D2], 640, 5);
        let mut r = EventReceiver::new(ReceiverConfig::default());
        let mut out = Vec::new();
        for (_, p) in packets.iter().filter(|(_, p)| !p.payload.end) {
            feed(&mut r, p, &mut out);
        }
        // D1 ended by D2's first packet, with the longest duration heard (480).
        assert_eq!(
            out[..3],
            [
                ReceivedEvent::Begin {
                    digit: Digit::D1,
                    timestamp: 0
                },
                ReceivedEvent::End {
                    digit: Digit::D1,
                    timestamp: 0,
                    duration: 480
                },
                ReceivedEvent::Begin {
                    digit: Digit::D2,
                    timestamp: 11 * 160
                },
            ]
        );
        assert_eq!(r.active(), Some(Digit::D2));
        // D2 has no successor: the timeout ends it, once.
        for _ in 0..9 {
            r.on_tick(&mut out);
        }
        assert_eq!(out.len(), 3);
        r.on_tick(&mut out);
        assert_eq!(ends(&out), vec![Digit::D1, Digit::D2]);
        for _ in 0..50 {
            r.on_tick(&mut out);
        }
        assert_eq!(out.len(), 4);
        assert_eq!(r.active(), None);
    }

    #[test]
    fn late_end_after_timeout_is_not_reported_again() {
        let packets = send(&[Digit::D3], 320, 0);
        let mut r = EventReceiver::new(ReceiverConfig::default());
        let mut out = Vec::new();
        feed(&mut r, &packets[0].1, &mut out);
        for _ in 0..10 {
            r.on_tick(&mut out);
        }
        for (_, p) in &packets[1..] {
            feed(&mut r, p, &mut out);
        }
        assert_eq!(out.len(), 2, "{out:?}");
    }

    #[test]
    fn lost_duplicated_and_reordered_packets_still_give_each_digit_once() {
        let digits: Vec<Digit> = (0..200).map(|i| Digit::ALL[(i * 7 + 3) % 16]).collect();
        for seed in 1..=20u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let packets = send(&digits, 160 * (2 + rng.below(6) as u32), 3);
            // Each packet: lost (10 %), sent twice (10 %), delayed by up to 2 ticks
            // (reordering among neighbours; the 3-tick gap keeps events apart).
            let mut wire: Vec<(u32, u64, EventPacket)> = Vec::new();
            for (tick, p) in &packets {
                let roll = rng.below(10);
                if roll == 0 {
                    continue;
                }
                let copies = if roll == 1 { 2 } else { 1 };
                for _ in 0..copies {
                    let delay = rng.below(3) as u32;
                    wire.push((tick + delay, rng.next(), *p));
                }
            }
            wire.sort_by_key(|(t, k, _)| (*t, *k));
            let mut r = EventReceiver::new(ReceiverConfig::default());
            let mut out = Vec::new();
            let mut tick = 0;
            for (t, _, p) in &wire {
                while tick < *t {
                    r.on_tick(&mut out);
                    tick += 1;
                }
                feed(&mut r, p, &mut out);
            }
            for _ in 0..20 {
                r.on_tick(&mut out);
            }
            // A digit can only vanish if every one of its packets was lost.
            let mut event_ts: Vec<u32> = packets.iter().map(|(_, p)| p.timestamp).collect();
            event_ts.dedup();
            assert_eq!(event_ts.len(), digits.len());
            let expected: Vec<Digit> = digits
                .iter()
                .zip(&event_ts)
                .filter(|(_, ts)| wire.iter().any(|(_, _, p)| p.timestamp == **ts))
                .map(|(d, _)| *d)
                .collect();
            assert_eq!(ends(&out), expected, "seed {seed}");
            assert_eq!(begins(&out), expected, "seed {seed}");
        }
    }

    #[test]
    fn long_event_segments_are_one_event() {
        let mut s = EventSender::new(SenderConfig::default()).unwrap();
        s.start(Digit::Star, 5, 140_000).unwrap();
        let mut r = EventReceiver::new(ReceiverConfig::default());
        let mut out = Vec::new();
        while let Some(p) = s.tick() {
            feed(&mut r, &p, &mut out);
        }
        assert_eq!(
            out,
            vec![
                ReceivedEvent::Begin {
                    digit: Digit::Star,
                    timestamp: 5
                },
                ReceivedEvent::End {
                    digit: Digit::Star,
                    timestamp: 5,
                    duration: 140_000
                },
            ]
        );
    }

    #[test]
    fn a_sender_that_restarts_its_timestamps_far_back_is_heard() {
        let mut r = EventReceiver::new(ReceiverConfig::default());
        let mut out = Vec::new();
        let mut s = EventSender::new(SenderConfig::default()).unwrap();
        for (digit, ts) in [(Digit::D1, 900_000), (Digit::D2, 899_000), (Digit::D3, 5)] {
            s.start(digit, ts, 320).unwrap();
            while let Some(p) = s.tick() {
                feed(&mut r, &p, &mut out);
            }
        }
        // 899000 is a late packet's timestamp (dropped), 5 a restart (heard).
        assert_eq!(ends(&out), vec![Digit::D1, Digit::D3]);
    }

    #[test]
    fn bad_payloads_are_errors_other_events_are_ignored() {
        let mut r = EventReceiver::new(ReceiverConfig::default());
        let mut out = Vec::new();
        assert!(matches!(
            r.on_packet(0, true, &[1, 0], &mut out),
            Err(DtmfError::ShortEventPayload(2))
        ));
        // Event 16 (flash) is not a digit.
        r.on_packet(0, true, &[16, 0x0a, 0, 160], &mut out).unwrap();
        assert!(out.is_empty());
        assert_eq!(r.active(), None);
    }
}
