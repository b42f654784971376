//! The tokio task around one [`Endpoint`] and its [`EndpointHandle`].
//!
//! Owns: the leg's two sockets, the latch towards the phone (symmetric RTP, as the relay
//! does, so phones behind NAT hear us), the media timeout, and the one 20 ms clock that
//! paces the endpoint. Must not: know SIP, or open files (recordings come in opened, prompts
//! decoded). RTCP is read and dropped: the phone's reports change nothing we send.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tracing::debug;

use super::dtmf::Digit;
use super::endpoint::{Endpoint, EndpointError, EndpointEvent, MediaLink, RecordLimits};
use super::latch::{Latch, LatchConfig, Probe, Verdict};
use super::player::Item;
use super::ports::LegSockets;
use super::recorder::Recorder;
use super::timeout::MediaTimeout;
use super::transcode::{LegFormat, TICK_MS};
use super::Remote;

const BUF: usize = 2048;
/// Events buffered for the call; key presses beyond it would be lost, so it is roomy.
const EVENTS: usize = 64;

/// Settings of an endpoint task.
#[derive(Debug, Clone, Copy)]
pub struct EndpointConfig {
    /// Report [`EndpointTaskEvent::MediaTimeout`] after this long without RTP.
    pub media_timeout: Option<Duration>,
    pub latch: LatchConfig,
}

/// What the task reports to the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointTaskEvent {
    Media(EndpointEvent),
    /// No RTP from the phone for `idle`.
    MediaTimeout {
        idle: Duration,
    },
}

enum Command {
    Remote(Remote),
    Play {
        id: u64,
        items: Vec<Item>,
        looping: bool,
        barge_in: bool,
    },
    StopPlay,
    Record {
        id: u64,
        recorder: Recorder,
        limits: RecordLimits,
    },
    StopRecord,
    Digit(Digit),
    SendDigit(Digit, u32),
    Sending(bool),
    Link(Option<Box<dyn MediaLink>>),
    HungUp,
}

/// Controls one endpoint task. Dropping it (or [`EndpointHandle::close`]) ends the task,
/// which closes a recording in progress.
pub struct EndpointHandle {
    ctrl: mpsc::UnboundedSender<Command>,
    events: mpsc::Receiver<EndpointTaskEvent>,
    task: JoinHandle<()>,
    rate: u32,
    local: SocketAddr,
}

impl EndpointHandle {
    /// Starts an endpoint on `sockets` for a leg that negotiated `format`, sending to
    /// `remote` (from the phone's SDP) until the phone's own packets say otherwise.
    pub fn spawn(
        sockets: LegSockets,
        format: LegFormat,
        remote: Remote,
        config: EndpointConfig,
    ) -> Result<EndpointHandle, EndpointError> {
        let endpoint = Endpoint::new(format, rand::random(), rand::random(), rand::random())?;
        let rate = endpoint.rate();
        let local = sockets.rtp_addr();
        let (ctrl_tx, ctrl_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::channel(EVENTS);
        let task = tokio::spawn(run(sockets, endpoint, remote, config, ctrl_rx, ev_tx));
        Ok(EndpointHandle {
            ctrl: ctrl_tx,
            events: ev_rx,
            task,
            rate,
            local,
        })
    }

    /// The PCM rate prompts must be decoded to and recordings are made at.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Our RTP address (the SDP sent to the phone names it).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn set_remote(&self, remote: Remote) {
        let _ = self.ctrl.send(Command::Remote(remote));
    }

    pub fn play(&self, id: u64, items: Vec<Item>, looping: bool, barge_in: bool) {
        let _ = self.ctrl.send(Command::Play {
            id,
            items,
            looping,
            barge_in,
        });
    }

    pub fn stop_play(&self) {
        let _ = self.ctrl.send(Command::StopPlay);
    }

    pub fn record(&self, id: u64, recorder: Recorder, limits: RecordLimits) {
        let _ = self.ctrl.send(Command::Record {
            id,
            recorder,
            limits,
        });
    }

    pub fn stop_record(&self) {
        let _ = self.ctrl.send(Command::StopRecord);
    }

    /// A key press that came by SIP INFO.
    pub fn digit(&self, digit: Digit) {
        let _ = self.ctrl.send(Command::Digit(digit));
    }

    /// Sends a key press to the phone as RFC 4733 events lasting `duration_ms` (the leg
    /// must have negotiated telephone-event: see [`LegFormat::dtmf_pt`]; else nothing).
    pub fn send_digit(&self, digit: Digit, duration_ms: u32) {
        let _ = self.ctrl.send(Command::SendDigit(digit, duration_ms));
    }

    /// Connects the leg to a conference room (or another leg), or lets go of it.
    pub fn link(&self, link: Option<Box<dyn MediaLink>>) {
        let _ = self.ctrl.send(Command::Link(link));
    }

    /// The caller hung up: a recording in progress is closed at once (its end reported
    /// as `HungUp`), playback and link stop; the task runs on until closed.
    pub fn hung_up(&self) {
        let _ = self.ctrl.send(Command::HungUp);
    }

    /// Send our stream or pause it (the phone put us on hold).
    pub fn set_sending(&self, on: bool) {
        let _ = self.ctrl.send(Command::Sending(on));
    }

    /// The next event; `None` once the task is gone.
    pub async fn next_event(&mut self) -> Option<EndpointTaskEvent> {
        self.events.recv().await
    }

