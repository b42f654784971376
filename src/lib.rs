//! Ringfort: an all-in-one clustered PBX. See DESIGN.md for the layering:
//! transport -> sip (messages, transactions) -> registrar/call -> apps/media.
//! Lower layers never call upward; they return events.

pub mod admin;
pub mod apps;
pub mod call;
pub mod cluster;
pub mod config;
pub mod dialplan;
pub mod http;
pub mod media;
pub mod metrics;
pub mod node;
pub mod registrar;
pub mod sip;
pub mod store;
pub mod transport;
pub mod voicemail;

/// The wall clock in Unix seconds (0 before 1970): for what is stored or signed. The
/// protocol cores never read it; time is passed in.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
