//! Receiving, and what a server does with what it received: reply, error,
//! read and write.

use core::sync::atomic::Ordering;

use super::channel::{Channel, Locked, rec};
use super::record::{FAILED, GOT_MSG, GOT_PULSE, QUEUED, RECEIVED, Receiver, Sender, WAITING};
use super::{Delivery, Error, Payload, Received, Side};
use crate::Machine;
use crate::sleep::{INTERLOCKED, INTERRUPTIBLE, Wake, can_handoff, tsleep_handoff};

/// Sets the current thread's priority if it differs.
#[inline(always)]
fn set_own_pri<M: Machine>(p: u8) {
    if crate::current::<M>().sched_priority() != p {
        crate::setpri_self::<M>(p);
    }
}

impl<M: Machine, P: Payload> Channel<M, P> {
    /// Takes the next pulse or message, waiting for one if none is queued:
    /// a pulse when one waits and no queued sender has a higher priority,
    /// else the first (highest-priority, longest-waiting) sender's message,
    /// copied into `buf` as far as it fits. The caller then runs at the
    /// sender's priority; while it waits, at `base_pri`. Fails with
    /// [`Error::Gone`] (destroyed), [`Error::Fault`] (`buf` is bad: the
    /// message stays queued), [`Error::Interrupted`], or [`Error::Full`]
    /// (a sender waits and [`super::MAX_RCVIDS`] messages are received and
    /// unreplied: the sender stays queued; a receive already waiting when
    /// such a sender comes fails so too).
    ///
    /// Thread context, never from a hard interrupt; blocks (interruptibly).
    pub fn receive(&self, buf: &P::Bufs, base_pri: u8) -> Result<Delivery<P::Who>, Error> {
        debug_assert!(
            !M::mycpu().in_interrupt(),
            "ipc receive from a hard-interrupt handler"
        );
        let td = crate::current::<M>();
        loop {
            let mut st = self.lock();
            if st.dead {
                return Err(Error::Gone);
            }
            match st.next_is_pulse() {
                Some(true) => {
                    let p = st.pulses.pop_front().expect("a pulse is queued");
                    st.received_by(td);
                    drop(st);
                    set_own_pri::<M>(p.pri);
                    return Ok(Delivery::Pulse(p));
                }
                Some(false) => {
                    let s: &Sender<M, P> = rec(*st.senders.front().expect("a sender is queued"));
                    let rcvid = st.claim(s)?;
                    st.senders.pop_front();
                    s.pin();
                    st.received_by(td);
                    drop(st);
                    set_own_pri::<M>(s.pri);
                    if let Some(r) = self.copy_in(s, rcvid, buf) {
                        return r;
                    }
                }
                None => {
                    // Back to our own priority before anyone can find us.
                    set_own_pri::<M>(base_pri);
                    let r = Receiver::new(td);
                    st.receivers.try_reserve(1).map_err(|_| Error::NoMemory)?;
                    st.receivers.push_back(&r);
                    crate::sleep::tsleep_interlock_direct::<M>(r.ident());
                    drop(st);
                    if let Some(res) = self.await_delivery(&r, buf) {
                        return res;
                    }
                }
            }
        }
    }

    /// Waits on the receiver queue until given something. `None`: the
    /// message given was unreadable (its sender failed); look again.
    #[inline(always)]
    fn await_delivery(
        &self,
        r: &Receiver<M>,
        buf: &P::Bufs,
    ) -> Option<Result<Delivery<P::Who>, Error>> {
        loop {
            match r.state() {
                GOT_MSG => {
                    crate::tsleep_cancel::<M>();
                    let s: &Sender<M, P> = rec(r.sender::<P>());
                    // The giver's wakeup set it if we were still asleep.
                    set_own_pri::<M>(s.pri);
                    return self.copy_in(s, r.rcvid.load(Ordering::Relaxed), buf);
                }
                GOT_PULSE => {
                    crate::tsleep_cancel::<M>();
                    let p = r.pulse();
                    set_own_pri::<M>(p.pri);
                    return Some(Ok(Delivery::Pulse(p)));
                }
                FAILED => {
                    crate::tsleep_cancel::<M>();
                    return Some(Err(r.error()));
                }
                _ => {}
            }
            let how = crate::tsleep::<M>(r.ident(), INTERLOCKED | INTERRUPTIBLE, "receive", 0);
            if how == Wake::Interrupted {
                return Some(self.abandon(r));
            }
            // Given something meanwhile: no need to sleep again.
            if r.state() == WAITING {
                crate::sleep::tsleep_interlock_direct::<M>(r.ident());
            }
        }
    }

