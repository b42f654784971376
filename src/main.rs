//! The `ringfort` command line: parses arguments, loads the config, and calls into the
//! library. Holds no logic of its own. Exit codes: 0 ok, 1 runtime error, 2 bad config or
//! usage.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use ringfort::admin::accounts::{self, Role};
use ringfort::admin::{extensions as ext_admin, generate_password, AdminError};
use ringfort::config::{Config, LogFormat};
use ringfort::dialplan::Plan;
use ringfort::registrar::now_unix;
use ringfort::store::{ExtensionRouting, Store};

#[derive(Parser)]
#[command(
    name = "ringfort",
    version,
    about = "Ringfort: an all-in-one clustered PBX"
)]
struct Cli {
    /// The config file; relative paths inside it resolve against its folder.
    #[arg(long, short = 'c', global = true, default_value = "ringfort.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the PBX node.
    Serve,
    /// Validate the config file and the dialplans and exit (prints FILE:LINE: reason on
    /// error).
    Check,
    /// Create or upgrade the database schema.
    Migrate,
    /// Check the dialplans and have the running node route new calls by them (calls in
    /// progress keep theirs). A bad file is refused with FILE:LINE: reason and the node
    /// keeps its plan. The same as sending the node SIGHUP.
    Reload,
    /// Manage extensions (SIP accounts).
    #[command(subcommand)]
    Extension(ExtensionCommand),
    /// Manage admin accounts of the web panel and the admin API.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// List calls in progress, one a line: id, caller, callee, state, started, answered.
    Calls,
    /// Voicemail: list a mailbox's messages, set its PIN.
    #[command(subcommand)]
    Voicemail(VoicemailCommand),
    /// The cluster: nodes and floating IPs.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// List call detail records, newest first, one a line (a recorded call's file last,
    /// as recording=PATH).
    Cdr {
        /// How many records.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// One line per node (healthy while its last heartbeat is younger than 3 heartbeat
    /// periods, with its age, addresses and version), then one per floating IP: holder,
    /// fencing term, time until its lease expires.
    Status,
    /// Move floating IPs to another node on purpose (before an upgrade): the holder drops
    /// the address and hands the lease on; its calls in progress go on until they end.
    /// Waits until another node holds each VIP.
    Handover {
        /// The VIP to move (default: every VIP some node holds).
        #[arg(long)]
        vip: Option<std::net::IpAddr>,
        /// The node to move it to (default: the preferred other node); it must be healthy.
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Subcommand)]
enum VoicemailCommand {
    /// List the messages of a mailbox, oldest first: id, folder, caller, received (unix
    /// time), length in ms, file.
    List { mailbox: String },
    /// Set the PIN a mailbox asks for (4-10 digits), e.g. before its owner first checks
    /// messages from another phone.
    Pin { mailbox: String, pin: String },
}

#[derive(Subcommand)]
enum ExtensionCommand {
    /// Add an extension. Without --password a strong one is generated and printed once.
    Add {
        number: String,
        #[arg(long)]
        password: Option<String>,
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List extensions, one a line, with their current registrations.
    List,
    /// Remove an extension and its registrations.
    Remove { number: String },
    /// Set a new SIP password (generated and printed once without --password).
    Passwd {
        number: String,
        #[arg(long)]
        password: Option<String>,
    },
    /// Add extensions from a CSV file of `number,password[,name]` lines.
    Import { file: PathBuf },
    /// Turn do-not-disturb on or off (calls see the extension as busy).
    Dnd { number: String, state: OnOff },
    /// Forward calls to another extension: always, when busy (or DND), when not answered
    /// (or not registered); --clear removes all three.
    #[command(group(
        clap::ArgGroup::new("forward").required(true).multiple(true)
            .args(["always", "busy", "noanswer", "clear"])
    ))]
    Forward {
        number: String,
        #[arg(long, value_name = "N")]
        always: Option<String>,
        #[arg(long, value_name = "N")]
        busy: Option<String>,
        #[arg(long, value_name = "N")]
        noanswer: Option<String>,
        #[arg(long, conflicts_with_all = ["always", "busy", "noanswer"])]
        clear: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

/// `dnd,always=N,busy=N,noanswer=N` (what is set), or `-`.
fn routing_summary(r: &ExtensionRouting) -> String {
    let mut parts = Vec::new();
    if r.dnd {
        parts.push("dnd".to_owned());
    }
    for (kind, target) in [
        ("always", &r.forward_always),
        ("busy", &r.forward_busy),
        ("noanswer", &r.forward_noanswer),
    ] {
        if let Some(t) = target {
            parts.push(format!("{kind}={t}"));
        }
    }
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(",")
    }
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Add an admin account. Without --password a strong one is generated and printed once.
    Add {
        name: String,
        #[arg(long)]
        password: Option<String>,
        /// admin (everything) or user.
        #[arg(long, default_value = "admin")]
        role: String,
        /// The extension the account owns: a `user` sees that extension's voicemail,
        /// forwarding, DND and SIP password on the self-service page.
        #[arg(long)]
        extension: Option<String>,
    },
    /// Link an account to the extension it owns, or unlink it with --none.
    Link {
        name: String,
        extension: Option<String>,
        #[arg(long)]
        none: bool,
    },
    /// List admin accounts, one a line, with their API tokens.
    List,
    /// Remove an admin account with its sessions and API tokens.
    Remove { name: String },
    /// Make an API token for scripts (printed once), or revoke one with --revoke.
    Token {
        name: String,
        token_name: String,
        #[arg(long)]
        revoke: bool,
    },
}

