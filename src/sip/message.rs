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

use std::borrow::Cow;
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
            // RFC 4475 3.1.2.18: an unknown method whose CSeq does not match is better
            // answered 501 than 400, as any other unknown method is (RFC 3261 8.2.1).
            ParseError::CSeqMismatch { method, .. }
                if matches!(Method::parse(method), Some(Method::Other(_))) =>
            {
                501
            }
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

/// Every named [`HeaderName`] variant (the test that `parse` knows them all).
#[cfg(test)]
const KNOWN_HEADERS: &[HeaderName] = &[
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
        if let [c] = name.as_bytes() {
            let compact = match c.to_ascii_lowercase() {
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
        // Lower-cased on the stack, then one `match` (compiled to length and byte
        // comparisons): no table built per call, no allocation for known names.
        let mut buf = [0u8; 20];
        let Some(lower) = buf.get_mut(..name.len()) else {
            return HeaderName::Other(name.to_owned());
        };
        lower.copy_from_slice(name.as_bytes());
        lower.make_ascii_lowercase();
        match &*lower {
            b"via" => HeaderName::Via,
            b"from" => HeaderName::From,
            b"to" => HeaderName::To,
            b"call-id" => HeaderName::CallId,
            b"cseq" => HeaderName::CSeq,
            b"contact" => HeaderName::Contact,
            b"max-forwards" => HeaderName::MaxForwards,
            b"content-length" => HeaderName::ContentLength,
            b"content-type" => HeaderName::ContentType,
            b"expires" => HeaderName::Expires,
            b"min-expires" => HeaderName::MinExpires,
            b"authorization" => HeaderName::Authorization,
            b"proxy-authorization" => HeaderName::ProxyAuthorization,
            b"www-authenticate" => HeaderName::WwwAuthenticate,
            b"proxy-authenticate" => HeaderName::ProxyAuthenticate,
            b"authentication-info" => HeaderName::AuthenticationInfo,
            b"path" => HeaderName::Path,
            b"route" => HeaderName::Route,
            b"record-route" => HeaderName::RecordRoute,
            b"supported" => HeaderName::Supported,
            b"require" => HeaderName::Require,
            b"proxy-require" => HeaderName::ProxyRequire,
            b"unsupported" => HeaderName::Unsupported,
            b"allow" => HeaderName::Allow,
            b"user-agent" => HeaderName::UserAgent,
            b"server" => HeaderName::Server,
            b"date" => HeaderName::Date,
            b"event" => HeaderName::Event,
            _ => HeaderName::Other(name.to_owned()),
        }
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

/// Splits a header value at commas that are outside quotes and angle brackets; empty
/// elements are skipped.
pub fn split_list(value: &str) -> impl Iterator<Item = &str> {
    SplitList { rest: Some(value) }.filter(|p| !p.is_empty())
}

/// Like [`split_list`] but keeps empty elements, for headers whose grammar has none.
fn split_list_strict(value: &str) -> SplitList<'_> {
    SplitList { rest: Some(value) }
}

/// The elements of a comma-separated header value, trimmed, empty ones included.
struct SplitList<'a> {
    rest: Option<&'a str>,
}

impl<'a> Iterator for SplitList<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let value = self.rest?;
        let (mut in_quotes, mut in_angle, mut escaped) = (false, false, false);
        for (i, b) in value.bytes().enumerate() {
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
                    self.rest = Some(&value[i + 1..]);
                    return Some(value[..i].trim_matches(WSP));
                }
                _ => {}
            }
        }
        self.rest = None;
        Some(value.trim_matches(WSP))
    }
}

/// Linear white space inside a header line once folding is undone.
const WSP: [char; 2] = [' ', '\t'];

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
    header_end_from(data, 0)
}

