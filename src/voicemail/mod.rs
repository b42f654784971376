//! Voicemail: the mailboxes' files under `<data>/voicemail/<mailbox>/`, their rows in the
//! store, PINs, greetings, and the counts MWI announces ([`mwi`] is the subscription side).
//!
//! Owns: the folder layout, saving a message crash-safely, reconciling files and rows at
//! start, and telling listeners when a mailbox's counts change. Must not: talk to a call
//! (the apps in `crate::apps::voicemail` do, through a `Channel`) or to SIP (`mwi` is
//! sans-IO and the node carries its messages).
//!
//! A message on disk, in its mailbox folder:
//! - `<id>.meta`: who called and when, written (and synced) before the recording starts,
//!   so a message recovered after a crash still knows its caller;
//! - `<id>.wav.part`: the recording while the caller speaks (the recorder keeps it playable
//!   up to its last second whatever happens to the process);
//! - `<id>.wav`: the saved message. Saving syncs the file, renames it to this name, syncs
//!   the folder, then inserts the row and removes the `.meta`.
//!
//! [`Voicemail::open`] reconciles what a crash left: a `.wav` without a row gets its row;
//! a `.wav.part` holding at least [`MIN_MESSAGE`] of audio is repaired and saved like a
//! finished message (a caller cut off by a crash did speak, and "a crash never loses a
//! message" covers what was said), a shorter one is dropped; rows whose file is gone are
//! dropped. Ids start with the time in milliseconds, so names sort by arrival.

pub mod mwi;
pub mod mwi_task;

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;
use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::store::{
    valid_extension_number, GreetingKind, Store, StoreError, VoicemailCounts, VoicemailFolder,
    VoicemailMessage,
};

/// A recording shorter than this is no message (a caller who hung up at the beep).
pub const MIN_MESSAGE: Duration = Duration::from_secs(1);

/// PINs are 4 to 10 digits: typed on a keypad, long enough not to be guessed in the three
/// tries a call gets.
pub const PIN_DIGITS: std::ops::RangeInclusive<usize> = 4..=10;

#[derive(Debug, Error)]
pub enum VoicemailError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0:?} is not a mailbox number")]
    BadMailbox(String),
    #[error("a PIN is {min} to {max} digits", min = PIN_DIGITS.start(), max = PIN_DIGITS.end())]
    BadPin,
    #[error("the PIN hashing task failed")]
    Hashing,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> VoicemailError + '_ {
    move |source| VoicemailError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A mailbox's counts changed (a message saved, heard, moved or deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountsChanged {
    pub mailbox: String,
    pub counts: VoicemailCounts,
}

/// A message being recorded: the app records into [`PendingMessage::recording_path`], then
/// hands it back to [`Voicemail::save_message`] or [`Voicemail::discard_message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMessage {
    pub id: String,
    pub mailbox: String,
    pub caller: String,
    pub caller_name: String,
    pub received_at: i64,
    /// Where the channel records to (a new file; the recorder refuses an existing one).
    pub recording_path: PathBuf,
}

/// A greeting being recorded: recorded to a temporary name, installed by
/// [`Voicemail::save_greeting`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingGreeting {
    pub mailbox: String,
    pub kind: GreetingKind,
    pub recording_path: PathBuf,
}

/// What [`Voicemail::reconcile`] repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Saved files that had no row (a crash between the rename and the insert).
    pub rows_added: Vec<String>,
    /// Recordings a crash interrupted, kept as messages.
    pub recordings_kept: Vec<String>,
    /// Interrupted recordings too short to be messages, and interrupted greetings.
    pub recordings_dropped: Vec<String>,
    /// Rows whose file was gone.
    pub rows_dropped: Vec<String>,
}

/// The voicemail service. Cheap to clone; share it between the apps and the node.
#[derive(Debug, Clone)]
pub struct Voicemail {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    data_dir: PathBuf,
    changes: broadcast::Sender<CountsChanged>,
}

const PART: &str = ".wav.part";
const WAV: &str = ".wav";
const META: &str = ".meta";

