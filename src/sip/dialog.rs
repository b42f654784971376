//! The SIP dialog layer (RFC 3261 12-14, RFC 3262 PRACK, RFC 3311 UPDATE, RFC 4028
//! session timers), sans-IO.
//!
//! Owns: dialog state (Call-ID, tags, From/To, local and remote CSeq, remote target, route
//! set, secure flag, Early/Confirmed/Terminated) and the [`DialogSet`] table that matches
//! incoming requests and responses to dialogs (481 when none matches); building every
//! in-dialog request (CSeq, Route, Request-URI, strict routing) and the responses to the
//! INVITE and in-dialog requests (To tag, Contact, Record-Route echo); the TU duties the
//! transaction layer leaves to us: the 2xx retransmission until ACK (RFC 3261 13.3.1.4,
//! RFC 6026) and its give-up, the ACK for a 2xx (13.2.2.4) and its re-sending on 2xx
//! retransmissions, the ACK + BYE of a second forked 2xx; reliable provisionals (RSeq,
//! RAck, retransmission, PRACK); 491 glare and its retry window (14.1); CSeq checks (500);
//! session timer negotiation (Session-Expires, Min-SE, refresher, 422) and its refresh and
//! expiry deadlines.
//!
//! Must not: do I/O, read a clock (every call takes `now`), parse SDP or know about media
//! (bodies are opaque [`Body`]s carried both ways), resolve addresses (the [`Peer`] to send
//! to is given by the caller and kept: a UAS dialog answers on the flow the INVITE came on,
//! a UAC dialog keeps the flow the INVITE went out on, which is what works behind NAT;
//! [`DialogSet::set_peer`] changes it), or decide call policy (who to call, when to
//! answer: that is `call`).
//!
//! How it sits on the transaction layer: the dialog layer never owns a
//! [`super::transaction::TransactionLayer`]; it returns [`DialogEvent`]s and the caller
//! carries them out:
//! - [`DialogEvent::SendRequest`]: start a client transaction with
//!   `TransactionLayer::send_request(req, to, now)`. The top Via with a fresh RFC 3261
//!   branch ([`new_branch`]) is set HERE (sent-by is `peer.local`, with `;rport`), so the
//!   request can go to the transaction layer as is.
//! - [`DialogEvent::SendAck`]: send directly on the flow, no transaction (ACK for a 2xx).
//! - [`DialogEvent::SendResponse`]: `TransactionLayer::respond(&key, resp, now)`; this is
//!   also how 2xx and reliable 1xx retransmissions go out (the INVITE server transaction
//!   is in Accepted/Proceeding and passes them on).
//!
//! And it feeds us the transaction layer's actions: `Action::Request` with a To tag ->
//! [`DialogSet::on_request`] (without: an initial INVITE -> [`DialogSet::accept_invite`]),
//! `Action::Ack2xx` -> [`DialogSet::on_ack`], `Action::Cancel` -> [`DialogSet::on_cancel`],
//! `Action::Response` -> [`DialogSet::on_response`] with the key, `Action::StrayResponse`
//! -> [`DialogSet::on_response`] with `None`, `Action::Timeout` / `TransportError` ->
//! [`DialogSet::on_timeout`]. Timers: call [`DialogSet::on_timer`] at
//! [`DialogSet::next_deadline`].
//!
//! Automatic answers (the TU never sees these requests as [`DialogEvent::Request`]): 481
//! for an unknown or terminated dialog, 500 for a CSeq that does not increase, 400 for a
//! broken CSeq, 491 for a re-INVITE (UPDATE) while our own is pending, 500 + Retry-After
//! for a re-INVITE while one from the peer is still unanswered (14.2), 422 + Min-SE for a
//! too small Session-Expires, 200 for BYE (and 487 for the INVITE it ends) and for a PRACK
//! that matches the outstanding reliable 1xx (481 otherwise). Everything else in a dialog
//! (re-INVITE, UPDATE, INFO, NOTIFY, REFER, MESSAGE, OPTIONS...) is a
//! [`DialogEvent::Request`] the TU answers with [`DialogSet::respond`].
//!
//! Left to the caller: authentication challenges (401/407 to our INVITE come back as
//! [`DialogEvent::InviteFailed`]), CANCEL of our INVITE (use [`DialogSet::invite_key`] and
//! `TransactionLayer::build_cancel`), DNS. Late offer: when our INVITE had no body the ACK
//! must carry the answer, so it is not sent automatically: the TU calls
//! [`DialogSet::send_ack`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::Rng;
use thiserror::Error;

use super::message::{
    cseq, from_header, reason_phrase, to_header, HeaderName, Headers, Method, NameAddr, Request,
    Response, SipUri,
};
use super::transaction::{new_branch, Timers, TxKey};
use super::{Peer, Transport};

/// Identifies a dialog (RFC 3261 12): Call-ID and both tags, from our point of view.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
}

/// Identifies one outgoing dialog-creating INVITE, before and across its forks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InviteId {
    pub call_id: String,
    pub local_tag: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    Early,
    Confirmed,
    Terminated,
}

/// Why a dialog ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminateReason {
    /// The peer sent BYE.
    RemoteBye,
    /// We sent BYE ([`DialogSet::bye`]).
    LocalBye,
    /// Our 2xx was retransmitted for 64*T1 without ACK; a BYE was sent (13.3.1.4).
    AckTimeout,
    /// Our reliable 1xx got no PRACK for 64*T1; the INVITE was answered 500 (RFC 3262 3).
    PrackTimeout,
    /// No session refresh in time (RFC 4028 10); a BYE was sent.
    SessionExpired,
    /// The INVITE was answered with this final non-2xx status (either direction).
    Rejected(u16),
    /// The INVITE was cancelled (we answered 487).
    Cancelled,
    /// Another fork answered: an early dialog dropped, or a late 2xx ACKed and BYEd.
    ForkLoser,
    /// An in-dialog request got 481 or 408 (or timed out): the peer lost the dialog.
    PeerGone(u16),
}

/// An opaque message body (SDP, DTMF relay, sipfrag...): the dialog layer never reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    pub content_type: String,
    pub data: Bytes,
}

impl Body {
    pub fn new(content_type: &str, data: impl Into<Bytes>) -> Body {
        Body {
            content_type: content_type.to_owned(),
            data: data.into(),
        }
    }
}

/// What the TU adds to a request or response the dialog layer builds.
#[derive(Debug, Clone, Default)]
pub struct MsgOpts {
    pub body: Option<Body>,
    /// Extra header lines, appended in order (e.g. Event, Refer-To, Allow).
    pub headers: Vec<(HeaderName, String)>,
    /// For a 101-199 response to an INVITE: send it reliably (RFC 3262) when the caller
    /// supports 100rel. (When the caller requires 100rel, 1xx are always reliable.)
    pub reliable: bool,
}

impl MsgOpts {
    pub fn body(body: Body) -> MsgOpts {
        MsgOpts {
            body: Some(body),
            ..MsgOpts::default()
        }
    }
}

/// Settings of the dialog layer.
#[derive(Debug, Clone)]
pub struct DialogConfig {
    /// T1 and T2 (the same values the transaction layer uses).
    pub timers: Timers,
    /// Session interval we ask for in our INVITEs and grant when the peer asks for none
    /// (RFC 4028); `None`: we do not ask, but still honour the peer's.
    pub session_expires: Option<u32>,
    /// Smallest session interval we accept (RFC 4028: at least 90 s; lower is raised).
    pub min_se: u32,
    /// Offer `Supported: 100rel` in our INVITEs.
    pub support_100rel: bool,
    /// Ends every tag we make (`<random>.<mark>`), so the node that has a dialog can be
    /// told from its tags alone ([`crate::cluster::tunnel`]); empty: plain random tags.
    pub tag_mark: String,
}

impl Default for DialogConfig {
    fn default() -> Self {
        DialogConfig {
            timers: Timers::default(),
            session_expires: Some(1800),
            min_se: 90,
            support_100rel: true,
            tag_mark: String::new(),
        }
    }
}

/// What the caller must do after feeding the dialog layer. See the module comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialogEvent {
    /// Start a client transaction for this request (its Via branch is set).
    SendRequest { req: Request, to: Peer },
    /// Send this ACK for a 2xx directly on the flow (no transaction).
    SendAck { req: Request, to: Peer },
    /// Answer (or re-answer) a server transaction: `TransactionLayer::respond`.
    SendResponse { key: TxKey, resp: Response },
    /// A UAC dialog came into being from a 1xx or 2xx with a To tag (one per fork).
    Created { invite: InviteId, id: DialogId },
    /// A provisional response to our dialog-creating INVITE (`id`: the early dialog it
    /// created, None without To tag). Reliable ones are PRACKed already.
    InviteProgress {
        invite: InviteId,
        id: Option<DialogId>,
        resp: Response,
    },
    /// Our dialog-creating INVITE got a final non-2xx (or timed out: synthesized 408);
    /// every early dialog of it is terminated.
    InviteFailed { invite: InviteId, resp: Response },
    /// A response to a request we sent in a dialog (a 2xx to our INVITE: the dialog is
    /// confirmed and ACKed, unless the INVITE had no body, see [`DialogSet::send_ack`]).
    Response {
        id: DialogId,
        method: Method,
        resp: Response,
    },
    /// An in-dialog request the TU must answer with [`DialogSet::respond`].
    Request {
        id: DialogId,
        key: TxKey,
        req: Request,
    },
    /// The ACK for our 2xx arrived (it may carry the answer of a late offer).
    Acked { id: DialogId, req: Request },
    /// A PRACK matched our reliable 1xx and was answered 200 (it may carry an answer).
    Prack { id: DialogId, req: Request },
    /// We are the session refresher and half the interval has passed: send a re-INVITE
    /// or UPDATE with [`DialogSet::request`] (it carries Session-Expires itself).
    RefreshDue { id: DialogId },
    /// The dialog is over. Whatever BYE/response that needed is in the same batch.
    Terminated {
        id: DialogId,
        reason: TerminateReason,
    },
}

/// The dialog layer's errors. [`DialogError::status`] is the one place they map to SIP.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DialogError {
    #[error("no such dialog")]
    UnknownDialog,
    #[error("request has no To tag: it creates a dialog, it is not in one")]
    NotInDialog,
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("CSeq {got} does not increase on {last}")]
    CSeqOutOfOrder { got: u32, last: u32 },
    #[error("session interval too small, Min-SE is {min_se}")]
    IntervalTooSmall { min_se: u32 },
    #[error("a request of the same kind is pending on this dialog")]
    Glare,
    #[error("no request waiting for an answer under this transaction")]
    NoPendingRequest,
    #[error("not allowed in dialog state {0:?}")]
    State(DialogState),
    #[error("a reliable provisional response still awaits its PRACK")]
    ProvisionalPending,
}

impl DialogError {
    /// The status a server answers a request with when this error refuses it.
    pub fn status(&self) -> u16 {
        match self {
            DialogError::UnknownDialog | DialogError::NotInDialog => 481,
            DialogError::Malformed(_) => 400,
            DialogError::IntervalTooSmall { .. } => 422,
            DialogError::Glare => 491,
            _ => 500,
        }
    }

    /// The response refusing `req` for this error (Min-SE on a 422).
    pub fn response(&self, req: &Request, local_tag: &str) -> Response {
        let status = self.status();
        let mut resp = Response::for_request(req, status, reason_or(status));
        resp.ensure_to_tag(local_tag);
        if let DialogError::IntervalTooSmall { min_se } = self {
            resp.headers.push(min_se_name(), min_se.to_string());
        }
        resp
    }
}

fn reason_or(status: u16) -> &'static str {
    match status {
        422 => "Session Interval Too Small",
        491 => "Request Pending",
        s => reason_phrase(s),
    }
}

/// RFC 4028 4: no session interval is below 90 s, whatever a peer writes.
const MIN_SE_FLOOR: u32 = 90;

fn hname(s: &str) -> HeaderName {
    HeaderName::Other(s.to_owned())
}
fn min_se_name() -> HeaderName {
    hname("Min-SE")
}
fn se_name() -> HeaderName {
    hname("Session-Expires")
}

/// A header that `HeaderName` does not know, by long name or compact form.
fn other_header<'a>(h: &'a Headers, long: &str, compact: Option<&str>) -> Option<&'a str> {
    h.iter()
        .find(|x| match &x.name {
            HeaderName::Other(n) => {
                n.eq_ignore_ascii_case(long) || compact.is_some_and(|c| n.eq_ignore_ascii_case(c))
            }
            _ => false,
        })
        .map(|x| x.value.as_str())
}

fn has_option(h: &Headers, name: &HeaderName, option: &str) -> bool {
    h.list(name).any(|o| o.trim().eq_ignore_ascii_case(option))
}

fn supports(h: &Headers, option: &str) -> bool {
    has_option(h, &HeaderName::Supported, option) || has_option(h, &HeaderName::Require, option)
}

/// Session-Expires: delta and whether the refresher param says `uac` (Some(true)).
fn session_expires(h: &Headers) -> Option<(u32, Option<bool>)> {
    let v = other_header(h, "Session-Expires", Some("x"))?;
    let (num, params) = v.split_once(';').unwrap_or((v, ""));
    let se = super::message::parse_delta_seconds(num)?;
    let refresher = params.split(';').find_map(|p| {
        let (n, v) = p.split_once('=')?;
        n.trim()
            .eq_ignore_ascii_case("refresher")
            .then(|| v.trim().eq_ignore_ascii_case("uac"))
    });
    Some((se, refresher))
}

fn min_se(h: &Headers) -> Option<u32> {
    other_header(h, "Min-SE", None)
        .and_then(|v| super::message::parse_delta_seconds(v.split(';').next().unwrap_or("")))
}

fn first_contact_uri(h: &Headers) -> Option<String> {
    let c = h.list(&HeaderName::Contact).next()?;
    NameAddr::parse(c).ok().map(|n| n.uri)
}

fn tag_of(v: &NameAddr) -> Option<String> {
    v.tag().map(str::to_owned)
}

impl DialogSet {
    /// A fresh local tag, with our node's mark when we have one.
    fn new_tag(&mut self) -> String {
        let random = random_token(&mut self.rng, 10);
        if self.cfg.tag_mark.is_empty() {
            random
        } else {
            format!("{random}.{}", self.cfg.tag_mark)
        }
    }
}

fn random_token(rng: &mut StdRng, len: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| char::from(CHARS[rng.gen_range(0..CHARS.len())]))
        .collect()
}

fn is_2xx(s: u16) -> bool {
    (200..300).contains(&s)
}

/// A response we retransmit ourselves: a 2xx until ACK, a reliable 1xx until PRACK.
#[derive(Debug, Clone)]
struct Retrans {
    key: TxKey,
    resp: Response,
    cseq: u32,
    rseq: u32,
    interval: Duration,
    next: Instant,
    give_up: Instant,
    initial: bool,
}

impl Retrans {
    fn deadline(&self) -> Instant {
        self.next.min(self.give_up)
    }
}

#[derive(Debug, Clone)]
struct ServerTx {
    key: TxKey,
    req: Request,
    /// The dialog-creating INVITE (Record-Route echo, final response ends an early dialog).
    initial: bool,
}

#[derive(Debug, Clone)]
struct ClientTx {
    key: TxKey,
    method: Method,
    cseq: u32,
    req: Request,
}

/// RFC 4028 state of a confirmed dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimer {
    /// The negotiated interval in seconds.
    pub interval: u32,
    /// Whether we are the refresher.
    pub local_refresher: bool,
    /// When the last refresh (or the session) started.
    pub refreshed_at: Instant,
    /// RefreshDue was reported for this round.
    due_reported: bool,
}

impl SessionTimer {
    fn new(interval: u32, local_refresher: bool, now: Instant) -> SessionTimer {
        SessionTimer {
            interval,
            local_refresher,
            refreshed_at: now,
            due_reported: false,
        }
    }

    /// When the refresher should refresh: half the interval.
    pub fn refresh_at(&self) -> Instant {
        self.refreshed_at + Duration::from_secs(u64::from(self.interval)) / 2
    }

    /// When the session expires without refresh: interval - min(32, interval/3).
    pub fn expires_at(&self) -> Instant {
        let i = u64::from(self.interval);
        self.refreshed_at + Duration::from_secs(i - 32.min(i / 3))
    }

    fn deadline(&self) -> Instant {
        if self.local_refresher && !self.due_reported {
            self.refresh_at()
        } else {
            self.expires_at()
        }
    }
}

