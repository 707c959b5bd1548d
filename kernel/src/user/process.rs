//! Processes: the table, spawning from the ramdisk, threads, exit, kill and
//! wait.
//!
//! # Life of a process
//!
//! [`spawn`] loads a program into a new address space, records the process
//! in the table and starts its first thread. Threads end by `THREAD_EXIT`, by
//! the process's `EXIT`, or by a kill; the last one to end tears the address
//! space down (its memory is back before anyone waits) and marks the process
//! ended, waking its parent. The parent's `WAIT` then takes the status and
//! removes the process from the table. A process whose parent has ended is
//! removed as soon as it ends (nobody can wait for it).
//!
//! # Killing
//!
//! [`Process::kill`] records the status (the first of exit and kill wins),
//! marks the process dying, and interrupts every thread: one in an
//! interruptible sleep wakes with an error and returns towards user mode, one
//! running user code on another CPU takes an IPI; either way the check on the
//! way back to user mode ends it (`user::before_user_return`). Nothing waits
//! for a thread that never returns to user mode: every blocking system call
//! sleeps interruptibly.
//!
//! # Who may do what
//!
//! A process may kill its children; one with `rights::KILL` may kill any
//! process but the process manager. When a process ends, its children are
//! re-parented to the process manager (which reaps them with a wait for
//! any child), or — in a boot without one — to nobody, and then removed as
//! soon as they end. Each process has rights and a priority ceiling, given
//! at spawn and never more than its parent's (the kernel's own children and
//! the process manager have all of both); its threads cannot be set above
//! the ceiling. Every process is charged to an account (`account`), made at
//! spawn below its parent's.
//!
//! # Locking
//!
//! The table and each process's thread state are [`TokenCell`]s (tokens,
//! never a global lock); the address space has its own.

use alloc::string::String;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};

use lwkt::{ThreadRef, pri};
use wyvern_abi::syscall::{Error, Priority, SpawnOpts, WaitStatus, rights};

use super::account::{self, Account, Charge, Res, cost};
use super::vecmap::VecMap;

use super::elf::{self, IMAGE_BASE, LoadError};
use super::{Start, ramdisk, spawn_thread};
use crate::arch::fpu::FpuState;
use crate::arch::gdt::{IO_PORTS, MAX_IO_RANGES};
use crate::arch::syscall::initial_frame;
use crate::mm::PAGE_SIZE;
use crate::mm::aspace::{AddressSpace, Kind, MapError};
use crate::percpu;
use crate::println;
use crate::sched::X86;
use crate::sync::TokenCell;

/// Most processes at once.
pub const MAX_PROCS: usize = 256;
/// Most live threads of one process.
pub const MAX_THREADS: usize = 64;
/// Most threads of one process that ended and were not joined, plus live ones.
const MAX_THREAD_SLOTS: usize = 256;
/// Size of each thread's user stack (a guard gap below it stays unmapped).
/// Only the top [`STACK_COMMIT`] bytes are mapped at first; the rest is
/// mapped page by page as the stack grows into it.
pub const STACK_SIZE: u64 = 256 << 10;
/// The part of a new stack mapped at once (the argument block, the first
/// frames).
pub const STACK_COMMIT: u64 = 8 << 10;
/// Where thread stacks go: slot `i` just below `STACKS_TOP - i * slot`.
const STACKS_TOP: u64 = 0x0000_7f00_0000_0000;
const STACK_SLOT: u64 = STACK_SIZE + 16 * PAGE_SIZE;
/// The range `MAP` hands out.
pub const MAP_BASE: u64 = 0x0000_1000_0000_0000;
pub const MAP_END: u64 = 0x0000_7000_0000_0000;
/// Parent of a process whose parent ended: nobody waits for it.
const ORPHAN: u64 = u64::MAX;
/// Longest program name.
pub const MAX_NAME: usize = 64;
/// Longest argument string.
pub const MAX_ARG: usize = 4096;

