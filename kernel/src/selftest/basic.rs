//! Foundation tests: boot, fatal-error reporting, memory.

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::{Expect, SelfTest};
use crate::arch::cpu;
use crate::check;
use crate::mm::{self, frame, heap, paging, stack::KernelStack};
use crate::println;

pub static TESTS: &[SelfTest] = &[
    SelfTest {
        name: "boot",
        expect: Expect::Return,
        run: boot,
    },
    SelfTest {
        name: "pagefault",
        expect: Expect::Trap(14),
        run: pagefault,
    },
    SelfTest {
        name: "panic",
        expect: Expect::Panic,
        run: panic,
    },
    SelfTest {
        name: "stackoverflow",
        expect: Expect::StackOverflow,
        run: stackoverflow,
    },
    SelfTest {
        name: "memstress",
        expect: Expect::Return,
        run: memstress,
    },
];

/// The boot reached here: memory is sane, tables are W^X, ACPI was read.
fn boot() {
    let f = frame::stats();
    check!(
        f.total > 0 && f.free > 0 && f.free <= f.total,
        "frame stats {f:?}"
    );
    check!(paging::audit_wx().is_ok(), "a kernel page is W+X");
    let cpus = crate::acpi::platform().enabled_cpus().count();
    check!(cpus >= 1, "ACPI lists no CPU");
    let v: Vec<u64> = (0..1000).collect();
    check!(v.iter().sum::<u64>() == 499_500, "heap-backed Vec is wrong");
    println!(
        "boot: {cpus} CPUs in the MADT, {} MiB usable",
        f.total_bytes() >> 20
    );
}

/// A read of an unmapped kernel-half address must be reported as a page fault.
fn pagefault() {
    let addr = mm::MMIO_BASE + mm::REGION_SIZE - 0x1000 + 0x120;
    println!("reading unmapped address {addr:#x}");
    // SAFETY: deliberately faulting: the test expects the page fault this read
    // raises; the fault handler ends the boot.
    let v = unsafe { core::ptr::read_volatile(addr as *const u64) };
    println!("read {v:#x}: no fault");
}

fn panic() {
    panic!("deliberate panic from the panic self-test");
}

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let mut pad = [0u8; 512];
    pad[0] = depth as u8;
    core::hint::black_box(&mut pad);
    if depth == u64::MAX {
        return 0;
    }
    recurse(depth + 1) + u64::from(core::hint::black_box(pad[0]))
}

extern "C" fn overflow_entry(_: usize) {
    let n = recurse(0);
    println!("recursion returned {n}: no overflow");
}

/// Unbounded recursion on a guarded kernel stack must hit the guard and be
/// reported as a stack overflow.
fn stackoverflow() {
    let stack = KernelStack::new().expect("no memory for a stack");
    println!("recursing on {stack:?}");
    let top = stack.top().as_u64();
    core::mem::forget(stack);
    // SAFETY: `top` is the top of a freshly mapped stack nobody else uses (we
    // leaked it); `overflow_entry` never returns normally here.
    unsafe { cpu::call_on_stack(0, overflow_entry, top) };
}

