//! Cross-node routing, the pure part: which node can reach a registered phone, and the
//! signed header that lets one node hand a call to another.
//!
//! A phone only accepts requests from the address it registered to (its NAT pinhole, its
//! idea of its registrar), so a call for it must leave from there: from the node that
//! holds the floating IP it registered through, or from the node whose own address (or
//! TCP connection) it registered on. [`ClusterView::reach`] answers "me, or which node".
//!
//! A forwarded INVITE carries `X-Ringfort-Relay: node=N;ts=T;numbers=A,B;sig=S`, S an
//! HMAC-SHA256 under the cluster's shared secret (a row every node reads from the store)
//! over the sending node, the time, the Call-ID and the numbers to ring there. One INVITE
//! per node, whatever the numbers (a ring group with two phones on one node): the forks of
//! a B2BUA leg share its Call-ID, and two INVITEs of one Call-ID to one node would be
//! merged requests. The receiving node takes such a call without a digest challenge (the
//! sending node authenticated the caller) and rings only phones it reaches itself, so a
//! call is forwarded at most once.
//!
//! Owns: the view of the cluster the core routes with, and the relay header.
//! Must not: do I/O, read a clock (times are passed in), or know about dialogs or media.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use sha2::{Digest, Sha256};

use crate::sip::digest::constant_time_eq;
use crate::store::Binding;

/// The header a forwarded INVITE carries.
pub const RELAY_HEADER: &str = "X-Ringfort-Relay";

/// How far a relay header's time may be from the receiver's clock, seconds: it bounds how
/// long a captured INVITE could be replayed, and allows for node clocks apart by NTP.
pub const RELAY_MAX_AGE_SECS: i64 = 30;

/// What this node knows about the others, refreshed from the store every heartbeat (never
/// read per call).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// Healthy nodes (heartbeat recent), by id: where they take SIP from other nodes.
    pub nodes: HashMap<String, SocketAddr>,
    /// Floating IPs with a live lease, by address: the holder's node id.
    pub vip_holders: HashMap<IpAddr, String>,
    /// Every floating IP of the cluster's configuration, held or not.
    pub vips: Vec<IpAddr>,
}

/// Who can send a request to a phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// This node: the phone's flow ends here.
    Local,
    /// Another node, at this SIP address.
    Node { id: String, sip: SocketAddr },
    /// Nobody now: its node is down, or its floating IP has no holder.
    Nobody,
}

impl ClusterView {
    /// Who reaches the phone of binding `b`, seen from node `me`. `listening` is whether
    /// this node has a SIP socket on an address (for an address that is no floating IP).
    pub fn reach(&self, b: &Binding, me: &str, listening: impl Fn(SocketAddr) -> bool) -> Reach {
        // A stream connection lives in one process: only its node can use it.
        if let Some((node, _)) = b.flow.as_deref().and_then(|f| f.rsplit_once(':')) {
            return self.node_or_me(node, me);
        }
        let Ok(local) = b.local_addr.parse::<SocketAddr>() else {
            return self.node_or_me(&b.node_id, me);
        };
        if let Some(holder) = self.vip_holders.get(&local.ip()) {
            return self.node_or_me(holder, me);
        }
        if self.vips.contains(&local.ip()) {
            return Reach::Nobody;
        }
        if b.node_id == me || listening(local) {
            return Reach::Local;
        }
        self.node_or_me(&b.node_id, me)
    }

    fn node_or_me(&self, node: &str, me: &str) -> Reach {
        if node == me {
            return Reach::Local;
        }
        match self.nodes.get(node) {
            Some(sip) => Reach::Node {
                id: node.to_owned(),
                sip: *sip,
            },
            None => Reach::Nobody,
        }
    }
}

/// The relay header's value for a call `call_id` to `numbers`, sent by `node` at
/// `now_unix`. Numbers are extension numbers (no `,` or `;` in them).
pub fn relay_header(
    secret: &[u8],
    node: &str,
    now_unix: i64,
    call_id: &str,
    numbers: &[&str],
) -> String {
    let numbers = numbers.join(",");
    let sig = hex(&relay_mac(secret, node, now_unix, call_id, &numbers));
    format!("node={node};ts={now_unix};numbers={numbers};sig={sig}")
}

/// What a checked relay header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relayed {
    /// The node that forwarded the call.
    pub node: String,
    /// The numbers to ring here.
    pub numbers: Vec<String>,
}

