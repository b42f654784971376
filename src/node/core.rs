//! The core: the one task that owns the transaction layer (so it needs no lock) and
//! carries out decisions made elsewhere. It reads the clock once per event and passes
//! `now` down; it feeds received messages to the layer, routes what the layer says to the
//! call that has the Call-ID or transaction, sends new requests through
//! [`super::admission`] and carries out the [`Decision`]; it starts client transactions
//! for call tasks and the MWI task, and answers on their behalf.
//! Must not: decide a SIP answer, an auth outcome or a route itself (admission, the
//! registrar, the dialplan and the call machines do), or block (store reads go to tasks
//! that hand their result back as an [`Answer`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch};
use tracing::{debug, info, info_span, warn};

use super::admission::{self, Authorizer, Context, Decision, NewCall};
use super::reach::{contact_for, host_for};
use super::spawn::{Spawned, Spawner, RELAYED_RING_LIMIT};
use super::tasks::{Answer, WriteJob};
use super::{NodeControl, PlanSource};
use crate::call::{
    CallHandle, CallInput, CallRef, CallerLeg, Command, CoreCommand, Fallback, SipIn,
};
use crate::cluster::routing::SeenRelays;
use crate::metrics::NodeMetrics;
use crate::registrar::{AuthOutcome, Outcome, Registrar};
use crate::sip::message::{reason_phrase, HeaderName, Headers, Request, Response, SipMessage};
use crate::sip::shard::ShardId;
use crate::sip::transaction::{Action, TransactionLayer, TxKey};
use crate::sip::Peer;
use crate::transport::{Inbound, TransportHandle};
use crate::voicemail::mwi_task::{MwiCommand, MwiIn, SubscribeIn};

/// The registrar is the node's authorizer: its caches of extensions and nonces.
impl Authorizer for Registrar {
    fn authenticate(&self, req: &Request, header: &HeaderName, now_unix: i64) -> AuthOutcome {
        Registrar::authenticate(self, req, header, now_unix)
    }

    fn extension_known(&self, number: &str) -> Option<bool> {
        self.cached_extension(number).map(|e| e.is_some())
    }
}

/// The calls of this node as the core routes to them.
#[derive(Default)]
pub struct CallTable {
    handles: HashMap<CallRef, (CallHandle, [String; 2])>,
    /// Call-IDs a call took on after it started ([`CoreCommand::Adopt`]: the legs an
    /// app's bridge dials).
    adopted: HashMap<CallRef, Vec<String>>,
    /// Call-ID of either leg -> call.
    by_call_id: HashMap<String, CallRef>,
    /// Client transactions a call started -> call.
    by_tx: HashMap<TxKey, CallRef>,
    /// Dials with a fallback -> what takes their caller back.
    fallbacks: HashMap<CallRef, Fallback>,
}

impl CallTable {
    fn len(&self) -> usize {
        self.handles.len()
    }

    fn insert(&mut self, call: CallRef, handle: CallHandle, ids: [String; 2]) {
        for id in &ids {
            self.by_call_id.insert(id.clone(), call);
        }
        self.handles.insert(call, (handle, ids));
    }

    fn for_call_id(&self, msg_call_id: Option<&str>) -> Option<(CallRef, &CallHandle)> {
        let r = *self.by_call_id.get(msg_call_id?)?;
        self.handles.get(&r).map(|(h, _)| (r, h))
    }

    /// Hands an event to a call; false when the call is gone.
    fn deliver(&self, call: CallRef, input: SipIn) -> bool {
        match self.handles.get(&call) {
            Some((h, _)) => match h.try_send(CallInput::Sip(input)) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    debug!(call, "call queue full: event dropped");
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            },
            None => false,
        }
    }

    /// Ends the call whose caller leg has this Call-ID as the system would; false when
    /// this node has no such call.
    fn hang_up(&self, caller_call_id: &str) -> bool {
        match self.for_call_id(Some(caller_call_id)) {
            // A full queue still ends the call: the order waits its turn.
            Some((call, h)) => match h.try_send(CallInput::HangUp) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(input)) => {
                    let h = h.clone();
                    tokio::spawn(async move {
                        let _ = h.send(input).await;
                    });
                    debug!(call, "call queue full: hang-up queued");
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            },
            None => false,
        }
    }

    /// Routes `call_id` to `call` as well.
    fn adopt(&mut self, call: CallRef, call_id: String) {
        if !self.handles.contains_key(&call) {
            return;
        }
        self.by_call_id.insert(call_id.clone(), call);
        self.adopted.entry(call).or_default().push(call_id);
    }

    fn forget(&mut self, call: CallRef) {
        let adopted = self.adopted.remove(&call).unwrap_or_default();
        if let Some((_, ids)) = self.handles.remove(&call) {
            for id in ids.into_iter().chain(adopted) {
                if self.by_call_id.get(&id) == Some(&call) {
                    self.by_call_id.remove(&id);
                }
            }
        }
        self.by_tx.retain(|_, c| *c != call);
        self.fallbacks.remove(&call);
    }
}

