//! Every answer admission makes, from a table: a request, what the fake authorizer says,
//! and the one decision expected.

use std::cell::RefCell;
use std::collections::HashMap;

use super::*;
use crate::cluster::routing::relay_header;
use crate::sip::message::{self, SipMessage};
use crate::sip::Transport;

const OFFER: &str = "v=0\r\no=a 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\n\
t=0 0\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n";
const SECRET: &[u8] = b"cluster secret";
const NOW: i64 = 1_800_000_000;

/// Says what it was told to, and records what it was asked.
#[derive(Default)]
struct FakeAuth {
    /// Credentials header name -> outcome; absent: a challenge.
    outcome: HashMap<&'static str, AuthOutcome>,
    /// Extensions in memory: true exists, false known absent.
    known: HashMap<&'static str, bool>,
    asked: RefCell<Vec<(String, i64)>>,
}

impl Authorizer for FakeAuth {
    fn authenticate(&self, _req: &Request, header: &HeaderName, now_unix: i64) -> AuthOutcome {
        let name = header.as_str().to_owned();
        self.asked.borrow_mut().push((name.clone(), now_unix));
        self.outcome
            .iter()
            .find(|(h, _)| h.eq_ignore_ascii_case(&name))
            .map(|(_, o)| o.clone())
            .unwrap_or(AuthOutcome::Challenge { stale: false })
    }

    fn extension_known(&self, number: &str) -> Option<bool> {
        self.known.get(number).copied()
    }
}

fn auth(header: &'static str, outcome: AuthOutcome) -> FakeAuth {
    FakeAuth {
        outcome: [(header, outcome)].into_iter().collect(),
        known: [("200", true), ("404", false)].into_iter().collect(),
        ..FakeAuth::default()
    }
}

fn peer() -> Peer {
    Peer {
        transport: Transport::Udp,
        remote: "192.0.2.10:5062".parse().expect("addr"),
        local: "192.0.2.1:5060".parse().expect("addr"),
        conn: None,
    }
}

