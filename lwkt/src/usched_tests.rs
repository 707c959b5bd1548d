//! Host tests of the user scheduler (`usched`) on the simulated machine.
//!
//! A simulated user thread is a thread made with `Builder::user` whose
//! "user mode" is a loop: each pass is some user work, then an interrupt
//! window and the way back to user mode the kernel takes (a reschedule if
//! one is due, then `usched::acquire`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use std::vec::Vec;

use crate::sim::{Sim, poll, run, this_machine};
use crate::thread::{ThreadRef, flags, pri};
use crate::usched::acquire;
use crate::{Builder, current};

type S = Sim;

/// The way back to user mode after an interrupt window: a reschedule if one
/// is due, then the CPU's user turn.
fn user_return() {
    poll();
    crate::lwkt_yield::<S>();
    assert!(acquire::<S>(), "interrupted");
}

/// A user thread that works until `stop`, counting passes in `work`.
fn busy(cpu: usize, upri: u8, stop: &Arc<AtomicBool>, work: &Arc<AtomicU64>) -> ThreadRef<S> {
    let (stop, work) = (stop.clone(), work.clone());
    user_thread("busy", cpu, upri, false, move || {
        while !stop.load(Ordering::Relaxed) {
            work.fetch_add(1, Ordering::Relaxed);
            std::thread::yield_now();
            user_return();
        }
    })
}

/// A user thread of user priority `upri` on `cpu` (pinned there if
/// `pinned`) that takes its first turn, as a new user thread does, and
/// then runs `f`.
fn user_thread(
    name: &'static str,
    cpu: usize,
    upri: u8,
    pinned: bool,
    f: impl FnOnce() + Send + 'static,
) -> ThreadRef<S> {
    Builder::new(name)
        .cpu(cpu)
        .priority(pri::KERN_USER)
        .user(upri)
        .spawn::<S>(move || {
            if pinned {
                crate::usched::pin::<S>(true);
            }
            assert!(acquire::<S>());
            f();
        })
        .unwrap()
}

/// Waits (sleeping in the kernel, as a test's main thread) until `cond`.
fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        crate::tsleep::<S>(0x5eed, 0, "wait", 1);
    }
}

fn per_cpu(threads: &[ThreadRef<S>], ncpus: usize) -> Vec<usize> {
    let mut v = vec![0; ncpus];
    for t in threads {
        v[t.cpu()] += 1;
    }
    v
}

#[test]
fn busy_threads_started_on_one_cpu_spread_and_share_it_fairly() {
    let (spread, shares) = run(4, Some(Duration::from_micros(500)), || {
        let stop = Arc::new(AtomicBool::new(false));
        let work: Vec<Arc<AtomicU64>> = (0..8).map(|_| Arc::new(AtomicU64::new(0))).collect();
        let threads: Vec<ThreadRef<S>> =
            work.iter().map(|w| busy(0, pri::USER, &stop, w)).collect();
        wait_for("the spread", Duration::from_secs(30), || {
            per_cpu(&threads, 4) == vec![2, 2, 2, 2]
        });
        let spread = per_cpu(&threads, 4);
        let before: Vec<u64> = threads.iter().map(|t| t.user_ticks()).collect();
        wait_for("ticks", Duration::from_secs(30), || {
            threads
                .iter()
                .zip(&before)
                .all(|(t, b)| t.user_ticks() >= b + 200)
        });
        let shares: Vec<(usize, u64)> = threads
            .iter()
            .zip(&before)
            .map(|(t, b)| (t.cpu(), t.user_ticks() - b))
            .collect();
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join();
        }
        (spread, shares)
    });
    assert_eq!(spread, vec![2, 2, 2, 2]);
    // CPU-mates got the same share within 10 %.
    for &(c, g) in &shares {
        let mates: Vec<u64> = shares.iter().filter(|s| s.0 == c).map(|s| s.1).collect();
        let mean = mates.iter().sum::<u64>() / mates.len() as u64;
        assert!(
            g.abs_diff(mean) * 10 <= mean,
            "unfair shares on cpu {c}: {shares:?}"
        );
    }
}

