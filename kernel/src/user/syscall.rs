//! The system calls (numbers, arguments and errors: `wyvern_abi::syscall`).
//!
//! [`dispatch`] runs on the calling thread's kernel stack with interrupts
//! enabled, outside any critical section: every call may block, and every
//! blocking call sleeps interruptibly so a kill ends it. Arguments are
//! checked before use; a bad one is an error code, never a kernel fault.

use alloc::vec::Vec;

use wyvern_abi::syscall::{
    self as abi, AccountInfo, CpuStats, Error, Info, Limits, MAX_IO, MAX_MAP, Priority, SpawnOpts,
    ThreadInfo, WaitStatus, nr, prot, rights,
};

use super::process::{self, MAP_BASE, MAP_END, MAX_ARG, MAX_NAME};
use super::{UserThread, current, exit_current, ipc, irq, uaccess};
use crate::arch::trap::TrapFrame;
use crate::arch::{cpu, timer, tsc};
use crate::mm::PAGE_SIZE;
use crate::mm::aspace::{Kind, MapError, Prot};
use crate::sched::X86;
use crate::{percpu, stats};

/// Runs the system call in `frame` (number in `rax`, arguments in `rdi`,
/// `rsi`, `rdx`, `r10`, `r8`, `r9`) and puts the result in `rax`. Returns the
/// calling thread's user context, for the way out (it stays the thread's
/// until `exit_current`, which does not return here).
///
/// Thread context of a user thread, interrupts enabled.
#[inline(always)]
pub fn dispatch(frame: &mut TrapFrame) -> &'static UserThread {
    let u = current().expect("a system call from a kernel thread");
    // Each call reads the arguments it takes, where it takes them: an array
    // built here would load all six registers on every call.
    let a = Args(frame);
    let r = match frame.rax {
        nr::NOP => Ok(0),
        nr::DEBUG_WRITE => debug_write(u, a[0], a[1]),
        nr::EXIT => exit(u, a[0] as i64),
        nr::THREAD_CREATE => u.process.start_thread(a[0], a[1], None),
        nr::THREAD_EXIT => exit_current(Some(a[0] as i64)),
        nr::THREAD_JOIN => u.process.join(u.tid, a[0]).map(|c| c as u64),
        nr::SPAWN => spawn(u, a.all()),
        nr::WAIT => wait(u, a[0], a[1]),
        nr::YIELD => yield_turn(),
        nr::SLEEP => sleep(a[0]),
        nr::CLOCK => Ok(tsc::ticks_to_ns(cpu::rdtsc() - tsc::boot_tsc())),
        nr::MAP => map(u, a[0], a[1]),
        nr::UNMAP => unmap(u, a[0], a[1]),
        nr::SET_PRIORITY => set_priority(u, a[0], a[1]),
        nr::SET_CPU => set_cpu(a[0]),
        nr::INFO => info(u, a[0]),
        nr::STATS => observe(u).and_then(|()| stats(a[0], a[1])),
        nr::CHANNEL_CREATE => ipc::channel_create(u, a[0]),
        nr::CHANNEL_DESTROY => ipc::channel_destroy(u, a[0]),
        nr::CONNECT_ATTACH => ipc::connect_attach(u, a[0], a[1]),
        nr::CONNECT_DETACH => ipc::connect_detach(u, a[0]),
        nr::MSG_SEND => ipc::send(u, a.all()),
        nr::MSG_RECEIVE => ipc::receive(u, a.all()),
        nr::MSG_REPLY => ipc::reply(u, a.all()),
        nr::MSG_REPLY_RECEIVE => ipc::reply_receive(u, a.all()),
        nr::MSG_CALL => ipc::call(u, frame),
        nr::MSG_REPLY_WAIT => ipc::reply_wait(u, frame),
        nr::MSG_ERROR => ipc::msg_error(u, a[0], a[1]),
        nr::MSG_READ => ipc::read_write(u, a.all(), false),
        nr::MSG_WRITE => ipc::read_write(u, a.all(), true),
        nr::MSG_SEND_PULSE => ipc::send_pulse(u, a[0], a[1], a[2]),
        nr::KILL => kill(u, a[0]),
        nr::IO_GRANT => io_grant(u, a[0], a[1], a[2]),
        nr::INTERRUPT_ATTACH => irq::attach(u, a[0], a[1], a[2]),
        nr::INTERRUPT_UNMASK => irq::unmask(u, a[0]),
        nr::INTERRUPT_DETACH => irq::detach(u, a[0]),
        nr::KLOG_READ => klog_read(u, a[0], a[1], a[2]),
        nr::THREADS => observe(u).and_then(|()| threads(a[0], a[1])),
        nr::TRACE => observe(u).map(|()| {
            crate::trace::dump_all();
            0
        }),
        nr::CONNECT_GIVE => ipc::connect_give(u, a[0], a[1]),
        nr::ACCOUNT => account(u, a[0]),
        nr::SET_RIGHTS => set_rights(u, a[0], a[1], a[2]),
        nr::DEVICE_GRANT => super::device::grant(u, a[0], a[1], a[2], a[3]),
        nr::MAP_DEVICE => super::device::map(u, a[0], a[1], a[2]),
        nr::DMA_ALLOC => super::device::dma_alloc(u, a[0], a[1]),
        nr::MSI_ATTACH => super::irq::msi_attach(u, a[0], a[1], a[2]),
        nr::HWINFO => super::device::hwinfo(u, a[0], a[1], a[2]),
        _ => Err(Error::NoSys),
    };
    frame.rax = abi::encode(r);
    u
}