/// One thread of a process.
struct Slot {
    /// The LWKT thread (set right after it is created).
    td: Option<ThreadRef<X86>>,
    /// Its own priority, which it returns to after serving a message
    /// (shared with its `UserThread`).
    base: Arc<AtomicU8>,
    /// Its exit code once it ended.
    exit: Option<i64>,
    /// Someone is joining it.
    joining: bool,
    /// What the thread is charged while it lives (a thread, its memory).
    charge: Option<(Charge, Charge)>,
}

struct ProcState {
    threads: VecMap<u64, Slot>,
    next_tid: u64,
    live: usize,
    /// Stack slots in use (bit `i`: slot `i`).
    stacks: u64,
    /// How the process ended (or is ending): the first exit or kill.
    status: Option<WaitStatus>,
    /// Its own charges: one process, its records. Given back when it ends
    /// ([`Process::finish`]), before its parent can see it ended: the
    /// record itself goes a moment later, with the last reference (an
    /// exiting thread's), and the kernel's reserve covers that moment.
    charges: Option<(Charge, Charge)>,
}

/// A process.
pub struct Process {
    pub pid: u64,
    pub name: String,
    /// The parent's pid; 0 for the kernel; [`ORPHAN`] once it ended.
    parent: AtomicU64,
    pub space: AddressSpace,
    state: TokenCell<ProcState>,
    /// Exiting or killed: threads stop at their next return to user mode.
    dying: AtomicBool,
    /// Every thread has ended, the address space is gone and the charges
    /// are given back.
    ended: AtomicBool,
    /// Its channels and connections.
    pub ipc: super::ipc::Tables,
    /// The I/O port ranges granted to it (`IO_GRANT`): `first << 32 |
    /// count` each, 0 for none; read lock-free by the switch.
    io: [AtomicU64; MAX_IO_RANGES],
    /// Grants so far (0: none); with the pid, the key a CPU's TSS bitmap is
    /// tagged with, so a new grant reaches CPUs at the next switch.
    io_grants: AtomicU64,
    /// Device memory it may map (`DEVICE_GRANT`).
    pub devices: super::device::Grants,
    /// Where it reads the kernel's log ring next (`KLOG_READ`): each
    /// reader has its own place, so every console gets every line.
    pub klog_pos: AtomicU64,
    /// May grant I/O ports and use the privileged calls: the process manager.
    privileged: AtomicBool,
    /// What it is charged to.
    pub account: Arc<Account>,
    /// [`rights`] bits.
    rights: AtomicU64,
    /// The highest LWKT priority its threads may have.
    ceiling: AtomicU8,
    /// `DEBUG_WRITE`'s allowance (see [`Process::take_output`]).
    output: crate::sync::SpinLock<OutputBucket>,
}

/// A token bucket of console bytes: [`OUTPUT_RATE`] a second, at most
/// [`OUTPUT_BURST`] at once. What does not fit is dropped and counted; the
/// count is printed before the process's next output that fits.
pub struct OutputBucket {
    tokens: u64,
    stamp: u64,
    dropped: u64,
}

/// Console bytes a second a process may write.
pub const OUTPUT_RATE: u64 = 64 << 10;
/// Console bytes a process may write at once.
pub const OUTPUT_BURST: u64 = 32 << 10;

static OUTPUT_CLASS: crate::sync::LockClass = crate::sync::LockClass::new("process output", 15);

struct Table {
    procs: VecMap<u64, Arc<Process>>,
    next_pid: u64,
}

static TABLE: TokenCell<Table> = TokenCell::new(Table {
    procs: VecMap::new(),
    next_pid: 1,
});

/// The LWKT priority of a user [`Priority`].
pub fn lwkt_priority(p: Priority) -> u8 {
    match p {
        Priority::Idle => pri::USER_IDLE,
        Priority::Normal => pri::USER,
        Priority::Realtime => pri::USER_REAL,
    }
}

/// The user [`Priority`] a ceiling allows at most.
pub fn user_priority(ceiling: u8) -> Priority {
    match ceiling {
        c if c >= pri::USER_REAL => Priority::Realtime,
        c if c >= pri::USER => Priority::Normal,
        _ => Priority::Idle,
    }
}

