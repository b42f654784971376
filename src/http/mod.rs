//! The HTTP layer (axum): the admin API under `/api/v1` (JSON, documented by
//! `openapi.json`), with session and token auth, its live feed (Server-Sent Events), and
//! the web panel's static files (`web/`, embedded) at `/`, and Prometheus metrics at
//! `/metrics` (same auth). SIP over WebSocket comes later. Holds no business logic:
//! handlers parse, call [`crate::admin`], the store, the dialplan folder or the node
//! (through [`crate::node::NodeControl`] orders), and serialise.
//! No TLS yet: keep `[http] listen` on loopback or behind a proxy that terminates TLS.

pub mod api;
pub mod audio;
pub mod auth;
pub mod dialplans;
pub mod error;
pub mod limiter;
pub mod live;
pub mod me;
pub mod metrics;
pub mod panel;
pub mod recordings;
pub mod settings;
pub mod stats;
pub mod tls;
pub mod voicemail;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::handler::Handler;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{on, MethodFilter};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::node::NodeControl;
use crate::registrar::Registrar;
use crate::store::Store;
use crate::voicemail::Voicemail;
use error::ApiError;
use limiter::{LimiterPolicy, LoginLimiter};

/// The OpenAPI 3.1 document of the admin API (hand-written; a test holds it to the
/// router).
pub const OPENAPI: &str = include_str!("openapi.json");

/// What the node tells about itself.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub id: String,
    pub started: Instant,
    /// Unix seconds.
    pub started_at: i64,
    /// The running node's counters (fresh ones, all zero, until [`NodeInfo::with_metrics`]).
    pub metrics: Arc<crate::metrics::NodeMetrics>,
    /// The effective configuration as `/api/v1/settings` shows it
    /// ([`settings::config_view`]; set by [`NodeInfo::with_config`]).
    pub config: Arc<serde_json::Value>,
    /// Where this node's call recordings are (`recordings` in `[node] data_dir`).
    pub recordings_dir: std::path::PathBuf,
    /// `[cluster] enabled`, and its heartbeat period (for health in `/api/v1/cluster`).
    pub clustered: bool,
    pub heartbeat_ms: u64,
}

impl NodeInfo {
    /// A node starting now, with the default configuration until [`NodeInfo::with_config`].
    pub fn new(id: impl Into<String>) -> Self {
        NodeInfo {
            id: id.into(),
            started: Instant::now(),
            started_at: crate::store::now_unix(),
            metrics: Arc::default(),
            config: Arc::default(),
            recordings_dir: std::path::PathBuf::new(),
            clustered: false,
            heartbeat_ms: 0,
        }
        .with_config(&crate::config::Config::default())
    }

    /// The configuration the node runs with.
    pub fn with_config(mut self, cfg: &crate::config::Config) -> Self {
        self.config = Arc::new(settings::config_view(cfg));
        self.recordings_dir = cfg.recordings_dir();
        self.clustered = cfg.cluster.enabled;
        self.heartbeat_ms = cfg.cluster.heartbeat_ms;
        self
    }

    /// Serves these counters at `/metrics` (the running node's).
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::NodeMetrics>) -> Self {
        self.metrics = metrics;
        self
    }
}

/// What the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    store: Store,
    registrar: Arc<Registrar>,
    node: NodeInfo,
    /// `sip.realm`: extension passwords are hashed for it.
    realm: String,
    limiter: Mutex<LoginLimiter>,
    /// Cookies get `Secure`: set when the server runs over TLS ([`HttpServer::spawn`] with a TLS config).
    secure_cookies: std::sync::atomic::AtomicBool,
    /// Orders to this node's core (hanging up a call, reloading the dialplan).
    control: mpsc::Sender<NodeControl>,
    /// The dialplan folder (`[paths] dialplans`) the API reads and writes.
    dialplans: PathBuf,
    /// The mailboxes: the API lists, plays, moves and deletes through it, so MWI lamps
    /// follow.
    voicemail: Voicemail,
    /// Held from validating a dialplan change to reloading it, so two saves cannot
    /// each validate against a folder the other is about to change.
    dialplan_edits: tokio::sync::Mutex<()>,
    /// Flips to true when the server stops: live feeds end, so a graceful shutdown
    /// does not wait on streams that would never finish.
    closing: watch::Sender<bool>,
}

impl AppState {
    pub fn new(
        registrar: Arc<Registrar>,
        control: mpsc::Sender<NodeControl>,
        node: NodeInfo,
        realm: impl Into<String>,
        dialplans: PathBuf,
        voicemail: Voicemail,
    ) -> Self {
        Self::with_limits(
            registrar,
            control,
            node,
            realm,
            dialplans,
            voicemail,
            LimiterPolicy::default(),
        )
    }

