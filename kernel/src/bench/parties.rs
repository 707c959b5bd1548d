//! Running one repetition of a benchmark: threads ("parties") on chosen CPUs
//! meet at a gate, run their loops, and report the span they measured.
//!
//! A repetition's figure is the TSC from the earliest measured start to the
//! latest measured end over all parties, and its operations the sum of theirs.
//! Under `-icount` the TSC is one virtual clock advanced by every vCPU's
//! instructions, so for work spread over several CPUs the span counts the
//! instructions of all of them: the total cost of the operations, which is
//! what a scaling curve needs.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};

use lwkt::Builder;

use crate::arch::cpu;
use crate::percpu;
use crate::sched::X86;
use crate::sync::Once;

/// What one party measured.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub start: u64,
    pub end: u64,
    pub ops: u64,
}

/// One repetition: TSC ticks and operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rep {
    pub tsc: u64,
    pub ops: u64,
}

/// Lets every party start (or finish) together: each arrives and sleeps
/// until the last one wakes them all. Sleeping rather than spinning matters
/// under `-icount`: a waiting CPU halts and adds no instructions, and the
/// ones it adds waking up are the same on every run, whatever order QEMU ran
/// the vCPUs in.
pub struct Gate {
    parties: usize,
    arrived: AtomicUsize,
}

impl Gate {
    fn new(parties: usize) -> Self {
        Gate {
            parties,
            arrived: AtomicUsize::new(0),
        }
    }

    fn ident(&self) -> usize {
        core::ptr::from_ref(&self.arrived) as usize
    }

    fn all_here(&self) -> bool {
        self.arrived.load(Ordering::Acquire) >= self.parties
    }

    /// Arrives and waits for every other party. Thread context; may block.
    pub fn wait(&self) {
        lwkt::tsleep_interlock::<X86>(self.ident());
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.parties {
            lwkt::tsleep_cancel::<X86>();
            lwkt::wakeup::<X86>(self.ident());
            return;
        }
        loop {
            lwkt::tsleep::<X86>(self.ident(), lwkt::INTERLOCKED, "gate", 0);
            lwkt::tsleep_interlock::<X86>(self.ident());
            if self.all_here() {
                lwkt::tsleep_cancel::<X86>();
                return;
            }
        }
    }
}

/// Runs `body(party, gate)` in one thread per entry of `cpus` (party `i` on
/// CPU `cpus[i]`), waits for all of them, and folds the spans they returned.
/// Parties that only serve others return `None`. The body calls the start
/// gate's `wait` before it measures; after it returns, each party waits at an
/// end gate, so that no thread exits (and no CPU runs anything but its idle
/// halt) until every party is done.
///
/// Thread context; blocks until every party has exited.
pub fn run<F>(cpus: &[usize], body: F) -> Rep
where
    F: Fn(usize, &Gate) -> Option<Span> + Send + Sync + 'static,
{
    settle(cpus);
    let shared = Arc::new((
        Gate::new(cpus.len()),
        Gate::new(cpus.len()),
        body,
        (0..cpus.len())
            .map(|_| Once::new())
            .collect::<Vec<Once<Span>>>(),
    ));
    let threads: Vec<_> = cpus
        .iter()
        .enumerate()
        .map(|(party, &c)| {
            let s = shared.clone();
            Builder::new("bench")
                .cpu(c)
                .spawn::<X86>(move || {
                    let (start, end, body, slots) = &*s;
                    if let Some(span) = body(party, start) {
                        slots[party].call_once(|| span);
                    }
                    end.wait();
                })
                .expect("no memory for a benchmark thread")
        })
        .collect();
    for t in threads {
        t.join();
    }
    let measured = || shared.3.iter().filter_map(Once::get);
    let start = measured().map(|s| s.start).min();
    let end = measured().map(|s| s.end).max();
    let (Some(start), Some(end)) = (start, end) else {
        panic!("a benchmark repetition in which no party measured anything");
    };
    Rep {
        tsc: end - start,
        ops: measured().map(|s| s.ops).sum(),
    }
}

/// How many `pause`s [`settle`] waits at most (a CPU that never halts —
/// busy with something of its own — only costs the wait).
const SETTLE_PAUSES: u32 = 1 << 20;

/// Waits until every online CPU that hosts none of the parties (`cpus`)
/// halts in its idle loop. Under `-icount` the TSC counts every vCPU's
/// instructions, in whatever order QEMU runs them: what is left of earlier
/// work on an idle CPU — the end of a cpusync's handler, an exiting thread
/// — would otherwise land in whichever repetition QEMU runs it during.
/// `pause` lets QEMU run the other vCPUs; a few more after the last flag is
/// seen let each reach its `hlt` (the flag is set just before `sti; hlt`).
///
/// Thread context.
fn settle(cpus: &[usize]) {
    let me = percpu::cpu_index();
    let idle = |c: &&percpu::PerCpu| c.index() != me && !cpus.contains(&(c.index() as usize));
    for _ in 0..SETTLE_PAUSES {
        if percpu::online()
            .filter(idle)
            .all(|c| c.halted.load(Ordering::Relaxed))
        {
            for _ in 0..8 {
                cpu::pause();
            }
            return;
        }
        cpu::pause();
    }
}

/// Times `n` calls of `op(arg)` in the calling party: a [`Span`] of `n`
/// operations. The call is indirect and neither this function nor the loop
/// around it is inlined, so a figure depends on the code of `op` and what it
/// calls, not on how the compiler happened to merge it with the benchmark's
/// own loop (which otherwise moved figures by several percent on unrelated
/// changes).
#[inline(never)]
pub fn timed<T: ?Sized>(n: u64, op: fn(&T), arg: &T) -> Span {
    let op = core::hint::black_box(op);
    let start = cpu::rdtsc();
    for _ in 0..n {
        bench_op();
        op(arg);
    }
    let end = cpu::rdtsc();
    Span { start, end, ops: n }
}

/// The profiler's marker: [`timed`] calls it once before every operation,
/// so that `cargo xtask bench --profile` can break on it, skip a warm-up and
/// single-step exactly one operation, from one call to the next. A symbol
/// of its own, not mangled; naked, so it is one `ret` with no frame, and
/// opaque to the compiler, so the call stays: it adds the `call` and the
/// `ret` to each operation, two instructions.
#[unsafe(no_mangle)]
#[unsafe(naked)]
pub extern "C" fn bench_op() {
    // Sound: a bare `ret` touches nothing but the return address the call
    // pushed.
    core::arch::naked_asm!("ret")
}

/// Calls `op(arg)` `n` times the way [`timed`] does, without timing: the
/// partner's side of a pair.
#[inline(never)]
pub fn repeat<T: ?Sized>(n: u64, op: fn(&T), arg: &T) {
    let op = core::hint::black_box(op);
    for _ in 0..n {
        op(arg);
    }
}
