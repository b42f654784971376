//! REGISTER handling (RFC 3261 10.3 with digest auth per RFC 8760), bindings, expiry and
//! location lookups. Owns the mapping from REGISTER to store writes and SIP answers.
//! Must not touch media or sockets: it gets a parsed request and returns a response.

pub mod bindings;

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::sip::digest::{constant_time_eq, Algorithm, Credentials, NonceCheck, NonceManager};
use crate::sip::message::{reason_phrase, HeaderName, Request, Response, SipUri};
use crate::sip::Peer;
use crate::store::{Binding, Store, StoreError};

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

/// Option tags this registrar understands in Require (RFC 3261 8.2.2.3).
pub const SUPPORTED: &[&str] = &["path"];

/// Serializes REGISTERs for one AOR so two concurrent ones cannot lose a binding between
/// reading and writing the set.
const AOR_LOCKS: usize = 256;

pub struct Registrar {
    store: Store,
    /// The location service in memory, written through to the store: the store is the
    /// truth a restarted node reloads, the cache is what REGISTER and call routing read,
    /// so neither costs a database read. (Cluster mode will refresh it by LISTEN/NOTIFY.)
    location: RwLock<HashMap<String, Vec<Binding>>>,
    cfg: RegistrarConfig,
    nonces: Mutex<NonceManager>,
    locks: Vec<tokio::sync::Mutex<()>>,
    /// Stands in for the HA1 of users that do not exist, so their failures cost the same
    /// work as real ones.
    decoy_ha1: String,
}

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

