//! SIP protocol logic without I/O: messages, transactions, digest auth, SDP.
//! Must not do I/O: callers feed bytes, messages and `now`, and act on what comes back.

use std::fmt;
use std::net::SocketAddr;

pub mod dialog;
pub mod digest;
pub mod message;
pub mod sdp;
pub mod shard;
pub mod transaction;

/// The transport a message travelled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl Transport {
    /// Reliable transports skip retransmissions and the wait states (RFC 3261 17).
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// The name used in Via headers.
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
        }
    }

    /// The lower-case name used in URIs (`transport=`) and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }

    pub fn parse(s: &str) -> Option<Transport> {
        [
            Transport::Udp,
            Transport::Tcp,
            Transport::Tls,
            Transport::Ws,
            Transport::Wss,
        ]
        .into_iter()
        .find(|t| t.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A connection of a stream transport, unique for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Where a message came from or goes to: the flow (RFC 5626 sense) it travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub transport: Transport,
    /// The remote address (source of a received message, destination of a sent one).
    pub remote: SocketAddr,
    /// Our socket the flow uses, so replies leave from the address the peer talked to.
    pub local: SocketAddr,
    /// The connection, for stream transports.
    pub conn: Option<ConnId>,
}
