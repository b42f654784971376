//! A call answered by the PBX itself, for an app (IVR, voicemail, conference): the
//! caller's leg as a UAS dialog, sans-IO. Fed [`SipIn`] events, timers and the app's
//! requests (ring, answer, hang up) with `now`; returns [`AppOut`]s.
//!
//! Owns: the leg's dialog, the SDP answer naming our media endpoint, what the phone's
//! re-INVITEs and UPDATEs mean for it (a new address, hold), key presses sent by SIP INFO.
//! Must not: touch sockets or the media: the call task applies [`AppOut::Remote`],
//! [`AppOut::Hold`] and [`AppOut::Digit`] to the endpoint.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use tracing::info;

use crate::media::dtmf::Digit;
use crate::media::transcode::LegFormat;
use crate::media::Remote;
use crate::sip::dialog::{Body, DialogEvent, DialogId, DialogSet, MsgOpts, TerminateReason};
use crate::sip::message::{HeaderName, Method, Request};
use crate::sip::sdp::{Direction, MediaDescription, OriginState, SessionDescription};
use crate::sip::transaction::TxKey;
use crate::sip::Peer;

use super::machine::{
    body_sdp, re_offer_keeps_stream, remote_of, CallSettings, Command, Disposition, HangupLeg,
    SipIn, ALLOW,
};
use super::own_leg::{answer_in_dialog, endpoint_sdp};
use super::{codecs, CallError};

/// What an app call starts from.
#[derive(Debug, Clone)]
pub struct AppLegParams {
    pub key: TxKey,
    pub invite: Request,
    pub from: Peer,
    /// The caller's offer, parsed ([`super::machine::parse_offer`]).
    pub offer: SessionDescription,
    /// Our Contact URI.
    pub local_contact: String,
    /// Our media endpoint's address and RTP port, put in the SDP.
    pub media_ip: IpAddr,
    pub media_port: u16,
    /// Seeds the dialog layer's RNG (tags).
    pub seed: u64,
    /// The caller's early dialog when a dial nobody answered hands the caller over (it
    /// keeps its To tag); `None` starts one.
    pub dialog: Option<crate::sip::dialog::Dialog>,
}

/// What the leg asks its task to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppOut {
    /// SIP through the core ([`Command::SendRequest`], [`Command::SendAck`],
    /// [`Command::Respond`]).
    Sip(Command),
    /// Where the phone receives our RTP (from its SDP).
    Remote(Remote),
    /// The phone put us on hold (true: stop sending) or took us off it.
    Hold(bool),
    /// A key press sent as SIP INFO.
    Digit(Digit),
    /// The leg was answered (our 200 went out).
    Answered,
    /// The call is over: write the CDR. Sent once.
    Ended {
        disposition: Disposition,
        hangup: HangupLeg,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Offered,
    Answered,
    Ended,
}

/// The leg. See the module comment.
pub struct AppLeg {
    dialogs: DialogSet,
    dialog: DialogId,
    key: TxKey,
    phase: Phase,
    format: LegFormat,
    /// Our answer's audio m-line, and where it sits among the offer's.
    ours: MediaDescription,
    index: usize,
    /// Every m-line of the offer, for declining the others in kind.
    offered: Vec<MediaDescription>,
    media_ip: IpAddr,
    origin: OriginState,
    on_hold: bool,
    /// Our stream's direction: the phone's, reversed.
    direction: Direction,
    rang: bool,
    ended_at: Option<Instant>,
    linger: Duration,
}

impl AppLeg {
    /// Takes the caller's INVITE into a dialog and picks the codec (sends nothing yet:
    /// the app rings or answers). On error the caller is answered with
    /// [`CallError::status`].
    pub fn new(
        p: AppLegParams,
        settings: &CallSettings,
        now: Instant,
    ) -> Result<(AppLeg, Vec<AppOut>), CallError> {
        let _ = now;
        let index = p
            .offer
            .media
            .iter()
            .position(|m| m.is_audio() && m.is_enabled())
            .ok_or(CallError::NoAudio)?;
        let (mut ours, format) =
            codecs::endpoint_answer(&p.offer, index, settings.codec, &settings.codecs)
                .ok_or(CallError::NoCodec)?;
        ours.port = p.media_port;
        let mut dialogs = DialogSet::new(settings.dialog.clone(), StdRng::seed_from_u64(p.seed));
        let dialog = match p.dialog {
            Some(d) => dialogs.adopt(d),
            None => dialogs.accept_invite(&p.key, &p.invite, p.from, &p.local_contact)?,
        };
        let mut leg = AppLeg {
            dialogs,
            dialog,
            key: p.key,
            phase: Phase::Offered,
            format,
            ours,
            index,
            offered: p.offer.media.clone(),
            media_ip: p.media_ip,
            origin: OriginState::new("ringfort", p.seed >> 1, p.media_ip),
            on_hold: false,
            direction: Direction::SendRecv,
            rang: false,
            ended_at: None,
            linger: settings.dialog.timers.t1 * 64,
        };
        let mut out = vec![AppOut::Remote(remote_of(&p.offer, index))];
        leg.hold_from(&p.offer, &mut out);
        Ok((leg, out))
    }