enum AuthOutcome {
    Ok(String),
    Challenge { stale: bool },
    Forbidden,
    Bad(&'static str),
}

impl Registrar {
    /// A registrar whose location cache starts from the bindings in the store.
    pub async fn load(store: Store, cfg: RegistrarConfig) -> Result<Self, RegistrarError> {
        let now = now_unix();
        let mut location: HashMap<String, Vec<Binding>> = HashMap::new();
        for b in store.all_bindings().await? {
            if b.expires_at > now {
                location.entry(b.aor.clone()).or_default().push(b);
            }
        }
        let nonces = NonceManager::with_random_secret(cfg.nonce_lifetime);
        let decoy_ha1 = Algorithm::Sha256.hash_hex(&format!("{}", rand::thread_rng().gen::<u64>()));
        Ok(Registrar {
            store,
            location: RwLock::new(location),
            cfg,
            nonces: Mutex::new(nonces),
            locks: (0..AOR_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            decoy_ha1,
        })
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

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn lock_for(&self, aor: &str) -> &tokio::sync::Mutex<()> {
        let mut h = DefaultHasher::new();
        aor.hash(&mut h);
        &self.locks[(h.finish() as usize) % AOR_LOCKS]
    }

    fn response(&self, req: &Request, status: u16) -> Response {
        let mut r = Response::for_request(req, status, reason_phrase(status));
        r.ensure_to_tag(&to_tag());
        r.headers
            .push(HeaderName::Server, self.cfg.server_header.clone());
        r
    }

    fn challenge(&self, req: &Request, stale: bool) -> Response {
        let mut r = self.response(req, 401);
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
            r.headers.push(HeaderName::WwwAuthenticate, v);
        }
        r
    }

    /// Answers a REGISTER. Store failures become 500 so the phone retries later.
    pub async fn handle(&self, req: &Request, peer: Peer) -> Response {
        match self.handle_inner(req, peer).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "register failed");
                let mut r = self.response(req, 500);
                r.headers.push(HeaderName::Other("Retry-After".into()), "5");
                r
            }
        }
    }

    async fn handle_inner(&self, req: &Request, peer: Peer) -> Result<Response, RegistrarError> {
        // The AOR is the user part of the To URI (RFC 3261 10.3 step 5).
        let to = match crate::sip::message::to_header(&req.headers) {
            Ok(t) => t,
            Err(_) => return Ok(self.response(req, 400)),
        };
        // RFC 4475 3.3.4: an AOR must be a SIP or SIPS URI, else 400.
        let aor = match SipUri::parse(&to.uri) {
            Ok(SipUri { user: Some(u), .. }) => u,
            Ok(_) => return Ok(self.response(req, 404)),
            Err(_) => {
                let mut r = Response::for_request(req, 400, "Bad Request (To is not a SIP URI)");
                r.ensure_to_tag(&to_tag());
                return Ok(r);
            }
        };
        let user = match self.authenticate(req).await? {
            AuthOutcome::Ok(user) => user,
            AuthOutcome::Challenge { stale } => return Ok(self.challenge(req, stale)),
            AuthOutcome::Forbidden => {
                info!(aor = %aor, from = %peer.remote, "registration refused: bad credentials");
                return Ok(self.response(req, 403));
            }
            AuthOutcome::Bad(why) => {
                debug!(why, "malformed credentials");
                return Ok(self.response(req, 400));
            }
        };
        // Credentials of one extension may not register another (10.3 step 3).
        if user != aor {
            info!(aor = %aor, user = %user, "registration refused: credentials for another user");
            return Ok(self.response(req, 403));
        }
        let _guard = self.lock_for(&aor).lock().await;
        let now = now_unix();
        let existing = self.cached(&aor);
        let plan = match bindings::plan(req, &peer, &aor, existing, &self.cfg.policy, now) {
            Ok(p) => p,
            Err(Reject::BadRequest(why)) => {
                debug!(why, "bad REGISTER");
                let mut r = Response::for_request(req, 400, &format!("Bad Request ({why})"));
                r.ensure_to_tag(&to_tag());
                return Ok(r);
            }
            Err(Reject::IntervalTooBrief { min_expires }) => {
                let mut r = self.response(req, 423);
                r.headers
                    .push(HeaderName::MinExpires, min_expires.to_string());
                return Ok(r);
            }
            Err(Reject::OutOfOrder) => return Ok(self.response(req, 500)),
        };
        if plan.write {
            // Durable before the 200: a phone told it is registered must survive a crash.
            self.store.replace_bindings(&aor, &plan.bindings).await?;
            self.cache_set(&aor, plan.bindings.clone());
        }
        for change in &plan.changes {
            match change {
                Change::Added { contact, expires } => info!(
                    aor = %aor, contact = %contact, expires, transport = %peer.transport,
                    received = %peer.remote, "registered"
                ),
                Change::Refreshed { contact, expires } => {
                    debug!(aor = %aor, contact = %contact, expires, "registration refreshed")
                }
                Change::Removed { contact } => {
                    info!(aor = %aor, contact = %contact, "unregistered")
                }
            }
        }
        let mut r = bindings::ok_response(req, &plan.bindings, now, &to_tag());
        r.headers
            .push(HeaderName::Server, self.cfg.server_header.clone());
        Ok(r)
    }

    /// Digest authentication with the same answers for unknown and known users, so the
    /// responses tell an attacker nothing about which extensions exist.
    async fn authenticate(&self, req: &Request) -> Result<AuthOutcome, RegistrarError> {
        let creds = req
            .headers
            .get_all(&HeaderName::Authorization)
            .filter_map(Credentials::parse)
            .find(|c| c.realm == self.cfg.realm);
        let Some(creds) = creds else {
            return Ok(AuthOutcome::Challenge { stale: false });
        };
        let Some(alg) = creds
            .algorithm()
            .filter(|a| self.cfg.algorithms.contains(a))
        else {
            return Ok(AuthOutcome::Challenge { stale: false });
        };
        if creds.qop.is_some() && (creds.nc.is_none() || creds.cnonce.is_none()) {
            return Ok(AuthOutcome::Bad("qop without nc/cnonce"));
        }
        let check = match self.nonces.lock() {
            Ok(mut n) => n.check(&creds.nonce, creds.nc.as_deref(), now_unix() as u64),
            Err(_) => NonceCheck::Invalid,
        };
        match check {
            NonceCheck::Valid => {}
            NonceCheck::Stale => return Ok(AuthOutcome::Challenge { stale: true }),
            NonceCheck::Invalid | NonceCheck::Replayed => {
                return Ok(AuthOutcome::Challenge { stale: false })
            }
        }
        let ext = self.store.get_extension(&creds.username).await?;
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
            return Ok(AuthOutcome::Bad("unsupported qop"));
        };
        if ext.is_some() && constant_time_eq(&expected, &creds.response.to_ascii_lowercase()) {
            Ok(AuthOutcome::Ok(creds.username))
        } else {
            Ok(AuthOutcome::Forbidden)
        }
    }

    /// Removes expired bindings from the store; returns how many went.
    pub async fn sweep(&self) -> Result<u64, RegistrarError> {
        let now = now_unix();
        if let Ok(mut l) = self.location.write() {
            l.retain(|_, bs| {
                bs.retain(|b| b.expires_at > now);
                !bs.is_empty()
            });
        }
        let n = self.store.delete_expired_bindings(now).await?;
        if n > 0 {
            info!(count = n, "expired bindings removed");
        }
        Ok(n)
    }

    /// Current bindings of an AOR (the location service), from memory.
    pub fn lookup(&self, aor: &str) -> Vec<Binding> {
        let now = now_unix();
        let mut bindings = self.cached(aor);
        bindings.retain(|b| b.expires_at > now);
        bindings
    }
}

fn to_tag() -> String {
    format!("{:016x}", rand::thread_rng().gen::<u64>())
}
