//! One call as a sans-IO state machine: the caller's leg (A, a UAS dialog) and the
//! callee's leg (B, one UAC INVITE per registered contact: parallel forking), both in one
//! [`DialogSet`] owned here. Fed [`SipIn`] events, timers and media events with `now`;
//! returns [`Command`]s (SIP to send through the core, relay updates, store milestones).
//!
//! Legs share nothing but what the call needs: B gets its own Call-ID, tags and CSeq, a
//! From with the caller's number and name, and the caller's SDP rewritten to the relay's
//! leg-B port; A gets the callee's answer rewritten to the relay's leg-A port.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracing::info;

use crate::media::codec::{CodecList, CodecParams};
use crate::media::dtmf::{format_info, parse_info, Digit, InfoDigit, InfoFormat};
use crate::media::recorder::Layout;
use crate::media::transcode::LegFormat;
use crate::media::{Leg, Remote};
use crate::sip::dialog::{
    Body, Dialog, DialogConfig, DialogEvent, DialogId, DialogSet, InviteId, InviteParams, MsgOpts,
    TerminateReason,
};
use crate::sip::message::{self, HeaderName, Method, Request, Response};
use crate::sip::sdp::{
    self, negotiate, no_common_codec, rewrite_for_relay, OriginState, RelayLeg, SessionDescription,
};
use crate::sip::transaction::TxKey;
use crate::sip::Peer;

use super::codecs;
use super::forks::{ForkState, Forks, Provisional};
use super::CallError;

const SDP: &str = "application/sdp";

/// What a call accepts inside its dialogs: the Allow of our INVITE to the callee, of the
/// caller's 2xx, of in-dialog OPTIONS and of 501s (phones only send UPDATE to a peer that
/// listed it, RFC 3311 5.1).
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, PRACK";

/// Headers of an INFO passed on with its body (RFC 6086: the package, and how the body
/// is to be handled).
const INFO_HEADERS: &[&str] = &["Info-Package", "Content-Disposition"];

fn leg_name(leg: usize) -> &'static str {
    if leg == 0 {
        "caller"
    } else {
        "callee"
    }
}

/// How a call ended, as the CDR says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Answered,
    Busy,
    NoAnswer,
    Cancelled,
    Failed,
}

impl Disposition {
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Answered => "answered",
            Disposition::Busy => "busy",
            Disposition::NoAnswer => "no-answer",
            Disposition::Cancelled => "cancelled",
            Disposition::Failed => "failed",
        }
    }
}

/// Which side ended the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangupLeg {
    Caller,
    Callee,
    System,
}

impl HangupLeg {
    pub fn as_str(self) -> &'static str {
        match self {
            HangupLeg::Caller => "caller",
            HangupLeg::Callee => "callee",
            HangupLeg::System => "system",
        }
    }
}

/// Where one fork of leg B goes: a registered contact of the callee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The Request-URI: the contact the phone registered.
    pub request_uri: String,
    /// The flow to send on: the phone's source address, from our socket it registered
    /// to (TCP: its connection).
    pub peer: Peer,
    /// Our Contact URI on this fork.
    pub local_contact: String,
    /// Route headers (the binding's Path).
    pub route: Vec<String>,
    /// Headers this fork's INVITE adds (a forward to another node: its relay header).
    pub headers: Vec<(HeaderName, String)>,
}

/// Settings of every call.
#[derive(Debug, Clone)]
pub struct CallSettings {
    pub no_answer_timeout: Duration,
    pub dialog: DialogConfig,
    /// Encoder settings for transcoded legs (`[media] opus_complexity`), before what the
    /// leg's SDP asks for.
    pub codec: CodecParams,
    /// The codecs the engine may use and add to offers (`[media] codecs`).
    pub codecs: CodecList,
    /// Record answered calls (`[calls] record`); the call task does, the machine only
    /// tells it the legs' formats ([`Command::Formats`]).
    pub record: Option<RecordSettings>,
}

/// Where and how calls are recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSettings {
    /// The folder of the recordings: a call's file is `<dir>/<call id>.wav`.
    pub dir: std::path::PathBuf,
    pub layout: Layout,
}

/// The Max-Forwards of the callee leg: one less than the caller's (70 when absent), so a
/// call that loops back through the node (a contact pointing at the PBX itself) runs out
/// of hops and ends with 483 instead of multiplying for ever.
pub fn forwarded_max_forwards(invite: &Request) -> String {
    crate::sip::message::max_forwards(&invite.headers)
        .unwrap_or(71)
        .saturating_sub(1)
        .to_string()
}

/// What a call starts from.
#[derive(Debug, Clone)]
pub struct CallParams {
    /// The caller's INVITE and its server transaction.
    pub key: TxKey,
    pub invite: Request,
    pub from: Peer,
    /// The caller's offer, parsed ([`parse_offer`]).
    pub offer: SessionDescription,
    pub caller: String,
    pub caller_name: String,
    pub callee: String,
    /// Our Contact URI on leg A.
    pub caller_contact: String,
    /// The host part of From and To on leg B.
    pub domain: String,
    pub targets: Vec<Target>,
    /// The Call-ID of leg B (every fork).
    pub callee_call_id: String,
    /// The PBX's media address, put in both SDPs.
    pub media_ip: IpAddr,
    /// The relay's RTP ports: leg A (towards the caller), leg B (towards the callee).
    pub relay_ports: [u16; 2],
    /// Seeds the dialog layer's RNG (tags, branches).
    pub seed: u64,
    /// The caller's early dialog, when an app had the caller before this dial (taken over
    /// instead of a new one, so the caller keeps one To tag).
    pub caller_dialog: Option<Dialog>,
    /// How long the callee rings (the dialplan's dial timeout), instead of the
    /// settings' no-answer timeout.
    pub ring_timeout: Option<Duration>,
    /// Outcomes after which the caller's leg is handed back ([`Command::Unanswered`],
    /// [`Call::take_caller`]) instead of answered with the failure: the dialplan goes on
    /// (voicemail...). Empty: the caller gets the failure (486, 480...).
    pub fallback: Vec<DialOutcome>,
}

/// How a dial nobody answered ended: what picks a dialplan's `on_busy`,
/// `on_noanswer` or `on_unavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialOutcome {
    /// Every phone rung was busy or declined.
    Busy,
    /// Phones rang; nobody answered in time.
    NoAnswer,
    /// No phone could be rung.
    Unavailable,
}

/// SIP input for a call, routed by the core.
#[derive(Debug, Clone)]
pub enum SipIn {
    /// A new server transaction in one of the call's dialogs (BYE, re-INVITE...).
    Request {
        key: TxKey,
        req: Request,
        from: Peer,
    },
    /// The ACK for a 2xx.
    Ack(Request),
    /// The caller cancelled its INVITE (the core answered the CANCEL 200).
    Cancel(TxKey),
    /// A response to a request the call sent (`key` None: a stray 2xx retransmission).
    Response { key: Option<TxKey>, resp: Response },
    /// A client transaction of the call timed out (no response: a 408).
    Timeout(TxKey),
    /// A client transaction's request could not be sent (the connection failed): a 503,
    /// as RFC 3261 8.1.3.1 has a transport failure count.
    Unsent(TxKey),
}

/// What the call asks its task to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Start a client transaction.
    SendRequest { req: Request, to: Peer },
    /// Send an ACK for a 2xx, no transaction.
    SendAck { req: Request, to: Peer },
    /// Answer a server transaction.
    Respond { key: TxKey, resp: Response },
    /// CANCEL the client INVITE transaction `invite`.
    Cancel { invite: TxKey, to: Peer },
    /// The relay's remote for a leg, from the SDP that leg's phone sent.
    Remote { leg: Leg, remote: Remote },
    /// A leg put the call on hold (true) or took it off (false): the relay applies its
    /// hold timeout instead of the media timeout.
    Hold(bool),
    /// The callee's phone rings (first time only).
    Ringing,
    /// The call was answered (leg B's Call-ID is the shared one).
    Answered,
    /// The legs share no codec: transcode between these formats (leg A's, leg B's);
    /// `None` = they share one again, relay packets untouched.
    Transcode(Option<[LegFormat; 2]>),
    /// What each leg negotiated (leg A's, leg B's; `None`: a codec the engine cannot
    /// decode), once an offer/answer completes and whenever it changes (a recording
    /// decodes the legs with them). Sent before [`Command::Answered`].
    Formats([Option<LegFormat>; 2]),
    /// `leg` sends RFC 4733 events (payload type `pt`, clock `clock`) that the other leg
    /// did not negotiate: the relay turns them into digits ([`Call::on_dtmf`]) instead of
    /// forwarding them, and they go on as SIP INFO.
    DtmfAsInfo { leg: Leg, pt: u8, clock: u32 },
    /// Listen for key presses in the audio of `leg` (its phone negotiated no
    /// telephone-event, the other leg's did): they reach the other leg as RFC 4733
    /// events ([`Call::on_dtmf`]). `None` stops.
    InBandDtmf { leg: Leg, format: Option<LegFormat> },
    /// Send a key press to `leg`'s phone as RFC 4733 events (payload type `pt`, clock
    /// `clock`) in the stream it receives: it negotiated telephone-event and the key came
    /// as INFO or as a tone.
    SendDtmf {
        leg: Leg,
        pt: u8,
        clock: u32,
        digit: Digit,
        duration_ms: Option<u32>,
    },
    /// Nobody answered and the call falls back ([`CallParams::fallback`]): the caller's
    /// leg is unanswered and out of this call ([`Call::take_caller`]); the forks are
    /// being cancelled. Sent before [`Command::Ended`], whose CDR is then not this
    /// call's to write.
    Unanswered { outcome: DialOutcome },
    /// The call is over: write the CDR. Sent once.
    Ended {
        disposition: Disposition,
        hangup: HangupLeg,
    },
}

/// A request from one leg relayed to the other (re-INVITE, UPDATE, INFO), waiting for
/// the other leg's final response, which goes back to the originator.
#[derive(Debug, Clone)]
struct Relayed {
    /// The originating leg (0 = A, 1 = B), its dialog and server transaction.
    from: usize,
    from_id: DialogId,
    key: TxKey,
    /// Our request on the other leg: its dialog, method and CSeq number.
    to_id: DialogId,
    method: Method,
    cseq: u32,
    /// It carries an SDP offer: until answered, no other offer may cross the call.
    offer: bool,
    /// The hold state before the offer, restored if the offer is refused.
    hold_before: bool,
}

/// What the caller's INVITE said about reliable provisional responses (RFC 3262).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rel100 {
    No,
    Supported,
    Required,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Ringing,
    Answered,
    Ended,
}

/// The call. See the module comment.
pub struct Call {
    dialogs: DialogSet,
    phase: Phase,
    a_dialog: DialogId,
    a_key: TxKey,
    callee_call_id: String,
    forks: Forks,
    winner: Option<DialogId>,
    /// The SDP offer as sent to leg B (what its answer is checked against).
    b_offer: SessionDescription,
    /// The last offer each leg's phone made (what an answer going back must fit).
    offers: [Option<SessionDescription>; 2],
    /// The relay transcodes (the legs' codecs differ).
    transcoding: bool,
    /// Per leg, the format its audio is listened to for key presses in.
    inband: [Option<LegFormat>; 2],
    /// The legs' formats as last told ([`Command::Formats`]).
    formats: Option<[Option<LegFormat>; 2]>,
    /// Encoder settings for transcoded legs.
    codec: CodecParams,
    codecs: CodecList,
    media_ip: IpAddr,
    relay_ports: [u16; 2],
    /// Per m-line of the caller's offer: relayed or disabled.
    relayed: Vec<bool>,
    origin_a: OriginState,
    origin_b: OriginState,
    /// Requests from one leg relayed to the other, waiting for their final response.
    in_flight: Vec<Relayed>,
    /// The caller's 100rel: whether our 18x to it may (or must) be reliable.
    a_100rel: Rel100,
    /// Responses to the caller's INVITE waiting for the PRACK of our reliable 1xx (RFC 3262
    /// 3: one reliable provisional at a time, and no 2xx while one carrying SDP is
    /// unacknowledged).
    held: VecDeque<(u16, MsgOpts)>,
    /// Our unacknowledged reliable 1xx to the caller carries SDP.
    rel_sdp_unacked: bool,
    /// The fork whose early SDP the caller got: leg B before the answer.
    early_b: Option<DialogId>,
    /// Per leg, the initial offer/answer finished before the 2xx (answer in a reliable
    /// 1xx, PRACKed): only then may an UPDATE offer cross an early dialog (RFC 3311 5.1).
    early_done: [bool; 2],
    /// Retry-After values.
    rng: StdRng,
    on_hold: bool,
    /// The last SDP sent on each leg (answers a session refresh re-INVITE).
    last_sdp: [Option<String>; 2],
    rang: bool,
    early_media: bool,
    no_answer_at: Instant,
    ended_at: Option<Instant>,
    linger: Duration,
    fallback: Vec<DialOutcome>,
    /// The caller's early dialog once handed back ([`Call::take_caller`]).
    handed_back: Option<Dialog>,
}