/// [`header_end`], starting the search at `from`.
fn header_end_from(data: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
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
/// The body is what follows the headers, cut to Content-Length when that is given (bytes
/// past it, such as a second request in the same datagram, are ignored); a body shorter
/// than Content-Length is an error (RFC 3261 18.3). Header fields must be UTF-8, the body
/// may be any bytes.
pub fn parse(data: &[u8]) -> Result<SipMessage, ParseError> {
    // RFC 3261 7.5: CRLFs before the start line are ignored.
    let start = data
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(data.len());
    let data = &data[start..];
    let end = header_end(data).ok_or(ParseError::Incomplete)?;
    let head = std::str::from_utf8(&data[..end]).map_err(|_| ParseError::Utf8)?;
    let rest = &data[end..];
    let mut lines = UnfoldedLines::new(head);
    let start_line = lines.next().ok_or(ParseError::Incomplete)?;
    // The start line is checked before the headers so that a bad version is answered
    // with 505 even when the rest is malformed too.
    let start_line = StartLine::parse(&start_line)?;
    let mut headers = Headers(Vec::with_capacity(16));
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let (name, value) = split_header_line(&line)?;
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
    match start_line {
        StartLine::Response { status, reason } => {
            let resp = Response {
                status,
                reason: reason.to_owned(),
                headers,
                body,
            };
            validate_common(&resp.headers)?;
            Ok(SipMessage::Response(resp))
        }
        StartLine::Request { method, uri } => {
            let req = Request {
                method,
                uri: uri.to_owned(),
                headers,
                body,
            };
            validate_request(&req)?;
            Ok(SipMessage::Request(req))
        }
    }
}

/// `name: value` of one unfolded header line, with the name checked and both trimmed.
fn split_header_line(line: &str) -> Result<(&str, &str), ParseError> {
    let colon = line
        .find(':')
        .ok_or_else(|| ParseError::HeaderLine(truncate(line)))?;
    let name = line[..colon].trim_end_matches(WSP);
    // A CR that does not end a line would end it for the next parser that reads our
    // output: refuse it rather than forward it.
    if !is_token(name) || line.contains('\r') {
        return Err(ParseError::HeaderLine(truncate(line)));
    }
    Ok((name, line[colon + 1..].trim_matches(WSP)))
}

/// A parsed Request-Line or Status-Line, borrowing from the header text.
enum StartLine<'a> {
    Request { method: Method, uri: &'a str },
    Response { status: u16, reason: &'a str },
}

impl<'a> StartLine<'a> {
    fn parse(line: &'a str) -> Result<StartLine<'a>, ParseError> {
        let bad = || ParseError::StartLine(truncate(line));
        if line.bytes().any(|b| b == b'\r' || b == 0) {
            return Err(bad());
        }
        if strip_prefix_ci(line, "SIP/").is_some() {
            // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF
            let (version, rest) = line.split_once(' ').ok_or_else(bad)?;
            check_version(version)?;
            // RFC 4475 3.1.1.13: the SP before an empty reason is required by the
            // grammar; a liberal receiver accepts it missing, and so do we (the
            // serializer always writes it).
            let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
            if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let status: u16 = code.parse().map_err(|_| bad())?;
            if !(100..=699).contains(&status) {
                return Err(bad());
            }
            return Ok(StartLine::Response { status, reason });
        }
        // Request-Line = Method SP Request-URI SP SIP-Version CRLF: exactly one SP
        // between the three (RFC 4475 3.1.2.8, 3.1.2.9, 3.1.2.10).
        let mut parts = line.split(' ');
        let (Some(method), Some(uri), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let method = Method::parse(method).ok_or_else(bad)?;
        check_version(version)?;
        check_request_uri(uri).map_err(|_| bad())?;
        Ok(StartLine::Request { method, uri })
    }
}

/// `SIP/2.0`: anything else of the form `SIP/x.y` is a version we do not support (505),
/// anything not of that form is a malformed start line.
fn check_version(v: &str) -> Result<(), ParseError> {
    let Some(num) = strip_prefix_ci(v, "SIP/") else {
        return Err(ParseError::StartLine(truncate(v)));
    };
    if num == "2.0" {
        return Ok(());
    }
    let well_formed = num.split_once('.').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.bytes().all(|c| c.is_ascii_digit())
    });
    if well_formed {
        Err(ParseError::Version(truncate(v)))
    } else {
        Err(ParseError::StartLine(truncate(v)))
    }
}

/// The Request-URI: a SIP or SIPS URI, or any absoluteURI (RFC 3261 25.1). A SIP URI
/// here may not carry headers (RFC 3261 19.1.1, RFC 4475 3.1.2.11) nor angle brackets
/// (3.1.2.7).
fn check_request_uri(uri: &str) -> Result<(), String> {
    check_uri_text(uri)?;
    if let Some(parts) = sip_uri_parts(uri) {
        let parts = parts?;
        if parts.headers.is_some() {
            return Err("headers are not allowed in a Request-URI".into());
        }
    }
    Ok(())
}

/// Lines of the header section with folded continuation lines joined (RFC 3261 7.3.1):
/// a line is borrowed unless it was folded. The start line never takes continuations.
struct UnfoldedLines<'a> {
    rest: &'a str,
    first: bool,
}

impl<'a> UnfoldedLines<'a> {
    fn new(head: &'a str) -> Self {
        UnfoldedLines {
            rest: head,
            first: true,
        }
    }

    fn raw_line(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        let (line, tail) = match self.rest.find('\n') {
            Some(i) => (&self.rest[..i], &self.rest[i + 1..]),
            None => (self.rest, ""),
        };
        self.rest = tail;
        Some(line.strip_suffix('\r').unwrap_or(line))
    }
}

impl<'a> Iterator for UnfoldedLines<'a> {
    type Item = Cow<'a, str>;

    fn next(&mut self) -> Option<Cow<'a, str>> {
        let line = self.raw_line()?;
        if std::mem::take(&mut self.first) || line.is_empty() {
            return Some(Cow::Borrowed(line));
        }
        let mut joined: Option<String> = None;
        while self.rest.starts_with(WSP) {
            let Some(cont) = self.raw_line() else { break };
            let s = joined.get_or_insert_with(|| line.to_owned());
            // The fold and the white space around it become one SP.
            s.truncate(s.trim_end_matches(WSP).len());
            s.push(' ');
            s.push_str(cont.trim_start_matches(WSP));
        }
        Some(joined.map_or(Cow::Borrowed(line), Cow::Owned))
    }
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
    // Single-valued headers the stack reads (RFC 4475 3.3.8, 3.3.9).
    for name in [
        HeaderName::ContentLength,
        HeaderName::MaxForwards,
        HeaderName::Expires,
        HeaderName::ContentType,
        HeaderName::Date,
    ] {
        if headers.count(&name) > 1 {
            return Err(header_error(&name, "appears more than once"));
        }
    }
    let call_id = headers.get(&HeaderName::CallId).unwrap_or_default();
    if !is_call_id(call_id) {
        return Err(header_error(&HeaderName::CallId, "malformed"));
    }
    cseq(headers)?;
    // Every element must be a via-parm: `;;` and `,,` are not (RFC 4475 3.1.2.1).
    for line in headers.get_all(&HeaderName::Via) {
        for via in split_list_strict(line) {
            Via::parse(via).map_err(|e| header_error(&HeaderName::Via, &e))?;
        }
    }
    for name in [HeaderName::From, HeaderName::To] {
        let v = headers.get(&name).unwrap_or_default();
        NameAddr::parse(v).map_err(|e| header_error(&name, &e))?;
    }
    for name in [
        HeaderName::Contact,
        HeaderName::Route,
        HeaderName::RecordRoute,
    ] {
        for line in headers.get_all(&name) {
            for item in split_list_strict(line) {
                if name == HeaderName::Contact && item == "*" {
                    continue;
                }
                NameAddr::parse(item).map_err(|e| header_error(&name, &e))?;
            }
        }
    }
    if let Some(v) = headers.get(&HeaderName::MaxForwards) {
        max_forwards_value(v)?;
    }
    if let Some(v) = headers.get(&HeaderName::Expires) {
        parse_delta_seconds(v)
            .ok_or_else(|| header_error(&HeaderName::Expires, "not delta-seconds"))?;
    }
    if let Some(v) = headers.get(&HeaderName::Date) {
        if !is_sip_date(v) {
            return Err(header_error(
                &HeaderName::Date,
                "not an RFC 1123 date in GMT",
            ));
        }
    }
    Ok(())
}

/// `callid = word [ "@" word ]` (RFC 3261 25.1).
fn is_call_id(v: &str) -> bool {
    let is_word = |w: &str| {
        !w.is_empty()
            && w.bytes().all(|b| {
                is_token_char(b)
                    || matches!(
                        b,
                        b'(' | b')'
                            | b'<'
                            | b'>'
                            | b':'
                            | b'\\'
                            | b'"'
                            | b'/'
                            | b'['
                            | b']'
                            | b'?'
                            | b'{'
                            | b'}'
                    )
            })
    };
    match v.split_once('@') {
        Some((a, b)) => is_word(a) && is_word(b),
        None => is_word(v),
    }
}

/// `SIP-date = rfc1123-date`: `Sun, 06 Nov 1994 08:49:37 GMT`, always in GMT
/// (RFC 3261 20.17, RFC 4475 3.1.2.12).
pub fn is_sip_date(v: &str) -> bool {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let b = v.as_bytes();
    if b.len() != 29 || !v.is_ascii() {
        return false;
    }
    let num = |r: std::ops::Range<usize>, max: u32| {
        v[r.clone()].bytes().all(|c| c.is_ascii_digit())
            && v[r].parse::<u32>().is_ok_and(|n| n <= max)
    };
    DAYS.contains(&&v[0..3])
        && &v[3..5] == ", "
        && num(5..7, 31)
        && &v[5..7] != "00"
        && b[7] == b' '
        && MONTHS.contains(&&v[8..11])
        && b[11] == b' '
        && num(12..16, 9999)
        && b[16] == b' '
        && num(17..19, 23)
        && b[19] == b':'
        && num(20..22, 59)
        && b[22] == b':'
        && num(23..25, 60)
        && &v[25..] == " GMT"
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
            let name_end = rest.find(['=', ';', ' ', '\t']).unwrap_or(rest.len());
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
                    let end = v.find([';', ' ', '\t']).unwrap_or(v.len());
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
        Via::parse_with(s, false)
    }

    /// For answering a broken request only: any protocol version, and parameters that
    /// do not parse are dropped, so that a 400 or 505 can still be addressed to the
    /// sent-by (RFC 4475 3.1.2.1, 3.1.2.16).
    fn parse_lenient(s: &str) -> Result<Via, String> {
        Via::parse_with(s, true)
    }

    fn parse_with(s: &str, lenient: bool) -> Result<Via, String> {
        let mut rest = s.trim_matches(WSP);
        let mut proto = [""; 3];
        for (i, slot) in proto.iter_mut().enumerate() {
            let end = rest.find(['/', ' ', '\t']).unwrap_or(rest.len());
            let part = &rest[..end];
            if !is_token(part) {
                return Err("bad sent-protocol".into());
            }
            *slot = part;
            rest = rest[end..].trim_start_matches(WSP);
            if i < 2 {
                rest = rest
                    .strip_prefix('/')
                    .ok_or("bad sent-protocol")?
                    .trim_start_matches(WSP);
            }
        }
        if !lenient && (!proto[0].eq_ignore_ascii_case("SIP") || proto[1] != "2.0") {
            return Err("unsupported protocol in Via".into());
        }
        let host_end = rest.find(';').unwrap_or(rest.len());
        let sent_by = rest[..host_end].trim_matches(WSP);
        let (host, port) = parse_host_port(sent_by)?;
        let params = match Params::parse(&rest[host_end..]) {
            Ok(p) => p,
            Err(_) if lenient => Params(
                rest[host_end..]
                    .split(';')
                    .filter_map(|p| Params::parse(&format!(";{p}")).ok())
                    .flat_map(|p| p.0)
                    .collect(),
            ),
            Err(e) => return Err(e),
        };
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
    split_host_port(s).map(|(h, p)| (h.to_owned(), p))
}