/// Where the next process goes: processes are spread over the CPUs in turn;
/// a process's later threads start on the CPU that created them. (LWKT does
/// not balance load: a thread stays where it is put, or moves itself with
/// `SET_CPU`.)
static NEXT_CPU: AtomicUsize = AtomicUsize::new(0);

/// The process manager's pid (0: none yet).
static PROCMAN: AtomicU64 = AtomicU64::new(0);

/// The process manager's pid, 0 if this boot has none.
pub fn procman() -> u64 {
    PROCMAN.load(Ordering::Acquire)
}

/// Starts the process manager `name` with `arg`: the privileged first
/// process of an interactive boot (`IO_GRANT` is its alone), with every
/// right and the highest ceiling.
///
/// Thread context; may block.
pub fn spawn_procman(name: &str, arg: &[u8]) -> Result<u64, Error> {
    let pid = spawn_as(name, arg, 0, true, None)?;
    PROCMAN.store(pid, Ordering::Release);
    Ok(pid)
}

fn next_cpu() -> usize {
    let n = crate::smp::online() as usize;
    NEXT_CPU.fetch_add(1, Ordering::Relaxed) % n.max(1)
}

/// Starts program `name` of the ramdisk with argument `arg`, as a child of
/// process `parent` (0: the kernel), with `opts` (`None`: defaults — the
/// parent's rights and ceiling; for the kernel's own children
/// `rights::OBSERVE` and the highest ceiling). Returns its pid.
///
/// Thread context; may block.
pub fn spawn(name: &str, arg: &[u8], parent: u64, opts: Option<&SpawnOpts>) -> Result<u64, Error> {
    spawn_as(name, arg, parent, false, opts)
}

fn spawn_as(
    name: &str,
    arg: &[u8],
    parent: u64,
    privileged: bool,
    opts: Option<&SpawnOpts>,
) -> Result<u64, Error> {
    if name.len() > MAX_NAME || arg.len() > MAX_ARG {
        return Err(Error::Invalid);
    }
    let elf_bytes = ramdisk::find(name).ok_or(Error::NotFound)?;
    // What the parent may hand on.
    let (up, parent_rights, parent_ceiling) = if parent == 0 {
        (account::root().clone(), rights::ALL, pri::USER_REAL)
    } else {
        let p = find(parent).ok_or(Error::NotFound)?;
        let ceiling = p.ceiling.load(Ordering::Relaxed);
        (p.account.clone(), p.rights(), ceiling)
    };
    let (limits, rights, ceiling) = match opts {
        Some(o) => {
            let want = match o.ceiling {
                u64::MAX => parent_ceiling,
                c => lwkt_priority(Priority::from_raw(c).ok_or(Error::Invalid)?),
            };
            (o.limits, o.rights & parent_rights, want.min(parent_ceiling))
        }
        None if privileged => (Default::default(), rights::ALL, pri::USER_REAL),
        None if parent == 0 => (Default::default(), rights::OBSERVE, pri::USER_REAL),
        None => (Default::default(), parent_rights, parent_ceiling),
    };
    let up = match opts.map_or(0, |o| o.charge_to) {
        0 => up,
        pid if privileged_parent(parent) => find(pid).ok_or(Error::NotFound)?.account.clone(),
        _ => return Err(Error::Denied),
    };
    let account = Account::child(&up, &limits)?;
    let charges = (
        account.charge(Res::Processes, 1)?,
        account.charge(Res::Memory, cost::PROCESS)?,
    );
    let space = AddressSpace::new(&account).ok_or(Error::NoMemory)?;
    let image = elf::load(&space, elf_bytes, IMAGE_BASE).map_err(|e| match e {
        LoadError::NoMemory => Error::NoMemory,
        LoadError::Format(why) => {
            println!("spawn `{name}`: not a program Wyvern can run: {why}");
            Error::Invalid
        }
    })?;
    let mut pname = String::new();
    pname
        .try_reserve_exact(name.len())
        .map_err(|_| Error::NoMemory)?;
    pname.push_str(name);
    let proc = TABLE.with(|t| {
        if t.procs.len() >= MAX_PROCS {
            return Err(Error::Limit);
        }
        let pid = t.next_pid;
        let p = Arc::try_new(Process {
            pid,
            name: pname,
            parent: AtomicU64::new(parent),
            space,
            state: TokenCell::new(ProcState {
                threads: VecMap::new(),
                next_tid: 1,
                live: 0,
                stacks: 0,
                status: None,
                charges: Some(charges),
            }),
            dying: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            ipc: super::ipc::Tables::new(),
            io: [const { AtomicU64::new(0) }; MAX_IO_RANGES],
            io_grants: AtomicU64::new(0),
            devices: super::device::Grants::new(),
            klog_pos: AtomicU64::new(0),
            privileged: AtomicBool::new(privileged),
            account,
            rights: AtomicU64::new(rights),
            ceiling: AtomicU8::new(ceiling),
            output: crate::sync::SpinLock::ranked(
                &OUTPUT_CLASS,
                OutputBucket {
                    tokens: OUTPUT_BURST,
                    stamp: crate::arch::cpu::rdtsc(),
                    dropped: 0,
                },
            ),
        })
        .map_err(|_| Error::NoMemory)?;
        t.procs
            .try_insert(pid, p.clone())
            .map_err(|_| Error::NoMemory)?;
        t.next_pid += 1;
        Ok(p)
    })?;
    if let Err(e) = proc.start_thread(image.entry, 0, Some(arg)) {
        TABLE.with(|t| t.procs.remove(&proc.pid));
        return Err(e);
    }
    Ok(proc.pid)
}

