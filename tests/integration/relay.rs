//! The RTP relay (`ringfort::media`) with real loopback sockets as two fake phones.
//! Each test has its own port range; the allocator skips ports other processes hold.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::time::Duration;

use ringfort::media::ports::PortPool;
use ringfort::media::{
    Flow, Leg, MediaError, PortAllocator, Relay, RelayConfig, RelayEvent, RelayHandle, Remote,
};
use tokio::net::UdpSocket;
use tokio::time::timeout;

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn allocator(min: u16, max: u16) -> PortAllocator {
    PortAllocator::with_pool(LO, PortPool::new(min, max).expect("range"))
}

async fn phone() -> UdpSocket {
    UdpSocket::bind((LO, 0)).await.expect("bind phone")
}

fn addr(s: &UdpSocket) -> SocketAddr {
    s.local_addr().expect("local addr")
}

/// A G.711 RTP packet: 12-byte header + 160 bytes of payload.
fn rtp(ssrc: u32, seq: u16, ts: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..160u32).map(|i| (i as u8) ^ (seq as u8)));
    p
}

/// An RTCP receiver report with one block.
fn rtcp_rr(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x81, 201, 0, 7];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0x55; 24]);
    p
}

async fn recv(s: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 2048];
    let (n, from) = timeout(Duration::from_secs(2), s.recv_from(&mut buf))
        .await
        .expect("no packet within 2 s")
        .expect("recv");
    buf.truncate(n);
    (buf, from)
}

async fn nothing(s: &UdpSocket, wait: Duration) {
    let mut buf = [0u8; 2048];
    if let Ok(r) = timeout(wait, s.recv_from(&mut buf)).await {
        panic!("unexpected packet: {r:?}");
    }
}

async fn send(s: &UdpSocket, p: &[u8], to: SocketAddr) {
    s.send_to(p, to).await.expect("send");
}

