//! The dialplan's runtime: runs a call's [`Action`]s, in order, on its [`Channel`].
//!
//! Owns: what each step means on a live call (answer before a prompt, a menu's prompt /
//! keys / retries, a conference room's PINs, how a call ends) and when a dial must leave
//! the channel: a caller not answered yet is dialled by the B2BUA (the relay's fast path,
//! early media, re-INVITEs passed between the phones), so [`run`] returns
//! [`PlanEnd::Dial`] and the node hands the caller's leg over; the B2BUA hands it back
//! with the dial's [`Outcome`] when nobody answered, and [`AfterDial::steps`] says what
//! runs then. Must not: route (the plan's evaluator does, [`Plan::route`],
//! [`Plan::menu_choice`]), or reach under the channel.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::apps::voicemail::{self, VoicemailAppError};
use crate::call::channel::{
    BridgeEnd, BridgeOptions, BridgeRequest, Channel, ChannelError, CollectOptions,
    ConferenceOptions, PlayOptions, Sound,
};
use crate::call::{AppFn, Fallback, SipChannel};
use crate::dialplan::{
    Action, CallContext, Cause, Dial, Extensions, MenuChoice, Plan, Room, Strategy,
};
use crate::media::dtmf::Digit;
use crate::voicemail::Voicemail;

/// What the runtime needs besides the channel: the plan the call started with (a reload
/// does not change a call in progress) and what is known about extensions.
#[derive(Clone)]
pub struct PlanEnv {
    pub plan: Arc<Plan>,
    pub extensions: Arc<dyn Extensions + Send + Sync>,
    /// The mailboxes; `None` (unit tests of other steps) makes voicemail steps say the
    /// service is not available.
    pub voicemail: Option<Voicemail>,
}

/// The call as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanCall {
    /// The context the call was routed in (menus route direct-dialled numbers elsewhere).
    pub context: String,
    /// The number dialled.
    pub number: String,
    /// The caller's number.
    pub caller: String,
}

/// How a dial that nobody answered ended.
pub use crate::call::DialOutcome as Outcome;

/// What runs after a dial, by its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AfterDial {
    pub busy: Vec<Action>,
    pub noanswer: Vec<Action>,
    pub unavailable: Vec<Action>,
}

impl AfterDial {
    /// The dial's own outcome steps, else `rest` (the steps after the dial).
    fn new(dial: &Dial, rest: Vec<Action>) -> AfterDial {
        let pick = |o: &Option<Vec<Action>>| o.clone().unwrap_or_else(|| rest.clone());
        AfterDial {
            busy: pick(&dial.on_busy),
            noanswer: pick(&dial.on_noanswer),
            unavailable: pick(&dial.on_unavailable),
        }
    }

    pub fn steps(&self, outcome: Outcome) -> Vec<Action> {
        match outcome {
            Outcome::Busy => self.busy.clone(),
            Outcome::NoAnswer => self.noanswer.clone(),
            Outcome::Unavailable => self.unavailable.clone(),
        }
    }
}

/// How [`run`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanEnd {
    /// The steps ran out (the call was hung up) or the caller hung up.
    Done,
    /// Ring for the caller, who is not answered yet (the B2BUA does). An answered call
    /// ends the plan.
    Dial(DialStep),
}

/// One dial as the runtime carries it out: ring `numbers` (all at once, for `timeout`);
/// `then` says what runs if nobody answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialStep {
    pub numbers: Vec<String>,
    pub timeout: Duration,
    pub then: AfterDial,
}

/// The dialplan's app for a call: runs `actions`; a dial of the caller not answered yet
/// hands the caller to the B2BUA, with the rest of the plan as its fallback.
pub fn app(env: PlanEnv, call: PlanCall, actions: Vec<Action>) -> AppFn {
    crate::call::app(move |mut ch: SipChannel| {
        let (env, call, actions) = (env.clone(), call.clone(), actions.clone());
        async move {
            match run(&mut ch, &env, &call, actions).await {
                Ok(PlanEnd::Dial(DialStep {
                    numbers,
                    timeout,
                    then,
                })) => {
                    let fallback = fallback(env, call, then);
                    if let Err(e) = ch.dial(numbers, timeout, fallback).await {
                        debug!(error = %e, "dial not started");
                    }
                }
                Ok(PlanEnd::Done) => {}
                Err(e) => debug!(error = %e, "plan ended"),
            }
        }
    })
}

