//! Reach: which node, socket and flow reaches a registered phone, and the forks a new leg
//! rings. A phone this node reaches is rung on the flow it registered over (from the
//! socket it registered to, to where it registered from, on its TCP connection while we
//! hold it); a phone another node reaches is rung through that node, one signed INVITE per
//! node carrying every number it rings there.
//!
//! The decisions are pure functions of the bindings, the cluster's view and the open
//! connections ([`forks`], [`target_peer`], [`forward_target`]); [`Reacher`] feeds them
//! from the registrar, the transport and the cluster link.
//! Must not: send, spawn, or touch the transaction layer or a call.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tracing::debug;

use crate::call::Target;
use crate::cluster::routing::{relay_header, Reach, RELAY_HEADER};
use crate::cluster::view::ClusterLink;
use crate::registrar::Registrar;
use crate::sip::message::{HeaderName, Request, SipUri};
use crate::sip::{ConnId, Peer, Transport};
use crate::store::{Binding, VoicemailCounts};
use crate::transport::TransportHandle;
use crate::voicemail::mwi;

/// The forks of a new leg, as [`forks`] decides them.
#[derive(Debug, Default, PartialEq)]
pub struct Forks {
    /// Phones this node rings itself.
    pub local: Vec<Target>,
    /// Per other node (in the order first met): where it takes SIP and the numbers it
    /// rings for us.
    pub other_nodes: Vec<OtherNode>,
}

/// Numbers another node rings for a leg of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherNode {
    pub id: String,
    pub sip: SocketAddr,
    pub numbers: Vec<String>,
}

/// Decides the forks ringing `numbers`: `bindings` gives a number's registered phones,
/// `reach` who reaches one, `is_open` whether a connection of ours is still open.
/// `forward: false` leaves out other nodes' phones (a call forwarded here rings only
/// ours). `public` is `[sip] public_address`.
pub fn forks(
    numbers: &[String],
    bindings: impl Fn(&str) -> Vec<Binding>,
    reach: impl Fn(&Binding) -> Reach,
    is_open: impl Fn(ConnId) -> bool,
    node_id: &str,
    public: Option<&str>,
    forward: bool,
) -> Forks {
    let mut out = Forks::default();
    for number in numbers {
        for b in bindings(number) {
            match reach(&b) {
                Reach::Local => {
                    if let Some(peer) = target_peer(&b, node_id, &is_open) {
                        out.local.push(Target {
                            request_uri: b.contact_uri.clone(),
                            peer,
                            local_contact: contact_for(&host_for(public, &peer), &peer),
                            route: b.path.clone(),
                            headers: Vec::new(),
                        });
                    }
                }
                Reach::Node { id, sip } if forward => {
                    match out.other_nodes.iter_mut().find(|n| n.id == id) {
                        Some(n) if !n.numbers.contains(number) => n.numbers.push(number.clone()),
                        Some(_) => {}
                        None => out.other_nodes.push(OtherNode {
                            id,
                            sip,
                            numbers: vec![number.clone()],
                        }),
                    }
                }
                Reach::Node { .. } => {}
                Reach::Nobody => {
                    debug!(number, contact = %b.contact_uri, "no node reaches this phone now")
                }
            }
        }
    }
    out
}

/// A fork to another node ringing `numbers` there: sent from our cluster address
/// `own_sip`, signed with the cluster's `secret` at `now_unix` for the leg's `call_id`.
pub fn forward_target(
    secret: &[u8],
    own_sip: SocketAddr,
    node_id: &str,
    to: &OtherNode,
    call_id: &str,
    now_unix: i64,
) -> Option<Target> {
    let first = to.numbers.first()?;
    let peer = Peer {
        transport: Transport::Udp,
        remote: to.sip,
        local: own_sip,
        conn: None,
    };
    let numbers: Vec<&str> = to.numbers.iter().map(String::as_str).collect();
    let relay = relay_header(secret, node_id, now_unix, call_id, &numbers);
    Some(Target {
        request_uri: format!("sip:{first}@{}", to.sip),
        peer,
        // Our own address, never the public one: nodes talk inside the cluster.
        local_contact: contact_for(&host_for(None, &peer), &peer),
        route: Vec::new(),
        headers: vec![(HeaderName::Other(RELAY_HEADER.into()), relay)],
    })
}

