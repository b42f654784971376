use super::*;

const SAMPLE: &str = include_str!("../../ringfort.toml");

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_str_with(text, "ringfort.toml", Path::new(""), Vec::new())
}

fn parse_env(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_str_with(text, "ringfort.toml", Path::new(""), env(vars))
}

/// The error's Display, which must be exactly one `FILE:LINE: reason` line per error.
fn err(text: &str) -> String {
    match parse(text) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e.to_string(),
    }
}

fn env_err(text: &str, vars: &[(&str, &str)]) -> String {
    match parse_env(text, vars) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn empty_file_is_the_default() {
    assert_eq!(parse("").unwrap(), Config::default());
    assert_eq!(parse("\n# nothing\n[sip]\n").unwrap(), Config::default());
}

#[test]
fn sample_file_equals_the_defaults() {
    assert_eq!(parse(SAMPLE).unwrap(), Config::default());
}

#[test]
fn sample_file_lists_every_key() {
    let doc: Doc = toml::from_str(SAMPLE).unwrap();
    let schema = Schema::get();
    assert_eq!(schema.sections.len(), 11);
    for section in &schema.sections {
        for (key, _) in &section.keys {
            assert!(
                doc.key_offset(&section.name, key).is_some(),
                "{}.{} missing from ringfort.toml",
                section.name,
                key
            );
        }
    }
}

#[test]
fn defaults_have_the_documented_values() {
    let c = Config::default();
    assert_eq!(c.node.id.as_str(), "node1");
    assert_eq!(c.sip.udp_listen, vec!["0.0.0.0:5060".parse().unwrap()]);
    assert_eq!(c.http.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(c.registrar.algorithms, vec![DigestAlgorithm::Md5]);
    assert_eq!(c.sip.public_address, None);
    assert_eq!(c.log.format, LogFormat::Text);
}

#[test]
fn values_are_read() {
    let c = parse(
        "[node]\nid = \"pbx-2.eu_west\"\n[sip]\nudp_listen = [\"[::]:5070\", \"10.0.0.1:5060\"]\n\
         tcp_listen = []\npublic_address = \"203.0.113.7\"\n[registrar]\nalgorithms = [\"md5\"]\n\
         [log]\nformat = \"json\"\n[media]\nmedia_timeout_secs = 0\n",
    )
    .unwrap();
    assert_eq!(c.node.id.as_str(), "pbx-2.eu_west");
    assert_eq!(c.sip.udp_listen.len(), 2);
    assert!(c.sip.tcp_listen.is_empty());
    assert_eq!(
        c.sip.public_address,
        Some(Host::Ip("203.0.113.7".parse().unwrap()))
    );
    assert_eq!(c.registrar.algorithms, vec![DigestAlgorithm::Md5]);
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.media.media_timeout_secs, 0);
    let c = parse("[sip]\npublic_address = \"pbx.example.com\"\n").unwrap();
    assert_eq!(
        c.sip.public_address,
        Some(Host::Name("pbx.example.com".into()))
    );
}

#[test]
fn syntax_error_gives_its_line() {
    let e = err("[sip]\nrealm = \"x\"\nfoo = = 1\n");
    assert!(e.starts_with("ringfort.toml:3: TOML syntax error: "), "{e}");
    assert!(!e.contains('\n'), "{e}");
    assert!(matches!(
        parse("[sip]\nrealm = \"x\n").unwrap_err(),
        ConfigError::Syntax { line: 2, .. }
    ));
}

#[test]
fn unknown_key_names_the_section_and_the_choices() {
    assert_eq!(
        err("[node]\nid = \"a\"\n\n[sip]\nfoo = 1\n"),
        "ringfort.toml:5: unknown key \"foo\" in [sip], expected one of realm, udp_listen, \
         tcp_listen, public_address, user_agent, max_message_bytes, tcp_idle_timeout_secs, \
         tcp_max_connections, t1_ms, t2_ms, t4_ms, workers"
    );
    assert_eq!(
        err("[media]\nrtp_port = 4\n"),
        "ringfort.toml:2: unknown key \"rtp_port\" in [media], expected one of rtp_port_min, \
         rtp_port_max, media_timeout_secs, address, opus_complexity, opus_bitrate, codecs"
    );
}

#[test]
fn unknown_section_and_non_table_section() {
    assert_eq!(
        err("\n[sipp]\nrealm = \"x\"\n"),
        "ringfort.toml:2: unknown section \"sipp\", expected one of node, sip, registrar, \
         database, paths, log, http, media, calls, voicemail, cluster"
    );
    assert_eq!(
        err("sip = 5\n"),
        "ringfort.toml:1: \"sip\" must be a table (a [sip] section), not a single value"
    );
}

#[test]
fn all_unknown_keys_are_reported() {
    let e = parse("[sip]\nfoo = 1\n[log]\nbar = 2\n").unwrap_err();
    let lines: Vec<String> = e.errors().iter().map(|e| e.to_string()).collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].starts_with("ringfort.toml:2: unknown key \"foo\" in [sip]"));
    assert!(lines[1].starts_with("ringfort.toml:4: unknown key \"bar\" in [log]"));
    assert_eq!(e.first().to_string(), lines[0]);
    assert_eq!(e.to_string(), lines.join("\n"));
}

