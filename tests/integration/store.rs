//! The store battery: every test runs on a fresh SQLite file in a temp dir AND on
//! PostgreSQL (`store::sqlite::<name>`, `store::postgres::<name>`).
//!
//! PostgreSQL: `postgres://postgres@127.0.0.1:5432/test` (override with
//! `RINGFORT_TEST_PG_URL`); each test gets its own schema (random name, set as the
//! connection's search_path) and drops it afterwards. If the server is unreachable the
//! PostgreSQL tests FAIL, telling how to start it: `sudo scripts/pg-test-setup.sh`.

use std::future::Future;

use ringfort::store::{
    ActiveCall, AdminAccount, Backend, Binding, Cdr, CdrFilter, Extension, ExtensionRouting,
    GreetingKind, NodeHeartbeat, Store, StoreError, VoicemailCounts, VoicemailFolder,
    VoicemailMessage,
};
// `Executor::execute`, not `RawSql::execute`: the latter's future is not provably `Send`.
use sqlx::{Connection, Executor};

const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// What a test gets: a migrated store, and the URL to open more stores on the same data.
struct Ctx {
    store: Store,
    url: String,
}

async fn open(url: &str) -> Store {
    match Store::connect(url, 4).await {
        Ok(s) => s,
        Err(e) => panic!("Store::connect({url}): {e}"),
    }
}

async fn run_test<F, Fut>(url: String, f: F)
where
    F: FnOnce(Ctx) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    // Run in a task so a failing test still lets the caller clean up.
    let res = tokio::spawn(async move {
        let store = open(&url).await;
        let applied = store.migrate().await.expect("first migrate");
        assert_eq!(
            applied,
            vec![
                "0001_init".to_owned(),
                "0002_calls".to_owned(),
                "0003_recordings".to_owned(),
                "0004_admin".to_owned(),
                "0005_extension_routing".to_owned(),
                "0006_voicemail".to_owned(),
                "0007_cluster".to_owned(),
                "0008_cluster_secret".to_owned(),
                "0009_node_samples".to_owned(),
                "0010_account_extension".to_owned(),
                "0011_vip_handover".to_owned(),
                "0012_node_calls".to_owned()
            ]
        );
        f(Ctx {
            store: store.clone(),
            url,
        })
        .await;
        store.close().await;
    })
    .await;
    if let Err(e) = res {
        match e.try_into_panic() {
            Ok(payload) => std::panic::resume_unwind(payload),
            Err(e) => panic!("test task failed: {e}"),
        }
    }
}

async fn on_sqlite<F, Fut>(f: F)
where
    F: FnOnce(Ctx) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::tempdir().expect("tempdir");
    // A missing parent dir: connect must create it.
    let file = dir.path().join("data").join("ringfort.db");
    let url = format!("sqlite://{}?mode=rwc", file.display());
    run_test(url, f).await;
    assert!(file.exists(), "the SQLite file was created");
}

fn pg_base_url() -> String {
    std::env::var("RINGFORT_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned())
}

async fn on_postgres<F, Fut>(f: F)
where
    F: FnOnce(Ctx) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let base = pg_base_url();
    let mut admin = match sqlx::PgConnection::connect(&base).await {
        Ok(c) => c,
        Err(e) => panic!(
            "\n\nPostgreSQL is unreachable at {base}: {e}\n\
             The store tests need it. Start and prepare it (idempotent) with:\n\
             \n    sudo scripts/pg-test-setup.sh\n\n\
             (starts cluster 15/main, sets trust auth for 127.0.0.1 and ::1, creates the \
             database `test`), or point RINGFORT_TEST_PG_URL at another server.\n"
        ),
    };
    let schema = format!("rf_test_{:016x}", rand::random::<u64>());
    admin
        .execute(sqlx::raw_sql(&format!("CREATE SCHEMA {schema}")))
        .await
        .expect("create test schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    let res = tokio::spawn(run_test(url, f)).await;
    admin
        .execute(sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE")))
        .await
        .expect("drop test schema");
    let _ = admin.close().await;
    if let Err(e) = res {
        match e.try_into_panic() {
            Ok(payload) => std::panic::resume_unwind(payload),
            Err(e) => panic!("test task failed: {e}"),
        }
    }
}

/// Run raw SQL on the test database, bypassing the store (for corrupting/inspecting).
async fn raw_exec(url: &str, sql: &str) {
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url)
            .await
            .expect("raw sqlite");
        c.execute(sqlx::raw_sql(sql)).await.expect(sql);
        let _ = c.close().await;
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.expect("raw pg");
        c.execute(sqlx::raw_sql(sql)).await.expect(sql);
        let _ = c.close().await;
    }
}

/// Each listed async fn becomes `sqlite::<name>` and `postgres::<name>`.
macro_rules! battery {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::on_sqlite(super::$name).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::on_postgres(super::$name).await
                }
            )*
        }
    };
}

battery!(
    backend_is_reported,
    migrate_twice_is_a_noop,
    newer_schema_is_refused,
    extension_add_get_list_remove,
    extensions_read_page_by_page_and_fingerprinted,
    extension_conflict_and_validation,
    extension_update_secret,
    extension_routing,
    bindings_add_replace_clear,
    bindings_replace_is_atomic_on_error,
    bindings_unknown_aor,
    bindings_survive_reconnect,
    bindings_fields_round_trip,
    bindings_delete_expired,
    bindings_cascade_on_remove,
    bindings_concurrent_replace_same_aor,
    bindings_batch_replace,
    calls_start_answer_finish,
    calls_left_by_a_crash_become_cdrs,
    admins_sessions_and_tokens,
    admin_api_pages_and_filters,
    voicemail_messages_and_counts,
    voicemail_boxes_pin_and_greetings,
    cluster_node_heartbeats,
    vip_lease_acquire_renew_release,
    vip_lease_expires_by_the_database_clock,
    vip_lease_concurrent_acquirers_one_wins,
    cluster_secret_is_written_once,
    vip_lease_handover_to_a_named_node,
);

// ---- helpers ----

fn ext(number: &str) -> Extension {
    Extension {
        number: number.to_owned(),
        display_name: format!("User {number}"),
        realm: "pbx.example".to_owned(),
        ha1_md5: format!("{:0>32}", number),
        ha1_sha256: format!("{:0>64}", number),
        created_at: 1_700_000_000,
        updated_at: 1_700_000_000,
        routing: ExtensionRouting::default(),
    }
}

