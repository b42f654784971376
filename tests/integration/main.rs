//! The one integration test binary (see DESIGN.md "Tests"): a module per feature, and
//! `support` to start nodes and peers.

mod admin_api;
mod apps;
mod audio;
mod bad_input;
mod baresip;
mod browser;
mod calls;
mod cli;
mod cluster;
mod cluster_calls;
mod dialplan;
mod handover;
mod mwi;
mod nat;
mod outage;
mod panel;
mod register;
mod relay;
mod store;
mod support;
mod torture;
mod transport;
