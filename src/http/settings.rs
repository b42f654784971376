//! `GET /api/v1/settings` (the node's effective configuration, read-only, the database
//! URL's password masked) and `GET /api/v1/cluster` (the nodes and who holds each
//! floating IP, as `ringfort cluster status` shows them), for the panel's Settings page.
//! Reads only; the configuration changes in `ringfort.toml` (the dialplan through its
//! own endpoints).

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::auth::AdminOnly;
use super::error::ApiError;
use super::AppState;
use crate::cluster::status::{heartbeat_age_ms, is_healthy};
use crate::config::Config;

/// The configuration as the API shows it: every section and key with its effective value
/// (defaults and environment overrides applied), the database URL's password masked.
pub fn config_view(cfg: &Config) -> serde_json::Value {
    let mut shown = cfg.clone();
    shown.database.url = crate::store::redact_url(&cfg.database_url());
    serde_json::to_value(&shown).unwrap_or_else(|_| serde_json::json!({}))
}

#[derive(Serialize)]
pub struct Settings {
    pub node_id: String,
    pub config: serde_json::Value,
}

pub async fn settings(State(state): State<AppState>, _: AdminOnly) -> Json<Settings> {
    let node = &state.inner.node;
    Json(Settings {
        node_id: node.id.clone(),
        config: (*node.config).clone(),
    })
}

#[derive(Serialize)]
pub struct ClusterStatus {
    /// Whether this node runs in a cluster (`[cluster] enabled`).
    pub enabled: bool,
    pub nodes: Vec<NodeView>,
    pub vips: Vec<VipView>,
}

#[derive(Serialize)]
pub struct NodeView {
    pub node_id: String,
    /// Heartbeat younger than 3 periods, by the database's clock.
    pub healthy: bool,
    pub heartbeat_age_ms: i64,
    pub sip_address: String,
    pub media_address: String,
    pub version: String,
    /// Unix seconds, the node's own clock.
    pub started_at: i64,
    /// The calls it ran at its last heartbeat (forwarded legs included).
    pub calls_active: i64,
}

#[derive(Serialize)]
pub struct VipView {
    pub vip: String,
    pub holder: String,
    /// The fencing term of the last acquire.
    pub term: i64,
    /// "held", "released" (given up on purpose) or "expired" (free to take).
    pub state: &'static str,
    /// Until the lease ends, ms (0 when not held).
    pub remaining_ms: i64,
}

pub async fn cluster(
    State(state): State<AppState>,
    _: AdminOnly,
) -> Result<Json<ClusterStatus>, ApiError> {
    let s = &state.inner;
    let nodes = s
        .store
        .list_cluster_nodes()
        .await?
        .into_iter()
        .map(|n| NodeView {
            healthy: is_healthy(&n, s.node.heartbeat_ms),
            heartbeat_age_ms: heartbeat_age_ms(&n),
            node_id: n.node_id,
            sip_address: n.sip_address,
            media_address: n.media_address,
            version: n.version,
            started_at: n.started_at_ms / 1000,
            calls_active: n.calls_active,
        })
        .collect();
    let vips = s
        .store
        .list_vip_leases()
        .await?
        .into_iter()
        .map(|l| {
            let remaining = l.remaining_ms();
            let state = if l.expires_at_ms == 0 {
                "released"
            } else if remaining > 0 {
                "held"
            } else {
                "expired"
            };
            VipView {
                state,
                remaining_ms: remaining.max(0),
                vip: l.vip,
                holder: l.holder,
                term: l.term,
            }
        })
        .collect();
    Ok(Json(ClusterStatus {
        enabled: s.node.clustered,
        nodes,
        vips,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_password_is_masked_and_every_section_is_shown() {
        let mut cfg = Config::default();
        cfg.database.url = "postgres://pbx:hunter2@db/pbx".into();
        let v = config_view(&cfg);
        assert_eq!(v["database"]["url"], "postgres://pbx:***@db/pbx");
        assert!(!v.to_string().contains("hunter2"));
        for section in ["node", "sip", "registrar", "http", "media", "cluster"] {
            assert!(v[section].is_object(), "{section} in {v}");
        }
    }
}