/// Finds the forks that ring extensions: the phones this node reaches itself, and one
/// fork per other node that reaches some of them (which rings its own).
pub struct Reacher {
    pub registrar: Arc<Registrar>,
    pub transport: TransportHandle,
    pub node_id: String,
    pub public: Option<String>,
    pub cluster: Option<ClusterLink>,
}

impl Reacher {
    /// The forks of a new leg with Call-ID `call_id` ringing `numbers`; `forward: false`
    /// leaves out other nodes' phones (a call forwarded here rings only ours).
    pub fn targets(
        &self,
        numbers: &[String],
        call_id: &str,
        forward: bool,
        now_unix: i64,
    ) -> Vec<Target> {
        let view = self.cluster.as_ref().map(|c| c.view.borrow().clone());
        let Forks {
            local: mut targets,
            other_nodes,
        } = forks(
            numbers,
            |n| self.registrar.lookup(n),
            |b| match &view {
                Some(v) => v.reach(b, &self.node_id, |a| self.transport.listens_on(a)),
                None => Reach::Local,
            },
            |c| self.transport.is_open(c),
            &self.node_id,
            self.public.as_deref(),
            forward,
        );
        if let Some(link) = &self.cluster {
            for node in &other_nodes {
                let fork = forward_target(
                    &link.secret,
                    link.own_sip,
                    &self.node_id,
                    node,
                    call_id,
                    now_unix,
                );
                if let Some(t) = fork {
                    debug!(numbers = ?node.numbers, node = %node.id, "fork through another node");
                    targets.push(t);
                }
            }
        }
        targets
    }

    /// Whether this node sends to the phone of `b` itself.
    pub fn reaches(&self, b: &Binding) -> bool {
        match &self.cluster {
            None => b.node_id == self.node_id,
            Some(link) => {
                let view = link.view.borrow();
                view.reach(b, &self.node_id, |a| self.transport.listens_on(a)) == Reach::Local
            }
        }
    }

    /// Unsolicited MWI NOTIFYs (RFC 3842 without a subscription) for the phones of
    /// `mailbox` this node reaches: another node's VIP is not ours to send from (that node
    /// sends its own phones' NOTIFYs). `ids` makes each NOTIFY's Call-ID, From tag and
    /// branch.
    pub fn unsolicited_mwi(
        &self,
        mailbox: &str,
        counts: VoicemailCounts,
        mut ids: impl FnMut() -> (String, String, String),
    ) -> Vec<(Request, Peer)> {
        let public = self.public.as_deref();
        self.registrar
            .lookup(mailbox)
            .into_iter()
            .filter(|b| self.reaches(b))
            .filter_map(|b| {
                let peer = target_peer(&b, &self.node_id, |c| self.transport.is_open(c))?;
                let host = host_for(public, &peer);
                let (call_id, tag, branch) = ids();
                let req = mwi::unsolicited_notify(
                    &mwi::UnsolicitedTarget {
                        contact_uri: &b.contact_uri,
                        peer,
                        route: &b.path,
                        local_contact: &contact_for(&host, &peer),
                        domain: &host,
                    },
                    mailbox,
                    counts,
                    &call_id,
                    &tag,
                    &branch,
                );
                debug!(mailbox, contact = %b.contact_uri, "unsolicited MWI NOTIFY");
                Some((req, peer))
            })
            .collect()
    }
}

/// The flow towards a registered contact: to where the phone registered from, from our
/// socket it registered to. Over TCP that is its connection while this node holds it
/// open; once it is gone, a new connection to the Contact's address (where the phone
/// listens; the old source port was an ephemeral one), as RFC 3261 18.1.1 does without
/// RFC 5626 outbound. Other stream transports need their connection.
pub fn target_peer(b: &Binding, node_id: &str, is_open: impl Fn(ConnId) -> bool) -> Option<Peer> {
    let transport = Transport::parse(&b.transport)?;
    let remote: SocketAddr = b.received.parse().ok()?;
    let local: SocketAddr = b.local_addr.parse().ok()?;
    let conn = b
        .flow
        .as_deref()
        .and_then(|f| {
            let (node, id) = f.rsplit_once(':')?;
            (node == node_id).then(|| id.parse::<u64>().ok().map(ConnId))?
        })
        .filter(|c| is_open(*c));
    let remote = match (transport, conn) {
        (Transport::Udp, _) | (_, Some(_)) => remote,
        (Transport::Tcp, None) => {
            let uri = SipUri::parse(&b.contact_uri).ok()?;
            let ip: IpAddr = uri.host.trim_matches(['[', ']']).parse().ok()?;
            SocketAddr::new(ip, uri.port.unwrap_or(5060))
        }
        _ => return None,
    };
    Some(Peer {
        transport,
        remote,
        local,
        conn,
    })
}

