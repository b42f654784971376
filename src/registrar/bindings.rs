//! The pure part of REGISTER processing (RFC 3261 10.3 steps 6-8, RFC 3327, RFC 5626):
//! from a request, the flow it came on, the AOR's current bindings and `now`, compute the
//! new binding set or the rejection. No I/O, no clock: the caller stores the result.

use crate::sip::message::{parse_delta_seconds, HeaderName, NameAddr, Request, Response};
use crate::sip::Peer;
use crate::store::Binding;

/// Limits from `[registrar]` and facts about this node.
#[derive(Debug, Clone)]
pub struct Policy {
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    pub max_contacts: usize,
    pub node_id: String,
}

/// Why a REGISTER is refused after authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    /// 400 with a reason.
    BadRequest(String),
    /// 423 Interval Too Brief, carrying Min-Expires.
    IntervalTooBrief { min_expires: u32 },
    /// 500: an older or repeated request for a binding (RFC 3261 10.3 step 7).
    OutOfOrder,
}

/// One change to report in the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added { contact: String, expires: u32 },
    Refreshed { contact: String, expires: u32 },
    Removed { contact: String },
}

/// What the store should hold for the AOR after the request, and what changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub bindings: Vec<Binding>,
    pub changes: Vec<Change>,
    /// False for a query (no Contact): nothing to write.
    pub write: bool,
}

/// A Contact of the request, with what identifies and qualifies it.
struct RequestedContact {
    uri: String,
    key: String,
    expires: u32,
    q: Option<f32>,
    instance_id: Option<String>,
    reg_id: Option<u32>,
}

/// The binding key: RFC 5626 instance + reg-id when both are present, else the URI.
pub fn binding_key(uri: &str, instance: Option<&str>, reg_id: Option<u32>) -> String {
    match (instance, reg_id) {
        (Some(i), Some(r)) => format!("{i};reg-id={r}"),
        _ => uri.to_owned(),
    }
}

fn requested_contacts(
    req: &Request,
    policy: &Policy,
) -> Result<Option<Vec<RequestedContact>>, Reject> {
    let header_expires = match req.headers.get(&HeaderName::Expires) {
        Some(v) => {
            Some(parse_delta_seconds(v).ok_or_else(|| Reject::BadRequest("bad Expires".into()))?)
        }
        None => None,
    };
    let raw: Vec<&str> = req.headers.list(&HeaderName::Contact).collect();
    if raw.is_empty() {
        return Ok(None);
    }
    if raw.contains(&"*") {
        // RFC 3261 10.3 step 6: "*" only alone and only with Expires: 0.
        if raw.len() != 1 || header_expires != Some(0) {
            return Err(Reject::BadRequest(
                "Contact: * needs Expires: 0 and no other contact".into(),
            ));
        }
        return Ok(Some(Vec::new()));
    }
    let mut out = Vec::with_capacity(raw.len());
    for c in raw {
        let na = NameAddr::parse(c).map_err(|e| Reject::BadRequest(format!("Contact: {e}")))?;
        let expires = match na.param("expires") {
            Some(Some(v)) => parse_delta_seconds(v)
                .ok_or_else(|| Reject::BadRequest("bad expires parameter".into()))?,
            Some(None) => return Err(Reject::BadRequest("empty expires parameter".into())),
            None => header_expires.unwrap_or(policy.default_expires),
        };
        if expires != 0 && expires < policy.min_expires {
            return Err(Reject::IntervalTooBrief {
                min_expires: policy.min_expires,
            });
        }
        let q = match na.param("q") {
            Some(Some(v)) => Some(
                v.parse::<f32>()
                    .ok()
                    .filter(|q| (0.0..=1.0).contains(q))
                    .ok_or_else(|| Reject::BadRequest("bad q parameter".into()))?,
            ),
            _ => None,
        };
        let instance_id = na
            .param("+sip.instance")
            .flatten()
            .map(|s| s.trim_matches('"').to_owned());
        let reg_id = match na.param("reg-id") {
            Some(Some(v)) => Some(
                v.parse::<u32>()
                    .map_err(|_| Reject::BadRequest("bad reg-id".into()))?,
            ),
            _ => None,
        };
        out.push(RequestedContact {
            key: binding_key(&na.uri, instance_id.as_deref(), reg_id),
            uri: na.uri,
            expires: expires.min(policy.max_expires),
            q,
            instance_id,
            reg_id,
        });
    }
    Ok(Some(out))
}

