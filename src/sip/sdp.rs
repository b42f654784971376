//! SDP (RFC 8866) and offer/answer (RFC 3264) for a B2BUA that anchors media in its relay.
//!
//! Owns: the SDP model, its parser (strict about structure, tolerant of what phones send)
//! and serializer (CRLF, RFC order); typed access to the attributes the call layer needs
//! (rtpmap with the static payload types, fmtp, direction, rtcp, rtcp-mux, ptime,
//! telephone-event); the rewriting of a received SDP into the one sent on the other leg,
//! with the PBX's relay address and ports; the per-leg o= continuity ([`OriginState`]);
//! and the offer/answer helpers (codec intersection, m-line checks, offer reordering by
//! preference, hold and resume detection).
//!
//! Must not: do I/O, allocate relay ports or choose addresses (the caller passes them in),
//! know about dialogs, transactions or SIP status codes (the caller turns
//! [`no_common_codec`] into 488), or touch RTP. Every function is pure data in, data out.
//!
//! Crypto and DTLS attributes (`a=crypto`, `a=fingerprint`, `a=setup`) pass through the
//! relay rewriting untouched; deciding whether a leg may carry them is the call layer's job.

use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::str::FromStr;

use thiserror::Error;

/// Why an SDP is refused, or why an offer and an answer do not fit together.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SdpError {
    #[error("SDP is empty")]
    Empty,
    #[error("SDP line {line}: {reason}")]
    Line { line: usize, reason: String },
    #[error("SDP has no {0} line")]
    Missing(&'static str),
    #[error("SDP is not valid UTF-8 (line {line})")]
    Utf8 { line: usize },
    #[error("the answer has {answer} m-lines, the offer has {offer}")]
    MediaCount { offer: usize, answer: usize },
    #[error("m-line {index}: the answer has media {answer:?}, the offer has {offer:?}")]
    MediaKind {
        index: usize,
        offer: String,
        answer: String,
    },
    #[error("{relays} relay ports given for {streams} media streams")]
    RelayCount { streams: usize, relays: usize },
}

/// `o=`: who made the session description, and which version of it this is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    pub username: String,
    /// Kept as text: phones send numbers of any length here, and only equality matters.
    pub session_id: String,
    pub session_version: u64,
    pub nettype: String,
    pub addrtype: String,
    pub address: String,
}

/// `c=`: where media goes. The address stays text (it may be a name or carry `/ttl`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub nettype: String,
    pub addrtype: String,
    pub address: String,
}

impl Connection {
    /// `IN IP4 a.b.c.d` or `IN IP6 ...` for an IP address.
    pub fn from_ip(ip: IpAddr) -> Connection {
        Connection {
            nettype: "IN".into(),
            addrtype: addrtype_of(ip).into(),
            address: ip.to_string(),
        }
    }

    /// The address as an IP, without a multicast `/ttl` suffix; `None` for a host name.
    pub fn ip(&self) -> Option<IpAddr> {
        let bare = self.address.split('/').next().unwrap_or("");
        bare.parse().ok()
    }

    /// The RFC 2543 hold form: `c=IN IP4 0.0.0.0` (or the unspecified IPv6 address).
    pub fn is_null(&self) -> bool {
        self.ip().is_some_and(|ip| ip.is_unspecified())
    }
}

/// `b=<type>:<bandwidth>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bandwidth {
    pub bwtype: String,
    pub bandwidth: u64,
}

/// One `t=` line and the `r=` lines that follow it (kept as text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    pub start: u64,
    pub stop: u64,
    pub repeats: Vec<String>,
}

/// `a=<name>` or `a=<name>:<value>`, in wire order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub value: Option<String>,
}

impl Attribute {
    pub fn new(name: impl Into<String>, value: Option<String>) -> Attribute {
        Attribute {
            name: name.into(),
            value,
        }
    }

    /// A property attribute (`a=rtcp-mux`).
    pub fn flag(name: impl Into<String>) -> Attribute {
        Attribute::new(name, None)
    }

    /// A value attribute (`a=ptime:20`).
    pub fn value(name: impl Into<String>, value: impl Into<String>) -> Attribute {
        Attribute::new(name, Some(value.into()))
    }

    fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

/// A whole session description.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionDescription {
    /// `v=`, always 0.
    pub version: u32,
    pub origin: Origin,
    /// `s=`; an empty name is written as `s= ` (RFC 8866 forbids an empty line).
    pub session_name: String,
    /// `i=`
    pub session_info: Option<String>,
    /// `u=`
    pub uri: Option<String>,
    /// `e=`
    pub emails: Vec<String>,
    /// `p=`
    pub phones: Vec<String>,
    pub connection: Option<Connection>,
    pub bandwidths: Vec<Bandwidth>,
    /// `t=` (and `r=`); may be empty when a phone left `t=` out.
    pub times: Vec<Timing>,
    /// `z=`
    pub time_zones: Option<String>,
    /// `k=`
    pub key: Option<String>,
    /// Session-level attributes.
    pub attributes: Vec<Attribute>,
    pub media: Vec<MediaDescription>,
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// `audio`, `video`, `image`, `application`, ...
    pub media: String,
    /// 0 means the stream is disabled (rejected, or removed).
    pub port: u16,
    /// The `/<number of ports>` suffix, when present.
    pub port_count: Option<u16>,
    /// `RTP/AVP`, `RTP/SAVP`, `UDP/TLS/RTP/SAVPF`, `udptl`, ...
    pub proto: String,
    /// Payload type numbers for RTP, other format names otherwise.
    pub formats: Vec<String>,
    /// `i=`
    pub title: Option<String>,
    pub connection: Option<Connection>,
    pub bandwidths: Vec<Bandwidth>,
    /// `k=`
    pub key: Option<String>,
    pub attributes: Vec<Attribute>,
}

/// Media direction (RFC 3264 5.1, 6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction named by an attribute, case-insensitively.
    pub fn from_attribute(name: &str) -> Option<Direction> {
        [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ]
        .into_iter()
        .find(|d| d.as_str().eq_ignore_ascii_case(name))
    }

    /// Whether the side that wrote this direction sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the side that wrote this direction wants to receive media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The direction an answer takes when it accepts everything the offer allows
    /// (RFC 3264 6.1): sendonly <-> recvonly, the others unchanged.
    pub fn reversed(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }

    /// This direction without receiving: what `c=0.0.0.0` does to it.
    pub fn without_receive(self) -> Direction {
        if self.sends() {
            Direction::SendOnly
        } else {
            Direction::Inactive
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `a=rtpmap`, or what a static payload type means without one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    pub payload_type: u8,
    pub encoding: String,
    pub clock_rate: u32,
    /// Encoding parameters (the channel count for audio), when given; absent means one.
    pub channels: Option<u16>,
}

impl RtpMap {
    /// Same codec: encoding name case-insensitively, clock rate, channels (absent = 1).
    pub fn same_codec(&self, other: &RtpMap) -> bool {
        self.encoding.eq_ignore_ascii_case(&other.encoding)
            && self.clock_rate == other.clock_rate
            && self.channels.unwrap_or(1) == other.channels.unwrap_or(1)
    }

    pub fn is_telephone_event(&self) -> bool {
        self.encoding.eq_ignore_ascii_case("telephone-event")
    }

    /// Formats that ride along with a codec but carry no media of their own: comfort
    /// noise, redundancy, FEC, retransmission.
    pub fn is_auxiliary(&self) -> bool {
        ["CN", "red", "ulpfec", "flexfec", "rtx"]
            .iter()
            .any(|n| self.encoding.eq_ignore_ascii_case(n))
    }
}

/// `a=rtcp` (RFC 3605).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rtcp {
    pub port: u16,
    pub connection: Option<Connection>,
}

/// The static audio/video payload types of RFC 3551 (table 4 and 5).
pub fn static_payload_type(pt: u8) -> Option<RtpMap> {
    let (encoding, clock_rate, channels) = match pt {
        0 => ("PCMU", 8000, None),
        3 => ("GSM", 8000, None),
        4 => ("G723", 8000, None),
        5 => ("DVI4", 8000, None),
        6 => ("DVI4", 16000, None),
        7 => ("LPC", 8000, None),
        8 => ("PCMA", 8000, None),
        9 => ("G722", 8000, None),
        10 => ("L16", 44100, Some(2)),
        11 => ("L16", 44100, None),
        12 => ("QCELP", 8000, None),
        13 => ("CN", 8000, None),
        14 => ("MPA", 90000, None),
        15 => ("G728", 8000, None),
        16 => ("DVI4", 11025, None),
        17 => ("DVI4", 22050, None),
        18 => ("G729", 8000, None),
        25 => ("CelB", 90000, None),
        26 => ("JPEG", 90000, None),
        28 => ("nv", 90000, None),
        31 => ("H261", 90000, None),
        32 => ("MPV", 90000, None),
        33 => ("MP2T", 90000, None),
        34 => ("H263", 90000, None),
        _ => return None,
    };
    Some(RtpMap {
        payload_type: pt,
        encoding: encoding.into(),
        clock_rate,
        channels,
    })
}

fn parse_rtpmap(value: &str) -> Option<RtpMap> {
    let (pt, rest) = value.trim().split_once(char::is_whitespace)?;
    let payload_type: u8 = pt.parse().ok().filter(|pt| *pt <= 127)?;
    let mut parts = rest.trim().split('/');
    let encoding = parts.next().filter(|e| !e.is_empty())?.to_string();
    let clock_rate = parts.next()?.trim().parse().ok()?;
    let channels = match parts.next() {
        Some(c) => Some(c.trim().parse().ok()?),
        None => None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(RtpMap {
        payload_type,
        encoding,
        clock_rate,
        channels,
    })
}

fn addrtype_of(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    }
}

