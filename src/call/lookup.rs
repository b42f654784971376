//! Calls in progress as the cluster sees them: the `active_calls` rows every node writes
//! for its calls. Listing them, and finding the one an order (an admin's hang-up) is
//! about and whether this node is the one that can carry it out. For the admin API and
//! the CLI, which parse, call this and present.
//!
//! Owns: which rows count as a call in progress and which node runs it.
//! Must not: reach a call task (the node does that, on an order), or know HTTP.

use crate::store::{ActiveCall, Store, StoreError};

/// Where a call in progress runs, seen from one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// No call in progress has that id (it ended, or never was).
    Nowhere,
    /// It runs on this node; the core finds it by its caller's Call-ID.
    Here(ActiveCall),
    /// It runs on the node named: only that node holds its dialogs.
    OnNode(String),
}

/// The calls in progress on every node, oldest first.
pub async fn in_progress(store: &Store) -> Result<Vec<ActiveCall>, StoreError> {
    store.list_active_calls().await
}

/// The call in progress with id `id`, and whether `this_node` runs it.
pub async fn locate(store: &Store, id: &str, this_node: &str) -> Result<Located, StoreError> {
    let Some(call) = in_progress(store).await?.into_iter().find(|c| c.id == id) else {
        return Ok(Located::Nowhere);
    };
    Ok(if call.node_id == this_node {
        Located::Here(call)
    } else {
        Located::OnNode(call.node_id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, node: &str, started_at: i64) -> ActiveCall {
        ActiveCall {
            id: id.into(),
            caller: "1001".into(),
            callee: "1002".into(),
            state: "ringing".into(),
            started_at,
            answered_at: None,
            caller_call_id: format!("{id}@caller"),
            callee_call_id: String::new(),
            node_id: node.into(),
        }
    }

    #[tokio::test]
    async fn a_call_is_found_here_on_another_node_or_nowhere() {
        let store = Store::connect("sqlite::memory:", 1).await.expect("connect");
        store.migrate().await.expect("migrate");
        store
            .insert_active_call(&row("c1", "a", 20))
            .await
            .expect("c1");
        store
            .insert_active_call(&row("c2", "b", 10))
            .await
            .expect("c2");
        let ids: Vec<String> = in_progress(&store)
            .await
            .expect("list")
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(ids, ["c2", "c1"], "oldest first");
        assert_eq!(
            locate(&store, "c1", "a").await.expect("c1"),
            Located::Here(row("c1", "a", 20))
        );
        assert_eq!(
            locate(&store, "c2", "a").await.expect("c2"),
            Located::OnNode("b".into())
        );
        assert_eq!(
            locate(&store, "c3", "a").await.expect("c3"),
            Located::Nowhere
        );
    }
}