/// An error that maps to exit code 2.
#[derive(Debug)]
struct UsageError(String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            for err in e.errors() {
                eprintln!("{err}");
            }
            return ExitCode::from(2);
        }
    };
    // The dialplan is refused at load like the config: FILE:LINE: reason, exit 2, before
    // the node starts (which loads it again to route by it).
    let plan = match cli.command {
        Command::Check | Command::Serve | Command::Reload => {
            match Plan::load_dir(&cfg.paths.dialplans) {
                Ok(plan) => Some(plan),
                Err(e) => {
                    for err in e.errors() {
                        eprintln!("{err}");
                    }
                    return ExitCode::from(2);
                }
            }
        }
        _ => None,
    };
    if let (Command::Check, Some(plan)) = (&cli.command, &plan) {
        println!("{}: ok", cli.config.display());
        println!(
            "{}: ok, {} contexts, {} routes",
            cfg.paths.dialplans.display(),
            plan.contexts().count(),
            plan.route_count()
        );
        return ExitCode::SUCCESS;
    }
    init_logging(&cfg);
    if let Some(plan) = &plan {
        tracing::info!(
            "dialplan {}: {} contexts, {} routes",
            cfg.paths.dialplans.display(),
            plan.contexts().count(),
            plan.route_count()
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli.command, cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn init_logging(cfg: &Config) {
    use tracing_subscriber::EnvFilter;
    // RINGFORT_LOG wins over the config so one run can be made verbose without editing it.
    let filter = std::env::var("RINGFORT_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(&cfg.log.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colors only for a person at a terminal: log files and journals get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_writer(std::io::stderr);
    match cfg.log.format {
        LogFormat::Json => {
            // JSON needs a feature we keep off for a lean build; plain text without color
            // is the machine-readable fallback.
            builder.with_ansi(false).init()
        }
        LogFormat::Text => builder.init(),
    }
}

/// Opens the database and brings its schema up to date.
async fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    let store = open_store_no_migrate(cfg).await?;
    store.migrate().await.context("database migration failed")?;
    Ok(store)
}

async fn run(command: Command, cfg: Config) -> anyhow::Result<()> {
    match command {
        Command::Check => Ok(()),
        Command::Migrate => {
            let url = cfg.database_url();
            let store = open_store_no_migrate(&cfg).await?;
            let applied = store.migrate().await.context("database migration failed")?;
            if applied.is_empty() {
                println!(
                    "{}: schema is up to date",
                    ringfort::store::redact_url(&url)
                );
            } else {
                for name in applied {
                    println!("applied {name}");
                }
            }
            Ok(())
        }
        Command::Serve => serve(cfg).await,
        Command::Reload => reload(&cfg),
        Command::Extension(cmd) => extension(cmd, &cfg).await,
        Command::Admin(cmd) => admin(cmd, &cfg).await,
        Command::Calls => {
            let store = open_store(&cfg).await?;
            for c in ringfort::call::lookup::in_progress(&store).await? {
                println!(
                    "{}\t{}\t{}\t{}\tstarted={}\tanswered={}\tnode={}\tcaller_call_id={}\tcallee_call_id={}",
                    c.id,
                    c.caller,
                    c.callee,
                    c.state,
                    c.started_at,
                    c.answered_at.map_or("-".to_owned(), |a| a.to_string()),
                    c.node_id,
                    c.caller_call_id,
                    c.callee_call_id,
                );
            }
            store.close().await;
            Ok(())
        }
        Command::Voicemail(cmd) => voicemail(cmd, &cfg).await,
        Command::Cluster(ClusterCommand::Status) => {
            let store = open_store(&cfg).await?;
            let nodes = store.list_cluster_nodes().await?;
            let leases = store.list_vip_leases().await?;
            store.close().await;
            let configured: Vec<String> = cfg
                .cluster
                .vip
                .iter()
                .map(|v| v.address.to_string())
                .collect();
            for line in ringfort::cluster::status::render(
                &nodes,
                &leases,
                &configured,
                cfg.cluster.heartbeat_ms,
            ) {
                println!("{line}");
            }
            Ok(())
        }
        Command::Cluster(ClusterCommand::Handover { vip, to }) => {
            use ringfort::cluster::handover;
            let store = open_store(&cfg).await?;
            let nodes = store.list_cluster_nodes().await?;
            let leases = store.list_vip_leases().await?;
            let vip = vip.map(|v| v.to_string());
            let result = match handover::plan(
                &nodes,
                &leases,
                vip.as_deref(),
                to.as_deref(),
                cfg.cluster.heartbeat_ms,
            ) {
                Ok(moves) => {
                    // The holder sees the request within a renewal, the target within a
                    // read; a target that never comes costs a lease, then others try.
                    let limit = std::time::Duration::from_millis(
                        2 * cfg.cluster.lease_ms + 2 * cfg.cluster.renew_ms + 2000,
                    );
                    let mut result = Ok(());
                    for lease in &moves {
                        match handover::move_vip(&store, lease, to.as_deref(), limit).await {
                            Ok(moved) => println!("{moved}"),
                            Err(e) => {
                                eprintln!("error: {e}");
                                result = Err(anyhow::anyhow!("handover incomplete"));
                            }
                        }
                    }
                    result
                }
                Err(e) => Err(anyhow::Error::new(e)),
            };
            store.close().await;
            result
        }
        Command::Cdr { limit } => {
            let store = open_store(&cfg).await?;
            for c in store.list_cdrs(limit).await? {
                // The recording comes last, and only when there is one.
                let recording = c
                    .recording
                    .as_deref()
                    .map_or(String::new(), |r| format!("\trecording={r}"));
                println!(
                    "{}\t{}\t{}\t{}\tduration={}\thangup={}\tstarted={}\tanswered={}\tended={}\tnode={}\tcaller_call_id={}\tcallee_call_id={}{recording}",
                    c.id,
                    c.caller,
                    c.callee,
                    c.disposition,
                    c.duration,
                    c.hangup_leg,
                    c.started_at,
                    c.answered_at.map_or("-".to_owned(), |a| a.to_string()),
                    c.ended_at,
                    c.node_id,
                    c.caller_call_id,
                    c.callee_call_id,
                );
            }
            store.close().await;
            Ok(())
        }
    }
}

async fn open_store_no_migrate(cfg: &Config) -> anyhow::Result<Store> {
    // The store creates the SQLite file's folder (the data directory) itself.
    let url = cfg.database_url();
    Store::connect(&url, cfg.database.max_connections)
        .await
        .with_context(|| {
            format!(
                "cannot open the database {}",
                ringfort::store::redact_url(&url)
            )
        })
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let store = open_store(&cfg).await?;
    let extensions = store.list_extensions().await?.len();
    let admins = store.count_admins().await?;
    // A certificate that does not load stops the start: falling back to plain HTTP would
    // send admin passwords in the clear.
    let tls = if cfg.http.tls() {
        Some(ringfort::http::tls::server_config(
            &cfg.http.tls_cert,
            &cfg.http.tls_key,
        )?)
    } else {
        None
    };
    // Bound before SIP comes up: once the node answers, so does the API.
    let http_listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", cfg.http.listen))?;
    let node = ringfort::node::start(&cfg, store)
        .await
        .context("cannot start the SIP listeners")?;
    let state = ringfort::http::AppState::new(
        node.registrar.clone(),
        node.control.clone(),
        ringfort::http::NodeInfo::new(cfg.node.id.to_string())
            .with_metrics(node.metrics.clone())
            .with_config(&cfg),
        cfg.sip.realm.clone(),
        cfg.paths.dialplans.clone(),
        node.voicemail.clone(),
    );
    let scheme = if tls.is_some() { "https" } else { "http" };
    let http = ringfort::http::HttpServer::spawn(http_listener, state, tls)?;
    ringfort::node::log_started(&cfg, &node.bound);
    tracing::info!(addr = %http.local_addr, "admin panel on {scheme}://{}/ (API under /api/v1, metrics at /metrics)", http.local_addr);
    if extensions == 0 {
        tracing::info!(
            "no extensions yet: add one with `ringfort extension add 1000 --name \"Front desk\"`"
        );
    }
    if admins == 0 {
        tracing::info!(
            "no admin account yet: create the first with `ringfort admin add NAME` (a password is generated and shown once)"
        );
    }
    let pid_file = pid_file(&cfg);
    if let Err(e) = std::fs::write(&pid_file, format!("{}\n", std::process::id())) {
        tracing::warn!(path = %pid_file.display(), error = %e, "no pid file: `ringfort reload` cannot find this node");
    }
    wait_for_signal(|| match node.reload_plan() {
        Ok(plan) => tracing::info!(
            "dialplan reloaded from {}: {} contexts, {} routes",
            cfg.paths.dialplans.display(),
            plan.contexts().count(),
            plan.route_count()
        ),
        Err(e) => {
            for err in e.errors() {
                tracing::error!("dialplan not reloaded: {err}");
            }
        }
    })
    .await;
    tracing::info!("shutting down");
    let _ = std::fs::remove_file(&pid_file);
    http.shutdown().await;
    node.shutdown().await;
    Ok(())
}

/// `ringfort voicemail ...`: straight on the store (a running node's files are not
/// touched: only the node reconciles mailboxes, at its start).
async fn voicemail(cmd: VoicemailCommand, cfg: &Config) -> anyhow::Result<()> {
    let store = open_store(cfg).await?;
    match cmd {
        VoicemailCommand::List { mailbox } => {
            for m in store.voicemail_messages(&mailbox).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    m.id,
                    m.folder.as_str(),
                    m.caller,
                    m.received_at,
                    m.duration_ms,
                    cfg.node.data_dir.join(&m.path).display()
                );
            }
        }
        VoicemailCommand::Pin { mailbox, pin } => {
            if !ringfort::voicemail::valid_pin(&pin) {
                store.close().await;
                return Err(UsageError(format!(
                    "a PIN is {} to {} digits",
                    ringfort::voicemail::PIN_DIGITS.start(),
                    ringfort::voicemail::PIN_DIGITS.end()
                ))
                .into());
            }
            let hash = ringfort::admin::accounts::hash_password(&pin);
            store.set_voicemail_pin(&mailbox, Some(&hash)).await?;
            println!("mailbox {mailbox}: PIN set");
        }
    }
    store.close().await;
    Ok(())
}

