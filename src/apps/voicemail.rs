//! The two voicemail apps: [`leave_message`] (a caller leaves a message in a mailbox) and
//! [`voicemail_main`] (the owner listens to messages and sets the mailbox up).
//!
//! Owns: the call flows, their prompts and keys. Must not: touch files or the store
//! directly ([`crate::voicemail::Voicemail`] does), or reach under the channel.
//!
//! Access (`voicemail_main`): a mailbox with a PIN asks for it, three tries, whatever
//! phone calls. A mailbox without a PIN opens to its owner's own phone (the caller the
//! node authenticated by digest is the mailbox's extension) and to nobody else, so a
//! fresh mailbox is safe until its owner sets a PIN from their desk (0, 5).
//!
//! Keys, main menu: 1 listen (new messages first, then old), 0 mailbox options, star
//! hangs up. While listening: 4 previous, 5 again, 7 delete, 9 save (keep as old), pound
//! next, star back to the main menu; a key during a message acts at once. Options: 1
//! record the unavailable greeting, 2 the busy one, 5 change the PIN (entered twice),
//! star back. A message is old once it has been played.

use std::time::Duration;

use thiserror::Error;
use tracing::info;

use crate::call::channel::{
    Channel, ChannelError, CollectEnd, CollectOptions, PlayEnd, PlayOptions, RecordEnd,
    RecordLimits, Sound,
};
use crate::dialplan::Greeting;
use crate::media::dtmf::Digit;
use crate::store::{GreetingKind, VoicemailFolder, VoicemailMessage};
use crate::voicemail::{valid_pin, Voicemail, VoicemailError, PIN_DIGITS};

/// The longest message.
pub const MAX_MESSAGE: Duration = Duration::from_secs(180);
/// The longest greeting.
pub const MAX_GREETING: Duration = Duration::from_secs(60);
/// Wrong logins (or menu timeouts in a row) before goodbye.
pub const TRIES: usize = 3;

#[derive(Debug, Error)]
pub enum VoicemailAppError {
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error(transparent)]
    Voicemail(#[from] VoicemailError),
}

/// How a call to [`leave_message`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Left {
    Saved(VoicemailMessage),
    /// Shorter than [`crate::voicemail::MIN_MESSAGE`]: nothing kept.
    TooShort,
    /// The caller hung up before the tone.
    HungUpBeforeTone,
}

const BEEP: &str = "beep";

fn sound(name: &str) -> Sound {
    Sound::file(name)
}

fn barge() -> PlayOptions {
    PlayOptions {
        barge_in: true,
        looping: false,
    }
}

/// A number read digit by digit ("one oh oh" reads as "1 0 0": an extension).
pub fn say_digits(number: &str) -> Vec<Sound> {
    number
        .chars()
        .filter_map(|c| match c {
            '0'..='9' => Some(sound(&format!("digits/{c}"))),
            '*' => Some(sound("digits/star")),
            '#' => Some(sound("digits/pound")),
            _ => None,
        })
        .collect()
}

/// Who left a message: "from extension 1 0 0", or "unknown caller".
fn caller_said(caller: &str) -> Vec<Sound> {
    let digits = say_digits(caller);
    if digits.is_empty() {
        return vec![sound("vm/unknown-caller")];
    }
    let mut p = vec![sound("vm/from"), sound("vm/extension")];
    p.extend(digits);
    p
}

/// A count as words ("twenty three"), from the `digits/` prompts.
pub fn say_number(n: u32) -> Vec<Sound> {
    let mut out = Vec::new();
    let mut rest = n;
    if rest >= 1000 {
        out.extend(say_number(rest / 1000));
        out.push(sound("digits/thousand"));
        rest %= 1000;
    }
    if rest >= 100 {
        out.push(sound(&format!("digits/{}", rest / 100)));
        out.push(sound("digits/hundred"));
        rest %= 100;
    }
    if rest > 20 {
        out.push(sound(&format!("digits/{}", rest / 10 * 10)));
        rest %= 10;
        if rest > 0 {
            out.push(sound(&format!("digits/{rest}")));
        }
    } else if rest > 0 || out.is_empty() {
        out.push(sound(&format!("digits/{rest}")));
    }
    out
}

