//! Calls routed by a dialplan through the real binary: IVR menus driven by SIPp's key
//! presses (RFC 4733 from a pcap, SIP INFO), and dials nobody answers going on with the
//! plan's next steps, with the caller's leg handed from the B2BUA back to the plan.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::{free_port, wait_for, write_file, Node, NodeOptions, Sipp, SippTransport};

const PASSWORD: &str = "plan-test-pass";
const CALLER: &str = "100";

const PLAN: &str = r#"
[defaults]
context = "internal"

[context.internal]
[[context.internal.route]]
match = "0"
steps = [{ menu = "main" }]

# Extensions: ring 2 s; nobody answering, or nobody registered, goes to the menu.
[[context.internal.route]]
match = "_[23]XX"
steps = [{ dial = "${EXTEN}", timeout = 2 }]
on_noanswer = [{ menu = "main" }]
on_unavailable = [{ menu = "main" }]

# 4XX: voicemail when busy or not answered in 2 s.
[[context.internal.route]]
match = "_4XX"
steps = [{ dial = "${EXTEN}", timeout = 2 }]
on_busy = [{ voicemail = "${EXTEN}", greeting = "busy" }]
on_noanswer = [{ voicemail = "${EXTEN}", greeting = "unavailable" }]
on_unavailable = [{ voicemail = "${EXTEN}", greeting = "unavailable" }]

# 7402: 402's mailbox straight away.
[[context.internal.route]]
match = "7402"
steps = [{ voicemail = "402", greeting = "none" }]

# 5: a menu for callers who say nothing: short prompt, short wait, two tries.
[[context.internal.route]]
match = "5"
steps = [{ menu = "quiet" }]

[menu.quiet]
prompt = "beep"
timeout = 1
retries = 2
invalid_prompt = "invalid"
timeout_prompt = "timeout"
on_fail = [{ play = "goodbye" }]
options = { "1" = [{ play = "beep" }] }

[[context.internal.route]]
match = "6"
steps = [{ menu = "strict" }]

[menu.strict]
prompt = "main-menu"
timeout = 10
retries = 3
invalid_prompt = "invalid"
timeout_prompt = "timeout"
options = { "7" = [{ play = "beep" }] }

[[context.internal.route]]
match = "*97"
steps = [{ voicemail_main = true }]

[[context.internal.route]]
match = "8100"
steps = [{ conference = "8100" }]

[conference.8100]
announce = false

[menu.main]
prompt = "main-menu"
timeout = 10
retries = 2
invalid_prompt = "invalid"
timeout_prompt = "timeout"

[menu.main.options]
"5" = [{ menu = "second" }]

[menu.second]
prompt = "support-menu"
timeout = 10
invalid_prompt = "invalid"
timeout_prompt = "timeout"
options = { "7" = [{ play = "beep" }] }
"#;

/// A node routing by [`PLAN`], extensions 100 (the caller), 200 and 300 (never
/// registered), app and relay ports in 4xxxx (the scenarios check the SDP names them).
fn plan_node(ports: u16) -> Node {
    plan_node_with(ports, "")
}

/// [`plan_node`] with more config sections.
fn plan_node_with(ports: u16, more: &str) -> Node {
    let sounds = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sounds");
    let mut node = Node::new(NodeOptions {
        sip: "tcp_idle_timeout_secs = 30\nt1_ms = 100\nt2_ms = 400".into(),
        extra: format!(
            "[media]\nrtp_port_min = {ports}\nrtp_port_max = {}\n\n\
             [paths]\nsounds = \"{}\"\ndialplans = \"plans\"\n\n{more}\n",
            ports + 998,
            sounds.display()
        ),
        ..NodeOptions::default()
    });
    let plans = node.dir.path().join("plans");
    std::fs::create_dir_all(&plans).expect("plans folder");
    write_file(&plans, "plan.toml", PLAN);
    for n in [CALLER, "200", "300", "400", "401", "402"] {
        node.add_extension(n, PASSWORD);
    }
    node.start();
    node
}

