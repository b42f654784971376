//! The admin API's voicemail: mailboxes with their counts, a mailbox's messages, a
//! message's audio (with HTTP Range, so a browser's `<audio>` can seek), marking heard and
//! deleting. Admins reach every mailbox, a user account only its own extension's.
//!
//! Owns: who may reach which mailbox and the Range answer. Must not: touch the mailbox
//! files but to read one message's audio (moving and deleting go through
//! [`crate::voicemail::Voicemail`], so MWI lamps follow, as when the owner does it by
//! phone). A message's file is the one its row names, never a path built from the URL.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::auth::Principal;
use super::error::{ApiError, ApiJson};
use super::AppState;
use crate::admin::accounts::Role;
use crate::store::{valid_extension_number, VoicemailFolder, VoicemailMessage};
use crate::voicemail::VoicemailError;

impl From<VoicemailError> for ApiError {
    fn from(e: VoicemailError) -> Self {
        match e {
            VoicemailError::Store(e) => e.into(),
            VoicemailError::BadMailbox(m) => {
                ApiError::bad_request("invalid_input", format!("{m:?} is not a mailbox number"))
            }
            VoicemailError::BadPin => ApiError::bad_request("invalid_input", e.to_string()),
            other => {
                tracing::error!(error = %other, "admin API: voicemail error");
                ApiError::internal()
            }
        }
    }
}

/// The mailboxes `who` may reach: `None` for all (an admin), else the user's own.
pub(super) async fn own_mailbox(
    state: &AppState,
    who: &Principal,
) -> Result<Option<Option<String>>, ApiError> {
    if who.role == Role::Admin {
        return Ok(None);
    }
    Ok(Some(who.owned_extension(state).await?))
}

/// 403 unless `who` may reach `mailbox`. Checked before anything is read, so a user
/// learns nothing of other mailboxes (not even whether they exist).
pub(super) async fn check_mailbox(
    state: &AppState,
    who: &Principal,
    mailbox: &str,
) -> Result<(), ApiError> {
    match own_mailbox(state, who).await? {
        None => {}
        Some(Some(own)) if own == mailbox => {}
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "a user account reaches only its own extension's mailbox",
            ))
        }
    }
    // Never a path here (files come from the rows), but a name like `..` is no mailbox.
    if !valid_extension_number(mailbox) {
        return Err(ApiError::bad_request(
            "invalid_input",
            format!("{mailbox:?} is not a mailbox number"),
        ));
    }
    Ok(())
}

/// A caller allowed to reach the mailbox `{number}` of the path. An extractor on the
/// request's head, so access is decided before a body is read (a user sending a bad body
/// to someone else's mailbox gets 403, not a parse error).
pub struct MailboxAccess {
    pub who: Principal,
    pub mailbox: String,
}

impl FromRequestParts<AppState> for MailboxAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let who = Principal::from_request_parts(parts, state).await?;
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|r| ApiError::bad_request("invalid_input", r.body_text()))?;
        let mailbox = params.get("number").cloned().unwrap_or_default();
        check_mailbox(state, &who, &mailbox).await?;
        Ok(MailboxAccess { who, mailbox })
    }
}

/// Message ids are what [`crate::voicemail::Voicemail`] makes (digits, hex, `-`); anything
/// else (a `/`, `..`, `%00` once decoded) is refused before a lookup.
fn check_message_id(id: &str) -> Result<(), ApiError> {
    let ok =
        (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_input",
            "not a voicemail message id",
        ))
    }
}

#[derive(Serialize)]
pub struct MailboxView {
    mailbox: String,
    /// The extension's name ("" for a mailbox whose extension is gone).
    name: String,
    new: u32,
    old: u32,
}

/// `GET /api/v1/voicemail`: every extension's mailbox (and any other holding messages)
/// with its counts, by number; a user sees only their own.
pub async fn list_mailboxes(
    State(state): State<AppState>,
    who: Principal,
) -> Result<Json<Vec<MailboxView>>, ApiError> {
    let store = &state.inner.store;
    let scope = own_mailbox(&state, &who).await?;
    let mut boxes: BTreeMap<String, MailboxView> = BTreeMap::new();
    for e in store.list_extensions().await? {
        boxes.insert(
            e.number.clone(),
            MailboxView {
                mailbox: e.number,
                name: e.display_name,
                new: 0,
                old: 0,
            },
        );
    }
    for m in store.all_voicemail_messages().await? {
        let b = boxes
            .entry(m.mailbox.clone())
            .or_insert_with(|| MailboxView {
                mailbox: m.mailbox.clone(),
                name: String::new(),
                new: 0,
                old: 0,
            });
        match m.folder {
            VoicemailFolder::New => b.new += 1,
            VoicemailFolder::Old => b.old += 1,
        }
    }
    let all = boxes.into_values();
    Ok(Json(match scope {
        None => all.collect(),
        Some(own) => all.filter(|b| Some(&b.mailbox) == own.as_ref()).collect(),
    }))
}