/// The caller's SDP offer from its INVITE: no body or not SDP -> 488 (we do not do late
/// offer in this slice), unparseable -> 400, no audio -> 488.
pub fn parse_offer(req: &Request) -> Result<SessionDescription, CallError> {
    if req.body.is_empty() {
        return Err(CallError::NoOffer);
    }
    let ct = req.headers.get(&HeaderName::ContentType).unwrap_or(SDP);
    if !ct
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(SDP))
    {
        return Err(CallError::NoOffer);
    }
    let sdp = SessionDescription::parse_bytes(&req.body)
        .map_err(|e| CallError::BadOffer(e.to_string()))?;
    if !sdp.media.iter().any(|m| m.is_audio() && m.is_enabled()) {
        return Err(CallError::NoAudio);
    }
    Ok(sdp)
}

/// Whether a phone's re-offer keeps our endpoint's stream: m-line `index` still there,
/// enabled, with our payload type `pt` (a new codec would need a new endpoint).
pub fn re_offer_keeps_stream(offer: &SessionDescription, index: usize, pt: Option<u8>) -> bool {
    offer
        .media
        .get(index)
        .is_some_and(|m| m.is_enabled() && m.formats.iter().any(|f| f.parse::<u8>().ok() == pt))
}

/// Where a leg's phone receives RTP for m-line `index`, per its SDP.
pub fn remote_of(sdp: &SessionDescription, index: usize) -> Remote {
    let Some(m) = sdp.media.get(index) else {
        return Remote::default();
    };
    let ip = sdp.media_connection(index).and_then(|c| c.ip());
    let Some(ip) = ip else {
        return Remote::default();
    };
    let mut r = Remote::new(SocketAddr::new(ip, m.port)).with_rtcp_mux(m.rtcp_mux());
    if let Some(rtcp) = m.rtcp() {
        let rip = rtcp.connection.as_ref().and_then(|c| c.ip()).unwrap_or(ip);
        r = r.with_rtcp(SocketAddr::new(rip, rtcp.port));
    }
    r
}

fn sdp_body(sdp: &SessionDescription) -> Body {
    Body::new(SDP, sdp.to_string().into_bytes())
}

pub(super) fn body_sdp(body: &[u8], ct: Option<&str>) -> Option<SessionDescription> {
    if body.is_empty() {
        return None;
    }
    if let Some(ct) = ct {
        if !ct
            .split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case(SDP))
        {
            return None;
        }
    }
    SessionDescription::parse_bytes(body).ok()
}

fn response_sdp(resp: &Response) -> Option<SessionDescription> {
    body_sdp(&resp.body, resp.headers.get(&HeaderName::ContentType))
}

impl Call {
    /// Starts a call: takes the caller's INVITE into a dialog and sends an INVITE to
    /// every target. On error the caller is to be answered with [`CallError::status`].
    pub fn new(
        p: CallParams,
        settings: CallSettings,
        now: Instant,
    ) -> Result<(Call, Vec<Command>), CallError> {
        let mut dialogs = DialogSet::new(settings.dialog.clone(), StdRng::seed_from_u64(p.seed));
        let a_dialog = match p.caller_dialog {
            Some(d) => dialogs.adopt(d),
            None => dialogs.accept_invite(&p.key, &p.invite, p.from, &p.caller_contact)?,
        };
        // The first enabled audio stream is relayed; the relay has one pair per leg, so
        // any other stream is declined (port 0).
        let first_audio = p
            .offer
            .media
            .iter()
            .position(|m| m.is_audio() && m.is_enabled())
            .ok_or(CallError::NoAudio)?;
        let relayed: Vec<bool> = (0..p.offer.media.len()).map(|i| i == first_audio).collect();
        let mut origin_b = OriginState::new("ringfort", p.seed >> 1, p.media_ip);
        let origin_a = OriginState::new("ringfort", (p.seed >> 1) ^ 0x5a5a, p.media_ip);
        let leg_b = RelayLeg {
            address: p.media_ip,
            ports: relayed
                .iter()
                .map(|r| r.then_some(p.relay_ports[1]))
                .collect(),
            rtcp_mux: false,
        };
        let mut b_offer = rewrite_for_relay(&p.offer, &leg_b, &mut origin_b)
            .map_err(|e| CallError::BadOffer(e.to_string()))?;
        codecs::extend_offer(&mut b_offer, first_audio, &settings.codecs);
        let has_100rel = |h: &HeaderName| {
            p.invite
                .headers
                .list(h)
                .any(|o| o.trim().eq_ignore_ascii_case("100rel"))
        };
        let a_100rel = if has_100rel(&HeaderName::Require) {
            Rel100::Required
        } else if has_100rel(&HeaderName::Supported) {
            Rel100::Supported
        } else {
            Rel100::No
        };
        // The callee may send reliable 18x when the caller can take them: we PRACK them
        // on leg B and pass them on reliably (our own RSeq) on leg A.
        let offer_100rel = a_100rel != Rel100::No && !settings.dialog.support_100rel;
        let mut call = Call {
            no_answer_at: now + p.ring_timeout.unwrap_or(settings.no_answer_timeout),
            fallback: p.fallback,
            handed_back: None,
            linger: settings.dialog.timers.t1 * 64,
            codec: settings.codec,
            codecs: settings.codecs,
            dialogs,
            phase: Phase::Ringing,
            a_dialog,
            a_key: p.key.clone(),
            callee_call_id: p.callee_call_id.clone(),
            forks: Forks::default(),
            winner: None,
            last_sdp: [None, Some(b_offer.to_string())],
            b_offer,
            offers: [Some(p.offer.clone()), None],
            transcoding: false,
            formats: None,
            inband: [None, None],
            media_ip: p.media_ip,
            relay_ports: p.relay_ports,
            relayed,
            origin_a,
            origin_b,
            in_flight: Vec::new(),
            a_100rel,
            held: VecDeque::new(),
            rel_sdp_unacked: false,
            early_b: None,
            early_done: [false; 2],
            rng: StdRng::seed_from_u64(p.seed ^ 0x0491),
            on_hold: false,
            rang: false,
            early_media: false,
            ended_at: None,
        };
        let mut out = vec![Command::Remote {
            leg: Leg::A,
            remote: remote_of(&p.offer, first_audio),
        }];
        let name = p.caller_name.replace(['"', '\\', '\r', '\n'], "");
        let from = if name.is_empty() {
            format!("<sip:{}@{}>", p.caller, p.domain)
        } else {
            format!("\"{name}\" <sip:{}@{}>", p.caller, p.domain)
        };
        let mut events = Vec::new();
        for t in &p.targets {
            let params = InviteParams {
                request_uri: t.request_uri.clone(),
                from: from.clone(),
                to: format!("<sip:{}@{}>", p.callee, p.domain),
                local_contact: t.local_contact.clone(),
                route: t.route.clone(),
                peer: t.peer,
                call_id: Some(p.callee_call_id.clone()),
                opts: {
                    let mut o = MsgOpts::body(sdp_body(&call.b_offer));
                    o.headers
                        .push((HeaderName::MaxForwards, forwarded_max_forwards(&p.invite)));
                    o.headers.push((HeaderName::Allow, ALLOW.into()));
                    if offer_100rel {
                        o.headers.push((HeaderName::Supported, "100rel".into()));
                    }
                    o.headers.extend(t.headers.iter().cloned());
                    o
                },
            };
            let (invite, evs) = call.dialogs.invite(params, now)?;
            call.forks.push(invite, t.peer);
            events.extend(evs);
        }
        call.absorb(events, now, &mut out);
        Ok((call, out))
    }

    /// The caller's early dialog after [`Command::Unanswered`] (once).
    pub fn take_caller(&mut self) -> Option<Dialog> {
        self.handed_back.take()
    }

    /// The Call-ID of the caller's leg.
    pub fn caller_call_id(&self) -> &str {
        &self.a_dialog.call_id
    }

    pub fn callee_call_id(&self) -> &str {
        &self.callee_call_id
    }

    pub fn is_answered(&self) -> bool {
        self.winner.is_some()
    }

    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// Ended, and nothing left to wait for (every fork resolved, or 64*T1 passed): the
    /// task may stop.
    pub fn is_finished(&self, now: Instant) -> bool {
        match self.ended_at {
            Some(t) => !self.forks.any_pending() || now >= t + self.linger,
            None => false,
        }
    }

    /// A SIP event for this call.
    #[must_use]
    pub fn on_sip(&mut self, input: SipIn, now: Instant) -> Vec<Command> {
        let events = match input {
            SipIn::Request { key, req, from } => {
                match self.dialogs.on_request(key.clone(), req.clone(), from, now) {
                    Ok(evs) => evs,
                    Err(e) => {
                        let resp = e.response(&req, &self.a_dialog.local_tag);
                        return vec![Command::Respond { key, resp }];
                    }
                }
            }
            SipIn::Ack(req) => self.dialogs.on_ack(req, now),
            SipIn::Cancel(key) => self.dialogs.on_cancel(&key, now),
            SipIn::Response { key, resp } => self.dialogs.on_response(key, resp, now),
            SipIn::Timeout(key) => self.dialogs.on_timeout(&key, now),
            SipIn::Unsent(key) => self.dialogs.on_transport_error(&key, now),
        };
        let mut out = Vec::new();
        self.absorb(events, now, &mut out);
        out
    }

    /// A key press the relay took out of `from`'s RTP goes to the other leg the way that
    /// leg takes keys: RFC 4733 events when it negotiated telephone-event, else SIP INFO
    /// (`application/dtmf-relay`, RFC 6086 with the de facto body).
    #[must_use]
    pub fn on_dtmf(
        &mut self,
        from: Leg,
        digit: Digit,
        duration_ms: u32,
        now: Instant,
    ) -> Vec<Command> {
        let mut out = Vec::new();
        let to = 1 - from.index();
        if self.phase != Phase::Answered {
            return out;
        }
        if let Some(cmd) = self.dtmf_as_events(to, digit, Some(duration_ms)) {
            info!(from = leg_name(from.index()), %digit, duration_ms, "DTMF as RFC 4733");
            out.push(cmd);
            return out;
        }
        let Some(target) = self.leg_dialog(to) else {
            return out;
        };
        let info = InfoDigit {
            digit,
            duration_ms: Some(duration_ms),
        };
        let body = format_info(InfoFormat::DtmfRelay, &info);
        let opts = MsgOpts::body(Body::new(
            InfoFormat::DtmfRelay.content_type(),
            body.into_bytes(),
        ));
        info!(from = leg_name(from.index()), %digit, duration_ms, "DTMF as INFO");
        let evs = self
            .dialogs
            .request(&target, Method::Info, opts, now)
            .unwrap_or_default();
        self.absorb(evs, now, &mut out);
        out
    }

    /// [`Command::SendDtmf`] towards leg `to`, when its phone negotiated telephone-event
    /// (events go in its codec's clock, as RFC 4733 2.1 wants them).
    fn dtmf_as_events(&self, to: usize, digit: Digit, duration_ms: Option<u32>) -> Option<Command> {
        let f = self.formats.as_ref()?[to]?;
        let pt = f.dtmf_pt?;
        Some(Command::SendDtmf {
            leg: if to == 0 { Leg::A } else { Leg::B },
            pt,
            clock: f.codec.clock_rate(),
            digit,
            duration_ms,
        })
    }

    /// The relay saw no RTP for too long: hang up both legs.
    #[must_use]
    pub fn on_media_timeout(&mut self, now: Instant) -> Vec<Command> {
        let mut out = Vec::new();
        if self.phase == Phase::Answered {
            info!("no media: hanging up");
            self.hangup_both(now, &mut out);
            self.end(Disposition::Answered, HangupLeg::System, now, &mut out);
        }
        out
    }

    /// The system ends the call (an admin's hang-up): BYE both legs once answered; while
    /// ringing, the forks are cancelled and the caller gets 480, with no dialplan
    /// fallback (the admin wants the call gone, not sent to voicemail).
    #[must_use]
    pub fn hang_up(&mut self, now: Instant) -> Vec<Command> {
        let mut out = Vec::new();
        match self.phase {
            Phase::Answered => {
                info!("hung up by the system");
                self.hangup_both(now, &mut out);
                self.end(Disposition::Answered, HangupLeg::System, now, &mut out);
            }
            Phase::Ringing => {
                info!("hung up by the system while ringing");
                self.held.clear();
                let mut evs = self.cancel_forks(&mut out);
                evs.extend(
                    self.dialogs
                        .respond(&self.a_dialog, &self.a_key, 480, MsgOpts::default(), now)
                        .unwrap_or_default(),
                );
                self.end(Disposition::Cancelled, HangupLeg::System, now, &mut out);
                self.absorb(evs, now, &mut out);
            }
            Phase::Ended => {}
        }
        out
    }

