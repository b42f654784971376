//! HTTP digest authentication for SIP (RFC 3261 22, RFC 8760: MD5 and SHA-256, qop=auth).
//!
//! Owns challenges, stateless nonces and response checking. Must not look up users or do
//! I/O: the caller passes the stored HA1 and the current time. Never logs credentials.

use std::collections::HashMap;
use std::time::Duration;

use md5::Md5;
use rand::RngCore;
use sha2::{Digest as _, Sha256};

use super::message::split_list;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    pub fn parse(s: &str) -> Option<Algorithm> {
        if s.eq_ignore_ascii_case("MD5") {
            Some(Algorithm::Md5)
        } else if s.eq_ignore_ascii_case("SHA-256") {
            Some(Algorithm::Sha256)
        } else {
            None
        }
    }

    /// Lower-case hex digest of `data`.
    pub fn hash_hex(self, data: &str) -> String {
        match self {
            Algorithm::Md5 => to_hex(&Md5::digest(data.as_bytes())),
            Algorithm::Sha256 => to_hex(&Sha256::digest(data.as_bytes())),
        }
    }

    /// HA1 = H(username:realm:password), the only form passwords are stored in.
    pub fn ha1(self, username: &str, realm: &str, password: &str) -> String {
        self.hash_hex(&format!("{username}:{realm}:{password}"))
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// The credentials of an Authorization / Proxy-Authorization header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Option<String>,
    pub cnonce: Option<String>,
    pub qop: Option<String>,
    pub nc: Option<String>,
    pub opaque: Option<String>,
}

impl Credentials {
    /// Parses `Digest username="..", realm="..", ...`; None when it is not digest or a
    /// mandatory parameter is missing.
    pub fn parse(value: &str) -> Option<Credentials> {
        let value = value.trim_start();
        let (scheme, rest) = value.split_once([' ', '\t'])?;
        if !scheme.eq_ignore_ascii_case("Digest") {
            return None;
        }
        let mut c = Credentials::default();
        let mut params: HashMap<String, String> = HashMap::new();
        for part in split_list(rest) {
            let (name, val) = part.split_once('=')?;
            let val = val.trim();
            let val = match val.strip_prefix('"') {
                Some(q) => q
                    .strip_suffix('"')?
                    .replace("\\\"", "\"")
                    .replace("\\\\", "\\"),
                None => val.to_owned(),
            };
            params.insert(name.trim().to_ascii_lowercase(), val);
        }
        c.username = params.remove("username")?;
        c.realm = params.remove("realm")?;
        c.nonce = params.remove("nonce")?;
        c.uri = params.remove("uri")?;
        c.response = params.remove("response")?;
        c.algorithm = params.remove("algorithm");
        c.cnonce = params.remove("cnonce");
        c.qop = params.remove("qop");
        c.nc = params.remove("nc");
        c.opaque = params.remove("opaque");
        Some(c)
    }

    pub fn algorithm(&self) -> Option<Algorithm> {
        match &self.algorithm {
            None => Some(Algorithm::Md5),
            Some(a) => Algorithm::parse(a),
        }
    }

    /// The response a client knowing `ha1` would send for `method`.
    pub fn expected_response(&self, alg: Algorithm, ha1: &str, method: &str) -> Option<String> {
        let ha2 = alg.hash_hex(&format!("{method}:{}", self.uri));
        match self.qop.as_deref() {
            Some(q) if q.eq_ignore_ascii_case("auth") => {
                let nc = self.nc.as_deref()?;
                let cnonce = self.cnonce.as_deref()?;
                Some(alg.hash_hex(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce)))
            }
            Some(_) => None,
            None => Some(alg.hash_hex(&format!("{ha1}:{}:{ha2}", self.nonce))),
        }
    }
}

/// Compares in time independent of where the strings differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.bytes()
        .zip(b.bytes())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// How a nonce from a client checks out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    Valid,
    /// Ours, but too old: answer with a fresh challenge and `stale=true`.
    Stale,
    /// Not ours, or tampered with.
    Invalid,
    /// Ours, but the nonce count did not increase: a replay.
    Replayed,
}

