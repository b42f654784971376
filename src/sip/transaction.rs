//! The RFC 3261 section 17 transaction layer with the RFC 6026 fixes, sans-IO.
//!
//! Owns: matching requests and responses to transactions (17.1.3, 17.2.3, and 9.2 for
//! CANCEL), the four state machines (INVITE/non-INVITE, client/server) including the
//! RFC 6026 "Accepted" states, every timer A to M in one ordered queue, retransmissions,
//! the ACK for non-2xx final responses (17.1.1.3), the 100 Trying of an INVITE server
//! transaction, and the answer to CANCEL (200 when it matches, 481 when not).
//!
//! Must not: do I/O, read a clock, sleep or spawn (time is passed in as `now`; the caller
//! sends what [`Action::Send`] asks for and calls [`TransactionLayer::on_timer`] at
//! [`TransactionLayer::next_deadline`]); know about dialogs, registrations or calls. The
//! ACK for a 2xx and retransmissions of a 2xx belong to the TU (RFC 6026): this layer
//! passes 2xx retransmissions and 2xx ACKs up and never retransmits a 2xx on its own.
//! Responses go back to the [`Peer`] the request came from; rport/received and address
//! resolution are the transport's business.
//!
//! What the TU must do: answer every [`Action::Request`] with a final response through
//! [`TransactionLayer::respond`] (a server transaction waiting for the TU has no timer),
//! and end a client INVITE transaction that is in Proceeding (no timer there either, per
//! 17.1.1.2) by CANCEL when it no longer wants to wait.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::message::{
    cseq, from_header, reason_phrase, to_header, top_via, validate_request, HeaderName, Headers,
    Method, ParseError, Request, Response, SipMessage,
};
use super::Peer;

/// The RFC 3261 branch prefix: a branch that starts with it is unique across space and time.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// Timer D for unreliable transports (17.1.1.2: at least 32 s).
const TIMER_D: Duration = Duration::from_secs(32);

/// The RFC 3261 timer values (table 4). Values are clamped to 1 ms..=1 h so that no
/// configuration can make the timer queue spin or the clock arithmetic overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate, 500 ms by default.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses, 4 s.
    pub t2: Duration,
    /// Maximum time a message stays in the network, 5 s.
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl Timers {
    fn clamped(self) -> Timers {
        let c = |d: Duration| d.clamp(Duration::from_millis(1), Duration::from_secs(3600));
        Timers {
            t1: c(self.t1),
            t2: c(self.t2),
            t4: c(self.t4),
        }
    }

    /// 64*T1: timers B, F, H, J, L and M.
    fn t1x64(&self) -> Duration {
        self.t1 * 64
    }
}

/// Identifies a transaction (RFC 3261 17.1.3 and 17.2.3).
///
/// Server transactions match on the top Via branch, its sent-by and the method (ACK
/// matches the INVITE it acknowledges, so an ACK's key has method INVITE). Client
/// transactions match on the branch and the CSeq method only, so `sent_by` is empty for
/// them. A request whose branch lacks the magic cookie (RFC 2543 peer) gets a key built
/// from Request-URI, From tag, Call-ID, CSeq number and the top Via instead; see
/// [`TxKey::server`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TxKey {
    pub branch: String,
    pub sent_by: String,
    pub method: Method,
    pub is_server: bool,
}

impl TxKey {
    /// The server transaction an incoming request belongs to; None without a usable Via.
    pub fn server(req: &Request) -> Option<TxKey> {
        let via = top_via(&req.headers).ok()?;
        let mut sent_by = via.host.to_ascii_lowercase();
        if let Some(port) = via.port {
            sent_by.push(':');
            sent_by.push_str(&port.to_string());
        }
        let method = match req.method {
            Method::Ack => Method::Invite,
            ref m => m.clone(),
        };
        let branch = match via.branch() {
            Some(b) if b.starts_with(MAGIC_COOKIE) => b.to_owned(),
            _ => {
                // RFC 2543 matching (17.2.3), approximated: the To tag of an ACK is not
                // compared with the tag of our response.
                let from_tag = from_header(&req.headers)
                    .ok()
                    .and_then(|f| f.tag().map(str::to_owned))
                    .unwrap_or_default();
                let call_id = req.headers.get(&HeaderName::CallId).unwrap_or_default();
                let seq = cseq(&req.headers).map(|c| c.0).ok()?;
                format!("rfc2543\n{}\n{from_tag}\n{call_id}\n{seq}\n{via}", req.uri)
            }
        };
        Some(TxKey {
            branch,
            sent_by,
            method,
            is_server: true,
        })
    }

    /// The client transaction a request we send creates; None without an RFC 3261 branch.
    pub fn client(req: &Request) -> Option<TxKey> {
        let via = top_via(&req.headers).ok()?;
        let branch = via.branch().filter(|b| b.starts_with(MAGIC_COOKIE))?;
        Some(TxKey {
            branch: branch.to_owned(),
            sent_by: String::new(),
            method: req.method.clone(),
            is_server: false,
        })
    }

    /// The client transaction a response belongs to (top Via branch + CSeq method).
    pub fn for_response(resp: &Response) -> Option<TxKey> {
        let via = top_via(&resp.headers).ok()?;
        let branch = via.branch()?;
        let (_, method) = cseq(&resp.headers).ok()?;
        Some(TxKey {
            branch: branch.to_owned(),
            sent_by: String::new(),
            method,
            is_server: false,
        })
    }

    fn is_invite(&self) -> bool {
        self.method == Method::Invite
    }
}

/// What the caller must do after feeding the layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this message (bytes from `msg.to_bytes()`) on this flow.
    Send { msg: SipMessage, to: Peer },
    /// A new server transaction: the TU must answer it through [`TransactionLayer::respond`].
    Request {
        key: TxKey,
        req: Request,
        from: Peer,
    },
    /// An ACK that belongs to no transaction (the ACK for a 2xx, which has its own
    /// branch), or one that matched an INVITE server transaction in Accepted (RFC 6026;
    /// only an RFC 2543 peer does that): for the dialog layer.
    Ack2xx { req: Request, from: Peer },
    /// A CANCEL matched an INVITE server transaction that has not sent a final response.
    /// The layer has answered the CANCEL with 200; the TU should answer the INVITE
    /// (`key`) with 487.
    Cancel {
        key: TxKey,
        req: Request,
        from: Peer,
    },
    /// A response for a client transaction (every 2xx retransmission too, RFC 6026).
    Response { key: TxKey, resp: Response },
    /// A response that matches no client transaction, e.g. a 2xx retransmission after
    /// Timer M: for the dialog layer, which may re-send its ACK.
    StrayResponse { resp: Response, from: Peer },
    /// Timer B or F fired on a client transaction, or Timer H on an INVITE server
    /// transaction (no ACK came for a non-2xx final response).
    Timeout { key: TxKey },
    /// The caller reported a transport failure for this transaction.
    TransportError { key: TxKey },
    /// The transaction is gone; the TU may drop per-transaction state. Also emitted for
    /// the CANCEL server transactions the layer answers itself, whose keys the TU never
    /// saw: ignore unknown keys.
    Terminated { key: TxKey },
}

/// Why [`TransactionLayer::send_request`] refused a request.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TxError {
    #[error("malformed request: {0}")]
    Invalid(#[from] ParseError),
    #[error("top Via has no RFC 3261 branch (z9hG4bK...)")]
    NoBranch,
    #[error("ACK is not a transaction: send the ACK for a 2xx directly")]
    Ack,
    #[error("a client transaction with this branch and method exists")]
    Duplicate,
}

/// Transaction states (RFC 3261 17, RFC 6026 "Accepted").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Client INVITE before any response.
    Calling,
    /// Non-INVITE (client or server) before any response.
    Trying,
    Proceeding,
    Completed,
    /// Server INVITE after the ACK for a non-2xx.
    Confirmed,
    /// INVITE (client or server) after a 2xx (RFC 6026).
    Accepted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerKind {
    A,
    B,
    D,
    E,
    F,
    G,
    H,
    I,
    J,
    K,
    L,
    M,
}

type TimerId = (Instant, u64);

#[derive(Debug)]
struct Tx {
    state: State,
    peer: Peer,
    /// Client: the request to retransmit (and to build its ACK and CANCEL from). A server
    /// transaction keeps none: it answers with `last_response`, and a copy of every
    /// received request held for Timer J would double what a busy registrar keeps.
    request: Option<Request>,
    /// Server: the last response sent, re-sent on request retransmissions and Timer G.
    last_response: Option<Response>,
    /// Client INVITE: the ACK for a non-2xx final response.
    ack: Option<Request>,
    /// Current retransmission interval for Timer A, E or G.
    interval: Duration,
    timers: Vec<(TimerKind, TimerId)>,
    /// Server INVITE: a CANCEL matched it while it was still unanswered.
    cancelled: bool,
}

impl Tx {
    fn new(state: State, peer: Peer, request: Option<Request>, t1: Duration) -> Tx {
        Tx {
            state,
            peer,
            request,
            last_response: None,
            ack: None,
            interval: t1,
            timers: Vec::new(),
            cancelled: false,
        }
    }

    fn reliable(&self) -> bool {
        self.peer.transport.is_reliable()
    }
}

/// All transactions of one SIP stack, driven by messages, TU calls and timer ticks.
#[derive(Debug)]
pub struct TransactionLayer {
    timers: Timers,
    txs: HashMap<TxKey, Tx>,
    queue: BTreeMap<TimerId, (TxKey, TimerKind)>,
    seq: u64,
}

