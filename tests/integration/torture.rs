//! RFC 4475 torture messages sent to a running node over UDP: every request gets the
//! answer the RFC (and this node's current features) call for, responses are never
//! answered, and the node survives all of them. The parser-level corpus test, on the exact
//! bytes, lives beside the parser in `src/sip/message.rs`.

use std::net::UdpSocket;
use std::path::Path;
use std::time::Duration;

use crate::support::{options_ping, Node, NodeOptions};

struct Case {
    name: String,
    class: String,
    expect: Option<u16>,
}

fn manifest() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rfc4475");
    let text = std::fs::read_to_string(dir.join("MANIFEST")).expect("MANIFEST");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Case {
                name: f[0].to_owned(),
                class: f[1].to_owned(),
                expect: f[3].strip_prefix("expect=").and_then(|c| c.parse().ok()),
            }
        })
        .collect()
}

/// Adds `;rport` to the first via-parm so the answer comes back to our socket instead of
/// the example.com host the message names (RFC 3581), and makes its branch unique with
/// `tag`: several corpus messages share a branch and sent-by, which makes them one
/// transaction (RFC 3261 17.2.3), answered where the first came from. Nothing else changes.
/// The via-parm ends at the first comma of the header or at its end, folded lines included.
fn with_rport(data: &[u8], tag: &str) -> Vec<u8> {
    let mut pos = 0;
    while pos < data.len() {
        let end = data[pos..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(data.len(), |i| pos + i);
        let line = &data[pos..end];
        if line.is_empty() {
            break;
        }
        let name: Vec<u8> = line
            .iter()
            .take_while(|b| **b != b':')
            .map(u8::to_ascii_lowercase)
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        if name == b"via" || name == b"v" {
            // Walk the header, continuation lines included, to the first comma or its end.
            let mut i = pos;
            loop {
                if i >= data.len() {
                    break;
                }
                if data[i] == b',' {
                    break;
                }
                if data[i..].starts_with(b"\r\n")
                    && !matches!(data.get(i + 2), Some(b' ') | Some(b'\t'))
                {
                    break;
                }
                i += 1;
            }
            let mut cut = i;
            while cut > pos && matches!(data[cut - 1], b' ' | b'\t' | b'\r' | b'\n') {
                cut -= 1;
            }
            let mut out = data[..cut].to_vec();
            out.extend_from_slice(b";rport");
            out.extend_from_slice(&data[cut..]);
            let lower = out[pos..cut].to_ascii_lowercase();
            if let Some(b) = lower.windows(7).position(|w| w == b"branch=") {
                let start = pos + b + 7;
                let len = out[start..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(c)))
                    .unwrap_or(out.len() - start);
                // A bare magic cookie is what badbranch is about: leave it bare.
                if &out[start..start + len] != b"z9hG4bK" {
                    let at = start + len;
                    out.splice(at..at, tag.bytes());
                }
            }
            return out;
        }
        pos = end + 2;
    }
    data.to_vec()
}

/// What this node answers today for messages whose answer is an application decision:
/// REGISTER is challenged, OPTIONS answered; an INVITE is challenged (407) before anything
/// else is looked at, and one with a To tag matches no dialog (481).
fn application_answer(data: &[u8], manifest_code: Option<u16>) -> Vec<u16> {
    let method: Vec<u8> = data.iter().take_while(|b| **b != b' ').copied().collect();
    match method.as_slice() {
        b"SIP/2.0" => vec![],
        b"REGISTER" => vec![manifest_code.unwrap_or(401), 401],
        b"OPTIONS" => vec![manifest_code.unwrap_or(200), 200],
        b"INVITE" => vec![manifest_code.unwrap_or(407), 407, 481],
        // Methods the node does not serve outside a call: 405 for SIP's own, 501 for the
        // unknown; 481 when they name a dialog (To tag).
        b"MESSAGE" | b"BYE" | b"INFO" | b"NOTIFY" => {
            vec![manifest_code.unwrap_or(405), 405, 481]
        }
        // SUBSCRIBE is served for message-summary only: 489 for other events, else
        // challenged (407) like an INVITE, or 481 in a dialog nobody has.
        b"SUBSCRIBE" => vec![manifest_code.unwrap_or(489), 489, 407, 481],
        _ => vec![manifest_code.unwrap_or(501), 501],
    }
}

#[test]
fn torture_messages_get_the_right_answers() {
    let mut node = Node::new(NodeOptions::default());
    node.start();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rfc4475");
    let mut failures = Vec::new();
    let mut buf = vec![0u8; 65535];
    for case in manifest() {
        let data = std::fs::read(dir.join(format!("{}.dat", case.name))).expect("corpus file");
        let is_response = data.starts_with(b"SIP/");
        // Which answers are right: a parse failure gets the manifest's 400/505 (or none when
        // none can be formed); a well-formed message gets what the node's features give.
        let allowed: Vec<u16> = match case.class.as_str() {
            "invalid" | "semantic-invalid" => case.expect.into_iter().chain([400]).collect(),
            _ => application_answer(&data, case.expect),
        };
        // A socket per message: retransmitted answers to an earlier one cannot mix in.
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(700)))
            .expect("timeout");
        sock.send_to(&with_rport(&data, &format!("-{}", case.name)), node.addr())
            .expect("send");
        // The first final answer (an INVITE gets 100 Trying first).
        let mut got = None;
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let code = text.get(8..11).and_then(|c| c.parse::<u16>().ok());
            if code.is_some_and(|c| c >= 200) || code.is_none() {
                got = code;
                break;
            }
        }
        let ok = match got {
            Some(code) => !is_response && allowed.contains(&code),
            // Silence is right for responses, and for requests too broken to answer.
            None => is_response || allowed.is_empty() || case.name == "insuf",
        };
        if !ok {
            failures.push(format!("{}: got {got:?}, allowed {allowed:?}", case.name));
        }
    }
    assert!(options_ping(node.addr(), Duration::from_secs(2)).is_some());
    assert!(
        failures.is_empty(),
        "torture answers wrong:\n{}\n--- node log\n{}",
        failures.join("\n"),
        crate::support::tail(&node.log_text(), 4000)
    );
    node.stop();
}
