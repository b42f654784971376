//! The layering as a test (DESIGN.md, "Module map"): every path a source file names
//! (`use crate::...`, `crate::x::` inline, `super::` climbing out of a module, and the
//! external crates that mean I/O: `tokio`, `sqlx`, `axum`, sockets) is checked against
//! the map's "must not" column, written below as a table of rules. A forbidden import is
//! a failing `cargo test` that names the file, the line and the rule.
//!
//! Comments and string literals are blanked before reading, so a doc link to a higher
//! layer is no import. What a glob import brings in unqualified cannot be seen; the
//! `use` line that names the module can, and that is where the rule bites.
//!
//! Its own binary, reading `src/` as text: it builds nothing of the crate, so it runs in
//! milliseconds and the rules hold for code that does not compile yet either.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// A rule of the module map: the files it holds and the paths they must not name.
struct Rule {
    /// Files under `src/`: `sip/` is a folder, `cluster/election.rs` one file, `*` all.
    files: &'static [&'static str],
    /// Files of `files` that the rule does not hold (same notation).
    not_in: &'static [&'static str],
    /// Paths these files must not name: `crate::x[::y]` (this crate, however reached) or
    /// a path from an external crate (`tokio`, `std::net::UdpSocket`). A path matches
    /// when it is the pattern or starts with it followed by `::`.
    forbid: &'static [&'static str],
    /// The rule in words, printed with each break of it.
    why: &'static str,
}

/// What an I/O-free core must not name: the runtime, the database, HTTP, sockets, and
/// the handles that reach them (`Store`, the transport's handle and start). The
/// interfaces the transport defines for what plugs into it (`VipTunnel` and its types)
/// are plain Rust and allowed: the cluster's pure tunnel implements one.
const IO: &[&str] = &[
    "tokio",
    "sqlx",
    "axum",
    "hyper",
    "hyper_util",
    "tokio_rustls",
    "socket2",
    "std::net::UdpSocket",
    "std::net::TcpStream",
    "std::net::TcpListener",
    "crate::transport::TransportHandle",
    "crate::transport::start",
    "crate::store::Store",
];

/// Sockets (for the layers whose "must not" is about the network, not the runtime).
const SOCKETS: &[&str] = &[
    "tokio::net",
    "socket2",
    "std::net::UdpSocket",
    "std::net::TcpStream",
    "std::net::TcpListener",
    "crate::transport",
];

/// The sans-IO cores as they are today (each file checked: the media tasks, relay and
/// endpoint_task among them, own sockets and timers and are not here). Their unit tests
/// are held too: a fake clock, no runtime.
const PURE: &[&str] = &[
    "sip/",
    "dialplan/",
    "config/",
    "metrics.rs",
    "cluster/election.rs",
    "cluster/election/",
    "cluster/tunnel.rs",
    "cluster/routing.rs",
    "cluster/status.rs",
    "media/codec/",
    "media/dtmf/",
    "media/bridge.rs",
    "media/call_recorder.rs",
    "media/endpoint.rs",
    "media/inband.rs",
    "media/inject.rs",
    "media/jitter.rs",
    "media/latch.rs",
    "media/loss.rs",
    "media/mixer.rs",
    "media/player.rs",
    "media/recorder.rs",
    "media/resample.rs",
    "media/test_signal.rs",
    "media/timeout.rs",
    "media/transcode.rs",
    "call/machine.rs",
    "call/app_leg.rs",
    "call/out_leg.rs",
    "call/own_leg.rs",
    "call/forks.rs",
    "call/codecs.rs",
    "call/test_sip.rs",
    "registrar/bindings.rs",
    "registrar/outage.rs",
    "voicemail/mwi.rs",
    "http/limiter.rs",
    "node/admission.rs",
    "node/admission/",
];

