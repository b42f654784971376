//! Admission: what the node does with a new request that no transaction, dialog or call
//! of ours has claimed. Decided here once, as plain data: answer it (every RFC 3261 8.2
//! answer: 416, 420, 481, 483, 405, 501, the OPTIONS answer), challenge it, refuse it
//! (every digest outcome: 401/407, 403 for wrong credentials or a From/To that is not the
//! authenticated extension, 400 for malformed ones), or hand it on (register, subscribe,
//! start a call, take a leg another node forwarded, or load an extension and ask again).
//!
//! Pure: no tokio, no clock, no random numbers, no store. `now` and the To tag any answer
//! carries come in with the request; the extensions and credentials are read through
//! [`Authorizer`], which the registrar implements. New kinds of requests (REFER, dialog
//! and presence SUBSCRIBEs, requests from trunks) enter the node here.
//! Must not: send, spawn, or touch the transaction layer; the core carries out what this
//! decides.

use tracing::{debug, info, warn};

use crate::call::machine::parse_offer;
use crate::cluster::routing::{verify_relay, SeenRelays, RELAY_HEADER};
use crate::registrar::{AuthOutcome, SUPPORTED};
use crate::sip::message::{
    from_header, reason_phrase, to_header, HeaderName, Method, Request, Response, SipUri,
};
use crate::sip::sdp::SessionDescription;
use crate::sip::Peer;
use crate::voicemail::mwi;

/// Methods this node answers today; others known to SIP get 405, unknown ones 501.
/// What the node takes: the registrar's and a call's methods (UPDATE, INFO and PRACK live
/// inside calls, see [`crate::call::machine::ALLOW`]).
/// SUBSCRIBE is for message waiting (`message-summary`) only.
pub const ALLOWED: &str =
    "INVITE, ACK, CANCEL, BYE, REGISTER, OPTIONS, UPDATE, INFO, PRACK, SUBSCRIBE";

/// What admission reads about extensions and credentials (the registrar's caches).
pub trait Authorizer {
    /// Digest authentication of `req` by its `header` credentials (Authorization for
    /// REGISTER, Proxy-Authorization for others) at `now_unix`.
    fn authenticate(&self, req: &Request, header: &HeaderName, now_unix: i64) -> AuthOutcome;
    /// Whether the extension `number` exists, as far as memory knows: `None` when it must
    /// be loaded first.
    fn extension_known(&self, number: &str) -> Option<bool>;
}

/// What a decision is made with, besides the request.
pub struct Context<'a> {
    pub auth: &'a dyn Authorizer,
    /// The cluster's shared secret, which signs INVITEs another node forwards here;
    /// `None` outside a cluster (such INVITEs are then refused).
    pub cluster_secret: Option<&'a [u8]>,
    /// Forwarded INVITEs taken lately, so a replayed one is refused.
    pub seen_relays: &'a mut SeenRelays,
    pub now_unix: i64,
    /// The To tag of any answer made here (kept when the request has one).
    pub to_tag: &'a str,
    /// The `Server` header of answers made here.
    pub server: &'a str,
}

/// A new call: the authenticated caller, the number it dialled, and its SDP offer.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCall {
    pub caller: String,
    pub callee: String,
    pub offer: SessionDescription,
}

/// What to do with a new request.
#[must_use]
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Answer with this final response.
    Reply(Response),
    /// Ask for credentials: `status` 401 with WWW-Authenticate (REGISTER) or 407 with
    /// Proxy-Authenticate; the registrar makes the nonce.
    Challenge {
        status: u16,
        header: HeaderName,
        stale: bool,
    },
    /// A REGISTER authenticated for its own AOR: the registrar updates the bindings.
    Register { aor: String },
    /// A `message-summary` SUBSCRIBE for the MWI task: `subscriber` is the authenticated
    /// extension of a new subscription, `None` for one inside its dialog (the dialog
    /// vouches for it).
    Subscribe { subscriber: Option<String> },
    /// Start a call (the dialplan decides where it goes).
    Call(Box<NewCall>),
    /// A leg another node forwarded (its signature checked, its Call-ID new): ring
    /// `numbers` on this node's phones; `call.callee` is the first of them.
    Relayed {
        call: Box<NewCall>,
        numbers: Vec<String>,
        node: String,
    },
    /// Load this extension into memory, then decide the same request again.
    Load(String),
}

