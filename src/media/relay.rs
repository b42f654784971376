//! The relay task of one call and its [`RelayHandle`].
//!
//! Owns: the four sockets of a call's two legs (through [`LegSockets`]), one tokio task that
//! waits on them, on a control channel and on one coarse interval (the media timeout check;
//! no timer per packet), the per-leg counters, and the events sent to the B2BUA.
//! Must not: know SIP or SDP, end calls (it reports [`RelayEvent::MediaTimeout`]), change
//! packets on the fast path: RTP and RTCP go out byte for byte as they came in (SSRC,
//! sequence numbers, timestamps untouched). Only when the legs share no codec does the
//! B2BUA hand it a pair of [`Transcoder`]s ([`RelayHandle::transcode`]); RTP then goes
//! through them (new payloads, a new stream), and RTCP is not forwarded, since its
//! reports describe a stream the other phone never receives.
//!
//! Hot path: on readiness of a socket, the task drains it with `try_recv_from` into one
//! buffer owned by the task (allocated once with it), judges each packet with the pure
//! [`Latch`], and sends it from that same buffer with `try_send_to` on the other leg's
//! socket. Nothing is allocated and each packet is copied once (kernel to buffer). A send
//! that would block is a drop (counted), never a wait: a slow leg must not stall the other.
//! Counters are relaxed atomics, read by [`RelayHandle::stats`] without locking the task.
//!
//! RTCP: received on the leg's RTCP port, or on its RTP port when the first two bytes say
//! RTCP (packet types 192-223, RFC 5761 4; done whatever was negotiated, since the phone
//! decides what it sends). Sent to the other leg on its RTP port and RTP address when that
//! leg uses rtcp-mux, else from its RTCP port to its RTCP address. RTCP latches separately.
//!
//! Recording: while a call is recorded ([`RelayHandle::record`]) each accepted RTP packet
//! is also copied, as the phone sent it and before it is forwarded, into the recording's
//! [`RecordTap`] (a bounded queue that drops rather than waits); without a recording the
//! fast path pays one check of an `Option`.
//!
//! Shape: one task per call rather than a pool of relay threads: the relay shares the
//! runtime (DESIGN.md allows media its own runtime later if SIP starves it), and the bench
//! (`bench/relay/`) measures the per-packet cost of this shape.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tracing::{debug, info};

use super::dtmf::{Digit, EventReceiver, ReceivedEvent, ReceiverConfig};
use super::inband::InBandListener;
use super::inject::DtmfInjector;
use super::latch::{Latch, LatchConfig, Probe, Verdict};
use super::loss::LossCounter;
use super::ports::LegSockets;
use super::recording::{RecordTap, Tap};
use super::timeout::MediaTimeout;
use super::transcode::{LegFormat, RtpView, TranscodeError, Transcoder, TICK_MS};

/// Receive buffer size. A datagram that fills it may have been truncated and is dropped.
const BUF: usize = 2048;
/// Packets read from one socket before the task looks at the others again.
const BATCH: usize = 32;
/// Events buffered for the B2BUA; beyond that `Latched` events are lost.
const EVENTS: usize = 32;

/// One side of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    A,
    B,
}

impl Leg {
    pub fn index(self) -> usize {
        match self {
            Leg::A => 0,
            Leg::B => 1,
        }
    }

    pub fn other(self) -> Leg {
        match self {
            Leg::A => Leg::B,
            Leg::B => Leg::A,
        }
    }

    fn from_index(i: usize) -> Leg {
        if i == 0 {
            Leg::A
        } else {
            Leg::B
        }
    }
}

/// RTP or RTCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flow {
    Rtp,
    Rtcp,
}

/// Where the SDP of a leg says its phone receives media. Unspecified addresses
/// (`0.0.0.0`, `::`, port 0: hold or "not known yet") count as unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Remote {
    /// `c=` address and `m=` port.
    pub rtp: Option<SocketAddr>,
    /// `a=rtcp` if given; `None` = RTP port + 1 (RFC 3605 default).
    pub rtcp: Option<SocketAddr>,
    /// The leg negotiated `a=rtcp-mux` (RFC 5761): send RTCP to the RTP address.
    pub rtcp_mux: bool,
}

impl Remote {
    /// A remote at `rtp`, RTCP on the next port, no mux.
    pub fn new(rtp: SocketAddr) -> Remote {
        Remote {
            rtp: Some(rtp),
            ..Remote::default()
        }
    }

    /// With an explicit RTCP address (`a=rtcp`).
    pub fn with_rtcp(mut self, rtcp: SocketAddr) -> Remote {
        self.rtcp = Some(rtcp);
        self
    }

    /// With rtcp-mux on or off.
    pub fn with_rtcp_mux(mut self, mux: bool) -> Remote {
        self.rtcp_mux = mux;
        self
    }

