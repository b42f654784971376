//! Voicemail rows: mailboxes (PIN hash, recorded greetings) and the messages' metadata.
//! The audio files themselves belong to `crate::voicemail`; the store keeps their paths
//! (relative to the data directory) and never touches the files.

use sqlx::Row;

use super::{is_unique_violation, now_unix, Inner, Store, StoreError};

/// Which folder a message is in: `New` until the owner has heard it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VoicemailFolder {
    New,
    Old,
}

impl VoicemailFolder {
    pub fn as_str(self) -> &'static str {
        match self {
            VoicemailFolder::New => "new",
            VoicemailFolder::Old => "old",
        }
    }

    fn parse(s: &str) -> Result<VoicemailFolder, sqlx::Error> {
        match s {
            "new" => Ok(VoicemailFolder::New),
            "old" => Ok(VoicemailFolder::Old),
            other => Err(sqlx::Error::Decode(
                format!("unknown voicemail folder {other:?}").into(),
            )),
        }
    }
}

/// One voicemail message as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoicemailMessage {
    pub id: String,
    pub mailbox: String,
    /// The caller's number (empty when unknown).
    pub caller: String,
    /// The caller's display name (empty when unknown).
    pub caller_name: String,
    /// Unix seconds.
    pub received_at: i64,
    pub duration_ms: i64,
    pub folder: VoicemailFolder,
    /// The WAV file, relative to the data directory.
    pub path: String,
}

/// Which recorded greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GreetingKind {
    Unavailable,
    Busy,
}

impl GreetingKind {
    fn column(self) -> &'static str {
        match self {
            GreetingKind::Unavailable => "greeting_unavailable",
            GreetingKind::Busy => "greeting_busy",
        }
    }
}

/// A mailbox's settings; a mailbox nobody configured has no row (no PIN, default greetings).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct VoicemailBox {
    pub mailbox: String,
    /// argon2id PHC string; `None`: no PIN set.
    pub pin_hash: Option<String>,
    /// Recorded greetings, relative to the data directory; `None`: the default prompt.
    pub greeting_unavailable: Option<String>,
    pub greeting_busy: Option<String>,
    pub updated_at: i64,
}

impl std::fmt::Debug for VoicemailBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoicemailBox")
            .field("mailbox", &self.mailbox)
            .field("pin_hash", &self.pin_hash.as_ref().map(|_| "<redacted>"))
            .field("greeting_unavailable", &self.greeting_unavailable)
            .field("greeting_busy", &self.greeting_busy)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// How many messages a mailbox holds, by folder (what MWI announces).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct VoicemailCounts {
    pub new: u32,
    pub old: u32,
}

const MESSAGE_COLUMNS: &str =
    "id, mailbox, caller, caller_name, received_at, duration_ms, folder, path";

macro_rules! message_from_row {
    ($row:expr) => {{
        let row = $row;
        let folder: String = row.try_get(6)?;
        Ok::<_, sqlx::Error>(VoicemailMessage {
            id: row.try_get(0)?,
            mailbox: row.try_get(1)?,
            caller: row.try_get(2)?,
            caller_name: row.try_get(3)?,
            received_at: row.try_get(4)?,
            duration_ms: row.try_get(5)?,
            folder: VoicemailFolder::parse(&folder)?,
            path: row.try_get(7)?,
        })
    }};
}

