//! The TOML config model: load `ringfort.toml`, apply `RINGFORT_*` environment overrides,
//! validate, and report problems as `FILE:LINE: reason`.
//!
//! Owns: the typed [`Config`] (every field already validated, relative paths already
//! resolved against the config file's folder), its defaults, and the sample `ringfort.toml`
//! at the repository root, which must list every key (a test checks it).
//! Must not: read the network, open the database, or start anything. It reads one file and
//! the process environment, nothing else.
//!
//! Pipeline (`Config::from_str_with`): TOML syntax -> unknown sections/keys (all reported) ->
//! typed deserialization from the text (types, ranges, addresses, with the span of the
//! offending value) -> environment overrides (each checked on its own) -> path resolution ->
//! cross-field rules, reported at the line of the key that was set (or the variable).
//!
//! Adding a key: add the field to its section struct with a default and, if needed, a
//! validator from `values.rs`; document it in `ringfort.toml`. The env variable and the
//! unknown-key lists follow from the defaults automatically.

mod error;
mod source;
mod values;

#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use error::ConfigError;
pub use source::{env_var_name, ENV_ALLOWLIST, ENV_PREFIX};
pub use values::{CodecName, DigestAlgorithm, Host, InvalidNodeId, LogFormat, NodeId, RecordMode};

pub(crate) use source::line_of;
use source::{Doc, Node, Schema};

/// The whole configuration. `Config::default()` is what an empty `ringfort.toml` in the
/// current directory gives.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub node: NodeConfig,
    pub sip: SipConfig,
    pub registrar: RegistrarConfig,
    pub database: DatabaseConfig,
    pub paths: PathsConfig,
    pub log: LogConfig,
    pub http: HttpConfig,
    pub media: MediaConfig,
    pub calls: CallsConfig,
    pub voicemail: VoicemailConfig,
    pub cluster: ClusterConfig,
}

/// `[node]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Identifies this node in bindings and in the cluster.
    pub id: NodeId,
    /// SQLite file, voicemail, recordings ([`Config::recordings_dir`]). Resolved against
    /// the config file's folder.
    #[serde(deserialize_with = "values::nonempty_path")]
    pub data_dir: PathBuf,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: NodeId::default(),
            data_dir: PathBuf::from("data"),
        }
    }
}

/// `[sip]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// Digest realm. Changing it invalidates stored password hashes (HA1).
    #[serde(deserialize_with = "values::realm")]
    pub realm: String,
    /// UDP sockets to listen on; empty = no UDP.
    #[serde(deserialize_with = "values::socket_addr_list")]
    pub udp_listen: Vec<SocketAddr>,
    /// TCP sockets to listen on; empty = no TCP.
    #[serde(deserialize_with = "values::socket_addr_list")]
    pub tcp_listen: Vec<SocketAddr>,
    /// Address advertised in Via/Contact when behind NAT; `None` = the listening address.
    #[serde(
        deserialize_with = "values::optional_host",
        serialize_with = "values::serialize_optional_host"
    )]
    pub public_address: Option<Host>,
    /// Value of the Server / User-Agent header.
    #[serde(deserialize_with = "values::header_text")]
    pub user_agent: String,
    /// Largest SIP message accepted, in bytes (1024..=1048576).
    #[serde(deserialize_with = "values::ranged::<_, u32, 1024, 1_048_576>")]
    pub max_message_bytes: u32,
    /// Seconds before an idle TCP connection is closed (1..=86400).
    #[serde(deserialize_with = "values::ranged::<_, u64, 1, 86_400>")]
    pub tcp_idle_timeout_secs: u64,
    /// Maximum simultaneous TCP connections (1..=1000000).
    #[serde(deserialize_with = "values::ranged::<_, u32, 1, 1_000_000>")]
    pub tcp_max_connections: u32,
    /// RFC 3261 T1, round-trip estimate, ms (100..=10000).
    #[serde(deserialize_with = "values::ranged::<_, u64, 100, 10_000>")]
    pub t1_ms: u64,
    /// RFC 3261 T2, max retransmit interval, ms (100..=60000, >= t1_ms).
    #[serde(deserialize_with = "values::ranged::<_, u64, 100, 60_000>")]
    pub t2_ms: u64,
    /// RFC 3261 T4, max time a message stays in the network, ms (100..=60000).
    #[serde(deserialize_with = "values::ranged::<_, u64, 100, 60_000>")]
    pub t4_ms: u64,
    /// Signalling shards, each a task with its own transaction layer (0..=256);
    /// 0 = one per core.
    #[serde(deserialize_with = "values::ranged::<_, u32, 0, 256>")]
    pub workers: u32,
}

