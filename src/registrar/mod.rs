//! REGISTER handling (RFC 3261 10.3 with digest auth per RFC 8760), bindings, expiry and
//! location lookups. Owns the location service and the in-memory views of extensions and
//! bindings; must not touch media or sockets.
//!
//! A REGISTER is decided without I/O from memory ([`Registrar::process`]): the extension's
//! digest hashes and the AOR's bindings are cached. What needs the store comes back as an
//! [`Outcome`]: load an extension that is not in memory yet, or persist a new binding set.
//! Persisting is batched by the caller's writer task ([`Registrar::persist`]): one
//! transaction, one disk sync, for every REGISTER that arrived meanwhile (group commit);
//! the 200 goes out only once its bindings are durable, except during a database outage:
//! then it goes out from memory and the write waits in [`outage`], replayed in order when
//! the database answers again.

pub mod bindings;
pub mod outage;

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use rand::Rng;
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::dialplan::ExtensionState;
use crate::sip::digest::{constant_time_eq, Algorithm, Credentials, NonceCheck, NonceManager};
use crate::sip::message::{reason_phrase, HeaderName, Request, Response};
use crate::sip::Peer;
use crate::store::{Binding, Extension, ExtensionsFingerprint, Store, StoreError};

pub use bindings::Policy;
use bindings::{Change, Reject};

#[derive(Debug, Error)]
pub enum RegistrarError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// Registrar settings (from `[sip]` and `[registrar]`).
#[derive(Debug, Clone)]
pub struct RegistrarConfig {
    pub realm: String,
    pub algorithms: Vec<Algorithm>,
    pub nonce_lifetime: Duration,
    pub policy: Policy,
    pub server_header: String,
}

impl RegistrarConfig {
    /// The registrar's settings from the node's configuration (the registrar reads the
    /// config model, a leaf; the node that runs it passes the result in).
    pub fn from_config(cfg: &crate::config::Config) -> RegistrarConfig {
        RegistrarConfig {
            realm: cfg.sip.realm.clone(),
            algorithms: cfg
                .registrar
                .algorithms
                .iter()
                .filter_map(|a| Algorithm::parse(&a.to_string()))
                .collect(),
            nonce_lifetime: Duration::from_secs(cfg.registrar.nonce_lifetime_secs),
            policy: Policy {
                min_expires: cfg.registrar.min_expires,
                max_expires: cfg.registrar.max_expires,
                default_expires: cfg.registrar.default_expires,
                max_contacts: cfg.registrar.max_contacts_per_aor as usize,
                node_id: cfg.node.id.to_string(),
            },
            server_header: cfg.sip.user_agent.clone(),
        }
    }
}

/// The cluster's registrations that count at `now_unix` ([`Binding::is_live`]), read from
/// the store rather than this node's cache, so a listing (the admin API, the CLI) shows
/// every node's phones. By extension, then binding key.
pub async fn live_registrations(store: &Store, now_unix: i64) -> Result<Vec<Binding>, StoreError> {
    let mut all = store.all_bindings().await?;
    all.retain(|b| b.is_live(now_unix));
    Ok(all)
}

/// Option tags this registrar understands in Require (RFC 3261 8.2.2.3).
pub const SUPPORTED: &[&str] = &["path"];

/// A cached extension older than this is re-read from the store before a REGISTER is
/// refused with it, so a password changed from the CLI works at once.
const RECHECK_AFTER_SECS: i64 = 2;
/// The extensions table is read whole at least every this many sweeps, changed or not.
const FULL_RELOAD_EVERY: u32 = 10;
/// Remembered unknown users, so a scanner cannot make every attempt a database read.
const MAX_NEGATIVE_ENTRIES: usize = 10_000;

pub use crate::now_unix;

/// What to do with a REGISTER.
#[derive(Debug)]
pub enum Outcome {
    /// Send this response now.
    Respond(Response),
    /// Make the AOR's binding set durable, then send `response` (already reflected in the
    /// in-memory location service).
    Persist(PendingWrite),
}

/// A binding set waiting to be written.
#[derive(Debug)]
pub struct PendingWrite {
    pub aor: String,
    pub bindings: Vec<Binding>,
    pub response: Response,
    changes: Vec<Change>,
    transport: String,
    received: String,
}

