//! Tokens, interrupt threads and preemption, timeouts, and the instruments
//! (trace rings, rank checking, console keys, stress mode) on the real machine.

use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use lwkt::Token;

use super::{Expect, SelfTest, join_all, ncpus, spawn_on};
use crate::percpu;
use crate::sched::X86;
use crate::sync::{LockClass, SpinLock};
use crate::{check, println, smp};

pub static TESTS: &[SelfTest] = &[
    SelfTest {
        name: "token-pair",
        expect: Expect::Return,
        run: token_pair,
    },
    SelfTest {
        name: "token-block",
        expect: Expect::Return,
        run: token_block,
    },
    SelfTest {
        name: "token-abba",
        expect: Expect::Return,
        run: token_abba,
    },
    SelfTest {
        name: "preempt",
        expect: Expect::Return,
        run: preempt,
    },
    SelfTest {
        name: "timeouts",
        expect: Expect::Return,
        run: timeouts,
    },
    SelfTest {
        name: "callout",
        expect: Expect::Return,
        run: callout_periodic,
    },
    SelfTest {
        name: "trace-panic",
        expect: Expect::Panic,
        run: trace_panic,
    },
    SelfTest {
        name: "rank-violation",
        expect: Expect::Panic,
        run: rank_violation,
    },
    SelfTest {
        name: "console",
        expect: Expect::Return,
        run: console,
    },
    SelfTest {
        name: "stress",
        expect: Expect::Return,
        run: stress,
    },
];

static PAIR: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
static PAIR_TOKEN: Token = Token::new("pair");

