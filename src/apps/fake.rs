//! A [`Channel`] in memory for unit tests of apps: the caller's behaviour is a script,
//! what the app did is a log. Deterministic and instant (no clock, no sockets).
//!
//! Each operation that waits on the caller (play, record, collect_digits) takes the next
//! step of the script: keys pressed during it, the caller hanging up, or silence (the
//! operation runs to its natural end: the prompt finishes, the recording reaches its
//! limit, the collection times out). Keys land in the same type-ahead buffer a real
//! channel has, so the contract of [`crate::call::channel`] holds here too.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use crate::call::channel::{
    collect_from, BridgeEnd, BridgeOptions, BridgeRequest, BridgeSide, CallInfo, Channel,
    ChannelError, CollectEnd, CollectOptions, Collected, ConferenceEnd, ConferenceOptions, PlayEnd,
    PlayOptions, RecordEnd, RecordLimits, Recorded, Sound,
};
use crate::media::dtmf::Digit;

/// What the caller does during one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Presses these keys (`0-9*#A-D`).
    Presses(String),
    /// Stays silent: the operation ends by itself.
    Silent,
    /// Hangs up.
    HangsUp,
    /// During a bridge: the dialled side ends it so (an answered bridge answers the
    /// caller; one the caller hung up leaves the channel hung up). Anything else during
    /// a bridge is [`BridgeEnd::NoAnswer`].
    Bridge(BridgeEnd),
    /// Speaks this long, then is silent: a recording lasts this long and ends by silence
    /// (or by its limit); other operations see silence.
    Says(Duration),
}

impl Caller {
    pub fn presses(keys: &str) -> Caller {
        Caller::Presses(keys.to_owned())
    }
}

/// What the app did, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Rang,
    Answered,
    Played(Vec<Sound>, PlayEnd),
    Recorded(PathBuf, RecordEnd),
    Collected(Collected),
    /// Left room (the name) by a key.
    Conference(String, ConferenceEnd),
    /// Bridged to these numbers, with this end.
    Bridged(Vec<String>, BridgeEnd),
    HungUp,
    /// Refused, unanswered, with this status.
    Refused(u16),
}

/// The fake channel. See the module comment.
pub struct FakeChannel {
    info: CallInfo,
    script: VecDeque<Caller>,
    digits: VecDeque<Digit>,
    /// What the app did.
    pub log: Vec<Op>,
    answered: bool,
    hung_up: bool,
    /// Whether `record` writes a WAV file of the recording's length at its path.
    write_recordings: bool,
    /// How long the last step's caller spoke, when it was [`Caller::Says`].
    said: Option<Duration>,
}

impl FakeChannel {
    /// A call from `caller` to `dialled` whose caller behaves as `script` says (and is
    /// silent once it runs out).
    pub fn new(caller: &str, dialled: &str, script: impl IntoIterator<Item = Caller>) -> Self {
        FakeChannel {
            info: CallInfo {
                id: "fake".into(),
                caller: caller.into(),
                dialled: dialled.into(),
            },
            script: script.into_iter().collect(),
            digits: VecDeque::new(),
            log: Vec::new(),
            answered: false,
            hung_up: false,
            write_recordings: false,
            said: None,
        }
    }

    /// `record` writes a real WAV file (8 kHz mono, a tone) as long as the recording, at
    /// the path it was given, for tests of apps that keep recordings.
    pub fn writing_recordings(mut self) -> Self {
        self.write_recordings = true;
        self
    }