/// Where `serve` writes its process id, for `ringfort reload`.
fn pid_file(cfg: &Config) -> std::path::PathBuf {
    cfg.node.data_dir.join("ringfort.pid")
}

/// `ringfort reload`: the plan was checked before this runs; signal the node.
fn reload(cfg: &Config) -> anyhow::Result<()> {
    let path = pid_file(cfg);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no running node found ({})", path.display()))?;
    let pid: i32 = text
        .trim()
        .parse()
        .with_context(|| format!("{}: not a process id", path.display()))?;
    signal_hangup(pid).with_context(|| format!("cannot signal the node (pid {pid})"))?;
    println!(
        "{}: ok; node {pid} told to reload",
        cfg.paths.dialplans.display()
    );
    Ok(())
}

#[cfg(unix)]
fn signal_hangup(pid: i32) -> std::io::Result<()> {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let r = unsafe { libc::kill(pid, libc::SIGHUP) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(unix))]
fn signal_hangup(_pid: i32) -> std::io::Result<()> {
    Err(std::io::Error::other("signals need unix"))
}

/// Waits for SIGTERM or Ctrl-C; each SIGHUP meanwhile runs `on_hangup` (reload).
async fn wait_for_signal(on_hangup: impl Fn()) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(mut term), Ok(mut hup)) => loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => return,
                    _ = term.recv() => return,
                    _ = hup.recv() => on_hangup(),
                }
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = on_hangup;
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Rule breaches, duplicates and unknown names are usage errors (exit 2).
fn usage(e: AdminError) -> anyhow::Error {
    match e {
        AdminError::Store(e) => e.into(),
        e => UsageError(e.to_string()).into(),
    }
}

