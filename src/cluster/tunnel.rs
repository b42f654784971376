//! The drain tunnel: how a node keeps its dialogs through a floating IP it no longer holds.
//!
//! A node rings phones from the VIP they registered through, so every in-dialog request a
//! phone sends (BYE, re-INVITE) and every response to ours goes to the VIP. After a
//! handover the VIP's new holder gets them for dialogs it does not have, and the old node,
//! which still runs those calls, cannot send from an address no longer on its interface
//! (Linux refuses a non-local source). So the two hand the datagrams to each other:
//!
//! - **In** (phone -> owner): the holder gets, on a VIP socket, a message whose dialog tag
//!   names another healthy node (every node ends the tags it makes with its mark, see
//!   [`node_mark`]); it passes the datagram, as received, to that node.
//! - **Out** (owner -> phone): a node whose send from a VIP fails passes the datagram to
//!   the VIP's holder, which sends it from the VIP.
//! - **Ask**: a CANCEL has no tag to route by; one that matches no INVITE at the holder
//!   goes to every other node, and only the node with its INVITE answers.
//!
//! Both carry `X-Ringfort-Tunnel: dir=..;node=..;vip=..;phone=..;ts=..;sig=..` as the line
//! after the start line, `sig` an HMAC-SHA256 under the cluster secret over the fields and
//! the whole message without that line, so no one outside the cluster can make a node send
//! from its VIP. A tunnelled datagram is never tunnelled again (no loops): the receiver
//! sends it to the phone or takes it itself, or drops it.
//!
//! Owns: the node marks in dialog tags, the envelope (wrap, unwrap, check) and the choice
//! of where a datagram goes; it plugs into the transport as a [`VipTunnel`], the
//! interface the transport defines (the transport does the sending and imports nothing
//! of the cluster).
//! Must not: do I/O or read a clock (times are passed in); it does not know dialogs, only
//! the tags a message carries.

use std::net::{IpAddr, SocketAddr};

use sha2::{Digest, Sha256};

use super::routing::{hex, hmac_sha256, ClusterView, RELAY_MAX_AGE_SECS};
use super::view::ClusterLink;
use crate::sip::digest::constant_time_eq;
use crate::sip::message::{HeaderName, NameAddr, SipMessage};
use crate::transport::{TunnelRefusal, Tunnelled, VipTunnel};

/// The envelope header.
pub const TUNNEL_HEADER: &str = "X-Ringfort-Tunnel";

/// How many hex digits of the node id's hash a tag carries: enough that two nodes of one
/// cluster never share one, short enough for a tag.
const MARK_LEN: usize = 8;

/// The mark a node puts at the end of every dialog tag it makes (`<random>.<mark>`).
pub fn node_mark(node_id: &str) -> String {
    let digest = Sha256::digest(format!("ringfort-node\n{node_id}").as_bytes());
    let mut mark = hex(&digest);
    mark.truncate(MARK_LEN);
    mark
}

/// The node mark at the end of a tag, if it carries one.
pub fn mark_of_tag(tag: &str) -> Option<&str> {
    let (_, mark) = tag.rsplit_once('.')?;
    (mark.len() == MARK_LEN && mark.bytes().all(|b| b.is_ascii_hexdigit())).then_some(mark)
}

/// Our own tag in a message of a dialog: the To tag of a request we receive, the From tag
/// of a response to our request. `None` outside a dialog (a request without a To tag).
pub fn local_tag(msg: &SipMessage) -> Option<String> {
    let name = match msg {
        SipMessage::Request(_) => HeaderName::To,
        SipMessage::Response(_) => HeaderName::From,
    };
    let value = msg.headers().get(&name)?;
    let addr = NameAddr::parse(value).ok()?;
    addr.tag().map(str::to_owned)
}

/// Which way a tunnelled datagram goes: the transport's word for it, since the transport
/// defines the interface the tunnel plugs into ([`VipTunnel`]).
pub use crate::transport::TunnelDirection as Direction;

