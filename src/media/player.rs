//! Playing sound files into a leg: prompts, playlists and music on hold.
//!
//! Owns: decoding a sound file into mono PCM ([`decode_file`]: WAV and FLAC through
//! symphonia), converting it to a leg's rate ([`resample`]), the decoded prompts shared
//! between calls ([`Prompt`], [`PromptCache`]) and the playback state of one leg
//! ([`Player`]: a playlist of prompts and silences, loop mode, barge-in). Must not: read a
//! clock, own a timer or a socket, or encode: the media task's one 20 ms clock calls
//! [`Player::next_frame`] and encodes the frame for the leg's codec.
//!
//! Files are decoded whole, once per (file, rate), and shared behind an `Arc`. Music on
//! hold is the one long file, and many calls play it at once: one shared decoded copy
//! (10 minutes of 8 kHz audio is 9.6 MB) is cheaper than a decoder and a read buffer per
//! call, and keeps blocking file reads out of the media tasks' ticks. Files longer than
//! [`MAX_SOUND_SECS`] are refused rather than streamed.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;
use thiserror::Error;

use super::resample::{FrameResampler, ResampleError};

/// The longest sound file we decode, in seconds (at 48 kHz, 10 minutes is 58 MB of mono
/// PCM while it is decoded).
pub const MAX_SOUND_SECS: u64 = 600;

/// Errors of the player; each names the file it is about.
#[derive(Debug, Error)]
pub enum PlayerError {
    #[error("{}: cannot open: {}", .path.display(), .source)]
    Open { path: PathBuf, source: io::Error },
    #[error("{}: not a sound file we can play (WAV or FLAC): {}", .path.display(), .why)]
    Unsupported { path: PathBuf, why: String },
    #[error("{}: corrupt sound file: {}", .path.display(), .why)]
    Corrupt { path: PathBuf, why: String },
    #[error("{}: the file holds no audio", .path.display())]
    Empty { path: PathBuf },
    #[error("{}: longer than {} s; cut it or lower its sample rate", .path.display(), MAX_SOUND_SECS)]
    TooLong { path: PathBuf },
    #[error("{}: {}", .path.display(), .source)]
    Resample {
        path: PathBuf,
        source: ResampleError,
    },
    #[error("{}: decoded at {} Hz, but the player runs at {} Hz", .path.display(), .have, .want)]
    RateMismatch { path: PathBuf, have: u32, want: u32 },
    #[error("player rate {0} Hz: not a whole number of samples per 20 ms")]
    Rate(u32),
}

/// A sound file decoded to mono PCM at the file's own rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub rate: u32,
    pub samples: Vec<i16>,
}