#[test]
fn wrong_type_names_key_and_expectation() {
    assert_eq!(
        err("[registrar]\nmin_expires = \"sixty\"\n"),
        "ringfort.toml:2: registrar.min_expires: invalid type: string \"sixty\", expected an \
         integer between 1 and 86400"
    );
    assert_eq!(
        err("[sip]\n\nrealm = 5\n"),
        "ringfort.toml:3: sip.realm: invalid type: integer `5`, expected a string"
    );
    assert_eq!(
        err("[sip]\nudp_listen = \"0.0.0.0:5060\"\n"),
        "ringfort.toml:2: sip.udp_listen: invalid type: string \"0.0.0.0:5060\", expected a \
         list of socket addresses like [\"0.0.0.0:5060\"]"
    );
}

#[test]
fn bad_socket_address_points_at_the_element() {
    let text = "[sip]\nudp_listen = [\n  \"0.0.0.0:5060\",\n  \"1.2.3:99\",\n]\n";
    assert_eq!(
        err(text),
        "ringfort.toml:4: sip.udp_listen: invalid socket address \"1.2.3:99\" (expected \
         IP:port, e.g. \"0.0.0.0:5060\" or \"[::]:5060\")"
    );
    assert_eq!(
        err("[http]\nlisten = \"localhost:80\"\n"),
        "ringfort.toml:2: http.listen: invalid socket address \"localhost:80\" (expected \
         IP:port, e.g. \"0.0.0.0:5060\" or \"[::]:5060\")"
    );
    assert_eq!(
        err("[sip]\ntcp_listen = [\"0.0.0.0:5060\", \"0.0.0.0:5060\"]\n"),
        "ringfort.toml:2: sip.tcp_listen: duplicate address 0.0.0.0:5060"
    );
}

#[test]
fn bad_ip_and_host() {
    assert_eq!(
        err("[sip]\npublic_address = \"1.2.3\"\n"),
        "ringfort.toml:2: sip.public_address: invalid IP address \"1.2.3\" (give an IPv4 or \
         IPv6 address without a port)"
    );
    assert_eq!(
        err("[sip]\npublic_address = \"a b\"\n"),
        "ringfort.toml:2: sip.public_address: invalid address \"a b\": expected an IP address \
         or a host name"
    );
}

#[test]
fn out_of_range_values() {
    assert_eq!(
        err("[registrar]\nmin_expires = 0\n"),
        "ringfort.toml:2: registrar.min_expires: must be between 1 and 86400, got 0"
    );
    assert_eq!(
        err("[sip]\nmax_message_bytes = 100\n"),
        "ringfort.toml:2: sip.max_message_bytes: must be between 1024 and 1048576, got 100"
    );
    assert_eq!(
        err("[media]\nrtp_port_max = -1\n"),
        "ringfort.toml:2: media.rtp_port_max: must be between 1024 and 65535, got -1"
    );
    assert_eq!(
        err("[media]\nrtp_port_min = 10001\n"),
        "ringfort.toml:2: media.rtp_port_min: must be even (RTP uses even ports, RTCP the next \
         odd one), got 10001"
    );
}