fn dir_str(dir: Direction) -> &'static str {
    match dir {
        Direction::In => "in",
        Direction::Out => "out",
        Direction::Ask => "ask",
    }
}

/// What the envelope says besides the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub dir: Direction,
    /// The node that wrapped it.
    pub node: String,
    /// The floating-IP socket the phone talks to.
    pub vip: SocketAddr,
    /// The phone's address: the source of an `In` datagram, the destination of an `Out`.
    pub phone: SocketAddr,
    /// Unix seconds when it was wrapped.
    pub ts: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TunnelError {
    #[error("malformed tunnel envelope")]
    Malformed,
    #[error("tunnel envelope too old or from the future ({0} s off)")]
    Stale(i64),
    #[error("tunnel envelope signature does not match")]
    BadSignature,
}

/// The datagram with the envelope as its second line.
pub fn wrap(secret: &[u8], env: &Envelope, message: &[u8]) -> Vec<u8> {
    let start_line_end = message
        .windows(2)
        .position(|w| w == b"\r\n")
        .map_or(message.len(), |i| i + 2);
    let (start, rest) = message.split_at(start_line_end);
    let fields = fields(env);
    let sig = hex(&mac(secret, &fields, start, rest));
    let mut out = Vec::with_capacity(message.len() + fields.len() + 100);
    out.extend_from_slice(start);
    if !start.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("{TUNNEL_HEADER}: {fields};sig={sig}\r\n").as_bytes());
    out.extend_from_slice(rest);
    out
}

/// The envelope and the message of a tunnelled datagram; `Ok(None)` for any other
/// datagram (its second line is no envelope).
pub fn unwrap(
    secret: &[u8],
    data: &[u8],
    now_unix: i64,
) -> Result<Option<(Envelope, Vec<u8>)>, TunnelError> {
    let Some(first_end) = data.windows(2).position(|w| w == b"\r\n").map(|i| i + 2) else {
        return Ok(None);
    };
    let rest = &data[first_end..];
    let name = TUNNEL_HEADER.as_bytes();
    let is_envelope = rest.len() > name.len()
        && rest[..name.len()].eq_ignore_ascii_case(name)
        && rest[name.len()] == b':';
    if !is_envelope {
        return Ok(None);
    }
    let line_end = rest
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or(TunnelError::Malformed)?;
    let value = std::str::from_utf8(&rest[name.len() + 1..line_end])
        .map_err(|_| TunnelError::Malformed)?
        .trim();
    let (fields, sig) = value.rsplit_once(";sig=").ok_or(TunnelError::Malformed)?;
    let env = parse_fields(fields)?;
    let off = now_unix - env.ts;
    if off.abs() > RELAY_MAX_AGE_SECS {
        return Err(TunnelError::Stale(off));
    }
    let start = &data[..first_end];
    let body = &rest[line_end + 2..];
    let want = hex(&mac(secret, fields, start, body));
    if !constant_time_eq(&want, sig) {
        return Err(TunnelError::BadSignature);
    }
    let mut message = Vec::with_capacity(start.len() + body.len());
    message.extend_from_slice(start);
    message.extend_from_slice(body);
    Ok(Some((env, message)))
}

fn fields(env: &Envelope) -> String {
    format!(
        "dir={};node={};vip={};phone={};ts={}",
        dir_str(env.dir),
        env.node,
        env.vip,
        env.phone,
        env.ts
    )
}

fn parse_fields(fields: &str) -> Result<Envelope, TunnelError> {
    let (mut dir, mut node, mut vip, mut phone, mut ts) = (None, None, None, None, None);
    for part in fields.split(';') {
        match part.split_once('=') {
            Some(("dir", "in")) => dir = Some(Direction::In),
            Some(("dir", "out")) => dir = Some(Direction::Out),
            Some(("dir", "ask")) => dir = Some(Direction::Ask),
            Some(("node", v)) if !v.is_empty() => node = Some(v.to_owned()),
            Some(("vip", v)) => vip = v.parse().ok(),
            Some(("phone", v)) => phone = v.parse().ok(),
            Some(("ts", v)) => ts = v.parse().ok(),
            _ => return Err(TunnelError::Malformed),
        }
    }
    match (dir, node, vip, phone, ts) {
        (Some(dir), Some(node), Some(vip), Some(phone), Some(ts)) => Ok(Envelope {
            dir,
            node,
            vip,
            phone,
            ts,
        }),
        _ => Err(TunnelError::Malformed),
    }
}

