//! The forks of one outgoing INVITE (one per registered contact of the callee): what
//! state each is in, which may be cancelled now and which only once it sends a
//! provisional response (RFC 3261 9.1), and what their failures add up to. Shared by the
//! B2BUA's callee side ([`super::machine`]) and an app's outbound leg
//! ([`super::out_leg`]).
//!
//! Owns: the bookkeeping. Must not: send anything (it returns the CANCELs as
//! [`Command`]s) or decide what the caller is told.

use crate::sip::dialog::{DialogId, DialogSet, InviteId};
use crate::sip::Peer;

use super::machine::Command;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ForkState {
    Trying,
    Ringing,
    /// To be cancelled once it sends a provisional response (RFC 3261 9.1).
    CancelPending,
    Cancelling,
    Failed(u16),
    Answered,
}

impl ForkState {
    /// Still waiting for a final response.
    pub(super) fn pending(self) -> bool {
        matches!(
            self,
            ForkState::Trying
                | ForkState::Ringing
                | ForkState::CancelPending
                | ForkState::Cancelling
        )
    }
}

#[derive(Debug, Clone)]
pub(super) struct Fork {
    pub(super) invite: InviteId,
    pub(super) peer: Peer,
    pub(super) state: ForkState,
    /// A provisional response (100 included) came: it may be cancelled.
    pub(super) provisional: bool,
    /// It sent a 180/183: a phone rang.
    pub(super) rang: bool,
}

/// What a provisional response on a fork means for it.
pub(super) enum Provisional {
    /// Not one of ours.
    Unknown,
    /// It was waiting to be cancelled: send this CANCEL and nothing else.
    Cancel(Command),
    /// It lives on.
    Live,
}

#[derive(Debug, Clone, Default)]
pub(super) struct Forks {
    list: Vec<Fork>,
}

impl Forks {
    pub(super) fn push(&mut self, invite: InviteId, peer: Peer) {
        self.list.push(Fork {
            invite,
            peer,
            state: ForkState::Trying,
            provisional: false,
            rang: false,
        });
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Fork> {
        self.list.iter()
    }

    pub(super) fn get_mut(&mut self, invite: &InviteId) -> Option<&mut Fork> {
        self.list.iter_mut().find(|f| &f.invite == invite)
    }

    /// The fork a dialog (early or confirmed) belongs to.
    pub(super) fn index_of(&self, id: &DialogId) -> Option<usize> {
        self.list
            .iter()
            .position(|f| f.invite.call_id == id.call_id && f.invite.local_tag == id.local_tag)
    }

    /// Some fork still waits for its final response.
    pub(super) fn any_pending(&self) -> bool {
        self.list.iter().any(|f| f.state.pending())
    }

    /// A provisional response (`status`) on fork `invite`; a 180/183 marks it rung and
    /// ringing.
    pub(super) fn on_provisional(
        &mut self,
        invite: &InviteId,
        status: u16,
        dialogs: &DialogSet,
    ) -> Provisional {
        let Some(f) = self.get_mut(invite) else {
            return Provisional::Unknown;
        };
        f.provisional = true;
        if f.state == ForkState::CancelPending {
            f.state = ForkState::Cancelling;
            return match dialogs.invite_key(invite) {
                Some(key) => Provisional::Cancel(Command::Cancel {
                    invite: key.clone(),
                    to: f.peer,
                }),
                None => Provisional::Live,
            };
        }
        if status != 100 {
            f.rang = true;
            if f.state == ForkState::Trying {
                f.state = ForkState::Ringing;
            }
        }
        Provisional::Live
    }

    /// CANCELs for every fork still trying or ringing; one that has sent nothing yet is
    /// cancelled when its first provisional comes (RFC 3261 9.1), or ends by its timeout.
    pub(super) fn cancel_all(&mut self, dialogs: &DialogSet) -> Vec<Command> {
        let mut out = Vec::new();
        for f in self.list.iter_mut() {
            if matches!(f.state, ForkState::Trying | ForkState::Ringing) {
                if !f.provisional {
                    f.state = ForkState::CancelPending;
                    continue;
                }
                if let Some(key) = dialogs.invite_key(&f.invite) {
                    out.push(Command::Cancel {
                        invite: key.clone(),
                        to: f.peer,
                    });
                }
                f.state = ForkState::Cancelling;
            }
        }
        out
    }

    /// The final statuses of the forks that failed.
    pub(super) fn failures(&self) -> Vec<u16> {
        self.list
            .iter()
            .filter_map(|f| match f.state {
                ForkState::Failed(s) => Some(s),
                _ => None,
            })
            .collect()
    }
}

impl std::ops::Index<usize> for Forks {
    type Output = Fork;
    fn index(&self, i: usize) -> &Fork {
        &self.list[i]
    }
}

impl std::ops::IndexMut<usize> for Forks {
    fn index_mut(&mut self, i: usize) -> &mut Fork {
        &mut self.list[i]
    }
}