/// Answers, plays the greeting, records a message after the tone and saves it. The
/// caller finishes by hanging up (the usual way, and the message is kept), by `#`, or by
/// silence; 180 s at most.
pub async fn leave_message<C: Channel>(
    ch: &mut C,
    vm: &Voicemail,
    mailbox: &str,
    greeting: Greeting,
) -> Result<Left, VoicemailAppError> {
    ch.answer().await?;
    let kind = match greeting {
        Greeting::Unavailable => Some(GreetingKind::Unavailable),
        Greeting::Busy => Some(GreetingKind::Busy),
        Greeting::None => None,
    };
    let prompt = match kind {
        None => Vec::new(),
        Some(kind) => match vm.greeting(mailbox, kind).await? {
            Some(recorded) => vec![Sound::File(recorded)],
            None => {
                let mut p = vec![sound("vm/person-at-extension")];
                p.extend(say_digits(mailbox));
                p.push(sound(match kind {
                    GreetingKind::Unavailable => "vm/is-unavailable",
                    GreetingKind::Busy => "vm/is-busy",
                }));
                p.push(sound("vm/leave-message-after-tone"));
                p
            }
        },
    };
    let heard = async {
        if !prompt.is_empty() {
            // A key skips the greeting (callers who know it press # at once).
            ch.play(&prompt, barge()).await?;
        }
        ch.flush_digits();
        ch.play(&[sound(BEEP)], PlayOptions::default()).await
    };
    match heard.await {
        Ok(_) => {}
        Err(ChannelError::HungUp) => return Ok(Left::HungUpBeforeTone),
        Err(e) => return Err(e.into()),
    }
    let caller = ch.info().caller.clone();
    let pending = vm.start_message(mailbox, &caller, "")?;
    let limits = RecordLimits {
        max: MAX_MESSAGE,
        terminators: vec![Digit::Hash],
        ..RecordLimits::default()
    };
    let recorded = match ch.record(pending.recording_path.clone(), limits).await {
        Ok(r) => r,
        Err(e) => {
            vm.discard_message(&pending);
            return Err(e.into());
        }
    };
    let saved = vm.save_message(&pending, recorded.duration).await?;
    let still_there = recorded.end != RecordEnd::HungUp;
    let outcome = match saved {
        Some(m) => {
            if still_there {
                say_then_hang_up(ch, &[sound("vm/message-saved")]).await?;
            }
            Left::Saved(m)
        }
        None => {
            info!(mailbox, caller = %caller, "voicemail too short: not kept");
            if still_there {
                say_then_hang_up(ch, &[sound("goodbye")]).await?;
            }
            Left::TooShort
        }
    };
    Ok(outcome)
}

