//! `ringfort cluster handover` between two real nodes, each in a network namespace the
//! test creates (and removes), on one bridge with a phones' namespace:
//!
//! ```text
//!  [n1] node a 10.79.0.1 ─┐                      VIP 10.79.0.100 (a, then b)
//!  [n2] node b 10.79.0.2 ─┼─ bridge in [sw]
//!  [ph] SIPp   10.79.0.10 ┘
//! ```
//!
//! The nodes reach the test's PostgreSQL through a Unix socket this process forwards to
//! it (the socket is a file, so it crosses network namespaces). A call runs on node a
//! through the VIP; the VIP is handed over to b while the call is up (`ringfort cluster
//! handover --to b`, a fraction of a second); new REGISTERs land on b while the call stays
//! up on a, whose process keeps running. Then the VIP moves back without a named target,
//! and targets that are unknown or down are refused (exit 1) with the VIP left in place.
//!
//! The second test follows the call to its end on a: in-dialog requests and responses
//! sent to the VIP after the move go through b to a, and a's go out through b (the drain
//! tunnel, `cluster::tunnel`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{resume_panic, scenario, sh, tail, wait_for, Node, NodeOptions, PgSchema};

const PASSWORD: &str = "handover-pass";
const VIP: &str = "10.79.0.100";
const PHONE_IP: &str = "10.79.0.10";
const NODE_IPS: [&str; 2] = ["10.79.0.1", "10.79.0.2"];
const SIP_PORT: u16 = 5060;

/// The four namespaces; dropped = deleted (the veths go with them).
struct Lan {
    sw: String,
    hosts: [String; 3],
    ifnames: [String; 3],
}

impl Lan {
    /// `tag` (one letter) keeps the names of tests running at once apart.
    fn new(tag: &str) -> Lan {
        let id = std::process::id() % 100_000;
        let lan = Lan {
            sw: format!("rf{id}{tag}sw"),
            hosts: [
                format!("rf{id}{tag}n1"),
                format!("rf{id}{tag}n2"),
                format!("rf{id}{tag}ph"),
            ],
            ifnames: [
                format!("rf{id}{tag}1"),
                format!("rf{id}{tag}2"),
                format!("rf{id}{tag}3"),
            ],
        };
        for ns in std::iter::once(&lan.sw).chain(&lan.hosts) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        sh(&["ip", "-n", &lan.sw, "link", "add", "br0", "type", "bridge"]);
        sh(&["ip", "-n", &lan.sw, "link", "set", "br0", "up"]);
        let ips = [NODE_IPS[0], NODE_IPS[1], PHONE_IP];
        for (i, ip) in ips.iter().enumerate() {
            let port = format!("{}s", lan.ifnames[i]);
            sh(&[
                "ip",
                "link",
                "add",
                &lan.ifnames[i],
                "netns",
                &lan.hosts[i],
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                &lan.sw,
            ]);
            sh(&["ip", "-n", &lan.sw, "link", "set", &port, "master", "br0"]);
            sh(&["ip", "-n", &lan.sw, "link", "set", &port, "up"]);
            let cidr = format!("{ip}/24");
            sh(&[
                "ip",
                "-n",
                &lan.hosts[i],
                "addr",
                "add",
                &cidr,
                "dev",
                &lan.ifnames[i],
            ]);
            sh(&[
                "ip",
                "-n",
                &lan.hosts[i],
                "link",
                "set",
                &lan.ifnames[i],
                "up",
            ]);
        }
        lan
    }

