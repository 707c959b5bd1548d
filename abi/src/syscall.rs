//! The system call interface: numbers, arguments, errors and the structures
//! calls fill in. Numbers are stable: a new call takes a new number, a retired
//! one is never reused.
//!
//! # Convention
//!
//! `syscall` with the number in `rax` and up to six arguments in `rdi`, `rsi`,
//! `rdx`, `r10`, `r8`, `r9`. The result comes back in `rax`: a value `>= 0`,
//! or `-code` of an [`Error`]. `rcx` and `r11` are clobbered (the instruction
//! uses them); every other register is preserved.
//!
//! Pointers are user addresses below [`USER_TOP`]. A pointer the kernel cannot
//! read or write — unmapped, a kernel address, non-canonical, or a range that
//! wraps — fails the call with [`Error::Fault`] and nothing else happens.
//!
//! | nr | name | arguments | result |
//! |---:|------|-----------|--------|
//! | 0 | [`nr::NOP`] | — | 0 |
//! | 1 | [`nr::DEBUG_WRITE`] | bytes, len | len written to the console |
//! | 2 | [`nr::EXIT`] | code | does not return: the whole process exits |
//! | 3 | [`nr::THREAD_CREATE`] | entry, arg | thread id; `entry(arg)` runs on a new stack |
//! | 4 | [`nr::THREAD_EXIT`] | code | does not return |
//! | 5 | [`nr::THREAD_JOIN`] | thread id | the thread's exit code |
//! | 6 | [`nr::SPAWN`] | name, name len, arg, arg len, `*const SpawnOpts` (0: defaults) | process id of the program `name` of the ramdisk |
//! | 7 | [`nr::WAIT`] | process id (0: any child), `*mut WaitStatus` | process id, once that child ended |
//! | 8 | [`nr::YIELD`] | — | 0 |
//! | 9 | [`nr::SLEEP`] | nanoseconds | 0 |
//! | 10 | [`nr::CLOCK`] | — | nanoseconds since boot |
//! | 11 | [`nr::MAP`] | len, [`prot`] bits | address of `len` bytes of zeroed memory |
//! | 12 | [`nr::UNMAP`] | address, len | 0 |
//! | 13 | [`nr::SET_PRIORITY`] | thread id (0: self), [`Priority`] | 0; [`Error::Denied`] above the process's ceiling |
//! | 14 | [`nr::SET_CPU`] | CPU index, or [`ANY_CPU`] | 0, running on that CPU from now on, pinned there (the balancer leaves it); [`ANY_CPU`]: unpinned, where it is |
//! | 15 | [`nr::INFO`] | `*mut Info` | 0 |
//! | 16 | [`nr::STATS`] | `*mut CpuStats`, count | number of CPUs written; needs [`rights::OBSERVE`] |
//! | 17 | [`nr::CHANNEL_CREATE`] | [`chan`] flags | channel id |
//! | 18 | [`nr::CHANNEL_DESTROY`] | channel id | 0; every party of the channel is released with [`Error::Gone`] |
//! | 19 | [`nr::CONNECT_ATTACH`] | process id (0: self), channel id | connection id; [`Error::Denied`] unless allowed (see Authority) |
//! | 20 | [`nr::CONNECT_DETACH`] | connection id | 0 |
//! | 21 | [`nr::MSG_SEND`] | connection id, `*const Iov` send, count, `*const Iov` reply, count | the server's reply status |
//! | 22 | [`nr::MSG_RECEIVE`] | channel id, `*const Iov`, count, `*mut MsgInfo` | receive id, or 0 for a pulse ([`Error::Full`] when a sender waits while 1,023 messages of the channel are received and unreplied — a receive already waiting fails so too; the sender stays queued) |
//! | 23 | [`nr::MSG_REPLY`] | receive id, status, `*const Iov`, count | 0 |
//! | 24 | [`nr::MSG_ERROR`] | receive id, [`Error`] code | 0; the sender's call fails with that error |
//! | 25 | [`nr::MSG_READ`] | receive id, offset, `*const Iov`, count | bytes read from the sender's message |
//! | 26 | [`nr::MSG_WRITE`] | receive id, offset, `*const Iov`, count | bytes written into the sender's reply buffers |
//! | 27 | [`nr::MSG_SEND_PULSE`] | connection id, code, value | 0 ([`Error::Full`] when the channel's pulse queue is full) |
//! | 28 | [`nr::KILL`] | process id | 0; the process ends, its `WAIT` says [`WaitStatus::TERMINATED`]; a child, or any process with [`rights::KILL`] |
//! | 29 | [`nr::IO_GRANT`] | process id, first port, count | 0; process manager only ([`Error::Denied`]) |
//! | 30 | [`nr::INTERRUPT_ATTACH`] | ISA IRQ, connection id, pulse code | the IRQ; needs an I/O grant |
//! | 31 | [`nr::INTERRUPT_UNMASK`] | ISA IRQ | 0 |
//! | 32 | [`nr::INTERRUPT_DETACH`] | ISA IRQ | 0; the kernel's handler has it again |
//! | 33 | [`nr::KLOG_READ`] | bytes, len, flags | bytes of kernel output taken from the caller's place in the log ring (blocks while none, unless flags bit 0); needs an I/O or device grant |
//! | 34 | [`nr::THREADS`] | `*mut ThreadInfo`, count | threads written (every CPU's, CPU by CPU); needs [`rights::OBSERVE`] |
//! | 35 | [`nr::TRACE`] | — | 0; the kernel prints every CPU's trace ring to its log; needs [`rights::OBSERVE`] |
//! | 36 | [`nr::CONNECT_GIVE`] | connection id, receive id | the id of a copy of the connection in the sender of that message |
//! | 37 | [`nr::ACCOUNT`] | `*mut AccountInfo` | 0; the caller's account: limits and what is charged |
//! | 38 | [`nr::SET_RIGHTS`] | process id, [`rights`] bits, [`Priority`] ceiling | 0; process manager only: what a process may do |
//! | 39 | [`nr::DEVICE_GRANT`] | process id, physical address, length, [`devmap`] flags | 0; process manager only: device memory (never memory anybody owns) the process may map |
//! | 40 | [`nr::MAP_DEVICE`] | physical address, length, [`devmap`] flags | the address of the granted device memory, mapped uncached or write-combining |
//! | 41 | [`nr::DMA_ALLOC`] | length, where to write the physical address | the address of zeroed, physically contiguous memory; needs [`rights::DMA`] |
//! | 42 | [`nr::MSI_ATTACH`] | connection id, pulse code, where to write a [`MsiTarget`] | a handle (from [`MSI_BASE`]) for `INTERRUPT_UNMASK`/`DETACH`; needs a device grant |
//! | 43 | [`nr::HWINFO`] | [`hwinfo`] kind, buffer, length | bytes written: the framebuffer, ACPI's PCI and power facts, memory figures |
//! | 44 | [`nr::MSG_REPLY_RECEIVE`] | receive id (0: none), status, `*const Iov` (the reply's pieces, then the receive buffer's), counts (reply's \| receive's << 32), channel id, `*mut MsgInfo` | as `MSG_RECEIVE`, after replying as `MSG_REPLY` |
//! | 45 | [`nr::MSG_CALL`] | connection id; the message in the [message registers](#messages-in-registers) | the server's reply status; the reply in the message registers |
//! | 46 | [`nr::MSG_REPLY_WAIT`] | channel id; the reply in the message registers, `r12` receive id (0: none), `r13` status | as `MSG_REPLY_RECEIVE`; the message and what `MsgInfo` says in registers |
//!
//! # Authority
//!
//! What a process may do is decided by who it is, never by what it claims:
//!
//! - **Connections.** A process may attach to its own channels, to its
//!   children's (it may kill them anyway), to any channel created
//!   [`chan::PUBLIC`], and — the process manager — to any. Otherwise a
//!   connection is given: a server hands a copy of one it holds to the
//!   sender of a message it is serving ([`nr::CONNECT_GIVE`]), which is how
//!   the process manager's name service gives clients their connections to
//!   servers. Guessing a process and channel id gets [`Error::Denied`].
//!   Holding a connection is what lets a process send messages and pulses.
//! - **Who sent it.** Every message and pulse carries the sender's process
//!   and thread id, stamped by the kernel ([`MsgInfo::pid`]).
//! - **Killing.** A process may kill its children; one with
//!   [`rights::KILL`] any process but the process manager. A process whose
//!   parent ends is re-parented to the process manager, so someone can
//!   always end it.
//! - **Priority.** Each process has a ceiling, set at spawn (never above the
//!   parent's) or by the process manager ([`nr::SET_RIGHTS`]); by default
//!   [`Priority::Normal`], so only a process given it may run threads at
//!   [`Priority::Realtime`].
//! - **Observing.** The counters, the thread list and the trace rings need
//!   [`rights::OBSERVE`].
//! - **Resources.** Every process has an account ([`AccountInfo`]) that
//!   bounds the memory, processes, threads, channels and connections it and
//!   its descendants hold; a request past a limit fails with
//!   [`Error::NoMemory`] or [`Error::Limit`] and changes nothing.
//!
//! # Drivers
//!
//! The process manager (the first process of an interactive boot; its pid
//! is [`Info::procman`]) alone may open I/O ports to a process
//! ([`nr::IO_GRANT`]: a bit in every CPU's TSS I/O bitmap while that
//! process runs; ports below `0x400`). A process with a grant may turn an
//! ISA IRQ into pulses ([`nr::INTERRUPT_ATTACH`]): the IRQ's interrupt
//! thread sends the pulse and leaves the line masked until the driver has
//! served the device and calls [`nr::INTERRUPT_UNMASK`]. Attaching COM1's
//! IRQ 4 hands the serial port to the driver: kernel output then goes to a
//! log ring the driver drains with [`nr::KLOG_READ`] (panics still write
//! COM1 directly).
//!
//! # Messages
//!
//! Synchronous message passing in the manner of QNX Neutrino. A server
//! creates a channel and receives on it; a client attaches a connection to
//! it (by the server's process id and the channel id) and sends: the
//! message's bytes go straight from the client's buffers into the server's
//! receive buffer (one copy, by the kernel), the client blocks until the
//! server replies, and the reply's bytes go straight into the client's reply
//! buffers. Buffers are scatter/gather lists of [`Iov`] (at most
//! [`MAX_IOV`] each). A receive id names one conversation until its reply
//! (or error); [`nr::MSG_READ`] and [`nr::MSG_WRITE`] reach the rest of a
//! large message at an offset meanwhile. The server runs at its client's
//! priority while it serves it.
//!
//! A pulse is a code and a value sent without blocking; at most
//! [`PULSE_QUEUE`] wait per channel, and a pulse that does not fit fails
//! with [`Error::Full`] and is not queued (the sender decides what to lose).
//! A receive takes a pulse before any queued message of lower priority.
//!
//! When a channel's server ends or destroys it, every blocked sender's call
//! fails with [`Error::Gone`]; when a client ends while served, the
//! server's reply fails with [`Error::Stale`].
//!
//! # Messages in registers
//!
//! A short message needs no buffer: [`nr::MSG_CALL`] sends the
//! [`MSG_REGS`] *message registers* — `rsi`, `rdx`, `r10`, `r8`, `r9` in
//! that order, [`MSG_REG_BYTES`] bytes, little-endian — and gets the
//! reply back in them; [`nr::MSG_REPLY_WAIT`] is a server's
//! `MSG_REPLY_RECEIVE` with the reply and the next message in the same
//! registers. They are the buffer calls with a buffer of
//! [`MSG_REG_BYTES`] held by the kernel, nothing else: a register message
//! is received by `MSG_RECEIVE` as 40 bytes, a buffer message by
//! `MSG_REPLY_WAIT` as its first 40 bytes (`MSG_READ` reaches the rest),
//! `MSG_WRITE` writes into a register reply, and a reply longer than the
//! registers is cut as a short reply buffer would cut it. Bytes nobody
//! wrote read as zero.
//!
//! `MSG_CALL`: `rdi` the connection id, the message registers the
//! message. Returns the reply status in `rax` and the reply in the
//! message registers; on error they are as the caller left them.
//!
//! `MSG_REPLY_WAIT`: `rdi` the channel to receive on, `r12` the receive
//! id to reply to (0: none), `r13` the status, the message registers the
//! reply. Returns in `rax` the receive id (0: a pulse), in the message
//! registers the message (a pulse: its code, then its value), in `rdi`
//! the bytes the sender sent, `r15` the bytes it has room for in its
//! reply, `r12` and `r13` the sending process and thread (a pulse: the
//! process, and 0), `r14` the sender's priority. On error (as
//! `MSG_REPLY_RECEIVE`: a failed reply receives nothing) only `rax`
//! changes. `rcx` and `r11` are lost in every system call.

