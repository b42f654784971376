//! The running node: binds the transports, drives the sans-IO transaction layer from one
//! task (its only owner, so it needs no lock), and dispatches new requests to the
//! registrar or answers them itself (OPTIONS, unsupported methods). Owns task wiring and
//! shutdown; must not hold protocol logic of its own beyond choosing who answers.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, info_span, warn};

use crate::apps::dialplan::{self as dialplan_app, DialStep, PlanCall, PlanEnv};
use crate::call::app_leg::AppLegParams;
use crate::call::machine::parse_offer;
use crate::call::{
    spawn_app_call, spawn_call, spawn_writer, AppFn, AppTaskParams, Apps, CallHandle, CallInput,
    CallLog, CallParams, CallRef, CallSettings, CallerLeg, Command, CoreCommand, DialOutcome,
    Fallback, RecordSettings, SipIn, SoundLibrary, Target, TargetResolver, TaskParams,
};
use crate::cluster::routing::{relay_header, verify_relay, Reach, RELAY_HEADER};
use crate::cluster::view::ClusterLink;
use crate::config::{Config, RecordMode};
use crate::dialplan::{CallContext, Plan, Routing};
use crate::media::conference::Rooms;
use crate::media::endpoint_task::EndpointConfig;
use crate::media::mixer::MixerConfig;
use crate::media::recorder::{repair_dir, Layout, Repair};
use crate::media::{PortAllocator, Relay, RelayConfig, Remote};
use crate::metrics::NodeMetrics;
use crate::registrar::{
    AuthOutcome, Outcome, PendingWrite, Policy, Registrar, RegistrarConfig, SUPPORTED,
};
use crate::sip::dialog::DialogConfig;
use crate::sip::digest::Algorithm;
use crate::sip::message::{
    from_header, reason_phrase, to_header, HeaderName, Method, Request, Response, SipMessage,
    SipUri,
};
use crate::sip::sdp::SessionDescription;
use crate::sip::transaction::{Action, Timers, TransactionLayer, TxKey};
use crate::sip::{ConnId, Peer, Transport};
use crate::store::Store;
use crate::transport::{self, Bound, Inbound, TransportConfig, TransportError, TransportHandle};
use crate::voicemail::mwi::{self, MwiConfig};
use crate::voicemail::mwi_task::{spawn_mwi, MwiCommand, MwiIn, SubscribeIn};
use crate::voicemail::{Voicemail, VoicemailError};

