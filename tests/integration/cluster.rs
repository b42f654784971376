//! Floating-IP failover for real: two network namespaces the test creates (and removes),
//! joined by a veth pair, stand for two hosts; two VIP agents (in this process, each
//! driving `ip -n NS`) elect the holder through a lease row in PostgreSQL. A sampler
//! reads both namespaces' addresses every few milliseconds for the whole test.
//!
//! The holder's agent is killed (its task aborted: no release, no drop, as a crashed
//! process), the other takes the VIP once the lease ran out, and no sample ever saw the
//! address in both namespaces: the dead agent's address went away by the kernel lifetime
//! the agent gave it, before the lease could be taken over.

use std::process::Command;
use std::time::{Duration, Instant};

use ringfort::cluster::agent::{run_vip, IpCommand, VipAgentParams};
use ringfort::cluster::election::ElectionTiming;
use ringfort::store::Store;
use tokio::sync::watch;

use crate::support::{resume_panic, sh, PgSchema, Sampler};

const VIP: &str = "198.51.100.77";

/// Two namespaces with one end of a veth pair each; dropped = deleted.
struct Hosts {
    ns: [String; 2],
    ifname: [String; 2],
}

impl Hosts {
    fn new() -> Hosts {
        let id = std::process::id() % 100_000;
        let h = Hosts {
            ns: [format!("rf{id}vipa"), format!("rf{id}vipb")],
            ifname: [format!("rf{id}va"), format!("rf{id}vb")],
        };
        for ns in &h.ns {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            sh(&["ip", "netns", "add", ns]);
        }
        sh(&[
            "ip",
            "link",
            "add",
            &h.ifname[0],
            "netns",
            &h.ns[0],
            "type",
            "veth",
            "peer",
            "name",
            &h.ifname[1],
            "netns",
            &h.ns[1],
        ]);
        for i in 0..2 {
            sh(&["ip", "-n", &h.ns[i], "link", "set", &h.ifname[i], "up"]);
        }
        h
    }