impl SipConfig {
    /// How many signalling shards to run: `workers`, or one per core the process may
    /// use.
    pub fn shards(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n as usize,
        }
    }
}

impl Default for SipConfig {
    fn default() -> Self {
        let any = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 5060));
        SipConfig {
            realm: "ringfort".to_owned(),
            udp_listen: vec![any],
            tcp_listen: vec![any],
            public_address: None,
            user_agent: "Ringfort".to_owned(),
            max_message_bytes: 65_535,
            tcp_idle_timeout_secs: 600,
            tcp_max_connections: 10_000,
            t1_ms: 500,
            t2_ms: 4_000,
            t4_ms: 5_000,
            workers: 0,
        }
    }
}

/// `[registrar]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrarConfig {
    /// Shortest registration accepted, seconds (1..=86400); shorter gets 423.
    #[serde(deserialize_with = "values::ranged::<_, u32, 1, 86_400>")]
    pub min_expires: u32,
    /// Longest registration granted, seconds (1..=86400); longer is cut down.
    #[serde(deserialize_with = "values::ranged::<_, u32, 1, 86_400>")]
    pub max_expires: u32,
    /// Granted when the phone asks for none, seconds (min_expires..=max_expires).
    #[serde(deserialize_with = "values::ranged::<_, u32, 1, 86_400>")]
    pub default_expires: u32,
    /// Contacts kept per address of record (1..=100).
    #[serde(deserialize_with = "values::ranged::<_, u32, 1, 100>")]
    pub max_contacts_per_aor: u32,
    /// How long a digest nonce is accepted, seconds (10..=3600).
    #[serde(deserialize_with = "values::ranged::<_, u64, 10, 3600>")]
    pub nonce_lifetime_secs: u64,
    /// Digest algorithms offered, in challenge order (non-empty, no repeats).
    #[serde(deserialize_with = "values::digest_algorithms")]
    pub algorithms: Vec<DigestAlgorithm>,
    /// How often expired bindings are removed, seconds (1..=3600).
    #[serde(deserialize_with = "values::ranged::<_, u64, 1, 3600>")]
    pub sweep_interval_secs: u64,
    /// Keepalives towards phones registered over UDP from behind NAT, seconds (0 = off).
    #[serde(deserialize_with = "values::ranged::<_, u64, 0, 3600>")]
    pub nat_keepalive_secs: u64,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            min_expires: 60,
            max_expires: 7200,
            default_expires: 3600,
            max_contacts_per_aor: 10,
            nonce_lifetime_secs: 300,
            algorithms: vec![DigestAlgorithm::Md5],
            sweep_interval_secs: 30,
            nat_keepalive_secs: 20,
        }
    }
}

/// `[database]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// As written, except a relative `sqlite://` path is resolved against the config
    /// folder. Empty = SQLite in `node.data_dir`. Use [`Config::database_url`] to connect.
    /// May contain a password: do not log it.
    #[serde(deserialize_with = "values::database_url")]
    pub url: String,
    /// Connection pool size (1..=1000).
    #[serde(deserialize_with = "values::ranged::<_, u32, 1, 1000>")]
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: String::new(),
            max_connections: 8,
        }
    }
}

