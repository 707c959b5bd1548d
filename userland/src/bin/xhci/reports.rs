//! Keyboard reports between the controller and the readers of
//! `USB_KBD_REPORT`.
//!
//! Reports wait in a queue of [`QUEUE`] (the oldest is dropped, and
//! counted, when it is full); readers wait in a list of [`READERS`] (the
//! oldest gets `Busy` when a new one finds it full, so readers that died
//! while waiting cannot wedge the list). When both are non-empty the
//! oldest report goes to every waiting reader at once: each reader sees
//! each report it waited for, and a reader that comes back late takes
//! the queue in order. Nothing grows past its bound.

use alloc::collections::VecDeque;

use wyvern_abi::syscall::Error;
use wyvern_user::{ipc, println};

pub const QUEUE: usize = 64;
pub const READERS: usize = 8;

pub struct Reports {
    queue: VecDeque<(u64, [u8; 8])>,
    readers: VecDeque<u64>,
    dropped: u64,
}

impl Reports {
    pub fn new() -> Reports {
        Reports {
            queue: VecDeque::with_capacity(QUEUE),
            readers: VecDeque::with_capacity(READERS),
            dropped: 0,
        }
    }

    /// Keyboard `slot` sent `report`.
    pub fn push(&mut self, slot: u64, report: [u8; 8]) {
        if self.queue.len() == QUEUE {
            self.queue.pop_front();
            self.dropped += 1;
            // 1, 2, 4, …: a bounded number of lines however long nobody reads.
            if self.dropped.is_power_of_two() {
                println!(
                    "xhci: nobody reads the keyboard: {} reports dropped",
                    self.dropped
                );
            }
        }
        self.queue.push_back((slot, report));
    }

    /// Message `rcvid` waits for the next report.
    pub fn wait(&mut self, rcvid: u64) {
        if self.readers.len() == READERS
            && let Some(old) = self.readers.pop_front()
        {
            let _ = ipc::error(old, Error::Busy);
        }
        self.readers.push_back(rcvid);
    }

    /// Hands the oldest report to the waiting readers, if both exist.
    pub fn deliver(&mut self) {
        if self.readers.is_empty() {
            return;
        }
        let Some((slot, report)) = self.queue.pop_front() else {
            return;
        };
        let slot = slot.to_le_bytes();
        for r in self.readers.drain(..) {
            // A reader that ended meanwhile is `Stale`: nothing to do.
            let _ = ipc::replyv(r, 8, &[&slot, &report]);
        }
    }
}
