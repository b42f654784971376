//! The running node: binds the transports, starts the tasks and wires them together, and
//! stops them. Its rooms, each with one job:
//! - [`admission`]: pure; a new request in, one decision out (every RFC 3261 8.2 answer
//!   and every auth decision);
//! - [`reach`]: which node, socket and flow reaches a phone; the forks of a new leg;
//! - [`spawn`]: starting call and app tasks (ports, settings, the dialplan in force);
//! - [`core`]: the task that owns the transaction layer and carries out decisions;
//! - [`tasks`]: the binding writer, NAT keepalives, samples and the sweeper.
//!
//! This file owns only configuration of those rooms, task wiring and shutdown; it must
//! not hold protocol logic.

pub mod admission;
mod core;
pub mod reach;
mod spawn;
mod tasks;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use self::core::{CallTable, Core, Inputs};
use self::reach::Reacher;
use self::spawn::Spawner;
use self::tasks::{Answer, ShardOrders, WriteJob};
use crate::call::{
    spawn_writer, Apps, CallSettings, CoreCommand, RecordSettings, SoundLibrary, TargetResolver,
};
use crate::cluster::view::ClusterLink;
use crate::config::{Config, RecordMode};
use crate::dialplan::Plan;
use crate::media::conference::Rooms;
use crate::media::mixer::MixerConfig;
use crate::media::recorder::{repair_dir, Layout, Repair};
use crate::media::{PortAllocator, RelayConfig};
use crate::metrics::NodeMetrics;
use crate::registrar::{Registrar, RegistrarConfig};
use crate::sip::dialog::DialogConfig;
use crate::sip::shard::ShardId;
use crate::sip::transaction::{Timers, TransactionLayer};
use crate::store::Store;
use crate::transport::{
    self, Bound, Inbound, Inboxes, TransportConfig, TransportError, TransportHandle,
};
use crate::voicemail::mwi::MwiConfig;
use crate::voicemail::mwi_task::{spawn_mwi, MwiCommand};
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