/// The arguments of the system call in a frame, in order.
struct Args<'a>(&'a TrapFrame);

impl Args<'_> {
    /// All six.
    #[inline(always)]
    fn all(&self) -> [u64; 6] {
        let f = self.0;
        [f.rdi, f.rsi, f.rdx, f.r10, f.r8, f.r9]
    }
}

impl core::ops::Index<usize> for Args<'_> {
    type Output = u64;

    #[inline(always)]
    fn index(&self, i: usize) -> &u64 {
        let f = self.0;
        match i {
            0 => &f.rdi,
            1 => &f.rsi,
            2 => &f.rdx,
            3 => &f.r10,
            4 => &f.r8,
            5 => &f.r9,
            _ => panic!("a system call has six arguments"),
        }
    }
}

/// `YIELD`: the CPU's user turn, to the best waiting thread of at least this
/// one's priority (on the way out). Out of line: inlined, the compiler tested
/// for it before the jump table, on every system call.
#[inline(never)]
fn yield_turn() -> Result<u64, Error> {
    lwkt::usched::yield_user::<X86>();
    Ok(0)
}

/// Writes user bytes to the console, control characters (but newline and
/// tab) and non-ASCII bytes replaced, so a program cannot drive the terminal.
/// A process may write [`process::OUTPUT_RATE`] bytes a second (bursts of
/// [`process::OUTPUT_BURST`]); what goes beyond is dropped, counted, and the
/// count printed before its next output. Returns the bytes written.
fn debug_write(u: &UserThread, ptr: u64, len: u64) -> Result<u64, Error> {
    if len > MAX_IO {
        return Err(Error::Invalid);
    }
    let (len, dropped) = u.process.take_output(len);
    if dropped > 0 {
        crate::println!(
            "[{} (pid {}): {dropped} bytes of output dropped]",
            u.process.name,
            u.process.pid
        );
    }
    let mut buf = [0u8; 256];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        uaccess::read_into(&mut buf[..n], ptr + done)?;
        for b in &mut buf[..n] {
            if !(b.is_ascii_graphic() || *b == b' ' || *b == b'\n' || *b == b'\t') {
                *b = b'.';
            }
        }
        // ASCII only after the replacement above.
        crate::print!("{}", core::str::from_utf8(&buf[..n]).unwrap_or(""));
        done += n as u64;
    }
    Ok(len)
}

fn exit(u: &UserThread, code: i64) -> ! {
    u.process.kill(WaitStatus {
        kind: WaitStatus::EXITED,
        code,
        ..WaitStatus::default()
    });
    exit_current(None)
}

fn spawn(u: &UserThread, a: [u64; 6]) -> Result<u64, Error> {
    let name = uaccess::read_bytes(a[0], a[1], MAX_NAME)?;
    let arg = uaccess::read_bytes(a[2], a[3], MAX_ARG)?;
    let name = core::str::from_utf8(&name).map_err(|_| Error::Invalid)?;
    let opts = match a[4] {
        0 => None,
        p => Some(uaccess::read::<SpawnOpts>(p)?),
    };
    process::spawn(name, &arg, u.process.pid, opts.as_ref())
}

fn wait(u: &UserThread, pid: u64, status: u64) -> Result<u64, Error> {
    // The pointer first: a bad one leaves the child waitable.
    uaccess::probe_write(status, core::mem::size_of::<WaitStatus>() as u64)?;
    let (pid, st) = process::wait(u.process.pid, pid, true)?;
    uaccess::write(status, &st)?;
    process::reap(u.process.pid, pid);
    Ok(pid)
}