    fn has_vip(ns: &str, ifname: &str) -> bool {
        let out = Command::new("ip")
            .args(["-n", ns, "-4", "addr", "show", "dev", ifname])
            .output()
            .expect("ip addr show");
        String::from_utf8_lossy(&out.stdout).contains(&format!("{VIP}/32"))
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Waits until the newest sample of (a has it, b has it) is `want`; how long that took.
async fn wait_sample(
    sampler: &Sampler<(bool, bool)>,
    want: (bool, bool),
    limit: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        if sampler.last() == Some(want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "no sample with (a, b) = {want:?} within {limit:?}; last {:?}",
            sampler.last()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn params(node: &str, priority: u8) -> VipAgentParams {
    VipAgentParams {
        node_id: node.to_owned(),
        vip: VIP.parse().expect("vip"),
        priority,
        // The defaults of [cluster].
        timing: ElectionTiming {
            lease: Duration::from_millis(1500),
            renew: Duration::from_millis(400),
            max_clock_skew: Duration::from_millis(200),
            drop_margin: Duration::from_millis(100),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holder_loses_the_vip_and_two_namespaces_never_share_it() {
    let pg = PgSchema::create("rf_test").await;
    let url = pg.url_at(&pg.hostport);
    let hosts = Hosts::new();
    let res = tokio::spawn(scenario(url, hosts.ns.clone(), hosts.ifname.clone())).await;
    drop(hosts);
    pg.drop().await;
    resume_panic(res);
}

async fn scenario(url: String, ns: [String; 2], ifname: [String; 2]) {
    let store = Store::connect(&url, 4).await.expect("connect");
    store.migrate().await.expect("migrate");
    let sampler = {
        let (ns, ifname) = (ns.clone(), ifname.clone());
        Sampler::start(move || {
            (
                Hosts::has_vip(&ns[0], &ifname[0]),
                Hosts::has_vip(&ns[1], &ifname[1]),
            )
        })
    };

    let agent = |i: usize, node: &str, priority: u8| {
        let (tx, rx) = watch::channel(false);
        let address = IpCommand {
            address: VIP.parse().expect("vip"),
            interface: ifname[i].clone(),
            netns: Some(ns[i].clone()),
        };
        let task = tokio::spawn(run_vip(store.clone(), params(node, priority), address, rx));
        (tx, task)
    };
    // Both start at once; a is preferred (b waits 250 ms more on a free VIP).
    let (_stop_a, task_a) = agent(0, "a", 100);
    let (stop_b, task_b) = agent(1, "b", 50);
    wait_sample(&sampler, (true, false), Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        sampler.last(),
        Some((true, false)),
        "a keeps it while renewing"
    );
    let lease = store.vip_lease(VIP).await.expect("read").expect("row");
    assert_eq!((lease.holder.as_str(), lease.term), ("a", 1));

    // Kill a's agent: no release, no address removal by the agent.
    task_a.abort();
    let _ = task_a.await;
    let killed = Instant::now();
    wait_sample(&sampler, (false, true), Duration::from_secs(5)).await;
    let failover = killed.elapsed();
    assert!(
        failover < Duration::from_millis(2500),
        "failover took {failover:?}"
    );
    let lease = store.vip_lease(VIP).await.expect("read").expect("row");
    assert_eq!((lease.holder.as_str(), lease.term), ("b", 2));

    // b stops gracefully: the address goes and the lease is released at once.
    stop_b.send(true).expect("stop b");
    tokio::time::timeout(Duration::from_secs(3), task_b)
        .await
        .expect("b stops")
        .expect("b task");
    // The agent removed it before returning; the sampler sees it within a sample or two.
    wait_sample(&sampler, (false, false), Duration::from_secs(2)).await;
    let lease = store.vip_lease(VIP).await.expect("read").expect("row");
    assert_eq!(lease.expires_at_ms, 0, "released");
    store.close().await;

    let samples = sampler.finish();
    // Each sample runs `ip` twice; on a busy machine that is tens of milliseconds.
    let max_gap = samples
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or_default();
    assert!(samples.len() >= 50, "sampled only {} times", samples.len());
    let both: Vec<_> = samples.iter().filter(|(_, (a, b))| *a && *b).collect();
    assert!(both.is_empty(), "both namespaces had the VIP at {both:?}");
    eprintln!(
        "failover after kill: {failover:?}; {} samples (largest gap {max_gap:?}), none with both",
        samples.len()
    );
}

/// `ringfort serve` with `[cluster] enabled` on PostgreSQL: the node's heartbeat shows in
/// `ringfort cluster status`, and its VIP agent runs. The VIP names an interface that does
/// not exist (the node runs in the host's own namespace, which the test must not change),
/// so the agent takes the lease, fails to add the address, and hands the VIP back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clustered_node_heartbeats_and_runs_its_vip_agent() {
    let pg = PgSchema::create("rf_test").await;
    let url = pg.url_at(&pg.hostport);
    let res = tokio::task::spawn_blocking(move || {
        let mut node = crate::support::Node::new(crate::support::NodeOptions {
            database_url: url,
            extra: "[cluster]\nenabled = true\nsip_address = \"127.0.0.1:5060\"\n\
                    heartbeat_ms = 200\n\
                    [[cluster.vip]]\naddress = \"198.51.100.78\"\ninterface = \"rfnosuchif0\"\n"
                .into(),
            ..Default::default()
        });
        node.start();
        let deadline = Instant::now() + Duration::from_secs(10);
        let out = loop {
            let out = node.cli_ok(&["cluster", "status"]);
            if out.contains("vip 198.51.100.78\tholder=test1") || Instant::now() > deadline {
                break out;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(
            out.starts_with("node test1\thealthy\theartbeat 0."),
            "{out}\n{}",
            node.log_text()
        );
        assert!(out.contains("\tsip=127.0.0.1:5060\t"), "{out}");
        assert!(
            out.contains("vip 198.51.100.78\tholder=test1\tterm="),
            "{out}"
        );
        assert!(
            node.log_text().contains("cannot add the VIP address"),
            "{}",
            node.log_text()
        );
        node.stop();
    })
    .await;
    pg.drop().await;
    resume_panic(res);
}

/// A binding node "a" holds for `aor`.
fn binding_on_a(aor: &str) -> ringfort::store::Binding {
    ringfort::store::Binding {
        node_id: "a".to_owned(),
        ..crate::store::binding(
            aor,
            &format!("sip:{aor}@192.0.2.10:5060"),
            ringfort::registrar::now_unix() + 600,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_written_by_one_node_reaches_the_other_nodes_cache() {
    let pg = PgSchema::create("rf_test").await;
    let url = pg.url_at(&pg.hostport);
    let res = tokio::spawn(async move {
        let store_a = Store::connect(&url, 2).await.expect("store a");
        store_a.migrate().await.expect("migrate");
        let store_b = Store::connect(&url, 2).await.expect("store b");
        let aor = format!("7{:05}", rand::random::<u16>());
        store_a
            .add_extension(&ringfort::store::Extension {
                number: aor.clone(),
                display_name: String::new(),
                realm: "pbx.example".to_owned(),
                ha1_md5: "0".repeat(32),
                ha1_sha256: "0".repeat(64),
                created_at: 1_700_000_000,
                updated_at: 1_700_000_000,
                routing: ringfort::store::ExtensionRouting::default(),
            })
            .await
            .expect("extension");
        let mut cfg = ringfort::config::Config::default();
        cfg.node.id = ringfort::config::NodeId::new("b").expect("node id");
        let b = std::sync::Arc::new(
            ringfort::registrar::Registrar::load(
                store_b,
                ringfort::registrar::RegistrarConfig::from_config(&cfg),
            )
            .await
            .expect("registrar b"),
        );
        let (stop, stopped) = watch::channel(false);
        let follower = {
            let b = b.clone();
            tokio::spawn(async move { b.follow_other_nodes(stopped).await })
        };
        // Let the LISTEN be in place before node a writes.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let wait = |want: usize| {
            let (b, aor) = (b.clone(), aor.clone());
            async move {
                let deadline = Instant::now() + Duration::from_secs(3);
                while b.lookup(&aor).len() != want {
                    assert!(
                        Instant::now() < deadline,
                        "node b never saw {want} binding(s)"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        store_a
            .replace_bindings(&aor, &[binding_on_a(&aor)])
            .await
            .expect("write");
        store_a
            .announce_bindings("a", &[&aor])
            .await
            .expect("announce");
        wait(1).await;
        // The phone unregisters on node a: gone from b's cache too.
        store_a.replace_bindings(&aor, &[]).await.expect("write");
        store_a
            .announce_bindings("a", &[&aor])
            .await
            .expect("announce");
        wait(0).await;
        let _ = stop.send(true);
        follower.await.expect("follower");
        store_a.close().await;
    })
    .await;
    pg.drop().await;
    resume_panic(res);
}

/// A `ringfort serve` in cluster mode on `pg` (no VIP), announcing its own SIP socket,
/// with extension 2001 (no phone); and the cluster secret it wrote.
async fn clustered_node(pg: &PgSchema) -> (crate::support::Node, String) {
    let url = pg.url_at(&pg.hostport);
    let mut node = crate::support::Node::new(crate::support::NodeOptions {
        database_url: url.clone(),
        extra: "[cluster]\nenabled = true\nsip_address = \"127.0.0.1:SIP_PORT\"\n".into(),
        ..Default::default()
    });
    let text = std::fs::read_to_string(&node.config).expect("config");
    std::fs::write(
        &node.config,
        text.replace("SIP_PORT", &node.port.to_string()),
    )
    .expect("config");
    node.add_extension("2001", "secret-2001");
    node.start();
    let store = Store::connect(&url, 1).await.expect("store");
    let secret = store.cluster_secret("unused").await.expect("secret");
    store.close().await;
    (node, secret)
}

/// Runs `body` (blocking) against a clustered node on a fresh schema, with the cluster
/// secret; then stops the node and drops the schema.
async fn on_clustered_node(body: impl FnOnce(&crate::support::Node, String) + Send + 'static) {
    let pg = PgSchema::create("rf_test").await;
    let (mut node, secret) = clustered_node(&pg).await;
    let res = tokio::task::spawn_blocking(move || {
        body(&node, secret);
        node.stop();
    })
    .await;
    pg.drop().await;
    resume_panic(res);
}

/// Sends a request over UDP from a fresh socket and returns the status of the first final
/// response (provisional ones skipped) within `wait`.
fn final_status(to: std::net::SocketAddr, request: &str, wait: Duration) -> Option<u16> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
    let request = request.replace("LOCAL", &sock.local_addr().ok()?.to_string());
    sock.send_to(request.as_bytes(), to).ok()?;
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; 65535];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(deadline - Instant::now()))
            .ok()?;
        let (n, _) = sock.recv_from(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]);
        let status: u16 = text.split(' ').nth(1)?.parse().ok()?;
        if status >= 200 {
            return Some(status);
        }
    }
    None
}

/// A forwarded INVITE (one node handing a call to another) is taken without a digest
/// challenge only with the cluster secret's signature, and only once: a forged signature
/// and a replay of a genuine one (same Call-ID, new branch, within the time window) get
/// 403; the genuine one is routed (480 here: the number has no phone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_invite_needs_the_cluster_signature_and_is_taken_once() {
    on_clustered_node(|node, secret| {
        let to: std::net::SocketAddr = format!("127.0.0.1:{}", node.port).parse().expect("addr");
        let invite = |branch: &str, call_id: &str, relay: &str| {
            let sdp = "v=0\r\no=n 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                   m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
            format!(
            "INVITE sip:2001@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP LOCAL;branch={branch};rport\r\n\
             Max-Forwards: 69\r\nFrom: <sip:1001@127.0.0.1>;tag=fw1\r\nTo: <sip:2001@127.0.0.1>\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:1001@LOCAL>\r\n\
             X-Ringfort-Relay: {relay}\r\nContent-Type: application/sdp\r\n\
             Content-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        )
        };
        let now = ringfort::registrar::now_unix();
        let call_id = format!("fw-{:x}", rand::random::<u64>());
        let sign = |key: &[u8]| {
            ringfort::cluster::routing::relay_header(key, "othernode", now, &call_id, &["2001"])
        };
        let wait = Duration::from_secs(5);
        let forged = invite("z9hG4bKf1", &call_id, &sign(b"not the cluster secret"));
        assert_eq!(final_status(to, &forged, wait), Some(403), "forged");
        let genuine = invite("z9hG4bKg1", &call_id, &sign(secret.as_bytes()));
        assert_eq!(final_status(to, &genuine, wait), Some(480), "genuine");
        let replay = invite("z9hG4bKg2", &call_id, &sign(secret.as_bytes()));
        assert_eq!(final_status(to, &replay, wait), Some(403), "replay");
        let log = node.log_text();
        assert!(
            log.contains("signature does not match") && log.contains("a replay"),
            "{log}"
        );
    })
    .await;
}

/// The drain tunnel on a real node: an envelope with the cluster's signature makes the node
/// send its message from the named socket to the named address ("out"), or take it as if
/// that address had sent it ("in": the answer goes there); a forged one does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_envelope_is_obeyed_only_with_the_cluster_signature() {
    use ringfort::cluster::tunnel::{wrap, Direction, Envelope};
    on_clustered_node(|node, secret| {
        let sip: std::net::SocketAddr =
            format!("127.0.0.1:{}", node.port).parse().expect("addr");
        let phone = std::net::UdpSocket::bind("127.0.0.1:0").expect("phone socket");
        phone
            .set_read_timeout(Some(Duration::from_millis(1500)))
            .expect("timeout");
        let phone_addr = phone.local_addr().expect("addr");
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("sender socket");
        let options = format!(
            "OPTIONS sip:{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {phone_addr};branch=z9hG4bKtun1;rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:probe@{phone_addr}>;tag=t1\r\nTo: <sip:{sip}>\r\n\
             Call-ID: tunnel-test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        let envelope = |dir, key: &[u8]| {
            let env = Envelope {
                dir,
                node: "othernode".into(),
                vip: sip,
                phone: phone_addr,
                ts: ringfort::registrar::now_unix(),
            };
            wrap(key, &env, options.as_bytes())
        };
        let mut buf = vec![0u8; 65535];
        let mut heard = || {
            phone
                .recv_from(&mut buf)
                .ok()
                .map(|(n, from)| (String::from_utf8_lossy(&buf[..n]).into_owned(), from))
        };
        for dir in [Direction::Out, Direction::In] {
            let forged = envelope(dir, b"not the cluster secret");
            sender.send_to(&forged, sip).expect("send");
            assert_eq!(heard(), None, "{dir:?}: a forged envelope is dropped");
        }
        sender
            .send_to(&envelope(Direction::Out, secret.as_bytes()), sip)
            .expect("send");
        let (got, from) = heard().expect("the node sent the message on");
        assert_eq!(got, options, "as wrapped, without the envelope");
        assert_eq!(from, sip, "from the socket the envelope named");
        sender
            .send_to(&envelope(Direction::In, secret.as_bytes()), sip)
            .expect("send");
        let (got, from) = heard().expect("the node answered the phone");
        assert!(got.starts_with("SIP/2.0 200 OK\r\n"), "{got}");
        assert_eq!(from, sip);
        assert!(
            node.log_text().contains("dropping a tunnelled datagram"),
            "{}",
            node.log_text()
        );
    })
    .await;
}