/// Kills every process and waits until each has ended and left the table;
/// returns how many were alive. The end of a test: nothing a program did
/// outlives it. Thread context; blocks.
pub fn kill_all() -> usize {
    let mut alive = 0;
    for _ in 0..1000 {
        let live: alloc::vec::Vec<Arc<Process>> = TABLE.with(|t| {
            t.procs
                .values()
                .filter(|p| !p.ended.load(Ordering::Acquire))
                .cloned()
                .collect()
        });
        alive = alive.max(live.len());
        for p in &live {
            p.kill(WaitStatus {
                kind: WaitStatus::TERMINATED,
                ..WaitStatus::default()
            });
        }
        // Ended ones nobody will wait for now (dropped after the token is
        // let go: see `reap`).
        let ended: alloc::vec::Vec<u64> = live
            .iter()
            .filter(|p| p.ended.load(Ordering::Acquire))
            .map(|p| p.pid)
            .collect();
        drop(live);
        for pid in ended {
            let gone = TABLE.with(|t| {
                let p = t.procs.remove(&pid);
                t.procs.release_if_empty();
                p
            });
            drop(gone);
        }
        if TABLE.with(|t| t.procs.is_empty()) {
            return alive;
        }
        crate::smp::wait_ticks(1);
    }
    alive
}

/// Whether process `pid` is the process manager.
fn privileged_parent(pid: u64) -> bool {
    pid != 0 && find(pid).is_some_and(|p| p.privileged())
}

/// The process `pid`.
pub fn find(pid: u64) -> Option<Arc<Process>> {
    TABLE.with(|t| t.procs.get(&pid).cloned())
}

/// The pid the next process will get.
pub fn next_pid() -> u64 {
    TABLE.with(|t| t.next_pid)
}

/// Processes in the table (live and ended-but-not-waited).
pub fn count() -> usize {
    TABLE.with(|t| t.procs.len())
}

