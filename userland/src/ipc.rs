//! Message passing (`wyvern_abi::syscall`, "Messages"): channels a server
//! receives on, connections a client sends through, replies and pulses.
//!
//! Buffers are scatter/gather lists: a `&[&[u8]]` to send, a
//! `&mut [&mut [u8]]` to receive into; the single-buffer forms wrap one.

use wyvern_abi::syscall::{Error, Iov, MAX_IOV, MsgInfo, nr};

use crate::sys::raw;

fn call(n: u64, a: [u64; 6]) -> Result<u64, Error> {
    // SAFETY: every call of this module passes buffers it borrowed for the
    // call (shared ones only read by the kernel, exclusive ones written).
    wyvern_abi::syscall::decode(unsafe { raw(n, a) })
}

/// The gather list of `parts`, and how many it has.
fn iov_of(parts: &[&[u8]]) -> Result<([Iov; MAX_IOV as usize], u64), Error> {
    if parts.len() as u64 > MAX_IOV {
        return Err(Error::Invalid);
    }
    let mut v = [Iov::default(); MAX_IOV as usize];
    for (i, p) in parts.iter().enumerate() {
        v[i] = Iov {
            base: p.as_ptr() as u64,
            len: p.len() as u64,
        };
    }
    Ok((v, parts.len() as u64))
}

/// The scatter list of `parts`.
fn iov_of_mut(parts: &mut [&mut [u8]]) -> Result<([Iov; MAX_IOV as usize], u64), Error> {
    if parts.len() as u64 > MAX_IOV {
        return Err(Error::Invalid);
    }
    let mut v = [Iov::default(); MAX_IOV as usize];
    for (i, p) in parts.iter_mut().enumerate() {
        v[i] = Iov {
            base: p.as_mut_ptr() as u64,
            len: p.len() as u64,
        };
    }
    Ok((v, parts.len() as u64))
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
    let (s, sn) = iov_of(msg)?;
    let (r, rn) = iov_of_mut(reply)?;
    call(
        nr::MSG_SEND,
        [coid, s.as_ptr() as u64, sn, r.as_ptr() as u64, rn, 0],
    )
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
    let (v, n) = iov_of_mut(buf)?;
    let mut info = MsgInfo::default();
    let rcvid = call(
        nr::MSG_RECEIVE,
        [chid, v.as_ptr() as u64, n, &raw mut info as u64, 0, 0],
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
    let (v, n) = iov_of(msg)?;
    call(nr::MSG_REPLY, [rcvid, status, v.as_ptr() as u64, n, 0, 0])
}

/// [`replyv`] of one buffer.
pub fn reply(rcvid: u64, status: u64, msg: &[u8]) -> Result<u64, Error> {
    replyv(rcvid, status, &[msg])
}

/// Fails message `rcvid`: its sender's call returns `e`.
pub fn error(rcvid: u64, e: Error) -> Result<u64, Error> {
    call(nr::MSG_ERROR, [rcvid, e as u64, 0, 0, 0, 0])
}

/// Reads message `rcvid` from byte `offset` into `buf`; returns the bytes
/// read.
pub fn read(rcvid: u64, offset: u64, buf: &mut [u8]) -> Result<u64, Error> {
    let (v, n) = iov_of_mut(&mut [buf])?;
    call(nr::MSG_READ, [rcvid, offset, v.as_ptr() as u64, n, 0, 0])
}

/// Writes `buf` into message `rcvid`'s reply buffers at byte `offset`;
/// returns the bytes written.
pub fn write(rcvid: u64, offset: u64, buf: &[u8]) -> Result<u64, Error> {
    let (v, n) = iov_of(&[buf])?;
    call(nr::MSG_WRITE, [rcvid, offset, v.as_ptr() as u64, n, 0, 0])
}

/// Sends a pulse through `coid` without blocking; `Full` when the channel
/// has [`wyvern_abi::syscall::PULSE_QUEUE`] waiting.
pub fn pulse(coid: u64, code: u32, value: u64) -> Result<u64, Error> {
    call(nr::MSG_SEND_PULSE, [coid, u64::from(code), value, 0, 0, 0])
}