    /// Interrupted while waiting: off the queue, and whatever we were given
    /// meanwhile goes back to the head of its queue.
    fn abandon(&self, r: &Receiver<M>) -> Result<Delivery<P::Who>, Error> {
        let mut st = self.lock();
        match r.state() {
            WAITING => st.remove_receiver(r),
            GOT_MSG => {
                let s: &Sender<M, P> = rec(r.sender::<P>());
                let rcvid = r.rcvid.load(Ordering::Relaxed);
                give_back(&mut st, s, rcvid);
                s.unpin();
            }
            GOT_PULSE => {
                if st.pulses.try_reserve(1).is_ok() {
                    st.pulses.push_front(r.pulse());
                    hand_on(&mut st);
                }
            }
            FAILED => return Err(r.error()),
            _ => unreachable!("receiver state"),
        }
        Err(Error::Interrupted)
    }

    /// Copies sender `s`'s message (received under `rcvid`, pinned for us)
    /// into `buf`. `None`: the sender's buffer was bad, so its send failed;
    /// receive the next one.
    fn copy_in(
        &self,
        s: &Sender<M, P>,
        rcvid: u64,
        buf: &P::Bufs,
    ) -> Option<Result<Delivery<P::Who>, Error>> {
        let copied = match P::copy_now(&s.smsg, 0, buf, 0) {
            Some(n) => Ok(n),
            None => P::copy(&s.smsg, 0, buf, 0),
        };
        match copied {
            Ok(n) => {
                let got = Received {
                    rcvid,
                    pri: s.pri,
                    who: s.who,
                    slen: P::len(&s.smsg),
                    rlen: P::len(&s.rmsg),
                    copied: n,
                };
                s.unpin();
                Some(Ok(Delivery::Msg(got)))
            }
            Err(side) => {
                let (td, ident) = (s.td, s.ident());
                let mut st = self.lock();
                let mine = s.state() == RECEIVED && s.rcvid.load(Ordering::Relaxed) == rcvid;
                let r = match side {
                    Side::Src => {
                        if mine {
                            st.release(rcvid);
                            s.finish(Err(Error::Fault));
                        }
                        None
                    }
                    Side::Dst => {
                        if mine {
                            give_back(&mut st, s, rcvid);
                        }
                        Some(Err(Error::Fault))
                    }
                };
                s.unpin();
                drop(st);
                if mine && side == Side::Src {
                    crate::sleep::wakeup_thread::<M>(td, ident);
                }
                r
            }
        }
    }

    /// Who sent the message of `rcvid` (while its conversation lasts).
    ///
    /// Thread context; may block (for the token).
    pub fn sender_of(&self, rcvid: u64) -> Result<P::Who, Error> {
        let st = self.lock();
        Ok(st.lookup(rcvid)?.who)
    }

    /// Pins the reply-blocked sender of `rcvid`.
    fn pinned(&self, rcvid: u64) -> Result<&Sender<M, P>, Error> {
        let st = self.lock();
        let s = st.lookup(rcvid)?;
        s.pin();
        Ok(s)
    }

    /// Replies to `rcvid`: `src`'s bytes go to the sender's reply buffers
    /// (as far as they fit) and its send returns `status` (below 2^63). A
    /// bad `src` fails with [`Error::Fault`] and the sender stays
    /// reply-blocked; a bad reply buffer of the sender's fails *its* send
    /// with `Fault` instead. [`Error::Stale`] when the conversation is over
    /// (the sender was killed, or this rcvid was replied already).
    ///
    /// Thread context; never blocks but for the token and page faults.
    pub fn reply(&self, rcvid: u64, status: u64, src: Option<&P::Bufs>) -> Result<(), Error> {
        let (st, td, ident) = self.finish_reply(rcvid, status, src)?;
        drop(st);
        crate::sleep::wakeup_thread::<M>(td, ident);
        Ok(())
    }

