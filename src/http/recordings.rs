//! Call recordings in the admin API: `GET /api/v1/recordings` (recorded calls from the
//! CDRs, filtered and paged like the call history), `GET .../{id}/audio` (the WAV, with
//! Range) and `DELETE .../{id}` (the file goes, the CDR stays without it).
//!
//! A recording is a file on the node that recorded the call (`[calls] record`), named by
//! its CDR; a node serves and deletes only files in its own recordings folder, and says
//! which node to ask for the others. Owns: that rule. Must not: write recordings.

use std::path::{Path, PathBuf};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::api::{page_params, Page};
use super::auth::AdminOnly;
use super::error::{ApiError, ApiQuery};
use super::AppState;
use crate::store::{Cdr, CdrFilter};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingQuery {
    caller: Option<String>,
    callee: Option<String>,
    /// Unix seconds, on the call's start, inclusive.
    from: Option<i64>,
    /// Unix seconds, exclusive.
    to: Option<i64>,
    limit: Option<u32>,
    offset: Option<u64>,
}

#[derive(Serialize)]
pub struct RecordingView {
    /// The call's CDR id.
    pub id: String,
    pub caller: String,
    pub callee: String,
    pub started_at: i64,
    pub duration: i64,
    pub disposition: String,
    /// The node that recorded it (and keeps the file).
    pub node_id: String,
    /// The file's size when this node has it; null when it is on another node or gone.
    pub size_bytes: Option<u64>,
}

/// `GET /api/v1/recordings`: recorded calls, newest first.
pub async fn list(
    State(state): State<AppState>,
    _: AdminOnly,
    ApiQuery(q): ApiQuery<RecordingQuery>,
) -> Result<Json<Page<RecordingView>>, ApiError> {
    let (limit, offset) = page_params(q.limit, q.offset)?;
    let filter = CdrFilter {
        caller: q.caller,
        callee: q.callee,
        from: q.from,
        to: q.to,
        recorded: true,
        ..CdrFilter::default()
    };
    let store = &state.inner.store;
    let total = store.count_cdrs(&filter).await?;
    let cdrs = store.query_cdrs(&filter, limit, offset).await?;
    let dir = state.inner.node.recordings_dir.clone();
    let me = state.inner.node.id.clone();
    // One trip to the blocking pool for the page's file sizes.
    let items = tokio::task::spawn_blocking(move || {
        let dir = canonical(dir);
        cdrs.into_iter()
            .map(|c| {
                let size_bytes = local_file(&c, &me, &dir)
                    .and_then(|p| std::fs::metadata(p).ok())
                    .map(|m| m.len());
                RecordingView {
                    id: c.id,
                    caller: c.caller,
                    callee: c.callee,
                    started_at: c.started_at,
                    duration: c.duration,
                    disposition: c.disposition,
                    node_id: c.node_id,
                    size_bytes,
                }
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|_| ApiError::internal())?;
    Ok(Json(Page {
        items,
        total,
        limit,
        offset,
    }))
}

/// The recording's file if this node recorded the call and the file is in its folder
/// (`dir`, as [`canonical`] gives it).
fn local_file(c: &Cdr, me: &str, dir: &Path) -> Option<PathBuf> {
    let file = PathBuf::from(c.recording.as_deref()?);
    // The CDR names the file the node wrote; anything outside its folder is not served.
    let inside = file
        .parent()
        .is_some_and(|p| canonical(p.to_path_buf()) == dir);
    (c.node_id == me && inside).then_some(file)
}

/// `p` with links and `..` resolved, or as it is when it does not exist.
fn canonical(p: PathBuf) -> PathBuf {
    p.canonicalize().unwrap_or(p)
}

/// The CDR of a recording this node can serve, or the error to answer.
async fn recording_here(state: &AppState, id: &str) -> Result<(Cdr, PathBuf), ApiError> {
    let cdr = state
        .inner
        .store
        .get_cdr(id)
        .await?
        .filter(|c| c.recording.is_some())
        .ok_or_else(|| ApiError::not_found(format!("no recording of call {id}")))?;
    let node = &state.inner.node;
    if cdr.node_id != node.id {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "on_another_node",
            format!(
                "node {} recorded call {id}: ask its admin panel",
                cdr.node_id
            ),
        ));
    }
    let file = local_file(&cdr, &node.id, &canonical(node.recordings_dir.clone()))
        .ok_or_else(|| ApiError::not_found(format!("no recording of call {id} here")))?;
    Ok((cdr, file))
}

/// `GET /api/v1/recordings/{id}/audio`
pub async fn audio(
    State(state): State<AppState>,
    _: AdminOnly,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (_, file) = recording_here(&state, &id).await?;
    super::audio::wav_file(file, &headers, &format!("the recording of call {id}")).await
}

/// `DELETE /api/v1/recordings/{id}`: the file first, then the CDR forgets it (a crash in
/// between leaves a CDR naming a missing file, which the list shows without a size).
pub async fn delete(
    State(state): State<AppState>,
    who: AdminOnly,
    UrlPath(id): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    let (_, file) = recording_here(&state, &id).await?;
    let removed = tokio::task::spawn_blocking(move || match std::fs::remove_file(&file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    })
    .await
    .map_err(|_| ApiError::internal())?;
    if let Err(e) = removed {
        tracing::error!(call = %id, error = %e, "cannot delete a recording");
        return Err(ApiError::internal());
    }
    state.inner.store.clear_cdr_recording(&id).await?;
    tracing::info!(call = %id, account = %who.0.name, "recording deleted from the panel");
    Ok(StatusCode::NO_CONTENT)
}
