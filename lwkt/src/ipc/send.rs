//! Sending: the fast path, the general path, waiting for the reply, and
//! leaving when interrupted.

use super::channel::{Channel, rec};
use super::record::{DONE, QUEUED, RECEIVED, Sender};
use super::{Error, Payload};
use crate::sleep::{INTERLOCKED, INTERRUPTIBLE, Wake, can_handoff, tsleep_handoff};
use crate::{Machine, crit_enter};

impl<M: Machine, P: Payload> Channel<M, P> {
    /// Sends `smsg` and blocks until a server replies; the reply's bytes
    /// land in `rmsg` and its status is returned. Fails with
    /// [`Error::Gone`] if the channel is or becomes destroyed,
    /// [`Error::Fault`] if `smsg` or `rmsg` proved unreadable or
    /// unwritable, [`Error::Interrupted`] if the sleep was interrupted, or
    /// the server's error ([`Error::Peer`]). `who` is what the receiver is
    /// told of the sender.
    ///
    /// Thread context, never from a hard interrupt; blocks (interruptibly).
    pub fn send(&self, who: P::Who, smsg: P::Bufs, rmsg: P::Bufs) -> Result<u64, Error> {
        debug_assert!(
            !M::mycpu().in_interrupt(),
            "ipc send from a hard-interrupt handler"
        );
        let s = Sender::new(crate::current::<M>(), who, smsg, rmsg);
        if !self.send_fast(&s) {
            self.send_slow(&s)?;
        }
        self.await_reply(&s)
    }

    /// The fast path: the first waiting receiver sleeps on this CPU and may
    /// run at once, so it gets the message and the CPU directly. Returns
    /// false — having changed nothing — when a guard fails.
    fn send_fast(&self, s: &Sender<M, P>) -> bool {
        if !self.fast {
            return false;
        }
        let td = crate::current::<M>();
        if td.tokens_held() != 0 || td.crit_depth() != 0 {
            return false;
        }
        let mut st = self.lock();
        let g = crit_enter::<M>();
        if st.dead || !st.pulses.is_empty() || st.reserve_slot().is_err() {
            return false;
        }
        let Some(&first) = st.receivers.front() else {
            return false;
        };
        let r = rec(first);
        if !can_handoff(&g, INTERRUPTIBLE, r.td, r.ident(), s.pri) {
            return false;
        }
        // --- POINT OF NO RETURN ---
        st.receivers.pop_front();
        let rcvid = st.claim(s).expect("an rcvid was reserved");
        s.pin();
        r.give_msg(s, rcvid);
        st.received_by(r.td);
        st.stats.sends += 1;
        st.stats.fast += 1;
        crate::sleep::tsleep_interlock_direct::<M>(s.ident());
        drop(st);
        // Nothing ran on this CPU since `can_handoff`: we stayed in the
        // critical section and did not block.
        tsleep_handoff(&g, s.ident(), INTERRUPTIBLE, "reply", r.td, s.pri);
        drop(g);
        true
    }

    /// The general path: give the message to the first waiting receiver
    /// and wake it wherever it sleeps, or queue it. Leaves the sender
    /// interlocked on its record.
    fn send_slow(&self, s: &Sender<M, P>) -> Result<(), Error> {
        let mut st = self.lock();
        if st.dead {
            return Err(Error::Gone);
        }
        st.stats.sends += 1;
        let Some(&first) = st.receivers.front() else {
            st.enqueue_sender(s)?;
            st.boost(s.pri);
            crate::sleep::tsleep_interlock_direct::<M>(s.ident());
            return Ok(());
        };
        match st.claim(s) {
            Ok(rcvid) => {
                let r = rec(first);
                st.receivers.pop_front();
                s.pin();
                r.give_msg(s, rcvid);
                st.received_by(r.td);
                crate::sleep::tsleep_interlock_direct::<M>(s.ident());
                // At the sender's priority: one message if on another CPU,
                // so the receiver is queued at its new priority.
                crate::sleep::wakeup_thread_at::<M>(r.td, r.ident(), s.pri);
            }
            Err(e) => {
                // At the bound of unreplied messages (or out of memory for
                // the table): the sender queues, and every waiting receive
                // fails as it would had it come after the sender (`receive`)
                // — a receiver left waiting beside a queued sender would
                // wait for the next sender while this one starved.
                st.enqueue_sender(s)?;
                st.fail_receivers(e);
                st.boost(s.pri);
                crate::sleep::tsleep_interlock_direct::<M>(s.ident());
            }
        }
        Ok(())
    }

    /// Sleeps until the conversation is over and nobody uses our buffers.
    /// The sender is interlocked on its record, or was just woken.
    fn await_reply(&self, s: &Sender<M, P>) -> Result<u64, Error> {
        loop {
            if s.state() == DONE {
                crate::tsleep_cancel::<M>();
                if !s.unpinned() {
                    s.wait_unpinned();
                }
                return s.result();
            }
            let wmesg = if s.state() == QUEUED { "send" } else { "reply" };
            let how = crate::tsleep::<M>(s.ident(), INTERLOCKED | INTERRUPTIBLE, wmesg, 0);
            if how == Wake::Interrupted {
                return self.leave(s);
            }
            // Done meanwhile: no need to sleep again.
            if s.state() != DONE {
                crate::sleep::tsleep_interlock_direct::<M>(s.ident());
            }
        }
    }

    /// Interrupted: out of the queue or the reply table, then wait for the
    /// copies in progress. A reply that came first still counts.
    fn leave(&self, s: &Sender<M, P>) -> Result<u64, Error> {
        {
            let mut st = self.lock();
            match s.state() {
                QUEUED => {
                    st.remove_sender(s);
                    s.finish(Err(Error::Interrupted));
                }
                RECEIVED => {
                    st.release(s.rcvid.load(core::sync::atomic::Ordering::Relaxed));
                    s.finish(Err(Error::Interrupted));
                }
                _ => {}
            }
        }
        s.wait_unpinned();
        s.result()
    }
}
