//! `ringfort cluster handover`: move floating IPs on purpose (before an upgrade), from any
//! machine that reaches the database.
//!
//! Owns: choosing which leases to move and refusing a move that cannot work (nobody holds
//! the VIP, the target is unknown, down, or holds it already, no other node is healthy),
//! writing the request into the lease row, and waiting until another node holds the VIP.
//! Must not: touch a lease itself; the holder's agent drops the address and hands the
//! lease on (`super::election::Election::hand_over`), so the fencing stays with the
//! election.
//!
//! The old holder keeps running with its calls in progress (their media is on its own
//! address), while new REGISTERs and calls reach the new holder. Those calls were rung
//! from the VIP, though, so a phone's in-dialog requests after the move reach the new
//! holder: a full drain needs them relayed to the node that has the dialog.

use std::time::{Duration, Instant};

use super::status::{healthy_limit_ms, heartbeat_age_ms, is_healthy};
use crate::store::{ClusterNode, Store, StoreError, VipLease};

/// Why a handover is refused or did not happen.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("nobody holds VIP {0} (see `ringfort cluster status`)")]
    NotHeld(String),
    #[error("no VIP is held by any node (see `ringfort cluster status`)")]
    NoneHeld,
    #[error("node {0} is not in the cluster (it never sent a heartbeat)")]
    UnknownNode(String),
    #[error("node {node} is not healthy: last heartbeat {age_ms} ms ago (limit {limit_ms} ms)")]
    Unhealthy {
        node: String,
        age_ms: i64,
        limit_ms: i64,
    },
    #[error("node {node} already holds VIP {vip}")]
    AlreadyHolds { node: String, vip: String },
    #[error("VIP {vip}: no healthy node other than its holder {holder} to take it")]
    NoOtherNode { vip: String, holder: String },
    #[error("VIP {vip} went to {got}, not {wanted} (does {wanted} have it in [[cluster.vip]]?)")]
    WentElsewhere {
        vip: String,
        got: String,
        wanted: String,
    },
    #[error("VIP {vip} did not move within {waited:?} (holder {holder}, term {term})")]
    NotMoved {
        vip: String,
        holder: String,
        term: i64,
        waited: Duration,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One completed move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub vip: String,
    pub from: String,
    pub from_term: i64,
    pub to: String,
    pub to_term: i64,
    pub took: Duration,
}

impl std::fmt::Display for Moved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "vip {}\tmoved from {} (term {}) to {} (term {}) in {} ms",
            self.vip,
            self.from,
            self.from_term,
            self.to,
            self.to_term,
            self.took.as_millis()
        )
    }
}

/// Which held leases to move (`vip`: one, else every held one), refusing what cannot
/// work. Pure: the rows carry the database's clock.
pub fn plan(
    nodes: &[ClusterNode],
    leases: &[VipLease],
    vip: Option<&str>,
    to: Option<&str>,
    heartbeat_ms: u64,
) -> Result<Vec<VipLease>, HandoverError> {
    let healthy = |n: &ClusterNode| is_healthy(n, heartbeat_ms);
    if let Some(to) = to {
        let node = nodes
            .iter()
            .find(|n| n.node_id == to)
            .ok_or_else(|| HandoverError::UnknownNode(to.to_owned()))?;
        if !healthy(node) {
            return Err(HandoverError::Unhealthy {
                node: to.to_owned(),
                age_ms: heartbeat_age_ms(node),
                limit_ms: healthy_limit_ms(heartbeat_ms),
            });
        }
    }
    let held: Vec<&VipLease> = leases
        .iter()
        .filter(|l| l.remaining_ms() > 0 && vip.map_or(true, |v| v == l.vip))
        .collect();
    if held.is_empty() {
        return Err(match vip {
            Some(v) => HandoverError::NotHeld(v.to_owned()),
            None => HandoverError::NoneHeld,
        });
    }
    held.into_iter()
        .map(|l| {
            match to {
                Some(to) if to == l.holder => {
                    return Err(HandoverError::AlreadyHolds {
                        node: to.to_owned(),
                        vip: l.vip.clone(),
                    })
                }
                Some(_) => {}
                None if !nodes.iter().any(|n| n.node_id != l.holder && healthy(n)) => {
                    return Err(HandoverError::NoOtherNode {
                        vip: l.vip.clone(),
                        holder: l.holder.clone(),
                    })
                }
                None => {}
            }
            Ok(l.clone())
        })
        .collect()
}