    /// Fires what is due at `now`.
    #[must_use]
    pub fn on_timer(&mut self, now: Instant) -> Vec<Command> {
        let mut out = Vec::new();
        let events = self.dialogs.on_timer(now);
        self.absorb(events, now, &mut out);
        if self.phase == Phase::Ringing && now >= self.no_answer_at {
            info!("no answer: giving up");
            self.fail_caller(480, Disposition::NoAnswer, HangupLeg::System, now, &mut out);
        }
        out
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let ringing = (self.phase == Phase::Ringing).then_some(self.no_answer_at);
        let linger = self.ended_at.map(|t| t + self.linger);
        [self.dialogs.next_deadline(), ringing, linger]
            .into_iter()
            .flatten()
            .min()
    }

    fn absorb(&mut self, events: Vec<DialogEvent>, now: Instant, out: &mut Vec<Command>) {
        let mut queue: VecDeque<DialogEvent> = events.into();
        while let Some(ev) = queue.pop_front() {
            let more = self.handle(ev, now, out);
            queue.extend(more);
        }
    }

    fn handle(
        &mut self,
        ev: DialogEvent,
        now: Instant,
        out: &mut Vec<Command>,
    ) -> Vec<DialogEvent> {
        match ev {
            DialogEvent::SendRequest { req, to } => out.push(Command::SendRequest { req, to }),
            DialogEvent::SendAck { req, to } => out.push(Command::SendAck { req, to }),
            DialogEvent::SendResponse { key, resp } => out.push(Command::Respond { key, resp }),
            DialogEvent::Created { .. } | DialogEvent::Acked { .. } => {}
            DialogEvent::Prack { id, .. } => {
                if id == self.a_dialog {
                    if self.rel_sdp_unacked {
                        self.rel_sdp_unacked = false;
                        self.early_done[0] = true;
                    }
                    return self.flush_held(now);
                }
            }
            DialogEvent::InviteProgress { invite, id, resp } => {
                return self.on_progress(&invite, id, &resp, now, out);
            }
            DialogEvent::InviteFailed { invite, resp } => {
                if let Some(f) = self.forks.get_mut(&invite) {
                    f.state = ForkState::Failed(resp.status);
                }
                if self.phase == Phase::Ringing && !self.forks.any_pending() {
                    let (status, disposition) = self.best_failure();
                    let hangup = if disposition == Disposition::Busy {
                        HangupLeg::Callee
                    } else {
                        HangupLeg::System
                    };
                    self.fail_caller(status, disposition, hangup, now, out);
                }
            }
            DialogEvent::Response { id, method, resp } => {
                let initial = method == Method::Invite
                    && (200..300).contains(&resp.status)
                    && id.call_id == self.callee_call_id;
                if initial && self.winner.as_ref() != Some(&id) {
                    if self.phase == Phase::Ringing && self.winner.is_none() {
                        return self.on_answer(id, resp, now, out);
                    }
                    // Another fork answered first, or the call is over: hang it up.
                    if let Some(i) = self.forks.index_of(&id) {
                        self.forks[i].state = ForkState::Failed(487);
                    }
                    return self.dialogs.bye(&id, now).unwrap_or_default();
                }
                if resp.status >= 200 {
                    return self.on_relayed_answer(&id, &method, &resp, now, out);
                }
            }
            DialogEvent::Request { id, key, req } => {
                return self.on_in_dialog(&id, &key, &req, now, out);
            }
            DialogEvent::RefreshDue { id } => {
                return self
                    .dialogs
                    .request(&id, Method::Update, MsgOpts::default(), now)
                    .unwrap_or_default();
            }
            DialogEvent::Terminated { id, reason } => {
                return self.on_terminated(&id, reason, now, out);
            }
        }
        Vec::new()
    }

    fn on_progress(
        &mut self,
        invite: &InviteId,
        id: Option<DialogId>,
        resp: &Response,
        now: Instant,
        out: &mut Vec<Command>,
    ) -> Vec<DialogEvent> {
        if let Provisional::Cancel(cancel) =
            self.forks
                .on_provisional(invite, resp.status, &self.dialogs)
        {
            out.push(cancel);
            return Vec::new();
        }
        if self.phase != Phase::Ringing || resp.status == 100 {
            return Vec::new();
        }
        // A reliable 18x from the callee (PRACKed by the dialog layer already) goes on
        // reliably when the caller supports 100rel: its early SDP is then an answer the
        // caller must acknowledge, as the callee meant.
        let reliable = resp
            .headers
            .list(&HeaderName::Require)
            .any(|o| o.trim().eq_ignore_ascii_case("100rel"));
        let mut opts = MsgOpts {
            reliable,
            ..MsgOpts::default()
        };
        if !self.early_media {
            if let Some(sdp) = response_sdp(resp) {
                if let Some(body) = self.answer_for_a(&sdp, out) {
                    opts.body = Some(body);
                    self.early_media = true;
                    self.early_b = id;
                    self.early_done[1] = reliable;
                    self.relay_remote(1, &sdp, out);
                }
            }
        }
        let status = if opts.body.is_some() { 183 } else { 180 };
        if !self.rang {
            self.rang = true;
            info!(status = resp.status, reliable, "ringing");
        } else if opts.body.is_none() {
            return Vec::new(); // the caller heard it already
        }
        self.send_to_a(status, opts, now).unwrap_or_default()
    }

    /// Whether a 1xx to the caller with these options goes out reliably.
    fn reliable_to_a(&self, opts: &MsgOpts) -> bool {
        match self.a_100rel {
            Rel100::Required => true,
            Rel100::Supported => opts.reliable,
            Rel100::No => false,
        }
    }

    /// Answers the caller's INVITE, unless RFC 3262 3 says to wait for the PRACK of our
    /// reliable 1xx: another reliable 1xx, or a 2xx after a reliable 1xx with SDP, is
    /// held (in order) and sent when the PRACK comes ([`Self::flush_held`]).
    fn send_to_a(
        &mut self,
        status: u16,
        opts: MsgOpts,
        now: Instant,
    ) -> Result<Vec<DialogEvent>, crate::sip::dialog::DialogError> {
        let awaiting = self
            .dialogs
            .get(&self.a_dialog)
            .is_some_and(|d| d.awaiting_prack());
        if status >= 300 {
            self.held.clear();
        } else if awaiting || !self.held.is_empty() {
            let wait = if status < 200 {
                self.reliable_to_a(&opts) || !self.held.is_empty()
            } else {
                self.rel_sdp_unacked || !self.held.is_empty()
            };
            if wait {
                self.held.push_back((status, opts));
                return Ok(Vec::new());
            }
        }
        let with_sdp = opts.body.is_some();
        let evs = self
            .dialogs
            .respond(&self.a_dialog, &self.a_key, status, opts, now)?;
        if status < 200
            && with_sdp
            && self
                .dialogs
                .get(&self.a_dialog)
                .is_some_and(|d| d.awaiting_prack())
        {
            self.rel_sdp_unacked = true;
        }
        Ok(evs)
    }

    /// The caller PRACKed: send what waited for it, up to the next reliable 1xx.
    fn flush_held(&mut self, now: Instant) -> Vec<DialogEvent> {
        let mut evs = Vec::new();
        while let Some((status, opts)) = self.held.pop_front() {
            let rest = std::mem::take(&mut self.held);
            if let Ok(e) = self.send_to_a(status, opts, now) {
                evs.extend(e);
            }
            let stop = self
                .dialogs
                .get(&self.a_dialog)
                .is_some_and(|d| d.awaiting_prack());
            if status >= 300 {
                break; // final: nothing after it matters
            }
            self.held.extend(rest);
            if stop {
                break;
            }
        }
        evs
    }

    /// The callee's SDP (answer) rewritten for leg A. None when it does not fit the offer.
    fn answer_for_a(
        &mut self,
        answer: &SessionDescription,
        out: &mut Vec<Command>,
    ) -> Option<Body> {
        sdp::validate_answer(&self.b_offer, answer).ok()?;
        self.answer_for(0, answer, out).map(|s| sdp_body(&s))
    }

    /// The caller's telephone-events reach a callee that did not answer with any as INFO.
    fn dtmf_conversion(&self, answer: &SessionDescription, out: &mut Vec<Command>) {
        let Some(index) = self.relayed.iter().position(|r| *r) else {
            return;
        };
        let caller = self.offers[0]
            .as_ref()
            .and_then(|o| o.media.get(index))
            .and_then(|m| m.telephone_event());
        let callee = answer.media.get(index).and_then(|m| m.telephone_event());
        if let (Some(te), None) = (caller, callee) {
            out.push(Command::DtmfAsInfo {
                leg: Leg::A,
                pt: te.payload_type,
                clock: te.clock_rate,
            });
        }
    }

    /// An answer going back to leg `leg`, which made the offer: rewritten to the relay,
    /// and with the leg's own codec in it when the answerer chose one the leg did not
    /// offer (then the relay transcodes). None when no codec works for both.
    fn answer_for(
        &mut self,
        leg: usize,
        answer: &SessionDescription,
        out: &mut Vec<Command>,
    ) -> Option<SessionDescription> {
        let (Some(index), Some(offer)) = (
            self.relayed.iter().position(|r| *r),
            self.offers[leg].as_ref(),
        ) else {
            return self.rewrite_for(leg, answer);
        };
        let fitted = match codecs::fit_answer(offer, answer, index, self.codec, &self.codecs) {
            codecs::Fit::Relay => {
                if self.transcoding {
                    self.transcoding = false;
                    out.push(Command::Transcode(None));
                }
                let formats = codecs::relay_formats(offer, answer, index, self.codec)
                    .map(|[o, a]| if leg == 0 { [o, a] } else { [a, o] });
                self.tell_formats(
                    formats.map_or([None, None], |[a, b]| [Some(a), Some(b)]),
                    out,
                );
                answer.clone()
            }
            codecs::Fit::Transcode {
                answer,
                offerer,
                answerer,
            } => {
                let formats = if leg == 0 {
                    [offerer, answerer]
                } else {
                    [answerer, offerer]
                };
                info!(a = ?formats[0].codec, b = ?formats[1].codec, "transcoding");
                self.transcoding = true;
                out.push(Command::Transcode(Some(formats)));
                self.tell_formats(formats.map(Some), out);
                *answer
            }
            codecs::Fit::NoCodec => return None,
        };
        self.rewrite_for(leg, &fitted)
    }

    /// [`Command::Formats`] when they differ from what was told last, and in-band key
    /// detection on a leg without telephone-event whose peer has it.
    fn tell_formats(&mut self, formats: [Option<LegFormat>; 2], out: &mut Vec<Command>) {
        if self.formats != Some(formats) {
            self.formats = Some(formats);
            out.push(Command::Formats(formats));
            for leg in 0..2 {
                let listen = match (formats[leg], formats[1 - leg]) {
                    (Some(me), Some(peer)) if me.dtmf_pt.is_none() && peer.dtmf_pt.is_some() => {
                        Some(me)
                    }
                    _ => None,
                };
                if listen != self.inband[leg] {
                    self.inband[leg] = listen;
                    out.push(Command::InBandDtmf {
                        leg: if leg == 0 { Leg::A } else { Leg::B },
                        format: listen,
                    });
                }
            }
        }
    }

    /// An SDP received on one leg rewritten for leg `leg` (0 = A, 1 = B): the relay's
    /// address and that leg's port, that leg's o= line. Streams beyond the relayed one
    /// are declined.
    fn rewrite_for(&mut self, leg: usize, sdp: &SessionDescription) -> Option<SessionDescription> {
        let port = self.relay_ports[leg];
        let relay = RelayLeg {
            address: self.media_ip,
            ports: (0..sdp.media.len())
                .map(|i| {
                    self.relayed
                        .get(i)
                        .copied()
                        .unwrap_or(false)
                        .then_some(port)
                })
                .collect(),
            rtcp_mux: false,
        };
        let origin = if leg == 0 {
            &mut self.origin_a
        } else {
            &mut self.origin_b
        };
        let out = rewrite_for_relay(sdp, &relay, origin).ok()?;
        self.last_sdp[leg] = Some(out.to_string());
        Some(out)
    }

    /// A leg's dialog: leg B is the fork that answered, before that the one whose early
    /// SDP the caller got.
    fn leg_dialog(&self, leg: usize) -> Option<DialogId> {
        if leg == 0 {
            Some(self.a_dialog.clone())
        } else {
            self.winner.clone().or_else(|| self.early_b.clone())
        }
    }

    /// Which leg a dialog is, if it is one the call bridges.
    fn leg_of(&self, id: &DialogId) -> Option<usize> {
        if *id == self.a_dialog {
            Some(0)
        } else if self.leg_dialog(1).as_ref() == Some(id) {
            Some(1)
        } else {
            None
        }
    }

    fn relay_remote(&self, leg: usize, sdp: &SessionDescription, out: &mut Vec<Command>) {
        if let Some(i) = self.relayed.iter().position(|r| *r) {
            out.push(Command::Remote {
                leg: if leg == 0 { Leg::A } else { Leg::B },
                remote: remote_of(sdp, i),
            });
        }
    }

