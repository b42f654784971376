//! The admin API against a real SQLite store in a temp dir, through the router without a
//! socket (`tower::ServiceExt::oneshot`): every endpoint, auth failures, CSRF, bad JSON,
//! pagination, CSV, the live feed, hanging up calls (a fake node answers the orders),
//! the panel's files, `/metrics`, and an OWASP-basics scan of every routed endpoint
//! (access control, CSRF, secrets in answers).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::limiter::LimiterPolicy;
use super::*;
use crate::admin::accounts::{self, Role};
use crate::config::Config;
use crate::node::NodeControl;
use crate::store::{ActiveCall, Binding, Cdr};

const PASSWORD: &str = "a long admin password";

/// The test folder's one file: its start context includes one another file may define.
const BASE_PLAN: &str = "[defaults]\ncontext = \"internal\"\n\n[context.internal]\n\n\
                         [[context.internal.route]]\nmatch = \"_1XXX\"\nsteps = [{ dial = \"${EXTEN}\" }]\n";

struct T {
    app: Router,
    state: AppState,
    store: Store,
    registrar: Arc<Registrar>,
    /// The Call-IDs the fake node was told to hang up, and `reload` for each plan
    /// reload it was told to do.
    hung_up: Arc<std::sync::Mutex<Vec<String>>>,
    /// The dialplan folder the API edits (holds `base.toml`, [`BASE_PLAN`]).
    dialplans: std::path::PathBuf,
    /// This node's recordings folder.
    recordings: std::path::PathBuf,
    /// The mailboxes under the temp dir, the same the API serves.
    voicemail: crate::voicemail::Voicemail,
    _dir: tempfile::TempDir,
}

/// A node that has the calls whose caller Call-ID starts with `a-live`, and reloads its
/// plan from `dialplans`.
fn fake_node(
    dialplans: std::path::PathBuf,
) -> (
    tokio::sync::mpsc::Sender<NodeControl>,
    Arc<std::sync::Mutex<Vec<String>>>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<NodeControl>(8);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Some(order) = rx.recv().await {
            match order {
                NodeControl::HangUp {
                    caller_call_id,
                    done,
                } => {
                    let found = caller_call_id.starts_with("a-live");
                    if let Ok(mut l) = log.lock() {
                        l.push(caller_call_id);
                    }
                    let _ = done.send(found);
                }
                NodeControl::ReloadPlan { done } => {
                    if let Ok(mut l) = log.lock() {
                        l.push("reload".to_owned());
                    }
                    let _ = done.send(crate::dialplan::Plan::load_dir(&dialplans).map(Arc::new));
                }
            }
        }
    });
    (tx, seen)
}

async fn setup() -> T {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/t.db?mode=rwc", dir.path().display());
    let store = Store::connect(&url, 4).await.expect("store");
    store.migrate().await.expect("migrate");
    let registrar = Arc::new(
        Registrar::load(
            store.clone(),
            crate::registrar::RegistrarConfig::from_config(&Config::default()),
        )
        .await
        .expect("registrar"),
    );
    accounts::add(&store, "root", Role::Admin, PASSWORD, None)
        .await
        .expect("root");
    accounts::add(&store, "viewer", Role::User, PASSWORD, None)
        .await
        .expect("viewer");
    let voicemail = crate::voicemail::Voicemail::open(store.clone(), dir.path())
        .await
        .expect("voicemail");
    let limits = LimiterPolicy {
        window: Duration::from_secs(300),
        max_per_account: 3,
        max_per_ip: 10,
        lockout: Duration::from_secs(60),
    };
    let dialplans = dir.path().join("dialplans");
    std::fs::create_dir(&dialplans).expect("dialplans folder");
    std::fs::write(dialplans.join("base.toml"), BASE_PLAN).expect("base plan");
    let (control, hung_up) = fake_node(dialplans.clone());
    let recordings = dir.path().join("recordings");
    std::fs::create_dir(&recordings).expect("recordings folder");
    let state = AppState::with_limits(
        registrar.clone(),
        control,
        NodeInfo {
            recordings_dir: recordings.clone(),
            ..NodeInfo::new("test1")
        },
        "ringfort",
        dialplans.clone(),
        voicemail.clone(),
        limits,
    );
    T {
        app: router(state.clone()),
        state,
        store,
        registrar,
        hung_up,
        dialplans,
        recordings,
        voicemail,
        _dir: dir,
    }
}

#[derive(Clone)]
enum Auth {
    None,
    Token(String),
    /// Cookie and the CSRF token to send (None: send none).
    Session(String, Option<String>),
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// The error code of an error answer.
    fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

fn request(method: &str, uri: &str, auth: &Auth, body: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    match auth {
        Auth::None => {}
        Auth::Token(t) => b = b.header(header::AUTHORIZATION, format!("Bearer {t}")),
        Auth::Session(cookie, csrf) => {
            b = b.header(
                header::COOKIE,
                format!("other=1; ringfort_session={cookie}"),
            );
            if let Some(c) = csrf {
                b = b.header("x-csrf-token", c);
            }
        }
    }
    match body {
        Some(text) => b
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(text.to_owned())),
        None => b.body(Body::empty()),
    }
    .expect("request")
}

async fn send(app: &Router, req: Request<Body>) -> Resp {
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    Resp {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn call(app: &Router, method: &str, uri: &str, auth: &Auth, body: Option<Value>) -> Resp {
    let body = body.map(|b| b.to_string());
    send(app, request(method, uri, auth, body.as_deref())).await
}

/// Logs in as `name`; the session as an [`Auth`] with its CSRF token.
async fn login(app: &Router, name: &str) -> Auth {
    let r = call(
        app,
        "POST",
        "/api/v1/login",
        &Auth::None,
        Some(json!({"name": name, "password": PASSWORD})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let cookie = r.headers[header::SET_COOKIE]
        .to_str()
        .expect("cookie")
        .to_owned();
    let id = cookie
        .strip_prefix("ringfort_session=")
        .and_then(|c| c.split(';').next())
        .expect("session cookie")
        .to_owned();
    let csrf = r.json()["csrf_token"].as_str().expect("csrf").to_owned();
    Auth::Session(id, Some(csrf))
}

async fn token(t: &T) -> Auth {
    Auth::Token(
        accounts::create_token(
            &t.store,
            "root",
            &format!("t{}", accounts::random_hex()[..8].to_owned()),
        )
        .await
        .expect("token"),
    )
}

// ---- the document ----

#[tokio::test]
async fn openapi_documents_every_route_and_nothing_else() {
    let doc: Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let table = routes().table;
    for (method, path) in &table {
        assert!(
            doc["paths"][path][method.to_lowercase()].is_object(),
            "{method} {path} is routed but not in openapi.json"
        );
    }
    let paths = doc["paths"].as_object().expect("paths");
    for (path, item) in paths {
        for method in item.as_object().expect("path item").keys() {
            if method == "parameters" {
                continue;
            }
            assert!(
                table
                    .iter()
                    .any(|(m, p)| p == path && m.eq_ignore_ascii_case(method)),
                "{method} {path} is documented but not routed"
            );
        }
    }
    // Every $ref resolves.
    let text = OPENAPI;
    for part in text.split("\"$ref\": \"#/").skip(1) {
        let target = part.split('"').next().unwrap_or_default();
        let mut node = &doc;
        for seg in target.split('/') {
            node = &node[seg];
        }
        assert!(!node.is_null(), "dangling $ref {target}");
    }
    let t = setup().await;
    let r = call(&t.app, "GET", "/api/v1/openapi.json", &Auth::None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), doc);
}

// ---- auth ----

#[tokio::test]
async fn login_gives_a_strict_http_only_cookie_and_a_csrf_token() {
    let t = setup().await;
    let r = call(
        &t.app,
        "POST",
        "/api/v1/login",
        &Auth::None,
        Some(json!({"name": "root", "password": PASSWORD})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let cookie = r.headers[header::SET_COOKIE].to_str().expect("ascii");
    for part in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "no TLS yet: {cookie}");
    let body = r.json();
    assert_eq!(body["name"], "root");
    assert_eq!(body["role"], "admin");
    assert_eq!(body["csrf_token"].as_str().map(str::len), Some(64));
    // The session id is stored hashed only.
    let id = cookie.split(';').next().unwrap_or_default();
    let id = id.trim_start_matches("ringfort_session=");
    assert!(t.store.get_session(id, 0).await.expect("lookup").is_none());
    let auth = login(&t.app, "root").await;
    let me = call(&t.app, "GET", "/api/v1/me", &auth, None).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text);
    assert_eq!(me.json()["auth"], "session");
    assert!(me.json()["csrf_token"].is_string());
    let tok = token(&t).await;
    let me = call(&t.app, "GET", "/api/v1/me", &tok, None).await;
    assert_eq!(me.json()["auth"], "token");
    assert!(me.json()["csrf_token"].is_null());
}

#[tokio::test]
async fn wrong_credentials_are_401_and_repeated_failures_429() {
    let t = setup().await;
    let bad = |name: &str| json!({"name": name, "password": "not the password"});
    let r = call(
        &t.app,
        "POST",
        "/api/v1/login",
        &Auth::None,
        Some(bad("root")),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "bad_credentials");
    assert!(r.headers.get(header::SET_COOKIE).is_none());
    // An unknown name answers the same.
    let r = call(
        &t.app,
        "POST",
        "/api/v1/login",
        &Auth::None,
        Some(bad("nobody")),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "bad_credentials".into())
    );
    // Third failure on root locks it (test policy: 3), even with the right password.
    call(
        &t.app,
        "POST",
        "/api/v1/login",
        &Auth::None,
        Some(bad("root")),
    )
    .await;
    call(
        &t.app,
        "POST",
        "/api/v1/login",
        &Auth::None,
        Some(bad("root")),
    )
    .await;
    let r = call(
        &t.app,
        "POST",
        "/api/v1/login",
        &Auth::None,
        Some(json!({"name": "root", "password": PASSWORD})),
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    assert_eq!(r.code(), "rate_limited");
    assert!(r.headers.contains_key(header::RETRY_AFTER));
    // Other accounts are not locked.
    login(&t.app, "viewer").await;
}

#[tokio::test]
async fn the_ip_limit_counts_by_client_address() {
    let t = setup().await;
    let attempt = |ip: [u8; 4], name: &str| {
        let mut req = request(
            "POST",
            "/api/v1/login",
            &Auth::None,
            Some(&json!({"name": name, "password": "wrong password!!"}).to_string()),
        );
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((ip, 40000))));
        req
    };
    for i in 0..10 {
        send(&t.app, attempt([192, 0, 2, 1], &format!("n{i}"))).await;
    }
    let r = send(&t.app, attempt([192, 0, 2, 1], "root")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let r = send(&t.app, attempt([192, 0, 2, 2], "root")).await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "another address is free"
    );
}

#[tokio::test]
async fn login_bad_json_is_a_clear_400() {
    let t = setup().await;
    let cases = [
        ("{\"name\": \"root\"", "syntax"),
        ("{\"name\": \"root\"}", "password"),
        ("{\"name\": 5, \"password\": \"x\"}", "name"),
        (
            "{\"name\": \"root\", \"password\": \"x\", \"role\": \"admin\"}",
            "role",
        ),
    ];
    for (body, needle) in cases {
        let r = send(
            &t.app,
            request("POST", "/api/v1/login", &Auth::None, Some(body)),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
        assert_eq!(r.code(), "bad_json");
        let msg = r.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            msg.to_lowercase().contains(needle) || needle == "syntax" && msg.contains("EOF"),
            "{body}: {msg}"
        );
    }
    let mut req = request("POST", "/api/v1/login", &Auth::None, None);
    *req.body_mut() = Body::from("{\"name\":\"root\",\"password\":\"x\"}");
    let r = send(&t.app, req).await;
    assert_eq!(
        (r.status, r.code()),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type".into()
        )
    );
}

