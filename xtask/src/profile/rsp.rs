//! A client of the GDB remote serial protocol, as much of it as the profiler
//! needs from QEMU's gdbstub: registers, memory, hardware breakpoints,
//! stepping one vCPU and continuing.
//!
//! A packet is `$data#xx`, `xx` the modulo-256 sum of `data`'s bytes in hex;
//! `}` escapes `#`, `$`, `}` and `*` in binary data (the byte XOR 0x20), and
//! `*` introduces run-length encoding in replies. Until `QStartNoAckMode` is
//! accepted each packet is acknowledged with `+` (or `-`: send it again);
//! after that, not at all, which halves the round trips of a single step.
//!
//! Threads are vCPUs: QEMU numbers them from 1 (`thread:01` is CPU 0).
//! QEMU runs all-stop: when one vCPU stops, all do, and `vCont;s:T` steps
//! vCPU `T` while the others stay stopped.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The checksum of a packet's data.
pub fn checksum(data: &[u8]) -> u8 {
    data.iter().fold(0u8, |s, &b| s.wrapping_add(b))
}

/// `data` framed as a packet (escaping what must be escaped).
pub fn frame(data: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(data.len());
    for &b in data {
        if matches!(b, b'#' | b'$' | b'}' | b'*') {
            body.extend_from_slice(&[b'}', b ^ 0x20]);
        } else {
            body.push(b);
        }
    }
    let mut out = Vec::with_capacity(body.len() + 4);
    out.push(b'$');
    out.extend_from_slice(&body);
    out.extend_from_slice(format!("#{:02x}", checksum(&body)).as_bytes());
    out
}

/// The data of a received packet body (between `$` and `#`): escapes and
/// run-length encoding undone.
pub fn unescape(body: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'}' => {
                let b = *body.get(i + 1).context("packet ends in an escape")?;
                out.push(b ^ 0x20);
                i += 2;
            }
            b'*' => {
                let last = *out
                    .last()
                    .context("run-length code with nothing before it")?;
                let n = *body
                    .get(i + 1)
                    .context("packet ends in a run-length code")?;
                if n < 29 {
                    bail!("bad run length {n}");
                }
                out.extend(std::iter::repeat_n(last, usize::from(n - 29)));
                i += 2;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Bytes from hex text.
pub fn from_hex(s: &[u8]) -> Result<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        bail!("odd-length hex `{}`", String::from_utf8_lossy(s));
    }
    s.chunks(2)
        .map(|p| {
            std::str::from_utf8(p)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .with_context(|| format!("bad hex `{}`", String::from_utf8_lossy(s)))
        })
        .collect()
}

/// A little-endian register value in hex (as `p` and `g` give them).
pub fn le_u64(hex: &[u8]) -> Result<u64> {
    let bytes = from_hex(hex)?;
    if bytes.is_empty() || bytes.len() > 8 {
        bail!("register of {} bytes", bytes.len());
    }
    Ok(bytes
        .iter()
        .rev()
        .fold(0u64, |v, &b| (v << 8) | u64::from(b)))
}

/// The vCPU (gdb thread id) a stop reply names: `T05thread:02;…` → 2.
pub fn stop_thread(reply: &str) -> Option<u32> {
    let rest = reply.strip_prefix('T')?.get(2..)?;
    rest.split(';').find_map(|kv| {
        let v = kv.strip_prefix("thread:")?;
        // `p<pid>.<tid>` when multiprocess extensions are on.
        let tid = v.rsplit('.').next()?;
        u32::from_str_radix(tid, 16).ok()
    })
}

/// x86_64 register numbers of QEMU's target description.
pub mod reg {
    pub const RSP: u32 = 7;
    pub const RIP: u32 = 16;
}

/// A connection to a gdbstub.
pub struct Remote {
    out: TcpStream,
    input: BufReader<TcpStream>,
    acks: bool,
}

