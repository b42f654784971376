//! Validated value types and the serde helpers that check single values.
//!
//! Every check that needs only one value lives here, inside deserialization, so toml reports
//! the span of the offending value (or array element) and the env path reports the variable.
//! Checks that relate two keys live in `mod.rs` (`cross_checks`).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// This node's identifier: 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
/// Recorded in bindings and cluster rows, so it must stay stable for a node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(String);

/// Why a string is not a valid [`NodeId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid node id {0:?}: use 1 to 64 characters among A-Z a-z 0-9 . _ -")]
pub struct InvalidNodeId(pub String);

impl NodeId {
    /// Checks `id` and wraps it.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidNodeId> {
        let id = id.into();
        let ok = (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(NodeId(id))
        } else {
            Err(InvalidNodeId(id))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for NodeId {
    fn default() -> Self {
        NodeId("node1".to_owned())
    }
}

impl TryFrom<String> for NodeId {
    type Error = InvalidNodeId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        NodeId::new(s)
    }
}

impl From<NodeId> for String {
    fn from(id: NodeId) -> String {
        id.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An address to advertise: an IP literal or a DNS host name (no port).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

impl FromStr for Host {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Host::Ip(ip));
        }
        let looks_numeric = s.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        if looks_numeric || s.contains(':') {
            return Err(format!(
                "invalid IP address {s:?} (give an IPv4 or IPv6 address without a port)"
            ));
        }
        let label_ok = |l: &str| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        let name = s.strip_suffix('.').unwrap_or(s);
        if name.len() <= 253 && name.split('.').all(label_ok) {
            Ok(Host::Name(s.to_owned()))
        } else {
            Err(format!(
                "invalid address {s:?}: expected an IP address or a host name"
            ))
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => ip.fmt(f),
            Host::Name(n) => f.write_str(n),
        }
    }
}

/// A digest algorithm the registrar may challenge with (RFC 8760).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestAlgorithm {
    Sha256,
    Md5,
}

impl DigestAlgorithm {
    /// The name as written in `WWW-Authenticate: ... algorithm=`.
    pub fn as_str(self) -> &'static str {
        match self {
            DigestAlgorithm::Sha256 => "SHA-256",
            DigestAlgorithm::Md5 => "MD5",
        }
    }
}

impl FromStr for DigestAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("SHA-256") {
            Ok(DigestAlgorithm::Sha256)
        } else if s.eq_ignore_ascii_case("MD5") {
            Ok(DigestAlgorithm::Md5)
        } else {
            Err(format!(
                "unknown digest algorithm {s:?}, expected \"SHA-256\" or \"MD5\""
            ))
        }
    }
}

impl fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for DigestAlgorithm {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DigestAlgorithm {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(FromStrVisitor::<Self>::new("\"SHA-256\" or \"MD5\""))
    }
}

/// A codec of the media engine, as `[media] codecs` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodecName {
    Opus,
    G722,
    Pcmu,
    Pcma,
}

impl CodecName {
    /// The name as in SDP `a=rtpmap`.
    pub fn as_str(self) -> &'static str {
        match self {
            CodecName::Opus => "opus",
            CodecName::G722 => "G722",
            CodecName::Pcmu => "PCMU",
            CodecName::Pcma => "PCMA",
        }
    }
}

impl FromStr for CodecName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            CodecName::Opus,
            CodecName::G722,
            CodecName::Pcmu,
            CodecName::Pcma,
        ]
        .into_iter()
        .find(|c| c.as_str().eq_ignore_ascii_case(s))
        .ok_or_else(|| {
            format!("unknown codec {s:?}, expected \"opus\", \"G722\", \"PCMU\" or \"PCMA\"")
        })
    }
}

impl fmt::Display for CodecName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for CodecName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CodecName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(FromStrVisitor::<Self>::new(
            "\"opus\", \"G722\", \"PCMU\" or \"PCMA\"",
        ))
    }
}

/// An Opus target bitrate: 0 (libopus' choice) or 6000..=510000 bit/s (RFC 7587 6.1).
pub(crate) fn opus_bitrate<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = ranged::<_, u32, 0, 510_000>(d)?;
    if v != 0 && v < 6000 {
        return Err(de::Error::custom(format!(
            "must be 0 (libopus' choice) or between 6000 and 510000, got {v}"
        )));
    }
    Ok(v)
}