impl TransactionLayer {
    pub fn new(timers: Timers) -> Self {
        TransactionLayer {
            timers: timers.clamped(),
            txs: HashMap::new(),
            queue: BTreeMap::new(),
            seq: 0,
        }
    }

    /// Live transactions.
    pub fn len(&self) -> usize {
        self.txs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    /// The state of a live transaction.
    pub fn state(&self, key: &TxKey) -> Option<State> {
        self.txs.get(key).map(|t| t.state)
    }

    /// Whether a CANCEL belongs here: its INVITE, or the CANCEL itself (a retransmission),
    /// is a live server transaction. An unknown CANCEL gets 481 from [`Self::on_message`].
    pub fn knows_cancel(&self, cancel: &Request) -> bool {
        let Some(key) = TxKey::server(cancel) else {
            return false;
        };
        let invite = TxKey {
            method: Method::Invite,
            ..key.clone()
        };
        self.txs.contains_key(&key) || self.txs.contains_key(&invite)
    }

    /// Whether a CANCEL matched the server INVITE `invite` before it was answered: whoever
    /// holds the INVITE then must answer 487, even if the [`Action::Cancel`] went to a
    /// task that was just handing the call on.
    pub fn was_cancelled(&self, invite: &TxKey) -> bool {
        self.txs.get(invite).is_some_and(|t| t.cancelled)
    }

    /// When [`Self::on_timer`] must next be called.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.queue.first_key_value().map(|((at, _), _)| *at)
    }

    /// An incoming message, already parsed and validated, from the flow `from`.
    #[must_use]
    pub fn on_message(&mut self, msg: SipMessage, from: Peer, now: Instant) -> Vec<Action> {
        match msg {
            SipMessage::Request(req) => self.on_request(req, from, now),
            SipMessage::Response(resp) => self.on_response(resp, from, now),
        }
    }

    /// Starts a client transaction. The caller has put a fresh [`new_branch`] in the top
    /// Via. ACK is refused: the ACK for a 2xx is sent directly by the TU.
    pub fn send_request(
        &mut self,
        req: Request,
        to: Peer,
        now: Instant,
    ) -> Result<(TxKey, Vec<Action>), TxError> {
        validate_request(&req)?;
        if req.method == Method::Ack {
            return Err(TxError::Ack);
        }
        let key = TxKey::client(&req).ok_or(TxError::NoBranch)?;
        if self.txs.contains_key(&key) {
            return Err(TxError::Duplicate);
        }
        let invite = key.is_invite();
        let state = if invite {
            State::Calling
        } else {
            State::Trying
        };
        let out = vec![Action::Send {
            msg: SipMessage::Request(req.clone()),
            to,
        }];
        self.txs
            .insert(key.clone(), Tx::new(state, to, Some(req), self.timers.t1));
        let (retransmit, timeout) = if invite {
            (TimerKind::A, TimerKind::B)
        } else {
            (TimerKind::E, TimerKind::F)
        };
        if !to.transport.is_reliable() {
            self.schedule(&key, retransmit, now + self.timers.t1);
        }
        self.schedule(&key, timeout, now + self.timers.t1x64());
        Ok((key, out))
    }

    /// The TU answers a server transaction. Ignored (nothing returned) when the
    /// transaction is gone or its state takes no response: after a final response only a
    /// 2xx to an INVITE in Accepted is sent again (the TU's 2xx retransmissions, RFC 6026).
    #[must_use]
    pub fn respond(&mut self, key: &TxKey, resp: Response, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if !key.is_server || !(100..=699).contains(&resp.status) {
            return out;
        }
        let t = self.timers;
        let Some(tx) = self.txs.get_mut(key) else {
            return out;
        };
        let status = resp.status;
        let send = Action::Send {
            msg: SipMessage::Response(resp.clone()),
            to: tx.peer,
        };
        let reliable = tx.reliable();
        if key.is_invite() {
            match tx.state {
                State::Proceeding => {
                    out.push(send);
                    tx.last_response = Some(resp);
                    if (200..300).contains(&status) {
                        tx.state = State::Accepted;
                        self.schedule(key, TimerKind::L, now + t.t1x64());
                    } else if status >= 300 {
                        tx.state = State::Completed;
                        tx.interval = t.t1;
                        if !reliable {
                            self.schedule(key, TimerKind::G, now + t.t1);
                        }
                        self.schedule(key, TimerKind::H, now + t.t1x64());
                    }
                }
                State::Accepted if (200..300).contains(&status) => out.push(send),
                _ => {}
            }
        } else if matches!(tx.state, State::Trying | State::Proceeding) {
            out.push(send);
            tx.last_response = Some(resp);
            if status < 200 {
                tx.state = State::Proceeding;
            } else {
                tx.state = State::Completed;
                if reliable {
                    self.terminate(key, &mut out);
                } else {
                    self.schedule(key, TimerKind::J, now + t.t1x64());
                }
            }
        }
        out
    }

    /// The TU answers a non-INVITE server transaction with a final response and keeps
    /// nothing: the transaction ends as the response goes (RFC 3261 8.2.7, a stateless
    /// UAS, as for a challenge to an unauthenticated request). A retransmission of the
    /// request then starts a new transaction and the TU answers it anew (a fresh
    /// challenge), instead of this layer holding the answer for Timer J (32 s over UDP):
    /// at thousands of REGISTERs a second that is most of a registrar's memory. Anything
    /// else (an INVITE, a provisional response) is answered as [`Self::respond`] does.
    #[must_use]
    pub fn respond_stateless(&mut self, key: &TxKey, resp: Response, now: Instant) -> Vec<Action> {
        let stateless = key.is_server
            && !key.is_invite()
            && resp.status >= 200
            && self
                .txs
                .get(key)
                .is_some_and(|tx| matches!(tx.state, State::Trying | State::Proceeding));
        if !stateless {
            return self.respond(key, resp, now);
        }
        let mut out = Vec::new();
        if let Some(tx) = self.txs.get(key) {
            out.push(Action::Send {
                msg: SipMessage::Response(resp),
                to: tx.peer,
            });
        }
        self.terminate(key, &mut out);
        out
    }

    /// Processes every timer due at or before `now`.
    #[must_use]
    pub fn on_timer(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        while let Some((&id, _)) = self.queue.first_key_value() {
            if id.0 > now {
                break;
            }
            let Some((key, kind)) = self.queue.remove(&id) else {
                break;
            };
            if let Some(tx) = self.txs.get_mut(&key) {
                tx.timers.retain(|(_, i)| *i != id);
            }
            self.fire(&key, kind, now, &mut out);
        }
        out
    }

    /// The caller could not send a message of this transaction at `now`: it ends, the TU
    /// is told. (The end is immediate whatever the time; `now` is taken like every other
    /// input's so the layer never needs a clock of its own.)
    #[must_use]
    pub fn transport_error(&mut self, key: &TxKey, _now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.txs.contains_key(key) {
            out.push(Action::TransportError { key: key.clone() });
            self.terminate(key, &mut out);
        }
        out
    }

    /// Builds the CANCEL for a client INVITE transaction that has no final response yet
    /// (RFC 3261 9.1): same Request-URI, Call-ID, From, To, CSeq number and top Via
    /// (hence branch), and the Route of the INVITE. Send it with [`Self::send_request`].
    /// 9.1 asks not to send it before a provisional response arrived
    /// ([`State::Proceeding`]); that waiting is left to the TU.
    pub fn build_cancel(&self, key: &TxKey) -> Option<Request> {
        if key.is_server || !key.is_invite() {
            return None;
        }
        let tx = self.txs.get(key)?;
        if !matches!(tx.state, State::Calling | State::Proceeding) {
            return None;
        }
        let inv = tx.request.as_ref()?;
        let (num, _) = cseq(&inv.headers).ok()?;
        let mut h = Headers::new();
        h.push(HeaderName::Via, inv.headers.list(&HeaderName::Via).next()?);
        h.push(
            HeaderName::MaxForwards,
            inv.headers.get(&HeaderName::MaxForwards).unwrap_or("70"),
        );
        for route in inv.headers.get_all(&HeaderName::Route) {
            h.push(HeaderName::Route, route);
        }
        for name in [HeaderName::From, HeaderName::To, HeaderName::CallId] {
            h.push(name.clone(), inv.headers.get(&name)?);
        }
        h.push(HeaderName::CSeq, format!("{num} CANCEL"));
        h.push(HeaderName::ContentLength, "0");
        Some(Request {
            method: Method::Cancel,
            uri: inv.uri.clone(),
            headers: h,
            body: Default::default(),
        })
    }

    fn on_request(&mut self, req: Request, from: Peer, now: Instant) -> Vec<Action> {
        let Some(key) = TxKey::server(&req) else {
            return Vec::new(); // no Via: nowhere to answer (the parser refuses these)
        };
        if req.method == Method::Ack {
            return self.on_ack(key, req, from, now);
        }
        if let Some(tx) = self.txs.get(&key) {
            // A retransmission.
            let resend = match tx.state {
                State::Proceeding | State::Completed => tx.last_response.clone(),
                _ => None, // Trying: absorbed; Confirmed/Accepted: absorbed
            };
            return resend
                .map(|r| Action::Send {
                    msg: SipMessage::Response(r),
                    to: tx.peer,
                })
                .into_iter()
                .collect();
        }
        if req.method == Method::Cancel {
            return self.on_new_cancel(key, req, from, now);
        }
        let mut out = Vec::new();
        if key.is_invite() {
            let trying = Response::for_request(&req, 100, reason_phrase(100));
            out.push(Action::Send {
                msg: SipMessage::Response(trying.clone()),
                to: from,
            });
            let mut tx = Tx::new(State::Proceeding, from, None, self.timers.t1);
            tx.last_response = Some(trying);
            self.txs.insert(key.clone(), tx);
        } else {
            let tx = Tx::new(State::Trying, from, None, self.timers.t1);
            self.txs.insert(key.clone(), tx);
        }
        out.push(Action::Request { key, req, from });
        out
    }

