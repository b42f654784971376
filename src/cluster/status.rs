//! `ringfort cluster status`: nodes and their health, each VIP's holder, term and time
//! left, rendered from store rows. Pure (the rows carry the database's clock), so tests
//! need no database.

use crate::store::{ClusterNode, VipLease};

/// A node is healthy while its last heartbeat is younger than this many periods.
pub const HEALTHY_HEARTBEATS: i64 = 3;

/// How long ago `n` sent its last heartbeat, by the database's clock (ms, never negative).
pub fn heartbeat_age_ms(n: &ClusterNode) -> i64 {
    (n.db_now_ms - n.heartbeat_at_ms).max(0)
}

/// A healthy node's last heartbeat is younger than this: [`HEALTHY_HEARTBEATS`] periods.
pub fn healthy_limit_ms(heartbeat_ms: u64) -> i64 {
    HEALTHY_HEARTBEATS * i64::try_from(heartbeat_ms).unwrap_or(i64::MAX / 4)
}

/// Whether `n` is healthy: its last heartbeat younger than [`healthy_limit_ms`] (as the
/// README says). The one rule `cluster status`, handover, routing and the API use.
pub fn is_healthy(n: &ClusterNode, heartbeat_ms: u64) -> bool {
    heartbeat_age_ms(n) < healthy_limit_ms(heartbeat_ms)
}

/// `ms` as seconds with one decimal: `1.5 s`.
fn secs(ms: i64) -> String {
    format!("{}.{} s", ms / 1000, (ms % 1000) / 100)
}

/// One line per node, then one per VIP (leased ones, then configured ones nobody has
/// taken yet), tab-separated like the other listings.
pub fn render(
    nodes: &[ClusterNode],
    leases: &[VipLease],
    configured_vips: &[String],
    heartbeat_ms: u64,
) -> Vec<String> {
    let mut out = Vec::new();
    if nodes.is_empty() {
        out.push("no nodes: none has sent a heartbeat ([cluster] enabled = true)".to_owned());
    }
    for n in nodes {
        let age = heartbeat_age_ms(n);
        let health = if is_healthy(n, heartbeat_ms) {
            "healthy"
        } else {
            "down"
        };
        let or_dash = |s: &str| {
            if s.is_empty() {
                "-".to_owned()
            } else {
                s.to_owned()
            }
        };
        out.push(format!(
            "node {}\t{health}\theartbeat {} ago\tsip={}\tmedia={}\tversion={}\tstarted={}\tcalls={}",
            n.node_id,
            secs(age),
            or_dash(&n.sip_address),
            or_dash(&n.media_address),
            n.version,
            n.started_at_ms / 1000,
            n.calls_active,
        ));
    }
    for l in leases {
        let state = if l.expires_at_ms == 0 {
            "released (free)".to_owned()
        } else if l.remaining_ms() > 0 {
            format!("expires in {}", secs(l.remaining_ms()))
        } else {
            format!("expired {} ago (free)", secs(-l.remaining_ms()))
        };
        out.push(format!(
            "vip {}\tholder={}\tterm={}\t{state}",
            l.vip, l.holder, l.term
        ));
    }
    for v in configured_vips {
        if !leases.iter().any(|l| &l.vip == v) {
            out.push(format!("vip {v}\tholder=-\tterm=0\tnever taken"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, age_ms: i64) -> ClusterNode {
        ClusterNode {
            node_id: id.into(),
            sip_address: "10.0.0.1:5060".into(),
            media_address: String::new(),
            started_at_ms: 1_700_000_000_000,
            heartbeat_at_ms: 1_000_000 - age_ms,
            version: "0.1.0".into(),
            db_now_ms: 1_000_000,
            calls_active: 2,
        }
    }

    fn lease(vip: &str, holder: &str, term: i64, expires_at_ms: i64) -> VipLease {
        VipLease {
            vip: vip.into(),
            holder: holder.into(),
            term,
            expires_at_ms,
            db_now_ms: 1_000_000,
        }
    }

    #[test]
    fn nodes_health_and_vip_holders() {
        let lines = render(
            &[node("a", 400), node("b", 3001)],
            &[
                lease("192.0.2.10", "a", 3, 1_001_100),
                lease("192.0.2.11", "b", 1, 988_000),
                lease("192.0.2.12", "a", 4, 0),
            ],
            &["192.0.2.10".into(), "192.0.2.13".into()],
            1000,
        );
        assert_eq!(
            lines,
            [
                "node a\thealthy\theartbeat 0.4 s ago\tsip=10.0.0.1:5060\tmedia=-\tversion=0.1.0\tstarted=1700000000\tcalls=2",
                "node b\tdown\theartbeat 3.0 s ago\tsip=10.0.0.1:5060\tmedia=-\tversion=0.1.0\tstarted=1700000000\tcalls=2",
                "vip 192.0.2.10\tholder=a\tterm=3\texpires in 1.1 s",
                "vip 192.0.2.11\tholder=b\tterm=1\texpired 12.0 s ago (free)",
                "vip 192.0.2.12\tholder=a\tterm=4\treleased (free)",
                "vip 192.0.2.13\tholder=-\tterm=0\tnever taken",
            ]
        );
        assert_eq!(
            render(&[], &[], &[], 1000),
            ["no nodes: none has sent a heartbeat ([cluster] enabled = true)"]
        );
    }
}
