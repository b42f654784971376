//! The cluster: node membership (heartbeats in the store) and the floating-IP agent.
//!
//! Owns: the VIP lease election (`election`, sans-IO), the task that drives it against the
//! store and the interface (`agent`), the heartbeat of this node, moving a VIP on purpose
//! (`handover`), and the tunnel that keeps a node's dialogs through a VIP it handed over
//! (`tunnel`).
//! Must not: write SQL (everything goes through `crate::store`), or know about SIP, calls
//! or media beyond the pure routing answer in `routing` and the dialog tags `tunnel`
//! reads; call recovery is still to come (see DESIGN.md).

pub mod agent;
pub mod election;
pub mod handover;
pub mod routing;
pub mod status;
pub mod tunnel;
pub mod view;