/// Waits for child `pid` of `parent` to end — any child, when `pid` is
/// 0 — and returns its pid and status without removing it ([`reap`] does).
/// An interrupted wait fails with [`Error::Killed`] when `interruptible`;
/// a parent without such a child gets [`Error::NotFound`].
///
/// Thread context; blocks.
pub fn wait(parent: u64, pid: u64, interruptible: bool) -> Result<(u64, WaitStatus), Error> {
    let flags = lwkt::INTERLOCKED
        | if interruptible {
            lwkt::INTERRUPTIBLE
        } else {
            0
        };
    if pid == 0 {
        let ident = any_child_ident(parent);
        loop {
            lwkt::tsleep_interlock::<X86>(ident);
            let (ended, any) = TABLE.with(|t| {
                let mut any = false;
                let mut ended = None;
                for c in t.procs.values() {
                    if c.parent.load(Ordering::Acquire) == parent {
                        any = true;
                        if ended.is_none() && c.ended.load(Ordering::Acquire) {
                            ended = Some(c.clone());
                        }
                    }
                }
                (ended, any)
            });
            if let Some(c) = ended {
                lwkt::tsleep_cancel::<X86>();
                let st = c
                    .state
                    .with(|s| s.status.expect("an ended process has a status"));
                return Ok((c.pid, st));
            }
            if !any {
                lwkt::tsleep_cancel::<X86>();
                return Err(Error::NotFound);
            }
            if lwkt::tsleep::<X86>(ident, flags, "wait", 0) == lwkt::Wake::Interrupted {
                return Err(Error::Killed);
            }
        }
    }
    let p = find(pid)
        .filter(|p| p.parent.load(Ordering::Acquire) == parent)
        .ok_or(Error::NotFound)?;
    let ident = Arc::as_ptr(&p) as usize;
    loop {
        lwkt::tsleep_interlock::<X86>(ident);
        if p.ended.load(Ordering::Acquire) {
            lwkt::tsleep_cancel::<X86>();
            break;
        }
        if lwkt::tsleep::<X86>(ident, flags, "wait", 0) == lwkt::Wake::Interrupted {
            return Err(Error::Killed);
        }
    }
    Ok((
        pid,
        p.state
            .with(|s| s.status.expect("an ended process has a status")),
    ))
}

/// What a wait for any child of `parent` sleeps on: an address no object
/// has (the top bit set), one per parent.
fn any_child_ident(parent: u64) -> usize {
    (1 << 63) | (parent as usize).wrapping_mul(8)
}

/// Removes ended child `pid` of `parent` from the table.
pub fn reap(parent: u64, pid: u64) {
    // Dropped after the table's token is let go: the last reference to a
    // process frees its address space, which may take other tokens.
    let gone = TABLE.with(|t| {
        if t.procs.get(&pid).is_some_and(|p| {
            p.parent.load(Ordering::Acquire) == parent && p.ended.load(Ordering::Acquire)
        }) {
            let p = t.procs.remove(&pid);
            t.procs.release_if_empty();
            p
        } else {
            None
        }
    });
    drop(gone);
}

impl Process {
    /// Whether the process is exiting or being killed.
    pub fn dying(&self) -> bool {
        self.dying.load(Ordering::Acquire)
    }

    fn stack_range(slot: u32) -> (u64, u64) {
        let top = STACKS_TOP - u64::from(slot) * STACK_SLOT;
        (top - STACK_SIZE, top)
    }