/// `[paths]` (both resolved against the config file's folder)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PathsConfig {
    #[serde(deserialize_with = "values::nonempty_path")]
    pub dialplans: PathBuf,
    #[serde(deserialize_with = "values::nonempty_path")]
    pub sounds: PathBuf,
}

impl Default for PathsConfig {
    fn default() -> Self {
        PathsConfig {
            dialplans: PathBuf::from("dialplans"),
            sounds: PathBuf::from("sounds"),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing_subscriber::EnvFilter` directive (non-empty; parsed by the binary).
    #[serde(deserialize_with = "values::log_level")]
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// `[voicemail]`
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VoicemailConfig {
    /// Also send message-waiting NOTIFYs to registered phones that do not subscribe
    /// (phones configured for unsolicited MWI): when the counts change and when one
    /// registers.
    pub unsolicited_mwi: bool,
}

/// `[http]`: the admin API (and later the web panel)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(deserialize_with = "values::socket_addr")]
    pub listen: SocketAddr,
    /// PEM certificate chain (leaf first) for HTTPS; empty = plain HTTP. Resolved against
    /// the config file's folder.
    pub tls_cert: PathBuf,
    /// PEM private key of `tls_cert`; set both or neither.
    pub tls_key: PathBuf,
}

impl HttpConfig {
    /// Whether the admin port serves HTTPS.
    pub fn tls(&self) -> bool {
        !self.tls_cert.as_os_str().is_empty()
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
        }
    }
}

/// `[media]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// First RTP port (1024..=65535, even).
    #[serde(deserialize_with = "values::rtp_port_min")]
    pub rtp_port_min: u16,
    /// Last RTP port (1024..=65535, > rtp_port_min).
    #[serde(deserialize_with = "values::ranged::<_, u16, 1024, 65535>")]
    pub rtp_port_max: u16,
    /// Hang up a call after this many seconds without RTP; 0 = never (0..=86400).
    #[serde(deserialize_with = "values::ranged::<_, u64, 0, 86_400>")]
    pub media_timeout_secs: u64,
    /// The IP address put in SDP for the relay (and bound by it); None: the SIP listen
    /// address when it is a specific one, else the local address used towards the phone.
    #[serde(
        deserialize_with = "values::optional_ip",
        serialize_with = "values::serialize_optional_ip"
    )]
    pub address: Option<std::net::IpAddr>,
    /// Opus encoder complexity for transcoded legs, 0 (cheapest) to 10 (0..=10).
    #[serde(deserialize_with = "values::ranged::<_, u8, 0, 10>")]
    pub opus_complexity: u8,
    /// Opus target bitrate for transcoded legs, bit/s (0: libopus' choice); a phone's
    /// lower `maxaveragebitrate` wins.
    #[serde(deserialize_with = "values::opus_bitrate")]
    pub opus_bitrate: u32,
    /// The codecs the engine may transcode to and answer with, in order of preference
    /// (non-empty, no repeats); codecs the phones share are relayed regardless.
    #[serde(deserialize_with = "values::codec_names")]
    pub codecs: Vec<CodecName>,
}

/// `[calls]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallsConfig {
    /// Give up ringing a callee after this many seconds: 480 to the caller (1..=3600).
    #[serde(deserialize_with = "values::ranged::<_, u64, 1, 3600>")]
    pub no_answer_timeout_secs: u64,
    /// Record answered calls to `<node.data_dir>/recordings/<call id>.wav`: off, mixed
    /// (one channel) or stereo (caller left, callee right).
    pub record: RecordMode,
}

impl Default for CallsConfig {
    fn default() -> Self {
        CallsConfig {
            no_answer_timeout_secs: 30,
            record: RecordMode::Off,
        }
    }
}