async fn extension(cmd: ExtensionCommand, cfg: &Config) -> anyhow::Result<()> {
    let store = open_store(cfg).await?;
    match cmd {
        ExtensionCommand::Add {
            number,
            password,
            name,
        } => {
            let (password, generated) = match password {
                Some(p) => (p, false),
                None => (generate_password(), true),
            };
            ext_admin::add(&store, &cfg.sip.realm, &number, &name, &password)
                .await
                .map_err(usage)?;
            if generated {
                println!("extension {number} added; its SIP password (shown once): {password}");
            } else {
                println!("extension {number} added");
            }
        }
        ExtensionCommand::List => {
            let now = now_unix();
            let bindings = ringfort::registrar::live_registrations(&store, now).await?;
            for e in store.list_extensions().await? {
                let contacts: Vec<String> = bindings
                    .iter()
                    .filter(|b| b.aor == e.number)
                    .map(|b| {
                        format!(
                            "{} ({} from {}, expires in {}s)",
                            b.contact_uri,
                            b.transport,
                            b.received,
                            b.expires_at - now
                        )
                    })
                    .collect();
                let name = if e.display_name.is_empty() {
                    "-"
                } else {
                    &e.display_name
                };
                let registered = if contacts.is_empty() {
                    "not registered".to_owned()
                } else {
                    contacts.join(", ")
                };
                let routing = routing_summary(&e.routing);
                println!("{}\t{}\t{}\t{}", e.number, name, routing, registered);
            }
        }
        ExtensionCommand::Dnd { number, state } => {
            let on = matches!(state, OnOff::On);
            ext_admin::change_routing(&store, &number, |r| r.dnd = on)
                .await
                .map_err(usage)?;
            println!(
                "extension {number}: do-not-disturb {}",
                if on { "on" } else { "off" }
            );
        }
        ExtensionCommand::Forward {
            number,
            always,
            busy,
            noanswer,
            clear,
        } => {
            let r = ext_admin::change_routing(&store, &number, |r| {
                if clear {
                    r.forward_always = None;
                    r.forward_busy = None;
                    r.forward_noanswer = None;
                }
                if always.is_some() {
                    r.forward_always = always;
                }
                if busy.is_some() {
                    r.forward_busy = busy;
                }
                if noanswer.is_some() {
                    r.forward_noanswer = noanswer;
                }
            })
            .await
            .map_err(usage)?;
            println!("extension {number}: {}", routing_summary(&r));
        }
        ExtensionCommand::Remove { number } => {
            ext_admin::remove(&store, &number).await.map_err(usage)?;
            println!("extension {number} removed");
        }
        ExtensionCommand::Passwd { number, password } => {
            let (password, generated) = match password {
                Some(p) => (p, false),
                None => (generate_password(), true),
            };
            ext_admin::set_password(&store, &cfg.sip.realm, &number, &password)
                .await
                .map_err(usage)?;
            if generated {
                println!("extension {number}: new SIP password (shown once): {password}");
            } else {
                println!("extension {number}: password changed");
            }
        }
        ExtensionCommand::Import { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let mut added = 0;
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let mut cols = line.splitn(3, ',');
                let (Some(number), Some(password)) = (cols.next(), cols.next()) else {
                    bail!(UsageError(format!(
                        "{}:{}: expected number,password[,name]",
                        file.display(),
                        i + 1
                    )));
                };
                let name = cols.next().unwrap_or("").trim();
                let (number, password) = (number.trim(), password.trim());
                ext_admin::check_number(number)
                    .and_then(|_| ext_admin::check_password(password))
                    .map_err(|e| UsageError(format!("{}:{}: {e}", file.display(), i + 1)))?;
                ext_admin::add(&store, &cfg.sip.realm, number, name, password)
                    .await
                    .map_err(usage)
                    .with_context(|| format!("{}:{}", file.display(), i + 1))?;
                added += 1;
            }
            println!("{added} extensions imported");
        }
    }
    store.close().await;
    Ok(())
}

