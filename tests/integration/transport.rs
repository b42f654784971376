//! Transport behaviour of a running node: RFC 5626 CRLF keepalives on TCP, answers on the
//! same connection, idle timeout and the connection limit.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::{Node, NodeOptions};

fn options(local: &str, n: u32) -> String {
    format!(
        "OPTIONS sip:ringfort SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bKtcp{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:t@{local}>;tag=t{n}\r\nTo: <sip:ringfort>\r\n\
         Call-ID: tcp-{n}-{local}\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Reads until `want` bytes arrived or the connection closed; returns what came.
fn read_some(s: &mut TcpStream, want: usize, wait: Duration) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < want && Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => continue,
        }
    }
    out
}

/// True when the node closed the connection (read returns end of stream).
fn closed_by_peer(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 64];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => continue,
        }
    }
    false
}

#[test]
fn tcp_keepalive_ping_gets_pong_and_answers_use_the_connection() {
    let mut node = Node::new(NodeOptions::default());
    node.start();
    let mut s = TcpStream::connect(node.addr()).expect("connect");
    let local = s.local_addr().expect("local").to_string();
    s.write_all(b"\r\n\r\n").expect("ping");
    assert_eq!(
        read_some(&mut s, 2, Duration::from_secs(3)),
        b"\r\n",
        "RFC 5626 pong"
    );
    // Two requests in one write, the second cut across two writes: both answered here.
    let (a, b) = (options(&local, 1), options(&local, 2));
    let mut bytes = a.into_bytes();
    bytes.extend_from_slice(&b.as_bytes()[..40]);
    s.write_all(&bytes).expect("write");
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(&b.as_bytes()[40..]).expect("write");
    let got =
        String::from_utf8_lossy(&read_some(&mut s, 10_000, Duration::from_secs(3))).into_owned();
    assert_eq!(got.matches("SIP/2.0 200 OK").count(), 2, "{got}");
    assert!(
        got.contains("CSeq: 1 OPTIONS") && got.contains("CSeq: 2 OPTIONS"),
        "{got}"
    );
    node.stop();
}

#[test]
fn idle_tcp_connections_are_closed() {
    let mut node = Node::new(NodeOptions {
        sip: "tcp_idle_timeout_secs = 1".into(),
        ..NodeOptions::default()
    });
    node.start();
    let mut s = TcpStream::connect(node.addr()).expect("connect");
    assert!(
        closed_by_peer(&mut s, Duration::from_secs(5)),
        "idle connection kept open"
    );
    node.stop();
}

#[test]
fn connections_over_the_limit_are_refused() {
    let mut node = Node::new(NodeOptions {
        sip: "tcp_max_connections = 2".into(),
        ..NodeOptions::default()
    });
    node.start();
    let mut first = TcpStream::connect(node.addr()).expect("connect");
    let _second = TcpStream::connect(node.addr()).expect("connect");
    std::thread::sleep(Duration::from_millis(200));
    let mut third = TcpStream::connect(node.addr()).expect("connect");
    assert!(
        closed_by_peer(&mut third, Duration::from_secs(3)),
        "third connection accepted"
    );
    // The first still works.
    let local = first.local_addr().expect("local").to_string();
    first
        .write_all(options(&local, 1).as_bytes())
        .expect("write");
    let got = read_some(&mut first, 20, Duration::from_secs(3));
    assert!(
        got.starts_with(b"SIP/2.0 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    node.stop();
}

#[test]
fn oversized_tcp_message_closes_the_connection() {
    let mut node = Node::new(NodeOptions {
        sip: "max_message_bytes = 2048".into(),
        ..NodeOptions::default()
    });
    node.start();
    let mut s = TcpStream::connect(node.addr()).expect("connect");
    let local = s.local_addr().expect("local").to_string();
    let big = options(&local, 1).replace(
        "Content-Length: 0",
        &format!("X-Pad: {}\r\nContent-Length: 0", "a".repeat(4000)),
    );
    let _ = s.write_all(big.as_bytes());
    assert!(
        closed_by_peer(&mut s, Duration::from_secs(3)),
        "oversized message accepted"
    );
    assert!(node.is_running());
    node.stop();
}
