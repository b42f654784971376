//! Fake-clock tests of the election: a small world of nodes, one simulated database with
//! its own clock, links with latency, partitions and skewed node clocks, stepped 1 ms at a
//! time. After every step the world checks the invariant: at most one node has the
//! address, and a node that has it holds an unexpired lease by the database's clock.

use super::*;

fn timing() -> ElectionTiming {
    ElectionTiming {
        lease: Duration::from_millis(1500),
        renew: Duration::from_millis(400),
        max_clock_skew: Duration::from_millis(200),
        drop_margin: Duration::from_millis(100),
    }
}

/// One database operation on its way.
#[derive(Debug, Clone)]
enum Op {
    Read,
    Acquire,
    Renew(i64),
    Release(i64),
    HandOver(i64, String),
}

#[derive(Debug)]
enum Reply {
    Read(LeaseRead),
    Acquire(AcquireOutcome),
    Renew(RenewOutcome),
    None,
}

struct Pending {
    node: usize,
    op: Op,
    /// Real time the database executes it (None: it never gets there).
    apply_at: Option<u64>,
    reply: Option<Reply>,
    deliver_at: u64,
    /// The reply is lost on the way back: the node sees a database error at `deliver_at`.
    reply_lost: bool,
}

struct SimNode {
    id: String,
    election: Election,
    /// Local clock = base + offset + real * rate.
    rate: f64,
    offset_ms: f64,
    /// One-way latency to the database, ms.
    latency: u64,
    partitioned: bool,
    /// Replies lost (requests still applied).
    replies_lost: bool,
    crashed: bool,
    has_address: bool,
    /// A DropAddress takes effect at this real time.
    dropping_at: Option<u64>,
    adds: u32,
}

struct World {
    base: Instant,
    /// Real time, ms.
    t: u64,
    /// The database's clock is real time plus this (ms).
    db_offset: i64,
    db_down: bool,
    row: Option<(String, i64, i64)>,
    /// A handover an operator asked of the holder (`ringfort cluster handover`): to a
    /// node, or (None) to any.
    handover_asked: Option<Option<String>>,
    nodes: Vec<SimNode>,
    pending: Vec<Pending>,
    /// Time an address removal takes.
    drop_delay: u64,
    timing: ElectionTiming,
    /// (real ms, node) each time a node added the address.
    took: Vec<(u64, usize)>,
    check_invariant: bool,
    violations: Vec<String>,
}

impl World {
    fn new(timing: ElectionTiming) -> World {
        World {
            base: Instant::now(),
            t: 0,
            db_offset: 1_700_000_000_000,
            db_down: false,
            row: None,
            handover_asked: None,
            nodes: Vec::new(),
            pending: Vec::new(),
            drop_delay: 20,
            timing,
            took: Vec::new(),
            check_invariant: true,
            violations: Vec::new(),
        }
    }

    fn add(&mut self, id: &str, priority: u8) -> usize {
        let now = self.base;
        self.nodes.push(SimNode {
            id: id.to_owned(),
            election: Election::new(id, self.timing, priority, now),
            rate: 1.0,
            offset_ms: 0.0,
            latency: 2,
            partitioned: false,
            replies_lost: false,
            crashed: true,
            has_address: false,
            dropping_at: None,
            adds: 0,
        });
        self.nodes.len() - 1
    }

    fn local_now(&self, n: usize) -> Instant {
        let node = &self.nodes[n];
        let ms = node.offset_ms + self.t as f64 * node.rate;
        self.base + Duration::from_secs_f64(ms.max(0.0) / 1000.0)
    }

    fn db_now(&self) -> i64 {
        self.db_offset + self.t as i64
    }

    /// (Re)starts a node's process: a fresh election, as after a restart.
    fn start(&mut self, n: usize, priority: u8) {
        let now = self.local_now(n);
        let id = self.nodes[n].id.clone();
        self.pending.retain(|p| p.node != n);
        let node = &mut self.nodes[n];
        node.crashed = false;
        node.election = Election::new(id, self.timing, priority, now);
        let cmds = node.election.start(now);
        self.run(n, cmds);
    }