fn mac(secret: &[u8], fields: &str, start: &[u8], rest: &[u8]) -> [u8; 32] {
    let mut msg = Vec::with_capacity(fields.len() + start.len() + rest.len() + 1);
    msg.extend_from_slice(fields.as_bytes());
    msg.push(b'\n');
    msg.extend_from_slice(start);
    msg.extend_from_slice(rest);
    hmac_sha256(secret, &msg)
}

/// What the transport needs to tunnel: this node, its mark, and its cluster link (the
/// secret, the live view, the socket tunnelled datagrams leave from).
#[derive(Clone)]
pub struct Tunnel {
    pub node_id: String,
    /// Our own mark ([`node_mark`] of `node_id`), which needs no tunnel.
    pub mark: String,
    pub link: ClusterLink,
}

impl Tunnel {
    pub fn new(node_id: String, link: ClusterLink) -> Tunnel {
        Tunnel {
            mark: node_mark(&node_id),
            node_id,
            link,
        }
    }

    /// Where a message that reached one of our VIP sockets belongs, when that is another
    /// healthy node: its dialog tag carries that node's mark.
    pub fn owner_of(&self, msg: &SipMessage) -> Option<SocketAddr> {
        let tag = local_tag(msg)?;
        let mark = mark_of_tag(&tag)?;
        if mark == self.mark {
            return None;
        }
        let view = self.link.view.borrow();
        owner_in(&view, mark, &self.node_id)
    }

    /// Every other healthy node's SIP address.
    pub fn other_nodes(&self) -> Vec<SocketAddr> {
        let view = self.link.view.borrow();
        view.nodes
            .iter()
            .filter(|(id, _)| **id != self.node_id)
            .map(|(_, sip)| *sip)
            .collect()
    }

    /// The SIP address of the node holding `vip` now, when that is another node.
    pub fn holder_of(&self, vip: IpAddr) -> Option<SocketAddr> {
        let view = self.link.view.borrow();
        let holder = view.vip_holders.get(&vip)?;
        if *holder == self.node_id {
            return None;
        }
        view.nodes.get(holder).copied()
    }
}

/// The tunnel as the transport uses it: the envelope under the cluster secret, the live
/// view for who is where.
impl VipTunnel for Tunnel {
    fn wrap(
        &self,
        dir: Direction,
        vip: SocketAddr,
        phone: SocketAddr,
        data: &[u8],
        now_unix: i64,
    ) -> Vec<u8> {
        let env = Envelope {
            dir,
            node: self.node_id.clone(),
            vip,
            phone,
            ts: now_unix,
        };
        wrap(&self.link.secret, &env, data)
    }

    fn unwrap(&self, data: &[u8], now_unix: i64) -> Result<Option<Tunnelled>, TunnelRefusal> {
        Ok(
            unwrap(&self.link.secret, data, now_unix)?.map(|(env, message)| Tunnelled {
                dir: env.dir,
                vip: env.vip,
                phone: env.phone,
                message,
            }),
        )
    }

    fn own_address(&self) -> SocketAddr {
        self.link.own_sip
    }

    fn owner_of(&self, msg: &SipMessage) -> Option<SocketAddr> {
        Tunnel::owner_of(self, msg)
    }

    fn holder_of(&self, vip: IpAddr) -> Option<SocketAddr> {
        Tunnel::holder_of(self, vip)
    }

    fn other_nodes(&self) -> Vec<SocketAddr> {
        Tunnel::other_nodes(self)
    }
}