impl Remote {
    /// Connects to `127.0.0.1:port`, retrying while QEMU starts.
    pub fn connect(port: u16, patience: Duration) -> Result<Self> {
        let start = std::time::Instant::now();
        let stream = loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => break s,
                Err(e) if start.elapsed() > patience => {
                    return Err(e)
                        .with_context(|| format!("connecting to QEMU's gdbstub on :{port}"));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        stream.set_nodelay(true)?;
        let mut r = Remote {
            out: stream.try_clone()?,
            input: BufReader::new(stream),
            acks: true,
        };
        if r.request("QStartNoAckMode")? == "OK" {
            r.acks = false;
        }
        Ok(r)
    }

    fn byte(&mut self) -> Result<u8> {
        let mut b = [0u8];
        self.input
            .read_exact(&mut b)
            .context("QEMU closed the gdb connection (did the guest end?)")?;
        Ok(b[0])
    }

    /// Sends one packet (again while it is refused, in ack mode).
    pub fn send(&mut self, data: &str) -> Result<()> {
        let packet = frame(data.as_bytes());
        loop {
            self.out.write_all(&packet)?;
            if !self.acks {
                return Ok(());
            }
            match self.byte()? {
                b'+' => return Ok(()),
                b'-' => continue,
                b => bail!("gdbstub answered {:?} instead of an ack", b as char),
            }
        }
    }

    /// Receives one packet's data (acknowledging it in ack mode).
    pub fn receive(&mut self) -> Result<String> {
        loop {
            while self.byte()? != b'$' {}
            let mut body = Vec::new();
            loop {
                match self.byte()? {
                    b'#' => break,
                    b => body.push(b),
                }
            }
            let sum = [self.byte()?, self.byte()?];
            let ok = from_hex(&sum).ok().and_then(|s| s.first().copied()) == Some(checksum(&body));
            if self.acks {
                self.out.write_all(if ok { b"+" } else { b"-" })?;
                if !ok {
                    continue;
                }
            } else if !ok {
                bail!("gdbstub packet with a bad checksum");
            }
            return Ok(String::from_utf8_lossy(&unescape(&body)?).into_owned());
        }
    }

    /// Sends `data` and returns the reply.
    pub fn request(&mut self, data: &str) -> Result<String> {
        self.send(data)?;
        self.receive()
    }

    /// A request whose answer must be `OK`.
    pub fn ok(&mut self, data: &str) -> Result<()> {
        match self.request(data)? {
            r if r == "OK" => Ok(()),
            r => bail!("gdbstub refused `{data}`: `{r}`"),
        }
    }

    /// Register `n` of the vCPU that stopped last.
    pub fn register(&mut self, n: u32) -> Result<u64> {
        let r = self.request(&format!("p{n:x}"))?;
        if r.starts_with('E') || r.is_empty() {
            bail!("reading register {n}: `{r}`");
        }
        le_u64(r.as_bytes())
    }

    /// `len` bytes of guest virtual memory at `addr`, as the vCPU that
    /// stopped last sees it.
    pub fn memory(&mut self, addr: u64, len: usize) -> Result<Vec<u8>> {
        let r = self.request(&format!("m{addr:x},{len:x}"))?;
        if r.starts_with('E') {
            bail!("reading {len} bytes at {addr:#x}: `{r}`");
        }
        from_hex(r.as_bytes())
    }

    /// Inserts (`on`) or removes a hardware breakpoint.
    pub fn hw_break(&mut self, addr: u64, on: bool) -> Result<()> {
        self.ok(&format!("{}1,{addr:x},1", if on { 'Z' } else { 'z' }))
    }

    /// Runs every vCPU until one stops; returns the vCPU that stopped.
    pub fn cont(&mut self) -> Result<u32> {
        let r = self.request("c")?;
        Self::stopped(&r)
    }

    /// Executes one instruction on vCPU `thread`, the others staying
    /// stopped (`others` false) or running meanwhile (true); returns the
    /// vCPU that stopped.
    pub fn step(&mut self, thread: u32, others: bool) -> Result<u32> {
        let r = self.request(&format!(
            "vCont;s:{thread:x}{}",
            if others { ";c" } else { "" }
        ))?;
        Self::stopped(&r)
    }

    fn stopped(reply: &str) -> Result<u32> {
        if reply.starts_with('W') || reply.starts_with('X') {
            bail!("the guest ended while being profiled (`{reply}`)");
        }
        stop_thread(reply).with_context(|| format!("unexpected stop reply `{reply}`"))
    }

    /// Kills the guest.
    pub fn kill(&mut self) {
        let _ = self.send("k");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing() {
        assert_eq!(frame(b"g"), b"$g#67");
        assert_eq!(frame(b"vCont;s:1"), b"$vCont;s:1#23".to_vec());
        assert_eq!(checksum(b"OK"), 0x9a);
        // `#` is escaped as `}` 0x03, and the checksum is over what is sent.
        assert_eq!(frame(b"a#"), b"$a}\x03#e1".to_vec());
        assert_eq!(checksum(b"a}\x03"), 0xe1);
    }

    #[test]
    fn replies() {
        assert_eq!(unescape(b"a}\x03b").unwrap(), b"a#b");
        // `0* ` is `0` and 32 - 29 = 3 more of it.
        assert_eq!(unescape(b"0* 1").unwrap(), b"00001");
        assert!(unescape(b"*!").is_err());
        assert_eq!(le_u64(b"1000408000ffffff").unwrap(), 0xffff_ff00_8040_0010);
        assert_eq!(le_u64(b"33000000").unwrap(), 0x33);
        assert!(le_u64(b"123").is_err());
        assert_eq!(from_hex(b"00ff").unwrap(), [0, 255]);
    }

    #[test]
    fn stop_replies() {
        assert_eq!(stop_thread("T05thread:01;"), Some(1));
        assert_eq!(stop_thread("T05thread:p01.02;"), Some(2));
        assert_eq!(stop_thread("T05swbreak:;thread:0a;"), Some(10));
        assert_eq!(stop_thread("S05"), None);
        assert_eq!(stop_thread("OK"), None);
    }
}
