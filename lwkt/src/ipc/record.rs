//! The records of blocked parties: a sender's and a waiting receiver's.
//!
//! Both live on their owner's kernel stack for the length of one call, and
//! the channel's queues point at them (the module docs of `ipc` give the
//! rule that keeps those pointers valid). Their fields are atomics: written
//! under the channel's token by whoever changes the conversation, read by
//! the owner after it wakes with `Acquire` on the state, which every writer
//! stores last with `Release`.

use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicU32, AtomicU64, Ordering};

use super::{Error, Payload, Pulse, decode_result, encode_result};
use crate::Machine;
use crate::thread::Thread;

/// Sender states.
pub(crate) const QUEUED: u8 = 0;
/// Received: in the reply table under its rcvid.
pub(crate) const RECEIVED: u8 = 1;
/// Over: the result is final.
pub(crate) const DONE: u8 = 2;

/// [`Sender::pins`] bit: the owner waits for the pins to drop to zero.
const LEAVING: u32 = 1 << 31;

/// A thread blocked in `send`. Aligned for a direct sleep on its address
/// ([`crate::sleep::DIRECT_ALIGN`]).
#[repr(align(64))]
pub(crate) struct Sender<M: Machine, P: Payload> {
    /// Its thread (blocked in the call while the record exists).
    pub td: &'static Thread<M>,
    pub pri: u8,
    pub who: P::Who,
    pub smsg: P::Bufs,
    pub rmsg: P::Bufs,
    state: AtomicU8,
    result: AtomicU64,
    /// Its rcvid while [`RECEIVED`].
    pub rcvid: AtomicU64,
    /// Peers copying to or from its buffers without the token, plus
    /// [`LEAVING`].
    pins: AtomicU32,
}

impl<M: Machine, P: Payload> Sender<M, P> {
    pub fn new(td: &'static Thread<M>, who: P::Who, smsg: P::Bufs, rmsg: P::Bufs) -> Self {
        Sender {
            td,
            pri: td.sched_priority(),
            who,
            smsg,
            rmsg,
            state: AtomicU8::new(QUEUED),
            result: AtomicU64::new(0),
            rcvid: AtomicU64::new(0),
            pins: AtomicU32::new(0),
        }
    }

    /// What its owner sleeps on.
    pub fn ident(&self) -> usize {
        core::ptr::from_ref(self) as usize
    }

    pub fn state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    /// Under the token.
    pub fn set_state(&self, s: u8) {
        self.state.store(s, Ordering::Release);
    }

    /// Ends the conversation with `r`. Under the token.
    pub fn finish(&self, r: Result<u64, Error>) {
        self.result.store(encode_result(r), Ordering::Relaxed);
        self.set_state(DONE);
    }

    pub fn result(&self) -> Result<u64, Error> {
        decode_result(self.result.load(Ordering::Relaxed))
    }

    /// One more peer uses the buffers. Under the token, while the record is
    /// queued or in the reply table.
    pub fn pin(&self) {
        self.pins.fetch_add(1, Ordering::SeqCst);
    }

    /// A peer is done with the buffers. The record may be gone as soon as
    /// this returns; `self` is not touched after the decrement.
    pub fn unpin(&self) {
        let (td, ident) = (self.td, self.ident());
        if self.pins.fetch_sub(1, Ordering::SeqCst) == LEAVING | 1 {
            crate::sleep::wakeup_thread::<M>(td, ident);
        }
    }

    /// Whether no peer uses the buffers (final once the state is [`DONE`]:
    /// nobody pins a record that is out of the channel's tables).
    pub fn unpinned(&self) -> bool {
        self.pins.load(Ordering::SeqCst) & !LEAVING == 0
    }

