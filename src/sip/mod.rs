//! SIP protocol logic without I/O: messages, transactions, digest auth.
//! Must not do I/O: callers feed bytes, messages and `now`, and act on what comes back.

pub mod message;
