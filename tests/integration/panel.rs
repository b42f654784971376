//! The web panel in headless Chromium against `ringfort serve`: an admin made with
//! `ringfort admin add` logs in, adds an extension and reads its generated password off
//! the page, a SIPp phone registers with it and shows up on the registrations page
//! without a reload (the live feed), a SIPp call shows up on the live calls page and is
//! hung up with its button (BYE to both SIPps, CDR hangup=system), and the history
//! lists it; on the dialplan page a broken line is refused on Save with its line, and
//! the fixed file saves. Screenshots of each page go to `<target dir>/screenshots/panel-*.png`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::browser::Browser;
use crate::support::{free_port, wait_for, Node, NodeOptions, Sipp, SippTransport};

const CALLER: &str = "1001";
const CALLER_PASSWORD: &str = "panel-caller-pass";
const NEW_EXTENSION: &str = "2001";
/// The dialplan the page edits; line 8 is the route's steps.
const PLAN: &str = "[defaults]\ncontext = \"internal\"\n\n[context.internal]\n\n\
                    [[context.internal.route]]\nmatch = \"_2XXX\"\n\
                    steps = [{ dial = \"${EXTEN}\", timeout = 20 }]\n";
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

    // Back on the dashboard: the registration and today's call are counted, the calls
    // per hour chart has its bar, and the concurrent calls and registrations charts
    // their lines.
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
    // The sample lines: the node's sample at start, ended by the live counts.
    browser.wait_for("#concurrent-chart path.line", UI_WAIT);
    browser.wait_for("#registrations-chart path.line", UI_WAIT);
    browser.screenshot(&shots.join("panel-dashboard.png"));

    // The dialplan page: a file whose line 8 gets a step that does not exist is refused
    // on Save with that line (the file on disk unchanged); the error moves the caret
    // there; the fixed text saves and the node reloads it.
    let plan_file = node.dir.path().join("dialplans").join("main.toml");
    std::fs::create_dir_all(plan_file.parent().expect("folder")).expect("dialplans folder");
    std::fs::write(&plan_file, PLAN).expect("plan file");
    browser.click_on("nav a[href='#/dialplan']", UI_WAIT);
    browser.wait_for(
        "#plan-files button[data-file='main.toml'][aria-current]",
        UI_WAIT,
    );
    browser.wait_for("#plan-text", UI_WAIT);
    assert_eq!(
        browser.eval(
            "return document.getElementById('plan-text').value;",
            json!([])
        ),
        json!(PLAN)
    );
    // Set as a paste would (typing a whole file key by key only slows the test down).
    let set_text = |text: &str| {
        browser.eval(
            "const t = document.getElementById('plan-text'); t.value = arguments[0]; \
             t.dispatchEvent(new Event('input'));",
            json!([text]),
        );
    };
    let broken = PLAN.replace(
        "steps = [{ dial = \"${EXTEN}\", timeout = 20 }]",
        "steps = [{ juggle = true }]",
    );
    assert_ne!(broken, PLAN);
    set_text(&broken);
    browser.click_on("#plan-save", UI_WAIT);
    let error = browser.wait_for(
        "#plan-errors button[data-file='main.toml'][data-line='8']",
        UI_WAIT,
    );
    let shown = browser.text(&error);
    assert!(shown.starts_with("main.toml:8: "), "{shown}");
    assert_eq!(
        std::fs::read_to_string(&plan_file).expect("plan file"),
        PLAN,
        "nothing saved"
    );
    browser.click(&error);
    let caret = browser.wait_for("#plan-caret", UI_WAIT);
    wait_for("the caret on line 8", UI_WAIT, || {
        browser.text(&caret).starts_with("Line 8 of").then_some(())
    });
    assert_eq!(
        browser.eval("return document.activeElement.id;", json!([])),
        json!("plan-text")
    );
    browser.screenshot(&shots.join("panel-dialplan.png"));
    let fixed = PLAN.replace("timeout = 20", "timeout = 25");
    assert_ne!(fixed, PLAN);
    set_text(&fixed);
    browser.click_on("#plan-save", UI_WAIT);
    let ok = browser.wait_for("#plan-ok", UI_WAIT);
    assert!(
        browser.text(&ok).contains("1 route"),
        "{}",
        browser.text(&ok)
    );
    browser.wait_gone("#plan-errors", UI_WAIT);
    assert_eq!(
        std::fs::read_to_string(&plan_file).expect("plan file"),
        fixed
    );

    // Settings: this node's facts, the cluster (alone here) and the configuration it
    // runs with, the database URL without a password.
    browser.click_on("nav a[href='#/settings']", UI_WAIT);
    let facts = browser.wait_for("#node-facts", UI_WAIT);
    assert!(
        browser.text(&facts).contains("test1"),
        "{}",
        browser.text(&facts)
    );
    browser.wait_for("#cluster-nodes", UI_WAIT);
    let sip = browser.wait_for("#config-sip", UI_WAIT);
    assert!(
        browser.text(&sip).contains("udp_listen"),
        "{}",
        browser.text(&sip)
    );
    browser.screenshot(&shots.join("panel-settings.png"));

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