fn call_id_of(headers: &Headers) -> Option<&str> {
    headers.get(&HeaderName::CallId)
}

/// The receivers the core serves.
pub struct Inputs {
    pub inbound: mpsc::Receiver<Inbound>,
    pub answers: mpsc::Receiver<Answer>,
    pub calls: mpsc::Receiver<CoreCommand>,
    pub mwi: mpsc::Receiver<MwiCommand>,
    pub control: mpsc::Receiver<NodeControl>,
    pub shutdown: watch::Receiver<bool>,
}

/// One signalling shard: the transactions and calls of the Call-IDs that hash to it.
pub struct Core {
    pub shard: ShardId,
    pub layer: TransactionLayer,
    pub transport: TransportHandle,
    pub registrar: Arc<Registrar>,
    pub server_header: String,
    pub answers: mpsc::Sender<Answer>,
    pub writes: mpsc::Sender<WriteJob>,
    /// The MWI task, and the NOTIFY transactions it started.
    pub mwi: mpsc::Sender<MwiIn>,
    pub mwi_txs: HashSet<TxKey>,
    pub calls: CallTable,
    pub spawner: Spawner,
    pub plans: Arc<PlanSource>,
    pub metrics: Arc<NodeMetrics>,
    /// Forwarded INVITEs taken lately, so a replayed one is refused.
    pub relays_seen: SeenRelays,
    /// The cluster's shared secret (forwarded INVITEs are signed with it).
    pub cluster_secret: Option<Arc<[u8]>>,
    /// This shard's transactions and calls as last added to the node's gauges.
    pub reported: (u64, u64),
}

impl Core {
    pub async fn run(mut self, mut inputs: Inputs) {
        loop {
            let deadline = self.layer.next_deadline();
            tokio::select! {
                m = inputs.inbound.recv() => match m {
                    Some(Inbound::Message { msg, peer, asked }) => {
                        let now = now();
                        let actions = self.on_inbound(msg, peer, asked, now);
                        self.act_all(actions, now);
                    }
                    Some(Inbound::Unsent { request, peer, reason }) => {
                        debug!(to = %peer.remote, %reason, method = %request.method, "request not sent");
                        if let Some(key) = TxKey::client(&request) {
                            let now = now();
                            let actions = self.layer.transport_error(&key, now);
                            self.act_all(actions, now);
                        }
                    }
                    None => return,
                },
                // Work finished by other tasks comes back here: only this task may touch
                // the transaction layer.
                Some(answer) = inputs.answers.recv() => {
                    let now = now();
                    match answer {
                        Answer::Respond(key, resp) => self.respond(&key, resp, now),
                        Answer::Retry(key, req, from) => self.admit(key, req, from, now),
                    }
                }
                Some(cmd) = inputs.calls.recv() => self.call_command(cmd, now()),
                Some(cmd) = inputs.mwi.recv() => self.mwi_command(cmd, now()),
                Some(order) = inputs.control.recv() => self.control(order),
                _ = sleep_until(deadline) => {
                    let now = now();
                    let actions = self.layer.on_timer(now);
                    self.act_all(actions, now);
                }
                _ = inputs.shutdown.changed() => return,
            }
            self.report();
        }
    }