    /// The host dies: its process stops and its address goes with it.
    fn kill(&mut self, n: usize) {
        self.nodes[n].crashed = true;
        self.nodes[n].has_address = false;
        self.pending.retain(|p| p.node != n);
    }

    fn release(&mut self, n: usize) {
        let now = self.local_now(n);
        let cmds = self.nodes[n].election.release(now);
        self.run(n, cmds);
    }

    /// Runs commands in order, as the agent does: a database operation after a
    /// DropAddress is sent once the address is gone.
    fn run(&mut self, n: usize, cmds: Vec<Command>) {
        let mut send_at = self.t;
        for c in cmds {
            let op = match c {
                Command::ReadLease => Op::Read,
                Command::TryAcquire => Op::Acquire,
                Command::Renew { term } => Op::Renew(term),
                Command::Release { term } => Op::Release(term),
                Command::HandOver { term, to } => Op::HandOver(term, to),
                Command::AddAddress => {
                    let node = &mut self.nodes[n];
                    node.has_address = true;
                    node.dropping_at = None;
                    node.adds += 1;
                    self.took.push((self.t, n));
                    continue;
                }
                Command::DropAddress => {
                    let node = &mut self.nodes[n];
                    if node.has_address && node.dropping_at.is_none() {
                        node.dropping_at = Some(self.t + self.drop_delay);
                    }
                    send_at = send_at.max(node.dropping_at.unwrap_or(send_at));
                    continue;
                }
                Command::KeepAddress | Command::Announce => continue,
            };
            let node = &self.nodes[n];
            let reaches = !node.partitioned && !self.db_down;
            // The agent bounds every operation by R; an unanswered one is a DbError.
            let timeout = self.timing.renew.as_millis() as u64;
            let (apply_at, deliver_at) = if reaches {
                (Some(send_at + node.latency), send_at + 2 * node.latency)
            } else {
                (None, send_at + timeout)
            };
            self.pending.push(Pending {
                node: n,
                op,
                apply_at,
                reply: None,
                deliver_at,
                reply_lost: node.replies_lost,
            });
        }
    }

    /// The database executes `op` now, by its own clock.
    fn apply(&mut self, node: usize, op: &Op) -> Reply {
        let me = self.nodes[node].id.clone();
        let now = self.db_now();
        let lease = self.timing.lease.as_millis() as i64;
        match op {
            Op::Read => Reply::Read(match &self.row {
                Some((h, term, exp)) => LeaseRead::Found(Lease {
                    holder: h.clone(),
                    term: *term,
                    expires_at_ms: *exp,
                    db_now_ms: now,
                }),
                None => LeaseRead::Absent,
            }),
            Op::Acquire => match &mut self.row {
                None => {
                    self.row = Some((me, 1, now + lease));
                    Reply::Acquire(AcquireOutcome::Won { term: 1 })
                }
                Some((h, term, exp)) if *exp < now || *h == me => {
                    self.handover_asked = None;
                    *h = me;
                    *term += 1;
                    *exp = now + lease;
                    Reply::Acquire(AcquireOutcome::Won { term: *term })
                }
                Some(_) => Reply::Acquire(AcquireOutcome::Lost),
            },
            Op::Renew(t) => match &mut self.row {
                Some((h, term, exp)) if *h == me && *term == *t => {
                    *exp = now + lease;
                    Reply::Renew(match self.handover_asked.clone() {
                        Some(to) => RenewOutcome::HandoverAsked { to },
                        None => RenewOutcome::Renewed,
                    })
                }
                _ => Reply::Renew(RenewOutcome::Lost),
            },
            Op::Release(t) => {
                if let Some((h, term, exp)) = &mut self.row {
                    if *h == me && *term == *t {
                        *exp = 0;
                        self.handover_asked = None;
                    }
                }
                Reply::None
            }
            Op::HandOver(t, to) => {
                if let Some((h, term, exp)) = &mut self.row {
                    if *h == me && *term == *t {
                        *h = to.clone();
                        *exp = now + lease;
                        self.handover_asked = None;
                    }
                }
                Reply::None
            }
        }
    }

