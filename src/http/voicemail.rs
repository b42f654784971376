//! The admin API's voicemail: mailboxes with their counts, a mailbox's messages, a
//! message's audio (with HTTP Range, so a browser's `<audio>` can seek), marking heard and
//! deleting. Admins reach every mailbox, a user account only its own extension's.
//!
//! Owns: who may reach which mailbox and the Range answer. Must not: touch the mailbox
//! files but to read one message's audio (moving and deleting go through
//! [`crate::voicemail::Voicemail`], so MWI lamps follow, as when the owner does it by
//! phone). A message's file is the one its row names, never a path built from the URL.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream;
use serde::{Deserialize, Serialize};

use super::auth::Principal;
use super::error::{ApiError, ApiJson};
use super::AppState;
use crate::admin::accounts::Role;
use crate::store::{valid_extension_number, VoicemailFolder, VoicemailMessage};
use crate::voicemail::VoicemailError;

/// How much of a message one read of the audio stream takes.
const AUDIO_CHUNK: usize = 64 * 1024;

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
    if !valid_extension_number(mailbox) || mailbox.starts_with('.') {
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

/// A `Range` header's one byte range over a `len`-byte body: `Ok(None)` to send it whole
/// (no header, a unit other than bytes, or several ranges: RFC 9110 lets a server ignore
/// those), `Err(())` when it cannot be satisfied (416).
fn byte_range(headers: &HeaderMap, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (first, last) = spec.split_once('-').ok_or(())?;
    let (first, last) = (first.trim(), last.trim());
    let (start, end) = if first.is_empty() {
        // The last N bytes.
        let n: u64 = last.parse().map_err(|_| ())?;
        if n == 0 || len == 0 {
            return Err(());
        }
        (len.saturating_sub(n), len - 1)
    } else {
        let start: u64 = first.parse().map_err(|_| ())?;
        let end = if last.is_empty() {
            len.saturating_sub(1)
        } else {
            let end: u64 = last.parse().map_err(|_| ())?;
            if end < start {
                return Err(());
            }
            end.min(len.saturating_sub(1))
        };
        (start, end)
    };
    if start >= len {
        return Err(());
    }
    Ok(Some((start, end)))
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
    let opened = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path)?;
        let len = file.metadata()?.len();
        Ok::<_, std::io::Error>((file, len))
    })
    .await
    .map_err(|_| ApiError::internal())?;
    let (mut file, len) = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::not_found(format!(
                "message {id} has no audio file any more"
            )))
        }
        Err(e) => {
            tracing::error!(message = %id, error = %e, "voicemail audio unreadable");
            return Err(ApiError::internal());
        }
    };
    let (status, start, end) = match byte_range(&headers, len) {
        Ok(None) => (StatusCode::OK, 0, len.saturating_sub(1)),
        Ok(Some((start, end))) => (StatusCode::PARTIAL_CONTENT, start, end),
        Err(()) => {
            let mut resp = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("the audio is {len} bytes"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(resp);
        }
    };
    let count = if len == 0 { 0 } else { end - start + 1 };
    if start > 0 {
        file.seek(SeekFrom::Start(start))
            .map_err(|_| ApiError::internal())?;
    }
    let chunks = stream::unfold((Some(file), count), |(file, left)| async move {
        let file = file?;
        if left == 0 {
            return None;
        }
        let want = usize::try_from(left)
            .unwrap_or(AUDIO_CHUNK)
            .min(AUDIO_CHUNK);
        let read = tokio::task::spawn_blocking(move || {
            let mut f = file;
            let mut buf = vec![0u8; want];
            let n = f.read(&mut buf)?;
            buf.truncate(n);
            Ok::<_, std::io::Error>((f, buf))
        })
        .await;
        match read {
            Ok(Ok((_, buf))) if buf.is_empty() => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "voicemail file shrank while sent",
                )),
                (None, 0),
            )),
            Ok(Ok((f, buf))) => {
                let left = left - buf.len() as u64;
                Some((Ok(bytes::Bytes::from(buf)), (Some(f), left)))
            }
            Ok(Err(e)) => Some((Err(e), (None, 0))),
            Err(e) => Some((Err(std::io::Error::other(e)), (None, 0))),
        }
    });
    let mut resp = Response::new(Body::from_stream(chunks));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    if let Ok(v) = HeaderValue::from_str(&count.to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(v: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(v).expect("header"));
        byte_range(&h, len)
    }

    #[test]
    fn ranges_are_read_like_rfc_9110_says() {
        assert_eq!(byte_range(&HeaderMap::new(), 100), Ok(None));
        assert_eq!(range("bytes=0-", 100), Ok(Some((0, 99))));
        assert_eq!(range("bytes=10-19", 100), Ok(Some((10, 19))));
        assert_eq!(range("bytes=90-500", 100), Ok(Some((90, 99))));
        assert_eq!(range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(range("bytes=-500", 100), Ok(Some((0, 99))));
        // Several ranges, or another unit: the whole body.
        assert_eq!(range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(range("items=0-1", 100), Ok(None));
        for bad in [
            "bytes=100-",
            "bytes=20-10",
            "bytes=-0",
            "bytes=x-",
            "bytes=5",
        ] {
            assert_eq!(range(bad, 100), Err(()), "{bad}");
        }
    }

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
