//! The thin task around [`super::mwi::Subscriptions`]: feeds it the SUBSCRIBEs the node
//! authenticated, the mailbox counts (read from the store for a new subscription, then
//! from [`Voicemail::subscribe_counts`]) and its timer, and hands what it says back to
//! the node's core, the only owner of the transaction layer.
//!
//! Owns: the map from NOTIFY transactions to subscriptions. Must not: touch sockets or
//! the transaction layer.

use std::collections::HashMap;

use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::mwi::{is_in_dialog, requested_mailbox, MwiConfig, MwiOut, SubId, Subscriptions};
use super::Voicemail;
use crate::sip::message::{reason_phrase, HeaderName, Request, Response};
use crate::sip::transaction::TxKey;
use crate::sip::Peer;
use crate::store::VoicemailCounts;

/// What the core hands the MWI task.
#[derive(Debug)]
pub enum MwiIn {
    /// A SUBSCRIBE for `message-summary` on server transaction `key`. `subscriber` is the
    /// extension the core authenticated (empty for one inside a dialog); `local_contact`
    /// our Contact on the flow it came on.
    Subscribe(Box<SubscribeIn>),
    /// A NOTIFY's client transaction ended: its final status, `None` for a timeout or a
    /// transport error.
    NotifyResult { key: TxKey, status: Option<u16> },
    /// A phone of `mailbox` registered a new contact: it gets the lamp's state unasked
    /// when unsolicited MWI is on and nobody subscribes to the mailbox.
    Registered { mailbox: String },
}

/// A SUBSCRIBE the core hands over (boxed: it is large beside the other inputs).
#[derive(Debug)]
pub struct SubscribeIn {
    pub key: TxKey,
    pub req: Request,
    pub from: Peer,
    pub subscriber: String,
    pub local_contact: String,
}

/// What the MWI task asks of the core.
#[derive(Debug)]
pub enum MwiCommand {
    /// Answer the SUBSCRIBE's server transaction.
    Respond { key: TxKey, resp: Response },
    /// Start a NOTIFY client transaction and report how it ends ([`MwiIn::NotifyResult`]).
    SendNotify { req: Request, to: Peer },
    /// NOTIFY every registered phone of `mailbox`, unsolicited
    /// ([`super::mwi::unsolicited_notify`]): the core knows the bindings.
    Unsolicited {
        mailbox: String,
        counts: VoicemailCounts,
    },
}

/// SUBSCRIBEs queued for the task; beyond it the core answers 503 (UDP phones retry).
pub const MWI_QUEUE: usize = 1024;

/// Starts the task; returns where the core sends its inputs.
pub fn spawn_mwi(
    vm: Voicemail,
    cfg: MwiConfig,
    commands: mpsc::Sender<MwiCommand>,
    shutdown: watch::Receiver<bool>,
) -> (mpsc::Sender<MwiIn>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(MWI_QUEUE);
    let changes = vm.subscribe_counts();
    let task = tokio::spawn(run(vm, cfg, rx, changes, commands, shutdown));
    (tx, task)
}