#[test]
fn bad_strings_and_enums() {
    assert_eq!(
        err("[node]\nid = \"node one\"\n"),
        "ringfort.toml:2: node.id: invalid node id \"node one\": use 1 to 64 characters among \
         A-Z a-z 0-9 . _ -"
    );
    assert_eq!(
        err("[log]\nlevel = \"  \"\n"),
        "ringfort.toml:2: log.level: must not be empty"
    );
    assert_eq!(
        err("[sip]\nrealm = \"a\\\"b\"\n"),
        "ringfort.toml:2: sip.realm: must not contain '\"' or '\\'"
    );
    assert_eq!(
        err("[log]\nformat = \"xml\"\n"),
        "ringfort.toml:2: log.format: unknown variant `xml`, expected `text` or `json`"
    );
    assert_eq!(
        err("[registrar]\nalgorithms = []\n"),
        "ringfort.toml:2: registrar.algorithms: must list at least one of \"SHA-256\", \"MD5\""
    );
    assert_eq!(
        err("[registrar]\nalgorithms = [\"MD5\",\n  \"SHA1\"]\n"),
        "ringfort.toml:3: registrar.algorithms: unknown digest algorithm \"SHA1\", expected \
         \"SHA-256\" or \"MD5\""
    );
    assert_eq!(
        err("[registrar]\nalgorithms = [\"MD5\", \"md5\"]\n"),
        "ringfort.toml:2: registrar.algorithms: MD5 is listed twice"
    );
    assert_eq!(
        err("[media]\ncodecs = [\"PCMU\", \"G729\"]\n"),
        "ringfort.toml:2: media.codecs: unknown codec \"G729\", expected \"opus\", \"G722\", \
         \"PCMU\" or \"PCMA\""
    );
    assert_eq!(
        err("[media]\ncodecs = [\"pcmu\", \"PCMU\"]\n"),
        "ringfort.toml:2: media.codecs: PCMU is listed twice"
    );
    assert_eq!(
        err("[media]\nopus_bitrate = 5000\n"),
        "ringfort.toml:2: media.opus_bitrate: must be 0 (libopus' choice) or between 6000 \
         and 510000, got 5000"
    );
    assert_eq!(
        err("[media]\ncodecs = []\n"),
        "ringfort.toml:2: media.codecs: must list at least one of \"opus\", \"G722\", \
         \"PCMU\", \"PCMA\""
    );
    assert_eq!(
        err("[paths]\nsounds = \"\"\n"),
        "ringfort.toml:2: paths.sounds: must not be empty (use \".\" for the config folder)"
    );
}

#[test]
fn cross_field_rules_point_at_the_key_that_was_set() {
    // Only min_expires is set: it is blamed, against the default.
    assert_eq!(
        err("[registrar]\n\nmin_expires = 5000\n"),
        "ringfort.toml:3: registrar.min_expires = 5000 must be <= registrar.default_expires = 3600"
    );
    // Both set: the upper key is blamed.
    assert_eq!(
        err("[registrar]\nmin_expires = 100\ndefault_expires = 50\n"),
        "ringfort.toml:3: registrar.default_expires = 50 must be >= registrar.min_expires = 100"
    );
    assert_eq!(
        err("[registrar]\nmax_expires = 600\n"),
        "ringfort.toml:2: registrar.max_expires = 600 must be >= registrar.default_expires = 3600"
    );
    assert_eq!(
        err("[sip]\nt2_ms = 200\n"),
        "ringfort.toml:2: sip.t2_ms = 200 must be >= sip.t1_ms = 500"
    );
    assert_eq!(
        err("[media]\nrtp_port_min = 30000\n"),
        "ringfort.toml:2: media.rtp_port_min = 30000 must be < media.rtp_port_max = 20000"
    );
    assert_eq!(
        err("[media]\nrtp_port_min = 20000\nrtp_port_max = 20000\n"),
        "ringfort.toml:3: media.rtp_port_max = 20000 must be > media.rtp_port_min = 20000"
    );
    assert_eq!(
        err("[sip]\nudp_listen = []\ntcp_listen = []\n"),
        "ringfort.toml:2: sip.udp_listen and sip.tcp_listen are both empty: Ringfort would \
         accept no SIP traffic"
    );
}

