//! `cargo xtask run` with its standard input a pipe or a file: what comes
//! in goes to COM1, and the end of it ends the run.
//!
//! On a terminal QEMU owns COM1's end (`-serial stdio`, the terminal in
//! raw mode) and the run lasts until QEMU ends. From a pipe, QEMU would
//! read the end of the input and go on forever, so xtask stands between:
//! QEMU's COM1 is on pipes, its output copied here as it comes, and the
//! input copied there —
//!
//! - only from the shell's first prompt (`wyvern> `) on: before it, the
//!   firmware and the kernel read COM1 as their own consoles (OVMF takes
//!   serial input as key presses), so a script typed early would go
//!   astray;
//! - at the guest's pace: QEMU takes from the pipe only what the UART has
//!   room for, so a long script waits in the pipe instead of overrunning
//!   the guest.
//!
//! When the input has ended (and all of it was handed to QEMU), xtask
//! waits until COM1 has been quiet for the linger time, so the last
//! command's answer is printed, then ends QEMU (`quit` on its monitor). A
//! boot that never prompts (`--test`, `--stress`) ends by itself as on a
//! terminal.

use std::io::{ErrorKind, Read, Write};
use std::process::{Child, ExitStatus};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// What the shell prints when it waits for a command.
pub const PROMPT: &[u8] = b"wyvern> ";

/// How a forwarded run ended.
#[derive(Debug)]
pub struct Ended {
    pub status: ExitStatus,
    /// xtask ended QEMU because the input had ended.
    pub at_end_of_input: bool,
}

enum Note {
    Output,
    InputEnded,
}

/// The prompt has been seen: input may flow.
type Ready = Arc<(Mutex<bool>, Condvar)>;

/// Runs `child` (its stdin and stdout piped) with `input` going to its
/// stdin from the first [`PROMPT`] on and its stdout copied to `output`;
/// after the end of `input`, once the output has been quiet for `linger`,
/// calls `quit` and waits for the child.
pub fn forward<R, W>(
    child: &mut Child,
    input: R,
    output: W,
    linger: Duration,
    quit: impl FnOnce(&mut Child),
) -> Result<Ended>
where
    R: Read + Send + 'static,
    W: Write + Send + 'static,
{
    let from_guest = child.stdout.take().context("QEMU's stdout is not piped")?;
    let to_guest = child.stdin.take().context("QEMU's stdin is not piped")?;
    let ready: Ready = Arc::new((Mutex::new(false), Condvar::new()));
    let (tx, rx) = mpsc::channel();
    copy_output(from_guest, output, ready.clone(), tx.clone());
    copy_input(input, to_guest, ready.clone(), tx);
    let mut input_ended = false;
    let mut quiet_since = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Ended {
                status,
                at_end_of_input: false,
            });
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Note::Output) => quiet_since = Instant::now(),
            Ok(Note::InputEnded) => {
                input_ended = true;
                quiet_since = Instant::now();
            }
            Err(RecvTimeoutError::Timeout) => {}
            // Both copies ended: only QEMU's end is left to wait for.
            Err(RecvTimeoutError::Disconnected) => thread::sleep(Duration::from_millis(100)),
        }
        let prompted = *ready.0.lock().expect("ready lock");
        if input_ended && prompted && quiet_since.elapsed() >= linger {
            quit(child);
            return Ok(Ended {
                status: child.wait()?,
                at_end_of_input: true,
            });
        }
    }
}

/// Copies the guest's output to `output` as it comes, and opens the way for
/// input at the first prompt.
fn copy_output<W: Write + Send + 'static>(
    mut from: impl Read + Send + 'static,
    mut output: W,
    ready: Ready,
    tx: mpsc::Sender<Note>,
) {
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        // The last bytes seen, for a prompt split across reads.
        let mut tail: Vec<u8> = Vec::new();
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let _ = output.write_all(&buf[..n]);
            let _ = output.flush();
            tail.extend_from_slice(&buf[..n]);
            if tail.windows(PROMPT.len()).any(|w| w == PROMPT) {
                let (lock, cv) = &*ready;
                *lock.lock().expect("ready lock") = true;
                cv.notify_all();
            }
            let keep = tail.len().saturating_sub(PROMPT.len() - 1);
            tail.drain(..keep);
            let _ = tx.send(Note::Output);
        }
    });
}

/// Copies `input` to the guest once the prompt has been seen, then says
/// the input ended.
fn copy_input(
    mut input: impl Read + Send + 'static,
    mut to: impl Write + Send + 'static,
    ready: Ready,
    tx: mpsc::Sender<Note>,
) {
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut waited = false;
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            if !waited {
                let (lock, cv) = &*ready;
                let mut prompted = lock.lock().expect("ready lock");
                while !*prompted {
                    prompted = cv.wait(prompted).expect("ready lock");
                }
                waited = true;
            }
            if to.write_all(&buf[..n]).and_then(|()| to.flush()).is_err() {
                break;
            }
        }
        let _ = tx.send(Note::InputEnded);
    });
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use super::*;

    /// Output kept for the test to read.
    #[derive(Clone, Default)]
    struct Kept(Arc<Mutex<Vec<u8>>>);

    impl Write for Kept {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Kept {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    /// A stand-in for QEMU and the shell: `script` in bash, stdin and
    /// stdout piped.
    fn guest(script: &str) -> Child {
        Command::new("bash")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// A shell that reads with a one-second timeout before its first
    /// prompt (input sent early would show as `early`), then answers
    /// every line until its input ends.
    const SHELL: &str = r#"
        if read -t 1 l; then echo "early $l"; fi
        echo booting
        printf 'wyvern> '
        while read l; do echo "got $l"; printf 'wyvern> '; done
        sleep 60
    "#;

    #[test]
    fn input_waits_for_the_prompt_and_its_end_ends_the_run() {
        let mut child = guest(SHELL);
        let out = Kept::default();
        let t = Instant::now();
        let end = forward(
            &mut child,
            &b"help\nps\n"[..],
            out.clone(),
            Duration::from_millis(300),
            |c| c.kill().unwrap(),
        )
        .unwrap();
        let text = out.text();
        assert!(end.at_end_of_input, "{end:?}");
        assert!(
            !text.contains("early"),
            "input went before the prompt: {text}"
        );
        assert!(
            text.contains("booting\nwyvern> got help\nwyvern> got ps\nwyvern> "),
            "{text}"
        );
        assert!(t.elapsed() >= Duration::from_millis(1300), "no linger");
    }

    #[test]
    fn no_input_still_ends_after_the_prompt() {
        let mut child = guest(SHELL);
        let end = forward(
            &mut child,
            std::io::empty(),
            Kept::default(),
            Duration::from_millis(100),
            |c| c.kill().unwrap(),
        )
        .unwrap();
        assert!(end.at_end_of_input);
    }

    #[test]
    fn a_guest_that_ends_by_itself_keeps_its_status() {
        let mut child = guest("echo TEST boot ok; exit 33");
        let out = Kept::default();
        let end = forward(
            &mut child,
            std::io::empty(),
            out.clone(),
            Duration::from_millis(100),
            |_| panic!("no prompt: nothing to quit"),
        )
        .unwrap();
        assert!(!end.at_end_of_input);
        assert_eq!(end.status.code(), Some(33));
        // The copy may trail the exit by a moment.
        thread::sleep(Duration::from_millis(200));
        assert_eq!(out.text(), "TEST boot ok\n");
    }
}
