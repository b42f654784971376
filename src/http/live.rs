//! The live feed, `GET /api/v1/events`: Server-Sent Events carrying snapshots of the
//! registrations and the calls in progress whenever they change, and each mailbox's new
//! counts when a message arrives, is heard or deleted, for the panel's live pages. Owns:
//! when to read and what to send. Must not: write anything, or learn of changes other
//! than through [`crate::store::Store::changes`], its timer and
//! [`crate::voicemail::Voicemail::subscribe_counts`].
//!
//! An admin gets everything; a `user` account gets only its own mailbox's counts (the
//! self-service page's voicemail), never the registrations or calls.
//!
//! A snapshot (not a delta) per change: a page just replaces its table, and a client that
//! missed events (a reconnect) is whole again with the next one. Wake-ups come from the
//! store's change counters (bumped after each commit of bindings or call records, so the
//! read after a wake-up sees the change); a timer re-reads every [`RECHECK`] as well, for
//! what no commit here announces: registrations expiring and, in a cluster, other nodes'
//! writes. A snapshot equal to the last one sent is not sent again.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tracing::warn;

use super::api::{calls_now, registrations_now, CallView, RegistrationView};
use super::auth::Principal;
use super::error::ApiError;
use super::voicemail::own_mailbox;
use super::AppState;
use crate::store::{Changes, Store};
use crate::voicemail::CountsChanged;

/// How often the feed re-reads without being told of a change.
pub const RECHECK: Duration = Duration::from_secs(5);
/// The least time between two reads: on a busy node the call records commit every few
/// tens of milliseconds, and each client's read lists every registration and call; the
/// changes of a quarter second go out together.
pub const MIN_GAP: Duration = Duration::from_millis(250);
/// Comment lines that keep idle connections (and proxies) from timing out.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `GET /api/v1/events`: `event: registrations` and `event: calls`, each with the whole
/// list as JSON (the items of `GET /registrations` and `GET /calls`), both sent at once on
/// connecting (admins only); `event: voicemail` with `{"mailbox", "new", "old"}` when a
/// mailbox's counts change (`mailbox` null: some were missed, re-read them all).
pub async fn events(
    State(state): State<AppState>,
    who: Principal,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let scope = match own_mailbox(&state, &who).await? {
        None => Scope::Everything,
        Some(own) => Scope::Mailbox(own),
    };
    let feed = Feed::new(
        state.inner.store.clone(),
        state.inner.closing.subscribe(),
        state.inner.voicemail.subscribe_counts(),
        scope,
    );
    let events = stream::unfold(feed, |mut feed| async move {
        let event = feed.next().await?;
        Some((Ok(event), feed))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// What one client may hear of.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    /// An admin.
    Everything,
    /// A user: this mailbox's counts only (`None`: the account owns no extension).
    Mailbox(Option<String>),
}

/// The `voicemail` event's data.
#[derive(Serialize)]
struct MailboxCounts<'a> {
    mailbox: Option<&'a str>,
    new: u32,
    old: u32,
}

/// One client's feed.
struct Feed {
    store: Store,
    changes: watch::Receiver<Changes>,
    recheck: tokio::time::Interval,
    /// When the lists were last read.
    last_read: tokio::time::Instant,
    /// What was sent last (`None`: nothing yet).
    registrations: Option<Vec<RegistrationView>>,
    calls: Option<Vec<CallView>>,
    ready: VecDeque<Event>,
    /// Reads at once, before waiting for anything.
    first: bool,
    /// The store's change sender is gone (the node is stopping): the timer only.
    changes_closed: bool,
    /// True once the server stops: the feed ends.
    closing: watch::Receiver<bool>,
    state_gone: bool,
    /// Mailbox counts as the voicemail service announces them.
    voicemail: broadcast::Receiver<CountsChanged>,
    voicemail_closed: bool,
    scope: Scope,
}

impl Feed {
    fn new(
        store: Store,
        closing: watch::Receiver<bool>,
        voicemail: broadcast::Receiver<CountsChanged>,
        scope: Scope,
    ) -> Feed {
        let mut changes = store.changes();
        changes.mark_unchanged();
        let now = tokio::time::Instant::now();
        let mut recheck = tokio::time::interval_at(now + RECHECK, RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Feed {
            store,
            changes,
            recheck,
            last_read: now,
            registrations: None,
            calls: None,
            ready: VecDeque::new(),
            first: true,
            changes_closed: false,
            closing,
            state_gone: false,
            voicemail,
            voicemail_closed: false,
            scope,
        }
    }

    /// The next event to send; waits for a change when there is none. `None` once the
    /// server stops.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if self.stopping() {
                return None;
            }
            if let Some(ev) = self.ready.pop_front() {
                return Some(ev);
            }
            if !self.first {
                self.wait().await;
            }
            self.first = false;
            self.read().await;
        }
    }

    async fn wait(&mut self) {
        tokio::time::sleep_until(self.last_read + MIN_GAP).await;
        tokio::select! {
            changed = self.changes.changed(), if !self.changes_closed => {
                if changed.is_err() {
                    self.changes_closed = true;
                }
            }
            _ = self.recheck.tick() => {}
            counts = self.voicemail.recv(), if !self.voicemail_closed => match counts {
                Ok(c) => {
                    let wanted = match &self.scope {
                        Scope::Everything => true,
                        Scope::Mailbox(own) => own.as_deref() == Some(c.mailbox.as_str()),
                    };
                    if wanted {
                        let data = MailboxCounts {
                            mailbox: Some(&c.mailbox),
                            new: c.counts.new,
                            old: c.counts.old,
                        };
                        self.queue("voicemail", &data);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let data = MailboxCounts { mailbox: None, new: 0, old: 0 };
                    self.queue("voicemail", &data);
                }
                Err(broadcast::error::RecvError::Closed) => self.voicemail_closed = true,
            },
            // Back in `next`, the feed sees it.
            stopped = self.closing.changed() => {
                if stopped.is_err() {
                    self.state_gone = true;
                }
            }
        }
    }

    /// The server is stopping (or its state is gone).
    fn stopping(&self) -> bool {
        self.state_gone || *self.closing.borrow()
    }

    /// Reads both lists and queues those that differ from what was sent (for an admin).
    async fn read(&mut self) {
        self.last_read = tokio::time::Instant::now();
        if self.scope != Scope::Everything {
            return;
        }
        // Whatever changed before this read is in it.
        self.changes.mark_unchanged();
        match registrations_now(&self.store).await {
            Ok(now) => {
                let same = self.registrations.as_ref().is_some_and(|last| {
                    last.len() == now.len()
                        && last
                            .iter()
                            .zip(&now)
                            .all(|(a, b)| a.timeless() == b.timeless())
                });
                if !same {
                    self.queue("registrations", &now);
                    self.registrations = Some(now);
                }
            }
            Err(e) => warn!(error = %e, "live feed: cannot read registrations"),
        }
        match calls_now(&self.store).await {
            Ok(now) => {
                if self.calls.as_ref() != Some(&now) {
                    self.queue("calls", &now);
                    self.calls = Some(now);
                }
            }
            Err(e) => warn!(error = %e, "live feed: cannot read calls"),
        }
    }

    fn queue<T: Serialize>(&mut self, name: &str, items: &T) {
        match Event::default().event(name).json_data(items) {
            Ok(ev) => self.ready.push_back(ev),
            Err(e) => warn!(error = %e, "live feed: cannot serialise {name}"),
        }
    }
}