/// What takes the caller back after a dial nobody answered: the dialplan's app on the
/// outcome's steps. Outcomes with no steps left are not taken: the caller gets the
/// dial's own failure (486 busy, 480), which says more than a hang-up would.
pub fn fallback(env: PlanEnv, call: PlanCall, then: AfterDial) -> Fallback {
    let outcomes = [Outcome::Busy, Outcome::NoAnswer, Outcome::Unavailable]
        .into_iter()
        .filter(|o| !then.steps(*o).is_empty())
        .collect();
    Fallback {
        outcomes,
        app: Box::new(move |outcome| app(env, call, then.steps(outcome))),
    }
}

/// The first thing to do for `actions` on a caller not answered yet: a leading dial goes
/// straight to the B2BUA (no app task at all for a plain call between extensions).
pub fn leading_dial(actions: &[Action]) -> Option<DialStep> {
    match actions.split_first() {
        Some((Action::Dial(d), rest)) => Some(dial_step(d, rest.to_vec())),
        _ => None,
    }
}

/// A hunt rings its targets one at a time: the first now, and whatever outcome it has,
/// the hunt goes on with the others (the last one's outcome picks the dial's handlers).
fn dial_step(d: &Dial, rest: Vec<Action>) -> DialStep {
    let numbers: Vec<String> = d.targets.iter().map(|t| t.number.clone()).collect();
    if d.strategy == Strategy::Hunt && numbers.len() > 1 {
        let mut others = d.clone();
        others.targets.remove(0);
        let next: Vec<Action> = std::iter::once(Action::Dial(others)).chain(rest).collect();
        return DialStep {
            numbers: numbers[..1].to_vec(),
            timeout: d.timeout,
            then: AfterDial {
                busy: next.clone(),
                noanswer: next.clone(),
                unavailable: next,
            },
        };
    }
    DialStep {
        numbers,
        timeout: d.timeout,
        then: AfterDial::new(d, rest),
    }
}