/// The rule table. Each `forbid` list names the layers above (or beside) the module that
/// it must not reach; the rule's `why` quotes or follows the module map.
const RULES: &[Rule] = &[
    // Sans-IO at the core: data in, data out, time passed in; thin tasks own the sockets
    // and timers. Rows of the store are plain data and allowed; the `Store` handle is not.
    Rule {
        files: PURE,
        not_in: &[],
        forbid: IO,
        why: "a sans-IO core names no runtime, database, HTTP, socket or Store handle",
    },
    // node::admission: a new request in, one decision out. Pure beyond I/O: no clock and
    // no random numbers (`now` and the To tag come in), and it carries nothing out (the
    // core does; the registrar is reached through the `Authorizer` trait).
    Rule {
        files: &["node/admission.rs", "node/admission/"],
        not_in: &[],
        forbid: &[
            "rand",
            "std::time::Instant",
            "std::time::SystemTime",
            "jiff::Timestamp::now",
            "crate::now_unix",
            "crate::registrar::now_unix",
            "crate::registrar::Registrar",
            "crate::sip::transaction",
            "crate::node::core",
            "crate::node::spawn",
            "crate::node::tasks",
        ],
        why: "admission decides from the request, `now` and its context only: no clock, \
              no randomness, nothing carried out",
    },
    // store: "leak SQL upward" (its migration runner is inside it).
    Rule {
        files: &["*"],
        not_in: &["store/"],
        forbid: &["sqlx"],
        why: "only the store names sqlx: SQL and its errors stay inside it",
    },
    // sip: "do I/O"; the bottom of the signalling stack, it returns events and takes its
    // settings as plain values, so it imports no other module.
    Rule {
        files: &["sip/"],
        not_in: &[],
        forbid: &[
            "crate::admin",
            "crate::apps",
            "crate::call",
            "crate::cluster",
            "crate::config",
            "crate::dialplan",
            "crate::http",
            "crate::media",
            "crate::metrics",
            "crate::node",
            "crate::registrar",
            "crate::store",
            "crate::transport",
            "crate::voicemail",
        ],
        why: "sip is the lowest layer: it imports no other module of the crate",
    },
    // transport: "know about calls"; the cluster's drain tunnel plugs in through
    // `transport::VipTunnel`, which the transport defines.
    Rule {
        files: &["transport/"],
        not_in: &[],
        forbid: &[
            "crate::admin",
            "crate::apps",
            "crate::call",
            "crate::cluster",
            "crate::dialplan",
            "crate::http",
            "crate::media",
            "crate::node",
            "crate::registrar",
            "crate::store",
            "crate::voicemail",
        ],
        why: "the transport knows sockets and SIP framing only; what plugs into it \
              (the cluster tunnel) does so through a trait the transport defines",
    },
    // media: "know SIP"; calls and apps drive it through its API.
    Rule {
        files: &["media/"],
        not_in: &[],
        forbid: &[
            "crate::admin",
            "crate::apps",
            "crate::call",
            "crate::cluster",
            "crate::dialplan",
            "crate::http",
            "crate::node",
            "crate::registrar",
            "crate::sip",
            "crate::store",
            "crate::transport",
            "crate::voicemail",
        ],
        why: "media moves RTP and knows no SIP, calls or apps: they drive it through its API",
    },
    // dialplan: "do I/O itself"; the language only (its config spans aside).
    Rule {
        files: &["dialplan/"],
        not_in: &[],
        forbid: &[
            "crate::admin",
            "crate::apps",
            "crate::call",
            "crate::cluster",
            "crate::http",
            "crate::media",
            "crate::metrics",
            "crate::node",
            "crate::registrar",
            "crate::sip",
            "crate::store",
            "crate::transport",
            "crate::voicemail",
        ],
        why: "the dialplan parses and evaluates to plain steps; the runtime runs them \
              (it may read the config's span helpers, nothing else)",
    },
    // config: "read the network"; a leaf every layer may read.
    Rule {
        files: &["config/"],
        not_in: &[],
        forbid: &[
            "crate::admin",
            "crate::apps",
            "crate::call",
            "crate::cluster",
            "crate::dialplan",
            "crate::http",
            "crate::media",
            "crate::metrics",
            "crate::node",
            "crate::registrar",
            "crate::sip",
            "crate::store",
            "crate::transport",
            "crate::voicemail",
        ],
        why: "the config model is a leaf: it imports no other module",
    },
    // metrics: "depend on other modules".
    Rule {
        files: &["metrics.rs"],
        not_in: &[],
        forbid: &[
            "crate::admin",
            "crate::apps",
            "crate::call",
            "crate::cluster",
            "crate::config",
            "crate::dialplan",
            "crate::http",
            "crate::media",
            "crate::node",
            "crate::registrar",
            "crate::sip",
            "crate::store",
            "crate::transport",
            "crate::voicemail",
        ],
        why: "the counters depend on no other module; the tasks that count import them",
    },
    // store: "leak SQL upward"; it depends on no higher layer.
    Rule {
        files: &["store/"],
        not_in: &[],
        forbid: &[
            "crate::admin",
            "crate::apps",
            "crate::call",
            "crate::cluster",
            "crate::dialplan",
            "crate::http",
            "crate::media",
            "crate::node",
            "crate::registrar",
            "crate::sip",
            "crate::transport",
            "crate::voicemail",
        ],
        why: "the store persists what it is given and depends on no higher layer",
    },
    // registrar: "touch media"; it decides, the core sends.
    Rule {
        files: &["registrar/"],
        not_in: &[],
        forbid: &[
            "crate::admin",
            "crate::apps",
            "crate::call",
            "crate::http",
            "crate::media",
            "crate::node",
            "crate::transport",
            "crate::voicemail",
        ],
        why: "the registrar answers REGISTER from memory and the store; it touches no \
              media, calls or sockets and knows nothing of the node that runs it",
    },
    // call: "parse bytes"; the B2BUA, below the apps, talking to the network through the
    // core's commands.
    Rule {
        files: &["call/"],
        not_in: &[],
        forbid: &[
            "crate::admin",
            "crate::apps",
            "crate::cluster",
            "crate::dialplan",
            "crate::http",
            "crate::node",
            "crate::registrar",
            "crate::transport",
            "crate::voicemail",
        ],
        why: "call is the B2BUA: apps build on it, never the reverse; it reaches the \
              network through the core's commands, not the transport",
    },
    // apps: "open sockets"; built on the call and media APIs.
    Rule {
        files: &["apps/"],
        not_in: &[],
        forbid: &["crate::http", "crate::node", "crate::admin"],
        why: "apps are built on call + media; they know no HTTP and not the node",
    },
    Rule {
        files: &["apps/"],
        not_in: &[],
        forbid: SOCKETS,
        why: "apps open no sockets (media endpoints do)",
    },
    // voicemail: "talk to a call or a socket".
    Rule {
        files: &["voicemail/"],
        not_in: &[],
        forbid: &["crate::call", "crate::apps", "crate::http", "crate::node"],
        why: "mailboxes talk to no call (apps do, through a Channel) and know no HTTP \
              or node",
    },
    Rule {
        files: &["voicemail/"],
        not_in: &[],
        forbid: SOCKETS,
        why: "mailboxes open no sockets: MWI NOTIFYs go out through the core",
    },
    // cluster: "bypass store" (held by the sqlx rule); it knows no calls (the node hands
    // the agent a counter).
    Rule {
        files: &["cluster/"],
        not_in: &[],
        forbid: &[
            "crate::admin",
            "crate::apps",
            "crate::call",
            "crate::http",
            "crate::media",
            "crate::node",
            "crate::registrar",
            "crate::voicemail",
        ],
        why: "the cluster layer (membership, routing, VIPs, the tunnel) knows no calls, \
              registrations or HTTP; they use it",
    },
    // admin: "know HTTP or exit codes; touch SQL".
    Rule {
        files: &["admin/"],
        not_in: &[],
        forbid: &[
            "axum",
            "hyper",
            "crate::http",
            "crate::node",
            "crate::apps",
            "crate::media",
            "crate::transport",
        ],
        why: "the management use cases know no HTTP (the CLI shares them) and no node",
    },
    // http: "hold business logic". Held to: no SQL (sqlx rule), no protocol code (SIP,
    // transport, media, apps): handlers parse, call admin/call/voicemail/store, serialise.
    Rule {
        files: &["http/"],
        not_in: &[],
        forbid: &[
            "crate::sip",
            "crate::transport",
            "crate::media",
            "crate::apps",
            "crate::dialplan::eval",
        ],
        why: "http parses, calls the use cases (admin, call, voicemail, store reads) and \
              serialises; no protocol or business logic",
    },
];