/// Decodes a whole sound file (WAV of any PCM depth or float, or FLAC) into mono PCM at
/// its own rate; channels are averaged (a sum could clip).
pub fn decode_file(path: &Path) -> Result<Decoded, PlayerError> {
    let file = File::open(path).map_err(|source| PlayerError::Open {
        path: path.to_owned(),
        source,
    })?;
    let stream = MediaSourceStream::new(Box::new(file), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let probed = symphonia::default::get_probe()
        .format(
            &hint,
            stream,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .map_err(|e| symphonia_error(path, e))?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| PlayerError::Unsupported {
            path: path.to_owned(),
            why: "no audio track".into(),
        })?;
    let track_id = track.id;
    let rate = match track.codec_params.sample_rate {
        Some(r) if r > 0 => r,
        _ => {
            return Err(PlayerError::Corrupt {
                path: path.to_owned(),
                why: "no sample rate".into(),
            })
        }
    };
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|e| symphonia_error(path, e))?;

    let max_samples = MAX_SOUND_SECS * u64::from(rate);
    let mut samples = Vec::new();
    let mut interleaved: Option<SampleBuffer<i16>> = None;
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            // The readers say "end of stream" this way; a file cut short ends here too,
            // and plays what it has.
            Err(SymphoniaError::IoError(e)) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(SymphoniaError::ResetRequired) => break,
            Err(e) => return Err(symphonia_error(path, e)),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let audio = decoder
            .decode(&packet)
            .map_err(|e| symphonia_error(path, e))?;
        let spec = *audio.spec();
        let channels = spec.channels.count().max(1);
        let need = audio.capacity() * channels;
        let buf = match &mut interleaved {
            Some(b) if b.capacity() >= need => b,
            slot => slot.insert(SampleBuffer::new(audio.capacity() as u64, spec)),
        };
        buf.copy_interleaved_ref(audio);
        for frame in buf.samples().chunks_exact(channels) {
            let sum: i32 = frame.iter().map(|s| i32::from(*s)).sum();
            // The average of i16 values fits an i16.
            samples.push((sum / channels as i32) as i16);
        }
        if samples.len() as u64 > max_samples {
            return Err(PlayerError::TooLong {
                path: path.to_owned(),
            });
        }
    }
    if samples.is_empty() {
        return Err(PlayerError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(Decoded { rate, samples })
}

fn symphonia_error(path: &Path, e: SymphoniaError) -> PlayerError {
    let path = path.to_owned();
    match e {
        SymphoniaError::Unsupported(why) => PlayerError::Unsupported {
            path,
            why: why.into(),
        },
        // An I/O error here is nearly always a header cut short.
        other => PlayerError::Corrupt {
            path,
            why: other.to_string(),
        },
    }
}

/// Converts a whole sound from `from` to `to` Hz: `ceil(len * to / from)` samples out,
/// aligned with the input (the resampler's delay is cut off the front, and its tail
/// flushed with zeros so the end is not lost).
pub fn resample(input: &[i16], from: u32, to: u32) -> Result<Vec<i16>, ResampleError> {
    if from == to {
        return Ok(input.to_vec());
    }
    // 20 ms frames suit the usual rates; a rate like 11025 Hz needs 40 ms (441 samples)
    // to be a whole frame, and one second always is.
    let mut resampler = FrameResampler::new(from, to, 20);
    for ms in [40, 100, 1000] {
        if resampler.is_ok() {
            break;
        }
        resampler = FrameResampler::new(from, to, ms);
    }
    let mut r = resampler?;
    let want = (input.len() as u64 * u64::from(to)).div_ceil(u64::from(from)) as usize;
    let delay = r.delay();
    let mut out = Vec::with_capacity(want + delay + r.output_len());
    let mut frame = vec![0i16; r.input_len()];
    let mut buf = vec![0i16; r.output_len()];
    let mut chunks = input.chunks(r.input_len());
    while out.len() < want + delay {
        let filled = match chunks.next() {
            Some(chunk) => {
                frame[..chunk.len()].copy_from_slice(chunk);
                chunk.len()
            }
            None => 0,
        };
        // The last partial frame and the flush after it are padded with silence.
        frame[filled..].fill(0);
        let n = r.process(&frame, &mut buf)?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out.drain(..delay.min(out.len()));
    out.truncate(want);
    Ok(out)
}

/// A sound decoded and converted to one rate, ready to play; shared between calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    path: PathBuf,
    rate: u32,
    samples: Vec<i16>,
}

impl Prompt {
    /// Decodes `path` and converts it to `rate`.
    pub fn load(path: &Path, rate: u32) -> Result<Prompt, PlayerError> {
        let decoded = decode_file(path)?;
        let samples = resample(&decoded.samples, decoded.rate, rate).map_err(|source| {
            PlayerError::Resample {
                path: path.to_owned(),
                source,
            }
        })?;
        Ok(Prompt {
            path: path.to_owned(),
            rate,
            samples,
        })
    }

    /// A prompt from PCM made elsewhere (tones, speech synthesis); `name` stands in for
    /// the path in errors and in the cache.
    pub fn from_samples(name: impl Into<PathBuf>, rate: u32, samples: Vec<i16>) -> Prompt {
        Prompt {
            path: name.into(),
            rate,
            samples,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    pub fn samples(&self) -> &[i16] {
        &self.samples
    }

    pub fn duration(&self) -> Duration {
        samples_to_duration(self.samples.len() as u64, self.rate)
    }

    /// The memory its samples take.
    pub fn bytes(&self) -> usize {
        self.samples.len() * std::mem::size_of::<i16>()
    }
}

fn samples_to_duration(samples: u64, rate: u32) -> Duration {
    Duration::from_micros(samples * 1_000_000 / u64::from(rate.max(1)))
}

/// Decoded prompts by (path, rate), bounded in bytes, least recently used out first.
///
/// Plain data: the engine keeps one behind a mutex and may load outside the lock with
/// [`Prompt::load`] then [`PromptCache::insert`]. An evicted prompt lives on in the
/// players still holding its `Arc`. Paths are compared as given, not canonicalised; a
/// file replaced on disk is picked up after [`PromptCache::invalidate`].
#[derive(Debug)]
pub struct PromptCache {
    max_bytes: usize,
    used: usize,
    clock: u64,
    entries: HashMap<(PathBuf, u32), (Arc<Prompt>, u64)>,
}

impl PromptCache {
    pub fn new(max_bytes: usize) -> PromptCache {
        PromptCache {
            max_bytes,
            used: 0,
            clock: 0,
            entries: HashMap::new(),
        }
    }

    /// The prompt for `path` at `rate`, loaded on a miss.
    pub fn get(&mut self, path: &Path, rate: u32) -> Result<Arc<Prompt>, PlayerError> {
        if let Some(p) = self.lookup(path, rate) {
            return Ok(p);
        }
        let prompt = Arc::new(Prompt::load(path, rate)?);
        Ok(self.insert(prompt))
    }

    /// The cached prompt, if any.
    pub fn lookup(&mut self, path: &Path, rate: u32) -> Option<Arc<Prompt>> {
        self.clock += 1;
        let clock = self.clock;
        // A borrowed (&Path, u32) key cannot look up a (PathBuf, u32) map; one small
        // allocation per play is no concern.
        let entry = self.entries.get_mut(&(path.to_owned(), rate))?;
        entry.1 = clock;
        Some(Arc::clone(&entry.0))
    }

    /// Caches `prompt` and returns the cached copy (an earlier one wins when two loads
    /// raced). A prompt larger than the whole bound is returned uncached.
    pub fn insert(&mut self, prompt: Arc<Prompt>) -> Arc<Prompt> {
        if let Some(p) = self.lookup(&prompt.path, prompt.rate) {
            return p;
        }
        let size = prompt.bytes();
        if size > self.max_bytes {
            return prompt;
        }
        while self.used + size > self.max_bytes {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some((p, _)) = self.entries.remove(&oldest) {
                self.used -= p.bytes();
            }
        }
        self.used += size;
        self.entries.insert(
            (prompt.path.clone(), prompt.rate),
            (Arc::clone(&prompt), self.clock),
        );
        prompt
    }

    /// Forgets `path` at every rate (the file was replaced).
    pub fn invalidate(&mut self, path: &Path) {
        let used = &mut self.used;
        self.entries.retain(|(p, _), (prompt, _)| {
            let keep = p != path;
            if !keep {
                *used -= prompt.bytes();
            }
            keep
        });
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The bytes of samples held.
    pub fn bytes(&self) -> usize {
        self.used
    }
}

/// One entry of a playlist.
#[derive(Debug, Clone)]
pub enum Item {
    Sound(Arc<Prompt>),
    Silence { ms: u32 },
}

/// What [`Player::next_frame`] put in the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameOutcome {
    /// Playlist audio (silence items included; the tail of the last frame is padded).
    Playing,
    /// The playlist has ended; the frame is silence.
    Finished,
    /// [`Player::stop`] was called; the frame is silence.
    Stopped,
}

/// Where a player is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The playlist item playing (the item count once finished).
    pub item: usize,
    /// How far into that item.
    pub offset: Duration,
    /// Times the playlist wrapped around in loop mode.
    pub loops: u32,
    /// Playlist audio given out in all, silence items included.
    pub played: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Playing,
    Finished,
    Stopped,
}

/// The playback of one leg: a playlist played one frame per tick of the media clock.
#[derive(Debug)]
pub struct Player {
    rate: u32,
    items: Vec<Item>,
    /// Samples of one pass over the playlist.
    cycle_len: usize,
    item: usize,
    offset: usize,
    /// Samples into the current pass, for the fades at the loop seam.
    cycle_pos: usize,
    loops: u32,
    played: u64,
    looping: bool,
    state: State,
}

impl Player {
    /// An empty player giving PCM at `rate` (8000, 16000, 48000: any rate with a whole
    /// number of samples in 20 ms).
    pub fn new(rate: u32) -> Result<Player, PlayerError> {
        if rate == 0 || rate % 50 != 0 {
            return Err(PlayerError::Rate(rate));
        }
        Ok(Player {
            rate,
            items: Vec::new(),
            cycle_len: 0,
            item: 0,
            offset: 0,
            cycle_pos: 0,
            loops: 0,
            played: 0,
            looping: false,
            state: State::Playing,
        })
    }

    /// A player for `items`.
    pub fn with_items(
        rate: u32,
        items: impl IntoIterator<Item = Item>,
    ) -> Result<Player, PlayerError> {
        let mut player = Player::new(rate)?;
        for item in items {
            player.push(item)?;
        }
        Ok(player)
    }

    /// Appends an item; a finished (not stopped) player plays on with it.
    pub fn push(&mut self, item: Item) -> Result<(), PlayerError> {
        if let Item::Sound(p) = &item {
            if p.rate != self.rate {
                return Err(PlayerError::RateMismatch {
                    path: p.path.clone(),
                    have: p.rate,
                    want: self.rate,
                });
            }
        }
        self.cycle_len += self.item_len(&item);
        self.items.push(item);
        if self.state == State::Finished {
            self.state = State::Playing;
        }
        Ok(())
    }

    /// Loop mode (music on hold): the playlist starts over when it ends, with a short
    /// fade out and in at the seam so the jump between its end and its start does not
    /// click.
    pub fn set_loop(&mut self, on: bool) {
        self.looping = on;
    }

    /// Barge-in: stops at once; every later frame is silence.
    pub fn stop(&mut self) {
        self.state = State::Stopped;
    }

    pub fn is_done(&self) -> bool {
        self.state != State::Playing
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// The samples of one 20 ms frame.
    pub fn frame_len(&self) -> usize {
        (self.rate / 50) as usize
    }

    pub fn position(&self) -> Position {
        Position {
            item: self.item,
            offset: samples_to_duration(self.offset as u64, self.rate),
            loops: self.loops,
            played: samples_to_duration(self.played, self.rate),
        }
    }

    /// Fills `out` (one frame: [`Player::frame_len`] samples) with what plays next.
    pub fn next_frame(&mut self, out: &mut [i16]) -> FrameOutcome {
        match self.state {
            State::Stopped => {
                out.fill(0);
                return FrameOutcome::Stopped;
            }
            State::Finished => {
                out.fill(0);
                return FrameOutcome::Finished;
            }
            State::Playing => {}
        }
        let mut n = 0;
        while n < out.len() {
            if self.item >= self.items.len() {
                // An empty pass would wrap forever.
                if self.looping && self.cycle_len > 0 {
                    self.item = 0;
                    self.offset = 0;
                    self.cycle_pos = 0;
                    self.loops += 1;
                    continue;
                }
                break;
            }
            let item = &self.items[self.item];
            let len = self.item_len(item);
            let take = (len - self.offset).min(out.len() - n);
            let dst = &mut out[n..n + take];
            match item {
                Item::Sound(p) => dst.copy_from_slice(&p.samples[self.offset..self.offset + take]),
                Item::Silence { .. } => dst.fill(0),
            }
            if self.looping {
                self.fade(dst);
            }
            n += take;
            self.offset += take;
            self.cycle_pos += take;
            self.played += take as u64;
            if self.offset == len {
                self.item += 1;
                self.offset = 0;
            }
        }
        out[n..].fill(0);
        if n == 0 {
            self.state = State::Finished;
            return FrameOutcome::Finished;
        }
        FrameOutcome::Playing
    }

    /// Raised-cosine fades over the 10 ms each side of the loop seam (less for a
    /// playlist shorter than 20 ms); `samples` start at `self.cycle_pos`.
    fn fade(&self, samples: &mut [i16]) {
        let fade = (self.rate as usize / 100).min(self.cycle_len / 2);
        if fade == 0 {
            return;
        }
        for (i, s) in samples.iter_mut().enumerate() {
            let pos = self.cycle_pos + i;
            // The very first pass starts as recorded: there is no seam before it.
            let k = if pos < fade && self.loops > 0 {
                pos
            } else if pos >= self.cycle_len - fade {
                self.cycle_len - 1 - pos
            } else {
                continue;
            };
            let x = std::f32::consts::PI * (k as f32 + 0.5) / fade as f32;
            let gain = 0.5 - 0.5 * x.cos();
            *s = (f32::from(*s) * gain).round() as i16;
        }
    }

    fn item_len(&self, item: &Item) -> usize {
        match item {
            Item::Sound(p) => p.samples.len(),
            Item::Silence { ms } => (u64::from(self.rate) * u64::from(*ms) / 1000) as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn tone(rate: u32, hz: f64, samples: usize, amp: f64) -> Vec<f64> {
        (0..samples)
            .map(|i| amp * (2.0 * PI * hz * i as f64 / f64::from(rate)).sin())
            .collect()
    }

    /// The share of the signal's power at `hz` (about 1 for a pure tone there).
    fn power_ratio(x: &[i16], rate: u32, hz: f64) -> f64 {
        let coeff = 2.0 * (2.0 * PI * hz / f64::from(rate)).cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for v in x {
            let s = f64::from(*v) + coeff * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        let bin = s1 * s1 + s2 * s2 - coeff * s1 * s2;
        let energy: f64 = x.iter().map(|v| f64::from(*v).powi(2)).sum();
        2.0 * bin / (x.len() as f64 * energy.max(1e-9))
    }

    /// How many samples `x` (which starts at index `start`) lags a sine at `hz` that
    /// starts at index 0.
    fn lag_samples(x: &[i16], start: usize, rate: u32, hz: f64) -> f64 {
        let w = 2.0 * PI * hz / f64::from(rate);
        let (mut re, mut im) = (0.0, 0.0);
        for (i, v) in x.iter().enumerate() {
            let t = w * (start + i) as f64;
            re += f64::from(*v) * t.sin();
            im += f64::from(*v) * t.cos();
        }
        -im.atan2(re) / w
    }

    #[derive(Clone, Copy, Debug)]
    enum Depth {
        U8,
        I16,
        I24,
        F32,
    }

    /// Writes a WAV of `frames` (one Vec per channel, values in -1..1).
    fn write_wav(path: &Path, rate: u32, depth: Depth, channels: &[Vec<f64>]) {
        let (bits, format) = match depth {
            Depth::U8 => (8, hound::SampleFormat::Int),
            Depth::I16 => (16, hound::SampleFormat::Int),
            Depth::I24 => (24, hound::SampleFormat::Int),
            Depth::F32 => (32, hound::SampleFormat::Float),
        };
        let spec = hound::WavSpec {
            channels: channels.len() as u16,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: format,
        };
        let mut w = hound::WavWriter::create(path, spec).expect("create wav");
        for i in 0..channels[0].len() {
            for ch in channels {
                let v = ch[i];
                match depth {
                    Depth::U8 => w.write_sample((v * 127.0).round() as i8),
                    Depth::I16 => w.write_sample((v * 32767.0).round() as i16),
                    Depth::I24 => w.write_sample((v * 8_388_607.0).round() as i32),
                    Depth::F32 => w.write_sample(v as f32),
                }
                .expect("sample");
            }
        }
        w.finalize().expect("finalize");
    }

    #[test]
    fn wavs_of_several_rates_depths_and_channels_decode_to_mono() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (rate, depth, channels) in [
            (8000, Depth::I16, 1),
            (16000, Depth::I24, 2),
            (22050, Depth::U8, 1),
            (44100, Depth::I16, 2),
            (48000, Depth::F32, 1),
            (11025, Depth::I16, 3),
        ] {
            let path = dir.path().join(format!("t{rate}.wav"));
            let len = rate as usize / 2;
            let t = tone(rate, 440.0, len, 0.5);
            write_wav(&path, rate, depth, &vec![t.clone(); channels]);
            let d = decode_file(&path).expect("decode");
            assert_eq!(
                (d.rate, d.samples.len()),
                (rate, len),
                "{depth:?} x{channels}"
            );
            let tol = if matches!(depth, Depth::U8) { 300 } else { 2 };
            for (got, want) in d.samples.iter().zip(&t) {
                assert!(
                    (i32::from(*got) - (want * 32767.0) as i32).abs() <= tol,
                    "{rate} {depth:?}: {got} vs {want}"
                );
            }
        }
        // A tone on the left only comes out at half its level: channels are averaged.
        let path = dir.path().join("left.wav");
        let t = tone(8000, 440.0, 800, 0.8);
        write_wav(&path, 8000, Depth::I16, &[t.clone(), vec![0.0; 800]]);
        let d = decode_file(&path).expect("decode");
        let peak = d
            .samples
            .iter()
            .map(|s| s.unsigned_abs())
            .max()
            .unwrap_or(0);
        assert!((13000..=13200).contains(&peak), "peak {peak}");
    }

    #[test]
    fn resampling_keeps_length_alignment_and_frequency() {
        let dir = tempfile::tempdir().expect("tempdir");
        for from in [8000, 11025, 16000, 44100, 48000] {
            // An odd length, so the last frame is partial.
            let len = from as usize * 7 / 10 + 13;
            let path = dir.path().join(format!("f{from}.wav"));
            write_wav(&path, from, Depth::I16, &[tone(from, 440.0, len, 0.5)]);
            for to in [8000, 16000, 48000] {
                let p = Prompt::load(&path, to).expect("load");
                let want = (len as u64 * u64::from(to)).div_ceil(u64::from(from)) as usize;
                assert_eq!(p.samples().len(), want, "{from}->{to}");
                assert!(
                    p.duration() >= Duration::from_millis(700),
                    "{from}->{to} {:?}",
                    p.duration()
                );
                let ratio = power_ratio(p.samples(), to, 440.0);
                let off = power_ratio(p.samples(), to, 600.0);
                assert!(ratio > 0.95 && off < 0.01, "{from}->{to}: {ratio} {off}");
                // The delay is compensated: the tone keeps its time, within a sample of
                // the coarser rate (rubato reports its delay in whole output samples; at
                // 11025 Hz the true one is half an input sample, 45 us, more).
                let edge = to as usize / 20;
                let lag = lag_samples(&p.samples()[edge..want - edge], edge, to, 440.0);
                let coarse = 1.0 / f64::from(from.min(to));
                assert!(
                    lag.abs() / f64::from(to) < coarse,
                    "{from}->{to}: {lag:.2} samples late"
                );
            }
        }
    }

    fn constant(name: &str, rate: u32, value: i16, len: usize) -> Arc<Prompt> {
        Arc::new(Prompt::from_samples(name, rate, vec![value; len]))
    }

    fn play_all(player: &mut Player, max_frames: usize) -> (Vec<i16>, Vec<FrameOutcome>) {
        let mut out = Vec::new();
        let mut outcomes = Vec::new();
        let mut frame = vec![0i16; player.frame_len()];
        for _ in 0..max_frames {
            let o = player.next_frame(&mut frame);
            outcomes.push(o);
            if o != FrameOutcome::Playing {
                break;
            }
            out.extend_from_slice(&frame);
        }
        (out, outcomes)
    }

    #[test]
    fn a_playlist_plays_its_items_in_order_with_silences() {
        let a = constant("a", 8000, 1000, 250);
        let b = constant("b", 8000, 2000, 100);
        let mut p = Player::with_items(
            8000,
            [Item::Sound(a), Item::Silence { ms: 30 }, Item::Sound(b)],
        )
        .expect("player");
        let (out, outcomes) = play_all(&mut p, 100);
        // 250 + 240 + 100 = 590 samples: four frames, the last padded with silence.
        assert_eq!(out.len(), 640);
        assert_eq!(outcomes.len(), 5);
        assert_eq!(outcomes[4], FrameOutcome::Finished);
        assert!(out[..250].iter().all(|s| *s == 1000));
        assert!(out[250..490].iter().all(|s| *s == 0));
        assert!(out[490..590].iter().all(|s| *s == 2000));
        assert!(out[590..].iter().all(|s| *s == 0));
        assert!(p.is_done());
        assert_eq!(p.position().played, Duration::from_micros(590 * 125));
        let mut frame = [7i16; 160];
        assert_eq!(p.next_frame(&mut frame), FrameOutcome::Finished);
        assert!(frame.iter().all(|s| *s == 0));
        // More items revive a finished player.
        p.push(Item::Silence { ms: 20 }).expect("push");
        assert_eq!(p.next_frame(&mut frame), FrameOutcome::Playing);
    }

    #[test]
    fn the_loop_seam_does_not_click() {
        let rate = 8000;
        // 0.33 s of 440 Hz ends mid-cycle: a plain wrap would jump.
        let len = 2640;
        let samples: Vec<i16> = tone(rate, 440.0, len, 16000.0)
            .iter()
            .map(|v| *v as i16)
            .collect();
        let max_step = |x: &[i16]| {
            x.windows(2)
                .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
                .max()
                .unwrap_or(0)
        };
        let in_tone = max_step(&samples);
        let mut hard = samples.clone();
        hard.extend_from_slice(&samples);
        assert!(max_step(&hard) > 2 * in_tone, "the test tone must click");

        let prompt = Arc::new(Prompt::from_samples("moh", rate, samples.clone()));
        let mut p = Player::with_items(rate, [Item::Sound(prompt)]).expect("player");
        p.set_loop(true);
        let (out, outcomes) = play_all(&mut p, 50 * 3);
        assert!(outcomes.iter().all(|o| *o == FrameOutcome::Playing));
        // 3 s of a 0.33 s loop: nine seams.
        assert_eq!(p.position().loops, 9);
        // The fades bend the wave a little: allow 5 % over the tone's own steepest step.
        assert!(
            max_step(&out) <= in_tone * 21 / 20,
            "{} > {in_tone}",
            max_step(&out)
        );
        // The first pass starts untouched and the middle of each pass is unfaded.
        assert_eq!(out[..100], samples[..100]);
        assert_eq!(out[len + 500..len + 1000], samples[500..1000]);
        assert!(out[len - 1].abs() < 100 && out[len].abs() < 100);
    }

    #[test]
    fn stop_cuts_a_file_at_once() {
        let a = constant("a", 16000, 500, 16000);
        let mut p = Player::with_items(16000, [Item::Sound(a)]).expect("player");
        let mut frame = vec![0i16; p.frame_len()];
        assert_eq!(frame.len(), 320);
        for _ in 0..3 {
            assert_eq!(p.next_frame(&mut frame), FrameOutcome::Playing);
        }
        p.stop();
        assert!(p.is_done());
        assert_eq!(p.next_frame(&mut frame), FrameOutcome::Stopped);
        assert!(frame.iter().all(|s| *s == 0));
        let pos = p.position();
        assert_eq!((pos.item, pos.offset), (0, Duration::from_millis(60)));
        // A looping player stops just the same.
        p.set_loop(true);
        assert_eq!(p.next_frame(&mut frame), FrameOutcome::Stopped);
    }

    #[test]
    fn an_empty_loop_ends_instead_of_spinning() {
        let mut p = Player::new(8000).expect("player");
        p.set_loop(true);
        let mut frame = [1i16; 160];
        assert_eq!(p.next_frame(&mut frame), FrameOutcome::Finished);
        assert!(Player::new(8001).is_err() && Player::new(0).is_err());
        let wrong = constant("w.wav", 16000, 1, 10);
        let err = p.push(Item::Sound(wrong)).expect_err("rate mismatch");
        assert!(err.to_string().contains("w.wav"), "{err}");
    }

    #[test]
    fn bad_files_give_errors_naming_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.wav");
        let err = Prompt::load(&missing, 8000).expect_err("missing");
        assert!(matches!(err, PlayerError::Open { .. }), "{err}");
        assert!(err.to_string().contains("missing.wav"), "{err}");

        let garbage = dir.path().join("garbage.wav");
        std::fs::write(&garbage, b"this is not a sound file at all, just text").expect("write");
        let err = Prompt::load(&garbage, 8000).expect_err("garbage");
        assert!(err.to_string().contains("garbage.wav"), "{err}");

        // A real WAV cut inside its header, and one with no samples.
        let good = dir.path().join("good.wav");
        write_wav(&good, 8000, Depth::I16, &[tone(8000, 440.0, 800, 0.5)]);
        let bytes = std::fs::read(&good).expect("read");
        let cut = dir.path().join("cut.wav");
        std::fs::write(&cut, &bytes[..30]).expect("write");
        let err = Prompt::load(&cut, 8000).expect_err("cut header");
        assert!(err.to_string().contains("cut.wav"), "{err}");
        let empty = dir.path().join("empty.wav");
        std::fs::write(&empty, &bytes[..44]).expect("write");
        let err = Prompt::load(&empty, 8000).expect_err("no samples");
        assert!(err.to_string().contains("empty.wav"), "{err}");

        // An unsupported format: an AIFF-looking file.
        let aiff = dir.path().join("x.aiff");
        std::fs::write(&aiff, b"FORM\0\0\0\x20AIFFCOMM\0\0\0\x12").expect("write");
        let err = Prompt::load(&aiff, 8000).expect_err("aiff");
        assert!(err.to_string().contains("x.aiff"), "{err}");

        // Cut inside the samples, a file still plays what it has.
        let short = dir.path().join("short.wav");
        std::fs::write(&short, &bytes[..44 + 501]).expect("write");
        let d = decode_file(&short).expect("truncated data");
        assert_eq!(d.samples.len(), 250);
    }

    #[test]
    fn the_cache_shares_prompts_and_keeps_to_its_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = |n: &str| dir.path().join(n);
        for name in ["a.wav", "b.wav", "c.wav"] {
            // 0.5 s at 8 kHz: 8000 bytes once decoded.
            write_wav(
                &path(name),
                8000,
                Depth::I16,
                &[tone(8000, 440.0, 4000, 0.5)],
            );
        }
        let mut cache = PromptCache::new(20_000);
        let a1 = cache.get(&path("a.wav"), 8000).expect("a");
        let a2 = cache.get(&path("a.wav"), 8000).expect("a again");
        assert!(Arc::ptr_eq(&a1, &a2));
        let a16 = cache.get(&path("a.wav"), 16000).expect("a at 16k");
        assert!(!Arc::ptr_eq(&a1, &a16));
        assert_eq!(a16.samples().len(), 8000);
        // 8000 + 16000 bytes is over the bound: `a` at 8 kHz, used least recently, went.
        assert_eq!((cache.len(), cache.bytes()), (1, 16_000));
        assert!(cache.lookup(&path("a.wav"), 8000).is_none());
        let b = cache.get(&path("b.wav"), 8000).expect("b");
        assert_eq!((cache.len(), cache.bytes()), (1, 8000));
        let c = cache.get(&path("c.wav"), 8000).expect("c");
        assert_eq!((cache.len(), cache.bytes()), (2, 16_000));
        assert!(Arc::ptr_eq(
            &b,
            &cache.get(&path("b.wav"), 8000).expect("b")
        ));
        assert!(Arc::ptr_eq(
            &c,
            &cache.get(&path("c.wav"), 8000).expect("c")
        ));
        // Evicted prompts play on where they are held.
        assert_eq!(a1.samples().len(), 4000);
        cache.invalidate(&path("b.wav"));
        assert_eq!((cache.len(), cache.bytes()), (1, 8000));
        let b2 = cache.get(&path("b.wav"), 8000).expect("b reloaded");
        assert!(!Arc::ptr_eq(&b, &b2));
        // Too big for the cache at all: served, not kept.
        let mut tiny = PromptCache::new(100);
        let big = tiny.get(&path("a.wav"), 8000).expect("a");
        assert_eq!((tiny.len(), big.samples().len()), (0, 4000));
        assert!(cache.get(&path("nope.wav"), 8000).is_err());
    }

    #[test]
    fn the_sample_sounds_play() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sounds");
        for name in ["beep.wav", "beep.flac"] {
            let p = Prompt::load(&dir.join(name), 8000).expect(name);
            assert_eq!(p.duration(), Duration::from_secs(1), "{name}");
            let ratio = power_ratio(p.samples(), 8000, 440.0);
            assert!(ratio > 0.9, "{name}: {ratio}");
        }
    }
}
