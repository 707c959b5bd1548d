//! Synchronous message passing on LWKT threads: channels, send, receive,
//! reply, pulses — QNX Neutrino's model, the kernel's IPC core.
//!
//! A server creates a [`Channel`] and receives on it; clients send to it.
//! [`Channel::send`] blocks until the message is replied: the sender is
//! *send-blocked* while its message waits in the channel's queue, then
//! *reply-blocked* once a server thread received it, until
//! [`Channel::reply`] (or [`Channel::error`]) ends the conversation. A
//! received message is named by a *receive id* (rcvid), a slot of the
//! channel's reply table. [`Channel::pulse`] sends a small fixed-size
//! message that nobody replies to: the sender does not block, the pulse
//! waits in a bounded queue of the channel.
//!
//! The crate knows nothing of address spaces: a [`Payload`] — the kernel's
//! user buffers, the host tests' plain memory — says how a party's buffers
//! are described and copies between two of them.
//!
//! # Records and the pin rule
//!
//! A blocked party is a record on its own kernel stack: a sender's
//! (`record::Sender`: its buffers, priority, state and result) and a
//! waiting receiver's (`record::Receiver`: what it was given). The
//! channel's queues and reply table hold pointers to them. Everything about
//! a record is decided under the channel's token; copying a sender's data
//! happens *outside* the token (a copy may fault, page in, take other
//! tokens), so the copier first *pins* the sender record under the token.
//! The owner of a record returns only when its record is in no queue or
//! table and has no pins; a pinner that drops the last pin after the owner
//! said it is leaving wakes it (`record::Sender::unpin`). That is the
//! whole memory-safety argument for the raw pointers below.
//!
//! A receiver is never pinned: whoever delivers to a waiting receiver takes
//! it off the queue under the token, writes what it delivers into the
//! record, and wakes it; the receiver itself copies a message in. So every
//! copy is done by the thread whose own buffer is one of the two sides.
//!
//! A receiver never waits while a message or pulse it may take is queued:
//! a send or pulse goes to the first waiting receiver; one that finds the
//! bound of unreplied messages reached queues and fails every waiting
//! receive with `Full` (as a receive after it would fail); and a message
//! or pulse given back (its receiver's buffer was bad, or it was
//! interrupted first) goes on to the next waiting receiver. Otherwise a
//! queued sender could wait beside idle receivers for a receive that never
//! comes.
//!
//! Sleeps are *direct* sleeps on the record's address with the interlock
//! (`sleep::tsleep_interlock_direct`): the record names its thread, so a
//! waker wakes that thread (`sleep::wakeup_thread`, one message if it is
//! on another CPU) and no sleep-queue hashing is involved; no wakeup is
//! lost. A wakeup may reach a later sleeper of the same thread on a reused
//! stack address, which is harmless because every sleeper here re-checks
//! its record.
//!
//! # The fast path
//!
//! A send to a channel whose first waiting receiver sleeps on the sending
//! CPU, with nothing in the way, hands the CPU straight to that receiver: no
//! run-queue pick, no IPI ([`crate::sleep`]'s hand-off). The receiver then
//! copies the message in and returns to its server. The guards, the point
//! of no return and the commit are in `Channel::send_fast`; every guard
//! that fails leaves the general path, whose result is the same — the host
//! tests run the same conversations both ways and compare. The way back is
//! the same: [`Channel::reply_receive`] — a server's reply and its next
//! receive in one pass — hands the CPU straight to the client it replied
//! to when nothing is queued for the server and the client may run at
//! once. A send across CPUs wakes the receiver with one message to its
//! CPU's IPI queue, which also sets its priority.
//!
//! # Priority inheritance
//!
//! A server thread runs at its client's priority while serving it: taking a
//! message or pulse sets the receiving thread's priority to the sender's,
//! and going back to wait restores the base priority the caller passes to
//! [`Channel::receive`]. When a sender has to queue because no thread
//! waits, the thread that last received from the channel — the one most
//! likely serving it now — is raised to the sender's priority if below it,
//! so a low-priority client being served cannot hold up a high-priority
//! one behind a middle-priority thread (the inversion QNX avoids the same
//! way).
//!
//! # Lifetimes
//!
//! [`Channel::destroy`] (the server's explicit destroy, or its process's
//! end) fails every queued and reply-blocked sender and every waiting
//! receiver with [`Error::Gone`] and drops queued pulses. A sender
//! interrupted while send-blocked leaves the queue; interrupted while
//! reply-blocked, it leaves the reply table, so the server's reply finds a
//! stale rcvid and fails with [`Error::Stale`]. A receiver interrupted after
//! being given a message or pulse puts it back at the head of its queue:
//! nothing is lost.

mod channel;
mod receive;
mod record;
mod send;
#[cfg(all(test, not(loom)))]
mod tests;

pub use channel::{Channel, ChannelStats};

/// Pulses a channel queues at most (user pulses; the kernel's own pulses
/// are bounded by their sources and always fit: see [`Channel::pulse`]).
pub const PULSE_QUEUE: usize = 64;

