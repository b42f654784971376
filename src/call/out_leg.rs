//! A call leg the PBX places itself, for an app bridging its caller to an extension: a
//! UAC dialog per registered contact (parallel forking), sans-IO. Fed [`SipIn`] events,
//! timers and the app task's requests (hang up, send a key) with `now`; returns
//! [`OutEvent`]s.
//!
//! Owns: the forks and their fate (first 2xx wins and is ACKed, the others are
//! cancelled, a late 2xx is ACKed and BYEd, a ring timeout cancels them all), the SDP
//! offer naming our outbound media endpoint and reading the answer into the
//! [`LegFormat`] that endpoint must speak, what the callee's in-dialog requests mean
//! (BYE, a new address, hold, key presses by INFO). Must not: touch sockets or the media
//! endpoint (the app task applies [`OutEvent::Answered`], [`OutEvent::Remote`],
//! [`OutEvent::Hold`]), nor know the caller's leg: the app task joins the two.
//!
//! The mirror of [`super::app_leg::AppLeg`] (the caller's UAS side) and of the B side of
//! [`super::machine::Call`], which relays instead of terminating media.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use tracing::info;

use crate::media::codec::{CodecKind, CodecList, CodecParams};
use crate::media::dtmf::{format_info, Digit, InfoDigit, InfoFormat};
use crate::media::transcode::LegFormat;
use crate::media::Remote;
use crate::sip::dialog::{
    Body, DialogConfig, DialogEvent, DialogId, DialogSet, InviteId, InviteParams, MsgOpts,
    TerminateReason,
};
use crate::sip::message::{HeaderName, Method, Request, Response};
use crate::sip::sdp::{
    negotiate, no_common_codec, Attribute, Connection, Direction, MediaDescription, OriginState,
    SessionDescription, Timing,
};
use crate::sip::transaction::TxKey;

use super::forks::{ForkState, Forks, Provisional};
use super::machine::{
    body_sdp, re_offer_keeps_stream, remote_of, Command, HangupLeg, SipIn, Target, ALLOW,
};
use super::own_leg::{answer_in_dialog, endpoint_sdp};
use super::{codecs, CallError};

const SDP: &str = "application/sdp";

/// How long a key press sent by INFO says it lasted.
const INFO_DIGIT_MS: u32 = 160;

/// Why nobody answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialOutcome {
    /// A fork said busy (486, 600) or declined (603).
    Busy,
    /// It rang until the ring timeout, or the phones gave up ringing themselves (408,
    /// 480, 487 after a provisional).
    NoAnswer,
    /// Nothing rang: every fork failed without ringing (unreachable, timed out, refused),
    /// or the answer had no codec we can use.
    Unavailable,
}

/// What starts an outbound leg.
#[derive(Debug, Clone)]
pub struct OutLegParams {
    /// One per registered contact of the dialled extension(s).
    pub targets: Vec<Target>,
    /// From without tag (the caller's number and name at our domain).
    pub from: String,
    /// To (the dialled number at our domain).
    pub to: String,
    /// The leg's own Call-ID (every fork).
    pub call_id: String,
    /// The format the caller's endpoint speaks: offered first, so the callee usually
    /// picks it and the bridge needs no resampling.
    pub first: LegFormat,
    /// Our outbound endpoint's address and RTP port, put in the SDP.
    pub media_ip: IpAddr,
    pub media_port: u16,
    /// Give up ringing after this long.
    pub ring_timeout: Duration,
    /// Seeds the dialog layer's RNG (tags, branches).
    pub seed: u64,
}

/// Settings the leg shares with every call.
#[derive(Debug, Clone)]
pub struct OutLegSettings {
    pub dialog: DialogConfig,
    /// Encoder settings (what the answer's fmtp does not override).
    pub codec: CodecParams,
    /// The codecs the engine may offer.
    pub codecs: CodecList,
}

/// What the leg asks its task to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutEvent {
    /// SIP through the core ([`Command::SendRequest`], [`Command::SendAck`],
    /// [`Command::Respond`], [`Command::Cancel`]).
    Sip(Command),
    /// A callee's phone rings (first time only).
    Ringing,
    /// A fork answered: start the outbound endpoint speaking `format` towards `remote`.
    Answered { remote: Remote, format: LegFormat },
    /// Nobody answered (sent once, before any [`OutEvent::Answered`], never after).
    Failed { outcome: DialOutcome, status: u16 },
    /// The callee's phone receives our RTP elsewhere now (a re-INVITE).
    Remote(Remote),
    /// The callee put us on hold (true: stop sending) or took us off it.
    Hold(bool),
    /// A key press the callee sent by INFO.
    Digit(Digit),
    /// The answered leg is over: the callee hung up (`Callee`) or its phone is gone
    /// (`System`). Not sent when we hang up.
    Ended { hangup: HangupLeg },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Calling,
    Answered,
    Ended,
}