/// Imports the rules forbid that stay, each with its reason. A stale exception (nothing
/// matches it any more) fails the test too, so the list only shrinks.
const EXCEPTIONS: &[(&str, &str, &str)] = &[];

// ---- the checker ----

/// A path named in a source file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Named {
    line: usize,
    /// Resolved: `crate::...` for this crate (however it was reached), else as written.
    path: String,
}

/// A break of a rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Violation {
    file: String,
    line: usize,
    path: String,
    pattern: &'static str,
    why: &'static str,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "src/{}:{}: names `{}` (forbidden: `{}`): {}",
            self.file, self.line, self.path, self.pattern, self.why
        )
    }
}

/// The external crates whose paths are checked (others, and local names, are not paths
/// the rules talk about).
const EXTERNAL: &[&str] = &[
    "tokio",
    "sqlx",
    "axum",
    "hyper",
    "hyper_util",
    "tokio_rustls",
    "rustls",
    "socket2",
    "tower",
    "std",
    "rand",
    "jiff",
];

/// The source with comments and string/char literals replaced by spaces (line breaks
/// kept, so lines still count).
fn blank_comments_and_literals(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out: Vec<char> = Vec::with_capacity(c.len());
    let blank = |ch: char| if ch == '\n' { '\n' } else { ' ' };
    let is_ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let prev_ident = i > 0 && is_ident(c[i - 1]);
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.extend([' ', ' ']);
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.extend([' ', ' ']);
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
        } else if !prev_ident && raw_string_start(&c, i).is_some() {
            // r"..", r#".."#, br#".."#: no escapes, ends at `"` and as many `#`.
            let (hashes, open) = raw_string_start(&c, i).unwrap_or((0, i));
            while i <= open {
                out.push(' ');
                i += 1;
            }
            while i < c.len() {
                if c[i] == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#')) {
                    out.resize(out.len() + hashes + 1, ' ');
                    i += hashes + 1;
                    break;
                }
                out.push(blank(c[i]));
                i += 1;
            }
        } else if c[i] == '"' || (!prev_ident && c[i] == 'b' && c.get(i + 1) == Some(&'"')) {
            if c[i] == 'b' {
                out.push(' ');
                i += 1;
            }
            out.push(' ');
            i += 1;
            while i < c.len() {
                if c[i] == '\\' {
                    out.push(' ');
                    if let Some(&n) = c.get(i + 1) {
                        out.push(blank(n));
                    }
                    i += 2;
                } else if c[i] == '"' {
                    out.push(' ');
                    i += 1;
                    break;
                } else {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
        } else if c[i] == '\'' {
            // A char literal ('x', '\n', '\u{..}', '"'); otherwise a lifetime or label.
            let end = if c.get(i + 1) == Some(&'\\') {
                (i + 3..c.len()).find(|&k| c[k] == '\'')
            } else if c.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(e) => {
                    out.resize(out.len() + e + 1 - i, ' ');
                    i = e + 1;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out.into_iter().collect()
}

/// `(hashes, index of the opening quote)` when a raw string starts at `i`.
fn raw_string_start(c: &[char], i: usize) -> Option<(usize, usize)> {
    let mut k = i;
    if c.get(k) == Some(&'b') {
        k += 1;
    }
    if c.get(k) != Some(&'r') {
        return None;
    }
    k += 1;
    let mut hashes = 0;
    while c.get(k) == Some(&'#') {
        hashes += 1;
        k += 1;
    }
    (c.get(k) == Some(&'"')).then_some((hashes, k))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    PathSep,
    Punct(char),
}

fn tokens(text: &str) -> Vec<(usize, Tok)> {
    let c: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push((line, Tok::Ident(c[start..i].iter().collect())));
        } else if ch.is_ascii_digit() {
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_' || c[i] == '.') {
                i += 1;
            }
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push((line, Tok::PathSep));
            i += 2;
        } else {
            out.push((line, Tok::Punct(ch)));
            i += 1;
        }
    }
    out
}