fn split_host_port(s: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let end = v6.find(']').ok_or("unterminated IPv6 reference")?;
        let host = &s[..end + 2];
        if v6[..end].parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("bad IPv6 address {:?}", truncate(host)));
        }
        let after = &v6[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("bad host {:?}", truncate(s))),
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
        return Err(format!("bad host {:?}", truncate(host)));
    }
    let port = match port {
        Some(p) => Some(
            p.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| p.parse::<u16>().ok())
                .flatten()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("bad port {:?}", truncate(p)))?,
        ),
        None => None,
    };
    Ok((host, port))
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
        let s = s.trim_matches(WSP);
        let (display, rest) = if let Some(q) = s.strip_prefix('"') {
            let end = quoted_end(q).ok_or("unterminated display name")?;
            (
                Some(q[..end].to_owned()),
                q[end + 1..].trim_start_matches(WSP),
            )
        } else if let Some(lt) = s.find('<') {
            // display-name = *(token LWS): a comma or other separator must be quoted
            // (RFC 4475 3.1.2.15); no LWS is needed before '<' (3.1.1.6).
            let d = s[..lt].trim_matches(WSP);
            if !d.split(WSP).filter(|w| !w.is_empty()).all(is_token) {
                return Err("bad display name".into());
            }
            ((!d.is_empty()).then(|| d.to_owned()), &s[lt..])
        } else {
            (None, s)
        };
        if let Some(inner) = rest.strip_prefix('<') {
            let end = inner.find('>').ok_or("missing '>'")?;
            // LAQUOT addr-spec RAQUOT: no white space inside (RFC 4475 3.1.2.14).
            let uri = &inner[..end];
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
        // addr-spec without brackets: parameters after ';' belong to the header (RFC
        // 3261 20.10), so a URI with its own parameters, headers or a comma cannot be
        // written this way (RFC 4475 3.1.2.13; 3.3.12 is the valid reading).
        let end = rest.find(';').unwrap_or(rest.len());
        let uri = rest[..end].trim_end_matches(WSP);
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

/// `scheme ":" rest` with only URI characters (RFC 3986 reserved, unreserved and
/// well-formed %-escapes) and, for `sip:`/`sips:`, the SIP URI structure.
fn check_uri_text(uri: &str) -> Result<(), String> {
    let bad = || format!("bad URI {:?}", truncate(uri));
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Err(bad());
    };
    if !scheme
        .as_bytes()
        .first()
        .is_some_and(u8::is_ascii_alphabetic)
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        || rest.is_empty()
    {
        return Err(bad());
    }
    let b = rest.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                if !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
                {
                    return Err(bad());
                }
                i += 3;
                continue;
            }
            c if is_uri_char(c) => {}
            _ => return Err(bad()),
        }
        i += 1;
    }
    if let Some(parts) = sip_uri_parts(uri) {
        parts?;
    }
    Ok(())
}

/// Characters a URI may hold unescaped: alphanum, mark, reserved, and `[` `]` for IPv6.
fn is_uri_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_'
                | b'.'
                | b'!'
                | b'~'
                | b'*'
                | b'\''
                | b'('
                | b')'
                | b';'
                | b'/'
                | b'?'
                | b':'
                | b'@'
                | b'&'
                | b'='
                | b'+'
                | b'$'
                | b','
                | b'['
                | b']'
        )
}

/// The pieces of a `sip:`/`sips:` URI, still escaped.
struct SipUriParts<'a> {
    secure: bool,
    userinfo: Option<&'a str>,
    host: &'a str,
    port: Option<u16>,
    /// The text from the first `;` after the host, up to any `?`.
    params: &'a str,
    headers: Option<&'a str>,
}

/// Splits a SIP URI; None when the scheme is not sip/sips.
///
/// `@` can only appear in the userinfo (hostport, parameters and headers have no `@`
/// unescaped), so the last `@` ends it; `?` and `;` before it belong to the user part
/// (RFC 4475 3.1.1.2, 3.1.1.9).
fn sip_uri_parts(s: &str) -> Option<Result<SipUriParts<'_>, String>> {
    let (secure, rest) = if let Some(r) = strip_prefix_ci(s, "sips:") {
        (true, r)
    } else {
        (false, strip_prefix_ci(s, "sip:")?)
    };
    Some((|| {
        let (userinfo, after) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        if userinfo.is_some_and(|u| u.split(':').next().unwrap_or_default().is_empty()) {
            return Err("empty user part".to_owned());
        }
        let (after, headers) = match after.split_once('?') {
            Some((a, h)) => (a, Some(h)),
            None => (after, None),
        };
        let host_end = after.find(';').unwrap_or(after.len());
        let (host, port) = split_host_port(&after[..host_end])?;
        Ok(SipUriParts {
            secure,
            userinfo,
            host,
            port,
            params: &after[host_end..],
            headers,
        })
    })())
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
        let parts =
            sip_uri_parts(s).ok_or_else(|| format!("not a sip URI: {:?}", truncate(s)))??;
        let user = match parts.userinfo {
            Some(ui) => {
                let u = ui.split_once(':').map_or(ui, |(u, _)| u);
                Some(percent_decode(u).ok_or("bad %-escape in user part")?)
            }
            None => None,
        };
        let params = Params::parse(parts.params).or_else(|_| {
            // URI parameters allow more characters than header parameters (paramchar);
            // keep them raw rather than refusing the URI.
            Ok::<_, String>(Params(
                parts
                    .params
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
            secure: parts.secure,
            user,
            host: parts.host.to_ascii_lowercase(),
            port: parts.port,
            params,
        })
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    // Compared as bytes: `prefix.len()` need not be a char boundary of `s`.
    let head = s.as_bytes().get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix.as_bytes()) {
        s.get(prefix.len()..)
    } else {
        None
    }
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
    /// How far the buffer is known to hold no end of headers, so that a message that
    /// arrives a few bytes at a time is scanned once, not once per push.
    scanned: usize,
}