/// Decides what to do with a new request (`req` from `from`) that belongs to no
/// transaction, dialog or call of this node.
pub fn admit(req: &Request, from: &Peer, cx: &mut Context<'_>) -> Decision {
    // RFC 3261 8.2.2.1: only SIP URIs (and tel for calls, later) are served.
    let scheme = req.uri.split(':').next().unwrap_or_default();
    if !scheme.eq_ignore_ascii_case("sip") && !scheme.eq_ignore_ascii_case("sips") {
        return reply(req, 416, cx);
    }
    // RFC 3261 8.2.2.3: refuse extensions we were required to understand. A call also
    // understands 100rel (the dialog layer sends reliable 18x, RFC 3262). A CANCEL is
    // never refused for its Require (RFC 3261 9.2).
    let understood = |t: &str| {
        SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(t))
            || (req.method == Method::Invite && t.eq_ignore_ascii_case("100rel"))
    };
    let unsupported: Vec<&str> = req
        .headers
        .list(&HeaderName::Require)
        .filter(|t| !understood(t))
        .collect();
    if !unsupported.is_empty() && req.method != Method::Cancel {
        let mut r = response(req, 420, cx);
        r.headers
            .push(HeaderName::Unsupported, unsupported.join(", "));
        return Decision::Reply(r);
    }
    if req.method == Method::Subscribe {
        return subscribe(req, from, cx);
    }
    // A request with a To tag belongs to a dialog; no call of ours has it.
    let in_dialog = to_header(&req.headers).is_ok_and(|t| t.tag().is_some());
    if in_dialog && req.method != Method::Register && req.method != Method::Options {
        return reply(req, 481, cx);
    }
    match &req.method {
        Method::Register => register(req, from, cx),
        Method::Invite => invite(req, from, cx),
        Method::Options => {
            let mut r = response(req, 200, cx);
            r.headers.push(HeaderName::Allow, ALLOWED);
            r.headers
                .push(HeaderName::Other("Accept".into()), "application/sdp");
            r.headers.push(HeaderName::Supported, SUPPORTED.join(", "));
            r.headers
                .push(HeaderName::Other("Allow-Events".into()), mwi::EVENT);
            Decision::Reply(r)
        }
        Method::Other(_) => {
            let mut r = response(req, 501, cx);
            r.headers.push(HeaderName::Allow, ALLOWED);
            Decision::Reply(r)
        }
        _ => {
            let mut r = response(req, 405, cx);
            r.headers.push(HeaderName::Allow, ALLOWED);
            Decision::Reply(r)
        }
    }
}

/// A REGISTER: its AOR is the user part of the To URI (RFC 3261 10.3 step 5), and only
/// that extension's credentials may change its bindings (step 3).
fn register(req: &Request, from: &Peer, cx: &mut Context<'_>) -> Decision {
    let Ok(to) = to_header(&req.headers) else {
        return reply(req, 400, cx);
    };
    // RFC 4475 3.3.4: an AOR must be a SIP or SIPS URI, else 400.
    let aor = match SipUri::parse(&to.uri) {
        Ok(SipUri { user: Some(u), .. }) => u,
        Ok(_) => return reply(req, 404, cx),
        Err(_) => {
            let why = "Bad Request (To is not a SIP URI)";
            return Decision::Reply(own_response(req, 400, why, cx.to_tag, cx.server));
        }
    };
    let user = match authenticate(req, from, Auth::Register, cx) {
        Ok(user) => user,
        Err(d) => return d,
    };
    if user != aor {
        info!(aor = %aor, user = %user, "registration refused: credentials for another user");
        return reply(req, 403, cx);
    }
    Decision::Register { aor }
}

/// A SUBSCRIBE: only `message-summary` is served. A new one is authenticated like an
/// INVITE (407); one in a dialog is vouched for by its dialog.
fn subscribe(req: &Request, from: &Peer, cx: &mut Context<'_>) -> Decision {
    if !mwi::is_message_summary(req) {
        let mut r = response(req, 489, cx);
        r.headers
            .push(HeaderName::Other("Allow-Events".into()), mwi::EVENT);
        return Decision::Reply(r);
    }
    if mwi::is_in_dialog(req) {
        return Decision::Subscribe { subscriber: None };
    }
    match authenticate(req, from, Auth::Proxy, cx) {
        Ok(user) => Decision::Subscribe {
            subscriber: Some(user),
        },
        Err(d) => d,
    }
}

/// A new INVITE (no To tag): a forwarded leg is checked by its signature; any other
/// caller by digest, and only as the extension its From names.
fn invite(req: &Request, from: &Peer, cx: &mut Context<'_>) -> Decision {
    let max_forwards = req
        .headers
        .get(&HeaderName::MaxForwards)
        .and_then(|v| v.trim().parse::<u32>().ok());
    if max_forwards == Some(0) {
        return reply(req, 483, cx);
    }
    let relay = HeaderName::Other(RELAY_HEADER.into());
    if let Some(value) = req.headers.get(&relay) {
        return relayed(req, from, value, cx);
    }
    // The dialled extension must be in memory before authenticating: checking the
    // credentials consumes the nonce count, so the request must not come back after.
    let callee = SipUri::parse(&req.uri).ok().and_then(|u| u.user);
    if let Some(c) = &callee {
        if cx.auth.extension_known(c).is_none() {
            return Decision::Load(c.clone());
        }
    }
    let user = match authenticate(req, from, Auth::Proxy, cx) {
        Ok(user) => user,
        Err(d) => return d,
    };
    let Ok(from_h) = from_header(&req.headers) else {
        return reply(req, 400, cx);
    };
    let from_user = SipUri::parse(&from_h.uri).ok().and_then(|u| u.user);
    if from_user.as_deref() != Some(user.as_str()) {
        info!(user = %user, "call refused: From is not the authenticated extension");
        return reply(req, 403, cx);
    }
    let Some(callee) = callee else {
        return reply(req, 404, cx);
    };
    match offer(req, cx) {
        Ok(offer) => Decision::Call(Box::new(NewCall {
            caller: user,
            callee,
            offer,
        })),
        Err(d) => d,
    }
}

