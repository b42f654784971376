//! Cluster rows: node heartbeats (`cluster_nodes`) and floating-IP leases (`vip_leases`).
//!
//! Every time written or compared here is the database's own clock (milliseconds), taken
//! inside the statement: on PostgreSQL the one clock every node shares, on SQLite (one
//! node) the host's. The lease statements are single conditional statements, atomic on
//! both backends: of two concurrent acquirers exactly one gets a row back (PostgreSQL
//! re-checks the `ON CONFLICT ... WHERE` under the row lock; SQLite has one writer).
//! The election rules (when to try, when to drop) belong to `crate::cluster::election`.

use sqlx::Row;

use super::{Backend, Inner, Store, StoreError};

/// A node's row, as the last heartbeat left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    pub node_id: String,
    /// `IP:port` other nodes reach this one at for SIP; empty when not configured.
    pub sip_address: String,
    /// The IP its media relay uses; empty when not configured.
    pub media_address: String,
    /// The node's own wall clock when this run started, ms (display only).
    pub started_at_ms: i64,
    /// The database's clock at the last heartbeat, ms.
    pub heartbeat_at_ms: i64,
    pub version: String,
    /// The database's clock when this was read, ms: ages are `db_now_ms - heartbeat_at_ms`.
    pub db_now_ms: i64,
    /// The calls the node ran at its last heartbeat.
    pub calls_active: i64,
}

/// What a heartbeat writes (the database adds its own time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHeartbeat<'a> {
    pub node_id: &'a str,
    pub sip_address: &'a str,
    pub media_address: &'a str,
    pub started_at_ms: i64,
    pub version: &'a str,
    /// The calls it runs now (every call task, forwarded legs included).
    pub calls_active: i64,
}

/// What a renewal found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// Extended; nothing asked.
    Renewed,
    /// Extended, and `ringfort cluster handover` asks the holder to hand the VIP over: to
    /// this node, or (None) to any other.
    HandoverAsked { to: Option<String> },
    /// The row no longer names this holder with this term.
    Lost,
}

impl Renewal {
    /// The lease was extended.
    pub fn renewed(&self) -> bool {
        !matches!(self, Renewal::Lost)
    }
}

/// A floating IP's lease row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipLease {
    pub vip: String,
    pub holder: String,
    /// The fencing token: +1 on every acquire.
    pub term: i64,
    /// The database's clock, ms; 0 after a graceful release.
    pub expires_at_ms: i64,
    /// The database's clock when this was read, ms.
    pub db_now_ms: i64,
}

impl VipLease {
    /// Milliseconds the lease still runs by the database's clock (<= 0: free to take).
    pub fn remaining_ms(&self) -> i64 {
        self.expires_at_ms - self.db_now_ms
    }
}

/// The database's clock in ms, as an SQL expression. PostgreSQL: `statement_timestamp()`,
/// one value for the whole statement, taken when the server received it (never before the
/// node sent it, which the election's timing relies on).
fn db_now(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "(EXTRACT(EPOCH FROM statement_timestamp()) * 1000)::BIGINT",
        Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
    }
}

/// Decode a lease row of `SELECT vip, holder, term, expires_at, <db now>` (either
/// backend's row type, as `super::extension_from_row!` does).
macro_rules! lease_from_row {
    ($row:expr) => {{
        let r = $row;
        Ok::<_, sqlx::Error>(VipLease {
            vip: r.try_get(0)?,
            holder: r.try_get(1)?,
            term: r.try_get(2)?,
            expires_at_ms: r.try_get(3)?,
            db_now_ms: r.try_get(4)?,
        })
    }};
}

