//! The registrar against the real binary, driven by SIPp over UDP and TCP, plus details
//! (challenge shape, SHA-256) checked with a small self-written client.

use std::net::UdpSocket;
use std::time::Duration;

use ringfort::sip::digest::{Algorithm, Credentials};
use ringfort::sip::message::{self, HeaderName, SipMessage};
use sqlx::{Connection, Executor};

use crate::support::{Node, NodeOptions, Sipp, SippTransport};

const PASSWORD: &str = "s3cret-pass";

fn node_with(number: &str, opts: NodeOptions) -> Node {
    let mut node = Node::new(opts);
    node.add_extension(number, PASSWORD);
    node.start();
    node
}

fn register_and_unregister(transport: SippTransport, number: &str) {
    let mut node = node_with(number, NodeOptions::default());
    Sipp::new("register.xml", transport)
        .auth(number, PASSWORD)
        .var("expires", "600")
        .expect_pass(&node);
    let line = node.extension_line(number);
    let proto = match transport {
        SippTransport::Udp => "udp",
        SippTransport::Tcp => "tcp",
    };
    assert!(
        line.contains(&format!("({proto} from 127.0.0.1:")),
        "binding listed with its transport and source: {line}"
    );
    assert!(
        line.to_ascii_lowercase()
            .contains(&format!("transport={proto}")),
        "{line}"
    );
    Sipp::new("unregister.xml", transport)
        .auth(number, PASSWORD)
        .expect_pass(&node);
    let line = node.extension_line(number);
    assert!(line.ends_with("not registered"), "{line}");
    node.stop();
}

#[test]
fn register_and_unregister_over_udp() {
    register_and_unregister(SippTransport::Udp, "1001");
}

#[test]
fn register_and_unregister_over_tcp() {
    register_and_unregister(SippTransport::Tcp, "1002");
}

#[test]
fn wrong_password_and_unknown_user_get_403() {
    let mut node = node_with("1001", NodeOptions::default());
    for transport in [SippTransport::Udp, SippTransport::Tcp] {
        Sipp::new("register_forbidden.xml", transport)
            .auth("1001", "not-the-password")
            .var("expires", "600")
            .expect_pass(&node);
        Sipp::new("register_forbidden.xml", transport)
            .auth("7777", "whatever-pass")
            .var("expires", "600")
            .expect_pass(&node);
    }
    assert!(node.extension_line("1001").ends_with("not registered"));
    node.stop();
}

#[test]
fn too_short_expiry_gets_423_with_min_expires() {
    let mut node = node_with("1001", NodeOptions::default());
    for transport in [SippTransport::Udp, SippTransport::Tcp] {
        Sipp::new("register_brief.xml", transport)
            .auth("1001", PASSWORD)
            .var("expires", "10")
            .expect_pass(&node);
    }
    assert!(node.extension_line("1001").ends_with("not registered"));
    node.stop();
}

/// Registers `number` through `node` and restarts it after a crash (kill -9): the binding
/// must come back from the store.
fn binding_survives_crash(mut node: Node, number: &str) {
    Sipp::new("register_fixed.xml", SippTransport::Udp)
        .auth(number, PASSWORD)
        .var("expires", "3600")
        .expect_pass(&node);
    node.kill();
    node.start();
    Sipp::new("query.xml", SippTransport::Tcp)
        .auth(number, PASSWORD)
        .expect_pass(&node);
    let line = node.extension_line(number);
    assert!(line.contains("sip:1001@192.0.2.55:5070"), "{line}");
    node.stop();
}

#[test]
fn binding_survives_a_crash_on_sqlite() {
    binding_survives_crash(node_with("1001", NodeOptions::default()), "1001");
}