/// An INVITE another node forwarded here for a phone this node reaches: checked by its
/// signature instead of a digest challenge (that node authenticated the caller and ran
/// the dialplan), and taken once per Call-ID.
fn relayed(req: &Request, from: &Peer, value: &str, cx: &mut Context<'_>) -> Decision {
    let call_id = req.headers.get(&HeaderName::CallId).unwrap_or_default();
    let checked = match cx.cluster_secret {
        Some(secret) => {
            verify_relay(secret, value, cx.now_unix, call_id).map_err(|e| e.to_string())
        }
        None => Err("this node is not in a cluster".to_owned()),
    };
    let checked = checked.and_then(|r| {
        if cx.seen_relays.first_time(call_id, cx.now_unix) {
            Ok(r)
        } else {
            Err("a replay: its Call-ID was forwarded here already".to_owned())
        }
    });
    let relayed = match checked {
        Ok(r) => r,
        Err(why) => {
            warn!(from = %from.remote, why, "forwarded call refused");
            return reply(req, 403, cx);
        }
    };
    let caller = from_header(&req.headers)
        .ok()
        .and_then(|f| SipUri::parse(&f.uri).ok())
        .and_then(|u| u.user);
    // The first number names the callee (the CDR's, at the forwarding node, names what
    // was dialled); the phones of all of them ring.
    let (Some(caller), Some(callee)) = (caller, relayed.numbers.first().cloned()) else {
        return reply(req, 400, cx);
    };
    match offer(req, cx) {
        Ok(offer) => Decision::Relayed {
            call: Box::new(NewCall {
                caller,
                callee,
                offer,
            }),
            numbers: relayed.numbers,
            node: relayed.node,
        },
        Err(d) => d,
    }
}

/// Which credentials a request carries.
#[derive(Clone, Copy)]
enum Auth {
    /// Authorization, challenged with 401 (a registrar, RFC 3261 22.2).
    Register,
    /// Proxy-Authorization, challenged with 407 (what a B2BUA authenticates).
    Proxy,
}

/// The one place a digest outcome becomes an answer: the authenticated extension, or
/// the decision that ends the request here.
fn authenticate(
    req: &Request,
    from: &Peer,
    kind: Auth,
    cx: &mut Context<'_>,
) -> Result<String, Decision> {
    let (credentials, status, challenge) = match kind {
        Auth::Register => (HeaderName::Authorization, 401, HeaderName::WwwAuthenticate),
        Auth::Proxy => (
            HeaderName::ProxyAuthorization,
            407,
            HeaderName::ProxyAuthenticate,
        ),
    };
    match cx.auth.authenticate(req, &credentials, cx.now_unix) {
        AuthOutcome::Ok(user) => Ok(user),
        AuthOutcome::Challenge { stale } => Err(Decision::Challenge {
            status,
            header: challenge,
            stale,
        }),
        AuthOutcome::Forbidden => {
            info!(from = %from.remote, method = %req.method, "refused: bad credentials");
            Err(reply(req, 403, cx))
        }
        AuthOutcome::Bad(why) => {
            debug!(why, "malformed credentials");
            Err(reply(req, 400, cx))
        }
        AuthOutcome::Load(number) => Err(Decision::Load(number)),
    }
}

/// The INVITE's SDP offer, or the refusal (488 or 400, the reason in the phrase).
fn offer(req: &Request, cx: &Context<'_>) -> Result<SessionDescription, Decision> {
    parse_offer(req).map_err(|e| {
        info!(error = %e, "call refused");
        let status = e.status();
        let why = format!("{} ({e})", reason_phrase(status));
        Decision::Reply(own_response(req, status, &why, cx.to_tag, cx.server))
    })
}

/// A response of this node to `req`: `status` with `reason`, the To tag `to_tag` (kept
/// when the request has one) and our `Server` header. Every answer the node makes itself
/// is built here, by admission and by the core alike.
pub fn own_response(
    req: &Request,
    status: u16,
    reason: &str,
    to_tag: &str,
    server: &str,
) -> Response {
    let mut r = Response::for_request(req, status, reason);
    r.ensure_to_tag(to_tag);
    r.headers.push(HeaderName::Server, server);
    r
}

fn response(req: &Request, status: u16, cx: &Context<'_>) -> Response {
    own_response(req, status, reason_phrase(status), cx.to_tag, cx.server)
}

fn reply(req: &Request, status: u16, cx: &Context<'_>) -> Decision {
    Decision::Reply(response(req, status, cx))
}

#[cfg(test)]
mod tests;
