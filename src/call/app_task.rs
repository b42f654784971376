//! Calls answered by apps: the tokio task around one [`AppLeg`] and its media endpoint,
//! and [`SipChannel`], the [`Channel`] an app drives it through.
//!
//! Owns: routing SIP events to the leg, the leg's decisions to the core and the endpoint,
//! the endpoint's events (key presses, ends of playback and recording) to the app, the
//! call's rows in the store, and an app's bridge: the dialled [`OutLeg`] (SIP routed to it
//! by Call-ID), its own endpoint linked to the caller's, ringback, keys across, the end
//! reported to the app. Must not: decide what the app does; the app runs in a task of its
//! own and only talks to this one through the channel.
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
use tracing::{debug, info, info_span, warn, Instrument};

use crate::media::bridge::{link_pair, ringback};
use crate::media::conference::{MemberOptions, Rooms};
use crate::media::dtmf::Digit;
use crate::media::endpoint::{EndpointEvent, MediaLink, PlayEnd, RecordLimits};
use crate::media::endpoint_task::{EndpointConfig, EndpointHandle, EndpointTaskEvent};
use crate::media::player::{Item, PromptCache};
use crate::media::recorder::{Layout, Recorder};
use crate::media::transcode::LegFormat;
use crate::media::{LegSockets, PortAllocator};

use super::app_leg::{AppLeg, AppLegParams, AppOut};
use super::channel::{
    collect_from, take_digit, BridgeEnd, BridgeOptions, BridgeRequest, BridgeSide, CallInfo,
    Channel, ChannelError, CollectEnd, CollectOptions, Collected, ConferenceEnd, ConferenceOptions,
    PlayOptions, Recorded, Sound,
};
use super::machine::{CallSettings, Command, Disposition, HangupLeg, SipIn, Target};
use super::out_leg::{DialOutcome, OutEvent, OutLeg, OutLegParams, OutLegSettings};
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
    Bridge {
        dial: BridgeRequest,
        opts: BridgeOptions,
    },
    StopBridge,
}

/// What the call task tells the app.
enum Event {
    Media(EndpointEvent),
    /// The bridge the app asked for ended.
    BridgeDone(BridgeEnd),
    HungUp,
}

