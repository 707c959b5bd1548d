//! Host tests of the scheduler on the simulated machine (`sim`).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::vec::Vec;

use crate::sim::{self, Sim, poll, run, this_machine};
use crate::thread::{Thread, flags, pri};
use crate::{Builder, Sema, Token, Wake, crit_enter, current, yield_now};

type S = Sim;

fn cpu() -> usize {
    <Sim as crate::Machine>::mycpu().index()
}

fn stats(c: usize) -> crate::CpuStatsSnapshot {
    this_machine().cpus[c].stats.snapshot()
}

/// Polls (lets interrupts in) and yields to equal threads on this CPU (kernel
/// threads are not preempted by their equals) until `cond` or a deadline.
pub(crate) fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t = std::time::Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        poll();
        yield_now::<S>();
        std::thread::yield_now();
    }
}

#[test]
fn run_queue_orders_by_priority_and_rotates_within_one() {
    let threads: Vec<&'static Thread<S>> = (0..6)
        .map(|_| &*Box::leak(Box::new(Thread::blank())))
        .collect();
    for (td, p) in threads.iter().zip([5u8, 12, 12, 28, 5, 12]) {
        td.pri.store(p, Ordering::Relaxed);
    }
    let q = crate::runq::RunQueue::<S>::new();
    assert!(q.best().is_none());
    for td in &threads {
        q.push_tail(td);
    }
    assert_eq!(q.len(), 6);
    let order = |q: &crate::runq::RunQueue<S>| {
        let mut v = Vec::new();
        let mut p = q.best();
        while let Some(t) = p {
            v.push(threads.iter().position(|x| std::ptr::eq(*x, t)).unwrap());
            p = q.next_after(t);
        }
        v
    };
    assert_eq!(order(&q), vec![3, 1, 2, 5, 0, 4]);
    q.rotate(threads[1]);
    assert_eq!(order(&q), vec![3, 2, 5, 1, 0, 4]);
    q.remove(threads[3]);
    assert_eq!(q.best_priority(), Some(12));
    q.remove(threads[2]);
    q.remove(threads[5]);
    q.remove(threads[1]);
    assert_eq!(order(&q), vec![0, 4]);
    q.remove(threads[0]);
    q.remove(threads[4]);
    assert!(q.is_empty());
    assert_eq!(q.len(), 0);
}

#[test]
fn run_queue_rotates_and_unlinks_anywhere_in_a_level() {
    let threads: Vec<&'static Thread<S>> = (0..5)
        .map(|_| &*Box::leak(Box::new(Thread::blank())))
        .collect();
    for (td, p) in threads.iter().zip([7u8, 7, 7, 7, 3]) {
        td.pri.store(p, Ordering::Relaxed);
    }
    let q = crate::runq::RunQueue::<S>::new();
    let order = |q: &crate::runq::RunQueue<S>| {
        let mut v = Vec::new();
        let mut p = q.best();
        while let Some(t) = p {
            v.push(threads.iter().position(|x| std::ptr::eq(*x, t)).unwrap());
            p = q.next_after(t);
        }
        v
    };
    // Alone at its level: a rotation changes nothing.
    q.push_tail(threads[4]);
    q.rotate(threads[4]);
    assert_eq!(order(&q), vec![4]);
    assert!(!q.has_peer_after(threads[4]));
    for td in &threads[..4] {
        q.push_tail(td);
    }
    assert_eq!(order(&q), vec![0, 1, 2, 3, 4]);
    // The head, a middle thread and the tail.
    q.rotate(threads[0]);
    assert_eq!(order(&q), vec![1, 2, 3, 0, 4]);
    q.rotate(threads[2]);
    assert_eq!(order(&q), vec![1, 3, 0, 2, 4]);
    q.rotate(threads[2]);
    assert_eq!(order(&q), vec![1, 3, 0, 2, 4]);
    assert!(q.has_peer_after(threads[0]));
    assert!(!q.has_peer_after(threads[2]));
    assert_eq!(q.len(), 5);
    // Unlinking the middle, the tail and the head keeps the rest in order.
    q.remove(threads[3]);
    assert_eq!(order(&q), vec![1, 0, 2, 4]);
    q.remove(threads[2]);
    assert_eq!(order(&q), vec![1, 0, 4]);
    q.remove(threads[1]);
    assert_eq!(order(&q), vec![0, 4]);
    q.push_tail(threads[3]);
    assert_eq!(order(&q), vec![0, 3, 4]);
    q.remove(threads[0]);
    q.remove(threads[3]);
    assert_eq!(q.best_priority(), Some(3));
    q.remove(threads[4]);
    assert!(q.is_empty());
    assert_eq!(q.len(), 0);
}

#[test]
fn yield_ping_pong_alternates_on_one_cpu() {
    let log = run(1, None, || {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut refs = Vec::new();
        for id in 0..2u32 {
            let log = log.clone();
            refs.push(
                Builder::new("pingpong")
                    .spawn::<S>(move || {
                        for _ in 0..100 {
                            log.lock().unwrap().push(id);
                            yield_now::<S>();
                        }
                    })
                    .unwrap(),
            );
        }
        for r in &refs {
            r.join();
        }
        log.lock().unwrap().clone()
    });
    assert_eq!(log.len(), 200);
    for w in log.windows(2) {
        assert_ne!(w[0], w[1], "yield did not alternate: {log:?}");
    }
}

#[test]
fn scheduler_clock_round_robins_equal_threads() {
    run(1, Some(Duration::from_millis(1)), || {
        let counts: Arc<[AtomicU64; 3]> = Arc::new([const { AtomicU64::new(0) }; 3]);
        let stop = Arc::new(AtomicBool::new(false));
        let refs: Vec<_> = (0..3)
            .map(|i| {
                let (counts, stop) = (counts.clone(), stop.clone());
                Builder::new("spinner")
                    .spawn::<S>(move || {
                        while !stop.load(Ordering::Relaxed) {
                            counts[i].fetch_add(1, Ordering::Relaxed);
                            poll();
                            crate::lwkt_yield::<S>();
                        }
                    })
                    .unwrap()
            })
            .collect();
        // The test thread sleeps on ticks meanwhile.
        crate::tsleep::<S>(0x1000, 0, "wait", 50);
        stop.store(true, Ordering::Relaxed);
        for r in &refs {
            r.join();
        }
        for (i, c) in counts.iter().enumerate() {
            assert!(c.load(Ordering::Relaxed) > 0, "spinner {i} never ran");
        }
        assert!(stats(0).ticks >= 10);
    });
}