    fn step(&mut self) {
        self.t += 1;
        for n in 0..self.nodes.len() {
            if self.nodes[n].dropping_at.is_some_and(|at| at <= self.t) {
                self.nodes[n].has_address = false;
                self.nodes[n].dropping_at = None;
            }
        }
        // Database executions due now.
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].apply_at.is_some_and(|a| a <= self.t) {
                let (node, op) = (self.pending[i].node, self.pending[i].op.clone());
                let reply = if self.db_down || self.nodes[node].partitioned {
                    // Cut off on the way: the node will see an error.
                    self.pending[i].deliver_at = self.pending[i].deliver_at.max(self.t);
                    None
                } else {
                    Some(self.apply(node, &op))
                };
                self.pending[i].reply = reply;
                self.pending[i].apply_at = None;
            }
            i += 1;
        }
        // Replies due now.
        let due: Vec<Pending> = {
            let (due, rest) = std::mem::take(&mut self.pending)
                .into_iter()
                .partition(|p| p.apply_at.is_none() && p.deliver_at <= self.t);
            self.pending = rest;
            due
        };
        for p in due {
            if self.nodes[p.node].crashed {
                continue;
            }
            let now = self.local_now(p.node);
            let lost = p.reply_lost || self.nodes[p.node].partitioned;
            let e = &mut self.nodes[p.node].election;
            let cmds = match (&p.op, p.reply) {
                (Op::Release(_) | Op::HandOver(..), _) => Vec::new(),
                (_, Some(Reply::Read(r))) if !lost => e.lease_read(now, r),
                (_, Some(Reply::Acquire(a))) if !lost => e.acquire_result(now, a),
                (_, Some(Reply::Renew(r))) if !lost => e.renew_result(now, r),
                (Op::Read, _) => e.lease_read(now, LeaseRead::DbError),
                (Op::Acquire, _) => e.acquire_result(now, AcquireOutcome::DbError),
                (Op::Renew(_), _) => e.renew_result(now, RenewOutcome::DbError),
            };
            self.run(p.node, cmds);
        }
        // Timers.
        for n in 0..self.nodes.len() {
            if self.nodes[n].crashed {
                continue;
            }
            let now = self.local_now(n);
            if self.nodes[n]
                .election
                .next_deadline()
                .is_some_and(|d| d <= now)
            {
                let cmds = self.nodes[n].election.tick(now);
                self.run(n, cmds);
            }
        }
        self.check();
    }

    fn check(&mut self) {
        if !self.check_invariant {
            return;
        }
        let holders: Vec<usize> = (0..self.nodes.len())
            .filter(|&n| self.nodes[n].has_address)
            .collect();
        if holders.len() > 1 {
            self.violations.push(format!(
                "t={} ms: {:?} all have the address",
                self.t, holders
            ));
        }
        for &n in &holders {
            let ok = matches!(&self.row, Some((h, _, exp))
                if *h == self.nodes[n].id && self.db_now() < *exp);
            if !ok {
                self.violations.push(format!(
                    "t={} ms: {} has the address without a live lease ({:?}, db now {})",
                    self.t,
                    self.nodes[n].id,
                    self.row,
                    self.db_now()
                ));
            }
        }
    }

    fn advance(&mut self, ms: u64) {
        for _ in 0..ms {
            self.step();
        }
    }

    /// Advances until some node has the address; returns it and how long it took.
    fn until_held(&mut self, limit_ms: u64) -> Option<(usize, u64)> {
        let start = self.t;
        while self.t - start < limit_ms {
            self.step();
            if let Some(n) = (0..self.nodes.len()).find(|&n| self.nodes[n].has_address) {
                return Some((n, self.t - start));
            }
        }
        None
    }

    fn holder(&self) -> Option<usize> {
        (0..self.nodes.len()).find(|&n| self.nodes[n].has_address)
    }

    fn assert_safe(&self) {
        assert!(
            self.violations.is_empty(),
            "invariant broken:\n{}",
            self.violations[..self.violations.len().min(5)].join("\n")
        );
    }
}