/// A UDP binding of `aor` with contact `key`, node `node-a`.
pub(crate) fn binding(aor: &str, key: &str, expires_at: i64) -> Binding {
    Binding {
        aor: aor.to_owned(),
        binding_key: key.to_owned(),
        contact_uri: key.to_owned(),
        q: None,
        expires_at,
        call_id: format!("cid-{key}"),
        cseq: 1,
        received: "192.0.2.10:5060".to_owned(),
        transport: "udp".to_owned(),
        local_addr: "198.51.100.1:5060".to_owned(),
        flow: None,
        path: Vec::new(),
        user_agent: String::new(),
        instance_id: None,
        reg_id: None,
        node_id: "node-a".to_owned(),
        updated_at: 1_700_000_000,
    }
}

fn keys(bs: &[Binding]) -> Vec<&str> {
    bs.iter().map(|b| b.binding_key.as_str()).collect()
}

// ---- the battery ----

async fn backend_is_reported(cx: Ctx) {
    let expected = if cx.url.starts_with("sqlite:") {
        Backend::Sqlite
    } else {
        Backend::Postgres
    };
    assert_eq!(cx.store.backend(), expected);
}

async fn migrate_twice_is_a_noop(cx: Ctx) {
    assert_eq!(
        cx.store.migrate().await.expect("second migrate"),
        Vec::<String>::new()
    );
    // Another store (another process/node) on the same database: still nothing to do.
    let other = open(&cx.url).await;
    assert_eq!(
        other.migrate().await.expect("migrate again"),
        Vec::<String>::new()
    );
    other.close().await;
    // And the data written between is untouched.
    cx.store.add_extension(&ext("100")).await.expect("add");
    assert_eq!(
        cx.store.migrate().await.expect("third migrate"),
        Vec::<String>::new()
    );
    assert!(cx.store.get_extension("100").await.expect("get").is_some());
}

async fn newer_schema_is_refused(cx: Ctx) {
    raw_exec(
        &cx.url,
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, 'future', 0)",
    )
    .await;
    match cx.store.migrate().await {
        Err(StoreError::NewerSchema {
            db_version: 9999,
            binary_version: 12,
        }) => {}
        other => panic!("expected NewerSchema, got {other:?}"),
    }
}

async fn extension_add_get_list_remove(cx: Ctx) {
    let s = &cx.store;
    assert_eq!(s.list_extensions().await.expect("list"), vec![]);
    assert_eq!(s.get_extension("100").await.expect("get"), None);
    for n in ["u100000", "20", "100", "B", "a"] {
        s.add_extension(&ext(n)).await.expect("add");
    }
    let got = s.get_extension("100").await.expect("get").expect("exists");
    assert_eq!(got, ext("100"));
    let numbers: Vec<String> = s
        .list_extensions()
        .await
        .expect("list")
        .into_iter()
        .map(|e| e.number)
        .collect();
    // Bytewise order on both backends (PostgreSQL columns are COLLATE "C").
    assert_eq!(numbers, ["100", "20", "B", "a", "u100000"]);
    assert!(s.remove_extension("20").await.expect("remove"));
    assert!(!s.remove_extension("20").await.expect("remove again"));
    assert_eq!(s.get_extension("20").await.expect("get"), None);
    assert_eq!(s.list_extensions().await.expect("list").len(), 4);
}

/// More extensions than a page: the whole list comes in number order with none missed
/// or repeated at the page seams; the fingerprint moves with every add, change and
/// removal, and stays when nothing changed.
async fn extensions_read_page_by_page_and_fingerprinted(cx: Ctx) {
    let s = &cx.store;
    assert_eq!(s.extensions_fingerprint().await.expect("fp"), (0, 0, 0));
    let mut want: Vec<String> = (0..2_345).map(|i| format!("{}", 10_000 + i)).collect();
    for n in &want {
        s.add_extension(&ext(n)).await.expect("add");
    }
    want.sort();
    let got: Vec<String> = s
        .list_extensions()
        .await
        .expect("list")
        .into_iter()
        .map(|e| e.number)
        .collect();
    assert_eq!(got, want);
    let page = s.extensions_after("10999", 10).await.expect("page");
    let numbers: Vec<&str> = page.iter().map(|e| e.number.as_str()).collect();
    assert_eq!(
        numbers,
        [
            "11000", "11001", "11002", "11003", "11004", "11005", "11006", "11007", "11008",
            "11009"
        ]
    );
    assert!(s
        .extensions_after("12344", 10)
        .await
        .expect("end")
        .is_empty());

    let fp = s.extensions_fingerprint().await.expect("fp");
    assert_eq!(fp, (2_345, 1_700_000_000, 2_345 * 1_700_000_000));
    assert_eq!(
        s.extensions_fingerprint().await.expect("fp"),
        fp,
        "nothing changed"
    );
    s.add_extension(&ext("99")).await.expect("add");
    let added = s.extensions_fingerprint().await.expect("fp");
    assert_ne!(added, fp, "an add");
    assert!(s
        .set_extension_routing(
            "10000",
            &ExtensionRouting {
                dnd: true,
                ..ExtensionRouting::default()
            }
        )
        .await
        .expect("routing"));
    let changed = s.extensions_fingerprint().await.expect("fp");
    assert_ne!(changed, added, "a change");
    assert!(s.remove_extension("10001").await.expect("remove"));
    let removed = s.extensions_fingerprint().await.expect("fp");
    assert_ne!(removed, changed, "a removal");
    assert_eq!(removed.0, 2_345);
}

async fn extension_conflict_and_validation(cx: Ctx) {
    let s = &cx.store;
    s.add_extension(&ext("100")).await.expect("add");
    let mut dup = ext("100");
    dup.display_name = "Someone else".into();
    match s.add_extension(&dup).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("expected Conflict, got {other:?}"),
    }
    // The original is untouched.
    assert_eq!(
        s.get_extension("100").await.expect("get").expect("exists"),
        ext("100")
    );
    for bad in ["", "a b", "x@y", &"9".repeat(33)] {
        match s.add_extension(&ext(bad)).await {
            Err(StoreError::Invalid(_)) => {}
            other => panic!("expected Invalid for {bad:?}, got {other:?}"),
        }
    }
    assert_eq!(s.list_extensions().await.expect("list").len(), 1);
}

