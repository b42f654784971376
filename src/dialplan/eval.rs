//! The evaluator: a plan and a call's context in, the [`Action`]s to run out. Pure: the
//! instant is in the [`CallContext`], extension state comes from an [`Extensions`] lookup.
//!
//! What it settles now: which route matches (patterns, time sets in their zones, caller
//! conditions, includes), the variables, `goto` (followed, at most [`MAX_GOTO_HOPS`] on one
//! path), ring groups (expanded to dials), and each dialled extension's DND and
//! forwarding. When no target of a dial can ring (all DND, unregistered or unknown) the
//! dial's outcome is known already and its branch takes the dial's place.
//! What it leaves to the runtime: ringing and its outcome (a [`Dial`] carries the actions
//! for busy / no answer / unavailable), and menus (the runtime plays the prompt, collects
//! keys and asks [`Plan::menu_choice`]).

use std::collections::HashSet;
use std::time::Duration;

use jiff::Timestamp;

use super::{Cause, Greeting, Handlers, Loc, Plan, Room, Route, Step, Strategy, Template};

/// `goto`s followed on one path before giving up with 482 (Loop Detected).
pub const MAX_GOTO_HOPS: usize = 16;
/// `goto`s followed in one evaluation, all branches together.
const GOTO_BUDGET: usize = 64;
/// Forward-always hops followed from one dialled extension.
const MAX_FORWARD_HOPS: usize = 5;

/// The call being routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext<'a> {
    /// The context to look the number up in.
    pub context: &'a str,
    /// The number dialled (`${EXTEN}`).
    pub number: &'a str,
    /// The caller's number (`${CALLER}`).
    pub caller: &'a str,
    /// Now, for time sets.
    pub now: Timestamp,
}

/// What the PBX knows of one extension when routing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExtensionState {
    /// At least one phone is registered to it (else it is unavailable at once).
    pub registered: bool,
    /// Do not disturb: treated as busy.
    pub dnd: bool,
    /// Calls go to this extension instead (a number that is no extension is ignored
    /// until trunks exist).
    pub forward_always: Option<String>,
    /// Busy (or DND): calls go to this extension.
    pub forward_busy: Option<String>,
    /// Not answered in time, or not registered: calls go to this extension.
    pub forward_noanswer: Option<String>,
}

/// Tells the evaluator about extensions; `None` = no such extension.
pub trait Extensions {
    fn get(&self, number: &str) -> Option<ExtensionState>;
}

impl<F: Fn(&str) -> Option<ExtensionState>> Extensions for F {
    fn get(&self, number: &str) -> Option<ExtensionState> {
        self(number)
    }
}

/// The answer for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routing {
    /// Run these actions in order; when they run out, hang up.
    Route { at: Loc, actions: Vec<Action> },
    /// No route matches: the runtime answers 404.
    NoRoute,
}

/// One thing for the runtime to do. Steps as data: no closures, no I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ring targets; the answered call is bridged and the plan ends with it. An outcome
    /// with actions runs them instead of the rest; one without (`None`) goes on with the
    /// next action.
    Dial(Dial),
    /// Play these sounds (names under the sounds folder), answering first if needed.
    Play(Vec<String>),
    /// Run the menu: see [`Plan::menu`], [`Plan::menu_choice`], [`Plan::menu_failed`].
    Menu(String),
    /// Leave a message in `mailbox` after `greeting`.
    Voicemail { mailbox: String, greeting: Greeting },
    /// Listen to the messages of `mailbox` (after its PIN).
    VoicemailMain { mailbox: String },
    /// Join the room (asking its PINs first).
    Conference(Room),
    /// End the call.
    Hangup(Cause),
}

/// A dial, its targets already past DND and forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dial {
    pub targets: Vec<Target>,
    pub strategy: Strategy,
    /// Ring all: for the whole dial; hunt: for each target.
    pub timeout: Duration,
    /// Every target busy (or DND).
    pub on_busy: Option<Vec<Action>>,
    /// Rung, but nobody answered in time.
    pub on_noanswer: Option<Vec<Action>>,
    /// Nobody could be rung (no registration left, unreachable).
    pub on_unavailable: Option<Vec<Action>>,
}

/// An extension to ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub number: String,
    /// The extension dialled, when its forward-always sent the call here.
    pub forwarded_from: Option<String>,
}

/// What keys typed in a menu mean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MenuChoice {
    /// Run these (an option, or the route of a direct-dialled number).
    Actions(Vec<Action>),
    /// Nothing: play the invalid prompt and try again (or fail after the retries).
    Invalid,
}

