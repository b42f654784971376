//! Symmetric latching (the "comedia" rule for phones behind NAT), sans-IO, one [`Latch`] per
//! flow: the RTP of a leg and, separately, its RTCP.
//!
//! Owns: the decision, per received packet, whether its source is the leg's phone, and where
//! to send to that phone. Must not: touch sockets or clocks (`now` is passed in), parse
//! more than the RTP fixed header, know about SIP or SDP (the caller passes addresses).
//!
//! Rules (chosen against RTP injection and stream hijack, "RTP bleed"):
//! 1. Before latching, packets go to the address the SDP names (`expected`).
//! 2. A packet from exactly `expected` latches at once: the signalling vouched for it.
//! 3. A packet from any other source (the usual NAT case: the SDP names a private address)
//!    is a *candidate*: RTP latches only after [`LatchConfig::probation`] packets in a row
//!    from the same source, with the same SSRC and increasing sequence numbers (a gap of
//!    at most [`MAX_SEQ_STEP`]). Another source, SSRC or sequence restarts the count.
//!    Candidate packets are dropped, so an attacker who guesses the port cannot hijack a
//!    call with one spoofed packet, and the phone loses ~`probation` x 20 ms at the start.
//!    RTCP has no probation (one packet every few seconds): it latches on a packet from
//!    `expected` or from the IP the RTP of the same leg latched to (the caller says which,
//!    `trusted`), and drops everything else.
//! 4. Once latched, only the latched source is accepted. Another source may take over only
//!    after the latched one has been silent for [`LatchConfig::relatch_after`] (the phone
//!    moved, its NAT binding changed) and then only through rules 2-3 again. An SSRC change
//!    from the latched source is accepted (phones change SSRC on transfer and re-INVITE);
//!    an SSRC change alone never moves the latch, since anyone can pick an SSRC.
//! 5. A new `expected` address (re-INVITE) forgets the latch; the same address keeps it.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// The largest sequence number step that still counts as "in a row" during probation.
pub const MAX_SEQ_STEP: u16 = 10;

/// Latching parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatchConfig {
    /// RTP packets in a row a source other than the SDP one needs to latch (>= 1).
    pub probation: u8,
    /// How long the latched source must have been silent before another may take over.
    pub relatch_after: Duration,
}

impl Default for LatchConfig {
    fn default() -> Self {
        LatchConfig {
            probation: 3,
            relatch_after: Duration::from_secs(2),
        }
    }
}

/// What a packet says about its sender, for a newcomer's probation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// An RTP packet: its SSRC and sequence number.
    Rtp { ssrc: u32, seq: u16 },
    /// An RTCP packet; `trusted` when its source IP is the one this leg's RTP latched to.
    Rtcp { trusted: bool },
}

/// The decision for one received packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// From the phone: forward it.
    Accept,
    /// From the phone, which just latched (or re-latched) to this source: forward it.
    Latched(SocketAddr),
    /// Not (yet) from the phone: drop it.
    Drop,
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    addr: SocketAddr,
    ssrc: u32,
    seq: u16,
    count: u8,
}

/// The latch of one flow.
#[derive(Debug, Clone)]
pub struct Latch {
    config: LatchConfig,
    expected: Option<SocketAddr>,
    latched: Option<SocketAddr>,
    last_seen: Option<Instant>,
    candidate: Option<Candidate>,
}

impl Latch {
    /// A latch that expects the phone at `expected` (from the SDP; `None` = not known yet).
    pub fn new(config: LatchConfig, expected: Option<SocketAddr>) -> Latch {
        Latch {
            config,
            expected,
            latched: None,
            last_seen: None,
            candidate: None,
        }
    }

    /// Where to send to the phone: the latched source, else the SDP address.
    pub fn destination(&self) -> Option<SocketAddr> {
        self.latched.or(self.expected)
    }

    /// The latched source, if any.
    pub fn latched(&self) -> Option<SocketAddr> {
        self.latched
    }

    /// The IP of the latched source, if any.
    pub fn latched_ip(&self) -> Option<IpAddr> {
        self.latched.map(|a| a.ip())
    }

    /// The SDP address.
    pub fn expected(&self) -> Option<SocketAddr> {
        self.expected
    }

    /// A new SDP address (re-INVITE). A different one forgets the latch (rule 5).
    pub fn set_expected(&mut self, expected: Option<SocketAddr>) {
        if expected != self.expected {
            self.expected = expected;
            self.latched = None;
            self.last_seen = None;
            self.candidate = None;
        }
    }

    /// Judges a packet from `src` received at `now`.
    pub fn on_packet(&mut self, src: SocketAddr, probe: Probe, now: Instant) -> Verdict {
        if let Some(latched) = self.latched {
            if src == latched {
                self.last_seen = Some(now);
                self.candidate = None;
                return Verdict::Accept;
            }
            let silent = match self.last_seen {
                Some(t) => now.saturating_duration_since(t) >= self.config.relatch_after,
                None => true,
            };
            if !silent {
                return Verdict::Drop;
            }
        }
        if Some(src) == self.expected || self.passes_probation(src, probe) {
            self.latched = Some(src);
            self.last_seen = Some(now);
            self.candidate = None;
            return Verdict::Latched(src);
        }
        Verdict::Drop
    }

