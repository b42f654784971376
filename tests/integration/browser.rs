//! Headless Chromium for the panel tests, driven by chromedriver over the W3C WebDriver
//! HTTP protocol with a tiny blocking HTTP/1.1 client (one request per connection), so
//! the suite needs no HTTP client crate and no npm. `scripts/test.sh` installs the
//! Debian packages `chromium` and `chromium-driver`.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{free_port, tail};

/// The W3C name of an element reference in JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "chromedriver";

/// One HTTP exchange with `Connection: close`; (status, body). Chunked bodies are
/// decoded. Panics on a socket error.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
    try_http(addr, method, path, body, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("HTTP {method} {path} to {addr}: {e}"))
}

/// [`http`], with socket errors (and a reply slower than `wait`) returned.
pub fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    wait: Duration,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(wait))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())?;
    // Read the head, then the body by its Content-Length (or to the end).
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::other("connection closed before the head"));
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let length: Option<usize> = header("content-length").and_then(|v| v.parse().ok());
    loop {
        if length.is_some_and(|len| raw.len() - head_end >= len) {
            break;
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let rest = String::from_utf8_lossy(&raw[head_end..]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
    Ok((status, if chunked { dechunk(&rest) } else { rest }))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Standard base64 (screenshots come as base64 PNG).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// chromedriver and one headless Chromium session; both end on drop.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// An element found on the page.
#[derive(Clone, Debug)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver and a headless Chromium at a laptop's window size.
    pub fn start() -> Browser {
        assert!(
            Path::new(CHROMIUM).exists()
                && Command::new(CHROMEDRIVER).arg("--version").output().is_ok(),
            "Chromium or chromedriver is not installed: run scripts/test.sh (it installs \
             the Debian packages chromium and chromium-driver)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("chromedriver.log");
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let status = try_http(addr, "GET", "/status", None, Duration::from_secs(2));
            if let Ok((200, body)) = status {
                if body.contains("\"ready\":true") {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
            log,
            _dir: dir,
        };
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1366,860",
                         "--no-first-run", "--lang=en-US",
                         "--autoplay-policy=no-user-gesture-required"],
            },
        }}});
        let v = browser.command("POST", "/session", Some(caps));
        browser.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_owned();
        browser
    }

    /// A WebDriver command; its `value`, or a panic with the driver's error.
    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.or_else(|| (method == "POST").then(|| json!({})));
        let (status, text) = http(self.addr, method, path, body.as_ref());
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert!(
            status == 200,
            "WebDriver {method} {path}: {status} {}\n--- chromedriver log\n{}",
            tail(&text, 2000),
            tail(
                &std::fs::read_to_string(&self.log).unwrap_or_default(),
                3000
            )
        );
        if path == "/session" {
            return v["value"].clone();
        }
        v["value"].clone()
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub fn goto(&self, url: &str) {
        self.command(
            "POST",
            &self.session_path("/url"),
            Some(json!({"url": url})),
        );
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns its result.
    pub fn eval(&self, script: &str, args: Value) -> Value {
        self.command(
            "POST",
            &self.session_path("/execute/sync"),
            Some(json!({"script": script, "args": args})),
        )
    }

    /// The first element matching `css` now, if any.
    pub fn find_now(&self, css: &str) -> Option<Element> {
        let (status, text) = http(
            self.addr,
            "POST",
            &self.session_path("/element"),
            Some(&json!({"using": "css selector", "value": css})),
        );
        if status != 200 {
            return None;
        }
        let v: Value = serde_json::from_str(&text).ok()?;
        v["value"][ELEMENT_KEY]
            .as_str()
            .map(|id| Element(id.to_owned()))
    }

    /// Waits (up to `timeout`) for an element matching `css` that is displayed.
    pub fn wait_for(&self, css: &str, timeout: Duration) -> Element {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.find_now(css) {
                if self.displayed(&e) {
                    return e;
                }
            }
            if Instant::now() > deadline {
                let html = self.eval("return document.body.innerHTML;", json!([]));
                panic!(
                    "timed out after {timeout:?} waiting for {css}\n--- page\n{}",
                    tail(html.as_str().unwrap_or_default(), 4000)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (up to `timeout`) until no element matches `css`.
    pub fn wait_gone(&self, css: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.find_now(css).is_some() {
            assert!(
                Instant::now() < deadline,
                "{css} still on the page after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Rendered with a size and not hidden (the page shows and hides whole sections).
    /// An element the page replaced meanwhile (stale) is not displayed: the caller
    /// looks it up again.
    fn displayed(&self, e: &Element) -> bool {
        let script = json!({
            "script": "const e = arguments[0]; \
                       return e.getClientRects().length > 0 \
                           && getComputedStyle(e).visibility !== 'hidden';",
            "args": [{ ELEMENT_KEY: e.0 }],
        });
        match http(
            self.addr,
            "POST",
            &self.session_path("/execute/sync"),
            Some(&script),
        ) {
            (200, text) => serde_json::from_str::<Value>(&text)
                .is_ok_and(|v| v["value"].as_bool() == Some(true)),
            _ => false,
        }
    }

    /// Clicks the displayed element matching `css`, finding it again when the page
    /// replaced it between the look-up and the click (live tables are redrawn).
    pub fn click_on(&self, css: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let e = self.wait_for(css, timeout);
            let (status, text) = http(
                self.addr,
                "POST",
                &self.session_path(&format!("/element/{}/click", e.0)),
                Some(&json!({})),
            );
            if status == 200 {
                return;
            }
            assert!(
                text.contains("stale element") && Instant::now() < deadline,
                "click on {css}: {status} {}",
                tail(&text, 1000)
            );
        }
    }

    pub fn click(&self, e: &Element) {
        self.command(
            "POST",
            &self.session_path(&format!("/element/{}/click", e.0)),
            None,
        );
    }

    /// Empties a field.
    pub fn clear(&self, e: &Element) {
        self.command(
            "POST",
            &self.session_path(&format!("/element/{}/clear", e.0)),
            None,
        );
    }

    /// Types `text` into a field (keyboard input, as a user would).
    pub fn type_into(&self, e: &Element, text: &str) {
        self.command(
            "POST",
            &self.session_path(&format!("/element/{}/value", e.0)),
            Some(json!({"text": text})),
        );
    }

    pub fn text(&self, e: &Element) -> String {
        self.command(
            "GET",
            &self.session_path(&format!("/element/{}/text", e.0)),
            None,
        )
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    pub fn attribute(&self, e: &Element, name: &str) -> Option<String> {
        self.command(
            "GET",
            &self.session_path(&format!("/element/{}/attribute/{name}", e.0)),
            None,
        )
        .as_str()
        .map(str::to_owned)
    }

    /// The page's location (its URL).
    pub fn url(&self) -> String {
        self.command("GET", &self.session_path("/url"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Saves a PNG of the window to `path`.
    pub fn screenshot(&self, path: &Path) {
        let v = self.command("GET", &self.session_path("/screenshot"), None);
        let png = base64_decode(v.as_str().unwrap_or_default());
        assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot folder");
        }
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http(
                self.addr,
                "DELETE",
                &format!("/session/{}", self.session),
                None,
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn base64_decodes() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGk="), b"hi");
    assert_eq!(base64_decode("YWJj"), b"abc");
}