/// `KILL`: a child, or — with `rights::KILL` — any process but the process
/// manager. Guessing a pid one may not kill gets `NotFound` (its existence
/// is not confirmed).
fn kill(u: &UserThread, pid: u64) -> Result<u64, Error> {
    let p = process::find(pid).ok_or(Error::NotFound)?;
    let child = p.parent() == u.process.pid;
    let by_right = u.process.may(rights::KILL) && pid != process::procman();
    if !child && !by_right {
        return Err(Error::NotFound);
    }
    p.kill(WaitStatus {
        kind: WaitStatus::TERMINATED,
        ..WaitStatus::default()
    });
    Ok(0)
}

/// The calls that read the whole system's counters and threads.
fn observe(u: &UserThread) -> Result<(), Error> {
    if u.process.may(rights::OBSERVE) {
        Ok(())
    } else {
        Err(Error::Denied)
    }
}

/// `ACCOUNT`.
fn account(u: &UserThread, ptr: u64) -> Result<u64, Error> {
    use super::account::Res;
    let a = &u.process.account;
    let info = AccountInfo {
        limits: a.limits(),
        used: Limits {
            memory: a.used(Res::Memory),
            processes: a.used(Res::Processes),
            threads: a.used(Res::Threads),
            channels: a.used(Res::Channels),
            connections: a.used(Res::Connections),
        },
        rights: u.process.rights(),
        ceiling: process::user_priority(u.process.ceiling()) as u64,
    };
    uaccess::write(ptr, &info)?;
    Ok(0)
}

/// `SET_RIGHTS`: the process manager sets what a process may do.
fn set_rights(u: &UserThread, pid: u64, bits: u64, ceiling: u64) -> Result<u64, Error> {
    if !u.process.privileged() {
        return Err(Error::Denied);
    }
    if bits & !rights::ALL != 0 {
        return Err(Error::Invalid);
    }
    let ceiling = process::lwkt_priority(Priority::from_raw(ceiling).ok_or(Error::Invalid)?);
    let p = process::find(pid).ok_or(Error::NotFound)?;
    p.set_rights(bits, ceiling);
    Ok(0)
}

fn io_grant(u: &UserThread, pid: u64, first: u64, count: u64) -> Result<u64, Error> {
    if !u.process.privileged() {
        return Err(Error::Denied);
    }
    let p = process::find(pid).ok_or(Error::NotFound)?;
    p.grant_io(first, count)?;
    Ok(0)
}

fn klog_read(u: &UserThread, ptr: u64, len: u64, flags: u64) -> Result<u64, Error> {
    if flags & !1 != 0 {
        return Err(Error::Invalid);
    }
    if u.process.io_key() == 0 && !u.process.devices.any() && !u.process.privileged() {
        return Err(Error::Denied);
    }
    let mut buf = [0u8; 1024];
    let n = (len as usize).min(buf.len());
    if n == 0 {
        return Err(Error::Invalid);
    }
    // The buffer must be writable before bytes are taken from the ring
    // (at most 1 KiB: both ends are probed).
    uaccess::probe_write(ptr, n as u64)?;
    let got = crate::console::klog_read(&u.process.klog_pos, &mut buf[..n], flags & 1 == 0)
        .map_err(|_| Error::Killed)?;
    uaccess::write_bytes(ptr, &buf[..got])?;
    Ok(got as u64)
}

/// Every thread, CPU by CPU. Each CPU lists its own threads (a thread
/// list is read only by its own CPU) in its IPI-dispatch context, through a
/// `cpusync` aimed at it alone: the caller stays where it is, and a CPU
/// kept busy by threads of any priority still answers, because an IPI
/// interrupts whatever runs there. The listing goes into a buffer reserved
/// beforehand (the IPI context does not allocate).
fn threads(ptr: u64, count: u64) -> Result<u64, Error> {
    let count = count.min(4096) as usize;
    let mut list = ThreadList {
        all: Vec::new(),
        count,
        cpu: 0,
    };
    list.all.try_reserve(count).map_err(|_| Error::NoMemory)?;
    for c in percpu::online() {
        list.cpu = c.index();
        let mut target = ipi::CpuSet::new();
        target.insert(c.index() as usize);
        let g = lwkt::crit_enter::<X86>();
        crate::sched::world().ipi.cpusync(
            &target,
            list_threads,
            core::ptr::from_mut(&mut list) as usize,
        );
        drop(g);
    }
    uaccess::write_slice(ptr, &list.all)?;
    Ok(list.all.len() as u64)
}