    /// Starts a thread at `entry` with `rdi = arg`, or — when `init` is
    /// given — with `init` copied to the top of its stack and `rdi`/`rsi`
    /// pointing at it and giving its length. Returns the thread id.
    ///
    /// Thread context; may block.
    pub fn start_thread(
        self: &Arc<Self>,
        entry: u64,
        arg: u64,
        init: Option<&[u8]>,
    ) -> Result<u64, Error> {
        if !(PAGE_SIZE..wyvern_abi::syscall::USER_TOP).contains(&entry) {
            return Err(Error::Invalid);
        }
        if self.dying() {
            return Err(Error::Killed);
        }
        let charge = (
            self.account.charge(Res::Threads, 1)?,
            self.account.charge(Res::Memory, cost::THREAD)?,
        );
        let base = Arc::try_new(AtomicU8::new(lwkt::pri::USER)).map_err(|_| Error::NoMemory)?;
        let (tid, slot, base_pri) = self.state.with(|st| {
            if st.live >= MAX_THREADS || st.threads.len() >= MAX_THREAD_SLOTS {
                return Err(Error::Limit);
            }
            let slot = (!st.stacks).trailing_zeros();
            let tid = st.next_tid;
            st.threads
                .try_insert(
                    tid,
                    Slot {
                        td: None,
                        base: base.clone(),
                        exit: None,
                        joining: false,
                        charge: Some(charge),
                    },
                )
                .map_err(|_| Error::NoMemory)?;
            st.stacks |= 1 << slot;
            st.next_tid += 1;
            st.live += 1;
            Ok((tid, slot, base))
        })?;
        let undo = |this: &Self| {
            this.state.with(|st| {
                st.stacks &= !(1 << slot);
                st.live -= 1;
                st.threads.remove(&tid);
            });
        };
        let (base, top) = Self::stack_range(slot);
        if let Err(e) = self.space.reserve_stack(base, STACK_SIZE, STACK_COMMIT) {
            undo(self);
            return Err(match e {
                MapError::NoMemory => Error::NoMemory,
                MapError::Busy | MapError::Limit => Error::Limit,
            });
        }
        let (rsp, rdi, rsi) = match init {
            Some(bytes) => {
                let at = (top - bytes.len() as u64) & !15;
                self.space.write_bytes(at, bytes);
                // As after a call: RSP + 8 aligned to 16.
                (at - 8, at, bytes.len() as u64)
            }
            None => (top - 8, arg, 0),
        };
        let Some(fpu) = FpuState::new() else {
            self.space.unmap(base, top, &[Kind::Stack]);
            undo(self);
            return Err(Error::NoMemory);
        };
        let start = Start {
            process: self.clone(),
            tid,
            frame: initial_frame(entry, rsp, rdi, rsi),
            fpu,
            stack: (base, top),
            base_pri,
            user: None,
        };
        let cpu = if init.is_some() {
            next_cpu()
        } else {
            percpu::cpu_index() as usize
        };
        match spawn_thread(&self.name, cpu, start) {
            Some(td) => {
                self.state.with(|st| {
                    if let Some(s) = st.threads.get_mut(&tid) {
                        s.td = Some(td);
                    }
                });
                Ok(tid)
            }
            None => {
                self.space.unmap(base, top, &[Kind::Stack]);
                undo(self);
                Err(Error::NoMemory)
            }
        }
    }

    /// Thread `tid` ended with `code` (`None`: the process was killed or
    /// exited); its stack goes, and if it was the last thread, the process
    /// ends. Called by the thread itself on its way out, no longer a user
    /// thread (kernel PML4 loaded).
    pub(super) fn thread_exited(self: &Arc<Self>, tid: u64, code: Option<i64>, stack: (u64, u64)) {
        self.space.unmap(stack.0, stack.1, &[Kind::Stack]);
        let slot = ((STACKS_TOP - stack.1) / STACK_SLOT) as u32;
        let last = self.state.with(|st| {
            if let Some(s) = st.threads.get_mut(&tid) {
                s.exit = Some(code.unwrap_or(-1));
                // Its stacks are gone (the kernel stack with the thread's
                // exit): the account gets the thread back.
                s.charge = None;
            }
            st.stacks &= !(1 << slot);
            st.live -= 1;
            st.live == 0
        });
        lwkt::wakeup::<X86>(self.join_ident());
        if last {
            self.finish(code.unwrap_or(0));
        }
    }