    /// The owner, done: waits until no peer uses its buffers. The state is
    /// [`DONE`] (so no new pin can come).
    ///
    /// Thread context (the owner's); may block, not interruptibly (the
    /// wait is for copies in progress).
    pub fn wait_unpinned(&self) {
        debug_assert_eq!(self.state(), DONE);
        loop {
            crate::sleep::tsleep_interlock_direct::<M>(self.ident());
            if self.pins.fetch_or(LEAVING, Ordering::SeqCst) & !LEAVING == 0 {
                crate::tsleep_cancel::<M>();
                return;
            }
            crate::tsleep::<M>(self.ident(), crate::INTERLOCKED, "unpin", 0);
        }
    }
}

/// Receiver states.
pub(crate) const WAITING: u8 = 0;
/// Given a message (pinned for it by the giver).
pub(crate) const GOT_MSG: u8 = 1;
pub(crate) const GOT_PULSE: u8 = 2;
/// Failed (the channel was destroyed).
pub(crate) const FAILED: u8 = 3;

/// A thread waiting in `receive`. Aligned for a direct sleep on its
/// address ([`crate::sleep::DIRECT_ALIGN`]).
#[repr(align(64))]
pub(crate) struct Receiver<M: Machine> {
    pub td: &'static Thread<M>,
    state: AtomicU8,
    /// The sender record given ([`GOT_MSG`]), type-erased.
    sender: AtomicPtr<()>,
    pub rcvid: AtomicU64,
    code: AtomicU32,
    value: AtomicU64,
    pri: AtomicU8,
    pulse_sender: AtomicU64,
    err: AtomicU64,
}

impl<M: Machine> Receiver<M> {
    pub fn new(td: &'static Thread<M>) -> Self {
        Receiver {
            td,
            state: AtomicU8::new(WAITING),
            sender: AtomicPtr::new(core::ptr::null_mut()),
            rcvid: AtomicU64::new(0),
            code: AtomicU32::new(0),
            value: AtomicU64::new(0),
            pri: AtomicU8::new(0),
            pulse_sender: AtomicU64::new(0),
            err: AtomicU64::new(0),
        }
    }

    /// What its owner sleeps on.
    pub fn ident(&self) -> usize {
        core::ptr::from_ref(self) as usize
    }

    pub fn state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    /// Gives it sender `s` (received, pinned for it) under `rcvid`. Under
    /// the token, the receiver off the queue.
    pub fn give_msg<P: Payload>(&self, s: &Sender<M, P>, rcvid: u64) {
        self.sender
            .store(core::ptr::from_ref(s).cast_mut().cast(), Ordering::Relaxed);
        self.rcvid.store(rcvid, Ordering::Relaxed);
        self.state.store(GOT_MSG, Ordering::Release);
    }

    /// The sender given: a pointer the pin keeps valid.
    pub fn sender<P: Payload>(&self) -> *const Sender<M, P> {
        self.sender.load(Ordering::Relaxed).cast_const().cast()
    }

    /// Gives it a pulse. Under the token, the receiver off the queue.
    pub fn give_pulse(&self, p: Pulse) {
        self.code.store(p.code, Ordering::Relaxed);
        self.value.store(p.value, Ordering::Relaxed);
        self.pri.store(p.pri, Ordering::Relaxed);
        self.pulse_sender.store(p.sender, Ordering::Relaxed);
        self.state.store(GOT_PULSE, Ordering::Release);
    }

    pub fn pulse(&self) -> Pulse {
        Pulse {
            code: self.code.load(Ordering::Relaxed),
            value: self.value.load(Ordering::Relaxed),
            pri: self.pri.load(Ordering::Relaxed),
            sender: self.pulse_sender.load(Ordering::Relaxed),
        }
    }

    /// Fails its wait. Under the token, the receiver off the queue.
    pub fn fail(&self, e: Error) {
        self.err.store(e.encode(), Ordering::Relaxed);
        self.state.store(FAILED, Ordering::Release);
    }

    pub fn error(&self) -> Error {
        Error::decode(self.err.load(Ordering::Relaxed))
    }
}

// The records' `repr(align)` is the alignment direct sleeps ask for.
const _: () = assert!(crate::sleep::DIRECT_ALIGN == 64);
