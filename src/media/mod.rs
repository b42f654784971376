//! The media engine: the RTP relay that anchors the media of a B2BUA call, and the parts
//! that decode media when the relay alone is not enough.
//!
//! Owns: RTP/RTCP port pairs on the PBX's media address ([`ports`]), symmetric latching
//! ([`latch`]), the media timeout ([`timeout`]), the relay task with its handle
//! ([`relay`]), the codecs ([`codec`]: G.711, G.722, Opus), sample-rate conversion
//! ([`resample`]), transcoding of one direction of a call ([`transcode`]), the adaptive
//! jitter buffer of decoded legs with loss concealment ([`jitter`]), the pure DTMF parts
//! ([`dtmf`]: RFC 4733 events, SIP INFO bodies, in-band detection and generation), sound
//! files played into a leg ([`player`]: decoding, prompt cache, playlists, music on
//! hold), call recordings ([`recorder`]: WAV files a crash leaves playable, repaired at
//! start; [`call_recorder`]: a call's two legs decoded into one file; [`recording`]: the
//! relay's tap and the task per recorded call), the conference mixer ([`mixer`]: N-1
//! mixes of the loudest talkers on 20 ms ticks, the shared mix encoded once per codec;
//! [`conference`]: the room task), and the media endpoint of a leg the PBX answers itself
//! ([`endpoint`], sans-IO: decode, key presses, playback, recording; its task in
//! [`endpoint_task`]), and two endpoints linked back to back for an app's bridge
//! ([`bridge`]: PCM queues, resampling, the ringback tone).
//! Must not: know SIP, dialogs or SDP text; the call layer reads the SDP and passes plain
//! socket addresses and codec choices in ([`Remote`], [`transcode::LegFormat`]), and gets
//! plain events back ([`RelayEvent`]); INFO bodies come as plain text, not SIP messages.
//! The decisions are sans-IO and unit-tested with a fake clock: `latch`, `timeout`,
//! `jitter`, `dtmf`, `mixer`, `player`, `recorder` and `call_recorder` import no tokio
//! and read no clock, `ports::PortPool` is plain data beside the binding code, codecs and
//! the transcoder are packets in, packets out; `relay` and `recording` are the thin tasks
//! around them.
//!
//! A call through the relay:
//! ```text
//!  phone A --RTP--> [leg A pair] ==relay task== [leg B pair] --RTP--> phone B
//!          <--RTP--                                          <--RTP--
//! ```
//! The B2BUA allocates a pair per leg ([`PortAllocator::allocate`]), puts its address in the
//! SDP sent to that leg, starts the relay ([`Relay::spawn`]) and feeds it the remote
//! addresses from the SDP it receives ([`RelayHandle::update_remote`]).

pub mod bridge;
pub mod call_recorder;
pub mod codec;
pub mod conference;
pub mod dtmf;
pub mod endpoint;
pub mod endpoint_task;
pub mod inband;
pub mod inject;
pub mod jitter;
pub mod latch;
pub mod loss;
pub mod mixer;
pub mod player;
pub mod ports;
pub mod recorder;
pub mod recording;
pub mod relay;
pub mod resample;
#[cfg(test)]
pub(crate) mod test_signal;
pub mod timeout;
pub mod transcode;

use std::io;

use thiserror::Error;

pub use latch::LatchConfig;
pub use ports::{LegSockets, PortAllocator};
pub use relay::{
    Flow, Leg, LegStats, Relay, RelayConfig, RelayEvent, RelayHandle, RelayStats, Remote,
};

/// Root mean square of PCM samples (0 for none), in sample units.
pub(crate) fn rms(pcm: &[i16]) -> f64 {
    let sum: f64 = pcm.iter().map(|s| f64::from(*s).powi(2)).sum();
    (sum / pcm.len().max(1) as f64).sqrt()
}

/// Errors of the media layer.
#[derive(Debug, Error)]
pub enum MediaError {
    #[error("bad RTP port range {min}-{max}: need at least one even port p with p+1 <= max")]
    BadRange { min: u16, max: u16 },
    #[error("all {pairs} RTP port pairs of {min}-{max} are in use")]
    PortsExhausted { min: u16, max: u16, pairs: usize },
    #[error(
        "no RTP port pair of {min}-{max} could be bound (ports held by other processes?): {source}"
    )]
    NoBindablePort {
        min: u16,
        max: u16,
        #[source]
        source: io::Error,
    },
    #[error("DTMF: {0}")]
    Dtmf(#[from] dtmf::DtmfError),
    #[error("player: {0}")]
    Player(#[from] player::PlayerError),
    #[error("recorder: {0}")]
    Recorder(#[from] recorder::RecorderError),
    #[error("recording: {0}")]
    Recording(#[from] call_recorder::CallRecorderError),
    #[error("media socket: {0}")]
    Io(#[from] io::Error),
}