static ORDER: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
static HIGH_SEMA: Sema = Sema::new(0);
static HIGHER_SEMA: Sema = Sema::new(0);
static HIGH: AtomicUsize = AtomicUsize::new(0);
static HIGHER: AtomicUsize = AtomicUsize::new(0);

fn wake_high(_v: u8) {
    crate::schedule::<S>(
        crate::slab::deref(HIGH.load(Ordering::SeqCst) as *mut Thread<S>).unwrap(),
    );
}

fn wake_higher(_v: u8) {
    crate::schedule::<S>(
        crate::slab::deref(HIGHER.load(Ordering::SeqCst) as *mut Thread<S>).unwrap(),
    );
}

/// A device interrupt preempts a running thread with its interrupt thread,
/// which is itself preempted by a higher one; each resumes the one it
/// preempted when it blocks.
#[test]
fn preemption_chain_unwinds_in_order() {
    run(1, None, || {
        ORDER.lock().unwrap().clear();
        let m = this_machine();
        m.devices.lock().unwrap().push((3, wake_high));
        m.devices.lock().unwrap().push((4, wake_higher));
        // Interrupt threads: block until scheduled by their device.
        let mk = |name: &'static str,
                  p: u8,
                  slot: &'static AtomicUsize,
                  sema: &'static Sema,
                  irq: Option<u8>| {
            Builder::new(name)
                .priority(p)
                .preemptable()
                .spawn::<S>(move || {
                    let g = crit_enter::<S>();
                    crate::sched::deschedule_self(&g);
                    slot.store(crate::slab::ptr(current::<S>()) as usize, Ordering::SeqCst);
                    crate::switch::<S>();
                    drop(g);
                    ORDER.lock().unwrap().push(name);
                    if let Some(v) = irq {
                        // While we run, a higher interrupt arrives.
                        this_machine().raise(0, v);
                        poll();
                    }
                    ORDER.lock().unwrap().push(if name == "high" {
                        "high-end"
                    } else {
                        "higher-end"
                    });
                    sema.post::<S>();
                })
                .unwrap()
        };
        let high = mk("high", pri::INT, &HIGH, &HIGH_SEMA, Some(4));
        let higher = mk("higher", pri::INT + 2, &HIGHER, &HIGHER_SEMA, None);
        wait_until("interrupt threads to block", || {
            HIGH.load(Ordering::SeqCst) != 0 && HIGHER.load(Ordering::SeqCst) != 0
        });
        yield_now::<S>();
        let before = stats(0);
        ORDER.lock().unwrap().push("low");
        m.raise(0, 3);
        poll();
        ORDER.lock().unwrap().push("low-resumed");
        let after = stats(0);
        assert_eq!(
            *ORDER.lock().unwrap(),
            vec![
                "low",
                "high",
                "higher",
                "higher-end",
                "high-end",
                "low-resumed"
            ]
        );
        // Each granted at its interrupt's end: two hits, nothing refused.
        assert_eq!(after.preempt_hit - before.preempt_hit, 2, "{after:?}");
        assert_eq!(after.preempt_miss, before.preempt_miss, "{after:?}");
        HIGH_SEMA.wait::<S>();
        HIGHER_SEMA.wait::<S>();
        high.join();
        higher.join();
    });
}

static DEFERRED_SEMA: Sema = Sema::new(0);
static DEFERRED_TD: AtomicUsize = AtomicUsize::new(0);
static DEFERRED_RAN: AtomicBool = AtomicBool::new(false);

fn wake_deferred(_v: u8) {
    crate::schedule::<S>(
        crate::slab::deref(DEFERRED_TD.load(Ordering::SeqCst) as *mut Thread<S>).unwrap(),
    );
}

/// Interrupts inside a critical section are deferred — ticks counted, IPIs and
/// device interrupts held — and replayed at its end, with the preemption the
/// device interrupt wanted: refused in the replay's critical section (one
/// miss, as DragonFly's `splz` counts it), the interrupt thread runs when the
/// section ends — a switch, not also a hit.
#[test]
fn critical_section_defers_interrupts_and_replays_them() {
    run(2, None, || {
        let m = this_machine();
        m.devices.lock().unwrap().push((7, wake_deferred));
        let ithread = Builder::new("ithread")
            .priority(pri::INT)
            .preemptable()
            .spawn::<S>(|| {
                let g = crit_enter::<S>();
                crate::sched::deschedule_self(&g);
                DEFERRED_TD.store(crate::slab::ptr(current::<S>()) as usize, Ordering::SeqCst);
                crate::switch::<S>();
                drop(g);
                DEFERRED_RAN.store(true, Ordering::SeqCst);
                DEFERRED_SEMA.post::<S>();
            })
            .unwrap();
        wait_until("ithread to block", || {
            DEFERRED_TD.load(Ordering::SeqCst) != 0
        });
        let before = stats(0);
        let g = crit_enter::<S>();
        for _ in 0..5 {
            m.tick(0);
        }
        m.raise(0, 7);
        poll();
        poll();
        // A message from CPU 1 arrives too.
        let got = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicBool::new(false));
        let (g2, s2) = (got.clone(), sent.clone());
        // Spawning on another CPU only queues a message to it: no blocking
        // here, which would let other threads (and the deferred work) run.
        let sender = Builder::new("sender")
            .cpu(1)
            .spawn::<S>(move || {
                let p = Arc::into_raw(g2) as usize;
                let c = crit_enter::<S>();
                <S as crate::Machine>::world().ipi.send(
                    0,
                    |p, _| {
                        // SAFETY: a leaked Arc from the test.
                        #[allow(unsafe_code)]
                        let a = unsafe { Arc::from_raw(p as *const AtomicBool) };
                        a.store(true, Ordering::SeqCst);
                    },
                    p,
                    0,
                );
                drop(c);
                s2.store(true, Ordering::SeqCst);
            })
            .unwrap();
        let t = std::time::Instant::now();
        while !sent.load(Ordering::SeqCst) {
            assert!(t.elapsed() < Duration::from_secs(30), "sender never ran");
            std::thread::yield_now();
        }
        for _ in 0..20 {
            poll();
            std::thread::yield_now();
        }
        let mid = stats(0);
        assert!(
            !DEFERRED_RAN.load(Ordering::SeqCst),
            "the interrupt thread ran inside the critical section"
        );
        assert!(
            !got.load(Ordering::SeqCst),
            "an IPI message ran inside the critical section"
        );
        assert_eq!(
            mid.ticks, before.ticks,
            "ticks were taken inside the critical section"
        );
        drop(g);
        let after = stats(0);
        assert!(
            DEFERRED_RAN.load(Ordering::SeqCst),
            "the deferred interrupt thread did not run at crit_exit"
        );
        assert!(
            got.load(Ordering::SeqCst),
            "the deferred IPI was not processed at crit_exit"
        );
        assert_eq!(after.ticks_replayed - before.ticks_replayed, 5);
        assert_eq!(after.ticks - before.ticks, 5);
        assert_eq!(after.irqs_replayed - before.irqs_replayed, 1);
        assert!(after.ipiq_replayed > before.ipiq_replayed);
        assert_eq!(after.preempt_miss - before.preempt_miss, 1, "{after:?}");
        assert_eq!(after.preempt_hit, before.preempt_hit, "{after:?}");
        DEFERRED_SEMA.wait::<S>();
        ithread.join();
        sender.join();
    });
}

