//! Key presses put into a relayed RTP stream as RFC 4733 events: for a phone that
//! negotiated telephone-event while the key came another way (SIP INFO, in-band tones).
//!
//! Owns: the events' packets (through a [`EventSender`]) and the renumbering that makes
//! room for them in the stream they join: an event goes out with the stream's SSRC, the
//! next sequence number and the stream's timestamp at that moment (RFC 4733 2.1: events
//! share the audio's timestamp clock), and every later packet of the stream is sent with
//! its sequence number raised by the events sent so far, so the phone sees one gapless
//! stream. Must not: touch sockets or read the clock (the relay passes `now` in).
//!
//! Until the first event nothing is rewritten: a call whose keys never need translating
//! keeps the untouched fast path.

use std::collections::VecDeque;
use std::time::Instant;

use super::dtmf::{Digit, EventSender, SenderConfig};
use super::transcode::{write_header, TICK_MS};

/// Duration of a key press whose source did not say (INFO without Duration).
pub const DEFAULT_DURATION_MS: u32 = 100;
/// The shortest event sent: receivers need at least 40 ms (ITU-T Q.24).
const MIN_DURATION_MS: u32 = 60;

#[derive(Debug, Clone, Copy)]
struct Last {
    ssrc: u32,
    /// The sequence number as sent.
    seq: u16,
    ts: u32,
    at: Instant,
}

/// See the module comment.
pub struct DtmfInjector {
    pt: u8,
    clock: u32,
    sender: EventSender,
    queue: VecDeque<(Digit, u32)>,
    last: Option<Last>,
    /// Added to the sequence number of every packet of the stream forwarded from now on.
    seq_offset: u16,
    out: [u8; 16],
}

impl DtmfInjector {
    /// Events of payload type `pt` on a stream whose clock is `clock` Hz.
    pub fn new(pt: u8, clock: u32) -> DtmfInjector {
        let clock = clock.max(1000);
        let config = SenderConfig {
            interval: clock * TICK_MS / 1000,
            ..SenderConfig::default()
        };
        DtmfInjector {
            pt,
            clock,
            // The interval is positive and the volume the default: this cannot fail.
            sender: EventSender::new(config).unwrap_or_else(|_| unreachable!()),
            queue: VecDeque::new(),
            last: None,
            seq_offset: 0,
            out: [0; 16],
        }
    }

    /// The payload type and clock it sends with.
    pub fn format(&self) -> (u8, u32) {
        (self.pt, self.clock)
    }

    /// Queues a key press (events go out one after the other).
    pub fn push(&mut self, digit: Digit, duration_ms: Option<u32>) {
        let ms = duration_ms
            .unwrap_or(DEFAULT_DURATION_MS)
            .clamp(MIN_DURATION_MS, 5000);
        self.queue.push_back((digit, ms));
    }

    /// Events queued or being sent: the relay must tick it every 20 ms.
    pub fn is_busy(&self) -> bool {
        !self.queue.is_empty() || !self.sender.is_idle()
    }