    fn write_recording(
        &self,
        path: &std::path::Path,
        duration: Duration,
    ) -> Result<(), ChannelError> {
        if !self.write_recordings {
            return Ok(());
        }
        let fail = |e: crate::media::recorder::RecorderError| ChannelError::Recording {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        let mut rec = crate::media::recorder::Recorder::create(
            path,
            crate::media::recorder::Layout::Mixed,
            8000,
        )
        .map_err(fail)?;
        let frame: Vec<i16> = (0..160)
            .map(|i| if i % 20 < 10 { 3000 } else { -3000 })
            .collect();
        for _ in 0..duration.as_millis() / 20 {
            rec.write(&frame, &[]).map_err(fail)?;
        }
        rec.finish().map_err(fail)?;
        Ok(())
    }

    pub fn is_answered(&self) -> bool {
        self.answered
    }

    /// The next step; its keys go into the buffer. Returns the keys, or Err for a hang-up.
    fn step(&mut self) -> Result<Vec<Digit>, ChannelError> {
        if self.hung_up {
            return Err(ChannelError::HungUp);
        }
        self.said = None;
        match self.script.pop_front().unwrap_or(Caller::Silent) {
            Caller::Silent | Caller::Bridge(_) => Ok(Vec::new()),
            Caller::Says(d) => {
                self.said = Some(d);
                Ok(Vec::new())
            }
            Caller::HangsUp => {
                self.hung_up = true;
                self.log.push(Op::HungUp);
                Err(ChannelError::HungUp)
            }
            Caller::Presses(keys) => {
                let keys: Vec<Digit> = keys.chars().filter_map(Digit::from_char).collect();
                self.digits.extend(keys.iter().copied());
                Ok(keys)
            }
        }
    }

    fn live(&self) -> Result<(), ChannelError> {
        if self.hung_up {
            Err(ChannelError::HungUp)
        } else {
            Ok(())
        }
    }
}

impl Channel for FakeChannel {
    fn info(&self) -> &CallInfo {
        &self.info
    }

    async fn ring(&mut self) -> Result<(), ChannelError> {
        self.live()?;
        self.log.push(Op::Rang);
        Ok(())
    }

    async fn answer(&mut self) -> Result<(), ChannelError> {
        self.live()?;
        self.answered = true;
        self.log.push(Op::Answered);
        Ok(())
    }

    async fn play(&mut self, sounds: &[Sound], opts: PlayOptions) -> Result<PlayEnd, ChannelError> {
        self.live()?;
        if let (true, Some(d)) = (opts.barge_in, self.digits.front()) {
            let end = PlayEnd::BargeIn(*d);
            self.log.push(Op::Played(sounds.to_vec(), end));
            return Ok(end);
        }
        let keys = self.step()?;
        let end = match keys.first() {
            Some(d) if opts.barge_in => PlayEnd::BargeIn(*d),
            _ => PlayEnd::Finished,
        };
        self.log.push(Op::Played(sounds.to_vec(), end));
        Ok(end)
    }

    async fn record(
        &mut self,
        path: PathBuf,
        limits: RecordLimits,
    ) -> Result<Recorded, ChannelError> {
        self.live()?;
        let keys = match self.step() {
            Ok(k) => k,
            // A hang-up during the recording ends the message and keeps it, as on a real
            // channel.
            Err(ChannelError::HungUp) => {
                let end = RecordEnd::HungUp;
                let duration = limits.max.min(Duration::from_secs(3));
                self.write_recording(&path, duration)?;
                self.log.push(Op::Recorded(path.clone(), end.clone()));
                return Ok(Recorded {
                    path,
                    duration,
                    end,
                });
            }
            Err(e) => return Err(e),
        };
        // A terminator ends the recording and is consumed, as on a real channel.
        let end = match keys.iter().position(|d| limits.terminators.contains(d)) {
            Some(i) => {
                let term = keys[i];
                let pos = self.digits.len() - keys.len() + i;
                self.digits.remove(pos);
                RecordEnd::Digit(term)
            }
            None => match (self.said, limits.silence) {
                (Some(d), Some(_)) if d < limits.max => RecordEnd::Silence,
                (None, Some(_)) => RecordEnd::Silence,
                _ => RecordEnd::MaxDuration,
            },
        };
        self.log.push(Op::Recorded(path.clone(), end.clone()));
        let duration = match (self.said, &end) {
            (Some(d), _) => d.min(limits.max),
            (None, RecordEnd::MaxDuration) => limits.max,
            _ => limits.max.min(Duration::from_secs(3)),
        };
        self.write_recording(&path, duration)?;
        Ok(Recorded {
            path,
            duration,
            end,
        })
    }

