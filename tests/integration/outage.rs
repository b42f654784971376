//! A PostgreSQL outage under a running node: the node reaches the database through a TCP
//! forwarder in this process, which the test cuts (every connection dropped, new ones
//! refused) and restores. While it is cut, REGISTERs are still answered 200 from the
//! node's memory and their writes wait; once it is back they reach the store in order
//! (the last binding set per AOR wins), read here straight from PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use crate::support::{
    free_port, resume_panic, wait_for, Node, NodeOptions, PgSchema, Sipp, SippTransport,
};
use tokio::sync::watch;

const PASSWORD: &str = "outage-test-pass";

/// Forwards 127.0.0.1:PORT to `upstream` while `up` is true; turning it false drops
/// every forwarded connection and refuses new ones.
async fn cuttable_proxy(upstream: String) -> (u16, watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind proxy");
    let port = listener.local_addr().expect("addr").port();
    let (up_tx, up_rx) = watch::channel(true);
    let upstream = Arc::new(upstream);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            if !*up_rx.borrow() {
                drop(client);
                continue;
            }
            let (upstream, mut up) = (upstream.clone(), up_rx.clone());
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(upstream.as_str()).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    _ = up.wait_for(|up| !*up) => {}
                }
            });
        }
    });
    (port, up_tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_answered_during_a_database_outage_and_written_after_it() {
    let schema = PgSchema::create("rf_out").await;
    let (port, up) = cuttable_proxy(schema.hostport.clone()).await;
    let via_proxy = schema.url_at(&format!("127.0.0.1:{port}"));
    let direct = schema.url_at(&schema.hostport);
    let res = tokio::spawn(scenario(via_proxy, direct, up)).await;
    schema.drop().await;
    resume_panic(res);
}

async fn scenario(via_proxy: String, direct: String, up: watch::Sender<bool>) {
    let mut node = tokio::task::spawn_blocking(move || {
        let mut node = Node::new(NodeOptions {
            database_url: via_proxy,
            ..Default::default()
        });
        node.add_extension("100", PASSWORD);
        node.start();
        node
    })
    .await
    .expect("start");
    let store = ringfort::store::Store::connect(&direct, 2)
        .await
        .expect("direct store");
    let contacts = |store: ringfort::store::Store| async move {
        let mut c: Vec<String> = store
            .bindings_for("100")
            .await
            .expect("bindings")
            .into_iter()
            .map(|b| b.contact_uri)
            .collect();
        c.sort();
        c
    };
    let (p1, p2) = (free_port(), free_port());
    let register = |port: u16, scenario: &'static str| {
        let mut sipp = Sipp::new(scenario, SippTransport::Udp)
            .auth("100", PASSWORD)
            .port(port);
        if scenario == "register.xml" {
            sipp = sipp.var("expires", "600");
        }
        (sipp, scenario)
    };
    let run = |(sipp, scenario): (Sipp, &'static str), node: Node| {
        tokio::task::spawn_blocking(move || {
            let (ok, text) = sipp.run(&node);
            assert!(ok, "{scenario}: {text}\n--- node\n{}", node.log_text());
            node
        })
    };
    node = run(register(p1, "register.xml"), node).await.expect("p1");
    assert_eq!(contacts(store.clone()).await.len(), 1);

    // The database goes away: both REGISTERs are still answered 200.
    let _ = up.send(false);
    node = run(register(p1, "unregister.xml"), node)
        .await
        .expect("unregister");
    node = run(register(p2, "register.xml"), node).await.expect("p2");
    assert!(
        node.log_text().contains("the database is unreachable"),
        "{}",
        node.log_text()
    );
    let before = contacts(store.clone()).await;
    assert_eq!(before.len(), 1, "held, not written: {before:?}");
    assert!(before[0].contains(&format!(":{p1}")), "{before:?}");

    // Back: the held sets are written in order, so only p2's binding is left.
    let _ = up.send(true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = contacts(store.clone()).await;
        let logged = node
            .log_text()
            .contains("the database is back: held registrations written");
        if logged && now.len() == 1 && now[0].contains(&format!(":{p2}")) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not flushed: {now:?}\n{}",
            node.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    store.close().await;
    tokio::task::spawn_blocking(move || {
        wait_for("extension list", Duration::from_secs(5), || {
            node.extension_line("100")
                .contains(&format!(":{p2}"))
                .then_some(())
        });
        node.stop();
    })
    .await
    .expect("stop");
}
