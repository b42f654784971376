//! Sockets: UDP and TCP listeners, connection flows, keepalives. Parses what arrives
//! (answering unparseable requests with 400 right here, since they never become a
//! transaction), stamps RFC 3581 `received`/`rport` on requests, and sends bytes back
//! along the flow they belong to, opening a TCP connection when a request has none to go
//! on. In a cluster it also carries the drain tunnel: a datagram on a VIP socket for
//! another node's dialog goes to that node, and one this node cannot send from a VIP it no
//! longer holds goes through the VIP's holder. The transport defines what it needs of the
//! tunnel ([`VipTunnel`]) and the cluster plugs its tunnel in (`set_tunnel`), so the
//! transport knows no cluster, store or view. Must not know about transactions,
//! registrations or calls.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::now_unix;
use crate::sip::message::{
    self, error_response_for, Frame, HeaderName, Headers, SipMessage, StreamFramer, Via,
};
use crate::sip::shard::ShardId;
use crate::sip::{ConnId, Peer, Transport};

#[derive(Debug, Error)]
pub enum TransportError {
    #[error("cannot bind {transport} on {addr}: {source}")]
    Bind {
        transport: Transport,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("no {0} socket for local address {1}")]
    NoSocket(Transport, SocketAddr),
    #[error("connection {0:?} is closed")]
    ConnectionClosed(ConnId),
    #[error("send queue full")]
    Busy,
    #[error("send failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Listener settings (from `[sip]`).
#[derive(Debug, Clone)]
pub struct TransportConfig {
    pub udp_listen: Vec<SocketAddr>,
    pub tcp_listen: Vec<SocketAddr>,
    /// Floating-IP listeners: bound whether or not this node holds the address now
    /// (IP_FREEBIND), so the node that takes a VIP over answers on it at once and sends
    /// from it, as the phones registered through it expect.
    pub floating_udp: Vec<SocketAddr>,
    pub floating_tcp: Vec<SocketAddr>,
    pub max_message_bytes: usize,
    pub tcp_idle_timeout: Duration,
    pub tcp_max_connections: usize,
}

/// What the transport hands up.
#[derive(Debug)]
pub enum Inbound {
    /// A received message and the flow it came on.
    Message {
        msg: SipMessage,
        peer: Peer,
        /// Another node asks whether this CANCEL is ours (drain tunnel): answer it only
        /// if so.
        asked: bool,
    },
    /// A request we were asked to send could not go: the connection to `peer` could not
    /// be opened (`reason`). Its transaction has failed (RFC 3261 8.1.3.1, 17.1.4);
    /// what that means in SIP is the transaction layer's to say, not ours.
    Unsent {
        request: message::Request,
        peer: Peer,
        reason: String,
    },
}

impl Inbound {
    fn call_id(&self) -> &str {
        let headers = match self {
            Inbound::Message { msg, .. } => msg.headers(),
            Inbound::Unsent { request, .. } => &request.headers,
        };
        headers.get(&HeaderName::CallId).unwrap_or_default()
    }
}

/// Where received messages go: one queue per signalling shard, chosen by the message's
/// Call-ID ([`ShardId::of`]) so that every transaction and dialog of a Call-ID reaches
/// the one shard that owns it. Choosing costs a hash; no lock is taken per message.
#[derive(Clone)]
pub struct Inboxes {
    shards: Arc<[mpsc::Sender<Inbound>]>,
}

impl Inboxes {
    /// One queue per shard, in shard order (at least one).
    pub fn new(shards: Vec<mpsc::Sender<Inbound>>) -> Inboxes {
        Inboxes {
            shards: shards.into(),
        }
    }

    fn queue(&self, m: &Inbound) -> &mpsc::Sender<Inbound> {
        let shard = ShardId::of(m.call_id(), self.shards.len());
        &self.shards[shard.index]
    }

    /// Queues a message for its shard without waiting; a full queue drops it.
    pub fn try_send(&self, m: Inbound) -> Result<(), InboxFull> {
        self.queue(&m).try_send(m).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => InboxFull::Full,
            mpsc::error::TrySendError::Closed(_) => InboxFull::Closed,
        })
    }

    /// Queues a message for its shard, waiting for room (stream transports: the
    /// connection stops reading meanwhile, which is TCP's back-pressure).
    pub async fn send(&self, m: Inbound) -> Result<(), mpsc::error::SendError<Inbound>> {
        self.queue(&m).send(m).await
    }
}

/// Why a message was not queued (and is dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxFull {
    /// The shard is behind: the sender's retransmission will come.
    Full,
    /// The node is stopping.
    Closed,
}