/// What `threads` fills, CPU after CPU.
struct ThreadList {
    all: Vec<ThreadInfo>,
    count: usize,
    cpu: u32,
}

/// Lists this CPU's threads into the [`ThreadList`] at `arg`. IPI-dispatch
/// context on the CPU named in it.
fn list_threads(arg: usize) {
    // SAFETY: `threads` passes a `ThreadList` that outlives the cpusync,
    // which runs this on one CPU at a time while the caller waits.
    let list = unsafe { &mut *(arg as *mut ThreadList) };
    let c = percpu::mycpu();
    debug_assert_eq!(c.index(), list.cpu);
    let running = c.lwkt.curthread();
    let turn = c.lwkt.usched.current();
    c.lwkt.for_each_thread(|td| {
        if list.all.len() >= list.count {
            return;
        }
        let f = td.flag_bits();
        let state = if core::ptr::eq(td, running) {
            ThreadInfo::RUNNING
        } else if f & lwkt::flags::RUNQ != 0 {
            ThreadInfo::RUNNABLE
        } else if f & lwkt::flags::TSLEEPQ != 0 {
            ThreadInfo::SLEEPING
        } else if f & lwkt::flags::UQ != 0 {
            ThreadInfo::WAITING
        } else {
            ThreadInfo::BLOCKED
        };
        // Capacity was reserved for `count`: no allocation here.
        list.all.push(ThreadInfo {
            cpu: u64::from(c.index()),
            pid: super::pid_of(td),
            priority: u64::from(td.sched_priority()),
            state,
            switches: td.switch_count(),
            name: padded(td.name().as_str()),
            wmesg: padded(td.wmesg().as_str()),
            tid: super::tid_of(td),
            ticks: td.user_ticks(),
            estcpu: u64::from(td.estcpu()),
            flags: if f & lwkt::flags::PINNED != 0 {
                ThreadInfo::PINNED
            } else {
                0
            } | if turn.is_some_and(|t| core::ptr::eq(t, td)) {
                ThreadInfo::USER_TURN
            } else {
                0
            },
        });
    });
}

/// `s` cut to `N` bytes, NUL-padded.
fn padded<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let n = s.len().min(N);
    out[..n].copy_from_slice(&s.as_bytes()[..n]);
    out
}

fn sleep(ns: u64) -> Result<u64, Error> {
    if ns == 0 {
        lwkt::usched::yield_user::<X86>();
        return Ok(0);
    }
    // The first tick may come at once: one more than the time spans (BSD's
    // `tvtohz`). Ticks are only as long as the timer's calibration made them
    // (a periodic LAPIC timer measured against the TSC over 10 ms can run a
    // few percent fast), so the TSC has the last word: a sleep that woke
    // early sleeps again for what is left. At most a day.
    let ns = ns.min(86_400 * 1_000_000_000);
    let per_tick = 1_000_000_000 / timer::HZ;
    let deadline = cpu::rdtsc().saturating_add(tsc::ns_to_ticks(ns));
    let ident = core::ptr::from_ref(lwkt::current::<X86>()) as usize;
    let mut left = ns;
    loop {
        let ticks = left.div_ceil(per_tick) + 1;
        if lwkt::tsleep::<X86>(ident, lwkt::INTERRUPTIBLE, "sleep", ticks)
            == lwkt::Wake::Interrupted
        {
            return Err(Error::Killed);
        }
        let now = cpu::rdtsc();
        if now >= deadline {
            return Ok(0);
        }
        left = tsc::ticks_to_ns(deadline - now).max(1);
    }
}

fn map(u: &UserThread, len: u64, bits: u64) -> Result<u64, Error> {
    if len == 0 || len > MAX_MAP || bits & !(prot::READ | prot::WRITE | prot::EXEC) != 0 {
        return Err(Error::Invalid);
    }
    let p = Prot {
        write: bits & prot::WRITE != 0,
        exec: bits & prot::EXEC != 0,
    };
    if p.write && p.exec {
        return Err(Error::Invalid);
    }
    let len = len.next_multiple_of(PAGE_SIZE);
    let space = &u.process.space;
    // Another thread may take the range between the search and the mapping:
    // search again then.
    for _ in 0..4 {
        let at = space
            .find_free(MAP_BASE, MAP_END, len)
            .ok_or(Error::NoMemory)?;
        match space.map_zeroed(at, len, p, Kind::Anon) {
            Ok(()) => return Ok(at),
            Err(MapError::NoMemory) => return Err(Error::NoMemory),
            Err(MapError::Limit) => return Err(Error::Limit),
            Err(MapError::Busy) => continue,
        }
    }
    Err(Error::NoMemory)
}