/// `[cluster]`: several nodes on one PostgreSQL database, and the floating IPs they share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Join the cluster: heartbeats and the floating-IP agent (needs PostgreSQL).
    pub enabled: bool,
    /// `IP:port` where the other nodes reach this one for SIP; None: not announced.
    #[serde(
        deserialize_with = "values::optional_socket_addr",
        serialize_with = "values::serialize_optional_socket_addr"
    )]
    pub sip_address: Option<SocketAddr>,
    /// This node's own media address, announced to the others; None: not announced.
    #[serde(
        deserialize_with = "values::optional_ip",
        serialize_with = "values::serialize_optional_ip"
    )]
    pub media_address: Option<std::net::IpAddr>,
    /// How often the node writes its heartbeat, ms (100..=60000).
    #[serde(deserialize_with = "values::ranged::<_, u64, 100, 60_000>")]
    pub heartbeat_ms: u64,
    /// How long a floating-IP lease lasts by the database's clock, ms (1500..=60000).
    #[serde(deserialize_with = "values::ranged::<_, u64, 1500, 60_000>")]
    pub lease_ms: u64,
    /// How often the holder renews its lease, ms (100..=30000; see the rule with lease_ms).
    #[serde(deserialize_with = "values::ranged::<_, u64, 100, 30_000>")]
    pub renew_ms: u64,
    /// How much a node's clock may run slow against the database's over one lease, ms
    /// (0..=10000).
    #[serde(deserialize_with = "values::ranged::<_, u64, 0, 10_000>")]
    pub max_clock_skew_ms: u64,
    /// The floating IPs this node may hold (`[[cluster.vip]]`), distinct addresses.
    #[serde(deserialize_with = "values::vip_list")]
    pub vip: Vec<VipConfig>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            enabled: false,
            sip_address: None,
            media_address: None,
            heartbeat_ms: 1000,
            lease_ms: 1500,
            renew_ms: 400,
            max_clock_skew_ms: 200,
            vip: Vec::new(),
        }
    }
}

/// The time the floating-IP agent allows for removing an address (spawning `ip`), ms;
/// part of the margin a holder keeps before its lease could end.
pub const VIP_DROP_MARGIN_MS: u64 = 100;

/// One `[[cluster.vip]]`: a floating IP, the interface it goes on, this node's priority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipConfig {
    #[serde(deserialize_with = "values::ip")]
    pub address: std::net::IpAddr,
    /// A network interface name (1-15 characters, no '/', ':' or whitespace).
    #[serde(deserialize_with = "values::interface_name")]
    pub interface: String,
    /// 1..=100, higher preferred: a head start when the VIP is free (default 100).
    #[serde(
        default = "default_vip_priority",
        deserialize_with = "values::ranged::<_, u8, 1, 100>"
    )]
    pub priority: u8,
}

fn default_vip_priority() -> u8 {
    100
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            rtp_port_min: 10_000,
            rtp_port_max: 20_000,
            media_timeout_secs: 60,
            address: None,
            opus_complexity: 1,
            opus_bitrate: 16_000,
            codecs: vec![
                CodecName::Opus,
                CodecName::G722,
                CodecName::Pcmu,
                CodecName::Pcma,
            ],
        }
    }
}

/// Where a value came from, to point at it in an error.
enum Origin {
    File(usize),
    Env(String),
}

