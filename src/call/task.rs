//! The tokio task of one call: a thin loop around [`Call`]. It receives the call's SIP
//! events from the core, fires its timers, listens to its relay, hands SIP commands back
//! to the core (the only owner of the transaction layer), updates the relay, and writes
//! the call's records (`active_calls` at start and answer, the CDR at the end) through the
//! records writer, without waiting for the disk. When calls are recorded it starts the
//! recording at answer ([`crate::media::recording`]: its own task taps the relay), keeps
//! it told of the legs' formats, and finishes the file before the CDR that names it.

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::media::recording::RecordingHandle;
use crate::media::transcode::LegFormat;
use crate::media::{RelayEvent, RelayHandle};
use crate::now_unix;
use crate::store::{ActiveCall, CallRecord, Cdr};

use super::records::CallLog;

use super::machine::{
    Call, CallParams, CallSettings, Command, DialOutcome, Disposition, HangupLeg, RecordSettings,
    SipIn,
};

/// Identifies a call inside the node (routing tables of the core).
pub type CallRef = u64;

/// What a call task asks of the core.
#[derive(Debug)]
pub enum CoreCommand {
    /// A SIP command ([`Command::SendRequest`], [`Command::SendAck`],
    /// [`Command::Respond`] or [`Command::Cancel`]).
    Sip { call: CallRef, cmd: Command },
    /// Nobody answered a dial with a fallback ([`CallParams::fallback`]): the caller's
    /// leg, still unanswered, goes to the app the dial's [`Fallback`] gives for `outcome`.
    Unanswered {
        call: CallRef,
        leg: Box<CallerLeg>,
        outcome: DialOutcome,
    },
    /// An app hands its caller, not answered yet, to the B2BUA: ring `numbers` (all at
    /// once) for `timeout`; if nobody answers, `fallback` says which app takes it back.
    Dial {
        leg: Box<CallerLeg>,
        numbers: Vec<String>,
        timeout: std::time::Duration,
        fallback: Fallback,
    },
    /// Route messages of this Call-ID to the call too: a leg it dials itself (an app's
    /// bridge).
    Adopt { call: CallRef, call_id: String },
    /// The call is over: forget its Call-IDs and transactions.
    Done { call: CallRef },
}

/// The caller's leg before anyone answered it, as it moves between the B2BUA (a dial)
/// and apps (the dialplan's other steps): its INVITE, its early dialog once it has one,
/// and the call's record (one CDR for the whole call, whoever ends it).
#[derive(Debug)]
pub struct CallerLeg {
    pub key: crate::sip::transaction::TxKey,
    pub invite: crate::sip::message::Request,
    pub from: crate::sip::Peer,
    pub offer: crate::sip::sdp::SessionDescription,
    /// The authenticated caller and the number it dialled.
    pub caller: String,
    pub dialled: String,
    /// `None` for a fresh INVITE.
    pub dialog: Option<crate::sip::dialog::Dialog>,
    /// `None` for a fresh INVITE.
    pub record: Option<Record>,
}

impl CallerLeg {
    /// The caller hung up (CANCEL) while its leg was on its way from the B2BUA back to the
    /// dialplan: the call's CDR says so (no app will run to write it).
    pub fn cancelled_in_hand_back(&mut self, log: &CallLog) {
        if let Some(rec) = self.record.as_mut() {
            write_cdr(log, rec, Disposition::Cancelled, HangupLeg::Caller);
        }
    }
}

/// A caller's INVITE as it came, kept by whoever has the caller's leg so it can hand the
/// leg on (an app to the B2BUA for a dial, the B2BUA back to the dialplan).
#[derive(Debug, Clone)]
pub(super) struct CallerOrigin {
    pub(super) key: crate::sip::transaction::TxKey,
    pub(super) invite: crate::sip::message::Request,
    pub(super) from: crate::sip::Peer,
    pub(super) offer: crate::sip::sdp::SessionDescription,
    pub(super) caller: String,
    pub(super) dialled: String,
}

impl CallerOrigin {
    /// The leg to hand on: its early `dialog` and the call's record, taken from `rec`
    /// (which is left written, so the one handing over writes no CDR).
    pub(super) fn hand_over(
        &self,
        dialog: crate::sip::dialog::Dialog,
        rec: &mut Record,
    ) -> CallerLeg {
        let blank = Record::new(
            String::new(),
            Default::default(),
            Default::default(),
            String::new(),
        );
        let moved = std::mem::replace(rec, blank);
        rec.written = true;
        CallerLeg {
            key: self.key.clone(),
            invite: self.invite.clone(),
            from: self.from,
            offer: self.offer.clone(),
            caller: self.caller.clone(),
            dialled: self.dialled.clone(),
            dialog: Some(dialog),
            record: Some(moved),
        }
    }
}