    /// A packet of the stream is about to be sent to the phone: renumbered past the
    /// events sent so far (in place), and remembered as where the stream is.
    pub fn on_forward(&mut self, pkt: &mut [u8], now: Instant) {
        if pkt.len() < 12 || pkt[0] >> 6 != 2 {
            return;
        }
        let mut seq = u16::from_be_bytes([pkt[2], pkt[3]]);
        if self.seq_offset != 0 {
            seq = seq.wrapping_add(self.seq_offset);
            pkt[2..4].copy_from_slice(&seq.to_be_bytes());
        }
        // Our own events' payload type never comes through here; the phone's audio does.
        self.last = Some(Last {
            ssrc: u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]),
            seq,
            ts: u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]),
            at: now,
        });
    }

    /// One 20 ms tick: the event packet to send now, if any.
    pub fn tick(&mut self, now: Instant) -> Option<&[u8]> {
        if self.sender.is_idle() {
            let (digit, ms) = self.queue.pop_front()?;
            let ts = self.stream_ts(now);
            let duration = (u64::from(ms) * u64::from(self.clock) / 1000) as u32;
            // Idle was just checked: the sender takes it.
            let _ = self.sender.start(digit, ts, duration);
        }
        let ev = self.sender.tick()?;
        let last = self.last.get_or_insert_with(|| Last {
            ssrc: rand::random(),
            seq: rand::random(),
            ts: ev.timestamp,
            at: now,
        });
        last.seq = last.seq.wrapping_add(1);
        self.seq_offset = self.seq_offset.wrapping_add(1);
        write_header(
            &mut self.out,
            ev.marker,
            self.pt,
            last.seq,
            ev.timestamp,
            last.ssrc,
        );
        let payload = ev.payload.encode().ok()?;
        self.out[12..16].copy_from_slice(&payload);
        Some(&self.out)
    }

    /// The stream's timestamp now: its last packet's plus the time since.
    fn stream_ts(&self, now: Instant) -> u32 {
        match self.last {
            Some(l) => {
                let since = now.saturating_duration_since(l.at);
                let ticks = since.as_micros() as u64 * u64::from(self.clock) / 1_000_000;
                l.ts.wrapping_add(ticks as u32)
            }
            None => rand::random(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::dtmf::{EventReceiver, ReceivedEvent, ReceiverConfig};
    use crate::media::transcode::RtpView;
    use std::time::Duration;

    fn audio(seq: u16, ts: u32) -> Vec<u8> {
        let mut p = vec![0u8; 172];
        write_header(&mut p, false, 0, seq, ts, 0x1234);
        p
    }

    #[test]
    fn an_event_joins_the_stream_gaplessly_and_is_received_as_one_key_press() {
        let mut inj = DtmfInjector::new(101, 8000);
        let t0 = Instant::now();
        let mut sent: Vec<Vec<u8>> = Vec::new();
        // Audio before: untouched.
        let mut p = audio(500, 16000);
        inj.on_forward(&mut p, t0);
        assert_eq!(p, audio(500, 16000));
        sent.push(p);
        inj.push(Digit::D9, Some(100));
        assert!(inj.is_busy());
        // The phone's audio goes on at 20 ms, the events interleave.
        for i in 1..=12u16 {
            let now = t0 + Duration::from_millis(20 * u64::from(i));
            if let Some(ev) = inj.tick(now) {
                sent.push(ev.to_vec());
            }
            let mut p = audio(500 + i, 16000 + 160 * u32::from(i));
            inj.on_forward(&mut p, now);
            sent.push(p);
        }
        assert!(!inj.is_busy());
        // One stream: same SSRC, sequence numbers in a row.
        let views: Vec<RtpView<'_>> = sent
            .iter()
            .map(|p| RtpView::parse(p).expect("rtp"))
            .collect();
        for w in views.windows(2) {
            assert_eq!(w[1].seq, w[0].seq.wrapping_add(1));
            assert_eq!(w[1].ssrc, 0x1234);
        }
        let events: Vec<&RtpView<'_>> = views.iter().filter(|v| v.pt == 101).collect();
        // 100 ms: 5 packets with growing durations, the last three the end (2.5.1.4).
        assert_eq!(events.len(), 5 + 2);
        assert!(events[0].marker);
        assert_eq!(
            events[0].ts,
            16000 + 160,
            "the stream's timestamp at the key press"
        );
        let mut rx = EventReceiver::new(ReceiverConfig::default());
        let mut got = Vec::new();
        for e in &events {
            rx.on_packet(e.ts, e.marker, e.payload, &mut got)
                .expect("event");
        }
        assert_eq!(
            got,
            vec![
                ReceivedEvent::Begin {
                    digit: Digit::D9,
                    timestamp: 16160
                },
                ReceivedEvent::End {
                    digit: Digit::D9,
                    timestamp: 16160,
                    duration: 800
                }
            ]
        );
    }

    #[test]
    fn key_presses_queue_and_a_stream_not_seen_yet_gets_its_own_ssrc() {
        let mut inj = DtmfInjector::new(96, 8000);
        let t0 = Instant::now();
        inj.push(Digit::D1, None);
        inj.push(Digit::D2, Some(10));
        let mut digits = Vec::new();
        let mut rx = EventReceiver::new(ReceiverConfig::default());
        for i in 0..40u64 {
            if let Some(p) = inj.tick(t0 + Duration::from_millis(20 * i)) {
                let v = RtpView::parse(p).expect("rtp");
                rx.on_packet(v.ts, v.marker, v.payload, &mut digits)
                    .expect("event");
            }
        }
        let begun: Vec<Digit> = digits
            .iter()
            .filter_map(|e| match e {
                ReceivedEvent::Begin { digit, .. } => Some(*digit),
                _ => None,
            })
            .collect();
        assert_eq!(begun, vec![Digit::D1, Digit::D2]);
        assert!(!inj.is_busy());
    }
}
