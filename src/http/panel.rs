//! The web panel's static files (`web/`: plain HTML, CSS and JavaScript modules, no build
//! step), embedded in the binary and served at `/` (the page) and `/assets/*`. Owns their
//! table, content types and cache and security headers. Must not: hold data or logic of
//! the panel; the pages talk to the admin API like any client.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

/// One embedded file.
pub struct Asset {
    /// Where it is served.
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

macro_rules! asset {
    ($path:literal, $file:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!("../../web/", $file)),
        }
    };
}

/// Every file of the panel. The page loads the others by these paths.
pub const ASSETS: &[Asset] = &[
    asset!("/", "index.html", HTML),
    asset!("/assets/app.css", "app.css", CSS),
    asset!("/assets/app.js", "app.js", JS),
    asset!("/assets/api.js", "api.js", JS),
    asset!("/assets/ui.js", "ui.js", JS),
    asset!("/assets/dashboard.js", "dashboard.js", JS),
    asset!("/assets/extensions.js", "extensions.js", JS),
    asset!("/assets/registrations.js", "registrations.js", JS),
    asset!("/assets/settings.js", "settings.js", JS),
    asset!("/assets/calls.js", "calls.js", JS),
    asset!("/assets/history.js", "history.js", JS),
    asset!("/assets/dialplan.js", "dialplan.js", JS),
];

/// Scripts and styles come from this origin only (no inline code), so an injected
/// string cannot run; the panel is never framed.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Adds a GET route per asset to `router`.
pub fn routes<S: Clone + Send + Sync + 'static>(mut router: Router<S>) -> Router<S> {
    for asset in ASSETS {
        router = router.route(
            asset.path,
            get(move |headers: HeaderMap| async move { serve(asset, &headers) }),
        );
    }
    router
}

/// The asset, or 304 when the client's copy (by ETag) is current. `no-cache`: the names
/// carry no version, so the browser revalidates each time (a 304 is a few bytes).
fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let etag = etag(asset.body);
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if asset.content_type == HTML {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    resp
}

/// A strong ETag: the first 128 bits of the body's SHA-256.
fn etag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}