async fn extension_update_secret(cx: Ctx) {
    let s = &cx.store;
    s.add_extension(&ext("100")).await.expect("add");
    let md5 = "0123456789abcdef0123456789abcdef";
    let sha = "f".repeat(64);
    assert!(s
        .update_extension_secret("100", "new.realm", md5, &sha)
        .await
        .expect("update"));
    let got = s.get_extension("100").await.expect("get").expect("exists");
    assert_eq!(got.realm, "new.realm");
    assert_eq!(got.ha1_md5, md5);
    assert_eq!(got.ha1_sha256, sha);
    assert_eq!(got.created_at, 1_700_000_000);
    assert!(got.updated_at > 1_700_000_000, "updated_at moves to now");
    assert_eq!(got.display_name, "User 100");
    assert!(!s
        .update_extension_secret("nobody", "r", md5, &sha)
        .await
        .expect("update unknown"));
}

async fn extension_routing(cx: Ctx) {
    let s = &cx.store;
    // A new extension has no DND and no forwarding (the migration's defaults).
    s.add_extension(&ext("100")).await.expect("add");
    let got = s.get_extension("100").await.expect("get").expect("exists");
    assert_eq!(got.routing, ExtensionRouting::default());
    // Added with routing: stored as given.
    let mut e = ext("101");
    e.routing = ExtensionRouting {
        dnd: true,
        forward_always: None,
        forward_busy: Some("200".into()),
        forward_noanswer: Some("300".into()),
    };
    s.add_extension(&e).await.expect("add with routing");
    assert_eq!(s.get_extension("101").await.expect("get"), Some(e.clone()));
    // Set, then cleared.
    let r = ExtensionRouting {
        dnd: true,
        forward_always: Some("101".into()),
        forward_busy: Some("u100000".into()),
        forward_noanswer: None,
    };
    assert!(s.set_extension_routing("100", &r).await.expect("set"));
    let got = s.get_extension("100").await.expect("get").expect("exists");
    assert_eq!(got.routing, r);
    assert!(got.updated_at > 1_700_000_000, "updated_at moves to now");
    assert_eq!(got.ha1_md5, ext("100").ha1_md5, "secrets untouched");
    let listed = s.list_extensions().await.expect("list");
    assert_eq!(listed[0].routing, r);
    assert_eq!(listed[1].routing, e.routing);
    let page = s.list_extensions_page(10, 0).await.expect("page");
    assert_eq!(page[0].routing, r);
    assert!(s
        .set_extension_routing("100", &ExtensionRouting::default())
        .await
        .expect("clear"));
    let got = s.get_extension("100").await.expect("get").expect("exists");
    assert_eq!(got.routing, ExtensionRouting::default());
    assert!(!s
        .set_extension_routing("nobody", &r)
        .await
        .expect("set unknown"));
}

async fn bindings_add_replace_clear(cx: Ctx) {
    let s = &cx.store;
    s.add_extension(&ext("100")).await.expect("add");
    s.add_extension(&ext("200")).await.expect("add");
    assert_eq!(s.count_bindings().await.expect("count"), 0);

    let a = binding("100", "sip:100@192.0.2.10:5060", 2_000_000_000);
    let b = binding("100", "sip:100@192.0.2.11:5060", 2_000_000_000);
    let other = binding("200", "sip:200@192.0.2.20:5060", 2_000_000_000);
    s.replace_bindings("200", std::slice::from_ref(&other))
        .await
        .expect("replace 200");
    s.replace_bindings("100", &[b.clone(), a.clone()])
        .await
        .expect("add two");
    assert_eq!(
        s.bindings_for("100").await.expect("for"),
        vec![a.clone(), b.clone()]
    );
    assert_eq!(s.count_bindings().await.expect("count"), 3);

    // Replace: exactly the new set, refreshed values included.
    let mut a2 = a.clone();
    a2.cseq = 2;
    a2.expires_at = 2_000_000_100;
    let c = binding("100", "sip:100@192.0.2.12:5060", 2_000_000_000);
    s.replace_bindings("100", &[a2.clone(), c.clone()])
        .await
        .expect("replace");
    assert_eq!(
        s.bindings_for("100").await.expect("for"),
        vec![a2.clone(), c.clone()]
    );

    let all = s.all_bindings().await.expect("all");
    assert_eq!(keys(&all), keys(&[a2, c, other.clone()]));

    // Clear.
    s.replace_bindings("100", &[]).await.expect("clear");
    assert_eq!(s.bindings_for("100").await.expect("for"), vec![]);
    assert_eq!(s.all_bindings().await.expect("all"), vec![other]);
    assert_eq!(s.count_bindings().await.expect("count"), 1);
}