    /// The reply: copies `src` to the reply buffers of `rcvid`'s sender and
    /// ends its send with `status` (as [`Channel::reply`] says), returning
    /// the channel still locked and what to wake. With nothing to copy, or
    /// a copy that can be done at once ([`Payload::copy_now`]), it is one
    /// pass through the token; otherwise the sender is pinned and the copy
    /// done outside it.
    fn finish_reply(
        &self,
        rcvid: u64,
        status: u64,
        src: Option<&P::Bufs>,
    ) -> Result<Replied<'_, M, P>, Error> {
        let mut st = self.lock();
        let s = st.lookup(rcvid)?;
        let mut copy = src.filter(|b| P::len(b) != 0 && P::len(&s.rmsg) != 0);
        if let Some(b) = copy
            && P::copy_now(b, 0, &s.rmsg, 0).is_some()
        {
            copy = None;
        }
        let result = match copy {
            None => Ok(status),
            Some(b) => {
                s.pin();
                drop(st);
                let copied = P::copy(b, 0, &s.rmsg, 0);
                if copied == Err(Side::Src) {
                    s.unpin();
                    return Err(Error::Fault);
                }
                st = self.lock();
                if !(s.state() == RECEIVED && s.rcvid.load(Ordering::Relaxed) == rcvid) {
                    s.unpin();
                    return Err(Error::Stale);
                }
                copied.map(|_| status).map_err(|_| Error::Fault)
            }
        };
        // Taken before the record may go (once done and unpinned).
        let (td, ident) = (s.td, s.ident());
        st.release(rcvid);
        st.stats.replies += 1;
        s.finish(result);
        if copy.is_some() {
            s.unpin();
        }
        Ok((st, td, ident))
    }

    /// Replies to `rcvid` as [`Channel::reply`] and then receives as
    /// [`Channel::receive`], in one pass through the channel's token — a
    /// server's loop, seL4's ReplyRecv. The outer result is the reply's: a
    /// failed reply receives nothing. The inner one is the receive's.
    ///
    /// The fast path: when nothing is queued for the server to take and the
    /// client it replied to sleeps on this CPU and may run at once, the
    /// server waits in receive and hands the CPU straight to that client
    /// (no run-queue pick), as a send hands it to a waiting receiver. Any
    /// guard that fails wakes the client as `reply` does; the outcome is the
    /// same.
    ///
    /// Thread context, never from a hard interrupt; blocks (interruptibly)
    /// in the receive.
    pub fn reply_receive(
        &self,
        rcvid: u64,
        status: u64,
        src: Option<&P::Bufs>,
        buf: &P::Bufs,
        base_pri: u8,
    ) -> Result<Result<Delivery<P::Who>, Error>, Error> {
        debug_assert!(
            !M::mycpu().in_interrupt(),
            "ipc reply_receive from a hard-interrupt handler"
        );
        let td = crate::current::<M>();
        let may_handoff = self.fast && td.tokens_held() == 0 && td.crit_depth() == 0;
        let (mut st, client, ident) = self.finish_reply(rcvid, status, src)?;
        if st.dead || st.next_is_pulse().is_some() || st.receivers.try_reserve(1).is_err() {
            // Something to take at once (or no room to wait): the general
            // receive.
            drop(st);
            crate::sleep::wakeup_thread::<M>(client, ident);
            return Ok(self.receive(buf, base_pri));
        }
        // Back to our own priority before anyone can find us.
        set_own_pri::<M>(base_pri);
        let r = Receiver::new(td);
        st.receivers.push_back(&r);
        crate::sleep::tsleep_interlock_direct::<M>(r.ident());
        let g = crate::crit_enter::<M>();
        let to_pri = client.sched_priority();
        if may_handoff && can_handoff(&g, INTERRUPTIBLE, client, ident, to_pri) {
            st.stats.fast_replies += 1;
            drop(st);
            // Nothing ran on this CPU since `can_handoff`: we stayed in the
            // critical section and did not block.
            let how = tsleep_handoff(&g, r.ident(), INTERRUPTIBLE, "receive", client, to_pri);
            drop(g);
            if how == Wake::Interrupted {
                return Ok(self.abandon(&r));
            }
            // Given something meanwhile: no need to sleep again.
            if r.state() == WAITING {
                crate::sleep::tsleep_interlock_direct::<M>(r.ident());
            }
        } else {
            drop(g);
            drop(st);
            crate::sleep::wakeup_thread::<M>(client, ident);
        }
        Ok(match self.await_delivery(&r, buf) {
            Some(res) => res,
            None => self.receive(buf, base_pri),
        })
    }

    /// Fails `rcvid`'s send with [`Error::Peer`]`(code)`.
    ///
    /// Thread context; never blocks but for the token.
    pub fn error(&self, rcvid: u64, code: u32) -> Result<(), Error> {
        let mut st = self.lock();
        let s = st.lookup(rcvid)?;
        let (td, ident) = (s.td, s.ident());
        st.release(rcvid);
        st.stats.replies += 1;
        s.finish(Err(Error::Peer(code)));
        crate::sleep::wakeup_thread::<M>(td, ident);
        Ok(())
    }

    /// Copies the message of `rcvid` from byte `offset` on into `dst`;
    /// returns the bytes copied (0 past the end).
    ///
    /// Thread context; never blocks but for the token and page faults.
    pub fn read(&self, rcvid: u64, offset: usize, dst: &P::Bufs) -> Result<usize, Error> {
        let s = self.pinned(rcvid)?;
        let r = P::copy(&s.smsg, offset, dst, 0);
        s.unpin();
        r.map_err(|_| Error::Fault)
    }

    /// Copies `src` into the reply buffers of `rcvid` from byte `offset`
    /// on; returns the bytes copied (0 past the end).
    ///
    /// Thread context; never blocks but for the token and page faults.
    pub fn write(&self, rcvid: u64, offset: usize, src: &P::Bufs) -> Result<usize, Error> {
        let s = self.pinned(rcvid)?;
        let r = P::copy(src, 0, &s.rmsg, offset);
        s.unpin();
        r.map_err(|_| Error::Fault)
    }
}