    /// Adds the change in this shard's transactions and calls to the node's gauges:
    /// cheaper than a timer, and never stale by more than the time the shard is idle
    /// (when nothing changes anyway). The gauges sum every shard's adds (wrapping: a
    /// fall is an add of its two's complement).
    fn report(&mut self) {
        let now = (self.layer.len() as u64, self.calls.len() as u64);
        if now != self.reported {
            let m = &self.metrics;
            m.transactions
                .fetch_add(now.0.wrapping_sub(self.reported.0), Relaxed);
            m.calls_up
                .fetch_add(now.1.wrapping_sub(self.reported.1), Relaxed);
            self.reported = now;
        }
    }

    /// A received message into the transaction layer, except a CANCEL that matches no
    /// INVITE here while another node may have it (a VIP handed over while it rang, see
    /// `cluster::tunnel`): that one is asked about instead of answered 481, and one asked
    /// about by another node is answered only if it is ours.
    fn on_inbound(
        &mut self,
        msg: SipMessage,
        peer: Peer,
        asked: bool,
        now: Instant,
    ) -> Vec<Action> {
        if let SipMessage::Request(req) = &msg {
            if req.method == crate::sip::message::Method::Cancel
                && !self.layer.knows_cancel(req)
                && (asked || self.transport.ask_others(&msg, &peer))
            {
                return Vec::new();
            }
        }
        self.layer.on_message(msg, peer, now)
    }

    fn act_all(&mut self, actions: Vec<Action>, now: Instant) {
        for a in actions {
            self.act(a, now);
        }
    }

    fn act(&mut self, action: Action, now: Instant) {
        match action {
            Action::Send { msg, to } => {
                if let Err(e) = self.transport.send(&msg, &to) {
                    debug!(error = %e, to = %to.remote, "send failed");
                }
            }
            Action::Request { key, req, from } => {
                match self.calls.for_call_id(call_id_of(&req.headers)) {
                    Some((call, _)) => {
                        let fallback = req.clone();
                        let input = SipIn::Request {
                            key: key.clone(),
                            req,
                            from,
                        };
                        if !self.calls.deliver(call, input) {
                            // The call ended as this request came: its dialog is gone.
                            let r = self.response(&fallback, 481, &new_tag());
                            self.respond(&key, r, now);
                        }
                    }
                    None => self.admit(key, req, from, now),
                }
            }
            Action::Cancel { key, req, .. } => {
                match self.calls.for_call_id(call_id_of(&req.headers)) {
                    Some((call, _)) => {
                        self.calls.deliver(call, SipIn::Cancel(key));
                    }
                    // Nothing else this node answers waits long enough to be cancelled.
                    None => {
                        debug!(call_id = %req.headers.get(&HeaderName::CallId).unwrap_or_default(), ?key, "CANCEL")
                    }
                }
            }
            Action::Ack2xx { req, .. } => {
                if let Some((call, _)) = self.calls.for_call_id(call_id_of(&req.headers)) {
                    self.calls.deliver(call, SipIn::Ack(req));
                }
            }
            Action::Response { key, resp } if self.mwi_txs.contains(&key) => {
                if resp.status >= 200 {
                    self.mwi_txs.remove(&key);
                    let status = Some(resp.status);
                    let _ = self.mwi.try_send(MwiIn::NotifyResult { key, status });
                }
            }
            Action::Timeout { key } | Action::TransportError { key }
                if self.mwi_txs.remove(&key) =>
            {
                debug!(?key, "NOTIFY timed out or failed");
                let _ = self.mwi.try_send(MwiIn::NotifyResult { key, status: None });
            }
            Action::Response { key, resp } => {
                let call = self.calls.by_tx.get(&key).copied().or_else(|| {
                    self.calls
                        .for_call_id(call_id_of(&resp.headers))
                        .map(|(c, _)| c)
                });
                if let Some(call) = call {
                    let input = SipIn::Response {
                        key: Some(key),
                        resp,
                    };
                    self.calls.deliver(call, input);
                }
            }
            Action::StrayResponse { resp, .. } => {
                if let Some((call, _)) = self.calls.for_call_id(call_id_of(&resp.headers)) {
                    self.calls
                        .deliver(call, SipIn::Response { key: None, resp });
                }
            }
            Action::Timeout { key } => {
                debug!(?key, "transaction timed out");
                if let Some(call) = self.calls.by_tx.get(&key).copied() {
                    self.calls.deliver(call, SipIn::Timeout(key));
                }
            }
            Action::TransportError { key } => {
                debug!(?key, "transaction failed: its request could not be sent");
                if let Some(call) = self.calls.by_tx.get(&key).copied() {
                    self.calls.deliver(call, SipIn::Unsent(key));
                }
            }
            Action::Terminated { key } => {
                self.calls.by_tx.remove(&key);
                self.mwi_txs.remove(&key);
            }
        }
    }

