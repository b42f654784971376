//! The web panel in headless Chromium against `ringfort serve`: an admin made with
//! `ringfort admin add` logs in, adds an extension and reads its generated password off
//! the page, a SIPp phone registers with it and shows up on the registrations page
//! without a reload (the live feed), a SIPp call shows up on the live calls page and is
//! hung up with its button (BYE to both SIPps, CDR hangup=system), and the history
//! lists it. Screenshots of each page go to `<target dir>/screenshots/panel-*.png`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::browser::Browser;
use crate::support::{free_port, wait_for, Node, NodeOptions, Sipp, SippTransport};

const CALLER: &str = "1001";
const CALLER_PASSWORD: &str = "panel-caller-pass";
const NEW_EXTENSION: &str = "2001";
/// Waits in the page: generous for a loaded 2-core machine, still bounded.
const UI_WAIT: Duration = Duration::from_secs(10);

fn screenshots() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("screenshots")
}

#[test]
fn admin_panel_in_a_real_browser() {
    let started = Instant::now();
    let mut node = Node::new(NodeOptions {
        // The call scenarios check the SDP names the relay's ports.
        extra: "[media]\nrtp_port_min = 40000\nrtp_port_max = 40998\n".into(),
        ..NodeOptions::default()
    });
    node.add_extension(CALLER, CALLER_PASSWORD);
    node.start();
    let out = node.cli_ok(&["admin", "add", "root"]);
    let admin_password = out.rsplit(' ').next().unwrap_or_default().trim().to_owned();
    let shots = screenshots();
    let base = format!("http://{}", node.http_addr());

    let browser = Browser::start();
    browser.goto(&format!("{base}/"));

    // A wrong password, then an account without the admin role, are told apart.
    let viewer = "viewer password 1";
    node.cli_ok(&[
        "admin",
        "add",
        "viewer",
        "--role",
        "user",
        "--password",
        viewer,
    ]);
    let login_error = |name: &str, password: &str| {
        let field = browser.wait_for("#login-name", UI_WAIT);
        browser.clear(&field);
        browser.type_into(&field, name);
        let field = browser.wait_for("#login-password", UI_WAIT);
        browser.clear(&field);
        browser.type_into(&field, password);
        browser.click_on("#login-form button[type=submit]", UI_WAIT);
        let error = browser.wait_for("#login-error", UI_WAIT);
        wait_for("the login error", UI_WAIT, || {
            Some(browser.text(&error)).filter(|t| !t.is_empty())
        })
    };
    assert_eq!(
        login_error("root", "wrong password!"),
        "Wrong name or password."
    );
    let refused = login_error("viewer", viewer);
    assert!(refused.contains("needs an admin account"), "{refused}");

    // Log in.
    let name = browser.wait_for("#login-name", UI_WAIT);
    browser.clear(&name);
    browser.type_into(&name, "root");
    let password = browser.wait_for("#login-password", UI_WAIT);
    browser.clear(&password);
    browser.type_into(&password, &admin_password);
    browser.screenshot(&shots.join("panel-login.png"));
    // Enter submits the form, as from the keyboard.
    browser.type_into(&password, "\u{E007}");

    // The dashboard.
    browser.wait_for("#top", UI_WAIT);
    browser.wait_for("#calls-chart", UI_WAIT);
    let regs = browser.wait_for("#stat-registrations", UI_WAIT);
    wait_for("the registrations counter", UI_WAIT, || {
        (browser.text(&regs) == "0").then_some(())
    });

    // Add an extension; its generated password is shown once.
    browser.click_on("nav a[href='#/extensions']", UI_WAIT);
    let number = browser.wait_for("#ext-number", UI_WAIT);
    browser.type_into(&number, NEW_EXTENSION);
    browser.type_into(&browser.wait_for("#ext-name", UI_WAIT), "Panel phone");
    browser.click_on("#ext-form button[type=submit]", UI_WAIT);
    let shown = browser.wait_for("#ext-password", UI_WAIT);
    let sip_password = browser.text(&shown);
    assert!(sip_password.len() >= 12, "{sip_password:?}");
    browser.wait_for(
        &format!("#ext-table tr[data-number='{NEW_EXTENSION}']"),
        UI_WAIT,
    );
    browser.screenshot(&shots.join("panel-extensions.png"));
    // Do-not-disturb from its checkbox, as the CLI then sees it.
    browser.click_on(&format!("#dnd-{NEW_EXTENSION}"), UI_WAIT);
    wait_for("DND on", UI_WAIT, || {
        node.extension_line(NEW_EXTENSION)
            .contains("\tdnd")
            .then_some(())
    });
    browser.click_on(&format!("#dnd-{NEW_EXTENSION}"), UI_WAIT);
    wait_for("DND off", UI_WAIT, || {
        (!node.extension_line(NEW_EXTENSION).contains("\tdnd")).then_some(())
    });

    // The registrations page; the phone registers while it is open.
    browser.click_on("nav a[href='#/registrations']", UI_WAIT);
    browser.wait_for("#reg-table", UI_WAIT);
    // A page reload would lose this.
    browser.eval("window.stillTheSamePage = true;", json!([]));
    let phone_port = free_port();
    Sipp::new("register.xml", SippTransport::Udp)
        .auth(NEW_EXTENSION, &sip_password)
        .var("expires", "600")
        .port(phone_port)
        .expect_pass(&node);
    let row = browser.wait_for(
        &format!("#reg-table tr[data-extension='{NEW_EXTENSION}']"),
        UI_WAIT,
    );
    assert!(browser.text(&row).contains("udp"), "{}", browser.text(&row));
    assert_eq!(
        browser.eval("return window.stillTheSamePage === true;", json!([])),
        json!(true),
        "the row came without a reload"
    );
    browser.screenshot(&shots.join("panel-registrations.png"));

    // A call from 1001 to the new phone, hung up from the live calls page.
    let mut callee = Sipp::new("call_uas_answer.xml", SippTransport::Udp)
        .port(phone_port)
        .spawn(&node);
    std::thread::sleep(Duration::from_millis(300));
    browser.click_on("nav a[href='#/calls']", UI_WAIT);
    browser.wait_for("#calls-table", UI_WAIT);
    let mut caller = Sipp::new("call_uac_wait_bye.xml", SippTransport::Udp)
        .auth(CALLER, CALLER_PASSWORD)
        .service(NEW_EXTENSION)
        .var("caller", CALLER)
        .spawn(&node);
    let answered = format!("#calls-table tr[data-callee='{NEW_EXTENSION}'] .badge.answered");
    browser.wait_for(&answered, UI_WAIT);
    browser.screenshot(&shots.join("panel-calls.png"));
    browser.click_on(
        &format!("#calls-table tr[data-callee='{NEW_EXTENSION}'] button.hangup"),
        UI_WAIT,
    );
    browser.wait_gone(
        &format!("#calls-table tr[data-callee='{NEW_EXTENSION}']"),
        UI_WAIT,
    );
    caller.expect_pass(&node);
    callee.expect_pass(&node);
    let cdr = wait_for("the CDR", UI_WAIT, || {
        node.cli_ok(&["cdr", "--limit", "1"])
            .lines()
            .next()
            .map(str::to_owned)
    });
    assert!(cdr.contains("hangup=system"), "{cdr}");
    assert!(cdr.contains("\tanswered\t"), "{cdr}");

    // The history lists it.
    browser.click_on("nav a[href='#/history']", UI_WAIT);
    let row = browser.wait_for("#cdr-table tr[data-cdr-id]", UI_WAIT);
    let text = browser.text(&row);
    assert!(
        text.contains(CALLER) && text.contains(NEW_EXTENSION) && text.contains("system"),
        "{text}"
    );
    let csv = browser.wait_for("#cdr-csv", UI_WAIT);
    assert!(browser
        .attribute(&csv, "href")
        .unwrap_or_default()
        .contains("format=csv"));
    browser.screenshot(&shots.join("panel-history.png"));

    // Back on the dashboard: the registration and today's call are counted, and the
    // chart has its bar.
    browser.click_on("nav a[href='#/dashboard']", UI_WAIT);
    for (id, want) in [
        ("#stat-registrations", "1"),
        ("#stat-today", "1"),
        ("#stat-calls", "0"),
    ] {
        let stat = browser.wait_for(id, UI_WAIT);
        wait_for(id, UI_WAIT, || (browser.text(&stat) == want).then_some(()));
    }
    browser.wait_for("#calls-chart rect.bar[height]:not([height='0'])", UI_WAIT);
    browser.screenshot(&shots.join("panel-dashboard.png"));

    // Logging out goes back to the login form.
    browser.click_on("#logout", UI_WAIT);
    browser.wait_for("#login-form", UI_WAIT);

    drop(browser);
    node.assert_no_panic();
    node.stop();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the browser test took {:?}",
        started.elapsed()
    );
}