#[test]
fn the_default_timing_is_consistent() {
    assert_eq!(timing().check(), Ok(()));
    assert_eq!(timing().hold_window(), Duration::from_millis(1200));
    let tight = ElectionTiming {
        renew: Duration::from_millis(700),
        ..timing()
    };
    assert!(tight.check().is_err());
}

#[test]
fn a_lone_node_takes_a_free_vip_and_keeps_it() {
    let mut w = World::new(timing());
    let a = w.add("a", MAX_PRIORITY);
    w.start(a, MAX_PRIORITY);
    let (n, took) = w.until_held(100).expect("taken");
    assert_eq!(n, a);
    assert!(took <= 10, "a free VIP is taken at once, took {took} ms");
    w.advance(10_000);
    assert!(w.nodes[a].has_address);
    assert_eq!(w.nodes[a].adds, 1, "no blip while renewing");
    assert_eq!(
        w.nodes[a].election.term(),
        Some(1),
        "renewals keep the term"
    );
    w.assert_safe();
}

#[test]
fn start_drops_a_leftover_address_first() {
    let mut e = Election::new("a", timing(), 50, Instant::now());
    assert_eq!(
        e.start(Instant::now()),
        vec![Command::DropAddress, Command::ReadLease]
    );
    assert_eq!(e.next_deadline(), None, "waiting for the read");
}

#[test]
fn two_candidates_one_wins_and_the_preferred_one_wins_a_race() {
    for (first, second) in [(0, 1), (1, 0)] {
        let mut w = World::new(timing());
        let pri = [MAX_PRIORITY, MAX_PRIORITY - 20];
        let a = w.add("a", pri[0]);
        let b = w.add("b", pri[1]);
        let ids = [a, b];
        w.start(ids[first], pri[first]);
        w.start(ids[second], pri[second]);
        let (n, _) = w.until_held(1000).expect("someone takes it");
        assert_eq!(n, a, "the higher priority wins a free VIP");
        w.advance(5000);
        assert_eq!(w.holder(), Some(a));
        assert_eq!(w.nodes[b].adds, 0);
        w.assert_safe();
    }
}

#[test]
fn equal_candidates_exactly_one_wins() {
    let mut w = World::new(timing());
    let a = w.add("a", 50);
    let b = w.add("b", 50);
    w.start(a, 50);
    w.start(b, 50);
    w.advance(5000);
    assert_eq!(w.nodes[a].adds + w.nodes[b].adds, 1);
    w.assert_safe();
}

#[test]
fn the_lease_expires_when_the_holder_dies_and_the_other_takes_over() {
    let mut w = World::new(timing());
    let a = w.add("a", MAX_PRIORITY);
    let b = w.add("b", MAX_PRIORITY - 10);
    w.start(a, MAX_PRIORITY);
    w.advance(50);
    w.start(b, MAX_PRIORITY - 10);
    w.advance(3000);
    assert_eq!(w.holder(), Some(a));
    w.kill(a);
    let (n, failover) = w.until_held(5000).expect("b takes over");
    assert_eq!(n, b);
    // At most a lease after the last renewal, plus b's head-start delay and a round trip.
    assert!(failover <= 1500 + 50 + 10, "failover took {failover} ms");
    assert!(
        failover >= 1500 - 400,
        "not before the lease could end: {failover} ms"
    );
    assert_eq!(w.nodes[b].election.term(), Some(2), "a new fencing term");
    w.assert_safe();
}