/// Non-empty list of distinct codecs, in order of preference.
pub(crate) fn codec_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<CodecName>, D::Error> {
    let list = Vec::<CodecName>::deserialize(d)?;
    if list.is_empty() {
        return Err(de::Error::custom(
            "must list at least one of \"opus\", \"G722\", \"PCMU\", \"PCMA\"",
        ));
    }
    for (i, c) in list.iter().enumerate() {
        if list[..i].contains(c) {
            return Err(de::Error::custom(format!("{c} is listed twice")));
        }
    }
    Ok(list)
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Whether and how calls are recorded (`[calls] record`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordMode {
    /// No recordings.
    #[default]
    Off,
    /// One channel: both parties summed.
    Mixed,
    /// Two channels: the caller left, the callee right.
    Stereo,
}

/// Visits a string and parses it with `FromStr`, whose error becomes the reason.
struct FromStrVisitor<T> {
    expecting: &'static str,
    _t: std::marker::PhantomData<T>,
}

impl<T> FromStrVisitor<T> {
    fn new(expecting: &'static str) -> Self {
        FromStrVisitor {
            expecting,
            _t: std::marker::PhantomData,
        }
    }
}

impl<T: FromStr> Visitor<'_> for FromStrVisitor<T>
where
    T::Err: fmt::Display,
{
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
}

/// A socket address parsed with an admin-readable error.
struct Addr(SocketAddr);

impl FromStr for Addr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.trim().parse().map(Addr).map_err(|_| {
            format!("invalid socket address {s:?} (expected IP:port, e.g. \"0.0.0.0:5060\" or \"[::]:5060\")")
        })
    }
}

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(FromStrVisitor::<Self>::new(
            "a socket address like \"0.0.0.0:5060\"",
        ))
    }
}

pub(crate) fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    Addr::deserialize(d).map(|a| a.0)
}

/// A list of socket addresses, no duplicates; an element's error carries its own span.
pub(crate) fn socket_addr_list<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<SocketAddr>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<SocketAddr>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of socket addresses like [\"0.0.0.0:5060\"]")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(Addr(a)) = seq.next_element()? {
                if out.contains(&a) {
                    return Err(de::Error::custom(format!("duplicate address {a}")));
                }
                out.push(a);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V)
}

/// Non-empty list of distinct digest algorithms, in challenge order.
pub(crate) fn digest_algorithms<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<DigestAlgorithm>, D::Error> {
    let list = Vec::<DigestAlgorithm>::deserialize(d)?;
    if list.is_empty() {
        return Err(de::Error::custom(
            "must list at least one of \"SHA-256\", \"MD5\"",
        ));
    }
    for (i, a) in list.iter().enumerate() {
        if list[..i].contains(a) {
            return Err(de::Error::custom(format!("{a} is listed twice")));
        }
    }
    Ok(list)
}

/// `""` means none; anything else must be an IP address or host name.
pub(crate) fn optional_host<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Host>, D::Error> {
    let s = String::deserialize(d)?;
    let s = s.trim();
    if s.is_empty() {
        Ok(None)
    } else {
        s.parse().map(Some).map_err(de::Error::custom)
    }
}

pub(crate) fn serialize_optional_host<S: Serializer>(
    h: &Option<Host>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match h {
        Some(h) => s.collect_str(h),
        None => s.serialize_str(""),
    }
}

/// `""` means none; anything else must be an IP address.
pub(crate) fn optional_ip<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
    let s = String::deserialize(d)?;
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    s.parse::<IpAddr>().map(Some).map_err(|_| {
        de::Error::custom(format!(
            "invalid IP address {s:?} (give an IPv4 or IPv6 address)"
        ))
    })
}

pub(crate) fn serialize_optional_ip<S: Serializer>(
    ip: &Option<IpAddr>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match ip {
        Some(ip) => s.collect_str(ip),
        None => s.serialize_str(""),
    }
}

/// Rejects empty strings, control characters and, for header parameters, quotes.
fn check_text(s: &str, max: usize, quoted_param: bool) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > max {
        return Err(format!("is too long ({} bytes, at most {max})", s.len()));
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if quoted_param && s.contains(['"', '\\']) {
        return Err("must not contain '\"' or '\\'".into());
    }
    Ok(())
}

pub(crate) fn realm<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    check_text(&s, 128, true).map_err(de::Error::custom)?;
    Ok(s)
}

pub(crate) fn header_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    check_text(&s, 256, false).map_err(de::Error::custom)?;
    Ok(s)
}

