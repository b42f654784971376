//! The SIP message model: parse, serialize, typed access to the headers the stack relies
//! on, and Content-Length framing for stream transports.
//!
//! Owns the wire format of SIP messages. Must not do I/O or know about transactions,
//! dialogs or registrations.
//!
//! Why our own parser and not `rsip`: rsip's `Method` is a closed enum matched
//! case-insensitively, so extension methods (RFC 3261 asks for 501, RFC 4475 3.1.1.2 has
//! one) cannot even be parsed, and its lazy string headers leave the checks RFC 4475 needs
//! (Content-Length, CSeq, Via, escaped URIs) to us anyway. The model here keeps header
//! values as text in wire order and parses the few headers the stack needs on demand.

use std::fmt::{self, Write as _};

use bytes::{Bytes, BytesMut};
use thiserror::Error;

/// Why bytes are not a SIP message we accept.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("message has no end of headers")]
    Incomplete,
    #[error("bad start line: {0}")]
    StartLine(String),
    #[error("unsupported SIP version {0}")]
    Version(String),
    #[error("bad header line: {0}")]
    HeaderLine(String),
    #[error("header {name}: {reason}")]
    Header { name: String, reason: String },
    #[error("missing mandatory header {0}")]
    Missing(&'static str),
    #[error("body is shorter than Content-Length ({declared} declared, {actual} present)")]
    BodyTooShort { declared: usize, actual: usize },
    #[error("message is not valid UTF-8 in its headers")]
    Utf8,
    #[error("CSeq method {cseq} does not match request method {method}")]
    CSeqMismatch { cseq: String, method: String },
    #[error("message exceeds {0} bytes")]
    TooLarge(usize),
}

impl ParseError {
    /// The status code a server answers with when it can form a response at all.
    pub fn status(&self) -> u16 {
        match self {
            ParseError::Version(_) => 505,
            _ => 400,
        }
    }
}

/// A SIP request method. Methods are case-sensitive (RFC 3261 7.1); unknown ones are kept.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Register,
    Options,
    Info,
    Update,
    Prack,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    Other(String),
}

impl Method {
    pub fn parse(s: &str) -> Option<Method> {
        if s.is_empty() || !s.bytes().all(is_token_char) {
            return None;
        }
        Some(match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "REGISTER" => Method::Register,
            "OPTIONS" => Method::Options,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            other => Method::Other(other.to_owned()),
        })
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// RFC 3261 `token` characters.
pub fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

/// Header names the stack reads, in canonical spelling; everything else is `Other`.
#[derive(Debug, Clone, Eq)]
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    Contact,
    MaxForwards,
    ContentLength,
    ContentType,
    Expires,
    MinExpires,
    Authorization,
    ProxyAuthorization,
    WwwAuthenticate,
    ProxyAuthenticate,
    AuthenticationInfo,
    Path,
    Route,
    RecordRoute,
    Supported,
    Require,
    ProxyRequire,
    Unsupported,
    Allow,
    UserAgent,
    Server,
    Date,
    Event,
    Other(String),
}