    /// Ends the task and waits for it: a recording in progress is closed (and its end
    /// reported, if anyone still reads events), the ports are free when this returns.
    pub async fn close(self) {
        let EndpointHandle { ctrl, task, .. } = self;
        drop(ctrl);
        let _ = task.await;
    }
}

struct State {
    endpoint: Endpoint,
    rtp: Latch,
    timeout: MediaTimeout,
    events: mpsc::Sender<EndpointTaskEvent>,
    pending: Vec<EndpointEvent>,
    timeout_reported: bool,
}

impl State {
    fn flush(&mut self) {
        for ev in self.pending.drain(..) {
            // A full queue means the call is not reading: nothing better to do than drop.
            let _ = self.events.try_send(EndpointTaskEvent::Media(ev));
        }
    }

    fn command(&mut self, cmd: Command) {
        let ev = &mut self.pending;
        match cmd {
            Command::Remote(r) => self.rtp.set_expected(r.rtp_expected()),
            Command::Play {
                id,
                items,
                looping,
                barge_in,
            } => {
                if let Err(e) = self.endpoint.play(id, items, looping, barge_in, ev) {
                    // Prompts come decoded at our rate; this is a bug upstream, not a
                    // reason to leave the app waiting.
                    debug!(error = %e, "playback refused");
                    ev.push(EndpointEvent::PlayDone {
                        id,
                        end: super::endpoint::PlayEnd::Stopped,
                    });
                }
            }
            Command::StopPlay => self.endpoint.stop_play(ev),
            Command::Record {
                id,
                recorder,
                limits,
            } => self.endpoint.record(id, recorder, limits, ev),
            Command::StopRecord => self.endpoint.stop_record(ev),
            Command::Digit(d) => self.endpoint.on_signal_digit(d, ev),
            Command::SendDigit(d, ms) => {
                if !self.endpoint.send_digit(d, ms) {
                    debug!(digit = %d, "no telephone-event on this leg: key not sent");
                }
            }
            Command::Sending(on) => self.endpoint.set_sending(on),
            Command::Link(link) => self.endpoint.set_link(link),
            Command::HungUp => self.endpoint.hung_up(ev),
        }
        self.flush();
    }

    fn drain(&mut self, sock: &tokio::net::UdpSocket, buf: &mut [u8; BUF]) {
        let now = Instant::now();
        for _ in 0..32 {
            let (n, src) = match sock.try_recv_from(buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => continue,
            };
            let pkt = &buf[..n];
            // RTCP muxed on the RTP port has packet types 192-223 in its second byte
            // (RFC 5761 4), where RTP has the marker bit and payload type.
            if !(12..BUF).contains(&n) || pkt[0] >> 6 != 2 || (192..=223).contains(&pkt[1]) {
                continue; // truncated, not RTP, or RTCP muxed on the RTP port
            }
            let probe = Probe::Rtp {
                ssrc: u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]),
                seq: u16::from_be_bytes([pkt[2], pkt[3]]),
            };
            match self.rtp.on_packet(src, probe, now) {
                Verdict::Drop => continue,
                Verdict::Accept => {}
                Verdict::Latched(addr) => debug!(%addr, "endpoint latched"),
            }
            self.timeout.on_rtp(now);
            self.timeout_reported = false;
            self.endpoint.on_rtp(pkt, now, &mut self.pending);
        }
        self.flush();
    }

    fn tick(&mut self, sock: &tokio::net::UdpSocket) {
        let now = Instant::now();
        let dst = self.rtp.destination();
        self.endpoint.on_tick(
            now,
            &mut |p| {
                if let Some(d) = dst {
                    // A full socket buffer drops a packet; the phone conceals it.
                    let _ = sock.try_send_to(p, d);
                }
            },
            &mut self.pending,
        );
        self.flush();
        if let Some(idle) = self.timeout.poll(now) {
            if !self.timeout_reported {
                self.timeout_reported = true;
                let _ = self
                    .events
                    .try_send(EndpointTaskEvent::MediaTimeout { idle });
            }
        }
    }
}

async fn run(
    io: LegSockets,
    endpoint: Endpoint,
    remote: Remote,
    config: EndpointConfig,
    mut ctrl: mpsc::UnboundedReceiver<Command>,
    events: mpsc::Sender<EndpointTaskEvent>,
) {
    let now = Instant::now();
    let mut st = State {
        endpoint,
        rtp: Latch::new(config.latch, remote.rtp_expected()),
        timeout: MediaTimeout::new(config.media_timeout, None, now),
        events,
        pending: Vec::new(),
        timeout_reported: false,
    };
    let mut buf = [0u8; BUF];
    let mut clock = tokio::time::interval(Duration::from_millis(u64::from(TICK_MS)));
    // A late tick catches up: the phone's stream must keep its rate.
    clock.set_missed_tick_behavior(MissedTickBehavior::Burst);
    debug!(local = %io.rtp_addr(), "endpoint started");
    loop {
        tokio::select! {
            biased;
            cmd = ctrl.recv() => match cmd {
                Some(cmd) => st.command(cmd),
                None => break,
            },
            _ = clock.tick() => st.tick(&io.rtp),
            r = io.rtp.readable() => {
                if r.is_err() {
                    break;
                }
                st.drain(&io.rtp, &mut buf);
            }
            r = io.rtcp.readable() => {
                if r.is_err() {
                    break;
                }
                while io.rtcp.try_recv_from(&mut buf).is_ok() {}
            }
        }
    }
    st.endpoint.close(&mut st.pending);
    st.flush();
    debug!(local = %io.rtp_addr(), "endpoint stopped");
}
