//! Calls answered by apps: the tokio task around one [`AppLeg`] and its media endpoint,
//! and [`SipChannel`], the [`Channel`] an app drives it through.
//!
//! Owns: routing SIP events to the leg, the leg's decisions to the core and the endpoint,
//! the endpoint's events (key presses, ends of playback and recording) to the app, the
//! call's rows in the store. Must not: decide what the app does; the app runs in a task
//! of its own and only talks to this one through the channel.
//!
//! ```text
//!  core --SipIn--> [app call task: AppLeg + EndpointHandle] <--requests-- SipChannel (app)
//!                                    \---------events (digits, ends, hang-up)-------^
//! ```

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info_span, warn, Instrument};

use crate::media::conference::{MemberOptions, Rooms};
use crate::media::dtmf::Digit;
use crate::media::endpoint::{EndpointEvent, MediaLink, PlayEnd, RecordLimits};
use crate::media::endpoint_task::{EndpointConfig, EndpointHandle, EndpointTaskEvent};
use crate::media::player::{Item, PromptCache};
use crate::media::recorder::{Layout, Recorder};
use crate::media::LegSockets;

use super::app_leg::{AppLeg, AppLegParams, AppOut};
use super::channel::{
    collect_from, take_digit, CallInfo, Channel, ChannelError, CollectEnd, CollectOptions,
    Collected, ConferenceEnd, ConferenceOptions, PlayOptions, Recorded, Sound,
};
use super::machine::{CallSettings, Command, Disposition, HangupLeg};
use super::records::CallLog;
use super::task::{sleep_until, write_cdr, Record};
use super::{CallHandle, CallRef, CoreCommand, CALL_QUEUE};

/// An app: started with the channel of each call routed to it.
pub type AppFn = Arc<dyn Fn(SipChannel) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Apps by the number that reaches them.
pub type Apps = HashMap<String, AppFn>;

/// Wraps an async function as an [`AppFn`].
pub fn app<F, Fut>(f: F) -> AppFn
where
    F: Fn(SipChannel) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Arc::new(move |ch| Box::pin(f(ch)))
}

/// The sound files apps play: where they are and the decoded ones kept in memory.
pub struct SoundLibrary {
    dir: PathBuf,
    cache: Mutex<PromptCache>,
}

impl SoundLibrary {
    /// Sounds under `dir`, up to `cache_bytes` of decoded audio kept.
    pub fn new(dir: impl Into<PathBuf>, cache_bytes: usize) -> SoundLibrary {
        SoundLibrary {
            dir: dir.into(),
            cache: Mutex::new(PromptCache::new(cache_bytes)),
        }
    }

    /// Where sound `name` is: under the sounds folder unless absolute; a name without an
    /// extension is the `.wav` or else the `.flac` of that name (the shipped set is FLAC,
    /// a recorded replacement may be WAV), so dialplans name prompts, not files.
    pub fn resolve(&self, name: &Path) -> PathBuf {
        let path = if name.is_absolute() {
            name.to_path_buf()
        } else {
            self.dir.join(name)
        };
        if path.extension().is_some() || path.is_file() {
            return path;
        }
        ["wav", "flac"]
            .iter()
            .map(|ext| path.with_extension(ext))
            .find(|p| p.is_file())
            .unwrap_or(path)
    }

    /// Decodes (or finds in the cache) every file of `sounds` at `rate`. Blocking: call
    /// it off the async threads.
    fn items(&self, sounds: &[Sound], rate: u32) -> Result<Vec<Item>, ChannelError> {
        sounds
            .iter()
            .map(|s| match s {
                Sound::Silence(ms) => Ok(Item::Silence { ms: *ms }),
                Sound::File(p) => {
                    let path = self.resolve(p);
                    let mut cache = self.cache.lock().map_err(|_| ChannelError::MediaGone)?;
                    cache
                        .get(&path, rate)
                        .map(Item::Sound)
                        .map_err(|e| ChannelError::Sound {
                            path,
                            reason: e.to_string(),
                        })
                }
            })
            .collect()
    }
}