#[test]
fn a_holder_cut_off_from_the_database_drops_before_anyone_can_take_it() {
    let mut w = World::new(timing());
    let a = w.add("a", MAX_PRIORITY);
    let b = w.add("b", MAX_PRIORITY);
    w.start(a, MAX_PRIORITY);
    w.advance(30);
    w.start(b, MAX_PRIORITY);
    w.advance(2000);
    assert_eq!(w.holder(), Some(a));
    w.nodes[a].partitioned = true;
    let cut = w.t;
    w.advance(1);
    while w.nodes[a].has_address {
        w.step();
    }
    let dropped = w.t;
    assert!(
        dropped - cut <= 1200 + 20 + 1,
        "a kept it {} ms",
        dropped - cut
    );
    assert_eq!(w.holder(), None);
    let (n, _) = w.until_held(3000).expect("b takes over");
    assert_eq!(n, b);
    let taken = w.t;
    assert!(taken > dropped, "b only after a dropped");
    // a comes back: its renewals are refused (stale term) and it stays a follower.
    w.nodes[a].partitioned = false;
    w.advance(3000);
    assert_eq!(w.holder(), Some(b));
    assert_eq!(w.nodes[a].election.term(), None);
    w.assert_safe();
}

#[test]
fn short_database_errors_while_holding_cause_no_blip_and_long_ones_drop_in_time() {
    let mut w = World::new(timing());
    let a = w.add("a", MAX_PRIORITY);
    w.start(a, MAX_PRIORITY);
    w.advance(1000);
    // An outage shorter than the hold window minus one renew period: no drop.
    w.db_down = true;
    w.advance(600);
    w.db_down = false;
    w.advance(2000);
    assert!(w.nodes[a].has_address);
    assert_eq!(w.nodes[a].adds, 1, "no blip");
    // A long outage: the holder drops before its lease could end, and nobody takes it
    // while nobody can fence it.
    let b = w.add("b", MAX_PRIORITY);
    w.start(b, MAX_PRIORITY);
    w.advance(500);
    w.db_down = true;
    w.advance(5000);
    assert_eq!(w.holder(), None, "no node takes a VIP it cannot fence");
    w.db_down = false;
    assert!(
        w.until_held(3000).is_some(),
        "taken again once the database is back"
    );
    w.assert_safe();
}

#[test]
fn lost_renew_replies_make_the_holder_drop_early_never_late() {
    let mut w = World::new(timing());
    let a = w.add("a", MAX_PRIORITY);
    let b = w.add("b", MAX_PRIORITY);
    w.start(a, MAX_PRIORITY);
    w.advance(20);
    w.start(b, MAX_PRIORITY);
    w.advance(1000);
    // The database keeps extending a's lease, but a never hears it.
    w.nodes[a].replies_lost = true;
    w.advance(2000);
    assert_eq!(
        w.holder(),
        None,
        "a dropped; b waits for a lease a keeps extending"
    );
    w.nodes[a].replies_lost = false;
    w.advance(2000);
    assert_eq!(
        w.holder(),
        Some(a),
        "a renews with its term and adds it back"
    );
    w.assert_safe();
}

#[test]
fn a_restarted_holder_takes_its_own_lease_back_with_a_new_term() {
    let mut w = World::new(timing());
    let a = w.add("a", MAX_PRIORITY);
    let b = w.add("b", MAX_PRIORITY);
    w.start(a, MAX_PRIORITY);
    w.advance(20);
    w.start(b, MAX_PRIORITY);
    w.advance(1000);
    assert_eq!(w.nodes[a].election.term(), Some(1));
    // The process restarts (the host keeps running, the address too): the new run drops
    // it first, finds its own row and takes it back without waiting for the expiry.
    w.nodes[a].crashed = true;
    w.pending.retain(|p| p.node != a);
    w.advance(100);
    w.start(a, MAX_PRIORITY);
    w.advance(200);
    assert_eq!(w.holder(), Some(a));
    assert_eq!(w.nodes[a].election.term(), Some(2));
    assert_eq!(w.nodes[b].adds, 0);
    w.assert_safe();
}

#[test]
fn a_graceful_release_lets_the_other_take_it_at_once() {
    let mut w = World::new(timing());
    let a = w.add("a", MAX_PRIORITY);
    let b = w.add("b", MAX_PRIORITY);
    w.start(a, MAX_PRIORITY);
    w.advance(20);
    w.start(b, MAX_PRIORITY);
    w.advance(1000);
    w.release(a);
    assert!(w.nodes[a].dropping_at.is_some(), "the address goes first");
    w.advance(w.drop_delay);
    let (n, took) = w.until_held(2000).expect("b takes it");
    assert_eq!(n, b);
    let took = took + w.drop_delay;
    assert!(
        took <= 400 + 20,
        "within one check period, not a lease: {took} ms"
    );
    assert_eq!(w.nodes[a].election.next_deadline(), None);
    w.assert_safe();
}

