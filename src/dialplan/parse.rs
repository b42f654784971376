//! The loader: each file's tree is read into typed items (with every mistake found, at the
//! offending value's line), the files are merged (a name defined twice is an error naming
//! both places), then references, include cycles and dead routes are checked.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::time::{self, TimeSet};
use super::tree::{self, Node, Value};
use super::{
    Cause, Context, DialplanError, Greeting, Group, Handlers, Loc, Menu, Pattern, Plan, Room,
    Route, Step, Strategy, Template,
};

/// Dial timeout when neither the step, the group nor `[defaults]` gives one, seconds.
pub(crate) const DEFAULT_DIAL_TIMEOUT: u32 = 20;

const SECTIONS: &[&str] = &[
    "defaults",
    "context",
    "group",
    "menu",
    "timeset",
    "conference",
];
const DEFAULTS_KEYS: &[&str] = &["context", "timezone", "dial_timeout"];
const CONTEXT_KEYS: &[&str] = &["include", "route"];
const ROUTE_KEYS: &[&str] = &[
    "match",
    "regex",
    "when",
    "unless",
    "caller",
    "steps",
    "on_busy",
    "on_noanswer",
    "on_unavailable",
];
const GROUP_KEYS: &[&str] = &["members", "strategy", "timeout"];
const MENU_KEYS: &[&str] = &[
    "prompt",
    "timeout",
    "digit_timeout",
    "retries",
    "invalid_prompt",
    "timeout_prompt",
    "direct_dial",
    "options",
    "on_fail",
];
const TIMESET_KEYS: &[&str] = &["timezone", "weekdays", "hours", "dates", "except"];
const ROOM_KEYS: &[&str] = &["pin", "moderator_pin", "announce"];

/// The step kinds (their action key) and the other keys each takes.
const STEP_KINDS: &[(&str, &[&str])] = &[
    (
        "dial",
        &[
            "strategy",
            "timeout",
            "forwarding",
            "on_busy",
            "on_noanswer",
            "on_unavailable",
        ],
    ),
    (
        "group",
        &["timeout", "on_busy", "on_noanswer", "on_unavailable"],
    ),
    ("play", &[]),
    ("menu", &[]),
    ("voicemail", &["greeting"]),
    ("voicemail_main", &[]),
    ("conference", &[]),
    ("hangup", &[]),
    ("goto", &["number"]),
];

const CAUSES: &[(&str, Cause)] = &[
    ("normal", Cause::Normal),
    ("busy", Cause::Status(486)),
    ("unavailable", Cause::Status(480)),
    ("not_found", Cause::Status(404)),
    ("forbidden", Cause::Status(403)),
    ("congestion", Cause::Status(503)),
    ("decline", Cause::Status(603)),
];

/// A name used somewhere, checked once every file is in.
struct Ref {
    kind: Kind,
    name: String,
    loc: Loc,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Context,
    Group,
    Menu,
    Timeset,
    Room,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Context => "context",
            Kind::Group => "group",
            Kind::Menu => "menu",
            Kind::Timeset => "timeset",
            Kind::Room => "conference",
        }
    }
}

/// A time set before its zone is known (`[defaults] timezone` may be in another file).
struct RawTimeset {
    zone: Option<(String, usize)>,
    set: TimeSet,
    loc: Loc,
}

/// One file's items, or all files' once merged.
#[derive(Default)]
struct Items {
    defaults: Vec<(String, String, Loc)>,
    dial_timeout: Option<u32>,
    contexts: Vec<Context>,
    groups: Vec<Group>,
    menus: Vec<Menu>,
    timesets: Vec<(String, RawTimeset)>,
    rooms: Vec<(Room, Loc)>,
    refs: Vec<Ref>,
}

/// Reads one file, collecting errors.
struct Reader<'a> {
    file: Arc<str>,
    errors: &'a mut Vec<DialplanError>,
    items: Items,
}

pub(crate) fn build(files: &[(String, String)]) -> Result<Plan, DialplanError> {
    let mut errors = Vec::new();
    let mut all = Items::default();
    for (name, text) in files {
        let doc = match tree::parse(text) {
            Ok(doc) => doc,
            Err((line, message)) => {
                errors.push(DialplanError::Invalid {
                    file: name.clone(),
                    line,
                    reason: format!("TOML syntax error: {message}"),
                });
                continue;
            }
        };
        let mut reader = Reader {
            file: Arc::from(name.as_str()),
            errors: &mut errors,
            items: Items::default(),
        };
        reader.document(&doc);
        let items = reader.items;
        all.defaults.extend(items.defaults);
        all.dial_timeout = all.dial_timeout.or(items.dial_timeout);
        all.contexts.extend(items.contexts);
        all.groups.extend(items.groups);
        all.menus.extend(items.menus);
        all.timesets.extend(items.timesets);
        all.rooms.extend(items.rooms);
        all.refs.extend(items.refs);
    }
    DialplanError::check(errors)?;
    merge(all)
}

fn invalid(loc: &Loc, reason: String) -> DialplanError {
    DialplanError::Invalid {
        file: loc.file.to_string(),
        line: loc.line,
        reason,
    }
}