/// The caller keying 5 (RFC 4733), 7 (INFO dtmf-relay) and # (INFO dtmf) into `number`,
/// expecting the node to hang up.
fn keying_caller(number: &str) -> Sipp {
    Sipp::new("app_dtmf.xml", SippTransport::Udp)
        .service(number)
        .auth(CALLER, PASSWORD)
        .var("caller", CALLER)
}

/// The newest CDR of a call to `callee`, once there is one.
fn newest_cdr(node: &Node, callee: &str) -> Vec<String> {
    let line = wait_for("the CDR", Duration::from_secs(10), || {
        node.cli_ok(&["cdr", "--limit", "1"])
            .lines()
            .next()
            .filter(|l| l.split('\t').nth(2) == Some(callee))
            .map(str::to_owned)
    });
    line.split('\t').map(str::to_owned).collect()
}

fn assert_menus_chosen(node: &Node) {
    let log = node.log_text();
    for keys in ["keys=5", "keys=7"] {
        assert!(
            log.lines()
                .any(|l| l.contains("menu: chosen") && l.contains(keys)),
            "no menu choice {keys} in the log"
        );
    }
}

#[test]
fn keys_route_the_caller_through_nested_menus() {
    let mut node = plan_node(44000);
    keying_caller("0").expect_pass(&node);
    assert_menus_chosen(&node);
    let cdr = newest_cdr(&node, "0");
    assert_eq!(&cdr[1..4], [CALLER, "0", "answered"], "{cdr:?}");
    assert!(cdr.iter().any(|f| f == "hangup=callee"), "{cdr:?}");
    node.assert_no_panic();
    node.stop();
}

#[test]
fn a_caller_who_presses_nothing_hears_the_timeout_prompt_then_the_menu_gives_up() {
    let mut node = plan_node(43800);
    Sipp::new("call_uac_wait_bye.xml", SippTransport::Udp)
        .service("5")
        .auth(CALLER, PASSWORD)
        .var("caller", CALLER)
        .expect_pass(&node);
    let log = node.log_text();
    assert_eq!(log.matches("menu: no key").count(), 2, "two tries");
    assert!(log.contains("menu: retries used up"));
    let cdr = newest_cdr(&node, "5");
    assert_eq!(&cdr[1..4], [CALLER, "5", "answered"], "{cdr:?}");
    assert!(cdr.iter().any(|f| f == "hangup=callee"), "{cdr:?}");
    node.assert_no_panic();
    node.stop();
}

#[test]
fn a_key_a_menu_does_not_offer_gets_the_invalid_prompt_and_another_try() {
    let mut node = plan_node(43500);
    // The 7 comes 4 s after the 5: after the invalid prompt, during the menu's again
    // (keys typed during the invalid prompt itself are dropped with the wrong one).
    let text = std::fs::read_to_string(crate::support::scenario("app_dtmf.xml"))
        .expect("scenario")
        .replace(
            "<pause milliseconds=\"1500\"/>",
            "<pause milliseconds=\"4000\"/>",
        );
    let mut caller = keying_caller("6");
    caller.scenario = write_file(node.dir.path(), "app_dtmf_slow.xml", &text);
    caller.expect_pass(&node);
    let log = node.log_text();
    let line = |what: &str, keys: &str| {
        log.lines()
            .position(|l| l.contains(what) && l.contains(keys))
            .unwrap_or_else(|| panic!("no {what:?} with {keys} in the log"))
    };
    assert!(line("menu: invalid", "keys=5") < line("menu: chosen", "keys=7"));
    let cdr = newest_cdr(&node, "6");
    assert_eq!(&cdr[1..4], [CALLER, "6", "answered"], "{cdr:?}");
    node.assert_no_panic();
    node.stop();
}