    pub fn with_limits(
        registrar: Arc<Registrar>,
        control: mpsc::Sender<NodeControl>,
        node: NodeInfo,
        realm: impl Into<String>,
        dialplans: PathBuf,
        voicemail: Voicemail,
        limits: LimiterPolicy,
    ) -> Self {
        AppState {
            inner: Arc::new(Shared {
                store: registrar.store().clone(),
                registrar,
                control,
                dialplans,
                voicemail,
                dialplan_edits: tokio::sync::Mutex::new(()),
                closing: watch::Sender::new(false),
                node,
                realm: realm.into(),
                limiter: Mutex::new(LoginLimiter::new(limits)),
                secure_cookies: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }
}

impl AppState {
    /// Ends the live feeds (the server is stopping).
    pub fn close_streams(&self) {
        self.inner.closing.send_replace(true);
    }
}

/// Builds the router and the table of its (method, path) pairs, so a test can hold the
/// OpenAPI document to what is really routed.
struct Routes {
    router: Router<AppState>,
    table: Vec<(&'static str, &'static str)>,
}

impl Routes {
    fn add<H, T>(mut self, method: &'static str, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = match method {
            "GET" => MethodFilter::GET,
            "POST" => MethodFilter::POST,
            "PUT" => MethodFilter::PUT,
            "DELETE" => MethodFilter::DELETE,
            other => unreachable!("method {other} not used by the API"),
        };
        self.table.push((method, path));
        self.router = self.router.route(path, on(filter, handler));
        self
    }
}

fn routes() -> Routes {
    Routes {
        router: Router::new(),
        table: Vec::new(),
    }
    .add("GET", "/api/v1/openapi.json", openapi)
    .add("POST", "/api/v1/login", auth::login)
    .add("POST", "/api/v1/logout", auth::logout)
    .add("GET", "/api/v1/me", auth::me)
    .add("GET", "/api/v1/me/extension", me::get_extension)
    .add("PUT", "/api/v1/me/extension", me::update_extension)
    .add(
        "POST",
        "/api/v1/me/extension/password",
        me::new_sip_password,
    )
    .add("PUT", "/api/v1/me/voicemail-pin", me::set_voicemail_pin)
    .add("GET", "/api/v1/status", api::status)
    .add("GET", "/api/v1/stats/history", stats::history)
    .add("GET", "/api/v1/cluster", settings::cluster)
    .add("GET", "/api/v1/settings", settings::settings)
    .add("GET", "/api/v1/extensions", api::list_extensions)
    .add("POST", "/api/v1/extensions", api::create_extension)
    .add("GET", "/api/v1/extensions/{number}", api::get_extension)
    .add("PUT", "/api/v1/extensions/{number}", api::update_extension)
    .add(
        "DELETE",
        "/api/v1/extensions/{number}",
        api::delete_extension,
    )
    .add(
        "POST",
        "/api/v1/extensions/{number}/account",
        api::create_user_account,
    )
    .add("GET", "/api/v1/registrations", api::list_registrations)
    .add("GET", "/api/v1/calls", api::list_calls)
    .add("DELETE", "/api/v1/calls/{id}", api::hang_up_call)
    .add("GET", "/api/v1/events", live::events)
    .add("GET", "/api/v1/cdrs", api::list_cdrs)
    .add("GET", "/api/v1/recordings", recordings::list)
    .add("GET", "/api/v1/recordings/{id}/audio", recordings::audio)
    .add("DELETE", "/api/v1/recordings/{id}", recordings::delete)
    .add("GET", "/api/v1/dialplans", dialplans::list)
    .add("POST", "/api/v1/dialplans/validate", dialplans::validate)
    .add("PUT", "/api/v1/dialplans/{name}", dialplans::save)
    .add("GET", "/api/v1/voicemail", voicemail::list_mailboxes)
    .add(
        "GET",
        "/api/v1/voicemail/{number}/messages",
        voicemail::list_messages,
    )
    .add(
        "PUT",
        "/api/v1/voicemail/{number}/messages/{id}",
        voicemail::update_message,
    )
    .add(
        "DELETE",
        "/api/v1/voicemail/{number}/messages/{id}",
        voicemail::delete_message,
    )
    .add(
        "GET",
        "/api/v1/voicemail/{number}/messages/{id}/audio",
        voicemail::message_audio,
    )
    .add("GET", "/metrics", metrics::metrics)
}

/// The whole HTTP service: the API and the panel's files.
pub fn router(state: AppState) -> Router {
    panel::routes(routes().router)
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .with_state(state)
}

/// `GET /api/v1/openapi.json` (no auth: it describes, it holds nothing).
async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// Serves `router(state)` on `listener` until `shutdown` completes, then lets requests
/// in flight finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// A server running in its own task.
pub struct HttpServer {
    pub local_addr: SocketAddr,
    state: AppState,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// Starts serving on an already bound listener: HTTPS with `tls` (session cookies
    /// then get `Secure`), else plain HTTP.
    pub fn spawn(
        listener: TcpListener,
        state: AppState,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<HttpServer> {
        let local_addr = listener.local_addr()?;
        if tls.is_some() {
            state
                .inner
                .secure_cookies
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let kept = state.clone();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            match tls {
                Some(tls) => tls::serve_tls(listener, tls, router(state), shutdown).await,
                None => {
                    if let Err(e) = serve(listener, state, shutdown).await {
                        tracing::error!(error = %e, "admin HTTP server failed");
                    }
                }
            }
        });
        Ok(HttpServer {
            local_addr,
            state: kept,
            stop,
            task,
        })
    }

    /// Stops accepting, and waits (up to 5 s) for requests in flight.
    pub async fn shutdown(self) {
        self.state.close_streams();
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.task).await;
    }
}

#[cfg(test)]
mod tests;