/// A node with one shard, and tests: everything goes to `tx`.
impl From<mpsc::Sender<Inbound>> for Inboxes {
    fn from(tx: mpsc::Sender<Inbound>) -> Inboxes {
        Inboxes::new(vec![tx])
    }
}

/// Which way a datagram goes through the drain tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelDirection {
    /// From the phone to the node that has its dialog (sent by the VIP's holder).
    In,
    /// From the node that has the dialog to the phone (sent to the VIP's holder).
    Out,
    /// A CANCEL the holder has no INVITE for, to every other node: it carries no dialog
    /// tag, so only the node with its INVITE can tell; that one answers, the others drop
    /// it (no 481 from each).
    Ask,
}

/// A datagram that came through the tunnel, its envelope checked and removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnelled {
    pub dir: TunnelDirection,
    /// Our floating-IP socket the phone talks to.
    pub vip: SocketAddr,
    /// The phone: the source of an `In`/`Ask` datagram, the destination of an `Out`.
    pub phone: SocketAddr,
    /// The message as the phone sent it, or as it must reach the phone.
    pub message: Vec<u8>,
}

/// Why a datagram that looked tunnelled was refused (only logged: anyone can send one).
pub type TunnelRefusal = Box<dyn std::error::Error + Send + Sync>;

/// The drain tunnel as the transport needs it: the envelope (whose format and key are
/// the cluster's) and who is where. The transport does the sending and decides when to
/// tunnel (a VIP socket, a failed send, a CANCEL nobody here has); the cluster's
/// `cluster::tunnel::Tunnel` implements this. Called on the receive path: no I/O, no
/// waiting.
pub trait VipTunnel: Send + Sync {
    /// `data`, from or to `phone` on our VIP socket `vip`, in the envelope that another
    /// node of the cluster accepts.
    fn wrap(
        &self,
        dir: TunnelDirection,
        vip: SocketAddr,
        phone: SocketAddr,
        data: &[u8],
        now_unix: i64,
    ) -> Vec<u8>;
    /// A received datagram out of its envelope; `Ok(None)` when it carries none, an
    /// error when the envelope is bad (forged, stale, malformed).
    fn unwrap(&self, data: &[u8], now_unix: i64) -> Result<Option<Tunnelled>, TunnelRefusal>;
    /// Our socket that tunnelled datagrams leave from (one of our UDP listeners).
    fn own_address(&self) -> SocketAddr;
    /// The node (its SIP address) whose dialog a message that reached one of our VIP
    /// sockets belongs to, when that is another healthy node.
    fn owner_of(&self, msg: &SipMessage) -> Option<SocketAddr>;
    /// The node holding `vip` now, when that is another node.
    fn holder_of(&self, vip: IpAddr) -> Option<SocketAddr>;
    /// Every other healthy node's SIP address.
    fn other_nodes(&self) -> Vec<SocketAddr>;
}

/// Sends on the node's sockets. Cheap to clone; never blocks: a full queue drops the
/// message (UDP retransmissions or the peer's own timers recover).
#[derive(Clone)]
pub struct TransportHandle {
    inner: Arc<Shared>,
}

struct Shared {
    udp: Vec<(SocketAddr, Arc<UdpSocket>)>,
    conns: Mutex<Conns>,
    next_conn: AtomicU64,
    open_conns: AtomicUsize,
    /// What a connection we open needs to run like an accepted one.
    cfg: TransportConfig,
    inbound: Inboxes,
    shutdown: watch::Receiver<bool>,
    /// The drain tunnel, once the node has joined its cluster.
    tunnel: std::sync::OnceLock<Box<dyn VipTunnel>>,
    /// When a bad tunnel envelope was last logged (Unix seconds).
    tunnel_refused_at: std::sync::atomic::AtomicI64,
}

/// Open stream connections, by id and by remote address (RFC 3261 18.1.1: a request to
/// an address we already have a connection with goes on that connection).
#[derive(Default)]
struct Conns {
    senders: HashMap<ConnId, mpsc::Sender<Bytes>>,
    by_remote: HashMap<SocketAddr, ConnId>,
}

impl Conns {
    fn insert(&mut self, id: ConnId, remote: SocketAddr, tx: mpsc::Sender<Bytes>) {
        self.senders.insert(id, tx);
        self.by_remote.insert(remote, id);
    }

    fn remove(&mut self, id: ConnId, remote: SocketAddr) {
        self.senders.remove(&id);
        if self.by_remote.get(&remote) == Some(&id) {
            self.by_remote.remove(&remote);
        }
    }
}

/// How long to wait for a phone to accept a TCP connection we open: a phone on a LAN
/// answers in milliseconds, and the transaction must hear of a failure well before its
/// own timeout (Timer B, 32 s) and the call's no-answer timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(4);