#[test]
fn a_dial_nobody_answers_goes_on_with_the_plan_on_the_same_call() {
    let mut node = plan_node(45000);
    // 200 rings and never answers; the dial's 2 s end with a CANCEL to it.
    let port = free_port();
    Sipp::new("register.xml", SippTransport::Udp)
        .auth("200", PASSWORD)
        .var("expires", "600")
        .port(port)
        .expect_pass(&node);
    let mut ringing = Sipp::new("call_uas_ring.xml", SippTransport::Udp)
        .port(port)
        .spawn(&node);
    std::thread::sleep(Duration::from_millis(300));
    keying_caller("200").expect_pass(&node);
    ringing.expect_pass(&node);
    assert_menus_chosen(&node);
    // One call, one CDR: answered by the plan's menu after the dial.
    let cdr = newest_cdr(&node, "200");
    assert_eq!(&cdr[1..4], [CALLER, "200", "answered"], "{cdr:?}");
    let all = node.cli_ok(&["cdr"]);
    assert_eq!(all.lines().count(), 1, "{all}");

    // 300 has no phone: straight to the menu, without ringing anything.
    keying_caller("300").expect_pass(&node);
    let cdr = newest_cdr(&node, "300");
    assert_eq!(&cdr[1..4], [CALLER, "300", "answered"], "{cdr:?}");
    node.assert_no_panic();
    node.stop();
}

/// Registers `number` from a free port and runs the SIPp UAS `scenario` there.
fn phone(node: &Node, number: &str, scenario: &str) -> crate::support::SippChild {
    let port = free_port();
    Sipp::new("register.xml", SippTransport::Udp)
        .auth(number, PASSWORD)
        .var("expires", "600")
        .port(port)
        .expect_pass(node);
    let uas = Sipp::new(scenario, SippTransport::Udp)
        .port(port)
        .spawn(node);
    std::thread::sleep(Duration::from_millis(300));
    uas
}

/// A caller of `number` who talks (a 700 Hz tone) and hangs up after 16 s: the default
/// greeting and the beep take about 11 s.
fn talking_caller(node: &Node, number: &str) -> Sipp {
    crate::support::talking_caller(node, CALLER, PASSWORD, number, Duration::from_secs(16))
}

/// The messages' files in `mailbox`, oldest first.
fn message_files(node: &Node, mailbox: &str) -> Vec<PathBuf> {
    let dir = node.dir.path().join("data").join("voicemail").join(mailbox);
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "wav"))
                .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files.into_iter().map(|(_, p)| p).collect()
}

#[test]
fn a_caller_leaves_voicemail_when_the_extension_is_busy_and_when_nobody_answers() {
    let mut node = plan_node(47000);
    let mut busy = phone(&node, "400", "call_uas_busy.xml");
    talking_caller(&node, "400").expect_pass(&node);
    busy.expect_pass(&node);
    // The recorder writes the file while the caller talks: a file is there before the
    // message is saved, so wait for the save (logged), then read the file.
    wait_messages_left(&node, 1);
    let first = wait_for("the first message", Duration::from_secs(5), || {
        message_files(&node, "400").into_iter().next()
    });
    let mut ringing = phone(&node, "400", "call_uas_ring.xml");
    talking_caller(&node, "400").expect_pass(&node);
    ringing.expect_pass(&node);
    wait_messages_left(&node, 2);
    let files = wait_for("the second message", Duration::from_secs(5), || {
        Some(message_files(&node, "400")).filter(|f| f.len() == 2)
    });
    assert_eq!(files[0], first);
    for file in &files {
        // The greeting and the beep come first: what is left of the 16 s is the
        // message, and it is the caller's tone.
        let heard = crate::baresip::Heard::of(file);
        assert!(
            (2.0..8.0).contains(&heard.seconds),
            "{}: {heard:?}",
            file.display()
        );
        assert!(
            (600.0..800.0).contains(&heard.rough_hz),
            "{}: {heard:?}",
            file.display()
        );
    }
    let log = node.log_text();
    assert_eq!(
        log.matches("voicemail left").count(),
        2,
        "two messages logged"
    );
    // CDRs are written by the records writer after the call's task ends, which may be
    // after the message is saved: wait for both, then check them.
    let cdrs = wait_for("both calls' CDRs", Duration::from_secs(10), || {
        Some(node.cli_ok(&["cdr"])).filter(|c| c.lines().count() >= 2)
    });
    assert_eq!(cdrs.lines().count(), 2, "{cdrs}");
    assert!(cdrs.lines().all(|l| l.contains("\tanswered\t")), "{cdrs}");
    node.assert_no_panic();
    node.stop();
}

