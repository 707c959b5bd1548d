//! Talking to a running QEMU: its human monitor (commands such as
//! `sendkey`, `screendump`, `nmi`, `quit`) and its QMP events (`RESET`,
//! `SHUTDOWN` with the reason).
//!
//! Both are unix sockets QEMU serves (`-monitor unix:PATH,server,nowait`,
//! `-qmp unix:PATH,server,nowait`); QEMU creates them as it starts, so a
//! connection is retried until it succeeds or a wait runs out.
//!
//! The human monitor echoes each command character by character, redrawing
//! the line with terminal escapes, then prints the answer and a new
//! `(qemu) ` prompt. [`Monitor::command`] sends one command, reads up to
//! that prompt and returns the answer alone: empty when a command such as
//! `sendkey` or `screendump` worked, the error text when it did not.
//!
//! QMP is used only to hear events: after the `qmp_capabilities`
//! handshake a thread keeps every event with its time, which is how a test
//! tells an ACPI power-off (`SHUTDOWN`, reason `guest-shutdown`) from a
//! reset under `-no-reboot` (reason `guest-reset`) — both end QEMU with
//! status 0 — and counts the resets of a machine that reboots.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::qemu::strip_escapes;

/// What ends every answer of the human monitor.
const PROMPT: &[u8] = b"(qemu) ";

/// Longest a monitor command may take (a `screendump` of a large screen
/// on a loaded host included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Connects to `path`, retrying while QEMU has not made the socket yet.
fn connect(path: &Path, wait: Duration) -> Result<UnixStream> {
    let start = Instant::now();
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) if start.elapsed() >= wait => {
                return Err(e).with_context(|| format!("connecting to {}", path.display()));
            }
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A connection to QEMU's human monitor.
pub struct Monitor {
    stream: UnixStream,
}

impl Monitor {
    /// Connects, waiting up to `wait` for QEMU to make the socket, and
    /// reads the greeting.
    pub fn connect(path: &Path, wait: Duration) -> Result<Monitor> {
        let stream = connect(path, wait)?;
        stream.set_read_timeout(Some(COMMAND_TIMEOUT))?;
        let mut m = Monitor { stream };
        m.read_to_prompt().context("the monitor's greeting")?;
        Ok(m)
    }

    /// Runs `cmd`; returns its answer, empty when it printed nothing.
    pub fn command(&mut self, cmd: &str) -> Result<String> {
        self.stream
            .write_all(format!("{cmd}\n").as_bytes())
            .with_context(|| format!("sending `{cmd}` to the monitor"))?;
        let raw = self
            .read_to_prompt()
            .with_context(|| format!("the monitor's answer to `{cmd}`"))?;
        Ok(answer(&raw))
    }

    /// Runs `cmd` and fails with its answer unless it printed nothing.
    pub fn run(&mut self, cmd: &str) -> Result<()> {
        let out = self.command(cmd)?;
        if !out.is_empty() {
            bail!("`{cmd}`: {out}");
        }
        Ok(())
    }

    /// Sends `cmd` without waiting for an answer (`quit`, after which
    /// QEMU closes the socket).
    pub fn send(&mut self, cmd: &str) -> Result<()> {
        self.stream
            .write_all(format!("{cmd}\n").as_bytes())
            .with_context(|| format!("sending `{cmd}` to the monitor"))
    }

    fn read_to_prompt(&mut self) -> Result<Vec<u8>> {
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        while !raw.ends_with(PROMPT) {
            let n = self.stream.read(&mut buf)?;
            if n == 0 {
                bail!("QEMU closed the monitor");
            }
            raw.extend_from_slice(&buf[..n]);
        }
        Ok(raw)
    }
}

/// The answer in what the monitor sent back for one command: what follows
/// the echoed line, up to the prompt, without escapes or blank ends.
pub fn answer(raw: &[u8]) -> String {
    let raw = raw.strip_suffix(PROMPT).unwrap_or(raw);
    let after_echo = match raw.iter().position(|&b| b == b'\n') {
        Some(i) => &raw[i + 1..],
        None => &[],
    };
    strip_escapes(&String::from_utf8_lossy(after_echo))
        .trim()
        .to_owned()
}