/// Addresses actually bound (useful when the config asks for port 0).
#[derive(Debug, Clone, Default)]
pub struct Bound {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
}

impl TransportHandle {
    /// Sends `msg` to `to`. Responses over UDP go where RFC 3261 18.2.2 / RFC 3581 say:
    /// the `received` address and `rport` port of the top Via.
    pub fn send(&self, msg: &SipMessage, to: &Peer) -> Result<(), TransportError> {
        let bytes = msg.to_bytes();
        if tracing::enabled!(tracing::Level::DEBUG) {
            debug!(to = %to.remote, transport = %to.transport, "send\n{}", message::redacted(msg));
        }
        match to.transport {
            Transport::Udp => {
                let dest = match msg {
                    SipMessage::Response(_) => response_destination(msg, to),
                    SipMessage::Request(_) => to.remote,
                };
                self.send_datagram(to.local, dest, &bytes)
            }
            // Stream transports; only TCP connections can be opened by us so far.
            _ => {
                let conns = self
                    .inner
                    .conns
                    .lock()
                    .map_err(|_| TransportError::NoSocket(to.transport, to.local))?;
                let conn = match to.conn {
                    Some(c) => c,
                    None => match conns.by_remote.get(&to.remote) {
                        Some(c) => *c,
                        None => {
                            drop(conns);
                            return match msg {
                                // Not for an ACK: the ACK of a failed INVITE would only
                                // try the same dead address again.
                                SipMessage::Request(r)
                                    if to.transport == Transport::Tcp
                                        && r.method != message::Method::Ack =>
                                {
                                    self.connect(to, bytes)
                                }
                                _ => Err(TransportError::NoSocket(to.transport, to.local)),
                            };
                        }
                    },
                };
                let tx = conns
                    .senders
                    .get(&conn)
                    .cloned()
                    .ok_or(TransportError::ConnectionClosed(conn))?;
                drop(conns);
                tx.try_send(bytes).map_err(|e| match e {
                    mpsc::error::TrySendError::Full(_) => TransportError::Busy,
                    mpsc::error::TrySendError::Closed(_) => TransportError::ConnectionClosed(conn),
                })
            }
        }
    }