#[test]
fn several_cross_field_errors_are_collected() {
    let e = parse("[sip]\nt2_ms = 200\n[media]\nrtp_port_min = 30000\n").unwrap_err();
    let lines: Vec<String> = e.errors().iter().map(|e| e.to_string()).collect();
    assert_eq!(
        lines,
        [
            "ringfort.toml:2: sip.t2_ms = 200 must be >= sip.t1_ms = 500",
            "ringfort.toml:4: media.rtp_port_min = 30000 must be < media.rtp_port_max = 20000",
        ]
    );
}

#[test]
fn env_names_are_derived_and_unambiguous() {
    assert_eq!(env_var_name("sip", "udp_listen"), "RINGFORT_SIP_UDP_LISTEN");
    assert_eq!(env_var_name("a.b", "c-d"), "RINGFORT_A_B_C_D");
    let schema = Schema::get();
    let mut names: Vec<String> = schema
        .sections
        .iter()
        .flat_map(|s| s.keys.iter().map(|(k, _)| env_var_name(&s.name, k)))
        .collect();
    let count = names.len();
    assert_eq!(count, 49);
    names.sort();
    names.dedup();
    assert_eq!(names.len(), count, "two keys map to one variable");
    for name in &names {
        assert!(!ENV_ALLOWLIST.contains(&name.as_str()), "{name}");
    }
}

#[test]
fn env_overrides_string_number_and_list() {
    let c = parse_env(
        "[sip]\nrealm = \"file\"\n",
        &[
            ("RINGFORT_SIP_REALM", "example.com"),
            ("RINGFORT_NODE_ID", "42"),
            ("RINGFORT_REGISTRAR_MIN_EXPIRES", "120"),
            ("RINGFORT_SIP_UDP_LISTEN", "1.2.3.4:5060"),
            ("RINGFORT_SIP_TCP_LISTEN", "10.0.0.1:5060, [::1]:5062"),
            ("RINGFORT_REGISTRAR_ALGORITHMS", "[\"MD5\"]"),
            ("RINGFORT_LOG_LEVEL", "info,ringfort::sip=debug"),
            ("RINGFORT_DATABASE_URL", "postgres://rf:secret@db/rf"),
            ("RINGFORT_LOG", "ignored"),
            ("RINGFORT_CONFIG", "/etc/ringfort.toml"),
            ("PATH", "/bin"),
        ],
    )
    .unwrap();
    assert_eq!(c.sip.realm, "example.com");
    assert_eq!(c.node.id.as_str(), "42");
    assert_eq!(c.registrar.min_expires, 120);
    assert_eq!(c.sip.udp_listen, vec!["1.2.3.4:5060".parse().unwrap()]);
    assert_eq!(
        c.sip.tcp_listen,
        vec![
            "10.0.0.1:5060".parse().unwrap(),
            "[::1]:5062".parse().unwrap()
        ]
    );
    assert_eq!(c.registrar.algorithms, vec![DigestAlgorithm::Md5]);
    assert_eq!(c.log.level, "info,ringfort::sip=debug");
    assert_eq!(c.database_url(), "postgres://rf:secret@db/rf");
    // Untouched keys keep the file's or the default value.
    assert_eq!(c.registrar.max_expires, 7200);

    let c = parse_env(
        "",
        &[
            ("RINGFORT_SIP_UDP_LISTEN", "[\"0.0.0.0:5070\"]"),
            ("RINGFORT_SIP_TCP_LISTEN", ""),
            ("RINGFORT_SIP_REALM", "\"quoted\""),
        ],
    )
    .unwrap();
    assert_eq!(c.sip.udp_listen, vec!["0.0.0.0:5070".parse().unwrap()]);
    assert!(c.sip.tcp_listen.is_empty());
    assert_eq!(c.sip.realm, "quoted");
}