/// What the app waits on: an event of its endpoint or the end of its bridge.
enum Got {
    Media(EndpointEvent),
    Bridge(BridgeEnd),
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
        loop {
            // The end of a bridge nobody waits for any more (its future was dropped).
            if let Got::Media(ev) = self.next_any().await? {
                return Ok(ev);
            }
        }
    }

    async fn next_any(&mut self) -> Result<Got, ChannelError> {
        if self.hung_up {
            return Err(ChannelError::HungUp);
        }
        match self.events.recv().await {
            Some(Event::Media(ev)) => {
                if let EndpointEvent::Digit { digit, .. } = ev {
                    self.digits.push_back(digit);
                }
                Ok(Got::Media(ev))
            }
            Some(Event::BridgeDone(end)) => Ok(Got::Bridge(end)),
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
                Event::Media(_) | Event::BridgeDone(_) => {}
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
        // A key pressed before the prompt began (the endpoint only barges in on keys
        // during playback) is an answer to it already.
        if let (true, Some(d)) = (opts.barge_in, self.digits.front()) {
            return Ok(PlayEnd::BargeIn(*d));
        }
        let library = self.sounds.clone();
        let list = sounds.to_vec();
        let rate = self.rate;
        let items = tokio::task::spawn_blocking(move || library.items(&list, rate))
            .await
            .map_err(|_| ChannelError::MediaGone)??;
        // Keys pressed while the sounds were read count as well.
        self.take_pending_events();
        if let (true, Some(d)) = (opts.barge_in, self.digits.front()) {
            return Ok(PlayEnd::BargeIn(*d));
        }
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
                // A key the endpoint saw before it started this playlist (so it did not
                // stop it itself): the guard stops it.
                Ok(EndpointEvent::Digit { digit, .. }) if opts.barge_in => {
                    return Ok(PlayEnd::BargeIn(digit));
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
            .join(room, self.rate, member, opts.announce)
            .await
            .map_err(|e| ChannelError::Conference {
                room: room.to_owned(),
                reason: e.to_string(),
            })?;
        let controls = link.controls();
        let mut others_muted = false;
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
                Ok(EndpointEvent::Digit { digit, .. })
                    if opts.moderator && digit == super::channel::MODERATOR_MUTE_KEY =>
                {
                    self.digits.pop_back();
                    others_muted = !others_muted;
                    controls.mute_others(others_muted);
                }
                Ok(_) => {}
                Err(e) => {
                    guard.done();
                    return Err(e);
                }
            }
        }
    }

    async fn bridge(
        &mut self,
        dial: BridgeRequest,
        opts: BridgeOptions,
    ) -> Result<BridgeEnd, ChannelError> {
        self.take_pending_events();
        self.send(Request::Bridge { dial, opts })?;
        let guard = StopOnDrop {
            requests: self.requests.clone(),
            stop: Some(Request::StopBridge),
        };
        loop {
            match self.next_any().await {
                Ok(Got::Bridge(end)) => {
                    guard.done();
                    return Ok(end);
                }
                Ok(Got::Media(_)) => {}
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

/// A new leg ringing extensions `numbers`: the Call-ID it must use (one the core routes to
/// the asking call) and its forks, as the node's registrar knows them now: one [`Target`]
/// per registered contact this node reaches, one per other node that reaches some (none:
/// not registered, or unknown).
pub type TargetResolver = Arc<dyn Fn(&[String]) -> (String, Vec<Target>) + Send + Sync>;

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
    /// Media ports for the legs a bridge dials.
    pub ports: PortAllocator,
    /// Extension numbers to phones, for bridges.
    pub resolver: TargetResolver,
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

/// The playback id of the ringback tone (apps count theirs up from 1).
const RINGBACK_ID: u64 = u64::MAX;
/// How long a key press passed on to a phone lasts.
const KEY_MS: u32 = 100;

/// A leg dialled for [`Channel::bridge`] and its media.
struct Bridge {
    leg: OutLeg,
    /// The outbound endpoint's ports until the answer says which codec it speaks.
    sockets: Option<LegSockets>,
    endpoint: Option<EndpointHandle>,
    ringback: bool,
    /// The ringback tone plays to the caller.
    tone: bool,
}

/// What the task of one app call holds besides its inputs.
struct AppCall {
    call: CallRef,
    core: mpsc::Sender<CoreCommand>,
    leg: AppLeg,
    endpoint: EndpointHandle,
    log: CallLog,
    rec: Record,
    events: mpsc::UnboundedSender<Event>,
    answer_waiting: Option<oneshot::Sender<Result<(), ChannelError>>>,
    /// The bridge in progress, and dialled legs still finishing (CANCELs waiting for
    /// their 487, a late 2xx to hang up).
    bridge: Option<Bridge>,
    retired: Vec<OutLeg>,
    ports: PortAllocator,
    resolver: TargetResolver,
    endpoint_config: EndpointConfig,
    out_settings: OutLegSettings,
    media_ip: std::net::IpAddr,
    /// The caller's display name, for the From of dialled legs.
    caller_name: String,
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// The Call-ID a SIP input belongs to (None: a CANCEL or a timeout, which name a
/// transaction only).
fn call_id_of(input: &SipIn) -> Option<&str> {
    let headers = match input {
        SipIn::Request { req, .. } | SipIn::Ack(req) => &req.headers,
        SipIn::Response { resp, .. } => &resp.headers,
        SipIn::Cancel(_) | SipIn::Timeout(_) | SipIn::Unsent(_) => return None,
    };
    headers.get(&crate::sip::message::HeaderName::CallId)
}

impl AppCall {
    /// Carries out what the caller's leg decided.
    async fn apply(&mut self, outs: Vec<AppOut>) {
        for out in outs {
            match out {
                AppOut::Sip(cmd) => {
                    self.to_core(cmd).await;
                }
                AppOut::Remote(r) => self.endpoint.set_remote(r),
                AppOut::Hold(on) => self.endpoint.set_sending(!on),
                AppOut::Digit(d) => self.endpoint.digit(d),
                AppOut::Answered => self.rec.answered(&self.log),
                AppOut::Ended {
                    disposition,
                    hangup,
                } => write_cdr(&self.log, &mut self.rec, disposition, hangup),
            }
        }
    }

    /// A SIP input: to the dialled leg whose Call-ID it names, else the caller's leg.
    /// Timeouts name a transaction only: every leg looks (only its owner knows it).
    async fn on_sip(&mut self, input: SipIn) {
        let now = now();
        if let SipIn::Timeout(_) | SipIn::Unsent(_) = input {
            let outs = self.leg.on_sip(input.clone(), now);
            self.apply(outs).await;
            for old in &mut self.retired {
                let _ = old.on_sip(input.clone(), now);
            }
            if let Some(b) = &mut self.bridge {
                let outs = b.leg.on_sip(input, now);
                self.apply_out(outs).await;
            }
            return;
        }
        let call_id = call_id_of(&input).map(str::to_owned);
        if let Some(id) = call_id.as_deref() {
            if let Some(b) = self.bridge.as_mut().filter(|b| b.leg.call_id() == id) {
                let outs = b.leg.on_sip(input, now);
                return self.apply_out(outs).await;
            }
            if let Some(i) = self.retired.iter().position(|l| l.call_id() == id) {
                let outs = self.retired[i].on_sip(input, now);
                return self.send_sip(outs).await;
            }
        }
        let outs = self.leg.on_sip(input, now);
        self.apply(outs).await;
    }

    async fn on_timer(&mut self) {
        let now = now();
        let outs = self.leg.on_timer(now);
        self.apply(outs).await;
        let mut outs = Vec::new();
        for old in &mut self.retired {
            outs.extend(old.on_timer(now));
        }
        self.retired.retain(|l| !l.is_finished(now));
        self.send_sip(outs).await;
        if let Some(b) = &mut self.bridge {
            let outs = b.leg.on_timer(now);
            self.apply_out(outs).await;
        }
    }

    fn next_deadline(&self) -> Option<std::time::Instant> {
        let legs = self
            .retired
            .iter()
            .chain(self.bridge.as_ref().map(|b| &b.leg));
        legs.filter_map(OutLeg::next_deadline)
            .chain(self.leg.next_deadline())
            .min()
    }

    /// The caller's leg is over and no dialled leg has anything left to finish.
    fn is_finished(&self, now: std::time::Instant) -> bool {
        self.leg.is_finished(now)
            && self.bridge.is_none()
            && self.retired.iter().all(|l| l.is_finished(now))
    }

    /// Hands a leg's SIP command to the core (the transaction layer's owner).
    async fn to_core(&self, cmd: Command) {
        let _ = self
            .core
            .send(CoreCommand::Sip {
                call: self.call,
                cmd,
            })
            .await;
    }

    /// Only the SIP of a dialled leg that no longer bridges anything.
    async fn send_sip(&mut self, outs: Vec<OutEvent>) {
        for out in outs {
            if let OutEvent::Sip(cmd) = out {
                self.to_core(cmd).await;
            }
        }
    }

    /// Starts a bridge: resolves the numbers, dials every phone. Reports at once when
    /// nothing can ring.
    async fn start_bridge(&mut self, dial: BridgeRequest, opts: BridgeOptions) {
        self.stop_bridge().await;
        // The resolver names the leg's Call-ID: one the core routes to this call.
        let (call_id, targets): (String, Vec<Target>) = (self.resolver)(&dial.numbers);
        if targets.is_empty() || self.leg.is_ended() {
            info!(numbers = ?dial.numbers, "bridge: nobody to ring");
            return self.report(BridgeEnd::Unavailable);
        }
        let sockets = match self.ports.allocate() {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "bridge: no media ports");
                return self.report(BridgeEnd::Unavailable);
            }
        };
        // The host we name ourselves by towards the phones (the Contact's).
        let domain = targets
            .first()
            .and_then(|t| crate::sip::message::SipUri::parse(&t.local_contact).ok())
            .map(|u| u.host)
            .unwrap_or_else(|| self.media_ip.to_string());
        let caller = &self.rec.caller;
        let name = self.caller_name.replace(['"', '\\', '\r', '\n'], "");
        let from = if name.is_empty() {
            format!("<sip:{caller}@{domain}>")
        } else {
            format!("\"{name}\" <sip:{caller}@{domain}>")
        };
        let first = dial.numbers.first().cloned().unwrap_or_default();
        let params = OutLegParams {
            targets,
            from,
            to: format!("<sip:{first}@{domain}>"),
            call_id: call_id.clone(),
            first: self.leg.format(),
            media_ip: self.media_ip,
            media_port: sockets.rtp_addr().port(),
            ring_timeout: opts.ring_timeout,
            seed: rand::random(),
        };
        let (leg, outs) = match OutLeg::new(params, &self.out_settings, now()) {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "bridge: cannot dial");
                return self.report(BridgeEnd::Unavailable);
            }
        };
        info!(numbers = ?dial.numbers, %call_id, "bridge: dialling");
        // The core must route the leg's in-dialog requests here before any can come.
        let _ = self
            .core
            .send(CoreCommand::Adopt {
                call: self.call,
                call_id,
            })
            .await;
        self.bridge = Some(Bridge {
            leg,
            sockets: Some(sockets),
            endpoint: None,
            ringback: opts.ringback,
            tone: false,
        });
        self.apply_out(outs).await;
    }

    /// The app left the bridge (its future was dropped): hang the dialled leg up.
    async fn stop_bridge(&mut self) {
        let Some(mut b) = self.bridge.take() else {
            return;
        };
        let outs = b.leg.hangup(now());
        self.unbridge(&mut b);
        self.send_sip(outs).await;
        self.retired.push(b.leg);
    }

    /// Takes the media of a bridge apart (the caller's endpoint back to itself).
    fn unbridge(&mut self, b: &mut Bridge) {
        if b.tone {
            b.tone = false;
            self.endpoint.stop_play();
        }
        if b.endpoint.take().is_some() {
            self.endpoint.link(None);
        }
        b.sockets = None;
    }

    /// Ends the bridge in progress and tells the app how.
    async fn finish_bridge(&mut self, end: BridgeEnd) {
        if let Some(mut b) = self.bridge.take() {
            self.unbridge(&mut b);
            self.retired.push(b.leg);
        }
        self.report(end);
    }

    fn report(&self, end: BridgeEnd) {
        info!(?end, "bridge ended");
        let _ = self.events.send(Event::BridgeDone(end));
    }

    /// Carries out what the dialled leg decided.
    async fn apply_out(&mut self, outs: Vec<OutEvent>) {
        for out in outs {
            match out {
                OutEvent::Sip(cmd) => {
                    self.to_core(cmd).await;
                }
                OutEvent::Ringing => self.ringback().await,
                OutEvent::Answered { remote, format } => self.bridged(remote, format).await,
                OutEvent::Failed { outcome, status } => {
                    debug!(status, "bridge: dial failed");
                    let end = match outcome {
                        DialOutcome::Busy => BridgeEnd::Busy,
                        DialOutcome::NoAnswer => BridgeEnd::NoAnswer,
                        DialOutcome::Unavailable => BridgeEnd::Unavailable,
                    };
                    self.finish_bridge(end).await;
                }
                OutEvent::Remote(r) => {
                    if let Some(ep) = self.bridge.as_ref().and_then(|b| b.endpoint.as_ref()) {
                        ep.set_remote(r);
                    }
                }
                OutEvent::Hold(on) => {
                    if let Some(ep) = self.bridge.as_ref().and_then(|b| b.endpoint.as_ref()) {
                        ep.set_sending(!on);
                    }
                }
                OutEvent::Digit(d) => self.key_to_caller(d),
                OutEvent::Ended { hangup } => {
                    debug!(?hangup, "bridge: callee leg ended");
                    self.finish_bridge(BridgeEnd::Answered {
                        hangup_by: BridgeSide::Callee,
                    })
                    .await;
                }
            }
        }
    }

    /// The callee's phone rings: so does the caller's (180), or, answered already, it
    /// hears the ringback tone.
    async fn ringback(&mut self) {
        let Some(b) = self.bridge.as_mut().filter(|b| b.ringback) else {
            return;
        };
        if !self.leg.is_answered() {
            let outs = self.leg.ring(now());
            self.apply(outs).await;
        } else if !b.tone {
            b.tone = true;
            self.endpoint
                .play(RINGBACK_ID, ringback(self.endpoint.rate()), true, false);
        }
    }

    /// The callee answered: its endpoint starts, the two are linked, and the caller is
    /// answered if it was not yet.
    async fn bridged(&mut self, remote: crate::media::Remote, format: LegFormat) {
        let Some(b) = self.bridge.as_mut() else {
            return;
        };
        let started = b.sockets.take().map(|s| {
            EndpointHandle::spawn(s, format, remote, self.endpoint_config)
                .map_err(|e| e.to_string())
                .and_then(|ep| {
                    let (a, c) =
                        link_pair(self.endpoint.rate(), ep.rate()).map_err(|e| e.to_string())?;
                    Ok((ep, a, c))
                })
        });
        let (ep, to_caller, to_callee) = match started {
            Some(Ok(s)) => s,
            other => {
                warn!(error = ?other.and_then(Result::err), "bridge: no media for the answered leg");
                let outs = b.leg.hangup(now());
                self.send_sip(outs).await;
                return self.finish_bridge(BridgeEnd::Unavailable).await;
            }
        };
        if b.tone {
            b.tone = false;
            self.endpoint.stop_play();
        }
        self.endpoint.link(Some(Box::new(to_caller)));
        ep.link(Some(Box::new(to_callee)));
        b.endpoint = Some(ep);
        // The CDR links the call to the leg that answered.
        self.rec.callee_call_id = b.leg.call_id().to_owned();
        if self.leg.is_answered() {
            if let Some(at) = self.rec.answered_at {
                self.log.record(crate::store::CallRecord::Answered {
                    id: self.rec.id.clone(),
                    at,
                    callee_call_id: self.rec.callee_call_id.clone(),
                });
            }
        } else {
            let outs = self.leg.answer(now());
            self.apply(outs).await;
        }
    }

    /// A key from the callee goes to the caller by RFC 4733 when its phone negotiated
    /// telephone-event (the app leg answers with it whenever offered).
    fn key_to_caller(&self, digit: Digit) {
        if self.leg.format().dtmf_pt.is_some() {
            self.endpoint.send_digit(digit, KEY_MS);
        } else {
            debug!(%digit, "the caller has no telephone-event: key not passed on");
        }
    }

    /// A key from the caller while bridged goes to the callee, the way its phone takes
    /// keys. True when it was passed on (not for the app).
    async fn key_to_callee(&mut self, digit: Digit) -> bool {
        let Some(b) = self.bridge.as_mut() else {
            return false;
        };
        let Some(ep) = &b.endpoint else {
            return false;
        };
        if b.leg.format().is_some_and(|f| f.dtmf_pt.is_some()) {
            ep.send_digit(digit, KEY_MS);
        } else {
            let outs = b.leg.send_info_digit(digit, now());
            self.send_sip(outs).await;
        }
        true
    }

    /// An event of the dialled leg's endpoint.
    async fn on_bridge_media(&mut self, ev: Option<EndpointTaskEvent>) {
        match ev {
            Some(EndpointTaskEvent::Media(EndpointEvent::Digit { digit, .. })) => {
                self.key_to_caller(digit)
            }
            Some(EndpointTaskEvent::Media(_)) => {}
            Some(EndpointTaskEvent::MediaTimeout { idle }) => {
                info!(?idle, "bridge: no media from the callee: hanging up");
                if let Some(b) = self.bridge.as_mut() {
                    let outs = b.leg.hangup(now());
                    self.send_sip(outs).await;
                }
                self.finish_bridge(BridgeEnd::Answered {
                    hangup_by: BridgeSide::Callee,
                })
                .await;
            }
            None => {
                if let Some(b) = self.bridge.as_mut() {
                    b.endpoint = None;
                }
            }
        }
    }

    /// The caller hung up: a bridge in progress ends with it (CANCEL or BYE), the app
    /// hears of the answered one before the hang-up.
    async fn caller_gone(&mut self) {
        if let Some(mut b) = self.bridge.take() {
            let answered = b.leg.is_answered();
            let outs = b.leg.hangup(now());
            self.unbridge(&mut b);
            self.send_sip(outs).await;
            self.retired.push(b.leg);
            if answered {
                self.report(BridgeEnd::Answered {
                    hangup_by: BridgeSide::Caller,
                });
            }
        }
    }
}