/// Values of the variables in one route's steps.
struct Vars<'a> {
    exten: &'a str,
    caller: &'a str,
    groups: Vec<String>,
}

impl Vars<'_> {
    fn expand(&self, t: &Template) -> String {
        let mut out = String::new();
        let mut rest = t.0.as_str();
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            // Templates were checked at load: every ${ has its }.
            let end = after.find('}').unwrap_or(after.len());
            let name = &after[..end];
            let (base, offset) = match name.split_once(':') {
                Some((b, o)) => (b, o.parse::<usize>().unwrap_or(0)),
                None => (name, 0),
            };
            let value = match base {
                "EXTEN" => self.exten,
                "CALLER" => self.caller,
                n => n
                    .parse::<usize>()
                    .ok()
                    .and_then(|g| self.groups.get(g.wrapping_sub(1)))
                    .map_or("", String::as_str),
            };
            out.push_str(value.get(offset..).unwrap_or(""));
            rest = after.get(end + 1..).unwrap_or("");
        }
        out.push_str(rest);
        out
    }
}

/// What a dial comes to once DND and forwarding are known.
enum Dialled {
    Ring(Dial),
    /// Nobody can ring: this outcome's actions, or `None` to go on.
    Settled(Option<Vec<Action>>),
}

struct Eval<'p, E: Extensions + ?Sized> {
    plan: &'p Plan,
    ext: &'p E,
    caller: &'p str,
    now: Timestamp,
    /// `goto`s left for this evaluation (branches multiply paths; this bounds them all).
    budget: std::cell::Cell<usize>,
}

impl Plan {
    /// Routes a call: the first route of `call.context` (then of its includes) whose
    /// pattern, time set and caller condition hold, as actions.
    pub fn route<E: Extensions + ?Sized>(&self, call: &CallContext<'_>, ext: &E) -> Routing {
        let eval = Eval {
            plan: self,
            ext,
            caller: call.caller,
            now: call.now,
            budget: std::cell::Cell::new(GOTO_BUDGET),
        };
        match eval.find(call.context, call.number) {
            Some((route, groups)) => {
                let vars = Vars {
                    exten: call.number,
                    caller: call.caller,
                    groups,
                };
                Routing::Route {
                    at: route.loc.clone(),
                    actions: eval.steps(&route.steps, &route.handlers, &vars, 0),
                }
            }
            None => Routing::NoRoute,
        }
    }

    /// What `typed` means in menu `menu`: a single key with an option, else (when the menu
    /// has `direct_dial`) the route of the number in that context. `call.number` is the
    /// number that reached the menu (`${EXTEN}` in its options).
    pub fn menu_choice<E: Extensions + ?Sized>(
        &self,
        menu: &str,
        typed: &str,
        call: &CallContext<'_>,
        ext: &E,
    ) -> MenuChoice {
        let Some(m) = self.menus.get(menu) else {
            return MenuChoice::Invalid;
        };
        let eval = Eval {
            plan: self,
            ext,
            caller: call.caller,
            now: call.now,
            budget: std::cell::Cell::new(GOTO_BUDGET),
        };
        if let Some((_, steps)) = m.options.iter().find(|(k, _)| k == typed) {
            let vars = Vars {
                exten: call.number,
                caller: call.caller,
                groups: Vec::new(),
            };
            return MenuChoice::Actions(eval.steps(steps, &Handlers::default(), &vars, 0));
        }
        match &m.direct_dial {
            Some(context) if !typed.is_empty() => {
                let direct = CallContext {
                    context,
                    number: typed,
                    ..call.clone()
                };
                match self.route(&direct, ext) {
                    Routing::Route { actions, .. } => MenuChoice::Actions(actions),
                    Routing::NoRoute => MenuChoice::Invalid,
                }
            }
            _ => MenuChoice::Invalid,
        }
    }

    /// What happens when the caller used up a menu's retries (`on_fail`).
    pub fn menu_failed<E: Extensions + ?Sized>(
        &self,
        menu: &str,
        call: &CallContext<'_>,
        ext: &E,
    ) -> Vec<Action> {
        let Some(m) = self.menus.get(menu) else {
            return vec![Action::Hangup(Cause::Normal)];
        };
        let eval = Eval {
            plan: self,
            ext,
            caller: call.caller,
            now: call.now,
            budget: std::cell::Cell::new(GOTO_BUDGET),
        };
        let vars = Vars {
            exten: call.number,
            caller: call.caller,
            groups: Vec::new(),
        };
        eval.steps(&m.on_fail, &Handlers::default(), &vars, 0)
    }
}