    /// The format our endpoint speaks on this leg.
    pub fn format(&self) -> LegFormat {
        self.format
    }

    pub fn is_answered(&self) -> bool {
        self.phase == Phase::Answered
    }

    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// Ended and its dialog's last transactions had their time (64*T1): the task may stop.
    pub fn is_finished(&self, now: Instant) -> bool {
        self.ended_at
            .is_some_and(|t| now >= t + self.linger || self.dialogs.is_empty())
    }

    /// Gives the caller's early dialog away (to the B2BUA, for a dial): the leg is over
    /// without a word to the caller or a CDR. `None` once answered or ended.
    pub fn hand_over(&mut self, now: Instant) -> Option<crate::sip::dialog::Dialog> {
        if self.phase != Phase::Offered {
            return None;
        }
        let d = self.dialogs.remove(&self.dialog)?;
        self.phase = Phase::Ended;
        self.ended_at = Some(now);
        Some(d)
    }

    /// 180 Ringing (once), before an answer.
    pub fn ring(&mut self, now: Instant) -> Vec<AppOut> {
        let mut out = Vec::new();
        if self.phase == Phase::Offered && !self.rang {
            self.rang = true;
            let evs = self
                .dialogs
                .respond(&self.dialog, &self.key, 180, MsgOpts::default(), now)
                .unwrap_or_default();
            self.absorb(evs, now, &mut out);
        }
        out
    }

    /// Answers: 200 with our SDP.
    pub fn answer(&mut self, now: Instant) -> Vec<AppOut> {
        let mut out = Vec::new();
        if self.phase != Phase::Offered {
            return out;
        }
        let mut opts = MsgOpts::body(self.sdp_body());
        opts.headers.push((HeaderName::Allow, ALLOW.into()));
        match self
            .dialogs
            .respond(&self.dialog, &self.key, 200, opts, now)
        {
            Ok(evs) => {
                self.phase = Phase::Answered;
                info!(codec = ?self.format.codec, "app answered");
                out.push(AppOut::Answered);
                self.absorb(evs, now, &mut out);
            }
            Err(e) => info!(error = %e, "cannot answer"),
        }
        out
    }

    /// Ends the call from our side: BYE when answered, else the INVITE gets `status`
    /// (e.g. 480, 486, 603).
    pub fn hangup(&mut self, status: u16, now: Instant) -> Vec<AppOut> {
        let mut out = Vec::new();
        match self.phase {
            Phase::Ended => {}
            Phase::Offered => {
                let status = if (300..700).contains(&status) {
                    status
                } else {
                    480
                };
                let evs = self
                    .dialogs
                    .respond(&self.dialog, &self.key, status, MsgOpts::default(), now)
                    .unwrap_or_default();
                self.absorb(evs, now, &mut out);
                self.end(Disposition::Failed, HangupLeg::Callee, now, &mut out);
            }
            Phase::Answered => {
                let evs = self.dialogs.bye(&self.dialog, now).unwrap_or_default();
                self.absorb(evs, now, &mut out);
                self.end(Disposition::Answered, HangupLeg::Callee, now, &mut out);
            }
        }
        out
    }

    /// The system ends the call (an admin's hang-up): BYE once answered, else 480.
    pub fn hang_up(&mut self, now: Instant) -> Vec<AppOut> {
        let mut out = Vec::new();
        match self.phase {
            Phase::Ended => {}
            Phase::Offered => {
                let evs = self
                    .dialogs
                    .respond(&self.dialog, &self.key, 480, MsgOpts::default(), now)
                    .unwrap_or_default();
                self.absorb(evs, now, &mut out);
                self.end(Disposition::Cancelled, HangupLeg::System, now, &mut out);
            }
            Phase::Answered => {
                info!("hung up by the system");
                let evs = self.dialogs.bye(&self.dialog, now).unwrap_or_default();
                self.absorb(evs, now, &mut out);
                self.end(Disposition::Answered, HangupLeg::System, now, &mut out);
            }
        }
        out
    }