#[test]
fn a_thread_migrates_round_robin_over_every_cpu() {
    run(4, None, || {
        let r = Builder::new("migrant")
            .spawn::<S>(|| {
                for hop in 0..40 {
                    let to = (hop + 1) % 4;
                    crate::migrate_self::<S>(to);
                    assert_eq!(cpu(), to, "after migrating to cpu{to}");
                    assert_eq!(current::<S>().cpu(), to);
                }
            })
            .unwrap();
        r.join();
        assert!(r.has_exited());
    });
}

/// Threads on every CPU take turns through semaphores and sleep/wakeup as fast
/// as they can: every wait is matched by exactly one post, nothing is lost,
/// nobody runs on two CPUs at once (the switch asserts it).
#[test]
fn wakeups_racing_sleeps_lose_nothing() {
    const N: u64 = 2000;
    run(4, None, || {
        let semas: Arc<Vec<Sema>> = Arc::new((0..4).map(|_| Sema::new(0)).collect());
        let total = Arc::new(AtomicU64::new(0));
        let refs: Vec<_> = (0..4usize)
            .map(|i| {
                let (semas, total) = (semas.clone(), total.clone());
                Builder::new("ring")
                    .cpu(i)
                    .spawn::<S>(move || {
                        for _ in 0..N {
                            semas[(i + 1) % 4].post::<S>();
                            semas[i].wait::<S>();
                            total.fetch_add(1, Ordering::Relaxed);
                            if total.load(Ordering::Relaxed) % 7 == 0 {
                                poll();
                            }
                        }
                    })
                    .unwrap()
            })
            .collect();
        for r in &refs {
            r.join();
        }
        assert_eq!(total.load(Ordering::Relaxed), 4 * N);
        for s in semas.iter() {
            assert_eq!(s.count(), 0);
        }
    });
}

/// A flag a storm's sleeper waits on, aligned as a direct sleep's ident
/// must be.
#[repr(align(64))]
struct Slot(AtomicU32);