    async fn collect_digits(&mut self, opts: CollectOptions) -> Result<Collected, ChannelError> {
        let mut got = String::new();
        loop {
            if let Some(done) = collect_from(&mut self.digits, &mut got, &opts) {
                self.log.push(Op::Collected(done.clone()));
                return Ok(done);
            }
            if self.step()?.is_empty() {
                let done = Collected {
                    digits: got,
                    end: CollectEnd::Timeout,
                };
                self.log.push(Op::Collected(done.clone()));
                return Ok(done);
            }
        }
    }

    async fn join_conference(
        &mut self,
        room: &str,
        opts: ConferenceOptions,
    ) -> Result<ConferenceEnd, ChannelError> {
        loop {
            let keys = self.step()?;
            if let Some(d) = keys.iter().find(|d| opts.leave_keys.contains(d)) {
                self.digits.retain(|k| k != d);
                self.log
                    .push(Op::Conference(room.to_owned(), ConferenceEnd::Key(*d)));
                return Ok(ConferenceEnd::Key(*d));
            }
            if keys.is_empty() && self.script.is_empty() {
                // A silent caller who never leaves: the fake ends it as a hang-up, so
                // a test cannot hang.
                self.hung_up = true;
                self.log.push(Op::HungUp);
                return Err(ChannelError::HungUp);
            }
        }
    }

    async fn bridge(
        &mut self,
        dial: BridgeRequest,
        _opts: BridgeOptions,
    ) -> Result<BridgeEnd, ChannelError> {
        self.live()?;
        let end = match self.script.pop_front() {
            Some(Caller::Bridge(end)) => end,
            Some(Caller::HangsUp) => {
                self.hung_up = true;
                self.log.push(Op::HungUp);
                return Err(ChannelError::HungUp);
            }
            _ => BridgeEnd::NoAnswer,
        };
        if let BridgeEnd::Answered { hangup_by } = end {
            self.answered = true;
            if hangup_by == BridgeSide::Caller {
                self.hung_up = true;
            }
        }
        self.log.push(Op::Bridged(dial.numbers, end));
        Ok(end)
    }

    fn flush_digits(&mut self) {
        self.digits.clear();
    }

    async fn hangup(&mut self) -> Result<(), ChannelError> {
        self.live()?;
        self.hung_up = true;
        self.log.push(Op::HungUp);
        Ok(())
    }