/// System call numbers.
pub mod nr {
    /// Does nothing: the cost of entering and leaving the kernel.
    pub const NOP: u64 = 0;
    /// Writes bytes to the console.
    pub const DEBUG_WRITE: u64 = 1;
    /// Ends the process, every thread of it, with an exit code.
    pub const EXIT: u64 = 2;
    /// Starts a thread of the calling process.
    pub const THREAD_CREATE: u64 = 3;
    /// Ends the calling thread (the process, if it was the last).
    pub const THREAD_EXIT: u64 = 4;
    /// Waits for a thread of the process to end; returns its exit code.
    pub const THREAD_JOIN: u64 = 5;
    /// Starts a program of the ramdisk as a child process.
    pub const SPAWN: u64 = 6;
    /// Waits for a child process to end.
    pub const WAIT: u64 = 7;
    /// Lets other threads of the same priority on this CPU run.
    pub const YIELD: u64 = 8;
    /// Blocks for at least the given nanoseconds (rounded up to ticks).
    pub const SLEEP: u64 = 9;
    /// Monotonic nanoseconds since boot.
    pub const CLOCK: u64 = 10;
    /// Maps anonymous zeroed memory.
    pub const MAP: u64 = 11;
    /// Unmaps memory that `MAP` mapped.
    pub const UNMAP: u64 = 12;
    /// Sets a thread's priority.
    pub const SET_PRIORITY: u64 = 13;
    /// Moves the calling thread to a CPU and pins it there (the user
    /// scheduler's balancer no longer moves it); [`super::ANY_CPU`] unpins.
    pub const SET_CPU: u64 = 14;
    /// Who and where the caller is.
    pub const INFO: u64 = 15;
    /// The kernel's per-CPU counters.
    pub const STATS: u64 = 16;
    /// Creates a channel to receive messages on.
    pub const CHANNEL_CREATE: u64 = 17;
    /// Destroys a channel of the caller's.
    pub const CHANNEL_DESTROY: u64 = 18;
    /// Attaches a connection to a process's channel.
    pub const CONNECT_ATTACH: u64 = 19;
    /// Detaches a connection.
    pub const CONNECT_DETACH: u64 = 20;
    /// Sends a message and blocks for the reply.
    pub const MSG_SEND: u64 = 21;
    /// Blocks for a message or a pulse on a channel.
    pub const MSG_RECEIVE: u64 = 22;
    /// Replies to a message, releasing its sender.
    pub const MSG_REPLY: u64 = 23;
    /// Fails a message with an error, releasing its sender.
    pub const MSG_ERROR: u64 = 24;
    /// Reads more of a received message.
    pub const MSG_READ: u64 = 25;
    /// Writes into a received message's reply buffers.
    pub const MSG_WRITE: u64 = 26;
    /// Sends a pulse, without blocking.
    pub const MSG_SEND_PULSE: u64 = 27;
    /// Ends a child process.
    pub const KILL: u64 = 28;
    /// Opens I/O ports to a process (process manager only).
    pub const IO_GRANT: u64 = 29;
    /// Turns an ISA IRQ into pulses.
    pub const INTERRUPT_ATTACH: u64 = 30;
    /// Re-arms an attached IRQ.
    pub const INTERRUPT_UNMASK: u64 = 31;
    /// Gives an attached IRQ back to the kernel.
    pub const INTERRUPT_DETACH: u64 = 32;
    /// Takes kernel output from the log ring.
    pub const KLOG_READ: u64 = 33;
    /// Lists every thread.
    pub const THREADS: u64 = 34;
    /// Prints the trace rings.
    pub const TRACE: u64 = 35;
    /// Gives a copy of a connection to the sender of a message being served.
    pub const CONNECT_GIVE: u64 = 36;
    /// The caller's resource account.
    pub const ACCOUNT: u64 = 37;
    /// Sets a process's rights and priority ceiling (process manager only).
    pub const SET_RIGHTS: u64 = 38;
    /// Lets a process map a range of device memory (process manager only).
    pub const DEVICE_GRANT: u64 = 39;
    /// Maps granted device memory into the caller.
    pub const MAP_DEVICE: u64 = 40;
    /// Physically contiguous memory for a device's DMA (needs [`super::rights::DMA`]).
    pub const DMA_ALLOC: u64 = 41;
    /// A message-signalled interrupt delivered as pulses.
    pub const MSI_ATTACH: u64 = 42;
    /// Facts about the machine ([`super::hwinfo`]).
    pub const HWINFO: u64 = 43;
    /// Replies to a message (as `MSG_REPLY`), then receives the next (as
    /// `MSG_RECEIVE`) in one call: a server's loop is one system call a
    /// message (seL4's ReplyRecv). A reply that fails returns its error
    /// and receives nothing; an error of the receive comes after the
    /// reply went. A server that cannot tell which from the code replies
    /// again: `Stale` says the reply went (or its client is gone).
    pub const MSG_REPLY_RECEIVE: u64 = 44;
    /// Sends a message in registers and returns the reply in them
    /// (seL4's Call: the module's "Messages in registers").
    pub const MSG_CALL: u64 = 45;
    /// Replies in registers, then receives the next message into them
    /// (seL4's ReplyRecv: the module's "Messages in registers").
    pub const MSG_REPLY_WAIT: u64 = 46;
    /// One past the highest call number.
    pub const COUNT: u64 = 47;
}