async fn bindings_replace_is_atomic_on_error(cx: Ctx) {
    let s = &cx.store;
    s.add_extension(&ext("100")).await.expect("add");
    let a = binding("100", "k1", 2_000_000_000);
    s.replace_bindings("100", std::slice::from_ref(&a))
        .await
        .expect("replace");
    // Duplicate key in the new set: Conflict, and the old set stays.
    let dup = [binding("100", "k2", 1), binding("100", "k2", 2)];
    match s.replace_bindings("100", &dup).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(s.bindings_for("100").await.expect("for"), vec![a.clone()]);
    // A binding for another AOR in the set: refused before touching the database.
    match s
        .replace_bindings("100", &[binding("100", "k3", 1), binding("200", "k4", 1)])
        .await
    {
        Err(StoreError::Invalid(_)) => {}
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert_eq!(s.bindings_for("100").await.expect("for"), vec![a]);
}

async fn bindings_unknown_aor(cx: Ctx) {
    let s = &cx.store;
    match s
        .replace_bindings("404", &[binding("404", "k", 2_000_000_000)])
        .await
    {
        Err(StoreError::UnknownExtension(aor)) => assert_eq!(aor, "404"),
        other => panic!("expected UnknownExtension, got {other:?}"),
    }
    // Clearing an unknown AOR is a no-op, not an error (an unREGISTER race with removal).
    s.replace_bindings("404", &[]).await.expect("clear unknown");
    assert_eq!(s.bindings_for("404").await.expect("for"), vec![]);
    assert_eq!(s.count_bindings().await.expect("count"), 0);
}

async fn bindings_survive_reconnect(cx: Ctx) {
    s_add_with_bindings(&cx.store).await;
    let before = cx.store.all_bindings().await.expect("all");
    cx.store.close().await;
    let again = open(&cx.url).await;
    assert_eq!(
        again.migrate().await.expect("migrate"),
        Vec::<String>::new()
    );
    assert_eq!(again.all_bindings().await.expect("all"), before);
    assert_eq!(again.count_bindings().await.expect("count"), 2);
    again.close().await;
}

async fn s_add_with_bindings(s: &Store) {
    s.add_extension(&ext("100")).await.expect("add");
    let mut b = binding("100", "k1", 2_000_000_000);
    b.path = vec!["<sip:edge.example;lr>".into()];
    s.replace_bindings("100", &[b, binding("100", "k2", 2_000_000_001)])
        .await
        .expect("replace");
}

async fn bindings_fields_round_trip(cx: Ctx) {
    let s = &cx.store;
    s.add_extension(&ext("u100000")).await.expect("add");
    let full = Binding {
        aor: "u100000".into(),
        binding_key: "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>;reg-id=1".into(),
        contact_uri: "<sip:u100000@192.0.2.10:5061;transport=tls;ob>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";reg-id=1".into(),
        q: Some(0.7),
        expires_at: 4_102_444_800,
        call_id: "a84b4c76e66710@pc33.atlanta.example".into(),
        cseq: u32::MAX,
        received: "[2001:db8::10]:50123".into(),
        transport: "tls".into(),
        local_addr: "[2001:db8::1]:5061".into(),
        flow: Some("flow-7f3a;conn=42".into()),
        path: vec![
            "<sip:p1.example.com;lr>".into(),
            "\"Edge, Inc\" <sip:p2.example.com;lr>".into(),
            "<sip:back\\slash;lr>".into(),
            "é ünïcode".into(),
        ],
        user_agent: "Ringfort-Test/1.0 (\"quoted\", commas)".into(),
        instance_id: Some("<urn:uuid:00000000-0000-1000-8000-000A95A0E128>".into()),
        reg_id: Some(u32::MAX),
        node_id: "node-b".into(),
        updated_at: 1_700_000_123,
    };
    let mut bare = binding("u100000", "sip:u100000@192.0.2.99", 1);
    bare.q = Some(1.0);
    bare.cseq = 0;
    bare.reg_id = Some(0);
    let none = binding("u100000", "sip:u100000@192.0.2.98", 1);
    s.replace_bindings("u100000", &[full.clone(), bare.clone(), none.clone()])
        .await
        .expect("replace");
    let got = s.bindings_for("u100000").await.expect("for");
    assert_eq!(got, vec![full, none, bare]);
}

async fn bindings_delete_expired(cx: Ctx) {
    let s = &cx.store;
    s.add_extension(&ext("100")).await.expect("add");
    s.add_extension(&ext("200")).await.expect("add");
    s.replace_bindings(
        "100",
        &[
            binding("100", "a", 100),
            binding("100", "b", 200),
            binding("100", "c", 300),
        ],
    )
    .await
    .expect("replace");
    s.replace_bindings("200", &[binding("200", "d", 150)])
        .await
        .expect("replace");
    assert_eq!(s.delete_expired_bindings(99).await.expect("gc"), 0);
    // expires_at <= now is expired.
    assert_eq!(s.delete_expired_bindings(200).await.expect("gc"), 3);
    assert_eq!(keys(&s.all_bindings().await.expect("all")), ["c"]);
    assert_eq!(s.count_bindings().await.expect("count"), 1);
    assert_eq!(s.delete_expired_bindings(200).await.expect("gc"), 0);
}

async fn bindings_cascade_on_remove(cx: Ctx) {
    let s = &cx.store;
    s.add_extension(&ext("100")).await.expect("add");
    s.add_extension(&ext("200")).await.expect("add");
    s.replace_bindings(
        "100",
        &[
            binding("100", "a", 2_000_000_000),
            binding("100", "b", 2_000_000_000),
        ],
    )
    .await
    .expect("replace");
    s.replace_bindings("200", &[binding("200", "c", 2_000_000_000)])
        .await
        .expect("replace");
    assert!(s.remove_extension("100").await.expect("remove"));
    assert_eq!(s.bindings_for("100").await.expect("for"), vec![]);
    assert_eq!(keys(&s.all_bindings().await.expect("all")), ["c"]);
    assert_eq!(s.count_bindings().await.expect("count"), 1);
}

async fn bindings_concurrent_replace_same_aor(cx: Ctx) {
    let s = cx.store.clone();
    s.add_extension(&ext("100")).await.expect("add");
    let set_a: Vec<Binding> = ["a1", "a2", "shared"]
        .iter()
        .map(|k| binding("100", k, 2_000_000_000))
        .collect();
    let mut set_b: Vec<Binding> = ["b1", "b2", "b3", "shared"]
        .iter()
        .map(|k| binding("100", k, 2_000_000_001))
        .collect();
    set_b[3].node_id = "node-b".into();

    let spawn = |set: Vec<Binding>| {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..60 {
                if let Err(e) = s.replace_bindings("100", &set).await {
                    panic!("replace #{i} failed: {e}");
                }
            }
        })
    };
    let (ta, tb) = (spawn(set_a.clone()), spawn(set_b.clone()));
    // A reader meanwhile must only ever see one whole set.
    let reader = {
        let s = s.clone();
        let (set_a, set_b) = (set_a.clone(), set_b.clone());
        tokio::spawn(async move {
            for _ in 0..60 {
                let got = s.bindings_for("100").await.expect("for");
                assert!(
                    got.is_empty() || got == set_a || got == set_b,
                    "torn read: {:?}",
                    keys(&got)
                );
            }
        })
    };
    ta.await.expect("task a");
    tb.await.expect("task b");
    reader.await.expect("reader");
    let got = s.bindings_for("100").await.expect("for");
    assert!(
        got == set_a || got == set_b,
        "not one consistent set: {:?}",
        keys(&got)
    );
    assert_eq!(s.count_bindings().await.expect("count"), got.len() as i64);
}

