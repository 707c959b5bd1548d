//! Resource accounts: every kernel resource a process causes is charged to
//! an account, and every account is bounded.
//!
//! # The tree
//!
//! Each process has an account of its own; its parent is the account of the
//! process that spawned it (the kernel's root account for the first). A
//! charge is made to the process's account and to every account above it,
//! and fails — changing nothing — if any of them would pass its limit. So
//! what a process and everything it started can take is bounded by its own
//! limits and by its ancestors': a program that spawns without end, or a
//! whole subtree that maps memory until refused, exhausts its own account
//! and the ones it shares with its parent, never the root. An orphan keeps
//! the account it was born with (re-parenting changes who may wait for it,
//! not who pays for it).
//!
//! # Limits
//!
//! A child's limits are what its parent asked for at spawn, each capped by
//! the parent's own; by default the child gets the parent's. The root's
//! memory limit is usable memory minus the kernel's reserve
//! ([`KERNEL_RESERVE_MIN`], or a sixteenth of memory if that is more): what
//! no user process can take, so the kernel's own work (and its heap) always
//! finds frames. The process manager gives each service its own share
//! (`procman`'s policy), so the shell's programs cannot starve the console.
//!
//! # What is charged
//!
//! | resource | unit | charged for |
//! |---|---|---|
//! | [`Res::Memory`] | bytes | user pages, page tables, each thread's kernel stack, FPU area and records, each process's kernel records, channels, connections |
//! | [`Res::Processes`] | processes | each process in the subtree (itself included) |
//! | [`Res::Threads`] | threads | each live thread in the subtree |
//! | [`Res::Channels`] | channels | each channel in the subtree |
//! | [`Res::Connections`] | connections | each connection in the subtree |
//!
//! Memory is charged at a nominal size per object ([`cost`]), at least what
//! the object takes from the heap and the frame allocator, so the sum of
//! charges bounds what user processes hold.
//!
//! A [`Charge`] uncharges when dropped: the object that holds it gives its
//! resources back with its own lifetime. An ended process and an ended
//! thread give theirs back when they end, before their parent's `WAIT` or
//! a join can return (their last records go a moment later, with the last
//! reference, covered by the kernel's reserve): a parent that saw a child
//! end has its account back and may spawn again within its limits at once.

use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};

use wyvern_abi::syscall::{Error, Limits};

use crate::mm::PAGE_SIZE;
use crate::sync::Once;

/// The kinds of resource an account bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Res {
    Memory = 0,
    Processes = 1,
    Threads = 2,
    Channels = 3,
    Connections = 4,
}

const KINDS: usize = 5;

impl Res {
    fn name(self) -> &'static str {
        match self {
            Res::Memory => "memory",
            Res::Processes => "processes",
            Res::Threads => "threads",
            Res::Channels => "channels",
            Res::Connections => "connections",
        }
    }
}

/// Nominal memory of the objects a process can make the kernel hold.
pub mod cost {
    use super::PAGE_SIZE;

    /// A thread: its kernel stack slot (64 KiB mapped), the lwkt thread,
    /// its FPU/XSAVE area (up to 4 KiB) and its user record.
    pub const THREAD: u64 = (64 << 10) + 2 * PAGE_SIZE;
    /// A process's records: the process, its tables, its address space's
    /// root page table.
    pub const PROCESS: u64 = 2 * PAGE_SIZE;
    /// A channel: its records, queues and reply table.
    pub const CHANNEL: u64 = 2048;
    /// A connection-table entry.
    pub const CONNECTION: u64 = 64;
}

/// The kernel keeps at least this much memory no account may take.
pub const KERNEL_RESERVE_MIN: u64 = 8 << 20;

/// An account.
pub struct Account {
    parent: Option<Arc<Account>>,
    limit: [u64; KINDS],
    used: [AtomicU64; KINDS],
}

/// A charge held by an object: given back when dropped.
pub struct Charge {
    account: Arc<Account>,
    res: Res,
    amount: u64,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.account.uncharge(self.res, self.amount);
    }
}

