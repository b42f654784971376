//! Binding writes held back while the database is unreachable, sans-IO.
//!
//! Owns: the order of the held binding sets (one per AOR, the latest set wins and moves to
//! the back, so replaying them in order leaves the store as the cache is), the bound on
//! how many AORs are held, and when to probe the database again. Must not: touch the
//! store or the cache (`super::Registrar::persist` and its flush loop do).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::store::Binding;

/// How many AORs' binding sets are held at most; beyond, REGISTERs are refused (500) as
/// when there is no queue, rather than memory growing for as long as the outage lasts.
pub const MAX_HELD_AORS: usize = 20_000;
/// A binding write that has not committed by then counts as the database being
/// unreachable (the write is held and replayed: replacing a set is idempotent).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the flush loop tries the database again during an outage.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);

/// The held writes; empty when the database is reachable.
#[derive(Debug, Default)]
pub struct OutageQueue {
    held: VecDeque<(String, Vec<Binding>)>,
    since: Option<Instant>,
    capacity: usize,
}

impl OutageQueue {
    pub fn new(capacity: usize) -> OutageQueue {
        OutageQueue {
            held: VecDeque::new(),
            since: None,
            capacity,
        }
    }

    /// The database is unreachable now: writes from here on are held, until a flush.
    pub fn database_down(&mut self, now: Instant) {
        self.since.get_or_insert(now);
    }

    /// Whether writes are being held (an outage seen and not yet flushed).
    pub fn is_active(&self) -> bool {
        self.since.is_some()
    }

    /// When the outage began.
    pub fn since(&self) -> Option<Instant> {
        self.since
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Holds `aor`'s new binding set, replacing an older one; false when the queue is
    /// full (a new AOR beyond the capacity): the caller refuses that write.
    pub fn hold(&mut self, aor: &str, bindings: &[Binding]) -> bool {
        if let Some(i) = self.held.iter().position(|(a, _)| a == aor) {
            self.held.remove(i);
        } else if self.held.len() >= self.capacity {
            return false;
        }
        self.held.push_back((aor.to_owned(), bindings.to_vec()));
        true
    }

    /// The held sets, oldest first, to write in one go.
    pub fn snapshot(&self) -> Vec<(String, Vec<Binding>)> {
        self.held.iter().cloned().collect()
    }

    /// The first `written` sets of a snapshot are in the store: forget them (sets held
    /// again meanwhile were re-queued at the back and stay). Returns whether the outage is
    /// over (nothing left).
    pub fn flushed(&mut self, written: &[(String, Vec<Binding>)]) -> bool {
        for (aor, bindings) in written {
            if let Some(i) = self
                .held
                .iter()
                .position(|(a, b)| a == aor && b == bindings)
            {
                self.held.remove(i);
            }
        }
        if self.held.is_empty() {
            self.since = None;
        }
        self.since.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(aor: &str, contact: &str) -> Binding {
        Binding {
            aor: aor.into(),
            binding_key: contact.into(),
            contact_uri: contact.into(),
            q: None,
            expires_at: 100,
            call_id: "c".into(),
            cseq: 1,
            received: String::new(),
            transport: "udp".into(),
            local_addr: String::new(),
            flow: None,
            path: Vec::new(),
            user_agent: String::new(),
            instance_id: None,
            reg_id: None,
            node_id: "n".into(),
            updated_at: 1,
        }
    }

    #[test]
    fn the_latest_set_per_aor_wins_and_moves_to_the_back() {
        let mut q = OutageQueue::new(10);
        let t0 = Instant::now();
        assert!(!q.is_active());
        q.database_down(t0);
        q.database_down(t0 + Duration::from_secs(1));
        assert_eq!(q.since(), Some(t0));
        assert!(q.hold("100", &[binding("100", "sip:a")]));
        assert!(q.hold("200", &[binding("200", "sip:b")]));
        assert!(q.hold("100", &[]));
        let snap = q.snapshot();
        assert_eq!(
            snap.iter()
                .map(|(a, b)| (a.as_str(), b.len()))
                .collect::<Vec<_>>(),
            vec![("200", 1), ("100", 0)]
        );
        assert!(q.flushed(&snap));
        assert!(!q.is_active() && q.is_empty());
    }

    #[test]
    fn a_set_held_again_during_a_flush_stays_for_the_next() {
        let mut q = OutageQueue::new(10);
        q.database_down(Instant::now());
        q.hold("100", &[binding("100", "sip:a")]);
        let snap = q.snapshot();
        q.hold("100", &[binding("100", "sip:a2")]);
        assert!(!q.flushed(&snap), "the newer set is not written yet");
        assert_eq!(q.snapshot()[0].1[0].contact_uri, "sip:a2");
        assert!(q.is_active());
    }

    #[test]
    fn the_queue_is_bounded_in_aors_not_in_refreshes() {
        let mut q = OutageQueue::new(2);
        q.database_down(Instant::now());
        assert!(q.hold("1", &[]));
        assert!(q.hold("2", &[]));
        assert!(!q.hold("3", &[]), "a third AOR is refused");
        assert!(
            q.hold("1", &[binding("1", "sip:x")]),
            "a held AOR may change"
        );
        assert_eq!(q.len(), 2);
    }
}