impl HeaderName {
    /// Resolves a wire name, including RFC 3261 7.3.3 compact forms.
    pub fn parse(name: &str) -> HeaderName {
        let known = [
            HeaderName::Via,
            HeaderName::From,
            HeaderName::To,
            HeaderName::CallId,
            HeaderName::CSeq,
            HeaderName::Contact,
            HeaderName::MaxForwards,
            HeaderName::ContentLength,
            HeaderName::ContentType,
            HeaderName::Expires,
            HeaderName::MinExpires,
            HeaderName::Authorization,
            HeaderName::ProxyAuthorization,
            HeaderName::WwwAuthenticate,
            HeaderName::ProxyAuthenticate,
            HeaderName::AuthenticationInfo,
            HeaderName::Path,
            HeaderName::Route,
            HeaderName::RecordRoute,
            HeaderName::Supported,
            HeaderName::Require,
            HeaderName::ProxyRequire,
            HeaderName::Unsupported,
            HeaderName::Allow,
            HeaderName::UserAgent,
            HeaderName::Server,
            HeaderName::Date,
            HeaderName::Event,
        ];
        if name.len() == 1 {
            let compact = match name.as_bytes()[0].to_ascii_lowercase() {
                b'v' => Some(HeaderName::Via),
                b'f' => Some(HeaderName::From),
                b't' => Some(HeaderName::To),
                b'i' => Some(HeaderName::CallId),
                b'm' => Some(HeaderName::Contact),
                b'l' => Some(HeaderName::ContentLength),
                b'c' => Some(HeaderName::ContentType),
                b'k' => Some(HeaderName::Supported),
                b'o' => Some(HeaderName::Event),
                _ => None,
            };
            if let Some(h) = compact {
                return h;
            }
        }
        known
            .into_iter()
            .find(|h| h.as_str().eq_ignore_ascii_case(name))
            .unwrap_or_else(|| HeaderName::Other(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        match self {
            HeaderName::Via => "Via",
            HeaderName::From => "From",
            HeaderName::To => "To",
            HeaderName::CallId => "Call-ID",
            HeaderName::CSeq => "CSeq",
            HeaderName::Contact => "Contact",
            HeaderName::MaxForwards => "Max-Forwards",
            HeaderName::ContentLength => "Content-Length",
            HeaderName::ContentType => "Content-Type",
            HeaderName::Expires => "Expires",
            HeaderName::MinExpires => "Min-Expires",
            HeaderName::Authorization => "Authorization",
            HeaderName::ProxyAuthorization => "Proxy-Authorization",
            HeaderName::WwwAuthenticate => "WWW-Authenticate",
            HeaderName::ProxyAuthenticate => "Proxy-Authenticate",
            HeaderName::AuthenticationInfo => "Authentication-Info",
            HeaderName::Path => "Path",
            HeaderName::Route => "Route",
            HeaderName::RecordRoute => "Record-Route",
            HeaderName::Supported => "Supported",
            HeaderName::Require => "Require",
            HeaderName::ProxyRequire => "Proxy-Require",
            HeaderName::Unsupported => "Unsupported",
            HeaderName::Allow => "Allow",
            HeaderName::UserAgent => "User-Agent",
            HeaderName::Server => "Server",
            HeaderName::Date => "Date",
            HeaderName::Event => "Event",
            HeaderName::Other(s) => s,
        }
    }

    /// Headers whose values are comma-separated lists (RFC 3261 7.3.1), so several
    /// header lines and one line with commas mean the same.
    pub fn is_list(&self) -> bool {
        matches!(
            self,
            HeaderName::Via
                | HeaderName::Contact
                | HeaderName::Path
                | HeaderName::Route
                | HeaderName::RecordRoute
                | HeaderName::Supported
                | HeaderName::Require
                | HeaderName::ProxyRequire
                | HeaderName::Unsupported
                | HeaderName::Allow
        )
    }
}

impl PartialEq for HeaderName {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (HeaderName::Other(a), HeaderName::Other(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: HeaderName,
    pub value: String,
}

/// Headers in wire order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<Header>);

impl Headers {
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    pub fn get(&self, name: &HeaderName) -> Option<&str> {
        self.0
            .iter()
            .find(|h| &h.name == name)
            .map(|h| h.value.as_str())
    }

    pub fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |h| &h.name == name)
            .map(|h| h.value.as_str())
    }

    /// Every element of a list header across all its lines, split at top-level commas.
    pub fn list<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a str> + 'a {
        self.get_all(name).flat_map(split_list)
    }

    pub fn count(&self, name: &HeaderName) -> usize {
        self.0.iter().filter(|h| &h.name == name).count()
    }

    pub fn push(&mut self, name: HeaderName, value: impl Into<String>) {
        self.0.push(Header {
            name,
            value: value.into(),
        });
    }

    pub fn remove(&mut self, name: &HeaderName) {
        self.0.retain(|h| &h.name != name);
    }

    /// Replaces every line of `name` with one line, at the place of the first.
    pub fn set(&mut self, name: HeaderName, value: impl Into<String>) {
        let value = value.into();
        match self.0.iter().position(|h| h.name == name) {
            Some(i) => {
                self.0[i].value = value;
                let mut seen = 0;
                self.0.retain(|h| {
                    if h.name == name {
                        seen += 1;
                        seen == 1
                    } else {
                        true
                    }
                });
            }
            None => self.push(name, value),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.0.iter()
    }
}

/// Splits a header value at commas that are outside quotes and angle brackets.
pub fn split_list(value: &str) -> impl Iterator<Item = &str> {
    let bytes = value.as_bytes();
    let mut parts = Vec::new();
    let (mut start, mut in_quotes, mut in_angle, mut escaped) = (0, false, false, false);
    for (i, &b) in bytes.iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if in_quotes => escaped = true,
            b'"' => in_quotes = !in_quotes,
            b'<' if !in_quotes => in_angle = true,
            b'>' if !in_quotes => in_angle = false,
            b',' if !in_quotes && !in_angle => {
                parts.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(value[start..].trim());
    parts.into_iter().filter(|p| !p.is_empty())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The Request-URI as received; parse with [`Uri::parse`].
    pub uri: String,
    pub headers: Headers,
    pub body: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipMessage {
    Request(Request),
    Response(Response),
}

impl SipMessage {
    pub fn headers(&self) -> &Headers {
        match self {
            SipMessage::Request(r) => &r.headers,
            SipMessage::Response(r) => &r.headers,
        }
    }

    pub fn headers_mut(&mut self) -> &mut Headers {
        match self {
            SipMessage::Request(r) => &mut r.headers,
            SipMessage::Response(r) => &mut r.headers,
        }
    }

    pub fn body(&self) -> &Bytes {
        match self {
            SipMessage::Request(r) => &r.body,
            SipMessage::Response(r) => &r.body,
        }
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(512 + self.body().len());
        match self {
            SipMessage::Request(r) => {
                out.extend_from_slice(r.method.as_str().as_bytes());
                out.extend_from_slice(b" ");
                out.extend_from_slice(r.uri.as_bytes());
                out.extend_from_slice(b" SIP/2.0\r\n");
            }
            SipMessage::Response(r) => {
                let _ = write!(
                    ByteWriter(&mut out),
                    "SIP/2.0 {:03} {}\r\n",
                    r.status,
                    r.reason
                );
            }
        }
        let mut has_length = false;
        for h in self.headers().iter() {
            if h.name == HeaderName::ContentLength {
                has_length = true;
                // Written from the body so a changed body can never lie about its size.
                let _ = write!(
                    ByteWriter(&mut out),
                    "Content-Length: {}\r\n",
                    self.body().len()
                );
                continue;
            }
            out.extend_from_slice(h.name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(h.value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if !has_length {
            let _ = write!(
                ByteWriter(&mut out),
                "Content-Length: {}\r\n",
                self.body().len()
            );
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(self.body());
        out.freeze()
    }
}

impl From<Request> for SipMessage {
    fn from(r: Request) -> Self {
        SipMessage::Request(r)
    }
}

impl From<Response> for SipMessage {
    fn from(r: Response) -> Self {
        SipMessage::Response(r)
    }
}

impl Request {
    pub fn to_bytes(&self) -> Bytes {
        SipMessage::Request(self.clone()).to_bytes()
    }
}

impl Response {
    pub fn to_bytes(&self) -> Bytes {
        SipMessage::Response(self.clone()).to_bytes()
    }

    /// A response to `req` with the headers RFC 3261 8.2.6.2 copies: Via (all, in order),
    /// From, To, Call-ID and CSeq. The caller adds a To tag where one is needed.
    pub fn for_request(req: &Request, status: u16, reason: &str) -> Response {
        let mut headers = Headers::new();
        for h in req.headers.iter() {
            if matches!(
                h.name,
                HeaderName::Via
                    | HeaderName::From
                    | HeaderName::To
                    | HeaderName::CallId
                    | HeaderName::CSeq
            ) {
                headers.0.push(h.clone());
            }
        }
        Response {
            status,
            reason: reason.to_owned(),
            headers,
            body: Bytes::new(),
        }
    }

    /// Adds a tag to the To header unless it already has one.
    pub fn ensure_to_tag(&mut self, tag: &str) {
        if let Some(h) = self.headers.0.iter_mut().find(|h| h.name == HeaderName::To) {
            let has_tag = NameAddr::parse(&h.value)
                .map(|n| n.param("tag").is_some())
                .unwrap_or(false);
            if !has_tag {
                h.value = format!("{};tag={}", h.value, tag);
            }
        }
    }
}

/// The standard reason phrase for a status code.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        _ => "Unknown",
    }
}

struct ByteWriter<'a>(&'a mut BytesMut);

impl fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Finds the end of the header section: the index just past the empty line.
fn header_end(data: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'\n' {
            if data.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if data.get(i + 1) == Some(&b'\r') && data.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

/// Parses one complete message from a datagram (or a frame cut by [`StreamFramer`]).
///
/// The body is what follows the headers, cut to Content-Length when that is given;
/// a body shorter than Content-Length is an error (RFC 3261 18.3).
pub fn parse(data: &[u8]) -> Result<SipMessage, ParseError> {
    // RFC 3261 7.5: CRLFs before the start line are ignored.
    let mut start = 0;
    while data.get(start) == Some(&b'\r') || data.get(start) == Some(&b'\n') {
        start += 1;
    }
    let data = &data[start..];
    let end = header_end(data).ok_or(ParseError::Incomplete)?;
    let head = std::str::from_utf8(&data[..end]).map_err(|_| ParseError::Utf8)?;
    let rest = &data[end..];
    let mut lines = unfold_lines(head);
    let start_line = lines.next().ok_or(ParseError::Incomplete)?;
    let mut headers = Headers::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let colon = line
            .find(':')
            .ok_or_else(|| ParseError::HeaderLine(truncate(&line)))?;
        let name = line[..colon].trim_end_matches([' ', '\t']);
        if !is_token(name) {
            return Err(ParseError::HeaderLine(truncate(&line)));
        }
        let value = line[colon + 1..].trim_matches([' ', '\t']);
        headers.push(HeaderName::parse(name), value);
    }
    let body = match headers.get(&HeaderName::ContentLength) {
        Some(v) => {
            let declared = parse_content_length(v)?;
            if declared > rest.len() {
                return Err(ParseError::BodyTooShort {
                    declared,
                    actual: rest.len(),
                });
            }
            Bytes::copy_from_slice(&rest[..declared])
        }
        None => Bytes::copy_from_slice(rest),
    };
    if let Some(version_and_rest) = start_line.strip_prefix("SIP/") {
        let (version, rest) = version_and_rest
            .split_once(' ')
            .ok_or_else(|| ParseError::StartLine(truncate(&start_line)))?;
        if version != "2.0" {
            return Err(ParseError::Version(format!("SIP/{version}")));
        }
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::StartLine(truncate(&start_line)));
        }
        let status: u16 = code
            .parse()
            .map_err(|_| ParseError::StartLine(truncate(&start_line)))?;
        if !(100..=699).contains(&status) {
            return Err(ParseError::StartLine(truncate(&start_line)));
        }
        let resp = Response {
            status,
            reason: reason.to_owned(),
            headers,
            body,
        };
        validate_common(&resp.headers)?;
        return Ok(SipMessage::Response(resp));
    }
    let mut parts = start_line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::StartLine(truncate(&start_line)));
    };
    let method =
        Method::parse(method).ok_or_else(|| ParseError::StartLine(truncate(&start_line)))?;
    if !version.starts_with("SIP/") {
        return Err(ParseError::StartLine(truncate(&start_line)));
    }
    if version != "SIP/2.0" {
        return Err(ParseError::Version(version.to_owned()));
    }
    if uri.is_empty() || !uri.contains(':') || uri.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(ParseError::StartLine(truncate(&start_line)));
    }
    let req = Request {
        method,
        uri: uri.to_owned(),
        headers,
        body,
    };
    validate_request(&req)?;
    Ok(SipMessage::Request(req))
}

/// Lines of the header section with folded continuation lines joined (RFC 3261 7.3.1).
fn unfold_lines(head: &str) -> impl Iterator<Item = String> + '_ {
    let mut out: Vec<String> = Vec::new();
    for raw in head.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if (line.starts_with(' ') || line.starts_with('\t')) && out.len() > 1 {
            if let Some(last) = out.last_mut() {
                last.push(' ');
                last.push_str(line.trim_start_matches([' ', '\t']));
                continue;
            }
        }
        out.push(line.to_owned());
    }
    out.into_iter()
}