impl<E: Extensions + ?Sized> Eval<'_, E> {
    /// The first matching route in `context`, then its includes (depth first, in order).
    fn find(&self, context: &str, number: &str) -> Option<(&Route, Vec<String>)> {
        let mut seen = HashSet::new();
        self.find_in(context, number, &mut seen)
    }

    fn find_in<'s>(
        &'s self,
        context: &str,
        number: &str,
        seen: &mut HashSet<String>,
    ) -> Option<(&'s Route, Vec<String>)> {
        if !seen.insert(context.to_owned()) {
            return None;
        }
        let ctx = self.plan.contexts.get(context)?;
        for route in &ctx.routes {
            let Some(groups) = route.pattern.matches(number) else {
                continue;
            };
            let in_set = |name: &Option<String>| {
                name.as_ref()
                    .and_then(|n| self.plan.timesets.get(n))
                    .map(|t| t.contains(self.now))
            };
            if in_set(&route.when) == Some(false) || in_set(&route.unless) == Some(true) {
                continue;
            }
            if let Some(caller) = &route.caller {
                if caller.matches(self.caller).is_none() {
                    continue;
                }
            }
            return Some((route, groups));
        }
        ctx.includes
            .iter()
            .find_map(|inc| self.find_in(inc, number, seen))
    }

    /// Actions for `steps`; `handlers` are the route's (none inside a branch, so a branch
    /// cannot re-enter itself).
    fn steps(&self, steps: &[Step], handlers: &Handlers, vars: &Vars, hops: usize) -> Vec<Action> {
        let mut out = Vec::new();
        for step in steps {
            match step {
                Step::Dial {
                    targets,
                    strategy,
                    timeout,
                    forwarding,
                    handlers: own,
                } => {
                    let numbers = targets.iter().map(|t| vars.expand(t)).collect();
                    let timeout = timeout.unwrap_or(self.plan.dial_timeout);
                    let hs = pick(own, handlers);
                    match self.dial(numbers, *strategy, timeout, *forwarding, &hs, vars, hops) {
                        Dialled::Ring(dial) => out.push(Action::Dial(dial)),
                        Dialled::Settled(Some(branch)) => {
                            out.extend(branch);
                            return out;
                        }
                        Dialled::Settled(None) => {}
                    }
                }
                Step::Group {
                    name,
                    timeout,
                    handlers: own,
                } => {
                    let Some(group) = self.plan.groups.get(name) else {
                        continue;
                    };
                    let timeout = timeout.or(group.timeout).unwrap_or(self.plan.dial_timeout);
                    let hs = pick(own, handlers);
                    let members = group.members.clone();
                    match self.dial(members, group.strategy, timeout, false, &hs, vars, hops) {
                        Dialled::Ring(dial) => out.push(Action::Dial(dial)),
                        Dialled::Settled(Some(branch)) => {
                            out.extend(branch);
                            return out;
                        }
                        Dialled::Settled(None) => {}
                    }
                }
                Step::Play(sounds) => out.push(Action::Play(
                    sounds.iter().map(|s| vars.expand(s)).collect(),
                )),
                Step::Menu(name) => {
                    out.push(Action::Menu(name.clone()));
                    return out;
                }
                Step::Voicemail { mailbox, greeting } => out.push(Action::Voicemail {
                    mailbox: vars.expand(mailbox),
                    greeting: *greeting,
                }),
                Step::VoicemailMain { mailbox } => out.push(Action::VoicemailMain {
                    mailbox: vars.expand(mailbox),
                }),
                Step::Conference(name) => {
                    if let Some(room) = self.plan.rooms.get(name) {
                        out.push(Action::Conference(room.clone()));
                    }
                }
                Step::Hangup(cause) => {
                    out.push(Action::Hangup(*cause));
                    return out;
                }
                Step::Goto { context, number } => {
                    out.extend(self.goto(context, number.as_ref(), vars, hops));
                    return out;
                }
            }
        }
        out
    }

    fn goto(
        &self,
        context: &str,
        number: Option<&Template>,
        vars: &Vars,
        hops: usize,
    ) -> Vec<Action> {
        if hops >= MAX_GOTO_HOPS || self.budget.get() == 0 {
            return vec![Action::Hangup(Cause::Status(482))];
        }
        self.budget.set(self.budget.get() - 1);
        let number = number.map_or_else(|| vars.exten.to_owned(), |t| vars.expand(t));
        match self.find(context, &number) {
            Some((route, groups)) => {
                let inner = Vars {
                    exten: &number,
                    caller: vars.caller,
                    groups,
                };
                self.steps(&route.steps, &route.handlers, &inner, hops + 1)
            }
            None => vec![Action::Hangup(Cause::Status(404))],
        }
    }

    /// A dial after DND and forwarding. `forwarding` follows the extensions' own settings
    /// (DND is always followed); busy / no-answer forwarding needs a single target.
    #[allow(clippy::too_many_arguments)]
    fn dial(
        &self,
        numbers: Vec<String>,
        strategy: Strategy,
        timeout: u32,
        forwarding: bool,
        handlers: &Handlers,
        vars: &Vars,
        hops: usize,
    ) -> Dialled {
        let mut targets: Vec<Target> = Vec::new();
        let (mut busy, mut unavailable, mut unknown) = (0, 0, 0);
        let single = numbers.len() == 1;
        let mut personal: Option<ExtensionState> = None;
        for number in &numbers {
            let Some(mut state) = self.ext.get(number) else {
                unknown += 1;
                continue;
            };
            if single {
                personal = Some(state.clone());
            }
            let mut at = number.clone();
            let mut seen = vec![number.clone()];
            if forwarding {
                while let Some(next) = state.forward_always.clone() {
                    if seen.contains(&next) || seen.len() > MAX_FORWARD_HOPS {
                        break;
                    }
                    seen.push(next.clone());
                    match self.ext.get(&next) {
                        Some(s) => {
                            state = s;
                            at = next;
                        }
                        None => break,
                    }
                }
            }
            if state.dnd {
                busy += 1;
            } else if !state.registered {
                unavailable += 1;
            } else if !targets.iter().any(|t| t.number == at) {
                targets.push(Target {
                    forwarded_from: (at != *number).then(|| number.clone()),
                    number: at,
                });
            }
        }

        // Outcome actions: the extension's busy / no-answer forwarding first (one target,
        // forwarding on), else the plan's handlers.
        let forward_to = |pick: fn(&ExtensionState) -> &Option<String>| {
            personal
                .as_ref()
                .filter(|_| forwarding)
                .and_then(|s| pick(s).clone())
                .filter(|to| !numbers.contains(to))
                // Only to extensions until trunks exist: else the plan's outcome applies.
                .filter(|to| self.ext.get(to).is_some())
        };
        let branch = |to: Option<String>, steps: &Option<Vec<Step>>| -> Option<Vec<Action>> {
            match to {
                Some(to) => Some(
                    match self.dial(
                        vec![to],
                        Strategy::RingAll,
                        timeout,
                        false,
                        handlers,
                        vars,
                        hops,
                    ) {
                        Dialled::Ring(d) => vec![Action::Dial(d)],
                        Dialled::Settled(Some(actions)) => actions,
                        Dialled::Settled(None) => return None,
                    },
                ),
                None => steps
                    .as_ref()
                    .map(|s| self.steps(s, &Handlers::default(), vars, hops)),
            }
        };
        let on_busy = || branch(forward_to(|s| &s.forward_busy), &handlers.busy);
        let on_noanswer = || branch(forward_to(|s| &s.forward_noanswer), &handlers.noanswer);
        let on_unavailable = || branch(forward_to(|s| &s.forward_noanswer), &handlers.unavailable);

        if targets.is_empty() {
            return Dialled::Settled(if busy > 0 {
                on_busy()
            } else if unavailable > 0 {
                on_unavailable()
            } else {
                // Nobody of that number exists.
                let _ = unknown;
                Some(vec![Action::Hangup(Cause::Status(404))])
            });
        }
        Dialled::Ring(Dial {
            targets,
            strategy,
            timeout: Duration::from_secs(timeout.into()),
            on_busy: on_busy(),
            on_noanswer: on_noanswer(),
            on_unavailable: on_unavailable(),
        })
    }
}

/// The step's own handler for each outcome, else the route's.
fn pick(own: &Handlers, route: &Handlers) -> Handlers {
    Handlers {
        busy: own.busy.clone().or_else(|| route.busy.clone()),
        noanswer: own.noanswer.clone().or_else(|| route.noanswer.clone()),
        unavailable: own
            .unavailable
            .clone()
            .or_else(|| route.unavailable.clone()),
    }
}