    /// The one way a response leaves the core: through its server transaction, with
    /// every action that yields carried out.
    fn respond(&mut self, key: &TxKey, resp: Response, now: Instant) {
        let actions = self.layer.respond(key, resp, now);
        self.act_all(actions, now);
    }

    /// A response of our own with the To tag `tag` (kept if the request has one).
    fn response(&self, req: &Request, status: u16, tag: &str) -> Response {
        admission::own_response(req, status, reason_phrase(status), tag, &self.server_header)
    }

    /// A new request no call has: admission decides, the core carries it out.
    fn admit(&mut self, key: TxKey, req: Request, from: Peer, now: Instant) {
        let call_id = call_id_of(&req.headers).unwrap_or_default().to_owned();
        let span = info_span!("sip", call_id = %call_id, method = %req.method);
        let _enter = span.enter();
        let to_tag = new_tag();
        let decision = admission::admit(
            &req,
            &from,
            &mut Context {
                auth: self.registrar.as_ref(),
                cluster_secret: self.cluster_secret.as_deref(),
                seen_relays: &mut self.relays_seen,
                now_unix: crate::now_unix(),
                to_tag: &to_tag,
                server: &self.server_header,
            },
        );
        match decision {
            Decision::Reply(r) => self.respond(&key, r, now),
            Decision::Challenge {
                status,
                header,
                stale,
            } => {
                // A challenge keeps no transaction (RFC 3261 8.2.7): a retransmission is
                // challenged anew. An INVITE's 407 still waits for its ACK.
                let r = self.registrar.challenge_with(&req, stale, status, header);
                let actions = self.layer.respond_stateless(&key, r, now);
                self.act_all(actions, now);
            }
            Decision::Register { aor } => self.register(key, req, from, aor, now),
            Decision::Subscribe { subscriber } => {
                self.subscribe(key, req, from, subscriber.unwrap_or_default(), now)
            }
            Decision::Call(call) => {
                let leg = caller_leg(key, req, from, *call);
                let spawned = self.spawner.new_call(leg);
                self.spawned(spawned, now);
            }
            Decision::Relayed {
                call,
                numbers,
                node,
            } => {
                let leg = caller_leg(key, req, from, *call);
                // The forwarding node owns the ring timeout: it cancels this leg when it
                // gives up.
                let spawned = self
                    .spawner
                    .dial(leg, numbers, RELAYED_RING_LIMIT, None, Some(node));
                self.spawned(spawned, now);
            }
            Decision::Load(number) => self.load_then_retry(number, key, req, from),
        }
    }

    /// Carries out what starting a call came to.
    fn spawned(&mut self, spawned: Spawned, now: Instant) {
        match spawned {
            Spawned::Running {
                call,
                handle,
                call_ids,
                fallback,
            } => {
                if let Some(f) = fallback {
                    self.calls.fallbacks.insert(call, f);
                }
                self.calls.insert(call, handle, call_ids);
            }
            Spawned::Refused {
                key,
                invite,
                status,
                retry_after,
            } => {
                let mut r = self.response(&invite, status, &new_tag());
                if retry_after {
                    r.headers.push(HeaderName::Other("Retry-After".into()), "5");
                }
                self.respond(&key, r, now);
            }
            Spawned::Load { number, leg } => {
                let CallerLeg {
                    key, invite, from, ..
                } = *leg;
                self.load_then_retry(number, key, invite, from)
            }
        }
    }

