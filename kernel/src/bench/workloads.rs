//! The workloads. Each runs one repetition of `n` operations per party on `k`
//! CPUs (where the workload has a CPU count) and returns what it measured.
//! What an operation is for each one is its `unit` in the registry
//! (`super::BENCHES`).

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use lwkt::{Builder, Token};

use super::parties::{self, Rep, Span, repeat, timed};
use crate::arch::{cpu, timer};
use crate::percpu::{self, MAX_CPUS};
use crate::sched::{self, X86};
use crate::sync::Once;

/// The boot CPU and the CPU nearest to it or farthest from it: the one whose
/// APIC id differs from the boot CPU's in the lowest or the highest bit. APIC
/// ids nest thread within core within package, so on real hardware the
/// nearest is an SMT sibling or a core of the same package, the farthest one
/// in another package. (QEMU's CPUs are all alike: there the pairs differ
/// only in which CPU answers.)
pub fn partner(far: bool) -> usize {
    let me = percpu::cpu(0).expect("no boot CPU").apic_id();
    let distance = |c: &&percpu::PerCpu| (c.apic_id() ^ me).ilog2();
    let others = percpu::online().filter(|c| c.index() != 0);
    let pick = if far {
        others.max_by_key(distance)
    } else {
        others.min_by_key(distance)
    };
    pick.map_or(0, |c| c.index() as usize)
}

fn yield_op(_: &()) {
    lwkt::yield_now::<X86>();
}

/// The partner of a switch pair: yields until told to stop.
#[inline(never)]
fn yield_until(stop: &AtomicBool) {
    let op = core::hint::black_box(yield_op as fn(&()));
    while !stop.load(Ordering::Acquire) {
        op(&());
    }
}

/// LWKT switch (benchmark 1): on each of CPUs `0..k`, two threads yield to each
/// other. One operation is one switch.
pub fn switch(n: u64, k: usize) -> Rep {
    let stop: Arc<Vec<AtomicBool>> = Arc::new((0..k).map(|_| AtomicBool::new(false)).collect());
    let cpus: Vec<usize> = (0..k).flat_map(|c| [c, c]).collect();
    parties::run(&cpus, move |p, gate| {
        let pair = p / 2;
        gate.wait();
        if p % 2 == 0 {
            // Each yield is two switches: to the partner and back.
            let mut span = timed(n, yield_op, &());
            span.ops = 2 * n;
            stop[pair].store(true, Ordering::Release);
            Some(span)
        } else {
            yield_until(&stop[pair]);
            None
        }
    })
}

/// A baton passed between two threads with `tsleep`/`wakeup`: each side
/// sleeps on its own address until the baton is its. A cache line each, as
/// separate objects would be.
#[repr(align(64))]
struct Baton {
    holder: AtomicU32,
}

impl Baton {
    fn new() -> Self {
        Baton {
            holder: AtomicU32::new(0),
        }
    }

    fn ident(&self, side: u32) -> usize {
        core::ptr::from_ref(&self.holder) as usize + side as usize
    }

    /// Blocks until the baton is `side`'s (the race-free sleep: queue, check,
    /// then sleep).
    fn wait(&self, side: u32) {
        loop {
            lwkt::tsleep_interlock::<X86>(self.ident(side));
            if self.holder.load(Ordering::Acquire) == side {
                lwkt::tsleep_cancel::<X86>();
                return;
            }
            lwkt::tsleep::<X86>(self.ident(side), lwkt::INTERLOCKED, "baton", 0);
        }
    }

    /// Hands the baton to `side` and wakes it.
    fn pass(&self, side: u32) {
        self.holder.store(side, Ordering::Release);
        lwkt::wakeup::<X86>(self.ident(side));
    }
}

fn ping(baton: &Baton) {
    baton.pass(1);
    baton.wait(0);
}

fn pong(baton: &Baton) {
    baton.wait(1);
    baton.pass(0);
}

/// Ping-pong over a [`Baton`] between `pairs` of CPUs; one operation is one
/// wakeup (with the sleep and the switch it ends), two per round trip.
fn ping_pong(n: u64, pairs: &[(usize, usize)]) -> Rep {
    let batons: Arc<Vec<Baton>> = Arc::new(pairs.iter().map(|_| Baton::new()).collect());
    let cpus: Vec<usize> = pairs.iter().flat_map(|&(a, b)| [a, b]).collect();
    parties::run(&cpus, move |p, gate| {
        let baton = &batons[p / 2];
        gate.wait();
        if p % 2 == 0 {
            let mut span = timed(n, ping, baton);
            span.ops = 2 * n;
            Some(span)
        } else {
            repeat(n, pong, baton);
            None
        }
    })
}

