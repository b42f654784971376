//! The lease election of one floating IP (VIP), sans-IO: plain data in, commands out, time
//! passed in as a monotonic `now`. The agent (`super::agent`) runs the commands against the
//! store and the network interface and feeds the results back.
//!
//! Owns: when to read, acquire, renew and release the lease row, and when this node may
//! have the address configured. Must not: touch the database, the interface or a clock of
//! its own; it never sees wall-clock time, only durations the database measured.
//!
//! # The lease
//! One row per VIP in `vip_leases`: holder, fencing `term`, `expires_at` in the DATABASE's
//! clock. Acquiring is one conditional statement that succeeds only when the lease has
//! expired by the database's clock (or names this node already, after a restart), and sets
//! `term = term + 1`, `expires_at = db_now + L`. Renewing needs `holder = me AND term = T`,
//! so a node whose lease was taken over can never extend it again (its term is stale);
//! releasing sets `expires_at` into the past under the same condition.
//!
//! # Why two nodes never hold the address at once
//! Let L be the lease, S = `max_clock_skew + drop_margin` the safety margin. The holder
//! remembers `t_sent`, its own monotonic time when it SENT the last acquire/renew that
//! succeeded. The database executed that statement after `t_sent`, so the lease it wrote
//! ends no earlier than `t_sent + L` measured by the database's clock. The holder drops the
//! address at `t_sent + L - S` by its own clock. Its clock may run slow against the
//! database's by at most `max_clock_skew` over one lease (the configured bound), and
//! removing the address takes at most `drop_margin`, so the address is gone before the
//! database could call the lease expired. Any other node can acquire only after that
//! expiry (the database decides, with its own clock: node clocks never race each other),
//! and adds the address only after its acquire returned. Hence holder intervals never
//! overlap, whatever the network does to messages: a lost or late renew reply only makes
//! the holder drop EARLIER (it keeps the older `t_sent`), and a database outage means no
//! successful acquire or renew, so no node adds the address (no node takes a VIP it
//! cannot fence). Offsets between node clocks play no part; only the rate bound does.
//!
//! # Timing and failover
//! The holder renews every R (2R <= L - S, the config's rule; R/2 after an error), so a
//! renewal may fail before it must drop. A follower reads the lease, sleeps until the
//! database says it ends (re-reading at least every R, so a graceful release is seen
//! within R), then tries to acquire. Priority is a head start: a node tries
//! `(MAX_PRIORITY - priority) * PRIORITY_STEP` after the expiry it observed, so the
//! preferred live node wins a free VIP; there is no pre-emption of a live holder (that
//! would cost a gap for nothing; a graceful release is the way to move a VIP on purpose).
//! Failover after a holder dies: its lease ends at most L after its last renewal, which
//! may have landed just before the death; the follower's timer is set to that expiry (plus
//! its head start), then one database round trip and the address change. With the
//! defaults (L = 1.5 s) that is about 1.5 s; the namespace test measures ~1.45 s.
//!
//! # Handover
//! `ringfort cluster handover` writes a request into the lease row; the holder reads it
//! with its next renewal (within R), drops the address, then either ends the lease (any
//! node) or rewrites the row to name the chosen node for one more lease. Only that node
//! can acquire such a row (the rule that lets a restarted holder take its own row back),
//! it sees it at its next read (within R) and takes it at once with term + 1; the old
//! holder's term is fenced from then on. So a move takes at most about 2R plus two
//! round trips and the address change, and the old holder, which keeps running, stays
//! away from the VIP for two lease periods (so a chosen node that never comes costs one
//! lease, after which the others take it, not the old holder).
//!
//! A process that dies or hangs cannot run its timer: the agent's kernel lifetime on the
//! address covers that case (see `super::agent`).

use std::time::{Duration, Instant};

/// Highest priority; a node with it waits no extra time before acquiring a free VIP.
pub const MAX_PRIORITY: u8 = 100;
/// The head start per point of priority.
pub const PRIORITY_STEP: Duration = Duration::from_millis(5);

/// The timing of an election (from `[cluster]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElectionTiming {
    /// L: how long a lease lasts by the database's clock.
    pub lease: Duration,
    /// R: how often the holder renews (and a follower re-reads the lease at most).
    pub renew: Duration,
    /// How much the holder's clock may run slow against the database's over one lease.
    pub max_clock_skew: Duration,
    /// How long removing the address may take once decided (process spawn, netlink).
    pub drop_margin: Duration,
}

