//! The admin API's resources: extensions, registrations, live calls (and hanging one
//! up), CDRs, node status. Handlers parse, call the use cases ([`crate::admin`] for
//! extension changes, [`crate::call::lookup`] for calls in progress,
//! [`crate::registrar::live_registrations`]), plain store reads or the node, and
//! serialise; no rules here.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::auth::AdminOnly;
use super::error::{ApiError, ApiJson, ApiQuery};
use super::AppState;
use crate::admin::{self, extensions as ext_admin};
use crate::call::lookup::{self, Located};
use crate::node::NodeControl;
use crate::store::{now_unix, ActiveCall, Binding, Cdr, CdrFilter, Extension, Store, StoreError};

/// Page size when none is asked for, and the largest one allowed.
pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;
/// The most rows one CSV export holds.
pub const CSV_MAX_ROWS: u32 = 100_000;

/// A page of a list.
#[derive(Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// How many items the whole list has.
    pub total: i64,
    pub limit: u32,
    pub offset: u64,
}

/// `?limit=&offset=`
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    limit: Option<u32>,
    offset: Option<u64>,
}

pub(super) fn page_params(limit: Option<u32>, offset: Option<u64>) -> Result<(u32, u64), ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "bad_query",
            format!("limit must be 1 to {MAX_LIMIT}"),
        ));
    }
    Ok((limit, offset.unwrap_or(0)))
}

/// A page of a list held in memory.
fn page_of<T>(all: Vec<T>, q: &PageQuery) -> Result<Page<T>, ApiError> {
    let (limit, offset) = page_params(q.limit, q.offset)?;
    let total = all.len() as i64;
    let items = all
        .into_iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(limit as usize)
        .collect();
    Ok(Page {
        items,
        total,
        limit,
        offset,
    })
}

// ---- extensions ----

/// An extension as the API shows it (never its hashes).
#[derive(Serialize)]
pub struct ExtensionView {
    number: String,
    name: String,
    created_at: i64,
    updated_at: i64,
    /// Do-not-disturb: calls see the extension as busy.
    dnd: bool,
    /// Call-forward targets (extension numbers), `null` when unset.
    forward_always: Option<String>,
    forward_busy: Option<String>,
    forward_noanswer: Option<String>,
}

impl From<Extension> for ExtensionView {
    fn from(e: Extension) -> Self {
        ExtensionView {
            number: e.number,
            name: e.display_name,
            created_at: e.created_at,
            updated_at: e.updated_at,
            dnd: e.routing.dnd,
            forward_always: e.routing.forward_always,
            forward_busy: e.routing.forward_busy,
            forward_noanswer: e.routing.forward_noanswer,
        }
    }
}

