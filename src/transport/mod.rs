//! Sockets: UDP and TCP listeners, connection flows, keepalives. Must not know about calls.
