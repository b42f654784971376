//! The command line: config checking with file:line errors and exit codes, extension
//! management, migrations.

use std::process::Command;

use crate::support::{write_file, Node, NodeOptions, BIN};

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().expect("run ringfort");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_the_sample_config() {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/ringfort.toml");
    let (code, out, err) = run(&["check", "--config", sample]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok"));
    // The sample config points at the sample dialplans.
    assert!(out.contains("dialplans: ok, 3 contexts, 7 routes"), "{out}");
}

#[test]
fn check_loads_the_dialplans_and_refuses_a_bad_one_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_file(dir.path(), "r.toml", "[paths]\ndialplans = \"plans\"\n");
    let plans = dir.path().join("plans");
    std::fs::create_dir(&plans).expect("mkdir");
    write_file(
        &plans,
        "a.toml",
        "[context.internal]\n[[context.internal.route]]\nmatch = \"_1XXX\"\nsteps = [{ dial = \"${EXTEN}\" }]\n",
    );
    let c = config.to_str().expect("utf8 path");
    let (code, out, err) = run(&["check", "--config", c]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("plans: ok, 1 contexts, 1 routes"), "{out}");

    let bad = write_file(
        &plans,
        "b.toml",
        "[context.other]\n[[context.other.route]]\nmatch = \"1\"\nsteps = [{ goto = \"nowhere\" }]\n",
    );
    for cmd in ["check", "serve"] {
        let (code, out, err) = run(&[cmd, "--config", c]);
        assert_eq!(code, 2, "{cmd}: {out}{err}");
        let want = format!(
            "{}:4: unknown context \"nowhere\" (defined: \"internal\", \"other\")\n",
            bad.display()
        );
        assert_eq!(err, want, "{cmd}");
    }
}

#[test]
fn check_and_serve_refuse_bad_configs_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "unknown.toml",
            "[sip]\nrealm = \"x\"\nfoo = 1\n",
            3,
            "unknown key",
        ),
        (
            "type.toml",
            "[registrar]\n\nmin_expires = \"soon\"\n",
            3,
            "min_expires",
        ),
        (
            "addr.toml",
            "[sip]\nudp_listen = [\"1.2.3:99\"]\n",
            2,
            "1.2.3:99",
        ),
        (
            "range.toml",
            "[registrar]\nmax_contacts_per_aor = 0\n",
            2,
            "max_contacts_per_aor",
        ),
        ("syntax.toml", "[sip\nrealm = 1\n", 1, "TOML"),
    ];
    for (name, text, line, needle) in cases {
        let path = write_file(dir.path(), name, text);
        let p = path.to_str().expect("utf8 path");
        for cmd in ["check", "serve"] {
            let (code, _, err) = run(&[cmd, "--config", p]);
            assert_eq!(code, 2, "{cmd} {name}: {err}");
            let expected = format!("{p}:{line}: ");
            assert!(
                err.starts_with(&expected),
                "{cmd} {name}: want {expected}..., got {err}"
            );
            assert!(err.contains(needle), "{cmd} {name}: {err}");
        }
    }
    let (code, _, err) = run(&["check", "--config", "/nonexistent/ringfort.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent/ringfort.toml"), "{err}");
}

#[test]
fn environment_overrides_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_file(dir.path(), "r.toml", "[registrar]\nmin_expires = 60\n");
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .env("RINGFORT_REGISTRAR_MIN_EXPIRES", "0")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("RINGFORT_REGISTRAR_MIN_EXPIRES"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    let (code, _, _) = run(&["no-such-command"]);
    assert_eq!(code, 2);
    let (code, _, _) = run(&["extension", "add"]);
    assert_eq!(code, 2);
}

