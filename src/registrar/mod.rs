//! REGISTER handling, bindings, expiry and location lookups. Must not touch media.

pub mod bindings;