#[test]
fn unknown_env_variable_is_an_error() {
    assert_eq!(
        env_err("", &[("RINGFORT_SIP_RELAM", "x")]),
        "environment RINGFORT_SIP_RELAM: not a Ringfort setting (settings are \
         RINGFORT_<SECTION>_<KEY>, e.g. RINGFORT_SIP_REALM; [sip] takes RINGFORT_SIP_REALM, \
         RINGFORT_SIP_UDP_LISTEN, RINGFORT_SIP_TCP_LISTEN, RINGFORT_SIP_PUBLIC_ADDRESS, \
         RINGFORT_SIP_USER_AGENT, RINGFORT_SIP_MAX_MESSAGE_BYTES, \
         RINGFORT_SIP_TCP_IDLE_TIMEOUT_SECS, RINGFORT_SIP_TCP_MAX_CONNECTIONS, \
         RINGFORT_SIP_T1_MS, RINGFORT_SIP_T2_MS, RINGFORT_SIP_T4_MS, RINGFORT_SIP_WORKERS; \
         ignored non-settings: \
         RINGFORT_CONFIG, RINGFORT_LOG)"
    );
    assert_eq!(
        env_err("", &[("RINGFORT_FOO", "1")]),
        "environment RINGFORT_FOO: not a Ringfort setting (settings are \
         RINGFORT_<SECTION>_<KEY>, e.g. RINGFORT_SIP_REALM; ignored non-settings: \
         RINGFORT_CONFIG, RINGFORT_LOG)"
    );
}

#[test]
fn bad_env_values_name_the_variable() {
    assert_eq!(
        env_err("", &[("RINGFORT_REGISTRAR_MIN_EXPIRES", "abc")]),
        "environment RINGFORT_REGISTRAR_MIN_EXPIRES: registrar.min_expires: invalid type: \
         string \"abc\", expected an integer between 1 and 86400"
    );
    assert_eq!(
        env_err("", &[("RINGFORT_SIP_UDP_LISTEN", "1.2.3:99")]),
        "environment RINGFORT_SIP_UDP_LISTEN: sip.udp_listen: invalid socket address \
         \"1.2.3:99\" (expected IP:port, e.g. \"0.0.0.0:5060\" or \"[::]:5060\")"
    );
    // Several bad variables are all reported.
    let e = parse_env(
        "",
        &[("RINGFORT_MEDIA_RTP_PORT_MIN", "1"), ("RINGFORT_NOPE", "1")],
    )
    .unwrap_err();
    assert_eq!(e.errors().len(), 2);
}

#[test]
fn cross_field_errors_blame_the_env_variable() {
    assert_eq!(
        env_err(
            "[registrar]\nmin_expires = 60\n",
            &[("RINGFORT_REGISTRAR_DEFAULT_EXPIRES", "30")]
        ),
        "environment RINGFORT_REGISTRAR_DEFAULT_EXPIRES: registrar.default_expires = 30 must be \
         >= registrar.min_expires = 60"
    );
    // The env value replaces a file value that broke the rule.
    let c = parse_env(
        "[registrar]\nmax_expires = 600\n",
        &[("RINGFORT_REGISTRAR_MAX_EXPIRES", "9000")],
    )
    .unwrap();
    assert_eq!(c.registrar.max_expires, 9000);
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let base = Path::new("/etc/ringfort");
    let text = "[node]\ndata_dir = \"./var\"\n[paths]\ndialplans = \"plans\"\nsounds = \"/usr/share/rf\"\n";
    let c = Config::from_str_with(text, "x.toml", base, Vec::new()).unwrap();
    assert_eq!(c.node.data_dir, Path::new("/etc/ringfort/var"));
    assert_eq!(c.paths.dialplans, Path::new("/etc/ringfort/plans"));
    assert_eq!(c.paths.sounds, Path::new("/usr/share/rf"));
    let c = Config::from_str_with("", "x.toml", base, Vec::new()).unwrap();
    assert_eq!(c.node.data_dir, Path::new("/etc/ringfort/data"));
    assert_eq!(c.paths.sounds, Path::new("/etc/ringfort/sounds"));
    // Env paths resolve the same way.
    let c =
        Config::from_str_with("", "x.toml", base, env(&[("RINGFORT_NODE_DATA_DIR", "d")])).unwrap();
    assert_eq!(c.node.data_dir, Path::new("/etc/ringfort/d"));
}

