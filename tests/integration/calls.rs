//! Calls between extensions through the real binary: SIPp callers (authenticating their
//! INVITE on 407) and SIPp callees (registered first from the port they then listen on).
//! Every test checks the CDR through `ringfort cdr` and that no call is left in progress.

use std::time::Duration;

use crate::support::{free_port, wait_for, Node, NodeOptions, Sipp, SippChild, SippTransport};

const PASSWORD: &str = "call-test-pass";
const CALLER: &str = "100";
const CALLEE: &str = "200";

/// A node with extensions 100 and 200, relay ports in 40000-40998 (the scenarios check
/// the SDP names them), a short no-answer timeout and T1 (the no-ACK give-up is 64*T1).
fn call_node() -> Node {
    call_node_with("")
}

/// [`call_node`] with more `[media]` lines.
fn call_node_with(media: &str) -> Node {
    let mut node = Node::new(NodeOptions {
        sip: "tcp_idle_timeout_secs = 30\nt1_ms = 100\nt2_ms = 400".into(),
        extra: format!(
            "[media]\nrtp_port_min = 40000\nrtp_port_max = 40998\n{media}\n\n\
             [calls]\nno_answer_timeout_secs = 3\n"
        ),
        ..NodeOptions::default()
    });
    node.add_extension(CALLER, PASSWORD);
    node.add_extension(CALLEE, PASSWORD);
    node.add_extension("300", PASSWORD);
    node.start();
    node
}

/// Registers `number` from UDP port `port` (where its SIPp UAS will then listen).
fn register_from(node: &Node, number: &str, port: u16) {
    Sipp::new("register.xml", SippTransport::Udp)
        .auth(number, PASSWORD)
        .var("expires", "600")
        .port(port)
        .expect_pass(node);
}

/// Registers the callee from a fresh port and starts its UAS scenario there.
fn callee(node: &Node, number: &str, scenario: &str) -> SippChild {
    let port = free_port();
    register_from(node, number, port);
    let uas = Sipp::new(scenario, SippTransport::Udp)
        .port(port)
        .spawn(node);
    // Let SIPp bind its socket before the call comes.
    std::thread::sleep(Duration::from_millis(300));
    uas
}

fn caller(scenario: &str, callee: &str) -> Sipp {
    Sipp::new(scenario, SippTransport::Udp)
        .auth(CALLER, PASSWORD)
        .service(callee)
        .var("caller", CALLER)
}

/// A caller expecting the final `status`.
fn failing_caller(node: &Node, callee: &str, status: u16) -> Sipp {
    let text =
        std::fs::read_to_string(crate::support::scenario("call_uac_fail.xml")).expect("scenario");
    let path = node.dir.path().join(format!("call_uac_fail_{status}.xml"));
    std::fs::write(&path, text.replace("STATUS", &status.to_string())).expect("write");
    let mut s = caller("call_uac_fail.xml", callee);
    s.scenario = path;
    s
}

/// The newest CDR line, once there is one.
fn cdr(node: &Node) -> String {
    wait_for("a CDR", Duration::from_secs(10), || {
        node.cli_ok(&["cdr", "--limit", "1"])
            .lines()
            .next()
            .map(str::to_owned)
    })
}

fn field(line: &str, i: usize) -> &str {
    line.split('\t').nth(i).unwrap_or_default()
}

fn assert_no_calls(node: &Node) {
    wait_for("no call in progress", Duration::from_secs(10), || {
        node.cli_ok(&["calls"]).trim().is_empty().then_some(())
    });
}

fn assert_cdr(node: &Node, disposition: &str, hangup: &str) -> String {
    let line = cdr(node);
    assert_eq!(field(&line, 1), CALLER, "{line}");
    assert_eq!(field(&line, 3), disposition, "{line}");
    assert!(line.contains(&format!("hangup={hangup}")), "{line}");
    assert!(line.contains("node=test1"), "{line}");
    assert_no_calls(node);
    line
}