#[test]
fn extension_lifecycle() {
    let node = Node::new(NodeOptions::default());
    // Without --password a strong one is generated and shown once.
    let out = node.cli_ok(&["extension", "add", "1000", "--name", "Front desk"]);
    let password = out.rsplit(' ').next().unwrap_or_default().trim();
    assert_eq!(password.len(), 20, "{out}");
    assert!(password.chars().all(|c| c.is_ascii_alphanumeric()), "{out}");
    node.add_extension("1001", "alice-pass-1");
    let list = node.cli_ok(&["extension", "list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    assert!(
        lines[0].starts_with("1000\tFront desk\t-\tnot registered"),
        "{list}"
    );
    assert!(lines[1].starts_with("1001\tTest\t"), "{list}");
    // The password is stored hashed only.
    let db = std::fs::read(node.dir.path().join("data/ringfort.db")).unwrap_or_default();
    let db_text = String::from_utf8_lossy(&db);
    assert!(!db_text.contains("alice-pass-1") && !db_text.contains(password));
    // Duplicates, bad numbers and weak passwords are usage errors.
    let dup = node.cli(&["extension", "add", "1001", "--password", "another-pass"]);
    assert_eq!(dup.status.code(), Some(2));
    let bad = node.cli(&["extension", "add", "10 01", "--password", "another-pass"]);
    assert_eq!(bad.status.code(), Some(2));
    let weak = node.cli(&["extension", "add", "1003", "--password", "short"]);
    assert_eq!(weak.status.code(), Some(2));
    let out = node.cli_ok(&["extension", "passwd", "1001"]);
    assert!(out.contains("new SIP password"), "{out}");
    let missing = node.cli(&["extension", "passwd", "4040", "--password", "whatever-pass"]);
    assert_eq!(missing.status.code(), Some(2));
    node.cli_ok(&["extension", "remove", "1000"]);
    let list = node.cli_ok(&["extension", "list"]);
    assert_eq!(list.lines().count(), 1, "{list}");
    let gone = node.cli(&["extension", "remove", "1000"]);
    assert_eq!(gone.status.code(), Some(2));
    // Bulk import reports the line of a bad row.
    let csv = write_file(
        node.dir.path(),
        "users.csv",
        "2001,pass-2001x,Bob\n# comment\n2002,pass-2002x\n",
    );
    let out = node.cli_ok(&["extension", "import", csv.to_str().expect("utf8")]);
    assert!(out.contains("2 extensions imported"), "{out}");
    let bad_csv = write_file(node.dir.path(), "bad.csv", "2003,pass-2003x\n2004\n");
    let out = node.cli(&["extension", "import", bad_csv.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.csv:2"));
}

#[test]
fn extension_dnd_and_forwarding() {
    let node = Node::new(NodeOptions::default());
    node.add_extension("1000", "front-pass-1");
    node.add_extension("1001", "alice-pass-1");
    let line = |n: &str| {
        let list = node.cli_ok(&["extension", "list"]);
        list.lines()
            .find(|l| l.starts_with(&format!("{n}\t")))
            .unwrap_or_else(|| panic!("{n} not in {list}"))
            .to_owned()
    };
    assert!(
        line("1000").starts_with("1000\tTest\t-\t"),
        "{}",
        line("1000")
    );

    let out = node.cli_ok(&["extension", "dnd", "1000", "on"]);
    assert!(out.contains("do-not-disturb on"), "{out}");
    let out = node.cli_ok(&["extension", "forward", "1000", "--busy", "1001"]);
    assert!(out.contains("dnd,busy=1001"), "{out}");
    node.cli_ok(&[
        "extension",
        "forward",
        "1000",
        "--always",
        "2000",
        "--noanswer",
        "1001",
    ]);
    assert!(
        line("1000").starts_with("1000\tTest\tdnd,always=2000,busy=1001,noanswer=1001\t"),
        "{}",
        line("1000")
    );
    node.cli_ok(&["extension", "dnd", "1000", "off"]);
    assert!(
        line("1000").starts_with("1000\tTest\talways=2000,busy=1001,noanswer=1001\t"),
        "{}",
        line("1000")
    );
    node.cli_ok(&["extension", "forward", "1000", "--clear"]);
    assert!(
        line("1000").starts_with("1000\tTest\t-\t"),
        "{}",
        line("1000")
    );

    // Usage errors (exit 2): forward to itself, a bad target, an unknown extension, no
    // option, --clear with a target, a bad on|off.
    for args in [
        &["extension", "forward", "1000", "--busy", "1000"][..],
        &["extension", "forward", "1000", "--always", "a b"],
        &["extension", "forward", "4040", "--busy", "1001"],
        &["extension", "dnd", "4040", "on"],
        &["extension", "forward", "1000"],
        &["extension", "forward", "1000", "--clear", "--busy", "1001"],
        &["extension", "dnd", "1000", "maybe"],
    ] {
        let out = node.cli(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    // Nothing changed by the refusals.
    assert!(
        line("1000").starts_with("1000\tTest\t-\t"),
        "{}",
        line("1000")
    );
    assert!(
        line("1001").starts_with("1001\tTest\t-\t"),
        "{}",
        line("1001")
    );
}

#[test]
fn migrate_is_idempotent() {
    let node = Node::new(NodeOptions::default());
    let first = node.cli_ok(&["migrate"]);
    assert!(first.contains("applied 0001_init"), "{first}");
    assert!(first.contains("applied 0002_calls"), "{first}");
    assert!(first.contains("applied 0003_recordings"), "{first}");
    assert!(first.contains("applied 0004_admin"), "{first}");
    assert!(first.contains("applied 0005_extension_routing"), "{first}");
    assert!(first.contains("applied 0006_voicemail"), "{first}");
    assert!(first.contains("applied 0007_cluster"), "{first}");
    assert!(first.contains("applied 0008_cluster_secret"), "{first}");
    assert!(first.contains("applied 0009_node_samples"), "{first}");
    assert!(first.contains("applied 0010_account_extension"), "{first}");
    assert!(first.contains("applied 0011_vip_handover"), "{first}");
    assert!(first.contains("applied 0012_node_calls"), "{first}");
    let second = node.cli_ok(&["migrate"]);
    assert!(second.contains("up to date"), "{second}");
}

#[test]
fn cluster_status_lists_nodes_and_floating_ips() {
    let node = Node::new(NodeOptions {
        extra: "[cluster]\n[[cluster.vip]]\naddress = \"192.0.2.10\"\ninterface = \"eth0\"\n"
            .into(),
        ..NodeOptions::default()
    });
    let out = node.cli_ok(&["cluster", "status"]);
    assert_eq!(
        out,
        "no nodes: none has sent a heartbeat ([cluster] enabled = true)\n\
         vip 192.0.2.10\tholder=-\tterm=0\tnever taken\n"
    );
}