#[test]
fn database_url_cases() {
    let base = Path::new("/etc/ringfort");
    let load = |text: &str| Config::from_str_with(text, "x.toml", base, Vec::new()).unwrap();
    assert_eq!(
        load("").database_url(),
        "sqlite:///etc/ringfort/data/ringfort.db?mode=rwc"
    );
    assert_eq!(
        load("[database]\nurl = \"sqlite://db/pbx.db?mode=rwc\"\n").database_url(),
        "sqlite:///etc/ringfort/db/pbx.db?mode=rwc"
    );
    assert_eq!(
        load("[database]\nurl = \"sqlite:///var/lib/pbx.db\"\n").database_url(),
        "sqlite:///var/lib/pbx.db"
    );
    assert_eq!(
        load("[database]\nurl = \"postgres://rf@db/rf\"\n").database_url(),
        "postgres://rf@db/rf"
    );
    assert_eq!(
        load("[database]\nurl = \"postgresql://rf@db/rf\"\n").database_url(),
        "postgresql://rf@db/rf"
    );
    assert_eq!(
        load("[database]\nurl = \"sqlite::memory:\"\n").database_url(),
        "sqlite::memory:"
    );
    // The default config (no folder) still gives an absolute path.
    let url = Config::default().database_url();
    let path = url
        .strip_prefix("sqlite://")
        .and_then(|u| u.strip_suffix("/data/ringfort.db?mode=rwc"))
        .unwrap();
    assert!(Path::new(path).is_absolute(), "{url}");
    // Other schemes are refused, without echoing a password.
    let e = err("[database]\n\nurl = \"mysql://root:hunter2@db/rf\"\n");
    assert_eq!(
        e,
        "ringfort.toml:3: database.url: unsupported database URL scheme \"mysql\": expected \"\" \
         (SQLite in node.data_dir), \"sqlite://PATH\" or \"postgres://USER@HOST/DB\""
    );
    assert!(!e.contains("hunter2"));
}

#[test]
fn load_reads_the_file_and_resolves_against_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ringfort.toml");
    std::fs::write(&path, "[sip]\nrealm = \"office\"\n").unwrap();
    let c = Config::load(&path).unwrap();
    assert_eq!(c.sip.realm, "office");
    assert_eq!(c.node.data_dir, dir.path().join("data"));

    std::fs::write(&path, "[sip]\nrealm = 1\n").unwrap();
    let e = Config::load(&path).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}:2: sip.realm: invalid type: integer `1`, expected a string",
            path.display()
        )
    );

    let missing = dir.path().join("missing.toml");
    let e = Config::load(&missing).unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }));
    assert!(e
        .to_string()
        .starts_with(&format!("{}: cannot read config file: ", missing.display())));
}

#[test]
fn node_id_and_host_parse_on_their_own() {
    assert!(NodeId::new("a".repeat(64)).is_ok());
    assert!(NodeId::new("a".repeat(65)).is_err());
    assert!(NodeId::new("").is_err());
    assert!("1.2.3.4:5060".parse::<Host>().is_err());
    assert!("::1".parse::<Host>().is_ok());
    assert!("-bad.example".parse::<Host>().is_err());
}

#[test]
fn dotted_keys_and_inline_tables_are_located() {
    let e = err("sip.relm = \"x\"\n");
    assert!(
        e.starts_with("ringfort.toml:1: unknown key \"relm\" in [sip]"),
        "{e}"
    );
    let e = err("\nsip = { realm = \"x\", t1_ms = 5 }\n");
    assert_eq!(
        e,
        "ringfort.toml:2: sip.t1_ms: must be between 100 and 10000, got 5"
    );
    let e = err("[registrar]\nmin_expires = 60\n[sip]\nt1_ms = 500\n[registrar.x]\ny = 1\n");
    assert!(
        e.starts_with("ringfort.toml:5: unknown key \"x\" in [registrar]"),
        "{e}"
    );
    assert_eq!(
        err("registrar.min_expires = 9000\n"),
        "ringfort.toml:1: registrar.min_expires = 9000 must be <= registrar.default_expires = 3600"
    );
    assert_eq!(
        err("[[sip]]\nrealm = \"x\"\n"),
        "ringfort.toml:1: \"sip\" must be a table (a [sip] section), not a single value"
    );
}