#[test]
fn binding_survives_a_crash_on_postgres() {
    let base = crate::support::pg_url();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let schema = format!("rf_node_{:016x}", rand::random::<u64>());
    rt.block_on(async {
        let mut c = sqlx::PgConnection::connect(&base)
            .await
            .unwrap_or_else(|e| panic!("{}", crate::support::pg_help(&base, &e)));
        c.execute(sqlx::raw_sql(&format!("CREATE SCHEMA {schema}")))
            .await
            .expect("create schema");
    });
    let url = format!("{base}?options=-c%20search_path%3D{schema}");
    let node = node_with(
        "1001",
        NodeOptions {
            database_url: url,
            ..NodeOptions::default()
        },
    );
    binding_survives_crash(node, "1001");
    rt.block_on(async {
        let mut c = sqlx::PgConnection::connect(&base).await.expect("pg");
        c.execute(sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE")))
            .await
            .expect("drop schema");
    });
}

/// A REGISTER from our own client, for details SIPp cannot check.
fn register_request(
    node: &Node,
    sock: &UdpSocket,
    user: &str,
    cseq: u32,
    auth: Option<&str>,
) -> String {
    let local = sock.local_addr().expect("local");
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!(
        "REGISTER sip:{to} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{cseq}x{rnd:x};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{user}@{to}>;tag=f{cseq}\r\nTo: <sip:{user}@{to}>\r\n\
         Call-ID: detail-{user}-{local}\r\nCSeq: {cseq} REGISTER\r\n\
         Contact: <sip:{user}@{local}>\r\nExpires: 300\r\n{auth}Content-Length: 0\r\n\r\n",
        to = node.addr(),
        rnd = rand::random::<u32>()
    )
}

fn exchange(node: &Node, sock: &UdpSocket, text: &str) -> message::Response {
    sock.send_to(text.as_bytes(), node.addr()).expect("send");
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = vec![0u8; 65535];
    let (n, _) = sock.recv_from(&mut buf).expect("an answer");
    match message::parse(&buf[..n]) {
        Ok(SipMessage::Response(r)) => r,
        other => panic!("not a response: {other:?}"),
    }
}

/// The challenge with its nonce blanked, so two challenges can be compared.
fn challenge_shape(resp: &message::Response) -> Vec<String> {
    resp.headers
        .get_all(&HeaderName::WwwAuthenticate)
        .map(|v| {
            v.split(", ")
                .map(|p| {
                    if p.starts_with("nonce=") {
                        "nonce=*"
                    } else {
                        p
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect()
}

#[test]
fn unknown_user_gets_the_same_challenge_as_a_known_one() {
    let mut node = node_with(
        "1001",
        NodeOptions {
            registrar: "algorithms = [\"MD5\", \"SHA-256\"]".into(),
            ..NodeOptions::default()
        },
    );
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let known = exchange(
        &node,
        &sock,
        &register_request(&node, &sock, "1001", 1, None),
    );
    let unknown = exchange(
        &node,
        &sock,
        &register_request(&node, &sock, "9999", 1, None),
    );
    assert_eq!(known.status, 401);
    assert_eq!(unknown.status, 401);
    assert_eq!(known.reason, unknown.reason);
    assert_eq!(challenge_shape(&known), challenge_shape(&unknown));
    assert_eq!(challenge_shape(&known).len(), 2, "MD5 and SHA-256 offered");
    let names = |r: &message::Response| {
        r.headers
            .iter()
            .map(|h| h.name.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&known), names(&unknown), "same headers, same order");
    node.stop();
}

fn answer(challenge: &str, user: &str, password: &str, uri: &str, nc: u32) -> String {
    let field = |name: &str| {
        challenge
            .split(", ")
            .find_map(|p| {
                p.trim_start_matches("Digest ")
                    .strip_prefix(&format!("{name}="))
            })
            .map(|v| v.trim_matches('"').to_owned())
            .unwrap_or_default()
    };
    let realm = field("realm");
    let nonce = field("nonce");
    let alg = Algorithm::parse(&field("algorithm")).expect("algorithm");
    let mut c = Credentials {
        username: user.into(),
        realm: realm.clone(),
        nonce: nonce.clone(),
        uri: uri.into(),
        response: String::new(),
        algorithm: Some(alg.name().into()),
        cnonce: Some("0a4f113b".into()),
        qop: Some("auth".into()),
        nc: Some(format!("{nc:08x}")),
        opaque: None,
    };
    let ha1 = alg.ha1(user, &realm, password);
    c.response = c
        .expected_response(alg, &ha1, "REGISTER")
        .expect("response");
    format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{}\", algorithm={}, cnonce=\"0a4f113b\", qop=auth, nc={:08x}",
        c.response,
        alg.name(),
        nc
    )
}

/// Our own UDP phone, for the details SIPp cannot check: each `register` is the next CSeq
/// of one registration Call-ID.
struct Phone<'a> {
    node: &'a Node,
    sock: UdpSocket,
    user: &'static str,
    cseq: u32,
    /// A Contact other than the socket's own address (a phone behind NAT).
    contact: Option<&'static str>,
}

impl<'a> Phone<'a> {
    fn new(node: &'a Node, user: &'static str) -> Phone<'a> {
        Phone {
            node,
            sock: UdpSocket::bind("127.0.0.1:0").expect("bind"),
            user,
            cseq: 0,
            contact: None,
        }
    }

    fn register(&mut self, auth: Option<&str>) -> message::Response {
        self.cseq += 1;
        let mut text = register_request(self.node, &self.sock, self.user, self.cseq, auth);
        if let Some(contact) = self.contact {
            let local = self.sock.local_addr().expect("local");
            text = text.replace(
                &format!("Contact: <sip:{}@{local}>", self.user),
                &format!("Contact: <{contact}>"),
            );
        }
        exchange(self.node, &self.sock, &text)
    }

    /// The Authorization value answering `challenge` with nonce count `nc`.
    fn answer(&self, challenge: &str, nc: u32) -> String {
        let uri = format!("sip:{}", self.node.addr());
        answer(challenge, self.user, PASSWORD, &uri, nc)
    }
}

fn challenges(resp: &message::Response) -> Vec<String> {
    resp.headers
        .get_all(&HeaderName::WwwAuthenticate)
        .map(str::to_owned)
        .collect()
}

#[test]
fn sha256_digest_registers_and_replayed_nonce_count_is_refused() {
    let mut node = node_with(
        "1001",
        NodeOptions {
            registrar: "algorithms = [\"SHA-256\"]".into(),
            ..NodeOptions::default()
        },
    );
    let mut phone = Phone::new(&node, "1001");
    let offered = challenges(&phone.register(None));
    assert_eq!(offered.len(), 1);
    assert!(offered[0].contains("algorithm=SHA-256"), "{}", offered[0]);
    let auth = phone.answer(&offered[0], 1);
    let ok = phone.register(Some(&auth));
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.headers.list(&HeaderName::Contact).count(), 1);
    // The same nonce count again is a replay: a fresh challenge, not a registration.
    assert_eq!(phone.register(Some(&auth)).status, 401);
    // A correct next count on the same nonce works.
    let next = phone.answer(&offered[0], 2);
    assert_eq!(phone.register(Some(&next)).status, 200);
    node.stop();
}

#[test]
fn expired_bindings_are_swept_from_the_store() {
    let mut node = node_with(
        "1001",
        NodeOptions {
            registrar: "min_expires = 1".into(),
            ..NodeOptions::default()
        },
    );
    Sipp::new("register.xml", SippTransport::Udp)
        .auth("1001", PASSWORD)
        .var("expires", "2")
        .expect_pass(&node);
    let db = node.dir.path().join("data/ringfort.db");
    let rows = || {
        let rt = tokio::runtime::Runtime::new().expect("rt");
        rt.block_on(async {
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
                .await
                .expect("open sqlite");
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM bindings")
                .fetch_one(&mut c)
                .await
                .expect("count");
            n
        })
    };
    assert_eq!(rows(), 1);
    crate::support::wait_for(
        "the sweeper to remove the binding",
        Duration::from_secs(10),
        || (rows() == 0).then_some(()),
    );
    assert!(node.log_text().contains("expired bindings removed"));
    node.stop();
}

#[test]
fn many_phones_registering_at_once_are_all_stored() {
    // 300 users at 300/s: REGISTERs overlap, so their bindings are committed in batches.
    const USERS: u32 = 300;
    let mut node = Node::new(NodeOptions::default());
    let mut csv = String::new();
    let mut inf = String::from("SEQUENTIAL\n");
    for i in 0..USERS {
        let user = format!("u{}", 200_000 + i);
        csv.push_str(&format!("{user},pw-{user}\n"));
        inf.push_str(&format!(
            "{user};x;[authentication username={user} password=pw-{user}]\n"
        ));
    }
    let csv_path = crate::support::write_file(node.dir.path(), "users.csv", &csv);
    node.cli_ok(&["extension", "import", csv_path.to_str().expect("utf8")]);
    let inf_path = crate::support::write_file(node.dir.path(), "users.inf", &inf);
    node.start();
    let mut sipp = Sipp::new("register_many.xml", SippTransport::Udp);
    sipp.inf = Some(inf_path);
    sipp.calls = USERS;
    sipp.rate = USERS;
    sipp.expect_pass(&node);
    let list = node.cli_ok(&["extension", "list"]);
    let registered = list
        .lines()
        .filter(|l| !l.ends_with("not registered"))
        .count();
    assert_eq!(registered, USERS as usize, "{list}");
    // And they are in the store, not only in memory: they survive a crash.
    node.kill();
    node.start();
    let list = node.cli_ok(&["extension", "list"]);
    assert_eq!(
        list.lines()
            .filter(|l| !l.ends_with("not registered"))
            .count(),
        USERS as usize
    );
    node.stop();
}

#[test]
fn expired_nonce_gets_a_stale_challenge() {
    let mut node = node_with(
        "1001",
        NodeOptions {
            registrar: "nonce_lifetime_secs = 10".into(),
            ..NodeOptions::default()
        },
    );
    let mut phone = Phone::new(&node, "1001");
    let first = challenges(&phone.register(None));
    assert!(!first[0].contains("stale"), "{}", first[0]);
    std::thread::sleep(Duration::from_secs(11));
    let late = phone.answer(&first[0], 1);
    let resp = phone.register(Some(&late));
    assert_eq!(resp.status, 401);
    let fresh = challenges(&resp);
    assert!(fresh[0].contains("stale=true"), "{}", fresh[0]);
    let ok = phone.answer(&fresh[0], 1);
    assert_eq!(phone.register(Some(&ok)).status, 200);
    node.stop();
}

#[test]
fn phones_behind_nat_get_udp_keepalives() {
    let mut node = node_with(
        "1001",
        NodeOptions {
            registrar: "nat_keepalive_secs = 1".into(),
            ..NodeOptions::default()
        },
    );
    let mut phone = Phone::new(&node, "1001");
    // The Contact names a private address the node cannot reach: the phone is behind NAT.
    phone.contact = Some("sip:1001@192.168.7.20:5062");
    let offered = challenges(&phone.register(None));
    let auth = phone.answer(&offered[0], 1);
    assert_eq!(phone.register(Some(&auth)).status, 200);
    phone
        .sock
        .set_read_timeout(Some(Duration::from_secs(4)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    let (n, from) = phone
        .sock
        .recv_from(&mut buf)
        .expect("a keepalive within 4 s");
    assert_eq!(&buf[..n], b"\r\n\r\n");
    assert_eq!(
        from,
        node.addr(),
        "sent from the socket the phone registered to"
    );
    node.stop();
}