    fn on_answer(
        &mut self,
        id: DialogId,
        resp: Response,
        now: Instant,
        out: &mut Vec<Command>,
    ) -> Vec<DialogEvent> {
        if let Some(i) = self.forks.index_of(&id) {
            self.forks[i].state = ForkState::Answered;
        }
        self.winner = Some(id.clone());
        let answer = response_sdp(&resp);
        let usable = answer.as_ref().and_then(|a| {
            let streams = negotiate(&self.b_offer, a).ok()?;
            (!no_common_codec(&streams)).then_some(a)
        });
        let fitted = usable.and_then(|a| Some((a.clone(), self.answer_for_a(a, out)?)));
        let Some((answer, body)) = fitted else {
            info!("callee answered without a usable SDP answer: 488");
            let mut evs = self.dialogs.bye(&id, now).unwrap_or_default();
            evs.extend(self.cancel_forks(out));
            evs.extend(
                self.dialogs
                    .respond(&self.a_dialog, &self.a_key, 488, MsgOpts::default(), now)
                    .unwrap_or_default(),
            );
            self.end(Disposition::Failed, HangupLeg::System, now, out);
            return evs;
        };
        self.relay_remote(1, &answer, out);
        self.dtmf_conversion(&answer, out);
        let mut evs = self.cancel_forks(out);
        let opts = MsgOpts {
            body: Some(body),
            headers: vec![(HeaderName::Allow, ALLOW.into())],
            ..MsgOpts::default()
        };
        match self.send_to_a(200, opts, now) {
            Ok(e) => {
                evs.extend(e);
                self.phase = Phase::Answered;
                info!("answered");
                out.push(Command::Answered);
            }
            Err(_) => {
                // The caller is gone (cancelled meanwhile): hang up the callee.
                evs.extend(self.dialogs.bye(&id, now).unwrap_or_default());
                self.end(Disposition::Cancelled, HangupLeg::Caller, now, out);
            }
        }
        evs
    }

    /// The best final response for the caller when every fork failed (RFC 3261 16.7
    /// spirit: busy wins, then a decline, else temporarily unavailable).
    fn best_failure(&self) -> (u16, Disposition) {
        let statuses = self.forks.failures();
        if statuses.iter().any(|s| *s == 486 || *s == 600) {
            (486, Disposition::Busy)
        } else if statuses.contains(&603) {
            (603, Disposition::Busy)
        } else if statuses.iter().all(|s| matches!(s, 408 | 480 | 487)) {
            (480, Disposition::NoAnswer)
        } else {
            (480, Disposition::Failed)
        }
    }

    fn fail_caller(
        &mut self,
        status: u16,
        disposition: Disposition,
        hangup: HangupLeg,
        now: Instant,
        out: &mut Vec<Command>,
    ) {
        self.held.clear();
        let mut evs = self.cancel_forks(out);
        let outcome = if disposition == Disposition::Busy {
            DialOutcome::Busy
        } else if self.rang || disposition == Disposition::NoAnswer && now >= self.no_answer_at {
            DialOutcome::NoAnswer
        } else {
            DialOutcome::Unavailable
        };
        if self.fallback.contains(&outcome) {
            info!(
                ?outcome,
                "nobody answered: the caller goes back to the dialplan"
            );
            self.handed_back = self.dialogs.remove(&self.a_dialog);
            out.push(Command::Unanswered { outcome });
            self.end(disposition, hangup, now, out);
            self.absorb(evs, now, out);
            return;
        }
        evs.extend(
            self.dialogs
                .respond(&self.a_dialog, &self.a_key, status, MsgOpts::default(), now)
                .unwrap_or_default(),
        );
        self.end(disposition, hangup, now, out);
        self.absorb(evs, now, out);
    }

    /// CANCELs every fork still ringing or trying; one that has not answered anything yet
    /// is cancelled when its first provisional response comes (RFC 3261 9.1), or ends by
    /// its own timeout.
    fn cancel_forks(&mut self, out: &mut Vec<Command>) -> Vec<DialogEvent> {
        out.extend(self.forks.cancel_all(&self.dialogs));
        Vec::new()
    }

    fn hangup_both(&mut self, now: Instant, out: &mut Vec<Command>) {
        let mut evs = self
            .dialogs
            .bye(&self.a_dialog.clone(), now)
            .unwrap_or_default();
        if let Some(w) = self.winner.clone() {
            evs.extend(self.dialogs.bye(&w, now).unwrap_or_default());
        }
        self.absorb(evs, now, out);
    }

    fn end(
        &mut self,
        disposition: Disposition,
        hangup: HangupLeg,
        now: Instant,
        out: &mut Vec<Command>,
    ) {
        if self.phase == Phase::Ended {
            return;
        }
        self.phase = Phase::Ended;
        self.ended_at = Some(now);
        info!(
            disposition = disposition.as_str(),
            hangup = hangup.as_str(),
            "call ended"
        );
        out.push(Command::Ended {
            disposition,
            hangup,
        });
    }

    fn on_terminated(
        &mut self,
        id: &DialogId,
        reason: TerminateReason,
        now: Instant,
        out: &mut Vec<Command>,
    ) -> Vec<DialogEvent> {
        let mut evs = Vec::new();
        if *id == self.a_dialog {
            match reason {
                TerminateReason::LocalBye | TerminateReason::Rejected(_) => {}
                TerminateReason::RemoteBye => {
                    if let Some(w) = self.winner.clone() {
                        evs = self.dialogs.bye(&w, now).unwrap_or_default();
                    }
                    evs.extend(self.cancel_forks(out));
                    let disposition = if self.winner.is_some() {
                        Disposition::Answered
                    } else {
                        Disposition::Cancelled
                    };
                    self.end(disposition, HangupLeg::Caller, now, out);
                }
                TerminateReason::Cancelled => {
                    info!("caller cancelled");
                    // A callee that answered while its 200 waited for the caller's PRACK.
                    if let Some(w) = self.winner.clone() {
                        evs = self.dialogs.bye(&w, now).unwrap_or_default();
                    }
                    evs.extend(self.cancel_forks(out));
                    self.end(Disposition::Cancelled, HangupLeg::Caller, now, out);
                }
                _ => {
                    // No ACK for our 200 (the layer sent BYE), session expired, the
                    // caller's phone is gone: hang up the callee too.
                    if let Some(w) = self.winner.clone() {
                        evs = self.dialogs.bye(&w, now).unwrap_or_default();
                    }
                    evs.extend(self.cancel_forks(out));
                    info!(?reason, "caller leg lost");
                    self.end(Disposition::Failed, HangupLeg::System, now, out);
                }
            }
        } else if self.winner.as_ref() == Some(id) {
            match reason {
                TerminateReason::LocalBye => {}
                TerminateReason::RemoteBye => {
                    evs = self
                        .dialogs
                        .bye(&self.a_dialog.clone(), now)
                        .unwrap_or_default();
                    self.end(Disposition::Answered, HangupLeg::Callee, now, out);
                }
                _ => {
                    info!(?reason, "callee leg lost");
                    evs = self
                        .dialogs
                        .bye(&self.a_dialog.clone(), now)
                        .unwrap_or_default();
                    self.end(Disposition::Answered, HangupLeg::System, now, out);
                }
            }
        }
        evs
    }

    /// Refuses a request of dialog `id` with `status`. A 500 says when to come back (RFC
    /// 3261 14.2, RFC 3311 5.2: 0 to 10 s, random); a 501 says what we accept.
    fn refuse(
        &mut self,
        id: &DialogId,
        key: &TxKey,
        status: u16,
        now: Instant,
    ) -> Vec<DialogEvent> {
        let mut opts = MsgOpts::default();
        match status {
            500 => opts.headers.push((
                HeaderName::Other("Retry-After".into()),
                self.rng.gen_range(0..=10u32).to_string(),
            )),
            501 => opts.headers.push((HeaderName::Allow, ALLOW.into())),
            _ => {}
        }
        self.dialogs
            .respond(id, key, status, opts, now)
            .unwrap_or_default()
    }

    /// Remembers a request relayed to the other leg (`evs`: what the dialog layer made of
    /// it), to pass its final response back.
    #[allow(clippy::too_many_arguments)]
    fn track_relayed(
        &mut self,
        from: usize,
        from_id: &DialogId,
        key: &TxKey,
        to_id: DialogId,
        method: Method,
        offer: bool,
        hold_before: bool,
        evs: &[DialogEvent],
    ) {
        let cseq = evs.iter().find_map(|e| match e {
            DialogEvent::SendRequest { req, .. } => message::cseq(&req.headers).ok().map(|c| c.0),
            _ => None,
        });
        self.in_flight.push(Relayed {
            from,
            from_id: from_id.clone(),
            key: key.clone(),
            to_id,
            method,
            cseq: cseq.unwrap_or(0),
            offer,
            hold_before,
        });
    }

    /// A re-INVITE or UPDATE with an SDP offer from leg `from`: the offer goes to the
    /// other leg in the same method, rewritten to the relay (hold directions pass through,
    /// the other phone's answer picks the codecs), and the answer comes back the same way
    /// ([`Self::on_relayed_answer`]). One offer crosses the call at a time (RFC 3261
    /// 14.1, RFC 3311 5.2): while an offer from the other leg waits for this leg's answer,
    /// a new offer from this leg is glare (491); while this leg's own previous offer
    /// waits, it gets 500 with Retry-After. The dialog layer refuses a re-INVITE that
    /// crosses ours on the same leg (491) before we see it.
    #[allow(clippy::too_many_arguments)]
    fn relay_offer(
        &mut self,
        from: usize,
        from_id: &DialogId,
        key: &TxKey,
        method: &Method,
        offer: &SessionDescription,
        now: Instant,
        out: &mut Vec<Command>,
    ) -> Vec<DialogEvent> {
        if let Some(p) = self.in_flight.iter().find(|r| r.offer) {
            let status = if p.from == from { 500 } else { 491 };
            return self.refuse(from_id, key, status, now);
        }
        let other = 1 - from;
        let Some(target) = self.leg_dialog(other) else {
            return self.refuse(from_id, key, 500, now);
        };
        let Some(mut rewritten) = self.rewrite_for(other, offer) else {
            return self.refuse(from_id, key, 488, now);
        };
        if let Some(index) = self.relayed.iter().position(|r| *r) {
            codecs::extend_offer(&mut rewritten, index, &self.codecs);
        }
        self.offers[from] = Some(offer.clone());
        match self.dialogs.request(
            &target,
            method.clone(),
            MsgOpts::body(sdp_body(&rewritten)),
            now,
        ) {
            Ok(evs) => {
                let hold_before = self.on_hold;
                self.relay_remote(from, offer, out);
                let hold = sdp::is_hold(offer);
                if hold != self.on_hold {
                    self.on_hold = hold;
                    out.push(Command::Hold(hold));
                }
                info!(from = leg_name(from), %method, hold, "offer relayed");
                self.track_relayed(
                    from,
                    from_id,
                    key,
                    target,
                    method.clone(),
                    true,
                    hold_before,
                    &evs,
                );
                evs
            }
            // Glare with our own request on that leg (491), or the leg is gone.
            Err(e) => self.refuse(from_id, key, e.status(), now),
        }
    }

    /// An INFO from leg `from` goes to the other leg with its body, Content-Type and
    /// package headers (RFC 6086: DTMF relay and the like are meant for the far phone);
    /// its final response comes back ([`Self::on_relayed_answer`]).
    /// A DTMF INFO from leg `from` becomes RFC 4733 events when the other leg negotiated
    /// telephone-event: a phone that did may well ignore INFO. Other INFOs are relayed.
    fn info_as_events(&self, from: usize, req: &Request) -> Option<Command> {
        if self.phase != Phase::Answered {
            return None;
        }
        let format = req
            .headers
            .get(&HeaderName::ContentType)
            .and_then(InfoFormat::from_content_type)?;
        let d = parse_info(format, &req.body).ok()?;
        let cmd = self.dtmf_as_events(1 - from, d.digit, d.duration_ms)?;
        info!(from = leg_name(from), digit = %d.digit, "DTMF INFO as RFC 4733");
        Some(cmd)
    }

    fn relay_request(
        &mut self,
        from: usize,
        from_id: &DialogId,
        key: &TxKey,
        req: &Request,
        now: Instant,
    ) -> Vec<DialogEvent> {
        let Some(target) = self.leg_dialog(1 - from) else {
            // Nobody to pass it to yet (ringing, no early dialog chosen).
            return self.refuse(from_id, key, 480, now);
        };
        let mut opts = MsgOpts::default();
        if !req.body.is_empty() {
            let ct = req
                .headers
                .get(&HeaderName::ContentType)
                .unwrap_or("application/octet-stream");
            opts.body = Some(Body::new(ct, req.body.clone()));
        }
        for h in req.headers.iter() {
            if let HeaderName::Other(n) = &h.name {
                if INFO_HEADERS.iter().any(|x| x.eq_ignore_ascii_case(n)) {
                    opts.headers.push((h.name.clone(), h.value.clone()));
                }
            }
        }
        match self.dialogs.request(&target, req.method.clone(), opts, now) {
            Ok(evs) => {
                info!(from = leg_name(from), method = %req.method, "request relayed");
                let hold = self.on_hold;
                self.track_relayed(
                    from,
                    from_id,
                    key,
                    target,
                    req.method.clone(),
                    false,
                    hold,
                    &evs,
                );
                evs
            }
            Err(e) => self.refuse(from_id, key, e.status(), now),
        }
    }

