//! Counts for the panel: live registrations (one COUNT, not a read of every binding) and
//! the per-minute samples each node keeps of its calls and the cluster's registrations
//! (`node_samples`), which the dashboard charts over the last day.

use sqlx::Row;

use super::{Inner, Store, StoreError};

/// One node's sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSample {
    pub node_id: String,
    /// Unix seconds.
    pub at: i64,
    pub registrations: i64,
    pub calls: i64,
}

impl Store {
    /// Bindings that have not expired at `now_unix` (every node's: they are shared).
    pub async fn count_live_bindings(&self, now_unix: i64) -> Result<i64, StoreError> {
        with_pool!(self, pool => {
            let (n,): (i64,) =
                sqlx::query_as("SELECT COUNT(*) FROM bindings WHERE expires_at > $1")
                    .bind(now_unix)
                    .fetch_one(pool)
                    .await?;
            Ok(n)
        })
    }

    /// Writes a sample (a repeated one for the same node and time replaces it).
    pub async fn record_sample(&self, s: &NodeSample) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO node_samples (node_id, at, registrations, calls) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (node_id, at) DO UPDATE SET \
                 registrations = excluded.registrations, calls = excluded.calls",
            )
            .bind(&s.node_id)
            .bind(s.at)
            .bind(s.registrations)
            .bind(s.calls)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Every node's samples from `from` (Unix seconds, inclusive), oldest first; at most
    /// `limit` rows.
    pub async fn samples_since(
        &self,
        from: i64,
        limit: u32,
    ) -> Result<Vec<NodeSample>, StoreError> {
        with_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT node_id, at, registrations, calls FROM node_samples \
                 WHERE at >= $1 ORDER BY at, node_id LIMIT $2",
            )
            .bind(from)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|r| {
                    Ok::<_, sqlx::Error>(NodeSample {
                        node_id: r.try_get(0)?,
                        at: r.try_get(1)?,
                        registrations: r.try_get(2)?,
                        calls: r.try_get(3)?,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Deletes `node_id`'s samples older than `before`; how many.
    pub async fn prune_samples(&self, node_id: &str, before: i64) -> Result<u64, StoreError> {
        let n = with_pool!(self, pool => {
            sqlx::query("DELETE FROM node_samples WHERE node_id = $1 AND at < $2")
                .bind(node_id)
                .bind(before)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n)
    }
}