impl StreamFramer {
    pub fn new(max_message: usize) -> Self {
        StreamFramer {
            buf: BytesMut::with_capacity(4096),
            max_message,
            scanned: 0,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    fn consume(&mut self, n: usize) -> BytesMut {
        self.scanned = 0;
        self.buf.split_to(n)
    }

    /// The next complete frame, or None until more bytes arrive.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        // Line breaks between messages are keepalives: CRLFCRLF is a ping, a lone CRLF a
        // pong (which needs no answer). A stray CR or LF is skipped.
        loop {
            match &self.buf[..] {
                [b'\r', b'\n', b'\r', b'\n', ..] => {
                    let _ = self.consume(4);
                    return Ok(Some(Frame::Ping));
                }
                // Could still become a ping: wait.
                [b'\r'] | [b'\r', b'\n'] | [b'\r', b'\n', b'\r'] => return Ok(None),
                [b'\r', b'\n', ..] => {
                    let _ = self.consume(2);
                }
                [b'\r' | b'\n', ..] => {
                    let _ = self.consume(1);
                }
                _ => break,
            }
        }
        let from = self.scanned.saturating_sub(3);
        let Some(end) = header_end_from(&self.buf, from) else {
            self.scanned = self.buf.len();
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
            self.scanned = end.saturating_sub(3);
            return Ok(None);
        }
        Ok(Some(Frame::Message(self.consume(total).freeze())))
    }
}

/// Content-Length from raw header bytes, for framing before a full parse. Folded lines
/// are unfolded as the parser does, so both agree on where the message ends.
fn content_length_raw(head: &[u8]) -> Option<usize> {
    let head = std::str::from_utf8(head).ok()?;
    let mut found = None;
    for line in UnfoldedLines::new(head).skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if HeaderName::parse(name.trim_end_matches(WSP)) == HeaderName::ContentLength {
            if found.is_some() {
                return None;
            }
            found = Some(parse_content_length(value.trim_matches(WSP)).ok()?);
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

/// Builds the error response (400, 501 or 505, see [`ParseError::status`]) for bytes
/// that failed to parse, when a response can be formed at all: never for a response or
/// an ACK, and only when the request has a top Via that says where to send it (RFC 3261
/// 18.2.2). From, To, Call-ID and CSeq are copied when present (the first of each) and
/// left out when missing: RFC 4475 3.3.1 still asks for a 400 then, and the client
/// transaction matches it by branch.
pub fn error_response_for(data: &[u8], err: &ParseError) -> Option<Response> {
    let start = data
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(data.len());
    let data = &data[start..];
    let end = header_end(data).unwrap_or(data.len());
    let head = String::from_utf8_lossy(&data[..end]);
    let mut lines = UnfoldedLines::new(&head);
    let start_line = lines.next()?;
    if strip_prefix_ci(&start_line, "SIP/").is_some() {
        return None; // never answer a response
    }
    let method = Method::parse(start_line.split(' ').next()?)?;
    if method == Method::Ack {
        return None; // ACK gets no response
    }
    let mut headers = Headers::new();
    for line in lines {
        let Ok((name, value)) = split_header_line(&line) else {
            continue;
        };
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            continue;
        }
        let name = HeaderName::parse(name);
        let copy = match name {
            HeaderName::Via => true,
            HeaderName::From | HeaderName::To | HeaderName::CallId | HeaderName::CSeq => {
                headers.get(&name).is_none()
            }
            _ => false,
        };
        if copy {
            headers.push(name, value);
        }
    }
    // The response goes where the top Via says; when only a lenient reading of it
    // works, that reading replaces the first Via line so the response can be sent.
    if top_via(&headers).is_err() {
        let first = headers.get(&HeaderName::Via)?;
        let via = Via::parse_lenient(split_list_strict(first).next()?).ok()?;
        let line = headers.0.iter_mut().find(|h| h.name == HeaderName::Via)?;
        line.value = via.to_string();
        top_via(&headers).ok()?;
    }
    let status = err.status();
    let mut reason = format!("{} ({})", reason_phrase(status), err);
    reason.retain(|c| !c.is_control());
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

    #[test]
    fn redacted_logs_never_show_credentials() {
        let text = "REGISTER sip:pbx SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKr\r\n\
From: <sip:1001@pbx>;tag=a\r\nTo: <sip:1001@pbx>\r\nCall-ID: c\r\nCSeq: 2 REGISTER\r\n\
Authorization: Digest username=\"1001\", realm=\"r\", nonce=\"n1\", uri=\"sip:pbx\", \
response=\"6629fae49393a05397450978507c4ef1\", cnonce=\"0a4f\", qop=auth, nc=00000001\r\n\
Proxy-Authorization: Digest username=\"1001\", response=\"deadbeefdeadbeef\"\r\n\
Content-Length: 0\r\n\r\n";
        let msg = parse(text.as_bytes()).expect("parse");
        let log = redacted(&msg);
        assert!(log.contains("username=\"1001\""), "{log}");
        assert!(!log.contains("6629fae4"), "{log}");
        assert!(!log.contains("deadbeef"), "{log}");
        assert!(!log.contains("cnonce"), "{log}");
        assert!(log.contains("CSeq: 2 REGISTER"), "{log}");
    }

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
        // Addressed by its Via, the 400 can be formed without a Call-ID (RFC 4475 3.3.1).
        let resp =
            error_response_for(bad.as_bytes(), &ParseError::Missing("Call-ID")).expect("400");
        assert_eq!(resp.headers.get(&HeaderName::CallId), None);
        let bad = REGISTER.replace(
            "Via: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bK776asdhds;rport\r\n",
            "",
        );
        let resp = error_response_for(bad.as_bytes(), &ParseError::Missing("Via"));
        assert!(resp.is_none(), "no Via, nowhere to send a response");
        let bad = REGISTER.replace("CSeq: 1826 REGISTER", "CSeq: 1826 INVITE");
        let resp = error_response_for(bad.as_bytes(), &ParseError::Missing("x")).expect("400");
        assert_eq!(resp.status, 400);
    }

    #[test]
    fn header_names_resolve_in_any_case() {
        for h in KNOWN_HEADERS {
            assert_eq!(&HeaderName::parse(h.as_str()), h);
            assert_eq!(&HeaderName::parse(&h.as_str().to_ascii_uppercase()), h);
            assert!(!matches!(
                HeaderName::parse(h.as_str()),
                HeaderName::Other(_)
            ));
        }
        assert_eq!(HeaderName::parse("v"), HeaderName::Via);
        assert_eq!(HeaderName::parse("X-A"), HeaderName::Other("x-a".into()));
        let long = "X-".repeat(40);
        assert_eq!(HeaderName::parse(&long), HeaderName::Other(long.clone()));
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
    fn framer_byte_by_byte_and_stray_line_breaks() {
        let msg = parse(REGISTER.as_bytes()).expect("parse").to_bytes();
        let mut f = StreamFramer::new(65535);
        // A stray CR or LF before a message is skipped, not waited on forever.
        f.push(b"\r\n\rX");
        f.push(&msg[1..]);
        assert!(matches!(f.next_frame(), Ok(Some(Frame::Message(_)))));
        let mut f = StreamFramer::new(65535);
        f.push(b"\n");
        let mut frames = Vec::new();
        for b in msg.iter() {
            f.push(&[*b]);
            while let Some(frame) = f.next_frame().expect("frame") {
                frames.push(frame);
            }
        }
        assert_eq!(frames, vec![Frame::Message(msg.clone())]);
        // CRLF CR may still become a ping.
        f.push(b"\r\n\r");
        assert_eq!(f.next_frame(), Ok(None));
        f.push(b"\n");
        assert_eq!(f.next_frame(), Ok(Some(Frame::Ping)));
        // Headers that never end hit the size limit.
        let mut f = StreamFramer::new(100);
        f.push(&[b'a'; 101]);
        assert_eq!(f.next_frame(), Err(FramingError::TooLarge(100)));
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

    /// RFC 4475 torture messages, byte-exact, with `MANIFEST` saying what each is.
    mod rfc4475 {
        use super::*;

        struct Entry {
            name: String,
            class: String,
            expect: Option<u16>,
        }

        fn dir() -> std::path::PathBuf {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rfc4475")
        }

        fn manifest() -> Vec<Entry> {
            let text = std::fs::read_to_string(dir().join("MANIFEST")).expect("MANIFEST");
            text.lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
                .map(|l| {
                    let f: Vec<&str> = l.split(' ').collect();
                    let expect = f[3].strip_prefix("expect=").expect("expect=");
                    Entry {
                        name: f[0].to_owned(),
                        class: f[1].to_owned(),
                        expect: (expect != "-").then(|| expect.parse().expect("code")),
                    }
                })
                .collect()
        }

        fn load(name: &str) -> Vec<u8> {
            std::fs::read(dir().join(format!("{name}.dat"))).expect("corpus file")
        }

        fn parsed(name: &str) -> SipMessage {
            parse(&load(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
        }

        fn request(name: &str) -> Request {
            match parsed(name) {
                SipMessage::Request(r) => r,
                SipMessage::Response(_) => panic!("{name}: not a request"),
            }
        }

        /// `to_bytes` always writes Content-Length from the body (stream transports need
        /// it, and a changed body must not lie about its size), so a message received
        /// without one comes back with one more header line, and `l: 02` as `l: 2`.
        pub(super) fn expected_after_round_trip(m: &SipMessage) -> SipMessage {
            let mut m = m.clone();
            let len = m.body().len().to_string();
            let headers = m.headers_mut();
            match headers
                .0
                .iter_mut()
                .find(|h| h.name == HeaderName::ContentLength)
            {
                Some(h) => h.value = len,
                None => headers.push(HeaderName::ContentLength, len),
            }
            m
        }

        fn check(e: &Entry) -> Result<(), String> {
            let data = load(&e.name);
            let result = parse(&data);
            match e.class.as_str() {
                "valid" | "semantic-valid" => {
                    let m = result.map_err(|err| format!("rejected: {err}"))?;
                    let bytes = m.to_bytes();
                    let again = parse(&bytes).map_err(|err| format!("reparse: {err}"))?;
                    if again != expected_after_round_trip(&m) {
                        return Err(format!("round trip differs:\n{m:?}\n{again:?}"));
                    }
                    if again.to_bytes() != bytes {
                        return Err("second serialization differs".into());
                    }
                }
                "invalid" | "semantic-invalid" => {
                    let err = match result {
                        Ok(_) => return Err("accepted".into()),
                        Err(err) => err,
                    };
                    let resp = error_response_for(&data, &err);
                    match (e.expect, &resp) {
                        (Some(code), Some(r)) if r.status == code => {
                            // The response must be one the transport can send.
                            top_via(&r.headers).map_err(|e| format!("unroutable: {e}"))?;
                            let bytes = SipMessage::Response(r.clone()).to_bytes();
                            if !bytes.starts_with(format!("SIP/2.0 {code} ").as_bytes()) {
                                return Err("bad error response start line".into());
                            }
                        }
                        (None, None) => {}
                        _ => {
                            return Err(format!(
                                "error {err:?}: expected {:?}, got {:?}",
                                e.expect,
                                resp.map(|r| r.status)
                            ))
                        }
                    }
                }
                other => return Err(format!("unknown class {other}")),
            }
            Ok(())
        }

        #[test]
        fn corpus_is_complete() {
            let m = manifest();
            assert_eq!(m.len(), 49);
            for e in &m {
                assert!(dir().join(format!("{}.dat", e.name)).exists(), "{}", e.name);
            }
        }

        #[test]
        fn every_message_is_classified_as_the_manifest_says() {
            let failures: Vec<String> = manifest()
                .iter()
                .filter_map(|e| check(e).err().map(|why| format!("{}: {why}", e.name)))
                .collect();
            assert!(failures.is_empty(), "\n{}", failures.join("\n"));
        }

        /// Invalid messages must fail for the reason the RFC gives, not by accident.
        #[test]
        fn invalid_messages_fail_for_the_right_reason() {
            fn header(name: &'static str) -> impl Fn(&ParseError) -> bool {
                move |e| matches!(e, ParseError::Header { name: n, .. } if n == name)
            }
            let start = |e: &ParseError| matches!(e, ParseError::StartLine(_));
            type Check = Box<dyn Fn(&ParseError) -> bool>;
            let cases: Vec<(&str, Check)> = vec![
                ("badinv01", Box::new(header("Via"))),
                (
                    "clerr",
                    Box::new(|e| matches!(e, ParseError::BodyTooShort { .. })),
                ),
                ("ncl", Box::new(header("Content-Length"))),
                ("scalar02", Box::new(header("CSeq"))),
                ("scalarlg", Box::new(header("CSeq"))),
                ("quotbal", Box::new(header("To"))),
                ("ltgtruri", Box::new(start)),
                ("lwsruri", Box::new(start)),
                ("lwsstart", Box::new(start)),
                ("trws", Box::new(start)),
                ("escruri", Box::new(start)),
                ("baddate", Box::new(header("Date"))),
                ("regbadct", Box::new(header("Contact"))),
                ("badaspec", Box::new(header("To"))),
                ("badvers", Box::new(|e| matches!(e, ParseError::Version(_)))),
                (
                    "mismatch01",
                    Box::new(|e| matches!(e, ParseError::CSeqMismatch { .. })),
                ),
                (
                    "mismatch02",
                    Box::new(|e| matches!(e, ParseError::CSeqMismatch { .. })),
                ),
                ("bigcode", Box::new(start)),
                ("insuf", Box::new(|e| matches!(e, ParseError::Missing(_)))),
                (
                    "multi01",
                    Box::new(|e| matches!(e, ParseError::Header { .. })),
                ),
                ("mcl01", Box::new(header("Content-Length"))),
            ];
            for (name, ok) in cases {
                let err = parse(&load(name)).expect_err(name);
                assert!(ok(&err), "{name}: wrong reason {err:?}");
            }
            // baddn has no empty line after its headers; with one it still fails, on
            // the unquoted comma in the display name.
            let mut baddn = load("baddn");
            assert_eq!(parse(&baddn), Err(ParseError::Incomplete));
            baddn.extend_from_slice(b"\r\n");
            let err = parse(&baddn).expect_err("baddn");
            assert!(header("From")(&err), "baddn: {err:?}");
            let resp = error_response_for(&baddn, &err).expect("400");
            assert_eq!(resp.status, 400);
        }

        #[test]
        fn insuf_gets_a_400_with_what_can_be_copied() {
            let data = load("insuf");
            let err = parse(&data).expect_err("insuf");
            let resp = error_response_for(&data, &err).expect("a response");
            assert_eq!(resp.status, 400);
            assert_eq!(resp.headers.count(&HeaderName::Via), 1);
            assert_eq!(resp.headers.get(&HeaderName::CSeq), Some("193942 INVITE"));
            assert_eq!(resp.headers.get(&HeaderName::CallId), None);
            // multi01: the first of each single-valued header is copied, once.
            let data = load("multi01");
            let err = parse(&data).expect_err("multi01");
            let resp = error_response_for(&data, &err).expect("a response");
            assert_eq!(resp.headers.count(&HeaderName::CSeq), 1);
            assert_eq!(resp.headers.get(&HeaderName::CSeq), Some("5 INVITE"));
            assert_eq!(resp.headers.count(&HeaderName::To), 1);
        }

        #[test]
        fn wsinv_folding_and_lws() {
            let r = request("wsinv");
            assert_eq!(r.method, Method::Invite);
            assert_eq!(r.uri, "sip:vivekg@chair-dnrc.example.com;unknownparam");
            let vias: Vec<Via> = r
                .headers
                .list(&HeaderName::Via)
                .map(|v| Via::parse(v).expect("via"))
                .collect();
            assert_eq!(vias.len(), 3);
            assert_eq!(
                (vias[0].transport.as_str(), vias[0].host.as_str()),
                ("UDP", "192.0.2.2")
            );
            assert_eq!(vias[1].branch(), Some("z9hG4bK9ikj8"));
            assert_eq!(vias[2].host, "192.168.255.111");
            assert_eq!(vias[2].branch(), Some("z9hG4bK30239"));
            let to = to_header(&r.headers).expect("to");
            assert_eq!(to.tag(), Some("1918181833n"));
            let from = from_header(&r.headers).expect("from");
            assert_eq!(from.display.as_deref(), Some(r#"J Rosenberg \\\""#));
            assert_eq!(from.tag(), Some("98asjd8"));
            assert_eq!(max_forwards(&r.headers), Some(68));
            assert_eq!(cseq(&r.headers).expect("cseq"), (9, Method::Invite));
            assert_eq!(
                r.headers.get(&HeaderName::Other("NewFangledHeader".into())),
                Some("newfangled value continued newfangled value")
            );
            assert_eq!(
                r.headers
                    .get(&HeaderName::Other("UnknownHeaderWithUnusualValue".into())),
                Some(";;,,;;,;")
            );
            assert_eq!(r.headers.get(&HeaderName::Other("s".into())), Some(""));
            let contacts: Vec<_> = r.headers.list(&HeaderName::Contact).collect();
            assert_eq!(contacts.len(), 1);
            let c = NameAddr::parse(contacts[0]).expect("contact");
            assert_eq!(c.display.as_deref(), Some(r#"Quoted string \"\""#));
            assert_eq!(c.param("newparam"), Some(Some("newvalue")));
            assert_eq!(c.param("secondparam"), Some(None));
            assert_eq!(c.param("q"), Some(Some("0.33")));
            assert_eq!(r.body.len(), 150);
        }

        #[test]
        fn extension_methods_and_escapes() {
            let r = request("intmeth");
            assert_eq!(
                r.method,
                Method::Other("!interesting-Method0123456789_*+`.%indeed'~".into())
            );
            let u = SipUri::parse(&r.uri).expect("uri");
            assert_eq!(u.host, "example.com");
            assert_eq!(
                u.user.as_deref(),
                Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
            );
            let via = top_via(&r.headers).expect("via");
            assert_eq!(via.branch(), Some("z9hG4bK-.!%66*_+`'~"));
            assert_eq!(
                call_id(&r.headers),
                Some("intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{")
            );

            // % is not an escape in a method or a header name.
            let r = request("esc02");
            assert_eq!(r.method, Method::Other("RE%47IST%45R".into()));
            assert_eq!(r.headers.count(&HeaderName::Contact), 2);
            assert!(r
                .headers
                .get(&HeaderName::Other("C%6Fntact".into()))
                .is_some());

            let r = request("escnull");
            let to = to_header(&r.headers).expect("to");
            let u = SipUri::parse(&to.uri).expect("uri");
            assert_eq!(u.user.as_deref(), Some("null-\0-null"));
            let contacts: Vec<_> = r.headers.list(&HeaderName::Contact).collect();
            let u = SipUri::parse(&NameAddr::parse(contacts[1]).expect("c").uri).expect("u");
            assert_eq!(u.user.as_deref(), Some("\0\0"));

            let r = request("esc01");
            let u = SipUri::parse(&r.uri).expect("uri");
            assert_eq!(u.user.as_deref(), Some("sips:user@example.com"));

            let r = request("semiuri");
            let u = SipUri::parse(&r.uri).expect("uri");
            assert_eq!(u.user.as_deref(), Some("user;par=u@example.net"));
            assert_eq!(u.host, "example.com");
            assert!(u.params.0.is_empty());
        }

        #[test]
        fn display_names_and_addr_specs() {
            let r = request("lwsdisp");
            let from = from_header(&r.headers).expect("from");
            assert_eq!(from.display.as_deref(), Some("caller"));
            assert_eq!(from.uri, "sip:caller@example.com");

            // A Contact addr-spec's ;params are the header's (RFC 3261 20.10).
            let r = request("cparam01");
            let c = NameAddr::parse(r.headers.get(&HeaderName::Contact).expect("c")).expect("c");
            assert_eq!(c.uri, "sip:+19725552222@gw1.example.net");
            assert_eq!(c.param("unknownparam"), Some(None));
            let r = request("cparam02");
            let c = NameAddr::parse(r.headers.get(&HeaderName::Contact).expect("c")).expect("c");
            assert_eq!(c.uri, "sip:+19725552222@gw1.example.net;unknownparam");
            assert!(c.params.0.is_empty());
            let r = request("regescrt");
            let c = NameAddr::parse(r.headers.get(&HeaderName::Contact).expect("c")).expect("c");
            assert_eq!(
                c.uri,
                "sip:user@example.com?Route=%3Csip:sip.example.com%3E"
            );

            let r = request("unksm2");
            assert_eq!(to_header(&r.headers).expect("to").uri, "isbn:2983792873");
            let r = request("inv2543");
            assert_eq!(from_header(&r.headers).expect("from").tag(), None);
            assert_eq!(top_via(&r.headers).expect("via").branch(), None);
            let r = request("badbranch");
            assert_eq!(top_via(&r.headers).expect("via").branch(), Some("z9hG4bK"));
        }

        #[test]
        fn long_and_odd_messages() {
            let r = request("longreq");
            assert_eq!(r.headers.list(&HeaderName::Via).count(), 34);
            let r = request("transports");
            let transports: Vec<String> = r
                .headers
                .list(&HeaderName::Via)
                .map(|v| Via::parse(v).expect("via").transport)
                .collect();
            assert_eq!(transports, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);

            // dblreq: Content-Length bounds the first request; the second is ignored.
            let r = request("dblreq");
            assert_eq!(r.method, Method::Register);
            assert!(r.body.is_empty());

            // mpart01: binary body kept byte for byte.
            let data = load("mpart01");
            let r = request("mpart01");
            let end = header_end(&data).expect("end");
            assert_eq!(&r.body[..], &data[end..]);
            assert!(std::str::from_utf8(&r.body).is_err());

            let SipMessage::Response(resp) = parsed("unreason") else {
                panic!("unreason")
            };
            assert_eq!(resp.status, 200);
            assert!(resp.reason.starts_with("= 2**3 * 5**2 "));
            assert!(!resp.reason.is_ascii());

            let SipMessage::Response(resp) = parsed("noreason") else {
                panic!("noreason")
            };
            assert_eq!((resp.status, resp.reason.as_str()), (100, ""));
            assert!(resp.to_bytes().starts_with(b"SIP/2.0 100 \r\n"));
            // Without the SP the grammar is broken; we accept it as a liberal receiver.
            let mut data = load("noreason");
            data.remove(11);
            assert!(matches!(parse(&data), Ok(SipMessage::Response(r)) if r.reason.is_empty()));

            for name in ["unkscm", "novelsc"] {
                assert!(
                    SipUri::parse(&request(name).uri).is_err(),
                    "{name} is not sip:"
                );
            }
            assert_eq!(max_forwards(&request("zeromf").headers), Some(0));
        }
    }

    /// Generated messages: round trips, folding, and no panics on any bytes.
    mod props {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;
        use proptest::test_runner::Config;

        fn config(cases: u32) -> Config {
            Config {
                cases,
                failure_persistence: None,
                ..Config::default()
            }
        }

        fn method() -> impl Strategy<Value = Method> {
            prop_oneof![
                prop::sample::select(vec![
                    "INVITE",
                    "ACK",
                    "BYE",
                    "CANCEL",
                    "REGISTER",
                    "OPTIONS",
                    "INFO",
                    "UPDATE",
                    "PRACK",
                    "SUBSCRIBE",
                    "NOTIFY",
                    "REFER",
                    "MESSAGE",
                    "PUBLISH",
                ])
                .prop_map(|m| Method::parse(m).expect("known")),
                "[A-Za-z0-9!%*_+`'~.-]{1,12}".prop_map(|m| Method::parse(&m).expect("token")),
            ]
        }

        fn host() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-z][a-z0-9-]{0,8}(\\.[a-z]{2,5}){0,2}",
                (any::<[u8; 4]>()).prop_map(|o| format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3])),
                Just("[2001:db8::10]".to_owned()),
            ]
        }

        fn sip_uri() -> impl Strategy<Value = String> {
            (
                prop::sample::select(vec!["sip", "sips", "SIP"]),
                prop::option::of("([a-zA-Z0-9_.!~*'()&=+$,;?/-]|%[0-9A-F]{2}){1,10}"),
                host(),
                prop::option::of(1u16..),
                vec("[a-z]{1,5}(=[a-zA-Z0-9.-]{1,5})?", 0..3),
            )
                .prop_map(|(scheme, user, host, port, params)| {
                    let mut u = format!("{scheme}:");
                    if let Some(user) = user {
                        u.push_str(&user);
                        u.push('@');
                    }
                    u.push_str(&host);
                    if let Some(p) = port {
                        u.push_str(&format!(":{p}"));
                    }
                    for p in params {
                        u.push(';');
                        u.push_str(&p);
                    }
                    u
                })
        }

        fn request_uri() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => sip_uri(),
                1 => "[a-z][a-z0-9+.-]{0,6}:[a-zA-Z0-9._~!$&'()*+,;=:@/-]{1,12}"
                    .prop_filter("not sip", |u| sip_uri_parts(u).is_none()),
            ]
        }

        fn params() -> impl Strategy<Value = String> {
            vec(
                "[a-zA-Z][a-zA-Z0-9.!%*_+`'~-]{0,6}(=[a-zA-Z0-9.!%*_+`'~-]{1,6}|=\"[a-z ,;]{0,6}\")?",
                0..3,
            )
            .prop_map(|ps| ps.iter().map(|p| format!(";{p}")).collect())
        }

        fn name_addr() -> impl Strategy<Value = String> {
            (
                prop_oneof![
                    Just(String::new()),
                    "[a-zA-Z0-9]{1,6}( [a-zA-Z0-9.-]{1,6})?".prop_map(|d| format!("{d} ")),
                    "([a-zA-Z0-9 ,;:<>@]|\\\\\"){0,10}".prop_map(|d| format!("\"{d}\" ")),
                ],
                sip_uri(),
                params(),
                any::<bool>(),
            )
                .prop_map(|(display, uri, params, bare)| {
                    // An addr-spec may go without <> only when nothing makes it ambiguous.
                    if bare && display.is_empty() && !uri.contains([';', '?', ',']) {
                        format!("{uri}{params}")
                    } else {
                        format!("{display}<{uri}>{params}")
                    }
                })
        }

        fn via() -> impl Strategy<Value = String> {
            (
                prop::sample::select(vec!["UDP", "TCP", "TLS", "SCTP", "WS", "X-NEW"]),
                host(),
                prop::option::of(1u16..),
                "[a-zA-Z0-9.!%*_+`'~-]{0,10}",
                any::<bool>(),
            )
                .prop_map(|(t, host, port, branch, rport)| {
                    let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                    let rport = if rport { ";rport" } else { "" };
                    format!("SIP/2.0/{t} {host}{port};branch=z9hG4bK{branch}{rport}")
                })
        }

        /// A list header: several lines, or one line with commas.
        fn list_lines(
            item: impl Strategy<Value = String>,
            n: std::ops::Range<usize>,
        ) -> impl Strategy<Value = Vec<String>> {
            (vec(item, n), any::<bool>()).prop_map(|(items, one_line)| {
                if one_line && !items.is_empty() {
                    vec![items.join(", ")]
                } else {
                    items
                }
            })
        }

        fn spelling(names: &'static [&'static str]) -> impl Strategy<Value = HeaderName> {
            prop::sample::select(names).prop_map(HeaderName::parse)
        }

        fn header_value() -> impl Strategy<Value = String> {
            "[!-~é中]([ -~é中]{0,24}[!-~é中])?"
        }

        /// Headers in random order: the mandatory ones, optional known ones, unknown ones.
        fn headers(cseq_method: Method, body_len: usize) -> impl Strategy<Value = Headers> {
            (
                list_lines(via(), 1..4),
                (
                    name_addr(),
                    name_addr(),
                    "[a-zA-Z0-9.!%*_+`'~()<>:/?{}-]{1,12}(@[a-z0-9.]{1,8})?",
                ),
                (0u32..1 << 31, prop::option::of(0u32..=255)),
                list_lines(name_addr(), 0..3),
                vec(("X-[A-Za-z0-9.!%*_+`'~-]{1,10}", header_value()), 0..4),
                vec(
                    (
                        spelling(&[
                            "Subject",
                            "s",
                            "User-Agent",
                            "Supported",
                            "k",
                            "Allow",
                            "Accept",
                        ]),
                        header_value(),
                    ),
                    0..3,
                ),
                (
                    spelling(&["Via", "v", "VIA"]),
                    spelling(&["From", "f"]),
                    spelling(&["To", "t"]),
                    spelling(&["Call-ID", "i", "call-id"]),
                    spelling(&["Contact", "m"]),
                    spelling(&["Content-Length", "l"]),
                ),
                any::<prop::sample::Index>(),
            )
                .prop_map(
                    move |(
                        vias,
                        (from, to, call_id),
                        (seq, mf),
                        contacts,
                        ext,
                        known,
                        names,
                        shuffle,
                    )| {
                        let (via_n, from_n, to_n, cid_n, contact_n, cl_n) = names;
                        let mut hs: Vec<Header> = Vec::new();
                        let mut push =
                            |name: HeaderName, value: String| hs.push(Header { name, value });
                        for v in vias {
                            push(via_n.clone(), v);
                        }
                        push(from_n, from);
                        push(to_n, to);
                        push(cid_n, call_id);
                        push(HeaderName::CSeq, format!("{seq} {cseq_method}"));
                        if let Some(mf) = mf {
                            push(HeaderName::MaxForwards, mf.to_string());
                        }
                        for c in contacts {
                            push(contact_n.clone(), c);
                        }
                        for (n, v) in ext {
                            push(HeaderName::parse(&n), v);
                        }
                        for (n, v) in known {
                            push(n, v);
                        }
                        push(cl_n, body_len.to_string());
                        // Rotate: order must not matter, except among the Via lines.
                        let k = shuffle.index(hs.len());
                        let mut vias: Vec<Header> = Vec::new();
                        hs.retain(|h| {
                            if h.name == HeaderName::Via {
                                vias.push(h.clone());
                                false
                            } else {
                                true
                            }
                        });
                        let at = k.min(hs.len());
                        hs.splice(at..at, vias);
                        Headers(hs)
                    },
                )
        }

        fn body() -> impl Strategy<Value = Bytes> {
            prop_oneof![
                Just(Vec::new()),
                vec(any::<u8>(), 0..64),
                vec(
                    prop::sample::select(vec![0u8, b'\r', b'\n', b'a', b' ', 0xff]),
                    0..32
                ),
            ]
            .prop_map(Bytes::from)
        }

        fn message() -> impl Strategy<Value = SipMessage> {
            let request = (method(), request_uri(), body()).prop_flat_map(|(m, uri, body)| {
                headers(m.clone(), body.len()).prop_map(move |headers| {
                    SipMessage::Request(Request {
                        method: m.clone(),
                        uri: uri.clone(),
                        headers,
                        body: body.clone(),
                    })
                })
            });
            let response = (100u16..700, "([ -~é]{0,20})", method(), body()).prop_flat_map(
                |(status, reason, m, body)| {
                    headers(m, body.len()).prop_map(move |headers| {
                        SipMessage::Response(Response {
                            status,
                            reason: reason.clone(),
                            headers,
                            body: body.clone(),
                        })
                    })
                },
            );
            prop_oneof![3 => request, 1 => response]
        }

        /// Folds header lines at some single spaces after the colon (RFC 3261 7.3.1).
        fn fold(bytes: &[u8], at: &[bool]) -> Vec<u8> {
            let end = header_end(bytes).expect("headers");
            let mut out = Vec::with_capacity(bytes.len() + 64);
            let (mut line_start, mut after_colon, mut k) = (true, false, 0);
            let mut first_line = true;
            for i in 0..end {
                let b = bytes[i];
                let single = b == b' '
                    && i > 0
                    && bytes[i - 1] != b' '
                    && !matches!(bytes.get(i + 1), Some(b' ' | b'\r') | None);
                if single && after_colon && !first_line {
                    k += 1;
                    if at.get(k % at.len().max(1)).copied().unwrap_or(false) {
                        out.extend_from_slice(b"\r\n ");
                        continue;
                    }
                }
                out.push(b);
                if b == b'\n' {
                    line_start = true;
                    after_colon = false;
                    first_line = false;
                } else {
                    if b == b':' && !line_start {
                        after_colon = true;
                    }
                    line_start = false;
                }
            }
            out.extend_from_slice(&bytes[end..]);
            out
        }

        #[test]
        fn folding_happens() {
            let folded = fold(REGISTER.as_bytes(), &[true]);
            assert!(folded.windows(3).filter(|w| w == b"\r\n ").count() > 5);
            assert_eq!(parse(&folded), parse(REGISTER.as_bytes()));
        }

        /// Everything the network-facing API offers, on any bytes: must not panic, and
        /// what parses must survive a round trip.
        fn exercise(data: &[u8]) {
            match parse(data) {
                Ok(m) => {
                    let again = parse(&m.to_bytes()).expect("serialized message parses");
                    assert_eq!(again, rfc4475::expected_after_round_trip(&m));
                    let _ = redacted(&m);
                }
                Err(e) => {
                    if let Some(r) = error_response_for(data, &e) {
                        let _ = parse(&SipMessage::Response(r).to_bytes());
                    }
                }
            }
            let mut f = StreamFramer::new(4096);
            for chunk in data.chunks(7) {
                f.push(chunk);
                while let Ok(Some(frame)) = f.next_frame() {
                    if let Frame::Message(m) = frame {
                        let _ = parse(&m);
                    }
                }
            }
        }

        #[derive(Debug, Clone)]
        enum Mutation {
            Flip(prop::sample::Index, u8),
            Truncate(prop::sample::Index),
            Insert(prop::sample::Index, Vec<u8>),
            Remove(prop::sample::Index),
        }

        fn mutation() -> impl Strategy<Value = Mutation> {
            let interesting = vec(
                prop::sample::select(vec![
                    0u8, b'\r', b'\n', b' ', b'\t', b':', b';', b',', b'"', b'<', b'>', b'%', b'@',
                    b'\\', 0xc3, 0xff, b'0', b'9',
                ]),
                1..4,
            );
            prop_oneof![
                (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
                any::<prop::sample::Index>().prop_map(Mutation::Truncate),
                (any::<prop::sample::Index>(), interesting)
                    .prop_map(|(i, b)| Mutation::Insert(i, b)),
                any::<prop::sample::Index>().prop_map(Mutation::Remove),
            ]
        }

        fn mutate(mut data: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
            for m in muts {
                if data.is_empty() {
                    break;
                }
                match m {
                    Mutation::Flip(i, b) => {
                        let i = i.index(data.len());
                        data[i] ^= b;
                    }
                    Mutation::Truncate(i) => data.truncate(i.index(data.len())),
                    Mutation::Insert(i, b) => {
                        let i = i.index(data.len());
                        data.splice(i..i, b.iter().copied());
                    }
                    Mutation::Remove(i) => {
                        data.remove(i.index(data.len()));
                    }
                }
            }
            data
        }

        fn corpus_file() -> impl Strategy<Value = Vec<u8>> {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rfc4475");
            let mut files: Vec<Vec<u8>> = std::fs::read_dir(dir)
                .expect("corpus")
                .filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "dat"))
                .map(|e| std::fs::read(e.path()).expect("read"))
                .collect();
            files.sort();
            prop::sample::select(files)
        }

        proptest! {
            #![proptest_config(config(1000))]

            #[test]
            fn generated_messages_round_trip(m in message()) {
                let bytes = m.to_bytes();
                let parsed = parse(&bytes).map_err(|e| {
                    TestCaseError::fail(format!("{e}\n{}", String::from_utf8_lossy(&bytes)))
                })?;
                prop_assert_eq!(&parsed, &m);
                prop_assert_eq!(parsed.to_bytes(), bytes);
            }

            #[test]
            fn folded_messages_normalize_in_one_pass(m in message(), at in vec(any::<bool>(), 1..8)) {
                let folded = fold(&m.to_bytes(), &at);
                let once = parse(&folded).map_err(|e| {
                    TestCaseError::fail(format!("{e}\n{}", String::from_utf8_lossy(&folded)))
                })?;
                prop_assert_eq!(&once, &m);
                let first = once.to_bytes();
                let second = parse(&first).expect("reparse").to_bytes();
                prop_assert_eq!(first, second);
            }

            #[test]
            fn arbitrary_bytes_never_panic(data in vec(any::<u8>(), 0..600)) {
                exercise(&data);
            }

            #[test]
            fn mutated_messages_never_panic(
                m in message(),
                muts in vec(mutation(), 1..5),
            ) {
                exercise(&mutate(m.to_bytes().to_vec(), &muts));
            }

            #[test]
            fn mutated_torture_messages_never_panic(
                data in corpus_file(),
                muts in vec(mutation(), 1..6),
            ) {
                exercise(&mutate(data, &muts));
            }
        }
    }
}
