//! The store: sqlx access to SQLite (default, one node) and PostgreSQL (cluster) behind one
//! repository API, plus the migration runner (`migrations/{sqlite,postgres}`).
//!
//! Owns: every SQL statement, the schema, connection settings (durability pragmas, pool
//! sizes), mapping database errors to [`StoreError`].
//! Must not: leak SQL, sqlx types or rows upward (callers see plain structs), hold
//! business rules (expiry policy, CSeq ordering and binding selection belong to the
//! registrar; the store only persists what it is given), or depend on any higher layer.
//!
//! Both backends run the same statements (`$N` placeholders work on both); each query is
//! written once inside a macro expanded per pool type, so both expansions are type-checked
//! and the test battery (`tests/integration/store.rs`) runs every query on both.

mod migrate;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Row;

/// Errors of the store layer: the store's own kinds, so no caller sees or builds a sqlx
/// type (a database error is kept as its message). Mapped to SIP/HTTP statuses by the
/// callers, not here.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL {0:?}: expected sqlite://, postgres:// or postgresql://")]
    UnsupportedUrl(String),
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The URL with any password redacted.
        url: String,
        reason: String,
    },
    #[error("cannot create the database directory {path}: {source}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("migration {version} failed: {reason}")]
    Migration { version: i64, reason: String },
    #[error(
        "the database schema is at version {db_version}, newer than this binary knows \
         ({binary_version}); run a newer ringfort"
    )]
    NewerSchema {
        db_version: i64,
        binary_version: i64,
    },
    /// A unique key already exists (extension number, or a duplicate binding key).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Bindings were given for an AOR that is not an extension.
    #[error("no extension {0:?}")]
    UnknownExtension(String),
    /// The caller passed a value the store refuses (see the message).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The database cannot be reached now: connection refused or lost, pool timed out
    /// or closed, TLS or protocol failure, or (said by a caller) a commit that did not
    /// finish in time. The same statement may succeed later; the registrar's outage
    /// handling depends on telling this from the others.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A stored row does not read back as the schema says (a value out of range, a
    /// missing column).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database refused the statement for any other reason.
    #[error("database error: {0}")]
    Query(String),
}

impl StoreError {
    /// The database could not be reached (connection refused or lost, pool timed out),
    /// as opposed to refusing the statement: retrying the same write later may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Connect { .. } | StoreError::Unavailable(_)
        )
    }
}

/// The one place a sqlx error becomes a store error (so `?` works on queries inside the
/// store); the sqlx error itself goes no further than its message.
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match e {
            E::Io(_)
            | E::PoolTimedOut
            | E::PoolClosed
            | E::Tls(_)
            | E::Protocol(_)
            | E::WorkerCrashed => StoreError::Unavailable(e.to_string()),
            E::Decode(_)
            | E::ColumnDecode { .. }
            | E::ColumnNotFound(_)
            | E::ColumnIndexOutOfBounds { .. }
            | E::TypeNotFound { .. } => StoreError::Corrupt(e.to_string()),
            _ => StoreError::Query(e.to_string()),
        }
    }
}

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The statement that opens a transaction that will write.
    /// SQLite: `BEGIN IMMEDIATE` takes the write lock at once (waiting up to busy_timeout),
    /// so a transaction that reads before writing cannot fail with SQLITE_BUSY_SNAPSHOT.
    fn begin_write_sql(self) -> &'static str {
        match self {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        }
    }
}

/// An extension (SIP account). Only digest HA1 values, never a cleartext password.
#[derive(Clone, PartialEq, Eq)]
pub struct Extension {
    pub number: String,
    pub display_name: String,
    pub realm: String,
    /// hex MD5(user:realm:password)
    pub ha1_md5: String,
    /// hex SHA-256(user:realm:password)
    pub ha1_sha256: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// Do-not-disturb and call forwarding.
    pub routing: ExtensionRouting,
}

/// An extension's do-not-disturb flag and call-forwarding targets (extension numbers).
/// The store keeps them as given; the rules on targets live in `ringfort::admin`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtensionRouting {
    pub dnd: bool,
    pub forward_always: Option<String>,
    pub forward_busy: Option<String>,
    pub forward_noanswer: Option<String>,
}

// HA1 is password-equivalent for its realm: keep it out of logs.
impl std::fmt::Debug for Extension {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extension")
            .field("number", &self.number)
            .field("display_name", &self.display_name)
            .field("realm", &self.realm)
            .field("ha1_md5", &"<redacted>")
            .field("ha1_sha256", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .field("routing", &self.routing)
            .finish()
    }
}

/// One registered contact of an AOR (location service row).
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// The extension number the binding belongs to.
    pub aor: String,
    /// Identity within the AOR: `"<+sip.instance>;reg-id=N"` when RFC 5626 params are
    /// present, else the contact URI.
    pub binding_key: String,
    /// Full Contact URI as the phone sent it.
    pub contact_uri: String,
    pub q: Option<f32>,
    /// Unix seconds.
    pub expires_at: i64,
    /// RFC 3261 10.3 step 7 ordering.
    pub call_id: String,
    pub cseq: u32,
    /// `"ip:port"` the REGISTER came from (NAT).
    pub received: String,
    /// `"udp" | "tcp" | "tls" | "ws" | "wss"`.
    pub transport: String,
    /// `"ip:port"` of our socket it arrived on (send back from here).
    pub local_addr: String,
    /// Connection/flow token for connection-oriented transports.
    pub flow: Option<String>,
    /// RFC 3327 Path header values in order.
    pub path: Vec<String>,
    pub user_agent: String,
    pub instance_id: Option<String>,
    pub reg_id: Option<u32>,
    /// The node that holds the flow.
    pub node_id: String,
    pub updated_at: i64,
}

