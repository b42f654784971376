//! Recording a call to a WAV file that survives a crash.
//!
//! Owns: the WAV file of one recording ([`Recorder`]: both parties mixed into one
//! channel, or one party per stereo channel, 16-bit PCM), and putting right the files a
//! crash left behind ([`repair`], [`repair_dir`]). Must not: read a clock or decode
//! codecs: the media task hands in one 20 ms PCM frame per party per tick.
//!
//! A WAV header states its sizes, so a writer that dies before it rewrites them leaves a
//! file that players read as empty or reject. The recorder writes its own 44-byte header
//! and rewrites its sizes every second of audio, flushing its buffer at the same point, so
//! a crash loses at most the last second and leaves a playable file; [`repair`] recovers
//! even that second from the file's length, and the node runs [`repair_dir`] at start.
//! No fsync: a process crash keeps what was written to the kernel, and an fsync per
//! recording per second would cost more than a power cut's last second is worth.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Errors of the recorder; each names its file.
#[derive(Debug, Error)]
pub enum RecorderError {
    #[error("{}: {}", .path.display(), .source)]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: not a WAV file we can repair: {}", .path.display(), .why)]
    NotWav { path: PathBuf, why: &'static str },
    #[error("{}: the recording reached the 4 GiB limit of WAV", .path.display())]
    Full { path: PathBuf },
    #[error("recording rate {0} Hz: not a whole number of samples per 20 ms")]
    Rate(u32),
}

/// How the two parties go into the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One channel: both parties summed (saturating).
    Mixed,
    /// Two channels: party A left, party B right.
    Stereo,
}

impl Layout {
    fn channels(self) -> u16 {
        match self {
            Layout::Mixed => 1,
            Layout::Stereo => 2,
        }
    }
}

const HEADER_LEN: u64 = 44;
/// The RIFF size field counts everything after itself; its data size field is the last
/// header field before the samples.
const RIFF_SIZE_AT: u64 = 4;
const DATA_SIZE_AT: u64 = 40;

/// One recording in progress.
#[derive(Debug)]
pub struct Recorder {
    path: PathBuf,
    out: BufWriter<File>,
    layout: Layout,
    rate: u32,
    /// Sample bytes written after the header.
    data_bytes: u64,
    /// Sample frames since the header last told the truth.
    unsynced_frames: u64,
    /// One frame's bytes, kept to avoid an allocation per write.
    scratch: Vec<u8>,
    finished: bool,
}

