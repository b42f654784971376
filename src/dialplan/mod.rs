//! The dialplan language: `dialplans/*.toml` parsed into a typed [`Plan`] at load, and
//! evaluated, per call, into [`Action`]s a runtime executes step by step.
//!
//! Owns: the model (contexts, routes, patterns, steps, ring groups, menus, time sets,
//! conference rooms), the loader with its `FILE:LINE: reason` errors, and the evaluator.
//! Must not: do I/O beyond reading the folder's files at load ([`Plan::load_dir`]; the
//! time zone rules come from the system's database then too). Evaluating is a pure
//! function of the plan and a [`CallContext`] (the instant is passed in) and of what an
//! [`Extensions`] lookup says about extensions (registered, DND, forwarding).
//!
//! The language is documented for admins in `dialplans/README.md`; DESIGN.md's
//! "Dialplan" section says how the runtime is meant to run the result.

mod error;
mod eval;
mod parse;
mod pattern;
mod time;
mod tree;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

pub use error::DialplanError;
pub use eval::{
    Action, CallContext, Dial, ExtensionState, Extensions, MenuChoice, Routing, Target,
    MAX_GOTO_HOPS,
};
pub use pattern::Pattern;
pub use time::{DateRange, Day, TimeSet};

/// Where something was written: `file:line`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    pub file: Arc<str>,
    pub line: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A whole dialplan: every file of the folder merged, every reference checked.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub(crate) start: Option<String>,
    pub(crate) dial_timeout: u32,
    pub(crate) contexts: BTreeMap<String, Context>,
    pub(crate) groups: BTreeMap<String, Group>,
    pub(crate) menus: BTreeMap<String, Menu>,
    pub(crate) timesets: BTreeMap<String, TimeSet>,
    pub(crate) rooms: BTreeMap<String, Room>,
}

/// `[context.NAME]`: routes tried in order, then the included contexts' routes.
#[derive(Debug, Clone)]
pub struct Context {
    pub name: String,
    pub includes: Vec<String>,
    pub routes: Vec<Route>,
    pub loc: Loc,
}

/// `[[context.NAME.route]]`: a pattern, conditions, steps.
#[derive(Debug, Clone)]
pub struct Route {
    pub pattern: Pattern,
    /// A time set that must hold.
    pub when: Option<String>,
    /// A time set that must not hold.
    pub unless: Option<String>,
    /// A pattern the caller's number must match.
    pub caller: Option<Pattern>,
    pub steps: Vec<Step>,
    /// What the route's dials do on each outcome, unless a dial says otherwise.
    pub handlers: Handlers,
    pub loc: Loc,
}

/// Steps for the outcomes of a dial; `None`: go on with the next step.
#[derive(Debug, Clone, Default)]
pub struct Handlers {
    pub busy: Option<Vec<Step>>,
    pub noanswer: Option<Vec<Step>>,
    pub unavailable: Option<Vec<Step>>,
}

/// Text with `${EXTEN}`, `${EXTEN:N}`, `${CALLER}` or `${1}`... in it (checked at load).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(pub String);

/// How several targets ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// All at once; the first to answer gets the call. `timeout` is for the whole dial.
    RingAll,
    /// One after the other, in order; `timeout` is for each.
    Hunt,
}

/// Which voicemail greeting a caller hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Greeting {
    Unavailable,
    Busy,
    /// Straight to the beep.
    None,
}

/// How a call is ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// An answered call is hung up (BYE); an unanswered one gets 480.
    Normal,
    /// An unanswered call is refused with this SIP status (400-699).
    Status(u16),
}

/// One step as written (variables not yet substituted).
#[derive(Debug, Clone)]
pub enum Step {
    Dial {
        targets: Vec<Template>,
        strategy: Strategy,
        timeout: Option<u32>,
        /// Follow the extensions' own forwarding (default true).
        forwarding: bool,
        handlers: Handlers,
    },
    Group {
        name: String,
        timeout: Option<u32>,
        handlers: Handlers,
    },
    Play(Vec<Template>),
    Menu(String),
    Voicemail {
        mailbox: Template,
        greeting: Greeting,
    },
    VoicemailMain {
        mailbox: Template,
    },
    Conference(String),
    Hangup(Cause),
    Goto {
        context: String,
        number: Option<Template>,
    },
}