async fn admin(cmd: AdminCommand, cfg: &Config) -> anyhow::Result<()> {
    let store = open_store(cfg).await?;
    match cmd {
        AdminCommand::Add {
            name,
            password,
            role,
            extension,
        } => {
            let Some(role) = Role::parse(&role) else {
                bail!(UsageError(format!("role {role:?}: use admin or user")));
            };
            let (password, generated) = match password {
                Some(p) => (p, false),
                None => (generate_password(), true),
            };
            accounts::add(&store, &name, role, &password, extension.as_deref())
                .await
                .map_err(usage)?;
            if generated {
                println!("admin {name} added; its password (shown once): {password}");
            } else {
                println!("admin {name} added");
            }
        }
        AdminCommand::List => {
            let tokens = store.list_api_tokens(None).await?;
            for a in store.list_admins().await? {
                let names: Vec<&str> = tokens
                    .iter()
                    .filter(|t| t.admin == a.name)
                    .map(|t| t.name.as_str())
                    .collect();
                let names = if names.is_empty() {
                    "-".to_owned()
                } else {
                    names.join(",")
                };
                let extension = a.extension.as_deref().unwrap_or("-");
                println!(
                    "{}\t{}\textension={extension}\ttokens={names}",
                    a.name, a.role
                );
            }
        }
        AdminCommand::Link {
            name,
            extension,
            none,
        } => {
            if none == extension.is_some() {
                bail!(UsageError("give an extension number or --none".into()));
            }
            accounts::link_extension(&store, &name, extension.as_deref())
                .await
                .map_err(usage)?;
            match extension {
                Some(n) => println!("admin {name} owns extension {n}"),
                None => println!("admin {name} owns no extension"),
            }
        }
        AdminCommand::Remove { name } => {
            accounts::remove(&store, &name).await.map_err(usage)?;
            println!("admin {name} removed");
        }
        AdminCommand::Token {
            name,
            token_name,
            revoke,
        } => {
            if revoke {
                accounts::revoke_token(&store, &name, &token_name)
                    .await
                    .map_err(usage)?;
                println!("token {token_name} of {name} revoked");
            } else {
                let token = accounts::create_token(&store, &name, &token_name)
                    .await
                    .map_err(usage)?;
                println!("token {token_name} for {name} (shown once): {token}");
            }
        }
    }
    store.close().await;
    Ok(())
}