/// The next MediaTimeout event within `within`, skipping other events.
async fn media_timeout(h: &mut RelayHandle, within: Duration) -> Option<Duration> {
    timeout(within, async {
        loop {
            match h.next_event().await {
                Some(RelayEvent::MediaTimeout { idle }) => return Some(idle),
                Some(_) => continue,
                None => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

#[tokio::test]
async fn relay_both_ways_untouched_with_nat_latching_rtcp_and_release() {
    let alloc = allocator(41_000, 41_099);
    let (leg_a, leg_b) = (alloc.allocate().unwrap(), alloc.allocate().unwrap());
    assert_eq!(leg_a.rtp_addr().port() % 2, 0);
    assert_eq!(leg_a.rtcp_addr().port(), leg_a.rtp_addr().port() + 1);
    let ports: Vec<u16> = [&leg_a, &leg_b]
        .iter()
        .flat_map(|l| [l.rtp_addr().port(), l.rtcp_addr().port()])
        .collect();

    // Phone A is "behind NAT": its SDP names an address it does not send from.
    let (a_rtp, a_rtcp, a_sdp) = (phone().await, phone().await, phone().await);
    let (b_rtp, b_rtcp) = (phone().await, phone().await);
    let remotes = [
        Remote::new(addr(&a_sdp)),
        Remote::new(addr(&b_rtp)).with_rtcp(addr(&b_rtcp)),
    ];
    let mut h = Relay::spawn(leg_a, leg_b, remotes, RelayConfig::default());
    let (ra, rb) = (h.local_rtp(Leg::A), h.local_rtp(Leg::B));

    // A -> B: the first two packets are A's latching probation, the third latches.
    for i in 0..6u16 {
        send(
            &a_rtp,
            &rtp(0xA1A1_0001, 1000 + i, 8000 + 160 * u32::from(i)),
            ra,
        )
        .await;
    }
    for i in 2..6u16 {
        let (p, from) = recv(&b_rtp).await;
        assert_eq!(
            p,
            rtp(0xA1A1_0001, 1000 + i, 8000 + 160 * u32::from(i)),
            "packet {i}"
        );
        assert_eq!(from, rb, "sent from the PBX's leg B port");
    }
    assert_eq!(
        h.next_event().await,
        Some(RelayEvent::Latched {
            leg: Leg::A,
            flow: Flow::Rtp,
            addr: addr(&a_rtp)
        })
    );

    // B -> A: B sends from its SDP address, so no probation; A gets it at its real source.
    for i in 0..4u16 {
        send(
            &b_rtp,
            &rtp(0xB2B2_0002, 7 + i, 99 + 160 * u32::from(i)),
            rb,
        )
        .await;
    }
    for i in 0..4u16 {
        let (p, from) = recv(&a_rtp).await;
        assert_eq!(p, rtp(0xB2B2_0002, 7 + i, 99 + 160 * u32::from(i)));
        assert_eq!(from, ra);
    }
    nothing(&a_sdp, Duration::from_millis(50)).await;

    // RTCP both ways, on the RTCP ports; A's RTCP source is trusted by its RTP latch's IP.
    send(&a_rtcp, &rtcp_rr(0xA1A1_0001), h.local_rtcp(Leg::A)).await;
    let (p, from) = recv(&b_rtcp).await;
    assert_eq!((p, from), (rtcp_rr(0xA1A1_0001), h.local_rtcp(Leg::B)));
    send(&b_rtcp, &rtcp_rr(0xB2B2_0002), h.local_rtcp(Leg::B)).await;
    let (p, from) = recv(&a_rtcp).await;
    assert_eq!((p, from), (rtcp_rr(0xB2B2_0002), h.local_rtcp(Leg::A)));

    // An injector on another port cannot take over A's stream.
    let evil = phone().await;
    for i in 0..5u16 {
        send(&evil, &rtp(0xA1A1_0001, 1006 + i, 0), ra).await;
    }
    nothing(&b_rtp, Duration::from_millis(150)).await;

    let s = h.stats();
    let (sa, sb) = (s.leg(Leg::A), s.leg(Leg::B));
    assert_eq!(sa.rtp_source, Some(addr(&a_rtp)));
    assert_eq!(sa.rtcp_source, Some(addr(&a_rtcp)));
    assert_eq!(sb.rtp_source, Some(addr(&b_rtp)));
    assert_eq!((sa.rx_packets, sa.rtcp_rx_packets, sa.dropped), (12, 1, 7));
    assert_eq!(sa.rx_bytes, 11 * 172 + 32);
    assert_eq!(
        (sb.tx_packets, sb.rtcp_tx_packets, sb.tx_bytes),
        (5, 1, 4 * 172 + 32)
    );
    assert_eq!((sb.rx_packets, sb.dropped), (5, 0));
    assert_eq!((sa.tx_packets, sa.tx_bytes), (5, 4 * 172 + 32));

    // The node-wide totals get this relay's counts once, when it ends (other tests'
    // relays may add to them meanwhile, hence at least).
    use std::sync::atomic::Ordering::Relaxed;
    let totals = &ringfort::metrics::RELAYS;
    let (relayed, dropped) = (
        totals.rtp_relayed.load(Relaxed),
        totals.dropped.load(Relaxed),
    );
    let last = h.close().await;
    assert_eq!(last.leg(Leg::A).rx_packets, 12);
    assert!(
        totals.rtp_relayed.load(Relaxed) >= relayed + 8,
        "4 RTP each way"
    );
    assert!(totals.dropped.load(Relaxed) >= dropped + 7);
    assert_eq!(alloc.leased(), 0, "ports given back after close");
    for p in ports {
        StdUdpSocket::bind((LO, p)).unwrap_or_else(|e| panic!("port {p} still bound: {e}"));
    }
}

#[tokio::test]
async fn rtcp_mux_leg_gets_rtcp_on_its_rtp_address() {
    let alloc = allocator(41_100, 41_199);
    let (leg_a, leg_b) = (alloc.allocate().unwrap(), alloc.allocate().unwrap());
    let (a_rtp, a_rtcp, b_rtp) = (phone().await, phone().await, phone().await);
    let remotes = [
        Remote::new(addr(&a_rtp)).with_rtcp(addr(&a_rtcp)),
        Remote::new(addr(&b_rtp)).with_rtcp_mux(true),
    ];
    let h = Relay::spawn(leg_a, leg_b, remotes, RelayConfig::default());
    // A (no mux) sends RTCP on the RTCP port; B (mux) gets it on its RTP address.
    send(&a_rtcp, &rtcp_rr(1), h.local_rtcp(Leg::A)).await;
    assert_eq!(recv(&b_rtp).await, (rtcp_rr(1), h.local_rtp(Leg::B)));
    // B sends muxed RTCP and RTP on its RTP port; A gets each on the right socket.
    send(&b_rtp, &rtcp_rr(2), h.local_rtp(Leg::B)).await;
    assert_eq!(recv(&a_rtcp).await, (rtcp_rr(2), h.local_rtcp(Leg::A)));
    send(&b_rtp, &rtp(2, 1, 1), h.local_rtp(Leg::B)).await;
    assert_eq!(recv(&a_rtp).await, (rtp(2, 1, 1), h.local_rtp(Leg::A)));
    let s = h.stats();
    assert_eq!(s.leg(Leg::B).rtcp_source, Some(addr(&b_rtp)));
    assert_eq!(s.leg(Leg::B).rtcp_rx_packets, 1);
    h.close().await;
    assert_eq!(alloc.leased(), 0);
}

#[tokio::test]
async fn update_remote_moves_the_destination() {
    let alloc = allocator(41_200, 41_299);
    let (leg_a, leg_b) = (alloc.allocate().unwrap(), alloc.allocate().unwrap());
    let (a, b_old, b_new) = (phone().await, phone().await, phone().await);
    // B's address is not known at first (INVITE forwarded, no answer yet).
    let h = Relay::spawn(
        leg_a,
        leg_b,
        [Remote::new(addr(&a)), Remote::default()],
        RelayConfig::default(),
    );
    send(&a, &rtp(1, 1, 1), h.local_rtp(Leg::A)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(h.stats().leg(Leg::A).dropped, 1, "no destination yet");
    h.update_remote(Leg::B, Remote::new(addr(&b_old)));
    send(&a, &rtp(1, 2, 2), h.local_rtp(Leg::A)).await;
    assert_eq!(recv(&b_old).await.0, rtp(1, 2, 2));
    // re-INVITE: B moved.
    h.update_remote(Leg::B, Remote::new(addr(&b_new)));
    send(&a, &rtp(1, 3, 3), h.local_rtp(Leg::A)).await;
    assert_eq!(recv(&b_new).await.0, rtp(1, 3, 3));
    nothing(&b_old, Duration::from_millis(50)).await;
    // Packets 4 and 5 never come: two lost from A's stream (1 was received, then dropped
    // for want of a destination: dropped, not lost).
    send(&a, &rtp(1, 6, 6), h.local_rtp(Leg::A)).await;
    assert_eq!(recv(&b_new).await.0, rtp(1, 6, 6));
    let st = h.stats();
    assert_eq!((st.leg(Leg::A).lost, st.leg(Leg::B).lost), (2, 0));
    h.close().await;
}

#[tokio::test]
async fn media_timeout_fires_and_hold_suspends_it() {
    let alloc = allocator(41_300, 41_399);
    let (leg_a, leg_b) = (alloc.allocate().unwrap(), alloc.allocate().unwrap());
    let (a, b) = (phone().await, phone().await);
    let config = RelayConfig {
        media_timeout: Some(Duration::from_millis(300)),
        hold_timeout: None,
        check_every: Duration::from_millis(20),
        ..RelayConfig::default()
    };
    let mut h = Relay::spawn(
        leg_a,
        leg_b,
        [Remote::new(addr(&a)), Remote::new(addr(&b))],
        config,
    );
    // RTP flowing for 0.5 s keeps the call alive.
    for i in 0..25u16 {
        send(&a, &rtp(1, i, 0), h.local_rtp(Leg::A)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.stats().leg(Leg::B).tx_packets, 25);
    let idle = media_timeout(&mut h, Duration::from_secs(2))
        .await
        .expect("timeout event");
    assert!(idle >= Duration::from_millis(300), "{idle:?}");

    // RTP re-arms it; then hold: no timeout while held, however long.
    send(&a, &rtp(1, 100, 0), h.local_rtp(Leg::A)).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    h.set_hold(true);
    assert_eq!(
        media_timeout(&mut h, Duration::from_millis(800)).await,
        None
    );
    // Resume: a full period again, then the timeout.
    h.set_hold(false);
    let idle = media_timeout(&mut h, Duration::from_secs(2))
        .await
        .expect("timeout after resume");
    assert!(
        idle >= Duration::from_millis(300) && idle < Duration::from_millis(900),
        "{idle:?}"
    );
    h.close().await;
}

#[tokio::test]
async fn allocation_skips_busy_ports_then_reports_exhaustion() {
    // Three pairs: 41400/1, 41402/3, 41404/5; another process holds 41401.
    let alloc = allocator(41_400, 41_405);
    let blocker = StdUdpSocket::bind((LO, 41_401)).expect("blocker");
    let x = alloc.allocate().unwrap();
    let y = alloc.allocate().unwrap();
    assert_eq!((x.rtp_addr().port(), y.rtp_addr().port()), (41_402, 41_404));
    match alloc.allocate() {
        Err(MediaError::NoBindablePort {
            min: 41_400,
            max: 41_405,
            ..
        }) => {}
        other => panic!("expected NoBindablePort, got {other:?}"),
    }
    assert_eq!(alloc.leased(), 2);
    drop(blocker);
    let z = alloc.allocate().unwrap();
    assert_eq!(z.rtp_addr().port(), 41_400);
    match alloc.allocate() {
        Err(e @ MediaError::PortsExhausted { pairs: 3, .. }) => {
            assert_eq!(
                e.to_string(),
                "all 3 RTP port pairs of 41400-41405 are in use"
            );
        }
        other => panic!("expected PortsExhausted, got {other:?}"),
    }
    drop((x, y, z));
    assert_eq!(alloc.leased(), 0);
}

#[tokio::test]
async fn dropping_the_handle_stops_the_relay_and_frees_the_ports() {
    let alloc = allocator(41_500, 41_599);
    let (leg_a, leg_b) = (alloc.allocate().unwrap(), alloc.allocate().unwrap());
    let h = Relay::spawn(
        leg_a,
        leg_b,
        [Remote::default(), Remote::default()],
        RelayConfig::default(),
    );
    assert_eq!(alloc.leased(), 2);
    drop(h);
    let freed = timeout(Duration::from_secs(2), async {
        while alloc.leased() != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(
        freed.is_ok(),
        "ports still leased after the handle was dropped"
    );
}
