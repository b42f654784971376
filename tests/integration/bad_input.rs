//! Bad input never panics or stalls the node: random and mutated datagrams and TCP streams,
//! then a real REGISTER must still succeed. Bounded in count and time; seeded, so a
//! failure can be replayed (the seed is printed).

use std::io::Write as _;
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::{options_ping, Node, NodeOptions, Sipp, SippTransport};

const DATAGRAMS: usize = 10_000;
const STREAMS: usize = 400;

fn seeds() -> Vec<Vec<u8>> {
    let register = "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKfz1;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:1001@127.0.0.1>;tag=a1\r\nTo: <sip:1001@127.0.0.1>\r\nCall-ID: fuzz-1\r\n\
CSeq: 1 REGISTER\r\nContact: <sip:1001@127.0.0.1:5999>;expires=60, *\r\nExpires: 3600\r\n\
Authorization: Digest username=\"1001\", realm=\"ringfort\", nonce=\"1.2.3\", uri=\"sip:x\", response=\"00\", qop=auth, nc=00000001, cnonce=\"c\"\r\n\
Content-Length: 0\r\n\r\n";
    let invite = "INVITE sip:1002@127.0.0.1 SIP/2.0\r\nv: SIP/2.0/TCP [::1]:5999;branch=z9hG4bKfz2\r\n\
Max-Forwards: 70\r\nf: \"A \\\"q\\\"\" <sip:1001@127.0.0.1>;tag=a2\r\nt: sip:1002@127.0.0.1\r\ni: fuzz-2\r\n\
CSeq: 7 INVITE\r\nm: <sip:1001@127.0.0.1:5999;transport=tcp>\r\nRequire: 100rel, timer\r\n\
c: application/sdp\r\nl: 38\r\n\r\nv=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
    let response = "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKnone\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: fuzz-3\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    let options = "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKfz4\r\n\
From: <sip:x@y>;tag=3\r\nTo: <sip:127.0.0.1>\r\nCall-ID: fuzz-4\r\nCSeq: 2 OPTIONS\r\nMax-Forwards: 0\r\n\r\n";
    let ack = "ACK sip:1002@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKfz2\r\n\
From: <sip:1001@127.0.0.1>;tag=a2\r\nTo: <sip:1002@127.0.0.1>;tag=b\r\nCall-ID: fuzz-2\r\nCSeq: 7 ACK\r\nContent-Length: 0\r\n\r\n";
    let cancel = ack.replace("ACK", "CANCEL");
    vec![
        register.into(),
        invite.into(),
        response.into(),
        options.into(),
        ack.into(),
        cancel.into_bytes(),
    ]
}

const TOKENS: &[&str] = &[
    "\r\n",
    "\r\n\r\n",
    ":",
    ";",
    ",",
    "<",
    ">",
    "\"",
    "\\",
    "%",
    "%0",
    "=",
    " ",
    "\t",
    "\r\n ",
    "SIP/2.0",
    "sip:",
    "z9hG4bK",
    "Content-Length: 99999999999",
    "l: -1",
    "CSeq: 4294967296 REGISTER",
    "Via: ",
    "To: ",
    "Contact: *",
    "Expires: 99999999999999",
    "[::",
    "]:",
    "\0",
    "\u{7f}",
    "\u{fffd}",
];

fn mutate(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    if rng.gen_ratio(1, 6) {
        let len = rng.gen_range(0..1500);
        return (0..len).map(|_| rng.gen()).collect();
    }
    let mut m = seeds[rng.gen_range(0..seeds.len())].clone();
    for _ in 0..rng.gen_range(1..8) {
        if m.is_empty() {
            break;
        }
        let at = rng.gen_range(0..m.len());
        match rng.gen_range(0..7) {
            0 => m[at] = rng.gen(),
            1 => m.truncate(at),
            2 => {
                let t = TOKENS[rng.gen_range(0..TOKENS.len())].as_bytes();
                m.splice(at..at, t.iter().copied());
            }
            3 => {
                let end = (at + rng.gen_range(1..40)).min(m.len());
                m.drain(at..end);
            }
            4 => {
                let end = (at + rng.gen_range(1..80)).min(m.len());
                let chunk = m[at..end].to_vec();
                m.splice(at..at, chunk);
            }
            5 => m[at] = m[at].to_ascii_lowercase(),
            _ => m.retain(|b| *b != b'\r'),
        }
    }
    m
}

#[test]
fn random_and_mutated_input_never_breaks_the_node() {
    let mut node = Node::new(NodeOptions::default());
    node.add_extension("1001", "s3cret-pass");
    node.start();
    let seed: u64 = std::env::var("RINGFORT_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("bad-input seed: {seed} (replay with RINGFORT_FUZZ_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let seeds = seeds();
    let started = Instant::now();
    let budget = Duration::from_secs(90);

    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_nonblocking(true).expect("nonblocking");
    let mut drain = vec![0u8; 65535];
    for i in 0..DATAGRAMS {
        let data = mutate(&mut rng, &seeds);
        let _ = sock.send_to(&data, node.addr());
        while sock.recv_from(&mut drain).is_ok() {}
        // Paced so the kernel's socket buffers, not the node, are not what drops them.
        if i % 200 == 199 {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            started.elapsed() < budget,
            "bad-input test over its time budget"
        );
    }
    for _ in 0..STREAMS {
        let Ok(mut s) = TcpStream::connect(node.addr()) else {
            panic!(
                "TCP connect failed: the node stopped accepting:\n{}",
                node.log_text()
            );
        };
        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
        for _ in 0..rng.gen_range(1..6) {
            let data = mutate(&mut rng, &seeds);
            // Split writes so the framer sees messages cut at random places.
            let cut = rng.gen_range(0..=data.len());
            let _ = s.write_all(&data[..cut]);
            let _ = s.write_all(&data[cut..]);
        }
        drop(s);
        assert!(
            started.elapsed() < budget,
            "bad-input test over its time budget"
        );
    }
    assert!(node.is_running(), "node died:\n{}", node.log_text());
    assert!(
        options_ping(node.addr(), Duration::from_secs(2)).is_some(),
        "node stopped answering OPTIONS"
    );
    for transport in [SippTransport::Udp, SippTransport::Tcp] {
        Sipp::new("register.xml", transport)
            .auth("1001", "s3cret-pass")
            .var("expires", "600")
            .expect_pass(&node);
    }
    node.stop();
}