/// Eight sleepers on four CPUs each wait `rounds` times for their own flag
/// to reach the round, with `interlock` as the first half of the sleep;
/// `wake(round, i, sleeper, ident)` wakes sleeper `i` after its flag was
/// set. Every sleeper must finish every round. Runs on the simulated
/// machine (inside `run`).
fn sleep_storm(
    rounds: u32,
    interlock: fn(usize),
    wake: impl Fn(u32, usize, &crate::ThreadRef<S>, usize),
) {
    let slots: Arc<Vec<Slot>> = Arc::new((0..8).map(|_| Slot(AtomicU32::new(0))).collect());
    let done = Arc::new(AtomicU32::new(0));
    let mut refs = Vec::new();
    for i in 0..8usize {
        let (sl, done) = (slots.clone(), done.clone());
        refs.push(
            Builder::new("sleeper")
                .cpu(i % 4)
                .spawn::<S>(move || {
                    let ident = &sl[i] as *const Slot as usize;
                    for r in 1..=rounds {
                        loop {
                            interlock(ident);
                            if sl[i].0.load(Ordering::SeqCst) >= r {
                                crate::tsleep_cancel::<S>();
                                break;
                            }
                            crate::tsleep::<S>(ident, crate::INTERLOCKED, "storm", 0);
                        }
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                })
                .unwrap(),
        );
    }
    for r in 1..=rounds {
        for (i, sl) in slots.iter().enumerate() {
            sl.0.store(r, Ordering::SeqCst);
            wake(r, i, &refs[i], sl as *const Slot as usize);
        }
        wait_until("sleepers to finish the round", || {
            done.load(Ordering::SeqCst) >= 8 * r
        });
    }
    for r in &refs {
        r.join();
    }
}

/// A raw interlocked sleep/wakeup storm: sleepers on all CPUs wait for their
/// own flag; wakers set flags and wake; every sleeper wakes every round.
#[test]
fn tsleep_interlock_never_loses_a_wakeup() {
    run(4, None, || {
        sleep_storm(500, crate::tsleep_interlock::<S>, |_, _, _, ident| {
            crate::wakeup::<S>(ident)
        });
    });
}

/// Direct sleeps (the IPC records'): the same storm across 4 CPUs woken by
/// `wakeup_thread` loses nothing, `wakeup_thread_at` sets the priority it
/// carries, and neither a hash `wakeup` of the same ident nor a
/// `wakeup_thread` of another ident ends a direct sleep.
#[test]
fn direct_sleeps_never_lose_a_wakeup_and_only_their_waker_ends_them() {
    run(4, Some(Duration::from_millis(1)), || {
        sleep_storm(
            300,
            crate::sleep::tsleep_interlock_direct::<S>,
            |r, _, td, ident| {
                if r % 2 == 0 {
                    crate::sleep::wakeup_thread::<S>(td.thread(), ident);
                } else {
                    crate::sleep::wakeup_thread_at::<S>(td.thread(), ident, pri::KERN_DAEMON);
                }
            },
        );

        // Who may end a direct sleep, on another CPU: not a hash wakeup,
        // not a wakeup of another ident; the priority comes with the right
        // one.
        let slot = Box::leak(Box::new(Slot(AtomicU32::new(0))));
        let ident = slot as *const Slot as usize;
        let phase = Arc::new(AtomicU32::new(0));
        let ph = phase.clone();
        let t = Builder::new("direct")
            .cpu(1)
            .priority(pri::KERN_DAEMON)
            .spawn::<S>(move || {
                crate::sleep::tsleep_interlock_direct::<S>(ident);
                ph.store(1, Ordering::SeqCst);
                // Only the timeout ends this one.
                assert_eq!(
                    crate::tsleep::<S>(ident, crate::INTERLOCKED, "t", 20),
                    Wake::TimedOut
                );
                crate::sleep::tsleep_interlock_direct::<S>(ident);
                ph.store(2, Ordering::SeqCst);
                assert_eq!(
                    crate::tsleep::<S>(ident, crate::INTERLOCKED, "w", 0),
                    Wake::Woken
                );
                assert_eq!(current::<S>().priority(), pri::KERN_DAEMON + 2);
                ph.store(3, Ordering::SeqCst);
            })
            .unwrap();
        wait_until("the first sleep", || phase.load(Ordering::SeqCst) == 1);
        crate::wakeup::<S>(ident);
        crate::sleep::wakeup_thread::<S>(t.thread(), ident + 64);
        wait_until("the second sleep", || phase.load(Ordering::SeqCst) == 2);
        // Let it block, then wake it at a new priority.
        crate::tsleep::<S>(0xbeef8, 0, "pause", 3);
        crate::sleep::wakeup_thread_at::<S>(t.thread(), ident, pri::KERN_DAEMON + 2);
        wait_until("the wakeup", || phase.load(Ordering::SeqCst) == 3);
        t.join();
    });
}

#[test]
fn sleep_timeouts_fire() {
    run(2, Some(Duration::from_millis(1)), || {
        let t0 = <S as crate::Machine>::mycpu().ticks();
        let r = crate::tsleep::<S>(0xdead0, 0, "timeout", 5);
        let t1 = <S as crate::Machine>::mycpu().ticks();
        assert_eq!(r, Wake::TimedOut);
        assert!(t1 - t0 >= 5, "woke after {} ticks", t1 - t0);
        // A wakeup before the timeout wins.
        let me = crate::ThreadRef::new(current::<S>());
        let waker = Builder::new("waker")
            .cpu(1)
            .spawn::<S>(move || {
                crate::tsleep::<S>(0xbeef0, 0, "pause", 2);
                crate::wakeup::<S>(0xdead8);
                drop(me);
            })
            .unwrap();
        let r = crate::tsleep::<S>(0xdead8, 0, "woken", 10_000);
        assert_eq!(r, Wake::Woken);
        waker.join();
        assert!(!current::<S>().timeout.is_armed());
    });
}

/// `interrupt` ends an interruptible sleep on another CPU, makes the next one
/// return at once until cleared, and leaves plain sleeps alone.
#[test]
fn interrupt_ends_interruptible_sleeps_only() {
    run(2, Some(Duration::from_millis(1)), || {
        let asleep = Arc::new(AtomicUsize::new(0));
        let a = asleep.clone();
        let sleeper = Builder::new("sleeper")
            .cpu(1)
            .spawn::<S>(move || {
                a.store(1, Ordering::SeqCst);
                // Woken only by the interrupt (no wakeup, no timeout).
                assert_eq!(
                    crate::tsleep::<S>(0xfeed0, crate::INTERRUPTIBLE, "intr", 0),
                    Wake::Interrupted
                );
                assert!(crate::interrupt_requested::<S>());
                // Still requested: the next interruptible sleep returns at once.
                assert_eq!(
                    crate::tsleep::<S>(0xfeed0, crate::INTERRUPTIBLE, "again", 0),
                    Wake::Interrupted
                );
                // A plain sleep is not interrupted: it times out.
                assert_eq!(crate::tsleep::<S>(0xfeed0, 0, "plain", 3), Wake::TimedOut);
                crate::clear_interrupt::<S>();
                assert_eq!(
                    crate::tsleep::<S>(0xfeed0, crate::INTERRUPTIBLE, "cleared", 3),
                    Wake::TimedOut
                );
                a.store(2, Ordering::SeqCst);
            })
            .unwrap();
        wait_until("the sleeper to start", || {
            asleep.load(Ordering::SeqCst) == 1
        });
        // Let it reach its sleep, then interrupt it from this CPU.
        crate::tsleep::<S>(0xbeef8, 0, "pause", 3);
        crate::interrupt::<S>(&sleeper);
        wait_until("the sleeper to finish", || {
            asleep.load(Ordering::SeqCst) == 2
        });
        sleeper.join();
    });
}

/// Threads created and exited on one CPU reuse cached threads and stacks; the
/// cache is bounded, and trimming it frees every stack.
#[test]
fn thread_cache_reuses_and_trims() {
    run(1, None, || {
        let m = this_machine();
        let base = m.live_stacks();
        for _ in 0..200 {
            let r = Builder::new("short").spawn::<S>(|| {}).unwrap();
            r.join();
        }
        // One thread at a time: one stack in use, reused each time.
        assert!(
            m.live_stacks() <= base + 1,
            "stacks leaked: {} live",
            m.live_stacks()
        );
        assert!(m.stacks_alloced.load(Ordering::SeqCst) <= base + 2);
        // Many at once: the cache keeps at most CACHE_MAX.
        let refs: Vec<_> = (0..50)
            .map(|_| Builder::new("many").spawn::<S>(|| {}).unwrap())
            .collect();
        for r in &refs {
            r.join();
        }
        drop(refs);
        assert!(m.live_stacks() <= base + crate::slab::CACHE_MAX as usize + 1);
        crate::trim_cache::<S>();
        assert_eq!(m.live_stacks(), base, "trim left stacks behind");
        let slab = &<S as crate::Machine>::world().slab;
        assert!(
            slab.capacity() <= 2 * crate::slab::CHUNK,
            "slab grew to {}",
            slab.capacity()
        );
    });
}

static PAIR: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
static PAIR_TOKEN: Token = Token::new("pair");

/// Threads on every CPU increment a pair of counters kept equal under one
/// token, blocking now and then while holding it: the pair never differs and
/// the total is exact.
#[test]
fn token_serializes_across_cpus_and_survives_blocking() {
    const N: u64 = 3000;
    PAIR[0].store(0, Ordering::SeqCst);
    PAIR[1].store(0, Ordering::SeqCst);
    run(4, Some(Duration::from_millis(1)), || {
        let refs: Vec<_> = (0..4usize)
            .map(|i| {
                Builder::new("pair")
                    .cpu(i)
                    .spawn::<S>(move || {
                        for n in 0..N {
                            let _t = crate::gettoken::<S>(&PAIR_TOKEN);
                            let a = PAIR[0].load(Ordering::Relaxed);
                            assert_eq!(a, PAIR[1].load(Ordering::Relaxed), "pair torn");
                            PAIR[0].store(a + 1, Ordering::Relaxed);
                            if n % 3 == 0 {
                                // An interrupt between the two stores changes nothing.
                                poll();
                            }
                            PAIR[1].store(a + 1, Ordering::Relaxed);
                            if n % 500 == 0 {
                                // Blocking releases the token (others run their
                                // critical code meanwhile); it is ours again before
                                // we run, so the pair is whole when we look.
                                crate::tsleep::<S>(0x7777, 0, "hold", 1);
                                assert!(PAIR_TOKEN.is_held());
                                let b = PAIR[0].load(Ordering::Relaxed);
                                assert_eq!(
                                    b,
                                    PAIR[1].load(Ordering::Relaxed),
                                    "pair torn after block"
                                );
                            }
                        }
                    })
                    .unwrap()
            })
            .collect();
        for r in &refs {
            r.join();
        }
        assert_eq!(PAIR[0].load(Ordering::SeqCst), 4 * N);
        assert_eq!(PAIR[1].load(Ordering::SeqCst), 4 * N);
    });
}

static TA: Token = Token::new("A");
static TB: Token = Token::new("B");

/// Two threads on two CPUs take {A, B} and {B, A} over and over, yielding
/// between the two acquisitions: both finish.
#[test]
fn abba_token_order_completes() {
    run(2, Some(Duration::from_millis(1)), || {
        let mk = |first: &'static Token, second: &'static Token, c: usize| {
            Builder::new("abba")
                .cpu(c)
                .spawn::<S>(move || {
                    for _ in 0..500 {
                        let _a = crate::gettoken::<S>(first);
                        yield_now::<S>();
                        poll();
                        let _b = crate::gettoken::<S>(second);
                        poll();
                    }
                })
                .unwrap()
        };
        let x = mk(&TA, &TB, 0);
        let y = mk(&TB, &TA, 1);
        x.join();
        y.join();
        assert!(!TA.is_held() && !TB.is_held());
    });
}

static IDLE_TOK: Token = Token::new("idle-contended");
static IDLE_WAKE: Sema = Sema::new(0);
static IDLE_DONE: Sema = Sema::new(0);
static IDLE_READY: AtomicBool = AtomicBool::new(false);
static IDLE_HELD: AtomicBool = AtomicBool::new(false);

/// A woken thread whose token is held elsewhere, on a CPU whose current
/// thread blocked: the CPU retries through its idle thread, and those
/// retries count towards the address-ordered fallback too (before, each
/// retry started from zero and never got there). The holder keeps the token
/// until CPU 0 has made a sorted pass.
#[test]
fn the_idle_threads_retries_reach_the_sorted_token_fallback() {
    run(2, None, || {
        let waiter = Builder::new("waiter")
            .cpu(0)
            .spawn::<S>(|| {
                let _t = crate::gettoken::<S>(&IDLE_TOK);
                IDLE_READY.store(true, Ordering::SeqCst);
                // Blocks holding a reference; gets the token again to run.
                IDLE_WAKE.wait::<S>();
                IDLE_DONE.post::<S>();
            })
            .unwrap();
        wait_until("the waiter to block", || IDLE_READY.load(Ordering::SeqCst));
        let holder = Builder::new("holder")
            .cpu(1)
            .spawn::<S>(|| {
                let _t = crate::gettoken::<S>(&IDLE_TOK);
                IDLE_HELD.store(true, Ordering::SeqCst);
                let t = std::time::Instant::now();
                // Busy, never switching (switching would let the token go).
                while stats(0).token_sorted == 0 {
                    assert!(
                        t.elapsed() < Duration::from_secs(20),
                        "cpu 0 never took tokens in address order ({:?})",
                        stats(0)
                    );
                    poll();
                    std::thread::yield_now();
                }
            })
            .unwrap();
        wait_until("the holder to take the token", || {
            IDLE_HELD.load(Ordering::SeqCst)
        });
        let before = stats(0);
        IDLE_WAKE.post::<S>();
        // We block: CPU 0 has only the waiter, whose token is held.
        IDLE_DONE.wait::<S>();
        let after = stats(0);
        assert!(
            after.token_collisions - before.token_collisions
                >= u64::from(crate::switch::SPIN_LOOPS),
            "{after:?}"
        );
        waiter.join();
        holder.join();
        assert!(!IDLE_TOK.is_held());
    });
}

static RT: Token = Token::new("recursive");

#[test]
fn tokens_recurse_and_mix_shared_and_exclusive() {
    run(2, None, || {
        {
            let _a = crate::gettoken::<S>(&RT);
            let _b = crate::gettoken::<S>(&RT);
            let _c = crate::gettoken_shared::<S>(&RT);
            assert_eq!(current::<S>().tokens.len(), 3);
        }
        assert!(!RT.is_held());
        // Shared holders on two CPUs at once; an exclusive try fails meanwhile.
        let holding = Arc::new(AtomicBool::new(false));
        let release = Arc::new(AtomicBool::new(false));
        let (h, rl) = (holding.clone(), release.clone());
        let other = Builder::new("shared")
            .cpu(1)
            .spawn::<S>(move || {
                let _s = crate::gettoken_shared::<S>(&RT);
                h.store(true, Ordering::SeqCst);
                // Wait without switching: a switch releases the token for as
                // long as the thread is switched out (the test would race it).
                let t = std::time::Instant::now();
                while !rl.load(Ordering::SeqCst) {
                    assert!(t.elapsed() < Duration::from_secs(60), "timed out");
                    poll();
                    std::thread::yield_now();
                }
            })
            .unwrap();
        wait_until("other CPU to hold shared", || {
            holding.load(Ordering::SeqCst)
        });
        let s = crate::gettoken_shared::<S>(&RT);
        drop(s);
        assert!(
            crate::trytoken::<S>(&RT).is_none(),
            "exclusive try succeeded under a shared holder"
        );
        release.store(true, Ordering::SeqCst);
        other.join();
        assert!(crate::trytoken::<S>(&RT).is_some());
    });
}

/// Holds one token per level of recursion, so unwinding drops them in
/// reverse order.
fn hold_tokens(tokens: &'static [Token]) {
    if let Some((first, rest)) = tokens.split_first() {
        let _g = crate::gettoken::<S>(first);
        hold_tokens(rest);
    }
}

#[test]
#[should_panic(expected = "token stack overflow")]
fn token_stack_overflow_is_a_clear_panic() {
    static MANY: [Token; crate::token::MAX_TOKENS + 1] =
        [const { Token::new("many") }; crate::token::MAX_TOKENS + 1];
    run(1, None, || hold_tokens(&MANY));
}

/// Asking for a token exclusively while holding it shared would spin
/// forever (the request waits for every shared holder, this thread among
/// them): a panic naming both instead.
#[test]
#[should_panic(expected = "asks for token `upgraded` exclusively while holding it shared")]
fn upgrading_ones_own_shared_token_is_a_clear_panic() {
    static TOK: Token = Token::new("upgraded");
    run(1, None, || {
        let _s = crate::gettoken_shared::<S>(&TOK);
        let _x = crate::gettoken::<S>(&TOK);
    });
}

/// Recursion stays allowed: exclusively, then shared, then exclusively.
#[test]
fn an_exclusive_holder_may_take_its_token_again_in_any_mode() {
    static TOK: Token = Token::new("recursive");
    run(1, None, || {
        let _x = crate::gettoken::<S>(&TOK);
        let _s = crate::gettoken_shared::<S>(&TOK);
        let _x2 = crate::gettoken::<S>(&TOK);
    });
}

#[test]
#[should_panic(expected = "token rank violation")]
fn rank_checker_catches_inverted_order() {
    static LOW: Token = Token::ranked("low", 1);
    static HIGHR: Token = Token::ranked("high", 2);
    run(1, None, || {
        let _h = crate::gettoken::<S>(&HIGHR);
        let _l = crate::gettoken::<S>(&LOW);
    });
}

static CPUSYNC_HITS: [AtomicU32; 4] = [const { AtomicU32::new(0) }; 4];

fn count_cpusync(_: usize) {
    CPUSYNC_HITS[cpu()].fetch_add(1, Ordering::SeqCst);
}

#[test]
fn cpusync_from_a_thread_reaches_every_cpu() {
    run(4, None, || {
        let world = <S as crate::Machine>::world();
        let g = crit_enter::<S>();
        world.ipi.cpusync(&ipi::CpuSet::first(4), count_cpusync, 0);
        drop(g);
        for (c, h) in CPUSYNC_HITS.iter().enumerate() {
            assert_eq!(h.load(Ordering::SeqCst), 1, "cpu{c}");
        }
        let _ = sim::poll;
        assert!(current::<S>().has(flags::RUNNING));
    });
}

static STORM_TD: AtomicUsize = AtomicUsize::new(0);
static STORM_LEFT: AtomicU32 = AtomicU32::new(0);
/// The interrupted thread's stack pointer before the storm, and the
/// deepest the storm's handler found that stack.
static STORM_TOP: AtomicUsize = AtomicUsize::new(0);
static STORM_DEEPEST: AtomicUsize = AtomicUsize::new(0);

fn storm_interrupt(_v: u8) {
    let here = 0u8;
    let sp = core::ptr::from_ref(&here) as usize;
    let top = STORM_TOP.load(Ordering::SeqCst);
    if top != 0 && sp < top {
        STORM_DEEPEST.fetch_max(top - sp, Ordering::SeqCst);
    }
    if let Some(td) = crate::slab::deref(STORM_TD.load(Ordering::SeqCst) as *mut Thread<S>) {
        crate::schedule::<S>(td);
    }
}

/// An interrupt storm: each time the interrupt thread blocks, its next
/// interrupt is already raised, so the thread it preempted finds deferred
/// work again the moment the preemption returns. Replaying it must not
/// nest: the preempted thread's stack stays as deep after 2,000 rounds as
/// after one (a machine whose device interrupts came this fast overflowed
/// its boot CPU's idle stack through `preempt_pending` → `crit_exit` →
/// `splz` → `preempt_pending` …).
#[test]
fn an_interrupt_storm_does_not_deepen_the_preempted_stack() {
    const ROUNDS: u32 = 2000;
    run(1, None, || {
        let m = this_machine();
        m.devices.lock().unwrap().push((9, storm_interrupt));
        STORM_LEFT.store(ROUNDS, Ordering::SeqCst);
        let top = 0u8;
        STORM_TOP.store(core::ptr::from_ref(&top) as usize, Ordering::SeqCst);
        Builder::new("storm")
            .priority(pri::INT)
            .preemptable()
            .spawn::<S>(|| {
                loop {
                    let g = crit_enter::<S>();
                    STORM_TD.store(crate::slab::ptr(current::<S>()) as usize, Ordering::SeqCst);
                    if STORM_LEFT.load(Ordering::SeqCst) == 0 {
                        STORM_TD.store(0, Ordering::SeqCst);
                        break;
                    }
                    STORM_LEFT.fetch_sub(1, Ordering::SeqCst);
                    // The next interrupt comes before this one ends (taken
                    // inside this critical section: deferred on the CPU).
                    this_machine().raise(0, 9);
                    poll();
                    crate::sched::deschedule_self(&g);
                    crate::switch::<S>();
                    drop(g);
                }
            })
            .unwrap();
        let t = std::time::Instant::now();
        while STORM_LEFT.load(Ordering::SeqCst) > 0 || STORM_TD.load(Ordering::SeqCst) != 0 {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "the storm never ended"
            );
            let g = crit_enter::<S>();
            poll();
            drop(g);
        }
        let deepest = STORM_DEEPEST.load(Ordering::SeqCst);
        assert!(
            deepest < 32 << 10,
            "after {ROUNDS} rounds the preempted thread's stack is {deepest} bytes deep"
        );
    });
}