/// The local address this host uses to reach `remote` (no packet is sent).
pub fn local_ip_towards(remote: SocketAddr) -> Option<IpAddr> {
    let bind: SocketAddr = if remote.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let sock = std::net::UdpSocket::bind(bind).ok()?;
    sock.connect(remote).ok()?;
    sock.local_addr().ok().map(|a| a.ip())
}

/// The address to name ourselves by on a flow: the public address if configured, else
/// our socket's address, else (a wildcard socket) the address towards the peer.
pub fn host_for(public: Option<&str>, peer: &Peer) -> String {
    if let Some(p) = public {
        return p.to_owned();
    }
    let ip = if peer.local.ip().is_unspecified() {
        local_ip_towards(peer.remote).unwrap_or(peer.local.ip())
    } else {
        peer.local.ip()
    };
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    }
}

/// Our Contact URI on a flow.
pub fn contact_for(host: &str, peer: &Peer) -> String {
    let port = peer.local.port();
    match peer.transport {
        Transport::Udp => format!("sip:ringfort@{host}:{port}"),
        t => format!("sip:ringfort@{host}:{port};transport={}", t.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::routing::verify_relay;

    fn binding(transport: &str, flow: Option<&str>) -> Binding {
        Binding {
            aor: "200".into(),
            binding_key: "k".into(),
            contact_uri: "sip:200@10.0.0.7:5062".into(),
            q: None,
            expires_at: 0,
            call_id: "c".into(),
            cseq: 1,
            received: "192.0.2.10:40000".into(),
            transport: transport.into(),
            local_addr: "198.51.100.1:5060".into(),
            flow: flow.map(str::to_owned),
            path: Vec::new(),
            user_agent: String::new(),
            instance_id: None,
            reg_id: None,
            node_id: "n1".into(),
            updated_at: 0,
        }
    }

    #[test]
    fn forks_go_where_the_phone_registered_from() {
        // UDP: to the source address, from our socket it registered to.
        let p = target_peer(&binding("udp", None), "n1", |_| true).expect("udp");
        assert_eq!(p.transport, Transport::Udp);
        assert_eq!(p.remote, "192.0.2.10:40000".parse().expect("addr"));
        assert_eq!(p.local, "198.51.100.1:5060".parse().expect("addr"));
        // TCP: on its connection while this node holds it open, else to the Contact.
        let open = |_| true;
        let p = target_peer(&binding("tcp", Some("n1:42")), "n1", open).expect("tcp");
        assert_eq!(p.conn, Some(ConnId(42)));
        assert_eq!(p.remote, "192.0.2.10:40000".parse().expect("addr"));
        let contact: SocketAddr = "10.0.0.7:5062".parse().expect("addr");
        for (flow, is_open) in [(Some("n2:42"), true), (None, true), (Some("n1:42"), false)] {
            let p = target_peer(&binding("tcp", flow), "n1", |_| is_open).expect("tcp");
            assert_eq!((p.conn, p.remote), (None, contact), "{flow:?} {is_open}");
        }
        assert!(target_peer(&binding("sctp", None), "n1", open).is_none());
    }

    #[test]
    fn contacts_name_the_flow() {
        let mut p = target_peer(&binding("udp", None), "n1", |_| true).expect("udp");
        assert_eq!(host_for(None, &p), "198.51.100.1");
        assert_eq!(host_for(Some("pbx.example"), &p), "pbx.example");
        assert_eq!(
            contact_for("198.51.100.1", &p),
            "sip:ringfort@198.51.100.1:5060"
        );
        p.transport = Transport::Tcp;
        assert_eq!(
            contact_for("198.51.100.1", &p),
            "sip:ringfort@198.51.100.1:5060;transport=tcp"
        );
        // A wildcard socket: the address towards the peer.
        p.local = "0.0.0.0:5060".parse().expect("addr");
        p.remote = "127.0.0.1:5070".parse().expect("addr");
        assert_eq!(host_for(None, &p), "127.0.0.1");
    }

    /// Phones of three numbers spread over this node and two others, and one nobody
    /// reaches: each phone of ours is a fork, each other node one entry with its numbers
    /// (once each, in the order met), the unreachable phone nothing.
    #[test]
    fn a_leg_rings_our_phones_and_one_fork_per_other_node() {
        let n2: SocketAddr = "10.0.0.2:5060".parse().expect("addr");
        let n3: SocketAddr = "10.0.0.3:5060".parse().expect("addr");
        let phone = |aor: &str, contact: &str, node: &str| Binding {
            aor: aor.into(),
            contact_uri: contact.into(),
            node_id: node.into(),
            ..binding("udp", None)
        };
        let bindings = |n: &str| -> Vec<Binding> {
            match n {
                "200" => vec![
                    phone("200", "sip:200@10.1.0.1", "n1"),
                    phone("200", "sip:200@10.1.0.2", "n2"),
                ],
                "201" => vec![
                    phone("201", "sip:201@10.1.0.3", "n2"),
                    phone("201", "sip:201@10.1.0.4", "n2"),
                    phone("201", "sip:201@10.1.0.5", "n3"),
                ],
                "202" => vec![phone("202", "sip:202@10.1.0.6", "gone")],
                _ => Vec::new(),
            }
        };
        let reach = |b: &Binding| match b.node_id.as_str() {
            "n1" => Reach::Local,
            "n2" => Reach::Node {
                id: "n2".into(),
                sip: n2,
            },
            "n3" => Reach::Node {
                id: "n3".into(),
                sip: n3,
            },
            _ => Reach::Nobody,
        };
        let numbers: Vec<String> = ["200", "201", "202", "203"].map(String::from).into();
        let f = forks(&numbers, bindings, reach, |_| true, "n1", None, true);
        let local: Vec<&str> = f.local.iter().map(|t| t.request_uri.as_str()).collect();
        assert_eq!(local, ["sip:200@10.1.0.1"]);
        assert_eq!(f.local[0].local_contact, "sip:ringfort@198.51.100.1:5060");
        assert_eq!(
            f.other_nodes,
            vec![
                OtherNode {
                    id: "n2".into(),
                    sip: n2,
                    numbers: vec!["200".into(), "201".into()]
                },
                OtherNode {
                    id: "n3".into(),
                    sip: n3,
                    numbers: vec!["201".into()]
                },
            ]
        );
        // A leg forwarded here rings only our own phones.
        let f = forks(&numbers, bindings, reach, |_| true, "n1", None, false);
        assert_eq!(f.local.len(), 1);
        assert!(f.other_nodes.is_empty());
    }

    #[test]
    fn a_fork_to_another_node_is_signed_for_its_call_id_and_numbers() {
        let own: SocketAddr = "10.0.0.1:5060".parse().expect("addr");
        let to = OtherNode {
            id: "n2".into(),
            sip: "10.0.0.2:5060".parse().expect("addr"),
            numbers: vec!["200".into(), "201".into()],
        };
        let t = forward_target(b"s", own, "n1", &to, "leg-b", 1_000).expect("fork");
        assert_eq!(t.request_uri, "sip:200@10.0.0.2:5060");
        assert_eq!((t.peer.local, t.peer.remote), (own, to.sip));
        assert_eq!(t.local_contact, "sip:ringfort@10.0.0.1:5060");
        let (name, value) = &t.headers[0];
        assert_eq!(name, &HeaderName::Other(RELAY_HEADER.into()));
        let r = verify_relay(b"s", value, 1_001, "leg-b").expect("valid");
        assert_eq!((r.node.as_str(), r.numbers), ("n1", to.numbers.clone()));
        assert!(verify_relay(b"s", value, 1_001, "other-leg").is_err());
        let none = OtherNode {
            numbers: Vec::new(),
            ..to
        };
        assert!(forward_target(b"s", own, "n1", &none, "leg-b", 1_000).is_none());
    }
}