async fn bindings_batch_replace(cx: Ctx) {
    let s = &cx.store;
    for n in ["100", "101", "102"] {
        s.add_extension(&ext(n)).await.expect("add");
    }
    s.replace_bindings("102", &[binding("102", "sip:old@h", 100)])
        .await
        .expect("seed");
    // Many rows, several AORs, one of them cleared: one transaction.
    let many: Vec<Binding> = (0..600)
        .map(|i| binding("100", &format!("sip:{i}@h"), 100 + i))
        .collect();
    let one = vec![binding("101", "sip:a@h", 50)];
    s.replace_bindings_many(&[("100", &many), ("101", &one), ("102", &[])])
        .await
        .expect("batch");
    assert_eq!(s.bindings_for("100").await.expect("read").len(), 600);
    assert_eq!(
        keys(&s.bindings_for("101").await.expect("read")),
        ["sip:a@h"]
    );
    assert!(s.bindings_for("102").await.expect("read").is_empty());
    // All or nothing: an unknown AOR in the batch writes nothing.
    let ghost = vec![binding("999", "sip:g@h", 50)];
    let replaced = vec![binding("101", "sip:b@h", 60)];
    let err = s
        .replace_bindings_many(&[("101", &replaced), ("999", &ghost)])
        .await
        .expect_err("unknown AOR");
    assert!(matches!(err, StoreError::UnknownExtension(_)), "{err:?}");
    assert_eq!(
        keys(&s.bindings_for("101").await.expect("read")),
        ["sip:a@h"]
    );
    // A binding filed under the wrong AOR is refused before touching the database.
    let wrong = vec![binding("100", "sip:w@h", 50)];
    assert!(matches!(
        s.replace_bindings_many(&[("101", &wrong)]).await,
        Err(StoreError::Invalid(_))
    ));
}

fn active(id: &str, node: &str, started_at: i64) -> ActiveCall {
    ActiveCall {
        id: id.into(),
        caller: "100".into(),
        callee: "200".into(),
        state: "ringing".into(),
        started_at,
        answered_at: None,
        caller_call_id: format!("a-{id}"),
        callee_call_id: format!("b-{id}"),
        node_id: node.into(),
    }
}

async fn calls_start_answer_finish(cx: Ctx) {
    let s = &cx.store;
    assert_eq!(s.list_active_calls().await.expect("list"), vec![]);
    s.insert_active_call(&active("c1", "n1", 100))
        .await
        .expect("insert");
    s.insert_active_call(&active("c2", "n1", 101))
        .await
        .expect("insert");
    assert!(matches!(
        s.insert_active_call(&active("c1", "n1", 100)).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(s
        .answer_active_call("c1", 105, "b-c1x")
        .await
        .expect("answer"));
    assert!(!s
        .answer_active_call("nope", 105, "x")
        .await
        .expect("answer"));
    let calls = s.list_active_calls().await.expect("list");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].state, "answered");
    assert_eq!(calls[0].answered_at, Some(105));
    assert_eq!(calls[0].callee_call_id, "b-c1x");
    assert_eq!(calls[1], active("c2", "n1", 101));
    let cdr = Cdr {
        id: "c1".into(),
        caller: "100".into(),
        callee: "200".into(),
        started_at: 100,
        answered_at: Some(105),
        ended_at: 125,
        disposition: "answered".into(),
        duration: 20,
        hangup_leg: "callee".into(),
        caller_call_id: "a-c1".into(),
        callee_call_id: "b-c1x".into(),
        node_id: "n1".into(),
        recording: Some("/var/lib/ringfort/recordings/c1.wav".into()),
    };
    s.finish_call(&cdr).await.expect("finish");
    assert_eq!(s.list_cdrs(10).await.expect("cdrs"), vec![cdr.clone()]);
    assert!(matches!(
        s.finish_call(&cdr).await,
        Err(StoreError::Conflict(_))
    ));
    let calls = s.list_active_calls().await.expect("list");
    assert_eq!(
        calls.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["c2"]
    );
}

async fn calls_left_by_a_crash_become_cdrs(cx: Ctx) {
    let s = &cx.store;
    s.insert_active_call(&active("r1", "n1", 100))
        .await
        .expect("insert");
    s.insert_active_call(&active("r2", "n1", 100))
        .await
        .expect("insert");
    s.insert_active_call(&active("other", "n2", 100))
        .await
        .expect("insert");
    s.answer_active_call("r2", 110, "b-r2")
        .await
        .expect("answer");
    // Another process (the restarted node) sees the rows.
    let restarted = open(&cx.url).await;
    let mut ids = restarted
        .recover_active_calls("n1", 150)
        .await
        .expect("recover");
    ids.sort();
    assert_eq!(ids, ["r1", "r2"]);
    // The node then names the recording a crash cut (repaired at start); once only.
    assert!(restarted
        .set_cdr_recording("r2", "/rec/r2.wav")
        .await
        .expect("set"));
    assert!(!restarted
        .set_cdr_recording("r2", "/rec/other.wav")
        .await
        .expect("set again"));
    assert!(!restarted
        .set_cdr_recording("nope", "/rec/x.wav")
        .await
        .expect("unknown"));
    restarted.close().await;
    let calls = s.list_active_calls().await.expect("list");
    assert_eq!(
        calls.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["other"]
    );
    let mut cdrs = s.list_cdrs(10).await.expect("cdrs");
    cdrs.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(cdrs.len(), 2);
    assert_eq!(cdrs[0].id, "r1");
    assert_eq!(cdrs[0].disposition, "failed");
    assert_eq!(cdrs[0].hangup_leg, "system");
    assert_eq!(cdrs[0].duration, 0);
    assert_eq!(cdrs[0].ended_at, 150);
    assert_eq!(cdrs[1].answered_at, Some(110));
    assert_eq!(cdrs[1].duration, 40);
    assert_eq!(
        (cdrs[0].recording.as_deref(), cdrs[1].recording.as_deref()),
        (None, Some("/rec/r2.wav"))
    );
    assert!(s
        .recover_active_calls("n1", 160)
        .await
        .expect("again")
        .is_empty());
    assert_eq!(s.list_cdrs(1).await.expect("limit").len(), 1);
}

fn admin(name: &str, role: &str) -> AdminAccount {
    AdminAccount {
        name: name.into(),
        role: role.into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        created_at: 1,
        updated_at: 1,
        extension: None,
    }
}