    fn on_ack(&mut self, key: TxKey, req: Request, from: Peer, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let t4 = self.timers.t4;
        match self.txs.get_mut(&key) {
            None => out.push(Action::Ack2xx { req, from }),
            Some(tx) => match tx.state {
                State::Completed => {
                    tx.state = State::Confirmed;
                    let reliable = tx.reliable();
                    self.cancel_timer(&key, TimerKind::G);
                    self.cancel_timer(&key, TimerKind::H);
                    if reliable {
                        self.terminate(&key, &mut out);
                    } else {
                        self.schedule(&key, TimerKind::I, now + t4);
                    }
                }
                // RFC 6026 7.1: an ACK matching an Accepted transaction goes to the TU.
                State::Accepted => out.push(Action::Ack2xx { req, from }),
                _ => {} // Confirmed: absorbed; Proceeding: no final response to ACK
            },
        }
        out
    }

    fn on_new_cancel(&mut self, key: TxKey, req: Request, from: Peer, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let invite_key = TxKey {
            method: Method::Invite,
            ..key.clone()
        };
        let mut cancel = None;
        let mut resp = match self.txs.get_mut(&invite_key) {
            Some(inv) => {
                let mut resp = Response::for_request(&req, 200, reason_phrase(200));
                // 9.2: the To tag SHOULD be that of the response to the INVITE.
                if let Some(tag) = inv
                    .last_response
                    .as_ref()
                    .and_then(|r| to_header(&r.headers).ok())
                    .and_then(|n| n.tag().map(str::to_owned))
                {
                    resp.ensure_to_tag(&tag);
                }
                if inv.state == State::Proceeding {
                    inv.cancelled = true;
                    cancel = Some(Action::Cancel {
                        key: invite_key,
                        req: req.clone(),
                        from,
                    });
                }
                resp
            }
            None => Response::for_request(&req, 481, reason_phrase(481)),
        };
        resp.ensure_to_tag(&derived_tag(&key));
        out.push(Action::Send {
            msg: SipMessage::Response(resp.clone()),
            to: from,
        });
        out.extend(cancel);
        let mut tx = Tx::new(State::Completed, from, None, self.timers.t1);
        tx.last_response = Some(resp);
        let reliable = tx.reliable();
        self.txs.insert(key.clone(), tx);
        if reliable {
            self.terminate(&key, &mut out);
        } else {
            self.schedule(&key, TimerKind::J, now + self.timers.t1x64());
        }
        out
    }

    fn on_response(&mut self, resp: Response, from: Peer, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let key = TxKey::for_response(&resp);
        let Some((key, tx)) = key.and_then(|k| self.txs.get_mut(&k).map(|tx| (k, tx))) else {
            out.push(Action::StrayResponse { resp, from });
            return out;
        };
        let t = self.timers;
        let status = resp.status;
        let reliable = tx.reliable();
        if key.is_invite() {
            match tx.state {
                State::Calling | State::Proceeding => {
                    if status < 200 {
                        tx.state = State::Proceeding;
                        out.push(Action::Response {
                            key: key.clone(),
                            resp,
                        });
                        self.cancel_timer(&key, TimerKind::A);
                        self.cancel_timer(&key, TimerKind::B);
                    } else if status < 300 {
                        tx.state = State::Accepted;
                        out.push(Action::Response {
                            key: key.clone(),
                            resp,
                        });
                        self.cancel_timer(&key, TimerKind::A);
                        self.cancel_timer(&key, TimerKind::B);
                        self.schedule(&key, TimerKind::M, now + t.t1x64());
                    } else {
                        tx.state = State::Completed;
                        if let Some(invite) = &tx.request {
                            let ack = build_ack(invite, &resp);
                            out.push(Action::Send {
                                msg: SipMessage::Request(ack.clone()),
                                to: tx.peer,
                            });
                            tx.ack = Some(ack);
                        }
                        out.push(Action::Response {
                            key: key.clone(),
                            resp,
                        });
                        self.cancel_timer(&key, TimerKind::A);
                        self.cancel_timer(&key, TimerKind::B);
                        if reliable {
                            self.terminate(&key, &mut out);
                        } else {
                            self.schedule(&key, TimerKind::D, now + TIMER_D);
                        }
                    }
                }
                State::Completed if status >= 300 => {
                    if let Some(ack) = &tx.ack {
                        out.push(Action::Send {
                            msg: SipMessage::Request(ack.clone()),
                            to: tx.peer,
                        });
                    }
                }
                State::Accepted if (200..300).contains(&status) => {
                    out.push(Action::Response { key, resp });
                }
                _ => {}
            }
        } else if matches!(tx.state, State::Trying | State::Proceeding) {
            out.push(Action::Response {
                key: key.clone(),
                resp,
            });
            if status < 200 {
                tx.state = State::Proceeding;
            } else {
                tx.state = State::Completed;
                self.cancel_timer(&key, TimerKind::E);
                self.cancel_timer(&key, TimerKind::F);
                if reliable {
                    self.terminate(&key, &mut out);
                } else {
                    self.schedule(&key, TimerKind::K, now + t.t4);
                }
            }
        }
        out
    }

    fn fire(&mut self, key: &TxKey, kind: TimerKind, now: Instant, out: &mut Vec<Action>) {
        let t = self.timers;
        let Some(tx) = self.txs.get_mut(key) else {
            return;
        };
        match (kind, tx.state) {
            (TimerKind::A, State::Calling) => {
                out.extend(tx.request.clone().map(|r| Action::Send {
                    msg: SipMessage::Request(r),
                    to: tx.peer,
                }));
                tx.interval = tx.interval.saturating_mul(2);
                let at = now + tx.interval;
                self.schedule(key, TimerKind::A, at);
            }
            (TimerKind::E, State::Trying | State::Proceeding) => {
                out.extend(tx.request.clone().map(|r| Action::Send {
                    msg: SipMessage::Request(r),
                    to: tx.peer,
                }));
                tx.interval = if tx.state == State::Trying {
                    (tx.interval.saturating_mul(2)).min(t.t2)
                } else {
                    t.t2
                };
                let at = now + tx.interval;
                self.schedule(key, TimerKind::E, at);
            }
            (TimerKind::G, State::Completed) => {
                if let Some(r) = &tx.last_response {
                    out.push(Action::Send {
                        msg: SipMessage::Response(r.clone()),
                        to: tx.peer,
                    });
                }
                tx.interval = (tx.interval.saturating_mul(2)).min(t.t2);
                let at = now + tx.interval;
                self.schedule(key, TimerKind::G, at);
            }
            (TimerKind::B, State::Calling)
            | (TimerKind::F, State::Trying | State::Proceeding)
            | (TimerKind::H, State::Completed) => {
                out.push(Action::Timeout { key: key.clone() });
                self.terminate(key, out);
            }
            (TimerKind::D, State::Completed)
            | (TimerKind::I, State::Confirmed)
            | (TimerKind::J, State::Completed)
            | (TimerKind::K, State::Completed)
            | (TimerKind::L, State::Accepted)
            | (TimerKind::M, State::Accepted) => self.terminate(key, out),
            _ => {} // cannot happen: timers are cancelled when they stop applying
        }
    }

    fn schedule(&mut self, key: &TxKey, kind: TimerKind, at: Instant) {
        if let Some(tx) = self.txs.get_mut(key) {
            let id = (at, self.seq);
            self.seq += 1;
            tx.timers.push((kind, id));
            self.queue.insert(id, (key.clone(), kind));
        }
    }

    fn cancel_timer(&mut self, key: &TxKey, kind: TimerKind) {
        if let Some(tx) = self.txs.get_mut(key) {
            let queue = &mut self.queue;
            tx.timers.retain(|(k, id)| {
                if *k == kind {
                    queue.remove(id);
                    false
                } else {
                    true
                }
            });
        }
    }

    fn terminate(&mut self, key: &TxKey, out: &mut Vec<Action>) {
        if let Some(tx) = self.txs.remove(key) {
            for (_, id) in tx.timers {
                self.queue.remove(&id);
            }
            out.push(Action::Terminated { key: key.clone() });
        }
    }
}

/// A fresh RFC 3261 branch: the magic cookie and 16 random alphanumerics.
pub fn new_branch<R: rand::Rng + ?Sized>(rng: &mut R) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut b = String::with_capacity(MAGIC_COOKIE.len() + 16);
    b.push_str(MAGIC_COOKIE);
    for _ in 0..16 {
        b.push(char::from(CHARS[rng.gen_range(0..CHARS.len())]));
    }
    b
}

/// A To tag for the layer's own CANCEL answers when the INVITE has none yet: stable per
/// transaction so a retransmitted CANCEL gets the same answer.
fn derived_tag(key: &TxKey) -> String {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    format!("rf{:016x}", h.finish())
}