/// Issues and checks nonces. A nonce is `time || random || MAC(secret, time || random)`,
/// so any node with the secret can check it without storing it; nonce counts are tracked
/// in memory for replay protection while the nonce lives.
pub struct NonceManager {
    secret: [u8; 32],
    lifetime: Duration,
    counts: HashMap<String, (u64, u32)>,
    last_prune: u64,
}

impl NonceManager {
    pub fn new(secret: [u8; 32], lifetime: Duration) -> Self {
        NonceManager {
            secret,
            lifetime,
            counts: HashMap::new(),
            last_prune: 0,
        }
    }

    pub fn with_random_secret(lifetime: Duration) -> Self {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        Self::new(secret, lifetime)
    }

    /// Checks and issues nonces under `secret` from now on (a cluster's shared one, so a
    /// phone's answer to one node's challenge is good at every node). Nonces issued under
    /// the old secret become invalid.
    pub fn set_secret(&mut self, secret: [u8; 32]) {
        self.secret = secret;
        self.counts.clear();
    }

    fn mac(&self, payload: &str) -> String {
        // HMAC-SHA-256 (RFC 2104) truncated to 128 bits.
        let mut ipad = [0x36u8; 64];
        let mut opad = [0x5cu8; 64];
        for (i, k) in self.secret.iter().enumerate() {
            ipad[i] ^= k;
            opad[i] ^= k;
        }
        let inner = Sha256::new()
            .chain_update(ipad)
            .chain_update(payload.as_bytes())
            .finalize();
        let outer = Sha256::new()
            .chain_update(opad)
            .chain_update(inner)
            .finalize();
        to_hex(&outer[..16])
    }

    /// A fresh nonce for a challenge issued at `now_unix` (seconds).
    pub fn issue(&self, now_unix: u64, rng: &mut impl RngCore) -> String {
        let payload = format!("{now_unix:x}.{:016x}", rng.next_u64());
        let mac = self.mac(&payload);
        format!("{payload}.{mac}")
    }

    /// Checks a nonce and its count (`nc`, hex) at `now_unix`.
    pub fn check(&mut self, nonce: &str, nc: Option<&str>, now_unix: u64) -> NonceCheck {
        let Some((payload, mac)) = nonce.rsplit_once('.') else {
            return NonceCheck::Invalid;
        };
        if !constant_time_eq(&self.mac(payload), mac) {
            return NonceCheck::Invalid;
        }
        let Some(issued) = payload
            .split_once('.')
            .and_then(|(t, _)| u64::from_str_radix(t, 16).ok())
        else {
            return NonceCheck::Invalid;
        };
        let expires = issued.saturating_add(self.lifetime.as_secs());
        if issued > now_unix.saturating_add(5) {
            return NonceCheck::Invalid;
        }
        if now_unix >= expires {
            return NonceCheck::Stale;
        }
        self.prune(now_unix);
        if let Some(nc) = nc {
            let Ok(nc) = u32::from_str_radix(nc, 16) else {
                return NonceCheck::Invalid;
            };
            let entry = self.counts.entry(nonce.to_owned()).or_insert((expires, 0));
            if nc <= entry.1 {
                return NonceCheck::Replayed;
            }
            entry.1 = nc;
        }
        NonceCheck::Valid
    }

    fn prune(&mut self, now_unix: u64) {
        if now_unix > self.last_prune + 10 {
            self.counts.retain(|_, (exp, _)| *exp > now_unix);
            self.last_prune = now_unix;
        }
    }