async fn admins_sessions_and_tokens(cx: Ctx) {
    let s = &cx.store;
    assert_eq!(s.count_admins().await.expect("count"), 0);
    s.add_admin(&admin("root", "admin")).await.expect("add");
    s.add_admin(&admin("ops", "user")).await.expect("add");
    assert!(matches!(
        s.add_admin(&admin("root", "admin")).await,
        Err(StoreError::Conflict(_))
    ));
    // The schema allows only the two roles.
    assert!(s.add_admin(&admin("x", "superuser")).await.is_err());
    assert_eq!(
        s.get_admin("root").await.expect("get"),
        Some(admin("root", "admin"))
    );
    let names: Vec<String> = s
        .list_admins()
        .await
        .expect("list")
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["ops", "root"]);

    s.insert_session("h1", "root", "csrf1", 100, 200)
        .await
        .expect("session");
    let got = s.get_session("h1", 150).await.expect("get").expect("live");
    assert_eq!(
        (
            got.admin.as_str(),
            got.role.as_str(),
            got.csrf_token.as_str()
        ),
        ("root", "admin", "csrf1")
    );
    assert!(
        s.get_session("h1", 200).await.expect("get").is_none(),
        "expired"
    );
    s.insert_session("h2", "ops", "csrf2", 100, 120)
        .await
        .expect("session");
    assert_eq!(s.delete_expired_sessions(150).await.expect("sweep"), 1);
    assert!(s.delete_session("h1").await.expect("delete"));
    assert!(!s.delete_session("h1").await.expect("again"));

    s.insert_api_token("t1", "root", "ci", 10)
        .await
        .expect("token");
    assert!(matches!(
        s.insert_api_token("t2", "root", "ci", 10).await,
        Err(StoreError::Conflict(_))
    ));
    s.insert_api_token("t3", "ops", "ci", 10)
        .await
        .expect("same name, other admin");
    let (acc, name) = s
        .use_api_token("t1", 50)
        .await
        .expect("use")
        .expect("known");
    assert_eq!((acc.name.as_str(), name.as_str()), ("root", "ci"));
    assert!(s.use_api_token("nope", 50).await.expect("use").is_none());
    let all = s.list_api_tokens(None).await.expect("list");
    assert_eq!(all.len(), 2);
    let mine = s.list_api_tokens(Some("root")).await.expect("list");
    assert_eq!((mine.len(), mine[0].last_used_at), (1, Some(50)));
    assert!(s.remove_api_token("root", "ci").await.expect("revoke"));
    assert!(!s.remove_api_token("root", "ci").await.expect("again"));
    // Removing an account takes its sessions and tokens with it.
    s.insert_session("h3", "ops", "c", 100, 1000)
        .await
        .expect("session");
    assert!(s.remove_admin("ops").await.expect("remove"));
    assert!(s.get_session("h3", 150).await.expect("get").is_none());
    assert!(s.use_api_token("t3", 60).await.expect("use").is_none());
    assert!(!s.remove_admin("ops").await.expect("again"));
}

async fn admin_api_pages_and_filters(cx: Ctx) {
    let s = &cx.store;
    for n in ["b", "a", "c", "d"] {
        s.add_extension(&ext(n)).await.expect("add");
    }
    assert_eq!(s.count_extensions().await.expect("count"), 4);
    let page: Vec<String> = s
        .list_extensions_page(2, 1)
        .await
        .expect("page")
        .into_iter()
        .map(|e| e.number)
        .collect();
    assert_eq!(page, ["b", "c"]);
    assert!(s.set_extension_name("a", "Alice").await.expect("rename"));
    assert!(!s.set_extension_name("zz", "x").await.expect("none"));
    assert_eq!(
        s.get_extension("a")
            .await
            .expect("get")
            .map(|e| e.display_name),
        Some("Alice".into())
    );
    for (i, (id, caller, disp)) in [
        ("x1", "100", "answered"),
        ("x2", "100", "busy"),
        ("x3", "200", "answered"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = active(id, "n1", 100 * (i as i64 + 1));
        c.caller = caller.into();
        s.insert_active_call(&c).await.expect("start");
        s.finish_call(&Cdr {
            id: id.into(),
            caller: caller.into(),
            callee: "300".into(),
            started_at: c.started_at,
            answered_at: None,
            ended_at: c.started_at + 5,
            disposition: disp.into(),
            duration: 0,
            hangup_leg: "caller".into(),
            caller_call_id: c.caller_call_id.clone(),
            callee_call_id: c.callee_call_id.clone(),
            node_id: "n1".into(),
            recording: None,
        })
        .await
        .expect("finish");
    }
    s.insert_active_call(&active("live", "n1", 5))
        .await
        .expect("live");
    assert_eq!(s.count_active_calls().await.expect("count"), 1);
    let ids = |v: Vec<Cdr>| v.into_iter().map(|c| c.id).collect::<Vec<_>>();
    let all = CdrFilter::default();
    assert_eq!(
        ids(s.query_cdrs(&all, 10, 0).await.expect("q")),
        ["x3", "x2", "x1"]
    );
    assert_eq!(ids(s.query_cdrs(&all, 1, 1).await.expect("q")), ["x2"]);
    let f = CdrFilter {
        caller: Some("100".into()),
        disposition: Some("answered".into()),
        ..Default::default()
    };
    assert_eq!(ids(s.query_cdrs(&f, 10, 0).await.expect("q")), ["x1"]);
    assert_eq!(s.count_cdrs(&f).await.expect("count"), 1);
    let f = CdrFilter {
        from: Some(200),
        to: Some(300),
        ..Default::default()
    };
    assert_eq!(ids(s.query_cdrs(&f, 10, 0).await.expect("q")), ["x2"]);
    assert_eq!(s.count_cdrs(&all).await.expect("count"), 3);
}

// ---- voicemail ----

fn vm_message(id: &str, mailbox: &str, received_at: i64) -> VoicemailMessage {
    VoicemailMessage {
        id: id.to_owned(),
        mailbox: mailbox.to_owned(),
        caller: "200".to_owned(),
        caller_name: "Zoë \"Z\" O'Neil".to_owned(),
        received_at,
        duration_ms: 4_250,
        folder: VoicemailFolder::New,
        path: format!("voicemail/{mailbox}/{id}.wav"),
    }
}

async fn voicemail_messages_and_counts(cx: Ctx) {
    let s = &cx.store;
    assert_eq!(
        s.voicemail_counts("100").await.expect("counts"),
        VoicemailCounts::default()
    );
    let (a, b, c) = (
        vm_message("m1", "100", 30),
        vm_message("m2", "100", 10),
        vm_message("m3", "101", 20),
    );
    for m in [&a, &b, &c] {
        s.insert_voicemail_message(m).await.expect("insert");
    }
    assert!(matches!(
        s.insert_voicemail_message(&a).await,
        Err(StoreError::Conflict(_))
    ));
    // Oldest first within a folder.
    assert_eq!(
        s.voicemail_messages("100").await.expect("list"),
        vec![b.clone(), a.clone()]
    );
    assert_eq!(
        s.voicemail_counts("100").await.expect("counts"),
        VoicemailCounts { new: 2, old: 0 }
    );
    // Heard: to old; new ones come first.
    assert!(s
        .move_voicemail_message("100", "m2", VoicemailFolder::Old)
        .await
        .expect("move"));
    let listed = s.voicemail_messages("100").await.expect("list");
    assert_eq!(
        listed
            .iter()
            .map(|m| (m.id.as_str(), m.folder))
            .collect::<Vec<_>>(),
        [("m1", VoicemailFolder::New), ("m2", VoicemailFolder::Old)]
    );
    assert_eq!(
        s.voicemail_counts("100").await.expect("counts"),
        VoicemailCounts { new: 1, old: 1 }
    );
    // Another mailbox's message is not this mailbox's to move or delete.
    assert!(!s
        .move_voicemail_message("100", "m3", VoicemailFolder::Old)
        .await
        .expect("move"));
    assert!(!s.delete_voicemail_message("100", "m3").await.expect("del"));
    assert!(s.delete_voicemail_message("100", "m1").await.expect("del"));
    assert!(!s.delete_voicemail_message("100", "m1").await.expect("del"));
    assert_eq!(
        s.voicemail_counts("100").await.expect("counts"),
        VoicemailCounts { new: 0, old: 1 }
    );
    let all = s.all_voicemail_messages().await.expect("all");
    assert_eq!(
        all.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        ["m2", "m3"]
    );
}

async fn voicemail_boxes_pin_and_greetings(cx: Ctx) {
    let s = &cx.store;
    assert_eq!(s.voicemail_box("100").await.expect("get"), None);
    s.set_voicemail_pin("100", Some("$argon2id$fake"))
        .await
        .expect("pin");
    s.set_voicemail_greeting("100", GreetingKind::Busy, Some("voicemail/100/busy.wav"))
        .await
        .expect("greeting");
    let b = s.voicemail_box("100").await.expect("get").expect("row");
    assert_eq!(b.pin_hash.as_deref(), Some("$argon2id$fake"));
    assert_eq!(b.greeting_busy.as_deref(), Some("voicemail/100/busy.wav"));
    assert_eq!(b.greeting_unavailable, None);
    assert!(
        !format!("{b:?}").contains("fake"),
        "the hash stays out of logs"
    );
    // Each setter leaves the other columns alone; None clears.
    s.set_voicemail_pin("100", None).await.expect("clear");
    let b = s.voicemail_box("100").await.expect("get").expect("row");
    assert_eq!(b.pin_hash, None);
    assert_eq!(b.greeting_busy.as_deref(), Some("voicemail/100/busy.wav"));
    assert!(matches!(
        s.set_voicemail_pin("a b", None).await,
        Err(StoreError::Invalid(_))
    ));
}

// ---- cluster ----

fn heartbeat<'a>(
    node_id: &'a str,
    sip: &'a str,
    started_at_ms: i64,
    calls_active: i64,
) -> NodeHeartbeat<'a> {
    NodeHeartbeat {
        node_id,
        sip_address: sip,
        media_address: "192.0.2.1",
        started_at_ms,
        version: "0.1.0",
        calls_active,
    }
}

