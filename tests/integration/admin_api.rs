//! The admin accounts on the command line and the admin API over a real socket against
//! `ringfort serve`: the first admin is made with `ringfort admin add`, logs in, and
//! changes what the CLI then sees.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::support::{Node, NodeOptions, Sipp, SippTransport};

/// One HTTP/1.1 exchange (Connection: close); (status, head, body).
pub(crate) fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String, String) {
    exchange(&mut connect(addr), addr, method, path, headers, body)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

/// The same over TLS, trusting only the certificate in PEM file `ca`.
fn https(
    addr: SocketAddr,
    ca: &std::path::Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String, String) {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).expect("ca file") {
        roots.add(cert.expect("ca cert")).expect("add ca");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::from(addr.ip());
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).expect("tls");
    let mut s = rustls::StreamOwned::new(conn, connect(addr));
    exchange(&mut s, addr, method, path, headers, body)
}

fn exchange(
    s: &mut impl ReadWrite,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String, String) {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or(""));
    s.write_all(req.as_bytes()).expect("send");
    let mut raw = Vec::new();
    // A TLS peer that closes without close_notify ends the read with an error after
    // the whole response: keep what came.
    let _ = s.read_to_end(&mut raw);
    let out = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = out.split_once("\r\n\r\n").expect("a response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (status, head.to_owned(), body.to_owned())
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

pub(crate) fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The value of `"key":"value"` in a flat JSON text.
fn json_str(text: &str, key: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(text).expect("JSON");
    v[key].as_str().unwrap_or_default().to_owned()
}

#[test]
fn first_admin_logs_in_and_manages_extensions_over_http() {
    let mut node = Node::new(NodeOptions::default());
    node.start();
    // A fresh install says how to make the first admin.
    let log = node.log_text();
    assert!(log.contains("ringfort admin add NAME"), "{log}");
    let out = node.cli_ok(&["admin", "add", "root"]);
    let password = out.rsplit(' ').next().unwrap_or_default().trim().to_owned();
    assert_eq!(password.len(), 20, "{out}");
    // Rules are usage errors.
    assert_eq!(node.cli(&["admin", "add", "root"]).status.code(), Some(2));
    let weak = node.cli(&["admin", "add", "other", "--password", "short"]);
    assert_eq!(weak.status.code(), Some(2));
    let addr = node.http_addr();

    let wrong = format!("{{\"name\":\"root\",\"password\":\"{password}x\"}}");
    let (status, _, body) = http(addr, "POST", "/api/v1/login", &[], Some(&wrong));
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("bad_credentials"), "{body}");

    let good = format!("{{\"name\":\"root\",\"password\":\"{password}\"}}");
    let (status, head, body) = http(addr, "POST", "/api/v1/login", &[], Some(&good));
    assert_eq!(status, 200, "{head}\n{body}");
    let set_cookie = header(&head, "set-cookie").expect("Set-Cookie");
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"));
    let cookie = set_cookie.split(';').next().unwrap_or_default().to_owned();
    let csrf = json_str(&body, "csrf_token");

    let (status, _, body) = http(addr, "GET", "/api/v1/me", &[("Cookie", &cookie)], None);
    assert_eq!((status, json_str(&body, "name")), (200, "root".to_owned()));

    let new_ext = "{\"number\":\"1000\",\"name\":\"Front desk\"}";
    let (status, _, body) = http(
        addr,
        "POST",
        "/api/v1/extensions",
        &[("Cookie", &cookie)],
        Some(new_ext),
    );
    assert_eq!(status, 403, "no CSRF token: {body}");
    let (status, _, body) = http(
        addr,
        "POST",
        "/api/v1/extensions",
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        Some(new_ext),
    );
    assert_eq!(status, 201, "{body}");
    let list = node.cli_ok(&["extension", "list"]);
    assert!(list.starts_with("1000\tFront desk"), "{list}");

    // A script's token, made on the command line.
    let out = node.cli_ok(&["admin", "token", "root", "backup"]);
    let token = out.rsplit(' ').next().unwrap_or_default().trim().to_owned();
    let bearer = format!("Bearer {token}");
    let (status, _, body) = http(
        addr,
        "GET",
        "/api/v1/status",
        &[("Authorization", &bearer)],
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_str(&body, "node_id"), "test1");
    let list = node.cli_ok(&["admin", "list"]);
    assert_eq!(list.trim(), "root\tadmin\ttokens=backup");
    node.cli_ok(&["admin", "token", "root", "backup", "--revoke"]);
    let (status, _, _) = http(
        addr,
        "GET",
        "/api/v1/status",
        &[("Authorization", &bearer)],
        None,
    );
    assert_eq!(status, 401);

    let (status, _, _) = http(
        addr,
        "POST",
        "/api/v1/logout",
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        None,
    );
    assert_eq!(status, 204);
    let (status, _, _) = http(addr, "GET", "/api/v1/me", &[("Cookie", &cookie)], None);
    assert_eq!(status, 401);
    node.cli_ok(&["admin", "remove", "root"]);
    assert_eq!(
        node.cli(&["admin", "remove", "root"]).status.code(),
        Some(2)
    );
    node.stop();
}