impl PendingWrite {
    /// A new contact registers (not a refresh or a removal).
    pub fn adds_binding(&self) -> bool {
        self.changes
            .iter()
            .any(|c| matches!(c, Change::Added { .. }))
    }
}

struct CachedExtension {
    ext: Option<Extension>,
    loaded_at: i64,
}

pub struct Registrar {
    store: Store,
    cfg: RegistrarConfig,
    /// The location service in memory, written through to the store: the store is the
    /// truth a restarted node reloads, the cache is what REGISTER and call routing read.
    /// (Cluster mode will refresh it by LISTEN/NOTIFY.)
    location: RwLock<HashMap<String, Vec<Binding>>>,
    /// Extensions by number; `ext: None` remembers that a number does not exist.
    extensions: RwLock<HashMap<String, CachedExtension>>,
    nonces: Mutex<NonceManager>,
    /// Stands in for the HA1 of users that do not exist, so their failures cost the same
    /// work as real ones.
    decoy_ha1: String,
    /// Binding writes held while the database is unreachable (see [`Registrar::persist`]).
    outage: Mutex<outage::OutageQueue>,
    /// The extensions table's fingerprint at the last re-read, and how many re-reads it
    /// has saved since (see [`Registrar::reload`]).
    extensions_seen: Mutex<(Option<ExtensionsFingerprint>, u32)>,
}

/// What digest authentication of a request decided (REGISTER and INVITE share it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Valid credentials of this extension.
    Ok(String),
    /// Challenge again (no, stale or unusable credentials).
    Challenge { stale: bool },
    /// Wrong credentials.
    Forbidden,
    /// Malformed credentials (400).
    Bad(&'static str),
    /// Load this extension from the store, then try again.
    Load(String),
}

impl Registrar {
    /// A registrar whose caches start from the store.
    pub async fn load(store: Store, cfg: RegistrarConfig) -> Result<Self, RegistrarError> {
        let nonces = NonceManager::with_random_secret(cfg.nonce_lifetime);
        let decoy_ha1 = Algorithm::Sha256.hash_hex(&format!("{}", rand::thread_rng().gen::<u64>()));
        let registrar = Registrar {
            store,
            cfg,
            location: RwLock::new(HashMap::new()),
            extensions: RwLock::new(HashMap::new()),
            nonces: Mutex::new(nonces),
            decoy_ha1,
            outage: Mutex::new(outage::OutageQueue::new(outage::MAX_HELD_AORS)),
            extensions_seen: Mutex::new((None, 0)),
        };
        registrar.load_bindings().await?;
        registrar.reload().await?;
        Ok(registrar)
    }