impl Binding {
    /// Whether the binding counts at `now_unix` (Unix seconds): up to, not at, its
    /// `expires_at`. The one liveness rule for bindings, the same boundary as the store's
    /// own live count and expiry delete (`expires_at > now`, `expires_at <= now`), so what
    /// the registrar routes to, the API lists and the sweeper deletes agree.
    pub fn is_live(&self, now_unix: i64) -> bool {
        self.expires_at > now_unix
    }
}

/// 1-32 characters of `[A-Za-z0-9._-]` (benchmarks use SIP users like `u100000`), not
/// starting with a dot: a number also names its mailbox folder, and `.`, `..` or a hidden
/// name must not be one.
pub fn valid_extension_number(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The repository. Cheap to clone (a pool handle); share it freely.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Inner,
    /// Bumped after each commit that changed bindings or calls through this handle or
    /// its clones (see [`Store::changes`]).
    changes: std::sync::Arc<tokio::sync::watch::Sender<Changes>>,
}

/// Counters of committed changes, for watchers (the admin panel's live view): a
/// counter moving means "read again", it does not say what changed. Local to this
/// process: another node's writes (cluster mode) do not move them, so a watcher that
/// must see those also re-reads on a timer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    /// Binding sets written or expired rows deleted.
    pub bindings: u64,
    /// Calls started, answered or finished (`active_calls` and CDRs).
    pub calls: u64,
}

#[derive(Debug, Clone)]
enum Inner {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Run `$body` with `$pool` bound to the concrete pool; the body is expanded (and
/// type-checked) once per backend.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.inner {
            Inner::Sqlite($pool) => $body,
            Inner::Postgres($pool) => $body,
        }
    };
}

/// What [`Store::extensions_fingerprint`] reads: count, newest and sum of `updated_at`.
pub type ExtensionsFingerprint = (i64, i64, i64);

/// Extensions read per query when the whole table is read.
const EXTENSION_PAGE: u32 = 1000;

const EXTENSION_COLUMNS: &str = "number, display_name, realm, ha1_md5, ha1_sha256, \
     created_at, updated_at, dnd, forward_always, forward_busy, forward_noanswer";

/// Binds one binding's fields in the order of `BINDING_COLUMNS`.
fn bind_binding<'q, DB>(
    q: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
    b: &'q Binding,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
where
    DB: sqlx::Database,
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<f32>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    q.bind(b.aor.as_str())
        .bind(b.binding_key.as_str())
        .bind(b.contact_uri.as_str())
        .bind(b.q)
        .bind(b.expires_at)
        .bind(b.call_id.as_str())
        .bind(i64::from(b.cseq))
        .bind(b.received.as_str())
        .bind(b.transport.as_str())
        .bind(b.local_addr.as_str())
        .bind(b.flow.as_deref())
        .bind(encode_path(&b.path))
        .bind(b.user_agent.as_str())
        .bind(b.instance_id.as_deref())
        .bind(b.reg_id.map(i64::from))
        .bind(b.node_id.as_str())
        .bind(b.updated_at)
}

/// Columns of `BINDING_COLUMNS`, i.e. bind parameters per inserted binding row.
const BINDING_FIELDS: usize = 17;
/// AORs per DELETE and rows per INSERT in a batch: well under SQLite's 32766 parameters.
const BATCH_AORS: usize = 500;
const BATCH_ROWS: usize = 500;

