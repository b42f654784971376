//! Who is calling: a session cookie (with the CSRF token on state-changing requests) or
//! an API token (`Authorization: Bearer`, no CSRF: a browser never adds it by itself).
//! Login, logout and `me`. The rules on passwords, sessions and tokens live in
//! [`crate::admin::accounts`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::error::{ApiError, ApiJson};
use super::AppState;
use crate::admin::accounts::{self, Role};
use crate::store::now_unix;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "ringfort_session";
/// The header a session's state-changing requests carry.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How the caller proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A login session; `id` is the cookie's value.
    Session {
        id: String,
        csrf_token: String,
    },
    Token,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    pub via: Via,
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let store = &state.inner.store;
        let now = now_unix();
        if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or_else(|| ApiError::unauthorized("use Authorization: Bearer <token>"))?;
            let account = accounts::token_account(store, token, now)
                .await?
                .ok_or_else(|| ApiError::unauthorized("unknown or revoked API token"))?;
            return Ok(Principal {
                role: role_of(&account.role),
                name: account.name,
                via: Via::Token,
            });
        }
        let id = cookie(&parts.headers, SESSION_COOKIE)
            .ok_or_else(|| ApiError::unauthorized("log in first (POST /api/v1/login)"))?;
        let session = accounts::session(store, &id, now)
            .await?
            .ok_or_else(|| ApiError::unauthorized("session expired or unknown; log in again"))?;
        if !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
            let sent = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !accounts::ct_eq(sent, &session.csrf_token) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "csrf_failed",
                    "missing or wrong X-CSRF-Token header (the csrf_token from login or /api/v1/me)",
                ));
            }
        }
        Ok(Principal {
            name: session.admin,
            role: role_of(&session.role),
            via: Via::Session {
                id,
                csrf_token: session.csrf_token,
            },
        })
    }
}

fn role_of(s: &str) -> Role {
    // The schema allows only the two; anything else gets the lesser role.
    Role::parse(s).unwrap_or(Role::User)
}

/// A caller with the admin role.
pub struct AdminOnly(pub Principal);

impl FromRequestParts<AppState> for AdminOnly {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let p = Principal::from_request_parts(parts, state).await?;
        if p.role != Role::Admin {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this needs the admin role",
            ));
        }
        Ok(AdminOnly(p))
    }
}

/// The peer's address (unspecified when the service runs without a socket, in tests).
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip()),
        ))
    }
}

/// The value of cookie `name` in the request's Cookie headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn session_cookie(value: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Strict{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    name: String,
    password: String,
}

#[derive(Serialize)]
pub struct SessionView {
    name: String,
    role: &'static str,
    /// `session` or `token`.
    auth: &'static str,
    /// Sessions only: the value state-changing requests send as X-CSRF-Token.
    #[serde(skip_serializing_if = "Option::is_none")]
    csrf_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
}

/// `POST /api/v1/login`
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let s = &state.inner;
    let locked = s
        .limiter
        .lock()
        .map(|l| l.check(ip, &req.name, Instant::now()))
        .unwrap_or(Ok(()));
    if let Err(wait) = locked {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many failed logins; try again later",
        );
        e.retry_after = Some(wait.as_secs().max(1));
        return Err(e);
    }
    let Some(account) = accounts::authenticate(&s.store, &req.name, &req.password).await? else {
        if let Ok(mut l) = s.limiter.lock() {
            l.failure(ip, &req.name, Instant::now());
        }
        warn!(%ip, "admin login failed");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_credentials",
            "wrong name or password",
        ));
    };
    if let Ok(mut l) = s.limiter.lock() {
        l.success(&req.name);
    }
    let now = now_unix();
    let session = accounts::open_session(&s.store, &account.name, now).await?;
    info!(admin = %account.name, %ip, "admin logged in");
    let body = SessionView {
        name: account.name,
        role: role_of(&account.role).as_str(),
        auth: "session",
        csrf_token: Some(session.csrf_token),
        expires_at: Some(session.expires_at),
    };
    let mut resp = Json(body).into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(
            &session.id,
            session.expires_at - now,
            s.secure_cookies.load(std::sync::atomic::Ordering::Relaxed),
        ),
    );
    Ok(resp)
}

/// `POST /api/v1/logout`: ends the session (a token caller has none: nothing to do).
pub async fn logout(State(state): State<AppState>, p: Principal) -> Result<Response, ApiError> {
    if let Via::Session { id, .. } = &p.via {
        accounts::close_session(&state.inner.store, id).await?;
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(
            "",
            0,
            state
                .inner
                .secure_cookies
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
    );
    Ok(resp)
}

/// `GET /api/v1/me`
pub async fn me(p: Principal) -> Json<SessionView> {
    let (auth, csrf_token) = match p.via {
        Via::Session { csrf_token, .. } => ("session", Some(csrf_token)),
        Via::Token => ("token", None),
    };
    Json(SessionView {
        name: p.name,
        role: p.role.as_str(),
        auth,
        csrf_token,
        expires_at: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; ringfort_session=abc"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc".into()));
        assert_eq!(cookie(&h, "b"), None);
        let c = session_cookie("x", 10, true);
        let c = c.to_str().unwrap_or_default();
        for part in [
            "HttpOnly",
            "SameSite=Strict",
            "Path=/",
            "Secure",
            "Max-Age=10",
        ] {
            assert!(c.contains(part), "{c}");
        }
        assert!(!session_cookie("x", 10, false)
            .to_str()
            .unwrap_or_default()
            .contains("Secure"));
    }
}