/// The leg. See the module comment.
pub struct OutLeg {
    dialogs: DialogSet,
    call_id: String,
    forks: Forks,
    winner: Option<DialogId>,
    phase: Phase,
    /// Our offer as sent (what answers are checked against).
    offer: SessionDescription,
    /// After the answer: our audio m-line with the negotiated codec only.
    ours: Option<MediaDescription>,
    format: Option<LegFormat>,
    codec: CodecParams,
    media_ip: IpAddr,
    origin: OriginState,
    /// Early SDP answers by dialog (a reliable 183's, which a 2xx need not repeat).
    early: HashMap<DialogId, SessionDescription>,
    direction: Direction,
    on_hold: bool,
    rang: bool,
    ring_until: Instant,
    ended_at: Option<Instant>,
    linger: Duration,
}

/// Our offer's audio stream: `first` (the caller's codec) first, telephone-event at its
/// clock, then every other codec of `codecs` the engine could speak instead.
pub fn endpoint_offer(first: LegFormat, port: u16, codecs: &CodecList) -> MediaDescription {
    let pt = first.pt;
    let dtmf = if pt == 101 { 100 } else { 101 };
    let mut m = MediaDescription::new(
        "audio",
        port,
        "RTP/AVP",
        vec![pt.to_string(), dtmf.to_string()],
    );
    let rtpmap = match first.codec {
        CodecKind::Opus => format!("{pt} opus/48000/2"),
        k => format!("{pt} {}/{}", k.name(), k.clock_rate()),
    };
    m.attributes.push(Attribute::value("rtpmap", rtpmap));
    if first.codec == CodecKind::Opus {
        m.attributes
            .push(Attribute::value("fmtp", format!("{pt} useinbandfec=1")));
    }
    m.attributes.push(Attribute::value(
        "rtpmap",
        format!("{dtmf} telephone-event/{}", first.codec.clock_rate()),
    ));
    m.attributes
        .push(Attribute::value("fmtp", format!("{dtmf} 0-16")));
    let mut sdp = SessionDescription {
        media: vec![m],
        ..SessionDescription::default()
    };
    codecs::extend_offer(&mut sdp, 0, codecs);
    m = sdp.media.remove(0);
    m.attributes.push(Attribute::value("ptime", "20"));
    m
}

fn response_sdp(resp: &Response) -> Option<SessionDescription> {
    body_sdp(&resp.body, resp.headers.get(&HeaderName::ContentType))
}

impl OutLeg {
    /// Sends an INVITE to every target. With no target the leg fails at once
    /// ([`DialOutcome::Unavailable`], 480) and the events say so.
    pub fn new(
        p: OutLegParams,
        settings: &OutLegSettings,
        now: Instant,
    ) -> Result<(OutLeg, Vec<OutEvent>), CallError> {
        let mut origin = OriginState::new("ringfort", p.seed >> 1, p.media_ip);
        let mut offer = SessionDescription {
            session_name: "ringfort".into(),
            connection: Some(Connection::from_ip(p.media_ip)),
            times: vec![Timing {
                start: 0,
                stop: 0,
                repeats: Vec::new(),
            }],
            media: vec![endpoint_offer(p.first, p.media_port, &settings.codecs)],
            ..SessionDescription::default()
        };
        origin.stamp(&mut offer);
        let mut leg = OutLeg {
            dialogs: DialogSet::new(settings.dialog.clone(), StdRng::seed_from_u64(p.seed)),
            call_id: p.call_id.clone(),
            forks: Forks::default(),
            winner: None,
            phase: Phase::Calling,
            offer,
            ours: None,
            format: None,
            codec: settings.codec,
            media_ip: p.media_ip,
            origin,
            early: HashMap::new(),
            direction: Direction::SendRecv,
            on_hold: false,
            rang: false,
            ring_until: now + p.ring_timeout,
            ended_at: None,
            linger: settings.dialog.timers.t1 * 64,
        };
        let mut out = Vec::new();
        let body = Body::new(SDP, leg.offer.to_string().into_bytes());
        let mut events = Vec::new();
        for t in &p.targets {
            let mut opts = MsgOpts::body(body.clone());
            opts.headers.push((HeaderName::Allow, ALLOW.into()));
            opts.headers.extend(t.headers.iter().cloned());
            let params = InviteParams {
                request_uri: t.request_uri.clone(),
                from: p.from.clone(),
                to: p.to.clone(),
                local_contact: t.local_contact.clone(),
                route: t.route.clone(),
                peer: t.peer,
                call_id: Some(p.call_id.clone()),
                opts,
            };
            let (invite, evs) = leg.dialogs.invite(params, now)?;
            leg.forks.push(invite, t.peer);
            events.extend(evs);
        }
        if leg.forks.iter().next().is_none() {
            leg.fail(DialOutcome::Unavailable, 480, now, &mut out);
        }
        leg.absorb(events, now, &mut out);
        Ok((leg, out))
    }

