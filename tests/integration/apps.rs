//! Apps on real calls: the node runs in this process with test apps on numbers of their
//! own, written against the app API (`ringfort::call::Channel`), and real SIPp and
//! baresip phones call them. Shows key presses reaching an app by every method a phone
//! uses, an app playing a prompt to a phone and recording what the phone says, and an
//! app bridging its caller to an extension (and going on when nobody answers).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringfort::call::channel::{
    BridgeEnd, BridgeOptions, BridgeRequest, BridgeSide, ChannelError, CollectEnd, CollectOptions,
    Collected, ConferenceOptions, PlayEnd, PlayOptions, RecordEnd, RecordLimits, Recorded, Sound,
};
use ringfort::call::{app, Apps, Channel, SipChannel};
use ringfort::config::Config;
use ringfort::media::dtmf::Digit;
use ringfort::node::RunningNode;
use ringfort::store::Store;

use crate::baresip::{Baresip, Heard};
use crate::support::{free_port, wait_for, Node, NodeOptions, Sipp, SippTransport};

const PASSWORD: &str = "app-test-pass";

/// A node running in this process (so the test's apps answer), on the config and data dir
/// of a [`Node`] that is not started as a process.
pub(crate) struct InProcess {
    node: Option<RunningNode>,
    rt: tokio::runtime::Runtime,
}

impl InProcess {
    pub(crate) fn start(node: &Node, apps: Apps) -> InProcess {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let running = rt.block_on(async {
            let cfg = Config::load(&node.config).expect("config");
            let store = Store::connect(&cfg.database_url(), cfg.database.max_connections)
                .await
                .expect("store");
            store.migrate().await.expect("migrate");
            ringfort::node::start_with_apps(&cfg, store, apps)
                .await
                .expect("node")
        });
        InProcess {
            node: Some(running),
            rt,
        }
    }

    fn stop(&mut self) {
        if let Some(n) = self.node.take() {
            self.rt.block_on(n.shutdown());
        }
    }

    /// The running node (until stopped).
    pub(crate) fn running(&self) -> &RunningNode {
        self.node.as_ref().expect("the node is running")
    }