async fn cluster_node_heartbeats(cx: Ctx) {
    let s = &cx.store;
    assert_eq!(s.list_cluster_nodes().await.expect("list"), vec![]);
    s.heartbeat_node(&heartbeat("node-b", "192.0.2.2:5060", 5, 0))
        .await
        .expect("hb b");
    s.heartbeat_node(&heartbeat("node-a", "192.0.2.1:5060", 7, 4))
        .await
        .expect("hb a");
    let first = s.list_cluster_nodes().await.expect("list");
    assert_eq!(
        first.iter().map(|n| n.node_id.as_str()).collect::<Vec<_>>(),
        ["node-a", "node-b"]
    );
    let a = &first[0];
    assert_eq!(
        (a.sip_address.as_str(), a.media_address.as_str()),
        ("192.0.2.1:5060", "192.0.2.1")
    );
    assert_eq!((a.started_at_ms, a.version.as_str()), (7, "0.1.0"));
    assert_eq!(a.calls_active, 4);
    // The database's clock, in ms since the epoch (2020..2100), and no age yet.
    assert!((1_577_836_800_000..4_102_444_800_000).contains(&a.heartbeat_at_ms));
    assert!((0..5_000).contains(&(a.db_now_ms - a.heartbeat_at_ms)));
    // A later heartbeat moves the time forward and updates the row in place.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    s.heartbeat_node(&heartbeat("node-a", "192.0.2.9:5060", 9, 0))
        .await
        .expect("hb a again");
    let second = s.list_cluster_nodes().await.expect("list");
    assert_eq!(second.len(), 2);
    assert_eq!(second[0].sip_address, "192.0.2.9:5060");
    assert_eq!(second[0].started_at_ms, 9);
    assert_eq!(second[0].calls_active, 0, "drained");
    assert!(second[0].heartbeat_at_ms >= a.heartbeat_at_ms + 15);
    assert!(s.remove_cluster_node("node-b").await.expect("remove"));
    assert!(!s.remove_cluster_node("node-b").await.expect("remove again"));
    assert_eq!(s.list_cluster_nodes().await.expect("list").len(), 1);
}

/// `ringfort cluster handover`: the request reaches the holder with its next renewal; the
/// holder hands the row to the named node, which alone can take it, with the next term.
async fn vip_lease_handover_to_a_named_node(cx: Ctx) {
    use ringfort::store::Renewal;
    let s = &cx.store;
    let vip = "192.0.2.110";
    assert_eq!(
        s.request_vip_handover(vip, Some("b")).await.expect("ask"),
        None,
        "nobody holds it"
    );
    assert_eq!(
        s.acquire_vip_lease(vip, "a", 60_000).await.expect("a"),
        Some(1)
    );
    assert_eq!(
        s.renew_vip_lease(vip, "a", 1, 60_000).await.expect("renew"),
        Renewal::Renewed
    );
    let asked = s
        .request_vip_handover(vip, Some("b"))
        .await
        .expect("ask")
        .expect("held");
    assert_eq!((asked.holder.as_str(), asked.term), ("a", 1));
    assert_eq!(
        s.renew_vip_lease(vip, "a", 1, 60_000).await.expect("renew"),
        Renewal::HandoverAsked {
            to: Some("b".into())
        }
    );
    assert!(!s
        .hand_vip_lease_to(vip, "a", 0, "b", 60_000)
        .await
        .expect("stale term"));
    assert!(s
        .hand_vip_lease_to(vip, "a", 1, "b", 60_000)
        .await
        .expect("hand"));
    // a is fenced at once; c cannot take the reserved row; b takes it with term 2.
    assert_eq!(
        s.renew_vip_lease(vip, "a", 1, 60_000).await.expect("a"),
        Renewal::Lost
    );
    assert_eq!(
        s.acquire_vip_lease(vip, "c", 60_000).await.expect("c"),
        None
    );
    assert_eq!(
        s.acquire_vip_lease(vip, "b", 60_000).await.expect("b"),
        Some(2)
    );
    assert_eq!(
        s.renew_vip_lease(vip, "b", 2, 60_000).await.expect("b"),
        Renewal::Renewed
    );
    // To any node: '' reads as None; a release clears the request.
    s.request_vip_handover(vip, None)
        .await
        .expect("ask")
        .expect("held");
    assert_eq!(
        s.renew_vip_lease(vip, "b", 2, 60_000).await.expect("renew"),
        Renewal::HandoverAsked { to: None }
    );
    assert!(s.release_vip_lease(vip, "b", 2).await.expect("release"));
    assert_eq!(
        s.acquire_vip_lease(vip, "c", 60_000).await.expect("c"),
        Some(3)
    );
    assert_eq!(
        s.renew_vip_lease(vip, "c", 3, 60_000).await.expect("c"),
        Renewal::Renewed
    );
}