impl Recorder {
    /// Starts a recording at `rate` Hz in a new file (an existing file is an error, not
    /// overwritten: it may be another call's recording).
    pub fn create(path: &Path, layout: Layout, rate: u32) -> Result<Recorder, RecorderError> {
        if rate == 0 || rate % 50 != 0 {
            return Err(RecorderError::Rate(rate));
        }
        let io_err = |source| RecorderError::Io {
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(io_err)?;
        let mut out = BufWriter::new(file);
        out.write_all(&header(layout.channels(), rate, 0))
            .and_then(|()| out.flush())
            .map_err(io_err)?;
        Ok(Recorder {
            path: path.to_owned(),
            out,
            layout,
            rate,
            data_bytes: 0,
            unsynced_frames: 0,
            scratch: Vec::new(),
            finished: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one frame of each party (20 ms of PCM at the recording's rate). A party
    /// with a shorter frame (none received this tick) is padded with silence.
    pub fn write(&mut self, frame_a: &[i16], frame_b: &[i16]) -> Result<(), RecorderError> {
        let frames = frame_a.len().max(frame_b.len());
        let at = |f: &[i16], i: usize| f.get(i).copied().unwrap_or(0);
        self.scratch.clear();
        for i in 0..frames {
            let (a, b) = (at(frame_a, i), at(frame_b, i));
            match self.layout {
                Layout::Mixed => self
                    .scratch
                    .extend_from_slice(&a.saturating_add(b).to_le_bytes()),
                Layout::Stereo => {
                    self.scratch.extend_from_slice(&a.to_le_bytes());
                    self.scratch.extend_from_slice(&b.to_le_bytes());
                }
            }
        }
        let bytes = self.scratch.len() as u64;
        if HEADER_LEN - 8 + self.data_bytes + bytes > u64::from(u32::MAX) {
            return Err(RecorderError::Full {
                path: self.path.clone(),
            });
        }
        self.out
            .write_all(&self.scratch)
            .map_err(|source| RecorderError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.data_bytes += bytes;
        self.unsynced_frames += frames as u64;
        if self.unsynced_frames >= u64::from(self.rate) {
            self.sync()?;
        }
        Ok(())
    }

    /// The audio recorded so far, in sample frames.
    pub fn frames(&self) -> u64 {
        self.data_bytes / u64::from(self.layout.channels() * 2)
    }

    /// Writes out the buffer and makes the header's sizes match the file.
    pub fn sync(&mut self) -> Result<(), RecorderError> {
        let data = self.data_bytes as u32;
        let result = (|| {
            self.out.flush()?;
            let file = self.out.get_mut();
            write_sizes(file, data)?;
            file.seek(SeekFrom::End(0))?;
            Ok(())
        })();
        self.unsynced_frames = 0;
        result.map_err(|source| RecorderError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// Ends the recording; returns its length in sample frames.
    pub fn finish(mut self) -> Result<u64, RecorderError> {
        self.finished = true;
        self.sync()?;
        Ok(self.frames())
    }
}

impl Drop for Recorder {
    /// A recorder dropped without [`Recorder::finish`] (a call task that panicked or was
    /// cancelled) still leaves a consistent file; errors have nobody to go to here.
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.sync();
        }
    }
}

/// The 44-byte header of 16-bit PCM with `data` bytes of samples.
fn header(channels: u16, rate: u32, data: u32) -> [u8; HEADER_LEN as usize] {
    let block_align = channels * 2;
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(data.saturating_add(36)).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&channels.to_le_bytes());
    h[24..28].copy_from_slice(&rate.to_le_bytes());
    h[28..32].copy_from_slice(&(rate * u32::from(block_align)).to_le_bytes());
    h[32..34].copy_from_slice(&block_align.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data.to_le_bytes());
    h
}

fn write_sizes(file: &mut File, data: u32) -> io::Result<()> {
    file.seek(SeekFrom::Start(RIFF_SIZE_AT))?;
    file.write_all(&data.saturating_add(36).to_le_bytes())?;
    file.seek(SeekFrom::Start(DATA_SIZE_AT))?;
    file.write_all(&data.to_le_bytes())
}

/// What [`repair`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// The header's sizes already matched the file.
    Intact,
    /// The sizes were rewritten from the file's length; `dropped` trailing bytes (a
    /// partial sample frame) were cut off.
    Repaired { data_bytes: u64, dropped: u64 },
}

/// Makes a WAV file left by a crash playable: the data chunk is taken to run to the end
/// of the file (a streaming writer writes it last), cut to whole sample frames, and the
/// RIFF and data sizes rewritten. A file whose sizes already agree is left alone.
pub fn repair(path: &Path) -> Result<Repair, RecorderError> {
    let io_err = |source| RecorderError::Io {
        path: path.to_owned(),
        source,
    };
    let not_wav = |why| RecorderError::NotWav {
        path: path.to_owned(),
        why,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err)?;
    let len = file.metadata().map_err(io_err)?.len();
    let mut riff = [0u8; 12];
    read_exact_or(
        &mut file,
        &mut riff,
        not_wav("shorter than a RIFF header"),
        path,
    )?;
    if &riff[0..4] != b"RIFF" || &riff[8..12] != b"WAVE" {
        return Err(not_wav("no RIFF/WAVE header"));
    }
    let riff_size = u64::from(le32(&riff[4..8]));
    // Walk the chunks up to "data", learning the frame size from "fmt ".
    let mut block_align = None;
    let mut at = 12u64;
    let (data_at, data_size) = loop {
        let mut chunk = [0u8; 8];
        read_exact_or(&mut file, &mut chunk, not_wav("no data chunk"), path)?;
        let size = u64::from(le32(&chunk[4..8]));
        match &chunk[0..4] {
            b"data" => break (at + 8, size),
            b"fmt " => {
                if size < 16 {
                    return Err(not_wav("fmt chunk too small"));
                }
                let mut fmt = [0u8; 16];
                read_exact_or(&mut file, &mut fmt, not_wav("fmt chunk cut short"), path)?;
                block_align = Some(u64::from(u16::from_le_bytes([fmt[12], fmt[13]])));
                file.seek(SeekFrom::Current(size as i64 + (size & 1) as i64 - 16))
                    .map_err(io_err)?;
            }
            _ => {
                file.seek(SeekFrom::Current(size as i64 + (size & 1) as i64))
                    .map_err(io_err)?;
            }
        }
        // Chunks are padded to an even length.
        at += 8 + size + (size & 1);
        if at >= len {
            return Err(not_wav("no data chunk"));
        }
    };
    let block_align = match block_align {
        Some(b) if b > 0 => b,
        _ => return Err(not_wav("no usable fmt chunk before the data")),
    };
    // Finished files agree with their length (chunks after the data are theirs to have).
    if riff_size + 8 == len && data_at + data_size <= len {
        return Ok(Repair::Intact);
    }
    let available = len.saturating_sub(data_at);
    let data_bytes = (available / block_align * block_align).min(
        // The largest data a 32-bit RIFF size can describe, in whole frames.
        (u64::from(u32::MAX) - (data_at - 8)) / block_align * block_align,
    );
    let end = data_at + data_bytes;
    file.set_len(end).map_err(io_err)?;
    let riff_size = (end - 8) as u32;
    file.seek(SeekFrom::Start(RIFF_SIZE_AT)).map_err(io_err)?;
    file.write_all(&riff_size.to_le_bytes()).map_err(io_err)?;
    file.seek(SeekFrom::Start(data_at - 4)).map_err(io_err)?;
    file.write_all(&(data_bytes as u32).to_le_bytes())
        .map_err(io_err)?;
    Ok(Repair::Repaired {
        data_bytes,
        dropped: len - end,
    })
}

fn read_exact_or(
    file: &mut File,
    buf: &mut [u8],
    short: RecorderError,
    path: &Path,
) -> Result<(), RecorderError> {
    match file.read_exact(buf) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(short),
        Err(source) => Err(RecorderError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// One file [`repair_dir`] looked at, and what came of it.
pub type DirRepair = (PathBuf, Result<Repair, RecorderError>);

/// Repairs every `*.wav` directly in `dir` (not below it) whose header disagrees with its
/// length; run at node start, before new recordings begin. Returns each file it looked at
/// with what happened; one bad file does not stop the others.
pub fn repair_dir(dir: &Path) -> Result<Vec<DirRepair>, RecorderError> {
    let io_err = |source| RecorderError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut report = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err)? {
        let path = entry.map_err(io_err)?.path();
        let is_wav = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("wav"));
        if is_wav && path.is_file() {
            let outcome = repair(&path);
            report.push((path, outcome));
        }
    }
    report.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(start: i16, len: usize) -> Vec<i16> {
        (0..len).map(|i| start.wrapping_add(i as i16)).collect()
    }

    fn read_back(path: &Path) -> (hound::WavSpec, Vec<i16>) {
        let mut r = hound::WavReader::open(path).expect("hound opens it");
        let spec = r.spec();
        let samples = r
            .samples::<i16>()
            .collect::<Result<Vec<_>, _>>()
            .expect("samples");
        (spec, samples)
    }

    #[test]
    fn mixed_sums_both_parties_saturating() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mixed.wav");
        let mut r = Recorder::create(&path, Layout::Mixed, 8000).expect("create");
        r.write(&[1000; 160], &[-300; 160]).expect("write");
        r.write(&[30000; 160], &[10000; 160]).expect("write");
        r.write(&[-30000; 160], &[-10000; 160]).expect("write");
        // One party silent this tick: its frame is padded.
        r.write(&[5; 160], &[]).expect("write");
        assert_eq!(r.finish().expect("finish"), 640);
        let (spec, s) = read_back(&path);
        assert_eq!(
            (spec.channels, spec.sample_rate, spec.bits_per_sample),
            (1, 8000, 16)
        );
        assert_eq!(s.len(), 640);
        assert!(s[..160].iter().all(|v| *v == 700));
        assert!(s[160..320].iter().all(|v| *v == i16::MAX));
        assert!(s[320..480].iter().all(|v| *v == i16::MIN));
        assert!(s[480..].iter().all(|v| *v == 5));
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 44 + 1280);
        assert_eq!(repair(&path).expect("repair"), Repair::Intact);
    }

    #[test]
    fn stereo_puts_a_left_and_b_right() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stereo.wav");
        let mut r = Recorder::create(&path, Layout::Stereo, 16000).expect("create");
        let (a, b) = (ramp(0, 320), ramp(-1000, 320));
        r.write(&a, &b).expect("write");
        assert_eq!(r.finish().expect("finish"), 320);
        let (spec, s) = read_back(&path);
        assert_eq!((spec.channels, spec.sample_rate), (2, 16000));
        let left: Vec<i16> = s.iter().step_by(2).copied().collect();
        let right: Vec<i16> = s.iter().skip(1).step_by(2).copied().collect();
        assert_eq!((left, right), (a, b));
        // A recording never overwrites another file.
        assert!(Recorder::create(&path, Layout::Stereo, 16000).is_err());
        assert!(Recorder::create(&dir.path().join("x.wav"), Layout::Mixed, 8001).is_err());
    }

    /// Records `ms` of stereo at 8 kHz (A a ramp, B its negation) and returns A.
    fn record(r: &mut Recorder, ms: usize) -> Vec<i16> {
        let a = ramp(1, ms * 8);
        for f in a.chunks(160) {
            let b: Vec<i16> = f.iter().map(|v| -v).collect();
            r.write(f, &b).expect("write");
        }
        a
    }

    #[test]
    fn the_header_tells_the_truth_every_second() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("crash.wav");
        let mut r = Recorder::create(&path, Layout::Stereo, 8000).expect("create");
        // 2.5 s, then a crash: no finish, no destructor (what a killed process does).
        let a = record(&mut r, 2500);
        std::mem::forget(r);
        // The file as the crash left it already plays its first two seconds.
        let (_, s) = read_back(&path);
        assert_eq!(s.len(), 2 * 16000);
        assert_eq!(s.iter().step_by(2).copied().collect::<Vec<_>>(), a[..16000]);
        // The buffered tail that reached the file is recovered by the repair, in whole
        // frames.
        let len = std::fs::metadata(&path).expect("meta").len();
        assert!(
            len > 44 + 64_000,
            "BufWriter spilled part of the last second"
        );
        let Repair::Repaired {
            data_bytes,
            dropped,
        } = repair(&path).expect("repair")
        else {
            panic!("the sizes were stale");
        };
        assert_eq!((data_bytes + 44 + dropped, data_bytes % 4), (len, 0));
        let (_, s) = read_back(&path);
        assert_eq!(s.len() as u64, data_bytes / 2);
        let left: Vec<i16> = s.iter().step_by(2).copied().collect();
        assert_eq!(left, a[..left.len()]);
        assert_eq!(repair(&path).expect("again"), Repair::Intact);
    }

