//! The web panel in headless Chromium against `ringfort serve`: an admin made with
//! `ringfort admin add` logs in, adds an extension and reads its generated password off
//! the page, a SIPp phone registers with it and shows up on the registrations page
//! without a reload (the live feed), a SIPp call shows up on the live calls page and is
//! hung up with its button (BYE to both SIPps, CDR hangup=system), and the history
//! lists it; on the dialplan page a broken line is refused on Save with its line, and
//! the fixed file saves. Two SIPp callers leave voicemail for the new extension while the
//! Voicemail page is open: the messages appear without a reload, one plays in the page
//! (to its end, as long as the message) and is marked heard, then is deleted. The user
//! login the admin made for that extension on the extensions page gets the self-service
//! page, sees the other message and turns do-not-disturb on. Screenshots of each page go to
//! `<target dir>/screenshots/panel-*.png`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::browser::Browser;
use crate::support::{free_port, talking_caller, wait_for, Node, NodeOptions, Sipp, SippTransport};

const CALLER: &str = "1001";
const CALLER_PASSWORD: &str = "panel-caller-pass";
const NEW_EXTENSION: &str = "2001";
/// Callers of this number leave a message in [`NEW_EXTENSION`]'s mailbox.
const VOICEMAIL_NUMBER: &str = "8001";
/// The dialplan the page edits; line 8 is the first route's steps.
const PLAN: &str = "[defaults]\ncontext = \"internal\"\n\n[context.internal]\n\n\
                    [[context.internal.route]]\nmatch = \"_2XXX\"\n\
                    steps = [{ dial = \"${EXTEN}\", timeout = 20 }]\n\n\
                    [[context.internal.route]]\nmatch = \"8001\"\n\
                    steps = [{ voicemail = \"2001\", greeting = \"none\" }]\n";
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
        // The voicemail app plays its beep from the shipped sounds; calls are recorded,
        // for the recordings page.
        extra: format!(
            "[media]\nrtp_port_min = 40000\nrtp_port_max = 40998\n\n[paths]\nsounds = \"{}\"\n\n\
             [calls]\nrecord = \"mixed\"\n",
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("sounds")
                .display()
        ),
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

    // A wrong password is refused.
    let field = browser.wait_for("#login-name", UI_WAIT);
    browser.type_into(&field, "root");
    let field = browser.wait_for("#login-password", UI_WAIT);
    browser.type_into(&field, "wrong password!");
    browser.click_on("#login-form button[type=submit]", UI_WAIT);
    let error = browser.wait_for("#login-error", UI_WAIT);
    let refused = wait_for("the login error", UI_WAIT, || {
        Some(browser.text(&error)).filter(|t| !t.is_empty())
    });
    assert_eq!(refused, "Wrong name or password.");

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
    // A self-service login for the extension's user; its password is shown once.
    let login = browser.wait_for(&format!("#login-{NEW_EXTENSION}"), UI_WAIT);
    browser.type_into(&login, "desk");
    browser.type_into(&login, "\u{E007}");
    let shown = browser.wait_for("#ext-login-password", UI_WAIT);
    let desk_password = browser.text(&shown);
    assert_eq!(desk_password.len(), 20, "{desk_password:?}");
    assert!(node
        .cli_ok(&["admin", "list"])
        .contains(&format!("desk\tuser\textension={NEW_EXTENSION}\t")));

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

    // Recordings: the call hung up above was recorded; it plays in the page and is
    // deleted (the call stays in the history).
    browser.click_on("nav a[href='#/recordings']", UI_WAIT);
    let callee_cell = browser.wait_for("#rec-table tr td:nth-child(3)", UI_WAIT);
    assert_eq!(browser.text(&callee_cell), NEW_EXTENSION);
    browser.click_on("#rec-table button.play", UI_WAIT);
    browser.wait_for("#rec-audio", UI_WAIT);
    wait_for("the recording to play", UI_WAIT, || {
        let v = browser.eval(
            "const a = document.getElementById('rec-audio'); \
             return a && a.duration > 0 && (a.currentTime > 0 || a.ended) ? a.duration : null;",
            json!([]),
        );
        v.as_f64()
    });
    browser.screenshot(&shots.join("panel-recordings.png"));
    browser.eval("window.confirm = () => true; return null;", json!([]));
    browser.click_on("#rec-table button.delete", UI_WAIT);
    browser.wait_for("#rec-table td.empty", UI_WAIT);

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
        browser.text(&ok).contains("2 routes"),
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

    // Voicemail: two callers leave messages for the new extension while its mailbox is
    // open; they show up without a reload.
    browser.click_on("nav a[href='#/voicemail']", UI_WAIT);
    browser.wait_for("#vm-mailbox", UI_WAIT);
    browser.eval(
        "const s = document.getElementById('vm-mailbox'); s.value = arguments[0]; \
         s.dispatchEvent(new Event('change'));",
        json!([NEW_EXTENSION]),
    );
    let caption = browser.wait_for("#vm-table caption", UI_WAIT);
    wait_for("the mailbox shown", UI_WAIT, || {
        browser
            .text(&caption)
            .starts_with(&format!("Mailbox {NEW_EXTENSION}: 0 new"))
            .then_some(())
    });
    browser.eval("window.stillTheSamePage = true;", json!([]));
    // The beep takes a second of each call: these leave about 3 s and 2 s.
    let mut callers: Vec<_> = [4000, 3000]
        .into_iter()
        .map(|ms| {
            talking_caller(
                &node,
                CALLER,
                CALLER_PASSWORD,
                VOICEMAIL_NUMBER,
                Duration::from_millis(ms),
            )
            .spawn(&node)
        })
        .collect();
    for c in &mut callers {
        c.expect_pass(&node);
    }
    let new_rows = "#vm-table tr[data-message-id][data-folder='new']";
    wait_for("two new messages on the page", UI_WAIT, || {
        let n = browser.eval(
            "return document.querySelectorAll(arguments[0]).length;",
            json!([new_rows]),
        );
        (n == json!(2)).then_some(())
    });
    assert_eq!(
        browser.eval("return window.stillTheSamePage === true;", json!([])),
        json!(true),
        "the messages came without a reload"
    );
    browser.screenshot(&shots.join("panel-voicemail.png"));
    // `voicemail list`: id, folder, caller, received, length in ms, file; new first, each
    // folder oldest first.
    let listed = |node: &Node| -> Vec<Vec<String>> {
        node.cli_ok(&["voicemail", "list", NEW_EXTENSION])
            .lines()
            .map(|l| l.split('\t').map(str::to_owned).collect())
            .collect()
    };
    let messages = listed(&node);
    assert_eq!(messages.len(), 2, "{messages:?}");
    let (played, kept) = (messages[0][0].clone(), messages[1][0].clone());
    let length_ms: f64 = messages[0][4].parse().expect("length in ms");
    assert!(length_ms > 1000.0, "{messages:?}");

    // Play the first in the page: it plays to its end, its length is the message's, and
    // playing marks it heard.
    browser.eval(
        "const a = document.getElementById('vm-audio'); \
         window.vmPlayed = { ended: false, furthest: 0 }; \
         a.addEventListener('timeupdate', () => { \
           window.vmPlayed.furthest = Math.max(window.vmPlayed.furthest, a.currentTime); }); \
         a.addEventListener('ended', () => { window.vmPlayed.ended = true; });",
        json!([]),
    );
    let row = format!("#vm-table tr[data-message-id='{played}']");
    browser.click_on(&format!("{row} button.vm-play"), UI_WAIT);
    wait_for("the message played to its end", UI_WAIT, || {
        (browser.eval("return window.vmPlayed.ended;", json!([])) == json!(true)).then_some(())
    });
    let heard = browser.eval(
        "const a = document.getElementById('vm-audio'); \
         return [a.duration, window.vmPlayed.furthest, a.dataset.messageId];",
        json!([]),
    );
    let duration = heard[0].as_f64().expect("duration");
    let furthest = heard[1].as_f64().expect("furthest");
    assert!(
        (duration - length_ms / 1000.0).abs() < 0.5,
        "the player's {duration} s against the message's {length_ms} ms"
    );
    assert!(
        furthest > duration - 0.5,
        "played to {furthest} of {duration} s"
    );
    assert_eq!(heard[2], json!(played));
    browser.wait_for(&format!("{row}[data-folder='old']"), UI_WAIT);
    wait_for("heard, as the CLI sees it", UI_WAIT, || {
        listed(&node)
            .iter()
            .any(|m| m[0] == played && m[1] == "old")
            .then_some(())
    });
    browser.screenshot(&shots.join("panel-voicemail-played.png"));
    // Delete it (confirmed).
    browser.eval("window.confirm = () => true;", json!([]));
    browser.click_on(&format!("{row} button.vm-delete"), UI_WAIT);
    browser.wait_gone(&row, UI_WAIT);
    let left = listed(&node);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0][0], kept);

    // Logging out goes back to the login form.
    browser.click_on("#logout", UI_WAIT);
    browser.wait_for("#login-form", UI_WAIT);

    // The user owning the extension: the self-service page only, with their voicemail;
    // do-not-disturb from its checkbox.
    let field = browser.wait_for("#login-name", UI_WAIT);
    browser.clear(&field);
    browser.type_into(&field, "desk");
    let field = browser.wait_for("#login-password", UI_WAIT);
    browser.clear(&field);
    browser.type_into(&field, &desk_password);
    browser.click_on("#login-form button[type=submit]", UI_WAIT);
    browser.wait_for(
        &format!("#vm-table tr[data-message-id='{kept}'][data-folder='new']"),
        UI_WAIT,
    );
    assert_eq!(
        browser.eval(
            "return document.querySelector('#top nav').hidden;",
            json!([])
        ),
        json!(true),
        "no admin pages for a user"
    );
    browser.click_on("#me-dnd", UI_WAIT);
    wait_for("DND on from self-service", UI_WAIT, || {
        node.extension_line(NEW_EXTENSION)
            .contains("\tdnd")
            .then_some(())
    });
    browser.screenshot(&shots.join("panel-selfservice.png"));
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
