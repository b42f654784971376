//! The agent against a real store (in-memory SQLite: one database clock, atomic
//! conditional statements) with a recording fake interface. Real time, short leases.

use std::sync::{Arc, Mutex};

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Add,
    Remove,
    Announce,
}

/// One shared log for all the fake interfaces, so their order is global.
type Log = Arc<Mutex<Vec<(String, Event)>>>;

struct FakeAddress {
    node: String,
    log: Log,
    /// Adding fails (a missing interface, no permission).
    broken: bool,
}

impl FakeAddress {
    fn record(&self, e: Event) {
        if let Ok(mut log) = self.log.lock() {
            log.push((self.node.clone(), e));
        }
    }
}

impl VipAddress for FakeAddress {
    async fn add(&self, _lifetime: Duration) -> Result<(), AgentError> {
        if self.broken {
            return Err(AgentError::Failed {
                command: "ip addr replace".into(),
                status: "exit status: 2".into(),
                stderr: "Cannot find device".into(),
            });
        }
        self.record(Event::Add);
        Ok(())
    }
    async fn remove(&self) -> Result<(), AgentError> {
        self.record(Event::Remove);
        Ok(())
    }
    async fn announce(&self) -> Result<(), AgentError> {
        self.record(Event::Announce);
        Ok(())
    }
}

fn params(node: &str) -> VipAgentParams {
    VipAgentParams {
        node_id: node.to_owned(),
        vip: "192.0.2.10".parse().expect("ip"),
        priority: 100,
        timing: ElectionTiming {
            lease: Duration::from_millis(1500),
            renew: Duration::from_millis(400),
            max_clock_skew: Duration::from_millis(200),
            drop_margin: Duration::from_millis(100),
        },
    }
}

async fn store() -> Store {
    let s = Store::connect("sqlite::memory:", 2).await.expect("connect");
    s.migrate().await.expect("migrate");
    s
}

fn start(store: &Store, node: &str, log: &Log) -> (watch::Sender<bool>, JoinHandle<()>) {
    start_with(store, node, log, false)
}

fn start_with(
    store: &Store,
    node: &str,
    log: &Log,
    broken: bool,
) -> (watch::Sender<bool>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let address = FakeAddress {
        node: node.to_owned(),
        log: log.clone(),
        broken,
    };
    let task = tokio::spawn(run_vip(store.clone(), params(node), address, rx));
    (tx, task)
}

/// Who has the address after replaying the log; panics if two ever had it at once.
fn holders_over_time(log: &Log) -> Vec<Option<String>> {
    let log = log.lock().expect("log").clone();
    let mut up: Vec<String> = Vec::new();
    let mut history = Vec::new();
    for (node, e) in log {
        match e {
            Event::Add => {
                if !up.contains(&node) {
                    up.push(node);
                }
            }
            Event::Remove => up.retain(|n| *n != node),
            Event::Announce => continue,
        }
        assert!(up.len() <= 1, "two nodes have the address: {up:?}");
        history.push(up.first().cloned());
    }
    history
}

async fn wait_for_holder(log: &Log, node: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if holders_over_time(log).last() == Some(&Some(node.to_owned())) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{node} did not take the VIP in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_agent_takes_a_free_vip_and_gives_it_back_on_shutdown() {
    let s = store().await;
    let log = Log::default();
    let (stop, task) = start(&s, "a", &log);
    wait_for_holder(&log, "a", Duration::from_secs(2)).await;
    let l = s.vip_lease("192.0.2.10").await.expect("read").expect("row");
    assert_eq!((l.holder.as_str(), l.term), ("a", 1));
    // Renewals keep it without touching the address again beyond refreshes.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let l = s.vip_lease("192.0.2.10").await.expect("read").expect("row");
    assert_eq!(l.term, 1);
    assert!(l.remaining_ms() > 1000, "renewed: {l:?}");
    stop.send(true).expect("stop");
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("stops")
        .expect("task");
    let events: Vec<Event> = log.lock().expect("log").iter().map(|(_, e)| *e).collect();
    assert_eq!(
        events.first(),
        Some(&Event::Remove),
        "a leftover address goes first"
    );
    assert_eq!(&events[1..3], &[Event::Add, Event::Announce]);
    assert_eq!(events.last(), Some(&Event::Remove));
    let l = s.vip_lease("192.0.2.10").await.expect("read").expect("row");
    assert_eq!(l.expires_at_ms, 0, "released");
}

#[tokio::test]
async fn a_handover_moves_the_vip_at_once_and_a_dead_agent_loses_it_at_expiry() {
    let s = store().await;
    let log = Log::default();
    let (stop_a, task_a) = start(&s, "a", &log);
    wait_for_holder(&log, "a", Duration::from_secs(2)).await;
    let (stop_b, task_b) = start(&s, "b", &log);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(holders_over_time(&log).last(), Some(&Some("a".to_owned())));
    // Graceful: a drops and releases; b takes it at its next check, not a lease later.
    stop_a.send(true).expect("stop a");
    let took = wait_for_holder(&log, "b", Duration::from_secs(2)).await;
    assert!(took < Duration::from_millis(900), "handover took {took:?}");
    task_a.await.expect("a");
    // a comes back and waits; then b's task dies without a word (abort: no release).
    let (stop_a, task_a) = start(&s, "a", &log);
    tokio::time::sleep(Duration::from_millis(500)).await;
    task_b.abort();
    let _ = task_b.await;
    drop(stop_b);
    // The fake interface has no kernel lifetime: take b's address away by hand, as the
    // kernel would, so the log stays a truthful picture.
    log.lock()
        .expect("log")
        .push(("b".to_owned(), Event::Remove));
    let took = wait_for_holder(&log, "a", Duration::from_secs(4)).await;
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_millis(2500),
        "after b's lease ran out: {took:?}"
    );
    let l = s.vip_lease("192.0.2.10").await.expect("read").expect("row");
    assert_eq!((l.holder.as_str(), l.term), ("a", 3));
    stop_a.send(true).expect("stop a");
    task_a.await.expect("a");
}

#[test]
fn the_address_lifetime_fits_the_hold_window() {
    assert_eq!(params("a").address_lifetime(), Duration::from_secs(1));
    let mut p = params("a");
    p.timing.lease = Duration::from_millis(10_000);
    assert_eq!(p.address_lifetime(), Duration::from_secs(8));
}

#[tokio::test]
async fn a_node_that_cannot_add_the_address_lets_another_serve_the_vip() {
    let s = store().await;
    let log = Log::default();
    let (stop_a, task_a) = start_with(&s, "a", &log, true);
    // a takes the free VIP first, fails to add it and releases it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (stop_b, task_b) = start(&s, "b", &log);
    let took = wait_for_holder(&log, "b", Duration::from_secs(3)).await;
    assert!(took < Duration::from_millis(1000), "{took:?}");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(holders_over_time(&log).last(), Some(&Some("b".to_owned())));
    let l = s.vip_lease("192.0.2.10").await.expect("read").expect("row");
    assert_eq!((l.holder.as_str(), l.term), ("b", 2));
    for (stop, task) in [(stop_a, task_a), (stop_b, task_b)] {
        stop.send(true).expect("stop");
        task.await.expect("task");
    }
}