/// A call between the two scenarios on a fresh node, answered; `hangup` ended it.
fn answered_call(uas_scenario: &str, uac_scenario: &str, hangup: &str) {
    let mut node = call_node();
    let mut uas = callee(&node, CALLEE, uas_scenario);
    caller(uac_scenario, CALLEE).expect_pass(&node);
    uas.expect_pass(&node);
    assert_cdr(&node, "answered", hangup);
    node.stop();
}

#[test]
fn answered_call_caller_hangs_up() {
    let mut node = call_node();
    let mut uas = callee(&node, CALLEE, "call_uas_answer.xml");
    caller("call_uac_bye.xml", CALLEE).expect_pass(&node);
    uas.expect_pass(&node);
    let line = assert_cdr(&node, "answered", "caller");
    assert_eq!(field(&line, 2), CALLEE, "{line}");
    assert!(!line.contains("answered=-"), "answer time recorded: {line}");
    node.stop();
}

#[test]
fn answered_call_callee_hangs_up() {
    answered_call("call_uas_bye.xml", "call_uac_wait_bye.xml", "callee");
}

#[test]
fn busy_callee() {
    let mut node = call_node();
    let mut uas = callee(&node, CALLEE, "call_uas_busy.xml");
    failing_caller(&node, CALLEE, 486).expect_pass(&node);
    uas.expect_pass(&node);
    let line = assert_cdr(&node, "busy", "callee");
    assert!(line.contains("duration=0"), "{line}");
    node.stop();
}

#[test]
fn caller_cancels_while_ringing() {
    let mut node = call_node();
    let mut uas = callee(&node, CALLEE, "call_uas_ring.xml");
    caller("call_uac_cancel.xml", CALLEE).expect_pass(&node);
    uas.expect_pass(&node);
    assert_cdr(&node, "cancelled", "caller");
    node.stop();
}

#[test]
fn no_answer_times_out() {
    let mut node = call_node();
    let mut uas = callee(&node, CALLEE, "call_uas_ring.xml");
    failing_caller(&node, CALLEE, 480).expect_pass(&node);
    uas.expect_pass(&node);
    assert_cdr(&node, "no-answer", "system");
    node.stop();
}

#[test]
fn unknown_number_and_unregistered_callee() {
    let mut node = call_node();
    failing_caller(&node, "999", 404).expect_pass(&node);
    // 300 exists but has no registration.
    failing_caller(&node, "300", 480).expect_pass(&node);
    // Neither started a call.
    assert!(node.cli_ok(&["cdr"]).trim().is_empty());
    assert_no_calls(&node);
    node.stop();
}

#[test]
fn forks_to_every_contact_and_cancels_the_loser() {
    let mut node = call_node();
    let mut ringing = callee(&node, CALLEE, "call_uas_ring.xml");
    let mut answering = callee(&node, CALLEE, "call_uas_answer.xml");
    caller("call_uac_bye.xml", CALLEE).expect_pass(&node);
    answering.expect_pass(&node);
    ringing.expect_pass(&node);
    assert_cdr(&node, "answered", "caller");
    node.stop();
}

#[test]
fn caller_that_never_acks_is_hung_up() {
    let mut node = call_node();
    let mut uas = callee(&node, CALLEE, "call_uas_answer.xml");
    caller("call_uac_no_ack.xml", CALLEE).expect_pass(&node);
    uas.expect_pass(&node);
    assert_cdr(&node, "failed", "system");
    node.stop();
}