impl Config {
    /// Reads `path`, applies the process's `RINGFORT_*` variables, validates. Relative
    /// paths resolve against the folder of `path` (made absolute).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let base = std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf());
        let env = process_env()?;
        Config::from_str_with(&text, &path.display().to_string(), &base, env)
    }

    /// Parses `text`. `file` names it in messages; relative paths resolve against
    /// `base_dir` (an empty `base_dir` leaves them relative); `env` supplies the variables
    /// (only `RINGFORT_*` ones are looked at).
    pub fn from_str_with<I>(
        text: &str,
        file: &str,
        base_dir: &Path,
        env: I,
    ) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let at = |offset: usize, reason: String| ConfigError::Invalid {
            file: file.to_owned(),
            line: line_of(text, offset),
            reason,
        };

        // 1. Syntax.
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let offset = e.span().map_or(0, |s| s.start);
            ConfigError::Syntax {
                file: file.to_owned(),
                line: line_of(text, offset),
                reason: format!("TOML syntax error: {}", one_line(e.message())),
            }
        })?;
        let doc: Doc = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            at(offset, one_line(e.message()))
        })?;

        // 2. Unknown sections and keys, all of them.
        let schema = Schema::get();
        let mut errors = Vec::new();
        for (name, node) in &doc.entries {
            let start = node.offset();
            match (schema.section(name), &node.node) {
                (None, _) => errors.push(at(
                    start,
                    format!(
                        "unknown section {:?}, expected one of {}",
                        name,
                        schema.section_names()
                    ),
                )),
                (Some(_), Node::Other) => errors.push(at(
                    start,
                    format!(
                        "{0:?} must be a table (a [{0}] section), not a single value",
                        name
                    ),
                )),
                (Some(section), Node::Table(keys)) => {
                    for (key, value) in keys.iter().filter(|(k, _)| !section.has(k)) {
                        errors.push(at(
                            value.span().start,
                            format!(
                                "unknown key {:?} in [{}], expected one of {}",
                                key,
                                section.name,
                                section.key_names()
                            ),
                        ));
                    }
                }
            }
        }
        ConfigError::check(errors)?;

        // 3. Types and single values, with the span of the offending value.
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            let reason = match doc.key_at(offset) {
                Some((s, k)) => format!("{s}.{k}: {}", one_line(e.message())),
                None => one_line(e.message()),
            };
            at(offset, reason)
        })?;

        // 4. Environment overrides: each checked alone, then merged over the file.
        let (overrides, mut errors) = source::overrides(env);
        for o in &overrides {
            let single = toml::Table::from_iter([(
                o.section.clone(),
                toml::Value::Table(toml::Table::from_iter([(o.key.clone(), o.value.clone())])),
            )]);
            if let Err(e) = toml::Value::Table(single).try_into::<Config>() {
                errors.push(ConfigError::Env {
                    var: o.var.clone(),
                    reason: format!("{}.{}: {}", o.section, o.key, one_line(e.message())),
                });
            }
        }
        ConfigError::check(errors)?;
        if !overrides.is_empty() {
            for o in &overrides {
                let section = table
                    .entry(o.section.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if let toml::Value::Table(section) = section {
                    section.insert(o.key.clone(), o.value.clone());
                }
            }
            config = toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Env {
                    var: ENV_PREFIX.to_owned() + "*",
                    reason: one_line(e.message()),
                })?;
        }

        // 5. Relative paths.
        config.resolve_paths(base_dir);

        // 6. Rules across keys, reported where the admin set a value.
        let origin = |section: &str, key: &str| -> Option<Origin> {
            overrides
                .iter()
                .find(|o| o.section == section && o.key == key)
                .map(|o| Origin::Env(o.var.clone()))
                .or_else(|| {
                    doc.key_offset(section, key)
                        .map(|off| Origin::File(line_of(text, off)))
                })
        };
        let errors = config
            .cross_checks()
            .into_iter()
            .filter_map(|v| {
                // Point at the first key of the rule that was actually set. Defaults satisfy
                // every rule, so one was; line 1 is only a fallback.
                let fallback = v.blame.first().map(|(_, r)| r.clone())?;
                let (origin, reason) = v
                    .blame
                    .into_iter()
                    .find_map(|((s, k), reason)| origin(s, k).map(|o| (o, reason)))
                    .unwrap_or((Origin::File(1), fallback));
                Some(match origin {
                    Origin::File(line) => ConfigError::Invalid {
                        file: file.to_owned(),
                        line,
                        reason,
                    },
                    Origin::Env(var) => ConfigError::Env { var, reason },
                })
            })
            .collect();
        ConfigError::check(errors)?;
        Ok(config)
    }

    /// The URL to hand to sqlx: `database.url`, or when empty
    /// `sqlite://<absolute data_dir>/ringfort.db?mode=rwc`.
    pub fn database_url(&self) -> String {
        if !self.database.url.is_empty() {
            return self.database.url.clone();
        }
        let file = self.node.data_dir.join("ringfort.db");
        let file = std::path::absolute(&file).unwrap_or(file);
        format!("sqlite://{}?mode=rwc", file.display())
    }

    /// Where call recordings go: `recordings` in `node.data_dir`.
    pub fn recordings_dir(&self) -> PathBuf {
        self.node.data_dir.join("recordings")
    }

    fn resolve_paths(&mut self, base: &Path) {
        self.node.data_dir = resolve(base, &self.node.data_dir);
        self.paths.dialplans = resolve(base, &self.paths.dialplans);
        self.paths.sounds = resolve(base, &self.paths.sounds);
        for p in [&mut self.http.tls_cert, &mut self.http.tls_key] {
            if !p.as_os_str().is_empty() {
                *p = resolve(base, p);
            }
        }
        if let Some(rest) = self.database.url.strip_prefix("sqlite://") {
            let (path, query) = match rest.find('?') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let path = resolve(base, Path::new(path));
            self.database.url = format!("sqlite://{}{query}", path.display());
        }
    }

    /// The rules that relate several keys; each lists the keys to blame, in order.
    fn cross_checks(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        let r = &self.registrar;
        order(
            &mut out,
            ("registrar", "min_expires", r.min_expires.into()),
            ("registrar", "default_expires", r.default_expires.into()),
            false,
        );
        order(
            &mut out,
            ("registrar", "default_expires", r.default_expires.into()),
            ("registrar", "max_expires", r.max_expires.into()),
            false,
        );
        order(
            &mut out,
            ("sip", "t1_ms", self.sip.t1_ms),
            ("sip", "t2_ms", self.sip.t2_ms),
            false,
        );
        order(
            &mut out,
            ("media", "rtp_port_min", self.media.rtp_port_min.into()),
            ("media", "rtp_port_max", self.media.rtp_port_max.into()),
            true,
        );
        let c = &self.cluster;
        let needed = 2 * c.renew_ms + c.max_clock_skew_ms + VIP_DROP_MARGIN_MS;
        if needed > c.lease_ms {
            let rule = format!(
                "2 x cluster.renew_ms + cluster.max_clock_skew_ms + {VIP_DROP_MARGIN_MS} ms \
                 (removing the address) = {needed} must be <= cluster.lease_ms = {} (a \
                 holder must be able to miss one renewal and still drop the address before \
                 its lease can end)",
                c.lease_ms
            );
            out.push(Violation {
                blame: vec![
                    (
                        ("cluster", "renew_ms"),
                        format!("cluster.renew_ms = {}: {rule}", c.renew_ms),
                    ),
                    (
                        ("cluster", "max_clock_skew_ms"),
                        format!(
                            "cluster.max_clock_skew_ms = {}: {rule}",
                            c.max_clock_skew_ms
                        ),
                    ),
                    (
                        ("cluster", "lease_ms"),
                        format!("cluster.lease_ms = {}: {rule}", c.lease_ms),
                    ),
                ],
            });
        }
        let on_postgres = ["postgres://", "postgresql://"]
            .iter()
            .any(|p| self.database.url.starts_with(p));
        if c.enabled && !on_postgres {
            let reason = "cluster.enabled = true needs database.url = \"postgres://...\": the \
                          nodes share registrations and leases through PostgreSQL";
            out.push(Violation {
                blame: vec![
                    (("cluster", "enabled"), reason.to_owned()),
                    (("database", "url"), reason.to_owned()),
                ],
            });
        }
        if c.enabled && !c.vip.is_empty() {
            // The floating IPs get their own sockets on the same ports (IP_FREEBIND), so a
            // node answers and sends from the VIP itself; a wildcard socket on the port
            // would take the port and reply from the interface's own address.
            for (key, list) in [
                ("udp_listen", &self.sip.udp_listen),
                ("tcp_listen", &self.sip.tcp_listen),
            ] {
                if let Some(any) = list.iter().find(|a| a.ip().is_unspecified()) {
                    let reason = format!(
                        "sip.{key} has {any}: with [[cluster.vip]] list this node's own \
                         addresses (e.g. \"10.0.0.11:{port}\"); Ringfort adds each floating \
                         IP on port {port} by itself",
                        port = any.port()
                    );
                    out.push(Violation {
                        blame: vec![(("sip", key), reason.clone()), (("cluster", "vip"), reason)],
                    });
                }
            }
        }
        let h = &self.http;
        if h.tls_cert.as_os_str().is_empty() != h.tls_key.as_os_str().is_empty() {
            let reason = "http.tls_cert and http.tls_key go together: set both for HTTPS, or \
                          neither for plain HTTP";
            let set = if h.tls_cert.as_os_str().is_empty() {
                "tls_key"
            } else {
                "tls_cert"
            };
            out.push(Violation {
                blame: vec![(("http", set), reason.to_owned())],
            });
        }
        if self.sip.udp_listen.is_empty() && self.sip.tcp_listen.is_empty() {
            let reason = "sip.udp_listen and sip.tcp_listen are both empty: \
                          Ringfort would accept no SIP traffic";
            out.push(Violation {
                blame: vec![
                    (("sip", "udp_listen"), reason.to_owned()),
                    (("sip", "tcp_listen"), reason.to_owned()),
                ],
            });
        }
        out
    }
}