    /// Opens a TCP connection to `to.remote` (from our address `to.local`) for a request
    /// that has none, queueing the request to go once it is up. A connection that cannot
    /// be made hands each queued request back as [`Inbound::Unsent`], so its transaction
    /// ends at once (RFC 3261 8.1.3.1), not at its timeout.
    fn connect(&self, to: &Peer, first: Bytes) -> Result<(), TransportError> {
        if self.connection_count() >= self.inner.cfg.tcp_max_connections {
            return Err(TransportError::Busy);
        }
        let id = ConnId(self.inner.next_conn.fetch_add(1, Ordering::Relaxed));
        let (tx, mut rx) = mpsc::channel::<Bytes>(256);
        tx.try_send(first).map_err(|_| TransportError::Busy)?;
        self.inner
            .conns
            .lock()
            .map_err(|_| TransportError::NoSocket(to.transport, to.local))?
            .insert(id, to.remote, tx);
        self.inner.open_conns.fetch_add(1, Ordering::Relaxed);
        let handle = self.clone();
        let (remote, local) = (to.remote, to.local);
        debug!(to = %remote, conn = id.0, "opening a tcp connection");
        tokio::spawn(async move {
            match tokio::time::timeout(CONNECT_TIMEOUT, open_stream(local, remote)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    let peer = Peer {
                        transport: Transport::Tcp,
                        remote,
                        local: stream.local_addr().unwrap_or(local),
                        conn: Some(id),
                    };
                    let inner = &handle.inner;
                    tcp_connection(
                        stream,
                        peer,
                        rx,
                        inner.cfg.clone(),
                        inner.inbound.clone(),
                        handle.clone(),
                        inner.shutdown.clone(),
                    )
                    .await;
                }
                failed => {
                    let reason = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".to_owned(),
                    };
                    info!(to = %remote, error = %reason, "tcp connection failed");
                    if let Ok(mut conns) = handle.inner.conns.lock() {
                        conns.remove(id, remote);
                    }
                    handle.inner.open_conns.fetch_sub(1, Ordering::Relaxed);
                    rx.close();
                    let peer = Peer {
                        transport: Transport::Tcp,
                        remote,
                        local,
                        conn: None,
                    };
                    while let Ok(bytes) = rx.try_recv() {
                        // An ACK has no transaction to fail; anything else unparseable
                        // was never ours.
                        let Ok(SipMessage::Request(request)) = message::parse(&bytes) else {
                            continue;
                        };
                        if request.method == message::Method::Ack {
                            continue;
                        }
                        let unsent = Inbound::Unsent {
                            request,
                            peer,
                            reason: reason.clone(),
                        };
                        let _ = handle.inner.inbound.send(unsent).await;
                    }
                }
            }
        });
        Ok(())
    }

    /// Whether this node has a UDP socket on exactly `addr`.
    pub fn listens_on(&self, addr: SocketAddr) -> bool {
        self.udp_socket(addr).is_some()
    }

    /// True while the connection `conn` is open.
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.inner
            .conns
            .lock()
            .map(|c| c.senders.contains_key(&conn))
            .unwrap_or(false)
    }

    /// Sends raw bytes (a message or a keepalive) from our UDP socket `local` (or the
    /// first one, if `local` is not ours) to `remote`, without waiting.
    pub fn send_datagram(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
    ) -> Result<(), TransportError> {
        let sock = self
            .udp_socket(local)
            .or_else(|| self.inner.udp.first().map(|(_, s)| s))
            .ok_or(TransportError::NoSocket(Transport::Udp, local))?;
        match send_on(sock, data, remote) {
            // A VIP handed over: its new holder sends for us (a SIP message only; a
            // keepalive is the holder's own business).
            Err(TransportError::Io(e)) if is_sip_message(data) => self
                .tunnel_out(local, remote, data)
                .unwrap_or(Err(TransportError::Io(e))),
            sent => sent,
        }
    }

    /// Passes a datagram we cannot send from our socket `vip` to the node holding that
    /// floating IP now; `None` when no other node holds it (the send error stands).
    fn tunnel_out(
        &self,
        vip: SocketAddr,
        phone: SocketAddr,
        data: &[u8],
    ) -> Option<Result<(), TransportError>> {
        let t = self.vip_tunnel(vip)?;
        let holder = t.holder_of(vip.ip())?;
        info!(%vip, %phone, %holder, "sending through the VIP's holder (drain)");
        Some(self.tunnel_to(t, holder, TunnelDirection::Out, vip, phone, data))
    }

    /// Wraps `data` (from or to `phone` on our VIP socket `vip`) and sends it from our
    /// cluster socket to the node at `node`.
    fn tunnel_to(
        &self,
        t: &dyn VipTunnel,
        node: SocketAddr,
        dir: TunnelDirection,
        vip: SocketAddr,
        phone: SocketAddr,
        data: &[u8],
    ) -> Result<(), TransportError> {
        let wrapped = t.wrap(dir, vip, phone, data, now_unix());
        self.send_own(t.own_address(), node, &wrapped)
    }

    /// Sends from exactly our socket `local`, never tunnelling.
    fn send_own(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
    ) -> Result<(), TransportError> {
        let sock = self
            .udp_socket(local)
            .ok_or(TransportError::NoSocket(Transport::Udp, local))?;
        send_on(sock, data, remote)
    }

    /// Our UDP socket bound to exactly `local`.
    fn udp_socket(&self, local: SocketAddr) -> Option<&Arc<UdpSocket>> {
        self.inner
            .udp
            .iter()
            .find(|(a, _)| *a == local)
            .map(|(_, s)| s)
    }

    /// The drain tunnel, when `local` is one of our floating-IP sockets (only those carry
    /// other nodes' dialogs).
    fn vip_tunnel(&self, local: SocketAddr) -> Option<&dyn VipTunnel> {
        if !self.inner.cfg.floating_udp.contains(&local) {
            return None;
        }
        self.inner.tunnel.get().map(|t| &**t)
    }

    /// Joins the cluster's drain tunnel (once; later calls are ignored).
    pub fn set_tunnel(&self, tunnel: impl VipTunnel + 'static) {
        let _ = self.inner.tunnel.set(Box::new(tunnel));
    }

    /// What a received datagram is for the tunnel: `None` when the tunnel took it (sent it
    /// on, or dropped a bad envelope), else the message to handle here, its flow, and the
    /// way it came through the tunnel, if it did (then it must not go back in).
    fn tunnel_in<'a>(
        &self,
        data: &'a [u8],
        peer: Peer,
    ) -> Option<(std::borrow::Cow<'a, [u8]>, Peer, Option<TunnelDirection>)> {
        let Some(t) = self.inner.tunnel.get() else {
            return Some((data.into(), peer, None));
        };
        match t.unwrap(data, now_unix()) {
            Ok(None) => Some((data.into(), peer, None)),
            Ok(Some(got)) => match got.dir {
                TunnelDirection::Out => {
                    if self.listens_on(got.vip) {
                        if let Err(e) = self.send_own(got.vip, got.phone, &got.message) {
                            debug!(vip = %got.vip, phone = %got.phone, error = %e, "tunnelled datagram not sent");
                        }
                    }
                    None
                }
                dir @ (TunnelDirection::In | TunnelDirection::Ask) => Some((
                    got.message.into(),
                    Peer {
                        transport: Transport::Udp,
                        remote: got.phone,
                        local: got.vip,
                        conn: None,
                    },
                    Some(dir),
                )),
            },
            Err(e) => {
                // Anyone can send such a datagram: say so at most once a second.
                let now = now_unix();
                if self.inner.tunnel_refused_at.swap(now, Ordering::Relaxed) != now {
                    warn!(from = %peer.remote, error = %e, "dropping a tunnelled datagram (logged once a second)");
                } else {
                    debug!(from = %peer.remote, error = %e, "dropping a tunnelled datagram");
                }
                None
            }
        }
    }

    /// Asks every other node about a CANCEL that reached our VIP socket and matches no
    /// INVITE here (the one with its INVITE answers); false when there is nobody to ask
    /// (not a VIP socket, or no other healthy node), and the CANCEL is ours to answer.
    pub fn ask_others(&self, msg: &SipMessage, peer: &Peer) -> bool {
        let Some(t) = self.vip_tunnel(peer.local) else {
            return false;
        };
        let others = t.other_nodes();
        if others.is_empty() {
            return false;
        }
        info!(vip = %peer.local, phone = %peer.remote, nodes = others.len(), "asking the other nodes whose CANCEL this is (drain)");
        let data = msg.to_bytes();
        for node in others {
            if let Err(e) = self.tunnel_to(
                t,
                node,
                TunnelDirection::Ask,
                peer.local,
                peer.remote,
                &data,
            ) {
                debug!(%node, error = %e, "tunnel to a node failed");
            }
        }
        true
    }

    /// Passes a message that reached our VIP socket for another node's dialog to that
    /// node, as received; true when it went.
    fn hand_to_owner(&self, msg: &SipMessage, data: &[u8], peer: &Peer) -> bool {
        let Some(t) = self.vip_tunnel(peer.local) else {
            return false;
        };
        let Some(owner) = t.owner_of(msg) else {
            return false;
        };
        info!(vip = %peer.local, phone = %peer.remote, %owner, "passing a message to the node with its dialog (drain)");
        if let Err(e) = self.tunnel_to(t, owner, TunnelDirection::In, peer.local, peer.remote, data)
        {
            debug!(%owner, error = %e, "tunnel to the dialog's node failed");
        }
        true
    }

    /// Open stream connections.
    pub fn connection_count(&self) -> usize {
        self.inner.open_conns.load(Ordering::Relaxed)
    }
}