impl Voicemail {
    /// The service over `store` and the node's data directory; reconciles the files with
    /// the rows first (see the module comment), logging what it repaired.
    pub async fn open(store: Store, data_dir: &Path) -> Result<Voicemail, VoicemailError> {
        let vm = Voicemail {
            inner: Arc::new(Inner {
                store,
                data_dir: data_dir.to_owned(),
                changes: broadcast::channel(256).0,
            }),
        };
        let root = vm.root();
        std::fs::create_dir_all(&root).map_err(io_err(&root))?;
        let report = vm.reconcile().await?;
        for id in &report.rows_added {
            warn!(message = %id, "voicemail saved before a crash got its row");
        }
        for id in &report.recordings_kept {
            warn!(message = %id, "voicemail recording cut by a crash kept as a message");
        }
        for id in &report.recordings_dropped {
            info!(file = %id, "voicemail recording cut by a crash dropped (too short)");
        }
        for id in &report.rows_dropped {
            warn!(message = %id, "voicemail row without its file dropped");
        }
        Ok(vm)
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// `<data>/voicemail`.
    pub fn root(&self) -> PathBuf {
        self.inner.data_dir.join("voicemail")
    }

    /// `<data>/voicemail/<mailbox>`.
    pub fn mailbox_dir(&self, mailbox: &str) -> PathBuf {
        self.root().join(mailbox)
    }

    /// A stored path (relative to the data directory) as a file to open.
    pub fn absolute(&self, stored: &str) -> PathBuf {
        self.inner.data_dir.join(stored)
    }

    /// Count changes from now on. A receiver that lags gets `Lagged` and should re-read
    /// the counts it cares about.
    pub fn subscribe_counts(&self) -> broadcast::Receiver<CountsChanged> {
        self.inner.changes.subscribe()
    }

    pub async fn counts(&self, mailbox: &str) -> Result<VoicemailCounts, VoicemailError> {
        Ok(self.inner.store.voicemail_counts(mailbox).await?)
    }

    /// New messages first, each folder oldest first.
    pub async fn messages(&self, mailbox: &str) -> Result<Vec<VoicemailMessage>, VoicemailError> {
        Ok(self.inner.store.voicemail_messages(mailbox).await?)
    }

    async fn announce(&self, mailbox: &str) {
        match self.counts(mailbox).await {
            Ok(counts) => {
                // No receiver is fine: nobody watches this node's mailboxes yet.
                let _ = self.inner.changes.send(CountsChanged {
                    mailbox: mailbox.to_owned(),
                    counts,
                });
            }
            Err(e) => warn!(mailbox, error = %e, "voicemail counts not announced"),
        }
    }

    fn checked_dir(&self, mailbox: &str) -> Result<PathBuf, VoicemailError> {
        if !valid_extension_number(mailbox) {
            return Err(VoicemailError::BadMailbox(mailbox.to_owned()));
        }
        let dir = self.mailbox_dir(mailbox);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        Ok(dir)
    }

    // ---- messages ----

    /// Prepares a message from `caller` for `mailbox`: writes its `.meta` and names the
    /// file to record into.
    pub fn start_message(
        &self,
        mailbox: &str,
        caller: &str,
        caller_name: &str,
    ) -> Result<PendingMessage, VoicemailError> {
        let dir = self.checked_dir(mailbox)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let id = format!("{:013}-{:08x}", now.as_millis(), rand::random::<u32>());
        let received_at = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let meta = Meta {
            caller: caller.to_owned(),
            caller_name: caller_name.to_owned(),
            received_at,
        };
        let meta_path = dir.join(format!("{id}{META}"));
        write_synced(&meta_path, meta.encode().as_bytes())?;
        Ok(PendingMessage {
            recording_path: dir.join(format!("{id}{PART}")),
            id,
            mailbox: mailbox.to_owned(),
            caller: caller.to_owned(),
            caller_name: caller_name.to_owned(),
            received_at,
        })
    }

    /// Saves a recorded message: `None` (and nothing kept) when shorter than
    /// [`MIN_MESSAGE`]. Sync, rename, sync the folder, then the row: once this returns
    /// `Some`, a crash at any point keeps the message (see the module comment).
    pub async fn save_message(
        &self,
        pending: &PendingMessage,
        duration: Duration,
    ) -> Result<Option<VoicemailMessage>, VoicemailError> {
        if duration < MIN_MESSAGE {
            self.discard_message(pending);
            return Ok(None);
        }
        let dir = self.mailbox_dir(&pending.mailbox);
        let final_path = dir.join(format!("{}{WAV}", pending.id));
        install(&pending.recording_path, &final_path)?;
        let message = VoicemailMessage {
            id: pending.id.clone(),
            mailbox: pending.mailbox.clone(),
            caller: pending.caller.clone(),
            caller_name: pending.caller_name.clone(),
            received_at: pending.received_at,
            duration_ms: i64::try_from(duration.as_millis()).unwrap_or(i64::MAX),
            folder: VoicemailFolder::New,
            path: self.relative(&final_path),
        };
        self.inner.store.insert_voicemail_message(&message).await?;
        remove_quietly(&dir.join(format!("{}{META}", pending.id)));
        info!(mailbox = %message.mailbox, message = %message.id, caller = %message.caller,
              duration_ms = message.duration_ms, "voicemail saved");
        self.announce(&message.mailbox).await;
        Ok(Some(message))
    }

    /// Forgets a message that is not to be kept (its files go).
    pub fn discard_message(&self, pending: &PendingMessage) {
        remove_quietly(&pending.recording_path);
        let meta = self
            .mailbox_dir(&pending.mailbox)
            .join(format!("{}{META}", pending.id));
        remove_quietly(&meta);
    }

    /// Moves a message (heard: to `Old`); false when the mailbox has no such message.
    pub async fn move_message(
        &self,
        mailbox: &str,
        id: &str,
        folder: VoicemailFolder,
    ) -> Result<bool, VoicemailError> {
        let moved = self
            .inner
            .store
            .move_voicemail_message(mailbox, id, folder)
            .await?;
        if moved {
            self.announce(mailbox).await;
        }
        Ok(moved)
    }

    /// Deletes a message: the file first, then the row, so a crash in between leaves a
    /// row without a file, which the next start drops (the other order would bring a
    /// deleted message back). False when the mailbox has no such message.
    pub async fn delete_message(&self, mailbox: &str, id: &str) -> Result<bool, VoicemailError> {
        let messages = self.inner.store.voicemail_messages(mailbox).await?;
        let Some(m) = messages.iter().find(|m| m.id == id) else {
            return Ok(false);
        };
        let path = self.absolute(&m.path);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
        let deleted = self
            .inner
            .store
            .delete_voicemail_message(mailbox, id)
            .await?;
        info!(mailbox, message = id, "voicemail deleted");
        self.announce(mailbox).await;
        Ok(deleted)
    }

    // ---- PINs ----

    /// Whether the mailbox has a PIN.
    pub async fn has_pin(&self, mailbox: &str) -> Result<bool, VoicemailError> {
        let b = self.inner.store.voicemail_box(mailbox).await?;
        Ok(b.and_then(|b| b.pin_hash).is_some())
    }

    /// Sets the PIN (argon2id, as admin passwords); [`VoicemailError::BadPin`] unless it
    /// is [`PIN_DIGITS`] digits.
    pub async fn set_pin(&self, mailbox: &str, pin: &str) -> Result<(), VoicemailError> {
        if !valid_pin(pin) {
            return Err(VoicemailError::BadPin);
        }
        let pin = pin.to_owned();
        let hash = tokio::task::spawn_blocking(move || crate::admin::accounts::hash_password(&pin))
            .await
            .map_err(|_| VoicemailError::Hashing)?;
        self.inner
            .store
            .set_voicemail_pin(mailbox, Some(&hash))
            .await?;
        info!(mailbox, "voicemail PIN changed");
        Ok(())
    }

    /// Whether `pin` is the mailbox's PIN; false when it has none.
    pub async fn verify_pin(&self, mailbox: &str, pin: &str) -> Result<bool, VoicemailError> {
        let Some(hash) = self
            .inner
            .store
            .voicemail_box(mailbox)
            .await?
            .and_then(|b| b.pin_hash)
        else {
            return Ok(false);
        };
        let pin = pin.to_owned();
        tokio::task::spawn_blocking(move || crate::admin::accounts::verify_password(&hash, &pin))
            .await
            .map_err(|_| VoicemailError::Hashing)
    }

    // ---- greetings ----

    /// The recorded greeting to play, when there is one and its file is there.
    pub async fn greeting(
        &self,
        mailbox: &str,
        kind: GreetingKind,
    ) -> Result<Option<PathBuf>, VoicemailError> {
        let Some(b) = self.inner.store.voicemail_box(mailbox).await? else {
            return Ok(None);
        };
        let stored = match kind {
            GreetingKind::Unavailable => b.greeting_unavailable,
            GreetingKind::Busy => b.greeting_busy,
        };
        Ok(stored.map(|s| self.absolute(&s)).filter(|p| p.is_file()))
    }

    /// Names a new file to record a greeting into.
    pub fn start_greeting(
        &self,
        mailbox: &str,
        kind: GreetingKind,
    ) -> Result<PendingGreeting, VoicemailError> {
        let dir = self.checked_dir(mailbox)?;
        let name = format!(
            "{}-{:08x}{PART}",
            greeting_stem(kind),
            rand::random::<u32>()
        );
        Ok(PendingGreeting {
            mailbox: mailbox.to_owned(),
            kind,
            recording_path: dir.join(name),
        })
    }

    /// Installs a recorded greeting in place of the old one; false (and nothing kept)
    /// when shorter than [`MIN_MESSAGE`].
    pub async fn save_greeting(
        &self,
        pending: &PendingGreeting,
        duration: Duration,
    ) -> Result<bool, VoicemailError> {
        if duration < MIN_MESSAGE {
            remove_quietly(&pending.recording_path);
            return Ok(false);
        }
        let final_path = self
            .mailbox_dir(&pending.mailbox)
            .join(format!("{}{WAV}", greeting_stem(pending.kind)));
        install(&pending.recording_path, &final_path)?;
        let stored = self.relative(&final_path);
        self.inner
            .store
            .set_voicemail_greeting(&pending.mailbox, pending.kind, Some(&stored))
            .await?;
        info!(mailbox = %pending.mailbox, kind = ?pending.kind, "voicemail greeting saved");
        Ok(true)
    }

    // ---- reconciling ----

    /// Brings files and rows back in line after a crash (see the module comment). Run by
    /// [`Voicemail::open`], before any recording starts.
    pub async fn reconcile(&self) -> Result<Reconciled, VoicemailError> {
        let mut report = Reconciled::default();
        let rows = self.inner.store.all_voicemail_messages().await?;
        let mut known: HashSet<String> = rows.iter().map(|m| m.id.clone()).collect();
        let mut touched: HashSet<String> = HashSet::new();
        for m in &rows {
            if !self.absolute(&m.path).is_file() {
                self.inner
                    .store
                    .delete_voicemail_message(&m.mailbox, &m.id)
                    .await?;
                known.remove(&m.id);
                touched.insert(m.mailbox.clone());
                report.rows_dropped.push(m.id.clone());
            }
        }
        let root = self.root();
        let entries = match std::fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
            Err(e) => return Err(io_err(&root)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err(&root))?;
            let Some(mailbox) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !valid_extension_number(&mailbox) || !entry.path().is_dir() {
                continue;
            }
            if self
                .reconcile_mailbox(&mailbox, &known, &mut report)
                .await?
            {
                touched.insert(mailbox);
            }
        }
        for mailbox in touched {
            self.announce(&mailbox).await;
        }
        Ok(report)
    }