/// Puts the files' items together and checks what needs them all.
fn merge(all: Items) -> Result<Plan, DialplanError> {
    let mut errors = Vec::new();
    let mut plan = Plan {
        dial_timeout: all.dial_timeout.unwrap_or(DEFAULT_DIAL_TIMEOUT),
        ..Plan::default()
    };

    // [defaults] keys, each once across files.
    let mut defaults: BTreeMap<String, (String, Loc)> = BTreeMap::new();
    for (key, value, loc) in all.defaults {
        if let Some((_, first)) = defaults.get(&key) {
            errors.push(invalid(
                &loc,
                format!("[defaults] {key} is already set at {first}"),
            ));
        } else {
            defaults.insert(key, (value, loc));
        }
    }

    // Names, each defined once across files.
    fn unique<T>(
        errors: &mut Vec<DialplanError>,
        noun: &str,
        items: Vec<(String, Loc, T)>,
    ) -> BTreeMap<String, T> {
        let mut seen: BTreeMap<String, Loc> = BTreeMap::new();
        let mut out = BTreeMap::new();
        for (name, loc, item) in items {
            if let Some(first) = seen.get(&name) {
                errors.push(invalid(
                    &loc,
                    format!("{noun} {name:?} is already defined at {first}"),
                ));
                continue;
            }
            seen.insert(name.clone(), loc);
            out.insert(name, item);
        }
        out
    }
    plan.contexts = unique(
        &mut errors,
        "context",
        all.contexts
            .into_iter()
            .map(|c| (c.name.clone(), c.loc.clone(), c))
            .collect(),
    );
    plan.groups = unique(
        &mut errors,
        "group",
        all.groups
            .into_iter()
            .map(|g| (g.name.clone(), g.loc.clone(), g))
            .collect(),
    );
    plan.menus = unique(
        &mut errors,
        "menu",
        all.menus
            .into_iter()
            .map(|m| (m.name.clone(), m.loc.clone(), m))
            .collect(),
    );
    plan.rooms = unique(
        &mut errors,
        "conference",
        all.rooms
            .into_iter()
            .map(|(r, loc)| (r.name.clone(), loc, r))
            .collect(),
    );
    let timesets = unique(
        &mut errors,
        "timeset",
        all.timesets
            .into_iter()
            .map(|(name, t)| (name, t.loc.clone(), t))
            .collect(),
    );

    // Time zones: the set's own, else [defaults] timezone.
    let default_zone = match defaults.get("timezone") {
        Some((name, loc)) => match time::zone(name) {
            Ok(z) => Some((name.clone(), z)),
            Err(reason) => {
                errors.push(invalid(loc, reason));
                None
            }
        },
        None => None,
    };
    let default_zone_set = defaults.contains_key("timezone");
    for (name, mut raw) in timesets {
        match &raw.zone {
            Some((zone_name, line)) => match time::zone(zone_name) {
                Ok(z) => {
                    raw.set.zone = z;
                    raw.set.zone_name = zone_name.clone();
                }
                Err(reason) => errors.push(invalid(
                    &Loc {
                        file: raw.loc.file.clone(),
                        line: *line,
                    },
                    reason,
                )),
            },
            None => match &default_zone {
                Some((zone_name, z)) => {
                    raw.set.zone = z.clone();
                    raw.set.zone_name = zone_name.clone();
                }
                // A bad [defaults] timezone was reported already.
                None if default_zone_set => {}
                None => errors.push(invalid(
                    &raw.loc,
                    format!(
                        "timeset {name:?} has no time zone: set timezone = \"Europe/Berlin\" \
                         (for example) here or in [defaults]"
                    ),
                )),
            },
        }
        plan.timesets.insert(name, raw.set);
    }

    // [defaults] context
    let mut refs = all.refs;
    if let Some((name, loc)) = defaults.get("context") {
        plan.start = Some(name.clone());
        refs.push(Ref {
            kind: Kind::Context,
            name: name.clone(),
            loc: loc.clone(),
        });
    }

    // References.
    for r in &refs {
        let known = match r.kind {
            Kind::Context => plan.contexts.contains_key(&r.name),
            Kind::Group => plan.groups.contains_key(&r.name),
            Kind::Menu => plan.menus.contains_key(&r.name),
            Kind::Timeset => plan.timesets.contains_key(&r.name),
            Kind::Room => plan.rooms.contains_key(&r.name),
        };
        if !known {
            let names: Vec<&String> = match r.kind {
                Kind::Context => plan.contexts.keys().collect(),
                Kind::Group => plan.groups.keys().collect(),
                Kind::Menu => plan.menus.keys().collect(),
                Kind::Timeset => plan.timesets.keys().collect(),
                Kind::Room => plan.rooms.keys().collect(),
            };
            let known = if names.is_empty() {
                format!("no {} is defined", r.kind.noun())
            } else {
                let list: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
                format!("defined: {}", list.join(", "))
            };
            errors.push(invalid(
                &r.loc,
                format!("unknown {} {:?} ({known})", r.kind.noun(), r.name),
            ));
        }
    }

    // Include cycles.
    for ctx in plan.contexts.values() {
        if let Some(path) = include_cycle(&plan, &ctx.name) {
            // Report each cycle once, at its smallest name.
            if path.iter().min() == Some(&ctx.name) {
                errors.push(invalid(
                    &ctx.loc,
                    format!(
                        "contexts include each other in a loop: {}",
                        path.iter()
                            .chain(std::iter::once(&ctx.name))
                            .map(String::as_str)
                            .collect::<Vec<_>>()
                            .join(" -> ")
                    ),
                ));
            }
        }
    }

    // Routes that can never match.
    for ctx in plan.contexts.values() {
        for (i, later) in ctx.routes.iter().enumerate() {
            let shadow = ctx.routes[..i].iter().find(|earlier| {
                earlier.pattern == later.pattern
                    && (earlier.unconditional()
                        || (earlier.when == later.when
                            && earlier.unless == later.unless
                            && earlier.caller == later.caller))
            });
            if let Some(earlier) = shadow {
                errors.push(invalid(
                    &later.loc,
                    format!(
                        "this route can never match: the route at {} matches {:?} first{}",
                        earlier.loc,
                        later.pattern.text(),
                        if earlier.unconditional() {
                            ""
                        } else {
                            " under the same conditions"
                        }
                    ),
                ));
            }
        }
    }

    DialplanError::check(errors)?;
    Ok(plan)
}

