//! Message waiting indication (RFC 3842 `message-summary` over RFC 6665 SUBSCRIBE/NOTIFY),
//! sans-IO: SUBSCRIBEs and mailbox counts in, with `now`; the response and the NOTIFYs to
//! send out; one timer (the earliest expiry).
//!
//! Owns: the subscription dialogs (our To tag, the subscriber's tag and Call-ID, route set
//! from Record-Route, remote target from Contact, our CSeq), expiry and refresh, and the
//! `application/simple-message-summary` body. Must not: authenticate (the node does, and
//! passes the extension it authenticated), read the store (counts are passed in), or send
//! anything (the node runs NOTIFYs as client transactions and reports their outcome).
//!
//! NOTIFYs go back over the flow the SUBSCRIBE came on (its source address, from the
//! socket it reached): a phone behind NAT listens there. A subscriber may watch only its
//! own mailbox: the Request-URI's user must be the authenticated extension.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::sip::message::{
    from_header, reason_phrase, to_header, HeaderName, Headers, Method, Request, Response, SipUri,
};
use crate::sip::transaction::new_branch;
use crate::sip::Peer;
use crate::store::VoicemailCounts;

/// The event package.
pub const EVENT: &str = "message-summary";
/// The body type (RFC 3842 5.1).
pub const CONTENT_TYPE: &str = "application/simple-message-summary";

/// Subscription lengths, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MwiConfig {
    /// Shorter requests get 423 with Min-Expires.
    pub min_expires: u32,
    /// Longer requests are shortened to this (a notifier may shorten, never lengthen).
    pub max_expires: u32,
    /// When the SUBSCRIBE has no Expires (RFC 3842 leaves it to the notifier).
    pub default_expires: u32,
    /// Also NOTIFY registered phones of a mailbox nobody subscribes to
    /// (`[voicemail] unsolicited_mwi`).
    pub unsolicited: bool,
}

impl Default for MwiConfig {
    fn default() -> Self {
        MwiConfig {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            unsolicited: false,
        }
    }
}

/// A subscription's dialog id, as our side sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubId {
    pub call_id: String,
    /// Our tag (the To tag of the SUBSCRIBE's 200).
    pub local_tag: String,
    /// The subscriber's From tag.
    pub remote_tag: String,
}

/// What to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MwiOut {
    /// The final response to the SUBSCRIBE just handled.
    Respond(Response),
    /// A NOTIFY to start as a client transaction; report its outcome with
    /// [`Subscriptions::on_notify_result`].
    Notify { sub: SubId, req: Request, to: Peer },
}

#[derive(Debug, Clone)]
struct Subscription {
    mailbox: String,
    /// `sip:MAILBOX@host`, the account the NOTIFY names.
    account: String,
    /// Their To (our From in NOTIFYs), without tag.
    local_uri: String,
    /// Their From (our To), without tag.
    remote_uri: String,
    remote_target: String,
    route_set: Vec<String>,
    peer: Peer,
    local_contact: String,
    local_cseq: u32,
    remote_cseq: u32,
    expires_at: Instant,
    /// What the last NOTIFY said.
    sent: VoicemailCounts,
}

/// The node's MWI subscriptions. See the module comment.
pub struct Subscriptions {
    cfg: MwiConfig,
    subs: HashMap<SubId, Subscription>,
    rng: StdRng,
}

/// Whether a request is for the `message-summary` package (RFC 6665 7.2.1: event type
/// tokens compare case-sensitively; parameters such as `id` are ignored).
pub fn is_message_summary(req: &Request) -> bool {
    req.headers
        .get(&HeaderName::Event)
        .map(|e| e.split(';').next().unwrap_or_default().trim() == EVENT)
        .unwrap_or(false)
}

/// The mailbox a SUBSCRIBE asks about: the Request-URI's user.
pub fn requested_mailbox(req: &Request) -> Option<String> {
    SipUri::parse(&req.uri).ok().and_then(|u| u.user)
}

/// Whether a SUBSCRIBE belongs to a dialog (has a To tag).
pub fn is_in_dialog(req: &Request) -> bool {
    to_header(&req.headers).is_ok_and(|t| t.tag().is_some())
}