#[test]
fn calls_and_media_address() {
    let c =
        parse("[calls]\nno_answer_timeout_secs = 5\n[media]\naddress = \"10.0.0.5\"\n").unwrap();
    assert_eq!(c.calls.no_answer_timeout_secs, 5);
    assert_eq!(c.media.address, Some("10.0.0.5".parse().unwrap()));
    assert!(err("[calls]\nno_answer_timeout_secs = 0\n").contains("must be between 1 and 3600"));
    assert!(err("[media]\naddress = \"pbx.example\"\n").contains("invalid IP address"));
}

#[test]
fn call_recording_mode() {
    assert_eq!(Config::default().calls.record, RecordMode::Off);
    let c = parse("[calls]\nrecord = \"stereo\"\n").unwrap();
    assert_eq!(c.calls.record, RecordMode::Stereo);
    let c = parse_env("", &[("RINGFORT_CALLS_RECORD", "mixed")]).unwrap();
    assert_eq!(c.calls.record, RecordMode::Mixed);
    assert_eq!(
        err("[calls]\n\nrecord = \"yes\"\n"),
        "ringfort.toml:3: calls.record: unknown variant `yes`, expected one of `off`, `mixed`, \
         `stereo`"
    );
    assert!(env_err("", &[("RINGFORT_CALLS_RECORD", "both")]).contains("RINGFORT_CALLS_RECORD"));
    assert_eq!(
        parse_env("[node]\ndata_dir = \"/srv/pbx\"\n", &[])
            .unwrap()
            .recordings_dir(),
        std::path::Path::new("/srv/pbx/recordings")
    );
}

#[test]
fn cluster_and_floating_ips() {
    let c = parse(
        "[sip]\nudp_listen = [\"10.0.0.1:5060\"]\ntcp_listen = [\"10.0.0.1:5060\"]\n\
         [database]\nurl = \"postgres://pbx@db/pbx\"\n[cluster]\nenabled = true\n\
         sip_address = \"10.0.0.1:5060\"\nmedia_address = \"10.0.0.1\"\n\
         [[cluster.vip]]\naddress = \"192.0.2.10\"\ninterface = \"eth0\"\n\
         [[cluster.vip]]\naddress = \"2001:db8::10\"\ninterface = \"eth1\"\npriority = 40\n",
    )
    .unwrap();
    assert!(c.cluster.enabled);
    assert_eq!(
        c.cluster.sip_address,
        Some("10.0.0.1:5060".parse().unwrap())
    );
    assert_eq!(c.cluster.media_address, Some("10.0.0.1".parse().unwrap()));
    assert_eq!(
        c.cluster.vip,
        vec![
            VipConfig {
                address: "192.0.2.10".parse().unwrap(),
                interface: "eth0".into(),
                priority: 100,
            },
            VipConfig {
                address: "2001:db8::10".parse().unwrap(),
                interface: "eth1".into(),
                priority: 40,
            },
        ]
    );
    assert_eq!(
        err("[cluster]\nvip = [{ address = \"192.0.2.10/32\", interface = \"eth0\" }]\n"),
        "ringfort.toml:2: cluster.vip: invalid IP address \"192.0.2.10/32\" (give an IPv4 or \
         IPv6 address without a prefix length)"
    );
    let e = err("[cluster]\n[[cluster.vip]]\naddress = \"192.0.2.10\"\ninterface = \"eth0:1\"\n");
    assert!(
        e.starts_with("ringfort.toml:4: cluster.vip: invalid interface name \"eth0:1\""),
        "{e}"
    );
    let e = err(
        "[cluster]\n[[cluster.vip]]\naddress = \"192.0.2.10\"\ninterface = \"eth0\"\nprio = 1\n",
    );
    assert!(e.starts_with("ringfort.toml:5: "), "{e}");
    assert!(e.contains("unknown field `prio`"), "{e}");
    let e = err("[cluster]\n[[cluster.vip]]\naddress = \"192.0.2.10\"\ninterface = \"eth0\"\npriority = 0\n");
    assert!(
        e.starts_with("ringfort.toml:5: cluster.vip: must be between 1 and 100, got 0"),
        "{e}"
    );
    let e = err(
        "[cluster]\n[[cluster.vip]]\naddress = \"192.0.2.10\"\ninterface = \"eth0\"\n\
         [[cluster.vip]]\naddress = \"192.0.2.10\"\ninterface = \"eth1\"\n",
    );
    assert!(
        e.contains("cluster.vip: floating IP 192.0.2.10 is listed twice"),
        "{e}"
    );
    assert!(e.starts_with("ringfort.toml:"), "{e}");
}

