//! The floating-IP agent and the heartbeat: thin tokio tasks around the sans-IO
//! [`Election`] and the store.
//!
//! Owns: running an election's commands in order (an address is gone before its lease is
//! released), one database operation in flight at a time, bounded by the renew period (a
//! hung database answers "error", never "yes"), and the `ip`-command implementation of
//! [`VipAddress`]. Must not: decide anything the election decides, or write SQL.
//!
//! Addresses are added with a kernel lifetime (`valid_lft`), refreshed on every renewal:
//! if this process dies or hangs, the kernel removes the address by itself about a second
//! after the last renewal, before the lease (1.5 s by default) can be taken over. That is
//! a backstop; the election's own timer is what the safety argument rests on.

use std::collections::VecDeque;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::election::{
    AcquireOutcome, Command, Election, ElectionTiming, Lease, LeaseRead, RenewOutcome,
};
use crate::config::{Config, VIP_DROP_MARGIN_MS};
use crate::store::{NodeHeartbeat, Renewal, Store};

/// Errors of the agent layer (the interface side; database errors feed the election).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot run {command}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
}

/// The interface side of one floating IP. Implemented with the `ip` command
/// ([`IpCommand`]); tests use a recording fake.
pub trait VipAddress: Send + Sync + 'static {
    /// Configure the address, or refresh it, with this kernel lifetime.
    fn add(&self, lifetime: Duration) -> impl Future<Output = Result<(), AgentError>> + Send;
    /// Remove the address; not having it is success.
    fn remove(&self) -> impl Future<Output = Result<(), AgentError>> + Send;
    /// Tell the segment the address is here now (gratuitous ARP).
    fn announce(&self) -> impl Future<Output = Result<(), AgentError>> + Send;
}

/// [`VipAddress`] through iproute2: `ip addr replace ADDR/32 dev IFACE valid_lft N
/// preferred_lft N` (`/128 nodad` for IPv6), `ip addr del ADDR/32 dev IFACE`, and
/// `arping -U -c 1 -I IFACE ADDR` (iputils) for IPv4 when installed. An optional network
/// namespace (`ip -n NS`, `ip netns exec NS arping`) is for tests.
#[derive(Debug, Clone)]
pub struct IpCommand {
    pub address: IpAddr,
    pub interface: String,
    pub netns: Option<String>,
}

impl IpCommand {
    fn prefix(&self) -> String {
        match self.address {
            IpAddr::V4(a) => format!("{a}/32"),
            IpAddr::V6(a) => format!("{a}/128"),
        }
    }

    fn ip_args(&self) -> Vec<String> {
        match &self.netns {
            Some(ns) => vec!["-n".into(), ns.clone()],
            None => Vec::new(),
        }
    }
}