/// Every CPU increments a pair of counters, kept equal under one token, 20,000
/// times: the pair never differs, the total is exact.
fn token_pair() {
    const N: u64 = 20_000;
    let n = ncpus();
    let refs = (0..n)
        .map(|c| {
            spawn_on(c, "pair", move || {
                for _ in 0..N {
                    let _t = lwkt::gettoken::<X86>(&PAIR_TOKEN);
                    let a = PAIR[0].load(Ordering::Relaxed);
                    check!(a == PAIR[1].load(Ordering::Relaxed), "pair torn on cpu{c}");
                    PAIR[0].store(a + 1, Ordering::Relaxed);
                    core::hint::black_box(a);
                    PAIR[1].store(a + 1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    join_all(refs);
    let total = PAIR[0].load(Ordering::Relaxed);
    check!(
        total == N * n as u64 && PAIR[1].load(Ordering::Relaxed) == total,
        "total {total}"
    );
    let colls: u64 = percpu::online()
        .map(|c| c.lwkt.stats.token_collisions.get())
        .sum();
    println!(
        "token-pair: {n} CPUs x {N} increments, total exact; {} collisions on the token ({colls} on CPUs)",
        PAIR_TOKEN.collisions()
    );
}

static BLOCK_TOKEN: Token = Token::new("block");

/// A holder that blocks gives the token up (another thread takes it
/// meanwhile) and has it back before it runs again.
fn token_block() {
    let other_cpu = ncpus() - 1;
    let taken_meanwhile = Arc::new(AtomicBool::new(false));
    let holding = Arc::new(AtomicBool::new(false));
    let t2 = taken_meanwhile.clone();
    let h2 = holding.clone();
    let holder = spawn_on(0, "holder", move || {
        let _t = lwkt::gettoken::<X86>(&BLOCK_TOKEN);
        h2.store(true, Ordering::SeqCst);
        // Block while holding: the other thread must get the token now.
        let ok = crate::selftest::smp::wait_for(10_000, || t2.load(Ordering::SeqCst));
        check!(ok, "the token was not released while its holder slept");
        check!(BLOCK_TOKEN.is_held(), "woke without the token");
        check!(
            lwkt::current::<X86>().tokens_held() == 1,
            "token stack lost its entry"
        );
    });
    let ok = crate::selftest::smp::wait_for(10_000, || holding.load(Ordering::SeqCst));
    check!(ok, "holder never took the token");
    let taker = spawn_on(other_cpu, "taker", move || {
        let _t = lwkt::gettoken::<X86>(&BLOCK_TOKEN);
        taken_meanwhile.store(true, Ordering::SeqCst);
    });
    taker.join();
    holder.join();
    check!(!BLOCK_TOKEN.is_held(), "token still held");
    println!("token-block: a sleeping holder released the token and had it back on waking");
}

static TA: Token = Token::new("A");
static TB: Token = Token::new("B");

/// Threads on every CPU take {A, B} and {B, A} alternately, yielding between:
/// all finish.
fn token_abba() {
    const N: u32 = 2000;
    let n = ncpus().max(2);
    let refs = (0..n)
        .map(|i| {
            spawn_on(i % ncpus(), "abba", move || {
                let (first, second) = if i % 2 == 0 { (&TA, &TB) } else { (&TB, &TA) };
                for _ in 0..N {
                    let _a = lwkt::gettoken::<X86>(first);
                    lwkt::yield_now::<X86>();
                    let _b = lwkt::gettoken::<X86>(second);
                }
            })
        })
        .collect();
    join_all(refs);
    check!(!TA.is_held() && !TB.is_held(), "tokens left held");
    println!(
        "token-abba: {n} threads x {N} ABBA acquisitions completed; collisions A {} B {}",
        TA.collisions(),
        TB.collisions()
    );
}

static HANDLED: AtomicU64 = AtomicU64::new(0);

fn count_handled() {
    HANDLED.fetch_add(1, Ordering::SeqCst);
}

static PREEMPT_TOKEN: Token = Token::new("victim");

/// The test device's interrupt thread preempts a busy thread that never
/// yields (a hit; the victim resumes still holding its token); inside a
/// critical section the preemption is refused (a miss) and the interrupt
/// thread runs at the section's end.
fn preempt() {
    let c = ncpus() - 1;
    crate::intr::testdev_attach(c, count_handled);
    let victim = spawn_on(c, "victim", move || {
        let me = percpu::mycpu();
        let _t = lwkt::gettoken::<X86>(&PREEMPT_TOKEN);
        // 1. Outside a critical section: spin without yielding until the
        //    interrupt thread has run. Only a preemption lets it.
        let (h0, m0) = (
            me.lwkt.stats.preempt_hit.get(),
            me.lwkt.stats.preempt_miss.get(),
        );
        let before = HANDLED.load(Ordering::SeqCst);
        crate::intr::testdev_fire(c);
        let end = crate::arch::cpu::rdtsc() + crate::arch::tsc::ns_to_ticks(5_000_000_000);
        while HANDLED.load(Ordering::SeqCst) == before {
            check!(
                crate::arch::cpu::rdtsc() < end,
                "the interrupt thread never preempted the busy thread"
            );
            crate::arch::cpu::pause();
        }
        check!(
            me.lwkt.stats.preempt_hit.get() > h0,
            "preemption not counted as a hit"
        );
        check!(
            PREEMPT_TOKEN.is_held() && lwkt::current::<X86>().tokens_held() == 1,
            "lost the token across the preemption"
        );
        // 2. Inside a critical section: the interrupt is deferred, the
        //    preemption refused, and the interrupt thread runs when the
        //    section ends.
        let g = lwkt::crit_enter::<X86>();
        let before = HANDLED.load(Ordering::SeqCst);
        let h1 = me.lwkt.stats.preempt_hit.get();
        crate::intr::testdev_fire(c);
        let t = crate::arch::cpu::rdtsc() + crate::arch::tsc::ns_to_ticks(30_000_000);
        while crate::arch::cpu::rdtsc() < t {
            crate::arch::cpu::pause();
        }
        check!(
            HANDLED.load(Ordering::SeqCst) == before,
            "interrupt thread ran inside a critical section"
        );
        drop(g);
        check!(
            HANDLED.load(Ordering::SeqCst) == before + 1,
            "deferred interrupt thread did not run at crit_exit"
        );
        check!(
            me.lwkt.stats.preempt_miss.get() > m0,
            "deferred preemption not counted as a miss"
        );
        // Refused once (a miss); the switch at the section's end is not
        // also a hit (DragonFly's meaning of the counters).
        check!(
            me.lwkt.stats.preempt_hit.get() == h1,
            "a refused preemption was counted a hit too"
        );
        check!(
            PREEMPT_TOKEN.is_held(),
            "lost the token across the deferred preemption"
        );
        println!(
            "preempt: cpu{c} hits {} misses {} (a busy thread preempted; a critical section deferred it)",
            me.lwkt.stats.preempt_hit.get() - h0,
            me.lwkt.stats.preempt_miss.get() - m0
        );
    });
    victim.join();
    // 3. At a chosen rate: the tick fires the device every 3 ticks for a while.
    let before = HANDLED.load(Ordering::SeqCst);
    crate::intr::testdev_periodic(c, 3);
    smp::wait_ticks(31);
    crate::intr::testdev_periodic(c, 0);
    let n = HANDLED.load(Ordering::SeqCst) - before;
    check!(
        (8..=12).contains(&n),
        "periodic test device ran {n} times in 31 ticks at 1 every 3"
    );
    println!("preempt: periodic test device every 3 ticks ran {n} times in 31 ticks");
}

/// On every CPU, sleeps of 1, 2, 5 and 10 ticks time out within one tick of
/// their deadline.
fn timeouts() {
    let n = ncpus();
    let worst = Arc::new(AtomicU64::new(0));
    let refs = (0..n)
        .map(|c| {
            let worst = worst.clone();
            spawn_on(c, "timeout", move || {
                let me = percpu::mycpu();
                for k in [1u64, 2, 5, 10, 3] {
                    let t0 = me.lwkt.ticks();
                    let ident = core::ptr::from_ref(me) as usize + 1;
                    let r = lwkt::tsleep::<X86>(ident, 0, "timeout", k);
                    let late = me.lwkt.ticks() - (t0 + k);
                    check!(
                        r == lwkt::Wake::TimedOut,
                        "cpu{c}: {k}-tick sleep was woken"
                    );
                    check!(
                        me.lwkt.ticks() >= t0 + k,
                        "cpu{c}: {k}-tick sleep ended early"
                    );
                    check!(late <= 1, "cpu{c}: {k}-tick sleep ended {late} ticks late");
                    worst.fetch_max(late, Ordering::Relaxed);
                }
            })
        })
        .collect();
    join_all(refs);
    println!(
        "timeouts: on {n} CPUs every sleep timed out within {} tick(s) of its deadline",
        worst.load(Ordering::Relaxed)
    );
}

static FIRED: [AtomicU64; crate::percpu::MAX_CPUS] =
    [const { AtomicU64::new(0) }; crate::percpu::MAX_CPUS];
static LATE: AtomicU64 = AtomicU64::new(0);
static CALLOUTS: [lwkt::callout::Callout<X86>; crate::percpu::MAX_CPUS] =
    [const { lwkt::callout::Callout::new() }; crate::percpu::MAX_CPUS];

/// A periodic callout: it re-arms itself for the next tick until it has run 50
/// times; `arg` is the tick it was due at.
fn periodic(due: usize) {
    let me = percpu::mycpu();
    let c = me.index() as usize;
    let now = me.lwkt.ticks();
    LATE.fetch_max(now - due as u64, Ordering::Relaxed);
    if FIRED[c].fetch_add(1, Ordering::Relaxed) + 1 < 50 {
        lwkt::callout::reset::<X86>(&CALLOUTS[c], 1, periodic, (now + 1) as usize);
    }
}

/// Every CPU runs a self-re-arming callout 50 times, each on the tick it was
/// due.
fn callout_periodic() {
    let n = ncpus();
    let refs = (0..n)
        .map(|c| {
            spawn_on(c, "callout", move || {
                let now = percpu::mycpu().lwkt.ticks();
                lwkt::callout::reset::<X86>(&CALLOUTS[c], 1, periodic, (now + 1) as usize);
                smp::wait_ticks(60);
                check!(
                    FIRED[c].load(Ordering::Relaxed) == 50,
                    "cpu{c}: callout ran {} times",
                    FIRED[c].load(Ordering::Relaxed)
                );
            })
        })
        .collect();
    join_all(refs);
    let late = LATE.load(Ordering::Relaxed);
    check!(late <= 1, "a periodic callout ran {late} ticks late");
    println!("callout: 50 periodic runs on each of {n} CPUs, at most {late} tick late");
}

/// A panic on the last CPU: the report must show every CPU's trace ring.
fn trace_panic() {
    let c = ncpus() - 1;
    // Something in every ring first.
    let refs = (0..ncpus())
        .map(|i| spawn_on(i, "tracer", lwkt::yield_now::<X86>))
        .collect();
    join_all(refs);
    let r = spawn_on(c, "doomed", move || {
        crate::trace!(crate::trace::Event::Mark, 0xdead);
        panic!("deliberate panic on cpu{c} for the trace-ring test");
    });
    r.join();
}

static LOW: LockClass = LockClass::new("test-low", 1);
static HIGH: LockClass = LockClass::new("test-high", 2);
static LOW_LOCK: SpinLock<()> = SpinLock::ranked(&LOW, ());
static HIGH_LOCK: SpinLock<()> = SpinLock::ranked(&HIGH, ());

/// Taking a lower-ranked spinlock under a higher one must panic with both
/// names (the checker is on in the test kernel).
fn rank_violation() {
    {
        let _l = LOW_LOCK.lock();
        let _h = HIGH_LOCK.lock();
    }
    println!("rank-violation: low then high is fine; now high then low");
    let _h = HIGH_LOCK.lock();
    let _l = LOW_LOCK.lock();
}

/// The console keys answer (the host types `s`, `t`, `i`, `q`).
fn console() {
    check!(crate::console::has_serial(), "no COM1");
    crate::console::keys::serve();
}

/// The token stress mode for one second: every CPU makes progress; with more
/// than one CPU the token collides.
fn stress() {
    let kind = crate::stress::Kind::Token;
    let r = crate::stress::run(kind, 1);
    crate::stress::print(kind, 1, &r);
    check!(r.iter().all(|c| c.ops > 0), "a CPU made no progress");
    if r.len() > 1 {
        check!(
            r.iter().map(|c| c.collisions).sum::<u64>() > 0,
            "no token collision with {} CPUs",
            r.len()
        );
    }
}