static TWO_TD: [AtomicUsize; 2] = [const { AtomicUsize::new(0) }; 2];
static TWO_RAN: [AtomicBool; 2] = [const { AtomicBool::new(false) }; 2];

/// Two preemptable threads made runnable inside one critical section both
/// run at its end, before the thread that left it goes on: the second
/// does not take the first one's place as the thread to preempt for.
#[test]
fn two_threads_woken_in_one_critical_section_both_preempt() {
    run(1, None, || {
        for i in 0..2 {
            Builder::new("waker")
                .priority(pri::INT - i as u8)
                .preemptable()
                .spawn::<S>(move || {
                    let g = crit_enter::<S>();
                    crate::sched::deschedule_self(&g);
                    TWO_TD[i].store(crate::slab::ptr(current::<S>()) as usize, Ordering::SeqCst);
                    crate::switch::<S>();
                    drop(g);
                    TWO_RAN[i].store(true, Ordering::SeqCst);
                })
                .unwrap();
        }
        wait_until("both threads to block", || {
            TWO_TD.iter().all(|t| t.load(Ordering::SeqCst) != 0)
        });
        let g = crit_enter::<S>();
        for t in &TWO_TD {
            let td = crate::slab::deref(t.load(Ordering::SeqCst) as *mut Thread<S>).unwrap();
            crate::schedule::<S>(td);
        }
        assert!(!TWO_RAN.iter().any(|r| r.load(Ordering::SeqCst)));
        drop(g);
        let ran: Vec<bool> = TWO_RAN.iter().map(|r| r.load(Ordering::SeqCst)).collect();
        assert_eq!(
            ran,
            [true, true],
            "which preempted at the critical section's end"
        );
    });
}

