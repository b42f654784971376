//! Shared harness for the integration tests: start the real `ringfort` binary on free
//! loopback ports with a temp data dir, run its CLI, drive it with SIPp, and wait for
//! conditions with deadlines. Peers that are missing make tests fail with a clear message.

#![allow(dead_code)]

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ringfort");

/// The SIPp scenarios of this suite.
pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

/// A port free for both UDP and TCP on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let Ok(udp) = UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = udp.local_addr() else { continue };
        if TcpListener::bind(addr).is_ok() {
            return addr.port();
        }
    }
    panic!("no free port on 127.0.0.1");
}

/// Options for a node under test.
#[derive(Clone, Default)]
pub struct NodeOptions {
    /// A `database.url`; empty = the default SQLite file in the data dir.
    pub database_url: String,
    /// Extra lines for `[registrar]`.
    pub registrar: String,
    /// Extra lines for `[sip]`.
    pub sip: String,
    /// Extra sections appended to the config (e.g. `[calls]`, `[media]`).
    pub extra: String,
    /// The address SIP listens on; empty = 127.0.0.1.
    pub ip: String,
    /// A network namespace (made by the test) to run the node in; empty = none.
    pub netns: String,
    /// `[node] id`; empty = "test1".
    pub node_id: String,
    /// The SIP port; 0 = a free one (a cluster's nodes share one, as phones registered
    /// through a floating IP expect the same port from whichever node holds it).
    pub port: u16,
}

/// A `ringfort serve` process with its own config and data dir.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The admin API's port (`[http] listen`, on the node's address).
    pub http_port: u16,
    pub config: PathBuf,
    pub ip: std::net::IpAddr,
    netns: String,
    child: Option<Child>,
    log: PathBuf,
    starts: u32,
}