/// `/metrics` of a running node over a real socket: auth, the content type Prometheus
/// expects, and counters that moved because a phone registered (the binding writer's
/// commit histogram, the store's registrations).
#[test]
fn metrics_count_a_registration_and_need_a_token() {
    let mut node = Node::new(NodeOptions::default());
    node.add_extension("1000", "s3cret-pass");
    node.start();
    node.cli_ok(&[
        "admin",
        "add",
        "root",
        "--password",
        "a long admin password",
    ]);
    let out = node.cli_ok(&["admin", "token", "root", "prometheus"]);
    let token = out.rsplit(' ').next().unwrap_or_default().trim().to_owned();
    let bearer = format!("Bearer {token}");
    let addr = node.http_addr();

    let (status, _, body) = http(addr, "GET", "/metrics", &[], None);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"unauthorized\""), "{body}");

    Sipp::new("register.xml", SippTransport::Udp)
        .auth("1000", "s3cret-pass")
        .var("expires", "600")
        .expect_pass(&node);
    let (status, head, body) = http(addr, "GET", "/metrics", &[("Authorization", &bearer)], None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        header(&head, "content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    for line in [
        "ringfort_registrations 1",
        "ringfort_extensions 1",
        "# TYPE ringfort_calls_started_total counter",
        "# TYPE ringfort_binding_commit_seconds histogram",
    ] {
        assert!(body.lines().any(|l| l == line), "{line} in:\n{body}");
    }
    let commits: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("ringfort_binding_commit_seconds_count "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(commits >= 1, "the REGISTER's commit was timed:\n{body}");
    assert!(
        body.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{body}"
    );
    node.assert_no_panic();
}

#[test]
fn the_admin_port_serves_https_with_secure_cookies_when_given_a_certificate() {
    let mut node = Node::new(NodeOptions::default());
    let dir = node.dir.path().to_owned();
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=ringfort-test"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        // A leaf, not a CA: the client trusts it directly.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .output()
        .unwrap_or_else(|e| panic!("openssl is needed (apt-get install openssl): {e}"));
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    node.set_http("tls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n");
    node.start();
    assert!(node.log_text().contains("admin panel on https://"));
    let out = node.cli_ok(&["admin", "add", "root"]);
    let password = out.rsplit(' ').next().unwrap_or_default().trim().to_owned();
    let addr = node.http_addr();
    let ca = dir.join("cert.pem");

    let good = format!("{{\"name\":\"root\",\"password\":\"{password}\"}}");
    let (status, head, body) = https(addr, &ca, "POST", "/api/v1/login", &[], Some(&good));
    assert_eq!(status, 200, "{body}");
    let cookie = header(&head, "set-cookie").expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Secure"] {
        assert!(cookie.contains(attr), "{attr} in {cookie}");
    }
    let session = cookie.split(';').next().unwrap_or_default();
    let (status, _, body) = https(addr, &ca, "GET", "/api/v1/me", &[("Cookie", session)], None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("root"), "{body}");
    // The panel comes over TLS too.
    let (status, head, _) = https(addr, &ca, "GET", "/", &[], None);
    assert_eq!(status, 200);
    assert!(header(&head, "content-security-policy").is_some(), "{head}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = s.write_all(b"GET /api/v1/me HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    assert!(
        !raw.starts_with(b"HTTP/1.1 200"),
        "plain HTTP answered on the TLS port"
    );
    node.stop();

    // A key that is not one stops the start with the file and the reason.
    std::fs::write(dir.join("key.pem"), "not a key\n").expect("write");
    let out = node.cli(&["serve"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("key.pem: no PEM private key"), "{err}");
    node.assert_no_panic();
}