async fn say_then_hang_up<C: Channel>(ch: &mut C, sounds: &[Sound]) -> Result<(), ChannelError> {
    match ch.play(sounds, PlayOptions::default()).await {
        Ok(_) => ch.hangup().await,
        // Gone already: nothing left to do.
        Err(ChannelError::HungUp) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Collects up to `max` keys ended by `#` (10 s for the first, 5 s between).
async fn collect_number<C: Channel>(ch: &mut C, max: usize) -> Result<String, ChannelError> {
    let got = ch
        .collect_digits(CollectOptions {
            max_digits: max,
            first_timeout: Duration::from_secs(10),
            inter_digit_timeout: Duration::from_secs(5),
            terminators: vec![Digit::Hash],
        })
        .await?;
    Ok(got.digits)
}

/// One menu key: the prompt (barge-in), then a key within 5 s. `None` on a timeout.
async fn menu_key<C: Channel>(ch: &mut C, prompt: &[Sound]) -> Result<Option<char>, ChannelError> {
    if !prompt.is_empty() {
        ch.play(prompt, barge()).await?;
    }
    let got = ch
        .collect_digits(CollectOptions {
            max_digits: 1,
            first_timeout: Duration::from_secs(5),
            inter_digit_timeout: Duration::from_secs(5),
            terminators: Vec::new(),
        })
        .await?;
    Ok(match got.end {
        CollectEnd::Timeout => None,
        _ => got.digits.chars().next(),
    })
}

/// The owner's side: log in (see the module comment), hear the counts, then the menus.
/// `mailbox` is the mailbox when the dialplan names one (`*97` names the caller's),
/// `None` to ask for it; `caller` is the extension the node authenticated.
pub async fn voicemail_main<C: Channel>(
    ch: &mut C,
    vm: &Voicemail,
    mailbox: Option<&str>,
    caller: &str,
) -> Result<(), VoicemailAppError> {
    ch.answer().await?;
    let result = async {
        let Some(mailbox) = log_in(ch, vm, mailbox, caller).await? else {
            say_then_hang_up(ch, &[sound("goodbye")]).await?;
            return Ok(());
        };
        info!(mailbox = %mailbox, caller, "voicemail login");
        announce_counts(ch, vm, &mailbox).await?;
        main_menu(ch, vm, &mailbox).await
    };
    match result.await {
        Err(VoicemailAppError::Channel(ChannelError::HungUp)) => Ok(()),
        other => other,
    }
}

/// The mailbox the caller may open, or `None` after [`TRIES`] failures.
async fn log_in<C: Channel>(
    ch: &mut C,
    vm: &Voicemail,
    mailbox: Option<&str>,
    caller: &str,
) -> Result<Option<String>, VoicemailAppError> {
    for _ in 0..TRIES {
        let mailbox = match mailbox {
            Some(m) => m.to_owned(),
            None => {
                ch.play(&[sound("vm/enter-mailbox")], barge()).await?;
                collect_number(ch, 32).await?
            }
        };
        if !mailbox.is_empty() {
            if vm.has_pin(&mailbox).await? {
                ch.play(&[sound("vm/enter-password")], barge()).await?;
                let pin = collect_number(ch, *PIN_DIGITS.end()).await?;
                if vm.verify_pin(&mailbox, &pin).await? {
                    return Ok(Some(mailbox));
                }
            } else if mailbox == caller {
                return Ok(Some(mailbox));
            }
        }
        // The same words whether the mailbox, the PIN or the phone was wrong.
        info!(mailbox = %mailbox, caller, "voicemail login refused");
        ch.play(&[sound("vm/login-incorrect")], PlayOptions::default())
            .await?;
    }
    Ok(None)
}

async fn announce_counts<C: Channel>(
    ch: &mut C,
    vm: &Voicemail,
    mailbox: &str,
) -> Result<(), VoicemailAppError> {
    let counts = vm.counts(mailbox).await?;
    let mut p = Vec::new();
    if counts.new == 0 && counts.old == 0 {
        p.push(sound("vm/no-messages"));
    } else {
        p.push(sound("vm/you-have"));
        let folder = |n: u32, which: &str, p: &mut Vec<Sound>| {
            if n == 0 {
                p.push(sound("vm/no"));
            } else {
                p.extend(say_number(n));
            }
            p.push(sound(which));
            p.push(sound(if n == 1 { "vm/message" } else { "vm/messages" }));
        };
        folder(counts.new, "vm/new", &mut p);
        if counts.old > 0 {
            p.push(sound("vm/and"));
            folder(counts.old, "vm/old", &mut p);
        }
    }
    ch.play(&p, barge()).await?;
    Ok(())
}

async fn main_menu<C: Channel>(
    ch: &mut C,
    vm: &Voicemail,
    mailbox: &str,
) -> Result<(), VoicemailAppError> {
    let mut timeouts = 0;
    loop {
        match menu_key(ch, &[sound("vm/main-menu")]).await? {
            Some('1') => listen(ch, vm, mailbox).await?,
            Some('0') => options(ch, vm, mailbox).await?,
            Some('*') => {
                say_then_hang_up(ch, &[sound("goodbye")]).await?;
                return Ok(());
            }
            Some(_) => {
                ch.play(&[sound("invalid")], PlayOptions::default()).await?;
            }
            None => {
                timeouts += 1;
                if timeouts >= TRIES {
                    say_then_hang_up(ch, &[sound("goodbye")]).await?;
                    return Ok(());
                }
                continue;
            }
        }
        timeouts = 0;
    }
}

/// Plays the messages, new first; returns to the main menu on `*` or after the last.
async fn listen<C: Channel>(
    ch: &mut C,
    vm: &Voicemail,
    mailbox: &str,
) -> Result<(), VoicemailAppError> {
    let mut messages = vm.messages(mailbox).await?;
    let mut at = 0;
    let mut timeouts = 0;
    // Whether the current message is to be played (not after a mere menu timeout).
    let mut play = true;
    while at < messages.len() {
        let mut key = None;
        if play {
            let mut intro = vec![sound(if at == 0 {
                "vm/first-message"
            } else if at + 1 == messages.len() {
                "vm/last-message"
            } else {
                "vm/next-message"
            })];
            intro.extend(caller_said(&messages[at].caller));
            intro.push(Sound::Silence(200));
            intro.push(Sound::File(vm.absolute(&messages[at].path)));
            let end = ch.play(&intro, barge()).await?;
            if messages[at].folder == VoicemailFolder::New {
                vm.move_message(mailbox, &messages[at].id, VoicemailFolder::Old)
                    .await?;
                messages[at].folder = VoicemailFolder::Old;
            }
            if let PlayEnd::BargeIn(_) = end {
                // The key acts at once, without the menu prompt.
                key = menu_key(ch, &[]).await?;
            }
        }
        if key.is_none() {
            key = menu_key(ch, &[sound("vm/message-menu")]).await?;
        }
        play = true;
        match key {
            Some('4') => at = at.saturating_sub(1),
            Some('5') => {}
            Some('7') => {
                vm.delete_message(mailbox, &messages[at].id).await?;
                messages.remove(at);
                ch.play(&[sound("vm/deleted")], barge()).await?;
            }
            Some('9') => {
                ch.play(&[sound("vm/saved")], barge()).await?;
                at += 1;
            }
            Some('#') => at += 1,
            Some('*') => return Ok(()),
            Some(_) => {
                ch.play(&[sound("invalid")], PlayOptions::default()).await?;
                play = false;
            }
            None => {
                timeouts += 1;
                if timeouts >= TRIES {
                    return Ok(());
                }
                play = false;
                continue;
            }
        }
        timeouts = 0;
    }
    ch.play(&[sound("vm/no-more-messages")], barge()).await?;
    Ok(())
}

async fn options<C: Channel>(
    ch: &mut C,
    vm: &Voicemail,
    mailbox: &str,
) -> Result<(), VoicemailAppError> {
    loop {
        match menu_key(ch, &[sound("vm/mailbox-options")]).await? {
            Some('1') => record_greeting(ch, vm, mailbox, GreetingKind::Unavailable).await?,
            Some('2') => record_greeting(ch, vm, mailbox, GreetingKind::Busy).await?,
            Some('5') => change_pin(ch, vm, mailbox).await?,
            Some('*') | None => return Ok(()),
            Some(_) => {
                ch.play(&[sound("invalid")], PlayOptions::default()).await?;
            }
        }
    }
}

async fn record_greeting<C: Channel>(
    ch: &mut C,
    vm: &Voicemail,
    mailbox: &str,
    kind: GreetingKind,
) -> Result<(), VoicemailAppError> {
    ch.play(&[sound("vm/record-greeting-after-tone")], barge())
        .await?;
    ch.flush_digits();
    ch.play(&[sound(BEEP)], PlayOptions::default()).await?;
    let pending = vm.start_greeting(mailbox, kind)?;
    let limits = RecordLimits {
        max: MAX_GREETING,
        terminators: vec![Digit::Hash],
        ..RecordLimits::default()
    };
    let recorded = match ch.record(pending.recording_path.clone(), limits).await {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&pending.recording_path);
            return Err(e.into());
        }
    };
    // A hang-up while recording a greeting keeps it: the owner said what they meant.
    let saved = vm.save_greeting(&pending, recorded.duration).await?;
    if recorded.end == RecordEnd::HungUp {
        return Err(ChannelError::HungUp.into());
    }
    let said = if saved {
        "vm/greeting-saved"
    } else {
        "invalid"
    };
    ch.play(&[sound(said)], PlayOptions::default()).await?;
    Ok(())
}

async fn change_pin<C: Channel>(
    ch: &mut C,
    vm: &Voicemail,
    mailbox: &str,
) -> Result<(), VoicemailAppError> {
    ch.play(&[sound("vm/enter-new-password")], barge()).await?;
    let first = collect_number(ch, *PIN_DIGITS.end()).await?;
    if !valid_pin(&first) {
        ch.play(&[sound("invalid")], PlayOptions::default()).await?;
        return Ok(());
    }
    ch.play(&[sound("vm/reenter-password")], barge()).await?;
    let second = collect_number(ch, *PIN_DIGITS.end()).await?;
    if first != second {
        ch.play(&[sound("vm/password-mismatch")], PlayOptions::default())
            .await?;
        return Ok(());
    }
    vm.set_pin(mailbox, &first).await?;
    ch.play(&[sound("vm/password-changed")], PlayOptions::default())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests;