type Key = (&'static str, &'static str);

/// A broken cross-key rule: the keys to point at, in order of preference, each with the
/// reason to give when it is the one pointed at.
struct Violation {
    blame: Vec<(Key, String)>,
}

/// Requires `lo <= hi` (`lo < hi` when `strict`); blames `hi` first, as it is usually the
/// key written last.
fn order(
    out: &mut Vec<Violation>,
    lo: (&'static str, &'static str, u64),
    hi: (&'static str, &'static str, u64),
    strict: bool,
) {
    let ok = if strict { lo.2 < hi.2 } else { lo.2 <= hi.2 };
    if ok {
        return;
    }
    let (lo_op, hi_op) = if strict { (">", "<") } else { (">=", "<=") };
    out.push(Violation {
        blame: vec![
            (
                (hi.0, hi.1),
                format!(
                    "{}.{} = {} must be {lo_op} {}.{} = {}",
                    hi.0, hi.1, hi.2, lo.0, lo.1, lo.2
                ),
            ),
            (
                (lo.0, lo.1),
                format!(
                    "{}.{} = {} must be {hi_op} {}.{} = {}",
                    lo.0, lo.1, lo.2, hi.0, hi.1, hi.2
                ),
            ),
        ],
    });
}

/// `base/p` without `.` components; absolute `p` stays as is.
fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    let mut out = base.to_path_buf();
    for c in p.components() {
        if c != Component::CurDir {
            out.push(c);
        }
    }
    out
}

/// toml messages may span lines; an error must be one line.
pub(crate) fn one_line(msg: &str) -> String {
    msg.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The process's `RINGFORT_*` variables (others are passed too, and ignored).
fn process_env() -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for (k, v) in std::env::vars_os() {
        let Some(k) = k.to_str() else { continue };
        if !k.starts_with(ENV_PREFIX) {
            continue;
        }
        match v.into_string() {
            Ok(v) => out.push((k.to_owned(), v)),
            Err(_) => {
                return Err(ConfigError::Env {
                    var: k.to_owned(),
                    reason: "value is not valid UTF-8".to_owned(),
                })
            }
        }
    }
    Ok(out)
}
