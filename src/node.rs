//! The running node: binds the transports, drives the sans-IO transaction layer from one
//! task (its only owner, so it needs no lock), and dispatches new requests to the
//! registrar or answers them itself (OPTIONS, unsupported methods). Owns task wiring and
//! shutdown; must not hold protocol logic of its own beyond choosing who answers.

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, info_span, warn};

use crate::config::Config;
use crate::registrar::{Outcome, PendingWrite, Policy, Registrar, RegistrarConfig, SUPPORTED};
use crate::sip::digest::Algorithm;
use crate::sip::message::{reason_phrase, HeaderName, Method, Request, Response};
use crate::sip::transaction::{Action, Timers, TransactionLayer, TxKey};
use crate::sip::Peer;
use crate::store::Store;
use crate::transport::{self, Bound, Inbound, TransportConfig, TransportError, TransportHandle};

#[derive(Debug, Error)]
pub enum NodeError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("cannot load registrations: {0}")]
    Registrar(#[from] crate::registrar::RegistrarError),
}

/// Methods this node answers today; others known to SIP get 405, unknown ones 501.
const ALLOWED: &str = "REGISTER, OPTIONS, ACK, CANCEL";

/// A node that is up. Dropping it does not stop it; call [`RunningNode::shutdown`].
pub struct RunningNode {
    pub bound: Bound,
    pub transport: TransportHandle,
    pub registrar: Arc<Registrar>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningNode {
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

/// The registrar settings a config describes.
pub fn registrar_config(cfg: &Config) -> RegistrarConfig {
    RegistrarConfig {
        realm: cfg.sip.realm.clone(),
        algorithms: cfg
            .registrar
            .algorithms
            .iter()
            .filter_map(|a| Algorithm::parse(&a.to_string()))
            .collect(),
        nonce_lifetime: Duration::from_secs(cfg.registrar.nonce_lifetime_secs),
        policy: Policy {
            min_expires: cfg.registrar.min_expires,
            max_expires: cfg.registrar.max_expires,
            default_expires: cfg.registrar.default_expires,
            max_contacts: cfg.registrar.max_contacts_per_aor as usize,
            node_id: cfg.node.id.to_string(),
        },
        server_header: cfg.sip.user_agent.clone(),
    }
}

/// Binds the listeners and starts the node's tasks.
pub async fn start(cfg: &Config, store: Store) -> Result<RunningNode, NodeError> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (inbound_tx, inbound_rx) = mpsc::channel::<Inbound>(4096);
    let (transport, bound) = transport::start(
        TransportConfig {
            udp_listen: cfg.sip.udp_listen.clone(),
            tcp_listen: cfg.sip.tcp_listen.clone(),
            max_message_bytes: cfg.sip.max_message_bytes as usize,
            tcp_idle_timeout: Duration::from_secs(cfg.sip.tcp_idle_timeout_secs),
            tcp_max_connections: cfg.sip.tcp_max_connections as usize,
        },
        inbound_tx,
        shutdown_rx.clone(),
    )
    .await?;
    let registrar = Arc::new(Registrar::load(store, registrar_config(cfg)).await?);
    let timers = Timers {
        t1: Duration::from_millis(cfg.sip.t1_ms),
        t2: Duration::from_millis(cfg.sip.t2_ms),
        t4: Duration::from_millis(cfg.sip.t4_ms),
    };
    let (answer_tx, answer_rx) = mpsc::channel::<Answer>(8192);
    let (write_tx, write_rx) = mpsc::channel::<(TxKey, PendingWrite)>(WRITE_QUEUE);
    let core = Core {
        layer: TransactionLayer::new(timers),
        transport: transport.clone(),
        registrar: registrar.clone(),
        server_header: cfg.sip.user_agent.clone(),
        answers: answer_tx.clone(),
        writes: write_tx,
    };
    let mut tasks = vec![tokio::spawn(core.run(
        inbound_rx,
        answer_rx,
        shutdown_rx.clone(),
    ))];
    tasks.push(tokio::spawn(binding_writer(
        registrar.clone(),
        write_rx,
        answer_tx,
    )));
    if cfg.registrar.nat_keepalive_secs > 0 {
        tasks.push(tokio::spawn(nat_keepalives(
            registrar.clone(),
            transport.clone(),
            Duration::from_secs(cfg.registrar.nat_keepalive_secs),
            shutdown_rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(sweeper(
        registrar.clone(),
        Duration::from_secs(cfg.registrar.sweep_interval_secs),
        shutdown_rx,
    )));
    Ok(RunningNode {
        bound,
        transport,
        registrar,
        shutdown: shutdown_tx,
        tasks,
    })
}

/// Keeps NAT mappings of UDP phones open: a CRLF pair from the socket each registered to,
/// which phones ignore (RFC 5626 keepalive bytes) and NATs count as traffic.
async fn nat_keepalives(
    registrar: Arc<Registrar>,
    transport: TransportHandle,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                for (local, remote) in registrar.nat_keepalive_targets() {
                    if let Err(e) = transport.send_datagram(local, remote, b"\r\n\r\n") {
                        debug!(to = %remote, error = %e, "keepalive not sent");
                    }
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn sweeper(registrar: Arc<Registrar>, every: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = registrar.sweep().await {
                    warn!(error = %e, "sweeping expired bindings failed");
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// REGISTERs waiting for their bindings to be written; past this the node answers 500
/// with Retry-After rather than queue without bound.
const WRITE_QUEUE: usize = 8192;
/// How long the writer waits for more REGISTERs before committing a batch.
const WRITE_LINGER: Duration = Duration::from_millis(10);
/// The most binding sets one transaction commits.
const WRITE_BATCH: usize = 512;

/// Work that other tasks hand back to the core, the only owner of the transaction layer.
enum Answer {
    /// Send this final response on the server transaction.
    Respond(TxKey, Response),
    /// Process this request again (the registrar loaded what it needed).
    Retry(TxKey, Request, Peer),
}

/// Commits pending binding sets in batches: one transaction (one disk sync) for all the
/// REGISTERs that queued up while the previous one was committing.
async fn binding_writer(
    registrar: Arc<Registrar>,
    mut writes: mpsc::Receiver<(TxKey, PendingWrite)>,
    answers: mpsc::Sender<Answer>,
) {
    let mut batch: Vec<(TxKey, PendingWrite)> = Vec::with_capacity(WRITE_BATCH);
    while let Some(first) = writes.recv().await {
        batch.push(first);
        // Linger briefly so a commit (and its disk sync) carries more REGISTERs; a phone
        // does not notice a few milliseconds, the CPU per REGISTER does.
        let linger = tokio::time::sleep(WRITE_LINGER);
        tokio::pin!(linger);
        while batch.len() < WRITE_BATCH {
            tokio::select! {
                w = writes.recv() => match w {
                    Some(w) => batch.push(w),
                    None => break,
                },
                _ = &mut linger => break,
            }
        }
        let (keys, pending): (Vec<TxKey>, Vec<PendingWrite>) = batch.drain(..).unzip();
        let started = std::time::Instant::now();
        let results = registrar.persist(&pending).await;
        debug!(
            count = pending.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "binding batch committed"
        );
        for ((key, w), ok) in keys.into_iter().zip(pending).zip(results) {
            let resp = if ok {
                w.response
            } else {
                registrar.unavailable(&w.response)
            };
            if answers.send(Answer::Respond(key, resp)).await.is_err() {
                return;
            }
        }
    }
}

struct Core {
    layer: TransactionLayer,
    transport: TransportHandle,
    registrar: Arc<Registrar>,
    server_header: String,
    answers: mpsc::Sender<Answer>,
    writes: mpsc::Sender<(TxKey, PendingWrite)>,
}

impl Core {
    async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut answers: mpsc::Receiver<Answer>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let deadline = self.layer.next_deadline();
            let actions = tokio::select! {
                m = inbound.recv() => match m {
                    Some(Inbound { msg, peer }) => self.layer.on_message(msg, peer, Instant::now().into_std()),
                    None => return,
                },
                // Work finished by other tasks comes back here: only this task may touch
                // the transaction layer.
                Some(answer) = answers.recv() => match answer {
                    Answer::Respond(key, resp) => self.layer.respond(&key, resp, Instant::now().into_std()),
                    Answer::Retry(key, req, from) => {
                        self.register(key, req, from);
                        Vec::new()
                    }
                },
                _ = sleep_until(deadline) => self.layer.on_timer(Instant::now().into_std()),
                _ = shutdown.changed() => return,
            };
            for action in actions {
                self.act(action);
            }
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Send { msg, to } => {
                if let Err(e) = self.transport.send(&msg, &to) {
                    debug!(error = %e, to = %to.remote, "send failed");
                }
            }
            Action::Request { key, req, from } => self.dispatch(key, req, from),
            Action::Cancel { key, req, .. } => {
                // Nothing this node answers waits long enough to be cancelled; a late
                // CANCEL for an answered request changes nothing.
                debug!(call_id = %req.headers.get(&HeaderName::CallId).unwrap_or_default(), ?key, "CANCEL");
            }
            Action::Ack2xx { .. } | Action::StrayResponse { .. } | Action::Response { .. } => {}
            Action::Timeout { key } => debug!(?key, "transaction timed out"),
            Action::TransportError { key } => debug!(?key, "transaction transport error"),
            Action::Terminated { .. } => {}
        }
    }

    fn reply(&mut self, key: &TxKey, resp: Response) {
        let actions = self.layer.respond(key, resp, Instant::now().into_std());
        for a in actions {
            if let Action::Send { msg, to } = a {
                if let Err(e) = self.transport.send(&msg, &to) {
                    debug!(error = %e, "send failed");
                }
            }
        }
    }

    fn simple(&self, req: &Request, status: u16) -> Response {
        let mut r = Response::for_request(req, status, reason_phrase(status));
        r.ensure_to_tag(&format!("{:08x}", rand::random::<u32>()));
        r.headers
            .push(HeaderName::Server, self.server_header.clone());
        r
    }

    /// Runs a REGISTER through the registrar: answered now, after its bindings are
    /// written, or after the extension is loaded from the store.
    fn register(&mut self, key: TxKey, req: Request, from: Peer) {
        match self.registrar.process(&req, &from) {
            Outcome::Respond(resp) => self.reply(&key, resp),
            Outcome::Persist(write) => {
                if let Err(e) = self.writes.try_send((key, write)) {
                    let (key, write) = match e {
                        mpsc::error::TrySendError::Full(v)
                        | mpsc::error::TrySendError::Closed(v) => v,
                    };
                    warn!("binding writes are backed up: answering 500 with Retry-After");
                    let resp = self.registrar.unavailable(&write.response);
                    self.reply(&key, resp);
                    // The location service in memory already took the new set: put the
                    // stored one back, since the phone was told it did not register.
                    let registrar = self.registrar.clone();
                    tokio::spawn(async move { registrar.restore(&write.aor).await });
                }
            }
            Outcome::Load(number) => {
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
        }
    }

    fn dispatch(&mut self, key: TxKey, req: Request, from: Peer) {
        let call_id = req
            .headers
            .get(&HeaderName::CallId)
            .unwrap_or_default()
            .to_owned();
        let span = info_span!("sip", call_id = %call_id, method = %req.method);
        let _enter = span.enter();
        // RFC 3261 8.2.2.1: only SIP URIs (and tel for calls, later) are served.
        let scheme = req
            .uri
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if scheme != "sip" && scheme != "sips" {
            let r = self.simple(&req, 416);
            return self.reply(&key, r);
        }
        // RFC 3261 8.2.2.3: refuse extensions we were required to understand.
        let unsupported: Vec<&str> = req
            .headers
            .list(&HeaderName::Require)
            .filter(|t| !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(t)))
            .collect();
        if !unsupported.is_empty() && req.method != Method::Cancel {
            let mut r = self.simple(&req, 420);
            r.headers
                .push(HeaderName::Unsupported, unsupported.join(", "));
            return self.reply(&key, r);
        }
        match req.method {
            Method::Register => self.register(key, req, from),
            Method::Options => {
                let mut r = self.simple(&req, 200);
                r.headers.push(HeaderName::Allow, ALLOWED);
                r.headers
                    .push(HeaderName::Other("Accept".into()), "application/sdp");
                r.headers.push(HeaderName::Supported, SUPPORTED.join(", "));
                self.reply(&key, r);
            }
            Method::Other(_) => {
                let mut r = self.simple(&req, 501);
                r.headers.push(HeaderName::Allow, ALLOWED);
                self.reply(&key, r);
            }
            _ => {
                let mut r = self.simple(&req, 405);
                r.headers.push(HeaderName::Allow, ALLOWED);
                self.reply(&key, r);
            }
        }
    }
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// Logs what a started node serves.
pub fn log_started(cfg: &Config, bound: &Bound) {
    info!(
        node = %cfg.node.id,
        udp = ?bound.udp,
        tcp = ?bound.tcp,
        realm = %cfg.sip.realm,
        "ringfort node up"
    );
}