static LATE_TD: AtomicUsize = AtomicUsize::new(0);
static LATE_RAN: AtomicBool = AtomicBool::new(false);

fn late_first(_v: u8) {
    // The second interrupt comes while the first is being replayed, after
    // the replay loop's last look.
    this_machine().raise(0, 11);
}

fn late_second(_v: u8) {
    if let Some(td) = crate::slab::deref(LATE_TD.load(Ordering::SeqCst) as *mut Thread<S>) {
        crate::schedule::<S>(td);
    }
}

/// An interrupt that arrives at the very end of `splz`'s replay (after its
/// loop's last look, before its critical section ends) is replayed too,
/// not left recorded until some later critical section ends.
#[test]
fn an_interrupt_at_the_end_of_splz_is_not_left_behind() {
    run(1, None, || {
        let m = this_machine();
        m.devices.lock().unwrap().push((10, late_first));
        m.devices.lock().unwrap().push((11, late_second));
        Builder::new("late")
            .priority(pri::INT)
            .preemptable()
            .spawn::<S>(|| {
                let g = crit_enter::<S>();
                crate::sched::deschedule_self(&g);
                LATE_TD.store(crate::slab::ptr(current::<S>()) as usize, Ordering::SeqCst);
                crate::switch::<S>();
                drop(g);
                LATE_RAN.store(true, Ordering::SeqCst);
            })
            .unwrap();
        wait_until("the thread to block", || {
            LATE_TD.load(Ordering::SeqCst) != 0
        });
        let g = crit_enter::<S>();
        m.raise(0, 10);
        poll();
        drop(g);
        assert!(
            LATE_RAN.load(Ordering::SeqCst),
            "the second interrupt's thread did not run at the critical section's end"
        );
    });
}

