//! Real phones for the audio tests: baresip (Debian `baresip-core`) registered to a node,
//! sending a sox-made tone from a WAV file (its `aufile` source) and recording what it
//! hears (its `sndfile` filter writes the decoded audio to `dump-*-dec.wav`). The received
//! audio is judged with sox (length, RMS) and a Goertzel comparison of the two tones.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{tail, wait_for};

/// The tone each test phone sends, and how long (the call ends when the file does:
/// baresip hangs up when its `aufile` source reaches the end).
pub const TONE_SECS: f64 = 4.0;

/// A baresip instance with its own config folder.
pub struct Baresip {
    pub number: String,
    dir: PathBuf,
    netns: Option<String>,
    child: Option<Child>,
    log: PathBuf,
    verbose: bool,
}

/// Where and how a phone runs.
pub struct PhoneSetup<'a> {
    pub number: &'a str,
    pub password: &'a str,
    /// The node's SIP address (the phone's registrar and outbound proxy).
    pub registrar: SocketAddr,
    /// The address the phone binds SIP and RTP on.
    pub ip: &'a str,
    pub sip_port: u16,
    /// Frequency of the tone it sends, in Hz.
    pub tone_hz: u32,
    /// A network namespace (made by the test) to run it in.
    pub netns: Option<&'a str>,
    /// The codecs it offers and accepts (baresip's `audio_codecs`), e.g. "PCMU,PCMA".
    pub codecs: &'a str,
}

impl Baresip {
    /// Writes the phone's config, account and tone under `parent/bs<number>`.
    pub fn new(parent: &Path, setup: &PhoneSetup<'_>) -> Baresip {
        let dir = parent.join(format!("bs{}", setup.number));
        std::fs::create_dir_all(dir.join("rec")).expect("baresip dir");
        let tone = dir.join("tone.wav");
        // baresip's file source must match the codec's rate and channels.
        let (rate, channels) = if setup.codecs.to_ascii_lowercase().starts_with("opus") {
            ("48000", "2")
        } else {
            ("8000", "1")
        };
        let made = Command::new("sox")
            .args(["-n", "-r", rate, "-c", channels, "-b", "16"])
            .arg(&tone)
            .args(["synth", &TONE_SECS.to_string(), "sine"])
            .arg(setup.tone_hz.to_string())
            .args(["vol", "0.5"])
            .status()
            .unwrap_or_else(|e| panic!("sox is needed (apt-get install sox): {e}"));
        assert!(made.success(), "sox could not make the tone");
        let config = format!(
            "poll_method epoll\n\
             sip_listen {ip}:{port}\n\
             audio_player aubridge,sink{n}\n\
             audio_alert aubridge,alert{n}\n\
             audio_source aufile,{tone}\n\
             audio_srate 8000\n\
             audio_channels 1\n\
             rtp_ports 46000-46999\n\
             module_path /usr/lib/baresip/modules\n\
             module g711.so\n\
             module opus.so\n\
             module aufile.so\n\
             module aubridge.so\n\
             module sndfile.so\n\
             module_app account.so\n\
             module_app menu.so\n\
             snd_path {rec}\n",
            ip = setup.ip,
            port = setup.sip_port,
            n = setup.number,
            tone = tone.display(),
            rec = dir.join("rec").display(),
        );
        std::fs::write(dir.join("config"), config).expect("baresip config");
        let account = format!(
            "<sip:{n}@{reg};transport=udp>;auth_pass={pw};answermode=auto;regint=600;\
             audio_codecs={codecs}\n",
            n = setup.number,
            reg = setup.registrar,
            pw = setup.password,
            codecs = setup.codecs,
        );
        std::fs::write(dir.join("accounts"), account).expect("baresip accounts");
        Baresip {
            number: setup.number.to_owned(),
            log: dir.join("baresip.log"),
            dir,
            netns: setup.netns.map(str::to_owned),
            child: None,
            verbose: false,
        }
    }

    /// Starts baresip, running `commands` (e.g. `/dial 200`) once it is up. It quits by
    /// itself after `max` at the latest.
    pub fn start(&mut self, commands: &[String], max: Duration) {
        // A SIP port picked free can be taken by another test before baresip binds it:
        // then it says "init failed" at once, and gets another port.
        for _ in 0..3 {
            self.spawn(commands, max);
            if !self.failed_to_start() {
                return;
            }
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            self.move_sip_port();
        }
        self.spawn(commands, max);
    }

