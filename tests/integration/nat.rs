//! Phones behind NAT, made of network namespaces the test creates (and removes):
//!
//! ```text
//!  [pbx ns] node + public phones      [nat ns] router               [home ns] NATed phones
//!  10.77.0.1 ------------------------- 10.77.0.2   192.168.77.1 ---- 192.168.77.2
//!                                      masquerade to 10.77.0.2:30000-39999 (UDP)
//! ```
//!
//! The node has no route to 192.168.77.0/24, so the addresses in a NATed phone's Contact,
//! Via and SDP are useless to it: calls work only if it answers to rport/received, sends
//! requests to the address the phone registered from, and latches RTP onto the address
//! packets really come from. Real baresip phones send tones both ways and the test checks
//! each heard the other, for a call out of the NAT and a call into it.

use std::process::Command;
use std::time::Duration;

use crate::audio::{CALLEE_HZ, CALLER_HZ};
use crate::baresip::{Baresip, PhoneSetup};
use crate::support::{sh, wait_for, Node, NodeOptions};

const PASSWORD: &str = "nat-test-pass";
const PBX_IP: &str = "10.77.0.1";
const NAT_OUT_IP: &str = "10.77.0.2";
const HOME_IP: &str = "192.168.77.2";

/// The three namespaces; dropped = deleted (their veths go with them).
struct Topology {
    pbx: String,
    nat: String,
    home: String,
}

impl Topology {
    fn new() -> Topology {
        // Unique per test process, so parallel runs on one machine do not collide.
        let id = std::process::id() % 100_000;
        let t = Topology {
            pbx: format!("rf{id}pbx"),
            nat: format!("rf{id}nat"),
            home: format!("rf{id}home"),
        };
        for ns in [&t.pbx, &t.nat, &t.home] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            sh(&["ip", "netns", "add", ns]);
            t.exec(ns, &["ip", "link", "set", "lo", "up"]);
        }
        // Interface names are made in the root namespace first: keep them unique there.
        let (pa, pb, ha, hb) = (
            format!("rf{id}p0"),
            format!("rf{id}p1"),
            format!("rf{id}h0"),
            format!("rf{id}h1"),
        );
        sh(&[
            "ip", "link", "add", &pa, "netns", &t.pbx, "type", "veth", "peer", "name", &pb,
            "netns", &t.nat,
        ]);
        sh(&[
            "ip", "link", "add", &ha, "netns", &t.home, "type", "veth", "peer", "name", &hb,
            "netns", &t.nat,
        ]);
        t.exec(
            &t.pbx,
            &["ip", "addr", "add", &format!("{PBX_IP}/24"), "dev", &pa],
        );
        t.exec(&t.pbx, &["ip", "link", "set", &pa, "up"]);
        t.exec(
            &t.nat,
            &["ip", "addr", "add", &format!("{NAT_OUT_IP}/24"), "dev", &pb],
        );
        t.exec(
            &t.nat,
            &["ip", "addr", "add", "192.168.77.1/24", "dev", &hb],
        );
        t.exec(&t.nat, &["ip", "link", "set", &pb, "up"]);
        t.exec(&t.nat, &["ip", "link", "set", &hb, "up"]);
        t.exec(&t.nat, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        // Port translation too, so neither the address nor the port in the phone's
        // messages is the one the node sees.
        t.exec(
            &t.nat,
            &[
                "iptables",
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-o",
                &pb,
                "-p",
                "udp",
                "-j",
                "MASQUERADE",
                "--to-ports",
                "30000-39999",
            ],
        );
        t.exec(
            &t.home,
            &["ip", "addr", "add", &format!("{HOME_IP}/24"), "dev", &ha],
        );
        t.exec(&t.home, &["ip", "link", "set", &ha, "up"]);
        t.exec(
            &t.home,
            &["ip", "route", "add", "default", "via", "192.168.77.1"],
        );
        t
    }