impl Charge {
    /// How much it holds.
    pub fn amount(&self) -> u64 {
        self.amount
    }

    /// Grows the charge by `more`, or fails changing nothing.
    pub fn grow(&mut self, more: u64) -> Result<(), Error> {
        self.account.charge_raw(self.res, more)?;
        self.amount += more;
        Ok(())
    }

    /// Shrinks the charge by `less` (at most what it holds).
    pub fn shrink(&mut self, less: u64) {
        let less = less.min(self.amount);
        self.account.uncharge(self.res, less);
        self.amount -= less;
    }
}

static ROOT: Once<Arc<Account>> = Once::new();

/// The root account: every process's is below it. Made on first use, from
/// the frame allocator's figures.
pub fn root() -> &'static Arc<Account> {
    ROOT.call_once(|| {
        let total = crate::mm::frame::stats().total_bytes();
        let reserve = (total / 16).max(KERNEL_RESERVE_MIN);
        Arc::new(Account {
            parent: None,
            limit: [
                total.saturating_sub(reserve),
                crate::user::process::MAX_PROCS as u64,
                u64::MAX,
                u64::MAX,
                u64::MAX,
            ],
            used: [const { AtomicU64::new(0) }; KINDS],
        })
    })
}

impl Account {
    /// A child account of `parent` with `want`'s limits, each capped by the
    /// parent's (0 in `want` means "as the parent").
    pub fn child(parent: &Arc<Account>, want: &Limits) -> Result<Arc<Account>, Error> {
        let asked = [
            want.memory,
            want.processes,
            want.threads,
            want.channels,
            want.connections,
        ];
        let limit = core::array::from_fn(|i| match asked[i] {
            0 => parent.limit[i],
            n => n.min(parent.limit[i]),
        });
        Arc::try_new(Account {
            parent: Some(parent.clone()),
            limit,
            used: [const { AtomicU64::new(0) }; KINDS],
        })
        .map_err(|_| Error::NoMemory)
    }

    /// This account's limits.
    pub fn limits(&self) -> Limits {
        Limits {
            memory: self.limit[0],
            processes: self.limit[1],
            threads: self.limit[2],
            channels: self.limit[3],
            connections: self.limit[4],
        }
    }

    /// What is charged now, by kind.
    pub fn used(&self, r: Res) -> u64 {
        self.used[r as usize].load(Ordering::Relaxed)
    }

    /// Charges `amount` of `r` here and to every account above, or fails
    /// with [`Error::Limit`] (counts) or [`Error::NoMemory`] (memory),
    /// changing nothing. Any context that may touch atomics.
    fn charge_raw(&self, r: Res, amount: u64) -> Result<(), Error> {
        let i = r as usize;
        let mut at = Some(self);
        while let Some(a) = at {
            let ok = a.used[i]
                .try_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                    u.checked_add(amount).filter(|&n| n <= a.limit[i])
                })
                .is_ok();
            if !ok {
                // Undo what was charged below `a`.
                let mut undo = Some(self);
                while let Some(b) = undo {
                    if core::ptr::eq(b, a) {
                        break;
                    }
                    b.used[i].fetch_sub(amount, Ordering::Relaxed);
                    undo = b.parent.as_deref();
                }
                return Err(match r {
                    Res::Memory => Error::NoMemory,
                    _ => Error::Limit,
                });
            }
            at = a.parent.as_deref();
        }
        Ok(())
    }

    fn uncharge(&self, r: Res, amount: u64) {
        let i = r as usize;
        let mut at = Some(self);
        while let Some(a) = at {
            let before = a.used[i].fetch_sub(amount, Ordering::Relaxed);
            debug_assert!(before >= amount, "{} uncharged below zero", r.name());
            at = a.parent.as_deref();
        }
    }

    /// Charges `amount` of `r`; the returned [`Charge`] gives it back when
    /// dropped.
    pub fn charge(self: &Arc<Self>, r: Res, amount: u64) -> Result<Charge, Error> {
        self.charge_raw(r, amount)?;
        Ok(Charge {
            account: self.clone(),
            res: r,
            amount,
        })
    }
}