/// The next event of the bridge's endpoint; never, when there is none.
async fn bridge_event(bridge: &mut Option<Bridge>) -> Option<EndpointTaskEvent> {
    match bridge.as_mut().and_then(|b| b.endpoint.as_mut()) {
        Some(ep) => ep.next_event().await,
        None => std::future::pending().await,
    }
}

async fn run(p: AppTaskParams, mut inputs: mpsc::Receiver<super::CallInput>) {
    let call_ref = p.call;
    let core = p.core;
    let key = p.leg.key.clone();
    let invite = p.leg.invite.clone();
    let media_ip = p.leg.media_ip;
    let caller_call_id = invite
        .headers
        .get(&crate::sip::message::HeaderName::CallId)
        .unwrap_or_default()
        .to_owned();
    let caller_name = crate::sip::message::from_header(&invite.headers)
        .ok()
        .and_then(|f| f.display)
        .map(|d| d.trim_matches('"').to_owned())
        .unwrap_or_default();
    // One leg only: both Call-IDs name it (until a bridge answers).
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
    let origin = super::task::CallerOrigin {
        key: key.clone(),
        invite: invite.clone(),
        from: p.leg.from,
        offer: p.leg.offer.clone(),
        caller: p.caller.clone(),
        dialled: p.dialled.clone(),
    };
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
    let started = AppLeg::new(p.leg, &p.settings, now()).and_then(|(leg, out)| {
        let ep = EndpointHandle::spawn(p.sockets, leg.format(), Default::default(), p.endpoint)
            .map_err(|e| super::CallError::BadOffer(e.to_string()))?;
        Ok((leg, out, ep))
    });
    let (leg, outs, endpoint) = match started {
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
    rec.started(&p.log);
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
    let mut c = AppCall {
        call: call_ref,
        core,
        leg,
        endpoint,
        log: p.log,
        rec,
        events: ev_tx,
        answer_waiting: None,
        bridge: None,
        retired: Vec::new(),
        ports: p.ports,
        resolver: p.resolver,
        endpoint_config: p.endpoint,
        out_settings: OutLegSettings {
            dialog: p.settings.dialog.clone(),
            codec: p.settings.codec,
            codecs: p.settings.codecs,
        },
        media_ip,
        caller_name,
    };
    let mut app_alive = true;
    let mut told_hangup = false;
    let mut media_alive = true;
    c.apply(outs).await;
    loop {
        if c.leg.is_ended() && !told_hangup {
            told_hangup = true;
            c.caller_gone().await;
            // The message being recorded is complete now, not when the task ends.
            c.endpoint.hung_up();
            let _ = c.events.send(Event::HungUp);
            if let Some(w) = c.answer_waiting.take() {
                let _ = w.send(Err(ChannelError::HungUp));
            }
        }
        if c.is_finished(now()) {
            break;
        }
        let deadline = c.next_deadline();
        tokio::select! {
            m = inputs.recv() => match m {
                Some(super::CallInput::Sip(input)) => c.on_sip(input).await,
                Some(super::CallInput::HangUp) => {
                    // The app hears HungUp as when the caller leaves.
                    c.stop_bridge().await;
                    let outs = c.leg.hang_up(now());
                    c.apply(outs).await;
                }
                None => break,
            },
            _ = sleep_until(deadline) => c.on_timer().await,
            r = requests.recv(), if app_alive => match r {
                Some(Request::Ring) => {
                    let outs = c.leg.ring(now());
                    c.apply(outs).await;
                }
                Some(Request::Answer(done)) => {
                    let outs = c.leg.answer(now());
                    if c.leg.is_answered() {
                        let _ = done.send(Ok(()));
                    } else if c.leg.is_ended() {
                        // Cancelled or gone while the app was busy elsewhere.
                        let _ = done.send(Err(ChannelError::HungUp));
                    } else {
                        c.answer_waiting = Some(done);
                    }
                    c.apply(outs).await;
                }
                Some(Request::Hangup(status)) => {
                    c.stop_bridge().await;
                    let outs = c.leg.hangup(status, now());
                    c.apply(outs).await;
                }
                Some(Request::Play { id, items, opts }) => {
                    c.endpoint.play(id, items, opts.looping, opts.barge_in);
                }
                Some(Request::StopPlay) => c.endpoint.stop_play(),
                Some(Request::Record { id, recorder, limits }) => {
                    c.endpoint.record(id, recorder, limits);
                }
                Some(Request::StopRecord) => c.endpoint.stop_record(),
                Some(Request::Link(link)) => c.endpoint.link(link),
                Some(Request::Bridge { dial, opts }) => c.start_bridge(dial, opts).await,
                Some(Request::StopBridge) => c.stop_bridge().await,
                Some(Request::Dial { numbers, timeout, fallback, done }) => {
                    match c.leg.hand_over(now()) {
                        Some(dialog) => {
                            let caller_leg = origin.hand_over(dialog, &mut c.rec);
                            let _ = c
                                .core
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
                }
                None => {
                    // The app is done without hanging up: the call ends with it.
                    app_alive = false;
                    debug!("app finished");
                    c.stop_bridge().await;
                    let outs = c.leg.hangup(480, now());
                    c.apply(outs).await;
                }
            },
            ev = c.endpoint.next_event(), if media_alive => match ev {
                Some(EndpointTaskEvent::Media(EndpointEvent::Digit { digit, method })) => {
                    if !c.key_to_callee(digit).await {
                        let _ = c.events.send(Event::Media(EndpointEvent::Digit { digit, method }));
                    }
                }
                Some(EndpointTaskEvent::Media(EndpointEvent::PlayDone { id: RINGBACK_ID, .. })) => {}
                Some(EndpointTaskEvent::Media(ev)) => {
                    let _ = c.events.send(Event::Media(ev));
                }
                Some(EndpointTaskEvent::MediaTimeout { idle }) => {
                    debug!(?idle, "media timeout");
                    let outs = c.leg.on_media_timeout(now());
                    c.apply(outs).await;
                }
                None => media_alive = false,
            },
            ev = bridge_event(&mut c.bridge) => c.on_bridge_media(ev).await,
        }
    }
    if !c.rec.written {
        write_cdr(&c.log, &mut c.rec, Disposition::Failed, HangupLeg::System);
    }
    let AppCall {
        endpoint,
        events,
        core,
        ..
    } = c;
    drop(events);
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