/// Why a relay header is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    #[error("malformed relay header")]
    Malformed,
    #[error("relay header too old or from the future ({0} s off)")]
    Stale(i64),
    #[error("relay header signature does not match")]
    BadSignature,
}

/// Checks a relay header of a call `call_id` at `now_unix`.
pub fn verify_relay(
    secret: &[u8],
    value: &str,
    now_unix: i64,
    call_id: &str,
) -> Result<Relayed, RelayError> {
    let mut node = None;
    let mut ts = None;
    let mut numbers = None;
    let mut sig = None;
    for part in value.split(';') {
        match part.trim().split_once('=') {
            Some(("node", v)) => node = Some(v),
            Some(("ts", v)) => ts = v.parse::<i64>().ok(),
            Some(("numbers", v)) => numbers = Some(v),
            Some(("sig", v)) => sig = Some(v),
            _ => return Err(RelayError::Malformed),
        }
    }
    let (Some(node), Some(ts), Some(numbers), Some(sig)) = (node, ts, numbers, sig) else {
        return Err(RelayError::Malformed);
    };
    if numbers.is_empty() {
        return Err(RelayError::Malformed);
    }
    let off = now_unix - ts;
    if off.abs() > RELAY_MAX_AGE_SECS {
        return Err(RelayError::Stale(off));
    }
    let want = hex(&relay_mac(secret, node, ts, call_id, numbers));
    // Compared in full whatever differs first: the time taken says nothing about `want`.
    if !constant_time_eq(&want, sig) {
        return Err(RelayError::BadSignature);
    }
    Ok(Relayed {
        node: node.to_owned(),
        numbers: numbers.split(',').map(str::to_owned).collect(),
    })
}

/// The Call-IDs of the forwarded INVITEs a node took lately. A node forwards each callee
/// leg once per node, under a fresh Call-ID, so a second forwarded INVITE with a Call-ID
/// already taken is a replay of a captured one (its signature and time still check out
/// within [`RELAY_MAX_AGE_SECS`]); a retransmission never gets this far (the transaction
/// layer absorbs it).
#[derive(Debug, Default)]
pub struct SeenRelays {
    seen: HashMap<String, i64>,
    pruned_at: i64,
}

impl SeenRelays {
    /// Records the Call-ID of a forwarded INVITE at `now_unix`: false when it was taken
    /// already. Entries older than twice the signature window are forgotten (a replay
    /// that old fails the time check anyway), at most once a second.
    pub fn first_time(&mut self, call_id: &str, now_unix: i64) -> bool {
        if now_unix != self.pruned_at {
            self.seen
                .retain(|_, at| now_unix - *at <= 2 * RELAY_MAX_AGE_SECS);
            self.pruned_at = now_unix;
        }
        match self.seen.entry(call_id.to_owned()) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(now_unix);
                true
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen.len()
    }
}

fn relay_mac(secret: &[u8], node: &str, ts: i64, call_id: &str, numbers: &str) -> [u8; 32] {
    // Fields joined by a byte none of them may hold, so no two tuples sign alike.
    let msg = format!("{node}\n{ts}\n{call_id}\n{numbers}");
    hmac_sha256(secret, msg.as_bytes())
}