    /// Makes this node's digest nonces those of its cluster: derived from the cluster's
    /// shared secret, so credentials computed for one node's challenge are good at any
    /// node (after a failover a phone's REGISTER or INVITE with the dead node's nonce is
    /// not challenged again). Replays are still caught per node (nonce counts live in
    /// memory).
    pub fn share_nonce_secret(&self, cluster_secret: &[u8]) {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"ringfort-digest-nonce\n");
        h.update(cluster_secret);
        if let Ok(mut n) = self.nonces.lock() {
            n.set_secret(h.finalize().into());
        }
    }

    /// Re-reads the extensions from the store when they changed, and forgets the bindings
    /// of extensions that are gone: other processes (the CLI) add, remove and re-key
    /// extensions directly in the store. Bindings are only ever written by this node, so
    /// its memory of them stays. Whether anything changed is one aggregate read (the
    /// table's fingerprint); the table itself is read only then, or every
    /// [`FULL_RELOAD_EVERY`]th time (two changes to one extension within one second leave
    /// the fingerprint as it was), page by page ([`Store::each_extension_page`]) into a new
    /// map.
    async fn reload(&self) -> Result<(), RegistrarError> {
        let fingerprint = self.store.extensions_fingerprint().await?;
        if let Ok(mut seen) = self.extensions_seen.lock() {
            let (last, skipped) = &mut *seen;
            if *last == Some(fingerprint) && *skipped + 1 < FULL_RELOAD_EVERY {
                *skipped += 1;
                return Ok(());
            }
            *skipped = 0;
        }
        let now = now_unix();
        let mut fresh: HashMap<String, CachedExtension> = HashMap::new();
        self.store
            .each_extension_page(|page| {
                for e in page {
                    let number = e.number.clone();
                    let cached = CachedExtension {
                        ext: Some(e),
                        loaded_at: now,
                    };
                    fresh.insert(number, cached);
                }
            })
            .await?;
        if let Ok(mut l) = self.location.write() {
            l.retain(|aor, _| fresh.contains_key(aor));
        }
        if let Ok(mut cache) = self.extensions.write() {
            *cache = fresh;
        }
        if let Ok(mut seen) = self.extensions_seen.lock() {
            seen.0 = Some(fingerprint);
        }
        Ok(())
    }

    async fn load_bindings(&self) -> Result<(), RegistrarError> {
        let now = now_unix();
        let mut fresh: HashMap<String, Vec<Binding>> = HashMap::new();
        for b in self.store.all_bindings().await? {
            if b.is_live(now) {
                fresh.entry(b.aor.clone()).or_default().push(b);
            }
        }
        if let Ok(mut l) = self.location.write() {
            *l = fresh;
        }
        Ok(())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn cached(&self, aor: &str) -> Vec<Binding> {
        self.location
            .read()
            .map(|l| l.get(aor).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    fn cache_set(&self, aor: &str, bindings: Vec<Binding>) {
        if let Ok(mut l) = self.location.write() {
            if bindings.is_empty() {
                l.remove(aor);
            } else {
                l.insert(aor.to_owned(), bindings);
            }
        }
    }

    fn response(&self, req: &Request, status: u16) -> Response {
        let mut r = Response::for_request(req, status, reason_phrase(status));
        r.ensure_to_tag(&to_tag());
        r.headers
            .push(HeaderName::Server, self.cfg.server_header.clone());
        r
    }

    /// The answer when a binding set could not be made durable: try again later.
    pub fn unavailable(&self, req_response: &Response) -> Response {
        let mut r = req_response.clone();
        r.status = 500;
        r.reason = reason_phrase(500).to_owned();
        r.headers.remove(&HeaderName::Contact);
        r.headers.remove(&HeaderName::Path);
        r.headers.push(HeaderName::Other("Retry-After".into()), "5");
        r
    }

    /// A digest challenge: 401 + WWW-Authenticate (REGISTER) or 407 +
    /// Proxy-Authenticate (INVITE and other requests a proxy or B2BUA authenticates).
    pub fn challenge_with(
        &self,
        req: &Request,
        stale: bool,
        status: u16,
        header: HeaderName,
    ) -> Response {
        let mut r = self.response(req, status);
        let values = match self.nonces.lock() {
            Ok(n) => n.challenge(
                &self.cfg.realm,
                &self.cfg.algorithms,
                stale,
                now_unix() as u64,
                &mut rand::thread_rng(),
            ),
            Err(_) => Vec::new(),
        };
        for v in values {
            r.headers.push(header.clone(), v);
        }
        r
    }

    /// Decides an admitted REGISTER for `aor` (its credentials already checked, see
    /// `node::admission`) from memory at `now`. A `Persist` outcome is already applied
    /// to the in-memory location service, so the next REGISTER for the AOR builds on it.
    pub fn bind(&self, req: &Request, peer: &Peer, aor: String, now: i64) -> Outcome {
        let existing = self.cached(&aor);
        let plan = match bindings::plan(req, peer, &aor, existing, &self.cfg.policy, now) {
            Ok(p) => p,
            Err(Reject::BadRequest(why)) => {
                debug!(why, "bad REGISTER");
                let mut r = Response::for_request(req, 400, &format!("Bad Request ({why})"));
                r.ensure_to_tag(&to_tag());
                return Outcome::Respond(r);
            }
            Err(Reject::IntervalTooBrief { min_expires }) => {
                let mut r = self.response(req, 423);
                r.headers
                    .push(HeaderName::MinExpires, min_expires.to_string());
                return Outcome::Respond(r);
            }
            Err(Reject::OutOfOrder) => return Outcome::Respond(self.response(req, 500)),
        };
        let mut response = bindings::ok_response(req, &plan.bindings, now, &to_tag());
        response
            .headers
            .push(HeaderName::Server, self.cfg.server_header.clone());
        if !plan.write {
            return Outcome::Respond(response);
        }
        self.cache_set(&aor, plan.bindings.clone());
        Outcome::Persist(PendingWrite {
            aor,
            bindings: plan.bindings,
            response,
            changes: plan.changes,
            transport: peer.transport.to_string(),
            received: peer.remote.to_string(),
        })
    }

    /// Digest authentication with the same answers for unknown and known users, so the
    /// responses tell an attacker nothing about which extensions exist. `header`:
    /// Authorization (REGISTER) or Proxy-Authorization (INVITE).
    pub fn authenticate(&self, req: &Request, header: &HeaderName, now: i64) -> AuthOutcome {
        let creds = req
            .headers
            .get_all(header)
            .filter_map(Credentials::parse)
            .find(|c| c.realm == self.cfg.realm);
        let Some(creds) = creds else {
            return AuthOutcome::Challenge { stale: false };
        };
        let Some(alg) = creds
            .algorithm()
            .filter(|a| self.cfg.algorithms.contains(a))
        else {
            return AuthOutcome::Challenge { stale: false };
        };
        if creds.qop.is_some() && (creds.nc.is_none() || creds.cnonce.is_none()) {
            return AuthOutcome::Bad("qop without nc/cnonce");
        }
        // The extension first (it may need loading, and the request will come back), the
        // nonce count last (checking it consumes it).
        let (ext, loaded_at) = match self.extensions.read() {
            Ok(cache) => match cache.get(&creds.username) {
                Some(c) => (c.ext.clone(), c.loaded_at),
                None => return AuthOutcome::Load(creds.username),
            },
            Err(_) => (None, 0),
        };
        let ha1 = match &ext {
            Some(e) if e.realm == self.cfg.realm => match alg {
                Algorithm::Md5 => e.ha1_md5.clone(),
                Algorithm::Sha256 => e.ha1_sha256.clone(),
            },
            Some(e) => {
                warn!(
                    extension = %e.number,
                    "stored password hash is for realm {:?}, not {:?}: set the password again",
                    e.realm, self.cfg.realm
                );
                self.decoy_ha1.clone()
            }
            None => self.decoy_ha1.clone(),
        };
        let Some(expected) = creds.expected_response(alg, &ha1, req.method.as_str()) else {
            return AuthOutcome::Bad("unsupported qop");
        };
        let matches =
            ext.is_some() && constant_time_eq(&expected, &creds.response.to_ascii_lowercase());
        if !matches && now - loaded_at >= RECHECK_AFTER_SECS {
            return AuthOutcome::Load(creds.username);
        }
        let check = match self.nonces.lock() {
            Ok(mut n) => n.check(&creds.nonce, creds.nc.as_deref(), now as u64),
            Err(_) => NonceCheck::Invalid,
        };
        match check {
            NonceCheck::Valid if matches => AuthOutcome::Ok(creds.username),
            NonceCheck::Valid => AuthOutcome::Forbidden,
            NonceCheck::Stale => AuthOutcome::Challenge { stale: true },
            NonceCheck::Invalid | NonceCheck::Replayed => AuthOutcome::Challenge { stale: false },
        }
    }

    /// Reads one extension from the store into memory (or remembers that it is absent).
    pub async fn fetch_extension(&self, number: &str) -> Result<(), RegistrarError> {
        let ext = self.store.get_extension(number).await?;
        if let Ok(mut cache) = self.extensions.write() {
            if ext.is_none() && cache.len() >= MAX_NEGATIVE_ENTRIES {
                cache.retain(|_, c| c.ext.is_some());
            }
            cache.insert(
                number.to_owned(),
                CachedExtension {
                    ext,
                    loaded_at: now_unix(),
                },
            );
        }
        Ok(())
    }

    /// Makes pending binding sets durable in one transaction and reports, per write,
    /// whether it succeeded. A failed batch is retried set by set so one bad set (an
    /// extension removed meanwhile) does not fail the others; a failed set's AOR is
    /// reloaded from the store, which stays the truth.
    pub async fn persist(&self, writes: &[PendingWrite]) -> Vec<bool> {
        // Later writes for an AOR were planned on top of earlier ones: the last wins.
        let mut last: HashMap<&str, usize> = HashMap::new();
        for (i, w) in writes.iter().enumerate() {
            last.insert(&w.aor, i);
        }
        let mut order: Vec<usize> = last.values().copied().collect();
        order.sort_unstable();
        let sets: Vec<(&str, &[Binding])> = order
            .iter()
            .map(|&i| (writes[i].aor.as_str(), writes[i].bindings.as_slice()))
            .collect();
        let mut ok_by_aor: HashMap<&str, bool> = HashMap::new();
        // During a database outage the cache answers and the writes wait, in order, for
        // the flush loop (`follow_other_nodes`); a write that cannot reach the database
        // starts such an outage.
        if self.outage_active() {
            return self.hold(writes, &sets);
        }
        let batch = tokio::time::timeout(
            outage::WRITE_TIMEOUT,
            self.store.replace_bindings_many(&sets),
        )
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "no commit within {} ms",
                outage::WRITE_TIMEOUT.as_millis()
            )))
        });
        match batch {
            Ok(()) => {
                for (aor, _) in &sets {
                    ok_by_aor.insert(aor, true);
                }
            }
            Err(e) if e.is_unavailable() => {
                warn!(error = %e, "the database is unreachable: registrations are answered from memory and written when it is back");
                if let Ok(mut q) = self.outage.lock() {
                    q.database_down(std::time::Instant::now());
                }
                return self.hold(writes, &sets);
            }
            Err(e) => {
                debug!(error = %e, count = sets.len(), "batched binding write failed, writing one by one");
                for (aor, bindings) in &sets {
                    let ok = match self.store.replace_bindings(aor, bindings).await {
                        Ok(()) => true,
                        Err(e) => {
                            warn!(aor = %aor, error = %e, "cannot store registration");
                            false
                        }
                    };
                    ok_by_aor.insert(aor, ok);
                }
            }
        }
        let mut results = Vec::with_capacity(writes.len());
        for w in writes {
            let ok = ok_by_aor.get(w.aor.as_str()).copied().unwrap_or(false);
            if ok {
                log_changes(w);
            } else {
                self.restore(&w.aor).await;
            }
            results.push(ok);
        }
        // The other nodes refresh these AORs in their caches (PostgreSQL only). A lost
        // announcement only delays them until their next sweep.
        let written: Vec<&str> = ok_by_aor
            .iter()
            .filter(|(_, ok)| **ok)
            .map(|(aor, _)| *aor)
            .collect();
        if let Err(e) = self
            .store
            .announce_bindings(&self.cfg.policy.node_id, &written)
            .await
        {
            warn!(error = %e, "cannot announce binding changes to the other nodes");
        }
        results
    }

    /// Keeps the location cache fresh with the binding sets other nodes commit (LISTEN on
    /// PostgreSQL; returns at once on SQLite) until `shutdown`: each announced AOR is
    /// re-read alone. A broken connection loses announcements, so after reconnecting the
    /// whole cache is re-read once.
    ///
    /// Alongside, it writes the registrations held during a database outage once the
    /// database answers again (see [`Registrar::persist`]).
    pub async fn follow_other_nodes(&self, shutdown: tokio::sync::watch::Receiver<bool>) {
        tokio::join!(
            self.follow_feed(shutdown.clone()),
            self.flush_held_writes(shutdown)
        );
    }

    /// Whether binding writes are being held (a database outage not yet flushed).
    pub fn outage_active(&self) -> bool {
        self.outage.lock().map(|q| q.is_active()).unwrap_or(false)
    }

    /// Holds the sets of `writes` for the flush loop; a write succeeds (its REGISTER is
    /// answered from the cache it already changed) unless the queue is full.
    fn hold(&self, writes: &[PendingWrite], sets: &[(&str, &[Binding])]) -> Vec<bool> {
        let mut ok_by_aor: HashMap<&str, bool> = HashMap::new();
        if let Ok(mut q) = self.outage.lock() {
            for (aor, bindings) in sets {
                ok_by_aor.insert(aor, q.hold(aor, bindings));
            }
        }
        writes
            .iter()
            .map(|w| {
                let ok = ok_by_aor.get(w.aor.as_str()).copied().unwrap_or(false);
                if ok {
                    log_changes(w);
                } else {
                    warn!(aor = %w.aor, "database unreachable and the held registrations are at their limit: refused");
                }
                ok
            })
            .collect()
    }

    /// During an outage, tries the database every [`outage::PROBE_EVERY`] and writes the
    /// held sets in order once it answers; then re-reads every binding (other nodes wrote
    /// theirs meanwhile) and tells the other nodes. Runs until `shutdown`.
    async fn flush_held_writes(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(outage::PROBE_EVERY) => {}
                _ = shutdown.changed() => return,
            }
            let (held, since) = match self.outage.lock() {
                Ok(q) if q.is_active() => (q.snapshot(), q.since()),
                _ => continue,
            };
            let sets: Vec<(&str, &[Binding])> = held
                .iter()
                .map(|(a, b)| (a.as_str(), b.as_slice()))
                .collect();
            let written = tokio::time::timeout(
                outage::WRITE_TIMEOUT,
                self.store.replace_bindings_many(&sets),
            )
            .await;
            let written: Vec<(String, Vec<Binding>)> = match written {
                Ok(Ok(())) => held,
                Ok(Err(e)) if !e.is_unavailable() => {
                    // One bad set (an extension removed meanwhile) must not hold the rest.
                    let mut done = Vec::new();
                    for (aor, bindings) in held {
                        match self.store.replace_bindings(&aor, &bindings).await {
                            Ok(()) => done.push((aor, bindings)),
                            Err(e) if e.is_unavailable() => break,
                            Err(e) => {
                                warn!(aor = %aor, error = %e, "held registration dropped: the database refuses it");
                                done.push((aor, bindings));
                            }
                        }
                    }
                    done
                }
                _ => continue,
            };
            let over = match self.outage.lock() {
                Ok(mut q) => q.flushed(&written),
                Err(_) => continue,
            };
            info!(
                count = written.len(),
                outage_ms = since.map_or(0, |s| s.elapsed().as_millis() as u64),
                "the database is back: held registrations written"
            );
            let aors: Vec<&str> = written.iter().map(|(a, _)| a.as_str()).collect();
            if let Err(e) = self
                .store
                .announce_bindings(&self.cfg.policy.node_id, &aors)
                .await
            {
                warn!(error = %e, "cannot announce binding changes to the other nodes");
            }
            if over {
                if let Err(e) = self.load_bindings().await {
                    warn!(error = %e, "cannot re-read the registrations after the outage");
                }
            }
        }
    }

    async fn follow_feed(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut reconnecting = false;
        loop {
            let mut changes = match self.store.binding_changes().await {
                Ok(Some(c)) => c,
                Ok(None) => return,
                Err(e) => {
                    warn!(error = %e, "cannot listen for other nodes' registrations: retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                        _ = shutdown.changed() => return,
                    }
                }
            };
            // While writes are held the cache is ahead of the store: the flush re-reads.
            if reconnecting && !self.outage_active() {
                if let Err(e) = self.load_bindings().await {
                    warn!(error = %e, "cannot re-read the registrations after reconnecting");
                }
            }
            reconnecting = true;
            loop {
                tokio::select! {
                    change = changes.next() => match change {
                        Ok(c) if c.node_id != self.cfg.policy.node_id => {
                            debug!(node = %c.node_id, aor = %c.aor, "registration changed on another node");
                            self.restore(&c.aor).await;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            warn!(error = %e, "lost the other nodes' registrations feed: reconnecting");
                            break;
                        }
                    },
                    _ = shutdown.changed() => return,
                }
            }
        }
    }

    /// Puts the stored binding set of `aor` back into memory.
    pub async fn restore(&self, aor: &str) {
        match self.store.bindings_for(aor).await {
            Ok(bs) => {
                let now = now_unix();
                self.cache_set(aor, bs.into_iter().filter(|b| b.is_live(now)).collect());
            }
            Err(e) => warn!(aor = %aor, error = %e, "cannot reload bindings after a failed write"),
        }
    }

    /// Removes expired bindings from memory and the store, and refreshes the caches from
    /// the store. Returns how many bindings the store dropped.
    pub async fn sweep(&self) -> Result<u64, RegistrarError> {
        let now = now_unix();
        if let Ok(mut l) = self.location.write() {
            l.retain(|_, bs| {
                bs.retain(|b| b.is_live(now));
                !bs.is_empty()
            });
        }
        let n = self.store.delete_expired_bindings(now).await?;
        if n > 0 {
            info!(count = n, "expired bindings removed");
        }
        self.reload().await?;
        Ok(n)
    }

    /// (our socket, the phone's source) of every live UDP binding behind NAT that
    /// `reaches` says this node reaches: where its NAT keepalives go.
    pub fn nat_keepalive_targets(
        &self,
        reaches: impl Fn(&Binding) -> bool,
    ) -> Vec<(std::net::SocketAddr, std::net::SocketAddr)> {
        let now = now_unix();
        let mut targets: Vec<_> = self
            .location
            .read()
            .map(|l| {
                // Only the node that reaches a phone pings it: the caches of a cluster
                // hold every node's bindings, and N pings per contact would be N-1 too
                // many (from addresses the NAT does not even map).
                l.values()
                    .flatten()
                    .filter(|b| b.is_live(now) && reaches(b))
                    .filter_map(bindings::udp_nat_target)
                    .collect()
            })
            .unwrap_or_default();
        targets.sort_unstable();
        targets.dedup();
        targets
    }

    /// The extension `number` as cached: `Some(None)` when it is known not to exist,
    /// `None` when it is not in memory (load it with [`Self::fetch_extension`]).
    pub fn cached_extension(&self, number: &str) -> Option<Option<Extension>> {
        self.extensions
            .read()
            .ok()
            .and_then(|c| c.get(number).map(|e| e.ext.clone()))
    }

    /// What the dialplan asks of an extension, from memory: its do-not-disturb and
    /// forward targets as cached, and whether any phone is registered to it now. `None`
    /// for a number that is no extension, or one not in the cache yet
    /// ([`Registrar::fetch_extension`] loads it).
    pub fn extension_state(&self, number: &str) -> Option<ExtensionState> {
        let routing = self.cached_extension(number)??.routing;
        Some(ExtensionState {
            registered: !self.lookup(number).is_empty(),
            dnd: routing.dnd,
            forward_always: routing.forward_always,
            forward_busy: routing.forward_busy,
            forward_noanswer: routing.forward_noanswer,
        })
    }

    /// Current bindings of an AOR (the location service), from memory.
    pub fn lookup(&self, aor: &str) -> Vec<Binding> {
        let now = now_unix();
        let mut bindings = self.cached(aor);
        bindings.retain(|b| b.is_live(now));
        bindings
    }
}

