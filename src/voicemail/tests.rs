//! The service on in-memory SQLite and a temp data directory. Crashes are played by
//! leaving files as a killed process would and opening the service again.

use super::*;
use crate::media::recorder::{Layout, Recorder};

async fn store() -> Store {
    let s = Store::connect("sqlite::memory:", 1).await.expect("store");
    s.migrate().await.expect("migrate");
    s
}

/// A WAV of `ms` milliseconds at 8 kHz, as the channel's recorder writes it; `finish`
/// false leaves it as a killed process would (header sizes not rewritten).
pub(crate) fn write_wav(path: &Path, ms: u32, finish: bool) {
    let mut r = Recorder::create(path, Layout::Mixed, 8000).expect("recorder");
    let frame: Vec<i16> = (0..160).map(|i| ((i % 40) * 400 - 8000) as i16).collect();
    for _ in 0..ms / 20 {
        r.write(&frame, &[]).expect("write");
    }
    if finish {
        r.finish().expect("finish");
    } else {
        // A crash: the buffered tail and the sizes never reach the header.
        std::mem::forget(r);
    }
}

#[tokio::test]
async fn a_message_is_saved_counted_heard_and_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vm = Voicemail::open(store().await, dir.path())
        .await
        .expect("open");
    let mut changes = vm.subscribe_counts();
    let p = vm.start_message("100", "200", "Bob").expect("start");
    assert!(p
        .recording_path
        .starts_with(dir.path().join("voicemail/100")));
    write_wav(&p.recording_path, 2000, true);
    let m = vm
        .save_message(&p, Duration::from_millis(2000))
        .await
        .expect("save")
        .expect("kept");
    assert_eq!(m.path, format!("voicemail/100/{}.wav", p.id));
    assert!(vm.absolute(&m.path).is_file());
    assert!(!p.recording_path.exists(), "the temp name is gone");
    let names: Vec<_> = std::fs::read_dir(vm.mailbox_dir("100"))
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names.len(), 1, "no .meta left: {names:?}");
    assert_eq!(
        (m.caller.as_str(), m.caller_name.as_str(), m.duration_ms),
        ("200", "Bob", 2000)
    );
    assert_eq!(
        changes.try_recv().expect("announced"),
        CountsChanged {
            mailbox: "100".into(),
            counts: VoicemailCounts { new: 1, old: 0 }
        }
    );
    assert!(vm
        .move_message("100", &m.id, VoicemailFolder::Old)
        .await
        .expect("move"));
    assert_eq!(
        changes.try_recv().expect("announced").counts,
        VoicemailCounts { new: 0, old: 1 }
    );
    assert!(vm.delete_message("100", &m.id).await.expect("delete"));
    assert!(!vm.absolute(&m.path).exists());
    assert_eq!(
        changes.try_recv().expect("announced").counts,
        VoicemailCounts::default()
    );
    assert!(!vm.delete_message("100", &m.id).await.expect("delete"));
}

#[tokio::test]
async fn a_message_under_a_second_is_not_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vm = Voicemail::open(store().await, dir.path())
        .await
        .expect("open");
    let p = vm.start_message("100", "200", "").expect("start");
    write_wav(&p.recording_path, 600, true);
    assert_eq!(
        vm.save_message(&p, Duration::from_millis(600))
            .await
            .expect("save"),
        None
    );
    let left = std::fs::read_dir(vm.mailbox_dir("100"))
        .expect("dir")
        .count();
    assert_eq!(left, 0);
    assert_eq!(
        vm.counts("100").await.expect("counts"),
        VoicemailCounts::default()
    );
}

