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