/// One dialog. Read it through [`DialogSet::get`]; change it through [`DialogSet`].
#[derive(Debug, Clone)]
pub struct Dialog {
    id: DialogId,
    /// We sent the dialog-creating INVITE (and so own the Call-ID, 14.1).
    is_caller: bool,
    state: DialogState,
    /// From (UAC) or To (UAS) of the dialog-creating request, with our tag.
    local_uri: String,
    remote_uri: String,
    local_cseq: Option<u32>,
    remote_cseq: Option<u32>,
    remote_target: String,
    route_set: Vec<String>,
    secure: bool,
    peer: Peer,
    local_contact: String,
    peer_100rel: bool,
    server_txs: Vec<ServerTx>,
    client_txs: Vec<ClientTx>,
    /// Our INVITE (initial or re-INVITE) without final response.
    out_invite: Option<ClientTx>,
    /// CSeq and ACK of the last 2xx to our INVITE, re-sent on 2xx retransmissions.
    last_ack: Option<(u32, Request)>,
    /// A 2xx to our body-less INVITE waits for the TU's ACK (late offer).
    ack_pending: Option<u32>,
    last_rseq_in: Option<u32>,
    next_rseq: u32,
    rel1xx: Option<Retrans>,
    pending_2xx: Option<Retrans>,
    glare_retry: Option<(Instant, Request)>,
    session: Option<SessionTimer>,
    terminated_at: Option<Instant>,
}

impl Dialog {
    pub fn id(&self) -> &DialogId {
        &self.id
    }
    pub fn state(&self) -> DialogState {
        self.state
    }
    pub fn is_caller(&self) -> bool {
        self.is_caller
    }
    pub fn local_uri(&self) -> &str {
        &self.local_uri
    }
    pub fn remote_uri(&self) -> &str {
        &self.remote_uri
    }
    pub fn local_cseq(&self) -> Option<u32> {
        self.local_cseq
    }
    pub fn remote_cseq(&self) -> Option<u32> {
        self.remote_cseq
    }
    pub fn remote_target(&self) -> &str {
        &self.remote_target
    }
    /// Route set in the order Route headers are written (12.1.1 / 12.1.2).
    pub fn route_set(&self) -> &[String] {
        &self.route_set
    }
    pub fn secure(&self) -> bool {
        self.secure
    }
    pub fn peer(&self) -> Peer {
        self.peer
    }
    pub fn session_timer(&self) -> Option<&SessionTimer> {
        self.session.as_ref()
    }
    /// When a re-INVITE refused with 491 will be sent again.
    pub fn glare_retry_at(&self) -> Option<Instant> {
        self.glare_retry.as_ref().map(|g| g.0)
    }
    /// Our 2xx is being retransmitted, waiting for ACK.
    pub fn awaiting_ack(&self) -> bool {
        self.pending_2xx.is_some()
    }
    /// Our reliable 1xx is being retransmitted, waiting for PRACK.
    pub fn awaiting_prack(&self) -> bool {
        self.rel1xx.is_some()
    }

