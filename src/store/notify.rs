//! Binding changes between the nodes of a cluster: after a node commits an AOR's
//! binding set it announces the AOR on PostgreSQL's `ringfort_bindings` channel
//! (NOTIFY), and every node listens (LISTEN) to refresh that one AOR in its location
//! cache: no read of the database per call, no full reload per change.
//!
//! Owns: the channel name and payload (`NODE<TAB>AOR`). Must not: decide what a node
//! does with a change (the registrar does). On SQLite (one node) there is nothing to
//! announce or follow.

use sqlx::postgres::PgListener;

use super::{Inner, Store, StoreError};

/// The PostgreSQL notification channel.
pub const BINDINGS_CHANNEL: &str = "ringfort_bindings";

/// A binding set another process committed: which node wrote it, for which AOR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingChange {
    pub node_id: String,
    pub aor: String,
}

/// A live LISTEN on [`BINDINGS_CHANNEL`].
pub struct BindingChanges {
    listener: PgListener,
}

impl BindingChanges {
    /// The next announced change. An error means the connection broke: notifications
    /// sent meanwhile are lost, so the caller reloads what it caches before listening
    /// again.
    pub async fn next(&mut self) -> Result<BindingChange, StoreError> {
        loop {
            let n = self.listener.recv().await?;
            if let Some((node_id, aor)) = n.payload().split_once('\t') {
                return Ok(BindingChange {
                    node_id: node_id.to_owned(),
                    aor: aor.to_owned(),
                });
            }
        }
    }
}

impl Store {
    /// Tells the other nodes that `node_id` committed new binding sets for `aors`.
    /// Nothing to do on SQLite.
    pub async fn announce_bindings(&self, node_id: &str, aors: &[&str]) -> Result<(), StoreError> {
        let Inner::Postgres(pool) = &self.inner else {
            return Ok(());
        };
        if aors.is_empty() {
            return Ok(());
        }
        let payloads: Vec<String> = aors.iter().map(|a| format!("{node_id}\t{a}")).collect();
        sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
            .bind(BINDINGS_CHANNEL)
            .bind(&payloads)
            .execute(pool)
            .await?;
        Ok(())
    }

    /// Starts listening for other nodes' binding changes; `None` on SQLite.
    pub async fn binding_changes(&self) -> Result<Option<BindingChanges>, StoreError> {
        let Inner::Postgres(pool) = &self.inner else {
            return Ok(None);
        };
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(BINDINGS_CHANNEL).await?;
        Ok(Some(BindingChanges { listener }))
    }
}