#[derive(Serialize)]
pub struct MessageView {
    id: String,
    mailbox: String,
    /// `new` (not heard yet) or `old`.
    folder: &'static str,
    caller: String,
    caller_name: String,
    /// Unix seconds.
    received_at: i64,
    duration_ms: i64,
}

impl From<VoicemailMessage> for MessageView {
    fn from(m: VoicemailMessage) -> Self {
        MessageView {
            id: m.id,
            mailbox: m.mailbox,
            folder: m.folder.as_str(),
            caller: m.caller,
            caller_name: m.caller_name,
            received_at: m.received_at,
            duration_ms: m.duration_ms,
        }
    }
}

/// `GET /api/v1/voicemail/{number}/messages`: new first, each folder oldest first.
pub async fn list_messages(
    State(state): State<AppState>,
    MailboxAccess { mailbox, .. }: MailboxAccess,
) -> Result<Json<Vec<MessageView>>, ApiError> {
    let messages = state.inner.voicemail.messages(&mailbox).await?;
    Ok(Json(messages.into_iter().map(Into::into).collect()))
}

/// The message (access already checked); 404 when the mailbox has none such.
async fn find_message(
    state: &AppState,
    mailbox: &str,
    id: &str,
) -> Result<VoicemailMessage, ApiError> {
    check_message_id(id)?;
    state
        .inner
        .voicemail
        .messages(mailbox)
        .await?
        .into_iter()
        .find(|m| m.id == id)
        .ok_or_else(|| ApiError::not_found(format!("no message {id} in mailbox {mailbox}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageChange {
    /// `old` (heard) or `new` (to hear again).
    folder: String,
}

/// `PUT /api/v1/voicemail/{number}/messages/{id}`: moves a message between `new` and
/// `old`, as the phone menu does once a message is heard (the panel calls it when its
/// player starts). The mailbox's MWI lamp follows.
pub async fn update_message(
    State(state): State<AppState>,
    MailboxAccess { who, mailbox }: MailboxAccess,
    Path((_, id)): Path<(String, String)>,
    ApiJson(req): ApiJson<MessageChange>,
) -> Result<Json<MessageView>, ApiError> {
    let folder = match req.folder.as_str() {
        "new" => VoicemailFolder::New,
        "old" => VoicemailFolder::Old,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_input",
                "folder is \"new\" or \"old\"",
            ))
        }
    };
    let mut m = find_message(&state, &mailbox, &id).await?;
    if m.folder != folder {
        if !state
            .inner
            .voicemail
            .move_message(&mailbox, &id, folder)
            .await?
        {
            return Err(ApiError::not_found(format!(
                "no message {id} in mailbox {mailbox}"
            )));
        }
        tracing::info!(account = %who.name, mailbox = %mailbox, message = %id,
                       folder = folder.as_str(), "voicemail moved from the panel");
    }
    m.folder = folder;
    Ok(Json(m.into()))
}

/// `DELETE /api/v1/voicemail/{number}/messages/{id}`: the file and the row go; the
/// mailbox's MWI lamp follows.
pub async fn delete_message(
    State(state): State<AppState>,
    MailboxAccess { who, mailbox }: MailboxAccess,
    Path((_, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    find_message(&state, &mailbox, &id).await?;
    if !state.inner.voicemail.delete_message(&mailbox, &id).await? {
        return Err(ApiError::not_found(format!(
            "no message {id} in mailbox {mailbox}"
        )));
    }
    tracing::info!(account = %who.name, mailbox = %mailbox, message = %id,
                   "voicemail deleted from the panel");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/voicemail/{number}/messages/{id}/audio`: the WAV, whole (200) or the one
/// byte range asked for (206), read in chunks off the async threads. Hearing it does not
/// move it to `old`: the player says so with a PUT (a browser prefetching the file is no
/// one listening).
pub async fn message_audio(
    State(state): State<AppState>,
    MailboxAccess { mailbox, .. }: MailboxAccess,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let m = find_message(&state, &mailbox, &id).await?;
    let path = state.inner.voicemail.absolute(&m.path);
    super::audio::wav_file(path, &headers, &format!("message {id}")).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_cannot_name_a_path() {
        assert!(check_message_id("1732590000123-0a1b2c3d").is_ok());
        for bad in [
            "",
            "../1000/x",
            "..",
            "a/b",
            "a\\b",
            "a.wav",
            "a\0b",
            &"9".repeat(65),
        ] {
            assert!(check_message_id(bad).is_err(), "{bad:?}");
        }
    }
}