/// The number after `key=` in a log line.
fn counter(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// An answered call whose callee echoes the RTP it gets back to where it came from (the
/// relay); checks its CDR.
fn echo_call(node: &Node) {
    let port = free_port();
    register_from(node, CALLEE, port);
    let mut uas = Sipp::new("call_uas_answer.xml", SippTransport::Udp)
        .port(port)
        .arg("-rtp_echo")
        .spawn(node);
    std::thread::sleep(Duration::from_millis(300));
    caller("call_uac_rtp.xml", CALLEE).expect_pass(node);
    uas.expect_pass(node);
    assert_cdr(node, "answered", "caller");
}

#[test]
fn rtp_is_relayed_both_ways() {
    let mut node = call_node();
    echo_call(&node);
    let line = wait_for("the relay's counters", Duration::from_secs(10), || {
        node.log_text()
            .lines()
            .find(|l| l.contains("relay closed"))
            .map(str::to_owned)
    });
    // a = towards the caller, b = towards the callee; rx = from that phone.
    for key in ["a_rx", "b_tx", "b_rx", "a_tx"] {
        assert!(counter(&line, key) > 10, "{key} in {line}");
    }
    node.stop();
}

/// A relayed call moves the node's metrics: one call started, none up once it ended, its
/// relay's RTP in the relayed total (added when the relay closed).
#[test]
fn a_relayed_call_shows_in_the_metrics() {
    let mut node = call_node();
    node.cli_ok(&[
        "admin",
        "add",
        "root",
        "--password",
        "a long admin password",
    ]);
    let out = node.cli_ok(&["admin", "token", "root", "prometheus"]);
    let bearer = format!(
        "Bearer {}",
        out.rsplit(' ').next().unwrap_or_default().trim()
    );
    echo_call(&node);
    let value = |body: &str, name: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in:\n{body}"))
    };
    let body = wait_for("the relay's totals", Duration::from_secs(10), || {
        let (status, _, body) = crate::admin_api::http(
            node.http_addr(),
            "GET",
            "/metrics",
            &[("Authorization", &bearer)],
            None,
        );
        assert_eq!(status, 200, "{body}");
        (value(&body, "ringfort_rtp_relays_active") == 0.0
            && value(&body, "ringfort_calls_active") == 0.0)
            .then_some(body)
    });
    assert_eq!(value(&body, "ringfort_calls_started_total"), 1.0);
    assert!(
        value(&body, "ringfort_rtp_relayed_packets_total") > 20.0,
        "{body}"
    );
    node.stop();
}

#[test]
fn a_call_cut_by_a_crash_becomes_a_failed_cdr() {
    let mut node = call_node();
    let mut uas = callee(&node, CALLEE, "call_uas_answer.xml");
    // The caller waits for a BYE that never comes: the node dies under the call.
    let mut uac = caller("call_uac_wait_bye.xml", CALLEE).spawn(&node);
    let line = wait_for("the call answered", Duration::from_secs(15), || {
        node.cli_ok(&["calls"])
            .lines()
            .find(|l| l.contains("\tanswered\t"))
            .map(str::to_owned)
    });
    assert_eq!(field(&line, 1), CALLER, "{line}");
    assert_eq!(field(&line, 2), CALLEE, "{line}");
    node.kill();
    assert!(
        node.cli_ok(&["cdr"]).trim().is_empty(),
        "no CDR before the restart"
    );
    node.start();
    let cdr = assert_cdr(&node, "failed", "system");
    assert!(!cdr.contains("answered=-"), "{cdr}");
    node.stop();
    let _ = uac.wait(Duration::from_millis(10));
    let _ = uas.wait(Duration::from_millis(10));
}

#[test]
fn from_must_be_the_authenticated_extension() {
    let mut node = call_node();
    let port = free_port();
    register_from(&node, CALLEE, port);
    // 300's credentials, From 100: refused.
    let mut s = failing_caller(&node, CALLEE, 403);
    s.user = "300".into();
    s.expect_pass(&node);
    assert!(node.cli_ok(&["cdr"]).trim().is_empty());
    node.stop();
}

#[test]
fn caller_over_tcp_calls_a_udp_phone() {
    let mut node = call_node();
    let mut uas = callee(&node, CALLEE, "call_uas_answer.xml");
    Sipp::new("call_uac_bye.xml", SippTransport::Tcp)
        .auth(CALLER, PASSWORD)
        .service(CALLEE)
        .var("caller", CALLER)
        .expect_pass(&node);
    uas.expect_pass(&node);
    assert_cdr(&node, "answered", "caller");
    node.stop();
}

/// Registers the callee over TCP from a fresh port; SIPp exits, so the connection it
/// registered on is gone.
fn register_over_tcp_and_leave(node: &Node) -> u16 {
    let port = free_port();
    Sipp::new("register.xml", SippTransport::Tcp)
        .auth(CALLEE, PASSWORD)
        .var("expires", "600")
        .port(port)
        .expect_pass(node);
    port
}