/// First address above user space: every user pointer and mapping is below.
/// (The last page below the canonical boundary is never mapped, so no user
/// instruction can end at the boundary — `sysret` to a non-canonical address
/// faults in the kernel on Intel CPUs.)
pub const USER_TOP: u64 = 0x0000_7fff_ffff_f000;

/// `SET_CPU`'s argument that unpins the calling thread: it stays where it
/// is, and the user scheduler's balancer may move it again.
pub const ANY_CPU: u64 = u64::MAX;

/// Longest `DEBUG_WRITE`, `SPAWN` name or argument, in bytes.
pub const MAX_IO: u64 = 64 * 1024;

/// Why a call failed: the result is `-(error as i64)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i64)]
pub enum Error {
    /// No system call has this number.
    NoSys = 1,
    /// A pointer argument the kernel cannot use.
    Fault = 2,
    /// An argument out of range or malformed.
    Invalid = 3,
    /// Not enough memory for the request.
    NoMemory = 4,
    /// No such program, thread or process.
    NotFound = 5,
    /// A per-process or system limit was reached.
    Limit = 6,
    /// The process is being killed; the call was abandoned.
    Killed = 7,
    /// The thread tried to wait for itself, or a second waiter came.
    Busy = 8,
    /// The channel was destroyed, or its server ended.
    Gone = 9,
    /// The conversation is over: replied already, or its sender ended.
    Stale = 10,
    /// A queue is full (a channel's pulses, its unreplied messages).
    Full = 11,
    /// The caller may not do this (an I/O grant or the process manager's
    /// privilege is needed).
    Denied = 12,
}