static RACER_TD: AtomicUsize = AtomicUsize::new(0);
static RACER_WAKES: Mutex<Vec<Wake>> = Mutex::new(Vec::new());
const FIRST: usize = 0x5100;
const SECOND: usize = 0x5200;

/// The sleep-timeout race: softclock takes a sleeper's timeout off the
/// wheel and leaves its critical section before calling it; meanwhile the
/// sleeper is woken, stops its timeout and sleeps again with the same
/// callout re-armed. The taken call must not time out the new sleep.
#[test]
fn a_timeout_taken_but_not_yet_called_does_not_end_the_next_sleep() {
    run(1, None, || {
        Builder::new("racer")
            .priority(pri::INT)
            .spawn::<S>(|| {
                RACER_TD.store(crate::slab::ptr(current::<S>()) as usize, Ordering::SeqCst);
                let w = crate::tsleep::<S>(FIRST, 0, "first", 1000);
                RACER_WAKES.lock().unwrap().push(w);
                let w = crate::tsleep::<S>(SECOND, 0, "second", 1000);
                RACER_WAKES.lock().unwrap().push(w);
            })
            .unwrap();
        let racer =
            || crate::slab::deref(RACER_TD.load(Ordering::SeqCst) as *mut Thread<S>).unwrap();
        let asleep_on = |ident: usize| {
            let td = racer();
            td.has(flags::TSLEEPQ) && td.sleep_ident.load(Ordering::SeqCst) == ident
        };
        wait_until("the first sleep", || {
            RACER_TD.load(Ordering::SeqCst) != 0 && asleep_on(FIRST)
        });
        // Softclock's critical section: the timeout is due and taken.
        let g = crit_enter::<S>();
        crate::callout::take_for_test(&racer().timeout);
        drop(g);
        // Before softclock calls it, the sleeper is woken and sleeps again.
        crate::wakeup::<S>(FIRST);
        wait_until("the second sleep", || asleep_on(SECOND));
        // Softclock goes on with what it took.
        crate::callout::fire_taken(&racer().timeout);
        poll();
        assert_eq!(
            *RACER_WAKES.lock().unwrap(),
            [Wake::Woken],
            "the second sleep ended by the first one's timeout"
        );
        crate::wakeup::<S>(SECOND);
        wait_until("the second wakeup", || {
            RACER_WAKES.lock().unwrap().len() == 2
        });
        assert_eq!(*RACER_WAKES.lock().unwrap(), [Wake::Woken, Wake::Woken]);
    });
}

static SLOT_TD: AtomicUsize = AtomicUsize::new(0);
static SLOT_WOKE: AtomicBool = AtomicBool::new(false);

/// A schedule, deschedule or setpri message that arrives after its thread
/// exited and the slot went to a new thread does nothing to the new one
/// (the messages carry the thread's generation, as `interrupt` keeps a
/// reference). The late arrival is played by calling the messages'
/// handlers with what the sender put in them.
#[test]
fn a_late_message_for_an_exited_thread_leaves_the_slots_new_thread_alone() {
    run(1, None, || {
        // The first thread: blocks, is woken, exits.
        Builder::new("first")
            .spawn::<S>(|| {
                let g = crit_enter::<S>();
                crate::sched::deschedule_self(&g);
                SLOT_TD.store(crate::slab::ptr(current::<S>()) as usize, Ordering::SeqCst);
                crate::switch::<S>();
                drop(g);
            })
            .unwrap();
        wait_until("the first thread to block", || {
            SLOT_TD.load(Ordering::SeqCst) != 0
        });
        let first = SLOT_TD.swap(0, Ordering::SeqCst);
        let td = crate::slab::deref(first as *mut Thread<S>).unwrap();
        let old_generation = td.generation.load(Ordering::SeqCst) as usize;
        let old_priority = td.priority();
        crate::schedule::<S>(td);
        wait_until("the first thread to exit", || {
            td.generation.load(Ordering::SeqCst) as usize != old_generation
        });
        // The second thread takes the slot and blocks.
        Builder::new("second")
            .spawn::<S>(|| {
                let g = crit_enter::<S>();
                crate::sched::deschedule_self(&g);
                SLOT_TD.store(crate::slab::ptr(current::<S>()) as usize, Ordering::SeqCst);
                crate::switch::<S>();
                drop(g);
                SLOT_WOKE.store(true, Ordering::SeqCst);
            })
            .unwrap();
        wait_until("the second thread to block", || {
            SLOT_TD.load(Ordering::SeqCst) != 0
        });
        assert_eq!(
            SLOT_TD.load(Ordering::SeqCst),
            first,
            "the second thread did not reuse the slot (the test needs it to)"
        );
        // The first thread's messages arrive late.
        let g = crit_enter::<S>();
        crate::sched::setpri_remote::<S>(first, old_generation << 8 | usize::from(pri::INT));
        crate::sched::schedule_remote::<S>(first, old_generation);
        drop(g);
        for _ in 0..10 {
            crate::yield_now::<S>();
        }
        assert!(
            !SLOT_WOKE.load(Ordering::SeqCst),
            "a message for the exited thread woke the slot's new thread"
        );
        assert_eq!(td.priority(), old_priority, "and set its priority");
        crate::schedule::<S>(td);
        wait_until("the second thread to run", || {
            SLOT_WOKE.load(Ordering::SeqCst)
        });
    });
}