impl Subscriptions {
    pub fn new(cfg: MwiConfig, seed: u64) -> Subscriptions {
        Subscriptions {
            cfg,
            subs: HashMap::new(),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub fn len(&self) -> usize {
        self.subs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// Whether a subscription watches `mailbox` (its phones need no unsolicited NOTIFY).
    pub fn watches(&self, mailbox: &str) -> bool {
        self.subs.values().any(|s| s.mailbox == mailbox)
    }

    /// The mailboxes someone watches.
    pub fn mailboxes(&self) -> Vec<String> {
        let mut m: Vec<String> = self.subs.values().map(|s| s.mailbox.clone()).collect();
        m.sort();
        m.dedup();
        m
    }

    /// A SUBSCRIBE from `subscriber` (the extension the node authenticated; unused for
    /// one in a dialog, which its dialog id vouches for) that arrived on `from`.
    /// `counts` are the requested mailbox's (ignored in a dialog: the last ones sent are
    /// kept up to date by [`Subscriptions::on_counts`]). `local_contact` is our Contact
    /// on that flow.
    #[must_use]
    pub fn on_subscribe(
        &mut self,
        req: &Request,
        from: Peer,
        subscriber: &str,
        counts: VoicemailCounts,
        local_contact: &str,
        now: Instant,
    ) -> Vec<MwiOut> {
        if req.method != Method::Subscribe {
            return vec![MwiOut::Respond(self.simple(req, 405))];
        }
        if !is_message_summary(req) {
            let mut r = self.simple(req, 489);
            r.headers
                .push(HeaderName::Other("Allow-Events".into()), EVENT);
            return vec![MwiOut::Respond(r)];
        }
        if !accepts_summary(req) {
            let mut r = self.simple(req, 406);
            r.headers
                .push(HeaderName::Other("Accept".into()), CONTENT_TYPE);
            return vec![MwiOut::Respond(r)];
        }
        let requested = match req.headers.get(&HeaderName::Expires) {
            None => self.cfg.default_expires,
            Some(v) => match v.trim().parse::<u32>() {
                Ok(e) => e,
                Err(_) => return vec![MwiOut::Respond(self.simple(req, 400))],
            },
        };
        if requested != 0 && requested < self.cfg.min_expires {
            let mut r = self.simple(req, 423);
            r.headers
                .push(HeaderName::MinExpires, self.cfg.min_expires.to_string());
            return vec![MwiOut::Respond(r)];
        }
        let expires = requested.min(self.cfg.max_expires);
        if is_in_dialog(req) {
            self.refresh(req, expires, now)
        } else {
            self.create(req, from, subscriber, counts, local_contact, expires, now)
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        req: &Request,
        from: Peer,
        subscriber: &str,
        counts: VoicemailCounts,
        local_contact: &str,
        expires: u32,
        now: Instant,
    ) -> Vec<MwiOut> {
        let Some(mailbox) = requested_mailbox(req) else {
            return vec![MwiOut::Respond(self.simple(req, 404))];
        };
        if mailbox != subscriber {
            return vec![MwiOut::Respond(self.simple(req, 403))];
        }
        let (Ok(from_h), Ok(to_h)) = (from_header(&req.headers), to_header(&req.headers)) else {
            return vec![MwiOut::Respond(self.simple(req, 400))];
        };
        let remote_target = req
            .headers
            .get(&HeaderName::Contact)
            .and_then(|c| crate::sip::message::NameAddr::parse(c).ok())
            .map(|c| c.uri);
        let (Some(remote_tag), Some(remote_target), Some(call_id), Some(cseq)) = (
            from_h.tag().map(str::to_owned),
            remote_target,
            req.headers.get(&HeaderName::CallId).map(str::to_owned),
            request_cseq(req),
        ) else {
            return vec![MwiOut::Respond(self.simple(req, 400))];
        };
        let host = SipUri::parse(&req.uri)
            .map(|u| u.host)
            .unwrap_or_else(|_| from.local.ip().to_string());
        let local_tag = format!("{:016x}", self.rng.gen::<u64>());
        let id = SubId {
            call_id,
            local_tag: local_tag.clone(),
            remote_tag,
        };
        let sub = Subscription {
            account: format!("sip:{mailbox}@{host}"),
            mailbox,
            local_uri: to_h.uri.clone(),
            remote_uri: from_h.uri.clone(),
            remote_target,
            route_set: req
                .headers
                .list(&HeaderName::RecordRoute)
                .map(str::to_owned)
                .collect(),
            peer: from,
            local_contact: local_contact.to_owned(),
            local_cseq: self.rng.gen_range(1..10_000),
            remote_cseq: cseq,
            expires_at: now + Duration::from_secs(u64::from(expires)),
            sent: counts,
        };
        let mut ok = self.ok(req, expires, &sub.local_contact);
        ok.ensure_to_tag(&local_tag);
        self.subs.insert(id.clone(), sub);
        // RFC 6665 4.2.1.2: the first NOTIFY at once; with Expires 0 it is a fetch: the
        // state once, and the subscription ends with it.
        let notify = if expires == 0 {
            self.terminate(&id, "terminated;reason=timeout")
        } else {
            self.notify(&id, now)
        };
        [Some(MwiOut::Respond(ok)), notify]
            .into_iter()
            .flatten()
            .collect()
    }

    fn refresh(&mut self, req: &Request, expires: u32, now: Instant) -> Vec<MwiOut> {
        let Some(id) = dialog_of(req) else {
            return vec![MwiOut::Respond(self.simple(req, 481))];
        };
        let cseq = request_cseq(req).unwrap_or(0);
        let Some(sub) = self.subs.get_mut(&id) else {
            return vec![MwiOut::Respond(self.simple(req, 481))];
        };
        // RFC 3261 12.2.2: an older CSeq in the dialog is out of order.
        if cseq <= sub.remote_cseq {
            return vec![MwiOut::Respond(self.simple(req, 500))];
        }
        sub.remote_cseq = cseq;
        if let Some(contact) = req
            .headers
            .get(&HeaderName::Contact)
            .and_then(|c| crate::sip::message::NameAddr::parse(c).ok())
        {
            sub.remote_target = contact.uri;
        }
        sub.expires_at = now + Duration::from_secs(u64::from(expires));
        let contact = sub.local_contact.clone();
        let ok = self.ok(req, expires, &contact);
        let notify = if expires == 0 {
            self.terminate(&id, "terminated;reason=timeout")
        } else {
            // RFC 6665 4.2.1.2: a refresh is answered with a NOTIFY too.
            self.notify(&id, now)
        };
        [Some(MwiOut::Respond(ok)), notify]
            .into_iter()
            .flatten()
            .collect()
    }

    /// A mailbox's counts changed: a NOTIFY to each of its subscriptions that was told
    /// otherwise.
    #[must_use]
    pub fn on_counts(
        &mut self,
        mailbox: &str,
        counts: VoicemailCounts,
        now: Instant,
    ) -> Vec<MwiOut> {
        let mut ids: Vec<SubId> = self
            .subs
            .iter_mut()
            .filter(|(_, s)| s.mailbox == mailbox && s.sent != counts)
            .map(|(id, s)| {
                s.sent = counts;
                id.clone()
            })
            .collect();
        ids.sort();
        ids.iter().filter_map(|id| self.notify(id, now)).collect()
    }

    /// A NOTIFY's final status, or `None` when it timed out or could not be sent. 481,
    /// a timeout or a transport error end the subscription (RFC 6665 4.2.2), silently.
    pub fn on_notify_result(&mut self, sub: &SubId, status: Option<u16>) {
        match status {
            Some(s) if s < 300 => {}
            Some(481) | None => {
                self.subs.remove(sub);
            }
            Some(_) => {}
        }
    }

    /// The earliest expiry.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.subs.values().map(|s| s.expires_at).min()
    }

    /// Ends the subscriptions that were not refreshed: a last NOTIFY each, terminated.
    #[must_use]
    pub fn on_timer(&mut self, now: Instant) -> Vec<MwiOut> {
        let mut expired: Vec<SubId> = self
            .subs
            .iter()
            .filter(|(_, s)| s.expires_at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        expired.sort();
        expired
            .iter()
            .filter_map(|id| self.terminate(id, "terminated;reason=timeout"))
            .collect()
    }

    /// The current state in an active NOTIFY.
    fn notify(&mut self, id: &SubId, now: Instant) -> Option<MwiOut> {
        let sub = self.subs.get(id)?;
        let left = sub.expires_at.saturating_duration_since(now).as_secs();
        let state = format!("active;expires={left}");
        self.build_notify(id, &state)
    }

    /// A final NOTIFY; the subscription is gone.
    fn terminate(&mut self, id: &SubId, state: &str) -> Option<MwiOut> {
        let out = self.build_notify(id, state);
        self.subs.remove(id);
        out
    }

    fn build_notify(&mut self, id: &SubId, state: &str) -> Option<MwiOut> {
        let branch = new_branch(&mut self.rng);
        let sub = self.subs.get_mut(id)?;
        sub.local_cseq += 1;
        Some(MwiOut::Notify {
            sub: id.clone(),
            req: notify_request(&Notify {
                target: &sub.remote_target,
                peer: sub.peer,
                route: &sub.route_set,
                from: &format!("<{}>;tag={}", sub.local_uri, id.local_tag),
                to: &format!("<{}>;tag={}", sub.remote_uri, id.remote_tag),
                call_id: &id.call_id,
                cseq: sub.local_cseq,
                local_contact: &sub.local_contact,
                state,
                account: &sub.account,
                counts: sub.sent,
                branch: &branch,
            }),
            to: sub.peer,
        })
    }

    fn ok(&self, req: &Request, expires: u32, contact: &str) -> Response {
        let mut r = Response::for_request(req, 200, reason_phrase(200));
        r.headers.push(HeaderName::Expires, expires.to_string());
        r.headers.push(HeaderName::Contact, format!("<{contact}>"));
        r
    }

    fn simple(&mut self, req: &Request, status: u16) -> Response {
        let mut r = Response::for_request(req, status, reason_phrase(status));
        let tag = format!("{:016x}", self.rng.gen::<u64>());
        r.ensure_to_tag(&tag);
        r
    }
}

/// The dialog a request in one names, from our side.
fn dialog_of(req: &Request) -> Option<SubId> {
    Some(SubId {
        call_id: req.headers.get(&HeaderName::CallId)?.to_owned(),
        local_tag: to_header(&req.headers).ok()?.tag()?.to_owned(),
        remote_tag: from_header(&req.headers).ok()?.tag()?.to_owned(),
    })
}

fn request_cseq(req: &Request) -> Option<u32> {
    crate::sip::message::cseq(&req.headers).ok().map(|(n, _)| n)
}

/// No Accept means the package's default type (RFC 6665 3.1.2); otherwise one of the
/// listed types must cover ours.
fn accepts_summary(req: &Request) -> bool {
    let accept = HeaderName::Other("Accept".into());
    let mut any = false;
    for v in req.headers.list(&accept) {
        any = true;
        let t = v.split(';').next().unwrap_or_default().trim();
        if t.eq_ignore_ascii_case(CONTENT_TYPE)
            || t == "*/*"
            || t.eq_ignore_ascii_case("application/*")
        {
            return true;
        }
    }
    !any
}

/// One registered phone an unsolicited NOTIFY goes to (no subscription, no dialog).
#[derive(Debug, Clone)]
pub struct UnsolicitedTarget<'a> {
    /// The Contact it registered: the Request-URI.
    pub contact_uri: &'a str,
    /// The flow it registered over.
    pub peer: Peer,
    /// Route headers (the binding's Path).
    pub route: &'a [String],
    /// Our Contact on that flow, and the host of our From / To URIs.
    pub local_contact: &'a str,
    pub domain: &'a str,
}

/// An unsolicited message-summary NOTIFY (what phones configured for "unsolicited MWI"
/// take: a request outside any dialog, `Subscription-State: active`, the RFC 3842 body).
/// `call_id`, `tag` and `branch` are fresh per NOTIFY.
pub fn unsolicited_notify(
    to: &UnsolicitedTarget<'_>,
    mailbox: &str,
    counts: VoicemailCounts,
    call_id: &str,
    tag: &str,
    branch: &str,
) -> Request {
    let account = format!("sip:{mailbox}@{}", to.domain);
    notify_request(&Notify {
        target: to.contact_uri,
        peer: to.peer,
        route: to.route,
        from: &format!("<{account}>;tag={tag}"),
        to: &format!("<{account}>"),
        call_id,
        cseq: 1,
        local_contact: to.local_contact,
        state: "active",
        account: &account,
        counts,
        branch,
    })
}

/// What a message-summary NOTIFY says, in a subscription's dialog or unsolicited.
struct Notify<'a> {
    target: &'a str,
    peer: Peer,
    route: &'a [String],
    /// The From and To header values (with their tags).
    from: &'a str,
    to: &'a str,
    call_id: &'a str,
    cseq: u32,
    local_contact: &'a str,
    /// `Subscription-State`.
    state: &'a str,
    account: &'a str,
    counts: VoicemailCounts,
    branch: &'a str,
}

fn notify_request(n: &Notify<'_>) -> Request {
    let mut h = Headers::new();
    h.push(
        HeaderName::Via,
        format!(
            "SIP/2.0/{} {};branch={};rport",
            n.peer.transport.via_name(),
            n.peer.local,
            n.branch
        ),
    );
    h.push(HeaderName::MaxForwards, "70");
    for r in n.route {
        h.push(HeaderName::Route, r.clone());
    }
    h.push(HeaderName::From, n.from.to_owned());
    h.push(HeaderName::To, n.to.to_owned());
    h.push(HeaderName::CallId, n.call_id.to_owned());
    h.push(HeaderName::CSeq, format!("{} NOTIFY", n.cseq));
    h.push(HeaderName::Contact, format!("<{}>", n.local_contact));
    h.push(HeaderName::Event, EVENT);
    h.push(HeaderName::Other("Subscription-State".into()), n.state);
    h.push(HeaderName::ContentType, CONTENT_TYPE);
    let body = summary_body(n.account, n.counts);
    h.push(HeaderName::ContentLength, body.len().to_string());
    Request {
        method: Method::Notify,
        uri: n.target.to_owned(),
        headers: h,
        body: Bytes::from(body),
    }
}

/// The RFC 3842 body: waiting or not, the account, and new/old voice messages (with the
/// urgent counts, which we do not keep, as 0/0).
pub fn summary_body(account: &str, counts: VoicemailCounts) -> String {
    let waiting = if counts.new > 0 { "yes" } else { "no" };
    format!(
        "Messages-Waiting: {waiting}\r\nMessage-Account: {account}\r\nVoice-Message: {}/{} (0/0)\r\n",
        counts.new, counts.old
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Transport;

    #[test]
    fn an_unsolicited_notify_goes_to_the_registered_contact_outside_a_dialog() {
        let peer = Peer {
            transport: Transport::Udp,
            remote: "192.0.2.7:5062".parse().expect("addr"),
            local: "203.0.113.1:5060".parse().expect("addr"),
            conn: None,
        };
        let route = vec!["<sip:edge.example;lr>".to_owned()];
        let req = unsolicited_notify(
            &UnsolicitedTarget {
                contact_uri: "sip:401@192.0.2.7:5062",
                peer,
                route: &route,
                local_contact: "sip:ringfort@203.0.113.1:5060",
                domain: "203.0.113.1",
            },
            "401",
            VoicemailCounts { new: 2, old: 1 },
            "cid",
            "tag1",
            "z9hG4bKx",
        );
        assert_eq!(req.method, Method::Notify);
        assert_eq!(req.uri, "sip:401@192.0.2.7:5062");
        let h = |n: HeaderName| req.headers.get(&n).unwrap_or_default().to_owned();
        assert!(!h(HeaderName::To).contains("tag="), "no dialog");
        assert_eq!(h(HeaderName::Route), "<sip:edge.example;lr>");
        assert_eq!(h(HeaderName::Event), EVENT);
        let body = String::from_utf8_lossy(&req.body).into_owned();
        assert!(body.contains("Messages-Waiting: yes"), "{body}");
        assert!(
            body.contains("Message-Account: sip:401@203.0.113.1"),
            "{body}"
        );
        assert!(body.contains("Voice-Message: 2/1"), "{body}");
        // The transaction layer parses what it sends: the message must serialize whole.
        let bytes = crate::sip::message::SipMessage::Request(req).to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.starts_with("NOTIFY sip:401@192.0.2.7:5062 SIP/2.0\r\n"),
            "{text}"
        );
    }

    fn peer() -> Peer {
        Peer {
            transport: Transport::Udp,
            remote: "192.0.2.10:5062".parse().expect("addr"),
            local: "198.51.100.1:5060".parse().expect("addr"),
            conn: None,
        }
    }

    fn subscribe(extra: &[(&str, &str)]) -> Request {
        let mut h = Headers::new();
        h.push(
            HeaderName::Via,
            "SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKsub1",
        );
        h.push(HeaderName::From, "<sip:100@pbx.example>;tag=phone1");
        h.push(HeaderName::To, "<sip:100@pbx.example>");
        h.push(HeaderName::CallId, "mwi-1");
        h.push(HeaderName::CSeq, "1 SUBSCRIBE");
        h.push(HeaderName::Contact, "<sip:100@192.0.2.10:5062>");
        h.push(HeaderName::Event, "message-summary");
        h.push(
            HeaderName::RecordRoute,
            "<sip:p1.example;lr>, <sip:p2.example;lr>",
        );
        for (n, v) in extra {
            h.set(HeaderName::parse(n), *v);
        }
        Request {
            method: Method::Subscribe,
            uri: "sip:100@pbx.example".into(),
            headers: h,
            body: Bytes::new(),
        }
    }

    /// The in-dialog request the phone sends next, with our tag.
    fn in_dialog(ok: &Response, cseq: u32, expires: &str) -> Request {
        let mut r = subscribe(&[("Expires", expires)]);
        r.headers.set(
            HeaderName::To,
            ok.headers.get(&HeaderName::To).expect("to").to_owned(),
        );
        r.headers.set(HeaderName::CSeq, format!("{cseq} SUBSCRIBE"));
        r.headers.set(
            HeaderName::Via,
            format!("SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKsub{cseq}"),
        );
        r
    }

    fn split(out: Vec<MwiOut>) -> (Option<Response>, Vec<(SubId, Request)>) {
        let mut resp = None;
        let mut notifies = Vec::new();
        for o in out {
            match o {
                MwiOut::Respond(r) => resp = Some(r),
                MwiOut::Notify { sub, req, to } => {
                    assert_eq!(to, peer(), "back over the SUBSCRIBE's flow");
                    notifies.push((sub, req));
                }
            }
        }
        (resp, notifies)
    }

    fn state(n: &Request) -> &str {
        n.headers
            .get(&HeaderName::Other("Subscription-State".into()))
            .expect("state")
    }

    fn body(n: &Request) -> &str {
        std::str::from_utf8(&n.body).expect("utf8")
    }

    const CONTACT: &str = "sip:ringfort@198.51.100.1:5060";

    #[test]
    fn a_subscription_gets_its_dialog_and_an_immediate_notify() {
        let t0 = Instant::now();
        let mut subs = Subscriptions::new(MwiConfig::default(), 7);
        let req = subscribe(&[("Expires", "600"), ("Accept", CONTENT_TYPE)]);
        let counts = VoicemailCounts { new: 2, old: 1 };
        let (resp, notifies) = split(subs.on_subscribe(&req, peer(), "100", counts, CONTACT, t0));
        let ok = resp.expect("response");
        assert_eq!(ok.status, 200);
        assert_eq!(ok.headers.get(&HeaderName::Expires), Some("600"));
        let to = to_header(&ok.headers).expect("to");
        let tag = to.tag().expect("our tag").to_owned();
        let [(id, n)] = notifies.as_slice() else {
            panic!("one NOTIFY: {notifies:?}")
        };
        assert_eq!(
            id,
            &SubId {
                call_id: "mwi-1".into(),
                local_tag: tag.clone(),
                remote_tag: "phone1".into()
            }
        );
        assert_eq!(n.method, Method::Notify);
        assert_eq!(n.uri, "sip:100@192.0.2.10:5062", "the remote target");
        assert_eq!(
            n.headers.get_all(&HeaderName::Route).collect::<Vec<_>>(),
            ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]
        );
        assert_eq!(
            n.headers.get(&HeaderName::From),
            Some(format!("<sip:100@pbx.example>;tag={tag}").as_str())
        );
        assert_eq!(
            n.headers.get(&HeaderName::To),
            Some("<sip:100@pbx.example>;tag=phone1")
        );
        assert_eq!(n.headers.get(&HeaderName::Event), Some("message-summary"));
        assert_eq!(n.headers.get(&HeaderName::ContentType), Some(CONTENT_TYPE));
        assert_eq!(state(n), "active;expires=600");
        assert_eq!(
            body(n),
            "Messages-Waiting: yes\r\nMessage-Account: sip:100@pbx.example\r\n\
             Voice-Message: 2/1 (0/0)\r\n"
        );
        assert!(
            crate::sip::transaction::TxKey::client(n).is_some(),
            "a Via branch for the transaction layer"
        );
        assert_eq!(subs.next_deadline(), Some(t0 + Duration::from_secs(600)));
    }

    #[test]
    fn count_changes_notify_once_with_increasing_cseq() {
        let t0 = Instant::now();
        let mut subs = Subscriptions::new(MwiConfig::default(), 1);
        let (_, first) = split(subs.on_subscribe(
            &subscribe(&[]),
            peer(),
            "100",
            VoicemailCounts::default(),
            CONTACT,
            t0,
        ));
        assert!(body(&first[0].1).starts_with("Messages-Waiting: no\r\n"));
        assert_eq!(state(&first[0].1), "active;expires=3600", "the default");
        let t1 = t0 + Duration::from_secs(100);
        let one = VoicemailCounts { new: 1, old: 0 };
        let (_, n) = split(subs.on_counts("100", one, t1));
        assert_eq!(n.len(), 1);
        assert!(body(&n[0].1).contains("Messages-Waiting: yes\r\n"));
        assert!(body(&n[0].1).contains("Voice-Message: 1/0 (0/0)\r\n"));
        assert_eq!(state(&n[0].1), "active;expires=3500");
        let cseq = |r: &Request| crate::sip::message::cseq(&r.headers).expect("cseq").0;
        assert_eq!(cseq(&n[0].1), cseq(&first[0].1) + 1);
        // The same counts again, or another mailbox: nothing to say.
        assert!(subs.on_counts("100", one, t1).is_empty());
        assert!(subs
            .on_counts("101", VoicemailCounts { new: 5, old: 0 }, t1)
            .is_empty());
    }

    #[test]
    fn refresh_extends_and_expiry_terminates() {
        let t0 = Instant::now();
        let mut subs = Subscriptions::new(MwiConfig::default(), 2);
        let c = VoicemailCounts::default();
        let (ok, _) = split(subs.on_subscribe(
            &subscribe(&[("Expires", "120")]),
            peer(),
            "100",
            c,
            CONTACT,
            t0,
        ));
        let ok = ok.expect("ok");
        let t1 = t0 + Duration::from_secs(100);
        // A refresh needs no credentials: the dialog vouches for it.
        let (r, n) =
            split(subs.on_subscribe(&in_dialog(&ok, 2, "300"), peer(), "", c, CONTACT, t1));
        assert_eq!(r.expect("refresh").status, 200);
        assert_eq!(state(&n[0].1), "active;expires=300");
        assert_eq!(subs.next_deadline(), Some(t1 + Duration::from_secs(300)));
        // A replayed older CSeq is refused.
        let (r, _) =
            split(subs.on_subscribe(&in_dialog(&ok, 2, "300"), peer(), "", c, CONTACT, t1));
        assert_eq!(r.expect("old").status, 500);
        assert!(subs.on_timer(t1 + Duration::from_secs(299)).is_empty());
        let (_, n) = split(subs.on_timer(t1 + Duration::from_secs(300)));
        assert_eq!(state(&n[0].1), "terminated;reason=timeout");
        assert!(subs.is_empty());
        assert_eq!(subs.next_deadline(), None);
        // The dialog is gone.
        let (r, _) =
            split(subs.on_subscribe(&in_dialog(&ok, 3, "300"), peer(), "", c, CONTACT, t1));
        assert_eq!(r.expect("gone").status, 481);
    }

    #[test]
    fn expires_zero_unsubscribes_with_a_final_notify() {
        let t0 = Instant::now();
        let mut subs = Subscriptions::new(MwiConfig::default(), 3);
        let c = VoicemailCounts { new: 1, old: 0 };
        let (ok, _) = split(subs.on_subscribe(&subscribe(&[]), peer(), "100", c, CONTACT, t0));
        let (r, n) = split(subs.on_subscribe(
            &in_dialog(&ok.expect("ok"), 2, "0"),
            peer(),
            "",
            c,
            CONTACT,
            t0,
        ));
        assert_eq!(r.expect("ok").headers.get(&HeaderName::Expires), Some("0"));
        assert_eq!(state(&n[0].1), "terminated;reason=timeout");
        assert!(body(&n[0].1).contains("Messages-Waiting: yes"));
        assert!(subs.is_empty());
        // A fetch (a new SUBSCRIBE with Expires 0): the state once, no subscription.
        let (r, n) = split(subs.on_subscribe(
            &subscribe(&[("Expires", "0")]),
            peer(),
            "100",
            c,
            CONTACT,
            t0,
        ));
        assert_eq!(r.expect("ok").status, 200);
        assert_eq!(state(&n[0].1), "terminated;reason=timeout");
        assert!(subs.is_empty());
    }

    #[test]
    fn refusals() {
        let t0 = Instant::now();
        let mut subs = Subscriptions::new(MwiConfig::default(), 4);
        let c = VoicemailCounts::default();
        let mut status = |req: Request, who: &str| {
            let (r, n) = split(subs.on_subscribe(&req, peer(), who, c, CONTACT, t0));
            assert!(n.is_empty());
            r.expect("response")
        };
        assert_eq!(status(subscribe(&[]), "101").status, 403, "not its mailbox");
        let r = status(subscribe(&[("Event", "presence")]), "100");
        assert_eq!(r.status, 489);
        assert_eq!(
            r.headers.get(&HeaderName::Other("Allow-Events".into())),
            Some(EVENT)
        );
        assert_eq!(
            status(subscribe(&[("Accept", "application/pidf+xml")]), "100").status,
            406
        );
        let r = status(subscribe(&[("Expires", "10")]), "100");
        assert_eq!(r.status, 423);
        assert_eq!(r.headers.get(&HeaderName::MinExpires), Some("60"));
        assert_eq!(status(subscribe(&[("Expires", "x")]), "100").status, 400);
        // Too long is shortened, not refused.
        let (r, _) = split(subs.on_subscribe(
            &subscribe(&[("Expires", "86400")]),
            peer(),
            "100",
            c,
            CONTACT,
            t0,
        ));
        assert_eq!(
            r.expect("ok").headers.get(&HeaderName::Expires),
            Some("3600")
        );
        // The `id` parameter does not change the package.
        let mut e = subscribe(&[]);
        e.headers.set(HeaderName::Event, "message-summary;id=1");
        assert!(is_message_summary(&e));
    }

    #[test]
    fn a_481_or_timeout_to_a_notify_ends_the_subscription() {
        let t0 = Instant::now();
        let mut subs = Subscriptions::new(MwiConfig::default(), 5);
        let c = VoicemailCounts::default();
        let (_, n) = split(subs.on_subscribe(&subscribe(&[]), peer(), "100", c, CONTACT, t0));
        let id = n[0].0.clone();
        subs.on_notify_result(&id, Some(200));
        subs.on_notify_result(&id, Some(500));
        assert_eq!(subs.len(), 1);
        subs.on_notify_result(&id, Some(481));
        assert!(subs.is_empty());
        let (_, n) = split(subs.on_subscribe(&subscribe(&[]), peer(), "100", c, CONTACT, t0));
        subs.on_notify_result(&n[0].0, None);
        assert!(subs.is_empty());
        assert_eq!(subs.mailboxes(), Vec::<String>::new());
    }
}