/// HMAC-SHA256 (RFC 2104), twenty lines rather than a crate.
pub(crate) fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(node: &str, local: &str, flow: Option<&str>) -> Binding {
        Binding {
            aor: "1001".into(),
            contact_uri: "sip:1001@192.0.2.50:5060".into(),
            binding_key: "sip:1001@192.0.2.50:5060".into(),
            expires_at: i64::MAX,
            q: None,
            call_id: "c".into(),
            cseq: 1,
            transport: if flow.is_some() { "tcp" } else { "udp" }.into(),
            received: "192.0.2.50:5060".into(),
            local_addr: local.into(),
            flow: flow.map(str::to_owned),
            instance_id: None,
            reg_id: None,
            path: Vec::new(),
            user_agent: String::new(),
            node_id: node.into(),
            updated_at: 0,
        }
    }

    fn view() -> ClusterView {
        let vip: IpAddr = "10.0.0.100".parse().expect("ip");
        ClusterView {
            nodes: [
                ("n1".to_owned(), "10.0.0.11:5060".parse().expect("addr")),
                ("n2".to_owned(), "10.0.0.12:5060".parse().expect("addr")),
            ]
            .into(),
            vip_holders: [(vip, "n2".to_owned())].into(),
            vips: vec![vip, "10.0.0.101".parse().expect("ip")],
        }
    }

    fn n2() -> Reach {
        Reach::Node {
            id: "n2".into(),
            sip: "10.0.0.12:5060".parse().expect("addr"),
        }
    }

    #[test]
    fn a_phone_on_a_floating_ip_is_reached_through_its_holder_whoever_registered_it() {
        let b = binding("n1", "10.0.0.100:5060", None);
        assert_eq!(view().reach(&b, "n1", |_| true), n2());
        assert_eq!(view().reach(&b, "n2", |_| false), Reach::Local);
        // A floating IP nobody holds (between a death and the takeover): nobody.
        let b = binding("n1", "10.0.0.101:5060", None);
        assert_eq!(view().reach(&b, "n1", |_| true), Reach::Nobody);
    }

    #[test]
    fn a_phone_on_a_nodes_own_address_is_reached_through_that_node() {
        let b = binding("n2", "10.0.0.12:5060", None);
        assert_eq!(view().reach(&b, "n1", |_| false), n2());
        assert_eq!(view().reach(&b, "n2", |_| true), Reach::Local);
        // Its node is not healthy: nobody can send from its address.
        let b = binding("n3", "10.0.0.13:5060", None);
        assert_eq!(view().reach(&b, "n1", |_| false), Reach::Nobody);
    }

    #[test]
    fn a_stream_flow_is_reached_only_through_the_node_holding_the_connection() {
        let b = binding("n2", "10.0.0.100:5060", Some("n2:7"));
        assert_eq!(view().reach(&b, "n1", |_| true), n2());
        assert_eq!(view().reach(&b, "n2", |_| true), Reach::Local);
    }

    #[test]
    fn a_single_node_reaches_everything_it_registered() {
        let b = binding("solo", "0.0.0.0:5060", None);
        assert_eq!(
            ClusterView::default().reach(&b, "solo", |_| false),
            Reach::Local
        );
    }

    #[test]
    fn a_forwarded_call_id_is_taken_once_and_forgotten_after_two_windows() {
        let mut seen = SeenRelays::default();
        assert!(seen.first_time("leg-1", 1_000));
        assert!(!seen.first_time("leg-1", 1_010), "a replay");
        assert!(seen.first_time("leg-2", 1_010));
        assert!(!seen.first_time("leg-1", 1_000 + 2 * RELAY_MAX_AGE_SECS));
        assert!(seen.first_time("leg-1", 1_001 + 2 * RELAY_MAX_AGE_SECS));
        assert_eq!(seen.len(), 2, "leg-1 again, and leg-2 still");
        assert!(seen.first_time("leg-3", 1_011 + 2 * RELAY_MAX_AGE_SECS));
        assert_eq!(seen.len(), 2, "leg-2 forgotten");
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Case 6: a key longer than the block is hashed first.
        let mac = hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            hex(&mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn a_relay_header_verifies_only_for_its_call_numbers_time_and_secret() {
        let h = relay_header(b"s3cret", "n1", 1_000, "call-1", &["1002", "1003"]);
        assert_eq!(
            verify_relay(b"s3cret", &h, 1_010, "call-1"),
            Ok(Relayed {
                node: "n1".into(),
                numbers: vec!["1002".into(), "1003".into()],
            })
        );
        let bad = Err(RelayError::BadSignature);
        assert_eq!(verify_relay(b"other", &h, 1_010, "call-1"), bad);
        assert_eq!(verify_relay(b"s3cret", &h, 1_010, "call-2"), bad);
        let more = h.replace("numbers=1002,1003", "numbers=1002,1003,1009");
        assert_eq!(verify_relay(b"s3cret", &more, 1_010, "call-1"), bad);
        let forged = h.replace("node=n1", "node=n9");
        assert_eq!(verify_relay(b"s3cret", &forged, 1_010, "call-1"), bad);
        assert_eq!(
            verify_relay(b"s3cret", &h, 1_031, "call-1"),
            Err(RelayError::Stale(31))
        );
        assert_eq!(
            verify_relay(b"s3cret", "node=n1;ts=x", 1_000, "call-1"),
            Err(RelayError::Malformed)
        );
        let none = relay_header(b"s3cret", "n1", 1_000, "call-1", &[]);
        assert_eq!(
            verify_relay(b"s3cret", &none, 1_000, "call-1"),
            Err(RelayError::Malformed)
        );
    }
}