/// Computes the AOR's binding set after `req` (already authenticated for `aor`).
pub fn plan(
    req: &Request,
    peer: &Peer,
    aor: &str,
    existing: Vec<Binding>,
    policy: &Policy,
    now_unix: i64,
) -> Result<Plan, Reject> {
    let call_id = req
        .headers
        .get(&HeaderName::CallId)
        .unwrap_or_default()
        .to_owned();
    let (cseq, _) =
        crate::sip::message::cseq(&req.headers).map_err(|e| Reject::BadRequest(e.to_string()))?;
    let mut bindings: Vec<Binding> = existing
        .into_iter()
        .filter(|b| b.is_live(now_unix))
        .collect();
    let Some(requested) = requested_contacts(req, policy)? else {
        return Ok(Plan {
            bindings,
            changes: Vec::new(),
            write: false,
        });
    };
    let mut changes = Vec::new();
    if requested.is_empty() {
        // Contact: * removes every binding that this request is newer than.
        let mut kept = Vec::new();
        for b in bindings {
            if b.call_id == call_id && cseq <= b.cseq {
                kept.push(b);
            } else {
                changes.push(Change::Removed {
                    contact: b.contact_uri,
                });
            }
        }
        return Ok(Plan {
            bindings: kept,
            changes,
            write: true,
        });
    }
    let path: Vec<String> = req
        .headers
        .list(&HeaderName::Path)
        .map(str::to_owned)
        .collect();
    let user_agent = req
        .headers
        .get(&HeaderName::UserAgent)
        .unwrap_or_default()
        .to_owned();
    for c in requested {
        let pos = bindings.iter().position(|b| b.binding_key == c.key);
        if let Some(i) = pos {
            let b = &bindings[i];
            if b.call_id == call_id && cseq <= b.cseq {
                return Err(Reject::OutOfOrder);
            }
        }
        if c.expires == 0 {
            if let Some(i) = pos {
                let b = bindings.remove(i);
                changes.push(Change::Removed {
                    contact: b.contact_uri,
                });
            }
            continue;
        }
        let binding = Binding {
            aor: aor.to_owned(),
            binding_key: c.key,
            contact_uri: c.uri.clone(),
            q: c.q,
            expires_at: now_unix + i64::from(c.expires),
            call_id: call_id.clone(),
            cseq,
            received: peer.remote.to_string(),
            transport: peer.transport.as_str().to_owned(),
            local_addr: peer.local.to_string(),
            flow: peer.conn.map(|id| format!("{}:{}", policy.node_id, id.0)),
            path: path.clone(),
            user_agent: user_agent.clone(),
            instance_id: c.instance_id,
            reg_id: c.reg_id,
            node_id: policy.node_id.clone(),
            updated_at: now_unix,
        };
        match pos {
            Some(i) => {
                changes.push(Change::Refreshed {
                    contact: c.uri,
                    expires: c.expires,
                });
                bindings[i] = binding;
            }
            None => {
                changes.push(Change::Added {
                    contact: c.uri,
                    expires: c.expires,
                });
                bindings.push(binding);
            }
        }
    }
    // Over the limit, the bindings closest to expiry go first: a phone that re-registers
    // from a new address (NAT rebinding, new port) should not be locked out by its own
    // stale bindings.
    while bindings.len() > policy.max_contacts {
        let Some((i, _)) = bindings
            .iter()
            .enumerate()
            .min_by_key(|(_, b)| b.expires_at)
        else {
            break;
        };
        let b = bindings.remove(i);
        changes.push(Change::Removed {
            contact: b.contact_uri,
        });
    }
    Ok(Plan {
        bindings,
        changes,
        write: true,
    })
}

/// Whether a UDP binding sits behind NAT: it registered from an address other than the
/// one its Contact names, so only packets to its source keep its NAT mapping open.
pub fn udp_nat_target(b: &Binding) -> Option<(std::net::SocketAddr, std::net::SocketAddr)> {
    if b.transport != "udp" {
        return None;
    }
    let received: std::net::SocketAddr = b.received.parse().ok()?;
    let local: std::net::SocketAddr = b.local_addr.parse().ok()?;
    let contact = crate::sip::message::SipUri::parse(&b.contact_uri).ok()?;
    let contact_ip: Option<std::net::IpAddr> = contact.host.trim_matches(['[', ']']).parse().ok();
    let same = contact_ip == Some(received.ip()) && contact.port.unwrap_or(5060) == received.port();
    (!same).then_some((local, received))
}