/// Runs `actions` on the call. Returns when they run out (the call is then hung up), the
/// caller hangs up, or a dial needs the B2BUA.
pub async fn run<C: Channel>(
    ch: &mut C,
    env: &PlanEnv,
    call: &PlanCall,
    actions: Vec<Action>,
) -> Result<PlanEnd, ChannelError> {
    let mut answered = false;
    let mut steps: VecDeque<Action> = actions.into();
    while let Some(step) = steps.pop_front() {
        debug!(?step, "step");
        match step {
            Action::Dial(d) => {
                let dial = dial_step(&d, steps.into());
                if !answered {
                    return Ok(PlanEnd::Dial(dial));
                }
                let DialStep {
                    numbers,
                    timeout,
                    then,
                } = dial;
                // Answered already (a menu's choice): the channel rings and bridges.
                let end = ch
                    .bridge(
                        BridgeRequest { numbers },
                        BridgeOptions {
                            ring_timeout: timeout,
                            ringback: true,
                        },
                    )
                    .await?;
                let outcome = match end {
                    BridgeEnd::Answered { .. } => {
                        // The plan ends with the bridged call.
                        let _ = ch.hangup().await;
                        return Ok(PlanEnd::Done);
                    }
                    BridgeEnd::Busy => Outcome::Busy,
                    BridgeEnd::NoAnswer => Outcome::NoAnswer,
                    BridgeEnd::Unavailable => Outcome::Unavailable,
                };
                info!(?outcome, "bridge not answered");
                steps = then.steps(outcome).into();
            }
            Action::Play(names) => {
                answer(ch, &mut answered).await?;
                ch.play(&sounds(&names), PlayOptions::default()).await?;
            }
            Action::Menu(name) => {
                answer(ch, &mut answered).await?;
                steps = menu(ch, env, call, &name).await?.into();
            }
            Action::Conference(room) => {
                answer(ch, &mut answered).await?;
                conference(ch, &room).await?;
            }
            Action::Voicemail { mailbox, greeting } => {
                let Some(vm) = &env.voicemail else {
                    answer(ch, &mut answered).await?;
                    ch.play(&[Sound::file("not-available")], PlayOptions::default())
                        .await?;
                    continue;
                };
                answered = true;
                match voicemail::leave_message(ch, vm, &mailbox, greeting).await {
                    Ok(left) => info!(mailbox = %mailbox, ?left, "voicemail left"),
                    Err(VoicemailAppError::Channel(e)) => return Err(e),
                    Err(e) => {
                        warn!(mailbox = %mailbox, error = %e, "voicemail failed");
                        ch.play(&[Sound::file("not-available")], PlayOptions::default())
                            .await?;
                    }
                }
            }
            Action::VoicemailMain { mailbox } => {
                answer(ch, &mut answered).await?;
                let Some(vm) = &env.voicemail else {
                    ch.play(&[Sound::file("not-available")], PlayOptions::default())
                        .await?;
                    continue;
                };
                let mailbox = Some(mailbox.as_str()).filter(|m| !m.is_empty());
                match voicemail::voicemail_main(ch, vm, mailbox, &call.caller).await {
                    Ok(()) => {}
                    Err(VoicemailAppError::Channel(e)) => return Err(e),
                    Err(e) => {
                        warn!(error = %e, "voicemail failed");
                        ch.play(&[Sound::file("not-available")], PlayOptions::default())
                            .await?;
                    }
                }
            }
            Action::Hangup(cause) => {
                match (cause, answered) {
                    (Cause::Status(status), false) => ch.refuse(status).await?,
                    _ => ch.hangup().await?,
                }
                return Ok(PlanEnd::Done);
            }
        }
    }
    ch.hangup().await?;
    Ok(PlanEnd::Done)
}

async fn answer<C: Channel>(ch: &mut C, answered: &mut bool) -> Result<(), ChannelError> {
    if !*answered {
        ch.answer().await?;
        *answered = true;
    }
    Ok(())
}

fn sounds(names: &[String]) -> Vec<Sound> {
    names.iter().map(Sound::file).collect()
}

/// Keys a menu accepts for a direct-dialled number (longer than any extension).
const DIRECT_DIAL_DIGITS: usize = 12;

/// Runs menu `name` until the caller picks something (its steps are returned) or uses up
/// the retries (`on_fail`'s steps).
async fn menu<C: Channel>(
    ch: &mut C,
    env: &PlanEnv,
    call: &PlanCall,
    name: &str,
) -> Result<Vec<Action>, ChannelError> {
    let ctx = |now| CallContext {
        context: &call.context,
        number: &call.number,
        caller: &call.caller,
        now,
    };
    let Some(m) = env.plan.menu(name) else {
        return Ok(vec![Action::Hangup(Cause::Normal)]);
    };
    let hash_is_option = m.options.iter().any(|(k, _)| k == "#");
    let opts = CollectOptions {
        max_digits: if m.direct_dial.is_some() {
            DIRECT_DIAL_DIGITS
        } else {
            1
        },
        first_timeout: Duration::from_secs(u64::from(m.timeout)),
        inter_digit_timeout: Duration::from_secs(u64::from(m.digit_timeout)),
        terminators: if hash_is_option || m.direct_dial.is_none() {
            Vec::new()
        } else {
            vec![Digit::Hash]
        },
    };
    let mut failures = 0;
    loop {
        // Keys typed during the prompt count (a caller who knows the menu need not wait).
        ch.play(
            &sounds(&m.prompt),
            PlayOptions {
                barge_in: true,
                looping: false,
            },
        )
        .await?;
        let got = ch.collect_digits(opts.clone()).await?;
        let retry_prompt = if got.digits.is_empty() {
            info!(menu = name, "menu: no key");
            &m.timeout_prompt
        } else {
            let now = jiff::Timestamp::now();
            match env
                .plan
                .menu_choice(name, &got.digits, &ctx(now), env.extensions.as_ref())
            {
                MenuChoice::Actions(actions) => {
                    info!(menu = name, keys = %got.digits, "menu: chosen");
                    return Ok(actions);
                }
                MenuChoice::Invalid => {
                    info!(menu = name, keys = %got.digits, "menu: invalid");
                    &m.invalid_prompt
                }
            }
        };
        failures += 1;
        if failures >= m.retries.max(1) {
            break;
        }
        ch.flush_digits();
        ch.play(&sounds(retry_prompt), PlayOptions::default())
            .await?;
    }
    info!(menu = name, "menu: retries used up");
    let now = jiff::Timestamp::now();
    Ok(env
        .plan
        .menu_failed(name, &ctx(now), env.extensions.as_ref()))
}

