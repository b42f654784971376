//! Signalling shards: a node runs its transaction layer (and the calls it feeds) as N
//! independent shards, one task each, so SIP uses every core. A message belongs to the
//! shard its Call-ID hashes to: every transaction and dialog of a Call-ID (an INVITE, its
//! CANCEL and ACK, the dialog's BYE and re-INVITEs, the responses to our own requests)
//! lands on one shard, which owns it alone and needs no lock. The Call-IDs we make for
//! a call's other legs are drawn so that they hash to the call's own shard.
//! Pure: no I/O, no clock; randomness comes in.

use std::fmt;

/// One shard of a node's signalling, of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShardId {
    pub index: usize,
    pub count: usize,
}

impl ShardId {
    /// The shard of `count` that `call_id` belongs to.
    pub fn of(call_id: &str, count: usize) -> ShardId {
        let count = count.max(1);
        ShardId {
            index: (fnv1a(call_id.as_bytes()) % count as u64) as usize,
            count,
        }
    }

    /// A new Call-ID (128 random bits in hex) that belongs to this shard. With N shards
    /// it takes N draws on average.
    pub fn new_call_id<R: rand::Rng + ?Sized>(self, rng: &mut R) -> String {
        loop {
            let id = format!("{:032x}", rng.gen::<u128>());
            if ShardId::of(&id, self.count) == self {
                return id;
            }
        }
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// FNV-1a, 64 bits: a few cycles per byte, and spreads the near-identical Call-IDs SIPp
/// and many phones make (a counter and a host) evenly; no attacker gains by choosing
/// Call-IDs beyond loading one shard with its own traffic.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn one_call_id_one_shard_and_new_ids_land_where_asked() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for count in [1, 2, 3, 8] {
            for index in 0..count {
                let me = ShardId { index, count };
                for _ in 0..50 {
                    let id = me.new_call_id(&mut rng);
                    assert_eq!(ShardId::of(&id, count), me);
                }
            }
        }
        assert_eq!(ShardId::of("anything", 0), ShardId { index: 0, count: 1 });
    }

    /// SIPp's Call-IDs differ only in a counter: they must still spread over the shards.
    #[test]
    fn counter_call_ids_spread_evenly() {
        for count in [2, 4, 8] {
            let mut per = vec![0usize; count];
            for i in 0..10_000 {
                per[ShardId::of(&format!("{i}-4242@127.0.0.1"), count).index] += 1;
            }
            let even = 10_000 / count;
            for n in &per {
                assert!(n.abs_diff(even) < even / 10, "{count} shards: {per:?}");
            }
        }
    }
}