impl Route {
    fn unconditional(&self) -> bool {
        self.when.is_none() && self.unless.is_none() && self.caller.is_none()
    }
}

/// The include path from `start` back to itself, if there is one.
fn include_cycle(plan: &Plan, start: &str) -> Option<Vec<String>> {
    fn walk(
        plan: &Plan,
        start: &str,
        at: &str,
        path: &mut Vec<String>,
        seen: &mut HashSet<String>,
    ) -> bool {
        let Some(ctx) = plan.contexts.get(at) else {
            return false;
        };
        for inc in &ctx.includes {
            if inc == start {
                return true;
            }
            if seen.insert(inc.clone()) {
                path.push(inc.clone());
                if walk(plan, start, inc, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_owned()];
    let mut seen = HashSet::new();
    walk(plan, start, start, &mut path, &mut seen).then_some(path)
}

/// What a template may name: `EXTEN`, `CALLER` (each with an optional `:N` offset) and
/// the route regex's groups `1`..=`groups`.
pub(crate) fn check_template(text: &str, groups: usize) -> Result<(), String> {
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("{text:?}: ${{ without a closing }}"));
        };
        let name = &after[..end];
        let (base, offset) = match name.split_once(':') {
            Some((b, o)) => (b, Some(o)),
            None => (name, None),
        };
        let ok = match base {
            "EXTEN" | "CALLER" => offset.map_or(true, |o| o.parse::<usize>().is_ok()),
            n if offset.is_none() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                match n.parse::<usize>() {
                    Ok(g) if g >= 1 && g <= groups => true,
                    _ => {
                        return Err(format!(
                            "{text:?}: ${{{n}}} is not a group of this route's regex ({})",
                            if groups == 0 {
                                "it has none".to_owned()
                            } else {
                                format!("it has ${{1}} to ${{{groups}}}")
                            }
                        ))
                    }
                }
            }
            _ => false,
        };
        if !ok {
            return Err(format!(
                "{text:?}: unknown variable ${{{name}}} (use ${{EXTEN}}, ${{EXTEN:1}} to drop the \
                 first key, ${{CALLER}}, or ${{1}}... for a regex's groups)"
            ));
        }
        rest = &after[end + 1..];
    }
    Ok(())
}

