//! An interactive boot a test drives the way a person would: it types on
//! the emulated keyboard, reads the screen, and watches how QEMU ends.
//!
//! [`ConsoleBoot`] says what machine to boot (no `test=`: the guest boots
//! interactively, as on real hardware); its `start` starts QEMU and
//! returns the running [`Machine`]. Typing is QEMU's `sendkey`
//! ([`crate::keyboard`]), reading is QEMU's `screendump` decoded by
//! [`crate::screen`], both through the human monitor; how QEMU ended comes
//! from its exit status and its QMP events ([`crate::monitor`]).
//!
//! # Pass and fail
//!
//! An interactive boot has no verdict of its own to read at the end (the
//! kernel writes the `isa-debug-exit` port only when it fails, which QEMU
//! turns into status 35). So the test says, step by step, what must happen,
//! and each step has a timeout: [`Machine::wait_screen`] polls the screen
//! every [`POLL`] until its condition holds, and fails when the time runs
//! out or QEMU ends first; [`Machine::expect_poweroff`] requires QEMU to end
//! with status 0 *and* a QMP `SHUTDOWN` event whose reason is
//! `guest-shutdown` (a reset under `-no-reboot` also ends QEMU with 0, with
//! reason `guest-reset`). A failure panics with the reason, the screen as
//! last read, QEMU's events and the transcript's tail, and keeps the whole
//! transcript and screen under `target/transcripts`. Dropping a `Machine`
//! kills QEMU if it still runs.
//!
//! # Without COM1
//!
//! With [`ConsoleBoot::no_serial`] the guest has no serial port, and the
//! harness no serial transcript: the transcript holds only the harness's
//! own lines (what it typed) and QEMU's messages. What the guest says is
//! read from its screen; how it ended, from QEMU's status and events. The
//! `local APIC: … mode` line self-test boots must show cannot be required
//! either; the mode is still named in the transcript's `harness:` line.
//!
//! [`ConsoleBoot`]: crate::console_boot::ConsoleBoot
//! [`ConsoleBoot::no_serial`]: crate::console_boot::ConsoleBoot::no_serial

use std::fmt::Display;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use wait_timeout::ChildExt;
use wyvern_abi::exit::Verdict;

use crate::env::QemuEnv;
use crate::harness::{TAIL_LINES, save_transcript, symbolized, unique_temp};
use crate::keyboard::keys_for;
use crate::monitor::{Event, Events, Monitor};
use crate::qemu::{Boot, End, Serial, pump};
use crate::screen::{Font, Image};

/// How often [`Machine::wait_screen`] looks.
pub const POLL: Duration = Duration::from_millis(500);

/// How long QEMU has to make its monitor sockets.
const SOCKET_WAIT: Duration = Duration::from_secs(30);

/// How the harness types: `sendkey`'s hold time, and the pause after
/// each key.
#[derive(Debug, Clone, Copy)]
pub struct Keys {
    pub hold_ms: u32,
    pub delay: Duration,
}

/// A running (or ended) interactive boot.
pub struct Machine {
    name: String,
    /// File name stem of the saved transcript.
    stem: String,
    boot: Boot,
    describe: String,
    kernel: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
    monitor: Option<Monitor>,
    events: Option<Events>,
    transcript: Arc<Mutex<String>>,
    pumps: Vec<JoinHandle<()>>,
    font: Font,
    /// Where screendumps go.
    shot: PathBuf,
    start: Instant,
    keys: Keys,
    /// The screen as last read.
    screen: Vec<String>,
    /// How QEMU ended, once it has.
    end: Option<End>,
}

impl Machine {
    /// Starts QEMU for `boot` (whose monitor and QMP sockets are set) and
    /// connects to it; panics with the reason when it cannot.
    pub(crate) fn spawn(
        boot: Boot,
        env: &QemuEnv,
        name: String,
        stem: String,
        kernel: PathBuf,
        keys: Keys,
    ) -> Machine {
        let describe = boot.describe(env);
        let start = Instant::now();
        let mut child = boot
            .command(env)
            .stdin(match boot.serial {
                Serial::Stdio => Stdio::piped(),
                Serial::None => Stdio::null(),
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", env.qemu.display()));
        let transcript = Arc::new(Mutex::new(format!("{describe}\n")));
        let mut pumps = Vec::new();
        if let Some(out) = child.stdout.take() {
            pumps.push(pump(out, transcript.clone(), None, false));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(pump(err, transcript.clone(), None, false));
        }
        let stdin = child.stdin.take();
        let mut m = Machine {
            name,
            stem,
            boot,
            describe,
            kernel,
            child,
            stdin,
            monitor: None,
            events: None,
            transcript,
            pumps,
            font: Font::new(),
            shot: unique_temp("screen", "ppm"),
            start,
            keys,
            screen: Vec::new(),
            end: None,
        };
        m.connect();
        m
    }

    /// Connects to the monitor and QMP sockets as QEMU makes them.
    fn connect(&mut self) {
        let until = Instant::now() + SOCKET_WAIT;
        let paths = (self.boot.monitor.clone(), self.boot.qmp.clone());
        let (Some(mon), Some(qmp)) = paths else {
            unreachable!("start() gives both sockets")
        };
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                self.fail("QEMU ended as it started (its messages are in the transcript)");
            }
            match Monitor::connect(&mon, Duration::from_millis(100)) {
                Ok(m) => {
                    self.monitor = Some(m);
                    break;
                }
                Err(e) if Instant::now() >= until => self.fail(format!("monitor: {e:#}")),
                Err(_) => {}
            }
        }
        match Events::connect(&qmp, SOCKET_WAIT, self.start) {
            Ok(e) => self.events = Some(e),
            Err(e) => self.fail(format!("QMP: {e:#}")),
        }
    }