    /// No RTP for too long: the phone is gone.
    pub fn on_media_timeout(&mut self, now: Instant) -> Vec<AppOut> {
        let mut out = Vec::new();
        if self.phase == Phase::Answered {
            info!("no media: hanging up");
            let evs = self.dialogs.bye(&self.dialog, now).unwrap_or_default();
            self.absorb(evs, now, &mut out);
            self.end(Disposition::Answered, HangupLeg::System, now, &mut out);
        }
        out
    }

    pub fn on_sip(&mut self, input: SipIn, now: Instant) -> Vec<AppOut> {
        let events = match input {
            SipIn::Request { key, req, from } => {
                match self.dialogs.on_request(key.clone(), req.clone(), from, now) {
                    Ok(evs) => evs,
                    Err(e) => {
                        let resp = e.response(&req, &self.dialog.local_tag);
                        return vec![AppOut::Sip(Command::Respond { key, resp })];
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

    pub fn on_timer(&mut self, now: Instant) -> Vec<AppOut> {
        let mut out = Vec::new();
        let evs = self.dialogs.on_timer(now);
        self.absorb(evs, now, &mut out);
        out
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let linger = self.ended_at.map(|t| t + self.linger);
        [self.dialogs.next_deadline(), linger]
            .into_iter()
            .flatten()
            .min()
    }

    fn end(
        &mut self,
        disposition: Disposition,
        hangup: HangupLeg,
        now: Instant,
        out: &mut Vec<AppOut>,
    ) {
        if self.phase == Phase::Ended {
            return;
        }
        self.phase = Phase::Ended;
        self.ended_at = Some(now);
        out.push(AppOut::Ended {
            disposition,
            hangup,
        });
    }

    /// Our SDP: the audio stream on our endpoint, every other offered stream declined.
    fn sdp_body(&mut self) -> Body {
        let media = self
            .offered
            .iter()
            .enumerate()
            .map(|(i, m)| {
                if i == self.index {
                    let mut ours = self.ours.clone();
                    ours.set_direction(Some(self.direction));
                    ours
                } else {
                    MediaDescription::new(m.media.clone(), 0, m.proto.clone(), m.formats.clone())
                }
            })
            .collect();
        endpoint_sdp(self.media_ip, &mut self.origin, media)
    }

    /// The phone's offer says whether it holds us: it does not want our audio (sendonly,
    /// inactive, or the RFC 2543 `c=0.0.0.0`). Our answer mirrors its direction.
    fn hold_from(&mut self, offer: &SessionDescription, out: &mut Vec<AppOut>) {
        let theirs = offer.media_direction(self.index);
        self.direction = theirs.reversed();
        let hold = !theirs.receives();
        if hold != self.on_hold {
            self.on_hold = hold;
            out.push(AppOut::Hold(hold));
        }
    }

    fn absorb(&mut self, events: Vec<DialogEvent>, now: Instant, out: &mut Vec<AppOut>) {
        let mut queue: std::collections::VecDeque<DialogEvent> = events.into();
        while let Some(ev) = queue.pop_front() {
            queue.extend(self.handle(ev, now, out));
        }
    }

    fn handle(&mut self, ev: DialogEvent, now: Instant, out: &mut Vec<AppOut>) -> Vec<DialogEvent> {
        match ev {
            DialogEvent::SendRequest { req, to } => {
                out.push(AppOut::Sip(Command::SendRequest { req, to }))
            }
            DialogEvent::SendAck { req, to } => out.push(AppOut::Sip(Command::SendAck { req, to })),
            DialogEvent::SendResponse { key, resp } => {
                out.push(AppOut::Sip(Command::Respond { key, resp }))
            }
            DialogEvent::Request { id, key, req } => {
                return self.on_in_dialog(&id, &key, &req, now, out)
            }
            DialogEvent::RefreshDue { id } => {
                return self
                    .dialogs
                    .request(&id, Method::Update, MsgOpts::default(), now)
                    .unwrap_or_default();
            }
            DialogEvent::Terminated { reason, .. } => {
                let (disposition, hangup) = match reason {
                    TerminateReason::LocalBye | TerminateReason::Rejected(_) => return Vec::new(),
                    TerminateReason::RemoteBye => (
                        if self.phase == Phase::Answered {
                            Disposition::Answered
                        } else {
                            Disposition::Cancelled
                        },
                        HangupLeg::Caller,
                    ),
                    TerminateReason::Cancelled => {
                        info!("caller cancelled");
                        (Disposition::Cancelled, HangupLeg::Caller)
                    }
                    other => {
                        info!(reason = ?other, "caller leg lost");
                        let d = if self.phase == Phase::Answered {
                            Disposition::Answered
                        } else {
                            Disposition::Failed
                        };
                        (d, HangupLeg::System)
                    }
                };
                self.end(disposition, hangup, now, out);
            }
            DialogEvent::Created { .. }
            | DialogEvent::InviteProgress { .. }
            | DialogEvent::InviteFailed { .. }
            | DialogEvent::Response { .. }
            | DialogEvent::Acked { .. }
            | DialogEvent::Prack { .. } => {}
        }
        Vec::new()
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
        out: &mut Vec<AppOut>,
    ) -> Vec<DialogEvent> {
        let ct = req.headers.get(&HeaderName::ContentType);
        match &req.method {
            Method::Invite | Method::Update => {
                if self.phase != Phase::Answered {
                    return self.respond(id, key, 500, MsgOpts::default(), now);
                }
                if !req.body.is_empty() {
                    let offer = body_sdp(&req.body, ct);
                    let Some(offer) = offer else {
                        return self.respond(id, key, 488, MsgOpts::default(), now);
                    };
                    let usable = offer.media.len() >= self.offered.len()
                        && re_offer_keeps_stream(&offer, self.index, Some(self.format.pt));
                    if !usable {
                        return self.respond(id, key, 488, MsgOpts::default(), now);
                    }
                    self.offered = offer.media.clone();
                    out.push(AppOut::Remote(remote_of(&offer, self.index)));
                    self.hold_from(&offer, out);
                }
                // A body-less re-INVITE asks for our offer; a refresh gets our SDP again.
                let body =
                    (req.method == Method::Invite || !req.body.is_empty()).then(|| self.sdp_body());
                let opts = MsgOpts {
                    body,
                    ..MsgOpts::default()
                };
                self.respond(id, key, 200, opts, now)
            }
            _ => {
                let (status, opts, digit) = answer_in_dialog(req);
                out.extend(digit.map(AppOut::Digit));
                self.respond(id, key, status, opts, now)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_sip::{parse_req, peer, settings};
    use super::*;
    use crate::media::codec::CodecKind;
    use crate::sip::message::Response;
    use crate::sip::sdp::Connection;

    const OFFER: &str = "v=0\r\no=a 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\n\
                         t=0 0\r\nm=audio 6000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
                         a=rtpmap:101 telephone-event/8000\r\n\
                         m=video 6002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";

    fn invite(body: &str) -> Request {
        parse_req(
            "INVITE sip:800@203.0.113.1 SIP/2.0\n\
             Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKinv1\n\
             From: <sip:100@203.0.113.1>;tag=ca\n\
             To: <sip:800@203.0.113.1>\n\
             Call-ID: app-1\n\
             CSeq: 1 INVITE\n\
             Contact: <sip:100@192.0.2.10:5060>\n\
             Max-Forwards: 70\n\
             Content-Type: application/sdp",
            body,
        )
    }

    struct T {
        leg: AppLeg,
        key: TxKey,
        now: Instant,
        out: Vec<AppOut>,
        to_tag: String,
    }

    fn start(body: &str) -> Result<T, CallError> {
        let inv = invite(body);
        let key = TxKey::server(&inv).expect("key");
        let now = Instant::now();
        let p = AppLegParams {
            key: key.clone(),
            invite: inv,
            from: peer("192.0.2.10:5060"),
            offer: SessionDescription::parse(body).expect("sdp"),
            local_contact: "sip:ringfort@203.0.113.1:5060".into(),
            media_ip: "203.0.113.1".parse().expect("ip"),
            media_port: 30000,
            seed: 3,
            dialog: None,
        };
        let (leg, out) = AppLeg::new(p, &settings(), now)?;
        Ok(T {
            leg,
            key,
            now,
            out,
            to_tag: String::new(),
        })
    }

    impl T {
        fn responses(&self, key: &TxKey) -> Vec<Response> {
            self.out
                .iter()
                .filter_map(|o| match o {
                    AppOut::Sip(Command::Respond { key: k, resp }) if k == key => {
                        Some(resp.clone())
                    }
                    _ => None,
                })
                .collect()
        }

        fn answer(&mut self) -> Response {
            let out = self.leg.answer(self.now);
            self.out.extend(out);
            let resp = self.responses(&self.key.clone()).pop().expect("200");
            let to = resp.headers.get(&HeaderName::To).unwrap_or_default();
            self.to_tag = to.split("tag=").nth(1).unwrap_or_default().to_owned();
            resp
        }

        /// An in-dialog request from the phone; returns its key.
        fn request(&mut self, method: &str, cseq: u32, extra: &str, body: &str) -> TxKey {
            let req = parse_req(
                &format!(
                    "{method} sip:ringfort@203.0.113.1:5060 SIP/2.0\n\
                     Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{method}{cseq}\n\
                     From: <sip:100@203.0.113.1>;tag=ca\n\
                     To: <sip:800@203.0.113.1>;tag={}\n\
                     Call-ID: app-1\n\
                     CSeq: {cseq} {method}\n\
                     Contact: <sip:100@192.0.2.10:5060>\n\
                     Max-Forwards: 70{extra}",
                    self.to_tag
                ),
                body,
            );
            let key = TxKey::server(&req).expect("key");
            let out = if method == "ACK" {
                self.leg.on_sip(SipIn::Ack(req), self.now)
            } else {
                self.leg.on_sip(
                    SipIn::Request {
                        key: key.clone(),
                        req,
                        from: peer("192.0.2.10:5060"),
                    },
                    self.now,
                )
            };
            self.out.extend(out);
            key
        }

        fn ended(&self) -> Vec<(Disposition, HangupLeg)> {
            self.out
                .iter()
                .filter_map(|o| match o {
                    AppOut::Ended {
                        disposition,
                        hangup,
                    } => Some((*disposition, *hangup)),
                    _ => None,
                })
                .collect()
        }
    }

    #[test]
    fn the_answer_names_our_endpoint_with_the_callers_codec_and_declines_video() {
        let mut t = start(OFFER).expect("leg");
        assert_eq!(
            t.out,
            vec![AppOut::Remote(Remote::new(
                "192.0.2.10:6000".parse().expect("addr")
            ))]
        );
        assert_eq!(t.leg.format().codec, CodecKind::Pcmu);
        assert_eq!(t.leg.format().dtmf_pt, Some(101));
        let ok = t.answer();
        assert_eq!(ok.status, 200);
        assert!(t.out.contains(&AppOut::Answered));
        let sdp = SessionDescription::parse_bytes(&ok.body).expect("sdp");
        assert_eq!(
            sdp.connection.as_ref().and_then(Connection::ip),
            Some("203.0.113.1".parse().expect("ip"))
        );
        assert_eq!((sdp.media[0].port, sdp.media[1].port), (30000, 0));
        assert_eq!(sdp.media[0].formats, vec!["0", "101"]);
        assert_eq!(sdp.media_direction(0), Direction::SendRecv);
        // The phone's BYE ends it: answered, the caller hung up.
        t.request("ACK", 1, "", "");
        let bye = t.request("BYE", 2, "", "");
        assert_eq!(t.responses(&bye)[0].status, 200);
        assert_eq!(t.ended(), vec![(Disposition::Answered, HangupLeg::Caller)]);
        assert!(t.leg.is_ended());
    }

    #[test]
    fn dtmf_by_info_becomes_a_digit_and_other_info_is_refused() {
        let mut t = start(OFFER).expect("leg");
        t.answer();
        t.request("ACK", 1, "", "");
        let k = t.request(
            "INFO",
            2,
            "\nContent-Type: application/dtmf-relay",
            "Signal=5\r\nDuration=160\r\n",
        );
        assert_eq!(t.responses(&k)[0].status, 200);
        assert!(t.out.contains(&AppOut::Digit(Digit::D5)));
        let k = t.request("INFO", 3, "\nContent-Type: application/dtmf", "#");
        assert_eq!(t.responses(&k)[0].status, 200);
        assert!(t.out.contains(&AppOut::Digit(Digit::Hash)));
        let k = t.request(
            "INFO",
            4,
            "\nContent-Type: application/dtmf-relay",
            "Signal=x\r\n",
        );
        assert_eq!(t.responses(&k)[0].status, 400);
        let k = t.request("INFO", 5, "\nContent-Type: application/json", "{}");
        assert_eq!(t.responses(&k)[0].status, 415);
    }

    #[test]
    fn a_hold_reinvite_pauses_our_stream_and_is_answered_recvonly() {
        let mut t = start(OFFER).expect("leg");
        t.answer();
        t.request("ACK", 1, "", "");
        let hold = OFFER
            .replace(
                "a=rtpmap:0 PCMU/8000\r\n",
                "a=rtpmap:0 PCMU/8000\r\na=sendonly\r\n",
            )
            .replace("6000", "6100");
        let k = t.request("INVITE", 2, "\nContent-Type: application/sdp", &hold);
        let ok = t.responses(&k).pop().expect("200");
        assert_eq!(ok.status, 200);
        let sdp = SessionDescription::parse_bytes(&ok.body).expect("sdp");
        assert_eq!(sdp.media_direction(0), Direction::RecvOnly);
        assert!(t.out.contains(&AppOut::Hold(true)));
        assert!(t.out.contains(&AppOut::Remote(Remote::new(
            "192.0.2.10:6100".parse().expect("addr")
        ))));
        // A codec we did not answer with would need another endpoint: 488, call goes on.
        let other = OFFER.replace("RTP/AVP 0 101", "RTP/AVP 8 101");
        let k = t.request("INVITE", 3, "\nContent-Type: application/sdp", &other);
        assert_eq!(t.responses(&k)[0].status, 488);
        assert!(!t.leg.is_ended());
    }

    #[test]
    fn cancel_before_the_answer_and_our_hangup_after_it() {
        let mut t = start(OFFER).expect("leg");
        let out = t.leg.ring(t.now);
        t.out.extend(out);
        assert_eq!(t.responses(&t.key.clone())[0].status, 180);
        let out = t.leg.on_sip(SipIn::Cancel(t.key.clone()), t.now);
        t.out.extend(out);
        assert_eq!(
            t.responses(&t.key.clone()).pop().map(|r| r.status),
            Some(487)
        );
        assert_eq!(t.ended(), vec![(Disposition::Cancelled, HangupLeg::Caller)]);

        let mut t = start(OFFER).expect("leg");
        t.answer();
        t.request("ACK", 1, "", "");
        let out = t.leg.hangup(0, t.now);
        assert!(out.iter().any(|o| matches!(
            o,
            AppOut::Sip(Command::SendRequest { req, .. }) if req.method == Method::Bye
        )));
        t.out.extend(out);
        assert_eq!(t.ended(), vec![(Disposition::Answered, HangupLeg::Callee)]);
        // Before an answer, a hang-up is a final response.
        let mut t = start(OFFER).expect("leg");
        let out = t.leg.hangup(486, t.now);
        t.out.extend(out);
        assert_eq!(t.responses(&t.key.clone())[0].status, 486);
    }

    #[test]
    fn a_system_hang_up_is_a_bye_once_answered_else_480() {
        let mut t = start(OFFER).expect("leg");
        t.answer();
        t.request("ACK", 1, "", "");
        let out = t.leg.hang_up(t.now);
        assert!(out.iter().any(|o| matches!(
            o,
            AppOut::Sip(Command::SendRequest { req, .. }) if req.method == Method::Bye
        )));
        t.out.extend(out);
        assert_eq!(t.ended(), vec![(Disposition::Answered, HangupLeg::System)]);

        let mut t = start(OFFER).expect("leg");
        let out = t.leg.hang_up(t.now);
        t.out.extend(out);
        assert_eq!(t.responses(&t.key.clone())[0].status, 480);
        assert_eq!(t.ended(), vec![(Disposition::Cancelled, HangupLeg::System)]);
    }

    #[test]
    fn a_caller_that_never_acks_is_hung_up_after_64_t1() {
        let mut t = start(OFFER).expect("leg");
        t.answer();
        let mut now = t.now;
        for _ in 0..100 {
            let Some(d) = t.leg.next_deadline() else {
                break;
            };
            now = d.max(now);
            let out = t.leg.on_timer(now);
            t.out.extend(out);
            if t.leg.is_finished(now) {
                break;
            }
        }
        assert_eq!(t.ended(), vec![(Disposition::Answered, HangupLeg::System)]);
        assert!(now - t.now >= Duration::from_secs(32));
        assert!(t.leg.is_finished(now));
    }

    #[test]
    fn an_offer_without_a_codec_of_ours_is_488() {
        let g729 = OFFER
            .replace("RTP/AVP 0 101", "RTP/AVP 18")
            .replace("PCMU", "G729");
        let g729 = g729.replace("a=rtpmap:0 G729/8000", "a=rtpmap:18 G729/8000");
        match start(&g729) {
            Err(e) => assert_eq!(e.status(), 488),
            Ok(_) => panic!("accepted"),
        }
    }
}