fn truncate(s: &str) -> String {
    let mut end = s.len().min(80);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn parse_content_length(v: &str) -> Result<usize, ParseError> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(header_error(&HeaderName::ContentLength, "not a number"));
    }
    v.parse::<usize>()
        .ok()
        .filter(|n| *n <= u32::MAX as usize)
        .ok_or_else(|| header_error(&HeaderName::ContentLength, "out of range"))
}

fn header_error(name: &HeaderName, reason: &str) -> ParseError {
    ParseError::Header {
        name: name.as_str().to_owned(),
        reason: reason.to_owned(),
    }
}

/// Checks every message must pass: mandatory headers present once and well-formed.
fn validate_common(headers: &Headers) -> Result<(), ParseError> {
    for (name, label) in [
        (HeaderName::CallId, "Call-ID"),
        (HeaderName::CSeq, "CSeq"),
        (HeaderName::From, "From"),
        (HeaderName::To, "To"),
    ] {
        match headers.count(&name) {
            0 => return Err(ParseError::Missing(label)),
            1 => {}
            _ => return Err(header_error(&name, "appears more than once")),
        }
    }
    if headers.count(&HeaderName::Via) == 0 {
        return Err(ParseError::Missing("Via"));
    }
    if headers.count(&HeaderName::ContentLength) > 1 {
        return Err(header_error(
            &HeaderName::ContentLength,
            "appears more than once",
        ));
    }
    let call_id = headers.get(&HeaderName::CallId).unwrap_or_default();
    if call_id.is_empty() || call_id.bytes().any(|b| b <= b' ') {
        return Err(header_error(&HeaderName::CallId, "malformed"));
    }
    cseq(headers)?;
    for via in headers.list(&HeaderName::Via) {
        Via::parse(via).map_err(|e| header_error(&HeaderName::Via, &e))?;
    }
    for name in [HeaderName::From, HeaderName::To] {
        let v = headers.get(&name).unwrap_or_default();
        NameAddr::parse(v).map_err(|e| header_error(&name, &e))?;
    }
    if let Some(v) = headers.get(&HeaderName::MaxForwards) {
        max_forwards_value(v)?;
    }
    if let Some(v) = headers.get(&HeaderName::Expires) {
        parse_delta_seconds(v)
            .ok_or_else(|| header_error(&HeaderName::Expires, "not delta-seconds"))?;
    }
    Ok(())
}