    /// Carries out what a call task asks.
    fn call_command(&mut self, cmd: CoreCommand, now: Instant) {
        let (call, cmd) = match cmd {
            CoreCommand::Done { call } => {
                self.calls.forget(call);
                return;
            }
            CoreCommand::Unanswered {
                call,
                mut leg,
                outcome,
            } if self.layer.was_cancelled(&leg.key) => {
                // The caller's CANCEL came while the call task handed it back: it reached
                // a task that had stopped listening, so it is answered here.
                self.calls.fallbacks.remove(&call);
                info!(call, caller = %leg.caller, ?outcome, "caller cancelled while handed back to the dialplan");
                // The tag of the early dialog the caller saw (its 180), when it saw one.
                let tag = match &leg.dialog {
                    Some(d) => d.id().local_tag.clone(),
                    None => new_tag(),
                };
                let r = self.response(&leg.invite, 487, &tag);
                self.respond(&leg.key, r, now);
                leg.cancelled_in_hand_back(&self.spawner.log);
                return;
            }
            CoreCommand::Unanswered { call, leg, outcome } => {
                match self.calls.fallbacks.remove(&call) {
                    Some(f) => {
                        let app = (f.app)(outcome);
                        let spawned = self.spawner.start_app(*leg, app);
                        self.spawned(spawned, now);
                    }
                    None => warn!(call, "a caller handed back without a fallback"),
                }
                return;
            }
            CoreCommand::Dial {
                leg,
                numbers,
                timeout,
                fallback,
            } => {
                let spawned = self
                    .spawner
                    .dial(*leg, numbers, timeout, Some(fallback), None);
                self.spawned(spawned, now);
                return;
            }
            CoreCommand::Adopt { call, call_id } => {
                self.calls.adopt(call, call_id);
                return;
            }
            CoreCommand::Sip { call, cmd } => (call, cmd),
        };
        match cmd {
            Command::SendRequest { req, to } => self.start_client(call, req, to, now),
            Command::Cancel { invite, to } => match self.layer.build_cancel(&invite) {
                Some(cancel) => self.start_client(call, cancel, to, now),
                None => debug!(?invite, "nothing to cancel"),
            },
            Command::SendAck { req, to } => {
                if let Err(e) = self.transport.send(&SipMessage::Request(req), &to) {
                    debug!(error = %e, "ACK not sent");
                }
            }
            Command::Respond { key, resp } => self.respond(&key, resp, now),
            _ => {}
        }
    }

    /// Carries out what the MWI task asks: its responses, and NOTIFYs as client
    /// transactions whose outcome goes back to it.
    fn mwi_command(&mut self, cmd: MwiCommand, now: Instant) {
        match cmd {
            MwiCommand::Respond { key, resp } => self.respond(&key, resp, now),
            MwiCommand::Unsolicited { mailbox, counts } => {
                let shard = self.shard;
                let notifies = self.spawner.reach.unsolicited_mwi(&mailbox, counts, || {
                    (
                        shard.new_call_id(&mut rand::thread_rng()),
                        new_tag(),
                        crate::sip::transaction::new_branch(&mut rand::thread_rng()),
                    )
                });
                for (req, peer) in notifies {
                    // Its outcome matters to nobody: the next change sends another.
                    self.start_transaction(req, peer, now, |_, _| {});
                }
            }
            MwiCommand::SendNotify { req, to } => {
                self.start_transaction(req, to, now, |core, key| {
                    core.mwi_txs.insert(key.clone());
                });
            }
        }
    }

    /// Carries out an order from the admin API.
    fn control(&mut self, order: NodeControl) {
        match order {
            NodeControl::HangUp {
                caller_call_id,
                done,
            } => {
                let _ = done.send(self.calls.hang_up(&caller_call_id));
            }
            NodeControl::ReloadPlan { done } => {
                // Reading the folder blocks: not on the core's task, which serves SIP.
                let plans = self.plans.clone();
                tokio::task::spawn_blocking(move || {
                    let _ = done.send(plans.reload());
                });
            }
        }
    }

    /// A `message-summary` SUBSCRIBE admitted for `subscriber` (empty inside its
    /// dialog): the MWI task answers it.
    fn subscribe(
        &mut self,
        key: TxKey,
        req: Request,
        from: Peer,
        subscriber: String,
        now: Instant,
    ) {
        let public = self.spawner.public_address.as_deref();
        let local_contact = contact_for(&host_for(public, &from), &from);
        let mut busy = self.response(&req, 503, &new_tag());
        let input = MwiIn::Subscribe(Box::new(SubscribeIn {
            key: key.clone(),
            req,
            from,
            subscriber,
            local_contact,
        }));
        if self.mwi.try_send(input).is_err() {
            busy.headers
                .push(HeaderName::Other("Retry-After".into()), "5");
            self.respond(&key, busy, now);
        }
    }