/// Runs a program off the runtime's threads; a non-zero exit is [`AgentError::Failed`]
/// with its stderr.
async fn run(program: &str, args: Vec<String>) -> Result<(), AgentError> {
    let command = format!("{program} {}", args.join(" "));
    let program = program.to_owned();
    let spawned = tokio::task::spawn_blocking(move || {
        std::process::Command::new(program)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
    let out = spawned.map_err(|source| AgentError::Spawn {
        command: command.clone(),
        source,
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(AgentError::Failed {
        command,
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}

impl VipAddress for IpCommand {
    async fn add(&self, lifetime: Duration) -> Result<(), AgentError> {
        let secs = lifetime.as_secs().max(1).to_string();
        let mut args = self.ip_args();
        args.extend(["addr", "replace", &self.prefix(), "dev", &self.interface].map(String::from));
        args.extend(["valid_lft", &secs, "preferred_lft", &secs].map(String::from));
        if self.address.is_ipv6() {
            // No duplicate address detection: the lease is what makes it unique, and DAD
            // would keep the address unusable for a second.
            args.push("nodad".into());
        }
        run("ip", args).await
    }

    async fn remove(&self) -> Result<(), AgentError> {
        let mut args = self.ip_args();
        args.extend(["addr", "del", &self.prefix(), "dev", &self.interface].map(String::from));
        match run("ip", args).await {
            // Not configured: what we wanted (older and newer iproute2 wording).
            Err(AgentError::Failed { stderr, .. })
                if stderr.contains("Cannot assign requested address")
                    || stderr.contains("Address not found") =>
            {
                Ok(())
            }
            other => other,
        }
    }

    async fn announce(&self) -> Result<(), AgentError> {
        let IpAddr::V4(addr) = self.address else {
            // IPv6: the kernel sends unsolicited neighbour advertisements itself.
            return Ok(());
        };
        if !arping_installed() {
            static TOLD: std::sync::Once = std::sync::Once::new();
            TOLD.call_once(|| {
                tracing::info!(
                    "arping is not installed (iputils-arping): no gratuitous ARP; neighbours \
                     learn that the VIP moved when their ARP entries expire"
                );
            });
            return Ok(());
        }
        let mut args: Vec<String> = ["-U", "-c", "1", "-I", &self.interface, &addr.to_string()]
            .map(String::from)
            .to_vec();
        let program = match &self.netns {
            Some(ns) => {
                let mut a: Vec<String> = ["netns", "exec", ns, "arping"].map(String::from).to_vec();
                a.append(&mut args);
                args = a;
                "ip"
            }
            None => "arping",
        };
        // arping waits for its count; run it in the background so the agent carries on.
        let shown = format!("{program} {}", args.join(" "));
        tokio::spawn(async move {
            match run(program, args).await {
                Ok(()) => tracing::debug!(command = %shown, "gratuitous ARP sent"),
                Err(e) => tracing::warn!(error = %e, "gratuitous ARP failed"),
            }
        });
        Ok(())
    }
}

/// Whether an `arping` executable is on the PATH (looked up once).
fn arping_installed() -> bool {
    static FOUND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FOUND.get_or_init(|| {
        std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|dir| dir.join("arping").is_file())
        })
    })
}

/// What one VIP's agent needs.
#[derive(Debug, Clone)]
pub struct VipAgentParams {
    pub node_id: String,
    pub vip: IpAddr,
    pub priority: u8,
    pub timing: ElectionTiming,
}

impl VipAgentParams {
    /// The kernel lifetime of the address: whole seconds (the kernel's unit), a second
    /// under the hold window (the kernel's lifetime worker may run up to about a second
    /// late), at least one.
    pub fn address_lifetime(&self) -> Duration {
        let window = self
            .timing
            .hold_window()
            .saturating_sub(Duration::from_secs(1));
        Duration::from_secs(window.as_secs().max(1))
    }
}

/// A database answer on its way to the election.
enum DbAnswer {
    Read(LeaseRead),
    Acquire(AcquireOutcome),
    Renew(RenewOutcome),
}

type DbOp = Pin<Box<dyn Future<Output = DbAnswer> + Send>>;

/// Drives one VIP's election until `shutdown` turns true (or its sender goes); then drops
/// the address and releases the lease.
pub async fn run_vip<A: VipAddress>(
    store: Store,
    params: VipAgentParams,
    address: A,
    mut shutdown: watch::Receiver<bool>,
) {
    let vip = params.vip.to_string();
    let lease_ms = i64::try_from(params.timing.lease.as_millis()).unwrap_or(i64::MAX);
    // Every database operation is bounded: a hung database must read as an error.
    let op_timeout = params.timing.renew;
    let lifetime = params.address_lifetime();
    let mut election = Election::new(
        params.node_id.clone(),
        params.timing,
        params.priority,
        Instant::now(),
    );
    let mut queue: VecDeque<Command> = election.start(Instant::now()).into();
    let mut op: Option<DbOp> = None;
    let mut stopping = false;
    loop {
        while let Some(command) = queue.pop_front() {
            match command {
                Command::ReadLease => {
                    let (s, v) = (store.clone(), vip.clone());
                    op = Some(Box::pin(async move {
                        let res = tokio::time::timeout(op_timeout, s.vip_lease(&v)).await;
                        DbAnswer::Read(match res {
                            Ok(Ok(Some(l))) => LeaseRead::Found(Lease {
                                holder: l.holder,
                                term: l.term,
                                expires_at_ms: l.expires_at_ms,
                                db_now_ms: l.db_now_ms,
                            }),
                            Ok(Ok(None)) => LeaseRead::Absent,
                            Ok(Err(e)) => {
                                tracing::warn!(error = %e, "cannot read the VIP lease");
                                LeaseRead::DbError
                            }
                            Err(_) => {
                                tracing::warn!("reading the VIP lease timed out");
                                LeaseRead::DbError
                            }
                        })
                    }));
                }
                Command::TryAcquire => {
                    let (s, v, me) = (store.clone(), vip.clone(), params.node_id.clone());
                    op = Some(Box::pin(async move {
                        let res = tokio::time::timeout(
                            op_timeout,
                            s.acquire_vip_lease(&v, &me, lease_ms),
                        )
                        .await;
                        DbAnswer::Acquire(match res {
                            Ok(Ok(Some(term))) => AcquireOutcome::Won { term },
                            Ok(Ok(None)) => AcquireOutcome::Lost,
                            Ok(Err(e)) => {
                                tracing::warn!(error = %e, "cannot acquire the VIP lease");
                                AcquireOutcome::DbError
                            }
                            Err(_) => AcquireOutcome::DbError,
                        })
                    }));
                }
                Command::Renew { term } => {
                    let (s, v, me) = (store.clone(), vip.clone(), params.node_id.clone());
                    op = Some(Box::pin(async move {
                        let res = tokio::time::timeout(
                            op_timeout,
                            s.renew_vip_lease(&v, &me, term, lease_ms),
                        )
                        .await;
                        DbAnswer::Renew(match res {
                            Ok(Ok(Renewal::Renewed)) => RenewOutcome::Renewed,
                            Ok(Ok(Renewal::HandoverAsked { to })) => {
                                RenewOutcome::HandoverAsked { to }
                            }
                            Ok(Ok(Renewal::Lost)) => RenewOutcome::Lost,
                            Ok(Err(e)) => {
                                tracing::warn!(error = %e, "cannot renew the VIP lease");
                                RenewOutcome::DbError
                            }
                            Err(_) => {
                                tracing::warn!("renewing the VIP lease timed out");
                                RenewOutcome::DbError
                            }
                        })
                    }));
                }
                Command::Release { term } => {
                    let res = tokio::time::timeout(
                        op_timeout,
                        store.release_vip_lease(&vip, &params.node_id, term),
                    )
                    .await;
                    match res {
                        Ok(Ok(_)) => tracing::info!(term, "VIP lease released"),
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "cannot release the VIP lease; it will expire")
                        }
                        Err(_) => {
                            tracing::warn!("releasing the VIP lease timed out; it will expire")
                        }
                    }
                }
                Command::HandOver { term, to } => {
                    let res = tokio::time::timeout(
                        op_timeout,
                        store.hand_vip_lease_to(&vip, &params.node_id, term, &to, lease_ms),
                    )
                    .await;
                    match res {
                        Ok(Ok(true)) => tracing::info!(term, to = %to, "VIP lease handed over"),
                        Ok(Ok(false)) => tracing::warn!(term, "VIP lease already taken over"),
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "cannot hand the VIP lease over; it will expire")
                        }
                        Err(_) => {
                            tracing::warn!("handing the VIP lease over timed out; it will expire")
                        }
                    }
                }
                Command::AddAddress => match address.add(lifetime).await {
                    Ok(()) => tracing::info!(term = ?election.term(), "VIP address added"),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot add the VIP address: giving the VIP up for a lease period");
                        // Not the rest of this batch (the announce): the election's way out.
                        queue = election.address_failed(Instant::now()).into();
                        op = None;
                    }
                },
                Command::KeepAddress => {
                    if let Err(e) = address.add(lifetime).await {
                        tracing::error!(error = %e, "cannot refresh the VIP address");
                    }
                }
                Command::DropAddress => match address.remove().await {
                    Ok(()) => tracing::debug!("VIP address removed (or absent)"),
                    Err(e) => tracing::error!(error = %e, "cannot remove the VIP address"),
                },
                Command::Announce => {
                    if let Err(e) = address.announce().await {
                        tracing::warn!(error = %e, "cannot announce the VIP address");
                    }
                }
            }
        }
        if stopping {
            break;
        }
        if *shutdown.borrow() {
            queue = election.release(Instant::now()).into();
            op = None;
            stopping = true;
            continue;
        }
        let deadline = election.next_deadline().map(tokio::time::Instant::from_std);
        tokio::select! {
            Some(answer) = async { match op.as_mut() { Some(f) => Some(f.await), None => None } } => {
                op = None;
                let now = Instant::now();
                queue = match answer {
                    DbAnswer::Read(r) => election.lease_read(now, r),
                    DbAnswer::Acquire(a) => election.acquire_result(now, a),
                    DbAnswer::Renew(r) => election.renew_result(now, r),
                }
                .into();
            }
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                queue = election.tick(Instant::now()).into();
            }
            changed = shutdown.changed() => {
                if changed.is_err() {
                    // The node is gone without a word: stop the same way.
                    queue = election.release(Instant::now()).into();
                    op = None;
                    stopping = true;
                }
            }
        }
    }
    tracing::info!("VIP agent stopped");
}