    /// The final response to a request we relayed: passed back to the leg that sent it,
    /// an SDP answer rewritten to the relay (and the relay pointed at the answering
    /// phone), a timeout as the 408 the dialog layer made of it. A refused offer puts the
    /// hold state back; a 491 to our relayed re-INVITE is not retried by us: the
    /// originator gets it and retries itself (RFC 3261 14.1).
    fn on_relayed_answer(
        &mut self,
        id: &DialogId,
        method: &Method,
        resp: &Response,
        now: Instant,
        out: &mut Vec<Command>,
    ) -> Vec<DialogEvent> {
        let num = message::cseq(&resp.headers).map(|c| c.0).unwrap_or(0);
        let Some(i) = self
            .in_flight
            .iter()
            .position(|r| r.to_id == *id && r.method == *method && r.cseq == num)
        else {
            return Vec::new();
        };
        let r = self.in_flight.remove(i);
        let mut opts = MsgOpts::default();
        let mut status = resp.status;
        if r.offer && (200..300).contains(&status) {
            if let Some(answer) = response_sdp(resp) {
                self.relay_remote(1 - r.from, &answer, out);
                opts.body = self.answer_for(r.from, &answer, out).map(|s| sdp_body(&s));
            }
            if opts.body.is_none() {
                // A 2xx without a usable answer: the offer failed as far as the
                // originator can tell.
                status = 488;
            }
        } else if r.offer {
            if status == 491 && *method == Method::Invite {
                self.dialogs.forgo_glare_retry(id);
            }
            if self.on_hold != r.hold_before {
                self.on_hold = r.hold_before;
                out.push(Command::Hold(r.hold_before));
            }
        } else if !resp.body.is_empty() {
            let ct = resp
                .headers
                .get(&HeaderName::ContentType)
                .unwrap_or("application/octet-stream");
            opts.body = Some(Body::new(ct, resp.body.clone()));
        }
        info!(to = leg_name(r.from), %method, status, "response relayed");
        self.dialogs
            .respond(&r.from_id, &r.key, status, opts, now)
            .unwrap_or_default()
    }