/// Same-CPU wakeup (benchmark 2): a ping-pong pair on each of CPUs `0..k`.
pub fn wakeup_local(n: u64, k: usize) -> Rep {
    let pairs: Vec<_> = (0..k).map(|c| (c, c)).collect();
    ping_pong(n, &pairs)
}

/// Cross-CPU wakeup (benchmark 3) between the boot CPU and its nearest CPU:
/// every wakeup is an IPI message to the sleeper's CPU.
pub fn wakeup_cross_near(n: u64, _k: usize) -> Rep {
    ping_pong(n, &[(0, partner(false))])
}

/// Cross-CPU wakeup (benchmark 3) between the boot CPU and its farthest CPU.
pub fn wakeup_cross_far(n: u64, _k: usize) -> Rep {
    ping_pong(n, &[(0, partner(true))])
}

/// Round trips completed, written only by the boot CPU.
static RTT_BACK: AtomicU64 = AtomicU64::new(0);

/// On the far side, in IPI-dispatch context: answer the boot CPU.
fn rtt_there(origin: usize, _: usize) {
    sched::world().ipi.send(origin, rtt_back, 0, 0);
}

/// Back on the boot CPU, in IPI-dispatch context.
fn rtt_back(_: usize, _: usize) {
    RTT_BACK.store(RTT_BACK.load(Ordering::Relaxed) + 1, Ordering::Release);
}

/// One round trip to CPU `to`.
fn rtt(&to: &usize) {
    let want = RTT_BACK.load(Ordering::Acquire) + 1;
    let g = lwkt::crit_enter::<X86>();
    sched::world().ipi.send(to, rtt_there, 0, 0);
    drop(g);
    while RTT_BACK.load(Ordering::Acquire) < want {
        cpu::pause();
    }
}

/// IPI queue round trip (benchmark 4): a function queued for the nearest CPU
/// queues one back; the sender waits with interrupts on, so both ends take the
/// IPI vector. One operation is one round trip.
pub fn ipi_rtt(n: u64, _k: usize) -> Rep {
    let to = partner(false);
    parties::run(&[0], move |_, gate| {
        gate.wait();
        Some(timed(n, rtt, &to))
    })
}

fn nothing(_: usize) {}

fn sync_all(all: &ipi::CpuSet) {
    let g = lwkt::crit_enter::<X86>();
    sched::world().ipi.cpusync(all, nothing, 0);
    drop(g);
}

/// `cpusync` (benchmark 5) of every online CPU (the initiator included) running
/// an empty function. One operation is one cpusync.
pub fn cpusync_all(n: u64, _k: usize) -> Rep {
    let all = sched::online_set();
    parties::run(&[0], move |_, gate| {
        gate.wait();
        Some(timed(n, sync_all, &all))
    })
}

static SHARED: Token = Token::new("bench-shared");
static PRIVATE: [Token; MAX_CPUS] = [const { Token::new("bench-private") }; MAX_CPUS];
/// Touched only under the token in use.
static UNDER: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// A token and the word it protects.
struct Guarded {
    token: &'static Token,
    word: &'static AtomicU64,
}

