//! Message waiting indication against a real subscriber: SIPp subscribes to its own
//! mailbox (authenticated by 407, as calls are) on a node running in this process, and
//! hears the counts change as a message is saved through the node's voicemail service
//! and then deleted.

use std::time::Duration;

use ringfort::call::Apps;
use ringfort::media::recorder::{Layout, Recorder};

use crate::apps::InProcess;
use crate::support::{Node, NodeOptions, Sipp, SippTransport};

const PASSWORD: &str = "mwi-test-pass";

#[test]
fn a_subscriber_hears_a_message_arrive_and_go() {
    let node = Node::new(NodeOptions::default());
    node.add_extension("100", PASSWORD);
    let pbx = InProcess::start(&node, Apps::new());
    let flags = tempfile::tempdir().expect("tempdir");
    let flag = flags.path().join("step");
    let mut sipp = Sipp::new("mwi_subscribe.xml", SippTransport::Udp)
        .auth("100", PASSWORD)
        .var("flag", &flag.display().to_string())
        .spawn(&node);
    // Where SIPp has got to: it touches a file after each NOTIFY the test acts on.
    crate::support::wait_flag(&mut sipp, &node, &flag, "1");
    let vm = pbx.running().voicemail.clone();
    let saved = pbx.block_on(async {
        let pending = vm.start_message("100", "200", "Bob").expect("start");
        let mut rec =
            Recorder::create(&pending.recording_path, Layout::Mixed, 8000).expect("recorder");
        let frame = [1000i16; 160];
        for _ in 0..100 {
            rec.write(&frame, &[]).expect("write");
        }
        rec.finish().expect("finish");
        vm.save_message(&pending, Duration::from_secs(2))
            .await
            .expect("save")
            .expect("kept")
    });
    crate::support::wait_flag(&mut sipp, &node, &flag, "2");
    pbx.block_on(async {
        assert!(vm.delete_message("100", &saved.id).await.expect("delete"));
    });
    sipp.expect_pass(&node);
}