/// Request checks on top of [`validate_common`] (RFC 3261 8.2.2 and 16.3).
pub fn validate_request(req: &Request) -> Result<(), ParseError> {
    validate_common(&req.headers)?;
    let (_, method) = cseq(&req.headers)?;
    if method != req.method {
        return Err(ParseError::CSeqMismatch {
            cseq: method.to_string(),
            method: req.method.to_string(),
        });
    }
    if matches!(req.method, Method::Register) {
        for c in req.headers.list(&HeaderName::Contact) {
            if c != "*" {
                NameAddr::parse(c).map_err(|e| header_error(&HeaderName::Contact, &e))?;
            }
        }
    }
    Ok(())
}

/// The CSeq number and method.
pub fn cseq(headers: &Headers) -> Result<(u32, Method), ParseError> {
    let v = headers
        .get(&HeaderName::CSeq)
        .ok_or(ParseError::Missing("CSeq"))?;
    let mut it = v.split([' ', '\t']).filter(|s| !s.is_empty());
    let (Some(num), Some(method), None) = (it.next(), it.next(), it.next()) else {
        return Err(header_error(
            &HeaderName::CSeq,
            "expected \"number method\"",
        ));
    };
    if !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(header_error(&HeaderName::CSeq, "sequence is not a number"));
    }
    // RFC 3261 8.1.1.5: the sequence number is below 2**31.
    let num: u32 = num
        .parse()
        .ok()
        .filter(|n| *n < 1 << 31)
        .ok_or_else(|| header_error(&HeaderName::CSeq, "sequence out of range"))?;
    let method =
        Method::parse(method).ok_or_else(|| header_error(&HeaderName::CSeq, "bad method"))?;
    Ok((num, method))
}

pub fn call_id(headers: &Headers) -> Option<&str> {
    headers.get(&HeaderName::CallId)
}