    /// Runs a future on the node's runtime.
    pub(crate) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

fn app_node(ports: u16) -> Node {
    let sounds = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sounds");
    let node = Node::new(NodeOptions {
        extra: format!(
            "[media]\nrtp_port_min = {ports}\nrtp_port_max = {}\n\n[paths]\nsounds = \"{}\"\n",
            ports + 998,
            sounds.display()
        ),
        ..NodeOptions::default()
    });
    node.add_extension("100", PASSWORD);
    node
}

/// The last CDR's fields (`ringfort cdr` columns).
fn last_cdr(node: &Node) -> Vec<String> {
    let line = wait_for("the CDR", Duration::from_secs(10), || {
        node.cli_ok(&["cdr", "--limit", "1"])
            .lines()
            .next()
            .map(str::to_owned)
    });
    line.split('\t').map(str::to_owned).collect()
}

/// An app that collects digits up to `#`, reports them, plays a beep and hangs up.
async fn digits_app(mut ch: SipChannel, seen: Arc<Mutex<Option<Collected>>>) {
    let run = async {
        ch.answer().await?;
        let got = ch
            .collect_digits(CollectOptions {
                max_digits: 10,
                first_timeout: Duration::from_secs(10),
                inter_digit_timeout: Duration::from_secs(5),
                terminators: vec![Digit::Hash],
            })
            .await?;
        *seen.lock().expect("lock") = Some(got);
        ch.play(&[Sound::file("beep.wav")], PlayOptions::default())
            .await?;
        ch.hangup().await
    };
    if let Err(e) = run.await {
        panic!("the app failed: {e}");
    }
}

#[test]
fn key_presses_by_rfc4733_and_both_info_bodies_reach_an_app() {
    let node = app_node(42000);
    let seen = Arc::new(Mutex::new(None));
    let mut apps = Apps::new();
    let s = seen.clone();
    apps.insert("800".into(), app(move |ch| digits_app(ch, s.clone())));
    let mut pbx = InProcess::start(&node, apps);
    Sipp::new("app_dtmf.xml", SippTransport::Udp)
        .service("800")
        .auth("100", PASSWORD)
        .var("caller", "100")
        .expect_pass(&node);
    let got = seen.lock().expect("lock").clone();
    assert_eq!(
        got,
        Some(Collected {
            digits: "57".into(),
            end: CollectEnd::Terminator(Digit::Hash)
        }),
        "5 by RFC 4733, 7 by dtmf-relay INFO, # by dtmf INFO"
    );
    pbx.stop();
    let cdr = last_cdr(&node);
    assert_eq!(&cdr[1..4], ["100", "800", "answered"], "{cdr:?}");
    assert!(
        cdr.iter().any(|f| f == "hangup=callee"),
        "the app hung up: {cdr:?}"
    );
}

#[test]
fn an_app_plays_a_prompt_to_baresip_and_records_what_it_says() {
    let node = app_node(43000);
    let recording = node.dir.path().join("data").join("said.wav");
    let result: Arc<Mutex<Option<(PlayEnd, Recorded)>>> = Arc::new(Mutex::new(None));
    let mut apps = Apps::new();
    let (path, out) = (recording.clone(), result.clone());
    apps.insert(
        "801".into(),
        app(move |mut ch| {
            let (path, out) = (path.clone(), out.clone());
            async move {
                let run = async {
                    ch.answer().await?;
                    let played = ch
                        .play(&[Sound::file("beep.wav")], PlayOptions::default())
                        .await?;
                    let limits = RecordLimits {
                        max: Duration::from_secs(2),
                        silence: None,
                        ..RecordLimits::default()
                    };
                    let recorded = ch.record(path, limits).await?;
                    *out.lock().expect("lock") = Some((played, recorded));
                    ch.hangup().await
                };
                if let Err(e) = run.await {
                    panic!("the app failed: {e}");
                }
            }
        }),
    );
    let mut pbx = InProcess::start(&node, apps);
    let mut phone = Baresip::local(&node, "100", PASSWORD, 1000);
    phone.start(&["/dial 801".to_owned()], Duration::from_secs(20));
    phone.wait_call_ended(Duration::from_secs(15));
    let (played, recorded) = result
        .lock()
        .expect("lock")
        .clone()
        .expect("the app finished");
    assert_eq!(played, PlayEnd::Finished);
    assert_eq!(recorded.end, RecordEnd::MaxDuration);
    assert_eq!(recorded.duration, Duration::from_secs(2));
    // The phone heard the beep (440 Hz), the app recorded the phone's 1000 Hz tone.
    let heard = phone.received();
    assert!(
        heard.power_at(440.0) > 100.0 * heard.power_at(1000.0) && heard.rms > 0.05,
        "the phone heard the prompt: {heard:?}"
    );
    let said = Heard::of(&recording);
    assert!(
        (1.9..=2.1).contains(&said.seconds),
        "2 s recorded: {said:?}"
    );
    assert!(
        said.power_at(1000.0) > 100.0 * said.power_at(440.0) && said.rms > 0.2,
        "the recording holds the phone's tone: {said:?}"
    );
    phone.stop();
    pbx.stop();
    let cdr = last_cdr(&node);
    assert_eq!(&cdr[1..4], ["100", "801", "answered"], "{cdr:?}");
}

#[test]
fn two_baresip_phones_in_a_conference_hear_each_other_but_not_themselves() {
    let node = app_node(44000);
    node.add_extension("200", PASSWORD);
    let mut apps = Apps::new();
    apps.insert(
        "802".into(),
        app(|mut ch| async move {
            let run = async {
                ch.answer().await?;
                ch.join_conference("1", ConferenceOptions::default())
                    .await?;
                ch.hangup().await
            };
            // The phones hang up when their tone ends: that is how this app ends.
            if let Err(e) = run.await {
                assert_eq!(e, ChannelError::HungUp, "the app failed");
            }
        }),
    );
    let mut pbx = InProcess::start(&node, apps);
    let phone = |number, tone_hz| Baresip::local(&node, number, PASSWORD, tone_hz);
    let mut a = phone("100", 440);
    let mut b = phone("200", 1000);
    a.start(&["/dial 802".to_owned()], Duration::from_secs(20));
    b.start(&["/dial 802".to_owned()], Duration::from_secs(20));
    a.wait_call_ended(Duration::from_secs(15));
    b.wait_call_ended(Duration::from_secs(15));
    for (who, phone, hears, own) in [("100", &a, 1000.0, 440.0), ("200", &b, 440.0, 1000.0)] {
        let heard = phone.received();
        assert!(
            heard.power_at(hears) > 100.0 * heard.power_at(own),
            "{who} hears the other's {hears} Hz, 20 dB over its own {own} Hz: {heard:?}"
        );
        assert!(heard.rms > 0.1, "{who} heard the room: {heard:?}");
    }
    a.stop();
    b.stop();
    pbx.stop();
}

#[test]
fn a_message_ends_when_the_caller_hangs_up_and_its_file_is_complete_at_once() {
    let node = app_node(45000);
    let file = node.dir.path().join("data").join("message.wav");
    let result: Arc<Mutex<Option<Result<Recorded, ChannelError>>>> = Arc::new(Mutex::new(None));
    let mut apps = Apps::new();
    let (path, out) = (file.clone(), result.clone());
    apps.insert(
        "803".into(),
        app(move |mut ch| {
            let (path, out) = (path.clone(), out.clone());
            async move {
                let recorded = async {
                    ch.answer().await?;
                    let limits = RecordLimits {
                        max: Duration::from_secs(60),
                        silence: None,
                        ..RecordLimits::default()
                    };
                    ch.record(path, limits).await
                }
                .await;
                *out.lock().expect("lock") = Some(recorded);
            }
        }),
    );
    let mut pbx = InProcess::start(&node, apps);
    // The caller speaks (a 700 Hz tone) for 4 s but hangs up after about 2.5 s.
    let pcap = node.dir.path().join("speech.pcap");
    let tone: Vec<i16> = (0..32_000)
        .map(|i| (8000.0 * (std::f64::consts::TAU * 700.0 * f64::from(i) / 8000.0).sin()) as i16)
        .collect();
    crate::support::pcmu_pcap(&pcap, &tone);
    let text = std::fs::read_to_string(crate::support::scenario("call_uac_rtp.xml"))
        .expect("scenario")
        .replace(
            "/usr/share/sip-tester/g711a.pcap",
            &pcap.display().to_string(),
        );
    let scenario = node.dir.path().join("call_uac_rtp_tone.xml");
    std::fs::write(&scenario, text).expect("write");
    let mut sipp = Sipp::new("call_uac_rtp.xml", SippTransport::Udp)
        .service("803")
        .auth("100", PASSWORD)
        .var("caller", "100");
    sipp.scenario = scenario;
    sipp.expect_pass(&node);
    // The app has the message as soon as the caller is gone, not after the call lingers.
    let recorded = wait_for("the message", Duration::from_secs(3), || {
        result.lock().expect("lock").clone()
    })
    .expect("recorded");
    assert_eq!(recorded.end, RecordEnd::HungUp);
    let secs = recorded.duration.as_secs_f64();
    assert!((2.0..=4.0).contains(&secs), "{secs} s recorded");
    // The header already tells the whole length: the file is complete.
    let reader = hound::WavReader::open(&file).expect("wav");
    assert_eq!(
        u64::from(reader.duration()),
        (recorded.duration.as_millis() * 8) as u64
    );
    let said = Heard::of(&file);
    assert!(
        said.power_at(700.0) > 100.0 * said.power_at(440.0) && said.rms > 0.05,
        "the message holds the caller's tone: {said:?}"
    );
    pbx.stop();
}

#[test]
fn a_caller_who_cancels_while_an_app_rings_ends_the_app_and_leaves_a_cancelled_cdr() {
    let node = app_node(46000);
    let seen: Arc<Mutex<Option<Result<(), ChannelError>>>> = Arc::new(Mutex::new(None));
    let mut apps = Apps::new();
    let out = seen.clone();
    apps.insert(
        "804".into(),
        app(move |mut ch| {
            let out = out.clone();
            async move {
                let r = async {
                    ch.ring().await?;
                    // Ring a while before answering, as a queue or a delayed pickup does.
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    ch.answer().await
                }
                .await;
                *out.lock().expect("lock") = Some(r);
            }
        }),
    );
    let mut pbx = InProcess::start(&node, apps);
    Sipp::new("call_uac_cancel.xml", SippTransport::Udp)
        .service("804")
        .auth("100", PASSWORD)
        .var("caller", "100")
        .expect_pass(&node);
    let answered = wait_for("the app's answer", Duration::from_secs(6), || {
        seen.lock().expect("lock").clone()
    });
    assert_eq!(answered, Err(ChannelError::HungUp));
    pbx.stop();
    let cdr = last_cdr(&node);
    assert_eq!(&cdr[1..4], ["100", "804", "cancelled"], "{cdr:?}");
}

#[test]
fn an_app_bridges_its_caller_to_a_baresip_extension_and_they_hear_each_other() {
    let node = app_node(47000);
    node.add_extension("200", PASSWORD);
    let result: Arc<Mutex<Option<Result<BridgeEnd, ChannelError>>>> = Arc::new(Mutex::new(None));
    let mut apps = Apps::new();
    let out = result.clone();
    apps.insert(
        "805".into(),
        app(move |mut ch| {
            let out = out.clone();
            async move {
                let r = async {
                    ch.answer().await?;
                    ch.play(&[Sound::file("beep.wav")], PlayOptions::default())
                        .await?;
                    let opts = BridgeOptions {
                        ring_timeout: Duration::from_secs(10),
                        ringback: true,
                    };
                    ch.bridge(BridgeRequest::to("200"), opts).await
                }
                .await;
                *out.lock().expect("lock") = Some(r);
                let _ = ch.hangup().await;
            }
        }),
    );
    let mut pbx = InProcess::start(&node, apps);
    let phone = |number, tone_hz| Baresip::local(&node, number, PASSWORD, tone_hz);
    let mut callee = phone("200", 1000);
    callee.start(&[], Duration::from_secs(30));
    callee.wait_registered();
    // Not 440 Hz: the caller hears the beep and the ringback tone at 440/480 Hz first.
    let mut caller = phone("100", 700);
    caller.start(&["/dial 805".to_owned()], Duration::from_secs(20));
    // The caller hangs up when its tone ends; the callee then gets our BYE.
    caller.wait_call_ended(Duration::from_secs(20));
    callee.wait_call_ended(Duration::from_secs(10));
    let end = wait_for("the bridge's end", Duration::from_secs(5), || {
        result.lock().expect("lock").clone()
    });
    assert_eq!(
        end,
        Ok(BridgeEnd::Answered {
            hangup_by: BridgeSide::Caller
        })
    );
    for (who, phone, hears, own) in [
        ("caller", &caller, 1000.0, 700.0),
        ("callee", &callee, 700.0, 1000.0),
    ] {
        let heard = phone.received();
        assert!(
            heard.power_at(hears) > 100.0 * heard.power_at(own),
            "the {who} hears the other's {hears} Hz, 20 dB over its own {own} Hz: {heard:?}"
        );
        assert!(heard.rms > 0.05, "the {who} heard the other: {heard:?}");
    }
    caller.stop();
    callee.stop();
    pbx.stop();
    let cdr = last_cdr(&node);
    assert_eq!(&cdr[1..4], ["100", "805", "answered"], "{cdr:?}");
}

#[test]
fn a_bridge_to_an_unregistered_extension_is_unavailable_and_to_a_busy_one_busy() {
    let node = app_node(48000);
    node.add_extension("200", PASSWORD);
    node.add_extension("300", PASSWORD);
    let result: Arc<Mutex<Vec<Result<BridgeEnd, ChannelError>>>> = Arc::new(Mutex::new(Vec::new()));
    let mut apps = Apps::new();
    let out = result.clone();
    apps.insert(
        "806".into(),
        app(move |mut ch| {
            let out = out.clone();
            async move {
                ch.answer().await.expect("answered");
                for number in ["300", "200"] {
                    let opts = BridgeOptions {
                        ring_timeout: Duration::from_secs(5),
                        ringback: true,
                    };
                    let end = ch.bridge(BridgeRequest::to(number), opts).await;
                    out.lock().expect("lock").push(end);
                }
                let _ = ch.hangup().await;
            }
        }),
    );
    let mut pbx = InProcess::start(&node, apps);
    // 200 is a SIPp phone that answers 486.
    let port = free_port();
    Sipp::new("register.xml", SippTransport::Udp)
        .auth("200", PASSWORD)
        .var("expires", "600")
        .port(port)
        .expect_pass(&node);
    let mut busy = Sipp::new("call_uas_busy.xml", SippTransport::Udp)
        .port(port)
        .spawn(&node);
    std::thread::sleep(Duration::from_millis(300));
    Sipp::new("call_uac_wait_bye.xml", SippTransport::Udp)
        .service("806")
        .auth("100", PASSWORD)
        .var("caller", "100")
        .expect_pass(&node);
    busy.expect_pass(&node);
    let ends = result.lock().expect("lock").clone();
    assert_eq!(ends, vec![Ok(BridgeEnd::Unavailable), Ok(BridgeEnd::Busy)]);
    pbx.stop();
}