#[tokio::test]
async fn a_crash_loses_no_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store().await;
    let vm = Voicemail::open(s.clone(), dir.path()).await.expect("open");
    // 1. Renamed but no row yet.
    let renamed = vm.start_message("100", "201", "Ann").expect("start");
    write_wav(&renamed.recording_path, 1500, true);
    install(
        &renamed.recording_path,
        &vm.mailbox_dir("100").join(format!("{}.wav", renamed.id)),
    )
    .expect("rename");
    // 2. Killed while the caller spoke: a temp file with 3 s of audio, sizes unwritten.
    let speaking = vm
        .start_message("100", "202", "Line\nbreak")
        .expect("start");
    write_wav(&speaking.recording_path, 3000, false);
    // 3. Killed right at the beep: too short to be a message.
    let beep = vm.start_message("100", "203", "").expect("start");
    write_wav(&beep.recording_path, 200, false);
    // 4. A row whose file went away.
    let gone = vm.start_message("101", "204", "").expect("start");
    write_wav(&gone.recording_path, 1500, true);
    let gone_msg = vm
        .save_message(&gone, Duration::from_millis(1500))
        .await
        .expect("save")
        .expect("kept");
    std::fs::remove_file(vm.absolute(&gone_msg.path)).expect("rm");
    // 5. An interrupted greeting.
    let greeting = vm
        .start_greeting("100", GreetingKind::Busy)
        .expect("greeting");
    write_wav(&greeting.recording_path, 2000, false);

    let vm = Voicemail::open(s, dir.path()).await.expect("reopen");
    let msgs = vm.messages("100").await.expect("list");
    let by_id = |id: &str| msgs.iter().find(|m| m.id == id).cloned();
    let m1 = by_id(&renamed.id).expect("renamed file got its row");
    assert_eq!(
        (m1.caller.as_str(), m1.caller_name.as_str()),
        ("201", "Ann")
    );
    assert_eq!(m1.duration_ms, 1500);
    let m2 = by_id(&speaking.id).expect("interrupted recording kept");
    assert_eq!(m2.caller_name, "Line\nbreak");
    assert!(
        (2900..=3000).contains(&m2.duration_ms),
        "{} ms: up to its last written frame",
        m2.duration_ms
    );
    assert!(vm.absolute(&m2.path).is_file());
    assert_eq!(
        wav_duration(&vm.absolute(&m2.path)).map(|d| d.as_millis() as i64),
        Some(m2.duration_ms),
        "repaired: the header tells the truth"
    );
    assert!(by_id(&beep.id).is_none());
    assert_eq!(msgs.len(), 2);
    assert!(vm.messages("101").await.expect("list").is_empty());
    // Nothing but the two messages is left in the folder.
    let mut names: Vec<String> = std::fs::read_dir(vm.mailbox_dir("100"))
        .expect("dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
        .collect();
    names.sort();
    let mut want = vec![
        format!("{}.wav", renamed.id),
        format!("{}.wav", speaking.id),
    ];
    want.sort();
    assert_eq!(names, want);
    // Reconciling again finds nothing to do.
    assert_eq!(vm.reconcile().await.expect("again"), Reconciled::default());
}

#[tokio::test]
async fn pins_are_hashed_and_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store().await;
    let vm = Voicemail::open(s.clone(), dir.path()).await.expect("open");
    assert!(!vm.has_pin("100").await.expect("has"));
    assert!(!vm.verify_pin("100", "").await.expect("verify"));
    for bad in ["123", "12345678901", "12a4", ""] {
        assert!(matches!(
            vm.set_pin("100", bad).await,
            Err(VoicemailError::BadPin)
        ));
    }
    vm.set_pin("100", "4321").await.expect("set");
    assert!(vm.has_pin("100").await.expect("has"));
    assert!(vm.verify_pin("100", "4321").await.expect("verify"));
    assert!(!vm.verify_pin("100", "1234").await.expect("verify"));
    let hash = s
        .voicemail_box("100")
        .await
        .expect("box")
        .and_then(|b| b.pin_hash)
        .expect("hash");
    assert!(hash.starts_with("$argon2id$") && !hash.contains("4321"));
}

#[tokio::test]
async fn a_greeting_replaces_the_old_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vm = Voicemail::open(store().await, dir.path())
        .await
        .expect("open");
    assert_eq!(
        vm.greeting("100", GreetingKind::Unavailable)
            .await
            .expect("get"),
        None
    );
    for ms in [2000, 3000] {
        let g = vm
            .start_greeting("100", GreetingKind::Unavailable)
            .expect("start");
        write_wav(&g.recording_path, ms, true);
        assert!(vm
            .save_greeting(&g, Duration::from_millis(u64::from(ms)))
            .await
            .expect("save"));
    }
    let path = vm
        .greeting("100", GreetingKind::Unavailable)
        .await
        .expect("get")
        .expect("recorded");
    assert_eq!(path, vm.mailbox_dir("100").join("greeting-unavailable.wav"));
    assert_eq!(wav_duration(&path), Some(Duration::from_secs(3)));
    assert_eq!(
        vm.greeting("100", GreetingKind::Busy).await.expect("get"),
        None
    );
    // A greeting file is no message.
    assert_eq!(
        vm.reconcile().await.expect("reconcile"),
        Reconciled::default()
    );
}

#[test]
fn meta_round_trips() {
    let m = Meta {
        caller: "a\\b".into(),
        caller_name: "x\ny\\n".into(),
        received_at: 42,
    };
    assert_eq!(Meta::decode(&m.encode()), Some(m));
    assert_eq!(Meta::decode("nope"), None);
}