impl Error {
    /// Every error, for tests and tables.
    pub const ALL: [Error; 12] = [
        Error::NoSys,
        Error::Fault,
        Error::Invalid,
        Error::NoMemory,
        Error::NotFound,
        Error::Limit,
        Error::Killed,
        Error::Busy,
        Error::Gone,
        Error::Stale,
        Error::Full,
        Error::Denied,
    ];

    /// The error of a negative result.
    pub fn from_result(r: i64) -> Option<Error> {
        Error::ALL.into_iter().find(|e| -(*e as i64) == r)
    }

    /// What it means.
    pub fn text(self) -> &'static str {
        match self {
            Error::NoSys => "no such system call",
            Error::Fault => "bad address",
            Error::Invalid => "invalid argument",
            Error::NoMemory => "out of memory",
            Error::NotFound => "not found",
            Error::Limit => "limit reached",
            Error::Killed => "process killed",
            Error::Busy => "busy",
            Error::Gone => "channel gone",
            Error::Stale => "conversation over",
            Error::Full => "queue full",
            Error::Denied => "not allowed",
        }
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.text())
    }
}

/// A call's result as the kernel returns it in `rax`.
#[inline]
pub fn encode(r: Result<u64, Error>) -> u64 {
    match r {
        Ok(v) => v,
        Err(e) => (-(e as i64)) as u64,
    }
}