impl Store {
    /// Records a saved message. [`StoreError::Conflict`] if its id or path is taken.
    pub async fn insert_voicemail_message(&self, m: &VoicemailMessage) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO voicemail_messages ({MESSAGE_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        );
        let res = with_pool!(self, pool => {
            sqlx::query(&sql)
                .bind(m.id.as_str())
                .bind(m.mailbox.as_str())
                .bind(m.caller.as_str())
                .bind(m.caller_name.as_str())
                .bind(m.received_at)
                .bind(m.duration_ms)
                .bind(m.folder.as_str())
                .bind(m.path.as_str())
                .execute(pool)
                .await
                .map(|_| ())
        });
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!(
                "voicemail message {} ({})",
                m.id, m.path
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// A mailbox's messages: new ones first, each folder oldest first.
    pub async fn voicemail_messages(
        &self,
        mailbox: &str,
    ) -> Result<Vec<VoicemailMessage>, StoreError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM voicemail_messages WHERE mailbox = $1 \
             ORDER BY folder, received_at, id"
        );
        with_pool!(self, pool => {
            let rows = sqlx::query(&sql).bind(mailbox).fetch_all(pool).await?;
            Ok(rows
                .into_iter()
                .map(|r| message_from_row!(r))
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Every message of every mailbox (for reconciling the files at start).
    pub async fn all_voicemail_messages(&self) -> Result<Vec<VoicemailMessage>, StoreError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM voicemail_messages ORDER BY mailbox, received_at, id"
        );
        with_pool!(self, pool => {
            let rows = sqlx::query(&sql).fetch_all(pool).await?;
            Ok(rows
                .into_iter()
                .map(|r| message_from_row!(r))
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// New and old messages in a mailbox.
    pub async fn voicemail_counts(&self, mailbox: &str) -> Result<VoicemailCounts, StoreError> {
        let sql = "SELECT folder, COUNT(*) FROM voicemail_messages WHERE mailbox = $1 \
                   GROUP BY folder";
        let rows: Vec<(String, i64)> = with_pool!(self, pool => {
            sqlx::query_as(sql).bind(mailbox).fetch_all(pool).await?
        });
        let mut counts = VoicemailCounts::default();
        for (folder, n) in rows {
            let n = u32::try_from(n).unwrap_or(u32::MAX);
            match folder.as_str() {
                "new" => counts.new = n,
                "old" => counts.old = n,
                _ => {}
            }
        }
        Ok(counts)
    }

    /// Moves a message of `mailbox` to `folder`; false when it has no such message.
    pub async fn move_voicemail_message(
        &self,
        mailbox: &str,
        id: &str,
        folder: VoicemailFolder,
    ) -> Result<bool, StoreError> {
        let n = with_pool!(self, pool => {
            sqlx::query("UPDATE voicemail_messages SET folder = $1 WHERE mailbox = $2 AND id = $3")
                .bind(folder.as_str())
                .bind(mailbox)
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n > 0)
    }

    /// Forgets a message of `mailbox` (the caller removes its file); false when none.
    pub async fn delete_voicemail_message(
        &self,
        mailbox: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        let n = with_pool!(self, pool => {
            sqlx::query("DELETE FROM voicemail_messages WHERE mailbox = $1 AND id = $2")
                .bind(mailbox)
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n > 0)
    }

    /// A mailbox's settings; `None` when it was never configured.
    pub async fn voicemail_box(&self, mailbox: &str) -> Result<Option<VoicemailBox>, StoreError> {
        let sql = "SELECT mailbox, pin_hash, greeting_unavailable, greeting_busy, updated_at \
                   FROM voicemail_boxes WHERE mailbox = $1";
        with_pool!(self, pool => {
            let row = sqlx::query(sql).bind(mailbox).fetch_optional(pool).await?;
            Ok(row
                .map(|r| {
                    Ok::<_, sqlx::Error>(VoicemailBox {
                        mailbox: r.try_get(0)?,
                        pin_hash: r.try_get(1)?,
                        greeting_unavailable: r.try_get(2)?,
                        greeting_busy: r.try_get(3)?,
                        updated_at: r.try_get(4)?,
                    })
                })
                .transpose()?)
        })
    }

    /// Sets (or with `None` clears) a mailbox's PIN hash, creating its row if needed.
    pub async fn set_voicemail_pin(
        &self,
        mailbox: &str,
        pin_hash: Option<&str>,
    ) -> Result<(), StoreError> {
        self.upsert_box_column(mailbox, "pin_hash", pin_hash).await
    }

    /// Sets (or with `None` clears) a recorded greeting's path, creating the row if needed.
    pub async fn set_voicemail_greeting(
        &self,
        mailbox: &str,
        kind: GreetingKind,
        path: Option<&str>,
    ) -> Result<(), StoreError> {
        self.upsert_box_column(mailbox, kind.column(), path).await
    }

    /// `column` is one of our constants, never caller text.
    async fn upsert_box_column(
        &self,
        mailbox: &str,
        column: &'static str,
        value: Option<&str>,
    ) -> Result<(), StoreError> {
        if !super::valid_extension_number(mailbox) {
            return Err(StoreError::Invalid(format!(
                "mailbox {mailbox:?} is not an extension number"
            )));
        }
        let sql = format!(
            "INSERT INTO voicemail_boxes (mailbox, {column}, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (mailbox) DO UPDATE SET {column} = excluded.{column}, \
             updated_at = excluded.updated_at"
        );
        with_pool!(self, pool => {
            sqlx::query(&sql)
                .bind(mailbox)
                .bind(value)
                .bind(now_unix())
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}