/// What the app asks of its call task.
enum Request {
    Ring,
    Answer(oneshot::Sender<Result<(), ChannelError>>),
    /// Hang up; a call not answered yet gets this status.
    Hangup(u16),
    Play {
        id: u64,
        items: Vec<Item>,
        opts: PlayOptions,
    },
    StopPlay,
    Record {
        id: u64,
        recorder: Recorder,
        limits: RecordLimits,
    },
    StopRecord,
    Link(Option<Box<dyn MediaLink>>),
    /// Give the caller (not answered) to the B2BUA for a dial.
    Dial {
        numbers: Vec<String>,
        timeout: std::time::Duration,
        fallback: super::Fallback,
        done: oneshot::Sender<Result<(), ChannelError>>,
    },
}

/// What the call task tells the app.
enum Event {
    Media(EndpointEvent),
    HungUp,
}

/// The [`Channel`] of a call answered by an app, over SIP and a media endpoint.
pub struct SipChannel {
    info: CallInfo,
    requests: mpsc::UnboundedSender<Request>,
    events: mpsc::UnboundedReceiver<Event>,
    digits: VecDeque<Digit>,
    sounds: Arc<SoundLibrary>,
    rooms: Arc<Rooms>,
    rate: u32,
    next_id: u64,
    hung_up: bool,
}

/// Stops an operation's media when its future is dropped before it ended.
struct StopOnDrop {
    requests: mpsc::UnboundedSender<Request>,
    stop: Option<Request>,
}

impl StopOnDrop {
    fn done(mut self) {
        self.stop = None;
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = self.requests.send(stop);
        }
    }
}

impl SipChannel {
    fn send(&self, r: Request) -> Result<(), ChannelError> {
        if self.hung_up {
            return Err(ChannelError::HungUp);
        }
        self.requests.send(r).map_err(|_| ChannelError::HungUp)
    }

    /// The next event; digits go to the buffer and are returned too.
    async fn next(&mut self) -> Result<EndpointEvent, ChannelError> {
        if self.hung_up {
            return Err(ChannelError::HungUp);
        }
        match self.events.recv().await {
            Some(Event::Media(ev)) => {
                if let EndpointEvent::Digit { digit, .. } = ev {
                    self.digits.push_back(digit);
                }
                Ok(ev)
            }
            Some(Event::HungUp) | None => {
                self.hung_up = true;
                Err(ChannelError::HungUp)
            }
        }
    }

