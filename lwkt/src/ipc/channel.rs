//! A channel: its queues and reply table under its token, pulses, destroy.
//!
//! The sends are in `send.rs`, the receives and replies in `receive.rs`.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use super::record::{Receiver, Sender};
use super::{Error, MAX_RCVIDS, PULSE_QUEUE, Payload, Pulse, RCVID_SERIAL_MASK, RCVID_SLOT_BITS};
use crate::token::{Token, TokenGuard, gettoken};
use crate::{Machine, ThreadRef};

/// Counters of a channel (under its token).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Messages sent.
    pub sends: u64,
    /// Of which the fast path handed the CPU straight to a receiver.
    pub fast: u64,
    /// Messages received.
    pub received: u64,
    /// Replies and errors.
    pub replies: u64,
    /// Of the replies, those whose server then waited in receive and
    /// handed the CPU straight to the client ([`Channel::reply_receive`]).
    pub fast_replies: u64,
    /// Pulses queued or delivered.
    pub pulses: u64,
    /// Pulses refused because the queue was full.
    pub overflows: u64,
}

/// A slot of the reply table.
struct Slot<M: Machine, P: Payload> {
    /// The serial of the conversation in it (see [`State::claim`]): a stale
    /// rcvid carries an older one and does not match.
    serial: u64,
    rec: *const Sender<M, P>,
}

/// What the token guards.
pub(super) struct State<M: Machine, P: Payload> {
    pub dead: bool,
    /// Send-blocked senders, highest priority first, FIFO within one.
    pub senders: VecDeque<*const Sender<M, P>>,
    /// Threads waiting to receive, in arrival order.
    pub receivers: VecDeque<*const Receiver<M>>,
    /// Pulses, in the order sent.
    pub pulses: VecDeque<Pulse>,
    /// Reply-blocked senders by rcvid.
    slots: Vec<Slot<M, P>>,
    free: Vec<u16>,
    /// The last conversation serial given out.
    serial: u64,
    /// The thread that last took a message or pulse (the one priority
    /// inheritance raises when a sender has to queue).
    last_receiver: Option<ThreadRef<M>>,
    pub stats: ChannelStats,
}

/// A channel.
pub struct Channel<M: Machine, P: Payload> {
    token: &'static Token,
    /// Whether sends may take the fast path (the host tests turn it off to
    /// compare; the kernel may for measurements).
    pub(super) fast: bool,
    state: UnsafeCell<State<M, P>>,
    /// Set while a thread is inside `lock` (catches re-entry, which the
    /// token itself would allow).
    busy: AtomicBool,
}

// SAFETY: the state, including the record pointers in it, is reached only
// through `lock`, under the channel's token, by one thread at a time (the
// busy flag refuses re-entry); the records pointed at follow the pin rule
// of the module docs, and their fields are atomics.
#[allow(unsafe_code)]
unsafe impl<M: Machine, P: Payload> Sync for Channel<M, P> {}
// SAFETY: as above; nothing in the channel is tied to a thread.
#[allow(unsafe_code)]
unsafe impl<M: Machine, P: Payload> Send for Channel<M, P> {}

/// The channel's state under its token. Must not be held across a block
/// (a token is lost while its holder sleeps), so nothing under it sleeps.
pub(super) struct Locked<'a, M: Machine, P: Payload> {
    st: &'a mut State<M, P>,
    busy: &'a AtomicBool,
    _token: TokenGuard<M>,
}

impl<M: Machine, P: Payload> core::ops::Deref for Locked<'_, M, P> {
    type Target = State<M, P>;
    fn deref(&self) -> &State<M, P> {
        self.st
    }
}

impl<M: Machine, P: Payload> core::ops::DerefMut for Locked<'_, M, P> {
    fn deref_mut(&mut self) -> &mut State<M, P> {
        self.st
    }
}

impl<M: Machine, P: Payload> Drop for Locked<'_, M, P> {
    fn drop(&mut self) {
        self.busy.store(false, Ordering::Release);
    }
}

/// A record a channel points at. The pin rule (module docs) keeps it alive
/// while the channel holds the pointer or the caller holds a pin.
#[allow(unsafe_code)]
pub(super) fn rec<'a, T>(p: *const T) -> &'a T {
    // SAFETY: every pointer in a channel's queues and table, and every
    // pointer a pin protects, is to a record whose owner has not returned
    // (the pin rule); records are never moved while pointed at.
    unsafe { &*p }
}

impl<M: Machine, P: Payload> Channel<M, P> {
    /// A channel serialized by `token` (one token per channel is best: a
    /// shared one serializes unrelated channels). `fast`: whether sends
    /// may hand the CPU straight to a waiting receiver.
    ///
    /// Any context.
    pub fn new(token: &'static Token, fast: bool) -> Self {
        Self::with_serial(token, fast, 0)
    }

