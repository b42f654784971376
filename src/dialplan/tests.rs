//! Evaluator tests (a fixed clock, a fake extension table), the sample plan, and one
//! loader test per kind of mistake with its exact `file:line: reason`.

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;

use super::*;

/// A fake extension table.
#[derive(Default)]
struct Exts(HashMap<String, ExtensionState>);

impl Exts {
    fn registered(numbers: &[&str]) -> Exts {
        let mut e = Exts::default();
        for n in numbers {
            e.set(n, |_| {});
        }
        e
    }
    fn set(&mut self, n: &str, f: impl FnOnce(&mut ExtensionState)) -> &mut Self {
        let s = self.0.entry(n.to_owned()).or_insert(ExtensionState {
            registered: true,
            ..ExtensionState::default()
        });
        f(s);
        self
    }
}

impl Extensions for Exts {
    fn get(&self, number: &str) -> Option<ExtensionState> {
        self.0.get(number).cloned()
    }
}

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// A Monday, 10:00 in Berlin (CEST).
const MONDAY_10: &str = "2026-03-30T08:00:00Z";

fn plan(text: &str) -> Plan {
    match Plan::from_str("t.toml", text) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

fn route(
    p: &Plan,
    context: &str,
    number: &str,
    caller: &str,
    now: &str,
    ext: &Exts,
) -> Vec<Action> {
    let call = CallContext {
        context,
        number,
        caller,
        now: at(now),
    };
    match p.route(&call, ext) {
        Routing::Route { actions, .. } => actions,
        Routing::NoRoute => panic!("no route for {number} in {context}"),
    }
}

fn dial(numbers: &[&str], secs: u64) -> Dial {
    Dial {
        targets: numbers
            .iter()
            .map(|n| Target {
                number: (*n).to_owned(),
                forwarded_from: None,
            })
            .collect(),
        strategy: Strategy::RingAll,
        timeout: Duration::from_secs(secs),
        on_busy: None,
        on_noanswer: None,
        on_unavailable: None,
    }
}

fn vm(mailbox: &str, greeting: Greeting) -> Action {
    Action::Voicemail {
        mailbox: mailbox.to_owned(),
        greeting,
    }
}

fn play(name: &str) -> Action {
    Action::Play(vec![name.to_owned()])
}

// ---------------------------------------------------------------------------------------
// Patterns, order, includes

const ORDER: &str = r#"
[context.a]
include = ["b"]
[[context.a.route]]
match = "1000"
steps = [{ play = "exact" }]
[[context.a.route]]
match = "_1XXX"
steps = [{ play = "class" }]
[[context.a.route]]
regex = "1[0-9]{4}"
steps = [{ play = "regex" }]
[context.b]
[[context.b.route]]
match = "_1XXX"
steps = [{ play = "included" }]
[[context.b.route]]
match = "_9."
steps = [{ play = "prefix" }]
"#;

#[test]
fn the_first_matching_route_wins_then_includes() {
    let p = plan(ORDER);
    let e = Exts::default();
    assert_eq!(route(&p, "a", "1000", "1", MONDAY_10, &e), [play("exact")]);
    assert_eq!(route(&p, "a", "1001", "1", MONDAY_10, &e), [play("class")]);
    assert_eq!(route(&p, "a", "10001", "1", MONDAY_10, &e), [play("regex")]);
    assert_eq!(route(&p, "a", "9123", "1", MONDAY_10, &e), [play("prefix")]);
    assert_eq!(
        route(&p, "b", "1000", "1", MONDAY_10, &e),
        [play("included")]
    );
    let call = CallContext {
        context: "a",
        number: "555",
        caller: "1",
        now: at(MONDAY_10),
    };
    assert_eq!(p.route(&call, &e), Routing::NoRoute);
    let unknown_context = CallContext {
        context: "nope",
        ..call
    };
    assert_eq!(p.route(&unknown_context, &e), Routing::NoRoute);
    // The route is named by its place in the file.
    let Routing::Route { at, .. } = p.route(
        &CallContext {
            number: "1000",
            ..call
        },
        &e,
    ) else {
        panic!()
    };
    assert_eq!(at.to_string(), "t.toml:5");
}

// ---------------------------------------------------------------------------------------
// Time and caller conditions

const TIMED: &str = r#"
[timeset.office]
timezone = "Europe/Berlin"
weekdays = ["mon-fri"]
hours = ["08:30-17:30"]
[timeset.holidays]
timezone = "Europe/Berlin"
dates = ["12-24..12-26", "2026-04-03"]
[context.in]
[[context.in.route]]
match = "0"
when = "office"
unless = "holidays"
steps = [{ play = "open" }]
[[context.in.route]]
match = "0"
caller = "_1XXX"
steps = [{ play = "closed-staff" }]
[[context.in.route]]
match = "0"
steps = [{ play = "closed" }]
"#;

#[test]
fn time_conditions_follow_the_zone_across_dst() {
    let p = plan(TIMED);
    let e = Exts::default();
    let r = |now: &str| route(&p, "in", "0", "+4930999", now, &e);
    // Friday 2026-03-27 (CET, UTC+1): opens 07:30Z.
    assert_eq!(r("2026-03-27T07:29:00Z"), [play("closed")]);
    assert_eq!(r("2026-03-27T07:30:00Z"), [play("open")]);
    // Monday 2026-03-30 (CEST, UTC+2): opens 06:30Z, closes 15:30Z.
    assert_eq!(r("2026-03-30T06:30:00Z"), [play("open")]);
    assert_eq!(r("2026-03-30T06:29:59Z"), [play("closed")]);
    assert_eq!(r("2026-03-30T15:29:59Z"), [play("open")]);
    assert_eq!(r("2026-03-30T15:30:00Z"), [play("closed")]);
    // Saturday.
    assert_eq!(r("2026-03-28T10:00:00Z"), [play("closed")]);
    // Good Friday 2026-04-03 (one-off) and Christmas (yearly), in office hours.
    assert_eq!(r("2026-04-03T10:00:00Z"), [play("closed")]);
    assert_eq!(r("2027-12-24T10:00:00Z"), [play("closed")]);
    assert_eq!(r("2027-12-27T10:00:00Z"), [play("open")]);
}

#[test]
fn caller_conditions() {
    let p = plan(TIMED);
    let e = Exts::default();
    let sunday = "2026-03-29T10:00:00Z";
    assert_eq!(
        route(&p, "in", "0", "1001", sunday, &e),
        [play("closed-staff")]
    );
    assert_eq!(route(&p, "in", "0", "10010", sunday, &e), [play("closed")]);
}

// ---------------------------------------------------------------------------------------
// Dials: DND, registration, forwarding, groups

const PERSONAL: &str = r#"
[context.x]
[[context.x.route]]
match = "_1XXX"
steps = [{ dial = "${EXTEN}", timeout = 20 }]
on_busy = [{ voicemail = "${EXTEN}", greeting = "busy" }]
on_noanswer = [{ voicemail = "${EXTEN}" }]
on_unavailable = [{ voicemail = "${EXTEN}" }]
[[context.x.route]]
match = "_2XXX"
steps = [{ dial = "1${EXTEN:1}", forwarding = false }, { play = "sorry" }]
[[context.x.route]]
match = "3000"
steps = [{ group = "team" }, { play = "nobody" }]
[[context.x.route]]
match = "3001"
steps = [{ group = "hunters", timeout = 5, on_noanswer = [{ hangup = "busy" }] }]
[group.team]
members = ["1001", "1002", "1003"]
[group.hunters]
members = ["1002", "1001"]
strategy = "hunt"
timeout = 10
"#;

fn personal_dial(target: Target) -> Dial {
    Dial {
        targets: vec![target],
        strategy: Strategy::RingAll,
        timeout: Duration::from_secs(20),
        on_busy: Some(vec![vm("1001", Greeting::Busy)]),
        on_noanswer: Some(vec![vm("1001", Greeting::Unavailable)]),
        on_unavailable: Some(vec![vm("1001", Greeting::Unavailable)]),
    }
}

fn t(n: &str) -> Target {
    Target {
        number: n.to_owned(),
        forwarded_from: None,
    }
}

#[test]
fn a_registered_extension_rings_with_its_outcomes() {
    let p = plan(PERSONAL);
    let e = Exts::registered(&["1001"]);
    assert_eq!(
        route(&p, "x", "1001", "1002", MONDAY_10, &e),
        [Action::Dial(personal_dial(t("1001")))]
    );
}

#[test]
fn an_unregistered_extension_goes_to_its_branch_at_once() {
    let p = plan(PERSONAL);
    let mut e = Exts::default();
    e.set("1001", |s| s.registered = false);
    assert_eq!(
        route(&p, "x", "1001", "1002", MONDAY_10, &e),
        [vm("1001", Greeting::Unavailable)]
    );
    // No such extension at all: 404, not somebody's voicemail.
    assert_eq!(
        route(&p, "x", "1999", "1002", MONDAY_10, &e),
        [Action::Hangup(Cause::Status(404))]
    );
}

#[test]
fn dnd_is_busy() {
    let p = plan(PERSONAL);
    let mut e = Exts::default();
    e.set("1001", |s| s.dnd = true);
    assert_eq!(
        route(&p, "x", "1001", "1002", MONDAY_10, &e),
        [vm("1001", Greeting::Busy)]
    );
    // Without a busy handler, the plan goes on with the next step.
    assert_eq!(
        route(&p, "x", "2001", "1002", MONDAY_10, &e),
        [play("sorry")]
    );
    // DND with a busy forward: the forward.
    e.set("1001", |s| s.forward_busy = Some("1005".into()));
    e.set("1005", |_| {});
    let Action::Dial(d) = &route(&p, "x", "1001", "1002", MONDAY_10, &e)[0] else {
        panic!()
    };
    assert_eq!(d.targets, [t("1005")]);
}

#[test]
fn forward_always_dials_the_target_instead() {
    let p = plan(PERSONAL);
    let mut e = Exts::default();
    e.set("1001", |s| {
        s.registered = false;
        s.forward_always = Some("1002".into())
    });
    e.set("1002", |s| s.forward_always = Some("1003".into()));
    e.set("1003", |s| s.forward_always = Some("1001".into())); // a loop, cut
    let forwarded = Target {
        number: "1003".into(),
        forwarded_from: Some("1001".into()),
    };
    assert_eq!(
        route(&p, "x", "1001", "1009", MONDAY_10, &e),
        [Action::Dial(personal_dial(forwarded))]
    );
    // forwarding = false rings the extension itself.
    e.set("1001", |s| s.registered = true);
    assert_eq!(
        route(&p, "x", "2001", "1009", MONDAY_10, &e),
        [Action::Dial(dial(&["1001"], 20)), play("sorry")]
    );
}

#[test]
fn busy_and_noanswer_forwards_replace_the_plans_branches_and_keep_them_after() {
    let p = plan(PERSONAL);
    let mut e = Exts::registered(&["1001", "1005", "1006"]);
    e.set("1001", |s| {
        s.forward_busy = Some("1005".into());
        s.forward_noanswer = Some("1006".into());
    });
    let Action::Dial(d) = &route(&p, "x", "1001", "1002", MONDAY_10, &e)[0] else {
        panic!()
    };
    assert_eq!(d.targets, [t("1001")]);
    // On busy: 1005 rings; if 1005 fails too, 1001's voicemail as the plan says.
    let fwd = |to: &str| {
        Some(vec![Action::Dial(Dial {
            targets: vec![t(to)],
            ..personal_dial(t(to))
        })])
    };
    assert_eq!(d.on_busy, fwd("1005"));
    assert_eq!(d.on_noanswer, fwd("1006"));
    // Not registered counts as not answering: the no-answer forward.
    assert_eq!(d.on_unavailable, fwd("1006"));
    // A forward to a number that is no extension (no trunks yet): the plan's voicemail.
    e.0.remove("1005");
    let Action::Dial(d) = &route(&p, "x", "1001", "1002", MONDAY_10, &e)[0] else {
        panic!()
    };
    assert_eq!(d.on_busy, Some(vec![vm("1001", Greeting::Busy)]));
    // No busy/no-answer forward: the plan's voicemail.
    let e = Exts::registered(&["1001"]);
    let Action::Dial(d) = &route(&p, "x", "1001", "1002", MONDAY_10, &e)[0] else {
        panic!()
    };
    assert_eq!(d.on_busy, Some(vec![vm("1001", Greeting::Busy)]));
}

#[test]
fn ring_groups_skip_dnd_and_unregistered_members_and_ignore_forwards() {
    let p = plan(PERSONAL);
    let mut e = Exts::registered(&["1001", "1002", "1003"]);
    e.set("1002", |s| s.dnd = true);
    e.set("1003", |s| s.registered = false);
    e.set("1001", |s| s.forward_always = Some("1009".into()));
    assert_eq!(
        route(&p, "x", "3000", "1", MONDAY_10, &e),
        [Action::Dial(dial(&["1001"], 20)), play("nobody")]
    );
    // Nobody can ring: the next step.
    e.set("1001", |s| s.dnd = true);
    assert_eq!(route(&p, "x", "3000", "1", MONDAY_10, &e), [play("nobody")]);
    // Hunt: members in order, the step's timeout (each), its own branch.
    let e = Exts::registered(&["1001", "1002"]);
    assert_eq!(
        route(&p, "x", "3001", "1", MONDAY_10, &e),
        [Action::Dial(Dial {
            strategy: Strategy::Hunt,
            on_noanswer: Some(vec![Action::Hangup(Cause::Status(486))]),
            ..dial(&["1002", "1001"], 5)
        })]
    );
}

// ---------------------------------------------------------------------------------------
// goto, variables

const JUMPS: &str = r#"
[context.a]
[[context.a.route]]
regex = "9(0[0-9]+)"
steps = [{ play = "digits/${1}" }, { goto = "b", number = "${1}" }]
[[context.a.route]]
match = "_8X"
steps = [{ goto = "b" }]
[[context.a.route]]
match = "77"
steps = [{ goto = "loop" }]
[[context.a.route]]
match = "_*XX"
steps = [{ play = ["${EXTEN:1}", "from-${CALLER}"] }]
[context.b]
[[context.b.route]]
match = "_0."
steps = [{ play = "b-got-${EXTEN}" }]
[context.loop]
[[context.loop.route]]
match = "77"
steps = [{ play = "again" }, { goto = "a" }]
"#;

#[test]
fn goto_continues_in_the_other_context() {
    let p = plan(JUMPS);
    let e = Exts::default();
    assert_eq!(
        route(&p, "a", "9030", "1001", MONDAY_10, &e),
        [play("digits/030"), play("b-got-030")]
    );
    // No route there: 404.
    assert_eq!(
        route(&p, "a", "81", "1001", MONDAY_10, &e),
        [Action::Hangup(Cause::Status(404))]
    );
}

#[test]
fn a_goto_loop_ends_with_482() {
    let p = plan(JUMPS);
    let actions = route(&p, "a", "77", "1001", MONDAY_10, &Exts::default());
    assert_eq!(actions.len(), MAX_GOTO_HOPS / 2 + 1);
    assert_eq!(actions.last(), Some(&Action::Hangup(Cause::Status(482))));
}

#[test]
fn variables_are_substituted() {
    let p = plan(JUMPS);
    assert_eq!(
        route(&p, "a", "*42", "1001", MONDAY_10, &Exts::default()),
        [Action::Play(vec!["42".into(), "from-1001".into()])]
    );
}

// ---------------------------------------------------------------------------------------
// Menus and the sample plan

fn sample() -> Plan {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/dialplans/default.toml");
    let text = std::fs::read_to_string(path).unwrap();
    plan(&text)
}

#[test]
fn the_sample_routes_extensions_voicemail_and_features() {
    let p = sample();
    assert_eq!(p.start_context(), Some("internal"));
    let registered = Exts::registered(&["1001", "1002"]);
    // 1001 registered: rings 20 s, voicemail after.
    let actions = route(&p, "internal", "1001", "1002", MONDAY_10, &registered);
    let [Action::Dial(d)] = &actions[..] else {
        panic!("{actions:?}")
    };
    assert_eq!(d.targets, [t("1001")]);
    assert_eq!(d.timeout, Duration::from_secs(20));
    assert_eq!(d.on_noanswer, Some(vec![vm("1001", Greeting::Unavailable)]));
    assert_eq!(d.on_busy, Some(vec![vm("1001", Greeting::Busy)]));
    // 1001 not registered: voicemail at once with the unavailable greeting.
    let mut e = Exts::registered(&["1002"]);
    e.set("1001", |s| s.registered = false);
    assert_eq!(
        route(&p, "internal", "1001", "1002", MONDAY_10, &e),
        [vm("1001", Greeting::Unavailable)]
    );
    // *97: the caller's own mailbox.
    assert_eq!(
        route(&p, "internal", "*97", "1002", MONDAY_10, &e),
        [Action::VoicemailMain {
            mailbox: "1002".into()
        }]
    );
    // 8000: the room with its PINs.
    assert_eq!(
        route(&p, "internal", "8000", "1002", MONDAY_10, &e),
        [Action::Conference(Room {
            name: "8000".into(),
            pin: Some("1234".into()),
            moderator_pin: Some("4321".into()),
            announce: true,
        })]
    );
}

#[test]
fn the_sample_auto_attendant_follows_office_hours() {
    let p = sample();
    let e = Exts::registered(&["1000", "1001", "1002", "1003"]);
    assert_eq!(
        route(&p, "internal", "0", "1002", MONDAY_10, &e),
        [Action::Menu("main".into())]
    );
    // Monday 20:00 in Berlin; and Christmas Day at 10:00.
    for now in ["2026-03-30T18:00:00Z", "2026-12-25T09:00:00Z"] {
        assert_eq!(
            route(&p, "internal", "0", "1002", now, &e),
            [play("closed"), vm("1000", Greeting::None)],
            "{now}"
        );
    }
    // The menu: 1 rings sales, a typed extension is dialled, 5 means nothing.
    let call = CallContext {
        context: "internal",
        number: "0",
        caller: "+4930123",
        now: at(MONDAY_10),
    };
    let m = p.menu("main").unwrap();
    assert_eq!(m.prompt, ["welcome", "main-menu"]);
    assert_eq!((m.timeout, m.retries), (5, 3));
    let MenuChoice::Actions(sales) = p.menu_choice("main", "1", &call, &e) else {
        panic!()
    };
    assert_eq!(
        sales,
        [
            Action::Dial(dial(&["1001", "1002", "1003"], 20)),
            vm("1000", Greeting::Unavailable)
        ]
    );
    let MenuChoice::Actions(direct) = p.menu_choice("main", "1002", &call, &e) else {
        panic!()
    };
    let [Action::Dial(d)] = &direct[..] else {
        panic!("{direct:?}")
    };
    assert_eq!(d.targets, [t("1002")]);
    assert_eq!(p.menu_choice("main", "5", &call, &e), MenuChoice::Invalid);
    // *97 is not offered to outside callers through the menu.
    assert_eq!(p.menu_choice("main", "*97", &call, &e), MenuChoice::Invalid);
    // Nested menu and back.
    assert_eq!(
        p.menu_choice("main", "2", &call, &e),
        MenuChoice::Actions(vec![Action::Menu("support".into())])
    );
    assert_eq!(
        p.menu_choice("support", "*", &call, &e),
        MenuChoice::Actions(vec![Action::Menu("main".into())])
    );
    let [Action::Dial(d)] = &p.menu_failed("main", &call, &e)[..] else {
        panic!()
    };
    assert_eq!(d.targets, [t("1000")]);
    assert_eq!(
        p.menu_failed("support", &call, &e),
        [Action::Hangup(Cause::Normal)]
    );
}

#[test]
fn files_merge_and_the_folder_loads() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.toml"),
        "[context.a]\ninclude = [\"b\"]\n[[context.a.route]]\nmatch = \"1\"\nsteps = [{ hangup = 486 }]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.toml"),
        "[context.b]\n[[context.b.route]]\nmatch = \"2\"\nsteps = [{ hangup = \"congestion\" }]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a plan").unwrap();
    let p = Plan::load_dir(dir.path()).unwrap();
    assert_eq!((p.contexts().count(), p.route_count()), (2, 2));
    assert_eq!(
        route(&p, "a", "2", "1", MONDAY_10, &Exts::default()),
        [Action::Hangup(Cause::Status(503))]
    );
    // No folder: an empty plan.
    let none = Plan::load_dir(&dir.path().join("missing")).unwrap();
    assert_eq!(none.route_count(), 0);
}