fn max_forwards_value(v: &str) -> Result<u32, ParseError> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(header_error(&HeaderName::MaxForwards, "not a number"));
    }
    v.parse::<u32>()
        .ok()
        .filter(|n| *n <= 255)
        .ok_or_else(|| header_error(&HeaderName::MaxForwards, "out of range"))
}

/// Max-Forwards when present and well-formed.
pub fn max_forwards(headers: &Headers) -> Option<u32> {
    headers
        .get(&HeaderName::MaxForwards)
        .and_then(|v| max_forwards_value(v).ok())
}

/// delta-seconds; values past 2**32-1 count as 2**32-1 (RFC 3261 25.1 note on Expires).
pub fn parse_delta_seconds(v: &str) -> Option<u32> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        v.parse::<u64>()
            .map_or(u32::MAX, |n| n.min(u32::MAX as u64) as u32),
    )
}

/// A `;name=value` parameter list, kept in order; names compare case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(pub Vec<(String, Option<String>)>);

impl Params {
    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    /// Parses `;a=b;c;d="quoted"`: the text after the item the parameters belong to.
    fn parse(mut s: &str) -> Result<Params, String> {
        let mut out = Vec::new();
        s = s.trim_start();
        while let Some(rest) = s.strip_prefix(';') {
            let rest = rest.trim_start();
            let name_end = rest
                .find(|c: char| c == '=' || c == ';' || c == ' ' || c == '\t')
                .unwrap_or(rest.len());
            let name = &rest[..name_end];
            if !is_token(name) {
                return Err(format!("bad parameter name {name:?}"));
            }
            let mut after = rest[name_end..].trim_start();
            let value = if let Some(v) = after.strip_prefix('=') {
                let v = v.trim_start();
                if let Some(q) = v.strip_prefix('"') {
                    let end = quoted_end(q).ok_or("unterminated quoted parameter")?;
                    after = &q[end + 1..];
                    Some(format!("\"{}\"", &q[..end]))
                } else {
                    let end = v
                        .find(|c: char| c == ';' || c == ' ' || c == '\t')
                        .unwrap_or(v.len());
                    let value = &v[..end];
                    if value.is_empty()
                        || !value
                            .bytes()
                            .all(|b| is_token_char(b) || matches!(b, b':' | b'[' | b']'))
                    {
                        return Err(format!("bad value for parameter {name}"));
                    }
                    after = &v[end..];
                    Some(value.to_owned())
                }
            } else {
                None
            };
            out.push((name.to_owned(), value));
            s = after.trim_start();
        }
        if !s.is_empty() {
            return Err(format!("unexpected text {:?}", truncate(s)));
        }
        Ok(Params(out))
    }
}

impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, v) in &self.0 {
            match v {
                Some(v) => write!(f, ";{n}={v}")?,
                None => write!(f, ";{n}")?,
            }
        }
        Ok(())
    }
}

/// Index of the closing quote in text that follows an opening quote.
fn quoted_end(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, b) in s.bytes().enumerate() {
        if escaped {
            escaped = false;
        } else if b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            return Some(i);
        }
    }
    None
}

/// One via-parm: `SIP/2.0/UDP host:port;branch=...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
}

impl Via {
    pub fn parse(s: &str) -> Result<Via, String> {
        let s = s.trim();
        let mut rest = s;
        let mut proto = Vec::with_capacity(3);
        for i in 0..3 {
            let end = rest
                .find(|c: char| c == '/' || c == ' ' || c == '\t')
                .unwrap_or(rest.len());
            let part = &rest[..end];
            if !is_token(part) {
                return Err("bad sent-protocol".into());
            }
            proto.push(part);
            rest = rest[end..].trim_start();
            if i < 2 {
                rest = rest
                    .strip_prefix('/')
                    .ok_or("bad sent-protocol")?
                    .trim_start();
            }
        }
        if !proto[0].eq_ignore_ascii_case("SIP") || proto[1] != "2.0" {
            return Err("unsupported protocol in Via".into());
        }
        let host_end = rest.find([';']).unwrap_or(rest.len());
        let sent_by = rest[..host_end].trim();
        let (host, port) = parse_host_port(sent_by)?;
        let params = Params::parse(&rest[host_end..])?;
        Ok(Via {
            transport: proto[2].to_ascii_uppercase(),
            host,
            port,
            params,
        })
    }

    pub fn branch(&self) -> Option<&str> {
        self.params.get("branch").flatten()
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.params)
    }
}