fn is_direction(a: &Attribute) -> bool {
    a.value.is_none() && Direction::from_attribute(&a.name).is_some()
}

fn direction_in(attrs: &[Attribute]) -> Option<Direction> {
    attrs
        .iter()
        .filter(|a| a.value.is_none())
        .find_map(|a| Direction::from_attribute(&a.name))
}

impl MediaDescription {
    /// A new stream with no attributes.
    pub fn new(
        media: impl Into<String>,
        port: u16,
        proto: impl Into<String>,
        formats: Vec<String>,
    ) -> MediaDescription {
        MediaDescription {
            media: media.into(),
            port,
            port_count: None,
            proto: proto.into(),
            formats,
            title: None,
            connection: None,
            bandwidths: Vec::new(),
            key: None,
            attributes: Vec::new(),
        }
    }

    /// Port 0 disables a stream.
    pub fn is_enabled(&self) -> bool {
        self.port != 0
    }

    /// Whether the formats are RTP payload types.
    pub fn is_rtp(&self) -> bool {
        self.proto.to_ascii_uppercase().contains("RTP/")
    }

    pub fn is_audio(&self) -> bool {
        self.media.eq_ignore_ascii_case("audio")
    }

    /// The first attribute of that name (case-insensitive).
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.is(name))
    }

    /// The values of every attribute of that name.
    pub fn attribute_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.attributes
            .iter()
            .filter(move |a| a.is(name))
            .filter_map(|a| a.value.as_deref())
    }

    pub fn has_attribute(&self, name: &str) -> bool {
        self.attribute(name).is_some()
    }

    /// What payload type `pt` means here: its `a=rtpmap`, else the static table (RTP only).
    pub fn rtpmap(&self, pt: u8) -> Option<RtpMap> {
        let explicit = self
            .attribute_values("rtpmap")
            .filter_map(parse_rtpmap)
            .find(|m| m.payload_type == pt);
        match explicit {
            Some(m) => Some(m),
            None if self.is_rtp() => static_payload_type(pt),
            None => None,
        }
    }

    /// The codecs of the m= line in its order; payload types with no known meaning are left out.
    pub fn codecs(&self) -> Vec<RtpMap> {
        self.formats
            .iter()
            .filter_map(|f| f.parse::<u8>().ok())
            .filter_map(|pt| self.rtpmap(pt))
            .collect()
    }

    /// The `a=fmtp` parameters of payload type `pt`.
    pub fn fmtp(&self, pt: u8) -> Option<&str> {
        self.attribute_values("fmtp").find_map(|v| {
            let (p, params) = v.split_once(char::is_whitespace).unwrap_or((v, ""));
            (p.parse::<u8>().ok() == Some(pt)).then(|| params.trim())
        })
    }

    /// The direction attribute of this stream, if it has one.
    pub fn direction_attribute(&self) -> Option<Direction> {
        direction_in(&self.attributes)
    }

    /// Replace any direction attributes by `direction` (or none).
    pub fn set_direction(&mut self, direction: Option<Direction>) {
        let at = self.attributes.iter().position(is_direction);
        self.attributes.retain(|a| !is_direction(a));
        if let Some(d) = direction {
            let at = at
                .unwrap_or(self.attributes.len())
                .min(self.attributes.len());
            self.attributes.insert(at, Attribute::flag(d.as_str()));
        }
    }

    /// `a=rtcp` (RFC 3605); `None` when absent or unreadable.
    pub fn rtcp(&self) -> Option<Rtcp> {
        let v = self.attribute_values("rtcp").next()?;
        let mut it = v.split_whitespace();
        let port = it.next()?.parse().ok()?;
        let connection = match (it.next(), it.next(), it.next()) {
            (Some(n), Some(t), Some(a)) => Some(Connection {
                nettype: n.into(),
                addrtype: t.into(),
                address: a.into(),
            }),
            _ => None,
        };
        Some(Rtcp { port, connection })
    }

    /// `a=rtcp-mux` (RFC 5761).
    pub fn rtcp_mux(&self) -> bool {
        self.has_attribute("rtcp-mux")
    }

    /// `a=ptime` in milliseconds.
    pub fn ptime(&self) -> Option<u32> {
        self.attribute_values("ptime")
            .next()
            .and_then(|v| v.trim().parse().ok())
    }

    /// `a=maxptime` in milliseconds.
    pub fn maxptime(&self) -> Option<u32> {
        self.attribute_values("maxptime")
            .next()
            .and_then(|v| v.trim().parse().ok())
    }

    /// The first telephone-event (RFC 4733) payload type of the m= line.
    pub fn telephone_event(&self) -> Option<RtpMap> {
        self.codecs().into_iter().find(RtpMap::is_telephone_event)
    }
}

impl SessionDescription {
    /// Parse an SDP body. Tolerates LF-only line ends, blank lines, trailing blanks,
    /// session lines in any order, a missing `t=`; refuses anything that is not
    /// `<letter>=<value>`, an unknown line type, or a malformed `v o s c b t m` line.
    pub fn parse(text: &str) -> Result<SessionDescription, SdpError> {
        parse(text)
    }

    /// Parse a body as received; it must be UTF-8.
    pub fn parse_bytes(bytes: &[u8]) -> Result<SessionDescription, SdpError> {
        match std::str::from_utf8(bytes) {
            Ok(text) => parse(text),
            Err(e) => {
                let before = bytes.get(..e.valid_up_to()).unwrap_or(&[]);
                let line = 1 + before.iter().filter(|b| **b == b'\n').count();
                Err(SdpError::Utf8 { line })
            }
        }
    }

    /// The first session-level attribute of that name (case-insensitive).
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.is(name))
    }

    /// The session-level direction attribute, if any.
    pub fn direction_attribute(&self) -> Option<Direction> {
        direction_in(&self.attributes)
    }

    /// Where media of stream `index` goes: its own `c=`, else the session's.
    pub fn media_connection(&self, index: usize) -> Option<&Connection> {
        let m = self.media.get(index)?;
        m.connection.as_ref().or(self.connection.as_ref())
    }

    /// The direction stream `index` asks for: its attribute, else the session's, else
    /// sendrecv; a `c=0.0.0.0` (RFC 2543 hold) takes away receiving.
    pub fn media_direction(&self, index: usize) -> Direction {
        let Some(m) = self.media.get(index) else {
            return Direction::Inactive;
        };
        let d = m
            .direction_attribute()
            .or(self.direction_attribute())
            .unwrap_or(Direction::SendRecv);
        if self
            .media_connection(index)
            .is_some_and(Connection::is_null)
        {
            d.without_receive()
        } else {
            d
        }
    }
}