impl ElectionTiming {
    /// S: the holder drops the address this long before its lease could end.
    pub fn safety(&self) -> Duration {
        self.max_clock_skew + self.drop_margin
    }

    /// How long after sending a successful acquire/renew the holder may keep the address.
    pub fn hold_window(&self) -> Duration {
        self.lease.saturating_sub(self.safety())
    }

    /// The rule the config enforces: a renewal can fail and the next still lands in time.
    pub fn check(&self) -> Result<(), ElectionError> {
        if self.renew.is_zero() || self.renew * 2 > self.hold_window() {
            return Err(ElectionError::Timing(format!(
                "2 x renew ({:?}) must fit in lease - skew - drop margin ({:?})",
                self.renew,
                self.hold_window()
            )));
        }
        Ok(())
    }
}

/// Errors of the election layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElectionError {
    #[error("bad election timing: {0}")]
    Timing(String),
}

/// The lease row as read, with the database's clock at the read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub holder: String,
    pub term: i64,
    /// Both in the database's clock (ms); only their difference is used.
    pub expires_at_ms: i64,
    pub db_now_ms: i64,
}

impl Lease {
    /// How long the lease still runs by the database's clock (zero when over).
    pub fn remaining(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.expires_at_ms - self.db_now_ms).unwrap_or(0))
    }
}

/// What the conditional acquire returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcquireOutcome {
    /// This node holds the lease with this fencing term.
    Won { term: i64 },
    /// Someone else holds an unexpired lease.
    Lost,
    /// The database did not answer (or failed): nothing is known.
    DbError,
}

/// What reading the lease row returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseRead {
    Found(Lease),
    /// Nobody ever took this VIP.
    Absent,
    /// The database did not answer (or failed).
    DbError,
}

/// What a renewal returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewOutcome {
    Renewed,
    /// Renewed, and an operator asks this node to hand the VIP over (`ringfort cluster
    /// handover`): to that node, or (None) to any other.
    HandoverAsked {
        to: Option<String>,
    },
    /// The row no longer names this node with this term: it was taken over.
    Lost,
    DbError,
}

/// What the agent must do, in order (an address is dropped before the lease is released).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Read the lease row; answer with [`Election::lease_read`].
    ReadLease,
    /// The conditional acquire; answer with [`Election::acquire_result`].
    TryAcquire,
    /// Extend the lease if it still names this node with `term`; answer with
    /// [`Election::renew_result`].
    Renew { term: i64 },
    /// End the lease now (graceful stop); no answer expected.
    Release { term: i64 },
    /// Hand the lease to node `to` (handover): the row names `to`, which alone may take it
    /// until it expires; no answer expected.
    HandOver { term: i64, to: String },
    /// Configure the address on the interface.
    AddAddress,
    /// The lease was renewed while the address is up (the agent refreshes the kernel's
    /// lifetime of the address, its backstop if this process dies).
    KeepAddress,
    /// Remove the address from the interface.
    DropAddress,
    /// Tell the segment the address moved here (gratuitous ARP).
    Announce,
}

/// The database operation in flight (at most one), with the time it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InFlight {
    Read,
    Acquire { sent: Instant },
    Renew { sent: Instant },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    /// Not holding: `next_check` is when to read again or, past `try_after`, to acquire.
    Follower {
        next_check: Instant,
        try_after: Option<Instant>,
    },
    Holder {
        term: i64,
        /// `t_sent + L - S` of the last successful acquire/renew.
        hold_until: Instant,
        next_renew: Instant,
        address_up: bool,
    },
    Stopped,
}

/// The election of one VIP on this node.
#[derive(Debug, Clone)]
pub struct Election {
    node_id: String,
    timing: ElectionTiming,
    priority: u8,
    role: Role,
    in_flight: Option<InFlight>,
}

impl Election {
    /// A new election; call [`Election::start`] first. `priority` is clamped to
    /// `1..=MAX_PRIORITY`.
    pub fn new(
        node_id: impl Into<String>,
        timing: ElectionTiming,
        priority: u8,
        now: Instant,
    ) -> Self {
        Election {
            node_id: node_id.into(),
            timing,
            priority: priority.clamp(1, MAX_PRIORITY),
            role: Role::Follower {
                next_check: now,
                try_after: None,
            },
            in_flight: None,
        }
    }