#[derive(Debug, Error)]
pub enum NodeError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("cannot load registrations: {0}")]
    Registrar(#[from] crate::registrar::RegistrarError),
    #[error("media ports: {0}")]
    Media(#[from] crate::media::MediaError),
    #[error("cannot recover the calls of a previous run: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Dialplan(#[from] crate::dialplan::DialplanError),
    #[error("voicemail: {0}")]
    Voicemail(#[from] VoicemailError),
    #[error("recordings folder {}: {source}", .path.display())]
    Recordings {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Methods this node answers today; others known to SIP get 405, unknown ones 501.
/// What the node takes: the registrar's and a call's methods (UPDATE, INFO and PRACK live
/// inside calls, see [`crate::call::machine::ALLOW`]).
/// SUBSCRIBE is for message waiting (`message-summary`) only.
const ALLOWED: &str = "INVITE, ACK, CANCEL, BYE, REGISTER, OPTIONS, UPDATE, INFO, PRACK, SUBSCRIBE";

/// Orders to the node from outside the SIP stack (the admin API).
#[derive(Debug)]
pub enum NodeControl {
    /// End the call whose caller leg has this Call-ID as the system would
    /// ([`CallInput::HangUp`]); `done` gets whether this node has that call.
    HangUp {
        caller_call_id: String,
        done: oneshot::Sender<bool>,
    },
    /// Read the dialplan folder again and route new calls by it when it is valid, as
    /// [`RunningNode::reload_plan`] does; `done` gets the plan now in force or why the
    /// folder was refused (the old plan then stays).
    ReloadPlan {
        done: oneshot::Sender<Result<Arc<Plan>, crate::dialplan::DialplanError>>,
    },
}

/// Where the dialplan comes from and the plan new calls are routed by. Shared by the
/// node's handle (SIGHUP) and its core (the admin API's orders), so both reload the same
/// way.
struct PlanSource {
    dir: std::path::PathBuf,
    plan: watch::Sender<Arc<Plan>>,
}

impl PlanSource {
    /// Blocking (reads files): call it off the core's task.
    fn reload(&self) -> Result<Arc<Plan>, crate::dialplan::DialplanError> {
        let plan = Arc::new(Plan::load_dir(&self.dir)?);
        self.plan.send_replace(plan.clone());
        Ok(plan)
    }
}

/// A node that is up. Dropping it does not stop it; call [`RunningNode::shutdown`].
pub struct RunningNode {
    pub bound: Bound,
    /// Where the admin API sends its [`NodeControl`] orders.
    pub control: mpsc::Sender<NodeControl>,
    pub transport: TransportHandle,
    pub registrar: Arc<Registrar>,
    /// Mailboxes and messages; the apps save through it, and MWI hears its counts.
    pub voicemail: Voicemail,
    /// Counters the core and the binding writer keep (served at `/metrics`).
    pub metrics: Arc<NodeMetrics>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The dialplan new calls are routed by, and where it is read from.
    plans: Arc<PlanSource>,
}

impl RunningNode {
    /// Reads the dialplan folder again and, when it is valid, routes new calls by it
    /// (calls in progress keep the plan they started with). An invalid folder changes
    /// nothing; its errors say `file:line: reason`.
    pub fn reload_plan(&self) -> Result<Arc<Plan>, crate::dialplan::DialplanError> {
        self.plans.reload()
    }

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
/// `[media] codecs` as the engine's codec list.
fn codec_list(names: &[crate::config::CodecName]) -> crate::media::codec::CodecList {
    use crate::config::CodecName;
    use crate::media::codec::CodecKind;
    let kinds: Vec<CodecKind> = names
        .iter()
        .map(|n| match n {
            CodecName::Opus => CodecKind::Opus,
            CodecName::G722 => CodecKind::G722,
            CodecName::Pcmu => CodecKind::Pcmu,
            CodecName::Pcma => CodecKind::Pcma,
        })
        .collect();
    crate::media::codec::CodecList::new(&kinds)
}

/// Decoded prompts kept in memory for apps: the sample set many times over, and small
/// beside a node's memory.
const PROMPT_CACHE_BYTES: usize = 32 << 20;

pub async fn start(cfg: &Config, store: Store) -> Result<RunningNode, NodeError> {
    start_with_apps(cfg, store, Apps::new()).await
}

/// Starts a node whose numbers in `apps` are answered by those apps (before extensions
/// of the same number).
pub async fn start_with_apps(
    cfg: &Config,
    store: Store,
    apps: Apps,
) -> Result<RunningNode, NodeError> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (inbound_tx, inbound_rx) = mpsc::channel::<Inbound>(4096);
    let (transport, bound) = transport::start(
        TransportConfig {
            udp_listen: cfg.sip.udp_listen.clone(),
            tcp_listen: cfg.sip.tcp_listen.clone(),
            floating_udp: floating_listeners(cfg, &cfg.sip.udp_listen),
            floating_tcp: floating_listeners(cfg, &cfg.sip.tcp_listen),
            max_message_bytes: cfg.sip.max_message_bytes as usize,
            tcp_idle_timeout: Duration::from_secs(cfg.sip.tcp_idle_timeout_secs),
            tcp_max_connections: cfg.sip.tcp_max_connections as usize,
        },
        inbound_tx,
        shutdown_rx.clone(),
    )
    .await?;
    // Calls a crash left in progress become CDRs before this node takes new ones.
    let recovered = store
        .recover_active_calls(&cfg.node.id.to_string(), crate::registrar::now_unix())
        .await?;
    if !recovered.is_empty() {
        warn!(
            count = recovered.len(),
            "calls cut by a previous crash recorded as failed"
        );
    }
    let record = recordings(cfg)?;
    // Their recordings were repaired just now: the CDRs name them like any other.
    for id in &recovered {
        let file = cfg.recordings_dir().join(format!("{id}.wav"));
        if file.is_file() {
            store
                .set_cdr_recording(id, &file.display().to_string())
                .await?;
        }
    }
    // The relay binds on [media] address, else on the SIP address when it is a specific
    // one, else on every address (the SDP then names the address towards each phone).
    let bind_ip = cfg.media.address.unwrap_or_else(|| {
        cfg.sip
            .udp_listen
            .iter()
            .chain(&cfg.sip.tcp_listen)
            .map(|a| a.ip())
            .find(|ip| !ip.is_unspecified())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]))
    });
    let ports = PortAllocator::new(bind_ip, cfg.media.rtp_port_min, cfg.media.rtp_port_max)?;
    let (plan_tx, plan_rx) = watch::channel(Arc::new(Plan::load_dir(&cfg.paths.dialplans)?));
    let plans = Arc::new(PlanSource {
        dir: cfg.paths.dialplans.clone(),
        plan: plan_tx,
    });
    // Before any call: reconciles what a crash left in the mailboxes.
    let voicemail = Voicemail::open(store.clone(), &cfg.node.data_dir).await?;
    let (mwi_tx, mwi_rx) = mpsc::channel::<MwiCommand>(1024);
    let (mwi, mwi_task) = spawn_mwi(
        voicemail.clone(),
        MwiConfig {
            unsolicited: cfg.voicemail.unsolicited_mwi,
            ..MwiConfig::default()
        },
        mwi_tx,
        shutdown_rx.clone(),
    );
    let registrar = Arc::new(Registrar::load(store, registrar_config(cfg)).await?);
    let timers = Timers {
        t1: Duration::from_millis(cfg.sip.t1_ms),
        t2: Duration::from_millis(cfg.sip.t2_ms),
        t4: Duration::from_millis(cfg.sip.t4_ms),
    };
    let (answer_tx, answer_rx) = mpsc::channel::<Answer>(8192);
    let (write_tx, write_rx) = mpsc::channel::<(TxKey, PendingWrite)>(WRITE_QUEUE);
    let (call_tx, call_rx) = mpsc::channel::<CoreCommand>(8192);
    let (control_tx, control_rx) = mpsc::channel::<NodeControl>(64);
    let (call_log, records_writer) = spawn_writer(registrar.store().clone());
    let (cluster, view_task) = cluster_link(cfg, registrar.store(), &bound, &shutdown_rx).await?;
    // Without a link no other node can reach this one, so its tags need no mark.
    let mut tag_mark = String::new();
    if let Some(link) = &cluster {
        registrar.share_nonce_secret(&link.secret);
        let tunnel = crate::cluster::tunnel::Tunnel::new(cfg.node.id.to_string(), link.clone());
        tag_mark = tunnel.mark.clone();
        transport.set_tunnel(tunnel);
    }
    let reach = Arc::new(Reacher {
        registrar: registrar.clone(),
        transport: transport.clone(),
        node_id: cfg.node.id.to_string(),
        public: cfg.sip.public_address.as_ref().map(|h| h.to_string()),
        cluster,
    });
    let metrics = Arc::new(NodeMetrics::default());
    let core = Core {
        metrics: metrics.clone(),
        relays_seen: Default::default(),
        layer: TransactionLayer::new(timers),
        transport: transport.clone(),
        registrar: registrar.clone(),
        server_header: cfg.sip.user_agent.clone(),
        answers: answer_tx.clone(),
        writes: write_tx,
        mwi,
        mwi_txs: std::collections::HashSet::new(),
        calls: Calls {
            settings: CallSettings {
                no_answer_timeout: Duration::from_secs(cfg.calls.no_answer_timeout_secs),
                dialog: DialogConfig {
                    timers,
                    // We do not ask for session timers; a phone's request is honoured.
                    session_expires: None,
                    support_100rel: false,
                    tag_mark,
                    ..DialogConfig::default()
                },
                codec: crate::media::codec::CodecParams {
                    complexity: cfg.media.opus_complexity,
                    bitrate: cfg.media.opus_bitrate,
                    ..Default::default()
                },
                codecs: codec_list(&cfg.media.codecs),
                record,
            },
            ports,
            media_address: cfg.media.address,
            public_address: cfg.sip.public_address.as_ref().map(|h| h.to_string()),
            relay: RelayConfig::with_timeout_secs(cfg.media.media_timeout_secs),
            apps,
            sounds: Arc::new(SoundLibrary::new(
                cfg.paths.sounds.clone(),
                PROMPT_CACHE_BYTES,
            )),
            rooms: Arc::new(Rooms::new(MixerConfig::default())),
            resolver: {
                let reach = reach.clone();
                Arc::new(move |numbers: &[String], call_id: &str| {
                    reach.targets(numbers, call_id, true)
                })
            },
            reach: reach.clone(),
            node_id: cfg.node.id.to_string(),
            commands: call_tx,
            log: call_log,
            next_ref: 0,
            handles: HashMap::new(),
            adopted: HashMap::new(),
            by_call_id: HashMap::new(),
            by_tx: HashMap::new(),
            plan: plan_rx,
            plans: plans.clone(),
            fallbacks: HashMap::new(),
            voicemail: voicemail.clone(),
        },
    };
    let mut tasks = vec![
        tokio::spawn(core.run(
            inbound_rx,
            answer_rx,
            call_rx,
            mwi_rx,
            control_rx,
            shutdown_rx.clone(),
        )),
        mwi_task,
    ];
    {
        // Other nodes' registrations reach this node's cache (PostgreSQL clusters).
        let (registrar, shutdown) = (registrar.clone(), shutdown_rx.clone());
        tasks.push(tokio::spawn(async move {
            registrar.follow_other_nodes(shutdown).await
        }));
    }
    tasks.push(tokio::spawn(binding_writer(
        registrar.clone(),
        write_rx,
        answer_tx,
        metrics.clone(),
    )));
    if cfg.registrar.nat_keepalive_secs > 0 {
        tasks.push(tokio::spawn(nat_keepalives(
            reach.clone(),
            Duration::from_secs(cfg.registrar.nat_keepalive_secs),
            shutdown_rx.clone(),
        )));
    }
    tasks.extend(view_task);
    if cfg.cluster.enabled {
        // Heartbeat and floating IPs; on shutdown they drop the addresses and release.
        let calls = metrics.clone();
        tasks.extend(crate::cluster::agent::spawn(
            cfg,
            registrar.store().clone(),
            Arc::new(move || i64::try_from(calls.calls_up.load(Relaxed)).unwrap_or(i64::MAX)),
            shutdown_rx.clone(),
        ));
    }
    tasks.push(tokio::spawn(sample_counts(
        registrar.store().clone(),
        cfg.node.id.to_string(),
        metrics.clone(),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(sweeper(
        registrar.clone(),
        Duration::from_secs(cfg.registrar.sweep_interval_secs),
        shutdown_rx,
    )));
    // Last: it ends once the core and every call task are gone and their records are
    // written, so shutdown waits for the final CDRs.
    tasks.push(records_writer);
    Ok(RunningNode {
        bound,
        control: control_tx,
        transport,
        registrar,
        voicemail,
        metrics,
        shutdown: shutdown_tx,
        tasks,
        plans,
    })
}

/// The SIP sockets on the floating IPs a clustered node may hold: each VIP on each port
/// the node listens on.
fn floating_listeners(cfg: &Config, listen: &[SocketAddr]) -> Vec<SocketAddr> {
    if !cfg.cluster.enabled {
        return Vec::new();
    }
    let mut ports: Vec<u16> = listen.iter().map(|a| a.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    cfg.cluster
        .vip
        .iter()
        .flat_map(|v| ports.iter().map(|p| SocketAddr::new(v.address, *p)))
        .collect()
}

/// Cross-node routing for a clustered node: the shared secret (created in the store by
/// the first node), the task that keeps the cluster view fresh, and the socket forwards
/// leave from. `None` outside a cluster, or when `[cluster] sip_address` names no socket
/// this node listens on (it cannot forward then; other nodes cannot reach it either).
async fn cluster_link(
    cfg: &Config,
    store: &Store,
    bound: &Bound,
    shutdown: &watch::Receiver<bool>,
) -> Result<(Option<ClusterLink>, Option<JoinHandle<()>>), NodeError> {
    if !cfg.cluster.enabled {
        return Ok((None, None));
    }
    let Some(announced) = cfg.cluster.sip_address else {
        warn!(
            "[cluster] sip_address is not set: calls for phones on other nodes cannot be forwarded"
        );
        return Ok((None, None));
    };
    let own_sip = bound
        .udp
        .iter()
        .copied()
        .find(|a| *a == announced)
        .or_else(|| {
            bound
                .udp
                .iter()
                .copied()
                .find(|a| a.ip().is_unspecified() && a.port() == announced.port())
        });
    let Some(own_sip) = own_sip else {
        warn!(%announced, "[cluster] sip_address is no UDP socket of this node: calls for phones on other nodes cannot be forwarded");
        return Ok((None, None));
    };
    let candidate = format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    );
    let secret = store.cluster_secret(&candidate).await?;
    let vips: Vec<IpAddr> = cfg.cluster.vip.iter().map(|v| v.address).collect();
    let (view, task) = crate::cluster::view::spawn_view(
        store.clone(),
        vips,
        Duration::from_millis(cfg.cluster.heartbeat_ms),
        shutdown.clone(),
    )
    .await;
    let link = ClusterLink {
        view,
        secret: Arc::from(secret.into_bytes()),
        own_sip,
    };
    Ok((Some(link), Some(task)))
}

/// Makes the recordings folder and the recordings a crash cut playable (before any new
/// recording starts); returns how calls are recorded. A folder that cannot be made is an
/// error only when calls are to be recorded.
fn recordings(cfg: &Config) -> Result<Option<RecordSettings>, NodeError> {
    let dir = cfg.recordings_dir();
    let layout = match cfg.calls.record {
        RecordMode::Off => None,
        RecordMode::Mixed => Some(Layout::Mixed),
        RecordMode::Stereo => Some(Layout::Stereo),
    };
    if let Err(source) = std::fs::create_dir_all(&dir) {
        if layout.is_none() {
            debug!(dir = %dir.display(), error = %source, "no recordings folder");
            return Ok(None);
        }
        return Err(NodeError::Recordings { path: dir, source });
    }
    match repair_dir(&dir) {
        Ok(report) => {
            for (path, outcome) in report {
                match outcome {
                    Ok(Repair::Intact) => {}
                    Ok(Repair::Repaired {
                        data_bytes,
                        dropped,
                    }) => warn!(
                        file = %path.display(),
                        data_bytes,
                        dropped,
                        "recording cut by a crash repaired"
                    ),
                    Err(e) => warn!(error = %e, "recording cannot be repaired"),
                }
            }
        }
        Err(e) => warn!(error = %e, "recordings not checked"),
    }
    Ok(layout.map(|layout| RecordSettings { dir, layout }))
}

/// Keeps NAT mappings of UDP phones open: a CRLF pair from the socket each registered to,
/// which phones ignore (RFC 5626 keepalive bytes) and NATs count as traffic.
async fn nat_keepalives(reach: Arc<Reacher>, every: Duration, mut shutdown: watch::Receiver<bool>) {
    let (registrar, transport) = (&reach.registrar, &reach.transport);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // The node that would ring a phone keeps its NAT pinhole open: in a
                // cluster, whoever holds the VIP it registered through now.
                for (local, remote) in registrar.nat_keepalive_targets(|b| reach.reaches(b)) {
                    if let Err(e) = transport.send_datagram(local, remote, b"\r\n\r\n") {
                        debug!(to = %remote, error = %e, "keepalive not sent");
                    }
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// How often a node samples its counts for the panel's charts.
const SAMPLE_EVERY: Duration = Duration::from_secs(60);
/// How long samples are kept (the charts show a day; a week back stays possible).
const SAMPLES_KEPT_SECS: i64 = 8 * 24 * 3600;

/// Writes this node's calls and the live registrations once a minute (on the minute,
/// and once at start) to the store, and prunes its samples past a week.
async fn sample_counts(
    store: Store,
    node_id: String,
    metrics: Arc<NodeMetrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let now = crate::registrar::now_unix();
        let at = now - now.rem_euclid(SAMPLE_EVERY.as_secs() as i64);
        let sample = async {
            let sample = crate::store::NodeSample {
                node_id: node_id.clone(),
                at,
                registrations: store.count_live_bindings(now).await?,
                calls: metrics.calls_up.load(Relaxed) as i64,
            };
            store.record_sample(&sample).await?;
            store.prune_samples(&node_id, at - SAMPLES_KEPT_SECS).await
        };
        if let Err(e) = sample.await {
            debug!(error = %e, "cannot write the node's sample");
        }
        let next = (at + SAMPLE_EVERY.as_secs() as i64 - now).max(1) as u64;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(next)) => {}
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
/// How long the writer waits for more REGISTERs before committing a batch: far below
/// what a phone notices (its first retransmission is at 500 ms), and at 1,000-2,000
/// REGISTER/s it cut the CPU per REGISTER by about a tenth against 10 ms (bench/register).
const WRITE_LINGER: Duration = Duration::from_millis(25);
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
    metrics: Arc<NodeMetrics>,
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
        let took = started.elapsed();
        metrics.binding_commits.observe(took);
        debug!(
            count = pending.len(),
            elapsed_us = took.as_micros() as u64,
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
    /// The MWI task, and the NOTIFY transactions it started.
    mwi: mpsc::Sender<MwiIn>,
    mwi_txs: std::collections::HashSet<TxKey>,
    calls: Calls,
    metrics: Arc<NodeMetrics>,
    /// Forwarded INVITEs taken lately, so a replayed one is refused.
    relays_seen: crate::cluster::routing::SeenRelays,
}

/// The calls of this node as the core routes to them.
struct Calls {
    settings: CallSettings,
    ports: PortAllocator,
    media_address: Option<IpAddr>,
    public_address: Option<String>,
    relay: RelayConfig,
    /// Numbers answered by apps.
    apps: Apps,
    sounds: Arc<SoundLibrary>,
    rooms: Arc<Rooms>,
    /// Extension numbers to phones, for the legs apps dial.
    resolver: TargetResolver,
    /// The same, for the B2BUA's dials (and a call another node forwarded here).
    reach: Arc<Reacher>,
    node_id: String,
    /// Where call tasks send their commands (the core's receiver).
    commands: mpsc::Sender<CoreCommand>,
    /// Where call tasks send their records (the records writer).
    log: CallLog,
    next_ref: CallRef,
    handles: HashMap<CallRef, (CallHandle, [String; 2])>,
    /// Call-IDs a call took on after it started ([`CoreCommand::Adopt`]: the legs an
    /// app's bridge dials).
    adopted: HashMap<CallRef, Vec<String>>,
    /// Call-ID of either leg -> call.
    by_call_id: HashMap<String, CallRef>,
    /// Client transactions a call started -> call.
    by_tx: HashMap<TxKey, CallRef>,
    /// The dialplan new calls are routed by (swapped by [`RunningNode::reload_plan`]).
    plan: watch::Receiver<Arc<Plan>>,
    /// Reloads `plan` on the admin API's order.
    plans: Arc<PlanSource>,
    /// Dials with a fallback -> what takes their caller back.
    fallbacks: HashMap<CallRef, Fallback>,
    /// The mailboxes, for the dialplan's voicemail steps.
    voicemail: Voicemail,
}

impl Calls {
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

    /// Carries out an order from the admin API.
    fn control(&self, order: NodeControl) {
        match order {
            NodeControl::HangUp {
                caller_call_id,
                done,
            } => {
                let found = match self.for_call_id(Some(&caller_call_id)) {
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
                };
                let _ = done.send(found);
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

fn call_id_of(headers: &crate::sip::message::Headers) -> Option<&str> {
    headers.get(&HeaderName::CallId)
}

/// The local address this host uses to reach `remote` (no packet is sent).
fn local_ip_towards(remote: SocketAddr) -> Option<IpAddr> {
    let bind: SocketAddr = if remote.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let sock = std::net::UdpSocket::bind(bind).ok()?;
    sock.connect(remote).ok()?;
    sock.local_addr().ok().map(|a| a.ip())
}

/// The address to name ourselves by on a flow: the public address if configured, else
/// our socket's address, else (a wildcard socket) the address towards the peer.
fn host_for(public: Option<&str>, peer: &Peer) -> String {
    if let Some(p) = public {
        return p.to_owned();
    }
    let ip = if peer.local.ip().is_unspecified() {
        local_ip_towards(peer.remote).unwrap_or(peer.local.ip())
    } else {
        peer.local.ip()
    };
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    }
}

fn contact_for(host: &str, peer: &Peer) -> String {
    let port = peer.local.port();
    match peer.transport {
        Transport::Udp => format!("sip:ringfort@{host}:{port}"),
        t => format!("sip:ringfort@{host}:{port};transport={}", t.as_str()),
    }
}

/// How long a call forwarded by another node may ring here: a backstop only, as the
/// forwarding node cancels the leg at its own (dialplan's) timeout.
const RELAYED_RING_LIMIT: Duration = Duration::from_secs(600);

/// Finds the forks that ring extensions: the phones this node reaches itself, and one
/// fork per other node that reaches some of them (which rings its own).
struct Reacher {
    registrar: Arc<Registrar>,
    transport: TransportHandle,
    node_id: String,
    public: Option<String>,
    cluster: Option<ClusterLink>,
}

impl Reacher {
    /// The forks of a new leg with Call-ID `call_id` ringing `numbers`; `forward: false`
    /// leaves out other nodes' phones (a call forwarded here rings only ours).
    fn targets(&self, numbers: &[String], call_id: &str, forward: bool) -> Vec<Target> {
        let view = self.cluster.as_ref().map(|c| c.view.borrow().clone());
        let mut targets = Vec::new();
        // Per other node (in the order first met): where it takes SIP, the numbers it
        // rings for us (one INVITE per node: the forks share this leg's Call-ID).
        let mut forwards: Vec<(String, SocketAddr, Vec<&str>)> = Vec::new();
        for number in numbers {
            for b in self.registrar.lookup(number) {
                let reach = match &view {
                    Some(v) => v.reach(&b, &self.node_id, |a| self.transport.listens_on(a)),
                    None => Reach::Local,
                };
                match reach {
                    Reach::Local => {
                        let is_open = |c| self.transport.is_open(c);
                        if let Some(peer) = target_peer(&b, &self.node_id, is_open) {
                            targets.push(Target {
                                request_uri: b.contact_uri.clone(),
                                peer,
                                local_contact: contact_for(
                                    &host_for(self.public.as_deref(), &peer),
                                    &peer,
                                ),
                                route: b.path.clone(),
                                headers: Vec::new(),
                            });
                        }
                    }
                    Reach::Node { id, sip } if forward => {
                        match forwards.iter_mut().find(|(n, _, _)| *n == id) {
                            Some((_, _, list)) if !list.contains(&number.as_str()) => {
                                list.push(number)
                            }
                            Some(_) => {}
                            None => forwards.push((id, sip, vec![number.as_str()])),
                        }
                    }
                    Reach::Node { .. } => {}
                    Reach::Nobody => {
                        debug!(number, contact = %b.contact_uri, "no node reaches this phone now")
                    }
                }
            }
        }
        for (node, sip, numbers) in forwards {
            if let Some(t) = self.forward(&numbers, sip, call_id) {
                debug!(?numbers, %node, "fork through another node");
                targets.push(t);
            }
        }
        targets
    }

    /// Whether this node sends to the phone of `b` itself.
    fn reaches(&self, b: &crate::store::Binding) -> bool {
        match &self.cluster {
            None => b.node_id == self.node_id,
            Some(link) => {
                let view = link.view.borrow();
                view.reach(b, &self.node_id, |a| self.transport.listens_on(a)) == Reach::Local
            }
        }
    }

    /// A fork to another node ringing `numbers` there: sent from our cluster address,
    /// signed.
    fn forward(&self, numbers: &[&str], to: SocketAddr, call_id: &str) -> Option<Target> {
        let first = numbers.first()?;
        let link = self.cluster.as_ref()?;
        let peer = Peer {
            transport: Transport::Udp,
            remote: to,
            local: link.own_sip,
            conn: None,
        };
        let relay = relay_header(
            &link.secret,
            &self.node_id,
            crate::registrar::now_unix(),
            call_id,
            numbers,
        );
        Some(Target {
            request_uri: format!("sip:{first}@{to}"),
            peer,
            // Our own address, never the public one: nodes talk inside the cluster.
            local_contact: contact_for(&host_for(None, &peer), &peer),
            route: Vec::new(),
            headers: vec![(HeaderName::Other(RELAY_HEADER.into()), relay)],
        })
    }
}

/// The flow towards a registered contact: to where the phone registered from, from our
/// socket it registered to. Over TCP that is its connection while this node holds it
/// open; once it is gone, a new connection to the Contact's address (where the phone
/// listens; the old source port was an ephemeral one), as RFC 3261 18.1.1 does without
/// RFC 5626 outbound. Other stream transports need their connection.
fn target_peer(
    b: &crate::store::Binding,
    node_id: &str,
    is_open: impl Fn(ConnId) -> bool,
) -> Option<Peer> {
    let transport = Transport::parse(&b.transport)?;
    let remote: SocketAddr = b.received.parse().ok()?;
    let local: SocketAddr = b.local_addr.parse().ok()?;
    let conn = b
        .flow
        .as_deref()
        .and_then(|f| {
            let (node, id) = f.rsplit_once(':')?;
            (node == node_id).then(|| id.parse::<u64>().ok().map(ConnId))?
        })
        .filter(|c| is_open(*c));
    let remote = match (transport, conn) {
        (Transport::Udp, _) | (_, Some(_)) => remote,
        (Transport::Tcp, None) => {
            let uri = crate::sip::message::SipUri::parse(&b.contact_uri).ok()?;
            let ip: IpAddr = uri.host.trim_matches(['[', ']']).parse().ok()?;
            SocketAddr::new(ip, uri.port.unwrap_or(5060))
        }
        _ => return None,
    };
    Some(Peer {
        transport,
        remote,
        local,
        conn,
    })
}

impl Core {
    async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut answers: mpsc::Receiver<Answer>,
        mut call_cmds: mpsc::Receiver<CoreCommand>,
        mut mwi_cmds: mpsc::Receiver<MwiCommand>,
        mut control: mpsc::Receiver<NodeControl>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let deadline = self.layer.next_deadline();
            let actions = tokio::select! {
                m = inbound.recv() => match m {
                    Some(Inbound { msg, peer, asked }) => self.on_inbound(msg, peer, asked),
                    None => return,
                },
                // Work finished by other tasks comes back here: only this task may touch
                // the transaction layer.
                Some(answer) = answers.recv() => match answer {
                    Answer::Respond(key, resp) => self.layer.respond(&key, resp, Instant::now().into_std()),
                    Answer::Retry(key, req, from) => {
                        if req.method == Method::Invite {
                            self.invite(key, req, from);
                        } else if req.method == Method::Subscribe {
                            self.subscribe(key, req, from);
                        } else {
                            self.register(key, req, from);
                        }
                        Vec::new()
                    }
                },
                Some(cmd) = call_cmds.recv() => {
                    self.call_command(cmd);
                    Vec::new()
                }
                Some(cmd) = mwi_cmds.recv() => {
                    self.mwi_command(cmd);
                    Vec::new()
                }
                Some(order) = control.recv() => {
                    self.calls.control(order);
                    Vec::new()
                }
                _ = sleep_until(deadline) => self.layer.on_timer(Instant::now().into_std()),
                _ = shutdown.changed() => return,
            };
            for action in actions {
                self.act(action);
            }
            // Two relaxed stores per event: cheaper than a timer, and never stale by
            // more than the time the core is idle (when nothing changes anyway).
            let m = &self.metrics;
            m.transactions.store(self.layer.len() as u64, Relaxed);
            m.calls_up.store(self.calls.handles.len() as u64, Relaxed);
        }
    }

    /// A received message into the transaction layer, except a CANCEL that matches no
    /// INVITE here while another node may have it (a VIP handed over while it rang, see
    /// `cluster::tunnel`): that one is asked about instead of answered 481, and one asked
    /// about by another node is answered only if it is ours.
    fn on_inbound(&mut self, msg: SipMessage, peer: Peer, asked: bool) -> Vec<Action> {
        if let SipMessage::Request(req) = &msg {
            if req.method == Method::Cancel
                && !self.layer.knows_cancel(req)
                && (asked || self.transport.ask_others(&msg, &peer))
            {
                return Vec::new();
            }
        }
        self.layer.on_message(msg, peer, Instant::now().into_std())
    }

    fn act(&mut self, action: Action) {
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
                        if !self.calls.deliver(
                            call,
                            SipIn::Request {
                                key: key.clone(),
                                req,
                                from,
                            },
                        ) {
                            let r = self.simple(&fallback, 481);
                            self.reply(&key, r);
                        }
                    }
                    None => self.dispatch(key, req, from),
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
                    self.calls.deliver(
                        call,
                        SipIn::Response {
                            key: Some(key),
                            resp,
                        },
                    );
                }
            }
            Action::StrayResponse { resp, .. } => {
                if let Some((call, _)) = self.calls.for_call_id(call_id_of(&resp.headers)) {
                    self.calls
                        .deliver(call, SipIn::Response { key: None, resp });
                }
            }
            Action::Timeout { key } | Action::TransportError { key } => {
                debug!(?key, "transaction timed out or failed");
                if let Some(call) = self.calls.by_tx.get(&key).copied() {
                    self.calls.deliver(call, SipIn::Timeout(key));
                }
            }
            Action::Terminated { key } => {
                self.calls.by_tx.remove(&key);
                self.mwi_txs.remove(&key);
            }
        }
    }

    /// Carries out what a call task asks.
    fn call_command(&mut self, cmd: CoreCommand) {
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
                let r = match &leg.dialog {
                    Some(d) => self.tagged(&leg.invite, 487, &d.id().local_tag),
                    None => self.simple(&leg.invite, 487),
                };
                self.reply(&leg.key, r);
                leg.cancelled_in_hand_back(&self.calls.log);
                return;
            }
            CoreCommand::Unanswered { call, leg, outcome } => {
                match self.calls.fallbacks.remove(&call) {
                    Some(f) => {
                        let app = (f.app)(outcome);
                        self.start_app(*leg, app);
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
                self.dial(*leg, numbers, timeout, Some(fallback), None);
                return;
            }
            CoreCommand::Adopt { call, call_id } => {
                self.calls.adopt(call, call_id);
                return;
            }
            CoreCommand::Sip { call, cmd } => (call, cmd),
        };
        let now = Instant::now().into_std();
        match cmd {
            Command::SendRequest { req, to } => self.start_client(call, req, to),
            Command::Cancel { invite, to } => match self.layer.build_cancel(&invite) {
                Some(cancel) => self.start_client(call, cancel, to),
                None => debug!(?invite, "nothing to cancel"),
            },
            Command::SendAck { req, to } => {
                if let Err(e) = self.transport.send(&SipMessage::Request(req), &to) {
                    debug!(error = %e, "ACK not sent");
                }
            }
            Command::Respond { key, resp } => {
                for a in self.layer.respond(&key, resp, now) {
                    self.act(a);
                }
            }
            _ => {}
        }
    }

    /// Carries out what the MWI task asks: its responses, and NOTIFYs as client
    /// transactions whose outcome goes back to it.
    fn mwi_command(&mut self, cmd: MwiCommand) {
        match cmd {
            MwiCommand::Respond { key, resp } => self.reply(&key, resp),
            MwiCommand::Unsolicited { mailbox, counts } => {
                let node_id = self.calls.node_id.clone();
                let public = self.calls.public_address.clone();
                // Only phones this node reaches: another node's VIP is not ours to send
                // from (that node sends its own phones' NOTIFYs, from its own mailbox
                // counts).
                let reach = self.calls.reach.clone();
                let reachable = self
                    .registrar
                    .lookup(&mailbox)
                    .into_iter()
                    .filter(|b| reach.reaches(b));
                for b in reachable {
                    let Some(peer) = target_peer(&b, &node_id, |c| self.transport.is_open(c))
                    else {
                        continue;
                    };
                    let host = host_for(public.as_deref(), &peer);
                    let req = mwi::unsolicited_notify(
                        &mwi::UnsolicitedTarget {
                            contact_uri: &b.contact_uri,
                            peer,
                            route: &b.path,
                            local_contact: &contact_for(&host, &peer),
                            domain: &host,
                        },
                        &mailbox,
                        counts,
                        &format!("{:032x}", rand::random::<u128>()),
                        &format!("{:08x}", rand::random::<u32>()),
                        &crate::sip::transaction::new_branch(&mut rand::thread_rng()),
                    );
                    debug!(mailbox, contact = %b.contact_uri, "unsolicited MWI NOTIFY");
                    // Its outcome matters to nobody: the next change sends another.
                    self.start_transaction(req, peer, |_, _| {});
                }
            }
            MwiCommand::SendNotify { req, to } => {
                self.start_transaction(req, to, |core, key| {
                    core.mwi_txs.insert(key.clone());
                });
            }
        }
    }

    /// A SUBSCRIBE: only `message-summary` is served. A new one is authenticated like an
    /// INVITE (407); one in a dialog is vouched for by its dialog. The MWI task answers.
    fn subscribe(&mut self, key: TxKey, req: Request, from: Peer) {
        if !mwi::is_message_summary(&req) {
            let mut r = self.simple(&req, 489);
            r.headers
                .push(HeaderName::Other("Allow-Events".into()), mwi::EVENT);
            return self.reply(&key, r);
        }
        let subscriber = if mwi::is_in_dialog(&req) {
            String::new()
        } else {
            match self
                .registrar
                .authenticate(&req, &HeaderName::ProxyAuthorization)
            {
                AuthOutcome::Ok(user) => user,
                AuthOutcome::Challenge { stale } => {
                    let r = self.registrar.challenge_with(
                        &req,
                        stale,
                        407,
                        HeaderName::ProxyAuthenticate,
                    );
                    return self.reply(&key, r);
                }
                AuthOutcome::Forbidden => {
                    info!(from = %from.remote, "SUBSCRIBE refused: bad credentials");
                    let r = self.simple(&req, 403);
                    return self.reply(&key, r);
                }
                AuthOutcome::Bad(why) => {
                    debug!(why, "malformed credentials");
                    let r = self.simple(&req, 400);
                    return self.reply(&key, r);
                }
                AuthOutcome::Load(number) => return self.load_then_retry(number, key, req, from),
            }
        };
        let local_contact = contact_for(
            &host_for(self.calls.public_address.as_deref(), &from),
            &from,
        );
        let busy = self.simple(&req, 503);
        let input = MwiIn::Subscribe(Box::new(SubscribeIn {
            key: key.clone(),
            req,
            from,
            subscriber,
            local_contact,
        }));
        if self.mwi.try_send(input).is_err() {
            let mut r = busy;
            r.headers.push(HeaderName::Other("Retry-After".into()), "5");
            self.reply(&key, r);
        }
    }

    /// Starts a client transaction for a call; a send that fails at once is a transport
    /// error of the transaction (the call hears of it as a timeout).
    fn start_client(&mut self, call: CallRef, req: Request, to: Peer) {
        self.start_transaction(req, to, |core, key| {
            core.calls.by_tx.insert(key.clone(), call);
        });
    }

    /// Starts a client transaction and sends its request; `track` records whom its
    /// outcome goes to before anything is sent, since a send that fails at once is a
    /// transport error of the transaction, reported at once.
    fn start_transaction(&mut self, req: Request, to: Peer, track: impl FnOnce(&mut Self, &TxKey)) {
        let method = req.method.clone();
        let now = Instant::now().into_std();
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
                        other => self.act(other),
                    }
                }
                if failed {
                    for a in self.layer.transport_error(&key) {
                        self.act(a);
                    }
                }
            }
            Err(e) => debug!(error = %e, %method, "request refused by the transaction layer"),
        }
    }

    /// A new INVITE (no To tag): authenticate the caller, find the callee, start a call.
    fn invite(&mut self, key: TxKey, req: Request, from: Peer) {
        let max_forwards = req
            .headers
            .get(&HeaderName::MaxForwards)
            .and_then(|v| v.trim().parse::<u32>().ok());
        if max_forwards == Some(0) {
            let r = self.simple(&req, 483);
            return self.reply(&key, r);
        }
        let relay = HeaderName::Other(RELAY_HEADER.into());
        if let Some(value) = req.headers.get(&relay).map(str::to_owned) {
            return self.relayed_invite(key, req, from, &value);
        }
        // The dialled extension must be in memory before authenticating: checking the
        // credentials consumes the nonce count, so the request must not come back after.
        let callee = SipUri::parse(&req.uri).ok().and_then(|u| u.user);
        if let Some(c) = &callee {
            if self.registrar.cached_extension(c).is_none() {
                return self.load_then_retry(c.clone(), key, req, from);
            }
        }
        let user = match self
            .registrar
            .authenticate(&req, &HeaderName::ProxyAuthorization)
        {
            AuthOutcome::Ok(user) => user,
            AuthOutcome::Challenge { stale } => {
                let r =
                    self.registrar
                        .challenge_with(&req, stale, 407, HeaderName::ProxyAuthenticate);
                return self.reply(&key, r);
            }
            AuthOutcome::Forbidden => {
                info!(from = %from.remote, "call refused: bad credentials");
                let r = self.simple(&req, 403);
                return self.reply(&key, r);
            }
            AuthOutcome::Bad(why) => {
                debug!(why, "malformed credentials");
                let r = self.simple(&req, 400);
                return self.reply(&key, r);
            }
            AuthOutcome::Load(number) => return self.load_then_retry(number, key, req, from),
        };
        let from_h = match from_header(&req.headers) {
            Ok(f) => f,
            Err(_) => {
                let r = self.simple(&req, 400);
                return self.reply(&key, r);
            }
        };
        let from_user = SipUri::parse(&from_h.uri).ok().and_then(|u| u.user);
        if from_user.as_deref() != Some(user.as_str()) {
            info!(user = %user, "call refused: From is not the authenticated extension");
            let r = self.simple(&req, 403);
            return self.reply(&key, r);
        }
        let callee = match callee {
            Some(u) => u,
            None => {
                let r = self.simple(&req, 404);
                return self.reply(&key, r);
            }
        };
        let Some(leg) = self.new_caller_leg(key, req, from, user, callee) else {
            return;
        };
        if let Some(app) = self.calls.apps.get(&leg.dialled).cloned() {
            return self.start_app(leg, app);
        }
        self.route(leg);
    }

    /// An INVITE another node forwarded here for a phone this node reaches: checked by its
    /// signature instead of a digest challenge (that node authenticated the caller and
    /// ran the dialplan), then rung on this node's phones only.
    fn relayed_invite(&mut self, key: TxKey, req: Request, from: Peer, relay: &str) {
        let caller = from_header(&req.headers)
            .ok()
            .and_then(|f| SipUri::parse(&f.uri).ok())
            .and_then(|u| u.user);
        let checked = match &self.calls.reach.cluster {
            Some(link) => verify_relay(
                &link.secret,
                relay,
                crate::registrar::now_unix(),
                call_id_of(&req.headers).unwrap_or_default(),
            )
            .map_err(|e| e.to_string()),
            None => Err("this node is not in a cluster".to_owned()),
        };
        let checked = checked.and_then(|r| {
            let call_id = call_id_of(&req.headers).unwrap_or_default();
            if self
                .relays_seen
                .first_time(call_id, crate::registrar::now_unix())
            {
                Ok(r)
            } else {
                Err("a replay: its Call-ID was forwarded here already".to_owned())
            }
        });
        let relayed = match checked {
            Ok(r) => r,
            Err(why) => {
                warn!(from = %from.remote, why, "forwarded call refused");
                let r = self.simple(&req, 403);
                return self.reply(&key, r);
            }
        };
        // The first number names the callee (the CDR's, at the forwarding node, names
        // what was dialled); the phones of all of them ring.
        let (Some(caller), Some(callee)) = (caller, relayed.numbers.first().cloned()) else {
            let r = self.simple(&req, 400);
            return self.reply(&key, r);
        };
        let Some(leg) = self.new_caller_leg(key, req, from, caller, callee) else {
            return;
        };
        // The forwarding node owns the ring timeout: it cancels this leg when it gives up.
        self.dial(
            leg,
            relayed.numbers,
            RELAYED_RING_LIMIT,
            None,
            Some(relayed.node),
        );
    }

    /// Runs the dialplan for a new call: a leading dial goes to the B2BUA, anything else
    /// (prompts, menus, voicemail, rooms) to the dialplan's app. Without a dialplan (no
    /// routes at all) a call goes to the extension dialled.
    fn route(&mut self, leg: CallerLeg) {
        let plan = self.calls.plan.borrow().clone();
        if plan.route_count() == 0 {
            return match self.registrar.cached_extension(&leg.dialled) {
                None => self.load_then_retry(leg.dialled.clone(), leg.key, leg.invite, leg.from),
                Some(None) => {
                    info!(caller = %leg.caller, callee = %leg.dialled, "call to an unknown number: 404");
                    let r = self.simple(&leg.invite, 404);
                    self.reply(&leg.key, r)
                }
                Some(Some(_)) => {
                    let numbers = vec![leg.dialled.clone()];
                    let timeout = self.calls.settings.no_answer_timeout;
                    self.dial(leg, numbers, timeout, None, None)
                }
            };
        }
        let context = plan.start_context().unwrap_or("default").to_owned();
        let routing = plan.route(
            &CallContext {
                context: &context,
                number: &leg.dialled,
                caller: &leg.caller,
                now: jiff::Timestamp::now(),
            },
            self.registrar.as_ref(),
        );
        let actions = match routing {
            Routing::NoRoute => {
                info!(caller = %leg.caller, number = %leg.dialled, context = %context, "no route: 404");
                let r = self.simple(&leg.invite, 404);
                return self.reply(&leg.key, r);
            }
            Routing::Route { at, actions } => {
                info!(caller = %leg.caller, number = %leg.dialled, route = %at, "routed");
                actions
            }
        };
        let env = PlanEnv {
            plan,
            extensions: self.registrar.clone(),
            voicemail: Some(self.calls.voicemail.clone()),
        };
        let call = PlanCall {
            context,
            number: leg.dialled.clone(),
            caller: leg.caller.clone(),
        };
        match dialplan_app::leading_dial(&actions) {
            Some(DialStep {
                numbers,
                timeout,
                then,
            }) => {
                let fallback = dialplan_app::fallback(env, call, then);
                self.dial(leg, numbers, timeout, Some(fallback), None)
            }
            None => self.start_app(leg, dialplan_app::app(env, call, actions)),
        }
    }

    /// Rings every registered phone of `numbers` for the caller through the B2BUA (phones
    /// another node reaches through that node). When none can ring, or nobody answers,
    /// the caller goes to the `fallback` app (for the outcomes it takes), else gets the
    /// failure (480, 486...). A call `relayed_from` another node rings only the phones
    /// this node reaches, and that node keeps the call's rows.
    fn dial(
        &mut self,
        leg: CallerLeg,
        numbers: Vec<String>,
        timeout: Duration,
        fallback: Option<Fallback>,
        relayed_from: Option<String>,
    ) {
        let callee_call_id = format!("{:032x}", rand::random::<u128>());
        let targets = self
            .calls
            .reach
            .targets(&numbers, &callee_call_id, relayed_from.is_none());
        if targets.is_empty() {
            info!(caller = %leg.caller, callee = %leg.dialled, ?numbers, "nobody to ring");
            return match fallback {
                Some(f) if f.outcomes.contains(&DialOutcome::Unavailable) => {
                    let app = (f.app)(DialOutcome::Unavailable);
                    self.start_app(leg, app)
                }
                _ => {
                    let r = self.simple(&leg.invite, 480);
                    self.reply(&leg.key, r)
                }
            };
        }
        let socks = self
            .calls
            .ports
            .allocate()
            .and_then(|a| Ok((a, self.calls.ports.allocate()?)));
        let Some((sock_a, sock_b)) = self.ports_or_503(&leg, socks) else {
            return;
        };
        let relay_ports = [sock_a.rtp_addr().port(), sock_b.rtp_addr().port()];
        let media_ip = self.media_ip_towards(&leg.from);
        let relay = Relay::spawn(sock_a, sock_b, [Remote::default(); 2], self.calls.relay);
        let public = self.calls.public_address.clone();
        let caller_name = from_header(&leg.invite.headers)
            .ok()
            .and_then(|f| f.display.clone())
            .unwrap_or_default();
        let caller_name = caller_name.trim_matches('"').to_owned();
        let domain = targets
            .first()
            .map(|t| host_for(public.as_deref(), &t.peer))
            .unwrap_or_else(|| host_for(public.as_deref(), &leg.from));
        let caller_call_id = call_id_of(&leg.invite.headers)
            .unwrap_or_default()
            .to_owned();
        let (outcomes, fallback) = match fallback {
            Some(f) => (f.outcomes.clone(), Some(f)),
            None => (Vec::new(), None),
        };
        let forks = targets.len();
        let params = CallParams {
            key: leg.key,
            caller_contact: contact_for(&host_for(public.as_deref(), &leg.from), &leg.from),
            invite: leg.invite,
            from: leg.from,
            offer: leg.offer,
            caller: leg.caller.clone(),
            caller_name,
            callee: leg.dialled.clone(),
            domain,
            targets,
            callee_call_id: callee_call_id.clone(),
            media_ip,
            relay_ports,
            seed: rand::random(),
            caller_dialog: leg.dialog,
            ring_timeout: Some(timeout),
            fallback: outcomes,
        };
        let call = self.calls.next_ref;
        self.calls.next_ref += 1;
        self.metrics.calls_started.fetch_add(1, Relaxed);
        let id = leg
            .record
            .as_ref()
            .map(|r| r.id().to_owned())
            .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
        let mut settings = self.calls.settings.clone();
        let log = match &relayed_from {
            None => {
                info!(call = %id, caller = %leg.caller, callee = %leg.dialled, forks, "call");
                self.calls.log.clone()
            }
            Some(node) => {
                info!(call = %id, caller = %leg.caller, callee = %leg.dialled, forks, from_node = %node, "call forwarded by another node");
                // That node records the call, and writes its rows and CDR.
                settings.record = None;
                CallLog::kept_elsewhere()
            }
        };
        let handle = spawn_call(TaskParams {
            call,
            id,
            params,
            settings,
            relay,
            log,
            node_id: self.calls.node_id.clone(),
            core: self.calls.commands.clone(),
            record: leg.record,
        });
        if let Some(f) = fallback {
            self.calls.fallbacks.insert(call, f);
        }
        self.calls.by_call_id.insert(caller_call_id.clone(), call);
        self.calls.by_call_id.insert(callee_call_id.clone(), call);
        self.calls
            .handles
            .insert(call, (handle, [caller_call_id, callee_call_id]));
    }

    /// The media sockets a call got, or `None` once its caller was told 503 (with
    /// Retry-After: ports free up as calls end).
    fn ports_or_503<T>(
        &mut self,
        leg: &CallerLeg,
        allocated: Result<T, crate::media::MediaError>,
    ) -> Option<T> {
        match allocated {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(error = %e, "no media ports: 503");
                let mut r = self.simple(&leg.invite, 503);
                r.headers.push(HeaderName::Other("Retry-After".into()), "5");
                self.reply(&leg.key, r);
                None
            }
        }
    }

    /// A call answered by an app (a test app by number, or the dialplan's): one leg,
    /// ended on our media endpoint.
    fn start_app(&mut self, leg: CallerLeg, app: AppFn) {
        let allocated = self.calls.ports.allocate();
        let Some(sockets) = self.ports_or_503(&leg, allocated) else {
            return;
        };
        let media_ip = self.media_ip_towards(&leg.from);
        let public = self.calls.public_address.clone();
        let caller_call_id = call_id_of(&leg.invite.headers)
            .unwrap_or_default()
            .to_owned();
        let call = self.calls.next_ref;
        self.calls.next_ref += 1;
        self.metrics.calls_started.fetch_add(1, Relaxed);
        let id = leg
            .record
            .as_ref()
            .map(|r| r.id().to_owned())
            .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
        info!(call = %id, caller = %leg.caller, app = %leg.dialled, "app call");
        let handle = spawn_app_call(AppTaskParams {
            call,
            id,
            caller: leg.caller,
            dialled: leg.dialled,
            leg: AppLegParams {
                key: leg.key,
                local_contact: contact_for(&host_for(public.as_deref(), &leg.from), &leg.from),
                invite: leg.invite,
                from: leg.from,
                offer: leg.offer,
                media_ip,
                media_port: sockets.rtp_addr().port(),
                seed: rand::random(),
                dialog: leg.dialog,
            },
            settings: self.calls.settings.clone(),
            sockets,
            endpoint: EndpointConfig {
                media_timeout: self.calls.relay.media_timeout,
                latch: self.calls.relay.latch,
            },
            app,
            sounds: self.calls.sounds.clone(),
            rooms: self.calls.rooms.clone(),
            log: self.calls.log.clone(),
            node_id: self.calls.node_id.clone(),
            core: self.calls.commands.clone(),
            record: leg.record,
            ports: self.calls.ports.clone(),
            resolver: self.calls.resolver.clone(),
        });
        self.calls.by_call_id.insert(caller_call_id.clone(), call);
        self.calls
            .handles
            .insert(call, (handle, [caller_call_id.clone(), caller_call_id]));
    }

    /// The INVITE's SDP offer; without a usable one the INVITE is answered (488 or 400,
    /// the reason in the phrase) and `None` returned.
    /// The caller's leg of a new INVITE from `caller` to `dialled`, or `None` once the
    /// caller was refused for its offer.
    fn new_caller_leg(
        &mut self,
        key: TxKey,
        req: Request,
        from: Peer,
        caller: String,
        dialled: String,
    ) -> Option<CallerLeg> {
        let offer = self.offer_or_refuse(&key, &req)?;
        Some(CallerLeg {
            key,
            invite: req,
            from,
            offer,
            caller,
            dialled,
            dialog: None,
            record: None,
        })
    }

    fn offer_or_refuse(&mut self, key: &TxKey, req: &Request) -> Option<SessionDescription> {
        match parse_offer(req) {
            Ok(o) => Some(o),
            Err(e) => {
                info!(error = %e, "call refused");
                let status = e.status();
                let mut r =
                    Response::for_request(req, status, &format!("{} ({e})", reason_phrase(status)));
                r.ensure_to_tag(&format!("{:08x}", rand::random::<u32>()));
                self.reply(key, r);
                None
            }
        }
    }

    /// The address our SDP names towards a phone: `[media] address`, else the address
    /// the media sockets are bound to, else the local address that routes to the phone.
    fn media_ip_towards(&self, from: &Peer) -> IpAddr {
        self.calls
            .media_address
            .or_else(|| Some(self.calls.ports.ip()).filter(|ip| !ip.is_unspecified()))
            .or_else(|| local_ip_towards(from.remote))
            .unwrap_or(from.local.ip())
    }

    /// Loads an extension from the store, then handles the request again.
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
        self.tagged(req, status, &format!("{:08x}", rand::random::<u32>()))
    }

    /// A response of our own with the To tag `tag` (kept if the request has one).
    fn tagged(&self, req: &Request, status: u16, tag: &str) -> Response {
        let mut r = Response::for_request(req, status, reason_phrase(status));
        r.ensure_to_tag(tag);
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
                if write.adds_binding() {
                    let _ = self.mwi.try_send(MwiIn::Registered {
                        mailbox: write.aor.clone(),
                    });
                }
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
            Outcome::Load(number) => self.load_then_retry(number, key, req, from),
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
        // RFC 3261 8.2.2.3: refuse extensions we were required to understand. A call
        // also understands 100rel (the dialog layer sends reliable 18x, RFC 3262).
        let understood = |t: &str| {
            SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(t))
                || (req.method == Method::Invite && t.eq_ignore_ascii_case("100rel"))
        };
        let unsupported: Vec<&str> = req
            .headers
            .list(&HeaderName::Require)
            .filter(|t| !understood(t))
            .collect();
        if !unsupported.is_empty() && req.method != Method::Cancel {
            let mut r = self.simple(&req, 420);
            r.headers
                .push(HeaderName::Unsupported, unsupported.join(", "));
            return self.reply(&key, r);
        }
        if req.method == Method::Subscribe {
            return self.subscribe(key, req, from);
        }
        // A request with a To tag belongs to a dialog; no call of ours has it.
        let in_dialog = to_header(&req.headers).is_ok_and(|t| t.tag().is_some());
        if in_dialog && req.method != Method::Register && req.method != Method::Options {
            let r = self.simple(&req, 481);
            return self.reply(&key, r);
        }
        match req.method {
            Method::Register => self.register(key, req, from),
            Method::Invite => self.invite(key, req, from),
            Method::Options => {
                let mut r = self.simple(&req, 200);
                r.headers.push(HeaderName::Allow, ALLOWED);
                r.headers
                    .push(HeaderName::Other("Accept".into()), "application/sdp");
                r.headers.push(HeaderName::Supported, SUPPORTED.join(", "));
                r.headers
                    .push(HeaderName::Other("Allow-Events".into()), mwi::EVENT);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(transport: &str, flow: Option<&str>) -> crate::store::Binding {
        crate::store::Binding {
            aor: "200".into(),
            binding_key: "k".into(),
            contact_uri: "sip:200@10.0.0.7:5062".into(),
            q: None,
            expires_at: 0,
            call_id: "c".into(),
            cseq: 1,
            received: "192.0.2.10:40000".into(),
            transport: transport.into(),
            local_addr: "198.51.100.1:5060".into(),
            flow: flow.map(str::to_owned),
            path: Vec::new(),
            user_agent: String::new(),
            instance_id: None,
            reg_id: None,
            node_id: "n1".into(),
            updated_at: 0,
        }
    }

    #[test]
    fn forks_go_where_the_phone_registered_from() {
        // UDP: to the source address, from our socket it registered to.
        let p = target_peer(&binding("udp", None), "n1", |_| true).expect("udp");
        assert_eq!(p.transport, Transport::Udp);
        assert_eq!(p.remote, "192.0.2.10:40000".parse().expect("addr"));
        assert_eq!(p.local, "198.51.100.1:5060".parse().expect("addr"));
        // TCP: on its connection while this node holds it open, else to the Contact.
        let open = |_| true;
        let p = target_peer(&binding("tcp", Some("n1:42")), "n1", open).expect("tcp");
        assert_eq!(p.conn, Some(ConnId(42)));
        assert_eq!(p.remote, "192.0.2.10:40000".parse().expect("addr"));
        let contact: SocketAddr = "10.0.0.7:5062".parse().expect("addr");
        for (flow, is_open) in [(Some("n2:42"), true), (None, true), (Some("n1:42"), false)] {
            let p = target_peer(&binding("tcp", flow), "n1", |_| is_open).expect("tcp");
            assert_eq!((p.conn, p.remote), (None, contact), "{flow:?} {is_open}");
        }
        assert!(target_peer(&binding("sctp", None), "n1", open).is_none());
    }

    #[test]
    fn contacts_name_the_flow() {
        let mut p = target_peer(&binding("udp", None), "n1", |_| true).expect("udp");
        assert_eq!(host_for(None, &p), "198.51.100.1");
        assert_eq!(host_for(Some("pbx.example"), &p), "pbx.example");
        assert_eq!(
            contact_for("198.51.100.1", &p),
            "sip:ringfort@198.51.100.1:5060"
        );
        p.transport = Transport::Tcp;
        assert_eq!(
            contact_for("198.51.100.1", &p),
            "sip:ringfort@198.51.100.1:5060;transport=tcp"
        );
        // A wildcard socket: the address towards the peer.
        p.local = "0.0.0.0:5060".parse().expect("addr");
        p.remote = "127.0.0.1:5070".parse().expect("addr");
        assert_eq!(host_for(None, &p), "127.0.0.1");
    }
}