/// What [`Channel::finish_reply`] leaves: the channel still locked, and the
/// sender's thread and ident to wake.
type Replied<'a, M, P> = (Locked<'a, M, P>, &'static crate::Thread<M>, usize);

/// Puts received sender `s` back at the head of its priority on the send
/// queue (its receiver could not take it), or fails it if there is no
/// memory for that.
fn give_back<M: Machine, P: Payload>(st: &mut Locked<'_, M, P>, s: &Sender<M, P>, rcvid: u64) {
    if s.state() != RECEIVED || s.rcvid.load(Ordering::Relaxed) != rcvid {
        return;
    }
    st.release(rcvid);
    st.stats.received -= 1;
    if st.senders.try_reserve(1).is_err() {
        s.finish(Err(Error::NoMemory));
        crate::sleep::wakeup_thread::<M>(s.td, s.ident());
        return;
    }
    let at = st
        .senders
        .iter()
        .position(|&o| rec::<Sender<M, P>>(o).pri <= s.pri)
        .unwrap_or(st.senders.len());
    st.senders.insert(at, s);
    s.set_state(QUEUED);
    hand_on(st);
}

/// After a message or pulse went back to the head of its queue (its
/// receiver could not take it): hands it on to the next waiting receiver,
/// if one waits, as a send or pulse arriving then would. A receiver never
/// waits beside a queued message or pulse: it would wait for the next one
/// while this one waited for a receive that may never come.
fn hand_on<M: Machine, P: Payload>(st: &mut Locked<'_, M, P>) {
    let (Some(&first), Some(pulse)) = (st.receivers.front(), st.next_is_pulse()) else {
        return;
    };
    let r = rec(first);
    if pulse {
        st.receivers.pop_front();
        let p = st.pulses.pop_front().expect("a pulse is queued");
        r.give_pulse(p);
        crate::sleep::wakeup_thread_at::<M>(r.td, r.ident(), p.pri);
        return;
    }
    let s: &Sender<M, P> = rec(*st.senders.front().expect("a sender is queued"));
    match st.claim(s) {
        Ok(rcvid) => {
            st.receivers.pop_front();
            st.senders.pop_front();
            s.pin();
            r.give_msg(s, rcvid);
            st.received_by(r.td);
            crate::sleep::wakeup_thread_at::<M>(r.td, r.ident(), s.pri);
        }
        // At the bound of unreplied messages: as `send_slow`.
        Err(e) => st.fail_receivers(e),
    }
}