    /// A channel whose conversation serials start after `serial`: what a
    /// server's channel id is reused with, so no rcvid of the channel it
    /// replaces names one of its conversations (`State::claim`).
    ///
    /// Any context.
    pub fn with_serial(token: &'static Token, fast: bool, serial: u64) -> Self {
        Channel {
            token,
            fast,
            state: UnsafeCell::new(State {
                dead: false,
                senders: VecDeque::new(),
                receivers: VecDeque::new(),
                pulses: VecDeque::new(),
                slots: Vec::new(),
                free: Vec::new(),
                serial: serial & RCVID_SERIAL_MASK,
                last_receiver: None,
                stats: ChannelStats::default(),
            }),
            busy: AtomicBool::new(false),
        }
    }

    /// The last conversation serial the channel gave out.
    ///
    /// Thread context; may block (for the token).
    pub fn last_serial(&self) -> u64 {
        self.lock().serial()
    }

    /// Takes the token. Thread context; may block (for the token).
    pub(super) fn lock(&self) -> Locked<'_, M, P> {
        let token = gettoken::<M>(self.token);
        assert!(
            !self.busy.swap(true, Ordering::Acquire),
            "ipc channel state re-entered"
        );
        #[allow(unsafe_code)]
        // SAFETY: we hold the token and the busy flag: this is the only
        // reference to the state until `Locked` drops.
        let st = unsafe { &mut *self.state.get() };
        Locked {
            st,
            busy: &self.busy,
            _token: token,
        }
    }

    /// The counters.
    ///
    /// Thread context; may block (for the token).
    pub fn stats(&self) -> ChannelStats {
        self.lock().stats
    }

    /// What waits now: queued senders, waiting receivers, queued pulses,
    /// and messages received and not replied.
    ///
    /// Thread context; may block (for the token).
    pub fn queues(&self) -> (usize, usize, usize, usize) {
        let st = self.lock();
        let unreplied = st.slots.len() - st.free.len();
        (
            st.senders.len(),
            st.receivers.len(),
            st.pulses.len(),
            unreplied,
        )
    }

    /// Whether the channel was destroyed.
    ///
    /// Thread context; may block (for the token).
    pub fn is_dead(&self) -> bool {
        self.lock().dead
    }

    /// Sends a pulse: delivered to the first waiting receiver, otherwise
    /// queued behind the pulses already waiting. A full queue refuses a
    /// user's pulse with [`Error::Full`] (counted) and queues nothing;
    /// `reserved` pulses — the kernel's own, each source of which has at
    /// most one outstanding — are always queued.
    ///
    /// Thread context; never blocks but for the token.
    pub fn pulse(&self, p: Pulse, reserved: bool) -> Result<(), Error> {
        let mut st = self.lock();
        if st.dead {
            return Err(Error::Gone);
        }
        if let Some(r) = st.receivers.pop_front() {
            let r = rec(r);
            st.stats.pulses += 1;
            r.give_pulse(p);
            crate::sleep::wakeup_thread_at::<M>(r.td, r.ident(), p.pri);
            return Ok(());
        }
        if !reserved && st.pulses.len() >= PULSE_QUEUE {
            st.stats.overflows += 1;
            return Err(Error::Full);
        }
        st.pulses.try_reserve(1).map_err(|_| Error::NoMemory)?;
        st.pulses.push_back(p);
        st.stats.pulses += 1;
        st.boost(p.pri);
        Ok(())
    }

    /// Destroys the channel: every queued and reply-blocked sender and
    /// every waiting receiver fails with [`Error::Gone`], queued pulses are
    /// dropped, and every later operation fails with `Gone`.
    ///
    /// Thread context; never blocks but for the token.
    pub fn destroy(&self) {
        let mut st = self.lock();
        if st.dead {
            return;
        }
        st.dead = true;
        while let Some(s) = st.senders.pop_front() {
            let s = rec(s);
            s.finish(Err(Error::Gone));
            crate::sleep::wakeup_thread::<M>(s.td, s.ident());
        }
        for i in 0..st.slots.len() {
            let p = st.slots[i].rec;
            if !p.is_null() {
                st.release_slot(i);
                let s = rec(p);
                s.finish(Err(Error::Gone));
                crate::sleep::wakeup_thread::<M>(s.td, s.ident());
            }
        }
        while let Some(r) = st.receivers.pop_front() {
            let r = rec(r);
            r.fail(Error::Gone);
            crate::sleep::wakeup_thread::<M>(r.td, r.ident());
        }
        st.pulses.clear();
        st.last_receiver = None;
    }
}

impl<M: Machine, P: Payload> State<M, P> {
    /// Queues `s` behind the senders of its priority or higher.
    pub fn enqueue_sender(&mut self, s: &Sender<M, P>) -> Result<(), Error> {
        self.senders.try_reserve(1).map_err(|_| Error::NoMemory)?;
        let at = self
            .senders
            .iter()
            .position(|&o| rec(o).pri < s.pri)
            .unwrap_or(self.senders.len());
        self.senders.insert(at, s);
        Ok(())
    }

    /// Takes `s` off the send queue (it was there).
    pub fn remove_sender(&mut self, s: &Sender<M, P>) {
        let at = self
            .senders
            .iter()
            .position(|&o| core::ptr::eq(o, s))
            .expect("a queued sender is on the queue");
        self.senders.remove(at);
    }