    /// After the hang-up: the end of recording `id`, which the endpoint reports as soon
    /// as it has closed the file.
    async fn recording_after_hangup(
        &mut self,
        id: u64,
        path: PathBuf,
    ) -> Result<Recorded, ChannelError> {
        let wait = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while let Some(ev) = self.events.recv().await {
                if let Event::Media(EndpointEvent::RecordDone {
                    id: done,
                    end,
                    duration,
                }) = ev
                {
                    if done == id {
                        return Some((end, duration));
                    }
                }
            }
            None
        });
        match wait.await {
            Ok(Some((end, duration))) => Ok(Recorded {
                path,
                duration,
                end,
            }),
            _ => Err(ChannelError::HungUp),
        }
    }

    /// Takes the events that came while the app was not listening (a hang-up, keys),
    /// so an operation that does not wait on events still sees a hang-up.
    fn take_pending_events(&mut self) {
        while let Ok(ev) = self.events.try_recv() {
            match ev {
                Event::Media(EndpointEvent::Digit { digit, .. }) => self.digits.push_back(digit),
                Event::Media(_) => {}
                Event::HungUp => self.hung_up = true,
            }
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Hands the caller, not answered yet, to the B2BUA to ring `numbers` at once for
    /// `timeout`: the relay's fast path, early media and re-INVITEs between the phones,
    /// as for any call between extensions. The channel is over for this app then; if
    /// nobody answers, `fallback` names the app that gets the caller back. An answered
    /// caller cannot be handed over (`ChannelError::MediaGone`).
    pub async fn dial(
        &mut self,
        numbers: Vec<String>,
        timeout: std::time::Duration,
        fallback: super::Fallback,
    ) -> Result<(), ChannelError> {
        self.take_pending_events();
        let (done, answer) = oneshot::channel();
        self.send(Request::Dial {
            numbers,
            timeout,
            fallback,
            done,
        })?;
        let r = answer.await.map_err(|_| ChannelError::HungUp)?;
        if r.is_ok() {
            self.hung_up = true;
        }
        r
    }
}

impl Channel for SipChannel {
    fn info(&self) -> &CallInfo {
        &self.info
    }

    async fn ring(&mut self) -> Result<(), ChannelError> {
        self.take_pending_events();
        self.send(Request::Ring)
    }

    async fn answer(&mut self) -> Result<(), ChannelError> {
        self.take_pending_events();
        let (tx, rx) = oneshot::channel();
        self.send(Request::Answer(tx))?;
        rx.await.map_err(|_| ChannelError::HungUp)?
    }

    async fn play(&mut self, sounds: &[Sound], opts: PlayOptions) -> Result<PlayEnd, ChannelError> {
        self.take_pending_events();
        if self.hung_up {
            return Err(ChannelError::HungUp);
        }
        let library = self.sounds.clone();
        let list = sounds.to_vec();
        let rate = self.rate;
        let items = tokio::task::spawn_blocking(move || library.items(&list, rate))
            .await
            .map_err(|_| ChannelError::MediaGone)??;
        let id = self.id();
        self.send(Request::Play { id, items, opts })?;
        let guard = StopOnDrop {
            requests: self.requests.clone(),
            stop: Some(Request::StopPlay),
        };
        loop {
            let ev = self.next().await;
            match ev {
                Ok(EndpointEvent::PlayDone { id: done, end }) if done == id => {
                    guard.done();
                    return Ok(end);
                }
                Ok(_) => {}
                Err(e) => {
                    guard.done();
                    return Err(e);
                }
            }
        }
    }

    async fn record(
        &mut self,
        path: PathBuf,
        limits: RecordLimits,
    ) -> Result<Recorded, ChannelError> {
        self.take_pending_events();
        if self.hung_up {
            return Err(ChannelError::HungUp);
        }
        let rate = self.rate;
        let p = path.clone();
        let recorder = tokio::task::spawn_blocking(move || create_recording(&p, rate))
            .await
            .map_err(|_| ChannelError::MediaGone)??;
        let id = self.id();
        self.send(Request::Record {
            id,
            recorder,
            limits,
        })?;
        let guard = StopOnDrop {
            requests: self.requests.clone(),
            stop: Some(Request::StopRecord),
        };
        loop {
            match self.next().await {
                Ok(EndpointEvent::RecordDone {
                    id: done,
                    end,
                    duration,
                }) if done == id => {
                    guard.done();
                    return Ok(Recorded {
                        path,
                        duration,
                        end,
                    });
                }
                Ok(_) => {}
                // A hang-up is how a message usually ends: the endpoint closes the file
                // at once and reports it; the recording is the result, not an error.
                Err(ChannelError::HungUp) => {
                    guard.done();
                    return self.recording_after_hangup(id, path).await;
                }
                Err(e) => {
                    guard.done();
                    return Err(e);
                }
            }
        }
    }

    async fn collect_digits(&mut self, opts: CollectOptions) -> Result<Collected, ChannelError> {
        self.take_pending_events();
        let mut got = String::new();
        if let Some(done) = collect_from(&mut self.digits, &mut got, &opts) {
            return Ok(done);
        }
        if self.hung_up {
            return Err(ChannelError::HungUp);
        }
        loop {
            let wait = if got.is_empty() {
                opts.first_timeout
            } else {
                opts.inter_digit_timeout
            };
            let deadline = Instant::now() + wait;
            loop {
                match tokio::time::timeout_at(deadline, self.next()).await {
                    Err(_) => {
                        return Ok(Collected {
                            digits: got,
                            end: CollectEnd::Timeout,
                        })
                    }
                    Ok(Err(e)) => return Err(e),
                    Ok(Ok(EndpointEvent::Digit { .. })) => break,
                    Ok(Ok(_)) => {}
                }
            }
            // `next` put the digit in the buffer.
            while let Some(d) = self.digits.pop_front() {
                if let Some(end) = take_digit(d, &mut got, &opts) {
                    return Ok(Collected { digits: got, end });
                }
            }
        }
    }

    async fn join_conference(
        &mut self,
        room: &str,
        opts: ConferenceOptions,
    ) -> Result<ConferenceEnd, ChannelError> {
        self.take_pending_events();
        if self.hung_up {
            return Err(ChannelError::HungUp);
        }
        let member = MemberOptions {
            muted: opts.muted,
            deaf: opts.deaf,
        };
        let link = self
            .rooms
            .join(room, self.rate, member)
            .await
            .map_err(|e| ChannelError::Conference {
                room: room.to_owned(),
                reason: e.to_string(),
            })?;
        self.send(Request::Link(Some(Box::new(link))))?;
        let guard = StopOnDrop {
            requests: self.requests.clone(),
            stop: Some(Request::Link(None)),
        };
        loop {
            match self.next().await {
                Ok(EndpointEvent::Digit { digit, .. }) if opts.leave_keys.contains(&digit) => {
                    // Consumed: `next` buffered it last.
                    self.digits.pop_back();
                    drop(guard);
                    return Ok(ConferenceEnd::Key(digit));
                }
                Ok(_) => {}
                Err(e) => {
                    guard.done();
                    return Err(e);
                }
            }
        }
    }

    fn flush_digits(&mut self) {
        // A hang-up among the pending events is kept (it only sets the flag).
        self.take_pending_events();
        self.digits.clear();
    }

    async fn hangup(&mut self) -> Result<(), ChannelError> {
        let r = self.send(Request::Hangup(480));
        self.hung_up = true;
        r
    }

    async fn refuse(&mut self, status: u16) -> Result<(), ChannelError> {
        let r = self.send(Request::Hangup(status));
        self.hung_up = true;
        r
    }
}

fn create_recording(path: &Path, rate: u32) -> Result<Recorder, ChannelError> {
    let err = |reason: String| ChannelError::Recording {
        path: path.to_owned(),
        reason,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    }
    Recorder::create(path, Layout::Mixed, rate).map_err(|e| err(e.to_string()))
}

/// Everything an app call task needs.
pub struct AppTaskParams {
    pub call: CallRef,
    /// The call's id in the store and the CDR.
    pub id: String,
    pub caller: String,
    pub dialled: String,
    pub leg: AppLegParams,
    pub settings: CallSettings,
    pub sockets: LegSockets,
    pub endpoint: EndpointConfig,
    pub app: AppFn,
    pub sounds: Arc<SoundLibrary>,
    pub rooms: Arc<Rooms>,
    pub log: CallLog,
    pub node_id: String,
    pub core: mpsc::Sender<CoreCommand>,
    /// The call's record when a dial nobody answered hands the caller over; `None`
    /// starts one.
    pub record: Option<Record>,
}

/// Starts the task of a call answered by an app; returns where the core sends its SIP
/// events.
pub fn spawn_app_call(p: AppTaskParams) -> CallHandle {
    let (tx, rx) = mpsc::channel(CALL_QUEUE);
    let span = info_span!(
        "call",
        id = %p.id,
        caller_call_id = %p.leg.invite.headers.get(&crate::sip::message::HeaderName::CallId).unwrap_or_default(),
        caller = %p.caller,
        app = %p.dialled,
    );
    tokio::spawn(run(p, rx).instrument(span));
    tx
}

async fn run(p: AppTaskParams, mut inputs: mpsc::Receiver<super::SipIn>) {
    let call_ref = p.call;
    let core = p.core;
    let key = p.leg.key.clone();
    let invite = p.leg.invite.clone();
    let caller_call_id = invite
        .headers
        .get(&crate::sip::message::HeaderName::CallId)
        .unwrap_or_default()
        .to_owned();
    // One leg only: both Call-IDs name it.
    let mut rec = match p.record {
        Some(r) => r,
        None => Record::new(
            p.id.clone(),
            [p.caller.clone(), p.dialled.clone()],
            [caller_call_id.clone(), caller_call_id],
            p.node_id,
        ),
    };
    // What the caller's leg is handed to the B2BUA with (a dial).
    let handover = (
        p.leg.from,
        p.leg.offer.clone(),
        p.caller.clone(),
        p.dialled.clone(),
    );
    let log = p.log;
    let refuse = |status: u16| {
        let mut resp = crate::sip::message::Response::for_request(
            &invite,
            status,
            crate::sip::message::reason_phrase(status),
        );
        resp.ensure_to_tag(&format!("{:08x}", rand::random::<u32>()));
        CoreCommand::Sip {
            call: call_ref,
            cmd: Command::Respond {
                key: key.clone(),
                resp,
            },
        }
    };
    let started =
        AppLeg::new(p.leg, &p.settings, Instant::now().into_std()).and_then(|(leg, out)| {
            let ep = EndpointHandle::spawn(p.sockets, leg.format(), Default::default(), p.endpoint)
                .map_err(|e| super::CallError::BadOffer(e.to_string()))?;
            Ok((leg, out, ep))
        });
    let (mut leg, outs, mut endpoint) = match started {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "app call refused");
            let status = match e {
                super::CallError::BadOffer(_) => 503,
                e => e.status(),
            };
            let _ = core.send(refuse(status)).await;
            let _ = core.send(CoreCommand::Done { call: call_ref }).await;
            return;
        }
    };
    rec.started(&log);
    let (req_tx, mut requests) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let channel = SipChannel {
        info: CallInfo {
            id: rec.id.clone(),
            caller: rec.caller.clone(),
            dialled: rec.callee.clone(),
        },
        requests: req_tx,
        events: ev_rx,
        digits: VecDeque::new(),
        sounds: p.sounds,
        rooms: p.rooms,
        rate: endpoint.rate(),
        next_id: 0,
        hung_up: false,
    };
    let app_task = tokio::spawn((p.app)(channel).in_current_span());
    let mut answer_waiting: Option<oneshot::Sender<Result<(), ChannelError>>> = None;
    let mut app_alive = true;
    let mut told_hangup = false;
    let mut media_alive = true;
    apply(outs, call_ref, &core, &endpoint, &log, &mut rec).await;
    loop {
        let now = Instant::now().into_std();
        if leg.is_ended() && !told_hangup {
            told_hangup = true;
            // The message being recorded is complete now, not when the task ends.
            endpoint.hung_up();
            let _ = ev_tx.send(Event::HungUp);
            if let Some(w) = answer_waiting.take() {
                let _ = w.send(Err(ChannelError::HungUp));
            }
        }
        if leg.is_finished(now) {
            break;
        }
        let deadline = leg.next_deadline();
        let outs = tokio::select! {
            m = inputs.recv() => match m {
                Some(input) => leg.on_sip(input, Instant::now().into_std()),
                None => break,
            },
            _ = sleep_until(deadline) => leg.on_timer(Instant::now().into_std()),
            r = requests.recv(), if app_alive => match r {
                Some(Request::Ring) => leg.ring(Instant::now().into_std()),
                Some(Request::Answer(done)) => {
                    let out = leg.answer(Instant::now().into_std());
                    if leg.is_answered() {
                        let _ = done.send(Ok(()));
                    } else if leg.is_ended() {
                        // Cancelled or gone while the app was busy elsewhere.
                        let _ = done.send(Err(ChannelError::HungUp));
                    } else {
                        answer_waiting = Some(done);
                    }
                    out
                }
                Some(Request::Hangup(status)) => leg.hangup(status, Instant::now().into_std()),
                Some(Request::Play { id, items, opts }) => {
                    endpoint.play(id, items, opts.looping, opts.barge_in);
                    Vec::new()
                }
                Some(Request::StopPlay) => { endpoint.stop_play(); Vec::new() }
                Some(Request::Record { id, recorder, limits }) => {
                    endpoint.record(id, recorder, limits);
                    Vec::new()
                }
                Some(Request::StopRecord) => { endpoint.stop_record(); Vec::new() }
                Some(Request::Link(link)) => { endpoint.link(link); Vec::new() }
                Some(Request::Dial { numbers, timeout, fallback, done }) => {
                    match leg.hand_over(Instant::now().into_std()) {
                        Some(dialog) => {
                            let (from, offer, caller, dialled) = handover.clone();
                            let moved = std::mem::replace(
                                &mut rec,
                                Record::new(String::new(), Default::default(), Default::default(), String::new()),
                            );
                            rec.written = true;
                            let caller_leg = super::CallerLeg {
                                key: key.clone(),
                                invite: invite.clone(),
                                from,
                                offer,
                                caller,
                                dialled,
                                dialog: Some(dialog),
                                record: Some(moved),
                            };
                            let _ = core
                                .send(CoreCommand::Dial {
                                    leg: Box::new(caller_leg),
                                    numbers,
                                    timeout,
                                    fallback,
                                })
                                .await;
                            let _ = done.send(Ok(()));
                            // The app is done with this call; nothing to tell it.
                            told_hangup = true;
                        }
                        None => {
                            let _ = done.send(Err(ChannelError::MediaGone));
                        }
                    }
                    Vec::new()
                }
                None => {
                    // The app is done without hanging up: the call ends with it.
                    app_alive = false;
                    debug!("app finished");
                    leg.hangup(480, Instant::now().into_std())
                }
            },
            ev = endpoint.next_event(), if media_alive => match ev {
                Some(EndpointTaskEvent::Media(ev)) => {
                    let _ = ev_tx.send(Event::Media(ev));
                    Vec::new()
                }
                Some(EndpointTaskEvent::MediaTimeout { idle }) => {
                    debug!(?idle, "media timeout");
                    leg.on_media_timeout(Instant::now().into_std())
                }
                None => { media_alive = false; Vec::new() }
            },
        };
        apply(outs, call_ref, &core, &endpoint, &log, &mut rec).await;
    }
    if !rec.written {
        write_cdr(&log, &mut rec, Disposition::Failed, HangupLeg::System);
    }
    drop(ev_tx);
    endpoint.close().await;
    // The app saw the hang-up; it gets a moment to finish its own work (saving a
    // message), then it is stopped.
    if tokio::time::timeout(std::time::Duration::from_secs(10), app_task)
        .await
        .is_err()
    {
        warn!("app did not end after the call: stopped");
    }
    let _ = core.send(CoreCommand::Done { call: call_ref }).await;
}