    fn exec(&self, ns: &str, args: &[&str]) {
        let mut all = vec!["ip", "netns", "exec", ns];
        all.extend_from_slice(args);
        sh(&all);
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in [&self.pbx, &self.nat, &self.home] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// One call from `from` to `to` between fresh phones; checks both heard the other's tone
/// and the CDR.
fn call(node: &Node, topo: &Topology, from: (&str, bool), to: (&str, bool), round: &str) {
    let dir = node.dir.path().join(round);
    let phone = |(number, natted): (&str, bool), tone_hz, sip_port| {
        let setup = PhoneSetup {
            number,
            password: PASSWORD,
            registrar: node.addr(),
            ip: if natted { HOME_IP } else { PBX_IP },
            sip_port,
            tone_hz,
            netns: Some(if natted { &topo.home } else { &topo.pbx }),
            codecs: "PCMU,PCMA",
        };
        Baresip::new(&dir, &setup)
    };
    let mut callee = phone(to, CALLEE_HZ, 5070);
    let mut caller = phone(from, CALLER_HZ, 5080);
    callee.start(&[], Duration::from_secs(40));
    callee.wait_registered();
    caller.start(&[format!("/dial {}", to.0)], Duration::from_secs(30));
    caller.wait_registered();
    for (number, natted) in [from, to] {
        if natted {
            assert_seen_through_nat(node, number);
        }
    }
    caller.wait_call_ended(Duration::from_secs(25));
    callee.wait_call_ended(Duration::from_secs(5));
    caller
        .received()
        .assert_tone(&format!("{round}: caller {}", from.0), CALLEE_HZ, CALLER_HZ);
    callee
        .received()
        .assert_tone(&format!("{round}: callee {}", to.0), CALLER_HZ, CALLEE_HZ);
    let cdr = wait_for("the CDR", Duration::from_secs(10), || {
        node.cli_ok(&["cdr", "--limit", "1"])
            .lines()
            .next()
            .filter(|l| l.split('\t').nth(1) == Some(from.0))
            .map(str::to_owned)
    });
    let fields: Vec<&str> = cdr.split('\t').collect();
    assert_eq!(fields.get(2), Some(&to.0), "{cdr}");
    assert_eq!(fields.get(3), Some(&"answered"), "{cdr}");
    caller.stop();
    callee.stop();
}

/// The node knows the NATed phone by the address its packets came from (the NAT's
/// translated one), though its Contact names the private address.
fn assert_seen_through_nat(node: &Node, number: &str) {
    let line = node.extension_line(number);
    assert!(line.contains(&format!("@{HOME_IP}:")), "{line}");
    let port: u16 = line
        .split(&format!("from {NAT_OUT_IP}:"))
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("registered from the NAT's address: {line}"));
    assert!((30000..40000).contains(&port), "translated port: {line}");
}

#[test]
fn phones_behind_nat_call_out_and_are_called_with_audio_both_ways() {
    let topo = Topology::new();
    let mut node = Node::new(NodeOptions {
        ip: PBX_IP.into(),
        netns: topo.pbx.clone(),
        extra: "[media]\nrtp_port_min = 41000\nrtp_port_max = 41998\n".into(),
        ..NodeOptions::default()
    });
    for n in ["100", "101", "200", "201"] {
        node.add_extension(n, PASSWORD);
    }
    node.start();

    // Out of the NAT: the NATed phone calls a public one.
    call(&node, &topo, ("100", true), ("200", false), "out");
    // Into the NAT: the INVITE must go to where 101 registered from, not its Contact.
    call(&node, &topo, ("201", false), ("101", true), "in");

    // Media from the NATed phones was latched to the NAT's translated addresses.
    let latched = node
        .log_text()
        .lines()
        .filter(|l| l.contains("media latched") && l.contains(&format!("addr={NAT_OUT_IP}:3")))
        .count();
    assert!(
        latched >= 2,
        "RTP latched to the NAT's address in both calls"
    );
    node.stop();
    drop(topo);
}