    /// Whether baresip gave up at start (it does so within a few milliseconds).
    fn failed_to_start(&mut self) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_millis(300);
        while std::time::Instant::now() < deadline {
            if self.log_text().contains("init failed") {
                return true;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    return self.log_text().contains("init failed");
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Rewrites `sip_listen` with a new free port.
    fn move_sip_port(&self) {
        let path = self.dir.join("config");
        let text = std::fs::read_to_string(&path).expect("baresip config");
        let moved: Vec<String> = text
            .lines()
            .map(|l| match l.strip_prefix("sip_listen ") {
                Some(addr) => {
                    let ip = addr.rsplit_once(':').map_or(addr, |(ip, _)| ip);
                    format!("sip_listen {ip}:{}", crate::support::free_port())
                }
                None => l.to_owned(),
            })
            .collect();
        std::fs::write(&path, moved.join("\n") + "\n").expect("baresip config");
    }

    fn spawn(&mut self, commands: &[String], max: Duration) {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "baresip"]);
                c
            }
            None => Command::new("baresip"),
        };
        if self.verbose {
            cmd.arg("-v");
        }
        cmd.arg("-f")
            .arg(&self.dir)
            .arg("-t")
            .arg(max.as_secs().to_string());
        for c in commands {
            cmd.arg("-e").arg(c);
        }
        let log = std::fs::File::create(&self.log).expect("baresip log");
        let err = log.try_clone().expect("baresip log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("baresip is needed (apt-get install baresip-core): {e}"));
        self.child = Some(child);
    }

    /// Debug output (`-v`): baresip then logs what it receives, e.g. telephone events.
    pub fn verbose(&mut self) {
        self.verbose = true;
    }

    pub fn log_text(&self) -> String {
        let raw = std::fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(&raw).into_owned()
    }

    /// Waits for `what` in baresip's output.
    pub fn wait_log(&self, what: &str, timeout: Duration) {
        wait_for(
            &format!("baresip {} to print {what:?}", self.number),
            timeout,
            || {
                let log = self.log_text();
                assert!(
                    !log.contains("init failed"),
                    "baresip {} failed:\n{log}",
                    self.number
                );
                log.contains(what).then_some(())
            },
        );
    }

    /// Waits until the phone's REGISTER was accepted.
    pub fn wait_registered(&self) {
        self.wait_log("200 OK", Duration::from_secs(10));
    }

    /// Waits for the end of the call (baresip prints "Call with ... terminated").
    pub fn wait_call_ended(&self, timeout: Duration) {
        self.wait_log("terminated", timeout);
    }

    /// The decoded audio it received in its (only) call, analysed.
    pub fn received(&self) -> Heard {
        let rec = self.dir.join("rec");
        let file = std::fs::read_dir(&rec)
            .expect("rec dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
            .unwrap_or_else(|| {
                panic!(
                    "baresip {} recorded nothing it received:\n{}",
                    self.number,
                    tail(&self.log_text(), 3000)
                )
            });
        Heard::of(&file)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a phone heard: from sox's `stat` and Goertzel powers of the samples.
pub struct Heard {
    pub seconds: f64,
    pub rms: f64,
    pub rough_hz: f64,
    samples: Vec<f64>,
}

impl Heard {
    pub fn of(wav: &Path) -> Heard {
        // Whatever the codec's rate and channels, judge 8 kHz mono.
        let mono = wav.with_extension("8k.wav");
        let made = Command::new("sox")
            .arg(wav)
            .args(["-r", "8000", "-c", "1"])
            .arg(&mono)
            .status()
            .expect("run sox");
        assert!(made.success(), "sox could not read {}", wav.display());
        let wav = mono.as_path();
        let out = Command::new("sox")
            .arg(wav)
            .args(["-n", "stat"])
            .output()
            .expect("run sox");
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        let value = |key: &str| -> f64 {
            text.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.rsplit(':').next())
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {key:?} in sox stat of {}:\n{text}", wav.display()))
        };
        let raw = Command::new("sox")
            .arg(wav)
            .args([
                "-t", "raw", "-e", "signed", "-b", "16", "-c", "1", "-r", "8000", "-",
            ])
            .output()
            .expect("run sox");
        let samples = raw
            .stdout
            .chunks_exact(2)
            .map(|b| f64::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
            .collect();
        Heard {
            seconds: value("Length (seconds)"),
            rms: value("RMS     amplitude"),
            rough_hz: value("Rough   frequency"),
            samples,
        }
    }

    /// Mean power at `hz` over the whole recording (Goertzel, 8 kHz).
    pub fn power_at(&self, hz: f64) -> f64 {
        let w = 2.0 * std::f64::consts::PI * hz / 8000.0;
        let coeff = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0, 0.0);
        for x in &self.samples {
            let s0 = x + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        let n = self.samples.len().max(1) as f64;
        (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (n * n)
    }

    /// Asserts this is most of the other phone's tone at `hz`, clearly not `other_hz`.
    pub fn assert_tone(&self, who: &str, hz: u32, other_hz: u32) {
        assert!(
            self.seconds >= TONE_SECS - 1.0,
            "{who} heard only {:.2} s of a {TONE_SECS} s tone: {self:?}",
            self.seconds
        );
        // A 0.5 full-scale sine has an RMS of 0.354; silence or noise is far below.
        assert!(self.rms > 0.2, "{who} heard too little energy: {self:?}");
        let rough_off = (self.rough_hz - f64::from(hz)).abs() / f64::from(hz);
        assert!(
            rough_off < 0.1,
            "{who} heard {} Hz, not {hz} Hz",
            self.rough_hz
        );
        let (want, unwanted) = (self.power_at(hz.into()), self.power_at(other_hz.into()));
        assert!(
            want > 100.0 * unwanted,
            "{who}: power at {hz} Hz {want:e} is not 20 dB over {other_hz} Hz {unwanted:e}"
        );
    }
}

impl std::fmt::Debug for Heard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2} s, RMS {:.3}, about {} Hz",
            self.seconds, self.rms, self.rough_hz
        )
    }
}