impl Store {
    /// Writes this node's heartbeat (insert or update), stamped with the database's clock.
    pub async fn heartbeat_node(&self, hb: &NodeHeartbeat<'_>) -> Result<(), StoreError> {
        let now = db_now(self.backend());
        let sql = format!(
            "INSERT INTO cluster_nodes \
             (node_id, sip_address, media_address, started_at, heartbeat_at, version, \
             calls_active) \
             VALUES ($1, $2, $3, $4, {now}, $5, $6) \
             ON CONFLICT (node_id) DO UPDATE SET sip_address = excluded.sip_address, \
             media_address = excluded.media_address, started_at = excluded.started_at, \
             heartbeat_at = excluded.heartbeat_at, version = excluded.version, \
             calls_active = excluded.calls_active"
        );
        with_pool!(self, pool => {
            sqlx::query(&sql)
                .bind(hb.node_id)
                .bind(hb.sip_address)
                .bind(hb.media_address)
                .bind(hb.started_at_ms)
                .bind(hb.version)
                .bind(hb.calls_active)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Every node that ever sent a heartbeat, by id.
    pub async fn list_cluster_nodes(&self) -> Result<Vec<ClusterNode>, StoreError> {
        let now = db_now(self.backend());
        let sql = format!(
            "SELECT node_id, sip_address, media_address, started_at, heartbeat_at, version, \
             {now}, calls_active FROM cluster_nodes ORDER BY node_id"
        );
        with_pool!(self, pool => {
            let rows = sqlx::query(&sql).fetch_all(pool).await?;
            Ok(rows
                .into_iter()
                .map(|r| {
                    Ok::<_, sqlx::Error>(ClusterNode {
                        node_id: r.try_get(0)?,
                        sip_address: r.try_get(1)?,
                        media_address: r.try_get(2)?,
                        started_at_ms: r.try_get(3)?,
                        heartbeat_at_ms: r.try_get(4)?,
                        version: r.try_get(5)?,
                        db_now_ms: r.try_get(6)?,
                        calls_active: r.try_get(7)?,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Removes a node's row (a node taken out of the cluster for good).
    pub async fn remove_cluster_node(&self, node_id: &str) -> Result<bool, StoreError> {
        let n = with_pool!(self, pool => {
            sqlx::query("DELETE FROM cluster_nodes WHERE node_id = $1")
                .bind(node_id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n > 0)
    }

    /// The lease of `vip`; `None` when nobody ever took it.
    pub async fn vip_lease(&self, vip: &str) -> Result<Option<VipLease>, StoreError> {
        Ok(self.vip_leases_where(Some(vip)).await?.into_iter().next())
    }

    /// Every VIP lease, by address.
    pub async fn list_vip_leases(&self) -> Result<Vec<VipLease>, StoreError> {
        self.vip_leases_where(None).await
    }

    async fn vip_leases_where(&self, vip: Option<&str>) -> Result<Vec<VipLease>, StoreError> {
        let now = db_now(self.backend());
        let filter = if vip.is_some() { "WHERE vip = $1" } else { "" };
        let sql = format!(
            "SELECT vip, holder, term, expires_at, {now} FROM vip_leases {filter} ORDER BY vip"
        );
        with_pool!(self, pool => {
            let mut q = sqlx::query(&sql);
            if let Some(vip) = vip {
                q = q.bind(vip);
            }
            let rows = q.fetch_all(pool).await?;
            Ok(rows
                .iter()
                .map(|r| lease_from_row!(r))
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Takes the lease of `vip` for `node_id` for `lease_ms` if it is free (no row, or
    /// expired by the database's clock) or already names `node_id` (a restarted node).
    /// Returns the new fencing term (previous + 1, or 1), or `None`: another node holds it.
    pub async fn acquire_vip_lease(
        &self,
        vip: &str,
        node_id: &str,
        lease_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        check_lease_ms(lease_ms)?;
        let now = db_now(self.backend());
        let sql = format!(
            "INSERT INTO vip_leases (vip, holder, term, expires_at) VALUES ($1, $2, 1, {now} + $3) \
             ON CONFLICT (vip) DO UPDATE SET holder = excluded.holder, \
             term = vip_leases.term + 1, expires_at = excluded.expires_at, handover_to = NULL \
             WHERE vip_leases.expires_at < {now} OR vip_leases.holder = excluded.holder \
             RETURNING term"
        );
        with_pool!(self, pool => {
            let row = sqlx::query(&sql)
                .bind(vip)
                .bind(node_id)
                .bind(lease_ms)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| r.try_get::<i64, _>(0)).transpose()?)
        })
    }

    /// Extends the lease to `lease_ms` from the database's now if it still names `node_id`
    /// with `term`, and tells whether a handover was asked of it meanwhile.
    /// [`Renewal::Lost`]: it was taken over (the caller must not hold the address).
    pub async fn renew_vip_lease(
        &self,
        vip: &str,
        node_id: &str,
        term: i64,
        lease_ms: i64,
    ) -> Result<Renewal, StoreError> {
        check_lease_ms(lease_ms)?;
        let now = db_now(self.backend());
        let sql = format!(
            "UPDATE vip_leases SET expires_at = {now} + $4 \
             WHERE vip = $1 AND holder = $2 AND term = $3 RETURNING handover_to"
        );
        with_pool!(self, pool => {
            let row = sqlx::query(&sql)
                .bind(vip)
                .bind(node_id)
                .bind(term)
                .bind(lease_ms)
                .fetch_optional(pool)
                .await?;
            let Some(row) = row else {
                return Ok(Renewal::Lost);
            };
            Ok(match row.try_get::<Option<String>, _>(0)? {
                None => Renewal::Renewed,
                Some(to) if to.is_empty() => Renewal::HandoverAsked { to: None },
                Some(to) => Renewal::HandoverAsked { to: Some(to) },
            })
        })
    }

    /// Asks the holder of `vip` to hand it over, to node `to` or (None) to any other node;
    /// the holder sees it at its next renewal. Returns the lease as it was when asked, or
    /// `None` when nobody holds an unexpired lease of `vip`.
    pub async fn request_vip_handover(
        &self,
        vip: &str,
        to: Option<&str>,
    ) -> Result<Option<VipLease>, StoreError> {
        let now = db_now(self.backend());
        let sql = format!(
            "UPDATE vip_leases SET handover_to = $2 WHERE vip = $1 AND expires_at > {now} \
             RETURNING vip, holder, term, expires_at, {now}"
        );
        with_pool!(self, pool => {
            let row = sqlx::query(&sql)
                .bind(vip)
                .bind(to.unwrap_or(""))
                .fetch_optional(pool)
                .await?;
            Ok(row.as_ref().map(|r| lease_from_row!(r)).transpose()?)
        })
    }

    /// Hands the lease of `vip` from `node_id` (with `term`) to node `to`: the row names
    /// `to` for `lease_ms`, which only `to` can acquire in that time (the rule that lets a
    /// restarted holder take its own row back), with the next term. If `to` never comes,
    /// the lease expires and any node takes it. False: `node_id` no longer held it.
    pub async fn hand_vip_lease_to(
        &self,
        vip: &str,
        node_id: &str,
        term: i64,
        to: &str,
        lease_ms: i64,
    ) -> Result<bool, StoreError> {
        check_lease_ms(lease_ms)?;
        let now = db_now(self.backend());
        let sql = format!(
            "UPDATE vip_leases SET holder = $4, expires_at = {now} + $5, handover_to = NULL \
             WHERE vip = $1 AND holder = $2 AND term = $3"
        );
        let n = with_pool!(self, pool => {
            sqlx::query(&sql)
                .bind(vip)
                .bind(node_id)
                .bind(term)
                .bind(to)
                .bind(lease_ms)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n > 0)
    }

    /// Ends the lease at once (graceful handover) if it names `node_id` with `term`; the
    /// row stays, with the holder and term, so the next acquire still bumps the term.
    pub async fn release_vip_lease(
        &self,
        vip: &str,
        node_id: &str,
        term: i64,
    ) -> Result<bool, StoreError> {
        let n = with_pool!(self, pool => {
            sqlx::query(
                "UPDATE vip_leases SET expires_at = 0, handover_to = NULL \
                 WHERE vip = $1 AND holder = $2 AND term = $3",
            )
            .bind(vip)
            .bind(node_id)
            .bind(term)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n > 0)
    }
}

fn check_lease_ms(lease_ms: i64) -> Result<(), StoreError> {
    if lease_ms <= 0 {
        return Err(StoreError::Invalid(format!(
            "a lease must last longer than 0 ms, got {lease_ms}"
        )));
    }
    Ok(())
}

impl Store {
    /// The cluster's shared secret: the one in the store, or `candidate` when there was
    /// none yet (the first node to ask writes it; every later caller reads that one).
    pub async fn cluster_secret(&self, candidate: &str) -> Result<String, StoreError> {
        with_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO cluster_secret (id, secret) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
            )
            .bind(candidate)
            .execute(pool)
            .await?;
            let row = sqlx::query("SELECT secret FROM cluster_secret WHERE id = 1")
                .fetch_one(pool)
                .await?;
            Ok(row.try_get(0)?)
        })
    }
}