async fn run(
    vm: Voicemail,
    cfg: MwiConfig,
    mut inbox: mpsc::Receiver<MwiIn>,
    mut changes: broadcast::Receiver<super::CountsChanged>,
    commands: mpsc::Sender<MwiCommand>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut subs = Subscriptions::new(cfg, rand::random());
    let mut notifies: HashMap<TxKey, SubId> = HashMap::new();
    loop {
        let deadline = subs.next_deadline();
        let out = tokio::select! {
            m = inbox.recv() => match m {
                None => return,
                Some(MwiIn::Subscribe(input)) => {
                    let SubscribeIn { key, req, from, subscriber, local_contact } = *input;
                    let counts = match counts_for(&vm, &req, &subscriber).await {
                        Ok(c) => c,
                        Err(()) => {
                            let mut r = Response::for_request(&req, 500, reason_phrase(500));
                            r.ensure_to_tag(&format!("{:08x}", rand::random::<u32>()));
                            r.headers.push(HeaderName::Other("Retry-After".into()), "5");
                            let _ = commands.send(MwiCommand::Respond { key, resp: r }).await;
                            continue;
                        }
                    };
                    let now = tokio::time::Instant::now().into_std();
                    subs.on_subscribe(&req, from, &subscriber, counts, &local_contact, now)
                        .into_iter()
                        .map(|o| (Some(key.clone()), o))
                        .collect::<Vec<_>>()
                }
                Some(MwiIn::NotifyResult { key, status }) => {
                    if let Some(sub) = notifies.remove(&key) {
                        subs.on_notify_result(&sub, status);
                    }
                    Vec::new()
                }
                Some(MwiIn::Registered { mailbox }) => {
                    if cfg.unsolicited && !subs.watches(&mailbox) {
                        match vm.counts(&mailbox).await {
                            Ok(counts) => {
                                if commands.send(MwiCommand::Unsolicited { mailbox, counts }).await.is_err() {
                                    return;
                                }
                            }
                            Err(e) => warn!(mailbox, error = %e, "voicemail counts unread"),
                        }
                    }
                    Vec::new()
                }
            },
            c = changes.recv() => {
                let now = tokio::time::Instant::now().into_std();
                match c {
                    Ok(c) => {
                        if cfg.unsolicited && !subs.watches(&c.mailbox) {
                            let cmd = MwiCommand::Unsolicited { mailbox: c.mailbox.clone(), counts: c.counts };
                            if commands.send(cmd).await.is_err() {
                                return;
                            }
                        }
                        tag(subs.on_counts(&c.mailbox, c.counts, now))
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        debug!(missed = n, "MWI fell behind the counts: reading them again");
                        let mut out = Vec::new();
                        for mailbox in subs.mailboxes() {
                            match vm.counts(&mailbox).await {
                                Ok(counts) => out.extend(tag(subs.on_counts(&mailbox, counts, now))),
                                Err(e) => warn!(mailbox, error = %e, "voicemail counts unread"),
                            }
                        }
                        out
                    }
                    // The service is gone (the node is stopping): timers still end
                    // subscriptions, so keep going without counts.
                    Err(broadcast::error::RecvError::Closed) => {
                        changes = broadcast::channel(1).1;
                        Vec::new()
                    }
                }
            }
            _ = sleep_until(deadline) => tag(subs.on_timer(tokio::time::Instant::now().into_std())),
            _ = shutdown.changed() => return,
        };
        for (key, o) in out {
            let cmd = match (o, key) {
                (MwiOut::Respond(resp), Some(key)) => MwiCommand::Respond { key, resp },
                (MwiOut::Respond(_), None) => continue,
                (MwiOut::Notify { sub, req, to }, _) => {
                    if let Some(k) = TxKey::client(&req) {
                        notifies.insert(k, sub);
                    }
                    MwiCommand::SendNotify { req, to }
                }
            };
            if commands.send(cmd).await.is_err() {
                return;
            }
        }
    }
}

fn tag(out: Vec<MwiOut>) -> Vec<(Option<TxKey>, MwiOut)> {
    out.into_iter().map(|o| (None, o)).collect()
}

/// The counts a new subscription starts with (none needed inside a dialog, nor for a
/// request the manager will refuse).
async fn counts_for(
    vm: &Voicemail,
    req: &Request,
    subscriber: &str,
) -> Result<VoicemailCounts, ()> {
    if is_in_dialog(req) {
        return Ok(VoicemailCounts::default());
    }
    match requested_mailbox(req) {
        Some(m) if m == subscriber => vm.counts(&m).await.map_err(|e| {
            warn!(mailbox = %m, error = %e, "voicemail counts unread: SUBSCRIBE answered 500");
        }),
        _ => Ok(VoicemailCounts::default()),
    }
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}