    fn next_deadline(&self, cfg: &DialogConfig) -> Option<Instant> {
        if let Some(t) = self.terminated_at {
            return Some(t + cfg.timers.t1 * 64);
        }
        [
            self.rel1xx.as_ref().map(Retrans::deadline),
            self.pending_2xx.as_ref().map(Retrans::deadline),
            self.glare_retry.as_ref().map(|g| g.0),
            self.session.as_ref().map(SessionTimer::deadline),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn terminate(&mut self, reason: TerminateReason, now: Instant, out: &mut Vec<DialogEvent>) {
        if self.state == DialogState::Terminated {
            return;
        }
        self.state = DialogState::Terminated;
        self.terminated_at = Some(now);
        self.rel1xx = None;
        self.pending_2xx = None;
        self.glare_retry = None;
        self.session = None;
        out.push(DialogEvent::Terminated {
            id: self.id.clone(),
            reason,
        });
    }

    fn next_cseq(&mut self, rng: &mut StdRng) -> u32 {
        let n = match self.local_cseq {
            Some(n) => n.saturating_add(1),
            None => rng.gen_range(1..=10_000),
        };
        self.local_cseq = Some(n);
        n
    }

    /// Request-URI and Route values (12.2.1.1, with strict routing when the first route
    /// has no `lr`).
    fn target(&self) -> (String, Vec<String>) {
        let Some(first) = self.route_set.first() else {
            return (self.remote_target.clone(), Vec::new());
        };
        let first_uri = NameAddr::parse(first).map(|n| n.uri).unwrap_or_default();
        let loose = SipUri::parse(&first_uri)
            .map(|u| u.params.get("lr").is_some())
            .unwrap_or(true);
        if loose {
            (self.remote_target.clone(), self.route_set.clone())
        } else {
            let mut routes: Vec<String> = self.route_set[1..].to_vec();
            routes.push(format!("<{}>", self.remote_target));
            (first_uri, routes)
        }
    }

    fn build_request(
        &self,
        method: Method,
        cseq_num: u32,
        opts: &MsgOpts,
        cfg: &DialogConfig,
        rng: &mut StdRng,
    ) -> Request {
        let (uri, routes) = self.target();
        let mut h = Headers::new();
        h.push(HeaderName::Via, via(self.peer, rng));
        h.push(HeaderName::MaxForwards, "70");
        for r in routes {
            h.push(HeaderName::Route, r);
        }
        h.push(HeaderName::From, self.local_uri.clone());
        h.push(HeaderName::To, self.remote_uri.clone());
        h.push(HeaderName::CallId, self.id.call_id.clone());
        let cseq_method = if method == Method::Ack {
            "ACK".to_owned()
        } else {
            method.to_string()
        };
        h.push(HeaderName::CSeq, format!("{cseq_num} {cseq_method}"));
        if matches!(
            method,
            Method::Invite | Method::Update | Method::Subscribe | Method::Notify | Method::Refer
        ) {
            h.push(HeaderName::Contact, format!("<{}>", self.local_contact));
        }
        if matches!(method, Method::Invite | Method::Update) {
            if let Some(s) = self.session {
                h.push(HeaderName::Supported, "timer");
                // `refresher` names the side of THIS transaction: we are its UAC.
                let who = if s.local_refresher { "uac" } else { "uas" };
                h.push(se_name(), format!("{};refresher={who}", s.interval));
                h.push(min_se_name(), cfg.min_se.to_string());
            } else if let Some(se) = cfg.session_expires {
                h.push(HeaderName::Supported, "timer");
                h.push(se_name(), se.max(cfg.min_se).to_string());
                h.push(min_se_name(), cfg.min_se.to_string());
            }
        }
        finish(
            Request {
                method,
                uri,
                headers: h,
                body: Bytes::new(),
            },
            opts,
        )
    }

    /// Starts a new in-dialog request (not ACK/CANCEL).
    fn request(
        &mut self,
        method: Method,
        opts: &MsgOpts,
        now: Instant,
        cfg: &DialogConfig,
        rng: &mut StdRng,
    ) -> Result<Vec<DialogEvent>, DialogError> {
        let mut out = Vec::new();
        match (&method, self.state) {
            (Method::Ack | Method::Cancel, _) => {
                return Err(DialogError::Malformed(
                    "ACK/CANCEL are not dialog requests".into(),
                ))
            }
            (_, DialogState::Terminated) => return Err(DialogError::State(self.state)),
            // 15: the callee must not send BYE on an early dialog (it answers instead).
            (Method::Bye, DialogState::Early) if !self.is_caller => {
                return Err(DialogError::State(self.state))
            }
            // 14.1: no new INVITE while one is in progress in either direction (theirs:
            // unanswered, or its 2xx not ACKed yet).
            (Method::Invite, _)
                if self.out_invite.is_some()
                    || self.glare_retry.is_some()
                    || self.pending_2xx.is_some()
                    || self
                        .server_txs
                        .iter()
                        .any(|s| s.req.method == Method::Invite) =>
            {
                return Err(DialogError::Glare)
            }
            (Method::Invite, DialogState::Early) => return Err(DialogError::State(self.state)),
            (Method::Update, _) if self.client_txs.iter().any(|c| c.method == Method::Update) => {
                return Err(DialogError::Glare)
            }
            _ => {}
        }
        let n = self.next_cseq(rng);
        let req = self.build_request(method.clone(), n, opts, cfg, rng);
        self.track_client(req.clone(), n);
        out.push(DialogEvent::SendRequest { req, to: self.peer });
        if method == Method::Bye {
            self.terminate(TerminateReason::LocalBye, now, &mut out);
        }
        Ok(out)
    }

    fn track_client(&mut self, req: Request, n: u32) {
        let Some(key) = TxKey::client(&req) else {
            return;
        };
        let tx = ClientTx {
            key,
            method: req.method.clone(),
            cseq: n,
            req,
        };
        if tx.method == Method::Invite {
            self.out_invite = Some(tx);
        } else {
            self.client_txs.push(tx);
        }
    }

    fn build_ack(
        &self,
        cseq_num: u32,
        body: Option<Body>,
        cfg: &DialogConfig,
        rng: &mut StdRng,
    ) -> Request {
        let opts = MsgOpts {
            body,
            ..MsgOpts::default()
        };
        self.build_request(Method::Ack, cseq_num, &opts, cfg, rng)
    }

    /// Builds a response to a request of this dialog (we are its UAS).
    fn build_response(
        &self,
        req: &Request,
        status: u16,
        opts: &MsgOpts,
        initial: bool,
    ) -> Response {
        let mut resp = Response::for_request(req, status, reason_or(status));
        resp.ensure_to_tag(&self.id.local_tag);
        let target_refresh = matches!(
            req.method,
            Method::Invite | Method::Update | Method::Subscribe | Method::Notify | Method::Refer
        );
        if status > 100 && status < 300 && target_refresh {
            if initial {
                for rr in req.headers.get_all(&HeaderName::RecordRoute) {
                    resp.headers.push(HeaderName::RecordRoute, rr);
                }
            }
            resp.headers
                .push(HeaderName::Contact, format!("<{}>", self.local_contact));
        }
        finish_response(resp, opts)
    }

    /// The TU answers one of our server transactions.
    fn respond(
        &mut self,
        key: &TxKey,
        status: u16,
        opts: &MsgOpts,
        now: Instant,
        cfg: &DialogConfig,
    ) -> Result<Vec<DialogEvent>, DialogError> {
        let mut out = Vec::new();
        if !(101..=699).contains(&status) {
            return Err(DialogError::Malformed(format!("status {status}")));
        }
        let idx = self
            .server_txs
            .iter()
            .position(|s| &s.key == key)
            .ok_or(DialogError::NoPendingRequest)?;
        let stx = self.server_txs[idx].clone();
        let req = &stx.req;
        let cseq_num = cseq(&req.headers).map(|c| c.0).unwrap_or(0);
        let mut resp = self.build_response(req, status, opts, stx.initial);
        let is_invite = req.method == Method::Invite;
        if status > 100 && status < 200 {
            if is_invite {
                let required = has_option(&req.headers, &HeaderName::Require, "100rel");
                if required || (opts.reliable && self.peer_100rel) {
                    if self.rel1xx.is_some() {
                        return Err(DialogError::ProvisionalPending);
                    }
                    let rseq = self.next_rseq;
                    self.next_rseq = self.next_rseq.wrapping_add(1).max(1);
                    resp.headers.push(HeaderName::Require, "100rel");
                    resp.headers.push(hname("RSeq"), rseq.to_string());
                    self.rel1xx = Some(Retrans {
                        key: key.clone(),
                        resp: resp.clone(),
                        cseq: cseq_num,
                        rseq,
                        interval: cfg.timers.t1,
                        next: now + cfg.timers.t1,
                        give_up: now + cfg.timers.t1 * 64,
                        initial: stx.initial,
                    });
                }
            }
            out.push(DialogEvent::SendResponse {
                key: key.clone(),
                resp,
            });
            return Ok(out);
        }
        self.server_txs.remove(idx);
        if is_2xx(status) && matches!(req.method, Method::Invite | Method::Update) {
            match negotiate_uas(req, cfg, self.session.as_ref()) {
                Ok(Some((interval, uac_refreshes, require))) => {
                    let who = if uac_refreshes { "uac" } else { "uas" };
                    resp.headers
                        .push(se_name(), format!("{interval};refresher={who}"));
                    if require {
                        resp.headers.push(HeaderName::Require, "timer");
                    }
                    self.session = Some(SessionTimer::new(interval, !uac_refreshes, now));
                }
                Ok(None) => self.session = None,
                Err(_) => {} // checked when the request came in
            }
        }
        if is_invite {
            self.rel1xx = None;
        }
        if is_2xx(status) && is_invite {
            self.state = DialogState::Confirmed;
            self.pending_2xx = Some(Retrans {
                key: key.clone(),
                resp: resp.clone(),
                cseq: cseq_num,
                rseq: 0,
                interval: cfg.timers.t1,
                next: now + cfg.timers.t1,
                give_up: now + cfg.timers.t1 * 64,
                initial: stx.initial,
            });
        }
        out.push(DialogEvent::SendResponse {
            key: key.clone(),
            resp,
        });
        if stx.initial && status >= 300 {
            self.terminate(TerminateReason::Rejected(status), now, &mut out);
        }
        Ok(out)
    }

    fn auto_respond(&self, key: &TxKey, req: &Request, status: u16, out: &mut Vec<DialogEvent>) {
        let resp = self.build_response(req, status, &MsgOpts::default(), false);
        out.push(DialogEvent::SendResponse {
            key: key.clone(),
            resp,
        });
    }

    fn on_request(
        &mut self,
        key: TxKey,
        req: Request,
        from: Peer,
        now: Instant,
        cfg: &DialogConfig,
        rng: &mut StdRng,
    ) -> Vec<DialogEvent> {
        let mut out = Vec::new();
        let num = match cseq(&req.headers) {
            Ok((n, _)) => n,
            Err(_) => {
                self.auto_respond(&key, &req, 400, &mut out);
                return out;
            }
        };
        if self.state == DialogState::Terminated {
            self.auto_respond(&key, &req, 481, &mut out);
            return out;
        }
        if let Some(last) = self.remote_cseq {
            if num <= last {
                let mut resp = self.build_response(&req, 500, &MsgOpts::default(), false);
                resp.reason = "CSeq Out of Order".into();
                out.push(DialogEvent::SendResponse { key, resp });
                return out;
            }
        }
        self.remote_cseq = Some(num);
        let _ = from;
        match req.method {
            Method::Bye => {
                self.auto_respond(&key, &req, 200, &mut out);
                for stx in std::mem::take(&mut self.server_txs) {
                    if stx.req.method == Method::Invite {
                        self.auto_respond(&stx.key, &stx.req, 487, &mut out);
                    }
                }
                self.terminate(TerminateReason::RemoteBye, now, &mut out);
            }
            Method::Prack => {
                let matched = self
                    .rel1xx
                    .as_ref()
                    .is_some_and(|r| rack(&req.headers) == Some((r.rseq, r.cseq, Method::Invite)));
                if matched {
                    self.rel1xx = None;
                    self.auto_respond(&key, &req, 200, &mut out);
                    out.push(DialogEvent::Prack {
                        id: self.id.clone(),
                        req,
                    });
                } else {
                    self.auto_respond(&key, &req, 481, &mut out);
                }
            }
            Method::Invite | Method::Update => {
                let invite = req.method == Method::Invite;
                let ours_pending = if invite {
                    self.out_invite.is_some()
                } else {
                    self.client_txs.iter().any(|c| c.method == Method::Update)
                };
                if ours_pending {
                    self.auto_respond(&key, &req, 491, &mut out);
                    return out;
                }
                if invite
                    && self
                        .server_txs
                        .iter()
                        .any(|s| s.req.method == Method::Invite)
                {
                    // 14.2: a second INVITE before we answered the first.
                    let mut resp = self.build_response(&req, 500, &MsgOpts::default(), false);
                    resp.headers
                        .push(hname("Retry-After"), rng.gen_range(0..=10).to_string());
                    out.push(DialogEvent::SendResponse { key, resp });
                    return out;
                }
                if let Err(e) = negotiate_uas(&req, cfg, self.session.as_ref()) {
                    out.push(DialogEvent::SendResponse {
                        key,
                        resp: e.response(&req, &self.id.local_tag),
                    });
                    return out;
                }
                // 12.2.2: a target refresh request replaces the remote target.
                if let Some(c) = first_contact_uri(&req.headers) {
                    self.remote_target = c;
                }
                self.server_txs.push(ServerTx {
                    key: key.clone(),
                    req: req.clone(),
                    initial: false,
                });
                out.push(DialogEvent::Request {
                    id: self.id.clone(),
                    key,
                    req,
                });
            }
            _ => {
                self.server_txs.push(ServerTx {
                    key: key.clone(),
                    req: req.clone(),
                    initial: false,
                });
                out.push(DialogEvent::Request {
                    id: self.id.clone(),
                    key,
                    req,
                });
            }
        }
        out
    }

    fn on_ack(&mut self, req: Request) -> Vec<DialogEvent> {
        let num = cseq(&req.headers).map(|c| c.0).ok();
        match &self.pending_2xx {
            Some(p) if Some(p.cseq) == num => {
                self.pending_2xx = None;
                vec![DialogEvent::Acked {
                    id: self.id.clone(),
                    req,
                }]
            }
            _ => Vec::new(), // a retransmitted or stale ACK
        }
    }

    /// Applies a 1xx with our tag to an early dialog (UAC): target, route set, PRACK.
    fn on_provisional(
        &mut self,
        resp: &Response,
        cfg: &DialogConfig,
        rng: &mut StdRng,
        out: &mut Vec<DialogEvent>,
    ) -> bool {
        if self.state == DialogState::Early {
            if let Some(c) = first_contact_uri(&resp.headers) {
                self.remote_target = c;
            }
            self.route_set = reversed_record_route(&resp.headers);
        }
        if !has_option(&resp.headers, &HeaderName::Require, "100rel") {
            return true;
        }
        let Some(rseq) =
            other_header(&resp.headers, "RSeq", None).and_then(|v| v.trim().parse::<u32>().ok())
        else {
            return false; // reliable without RSeq: unusable
        };
        if let Some(last) = self.last_rseq_in {
            if rseq <= last {
                return false; // a retransmission, PRACKed already
            }
        }
        self.last_rseq_in = Some(rseq);
        let invite_cseq = cseq(&resp.headers).map(|c| c.0).unwrap_or(0);
        let n = self.next_cseq(rng);
        let opts = MsgOpts {
            headers: vec![(hname("RAck"), format!("{rseq} {invite_cseq} INVITE"))],
            ..MsgOpts::default()
        };
        let req = self.build_request(Method::Prack, n, &opts, cfg, rng);
        self.track_client(req.clone(), n);
        out.push(DialogEvent::SendRequest { req, to: self.peer });
        true
    }

    /// A 2xx to our INVITE (initial or re-INVITE), also a retransmitted one.
    fn on_invite_2xx(
        &mut self,
        resp: Response,
        now: Instant,
        cfg: &DialogConfig,
        rng: &mut StdRng,
        out: &mut Vec<DialogEvent>,
    ) {
        let num = cseq(&resp.headers).map(|c| c.0).unwrap_or(0);
        let fresh = self.out_invite.as_ref().is_some_and(|o| o.cseq == num);
        if !fresh {
            // A retransmission: re-send our ACK for it (13.2.2.4).
            if let Some((n, ack)) = &self.last_ack {
                if *n == num {
                    out.push(DialogEvent::SendAck {
                        req: ack.clone(),
                        to: self.peer,
                    });
                }
            }
            return;
        }
        let Some(inv) = self.out_invite.take() else {
            return;
        };
        if let Some(c) = first_contact_uri(&resp.headers) {
            self.remote_target = c;
        }
        if self.state == DialogState::Early {
            // 12.1.2: the 2xx fixes the route set, whatever the 1xx said.
            self.route_set = reversed_record_route(&resp.headers);
            if let Ok(to) = to_header(&resp.headers) {
                if let Some(v) = resp.headers.get(&HeaderName::To) {
                    if to.tag().is_some() {
                        self.remote_uri = v.to_owned();
                    }
                }
            }
        }
        self.state = DialogState::Confirmed;
        self.session = session_expires(&resp.headers)
            .map(|(se, uac)| SessionTimer::new(se.max(MIN_SE_FLOOR), uac.unwrap_or(true), now));
        if inv.req.body.is_empty() {
            self.ack_pending = Some(num);
        } else {
            let ack = self.build_ack(num, None, cfg, rng);
            self.last_ack = Some((num, ack.clone()));
            out.push(DialogEvent::SendAck {
                req: ack,
                to: self.peer,
            });
        }
        out.push(DialogEvent::Response {
            id: self.id.clone(),
            method: Method::Invite,
            resp,
        });
    }

    /// A response to one of our in-dialog requests (not the 2xx to an INVITE).
    fn on_response(
        &mut self,
        key: Option<&TxKey>,
        resp: Response,
        now: Instant,
        cfg: &DialogConfig,
        rng: &mut StdRng,
    ) -> Vec<DialogEvent> {
        let mut out = Vec::new();
        let Ok((num, method)) = cseq(&resp.headers) else {
            return out;
        };
        if method == Method::Invite && is_2xx(resp.status) {
            self.on_invite_2xx(resp, now, cfg, rng, &mut out);
            return out;
        }
        let final_ = resp.status >= 200;
        if method == Method::Invite {
            let ours = self.out_invite.as_ref().filter(|o| o.cseq == num).cloned();
            let Some(inv) = ours else {
                return out;
            };
            if resp.status < 200 {
                self.on_provisional(&resp, cfg, rng, &mut out);
            } else {
                self.out_invite = None;
                if resp.status == 491 {
                    // 14.1: we own the Call-ID -> 2.1..4 s, otherwise 0..2 s (10 ms units).
                    let ms = if self.is_caller {
                        rng.gen_range(210..=400) * 10
                    } else {
                        rng.gen_range(0..=200) * 10
                    };
                    self.glare_retry = Some((now + Duration::from_millis(ms), inv.req));
                }
            }
        } else {
            let idx = self.client_txs.iter().position(|c| match key {
                Some(k) => &c.key == k,
                None => c.cseq == num && c.method == method,
            });
            let Some(idx) = idx else {
                return out;
            };
            if final_ {
                self.client_txs.remove(idx);
            }
            if method == Method::Update && is_2xx(resp.status) {
                if let Some(c) = first_contact_uri(&resp.headers) {
                    self.remote_target = c;
                }
                self.session = session_expires(&resp.headers).map(|(se, uac)| {
                    SessionTimer::new(se.max(MIN_SE_FLOOR), uac.unwrap_or(true), now)
                });
            }
        }
        out.push(DialogEvent::Response {
            id: self.id.clone(),
            method: method.clone(),
            resp: resp.clone(),
        });
        // 12.2.1.2: 481 or 408 to an in-dialog request ends the dialog.
        if matches!(resp.status, 408 | 481) && method != Method::Bye {
            self.terminate(TerminateReason::PeerGone(resp.status), now, &mut out);
        }
        out
    }

    fn on_timer(&mut self, now: Instant, cfg: &DialogConfig, rng: &mut StdRng) -> Vec<DialogEvent> {
        let mut out = Vec::new();
        let t2 = cfg.timers.t2;
        if let Some(r) = &mut self.rel1xx {
            if now >= r.give_up {
                let r = r.clone();
                self.rel1xx = None;
                // RFC 3262 3: reject the INVITE with a 5xx.
                if let Some(i) = self.server_txs.iter().position(|s| s.key == r.key) {
                    let stx = self.server_txs.remove(i);
                    self.auto_respond(&stx.key, &stx.req, 500, &mut out);
                }
                if r.initial {
                    self.terminate(TerminateReason::PrackTimeout, now, &mut out);
                }
            } else if now >= r.next {
                out.push(DialogEvent::SendResponse {
                    key: r.key.clone(),
                    resp: r.resp.clone(),
                });
                r.interval *= 2; // RFC 3262: doubling, no T2 cap
                r.next += r.interval;
            }
        }
        if let Some(r) = &mut self.pending_2xx {
            if now >= r.give_up {
                self.pending_2xx = None;
                self.bye_and_terminate(TerminateReason::AckTimeout, now, cfg, rng, &mut out);
            } else if now >= r.next {
                out.push(DialogEvent::SendResponse {
                    key: r.key.clone(),
                    resp: r.resp.clone(),
                });
                r.interval = (r.interval * 2).min(t2);
                r.next += r.interval;
            }
        }
        let theirs_in_progress = self.pending_2xx.is_some()
            || self
                .server_txs
                .iter()
                .any(|s| s.req.method == Method::Invite);
        if let Some((at, _)) = &mut self.glare_retry {
            if now >= *at && theirs_in_progress {
                // The peer's INVITE (which won the glare) is still in progress: wait (14.1).
                *at = now + cfg.timers.t1;
            } else if now >= *at {
                if let Some((_, mut req)) = self.glare_retry.take() {
                    let n = self.next_cseq(rng);
                    req.headers.set(HeaderName::CSeq, format!("{n} INVITE"));
                    req.headers.set(HeaderName::Via, via(self.peer, rng));
                    self.track_client(req.clone(), n);
                    out.push(DialogEvent::SendRequest { req, to: self.peer });
                }
            }
        }
        if let Some(s) = &mut self.session {
            if now >= s.expires_at() {
                self.bye_and_terminate(TerminateReason::SessionExpired, now, cfg, rng, &mut out);
            } else if s.local_refresher && !s.due_reported && now >= s.refresh_at() {
                s.due_reported = true;
                out.push(DialogEvent::RefreshDue {
                    id: self.id.clone(),
                });
            }
        }
        out
    }

    fn bye_and_terminate(
        &mut self,
        reason: TerminateReason,
        now: Instant,
        cfg: &DialogConfig,
        rng: &mut StdRng,
        out: &mut Vec<DialogEvent>,
    ) {
        if self.state == DialogState::Terminated {
            return;
        }
        let n = self.next_cseq(rng);
        let bye = self.build_request(Method::Bye, n, &MsgOpts::default(), cfg, rng);
        self.track_client(bye.clone(), n);
        out.push(DialogEvent::SendRequest {
            req: bye,
            to: self.peer,
        });
        self.terminate(reason, now, out);
    }
}

/// RAck: `rseq cseq method`.
fn rack(h: &Headers) -> Option<(u32, u32, Method)> {
    let v = other_header(h, "RAck", None)?;
    let mut it = v.split_whitespace();
    let rseq = it.next()?.parse().ok()?;
    let num = it.next()?.parse().ok()?;
    let method = Method::parse(it.next()?)?;
    Some((rseq, num, method))
}

/// The UAC route set: Record-Route of the response, reversed (12.1.2).
fn reversed_record_route(h: &Headers) -> Vec<String> {
    let mut v: Vec<String> = h
        .list(&HeaderName::RecordRoute)
        .map(str::to_owned)
        .collect();
    v.reverse();
    v
}

/// RFC 4028 9 at the UAS of an INVITE/UPDATE: Ok(Some((interval, uac refreshes,
/// Require: timer in the 2xx))), Ok(None) for no session timer, Err for a 422.
fn negotiate_uas(
    req: &Request,
    cfg: &DialogConfig,
    current: Option<&SessionTimer>,
) -> Result<Option<(u32, bool, bool)>, DialogError> {
    let uac_supports = supports(&req.headers, "timer");
    match session_expires(&req.headers) {
        Some((se, refresher)) => {
            if se < cfg.min_se {
                return Err(DialogError::IntervalTooSmall { min_se: cfg.min_se });
            }
            let uac_refreshes = refresher.unwrap_or(uac_supports);
            Ok(Some((se, uac_refreshes, uac_supports)))
        }
        None => {
            let wanted = current.map(|s| s.interval).or(cfg.session_expires);
            Ok(wanted.map(|se| {
                let se = se
                    .max(min_se(&req.headers).unwrap_or(MIN_SE_FLOOR))
                    .max(cfg.min_se);
                (se, uac_supports, uac_supports)
            }))
        }
    }
}

fn via(peer: Peer, rng: &mut StdRng) -> String {
    format!(
        "SIP/2.0/{} {};branch={};rport",
        peer.transport.via_name(),
        peer.local,
        new_branch(rng)
    )
}

fn finish(mut req: Request, opts: &MsgOpts) -> Request {
    for (n, v) in &opts.headers {
        // A caller's Max-Forwards replaces our default (a B2BUA passes the hop count on).
        if *n == HeaderName::MaxForwards {
            req.headers.set(n.clone(), v.clone());
        } else {
            req.headers.push(n.clone(), v.clone());
        }
    }
    if let Some(b) = &opts.body {
        req.headers
            .push(HeaderName::ContentType, b.content_type.clone());
        req.body = b.data.clone();
    }
    req.headers
        .push(HeaderName::ContentLength, req.body.len().to_string());
    req
}

fn finish_response(mut resp: Response, opts: &MsgOpts) -> Response {
    for (n, v) in &opts.headers {
        resp.headers.push(n.clone(), v.clone());
    }
    if let Some(b) = &opts.body {
        resp.headers
            .push(HeaderName::ContentType, b.content_type.clone());
        resp.body = b.data.clone();
    }
    resp.headers
        .push(HeaderName::ContentLength, resp.body.len().to_string());
    resp
}

/// What the TU gives for a new outgoing dialog-creating INVITE.
#[derive(Debug, Clone)]
pub struct InviteParams {
    pub request_uri: String,
    /// From without tag, e.g. `"Alice" <sip:alice@pbx.example>`.
    pub from: String,
    /// To, e.g. `<sip:bob@example.com>`.
    pub to: String,
    /// Our Contact URI (no brackets).
    pub local_contact: String,
    /// A pre-existing route set (outbound proxy), written as Route headers of the INVITE
    /// only; in-dialog requests follow the Record-Route (12.1.2).
    pub route: Vec<String>,
    /// The flow to send on (kept for the dialog: NAT-friendly).
    pub peer: Peer,
    /// None: a fresh random Call-ID.
    pub call_id: Option<String>,
    pub opts: MsgOpts,
}

/// Our outgoing dialog-creating INVITE, across forks.
#[derive(Debug, Clone)]
struct UacInvite {
    req: Request,
    key: TxKey,
    cseq: u32,
    peer: Peer,
    local_contact: String,
    dialogs: Vec<DialogId>,
    answered: Option<DialogId>,
    answered_at: Option<Instant>,
    retried_422: bool,
}

/// All dialogs of one stack: the table keyed by [`DialogId`], the outgoing INVITEs, the
/// RNG (tags, Call-IDs, branches, RSeq, glare windows) and the timers.
#[derive(Debug, Clone)]
pub struct DialogSet {
    cfg: DialogConfig,
    rng: StdRng,
    dialogs: HashMap<DialogId, Dialog>,
    invites: HashMap<InviteId, UacInvite>,
}

impl DialogSet {
    /// `rng`: seeded in tests, `StdRng::from_entropy()` in production.
    pub fn new(mut cfg: DialogConfig, rng: StdRng) -> DialogSet {
        cfg.min_se = cfg.min_se.max(MIN_SE_FLOOR);
        DialogSet {
            cfg,
            rng,
            dialogs: HashMap::new(),
            invites: HashMap::new(),
        }
    }

    pub fn get(&self, id: &DialogId) -> Option<&Dialog> {
        self.dialogs.get(id)
    }

    /// Dialog lookup by the three parts of its id.
    pub fn find(&self, call_id: &str, local_tag: &str, remote_tag: &str) -> Option<&Dialog> {
        self.dialogs.get(&DialogId {
            call_id: call_id.to_owned(),
            local_tag: local_tag.to_owned(),
            remote_tag: remote_tag.to_owned(),
        })
    }

    pub fn len(&self) -> usize {
        self.dialogs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dialogs.is_empty()
    }

    /// Forgets a dialog now (terminated ones are also purged 64*T1 after they end).
    pub fn remove(&mut self, id: &DialogId) -> Option<Dialog> {
        self.dialogs.remove(id)
    }

    /// Takes over a dialog another set had (the caller's early dialog moving between a
    /// B2BUA dial and an app): its tags, CSeqs and open server transactions come along.
    pub fn adopt(&mut self, dialog: Dialog) -> DialogId {
        let id = dialog.id.clone();
        self.dialogs.insert(id.clone(), dialog);
        id
    }

    /// Sends the dialog's future requests on another flow.
    pub fn set_peer(&mut self, id: &DialogId, peer: Peer) -> Result<(), DialogError> {
        self.dialogs
            .get_mut(id)
            .ok_or(DialogError::UnknownDialog)?
            .peer = peer;
        Ok(())
    }

    /// Changes the Contact our future target refresh requests and responses carry.
    pub fn set_local_contact(&mut self, id: &DialogId, uri: &str) -> Result<(), DialogError> {
        self.dialogs
            .get_mut(id)
            .ok_or(DialogError::UnknownDialog)?
            .local_contact = uri.to_owned();
        Ok(())
    }

    /// Drops the pending retry of our re-INVITE that got 491 (14.1); true if there was
    /// one. A B2BUA that relayed the re-INVITE passes the 491 back to the phone that
    /// sent it, which retries by itself: our retry would replay a stale offer.
    pub fn forgo_glare_retry(&mut self, id: &DialogId) -> bool {
        self.dialogs
            .get_mut(id)
            .is_some_and(|d| d.glare_retry.take().is_some())
    }

    /// The client transaction of our dialog-creating INVITE (for CANCEL).
    pub fn invite_key(&self, invite: &InviteId) -> Option<&TxKey> {
        self.invites.get(invite).map(|i| &i.key)
    }

    /// UAS: creates an early dialog for a dialog-creating INVITE (no To tag) that came on
    /// `from` with server transaction `key`. Answer it with [`Self::respond`]. On error the
    /// TU answers with [`DialogError::response`] (e.g. 422 with Min-SE).
    pub fn accept_invite(
        &mut self,
        key: &TxKey,
        req: &Request,
        from: Peer,
        local_contact: &str,
    ) -> Result<DialogId, DialogError> {
        let bad = |e: super::message::ParseError| DialogError::Malformed(e.to_string());
        if req.method != Method::Invite {
            return Err(DialogError::Malformed("not an INVITE".into()));
        }
        let fromh = from_header(&req.headers).map_err(bad)?;
        let to = to_header(&req.headers).map_err(bad)?;
        if to.tag().is_some() {
            return Err(DialogError::Malformed(
                "INVITE with To tag is in a dialog".into(),
            ));
        }
        let call_id = req
            .headers
            .get(&HeaderName::CallId)
            .ok_or(DialogError::Malformed("no Call-ID".into()))?;
        let (num, _) = cseq(&req.headers).map_err(bad)?;
        let remote_target = first_contact_uri(&req.headers).ok_or(DialogError::Malformed(
            "INVITE without a valid Contact".into(),
        ))?;
        negotiate_uas(req, &self.cfg, None)?;
        let local_tag = self.new_tag();
        let id = DialogId {
            call_id: call_id.to_owned(),
            local_tag: local_tag.clone(),
            remote_tag: tag_of(&fromh).unwrap_or_default(),
        };
        let secure = req
            .uri
            .get(..5)
            .is_some_and(|s| s.eq_ignore_ascii_case("sips:"))
            && matches!(from.transport, Transport::Tls | Transport::Wss);
        let to_value = req.headers.get(&HeaderName::To).unwrap_or_default();
        let d = Dialog {
            id: id.clone(),
            is_caller: false,
            state: DialogState::Early,
            local_uri: format!("{to_value};tag={local_tag}"),
            remote_uri: req
                .headers
                .get(&HeaderName::From)
                .unwrap_or_default()
                .to_owned(),
            local_cseq: None,
            remote_cseq: Some(num),
            remote_target,
            // 12.1.1: the UAS keeps Record-Route in order.
            route_set: req
                .headers
                .list(&HeaderName::RecordRoute)
                .map(str::to_owned)
                .collect(),
            secure,
            peer: from,
            local_contact: local_contact.to_owned(),
            peer_100rel: supports(&req.headers, "100rel"),
            server_txs: vec![ServerTx {
                key: key.clone(),
                req: req.clone(),
                initial: true,
            }],
            client_txs: Vec::new(),
            out_invite: None,
            last_ack: None,
            ack_pending: None,
            last_rseq_in: None,
            next_rseq: self.rng.gen_range(1..=0x7fff_ffff),
            rel1xx: None,
            pending_2xx: None,
            glare_retry: None,
            session: None,
            terminated_at: None,
        };
        self.dialogs.insert(id.clone(), d);
        Ok(id)
    }

    /// Answers a request of the dialog (the initial INVITE included) held under `key`.
    pub fn respond(
        &mut self,
        id: &DialogId,
        key: &TxKey,
        status: u16,
        opts: MsgOpts,
        now: Instant,
    ) -> Result<Vec<DialogEvent>, DialogError> {
        let d = self.dialogs.get_mut(id).ok_or(DialogError::UnknownDialog)?;
        d.respond(key, status, &opts, now, &self.cfg)
    }

    /// The transaction layer reported a CANCEL for INVITE server transaction `key`: we
    /// answer that INVITE with 487 and end the early dialog.
    #[must_use]
    pub fn on_cancel(&mut self, key: &TxKey, now: Instant) -> Vec<DialogEvent> {
        let mut out = Vec::new();
        for d in self.dialogs.values_mut() {
            if let Some(i) = d.server_txs.iter().position(|s| &s.key == key) {
                let stx = d.server_txs.remove(i);
                d.auto_respond(&stx.key, &stx.req, 487, &mut out);
                if stx.initial {
                    d.terminate(TerminateReason::Cancelled, now, &mut out);
                }
                break;
            }
        }
        out
    }

    /// UAC: builds our dialog-creating INVITE (fresh From tag, CSeq 1, Via branch,
    /// Contact, Supported 100rel/timer, Session-Expires).
    pub fn invite(
        &mut self,
        p: InviteParams,
        now: Instant,
    ) -> Result<(InviteId, Vec<DialogEvent>), DialogError> {
        let _ = now;
        let call_id = match p.call_id {
            Some(c) => c,
            None => random_token(&mut self.rng, 24),
        };
        let local_tag = self.new_tag();
        let mut h = Headers::new();
        h.push(HeaderName::Via, via(p.peer, &mut self.rng));
        h.push(HeaderName::MaxForwards, "70");
        for r in &p.route {
            h.push(HeaderName::Route, r.clone());
        }
        h.push(HeaderName::From, format!("{};tag={local_tag}", p.from));
        h.push(HeaderName::To, p.to.clone());
        h.push(HeaderName::CallId, call_id.clone());
        h.push(HeaderName::CSeq, "1 INVITE");
        h.push(HeaderName::Contact, format!("<{}>", p.local_contact));
        let mut sup = Vec::new();
        if self.cfg.support_100rel {
            sup.push("100rel");
        }
        if self.cfg.session_expires.is_some() {
            sup.push("timer");
        }
        if !sup.is_empty() {
            h.push(HeaderName::Supported, sup.join(", "));
        }
        if let Some(se) = self.cfg.session_expires {
            h.push(se_name(), se.max(self.cfg.min_se).to_string());
            h.push(min_se_name(), self.cfg.min_se.to_string());
        }
        let req = finish(
            Request {
                method: Method::Invite,
                uri: p.request_uri.clone(),
                headers: h,
                body: Bytes::new(),
            },
            &p.opts,
        );
        let key = TxKey::client(&req).ok_or(DialogError::Malformed("no branch".into()))?;
        let invite = InviteId { call_id, local_tag };
        self.invites.insert(
            invite.clone(),
            UacInvite {
                req: req.clone(),
                key,
                cseq: 1,
                peer: p.peer,
                local_contact: p.local_contact,
                dialogs: Vec::new(),
                answered: None,
                answered_at: None,
                retried_422: false,
            },
        );
        Ok((invite, vec![DialogEvent::SendRequest { req, to: p.peer }]))
    }

    /// Builds and starts an in-dialog request: BYE, re-INVITE, UPDATE, INFO, NOTIFY,
    /// REFER, MESSAGE, OPTIONS... (PRACK and ACK are the layer's own). A re-INVITE while
    /// ours is pending is [`DialogError::Glare`]. BYE terminates the dialog at once.
    pub fn request(
        &mut self,
        id: &DialogId,
        method: Method,
        opts: MsgOpts,
        now: Instant,
    ) -> Result<Vec<DialogEvent>, DialogError> {
        let d = self.dialogs.get_mut(id).ok_or(DialogError::UnknownDialog)?;
        d.request(method, &opts, now, &self.cfg, &mut self.rng)
    }

    pub fn bye(&mut self, id: &DialogId, now: Instant) -> Result<Vec<DialogEvent>, DialogError> {
        self.request(id, Method::Bye, MsgOpts::default(), now)
    }

    /// Sends the ACK for a 2xx to our body-less INVITE, carrying the answer (late offer).
    pub fn send_ack(
        &mut self,
        id: &DialogId,
        body: Option<Body>,
    ) -> Result<Vec<DialogEvent>, DialogError> {
        let d = self.dialogs.get_mut(id).ok_or(DialogError::UnknownDialog)?;
        let n = d.ack_pending.take().ok_or(DialogError::NoPendingRequest)?;
        let ack = d.build_ack(n, body, &self.cfg, &mut self.rng);
        d.last_ack = Some((n, ack.clone()));
        Ok(vec![DialogEvent::SendAck {
            req: ack,
            to: d.peer,
        }])
    }

    /// An incoming request with a To tag (from `Action::Request`). Err(NotInDialog) for
    /// a request without To tag: that one creates a dialog (see [`Self::accept_invite`]).
    pub fn on_request(
        &mut self,
        key: TxKey,
        req: Request,
        from: Peer,
        now: Instant,
    ) -> Result<Vec<DialogEvent>, DialogError> {
        if req.method == Method::Ack {
            return Ok(self.on_ack(req, now));
        }
        let to_tag = to_header(&req.headers)
            .ok()
            .and_then(|t| tag_of(&t))
            .ok_or(DialogError::NotInDialog)?;
        let id = DialogId {
            call_id: req
                .headers
                .get(&HeaderName::CallId)
                .unwrap_or_default()
                .to_owned(),
            local_tag: to_tag.clone(),
            remote_tag: from_header(&req.headers)
                .ok()
                .and_then(|f| tag_of(&f))
                .unwrap_or_default(),
        };
        match self.dialogs.get_mut(&id) {
            Some(d) => Ok(d.on_request(key, req, from, now, &self.cfg, &mut self.rng)),
            None => {
                let resp = DialogError::UnknownDialog.response(&req, &to_tag);
                Ok(vec![DialogEvent::SendResponse { key, resp }])
            }
        }
    }

    /// An ACK for a 2xx (from `Action::Ack2xx`).
    #[must_use]
    pub fn on_ack(&mut self, req: Request, now: Instant) -> Vec<DialogEvent> {
        let _ = now;
        let (Ok(to), Ok(fr)) = (to_header(&req.headers), from_header(&req.headers)) else {
            return Vec::new();
        };
        let id = DialogId {
            call_id: req
                .headers
                .get(&HeaderName::CallId)
                .unwrap_or_default()
                .to_owned(),
            local_tag: tag_of(&to).unwrap_or_default(),
            remote_tag: tag_of(&fr).unwrap_or_default(),
        };
        match self.dialogs.get_mut(&id) {
            Some(d) => d.on_ack(req),
            None => Vec::new(),
        }
    }

    /// A response to a request we sent: `key` from `Action::Response`, None for an
    /// `Action::StrayResponse` (a 2xx retransmission after the transaction ended).
    #[must_use]
    pub fn on_response(
        &mut self,
        key: Option<TxKey>,
        resp: Response,
        now: Instant,
    ) -> Vec<DialogEvent> {
        let Ok((num, method)) = cseq(&resp.headers) else {
            return Vec::new();
        };
        let call_id = resp
            .headers
            .get(&HeaderName::CallId)
            .unwrap_or_default()
            .to_owned();
        let local_tag = from_header(&resp.headers)
            .ok()
            .and_then(|f| tag_of(&f))
            .unwrap_or_default();
        let remote_tag = to_header(&resp.headers).ok().and_then(|t| tag_of(&t));
        let inv_id = InviteId {
            call_id: call_id.clone(),
            local_tag: local_tag.clone(),
        };
        if method == Method::Invite {
            if let Some(inv) = self.invites.get(&inv_id) {
                if inv.cseq == num {
                    return self.on_invite_response(inv_id, remote_tag, resp, now);
                }
            }
        }
        let Some(remote_tag) = remote_tag else {
            return Vec::new();
        };
        let id = DialogId {
            call_id,
            local_tag,
            remote_tag,
        };
        match self.dialogs.get_mut(&id) {
            Some(d) => d.on_response(key.as_ref(), resp, now, &self.cfg, &mut self.rng),
            None => Vec::new(),
        }
    }

    /// A client transaction of ours timed out: handled as a 408.
    #[must_use]
    pub fn on_timeout(&mut self, key: &TxKey, now: Instant) -> Vec<DialogEvent> {
        self.on_failed(key, 408, reason_phrase(408), now)
    }

    /// A client transaction's request could not be sent (a transport error): handled as
    /// a 503 (RFC 3261 8.1.3.1).
    #[must_use]
    pub fn on_transport_error(&mut self, key: &TxKey, now: Instant) -> Vec<DialogEvent> {
        self.on_failed(key, 503, "Service Unavailable (transport failure)", now)
    }

    /// A client transaction that ended without a response, as the response `status`
    /// synthesized for it.
    fn on_failed(
        &mut self,
        key: &TxKey,
        status: u16,
        reason: &str,
        now: Instant,
    ) -> Vec<DialogEvent> {
        let req = self
            .invites
            .values()
            .find(|i| &i.key == key)
            .map(|i| i.req.clone())
            .or_else(|| {
                self.dialogs.values().find_map(|d| {
                    d.client_txs
                        .iter()
                        .chain(d.out_invite.iter())
                        .find(|c| &c.key == key)
                        .map(|c| c.req.clone())
                })
            });
        let Some(req) = req else {
            return Vec::new();
        };
        // The synthesized response carries the To tag of the dialog the request was in.
        let resp = Response::for_request(&req, status, reason);
        self.on_response(Some(key.clone()), resp, now)
    }

    fn on_invite_response(
        &mut self,
        inv_id: InviteId,
        remote_tag: Option<String>,
        resp: Response,
        now: Instant,
    ) -> Vec<DialogEvent> {
        let mut out = Vec::new();
        let status = resp.status;
        if status >= 300 {
            return self.on_invite_failure(inv_id, resp, now);
        }
        let Some(remote_tag) = remote_tag else {
            if status < 200 {
                out.push(DialogEvent::InviteProgress {
                    invite: inv_id,
                    id: None,
                    resp,
                });
            }
            return out; // a 2xx without To tag is broken: dropped
        };
        let id = DialogId {
            call_id: inv_id.call_id.clone(),
            local_tag: inv_id.local_tag.clone(),
            remote_tag,
        };
        if !self.dialogs.contains_key(&id) {
            let Some(inv) = self.invites.get_mut(&inv_id) else {
                return out;
            };
            let Some(d) = uac_dialog(inv, &id, &resp) else {
                return out;
            };
            inv.dialogs.push(id.clone());
            self.dialogs.insert(id.clone(), d);
            out.push(DialogEvent::Created {
                invite: inv_id.clone(),
                id: id.clone(),
            });
        }
        let Some(inv) = self.invites.get_mut(&inv_id) else {
            return out;
        };
        let cfg = &self.cfg;
        let rng = &mut self.rng;
        if status < 200 {
            if let Some(d) = self.dialogs.get_mut(&id) {
                if d.state == DialogState::Early && d.on_provisional(&resp, cfg, rng, &mut out) {
                    out.push(DialogEvent::InviteProgress {
                        invite: inv_id,
                        id: Some(id),
                        resp,
                    });
                }
            }
            return out;
        }
        match inv.answered.clone() {
            None => {
                inv.answered = Some(id.clone());
                inv.answered_at = Some(now);
                if let Some(d) = self.dialogs.get_mut(&id) {
                    if d.state == DialogState::Terminated {
                        // An early dialog dropped earlier, now answering: still ACK+BYE.
                        d.state = DialogState::Early;
                        d.terminated_at = None;
                    }
                    d.on_invite_2xx(resp, now, cfg, rng, &mut out);
                }
                // The other forks' early dialogs are over.
                for other in inv.dialogs.iter().filter(|o| **o != id) {
                    if let Some(d) = self.dialogs.get_mut(other) {
                        d.terminate(TerminateReason::ForkLoser, now, &mut out);
                    }
                }
            }
            Some(winner) if winner == id => {
                if let Some(d) = self.dialogs.get_mut(&id) {
                    d.on_invite_2xx(resp, now, cfg, rng, &mut out);
                }
            }
            Some(_) => {
                // 13.2.2.4: a second fork answered: ACK it, then BYE it.
                if let Some(d) = self.dialogs.get_mut(&id) {
                    if d.last_ack.is_some() {
                        // A retransmission of a 2xx we ACKed and BYEd already.
                        d.on_invite_2xx(resp, now, cfg, rng, &mut out);
                        return out;
                    }
                    d.state = DialogState::Early;
                    d.terminated_at = None;
                    let num = inv.cseq;
                    let mut tmp = Vec::new();
                    d.on_invite_2xx(resp, now, cfg, rng, &mut tmp);
                    if d.ack_pending.take().is_some() {
                        let ack = d.build_ack(num, None, cfg, rng);
                        d.last_ack = Some((num, ack.clone()));
                        tmp.push(DialogEvent::SendAck {
                            req: ack,
                            to: d.peer,
                        });
                    }
                    out.extend(
                        tmp.into_iter()
                            .filter(|e| matches!(e, DialogEvent::SendAck { .. })),
                    );
                    d.bye_and_terminate(TerminateReason::ForkLoser, now, cfg, rng, &mut out);
                }
            }
        }
        out
    }

    fn on_invite_failure(
        &mut self,
        inv_id: InviteId,
        resp: Response,
        now: Instant,
    ) -> Vec<DialogEvent> {
        let mut out = Vec::new();
        let Some(inv) = self.invites.get_mut(&inv_id) else {
            return out;
        };
        if inv.answered.is_some() {
            return out; // a stray failure after an answer means nothing
        }
        // RFC 4028 7.4: retry once with the Min-SE the 422 asked for.
        if resp.status == 422 && !inv.retried_422 {
            if let Some(min) = min_se(&resp.headers) {
                inv.retried_422 = true;
                inv.cseq += 1;
                let mut req = inv.req.clone();
                req.headers
                    .set(HeaderName::Via, via(inv.peer, &mut self.rng));
                req.headers
                    .set(HeaderName::CSeq, format!("{} INVITE", inv.cseq));
                req.headers.set(se_name(), min.to_string());
                req.headers.set(min_se_name(), min.to_string());
                if let Some(key) = TxKey::client(&req) {
                    inv.key = key;
                    inv.req = req.clone();
                    out.push(DialogEvent::SendRequest { req, to: inv.peer });
                    return out;
                }
            }
        }
        let status = resp.status;
        let Some(inv) = self.invites.remove(&inv_id) else {
            return out;
        };
        for id in &inv.dialogs {
            if let Some(d) = self.dialogs.get_mut(id) {
                d.out_invite = None;
                d.terminate(TerminateReason::Rejected(status), now, &mut out);
            }
        }
        out.push(DialogEvent::InviteFailed {
            invite: inv_id,
            resp,
        });
        out
    }

    /// Fires every timer due at `now`: 2xx and reliable 1xx retransmissions and their
    /// give-ups, glare retries, session refresh and expiry, purges.
    #[must_use]
    pub fn on_timer(&mut self, now: Instant) -> Vec<DialogEvent> {
        let mut out = Vec::new();
        let linger = self.cfg.timers.t1 * 64;
        self.dialogs
            .retain(|_, d| d.terminated_at.map_or(true, |t| now < t + linger));
        self.invites
            .retain(|_, i| i.answered_at.map_or(true, |t| now < t + linger));
        let mut ids: Vec<&DialogId> = self.dialogs.keys().collect();
        ids.sort_by(|a, b| {
            (&a.call_id, &a.local_tag, &a.remote_tag).cmp(&(
                &b.call_id,
                &b.local_tag,
                &b.remote_tag,
            ))
        });
        let ids: Vec<DialogId> = ids.into_iter().cloned().collect();
        for id in ids {
            let due = self
                .dialogs
                .get(&id)
                .and_then(|d| d.next_deadline(&self.cfg))
                .is_some_and(|t| t <= now);
            if due {
                if let Some(d) = self.dialogs.get_mut(&id) {
                    out.extend(d.on_timer(now, &self.cfg, &mut self.rng));
                }
            }
        }
        out
    }

    /// When [`Self::on_timer`] must next be called.
    pub fn next_deadline(&self) -> Option<Instant> {
        let linger = self.cfg.timers.t1 * 64;
        self.dialogs
            .values()
            .filter_map(|d| d.next_deadline(&self.cfg))
            .chain(
                self.invites
                    .values()
                    .filter_map(|i| i.answered_at.map(|t| t + linger)),
            )
            .min()
    }
}

/// A UAC dialog from a 1xx/2xx with a To tag to our INVITE (12.1.2).
fn uac_dialog(inv: &UacInvite, id: &DialogId, resp: &Response) -> Option<Dialog> {
    let local_uri = inv.req.headers.get(&HeaderName::From)?.to_owned();
    let remote_uri = resp.headers.get(&HeaderName::To)?.to_owned();
    Some(Dialog {
        id: id.clone(),
        is_caller: true,
        state: DialogState::Early,
        local_uri,
        remote_uri,
        local_cseq: Some(inv.cseq),
        remote_cseq: None,
        remote_target: first_contact_uri(&resp.headers).unwrap_or_else(|| inv.req.uri.clone()),
        route_set: reversed_record_route(&resp.headers),
        secure: inv
            .req
            .uri
            .get(..5)
            .is_some_and(|s| s.eq_ignore_ascii_case("sips:")),
        peer: inv.peer,
        local_contact: inv.local_contact.clone(),
        peer_100rel: supports(&resp.headers, "100rel"),
        server_txs: Vec::new(),
        client_txs: Vec::new(),
        out_invite: Some(ClientTx {
            key: inv.key.clone(),
            method: Method::Invite,
            cseq: inv.cseq,
            req: inv.req.clone(),
        }),
        last_ack: None,
        ack_pending: None,
        last_rseq_in: None,
        next_rseq: 1,
        rel1xx: None,
        pending_2xx: None,
        glare_retry: None,
        session: None,
        terminated_at: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{parse, validate_request, SipMessage};
    use rand::SeedableRng;
    use std::collections::VecDeque;
    use std::net::SocketAddr;

    const T1: Duration = Duration::from_millis(500);
    const A_CONTACT: &str = "sip:alice@10.0.0.1:5060";
    const B_CONTACT: &str = "sip:bob@10.0.0.2:5060";

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    /// How A sees B (A sends on this).
    fn peer_ab() -> Peer {
        Peer {
            transport: Transport::Udp,
            remote: addr("10.0.0.2:5060"),
            local: addr("10.0.0.1:5060"),
            conn: None,
        }
    }

    /// How B sees A.
    fn peer_ba() -> Peer {
        Peer {
            transport: Transport::Udp,
            remote: addr("10.0.0.1:5060"),
            local: addr("10.0.0.2:5060"),
            conn: None,
        }
    }

    fn set(cfg: DialogConfig, seed: u64) -> DialogSet {
        DialogSet::new(cfg, StdRng::seed_from_u64(seed))
    }

    fn sdp(s: &str) -> MsgOpts {
        MsgOpts::body(Body::new("application/sdp", s.as_bytes().to_vec()))
    }

    /// Serializes and parses again, so every message we build is checked as wire text.
    fn rewire_req(r: &Request) -> Request {
        match parse(&r.to_bytes()) {
            Ok(SipMessage::Request(r)) => {
                validate_request(&r).expect("valid request");
                r
            }
            other => panic!("bad request on the wire: {other:?}"),
        }
    }

    fn rewire_resp(r: &Response) -> Response {
        match parse(&r.to_bytes()) {
            Ok(SipMessage::Response(r)) => r,
            other => panic!("bad response on the wire: {other:?}"),
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Side {
        A,
        B(usize),
    }

    /// A (the caller, UAC) and one or more B (callees, UAS; several = a forking proxy),
    /// optionally through two record-routing loose-routing proxies. FIFO delivery.
    struct Harness {
        a: DialogSet,
        bs: Vec<DialogSet>,
        b_ids: Vec<Option<DialogId>>,
        b_invite_keys: Vec<Option<TxKey>>,
        now: Instant,
        /// Record-Route the proxies add to the initial INVITE, top first.
        rr: Vec<String>,
        /// Everything sent, in order, before any proxy processing.
        wire: Vec<(Side, SipMessage)>,
        ev_a: Vec<DialogEvent>,
        ev_b: Vec<(usize, DialogEvent)>,
        drop_acks: bool,
        drop_to_a: bool,
        drop_to_b: bool,
        queue: VecDeque<(Side, DialogEvent)>,
    }

    impl Harness {
        fn new(n: usize) -> Harness {
            Harness::with(n, DialogConfig::default(), DialogConfig::default())
        }

        fn with(n: usize, cfg_a: DialogConfig, cfg_b: DialogConfig) -> Harness {
            Harness {
                a: set(cfg_a, 1),
                bs: (0..n).map(|i| set(cfg_b.clone(), 100 + i as u64)).collect(),
                b_ids: vec![None; n],
                b_invite_keys: vec![None; n],
                now: Instant::now(),
                rr: Vec::new(),
                wire: Vec::new(),
                ev_a: Vec::new(),
                ev_b: Vec::new(),
                drop_acks: false,
                drop_to_a: false,
                drop_to_b: false,
                queue: VecDeque::new(),
            }
        }

        fn b(&self, i: usize) -> &Dialog {
            let id = self.b_ids[i].as_ref().expect("B dialog exists");
            self.bs[i].get(id).expect("B dialog in table")
        }

        fn b_id(&self, i: usize) -> DialogId {
            self.b_ids[i].clone().expect("B dialog exists")
        }

        /// The A dialog towards B(i): A's local tag + B's local tag.
        fn a_id(&self, i: usize) -> DialogId {
            let b = self.b_id(i);
            DialogId {
                call_id: b.call_id,
                local_tag: b.remote_tag,
                remote_tag: b.local_tag,
            }
        }

        fn a(&self, i: usize) -> &Dialog {
            self.a.get(&self.a_id(i)).expect("A dialog in table")
        }

        fn call(&mut self, opts: MsgOpts) -> InviteId {
            let (inv, evs) = self
                .a
                .invite(
                    InviteParams {
                        request_uri: "sip:bob@example.com".into(),
                        from: "\"Alice\" <sip:alice@example.com>".into(),
                        to: "<sip:bob@example.com>".into(),
                        local_contact: A_CONTACT.into(),
                        route: Vec::new(),
                        peer: peer_ab(),
                        call_id: None,
                        opts,
                    },
                    self.now,
                )
                .expect("invite builds");
            self.run(Side::A, evs);
            inv
        }

        fn run(&mut self, side: Side, evs: Vec<DialogEvent>) {
            self.queue.extend(evs.into_iter().map(|e| (side, e)));
            self.pump();
        }

        fn pump(&mut self) {
            while let Some((side, ev)) = self.queue.pop_front() {
                self.deliver(side, ev);
            }
        }

        fn deliver(&mut self, side: Side, ev: DialogEvent) {
            let now = self.now;
            match (side, ev) {
                (Side::A, DialogEvent::SendRequest { req, to }) => {
                    assert_eq!(to, peer_ab());
                    let req = rewire_req(&req);
                    self.wire.push((side, req.clone().into()));
                    if self.drop_to_b {
                        return;
                    }
                    self.a_request_to_bs(req);
                }
                (Side::A, DialogEvent::SendAck { req, .. }) => {
                    let req = rewire_req(&req);
                    self.wire.push((side, req.clone().into()));
                    if self.drop_acks || self.drop_to_b {
                        return;
                    }
                    let req = self.through_proxies(req);
                    for i in self.route_by_to_tag(&req) {
                        let evs = self.bs[i].on_ack(req.clone(), now);
                        self.queue.extend(evs.into_iter().map(|e| (Side::B(i), e)));
                    }
                }
                (Side::A, DialogEvent::SendResponse { resp, .. }) => {
                    let resp = rewire_resp(&resp);
                    self.wire.push((side, resp.clone().into()));
                    if self.drop_to_b {
                        return;
                    }
                    let key = TxKey::for_response(&resp);
                    for i in self.route_by_from_tag(&resp) {
                        let evs = self.bs[i].on_response(key.clone(), resp.clone(), now);
                        self.queue.extend(evs.into_iter().map(|e| (Side::B(i), e)));
                    }
                }
                (Side::B(_), DialogEvent::SendRequest { req, to }) => {
                    assert_eq!(to, peer_ba());
                    let req = rewire_req(&req);
                    self.wire.push((side, req.clone().into()));
                    if self.drop_to_a {
                        return;
                    }
                    let req = self.through_proxies(req);
                    let key = TxKey::server(&req).expect("key");
                    let evs = self
                        .a
                        .on_request(key, req, peer_ab(), now)
                        .expect("in dialog");
                    self.queue.extend(evs.into_iter().map(|e| (Side::A, e)));
                }
                (Side::B(i), DialogEvent::SendAck { req, .. }) => {
                    let req = rewire_req(&req);
                    self.wire.push((side, req.clone().into()));
                    if self.drop_acks || self.drop_to_a {
                        return;
                    }
                    let req = self.through_proxies(req);
                    let evs = self.a.on_ack(req, now);
                    self.queue.extend(evs.into_iter().map(|e| (Side::A, e)));
                    let _ = i;
                }
                (Side::B(_), DialogEvent::SendResponse { resp, .. }) => {
                    let resp = rewire_resp(&resp);
                    self.wire.push((side, resp.clone().into()));
                    if self.drop_to_a {
                        return;
                    }
                    let key = TxKey::for_response(&resp);
                    let evs = self.a.on_response(key, resp, now);
                    self.queue.extend(evs.into_iter().map(|e| (Side::A, e)));
                }
                (Side::A, ev) => self.ev_a.push(ev),
                (Side::B(i), ev) => self.ev_b.push((i, ev)),
            }
        }

        /// Loose routing: each proxy pops its own Route; we check the order on the way.
        fn through_proxies(&self, mut req: Request) -> Request {
            let routes: Vec<String> = req
                .headers
                .list(&HeaderName::Route)
                .map(str::to_owned)
                .collect();
            if !self.rr.is_empty() {
                assert_eq!(routes.len(), self.rr.len(), "Route set on {req:?}");
            }
            req.headers.remove(&HeaderName::Route);
            req
        }

        fn a_request_to_bs(&mut self, req: Request) {
            let now = self.now;
            let to_tag = to_header(&req.headers).ok().and_then(|t| tag_of(&t));
            if to_tag.is_none() && req.method == Method::Invite {
                // The forking proxies: Record-Route added (p1 first, p2 on top).
                let mut req = req;
                for rr in self.rr.iter().rev() {
                    req.headers.0.insert(
                        0,
                        crate::sip::message::Header {
                            name: HeaderName::RecordRoute,
                            value: rr.clone(),
                        },
                    );
                }
                for i in 0..self.bs.len() {
                    let key = TxKey::server(&req).expect("key");
                    match self.bs[i].accept_invite(&key, &req, peer_ba(), B_CONTACT) {
                        Ok(id) => {
                            // Same Call-ID on a re-sent INVITE (422): replace.
                            self.b_ids[i] = Some(id);
                            self.b_invite_keys[i] = Some(key);
                        }
                        Err(e) => {
                            let resp = e.response(&req, "uas-reject");
                            self.queue
                                .push_back((Side::B(i), DialogEvent::SendResponse { key, resp }));
                        }
                    }
                }
                return;
            }
            let req = self.through_proxies(req);
            for i in self.route_by_to_tag(&req) {
                let key = TxKey::server(&req).expect("key");
                let evs = self.bs[i]
                    .on_request(key, req.clone(), peer_ba(), now)
                    .expect("in dialog");
                self.queue.extend(evs.into_iter().map(|e| (Side::B(i), e)));
            }
        }

        fn route_by_to_tag(&self, req: &Request) -> Vec<usize> {
            let tag = to_header(&req.headers).ok().and_then(|t| tag_of(&t));
            self.by_local_tag(tag)
        }

        fn route_by_from_tag(&self, resp: &Response) -> Vec<usize> {
            let tag = from_header(&resp.headers).ok().and_then(|t| tag_of(&t));
            self.by_local_tag(tag)
        }

        fn by_local_tag(&self, tag: Option<String>) -> Vec<usize> {
            (0..self.bs.len())
                .filter(|i| {
                    self.b_ids[*i]
                        .as_ref()
                        .is_some_and(|id| Some(&id.local_tag) == tag.as_ref())
                })
                .collect()
        }

        /// B(i) answers its INVITE.
        fn b_answer(&mut self, i: usize, status: u16, opts: MsgOpts) {
            let id = self.b_id(i);
            let key = self.b_invite_keys[i].clone().expect("INVITE key");
            let evs = self.bs[i]
                .respond(&id, &key, status, opts, self.now)
                .expect("respond");
            self.run(Side::B(i), evs);
        }

        /// Moves the fake clock, firing every timer on the way in order.
        fn advance(&mut self, d: Duration) {
            let end = self.now + d;
            loop {
                let next = std::iter::once(self.a.next_deadline())
                    .chain(self.bs.iter().map(DialogSet::next_deadline))
                    .flatten()
                    .min();
                match next {
                    Some(t) if t <= end => {
                        self.now = self.now.max(t);
                        let now = self.now;
                        let evs = self.a.on_timer(now);
                        self.queue.extend(evs.into_iter().map(|e| (Side::A, e)));
                        for i in 0..self.bs.len() {
                            let evs = self.bs[i].on_timer(now);
                            self.queue.extend(evs.into_iter().map(|e| (Side::B(i), e)));
                        }
                        self.pump();
                    }
                    _ => break,
                }
            }
            self.now = end;
        }

        fn sent(&self, side: Side, f: impl Fn(&SipMessage) -> bool) -> Vec<SipMessage> {
            self.wire
                .iter()
                .filter(|(s, m)| *s == side && f(m))
                .map(|(_, m)| m.clone())
                .collect()
        }

        /// A basic answered call: INVITE with offer, 180, 200 with answer, ACK.
        fn established(n: usize) -> Harness {
            let mut h = Harness::new(n);
            h.call(sdp("offer"));
            h.b_answer(0, 180, MsgOpts::default());
            h.b_answer(0, 200, sdp("answer"));
            h
        }
    }

    fn is_req(m: &SipMessage, method: Method) -> bool {
        matches!(m, SipMessage::Request(r) if r.method == method)
    }

    fn is_resp(m: &SipMessage, status: u16, method: Method) -> bool {
        matches!(m, SipMessage::Response(r)
            if r.status == status && cseq(&r.headers).map(|c| c.1) == Ok(method.clone()))
    }

    fn req_of(m: &SipMessage) -> &Request {
        match m {
            SipMessage::Request(r) => r,
            SipMessage::Response(_) => panic!("not a request"),
        }
    }

    fn resp_of(m: &SipMessage) -> &Response {
        match m {
            SipMessage::Response(r) => r,
            SipMessage::Request(_) => panic!("not a response"),
        }
    }

    fn cseq_of(m: &SipMessage) -> (u32, Method) {
        cseq(m.headers()).expect("cseq")
    }

    fn terminated(evs: &[DialogEvent]) -> Vec<TerminateReason> {
        evs.iter()
            .filter_map(|e| match e {
                DialogEvent::Terminated { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect()
    }

    fn b_evs(h: &Harness, i: usize) -> Vec<DialogEvent> {
        h.ev_b
            .iter()
            .filter(|(j, _)| *j == i)
            .map(|(_, e)| e.clone())
            .collect()
    }

    #[test]
    fn tags_end_with_the_nodes_mark_on_both_sides() {
        let marked = |mark: &str| DialogConfig {
            tag_mark: mark.into(),
            ..DialogConfig::default()
        };
        let mut h = Harness::with(1, marked("aaaa1111"), marked("bbbb2222"));
        let inv = h.call(sdp("offer"));
        h.b_answer(0, 200, sdp("answer"));
        assert!(inv.local_tag.ends_with(".aaaa1111"), "{}", inv.local_tag);
        assert_eq!(inv.local_tag.len(), 10 + 1 + 8);
        let b = h.b_id(0);
        assert!(b.local_tag.ends_with(".bbbb2222"), "{}", b.local_tag);
        assert_eq!(h.a(0).state(), DialogState::Confirmed);
        // Unmarked by default.
        let mut h = Harness::new(1);
        assert!(!h.call(sdp("offer")).local_tag.contains('.'));
    }

    #[test]
    fn basic_call_tags_cseq_and_bye() {
        let mut h = Harness::new(1);
        let inv = h.call(sdp("offer"));
        let invite = h.sent(Side::A, |m| is_req(m, Method::Invite));
        let invite = req_of(&invite[0]).clone();
        assert_eq!(cseq(&invite.headers).expect("cseq"), (1, Method::Invite));
        assert!(
            TxKey::client(&invite).is_some(),
            "branch set by the dialog layer"
        );
        assert_eq!(
            from_header(&invite.headers).expect("from").tag(),
            Some(inv.local_tag.as_str())
        );
        assert!(to_header(&invite.headers).expect("to").tag().is_none());
        assert_eq!(h.b(0).state(), DialogState::Early);

        h.b_answer(0, 180, MsgOpts::default());
        let ringing = h.sent(Side::B(0), |m| is_resp(m, 180, Method::Invite));
        let to_tag = to_header(ringing[0].headers())
            .expect("to")
            .tag()
            .map(str::to_owned);
        assert_eq!(to_tag.as_deref(), Some(h.b_id(0).local_tag.as_str()));
        assert!(h
            .ev_a
            .iter()
            .any(|e| matches!(e, DialogEvent::Created { .. })));
        assert_eq!(h.a(0).state(), DialogState::Early);

        h.b_answer(0, 200, sdp("answer"));
        let ok = h.sent(Side::B(0), |m| is_resp(m, 200, Method::Invite));
        assert_eq!(ok.len(), 1);
        assert_eq!(
            ok[0].headers().get(&HeaderName::Contact),
            Some("<sip:bob@10.0.0.2:5060>")
        );
        assert_eq!(&ok[0].body()[..], b"answer");
        let ack = h.sent(Side::A, |m| is_req(m, Method::Ack));
        assert_eq!(ack.len(), 1);
        let ack = req_of(&ack[0]);
        assert_eq!(cseq(&ack.headers).expect("cseq"), (1, Method::Ack));
        assert_eq!(ack.uri, B_CONTACT, "ACK goes to the remote target");
        assert_ne!(
            top_branch(ack),
            top_branch(&invite),
            "the ACK for a 2xx is a new transaction"
        );
        assert!(b_evs(&h, 0)
            .iter()
            .any(|e| matches!(e, DialogEvent::Acked { .. })));
        assert_eq!(h.a(0).state(), DialogState::Confirmed);
        assert_eq!(h.b(0).state(), DialogState::Confirmed);
        assert_eq!(h.a(0).remote_target(), B_CONTACT);
        assert_eq!(h.b(0).remote_target(), A_CONTACT);
        assert!(h.a(0).route_set().is_empty() && h.b(0).route_set().is_empty());
        assert_eq!(h.a(0).local_cseq(), Some(1));
        assert_eq!(h.b(0).remote_cseq(), Some(1));
        assert_eq!(h.a(0).remote_uri(), h.b(0).local_uri());
        assert_eq!(h.a(0).local_uri(), h.b(0).remote_uri());
        assert!(!h.a(0).secure());

        let a_id = h.a_id(0);
        let evs = h.a.bye(&a_id, h.now).expect("bye");
        assert_eq!(terminated(&evs), vec![TerminateReason::LocalBye]);
        h.run(Side::A, evs);
        let bye = h.sent(Side::A, |m| is_req(m, Method::Bye));
        assert_eq!(cseq_of(&bye[0]), (2, Method::Bye));
        assert_eq!(req_of(&bye[0]).uri, B_CONTACT);
        assert_eq!(terminated(&b_evs(&h, 0)), vec![TerminateReason::RemoteBye]);
        assert_eq!(h.b(0).remote_cseq(), Some(2));
        assert!(h.ev_a.iter().any(|e| matches!(e,
            DialogEvent::Response { method: Method::Bye, resp, .. } if resp.status == 200)));
        // Requests in a terminated dialog get 481.
        assert!(h.a.bye(&a_id, h.now).is_err());
    }

    fn top_branch(r: &Request) -> String {
        crate::sip::message::top_via(&r.headers)
            .expect("via")
            .branch()
            .expect("branch")
            .to_owned()
    }

    #[test]
    fn record_route_two_proxies_route_sets_and_loose_routing() {
        let mut h = Harness::new(1);
        h.rr = vec![
            "<sip:p2.example.net;lr>".to_owned(),
            "<sip:p1.example.net;lr>".to_owned(),
        ];
        h.call(sdp("offer"));
        h.b_answer(0, 200, sdp("answer"));
        let ok = h.sent(Side::B(0), |m| is_resp(m, 200, Method::Invite));
        let rr: Vec<&str> = ok[0].headers().list(&HeaderName::RecordRoute).collect();
        assert_eq!(rr, ["<sip:p2.example.net;lr>", "<sip:p1.example.net;lr>"]);
        // UAS keeps Record-Route order, UAC reverses it.
        assert_eq!(
            h.b(0).route_set(),
            ["<sip:p2.example.net;lr>", "<sip:p1.example.net;lr>"]
        );
        assert_eq!(
            h.a(0).route_set(),
            ["<sip:p1.example.net;lr>", "<sip:p2.example.net;lr>"]
        );
        let ack = h.sent(Side::A, |m| is_req(m, Method::Ack));
        let routes: Vec<&str> = ack[0].headers().list(&HeaderName::Route).collect();
        assert_eq!(
            routes,
            ["<sip:p1.example.net;lr>", "<sip:p2.example.net;lr>"]
        );

        let b_id = h.b_id(0);
        let evs = h.bs[0]
            .request(&b_id, Method::Info, MsgOpts::default(), h.now)
            .expect("info");
        h.run(Side::B(0), evs);
        let info = h.sent(Side::B(0), |m| is_req(m, Method::Info));
        let info = req_of(&info[0]);
        assert_eq!(info.uri, A_CONTACT, "loose routing keeps the remote target");
        let routes: Vec<&str> = info.headers.list(&HeaderName::Route).collect();
        assert_eq!(
            routes,
            ["<sip:p2.example.net;lr>", "<sip:p1.example.net;lr>"]
        );
        assert!(h.ev_a.iter().any(|e| matches!(e,
            DialogEvent::Request { req, .. } if req.method == Method::Info)));

        let a_id = h.a_id(0);
        let evs = h.a.bye(&a_id, h.now).expect("bye");
        h.run(Side::A, evs);
        let bye = h.sent(Side::A, |m| is_req(m, Method::Bye));
        let bye = req_of(&bye[0]);
        assert_eq!(bye.uri, B_CONTACT);
        let routes: Vec<&str> = bye.headers.list(&HeaderName::Route).collect();
        assert_eq!(
            routes,
            ["<sip:p1.example.net;lr>", "<sip:p2.example.net;lr>"]
        );
    }

    #[test]
    fn strict_route_puts_first_route_in_request_uri() {
        let mut h = Harness::new(1);
        h.rr = vec!["<sip:strict.example.net>".to_owned()];
        h.call(sdp("offer"));
        h.b_answer(0, 200, sdp("answer"));
        let a_id = h.a_id(0);
        let evs = h.a.bye(&a_id, h.now).expect("bye");
        let DialogEvent::SendRequest { req, .. } = &evs[0] else {
            panic!("BYE first")
        };
        assert_eq!(req.uri, "sip:strict.example.net");
        let routes: Vec<&str> = req.headers.list(&HeaderName::Route).collect();
        assert_eq!(routes, ["<sip:bob@10.0.0.2:5060>"]);
    }

    #[test]
    fn retransmits_2xx_until_ack_and_resends_ack_on_retransmitted_2xx() {
        let mut h = Harness::new(1);
        h.drop_acks = true;
        h.call(sdp("offer"));
        h.b_answer(0, 200, sdp("answer"));
        assert!(h.b(0).awaiting_ack());
        let count = |h: &Harness| {
            h.sent(Side::B(0), |m| is_resp(m, 200, Method::Invite))
                .len()
        };
        let acks = |h: &Harness| h.sent(Side::A, |m| is_req(m, Method::Ack));
        assert_eq!(count(&h), 1);
        h.advance(T1 - Duration::from_millis(1));
        assert_eq!(count(&h), 1);
        h.advance(Duration::from_millis(1)); // T1
        assert_eq!(count(&h), 2);
        h.advance(T1 * 2); // 3*T1
        assert_eq!(count(&h), 3);
        // Each 2xx retransmission made A send the same ACK again.
        let a = acks(&h);
        assert_eq!(a.len(), 3);
        assert!(a.iter().all(|x| x == &a[0]));
        h.drop_acks = false;
        h.advance(T1 * 4); // 7*T1: retransmission, ACK gets through
        assert_eq!(count(&h), 4);
        assert!(!h.b(0).awaiting_ack());
        assert!(b_evs(&h, 0)
            .iter()
            .any(|e| matches!(e, DialogEvent::Acked { .. })));
        h.advance(T1 * 64);
        assert_eq!(count(&h), 4, "stops after the ACK");
        assert_eq!(h.b(0).state(), DialogState::Confirmed);
        // A stray 2xx retransmission (after the transaction ended) still gets the ACK.
        let ok = h.sent(Side::B(0), |m| is_resp(m, 200, Method::Invite));
        let evs = h.a.on_response(None, resp_of(&ok[0]).clone(), h.now);
        assert!(matches!(&evs[..], [DialogEvent::SendAck { req, .. }] if *req == *req_of(&a[0])));
    }

    #[test]
    fn no_ack_gives_up_at_64_t1_with_bye() {
        let mut h = Harness::new(1);
        h.drop_acks = true;
        h.call(sdp("offer"));
        h.b_answer(0, 200, sdp("answer"));
        let t_answer = h.now;
        h.advance(T1 * 64 - Duration::from_millis(1));
        let times = h
            .sent(Side::B(0), |m| is_resp(m, 200, Method::Invite))
            .len();
        // T1, 3, 7, 15 T1, then every T2 = 8 T1: 23 ... 63 T1 -> 10 retransmissions.
        assert_eq!(times, 11);
        assert!(terminated(&b_evs(&h, 0)).is_empty());
        h.advance(Duration::from_millis(1));
        assert_eq!(h.now - t_answer, T1 * 64);
        assert_eq!(terminated(&b_evs(&h, 0)), vec![TerminateReason::AckTimeout]);
        let bye = h.sent(Side::B(0), |m| is_req(m, Method::Bye));
        assert_eq!(bye.len(), 1);
        assert_eq!(req_of(&bye[0]).uri, A_CONTACT);
        assert_eq!(terminated(&h.ev_a), vec![TerminateReason::RemoteBye]);
    }

    #[test]
    fn forking_two_early_dialogs_one_answer_second_2xx_acked_and_byed() {
        let mut h = Harness::new(2);
        let inv = h.call(sdp("offer"));
        h.b_answer(0, 180, MsgOpts::default());
        h.b_answer(1, 183, sdp("early media"));
        let created: Vec<&DialogId> = h
            .ev_a
            .iter()
            .filter_map(|e| match e {
                DialogEvent::Created { invite, id } if *invite == inv => Some(id),
                _ => None,
            })
            .collect();
        assert_eq!(created.len(), 2);
        assert_ne!(created[0].remote_tag, created[1].remote_tag);
        assert_eq!(h.a(0).state(), DialogState::Early);
        assert_eq!(h.a(1).state(), DialogState::Early);

        h.b_answer(0, 200, sdp("answer 0"));
        assert_eq!(h.a(0).state(), DialogState::Confirmed);
        assert_eq!(h.a(1).state(), DialogState::Terminated);
        assert!(h.ev_a.iter().any(|e| matches!(e,
            DialogEvent::Terminated { id, reason: TerminateReason::ForkLoser } if *id == h.a_id(1))));

        h.ev_a.clear();
        h.b_answer(1, 200, sdp("answer 1"));
        let acks = h.sent(Side::A, |m| is_req(m, Method::Ack));
        assert_eq!(acks.len(), 2, "both 2xx are ACKed");
        let bye = h.sent(Side::A, |m| is_req(m, Method::Bye));
        assert_eq!(bye.len(), 1);
        assert_eq!(
            to_header(bye[0].headers()).expect("to").tag(),
            Some(h.b_id(1).local_tag.as_str())
        );
        assert!(b_evs(&h, 1)
            .iter()
            .any(|e| matches!(e, DialogEvent::Acked { .. })));
        assert_eq!(terminated(&b_evs(&h, 1)), vec![TerminateReason::RemoteBye]);
        assert_eq!(h.b(0).state(), DialogState::Confirmed);
        assert_eq!(h.a(0).state(), DialogState::Confirmed);
        // The loser's 2xx is not reported as an answer; only the BYE's 200 is.
        assert!(!h.ev_a.iter().any(|e| matches!(
            e,
            DialogEvent::Response {
                method: Method::Invite,
                ..
            }
        )));
        assert!(terminated(&h.ev_a).contains(&TerminateReason::ForkLoser));
        // A retransmission of the loser's 2xx gets the same ACK again, no second BYE.
        let ok1 = h.sent(Side::B(1), |m| is_resp(m, 200, Method::Invite));
        let evs = h.a.on_response(None, resp_of(&ok1[0]).clone(), h.now);
        assert!(
            matches!(&evs[..], [DialogEvent::SendAck { req, .. }] if *req == *req_of(&acks[1]))
        );
    }

    #[test]
    fn prack_flow_with_rseq_rack_and_retransmission() {
        let mut h = Harness::new(1);
        h.call(sdp("offer"));
        let invite = h.sent(Side::A, |m| is_req(m, Method::Invite));
        assert!(has_option(
            invite[0].headers(),
            &HeaderName::Supported,
            "100rel"
        ));
        h.drop_to_a = true;
        h.b_answer(
            0,
            183,
            MsgOpts {
                reliable: true,
                ..sdp("early")
            },
        );
        assert!(h.b(0).awaiting_prack());
        let first = h.sent(Side::B(0), |m| is_resp(m, 183, Method::Invite));
        let rseq: u32 = other_header(first[0].headers(), "RSeq", None)
            .expect("RSeq")
            .parse()
            .expect("number");
        assert!(has_option(
            first[0].headers(),
            &HeaderName::Require,
            "100rel"
        ));
        // A second reliable 1xx must wait for the PRACK.
        let (id, key) = (h.b_id(0), h.b_invite_keys[0].clone().expect("key"));
        let opts = MsgOpts {
            reliable: true,
            ..MsgOpts::default()
        };
        assert_eq!(
            h.bs[0].respond(&id, &key, 180, opts, h.now),
            Err(DialogError::ProvisionalPending)
        );
        h.advance(T1);
        h.advance(T1 * 2);
        let sent = h.sent(Side::B(0), |m| is_resp(m, 183, Method::Invite));
        assert_eq!(sent.len(), 3, "sent at 0, T1, 3*T1");
        h.drop_to_a = false;
        h.advance(T1 * 4); // 7*T1
        let pracks = h.sent(Side::A, |m| is_req(m, Method::Prack));
        assert_eq!(pracks.len(), 1);
        assert_eq!(
            other_header(pracks[0].headers(), "RAck", None),
            Some(format!("{rseq} 1 INVITE").as_str())
        );
        assert_eq!(cseq_of(&pracks[0]), (2, Method::Prack));
        assert!(!h.b(0).awaiting_prack());
        assert!(b_evs(&h, 0)
            .iter()
            .any(|e| matches!(e, DialogEvent::Prack { .. })));
        assert!(h.ev_a.iter().any(|e| matches!(e,
            DialogEvent::Response { method: Method::Prack, resp, .. } if resp.status == 200)));
        h.advance(T1 * 64);
        assert_eq!(
            h.sent(Side::B(0), |m| is_resp(m, 183, Method::Invite))
                .len(),
            4
        );
        // The next reliable 1xx has the next RSeq and is PRACKed again.
        let opts = MsgOpts {
            reliable: true,
            ..MsgOpts::default()
        };
        let evs = h.bs[0].respond(&id, &key, 180, opts, h.now).expect("180");
        h.run(Side::B(0), evs);
        let ringing = h.sent(Side::B(0), |m| is_resp(m, 180, Method::Invite));
        assert_eq!(
            other_header(ringing[0].headers(), "RSeq", None),
            Some((rseq + 1).to_string().as_str())
        );
        assert_eq!(h.sent(Side::A, |m| is_req(m, Method::Prack)).len(), 2);
        h.b_answer(0, 200, sdp("answer"));
        assert_eq!(h.a(0).state(), DialogState::Confirmed);
        assert_eq!(h.a(0).local_cseq(), Some(3));
        assert_eq!(h.b(0).remote_cseq(), Some(3));
    }

    #[test]
    fn unprackd_reliable_1xx_gives_up_with_500() {
        let mut h = Harness::new(1);
        h.call(sdp("offer"));
        h.drop_to_a = true;
        h.b_answer(
            0,
            180,
            MsgOpts {
                reliable: true,
                ..MsgOpts::default()
            },
        );
        h.advance(T1 * 64);
        assert_eq!(
            terminated(&b_evs(&h, 0)),
            vec![TerminateReason::PrackTimeout]
        );
        assert_eq!(
            h.sent(Side::B(0), |m| is_resp(m, 500, Method::Invite))
                .len(),
            1
        );
        // T1 doubling without cap: 0, 1, 3, 7, 15, 31, 63 T1.
        assert_eq!(
            h.sent(Side::B(0), |m| is_resp(m, 180, Method::Invite))
                .len(),
            7
        );
    }

    #[test]
    fn reinvite_hold_and_target_refresh() {
        let mut h = Harness::established(1);
        let b_id = h.b_id(0);
        h.bs[0]
            .set_local_contact(&b_id, "sip:bob@192.0.2.9:5070")
            .expect("contact");
        let evs = h.bs[0]
            .request(&b_id, Method::Invite, sdp("a=sendonly"), h.now)
            .expect("re-INVITE");
        h.run(Side::B(0), evs);
        let reinv = h.sent(Side::B(0), |m| is_req(m, Method::Invite));
        assert_eq!(req_of(&reinv[0]).uri, A_CONTACT);
        let local = h.b(0).local_cseq().expect("cseq");
        assert_eq!(cseq_of(&reinv[0]), (local, Method::Invite));
        // A: the re-INVITE refreshed the target at once and is for the TU to answer.
        assert_eq!(h.a(0).remote_target(), "sip:bob@192.0.2.9:5070");
        let (key, body) = h
            .ev_a
            .iter()
            .find_map(|e| match e {
                DialogEvent::Request { key, req, .. } if req.method == Method::Invite => {
                    Some((key.clone(), req.body.clone()))
                }
                _ => None,
            })
            .expect("re-INVITE reaches A's TU");
        assert_eq!(&body[..], b"a=sendonly");
        let a_id = h.a_id(0);
        let evs =
            h.a.respond(&a_id, &key, 200, sdp("a=recvonly"), h.now)
                .expect("200");
        h.run(Side::A, evs);
        assert!(b_evs(&h, 0).iter().any(|e| matches!(e,
            DialogEvent::Response { method: Method::Invite, resp, .. }
                if resp.status == 200 && &resp.body[..] == b"a=recvonly")));
        let b_acks = h.sent(Side::B(0), |m| is_req(m, Method::Ack));
        assert_eq!(cseq_of(&b_acks[0]), (local, Method::Ack));
        assert!(h
            .ev_a
            .iter()
            .any(|e| matches!(e, DialogEvent::Acked { .. })));
        assert!(!h.a(0).awaiting_ack());
        let evs = h.a.bye(&a_id, h.now).expect("bye");
        let DialogEvent::SendRequest { req, .. } = &evs[0] else {
            panic!("BYE")
        };
        assert_eq!(req.uri, "sip:bob@192.0.2.9:5070");
    }

    #[test]
    fn late_offer_ack_carries_the_answer() {
        let mut h = Harness::new(1);
        h.call(MsgOpts::default());
        h.b_answer(0, 200, sdp("offer in 2xx"));
        assert!(h.sent(Side::A, |m| is_req(m, Method::Ack)).is_empty());
        let a_id = h.a_id(0);
        let evs =
            h.a.send_ack(&a_id, Some(Body::new("application/sdp", &b"answer"[..])))
                .expect("ack");
        h.run(Side::A, evs);
        let acked = b_evs(&h, 0)
            .into_iter()
            .find_map(|e| match e {
                DialogEvent::Acked { req, .. } => Some(req),
                _ => None,
            })
            .expect("acked");
        assert_eq!(&acked.body[..], b"answer");
    }

    /// An established dialog where both sides send a re-INVITE at once and they cross in
    /// the network; both have got the other's. Returns the harness and A's dialog.
    fn crossing_reinvites() -> (Harness, DialogId) {
        let mut h = Harness::established(1);
        let (a_id, b_id) = (h.a_id(0), h.b_id(0));
        let ea =
            h.a.request(&a_id, Method::Invite, sdp("a hold"), h.now)
                .expect("a");
        let eb = h.bs[0]
            .request(&b_id, Method::Invite, sdp("b hold"), h.now)
            .expect("b");
        h.queue.extend(ea.into_iter().map(|e| (Side::A, e)));
        h.queue.extend(eb.into_iter().map(|e| (Side::B(0), e)));
        h.pump();
        (h, a_id)
    }

    #[test]
    fn glare_both_sides_491_and_retry_windows() {
        let (mut h, a_id) = crossing_reinvites();
        assert_eq!(
            h.sent(Side::A, |m| is_resp(m, 491, Method::Invite)).len(),
            1
        );
        assert_eq!(
            h.sent(Side::B(0), |m| is_resp(m, 491, Method::Invite))
                .len(),
            1
        );
        let t = h.now;
        // A owns the Call-ID (it sent the initial INVITE): 2.1..4 s; B: 0..2 s.
        let a_at = h.a(0).glare_retry_at().expect("A retries") - t;
        let b_at = h.b(0).glare_retry_at().expect("B retries") - t;
        assert!(
            a_at >= Duration::from_millis(2100) && a_at <= Duration::from_secs(4),
            "{a_at:?}"
        );
        assert!(b_at <= Duration::from_secs(2), "{b_at:?}");
        // While the retry is pending, another re-INVITE is refused locally.
        assert_eq!(
            h.a.request(&a_id, Method::Invite, MsgOpts::default(), h.now),
            Err(DialogError::Glare)
        );
        // B's retry goes first and A's TU answers it.
        h.advance(b_at);
        let key = h
            .ev_a
            .iter()
            .find_map(|e| match e {
                DialogEvent::Request { key, req, .. } if req.method == Method::Invite => {
                    Some(key.clone())
                }
                _ => None,
            })
            .expect("B's retry reached A");
        // A's own retry falls due while B's INVITE is unanswered: it waits (14.1).
        h.advance(a_at - b_at);
        assert_eq!(h.sent(Side::A, |m| is_req(m, Method::Invite)).len(), 2);
        let evs =
            h.a.respond(&a_id, &key, 200, sdp("ok"), h.now)
                .expect("200");
        h.run(Side::A, evs);
        assert!(h
            .ev_a
            .iter()
            .any(|e| matches!(e, DialogEvent::Acked { .. })));
        // Then A's retry, with a higher CSeq and a new branch.
        h.advance(T1);
        let invites = h.sent(Side::A, |m| is_req(m, Method::Invite));
        assert_eq!(invites.len(), 3, "initial, glared, retried");
        assert_eq!(cseq_of(&invites[2]).0, cseq_of(&invites[1]).0 + 1);
        assert_ne!(
            top_branch(req_of(&invites[2])),
            top_branch(req_of(&invites[1]))
        );
        assert_eq!(&invites[2].body()[..], b"a hold");
        assert!(b_evs(&h, 0).iter().any(|e| matches!(e,
            DialogEvent::Request { req, .. } if req.method == Method::Invite)));
    }

    #[test]
    fn a_glare_retry_can_be_forgone() {
        let (mut h, a_id) = crossing_reinvites();
        assert!(h.a(0).glare_retry_at().is_some());
        assert!(h.a.forgo_glare_retry(&a_id));
        assert!(!h.a.forgo_glare_retry(&a_id), "only once");
        assert_eq!(h.a(0).glare_retry_at(), None);
        h.advance(Duration::from_secs(5));
        // B's own retry came and went; A never sent its INVITE again.
        assert_eq!(
            h.sent(Side::A, |m| is_req(m, Method::Invite)).len(),
            2,
            "initial and glared only"
        );
        // And A may start a new re-INVITE once B's is answered.
        let key = h
            .ev_a
            .iter()
            .find_map(|e| match e {
                DialogEvent::Request { key, req, .. } if req.method == Method::Invite => {
                    Some(key.clone())
                }
                _ => None,
            })
            .expect("B's retry reached A");
        let evs =
            h.a.respond(&a_id, &key, 200, sdp("ok"), h.now)
                .expect("200");
        h.run(Side::A, evs);
        h.advance(T1);
        assert!(h
            .a
            .request(&a_id, Method::Invite, sdp("again"), h.now)
            .is_ok());
    }

    #[test]
    fn second_incoming_reinvite_before_answer_gets_500_retry_after() {
        let mut h = Harness::established(1);
        let a_id = h.a_id(0);
        let evs =
            h.a.request(&a_id, Method::Invite, sdp("x"), h.now)
                .expect("re-INVITE");
        let DialogEvent::SendRequest { req, .. } = &evs[0] else {
            panic!("request")
        };
        let mut second = req.clone();
        h.run(Side::A, evs);
        // A forged second INVITE with a higher CSeq while B's TU has not answered.
        second.headers.set(HeaderName::CSeq, "99 INVITE");
        second.headers.set(
            HeaderName::Via,
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKother",
        );
        let key = TxKey::server(&second).expect("key");
        let evs = h.bs[0]
            .on_request(key, second, peer_ba(), h.now)
            .expect("in dialog");
        let [DialogEvent::SendResponse { resp, .. }] = &evs[..] else {
            panic!("{evs:?}")
        };
        assert_eq!(resp.status, 500);
        assert!(other_header(&resp.headers, "Retry-After", None).is_some());
        // And B may not start its own re-INVITE while A's is unanswered (14.1).
        let b_id = h.b_id(0);
        assert_eq!(
            h.bs[0].request(&b_id, Method::Invite, MsgOpts::default(), h.now),
            Err(DialogError::Glare)
        );
        // Other requests are fine meanwhile.
        assert!(h.bs[0]
            .request(&b_id, Method::Info, MsgOpts::default(), h.now)
            .is_ok());
    }

    #[test]
    fn cseq_going_backwards_gets_500() {
        let mut h = Harness::established(1);
        let a_id = h.a_id(0);
        let evs =
            h.a.request(&a_id, Method::Info, MsgOpts::default(), h.now)
                .expect("info");
        h.run(Side::A, evs.clone());
        let DialogEvent::SendRequest { req, .. } = &evs[0] else {
            panic!("request")
        };
        let mut old = req.clone();
        old.headers.set(HeaderName::CSeq, "1 INFO");
        old.headers.set(
            HeaderName::Via,
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKold",
        );
        let key = TxKey::server(&old).expect("key");
        let evs = h.bs[0]
            .on_request(key, old, peer_ba(), h.now)
            .expect("in dialog");
        let [DialogEvent::SendResponse { resp, .. }] = &evs[..] else {
            panic!("{evs:?}")
        };
        assert_eq!(resp.status, 500);
        assert_eq!(
            h.b(0).remote_cseq(),
            Some(2),
            "unchanged by the refused request"
        );
        // A broken CSeq is a 400, not a panic.
        let mut broken = req.clone();
        broken.headers.set(HeaderName::CSeq, "x INFO");
        let evs = h.bs[0]
            .on_request(
                TxKey::server(&broken).expect("key"),
                broken,
                peer_ba(),
                h.now,
            )
            .expect("in dialog");
        assert!(matches!(&evs[..], [DialogEvent::SendResponse { resp, .. }] if resp.status == 400));
    }

    #[test]
    fn unknown_dialog_gets_481_and_no_to_tag_is_not_in_dialog() {
        let mut h = Harness::established(1);
        let a_id = h.a_id(0);
        let evs =
            h.a.request(&a_id, Method::Info, MsgOpts::default(), h.now)
                .expect("info");
        let DialogEvent::SendRequest { req, .. } = &evs[0] else {
            panic!("request")
        };
        let mut stray = req.clone();
        stray
            .headers
            .set(HeaderName::To, "<sip:bob@example.com>;tag=nosuchtag");
        let key = TxKey::server(&stray).expect("key");
        let evs = h.bs[0]
            .on_request(key, stray, peer_ba(), h.now)
            .expect("has tag");
        assert!(matches!(&evs[..], [DialogEvent::SendResponse { resp, .. }] if resp.status == 481));
        let mut untagged = req.clone();
        untagged
            .headers
            .set(HeaderName::To, "<sip:bob@example.com>");
        let key = TxKey::server(&untagged).expect("key");
        assert_eq!(
            h.bs[0].on_request(key, untagged, peer_ba(), h.now),
            Err(DialogError::NotInDialog)
        );
        // A response for no dialog is ignored; an ACK for none too.
        let resp = Response::for_request(req, 200, "OK");
        assert!(h.bs[0].on_response(None, resp, h.now).is_empty());
        // 481 to our in-dialog request ends the dialog (12.2.1.2).
        let mut r481 = Response::for_request(req, 481, "Gone");
        r481.ensure_to_tag(&a_id.remote_tag);
        let evs = h.a.on_response(TxKey::for_response(&r481), r481, h.now);
        assert_eq!(terminated(&evs), vec![TerminateReason::PeerGone(481)]);
    }

    #[test]
    fn session_timer_negotiation_refresh_and_expiry() {
        let mut h = Harness::established(1);
        let invite = h.sent(Side::A, |m| is_req(m, Method::Invite));
        assert!(has_option(
            invite[0].headers(),
            &HeaderName::Supported,
            "timer"
        ));
        assert_eq!(
            other_header(invite[0].headers(), "Session-Expires", None),
            Some("1800")
        );
        let ok = h.sent(Side::B(0), |m| is_resp(m, 200, Method::Invite));
        assert_eq!(
            other_header(ok[0].headers(), "Session-Expires", None),
            Some("1800;refresher=uac")
        );
        assert!(has_option(ok[0].headers(), &HeaderName::Require, "timer"));
        let sa = *h.a(0).session_timer().expect("A timer");
        let sb = *h.b(0).session_timer().expect("B timer");
        assert!(sa.local_refresher && !sb.local_refresher);
        assert_eq!((sa.interval, sb.interval), (1800, 1800));

        h.advance(Duration::from_secs(900) - Duration::from_millis(1));
        assert!(!h
            .ev_a
            .iter()
            .any(|e| matches!(e, DialogEvent::RefreshDue { .. })));
        h.advance(Duration::from_millis(1));
        assert!(h
            .ev_a
            .iter()
            .any(|e| matches!(e, DialogEvent::RefreshDue { .. })));
        // A refreshes with UPDATE; B's TU answers it.
        let a_id = h.a_id(0);
        let evs =
            h.a.request(&a_id, Method::Update, MsgOpts::default(), h.now)
                .expect("UPDATE");
        h.run(Side::A, evs);
        let upd = h.sent(Side::A, |m| is_req(m, Method::Update));
        assert_eq!(
            other_header(upd[0].headers(), "Session-Expires", None),
            Some("1800;refresher=uac")
        );
        let key = b_evs(&h, 0)
            .into_iter()
            .find_map(|e| match e {
                DialogEvent::Request { key, req, .. } if req.method == Method::Update => Some(key),
                _ => None,
            })
            .expect("UPDATE reached B");
        let b_id = h.b_id(0);
        let evs = h.bs[0]
            .respond(&b_id, &key, 200, MsgOpts::default(), h.now)
            .expect("200");
        h.run(Side::B(0), evs);
        let refreshed = h.now;
        assert_eq!(h.a(0).session_timer().expect("A").refreshed_at, refreshed);
        assert_eq!(h.b(0).session_timer().expect("B").refreshed_at, refreshed);

        // No more refreshes: B (not the refresher) gives up at 1800 - min(32, 600) = 1768 s.
        h.advance(Duration::from_secs(1768) - Duration::from_millis(1));
        assert!(terminated(&b_evs(&h, 0)).is_empty());
        h.advance(Duration::from_millis(1));
        assert_eq!(
            terminated(&b_evs(&h, 0)),
            vec![TerminateReason::SessionExpired]
        );
        assert_eq!(h.sent(Side::B(0), |m| is_req(m, Method::Bye)).len(), 1);
    }

    #[test]
    fn session_timer_too_small_gets_422_and_the_invite_is_retried() {
        let cfg_a = DialogConfig {
            session_expires: Some(120),
            ..DialogConfig::default()
        };
        let cfg_b = DialogConfig {
            min_se: 300,
            ..DialogConfig::default()
        };
        let mut h = Harness::with(1, cfg_a, cfg_b);
        h.call(sdp("offer"));
        let r422 = h.sent(Side::B(0), |m| is_resp(m, 422, Method::Invite));
        assert_eq!(other_header(r422[0].headers(), "Min-SE", None), Some("300"));
        let invites = h.sent(Side::A, |m| is_req(m, Method::Invite));
        assert_eq!(invites.len(), 2);
        assert_eq!(cseq_of(&invites[1]), (2, Method::Invite));
        assert_eq!(
            other_header(invites[1].headers(), "Session-Expires", None),
            Some("300")
        );
        assert_eq!(
            invites[0].headers().get(&HeaderName::CallId),
            invites[1].headers().get(&HeaderName::CallId)
        );
        assert!(!h
            .ev_a
            .iter()
            .any(|e| matches!(e, DialogEvent::InviteFailed { .. })));
        h.b_answer(0, 200, sdp("answer"));
        assert_eq!(h.a(0).state(), DialogState::Confirmed);
        assert_eq!(h.a(0).session_timer().expect("timer").interval, 300);
        assert_eq!(h.sent(Side::A, |m| is_req(m, Method::Ack)).len(), 1);
        // An in-dialog refresh below our Min-SE is refused with 422 too.
        let a_id = h.a_id(0);
        let evs =
            h.a.request(&a_id, Method::Update, MsgOpts::default(), h.now)
                .expect("upd");
        let DialogEvent::SendRequest { req, .. } = &evs[0] else {
            panic!("request")
        };
        let mut small = req.clone();
        small.headers.set(se_name(), "100");
        let key = TxKey::server(&small).expect("key");
        let evs = h.bs[0]
            .on_request(key, small, peer_ba(), h.now)
            .expect("in dialog");
        assert!(matches!(&evs[..], [DialogEvent::SendResponse { resp, .. }] if resp.status == 422));
    }

    #[test]
    fn rejected_invite_and_cancel_end_the_early_dialogs() {
        let mut h = Harness::new(1);
        let inv = h.call(sdp("offer"));
        h.b_answer(0, 180, MsgOpts::default());
        h.b_answer(0, 486, MsgOpts::default());
        assert_eq!(
            terminated(&b_evs(&h, 0)),
            vec![TerminateReason::Rejected(486)]
        );
        assert!(terminated(&h.ev_a).contains(&TerminateReason::Rejected(486)));
        assert!(h.ev_a.iter().any(|e| matches!(e,
            DialogEvent::InviteFailed { invite, resp } if *invite == inv && resp.status == 486)));
        assert!(h.a.invite_key(&inv).is_none());

        let mut h = Harness::new(1);
        h.call(sdp("offer"));
        let key = h.b_invite_keys[0].clone().expect("key");
        let evs = h.bs[0].on_cancel(&key, h.now);
        assert_eq!(terminated(&evs), vec![TerminateReason::Cancelled]);
        h.run(Side::B(0), evs);
        assert_eq!(
            h.sent(Side::B(0), |m| is_resp(m, 487, Method::Invite))
                .len(),
            1
        );
    }

    #[test]
    fn invite_timeout_is_a_408_failure() {
        let mut h = Harness::new(1);
        h.drop_to_b = true;
        let inv = h.call(sdp("offer"));
        let key = h.a.invite_key(&inv).expect("key").clone();
        let evs = h.a.on_timeout(&key, h.now);
        assert!(matches!(&evs[..],
            [DialogEvent::InviteFailed { resp, .. }] if resp.status == 408));
    }

    /// RFC 3261 8.1.3.1: a request that could not be sent fails as a 503, not as a
    /// timeout (a phone whose connection is refused is unavailable, not unanswering).
    #[test]
    fn invite_transport_error_is_a_503_failure() {
        let mut h = Harness::new(1);
        h.drop_to_b = true;
        let inv = h.call(sdp("offer"));
        let key = h.a.invite_key(&inv).expect("key").clone();
        let evs = h.a.on_transport_error(&key, h.now);
        assert!(matches!(&evs[..],
            [DialogEvent::InviteFailed { resp, .. }] if resp.status == 503));
    }

    #[test]
    fn terminated_dialogs_are_purged_after_64_t1() {
        let mut h = Harness::established(1);
        let a_id = h.a_id(0);
        let evs = h.a.bye(&a_id, h.now).expect("bye");
        h.run(Side::A, evs);
        assert!(h.a.get(&a_id).is_some());
        h.advance(T1 * 64);
        assert!(h.a.get(&a_id).is_none());
        assert!(h.bs[0].is_empty());
        assert_eq!(h.a.next_deadline(), None);
    }

    /// The contract with the transaction layer: both UAs run a real `TransactionLayer`,
    /// the first ACK is lost, the 2xx retransmission comes back through the Accepted
    /// state, the ACK is re-sent and reaches B as `Ack2xx`; then BYE, and everything drains.
    #[test]
    fn through_two_transaction_layers() {
        use crate::sip::transaction::{Action, TransactionLayer};

        enum Work {
            Dialog(usize, DialogEvent),
            Tx(usize, Action),
            Net(usize, SipMessage),
        }
        struct Ua {
            tl: TransactionLayer,
            ds: DialogSet,
            peer: Peer,
            invite_key: Option<(DialogId, TxKey)>,
            events: Vec<DialogEvent>,
        }
        let mut ua = [
            Ua {
                tl: TransactionLayer::new(Timers::default()),
                ds: set(DialogConfig::default(), 7),
                peer: peer_ab(),
                invite_key: None,
                events: Vec::new(),
            },
            Ua {
                tl: TransactionLayer::new(Timers::default()),
                ds: set(DialogConfig::default(), 8),
                peer: peer_ba(),
                invite_key: None,
                events: Vec::new(),
            },
        ];
        let mut now = Instant::now();
        let mut wire: Vec<(usize, SipMessage)> = Vec::new();
        let mut drop_next_ack = true;

        fn run(
            ua: &mut [Ua; 2],
            wire: &mut Vec<(usize, SipMessage)>,
            drop_next_ack: &mut bool,
            now: Instant,
            start: Vec<Work>,
        ) {
            let mut q: VecDeque<Work> = start.into();
            while let Some(w) = q.pop_front() {
                match w {
                    Work::Dialog(i, DialogEvent::SendRequest { req, to }) => {
                        let (_, acts) = ua[i].tl.send_request(req, to, now).expect("tx");
                        q.extend(acts.into_iter().map(|a| Work::Tx(i, a)));
                    }
                    Work::Dialog(i, DialogEvent::SendAck { req, .. }) => {
                        q.push_back(Work::Tx(
                            i,
                            Action::Send {
                                msg: req.into(),
                                to: ua[i].peer,
                            },
                        ));
                    }
                    Work::Dialog(i, DialogEvent::SendResponse { key, resp }) => {
                        let acts = ua[i].tl.respond(&key, resp, now);
                        q.extend(acts.into_iter().map(|a| Work::Tx(i, a)));
                    }
                    Work::Dialog(i, ev) => ua[i].events.push(ev),
                    Work::Tx(i, Action::Send { msg, .. }) => {
                        let msg = parse(&msg.to_bytes()).expect("wire");
                        wire.push((i, msg.clone()));
                        let is_ack =
                            matches!(&msg, SipMessage::Request(r) if r.method == Method::Ack);
                        if is_ack && *drop_next_ack {
                            *drop_next_ack = false;
                            continue;
                        }
                        q.push_back(Work::Net(1 - i, msg));
                    }
                    Work::Net(i, msg) => {
                        let peer = ua[i].peer;
                        let acts = ua[i].tl.on_message(msg, peer, now);
                        q.extend(acts.into_iter().map(|a| Work::Tx(i, a)));
                    }
                    Work::Tx(i, Action::Request { key, req, from }) => {
                        let u = &mut ua[i];
                        let evs = match u.ds.on_request(key.clone(), req.clone(), from, now) {
                            Ok(evs) => evs,
                            Err(DialogError::NotInDialog) => {
                                let id =
                                    u.ds.accept_invite(&key, &req, from, B_CONTACT)
                                        .expect("accept");
                                u.invite_key = Some((id, key));
                                Vec::new()
                            }
                            Err(e) => panic!("{e}"),
                        };
                        q.extend(evs.into_iter().map(|e| Work::Dialog(i, e)));
                    }
                    Work::Tx(i, Action::Ack2xx { req, .. }) => {
                        let evs = ua[i].ds.on_ack(req, now);
                        q.extend(evs.into_iter().map(|e| Work::Dialog(i, e)));
                    }
                    Work::Tx(i, Action::Response { key, resp }) => {
                        let evs = ua[i].ds.on_response(Some(key), resp, now);
                        q.extend(evs.into_iter().map(|e| Work::Dialog(i, e)));
                    }
                    Work::Tx(i, Action::StrayResponse { resp, .. }) => {
                        let evs = ua[i].ds.on_response(None, resp, now);
                        q.extend(evs.into_iter().map(|e| Work::Dialog(i, e)));
                    }
                    Work::Tx(i, Action::Timeout { key } | Action::TransportError { key }) => {
                        let evs = ua[i].ds.on_timeout(&key, now);
                        q.extend(evs.into_iter().map(|e| Work::Dialog(i, e)));
                    }
                    Work::Tx(_, _) => {}
                }
            }
        }
        fn tick(ua: &[Ua; 2]) -> Option<Instant> {
            ua.iter()
                .flat_map(|u| [u.tl.next_deadline(), u.ds.next_deadline()])
                .flatten()
                .min()
        }
        fn advance_to(
            ua: &mut [Ua; 2],
            wire: &mut Vec<(usize, SipMessage)>,
            drop_next_ack: &mut bool,
            now: &mut Instant,
            end: Instant,
        ) {
            while let Some(t) = tick(ua).filter(|t| *t <= end) {
                *now = (*now).max(t);
                let mut work = Vec::new();
                for (i, u) in ua.iter_mut().enumerate() {
                    work.extend(u.tl.on_timer(*now).into_iter().map(|a| Work::Tx(i, a)));
                    work.extend(u.ds.on_timer(*now).into_iter().map(|e| Work::Dialog(i, e)));
                }
                run(ua, wire, drop_next_ack, *now, work);
            }
            *now = end;
        }

        let (_, evs) = ua[0]
            .ds
            .invite(
                InviteParams {
                    request_uri: "sip:bob@example.com".into(),
                    from: "<sip:alice@example.com>".into(),
                    to: "<sip:bob@example.com>".into(),
                    local_contact: A_CONTACT.into(),
                    route: Vec::new(),
                    peer: peer_ab(),
                    call_id: None,
                    opts: sdp("offer"),
                },
                now,
            )
            .expect("invite");
        run(
            &mut ua,
            &mut wire,
            &mut drop_next_ack,
            now,
            evs.into_iter().map(|e| Work::Dialog(0, e)).collect(),
        );
        let (b_id, key) = ua[1].invite_key.clone().expect("B got the INVITE");
        let evs = ua[1]
            .ds
            .respond(&b_id, &key, 180, MsgOpts::default(), now)
            .expect("180");
        run(
            &mut ua,
            &mut wire,
            &mut drop_next_ack,
            now,
            evs.into_iter().map(|e| Work::Dialog(1, e)).collect(),
        );
        let evs = ua[1]
            .ds
            .respond(&b_id, &key, 200, sdp("answer"), now)
            .expect("200");
        run(
            &mut ua,
            &mut wire,
            &mut drop_next_ack,
            now,
            evs.into_iter().map(|e| Work::Dialog(1, e)).collect(),
        );
        assert!(!ua[1]
            .events
            .iter()
            .any(|e| matches!(e, DialogEvent::Acked { .. })));
        let end = now + T1;
        advance_to(&mut ua, &mut wire, &mut drop_next_ack, &mut now, end);
        assert!(ua[1]
            .events
            .iter()
            .any(|e| matches!(e, DialogEvent::Acked { .. })));
        let oks = wire
            .iter()
            .filter(|(i, m)| *i == 1 && is_resp(m, 200, Method::Invite))
            .count();
        assert_eq!(oks, 2);
        let acks = wire
            .iter()
            .filter(|(i, m)| *i == 0 && is_req(m, Method::Ack))
            .count();
        assert_eq!(acks, 2);
        assert!(wire
            .iter()
            .any(|(i, m)| *i == 1 && is_resp(m, 100, Method::Invite)));

        let a_id = DialogId {
            call_id: b_id.call_id.clone(),
            local_tag: b_id.remote_tag.clone(),
            remote_tag: b_id.local_tag.clone(),
        };
        let evs = ua[0].ds.bye(&a_id, now).expect("bye");
        run(
            &mut ua,
            &mut wire,
            &mut drop_next_ack,
            now,
            evs.into_iter().map(|e| Work::Dialog(0, e)).collect(),
        );
        assert!(ua[1].events.iter().any(|e| matches!(
            e,
            DialogEvent::Terminated {
                reason: TerminateReason::RemoteBye,
                ..
            }
        )));
        assert!(ua[0].events.iter().any(|e| matches!(e,
            DialogEvent::Response { method: Method::Bye, resp, .. } if resp.status == 200)));
        let end = now + T1 * 64 + Duration::from_secs(10);
        advance_to(&mut ua, &mut wire, &mut drop_next_ack, &mut now, end);
        for u in &ua {
            assert!(u.tl.is_empty() && u.ds.is_empty());
            assert_eq!(tick_one(u.tl.next_deadline(), u.ds.next_deadline()), None);
        }
        fn tick_one(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
            a.or(b)
        }
    }

    /// Every message of a rich call with each header removed or garbled, fed to both
    /// sides in the early and the confirmed state, then the timers run: no panic.
    #[test]
    fn mutated_network_input_never_panics() {
        // A scenario that puts every kind of message on the wire.
        let mut h = Harness::new(1);
        h.rr = vec!["<sip:p1.example.net;lr>".to_owned()];
        h.call(sdp("offer"));
        let early = (h.a.clone(), h.bs[0].clone());
        h.b_answer(
            0,
            183,
            MsgOpts {
                reliable: true,
                ..sdp("early")
            },
        );
        h.b_answer(0, 200, sdp("answer"));
        let confirmed = (h.a.clone(), h.bs[0].clone());
        let (a_id, b_id) = (h.a_id(0), h.b_id(0));
        let evs =
            h.a.request(&a_id, Method::Update, MsgOpts::default(), h.now)
                .expect("u");
        h.run(Side::A, evs);
        let key = b_evs(&h, 0)
            .into_iter()
            .find_map(|e| match e {
                DialogEvent::Request { key, .. } => Some(key),
                _ => None,
            })
            .expect("update");
        let evs = h.bs[0]
            .respond(&b_id, &key, 200, MsgOpts::default(), h.now)
            .expect("200");
        h.run(Side::B(0), evs);
        let evs = h.bs[0]
            .request(&b_id, Method::Invite, sdp("hold"), h.now)
            .expect("re");
        h.run(Side::B(0), evs);
        let evs = h.a.bye(&a_id, h.now).expect("bye");
        h.run(Side::A, evs);
        let messages: Vec<SipMessage> = h.wire.iter().map(|(_, m)| m.clone()).collect();
        assert!(messages.len() > 10);

        let mut variants = Vec::new();
        for m in &messages {
            for i in 0..m.headers().0.len() {
                let mut removed = m.clone();
                removed.headers_mut().0.remove(i);
                variants.push(removed);
                for garbage in ["", "garbage;;<>", "4294967296 INVITE", "sip:x;tag=", "1"] {
                    let mut g = m.clone();
                    g.headers_mut().0[i].value = garbage.to_owned();
                    variants.push(g);
                }
            }
        }
        let far = h.now + Duration::from_secs(7200);
        for (a, b) in [&early, &confirmed] {
            for v in &variants {
                for mut set in [a.clone(), b.clone()] {
                    let now = h.now;
                    match v.clone() {
                        SipMessage::Request(r) if r.method == Method::Ack => {
                            let _ = set.on_ack(r, now);
                        }
                        SipMessage::Request(r) => {
                            let key = TxKey::server(&r).unwrap_or(TxKey {
                                branch: "z9hG4bKx".into(),
                                sent_by: String::new(),
                                method: r.method.clone(),
                                is_server: true,
                            });
                            if set
                                .on_request(key.clone(), r.clone(), peer_ba(), now)
                                .is_err()
                            {
                                let _ = set.accept_invite(&key, &r, peer_ba(), B_CONTACT);
                            }
                        }
                        SipMessage::Response(r) => {
                            let key = TxKey::for_response(&r);
                            let _ = set.on_response(key, r.clone(), now);
                            let _ = set.on_response(None, r, now);
                        }
                    }
                    let _ = set.on_timer(now + T1 * 64);
                    let _ = set.on_timer(far);
                }
            }
        }
    }
}
