//! The voicemail flows on [`FakeChannel`] (a scripted caller; one script step per
//! operation that waits on the caller), the service on in-memory SQLite and a temp dir.

use super::*;
use crate::apps::fake::{Caller, FakeChannel, Op};
use crate::store::{Store, VoicemailCounts};

struct Fixture {
    _dir: tempfile::TempDir,
    vm: Voicemail,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::connect("sqlite::memory:", 1).await.expect("store");
    store.migrate().await.expect("migrate");
    let vm = Voicemail::open(store, dir.path()).await.expect("open");
    Fixture { _dir: dir, vm }
}

fn call(caller: &str, script: Vec<Caller>) -> FakeChannel {
    FakeChannel::new(caller, "vm", script).writing_recordings()
}

fn played(ch: &FakeChannel) -> Vec<Vec<Sound>> {
    ch.log
        .iter()
        .filter_map(|op| match op {
            Op::Played(s, _) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

fn said(ch: &FakeChannel, name: &str) -> usize {
    played(ch)
        .iter()
        .filter(|p| p.contains(&sound(name)))
        .count()
}

/// Leaves a message of `secs` seconds from `caller` in `mailbox`.
async fn leave(vm: &Voicemail, mailbox: &str, caller: &str, secs: u64) -> VoicemailMessage {
    let script = vec![
        Caller::Silent,
        Caller::Silent,
        Caller::Says(Duration::from_secs(secs)),
    ];
    let mut ch = call(caller, script);
    match leave_message(&mut ch, vm, mailbox, Greeting::Unavailable).await {
        Ok(Left::Saved(m)) => m,
        other => panic!("not saved: {other:?}"),
    }
}

#[tokio::test]
async fn a_message_is_left_after_the_default_greeting_and_the_tone() {
    let f = fixture().await;
    let script = vec![
        Caller::Silent,
        Caller::Silent,
        Caller::Says(Duration::from_secs(4)),
    ];
    let mut ch = call("200", script);
    let left = leave_message(&mut ch, &f.vm, "100", Greeting::Unavailable)
        .await
        .expect("app");
    let Left::Saved(m) = left else {
        panic!("{left:?}")
    };
    assert_eq!((m.caller.as_str(), m.duration_ms), ("200", 4000));
    assert!(f.vm.absolute(&m.path).is_file());
    let greeting = [
        "vm/person-at-extension",
        "digits/1",
        "digits/0",
        "digits/0",
        "vm/is-unavailable",
        "vm/leave-message-after-tone",
    ]
    .map(sound)
    .to_vec();
    assert_eq!(ch.log[0], Op::Answered);
    assert_eq!(played(&ch)[0], greeting);
    assert_eq!(played(&ch)[1], vec![sound("beep")]);
    assert!(matches!(&ch.log[3], Op::Recorded(_, RecordEnd::Silence)));
    assert_eq!(played(&ch)[2], vec![sound("vm/message-saved")]);
    assert_eq!(ch.log.last(), Some(&Op::HungUp));
    assert_eq!(
        f.vm.counts("100").await.expect("counts"),
        VoicemailCounts { new: 1, old: 0 }
    );
}

#[tokio::test]
async fn a_message_under_a_second_is_discarded() {
    let f = fixture().await;
    let script = vec![
        Caller::Silent,
        Caller::Silent,
        Caller::Says(Duration::from_millis(400)),
    ];
    let mut ch = call("200", script);
    let left = leave_message(&mut ch, &f.vm, "100", Greeting::Busy)
        .await
        .expect("app");
    assert_eq!(left, Left::TooShort);
    assert_eq!(played(&ch).last(), Some(&vec![sound("goodbye")]));
    assert_eq!(
        std::fs::read_dir(f.vm.mailbox_dir("100"))
            .expect("dir")
            .count(),
        0,
        "no file left"
    );
    assert_eq!(
        f.vm.counts("100").await.expect("counts"),
        VoicemailCounts::default()
    );
}

#[tokio::test]
async fn hanging_up_while_recording_keeps_the_message() {
    let f = fixture().await;
    let mut ch = call("200", vec![Caller::Silent, Caller::Silent, Caller::HangsUp]);
    let left = leave_message(&mut ch, &f.vm, "100", Greeting::Unavailable)
        .await
        .expect("app");
    assert!(
        matches!(left, Left::Saved(ref m) if m.duration_ms == 3000),
        "{left:?}"
    );
    assert!(matches!(
        ch.log.last(),
        Some(Op::Recorded(_, RecordEnd::HungUp))
    ));
    // And a caller who hangs up during the greeting leaves nothing.
    let mut ch = call("201", vec![Caller::HangsUp]);
    assert_eq!(
        leave_message(&mut ch, &f.vm, "100", Greeting::Unavailable)
            .await
            .expect("app"),
        Left::HungUpBeforeTone
    );
    assert_eq!(
        f.vm.counts("100").await.expect("counts"),
        VoicemailCounts { new: 1, old: 0 }
    );
}

#[tokio::test]
async fn a_recorded_greeting_replaces_the_default_and_none_goes_to_the_tone() {
    let f = fixture().await;
    let g =
        f.vm.start_greeting("100", GreetingKind::Busy)
            .expect("start");
    crate::voicemail::tests::write_wav(&g.recording_path, 2000, true);
    assert!(f
        .vm
        .save_greeting(&g, Duration::from_secs(2))
        .await
        .expect("save"));
    let script = vec![
        Caller::Silent,
        Caller::Silent,
        Caller::Says(Duration::from_secs(2)),
    ];
    let mut ch = call("200", script);
    leave_message(&mut ch, &f.vm, "100", Greeting::Busy)
        .await
        .expect("app");
    assert_eq!(
        played(&ch)[0],
        vec![Sound::File(
            f.vm.mailbox_dir("100").join("greeting-busy.wav")
        )]
    );
    let script = vec![Caller::Silent, Caller::Says(Duration::from_secs(2))];
    let mut ch = call("200", script);
    leave_message(&mut ch, &f.vm, "100", Greeting::None)
        .await
        .expect("app");
    assert_eq!(played(&ch)[0], vec![sound("beep")]);
}

#[tokio::test]
async fn the_owner_listens_deletes_and_saves() {
    let f = fixture().await;
    let first = leave(&f.vm, "100", "201", 2).await;
    let second = leave(&f.vm, "100", "202", 3).await;
    let script = vec![
        Caller::Silent,       // "you have two new messages"
        Caller::presses("1"), // main menu: listen
        Caller::Silent,       // first message, to the end
        Caller::presses("7"), // message menu: delete
        Caller::Silent,       // "deleted"
        Caller::presses("9"), // during the second message: save, at once
        Caller::Silent,       // "saved"
        Caller::Silent,       // "no more messages"
        Caller::presses("*"), // main menu: hang up
    ];
    let mut ch = call("100", script);
    voicemail_main(&mut ch, &f.vm, Some("100"), "100")
        .await
        .expect("app");
    let p = played(&ch);
    assert_eq!(
        p[0],
        ["vm/you-have", "digits/2", "vm/new", "vm/messages"]
            .map(sound)
            .to_vec()
    );
    assert_eq!(
        p[2],
        [
            vec![sound("vm/first-message")],
            caller_said(&first.caller),
            vec![Sound::Silence(200), Sound::File(f.vm.absolute(&first.path))]
        ]
        .concat()
    );
    assert_eq!(p[3], vec![sound("vm/message-menu")]);
    assert_eq!(p[4], vec![sound("vm/deleted")]);
    assert_eq!(
        p[5],
        [
            vec![sound("vm/first-message")],
            caller_said(&second.caller),
            vec![
                Sound::Silence(200),
                Sound::File(f.vm.absolute(&second.path))
            ]
        ]
        .concat(),
        "the second is now the first"
    );
    assert_eq!(p[6], vec![sound("vm/saved")], "9 acted without the menu");
    assert_eq!(said(&ch, "vm/no-more-messages"), 1);
    assert_eq!(ch.log.last(), Some(&Op::HungUp));
    assert!(!f.vm.absolute(&first.path).exists());
    let left = f.vm.messages("100").await.expect("list");
    assert_eq!(left.len(), 1);
    assert_eq!(
        (left[0].id.as_str(), left[0].folder),
        (second.id.as_str(), VoicemailFolder::Old)
    );
}

#[tokio::test]
async fn remote_login_takes_the_pin_in_three_tries() {
    let f = fixture().await;
    f.vm.set_pin("100", "1234").await.expect("pin");
    let script = vec![
        Caller::presses("100#"),
        Caller::presses("9999#"),
        Caller::Silent, // "login incorrect"
        Caller::presses("100#"),
        Caller::presses("1234#"),
        Caller::Silent,       // "you have no messages"
        Caller::presses("*"), // main menu: hang up
    ];
    let mut ch = call("300", script);
    voicemail_main(&mut ch, &f.vm, None, "300")
        .await
        .expect("app");
    assert_eq!(said(&ch, "vm/login-incorrect"), 1);
    assert_eq!(said(&ch, "vm/no-messages"), 1);
    assert_eq!(said(&ch, "vm/main-menu"), 1);

    // Three wrong PINs: goodbye, and the mailbox was never opened.
    let mut script = Vec::new();
    for _ in 0..3 {
        script.extend([
            Caller::presses("100#"),
            Caller::presses("0000#"),
            Caller::Silent,
        ]);
    }
    let mut ch = call("300", script);
    voicemail_main(&mut ch, &f.vm, None, "300")
        .await
        .expect("app");
    assert_eq!(said(&ch, "vm/login-incorrect"), 3);
    assert_eq!(said(&ch, "vm/main-menu"), 0);
    assert_eq!(played(&ch).last(), Some(&vec![sound("goodbye")]));
    assert_eq!(ch.log.last(), Some(&Op::HungUp));
}

#[tokio::test]
async fn without_a_pin_only_the_owners_phone_gets_in() {
    let f = fixture().await;
    // From another phone: refused without even asking for a PIN.
    let mut script = Vec::new();
    for _ in 0..3 {
        script.extend([Caller::presses("100#"), Caller::Silent]);
    }
    let mut ch = call("300", script);
    voicemail_main(&mut ch, &f.vm, None, "300")
        .await
        .expect("app");
    assert_eq!(said(&ch, "vm/enter-password"), 0);
    assert_eq!(said(&ch, "vm/login-incorrect"), 3);
    assert_eq!(said(&ch, "vm/main-menu"), 0);
    // *97 from the owner's own phone: straight in.
    let mut ch = call("100", vec![Caller::Silent, Caller::presses("*")]);
    voicemail_main(&mut ch, &f.vm, Some("100"), "100")
        .await
        .expect("app");
    assert_eq!(said(&ch, "vm/main-menu"), 1);
    assert_eq!(said(&ch, "vm/login-incorrect"), 0);
}

#[tokio::test]
async fn the_owner_changes_the_pin_and_records_a_greeting() {
    let f = fixture().await;
    let script = vec![
        Caller::Silent,           // counts
        Caller::presses("0"),     // main menu: options
        Caller::presses("5"),     // options: change PIN
        Caller::presses("2468#"), // new PIN
        Caller::presses("2469#"), // again, mistyped
        Caller::Silent,           // "do not match"
        Caller::presses("5"),     // options: change PIN
        Caller::presses("2468#"),
        Caller::presses("2468#"),
        Caller::Silent,       // "changed"
        Caller::presses("1"), // options: unavailable greeting
        Caller::Silent,       // "record after the tone"
        Caller::Silent,       // beep
        Caller::Says(Duration::from_secs(3)),
        Caller::Silent,       // "greeting saved"
        Caller::presses("*"), // options: back
        Caller::presses("*"), // main menu: hang up
    ];
    let mut ch = call("100", script);
    voicemail_main(&mut ch, &f.vm, Some("100"), "100")
        .await
        .expect("app");
    assert_eq!(said(&ch, "vm/password-mismatch"), 1);
    assert_eq!(said(&ch, "vm/password-changed"), 1);
    assert_eq!(said(&ch, "vm/greeting-saved"), 1);
    assert!(f.vm.verify_pin("100", "2468").await.expect("verify"));
    assert!(!f.vm.verify_pin("100", "2469").await.expect("verify"));
    assert!(f
        .vm
        .greeting("100", GreetingKind::Unavailable)
        .await
        .expect("greeting")
        .is_some());
    assert_eq!(ch.log.last(), Some(&Op::HungUp));
}

#[test]
fn numbers_are_said_in_words() {
    let names = |n: u32| -> Vec<String> {
        say_number(n)
            .into_iter()
            .map(|s| match s {
                Sound::File(p) => p.display().to_string(),
                Sound::Silence(_) => "-".into(),
            })
            .collect()
    };
    assert_eq!(names(0), ["digits/0"]);
    assert_eq!(names(7), ["digits/7"]);
    assert_eq!(names(20), ["digits/20"]);
    assert_eq!(names(23), ["digits/20", "digits/3"]);
    assert_eq!(names(100), ["digits/1", "digits/hundred"]);
    assert_eq!(names(315), ["digits/3", "digits/hundred", "digits/15"]);
    assert_eq!(names(2040), ["digits/2", "digits/thousand", "digits/40"]);
    assert_eq!(
        say_digits("10*"),
        ["digits/1", "digits/0", "digits/star"].map(sound).to_vec()
    );
}

#[test]
fn a_message_says_who_left_it() {
    assert_eq!(
        caller_said("102"),
        [
            "vm/from",
            "vm/extension",
            "digits/1",
            "digits/0",
            "digits/2"
        ]
        .map(sound)
        .to_vec()
    );
    assert_eq!(caller_said(""), vec![sound("vm/unknown-caller")]);
}