/// Writes this node's heartbeat every `heartbeat_ms` until shutdown.
pub async fn run_heartbeat(
    store: Store,
    cfg: Config,
    calls_active: CallCount,
    mut shutdown: watch::Receiver<bool>,
) {
    let period = Duration::from_millis(cfg.cluster.heartbeat_ms);
    let started_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let node_id = cfg.node.id.to_string();
    let sip = cfg
        .cluster
        .sip_address
        .map(|a| a.to_string())
        .unwrap_or_default();
    let media = cfg
        .cluster
        .media_address
        .map(|a| a.to_string())
        .unwrap_or_default();
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.changed() => break,
        }
        let hb = NodeHeartbeat {
            node_id: &node_id,
            sip_address: &sip,
            media_address: &media,
            started_at_ms,
            version: env!("CARGO_PKG_VERSION"),
            calls_active: calls_active(),
        };
        match tokio::time::timeout(period, store.heartbeat_node(&hb)).await {
            Ok(Ok(())) => {
                if failing {
                    tracing::info!("cluster heartbeat written again");
                }
                failing = false;
            }
            Ok(Err(e)) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot write the cluster heartbeat");
            }
            Err(_) if !failing => {
                failing = true;
                tracing::warn!("writing the cluster heartbeat timed out");
            }
            _ => {}
        }
    }
}