static FREED_TD: AtomicUsize = AtomicUsize::new(0);

/// A direct wakeup for a thread that has exited, its slot free and not
/// reused yet (no CPU owns it), does nothing — as the IPC core's wakeups
/// may do: a waker that took a record's thread under the channel's token
/// wakes it after it was interrupted, left and exited, or its message is
/// forwarded from the CPU it left. It used to be sent on to "CPU
/// `u32::MAX`" and panic indexing the IPI queues (seen once in
/// `ipc::tests::interrupts_at_random_lose_nothing` under a busy host).
#[test]
fn a_direct_wakeup_for_an_exited_thread_whose_slot_is_free_does_nothing() {
    run(2, None, || {
        Builder::new("gone")
            .spawn::<S>(|| {
                let g = crit_enter::<S>();
                crate::sched::deschedule_self(&g);
                FREED_TD.store(crate::slab::ptr(current::<S>()) as usize, Ordering::SeqCst);
                crate::switch::<S>();
                drop(g);
            })
            .unwrap();
        wait_until("the thread to block", || {
            FREED_TD.load(Ordering::SeqCst) != 0
        });
        let td = crate::slab::deref(FREED_TD.load(Ordering::SeqCst) as *mut Thread<S>).unwrap();
        let generation = td.generation.load(Ordering::SeqCst);
        crate::schedule::<S>(td);
        wait_until("the thread to exit", || {
            td.generation.load(Ordering::SeqCst) != generation
        });
        assert_eq!(td.cpu.load(Ordering::SeqCst), crate::thread::NO_CPU);
        let ident = 0x4000;
        let woken = stats(0).wakeups + stats(1).wakeups;
        crate::sleep::wakeup_thread::<S>(td, ident);
        crate::sleep::wakeup_thread_at::<S>(td, ident, pri::KERN_DAEMON);
        // A message for it arriving late, here.
        crate::sleep::wakeup_thread_remote::<S>(crate::slab::ptr(td) as usize, ident);
        for _ in 0..10 {
            poll();
            crate::yield_now::<S>();
        }
        assert_eq!(stats(0).wakeups + stats(1).wakeups, woken, "something woke");
    });
}

static MIG_TD: AtomicUsize = AtomicUsize::new(0);
static MIG_RAN: AtomicBool = AtomicBool::new(false);
static MIG_HOLDING: AtomicBool = AtomicBool::new(false);
static MIG_RELEASE: AtomicBool = AtomicBool::new(false);

/// An operation on a thread between its switch-out on the old CPU and its
/// adoption by the new one goes to the new owner (behind the adoption), not
/// to the old CPU, where it found no run queue holding the thread: a
/// deschedule in that window used to be lost, and the thread ran.
#[test]
fn a_deschedule_during_a_migration_reaches_the_new_owner() {
    run(2, None, || {
        // CPU 1 stays in a critical section: the adoption waits.
        Builder::new("holder")
            .cpu(1)
            .spawn::<S>(|| {
                let g = crit_enter::<S>();
                MIG_HOLDING.store(true, Ordering::SeqCst);
                while !MIG_RELEASE.load(Ordering::SeqCst) {
                    poll();
                    std::thread::yield_now();
                }
                drop(g);
            })
            .unwrap();
        wait_until("CPU 1 to hold", || MIG_HOLDING.load(Ordering::SeqCst));
        Builder::new("mover")
            .cpu(0)
            .spawn::<S>(|| {
                MIG_TD.store(crate::slab::ptr(current::<S>()) as usize, Ordering::SeqCst);
                crate::migrate_self::<S>(1);
                MIG_RAN.store(true, Ordering::SeqCst);
            })
            .unwrap();
        let mover = || crate::slab::deref(MIG_TD.load(Ordering::SeqCst) as *mut Thread<S>);
        wait_until("the mover to switch out of CPU 0", || {
            mover().is_some_and(|td| td.has(flags::MIGRATING) && !td.has(flags::RUNNING))
        });
        let td = mover().unwrap();
        crate::deschedule::<S>(td);
        MIG_RELEASE.store(true, Ordering::SeqCst);
        for _ in 0..50 {
            poll();
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(
            !MIG_RAN.load(Ordering::SeqCst),
            "the thread ran: the deschedule during its migration was lost"
        );
        crate::schedule::<S>(td);
        wait_until("the mover to run on CPU 1", || {
            MIG_RAN.load(Ordering::SeqCst)
        });
    });
}

static HOLDER_TD: AtomicUsize = AtomicUsize::new(0);
static HOLDER_RAN: AtomicBool = AtomicBool::new(false);

/// A preemptable thread that cannot be switched to directly (it has token
/// references to reacquire) is a refused preemption: the critical
/// section's end tries once and goes on — it neither retries for ever nor
/// recurses — and the thread runs when the scheduler next switches.
#[test]
fn a_refused_preemption_is_tried_once_per_section_end() {
    static TOK: Token = Token::new("held-while-blocked");
    run(1, None, || {
        Builder::new("holder")
            .priority(pri::INT)
            .preemptable()
            .spawn::<S>(|| {
                let _t = crate::gettoken::<S>(&TOK);
                let g = crit_enter::<S>();
                crate::sched::deschedule_self(&g);
                HOLDER_TD.store(crate::slab::ptr(current::<S>()) as usize, Ordering::SeqCst);
                crate::switch::<S>();
                drop(g);
                HOLDER_RAN.store(true, Ordering::SeqCst);
            })
            .unwrap();
        wait_until("the holder to block", || {
            HOLDER_TD.load(Ordering::SeqCst) != 0
        });
        let td = crate::slab::deref(HOLDER_TD.load(Ordering::SeqCst) as *mut Thread<S>).unwrap();
        let g = crit_enter::<S>();
        crate::schedule::<S>(td);
        drop(g);
        // Here at all: the section's end did not spin or recurse.
        yield_now::<S>();
        wait_until("the holder to run", || HOLDER_RAN.load(Ordering::SeqCst));
    });
}
