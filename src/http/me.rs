//! The self-service side of the API, `/api/v1/me/...`: what an account may do to the
//! extension it owns (as a PBX user does to their phone): read it, set do-not-disturb and
//! forwarding, get a new SIP password (generated, shown once) and set the voicemail PIN.
//! Any role may call these for its own extension; which extension is the account's
//! (`admins.extension`), never the URL's. Must not: reach another extension, or rename
//! one (an admin's job).

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::api::{change_extension, present, refresh_extension, ExtensionChange, ExtensionView};
use super::auth::Principal;
use super::error::{ApiError, ApiJson};
use super::AppState;
use crate::admin::{self, extensions as ext_admin};

/// A caller and the extension its account owns (404 when it owns none).
pub struct OwnExtension {
    pub who: Principal,
    pub number: String,
}

impl FromRequestParts<AppState> for OwnExtension {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let who = Principal::from_request_parts(parts, state).await?;
        let number = who.owned_extension(state).await?.ok_or_else(|| {
            ApiError::not_found("your account owns no extension; an admin can link one")
        })?;
        Ok(OwnExtension { who, number })
    }
}

/// `GET /api/v1/me/extension`
pub async fn get_extension(
    State(state): State<AppState>,
    own: OwnExtension,
) -> Result<Json<ExtensionView>, ApiError> {
    state
        .inner
        .store
        .get_extension(&own.number)
        .await?
        .map(|e| Json(e.into()))
        .ok_or_else(|| ApiError::not_found(format!("no extension {}", own.number)))
}

/// What a user may change of their extension: routing only.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnExtensionChange {
    dnd: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    forward_always: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    forward_busy: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    forward_noanswer: Option<Option<String>>,
}

/// `PUT /api/v1/me/extension`: do-not-disturb and forward targets (`null` clears one).
pub async fn update_extension(
    State(state): State<AppState>,
    own: OwnExtension,
    ApiJson(req): ApiJson<OwnExtensionChange>,
) -> Result<Json<ExtensionView>, ApiError> {
    let change = ExtensionChange {
        dnd: req.dnd,
        forward_always: req.forward_always,
        forward_busy: req.forward_busy,
        forward_noanswer: req.forward_noanswer,
        ..ExtensionChange::default()
    };
    change_extension(&state, &own.who.name, &own.number, change)
        .await
        .map(Json)
}

#[derive(Serialize)]
pub struct NewSipPassword {
    extension: String,
    /// Generated; the one time it is shown.
    password: String,
}

/// `POST /api/v1/me/extension/password`: a new generated SIP password, returned once
/// (phones registered with the old one fail at their next refresh).
pub async fn new_sip_password(
    State(state): State<AppState>,
    own: OwnExtension,
) -> Result<Json<NewSipPassword>, ApiError> {
    let s = &state.inner;
    let password = admin::generate_password();
    ext_admin::set_password(&s.store, &s.realm, &own.number, &password).await?;
    refresh_extension(&state, &own.number).await;
    tracing::info!(account = %own.who.name, number = %own.number, "SIP password changed by its owner");
    Ok(Json(NewSipPassword {
        extension: own.number,
        password,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinChange {
    pin: String,
}

/// `PUT /api/v1/me/voicemail-pin`: the PIN the mailbox asks for from another phone.
pub async fn set_voicemail_pin(
    State(state): State<AppState>,
    own: OwnExtension,
    ApiJson(req): ApiJson<PinChange>,
) -> Result<StatusCode, ApiError> {
    state.inner.voicemail.set_pin(&own.number, &req.pin).await?;
    tracing::info!(account = %own.who.name, mailbox = %own.number, "voicemail PIN changed by its owner");
    Ok(StatusCode::NO_CONTENT)
}