/// Received messages waiting for a shard; past this a UDP datagram is dropped (its sender
/// retransmits) and a TCP connection waits.
const INBOUND_QUEUE: usize = 4096;

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
    let shards = cfg.sip.shards();
    let (inbound_txs, mut inbound_rxs): (Vec<_>, Vec<_>) = (0..shards)
        .map(|_| mpsc::channel::<Inbound>(INBOUND_QUEUE))
        .unzip();
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
        Inboxes::new(inbound_txs),
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
    let registrar = Arc::new(Registrar::load(store, RegistrarConfig::from_config(cfg)).await?);
    let timers = Timers {
        t1: Duration::from_millis(cfg.sip.t1_ms),
        t2: Duration::from_millis(cfg.sip.t2_ms),
        t4: Duration::from_millis(cfg.sip.t4_ms),
    };
    let (write_tx, write_rx) = mpsc::channel::<WriteJob>(tasks::WRITE_QUEUE);
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
    let cluster_secret = cluster.as_ref().map(|l| l.secret.clone());
    let reach = Arc::new(Reacher {
        registrar: registrar.clone(),
        transport: transport.clone(),
        node_id: cfg.node.id.to_string(),
        public: cfg.sip.public_address.as_ref().map(|h| h.to_string()),
        cluster,
    });
    let metrics = Arc::new(NodeMetrics::default());
    let settings = CallSettings {
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
    };
    let sounds = Arc::new(SoundLibrary::new(
        cfg.paths.sounds.clone(),
        PROMPT_CACHE_BYTES,
    ));
    let rooms = Arc::new(Rooms::new(MixerConfig::default()));
    let mut tasks = vec![mwi_task];
    let mut answer_txs = Vec::with_capacity(shards);
    let mut orders = Vec::with_capacity(shards);
    for index in 0..shards {
        let shard = ShardId {
            index,
            count: shards,
        };
        let (answer_tx, answer_rx) = mpsc::channel::<Answer>(8192);
        let (call_tx, call_rx) = mpsc::channel::<CoreCommand>(8192);
        let (shard_mwi_tx, shard_mwi_rx) = mpsc::channel::<MwiCommand>(1024);
        let (shard_control_tx, shard_control_rx) = mpsc::channel::<NodeControl>(64);
        let resolver: TargetResolver = {
            let reach = reach.clone();
            Arc::new(move |numbers: &[String]| {
                let call_id = shard.new_call_id(&mut rand::thread_rng());
                let targets = reach.targets(numbers, &call_id, true, crate::now_unix());
                (call_id, targets)
            })
        };
        let spawner = Spawner {
            settings: settings.clone(),
            ports: ports.clone(),
            media_address: cfg.media.address,
            public_address: cfg.sip.public_address.as_ref().map(|h| h.to_string()),
            relay: RelayConfig::with_timeout_secs(cfg.media.media_timeout_secs),
            apps: apps.clone(),
            sounds: sounds.clone(),
            rooms: rooms.clone(),
            resolver,
            reach: reach.clone(),
            registrar: registrar.clone(),
            node_id: cfg.node.id.to_string(),
            commands: call_tx,
            log: call_log.clone(),
            plan: plan_rx.clone(),
            voicemail: voicemail.clone(),
            metrics: metrics.clone(),
            next_ref: 0,
            shard,
        };
        let core = Core {
            shard,
            metrics: metrics.clone(),
            relays_seen: Default::default(),
            cluster_secret: cluster_secret.clone(),
            layer: TransactionLayer::new(timers),
            transport: transport.clone(),
            registrar: registrar.clone(),
            server_header: cfg.sip.user_agent.clone(),
            answers: answer_tx.clone(),
            writes: write_tx.clone(),
            mwi: mwi.clone(),
            mwi_txs: HashSet::new(),
            calls: CallTable::default(),
            spawner,
            plans: plans.clone(),
            reported: (0, 0),
        };
        let inputs = Inputs {
            inbound: inbound_rxs.remove(0),
            answers: answer_rx,
            calls: call_rx,
            mwi: shard_mwi_rx,
            control: shard_control_rx,
            shutdown: shutdown_rx.clone(),
        };
        tasks.push(tokio::spawn(core.run(inputs)));
        answer_txs.push(answer_tx);
        orders.push(ShardOrders {
            mwi: shard_mwi_tx,
            control: shard_control_tx,
        });
    }
    // The MWI task and the admin API talk to the node as a whole; their orders go to the
    // shard they concern.
    drop(write_tx);
    drop(call_log);
    tasks.push(tokio::spawn(tasks::route_orders(
        mwi_rx,
        control_rx,
        orders,
        shutdown_rx.clone(),
    )));
    {
        // Other nodes' registrations reach this node's cache (PostgreSQL clusters).
        let (registrar, shutdown) = (registrar.clone(), shutdown_rx.clone());
        tasks.push(tokio::spawn(async move {
            registrar.follow_other_nodes(shutdown).await
        }));
    }
    tasks.push(tokio::spawn(tasks::binding_writer(
        registrar.clone(),
        write_rx,
        answer_txs,
        metrics.clone(),
    )));
    if cfg.registrar.nat_keepalive_secs > 0 {
        tasks.push(tokio::spawn(tasks::nat_keepalives(
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
    tasks.push(tokio::spawn(tasks::sample_counts(
        registrar.store().clone(),
        cfg.node.id.to_string(),
        metrics.clone(),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(tasks::sweeper(
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

/// Logs what a started node serves.
pub fn log_started(cfg: &Config, bound: &Bound) {
    info!(
        node = %cfg.node.id,
        udp = ?bound.udp,
        tcp = ?bound.tcp,
        realm = %cfg.sip.realm,
        shards = cfg.sip.shards(),
        "ringfort node up"
    );
}