    pub(crate) fn rtp_expected(&self) -> Option<SocketAddr> {
        self.rtp.filter(usable)
    }

    fn rtcp_expected(&self) -> Option<SocketAddr> {
        if self.rtcp_mux {
            return self.rtp_expected();
        }
        match self.rtcp {
            Some(a) => Some(a).filter(usable),
            None => {
                let rtp = self.rtp_expected()?;
                let port = rtp.port().checked_add(1)?;
                Some(SocketAddr::new(rtp.ip(), port))
            }
        }
    }
}

fn usable(a: &SocketAddr) -> bool {
    // Sending to 0.0.0.0 reaches the local host on Linux: never do it.
    !a.ip().is_unspecified() && a.port() != 0
}

/// Relay parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayConfig {
    /// Report [`RelayEvent::MediaTimeout`] after this long without RTP on both legs
    /// (`[media] media_timeout_secs`, default 60 s); `None` = never.
    pub media_timeout: Option<Duration>,
    /// The limit while on hold ([`RelayHandle::set_hold`]); `None` = never (default).
    pub hold_timeout: Option<Duration>,
    /// Latching rules.
    pub latch: LatchConfig,
    /// How often the task checks the timeout (the precision of the timeout).
    pub check_every: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            media_timeout: Some(Duration::from_secs(60)),
            hold_timeout: None,
            latch: LatchConfig::default(),
            check_every: Duration::from_secs(1),
        }
    }
}

impl RelayConfig {
    /// The defaults with `[media] media_timeout_secs` (0 = never).
    pub fn with_timeout_secs(secs: u64) -> RelayConfig {
        RelayConfig {
            media_timeout: (secs > 0).then(|| Duration::from_secs(secs)),
            ..RelayConfig::default()
        }
    }
}

/// What the relay tells the B2BUA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEvent {
    /// No RTP on either leg for `idle` (>= the limit in force). Sent once; the relay keeps
    /// running and re-arms when RTP comes back. The B2BUA usually ends the call.
    MediaTimeout { idle: Duration },
    /// A leg's phone was found (or moved) at `addr`; media for it goes there now.
    Latched {
        leg: Leg,
        flow: Flow,
        addr: SocketAddr,
    },
    /// A key press taken out of `leg`'s RTP ([`RelayHandle::dtmf_as_signal`]).
    Dtmf {
        leg: Leg,
        digit: Digit,
        duration_ms: u32,
    },
}

#[derive(Debug, Default)]
struct LegCounters {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    rtcp_rx_packets: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    rtcp_tx_packets: AtomicU64,
    dropped: AtomicU64,
    /// RTP packets missing from what this leg's phone sent (sequence gaps).
    lost: AtomicU64,
}

#[derive(Debug, Default)]
struct Shared {
    legs: [LegCounters; 2],
    /// Latched sources `[leg][rtp, rtcp]`; written only when a latch moves.
    sources: Mutex<[[Option<SocketAddr>; 2]; 2]>,
}

/// Counters of one leg. "rx" = received from this leg's phone (every datagram on the leg's
/// ports, dropped ones included), "tx" = sent to this leg's phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LegStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Of `rx_packets`, RTCP.
    pub rtcp_rx_packets: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Of `tx_packets`, RTCP.
    pub rtcp_tx_packets: u64,
    /// Received on this leg and not forwarded (unknown source, not RTP/RTCP, no
    /// destination yet on the other leg, send failed).
    pub dropped: u64,
    /// RTP packets missing from what this leg's phone sent (RFC 3550 A.3: expected by
    /// sequence number minus received), counted before any are forwarded.
    pub lost: u64,
    /// The latched RTP source of the phone.
    pub rtp_source: Option<SocketAddr>,
    /// The latched RTCP source of the phone.
    pub rtcp_source: Option<SocketAddr>,
}

/// Counters of a relay, per leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RelayStats {
    pub legs: [LegStats; 2],
}

impl RelayStats {
    pub fn leg(&self, leg: Leg) -> &LegStats {
        &self.legs[leg.index()]
    }
}

impl Shared {
    /// Adds this relay's final counts to the node's totals and counts it as ended: once,
    /// when the task stops, so the hot path touches only the per-call counters.
    fn add_to_totals(&self, totals: &crate::metrics::RelayTotals) {
        for c in &self.legs {
            let rtp_sent = c
                .tx_packets
                .load(Relaxed)
                .saturating_sub(c.rtcp_tx_packets.load(Relaxed));
            totals.rtp_relayed.fetch_add(rtp_sent, Relaxed);
            totals.dropped.fetch_add(c.dropped.load(Relaxed), Relaxed);
            totals.lost.fetch_add(c.lost.load(Relaxed), Relaxed);
        }
        totals.running.fetch_sub(1, Relaxed);
    }

