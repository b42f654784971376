//! The RFC 4733 sender of one stream: which telephone-event packet to send at each tick.
//!
//! Owns: the packet sequence of one event at a time (RFC 4733 2.5.1): the first packet
//! with the marker bit, updates carrying the same RTP timestamp (the event's start) and a
//! growing duration, the final packet with the E bit sent [`SenderConfig::end_repeats`]
//! times (2.5.1.4), and long events cut into segments when the 16-bit duration would
//! overflow (2.5.1.3). Must not: own a clock, sequence numbers, SSRC or sockets: the
//! media task calls [`EventSender::tick`] once per packet interval (20 ms) and wraps the
//! packet in its RTP header (sequence numbers keep counting across event packets).
//!
//! Time is counted in RTP timestamp units (8000 per second for telephone-event/8000).

use super::rfc4733::{EventPayload, MAX_VOLUME};
use super::{Digit, DtmfError};

/// The largest duration one segment can carry (2.5.1.3).
pub const MAX_SEGMENT: u32 = 0xFFFF;

/// Sender parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderConfig {
    /// Timestamp units between two ticks: 160 = 20 ms at 8 kHz, the media clock.
    pub interval: u32,
    /// How many times the final packet goes out (RFC 4733 2.5.1.4 says three).
    pub end_repeats: u8,
    /// The volume field, -dBm0 (0..=63).
    pub volume: u8,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            interval: 160,
            end_repeats: 3,
            volume: 10,
        }
    }
}

/// One packet to send: the RTP header fields that matter plus the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPacket {
    /// RTP timestamp: the start of the event (or of the segment).
    pub timestamp: u32,
    /// RTP marker bit: set on the first packet of an event only.
    pub marker: bool,
    pub payload: EventPayload,
}

#[derive(Debug, Clone, Copy)]
struct Sending {
    digit: Digit,
    start_ts: u32,
    /// The total duration; `None` while the event is open (see [`EventSender::stop`]).
    total: Option<u64>,
    /// Time reported so far, from the start of the event.
    elapsed: u64,
    /// Where the current segment begins, from the start of the event.
    segment_start: u64,
    first_sent: bool,
    /// Final packets sent so far (0 = the event has not ended yet).
    ends_sent: u8,
    end_duration: u16,
}

/// Sends one event at a time on one RTP stream.
#[derive(Debug, Clone)]
pub struct EventSender {
    config: SenderConfig,
    current: Option<Sending>,
}

impl EventSender {
    /// A sender; the volume must fit the 6-bit field and the interval must be positive.
    pub fn new(config: SenderConfig) -> Result<EventSender, DtmfError> {
        if config.volume > MAX_VOLUME {
            return Err(DtmfError::VolumeOutOfRange(config.volume));
        }
        if config.interval == 0 {
            return Err(DtmfError::ZeroInterval);
        }
        Ok(EventSender {
            config,
            current: None,
        })
    }

    /// No event in progress (its last end retransmit is out).
    pub fn is_idle(&self) -> bool {
        self.current.is_none()
    }

    /// Starts `digit` at RTP `timestamp` lasting `duration` timestamp units; the first
    /// packet goes out at the next tick. Refused while another event is being sent: RTP
    /// events of one stream do not overlap (2.5.1.2).
    pub fn start(&mut self, digit: Digit, timestamp: u32, duration: u32) -> Result<(), DtmfError> {
        self.begin(digit, timestamp, Some(u64::from(duration)))
    }

    /// Starts `digit` with a duration not known yet (a key still held, a tone still
    /// heard on the other leg); [`EventSender::stop`] ends it.
    pub fn start_open(&mut self, digit: Digit, timestamp: u32) -> Result<(), DtmfError> {
        self.begin(digit, timestamp, None)
    }

    fn begin(&mut self, digit: Digit, start_ts: u32, total: Option<u64>) -> Result<(), DtmfError> {
        if let Some(s) = &self.current {
            return Err(DtmfError::SenderBusy(s.digit));
        }
        self.current = Some(Sending {
            digit,
            start_ts,
            total,
            elapsed: 0,
            segment_start: 0,
            first_sent: false,
            ends_sent: 0,
            end_duration: 0,
        });
        Ok(())
    }

    /// Ends an open event at the next tick (its duration is counted up to that tick).
    /// No effect on an event whose duration was given.
    pub fn stop(&mut self) {
        let interval = u64::from(self.config.interval);
        if let Some(s) = &mut self.current {
            if s.total.is_none() {
                s.total = Some(s.elapsed + interval);
            }
        }
    }

    /// The packet to send at this tick, if any.
    pub fn tick(&mut self) -> Option<EventPacket> {
        let config = self.config;
        let s = self.current.as_mut()?;
        if s.ends_sent > 0 {
            return Some(self.retransmit_end());
        }
        s.elapsed += u64::from(config.interval);
        let now = s.total.map_or(s.elapsed, |t| s.elapsed.min(t));
        let finished = s.total.is_some_and(|t| now >= t);
        let in_segment = now - s.segment_start;
        let segment_ts = s.start_ts.wrapping_add(s.segment_start as u32);
        let marker = !s.first_sent;
        s.first_sent = true;
        let max = u64::from(MAX_SEGMENT);
        if in_segment > max || (in_segment == max && !finished) {
            // The duration field is full: report the full segment (not an end) and go on
            // in a new segment that starts where this one stops (2.5.1.3).
            s.segment_start += max;
            return Some(self.packet(segment_ts, marker, false, MAX_SEGMENT as u16));
        }
        let duration = in_segment as u16;
        if finished {
            s.ends_sent = 1;
            s.end_duration = duration;
            let p = self.packet(segment_ts, marker, true, duration);
            self.finish_if_done();
            return Some(p);
        }
        Some(self.packet(segment_ts, marker, false, duration))
    }