    /// The leg's Call-ID (the core routes it to the app task).
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// The format the callee answered with (the outbound endpoint speaks it).
    pub fn format(&self) -> Option<LegFormat> {
        self.format
    }

    pub fn is_answered(&self) -> bool {
        self.phase == Phase::Answered
    }

    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// Ended, and nothing left to wait for (every fork resolved, or 64*T1 passed): the
    /// task may forget the leg.
    pub fn is_finished(&self, now: Instant) -> bool {
        self.ended_at
            .is_some_and(|t| !self.forks.any_pending() || now >= t + self.linger)
    }

    /// Ends the leg from our side: CANCEL while it rings, BYE once answered.
    #[must_use]
    pub fn hangup(&mut self, now: Instant) -> Vec<OutEvent> {
        let mut out = Vec::new();
        match self.phase {
            Phase::Ended => {}
            Phase::Calling => {
                info!("bridge: cancelling the callee");
                self.cancel_forks(&mut out);
                self.end(now);
            }
            Phase::Answered => {
                if let Some(w) = self.winner.clone() {
                    let evs = self.dialogs.bye(&w, now).unwrap_or_default();
                    self.absorb(evs, now, &mut out);
                }
                self.end(now);
            }
        }
        out
    }

    /// Sends a key press to the callee by SIP INFO (`application/dtmf-relay`): for a
    /// callee that negotiated no telephone-event.
    #[must_use]
    pub fn send_info_digit(&mut self, digit: Digit, now: Instant) -> Vec<OutEvent> {
        let mut out = Vec::new();
        let (Phase::Answered, Some(w)) = (self.phase, self.winner.clone()) else {
            return out;
        };
        let info = InfoDigit {
            digit,
            duration_ms: Some(INFO_DIGIT_MS),
        };
        let body = format_info(InfoFormat::DtmfRelay, &info);
        let opts = MsgOpts::body(Body::new(
            InfoFormat::DtmfRelay.content_type(),
            body.into_bytes(),
        ));
        let evs = self
            .dialogs
            .request(&w, Method::Info, opts, now)
            .unwrap_or_default();
        self.absorb(evs, now, &mut out);
        out
    }

    #[must_use]
    pub fn on_sip(&mut self, input: SipIn, now: Instant) -> Vec<OutEvent> {
        let events = match input {
            SipIn::Request { key, req, from } => {
                match self.dialogs.on_request(key.clone(), req.clone(), from, now) {
                    Ok(evs) => evs,
                    Err(e) => {
                        let tag = self
                            .forks
                            .iter()
                            .next()
                            .map(|f| f.invite.local_tag.clone())
                            .unwrap_or_default();
                        let resp = e.response(&req, &tag);
                        return vec![OutEvent::Sip(Command::Respond { key, resp })];
                    }
                }
            }
            SipIn::Ack(req) => self.dialogs.on_ack(req, now),
            // We are the UAC of this leg: nobody can cancel towards us.
            SipIn::Cancel(_) => Vec::new(),
            SipIn::Response { key, resp } => self.dialogs.on_response(key, resp, now),
            SipIn::Timeout(key) => self.dialogs.on_timeout(&key, now),
            SipIn::Unsent(key) => self.dialogs.on_transport_error(&key, now),
        };
        let mut out = Vec::new();
        self.absorb(events, now, &mut out);
        out
    }

    #[must_use]
    pub fn on_timer(&mut self, now: Instant) -> Vec<OutEvent> {
        let mut out = Vec::new();
        let evs = self.dialogs.on_timer(now);
        self.absorb(evs, now, &mut out);
        if self.phase == Phase::Calling && now >= self.ring_until {
            info!("bridge: no answer");
            self.fail(DialOutcome::NoAnswer, 480, now, &mut out);
        }
        out
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let ringing = (self.phase == Phase::Calling).then_some(self.ring_until);
        let linger = self.ended_at.map(|t| t + self.linger);
        [self.dialogs.next_deadline(), ringing, linger]
            .into_iter()
            .flatten()
            .min()
    }

    fn end(&mut self, now: Instant) {
        if self.phase != Phase::Ended {
            self.phase = Phase::Ended;
            self.ended_at = Some(now);
        }
    }

    fn fail(&mut self, outcome: DialOutcome, status: u16, now: Instant, out: &mut Vec<OutEvent>) {
        if self.phase != Phase::Calling {
            return;
        }
        self.cancel_forks(out);
        self.end(now);
        out.push(OutEvent::Failed { outcome, status });
    }