/// Picks the app that takes a caller back after a dial nobody answered, by the outcome;
/// `outcomes` are those it takes (for the others the caller gets the dial's failure).
pub struct Fallback {
    pub outcomes: Vec<DialOutcome>,
    pub app: Box<dyn FnOnce(DialOutcome) -> super::AppFn + Send>,
}

impl std::fmt::Debug for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fallback")
            .field("outcomes", &self.outcomes)
            .finish_non_exhaustive()
    }
}

/// Inputs a call task takes from the core.
pub type CallHandle = mpsc::Sender<CallInput>;

/// What the core hands a call task: its SIP events, or an order from the node's owner.
// Not boxed: nearly every input is SIP, and a box would cost an allocation per message
// for the sake of the rare order.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum CallInput {
    Sip(SipIn),
    /// End the call as the system (an admin's "hang up"): BYE both answered legs; a
    /// caller not answered yet gets 480 and the forks are cancelled; no dialplan
    /// fallback runs. The CDR says hangup `system`.
    HangUp,
}

/// Queue of SIP events per call; beyond it events are dropped (UDP retransmits them).
pub const CALL_QUEUE: usize = 256;

/// Everything a call task needs.
pub struct TaskParams {
    pub call: CallRef,
    /// The call's id in the store and the CDR.
    pub id: String,
    pub params: CallParams,
    pub settings: CallSettings,
    pub relay: RelayHandle,
    pub log: CallLog,
    pub node_id: String,
    pub core: mpsc::Sender<CoreCommand>,
    /// The call's record when it started in an app (the dialplan ran steps before this
    /// dial); `None` starts one.
    pub record: Option<Record>,
}

/// Starts the task of a call; returns where the core sends its SIP events.
pub fn spawn_call(p: TaskParams) -> CallHandle {
    let (tx, rx) = mpsc::channel(CALL_QUEUE);
    let span = info_span!(
        "call",
        id = %p.id,
        caller_call_id = %p.params.invite.headers.get(&crate::sip::message::HeaderName::CallId).unwrap_or_default(),
        callee_call_id = %p.params.callee_call_id,
        caller = %p.params.caller,
        callee = %p.params.callee,
    );
    tokio::spawn(run(p, rx).instrument(span));
    tx
}

/// What a call task knows for the call's rows in the store (`active_calls`, the CDR).
#[derive(Debug)]
pub struct Record {
    pub(super) id: String,
    pub(super) caller: String,
    pub(super) callee: String,
    pub(super) caller_call_id: String,
    pub(super) callee_call_id: String,
    pub(super) node_id: String,
    pub(super) started_at: i64,
    pub(super) answered_at: Option<i64>,
    pub(super) written: bool,
    /// The file of the call's recording, for the CDR.
    pub(super) recording: Option<String>,
    /// Its `active_calls` row was written.
    pub(super) listed: bool,
}

impl Record {
    /// A call starting now: `parties` caller and callee, `call_ids` of legs A and B.
    pub(super) fn new(
        id: String,
        parties: [String; 2],
        call_ids: [String; 2],
        node_id: String,
    ) -> Record {
        let [caller, callee] = parties;
        let [caller_call_id, callee_call_id] = call_ids;
        Record {
            id,
            caller,
            callee,
            caller_call_id,
            callee_call_id,
            node_id,
            started_at: now_unix(),
            answered_at: None,
            written: false,
            recording: None,
            listed: false,
        }
    }

    /// The call's id in the store and the CDR.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The call's row in `active_calls`, ringing (once: a call moving between a dial and
    /// an app keeps its row).
    pub(super) fn started(&mut self, log: &CallLog) {
        if self.listed {
            return;
        }
        self.listed = true;
        log.record(CallRecord::Started(ActiveCall {
            id: self.id.clone(),
            caller: self.caller.clone(),
            callee: self.callee.clone(),
            state: "ringing".into(),
            started_at: self.started_at,
            answered_at: None,
            caller_call_id: self.caller_call_id.clone(),
            callee_call_id: self.callee_call_id.clone(),
            node_id: self.node_id.clone(),
        }));
    }

    pub(super) fn answered(&mut self, log: &CallLog) {
        let at = now_unix();
        self.answered_at = Some(at);
        log.record(CallRecord::Answered {
            id: self.id.clone(),
            at,
            callee_call_id: self.callee_call_id.clone(),
        });
    }
}