    fn retransmit_end(&mut self) -> EventPacket {
        let (ts, duration) = match &mut self.current {
            Some(s) => {
                s.ends_sent += 1;
                (
                    s.start_ts.wrapping_add(s.segment_start as u32),
                    s.end_duration,
                )
            }
            None => unreachable!("called with an event in progress"),
        };
        let p = self.packet(ts, false, true, duration);
        self.finish_if_done();
        p
    }

    fn finish_if_done(&mut self) {
        let repeats = self.config.end_repeats.max(1);
        if self.current.is_some_and(|s| s.ends_sent >= repeats) {
            self.current = None;
        }
    }

    fn packet(&self, timestamp: u32, marker: bool, end: bool, duration: u16) -> EventPacket {
        let event = self.current.map_or(0, |s| s.digit.event());
        EventPacket {
            timestamp,
            marker,
            payload: EventPayload {
                event,
                end,
                volume: self.config.volume,
                duration,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(s: &mut EventSender) -> Vec<EventPacket> {
        let mut out = Vec::new();
        while let Some(p) = s.tick() {
            out.push(p);
            assert!(out.len() < 10_000, "the sender never ends");
        }
        out
    }

    #[test]
    fn a_100_ms_digit_is_marker_updates_and_three_ends() {
        let mut s = EventSender::new(SenderConfig::default()).unwrap();
        s.start(Digit::D5, 1000, 800).unwrap();
        let p = drain(&mut s);
        let summary: Vec<(u32, bool, bool, u16)> = p
            .iter()
            .map(|p| (p.timestamp, p.marker, p.payload.end, p.payload.duration))
            .collect();
        assert_eq!(
            summary,
            vec![
                (1000, true, false, 160),
                (1000, false, false, 320),
                (1000, false, false, 480),
                (1000, false, false, 640),
                (1000, false, true, 800),
                (1000, false, true, 800),
                (1000, false, true, 800),
            ]
        );
        assert!(p
            .iter()
            .all(|p| p.payload.event == 5 && p.payload.volume == 10));
        assert!(s.is_idle());
        assert_eq!(s.tick(), None);
    }

    #[test]
    fn a_duration_between_ticks_ends_with_the_exact_duration() {
        let mut s = EventSender::new(SenderConfig::default()).unwrap();
        s.start(Digit::Hash, 0, 250).unwrap();
        let d: Vec<(bool, u16)> = drain(&mut s)
            .iter()
            .map(|p| (p.payload.end, p.payload.duration))
            .collect();
        assert_eq!(d, vec![(false, 160), (true, 250), (true, 250), (true, 250)]);
    }

    #[test]
    fn busy_while_sending_and_free_after_the_last_end() {
        let mut s = EventSender::new(SenderConfig::default()).unwrap();
        s.start(Digit::D1, 0, 160).unwrap();
        assert!(matches!(
            s.start(Digit::D2, 0, 160),
            Err(DtmfError::SenderBusy(Digit::D1))
        ));
        let first = s.tick().unwrap();
        assert!(
            first.marker && first.payload.end,
            "a one-tick event starts and ends at once"
        );
        s.tick();
        s.tick();
        assert!(s.is_idle());
        s.start(Digit::D2, 480, 160).unwrap();
    }

    #[test]
    fn open_event_ends_at_the_tick_after_stop() {
        let mut s = EventSender::new(SenderConfig::default()).unwrap();
        s.start_open(Digit::D9, 7).unwrap();
        for _ in 0..3 {
            assert!(!s.tick().unwrap().payload.end);
        }
        s.stop();
        let end = s.tick().unwrap();
        assert_eq!((end.payload.end, end.payload.duration), (true, 640));
        assert_eq!(drain(&mut s).len(), 2);
    }

    #[test]
    fn long_event_is_cut_into_segments_at_65535() {
        let mut s = EventSender::new(SenderConfig::default()).unwrap();
        let total = 150_000u32;
        let start = u32::MAX - 1000; // the segment timestamps wrap
        s.start(Digit::D0, start, total).unwrap();
        let p = drain(&mut s);
        let full: Vec<&EventPacket> = p.iter().filter(|p| p.payload.duration == 0xFFFF).collect();
        assert_eq!(full.len(), 2);
        assert_eq!(full[0].timestamp, start);
        assert_eq!(full[1].timestamp, start.wrapping_add(65_535));
        assert!(full.iter().all(|p| !p.payload.end && !p.marker));
        let last = p.last().unwrap();
        assert_eq!(last.timestamp, start.wrapping_add(2 * 65_535));
        assert_eq!(u32::from(last.payload.duration), total - 2 * 65_535);
        assert_eq!(p.iter().filter(|p| p.marker).count(), 1);
        assert_eq!(p.iter().filter(|p| p.payload.end).count(), 3);
        // Durations only grow within a segment.
        for w in p.windows(2) {
            if w[0].timestamp == w[1].timestamp {
                assert!(w[0].payload.duration <= w[1].payload.duration);
            }
        }
    }

    #[test]
    fn bad_config_is_refused() {
        let loud = SenderConfig {
            volume: 64,
            ..SenderConfig::default()
        };
        assert!(matches!(
            EventSender::new(loud),
            Err(DtmfError::VolumeOutOfRange(64))
        ));
        let zero = SenderConfig {
            interval: 0,
            ..SenderConfig::default()
        };
        assert!(matches!(
            EventSender::new(zero),
            Err(DtmfError::ZeroInterval)
        ));
    }
}