/// Waits until `n` voicemail messages have been saved (the app logs each once it is
/// stored, after the caller hung up).
fn wait_messages_left(node: &Node, n: usize) {
    wait_for(
        &format!("{n} saved messages"),
        Duration::from_secs(10),
        || (node.log_text().matches("voicemail left").count() >= n).then_some(()),
    );
}

/// `ringfort voicemail list MAILBOX`: (id, folder, file) per message.
fn listed(node: &Node, mailbox: &str) -> Vec<(String, String, PathBuf)> {
    node.cli_ok(&["voicemail", "list", mailbox])
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].to_owned(), f[1].to_owned(), PathBuf::from(f[5]))
        })
        .collect()
}

#[test]
fn a_crash_loses_no_saved_message_and_keeps_the_one_being_recorded() {
    let mut node = plan_node(48000);
    // 401 has no phone: straight to its voicemail. The first message is saved...
    talking_caller(&node, "401").expect_pass(&node);
    let saved = wait_for("the saved message", Duration::from_secs(5), || {
        listed(&node, "401").into_iter().next()
    });
    let saved_bytes = std::fs::read(&saved.2).expect("saved file");
    // ...and the node dies while the second caller speaks (the greeting and the beep
    // take about 11 s; 3 s of speech are on disk when it dies).
    let mut second = talking_caller(&node, "401").spawn(&node);
    std::thread::sleep(Duration::from_millis(14_500));
    node.kill();
    drop(second.wait(Duration::from_secs(1)));
    node.start();
    let messages = listed(&node, "401");
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(
        messages[0].0, saved.0,
        "the saved message is still the first"
    );
    assert_eq!(
        std::fs::read(&messages[0].2).expect("saved file"),
        saved_bytes,
        "the saved message is intact"
    );
    let cut = crate::baresip::Heard::of(&messages[1].2);
    assert!((1.0..6.0).contains(&cut.seconds), "{cut:?}");
    assert!((600.0..800.0).contains(&cut.rough_hz), "{cut:?}");
    assert!(node.log_text().contains("kept as a message"));
    node.stop();
}

#[test]
fn three_phones_in_a_dialplan_room_each_hear_the_other_two() {
    use crate::baresip::Baresip;
    let mut node = plan_node(49000);
    let phone = |number, tone_hz| Baresip::local(&node, number, PASSWORD, tone_hz);
    let tones = [("100", 440u32), ("200", 1000), ("300", 1700)];
    let mut phones: Vec<Baresip> = tones.iter().map(|(n, hz)| phone(n, *hz)).collect();
    for p in phones.iter_mut() {
        p.start(&["/dial 8100".to_owned()], Duration::from_secs(20));
    }
    for p in &phones {
        p.wait_call_ended(Duration::from_secs(15));
    }
    for (i, p) in phones.iter().enumerate() {
        let heard = p.received();
        let own = f64::from(tones[i].1);
        for (j, (other, hz)) in tones.iter().enumerate() {
            if i == j {
                continue;
            }
            assert!(
                heard.power_at(f64::from(*hz)) > 10.0 * heard.power_at(own),
                "{} hears {other}'s {hz} Hz over its own {own} Hz: {heard:?}",
                tones[i].0
            );
        }
    }
    for p in phones.iter_mut() {
        p.stop();
    }
    node.assert_no_panic();
    node.stop();
}