/// Sends without waiting: a full socket buffer is `Busy` (the message is dropped).
fn send_on(sock: &UdpSocket, data: &[u8], remote: SocketAddr) -> Result<(), TransportError> {
    match sock.try_send_to(data, remote) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(TransportError::Busy),
        Err(e) => Err(TransportError::Io(e)),
    }
}

/// A SIP start line (a response's, or a request's ending in the version), not a keepalive.
fn is_sip_message(data: &[u8]) -> bool {
    let first_line = data.split(|b| *b == b'\n').next().unwrap_or_default();
    let first_line = first_line.strip_suffix(b"\r").unwrap_or(first_line);
    first_line.starts_with(b"SIP/2.0 ") || first_line.ends_with(b" SIP/2.0")
}

/// Connects from our address `local` (its IP, any port), so the phone sees the address it
/// registered to.
async fn open_stream(local: SocketAddr, remote: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = if remote.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if !local.ip().is_unspecified() && local.is_ipv4() == remote.is_ipv4() {
        sock.bind(SocketAddr::new(local.ip(), 0))?;
    }
    sock.connect(remote).await
}

/// Where a UDP response goes: Via `received` (else sent-by host) and `rport` (else the
/// sent-by port, else 5060). Falls back to the request's source when the Via names a host
/// we would have to resolve.
pub fn response_destination(msg: &SipMessage, to: &Peer) -> SocketAddr {
    let Ok(via) = message::top_via(msg.headers()) else {
        return to.remote;
    };
    let host = via.params.get("received").flatten().unwrap_or(&via.host);
    let ip: Option<IpAddr> = host.trim_matches(['[', ']']).parse().ok();
    let port = match via.params.get("rport") {
        Some(Some(p)) => p.parse().ok(),
        _ => Some(via.port.unwrap_or(5060)),
    };
    match (ip, port) {
        (Some(ip), Some(port)) => SocketAddr::new(ip, port),
        _ => to.remote,
    }
}