/// `count` bind placeholders numbered from `first`: `$n` for PostgreSQL, plain `?` for
/// SQLite, where sqlx resolves every `$n` by name (measured: a 500-row batch insert spent
/// most of its 370 ms doing that).
fn placeholders(backend: Backend, first: usize, count: usize) -> String {
    match backend {
        Backend::Sqlite => vec!["?"; count].join(", "),
        Backend::Postgres => (first..first + count)
            .map(|n| format!("${n}"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

const BINDING_COLUMNS: &str = "aor, binding_key, contact_uri, q, expires_at, call_id, cseq, \
     received, transport, local_addr, flow, path, user_agent, instance_id, reg_id, node_id, \
     updated_at";

/// Decode an extension row (column order of `EXTENSION_COLUMNS`).
macro_rules! extension_from_row {
    ($row:expr) => {{
        let row = $row;
        Ok::<_, sqlx::Error>(Extension {
            number: row.try_get(0)?,
            display_name: row.try_get(1)?,
            realm: row.try_get(2)?,
            ha1_md5: row.try_get(3)?,
            ha1_sha256: row.try_get(4)?,
            created_at: row.try_get(5)?,
            updated_at: row.try_get(6)?,
            routing: $crate::store::ExtensionRouting {
                dnd: row.try_get(7)?,
                forward_always: row.try_get(8)?,
                forward_busy: row.try_get(9)?,
                forward_noanswer: row.try_get(10)?,
            },
        })
    }};
}

/// Decode a binding row (column order of `BINDING_COLUMNS`).
macro_rules! binding_from_row {
    ($row:expr) => {{
        let row = $row;
        let cseq: i64 = row.try_get(6)?;
        let path: String = row.try_get(11)?;
        let reg_id: Option<i64> = row.try_get(14)?;
        Ok::<_, sqlx::Error>(Binding {
            aor: row.try_get(0)?,
            binding_key: row.try_get(1)?,
            contact_uri: row.try_get(2)?,
            q: row.try_get(3)?,
            expires_at: row.try_get(4)?,
            call_id: row.try_get(5)?,
            cseq: u32::try_from(cseq).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            received: row.try_get(7)?,
            transport: row.try_get(8)?,
            local_addr: row.try_get(9)?,
            flow: row.try_get(10)?,
            path: decode_path(&path).map_err(|e| sqlx::Error::Decode(e.into()))?,
            user_agent: row.try_get(12)?,
            instance_id: row.try_get(13)?,
            reg_id: reg_id
                .map(u32::try_from)
                .transpose()
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            node_id: row.try_get(15)?,
            updated_at: row.try_get(16)?,
        })
    }};
}

/// One change to the call records, applied in order by [`Store::apply_call_records`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallRecord {
    /// A call started: its row in `active_calls`.
    Started(ActiveCall),
    /// It was answered (Unix seconds), with the callee leg that won.
    Answered {
        id: String,
        at: i64,
        callee_call_id: String,
    },
    /// It ended: the CDR, and its `active_calls` row goes.
    Finished(Cdr),
}

/// A call in progress, as other processes (the CLI, other nodes) see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveCall {
    pub id: String,
    pub caller: String,
    pub callee: String,
    /// `ringing` or `answered`.
    pub state: String,
    pub started_at: i64,
    pub answered_at: Option<i64>,
    pub caller_call_id: String,
    /// The Call-ID of the callee leg (shared by its forks).
    pub callee_call_id: String,
    pub node_id: String,
}

/// A call detail record: one per ended call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cdr {
    pub id: String,
    pub caller: String,
    pub callee: String,
    pub started_at: i64,
    pub answered_at: Option<i64>,
    pub ended_at: i64,
    /// answered, busy, no-answer, cancelled, failed, ...
    pub disposition: String,
    /// Billable seconds, from answer to end.
    pub duration: i64,
    /// caller, callee or system.
    pub hangup_leg: String,
    pub caller_call_id: String,
    pub callee_call_id: String,
    pub node_id: String,
    /// The call's recording (a WAV file on the node that recorded it), if recorded.
    pub recording: Option<String>,
}

const ACTIVE_CALL_COLUMNS: &str = "id, caller, callee, state, started_at, answered_at, \
     caller_call_id, callee_call_id, node_id";
const CDR_COLUMNS: &str = "id, caller, callee, started_at, answered_at, ended_at, disposition, \
     duration, hangup_leg, caller_call_id, callee_call_id, node_id, recording";

macro_rules! active_call_from_row {
    ($row:expr) => {{
        let row = $row;
        Ok::<_, sqlx::Error>(ActiveCall {
            id: row.try_get(0)?,
            caller: row.try_get(1)?,
            callee: row.try_get(2)?,
            state: row.try_get(3)?,
            started_at: row.try_get(4)?,
            answered_at: row.try_get(5)?,
            caller_call_id: row.try_get(6)?,
            callee_call_id: row.try_get(7)?,
            node_id: row.try_get(8)?,
        })
    }};
}

macro_rules! cdr_from_row {
    ($row:expr) => {{
        let row = $row;
        Ok::<_, sqlx::Error>(Cdr {
            id: row.try_get(0)?,
            caller: row.try_get(1)?,
            callee: row.try_get(2)?,
            started_at: row.try_get(3)?,
            answered_at: row.try_get(4)?,
            ended_at: row.try_get(5)?,
            disposition: row.try_get(6)?,
            duration: row.try_get(7)?,
            hangup_leg: row.try_get(8)?,
            caller_call_id: row.try_get(9)?,
            callee_call_id: row.try_get(10)?,
            node_id: row.try_get(11)?,
            recording: row.try_get(12)?,
        })
    }};
}

impl Store {
    /// Open a pool. `sqlite://path?mode=rwc` creates the file and its parent directory;
    /// `postgres://` / `postgresql://` for PostgreSQL. Does not migrate.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        let max = max_connections.max(1);
        let connect_err = |e: sqlx::Error| StoreError::Connect {
            url: redact_url(url),
            reason: e.to_string(),
        };
        if url.starts_with("sqlite:") {
            // Durability: WAL + synchronous=FULL fsyncs the WAL on every commit, so a
            // committed registration survives a process crash AND an OS crash / power cut.
            // (WAL + NORMAL only survives a process crash: the last commits may be lost on
            // power loss, and a phone that got 200 OK would be unreachable until it
            // re-registers.) In WAL mode FULL costs one fsync per commit, no more; readers
            // never block the writer.
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(connect_err)?
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(5));
            let file = opts.get_filename();
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            if !in_memory && url.contains("mode=rwc") {
                if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                    create_dir(dir)?;
                }
            }
            let mut pool_opts = SqlitePoolOptions::new().max_connections(max);
            if in_memory {
                // The database lives as long as one connection does.
                pool_opts = pool_opts
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None);
            }
            let pool = pool_opts.connect_with(opts).await.map_err(connect_err)?;
            Ok(Store::with_inner(Inner::Sqlite(pool)))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url).map_err(connect_err)?;
            let pool = PgPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await
                .map_err(connect_err)?;
            Ok(Store::with_inner(Inner::Postgres(pool)))
        } else {
            Err(StoreError::UnsupportedUrl(redact_url(url)))
        }
    }

    fn with_inner(inner: Inner) -> Store {
        Store {
            inner,
            changes: std::sync::Arc::new(tokio::sync::watch::Sender::new(Changes::default())),
        }
    }

    /// Watches [`Changes`]: the receiver wakes after each commit that changed bindings
    /// or calls (only once it is committed, so a read after the wake-up sees it).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<Changes> {
        self.changes.subscribe()
    }

    fn bindings_changed(&self) {
        self.changes
            .send_modify(|c| c.bindings = c.bindings.wrapping_add(1));
    }

    fn calls_changed(&self) {
        self.changes
            .send_modify(|c| c.calls = c.calls.wrapping_add(1));
    }

    pub fn backend(&self) -> Backend {
        match self.inner {
            Inner::Sqlite(_) => Backend::Sqlite,
            Inner::Postgres(_) => Backend::Postgres,
        }
    }

    /// Apply the pending migrations; returns the ones applied now (`"0001_init"`), empty
    /// when the schema is current. Errors with [`StoreError::NewerSchema`] if the database
    /// has migrations this binary does not know.
    pub async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        migrate::run(self).await
    }

    /// Close the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }

    // ---- extensions ----

    /// Add an extension, stored as given. [`StoreError::Conflict`] if the number exists,
    /// [`StoreError::Invalid`] if it fails [`valid_extension_number`].
    pub async fn add_extension(&self, e: &Extension) -> Result<(), StoreError> {
        if !valid_extension_number(&e.number) {
            return Err(StoreError::Invalid(format!(
                "extension number {:?}: 1-32 of [A-Za-z0-9._-]",
                e.number
            )));
        }
        let sql = format!(
            "INSERT INTO extensions ({EXTENSION_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        );
        let r = &e.routing;
        let res = with_pool!(self, pool => sqlx::query(&sql)
            .bind(&e.number)
            .bind(&e.display_name)
            .bind(&e.realm)
            .bind(&e.ha1_md5)
            .bind(&e.ha1_sha256)
            .bind(e.created_at)
            .bind(e.updated_at)
            .bind(r.dnd)
            .bind(r.forward_always.as_deref())
            .bind(r.forward_busy.as_deref())
            .bind(r.forward_noanswer.as_deref())
            .execute(pool)
            .await
            .map(|_| ()));
        res.map_err(|err| {
            if is_unique_violation(&err) {
                StoreError::Conflict(format!("extension {} exists", e.number))
            } else {
                err.into()
            }
        })
    }

    pub async fn get_extension(&self, number: &str) -> Result<Option<Extension>, StoreError> {
        let sql = format!("SELECT {EXTENSION_COLUMNS} FROM extensions WHERE number = $1");
        with_pool!(self, pool => {
            let row = sqlx::query(&sql).bind(number).fetch_optional(pool).await?;
            Ok(row.map(|r| extension_from_row!(r)).transpose()?)
        })
    }

    /// All extensions, ordered by number (bytewise on both backends).
    pub async fn list_extensions(&self) -> Result<Vec<Extension>, StoreError> {
        let mut all = Vec::new();
        self.each_extension_page(|page| all.extend(page)).await?;
        Ok(all)
    }

    /// Reads the whole extensions table in number order, a page at a time, handing each
    /// page to `take`: the rows of one query are all held until it ends (50,000 SQLite
    /// rows took ~100 MB for a moment), a page's are not.
    pub async fn each_extension_page(
        &self,
        mut take: impl FnMut(Vec<Extension>),
    ) -> Result<(), StoreError> {
        let mut after = String::new();
        loop {
            let page = self.extensions_after(&after, EXTENSION_PAGE).await?;
            let last = page.len() < EXTENSION_PAGE as usize;
            if let Some(e) = page.last() {
                after = e.number.clone();
            }
            take(page);
            if last {
                return Ok(());
            }
        }
    }

    /// Remove an extension and (by cascade) its bindings. `false` if there was none.
    pub async fn remove_extension(&self, number: &str) -> Result<bool, StoreError> {
        let sql = "DELETE FROM extensions WHERE number = $1";
        with_pool!(self, pool => {
            let res = sqlx::query(sql).bind(number).execute(pool).await?;
            if res.rows_affected() > 0 {
                // Its bindings went with it (ON DELETE CASCADE).
                self.bindings_changed();
            }
            Ok(res.rows_affected() > 0)
        })
    }

    /// Set realm and HA1 values; `updated_at` becomes now. `false` if there is no such
    /// extension.
    pub async fn update_extension_secret(
        &self,
        number: &str,
        realm: &str,
        ha1_md5: &str,
        ha1_sha256: &str,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE extensions SET realm = $2, ha1_md5 = $3, ha1_sha256 = $4, \
             updated_at = $5 WHERE number = $1";
        with_pool!(self, pool => {
            let res = sqlx::query(sql)
                .bind(number)
                .bind(realm)
                .bind(ha1_md5)
                .bind(ha1_sha256)
                .bind(now_unix())
                .execute(pool)
                .await?;
            Ok(res.rows_affected() > 0)
        })
    }

    /// Set do-not-disturb and the forwarding targets, stored as given; `updated_at`
    /// becomes now. `false` if there is no such extension.
    pub async fn set_extension_routing(
        &self,
        number: &str,
        routing: &ExtensionRouting,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE extensions SET dnd = $2, forward_always = $3, forward_busy = $4, \
             forward_noanswer = $5, updated_at = $6 WHERE number = $1";
        with_pool!(self, pool => {
            let res = sqlx::query(sql)
                .bind(number)
                .bind(routing.dnd)
                .bind(routing.forward_always.as_deref())
                .bind(routing.forward_busy.as_deref())
                .bind(routing.forward_noanswer.as_deref())
                .bind(now_unix())
                .execute(pool)
                .await?;
            Ok(res.rows_affected() > 0)
        })
    }

    // ---- bindings (location service) ----

    /// Atomically make `bindings` the AOR's whole binding set (empty clears it).
    /// Every binding's `aor` must equal `aor` ([`StoreError::Invalid`]); duplicate
    /// `binding_key`s give [`StoreError::Conflict`]; a non-empty set for an AOR that is
    /// not an extension gives [`StoreError::UnknownExtension`].
    /// Concurrent calls on the same AOR are serialised (row lock on the extension in
    /// PostgreSQL, the database write lock in SQLite): the result is one caller's set.
    pub async fn replace_bindings(
        &self,
        aor: &str,
        bindings: &[Binding],
    ) -> Result<(), StoreError> {
        if let Some(b) = bindings.iter().find(|b| b.aor != aor) {
            return Err(StoreError::Invalid(format!(
                "binding for AOR {:?} passed to replace_bindings({aor:?})",
                b.aor
            )));
        }
        let backend = self.backend();
        let lock_sql = match backend {
            // NO KEY UPDATE: conflicts with itself (serialises replacers of this AOR) but
            // not with the KEY SHARE locks that foreign-key checks take.
            Backend::Postgres => {
                "SELECT number FROM extensions WHERE number = $1 FOR NO KEY UPDATE"
            }
            Backend::Sqlite => "SELECT number FROM extensions WHERE number = $1",
        };
        let insert_sql = format!(
            "INSERT INTO bindings ({BINDING_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
        );
        let res: Result<(), sqlx::Error> = with_pool!(self, pool => async {
            let mut tx = pool.begin_with(backend.begin_write_sql()).await?;
            let exists = sqlx::query(lock_sql).bind(aor).fetch_optional(&mut *tx).await?;
            if exists.is_none() {
                if bindings.is_empty() {
                    // Nothing to clear for an unknown AOR (no row can reference it).
                    return Ok(());
                }
                return Err(sqlx::Error::RowNotFound);
            }
            sqlx::query("DELETE FROM bindings WHERE aor = $1")
                .bind(aor)
                .execute(&mut *tx)
                .await?;
            for b in bindings {
                bind_binding(sqlx::query(&insert_sql), b)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        }
        .await);
        if res.is_ok() {
            self.bindings_changed();
        }
        res.map_err(|err| match err {
            sqlx::Error::RowNotFound => StoreError::UnknownExtension(aor.to_owned()),
            // The extension was removed between our check and the insert (SQLite cannot
            // race here; PostgreSQL holds the row lock; kept for safety).
            ref e if is_fk_violation(e) => StoreError::UnknownExtension(aor.to_owned()),
            ref e if is_unique_violation(e) => {
                StoreError::Conflict(format!("duplicate binding key for AOR {aor}"))
            }
            e => e.into(),
        })
    }

    /// Replaces the binding sets of several AORs in ONE transaction: what a registrar
    /// under load uses to commit many REGISTERs with one disk sync (group commit). Each
    /// AOR's set becomes exactly the given bindings. All or nothing: on any error (an
    /// extension removed meanwhile, a duplicate key) nothing is written and the caller can
    /// retry the sets one by one with [`Store::replace_bindings`] to find the culprit.
    pub async fn replace_bindings_many(
        &self,
        sets: &[(&str, &[Binding])],
    ) -> Result<(), StoreError> {
        if sets.is_empty() {
            return Ok(());
        }
        for (aor, bindings) in sets {
            if let Some(b) = bindings.iter().find(|b| b.aor != *aor) {
                return Err(StoreError::Invalid(format!(
                    "binding for AOR {:?} passed for AOR {aor:?}",
                    b.aor
                )));
            }
        }
        let backend = self.backend();
        let aors: Vec<&str> = sets.iter().map(|(a, _)| *a).collect();
        let rows: Vec<&Binding> = sets.iter().flat_map(|(_, bs)| bs.iter()).collect();
        let res: Result<(), sqlx::Error> = with_pool!(self, pool => async {
            let mut tx = pool.begin_with(backend.begin_write_sql()).await?;
            for chunk in aors.chunks(BATCH_AORS) {
                let list = placeholders(backend, 1, chunk.len());
                if backend == Backend::Postgres {
                    // Serialises with other nodes' writers of these AORs, as replace_bindings.
                    let sql = format!(
                        "SELECT number FROM extensions WHERE number IN ({list}) ORDER BY number FOR NO KEY UPDATE"
                    );
                    let mut q = sqlx::query(&sql);
                    for a in chunk {
                        q = q.bind(*a);
                    }
                    q.fetch_all(&mut *tx).await?;
                }
                let sql = format!("DELETE FROM bindings WHERE aor IN ({list})");
                let mut q = sqlx::query(&sql);
                for a in chunk {
                    q = q.bind(*a);
                }
                q.execute(&mut *tx).await?;
            }
            for chunk in rows.chunks(BATCH_ROWS) {
                let values: Vec<String> = (0..chunk.len())
                    .map(|r| {
                        format!(
                            "({})",
                            placeholders(backend, r * BINDING_FIELDS + 1, BINDING_FIELDS)
                        )
                    })
                    .collect();
                let sql = format!(
                    "INSERT INTO bindings ({BINDING_COLUMNS}) VALUES {}",
                    values.join(", ")
                );
                let mut q = sqlx::query(&sql);
                for b in chunk {
                    q = bind_binding(q, b);
                }
                q.execute(&mut *tx).await?;
            }
            tx.commit().await
        }
        .await);
        if res.is_ok() {
            self.bindings_changed();
        }
        res.map_err(|err| match err {
            ref e if is_fk_violation(e) => {
                StoreError::UnknownExtension("one of a batch of AORs".to_owned())
            }
            ref e if is_unique_violation(e) => {
                StoreError::Conflict("duplicate binding key in a batch".to_owned())
            }
            e => e.into(),
        })
    }

    /// The AOR's bindings, ordered by binding_key. Expired rows are included until
    /// [`Store::delete_expired_bindings`] removes them; filter on `expires_at` if needed.
    pub async fn bindings_for(&self, aor: &str) -> Result<Vec<Binding>, StoreError> {
        let sql =
            format!("SELECT {BINDING_COLUMNS} FROM bindings WHERE aor = $1 ORDER BY binding_key");
        with_pool!(self, pool => {
            let rows = sqlx::query(&sql).bind(aor).fetch_all(pool).await?;
            Ok(rows
                .into_iter()
                .map(|r| binding_from_row!(r))
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Every binding, ordered by (aor, binding_key).
    pub async fn all_bindings(&self) -> Result<Vec<Binding>, StoreError> {
        let sql = format!("SELECT {BINDING_COLUMNS} FROM bindings ORDER BY aor, binding_key");
        with_pool!(self, pool => {
            let rows = sqlx::query(&sql).fetch_all(pool).await?;
            Ok(rows
                .into_iter()
                .map(|r| binding_from_row!(r))
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Delete bindings with `expires_at <= now_unix`; returns how many.
    pub async fn delete_expired_bindings(&self, now_unix: i64) -> Result<u64, StoreError> {
        let sql = "DELETE FROM bindings WHERE expires_at <= $1";
        with_pool!(self, pool => {
            let res = sqlx::query(sql).bind(now_unix).execute(pool).await?;
            if res.rows_affected() > 0 {
                self.bindings_changed();
            }
            Ok(res.rows_affected())
        })
    }

    pub async fn count_bindings(&self) -> Result<i64, StoreError> {
        let sql = "SELECT COUNT(*) FROM bindings";
        with_pool!(self, pool => {
            let (n,): (i64,) = sqlx::query_as(sql).fetch_one(pool).await?;
            Ok(n)
        })
    }
}

impl Store {
    // ---- calls in progress and CDRs ----

    /// Records a call that just started (`answered_at` None).
    pub async fn insert_active_call(&self, c: &ActiveCall) -> Result<(), StoreError> {
        self.apply_call_records(&[CallRecord::Started(c.clone())])
            .await
    }

    /// Marks a call in progress answered; `false` if there is no such call.
    pub async fn answer_active_call(
        &self,
        id: &str,
        answered_at: i64,
        callee_call_id: &str,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE active_calls SET state = 'answered', answered_at = $2, \
                   callee_call_id = $3 WHERE id = $1";
        with_pool!(self, pool => {
            let res = sqlx::query(sql)
                .bind(id)
                .bind(answered_at)
                .bind(callee_call_id)
                .execute(pool)
                .await?;
            Ok(res.rows_affected() > 0)
        })
    }

    /// Calls in progress, oldest first.
    pub async fn list_active_calls(&self) -> Result<Vec<ActiveCall>, StoreError> {
        let sql = format!("SELECT {ACTIVE_CALL_COLUMNS} FROM active_calls ORDER BY started_at, id");
        with_pool!(self, pool => {
            let rows = sqlx::query(&sql).fetch_all(pool).await?;
            Ok(rows
                .into_iter()
                .map(|r| active_call_from_row!(r))
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Ends a call: writes its CDR and removes it from the calls in progress, in one
    /// transaction (a crash leaves either the call in progress or the CDR, never neither).
    pub async fn finish_call(&self, cdr: &Cdr) -> Result<(), StoreError> {
        self.apply_call_records(&[CallRecord::Finished(cdr.clone())])
            .await
    }

    /// Applies `records` in order in one transaction (one disk sync for all of them):
    /// the call records writer batches what many calls produced meanwhile.
    pub async fn apply_call_records(&self, records: &[CallRecord]) -> Result<(), StoreError> {
        let backend = self.backend();
        let insert_active = format!(
            "INSERT INTO active_calls ({ACTIVE_CALL_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        );
        let answer = "UPDATE active_calls SET state = 'answered', answered_at = $2, \
                      callee_call_id = $3 WHERE id = $1";
        let insert_cdr = format!(
            "INSERT INTO cdrs ({CDR_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        );
        let res: Result<(), sqlx::Error> = with_pool!(self, pool => async {
            let mut tx = pool.begin_with(backend.begin_write_sql()).await?;
            for r in records {
                match r {
                    CallRecord::Started(c) => {
                        sqlx::query(&insert_active)
                            .bind(c.id.as_str())
                            .bind(c.caller.as_str())
                            .bind(c.callee.as_str())
                            .bind(c.state.as_str())
                            .bind(c.started_at)
                            .bind(c.answered_at)
                            .bind(c.caller_call_id.as_str())
                            .bind(c.callee_call_id.as_str())
                            .bind(c.node_id.as_str())
                            .execute(&mut *tx)
                            .await?;
                    }
                    CallRecord::Answered {
                        id,
                        at,
                        callee_call_id,
                    } => {
                        sqlx::query(answer)
                            .bind(id.as_str())
                            .bind(*at)
                            .bind(callee_call_id.as_str())
                            .execute(&mut *tx)
                            .await?;
                    }
                    CallRecord::Finished(cdr) => {
                        sqlx::query(&insert_cdr)
                            .bind(cdr.id.as_str())
                            .bind(cdr.caller.as_str())
                            .bind(cdr.callee.as_str())
                            .bind(cdr.started_at)
                            .bind(cdr.answered_at)
                            .bind(cdr.ended_at)
                            .bind(cdr.disposition.as_str())
                            .bind(cdr.duration)
                            .bind(cdr.hangup_leg.as_str())
                            .bind(cdr.caller_call_id.as_str())
                            .bind(cdr.callee_call_id.as_str())
                            .bind(cdr.node_id.as_str())
                            .bind(cdr.recording.as_deref())
                            .execute(&mut *tx)
                            .await?;
                        sqlx::query("DELETE FROM active_calls WHERE id = $1")
                            .bind(cdr.id.as_str())
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
            tx.commit().await
        }
        .await);
        if res.is_ok() {
            self.calls_changed();
        }
        res.map_err(|e| match e {
            ref e if is_unique_violation(e) => {
                StoreError::Conflict("a call record exists already".into())
            }
            e => e.into(),
        })
    }

    /// After a crash: turns the calls in progress `node_id` left behind into CDRs
    /// (disposition `failed`, hangup `system`, ended at `now_unix`) and removes them, in
    /// one transaction. Returns their ids.
    pub async fn recover_active_calls(
        &self,
        node_id: &str,
        now_unix: i64,
    ) -> Result<Vec<String>, StoreError> {
        let backend = self.backend();
        let insert = format!(
            "INSERT INTO cdrs ({CDR_COLUMNS}) \
             SELECT id, caller, callee, started_at, answered_at, $2, 'failed', \
             CASE WHEN answered_at IS NULL OR answered_at > $2 THEN 0 ELSE $2 - answered_at END, \
             'system', caller_call_id, callee_call_id, node_id, NULL \
             FROM active_calls WHERE node_id = $1"
        );
        let res: Result<Vec<String>, sqlx::Error> = with_pool!(self, pool => async {
            let mut tx = pool.begin_with(backend.begin_write_sql()).await?;
            let ids: Vec<String> = sqlx::query("SELECT id FROM active_calls WHERE node_id = $1")
                .bind(node_id)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| r.try_get::<String, _>("id"))
                .collect::<Result<_, _>>()?;
            sqlx::query(&insert)
                .bind(node_id)
                .bind(now_unix)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM active_calls WHERE node_id = $1")
                .bind(node_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(ids)
        }
        .await);
        if matches!(&res, Ok(ids) if !ids.is_empty()) {
            self.calls_changed();
        }
        Ok(res?)
    }

    /// Names the recording of a CDR that has none yet (a call cut by a crash, whose
    /// file was repaired at start). False when there is no such CDR.
    pub async fn set_cdr_recording(&self, id: &str, path: &str) -> Result<bool, StoreError> {
        let n = with_pool!(self, pool => {
            sqlx::query("UPDATE cdrs SET recording = $1 WHERE id = $2 AND recording IS NULL")
                .bind(path)
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n > 0)
    }

    /// Forgets a CDR's recording (its file was deleted). False when the CDR has none.
    pub async fn clear_cdr_recording(&self, id: &str) -> Result<bool, StoreError> {
        let n = with_pool!(self, pool => {
            sqlx::query("UPDATE cdrs SET recording = NULL WHERE id = $1 AND recording IS NOT NULL")
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n > 0)
    }

    /// One CDR by id.
    pub async fn get_cdr(&self, id: &str) -> Result<Option<Cdr>, StoreError> {
        let sql = format!("SELECT {CDR_COLUMNS} FROM cdrs WHERE id = $1");
        with_pool!(self, pool => {
            let row = sqlx::query(&sql).bind(id).fetch_optional(pool).await?;
            Ok(row.map(|r| cdr_from_row!(r)).transpose()?)
        })
    }

    /// The latest `limit` CDRs, newest first.
    pub async fn list_cdrs(&self, limit: u32) -> Result<Vec<Cdr>, StoreError> {
        let sql = format!(
            "SELECT {CDR_COLUMNS} FROM cdrs ORDER BY ended_at DESC, started_at DESC, id LIMIT $1"
        );
        with_pool!(self, pool => {
            let rows = sqlx::query(&sql).bind(i64::from(limit)).fetch_all(pool).await?;
            Ok(rows
                .into_iter()
                .map(|r| cdr_from_row!(r))
                .collect::<Result<Vec<_>, _>>()?)
        })
    }
}

mod admin;
pub use admin::{AdminAccount, ApiTokenInfo, CdrFilter, SessionRecord};
mod cluster;
pub use cluster::{ClusterNode, NodeHeartbeat, Renewal, VipLease};
mod notify;
pub use notify::{BindingChange, BindingChanges, BINDINGS_CHANNEL};
mod stats;
pub use stats::NodeSample;
mod voicemail;
pub use voicemail::{
    GreetingKind, VoicemailBox, VoicemailCounts, VoicemailFolder, VoicemailMessage,
};

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

fn is_fk_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_foreign_key_violation())
}

pub(crate) use crate::now_unix;

fn create_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
        path: dir.display().to_string(),
        source,
    })
}

/// `scheme://user:secret@host/db` -> `scheme://user:***@host/db`: a database URL fit for
/// messages and the admin API.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &authority[..colon],
            &rest[at..]
        ),
        _ => url.to_owned(),
    }
}

/// Path values, each terminated by `\n`; `\` and newline inside a value are escaped
/// (`\\`, `\n`). `[]` is `""`, `[""]` is `"\n"`: unambiguous.
fn encode_path(path: &[String]) -> String {
    let mut out = String::with_capacity(path.iter().map(|p| p.len() + 1).sum());
    for p in path {
        for c in p.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('\n');
    }
    out
}

fn decode_path(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\n' => out.push(std::mem::take(&mut cur)),
            '\\' => match chars.next() {
                Some('\\') => cur.push('\\'),
                Some('n') => cur.push('\n'),
                other => return Err(format!("bad escape \\{other:?} in stored path")),
            },
            c => cur.push(c),
        }
    }
    if cur.is_empty() {
        Ok(out)
    } else {
        Err("unterminated value in stored path".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_fields_match_the_columns() {
        assert_eq!(BINDING_COLUMNS.split(',').count(), BINDING_FIELDS);
        assert_eq!(placeholders(Backend::Postgres, 3, 3), "$3, $4, $5");
        assert_eq!(placeholders(Backend::Sqlite, 3, 3), "?, ?, ?");
    }

    #[test]
    fn extension_numbers() {
        for ok in ["100", "u100000", "a.b_c-d", &"x".repeat(32)] {
            assert!(valid_extension_number(ok), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "a@b",
            "é",
            &"x".repeat(33),
            "1;2",
            ".",
            "..",
            ".hidden",
        ] {
            assert!(!valid_extension_number(bad), "{bad}");
        }
    }

    #[test]
    fn path_codec_round_trips() {
        let cases: Vec<Vec<String>> = vec![
            vec![],
            vec![String::new()],
            vec!["<sip:p1.example.com;lr>".into(), "<sip:p2;lr>".into()],
            vec!["a\\b\nc".into(), "\\".into(), "\n".into(), "".into()],
        ];
        for c in cases {
            let enc = encode_path(&c);
            assert_eq!(decode_path(&enc).as_ref(), Ok(&c), "{enc:?}");
        }
        assert!(decode_path("abc").is_err());
        assert!(decode_path("a\\x\n").is_err());
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db?x=1"),
            "postgres://u:***@h:5432/db?x=1"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://data/x.db"), "sqlite://data/x.db");
    }

    #[test]
    fn extension_debug_hides_ha1() {
        let e = Extension {
            number: "100".into(),
            display_name: String::new(),
            realm: "r".into(),
            ha1_md5: "deadbeef".into(),
            ha1_sha256: "cafebabe".into(),
            created_at: 0,
            updated_at: 0,
            routing: ExtensionRouting::default(),
        };
        let s = format!("{e:?}");
        assert!(!s.contains("deadbeef") && !s.contains("cafebabe"));
    }

    #[tokio::test]
    async fn in_memory_sqlite_and_bad_urls() {
        let s = Store::connect("sqlite::memory:", 2).await.expect("connect");
        assert_eq!(
            s.migrate().await.expect("migrate"),
            [
                "0001_init",
                "0002_calls",
                "0003_recordings",
                "0004_admin",
                "0005_extension_routing",
                "0006_voicemail",
                "0007_cluster",
                "0008_cluster_secret",
                "0009_node_samples",
                "0010_account_extension",
                "0011_vip_handover",
                "0012_node_calls"
            ]
        );
        let e = Extension {
            number: "100".into(),
            display_name: String::new(),
            realm: "r".into(),
            ha1_md5: String::new(),
            ha1_sha256: String::new(),
            created_at: 1,
            updated_at: 1,
            routing: ExtensionRouting {
                dnd: true,
                forward_always: None,
                forward_busy: Some("200".into()),
                forward_noanswer: Some("300".into()),
            },
        };
        s.add_extension(&e).await.expect("add");
        assert_eq!(s.list_extensions().await.expect("list"), vec![e]);
        assert!(matches!(
            Store::connect("mysql://u:pw@h/db", 1).await,
            Err(StoreError::UnsupportedUrl(u)) if u == "mysql://u:***@h/db"
        ));
    }

    /// Callers `tokio::spawn` store calls: every future must be `Send` (sqlx's generic
    /// `async fn`s can defeat that through a rustc higher-ranked lifetime bug).
    #[allow(dead_code)]
    fn futures_are_send(s: Store, e: Extension) {
        fn is_send<T: Send>(_: T) {}
        is_send(s.migrate());
        is_send(s.apply_call_records(&[]));
        is_send(s.add_extension(&e));
        is_send(s.get_extension(""));
        is_send(s.list_extensions());
        is_send(s.remove_extension(""));
        is_send(s.update_extension_secret("", "", "", ""));
        let r = ExtensionRouting::default();
        is_send(s.set_extension_routing("", &r));
        is_send(s.replace_bindings("", &[]));
        is_send(s.bindings_for(""));
        is_send(s.all_bindings());
        is_send(s.delete_expired_bindings(0));
        is_send(s.count_bindings());
        is_send(s.list_active_calls());
        is_send(s.answer_active_call("", 0, ""));
        is_send(s.recover_active_calls("", 0));
        is_send(s.list_cdrs(1));
        is_send(s.voicemail_messages(""));
        is_send(s.all_voicemail_messages());
        is_send(s.voicemail_counts(""));
        is_send(s.move_voicemail_message("", "", VoicemailFolder::Old));
        is_send(s.delete_voicemail_message("", ""));
        is_send(s.voicemail_box(""));
        is_send(s.set_voicemail_pin("", None));
        is_send(s.set_voicemail_greeting("", GreetingKind::Busy, None));
        is_send(s.heartbeat_node(&NodeHeartbeat {
            node_id: "",
            sip_address: "",
            media_address: "",
            started_at_ms: 0,
            version: "",
            calls_active: 0,
        }));
        is_send(s.list_cluster_nodes());
        is_send(s.vip_lease(""));
        is_send(s.list_vip_leases());
        is_send(s.acquire_vip_lease("", "", 1));
        is_send(s.renew_vip_lease("", "", 1, 1));
        is_send(s.release_vip_lease("", "", 1));
        is_send(s.request_vip_handover("", None));
        is_send(s.hand_vip_lease_to("", "", 1, "", 1));
        is_send(s.close());
    }
}