    /// The last thread ended: record the status, free the memory, tell the
    /// parent, drop what nobody will wait for.
    fn finish(self: &Arc<Self>, code: i64) {
        self.state.with(|st| {
            st.status.get_or_insert(WaitStatus {
                kind: WaitStatus::EXITED,
                code,
                ..WaitStatus::default()
            });
            // Joined or not, no thread will be asked about again.
            st.threads.clear();
        });
        super::irq::process_ended(self);
        super::device::process_ended(self);
        self.ipc.teardown();
        self.space.teardown();
        // Its own charges, before anyone can see it ended: a parent whose
        // `WAIT` returned has the account back in full (and may spawn again
        // within its limits at once).
        drop(self.state.with(|st| st.charges.take()));
        self.ended.store(true, Ordering::Release);
        // Children go to the process manager (which waits for any child),
        // or without one to nobody: then ended ones go now, the others when
        // they end.
        let pm = procman();
        let heir = if pm != 0 && pm != self.pid && find(pm).is_some_and(|p| !p.dying()) {
            pm
        } else {
            ORPHAN
        };
        let mut adopted_ended = false;
        let mut drop_self = None;
        let mut orphans_ended = false;
        TABLE.with(|t| {
            for c in t.procs.values() {
                if c.parent.load(Ordering::Acquire) != self.pid {
                    continue;
                }
                c.parent.store(heir, Ordering::Release);
                let ended = c.ended.load(Ordering::Acquire);
                adopted_ended |= ended;
                orphans_ended |= heir == ORPHAN && ended;
            }
            if self.parent.load(Ordering::Acquire) == ORPHAN {
                drop_self = t.procs.remove(&self.pid);
            }
        });
        // Dropped after the token is let go (see `reap`): this process's
        // own entry, and ended children nobody will wait for.
        drop(drop_self);
        if orphans_ended {
            loop {
                let gone = TABLE.with(|t| {
                    let pid = t
                        .procs
                        .values()
                        .find(|c| {
                            c.parent.load(Ordering::Acquire) == ORPHAN
                                && c.ended.load(Ordering::Acquire)
                        })
                        .map(|c| c.pid)?;
                    t.procs.remove(&pid)
                });
                match gone {
                    Some(p) => drop(p),
                    None => break,
                }
            }
        }
        if adopted_ended {
            lwkt::wakeup::<X86>(any_child_ident(heir));
        }
        lwkt::wakeup::<X86>(Arc::as_ptr(self) as usize);
        lwkt::wakeup::<X86>(any_child_ident(self.parent.load(Ordering::Acquire)));
    }

    /// What joiners sleep on: the thread table's address (away from the
    /// process's own address, which its parent's `WAIT` sleeps on, so the
    /// two never share a sleep-queue bucket).
    fn join_ident(&self) -> usize {
        core::ptr::from_ref(&self.state) as usize
    }

    /// Ends the process: records `status` unless it already ended one way,
    /// and makes every thread stop (module docs). Returns at once.
    ///
    /// Thread context.
    pub fn kill(&self, status: WaitStatus) {
        self.dying.store(true, Ordering::Release);
        // Interrupted under the token: no list to allocate, and a thread
        // started meanwhile sees `dying` first.
        self.state.with(|st| {
            st.status.get_or_insert(status);
            for td in st.threads.values().filter_map(|s| s.td.as_ref()) {
                lwkt::interrupt::<X86>(td);
            }
        });
    }

    /// Waits for thread `tid` (not `me`) to end, and forgets it; returns its
    /// exit code.
    ///
    /// Thread context; blocks (interruptibly).
    pub fn join(&self, me: u64, tid: u64) -> Result<i64, Error> {
        if tid == me {
            return Err(Error::Busy);
        }
        let ident = self.join_ident();
        let mut claimed = false;
        loop {
            lwkt::tsleep_interlock::<X86>(ident);
            let r = self.state.with(|st| match st.threads.get_mut(&tid) {
                None => Some(Err(Error::NotFound)),
                Some(s) if s.exit.is_some() => {
                    let code = s.exit.unwrap_or(-1);
                    st.threads.remove(&tid);
                    Some(Ok(code))
                }
                Some(s) if s.joining && !claimed => Some(Err(Error::Busy)),
                Some(s) => {
                    s.joining = true;
                    None
                }
            });
            if let Some(r) = r {
                lwkt::tsleep_cancel::<X86>();
                return r;
            }
            claimed = true;
            let flags = lwkt::INTERLOCKED | lwkt::INTERRUPTIBLE;
            if lwkt::tsleep::<X86>(ident, flags, "join", 0) == lwkt::Wake::Interrupted {
                self.state.with(|st| {
                    if let Some(s) = st.threads.get_mut(&tid) {
                        s.joining = false;
                    }
                });
                return Err(Error::Killed);
            }
        }
    }