    /// Adds a `harness:` line to the transcript.
    fn note(&self, line: &str) {
        let mut t = self.transcript.lock().expect("transcript lock");
        t.push_str(&format!(
            "harness: {:.1} s: {line}\n",
            self.start.elapsed().as_secs_f64()
        ));
    }

    /// Runs a monitor command that prints nothing when it works.
    fn monitor_run(&mut self, cmd: &str) {
        let r = match self.monitor.as_mut() {
            Some(m) => m.run(cmd),
            None => Err(anyhow::anyhow!("no monitor")),
        };
        if let Err(e) = r {
            self.fail(format!("monitor: {e:#}"));
        }
    }

    /// Types `text` on the keyboard, one `sendkey` per character (Enter is
    /// `\r` or `\n`; see [`crate::keyboard::key_for`]).
    pub fn type_text(&mut self, text: &str) {
        let keys = keys_for(text)
            .unwrap_or_else(|c| self.fail(format!("cannot type {c:?} on a US keyboard")));
        self.note(&format!("typed {text:?}"));
        for key in keys {
            self.send_key(&key);
        }
    }

    /// Presses one combination of QEMU key names (`ctrl-c`,
    /// `ctrl-alt-delete`), then pauses.
    pub fn send_key(&mut self, combo: &str) {
        self.monitor_run(&format!("sendkey {combo} {}", self.keys.hold_ms));
        thread::sleep(self.keys.delay);
    }

    /// Sends `bytes` to COM1 (a boot with serial only).
    pub fn type_serial(&mut self, bytes: &[u8]) {
        use std::io::Write;
        let r = match self.stdin.as_mut() {
            Some(s) => s.write_all(bytes).and_then(|()| s.flush()),
            None => Err(std::io::Error::other("this boot has no COM1")),
        };
        if let Err(e) = r {
            self.fail(format!("typing on COM1: {e}"));
        }
    }

    /// The text on the screen now, one string per text line.
    pub fn screen_text(&mut self) -> Vec<String> {
        match self.read_screen() {
            Ok(lines) => lines,
            Err(e) => self.fail(format!("screendump: {e:#}")),
        }
    }