/// The 200 OK listing every current binding with its remaining time (RFC 3261 10.3 step 8).
pub fn ok_response(req: &Request, bindings: &[Binding], now_unix: i64, to_tag: &str) -> Response {
    let mut resp = Response::for_request(req, 200, "OK");
    resp.ensure_to_tag(to_tag);
    for b in bindings {
        let remaining = (b.expires_at - now_unix).max(0);
        let mut contact = format!("<{}>;expires={remaining}", b.contact_uri);
        if let Some(q) = b.q {
            contact.push_str(&format!(";q={q}"));
        }
        if let Some(i) = &b.instance_id {
            contact.push_str(&format!(";+sip.instance=\"{i}\""));
        }
        if let Some(r) = b.reg_id {
            contact.push_str(&format!(";reg-id={r}"));
        }
        resp.headers.push(HeaderName::Contact, contact);
    }
    // RFC 3327 5.3: the Path is echoed when the UA supports it.
    let supports_path = req
        .headers
        .list(&HeaderName::Supported)
        .any(|t| t.eq_ignore_ascii_case("path"));
    if supports_path {
        for p in req.headers.get_all(&HeaderName::Path) {
            resp.headers.push(HeaderName::Path, p);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{parse, SipMessage};
    use crate::sip::{ConnId, Transport};

    fn policy() -> Policy {
        Policy {
            min_expires: 60,
            max_expires: 7200,
            default_expires: 3600,
            max_contacts: 3,
            node_id: "n1".into(),
        }
    }

    fn peer() -> Peer {
        Peer {
            transport: Transport::Tcp,
            remote: "192.0.2.7:40000".parse().expect("addr"),
            local: "10.0.0.1:5060".parse().expect("addr"),
            conn: Some(ConnId(9)),
        }
    }

    fn register(cseq: u32, call_id: &str, extra: &str) -> Request {
        let text = format!(
            "REGISTER sip:pbx SIP/2.0\r\nVia: SIP/2.0/TCP 10.1.1.1:5060;branch=z9hG4bK{cseq}\r\n\
From: <sip:1001@pbx>;tag=a\r\nTo: <sip:1001@pbx>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n\
User-Agent: TestPhone\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        match parse(text.as_bytes()) {
            Ok(SipMessage::Request(r)) => r,
            other => panic!("bad test message: {other:?}"),
        }
    }

    #[test]
    fn adds_refreshes_and_removes() {
        let p = policy();
        let r = register(
            1,
            "c1",
            "Contact: <sip:1001@10.1.1.1:5060>\r\nPath: <sip:edge;lr>\r\n",
        );
        let plan1 = plan(&r, &peer(), "1001", vec![], &p, 1000).expect("plan");
        assert_eq!(plan1.bindings.len(), 1);
        let b = &plan1.bindings[0];
        assert_eq!(b.expires_at, 1000 + 3600);
        assert_eq!(b.received, "192.0.2.7:40000");
        assert_eq!(b.transport, "tcp");
        assert_eq!(b.flow.as_deref(), Some("n1:9"));
        assert_eq!(b.path, vec!["<sip:edge;lr>".to_owned()]);
        assert_eq!(b.user_agent, "TestPhone");
        let r2 = register(2, "c1", "Contact: <sip:1001@10.1.1.1:5060>;expires=120\r\n");
        let plan2 = plan(&r2, &peer(), "1001", plan1.bindings.clone(), &p, 1010).expect("plan");
        assert_eq!(plan2.bindings[0].expires_at, 1130);
        assert!(matches!(plan2.changes[0], Change::Refreshed { .. }));
        let r3 = register(
            3,
            "c1",
            "Contact: <sip:1001@10.1.1.1:5060>\r\nExpires: 0\r\n",
        );
        let plan3 = plan(&r3, &peer(), "1001", plan2.bindings, &p, 1020).expect("plan");
        assert!(plan3.bindings.is_empty());
    }

    #[test]
    fn too_brief_and_clamped() {
        let p = policy();
        let r = register(1, "c1", "Contact: <sip:1001@h>;expires=30\r\n");
        assert_eq!(
            plan(&r, &peer(), "1001", vec![], &p, 0),
            Err(Reject::IntervalTooBrief { min_expires: 60 })
        );
        let r = register(1, "c1", "Contact: <sip:1001@h>\r\nExpires: 999999\r\n");
        let pl = plan(&r, &peer(), "1001", vec![], &p, 0).expect("plan");
        assert_eq!(pl.bindings[0].expires_at, 7200);
    }

    #[test]
    fn star_rules() {
        let p = policy();
        let r = register(1, "c1", "Contact: <sip:a@h>, <sip:b@h>\r\n");
        let two = plan(&r, &peer(), "1001", vec![], &p, 0)
            .expect("plan")
            .bindings;
        assert_eq!(two.len(), 2);
        let bad = register(2, "c2", "Contact: *\r\n");
        assert!(matches!(
            plan(&bad, &peer(), "1001", two.clone(), &p, 1),
            Err(Reject::BadRequest(_))
        ));
        let star = register(2, "c2", "Contact: *\r\nExpires: 0\r\n");
        let pl = plan(&star, &peer(), "1001", two, &p, 1).expect("plan");
        assert!(pl.bindings.is_empty());
        assert_eq!(pl.changes.len(), 2);
    }

    #[test]
    fn out_of_order_is_refused() {
        let p = policy();
        let r = register(5, "c1", "Contact: <sip:a@h>\r\n");
        let b = plan(&r, &peer(), "1001", vec![], &p, 0)
            .expect("plan")
            .bindings;
        let old = register(4, "c1", "Contact: <sip:a@h>\r\n");
        assert_eq!(
            plan(&old, &peer(), "1001", b.clone(), &p, 1),
            Err(Reject::OutOfOrder)
        );
        // A different Call-ID (the phone rebooted) always wins.
        let other = register(1, "c9", "Contact: <sip:a@h>\r\n");
        assert!(plan(&other, &peer(), "1001", b, &p, 1).is_ok());
    }

    #[test]
    fn outbound_instance_replaces_old_contact_and_limit_evicts_oldest() {
        let p = policy();
        let inst = "+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";reg-id=1";
        let r = register(
            1,
            "c1",
            &format!("Contact: <sip:a@10.0.0.1:1111>;{inst}\r\n"),
        );
        let b = plan(&r, &peer(), "1001", vec![], &p, 0)
            .expect("plan")
            .bindings;
        let r2 = register(
            1,
            "c2",
            &format!("Contact: <sip:a@10.0.0.1:2222>;{inst}\r\n"),
        );
        let b2 = plan(&r2, &peer(), "1001", b, &p, 10)
            .expect("plan")
            .bindings;
        assert_eq!(b2.len(), 1, "same instance and reg-id is one binding");
        assert_eq!(b2[0].contact_uri, "sip:a@10.0.0.1:2222");
        let r3 = register(
            1,
            "c3",
            "Contact: <sip:x@h>;expires=100, <sip:y@h>;expires=200, <sip:z@h>;expires=300\r\n",
        );
        let b3 = plan(&r3, &peer(), "1001", b2, &p, 20)
            .expect("plan")
            .bindings;
        assert_eq!(b3.len(), 3);
        assert!(
            !b3.iter().any(|b| b.contact_uri == "sip:x@h"),
            "soonest-expiring evicted"
        );
    }

    #[test]
    fn nat_detection_compares_contact_with_source() {
        let p = policy();
        let udp = Peer {
            transport: crate::sip::Transport::Udp,
            remote: "203.0.113.5:40000".parse().expect("addr"),
            local: "10.0.0.1:5060".parse().expect("addr"),
            conn: None,
        };
        let natted = register(1, "c1", "Contact: <sip:1001@192.168.1.20:5060>\r\n");
        let b = plan(&natted, &udp, "1001", vec![], &p, 0)
            .expect("plan")
            .bindings;
        assert_eq!(
            udp_nat_target(&b[0]),
            Some((
                "10.0.0.1:5060".parse().expect("a"),
                "203.0.113.5:40000".parse().expect("a")
            ))
        );
        let direct = register(1, "c2", "Contact: <sip:1001@203.0.113.5:40000>\r\n");
        let b = plan(&direct, &udp, "1001", vec![], &p, 0)
            .expect("plan")
            .bindings;
        assert_eq!(udp_nat_target(&b[0]), None);
        // TCP phones keep their own connection alive (RFC 5626 pings).
        let b = plan(&natted, &peer(), "1001", vec![], &p, 0)
            .expect("plan")
            .bindings;
        assert_eq!(udp_nat_target(&b[0]), None);
    }

    #[test]
    fn query_lists_without_writing() {
        let p = policy();
        let r = register(1, "c1", "");
        let pl = plan(&r, &peer(), "1001", vec![], &p, 0).expect("plan");
        assert!(!pl.write);
        let resp = ok_response(&r, &pl.bindings, 0, "t");
        assert_eq!(resp.status, 200);
        assert!(resp
            .headers
            .get(&HeaderName::To)
            .unwrap_or_default()
            .contains("tag=t"));
    }
}