/// The healthy node (other than `me`) whose mark is `mark`, and its SIP address.
fn owner_in(view: &ClusterView, mark: &str, me: &str) -> Option<SocketAddr> {
    let mut owners = view
        .nodes
        .iter()
        .filter(|(id, _)| id.as_str() != me && node_mark(id) == mark);
    let (_, sip) = owners.next()?;
    // Two nodes with one mark: nobody can tell whose the dialog is.
    owners.next().is_none().then_some(*sip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message;

    const SECRET: &[u8] = b"cluster-secret";

    fn bye(to_tag: &str) -> Vec<u8> {
        format!(
            "BYE sip:100@10.0.0.100:5060 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 10.0.0.50:5062;branch=z9hG4bKbye1;rport\r\n\
             From: <sip:200@10.0.0.100>;tag=phone1\r\n\
             To: <sip:100@10.0.0.100>;tag={to_tag}\r\n\
             Call-ID: c1@10.0.0.50\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    fn env(dir: Direction) -> Envelope {
        Envelope {
            dir,
            node: "a".into(),
            vip: "10.0.0.100:5060".parse().expect("addr"),
            phone: "10.0.0.50:5062".parse().expect("addr"),
            ts: 1_000,
        }
    }

    #[test]
    fn a_wrapped_datagram_unwraps_to_the_same_message_and_envelope() {
        let msg = bye("x1.12345678");
        let wrapped = wrap(SECRET, &env(Direction::Out), &msg);
        let text = String::from_utf8(wrapped.clone()).expect("utf8");
        assert!(text.starts_with(
            "BYE sip:100@10.0.0.100:5060 SIP/2.0\r\nX-Ringfort-Tunnel: dir=out;node=a;\
             vip=10.0.0.100:5060;phone=10.0.0.50:5062;ts=1000;sig="
        ));
        // Still a SIP message a node could parse (an unknown header).
        assert!(message::parse(&wrapped).is_ok());
        let (e, inner) = unwrap(SECRET, &wrapped, 1_010)
            .expect("valid")
            .expect("an envelope");
        assert_eq!(e, env(Direction::Out));
        assert_eq!(inner, msg);
        for dir in [Direction::In, Direction::Ask] {
            let (e, _) = unwrap(SECRET, &wrap(SECRET, &env(dir), &msg), 1_000)
                .expect("valid")
                .expect("an envelope");
            assert_eq!(e.dir, dir);
        }
    }

    #[test]
    fn any_other_datagram_is_no_envelope() {
        assert_eq!(unwrap(SECRET, &bye("x"), 1_000), Ok(None));
        assert_eq!(unwrap(SECRET, b"\r\n\r\n", 1_000), Ok(None));
        assert_eq!(unwrap(SECRET, b"garbage", 1_000), Ok(None));
    }

    #[test]
    fn a_changed_message_field_key_or_time_is_refused() {
        let wrapped = wrap(SECRET, &env(Direction::Out), &bye("x1.12345678"));
        let text = String::from_utf8(wrapped.clone()).expect("utf8");
        let changed = [
            (
                text.replace("CSeq: 2 BYE", "CSeq: 3 BYE"),
                TunnelError::BadSignature,
            ),
            (
                text.replace("phone=10.0.0.50:5062", "phone=192.0.2.9:5060"),
                TunnelError::BadSignature,
            ),
            (
                text.replace("dir=out", "dir=sideways"),
                TunnelError::Malformed,
            ),
            (text.replace(";sig=", ";sog="), TunnelError::Malformed),
        ];
        for (datagram, error) in changed {
            assert_eq!(unwrap(SECRET, datagram.as_bytes(), 1_000), Err(error));
        }
        assert_eq!(
            unwrap(b"other", &wrapped, 1_000),
            Err(TunnelError::BadSignature)
        );
        assert_eq!(unwrap(SECRET, &wrapped, 1_031), Err(TunnelError::Stale(31)));
    }

    #[test]
    fn marks_are_short_hex_and_read_back_from_tags() {
        let m = node_mark("a");
        assert_eq!(m.len(), MARK_LEN);
        assert_ne!(m, node_mark("b"));
        assert_eq!(node_mark("a"), m, "stable");
        let tag = format!("k3j4h5g6f7.{m}");
        assert_eq!(mark_of_tag(&tag), Some(m.as_str()));
        assert_eq!(mark_of_tag("k3j4h5g6f7"), None);
        assert_eq!(mark_of_tag("phone.tag"), None);
        assert_eq!(mark_of_tag("x.1234567z"), None);
    }

    #[test]
    fn our_tag_is_the_to_tag_of_a_request_and_the_from_tag_of_a_response() {
        let req = message::parse(&bye("ours.abcdef12")).expect("parse");
        assert_eq!(local_tag(&req).as_deref(), Some("ours.abcdef12"));
        let SipMessage::Request(r) = &req else {
            panic!("a request")
        };
        let resp = SipMessage::Response(message::Response::for_request(r, 200, "OK"));
        assert_eq!(local_tag(&resp).as_deref(), Some("phone1"));
        let invite = "INVITE sip:100@10.0.0.100 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.50;branch=z9hG4bKi\r\n\
                      From: <sip:200@x>;tag=p\r\nTo: <sip:100@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
                      Content-Length: 0\r\n\r\n";
        let invite = message::parse(invite.as_bytes()).expect("parse");
        assert_eq!(local_tag(&invite), None);
    }

    fn tunnel(me: &str, holders: &[(&str, &str)]) -> Tunnel {
        let view = ClusterView {
            nodes: [
                ("a".to_owned(), "10.0.0.1:5060".parse().expect("addr")),
                ("b".to_owned(), "10.0.0.2:5060".parse().expect("addr")),
            ]
            .into(),
            vip_holders: holders
                .iter()
                .map(|(vip, node)| (vip.parse().expect("ip"), (*node).to_owned()))
                .collect(),
            vips: Vec::new(),
        };
        Tunnel::new(
            me.into(),
            ClusterLink::fixed(view, SECRET, "10.0.0.2:5060".parse().expect("addr")),
        )
    }

    #[test]
    fn a_message_of_another_healthy_nodes_dialog_goes_to_that_node_only() {
        let t = tunnel("b", &[("10.0.0.100", "b")]);
        let of_a = message::parse(&bye(&format!("r.{}", node_mark("a")))).expect("parse");
        assert_eq!(
            t.owner_of(&of_a),
            Some("10.0.0.1:5060".parse().expect("addr"))
        );
        let ours = message::parse(&bye(&format!("r.{}", node_mark("b")))).expect("parse");
        assert_eq!(t.owner_of(&ours), None);
        let of_dead = message::parse(&bye(&format!("r.{}", node_mark("c")))).expect("parse");
        assert_eq!(t.owner_of(&of_dead), None, "c is not a healthy node");
        let unmarked = message::parse(&bye("plain")).expect("parse");
        assert_eq!(t.owner_of(&unmarked), None);
    }

    #[test]
    fn a_vip_is_sent_from_through_its_holder_unless_that_is_us_or_nobody() {
        let vip: IpAddr = "10.0.0.100".parse().expect("ip");
        let t = tunnel("a", &[("10.0.0.100", "b")]);
        assert_eq!(
            t.holder_of(vip),
            Some("10.0.0.2:5060".parse().expect("addr"))
        );
        assert_eq!(tunnel("b", &[("10.0.0.100", "b")]).holder_of(vip), None);
        assert_eq!(tunnel("a", &[]).holder_of(vip), None);
        assert_eq!(tunnel("a", &[("10.0.0.100", "c")]).holder_of(vip), None);
        assert_eq!(
            tunnel("a", &[]).other_nodes(),
            vec!["10.0.0.2:5060".parse::<SocketAddr>().expect("addr")]
        );
    }
}