#[tokio::test]
async fn every_endpoint_but_login_and_the_document_needs_auth() {
    let t = setup().await;
    for (method, path) in routes().table {
        if matches!(path, "/api/v1/login" | "/api/v1/openapi.json") {
            continue;
        }
        let uri = path.replace("{number}", "1000").replace("{id}", "c1");
        let body = matches!(method, "POST" | "PUT").then(|| json!({"name": "x"}));
        for auth in [
            Auth::None,
            Auth::Token("rft_0000".into()),
            Auth::Token("not-a-token".into()),
            Auth::Session("no-such-session".into(), Some("x".into())),
        ] {
            let r = call(&t.app, method, &uri, &auth, body.clone()).await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{method} {uri}: {}",
                r.text
            );
            assert_eq!(r.code(), "unauthorized");
        }
    }
}

#[tokio::test]
async fn state_changing_session_requests_need_the_csrf_token() {
    let t = setup().await;
    let Auth::Session(cookie, csrf) = login(&t.app, "root").await else {
        unreachable!()
    };
    let body = || Some(json!({"number": "1000", "password": "sip-pass-1"}));
    for (label, auth) in [
        ("none", Auth::Session(cookie.clone(), None)),
        ("wrong", Auth::Session(cookie.clone(), Some("0".repeat(64)))),
    ] {
        for (method, uri) in [
            ("POST", "/api/v1/extensions"),
            ("PUT", "/api/v1/extensions/1000"),
            ("DELETE", "/api/v1/extensions/1000"),
            ("POST", "/api/v1/logout"),
        ] {
            let r = call(&t.app, method, uri, &auth, body()).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{label} {method} {uri}");
            assert_eq!(r.code(), "csrf_failed");
        }
    }
    assert!(t.store.get_extension("1000").await.expect("get").is_none());
    // Reads need no token.
    let r = call(
        &t.app,
        "GET",
        "/api/v1/extensions",
        &Auth::Session(cookie.clone(), None),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = call(
        &t.app,
        "POST",
        "/api/v1/extensions",
        &Auth::Session(cookie, csrf),
        body(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // A token needs none.
    let tok = token(&t).await;
    let r = call(&t.app, "DELETE", "/api/v1/extensions/1000", &tok, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
}

#[tokio::test]
async fn the_user_role_is_refused_admin_endpoints() {
    let t = setup().await;
    let viewer = login(&t.app, "viewer").await;
    for (method, path) in routes().table {
        if matches!(
            path,
            "/api/v1/login" | "/api/v1/openapi.json" | "/api/v1/logout" | "/api/v1/me"
        ) || for_users(path)
        {
            continue;
        }
        let uri = path.replace("{number}", "1000").replace("{id}", "c1");
        let body = matches!(method, "POST" | "PUT").then(|| json!({"number": "1000"}));
        let r = call(&t.app, method, &uri, &viewer, body).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{method} {uri}: {}",
            r.text
        );
        assert_eq!(r.code(), "forbidden");
    }
    let me = call(&t.app, "GET", "/api/v1/me", &viewer, None).await;
    assert_eq!(me.json()["role"], "user");
}

#[tokio::test]
async fn logout_ends_the_session_and_revoked_tokens_stop_working() {
    let t = setup().await;
    let s = login(&t.app, "root").await;
    let r = call(&t.app, "POST", "/api/v1/logout", &s, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let cleared = r.headers[header::SET_COOKIE].to_str().expect("ascii");
    assert!(cleared.starts_with("ringfort_session=;") && cleared.contains("Max-Age=0"));
    let r = call(&t.app, "GET", "/api/v1/me", &s, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let tok = accounts::create_token(&t.store, "root", "ci")
        .await
        .expect("token");
    let auth = Auth::Token(tok);
    assert_eq!(
        call(&t.app, "GET", "/api/v1/status", &auth, None)
            .await
            .status,
        StatusCode::OK
    );
    accounts::revoke_token(&t.store, "root", "ci")
        .await
        .expect("revoke");
    let r = call(&t.app, "GET", "/api/v1/status", &auth, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

// ---- extensions ----

#[tokio::test]
async fn extensions_crud() {
    let t = setup().await;
    let a = login(&t.app, "root").await;
    // Without a password one is generated and shown once.
    let r = call(
        &t.app,
        "POST",
        "/api/v1/extensions",
        &a,
        Some(json!({"number": "1000", "name": "Front desk"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let body = r.json();
    assert_eq!(body["extension"]["number"], "1000");
    assert_eq!(body["extension"]["name"], "Front desk");
    let generated = body["password"].as_str().expect("password").to_owned();
    assert_eq!(generated.len(), 20);
    assert!(body["extension"].get("ha1_md5").is_none());
    // The registrar sees it at once.
    assert!(matches!(
        t.registrar.cached_extension("1000"),
        Some(Some(_))
    ));
    let stored = t
        .store
        .get_extension("1000")
        .await
        .expect("get")
        .expect("stored");
    let (md5, _) = crate::admin::extensions::hashes("1000", "ringfort", &generated);
    assert_eq!(stored.ha1_md5, md5);
    // With one, it is not echoed.
    let r = call(
        &t.app,
        "POST",
        "/api/v1/extensions",
        &a,
        Some(json!({"number": "1001", "password": "sip-pass-1"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.json().get("password").is_none());
    // Duplicates and broken rules (the CLI's).
    let r = call(
        &t.app,
        "POST",
        "/api/v1/extensions",
        &a,
        Some(json!({"number": "1001"})),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "conflict".into())
    );
    for bad in [
        json!({"number": "a b"}),
        json!({"number": "1002", "password": "short"}),
        json!({"number": "1002", "name": "x\r\nVia: evil"}),
    ] {
        let r = call(&t.app, "POST", "/api/v1/extensions", &a, Some(bad.clone())).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "invalid_input".into()),
            "{bad}"
        );
    }
    let r = call(
        &t.app,
        "POST",
        "/api/v1/extensions",
        &a,
        Some(json!({"numbr": "1002"})),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "bad_json".into())
    );
    assert!(r.text.contains("numbr"), "{}", r.text);
    // Read one.
    let r = call(&t.app, "GET", "/api/v1/extensions/1000", &a, None).await;
    assert_eq!(r.json()["name"], "Front desk");
    let r = call(&t.app, "GET", "/api/v1/extensions/9999", &a, None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    // Change the name, then the password.
    let r = call(
        &t.app,
        "PUT",
        "/api/v1/extensions/1000",
        &a,
        Some(json!({"name": "Lobby"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["name"], "Lobby");
    let r = call(
        &t.app,
        "PUT",
        "/api/v1/extensions/1000",
        &a,
        Some(json!({"password": "new-sip-pass"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let stored = t
        .store
        .get_extension("1000")
        .await
        .expect("get")
        .expect("stored");
    let (md5, _) = crate::admin::extensions::hashes("1000", "ringfort", "new-sip-pass");
    assert_eq!((stored.ha1_md5, stored.display_name), (md5, "Lobby".into()));
    // Do-not-disturb and forwarding: none at first, set, partly cleared with null.
    let r = call(&t.app, "GET", "/api/v1/extensions/1000", &a, None).await;
    let v = r.json();
    assert_eq!(v["dnd"], false);
    for f in ["forward_always", "forward_busy", "forward_noanswer"] {
        assert!(v[f].is_null(), "{f}: {v}");
    }
    let r = call(
        &t.app,
        "PUT",
        "/api/v1/extensions/1000",
        &a,
        Some(json!({"dnd": true, "forward_busy": "1001", "forward_noanswer": "2000"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let v = r.json();
    assert_eq!(
        (
            &v["dnd"],
            &v["forward_busy"],
            &v["forward_noanswer"],
            &v["name"]
        ),
        (
            &json!(true),
            &json!("1001"),
            &json!("2000"),
            &json!("Lobby")
        )
    );
    assert!(v["forward_always"].is_null(), "{v}");
    // The registrar's cache sees the change at once.
    let cached = t
        .registrar
        .cached_extension("1000")
        .flatten()
        .expect("cached");
    assert_eq!(cached.routing.forward_busy.as_deref(), Some("1001"));
    assert!(cached.routing.dnd);
    let r = call(
        &t.app,
        "PUT",
        "/api/v1/extensions/1000",
        &a,
        Some(json!({"forward_busy": null, "forward_always": "1002"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let v = r.json();
    assert_eq!(
        (&v["dnd"], &v["forward_always"], &v["forward_noanswer"]),
        (&json!(true), &json!("1002"), &json!("2000"))
    );
    assert!(v["forward_busy"].is_null(), "{v}");
    let r = call(&t.app, "GET", "/api/v1/extensions?limit=10", &a, None).await;
    assert_eq!(r.json()["items"][0]["forward_always"], "1002");
    let before = t.store.get_extension("1000").await.expect("get");
    for (body, code) in [
        (json!({}), "invalid_input"),
        (json!({"password": "short"}), "invalid_input"),
        (json!({"nmae": "x"}), "bad_json"),
        (json!({"forward_busy": "1000"}), "invalid_input"),
        (json!({"forward_always": "a b"}), "invalid_input"),
        (json!({"forward_noanswer": ""}), "invalid_input"),
        (json!({"dnd": "yes"}), "bad_json"),
        // null is no change for dnd, which leaves nothing to do.
        (json!({"dnd": null}), "invalid_input"),
        // A bad target refuses the whole change: the name stays.
        (
            json!({"name": "Hall", "forward_busy": "1000"}),
            "invalid_input",
        ),
    ] {
        let r = call(
            &t.app,
            "PUT",
            "/api/v1/extensions/1000",
            &a,
            Some(body.clone()),
        )
        .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, code.into()),
            "{body}"
        );
    }
    assert_eq!(t.store.get_extension("1000").await.expect("get"), before);
    for body in [json!({"name": "x"}), json!({"dnd": true})] {
        let r = call(
            &t.app,
            "PUT",
            "/api/v1/extensions/9999",
            &a,
            Some(body.clone()),
        )
        .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{body}");
    }
    // Remove.
    let r = call(&t.app, "DELETE", "/api/v1/extensions/1000", &a, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(matches!(t.registrar.cached_extension("1000"), Some(None)));
    let r = call(&t.app, "DELETE", "/api/v1/extensions/1000", &a, None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "not_found".into())
    );
}

#[tokio::test]
async fn extensions_are_paged() {
    let t = setup().await;
    let a = token(&t).await;
    for n in 0..7 {
        crate::admin::extensions::add(&t.store, "ringfort", &format!("10{n}"), "", "sip-pass-1")
            .await
            .expect("add");
    }
    let r = call(&t.app, "GET", "/api/v1/extensions?limit=3", &a, None).await;
    let b = r.json();
    assert_eq!(
        (
            b["total"].as_i64(),
            b["limit"].as_i64(),
            b["offset"].as_i64()
        ),
        (Some(7), Some(3), Some(0))
    );
    let numbers = |b: &Value| -> Vec<String> {
        b["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| i["number"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(numbers(&b), ["100", "101", "102"]);
    let b = call(
        &t.app,
        "GET",
        "/api/v1/extensions?limit=3&offset=6",
        &a,
        None,
    )
    .await
    .json();
    assert_eq!(numbers(&b), ["106"]);
    let b = call(&t.app, "GET", "/api/v1/extensions", &a, None)
        .await
        .json();
    assert_eq!((numbers(&b).len(), b["limit"].as_i64()), (7, Some(50)));
    for q in ["limit=0", "limit=501", "limit=abc", "offset=-1", "bogus=1"] {
        let r = call(&t.app, "GET", &format!("/api/v1/extensions?{q}"), &a, None).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "bad_query".into()),
            "{q}: {}",
            r.text
        );
    }
}

// ---- registrations, calls, CDRs, status ----

fn binding(aor: &str, key: &str, expires_at: i64) -> Binding {
    Binding {
        aor: aor.into(),
        binding_key: key.into(),
        contact_uri: format!("sip:{aor}@192.0.2.7:5062"),
        q: None,
        expires_at,
        call_id: "c".into(),
        cseq: 1,
        received: "192.0.2.7:5062".into(),
        transport: "udp".into(),
        local_addr: "127.0.0.1:5060".into(),
        flow: None,
        path: vec![],
        user_agent: "Phone/1".into(),
        instance_id: None,
        reg_id: None,
        node_id: "test1".into(),
        updated_at: 0,
    }
}

#[tokio::test]
async fn registrations_and_live_calls() {
    let t = setup().await;
    let a = token(&t).await;
    let now = crate::store::now_unix();
    for n in ["100", "101"] {
        crate::admin::extensions::add(&t.store, "ringfort", n, "", "sip-pass-1")
            .await
            .expect("add");
    }
    t.store
        .replace_bindings(
            "100",
            &[binding("100", "a", now + 600), binding("100", "b", now - 1)],
        )
        .await
        .expect("bind");
    t.store
        .replace_bindings("101", &[binding("101", "a", now + 60)])
        .await
        .expect("bind");
    let b = call(&t.app, "GET", "/api/v1/registrations", &a, None)
        .await
        .json();
    assert_eq!(b["total"], 2, "expired ones are not shown: {b}");
    assert_eq!(b["items"][0]["extension"], "100");
    assert_eq!(b["items"][0]["user_agent"], "Phone/1");
    assert!(b["items"][0]["expires_in"].as_i64().unwrap_or(0) > 500);
    let b = call(
        &t.app,
        "GET",
        "/api/v1/registrations?limit=1&offset=1",
        &a,
        None,
    )
    .await
    .json();
    assert_eq!(
        (b["items"][0]["extension"].as_str(), b["total"].as_i64()),
        (Some("101"), Some(2))
    );

    for (id, started) in [("c1", 10), ("c2", 20)] {
        t.store
            .insert_active_call(&ActiveCall {
                id: id.into(),
                caller: "100".into(),
                callee: "101".into(),
                state: "ringing".into(),
                started_at: started,
                answered_at: None,
                caller_call_id: format!("a-{id}"),
                callee_call_id: format!("b-{id}"),
                node_id: "test1".into(),
            })
            .await
            .expect("call");
    }
    let b = call(&t.app, "GET", "/api/v1/calls", &a, None).await.json();
    assert_eq!(b["total"], 2);
    assert_eq!(b["items"][0]["id"], "c1");
    assert_eq!(b["items"][0]["caller_call_id"], "a-c1");
    let b = call(&t.app, "GET", "/api/v1/calls?limit=1&offset=1", &a, None)
        .await
        .json();
    assert_eq!(b["items"][0]["id"], "c2");
    let r = call(&t.app, "GET", "/api/v1/calls?limit=x", &a, None).await;
    assert_eq!(r.code(), "bad_query");

    let st = call(&t.app, "GET", "/api/v1/status", &a, None).await.json();
    assert_eq!(st["node_id"], "test1");
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(st["database"], "sqlite");
    assert_eq!(
        (
            st["extensions"].as_i64(),
            st["registrations"].as_i64(),
            st["active_calls"].as_i64()
        ),
        (Some(2), Some(2), Some(2))
    );
}

fn cdr(id: &str, caller: &str, disposition: &str, started_at: i64) -> Cdr {
    Cdr {
        id: id.into(),
        caller: caller.into(),
        callee: "200".into(),
        started_at,
        answered_at: (disposition == "answered").then_some(started_at + 2),
        ended_at: started_at + 10,
        disposition: disposition.into(),
        duration: if disposition == "answered" { 8 } else { 0 },
        hangup_leg: "caller".into(),
        caller_call_id: format!("a-{id}"),
        callee_call_id: format!("b-{id}"),
        node_id: "test1".into(),
        recording: (id == "r1").then(|| "/rec/r1, \"x\".wav".to_owned()),
    }
}

#[tokio::test]
async fn cdrs_filter_page_and_export_csv() {
    let t = setup().await;
    let a = token(&t).await;
    let rows = [
        cdr("r1", "100", "answered", 1000),
        cdr("r2", "100", "busy", 2000),
        cdr("r3", "101", "answered", 3000),
        cdr("r4", "100", "answered", 4000),
    ];
    for c in &rows {
        t.store.finish_call(c).await.expect("cdr");
    }
    let ids = |b: &Value| -> Vec<String> {
        b["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| i["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let b = call(&t.app, "GET", "/api/v1/cdrs", &a, None).await.json();
    assert_eq!(ids(&b), ["r4", "r3", "r2", "r1"], "newest first");
    assert_eq!(b["items"][3]["duration"], 8);
    let b = call(
        &t.app,
        "GET",
        "/api/v1/cdrs?caller=100&disposition=answered",
        &a,
        None,
    )
    .await
    .json();
    assert_eq!(
        (ids(&b), b["total"].as_i64()),
        (vec!["r4".to_owned(), "r1".to_owned()], Some(2))
    );
    let b = call(&t.app, "GET", "/api/v1/cdrs?from=2000&to=4000", &a, None)
        .await
        .json();
    assert_eq!(ids(&b), ["r3", "r2"]);
    let b = call(
        &t.app,
        "GET",
        "/api/v1/cdrs?callee=200&limit=2&offset=1",
        &a,
        None,
    )
    .await
    .json();
    assert_eq!(
        (ids(&b), b["total"].as_i64()),
        (vec!["r3".to_owned(), "r2".to_owned()], Some(4))
    );
    for q in ["from=yesterday", "format=xml", "limit=0", "colour=red"] {
        let r = call(&t.app, "GET", &format!("/api/v1/cdrs?{q}"), &a, None).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "bad_query".into()),
            "{q}"
        );
    }
    let r = call(
        &t.app,
        "GET",
        "/api/v1/cdrs?format=csv&caller=100",
        &a,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap_or_default()
        .starts_with("text/csv"));
    assert!(r.headers[header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap_or_default()
        .contains("cdrs.csv"));
    let lines: Vec<&str> = r.text.split("\r\n").collect();
    assert_eq!(lines[0], super::api::tests_csv_header());
    assert_eq!(lines.len(), 5, "header, 3 rows, final empty: {lines:?}");
    assert!(
        lines[1].starts_with("r4,100,200,4000,4002,4010,answered,8,caller,a-r4,b-r4,test1,"),
        "{}",
        lines[1]
    );
    assert!(
        lines[3].ends_with(",\"/rec/r1, \"\"x\"\".wav\""),
        "{}",
        lines[3]
    );
    let r = call(
        &t.app,
        "GET",
        "/api/v1/cdrs?format=csv&limit=1&offset=1",
        &a,
        None,
    )
    .await;
    assert_eq!(r.text.split("\r\n").filter(|l| !l.is_empty()).count(), 2);
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_json() {
    let t = setup().await;
    let a = token(&t).await;
    let r = call(&t.app, "GET", "/api/v1/nope", &a, None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    let r = call(&t.app, "PATCH", "/api/v1/extensions", &a, None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed".into())
    );
}

// ---- the live feed ----

fn active_call(id: &str, caller_call_id: &str, node: &str) -> ActiveCall {
    ActiveCall {
        id: id.into(),
        caller: "100".into(),
        callee: "101".into(),
        state: "answered".into(),
        started_at: 10,
        answered_at: Some(12),
        caller_call_id: caller_call_id.into(),
        callee_call_id: format!("b-{id}"),
        node_id: node.into(),
    }
}

/// Server-Sent Events as (event name, JSON data), read from a streaming body.
struct EventReader {
    body: axum::body::BodyDataStream,
    buf: String,
}

impl EventReader {
    /// The next event, or a panic after `within`.
    async fn next(&mut self, within: Duration) -> (String, Value) {
        use futures_util::StreamExt;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                let mut name = String::new();
                let mut data = String::new();
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if name.is_empty() {
                    continue; // a keep-alive comment
                }
                let value = serde_json::from_str(&data).expect("event data is JSON");
                return (name, value);
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .expect("an event in time")
                .expect("the feed stays open")
                .expect("body chunk");
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

async fn open_feed(app: &Router, auth: &Auth) -> EventReader {
    let resp = app
        .clone()
        .oneshot(request("GET", "/api/v1/events", auth, None))
        .await
        .expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "text/event-stream",
        "SSE content type"
    );
    EventReader {
        body: resp.into_body().into_data_stream(),
        buf: String::new(),
    }
}

#[tokio::test]
async fn the_live_feed_needs_a_session_and_gives_a_user_only_their_mailbox() {
    let t = setup().await;
    let r = call(&t.app, "GET", "/api/v1/events", &Auth::None, None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );
    add_extension(&t, "1000").await;
    add_extension(&t, "1001").await;
    accounts::link_extension(&t.store, "viewer", Some("1001"))
        .await
        .expect("link");
    let viewer = login(&t.app, "viewer").await;
    let mut theirs = open_feed(&t.app, &viewer).await;
    let admin = login(&t.app, "root").await;
    let mut all = open_feed(&t.app, &admin).await;
    let mut first = Vec::new();
    for _ in 0..2 {
        first.push(all.next(Duration::from_secs(5)).await.0);
    }
    first.sort();
    assert_eq!(first, ["calls", "registrations"]);
    leave_message(&t, "1000", "1001", 1200).await;
    let m = leave_message(&t, "1001", "1000", 1200).await;
    for (mailbox, new) in [("1000", 1), ("1001", 1)] {
        let (name, data) = all.next(Duration::from_secs(5)).await;
        assert_eq!(name, "voicemail");
        assert_eq!(data, json!({"mailbox": mailbox, "new": new, "old": 0}));
    }
    // The user hears of their own mailbox only, and of nothing else: no lists.
    let (name, data) = theirs.next(Duration::from_secs(5)).await;
    assert_eq!(
        (name.as_str(), data),
        ("voicemail", json!({"mailbox": "1001", "new": 1, "old": 0}))
    );
    t.voicemail
        .move_message("1001", &m.id, crate::store::VoicemailFolder::Old)
        .await
        .expect("move");
    let (_, data) = theirs.next(Duration::from_secs(5)).await;
    assert_eq!(data, json!({"mailbox": "1001", "new": 0, "old": 1}));
}

#[tokio::test]
async fn the_live_feed_sends_snapshots_at_once_and_on_every_change() {
    let t = setup().await;
    crate::admin::extensions::add(&t.store, "ringfort", "100", "", "sip-pass-1")
        .await
        .expect("add");
    let session = login(&t.app, "root").await;
    let mut feed = open_feed(&t.app, &session).await;
    let quick = Duration::from_secs(2);
    // Both lists at once, empty.
    let mut first = [feed.next(quick).await, feed.next(quick).await];
    first.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(first[0], ("calls".to_owned(), json!([])));
    assert_eq!(first[1], ("registrations".to_owned(), json!([])));

    // A phone registers: told well before the periodic re-check (5 s).
    let now = crate::store::now_unix();
    t.store
        .replace_bindings("100", &[binding("100", "a", now + 600)])
        .await
        .expect("bind");
    let (name, regs) = feed.next(quick).await;
    assert_eq!(name, "registrations");
    assert_eq!(regs[0]["extension"], "100");
    assert_eq!(regs[0]["user_agent"], "Phone/1");

    // A call starts, then ends: the calls list follows, registrations are not re-sent.
    t.store
        .insert_active_call(&active_call("c1", "a-c1", "test1"))
        .await
        .expect("call");
    let (name, calls) = feed.next(quick).await;
    assert_eq!(name, "calls");
    assert_eq!(calls[0]["id"], "c1");
    assert_eq!(calls[0]["state"], "answered");
    t.store
        .finish_call(&cdr("c1", "100", "answered", 10))
        .await
        .expect("finish");
    assert_eq!(feed.next(quick).await, ("calls".to_owned(), json!([])));

    // The phone unregisters (its binding set emptied).
    t.store.replace_bindings("100", &[]).await.expect("unbind");
    assert_eq!(
        feed.next(quick).await,
        ("registrations".to_owned(), json!([]))
    );
}

#[tokio::test]
async fn the_live_feed_ends_when_the_server_stops() {
    use futures_util::StreamExt;
    let t = setup().await;
    let tok = token(&t).await;
    let mut feed = open_feed(&t.app, &tok).await;
    feed.next(Duration::from_secs(2)).await;
    feed.next(Duration::from_secs(2)).await;
    t.state.close_streams();
    let end = tokio::time::timeout(Duration::from_secs(2), feed.body.next())
        .await
        .expect("the feed ends at once");
    assert!(end.is_none(), "no more events: {end:?}");
}

// ---- hanging up calls ----

#[tokio::test]
async fn hanging_up_a_call_needs_csrf_and_an_admin_and_reaches_the_node() {
    let t = setup().await;
    for c in [
        active_call("live1", "a-live1", "test1"),
        active_call("gone1", "a-gone1", "test1"),
        active_call("far1", "a-live-far", "other-node"),
    ] {
        t.store.insert_active_call(&c).await.expect("call");
    }
    let Auth::Session(cookie, csrf) = login(&t.app, "root").await else {
        unreachable!()
    };
    let uri = "/api/v1/calls/live1";

    let r = call(
        &t.app,
        "DELETE",
        uri,
        &Auth::Session(cookie.clone(), None),
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "csrf_failed".into())
    );
    let viewer = login(&t.app, "viewer").await;
    let r = call(&t.app, "DELETE", uri, &viewer, None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "forbidden".into())
    );
    let r = call(&t.app, "DELETE", uri, &Auth::None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        t.hung_up.lock().expect("log").is_empty(),
        "refused requests reach no node"
    );

    let admin = Auth::Session(cookie, csrf);
    let r = call(&t.app, "DELETE", "/api/v1/calls/nope", &admin, None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    let r = call(&t.app, "DELETE", "/api/v1/calls/far1", &admin, None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "conflict".into())
    );
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("other-node"));

    let r = call(&t.app, "DELETE", uri, &admin, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    // Listed, but the node no longer has it (it ended meanwhile): 404.
    let r = call(&t.app, "DELETE", "/api/v1/calls/gone1", &admin, None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    // A token needs no CSRF header.
    let tok = token(&t).await;
    let r = call(&t.app, "DELETE", uri, &tok, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(
        *t.hung_up.lock().expect("log"),
        vec!["a-live1", "a-gone1", "a-live1"],
        "orders name the caller's Call-ID"
    );
}

#[tokio::test]
async fn hanging_up_when_the_node_is_gone_is_503() {
    let t = setup().await;
    let (control, rx) = tokio::sync::mpsc::channel(1);
    drop(rx);
    let app = router(AppState::new(
        t.registrar.clone(),
        control,
        NodeInfo::new("test1"),
        "ringfort",
        t.dialplans.clone(),
        t.voicemail.clone(),
    ));
    t.store
        .insert_active_call(&active_call("live1", "a-live1", "test1"))
        .await
        .expect("call");
    let tok = token(&t).await;
    let r = call(&app, "DELETE", "/api/v1/calls/live1", &tok, None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable".into())
    );
}

// ---- the panel's files ----

#[tokio::test]
async fn the_panel_is_served_with_types_cache_and_security_headers() {
    let t = setup().await;
    let r = call(&t.app, "GET", "/", &Auth::None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(r
        .text
        .contains("<script type=\"module\" src=\"/assets/app.js\">"));
    let csp = r.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .expect("csp");
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-cache");
    assert_eq!(r.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");

    let r = call(&t.app, "GET", "/assets/app.js", &Auth::None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.headers[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    let etag = r.headers[header::ETAG].to_str().expect("etag").to_owned();
    let req = Request::builder()
        .uri("/assets/app.js")
        .header(header::IF_NONE_MATCH, &etag)
        .body(Body::empty())
        .expect("request");
    let r = send(&t.app, req).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert!(r.text.is_empty());
    let r = call(&t.app, "GET", "/assets/app.css", &Auth::None, None).await;
    assert_eq!(r.headers[header::CONTENT_TYPE], "text/css; charset=utf-8");
    let r = call(&t.app, "GET", "/assets/nope.js", &Auth::None, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[test]
fn every_file_the_panel_loads_is_embedded() {
    // The page's <script>/<link> and every module's `import ... from './x.js'`.
    let served: Vec<&str> = panel::ASSETS.iter().map(|a| a.path).collect();
    for asset in panel::ASSETS {
        let text = std::str::from_utf8(asset.body).expect("UTF-8");
        let mut wanted: Vec<String> = Vec::new();
        for part in text.split("from '").skip(1) {
            let name = part.split('\'').next().unwrap_or_default();
            wanted.push(format!("/assets/{}", name.trim_start_matches("./")));
        }
        for attr in ["src=\"", "href=\""] {
            for part in text.split(attr).skip(1) {
                let url = part.split('"').next().unwrap_or_default();
                if url.starts_with("/assets/") {
                    wanted.push(url.to_owned());
                }
            }
        }
        for w in wanted {
            assert!(
                served.contains(&w.as_str()),
                "{} loads {w}, which is not embedded",
                asset.path
            );
        }
    }
}

// ---- dialplans ----

/// A second file routing 2XXX numbers; with `step` as its only step.
fn sales_plan(step: &str) -> String {
    format!("[context.sales]\n\n[[context.sales.route]]\nmatch = \"_2XXX\"\nsteps = [{step}]\n")
}

#[tokio::test]
async fn dialplans_are_listed_for_admins_only() {
    let t = setup().await;
    let r = call(&t.app, "GET", "/api/v1/dialplans", &Auth::None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let viewer = login(&t.app, "viewer").await;
    let r = call(&t.app, "GET", "/api/v1/dialplans", &viewer, None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "forbidden".into())
    );
    let tok = token(&t).await;
    let r = call(&t.app, "GET", "/api/v1/dialplans", &tok, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.json(),
        json!({"files": [{"name": "base.toml", "text": BASE_PLAN}]})
    );
}

#[tokio::test]
async fn validating_checks_against_the_other_files_and_writes_nothing() {
    let t = setup().await;
    let tok = token(&t).await;
    let good = sales_plan("{ dial = \"${EXTEN}\" }");
    let r = call(
        &t.app,
        "POST",
        "/api/v1/dialplans/validate",
        &tok,
        Some(json!({"name": "sales.toml", "text": good})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json(), json!({"ok": true, "routes": 2}));
    assert!(!t.dialplans.join("sales.toml").exists());

    // A step that does not exist, on line 5.
    let r = call(
        &t.app,
        "POST",
        "/api/v1/dialplans/validate",
        &tok,
        Some(json!({"name": "sales.toml", "text": sales_plan("{ juggle = true }")})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let v = r.json();
    assert_eq!(v["ok"], false);
    assert_eq!(v["errors"][0]["file"], "sales.toml", "{v}");
    assert_eq!(v["errors"][0]["line"], 5, "{v}");
    // Cross-file references: the base file including `sales` is wrong alone (line 5)
    // and right with the file that defines it.
    let base_with_sales = BASE_PLAN.replace(
        "[context.internal]\n",
        "[context.internal]\ninclude = [\"sales\"]\n",
    );
    let r = call(
        &t.app,
        "POST",
        "/api/v1/dialplans/validate",
        &tok,
        Some(json!({"name": "base.toml", "text": base_with_sales})),
    )
    .await;
    let v = r.json();
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(
        (&v["errors"][0]["file"], &v["errors"][0]["line"]),
        (&json!("base.toml"), &json!(5)),
        "{v}"
    );
    assert!(
        v["errors"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("sales")),
        "{v}"
    );
    let r = call(
        &t.app,
        "POST",
        "/api/v1/dialplans/validate",
        &tok,
        Some(json!({"files": [
            {"name": "base.toml", "text": base_with_sales},
            {"name": "sales.toml", "text": good},
        ]})),
    )
    .await;
    assert_eq!(r.json(), json!({"ok": true, "routes": 2}), "{}", r.text);
    assert_eq!(
        std::fs::read_to_string(t.dialplans.join("base.toml")).expect("base"),
        BASE_PLAN
    );
    let r = call(
        &t.app,
        "POST",
        "/api/v1/dialplans/validate",
        &tok,
        Some(json!({"files": []})),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_input".into())
    );
}

#[tokio::test]
async fn saving_needs_csrf_and_an_admin() {
    let t = setup().await;
    let body = json!({"text": sales_plan("{ dial = \"${EXTEN}\" }")});
    let Auth::Session(cookie, _) = login(&t.app, "root").await else {
        unreachable!("login gives a session")
    };
    let no_csrf = Auth::Session(cookie, None);
    let r = call(
        &t.app,
        "PUT",
        "/api/v1/dialplans/sales.toml",
        &no_csrf,
        Some(body.clone()),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "csrf_failed".into())
    );
    let r = call(
        &t.app,
        "POST",
        "/api/v1/dialplans/validate",
        &no_csrf,
        Some(json!({"name": "a.toml", "text": ""})),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "csrf_failed".into())
    );
    let viewer = login(&t.app, "viewer").await;
    let r = call(
        &t.app,
        "PUT",
        "/api/v1/dialplans/sales.toml",
        &viewer,
        Some(body),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "forbidden".into())
    );
    assert!(!t.dialplans.join("sales.toml").exists());
    assert!(t.hung_up.lock().expect("log").is_empty(), "no reload");
}

#[tokio::test]
async fn file_names_cannot_leave_the_folder() {
    let t = setup().await;
    let tok = token(&t).await;
    let body = json!({"text": sales_plan("{ dial = \"${EXTEN}\" }")});
    for name in [
        "..%2Fescape.toml",
        "..%2F..%2Fescape.toml",
        "escape",
        ".hidden.toml",
        "a%20b.toml",
        "sales.toml.bak",
        "%2Ftmp%2Fescape.toml",
    ] {
        let r = call(
            &t.app,
            "PUT",
            &format!("/api/v1/dialplans/{name}"),
            &tok,
            Some(body.clone()),
        )
        .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "bad_name".into()),
            "{name}: {}",
            r.text
        );
    }
    // A path with a real slash is not this route at all.
    let r = call(
        &t.app,
        "PUT",
        "/api/v1/dialplans/../escape.toml",
        &tok,
        Some(body.clone()),
    )
    .await;
    assert_ne!(r.status, StatusCode::OK);
    let r = call(
        &t.app,
        "POST",
        "/api/v1/dialplans/validate",
        &tok,
        Some(json!({"name": "../escape.toml", "text": ""})),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "bad_name".into())
    );
    assert!(!t._dir.path().join("escape.toml").exists());
    let names: Vec<_> = std::fs::read_dir(&t.dialplans)
        .expect("folder")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["base.toml"]);
}

#[tokio::test]
async fn an_invalid_save_is_422_with_the_line_and_changes_nothing() {
    let t = setup().await;
    let tok = token(&t).await;
    let r = call(
        &t.app,
        "PUT",
        "/api/v1/dialplans/sales.toml",
        &tok,
        Some(json!({"text": sales_plan("{ juggle = true }")})),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_dialplan".into()),
        "{}",
        r.text
    );
    let errors = r.json()["error"]["errors"].clone();
    assert_eq!(errors[0]["file"], "sales.toml", "{errors}");
    assert_eq!(errors[0]["line"], 5, "{errors}");
    assert!(errors[0]["reason"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(!t.dialplans.join("sales.toml").exists());
    assert!(t.hung_up.lock().expect("log").is_empty(), "no reload");
}

#[tokio::test]
async fn a_valid_save_writes_the_file_and_reloads_the_node() {
    let t = setup().await;
    let admin = login(&t.app, "root").await;
    let text = sales_plan("{ dial = \"${EXTEN}\" }");
    let r = call(
        &t.app,
        "PUT",
        "/api/v1/dialplans/sales.toml",
        &admin,
        Some(json!({"text": text})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.json(),
        json!({"name": "sales.toml", "routes": 2, "contexts": 2})
    );
    assert_eq!(
        std::fs::read_to_string(t.dialplans.join("sales.toml")).expect("saved"),
        text
    );
    assert_eq!(*t.hung_up.lock().expect("log"), ["reload"]);
    // Replacing it: still one file of that name, and no temp file left behind.
    let r = call(
        &t.app,
        "PUT",
        "/api/v1/dialplans/sales.toml",
        &admin,
        Some(json!({"text": "[context.sales]\n"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["routes"], 1);
    let mut names: Vec<_> = std::fs::read_dir(&t.dialplans)
        .expect("folder")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["base.toml", "sales.toml"]);
}

// ---- metrics ----

#[tokio::test]
async fn metrics_need_an_admin_and_speak_prometheus_text() {
    let t = setup().await;
    let r = call(&t.app, "GET", "/metrics", &Auth::None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "unauthorized");
    let viewer = login(&t.app, "viewer").await;
    let r = call(&t.app, "GET", "/metrics", &viewer, None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "forbidden".into())
    );

    crate::admin::extensions::add(&t.store, "ringfort", "1000", "", "sip-pass-1")
        .await
        .expect("add");
    let now = crate::store::now_unix();
    t.store
        .replace_bindings(
            "1000",
            &[
                binding("1000", "a", now + 300),
                binding("1000", "b", now - 1),
            ],
        )
        .await
        .expect("bind");
    t.state
        .inner
        .node
        .metrics
        .calls_started
        .fetch_add(3, std::sync::atomic::Ordering::Relaxed);
    for auth in [login(&t.app, "root").await, token(&t).await] {
        let r = call(&t.app, "GET", "/metrics", &auth, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(
            r.headers[header::CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let text = &r.text;
        assert!(text.contains("ringfort_registrations 1\n"), "{text}");
        assert!(text.contains("ringfort_extensions 1\n"), "{text}");
        assert!(text.contains("ringfort_calls_started_total 3\n"), "{text}");
        assert!(text.contains(&format!(
            "ringfort_node_info{{version=\"{}\",node=\"test1\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
        // Every family is announced before its samples, every sample is `name value`.
        let mut declared = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap_or_default().to_owned());
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            assert!(name.starts_with("ringfort_"), "{line}");
            assert!(
                declared.iter().any(|d| name.starts_with(d.as_str())),
                "{line} before its # TYPE"
            );
            let value = line.rsplit(' ').next().unwrap_or_default();
            assert!(value.parse::<f64>().is_ok() || value == "+Inf", "{line}");
        }
        for family in [
            "ringfort_extensions",
            "ringfort_calls_active",
            "ringfort_sip_transactions",
            "ringfort_rtp_relayed_packets_total",
            "ringfort_rtp_dropped_packets_total",
            "ringfort_binding_commit_seconds",
        ] {
            assert!(declared.iter().any(|d| d == family), "{family} missing");
        }
    }
}

// ---- voicemail ----

/// Leaves a message of `ms` milliseconds from `caller` in `mailbox`, as the voicemail app
/// does (a real recording, saved through the service).
async fn leave_message(
    t: &T,
    mailbox: &str,
    caller: &str,
    ms: u32,
) -> crate::store::VoicemailMessage {
    let p = t
        .voicemail
        .start_message(mailbox, caller, "Caller")
        .expect("start");
    crate::voicemail::tests::write_wav(&p.recording_path, ms, true);
    t.voicemail
        .save_message(&p, Duration::from_millis(u64::from(ms)))
        .await
        .expect("save")
        .expect("kept")
}

/// [`setup`] with extensions 1000 and 1001 (so their mailboxes are listed).
async fn with_two_extensions() -> T {
    let t = setup().await;
    add_extension(&t, "1000").await;
    add_extension(&t, "1001").await;
    t
}

async fn add_extension(t: &T, number: &str) {
    crate::admin::extensions::add(&t.store, "ringfort", number, "Desk", "sip-pass-1")
        .await
        .expect("extension");
}

/// The raw body of an answer, for audio.
async fn bytes_of(app: &Router, req: Request<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, headers, body.to_vec())
}

fn ranged(uri: &str, auth: &Auth, range: &str) -> Request<Body> {
    let mut r = request("GET", uri, auth, None);
    r.headers_mut()
        .insert(header::RANGE, range.parse().expect("range header"));
    r
}

#[tokio::test]
async fn voicemail_lists_plays_with_ranges_marks_heard_and_deletes() {
    let t = with_two_extensions().await;
    let older = leave_message(&t, "1000", "1001", 1500).await;
    let m = leave_message(&t, "1000", "1002", 5000).await;
    let admin = login(&t.app, "root").await;

    let r = call(&t.app, "GET", "/api/v1/voicemail", &admin, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.json(),
        json!([
            {"mailbox": "1000", "name": "Desk", "new": 2, "old": 0},
            {"mailbox": "1001", "name": "Desk", "new": 0, "old": 0},
        ])
    );
    let r = call(
        &t.app,
        "GET",
        "/api/v1/voicemail/1000/messages",
        &admin,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let list = r.json();
    assert_eq!(list.as_array().map(Vec::len), Some(2));
    assert_eq!(list[1]["id"], m.id.as_str());
    assert_eq!(list[1]["folder"], "new");
    assert_eq!(list[1]["caller"], "1002");
    assert_eq!(list[1]["duration_ms"], 5000);
    assert_eq!(list[1]["received_at"], m.received_at);

    // The audio: whole, then ranges as an audio element asks for them.
    let file = std::fs::read(t.voicemail.absolute(&m.path)).expect("wav");
    let uri = format!("/api/v1/voicemail/1000/messages/{}/audio", m.id);
    let (status, h, body) = bytes_of(&t.app, request("GET", &uri, &admin, None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], "audio/wav");
    assert_eq!(h[header::ACCEPT_RANGES], "bytes");
    assert_eq!(h[header::CONTENT_LENGTH], file.len().to_string().as_str());
    assert_eq!(body, file, "the recording, byte for byte");
    assert_eq!(&body[..4], b"RIFF");
    let len = file.len();
    for (range, from, to) in [
        ("bytes=0-", 0, len - 1),
        ("bytes=44-1043", 44, 1043),
        ("bytes=-100", len - 100, len - 1),
        (&format!("bytes=1000-{}", len + 5000), 1000, len - 1),
    ] {
        let (status, h, body) = bytes_of(&t.app, ranged(&uri, &admin, range)).await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            h[header::CONTENT_RANGE],
            format!("bytes {from}-{to}/{len}").as_str(),
            "{range}"
        );
        assert_eq!(body, file[from..=to], "{range}");
    }
    // Larger than one chunk of the stream, across a chunk boundary.
    assert!(len > 70_000, "a 5 s recording is {len} bytes");
    let (_, _, body) = bytes_of(&t.app, ranged(&uri, &admin, "bytes=60000-70000")).await;
    assert_eq!(body, file[60_000..=70_000]);
    let (status, h, body) = bytes_of(&t.app, ranged(&uri, &admin, &format!("bytes={len}-"))).await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(h[header::CONTENT_RANGE], format!("bytes */{len}").as_str());
    let err: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(err["error"]["code"], "range_not_satisfiable");

    // Heard: to old, and the MWI side hears of it (as when the phone menu plays it).
    let mut counts = t.voicemail.subscribe_counts();
    let msg_uri = format!("/api/v1/voicemail/1000/messages/{}", m.id);
    let r = call(
        &t.app,
        "PUT",
        &msg_uri,
        &admin,
        Some(json!({"folder": "old"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["folder"], "old");
    let c = counts.try_recv().expect("counts announced");
    assert_eq!(
        (c.mailbox.as_str(), c.counts.new, c.counts.old),
        ("1000", 1, 1)
    );
    let r = call(&t.app, "GET", "/api/v1/voicemail", &admin, None).await;
    assert_eq!(r.json()[0]["old"], 1);
    for bad in [
        json!({"folder": "trash"}),
        json!({"folder": "old", "x": 1}),
        json!({}),
    ] {
        let r = call(&t.app, "PUT", &msg_uri, &admin, Some(bad.clone())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
    }
    let r = send(
        &t.app,
        request("PUT", &msg_uri, &admin, Some("{\"folder\": ")),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "bad_json".into())
    );

    // Deleted: the file goes, the lamp follows, the message is gone for good.
    let r = call(&t.app, "DELETE", &msg_uri, &admin, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let c = counts.try_recv().expect("counts announced");
    assert_eq!((c.counts.new, c.counts.old), (1, 0));
    assert!(!t.voicemail.absolute(&m.path).exists());
    for (method, uri) in [
        ("DELETE", msg_uri.as_str()),
        ("GET", uri.as_str()),
        ("PUT", msg_uri.as_str()),
    ] {
        let body = (method == "PUT").then(|| json!({"folder": "old"}));
        let r = call(&t.app, method, uri, &admin, body).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::NOT_FOUND, "not_found".into()),
            "{method} {uri}"
        );
    }
    let r = call(
        &t.app,
        "GET",
        "/api/v1/voicemail/1000/messages",
        &admin,
        None,
    )
    .await;
    assert_eq!(r.json().as_array().map(Vec::len), Some(1));
    assert_eq!(r.json()[0]["id"], older.id.as_str());
}

#[tokio::test]
async fn voicemail_ids_and_mailboxes_cannot_name_a_path() {
    let t = setup().await;
    add_extension(&t, "1000").await;
    let m = leave_message(&t, "1000", "1001", 1200).await;
    let admin = login(&t.app, "root").await;
    for uri in [
        "/api/v1/voicemail/1000/messages/..%2F..%2Ft.db/audio",
        "/api/v1/voicemail/1000/messages/..%2F1000%2Fx/audio",
        "/api/v1/voicemail/1000/messages/x.wav/audio",
        "/api/v1/voicemail/1000/messages/%2Fetc%2Fpasswd/audio",
        "/api/v1/voicemail/1000/messages/a%00b/audio",
        "/api/v1/voicemail/..%2F..%2F/messages",
        "/api/v1/voicemail/%2E%2E/messages",
        "/api/v1/voicemail/1000%2F..%2F1001/messages",
    ] {
        let r = call(&t.app, "GET", uri, &admin, None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}: {}", r.text);
        assert_eq!(r.code(), "invalid_input", "{uri}");
    }
    let r = call(
        &t.app,
        "DELETE",
        "/api/v1/voicemail/1000/messages/..%2F..%2Ft.db",
        &admin,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(t._dir.path().join("t.db").exists());
    // An id of another mailbox is not found through this one.
    add_extension(&t, "1001").await;
    let uri = format!("/api/v1/voicemail/1001/messages/{}/audio", m.id);
    let r = call(&t.app, "GET", &uri, &admin, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = call(
        &t.app,
        "GET",
        "/api/v1/voicemail/1000/messages/1-0/audio",
        &admin,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_user_reaches_only_their_own_extensions_mailbox() {
    let t = with_two_extensions().await;
    let theirs = leave_message(&t, "1000", "1001", 1200).await;
    let own = leave_message(&t, "1001", "1000", 1200).await;
    // No extension linked yet: no mailbox.
    let viewer = login(&t.app, "viewer").await;
    let r = call(&t.app, "GET", "/api/v1/voicemail", &viewer, None).await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, json!([])));
    accounts::link_extension(&t.store, "viewer", Some("1001"))
        .await
        .expect("link");
    let r = call(&t.app, "GET", "/api/v1/me", &viewer, None).await;
    assert_eq!(r.json()["extension"], "1001");
    let r = call(&t.app, "GET", "/api/v1/voicemail", &viewer, None).await;
    assert_eq!(
        r.json(),
        json!([{"mailbox": "1001", "name": "Desk", "new": 1, "old": 0}])
    );
    let base = "/api/v1/voicemail/1000/messages";
    for (method, uri, body) in [
        ("GET", base.to_owned(), None),
        ("GET", format!("{base}/{}/audio", theirs.id), None),
        ("GET", format!("{base}/no-such/audio"), None),
        (
            "PUT",
            format!("{base}/{}", theirs.id),
            Some(json!({"folder": "old"})),
        ),
        // A bad body to someone else's mailbox is refused for who sent it, not parsed.
        (
            "PUT",
            format!("{base}/{}", theirs.id),
            Some(json!({"nonsense": 1})),
        ),
        ("DELETE", format!("{base}/{}", theirs.id), None),
        (
            "GET",
            "/api/v1/voicemail/..%2F1000/messages".to_owned(),
            None,
        ),
    ] {
        let r = call(&t.app, method, &uri, &viewer, body).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::FORBIDDEN, "forbidden".into()),
            "{method} {uri}"
        );
    }
    assert_eq!(
        t.voicemail.counts("1000").await.expect("counts").new,
        1,
        "untouched"
    );
    // Their own: everything.
    let own_base = "/api/v1/voicemail/1001/messages";
    let r = call(&t.app, "GET", own_base, &viewer, None).await;
    assert_eq!(r.json()[0]["id"], own.id.as_str());
    let (status, _, body) = bytes_of(
        &t.app,
        request(
            "GET",
            &format!("{own_base}/{}/audio", own.id),
            &viewer,
            None,
        ),
    )
    .await;
    assert_eq!((status, &body[..4]), (StatusCode::OK, &b"RIFF"[..]));
    let uri = format!("{own_base}/{}", own.id);
    let r = call(&t.app, "PUT", &uri, &viewer, Some(json!({"folder": "old"}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = call(&t.app, "DELETE", &uri, &viewer, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        t.voicemail.counts("1001").await.expect("counts"),
        Default::default()
    );
    // Removing the extension unlinks the account.
    crate::admin::extensions::remove(&t.store, "1001")
        .await
        .expect("remove");
    let r = call(&t.app, "GET", "/api/v1/me", &viewer, None).await;
    assert_eq!(r.json()["extension"], Value::Null);
    let r = call(&t.app, "GET", own_base, &viewer, None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

// ---- self-service ----

#[tokio::test]
async fn a_user_manages_their_own_extension_and_nothing_else() {
    let t = with_two_extensions().await;
    let viewer = login(&t.app, "viewer").await;
    // Owning none: a clear 404 on each.
    for (method, uri, body) in [
        ("GET", "/api/v1/me/extension", None),
        ("PUT", "/api/v1/me/extension", Some(json!({"dnd": true}))),
        ("POST", "/api/v1/me/extension/password", None),
        (
            "PUT",
            "/api/v1/me/voicemail-pin",
            Some(json!({"pin": "2468"})),
        ),
    ] {
        let r = call(&t.app, method, uri, &viewer, body).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::NOT_FOUND, "not_found".into()),
            "{method} {uri}"
        );
    }
    accounts::link_extension(&t.store, "viewer", Some("1001"))
        .await
        .expect("link");
    let r = call(&t.app, "GET", "/api/v1/me/extension", &viewer, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (r.json()["number"].clone(), r.json()["dnd"].clone()),
        (json!("1001"), json!(false))
    );
    let r = call(
        &t.app,
        "PUT",
        "/api/v1/me/extension",
        &viewer,
        Some(json!({"dnd": true, "forward_noanswer": "1000"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let e = t
        .store
        .get_extension("1001")
        .await
        .expect("get")
        .expect("1001");
    assert!(e.routing.dnd);
    assert_eq!(e.routing.forward_noanswer.as_deref(), Some("1000"));
    // The registrar's cache follows at once (calls see the DND).
    let cached = t.registrar.extension_state("1001");
    assert!(cached.is_some_and(|e| e.dnd));
    // Not the name, not the password this way, not a forward to itself.
    for bad in [
        json!({"name": "Mine"}),
        json!({"password": "chosen-by-me-1"}),
        json!({"number": "1000", "dnd": false}),
        json!({"forward_always": "1001"}),
    ] {
        let r = call(
            &t.app,
            "PUT",
            "/api/v1/me/extension",
            &viewer,
            Some(bad.clone()),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
    }
    let other = t
        .store
        .get_extension("1000")
        .await
        .expect("get")
        .expect("1000");
    assert!(!other.routing.dnd, "the other extension untouched");
    // A new SIP password: generated, shown once, and the one the extension now has.
    let before = t
        .store
        .get_extension("1001")
        .await
        .expect("get")
        .expect("1001");
    let r = call(
        &t.app,
        "POST",
        "/api/v1/me/extension/password",
        &viewer,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let password = r.json()["password"].as_str().expect("password").to_owned();
    assert_eq!(password.len(), 20);
    let after = t
        .store
        .get_extension("1001")
        .await
        .expect("get")
        .expect("1001");
    assert_ne!(before.ha1_md5, after.ha1_md5);
    assert_eq!(
        after.ha1_md5,
        crate::admin::extensions::hashes("1001", "ringfort", &password).0,
        "the HA1 of the password shown"
    );
    // The voicemail PIN: checked, stored hashed, never shown.
    for bad in ["12", "12ab", "12345678901"] {
        let r = call(
            &t.app,
            "PUT",
            "/api/v1/me/voicemail-pin",
            &viewer,
            Some(json!({"pin": bad})),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let r = call(
        &t.app,
        "PUT",
        "/api/v1/me/voicemail-pin",
        &viewer,
        Some(json!({"pin": "246810"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert!(t
        .voicemail
        .verify_pin("1001", "246810")
        .await
        .expect("verify"));
    assert!(!t.voicemail.has_pin("1000").await.expect("pin"));
    // CSRF as everywhere.
    let Auth::Session(cookie, _) = viewer else {
        unreachable!()
    };
    let r = call(
        &t.app,
        "POST",
        "/api/v1/me/extension/password",
        &Auth::Session(cookie, None),
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "csrf_failed".into())
    );
}

#[tokio::test]
async fn an_admin_adds_a_user_login_for_an_extension() {
    let t = with_two_extensions().await;
    let admin = login(&t.app, "root").await;
    let uri = "/api/v1/extensions/1001/account";
    let r = call(&t.app, "POST", uri, &admin, Some(json!({"name": "alice"}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let made = r.json();
    assert_eq!(
        (&made["name"], &made["role"], &made["extension"]),
        (&json!("alice"), &json!("user"), &json!("1001"))
    );
    let password = made["password"].as_str().expect("password").to_owned();
    assert_eq!(password.len(), 20);
    // The account logs in with it and owns 1001.
    let r = call(
        &t.app,
        "POST",
        "/api/v1/login",
        &Auth::None,
        Some(json!({"name": "alice", "password": password})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (r.json()["role"].clone(), r.json()["extension"].clone()),
        (json!("user"), json!("1001"))
    );
    for (uri, body, status) in [
        (uri, json!({"name": "alice"}), StatusCode::CONFLICT),
        (uri, json!({"name": "a b"}), StatusCode::BAD_REQUEST),
        (
            uri,
            json!({"name": "bob", "role": "admin"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/extensions/9999/account",
            json!({"name": "bob"}),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let r = call(&t.app, "POST", uri, &admin, Some(body.clone())).await;
        assert_eq!(r.status, status, "{uri} {body}: {}", r.text);
    }
    assert!(t.store.get_admin("bob").await.expect("get").is_none());
}

// ---- an OWASP-basics scan over every route ----
//
// Walks the router's own table (held equal to openapi.json above), so a route added later
// is scanned without anyone remembering to: broken access control (no session: 401),
// CSRF (a session without the header: 403, nothing changed), and sensitive data exposure
// (no GET answer carries a password, a hash or someone else's session).

/// A route's path with its parameters filled with values that exist in [`secret_scan`]'s
/// fixture (and harmless dummies elsewhere).
fn concrete(path: &str) -> String {
    path.replace("{number}", "1000")
        .replace("{id}", "c-scan")
        .replace("{name}", "scan.toml")
}

/// A voicemail message whose id is the one [`concrete`] puts in paths, in mailbox 1000.
async fn scan_message(t: &T) {
    let dir = t.voicemail.mailbox_dir("1000");
    std::fs::create_dir_all(&dir).expect("mailbox dir");
    crate::voicemail::tests::write_wav(&dir.join("c-scan.wav"), 1200, true);
    t.store
        .insert_voicemail_message(&crate::store::VoicemailMessage {
            id: "c-scan".into(),
            mailbox: "1000".into(),
            caller: "1001".into(),
            caller_name: "Scan".into(),
            received_at: crate::store::now_unix(),
            duration_ms: 1200,
            folder: crate::store::VoicemailFolder::New,
            path: "voicemail/1000/c-scan.wav".into(),
        })
        .await
        .expect("message");
}

/// Routes a `user` account may call too (for its own extension only; the voicemail tests
/// and the live feed's hold them to that). Every other route is admin-only.
fn for_users(path: &str) -> bool {
    path.starts_with("/api/v1/voicemail")
        || path.starts_with("/api/v1/me/")
        || path == "/api/v1/events"
}

/// Routes anyone may call: logging in and the API's description. The panel's files (`/`,
/// `/assets/*`) are outside the table and public too.
fn is_public(path: &str) -> bool {
    matches!(path, "/api/v1/login" | "/api/v1/openapi.json")
}

#[tokio::test]
async fn scan_every_route_refuses_callers_without_a_session_with_a_json_401() {
    let t = setup().await;
    for (method, path) in routes().table {
        if is_public(path) {
            continue;
        }
        let uri = concrete(path);
        let body = matches!(method, "POST" | "PUT").then(|| json!({"number": "1000"}));
        let r = call(&t.app, method, &uri, &Auth::None, body).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        assert_eq!(
            r.headers[header::CONTENT_TYPE],
            "application/json",
            "{method} {uri}"
        );
        assert_eq!(r.code(), "unauthorized", "{method} {uri}");
        assert!(
            r.headers.get(header::SET_COOKIE).is_none(),
            "{method} {uri}"
        );
    }
    // The public ones really are.
    let r = call(&t.app, "GET", "/api/v1/openapi.json", &Auth::None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = call(&t.app, "GET", "/", &Auth::None, None).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn scan_every_state_changing_route_needs_the_csrf_header_on_a_session() {
    let t = setup().await;
    let admin = login(&t.app, "root").await;
    let Auth::Session(cookie, _) = admin.clone() else {
        unreachable!()
    };
    let r = call(
        &t.app,
        "POST",
        "/api/v1/extensions",
        &admin,
        Some(json!({"number": "1000", "name": "Before", "password": "sip-pass-1"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    t.store
        .insert_active_call(&active_call("c-scan", "a-live-scan", "test1"))
        .await
        .expect("call");
    scan_message(&t).await;
    let mut checked = 0;
    for (method, path) in routes().table {
        if method == "GET" || is_public(path) {
            continue;
        }
        let uri = concrete(path);
        let body =
            matches!(method, "POST" | "PUT").then(|| json!({"number": "1001", "name": "After"}));
        for csrf in [None, Some("0".repeat(64)), Some(String::new())] {
            let auth = Auth::Session(cookie.clone(), csrf.clone());
            let r = call(&t.app, method, &uri, &auth, body.clone()).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{method} {uri} {csrf:?}");
            assert_eq!(r.code(), "csrf_failed", "{method} {uri} {csrf:?}");
        }
        checked += 1;
    }
    assert!(checked >= 5, "the table has POST, PUT and DELETE routes");
    // Nothing happened: the extension is as it was, none was added, the call was not
    // hung up, the session is still open.
    let e = t.store.get_extension("1000").await.expect("get");
    assert_eq!(e.map(|e| e.display_name), Some("Before".into()));
    assert!(t.store.get_extension("1001").await.expect("get").is_none());
    assert!(t.hung_up.lock().map(|l| l.is_empty()).unwrap_or(false));
    let c = t.voicemail.counts("1000").await.expect("counts");
    assert_eq!(
        (c.new, c.old),
        (1, 0),
        "the message neither heard nor deleted"
    );
    let r = call(&t.app, "GET", "/api/v1/me", &admin, None).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn scan_every_admin_route_refuses_a_user_session_with_403() {
    let t = with_two_extensions().await;
    scan_message(&t).await;
    t.store
        .insert_active_call(&active_call("c-scan", "a-live-scan", "test1"))
        .await
        .expect("call");
    // A user who owns an extension, just not 1000 (whose mailbox the paths name).
    accounts::link_extension(&t.store, "viewer", Some("1001"))
        .await
        .expect("link");
    let viewer = login(&t.app, "viewer").await;
    let mut refused = 0;
    for (method, path) in routes().table {
        // Their own session, their own extension, their own mailbox list and their own
        // live feed.
        if is_public(path)
            || path.starts_with("/api/v1/me")
            || matches!(
                path,
                "/api/v1/logout" | "/api/v1/voicemail" | "/api/v1/events"
            )
        {
            continue;
        }
        let uri = concrete(path);
        let body = matches!(method, "POST" | "PUT")
            .then(|| json!({"number": "1002", "name": "After", "folder": "old"}));
        let r = call(&t.app, method, &uri, &viewer, body).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{method} {uri}: {}",
            r.text
        );
        assert_eq!(r.code(), "forbidden", "{method} {uri}");
        refused += 1;
    }
    assert!(refused >= 15, "{refused} routes refused");
    // Nothing changed.
    assert!(t.store.get_extension("1002").await.expect("get").is_none());
    assert!(t.hung_up.lock().map(|l| l.is_empty()).unwrap_or(false));
    assert_eq!(t.voicemail.counts("1000").await.expect("counts").new, 1);
    // Their own list says only their own mailbox.
    let r = call(&t.app, "GET", "/api/v1/voicemail", &viewer, None).await;
    assert_eq!(r.json().as_array().map(Vec::len), Some(1));
    assert_eq!(r.json()[0]["mailbox"], "1001");
}

/// Every key of a JSON value, at any depth.
fn json_keys(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                out.push(k.to_lowercase());
                json_keys(v, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| json_keys(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn scan_no_get_answer_carries_a_secret() {
    const SIP_PASSWORD: &str = "Sip-Scan-Secret-7781";
    const PIN: &str = "9081726354";
    let t = setup().await;
    let admin = login(&t.app, "root").await;
    let Auth::Session(own_session, _) = admin.clone() else {
        unreachable!()
    };
    // Secrets of others that exist meanwhile: another session of the same admin, a
    // viewer's session and CSRF token, an API token.
    let Auth::Session(other_session, other_csrf) = login(&t.app, "root").await else {
        unreachable!()
    };
    let Auth::Session(viewer_session, viewer_csrf) = login(&t.app, "viewer").await else {
        unreachable!()
    };
    let Auth::Token(api_token) = token(&t).await else {
        unreachable!()
    };
    let r = call(
        &t.app,
        "POST",
        "/api/v1/extensions",
        &admin,
        Some(json!({"number": "1000", "name": "Scan", "password": SIP_PASSWORD})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    t.voicemail.set_pin("1000", PIN).await.expect("pin");
    scan_message(&t).await;
    // The admin owns 1000, so `/me/extension` reads it too.
    accounts::link_extension(&t.store, "root", Some("1000"))
        .await
        .expect("link");
    // Something in every list (the recording's CDR before the live call of the same id:
    // writing a CDR ends the active call it names).
    let now = crate::store::now_unix();
    let recording = t.recordings.join("c-scan.wav");
    std::fs::write(&recording, b"RIFF").expect("recording");
    let mut recorded = cdr("c-scan", "1000", "answered", now - 120);
    recorded.recording = Some(recording.display().to_string());
    t.store.finish_call(&recorded).await.expect("recorded cdr");
    t.store
        .replace_bindings("1000", &[binding("1000", "a", now + 600)])
        .await
        .expect("bind");
    t.store
        .insert_active_call(&active_call("c-scan", "a-live-scan", "test1"))
        .await
        .expect("call");
    t.store
        .finish_call(&cdr("cdr-scan", "1000", "answered", now - 60))
        .await
        .expect("cdr");

    let ext = t
        .store
        .get_extension("1000")
        .await
        .expect("get")
        .expect("extension");
    let pin_hash = t
        .store
        .voicemail_box("1000")
        .await
        .expect("mailbox")
        .and_then(|b| b.pin_hash)
        .expect("pin hash");
    let mut secrets: Vec<(&str, String)> = vec![
        ("the SIP password", SIP_PASSWORD.into()),
        ("the MD5 HA1", ext.ha1_md5.clone()),
        ("the SHA-256 HA1", ext.ha1_sha256.clone()),
        ("an argon2 hash", "$argon2".into()),
        ("the PIN", PIN.into()),
        ("the PIN hash", pin_hash),
        ("another session", other_session.clone()),
        ("a viewer's session", viewer_session.clone()),
        ("the API token", api_token.clone()),
        ("a stored session hash", accounts::secret_hash(&own_session)),
        (
            "a stored session hash",
            accounts::secret_hash(&other_session),
        ),
        ("a stored token hash", accounts::secret_hash(&api_token)),
        // The caller's own cookie is HttpOnly: no body should hand it to a script either.
        ("the caller's session", own_session.clone()),
    ];
    for csrf in [other_csrf, viewer_csrf].into_iter().flatten() {
        secrets.push(("another session's CSRF token", csrf));
    }

    let mut answers: Vec<(String, String)> = Vec::new();
    for (method, path) in routes().table {
        if method != "GET" {
            continue;
        }
        let uri = concrete(path);
        if path == "/api/v1/events" {
            // A stream that does not end: its first snapshots are what it says.
            let mut feed = open_feed(&t.app, &admin).await;
            for _ in 0..2 {
                let (name, data) = feed.next(Duration::from_secs(5)).await;
                answers.push((format!("{uri} ({name})"), data.to_string()));
            }
            continue;
        }
        let r = call(&t.app, method, &uri, &admin, None).await;
        assert_eq!(r.status, StatusCode::OK, "GET {uri}: {}", r.text);
        answers.push((uri, r.text));
    }
    for uri in ["/api/v1/cdrs?format=csv", "/api/v1/extensions?limit=500"] {
        let r = call(&t.app, "GET", uri, &admin, None).await;
        answers.push((uri.into(), r.text));
    }
    assert!(answers.len() >= 10, "every GET route was read");
    // The scan read real data, not empty lists.
    let said = |uri: &str, needle: &str| {
        answers
            .iter()
            .any(|(u, body)| u.starts_with(uri) && body.contains(needle))
    };
    assert!(said("/api/v1/extensions/1000", "Scan"));
    assert!(said("/api/v1/registrations", "sip:1000@"));
    assert!(said("/api/v1/calls", "c-scan"));
    assert!(said("/api/v1/cdrs?format=csv", "cdr-scan"));
    assert!(said("/api/v1/events (registrations)", "sip:1000@"));
    assert!(said("/metrics", "ringfort_extensions 1"));
    for (uri, body) in &answers {
        for (what, secret) in &secrets {
            assert!(!secret.is_empty());
            assert!(!body.contains(secret.as_str()), "GET {uri} shows {what}");
        }
        // Field names too (the document describes the login's password field, which is
        // no leak).
        if uri == "/api/v1/openapi.json" {
            continue;
        }
        if let Ok(v) = serde_json::from_str::<Value>(body) {
            let mut keys = Vec::new();
            json_keys(&v, &mut keys);
            for k in keys {
                assert!(
                    !["password", "ha1", "hash", "pin", "secret", "session_id"]
                        .iter()
                        .any(|bad| k.contains(bad)),
                    "GET {uri} has a field {k}"
                );
            }
        }
    }
}

#[tokio::test]
async fn stats_history_buckets_the_nodes_samples_for_admins() {
    let t = setup().await;
    let now = crate::store::now_unix();
    let at = now - now.rem_euclid(300) - 600;
    for (node, off, regs, calls) in [("a", 0, 4, 2), ("b", 0, 4, 3), ("a", 60, 5, 1)] {
        t.store
            .record_sample(&crate::store::NodeSample {
                node_id: node.into(),
                at: at + off,
                registrations: regs,
                calls,
            })
            .await
            .expect("sample");
    }
    let a = token(&t).await;
    let r = call(
        &t.app,
        "GET",
        "/api/v1/stats/history?hours=1&step=300",
        &a,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let body = r.json();
    assert_eq!(body["step"], 300);
    assert_eq!(
        body["points"],
        json!([{ "at": at, "calls": 5, "registrations": 5 }])
    );
    for bad in ["hours=0", "hours=169", "step=59", "step=x", "days=1"] {
        let r = call(
            &t.app,
            "GET",
            &format!("/api/v1/stats/history?{bad}"),
            &a,
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
    }
}

#[tokio::test]
async fn settings_and_cluster_status_are_read_only_views_for_admins() {
    let t = setup().await;
    let a = token(&t).await;
    let r = call(&t.app, "GET", "/api/v1/settings", &a, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let body = r.json();
    assert!(body["config"]["sip"]["udp_listen"].is_array(), "{body}");
    assert!(body["config"]["database"]["url"].is_string(), "{body}");

    let r = call(&t.app, "GET", "/api/v1/cluster", &a, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.json(),
        json!({ "enabled": false, "nodes": [], "vips": [] })
    );
    t.store
        .heartbeat_node(&crate::store::NodeHeartbeat {
            node_id: "n1",
            sip_address: "10.0.0.1:5060",
            media_address: "10.0.0.1",
            started_at_ms: 1_700_000_000_000,
            version: "9.9",
            calls_active: 3,
        })
        .await
        .expect("heartbeat");
    t.store
        .acquire_vip_lease("10.0.0.100", "n1", 60_000)
        .await
        .expect("lease");
    let body = call(&t.app, "GET", "/api/v1/cluster", &a, None)
        .await
        .json();
    assert_eq!(body["nodes"][0]["node_id"], "n1");
    assert_eq!(body["nodes"][0]["healthy"], true);
    assert_eq!(body["nodes"][0]["started_at"], 1_700_000_000);
    assert_eq!(body["nodes"][0]["calls_active"], 3);
    assert_eq!(body["vips"][0]["holder"], "n1");
    assert_eq!(body["vips"][0]["state"], "held");
    assert!(
        body["vips"][0]["remaining_ms"].as_i64().unwrap_or(0) > 50_000,
        "{body}"
    );
}

#[tokio::test]
async fn recordings_are_listed_played_with_ranges_and_deleted_on_their_node() {
    let t = setup().await;
    let a = token(&t).await;
    let here = t.recordings.join("c1.wav");
    std::fs::write(&here, vec![7u8; 1000]).expect("recording");
    let outside = t._dir.path().join("t.db");
    for (id, node, file) in [
        ("c1", "test1", Some(here.display().to_string())),
        (
            "c2",
            "other",
            Some("/var/lib/ringfort/recordings/c2.wav".to_owned()),
        ),
        ("c3", "test1", None),
        ("c4", "test1", Some(outside.display().to_string())),
    ] {
        let mut c = cdr(id, "100", "answered", 1000);
        c.node_id = node.into();
        c.recording = file;
        t.store.finish_call(&c).await.expect("cdr");
    }
    let r = call(&t.app, "GET", "/api/v1/recordings?limit=10", &a, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let body = r.json();
    assert_eq!(body["total"], 3, "{body}");
    let sizes: Vec<(String, Value)> = body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap_or("").to_owned(),
                i["size_bytes"].clone(),
            )
        })
        .collect();
    assert!(sizes.contains(&("c1".into(), json!(1000))), "{sizes:?}");
    assert!(sizes.contains(&("c2".into(), Value::Null)), "{sizes:?}");
    assert!(
        sizes.contains(&("c4".into(), Value::Null)),
        "not in the folder: {sizes:?}"
    );

    let r = call(&t.app, "GET", "/api/v1/recordings/c1/audio", &a, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CONTENT_TYPE], "audio/wav");
    assert_eq!(r.headers[header::ACCEPT_RANGES], "bytes");
    assert_eq!(r.text.len(), 1000);
    let mut req = request("GET", "/api/v1/recordings/c1/audio", &a, None);
    req.headers_mut()
        .insert(header::RANGE, "bytes=990-".parse().expect("header"));
    let r = send(&t.app, req).await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers[header::CONTENT_RANGE], "bytes 990-999/1000");
    assert_eq!(r.text.len(), 10);
    let mut req = request("GET", "/api/v1/recordings/c1/audio", &a, None);
    req.headers_mut()
        .insert(header::RANGE, "bytes=1000-".parse().expect("header"));
    assert_eq!(
        send(&t.app, req).await.status,
        StatusCode::RANGE_NOT_SATISFIABLE
    );

    for (id, status, code) in [
        ("c2", StatusCode::CONFLICT, "on_another_node"),
        ("c3", StatusCode::NOT_FOUND, "not_found"),
        ("c4", StatusCode::NOT_FOUND, "not_found"),
        ("nope", StatusCode::NOT_FOUND, "not_found"),
    ] {
        let r = call(
            &t.app,
            "GET",
            &format!("/api/v1/recordings/{id}/audio"),
            &a,
            None,
        )
        .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (status, code),
            "{id}: {}",
            r.text
        );
    }
    let r = call(&t.app, "DELETE", "/api/v1/recordings/c2", &a, None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "another node's file stays");
    let r = call(&t.app, "DELETE", "/api/v1/recordings/c1", &a, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert!(!here.exists());
    let body = call(&t.app, "GET", "/api/v1/recordings", &a, None)
        .await
        .json();
    assert_eq!(body["total"], 2);
    let r = call(&t.app, "DELETE", "/api/v1/recordings/c1", &a, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // The call stays in the history.
    let body = call(&t.app, "GET", "/api/v1/cdrs", &a, None).await.json();
    assert_eq!(body["total"], 4);
}