/// Acquire, touch the protected word, `pause`, release, `pause`. A `pause`
/// is one instruction on hardware; under icount it ends the vCPU's turn, so
/// the other CPUs run while the token is held and between two acquisitions,
/// as they would in parallel. Without them each vCPU would run tens of
/// thousands of instructions alone, rarely finding the token taken.
fn token_op(g: &Guarded) {
    let t = lwkt::gettoken::<X86>(g.token);
    g.word
        .store(g.word.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    cpu::pause();
    drop(t);
    cpu::pause();
}

/// Token acquire and release (benchmark 6) of one shared token by a thread on
/// each of CPUs `0..k` (uncontended at `k` = 1): every acquisition finds the
/// others waiting. One operation is one acquire plus release.
pub fn token_shared(n: u64, k: usize) -> Rep {
    let cpus: Vec<usize> = (0..k).collect();
    parties::run(&cpus, move |_, gate| {
        gate.wait();
        let g = Guarded {
            token: &SHARED,
            word: &UNDER[0],
        };
        Some(timed(n, token_op, &g))
    })
}

/// Scaling (benchmark 9): the token workload with a token per CPU: independent
/// work, which should cost the same on any number of CPUs.
pub fn token_private(n: u64, k: usize) -> Rep {
    let cpus: Vec<usize> = (0..k).collect();
    parties::run(&cpus, move |p, gate| {
        gate.wait();
        let g = Guarded {
            token: &PRIVATE[p],
            word: &UNDER[p],
        };
        Some(timed(n, token_op, &g))
    })
}

/// Interrupts the benchmark's test device handled, and the TSC at the last.
static HANDLED: AtomicU64 = AtomicU64::new(0);
static HANDLED_AT: AtomicU64 = AtomicU64::new(0);

fn on_testdev() {
    HANDLED_AT.store(cpu::rdtsc(), Ordering::Relaxed);
    HANDLED.store(HANDLED.load(Ordering::Relaxed) + 1, Ordering::Release);
}

/// The boot CPU's test device, attached once.
fn testdev() {
    static ATTACHED: Once<()> = Once::new();
    ATTACHED.call_once(|| {
        crate::intr::testdev_attach(0, on_testdev);
    });
}

/// Raises the boot CPU's test device `n` times from a thread on it, each time
/// with `raise` (which returns the TSC the latency counts from), waits for the
/// handler, and sums the latencies.
fn preempt_latency(n: u64, raise: fn() -> u64) -> Rep {
    testdev();
    let raise = core::hint::black_box(raise);
    parties::run(&[0], move |_, gate| {
        gate.wait();
        let mut latency = 0;
        for _ in 0..n {
            let before = HANDLED.load(Ordering::Acquire);
            let t0 = raise();
            while HANDLED.load(Ordering::Acquire) == before {
                cpu::pause();
            }
            latency += HANDLED_AT.load(Ordering::Relaxed) - t0;
        }
        Some(Span {
            start: 0,
            end: latency,
            ops: n,
        })
    })
}

/// Interrupt-thread preemption (benchmark 7): a thread outside any critical
/// section raises the test device's interrupt on its own CPU; the interrupt
/// thread preempts it. One operation is one interrupt; its figure runs from
/// just before the interrupt is raised to the first instruction of the handler
/// in the interrupt thread.
pub fn preempt_intr(n: u64, _k: usize) -> Rep {
    preempt_latency(n, || {
        let t0 = cpu::rdtsc();
        crate::intr::testdev_fire(0);
        t0
    })
}

/// Interrupt-thread preemption (benchmark 7) by an interrupt arriving inside a
/// critical section: it is deferred, and the figure runs from the end of the
/// section (the replay, then the preemption) to the handler.
pub fn preempt_deferred(n: u64, _k: usize) -> Rep {
    preempt_latency(n, || {
        let me = &percpu::mycpu().lwkt;
        let g = lwkt::crit_enter::<X86>();
        crate::intr::testdev_fire(0);
        while me.reqflags() & lwkt::rqf::INTPEND == 0 {
            cpu::pause();
        }
        let t0 = cpu::rdtsc();
        drop(g);
        t0
    })
}

fn create_exit(_: &()) {
    Builder::new("bench-child")
        .spawn::<X86>(|| {})
        .expect("no memory for a thread")
        .join();
}

/// Thread create + exit (benchmark 8): spawn a thread on the same CPU that
/// returns at once, and join it. One operation is the whole life of one thread.
pub fn thread_create_exit(n: u64, _k: usize) -> Rep {
    parties::run(&[0], move |_, gate| {
        gate.wait();
        Some(timed(n, create_exit, &()))
    })
}

/// `iters` turns of a two-instruction loop (`dec; jnz`).
#[inline(always)]
fn spin(iters: u64) {
    // SAFETY: only a register is touched.
    unsafe {
        core::arch::asm!("2:", "dec {0}", "jnz 2b", inout(reg) iters => _, options(nomem, nostack));
    }
}

/// Runs chunks of [`spin()`] until `limit` chunks or `ticks` ticks of this CPU
/// since `ticks0`, whichever comes first; returns the chunks run. One code
/// path for both halves of [`tick`], so they differ only by the ticks.
#[inline(never)]
fn spin_chunks(limit: u64, ticks0: u64, ticks: u64) -> u64 {
    const CHUNK: u64 = 1000;
    let me = percpu::mycpu();
    let mut chunks = 0;
    while chunks < limit && me.ticks.get() - ticks0 < ticks {
        spin(CHUNK);
        chunks += 1;
    }
    chunks
}

/// The clock tick's cost: the boot CPU runs the same loop with its tick on
/// (for `n` ticks) and then off; the difference is what the ticks cost. One
/// operation is one tick. The other CPUs' ticks stay off.
pub fn tick(n: u64, _k: usize) -> Rep {
    parties::run(&[0], move |_, gate| {
        gate.wait();
        let me = percpu::mycpu();
        let ticks0 = me.ticks.get();
        timer::start_local();
        let t0 = cpu::rdtsc();
        let chunks = spin_chunks(u64::MAX, ticks0, n);
        let t1 = cpu::rdtsc();
        let ticks = me.ticks.get() - ticks0;
        timer::stop_local();
        let ticks0 = me.ticks.get();
        let t2 = cpu::rdtsc();
        let again = spin_chunks(chunks, ticks0, n);
        let t3 = cpu::rdtsc();
        assert_eq!(again, chunks, "the tick ran while stopped");
        Some(Span {
            start: 0,
            end: (t1 - t0).saturating_sub(t3 - t2),
            ops: ticks,
        })
    })
}

/// Runs `ubench OP n 0` (a user program timing `n` operations in user mode
/// with the TSC, on the boot CPU) and returns its figure: the program exits
/// with the TSC delta as its code.
fn user_bench(op: &str, n: u64) -> Rep {
    user_bench_on(op, n, 0, n)
}

/// Runs `ubench OP n ARG`; `ops` operations were timed.
fn user_bench_on(op: &str, n: u64, arg: u64, ops: u64) -> Rep {
    let arg = alloc::format!("{op} {n} {arg}");
    let pid = crate::user::process::spawn("ubench", arg.as_bytes(), 0, None)
        .unwrap_or_else(|e| panic!("cannot spawn ubench: {e}"));
    let (_, st) = crate::user::process::wait(0, pid, false).expect("wait for ubench");
    crate::user::process::reap(0, pid);
    assert!(
        st.kind == wyvern_abi::syscall::WaitStatus::EXITED && st.code > 0,
        "ubench {op} {n} ended with {st:?}"
    );
    Rep {
        tsc: st.code as u64,
        ops,
    }
}

/// The null system call, from user mode (one operation: `syscall`, the
/// kernel's entry, dispatch, the way back, `sysret`).
pub fn null_syscall(n: u64, _k: usize) -> Rep {
    user_bench("null", n)
}

/// A user thread creates a thread of its process (on its own CPU) that
/// returns at once, and joins it.
pub fn user_thread_create_exit(n: u64, _k: usize) -> Rep {
    user_bench("thread", n)
}

/// A process spawns `true` from the ramdisk and waits for it: address space,
/// ELF load, first thread on the next CPU in turn, exit, teardown, wait.
pub fn process_spawn_exit(n: u64, _k: usize) -> Rep {
    user_bench("spawn", n)
}

/// A null message round trip in registers between two processes on the
/// boot CPU (`MSG_CALL`, `MSG_REPLY_WAIT`): the client's call hands the CPU
/// straight to the server blocked in receive, and its reply hands it back.
pub fn ipc_rtt_local(n: u64, _k: usize) -> Rep {
    user_bench("ipc-local", n)
}

/// The same round trip with the buffer calls (`MSG_SEND` of empty lists,
/// `MSG_REPLY_RECEIVE`).
pub fn ipc_rtt_local_buf(n: u64, _k: usize) -> Rep {
    user_bench("ipc-local-buf", n)
}

/// A null message round trip, the server on another CPU: the send wakes it
/// through the IPI queue, its reply wakes the client the same way.
pub fn ipc_rtt_cross(n: u64, _k: usize) -> Rep {
    user_bench("ipc-cross", n)
}

/// A pulse sent and received on the boot CPU.
pub fn ipc_pulse(n: u64, _k: usize) -> Rep {
    user_bench("ipc-pulse", n)
}

/// Null round trips on `k` CPUs at once, each CPU's client with its own
/// server thread.
pub fn ipc_null(n: u64, k: usize) -> Rep {
    user_bench_on("ipc-null", n, k as u64, n * k as u64)
}

/// The user scheduler's balancer (`usched-pull`): `n` threads wait for the
/// boot CPU's user turn, which a holder keeps (halting between interrupts,
/// so it adds only what serving the requests costs); CPU 1's user side goes
/// idle, it asks the boot CPU for a thread, the thread is taken off the
/// queue, woken, migrates to CPU 1 and takes the turn there — and blocks,
/// so CPU 1 asks for the next. One operation is one move: the request, the
/// hand-over, the migration, the adoption and the new turn. (The threads are
/// kernel threads made as user threads: the user scheduler is all that
/// runs, no user mode.)
pub fn usched_pull(n: u64, _k: usize) -> Rep {
    const TO: usize = 1;
    parties::run(&[TO], move |_, gate| {
        struct Shared {
            holding: AtomicBool,
            done: AtomicBool,
            arrived: AtomicU64,
            start: AtomicU64,
            end: AtomicU64,
        }
        let sh = Arc::new(Shared {
            holding: AtomicBool::new(false),
            done: AtomicBool::new(false),
            arrived: AtomicU64::new(0),
            start: AtomicU64::new(0),
            end: AtomicU64::new(0),
        });
        let ident = |sh: &Arc<Shared>| core::ptr::from_ref(&sh.done) as usize;
        let user = |name: &'static str, cpu: usize| {
            Builder::new(name)
                .cpu(cpu)
                .priority(lwkt::pri::KERN_USER)
                .user(lwkt::pri::USER)
        };
        // Sleeps until the end (a thread whose turn is over, or the
        // starter), then leaves.
        fn rest(sh: &Shared, ident: usize) {
            while !sh.done.load(Ordering::Acquire) {
                lwkt::tsleep_interlock::<X86>(ident);
                if sh.done.load(Ordering::Acquire) {
                    lwkt::tsleep_cancel::<X86>();
                    break;
                }
                lwkt::tsleep::<X86>(ident, lwkt::INTERLOCKED, "rest", 0);
            }
        }
        let s = sh.clone();
        let holder = user("holder", 0)
            .spawn::<X86>(move || {
                assert!(lwkt::usched::acquire::<X86>());
                s.holding.store(true, Ordering::Release);
                // Keeps the turn: never blocks, halts between interrupts,
                // lets the threads woken here (above it) run.
                while !s.done.load(Ordering::Acquire) {
                    lwkt::yield_now::<X86>();
                    cpu::interrupts_disable();
                    if s.done.load(Ordering::Acquire)
                        || percpu::mycpu().lwkt.resched_wanted()
                        || percpu::mycpu().lwkt.reqflags() & lwkt::rqf::IDLECHECK_MASK != 0
                    {
                        cpu::interrupts_enable();
                    } else {
                        cpu::enable_and_halt();
                    }
                }
            })
            .expect("holder");
        while !sh.holding.load(Ordering::Acquire) {
            lwkt::yield_now::<X86>();
            cpu::pause();
        }
        let movers: Vec<_> = (0..n)
            .map(|_| {
                let s = sh.clone();
                user("mover", 0)
                    .spawn::<X86>(move || {
                        // Waits on the boot CPU, is pulled, takes CPU 1's turn.
                        assert!(lwkt::usched::acquire::<X86>());
                        assert_eq!(percpu::cpu_index() as usize, TO);
                        if s.arrived.fetch_add(1, Ordering::AcqRel) + 1 == n {
                            s.end.store(cpu::rdtsc(), Ordering::Release);
                            lwkt::wakeup::<X86>(core::ptr::from_ref(&s.end) as usize);
                        }
                        rest(&s, ident(&s));
                    })
                    .expect("mover")
            })
            .collect();
        let boot = &percpu::cpu(0).expect("boot CPU").lwkt;
        while u64::from(boot.usched.waiting()) < n {
            lwkt::yield_now::<X86>();
            cpu::pause();
        }
        gate.wait();
        let s = sh.clone();
        let starter = user("starter", TO)
            .spawn::<X86>(move || {
                assert!(lwkt::usched::acquire::<X86>());
                s.start.store(cpu::rdtsc(), Ordering::Release);
                // Blocks: CPU 1's user side is idle, and asks.
                rest(&s, ident(&s));
            })
            .expect("starter");
        // Asleep until the last move (this thread is above the movers on
        // CPU 1, and must not add instructions meanwhile).
        let fin = core::ptr::from_ref(&sh.end) as usize;
        loop {
            lwkt::tsleep_interlock::<X86>(fin);
            if sh.end.load(Ordering::Acquire) != 0 {
                lwkt::tsleep_cancel::<X86>();
                break;
            }
            lwkt::tsleep::<X86>(fin, lwkt::INTERLOCKED, "moves", 0);
        }
        sh.done.store(true, Ordering::Release);
        lwkt::wakeup::<X86>(ident(&sh));
        // The holder halts between interrupts, and the tick is off: an
        // empty message wakes it to see `done`.
        let g = lwkt::crit_enter::<X86>();
        sched::world().ipi.send(0, |_, _| {}, 0, 0);
        drop(g);
        starter.join();
        for m in movers {
            m.join();
        }
        holder.join();
        Some(Span {
            start: sh.start.load(Ordering::Acquire),
            end: sh.end.load(Ordering::Acquire),
            ops: n,
        })
    })
}