    fn snapshot(&self) -> RelayStats {
        let sources = *self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let leg = |i: usize| {
            let c = &self.legs[i];
            LegStats {
                rx_packets: c.rx_packets.load(Relaxed),
                rx_bytes: c.rx_bytes.load(Relaxed),
                rtcp_rx_packets: c.rtcp_rx_packets.load(Relaxed),
                tx_packets: c.tx_packets.load(Relaxed),
                tx_bytes: c.tx_bytes.load(Relaxed),
                rtcp_tx_packets: c.rtcp_tx_packets.load(Relaxed),
                dropped: c.dropped.load(Relaxed),
                lost: c.lost.load(Relaxed),
                rtp_source: sources[i][0],
                rtcp_source: sources[i][1],
            }
        };
        RelayStats {
            legs: [leg(0), leg(1)],
        }
    }
}

enum Command {
    Remote(Leg, Remote),
    Hold(bool),
    /// Transcoders for RTP from leg A and from leg B; `None` = back to the fast path.
    Transcode(Option<Box<[Transcoder; 2]>>),
    /// Take telephone-events (payload type, clock) out of a leg's RTP as digits.
    DtmfAsSignal(Leg, Option<(u8, u32)>),
    /// Copy each accepted RTP packet to a recording; `None` stops.
    Record(Option<RecordTap>),
    /// Listen for key presses in the audio of a leg (in `format`); `None` stops.
    InBandDtmf(Leg, Option<Box<LegFormat>>),
    /// Send a key press to a leg's phone as RFC 4733 events in the stream it receives.
    SendDtmf {
        to: Leg,
        pt: u8,
        clock: u32,
        digit: Digit,
        duration_ms: Option<u32>,
    },
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Remote(l, r) => write!(f, "Remote({l:?}, {r:?})"),
            Command::Hold(h) => write!(f, "Hold({h})"),
            Command::Transcode(t) => write!(f, "Transcode({})", t.is_some()),
            Command::DtmfAsSignal(l, d) => write!(f, "DtmfAsSignal({l:?}, {d:?})"),
            Command::Record(t) => write!(f, "Record({})", t.is_some()),
            Command::SendDtmf { to, digit, .. } => write!(f, "SendDtmf({to:?}, {digit})"),
            Command::InBandDtmf(l, fmt) => write!(f, "InBandDtmf({l:?}, {})", fmt.is_some()),
        }
    }
}

/// Starts relays.
pub struct Relay;

impl Relay {
    /// Starts relaying between the two legs' sockets on the current tokio runtime.
    /// `remotes` are what the SDPs say so far ([`Remote::default`] = not known yet).
    pub fn spawn(
        a: LegSockets,
        b: LegSockets,
        remotes: [Remote; 2],
        config: RelayConfig,
    ) -> RelayHandle {
        let local = [(a.rtp_addr(), a.rtcp_addr()), (b.rtp_addr(), b.rtcp_addr())];
        let shared = Arc::new(Shared::default());
        let (ctrl_tx, ctrl_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::channel(EVENTS);
        let now = Instant::now();
        let leg_state = |r: &Remote| LegState {
            rtp: Latch::new(config.latch, r.rtp_expected()),
            rtcp: Latch::new(config.latch, r.rtcp_expected()),
            rtcp_mux: r.rtcp_mux,
            dtmf: None,
            inband: None,
            loss: LossCounter::default(),
        };
        let core = Core {
            legs: [leg_state(&remotes[0]), leg_state(&remotes[1])],
            timeout: MediaTimeout::new(config.media_timeout, config.hold_timeout, now),
            shared: shared.clone(),
            events: ev_tx,
            pending_timeout: None,
            transcoders: None,
            injectors: [None, None],
            inband_keys: Vec::with_capacity(2),
            dtmf_events: Vec::with_capacity(4),
            tap: None,
        };
        let task = tokio::spawn(run([a, b], core, ctrl_rx, config.check_every));
        RelayHandle {
            ctrl: ctrl_tx,
            events: ev_rx,
            shared,
            local,
            task,
        }
    }
}

/// The B2BUA's grip on a running relay. Dropping it stops the relay and frees its ports
/// (asynchronously; [`RelayHandle::close`] waits for it).
#[derive(Debug)]
pub struct RelayHandle {
    ctrl: mpsc::UnboundedSender<Command>,
    events: mpsc::Receiver<RelayEvent>,
    shared: Arc<Shared>,
    local: [(SocketAddr, SocketAddr); 2],
    task: JoinHandle<()>,
}

impl RelayHandle {
    /// The PBX's RTP address for `leg` (for the SDP sent to that leg's phone).
    pub fn local_rtp(&self, leg: Leg) -> SocketAddr {
        self.local[leg.index()].0
    }