/// RFC 3261 18.2.1 and RFC 3581: record where a request really came from in its top Via.
fn stamp_received(headers: &mut Headers, source: SocketAddr) {
    let Some(idx) = headers.0.iter().position(|h| h.name == HeaderName::Via) else {
        return;
    };
    let value = headers.0[idx].value.clone();
    let mut parts = message::split_list(&value);
    let Some(first) = parts.next() else {
        return;
    };
    let rest: Vec<&str> = parts.collect();
    let Ok(mut via) = Via::parse(first) else {
        return;
    };
    let source_ip = source.ip().to_string();
    let host_ip = via.host.trim_matches(['[', ']']).to_owned();
    let wants_rport = via.params.get("rport").is_some();
    if host_ip != source_ip || wants_rport {
        via.params
            .0
            .retain(|(n, _)| !n.eq_ignore_ascii_case("received"));
        via.params.0.push(("received".into(), Some(source_ip)));
    }
    if wants_rport {
        for (n, v) in via.params.0.iter_mut() {
            if n.eq_ignore_ascii_case("rport") {
                *v = Some(source.port().to_string());
            }
        }
    }
    let mut new_value = via.to_string();
    for r in rest {
        new_value.push_str(", ");
        new_value.push_str(r);
    }
    headers.0[idx].value = new_value;
}

/// Parses a received buffer; answers what cannot be parsed. Returns the message to pass up.
fn accept_bytes(data: &[u8], peer: &Peer, handle: &TransportHandle) -> Option<SipMessage> {
    match message::parse(data) {
        Ok(mut msg) => {
            if let SipMessage::Request(req) = &mut msg {
                stamp_received(&mut req.headers, peer.remote);
            }
            if tracing::enabled!(tracing::Level::DEBUG) {
                debug!(from = %peer.remote, transport = %peer.transport, "recv\n{}", message::redacted(&msg));
            }
            Some(msg)
        }
        Err(e) => {
            debug!(from = %peer.remote, error = %e, "dropping unparseable message");
            if let Some(mut resp) = error_response_for(data, &e) {
                stamp_received(&mut resp.headers, peer.remote);
                if let Err(err) = handle.send(&SipMessage::Response(resp), peer) {
                    debug!(error = %err, "could not answer a bad message");
                }
            }
            None
        }
    }
}

/// Binds every configured listener and starts their tasks. Received messages go to
/// `inbound`; the tasks stop when `shutdown` turns true.
pub async fn start(
    cfg: TransportConfig,
    inbound: impl Into<Inboxes>,
    shutdown: watch::Receiver<bool>,
) -> Result<(TransportHandle, Bound), TransportError> {
    let inbound: Inboxes = inbound.into();
    let mut bound = Bound::default();
    let mut udp = Vec::new();
    for addr in &cfg.udp_listen {
        let sock = UdpSocket::bind(addr)
            .await
            .map_err(|source| TransportError::Bind {
                transport: Transport::Udp,
                addr: *addr,
                source,
            })?;
        let local = sock.local_addr()?;
        bound.udp.push(local);
        udp.push((local, Arc::new(sock)));
    }
    for addr in &cfg.floating_udp {
        let bind_error = |source| TransportError::Bind {
            transport: Transport::Udp,
            addr: *addr,
            source,
        };
        let sock = floating_socket(*addr, socket2::Type::DGRAM).map_err(bind_error)?;
        let sock = UdpSocket::from_std(sock.into()).map_err(bind_error)?;
        bound.udp.push(*addr);
        udp.push((*addr, Arc::new(sock)));
    }
    let mut tcp = Vec::new();
    for addr in &cfg.tcp_listen {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| TransportError::Bind {
                transport: Transport::Tcp,
                addr: *addr,
                source,
            })?;
        bound.tcp.push(listener.local_addr()?);
        tcp.push(listener);
    }
    for addr in &cfg.floating_tcp {
        let bind_error = |source| TransportError::Bind {
            transport: Transport::Tcp,
            addr: *addr,
            source,
        };
        let sock = floating_socket(*addr, socket2::Type::STREAM).map_err(bind_error)?;
        sock.listen(1024).map_err(bind_error)?;
        let listener = TcpListener::from_std(sock.into()).map_err(bind_error)?;
        bound.tcp.push(*addr);
        tcp.push(listener);
    }
    let handle = TransportHandle {
        inner: Arc::new(Shared {
            udp: udp.clone(),
            conns: Mutex::new(Conns::default()),
            next_conn: AtomicU64::new(1),
            open_conns: AtomicUsize::new(0),
            cfg: cfg.clone(),
            inbound: inbound.clone(),
            shutdown: shutdown.clone(),
            tunnel: std::sync::OnceLock::new(),
            tunnel_refused_at: std::sync::atomic::AtomicI64::new(0),
        }),
    };
    // One reader per signalling shard on each socket: receiving and parsing are the
    // transport's work per message, and one task doing it for every shard was the
    // node's ceiling (bench/register). UDP promises no order, so neither do the readers.
    for (local, sock) in udp {
        info!(addr = %local, readers = inbound.shards.len(), "listening on UDP");
        for _ in 0..inbound.shards.len() {
            tokio::spawn(udp_loop(
                sock.clone(),
                local,
                cfg.max_message_bytes,
                inbound.clone(),
                handle.clone(),
                shutdown.clone(),
            ));
        }
    }
    for listener in tcp {
        if let Ok(a) = listener.local_addr() {
            info!(addr = %a, "listening on TCP");
        }
        tokio::spawn(tcp_accept_loop(
            listener,
            cfg.clone(),
            inbound.clone(),
            handle.clone(),
            shutdown.clone(),
        ));
    }
    Ok((handle, bound))
}