    /// Fails every waiting receiver with `e` (a message is queued that
    /// none of them may take: see `send_slow`).
    pub fn fail_receivers(&mut self, e: Error) {
        while let Some(r) = self.receivers.pop_front() {
            let r = rec(r);
            r.fail(e);
            crate::sleep::wakeup_thread::<M>(r.td, r.ident());
        }
    }

    /// Takes `r` off the receiver queue (it was there).
    pub fn remove_receiver(&mut self, r: &Receiver<M>) {
        let at = self
            .receivers
            .iter()
            .position(|&o| core::ptr::eq(o, r))
            .expect("a waiting receiver is on the queue");
        self.receivers.remove(at);
    }

    /// Makes sure a free rcvid slot exists (growing the table if needed):
    /// after this, [`State::claim`] cannot fail.
    pub fn reserve_slot(&mut self) -> Result<(), Error> {
        if !self.free.is_empty() {
            return Ok(());
        }
        if self.slots.len() >= MAX_RCVIDS {
            return Err(Error::Full);
        }
        self.slots.try_reserve(1).map_err(|_| Error::NoMemory)?;
        // Room for every slot on the free list: freeing never allocates.
        let want = self.slots.len() + 1 - self.free.len();
        self.free.try_reserve(want).map_err(|_| Error::NoMemory)?;
        self.slots.push(Slot {
            serial: 0,
            rec: core::ptr::null(),
        });
        self.free.push((self.slots.len() - 1) as u16);
        Ok(())
    }

    /// Gives `s` an rcvid and records it in the reply table: the slot
    /// number + 1 in the low [`super::RCVID_SLOT_BITS`] bits (never 0), the
    /// conversation's serial above ([`super::RCVID_SERIAL_BITS`] bits, so the
    /// rcvid is positive and leaves room for the kernel's channel id). The
    /// serial counts every conversation the channel ever had, whichever
    /// slot it took: an rcvid kept after its conversation ended matches
    /// again only after 2^47 more conversations on the channel.
    pub fn claim(&mut self, s: &Sender<M, P>) -> Result<u64, Error> {
        self.reserve_slot()?;
        let i = usize::from(self.free.pop().expect("a slot was reserved"));
        self.serial = (self.serial + 1) & RCVID_SERIAL_MASK;
        if self.serial == 0 {
            self.serial = 1;
        }
        let slot = &mut self.slots[i];
        slot.rec = s;
        slot.serial = self.serial;
        let rcvid = self.serial << RCVID_SLOT_BITS | (i as u64 + 1);
        s.rcvid.store(rcvid, Ordering::Relaxed);
        s.set_state(super::record::RECEIVED);
        self.stats.received += 1;
        Ok(rcvid)
    }

    /// The reply-blocked sender of `rcvid`.
    pub fn lookup<'a>(&self, rcvid: u64) -> Result<&'a Sender<M, P>, Error> {
        let i = (rcvid & ((1 << RCVID_SLOT_BITS) - 1)) as usize;
        let serial = rcvid >> RCVID_SLOT_BITS;
        if i == 0 || i > self.slots.len() || serial == 0 || serial > RCVID_SERIAL_MASK {
            return Err(Error::BadRcvid);
        }
        let slot = &self.slots[i - 1];
        if slot.rec.is_null() || slot.serial != serial {
            return Err(Error::Stale);
        }
        Ok(rec(slot.rec))
    }

    /// Frees the slot of `rcvid` (which is in use).
    pub fn release(&mut self, rcvid: u64) {
        self.release_slot((rcvid & ((1 << RCVID_SLOT_BITS) - 1)) as usize - 1);
    }

    /// The last conversation serial given out: a channel made in the place
    /// of this one starts after it ([`Channel::with_serial`]).
    pub fn serial(&self) -> u64 {
        self.serial
    }

    fn release_slot(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        debug_assert!(!slot.rec.is_null());
        slot.rec = core::ptr::null();
        slot.serial = 0;
        // Capacity for every slot was reserved when the slot was made.
        self.free.push(i as u16);
    }

    /// Records the current thread as the last to take from the channel.
    #[inline(always)]
    pub fn received_by(&mut self, td: &'static crate::Thread<M>) {
        if !self
            .last_receiver
            .as_ref()
            .is_some_and(|r| core::ptr::eq(r.thread(), td))
        {
            self.last_receiver = Some(ThreadRef::new(td));
        }
    }

    /// Priority inheritance for a sender or pulse of priority `pri` that has
    /// to wait: the thread that last took from the channel is raised to
    /// `pri` if it is below it.
    pub fn boost(&self, pri: u8) {
        if let Some(r) = &self.last_receiver
            && r.sched_priority() < pri
        {
            crate::setpri::<M>(r.thread(), pri);
        }
    }

    /// What a receive takes next: a pulse if one waits and no queued sender
    /// has a higher priority, else the first sender.
    pub fn next_is_pulse(&self) -> Option<bool> {
        match (self.pulses.front(), self.senders.front()) {
            (None, None) => None,
            (Some(_), None) => Some(true),
            (None, Some(_)) => Some(false),
            (Some(p), Some(&s)) => Some(p.pri >= rec(s).pri),
        }
    }
}