/// Carries out what the leg decided.
async fn apply(
    outs: Vec<AppOut>,
    call: CallRef,
    core: &mpsc::Sender<CoreCommand>,
    endpoint: &EndpointHandle,
    log: &CallLog,
    rec: &mut Record,
) {
    for out in outs {
        match out {
            AppOut::Sip(cmd) => {
                let _ = core.send(CoreCommand::Sip { call, cmd }).await;
            }
            AppOut::Remote(r) => endpoint.set_remote(r),
            AppOut::Hold(on) => endpoint.set_sending(!on),
            AppOut::Digit(d) => endpoint.digit(d),
            AppOut::Answered => rec.answered(log),
            AppOut::Ended {
                disposition,
                hangup,
            } => write_cdr(log, rec, disposition, hangup),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sound_names_find_the_shipped_files_with_or_without_extension() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sounds");
        let lib = SoundLibrary::new(&dir, 1 << 20);
        assert_eq!(
            lib.resolve(Path::new("vm/you-have")),
            dir.join("vm/you-have.flac")
        );
        assert_eq!(lib.resolve(Path::new("beep")), dir.join("beep.wav"));
        assert_eq!(lib.resolve(Path::new("beep.flac")), dir.join("beep.flac"));
        // Not there: the name as given, so the error names what was asked for.
        assert_eq!(lib.resolve(Path::new("nope")), dir.join("nope"));
        // Every shipped prompt decodes at a leg's rates.
        let items = lib
            .items(
                &[
                    Sound::file("welcome"),
                    Sound::file("digits/7"),
                    Sound::file("moh/default"),
                ],
                8000,
            )
            .expect("decoded");
        assert_eq!(items.len(), 3);
    }

    #[test]
    fn every_shipped_sound_decodes() {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).expect("sounds dir").flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "flac" || x == "wav") {
                    out.push(p);
                }
            }
        }
        let mut files = Vec::new();
        walk(
            &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sounds"),
            &mut files,
        );
        assert!(files.len() > 100, "{} sound files", files.len());
        for f in files {
            let d = crate::media::player::decode_file(&f)
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            assert!(!d.samples.is_empty() && d.rate >= 8000, "{}", f.display());
        }
    }
}