#[test]
fn a_pinned_thread_stays_and_the_others_move_around_it() {
    let moved_pinned = run(2, Some(Duration::from_micros(500)), || {
        let stop = Arc::new(AtomicBool::new(false));
        let w = Arc::new(AtomicU64::new(0));
        let pinned_on_0 = Arc::new(AtomicBool::new(true));
        let (s2, p2, w2) = (stop.clone(), pinned_on_0.clone(), w.clone());
        let pinned = user_thread("pinned", 0, pri::USER, true, move || {
            while !s2.load(Ordering::Relaxed) {
                if current::<S>().cpu() != 0 {
                    p2.store(false, Ordering::Relaxed);
                }
                w2.fetch_add(1, Ordering::Relaxed);
                std::thread::yield_now();
                user_return();
            }
        });
        let others: Vec<ThreadRef<S>> = (0..3).map(|_| busy(0, pri::USER, &stop, &w)).collect();
        wait_for("the spread", Duration::from_secs(30), || {
            per_cpu(&others, 2)[1] >= 1 && pinned.has(flags::RUNQ | flags::UQ)
        });
        let t0 = this_machine().cpus[0].ticks();
        wait_for("ticks", Duration::from_secs(30), || {
            this_machine().cpus[0].ticks() > t0 + 200
        });
        stop.store(true, Ordering::Relaxed);
        pinned.join();
        for t in others {
            t.join();
        }
        pinned_on_0.load(Ordering::Relaxed)
    });
    assert!(moved_pinned, "the pinned thread left cpu 0");
}