#[test]
fn clock_skew_within_the_bound_is_safe() {
    // The holder's clock runs slow by the whole bound over one lease (200 ms in 1500),
    // the challenger's runs fast, and their offsets differ by hours: no overlap.
    let mut w = World::new(timing());
    let a = w.add("a", MAX_PRIORITY);
    let b = w.add("b", MAX_PRIORITY);
    w.nodes[a].rate = 1.0 - 200.0 / 1500.0;
    w.nodes[b].rate = 1.05;
    w.nodes[b].offset_ms = 3.6e6;
    w.drop_delay = 100;
    w.start(a, MAX_PRIORITY);
    w.advance(20);
    w.start(b, MAX_PRIORITY);
    w.advance(2000);
    assert_eq!(w.holder(), Some(a));
    w.nodes[a].partitioned = true;
    while w.nodes[a].has_address {
        w.step();
    }
    assert_eq!(w.until_held(5000).map(|(n, _)| n), Some(b));
    w.assert_safe();
}

#[test]
fn clock_skew_beyond_the_bound_is_what_breaks_it() {
    // The same run with the holder's clock far slower than the bound: the check catches
    // the overlap, so the test above does test the margin.
    let mut w = World::new(timing());
    let a = w.add("a", MAX_PRIORITY);
    let b = w.add("b", MAX_PRIORITY);
    w.nodes[a].rate = 0.6;
    w.drop_delay = 100;
    w.start(a, MAX_PRIORITY);
    w.advance(20);
    w.start(b, MAX_PRIORITY);
    w.advance(2000);
    w.nodes[a].partitioned = true;
    w.advance(4000);
    assert!(!w.violations.is_empty(), "expected an overlap");
}

#[test]
fn a_node_that_cannot_add_the_address_hands_the_vip_over() {
    let mut w = World::new(timing());
    let a = w.add("a", MAX_PRIORITY);
    let b = w.add("b", MAX_PRIORITY - 10);
    w.start(a, MAX_PRIORITY);
    w.advance(20);
    w.start(b, MAX_PRIORITY - 10);
    w.advance(500);
    assert_eq!(w.holder(), Some(a));
    // The agent reports that adding failed (as if it had): a gives the VIP up at once.
    let now = w.local_now(a);
    let cmds = w.nodes[a].election.address_failed(now);
    assert_eq!(
        cmds,
        vec![Command::DropAddress, Command::Release { term: 1 }]
    );
    w.run(a, cmds);
    w.advance(w.drop_delay);
    let (n, took) = w.until_held(1000).expect("b takes it");
    assert_eq!(n, b);
    assert!(took <= 400 + 60, "{took} ms");
    // a stays away for a lease period, then follows the new holder quietly.
    w.advance(3000);
    assert_eq!(w.holder(), Some(b));
    w.assert_safe();
}

/// A world of three with `a` holding the VIP, `b` preferred over `c`.
fn three_with_a_holding() -> (World, usize, usize, usize) {
    let mut w = World::new(timing());
    let a = w.add("a", MAX_PRIORITY);
    let b = w.add("b", MAX_PRIORITY - 10);
    let c = w.add("c", MAX_PRIORITY - 20);
    w.start(a, MAX_PRIORITY);
    w.advance(20);
    w.start(b, MAX_PRIORITY - 10);
    w.start(c, MAX_PRIORITY - 20);
    w.advance(1000);
    assert_eq!(w.holder(), Some(a));
    (w, a, b, c)
}