#[test]
fn the_lamp_lights_for_a_new_message_and_goes_out_when_the_owner_deletes_it() {
    let mut node = plan_node(41500);
    node.cli_ok(&["voicemail", "pin", "401", "1234"]);
    let flags = tempfile::tempdir().expect("tempdir");
    let flag = flags.path().join("step");
    // 401's phone watches its mailbox.
    let mut lamp = Sipp::new("mwi_watch_read_delete.xml", SippTransport::Udp)
        .service("401")
        .auth("401", PASSWORD)
        .var("flag", &flag.display().to_string())
        .spawn(&node);
    crate::support::wait_flag(&mut lamp, &node, &flag, "1");
    // 100 leaves a message (401 has no phone to ring): the lamp lights, 1 new.
    talking_caller(&node, "401").expect_pass(&node);
    crate::support::wait_flag(&mut lamp, &node, &flag, "2");
    // The owner dials *97 from 401: PIN, listen (the lamp: 0 new, 1 old), delete (off).
    Sipp::new("vm_retrieve.xml", SippTransport::Udp)
        .service("*97")
        .auth("401", PASSWORD)
        .var("caller", "401")
        .expect_pass(&node);
    lamp.expect_pass(&node);
    assert!(
        node.cli_ok(&["voicemail", "list", "401"]).trim().is_empty(),
        "the message is gone"
    );
    let log = node.log_text();
    assert!(log.contains("voicemail login"), "logged in with the PIN");
    node.assert_no_panic();
    node.stop();
}

/// The next message-waiting NOTIFY on `sock` (answered 200, as a phone does): its
/// `Messages-Waiting` and `Voice-Message` values. Retransmissions of one already
/// answered are answered again and skipped.
fn next_notify(sock: &std::net::UdpSocket, seen: &mut Vec<String>) -> (String, String) {
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = sock.recv_from(&mut buf).expect("a NOTIFY in time");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !text.starts_with("NOTIFY ") {
            continue;
        }
        let header = |name: &str| {
            text.lines()
                .find(|l| {
                    l.to_ascii_lowercase()
                        .starts_with(&format!("{}:", name.to_ascii_lowercase()))
                })
                .map(|l| l[name.len() + 1..].trim().to_owned())
                .unwrap_or_default()
        };
        let ok = format!(
            "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=phone\r\nCall-ID: {}\r\n\
             CSeq: {}\r\nContent-Length: 0\r\n\r\n",
            header("Via"),
            header("From"),
            header("To"),
            header("Call-ID"),
            header("CSeq")
        );
        sock.send_to(ok.as_bytes(), from)
            .expect("200 to the NOTIFY");
        let call_id = header("Call-ID");
        if seen.contains(&call_id) {
            continue;
        }
        seen.push(call_id);
        assert!(text.contains("Event: message-summary"), "{text}");
        assert!(text.contains("Message-Account: sip:402@"), "{text}");
        return (header("Messages-Waiting"), header("Voice-Message"));
    }
}

/// 402's phone registers (SIPp), then its port is ours: NOTIFYs come to this socket.
fn phone_402(node: &Node) -> std::net::UdpSocket {
    let port = free_port();
    Sipp::new("register.xml", SippTransport::Udp)
        .auth("402", PASSWORD)
        .var("expires", "600")
        .port(port)
        .expect_pass(node);
    let sock = std::net::UdpSocket::bind(("127.0.0.1", port)).expect("the phone's port");
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    sock
}