    /// The `WWW-Authenticate` values for a challenge, one per algorithm in preference order.
    pub fn challenge(
        &self,
        realm: &str,
        algorithms: &[Algorithm],
        stale: bool,
        now_unix: u64,
        rng: &mut impl RngCore,
    ) -> Vec<String> {
        let nonce = self.issue(now_unix, rng);
        algorithms
            .iter()
            .map(|a| {
                let mut v = format!(
                    "Digest realm=\"{realm}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"",
                    a.name()
                );
                if stale {
                    v.push_str(", stale=true");
                }
                v
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn rfc2617_example_response() {
        // RFC 2617 3.5 example, with MD5 and qop=auth.
        let ha1 = Algorithm::Md5.ha1("Mufasa", "testrealm@host.com", "Circle Of Life");
        let c = Credentials {
            username: "Mufasa".into(),
            realm: "testrealm@host.com".into(),
            nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093".into(),
            uri: "/dir/index.html".into(),
            response: String::new(),
            algorithm: None,
            cnonce: Some("0a4f113b".into()),
            qop: Some("auth".into()),
            nc: Some("00000001".into()),
            opaque: None,
        };
        assert_eq!(
            c.expected_response(Algorithm::Md5, &ha1, "GET").as_deref(),
            Some("6629fae49393a05397450978507c4ef1")
        );
    }

    #[test]
    fn rfc7616_sha256_example() {
        // RFC 7616 3.9.1 example with SHA-256.
        let ha1 = Algorithm::Sha256.ha1("Mufasa", "http-auth@example.org", "Circle of Life");
        let c = Credentials {
            username: "Mufasa".into(),
            realm: "http-auth@example.org".into(),
            nonce: "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v".into(),
            uri: "/dir/index.html".into(),
            response: String::new(),
            algorithm: Some("SHA-256".into()),
            cnonce: Some("f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ".into()),
            qop: Some("auth".into()),
            nc: Some("00000001".into()),
            opaque: None,
        };
        assert_eq!(
            c.expected_response(Algorithm::Sha256, &ha1, "GET")
                .as_deref(),
            Some("753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1")
        );
    }

    #[test]
    fn parses_credentials() {
        let v = r#"Digest username="1001", realm="ringfort", nonce="abc", uri="sip:127.0.0.1", response="0123", algorithm=SHA-256, cnonce="x,y", qop=auth, nc=00000001"#;
        let c = Credentials::parse(v).expect("parse");
        assert_eq!(c.username, "1001");
        assert_eq!(c.cnonce.as_deref(), Some("x,y"));
        assert_eq!(c.algorithm(), Some(Algorithm::Sha256));
        assert!(Credentials::parse("Basic abc").is_none());
        assert!(Credentials::parse("Digest realm=\"x\"").is_none());
    }

    #[test]
    fn nonce_lifecycle() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut m = NonceManager::new([9; 32], Duration::from_secs(300));
        let n = m.issue(1000, &mut rng);
        assert_eq!(m.check(&n, Some("00000001"), 1010), NonceCheck::Valid);
        assert_eq!(m.check(&n, Some("00000001"), 1011), NonceCheck::Replayed);
        assert_eq!(m.check(&n, Some("00000002"), 1012), NonceCheck::Valid);
        assert_eq!(m.check(&n, Some("00000003"), 1300), NonceCheck::Stale);
        let mut forged = n.clone();
        forged.replace_range(0..1, "f");
        assert_eq!(m.check(&forged, None, 1010), NonceCheck::Invalid);
        let other = NonceManager::new([8; 32], Duration::from_secs(300));
        let foreign = other.issue(1000, &mut rng);
        assert_eq!(m.check(&foreign, None, 1010), NonceCheck::Invalid);
    }

    #[test]
    fn nodes_sharing_a_secret_accept_each_others_nonces() {
        let mut rng = StdRng::seed_from_u64(8);
        let mut a = NonceManager::new([1; 32], Duration::from_secs(300));
        let mut b = NonceManager::new([2; 32], Duration::from_secs(300));
        let from_a = a.issue(1000, &mut rng);
        assert_eq!(
            b.check(&from_a, Some("00000001"), 1001),
            NonceCheck::Invalid
        );
        a.set_secret([7; 32]);
        b.set_secret([7; 32]);
        assert_eq!(
            a.check(&from_a, Some("00000001"), 1001),
            NonceCheck::Invalid,
            "issued under the old secret"
        );
        let from_a = a.issue(1000, &mut rng);
        assert_eq!(a.check(&from_a, Some("00000001"), 1001), NonceCheck::Valid);
        assert_eq!(b.check(&from_a, Some("00000002"), 1002), NonceCheck::Valid);
        assert_eq!(
            b.check(&from_a, Some("00000002"), 1003),
            NonceCheck::Replayed
        );
    }
}
