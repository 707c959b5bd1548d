//! Message passing (`wyvern_abi::syscall`, "Messages"): channels a server
//! receives on, connections a client sends through, replies and pulses.
//!
//! Buffers are scatter/gather lists: a `&[&[u8]]` to send, a
//! `&mut [&mut [u8]]` to receive into; the single-buffer forms wrap one.

use core::mem::MaybeUninit;

use wyvern_abi::syscall::{Error, Iov, MAX_IOV, MSG_REGS, MsgInfo, nr};

use crate::sys::raw;

fn call(n: u64, a: [u64; 6]) -> Result<u64, Error> {
    // SAFETY: every call of this module passes buffers it borrowed for the
    // call (shared ones only read by the kernel, exclusive ones written).
    wyvern_abi::syscall::decode(unsafe { raw(n, a) })
}

/// Room for a gather or scatter list of up to `N` pieces, of which the
/// first `n` are written (the kernel reads only those: the rest is never
/// initialized, which spares every call a 256-byte clear). Made in the
/// caller's frame and filled there: returned by value, it would be copied
/// whole.
struct IovList<const N: usize> {
    v: [MaybeUninit<Iov>; N],
    n: usize,
}

impl<const N: usize> IovList<N> {
    fn new() -> Self {
        IovList {
            v: [const { MaybeUninit::uninit() }; N],
            n: 0,
        }
    }

    /// Appends the pieces at `parts` (base, length); `Invalid` past `N`.
    fn extend(&mut self, parts: impl ExactSizeIterator<Item = (u64, usize)>) -> Result<(), Error> {
        if parts.len() > N - self.n {
            return Err(Error::Invalid);
        }
        for (base, len) in parts {
            self.v[self.n].write(Iov {
                base,
                len: len as u64,
            });
            self.n += 1;
        }
        Ok(())
    }

    /// Appends the gather list of `parts`; returns how many they are.
    fn gather(&mut self, parts: &[&[u8]]) -> Result<u64, Error> {
        self.extend(parts.iter().map(|p| (p.as_ptr() as u64, p.len())))?;
        Ok(parts.len() as u64)
    }

    /// Appends the scatter list of `parts`; returns how many they are.
    fn scatter(&mut self, parts: &mut [&mut [u8]]) -> Result<u64, Error> {
        self.extend(parts.iter_mut().map(|p| (p.as_mut_ptr() as u64, p.len())))?;
        Ok(parts.len() as u64)
    }

    /// The list's address for the kernel.
    fn addr(&self) -> u64 {
        self.v.as_ptr() as u64
    }
}

/// Creates a channel; returns its id.
pub fn channel_create() -> Result<u64, Error> {
    channel_create_with(0)
}

/// Creates a channel with `wyvern_abi::syscall::chan` flags (`PUBLIC`: any
/// process may attach).
pub fn channel_create_with(flags: u64) -> Result<u64, Error> {
    call(nr::CHANNEL_CREATE, [flags, 0, 0, 0, 0, 0])
}

/// Gives a copy of connection `coid` to the sender of message `rcvid`;
/// returns its id there.
pub fn connect_give(coid: u64, rcvid: u64) -> Result<u64, Error> {
    call(nr::CONNECT_GIVE, [coid, rcvid, 0, 0, 0, 0])
}

/// Destroys channel `chid`: its blocked senders fail with `Gone`.
pub fn channel_destroy(chid: u64) -> Result<u64, Error> {
    call(nr::CHANNEL_DESTROY, [chid, 0, 0, 0, 0, 0])
}

/// Attaches a connection to channel `chid` of process `pid` (0: this one).
pub fn connect(pid: u64, chid: u64) -> Result<u64, Error> {
    call(nr::CONNECT_ATTACH, [pid, chid, 0, 0, 0, 0])
}

/// Detaches connection `coid`.
pub fn disconnect(coid: u64) -> Result<u64, Error> {
    call(nr::CONNECT_DETACH, [coid, 0, 0, 0, 0, 0])
}