/// A raw `rax` as a result.
#[inline]
pub fn decode(rax: u64) -> Result<u64, Error> {
    let r = rax as i64;
    if r >= 0 {
        Ok(rax)
    } else {
        Err(Error::from_result(r).unwrap_or(Error::NoSys))
    }
}

/// `MAP` protection bits. Writable and executable together is refused.
pub mod prot {
    /// Readable (always implied).
    pub const READ: u64 = 1;
    /// Writable.
    pub const WRITE: u64 = 2;
    /// Executable.
    pub const EXEC: u64 = 4;
}

/// Largest single `MAP`.
pub const MAX_MAP: u64 = 256 << 20;

/// A user thread's priority (`SET_PRIORITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Priority {
    /// Runs when nothing else of the user's wants to.
    Idle = 0,
    /// The default.
    Normal = 1,
    /// Before every normal user thread (never before kernel threads).
    Realtime = 2,
}

impl Priority {
    /// The priority of a raw argument.
    pub fn from_raw(v: u64) -> Option<Priority> {
        match v {
            0 => Some(Priority::Idle),
            1 => Some(Priority::Normal),
            2 => Some(Priority::Realtime),
            _ => None,
        }
    }
}

/// How a child process ended (`WAIT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct WaitStatus {
    /// [`WaitStatus::EXITED`] or [`WaitStatus::KILLED`].
    pub kind: u64,
    /// The exit code, when it exited.
    pub code: i64,
    /// The fault that killed it: exception vector.
    pub vector: u64,
    /// The faulting instruction.
    pub rip: u64,
    /// The faulting address (page faults), else 0.
    pub addr: u64,
}