/// A phone registered over TCP whose connection is gone (SIPp exits after REGISTER) is
/// reached on a new connection to its Contact, where it listens.
#[test]
fn tcp_phone_without_its_connection_gets_a_new_one() {
    let mut node = call_node();
    let port = register_over_tcp_and_leave(&node);
    let mut uas = Sipp::new("call_uas_answer.xml", SippTransport::Tcp)
        .port(port)
        .spawn(&node);
    std::thread::sleep(Duration::from_millis(300));
    caller("call_uac_bye.xml", CALLEE).expect_pass(&node);
    uas.expect_pass(&node);
    assert_cdr(&node, "answered", "caller");
    node.stop();
}

/// Nobody listens where the TCP phone said: the connection is refused and the caller
/// hears at once, not after the no-answer timeout.
#[test]
fn unreachable_tcp_phone_fails_the_call_at_once() {
    let mut node = call_node();
    register_over_tcp_and_leave(&node);
    let started = std::time::Instant::now();
    failing_caller(&node, CALLEE, 480).expect_pass(&node);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_cdr(&node, "failed", "system");
    node.stop();
}

#[test]
fn max_forwards_zero_is_483() {
    let mut node = call_node();
    let msg = "INVITE sip:200@127.0.0.1 SIP/2.0\r\n\
               Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKmf0;rport\r\n\
               From: <sip:100@127.0.0.1>;tag=mf\r\nTo: <sip:200@127.0.0.1>\r\n\
               Call-ID: mf0@test\r\nCSeq: 1 INVITE\r\nContact: <sip:100@127.0.0.1:9>\r\n\
               Max-Forwards: 0\r\nContent-Length: 0\r\n\r\n";
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    sock.send_to(msg.as_bytes(), node.addr()).expect("send");
    let mut buf = [0u8; 4096];
    let mut finals = Vec::new();
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !text.starts_with("SIP/2.0 100") {
            finals.push(text.lines().next().unwrap_or_default().to_owned());
            break;
        }
    }
    assert_eq!(finals, ["SIP/2.0 483 Too Many Hops"], "{}", node.log_text());
    node.stop();
}

#[test]
fn media_timeout_hangs_up_both_legs() {
    let mut node = call_node_with("media_timeout_secs = 2");
    // Nobody sends RTP: both phones get a BYE from the node.
    let mut uas = callee(&node, CALLEE, "call_uas_answer.xml");
    caller("call_uac_wait_bye.xml", CALLEE).expect_pass(&node);
    uas.expect_pass(&node);
    assert_cdr(&node, "answered", "system");
    node.stop();
}

#[test]
fn hold_and_resume_by_re_invite() {
    answered_call("call_uas_hold.xml", "call_uac_hold.xml", "caller");
}

#[test]
fn hold_and_resume_by_update() {
    answered_call(
        "call_uas_update_hold.xml",
        "call_uac_update_hold.xml",
        "caller",
    );
}

/// An INFO key press reaches a callee without telephone-event as INFO (one with it gets
/// RFC 4733 events: `an_info_key_press_reaches_a_baresip_caller_as_rfc4733`).
#[test]
fn info_is_relayed_from_caller_to_callee() {
    answered_call("call_uas_info.xml", "call_uac_info.xml", "caller");
}

/// The caller presses 5 as RFC 4733 events; the callee negotiated no telephone-event, so
/// the node takes the events out of the RTP and sends the key press as INFO.
#[test]
fn rfc4733_key_press_reaches_a_callee_without_telephone_event_as_info() {
    answered_call("call_uas_dtmf_info.xml", "call_uac_dtmf.xml", "caller");
}

#[test]
fn reliable_183_is_pracked_on_both_legs() {
    answered_call("call_uas_prack.xml", "call_uac_prack.xml", "caller");
}