/// The module a file is: `call/machine.rs` is `call::machine`, `sip/mod.rs` is `sip`.
fn module_of(file: &str) -> Vec<String> {
    let stem = file.trim_end_matches(".rs");
    let mut parts: Vec<String> = stem.split('/').map(str::to_owned).collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// Every path of interest a file names, resolved (see [`Named`]).
fn named_paths(file: &str, src: &str) -> Vec<Named> {
    let toks = tokens(&blank_comments_and_literals(src));
    let file_module = module_of(file);
    let mut found = Vec::new();
    // Inline `mod x { .. }` blocks: (name, brace depth inside them).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut pending_mod: Option<String> = None;
    let mut i = 0;
    while i < toks.len() {
        match &toks[i].1 {
            Tok::Punct('{') => {
                depth += 1;
                if let Some(name) = pending_mod.take() {
                    inline.push((name, depth));
                }
            }
            Tok::Punct('}') => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Tok::Punct(';') => pending_mod = None,
            Tok::Ident(kw) if kw == "mod" => {
                if let Some((_, Tok::Ident(name))) = toks.get(i + 1) {
                    pending_mod = Some(name.clone());
                }
            }
            Tok::Ident(root)
                if toks.get(i + 1).map(|t| &t.1) == Some(&Tok::PathSep)
                    && !matches!(
                        toks.get(i.wrapping_sub(1)).map(|t| &t.1),
                        Some(Tok::PathSep)
                    )
                    && !matches!(
                        toks.get(i.wrapping_sub(1)).map(|t| &t.1),
                        Some(Tok::Punct('.'))
                    ) =>
            {
                let line = toks[i].0;
                let (paths, next) = parse_path(&toks, i, Vec::new());
                let mut here = file_module.clone();
                here.extend(inline.iter().map(|(n, _)| n.clone()));
                for segs in paths {
                    if let Some(path) = resolve(root, &segs, &here) {
                        found.push(Named { line, path });
                    }
                }
                i = next.max(i + 1);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// Reads `a::b::{c, d::e, self}` from `toks[i]`: each full path, and where it ended.
fn parse_path(
    toks: &[(usize, Tok)],
    mut i: usize,
    mut segs: Vec<String>,
) -> (Vec<Vec<String>>, usize) {
    loop {
        match toks.get(i).map(|t| &t.1) {
            Some(Tok::Ident(id)) => {
                segs.push(id.clone());
                i += 1;
                if toks.get(i).map(|t| &t.1) == Some(&Tok::PathSep) {
                    i += 1;
                    continue;
                }
                return (vec![segs], i);
            }
            Some(Tok::Punct('{')) => {
                i += 1;
                let mut all = Vec::new();
                loop {
                    match toks.get(i).map(|t| &t.1) {
                        None => return (all, i),
                        Some(Tok::Punct('}')) => return (all, i + 1),
                        Some(Tok::Punct(',')) => i += 1,
                        Some(Tok::Ident(id)) if id == "self" => {
                            all.push(segs.clone());
                            i += 1;
                        }
                        Some(Tok::Ident(id)) if id == "as" => i += 2,
                        Some(Tok::Ident(_)) | Some(Tok::Punct('{')) => {
                            let (sub, next) = parse_path(toks, i, segs.clone());
                            all.extend(sub);
                            i = next.max(i + 1);
                        }
                        Some(_) => i += 1,
                    }
                }
            }
            _ => return (vec![segs], i),
        }
    }
}

/// A path as the rules see it: `crate::...` for this crate, as written for an external
/// crate of interest, `None` for anything else (a local name, a type's associated item).
fn resolve(root: &str, segs: &[String], here: &[String]) -> Option<String> {
    let rest = |from: usize| segs[from..].to_vec();
    let abs: Vec<String> = match root {
        "crate" | "ringfort" => rest(1),
        "self" => [here.to_vec(), rest(1)].concat(),
        "super" => {
            let ups = segs.iter().take_while(|s| *s == "super").count();
            let keep = here.len().checked_sub(ups)?;
            [here[..keep].to_vec(), rest(ups)].concat()
        }
        ext if EXTERNAL.contains(&ext) => return Some(segs.join("::")),
        _ => return None,
    };
    Some(
        std::iter::once("crate".to_owned())
            .chain(abs)
            .collect::<Vec<_>>()
            .join("::"),
    )
}

fn in_scope(file: &str, scope: &[&str]) -> bool {
    scope
        .iter()
        .any(|s| *s == "*" || (s.ends_with('/') && file.starts_with(s)) || file == *s)
}

fn matches(path: &str, pattern: &str) -> bool {
    path == pattern || (path.starts_with(pattern) && path[pattern.len()..].starts_with("::"))
}

/// The breaks of `rules` in one file (`file` relative to `src/`).
fn check_source(file: &str, src: &str, rules: &[Rule]) -> Vec<Violation> {
    let named = named_paths(file, src);
    let mut out = Vec::new();
    for rule in rules {
        if !in_scope(file, rule.files) || in_scope(file, rule.not_in) {
            continue;
        }
        // A module naming itself (`crate::store` inside `store/`) is no layering, unless
        // the rule is about the rooms inside it (`crate::node::core` for admission).
        let own = format!(
            "crate::{}",
            module_of(file).first().map_or("", String::as_str)
        );
        for n in &named {
            for pattern in rule.forbid {
                if matches(&n.path, &own) && !matches(pattern, &own) {
                    continue;
                }
                if matches(&n.path, pattern) {
                    out.push(Violation {
                        file: file.to_owned(),
                        line: n.line,
                        path: n.path.clone(),
                        pattern,
                        why: rule.why,
                    });
                }
            }
        }
    }
    out
}

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `src/`, relative to it with `/`, and its text.
fn sources() -> Vec<(String, String)> {
    let root = src_dir();
    let mut files = Vec::new();
    source_files(&root, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(&root)
                .expect("under src")
                .to_string_lossy()
                .replace('\\', "/");
            let text = fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {rel}: {e}"));
            (rel, text)
        })
        .collect()
}

#[test]
fn the_source_keeps_the_module_maps_layering() {
    let mut used = BTreeSet::new();
    let mut breaks = Vec::new();
    for (file, text) in sources() {
        for v in check_source(&file, &text, RULES) {
            let excepted = EXCEPTIONS.iter().position(|(f, pattern, _)| {
                (*f == v.file || (f.ends_with('/') && v.file.starts_with(f)))
                    && matches(&v.path, pattern)
            });
            match excepted {
                Some(k) => {
                    used.insert(k);
                }
                None => breaks.push(v),
            }
        }
    }
    breaks.sort();
    breaks.dedup();
    let stale: Vec<_> = (0..EXCEPTIONS.len())
        .filter(|k| !used.contains(k))
        .map(|k| EXCEPTIONS[k])
        .collect();
    let mut report = String::new();
    for b in &breaks {
        report.push_str(&format!("{b}\n"));
    }
    for (f, p, _) in &stale {
        report.push_str(&format!(
            "stale exception: src/{f} naming `{p}` no longer happens; remove it\n"
        ));
    }
    assert!(
        report.is_empty(),
        "the layering of DESIGN.md's module map is broken:\n{report}"
    );
}

#[test]
fn every_rule_holds_files_that_exist() {
    let files: Vec<String> = sources().into_iter().map(|(f, _)| f).collect();
    for rule in RULES {
        for scope in rule.files.iter().chain(rule.not_in) {
            assert!(
                files.iter().any(|f| in_scope(f, &[scope])),
                "rule {:?} names {scope}, which matches no file under src/ (renamed?)",
                rule.why
            );
        }
    }
    for (f, _, why) in EXCEPTIONS {
        assert!(
            files.iter().any(|x| in_scope(x, &[f])),
            "exception for src/{f} ({why}) names no file"
        );
    }
}

// ---- the checker's own tests ----

const TEST_RULES: &[Rule] = &[
    Rule {
        files: &["transport/"],
        not_in: &[],
        forbid: &["crate::cluster", "crate::store"],
        why: "transport knows no cluster",
    },
    Rule {
        files: &["sip/"],
        not_in: &[],
        forbid: IO,
        why: "pure",
    },
    Rule {
        files: &["*"],
        not_in: &["store/"],
        forbid: &["sqlx"],
        why: "only the store names sqlx",
    },
];

fn lines_broken(file: &str, src: &str) -> Vec<(usize, String)> {
    check_source(file, src, TEST_RULES)
        .into_iter()
        .map(|v| (v.line, v.path))
        .collect()
}

#[test]
fn the_checker_finds_a_forbidden_use_and_names_its_line() {
    let src = "//! Transport.\n\
               use crate::sip::Peer;\n\
               use crate::cluster::tunnel::Tunnel;\n\
               fn f() {}\n";
    let v = check_source("transport/mod.rs", src, TEST_RULES);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].line, 3);
    assert_eq!(v[0].path, "crate::cluster::tunnel::Tunnel");
    assert_eq!(v[0].why, "transport knows no cluster");
    assert!(v[0]
        .to_string()
        .starts_with("src/transport/mod.rs:3: names `crate::cluster::tunnel::Tunnel`"));
}

#[test]
fn the_checker_reads_groups_inline_paths_attributes_and_super() {
    let src = "use crate::{sip::Peer, store::{self, Binding}};\n\
               fn f() { let s = crate::cluster::view::x(); }\n\
               mod tests {\n\
                   use super::super::store::Store;\n\
                   #[tokio::test]\n\
                   async fn t() { sqlx::query(\"\"); }\n\
               }\n";
    assert_eq!(
        lines_broken("transport/mod.rs", src),
        vec![
            (1, "crate::store".to_owned()),
            (1, "crate::store::Binding".to_owned()),
            (2, "crate::cluster::view::x".to_owned()),
            (4, "crate::store::Store".to_owned()),
            (6, "sqlx::query".to_owned()),
        ]
    );
    // In sip, the runtime is what breaks the rule; `super` stays inside the module.
    let src =
        "mod tests {\n use super::super::message::parse;\n #[tokio::test]\n async fn t() {}\n}\n";
    assert_eq!(
        lines_broken("sip/dialog.rs", src),
        vec![(3, "tokio::test".to_owned())]
    );
}

#[test]
fn comments_strings_and_chars_are_not_imports() {
    let src = "//! See [`crate::cluster::tunnel`].\n\
               /* use crate::store::Store; /* nested */ sqlx::query */\n\
               const A: &str = \"crate::cluster::x and sqlx::y\";\n\
               const B: &str = r#\"use crate::store; \"quoted\" \"#;\n\
               const C: char = '\"'; const D: u8 = b'\\'';\n\
               fn f<'a>(x: &'a str) -> &'a str { x }\n\
               use crate::store::Binding;\n";
    assert_eq!(
        lines_broken("transport/mod.rs", src),
        vec![(7, "crate::store::Binding".to_owned())]
    );
}

#[test]
fn a_module_naming_itself_or_an_allowed_layer_passes() {
    assert!(lines_broken("store/mod.rs", "use sqlx::Row;\nuse crate::store::x;\n").is_empty());
    assert_eq!(
        lines_broken("http/api.rs", "use sqlx::Row;\n"),
        vec![(1, "sqlx::Row".to_owned())]
    );
    assert!(lines_broken("sip/message.rs", "use std::net::SocketAddr;\n").is_empty());
    assert_eq!(
        lines_broken("sip/message.rs", "use std::net::{SocketAddr, UdpSocket};\n"),
        vec![(1, "std::net::UdpSocket".to_owned())]
    );
}