impl WaitStatus {
    /// It called `EXIT`, or its last thread ended.
    pub const EXITED: u64 = 1;
    /// A fault in user mode killed it.
    pub const KILLED: u64 = 2;
    /// Its parent ended it ([`nr::KILL`]).
    pub const TERMINATED: u64 = 3;
}

/// One piece of a scatter/gather buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Iov {
    pub base: u64,
    pub len: u64,
}

/// Pieces a message buffer may have at most.
pub const MAX_IOV: u64 = 16;

/// Message registers of `MSG_CALL` and `MSG_REPLY_WAIT`.
pub const MSG_REGS: usize = 5;
/// Bytes the message registers hold.
pub const MSG_REG_BYTES: u64 = 8 * MSG_REGS as u64;

/// Pulses a channel queues at most.
pub const PULSE_QUEUE: u64 = 64;

/// Channels and connections a process may have at most.
pub const MAX_CHANNELS: u64 = 64;

/// See [`MAX_CHANNELS`].
pub const MAX_CONNECTIONS: u64 = 256;

/// `CHANNEL_CREATE` flags.
pub mod chan {
    /// Any process may attach to the channel.
    pub const PUBLIC: u64 = 1;
}

/// What a process may do beyond the defaults ([`nr::SET_RIGHTS`],
/// [`SpawnOpts::rights`]).
pub mod rights {
    /// Kill any process (but the process manager).
    pub const KILL: u64 = 1;
    /// Read the kernel's counters, thread list and trace rings.
    pub const OBSERVE: u64 = 2;
    /// Allocate memory for DMA and learn its physical address. Without an
    /// IOMMU a device programmed with such addresses can reach any memory:
    /// this right is full trust.
    pub const DMA: u64 = 4;
    /// Every right there is.
    pub const ALL: u64 = KILL | OBSERVE | DMA;
}

/// Resource limits of an account (0 in a request: as the parent's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Limits {
    /// Bytes of memory: user pages and what the kernel holds for the
    /// process (nominal sizes).
    pub memory: u64,
    /// Processes, the account's own included.
    pub processes: u64,
    /// Live threads.
    pub threads: u64,
    /// Channels.
    pub channels: u64,
    /// Connections.
    pub connections: u64,
}

/// How a child is spawned ([`nr::SPAWN`]'s last argument; a null pointer
/// means all defaults).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SpawnOpts {
    /// The child account's limits, each capped by the parent's.
    pub limits: Limits,
    /// [`rights`] the child gets, of those the parent has.
    pub rights: u64,
    /// The child's priority ceiling ([`Priority`] as a number), at most
    /// the parent's; `u64::MAX`: the parent's.
    pub ceiling: u64,
    /// The process whose account the child's is made below (0: the
    /// spawner's). Only the process manager may name another: it spawns on
    /// a client's behalf and charges the client.
    pub charge_to: u64,
}