    /// One mailbox folder; true when its messages changed.
    async fn reconcile_mailbox(
        &self,
        mailbox: &str,
        known: &HashSet<String>,
        report: &mut Reconciled,
    ) -> Result<bool, VoicemailError> {
        let dir = self.mailbox_dir(mailbox);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        let mut changed = false;
        for name in &names {
            let path = dir.join(name);
            if let Some(stem) = name.strip_suffix(PART) {
                if stem.starts_with("greeting-") {
                    // An interrupted greeting: the old one stays; the owner records again.
                    remove_quietly(&path);
                    report.recordings_dropped.push(name.clone());
                    continue;
                }
                if let Err(e) = crate::media::recorder::repair(&path) {
                    warn!(error = %e, "interrupted voicemail recording unreadable: dropped");
                }
                let duration = wav_duration(&path).unwrap_or_default();
                if duration < MIN_MESSAGE {
                    remove_quietly(&path);
                    remove_quietly(&dir.join(format!("{stem}{META}")));
                    report.recordings_dropped.push(name.clone());
                    continue;
                }
                let final_path = dir.join(format!("{stem}{WAV}"));
                install(&path, &final_path)?;
                self.adopt(mailbox, stem, &final_path, duration).await?;
                report.recordings_kept.push(stem.to_owned());
                changed = true;
            } else if let Some(stem) = name.strip_suffix(WAV) {
                if stem.starts_with("greeting-") || known.contains(stem) {
                    continue;
                }
                let duration = wav_duration(&path).unwrap_or_default();
                self.adopt(mailbox, stem, &path, duration).await?;
                report.rows_added.push(stem.to_owned());
                changed = true;
            } else if let Some(stem) = name.strip_suffix(META) {
                // Needed only while its recording waits for a row (adopt removes it then).
                let recording = names.contains(&format!("{stem}{PART}"));
                let saved = names.contains(&format!("{stem}{WAV}"));
                if !recording && (!saved || known.contains(stem)) {
                    remove_quietly(&path);
                }
            }
        }
        Ok(changed)
    }