/// PIN tries before a caller is turned away from a room.
const PIN_TRIES: u32 = 3;

/// Asks the room's PIN (or its moderator PIN), then puts the caller in the room until
/// they hang up.
async fn conference<C: Channel>(ch: &mut C, room: &Room) -> Result<(), ChannelError> {
    let mut moderator = false;
    if room.pin.is_some() || room.moderator_pin.is_some() {
        let mut admitted = false;
        for _ in 0..PIN_TRIES {
            ch.play(
                &[Sound::file("conf/enter-pin")],
                PlayOptions {
                    barge_in: true,
                    looping: false,
                },
            )
            .await?;
            let got = ch
                .collect_digits(CollectOptions {
                    max_digits: 16,
                    first_timeout: Duration::from_secs(10),
                    inter_digit_timeout: Duration::from_secs(4),
                    terminators: vec![Digit::Hash],
                })
                .await?;
            if room.moderator_pin.as_deref() == Some(got.digits.as_str()) {
                moderator = true;
                admitted = true;
                break;
            }
            if room.pin.as_deref() == Some(got.digits.as_str())
                || (room.pin.is_none() && got.digits.is_empty())
            {
                admitted = true;
                break;
            }
            ch.flush_digits();
            ch.play(&[Sound::file("conf/wrong-pin")], PlayOptions::default())
                .await?;
        }
        if !admitted {
            info!(room = %room.name, "conference: wrong PIN");
            ch.play(&[Sound::file("goodbye")], PlayOptions::default())
                .await?;
            return Ok(());
        }
    }
    info!(room = %room.name, moderator, "conference: joining");
    if room.announce {
        ch.play(&[Sound::file("conf/joined")], PlayOptions::default())
            .await?;
    }
    // A leave key would end the plan's step; the room is left by hanging up.
    ch.join_conference(
        &room.name,
        ConferenceOptions {
            moderator,
            announce: room.announce,
            ..ConferenceOptions::default()
        },
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::fake::{Caller, FakeChannel, Op};
    use crate::dialplan::{ExtensionState, Target};

    fn env(plan_text: &str) -> PlanEnv {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("p.toml"), plan_text).expect("write");
        let plan = Plan::load_dir(dir.path()).expect("plan");
        let ext = |n: &str| {
            n.starts_with('1').then(|| ExtensionState {
                registered: true,
                ..ExtensionState::default()
            })
        };
        PlanEnv {
            plan: Arc::new(plan),
            extensions: Arc::new(ext),
            voicemail: None,
        }
    }

    fn call(number: &str) -> PlanCall {
        PlanCall {
            context: "internal".into(),
            number: number.into(),
            caller: "1000".into(),
        }
    }

    fn route(env: &PlanEnv, number: &str) -> Vec<Action> {
        let c = call(number);
        let ctx = CallContext {
            context: &c.context,
            number: &c.number,
            caller: &c.caller,
            now: jiff::Timestamp::now(),
        };
        match env.plan.route(&ctx, env.extensions.as_ref()) {
            crate::dialplan::Routing::Route { actions, .. } => actions,
            r => panic!("no route: {r:?}"),
        }
    }

    const PLAN: &str = r#"
[defaults]
context = "internal"

[context.internal]
[[context.internal.route]]
match = "_1XXX"
steps = [{ dial = "${EXTEN}", timeout = 15 }]
on_busy = [{ play = "busy" }]

[[context.internal.route]]
match = "0"
steps = [{ menu = "main" }]

[[context.internal.route]]
match = "2000"
steps = [{ group = "sales" }, { play = "closed" }]

[[context.internal.route]]
match = "8000"
steps = [{ conference = "8000" }]

[[context.internal.route]]
match = "9"
steps = [{ hangup = 486 }]

[group.sales]
members = ["1001", "1002", "1003"]
strategy = "hunt"
timeout = 10

[menu.main]
prompt = ["welcome", "main-menu"]
timeout = 5
retries = 2
invalid_prompt = "invalid"
timeout_prompt = "timeout"
direct_dial = "internal"
on_fail = [{ play = "goodbye" }]

[menu.main.options]
"1" = [{ play = "closed" }]
"8" = [{ conference = "8000" }]

[conference.8000]
pin = "1234"
moderator_pin = "4321"
announce = true
"#;

    #[tokio::test]
    async fn a_leading_dial_goes_to_the_b2bua_with_its_outcomes() {
        let env = env(PLAN);
        let actions = route(&env, "1001");
        let Some(DialStep {
            numbers,
            timeout,
            then,
        }) = leading_dial(&actions)
        else {
            panic!("not a dial: {actions:?}");
        };
        assert_eq!(numbers, ["1001"]);
        assert_eq!(timeout, Duration::from_secs(15));
        assert_eq!(then.busy, vec![Action::Play(vec!["busy".into()])]);
        // No outcome of its own: the steps after the dial (none: hang up).
        assert!(then.noanswer.is_empty());
    }

    #[tokio::test]
    async fn a_hunt_rings_one_target_then_the_next() {
        let env = env(PLAN);
        let actions = route(&env, "2000");
        let Some(DialStep { numbers, then, .. }) = leading_dial(&actions) else {
            panic!("not a dial");
        };
        assert_eq!(numbers, ["1001"]);
        let next = then.steps(Outcome::NoAnswer);
        let Some(DialStep { numbers, then, .. }) = leading_dial(&next) else {
            panic!("not a dial: {next:?}");
        };
        assert_eq!(numbers, ["1002"]);
        let last = then.steps(Outcome::Busy);
        let Some(DialStep { numbers, then, .. }) = leading_dial(&last) else {
            panic!("not a dial");
        };
        assert_eq!(numbers, ["1003"]);
        // After the last member: the route's next step.
        assert_eq!(
            then.steps(Outcome::NoAnswer),
            vec![Action::Play(vec!["closed".into()])]
        );
    }

    #[tokio::test]
    async fn a_menu_key_runs_its_option() {
        let env = env(PLAN);
        let mut ch = FakeChannel::new(
            "1000",
            "0",
            vec![Caller::presses("1"), Caller::Silent, Caller::Silent],
        );
        let end = run(&mut ch, &env, &call("0"), route(&env, "0"))
            .await
            .expect("run");
        assert_eq!(end, PlanEnd::Done);
        assert_eq!(ch.log[0], Op::Answered);
        assert!(
            ch.log
                .iter()
                .any(|op| matches!(op, Op::Played(s, _) if s == &[Sound::file("closed")])),
            "{:?}",
            ch.log
        );
        assert_eq!(ch.log.last(), Some(&Op::HungUp));
    }

    #[tokio::test]
    async fn a_menu_retries_on_silence_and_bad_keys_then_fails() {
        let env = env(PLAN);
        // Nothing during the prompt and the wait, then a number nobody has.
        let mut ch = FakeChannel::new(
            "1000",
            "0",
            vec![
                Caller::Silent,
                Caller::Silent,
                Caller::Silent,
                Caller::presses("77"),
                Caller::Silent,
                Caller::Silent,
            ],
        );
        run(&mut ch, &env, &call("0"), route(&env, "0"))
            .await
            .expect("run");
        let played: Vec<&Vec<Sound>> = ch
            .log
            .iter()
            .filter_map(|op| match op {
                Op::Played(s, _) => Some(s),
                _ => None,
            })
            .collect();
        assert_eq!(played[1], &vec![Sound::file("timeout")], "{played:?}");
        assert_eq!(
            played.last(),
            Some(&&vec![Sound::file("goodbye")]),
            "{played:?}"
        );
    }

    #[tokio::test]
    async fn a_direct_dialled_extension_from_a_menu_is_bridged() {
        use crate::call::channel::BridgeSide;
        let env = env(PLAN);
        let mut ch = FakeChannel::new(
            "1000",
            "0",
            vec![
                Caller::presses("1002"),
                Caller::Silent,
                Caller::Bridge(BridgeEnd::Answered {
                    hangup_by: BridgeSide::Callee,
                }),
            ],
        );
        let end = run(&mut ch, &env, &call("0"), route(&env, "0"))
            .await
            .expect("run");
        assert_eq!(end, PlanEnd::Done);
        assert!(
            ch.log.contains(&Op::Bridged(
                vec!["1002".into()],
                BridgeEnd::Answered {
                    hangup_by: BridgeSide::Callee
                }
            )),
            "{:?}",
            ch.log
        );
        assert_eq!(ch.log.last(), Some(&Op::HungUp));
    }

    #[tokio::test]
    async fn a_busy_bridge_runs_the_busy_steps() {
        let env = env(PLAN);
        let mut ch = FakeChannel::new(
            "1000",
            "0",
            vec![
                Caller::presses("1002"),
                Caller::Silent,
                Caller::Bridge(BridgeEnd::Busy),
            ],
        );
        run(&mut ch, &env, &call("0"), route(&env, "0"))
            .await
            .expect("run");
        assert!(
            ch.log
                .iter()
                .any(|op| matches!(op, Op::Played(s, _) if s == &[Sound::file("busy")])),
            "{:?}",
            ch.log
        );
    }

    #[tokio::test]
    async fn a_conference_asks_its_pin() {
        let env = env(PLAN);
        let mut ch = FakeChannel::new(
            "1000",
            "8000",
            vec![
                Caller::presses("11#"),
                Caller::Silent,
                Caller::presses("1234#"),
                Caller::Silent,
                Caller::HangsUp,
            ],
        );
        let end = run(&mut ch, &env, &call("8000"), route(&env, "8000")).await;
        assert_eq!(end, Err(ChannelError::HungUp));
        assert!(
            ch.log
                .iter()
                .any(|op| matches!(op, Op::Played(s, _) if s == &[Sound::file("conf/wrong-pin")])),
            "{:?}",
            ch.log
        );
        assert!(ch
            .log
            .iter()
            .any(|op| matches!(op, Op::Conference(r, _) if r == "8000")
                || matches!(op, Op::Played(s, _) if s == &[Sound::file("conf/joined")])));
    }

    #[tokio::test]
    async fn a_hangup_with_a_status_refuses_an_unanswered_call() {
        let env = env(PLAN);
        let mut ch = FakeChannel::new("1000", "9", vec![]);
        run(&mut ch, &env, &call("9"), route(&env, "9"))
            .await
            .expect("run");
        assert_eq!(ch.log, vec![Op::Refused(486)]);
    }

    #[test]
    fn targets_keep_their_order() {
        let d = Dial {
            targets: vec![
                Target {
                    number: "1".into(),
                    forwarded_from: None,
                },
                Target {
                    number: "2".into(),
                    forwarded_from: None,
                },
            ],
            strategy: Strategy::RingAll,
            timeout: Duration::from_secs(3),
            on_busy: None,
            on_noanswer: None,
            on_unavailable: None,
        };
        assert_eq!(dial_step(&d, Vec::new()).numbers, ["1", "2"]);
    }
}