    /// A request inside one of the call's dialogs (BYE, PRACK, CSeq and same-leg
    /// re-INVITE glare are answered by the dialog layer). An offer (re-INVITE or UPDATE
    /// with SDP) is relayed to the other leg once the call is answered, or in the early
    /// dialogs when both legs finished their first offer/answer in reliable 1xx; INFO is
    /// relayed; a re-INVITE or UPDATE without body (a session refresh, RFC 4028) and
    /// OPTIONS are answered here.
    ///
    /// NOTIFY, REFER, SUBSCRIBE, MESSAGE and unknown methods get 501: NOTIFY in an INVITE
    /// dialog belongs to a subscription the REFER or SUBSCRIBE that made it created, and
    /// we relay neither, so the other phone would have nothing to match it against; 481
    /// ("no such subscription", RFC 6665) would be exact, but some phones take a 481 to
    /// any in-dialog request as the end of the call (RFC 3261 12.2.1.2), while a 501
    /// touches only that transaction (RFC 5057 5.1).
    fn on_in_dialog(
        &mut self,
        id: &DialogId,
        key: &TxKey,
        req: &Request,
        now: Instant,
        out: &mut Vec<Command>,
    ) -> Vec<DialogEvent> {
        let leg = self.leg_of(id);
        match &req.method {
            Method::Invite | Method::Update => {
                if req.body.is_empty() {
                    // A refresh: nothing changes. A body-less re-INVITE asks for an offer
                    // (answered in its ACK, which we ignore): our last SDP on that leg.
                    let body = (req.method == Method::Invite)
                        .then(|| self.last_sdp[leg.unwrap_or(1)].clone())
                        .flatten();
                    let opts = MsgOpts {
                        body: body.map(|b| Body::new(SDP, b.into_bytes())),
                        ..MsgOpts::default()
                    };
                    return self
                        .dialogs
                        .respond(id, key, 200, opts, now)
                        .unwrap_or_default();
                }
                let Some(offer) = body_sdp(&req.body, req.headers.get(&HeaderName::ContentType))
                else {
                    return self.refuse(id, key, 488, now);
                };
                let bridged = match self.phase {
                    Phase::Answered => true,
                    // RFC 3311 5.1: an UPDATE offer in an early dialog only after the
                    // first offer/answer finished; until then it is an offer on top of
                    // an unanswered one: 500 with Retry-After.
                    Phase::Ringing => req.method == Method::Update && self.early_done == [true; 2],
                    Phase::Ended => false,
                };
                match leg {
                    Some(leg) if bridged => {
                        self.relay_offer(leg, id, key, &req.method, &offer, now, out)
                    }
                    _ => self.refuse(id, key, 500, now),
                }
            }
            Method::Info => match leg {
                Some(leg) => {
                    if let Some(cmd) = self.info_as_events(leg, req) {
                        out.push(cmd);
                        return self
                            .dialogs
                            .respond(id, key, 200, MsgOpts::default(), now)
                            .unwrap_or_default();
                    }
                    self.relay_request(leg, id, key, req, now)
                }
                None => self.refuse(id, key, 480, now),
            },
            Method::Options => {
                let opts = MsgOpts {
                    headers: vec![
                        (HeaderName::Allow, ALLOW.into()),
                        (HeaderName::Other("Accept".into()), SDP.into()),
                        (HeaderName::Supported, "100rel".into()),
                    ],
                    ..MsgOpts::default()
                };
                self.dialogs
                    .respond(id, key, 200, opts, now)
                    .unwrap_or_default()
            }
            _ => self.refuse(id, key, 501, now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_sip::{parse_req, peer, settings};
    use super::*;
    use crate::media::codec::CodecKind;
    use crate::sip::message;

    const OFFER: &str = "v=0\r\no=a 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\n\
                         t=0 0\r\nm=audio 6000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
                         a=rtpmap:101 telephone-event/8000\r\n";
    const ANSWER: &str = "v=0\r\no=b 1 1 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\n\
                          t=0 0\r\nm=audio 7000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    const PBX: &str = "203.0.113.1";

    fn caller_invite() -> Request {
        parse_req(
            "INVITE sip:200@203.0.113.1 SIP/2.0\n\
             Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKcaller1\n\
             From: \"Alice\" <sip:100@203.0.113.1>;tag=ca\n\
             To: <sip:200@203.0.113.1>\n\
             Call-ID: call-a\n\
             CSeq: 2 INVITE\n\
             Contact: <sip:100@192.0.2.10:5060>\n\
             Max-Forwards: 70\n\
             Content-Type: application/sdp",
            OFFER,
        )
    }

    struct T {
        call: Call,
        now: Instant,
        a_key: TxKey,
        /// The INVITEs sent to leg B, one per fork.
        b_invites: Vec<(Request, Peer)>,
        /// What the caller got so far: (status, response).
        to_a: Vec<Response>,
        ended: Option<(Disposition, HangupLeg)>,
        requests: Vec<Request>,
        cancels: Vec<TxKey>,
        acks: Vec<Request>,
        remotes: Vec<(Leg, Remote)>,
        /// Responses to other server transactions than the caller's INVITE.
        responses: Vec<(TxKey, Response)>,
        holds: Vec<bool>,
        transcodes: Vec<Option<[LegFormat; 2]>>,
        formats: Vec<[Option<LegFormat>; 2]>,
        dtmf_as_info: Vec<(Leg, u8, u32)>,
        sent_dtmf: Vec<(Leg, u8, Digit, Option<u32>)>,
        inband: Vec<(Leg, Option<LegFormat>)>,
        unanswered: Option<DialOutcome>,
    }

    fn start(forks: usize) -> T {
        start_with(forks, caller_invite())
    }

    fn start_with(forks: usize, invite: Request) -> T {
        start_full(forks, invite, false)
    }

    /// A call whose caller goes back to the dialplan when nobody answers.
    fn start_fallback(forks: usize) -> T {
        start_full(forks, caller_invite(), true)
    }

    fn start_full(forks: usize, invite: Request, fallback: bool) -> T {
        let now = Instant::now();
        let key = TxKey::server(&invite).expect("key");
        let targets = (0..forks)
            .map(|i| Target {
                request_uri: format!("sip:200@192.0.2.{}:5060", 20 + i),
                peer: peer(&format!("192.0.2.{}:5060", 20 + i)),
                local_contact: "sip:ringfort@203.0.113.1:5060".into(),
                route: Vec::new(),
                headers: Vec::new(),
            })
            .collect();
        let p = CallParams {
            key: key.clone(),
            invite,
            from: peer("192.0.2.10:5060"),
            offer: SessionDescription::parse(OFFER).expect("sdp"),
            caller: "100".into(),
            caller_name: "Alice".into(),
            callee: "200".into(),
            caller_contact: "sip:ringfort@203.0.113.1:5060".into(),
            domain: "203.0.113.1".into(),
            targets,
            callee_call_id: "call-b".into(),
            media_ip: PBX.parse().expect("ip"),
            relay_ports: [30000, 30002],
            seed: 7,
            caller_dialog: None,
            ring_timeout: None,
            fallback: if fallback {
                vec![
                    DialOutcome::Busy,
                    DialOutcome::NoAnswer,
                    DialOutcome::Unavailable,
                ]
            } else {
                Vec::new()
            },
        };
        let settings = settings();
        let (call, cmds) = Call::new(p, settings, now).expect("call");
        let mut t = T {
            call,
            now,
            a_key: key,
            b_invites: Vec::new(),
            to_a: Vec::new(),
            ended: None,
            requests: Vec::new(),
            cancels: Vec::new(),
            acks: Vec::new(),
            remotes: Vec::new(),
            responses: Vec::new(),
            holds: Vec::new(),
            transcodes: Vec::new(),
            formats: Vec::new(),
            dtmf_as_info: Vec::new(),
            sent_dtmf: Vec::new(),
            inband: Vec::new(),
            unanswered: None,
        };
        t.take(cmds);
        assert_eq!(t.b_invites.len(), forks);
        t
    }

    impl T {
        fn take(&mut self, cmds: Vec<Command>) {
            for c in cmds {
                match c {
                    Command::SendRequest { req, to } => {
                        if req.method == Method::Invite
                            && req.headers.get(&HeaderName::CallId) == Some("call-b")
                            && !req
                                .headers
                                .get(&HeaderName::To)
                                .unwrap_or("")
                                .contains("tag=")
                        {
                            self.b_invites.push((req, to));
                        } else {
                            self.requests.push(req);
                        }
                    }
                    Command::Respond { key, resp } => {
                        if key == self.a_key {
                            self.to_a.push(resp);
                        } else {
                            self.responses.push((key, resp));
                        }
                    }
                    Command::Cancel { invite, .. } => self.cancels.push(invite),
                    Command::SendAck { req, .. } => self.acks.push(req),
                    Command::Remote { leg, remote } => self.remotes.push((leg, remote)),
                    Command::Ended {
                        disposition,
                        hangup,
                    } => {
                        assert!(self.ended.is_none(), "ended twice");
                        self.ended = Some((disposition, hangup));
                    }
                    Command::Hold(on) => self.holds.push(on),
                    Command::Transcode(f) => self.transcodes.push(f),
                    Command::Formats(f) => self.formats.push(f),
                    Command::DtmfAsInfo { leg, pt, clock } => {
                        self.dtmf_as_info.push((leg, pt, clock))
                    }
                    Command::SendDtmf {
                        leg,
                        pt,
                        digit,
                        duration_ms,
                        ..
                    } => self.sent_dtmf.push((leg, pt, digit, duration_ms)),
                    Command::InBandDtmf { leg, format } => self.inband.push((leg, format)),
                    Command::Ringing | Command::Answered => {}
                    Command::Unanswered { outcome } => {
                        assert!(self.unanswered.is_none(), "handed back twice");
                        self.unanswered = Some(outcome);
                    }
                }
            }
        }

        /// Fork `i` answers 200 with [`ANSWER`]'s PCMU replaced by `codec` ("PT NAME").
        fn fork_answers_with_codec(&mut self, i: usize, codec: &str) {
            let (inv, _) = self.b_invites[i].clone();
            let mut r = Response::for_request(&inv, 200, "OK");
            r.ensure_to_tag(&format!("b{i}"));
            r.headers.push(HeaderName::Contact, "<sip:200@192.0.2.20>");
            r.headers.push(HeaderName::ContentType, SDP);
            let pt = codec.split(' ').next().unwrap_or("0");
            let body = ANSWER
                .replace("RTP/AVP 0", &format!("RTP/AVP {pt}"))
                .replace("0 PCMU", codec);
            r.body = body.into_bytes().into();
            r.headers
                .push(HeaderName::ContentLength, r.body.len().to_string());
            self.sip(SipIn::Response {
                key: TxKey::client(&inv),
                resp: r,
            });
        }

        fn sip(&mut self, input: SipIn) {
            let cmds = self.call.on_sip(input, self.now);
            self.take(cmds);
        }

        fn advance(&mut self, by: Duration) {
            let end = self.now + by;
            while let Some(d) = self.call.next_deadline().filter(|d| *d <= end) {
                self.now = d.max(self.now);
                let cmds = self.call.on_timer(self.now);
                self.take(cmds);
            }
            self.now = end;
        }

        /// Fork `i` answers `status` (with To tag `b{i}`, and the answer SDP on a 2xx).
        fn fork_says(&mut self, i: usize, status: u16) {
            let (inv, _) = self.b_invites[i].clone();
            let mut r = Response::for_request(&inv, status, message::reason_phrase(status));
            if status != 100 {
                r.ensure_to_tag(&format!("b{i}"));
            }
            r.headers.push(
                HeaderName::Contact,
                format!("<sip:200@192.0.2.{}:5060>", 20 + i),
            );
            if (200..300).contains(&status) {
                r.headers.push(HeaderName::ContentType, SDP);
                r.body = ANSWER.as_bytes().to_vec().into();
            }
            r.headers
                .push(HeaderName::ContentLength, r.body.len().to_string());
            let key = TxKey::client(&inv);
            self.sip(SipIn::Response { key, resp: r });
        }

        fn last_to_a(&self) -> u16 {
            self.to_a.last().map_or(0, |r| r.status)
        }

        fn a_tag(&self) -> String {
            let r = self.to_a.last().expect("a response");
            message::to_header(&r.headers)
                .ok()
                .and_then(|t| t.tag().map(str::to_owned))
                .expect("to tag")
        }

        fn caller_acks(&mut self) {
            let tag = self.a_tag();
            let ack = parse_req(
                &format!(
                    "ACK sip:ringfort@203.0.113.1:5060 SIP/2.0\n\
                     Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKack1\n\
                     From: \"Alice\" <sip:100@203.0.113.1>;tag=ca\n\
                     To: <sip:200@203.0.113.1>;tag={tag}\n\
                     Call-ID: call-a\n\
                     CSeq: 2 ACK\n\
                     Max-Forwards: 70"
                ),
                "",
            );
            self.sip(SipIn::Ack(ack));
        }

        fn caller_byes(&mut self) {
            self.caller_sends("BYE", 3, "", "");
        }

        fn callee_byes(&mut self, i: usize) {
            self.callee_sends(i, "BYE", 1, "");
        }

        fn byes_to(&self, call_id: &str) -> usize {
            self.requests
                .iter()
                .filter(|r| {
                    r.method == Method::Bye && r.headers.get(&HeaderName::CallId) == Some(call_id)
                })
                .count()
        }
    }

    fn answered_call() -> T {
        let mut t = start(1);
        t.fork_says(0, 180);
        assert_eq!(t.last_to_a(), 180);
        t.fork_says(0, 200);
        assert_eq!(t.last_to_a(), 200);
        t.caller_acks();
        assert!(t.call.is_answered());
        t
    }

    #[test]
    fn an_answered_call_tells_the_legs_formats() {
        let t = answered_call();
        let [[Some(a), Some(b)]] = t.formats[..] else {
            panic!("{:?}", t.formats);
        };
        assert_eq!((a.codec, a.pt, a.dtmf_pt), (CodecKind::Pcmu, 0, Some(101)));
        assert_eq!((b.codec, b.pt, b.dtmf_pt), (CodecKind::Pcmu, 0, None));
        assert!(t.transcodes.is_empty());
    }

    #[test]
    fn invite_to_the_callee_is_a_new_leg_with_the_relay_in_its_sdp() {
        let t = start(1);
        let (inv, to) = &t.b_invites[0];
        assert_eq!(inv.uri, "sip:200@192.0.2.20:5060");
        assert_eq!(to.remote, "192.0.2.20:5060".parse().expect("addr"));
        let from = inv.headers.get(&HeaderName::From).unwrap_or("");
        assert!(
            from.starts_with("\"Alice\" <sip:100@203.0.113.1>;tag="),
            "{from}"
        );
        assert_ne!(from, "\"Alice\" <sip:100@203.0.113.1>;tag=ca");
        // One hop less than the caller's INVITE had, and exactly one Max-Forwards.
        let caller_mf = message::max_forwards(&caller_invite().headers).unwrap_or(70);
        assert_eq!(inv.headers.count(&HeaderName::MaxForwards), 1);
        assert_eq!(message::max_forwards(&inv.headers), Some(caller_mf - 1));
        let body = String::from_utf8_lossy(&inv.body);
        assert!(body.contains("c=IN IP4 203.0.113.1"), "{body}");
        assert!(body.contains("m=audio 30002 RTP/AVP 0 101"), "{body}");
        assert!(!body.contains("192.0.2.10"), "{body}");
        // The relay learns where the caller listens.
        assert_eq!(
            t.remotes,
            vec![(
                Leg::A,
                Remote::new("192.0.2.10:6000".parse().expect("addr"))
            )]
        );
    }

    #[test]
    fn basic_call_caller_hangs_up() {
        let mut t = answered_call();
        let ok = t.to_a.last().expect("200").clone();
        let body = String::from_utf8_lossy(&ok.body);
        assert!(body.contains("m=audio 30000 RTP/AVP 0"), "{body}");
        assert!(body.contains("c=IN IP4 203.0.113.1"), "{body}");
        assert!(t.remotes.contains(&(
            Leg::B,
            Remote::new("192.0.2.20:7000".parse().expect("addr"))
        )));
        assert_eq!(t.acks.len(), 1, "the callee's 200 is ACKed");
        t.caller_byes();
        assert_eq!(t.byes_to("call-b"), 1);
        assert_eq!(t.ended, Some((Disposition::Answered, HangupLeg::Caller)));
        assert!(t.call.is_finished(t.now));
    }

    #[test]
    fn callee_hangs_up() {
        let mut t = answered_call();
        t.callee_byes(0);
        assert_eq!(t.byes_to("call-a"), 1);
        assert_eq!(t.ended, Some((Disposition::Answered, HangupLeg::Callee)));
    }

    #[test]
    fn forking_first_answer_wins_and_the_loser_is_cancelled() {
        let mut t = start(2);
        t.fork_says(0, 180);
        t.fork_says(1, 180);
        assert_eq!(t.to_a.iter().filter(|r| r.status == 180).count(), 1);
        t.fork_says(1, 200);
        assert_eq!(t.last_to_a(), 200);
        let loser_key = TxKey::client(&t.b_invites[0].0).expect("key");
        assert_eq!(t.cancels, vec![loser_key]);
        assert!(!t.call.is_finished(t.now));
        t.fork_says(0, 487);
        // A late 2xx from a loser is ACKed and hung up.
        let mut t2 = start(2);
        t2.fork_says(0, 200);
        t2.fork_says(1, 200);
        assert_eq!(t2.acks.len(), 2);
        assert_eq!(t2.byes_to("call-b"), 1);
        assert_eq!(t2.to_a.iter().filter(|r| r.status == 200).count(), 1);
    }

    #[test]
    fn busy_callee_gives_486() {
        let mut t = start(2);
        t.fork_says(0, 480);
        assert!(t.to_a.is_empty(), "one fork still rings");
        t.fork_says(1, 486);
        assert_eq!(t.last_to_a(), 486);
        assert_eq!(t.ended, Some((Disposition::Busy, HangupLeg::Callee)));
        assert!(t.call.is_finished(t.now));
    }

    #[test]
    fn no_answer_cancels_forks_and_gives_480() {
        let mut t = start(2);
        t.fork_says(0, 180);
        t.advance(Duration::from_secs(29));
        assert!(t.ended.is_none());
        t.advance(Duration::from_secs(2));
        assert_eq!(t.last_to_a(), 480);
        assert_eq!(
            t.cancels.len(),
            1,
            "fork 1 sent nothing yet: not cancelled yet"
        );
        t.fork_says(1, 100);
        assert_eq!(t.cancels.len(), 2, "cancelled on its first provisional");
        assert_eq!(t.ended, Some((Disposition::NoAnswer, HangupLeg::System)));
        assert!(!t.call.is_finished(t.now), "waits for the forks' 487");
        t.fork_says(0, 487);
        t.fork_says(1, 487);
        assert!(t.call.is_finished(t.now));
    }

    #[test]
    fn a_fallback_call_hands_the_unanswered_caller_back_with_the_outcome() {
        // Busy: every fork said so.
        let mut t = start_fallback(2);
        t.fork_says(0, 486);
        t.fork_says(1, 600);
        assert_eq!(t.unanswered, Some(DialOutcome::Busy));
        assert!(t.to_a.is_empty(), "the caller got no final response");
        let dialog = t.call.take_caller().expect("the caller's dialog");
        assert_eq!(dialog.state(), crate::sip::dialog::DialogState::Early);
        assert!(t.call.take_caller().is_none());

        // Rang, then the timeout: no answer; the forks are still cancelled.
        let mut t = start_fallback(1);
        t.fork_says(0, 180);
        t.advance(Duration::from_secs(31));
        assert_eq!(t.unanswered, Some(DialOutcome::NoAnswer));
        assert_eq!(t.cancels.len(), 1);
        assert!(t.to_a.iter().all(|r| r.status < 200), "{:?}", t.to_a);
        assert!(t.call.take_caller().is_some());

        // Nothing rang: the phone is unreachable.
        let mut t = start_fallback(1);
        t.fork_says(0, 503);
        assert_eq!(t.unanswered, Some(DialOutcome::Unavailable));
    }

    #[test]
    fn caller_cancel_cancels_forks_and_gives_487() {
        let mut t = start(1);
        t.fork_says(0, 180);
        let key = t.a_key.clone();
        t.sip(SipIn::Cancel(key));
        assert_eq!(t.last_to_a(), 487);
        assert_eq!(t.cancels.len(), 1);
        assert_eq!(t.ended, Some((Disposition::Cancelled, HangupLeg::Caller)));
    }

    #[test]
    fn no_ack_from_the_caller_hangs_up_both_legs() {
        let mut t = start(1);
        t.fork_says(0, 200);
        assert_eq!(t.last_to_a(), 200);
        t.advance(Duration::from_secs(40));
        assert_eq!(t.byes_to("call-a"), 1, "the dialog layer gives up with BYE");
        assert_eq!(t.byes_to("call-b"), 1);
        assert_eq!(t.ended, Some((Disposition::Failed, HangupLeg::System)));
    }

    #[test]
    fn media_timeout_hangs_up_both_legs() {
        let mut t = answered_call();
        let cmds = t.call.on_media_timeout(t.now);
        t.take(cmds);
        assert_eq!(t.byes_to("call-a"), 1);
        assert_eq!(t.byes_to("call-b"), 1);
        assert_eq!(t.ended, Some((Disposition::Answered, HangupLeg::System)));
    }

    #[test]
    fn system_hang_up_of_an_answered_call_byes_both_legs() {
        let mut t = answered_call();
        let cmds = t.call.hang_up(t.now);
        t.take(cmds);
        assert_eq!(t.byes_to("call-a"), 1);
        assert_eq!(t.byes_to("call-b"), 1);
        assert_eq!(t.ended, Some((Disposition::Answered, HangupLeg::System)));
        // Once ended, another hang-up does nothing.
        let again = t.call.hang_up(t.now);
        assert!(again.is_empty(), "{again:?}");
    }

    #[test]
    fn system_hang_up_while_ringing_cancels_and_refuses_without_fallback() {
        let mut t = start_fallback(1);
        t.fork_says(0, 180);
        let cmds = t.call.hang_up(t.now);
        t.take(cmds);
        assert_eq!(t.last_to_a(), 480);
        assert_eq!(t.cancels.len(), 1);
        assert_eq!(t.unanswered, None, "no dialplan fallback");
        assert_eq!(t.ended, Some((Disposition::Cancelled, HangupLeg::System)));
    }

    #[test]
    fn answer_without_common_codec_is_488() {
        let mut t = start(1);
        t.fork_answers_with_codec(0, "18 G729");
        assert_eq!(t.last_to_a(), 488);
        assert_eq!(t.byes_to("call-b"), 1);
        assert_eq!(t.ended, Some((Disposition::Failed, HangupLeg::System)));
    }

    #[test]
    fn key_presses_reach_a_callee_without_telephone_event_as_info() {
        // The caller offered telephone-event 101; the callee's answer has none.
        let mut t = answered_call();
        assert_eq!(t.dtmf_as_info, vec![(Leg::A, 101, 8000)]);
        let cmds = t.call.on_dtmf(Leg::A, Digit::D5, 160, t.now);
        t.take(cmds);
        let info = t
            .requests
            .iter()
            .find(|r| r.method == Method::Info)
            .expect("INFO to the callee");
        assert_eq!(info.headers.get(&HeaderName::CallId), Some("call-b"));
        assert_eq!(
            info.headers.get(&HeaderName::ContentType),
            Some("application/dtmf-relay")
        );
        assert_eq!(
            String::from_utf8_lossy(&info.body),
            "Signal=5\r\nDuration=160\r\n"
        );
    }

    #[test]
    fn key_presses_reach_a_caller_with_telephone_event_as_rfc4733_whatever_way_they_came() {
        // The caller negotiated telephone-event 101; the callee did not and sends INFO.
        let mut t = answered_call();
        let key = t.callee_sends_typed(0, "INFO", 3, "application/dtmf", "7");
        assert_eq!(t.response_to(&key).map(|r| r.status), Some(200));
        assert_eq!(t.sent_dtmf, vec![(Leg::A, 101, Digit::D7, None)]);
        assert!(
            !t.requests.iter().any(|r| r.method == Method::Info),
            "not relayed as INFO"
        );
        // The callee's audio is listened to for key presses; one heard goes the same way.
        assert_eq!(t.inband.len(), 1);
        assert_eq!(t.inband[0].0, Leg::B);
        assert_eq!(t.inband[0].1.map(|f| f.codec), Some(CodecKind::Pcmu));
        let cmds = t.call.on_dtmf(Leg::B, Digit::Star, 120, t.now);
        t.take(cmds);
        assert_eq!(t.sent_dtmf[1], (Leg::A, 101, Digit::Star, Some(120)));
        // An INFO that is not DTMF is relayed as before.
        t.callee_sends_typed(0, "INFO", 4, "application/x-custom", "hello");
        assert_eq!(
            t.last_request(Method::Info, "call-a").body,
            "hello".as_bytes()
        );
    }

    #[test]
    fn a_callee_codec_the_caller_lacks_is_transcoded() {
        let mut t = start(1);
        let (inv, _) = t.b_invites[0].clone();
        // The callee is offered the caller's PCMU first, then what the engine adds.
        let offered = String::from_utf8_lossy(&inv.body).into_owned();
        assert!(
            offered.contains("m=audio 30002 RTP/AVP 0 101 96 9 8"),
            "{offered}"
        );
        assert!(offered.contains("a=rtpmap:96 opus/48000/2"), "{offered}");
        t.fork_answers_with_codec(0, "8 PCMA");
        let ok = t.to_a.last().expect("200 to the caller");
        assert_eq!(ok.status, 200);
        let answer = String::from_utf8_lossy(&ok.body).into_owned();
        assert!(answer.contains("m=audio 30000 RTP/AVP 0 101"), "{answer}");
        assert!(!answer.contains("PCMA"), "{answer}");
        let [a, b] = t.transcodes.last().copied().flatten().expect("transcoding");
        assert_eq!((a.codec, a.pt, a.dtmf_pt), (CodecKind::Pcmu, 0, Some(101)));
        assert_eq!((b.codec, b.pt, b.dtmf_pt), (CodecKind::Pcma, 8, None));
        assert_eq!(
            t.formats,
            [[Some(a), Some(b)]],
            "a recording hears the same"
        );
    }

    #[test]
    fn reinvite_from_the_caller_is_relayed_with_sdp_rewritten() {
        let mut t = answered_call();
        let tag = t.a_tag();
        let hold = OFFER.replace(
            "a=rtpmap:0 PCMU/8000\r\n",
            "a=rtpmap:0 PCMU/8000\r\na=sendonly\r\n",
        );
        let reinv = parse_req(
            &format!(
                "INVITE sip:ringfort@203.0.113.1:5060 SIP/2.0\n\
                 Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKreinv\n\
                 From: \"Alice\" <sip:100@203.0.113.1>;tag=ca\n\
                 To: <sip:200@203.0.113.1>;tag={tag}\n\
                 Call-ID: call-a\n\
                 CSeq: 4 INVITE\n\
                 Contact: <sip:100@192.0.2.10:5060>\n\
                 Max-Forwards: 70\n\
                 Content-Type: application/sdp"
            ),
            &hold,
        );
        let key = TxKey::server(&reinv).expect("key");
        t.sip(SipIn::Request {
            key: key.clone(),
            req: reinv,
            from: peer("192.0.2.10:5060"),
        });
        let out = t
            .requests
            .iter()
            .find(|r| r.method == Method::Invite)
            .expect("re-INVITE on leg B")
            .clone();
        assert_eq!(out.headers.get(&HeaderName::CallId), Some("call-b"));
        let body = String::from_utf8_lossy(&out.body);
        assert!(body.contains("m=audio 30002 "), "{body}");
        assert!(body.contains("a=sendonly"), "{body}");
        assert!(body.contains("c=IN IP4 203.0.113.1"), "{body}");
        assert!(body.contains("o=ringfort "), "{body}");
        assert!(t.holds.contains(&true), "the relay is told about the hold");
        // The callee answers; the caller gets the answer on the relay's leg-A port.
        let mut r = Response::for_request(&out, 200, "OK");
        r.headers
            .push(HeaderName::Contact, "<sip:200@192.0.2.20:5060>");
        r.headers.push(HeaderName::ContentType, SDP);
        r.body = ANSWER
            .replace(
                "a=rtpmap:0 PCMU/8000\r\n",
                "a=rtpmap:0 PCMU/8000\r\na=recvonly\r\n",
            )
            .into_bytes()
            .into();
        r.headers
            .push(HeaderName::ContentLength, r.body.len().to_string());
        t.sip(SipIn::Response {
            key: TxKey::client(&out),
            resp: r,
        });
        let (k, resp) = t.responses.last().expect("answer to the caller").clone();
        assert_eq!(k, key);
        assert_eq!(resp.status, 200);
        let body = String::from_utf8_lossy(&resp.body);
        assert!(body.contains("m=audio 30000 "), "{body}");
        assert!(body.contains("a=recvonly"), "{body}");
        assert!(t.ended.is_none());
        assert_eq!(t.formats.len(), 1, "the same codecs are not told again");
    }

    #[test]
    fn offers_are_checked() {
        let mut req = caller_invite();
        assert!(parse_offer(&req).is_ok());
        req.body = Default::default();
        assert_eq!(parse_offer(&req).map_err(|e| e.status()).err(), Some(488));
        req.body = b"garbage".to_vec().into();
        assert_eq!(parse_offer(&req).map_err(|e| e.status()).err(), Some(400));
    }

    /// SDP with the given direction attribute appended to the audio m-line (and
    /// optionally another port).
    fn with_direction(sdp: &str, dir: &str, port: Option<(&str, &str)>) -> String {
        let mut s = sdp.replace(
            "a=rtpmap:0 PCMU/8000\r\n",
            &format!("a=rtpmap:0 PCMU/8000\r\na={dir}\r\n"),
        );
        if let Some((from, to)) = port {
            s = s.replace(from, to);
        }
        s
    }

    impl T {
        /// A request from the caller in its dialog; returns its server transaction.
        fn caller_sends(&mut self, method: &str, cseq: u32, ct: &str, body: &str) -> TxKey {
            let tag = self.a_tag_any();
            let ct = if ct.is_empty() {
                String::new()
            } else {
                format!("\nContent-Type: {ct}")
            };
            let req = parse_req(
                &format!(
                    "{method} sip:ringfort@203.0.113.1:5060 SIP/2.0\n\
                     Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKa{method}{cseq}\n\
                     From: \"Alice\" <sip:100@203.0.113.1>;tag=ca\n\
                     To: <sip:200@203.0.113.1>;tag={tag}\n\
                     Call-ID: call-a\n\
                     CSeq: {cseq} {method}\n\
                     Contact: <sip:100@192.0.2.10:5060>\n\
                     Max-Forwards: 70{ct}"
                ),
                body,
            );
            let key = TxKey::server(&req).expect("key");
            self.sip(SipIn::Request {
                key: key.clone(),
                req,
                from: peer("192.0.2.10:5060"),
            });
            key
        }

        /// A request from callee fork `i` in its dialog; returns its server transaction.
        fn callee_sends(&mut self, i: usize, method: &str, cseq: u32, body: &str) -> TxKey {
            let ct = if body.is_empty() { "" } else { SDP };
            self.callee_sends_typed(i, method, cseq, ct, body)
        }

        fn callee_sends_typed(
            &mut self,
            i: usize,
            method: &str,
            cseq: u32,
            ct: &str,
            body: &str,
        ) -> TxKey {
            let (inv, p) = self.b_invites[i].clone();
            let from = inv.headers.get(&HeaderName::From).unwrap_or("").to_owned();
            let ct = if ct.is_empty() {
                String::new()
            } else {
                format!("\nContent-Type: {ct}")
            };
            let req = parse_req(
                &format!(
                    "{method} sip:ringfort@203.0.113.1:5060 SIP/2.0\n\
                     Via: SIP/2.0/UDP {}:5060;branch=z9hG4bKb{method}{cseq}\n\
                     From: <sip:200@203.0.113.1>;tag=b{i}\n\
                     To: {from}\n\
                     Call-ID: call-b\n\
                     CSeq: {cseq} {method}\n\
                     Contact: <sip:200@192.0.2.20:5060>\n\
                     Max-Forwards: 70{ct}",
                    p.remote.ip()
                ),
                body,
            );
            let key = TxKey::server(&req).expect("key");
            self.sip(SipIn::Request {
                key: key.clone(),
                req,
                from: p,
            });
            key
        }

        /// The To tag the caller sees (from any response to its INVITE).
        fn a_tag_any(&self) -> String {
            self.to_a
                .iter()
                .rev()
                .find_map(|r| {
                    message::to_header(&r.headers)
                        .ok()
                        .and_then(|t| t.tag().map(str::to_owned))
                })
                .expect("to tag")
        }

        /// The last request of `method` the call sent on leg `call_id`.
        fn last_request(&self, method: Method, call_id: &str) -> Request {
            self.requests
                .iter()
                .rev()
                .find(|r| r.method == method && r.headers.get(&HeaderName::CallId) == Some(call_id))
                .unwrap_or_else(|| panic!("no {method} on {call_id}"))
                .clone()
        }

        /// A phone answers a request the call sent.
        fn answer(&mut self, req: &Request, status: u16, ct: &str, body: &str) {
            let mut r = Response::for_request(req, status, message::reason_phrase(status));
            if !body.is_empty() {
                r.headers.push(HeaderName::ContentType, ct);
                r.body = body.as_bytes().to_vec().into();
            }
            r.headers
                .push(HeaderName::ContentLength, r.body.len().to_string());
            self.sip(SipIn::Response {
                key: TxKey::client(req),
                resp: r,
            });
        }

        /// The last response to server transaction `key`.
        fn response_to(&self, key: &TxKey) -> Option<Response> {
            self.responses
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, r)| r.clone())
        }
    }

    #[test]
    fn update_hold_and_resume_are_relayed_with_sdp_rewritten_both_ways() {
        let mut t = answered_call();
        // The caller holds by UPDATE.
        let key = t.caller_sends("UPDATE", 4, SDP, &with_direction(OFFER, "sendonly", None));
        let up = t.last_request(Method::Update, "call-b");
        let body = String::from_utf8_lossy(&up.body);
        assert!(body.contains("m=audio 30002 "), "{body}");
        assert!(body.contains("c=IN IP4 203.0.113.1"), "{body}");
        assert!(body.contains("a=sendonly"), "{body}");
        assert!(!body.contains("192.0.2.10"), "{body}");
        assert_eq!(up.headers.get(&HeaderName::ContentType), Some(SDP));
        assert_eq!(t.holds, vec![true]);
        assert!(t.response_to(&key).is_none(), "waits for the callee");
        // The callee answers recvonly from another port: the relay follows it.
        let answer = with_direction(ANSWER, "recvonly", Some(("audio 7000", "audio 7002")));
        t.answer(&up, 200, SDP, &answer);
        assert_eq!(
            t.remotes.last(),
            Some(&(
                Leg::B,
                Remote::new("192.0.2.20:7002".parse().expect("addr"))
            ))
        );
        let ok = t.response_to(&key).expect("answer to the caller");
        assert_eq!(ok.status, 200);
        let body = String::from_utf8_lossy(&ok.body);
        assert!(body.contains("m=audio 30000 "), "{body}");
        assert!(body.contains("a=recvonly"), "{body}");
        assert!(body.contains("c=IN IP4 203.0.113.1"), "{body}");
        assert!(body.contains("o=ringfort "), "{body}");
        // The callee resumes by UPDATE: the other way round.
        let key = t.callee_sends(0, "UPDATE", 5, &with_direction(ANSWER, "sendrecv", None));
        let up = t.last_request(Method::Update, "call-a");
        let body = String::from_utf8_lossy(&up.body);
        assert!(body.contains("m=audio 30000 "), "{body}");
        assert!(body.contains("a=sendrecv"), "{body}");
        assert!(!body.contains("192.0.2.20"), "{body}");
        assert_eq!(t.holds, vec![true, false]);
        t.answer(&up, 200, SDP, &with_direction(OFFER, "sendrecv", None));
        let ok = t.response_to(&key).expect("answer to the callee");
        assert_eq!(ok.status, 200);
        let body = String::from_utf8_lossy(&ok.body);
        assert!(body.contains("m=audio 30002 "), "{body}");
        assert!(body.contains("a=sendrecv"), "{body}");
        // A body-less UPDATE (session refresh) is answered here, not relayed.
        let before = t.requests.len();
        let key = t.caller_sends("UPDATE", 6, "", "");
        assert_eq!(t.response_to(&key).map(|r| r.status), Some(200));
        assert_eq!(t.requests.len(), before);
        assert!(t.ended.is_none());
    }

    #[test]
    fn update_glare_gets_491_and_the_callee_s_491_goes_back() {
        let mut t = answered_call();
        let hold = with_direction(OFFER, "sendonly", None);
        let a1 = t.caller_sends("UPDATE", 4, SDP, &hold);
        let up = t.last_request(Method::Update, "call-b");
        // The callee's own offers cross ours: UPDATE (refused by the dialog layer) and
        // re-INVITE (refused by the call: an offer is pending on that leg).
        let b1 = t.callee_sends(0, "UPDATE", 5, ANSWER);
        assert_eq!(t.response_to(&b1).map(|r| r.status), Some(491));
        let b2 = t.callee_sends(0, "INVITE", 6, ANSWER);
        assert_eq!(t.response_to(&b2).map(|r| r.status), Some(491));
        // The caller's second offer while its first waits: 500 with Retry-After.
        let a2 = t.caller_sends("UPDATE", 5, SDP, OFFER);
        let r = t.response_to(&a2).expect("refused");
        assert_eq!(r.status, 500);
        assert!(r
            .headers
            .get(&HeaderName::Other("Retry-After".into()))
            .is_some());
        // The callee refuses ours with 491: the caller gets the 491 and the hold is undone.
        t.answer(&up, 491, "", "");
        assert_eq!(t.response_to(&a1).map(|r| r.status), Some(491));
        assert_eq!(t.holds, vec![true, false]);
        // Nothing pending any more: the next offer goes through.
        t.caller_sends("UPDATE", 6, SDP, &hold);
        assert_eq!(
            t.requests
                .iter()
                .filter(|r| r.method == Method::Update)
                .count(),
            2
        );
        assert!(t.ended.is_none());
    }

    #[test]
    fn reinvite_glare_491_goes_back_and_is_not_retried_by_us() {
        let mut t = answered_call();
        let a1 = t.caller_sends("INVITE", 4, SDP, &with_direction(OFFER, "sendonly", None));
        let inv = t.last_request(Method::Invite, "call-b");
        // The callee's re-INVITE crosses ours: the dialog layer answers 491.
        let b1 = t.callee_sends(0, "INVITE", 5, ANSWER);
        assert_eq!(t.response_to(&b1).map(|r| r.status), Some(491));
        // And an UPDATE offer crossing our re-INVITE offer: the call answers 491.
        let b2 = t.callee_sends(0, "UPDATE", 6, ANSWER);
        assert_eq!(t.response_to(&b2).map(|r| r.status), Some(491));
        t.answer(&inv, 491, "", "");
        assert_eq!(t.response_to(&a1).map(|r| r.status), Some(491));
        // The caller retries by itself; the dialog layer must not replay the old offer.
        t.advance(Duration::from_secs(10));
        let invites = t
            .requests
            .iter()
            .filter(|r| r.method == Method::Invite)
            .count();
        assert_eq!(invites, 1);
        assert!(t.ended.is_none());
    }

    #[test]
    fn info_is_relayed_with_its_body_and_its_200_comes_back() {
        let mut t = answered_call();
        let dtmf = "Signal=5\r\nDuration=160\r\n";
        let key = t.caller_sends("INFO", 4, "application/dtmf-relay", dtmf);
        let info = t.last_request(Method::Info, "call-b");
        assert_eq!(&info.body[..], dtmf.as_bytes());
        assert_eq!(
            info.headers.get(&HeaderName::ContentType),
            Some("application/dtmf-relay")
        );
        assert!(t.response_to(&key).is_none(), "waits for the callee");
        t.answer(&info, 200, "", "");
        assert_eq!(t.response_to(&key).map(|r| r.status), Some(200));
        // A refusal comes back as it is.
        let key = t.caller_sends("INFO", 5, "application/dtmf-relay", dtmf);
        let info = t.last_request(Method::Info, "call-b");
        t.answer(&info, 415, "", "");
        assert_eq!(t.response_to(&key).map(|r| r.status), Some(415));
        // OPTIONS stays here, with Allow; NOTIFY gets 501.
        let key = t.caller_sends("OPTIONS", 6, "", "");
        let r = t.response_to(&key).expect("200");
        assert_eq!(r.status, 200);
        assert_eq!(r.headers.get(&HeaderName::Allow), Some(ALLOW));
        let key = t.caller_sends("NOTIFY", 7, "", "");
        assert_eq!(t.response_to(&key).map(|r| r.status), Some(501));
        assert_eq!(
            t.requests
                .iter()
                .filter(|r| r.method == Method::Info)
                .count(),
            2
        );
        assert!(t.ended.is_none());
    }

    #[test]
    fn info_to_a_callee_that_never_answers_gets_408() {
        let mut t = answered_call();
        let key = t.caller_sends("INFO", 4, "application/dtmf-relay", "Signal=1\r\n");
        let info = t.last_request(Method::Info, "call-b");
        t.sip(SipIn::Timeout(TxKey::client(&info).expect("key")));
        assert_eq!(t.response_to(&key).map(|r| r.status), Some(408));
        // No answer at all to an in-dialog request: the callee's phone is gone (RFC 3261
        // 12.2.1.2), so the call ends.
        assert_eq!(t.byes_to("call-a"), 1);
        assert_eq!(t.ended, Some((Disposition::Answered, HangupLeg::System)));
    }

    fn caller_invite_100rel(header: &str) -> Request {
        let mut inv = caller_invite();
        inv.headers.push(HeaderName::Supported, "timer");
        inv.headers.push(
            if header == "Require" {
                HeaderName::Require
            } else {
                HeaderName::Supported
            },
            "100rel",
        );
        inv
    }

    impl T {
        /// Fork `i` sends a reliable 183 with its SDP (RSeq `rseq`).
        fn fork_183_reliable(&mut self, i: usize, rseq: u32) {
            let (inv, _) = self.b_invites[i].clone();
            let mut r = Response::for_request(&inv, 183, "Session Progress");
            r.ensure_to_tag(&format!("b{i}"));
            r.headers.push(
                HeaderName::Contact,
                format!("<sip:200@192.0.2.{}:5060>", 20 + i),
            );
            r.headers.push(HeaderName::Require, "100rel");
            r.headers
                .push(HeaderName::Other("RSeq".into()), rseq.to_string());
            r.headers.push(HeaderName::ContentType, SDP);
            r.body = ANSWER.as_bytes().to_vec().into();
            r.headers
                .push(HeaderName::ContentLength, r.body.len().to_string());
            self.sip(SipIn::Response {
                key: TxKey::client(&inv),
                resp: r,
            });
        }

        fn caller_pracks(&mut self, rseq: &str) -> TxKey {
            let tag = self.a_tag_any();
            let req = parse_req(
                &format!(
                    "PRACK sip:ringfort@203.0.113.1:5060 SIP/2.0\n\
                     Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKprack{rseq}\n\
                     From: \"Alice\" <sip:100@203.0.113.1>;tag=ca\n\
                     To: <sip:200@203.0.113.1>;tag={tag}\n\
                     Call-ID: call-a\n\
                     CSeq: 4 PRACK\n\
                     RAck: {rseq} 2 INVITE\n\
                     Max-Forwards: 70"
                ),
                "",
            );
            let key = TxKey::server(&req).expect("key");
            self.sip(SipIn::Request {
                key: key.clone(),
                req,
                from: peer("192.0.2.10:5060"),
            });
            key
        }
    }

    fn rseq_of(r: &Response) -> Option<String> {
        r.headers
            .get(&HeaderName::Other("RSeq".into()))
            .map(str::to_owned)
    }

    #[test]
    fn reliable_183_is_pracked_on_both_legs() {
        let mut t = start_with(1, caller_invite_100rel("Supported"));
        let (inv, _) = t.b_invites[0].clone();
        assert!(
            inv.headers
                .list(&HeaderName::Supported)
                .any(|o| o.trim() == "100rel"),
            "the callee is offered 100rel because the caller supports it"
        );
        assert_eq!(inv.headers.count(&HeaderName::Allow), 1);
        t.fork_183_reliable(0, 11);
        // Leg B: our PRACK names the callee's RSeq and INVITE CSeq.
        let prack = t.last_request(Method::Prack, "call-b");
        assert_eq!(
            prack.headers.get(&HeaderName::Other("RAck".into())),
            Some("11 1 INVITE")
        );
        // Leg A: a reliable 183 of our own, its SDP on the relay.
        let p = t.to_a.last().expect("183").clone();
        assert_eq!(p.status, 183);
        assert!(p
            .headers
            .list(&HeaderName::Require)
            .any(|o| o.trim() == "100rel"));
        let rseq = rseq_of(&p).expect("RSeq");
        assert_ne!(rseq, "11", "our own RSeq space");
        let body = String::from_utf8_lossy(&p.body);
        assert!(body.contains("m=audio 30000 "), "{body}");
        assert!(body.contains("c=IN IP4 203.0.113.1"), "{body}");
        assert!(t.remotes.contains(&(
            Leg::B,
            Remote::new("192.0.2.20:7000".parse().expect("addr"))
        )));
        // Unacknowledged, it is sent again (T1).
        t.advance(Duration::from_millis(600));
        assert!(t.to_a.iter().filter(|r| r.status == 183).count() >= 2);
        // The callee answers before the caller PRACKs: the 200 waits (RFC 3262 3).
        t.answer(&prack, 200, "", "");
        t.fork_says(0, 200);
        assert_eq!(t.last_to_a(), 183);
        let key = t.caller_pracks(&rseq);
        assert_eq!(t.response_to(&key).map(|r| r.status), Some(200));
        assert_eq!(t.last_to_a(), 200);
        let ok = t.to_a.last().expect("200").clone();
        let body = String::from_utf8_lossy(&ok.body);
        assert!(body.contains("m=audio 30000 "), "{body}");
        t.caller_acks();
        assert!(t.call.is_answered());
        assert!(t.ended.is_none());
    }

    #[test]
    fn a_caller_without_100rel_gets_unreliable_18x() {
        let mut t = start(1);
        t.fork_183_reliable(0, 5);
        assert_eq!(
            t.last_request(Method::Prack, "call-b").method,
            Method::Prack
        );
        let p = t.to_a.last().expect("183").clone();
        assert_eq!(p.status, 183);
        assert_eq!(rseq_of(&p), None);
        assert!(!p.body.is_empty());
        t.fork_says(0, 200);
        assert_eq!(t.last_to_a(), 200);
    }

    #[test]
    fn a_caller_requiring_100rel_gets_one_reliable_18x_at_a_time() {
        let mut t = start_with(1, caller_invite_100rel("Require"));
        t.fork_says(0, 180);
        let ringing = t.to_a.last().expect("180").clone();
        let rseq = rseq_of(&ringing).expect("reliable 180");
        // The callee's early SDP waits for the PRACK of our 180.
        t.fork_183_reliable(0, 1);
        assert_eq!(t.to_a.iter().filter(|r| r.status == 183).count(), 0);
        t.caller_pracks(&rseq);
        let p = t.to_a.last().expect("183").clone();
        assert_eq!(p.status, 183);
        let next: u32 = rseq_of(&p).expect("RSeq").parse().expect("num");
        assert_eq!(next, rseq.parse::<u32>().expect("num") + 1);
    }

    #[test]
    fn early_update_is_relayed_once_both_early_offers_are_done() {
        let mut t = start_with(1, caller_invite_100rel("Supported"));
        t.fork_183_reliable(0, 1);
        // Before the caller PRACKed our 183, an UPDATE offer is one offer too many.
        let rseq = rseq_of(t.to_a.last().expect("183")).expect("RSeq");
        let k = t.caller_sends("UPDATE", 3, SDP, &with_direction(OFFER, "sendonly", None));
        assert_eq!(t.response_to(&k).map(|r| r.status), Some(500));
        t.caller_pracks(&rseq);
        let k = t.caller_sends("UPDATE", 5, SDP, &with_direction(OFFER, "sendonly", None));
        let up = t.last_request(Method::Update, "call-b");
        assert!(String::from_utf8_lossy(&up.body).contains("m=audio 30002 "));
        t.answer(&up, 200, SDP, &with_direction(ANSWER, "recvonly", None));
        let ok = t.response_to(&k).expect("answer");
        assert_eq!(ok.status, 200);
        assert!(String::from_utf8_lossy(&ok.body).contains("a=recvonly"));
    }
}