    fn has_vip(&self, i: usize) -> bool {
        let out = Command::new("ip")
            .args([
                "-n",
                &self.hosts[i],
                "-4",
                "addr",
                "show",
                "dev",
                &self.ifnames[i],
            ])
            .output()
            .expect("ip addr show");
        String::from_utf8_lossy(&out.stdout).contains(&format!("{VIP}/32"))
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in std::iter::once(&self.sw).chain(&self.hosts) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Forwards connections on a Unix socket (`DIR/.s.PGSQL.5432`, where libpq-style clients
/// look) to the test's PostgreSQL over TCP, until the runtime ends.
async fn pg_socket_proxy(dir: &Path, tcp: String) {
    let listener =
        tokio::net::UnixListener::bind(dir.join(".s.PGSQL.5432")).expect("bind pg socket");
    tokio::spawn(async move {
        while let Ok((mut unix, _)) = listener.accept().await {
            let tcp = tcp.clone();
            tokio::spawn(async move {
                if let Ok(mut pg) = tokio::net::TcpStream::connect(&tcp).await {
                    let _ = tokio::io::copy_bidirectional(&mut unix, &mut pg).await;
                }
            });
        }
    });
}

/// A scenario with the node's address (and a longer talk) instead of what the
/// loopback tests expect; written into `dir`.
fn adapted(dir: &Path, name: &str, node_ip: &str, talk_ms: u32) -> PathBuf {
    let text = std::fs::read_to_string(scenario(name)).expect("scenario");
    let text = text
        .replace(r"127\.0\.0\.1", &node_ip.replace('.', r"\."))
        .replace(
            r#"<pause milliseconds="1500"/>"#,
            &format!(r#"<pause milliseconds="{talk_ms}"/>"#),
        )
        // The caller that cancels waits as long before it does.
        .replace(
            r#"<pause milliseconds="500"/>"#,
            &format!(r#"<pause milliseconds="{talk_ms}"/>"#),
        );
    let path = dir.join(format!("ho_{name}"));
    std::fs::write(&path, text).expect("write scenario");
    path
}

/// SIPp in the phones' namespace towards the VIP; bounded by `timeout 60`.
fn sipp(lan: &Lan, work: &Path, scenario: &Path, port: u16, args: &[&str]) -> Child {
    let log = std::fs::File::create(work.join(format!("sipp_{port}.log"))).expect("log");
    let log2 = log.try_clone().expect("log");
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &lan.hosts[2],
            "timeout",
            "60",
            "sipp",
            "-sf",
        ])
        .arg(scenario)
        .args([
            "-i",
            PHONE_IP,
            "-p",
            &port.to_string(),
            "-m",
            "1",
            "-t",
            "u1",
        ])
        .args(["-mp", &(port + 1000).to_string(), "-nostdin"])
        .args(["-timeout", "40s", "-recv_timeout", "15000"])
        .args(args)
        .arg(format!("{VIP}:{SIP_PORT}"))
        .current_dir(work)
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        .spawn()
        .expect("spawn sipp")
}

fn finish(mut child: Child, limit: Duration, what: &str, work: &Path, port: u16) {
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(work.join(format!("sipp_{port}.log"))).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()),
        "{what}: sipp {status:?}\n{}",
        tail(&log, 4000)
    );
}

fn register(lan: &Lan, work: &Path, number: &str, port: u16) {
    let scen = adapted(work, "register.xml", PHONE_IP, 1500);
    let child = sipp(
        lan,
        work,
        &scen,
        port,
        &[
            "-s", number, "-au", number, "-ap", PASSWORD, "-set", "expires", "600",
        ],
    );
    finish(child, Duration::from_secs(20), "register", work, port);
}

/// A call from 100 (SIPp `caller`, a scenario and its pause) to 200 (SIPp `callee`)
/// through the VIP while a holds it; returns (callee, caller) once a lists the call,
/// answered or still ringing as `answered` says.
fn call_through_vip(
    lan: &Lan,
    work: &Path,
    a: &Node,
    callee: (&str, u32),
    caller: (&str, u32),
    answered: bool,
) -> (Child, Child) {
    let uas = sipp(
        lan,
        work,
        &adapted(work, callee.0, NODE_IPS[0], callee.1),
        15200,
        &[],
    );
    std::thread::sleep(Duration::from_millis(300));
    let uac = sipp(
        lan,
        work,
        &adapted(work, caller.0, NODE_IPS[0], caller.1),
        15100,
        &[
            "-s", "200", "-au", "100", "-ap", PASSWORD, "-set", "caller", "100",
        ],
    );
    let what = if answered { "up" } else { "ringing" };
    wait_for(
        &format!("the call {what} on a"),
        Duration::from_secs(10),
        || {
            a.cli_ok(&["calls"])
                .lines()
                .any(|l| l.contains("\tnode=a\t") && l.contains("answered=-") != answered)
                .then_some(())
        },
    );
    (uas, uac)
}

/// Node `id`'s line of `ringfort cluster status`.
fn node_line(status: &str, id: &str) -> Option<String> {
    let prefix = format!("node {id}\t");
    status
        .lines()
        .find(|l| l.starts_with(&prefix))
        .map(str::to_owned)
}

fn node(lan: &Lan, i: usize, id: &str, priority: u8, url: &str) -> Node {
    let mut n = Node::new(NodeOptions {
        database_url: url.to_owned(),
        ip: NODE_IPS[i].into(),
        netns: lan.hosts[i].clone(),
        sip: "tcp_idle_timeout_secs = 30\nt1_ms = 100\nt2_ms = 400".into(),
        extra: format!(
            "[media]\nrtp_port_min = 40000\nrtp_port_max = 40998\n\n\
             [cluster]\nenabled = true\nsip_address = \"{ip}:{SIP_PORT}\"\nheartbeat_ms = 200\n\
             [[cluster.vip]]\naddress = \"{VIP}\"\ninterface = \"{ifname}\"\npriority = {priority}\n",
            ip = NODE_IPS[i],
            ifname = lan.ifnames[i],
        ),
        ..NodeOptions::default()
    });
    // Both nodes answer the VIP on the same port, under their own ids.
    let text = std::fs::read_to_string(&n.config).expect("config");
    let text = text
        .replace("id = \"test1\"", &format!("id = \"{id}\""))
        .replace(
            &format!("{}:{}\"", NODE_IPS[i], n.port),
            &format!("{}:{SIP_PORT}\"", NODE_IPS[i]),
        );
    std::fs::write(&n.config, text).expect("config");
    n.port = SIP_PORT;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handover_moves_the_vip_at_once_and_leaves_the_old_node_running_its_call() {
    run("h", false).await;
}

/// The drain to its end: the call taken through the VIP ends normally on the old holder.
/// The node rang the phones from the VIP, so after the move the callee's BYE reaches the
/// new holder, which passes it to the old one (its dialog tag carries a's mark); a's 200
/// and its BYE to the caller cannot leave from a VIP a no longer has, so they go out
/// through b.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handover_lets_the_call_in_progress_end_normally_on_the_old_node() {
    run("d", true).await;
}

async fn run(tag: &'static str, call_must_end_normally: bool) {
    let schema = PgSchema::create("rf_ho").await;
    let sock_dir = tempfile::tempdir().expect("tempdir");
    pg_socket_proxy(sock_dir.path(), schema.hostport.clone()).await;
    let url = schema.url_by_socket(sock_dir.path());
    let res =
        tokio::task::spawn_blocking(move || scenario_blocking(&url, tag, call_must_end_normally))
            .await;
    schema.drop().await;
    drop(sock_dir);
    resume_panic(res);
}

fn scenario_blocking(url: &str, tag: &str, call_must_end_normally: bool) {
    let lan = Lan::new(tag);
    let work = tempfile::tempdir().expect("tempdir");
    let work = work.path();
    let mut a = node(&lan, 0, "a", 100, url);
    let mut b = node(&lan, 1, "b", 50, url);
    for number in ["100", "200", "300"] {
        a.add_extension(number, PASSWORD);
    }
    a.start();
    b.start();
    wait_for("a holds the VIP", Duration::from_secs(10), || {
        (lan.has_vip(0) && !lan.has_vip(1)).then_some(())
    });
    wait_for("both nodes healthy", Duration::from_secs(10), || {
        let s = a.cli_ok(&["cluster", "status"]);
        (s.contains("node a\thealthy") && s.contains("node b\thealthy")).then_some(())
    });

    // A call through the VIP, on a: 100 calls 200, who hangs up after 6 s of talk.
    register(&lan, work, "200", 15200);
    let (uas, uac) = call_through_vip(
        &lan,
        work,
        &a,
        ("call_uas_bye.xml", 6000),
        ("call_uac_wait_bye.xml", 1500),
        true,
    );

    // Hand the VIP to b while the call is up.
    let started = Instant::now();
    let out = a.cli(&["cluster", "handover", "--to", "b"]);
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "handover failed: {stdout}{}\n--- a\n{}",
        String::from_utf8_lossy(&out.stderr),
        tail(&a.log_text(), 4000)
    );
    assert!(
        stdout.starts_with(&format!(
            "vip {VIP}\tmoved from a (term 1) to b (term 2) in "
        )),
        "{stdout}"
    );
    assert!(took < Duration::from_secs(2), "the CLI took {took:?}");
    eprintln!("handover: {}", stdout.trim());
    assert!(lan.has_vip(1) && !lan.has_vip(0), "b has the VIP, a not");
    // The call is still up on a; new registrations go to b.
    assert!(
        a.cli_ok(&["calls"]).contains("\tnode=a\t"),
        "the call in progress was dropped"
    );
    register(&lan, work, "300", 15300);
    let registered = "registered aor=300";
    assert!(
        b.log_text().contains(registered) && !a.log_text().contains(registered),
        "300 registered on b, not a\n--- b\n{}",
        tail(&b.log_text(), 3000)
    );
    if call_must_end_normally {
        // The drain shows in `cluster status`, from any node: a still runs one call.
        wait_for(
            "a's heartbeat counting its call",
            Duration::from_secs(5),
            || {
                node_line(&b.cli_ok(&["cluster", "status"]), "a")
                    .filter(|l| l.ends_with("\tcalls=1"))
            },
        );
        // The callee hangs up; a ends the caller's leg; both SIPps pass.
        finish(uas, Duration::from_secs(30), "callee", work, 15200);
        finish(uac, Duration::from_secs(30), "caller", work, 15100);
        let cdr = wait_for("a's CDR", Duration::from_secs(15), || {
            a.cli_ok(&["cdr", "--limit", "1"])
                .lines()
                .next()
                .filter(|l| l.contains("\tanswered\t"))
                .map(str::to_owned)
        });
        assert!(
            cdr.contains("hangup=callee") && cdr.contains("node=a"),
            "{cdr}"
        );
        // Both ways went through the tunnel: the BYE in (b to a), a's answers and its BYE
        // to the caller out (a through b).
        assert!(
            b.log_text()
                .contains("passing a message to the node with its dialog (drain)"),
            "{}",
            tail(&b.log_text(), 3000)
        );
        assert!(
            a.log_text()
                .contains("sending through the VIP's holder (drain)"),
            "{}",
            tail(&a.log_text(), 3000)
        );
        wait_for("a drained", Duration::from_secs(5), || {
            node_line(&b.cli_ok(&["cluster", "status"]), "a").filter(|l| l.ends_with("\tcalls=0"))
        });
    } else {
        // Still up on a a while after the move (no node dropped it).
        std::thread::sleep(Duration::from_secs(2));
        assert!(
            a.cli_ok(&["calls"]).contains("\tnode=a\t"),
            "the call in progress was dropped"
        );
        for mut sipp in [uas, uac] {
            let _ = sipp.kill();
            let _ = sipp.wait();
        }
        // Past a's two leases away from the VIP, for the move back below.
        std::thread::sleep(Duration::from_secs(2));
    }
    // Back to a without naming it (the preferred other node; a's two leases away from
    // the VIP are over by now).
    let out = b.cli_ok(&["cluster", "handover", "--vip", VIP]);
    assert!(
        out.starts_with(&format!(
            "vip {VIP}\tmoved from b (term 2) to a (term 3) in "
        )),
        "{out}"
    );
    assert!(lan.has_vip(0) && !lan.has_vip(1), "a has the VIP again");
    if call_must_end_normally {
        cancel_while_ringing_across_a_handover(&lan, work, &a, &b);
        a.stop();
        return;
    }
    // A refused target: unknown, then one that is down; the VIP stays where it is.
    let out = a.cli(&["cluster", "handover", "--to", "nosuchnode"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("node nosuchnode is not in the cluster"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    b.kill();
    std::thread::sleep(Duration::from_millis(800));
    let out = a.cli(&["cluster", "handover", "--to", "b"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("node b is not healthy"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nor to any node: none other is healthy.
    let out = a.cli(&["cluster", "handover"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no healthy node other than its holder a"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(lan.has_vip(0), "a keeps the VIP");
    a.stop();
}

/// A call still ringing on a when the VIP moves to b: the caller's CANCEL carries no tag to
/// route by and b has no INVITE for it, so b asks the other nodes; a has the INVITE,
/// answers 200 and 487 and cancels the ringing callee, all through b.
fn cancel_while_ringing_across_a_handover(lan: &Lan, work: &Path, a: &Node, b: &Node) {
    // b just handed the VIP back: it does not even read the lease for two leases (3 s),
    // so a handover to b before then would wait for it.
    std::thread::sleep(Duration::from_secs(4));
    let (uas, uac) = call_through_vip(
        lan,
        work,
        a,
        ("call_uas_ring.xml", 1500),
        ("call_uac_cancel.xml", 5000),
        false,
    );
    let out = a.cli(&["cluster", "handover", "--to", "b"]);
    assert!(
        out.status.success(),
        "handover failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(lan.has_vip(1) && !lan.has_vip(0), "b has the VIP, a not");
    finish(
        uac,
        Duration::from_secs(30),
        "cancelling caller",
        work,
        15100,
    );
    finish(uas, Duration::from_secs(30), "ringing callee", work, 15200);
    let cdr = wait_for(
        "a's CDR of the cancelled call",
        Duration::from_secs(15),
        || {
            a.cli_ok(&["cdr", "--limit", "1"])
                .lines()
                .next()
                .filter(|l| l.contains("\tcancelled\t"))
                .map(str::to_owned)
        },
    );
    assert!(cdr.contains("node=a"), "{cdr}");
    assert!(
        b.log_text()
            .contains("asking the other nodes whose CANCEL this is (drain)"),
        "{}",
        tail(&b.log_text(), 3000)
    );
}
