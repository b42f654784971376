//! The registrar against the real binary, driven by SIPp over UDP and TCP.

use std::time::Duration;

use crate::support::{Node, NodeOptions, Sipp, SippTransport};

#[test]
fn smoke_register_udp() {
    let mut node = Node::new(NodeOptions::default());
    node.add_extension("1001", "s3cret-pass");
    node.start();
    Sipp::new("register.xml", SippTransport::Udp)
        .auth("1001", "s3cret-pass")
        .var("expires", "600")
        .expect_pass(&node);
    let line = node.extension_line("1001");
    assert!(line.contains("udp from 127.0.0.1"), "{line}");
    node.stop();
    let _ = Duration::from_secs(1);
}
