//! Failed-login limiting, pure (time passed in): per client IP and per account name, a
//! count of failures within a window; reaching the limit locks that key out for a short
//! while. In memory, per node; bounded.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The limits.
#[derive(Debug, Clone, Copy)]
pub struct LimiterPolicy {
    /// Failures are counted over this window from the first one.
    pub window: Duration,
    /// Failures on one account within the window that lock it.
    pub max_per_account: u32,
    /// Failures from one IP within the window that lock it (spraying many names).
    pub max_per_ip: u32,
    /// How long a lock lasts: short, since anyone can lock an account out by guessing.
    pub lockout: Duration,
}

impl Default for LimiterPolicy {
    fn default() -> Self {
        LimiterPolicy {
            window: Duration::from_secs(300),
            max_per_account: 5,
            max_per_ip: 20,
            lockout: Duration::from_secs(60),
        }
    }
}

/// Most keys remembered per map; past this, stale ones are dropped, then new keys are
/// not tracked until room frees up (the IP map still limits a spray of names).
const MAX_KEYS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    since: Instant,
    locked_until: Option<Instant>,
}

#[derive(Debug)]
struct Counter<K> {
    max: u32,
    entries: HashMap<K, Entry>,
}

impl<K: Hash + Eq + Clone> Counter<K> {
    fn locked(&self, key: &K, now: Instant) -> Option<Duration> {
        let until = self.entries.get(key)?.locked_until?;
        (until > now).then(|| until - now)
    }

    fn fail(&mut self, key: &K, now: Instant, p: &LimiterPolicy) {
        if !self.entries.contains_key(key) && self.entries.len() >= MAX_KEYS {
            self.entries.retain(|_, e| {
                e.locked_until.is_some_and(|u| u > now) || now.duration_since(e.since) < p.window
            });
            if self.entries.len() >= MAX_KEYS {
                return;
            }
        }
        let e = self.entries.entry(key.clone()).or_insert(Entry {
            failures: 0,
            since: now,
            locked_until: None,
        });
        if now.duration_since(e.since) >= p.window {
            e.failures = 0;
            e.since = now;
        }
        e.failures += 1;
        if e.failures >= self.max {
            e.locked_until = Some(now + p.lockout);
            e.failures = 0;
            e.since = now;
        }
    }
}

/// The limiter of one node.
#[derive(Debug)]
pub struct LoginLimiter {
    policy: LimiterPolicy,
    ips: Counter<IpAddr>,
    accounts: Counter<String>,
}

impl LoginLimiter {
    pub fn new(policy: LimiterPolicy) -> Self {
        LoginLimiter {
            policy,
            ips: Counter {
                max: policy.max_per_ip,
                entries: HashMap::new(),
            },
            accounts: Counter {
                max: policy.max_per_account,
                entries: HashMap::new(),
            },
        }
    }

    /// `Err(wait)` when this IP or this account is locked out for `wait` more.
    pub fn check(&self, ip: IpAddr, account: &str, now: Instant) -> Result<(), Duration> {
        let a = self.accounts.locked(&key(account), now);
        let i = self.ips.locked(&ip, now);
        match a.max(i) {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    pub fn failure(&mut self, ip: IpAddr, account: &str, now: Instant) {
        let p = self.policy;
        self.ips.fail(&ip, now, &p);
        self.accounts.fail(&key(account), now, &p);
    }

    /// A good login clears the account's failures (not the IP's: one known password must
    /// not reset a spray from the same address).
    pub fn success(&mut self, account: &str) {
        self.accounts.entries.remove(&key(account));
    }
}

/// Names longer than any valid one are cut, so junk cannot grow the map's memory.
fn key(account: &str) -> String {
    account.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> LimiterPolicy {
        LimiterPolicy {
            window: Duration::from_secs(300),
            max_per_account: 3,
            max_per_ip: 5,
            lockout: Duration::from_secs(60),
        }
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const IP2: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn an_account_locks_after_its_failures_and_unlocks_after_the_lockout() {
        let t0 = Instant::now();
        let mut l = LoginLimiter::new(policy());
        for i in 0..3 {
            assert!(l.check(IP, "root", t0).is_ok(), "attempt {i}");
            // From different addresses: the account limit is what bites.
            l.failure(if i % 2 == 0 { IP } else { IP2 }, "root", t0);
        }
        assert_eq!(l.check(IP2, "root", t0), Err(Duration::from_secs(60)));
        assert_eq!(
            l.check(IP, "root", t0 + Duration::from_secs(59)),
            Err(Duration::from_secs(1))
        );
        assert!(l.check(IP, "other", t0).is_ok(), "other accounts are free");
        assert!(l.check(IP, "root", t0 + Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn failures_outside_the_window_are_forgotten() {
        let t0 = Instant::now();
        let mut l = LoginLimiter::new(policy());
        l.failure(IP, "root", t0);
        l.failure(IP, "root", t0 + Duration::from_secs(1));
        // The window (from the first failure) has passed: counting starts again.
        l.failure(IP, "root", t0 + Duration::from_secs(301));
        l.failure(IP, "root", t0 + Duration::from_secs(302));
        assert!(l.check(IP, "root", t0 + Duration::from_secs(302)).is_ok());
        l.failure(IP, "root", t0 + Duration::from_secs(303));
        assert!(l.check(IP, "root", t0 + Duration::from_secs(303)).is_err());
    }

    #[test]
    fn an_ip_spraying_names_is_locked_for_every_name() {
        let t0 = Instant::now();
        let mut l = LoginLimiter::new(policy());
        for i in 0..5 {
            l.failure(IP, &format!("user{i}"), t0);
        }
        assert!(l.check(IP, "someone-else", t0).is_err());
        assert!(l.check(IP2, "someone-else", t0).is_ok());
    }

    #[test]
    fn success_clears_the_account_but_not_the_ip() {
        let t0 = Instant::now();
        let mut l = LoginLimiter::new(policy());
        l.failure(IP, "root", t0);
        l.failure(IP, "root", t0);
        l.success("root");
        l.failure(IP, "root", t0);
        l.failure(IP, "root", t0);
        assert!(l.check(IP, "root", t0).is_ok(), "account count restarted");
        l.failure(IP, "x", t0); // the IP's fifth
        assert!(l.check(IP, "root", t0).is_err());
    }

    #[test]
    fn memory_is_bounded() {
        let t0 = Instant::now();
        let mut l = LoginLimiter::new(policy());
        for i in 0..(MAX_KEYS + 10) {
            l.failure(IP2, &format!("n{i}"), t0);
        }
        assert!(l.accounts.entries.len() <= MAX_KEYS);
        // Once stale, old keys make room.
        l.failure(IP2, "late", t0 + Duration::from_secs(400));
        assert!(l.accounts.entries.contains_key("late"));
        assert!(l.accounts.entries.len() < 10);
    }
}
