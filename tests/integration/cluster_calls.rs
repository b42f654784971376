//! A three-node cluster for real, in network namespaces the test creates (and removes):
//!
//! ```text
//!  [db] PostgreSQL 10.89.0.2     [n1] 10.89.0.11   [n2] 10.89.0.12   [n3] 10.89.0.13
//!                 \                   |                 |                 /
//!                  '---------------- [sw] bridge ----------------------- '
//!                                     |
//!                          [ph] phones 10.89.0.21, .22
//!  VIP1 10.89.0.100: n1 (100), n2 (50), n3 (30)      VIP2 10.89.0.101: n2 (100), n3 (30)
//! ```
//!
//! The nodes are `ringfort serve` processes on a PostgreSQL of their own (started in the
//! `db` namespace for this test), baresip phones register through the floating IPs. The
//! test checks that a call between phones whose flows are held by different nodes is
//! forwarded node to node (audio both ways, one CDR); that after `kill -9` of a VIP holder
//! another node takes the VIP, answers OPTIONS and REGISTER on it, still knows every
//! registration, and rings a phone that registered through the dead node, from the VIP;
//! and that a holder cut off from PostgreSQL drops its VIPs before another node takes
//! them. A sampler reads the addresses of every node namespace all along: no sample may
//! ever show a VIP in two of them.

use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::audio::{CALLEE_HZ, CALLER_HZ};
use crate::baresip::{Baresip, PhoneSetup};
use crate::support::{sh, wait_for, Node, NodeOptions, Sampler};

const PASSWORD: &str = "cluster-test-pass";
const DB_IP: &str = "10.89.0.2";
const NODE_IPS: [&str; 3] = ["10.89.0.11", "10.89.0.12", "10.89.0.13"];
const PHONE_IPS: [&str; 2] = ["10.89.0.21", "10.89.0.22"];
const VIPS: [&str; 2] = ["10.89.0.100", "10.89.0.101"];
const SIP_PORT: u16 = 5060;
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The namespaces on one bridge; dropped = deleted.
struct Lan {
    /// The switch's namespace (holds the bridge).
    sw: String,
    /// db, n1, n2, n3, ph: (namespace, its interface).
    hosts: Vec<(String, String)>,
}

impl Lan {
    fn new() -> Lan {
        let id = std::process::id() % 100_000;
        let sw = format!("rf{id}sw");
        let names = ["db", "n1", "n2", "n3", "ph"];
        let lan = Lan {
            sw: sw.clone(),
            hosts: names
                .iter()
                .map(|n| (format!("rf{id}{n}"), format!("rf{id}{n}e")))
                .collect(),
        };
        for ns in std::iter::once(&lan.sw).chain(lan.hosts.iter().map(|(ns, _)| ns)) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        sh(&["ip", "-n", &sw, "link", "add", "br0", "type", "bridge"]);
        sh(&["ip", "-n", &sw, "link", "set", "br0", "up"]);
        let ips: [&[&str]; 5] = [
            &[DB_IP],
            &[NODE_IPS[0]],
            &[NODE_IPS[1]],
            &[NODE_IPS[2]],
            &PHONE_IPS,
        ];
        for (i, (ns, ifname)) in lan.hosts.iter().enumerate() {
            let port = format!("rf{id}p{i}");
            sh(&[
                "ip", "link", "add", ifname, "netns", ns, "type", "veth", "peer", "name", &port,
                "netns", &sw,
            ]);
            sh(&["ip", "-n", &sw, "link", "set", &port, "master", "br0"]);
            sh(&["ip", "-n", &sw, "link", "set", &port, "up"]);
            for ip in ips[i] {
                sh(&[
                    "ip",
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{ip}/24"),
                    "dev",
                    ifname,
                ]);
            }
            sh(&["ip", "-n", ns, "link", "set", ifname, "up"]);
        }
        lan
    }

    fn ns(&self, host: usize) -> &str {
        &self.hosts[host].0
    }