    /// CANCELs every fork still trying or ringing; one that has sent nothing yet is
    /// cancelled when its first provisional comes (RFC 3261 9.1), or ends by its timeout.
    fn cancel_forks(&mut self, out: &mut Vec<OutEvent>) {
        out.extend(
            self.forks
                .cancel_all(&self.dialogs)
                .into_iter()
                .map(OutEvent::Sip),
        );
    }

    /// Every fork failed: busy wins, then a phone that rang and gave up, else nothing
    /// could ring.
    fn outcome_of_failures(&self) -> (DialOutcome, u16) {
        let statuses = self.forks.failures();
        if let Some(s) = statuses.iter().find(|s| matches!(s, 486 | 600 | 603)) {
            return (DialOutcome::Busy, *s);
        }
        let gave_up = self
            .forks
            .iter()
            .any(|f| f.rang && matches!(f.state, ForkState::Failed(408 | 480 | 487)));
        if gave_up {
            (DialOutcome::NoAnswer, 480)
        } else {
            (
                DialOutcome::Unavailable,
                statuses.first().copied().unwrap_or(480),
            )
        }
    }

    fn absorb(&mut self, events: Vec<DialogEvent>, now: Instant, out: &mut Vec<OutEvent>) {
        let mut queue: VecDeque<DialogEvent> = events.into();
        while let Some(ev) = queue.pop_front() {
            queue.extend(self.handle(ev, now, out));
        }
    }