/// One QMP event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `RESET`, `SHUTDOWN`, `POWERDOWN`, `STOP`, …
    pub name: String,
    /// `data.reason`, where the event has one (`guest-shutdown`,
    /// `guest-reset`, `host-qmp-quit`, …).
    pub reason: Option<String>,
    /// When the harness read it, from the boot's start.
    pub at: Duration,
}

/// The events QEMU sent on its QMP socket, kept by a thread.
pub struct Events {
    events: Arc<Mutex<Vec<Event>>>,
    reader: Option<thread::JoinHandle<()>>,
}

impl Events {
    /// Connects to the QMP socket at `path`, negotiates, and starts keeping
    /// events (times counted from `start`).
    pub fn connect(path: &Path, wait: Duration, start: Instant) -> Result<Events> {
        let stream = connect(path, wait)?;
        stream.set_read_timeout(Some(COMMAND_TIMEOUT))?;
        let mut writer = stream.try_clone()?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).context("QMP greeting")?;
        if !line.contains("\"QMP\"") {
            bail!("not a QMP greeting: {line:?}");
        }
        writer.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")?;
        line.clear();
        reader.read_line(&mut line).context("QMP handshake")?;
        if !line.contains("\"return\"") {
            bail!("QMP refused the handshake: {line:?}");
        }
        // Events come when they come: no timeout from here on.
        reader.get_ref().set_read_timeout(None)?;
        let events = Arc::new(Mutex::new(Vec::new()));
        let kept = events.clone();
        let reader = thread::spawn(move || {
            for line in reader.lines() {
                let Ok(line) = line else { break };
                if let Some(e) = parse_event(&line, start.elapsed()) {
                    kept.lock().expect("events lock").push(e);
                }
            }
        });
        Ok(Events {
            events,
            reader: Some(reader),
        })
    }

    /// The events so far.
    pub fn all(&self) -> Vec<Event> {
        self.events.lock().expect("events lock").clone()
    }

    /// Waits for the reader to see the socket close (QEMU has ended), so
    /// that [`Events::all`] holds every event.
    pub fn finish(&mut self) {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// The event on one QMP line, if it is one.
pub fn parse_event(line: &str, at: Duration) -> Option<Event> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let name = v.get("event")?.as_str()?.to_owned();
    let reason = v
        .get("data")
        .and_then(|d| d.get("reason"))
        .and_then(|r| r.as_str())
        .map(str::to_owned);
    Some(Event { name, reason, at })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_follows_the_echo() {
        // As QEMU 10.0.2 sends them (the echo shortened).
        let ok = b"s\x1b[K\x1b[Dse\x1b[K\x1b[D\x1b[Dsendkey a 20\x1b[K\r\n(qemu) ";
        assert_eq!(answer(ok), "");
        let err = b"sendkey nosuchkey\x1b[K\r\ninvalid parameter: nosuchkey\r\n(qemu) ";
        assert_eq!(answer(err), "invalid parameter: nosuchkey");
        let info = b"info status\x1b[K\r\nVM status: paused (prelaunch)\r\n(qemu) ";
        assert_eq!(answer(info), "VM status: paused (prelaunch)");
        let two = b"info x\x1b[K\r\nline one\r\nline two\r\n(qemu) ";
        assert_eq!(answer(two), "line one\nline two");
    }

    #[test]
    fn events_and_their_reasons() {
        let t = Duration::from_secs(1);
        let reset = r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESET", "data": {"guest": true, "reason": "guest-reset"}}"#;
        assert_eq!(
            parse_event(reset, t),
            Some(Event {
                name: "RESET".into(),
                reason: Some("guest-reset".into()),
                at: t
            })
        );
        let stop = r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}"#;
        assert_eq!(parse_event(stop, t).unwrap().reason, None);
        assert_eq!(parse_event(r#"{"return": {}}"#, t), None);
        assert_eq!(parse_event("not json", t), None);
    }
}
