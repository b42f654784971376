//! The task that keeps this node's [`ClusterView`] fresh: every heartbeat period it reads
//! the node rows and the floating-IP leases (two small reads, whatever the call rate) and
//! publishes the view on a `watch`, which the core reads per call without waiting.
//!
//! Owns: turning rows into the view (which nodes count as healthy, which leases as held),
//! and [`ClusterLink`], the view with the secret and socket that the core's forwards and
//! the transport's tunnel both use.
//! Must not: decide routes (that is `routing`), or stop publishing on a database error: a
//! read that fails keeps the last view, so calls go on being routed through an outage
//! (a lease the view still shows may be stale by then; a forward to a node that lost its
//! VIP fails like any unreachable fork and the call goes on with the other forks).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::routing::ClusterView;
use super::status::is_healthy;
use crate::store::{ClusterNode, Store, VipLease};

/// This node's way into the cluster for calls (cluster mode only).
#[derive(Clone)]
pub struct ClusterLink {
    /// Who holds which floating IP and where the healthy nodes take SIP.
    pub view: watch::Receiver<Arc<ClusterView>>,
    /// The key forwarded INVITEs are signed and checked with.
    pub secret: Arc<[u8]>,
    /// Our socket that forwards to other nodes leave from (`[cluster] sip_address`).
    pub own_sip: SocketAddr,
}

impl ClusterLink {
    /// A link whose view never changes (the sender is dropped; the last view stays
    /// readable): for the pure modules' tests, which name no runtime.
    pub fn fixed(view: ClusterView, secret: &[u8], own_sip: SocketAddr) -> ClusterLink {
        let (_tx, view) = watch::channel(Arc::new(view));
        ClusterLink {
            view,
            secret: Arc::from(secret),
            own_sip,
        }
    }
}

/// Builds the view from the rows: nodes whose heartbeat is recent and that announce a SIP
/// address, leases still running by the database's clock, and every VIP this node is
/// configured with or that has a lease row.
pub fn view_of(
    nodes: &[ClusterNode],
    leases: &[VipLease],
    own_vips: &[IpAddr],
    heartbeat: Duration,
) -> ClusterView {
    let heartbeat_ms = u64::try_from(heartbeat.as_millis()).unwrap_or(u64::MAX);
    let mut view = ClusterView::default();
    for n in nodes.iter().filter(|n| is_healthy(n, heartbeat_ms)) {
        if let Ok(sip) = n.sip_address.parse::<SocketAddr>() {
            view.nodes.insert(n.node_id.clone(), sip);
        }
    }
    view.vips = own_vips.to_vec();
    for l in leases {
        let Ok(vip) = l.vip.parse::<IpAddr>() else {
            continue;
        };
        if !view.vips.contains(&vip) {
            view.vips.push(vip);
        }
        if l.remaining_ms() > 0 {
            view.vip_holders.insert(vip, l.holder.clone());
        }
    }
    view
}

/// Starts the task; the first view is read before this returns (empty when the database
/// does not answer), so the first call after start-up is already routed with it.
pub async fn spawn_view(
    store: Store,
    own_vips: Vec<IpAddr>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> (watch::Receiver<Arc<ClusterView>>, JoinHandle<()>) {
    let first = read(&store, &own_vips, every)
        .await
        .unwrap_or_else(|| ClusterView {
            vips: own_vips.clone(),
            ..ClusterView::default()
        });
    let (tx, rx) = watch::channel(Arc::new(first));
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            if let Some(view) = read(&store, &own_vips, every).await {
                tx.send_if_modified(|old| {
                    if **old == view {
                        return false;
                    }
                    debug!(?view, "cluster view changed");
                    *old = Arc::new(view);
                    true
                });
            }
        }
    });
    (rx, task)
}

async fn read(store: &Store, own_vips: &[IpAddr], every: Duration) -> Option<ClusterView> {
    // Bounded: a hung database must not hold the view longer than a few periods.
    let limit = every * 2;
    let rows = tokio::time::timeout(limit, async {
        Ok::<_, crate::store::StoreError>((
            store.list_cluster_nodes().await?,
            store.list_vip_leases().await?,
        ))
    })
    .await;
    match rows {
        Ok(Ok((nodes, leases))) => Some(view_of(&nodes, &leases, own_vips, every)),
        Ok(Err(e)) => {
            warn!(error = %e, "cannot read the cluster's nodes: routing with the last view");
            None
        }
        Err(_) => {
            warn!("reading the cluster's nodes timed out: routing with the last view");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, sip: &str, age_ms: i64) -> ClusterNode {
        ClusterNode {
            node_id: id.into(),
            sip_address: sip.into(),
            media_address: String::new(),
            started_at_ms: 0,
            heartbeat_at_ms: 10_000 - age_ms,
            version: "t".into(),
            db_now_ms: 10_000,
            calls_active: 0,
        }
    }

    fn lease(vip: &str, holder: &str, remaining: i64) -> VipLease {
        VipLease {
            vip: vip.into(),
            holder: holder.into(),
            term: 1,
            expires_at_ms: 10_000 + remaining,
            db_now_ms: 10_000,
        }
    }

    #[test]
    fn only_fresh_nodes_with_an_address_and_running_leases_count() {
        let nodes = [
            node("a", "10.0.0.1:5060", 500),
            node("b", "10.0.0.2:5060", 3_000),
            node("c", "", 10),
        ];
        let leases = [lease("10.0.0.100", "a", 900), lease("10.0.0.101", "b", -1)];
        let own: IpAddr = "10.0.0.102".parse().expect("ip");
        let v = view_of(&nodes, &leases, &[own], Duration::from_secs(1));
        assert_eq!(v.nodes.len(), 1);
        assert!(v.nodes.contains_key("a"));
        let held: IpAddr = "10.0.0.100".parse().expect("ip");
        assert_eq!(v.vip_holders.get(&held).map(String::as_str), Some("a"));
        assert_eq!(v.vip_holders.len(), 1);
        assert_eq!(v.vips.len(), 3);
    }
}