/// A non-blocking socket bound to `addr` even while no interface has that address
/// (IP_FREEBIND): a floating IP this node may hold later.
fn floating_socket(addr: SocketAddr, kind: socket2::Type) -> std::io::Result<socket2::Socket> {
    let domain = socket2::Domain::for_address(addr);
    let sock = socket2::Socket::new(domain, kind, None)?;
    if addr.is_ipv4() {
        sock.set_freebind_v4(true)?;
    } else {
        sock.set_freebind_v6(true)?;
    }
    if kind == socket2::Type::STREAM {
        sock.set_reuse_address(true)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock)
}

/// Reports datagrams dropped under overload at most once a second: a log line per drop
/// would cost the CPU the node is short of, and flood the log.
#[derive(Default)]
struct DropLog {
    count: u64,
    since: Option<std::time::Instant>,
}

impl DropLog {
    fn dropped(&mut self, from: SocketAddr) {
        self.count += 1;
        let now = std::time::Instant::now();
        match self.since {
            Some(t) if now.duration_since(t) < Duration::from_secs(1) => {}
            _ => {
                warn!(
                    dropped = self.count,
                    last_from = %from,
                    "inbound queue full: dropping datagrams (the senders retransmit)"
                );
                self.count = 0;
                self.since = Some(now);
            }
        }
    }
}

async fn udp_loop(
    sock: Arc<UdpSocket>,
    local: SocketAddr,
    max_message: usize,
    inbound: Inboxes,
    handle: TransportHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; max_message.max(1500)];
    let mut overload = DropLog::default();
    loop {
        let (len, remote) = tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok(v) => v,
                Err(e) => {
                    // ICMP port unreachable from an earlier send surfaces here on Linux.
                    debug!(error = %e, "udp receive error");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let data = &buf[..len];
        // Keepalives (CRLF, or a NAT-binding refresh with nothing in it) need no answer.
        if data.iter().all(|b| matches!(b, b'\r' | b'\n' | b' ' | 0)) {
            continue;
        }
        let peer = Peer {
            transport: Transport::Udp,
            remote,
            local,
            conn: None,
        };
        let Some((data, peer, tunnelled)) = handle.tunnel_in(data, peer) else {
            continue;
        };
        if let Some(msg) = accept_bytes(&data, &peer, &handle) {
            if tunnelled.is_none() && handle.hand_to_owner(&msg, &data, &peer) {
                continue;
            }
            let asked = tunnelled == Some(TunnelDirection::Ask);
            // Under overload drop rather than queue without bound: the sender retransmits.
            if let Err(InboxFull::Full) = inbound.try_send(Inbound::Message { msg, peer, asked }) {
                overload.dropped(remote);
            }
        }
    }
}