/// A request of `method` to `uri`, From 100 to 200, with `extra` header lines (which
/// replace a default of the same name) and `body`.
fn request(method: &str, uri: &str, extra: &[&str], body: &str) -> Request {
    let cseq = format!("CSeq: 1 {method}");
    let mut lines = vec![
        "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-adm-1",
        "Max-Forwards: 70",
        "From: \"Ann\" <sip:100@pbx.example>;tag=f1",
        "To: <sip:200@pbx.example>",
        "Call-ID: adm-call-1",
        &cseq,
    ];
    let name = |l: &str| l.split(':').next().unwrap_or_default().to_owned();
    for line in extra {
        match lines.iter().position(|l| name(l) == name(line)) {
            Some(i) => lines[i] = line,
            None => lines.push(line),
        }
    }
    let mut text = format!("{method} {uri} SIP/2.0\r\n");
    for line in lines {
        text.push_str(line);
        text.push_str("\r\n");
    }
    if !body.is_empty() {
        text.push_str("Content-Type: application/sdp\r\n");
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    match message::parse(text.as_bytes()) {
        Ok(SipMessage::Request(r)) => r,
        other => panic!("test request does not parse: {other:?}"),
    }
}

fn decide(req: &Request, a: &FakeAuth, secret: Option<&[u8]>, seen: &mut SeenRelays) -> Decision {
    let mut cx = Context {
        auth: a,
        cluster_secret: secret,
        seen_relays: seen,
        now_unix: NOW,
        to_tag: "tt",
        server: "Ringfort-test",
    };
    admit(req, &peer(), &mut cx)
}

/// A decision as one comparable line.
fn summary(d: &Decision) -> String {
    match d {
        Decision::Reply(r) => {
            let mut s = format!("reply {}", r.status);
            for h in ["Allow", "Unsupported", "Allow-Events"] {
                if let Some(v) = r.headers.get(&HeaderName::parse(h)) {
                    s.push_str(&format!(" {h}={v}"));
                }
            }
            s
        }
        Decision::Challenge {
            status,
            header,
            stale,
        } => format!("challenge {status} {} stale={stale}", header.as_str()),
        Decision::Register { aor } => format!("register {aor}"),
        Decision::Subscribe { subscriber } => format!("subscribe {subscriber:?}"),
        Decision::Call(c) => format!("call {}->{}", c.caller, c.callee),
        Decision::Relayed {
            call,
            numbers,
            node,
        } => format!(
            "relayed {}->{} {numbers:?} from {node}",
            call.caller, call.callee
        ),
        Decision::Load(n) => format!("load {n}"),
    }
}

#[test]
fn every_answer_from_one_table() {
    use AuthOutcome::*;
    const PA: &str = "Proxy-Authorization";
    const AZ: &str = "Authorization";
    let ok = |u: &str| Ok(u.to_owned());
    let allow = format!("Allow={ALLOWED}");
    #[rustfmt::skip]
    let table: Vec<(&str, Request, FakeAuth, String)> = vec![
        // RFC 3261 8.2.2.1, 8.2.2.3, 8.2.2.2 / 12.2.2, 8.2.1
        ("a tel URI is not served", request("OPTIONS", "tel:+4930123", &[], ""), auth(PA, ok("100")), "reply 416".into()),
        ("an unknown required extension", request("OPTIONS", "sip:200@pbx.example", &["Require: foo, path"], ""), auth(PA, ok("100")), "reply 420 Unsupported=foo".into()),
        ("100rel is understood by INVITE only", request("OPTIONS", "sip:200@pbx.example", &["Require: 100rel"], ""), auth(PA, ok("100")), "reply 420 Unsupported=100rel".into()),
        ("a CANCEL is never refused for Require", request("CANCEL", "sip:200@pbx.example", &["Require: foo"], ""), auth(PA, ok("100")), format!("reply 405 {allow}")),
        ("a dialog we do not have", request("BYE", "sip:200@pbx.example", &["To: <sip:200@pbx.example>;tag=x"], ""), auth(PA, ok("100")), "reply 481".into()),
        ("OPTIONS", request("OPTIONS", "sip:200@pbx.example", &[], ""), auth(PA, ok("100")), format!("reply 200 {allow} Allow-Events=message-summary")),
        ("OPTIONS inside a dialog is still answered", request("OPTIONS", "sip:200@pbx.example", &["To: <sip:200@pbx.example>;tag=x"], ""), auth(PA, ok("100")), format!("reply 200 {allow} Allow-Events=message-summary")),
        ("a method SIP knows but we do not take", request("MESSAGE", "sip:200@pbx.example", &[], ""), auth(PA, ok("100")), format!("reply 405 {allow}")),
        ("an extension method", request("FOO", "sip:200@pbx.example", &[], ""), auth(PA, ok("100")), format!("reply 501 {allow}")),
        // REGISTER: 401 challenges, the AOR is To's user and only its own credentials count
        ("REGISTER without credentials", request("REGISTER", "sip:pbx.example", &[], ""), FakeAuth::default(), "challenge 401 WWW-Authenticate stale=false".into()),
        ("REGISTER with a stale nonce", request("REGISTER", "sip:pbx.example", &[], ""), auth(AZ, Challenge { stale: true }), "challenge 401 WWW-Authenticate stale=true".into()),
        ("REGISTER with its own credentials", request("REGISTER", "sip:pbx.example", &["To: <sip:100@pbx.example>"], ""), auth(AZ, ok("100")), "register 100".into()),
        ("REGISTER of another user", request("REGISTER", "sip:pbx.example", &[], ""), auth(AZ, ok("100")), "reply 403".into()),
        ("REGISTER with wrong credentials", request("REGISTER", "sip:pbx.example", &[], ""), auth(AZ, Forbidden), "reply 403".into()),
        ("REGISTER with malformed credentials", request("REGISTER", "sip:pbx.example", &[], ""), auth(AZ, Bad("qop without nc/cnonce")), "reply 400".into()),
        ("REGISTER of a user not in memory", request("REGISTER", "sip:pbx.example", &[], ""), auth(AZ, Load("100".into())), "load 100".into()),
        ("REGISTER for a To without a user", request("REGISTER", "sip:pbx.example", &["To: <sip:pbx.example>"], ""), auth(AZ, ok("100")), "reply 404".into()),
        ("REGISTER for a To that is no SIP URI", request("REGISTER", "sip:pbx.example", &["To: <http://pbx.example/100>"], ""), auth(AZ, ok("100")), "reply 400".into()),
        ("REGISTER refreshing inside its Call-ID (To tag) is no dialog", request("REGISTER", "sip:pbx.example", &["To: <sip:100@pbx.example>;tag=r"], ""), auth(AZ, ok("100")), "register 100".into()),
        // INVITE: 407 challenges; the callee is loaded before the nonce is spent
        ("INVITE without credentials", request("INVITE", "sip:200@pbx.example", &[], OFFER), FakeAuth { known: [("200", true)].into_iter().collect(), ..FakeAuth::default() }, "challenge 407 Proxy-Authenticate stale=false".into()),
        ("INVITE to a callee not in memory", request("INVITE", "sip:201@pbx.example", &[], OFFER), auth(PA, ok("100")), "load 201".into()),
        ("INVITE from a caller not in memory", request("INVITE", "sip:200@pbx.example", &[], OFFER), auth(PA, Load("100".into())), "load 100".into()),
        ("INVITE with wrong credentials", request("INVITE", "sip:200@pbx.example", &[], OFFER), auth(PA, Forbidden), "reply 403".into()),
        ("INVITE with malformed credentials", request("INVITE", "sip:200@pbx.example", &[], OFFER), auth(PA, Bad("unsupported qop")), "reply 400".into()),
        ("INVITE as another extension than From", request("INVITE", "sip:200@pbx.example", &[], OFFER), auth(PA, ok("101")), "reply 403".into()),
        ("INVITE with Max-Forwards 0", request("INVITE", "sip:200@pbx.example", &["Max-Forwards: 0"], OFFER), auth(PA, ok("100")), "reply 483".into()),
        ("INVITE without a callee user", request("INVITE", "sip:pbx.example", &[], OFFER), auth(PA, ok("100")), "reply 404".into()),
        ("INVITE without an offer", request("INVITE", "sip:200@pbx.example", &[], ""), auth(PA, ok("100")), "reply 488".into()),
        ("INVITE with an unusable offer", request("INVITE", "sip:200@pbx.example", &[], "v=0\r\nbogus\r\n"), auth(PA, ok("100")), "reply 400".into()),
        ("INVITE to a number known absent goes on (the dialplan may have it)", request("INVITE", "sip:404@pbx.example", &[], OFFER), auth(PA, ok("100")), "call 100->404".into()),
        ("INVITE", request("INVITE", "sip:200@pbx.example", &[], OFFER), auth(PA, ok("100")), "call 100->200".into()),
        ("INVITE with 100rel required", request("INVITE", "sip:200@pbx.example", &["Require: 100rel"], OFFER), auth(PA, ok("100")), "call 100->200".into()),
        // SUBSCRIBE: message-summary only, 407 for a new one
        ("SUBSCRIBE to another event package", request("SUBSCRIBE", "sip:200@pbx.example", &["Event: presence"], ""), auth(PA, ok("100")), "reply 489 Allow-Events=message-summary".into()),
        ("SUBSCRIBE without credentials", request("SUBSCRIBE", "sip:200@pbx.example", &["Event: message-summary"], ""), FakeAuth::default(), "challenge 407 Proxy-Authenticate stale=false".into()),
        ("SUBSCRIBE", request("SUBSCRIBE", "sip:200@pbx.example", &["Event: message-summary"], ""), auth(PA, ok("100")), "subscribe Some(\"100\")".into()),
        ("SUBSCRIBE refresh inside its dialog", request("SUBSCRIBE", "sip:200@pbx.example", &["Event: message-summary", "To: <sip:200@pbx.example>;tag=s"], ""), FakeAuth::default(), "subscribe None".into()),
        ("SUBSCRIBE with wrong credentials", request("SUBSCRIBE", "sip:200@pbx.example", &["Event: message-summary"], ""), auth(PA, Forbidden), "reply 403".into()),
    ];
    for (what, req, a, want) in table {
        let mut seen = SeenRelays::default();
        let got = decide(&req, &a, None, &mut seen);
        assert_eq!(summary(&got), want, "{what}");
        if let Decision::Reply(r) = &got {
            let to = to_header(&r.headers).expect("To");
            assert!(to.tag().is_some(), "{what}: an answer carries a To tag");
            assert_eq!(
                r.headers.get(&HeaderName::Server),
                Some("Ringfort-test"),
                "{what}"
            );
        }
        // Credentials are judged at the time given, never the machine's clock.
        for (_, at) in a.asked.borrow().iter() {
            assert_eq!(*at, NOW, "{what}");
        }
    }
}

#[test]
fn an_answer_keeps_the_to_tag_of_the_request_and_names_the_bad_offer() {
    let req = request("INVITE", "sip:200@pbx.example", &[], "v=0\r\nbogus\r\n");
    let mut seen = SeenRelays::default();
    let Decision::Reply(r) = decide(
        &req,
        &auth("Proxy-Authorization", AuthOutcome::Ok("100".into())),
        None,
        &mut seen,
    ) else {
        panic!("a reply");
    };
    assert!(r.reason.starts_with("Bad Request ("), "{}", r.reason);
    let req = request(
        "BYE",
        "sip:200@pbx.example",
        &["To: <sip:200@pbx.example>;tag=theirs"],
        "",
    );
    let Decision::Reply(r) = decide(&req, &FakeAuth::default(), None, &mut seen) else {
        panic!("a reply");
    };
    assert_eq!(to_header(&r.headers).expect("To").tag(), Some("theirs"));
}

#[test]
fn a_forwarded_invite_is_taken_once_with_a_good_signature_and_never_without_one() {
    let header = |node: &str, at: i64, call_id: &str, numbers: &[&str]| {
        format!(
            "X-Ringfort-Relay: {}",
            relay_header(SECRET, node, at, call_id, numbers)
        )
    };
    // No credentials at all: the signature stands for them.
    let nobody = FakeAuth::default();
    let good = header("n2", NOW - 2, "adm-call-1", &["200", "201"]);
    let req = request("INVITE", "sip:200@10.0.0.2", &[&good], OFFER);
    let mut seen = SeenRelays::default();
    assert_eq!(
        summary(&decide(&req, &nobody, Some(SECRET), &mut seen)),
        "relayed 100->200 [\"200\", \"201\"] from n2"
    );
    assert!(nobody.asked.borrow().is_empty(), "no digest asked");
    // The same INVITE again (a replay with a new branch): refused.
    assert_eq!(
        summary(&decide(&req, &nobody, Some(SECRET), &mut seen)),
        "reply 403",
        "replay"
    );
    #[rustfmt::skip]
    let refused = [
        ("outside a cluster", good.clone(), None),
        ("another secret", good.clone(), Some(&b"another"[..])),
        ("too old", header("n2", NOW - 3600, "adm-call-1", &["200"]), Some(SECRET)),
        ("signed for another Call-ID", header("n2", NOW, "other", &["200"]), Some(SECRET)),
        ("a tampered number list", good.replace("numbers=200,201", "numbers=300"), Some(SECRET)),
    ];
    for (what, h, secret) in refused {
        let req = request("INVITE", "sip:200@10.0.0.2", &[&h], OFFER);
        let mut fresh = SeenRelays::default();
        assert_eq!(
            summary(&decide(&req, &nobody, secret, &mut fresh)),
            "reply 403",
            "{what}"
        );
    }
    // Signed but without an offer: refused like any INVITE.
    let h = header("n2", NOW, "adm-call-1", &["200"]);
    let req = request("INVITE", "sip:200@10.0.0.2", &[&h], "");
    assert_eq!(
        summary(&decide(
            &req,
            &nobody,
            Some(SECRET),
            &mut SeenRelays::default()
        )),
        "reply 488"
    );
}