    /// The PBX's RTCP address for `leg` (RTP + 1).
    pub fn local_rtcp(&self, leg: Leg) -> SocketAddr {
        self.local[leg.index()].1
    }

    /// The SDP of `leg` changed (answer, re-INVITE). A different address forgets the latch.
    pub fn update_remote(&self, leg: Leg, remote: Remote) {
        // Fails only when the task has ended; then there is nothing to update.
        let _ = self.ctrl.send(Command::Remote(leg, remote));
    }

    /// Hold (`true`) or resume: on hold the media timeout is `hold_timeout`.
    pub fn set_hold(&self, on_hold: bool) {
        let _ = self.ctrl.send(Command::Hold(on_hold));
    }

    /// Transcode between the legs, `formats[0]` being what leg A's phone negotiated and
    /// `formats[1]` leg B's; `None` returns to relaying packets untouched. Fails when a
    /// codec cannot be set up (the relay keeps what it had).
    pub fn transcode(&self, formats: Option<[LegFormat; 2]>) -> Result<(), TranscodeError> {
        let transcoders = match formats {
            Some([a, b]) => Some(Box::new([Transcoder::new(a, b)?, Transcoder::new(b, a)?])),
            None => None,
        };
        let _ = self.ctrl.send(Command::Transcode(transcoders));
        Ok(())
    }

    /// RFC 4733 events (payload type `pt` on clock `clock`) in `leg`'s RTP are not
    /// forwarded but reported once per key press as [`RelayEvent::Dtmf`] (the other
    /// phone did not negotiate them); `None` forwards them again.
    pub fn dtmf_as_signal(&self, leg: Leg, events: Option<(u8, u32)>) {
        let _ = self.ctrl.send(Command::DtmfAsSignal(leg, events));
    }

    /// Listens for key presses in the audio of `leg` (whose phone negotiated `format` and
    /// no telephone-event); each is reported as [`RelayEvent::Dtmf`] when it ends. The
    /// audio is still relayed untouched. `None` stops.
    pub fn inband_dtmf(&self, leg: Leg, format: Option<LegFormat>) {
        let _ = self
            .ctrl
            .send(Command::InBandDtmf(leg, format.map(Box::new)));
    }

    /// Sends `digit` to leg `to`'s phone as RFC 4733 events (payload type `pt`, clock
    /// `clock`) inside the stream it receives, which is renumbered around them from then
    /// on ([`super::inject`]). For a key that came another way (INFO, in-band).
    pub fn send_dtmf(&self, to: Leg, pt: u8, clock: u32, digit: Digit, duration_ms: Option<u32>) {
        let _ = self.ctrl.send(Command::SendDtmf {
            to,
            pt,
            clock,
            digit,
            duration_ms,
        });
    }

    /// Copies every accepted RTP packet of both legs, as received and before it is
    /// forwarded, to `tap` (a recording, [`super::recording::RecordingHandle`]); `None`
    /// stops copying.
    pub fn record(&self, tap: Option<RecordTap>) {
        let _ = self.ctrl.send(Command::Record(tap));
    }

    /// The counters now (lock-free reads of the task's atomics).
    pub fn stats(&self) -> RelayStats {
        self.shared.snapshot()
    }

    /// The next event; `None` once the relay has stopped.
    pub async fn next_event(&mut self) -> Option<RelayEvent> {
        self.events.recv().await
    }