    fn ifname(&self, host: usize) -> &str {
        &self.hosts[host].1
    }

    /// The node namespaces (hosts 1-3) and interfaces, for the sampler.
    fn nodes(&self) -> Vec<(String, String)> {
        self.hosts[1..4].to_vec()
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in std::iter::once(&self.sw).chain(self.hosts.iter().map(|(ns, _)| ns)) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// A PostgreSQL server of the test's own, in the `db` namespace (the machine's server
/// listens on the root namespace's loopback, out of the nodes' reach).
struct Postgres {
    dir: tempfile::TempDir,
    child: Child,
}

impl Postgres {
    fn start(ns: &str) -> Postgres {
        let dir = tempfile::tempdir().expect("tempdir");
        sh(&[
            "chown",
            "postgres:postgres",
            &dir.path().display().to_string(),
        ]);
        let data = dir.path().join("data");
        let init = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{PG_BIN}/initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .output()
            .unwrap_or_else(|e| panic!("initdb (the test needs PostgreSQL 15): {e}"));
        assert!(
            init.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        // The nodes connect over the test's network, with trust as the machine's own does.
        let hba = data.join("pg_hba.conf");
        let mut rules = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        rules.push_str("host all postgres 10.89.0.0/24 trust\n");
        std::fs::write(&hba, rules).expect("pg_hba.conf");
        // setpriv execs postgres in place: the child's pid is the postmaster's.
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "setpriv"])
            .args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
            .arg(format!("{PG_BIN}/postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-c", &format!("listen_addresses={DB_IP}")])
            .args([
                "-c",
                &format!("unix_socket_directories={}", dir.path().display()),
            ])
            .args(["-c", "fsync=off", "-c", "max_connections=200"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                File::create(dir.path().join("postgres.log")).expect("pg log"),
            ))
            .spawn()
            .expect("start postgres");
        let pg = Postgres { dir, child };
        wait_for(
            "PostgreSQL in its namespace",
            Duration::from_secs(20),
            || {
                Command::new("ip")
                    .args(["netns", "exec", ns, "pg_isready", "-q", "-h", DB_IP])
                    .status()
                    .ok()
                    .filter(|s| s.success())
            },
        );
        pg
    }

    fn url() -> String {
        format!("postgres://postgres@{DB_IP}:5432/postgres")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown, the backends go with the postmaster.
        let _ = Command::new("kill")
            .args(["-QUIT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.dir.path();
    }
}

/// Per VIP, the node indexes that have it.
type Holders = [Vec<usize>; 2];

fn holders_now(nodes: &[(String, String)]) -> Holders {
    let mut held = [Vec::new(), Vec::new()];
    for (i, (ns, ifname)) in nodes.iter().enumerate() {
        let Ok(out) = Command::new("ip")
            .args(["-n", ns, "-4", "addr", "show", "dev", ifname])
            .output()
        else {
            continue;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        for (v, vip) in VIPS.iter().enumerate() {
            if text.contains(&format!("{vip}/32")) {
                held[v].push(i);
            }
        }
    }
    held
}

/// Waits until VIP `vip` is on node `node` alone; how long that took.
fn wait_holder(sampler: &Sampler<Holders>, vip: usize, node: usize, limit: Duration) -> Duration {
    let start = Instant::now();
    wait_for(
        &format!("VIP {} on node n{} alone", VIPS[vip], node + 1),
        limit,
        || {
            sampler
                .last()
                .filter(|h| h[vip] == [node])
                .map(|_| start.elapsed())
        },
    )
}

/// A UDP socket bound inside namespace `ns` (made on a thread that entered it; a socket
/// stays in the namespace it was made in), for probes the test sends as a phone would.
fn udp_socket_in(ns: &str, bind: SocketAddr) -> UdpSocket {
    let path = Path::new("/var/run/netns").join(ns);
    std::thread::spawn(move || {
        let f = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // SAFETY: setns only changes this short-lived thread's network namespace; the
        // descriptor is a valid open namespace file for the whole call.
        let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        UdpSocket::bind(bind).expect("bind in the namespace")
    })
    .join()
    .expect("namespace thread")
}

/// Sends OPTIONS from `sock` to `to`; the answer's status line and where it came from.
fn options_from(sock: &UdpSocket, to: SocketAddr) -> Option<(String, SocketAddr)> {
    let local = sock.local_addr().ok()?;
    let branch = format!("z9hG4bK{:016x}", rand::random::<u64>());
    let msg = format!(
        "OPTIONS sip:{to} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@{local}>;tag=p1\r\nTo: <sip:{to}>\r\n\
         Call-ID: {branch}@probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    sock.send_to(msg.as_bytes(), to).ok()?;
    let mut buf = [0u8; 4096];
    let (n, from) = sock.recv_from(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    Some((text.lines().next()?.to_owned(), from))
}

/// Every node's dialplan: extensions dialled as they are, and 2000 rings 1002 and 1003
/// together (a ring group whose phones may sit on one other node).
const PLAN: &str = "[defaults]\ncontext = \"internal\"\n\n[context.internal]\n\n\
                    [[context.internal.route]]\nmatch = \"_1XXX\"\nsteps = [{ dial = \"${EXTEN}\" }]\n\n\
                    [[context.internal.route]]\nmatch = \"2000\"\nsteps = [{ group = \"pair\" }]\n\n\
                    [group.pair]\nmembers = [\"1002\", \"1003\"]\nstrategy = \"ringall\"\ntimeout = 20\n";

fn node_config(lan: &Lan, n: usize) -> String {
    // n1 may hold VIP1 only; n2 prefers VIP2 and backs VIP1 up; n3 backs both up.
    let vips: &[(usize, u8)] = match n {
        0 => &[(0, 100)],
        1 => &[(1, 100), (0, 50)],
        _ => &[(0, 30), (1, 30)],
    };
    let mut text = format!(
        "[cluster]\nenabled = true\nsip_address = \"{ip}:{SIP_PORT}\"\n\
         media_address = \"{ip}\"\nheartbeat_ms = 300\n",
        ip = NODE_IPS[n]
    );
    for (v, priority) in vips {
        text.push_str(&format!(
            "[[cluster.vip]]\naddress = \"{}\"\ninterface = \"{}\"\npriority = {priority}\n",
            VIPS[*v],
            lan.ifname(n + 1)
        ));
    }
    text.push_str("[media]\nrtp_port_min = 42000\nrtp_port_max = 42998\n");
    text
}

/// A baresip phone in the phones' namespace at (`PHONE_IPS[ip]`, `port`), registering
/// through floating IP `vip`.
fn phone(dir: &Path, lan: &Lan, number: &str, vip: usize, at: (usize, u16), hz: u32) -> Baresip {
    let (ip, port) = at;
    let setup = PhoneSetup {
        number,
        password: PASSWORD,
        registrar: SocketAddr::new(VIPS[vip].parse().expect("vip"), SIP_PORT),
        ip: PHONE_IPS[ip],
        sip_port: port,
        tone_hz: hz,
        netns: Some(lan.ns(4)),
        codecs: "PCMU",
    };
    Baresip::new(dir, &setup)
}

/// The CDRs (tab-separated lines) of calls from `caller` to `callee`.
fn cdrs(node: &Node, caller: &str, callee: &str) -> Vec<String> {
    node.cli_ok(&["cdr", "--limit", "50"])
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            f.get(1) == Some(&caller) && f.get(2) == Some(&callee)
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn three_nodes_forward_calls_survive_a_holder_kill_and_never_share_a_vip() {
    let lan = Lan::new();
    let _pg = Postgres::start(lan.ns(0));
    let mut nodes: Vec<Node> = (0..3)
        .map(|n| {
            Node::new(NodeOptions {
                ip: NODE_IPS[n].into(),
                netns: lan.ns(n + 1).into(),
                node_id: format!("n{}", n + 1),
                port: SIP_PORT,
                database_url: Postgres::url(),
                extra: node_config(&lan, n),
                ..NodeOptions::default()
            })
        })
        .collect();
    for node in &nodes {
        let dir = node.dir.path().join("dialplans");
        std::fs::create_dir_all(&dir).expect("dialplans folder");
        std::fs::write(dir.join("plan.toml"), PLAN).expect("dialplan");
    }
    let sampler = {
        let nodes = lan.nodes();
        Sampler::start(move || holders_now(&nodes))
    };
    // One at a time: the first applies the migrations, and takes VIP1 before n2 can.
    nodes[0].start();
    wait_holder(&sampler, 0, 0, Duration::from_secs(10));
    for n in ["1001", "1002", "1003"] {
        nodes[0].add_extension(n, PASSWORD);
    }
    nodes[1].start();
    wait_holder(&sampler, 1, 1, Duration::from_secs(10));
    nodes[2].start();
    let status = nodes[2].cli_ok(&["cluster", "status"]);
    for id in ["n1", "n2", "n3"] {
        assert!(status.contains(id), "{status}");
    }

    // A call between phones whose flows are held by different nodes: 1001 registered
    // through VIP1 (n1), 1002 through VIP2 (n2). n1 forwards the INVITE to n2, which
    // rings 1002 from VIP2.
    let work = nodes[0].dir.path().join("phones");
    let mut a = phone(&work.join("a"), &lan, "1001", 0, (0, 5070), CALLER_HZ);
    let mut b = phone(&work.join("b"), &lan, "1002", 1, (1, 5080), CALLEE_HZ);
    b.start(&[], Duration::from_secs(120));
    b.wait_registered();
    a.start(&["/dial 1002".to_owned()], Duration::from_secs(120));
    a.wait_registered();
    a.wait_call_ended(Duration::from_secs(25));
    b.wait_call_ended(Duration::from_secs(5));
    a.received()
        .assert_tone("1001 calling across nodes", CALLEE_HZ, CALLER_HZ);
    b.received()
        .assert_tone("1002 called across nodes", CALLER_HZ, CALLEE_HZ);
    assert!(
        nodes[1]
            .log_text()
            .contains("call forwarded by another node"),
        "n2 rang 1002 for n1"
    );
    let one = wait_for("the CDR", Duration::from_secs(10), || {
        Some(cdrs(&nodes[2], "1001", "1002")).filter(|c| !c.is_empty())
    });
    assert_eq!(one.len(), 1, "one CDR for the forwarded call: {one:?}");
    assert!(one[0].contains("answered"), "{one:?}");

    // A ring group whose two phones are both on n2 (1002 and 1003 through VIP2): n1
    // sends n2 one INVITE for both numbers (the forks of its leg share one Call-ID), and
    // n2 rings the two phones; the caller hears whichever answers first.
    let mut g = phone(&work.join("g"), &lan, "1003", 1, (1, 5110), CALLEE_HZ);
    g.start(&[], Duration::from_secs(60));
    g.wait_registered();
    let mut a2 = phone(&work.join("a2"), &lan, "1001", 0, (0, 5120), CALLER_HZ);
    a2.start(&["/dial 2000".to_owned()], Duration::from_secs(60));
    a2.wait_registered();
    a2.wait_call_ended(Duration::from_secs(25));
    a2.received()
        .assert_tone("1001 calling the ring group", CALLEE_HZ, CALLER_HZ);
    let forwarded: Vec<String> = nodes[1]
        .log_text()
        .lines()
        .filter(|l| l.contains("call forwarded by another node"))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        forwarded.len(),
        2,
        "one forwarded INVITE per call: {forwarded:?}"
    );
    assert!(
        forwarded[1].contains("forks=2"),
        "both phones rang: {forwarded:?}"
    );
    let group = wait_for("the group call's CDR", Duration::from_secs(10), || {
        Some(cdrs(&nodes[2], "1001", "2000")).filter(|c| !c.is_empty())
    });
    assert_eq!(group.len(), 1, "{group:?}");
    assert!(group[0].contains("answered"), "{group:?}");
    a2.stop();
    g.stop();

    // kill -9 of VIP1's holder: n2 (priority 50 over n3's 30) takes VIP1.
    nodes[0].kill();
    let took = wait_holder(&sampler, 0, 1, Duration::from_secs(10));
    eprintln!("VIP1 moved from the killed n1 to n2 in {took:?}");
    // n2 answers OPTIONS on VIP1, from VIP1.
    let probe = udp_socket_in(
        lan.ns(4),
        SocketAddr::new(PHONE_IPS[0].parse().expect("ip"), 0),
    );
    let vip1 = SocketAddr::new(VIPS[0].parse().expect("vip"), SIP_PORT);
    let (status, from) = wait_for("OPTIONS answered on VIP1", Duration::from_secs(5), || {
        options_from(&probe, vip1)
    });
    assert!(status.starts_with("SIP/2.0 200"), "{status}");
    assert_eq!(from, vip1, "the answer comes from the VIP");
    // Every registration is still there, 1001's too (it registered through the dead node
    // and has not registered since).
    let listed = nodes[1].cli_ok(&["extension", "list"]);
    for n in ["1001", "1002"] {
        let line = nodes[1].extension_line(n);
        assert!(
            line.contains("sip:"),
            "{n} still registered: {line}\n{listed}"
        );
    }
    // REGISTER on VIP1: a new phone registers through it.
    let mut c = phone(&work.join("c"), &lan, "1003", 0, (1, 5090), CALLER_HZ);
    c.start(&[], Duration::from_secs(60));
    c.wait_registered();
    // A new call to 1001, from a fresh 1002 phone through VIP2: n2 holds both VIPs now
    // and rings 1001 from VIP1, where it registered.
    let _ = std::fs::remove_dir_all(work.join("a").join("bs1001").join("rec"));
    let _ = std::fs::create_dir_all(work.join("a").join("bs1001").join("rec"));
    b.stop();
    let mut b2 = phone(&work.join("b2"), &lan, "1002", 1, (1, 5100), CALLEE_HZ);
    b2.start(&["/dial 1001".to_owned()], Duration::from_secs(60));
    b2.wait_registered();
    b2.wait_call_ended(Duration::from_secs(25));
    wait_for("1001's second call to end", Duration::from_secs(5), || {
        (a.log_text().matches("terminated").count() >= 2).then_some(())
    });
    // 1001 sends its 440 Hz tone, 1002 its 1000 Hz one, in both calls.
    a.received()
        .assert_tone("1001 called after the failover", CALLEE_HZ, CALLER_HZ);
    b2.received()
        .assert_tone("1002 calling after the failover", CALLER_HZ, CALLEE_HZ);

    // n2, holding both VIPs, loses PostgreSQL: it must drop them before n3 takes them.
    let n2 = lan.ns(2).to_owned();
    sh(&[
        "ip", "netns", "exec", &n2, "iptables", "-A", "OUTPUT", "-d", DB_IP, "-j", "DROP",
    ]);
    sh(&[
        "ip", "netns", "exec", &n2, "iptables", "-A", "INPUT", "-s", DB_IP, "-j", "DROP",
    ]);
    let took = wait_holder(&sampler, 0, 2, Duration::from_secs(10));
    wait_holder(&sampler, 1, 2, Duration::from_secs(10));
    eprintln!("n3 took the VIPs {took:?} after n2 lost the database");

    let samples = sampler.finish();
    assert!(
        samples.len() > 100,
        "the sampler ran: {} samples",
        samples.len()
    );
    for (at, held) in &samples {
        for (v, on) in held.iter().enumerate() {
            assert!(
                on.len() <= 1,
                "at {at:?} VIP {} was on nodes {on:?} at once",
                VIPS[v]
            );
        }
    }
    a.stop();
    b2.stop();
    c.stop();
    for n in &mut nodes {
        n.kill();
    }
    for n in &nodes[1..] {
        n.assert_no_panic();
    }
}