async fn tcp_accept_loop(
    listener: TcpListener,
    cfg: TransportConfig,
    inbound: Inboxes,
    handle: TransportHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    warn!(error = %e, "tcp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        if handle.connection_count() >= cfg.tcp_max_connections {
            warn!(from = %remote, limit = cfg.tcp_max_connections, "refusing TCP connection: limit reached");
            drop(stream);
            continue;
        }
        let local = match stream.local_addr() {
            Ok(a) => a,
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        let id = ConnId(handle.inner.next_conn.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::channel::<Bytes>(256);
        if let Ok(mut conns) = handle.inner.conns.lock() {
            conns.insert(id, remote, tx);
        }
        handle.inner.open_conns.fetch_add(1, Ordering::Relaxed);
        let peer = Peer {
            transport: Transport::Tcp,
            remote,
            local,
            conn: Some(id),
        };
        debug!(from = %remote, conn = id.0, "tcp connection opened");
        tokio::spawn(tcp_connection(
            stream,
            peer,
            rx,
            cfg.clone(),
            inbound.clone(),
            handle.clone(),
            shutdown.clone(),
        ));
    }
}

async fn tcp_connection(
    stream: TcpStream,
    peer: Peer,
    mut outgoing: mpsc::Receiver<Bytes>,
    cfg: TransportConfig,
    inbound: Inboxes,
    handle: TransportHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut reader, mut writer) = stream.into_split();
    let mut framer = StreamFramer::new(cfg.max_message_bytes);
    let mut buf = vec![0u8; 16 * 1024];
    let conn = peer.conn;
    loop {
        tokio::select! {
            r = tokio::time::timeout(cfg.tcp_idle_timeout, reader.read(&mut buf)) => {
                let n = match r {
                    Err(_) => { debug!(from = %peer.remote, "tcp connection idle, closing"); break; }
                    Ok(Err(_)) | Ok(Ok(0)) => break,
                    Ok(Ok(n)) => n,
                };
                framer.push(&buf[..n]);
                let mut close = false;
                loop {
                    match framer.next_frame() {
                        Ok(None) => break,
                        Ok(Some(Frame::Ping)) => {
                            // RFC 5626 4.4.1: answer a CRLFCRLF ping with a CRLF pong.
                            if writer.write_all(b"\r\n").await.is_err() { close = true; break; }
                        }
                        Ok(Some(Frame::Message(bytes))) => {
                            if let Some(msg) = accept_bytes(&bytes, &peer, &handle) {
                                if inbound
                                    .send(Inbound::Message {
                                        msg,
                                        peer,
                                        asked: false,
                                    })
                                    .await
                                    .is_err()
                                {
                                    close = true;
                                    break;
                                }
                            }
                        }
                        Err(e) => {
                            debug!(from = %peer.remote, error = %e, "tcp framing error, closing");
                            close = true;
                            break;
                        }
                    }
                }
                if close { break; }
            }
            out = outgoing.recv() => match out {
                Some(bytes) => if writer.write_all(&bytes).await.is_err() { break; },
                None => break,
            },
            _ = shutdown.changed() => break,
        }
    }
    if let (Some(id), Ok(mut conns)) = (conn, handle.inner.conns.lock()) {
        conns.remove(id, peer.remote);
    }
    handle.inner.open_conns.fetch_sub(1, Ordering::Relaxed);
    debug!(from = %peer.remote, "tcp connection closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(via: &str) -> SipMessage {
        let text = format!(
            "OPTIONS sip:x SIP/2.0\r\nVia: {via}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        message::parse(text.as_bytes()).expect("parse")
    }

    fn peer(remote: &str) -> Peer {
        Peer {
            transport: Transport::Udp,
            remote: remote.parse().expect("addr"),
            local: "127.0.0.1:5060".parse().expect("addr"),
            conn: None,
        }
    }

    #[test]
    fn rport_and_received_are_stamped() {
        let mut m = request("SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKa;rport, SIP/2.0/UDP p:1");
        stamp_received(m.headers_mut(), "203.0.113.9:40001".parse().expect("addr"));
        let via = message::top_via(m.headers()).expect("via");
        assert_eq!(via.params.get("received"), Some(Some("203.0.113.9")));
        assert_eq!(via.params.get("rport"), Some(Some("40001")));
        assert_eq!(m.headers().list(&HeaderName::Via).count(), 2);
        let resp = SipMessage::Response(message::Response::for_request(
            match &m {
                SipMessage::Request(r) => r,
                SipMessage::Response(_) => panic!(),
            },
            200,
            "OK",
        ));
        assert_eq!(
            response_destination(&resp, &peer("203.0.113.9:40001")),
            "203.0.113.9:40001".parse().expect("addr")
        );
    }

    #[test]
    fn no_rport_goes_to_received_and_via_port() {
        let mut m = request("SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKa");
        stamp_received(m.headers_mut(), "203.0.113.9:40001".parse().expect("addr"));
        let via = message::top_via(m.headers()).expect("via");
        assert_eq!(via.params.get("received"), Some(Some("203.0.113.9")));
        assert_eq!(via.params.get("rport"), None);
        let mut same = request("SIP/2.0/UDP 203.0.113.9:5062;branch=z9hG4bKa");
        stamp_received(
            same.headers_mut(),
            "203.0.113.9:5062".parse().expect("addr"),
        );
        let via = message::top_via(same.headers()).expect("via");
        assert_eq!(
            via.params.get("received"),
            None,
            "no received when host matches"
        );
        let SipMessage::Request(r) = m else { panic!() };
        let resp = SipMessage::Response(message::Response::for_request(&r, 200, "OK"));
        assert_eq!(
            response_destination(&resp, &peer("203.0.113.9:40001")),
            "203.0.113.9:5062".parse().expect("addr")
        );
    }
}