/// The election timing `[cluster]` describes.
pub fn timing(cfg: &Config) -> ElectionTiming {
    ElectionTiming {
        lease: Duration::from_millis(cfg.cluster.lease_ms),
        renew: Duration::from_millis(cfg.cluster.renew_ms),
        max_clock_skew: Duration::from_millis(cfg.cluster.max_clock_skew_ms),
        drop_margin: Duration::from_millis(VIP_DROP_MARGIN_MS),
    }
}

/// How many calls the node runs now, for its heartbeat (the cluster does not know calls;
/// the node says).
pub type CallCount = std::sync::Arc<dyn Fn() -> i64 + Send + Sync>;

/// Starts the heartbeat and one agent per `[[cluster.vip]]` (with the `ip` command).
/// The caller starts it only when `[cluster] enabled`.
pub fn spawn(
    cfg: &Config,
    store: Store,
    calls_active: CallCount,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = vec![tokio::spawn(run_heartbeat(
        store.clone(),
        cfg.clone(),
        calls_active,
        shutdown.clone(),
    ))];
    for v in &cfg.cluster.vip {
        let params = VipAgentParams {
            node_id: cfg.node.id.to_string(),
            vip: v.address,
            priority: v.priority,
            timing: timing(cfg),
        };
        let address = IpCommand {
            address: v.address,
            interface: v.interface.clone(),
            netns: None,
        };
        let span = tracing::info_span!("vip", vip = %v.address, interface = %v.interface);
        tasks.push(tokio::spawn(
            run_vip(store.clone(), params, address, shutdown.clone()).instrument(span),
        ));
    }
    tasks
}

#[cfg(test)]
mod tests;