impl FromStr for SessionDescription {
    type Err = SdpError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`{|}~".contains(c))
}

fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(60).collect();
    if out.len() < s.len() {
        out.push_str("...");
    }
    out
}

fn parse_connection(value: &str) -> Result<Connection, String> {
    let f: Vec<&str> = value.split_whitespace().collect();
    match f.as_slice() {
        [n, t, a] if is_token(n) && is_token(t) => Ok(Connection {
            nettype: (*n).into(),
            addrtype: (*t).into(),
            address: (*a).into(),
        }),
        _ => Err(format!(
            "c= needs <nettype> <addrtype> <address>, found {:?}",
            clip(value)
        )),
    }
}

fn parse_bandwidth(value: &str) -> Result<Bandwidth, String> {
    let bad = || format!("b= needs <type>:<number>, found {:?}", clip(value));
    let (t, bw) = value.split_once(':').ok_or_else(bad)?;
    let (t, bw) = (t.trim(), bw.trim());
    if !is_token(t) {
        return Err(bad());
    }
    let bandwidth = bw.parse().map_err(|_| bad())?;
    Ok(Bandwidth {
        bwtype: t.into(),
        bandwidth,
    })
}

fn parse_origin(value: &str) -> Result<Origin, String> {
    let f: Vec<&str> = value.split_whitespace().collect();
    let [username, session_id, version, nettype, addrtype, address] = f.as_slice() else {
        return Err(format!(
            "o= needs 6 fields (username sess-id sess-version nettype addrtype address), found {}",
            f.len()
        ));
    };
    let session_version = version
        .parse()
        .map_err(|_| format!("o= session version {:?} is not a number", clip(version)))?;
    Ok(Origin {
        username: (*username).into(),
        session_id: (*session_id).into(),
        session_version,
        nettype: (*nettype).into(),
        addrtype: (*addrtype).into(),
        address: (*address).into(),
    })
}

fn parse_timing(value: &str) -> Result<Timing, String> {
    let f: Vec<&str> = value.split_whitespace().collect();
    let bad = || {
        format!(
            "t= needs <start> <stop> as numbers, found {:?}",
            clip(value)
        )
    };
    let [start, stop] = f.as_slice() else {
        return Err(bad());
    };
    Ok(Timing {
        start: start.parse().map_err(|_| bad())?,
        stop: stop.parse().map_err(|_| bad())?,
        repeats: Vec::new(),
    })
}

fn parse_media(value: &str) -> Result<MediaDescription, String> {
    let mut f = value.split_whitespace();
    let (Some(media), Some(port), Some(proto)) = (f.next(), f.next(), f.next()) else {
        return Err(format!(
            "m= needs <media> <port> <proto> <fmt>..., found {:?}",
            clip(value)
        ));
    };
    if !is_token(media) {
        return Err(format!("m= media {:?} is not a token", clip(media)));
    }
    let (port, count) = match port.split_once('/') {
        Some((p, c)) => (p, Some(c)),
        None => (port, None),
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("m= port {:?} is not a number 0-65535", clip(port)))?;
    let port_count = match count {
        Some(c) => Some(
            c.parse::<u16>()
                .map_err(|_| format!("m= port count {:?} is not a number", clip(c)))?,
        ),
        None => None,
    };
    let formats: Vec<String> = f.map(String::from).collect();
    if formats.is_empty() && port != 0 {
        return Err("m= line lists no formats".into());
    }
    let mut m = MediaDescription::new(media, port, proto, formats);
    m.port_count = port_count;
    Ok(m)
}

fn parse_attribute(value: &str) -> Result<Attribute, String> {
    let (name, v) = match value.split_once(':') {
        Some((n, v)) => (n, Some(v.to_string())),
        None => (value, None),
    };
    if !is_token(name) {
        return Err(format!("a= attribute name {:?} is not a token", clip(name)));
    }
    Ok(Attribute::new(name, v))
}

fn set_once<T>(slot: &mut Option<T>, value: T, what: &str) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("more than one {what} line"));
    }
    *slot = Some(value);
    Ok(())
}

fn parse(text: &str) -> Result<SessionDescription, SdpError> {
    let mut sdp = SessionDescription::default();
    let (mut v, mut o, mut s) = (None, None, None);
    let mut seen_line = false;
    for (idx, raw) in text.split('\n').enumerate() {
        let line_no = idx + 1;
        let line = raw.trim_end_matches(['\r', ' ', '\t']);
        if line.is_empty() {
            continue;
        }
        let at = |reason: String| SdpError::Line {
            line: line_no,
            reason,
        };
        let bytes = line.as_bytes();
        let kind = bytes[0] as char;
        if !kind.is_ascii_lowercase() || bytes.get(1) != Some(&b'=') {
            return Err(at(format!(
                "expected <letter>=<value>, found {:?}",
                clip(line)
            )));
        }
        let value = &line[2..];
        if !seen_line && kind != 'v' {
            return Err(at("the first line must be v=0".into()));
        }
        seen_line = true;
        let in_media = !sdp.media.is_empty();
        let r: Result<(), String> = match (kind, sdp.media.last_mut()) {
            ('v', _) if in_media => Err("v= inside a media section".into()),
            ('v', _) => match value.trim().parse::<u32>() {
                Ok(0) => set_once(&mut v, 0, "v="),
                _ => Err(format!("unsupported SDP version {:?}", clip(value))),
            },
            ('o', _) if in_media => Err("o= inside a media section".into()),
            ('o', _) => parse_origin(value).and_then(|x| set_once(&mut o, x, "o=")),
            ('s', _) if in_media => Err("s= inside a media section".into()),
            ('s', _) => set_once(&mut s, value.to_string(), "s="),
            ('m', _) => parse_media(value).map(|m| sdp.media.push(m)),
            ('i', Some(m)) => set_once(&mut m.title, value.to_string(), "i="),
            ('i', None) => set_once(&mut sdp.session_info, value.to_string(), "i="),
            ('c', Some(m)) => {
                parse_connection(value).and_then(|c| set_once(&mut m.connection, c, "c="))
            }
            ('c', None) => {
                parse_connection(value).and_then(|c| set_once(&mut sdp.connection, c, "c="))
            }
            ('b', Some(m)) => parse_bandwidth(value).map(|b| m.bandwidths.push(b)),
            ('b', None) => parse_bandwidth(value).map(|b| sdp.bandwidths.push(b)),
            ('k', Some(m)) => set_once(&mut m.key, value.to_string(), "k="),
            ('k', None) => set_once(&mut sdp.key, value.to_string(), "k="),
            ('a', Some(m)) => parse_attribute(value).map(|a| m.attributes.push(a)),
            ('a', None) => parse_attribute(value).map(|a| sdp.attributes.push(a)),
            ('u' | 'e' | 'p' | 't' | 'r' | 'z', Some(_)) => {
                Err(format!("{kind}= is not allowed in a media section"))
            }
            ('u', None) => set_once(&mut sdp.uri, value.to_string(), "u="),
            ('e', None) => {
                sdp.emails.push(value.to_string());
                Ok(())
            }
            ('p', None) => {
                sdp.phones.push(value.to_string());
                Ok(())
            }
            ('t', None) => parse_timing(value).map(|t| sdp.times.push(t)),
            ('r', None) => match sdp.times.last_mut() {
                Some(t) if !value.trim().is_empty() => {
                    t.repeats.push(value.to_string());
                    Ok(())
                }
                Some(_) => Err("empty r= line".into()),
                None => Err("r= before any t= line".into()),
            },
            ('z', None) => set_once(&mut sdp.time_zones, value.to_string(), "z="),
            _ => Err(format!("unknown line type {kind}=")),
        };
        r.map_err(at)?;
    }
    if !seen_line {
        return Err(SdpError::Empty);
    }
    sdp.version = v.ok_or(SdpError::Missing("v="))?;
    sdp.origin = o.ok_or(SdpError::Missing("o="))?;
    sdp.session_name = s.ok_or(SdpError::Missing("s="))?;
    Ok(sdp)
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.nettype, self.addrtype, self.address)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {} {}",
            self.username,
            self.session_id,
            self.session_version,
            self.nettype,
            self.addrtype,
            self.address
        )
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}:{}", self.name, v),
            None => f.write_str(&self.name),
        }
    }
}

fn write_common(
    out: &mut String,
    connection: Option<&Connection>,
    bandwidths: &[Bandwidth],
) -> fmt::Result {
    if let Some(c) = connection {
        write!(out, "c={c}\r\n")?;
    }
    for b in bandwidths {
        write!(out, "b={}:{}\r\n", b.bwtype, b.bandwidth)?;
    }
    Ok(())
}

impl SessionDescription {
    fn write_to(&self, out: &mut String) -> fmt::Result {
        write!(out, "v={}\r\n", self.version)?;
        write!(out, "o={}\r\n", self.origin)?;
        // An empty s= is not allowed; "s= " reads back as the empty name.
        let name = if self.session_name.is_empty() {
            " "
        } else {
            &self.session_name
        };
        write!(out, "s={name}\r\n")?;
        if let Some(i) = &self.session_info {
            write!(out, "i={i}\r\n")?;
        }
        if let Some(u) = &self.uri {
            write!(out, "u={u}\r\n")?;
        }
        for e in &self.emails {
            write!(out, "e={e}\r\n")?;
        }
        for p in &self.phones {
            write!(out, "p={p}\r\n")?;
        }
        write_common(out, self.connection.as_ref(), &self.bandwidths)?;
        for t in &self.times {
            write!(out, "t={} {}\r\n", t.start, t.stop)?;
            for r in &t.repeats {
                write!(out, "r={r}\r\n")?;
            }
        }
        if let Some(z) = &self.time_zones {
            write!(out, "z={z}\r\n")?;
        }
        if let Some(k) = &self.key {
            write!(out, "k={k}\r\n")?;
        }
        for a in &self.attributes {
            write!(out, "a={a}\r\n")?;
        }
        for m in &self.media {
            write!(out, "m={} {}", m.media, m.port)?;
            if let Some(n) = m.port_count {
                write!(out, "/{n}")?;
            }
            write!(out, " {}", m.proto)?;
            for f in &m.formats {
                write!(out, " {f}")?;
            }
            out.push_str("\r\n");
            if let Some(i) = &m.title {
                write!(out, "i={i}\r\n")?;
            }
            write_common(out, m.connection.as_ref(), &m.bandwidths)?;
            if let Some(k) = &m.key {
                write!(out, "k={k}\r\n")?;
            }
            for a in &m.attributes {
                write!(out, "a={a}\r\n")?;
            }
        }
        Ok(())
    }
}

/// Serialized with CRLF line ends, in the order RFC 8866 5 gives.
impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::with_capacity(512);
        self.write_to(&mut out)?;
        f.write_str(&out)
    }
}

// ---------------------------------------------------------------------------------------
// Relay rewriting and o= continuity.

/// What the PBX allocated on the leg an SDP is sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayLeg {
    /// The PBX's media address on this leg.
    pub address: IpAddr,
    /// Per m-line, in order: the relay's RTP port (RTCP is on port + 1), or `None` to
    /// disable the stream (port 0). A stream that arrives with port 0 stays at 0.
    pub ports: Vec<Option<u16>>,
    /// Whether the relay accepts RTP and RTCP on one port on this leg. When false,
    /// `a=rtcp-mux` is removed and RTCP uses port + 1.
    pub rtcp_mux: bool,
}

/// Attributes that describe the far end's transport, meaningless once the PBX is the
/// media endpoint.
fn is_transport_attribute(a: &Attribute) -> bool {
    let n = a.name.to_ascii_lowercase();
    n.starts_with("ice-")
        || n == "candidate"
        || n == "remote-candidates"
        || n == "end-of-candidates"
        || n == "bundle-only"
        || (n == "group"
            && a.value.as_deref().is_some_and(|v| {
                v.split_whitespace()
                    .next()
                    .is_some_and(|s| s.eq_ignore_ascii_case("BUNDLE"))
            }))
}

/// The SDP to send on the other leg: every address the PBX's, every enabled stream on its
/// relay port, `a=rtcp` on port + 1 (or gone under rtcp-mux), ICE and BUNDLE removed, the
/// o= line the leg's own. Directions pass through; an RFC 2543 hold (`c=0.0.0.0`) becomes
/// an explicit `a=sendonly` or `a=inactive` on the PBX's address.
pub fn rewrite_for_relay(
    received: &SessionDescription,
    leg: &RelayLeg,
    origin: &mut OriginState,
) -> Result<SessionDescription, SdpError> {
    if leg.ports.len() != received.media.len() {
        return Err(SdpError::RelayCount {
            streams: received.media.len(),
            relays: leg.ports.len(),
        });
    }
    let pbx = Connection::from_ip(leg.address);
    let mut out = received.clone();
    out.connection = Some(pbx.clone());
    out.attributes.retain(|a| !is_transport_attribute(a));
    if out.times.is_empty() {
        out.times.push(Timing {
            start: 0,
            stop: 0,
            repeats: Vec::new(),
        });
    }
    for (index, (m, relay)) in out.media.iter_mut().zip(&leg.ports).enumerate() {
        let legacy_hold = received
            .media_connection(index)
            .is_some_and(Connection::is_null);
        if legacy_hold {
            m.set_direction(Some(received.media_direction(index)));
        }
        if m.connection.is_some() {
            m.connection = Some(pbx.clone());
        }
        m.port_count = None;
        m.port = match relay {
            Some(port) if m.port != 0 => *port,
            _ => 0,
        };
        let rtcp_at = m.attributes.iter().position(|a| a.is("rtcp"));
        let rtcp_with_address = m.rtcp().is_some_and(|r| r.connection.is_some());
        m.attributes
            .retain(|a| !is_transport_attribute(a) && !a.is("rtcp"));
        if !leg.rtcp_mux {
            m.attributes.retain(|a| !a.is("rtcp-mux"));
        }
        if let Some(at) = rtcp_at {
            if m.port != 0 && !m.rtcp_mux() {
                let port = m.port.saturating_add(1);
                let value = if rtcp_with_address {
                    format!("{port} {pbx}")
                } else {
                    port.to_string()
                };
                let at = at.min(m.attributes.len());
                m.attributes.insert(at, Attribute::value("rtcp", value));
            }
        }
    }
    origin.stamp(&mut out);
    Ok(out)
}

/// The o= line of one leg, kept across every SDP the PBX sends on that leg (RFC 3264 8):
/// same username and session id, a version that goes up by one exactly when the content
/// changed. Fields are public so a call can be saved to and restored from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginState {
    pub username: String,
    pub session_id: u64,
    /// The version of the last SDP stamped.
    pub version: u64,
    pub address: IpAddr,
    /// The last SDP stamped, serialized with version 0, to tell a change.
    pub last_content: Option<String>,
}

impl OriginState {
    /// A leg's origin. The caller chooses the session id (random, or from a counter).
    pub fn new(username: impl Into<String>, session_id: u64, address: IpAddr) -> OriginState {
        OriginState {
            username: username.into(),
            session_id,
            version: 1,
            address,
            last_content: None,
        }
    }

    /// The o= line for the current version.
    pub fn origin(&self) -> Origin {
        self.origin_with(self.version)
    }

    fn origin_with(&self, version: u64) -> Origin {
        Origin {
            username: self.username.clone(),
            session_id: self.session_id.to_string(),
            session_version: version,
            nettype: "IN".into(),
            addrtype: addrtype_of(self.address).into(),
            address: self.address.to_string(),
        }
    }

    /// Put this leg's o= line on `sdp`, bumping the version if the rest of it differs
    /// from the last SDP stamped (the first SDP keeps the initial version).
    pub fn stamp(&mut self, sdp: &mut SessionDescription) {
        sdp.origin = self.origin_with(0);
        let content = sdp.to_string();
        match &self.last_content {
            Some(last) if *last == content => {}
            Some(_) => {
                self.version = self.version.wrapping_add(1);
                self.last_content = Some(content);
            }
            None => self.last_content = Some(content),
        }
        sdp.origin.session_version = self.version;
    }
}

// ---------------------------------------------------------------------------------------
// Offer/answer.

/// A codec both sides accepted, with the payload type each side uses for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    pub offer_pt: u8,
    pub answer_pt: u8,
    pub encoding: String,
    pub clock_rate: u32,
    pub channels: Option<u16>,
}

/// The outcome of offer/answer for one m-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedStream {
    pub index: usize,
    pub media: String,
    /// Both sides gave a non-zero port.
    pub enabled: bool,
    /// Media codecs in the answer's order (empty for a disabled or non-RTP stream).
    pub codecs: Vec<Codec>,
    /// RFC 4733 events, if both sides have them at the same clock rate.
    pub telephone_event: Option<Codec>,
    /// Comfort noise, RED, FEC, RTX both sides have.
    pub auxiliary: Vec<Codec>,
    /// The direction the answer took (effective, `c=0.0.0.0` counted).
    pub direction: Direction,
}

/// An answer must have as many m-lines as the offer, with the same media in the same
/// order (RFC 3264 6).
pub fn validate_answer(
    offer: &SessionDescription,
    answer: &SessionDescription,
) -> Result<(), SdpError> {
    if offer.media.len() != answer.media.len() {
        return Err(SdpError::MediaCount {
            offer: offer.media.len(),
            answer: answer.media.len(),
        });
    }
    for (index, (o, a)) in offer.media.iter().zip(&answer.media).enumerate() {
        if !o.media.eq_ignore_ascii_case(&a.media) {
            return Err(SdpError::MediaKind {
                index,
                offer: o.media.clone(),
                answer: a.media.clone(),
            });
        }
    }
    Ok(())
}

/// Per m-line, the codecs the answer chose among those offered: answer formats whose
/// meaning (rtpmap or static type; encoding case-insensitive, clock, channels) the offer
/// also has, whatever their numbers on each side.
pub fn negotiate(
    offer: &SessionDescription,
    answer: &SessionDescription,
) -> Result<Vec<NegotiatedStream>, SdpError> {
    validate_answer(offer, answer)?;
    let mut streams = Vec::with_capacity(answer.media.len());
    for (index, (o, a)) in offer.media.iter().zip(&answer.media).enumerate() {
        let enabled = o.is_enabled() && a.is_enabled();
        let mut s = NegotiatedStream {
            index,
            media: a.media.clone(),
            enabled,
            codecs: Vec::new(),
            telephone_event: None,
            auxiliary: Vec::new(),
            direction: if enabled {
                answer.media_direction(index)
            } else {
                Direction::Inactive
            },
        };
        if enabled && o.is_rtp() && a.is_rtp() {
            let offered = o.codecs();
            // An answer that reuses an offered dynamic number without its own rtpmap
            // means the offered codec (seen from phones that skip rtpmap in answers).
            let answered = a
                .formats
                .iter()
                .filter_map(|f| f.parse::<u8>().ok())
                .filter_map(|pt| a.rtpmap(pt).or_else(|| o.rtpmap(pt)));
            for mine in answered {
                let theirs = offered
                    .iter()
                    .find(|t| t.payload_type == mine.payload_type && t.same_codec(&mine))
                    .or_else(|| offered.iter().find(|t| t.same_codec(&mine)));
                let Some(theirs) = theirs else { continue };
                let codec = Codec {
                    offer_pt: theirs.payload_type,
                    answer_pt: mine.payload_type,
                    encoding: mine.encoding.clone(),
                    clock_rate: mine.clock_rate,
                    channels: mine.channels,
                };
                if mine.is_telephone_event() {
                    if s.telephone_event.is_none() {
                        s.telephone_event = Some(codec);
                    }
                } else if mine.is_auxiliary() {
                    s.auxiliary.push(codec);
                } else {
                    s.codecs.push(codec);
                }
            }
        }
        streams.push(s);
    }
    Ok(streams)
}

/// True when no audio stream came out enabled with a media codec: the call cannot go on
/// without transcoding (the caller answers 488). A call with no audio m-line counts as
/// having no common codec: a PBX call needs audio.
pub fn no_common_codec(streams: &[NegotiatedStream]) -> bool {
    !streams
        .iter()
        .any(|s| s.enabled && s.media.eq_ignore_ascii_case("audio") && !s.codecs.is_empty())
}

fn preference_matches(pref: &str, map: &RtpMap) -> bool {
    let mut parts = pref.trim().split('/');
    let name = parts.next().unwrap_or("");
    if !name.eq_ignore_ascii_case(&map.encoding) {
        return false;
    }
    match parts.next().map(|c| c.trim().parse::<u32>()) {
        Some(Ok(clock)) if clock != map.clock_rate => return false,
        Some(Err(_)) => return false,
        _ => {}
    }
    match parts.next().map(|c| c.trim().parse::<u16>()) {
        Some(Ok(ch)) => ch == map.channels.unwrap_or(1),
        Some(Err(_)) => false,
        None => true,
    }
}

/// The offer to send to the callee from the caller's: the same codecs, those named in
/// `preference` first in preference order, then the others (dynamic ones nobody
/// configured, telephone-event, ...) in the caller's order. Entries are encoding names
/// with optional clock and channels: `"PCMA"`, `"opus/48000/2"`, case-insensitive.
/// Addresses are not touched: pass the result through [`rewrite_for_relay`].
pub fn offer_for_callee<S: AsRef<str>>(
    offer: &SessionDescription,
    preference: &[S],
) -> SessionDescription {
    let mut out = offer.clone();
    for m in out.media.iter_mut().filter(|m| m.is_rtp()) {
        let rank = |f: &String| -> Option<usize> {
            let map = m.rtpmap(f.parse::<u8>().ok()?)?;
            preference
                .iter()
                .position(|p| preference_matches(p.as_ref(), &map))
        };
        let mut known: Vec<(usize, String)> = Vec::new();
        let mut unknown: Vec<String> = Vec::new();
        for f in &m.formats {
            match rank(f) {
                Some(r) => known.push((r, f.clone())),
                None => unknown.push(f.clone()),
            }
        }
        known.sort_by_key(|(r, _)| *r);
        let formats = known.into_iter().map(|(_, f)| f).chain(unknown).collect();
        m.formats = formats;
    }
    out
}

/// An offer puts the other side on hold when every enabled stream is sendonly or
/// inactive, counting `c=0.0.0.0` as the RFC 2543 form.
pub fn is_hold(sdp: &SessionDescription) -> bool {
    let mut any_enabled = false;
    for (index, m) in sdp.media.iter().enumerate() {
        if m.is_enabled() {
            any_enabled = true;
            if sdp.media_direction(index).receives() {
                return false;
            }
        }
    }
    any_enabled
}

/// A new offer takes the call off hold when the previous one was a hold and it is not.
pub fn is_resume(previous: &SessionDescription, offer: &SessionDescription) -> bool {
    is_hold(previous) && !is_hold(offer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    /// Lines joined with CRLF, as a phone sends them.
    fn crlf(lines: &[&str]) -> String {
        let mut s = lines.join("\r\n");
        s.push_str("\r\n");
        s
    }

    fn yealink() -> String {
        crlf(&[
            "v=0",
            "o=- 20045 20045 IN IP4 192.168.1.50",
            "s=SDP data",
            "c=IN IP4 192.168.1.50",
            "t=0 0",
            "m=audio 11796 RTP/AVP 0 8 18 9 101",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:18 G729/8000",
            "a=fmtp:18 annexb=no",
            "a=rtpmap:9 G722/8000",
            "a=fmtp:101 0-15",
            "a=rtpmap:101 telephone-event/8000",
            "a=ptime:20",
            "a=sendrecv",
        ])
    }

    /// Polycom style: session-level a= before m=, static types without rtpmap, LF only,
    /// trailing blanks, a b= line and two t= lines.
    fn polycom() -> String {
        [
            "v=0",
            "o=- 1234567890 1234567890 IN IP4 10.0.0.21  ",
            "s=Polycom IP Phone",
            "c=IN IP4 10.0.0.21",
            "b=AS:80",
            "t=0 0",
            "t=3034423619 3042462419",
            "a=sendrecv",
            "m=audio 2222 RTP/AVP 9 102 0 8 127",
            "a=rtpmap:102 G7221/16000",
            "a=fmtp:102 bitrate=32000",
            "a=rtpmap:127 telephone-event/8000 ",
            "a=ptime:30",
            "a=x-polycom-unknown",
            "",
        ]
        .join("\n")
    }

    fn baresip() -> String {
        crlf(&[
            "v=0",
            "o=- 1640983520 2353106584 IN IP4 192.168.0.10",
            "s=-",
            "c=IN IP4 192.168.0.10",
            "t=0 0",
            "a=tool:baresip 3.10.1",
            "m=audio 10466 RTP/AVP 96 0 8 9 101",
            "b=AS:128",
            "a=rtpmap:96 opus/48000/2",
            "a=fmtp:96 stereo=1;sprop-stereo=1",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:9 G722/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-15",
            "a=rtcp-mux",
            "a=rtcp:10467",
            "a=sendrecv",
            "a=label:1",
            "a=ptime:20",
        ])
    }

    fn webrtc() -> String {
        crlf(&[
            "v=0",
            "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
            "s=-",
            "t=0 0",
            "a=group:BUNDLE 0",
            "a=extmap-allow-mixed",
            "a=ice-lite",
            "a=msid-semantic: WMS stream1",
            "m=audio 54321 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
            "c=IN IP4 203.0.113.7",
            "a=rtcp:9 IN IP4 0.0.0.0",
            "a=candidate:842163049 1 udp 1677729535 203.0.113.7 54321 typ srflx raddr 192.168.1.20 rport 54321 generation 0",
            "a=candidate:1467250027 1 udp 2122260223 192.168.1.20 54321 typ host generation 0",
            "a=ice-ufrag:EsAw",
            "a=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y",
            "a=ice-options:trickle",
            "a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0:3E:FD:34:8E:5E:EA:6F:AF:52:CE:E6:0F",
            "a=setup:actpass",
            "a=mid:0",
            "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
            "a=sendrecv",
            "a=msid:stream1 track1",
            "a=rtcp-mux",
            "a=rtpmap:111 opus/48000/2",
            "a=rtcp-fb:111 transport-cc",
            "a=fmtp:111 minptime=10;useinbandfec=1",
            "a=rtpmap:63 red/48000/2",
            "a=fmtp:63 111/111",
            "a=rtpmap:9 G722/8000",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:13 CN/8000",
            "a=rtpmap:110 telephone-event/48000",
            "a=rtpmap:126 telephone-event/8000",
            "a=ssrc:1001 cname:abcd",
            "a=remote-candidates:1 192.168.1.20 54321",
            "a=end-of-candidates",
        ])
    }

    fn sipp() -> String {
        crlf(&[
            "v=0",
            "o=user1 53655765 2353687637 IN IP4 127.0.0.1",
            "s=-",
            "c=IN IP4 127.0.0.1",
            "t=0 0",
            "m=audio 6000 RTP/AVP 0",
            "a=rtpmap:0 PCMU/8000",
        ])
    }

    fn p(s: &str) -> SessionDescription {
        SessionDescription::parse(s).expect("test SDP parses")
    }

    fn pbx() -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1))
    }

    fn leg(ports: &[Option<u16>]) -> RelayLeg {
        RelayLeg {
            address: pbx(),
            ports: ports.to_vec(),
            rtcp_mux: true,
        }
    }

    fn origin_state() -> OriginState {
        OriginState::new("ringfort", 777, pbx())
    }

    fn line_error(s: &str) -> (usize, String) {
        match SessionDescription::parse(s) {
            Err(SdpError::Line { line, reason }) => (line, reason),
            other => panic!("expected a line error, got {other:?}"),
        }
    }

    // ---- parsing real SDPs --------------------------------------------------------------

    #[test]
    fn yealink_offer_reads_codecs_dtmf_ptime() {
        let sdp = p(&yealink());
        assert_eq!(sdp.origin.session_id, "20045");
        assert_eq!(sdp.origin.session_version, 20045);
        assert_eq!(sdp.session_name, "SDP data");
        let m = &sdp.media[0];
        assert_eq!(
            (m.media.as_str(), m.port, m.proto.as_str()),
            ("audio", 11796, "RTP/AVP")
        );
        assert_eq!(m.formats, ["0", "8", "18", "9", "101"]);
        let names: Vec<_> = m.codecs().into_iter().map(|c| c.encoding).collect();
        assert_eq!(names, ["PCMU", "PCMA", "G729", "G722", "telephone-event"]);
        assert_eq!(m.fmtp(18), Some("annexb=no"));
        assert_eq!(m.fmtp(101), Some("0-15"));
        assert_eq!(m.fmtp(0), None);
        assert_eq!(m.ptime(), Some(20));
        let te = m.telephone_event().expect("telephone-event");
        assert_eq!((te.payload_type, te.clock_rate), (101, 8000));
        assert_eq!(sdp.media_direction(0), Direction::SendRecv);
        assert!(!m.rtcp_mux());
        assert_eq!(m.rtcp(), None);
        assert_eq!(
            sdp.media_connection(0).and_then(Connection::ip),
            Some("192.168.1.50".parse().expect("ip"))
        );
    }

    #[test]
    fn polycom_offer_tolerates_lf_blanks_session_attributes_and_unknowns() {
        let sdp = p(&polycom());
        assert_eq!(sdp.origin.address, "10.0.0.21");
        assert_eq!(sdp.times.len(), 2);
        assert_eq!(
            sdp.bandwidths[0],
            Bandwidth {
                bwtype: "AS".into(),
                bandwidth: 80
            }
        );
        assert_eq!(sdp.direction_attribute(), Some(Direction::SendRecv));
        let m = &sdp.media[0];
        // Static types known without rtpmap; the dynamic G.722.1 from its rtpmap.
        let codecs = m.codecs();
        assert_eq!(codecs[0], static_payload_type(9).expect("G722"));
        assert_eq!(codecs[1].encoding, "G7221");
        assert_eq!(codecs[1].clock_rate, 16000);
        assert_eq!(codecs[2].encoding, "PCMU");
        assert_eq!(codecs[3].encoding, "PCMA");
        assert_eq!(m.telephone_event().map(|t| t.payload_type), Some(127));
        assert!(m.has_attribute("x-polycom-unknown"));
        assert_eq!(m.ptime(), Some(30));
    }

    #[test]
    fn baresip_offer_has_opus_and_rtcp_mux() {
        let sdp = p(&baresip());
        let m = &sdp.media[0];
        let opus = m.rtpmap(96).expect("opus");
        assert_eq!(
            (opus.encoding.as_str(), opus.clock_rate, opus.channels),
            ("opus", 48000, Some(2))
        );
        assert_eq!(m.fmtp(96), Some("stereo=1;sprop-stereo=1"));
        assert!(m.rtcp_mux());
        assert_eq!(
            m.rtcp(),
            Some(Rtcp {
                port: 10467,
                connection: None
            })
        );
        assert_eq!(m.bandwidths[0].bandwidth, 128);
        assert_eq!(
            sdp.attribute("tool").and_then(|a| a.value.as_deref()),
            Some("baresip 3.10.1")
        );
    }

    #[test]
    fn webrtc_offer_parses_with_ice_and_dtls() {
        let sdp = p(&webrtc());
        assert_eq!(sdp.connection, None);
        assert_eq!(sdp.origin.session_id, "4611731400430051336");
        let m = &sdp.media[0];
        assert_eq!(m.proto, "UDP/TLS/RTP/SAVPF");
        assert!(m.is_rtp());
        assert_eq!(m.attribute_values("candidate").count(), 2);
        let rtcp = m.rtcp().expect("rtcp");
        assert_eq!(rtcp.port, 9);
        assert!(rtcp.connection.expect("address").is_null());
        // The leading space of a value is kept as sent.
        assert_eq!(
            sdp.attribute("msid-semantic")
                .and_then(|a| a.value.as_deref()),
            Some(" WMS stream1")
        );
        // c=0.0.0.0 on a=rtcp is not a hold: only c= lines count.
        assert_eq!(sdp.media_direction(0), Direction::SendRecv);
    }

    #[test]
    fn sipp_minimal_sdp() {
        let sdp = p(&sipp());
        assert_eq!(sdp.origin.username, "user1");
        assert_eq!(sdp.origin.session_version, 2353687637);
        assert_eq!(sdp.media.len(), 1);
        assert_eq!(
            sdp.media[0].codecs(),
            vec![static_payload_type(0).expect("PCMU")]
        );
    }

    #[test]
    fn serializes_crlf_in_rfc_order() {
        // Out-of-order session lines (a= and t= before c=, b= after t=) come out in order.
        let text = "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=x\na=recvonly\nt=0 0\nc=IN IP4 1.2.3.4\nb=AS:64\ni=info\nm=audio 4000 RTP/AVP 0\na=ptime:20\nb=TIAS:64000\nc=IN IP4 5.6.7.8\n";
        let out = p(text).to_string();
        assert_eq!(
            out,
            "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=x\r\ni=info\r\nc=IN IP4 1.2.3.4\r\nb=AS:64\r\nt=0 0\r\na=recvonly\r\nm=audio 4000 RTP/AVP 0\r\nc=IN IP4 5.6.7.8\r\nb=TIAS:64000\r\na=ptime:20\r\n"
        );
    }

    #[test]
    fn real_sdps_round_trip() {
        for text in [yealink(), polycom(), baresip(), webrtc(), sipp()] {
            let sdp = p(&text);
            let again = p(&sdp.to_string());
            assert_eq!(again, sdp);
            assert_eq!(again.to_string(), sdp.to_string());
        }
        // CRLF SDPs written in RFC order come back byte for byte.
        for text in [yealink(), baresip(), webrtc(), sipp()] {
            assert_eq!(p(&text).to_string(), text);
        }
    }

    #[test]
    fn parse_bytes_reports_utf8_line() {
        let mut bytes = b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=".to_vec();
        bytes.extend_from_slice(&[0xff, 0xfe]);
        assert_eq!(
            SessionDescription::parse_bytes(&bytes),
            Err(SdpError::Utf8 { line: 3 })
        );
        assert!(SessionDescription::parse_bytes(sipp().as_bytes()).is_ok());
    }

    #[test]
    fn empty_session_name_is_written_as_a_space() {
        let sdp = p("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns= \r\nt=0 0\r\n");
        assert_eq!(sdp.session_name, "");
        assert!(sdp.to_string().contains("\r\ns= \r\n"));
    }

    // ---- malformed input ------------------------------------------------------------------

    #[test]
    fn malformed_input_names_the_line() {
        let base = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\n";
        let cases: &[(&str, usize, &str)] = &[
            (
                "o=- 1 1 IN IP4 1.2.3.4\r\nv=0\r\n",
                1,
                "first line must be v=0",
            ),
            ("v=1\r\n", 1, "unsupported SDP version"),
            ("v=0\r\no=- 1 IN IP4 1.2.3.4\r\n", 2, "o= needs 6 fields"),
            ("v=0\r\no=- 1 x IN IP4 1.2.3.4\r\n", 2, "session version"),
            ("v=0\r\nhello world\r\n", 2, "expected <letter>=<value>"),
            (
                "v=0\r\n o=- 1 1 IN IP4 1.2.3.4\r\n",
                2,
                "expected <letter>=<value>",
            ),
            ("v=0\r\nX=1\r\n", 2, "expected <letter>=<value>"),
            ("v=0\r\ny=1\r\n", 2, "unknown line type y="),
            (
                "v=0\r\no=- 1 1 IN IP4 a\r\no=- 1 1 IN IP4 a\r\n",
                3,
                "more than one o=",
            ),
        ];
        for (text, line, reason) in cases {
            let (l, r) = line_error(text);
            assert_eq!(l, *line, "{text:?}: {r}");
            assert!(r.contains(reason), "{text:?}: {r}");
        }
        let tail: &[(&str, usize, &str)] = &[
            ("c=IN IP4\r\n", 5, "c= needs"),
            ("b=AS\r\n", 5, "b= needs"),
            ("b=AS:lots\r\n", 5, "b= needs"),
            ("t=0\r\n", 5, "t= needs"),
            ("m=audio 70000 RTP/AVP 0\r\n", 5, "not a number 0-65535"),
            ("m=audio 4000 RTP/AVP\r\n", 5, "lists no formats"),
            ("m=audio 4000/x RTP/AVP 0\r\n", 5, "port count"),
            ("m=audio\r\n", 5, "m= needs"),
            (
                "m=audio 4000 RTP/AVP 0\r\nc=IN IP4 1.1.1.1\r\nc=IN IP4 2.2.2.2\r\n",
                7,
                "more than one c=",
            ),
            (
                "m=audio 4000 RTP/AVP 0\r\nt=0 0\r\n",
                6,
                "not allowed in a media section",
            ),
            (
                "m=audio 4000 RTP/AVP 0\r\no=- 1 1 IN IP4 a\r\n",
                6,
                "inside a media section",
            ),
            ("a=:x\r\n", 5, "attribute name"),
            ("a=bad name\r\n", 5, "attribute name"),
        ];
        for (extra, line, reason) in tail {
            let text = format!("{base}{extra}");
            let (l, r) = line_error(&text);
            assert_eq!(l, *line, "{extra:?}: {r}");
            assert!(r.contains(reason), "{extra:?}: {r}");
        }
        // r= before t= (no t= yet).
        let (l, r) = line_error("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nr=7d 1h 0 25h\r\n");
        assert_eq!((l, r.contains("before any t=")), (4, true));
        // The reason shows up in Display with the line number.
        let e = SessionDescription::parse("v=0\r\nnonsense\r\n").expect_err("garbage");
        assert!(e.to_string().starts_with("SDP line 2: "), "{e}");
    }

    #[test]
    fn missing_mandatory_lines() {
        assert_eq!(SessionDescription::parse(""), Err(SdpError::Empty));
        assert_eq!(SessionDescription::parse("\r\n\r\n"), Err(SdpError::Empty));
        assert_eq!(
            SessionDescription::parse("v=0\r\ns=-\r\n"),
            Err(SdpError::Missing("o="))
        );
        assert_eq!(
            SessionDescription::parse("v=0\r\no=- 1 1 IN IP4 a\r\n"),
            Err(SdpError::Missing("s="))
        );
        // A missing t= is tolerated; a disabled stream may list no formats.
        let sdp = p("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nm=video 0 RTP/AVP\r\n");
        assert!(sdp.times.is_empty());
        assert!(sdp.media[0].formats.is_empty());
    }

    // ---- relay rewriting ------------------------------------------------------------------

    /// Every address in the text is the PBX's, and no ICE line is left.
    fn assert_all_pbx(sdp: &SessionDescription) {
        let text = sdp.to_string();
        for line in text.lines() {
            if line.starts_with("c=") || line.starts_with("o=") {
                assert!(line.ends_with("IN IP4 198.51.100.1"), "{line}");
            }
            for gone in [
                "a=ice-",
                "a=candidate",
                "a=remote-candidates",
                "a=end-of-candidates",
                "BUNDLE",
            ] {
                assert!(
                    !line.starts_with(gone) && !line.contains("BUNDLE"),
                    "{line} ({gone})"
                );
            }
        }
    }

    #[test]
    fn rewrite_sets_every_address_and_port() {
        let mut os = origin_state();
        let received = p(&yealink());
        let out = rewrite_for_relay(&received, &leg(&[Some(30000)]), &mut os).expect("rewrite");
        assert_all_pbx(&out);
        assert_eq!(out.media[0].port, 30000);
        assert_eq!(out.origin.username, "ringfort");
        assert_eq!(out.origin.session_id, "777");
        assert_eq!(out.origin.session_version, 1);
        // Codecs, fmtp, ptime, direction unchanged.
        assert_eq!(out.media[0].formats, received.media[0].formats);
        assert_eq!(out.media[0].fmtp(101), Some("0-15"));
        assert_eq!(out.media[0].ptime(), Some(20));
        assert_eq!(out.media_direction(0), Direction::SendRecv);
        assert!(!out.to_string().contains("192.168.1.50"));
    }

    #[test]
    fn rewrite_strips_ice_and_bundle_and_sets_media_level_c() {
        let mut os = origin_state();
        let out = rewrite_for_relay(&p(&webrtc()), &leg(&[Some(30010)]), &mut os).expect("rewrite");
        assert_all_pbx(&out);
        let text = out.to_string();
        assert!(
            !text.contains("203.0.113.7") && !text.contains("192.168.1.20"),
            "{text}"
        );
        assert!(out.attribute("ice-lite").is_none());
        assert!(out.attribute("group").is_none());
        assert!(out.attribute("extmap-allow-mixed").is_some());
        let m = &out.media[0];
        assert_eq!(m.connection, Some(Connection::from_ip(pbx())));
        assert_eq!(out.connection, Some(Connection::from_ip(pbx())));
        // rtcp-mux kept, so a=rtcp is dropped; DTLS attributes pass through.
        assert!(m.rtcp_mux());
        assert_eq!(m.rtcp(), None);
        assert!(m.has_attribute("fingerprint") && m.has_attribute("setup"));
        assert!(m.has_attribute("mid"));
    }

    #[test]
    fn rewrite_moves_rtcp_to_port_plus_one_without_mux() {
        let mut os = origin_state();
        let mut l = leg(&[Some(30020)]);
        l.rtcp_mux = false;
        let out = rewrite_for_relay(&p(&baresip()), &l, &mut os).expect("rewrite");
        let m = &out.media[0];
        assert!(!m.rtcp_mux());
        assert_eq!(
            m.rtcp(),
            Some(Rtcp {
                port: 30021,
                connection: None
            })
        );
        // With an address in a=rtcp, the address is the PBX's too.
        let mut os = origin_state();
        let text = sipp().replace("a=rtpmap:0 PCMU/8000", "a=rtcp:6001 IN IP4 127.0.0.1");
        let out = rewrite_for_relay(&p(&text), &l, &mut os).expect("rewrite");
        assert_eq!(
            out.media[0].rtcp(),
            Some(Rtcp {
                port: 30021,
                connection: Some(Connection::from_ip(pbx()))
            })
        );
        assert!(!out.to_string().contains("127.0.0.1"));
    }

    #[test]
    fn rewrite_keeps_port_zero_and_disables_unrelayed_streams() {
        let text = crlf(&[
            "v=0",
            "o=- 1 1 IN IP4 10.0.0.5",
            "s=-",
            "c=IN IP4 10.0.0.5",
            "t=0 0",
            "m=audio 4000 RTP/AVP 0",
            "m=video 0 RTP/AVP 96",
            "a=rtpmap:96 H264/90000",
            "m=video 4002 RTP/AVP 97",
            "a=rtpmap:97 VP8/90000",
        ]);
        let mut os = origin_state();
        let out = rewrite_for_relay(&p(&text), &leg(&[Some(30000), Some(30002), None]), &mut os)
            .expect("rewrite");
        let ports: Vec<u16> = out.media.iter().map(|m| m.port).collect();
        assert_eq!(ports, [30000, 0, 0]);
        assert_all_pbx(&out);
        assert_eq!(
            rewrite_for_relay(&p(&text), &leg(&[Some(1)]), &mut os),
            Err(SdpError::RelayCount {
                streams: 3,
                relays: 1
            })
        );
    }

    #[test]
    fn origin_version_increments_only_on_change() {
        let mut os = origin_state();
        let offer = p(&yealink());
        let l = leg(&[Some(30000)]);
        let v1 = rewrite_for_relay(&offer, &l, &mut os).expect("rewrite");
        // The same content again (a session refresh, or the phone bumping its own version
        // only): same version.
        let mut refreshed = offer.clone();
        refreshed.origin.session_version += 5;
        let v1b = rewrite_for_relay(&refreshed, &l, &mut os).expect("rewrite");
        assert_eq!(v1b.origin.session_version, 1);
        assert_eq!(v1b, v1);
        // A hold changes the content: version 2, then the same hold again stays 2.
        let hold = p(&yealink().replace("a=sendrecv", "a=sendonly"));
        let v2 = rewrite_for_relay(&hold, &l, &mut os).expect("rewrite");
        assert_eq!(v2.origin.session_version, 2);
        let v2b = rewrite_for_relay(&hold, &l, &mut os).expect("rewrite");
        assert_eq!(v2b.origin.session_version, 2);
        // Resume: 3. A new relay port: 4.
        let v3 = rewrite_for_relay(&offer, &l, &mut os).expect("rewrite");
        assert_eq!(v3.origin.session_version, 3);
        let v4 = rewrite_for_relay(&offer, &leg(&[Some(30100)]), &mut os).expect("rewrite");
        assert_eq!(v4.origin.session_version, 4);
        // The other leg keeps its own continuity.
        let mut other = OriginState::new("ringfort", 888, pbx());
        let o1 = rewrite_for_relay(&hold, &l, &mut other).expect("rewrite");
        assert_eq!(
            (o1.origin.session_id.as_str(), o1.origin.session_version),
            ("888", 1)
        );
        assert_eq!(os.origin().session_version, 4);
    }

    #[test]
    fn rewrite_passes_directions_and_maps_legacy_hold() {
        let l = leg(&[Some(30000)]);
        for d in ["sendonly", "recvonly", "inactive", "sendrecv"] {
            let mut os = origin_state();
            let out = rewrite_for_relay(
                &p(&yealink().replace("a=sendrecv", &format!("a={d}"))),
                &l,
                &mut os,
            )
            .expect("rewrite");
            assert_eq!(
                out.media[0].direction_attribute().map(Direction::as_str),
                Some(d)
            );
        }
        // c=0.0.0.0 with no direction: sendonly on the PBX address.
        let legacy = sipp().replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0");
        let mut os = origin_state();
        let out = rewrite_for_relay(&p(&legacy), &l, &mut os).expect("rewrite");
        assert_eq!(
            out.media[0].direction_attribute(),
            Some(Direction::SendOnly)
        );
        assert_eq!(out.connection, Some(Connection::from_ip(pbx())));
        assert!(!out.to_string().contains("0.0.0.0"));
        // c=0.0.0.0 with a=recvonly (or inactive) at media level: inactive.
        let legacy_recv = format!("{legacy}a=recvonly\r\n");
        let out = rewrite_for_relay(&p(&legacy_recv), &l, &mut os).expect("rewrite");
        assert_eq!(
            out.media[0].direction_attribute(),
            Some(Direction::Inactive)
        );
        assert_eq!(out.media[0].attribute_values("recvonly").count(), 0);
        // Session-level direction passes through as it is.
        let session_level = p(&polycom().replace("a=sendrecv", "a=inactive"));
        let out = rewrite_for_relay(&session_level, &l, &mut os).expect("rewrite");
        assert_eq!(out.direction_attribute(), Some(Direction::Inactive));
        assert_eq!(out.media_direction(0), Direction::Inactive);
    }

    // ---- offer/answer ------------------------------------------------------------------------

    fn answer(formats: &str, rtpmaps: &[&str]) -> SessionDescription {
        let mut lines = vec![
            "v=0".to_string(),
            "o=- 9 9 IN IP4 10.9.9.9".into(),
            "s=-".into(),
            "c=IN IP4 10.9.9.9".into(),
            "t=0 0".into(),
            format!("m=audio 5000 RTP/AVP {formats}"),
        ];
        lines.extend(rtpmaps.iter().map(|r| format!("a=rtpmap:{r}")));
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        p(&crlf(&refs))
    }

    #[test]
    fn intersection_maps_dynamic_types_with_different_numbers() {
        let offer = p(&baresip());
        // The callee calls opus 109 and events 100, answers PCMA too (static, no rtpmap),
        // and one codec that was never offered.
        let ans = answer(
            "109 8 18 100",
            &["109 OPUS/48000/2", "100 telephone-event/8000"],
        );
        let s = negotiate(&offer, &ans).expect("negotiate");
        assert_eq!(s.len(), 1);
        assert!(s[0].enabled);
        let pairs: Vec<(u8, u8, &str)> = s[0]
            .codecs
            .iter()
            .map(|c| (c.offer_pt, c.answer_pt, c.encoding.as_str()))
            .collect();
        assert_eq!(pairs, [(96, 109, "OPUS"), (8, 8, "PCMA")]);
        let te = s[0].telephone_event.as_ref().expect("events");
        assert_eq!((te.offer_pt, te.answer_pt), (101, 100));
        assert!(!no_common_codec(&s));
        assert_eq!(s[0].direction, Direction::SendRecv);
    }

    #[test]
    fn intersection_needs_matching_clock_and_channels() {
        let offer = p(&baresip());
        // opus at another clock, G722 declared at 16000 (wrong), mono opus: none match.
        let ans = answer(
            "96 9 97",
            &["96 opus/16000/2", "9 G722/16000", "97 opus/48000"],
        );
        let s = negotiate(&offer, &ans).expect("negotiate");
        assert!(s[0].codecs.is_empty());
        assert!(no_common_codec(&s));
        // telephone-event alone is not a codec; nor is CN.
        let webrtc = p(&webrtc());
        let ans = answer("126 13", &["126 telephone-event/8000"]);
        let s = negotiate(&webrtc, &ans).expect("negotiate");
        assert!(s[0].codecs.is_empty());
        assert_eq!(s[0].telephone_event.as_ref().map(|t| t.offer_pt), Some(126));
        assert_eq!(s[0].auxiliary.len(), 1);
        assert!(no_common_codec(&s));
    }

    #[test]
    fn answer_without_rtpmap_for_an_offered_dynamic_type_means_the_offered_codec() {
        let s = negotiate(&p(&baresip()), &answer("96 101", &[])).expect("negotiate");
        assert_eq!(s[0].codecs.len(), 1);
        assert_eq!(s[0].codecs[0].encoding, "opus");
        assert_eq!(
            s[0].telephone_event.as_ref().map(|t| t.answer_pt),
            Some(101)
        );
        // A dynamic number nobody named is no codec.
        let s = negotiate(&p(&sipp()), &answer("96", &[])).expect("negotiate");
        assert!(no_common_codec(&s));
    }

    #[test]
    fn telephone_event_only_if_both_have_it() {
        let ans = answer("0 101", &["101 telephone-event/8000"]);
        let s = negotiate(&p(&sipp()), &ans).expect("negotiate");
        assert_eq!(s[0].codecs.len(), 1);
        assert_eq!(s[0].telephone_event, None);
        let s = negotiate(&p(&yealink()), &answer("0", &[])).expect("negotiate");
        assert_eq!(s[0].telephone_event, None);
    }

    #[test]
    fn no_common_codec_when_audio_is_rejected_or_disjoint() {
        let offer = p(&yealink());
        let mut rejected = answer("0", &[]);
        rejected.media[0].port = 0;
        let s = negotiate(&offer, &rejected).expect("negotiate");
        assert!(!s[0].enabled && s[0].codecs.is_empty());
        assert_eq!(s[0].direction, Direction::Inactive);
        assert!(no_common_codec(&s));
        let s = negotiate(&offer, &answer("3", &[])).expect("negotiate");
        assert!(no_common_codec(&s));

        // Audio disabled in the offer, video common: still no audio, so 488.
        let two = crlf(&[
            "v=0",
            "o=- 1 1 IN IP4 10.0.0.5",
            "s=-",
            "c=IN IP4 10.0.0.5",
            "t=0 0",
            "m=audio 0 RTP/AVP 0",
            "m=video 4002 RTP/AVP 97",
            "a=rtpmap:97 VP8/90000",
        ]);
        let both = two.replace("m=audio 0", "m=audio 4000");
        let s = negotiate(&p(&two), &p(&both)).expect("negotiate");
        assert!(!s[0].enabled);
        assert_eq!(s[1].codecs.len(), 1);
        assert!(no_common_codec(&s));
        let s = negotiate(&p(&both), &p(&both)).expect("negotiate");
        assert!(!no_common_codec(&s));
    }

    #[test]
    fn answer_must_mirror_the_offer_m_lines() {
        let offer = p(&yealink());
        let mut ans = answer("0", &[]);
        ans.media.push(MediaDescription::new(
            "video",
            0,
            "RTP/AVP",
            vec!["96".into()],
        ));
        assert_eq!(
            negotiate(&offer, &ans),
            Err(SdpError::MediaCount {
                offer: 1,
                answer: 2
            })
        );
        let mut ans = answer("0", &[]);
        ans.media[0].media = "video".into();
        assert_eq!(
            validate_answer(&offer, &ans),
            Err(SdpError::MediaKind {
                index: 0,
                offer: "audio".into(),
                answer: "video".into()
            })
        );
        assert_eq!(validate_answer(&offer, &answer("0", &[])), Ok(()));
    }

    #[test]
    fn offer_for_callee_orders_by_preference_and_keeps_the_rest() {
        let offer = p(&baresip()); // 96 opus, 0, 8, 9, 101
        let out = offer_for_callee(&offer, &["g722", "PCMA/8000", "opus/48000/2"]);
        assert_eq!(out.media[0].formats, ["9", "8", "96", "0", "101"]);
        // Attributes and everything else untouched.
        assert_eq!(out.media[0].attributes, offer.media[0].attributes);
        // A dynamic type nobody configured stays after the known ones, in offer order.
        let poly = p(&polycom()); // 9 102(G7221) 0 8 127(events)
        let out = offer_for_callee(&poly, &["PCMU", "PCMA"]);
        assert_eq!(out.media[0].formats, ["0", "8", "9", "102", "127"]);
        // A wrong clock in the preference does not match.
        let out = offer_for_callee(&poly, &["G7221/8000", "G722"]);
        assert_eq!(out.media[0].formats, ["9", "102", "0", "8", "127"]);
        // No preference: unchanged.
        let none: [&str; 0] = [];
        assert_eq!(offer_for_callee(&poly, &none), poly);
    }

    // ---- hold / resume ---------------------------------------------------------------------

    #[test]
    fn hold_in_every_form() {
        let active = p(&yealink());
        assert!(!is_hold(&active));
        for d in ["sendonly", "inactive"] {
            let held = p(&yealink().replace("a=sendrecv", &format!("a={d}")));
            assert!(is_hold(&held), "{d}");
            assert!(is_resume(&held, &active), "{d}");
            assert!(!is_resume(&active, &held));
        }
        // recvonly is not a hold of the other side.
        assert!(!is_hold(&p(&yealink().replace("a=sendrecv", "a=recvonly"))));
        // Session-level direction, media-level override.
        let session_hold = p(&polycom().replace("a=sendrecv", "a=sendonly"));
        assert!(is_hold(&session_hold));
        let overridden = p(&format!(
            "{}a=sendrecv\n",
            polycom().replace("a=sendrecv", "a=sendonly")
        ));
        assert!(!is_hold(&overridden));
        // RFC 2543: c=0.0.0.0 at session level or media level.
        let legacy = p(&sipp().replace("127.0.0.1\r\nt=", "0.0.0.0\r\nt="));
        assert_eq!(legacy.media_direction(0), Direction::SendOnly);
        assert!(is_hold(&legacy));
        let media_level = p(&format!("{}c=IN IP4 0.0.0.0\r\n", sipp()));
        assert!(is_hold(&media_level));
        assert!(is_resume(&media_level, &p(&sipp())));
        // Only enabled streams count; nothing enabled is no hold.
        let mut off = p(&yealink().replace("a=sendrecv", "a=sendonly"));
        off.media[0].port = 0;
        assert!(!is_hold(&off));
    }

    #[test]
    fn direction_helpers() {
        assert_eq!(Direction::SendOnly.reversed(), Direction::RecvOnly);
        assert_eq!(Direction::Inactive.reversed(), Direction::Inactive);
        assert_eq!(Direction::RecvOnly.without_receive(), Direction::Inactive);
        assert_eq!(Direction::SendRecv.without_receive(), Direction::SendOnly);
        assert_eq!(
            Direction::from_attribute("SENDONLY"),
            Some(Direction::SendOnly)
        );
        let mut m = p(&yealink()).media.remove(0);
        m.set_direction(Some(Direction::Inactive));
        assert_eq!(m.direction_attribute(), Some(Direction::Inactive));
        assert_eq!(m.attributes.iter().filter(|a| is_direction(a)).count(), 1);
        m.set_direction(None);
        assert_eq!(m.direction_attribute(), None);
    }

    // ---- properties ---------------------------------------------------------------------------

    fn token() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_.+-]{1,8}"
    }

    /// Free text as it survives the parser: no line ends, no trailing blanks.
    fn text() -> impl Strategy<Value = String> {
        "([!-~]([ -~]{0,12}[!-~])?)?"
    }

    fn non_empty_text() -> impl Strategy<Value = String> {
        "[!-~]([ -~]{0,12}[!-~])?"
    }

    fn connection() -> impl Strategy<Value = Connection> {
        (token(), token(), "[!-~]{1,15}").prop_map(|(nettype, addrtype, address)| Connection {
            nettype,
            addrtype,
            address,
        })
    }

    fn bandwidths() -> impl Strategy<Value = Vec<Bandwidth>> {
        prop::collection::vec(
            (token(), any::<u64>()).prop_map(|(bwtype, bandwidth)| Bandwidth { bwtype, bandwidth }),
            0..3,
        )
    }

    fn attributes() -> impl Strategy<Value = Vec<Attribute>> {
        prop::collection::vec(
            (token(), prop::option::of(text())).prop_map(|(name, value)| Attribute { name, value }),
            0..5,
        )
    }

    fn media() -> impl Strategy<Value = MediaDescription> {
        (
            (
                token(),
                any::<u16>(),
                prop::option::of(any::<u16>()),
                "[A-Z]{1,4}(/[A-Z]{1,5}){0,2}",
            ),
            prop::collection::vec("[!-~]{1,4}", 1..5),
            (
                prop::option::of(text()),
                prop::option::of(connection()),
                bandwidths(),
            ),
            (prop::option::of(non_empty_text()), attributes()),
        )
            .prop_map(
                |(
                    (media, port, port_count, proto),
                    formats,
                    (title, connection, bandwidths),
                    (key, attributes),
                )| {
                    MediaDescription {
                        media,
                        port,
                        port_count,
                        proto,
                        formats,
                        title,
                        connection,
                        bandwidths,
                        key,
                        attributes,
                    }
                },
            )
    }

    fn session() -> impl Strategy<Value = SessionDescription> {
        let origin = (
            token(),
            "[0-9]{1,20}",
            any::<u64>(),
            token(),
            token(),
            "[!-~]{1,15}",
        )
            .prop_map(
                |(username, session_id, session_version, nettype, addrtype, address)| Origin {
                    username,
                    session_id,
                    session_version,
                    nettype,
                    addrtype,
                    address,
                },
            );
        let timing = (
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(non_empty_text(), 0..2),
        )
            .prop_map(|(start, stop, repeats)| Timing {
                start,
                stop,
                repeats,
            });
        (
            (
                origin,
                text(),
                prop::option::of(text()),
                prop::option::of(text()),
            ),
            (
                prop::collection::vec(non_empty_text(), 0..2),
                prop::collection::vec(non_empty_text(), 0..2),
            ),
            (
                prop::option::of(connection()),
                bandwidths(),
                prop::collection::vec(timing, 0..3),
            ),
            (
                prop::option::of(non_empty_text()),
                prop::option::of(text()),
                attributes(),
            ),
            prop::collection::vec(media(), 0..4),
        )
            .prop_map(
                |(
                    (origin, session_name, session_info, uri),
                    (emails, phones),
                    (connection, bandwidths, times),
                    (time_zones, key, attributes),
                    media,
                )| SessionDescription {
                    version: 0,
                    origin,
                    session_name,
                    session_info,
                    uri,
                    emails,
                    phones,
                    connection,
                    bandwidths,
                    times,
                    time_zones,
                    key,
                    attributes,
                    media,
                },
            )
    }

    proptest! {
        #[test]
        fn round_trip(sdp in session()) {
            let text = sdp.to_string();
            let back = SessionDescription::parse(&text);
            prop_assert_eq!(back.as_ref(), Ok(&sdp), "{}", text);
        }

        #[test]
        fn garbage_never_panics(s in "[ -~\r\n]{0,200}") {
            let _ = SessionDescription::parse(&s);
        }

        #[test]
        fn mutated_phone_sdps_never_panic(cut in 0usize..900, byte in any::<u8>(), which in 0usize..5) {
            let texts = [yealink(), polycom(), baresip(), webrtc(), sipp()];
            let mut bytes = texts[which].clone().into_bytes();
            let at = cut % (bytes.len() + 1);
            bytes.insert(at, byte);
            if let Ok(sdp) = SessionDescription::parse_bytes(&bytes) {
                // What parses serializes to something that parses to the same.
                prop_assert_eq!(SessionDescription::parse(&sdp.to_string()), Ok(sdp.clone()));
                let mut os = origin_state();
                let ports = vec![Some(40000); sdp.media.len()];
                let _ = rewrite_for_relay(&sdp, &leg(&ports), &mut os);
                let _ = negotiate(&sdp, &sdp);
                let _ = offer_for_callee(&sdp, &["PCMU"]);
                let _ = is_hold(&sdp);
            }
        }
    }
}
