//! Media timeout bookkeeping, sans-IO: "no RTP on either leg for `timeout`".
//!
//! Owns: when the last accepted RTP arrived, whether the call is on hold, and when the
//! timeout fires. Must not: read a clock (`now` is passed in), touch sockets, end calls
//! (it reports; the B2BUA decides).
//!
//! Rules: only RTP that the latch accepted counts (RTCP does not: a phone on a dead call
//! may keep sending reports; dropped packets do not: an injector must not keep a call
//! alive). On hold the limit is `hold_timeout` instead (`None` = never: a held phone may
//! stop sending). Entering or leaving hold restarts the clock, so a call just resumed is
//! given a full period. The timeout fires once; the next RTP re-arms it.

use std::time::{Duration, Instant};

/// The media timeout of one relayed call.
#[derive(Debug, Clone)]
pub struct MediaTimeout {
    timeout: Option<Duration>,
    hold_timeout: Option<Duration>,
    on_hold: bool,
    last_rtp: Instant,
    fired: bool,
}

impl MediaTimeout {
    /// Starts the clock at `now` (call setup counts as activity). `None` disables a limit.
    pub fn new(timeout: Option<Duration>, hold_timeout: Option<Duration>, now: Instant) -> Self {
        MediaTimeout {
            timeout,
            hold_timeout,
            on_hold: false,
            last_rtp: now,
            fired: false,
        }
    }

    /// Accepted RTP arrived on a leg.
    #[inline]
    pub fn on_rtp(&mut self, now: Instant) {
        self.last_rtp = now;
        self.fired = false;
    }

    /// Puts the call on hold or resumes it; a change restarts the clock.
    pub fn set_hold(&mut self, on_hold: bool, now: Instant) {
        if on_hold != self.on_hold {
            self.on_hold = on_hold;
            self.last_rtp = now;
            self.fired = false;
        }
    }

    /// Whether the call is on hold.
    pub fn on_hold(&self) -> bool {
        self.on_hold
    }

    /// The limit in force now.
    pub fn limit(&self) -> Option<Duration> {
        if self.on_hold {
            self.hold_timeout
        } else {
            self.timeout
        }
    }

    /// When the timeout fires if no RTP comes; `None` when disabled or already fired.
    pub fn deadline(&self) -> Option<Instant> {
        if self.fired {
            return None;
        }
        self.limit().map(|l| self.last_rtp + l)
    }

    /// Checks at `now`: `Some(idle)` once when the deadline has passed.
    pub fn poll(&mut self, now: Instant) -> Option<Duration> {
        let deadline = self.deadline()?;
        if now < deadline {
            return None;
        }
        self.fired = true;
        Some(now.saturating_duration_since(self.last_rtp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn fires_once_after_silence_and_rearms_on_rtp() {
        let t0 = Instant::now();
        let mut m = MediaTimeout::new(Some(S(60)), None, t0);
        assert_eq!(m.deadline(), Some(t0 + S(60)));
        assert_eq!(m.poll(t0 + S(59)), None);
        assert_eq!(m.poll(t0 + S(61)), Some(S(61)));
        assert_eq!(m.poll(t0 + S(62)), None, "fires once");
        assert_eq!(m.deadline(), None);
        m.on_rtp(t0 + S(70));
        assert_eq!(m.poll(t0 + S(129)), None);
        assert_eq!(m.poll(t0 + S(130)), Some(S(60)));
    }

    #[test]
    fn rtp_pushes_the_deadline() {
        let t0 = Instant::now();
        let mut m = MediaTimeout::new(Some(S(10)), None, t0);
        for s in 1..100 {
            m.on_rtp(t0 + S(s));
            assert_eq!(m.poll(t0 + S(s) + Duration::from_millis(500)), None);
        }
        assert_eq!(m.deadline(), Some(t0 + S(109)));
    }

    #[test]
    fn hold_without_limit_suspends_then_resume_gives_a_full_period() {
        let t0 = Instant::now();
        let mut m = MediaTimeout::new(Some(S(60)), None, t0);
        m.set_hold(true, t0 + S(30));
        assert!(m.on_hold());
        assert_eq!(m.deadline(), None);
        assert_eq!(m.poll(t0 + S(3600)), None);
        m.set_hold(false, t0 + S(3600));
        assert_eq!(m.poll(t0 + S(3659)), None);
        assert_eq!(m.poll(t0 + S(3660)), Some(S(60)));
    }

    #[test]
    fn hold_with_its_own_limit() {
        let t0 = Instant::now();
        let mut m = MediaTimeout::new(Some(S(60)), Some(S(600)), t0);
        m.set_hold(true, t0 + S(10));
        assert_eq!(m.poll(t0 + S(100)), None);
        assert_eq!(m.poll(t0 + S(610)), Some(S(600)));
        // Same state again is no change: the clock is not restarted.
        m.set_hold(true, t0 + S(700));
        assert_eq!(m.deadline(), None);
    }

    #[test]
    fn disabled_never_fires() {
        let t0 = Instant::now();
        let mut m = MediaTimeout::new(None, None, t0);
        assert_eq!(m.deadline(), None);
        assert_eq!(m.poll(t0 + S(86_400)), None);
    }
}