    async fn refuse(&mut self, status: u16) -> Result<(), ChannelError> {
        if self.answered {
            return self.hangup().await;
        }
        self.live()?;
        self.hung_up = true;
        self.log.push(Op::Refused(status));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A two-choice menu as apps will write them: the prompt may be barged in on, a wrong
    /// key gets one retry, no key means goodbye.
    async fn menu(ch: &mut impl Channel) -> Result<Option<char>, ChannelError> {
        ch.answer().await?;
        for _ in 0..2 {
            let prompt = [Sound::file("menu.wav")];
            ch.play(
                &prompt,
                PlayOptions {
                    barge_in: true,
                    looping: false,
                },
            )
            .await?;
            let got = ch.collect_digits(CollectOptions::default()).await?;
            match got.digits.as_str() {
                "1" => return Ok(Some('1')),
                "2" => return Ok(Some('2')),
                "" => break,
                _ => {
                    ch.play(&[Sound::file("invalid.wav")], PlayOptions::default())
                        .await?;
                }
            }
        }
        ch.hangup().await?;
        Ok(None)
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn a_key_during_the_prompt_is_the_menu_choice() {
        let mut ch = FakeChannel::new("100", "0", [Caller::presses("2")]);
        assert_eq!(block_on(menu(&mut ch)), Ok(Some('2')));
        assert_eq!(
            ch.log,
            vec![
                Op::Answered,
                Op::Played(vec![Sound::file("menu.wav")], PlayEnd::BargeIn(Digit::D2)),
                Op::Collected(Collected {
                    digits: "2".into(),
                    end: CollectEnd::MaxDigits
                }),
            ]
        );
    }

    #[test]
    fn a_wrong_key_retries_and_silence_hangs_up() {
        let script = [Caller::Silent, Caller::presses("9"), Caller::Silent];
        let mut ch = FakeChannel::new("100", "0", script);
        assert_eq!(block_on(menu(&mut ch)), Ok(None));
        assert_eq!(ch.log.last(), Some(&Op::HungUp));
        assert!(ch.log.contains(&Op::Played(
            vec![Sound::file("invalid.wav")],
            PlayEnd::Finished
        )));
    }

    #[test]
    fn after_the_caller_hangs_up_every_operation_fails() {
        let mut ch = FakeChannel::new("100", "0", [Caller::HangsUp]);
        assert_eq!(block_on(menu(&mut ch)), Err(ChannelError::HungUp));
        assert_eq!(
            block_on(ch.collect_digits(CollectOptions::default())),
            Err(ChannelError::HungUp)
        );
    }

    #[test]
    fn a_hang_up_ends_a_recording_and_keeps_it_but_nothing_after() {
        let mut ch = FakeChannel::new("100", "*97", [Caller::HangsUp]);
        let r = block_on(ch.record("m.wav".into(), RecordLimits::default())).expect("record");
        assert_eq!(r.end, RecordEnd::HungUp);
        assert_eq!(
            block_on(ch.record("n.wav".into(), RecordLimits::default())),
            Err(ChannelError::HungUp)
        );
    }

    /// Rings an extension, and goes to voicemail (a prompt here) when nobody answers.
    async fn dial_or_voicemail(ch: &mut impl Channel) -> Result<BridgeEnd, ChannelError> {
        let end = ch
            .bridge(BridgeRequest::to("200"), BridgeOptions::default())
            .await?;
        match end {
            BridgeEnd::Answered { .. } => {}
            _ => {
                ch.answer().await?;
                ch.play(&[Sound::file("vm/leave-a-message")], PlayOptions::default())
                    .await?;
            }
        }
        ch.hangup().await?;
        Ok(end)
    }

    #[test]
    fn a_scripted_bridge_ends_as_told_and_the_app_goes_on() {
        let answered = BridgeEnd::Answered {
            hangup_by: BridgeSide::Callee,
        };
        let mut ch = FakeChannel::new("100", "800", [Caller::Bridge(answered)]);
        assert_eq!(block_on(dial_or_voicemail(&mut ch)), Ok(answered));
        assert!(ch.is_answered());
        assert_eq!(
            ch.log,
            vec![Op::Bridged(vec!["200".into()], answered), Op::HungUp]
        );
        let mut ch = FakeChannel::new("100", "800", [Caller::Bridge(BridgeEnd::Busy)]);
        assert_eq!(block_on(dial_or_voicemail(&mut ch)), Ok(BridgeEnd::Busy));
        assert_eq!(ch.log[1], Op::Answered);
        // The caller hanging up while it rings.
        let mut ch = FakeChannel::new("100", "800", [Caller::HangsUp]);
        assert_eq!(
            block_on(dial_or_voicemail(&mut ch)),
            Err(ChannelError::HungUp)
        );
    }

    #[test]
    fn a_terminator_ends_a_recording_and_is_consumed() {
        let mut ch = FakeChannel::new("100", "*97", [Caller::presses("5#")]);
        let r = block_on(ch.record("m.wav".into(), RecordLimits::default())).expect("record");
        assert_eq!(r.end, RecordEnd::Digit(Digit::Hash));
        let left = block_on(ch.collect_digits(CollectOptions {
            max_digits: 5,
            ..CollectOptions::default()
        }))
        .expect("collect");
        assert_eq!(left.digits, "5");
    }
}