/// Small deterministic generator for sizes and patterns.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Frames and heap under allocation churn return to their baseline, and no two
/// live allocations overlap (each carries its own pattern, checked before free).
fn memstress() {
    // Warm up: the first stacks grow the slot lists, which stay allocated;
    // the heap grows to what the churn below needs (it keeps its pages, and
    // the page tables that map them).
    drop(
        (0..16)
            .map(|_| KernelStack::new().expect("stack"))
            .collect::<Vec<_>>(),
    );
    drop(alloc::vec![0u8; 16 << 20]);
    let frames0 = frame::stats();
    let heap0 = heap::stats();
    let stacks0 = mm::stack::stats();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);

    for round in 0..8 {
        let mut held = Vec::new();
        for i in 0..2000u64 {
            let f = frame::alloc().expect("out of frames");
            let va = mm::phys_to_virt(f.start_address()).as_mut_ptr::<u64>();
            // SAFETY: the frame is ours until freed below; mapped via the
            // physical-memory mapping.
            unsafe { va.write(i ^ round) };
            held.push((f, i ^ round));
        }
        for (f, tag) in held.drain(..) {
            let va = mm::phys_to_virt(f.start_address()).as_ptr::<u64>();
            // SAFETY: as above.
            let got = unsafe { va.read() };
            check!(got == tag, "frame {:#x} was overwritten", f.start_address());
            frame::free(f);
        }
    }
    check!(
        frame::stats() == frames0,
        "frames {:?} != baseline {frames0:?}",
        frame::stats()
    );
    for (count, align) in [(1, 1), (7, 1), (512, 512), (64, 8), (3000, 1)] {
        let runs: Vec<_> = (0..4)
            .map(|_| frame::alloc_contiguous(count, align).expect("no contiguous run"))
            .collect();
        for r in &runs {
            let n = r.start_address().as_u64() / mm::PAGE_SIZE;
            check!(
                n.is_multiple_of(align as u64),
                "run at frame {n} not aligned to {align}"
            );
        }
        let mut starts: Vec<u64> = runs.iter().map(|r| r.start_address().as_u64()).collect();
        starts.sort_unstable();
        check!(
            starts
                .windows(2)
                .all(|w| w[1] - w[0] >= count as u64 * mm::PAGE_SIZE),
            "contiguous runs of {count} overlap"
        );
        for r in runs {
            frame::free_contiguous(r, count);
        }
    }
    check!(
        frame::stats() == frames0,
        "frames after contiguous runs {:?} != {frames0:?}",
        frame::stats()
    );

    for _ in 0..20 {
        let mut blocks: Vec<Box<[u8]>> = Vec::new();
        for _ in 0..500 {
            let len = (rng.next() % 16384) as usize + 1;
            let pat = (rng.next() & 0xff) as u8;
            blocks.push(alloc::vec![pat; len].into_boxed_slice());
        }
        for b in &blocks {
            let first = b[0];
            check!(b.iter().all(|&x| x == first), "heap block corrupted");
        }
        // Free half in a scattered order, then the rest.
        let mut i = 0;
        while i < blocks.len() {
            blocks.swap_remove(i);
            i += 2;
        }
    }
    let heap1 = heap::stats();
    check!(
        heap1.allocated == heap0.allocated && heap1.allocations == heap0.allocations,
        "heap {heap1:?} != baseline {heap0:?}"
    );

    for _ in 0..64 {
        let stacks: Vec<KernelStack> = (0..16)
            .map(|_| KernelStack::new().expect("stack"))
            .collect();
        for s in &stacks {
            // SAFETY: the stack is mapped and ours; touch its lowest and highest word.
            unsafe {
                s.bottom().as_mut_ptr::<u64>().write_volatile(1);
                (s.top() - 8u64).as_mut_ptr::<u64>().write_volatile(2);
            }
        }
    }
    check!(
        mm::stack::stats() == stacks0,
        "stacks {:?} != {stacks0:?}",
        mm::stack::stats()
    );
    // The heap keeps what it grew by (its pages and their tables).
    let heap2 = heap::stats();
    let grown =
        ((heap2.claimed - heap0.claimed) / mm::PAGE_SIZE + heap2.tables - heap0.tables) as usize;
    let f2 = frame::stats();
    check!(
        f2.free + grown == frames0.free,
        "frames after stacks {f2:?} (the heap grew by {grown} frames) != {frames0:?}"
    );
    check!(
        heap2.allocated == heap0.allocated,
        "heap after stacks {heap2:?}"
    );
    println!(
        "memstress: {} frames, {} heap bytes in use at baseline",
        frames0.total - frames0.free,
        heap0.allocated
    );
}
