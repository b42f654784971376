//! RTP/RTCP port pairs from the configured range (`[media] rtp_port_min..=rtp_port_max`).
//!
//! Owns: the book of which pairs are leased ([`PortPool`], sans-IO, O(1) acquire and
//! release), and the binding of a pair's two UDP sockets ([`PortAllocator::allocate`]), with
//! the lease given back when the sockets are dropped ([`LegSockets`]).
//! Must not: relay packets, know about calls or SDP.
//!
//! Decisions:
//! - A pair is (even RTP port, RTP+1 for RTCP), and the pair is the unit of allocation.
//!   The odd port is **always reserved and bound**, also when RTCP ends up multiplexed on
//!   the RTP port (RFC 5761): the port is chosen before the offer/answer says whether the
//!   peer accepts rtcp-mux, and an offerer that proposes mux must still receive RTCP on
//!   RTP+1 when the answer declines it (RFC 5761 5.1.1). The cost is one idle socket per leg.
//! - Free pairs wait in a FIFO queue, shuffled once at start: a released pair goes to the
//!   back, so a port is reused as late as possible (stray packets of an old call do not land
//!   in a new one) and the next port of a call is not guessable from the previous one.
//! - A pair whose bind fails (another process holds one of its ports) goes to the back of
//!   the queue and the next one is tried, at most [`MAX_BIND_TRIES`] times per allocation;
//!   each try is O(1), there is no scan of the range.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::{Arc, Mutex, MutexGuard};

use rand::seq::SliceRandom;
use rand::Rng;

use super::MediaError;

/// How many pairs one allocation tries to bind before it gives up.
pub const MAX_BIND_TRIES: usize = 32;

/// The book of leased pairs of a port range. Pure: no sockets.
#[derive(Debug)]
pub struct PortPool {
    /// First RTP port (even).
    first: u16,
    /// Last usable RTP port (its RTCP port, +1, is still within the range).
    last: u16,
    /// Free pair indices, in the order they are handed out.
    free: VecDeque<u16>,
    /// Leased pair indices (index = (rtp_port - first) / 2).
    leased: Vec<bool>,
}

impl PortPool {
    /// The pairs of `min..=max`: RTP ports are the even ports from `min` (rounded up to
    /// even) whose RTP+1 is still `<= max`. Handed out in ascending order.
    pub fn new(min: u16, max: u16) -> Result<PortPool, MediaError> {
        let first = min
            .checked_add(min % 2)
            .ok_or(MediaError::BadRange { min, max })?;
        if first == 0 || max <= first {
            return Err(MediaError::BadRange { min, max });
        }
        // RTP ports p = first, first+2, ... with p+1 <= max.
        let pairs = (u32::from(max) - u32::from(first)).div_ceil(2);
        let pairs = u16::try_from(pairs).map_err(|_| MediaError::BadRange { min, max })?;
        Ok(PortPool {
            first,
            last: first + (pairs - 1) * 2,
            free: (0..pairs).collect(),
            leased: vec![false; usize::from(pairs)],
        })
    }

    /// Shuffles the free queue (once at start; see the module comment).
    pub fn shuffle<R: Rng>(&mut self, rng: &mut R) {
        self.free.make_contiguous().shuffle(rng);
    }

    /// Number of pairs in the range.
    pub fn capacity(&self) -> usize {
        self.leased.len()
    }

    /// Number of pairs leased now.
    pub fn leased(&self) -> usize {
        self.capacity() - self.free.len()
    }

    /// The range as configured-and-rounded: first RTP port, last RTCP port.
    pub fn range(&self) -> (u16, u16) {
        (self.first, self.last + 1)
    }

    /// Leases the next free pair; returns its RTP port. O(1).
    pub fn acquire(&mut self) -> Option<u16> {
        let index = self.free.pop_front()?;
        self.leased[usize::from(index)] = true;
        Some(self.first + index * 2)
    }

    /// Gives a pair back (to the back of the queue). A port that is not a leased RTP port of
    /// this pool is ignored, so a double release cannot hand one pair out twice. O(1).
    pub fn release(&mut self, rtp_port: u16) {
        let Some(index) = self.index(rtp_port) else {
            return;
        };
        if std::mem::replace(&mut self.leased[usize::from(index)], false) {
            self.free.push_back(index);
        }
    }

    fn index(&self, rtp_port: u16) -> Option<u16> {
        if rtp_port < self.first || rtp_port > self.last || (rtp_port - self.first) % 2 != 0 {
            return None;
        }
        Some((rtp_port - self.first) / 2)
    }
}