/// Messages received and not yet replied, per channel.
pub const MAX_RCVIDS: usize = (1 << RCVID_SLOT_BITS) - 1;

/// Bits of an rcvid that name its reply-table slot (slot + 1, never 0).
pub const RCVID_SLOT_BITS: u32 = 10;
/// Bits of an rcvid that carry its conversation's serial: 47, so an rcvid
/// fits in 57 bits and the kernel can add a 6-bit channel id below it and
/// still hand out a positive number.
pub const RCVID_SERIAL_BITS: u32 = 47;
/// The largest serial.
pub const RCVID_SERIAL_MASK: u64 = (1 << RCVID_SERIAL_BITS) - 1;

/// How a party's buffers are described and copied.
pub trait Payload: 'static {
    /// One party's buffers (a gather list, for example).
    type Bufs: Sync;
    /// Who a sender is, as its receiver is told.
    type Who: Copy + Send + Sync;

    /// Total bytes the buffers hold.
    fn len(b: &Self::Bufs) -> usize;

    /// Copies from `src` starting at byte `soff` into `dst` starting at
    /// `doff`, as much as both have room for; returns the bytes copied, or
    /// which side could not be accessed. Called by the thread owning one of
    /// the two sides, outside every critical section and token of this
    /// module; may fault and page in, never blocks for long.
    fn copy(src: &Self::Bufs, soff: usize, dst: &Self::Bufs, doff: usize) -> Result<usize, Side>;

    /// Copies as [`Payload::copy`] if that can be done at once — neither
    /// side can fault, nothing to page in, no token to take (two small
    /// buffers in kernel memory, as message registers are) — and returns
    /// the bytes copied; `None`, having copied nothing, when it cannot. May
    /// be called in a critical section and under this module's tokens: the
    /// reply copies this way without leaving the channel's token.
    #[inline(always)]
    fn copy_now(src: &Self::Bufs, soff: usize, dst: &Self::Bufs, doff: usize) -> Option<usize> {
        let _ = (src, soff, dst, doff);
        None
    }
}

/// Which buffer of a copy was bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Src,
    Dst,
}

/// Why an IPC operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The channel was destroyed (its server ended, or destroyed it).
    Gone,
    /// The caller's own buffer could not be accessed.
    Fault,
    /// The caller was interrupted (its process is being killed).
    Interrupted,
    /// The rcvid named a conversation that is over: replied already, or its
    /// sender left (was killed).
    Stale,
    /// The rcvid was never one of this channel's.
    BadRcvid,
    /// The pulse queue is full (the pulse was not queued), or too many
    /// messages are received and unreplied.
    Full,
    /// Out of memory for a queue.
    NoMemory,
    /// The server failed the message with this code ([`Channel::error`]).
    Peer(u32),
}

impl Error {
    fn encode(self) -> u64 {
        let (kind, code) = match self {
            Error::Gone => (1, 0),
            Error::Fault => (2, 0),
            Error::Interrupted => (3, 0),
            Error::Stale => (4, 0),
            Error::BadRcvid => (5, 0),
            Error::Full => (6, 0),
            Error::NoMemory => (7, 0),
            Error::Peer(c) => (8, c),
        };
        RESULT_ERR | kind << 32 | u64::from(code)
    }

    fn decode(v: u64) -> Error {
        match (v >> 32) & 0xff {
            1 => Error::Gone,
            2 => Error::Fault,
            3 => Error::Interrupted,
            4 => Error::Stale,
            5 => Error::BadRcvid,
            6 => Error::Full,
            7 => Error::NoMemory,
            _ => Error::Peer(v as u32),
        }
    }
}

/// A sender's result as its record stores it: a status below
/// [`RESULT_ERR`], or an encoded [`Error`].
const RESULT_ERR: u64 = 1 << 63;

fn encode_result(r: Result<u64, Error>) -> u64 {
    match r {
        Ok(v) => {
            debug_assert!(v < RESULT_ERR, "reply status {v:#x} out of range");
            v
        }
        Err(e) => e.encode(),
    }
}

fn decode_result(v: u64) -> Result<u64, Error> {
    if v & RESULT_ERR == 0 {
        Ok(v)
    } else {
        Err(Error::decode(v))
    }
}

/// A pulse: a code and a value, with the priority it was sent at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pulse {
    pub code: u32,
    pub value: u64,
    pub pri: u8,
    /// Who sent it, as the machine names senders (the kernel: the process
    /// id, 0 for the kernel itself). Opaque to the channel.
    pub sender: u64,
}

/// A message received: what the server is told of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received<W> {
    /// Names the conversation for reply, error, read and write.
    pub rcvid: u64,
    /// The sender's priority (the receiving thread runs at it now).
    pub pri: u8,
    /// Who sent it.
    pub who: W,
    /// Bytes the sender sent, in all.
    pub slen: usize,
    /// Bytes the sender has room for in its reply buffers.
    pub rlen: usize,
    /// Bytes copied into the receive buffer.
    pub copied: usize,
}

/// What a receive returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery<W> {
    Msg(Received<W>),
    Pulse(Pulse),
}