/// A process's account: its limits, and what it and its descendants hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct AccountInfo {
    pub limits: Limits,
    pub used: Limits,
    /// [`rights`] bits.
    pub rights: u64,
    /// [`Priority`] ceiling.
    pub ceiling: u64,
}

/// What `MSG_RECEIVE` says of what it received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct MsgInfo {
    /// The receive id (0: a pulse).
    pub rcvid: u64,
    /// The sending process and thread (0 for a pulse).
    pub pid: u64,
    pub tid: u64,
    /// The sender's scheduling priority, which the receiver now runs at
    /// (the kernel's scale: 4 idle, 6 normal, 8 real-time user threads).
    pub priority: u64,
    /// Bytes the sender sent in all, and has room for in its reply.
    pub slen: u64,
    pub rlen: u64,
    /// Bytes copied into the receive buffer.
    pub copied: u64,
    /// A pulse's code and value.
    pub code: u64,
    pub value: u64,
}

/// Who and where the caller is (`INFO`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Info {
    /// Online CPUs.
    pub ncpus: u64,
    /// The CPU the call ran on.
    pub cpu: u64,
    /// The calling process and thread.
    pub pid: u64,
    pub tid: u64,
    /// Scheduler ticks per second.
    pub hz: u64,
    /// The calling thread's scheduling priority now (the kernel's scale:
    /// see [`MsgInfo::priority`]); a server serving a message runs at its
    /// client's.
    pub priority: u64,
    /// The process manager's pid (0 when the boot has none).
    pub procman: u64,
}

/// One thread (`THREADS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ThreadInfo {
    pub cpu: u64,
    /// Its process (0: a kernel thread).
    pub pid: u64,
    /// Its scheduling priority now (the kernel's scale, 0 idle to 31): a
    /// user thread's user priority, whatever level it runs at in the
    /// kernel meanwhile.
    pub priority: u64,
    /// [`ThreadInfo::RUNNING`], [`ThreadInfo::RUNNABLE`],
    /// [`ThreadInfo::SLEEPING`], [`ThreadInfo::BLOCKED`] or
    /// [`ThreadInfo::WAITING`].
    pub state: u64,
    /// Switches to it so far.
    pub switches: u64,
    /// Its name and, when sleeping, what it sleeps on (NUL-padded).
    pub name: [u8; 16],
    pub wmesg: [u8; 8],
    /// Its thread id in its process (0: a kernel thread).
    pub tid: u64,
    /// Clock ticks it was charged as its CPU's current user thread.
    pub ticks: u64,
    /// Its decaying CPU-use estimate (ticks; halves every second).
    pub estcpu: u64,
    /// [`ThreadInfo::PINNED`], [`ThreadInfo::USER_TURN`].
    pub flags: u64,
}

impl ThreadInfo {
    pub const RUNNING: u64 = 0;
    pub const RUNNABLE: u64 = 1;
    pub const SLEEPING: u64 = 2;
    pub const BLOCKED: u64 = 3;
    /// Ready to run user code, waiting for its CPU's user turn (another
    /// user thread has it).
    pub const WAITING: u64 = 4;
    /// Flag: pinned to its CPU by `SET_CPU`: the balancer never moves it.
    pub const PINNED: u64 = 1 << 0;
    /// Flag: its CPU's current user thread (the one that may run user code
    /// there).
    pub const USER_TURN: u64 = 1 << 1;
}

/// One CPU's counters (`STATS`): the kernel's scheduler and IPI counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct CpuStats {
    pub cpu: u64,
    pub ticks: u64,
    pub interrupts: u64,
    pub syscalls: u64,
    pub switches: u64,
    pub preempt_hit: u64,
    pub preempt_miss: u64,
    pub preempt_weird: u64,
    pub idle_halts: u64,
    pub ipi_sent: u64,
    pub ipi_received: u64,
    pub ipi_avoided: u64,
    pub fifo_full: u64,
    pub token_collisions: u64,
    pub threads: u64,
    /// Message sends that switched straight to a waiting server (the fast
    /// path).
    pub ipc_handoffs: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_round_trip() {
        assert_eq!(decode(encode(Ok(42))), Ok(42));
        for e in Error::ALL {
            assert_eq!(decode(encode(Err(e))), Err(e));
            assert!(!e.text().is_empty());
        }
        assert_eq!(decode((-999i64) as u64), Err(Error::NoSys));
    }

    #[test]
    fn priorities() {
        assert_eq!(Priority::from_raw(1), Some(Priority::Normal));
        assert_eq!(Priority::from_raw(3), None);
    }
}