fn unmap(u: &UserThread, addr: u64, len: u64) -> Result<u64, Error> {
    if !addr.is_multiple_of(PAGE_SIZE) || len == 0 || len > MAX_MAP {
        return Err(Error::Invalid);
    }
    let end = addr
        .checked_add(len.next_multiple_of(PAGE_SIZE))
        .ok_or(Error::Invalid)?;
    if addr < MAP_BASE || end > MAP_END {
        return Err(Error::Invalid);
    }
    if u.process
        .space
        .unmap(addr, end, &[Kind::Anon, Kind::Device, Kind::Dma])
    {
        Ok(0)
    } else {
        Err(Error::Invalid)
    }
}

fn set_priority(u: &UserThread, tid: u64, p: u64) -> Result<u64, Error> {
    let p = process::lwkt_priority(Priority::from_raw(p).ok_or(Error::Invalid)?);
    if tid == 0 || tid == u.tid {
        if p > u.process.ceiling() {
            return Err(Error::Denied);
        }
        u.set_own_priority(p);
        return Ok(0);
    }
    u.process.set_priority(tid, p)?;
    Ok(0)
}

/// `SET_CPU`: moves the calling thread to `cpu` and pins it there (the user
/// scheduler's balancer leaves it), or with `ANY_CPU` unpins it where it is.
///
/// Who may: any thread, for itself only — there is no way to move another
/// thread. What it costs the kernel: one migration — the thread deschedules
/// itself and one IPI message asks the target CPU to adopt it — and nothing
/// allocated but, the first time a pair of CPUs talks, that pair's IPI FIFO
/// (made once, at most one per pair; a failed allocation is retried while
/// the sender serves its own queues, nothing is lost). Who pays: the caller,
/// in its own CPU time and user turns; the target spends one message
/// dispatch, as for any wakeup. A thread bouncing between CPUs in a loop
/// costs each target one message per call, bounded by the caller's share of
/// CPU time, and a pinned thread still waits its turn among the user threads
/// of its CPU: pinning buys no more CPU than running there unpinned.
/// Errors: `Invalid` for a CPU that does not exist or is not online.
fn set_cpu(cpu: u64) -> Result<u64, Error> {
    if cpu == wyvern_abi::syscall::ANY_CPU {
        lwkt::usched::pin::<X86>(false);
        return Ok(0);
    }
    if !percpu::cpu(u32::try_from(cpu).map_err(|_| Error::Invalid)?).is_some_and(|c| c.is_online())
    {
        return Err(Error::Invalid);
    }
    // Pinned: the user scheduler's balancer leaves it there.
    lwkt::usched::pin::<X86>(true);
    lwkt::migrate_self::<X86>(cpu as usize);
    Ok(0)
}

fn info(u: &UserThread, ptr: u64) -> Result<u64, Error> {
    let i = Info {
        ncpus: process::ncpus(),
        cpu: u64::from(percpu::cpu_index()),
        pid: u.process.pid,
        tid: u.tid,
        hz: timer::HZ,
        priority: u64::from(lwkt::current::<X86>().sched_priority()),
        procman: process::procman(),
    };
    uaccess::write(ptr, &i)?;
    Ok(0)
}

/// `STATS`: one record per online CPU, written one by one (no list on the
/// heap).
fn stats(ptr: u64, count: u64) -> Result<u64, Error> {
    let size = core::mem::size_of::<CpuStats>() as u64;
    let mut n = 0;
    for c in percpu::online()
        .take(count.min(percpu::MAX_CPUS as u64) as usize)
        .map(stats::of)
    {
        let pc = percpu::cpu(c.cpu).expect("a counted CPU has a block");
        let rec = CpuStats {
            cpu: u64::from(c.cpu),
            ticks: c.ticks,
            interrupts: c.interrupts,
            syscalls: pc.syscalls.get(),
            switches: c.sched.switches,
            preempt_hit: c.sched.preempt_hit,
            preempt_miss: c.sched.preempt_miss,
            preempt_weird: c.sched.preempt_weird,
            idle_halts: c.sched.idle_halts,
            ipi_sent: c.ipi.sent,
            ipi_received: c.ipi.received,
            ipi_avoided: c.ipi.avoided,
            fifo_full: c.ipi.fifo_full,
            token_collisions: c.sched.token_collisions,
            threads: pc.lwkt.thread_count() as u64,
            ipc_handoffs: c.sched.handoffs,
        };
        uaccess::write(ptr.wrapping_add(n * size), &rec)?;
        n += 1;
    }
    Ok(n)
}