    #[test]
    fn a_dropped_recorder_leaves_a_whole_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dropped.wav");
        let mut r = Recorder::create(&path, Layout::Mixed, 8000).expect("create");
        r.write(&[7; 160], &[1; 160]).expect("write");
        drop(r);
        let (_, s) = read_back(&path);
        assert_eq!(s, vec![8; 160]);
        assert_eq!(repair(&path).expect("repair"), Repair::Intact);
    }

    #[test]
    fn files_cut_at_odd_offsets_are_repaired_to_whole_frames() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("full.wav");
        let mut r = Recorder::create(&path, Layout::Stereo, 8000).expect("create");
        let a = record(&mut r, 1500);
        r.finish().expect("finish");
        let bytes = std::fs::read(&path).expect("read");
        for cut in [44, 45, 46, 47, 1001, 4003, 48_001, bytes.len() - 1] {
            let p = dir.path().join(format!("cut{cut}.wav"));
            std::fs::write(&p, &bytes[..cut]).expect("write");
            let outcome = repair(&p).expect("repair");
            let whole = (cut as u64 - 44) / 4 * 4;
            assert_eq!(
                outcome,
                Repair::Repaired {
                    data_bytes: whole,
                    dropped: cut as u64 - 44 - whole
                },
                "cut at {cut}"
            );
            let (spec, s) = read_back(&p);
            assert_eq!(
                (spec.channels, s.len() as u64),
                (2, whole / 2),
                "cut at {cut}"
            );
            let left: Vec<i16> = s.iter().step_by(2).copied().collect();
            assert_eq!(left, a[..left.len()]);
        }
        // Cut inside the header there is nothing to save, and the error says which file.
        let p = dir.path().join("stub.wav");
        std::fs::write(&p, &bytes[..30]).expect("write");
        let err = repair(&p).expect_err("stub");
        assert!(err.to_string().contains("stub.wav"), "{err}");
        let p = dir.path().join("text.wav");
        std::fs::write(&p, b"hello, this is not a RIFF file").expect("write");
        assert!(matches!(repair(&p), Err(RecorderError::NotWav { .. })));
    }

    #[test]
    fn repair_dir_fixes_only_what_is_broken() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("a-good.wav");
        let mut r = Recorder::create(&good, Layout::Mixed, 8000).expect("create");
        record(&mut r, 100);
        r.finish().expect("finish");
        let crashed = dir.path().join("b-crashed.WAV");
        let mut r = Recorder::create(&crashed, Layout::Mixed, 8000).expect("create");
        // 0.9 s: no sync yet, and more than the 8 KiB write buffer, part of it spilled.
        record(&mut r, 900);
        std::mem::forget(r);
        // hound's own files (a LIST chunk would be after the data) are left alone too.
        let other = dir.path().join("c-hound.wav");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&other, spec).expect("hound");
        w.write_sample(3i16).expect("sample");
        w.finalize().expect("finalize");
        std::fs::write(dir.path().join("d-junk.wav"), b"RIFF").expect("write");
        std::fs::write(dir.path().join("notes.txt"), b"not a recording").expect("write");

        let report = repair_dir(dir.path()).expect("repair_dir");
        let names: Vec<_> = report
            .iter()
            .map(|(p, _)| p.file_name().and_then(|n| n.to_str()).unwrap_or(""))
            .collect();
        assert_eq!(
            names,
            ["a-good.wav", "b-crashed.WAV", "c-hound.wav", "d-junk.wav"]
        );
        assert!(matches!(report[0].1, Ok(Repair::Intact)));
        let Ok(Repair::Repaired { data_bytes, .. }) = report[1].1 else {
            panic!("{:?}", report[1].1);
        };
        assert!(data_bytes > 0);
        assert_eq!(read_back(&crashed).1.len() as u64, data_bytes / 2);
        assert!(matches!(report[2].1, Ok(Repair::Intact)));
        assert!(report[3].1.is_err());
    }
}