/// `GET /api/v1/extensions`
pub async fn list_extensions(
    State(state): State<AppState>,
    _: AdminOnly,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<ExtensionView>>, ApiError> {
    let (limit, offset) = page_params(q.limit, q.offset)?;
    let store = &state.inner.store;
    let total = store.count_extensions().await?;
    let items = store.list_extensions_page(limit, offset).await?;
    Ok(Json(Page {
        items: items.into_iter().map(Into::into).collect(),
        total,
        limit,
        offset,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewExtension {
    number: String,
    #[serde(default)]
    name: String,
    /// Absent: a strong one is generated and returned once.
    password: Option<String>,
}

#[derive(Serialize)]
pub struct CreatedExtension {
    extension: ExtensionView,
    /// Only when generated: the one time it is shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<String>,
}

/// `POST /api/v1/extensions`
pub async fn create_extension(
    State(state): State<AppState>,
    AdminOnly(who): AdminOnly,
    ApiJson(req): ApiJson<NewExtension>,
) -> Result<Response, ApiError> {
    let s = &state.inner;
    let (password, generated) = match req.password {
        Some(p) => (p, false),
        None => (admin::generate_password(), true),
    };
    let ext = ext_admin::add(&s.store, &s.realm, &req.number, &req.name, &password).await?;
    refresh_extension(&state, &ext.number).await;
    tracing::info!(admin = %who.name, number = %ext.number, "extension added");
    let body = CreatedExtension {
        extension: ext.into(),
        password: generated.then_some(password),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `GET /api/v1/extensions/{number}`
pub async fn get_extension(
    State(state): State<AppState>,
    _: AdminOnly,
    Path(number): Path<String>,
) -> Result<Json<ExtensionView>, ApiError> {
    state
        .inner
        .store
        .get_extension(&number)
        .await?
        .map(|e| Json(e.into()))
        .ok_or_else(|| ApiError::not_found(format!("no extension {number}")))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ExtensionChange {
    pub(super) name: Option<String>,
    pub(super) password: Option<String>,
    pub(super) dnd: Option<bool>,
    /// Absent: unchanged; `null`: cleared; a number: set.
    #[serde(default, deserialize_with = "present")]
    pub(super) forward_always: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) forward_busy: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) forward_noanswer: Option<Option<String>>,
}

impl From<ExtensionChange> for ext_admin::Change {
    fn from(c: ExtensionChange) -> Self {
        ext_admin::Change {
            name: c.name,
            password: c.password,
            dnd: c.dnd,
            forward_always: c.forward_always,
            forward_busy: c.forward_busy,
            forward_noanswer: c.forward_noanswer,
        }
    }
}

/// A field that is present, even as `null`, is `Some` (absent stays `None` by default).
pub(super) fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// `PUT /api/v1/extensions/{number}`: a new name, password, do-not-disturb or forward
/// targets (any of them; `null` clears a target).
pub async fn update_extension(
    State(state): State<AppState>,
    AdminOnly(who): AdminOnly,
    Path(number): Path<String>,
    ApiJson(req): ApiJson<ExtensionChange>,
) -> Result<Json<ExtensionView>, ApiError> {
    change_extension(&state, &who.name, &number, req)
        .await
        .map(Json)
}

/// Applies a change to an extension ([`ext_admin::change`]: checked whole before any of
/// it is written), refreshes the registrar's cache and returns the extension as it now
/// is; `by` is the account, for the log.
pub(super) async fn change_extension(
    state: &AppState,
    by: &str,
    number: &str,
    req: ExtensionChange,
) -> Result<ExtensionView, ApiError> {
    let s = &state.inner;
    let ext = ext_admin::change(&s.store, &s.realm, number, req.into()).await?;
    refresh_extension(state, number).await;
    tracing::info!(account = %by, number = %number, "extension changed");
    Ok(ext.into())
}

/// `DELETE /api/v1/extensions/{number}`
pub async fn delete_extension(
    State(state): State<AppState>,
    AdminOnly(who): AdminOnly,
    Path(number): Path<String>,
) -> Result<StatusCode, ApiError> {
    ext_admin::remove(&state.inner.store, &number).await?;
    refresh_extension(&state, &number).await;
    state.inner.registrar.restore(&number).await;
    tracing::info!(admin = %who.name, number = %number, "extension removed");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUserAccount {
    /// The login name (1-64 of `A-Z a-z 0-9 . _ @ -`).
    name: String,
}

#[derive(Serialize)]
pub struct CreatedUserAccount {
    name: String,
    role: &'static str,
    extension: String,
    /// Generated; the one time it is shown.
    password: String,
}

/// `POST /api/v1/extensions/{number}/account`: a `user` account owning this extension,
/// with a generated panel password shown once (the self-service page's login, as
/// `ringfort admin add NAME --role user --extension N`).
pub async fn create_user_account(
    State(state): State<AppState>,
    AdminOnly(who): AdminOnly,
    Path(number): Path<String>,
    ApiJson(req): ApiJson<NewUserAccount>,
) -> Result<Response, ApiError> {
    let password = admin::generate_password();
    let account = admin::accounts::add(
        &state.inner.store,
        &req.name,
        admin::accounts::Role::User,
        &password,
        Some(&number),
    )
    .await?;
    tracing::info!(admin = %who.name, account = %account.name, number = %number,
                   "user account added for an extension");
    let body = CreatedUserAccount {
        name: account.name,
        role: "user",
        extension: number,
        password,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// The registrar caches extensions: a change made here takes effect at once.
pub(super) async fn refresh_extension(state: &AppState, number: &str) {
    if let Err(e) = state.inner.registrar.fetch_extension(number).await {
        tracing::warn!(number, error = %e, "registrar cache not refreshed");
    }
}

// ---- registrations and calls ----

#[derive(Serialize, Clone, PartialEq, Eq)]
pub struct RegistrationView {
    extension: String,
    contact: String,
    transport: String,
    received: String,
    local_addr: String,
    expires_at: i64,
    expires_in: i64,
    user_agent: String,
    node: String,
}

impl RegistrationView {
    fn new(b: Binding, now: i64) -> Self {
        RegistrationView {
            extension: b.aor,
            contact: b.contact_uri,
            transport: b.transport,
            received: b.received,
            local_addr: b.local_addr,
            expires_in: b.expires_at - now,
            expires_at: b.expires_at,
            user_agent: b.user_agent,
            node: b.node_id,
        }
    }
}

/// `GET /api/v1/registrations`: current (unexpired) registrations, by extension.
pub async fn list_registrations(
    State(state): State<AppState>,
    _: AdminOnly,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<RegistrationView>>, ApiError> {
    let views = registrations_now(&state.inner.store).await?;
    Ok(Json(page_of(views, &q)?))
}

/// Current (unexpired) registrations, by extension.
pub(super) async fn registrations_now(store: &Store) -> Result<Vec<RegistrationView>, StoreError> {
    let now = now_unix();
    Ok(crate::registrar::live_registrations(store, now)
        .await?
        .into_iter()
        .map(|b| RegistrationView::new(b, now))
        .collect())
}

impl RegistrationView {
    /// The same registration whatever the time: `expires_in` counts down every second,
    /// which is no change worth telling a live view about.
    pub(super) fn timeless(&self) -> RegistrationView {
        RegistrationView {
            expires_in: 0,
            ..self.clone()
        }
    }
}

#[derive(Serialize, Clone, PartialEq, Eq)]
pub struct CallView {
    id: String,
    caller: String,
    callee: String,
    state: String,
    started_at: i64,
    answered_at: Option<i64>,
    caller_call_id: String,
    callee_call_id: String,
    node: String,
}

impl From<ActiveCall> for CallView {
    fn from(c: ActiveCall) -> Self {
        CallView {
            id: c.id,
            caller: c.caller,
            callee: c.callee,
            state: c.state,
            started_at: c.started_at,
            answered_at: c.answered_at,
            caller_call_id: c.caller_call_id,
            callee_call_id: c.callee_call_id,
            node: c.node_id,
        }
    }
}

/// `GET /api/v1/calls`: calls in progress on every node, oldest first.
pub async fn list_calls(
    State(state): State<AppState>,
    _: AdminOnly,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<CallView>>, ApiError> {
    let calls = calls_now(&state.inner.store).await?;
    Ok(Json(page_of(calls, &q)?))
}

/// Calls in progress on every node, oldest first.
pub(super) async fn calls_now(store: &Store) -> Result<Vec<CallView>, StoreError> {
    Ok(lookup::in_progress(store)
        .await?
        .into_iter()
        .map(Into::into)
        .collect())
}

/// How long the API waits for the node to take a hang-up order.
const NODE_ORDER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// `DELETE /api/v1/calls/{id}`: ends a call in progress on this node as the system
/// would (BYE to answered legs; a ringing caller gets 480; the CDR says hangup `system`).
pub async fn hang_up_call(
    State(state): State<AppState>,
    AdminOnly(who): AdminOnly,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let s = &state.inner;
    let gone = || ApiError::not_found(format!("no call {id} in progress"));
    let call = match lookup::locate(&s.store, &id, &s.node.id).await? {
        Located::Here(call) => call,
        Located::Nowhere => return Err(gone()),
        // Only the node running a call holds its dialogs; cross-node orders come with
        // the cluster layer.
        Located::OnNode(node) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("call {id} runs on node {node}: ask that node"),
            ))
        }
    };
    let unavailable = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the node is not taking orders (shutting down?)",
        )
    };
    let (done, found) = oneshot::channel();
    s.control
        .send(NodeControl::HangUp {
            caller_call_id: call.caller_call_id,
            done,
        })
        .await
        .map_err(|_| unavailable())?;
    match tokio::time::timeout(NODE_ORDER_TIMEOUT, found).await {
        Ok(Ok(true)) => {
            tracing::info!(admin = %who.name, call = %id, "call hung up by an admin");
            Ok(StatusCode::NO_CONTENT)
        }
        // It ended between the read and the order.
        Ok(Ok(false)) => Err(gone()),
        Ok(Err(_)) | Err(_) => Err(unavailable()),
    }
}

// ---- CDRs ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdrQuery {
    caller: Option<String>,
    callee: Option<String>,
    disposition: Option<String>,
    /// Unix seconds, on the start time, inclusive.
    from: Option<i64>,
    /// Unix seconds, on the start time, exclusive.
    to: Option<i64>,
    limit: Option<u32>,
    offset: Option<u64>,
    /// `json` (default) or `csv`.
    format: Option<String>,
}

#[derive(Serialize)]
pub struct CdrView {
    id: String,
    caller: String,
    callee: String,
    started_at: i64,
    answered_at: Option<i64>,
    ended_at: i64,
    disposition: String,
    duration: i64,
    hangup_leg: String,
    caller_call_id: String,
    callee_call_id: String,
    node: String,
    recording: Option<String>,
}

impl From<Cdr> for CdrView {
    fn from(c: Cdr) -> Self {
        CdrView {
            id: c.id,
            caller: c.caller,
            callee: c.callee,
            started_at: c.started_at,
            answered_at: c.answered_at,
            ended_at: c.ended_at,
            disposition: c.disposition,
            duration: c.duration,
            hangup_leg: c.hangup_leg,
            caller_call_id: c.caller_call_id,
            callee_call_id: c.callee_call_id,
            node: c.node_id,
            recording: c.recording,
        }
    }
}

/// `GET /api/v1/cdrs`: filtered, newest first; a page as JSON, or CSV (`?format=csv`,
/// up to [`CSV_MAX_ROWS`] rows from `offset`, `limit` rows when given).
pub async fn list_cdrs(
    State(state): State<AppState>,
    _: AdminOnly,
    ApiQuery(q): ApiQuery<CdrQuery>,
) -> Result<Response, ApiError> {
    let filter = CdrFilter {
        caller: q.caller,
        callee: q.callee,
        disposition: q.disposition,
        from: q.from,
        to: q.to,
        recorded: false,
    };
    let store = &state.inner.store;
    match q.format.as_deref().unwrap_or("json") {
        "json" => {
            let (limit, offset) = page_params(q.limit, q.offset)?;
            let total = store.count_cdrs(&filter).await?;
            let items = store.query_cdrs(&filter, limit, offset).await?;
            Ok(Json(Page {
                items: items.into_iter().map(CdrView::from).collect::<Vec<_>>(),
                total,
                limit,
                offset,
            })
            .into_response())
        }
        "csv" => {
            let limit = q.limit.unwrap_or(CSV_MAX_ROWS);
            if !(1..=CSV_MAX_ROWS).contains(&limit) {
                return Err(ApiError::bad_request(
                    "bad_query",
                    format!("limit must be 1 to {CSV_MAX_ROWS} for CSV"),
                ));
            }
            let rows = store
                .query_cdrs(&filter, limit, q.offset.unwrap_or(0))
                .await?;
            Ok((
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"cdrs.csv\"",
                    ),
                ],
                cdrs_csv(&rows),
            )
                .into_response())
        }
        other => Err(ApiError::bad_request(
            "bad_query",
            format!("format {other:?}: use json or csv"),
        )),
    }
}

const CSV_HEADER: &str = "id,caller,callee,started_at,answered_at,ended_at,disposition,\
                          duration,hangup_leg,caller_call_id,callee_call_id,node,recording";

/// RFC 4180 CSV: a header line, CRLF line ends, fields quoted when they need it.
fn cdrs_csv(rows: &[Cdr]) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push_str("\r\n");
    for c in rows {
        let answered = c.answered_at.map(|a| a.to_string()).unwrap_or_default();
        let fields = [
            c.id.as_str(),
            &c.caller,
            &c.callee,
            &c.started_at.to_string(),
            &answered,
            &c.ended_at.to_string(),
            &c.disposition,
            &c.duration.to_string(),
            &c.hangup_leg,
            &c.caller_call_id,
            &c.callee_call_id,
            &c.node_id,
            c.recording.as_deref().unwrap_or(""),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

fn csv_field(s: &str) -> String {
    // A leading = + - @ would be a formula to a spreadsheet: quote-prefix it.
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

// ---- status ----

#[derive(Serialize)]
pub struct Status {
    node_id: String,
    version: &'static str,
    uptime_secs: u64,
    started_at: i64,
    database: &'static str,
    extensions: i64,
    registrations: i64,
    active_calls: i64,
}

/// `GET /api/v1/status`
pub async fn status(State(state): State<AppState>, _: AdminOnly) -> Result<Json<Status>, ApiError> {
    let s = &state.inner;
    let now = now_unix();
    let registrations = s.store.count_live_bindings(now).await?;
    Ok(Json(Status {
        node_id: s.node.id.clone(),
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: s.node.started.elapsed().as_secs(),
        started_at: s.node.started_at,
        database: match s.store.backend() {
            crate::store::Backend::Sqlite => "sqlite",
            crate::store::Backend::Postgres => "postgres",
        },
        extensions: s.store.count_extensions().await?,
        registrations,
        active_calls: s.store.count_active_calls().await?,
    }))
}

/// The CSV header line, for the router tests.
#[cfg(test)]
pub(crate) fn tests_csv_header() -> &'static str {
    CSV_HEADER
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_it_and_defuses_formulas() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
    }
}