// ---------------------------------------------------------------------------------------
// Loader errors: one per kind of mistake, with its exact message.

fn load_err(text: &str) -> String {
    match Plan::from_str("d.toml", text) {
        Ok(_) => panic!("loaded:\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// A context `c` around one route body.
fn one_route(body: &str) -> String {
    format!("[context.c]\n[[context.c.route]]\n{body}\n")
}

macro_rules! loader_error {
    ($name:ident, $text:expr, $want:expr) => {
        #[test]
        fn $name() {
            assert_eq!(load_err(&$text), $want);
        }
    };
}

loader_error!(
    error_toml_syntax,
    "[context.c]\n[[context.c.route]\n",
    "d.toml:2: TOML syntax error: invalid table header; expected `.`, `]]`"
);
loader_error!(
    error_unknown_section,
    "[contexts.c]\nx = 1\n",
    "d.toml:1: unknown section \"contexts\", expected one of defaults, context, group, menu, timeset, conference"
);
loader_error!(
    error_unknown_key_in_route,
    one_route("match = \"1\"\nsteps = [{ play = \"a\" }]\nwhen_ = \"x\""),
    "d.toml:5: unknown key \"when_\" in a route, expected one of match, regex, when, unless, caller, steps, on_busy, on_noanswer, on_unavailable"
);
loader_error!(
    error_unknown_key_in_step,
    one_route("match = \"1\"\nsteps = [{ play = \"a\", timeout = 3 }]"),
    "d.toml:4: unknown key \"timeout\" in a play step, expected one of play"
);
loader_error!(
    error_wrong_type,
    one_route("match = \"1\"\nsteps = [{ dial = \"1\", timeout = \"20s\" }]"),
    "d.toml:4: timeout must be a whole number, found a string"
);
loader_error!(
    error_out_of_range,
    one_route("match = \"1\"\nsteps = [{ dial = \"1\", timeout = 0 }]"),
    "d.toml:4: timeout = 0 is out of range (1 to 600)"
);
loader_error!(
    error_step_without_action,
    one_route("match = \"1\"\nsteps = [{ timeout = 3 }]"),
    "d.toml:4: a step needs one of dial, group, play, menu, voicemail, voicemail_main, conference, hangup, goto"
);
loader_error!(
    error_step_with_two_actions,
    one_route("match = \"1\"\nsteps = [{ play = \"a\", hangup = 486 }]"),
    "d.toml:4: a step does one thing: found both play and hangup; write two steps"
);
loader_error!(
    error_empty_steps,
    one_route("match = \"1\"\nsteps = []"),
    "d.toml:4: steps is empty: give at least one step"
);
loader_error!(
    error_missing_steps,
    one_route("match = \"1\""),
    "d.toml:2: the route for \"1\" has no steps (steps = [ ... ])"
);
loader_error!(
    error_step_after_hangup,
    one_route("match = \"1\"\nsteps = [\n  { hangup = \"busy\" },\n  { play = \"a\" },\n]"),
    "d.toml:6: this step never runs: the hangup before it ends the steps"
);
loader_error!(
    error_no_pattern,
    one_route("steps = [{ play = \"a\" }]"),
    "d.toml:2: a route needs match = \"...\" (a number or a pattern like \"_1XXX\") or regex = \"...\""
);
loader_error!(
    error_match_and_regex,
    one_route("match = \"1\"\nregex = \"1\"\nsteps = [{ play = \"a\" }]"),
    "d.toml:4: a route has match or regex, not both"
);
loader_error!(
    error_bad_pattern,
    one_route("match = \"_1[3-\"\nsteps = [{ play = \"a\" }]"),
    "d.toml:3: pattern \"_1[3-\": a range in [...] needs a digit on each side of the -, like [1-4]"
);
loader_error!(
    error_bad_regex,
    one_route("regex = \"1(2\"\nsteps = [{ play = \"a\" }]"),
    "d.toml:3: bad regex \"1(2\": found open group without closing ')'"
);
loader_error!(
    error_bad_caller_pattern,
    one_route("match = \"1\"\ncaller = \"_9.X\"\nsteps = [{ play = \"a\" }]"),
    "d.toml:4: caller: pattern \"_9.X\": . and ! may only come last (they take all the remaining keys)"
);
loader_error!(
    error_unknown_context,
    one_route("match = \"1\"\nsteps = [{ goto = \"elsewhere\" }]"),
    "d.toml:4: unknown context \"elsewhere\" (defined: \"c\")"
);
loader_error!(
    error_unknown_menu,
    one_route("match = \"1\"\nsteps = [{ menu = \"main\" }]"),
    "d.toml:4: unknown menu \"main\" (no menu is defined)"
);
loader_error!(
    error_unknown_group,
    one_route("match = \"1\"\nsteps = [{ group = \"sales\" }]"),
    "d.toml:4: unknown group \"sales\" (no group is defined)"
);
loader_error!(
    error_unknown_timeset,
    one_route("match = \"1\"\nwhen = \"office\"\nsteps = [{ play = \"a\" }]"),
    "d.toml:4: unknown timeset \"office\" (no timeset is defined)"
);
loader_error!(
    error_unknown_conference,
    one_route("match = \"1\"\nsteps = [{ conference = \"9000\" }]"),
    "d.toml:4: unknown conference \"9000\" (no conference is defined)"
);
loader_error!(
    error_unknown_variable,
    one_route("match = \"1\"\nsteps = [{ dial = \"${EXTENSION}\" }]"),
    "d.toml:4: \"${EXTENSION}\": unknown variable ${EXTENSION} (use ${EXTEN}, ${EXTEN:1} to drop the first key, ${CALLER}, or ${1}... for a regex's groups)"
);
loader_error!(
    error_regex_group_out_of_range,
    one_route("regex = \"9(.*)\"\nsteps = [{ dial = \"${2}\" }]"),
    "d.toml:4: \"${2}\": ${2} is not a group of this route's regex (it has ${1} to ${1})"
);
loader_error!(
    error_bad_sound_name,
    one_route("match = \"1\"\nsteps = [{ play = \"../etc/passwd\" }]"),
    "d.toml:4: bad sound name \"../etc/passwd\": a name in the sounds folder like \"welcome\" or \"digits/1\" (letters, digits, - _ . /; no leading / or ..)"
);
loader_error!(
    error_bad_hangup_status,
    one_route("match = \"1\"\nsteps = [{ hangup = 200 }]"),
    "d.toml:4: bad hangup cause 200: use a SIP status 400 to 699 or one of normal, busy, unavailable, not_found, forbidden, congestion, decline"
);
loader_error!(
    error_bad_hangup_name,
    one_route("match = \"1\"\nsteps = [{ hangup = \"rude\" }]"),
    "d.toml:4: bad hangup cause \"rude\": use a SIP status 400 to 699 or one of normal, busy, unavailable, not_found, forbidden, congestion, decline"
);
loader_error!(
    error_dead_route,
    format!(
        "{}[[context.c.route]]\nmatch = \"_1xxx\"\nsteps = [{{ play = \"b\" }}]\n",
        one_route("match = \"_1XXX\"\nsteps = [{ play = \"a\" }]")
    ),
    "d.toml:6: this route can never match: the route at d.toml:3 matches \"_1XXX\" first"
);
loader_error!(
    error_include_cycle,
    "[context.a]\ninclude = [\"b\"]\n[context.b]\ninclude = [\"a\"]\n",
    "d.toml:1: contexts include each other in a loop: a -> b -> a"
);
loader_error!(
    error_self_include,
    "[context.a]\ninclude = [\"a\"]\n",
    "d.toml:2: context \"a\" includes itself"
);
loader_error!(
    error_bad_time_zone,
    "[timeset.t]\ntimezone = \"Europe/Atlantis\"\nweekdays = [\"mon\"]\n",
    "d.toml:2: unknown time zone \"Europe/Atlantis\": use a name of the tz database like \"Europe/Berlin\" or \"America/New_York\" (or \"UTC\")"
);
loader_error!(
    error_missing_time_zone,
    "[timeset.t]\nweekdays = [\"mon\"]\n",
    "d.toml:1: timeset \"t\" has no time zone: set timezone = \"Europe/Berlin\" (for example) here or in [defaults]"
);
loader_error!(
    error_bad_hours,
    "[timeset.t]\ntimezone = \"UTC\"\nhours = [\n  \"08:00-12:00\",\n  \"13:00-17:65\",\n]\n",
    "d.toml:5: bad hours \"13:00-17:65\": times are HH:MM, 00:00 to 24:00"
);
loader_error!(
    error_bad_weekday,
    "[timeset.t]\ntimezone = \"UTC\"\nweekdays = [\"mon-fry\"]\n",
    "d.toml:3: bad weekday \"mon-fry\": use mon, tue, wed, thu, fri, sat, sun or a range like \"mon-fri\""
);
loader_error!(
    error_bad_date,
    "[timeset.t]\ntimezone = \"UTC\"\nexcept = [\"12-24..12-32\"]\n",
    "d.toml:3: bad date \"12-24..12-32\": use MM-DD (every year), YYYY-MM-DD, or a range like \"12-24..12-26\""
);
loader_error!(
    error_empty_timeset,
    "[timeset.t]\ntimezone = \"UTC\"\n",
    "d.toml:1: timeset \"t\" says nothing: give weekdays, hours, dates or except"
);
loader_error!(
    error_bad_menu_option,
    "[menu.m]\nprompt = \"p\"\n[menu.m.options]\n\"12\" = [{ play = \"a\" }]\n",
    "d.toml:4: menu \"m\": option \"12\" is not a key: use one of 0-9, * or # (numbers typed are for direct_dial)"
);
loader_error!(
    error_menu_without_prompt,
    "[menu.m]\noptions = { \"1\" = [{ play = \"a\" }] }\n",
    "d.toml:1: menu \"m\" has no prompt (prompt = \"main-menu\", a sound name)"
);
loader_error!(
    error_bad_strategy,
    "[group.g]\nmembers = [\"1001\"]\nstrategy = \"random\"\n",
    "d.toml:3: unknown strategy \"random\": \"ringall\" (all at once) or \"hunt\" (in turn)"
);
loader_error!(
    error_bad_group_member,
    "[group.g]\nmembers = [\"1001\", \"_1XXX\"]\n",
    "d.toml:2: group \"g\": member \"_1XXX\" is not an extension number"
);
loader_error!(
    error_bad_pin,
    "[conference.8000]\npin = \"12ab\"\n",
    "d.toml:2: pin \"12ab\" must be 1 to 16 digits (callers type it)"
);
loader_error!(
    error_bad_greeting,
    one_route("match = \"1\"\nsteps = [{ voicemail = \"1\", greeting = \"funny\" }]"),
    "d.toml:4: unknown greeting \"funny\": \"unavailable\", \"busy\" or \"none\""
);

#[test]
fn error_a_name_defined_in_two_files_names_both() {
    let a = (
        "a.toml".to_owned(),
        "[context.c]\ninclude = []\n".to_owned(),
    );
    let b = (
        "b.toml".to_owned(),
        "\n\n[context.c]\ninclude = []\n".to_owned(),
    );
    let err = Plan::from_files(&[a, b]).unwrap_err().to_string();
    assert_eq!(
        err,
        "b.toml:3: context \"c\" is already defined at a.toml:1"
    );
}

#[test]
fn error_every_mistake_is_reported_one_per_line() {
    let text = one_route("match = \"1\"\nsteps = [{ dial = \"1\", timeout = \"x\" }]\nfoo = 1");
    let err = Plan::from_str("d.toml", &text).unwrap_err();
    let lines: Vec<String> = err.errors().iter().map(|e| e.to_string()).collect();
    assert_eq!(
        lines,
        [
            "d.toml:4: timeout must be a whole number, found a string",
            "d.toml:5: unknown key \"foo\" in a route, expected one of match, regex, when, unless, caller, steps, on_busy, on_noanswer, on_unavailable",
        ]
    );
}