#[test]
fn a_realtime_thread_takes_the_turn_from_normal_ones() {
    run(1, Some(Duration::from_micros(500)), || {
        let stop = Arc::new(AtomicBool::new(false));
        let (wn, wr) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let normal = busy(0, pri::USER, &stop, &wn);
        wait_for("the normal thread", Duration::from_secs(30), || {
            wn.load(Ordering::Relaxed) > 100
        });
        let rt = busy(0, pri::USER_REAL, &stop, &wr);
        wait_for("the real-time thread", Duration::from_secs(30), || {
            wr.load(Ordering::Relaxed) > 100
        });
        // From here on the normal thread gets nothing while the real-time
        // one is busy.
        let (n0, t0) = (wn.load(Ordering::Relaxed), this_machine().cpus[0].ticks());
        wait_for("ticks", Duration::from_secs(30), || {
            this_machine().cpus[0].ticks() > t0 + 50
        });
        let n1 = wn.load(Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        rt.join();
        normal.join();
        assert!(
            n1 <= n0 + 1,
            "the normal thread ran beside a busy real-time one ({n0} -> {n1})"
        );
    });
}

#[test]
fn a_pinned_user_thread_that_sleeps_every_tick_starves_nobody() {
    let work = run(4, Some(Duration::from_micros(500)), || {
        let out = Arc::new(std::sync::Mutex::new(Vec::new()));
        let out2 = out.clone();
        // The creator is itself a user thread, pinned on CPU 0, that wakes
        // every tick to look (as ut-usched's main thread).
        let main = user_thread("main", 0, pri::USER, true, move || {
            let stop = Arc::new(AtomicBool::new(false));
            let work: Vec<Arc<AtomicU64>> = (0..9).map(|_| Arc::new(AtomicU64::new(0))).collect();
            let threads: Vec<ThreadRef<S>> =
                work.iter().map(|w| busy(0, pri::USER, &stop, w)).collect();
            let t = Instant::now();
            while work.iter().any(|w| w.load(Ordering::Relaxed) < 50)
                && t.elapsed() < Duration::from_secs(20)
            {
                crate::tsleep::<S>(0x5eed, 0, "look", 1);
                user_return();
            }
            stop.store(true, Ordering::Relaxed);
            for t in threads {
                t.join();
            }
            *out2.lock().unwrap() = work.iter().map(|w| w.load(Ordering::Relaxed)).collect();
        });
        main.join();
        out.lock().unwrap().clone()
    });
    assert!(
        work.iter().all(|&w| w >= 50),
        "a busy thread starved: {work:?}"
    );
}

/// Threads every CPU's user scheduler sent elsewhere so far.
fn pushes(ncpus: usize) -> u64 {
    (0..ncpus)
        .map(|i| this_machine().cpus[i].usched.stats.pushes.get())
        .sum()
}

/// ut-usched's flake, reproduced: a balanced spread (two busy threads a
/// CPU) beside a pinned thread on CPU 0 that is busy for a while and then
/// sleeps for a while, again and again — as a test's main thread that wakes
/// to look. CPU 0 is one above the others for stretches of 20 ticks, never
/// for good: nothing should move. Rotating the "odd one out" on such a
/// stretch started chains of moves around the CPUs.
#[test]
fn a_thread_that_comes_and_goes_beside_a_balanced_spread_moves_nobody() {
    const NCPUS: usize = 4;
    let (moves, rounds) = run(NCPUS, Some(Duration::from_micros(500)), || {
        let stop = Arc::new(AtomicBool::new(false));
        let work: Vec<Arc<AtomicU64>> = (0..2 * NCPUS)
            .map(|_| Arc::new(AtomicU64::new(0)))
            .collect();
        let threads: Vec<ThreadRef<S>> =
            work.iter().map(|w| busy(0, pri::USER, &stop, w)).collect();
        wait_for("the spread", Duration::from_secs(30), || {
            per_cpu(&threads, NCPUS) == vec![2; NCPUS]
        });
        // Settled: the same spread 100 ticks later.
        let t0 = this_machine().cpus[0].ticks();
        wait_for("ticks", Duration::from_secs(30), || {
            this_machine().cpus[0].ticks() > t0 + 100
        });
        let p0 = pushes(NCPUS);
        let rounds = Arc::new(AtomicU64::new(0));
        let r2 = rounds.clone();
        let comer = user_thread("comes-and-goes", 0, pri::USER, true, move || {
            let ticks = || this_machine().cpus[0].ticks();
            for _ in 0..10 {
                let t = ticks();
                while ticks() < t + 20 {
                    std::thread::yield_now();
                    user_return();
                }
                crate::tsleep::<S>(0x90e5, 0, "gone", 20);
                user_return();
                r2.fetch_add(1, Ordering::Relaxed);
            }
        });
        comer.join();
        let moves = pushes(NCPUS) - p0;
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join();
        }
        (moves, rounds.load(Ordering::Relaxed))
    });
    assert_eq!(rounds, 10);
    assert_eq!(moves, 0, "{moves} threads moved in a balanced system");
}

/// The other side of the same rule: five busy threads on four CPUs are an
/// uneven split for good, and the odd one out keeps moving on (rather than
/// two of them sharing a CPU for ever while three have one each). How
/// often, and whether each thread gets its share, is not asserted: the
/// simulated CPUs are host threads, as unevenly served as a busy host
/// serves them, so their clocks do not keep pace with each other.
#[test]
fn the_odd_thread_out_of_an_uneven_split_keeps_moving() {
    const NCPUS: usize = 4;
    run(NCPUS, Some(Duration::from_micros(500)), || {
        let stop = Arc::new(AtomicBool::new(false));
        let work: Vec<Arc<AtomicU64>> = (0..NCPUS + 1)
            .map(|_| Arc::new(AtomicU64::new(0)))
            .collect();
        let threads: Vec<ThreadRef<S>> =
            work.iter().map(|w| busy(0, pri::USER, &stop, w)).collect();
        wait_for("the spread", Duration::from_secs(30), || {
            let mut per = per_cpu(&threads, NCPUS);
            per.sort_unstable();
            per == vec![1, 1, 1, 2]
        });
        // From the spread on, moves are the odd thread out's.
        let p0 = pushes(NCPUS);
        wait_for(
            "five moves of the odd thread out",
            Duration::from_secs(30),
            || pushes(NCPUS) >= p0 + 5,
        );
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join();
        }
    });
}