#[test]
fn unsolicited_mwi_reaches_a_phone_that_registers_without_subscribing() {
    let mut node = plan_node_with(41700, "[voicemail]\nunsolicited_mwi = true\n");
    let sock = phone_402(&node);
    let mut seen = Vec::new();
    // Registering: the lamp's state at once (retransmitted until answered).
    assert_eq!(
        next_notify(&sock, &mut seen),
        ("no".to_owned(), "0/0 (0/0)".to_owned())
    );
    // A message: the lamp lights.
    talking_caller(&node, "7402").expect_pass(&node);
    assert_eq!(
        next_notify(&sock, &mut seen),
        ("yes".to_owned(), "1/0 (0/0)".to_owned())
    );
    node.assert_no_panic();
    node.stop();
}

#[test]
fn the_lamp_goes_out_when_the_message_is_deleted_from_the_admin_api() {
    let mut node = plan_node_with(48500, "[voicemail]\nunsolicited_mwi = true\n");
    let sock = phone_402(&node);
    let mut seen = Vec::new();
    assert_eq!(next_notify(&sock, &mut seen).0, "no");
    crate::support::talking_caller(&node, CALLER, PASSWORD, "7402", Duration::from_secs(3))
        .expect_pass(&node);
    assert_eq!(
        next_notify(&sock, &mut seen),
        ("yes".to_owned(), "1/0 (0/0)".to_owned())
    );
    // Heard, then deleted, from the panel's API: the lamp follows each as it does the
    // phone menu.
    node.cli_ok(&["admin", "add", "root"]);
    let out = node.cli_ok(&["admin", "token", "root", "lamp"]);
    let bearer = format!(
        "Bearer {}",
        out.rsplit(' ').next().unwrap_or_default().trim()
    );
    let auth = [("Authorization", bearer.as_str())];
    let http = |method: &str, path: &str, body: Option<&str>| {
        crate::admin_api::http(node.http_addr(), method, path, &auth, body)
    };
    let (status, _, body) = http("GET", "/api/v1/voicemail/402/messages", None);
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let id = list[0]["id"].as_str().expect("a message").to_owned();
    let message = format!("/api/v1/voicemail/402/messages/{id}");
    let (status, _, body) = http("PUT", &message, Some(r#"{"folder": "old"}"#));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        next_notify(&sock, &mut seen),
        ("no".to_owned(), "0/1 (0/0)".to_owned())
    );
    let (status, _, body) = http("DELETE", &message, None);
    assert_eq!(status, 204, "{body}");
    assert_eq!(
        next_notify(&sock, &mut seen),
        ("no".to_owned(), "0/0 (0/0)".to_owned())
    );
    assert!(node.cli_ok(&["voicemail", "list", "402"]).trim().is_empty());
    node.assert_no_panic();
    node.stop();
}

/// A caller of `number` expecting the final `status`.
fn refused_caller(node: &Node, number: &str, status: u16) -> Sipp {
    let text =
        std::fs::read_to_string(crate::support::scenario("call_uac_fail.xml")).expect("scenario");
    let path = node.dir.path().join(format!("call_uac_fail_{status}.xml"));
    std::fs::write(&path, text.replace("STATUS", &status.to_string())).expect("write");
    let mut s = Sipp::new("call_uac_fail.xml", SippTransport::Udp)
        .service(number)
        .auth(CALLER, PASSWORD)
        .var("caller", CALLER);
    s.scenario = path;
    s
}

fn refusing_plan(status: u16) -> String {
    format!(
        "[defaults]\ncontext = \"internal\"\n\n[context.internal]\n\
         [[context.internal.route]]\nmatch = \"9\"\nsteps = [{{ hangup = {status} }}]\n"
    )
}

#[test]
fn reload_swaps_in_a_valid_plan_and_keeps_the_old_one_when_the_new_is_bad() {
    let mut node = plan_node(42600);
    let plan_file = node.dir.path().join("plans").join("plan.toml");
    std::fs::write(&plan_file, refusing_plan(403)).expect("write");
    // The node started with PLAN; the folder now says 9 -> 403.
    let out = node.cli_ok(&["reload"]);
    assert!(out.contains("told to reload"), "{out}");
    wait_for("the reload", Duration::from_secs(5), || {
        node.log_text().contains("dialplan reloaded").then_some(())
    });
    refused_caller(&node, "9", 403).expect_pass(&node);

    // A mistake on line 7: refused with file and line, the node keeps its plan.
    std::fs::write(
        &plan_file,
        refusing_plan(403).replace("hangup = 403", "hangup = 403, color = 1"),
    )
    .expect("write");
    let bad = node.cli(&["reload"]);
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("plan.toml:7:"), "{err}");
    refused_caller(&node, "9", 403).expect_pass(&node);

    // SIGHUP itself (what `reload` sends) with a good plan: 9 now gets 486.
    std::fs::write(&plan_file, refusing_plan(486)).expect("write");
    node.cli_ok(&["reload"]);
    wait_for("the second reload", Duration::from_secs(5), || {
        (node.log_text().matches("dialplan reloaded").count() >= 2).then_some(())
    });
    refused_caller(&node, "9", 486).expect_pass(&node);
    node.assert_no_panic();
    node.stop();
}