/// Hands out bound RTP/RTCP socket pairs on one media address. Cheap to clone (shared book).
#[derive(Debug, Clone)]
pub struct PortAllocator {
    ip: IpAddr,
    pool: Arc<Mutex<PortPool>>,
}

impl PortAllocator {
    /// An allocator for `ip` (the PBX's media address) over `min..=max`
    /// (`[media] rtp_port_min`, `rtp_port_max`), in shuffled order.
    pub fn new(ip: IpAddr, min: u16, max: u16) -> Result<PortAllocator, MediaError> {
        let mut pool = PortPool::new(min, max)?;
        pool.shuffle(&mut rand::thread_rng());
        Ok(PortAllocator::with_pool(ip, pool))
    }

    /// An allocator over a pool prepared by the caller (tests: ascending order).
    pub fn with_pool(ip: IpAddr, pool: PortPool) -> PortAllocator {
        PortAllocator {
            ip,
            pool: Arc::new(Mutex::new(pool)),
        }
    }

    /// The media address the sockets are bound on.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// Pairs leased now (bound and not yet dropped).
    pub fn leased(&self) -> usize {
        lock(&self.pool).leased()
    }

    /// Pairs in the range.
    pub fn capacity(&self) -> usize {
        lock(&self.pool).capacity()
    }

    /// Leases a pair and binds both of its UDP sockets (non-blocking, registered with the
    /// current tokio runtime, so call it inside one). A pair that cannot be bound is skipped.
    pub fn allocate(&self) -> Result<LegSockets, MediaError> {
        let mut last_err: Option<io::Error> = None;
        for _ in 0..MAX_BIND_TRIES {
            let port = {
                let mut pool = lock(&self.pool);
                match pool.acquire() {
                    Some(port) => port,
                    None => {
                        let (min, max) = pool.range();
                        return Err(match last_err {
                            Some(source) => MediaError::NoBindablePort { min, max, source },
                            None => MediaError::PortsExhausted {
                                min,
                                max,
                                pairs: pool.capacity(),
                            },
                        });
                    }
                }
            };
            let lease = PortLease {
                pool: self.pool.clone(),
                rtp_port: port,
            };
            match bind_pair(self.ip, port) {
                Ok((rtp, rtcp)) => {
                    return Ok(LegSockets {
                        rtp: tokio::net::UdpSocket::from_std(rtp)?,
                        rtcp: tokio::net::UdpSocket::from_std(rtcp)?,
                        ip: self.ip,
                        rtp_port: port,
                        _lease: lease,
                    });
                }
                // The lease drops here: the pair goes to the back of the queue.
                Err(e) => last_err = Some(e),
            }
        }
        let (min, max) = lock(&self.pool).range();
        Err(MediaError::NoBindablePort {
            min,
            max,
            source: last_err.unwrap_or_else(|| io::Error::other("no bind attempted")),
        })
    }
}

fn bind_pair(ip: IpAddr, port: u16) -> io::Result<(StdUdpSocket, StdUdpSocket)> {
    let rtp = StdUdpSocket::bind(SocketAddr::new(ip, port))?;
    let rtcp = StdUdpSocket::bind(SocketAddr::new(ip, port + 1))?;
    rtp.set_nonblocking(true)?;
    rtcp.set_nonblocking(true)?;
    Ok((rtp, rtcp))
}

fn lock(pool: &Mutex<PortPool>) -> MutexGuard<'_, PortPool> {
    // The pool's invariants hold between statements, so a panic elsewhere cannot break it.
    pool.lock().unwrap_or_else(|e| e.into_inner())
}

/// A leased pair; gives it back to the pool when dropped.
#[derive(Debug)]
struct PortLease {
    pool: Arc<Mutex<PortPool>>,
    rtp_port: u16,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        lock(&self.pool).release(self.rtp_port);
    }
}

/// The two bound sockets of one leg. Dropping it closes them, then frees the pair.
#[derive(Debug)]
pub struct LegSockets {
    // Field order matters: the sockets close before the lease returns the ports.
    pub(crate) rtp: tokio::net::UdpSocket,
    pub(crate) rtcp: tokio::net::UdpSocket,
    ip: IpAddr,
    rtp_port: u16,
    _lease: PortLease,
}