/// The dialplan asks the registrar about extensions (DND, forwards, registered), from
/// memory: evaluating a plan never waits on the store.
impl crate::dialplan::Extensions for Registrar {
    fn get(&self, number: &str) -> Option<ExtensionState> {
        self.extension_state(number)
    }
}

fn log_changes(w: &PendingWrite) {
    for change in &w.changes {
        match change {
            Change::Added { contact, expires } => info!(
                aor = %w.aor, contact = %contact, expires, transport = %w.transport,
                received = %w.received, "registered"
            ),
            Change::Refreshed { contact, expires } => {
                debug!(aor = %w.aor, contact = %contact, expires, "registration refreshed")
            }
            Change::Removed { contact } => {
                info!(aor = %w.aor, contact = %contact, "unregistered")
            }
        }
    }
}

fn to_tag() -> String {
    format!("{:016x}", rand::thread_rng().gen::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ExtensionRouting;

    fn ext(number: &str, routing: ExtensionRouting) -> Extension {
        Extension {
            number: number.to_owned(),
            display_name: String::new(),
            realm: "r".to_owned(),
            ha1_md5: String::new(),
            ha1_sha256: String::new(),
            created_at: 1,
            updated_at: 1,
            routing,
        }
    }

    #[tokio::test]
    async fn only_bindings_this_node_reaches_get_its_nat_keepalives() {
        let store = Store::connect("sqlite::memory:", 1).await.expect("connect");
        store.migrate().await.expect("migrate");
        let cfg = RegistrarConfig::from_config(&crate::config::Config::default());
        let me = cfg.policy.node_id.clone();
        for (n, node, from) in [
            ("201", me.as_str(), "203.0.113.5:40000"),
            ("202", "other-node", "203.0.113.6:40000"),
        ] {
            store
                .add_extension(&ext(n, ExtensionRouting::default()))
                .await
                .expect("add");
            let natted = Binding {
                aor: n.into(),
                binding_key: format!("sip:{n}@192.168.1.20:5060"),
                contact_uri: format!("sip:{n}@192.168.1.20:5060"),
                q: None,
                expires_at: now_unix() + 3600,
                call_id: "c".into(),
                cseq: 1,
                received: from.into(),
                transport: "udp".into(),
                local_addr: "10.0.0.1:5060".into(),
                flow: None,
                path: vec![],
                user_agent: String::new(),
                instance_id: None,
                reg_id: None,
                node_id: node.into(),
                updated_at: 1,
            };
            store.replace_bindings(n, &[natted]).await.expect("bind");
        }
        let r = Registrar::load(store, cfg).await.expect("load");
        assert_eq!(
            r.lookup("202").len(),
            1,
            "the other node's phone is known here"
        );
        let holds_the_flow = |b: &Binding| b.node_id == me;
        assert_eq!(
            r.nat_keepalive_targets(holds_the_flow),
            vec![(
                "10.0.0.1:5060".parse().expect("addr"),
                "203.0.113.5:40000".parse().expect("addr")
            )],
            "and pinged by its own node only"
        );
    }

    #[tokio::test]
    async fn extension_state_comes_from_the_cache_and_the_bindings() {
        let store = Store::connect("sqlite::memory:", 1).await.expect("connect");
        store.migrate().await.expect("migrate");
        let routing = ExtensionRouting {
            dnd: true,
            forward_always: None,
            forward_busy: Some("101".into()),
            forward_noanswer: Some("102".into()),
        };
        store
            .add_extension(&ext("100", routing.clone()))
            .await
            .expect("add 100");
        store
            .add_extension(&ext("101", ExtensionRouting::default()))
            .await
            .expect("add 101");
        let binding = Binding {
            aor: "101".into(),
            binding_key: "sip:101@192.0.2.1".into(),
            contact_uri: "sip:101@192.0.2.1".into(),
            q: None,
            expires_at: now_unix() + 3600,
            call_id: "c".into(),
            cseq: 1,
            received: "192.0.2.1:5060".into(),
            transport: "udp".into(),
            local_addr: "192.0.2.2:5060".into(),
            flow: None,
            path: vec![],
            user_agent: String::new(),
            instance_id: None,
            reg_id: None,
            node_id: "n".into(),
            updated_at: 1,
        };
        store
            .replace_bindings("101", &[binding])
            .await
            .expect("bind");
        let cfg = RegistrarConfig::from_config(&crate::config::Config::default());
        let r = Registrar::load(store.clone(), cfg).await.expect("load");

        assert_eq!(
            r.extension_state("100"),
            Some(ExtensionState {
                registered: false,
                dnd: true,
                forward_always: None,
                forward_busy: Some("101".into()),
                forward_noanswer: Some("102".into()),
            })
        );
        assert_eq!(
            r.extension_state("101"),
            Some(ExtensionState {
                registered: true,
                ..ExtensionState::default()
            })
        );
        assert_eq!(r.extension_state("999"), None);
        // The dialplan's view is the same one.
        assert_eq!(
            crate::dialplan::Extensions::get(&r, "101"),
            r.extension_state("101")
        );

        // A change in the store shows once the cache is refreshed.
        store
            .set_extension_routing("100", &ExtensionRouting::default())
            .await
            .expect("set");
        assert!(r.extension_state("100").is_some_and(|s| s.dnd));
        r.fetch_extension("100").await.expect("fetch");
        assert_eq!(r.extension_state("100"), Some(ExtensionState::default()));
    }
}