#[test]
fn the_shipped_sample_sends_a_call_to_an_unregistered_extension_to_its_voicemail() {
    let sounds = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sounds");
    let sample = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dialplans");
    let mut node = Node::new(NodeOptions {
        sip: "tcp_idle_timeout_secs = 30\nt1_ms = 100\nt2_ms = 400".into(),
        extra: format!(
            "[media]\nrtp_port_min = 41900\nrtp_port_max = 42898\n\n\
             [paths]\nsounds = \"{}\"\ndialplans = \"{}\"\n",
            sounds.display(),
            sample.display()
        ),
        ..NodeOptions::default()
    });
    node.add_extension("1000", PASSWORD);
    node.add_extension(CALLER, PASSWORD);
    node.start();
    // 100 is no extension of the sample's range, but a phone of the PBX all the same:
    // it dials 1000, which has no phone registered.
    talking_caller(&node, "1000").expect_pass(&node);
    let messages = wait_for("the message", Duration::from_secs(5), || {
        Some(listed(&node, "1000")).filter(|m| !m.is_empty())
    });
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].1, "new");
    assert!(
        node.log_text().contains("default.toml"),
        "routed by the sample"
    );
    node.assert_no_panic();
    node.stop();
}

#[test]
fn a_save_through_the_admin_api_routes_the_next_call_by_it() {
    let mut node = plan_node(50000);
    node.cli_ok(&["admin", "add", "root"]);
    let out = node.cli_ok(&["admin", "token", "root", "plans"]);
    let bearer = format!(
        "Bearer {}",
        out.rsplit(' ').next().unwrap_or_default().trim()
    );
    let addr = node.http_addr();
    let put = |text: String| {
        crate::admin_api::http(
            addr,
            "PUT",
            "/api/v1/dialplans/plan.toml",
            &[("Authorization", &bearer)],
            Some(&serde_json::json!({ "text": text }).to_string()),
        )
    };
    let plan_file = node.dir.path().join("plans").join("plan.toml");

    let (status, _, body) = put(refusing_plan(486));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"routes\":1"), "{body}");
    assert_eq!(
        std::fs::read_to_string(&plan_file).expect("read"),
        refusing_plan(486)
    );
    refused_caller(&node, "9", 486).expect_pass(&node);

    // A mistake on line 7: 422 with file and line, nothing written, the plan kept.
    let (status, _, body) =
        put(refusing_plan(403).replace("hangup = 403", "hangup = 403, color = 1"));
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("\"file\":\"plan.toml\",\"line\":7"), "{body}");
    assert_eq!(
        std::fs::read_to_string(&plan_file).expect("read"),
        refusing_plan(486)
    );
    refused_caller(&node, "9", 486).expect_pass(&node);
    node.assert_no_panic();
    node.stop();
}