    /// First commands: drop the address (a previous run of this node may have left it
    /// configured; we hold nothing until the database says so), then read the lease.
    #[must_use]
    pub fn start(&mut self, _now: Instant) -> Vec<Command> {
        self.in_flight = Some(InFlight::Read);
        vec![Command::DropAddress, Command::ReadLease]
    }

    /// This node has the address configured (by the election's account).
    pub fn holds_address(&self) -> bool {
        matches!(
            self.role,
            Role::Holder {
                address_up: true,
                ..
            }
        )
    }

    /// The fencing term while holding the lease.
    pub fn term(&self) -> Option<i64> {
        match self.role {
            Role::Holder { term, .. } => Some(term),
            _ => None,
        }
    }

    /// When [`Election::tick`] must next be called; `None` once stopped.
    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.role {
            Role::Stopped => None,
            Role::Follower { next_check, .. } => {
                // A check waits for the operation in flight; its answer reschedules.
                if self.in_flight.is_some() {
                    None
                } else {
                    Some(*next_check)
                }
            }
            Role::Holder {
                hold_until,
                next_renew,
                address_up,
                ..
            } => {
                let drop_at = address_up.then_some(*hold_until);
                let renew_at = self.in_flight.is_none().then_some(*next_renew);
                match (drop_at, renew_at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        }
    }

    /// Time passes: drop the address when the hold window ends, renew, read, acquire.
    #[must_use]
    pub fn tick(&mut self, now: Instant) -> Vec<Command> {
        let mut out = Vec::new();
        match &mut self.role {
            Role::Stopped => {}
            Role::Holder {
                term,
                hold_until,
                next_renew,
                address_up,
            } => {
                // First the safety rule, whatever else is pending.
                if *address_up && now >= *hold_until {
                    *address_up = false;
                    tracing::warn!(node = %self.node_id, term = *term,
                        "VIP lease not renewed in time: dropping the address before it can expire");
                    out.push(Command::DropAddress);
                }
                if self.in_flight.is_none() && now >= *next_renew {
                    self.in_flight = Some(InFlight::Renew { sent: now });
                    out.push(Command::Renew { term: *term });
                }
            }
            Role::Follower {
                next_check,
                try_after,
            } => {
                if self.in_flight.is_none() && now >= *next_check {
                    if try_after.is_some_and(|t| now >= t) {
                        self.in_flight = Some(InFlight::Acquire { sent: now });
                        out.push(Command::TryAcquire);
                    } else {
                        self.in_flight = Some(InFlight::Read);
                        out.push(Command::ReadLease);
                    }
                }
            }
        }
        out
    }

    /// The lease row was read, or the read failed.
    #[must_use]
    pub fn lease_read(&mut self, now: Instant, lease: LeaseRead) -> Vec<Command> {
        if self.in_flight == Some(InFlight::Read) {
            self.in_flight = None;
        }
        if !matches!(self.role, Role::Follower { .. }) {
            return Vec::new();
        }
        let head_start = PRIORITY_STEP * u32::from(MAX_PRIORITY - self.priority);
        let (next_check, try_after) = match lease {
            LeaseRead::DbError => (now + self.timing.renew, None),
            // Our own row (a restart of this node): nobody else can hold it, take it back
            // now with a new term.
            LeaseRead::Found(l) if l.holder == self.node_id => (now, Some(now)),
            lease => {
                let remaining = match &lease {
                    LeaseRead::Found(l) => l.remaining(),
                    _ => Duration::ZERO,
                };
                let try_at = now + remaining + head_start;
                // Re-read at least every R, so a release or a new holder is seen.
                (try_at.min(now + self.timing.renew), Some(try_at))
            }
        };
        self.role = Role::Follower {
            next_check,
            try_after,
        };
        self.tick(now)
    }

    /// The conditional acquire returned.
    #[must_use]
    pub fn acquire_result(&mut self, now: Instant, outcome: AcquireOutcome) -> Vec<Command> {
        let Some(InFlight::Acquire { sent }) = self.in_flight else {
            return Vec::new();
        };
        self.in_flight = None;
        if self.role == Role::Stopped {
            return Vec::new();
        }
        match outcome {
            AcquireOutcome::Won { term } => {
                let hold_until = sent + self.timing.hold_window();
                let mut out = Vec::new();
                let address_up = now < hold_until;
                tracing::info!(node = %self.node_id, term, "VIP lease acquired");
                if address_up {
                    out.push(Command::AddAddress);
                    out.push(Command::Announce);
                }
                self.role = Role::Holder {
                    term,
                    hold_until,
                    next_renew: sent + self.timing.renew,
                    address_up,
                };
                out.extend(self.tick(now));
                out
            }
            AcquireOutcome::Lost => {
                // Learn when the other node's lease ends.
                self.role = Role::Follower {
                    next_check: now,
                    try_after: None,
                };
                self.tick(now)
            }
            AcquireOutcome::DbError => {
                // Cannot fence, so cannot take it: try again later.
                self.role = Role::Follower {
                    next_check: now + self.timing.renew,
                    try_after: None,
                };
                Vec::new()
            }
        }
    }

    /// A renewal returned.
    #[must_use]
    pub fn renew_result(&mut self, now: Instant, outcome: RenewOutcome) -> Vec<Command> {
        let Some(InFlight::Renew { sent }) = self.in_flight else {
            return Vec::new();
        };
        self.in_flight = None;
        let timing = self.timing;
        let Role::Holder {
            term,
            hold_until,
            next_renew,
            address_up,
        } = &mut self.role
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        match outcome {
            // The lease was just extended: the address is ours to drop, then hand on.
            RenewOutcome::HandoverAsked { to } => return self.hand_over(now, to),
            RenewOutcome::Renewed => {
                // The later send time is the one the database's new expiry is based on.
                *hold_until = (*hold_until).max(sent + timing.hold_window());
                *next_renew = sent + timing.renew;
                if now < *hold_until {
                    if *address_up {
                        out.push(Command::KeepAddress);
                    } else {
                        // Renewed after a hiccup that made us drop; the term is unchanged,
                        // so nobody held it meanwhile.
                        *address_up = true;
                        out.push(Command::AddAddress);
                        out.push(Command::Announce);
                    }
                }
            }
            RenewOutcome::Lost => {
                tracing::warn!(node = %self.node_id, term = *term, "VIP lease taken over by another node");
                if *address_up {
                    out.push(Command::DropAddress);
                }
                self.role = Role::Follower {
                    next_check: now,
                    try_after: None,
                };
            }
            RenewOutcome::DbError => {
                *next_renew = now + timing.renew / 2;
            }
        }
        out.extend(self.tick(now));
        out
    }

    /// The address could not be added (no such interface, no permission): serving the
    /// VIP from here is impossible, so hand it over (drop, release) and stay away for a
    /// lease period, letting a node that can serve it take it.
    #[must_use]
    pub fn address_failed(&mut self, now: Instant) -> Vec<Command> {
        let Role::Holder { term, .. } = self.role else {
            return Vec::new();
        };
        self.in_flight = None;
        self.role = Role::Follower {
            next_check: now + self.timing.lease,
            try_after: None,
        };
        vec![Command::DropAddress, Command::Release { term }]
    }

    /// Handover (`ringfort cluster handover`): drop the address, then end the lease, or
    /// pass it to node `to`, which alone may take it until it expires (so the chosen node
    /// wins, and a dead target costs one lease period, not the VIP). This node stays a
    /// follower that does not try for two lease periods, so the VIP goes elsewhere even
    /// when the chosen node never comes (its reserved row expires after one); the
    /// process keeps running and its calls in progress with it. A handover to this node
    /// itself changes nothing.
    #[must_use]
    pub fn hand_over(&mut self, now: Instant, to: Option<String>) -> Vec<Command> {
        let Role::Holder { term, .. } = self.role else {
            return Vec::new();
        };
        if to.as_deref() == Some(self.node_id.as_str()) {
            return Vec::new();
        }
        tracing::info!(node = %self.node_id, term, to = ?to, "handing the VIP over");
        self.in_flight = None;
        self.role = Role::Follower {
            next_check: now + self.timing.lease * 2,
            try_after: None,
        };
        let release = match to {
            Some(to) => Command::HandOver { term, to },
            None => Command::Release { term },
        };
        vec![Command::DropAddress, release]
    }

    /// Graceful stop (shutdown, handover): drop the address, then end the lease so another
    /// node can take it at its next check instead of waiting for the expiry.
    #[must_use]
    pub fn release(&mut self, _now: Instant) -> Vec<Command> {
        let out = match self.role {
            Role::Holder { term, .. } => vec![Command::DropAddress, Command::Release { term }],
            _ => Vec::new(),
        };
        self.role = Role::Stopped;
        self.in_flight = None;
        out
    }
}

#[cfg(test)]
mod tests;