/// Sends the gather list `msg` through `coid` and blocks until the server
/// replies into the scatter list `reply`; returns the reply's status.
pub fn sendv(coid: u64, msg: &[&[u8]], reply: &mut [&mut [u8]]) -> Result<u64, Error> {
    let (mut s, mut r) = (
        IovList::<{ MAX_IOV as usize }>::new(),
        IovList::<{ MAX_IOV as usize }>::new(),
    );
    let sn = s.gather(msg)?;
    let rn = r.scatter(reply)?;
    call(nr::MSG_SEND, [coid, s.addr(), sn, r.addr(), rn, 0])
}

/// [`sendv`] of one buffer each way.
pub fn send(coid: u64, msg: &[u8], reply: &mut [u8]) -> Result<u64, Error> {
    sendv(coid, &[msg], &mut [reply])
}

/// What [`receive`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// A message: reply to `info.rcvid`.
    Msg(MsgInfo),
    /// A pulse (`info.code`, `info.value`).
    Pulse(MsgInfo),
}

/// Blocks for a message or a pulse on `chid`; a message's bytes land in
/// `buf` as far as they fit.
pub fn receivev(chid: u64, buf: &mut [&mut [u8]]) -> Result<Received, Error> {
    let mut v = IovList::<{ MAX_IOV as usize }>::new();
    let n = v.scatter(buf)?;
    let mut info = MsgInfo::default();
    let rcvid = call(
        nr::MSG_RECEIVE,
        [chid, v.addr(), n, &raw mut info as u64, 0, 0],
    )?;
    Ok(if rcvid == 0 {
        Received::Pulse(info)
    } else {
        Received::Msg(info)
    })
}

/// [`receivev`] into one buffer.
pub fn receive(chid: u64, buf: &mut [u8]) -> Result<Received, Error> {
    receivev(chid, &mut [buf])
}

/// Replies `status` (below 2^63) and the gather list `msg` to `rcvid`.
pub fn replyv(rcvid: u64, status: u64, msg: &[&[u8]]) -> Result<u64, Error> {
    let mut v = IovList::<{ MAX_IOV as usize }>::new();
    let n = v.gather(msg)?;
    call(nr::MSG_REPLY, [rcvid, status, v.addr(), n, 0, 0])
}

/// [`replyv`] of one buffer.
pub fn reply(rcvid: u64, status: u64, msg: &[u8]) -> Result<u64, Error> {
    replyv(rcvid, status, &[msg])
}

/// Replies `status` and the gather list `msg` to `rcvid` (0: no reply),
/// then blocks for the next message or pulse on `chid`, its bytes landing
/// in `buf`: a server's loop in one system call. A failed reply returns
/// its error before receiving anything; an error of the receive comes
/// after the reply went (replying again says which: `Stale`, it went).
pub fn reply_receivev(
    rcvid: u64,
    status: u64,
    msg: &[&[u8]],
    chid: u64,
    buf: &mut [&mut [u8]],
) -> Result<Received, Error> {
    // One list: the reply's pieces, then the receive buffer's.
    if msg.len() as u64 > MAX_IOV || buf.len() as u64 > MAX_IOV {
        return Err(Error::Invalid);
    }
    let mut v = IovList::<{ 2 * MAX_IOV as usize }>::new();
    let rn = v.gather(msg)?;
    let bn = v.scatter(buf)?;
    let mut info = MsgInfo::default();
    let rcvid = call(
        nr::MSG_REPLY_RECEIVE,
        [
            rcvid,
            status,
            v.addr(),
            rn | bn << 32,
            chid,
            &raw mut info as u64,
        ],
    )?;
    Ok(if rcvid == 0 {
        Received::Pulse(info)
    } else {
        Received::Msg(info)
    })
}

/// [`reply_receivev`] of one buffer each way.
pub fn reply_receive(
    rcvid: u64,
    status: u64,
    msg: &[u8],
    chid: u64,
    buf: &mut [u8],
) -> Result<Received, Error> {
    reply_receivev(rcvid, status, &[msg], chid, &mut [buf])
}

/// A message in registers: [`MSG_REGS`] words, [`MSG_REG_BYTES`](wyvern_abi::syscall::MSG_REG_BYTES) bytes
/// (`wyvern_abi::syscall`, "Messages in registers").
pub type Regs = [u64; MSG_REGS];