pub(crate) fn log_level<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    check_text(&s, 4096, false).map_err(de::Error::custom)?;
    Ok(s.trim().to_owned())
}

pub(crate) fn nonempty_path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Err(de::Error::custom(
            "must not be empty (use \".\" for the config folder)",
        ));
    }
    Ok(PathBuf::from(s))
}

/// The URL forms `database.url` accepts (checked here, resolved in `mod.rs`).
pub(crate) fn database_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    let s = s.trim();
    let ok = s.is_empty()
        || s == "sqlite::memory:"
        || ["sqlite://", "postgres://", "postgresql://"]
            .iter()
            .any(|p| s.starts_with(p) && s.len() > p.len());
    if ok {
        return Ok(s.to_owned());
    }
    // Never echo the URL: it may carry a password.
    let shown = match s.split_once(':') {
        Some((scheme, _)) if !scheme.is_empty() && scheme.len() <= 16 => {
            format!("unsupported database URL scheme {scheme:?}")
        }
        _ => "unsupported database URL".to_owned(),
    };
    Err(de::Error::custom(format!(
        "{shown}: expected \"\" (SQLite in node.data_dir), \"sqlite://PATH\" or \"postgres://USER@HOST/DB\""
    )))
}

/// An integer in `MIN..=MAX`, converted to `T`. Used as
/// `#[serde(deserialize_with = "ranged::<_, u32, 1, 86400>")]`.
pub(crate) fn ranged<'de, D, T, const MIN: i64, const MAX: i64>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    struct V<T, const MIN: i64, const MAX: i64>(std::marker::PhantomData<T>);
    impl<T: TryFrom<i64>, const MIN: i64, const MAX: i64> Visitor<'_> for V<T, MIN, MAX> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "an integer between {MIN} and {MAX}")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            if !(MIN..=MAX).contains(&v) {
                return Err(E::custom(format!(
                    "must be between {MIN} and {MAX}, got {v}"
                )));
            }
            T::try_from(v).map_err(|_| E::custom(format!("{v} does not fit")))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            match i64::try_from(v) {
                Ok(v) => self.visit_i64(v),
                Err(_) => Err(E::custom(format!(
                    "must be between {MIN} and {MAX}, got {v}"
                ))),
            }
        }
    }
    d.deserialize_i64(V::<T, MIN, MAX>(std::marker::PhantomData))
}

/// First RTP port: in range and even (RTP takes the even port, RTCP the odd one after it).
pub(crate) fn rtp_port_min<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let v: u16 = ranged::<D, u16, 1024, 65535>(d)?;
    if v % 2 != 0 {
        return Err(de::Error::custom(format!(
            "must be even (RTP uses even ports, RTCP the next odd one), got {v}"
        )));
    }
    Ok(v)
}

/// `""` means none; anything else must be `IP:port`.
pub(crate) fn optional_socket_addr<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    s.parse::<Addr>()
        .map(|a| Some(a.0))
        .map_err(de::Error::custom)
}

pub(crate) fn serialize_optional_socket_addr<S: Serializer>(
    a: &Option<SocketAddr>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match a {
        Some(a) => s.collect_str(a),
        None => s.serialize_str(""),
    }
}

/// An IP address (no port).
pub(crate) fn ip<'de, D: Deserializer<'de>>(d: D) -> Result<IpAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.trim().parse::<IpAddr>().map_err(|_| {
        de::Error::custom(format!(
            "invalid IP address {s:?} (give an IPv4 or IPv6 address without a prefix length)"
        ))
    })
}

/// A Linux interface name: 1-15 bytes, no '/', ':' (alias syntax), whitespace or control.
pub(crate) fn interface_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    let ok = (1..=15).contains(&s.len())
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if !ok {
        return Err(de::Error::custom(format!(
            "invalid interface name {s:?}: 1 to 15 characters, no '/', ':' or spaces"
        )));
    }
    Ok(s)
}

/// The `[[cluster.vip]]` entries: no address twice.
pub(crate) fn vip_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<super::VipConfig>, D::Error> {
    let list = Vec::<super::VipConfig>::deserialize(d)?;
    for (i, v) in list.iter().enumerate() {
        if list[..i].iter().any(|o| o.address == v.address) {
            return Err(de::Error::custom(format!(
                "floating IP {} is listed twice",
                v.address
            )));
        }
    }
    Ok(list)
}