async fn vip_lease_acquire_renew_release(cx: Ctx) {
    let s = &cx.store;
    let vip = "192.0.2.100";
    assert_eq!(s.vip_lease(vip).await.expect("read"), None);
    assert_eq!(
        s.acquire_vip_lease(vip, "a", 60_000)
            .await
            .expect("acquire"),
        Some(1)
    );
    let l = s.vip_lease(vip).await.expect("read").expect("row");
    assert_eq!((l.holder.as_str(), l.term), ("a", 1));
    assert!((59_000..=60_000).contains(&l.remaining_ms()), "{l:?}");
    // Held: another node cannot take it, and cannot renew or release it.
    assert_eq!(
        s.acquire_vip_lease(vip, "b", 60_000).await.expect("b"),
        None
    );
    assert!(!s
        .renew_vip_lease(vip, "b", 1, 60_000)
        .await
        .expect("b renew")
        .renewed());
    assert!(!s.release_vip_lease(vip, "b", 1).await.expect("b release"));
    // The holder renews with its term; a stale term is refused.
    assert!(s
        .renew_vip_lease(vip, "a", 1, 60_000)
        .await
        .expect("renew")
        .renewed());
    assert!(!s
        .renew_vip_lease(vip, "a", 0, 60_000)
        .await
        .expect("stale")
        .renewed());
    // The same node again (a restart): a new term.
    assert_eq!(
        s.acquire_vip_lease(vip, "a", 60_000).await.expect("again"),
        Some(2)
    );
    assert!(!s
        .renew_vip_lease(vip, "a", 1, 60_000)
        .await
        .expect("old term")
        .renewed());
    // A graceful release: free at once, and the next holder gets the next term.
    assert!(s.release_vip_lease(vip, "a", 2).await.expect("release"));
    let l = s.vip_lease(vip).await.expect("read").expect("row");
    assert!(l.remaining_ms() <= 0 && l.expires_at_ms == 0, "{l:?}");
    assert_eq!(
        s.acquire_vip_lease(vip, "b", 60_000).await.expect("b"),
        Some(3)
    );
    assert!(!s
        .renew_vip_lease(vip, "a", 2, 60_000)
        .await
        .expect("a fenced")
        .renewed());
    // Other VIPs are separate rows.
    assert_eq!(
        s.acquire_vip_lease("192.0.2.101", "a", 60_000)
            .await
            .expect("other"),
        Some(1)
    );
    let all = s.list_vip_leases().await.expect("list");
    assert_eq!(
        all.iter()
            .map(|l| (l.vip.as_str(), l.holder.as_str(), l.term))
            .collect::<Vec<_>>(),
        [("192.0.2.100", "b", 3), ("192.0.2.101", "a", 1)]
    );
    assert!(matches!(
        s.acquire_vip_lease(vip, "a", 0).await,
        Err(StoreError::Invalid(_))
    ));
}

async fn vip_lease_expires_by_the_database_clock(cx: Ctx) {
    let s = &cx.store;
    let vip = "192.0.2.100";
    assert_eq!(
        s.acquire_vip_lease(vip, "a", 150).await.expect("a"),
        Some(1)
    );
    assert_eq!(
        s.acquire_vip_lease(vip, "b", 150).await.expect("b early"),
        None
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        s.vip_lease(vip)
            .await
            .expect("read")
            .expect("row")
            .remaining_ms()
            < 0
    );
    assert_eq!(
        s.acquire_vip_lease(vip, "b", 150).await.expect("b"),
        Some(2)
    );
    // a's late renewal is refused: b holds it with a newer term.
    assert!(!s
        .renew_vip_lease(vip, "a", 1, 150)
        .await
        .expect("a late")
        .renewed());
    let l = s.vip_lease(vip).await.expect("read").expect("row");
    assert_eq!((l.holder.as_str(), l.term), ("b", 2));
}

async fn vip_lease_concurrent_acquirers_one_wins(cx: Ctx) {
    // Rounds of several nodes racing for a free VIP, each on its own connection pool (as
    // separate nodes would be): exactly one wins each round, with the next term.
    let stores: Vec<Store> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(open(&cx.url).await);
        }
        v
    };
    let vip = "192.0.2.100";
    let mut expected_term = 0;
    for round in 0..15 {
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(stores.len()));
        let tasks: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let (s, start) = (s.clone(), start.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    let me = format!("n{i}");
                    (me.clone(), s.acquire_vip_lease(vip, &me, 60_000).await)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            let (me, res) = t.await.expect("task");
            if let Some(term) = res.unwrap_or_else(|e| panic!("round {round}: {e}")) {
                winners.push((me, term));
            }
        }
        expected_term += 1;
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        assert_eq!(winners[0].1, expected_term, "round {round}");
        let l = cx.store.vip_lease(vip).await.expect("read").expect("row");
        assert_eq!(l.holder, winners[0].0);
        // Free it for the next round.
        assert!(cx
            .store
            .release_vip_lease(vip, &winners[0].0, expected_term)
            .await
            .expect("release"));
    }
    for s in stores {
        s.close().await;
    }
}

async fn cluster_secret_is_written_once(cx: Ctx) {
    let s = &cx.store;
    let first = s.cluster_secret("first").await.expect("first");
    assert_eq!(first, "first");
    // A second node with its own candidate gets the stored one.
    assert_eq!(s.cluster_secret("second").await.expect("second"), "first");
}
