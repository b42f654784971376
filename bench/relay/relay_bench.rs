//! Relay benchmark server: N relayed calls through `ringfort::media` on 127.0.0.1, fed by
//! `rtp_blast` (see `run.sh`). Not part of the test suite.
//!
//!   relay_bench CALLS MAPFILE [threads=2] [a_base=40000] [b_base=50000]
//!
//! Allocates 2 x CALLS port pairs from 20000-39999, starts CALLS relays whose remotes are
//! the blaster's ports (A: a_base+i, B: b_base+i, so both legs latch at once), writes
//! "a_port a_dst b_port b_dst" lines for `rtp_blast`, prints `ready`, then:
//! SIGUSR1 marks the start of the steady-state window, SIGUSR2 its end, SIGTERM prints
//! the report and exits. A counting global allocator gives the allocations per relayed
//! packet inside the window (the hot path must allocate nothing).

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use ringfort::media::{Leg, PortAllocator, Relay, RelayConfig, RelayHandle, Remote};
use tokio::signal::unix::{signal, SignalKind};

#[path = "../alloc_count.rs"]
mod alloc_count;
use alloc_count::allocations;

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// (relayed packets, dropped packets) over all calls.
fn totals(handles: &[RelayHandle]) -> (u64, u64) {
    handles.iter().fold((0, 0), |(tx, dr), h| {
        let s = h.stats();
        let (a, b) = (s.leg(Leg::A), s.leg(Leg::B));
        (tx + a.tx_packets + b.tx_packets, dr + a.dropped + b.dropped)
    })
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: Option<T>) -> T {
    match args.get(i).map(|s| s.parse::<T>()) {
        Some(Ok(v)) => v,
        _ => default.unwrap_or_else(|| {
            eprintln!("usage: relay_bench CALLS MAPFILE [threads=2] [a_base=40000] [b_base=50000]");
            std::process::exit(2)
        }),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let calls: u16 = arg(&args, 1, None);
    let map: String = arg(&args, 2, None);
    let threads: usize = arg(&args, 3, Some(2));
    let a_base: u16 = arg(&args, 4, Some(40_000));
    let b_base: u16 = arg(&args, 5, Some(50_000));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    rt.block_on(serve(calls, &map, a_base, b_base))
}

async fn serve(
    calls: u16,
    map: &str,
    a_base: u16,
    b_base: u16,
) -> Result<(), Box<dyn std::error::Error>> {
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let mut term = signal(SignalKind::terminate())?;
    let rss_base = rss_kb();
    let alloc = PortAllocator::new(lo, 20_000, 39_999)?;
    let mut handles = Vec::with_capacity(usize::from(calls));
    let mut lines = String::new();
    for i in 0..calls {
        let (a, b) = (alloc.allocate()?, alloc.allocate()?);
        let (pa, pb) = (a_base + i, b_base + i);
        let remotes = [
            Remote::new(SocketAddr::new(lo, pa)),
            Remote::new(SocketAddr::new(lo, pb)),
        ];
        let h = Relay::spawn(a, b, remotes, RelayConfig::default());
        lines.push_str(&format!(
            "{pa} {} {pb} {}\n",
            h.local_rtp(Leg::A).port(),
            h.local_rtp(Leg::B).port()
        ));
        handles.push(h);
    }
    std::fs::write(map, lines)?;
    let rss_setup = rss_kb();
    println!("ready calls={calls}");
    std::io::stdout().flush()?;

    let mut start: Option<(Instant, u64, u64)> = None;
    let mut end: Option<(Instant, u64, u64, u64)> = None;
    loop {
        tokio::select! {
            _ = usr1.recv() => {
                let (tx, _) = totals(&handles);
                start = Some((Instant::now(), tx, allocations()));
            }
            _ = usr2.recv() => {
                let allocs = allocations();
                let (tx, _) = totals(&handles);
                end = Some((Instant::now(), tx, allocs, rss_kb()));
            }
            _ = term.recv() => break,
        }
    }
    let (relayed, dropped) = totals(&handles);
    let mut out = format!(
        "calls={calls} relayed_pkts={relayed} dropped_pkts={dropped} rss_base_kb={rss_base} \
         rss_setup_kb={rss_setup} setup_kb_per_call={:.1}",
        (rss_setup.saturating_sub(rss_base)) as f64 / f64::from(calls.max(1))
    );
    if let (Some((t0, tx0, a0)), Some((t1, tx1, a1, rss_end))) = (start, end) {
        let secs = t1.duration_since(t0).as_secs_f64().max(1e-9);
        let pkts = tx1.saturating_sub(tx0);
        out.push_str(&format!(
            " window_secs={secs:.2} window_pps={:.0} window_allocs={} allocs_per_pkt={:.6} \
             rss_loaded_kb={rss_end} rss_kb_per_call={:.1}",
            pkts as f64 / secs,
            a1.saturating_sub(a0),
            a1.saturating_sub(a0) as f64 / (pkts.max(1)) as f64,
            (rss_end.saturating_sub(rss_base)) as f64 / f64::from(calls.max(1)),
        ));
    }
    println!("{out}");
    let t = Instant::now();
    for h in handles {
        h.close().await;
    }
    eprintln!(
        "closed {calls} relays in {:?}; ports still leased: {}",
        t.elapsed(),
        alloc.leased()
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}