/// The call's recording: what it needs to start, and the running one.
struct Recording {
    settings: Option<RecordSettings>,
    /// The legs' formats as the machine last told them.
    formats: [Option<LegFormat>; 2],
    running: Option<RecordingHandle>,
}

impl Recording {
    /// At answer: records the call into `<dir>/<id>.wav` when calls are recorded. A file
    /// that cannot be made (a full disk, a clash) leaves the call unrecorded, not failed.
    fn start(&mut self, relay: &RelayHandle, rec: &mut Record) {
        let Some(s) = self.settings.as_ref().filter(|_| self.running.is_none()) else {
            return;
        };
        let path = s.dir.join(format!("{}.wav", rec.id));
        match RecordingHandle::start(relay, &path, s.layout, self.formats) {
            Ok(h) => {
                rec.recording = Some(path.display().to_string());
                self.running = Some(h);
            }
            Err(e) => warn!(error = %e, "call not recorded"),
        }
    }

    fn set_formats(&mut self, formats: [Option<LegFormat>; 2]) {
        self.formats = formats;
        if let Some(h) = &self.running {
            h.set_formats(formats);
        }
    }

    /// Ends the recording and waits for its file to be complete.
    async fn finish(&mut self) {
        if let Some(h) = self.running.take() {
            match h.finish().await {
                Some(s) => info!(
                    path = %s.path.display(),
                    secs = s.duration.as_secs_f64(),
                    dropped = s.dropped,
                    "recording finished"
                ),
                None => warn!("recording ended early (see above)"),
            }
        }
    }
}

async fn run(p: TaskParams, mut inputs: mpsc::Receiver<CallInput>) {
    let TaskParams {
        call: call_ref,
        id,
        params,
        settings,
        mut relay,
        log,
        node_id,
        core,
        record,
    } = p;
    let key = params.key.clone();
    let invite = params.invite.clone();
    let caller_call_id = invite
        .headers
        .get(&crate::sip::message::HeaderName::CallId)
        .unwrap_or_default()
        .to_owned();
    let mut rec = match record {
        Some(mut r) => {
            r.callee_call_id = params.callee_call_id.clone();
            r
        }
        None => Record::new(
            id,
            [params.caller.clone(), params.callee.clone()],
            [caller_call_id, params.callee_call_id.clone()],
            node_id,
        ),
    };
    // What the caller's leg is handed back with when nobody answers.
    let origin = CallerOrigin {
        key: params.key.clone(),
        invite: params.invite.clone(),
        from: params.from,
        offer: params.offer.clone(),
        caller: params.caller.clone(),
        dialled: params.callee.clone(),
    };
    let mut recording = Recording {
        settings: settings.record.clone(),
        formats: [None, None],
        running: None,
    };
    let (mut call, cmds) = match Call::new(params, settings, Instant::now().into_std()) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "call refused");
            let mut resp = crate::sip::message::Response::for_request(
                &invite,
                e.status(),
                crate::sip::message::reason_phrase(e.status()),
            );
            resp.ensure_to_tag(&format!("{:08x}", rand::random::<u32>()));
            let _ = core
                .send(CoreCommand::Sip {
                    call: call_ref,
                    cmd: Command::Respond { key, resp },
                })
                .await;
            let _ = core.send(CoreCommand::Done { call: call_ref }).await;
            relay.close().await;
            return;
        }
    };
    rec.started(&log);
    execute(
        cmds,
        call_ref,
        &core,
        &relay,
        &log,
        &mut rec,
        &mut recording,
    )
    .await;
    let mut relay_alive = true;
    loop {
        if call.is_finished(Instant::now().into_std()) {
            break;
        }
        let deadline = call.next_deadline();
        let cmds = tokio::select! {
            m = inputs.recv() => match m {
                Some(CallInput::Sip(input)) => call.on_sip(input, Instant::now().into_std()),
                Some(CallInput::HangUp) => call.hang_up(Instant::now().into_std()),
                None => break,
            },
            _ = sleep_until(deadline) => call.on_timer(Instant::now().into_std()),
            ev = relay.next_event(), if relay_alive => match ev {
                Some(RelayEvent::MediaTimeout { idle }) => {
                    debug!(?idle, "media timeout");
                    call.on_media_timeout(Instant::now().into_std())
                }
                Some(RelayEvent::Latched { leg, flow, addr }) => {
                    debug!(?leg, ?flow, %addr, "media latched");
                    Vec::new()
                }
                Some(RelayEvent::Dtmf { leg, digit, duration_ms }) => {
                    call.on_dtmf(leg, digit, duration_ms, Instant::now().into_std())
                }
                None => {
                    relay_alive = false;
                    Vec::new()
                }
            },
        };
        let unanswered = cmds.iter().find_map(|c| match c {
            Command::Unanswered { outcome } => Some(*outcome),
            _ => None,
        });
        if let (Some(outcome), Some(dialog)) = (unanswered, call.take_caller()) {
            // The caller goes on in the dialplan with this call's record; what is left
            // here (cancelling the forks) writes nothing.
            let leg = origin.hand_over(dialog, &mut rec);
            let _ = core
                .send(CoreCommand::Unanswered {
                    call: call_ref,
                    leg: Box::new(leg),
                    outcome,
                })
                .await;
        }
        execute(
            cmds,
            call_ref,
            &core,
            &relay,
            &log,
            &mut rec,
            &mut recording,
        )
        .await;
    }
    recording.finish().await;
    if !rec.written {
        // The node is shutting down under the call: record it as failed.
        write_cdr(&log, &mut rec, Disposition::Failed, HangupLeg::System);
    }
    let stats = relay.close().await;
    let dropped = [stats.legs[0].dropped, stats.legs[1].dropped];
    let lost = [stats.legs[0].lost, stats.legs[1].lost];
    if dropped.iter().chain(&lost).any(|d| *d > 0) {
        // Packets from unknown sources, before the other leg's address was known, sends
        // that failed, or that never reached us: worth seeing without debug logs when
        // audio went missing.
        info!(
            a_rx = stats.legs[0].rx_packets,
            b_rx = stats.legs[1].rx_packets,
            a_dropped = dropped[0],
            b_dropped = dropped[1],
            a_lost = lost[0],
            b_lost = lost[1],
            "relay closed with dropped or lost packets"
        );
    } else {
        debug!(
            a_rx = stats.legs[0].rx_packets,
            b_rx = stats.legs[1].rx_packets,
            a_tx = stats.legs[0].tx_packets,
            b_tx = stats.legs[1].tx_packets,
            "relay closed"
        );
    }
    let _ = core.send(CoreCommand::Done { call: call_ref }).await;
}