    /// Inserts the row of a file found without one, from its `.meta` when it has one.
    async fn adopt(
        &self,
        mailbox: &str,
        id: &str,
        file: &Path,
        duration: Duration,
    ) -> Result<(), VoicemailError> {
        let meta_path = self.mailbox_dir(mailbox).join(format!("{id}{META}"));
        let meta = std::fs::read_to_string(&meta_path)
            .ok()
            .and_then(|s| Meta::decode(&s))
            .unwrap_or_else(|| Meta {
                caller: String::new(),
                caller_name: String::new(),
                received_at: id_time(id).unwrap_or_else(crate::store::now_unix),
            });
        let message = VoicemailMessage {
            id: id.to_owned(),
            mailbox: mailbox.to_owned(),
            caller: meta.caller,
            caller_name: meta.caller_name,
            received_at: meta.received_at,
            duration_ms: i64::try_from(duration.as_millis()).unwrap_or(i64::MAX),
            folder: VoicemailFolder::New,
            path: self.relative(file),
        };
        self.inner.store.insert_voicemail_message(&message).await?;
        remove_quietly(&meta_path);
        Ok(())
    }

    /// A path under the data directory as the store keeps it.
    fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.inner.data_dir)
            .unwrap_or(path)
            .display()
            .to_string()
    }
}