    fn passes_probation(&mut self, src: SocketAddr, probe: Probe) -> bool {
        match probe {
            Probe::Rtcp { trusted } => trusted,
            Probe::Rtp { ssrc, seq } => {
                let count = match self.candidate {
                    Some(c)
                        if c.addr == src
                            && c.ssrc == ssrc
                            && (1..=MAX_SEQ_STEP).contains(&seq.wrapping_sub(c.seq)) =>
                    {
                        c.count.saturating_add(1)
                    }
                    _ => 1,
                };
                if count >= self.config.probation.max(1) {
                    return true;
                }
                self.candidate = Some(Candidate {
                    addr: src,
                    ssrc,
                    seq,
                    count,
                });
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn rtp(ssrc: u32, seq: u16) -> Probe {
        Probe::Rtp { ssrc, seq }
    }

    const SDP: &str = "192.168.1.10:4000";
    const NAT: &str = "203.0.113.5:61000";
    const EVIL: &str = "198.51.100.66:5000";

    fn latch() -> Latch {
        Latch::new(LatchConfig::default(), Some(addr(SDP)))
    }

    #[test]
    fn sends_to_sdp_address_until_latched() {
        let l = latch();
        assert_eq!(l.destination(), Some(addr(SDP)));
        assert_eq!(l.latched(), None);
        assert_eq!(Latch::new(LatchConfig::default(), None).destination(), None);
    }

    #[test]
    fn sdp_address_latches_on_first_packet() {
        let t0 = Instant::now();
        let mut l = latch();
        assert_eq!(
            l.on_packet(addr(SDP), rtp(1, 100), t0),
            Verdict::Latched(addr(SDP))
        );
        assert_eq!(l.on_packet(addr(SDP), rtp(1, 101), t0), Verdict::Accept);
        assert_eq!(l.destination(), Some(addr(SDP)));
    }

    #[test]
    fn nat_source_latches_after_probation_and_becomes_destination() {
        let t0 = Instant::now();
        let mut l = latch();
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(l.on_packet(addr(NAT), rtp(9, 500), ms(0)), Verdict::Drop);
        assert_eq!(l.on_packet(addr(NAT), rtp(9, 501), ms(20)), Verdict::Drop);
        assert_eq!(
            l.on_packet(addr(NAT), rtp(9, 502), ms(40)),
            Verdict::Latched(addr(NAT))
        );
        assert_eq!(l.destination(), Some(addr(NAT)));
        assert_eq!(l.on_packet(addr(NAT), rtp(9, 503), ms(60)), Verdict::Accept);
    }

    #[test]
    fn probation_restarts_on_other_source_ssrc_or_seq_jump() {
        let t0 = Instant::now();
        let mut l = latch();
        assert_eq!(l.on_packet(addr(NAT), rtp(9, 500), t0), Verdict::Drop);
        assert_eq!(l.on_packet(addr(NAT), rtp(9, 501), t0), Verdict::Drop);
        assert_eq!(l.on_packet(addr(EVIL), rtp(9, 502), t0), Verdict::Drop); // restart
        assert_eq!(l.on_packet(addr(NAT), rtp(9, 502), t0), Verdict::Drop); // restart
        assert_eq!(l.on_packet(addr(NAT), rtp(8, 503), t0), Verdict::Drop); // SSRC: restart
        assert_eq!(l.on_packet(addr(NAT), rtp(8, 600), t0), Verdict::Drop); // jump: restart
        assert_eq!(l.on_packet(addr(NAT), rtp(8, 600), t0), Verdict::Drop); // repeat: restart
        assert_eq!(l.on_packet(addr(NAT), rtp(8, 601), t0), Verdict::Drop);
        assert_eq!(
            l.on_packet(addr(NAT), rtp(8, 605), t0),
            Verdict::Latched(addr(NAT))
        );
    }

    #[test]
    fn probation_survives_sequence_wrap() {
        let t0 = Instant::now();
        let mut l = latch();
        assert_eq!(l.on_packet(addr(NAT), rtp(1, 65_534), t0), Verdict::Drop);
        assert_eq!(l.on_packet(addr(NAT), rtp(1, 65_535), t0), Verdict::Drop);
        assert_eq!(
            l.on_packet(addr(NAT), rtp(1, 0), t0),
            Verdict::Latched(addr(NAT))
        );
    }

    #[test]
    fn probation_of_one_latches_any_first_packet() {
        let mut l = Latch::new(
            LatchConfig {
                probation: 1,
                ..LatchConfig::default()
            },
            None,
        );
        assert_eq!(
            l.on_packet(addr(NAT), rtp(1, 1), Instant::now()),
            Verdict::Latched(addr(NAT))
        );
    }

    #[test]
    fn latched_source_is_not_hijacked_while_it_talks() {
        let t0 = Instant::now();
        let mut l = latch();
        l.on_packet(addr(SDP), rtp(1, 1), t0);
        // An injector sends a perfect stream, even from the SDP IP with another port.
        for i in 0..50u16 {
            let t = t0 + Duration::from_millis(20 * u64::from(i));
            assert_eq!(l.on_packet(addr(SDP), rtp(1, 2 + i), t), Verdict::Accept);
            assert_eq!(l.on_packet(addr(EVIL), rtp(1, 2 + i), t), Verdict::Drop);
            assert_eq!(
                l.on_packet(addr("192.168.1.10:4002"), rtp(1, 2 + i), t),
                Verdict::Drop
            );
        }
        assert_eq!(l.destination(), Some(addr(SDP)));
    }

    #[test]
    fn ssrc_change_from_latched_source_is_accepted_and_moves_nothing() {
        let t0 = Instant::now();
        let mut l = latch();
        l.on_packet(addr(SDP), rtp(1, 1), t0);
        assert_eq!(l.on_packet(addr(SDP), rtp(77, 9000), t0), Verdict::Accept);
        assert_eq!(l.on_packet(addr(EVIL), rtp(77, 9001), t0), Verdict::Drop);
        assert_eq!(l.latched(), Some(addr(SDP)));
    }

    #[test]
    fn relatch_only_after_silence_and_probation() {
        let t0 = Instant::now();
        let mut l = latch();
        let s = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(
            l.on_packet(addr(SDP), rtp(1, 1), s(0)),
            Verdict::Latched(addr(SDP))
        );
        // 1.9 s of silence: still too early.
        assert_eq!(l.on_packet(addr(NAT), rtp(2, 10), s(1_900)), Verdict::Drop);
        // 2 s: the new source may start probation...
        assert_eq!(l.on_packet(addr(NAT), rtp(2, 11), s(2_000)), Verdict::Drop);
        assert_eq!(l.on_packet(addr(NAT), rtp(2, 12), s(2_020)), Verdict::Drop);
        // ...but the old one speaking again resets everything.
        assert_eq!(l.on_packet(addr(SDP), rtp(1, 2), s(2_030)), Verdict::Accept);
        assert_eq!(l.on_packet(addr(NAT), rtp(2, 13), s(2_040)), Verdict::Drop);
        // Silent again for 2 s: a full probation moves the latch.
        assert_eq!(l.on_packet(addr(NAT), rtp(2, 14), s(4_030)), Verdict::Drop);
        assert_eq!(l.on_packet(addr(NAT), rtp(2, 15), s(4_050)), Verdict::Drop);
        assert_eq!(
            l.on_packet(addr(NAT), rtp(2, 16), s(4_070)),
            Verdict::Latched(addr(NAT))
        );
        assert_eq!(l.destination(), Some(addr(NAT)));
        assert_eq!(l.on_packet(addr(SDP), rtp(1, 3), s(4_080)), Verdict::Drop);
    }

    #[test]
    fn after_silence_the_sdp_address_relatches_at_once() {
        let t0 = Instant::now();
        let mut l = latch();
        for i in 0..3 {
            l.on_packet(addr(NAT), rtp(2, i), t0);
        }
        assert_eq!(l.latched(), Some(addr(NAT)));
        let later = t0 + Duration::from_secs(3);
        assert_eq!(
            l.on_packet(addr(SDP), rtp(1, 1), later),
            Verdict::Latched(addr(SDP))
        );
    }

    #[test]
    fn new_sdp_address_forgets_the_latch_same_one_keeps_it() {
        let t0 = Instant::now();
        let mut l = latch();
        for i in 0..3 {
            l.on_packet(addr(NAT), rtp(2, i), t0);
        }
        l.set_expected(Some(addr(SDP)));
        assert_eq!(
            l.latched(),
            Some(addr(NAT)),
            "a session refresh keeps the latch"
        );
        l.set_expected(Some(addr("192.168.1.10:4010")));
        assert_eq!(l.latched(), None);
        assert_eq!(l.destination(), Some(addr("192.168.1.10:4010")));
        assert_eq!(l.on_packet(addr(NAT), rtp(2, 3), t0), Verdict::Drop);
    }

    #[test]
    fn rtcp_latches_on_sdp_address_or_trusted_ip_only() {
        let t0 = Instant::now();
        let mut l = Latch::new(LatchConfig::default(), Some(addr("192.168.1.10:4001")));
        assert_eq!(
            l.on_packet(addr(EVIL), Probe::Rtcp { trusted: false }, t0),
            Verdict::Drop
        );
        assert_eq!(l.destination(), Some(addr("192.168.1.10:4001")));
        assert_eq!(
            l.on_packet(addr("203.0.113.5:61001"), Probe::Rtcp { trusted: true }, t0),
            Verdict::Latched(addr("203.0.113.5:61001"))
        );
        assert_eq!(
            l.on_packet(addr(EVIL), Probe::Rtcp { trusted: true }, t0),
            Verdict::Drop
        );
        let mut l = Latch::new(LatchConfig::default(), Some(addr("192.168.1.10:4001")));
        assert_eq!(
            l.on_packet(
                addr("192.168.1.10:4001"),
                Probe::Rtcp { trusted: false },
                t0
            ),
            Verdict::Latched(addr("192.168.1.10:4001"))
        );
    }
}