#[test]
fn caller_requiring_100rel_is_served_reliably() {
    let mut node = call_node();
    let mut uas = callee(&node, CALLEE, "call_uas_prack.xml");
    // The same caller, with Require instead of Supported: no 420, and the 183 it gets is
    // reliable (the scenario checks Require and RSeq and PRACKs it).
    let text =
        std::fs::read_to_string(crate::support::scenario("call_uac_prack.xml")).expect("scenario");
    let required = text.replace("Supported: 100rel", "Require: 100rel");
    assert_eq!(
        required.matches("\n      Require: 100rel").count(),
        2,
        "both INVITEs"
    );
    let path = node.dir.path().join("call_uac_prack_require.xml");
    std::fs::write(&path, required).expect("write");
    let mut s = caller("call_uac_prack.xml", CALLEE);
    s.scenario = path;
    s.expect_pass(&node);
    uas.expect_pass(&node);
    assert_cdr(&node, "answered", "caller");
    node.stop();
}

/// Extension 100 as a baresip phone (PCMU and telephone-event) that logs the key presses
/// it receives.
fn baresip_caller(node: &Node) -> crate::baresip::Baresip {
    let mut phone = crate::baresip::Baresip::new(
        node.dir.path(),
        &crate::baresip::PhoneSetup {
            number: CALLER,
            password: PASSWORD,
            registrar: node.addr(),
            ip: "127.0.0.1",
            sip_port: free_port(),
            tone_hz: 440,
            netns: None,
            codecs: "PCMU",
        },
    );
    phone.verbose();
    phone
}

/// A key the callee sends by INFO reaches a caller that negotiated telephone-event as
/// RFC 4733 events in its RTP: baresip (the caller) reports the key it received.
#[test]
fn an_info_key_press_reaches_a_baresip_caller_as_rfc4733() {
    let mut node = call_node();
    let mut uas = callee(&node, CALLEE, "call_uas_info_bye.xml");
    let mut phone = baresip_caller(&node);
    phone.start(&[format!("/dial {CALLEE}")], Duration::from_secs(20));
    uas.expect_pass(&node);
    phone.wait_call_ended(Duration::from_secs(10));
    let log = phone.log_text();
    assert!(
        log.contains("received event: '7'"),
        "baresip got no key press:\n{}\n--- node\n{}",
        crate::support::tail(&log, 3000),
        crate::support::tail(&node.log_text(), 6000)
    );
    node.stop();
}

/// Keys the callee presses in its audio (it negotiated no telephone-event) reach a caller
/// that negotiated telephone-event as RFC 4733 events: baresip reports them.
#[test]
fn in_band_key_presses_reach_a_baresip_caller_as_rfc4733() {
    use ringfort::media::dtmf::{Digit, ToneGenerator};
    let mut node = call_node();
    let mut pcm = vec![0i16; 1600];
    for d in [Digit::D4, Digit::D2] {
        pcm.extend(ToneGenerator::for_digit(d, -10.0).samples(1200));
        pcm.extend(vec![0i16; 1600]);
    }
    let pcap = node.dir.path().join("inband.pcap");
    crate::support::pcmu_pcap(&pcap, &pcm);
    let text = std::fs::read_to_string(crate::support::scenario("call_uas_inband_bye.xml"))
        .expect("scenario");
    let scenario = node.dir.path().join("call_uas_inband_bye.xml");
    std::fs::write(
        &scenario,
        text.replace("PCAP_FILE", &pcap.display().to_string()),
    )
    .expect("write");
    let port = free_port();
    register_from(&node, CALLEE, port);
    let mut s = Sipp::new("call_uas_inband_bye.xml", SippTransport::Udp).port(port);
    s.scenario = scenario;
    let mut uas = s.spawn(&node);
    std::thread::sleep(Duration::from_millis(300));
    let mut phone = baresip_caller(&node);
    phone.start(&[format!("/dial {CALLEE}")], Duration::from_secs(20));
    uas.expect_pass(&node);
    phone.wait_call_ended(Duration::from_secs(10));
    let log = phone.log_text();
    let got: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("received event:") && l.contains("end=0"))
        .collect();
    assert!(
        got.len() == 2 && got[0].contains("'4'") && got[1].contains("'2'"),
        "baresip got {got:?}:\n{}\n--- node\n{}",
        crate::support::tail(&log, 3000),
        crate::support::tail(&node.log_text(), 6000)
    );
    node.stop();
}