/// Asks the holder of `lease` to hand it over, then waits (at most `limit`) until another
/// node holds it with a newer term.
pub async fn move_vip(
    store: &Store,
    lease: &VipLease,
    to: Option<&str>,
    limit: Duration,
) -> Result<Moved, HandoverError> {
    let started = Instant::now();
    let Some(asked) = store.request_vip_handover(&lease.vip, to).await? else {
        return Err(HandoverError::NotHeld(lease.vip.clone()));
    };
    loop {
        if let Some(now) = store.vip_lease(&asked.vip).await? {
            // A newer term in force: somebody acquired it after the holder let go.
            if now.term > asked.term && now.remaining_ms() > 0 {
                if let Some(wanted) = to.filter(|w| *w != now.holder) {
                    return Err(HandoverError::WentElsewhere {
                        vip: asked.vip.clone(),
                        got: now.holder,
                        wanted: wanted.to_owned(),
                    });
                }
                return Ok(Moved {
                    vip: asked.vip.clone(),
                    from: asked.holder.clone(),
                    from_term: asked.term,
                    to: now.holder,
                    to_term: now.term,
                    took: started.elapsed(),
                });
            }
            if started.elapsed() > limit {
                return Err(HandoverError::NotMoved {
                    vip: asked.vip.clone(),
                    holder: now.holder,
                    term: now.term,
                    waited: limit,
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, age_ms: i64) -> ClusterNode {
        ClusterNode {
            node_id: id.into(),
            sip_address: String::new(),
            media_address: String::new(),
            started_at_ms: 0,
            heartbeat_at_ms: 10_000 - age_ms,
            version: "0".into(),
            db_now_ms: 10_000,
            calls_active: 0,
        }
    }

    fn lease(vip: &str, holder: &str, remaining_ms: i64) -> VipLease {
        VipLease {
            vip: vip.into(),
            holder: holder.into(),
            term: 3,
            expires_at_ms: 10_000 + remaining_ms,
            db_now_ms: 10_000,
        }
    }

    #[test]
    fn the_target_must_be_a_healthy_other_node() {
        let nodes = [node("a", 100), node("b", 200), node("c", 5000)];
        let leases = [lease("192.0.2.1", "a", 900)];
        let ok = plan(&nodes, &leases, None, Some("b"), 1000).expect("b is fine");
        assert_eq!(ok, leases.to_vec());
        let e = plan(&nodes, &leases, None, Some("c"), 1000).expect_err("c is down");
        assert_eq!(
            e.to_string(),
            "node c is not healthy: last heartbeat 5000 ms ago (limit 3000 ms)"
        );
        assert!(matches!(
            plan(&nodes, &leases, None, Some("zz"), 1000),
            Err(HandoverError::UnknownNode(n)) if n == "zz"
        ));
        assert!(matches!(
            plan(&nodes, &leases, None, Some("a"), 1000),
            Err(HandoverError::AlreadyHolds { .. })
        ));
    }

    #[test]
    fn only_held_leases_move_and_the_named_vip_only() {
        let nodes = [node("a", 0), node("b", 0)];
        let leases = [
            lease("192.0.2.1", "a", 900),
            lease("192.0.2.2", "b", 900),
            lease("192.0.2.3", "a", -5),
        ];
        let all = plan(&nodes, &leases, None, None, 1000).expect("all held");
        assert_eq!(all.len(), 2);
        let one = plan(&nodes, &leases, Some("192.0.2.2"), None, 1000).expect("one");
        assert_eq!(one[0].vip, "192.0.2.2");
        assert!(matches!(
            plan(&nodes, &leases, Some("192.0.2.3"), None, 1000),
            Err(HandoverError::NotHeld(v)) if v == "192.0.2.3"
        ));
        assert!(matches!(
            plan(&nodes, &[], None, None, 1000),
            Err(HandoverError::NoneHeld)
        ));
    }

    #[test]
    fn a_move_to_any_node_needs_another_healthy_one() {
        let nodes = [node("a", 0), node("b", 9000)];
        let leases = [lease("192.0.2.1", "a", 900)];
        assert!(matches!(
            plan(&nodes, &leases, None, None, 1000),
            Err(HandoverError::NoOtherNode { holder, .. }) if holder == "a"
        ));
    }
}