    /// Starts a client transaction for a call; a send that fails at once is a transport
    /// error of the transaction (the call hears of it as a timeout).
    fn start_client(&mut self, call: CallRef, req: Request, to: Peer, now: Instant) {
        self.start_transaction(req, to, now, |core, key| {
            core.calls.by_tx.insert(key.clone(), call);
        });
    }

    /// Starts a client transaction and sends its request; `track` records whom its
    /// outcome goes to before anything is sent, since a send that fails at once is a
    /// transport error of the transaction, reported at once.
    fn start_transaction(
        &mut self,
        req: Request,
        to: Peer,
        now: Instant,
        track: impl FnOnce(&mut Self, &TxKey),
    ) {
        let method = req.method.clone();
        match self.layer.send_request(req, to, now) {
            Ok((key, actions)) => {
                track(self, &key);
                let mut failed = false;
                for a in actions {
                    match a {
                        Action::Send { msg, to } => {
                            if let Err(e) = self.transport.send(&msg, &to) {
                                debug!(error = %e, to = %to.remote, %method, "request not sent");
                                failed = true;
                            }
                        }
                        other => self.act(other, now),
                    }
                }
                if failed {
                    let actions = self.layer.transport_error(&key, now);
                    self.act_all(actions, now);
                }
            }
            Err(e) => debug!(error = %e, %method, "request refused by the transaction layer"),
        }
    }

    /// Loads an extension from the store, then admits the request again.
    fn load_then_retry(&mut self, number: String, key: TxKey, req: Request, from: Peer) {
        let registrar = self.registrar.clone();
        let answers = self.answers.clone();
        tokio::spawn(async move {
            let answer = match registrar.fetch_extension(&number).await {
                Ok(()) => Answer::Retry(key, req, from),
                Err(e) => {
                    warn!(error = %e, "cannot read extension");
                    let mut r = Response::for_request(&req, 500, reason_phrase(500));
                    r.headers.push(HeaderName::Other("Retry-After".into()), "5");
                    Answer::Respond(key, r)
                }
            };
            let _ = answers.send(answer).await;
        });
    }

    /// A REGISTER admitted for `aor`: answered now, or once its bindings are durable.
    fn register(&mut self, key: TxKey, req: Request, from: Peer, aor: String, now: Instant) {
        match self.registrar.bind(&req, &from, aor, crate::now_unix()) {
            Outcome::Respond(resp) => self.respond(&key, resp, now),
            Outcome::Persist(write) => {
                if write.adds_binding() {
                    let _ = self.mwi.try_send(MwiIn::Registered {
                        mailbox: write.aor.clone(),
                    });
                }
                let job = WriteJob {
                    shard: self.shard,
                    key,
                    write,
                };
                if let Err(e) = self.writes.try_send(job) {
                    let WriteJob { key, write, .. } = match e {
                        mpsc::error::TrySendError::Full(v)
                        | mpsc::error::TrySendError::Closed(v) => v,
                    };
                    warn!("binding writes are backed up: answering 500 with Retry-After");
                    let resp = self.registrar.unavailable(&write.response);
                    self.respond(&key, resp, now);
                    // The location service in memory already took the new set: put the
                    // stored one back, since the phone was told it did not register.
                    let registrar = self.registrar.clone();
                    tokio::spawn(async move { registrar.restore(&write.aor).await });
                }
            }
        }
    }
}

/// The caller's leg of an admitted INVITE.
fn caller_leg(key: TxKey, invite: Request, from: Peer, call: NewCall) -> CallerLeg {
    CallerLeg {
        key,
        invite,
        from,
        offer: call.offer,
        caller: call.caller,
        dialled: call.callee,
        dialog: None,
        record: None,
    }
}

/// The time of an event. tokio's clock, which tests may pause, as the instant the
/// transaction layer's timers are set in.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// A To tag for a response of ours.
fn new_tag() -> String {
    format!("{:08x}", rand::random::<u32>())
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}