/// The ACK for a non-2xx final response (RFC 3261 17.1.1.3).
fn build_ack(inv: &Request, resp: &Response) -> Request {
    let mut h = Headers::new();
    if let Some(via) = inv.headers.list(&HeaderName::Via).next() {
        h.push(HeaderName::Via, via);
    }
    h.push(
        HeaderName::MaxForwards,
        inv.headers.get(&HeaderName::MaxForwards).unwrap_or("70"),
    );
    for route in inv.headers.get_all(&HeaderName::Route) {
        h.push(HeaderName::Route, route);
    }
    for name in [HeaderName::From, HeaderName::CallId] {
        if let Some(v) = inv.headers.get(&name) {
            h.push(name.clone(), v);
        }
    }
    if let Some(to) = resp
        .headers
        .get(&HeaderName::To)
        .or_else(|| inv.headers.get(&HeaderName::To))
    {
        h.push(HeaderName::To, to);
    }
    let num = cseq(&inv.headers).map(|c| c.0).unwrap_or(0);
    h.push(HeaderName::CSeq, format!("{num} ACK"));
    h.push(HeaderName::ContentLength, "0");
    Request {
        method: Method::Ack,
        uri: inv.uri.clone(),
        headers: h,
        body: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{parse, NameAddr};
    use crate::sip::{ConnId, Transport};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::cell::RefCell;
    use std::net::SocketAddr;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    /// How the server sees the client (and where the client sends from).
    fn client_peer(transport: Transport) -> Peer {
        Peer {
            transport,
            remote: addr("10.0.0.2:5060"),
            local: addr("10.0.0.1:5060"),
            conn: transport.is_reliable().then_some(ConnId(1)),
        }
    }

    /// How the client sees the server.
    fn server_peer(transport: Transport) -> Peer {
        Peer {
            transport,
            remote: addr("10.0.0.1:5060"),
            local: addr("10.0.0.2:5060"),
            conn: transport.is_reliable().then_some(ConnId(1)),
        }
    }

    /// A parsed test request (memoized: the random test asks for the same few often).
    fn request(method: &str, branch: &str, transport: Transport) -> Request {
        thread_local! {
            static CACHE: RefCell<HashMap<(String, String, Transport), Request>> =
                RefCell::new(HashMap::new());
        }
        CACHE.with(|c| {
            c.borrow_mut()
                .entry((method.to_owned(), branch.to_owned(), transport))
                .or_insert_with(|| parse_request(method, branch, transport))
                .clone()
        })
    }

    fn parse_request(method: &str, branch: &str, transport: Transport) -> Request {
        let text = format!(
            "{method} sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/{} 10.0.0.2:5060;branch={branch};rport\r\n\
Max-Forwards: 69\r\n\
Route: <sip:p1.example.com;lr>\r\n\
Route: <sip:p2.example.com;lr>\r\n\
From: Alice <sip:alice@example.com>;tag=a1\r\n\
To: Bob <sip:bob@example.com>\r\n\
Call-ID: call-1@10.0.0.2\r\n\
CSeq: 7 {method}\r\n\
Contact: <sip:alice@10.0.0.2:5060>\r\n\
Content-Length: 0\r\n\r\n",
            transport.via_name()
        );
        match parse(text.as_bytes()).expect("test request parses") {
            SipMessage::Request(r) => r,
            SipMessage::Response(_) => panic!("not a request"),
        }
    }

    fn response(req: &Request, status: u16) -> Response {
        let mut r = Response::for_request(req, status, reason_phrase(status));
        if status > 100 {
            r.ensure_to_tag("b2");
        }
        r
    }

    fn sent(actions: &[Action]) -> Vec<&SipMessage> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { msg, .. } => Some(msg),
                _ => None,
            })
            .collect()
    }

    fn sent_statuses(actions: &[Action]) -> Vec<u16> {
        sent(actions)
            .into_iter()
            .filter_map(|m| match m {
                SipMessage::Response(r) => Some(r.status),
                SipMessage::Request(_) => None,
            })
            .collect()
    }

    fn has_terminated(actions: &[Action]) -> bool {
        actions
            .iter()
            .any(|a| matches!(a, Action::Terminated { .. }))
    }

    /// Fires every timer up to `end` at its exact deadline; returns (offset, actions).
    fn run_timers(
        l: &mut TransactionLayer,
        t0: Instant,
        end: Duration,
    ) -> Vec<(Duration, Vec<Action>)> {
        let mut out = Vec::new();
        while let Some(d) = l.next_deadline().filter(|d| *d <= t0 + end) {
            let acts = l.on_timer(d);
            out.push((d - t0, acts));
        }
        out
    }

    fn resend_instants(events: &[(Duration, Vec<Action>)]) -> Vec<Duration> {
        events
            .iter()
            .filter(|(_, a)| !sent(a).is_empty())
            .map(|(d, _)| *d)
            .collect()
    }

    fn timeout_at(events: &[(Duration, Vec<Action>)]) -> Option<Duration> {
        events
            .iter()
            .find(|(_, a)| a.iter().any(|x| matches!(x, Action::Timeout { .. })))
            .map(|(d, _)| *d)
    }

    fn layer() -> TransactionLayer {
        TransactionLayer::new(Timers::default())
    }

    #[test]
    fn client_invite_udp_timer_a_then_b() {
        let t0 = Instant::now();
        let mut l = layer();
        let inv = request("INVITE", "z9hG4bKa", Transport::Udp);
        let (key, acts) = l
            .send_request(inv.clone(), server_peer(Transport::Udp), t0)
            .expect("send");
        assert_eq!(sent(&acts), vec![&SipMessage::Request(inv)]);
        assert_eq!(l.state(&key), Some(State::Calling));
        let ev = run_timers(&mut l, t0, secs(100.0));
        assert_eq!(
            resend_instants(&ev),
            [0.5, 1.5, 3.5, 7.5, 15.5, 31.5].map(secs)
        );
        assert_eq!(timeout_at(&ev), Some(secs(32.0)));
        assert!(has_terminated(&ev.last().expect("events").1));
        assert_eq!(l.len(), 0);
        assert_eq!(l.next_deadline(), None);
    }

    /// A stateless answer to a non-INVITE (a challenge) ends the transaction at once: no
    /// timer, nothing kept; the request's retransmission is a new request for the TU. An
    /// INVITE, or a provisional answer, is answered statefully as `respond` does.
    #[test]
    fn a_stateless_answer_keeps_nothing_and_a_retransmission_is_asked_again() {
        let t0 = Instant::now();
        let mut l = layer();
        let from = server_peer(Transport::Udp);
        let reg = request("REGISTER", "z9hG4bKs", Transport::Udp);
        let acts = l.on_message(reg.clone().into(), from, t0);
        let Some(Action::Request { key, .. }) = acts.first().cloned() else {
            panic!("a new request: {acts:?}");
        };
        let challenge = response(&reg, 401);
        let acts = l.respond_stateless(&key, challenge.clone(), t0);
        assert_eq!(
            acts,
            vec![
                Action::Send {
                    msg: challenge.into(),
                    to: from
                },
                Action::Terminated { key: key.clone() }
            ]
        );
        assert!(l.is_empty());
        assert_eq!(l.next_deadline(), None);
        let acts = l.on_message(reg.clone().into(), from, t0 + secs(0.5));
        assert!(
            matches!(&acts[..], [Action::Request { key: k, .. }] if *k == key),
            "{acts:?}"
        );
        // A provisional answer is no end: the transaction stays, and the final one after
        // it may still be stateless.
        let trying = response(&reg, 100);
        assert_eq!(sent(&l.respond_stateless(&key, trying, t0)).len(), 1);
        assert_eq!(l.state(&key), Some(State::Proceeding));
        let acts = l.respond_stateless(&key, response(&reg, 401), t0);
        assert!(has_terminated(&acts));
        assert!(l.is_empty());
        // An INVITE's final answer is stateful (it waits for its ACK, Timer G/H).
        let inv = request("INVITE", "z9hG4bKi", Transport::Udp);
        let acts = l.on_message(inv.clone().into(), from, t0);
        let Some(Action::Request { key, .. }) = acts.into_iter().nth(1) else {
            panic!("a new INVITE");
        };
        let acts = l.respond_stateless(&key, response(&inv, 407), t0);
        assert_eq!(sent(&acts).len(), 1);
        assert_eq!(l.state(&key), Some(State::Completed));
        assert_eq!(l.next_deadline(), Some(t0 + secs(0.5)));
    }

    #[test]
    fn late_timer_tick_does_not_burst() {
        // A caller that ticks late gets one retransmission, not the whole backlog, and
        // timers due in the same tick run in deadline order (A before B).
        let t0 = Instant::now();
        let mut l = layer();
        let inv = request("INVITE", "z9hG4bKa", Transport::Udp);
        let (key, _) = l
            .send_request(inv, server_peer(Transport::Udp), t0)
            .expect("send");
        assert!(l.on_timer(t0 + secs(0.4)).is_empty());
        let acts = l.on_timer(t0 + secs(40.0));
        assert_eq!(sent(&acts).len(), 1);
        assert_eq!(
            acts[1..],
            [
                Action::Timeout { key: key.clone() },
                Action::Terminated { key: key.clone() }
            ]
        );
        assert!(l.is_empty());
        assert_eq!(l.next_deadline(), None);
        // Answers on unknown or client keys are ignored.
        assert!(l
            .respond(
                &key,
                response(&request("INVITE", "z9hG4bKa", Transport::Udp), 200),
                t0
            )
            .is_empty());
    }

    #[test]
    fn client_invite_tcp_no_retransmits_b_only() {
        let t0 = Instant::now();
        let mut l = layer();
        let inv = request("INVITE", "z9hG4bKa", Transport::Tcp);
        l.send_request(inv, server_peer(Transport::Tcp), t0)
            .expect("send");
        let ev = run_timers(&mut l, t0, secs(100.0));
        assert!(resend_instants(&ev).is_empty());
        assert_eq!(timeout_at(&ev), Some(secs(32.0)));
        assert!(l.is_empty());
    }

    #[test]
    fn client_non_invite_e_capped_at_t2_then_f() {
        let t0 = Instant::now();
        let mut l = layer();
        let reg = request("REGISTER", "z9hG4bKr", Transport::Udp);
        l.send_request(reg, server_peer(Transport::Udp), t0)
            .expect("send");
        let ev = run_timers(&mut l, t0, secs(100.0));
        assert_eq!(
            resend_instants(&ev),
            [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5].map(secs)
        );
        assert_eq!(timeout_at(&ev), Some(secs(32.0)));
        assert!(l.is_empty());

        // Over TCP: no E, F still applies.
        let reg = request("OPTIONS", "z9hG4bKo", Transport::Tcp);
        l.send_request(reg, server_peer(Transport::Tcp), t0)
            .expect("send");
        let ev = run_timers(&mut l, t0, secs(100.0));
        assert!(resend_instants(&ev).is_empty());
        assert_eq!(timeout_at(&ev), Some(secs(32.0)));
        assert!(l.is_empty());
    }

    #[test]
    fn provisional_moves_non_invite_to_t2_intervals() {
        let t0 = Instant::now();
        let mut l = layer();
        let reg = request("REGISTER", "z9hG4bKr", Transport::Udp);
        let (key, _) = l
            .send_request(reg.clone(), server_peer(Transport::Udp), t0)
            .expect("send");
        let ev = run_timers(&mut l, t0, secs(0.6));
        assert_eq!(resend_instants(&ev), vec![secs(0.5)]);
        let acts = l.on_message(
            response(&reg, 100).into(),
            server_peer(Transport::Udp),
            t0 + secs(0.7),
        );
        assert!(
            matches!(&acts[..], [Action::Response { key: k, resp }] if *k == key && resp.status == 100)
        );
        assert_eq!(l.state(&key), Some(State::Proceeding));
        let ev = run_timers(&mut l, t0, secs(20.0));
        // The E scheduled in Trying still fires at 1.5; then every T2.
        assert_eq!(resend_instants(&ev), [1.5, 5.5, 9.5, 13.5, 17.5].map(secs));
        // The final response completes it; K = T4 later it is gone; no more sends.
        let acts = l.on_message(
            response(&reg, 200).into(),
            server_peer(Transport::Udp),
            t0 + secs(20.0),
        );
        assert!(matches!(&acts[..], [Action::Response { resp, .. }] if resp.status == 200));
        assert_eq!(l.state(&key), Some(State::Completed));
        // A retransmitted 200 is absorbed.
        let acts = l.on_message(
            response(&reg, 200).into(),
            server_peer(Transport::Udp),
            t0 + secs(21.0),
        );
        assert!(acts.is_empty());
        let ev = run_timers(&mut l, t0, secs(100.0));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].0, secs(25.0));
        assert!(has_terminated(&ev[0].1));
        assert!(l.is_empty());
    }

    #[test]
    fn client_invite_error_acked_by_layer() {
        let t0 = Instant::now();
        let mut l = layer();
        let inv = request("INVITE", "z9hG4bKa", Transport::Udp);
        let to = server_peer(Transport::Udp);
        let (key, _) = l.send_request(inv.clone(), to, t0).expect("send");
        let acts = l.on_message(response(&inv, 180).into(), to, t0 + secs(0.2));
        assert!(matches!(&acts[..], [Action::Response { resp, .. }] if resp.status == 180));
        // Proceeding: Timer A and B stopped.
        assert_eq!(l.next_deadline(), None);

        let busy = response(&inv, 486);
        let acts = l.on_message(busy.clone().into(), to, t0 + secs(3.0));
        let [Action::Send {
            msg: SipMessage::Request(ack),
            to: ack_to,
        }, Action::Response { key: k, resp }] = &acts[..]
        else {
            panic!("expected ACK then response, got {acts:?}")
        };
        assert_eq!(*k, key);
        assert_eq!(resp.status, 486);
        assert_eq!(*ack_to, to);
        assert_eq!(ack.method, Method::Ack);
        assert_eq!(ack.uri, inv.uri);
        let via = top_via(&ack.headers).expect("via");
        assert_eq!(via.branch(), Some("z9hG4bKa"));
        assert_eq!(ack.headers.count(&HeaderName::Via), 1);
        assert_eq!(
            ack.headers.get(&HeaderName::CallId),
            inv.headers.get(&HeaderName::CallId)
        );
        assert_eq!(
            ack.headers.get(&HeaderName::From),
            inv.headers.get(&HeaderName::From)
        );
        let to_hdr = NameAddr::parse(ack.headers.get(&HeaderName::To).expect("to")).expect("to");
        assert_eq!(to_hdr.tag(), Some("b2"));
        assert_eq!(cseq(&ack.headers).expect("cseq"), (7, Method::Ack));
        let routes: Vec<_> = ack.headers.list(&HeaderName::Route).collect();
        assert_eq!(
            routes,
            ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
        );
        // The ACK is a valid request on the wire.
        let reparsed = parse(&SipMessage::Request(ack.clone()).to_bytes()).expect("ack parses");
        assert_eq!(reparsed, SipMessage::Request(ack.clone()));

        // A retransmitted 486: ACK again, nothing to the TU.
        let acts = l.on_message(busy.into(), to, t0 + secs(4.0));
        assert_eq!(sent(&acts), vec![&SipMessage::Request(ack.clone())]);
        assert_eq!(acts.len(), 1);
        // Timer D: 32 s after the first 486.
        let ev = run_timers(&mut l, t0, secs(100.0));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].0, secs(35.0));
        assert!(has_terminated(&ev[0].1));
        assert!(l.is_empty());

        // Over TCP, D = 0: terminated with the response.
        let inv = request("INVITE", "z9hG4bKt", Transport::Tcp);
        let to = server_peer(Transport::Tcp);
        l.send_request(inv.clone(), to, t0).expect("send");
        let acts = l.on_message(response(&inv, 603).into(), to, t0 + secs(1.0));
        assert_eq!(sent(&acts).len(), 1);
        assert!(has_terminated(&acts));
        assert!(l.is_empty());
        assert_eq!(l.next_deadline(), None);
    }

    #[test]
    fn client_invite_2xx_accepted_passes_retransmissions() {
        let t0 = Instant::now();
        let mut l = layer();
        let inv = request("INVITE", "z9hG4bKa", Transport::Udp);
        let to = server_peer(Transport::Udp);
        let (key, _) = l.send_request(inv.clone(), to, t0).expect("send");
        let ok = response(&inv, 200);
        let acts = l.on_message(ok.clone().into(), to, t0 + secs(1.0));
        assert!(matches!(&acts[..], [Action::Response { resp, .. }] if resp.status == 200));
        assert!(sent(&acts).is_empty(), "no ACK for a 2xx from the layer");
        assert_eq!(l.state(&key), Some(State::Accepted));
        for i in 2..5 {
            let acts = l.on_message(ok.clone().into(), to, t0 + secs(i as f64));
            assert!(matches!(&acts[..], [Action::Response { key: k, .. }] if *k == key));
        }
        // No retransmission of the INVITE after the 2xx; M at 1 + 32 s.
        let ev = run_timers(&mut l, t0, secs(100.0));
        assert!(resend_instants(&ev).is_empty());
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].0, secs(33.0));
        assert!(has_terminated(&ev[0].1));
        assert!(l.is_empty());
        // After M a 2xx is stray: the dialog layer's business.
        let acts = l.on_message(ok.into(), to, t0 + secs(40.0));
        assert!(matches!(&acts[..], [Action::StrayResponse { .. }]));
    }

    #[test]
    fn server_invite_trying_and_retransmissions() {
        let t0 = Instant::now();
        let mut l = layer();
        let from = client_peer(Transport::Udp);
        let inv = request("INVITE", "z9hG4bKs", Transport::Udp);
        let acts = l.on_message(inv.clone().into(), from, t0);
        assert_eq!(sent_statuses(&acts), vec![100]);
        let Some(Action::Request { key, req, from: f }) = acts.last() else {
            panic!("no request for the TU: {acts:?}")
        };
        assert_eq!(*req, inv);
        assert_eq!(*f, from);
        let key = key.clone();
        assert_eq!(l.state(&key), Some(State::Proceeding));
        // Retransmitted INVITE: 100 again, no new Request.
        let acts = l.on_message(inv.clone().into(), from, t0 + secs(0.5));
        assert_eq!(sent_statuses(&acts), vec![100]);
        assert_eq!(acts.len(), 1);
        // After 180 a retransmission gets the 180.
        let acts = l.respond(&key, response(&inv, 180), t0 + secs(0.6));
        assert_eq!(sent_statuses(&acts), vec![180]);
        let acts = l.on_message(inv.clone().into(), from, t0 + secs(1.5));
        assert_eq!(sent_statuses(&acts), vec![180]);
        assert!(matches!(&acts[0], Action::Send { to, .. } if *to == from));
        // No timers while waiting for the TU.
        assert_eq!(l.next_deadline(), None);
        // Finish it to check cleanup.
        let _ = l.respond(&key, response(&inv, 200), t0 + secs(2.0));
        run_timers(&mut l, t0, secs(100.0));
        assert!(l.is_empty());
    }

    #[test]
    fn server_invite_error_g_until_ack_then_confirmed() {
        let t0 = Instant::now();
        let mut l = layer();
        let from = client_peer(Transport::Udp);
        let inv = request("INVITE", "z9hG4bKs", Transport::Udp);
        let acts = l.on_message(inv.clone().into(), from, t0);
        let Some(Action::Request { key, .. }) = acts.last() else {
            panic!()
        };
        let key = key.clone();
        let busy = response(&inv, 486);
        let acts = l.respond(&key, busy.clone(), t0);
        assert_eq!(sent_statuses(&acts), vec![486]);
        assert_eq!(l.state(&key), Some(State::Completed));
        let ev = run_timers(&mut l, t0, secs(12.0));
        assert_eq!(resend_instants(&ev), [0.5, 1.5, 3.5, 7.5, 11.5].map(secs));
        // A retransmitted INVITE gets the 486.
        let acts = l.on_message(inv.clone().into(), from, t0 + secs(12.0));
        assert_eq!(sent_statuses(&acts), vec![486]);
        // The ACK stops G and H.
        let ack = build_ack(&inv, &busy);
        let acts = l.on_message(ack.clone().into(), from, t0 + secs(12.5));
        assert!(acts.is_empty());
        assert_eq!(l.state(&key), Some(State::Confirmed));
        // Confirmed absorbs ACKs and INVITEs.
        assert!(l
            .on_message(ack.clone().into(), from, t0 + secs(13.0))
            .is_empty());
        assert!(l.on_message(inv.into(), from, t0 + secs(13.0)).is_empty());
        // Timer I = T4 after the ACK.
        let ev = run_timers(&mut l, t0, secs(100.0));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].0, secs(17.5));
        assert!(has_terminated(&ev[0].1));
        assert!(l.is_empty());
        // A late ACK matches nothing and goes up.
        let acts = l.on_message(ack.into(), from, t0 + secs(20.0));
        assert!(matches!(&acts[..], [Action::Ack2xx { .. }]));
    }

    #[test]
    fn server_invite_h_timeout_without_ack() {
        let t0 = Instant::now();
        let mut l = layer();
        let from = client_peer(Transport::Udp);
        let inv = request("INVITE", "z9hG4bKs", Transport::Udp);
        let acts = l.on_message(inv.clone().into(), from, t0);
        let Some(Action::Request { key, .. }) = acts.last() else {
            panic!()
        };
        let key = key.clone();
        let _ = l.respond(&key, response(&inv, 404), t0 + secs(1.0));
        let ev = run_timers(&mut l, t0, secs(100.0));
        assert_eq!(
            resend_instants(&ev),
            [1.5, 2.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5, 32.5].map(secs)
        );
        assert_eq!(timeout_at(&ev), Some(secs(33.0)));
        assert!(l.is_empty());

        // Over TCP: no G, H still; the ACK ends it at once (I = 0).
        let from = client_peer(Transport::Tcp);
        let inv = request("INVITE", "z9hG4bKt", Transport::Tcp);
        let acts = l.on_message(inv.clone().into(), from, t0);
        let Some(Action::Request { key, .. }) = acts.last() else {
            panic!()
        };
        let key = key.clone();
        let busy = response(&inv, 486);
        let _ = l.respond(&key, busy.clone(), t0);
        assert_eq!(l.len(), 1);
        let acts = l.on_message(build_ack(&inv, &busy).into(), from, t0 + secs(0.1));
        assert!(has_terminated(&acts));
        assert!(l.is_empty());
        assert_eq!(l.next_deadline(), None);
    }

    #[test]
    fn server_invite_2xx_accepted() {
        let t0 = Instant::now();
        let mut l = layer();
        let from = client_peer(Transport::Udp);
        let inv = request("INVITE", "z9hG4bKs", Transport::Udp);
        let acts = l.on_message(inv.clone().into(), from, t0);
        let Some(Action::Request { key, .. }) = acts.last() else {
            panic!()
        };
        let key = key.clone();
        let ok = response(&inv, 200);
        assert_eq!(sent_statuses(&l.respond(&key, ok.clone(), t0)), vec![200]);
        assert_eq!(l.state(&key), Some(State::Accepted));
        // Retransmitted INVITE absorbed; the layer does not retransmit the 2xx itself.
        assert!(l
            .on_message(inv.clone().into(), from, t0 + secs(0.5))
            .is_empty());
        // The TU's 2xx retransmission goes out; other responses are refused.
        assert_eq!(
            sent_statuses(&l.respond(&key, ok.clone(), t0 + secs(0.5))),
            vec![200]
        );
        assert!(l
            .respond(&key, response(&inv, 486), t0 + secs(0.6))
            .is_empty());
        // An ACK for the 2xx (new branch) matches nothing: up to the TU.
        let ack = request("ACK", "z9hG4bKack", Transport::Udp);
        let acts = l.on_message(ack.clone().into(), from, t0 + secs(1.0));
        assert!(matches!(&acts[..], [Action::Ack2xx { req, .. }] if *req == ack));
        let ev = run_timers(&mut l, t0, secs(100.0));
        assert!(resend_instants(&ev).is_empty());
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].0, secs(32.0));
        assert!(has_terminated(&ev[0].1));
        assert!(l.is_empty());
    }

    #[test]
    fn server_non_invite_trying_proceeding_completed() {
        let t0 = Instant::now();
        let mut l = layer();
        let from = client_peer(Transport::Udp);
        let reg = request("REGISTER", "z9hG4bKr", Transport::Udp);
        let acts = l.on_message(reg.clone().into(), from, t0);
        assert!(sent(&acts).is_empty(), "no 100 for non-INVITE");
        let [Action::Request { key, .. }] = &acts[..] else {
            panic!()
        };
        let key = key.clone();
        assert_eq!(l.state(&key), Some(State::Trying));
        // Trying: retransmission absorbed.
        assert!(l
            .on_message(reg.clone().into(), from, t0 + secs(0.5))
            .is_empty());
        assert_eq!(
            sent_statuses(&l.respond(&key, response(&reg, 100), t0 + secs(0.6))),
            vec![100]
        );
        assert_eq!(
            sent_statuses(&l.on_message(reg.clone().into(), from, t0 + secs(1.5))),
            vec![100]
        );
        assert_eq!(
            sent_statuses(&l.respond(&key, response(&reg, 200), t0 + secs(2.0))),
            vec![200]
        );
        assert_eq!(
            sent_statuses(&l.on_message(reg.clone().into(), from, t0 + secs(3.5))),
            vec![200]
        );
        // A second final response is ignored.
        assert!(l
            .respond(&key, response(&reg, 500), t0 + secs(4.0))
            .is_empty());
        let ev = run_timers(&mut l, t0, secs(100.0));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].0, secs(34.0));
        assert!(has_terminated(&ev[0].1));
        assert!(l.is_empty());
        // The same request now is a new transaction.
        let acts = l.on_message(reg.into(), from, t0 + secs(40.0));
        assert!(matches!(&acts[..], [Action::Request { .. }]));

        // TCP: J = 0.
        let from = client_peer(Transport::Tcp);
        let opt = request("OPTIONS", "z9hG4bKo", Transport::Tcp);
        let acts = l.on_message(opt.clone().into(), from, t0);
        let [Action::Request { key, .. }] = &acts[..] else {
            panic!()
        };
        let key = key.clone();
        let acts = l.respond(&key, response(&opt, 200), t0);
        assert_eq!(sent_statuses(&acts), vec![200]);
        assert!(has_terminated(&acts));
        assert_eq!(l.state(&key), None);
    }

    #[test]
    fn cancel_matches_invite_and_gets_200() {
        let t0 = Instant::now();
        let mut l = layer();
        let from = client_peer(Transport::Udp);
        let inv = request("INVITE", "z9hG4bKs", Transport::Udp);
        let acts = l.on_message(inv.clone().into(), from, t0);
        let Some(Action::Request { key, .. }) = acts.last() else {
            panic!()
        };
        let key = key.clone();
        let _ = l.respond(&key, response(&inv, 180), t0);
        assert!(!l.was_cancelled(&key));
        let cancel = request("CANCEL", "z9hG4bKs", Transport::Udp);
        let acts = l.on_message(cancel.clone().into(), from, t0 + secs(1.0));
        assert!(
            l.was_cancelled(&key),
            "remembered for whoever answers the INVITE"
        );
        let [Action::Send {
            msg: SipMessage::Response(ok),
            to,
        }, Action::Cancel {
            key: k,
            req,
            from: f,
        }] = &acts[..]
        else {
            panic!("expected 200 and Cancel: {acts:?}")
        };
        assert_eq!(ok.status, 200);
        assert_eq!(cseq(&ok.headers).expect("cseq").1, Method::Cancel);
        let tag = to_header(&ok.headers).expect("to").tag().map(str::to_owned);
        assert_eq!(tag.as_deref(), Some("b2"), "same To tag as the 180");
        assert_eq!(*to, from);
        assert_eq!(*k, key);
        assert_eq!(*req, cancel);
        assert_eq!(*f, from);
        // CANCEL retransmission: the same 200, no second Cancel.
        let acts = l.on_message(cancel.clone().into(), from, t0 + secs(1.5));
        assert_eq!(sent_statuses(&acts), vec![200]);
        assert_eq!(acts.len(), 1);
        // The TU ends the INVITE with 487; the ACK confirms.
        let term = response(&inv, 487);
        assert_eq!(
            sent_statuses(&l.respond(&key, term.clone(), t0 + secs(1.5))),
            vec![487]
        );
        let _ = l.on_message(build_ack(&inv, &term).into(), from, t0 + secs(1.6));
        assert_eq!(l.len(), 2, "INVITE in Confirmed, CANCEL in Completed");
        run_timers(&mut l, t0, secs(100.0));
        assert!(l.is_empty());
    }

    #[test]
    fn cancel_after_final_and_unmatched() {
        let t0 = Instant::now();
        let mut l = layer();
        let from = client_peer(Transport::Udp);
        // Unmatched: 481, with a To tag, retransmission gets the same answer.
        let cancel = request("CANCEL", "z9hG4bKnone", Transport::Udp);
        assert!(!l.knows_cancel(&cancel));
        let acts = l.on_message(cancel.clone().into(), from, t0);
        assert!(l.knows_cancel(&cancel), "its own retransmission");
        let [Action::Send {
            msg: SipMessage::Response(r),
            ..
        }] = &acts[..]
        else {
            panic!("{acts:?}")
        };
        assert_eq!(r.status, 481);
        assert!(to_header(&r.headers).expect("to").tag().is_some());
        let again = l.on_message(cancel.into(), from, t0 + secs(0.5));
        assert_eq!(sent(&again), sent(&acts));

        // Matched but final already sent: 200, no Cancel.
        let inv = request("INVITE", "z9hG4bKs", Transport::Udp);
        let acts = l.on_message(inv.clone().into(), from, t0);
        let Some(Action::Request { key, .. }) = acts.last() else {
            panic!()
        };
        let key = key.clone();
        let cancel = request("CANCEL", "z9hG4bKs", Transport::Udp);
        assert!(l.knows_cancel(&cancel), "its INVITE is live");
        let _ = l.respond(&key, response(&inv, 200), t0);
        assert!(!l.was_cancelled(&key), "answered before the CANCEL came");
        let acts = l.on_message(cancel.into(), from, t0 + secs(1.0));
        assert_eq!(sent_statuses(&acts), vec![200]);
        assert_eq!(acts.len(), 1);
        run_timers(&mut l, t0, secs(100.0));
        assert!(l.is_empty());

        // Over TCP the CANCEL transaction ends at once.
        let cancel = request("CANCEL", "z9hG4bKx", Transport::Tcp);
        let acts = l.on_message(cancel.into(), client_peer(Transport::Tcp), t0);
        assert_eq!(sent_statuses(&acts), vec![481]);
        assert!(l.is_empty());
    }

    #[test]
    fn build_cancel_copies_9_1_headers() {
        let t0 = Instant::now();
        let mut l = layer();
        let inv = request("INVITE", "z9hG4bKa", Transport::Udp);
        let to = server_peer(Transport::Udp);
        let (key, _) = l.send_request(inv.clone(), to, t0).expect("send");
        let _ = l.on_message(response(&inv, 180).into(), to, t0);
        let cancel = l.build_cancel(&key).expect("cancel");
        assert_eq!(cancel.method, Method::Cancel);
        assert_eq!(cancel.uri, inv.uri);
        assert_eq!(cseq(&cancel.headers).expect("cseq"), (7, Method::Cancel));
        assert_eq!(
            top_via(&cancel.headers).expect("via"),
            top_via(&inv.headers).expect("via")
        );
        for h in [HeaderName::From, HeaderName::To, HeaderName::CallId] {
            assert_eq!(cancel.headers.get(&h), inv.headers.get(&h));
        }
        assert_eq!(cancel.headers.count(&HeaderName::Route), 2);
        let (ckey, acts) = l.send_request(cancel.clone(), to, t0).expect("send cancel");
        assert_eq!(ckey.method, Method::Cancel);
        assert_eq!(ckey.branch, key.branch);
        assert_eq!(sent(&acts).len(), 1);
        // The 200 to the CANCEL and the 487 go to their own transactions.
        let acts = l.on_message(response(&cancel, 200).into(), to, t0);
        assert!(matches!(&acts[..], [Action::Response { key: k, .. }] if *k == ckey));
        let acts = l.on_message(response(&inv, 487).into(), to, t0);
        assert!(matches!(&acts[1], Action::Response { key: k, .. } if *k == key));
        assert_eq!(
            l.build_cancel(&key),
            None,
            "nothing to cancel after a final"
        );
        run_timers(&mut l, t0, secs(100.0));
        assert!(l.is_empty());
    }

    #[test]
    fn send_request_refusals() {
        let t0 = Instant::now();
        let mut l = layer();
        let to = server_peer(Transport::Udp);
        assert_eq!(
            l.send_request(request("OPTIONS", "old2543", Transport::Udp), to, t0),
            Err(TxError::NoBranch)
        );
        assert_eq!(
            l.send_request(request("ACK", "z9hG4bKack", Transport::Udp), to, t0),
            Err(TxError::Ack)
        );
        let opt = request("OPTIONS", "z9hG4bKo", Transport::Udp);
        l.send_request(opt.clone(), to, t0).expect("first");
        assert_eq!(l.send_request(opt.clone(), to, t0), Err(TxError::Duplicate));
        let mut bad = opt;
        bad.headers.remove(&HeaderName::CallId);
        assert!(matches!(
            l.send_request(bad, to, t0),
            Err(TxError::Invalid(_))
        ));
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn stray_response_and_transport_error() {
        let t0 = Instant::now();
        let mut l = layer();
        let to = server_peer(Transport::Udp);
        let opt = request("OPTIONS", "z9hG4bKo", Transport::Udp);
        let acts = l.on_message(response(&opt, 200).into(), to, t0);
        assert!(matches!(&acts[..], [Action::StrayResponse { .. }]));
        // Same branch, other CSeq method: another transaction (17.1.3).
        let (key, _) = l.send_request(opt.clone(), to, t0).expect("send");
        let mut other = response(&opt, 200);
        other.headers.set(HeaderName::CSeq, "7 INFO");
        let acts = l.on_message(other.into(), to, t0);
        assert!(matches!(&acts[..], [Action::StrayResponse { .. }]));
        // No Via at all (the parser refuses these, but the layer must not rely on it).
        let mut no_via = response(&opt, 200);
        no_via.headers.remove(&HeaderName::Via);
        let acts = l.on_message(no_via.into(), to, t0);
        assert!(matches!(&acts[..], [Action::StrayResponse { .. }]));
        let acts = l.transport_error(&key, t0);
        assert_eq!(
            acts,
            vec![
                Action::TransportError { key: key.clone() },
                Action::Terminated { key: key.clone() }
            ]
        );
        assert!(l.transport_error(&key, t0).is_empty());
        assert!(l.is_empty());
        assert_eq!(l.next_deadline(), None);
    }

    #[test]
    fn rfc2543_requests_matched_without_cookie() {
        let t0 = Instant::now();
        let mut l = layer();
        let from = client_peer(Transport::Udp);
        let inv = request("INVITE", "old1", Transport::Udp);
        let acts = l.on_message(inv.clone().into(), from, t0);
        let Some(Action::Request { key, .. }) = acts.last() else {
            panic!()
        };
        let key = key.clone();
        assert_eq!(l.on_message(inv.clone().into(), from, t0).len(), 1);
        let busy = response(&inv, 486);
        let _ = l.respond(&key, busy.clone(), t0);
        let acts = l.on_message(build_ack(&inv, &busy).into(), from, t0);
        assert!(acts.is_empty());
        assert_eq!(l.state(&key), Some(State::Confirmed));
        run_timers(&mut l, t0, secs(100.0));
        assert!(l.is_empty());
    }

    #[test]
    fn new_branch_has_cookie_and_differs() {
        let mut rng = StdRng::seed_from_u64(1);
        let a = new_branch(&mut rng);
        let b = new_branch(&mut rng);
        assert!(a.starts_with(MAGIC_COOKIE) && a.len() == 23);
        assert_ne!(a, b);
    }

    /// Random inputs on one layer: never panics, and once the TU has answered what it
    /// must, everything drains.
    #[test]
    fn random_inputs_never_panic_and_drain() {
        let methods = ["INVITE", "ACK", "CANCEL", "OPTIONS", "BYE", "REGISTER"];
        let statuses = [100, 180, 200, 202, 300, 404, 486, 487, 503, 603];
        for seed in 0..200u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut l = layer();
            let t0 = Instant::now();
            let mut now = t0;
            let mut server: Vec<(TxKey, Request)> = Vec::new();
            let mut client: Vec<(TxKey, Request, Peer)> = Vec::new();
            let track = |acts: Vec<Action>,
                         server: &mut Vec<(TxKey, Request)>,
                         client: &mut Vec<(TxKey, Request, Peer)>| {
                for a in acts {
                    match a {
                        Action::Request { key, req, .. } => server.push((key, req)),
                        Action::Terminated { key } => {
                            server.retain(|(k, _)| *k != key);
                            client.retain(|(k, _, _)| *k != key);
                        }
                        _ => {}
                    }
                }
            };
            for _ in 0..150 {
                let transport = if rng.gen_bool(0.5) {
                    Transport::Udp
                } else {
                    Transport::Tcp
                };
                let method = methods[rng.gen_range(0..methods.len())];
                let status = statuses[rng.gen_range(0..statuses.len())];
                let branch = if rng.gen_bool(0.1) {
                    format!("x{}", rng.gen_range(0..3))
                } else {
                    format!("z9hG4bK{}", rng.gen_range(0..4))
                };
                let acts = match rng.gen_range(0..9) {
                    0 | 1 => l.on_message(
                        request(method, &branch, transport).into(),
                        client_peer(transport),
                        now,
                    ),
                    2 if !server.is_empty() => {
                        let (k, r) = server[rng.gen_range(0..server.len())].clone();
                        l.respond(&k, response(&r, status), now)
                    }
                    3 => {
                        let req = request(
                            method,
                            &format!("z9hG4bKc{}", rng.gen_range(0..4)),
                            transport,
                        );
                        match l.send_request(req.clone(), server_peer(transport), now) {
                            Ok((k, acts)) => {
                                client.push((k, req, server_peer(transport)));
                                acts
                            }
                            Err(_) => Vec::new(),
                        }
                    }
                    4 if !client.is_empty() => {
                        let (_, r, p) = client[rng.gen_range(0..client.len())].clone();
                        l.on_message(response(&r, status).into(), p, now)
                    }
                    5 => {
                        now += Duration::from_millis(rng.gen_range(0..6000));
                        l.on_timer(now)
                    }
                    6 => {
                        // Malformed input the parser would refuse: must not panic either.
                        let mut req = request(method, &branch, transport);
                        match rng.gen_range(0..3) {
                            0 => req.headers = Headers::new(),
                            1 => req.headers.set(HeaderName::CSeq, "x"),
                            _ => req.headers.set(HeaderName::Via, "garbage"),
                        }
                        let mut resp = response(&request(method, &branch, transport), status);
                        resp.headers.remove(&HeaderName::Via);
                        if rng.gen_bool(0.5) {
                            resp.status = rng.gen();
                        }
                        let mut a = l.on_message(req.into(), client_peer(transport), now);
                        a.extend(l.on_message(resp.clone().into(), server_peer(transport), now));
                        if let Some((k, _)) = server.first().cloned() {
                            a.extend(l.respond(&k, resp, now));
                        }
                        a
                    }
                    7 => {
                        let keys: Vec<TxKey> = server
                            .iter()
                            .map(|(k, _)| k.clone())
                            .chain(client.iter().map(|(k, _, _)| k.clone()))
                            .collect();
                        if keys.is_empty() {
                            Vec::new()
                        } else {
                            l.transport_error(&keys[rng.gen_range(0..keys.len())], now)
                        }
                    }
                    _ => l.on_timer(now),
                };
                track(acts, &mut server, &mut client);
                assert!(
                    l.next_deadline().is_none() || !l.is_empty(),
                    "a timer without a transaction"
                );
            }
            // The TU's duties: answer every server transaction, end ringing INVITEs.
            for (k, r) in server.clone() {
                let acts = l.respond(&k, response(&r, 500), now);
                track(acts, &mut server, &mut client);
            }
            for (k, r, p) in client.clone() {
                if l.state(&k) == Some(State::Proceeding) && k.method == Method::Invite {
                    let acts = l.on_message(response(&r, 487).into(), p, now);
                    track(acts, &mut server, &mut client);
                }
            }
            let mut guard = 0;
            while let Some(d) = l.next_deadline() {
                guard += 1;
                assert!(guard < 10_000, "timers do not converge (seed {seed})");
                now = now.max(d);
                let acts = l.on_timer(now);
                track(acts, &mut server, &mut client);
            }
            assert!(l.is_empty(), "seed {seed}: {} left", l.len());
            assert!(server.is_empty() && client.is_empty(), "seed {seed}");
        }
    }

    /// Two layers wired by a lossy link: side A is the client, side B the server whose
    /// TU answers every request with `answer`.
    struct Pair {
        now: Instant,
        rng: StdRng,
        loss: f64,
        latency: Duration,
        a: TransactionLayer,
        b: TransactionLayer,
        transport: Transport,
        /// (deliver at, to B?, message)
        wire: Vec<(Instant, bool, SipMessage)>,
        a_events: Vec<Action>,
        b_events: Vec<Action>,
        answer: fn(&Request) -> u16,
        sent: usize,
    }

    impl Pair {
        fn new(seed: u64, loss: f64, transport: Transport, answer: fn(&Request) -> u16) -> Pair {
            Pair {
                now: Instant::now(),
                rng: StdRng::seed_from_u64(seed),
                loss,
                latency: Duration::from_millis(30),
                a: layer(),
                b: layer(),
                transport,
                wire: Vec::new(),
                a_events: Vec::new(),
                b_events: Vec::new(),
                answer,
                sent: 0,
            }
        }

        fn route(&mut self, from_a: bool, actions: Vec<Action>) {
            for act in actions {
                match act {
                    Action::Send { msg, .. } => {
                        self.sent += 1;
                        if !self.rng.gen_bool(self.loss) {
                            // Through the wire format, as a transport would.
                            let msg = parse(&msg.to_bytes()).expect("own output parses");
                            self.wire.push((self.now + self.latency, from_a, msg));
                        }
                    }
                    Action::Request {
                        ref key, ref req, ..
                    } if !from_a => {
                        let resp = response(req, (self.answer)(req));
                        let (key, now) = (key.clone(), self.now);
                        self.b_events.push(act);
                        let acts = self.b.respond(&key, resp, now);
                        self.route(false, acts);
                    }
                    other if from_a => self.a_events.push(other),
                    other => self.b_events.push(other),
                }
            }
        }

        /// Delivers what is due and fires due timers on both sides.
        fn step(&mut self) {
            let now = self.now;
            let (due, later): (Vec<_>, Vec<_>) =
                self.wire.drain(..).partition(|(at, _, _)| *at <= now);
            self.wire = later;
            for (_, to_b, msg) in due {
                if to_b {
                    let acts = self.b.on_message(msg, client_peer(self.transport), now);
                    self.route(false, acts);
                } else {
                    let acts = self.a.on_message(msg, server_peer(self.transport), now);
                    self.route(true, acts);
                }
            }
            let acts = self.a.on_timer(now);
            self.route(true, acts);
            let acts = self.b.on_timer(now);
            self.route(false, acts);
        }

        /// Jumps to the next event; false when nothing is left.
        fn advance(&mut self) -> bool {
            let next = [
                self.wire.iter().map(|(at, _, _)| *at).min(),
                self.a.next_deadline(),
                self.b.next_deadline(),
            ]
            .into_iter()
            .flatten()
            .min();
            match next {
                Some(at) => {
                    self.now = self.now.max(at);
                    self.step();
                    true
                }
                None => false,
            }
        }

        fn run(&mut self) {
            for _ in 0..100_000 {
                if !self.advance() {
                    return;
                }
            }
            panic!("pair does not settle");
        }

        fn a_final(&self) -> Option<u16> {
            self.a_events.iter().find_map(|e| match e {
                Action::Response { resp, .. } if resp.status >= 200 => Some(resp.status),
                _ => None,
            })
        }
    }

    #[test]
    fn register_completes_across_lossy_link() {
        let mut retransmitted = false;
        for seed in 0..30 {
            let mut p = Pair::new(seed, 0.3, Transport::Udp, |_| 200);
            let reg = request("REGISTER", &new_branch(&mut p.rng), Transport::Udp);
            let (_, acts) =
                p.a.send_request(reg, server_peer(Transport::Udp), p.now)
                    .expect("send");
            p.route(true, acts);
            p.run();
            assert_eq!(p.a_final(), Some(200), "seed {seed}");
            assert!(p.a.is_empty() && p.b.is_empty(), "seed {seed}");
            retransmitted |= p.sent > 2;
        }
        assert!(retransmitted, "30% loss must have cost a retransmission");
    }

    #[test]
    fn rejected_invite_settles_across_lossy_link() {
        for seed in 0..30 {
            let mut p = Pair::new(seed, 0.3, Transport::Udp, |_| 486);
            let inv = request("INVITE", &new_branch(&mut p.rng), Transport::Udp);
            let (_, acts) =
                p.a.send_request(inv, server_peer(Transport::Udp), p.now)
                    .expect("send");
            p.route(true, acts);
            p.run();
            assert_eq!(p.a_final(), Some(486), "seed {seed}");
            assert!(p.a.is_empty() && p.b.is_empty(), "seed {seed}");
            // The server saw the ACK unless every ACK and 486 copy was lost (then H).
            let timed_out = p
                .b_events
                .iter()
                .any(|e| matches!(e, Action::Timeout { .. }));
            assert!(!timed_out, "seed {seed}: ACK never arrived");
        }
    }

    #[test]
    fn tcp_pair_sends_each_message_once() {
        let mut p = Pair::new(1, 0.0, Transport::Tcp, |_| 486);
        let inv = request("INVITE", &new_branch(&mut p.rng), Transport::Tcp);
        let (_, acts) =
            p.a.send_request(inv, server_peer(Transport::Tcp), p.now)
                .expect("send");
        p.route(true, acts);
        p.run();
        // INVITE, 100, 486, ACK.
        assert_eq!(p.sent, 4);
        assert_eq!(p.a_final(), Some(486));
        assert!(p.a.is_empty() && p.b.is_empty());
    }
}