#[test]
fn a_handover_to_a_named_node_moves_the_vip_there_within_a_fraction_of_a_second() {
    let (mut w, a, b, c) = three_with_a_holding();
    // The operator asks for c, the least preferred: the holder sees it at its next
    // renewal, drops, hands the row to c, which takes it at its next read.
    w.handover_asked = Some(Some("c".into()));
    let (n, took) = w.until_held(3000).map_or((usize::MAX, 0), |x| x);
    assert!(n == a || n == c);
    let start = w.t - took;
    while w.holder() != Some(c) {
        assert!(
            w.t - start < 2000,
            "c never took it; holder {:?}",
            w.holder()
        );
        w.step();
    }
    let took = w.t - start;
    // At most a renew period until the holder sees the request, one until c reads.
    assert!(took <= 2 * 400 + 50, "took {took} ms");
    assert_eq!(w.row.as_ref().map(|r| (r.0.as_str(), r.1)), Some(("c", 2)));
    assert_eq!(w.nodes[a].election.term(), None, "a is a follower now");
    assert_eq!(w.nodes[b].adds, 0, "b never took it");
    // a stays away and c keeps it.
    w.advance(5000);
    assert_eq!(w.holder(), Some(c));
    assert_eq!(w.nodes[a].adds, 1);
    w.assert_safe();
}

#[test]
fn a_handover_to_a_dead_node_costs_one_lease_then_another_takes_it() {
    let (mut w, a, b, c) = three_with_a_holding();
    w.kill(c);
    w.handover_asked = Some(Some("c".into()));
    // a drops within a renew period; nobody but c may take it until the row expires.
    w.advance(450);
    assert_eq!(w.holder(), None);
    let (n, took) = w.until_held(3000).expect("someone takes it");
    assert_eq!(n, b, "the preferred live node");
    assert!(took <= 1500 + 450, "took {took} ms");
    w.advance(3000);
    assert_eq!(w.holder(), Some(b));
    assert_eq!(w.nodes[a].adds, 1, "a stayed away");
    w.assert_safe();
}

#[test]
fn a_handover_to_any_node_goes_to_the_preferred_other_one() {
    let (mut w, a, b, _c) = three_with_a_holding();
    w.handover_asked = Some(None);
    w.advance(450);
    let (n, took) = w.until_held(2000).expect("someone takes it");
    assert_eq!(n, b);
    assert!(took <= 400 + 100, "took {took} ms");
    w.advance(3000);
    assert_eq!(w.holder(), Some(b));
    assert_eq!(w.nodes[a].adds, 1);
    w.assert_safe();
}

#[test]
fn a_handover_to_itself_or_while_following_changes_nothing() {
    let (mut w, a, b, _c) = three_with_a_holding();
    let now = w.local_now(a);
    assert_eq!(w.nodes[a].election.hand_over(now, Some("a".into())), vec![]);
    let now = w.local_now(b);
    assert_eq!(w.nodes[b].election.hand_over(now, Some("c".into())), vec![]);
    w.advance(2000);
    assert_eq!(w.holder(), Some(a));
    w.assert_safe();
}

#[test]
fn no_node_takes_a_vip_it_cannot_fence_while_the_database_is_down() {
    // Both nodes start while the database is unreachable (a cluster booting during an
    // outage): neither ever adds the address, however long it lasts; once the database
    // answers, exactly one takes it.
    let mut w = World::new(timing());
    let a = w.add("a", MAX_PRIORITY);
    let b = w.add("b", MAX_PRIORITY);
    w.db_down = true;
    w.start(a, MAX_PRIORITY);
    w.start(b, MAX_PRIORITY);
    w.advance(10_000);
    assert_eq!(w.holder(), None);
    assert_eq!((w.nodes[a].adds, w.nodes[b].adds), (0, 0));
    // The same for a holder whose lease expired during the outage: nobody re-takes it.
    w.db_down = false;
    let (first, _) = w.until_held(3000).expect("taken once the database is back");
    w.advance(1000);
    w.db_down = true;
    w.advance(10_000);
    assert_eq!(w.holder(), None, "dropped, and not re-taken by anyone");
    assert_eq!(w.nodes[first].adds, 1);
    assert_eq!(w.nodes[1 - first].adds, 0);
    w.assert_safe();
}