/// The topmost Via of a message.
pub fn top_via(headers: &Headers) -> Result<Via, ParseError> {
    let first = headers
        .list(&HeaderName::Via)
        .next()
        .ok_or(ParseError::Missing("Via"))?;
    Via::parse(first).map_err(|e| header_error(&HeaderName::Via, &e))
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` with a checked host.
pub fn parse_host_port(s: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let end = v6.find(']').ok_or("unterminated IPv6 reference")?;
        let host = &s[..end + 2];
        if v6[..end].parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("bad IPv6 address {host}"));
        }
        let after = &v6[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("bad host {s:?}")),
        };
        (host, port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty()
        || !host.starts_with('[')
            && !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(format!("bad host {host:?}"));
    }
    let port = match port {
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("bad port {p:?}"))?,
        ),
        None => None,
    };
    Ok((host.to_owned(), port))
}

/// `"Display" <uri>;params` or `uri;params` (From, To, Contact, Route, Path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    pub display: Option<String>,
    pub uri: String,
    /// Whether the URI was in angle brackets (it must stay so when it has parameters).
    pub bracketed: bool,
    pub params: Params,
}

impl NameAddr {
    pub fn parse(s: &str) -> Result<NameAddr, String> {
        let s = s.trim();
        let (display, rest) = if let Some(q) = s.strip_prefix('"') {
            let end = quoted_end(q).ok_or("unterminated display name")?;
            (Some(q[..end].to_owned()), q[end + 1..].trim_start())
        } else if let Some(lt) = s.find('<') {
            let d = s[..lt].trim();
            if !d.split([' ', '\t']).filter(|w| !w.is_empty()).all(is_token) {
                return Err("bad display name".into());
            }
            ((!d.is_empty()).then(|| d.to_owned()), &s[lt..])
        } else {
            (None, s)
        };
        if let Some(inner) = rest.strip_prefix('<') {
            let end = inner.find('>').ok_or("missing '>'")?;
            let uri = inner[..end].trim();
            check_uri_text(uri)?;
            let params = Params::parse(&inner[end + 1..])?;
            return Ok(NameAddr {
                display,
                uri: uri.to_owned(),
                bracketed: true,
                params,
            });
        }
        if display.is_some() {
            return Err("display name without <uri>".into());
        }
        // addr-spec without brackets: parameters after ';' belong to the header.
        let end = rest.find(';').unwrap_or(rest.len());
        let uri = rest[..end].trim();
        check_uri_text(uri)?;
        if uri.contains(['?', ',']) {
            return Err("URI with headers or commas must be in angle brackets".into());
        }
        Ok(NameAddr {
            display: None,
            uri: uri.to_owned(),
            bracketed: false,
            params: Params::parse(&rest[end..])?,
        })
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params.get(name)
    }

    pub fn tag(&self) -> Option<&str> {
        self.params.get("tag").flatten()
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            if is_token(d) || d.split(' ').all(is_token) {
                write!(f, "{d} ")?;
            } else {
                write!(f, "\"{d}\" ")?;
            }
        }
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

fn check_uri_text(uri: &str) -> Result<(), String> {
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Err(format!("bad URI {:?}", truncate(uri)));
    };
    if scheme.is_empty()
        || !scheme.as_bytes()[0].is_ascii_alphabetic()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        || rest.is_empty()
        || uri
            .bytes()
            .any(|b| b <= b' ' || b == b'<' || b == b'>' || b == b'"')
    {
        return Err(format!("bad URI {:?}", truncate(uri)));
    }
    Ok(())
}

/// The `From` header, parsed.
pub fn from_header(headers: &Headers) -> Result<NameAddr, ParseError> {
    let v = headers
        .get(&HeaderName::From)
        .ok_or(ParseError::Missing("From"))?;
    NameAddr::parse(v).map_err(|e| header_error(&HeaderName::From, &e))
}

/// The `To` header, parsed.
pub fn to_header(headers: &Headers) -> Result<NameAddr, ParseError> {
    let v = headers
        .get(&HeaderName::To)
        .ok_or(ParseError::Missing("To"))?;
    NameAddr::parse(v).map_err(|e| header_error(&HeaderName::To, &e))
}

/// A parsed `sip:`/`sips:` URI (RFC 3261 19.1). Other schemes are not parsed further.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    pub secure: bool,
    /// The user part with %-escapes decoded.
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
}

impl SipUri {
    pub fn parse(s: &str) -> Result<SipUri, String> {
        let (secure, rest) = if let Some(r) = strip_prefix_ci(s, "sips:") {
            (true, r)
        } else if let Some(r) = strip_prefix_ci(s, "sip:") {
            (false, r)
        } else {
            return Err(format!("not a sip URI: {:?}", truncate(s)));
        };
        let rest = rest.split_once('?').map_or(rest, |(a, _)| a);
        let (userinfo, hostpart) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let user = match userinfo {
            Some(ui) => {
                let u = ui.split_once(':').map_or(ui, |(u, _)| u);
                if u.is_empty() {
                    return Err("empty user part".into());
                }
                Some(percent_decode(u).ok_or("bad %-escape in user part")?)
            }
            None => None,
        };
        let host_end = hostpart.find(';').unwrap_or(hostpart.len());
        let (host, port) = parse_host_port(&hostpart[..host_end])?;
        let params = Params::parse(&hostpart[host_end..]).or_else(|_| {
            // URI parameters allow more characters than header parameters (paramchar);
            // keep them raw rather than refusing the URI.
            Ok::<_, String>(Params(
                hostpart[host_end..]
                    .split(';')
                    .filter(|p| !p.is_empty())
                    .map(|p| match p.split_once('=') {
                        Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
                        None => (p.to_owned(), None),
                    })
                    .collect(),
            ))
        })?;
        Ok(SipUri {
            secure,
            user,
            host: host.to_ascii_lowercase(),
            port,
            params,
        })
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

/// Decodes %XX escapes; None on a malformed escape or bytes that are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// What a stream connection yielded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One whole message, headers and body, ready for [`parse`].
    Message(Bytes),
    /// A double CRLF keepalive ping (RFC 5626 3.5.1); answer with a single CRLF.
    Ping,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FramingError {
    #[error("message on a stream has no valid Content-Length")]
    NoContentLength,
    #[error("message exceeds {0} bytes")]
    TooLarge(usize),
}

/// Cuts a byte stream into messages by Content-Length (RFC 3261 18.3) and answers
/// RFC 5626 keepalives. After an error the stream cannot be resynchronized and must close.
#[derive(Debug)]
pub struct StreamFramer {
    buf: BytesMut,
    max_message: usize,
}

impl StreamFramer {
    pub fn new(max_message: usize) -> Self {
        StreamFramer {
            buf: BytesMut::with_capacity(4096),
            max_message,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, or None until more bytes arrive.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        // Line breaks between messages are keepalives: CRLFCRLF is a ping, a lone CRLF a
        // pong (which needs no answer).
        loop {
            if self.buf.starts_with(b"\r\n\r\n") {
                let _ = self.buf.split_to(4);
                return Ok(Some(Frame::Ping));
            }
            if self.buf.starts_with(b"\r\n") && self.buf.len() >= 3 && self.buf[2] != b'\r' {
                let _ = self.buf.split_to(2);
                continue;
            }
            if self.buf.first() == Some(&b'\n') {
                let _ = self.buf.split_to(1);
                continue;
            }
            break;
        }
        if self.buf.first().is_some_and(|b| *b == b'\r') {
            return Ok(None);
        }
        let Some(end) = header_end(&self.buf) else {
            if self.buf.len() > self.max_message {
                return Err(FramingError::TooLarge(self.max_message));
            }
            return Ok(None);
        };
        let length = content_length_raw(&self.buf[..end]).ok_or(FramingError::NoContentLength)?;
        let total = end
            .checked_add(length)
            .filter(|t| *t <= self.max_message)
            .ok_or(FramingError::TooLarge(self.max_message))?;
        if self.buf.len() < total {
            return Ok(None);
        }
        Ok(Some(Frame::Message(self.buf.split_to(total).freeze())))
    }
}

/// Content-Length from raw header bytes, for framing before a full parse.
fn content_length_raw(head: &[u8]) -> Option<usize> {
    let head = std::str::from_utf8(head).ok()?;
    let mut found = None;
    for line in head.split('\n').skip(1) {
        let line = line.trim_end_matches('\r');
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if HeaderName::parse(name.trim_end()) == HeaderName::ContentLength {
            if found.is_some() {
                return None;
            }
            found = Some(parse_content_length(value.trim()).ok()?);
        }
    }
    found
}

/// The message as text for debug logs, with credentials cut out: never log a digest
/// response (or anything a password could be guessed from offline).
pub fn redacted(msg: &SipMessage) -> String {
    let mut out = String::with_capacity(512);
    match msg {
        SipMessage::Request(r) => {
            let _ = write!(out, "{} {} SIP/2.0", r.method, r.uri);
        }
        SipMessage::Response(r) => {
            let _ = write!(out, "SIP/2.0 {} {}", r.status, r.reason);
        }
    }
    for h in msg.headers().iter() {
        match h.name {
            HeaderName::Authorization | HeaderName::ProxyAuthorization => {
                let user = h
                    .value
                    .split(',')
                    .find(|p| p.trim_start().to_ascii_lowercase().contains("username="))
                    .map(|p| p.trim())
                    .unwrap_or("");
                let _ = write!(out, "\n{}: {} <credentials redacted>", h.name, user);
            }
            _ => {
                let _ = write!(out, "\n{}: {}", h.name, h.value);
            }
        }
    }
    let _ = write!(out, "\n({} body bytes)", msg.body().len());
    out
}

/// Builds a 400 (or 505) for bytes that failed to parse, when enough of the message is
/// readable to address a response (RFC 3261 asks for one where it can be formed).
pub fn error_response_for(data: &[u8], err: &ParseError) -> Option<Response> {
    let end = header_end(data).unwrap_or(data.len());
    let head = String::from_utf8_lossy(&data[..end]);
    let mut lines = unfold_lines(&head);
    let start = lines.next()?;
    if start.starts_with("SIP/") {
        return None; // never answer a response
    }
    let method = Method::parse(start.split(' ').next()?)?;
    if method == Method::Ack {
        return None; // ACK gets no response
    }
    let mut headers = Headers::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = HeaderName::parse(name.trim());
        if matches!(
            name,
            HeaderName::Via
                | HeaderName::From
                | HeaderName::To
                | HeaderName::CallId
                | HeaderName::CSeq
        ) {
            headers.push(name, value.trim());
        }
    }
    for needed in [
        HeaderName::Via,
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
    ] {
        if headers.get(&needed).is_none() {
            return None;
        }
    }
    top_via(&headers).ok()?;
    let status = err.status();
    let mut reason = format!("{} ({})", reason_phrase(status), err);
    reason.retain(|c| c != '\r' && c != '\n');
    Some(Response {
        status,
        reason,
        headers,
        body: Bytes::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTER: &str = "REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@example.com>\r\n\
From: \"Bob B\" <sip:bob@example.com>;tag=456248\r\n\
Call-ID: 843817637684230@998sdasdh09\r\n\
CSeq: 1826 REGISTER\r\n\
Contact: <sip:bob@10.0.0.1:5062>;expires=60, sip:bob@10.0.0.2\r\n\
Expires: 7200\r\n\
Content-Length: 0\r\n\r\n";

    #[test]
    fn parses_register() {
        let SipMessage::Request(req) = parse(REGISTER.as_bytes()).expect("parse") else {
            panic!("not a request")
        };
        assert_eq!(req.method, Method::Register);
        assert_eq!(req.uri, "sip:example.com");
        let via = top_via(&req.headers).expect("via");
        assert_eq!(via.transport, "UDP");
        assert_eq!(via.host, "10.0.0.1");
        assert_eq!(via.port, Some(5062));
        assert_eq!(via.branch(), Some("z9hG4bK776asdhds"));
        assert_eq!(via.params.get("rport"), Some(None));
        let contacts: Vec<_> = req.headers.list(&HeaderName::Contact).collect();
        assert_eq!(contacts.len(), 2);
        let c0 = NameAddr::parse(contacts[0]).expect("contact");
        assert_eq!(c0.uri, "sip:bob@10.0.0.1:5062");
        assert_eq!(c0.param("expires"), Some(Some("60")));
        let from = from_header(&req.headers).expect("from");
        assert_eq!(from.display.as_deref(), Some("Bob B"));
        assert_eq!(from.tag(), Some("456248"));
        assert_eq!(cseq(&req.headers).expect("cseq"), (1826, Method::Register));
    }

    #[test]
    fn round_trips() {
        let msg = parse(REGISTER.as_bytes()).expect("parse");
        let again = parse(&msg.to_bytes()).expect("reparse");
        assert_eq!(msg, again);
    }

    #[test]
    fn compact_and_folded_headers() {
        let text = "OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/TCP h;branch=z9hG4bKx\r\nf: <sip:x@y>;tag=1\r\nt: sip:a@b\r\ni: abc\r\nCSeq: 1\r\n  OPTIONS\r\nl: 0\r\n\r\n";
        let SipMessage::Request(req) = parse(text.as_bytes()).expect("parse") else {
            panic!()
        };
        assert_eq!(req.headers.get(&HeaderName::CallId), Some("abc"));
        assert_eq!(cseq(&req.headers).expect("cseq").1, Method::Options);
    }

    #[test]
    fn rejects_mismatch_and_missing() {
        let bad = REGISTER.replace("CSeq: 1826 REGISTER", "CSeq: 1826 INVITE");
        assert!(matches!(
            parse(bad.as_bytes()),
            Err(ParseError::CSeqMismatch { .. })
        ));
        let bad = REGISTER.replace("Call-ID: 843817637684230@998sdasdh09\r\n", "");
        assert_eq!(parse(bad.as_bytes()), Err(ParseError::Missing("Call-ID")));
        let resp = error_response_for(bad.as_bytes(), &ParseError::Missing("Call-ID"));
        assert!(resp.is_none(), "no Call-ID, no response can be formed");
        let bad = REGISTER.replace("CSeq: 1826 REGISTER", "CSeq: 1826 INVITE");
        let resp = error_response_for(bad.as_bytes(), &ParseError::Missing("x")).expect("400");
        assert_eq!(resp.status, 400);
    }

    #[test]
    fn extension_methods_are_case_sensitive() {
        assert_eq!(Method::parse("INVITE"), Some(Method::Invite));
        assert_eq!(
            Method::parse("invite"),
            Some(Method::Other("invite".into()))
        );
        assert_eq!(Method::parse("IN VITE"), None);
    }

    #[test]
    fn body_shorter_than_content_length() {
        let text = REGISTER.replace("Content-Length: 0", "Content-Length: 10");
        assert!(matches!(
            parse(text.as_bytes()),
            Err(ParseError::BodyTooShort { .. })
        ));
    }

    #[test]
    fn framer_cuts_messages_and_pings() {
        let mut f = StreamFramer::new(65535);
        let msg = parse(REGISTER.as_bytes()).expect("parse").to_bytes();
        f.push(b"\r\n\r\n");
        f.push(&msg[..10]);
        assert_eq!(f.next_frame(), Ok(Some(Frame::Ping)));
        assert_eq!(f.next_frame(), Ok(None));
        f.push(&msg[10..]);
        f.push(&msg);
        assert_eq!(f.next_frame(), Ok(Some(Frame::Message(msg.clone()))));
        assert_eq!(f.next_frame(), Ok(Some(Frame::Message(msg.clone()))));
        assert_eq!(f.next_frame(), Ok(None));
    }

    #[test]
    fn framer_needs_content_length() {
        let mut f = StreamFramer::new(65535);
        f.push(REGISTER.replace("Content-Length: 0\r\n", "").as_bytes());
        assert_eq!(f.next_frame(), Err(FramingError::NoContentLength));
    }

    #[test]
    fn sip_uri() {
        let u = SipUri::parse("sip:al%69ce@Example.COM:5070;transport=tcp").expect("uri");
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.host, "example.com");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.params.get("transport"), Some(Some("tcp")));
        let v6 = SipUri::parse("sip:[2001:db8::10]:5060").expect("v6");
        assert_eq!(v6.host, "[2001:db8::10]");
    }
}