    fn handle(
        &mut self,
        ev: DialogEvent,
        now: Instant,
        out: &mut Vec<OutEvent>,
    ) -> Vec<DialogEvent> {
        match ev {
            DialogEvent::SendRequest { req, to } => {
                out.push(OutEvent::Sip(Command::SendRequest { req, to }))
            }
            DialogEvent::SendAck { req, to } => {
                out.push(OutEvent::Sip(Command::SendAck { req, to }))
            }
            DialogEvent::SendResponse { key, resp } => {
                out.push(OutEvent::Sip(Command::Respond { key, resp }))
            }
            DialogEvent::InviteProgress { invite, id, resp } => {
                self.on_progress(&invite, id, &resp, out)
            }
            DialogEvent::InviteFailed { invite, resp } => {
                if let Some(f) = self.forks.get_mut(&invite) {
                    f.state = ForkState::Failed(resp.status);
                }
                if self.phase == Phase::Calling && !self.forks.any_pending() {
                    let (outcome, status) = self.outcome_of_failures();
                    info!(?outcome, status, "bridge: nobody answered");
                    self.fail(outcome, status, now, out);
                }
            }
            DialogEvent::Response { id, method, resp } => {
                let initial = method == Method::Invite
                    && (200..300).contains(&resp.status)
                    && id.call_id == self.call_id;
                if initial && self.winner.as_ref() != Some(&id) {
                    if self.phase == Phase::Calling && self.winner.is_none() {
                        return self.on_answer(id, &resp, now, out);
                    }
                    // Answered after we gave up or hung up: it was ACKed, now BYE it.
                    if let Some(i) = self.forks.index_of(&id) {
                        self.forks[i].state = ForkState::Failed(487);
                    }
                    info!("bridge: a late answer is hung up");
                    return self.dialogs.bye(&id, now).unwrap_or_default();
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
                if self.winner.as_ref() == Some(&id) && self.phase == Phase::Answered {
                    let hangup = match reason {
                        TerminateReason::LocalBye => return Vec::new(),
                        TerminateReason::RemoteBye => HangupLeg::Callee,
                        other => {
                            info!(reason = ?other, "bridge: callee leg lost");
                            HangupLeg::System
                        }
                    };
                    self.end(now);
                    out.push(OutEvent::Ended { hangup });
                }
            }
            DialogEvent::Created { .. } | DialogEvent::Acked { .. } | DialogEvent::Prack { .. } => {
            }
        }
        Vec::new()
    }

    fn on_progress(
        &mut self,
        invite: &InviteId,
        id: Option<DialogId>,
        resp: &Response,
        out: &mut Vec<OutEvent>,
    ) {
        match self
            .forks
            .on_provisional(invite, resp.status, &self.dialogs)
        {
            Provisional::Unknown => return,
            Provisional::Cancel(cancel) => return out.push(OutEvent::Sip(cancel)),
            Provisional::Live => {}
        }
        if resp.status == 100 || self.phase != Phase::Calling {
            return;
        }
        if let (Some(id), Some(sdp)) = (id, response_sdp(resp)) {
            self.early.insert(id, sdp);
        }
        if !self.rang {
            self.rang = true;
            info!(status = resp.status, "bridge: ringing");
            out.push(OutEvent::Ringing);
        }
    }

    /// The format our endpoint speaks for `answer`, when it fits our offer.
    fn read_answer(&self, answer: &SessionDescription) -> Option<LegFormat> {
        let streams = negotiate(&self.offer, answer).ok()?;
        if no_common_codec(&streams) || !answer.media.first().is_some_and(|m| m.is_enabled()) {
            return None;
        }
        let [_, callee] = codecs::relay_formats(&self.offer, answer, 0, self.codec)?;
        Some(callee)
    }

    fn on_answer(
        &mut self,
        id: DialogId,
        resp: &Response,
        now: Instant,
        out: &mut Vec<OutEvent>,
    ) -> Vec<DialogEvent> {
        if let Some(i) = self.forks.index_of(&id) {
            self.forks[i].state = ForkState::Answered;
        }
        self.winner = Some(id.clone());
        let answer = response_sdp(resp).or_else(|| self.early.get(&id).cloned());
        let format = answer
            .as_ref()
            .and_then(|a| Some((a.clone(), self.read_answer(a)?)));
        let Some((answer, format)) = format else {
            info!("bridge: the callee answered without a usable SDP answer");
            self.cancel_forks(out);
            let evs = self.dialogs.bye(&id, now).unwrap_or_default();
            self.end(now);
            out.push(OutEvent::Failed {
                outcome: DialOutcome::Unavailable,
                status: 488,
            });
            return evs;
        };
        self.cancel_forks(out);
        self.format = Some(format);
        let mut ours = MediaDescription::new(
            "audio",
            self.offer.media[0].port,
            "RTP/AVP",
            std::iter::once(format.pt)
                .chain(format.dtmf_pt)
                .map(|p| p.to_string())
                .collect(),
        );
        for a in &answer.media[0].attributes {
            let pt = a
                .value
                .as_deref()
                .and_then(|v| v.split_whitespace().next())
                .and_then(|p| p.parse::<u8>().ok());
            let codec_line = ["rtpmap", "fmtp"]
                .iter()
                .any(|n| a.name.eq_ignore_ascii_case(n));
            if codec_line && (pt == Some(format.pt) || (pt.is_some() && pt == format.dtmf_pt)) {
                ours.attributes.push(a.clone());
            }
        }
        ours.attributes.push(Attribute::value("ptime", "20"));
        self.ours = Some(ours);
        self.phase = Phase::Answered;
        info!(codec = ?format.codec, "bridge: answered");
        out.push(OutEvent::Answered {
            remote: remote_of(&answer, 0),
            format,
        });
        self.hold_from(&answer, out);
        Vec::new()
    }

    /// The callee's SDP says whether it holds us: it does not want our audio.
    fn hold_from(&mut self, sdp: &SessionDescription, out: &mut Vec<OutEvent>) {
        let theirs = sdp.media_direction(0);
        self.direction = theirs.reversed();
        let hold = !theirs.receives();
        if hold != self.on_hold {
            self.on_hold = hold;
            out.push(OutEvent::Hold(hold));
        }
    }

    /// Our SDP in answer to the callee's re-offer: the negotiated codec on our endpoint,
    /// its direction mirrored.
    fn sdp_body(&mut self, streams: usize) -> Body {
        let mut media = Vec::with_capacity(streams.max(1));
        if let Some(ours) = &self.ours {
            let mut m = ours.clone();
            m.set_direction(Some(self.direction));
            media.push(m);
        }
        endpoint_sdp(self.media_ip, &mut self.origin, media)
    }

    fn respond(
        &mut self,
        id: &DialogId,
        key: &TxKey,
        status: u16,
        opts: MsgOpts,
        now: Instant,
    ) -> Vec<DialogEvent> {
        self.dialogs
            .respond(id, key, status, opts, now)
            .unwrap_or_default()
    }

    fn on_in_dialog(
        &mut self,
        id: &DialogId,
        key: &TxKey,
        req: &Request,
        now: Instant,
        out: &mut Vec<OutEvent>,
    ) -> Vec<DialogEvent> {
        if self.winner.as_ref() != Some(id) || self.phase != Phase::Answered {
            return self.respond(id, key, 481, MsgOpts::default(), now);
        }
        let ct = req.headers.get(&HeaderName::ContentType);
        match &req.method {
            Method::Invite | Method::Update => {
                if !req.body.is_empty() {
                    let Some(offer) = body_sdp(&req.body, ct) else {
                        return self.respond(id, key, 488, MsgOpts::default(), now);
                    };
                    // One stream only: ours.
                    let usable = offer.media.len() == 1
                        && re_offer_keeps_stream(&offer, 0, self.format.map(|f| f.pt));
                    if !usable {
                        return self.respond(id, key, 488, MsgOpts::default(), now);
                    }
                    out.push(OutEvent::Remote(remote_of(&offer, 0)));
                    self.hold_from(&offer, out);
                }
                let body = (req.method == Method::Invite || !req.body.is_empty())
                    .then(|| self.sdp_body(1));
                let opts = MsgOpts {
                    body,
                    ..MsgOpts::default()
                };
                self.respond(id, key, 200, opts, now)
            }
            _ => {
                let (status, opts, digit) = answer_in_dialog(req);
                out.extend(digit.map(OutEvent::Digit));
                self.respond(id, key, status, opts, now)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_sip::{parse_req, peer, settings};
    use super::*;
    use crate::sip::message::{self, Response};
    use crate::sip::Peer;

    const ANSWER: &str = "v=0\r\no=b 1 1 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\n\
                          t=0 0\r\nm=audio 7000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
                          a=rtpmap:101 telephone-event/8000\r\n";

    struct T {
        leg: OutLeg,
        now: Instant,
        invites: Vec<(Request, Peer)>,
        requests: Vec<Request>,
        cancels: Vec<TxKey>,
        acks: Vec<Request>,
        responses: Vec<(TxKey, Response)>,
        events: Vec<OutEvent>,
    }

    fn start(forks: usize) -> T {
        let now = Instant::now();
        let targets = (0..forks)
            .map(|i| Target {
                request_uri: format!("sip:200@192.0.2.{}:5060", 20 + i),
                peer: peer(&format!("192.0.2.{}:5060", 20 + i)),
                local_contact: "sip:ringfort@203.0.113.1:5060".into(),
                route: Vec::new(),
                headers: Vec::new(),
            })
            .collect();
        let s = settings();
        let p = OutLegParams {
            targets,
            from: "\"Alice\" <sip:100@203.0.113.1>".into(),
            to: "<sip:200@203.0.113.1>".into(),
            call_id: "out-1".into(),
            first: LegFormat {
                dtmf_pt: Some(101),
                ..LegFormat::new(CodecKind::Pcmu, 0)
            },
            media_ip: "203.0.113.1".parse().expect("ip"),
            media_port: 31000,
            ring_timeout: Duration::from_secs(20),
            seed: 5,
        };
        let os = OutLegSettings {
            dialog: s.dialog,
            codec: s.codec,
            codecs: s.codecs,
        };
        let (leg, out) = OutLeg::new(p, &os, now).expect("leg");
        let mut t = T {
            leg,
            now,
            invites: Vec::new(),
            requests: Vec::new(),
            cancels: Vec::new(),
            acks: Vec::new(),
            responses: Vec::new(),
            events: Vec::new(),
        };
        t.take(out);
        assert_eq!(t.invites.len(), forks);
        t
    }

    impl T {
        fn take(&mut self, out: Vec<OutEvent>) {
            for o in out {
                match o {
                    OutEvent::Sip(Command::SendRequest { req, to }) => {
                        let fresh = req.method == Method::Invite
                            && !req
                                .headers
                                .get(&HeaderName::To)
                                .unwrap_or("")
                                .contains("tag=");
                        if fresh {
                            self.invites.push((req, to));
                        } else {
                            self.requests.push(req);
                        }
                    }
                    OutEvent::Sip(Command::Cancel { invite, .. }) => self.cancels.push(invite),
                    OutEvent::Sip(Command::SendAck { req, .. }) => self.acks.push(req),
                    OutEvent::Sip(Command::Respond { key, resp }) => {
                        self.responses.push((key, resp))
                    }
                    other => self.events.push(other),
                }
            }
        }

        fn fork_says(&mut self, i: usize, status: u16) {
            let (inv, _) = self.invites[i].clone();
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
            let out = self.leg.on_sip(SipIn::Response { key, resp: r }, self.now);
            self.take(out);
        }

        fn advance(&mut self, by: Duration) {
            let end = self.now + by;
            while let Some(d) = self.leg.next_deadline().filter(|d| *d <= end) {
                self.now = d.max(self.now);
                let out = self.leg.on_timer(self.now);
                self.take(out);
            }
            self.now = end;
        }

        /// An in-dialog request from fork `i`'s phone.
        fn callee_sends(
            &mut self,
            i: usize,
            method: &str,
            cseq: u32,
            extra: &str,
            body: &str,
        ) -> TxKey {
            let (inv, _) = self.invites[i].clone();
            let from_tag = message::from_header(&inv.headers)
                .ok()
                .and_then(|f| f.tag().map(str::to_owned))
                .expect("our tag");
            let req = parse_req(
                &format!(
                    "{method} sip:ringfort@203.0.113.1:5060 SIP/2.0\n\
                     Via: SIP/2.0/UDP 192.0.2.{}:5060;branch=z9hG4bK{method}{cseq}\n\
                     From: <sip:200@203.0.113.1>;tag=b{i}\n\
                     To: <sip:100@203.0.113.1>;tag={from_tag}\n\
                     Call-ID: out-1\n\
                     CSeq: {cseq} {method}\n\
                     Contact: <sip:200@192.0.2.{}:5060>\n\
                     Max-Forwards: 70{extra}",
                    20 + i,
                    20 + i
                ),
                body,
            );
            let key = TxKey::server(&req).expect("key");
            let out = self.leg.on_sip(
                SipIn::Request {
                    key: key.clone(),
                    req,
                    from: peer(&format!("192.0.2.{}:5060", 20 + i)),
                },
                self.now,
            );
            self.take(out);
            key
        }

        fn response_to(&self, key: &TxKey) -> Option<u16> {
            self.responses
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, r)| r.status)
        }

        fn byes(&self) -> usize {
            self.requests
                .iter()
                .filter(|r| r.method == Method::Bye)
                .count()
        }

        fn failed(&self) -> Vec<(DialOutcome, u16)> {
            self.events
                .iter()
                .filter_map(|e| match e {
                    OutEvent::Failed { outcome, status } => Some((*outcome, *status)),
                    _ => None,
                })
                .collect()
        }

        fn answered(&self) -> Option<(Remote, LegFormat)> {
            self.events.iter().find_map(|e| match e {
                OutEvent::Answered { remote, format } => Some((*remote, *format)),
                _ => None,
            })
        }
    }

    fn answered_leg() -> T {
        let mut t = start(1);
        t.fork_says(0, 180);
        t.fork_says(0, 200);
        assert!(t.leg.is_answered());
        t
    }

    #[test]
    fn the_offer_puts_the_callers_codec_first_and_names_our_endpoint() {
        let t = start(2);
        let (inv, to) = &t.invites[1];
        assert_eq!(inv.uri, "sip:200@192.0.2.21:5060");
        assert_eq!(to.remote, "192.0.2.21:5060".parse().expect("addr"));
        assert_eq!(inv.headers.get(&HeaderName::CallId), Some("out-1"));
        assert!(inv
            .headers
            .get(&HeaderName::From)
            .is_some_and(|f| f.starts_with("\"Alice\" <sip:100@203.0.113.1>;tag=")));
        let sdp = SessionDescription::parse_bytes(&inv.body).expect("sdp");
        let m = &sdp.media[0];
        assert_eq!(m.port, 31000);
        assert_eq!(m.formats[..2], ["0".to_string(), "101".to_string()]);
        assert!(m.formats.len() > 2, "the engine's other codecs follow");
        assert_eq!(
            sdp.connection.as_ref().and_then(Connection::ip),
            Some("203.0.113.1".parse().expect("ip"))
        );
    }

    #[test]
    fn first_answer_wins_the_other_fork_is_cancelled_and_media_starts() {
        let mut t = start(2);
        t.fork_says(0, 180);
        t.fork_says(1, 180);
        assert_eq!(
            t.events.iter().filter(|e| **e == OutEvent::Ringing).count(),
            1
        );
        t.fork_says(1, 200);
        let (remote, format) = t.answered().expect("answered");
        assert_eq!(
            remote,
            Remote::new("192.0.2.20:7000".parse().expect("addr"))
        );
        assert_eq!(
            (format.codec, format.pt, format.dtmf_pt),
            (CodecKind::Pcmu, 0, Some(101))
        );
        assert_eq!(t.acks.len(), 1, "the 2xx is ACKed");
        let loser = TxKey::client(&t.invites[0].0).expect("key");
        assert_eq!(t.cancels, vec![loser]);
        assert!(!t.leg.is_ended());
        t.fork_says(0, 487);
        assert!(t.failed().is_empty());
    }

    #[test]
    fn a_fork_that_has_sent_nothing_is_cancelled_on_its_first_provisional() {
        let mut t = start(2);
        t.fork_says(0, 200);
        assert!(t.cancels.is_empty());
        t.fork_says(1, 100);
        assert_eq!(t.cancels.len(), 1);
    }

    #[test]
    fn busy_wins_over_unavailable_once_every_fork_failed() {
        let mut t = start(2);
        t.fork_says(0, 480);
        assert!(t.failed().is_empty(), "one fork still tries");
        t.fork_says(1, 486);
        assert_eq!(t.failed(), vec![(DialOutcome::Busy, 486)]);
        assert!(t.leg.is_ended());
        assert!(t.leg.is_finished(t.now));
        // Nothing rang: unavailable.
        let mut t = start(1);
        t.fork_says(0, 503);
        assert_eq!(t.failed(), vec![(DialOutcome::Unavailable, 503)]);
        // A phone that rang and gave up by itself did not answer.
        let mut t = start(1);
        t.fork_says(0, 180);
        t.fork_says(0, 480);
        assert_eq!(t.failed(), vec![(DialOutcome::NoAnswer, 480)]);
    }

    #[test]
    fn no_target_fails_at_once_as_unavailable() {
        let t = start(0);
        assert_eq!(t.failed(), vec![(DialOutcome::Unavailable, 480)]);
        assert!(t.leg.is_finished(t.now));
    }

    #[test]
    fn the_ring_timeout_cancels_every_fork() {
        let mut t = start(2);
        t.fork_says(0, 180);
        t.advance(Duration::from_secs(19));
        assert!(t.failed().is_empty());
        t.advance(Duration::from_secs(2));
        assert_eq!(t.failed(), vec![(DialOutcome::NoAnswer, 480)]);
        assert_eq!(
            t.cancels.len(),
            1,
            "fork 1 is cancelled once it answers anything"
        );
        t.fork_says(1, 180);
        assert_eq!(t.cancels.len(), 2);
        assert!(!t.leg.is_finished(t.now), "waits for the 487s");
        t.fork_says(0, 487);
        t.fork_says(1, 487);
        assert!(t.leg.is_finished(t.now));
        assert_eq!(t.failed().len(), 1, "failed once");
    }

    #[test]
    fn a_late_answer_after_the_cancel_is_acked_and_hung_up() {
        let mut t = start(1);
        t.fork_says(0, 180);
        let out = t.leg.hangup(t.now);
        t.take(out);
        assert_eq!(t.cancels.len(), 1);
        // CANCEL and 200 crossed.
        t.fork_says(0, 200);
        assert_eq!(t.acks.len(), 1);
        assert_eq!(t.byes(), 1);
        assert!(t.answered().is_none());
        // A second fork's late 2xx after another answered: the dialog layer ACKs and BYEs.
        let mut t = start(2);
        t.fork_says(0, 200);
        t.fork_says(1, 200);
        assert_eq!(t.acks.len(), 2);
        assert_eq!(t.byes(), 1);
        assert!(t.leg.is_answered());
    }

    #[test]
    fn the_callee_hanging_up_ends_the_leg() {
        let mut t = answered_leg();
        let bye = t.callee_sends(0, "BYE", 1, "", "");
        assert_eq!(t.response_to(&bye), Some(200));
        assert!(t.events.contains(&OutEvent::Ended {
            hangup: HangupLeg::Callee
        }));
        assert!(t.leg.is_ended());
        // Our hang-up after that sends nothing.
        let out = t.leg.hangup(t.now);
        assert!(out.is_empty());
    }

    #[test]
    fn our_hangup_after_the_answer_is_a_bye() {
        let mut t = answered_leg();
        let out = t.leg.hangup(t.now);
        t.take(out);
        assert_eq!(t.byes(), 1);
        assert!(t.leg.is_ended());
        assert!(!t
            .events
            .iter()
            .any(|e| matches!(e, OutEvent::Ended { .. } | OutEvent::Failed { .. })));
    }

    #[test]
    fn hold_info_and_options_from_the_callee() {
        let mut t = answered_leg();
        let hold = ANSWER
            .replace(
                "a=rtpmap:0 PCMU/8000\r\n",
                "a=rtpmap:0 PCMU/8000\r\na=sendonly\r\n",
            )
            .replace("7000", "7100");
        let k = t.callee_sends(0, "INVITE", 2, "\nContent-Type: application/sdp", &hold);
        assert_eq!(t.response_to(&k), Some(200));
        let ok = &t.responses.last().expect("200").1;
        let sdp = SessionDescription::parse_bytes(&ok.body).expect("sdp");
        assert_eq!(sdp.media_direction(0), Direction::RecvOnly);
        assert_eq!(sdp.media[0].formats, ["0", "101"]);
        assert!(t.events.contains(&OutEvent::Hold(true)));
        assert!(t.events.contains(&OutEvent::Remote(Remote::new(
            "192.0.2.20:7100".parse().expect("addr")
        ))));
        let k = t.callee_sends(
            0,
            "INFO",
            3,
            "\nContent-Type: application/dtmf-relay",
            "Signal=7\r\nDuration=160\r\n",
        );
        assert_eq!(t.response_to(&k), Some(200));
        assert!(t.events.contains(&OutEvent::Digit(Digit::D7)));
        let k = t.callee_sends(0, "OPTIONS", 4, "", "");
        assert_eq!(t.response_to(&k), Some(200));
        // A key towards a callee without telephone-event goes as INFO.
        let out = t.leg.send_info_digit(Digit::D5, t.now);
        t.take(out);
        let info = t.requests.last().expect("INFO");
        assert_eq!(info.method, Method::Info);
        assert!(String::from_utf8_lossy(&info.body).contains("Signal=5"));
    }
}