impl Node {
    /// Writes a config for a fresh node; call [`Node::start`] to run it.
    pub fn new(opts: NodeOptions) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = if opts.port == 0 {
            free_port()
        } else {
            opts.port
        };
        let http_port = free_port();
        let ip: std::net::IpAddr = if opts.ip.is_empty() {
            [127, 0, 0, 1].into()
        } else {
            opts.ip.parse().expect("NodeOptions.ip")
        };
        let config = dir.path().join("ringfort.toml");
        let mut text = format!(
            "[node]\nid = \"{node_id}\"\ndata_dir = \"data\"\n\n\
             [sip]\nudp_listen = [\"{ip}:{port}\"]\ntcp_listen = [\"{ip}:{port}\"]\n\
             {}\n\n\
             [registrar]\nsweep_interval_secs = 1\n{}\n\n\
             [log]\nlevel = \"info,ringfort=debug\"\n\n\
             [http]\nlisten = \"{http_ip}:{http_port}\"\n",
            {
                let mut sip = if opts.sip.is_empty() {
                    "tcp_idle_timeout_secs = 30".to_owned()
                } else {
                    opts.sip.clone()
                };
                // Three signalling shards, more than the CI machine's cores: a call's
                // legs, an MWI subscription and its NOTIFYs, a REGISTER and its commit
                // cross shards in every test, whatever machine runs it.
                if !sip.contains("workers") {
                    sip.push_str("\nworkers = 3");
                }
                sip
            },
            opts.registrar,
            node_id = if opts.node_id.is_empty() {
                "test1"
            } else {
                &opts.node_id
            },
            http_ip = if ip.is_ipv6() {
                format!("[{ip}]")
            } else {
                ip.to_string()
            },
        );
        if !opts.database_url.is_empty() {
            text.push_str(&format!("\n[database]\nurl = \"{}\"\n", opts.database_url));
        }
        if !opts.extra.is_empty() {
            text.push_str(&format!("\n{}\n", opts.extra));
        }
        std::fs::write(&config, text).expect("write config");
        let log = dir.path().join("node.log");
        Node {
            dir,
            port,
            http_port,
            config,
            ip,
            netns: opts.netns,
            child: None,
            log,
            starts: 0,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.port))
    }

    /// Where the admin API listens.
    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.http_port))
    }

    /// Runs a CLI subcommand against this node's config (in the node's namespace, where
    /// its database is reachable).
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = if self.netns.is_empty() {
            Command::new(BIN)
        } else {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &self.netns, BIN]);
            c
        };
        cmd.arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run ringfort")
    }

    /// Runs a CLI subcommand that must succeed; returns its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "ringfort {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `ringfort serve` and waits until it answers OPTIONS over UDP. A port taken
    /// between choosing and binding it (tests run in parallel) means a new port and a retry.
    pub fn start(&mut self) {
        for _ in 0..5 {
            if self.try_start() {
                return;
            }
            let new_port = free_port();
            let new_http = free_port();
            let text = std::fs::read_to_string(&self.config).expect("read config");
            let text = text
                .replace(&format!(":{}\"", self.port), &format!(":{new_port}\""))
                .replace(&format!(":{}\"", self.http_port), &format!(":{new_http}\""));
            std::fs::write(&self.config, text).expect("write config");
            self.port = new_port;
            self.http_port = new_http;
        }
        panic!(
            "could not find a free port for the node:\n{}",
            self.log_text()
        );
    }

    /// One start attempt; false when the SIP port was taken.
    fn try_start(&mut self) -> bool {
        assert!(self.child.is_none(), "node already running");
        let log_start = self.log_text().len();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut cmd = if self.netns.is_empty() {
            Command::new(BIN)
        } else {
            // `ip netns exec` execs the binary, so the child's pid is the node's.
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &self.netns, BIN]);
            c
        };
        let child = cmd
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn ringfort serve");
        self.child = Some(child);
        self.starts += 1;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                let log = self.log_text();
                if log[log_start..].contains("Address already in use") {
                    return false;
                }
                panic!("ringfort serve exited early with {status}:\n{log}");
            }
            if self.netns.is_empty() {
                if options_ping(self.addr(), Duration::from_millis(200)).is_some() {
                    return true;
                }
            } else {
                // Our sockets cannot reach into the namespace: the log says when it is up.
                if self.log_text()[log_start..].contains("ringfort node up") {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("ringfort did not come up within 20 s:\n{}", self.log_text());
    }

    /// Stops the node with SIGTERM and checks it exited cleanly.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                assert!(
                    status.success(),
                    "ringfort exited with {status}:\n{}",
                    self.log_text()
                );
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("ringfort did not stop within 10 s:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.assert_no_panic();
    }

    /// Kills the node without warning (a crash).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn assert_no_panic(&self) {
        let log = self.log_text();
        assert!(!log.contains("panicked"), "the node panicked:\n{log}");
    }

    /// Adds an extension through the CLI.
    pub fn add_extension(&self, number: &str, password: &str) {
        self.cli_ok(&[
            "extension",
            "add",
            number,
            "--password",
            password,
            "--name",
            "Test",
        ]);
    }

    /// Adds lines to the config's `[http]` section (before the node starts).
    pub fn set_http(&mut self, lines: &str) {
        let text = std::fs::read_to_string(&self.config).expect("read config");
        let text = text.replacen("[http]\n", &format!("[http]\n{lines}"), 1);
        std::fs::write(&self.config, text).expect("write config");
    }

    /// The `extension list` line of `number`.
    pub fn extension_line(&self, number: &str) -> String {
        self.cli_ok(&["extension", "list"])
            .lines()
            .find(|l| l.split('\t').next() == Some(number))
            .unwrap_or_default()
            .to_owned()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends OPTIONS over UDP and returns the status line of the answer.
pub fn options_ping(to: SocketAddr, wait: Duration) -> Option<String> {
    let sock = UdpSocket::bind("127.0.0.1:0").ok()?;
    let local = sock.local_addr().ok()?;
    let branch = format!("z9hG4bK{:x}", rand::random::<u64>());
    let msg = format!(
        "OPTIONS sip:{to} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@{local}>;tag=p1\r\nTo: <sip:{to}>\r\n\
         Call-ID: probe-{branch}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send_to(msg.as_bytes(), to).ok()?;
    sock.set_read_timeout(Some(wait)).ok()?;
    let mut buf = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf[..n]);
    text.lines().next().map(str::to_owned)
}

/// Sends raw bytes over UDP and returns the first answer, if any comes within `wait`.
pub fn udp_exchange(to: SocketAddr, data: &[u8], wait: Duration) -> Option<String> {
    let sock = UdpSocket::bind("127.0.0.1:0").ok()?;
    sock.send_to(data, to).ok()?;
    sock.set_read_timeout(Some(wait)).ok()?;
    let mut buf = vec![0u8; 65535];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Which SIP transport SIPp uses.
#[derive(Clone, Copy, Debug)]
pub enum SippTransport {
    Udp,
    Tcp,
}

/// A SIPp run: `sipp -sf SCENARIO ... 127.0.0.1:PORT`, one call, bounded in time.
pub struct Sipp {
    pub scenario: PathBuf,
    pub transport: SippTransport,
    pub user: String,
    pub password: String,
    pub vars: Vec<(String, String)>,
    pub calls: u32,
    /// An injection file (`-inf`) and the call rate per second.
    pub inf: Option<PathBuf>,
    pub rate: u32,
    /// Our SIP port (default: a free one).
    pub local_port: Option<u16>,
    /// `-s` (the `[service]` keyword); default: the auth user.
    pub service: Option<String>,
    /// More command-line arguments.
    pub args: Vec<String>,
}

/// A SIPp running in the background (e.g. a UAS waiting for a call).
pub struct SippChild {
    child: Option<Child>,
    _work: tempfile::TempDir,
    err_file: PathBuf,
    out_file: PathBuf,
    scenario: PathBuf,
}

impl SippChild {
    /// Waits for SIPp to end (at most `timeout`); returns (success, its logs).
    pub fn wait(&mut self, timeout: Duration) -> (bool, String) {
        let deadline = Instant::now() + timeout;
        let mut status = None;
        if let Some(child) = self.child.as_mut() {
            loop {
                if let Ok(Some(s)) = child.try_wait() {
                    status = Some(s);
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.child = None;
        let errors = std::fs::read_to_string(&self.err_file).unwrap_or_default();
        let out = std::fs::read_to_string(&self.out_file).unwrap_or_default();
        let text = format!(
            "sipp {} exit {:?}\n--- output\n{}\n--- errors\n{}",
            self.scenario.display(),
            status.and_then(|s| s.code()),
            tail(&out, 3000),
            tail(&errors, 4000)
        );
        (status.is_some_and(|s| s.success()), text)
    }

    /// Waits and fails the test (with SIPp's and the node's logs) unless SIPp passed.
    pub fn expect_pass(&mut self, node: &Node) {
        let (ok, text) = self.wait(Duration::from_secs(60));
        assert!(ok, "{text}\n--- node log\n{}", tail(&node.log_text(), 8000));
    }
}

impl Drop for SippChild {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Sipp {
    pub fn new(scenario_name: &str, transport: SippTransport) -> Sipp {
        Sipp {
            scenario: scenario(scenario_name),
            transport,
            user: String::new(),
            password: String::new(),
            vars: Vec::new(),
            calls: 1,
            inf: None,
            rate: 10,
            local_port: None,
            service: None,
            args: Vec::new(),
        }
    }

    pub fn port(mut self, port: u16) -> Sipp {
        self.local_port = Some(port);
        self
    }

    pub fn service(mut self, service: &str) -> Sipp {
        self.service = Some(service.to_owned());
        self
    }

    pub fn arg(mut self, arg: &str) -> Sipp {
        self.args.push(arg.to_owned());
        self
    }

    fn check_installed() {
        assert!(
            Command::new("sipp").arg("-v").output().is_ok(),
            "SIPp is not installed: run scripts/test.sh (it installs sip-tester), or apt-get install sip-tester"
        );
    }

    /// Starts SIPp in the background against `node`.
    pub fn spawn(&self, node: &Node) -> SippChild {
        Self::check_installed();
        let work = tempfile::tempdir().expect("tempdir");
        let err_file = work.path().join("errors.log");
        let out_file = work.path().join("out.log");
        let mut cmd = self.command(node, &err_file, work.path());
        let out = std::fs::File::create(&out_file).expect("sipp log");
        let out2 = out.try_clone().expect("sipp log");
        cmd.stdout(Stdio::from(out)).stderr(Stdio::from(out2));
        let child = cmd.spawn().expect("spawn sipp");
        SippChild {
            child: Some(child),
            _work: work,
            err_file,
            out_file,
            scenario: self.scenario.clone(),
        }
    }

    fn command(&self, node: &Node, err_file: &Path, work: &Path) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.arg("60").arg("sipp");
        cmd.arg("-sf").arg(&self.scenario);
        let port = self.local_port.unwrap_or_else(free_port).to_string();
        cmd.args([
            "-i",
            "127.0.0.1",
            "-p",
            &port,
            "-m",
            &self.calls.to_string(),
        ]);
        cmd.args(["-timeout", "30s", "-nostdin", "-trace_err", "-error_file"]);
        cmd.arg(err_file);
        cmd.args(["-recv_timeout", "10000", "-max_socket", "10"]);
        cmd.args(["-mp", &free_even_udp_port().to_string()]);
        match self.transport {
            SippTransport::Udp => cmd.args(["-t", "u1"]),
            SippTransport::Tcp => cmd.args(["-t", "t1"]),
        };
        if !self.user.is_empty() {
            let service = self.service.clone().unwrap_or_else(|| self.user.clone());
            cmd.args(["-s", &service, "-au", &self.user, "-ap", &self.password]);
        } else if let Some(service) = &self.service {
            cmd.args(["-s", service]);
        }
        for (k, v) in &self.vars {
            cmd.args(["-set", k, v]);
        }
        if let Some(inf) = &self.inf {
            cmd.arg("-inf").arg(inf);
        }
        cmd.args(&self.args);
        cmd.args(["-r", &self.rate.to_string()]);
        cmd.arg(node.addr().to_string());
        cmd.current_dir(work);
        cmd
    }

    pub fn auth(mut self, user: &str, password: &str) -> Sipp {
        self.user = user.to_owned();
        self.password = password.to_owned();
        self
    }

    pub fn var(mut self, name: &str, value: &str) -> Sipp {
        self.vars.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Runs SIPp against `node`; returns (success, SIPp's output and error log).
    pub fn run(&self, node: &Node) -> (bool, String) {
        Self::check_installed();
        let work = tempfile::tempdir().expect("tempdir");
        let err_file = work.path().join("errors.log");
        let mut cmd = self.command(node, &err_file, work.path());
        let out = cmd.output().expect("run sipp");
        let errors = std::fs::read_to_string(&err_file).unwrap_or_default();
        let text = format!(
            "sipp exit {:?}\n--- stdout\n{}\n--- stderr\n{}\n--- errors\n{}",
            out.status.code(),
            tail(&String::from_utf8_lossy(&out.stdout), 3000),
            String::from_utf8_lossy(&out.stderr),
            tail(&errors, 4000)
        );
        (out.status.success(), text)
    }

    /// Runs SIPp and fails the test, with SIPp's and the node's logs, unless it passed.
    pub fn expect_pass(&self, node: &Node) {
        let (ok, text) = self.run(node);
        assert!(
            ok,
            "SIPp scenario {} ({:?}) failed:\n{text}\n--- node log\n{}",
            self.scenario.display(),
            self.transport,
            tail(&node.log_text(), 6000)
        );
    }
}

pub fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// An even UDP port free now, with the next one free too (SIPp's media ports).
pub fn free_even_udp_port() -> u16 {
    for _ in 0..200 {
        let Ok(s) = UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(a) = s.local_addr() else { continue };
        let p = a.port() & !1;
        if !(1024..65534).contains(&p) {
            continue;
        }
        drop(s);
        let ok = (0..4).all(|i| UdpSocket::bind(("127.0.0.1", p + i)).is_ok());
        if ok {
            return p;
        }
    }
    panic!("no free even UDP port pair");
}

/// Polls `f` until it returns Some or the deadline passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (20 s at most) until the SIPp scenario `sipp` runs touched `<flag>.<step>`, as
/// scenarios do with `<exec command="touch [$flag].N"/>` where a test must act; on a
/// timeout, fails with SIPp's report and the node's log.
pub fn wait_flag(sipp: &mut SippChild, node: &Node, flag: &Path, step: &str) {
    let file = flag.with_extension(step);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !file.exists() {
        if std::time::Instant::now() > deadline {
            let (_, text) = sipp.wait(Duration::from_secs(1));
            panic!(
                "SIPp never reached step {step}:\n{text}\n--- node log\n{}",
                node.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `text` to a new file in `dir` and returns its path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).expect("create");
    f.write_all(text.as_bytes()).expect("write");
    p
}

/// The PostgreSQL the tests use (`RINGFORT_TEST_PG_URL` overrides).
pub fn pg_url() -> String {
    std::env::var("RINGFORT_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// What to tell someone whose PostgreSQL is not reachable.
pub fn pg_help(url: &str, err: &dyn std::fmt::Display) -> String {
    format!(
        "\n\nPostgreSQL is unreachable at {url}: {err}\n\
         These tests need it. Start and prepare it (idempotent) with:\n\
         \n    scripts/pg-test-setup.sh   (as root)\n\n\
         or point RINGFORT_TEST_PG_URL at another server.\n"
    )
}

/// A SIPp caller (`caller` with `password`) of `number` who, once answered, talks (a
/// 700 Hz tone, PCMU) and hangs up after `talk`: what leaves a voicemail message.
pub fn talking_caller(
    node: &Node,
    caller: &str,
    password: &str,
    number: &str,
    talk: Duration,
) -> Sipp {
    let ms = talk.as_millis();
    let pcap = node.dir.path().join(format!("speech-{ms}.pcap"));
    if !pcap.exists() {
        // Two seconds more tone than talk: the caller never falls silent before the BYE.
        let samples = (ms as usize + 2000) * 8;
        let tone: Vec<i16> = (0..samples)
            .map(|i| (8000.0 * (std::f64::consts::TAU * 700.0 * i as f64 / 8000.0).sin()) as i16)
            .collect();
        pcmu_pcap(&pcap, &tone);
    }
    let text = std::fs::read_to_string(scenario("call_uac_rtp.xml"))
        .expect("scenario")
        .replace(
            "/usr/share/sip-tester/g711a.pcap",
            &pcap.display().to_string(),
        )
        .replace(
            "<pause milliseconds=\"2500\"/>",
            &format!("<pause milliseconds=\"{ms}\"/>"),
        );
    let path = node.dir.path().join(format!("call_uac_talk_{ms}.xml"));
    std::fs::write(&path, text).expect("write");
    let mut s = Sipp::new("call_uac_rtp.xml", SippTransport::Udp)
        .service(number)
        .auth(caller, password)
        .var("caller", caller);
    s.scenario = path;
    s
}

/// A fresh schema on the test PostgreSQL for one test: nodes reach it by a URL whose
/// `search_path` is the schema; [`PgSchema::drop`] removes it.
pub struct PgSchema {
    admin: sqlx::PgConnection,
    pub name: String,
    /// `USER` or `USER:PASSWORD` of the base URL.
    pub userinfo: String,
    /// `HOST:PORT` of the server.
    pub hostport: String,
    pub db: String,
}

impl PgSchema {
    /// Creates `PREFIX_<random>` on the server of [`pg_url`] (a `postgres://USER@HOST/DB`).
    pub async fn create(prefix: &str) -> PgSchema {
        use sqlx::{Connection, Executor};
        let base = pg_url();
        let mut admin = sqlx::PgConnection::connect(&base)
            .await
            .unwrap_or_else(|e| panic!("{}", pg_help(&base, &e)));
        let name = format!("{prefix}_{:016x}", rand::random::<u64>());
        admin
            .execute(sqlx::raw_sql(&format!("CREATE SCHEMA {name}")))
            .await
            .expect("create schema");
        let (userinfo, rest) = base
            .trim_start_matches("postgres://")
            .split_once('@')
            .expect("RINGFORT_TEST_PG_URL as postgres://USER@HOST:PORT/DB");
        let (hostport, db) = rest.split_once('/').expect("a /DB in the URL");
        PgSchema {
            admin,
            name,
            userinfo: userinfo.to_owned(),
            hostport: hostport.to_owned(),
            db: db.split('?').next().unwrap_or(db).to_owned(),
        }
    }

    /// The URL of the schema through TCP at `hostport` (the server's, or a forwarder's).
    pub fn url_at(&self, hostport: &str) -> String {
        format!(
            "postgres://{}@{hostport}/{}?options=-c%20search_path%3D{}",
            self.userinfo, self.db, self.name
        )
    }

    /// The URL of the schema through a Unix socket `DIR/.s.PGSQL.5432`.
    pub fn url_by_socket(&self, dir: &Path) -> String {
        format!(
            "postgres://{}@localhost/{}?host={}&options=-c%20search_path%3D{}",
            self.userinfo,
            self.db,
            dir.display(),
            self.name
        )
    }

    pub async fn drop(mut self) {
        use sqlx::Executor;
        self.admin
            .execute(sqlx::raw_sql(&format!("DROP SCHEMA {} CASCADE", self.name)))
            .await
            .expect("drop schema");
    }
}

/// Fails the test with the panic of a task it ran (after its cleanup ran).
pub fn resume_panic(res: Result<(), tokio::task::JoinError>) {
    if let Err(e) = res {
        match e.try_into_panic() {
            Ok(p) => std::panic::resume_unwind(p),
            Err(e) => panic!("test task: {e}"),
        }
    }
}

/// A pcap (Ethernet/IPv4/UDP) of PCMU RTP, 20 ms apart, carrying `pcm` (8 kHz): what
/// SIPp's `play_pcap_audio` replays.
pub fn pcmu_pcap(path: &std::path::Path, pcm: &[i16]) {
    use ringfort::media::codec::g711;
    let mut out = Vec::new();
    for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    // Version 2.4 is two u16s: the second word above wrote them as (2, 4) little-endian.
    for (i, frame) in pcm.chunks_exact(160).enumerate() {
        let mut rtp = vec![0x80, if i == 0 { 0x80 } else { 0 }];
        rtp.extend_from_slice(&(i as u16).to_be_bytes());
        rtp.extend_from_slice(&((i * 160) as u32).to_be_bytes());
        rtp.extend_from_slice(&0x5eed_u32.to_be_bytes());
        let mut payload = [0u8; 160];
        g711::encode(g711::Law::Ulaw, frame, &mut payload);
        rtp.extend_from_slice(&payload);
        let udp_len = 8 + rtp.len();
        let ip_len = 20 + udp_len;
        let mut pkt = vec![0u8; 12];
        pkt.extend_from_slice(&[0x08, 0x00, 0x45, 0, (ip_len >> 8) as u8, ip_len as u8]);
        pkt.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
        pkt.extend_from_slice(&[0x9c, 0x40, 0x9c, 0x42]);
        pkt.extend_from_slice(&[(udp_len >> 8) as u8, udp_len as u8, 0, 0]);
        pkt.extend_from_slice(&rtp);
        let usec = i as u32 * 20_000;
        for v in [
            usec / 1_000_000,
            usec % 1_000_000,
            pkt.len() as u32,
            pkt.len() as u32,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&pkt);
    }
    std::fs::write(path, out).expect("write pcap");
}

/// Runs a command that must succeed (network namespaces, addresses, iptables: the tests
/// that build networks need root, iproute2 and iptables).
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed (needs root, iproute2 and iptables): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Samples `probe` on a thread every 5 ms until [`Sampler::finish`]: for what a test must
/// find true at every moment (a floating IP never in two places), not only at the end.
pub struct Sampler<T> {
    samples: std::sync::Arc<std::sync::Mutex<Vec<(Duration, T)>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<T: Clone + Send + 'static> Sampler<T> {
    pub fn start(mut probe: impl FnMut() -> T + Send + 'static) -> Sampler<T> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let thread = {
            let (samples, stop) = (samples.clone(), stop.clone());
            std::thread::spawn(move || {
                let t0 = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let v = probe();
                    if let Ok(mut s) = samples.lock() {
                        s.push((t0.elapsed(), v));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        Sampler {
            samples,
            stop,
            thread: Some(thread),
        }
    }

    /// The newest sample.
    pub fn last(&self) -> Option<T> {
        self.samples
            .lock()
            .ok()
            .and_then(|s| s.last().map(|(_, v)| v.clone()))
    }

    /// Stops sampling; every sample, with its time since the start.
    pub fn finish(mut self) -> Vec<(Duration, T)> {
        self.halt();
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn halt(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl<T> Drop for Sampler<T> {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