/// Sends `msg` in registers through `coid` and blocks until the server
/// replies; returns the reply's status and the reply (bytes the server did
/// not write are zero).
#[inline(always)]
pub fn call_regs(coid: u64, msg: &Regs) -> Result<(u64, Regs), Error> {
    let rax: u64;
    let mut w = *msg;
    // SAFETY: `MSG_CALL` reads and writes only registers: the message
    // registers (declared in-out), `rax`, and the `syscall` instruction's
    // `rcx` and `r11`.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") nr::MSG_CALL => rax,
            in("rdi") coid,
            inlateout("rsi") w[0],
            inlateout("rdx") w[1],
            inlateout("r10") w[2],
            inlateout("r8") w[3],
            inlateout("r9") w[4],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    wyvern_abi::syscall::decode(rax).map(|status| (status, w))
}

/// What [`reply_wait`] received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegMsg {
    /// A message: reply to `rcvid`; its first [`MSG_REG_BYTES`](wyvern_abi::syscall::MSG_REG_BYTES) bytes are
    /// `words`, `slen` bytes in all (`MSG_READ` reaches the rest), room for
    /// `rlen` in its reply.
    Msg {
        rcvid: u64,
        words: Regs,
        slen: u64,
        rlen: u64,
        pid: u64,
        tid: u64,
        priority: u64,
    },
    /// A pulse.
    Pulse {
        code: u64,
        value: u64,
        pid: u64,
        priority: u64,
    },
}

/// Replies `status` and `reply` in registers to `rcvid` (0: no reply),
/// then blocks for the next message or pulse on `chid`, received in
/// registers: a server's loop in one system call and no buffer. Errors as
/// [`reply_receivev`]'s.
#[inline(always)]
pub fn reply_wait(rcvid: u64, status: u64, reply: &Regs, chid: u64) -> Result<RegMsg, Error> {
    let rax: u64;
    let mut w = *reply;
    let (slen, rlen, pid, tid, priority): (u64, u64, u64, u64, u64);
    // SAFETY: `MSG_REPLY_WAIT` reads and writes only registers: those
    // declared here, and the `syscall` instruction's `rcx` and `r11`.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") nr::MSG_REPLY_WAIT => rax,
            inlateout("rdi") chid => slen,
            inlateout("rsi") w[0],
            inlateout("rdx") w[1],
            inlateout("r10") w[2],
            inlateout("r8") w[3],
            inlateout("r9") w[4],
            inlateout("r12") rcvid => pid,
            inlateout("r13") status => tid,
            lateout("r14") priority,
            lateout("r15") rlen,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    let got = wyvern_abi::syscall::decode(rax)?;
    Ok(if got == 0 {
        RegMsg::Pulse {
            code: w[0],
            value: w[1],
            pid,
            priority,
        }
    } else {
        RegMsg::Msg {
            rcvid: got,
            words: w,
            slen,
            rlen,
            pid,
            tid,
            priority,
        }
    })
}

/// Fails message `rcvid`: its sender's call returns `e`.
pub fn error(rcvid: u64, e: Error) -> Result<u64, Error> {
    call(nr::MSG_ERROR, [rcvid, e as u64, 0, 0, 0, 0])
}

/// Reads message `rcvid` from byte `offset` into `buf`; returns the bytes
/// read.
pub fn read(rcvid: u64, offset: u64, buf: &mut [u8]) -> Result<u64, Error> {
    let mut v = IovList::<1>::new();
    let n = v.scatter(&mut [buf])?;
    call(nr::MSG_READ, [rcvid, offset, v.addr(), n, 0, 0])
}

/// Writes `buf` into message `rcvid`'s reply buffers at byte `offset`;
/// returns the bytes written.
pub fn write(rcvid: u64, offset: u64, buf: &[u8]) -> Result<u64, Error> {
    let mut v = IovList::<1>::new();
    let n = v.gather(&[buf])?;
    call(nr::MSG_WRITE, [rcvid, offset, v.addr(), n, 0, 0])
}

/// Sends a pulse through `coid` without blocking; `Full` when the channel
/// has [`wyvern_abi::syscall::PULSE_QUEUE`] waiting.
pub fn pulse(coid: u64, code: u32, value: u64) -> Result<u64, Error> {
    call(nr::MSG_SEND_PULSE, [coid, u64::from(code), value, 0, 0, 0])
}