#[test]
fn cluster_timing_and_database_rules() {
    assert_eq!(
        err("[cluster]\nlease_ms = 2000\nrenew_ms = 900\n"),
        "ringfort.toml:3: cluster.renew_ms = 900: 2 x cluster.renew_ms + \
         cluster.max_clock_skew_ms + 100 ms (removing the address) = 2100 must be <= \
         cluster.lease_ms = 2000 (a holder must be able to miss one renewal and still drop the \
         address before its lease can end)"
    );
    let e = err("[cluster]\nmax_clock_skew_ms = 1000\n");
    assert!(
        e.starts_with("ringfort.toml:2: cluster.max_clock_skew_ms = 1000: "),
        "{e}"
    );
    assert_eq!(
        err("[cluster]\nlease_ms = 1000\n"),
        "ringfort.toml:2: cluster.lease_ms: must be between 1500 and 60000, got 1000"
    );
    assert_eq!(
        err("[cluster]\nenabled = true\n"),
        "ringfort.toml:2: cluster.enabled = true needs database.url = \"postgres://...\": the \
         nodes share registrations and leases through PostgreSQL"
    );
    let e = env_err("", &[("RINGFORT_CLUSTER_ENABLED", "true")]);
    assert!(
        e.starts_with("environment RINGFORT_CLUSTER_ENABLED: cluster.enabled"),
        "{e}"
    );
    let c = parse_env(
        "",
        &[
            ("RINGFORT_CLUSTER_ENABLED", "true"),
            ("RINGFORT_DATABASE_URL", "postgres://pbx@db/pbx"),
            (
                "RINGFORT_CLUSTER_VIP",
                "[{ address = \"192.0.2.10\", interface = \"eth0\" }]",
            ),
            ("RINGFORT_SIP_UDP_LISTEN", "[\"10.0.0.1:5060\"]"),
            ("RINGFORT_SIP_TCP_LISTEN", "[]"),
        ],
    )
    .unwrap();
    assert!(c.cluster.enabled);
    assert_eq!(c.cluster.vip.len(), 1);
    // Floating IPs get their own sockets on the SIP ports: a wildcard would take them.
    let e = err("[sip]\nudp_listen = [\"0.0.0.0:5060\"]\ntcp_listen = []\n\
         [database]\nurl = \"postgres://pbx@db/pbx\"\n[cluster]\nenabled = true\n\
         [[cluster.vip]]\naddress = \"192.0.2.10\"\ninterface = \"eth0\"\n");
    assert!(
        e.starts_with("ringfort.toml:2: sip.udp_listen has 0.0.0.0:5060: with [[cluster.vip]]"),
        "{e}"
    );
    assert_eq!(
        err("[cluster]\nsip_address = \"10.0.0.1\"\n"),
        "ringfort.toml:2: cluster.sip_address: invalid socket address \"10.0.0.1\" (expected \
         IP:port, e.g. \"0.0.0.0:5060\" or \"[::]:5060\")"
    );
}

#[test]
fn https_needs_both_files_resolved_against_the_config_folder() {
    let text = "[http]\ntls_cert = \"tls/cert.pem\"\ntls_key = \"/etc/k.pem\"\n";
    let c = Config::from_str_with(text, "x.toml", Path::new("/etc/ringfort"), Vec::new()).unwrap();
    assert!(c.http.tls());
    assert_eq!(c.http.tls_cert, Path::new("/etc/ringfort/tls/cert.pem"));
    assert_eq!(c.http.tls_key, std::path::PathBuf::from("/etc/k.pem"));
    assert!(!parse("").unwrap().http.tls());
    assert_eq!(
        err("[http]\ntls_cert = \"cert.pem\"\n"),
        "ringfort.toml:2: http.tls_cert and http.tls_key go together: set both for HTTPS, or \
         neither for plain HTTP"
    );
}