    /// Sets thread `tid`'s own priority (see [`super::UserThread::base_priority`])
    /// and its current one.
    ///
    /// Thread context.
    pub fn set_priority(&self, tid: u64, p: u8) -> Result<(), Error> {
        if p > self.ceiling.load(Ordering::Relaxed) {
            return Err(Error::Denied);
        }
        let (td, base) = self
            .state
            .with(|st| {
                let s = st.threads.get(&tid).filter(|s| s.exit.is_none())?;
                Some((s.td.clone()?, s.base.clone()))
            })
            .ok_or(Error::NotFound)?;
        base.store(p, Ordering::Relaxed);
        lwkt::setpri::<X86>(td.thread(), p);
        Ok(())
    }

    /// Opens ports `[first, first + count)` to the process (they must lie
    /// below [`IO_PORTS`]; at most [`MAX_IO_RANGES`] grants, `Limit`
    /// beyond). CPUs running it take the change at their next switch to it.
    pub fn grant_io(&self, first: u64, count: u64) -> Result<(), Error> {
        let end = first.checked_add(count).ok_or(Error::Invalid)?;
        if count == 0 || end > IO_PORTS as u64 {
            return Err(Error::Invalid);
        }
        let v = first << 32 | count;
        let placed = self.io.iter().any(|slot| {
            slot.compare_exchange(0, v, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        });
        if !placed {
            return Err(Error::Limit);
        }
        self.io_grants.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// The key of its current I/O grants (0: it has none): see `io_grants`.
    pub fn io_key(&self) -> u64 {
        match self.io_grants.load(Ordering::Acquire) {
            0 => 0,
            g => self.pid << 24 | (g & 0xff_ffff),
        }
    }

    /// Its granted port ranges (first, count) into `out`; returns how
    /// many. For the TSS bitmap (the switch: lock-free).
    pub fn io_ports(&self, out: &mut [(u16, u32); MAX_IO_RANGES]) -> usize {
        let mut n = 0;
        for slot in &self.io {
            let v = slot.load(Ordering::Acquire);
            if v != 0 {
                out[n] = ((v >> 32) as u16, v as u32);
                n += 1;
            }
        }
        n
    }

    /// Whether it is the process manager.
    pub fn privileged(&self) -> bool {
        self.privileged.load(Ordering::Acquire)
    }

    /// Its [`rights`] bits (the process manager has them all).
    pub fn rights(&self) -> u64 {
        if self.privileged() {
            rights::ALL
        } else {
            self.rights.load(Ordering::Relaxed)
        }
    }

    /// Whether it has every right in `r`.
    pub fn may(&self, r: u64) -> bool {
        self.rights() & r == r
    }

    /// How many of `want` console bytes the process may write now, and how
    /// many it had dropped since it last wrote (to report first); the rest
    /// of `want` is dropped and counted.
    pub fn take_output(&self, want: u64) -> (u64, u64) {
        let mut b = self.output.lock();
        let now = crate::arch::cpu::rdtsc();
        let hz = crate::arch::tsc::hz().max(1);
        let earned = (u128::from(now.saturating_sub(b.stamp)) * u128::from(OUTPUT_RATE)
            / u128::from(hz)) as u64;
        if earned > 0 {
            b.tokens = (b.tokens + earned).min(OUTPUT_BURST);
            b.stamp = now;
        }
        let ok = want.min(b.tokens);
        b.tokens -= ok;
        let dropped = if ok > 0 {
            core::mem::take(&mut b.dropped)
        } else {
            0
        };
        b.dropped += want - ok;
        (ok, dropped)
    }

    /// Its priority ceiling (an LWKT priority).
    pub fn ceiling(&self) -> u8 {
        self.ceiling.load(Ordering::Relaxed)
    }

    /// Sets its rights and ceiling (the process manager's `SET_RIGHTS`).
    pub fn set_rights(&self, r: u64, ceiling: u8) {
        self.rights.store(r & rights::ALL, Ordering::Relaxed);
        self.ceiling.store(ceiling, Ordering::Relaxed);
    }

    /// The parent's pid (0: the kernel; [`ORPHAN`] once the parent ended).
    pub fn parent(&self) -> u64 {
        self.parent.load(Ordering::Acquire)
    }
}

/// The CPU count the `INFO` call reports.
pub fn ncpus() -> u64 {
    percpu::online().count() as u64
}