/// `MAP_DEVICE` flags.
pub mod devmap {
    /// Write-combining (a framebuffer); uncached otherwise.
    pub const WRITE_COMBINE: u64 = 1;
    /// Read-only (ACPI tables).
    pub const READ_ONLY: u64 = 2;
}

/// Device grants a process may hold at once.
pub const MAX_DEVICE_GRANTS: u64 = 16;
/// Message-signalled interrupts a process may hold at once.
pub const MAX_MSI: u64 = 4;
/// Largest single `DMA_ALLOC`.
pub const MAX_DMA: u64 = 1 << 20;
/// `MSI_ATTACH` handles start here (below it are ISA IRQs).
pub const MSI_BASE: u64 = 256;

/// Where a device writes to raise an attached MSI (`MSI_ATTACH`): the
/// capability's message address and data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct MsiTarget {
    pub address: u64,
    pub data: u64,
}

/// `HWINFO` kinds and what they return.
pub mod hwinfo {
    /// A [`super::FbInfo`] (`NotFound`: no framebuffer).
    pub const FRAMEBUFFER: u64 = 1;
    /// An [`super::AcpiInfo`].
    pub const ACPI: u64 = 2;
    /// A [`super::MemInfo`] (needs [`super::rights::OBSERVE`]).
    pub const MEMORY: u64 = 3;
}

/// The machine's memory now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct MemInfo {
    /// Usable and free 4 KiB frames.
    pub total_frames: u64,
    pub free_frames: u64,
    /// Bytes of the kernel heap handed out, and their allocations.
    pub heap_bytes: u64,
    pub heap_allocations: u64,
    /// Kernel stacks in use, the most in use at once since boot, and the
    /// stack slots ever made (the stack region's high-water mark: its page
    /// tables and bookkeeping follow it and are kept). Slots are reused, so
    /// the last stays within a flush batch (64) of the second.
    pub kernel_stacks: u64,
    pub kernel_stack_peak: u64,
    pub kernel_stack_slots: u64,
    /// IPI FIFOs made and their heap bytes (part of `heap_bytes`). A CPU
    /// pair's FIFO is made the first time one sends to the other and is
    /// kept, so this grows until every pair that talks has talked.
    pub ipi_fifos: u64,
    pub ipi_fifo_bytes: u64,
}

/// The boot framebuffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct FbInfo {
    /// Physical address and size in bytes.
    pub phys: u64,
    pub size: u64,
    /// Pixels.
    pub width: u64,
    pub height: u64,
    /// Pixels per line.
    pub stride: u64,
    pub bytes_per_pixel: u64,
    /// [`fbformat`].
    pub format: u64,
}

/// [`FbInfo::format`].
pub mod fbformat {
    /// Red, green, blue bytes (then padding).
    pub const RGB: u64 = 0;
    /// Blue, green, red bytes (then padding).
    pub const BGR: u64 = 1;
    /// One grey byte.
    pub const GREY: u64 = 2;
}

/// What ACPI says about PCI configuration space and power (0 where the
/// firmware said nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct AcpiInfo {
    /// MCFG's first ECAM range: base of segment 0, bus `bus_start`.
    pub ecam_base: u64,
    pub ecam_bus_start: u64,
    pub ecam_bus_end: u64,
    /// The DSDT, physical address and length.
    pub dsdt_phys: u64,
    pub dsdt_len: u64,
    /// FADT: PM1a/PM1b control block I/O ports (0: none).
    pub pm1a_cnt: u64,
    pub pm1b_cnt: u64,
    /// FADT reset register: address space (0 memory, 1 I/O, 2 PCI config,
    /// `u64::MAX` none), address, value to write.
    pub reset_space: u64,
    pub reset_addr: u64,
    pub reset_value: u64,
    /// FADT SMI command port and the value that enables ACPI (0: already).
    pub smi_cmd: u64,
    pub acpi_enable: u64,
    /// IAPC boot flags: bit 1 says an 8042 is present (0 when the FADT is
    /// older than revision 3 and does not say).
    pub iapc_boot_arch: u64,
    /// 1 when the FADT's IAPC boot flags are valid.
    pub iapc_valid: u64,
}