/// Whether `pin` may be a PIN.
pub fn valid_pin(pin: &str) -> bool {
    PIN_DIGITS.contains(&pin.len()) && pin.bytes().all(|b| b.is_ascii_digit())
}

fn greeting_stem(kind: GreetingKind) -> &'static str {
    match kind {
        GreetingKind::Unavailable => "greeting-unavailable",
        GreetingKind::Busy => "greeting-busy",
    }
}

/// The Unix seconds an id starts with (its milliseconds).
fn id_time(id: &str) -> Option<i64> {
    let ms: i64 = id.split('-').next()?.parse().ok()?;
    Some(ms / 1000)
}

/// Who left a message, kept beside its recording until its row is in.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Meta {
    caller: String,
    caller_name: String,
    received_at: i64,
}

impl Meta {
    /// Three lines; newlines and backslashes in the values are escaped.
    fn encode(&self) -> String {
        let esc = |s: &str| s.replace('\\', "\\\\").replace('\n', "\\n");
        format!(
            "{}\n{}\n{}\n",
            self.received_at,
            esc(&self.caller),
            esc(&self.caller_name)
        )
    }

    fn decode(s: &str) -> Option<Meta> {
        let unesc = |s: &str| {
            let mut out = String::with_capacity(s.len());
            let mut chars = s.chars();
            while let Some(c) = chars.next() {
                match (c, c == '\\') {
                    (_, true) => match chars.next() {
                        Some('n') => out.push('\n'),
                        Some(other) => out.push(other),
                        None => {}
                    },
                    (c, false) => out.push(c),
                }
            }
            out
        };
        let mut lines = s.split('\n');
        let received_at = lines.next()?.parse().ok()?;
        Some(Meta {
            received_at,
            caller: unesc(lines.next()?),
            caller_name: unesc(lines.next()?),
        })
    }
}

/// Writes a new file and syncs it.
fn write_synced(path: &Path, data: &[u8]) -> Result<(), VoicemailError> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(io_err(path))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(io_err(path))
}

/// Makes `from` durable under the name `to`: sync its data, rename (atomic, replacing an
/// old greeting), sync the folder so the new name survives a power cut.
fn install(from: &Path, to: &Path) -> Result<(), VoicemailError> {
    std::fs::File::open(from)
        .and_then(|f| f.sync_all())
        .map_err(io_err(from))?;
    std::fs::rename(from, to).map_err(io_err(to))?;
    if let Some(dir) = to.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }
    Ok(())
}

fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            warn!(file = %path.display(), error = %e, "cannot remove voicemail file");
        }
    }
}

/// The length of a WAV file of our recorder (the canonical 44-byte header: `fmt ` then
/// `data`), from its header's sizes.
pub fn wav_duration(path: &Path) -> Option<Duration> {
    let mut header = [0u8; 44];
    std::fs::File::open(path)
        .ok()?
        .read_exact(&mut header)
        .ok()?;
    if &header[0..4] != b"RIFF" || &header[8..12] != b"WAVE" || &header[36..40] != b"data" {
        return None;
    }
    let le32 = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let byte_rate = le32(&header[28..32]);
    let data = le32(&header[40..44]);
    (byte_rate > 0).then(|| Duration::from_secs_f64(f64::from(data) / f64::from(byte_rate)))
}

#[cfg(test)]
pub(crate) mod tests;