impl LegSockets {
    /// The local RTP address (put it in the SDP sent to this leg's phone).
    pub fn rtp_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.rtp_port)
    }

    /// The local RTCP address (RTP + 1).
    pub fn rtcp_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.rtp_port + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn pairs_are_even_rtp_odd_rtcp_within_range() {
        let mut p = PortPool::new(10_000, 10_009).unwrap();
        assert_eq!(p.capacity(), 5);
        assert_eq!(p.range(), (10_000, 10_009));
        let got: Vec<u16> = std::iter::from_fn(|| p.acquire()).collect();
        assert_eq!(got, vec![10_000, 10_002, 10_004, 10_006, 10_008]);
        assert_eq!(p.leased(), 5);
    }

    #[test]
    fn odd_min_rounds_up_and_a_lonely_last_port_is_not_used() {
        let mut p = PortPool::new(10_001, 10_006).unwrap();
        // 10002/3, 10004/5; 10006 has no RTCP port in range.
        assert_eq!(p.capacity(), 2);
        assert_eq!(p.acquire(), Some(10_002));
        assert_eq!(p.acquire(), Some(10_004));
        assert_eq!(p.acquire(), None);
    }

    #[test]
    fn bad_ranges_are_refused() {
        assert!(matches!(
            PortPool::new(10_000, 10_000),
            Err(MediaError::BadRange { .. })
        ));
        assert!(matches!(
            PortPool::new(10_000, 9_000),
            Err(MediaError::BadRange { .. })
        ));
        assert!(matches!(
            PortPool::new(0, 10),
            Err(MediaError::BadRange { .. })
        ));
        assert!(matches!(
            PortPool::new(65_535, 65_535),
            Err(MediaError::BadRange { .. })
        ));
        assert!(PortPool::new(65_534, 65_535).is_ok());
        assert_eq!(PortPool::new(1024, 65_535).unwrap().capacity(), 32_256);
    }

    #[test]
    fn exhaustion_then_release_and_reuse_last() {
        let mut p = PortPool::new(20_000, 20_005).unwrap();
        let a = p.acquire().unwrap();
        let b = p.acquire().unwrap();
        let c = p.acquire().unwrap();
        assert_eq!(p.acquire(), None);
        p.release(b);
        assert_eq!(p.leased(), 2);
        assert_eq!(p.acquire(), Some(b));
        p.release(a);
        p.release(c);
        // FIFO: a was released first, so it comes back first.
        assert_eq!(p.acquire(), Some(a));
        assert_eq!(p.acquire(), Some(c));
    }

    #[test]
    fn released_port_goes_behind_the_other_free_ones() {
        let mut p = PortPool::new(30_000, 30_007).unwrap();
        let a = p.acquire().unwrap();
        p.release(a);
        assert_eq!(p.acquire(), Some(30_002));
        assert_eq!(p.acquire(), Some(30_004));
        assert_eq!(p.acquire(), Some(30_006));
        assert_eq!(p.acquire(), Some(a));
    }

    #[test]
    fn double_release_and_foreign_ports_are_ignored() {
        let mut p = PortPool::new(10_000, 10_003).unwrap();
        let a = p.acquire().unwrap();
        p.release(a);
        p.release(a);
        p.release(10_001); // RTCP port
        p.release(9_998); // below
        p.release(10_004); // above
        assert_eq!(p.leased(), 0);
        assert_eq!(p.acquire(), Some(10_002));
        assert_eq!(p.acquire(), Some(10_000));
        assert_eq!(p.acquire(), None, "a pair was queued twice");
    }

    #[test]
    fn shuffle_keeps_every_pair_once() {
        let mut p = PortPool::new(10_000, 20_000).unwrap();
        p.shuffle(&mut rand::rngs::StdRng::seed_from_u64(7));
        let mut got: Vec<u16> = std::iter::from_fn(|| p.acquire()).collect();
        assert_eq!(got.len(), 5000);
        assert_ne!(
            got[..10],
            [10_000, 10_002, 10_004, 10_006, 10_008, 10_010, 10_012, 10_014, 10_016, 10_018]
        );
        got.sort_unstable();
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, &p)| p == 10_000 + 2 * i as u16));
    }

    #[test]
    fn acquire_release_is_constant_time_under_load() {
        // 5000 pairs fully leased and cycled: every call is O(1), so this is instant.
        let mut p = PortPool::new(10_000, 20_000).unwrap();
        let mut held: VecDeque<u16> = std::iter::from_fn(|| p.acquire()).collect();
        for _ in 0..200_000 {
            let port = held.pop_front().unwrap();
            p.release(port);
            held.push_back(p.acquire().unwrap());
        }
        assert_eq!(p.leased(), 5000);
    }
}