/// A sound name: relative, no `..`, plain characters (variables allowed).
fn check_sound(name: &str) -> Result<(), String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/');
    let without_vars: String = {
        let mut out = String::new();
        let mut rest = name;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            match rest[i..].find('}') {
                Some(j) => rest = &rest[i + j + 1..],
                None => {
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    };
    if name.is_empty()
        || name.starts_with('/')
        || name.split('/').any(|part| part == ".." || part.is_empty())
        || !without_vars.chars().all(plain)
    {
        return Err(format!(
            "bad sound name {name:?}: a name in the sounds folder like \"welcome\" or \
             \"digits/1\" (letters, digits, - _ . /; no leading / or ..)"
        ));
    }
    Ok(())
}

impl Reader<'_> {
    fn loc(&self, line: usize) -> Loc {
        Loc {
            file: self.file.clone(),
            line,
        }
    }

    fn err(&mut self, line: usize, reason: impl Into<String>) {
        let loc = self.loc(line);
        self.errors.push(invalid(&loc, reason.into()));
    }

    fn reference(&mut self, kind: Kind, name: &str, line: usize) {
        let loc = self.loc(line);
        self.items.refs.push(Ref {
            kind,
            name: name.to_owned(),
            loc,
        });
    }

    /// The node's entries, or an error saying `what` must be a table.
    fn table<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n [(String, Node)]> {
        match &node.value {
            Value::Table(entries) => Some(entries),
            other => {
                self.err(
                    node.line,
                    format!("{what} must be a table, found {}", other.kind()),
                );
                None
            }
        }
    }

    /// Reports keys not in `known`.
    fn keys(&mut self, entries: &[(String, Node)], known: &[&str], what: &str) {
        for (key, node) in entries {
            if !known.contains(&key.as_str()) {
                self.err(
                    node.line,
                    format!(
                        "unknown key {key:?} in {what}, expected one of {}",
                        known.join(", ")
                    ),
                );
            }
        }
    }

    fn string<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n str> {
        match &node.value {
            Value::Str(s) => Some(s),
            other => {
                self.err(
                    node.line,
                    format!("{what} must be a string, found {}", other.kind()),
                );
                None
            }
        }
    }

    /// A string or a list of strings.
    fn strings(&mut self, node: &Node, what: &str) -> Option<Vec<(String, usize)>> {
        match &node.value {
            Value::Str(s) => Some(vec![(s.clone(), node.line)]),
            Value::Array(items) => {
                let mut out = Vec::new();
                for item in items {
                    match &item.value {
                        Value::Str(s) => out.push((s.clone(), item.line)),
                        // A bare TOML date in a list of dates.
                        Value::Datetime(d) => out.push((d.clone(), item.line)),
                        other => {
                            self.err(
                                item.line,
                                format!("{what} must hold strings, found {}", other.kind()),
                            );
                            return None;
                        }
                    }
                }
                Some(out)
            }
            Value::Datetime(d) => Some(vec![(d.clone(), node.line)]),
            other => {
                self.err(
                    node.line,
                    format!(
                        "{what} must be a string or a list of strings, found {}",
                        other.kind()
                    ),
                );
                None
            }
        }
    }

    fn int(&mut self, node: &Node, what: &str, lo: i64, hi: i64) -> Option<u32> {
        match &node.value {
            Value::Int(i) if (lo..=hi).contains(i) => u32::try_from(*i).ok(),
            Value::Int(i) => {
                self.err(
                    node.line,
                    format!("{what} = {i} is out of range ({lo} to {hi})"),
                );
                None
            }
            other => {
                self.err(
                    node.line,
                    format!("{what} must be a whole number, found {}", other.kind()),
                );
                None
            }
        }
    }

    fn boolean(&mut self, node: &Node, what: &str) -> Option<bool> {
        match &node.value {
            Value::Bool(b) => Some(*b),
            other => {
                self.err(
                    node.line,
                    format!("{what} must be true or false, found {}", other.kind()),
                );
                None
            }
        }
    }

    /// A `[kind.NAME]` section: NAME and its table.
    fn named<'n>(&mut self, node: &'n Node, kind: &str, example: &str) -> Vec<(&'n str, &'n Node)> {
        match &node.value {
            Value::Table(entries) => entries.iter().map(|(k, n)| (k.as_str(), n)).collect(),
            _ => {
                self.err(
                    node.line,
                    format!("{kind} must be sections like [{kind}.{example}]"),
                );
                Vec::new()
            }
        }
    }

    fn document(&mut self, doc: &Node) {
        let Some(entries) = self.table(doc, "the file") else {
            return;
        };
        for (section, node) in entries {
            match section.as_str() {
                "defaults" => self.defaults(node),
                "context" => {
                    for (name, n) in self.named(node, "context", "internal") {
                        self.context(name, n);
                    }
                }
                "group" => {
                    for (name, n) in self.named(node, "group", "sales") {
                        self.group(name, n);
                    }
                }
                "menu" => {
                    for (name, n) in self.named(node, "menu", "main") {
                        self.menu(name, n);
                    }
                }
                "timeset" => {
                    for (name, n) in self.named(node, "timeset", "office") {
                        self.timeset(name, n);
                    }
                }
                "conference" => {
                    for (name, n) in self.named(node, "conference", "8000") {
                        self.room(name, n);
                    }
                }
                other => self.err(
                    node.line,
                    format!(
                        "unknown section {other:?}, expected one of {}",
                        SECTIONS.join(", ")
                    ),
                ),
            }
        }
    }

    fn defaults(&mut self, node: &Node) {
        let Some(entries) = self.table(node, "[defaults]") else {
            return;
        };
        self.keys(entries, DEFAULTS_KEYS, "[defaults]");
        for (key, value) in entries {
            match key.as_str() {
                "context" | "timezone" => {
                    if let Some(s) = self.string(value, &format!("[defaults] {key}")) {
                        let loc = self.loc(value.line);
                        self.items.defaults.push((key.clone(), s.to_owned(), loc));
                    }
                }
                "dial_timeout" => {
                    if let Some(t) = self.int(value, "[defaults] dial_timeout", 1, 600) {
                        let loc = self.loc(value.line);
                        self.items.defaults.push((key.clone(), t.to_string(), loc));
                        self.items.dial_timeout = Some(t);
                    }
                }
                _ => {}
            }
        }
    }

    fn context(&mut self, name: &str, node: &Node) {
        let what = format!("context {name:?}");
        let Some(entries) = self.table(node, &what) else {
            return;
        };
        self.keys(entries, CONTEXT_KEYS, &what);
        let mut ctx = Context {
            name: name.to_owned(),
            includes: Vec::new(),
            routes: Vec::new(),
            loc: self.loc(node.line),
        };
        for (key, value) in entries {
            match key.as_str() {
                "include" => {
                    for (inc, line) in self
                        .strings(value, &format!("{what} include"))
                        .unwrap_or_default()
                    {
                        if inc == name {
                            self.err(line, format!("context {name:?} includes itself"));
                            continue;
                        }
                        self.reference(Kind::Context, &inc, line);
                        ctx.includes.push(inc);
                    }
                }
                "route" => match &value.value {
                    Value::Array(routes) => {
                        for r in routes {
                            if let Some(route) = self.route(name, r) {
                                ctx.routes.push(route);
                            }
                        }
                    }
                    _ => self.err(
                        value.line,
                        format!("routes are written [[context.{name}.route]] (a list of tables)"),
                    ),
                },
                _ => {}
            }
        }
        self.items.contexts.push(ctx);
    }

    fn route(&mut self, context: &str, node: &Node) -> Option<Route> {
        let what = format!("a route of context {context:?}");
        let entries = self.table(node, &what)?;
        self.keys(entries, ROUTE_KEYS, "a route");
        let get = |k: &str| entries.iter().find(|(key, _)| key == k).map(|(_, n)| n);
        let pattern = match (get("match"), get("regex")) {
            (Some(m), None) => {
                let text = self.string(m, "match")?;
                match Pattern::parse(text) {
                    Ok(p) => p,
                    Err(reason) => {
                        self.err(m.line, reason);
                        return None;
                    }
                }
            }
            (None, Some(r)) => {
                let text = self.string(r, "regex")?;
                match Pattern::regex(text) {
                    Ok(p) => p,
                    Err(reason) => {
                        self.err(r.line, reason);
                        return None;
                    }
                }
            }
            (Some(_), Some(r)) => {
                self.err(r.line, "a route has match or regex, not both");
                return None;
            }
            (None, None) => {
                self.err(
                    node.line,
                    "a route needs match = \"...\" (a number or a pattern like \"_1XXX\") or \
                     regex = \"...\"",
                );
                return None;
            }
        };
        let mut ok = true;
        let mut timeset = |me: &mut Self, key: &str| -> Option<String> {
            let n = get(key)?;
            let name = me.string(n, key).or_else(|| {
                ok = false;
                None
            })?;
            me.reference(Kind::Timeset, name, n.line);
            Some(name.to_owned())
        };
        let when = timeset(self, "when");
        let unless = timeset(self, "unless");
        let caller = match get("caller") {
            Some(n) => match self.string(n, "caller").map(Pattern::parse) {
                Some(Ok(p)) => Some(p),
                Some(Err(reason)) => {
                    self.err(n.line, format!("caller: {reason}"));
                    ok = false;
                    None
                }
                None => {
                    ok = false;
                    None
                }
            },
            None => None,
        };
        let groups = pattern.groups();
        let steps = match get("steps") {
            Some(n) => self.steps(n, groups, "steps"),
            None => {
                self.err(
                    node.line,
                    format!(
                        "the route for {:?} has no steps (steps = [ ... ])",
                        pattern.text()
                    ),
                );
                None
            }
        };
        let handlers = self.handlers(entries, groups);
        let line = get("match").or(get("regex")).map_or(node.line, |n| n.line);
        Some(Route {
            pattern,
            when,
            unless,
            caller,
            steps: steps.filter(|_| ok)?,
            handlers: handlers?,
            loc: self.loc(line),
        })
    }

    /// `on_busy`, `on_noanswer`, `on_unavailable` among `entries`.
    fn handlers(&mut self, entries: &[(String, Node)], groups: usize) -> Option<Handlers> {
        let mut out = Handlers::default();
        let mut ok = true;
        for (key, node) in entries {
            let slot = match key.as_str() {
                "on_busy" => &mut out.busy,
                "on_noanswer" => &mut out.noanswer,
                "on_unavailable" => &mut out.unavailable,
                _ => continue,
            };
            match self.steps(node, groups, key) {
                Some(steps) => *slot = Some(steps),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// A non-empty list of steps; nothing may follow a step that ends the plan.
    fn steps(&mut self, node: &Node, groups: usize, what: &str) -> Option<Vec<Step>> {
        let Value::Array(items) = &node.value else {
            self.err(
                node.line,
                format!(
                    "{what} must be a list of steps like [ {{ dial = \"${{EXTEN}}\" }} ], found {}",
                    node.value.kind()
                ),
            );
            return None;
        };
        if items.is_empty() {
            self.err(
                node.line,
                format!("{what} is empty: give at least one step"),
            );
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        let mut ended: Option<&'static str> = None;
        for item in items {
            if let Some(by) = ended {
                self.err(
                    item.line,
                    format!("this step never runs: the {by} before it ends the steps"),
                );
                ok = false;
                break;
            }
            match self.step(item, groups) {
                Some(step) => {
                    ended = match &step {
                        Step::Hangup(_) => Some("hangup"),
                        Step::Goto { .. } => Some("goto"),
                        Step::Menu(_) => Some("menu"),
                        _ => None,
                    };
                    out.push(step);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn template(&mut self, text: &str, line: usize, groups: usize) -> Option<Template> {
        match check_template(text, groups) {
            Ok(()) => Some(Template(text.to_owned())),
            Err(reason) => {
                self.err(line, reason);
                None
            }
        }
    }

    fn timeout(&mut self, entries: &[(String, Node)], key: &str) -> Result<Option<u32>, ()> {
        match entries.iter().find(|(k, _)| k == key) {
            Some((_, n)) => self.int(n, key, 1, 600).map(Some).ok_or(()),
            None => Ok(None),
        }
    }

    fn strategy(&mut self, entries: &[(String, Node)]) -> Option<Strategy> {
        let Some((_, n)) = entries.iter().find(|(k, _)| k == "strategy") else {
            return Some(Strategy::RingAll);
        };
        match self.string(n, "strategy")? {
            "ringall" => Some(Strategy::RingAll),
            "hunt" => Some(Strategy::Hunt),
            other => {
                self.err(
                    n.line,
                    format!(
                        "unknown strategy {other:?}: \"ringall\" (all at once) or \"hunt\" (in turn)"
                    ),
                );
                None
            }
        }
    }

    fn sounds(&mut self, node: &Node, what: &str, groups: usize) -> Option<Vec<Template>> {
        let names = self.strings(node, what)?;
        if names.is_empty() {
            self.err(node.line, format!("{what} names no sound"));
            return None;
        }
        let mut out = Vec::new();
        for (name, line) in names {
            if let Err(reason) = check_sound(&name) {
                self.err(line, reason);
                return None;
            }
            out.push(self.template(&name, line, groups)?);
        }
        Some(out)
    }

    fn step(&mut self, node: &Node, groups: usize) -> Option<Step> {
        let Value::Table(entries) = &node.value else {
            self.err(
                node.line,
                format!(
                    "a step is a table like {{ play = \"welcome\" }}, found {}",
                    node.value.kind()
                ),
            );
            return None;
        };
        let kinds: Vec<&(&str, &[&str])> = STEP_KINDS
            .iter()
            .filter(|(k, _)| entries.iter().any(|(key, _)| key == k))
            .collect();
        let actions: Vec<&str> = STEP_KINDS.iter().map(|(k, _)| *k).collect();
        let (kind, extra) = match kinds[..] {
            [one] => *one,
            [] => {
                self.err(
                    node.line,
                    format!("a step needs one of {}", actions.join(", ")),
                );
                return None;
            }
            [a, b, ..] => {
                self.err(
                    node.line,
                    format!(
                        "a step does one thing: found both {} and {}; write two steps",
                        a.0, b.0
                    ),
                );
                return None;
            }
        };
        let mut known = vec![kind];
        known.extend_from_slice(extra);
        self.keys(entries, &known, &format!("a {kind} step"));
        if entries.iter().any(|(k, _)| !known.contains(&k.as_str())) {
            return None;
        }
        let get = |k: &str| entries.iter().find(|(key, _)| key == k).map(|(_, n)| n);
        let value = get(kind)?;
        match kind {
            "dial" => {
                let targets = self.strings(value, "dial")?;
                if targets.is_empty() {
                    self.err(value.line, "dial names no number");
                    return None;
                }
                let mut out = Vec::new();
                for (t, line) in targets {
                    out.push(self.template(&t, line, groups)?);
                }
                let strategy = self.strategy(entries)?;
                let timeout = self.timeout(entries, "timeout").ok()?;
                let forwarding = match get("forwarding") {
                    Some(n) => self.boolean(n, "forwarding")?,
                    None => true,
                };
                Some(Step::Dial {
                    targets: out,
                    strategy,
                    timeout,
                    forwarding,
                    handlers: self.handlers(entries, groups)?,
                })
            }
            "group" => {
                let name = self.string(value, "group")?;
                self.reference(Kind::Group, name, value.line);
                Some(Step::Group {
                    name: name.to_owned(),
                    timeout: self.timeout(entries, "timeout").ok()?,
                    handlers: self.handlers(entries, groups)?,
                })
            }
            "play" => Some(Step::Play(self.sounds(value, "play", groups)?)),
            "menu" => {
                let name = self.string(value, "menu")?;
                self.reference(Kind::Menu, name, value.line);
                Some(Step::Menu(name.to_owned()))
            }
            "voicemail" => {
                let mailbox = self.string(value, "voicemail")?;
                let mailbox = self.template(mailbox, value.line, groups)?;
                let greeting = match get("greeting") {
                    None => Greeting::Unavailable,
                    Some(n) => match self.string(n, "greeting")? {
                        "unavailable" => Greeting::Unavailable,
                        "busy" => Greeting::Busy,
                        "none" => Greeting::None,
                        other => {
                            self.err(
                                n.line,
                                format!(
                                    "unknown greeting {other:?}: \"unavailable\", \"busy\" or \"none\""
                                ),
                            );
                            return None;
                        }
                    },
                };
                Some(Step::Voicemail { mailbox, greeting })
            }
            "voicemail_main" => {
                let mailbox = match &value.value {
                    Value::Bool(true) => Template("${CALLER}".to_owned()),
                    Value::Str(s) => self.template(s, value.line, groups)?,
                    _ => {
                        self.err(
                            value.line,
                            "voicemail_main = true (the caller's own mailbox) or a mailbox number",
                        );
                        return None;
                    }
                };
                Some(Step::VoicemailMain { mailbox })
            }
            "conference" => {
                let name = self.string(value, "conference")?;
                self.reference(Kind::Room, name, value.line);
                Some(Step::Conference(name.to_owned()))
            }
            "hangup" => {
                let cause = match &value.value {
                    Value::Int(code) if (400..=699).contains(code) => Cause::Status(*code as u16),
                    Value::Str(name) => match CAUSES.iter().find(|(n, _)| n == name) {
                        Some((_, c)) => *c,
                        None => {
                            self.err(value.line, bad_cause(&format!("{name:?}")));
                            return None;
                        }
                    },
                    Value::Int(code) => {
                        self.err(value.line, bad_cause(&code.to_string()));
                        return None;
                    }
                    Value::Bool(true) => Cause::Normal,
                    other => {
                        self.err(value.line, bad_cause(other.kind()));
                        return None;
                    }
                };
                Some(Step::Hangup(cause))
            }
            "goto" => {
                let context = self.string(value, "goto")?;
                self.reference(Kind::Context, context, value.line);
                let number = match get("number") {
                    Some(n) => {
                        let text = self.string(n, "number")?;
                        Some(self.template(text, n.line, groups)?)
                    }
                    None => None,
                };
                Some(Step::Goto {
                    context: context.to_owned(),
                    number,
                })
            }
            _ => None,
        }
    }

    fn group(&mut self, name: &str, node: &Node) {
        let what = format!("group {name:?}");
        let Some(entries) = self.table(node, &what) else {
            return;
        };
        self.keys(entries, GROUP_KEYS, &what);
        let Some((_, members)) = entries.iter().find(|(k, _)| k == "members") else {
            self.err(
                node.line,
                format!("{what} has no members (members = [\"1001\", \"1002\"])"),
            );
            return;
        };
        let Some(list) = self.strings(members, "members") else {
            return;
        };
        if list.is_empty() {
            self.err(members.line, format!("{what} has no members"));
            return;
        }
        let mut numbers = Vec::new();
        for (m, line) in list {
            match Pattern::parse(&m) {
                Ok(Pattern::Exact(n)) => numbers.push(n),
                _ => {
                    self.err(
                        line,
                        format!("{what}: member {m:?} is not an extension number"),
                    );
                    return;
                }
            }
        }
        let (Some(strategy), Ok(timeout)) =
            (self.strategy(entries), self.timeout(entries, "timeout"))
        else {
            return;
        };
        let loc = self.loc(node.line);
        self.items.groups.push(Group {
            name: name.to_owned(),
            members: numbers,
            strategy,
            timeout,
            loc,
        });
    }

    fn menu(&mut self, name: &str, node: &Node) {
        let what = format!("menu {name:?}");
        let Some(entries) = self.table(node, &what) else {
            return;
        };
        self.keys(entries, MENU_KEYS, &what);
        let get = |k: &str| entries.iter().find(|(key, _)| key == k).map(|(_, n)| n);
        let mut ok = true;
        let mut sounds = |me: &mut Self, key: &str| -> Vec<String> {
            match get(key).map(|n| me.sounds(n, key, 0)) {
                Some(Some(list)) => list.into_iter().map(|t| t.0).collect(),
                Some(None) => {
                    ok = false;
                    Vec::new()
                }
                None => Vec::new(),
            }
        };
        let prompt = sounds(self, "prompt");
        let invalid_prompt = sounds(self, "invalid_prompt");
        let timeout_prompt = sounds(self, "timeout_prompt");
        if get("prompt").is_none() {
            self.err(
                node.line,
                format!("{what} has no prompt (prompt = \"main-menu\", a sound name)"),
            );
            ok = false;
        }
        let mut int = |me: &mut Self, key: &str, default: u32, lo: i64, hi: i64| match get(key) {
            Some(n) => me.int(n, key, lo, hi).unwrap_or_else(|| {
                ok = false;
                default
            }),
            None => default,
        };
        let timeout = int(self, "timeout", 5, 1, 60);
        let digit_timeout = int(self, "digit_timeout", 3, 1, 30);
        let retries = int(self, "retries", 3, 1, 10);
        let direct_dial = match get("direct_dial") {
            Some(n) => match self.string(n, "direct_dial") {
                Some(ctx) => {
                    self.reference(Kind::Context, ctx, n.line);
                    Some(ctx.to_owned())
                }
                None => {
                    ok = false;
                    None
                }
            },
            None => None,
        };
        let mut options = Vec::new();
        if let Some(n) = get("options") {
            match &n.value {
                Value::Table(keys) => {
                    for (key, steps) in keys {
                        let single = key.len() == 1
                            && key
                                .chars()
                                .all(|c| c.is_ascii_digit() || c == '*' || c == '#');
                        if !single {
                            self.err(
                                steps.line,
                                format!(
                                    "{what}: option {key:?} is not a key: use one of 0-9, * or # \
                                     (numbers typed are for direct_dial)"
                                ),
                            );
                            ok = false;
                            continue;
                        }
                        match self.steps(steps, 0, &format!("option {key:?}")) {
                            Some(s) => options.push((key.clone(), s)),
                            None => ok = false,
                        }
                    }
                }
                other => {
                    self.err(
                        n.line,
                        format!(
                            "options must be a table of keys and steps, like \
                             options = {{ \"1\" = [ {{ group = \"sales\" }} ] }}, found {}",
                            other.kind()
                        ),
                    );
                    ok = false;
                }
            }
        }
        if options.is_empty() && direct_dial.is_none() && ok {
            self.err(
                node.line,
                format!("{what} offers nothing: give options, direct_dial, or both"),
            );
            ok = false;
        }
        let on_fail = match get("on_fail") {
            Some(n) => self.steps(n, 0, "on_fail").unwrap_or_else(|| {
                ok = false;
                Vec::new()
            }),
            None => vec![Step::Hangup(Cause::Normal)],
        };
        if !ok {
            return;
        }
        let loc = self.loc(node.line);
        self.items.menus.push(Menu {
            name: name.to_owned(),
            prompt,
            timeout,
            digit_timeout,
            retries,
            invalid_prompt,
            timeout_prompt,
            direct_dial,
            options,
            on_fail,
            loc,
        });
    }

    fn timeset(&mut self, name: &str, node: &Node) {
        let what = format!("timeset {name:?}");
        let Some(entries) = self.table(node, &what) else {
            return;
        };
        self.keys(entries, TIMESET_KEYS, &what);
        let mut set = TimeSet {
            zone: jiff::tz::TimeZone::UTC,
            zone_name: "UTC".to_owned(),
            weekdays: [true; 7],
            hours: Vec::new(),
            dates: Vec::new(),
            except: Vec::new(),
        };
        let mut zone = None;
        let mut ok = true;
        let mut says_something = false;
        for (key, value) in entries {
            match key.as_str() {
                "timezone" => match self.string(value, "timezone") {
                    Some(z) => zone = Some((z.to_owned(), value.line)),
                    None => ok = false,
                },
                "weekdays" => {
                    says_something = true;
                    let mut days = [false; 7];
                    for (d, line) in self.strings(value, "weekdays").unwrap_or_default() {
                        if let Err(reason) = time::add_weekdays(&mut days, &d) {
                            self.err(line, reason);
                            ok = false;
                        }
                    }
                    set.weekdays = days;
                }
                "hours" => {
                    says_something = true;
                    for (h, line) in self.strings(value, "hours").unwrap_or_default() {
                        match time::hours(&h) {
                            Ok(r) => set.hours.push(r),
                            Err(reason) => {
                                self.err(line, reason);
                                ok = false;
                            }
                        }
                    }
                }
                "dates" | "except" => {
                    says_something = true;
                    for (d, line) in self.strings(value, key).unwrap_or_default() {
                        match time::date_range(&d) {
                            Ok(r) if key == "dates" => set.dates.push(r),
                            Ok(r) => set.except.push(r),
                            Err(reason) => {
                                self.err(line, reason);
                                ok = false;
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        if !says_something {
            self.err(
                node.line,
                format!("{what} says nothing: give weekdays, hours, dates or except"),
            );
            return;
        }
        if ok {
            let loc = self.loc(node.line);
            self.items
                .timesets
                .push((name.to_owned(), RawTimeset { zone, set, loc }));
        }
    }

    fn room(&mut self, name: &str, node: &Node) {
        let what = format!("conference {name:?}");
        let Some(entries) = self.table(node, &what) else {
            return;
        };
        self.keys(entries, ROOM_KEYS, &what);
        let mut room = Room {
            name: name.to_owned(),
            pin: None,
            moderator_pin: None,
            announce: true,
        };
        let mut pin_line = node.line;
        for (key, value) in entries {
            match key.as_str() {
                "pin" | "moderator_pin" => {
                    let Some(pin) = self.string(value, key) else {
                        return;
                    };
                    if pin.is_empty() || pin.len() > 16 || !pin.bytes().all(|b| b.is_ascii_digit())
                    {
                        self.err(
                            value.line,
                            format!("{key} {pin:?} must be 1 to 16 digits (callers type it)"),
                        );
                        return;
                    }
                    pin_line = value.line;
                    if key == "pin" {
                        room.pin = Some(pin.to_owned());
                    } else {
                        room.moderator_pin = Some(pin.to_owned());
                    }
                }
                "announce" => match self.boolean(value, "announce") {
                    Some(b) => room.announce = b,
                    None => return,
                },
                _ => {}
            }
        }
        if room.pin.is_some() && room.pin == room.moderator_pin {
            self.err(
                pin_line,
                format!("{what}: pin and moderator_pin are the same, so everyone would moderate"),
            );
            return;
        }
        let loc = self.loc(node.line);
        self.items.rooms.push((room, loc));
    }
}

fn bad_cause(what: &str) -> String {
    let names: Vec<&str> = CAUSES.iter().map(|(n, _)| *n).collect();
    format!(
        "bad hangup cause {what}: use a SIP status 400 to 699 or one of {}",
        names.join(", ")
    )
}