    /// Takes a screendump and decodes it, keeping the text for a failure
    /// message.
    fn read_screen(&mut self) -> anyhow::Result<Vec<String>> {
        let _ = std::fs::remove_file(&self.shot);
        let monitor = self
            .monitor
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("no monitor"))?;
        monitor.run(&format!("screendump {}", self.shot.display()))?;
        let img = Image::from_ppm(&std::fs::read(&self.shot)?)?;
        self.screen = self.font.decode(&img);
        Ok(self.screen.clone())
    }

    /// Reads the screen every [`POLL`] until `ok` holds of it; returns it.
    /// Fails after `timeout`, or when QEMU ends first; `what` says what
    /// was awaited.
    pub fn wait_screen(
        &mut self,
        what: &str,
        timeout: Duration,
        mut ok: impl FnMut(&[String]) -> bool,
    ) -> Vec<String> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(end) = self.try_end() {
                self.fail(format!("QEMU ended ({end:?}) while waiting for {what}"));
            }
            let lines = self.screen_text();
            if ok(&lines) {
                return lines;
            }
            if Instant::now() >= until {
                self.fail(format!("{what}: not within {} s", timeout.as_secs()));
            }
            thread::sleep(POLL);
        }
    }

    /// Waits for a screen line containing `text`.
    pub fn wait_text(&mut self, text: &str, timeout: Duration) -> Vec<String> {
        self.wait_screen(&format!("`{text}` on the screen"), timeout, |lines| {
            lines.iter().any(|l| l.contains(text))
        })
    }

    /// How QEMU ended, if it has (without waiting).
    pub fn try_end(&mut self) -> Option<End> {
        if self.end.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.ended(status);
        }
        self.end.clone()
    }

    /// Waits up to `timeout` for QEMU to end by itself; fails if it
    /// does not.
    pub fn wait_exit(&mut self, timeout: Duration) -> End {
        if let Some(end) = self.try_end() {
            return end;
        }
        match self.child.wait_timeout(timeout) {
            Ok(Some(status)) => self.ended(status),
            Ok(None) => self.fail(format!("QEMU still running after {} s", timeout.as_secs())),
            Err(e) => self.fail(format!("waiting for QEMU: {e}")),
        }
        self.end.clone().expect("ended")
    }

    /// Requires QEMU to end within `timeout` by an ACPI power-off: status
    /// 0 and a `SHUTDOWN` event with reason `guest-shutdown`.
    pub fn expect_poweroff(&mut self, timeout: Duration) {
        let end = self.wait_exit(timeout);
        let shutdown = self.events().into_iter().find(|e| e.name == "SHUTDOWN");
        let reason = shutdown.as_ref().and_then(|e| e.reason.as_deref());
        if end != End::Exited(Verdict::Other(0)) || reason != Some("guest-shutdown") {
            self.fail(format!(
                "not a power-off: QEMU ended {end:?}, SHUTDOWN reason {reason:?} \
                 (a power-off is status 0 with reason guest-shutdown)"
            ));
        }
    }

    /// Resets the guest asked for (QMP `RESET`, reason `guest-reset`): a
    /// reboot, or a triple fault.
    pub fn guest_resets(&self) -> usize {
        self.events()
            .iter()
            .filter(|e| e.name == "RESET" && e.reason.as_deref() == Some("guest-reset"))
            .count()
    }

    /// Waits until the guest has reset `n` times in all (see
    /// [`Machine::guest_resets`]); fails after `timeout` or when QEMU ends.
    pub fn wait_guest_resets(&mut self, n: usize, timeout: Duration) {
        let until = Instant::now() + timeout;
        while self.guest_resets() < n {
            if let Some(end) = self.try_end() {
                self.fail(format!("QEMU ended ({end:?}) while waiting for reset {n}"));
            }
            if Instant::now() >= until {
                self.fail(format!("no reset {n} within {} s", timeout.as_secs()));
            }
            thread::sleep(POLL);
        }
        self.note(&format!("guest reset {n}"));
    }

    /// QEMU's events so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.as_ref().map(Events::all).unwrap_or_default()
    }

    /// The transcript so far: the `harness:` lines, COM1 (unless
    /// [`no_serial`](crate::console_boot::ConsoleBoot::no_serial)) and
    /// QEMU's messages.
    pub fn transcript(&self) -> String {
        self.transcript.lock().expect("transcript lock").clone()
    }

    /// Records how QEMU ended and collects what its pipes and sockets
    /// still held.
    fn ended(&mut self, status: std::process::ExitStatus) {
        let end = match status.code() {
            Some(code) => End::Exited(Verdict::from_status(code)),
            None => End::Signalled,
        };
        self.note(&format!("QEMU ended: {end:?}"));
        self.end = Some(end);
        for p in self.pumps.drain(..) {
            let _ = p.join();
        }
        if let Some(e) = self.events.as_mut() {
            e.finish();
        }
    }

    /// Ends the test: reads the screen and kills QEMU if it runs, keeps the
    /// transcript, and panics with `why`, the screen, the events and the
    /// transcript's tail.
    pub fn fail(&mut self, why: impl Display) -> ! {
        let why = why.to_string();
        if self.try_end().is_none() {
            // The screen at the failure, rather than at the last look.
            let _ = self.read_screen();
            if self.boot.serial == Serial::Stdio
                && let Some(m) = self.monitor.as_mut()
            {
                // Where every CPU is: the kernel answers an NMI on COM1.
                let _ = m.command("nmi");
                thread::sleep(Duration::from_secs(3));
            }
            let _ = self.child.kill();
            if let Ok(status) = self.child.wait() {
                self.ended(status);
            }
        }
        let mut screen = self.screen.clone();
        while screen.last().is_some_and(String::is_empty) {
            screen.pop();
        }
        let screen = symbolized(&self.kernel, &screen.join("\n"));
        let events: Vec<String> = self
            .events()
            .iter()
            .map(|e| format!("{} {:?} at {:.1} s", e.name, e.reason, e.at.as_secs_f64()))
            .collect();
        let transcript = self.transcript();
        let saved = save_transcript(
            &self.kernel,
            &self.stem,
            &format!("{transcript}--- screen, last read ---\n{screen}\n"),
        );
        let lines: Vec<&str> = transcript.lines().collect();
        let tail = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n");
        panic!(
            "console boot `{}` failed: {why}\n{}\n(boot options `{}`, {:.1} s; {saved})\n\
             QMP events: {events:?}\n\
             --- screen, last read ---\n{screen}\n\
             --- transcript, last {TAIL_LINES} lines ---\n{}\n--- end ---",
            self.name,
            self.describe,
            self.boot.bootopt,
            self.start.elapsed().as_secs_f64(),
            symbolized(&self.kernel, &tail),
        );
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if self.end.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for p in [&self.boot.monitor, &self.boot.qmp].into_iter().flatten() {
            let _ = std::fs::remove_file(p);
        }
        let _ = std::fs::remove_file(&self.shot);
    }
}