async fn execute(
    cmds: Vec<Command>,
    call: CallRef,
    core: &mpsc::Sender<CoreCommand>,
    relay: &RelayHandle,
    log: &CallLog,
    rec: &mut Record,
    recording: &mut Recording,
) {
    for cmd in cmds {
        match cmd {
            Command::Remote { leg, remote } => relay.update_remote(leg, remote),
            Command::Hold(on) => relay.set_hold(on),
            Command::Transcode(formats) => {
                // A codec that cannot be set up leaves the relay as it was: the phones
                // hear nothing, and the media timeout ends the call.
                if let Err(e) = relay.transcode(formats) {
                    warn!(error = %e, "cannot transcode");
                }
            }
            Command::DtmfAsInfo { leg, pt, clock } => relay.dtmf_as_signal(leg, Some((pt, clock))),
            Command::SendDtmf {
                leg,
                pt,
                clock,
                digit,
                duration_ms,
            } => relay.send_dtmf(leg, pt, clock, digit, duration_ms),
            Command::InBandDtmf { leg, format } => relay.inband_dtmf(leg, format),
            Command::Formats(formats) => recording.set_formats(formats),
            Command::Ringing | Command::Unanswered { .. } => {}
            Command::Answered => {
                recording.start(relay, rec);
                rec.answered(log);
            }
            Command::Ended {
                disposition,
                hangup,
            } => {
                // The file is whole before the CDR points at it.
                recording.finish().await;
                write_cdr(log, rec, disposition, hangup);
            }
            sip => {
                if core
                    .send(CoreCommand::Sip { call, cmd: sip })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

pub(super) fn write_cdr(
    log: &CallLog,
    rec: &mut Record,
    disposition: Disposition,
    hangup: HangupLeg,
) {
    if rec.written {
        return;
    }
    rec.written = true;
    let ended_at = now_unix();
    let cdr = Cdr {
        id: rec.id.clone(),
        caller: rec.caller.clone(),
        callee: rec.callee.clone(),
        started_at: rec.started_at,
        answered_at: rec.answered_at,
        ended_at,
        disposition: disposition.as_str().to_owned(),
        duration: rec
            .answered_at
            .map_or(0, |a| ended_at.saturating_sub(a).max(0)),
        hangup_leg: hangup.as_str().to_owned(),
        caller_call_id: rec.caller_call_id.clone(),
        callee_call_id: rec.callee_call_id.clone(),
        node_id: rec.node_id.clone(),
        recording: rec.recording.clone(),
    };
    // The writer retries a failing store: the CDR is the record someone bills from.
    log.record(CallRecord::Finished(cdr));
}

pub(super) async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}