    /// Whether the relay task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the relay and waits until its sockets are closed and its ports free; returns
    /// the final counters.
    pub async fn close(self) -> RelayStats {
        let RelayHandle {
            ctrl, task, shared, ..
        } = self;
        drop(ctrl);
        // A panicked task has dropped its sockets too; nothing more to do about it here.
        let _ = task.await;
        shared.snapshot()
    }
}

struct LegState {
    rtp: Latch,
    rtcp: Latch,
    rtcp_mux: bool,
    /// Telephone-events taken out of this leg's RTP: payload type, clock, receiver.
    dtmf: Option<(u8, u32, EventReceiver)>,
    /// Key presses listened for in this leg's audio.
    inband: Option<Box<InBandListener>>,
    /// Sequence gaps in what this leg's phone sends.
    loss: LossCounter,
}

/// The task's state, apart from the sockets (so the sockets can be borrowed while the
/// state changes).
struct Core {
    legs: [LegState; 2],
    timeout: MediaTimeout,
    shared: Arc<Shared>,
    events: mpsc::Sender<RelayEvent>,
    pending_timeout: Option<Duration>,
    /// Set when the legs share no codec: index = the leg the RTP comes from.
    transcoders: Option<Box<[Transcoder; 2]>>,
    /// What the DTMF receivers report (reused: no allocation per packet).
    dtmf_events: Vec<ReceivedEvent>,
    /// The call's recording, if it is recorded.
    tap: Option<RecordTap>,
    /// Key presses put into the stream towards each leg (index = the receiving leg).
    injectors: [Option<DtmfInjector>; 2],
    /// What in-band listeners heard (reused).
    inband_keys: Vec<(Digit, u32)>,
}

async fn run(
    io: [LegSockets; 2],
    mut core: Core,
    mut ctrl: mpsc::UnboundedReceiver<Command>,
    check_every: Duration,
) {
    let mut buf = [0u8; BUF];
    let mut tick = tokio::time::interval(check_every.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The media clock, only while transcoding: the fast path has no timer per call.
    let mut media_clock: Option<tokio::time::Interval> = None;
    debug!(a = %io[0].rtp_addr(), b = %io[1].rtp_addr(), "relay started");
    crate::metrics::RELAYS.running.fetch_add(1, Relaxed);
    loop {
        let (leg, rtcp) = tokio::select! {
            // Commands first: a leg's remote address (the callee's answer) is sent before
            // the caller hears the 200, so it must be applied before the caller's first
            // packets are read, or they find no destination and are dropped.
            biased;
            cmd = ctrl.recv() => {
                match cmd {
                    Some(cmd) => core.command(cmd),
                    None => break,
                }
                match (core.needs_clock(), media_clock.is_some()) {
                    (true, false) => {
                        let period = Duration::from_millis(u64::from(TICK_MS));
                        let mut i = tokio::time::interval(period);
                        // Late ticks catch up (audio must not fall behind), bounded by
                        // the jitter buffer's own limits.
                        i.set_missed_tick_behavior(MissedTickBehavior::Burst);
                        media_clock = Some(i);
                    }
                    (false, true) => media_clock = None,
                    _ => {}
                }
                continue;
            }
            _ = async {
                match media_clock.as_mut() {
                    Some(i) => { i.tick().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {
                core.media_tick(&io, Instant::now());
                if !core.needs_clock() {
                    media_clock = None;
                }
                continue;
            }
            _ = tick.tick() => {
                core.check_timeout(Instant::now());
                continue;
            }
            r = io[0].rtp.readable() => { if r.is_err() { break } (0, false) }
            r = io[0].rtcp.readable() => { if r.is_err() { break } (0, true) }
            r = io[1].rtp.readable() => { if r.is_err() { break } (1, false) }
            r = io[1].rtcp.readable() => { if r.is_err() { break } (1, true) }
        };
        core.drain(&io, leg, rtcp, &mut buf);
    }
    core.shared.add_to_totals(&crate::metrics::RELAYS);
    debug!(a = %io[0].rtp_addr(), b = %io[1].rtp_addr(), "relay stopped");
}

/// [`sender`] for a stream that key presses are put into: each packet is renumbered
/// (copied once to do it; only on calls that translate DTMF).
fn renumbering_sender<'a>(
    sock: &'a UdpSocket,
    dst: Option<SocketAddr>,
    counters: &'a LegCounters,
    inj: &'a mut DtmfInjector,
    now: Instant,
) -> impl FnMut(&[u8]) + 'a {
    let mut send = sender(sock, dst, counters);
    let mut copy = [0u8; BUF];
    move |p: &[u8]| {
        let n = p.len().min(BUF);
        copy[..n].copy_from_slice(&p[..n]);
        inj.on_forward(&mut copy[..n], now);
        send(&copy[..n]);
    }
}

/// Sends what a transcoder gives out to `dst` from `sock`, counted on the receiving leg
/// (a failed or impossible send counts as dropped there).
fn sender<'a>(
    sock: &'a UdpSocket,
    dst: Option<SocketAddr>,
    counters: &'a LegCounters,
) -> impl FnMut(&[u8]) + 'a {
    move |p: &[u8]| match dst.map(|d| sock.try_send_to(p, d)) {
        Some(Ok(n)) => {
            counters.tx_packets.fetch_add(1, Relaxed);
            counters.tx_bytes.fetch_add(n as u64, Relaxed);
        }
        _ => {
            counters.dropped.fetch_add(1, Relaxed);
        }
    }
}

fn socket(io: &LegSockets, rtcp: bool) -> &UdpSocket {
    if rtcp {
        &io.rtcp
    } else {
        &io.rtp
    }
}

/// `Some((ssrc, seq))` for a plausible RTP packet (version 2, full fixed header).
fn rtp_header(p: &[u8]) -> Option<(u32, u16)> {
    match p {
        [b0, _, s0, s1, _, _, _, _, x0, x1, x2, x3, ..] if b0 >> 6 == 2 => Some((
            u32::from_be_bytes([*x0, *x1, *x2, *x3]),
            u16::from_be_bytes([*s0, *s1]),
        )),
        _ => None,
    }
}

/// A plausible RTCP packet: version 2, packet type 192..=223 (RFC 5761 4), >= 8 bytes.
fn is_rtcp(p: &[u8]) -> bool {
    p.len() >= 8 && p[0] >> 6 == 2 && (192..=223).contains(&p[1])
}

impl Core {
    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Remote(leg, remote) => {
                let st = &mut self.legs[leg.index()];
                st.rtp.set_expected(remote.rtp_expected());
                st.rtcp.set_expected(remote.rtcp_expected());
                st.rtcp_mux = remote.rtcp_mux;
                let (rtp, rtcp) = (st.rtp.latched(), st.rtcp.latched());
                self.set_sources(leg.index(), rtp, rtcp);
                debug!(?leg, ?remote, "relay remote updated");
            }
            Command::Hold(on) => self.timeout.set_hold(on, Instant::now()),
            Command::Transcode(t) => {
                info!(transcoding = t.is_some(), "relay mode");
                self.transcoders = t;
            }
            Command::DtmfAsSignal(leg, events) => {
                // The check runs once a second: one tick without packets ends an event
                // whose end packets were all lost.
                let config = ReceiverConfig {
                    timeout_ticks: 1,
                    ..ReceiverConfig::default()
                };
                self.legs[leg.index()].dtmf =
                    events.map(|(pt, clock)| (pt, clock.max(1), EventReceiver::new(config)));
            }
            Command::Record(tap) => {
                debug!(recording = tap.is_some(), "relay tap");
                self.tap = tap;
            }
            Command::InBandDtmf(leg, format) => {
                let listener = format.and_then(|f| match InBandListener::new(&f) {
                    Ok(l) => Some(Box::new(l)),
                    Err(e) => {
                        info!(?leg, error = %e, "no in-band DTMF detection");
                        None
                    }
                });
                debug!(?leg, on = listener.is_some(), "in-band DTMF detection");
                self.legs[leg.index()].inband = listener;
            }
            Command::SendDtmf {
                to,
                pt,
                clock,
                digit,
                duration_ms,
            } => {
                let slot = &mut self.injectors[to.index()];
                if slot.as_ref().map(DtmfInjector::format) != Some((pt, clock)) {
                    // A new format (or the first key) starts a new injector; one whose
                    // renumbering is under way keeps the stream as the phone knows it.
                    match slot {
                        Some(i) if !i.is_busy() => *slot = Some(DtmfInjector::new(pt, clock)),
                        None => *slot = Some(DtmfInjector::new(pt, clock)),
                        Some(_) => {}
                    }
                }
                if let Some(i) = slot.as_mut() {
                    debug!(?to, %digit, "DTMF into RTP");
                    i.push(digit, duration_ms);
                }
            }
        }
    }

    fn set_sources(&self, leg: usize, rtp: Option<SocketAddr>, rtcp: Option<SocketAddr>) {
        let mut s = self
            .shared
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        s[leg] = [rtp, rtcp];
    }

    /// A telephone-event packet of a leg whose events are taken out: reported once per
    /// key press, at its end.
    fn on_dtmf_packet(&mut self, leg: usize, pkt: &[u8]) {
        let Some((_, clock, receiver)) = self.legs[leg].dtmf.as_mut() else {
            return;
        };
        let Some(rtp) = RtpView::parse(pkt) else {
            return;
        };
        let _ = receiver.on_packet(rtp.ts, rtp.marker, rtp.payload, &mut self.dtmf_events);
        let clock = *clock;
        self.report_dtmf(leg, clock);
    }

    fn report_dtmf(&mut self, leg: usize, clock: u32) {
        for ev in self.dtmf_events.drain(..) {
            if let ReceivedEvent::End {
                digit, duration, ..
            } = ev
            {
                let duration_ms = (u64::from(duration) * 1000 / u64::from(clock)) as u32;
                debug!(leg, %digit, duration_ms, "DTMF taken out of RTP");
                let _ = self.events.try_send(RelayEvent::Dtmf {
                    leg: Leg::from_index(leg),
                    digit,
                    duration_ms,
                });
            }
        }
    }

    fn check_timeout(&mut self, now: Instant) {
        for leg in 0..2 {
            if let Some((_, clock, receiver)) = self.legs[leg].dtmf.as_mut() {
                receiver.on_tick(&mut self.dtmf_events);
                let clock = *clock;
                self.report_dtmf(leg, clock);
            }
        }
        if let Some(idle) = self.timeout.poll(now) {
            info!(idle_ms = idle.as_millis() as u64, "media timeout");
            self.pending_timeout = Some(idle);
        }
        if let Some(idle) = self.pending_timeout {
            // A full channel: retry at the next tick. Gone: nobody to tell.
            if !matches!(
                self.events.try_send(RelayEvent::MediaTimeout { idle }),
                Err(mpsc::error::TrySendError::Full(_))
            ) {
                self.pending_timeout = None;
            }
        }
    }

    /// Reads up to [`BATCH`] packets from one socket and forwards them.
    fn drain(&mut self, io: &[LegSockets; 2], leg: usize, rtcp: bool, buf: &mut [u8; BUF]) {
        let sock = socket(&io[leg], rtcp);
        let now = Instant::now();
        for _ in 0..BATCH {
            match sock.try_recv_from(buf) {
                Ok((n, src)) => self.on_packet(io, leg, rtcp, &mut buf[..n], src, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // ICMP errors and the like: nothing was received.
                Err(_) => continue,
            }
        }
    }

    fn on_packet(
        &mut self,
        io: &[LegSockets; 2],
        leg: usize,
        on_rtcp_port: bool,
        pkt: &mut [u8],
        src: SocketAddr,
        now: Instant,
    ) {
        let counters = &self.shared.legs[leg];
        counters.rx_packets.fetch_add(1, Relaxed);
        counters.rx_bytes.fetch_add(pkt.len() as u64, Relaxed);
        let rtcp = on_rtcp_port || is_rtcp(pkt);
        if rtcp {
            counters.rtcp_rx_packets.fetch_add(1, Relaxed);
        }
        let st = &mut self.legs[leg];
        let verdict = if pkt.len() >= BUF {
            Verdict::Drop // maybe truncated
        } else if rtcp {
            if is_rtcp(pkt) {
                let trusted = st.rtp.latched_ip() == Some(src.ip());
                st.rtcp.on_packet(src, Probe::Rtcp { trusted }, now)
            } else {
                Verdict::Drop
            }
        } else {
            match rtp_header(pkt) {
                Some((ssrc, seq)) => {
                    let v = st.rtp.on_packet(src, Probe::Rtp { ssrc, seq }, now);
                    if v != Verdict::Drop {
                        st.loss.on_packet(ssrc, seq);
                        counters.lost.store(st.loss.lost(), Relaxed);
                    }
                    v
                }
                None => Verdict::Drop,
            }
        };
        match verdict {
            Verdict::Drop => {
                counters.dropped.fetch_add(1, Relaxed);
                return;
            }
            Verdict::Accept => {}
            Verdict::Latched(addr) => self.latched(leg, rtcp, addr),
        }
        if !rtcp {
            self.timeout.on_rtp(now);
            if let Some(tap) = &self.tap {
                if tap.offer(Leg::from_index(leg), pkt, now) == Tap::Closed {
                    self.tap = None;
                }
            }
            if let Some((pt, _, _)) = &self.legs[leg].dtmf {
                if pkt[1] & 0x7f == *pt {
                    self.on_dtmf_packet(leg, pkt);
                    return;
                }
            }
            if let Some(listener) = self.legs[leg].inband.as_mut() {
                listener.on_rtp(pkt, &mut self.inband_keys);
                for (digit, duration_ms) in self.inband_keys.drain(..) {
                    debug!(leg, %digit, duration_ms, "DTMF heard in the audio");
                    let _ = self.events.try_send(RelayEvent::Dtmf {
                        leg: Leg::from_index(leg),
                        digit,
                        duration_ms,
                    });
                }
            }
        }
        let other = 1 - leg;
        if let Some(t) = self.transcoders.as_mut() {
            let counters = &self.shared.legs[leg];
            if rtcp {
                counters.dropped.fetch_add(1, Relaxed);
                return;
            }
            let dst = self.legs[other].rtp.destination();
            let out_counters = &self.shared.legs[other];
            let forwarded = match self.injectors[other].as_mut() {
                None => t[leg].on_rtp(pkt, now, &mut sender(&io[other].rtp, dst, out_counters)),
                Some(inj) => t[leg].on_rtp(
                    pkt,
                    now,
                    &mut renumbering_sender(&io[other].rtp, dst, out_counters, inj, now),
                ),
            };
            if !forwarded {
                counters.dropped.fetch_add(1, Relaxed);
            }
            return;
        }
        if !rtcp {
            if let Some(inj) = self.injectors[other].as_mut() {
                inj.on_forward(pkt, now);
            }
        }
        let out = &self.legs[other];
        let (sock, dst) = match (rtcp, out.rtcp_mux) {
            (false, _) | (true, true) => (&io[other].rtp, out.rtp.destination()),
            (true, false) => (&io[other].rtcp, out.rtcp.destination()),
        };
        let sent = match dst {
            Some(dst) => sock.try_send_to(pkt, dst),
            None => Err(io::ErrorKind::NotConnected.into()),
        };
        match sent {
            Ok(n) => {
                let c = &self.shared.legs[other];
                c.tx_packets.fetch_add(1, Relaxed);
                c.tx_bytes.fetch_add(n as u64, Relaxed);
                if rtcp {
                    c.rtcp_tx_packets.fetch_add(1, Relaxed);
                }
            }
            Err(_) => {
                self.shared.legs[leg].dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// A tick of the media clock while transcoding: each direction's transcoder gives
    /// out the audio of the last 20 ms.
    /// Whether the media clock must run: transcoding, or key presses to send.
    fn needs_clock(&self) -> bool {
        self.transcoders.is_some() || self.injectors.iter().flatten().any(DtmfInjector::is_busy)
    }

    fn media_tick(&mut self, io: &[LegSockets; 2], now: Instant) {
        if let Some(t) = self.transcoders.as_mut() {
            for (leg, transcoder) in t.iter_mut().enumerate() {
                let other = 1 - leg;
                let dst = self.legs[other].rtp.destination();
                let counters = &self.shared.legs[other];
                match self.injectors[other].as_mut() {
                    None => transcoder.on_tick(now, &mut sender(&io[other].rtp, dst, counters)),
                    Some(inj) => transcoder.on_tick(
                        now,
                        &mut renumbering_sender(&io[other].rtp, dst, counters, inj, now),
                    ),
                }
            }
        }
        for (leg, sockets) in io.iter().enumerate() {
            let dst = self.legs[leg].rtp.destination();
            if let Some(pkt) = self.injectors[leg].as_mut().and_then(|i| i.tick(now)) {
                sender(&sockets.rtp, dst, &self.shared.legs[leg])(pkt);
            }
        }
    }

    fn latched(&mut self, leg: usize, rtcp: bool, addr: SocketAddr) {
        let st = &self.legs[leg];
        let (rtp_src, rtcp_src) = (st.rtp.latched(), st.rtcp.latched());
        self.set_sources(leg, rtp_src, rtcp_src);
        let leg = Leg::from_index(leg);
        let flow = if rtcp { Flow::Rtcp } else { Flow::Rtp };
        info!(?leg, ?flow, %addr, "media latched");
        // Rare (at most once per relatch period); lost if the B2BUA does not read events.
        let _ = self
            .events
            .try_send(RelayEvent::Latched { leg, flow, addr });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_header_fields() {
        let p = [
            0x80, 0, 0x12, 0x34, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef, 0xff,
        ];
        assert_eq!(rtp_header(&p), Some((0xdead_beef, 0x1234)));
        assert_eq!(rtp_header(&p[..11]), None);
        let mut v1 = p;
        v1[0] = 0x40;
        assert_eq!(rtp_header(&v1), None);
        assert_eq!(rtp_header(&[]), None);
    }

    #[test]
    fn rtcp_demux_by_packet_type() {
        assert!(is_rtcp(&[0x81, 200, 0, 6, 1, 2, 3, 4]));
        assert!(is_rtcp(&[0x80, 201, 0, 1, 1, 2, 3, 4]));
        assert!(!is_rtcp(&[0x80, 0, 0, 1, 1, 2, 3, 4])); // PCMU
        assert!(!is_rtcp(&[0x80, 0x80 | 8, 0, 1, 1, 2, 3, 4])); // PCMA with marker
        assert!(!is_rtcp(&[0x81, 200, 0, 6])); // short
    }

    #[test]
    fn remote_rtcp_address_rules() {
        let a: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let r = Remote::new(a);
        assert_eq!(r.rtcp_expected(), Some("192.0.2.1:4001".parse().unwrap()));
        let r = r.with_rtcp("192.0.2.1:5555".parse().unwrap());
        assert_eq!(r.rtcp_expected(), Some("192.0.2.1:5555".parse().unwrap()));
        assert_eq!(r.with_rtcp_mux(true).rtcp_expected(), Some(a));
        assert_eq!(Remote::default().rtcp_expected(), None);
        let hold = Remote::new("0.0.0.0:4000".parse().unwrap());
        assert_eq!((hold.rtp_expected(), hold.rtcp_expected()), (None, None));
        assert_eq!(
            Remote::new("192.0.2.1:0".parse().unwrap()).rtp_expected(),
            None
        );
        assert_eq!(
            Remote::new("192.0.2.1:65535".parse().unwrap()).rtcp_expected(),
            None
        );
    }

    #[test]
    fn timeout_config_from_secs() {
        assert_eq!(RelayConfig::with_timeout_secs(0).media_timeout, None);
        assert_eq!(
            RelayConfig::with_timeout_secs(30).media_timeout,
            Some(Duration::from_secs(30))
        );
    }
}