/// `[group.NAME]`: extensions rung together or in turn.
#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub members: Vec<String>,
    pub strategy: Strategy,
    pub timeout: Option<u32>,
    pub loc: Loc,
}

/// `[menu.NAME]`: an IVR menu. The runtime plays `prompt`, collects keys, and asks
/// [`Plan::menu_choice`] what they mean.
#[derive(Debug, Clone)]
pub struct Menu {
    pub name: String,
    /// Sound names, played in order.
    pub prompt: Vec<String>,
    /// Seconds to wait for the first key after the prompt.
    pub timeout: u32,
    /// Seconds to wait for each next key of a direct-dialled number.
    pub digit_timeout: u32,
    /// How many times the caller may get it wrong (or say nothing) before `on_fail`.
    pub retries: u32,
    /// Played on a key or number that means nothing (then the prompt again).
    pub invalid_prompt: Vec<String>,
    /// Played when the caller pressed nothing (then the prompt again).
    pub timeout_prompt: Vec<String>,
    /// Numbers typed in the menu are routed in this context.
    pub direct_dial: Option<String>,
    /// A key (`0`-`9`, `*`, `#`) and its steps, in the order written.
    pub options: Vec<(String, Vec<Step>)>,
    /// What happens after `retries` failures (default: hang up).
    pub on_fail: Vec<Step>,
    pub loc: Loc,
}

/// `[conference.NAME]`: a conference room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    pub name: String,
    /// Asked of every caller when set.
    pub pin: Option<String>,
    /// Makes the caller the room's moderator (who may mute everyone else).
    pub moderator_pin: Option<String>,
    /// Everyone hears a member join or leave.
    pub announce: bool,
}

impl Plan {
    /// Reads every `*.toml` in `dir` (in name order) and builds the plan. A missing folder
    /// is an empty plan (no routes: every call gets [`Routing::NoRoute`]).
    pub fn load_dir(dir: &Path) -> Result<Plan, DialplanError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Plan::default()),
            Err(source) => {
                return Err(DialplanError::Io {
                    path: dir.to_path_buf(),
                    reason: "cannot read the dialplans folder",
                    source,
                })
            }
        };
        let mut paths = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| DialplanError::Io {
                path: dir.to_path_buf(),
                reason: "cannot read the dialplans folder",
                source,
            })?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        let mut files = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|source| DialplanError::Io {
                path: path.clone(),
                reason: "cannot read dialplan file",
                source,
            })?;
            files.push((path.display().to_string(), text));
        }
        Plan::from_files(&files)
    }

    /// Builds a plan from `(file name, text)` pairs; names are used in messages only.
    pub fn from_files(files: &[(String, String)]) -> Result<Plan, DialplanError> {
        parse::build(files)
    }

    /// Builds a plan from one text.
    pub fn from_str(file: &str, text: &str) -> Result<Plan, DialplanError> {
        parse::build(&[(file.to_owned(), text.to_owned())])
    }

    /// The context calls from the PBX's own phones start in (`[defaults] context`).
    pub fn start_context(&self) -> Option<&str> {
        self.start.as_deref()
    }

    pub fn context(&self, name: &str) -> Option<&Context> {
        self.contexts.get(name)
    }

    pub fn contexts(&self) -> impl Iterator<Item = &Context> {
        self.contexts.values()
    }

    pub fn menu(&self, name: &str) -> Option<&Menu> {
        self.menus.get(name)
    }

    pub fn room(&self, name: &str) -> Option<&Room> {
        self.rooms.get(name)
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.get(name)
    }

    pub fn timeset(&self, name: &str) -> Option<&TimeSet> {
        self.timesets.get(name)
    }

    /// How many routes all contexts hold.
    pub fn route_count(&self) -> usize {
        self.contexts.values().map(|c| c.routes.len()).sum()
    }
}
