//! Tokens, interrupt threads and preemption, timeouts, and the kernel's
//! instruments, at 2 and 8 CPUs.

use wyvern_tests::apic_tests;
use wyvern_tests::harness::TestBoot;
use wyvern_tests::qemu::{Apic, Responder};

fn at_2_and_8(name: &str, apic: Apic) {
    for cpus in [2, 8] {
        TestBoot::new(name, cpus).apic(apic).run();
    }
}

apic_tests! {
    fn token_protected_pair_stays_equal_and_exact_on_all_cpus(apic) {
        at_2_and_8("token-pair", apic);
    }

    fn blocking_token_holder_releases_and_reacquires(apic) {
        at_2_and_8("token-block", apic);
    }

    fn abba_token_order_completes_across_cpus(apic) {
        at_2_and_8("token-abba", apic);
    }

    fn interrupt_thread_preempts_and_critical_section_defers_it(apic) {
        for cpus in [2, 8] {
            TestBoot::new("preempt", cpus)
                .apic(apic)
                .must_contain("(a busy thread preempted; a critical section deferred it)")
                .run();
        }
    }

    fn timeouts_fire_within_one_tick_on_every_cpu(apic) {
        at_2_and_8("timeouts", apic);
    }

    fn periodic_callouts_run_on_their_tick(apic) {
        at_2_and_8("callout", apic);
    }

    fn a_panic_prints_every_cpus_trace_ring(apic) {
        TestBoot::new("trace-panic", 8)
            .apic(apic)
            .must_contain("PANIC on CPU 7: deliberate panic on cpu7")
            .must_contain("trace ring of cpu0")
            .must_contain("trace ring of cpu7")
            .must_contain("stats: cpu")
            .run();
    }
}

#[test]
fn spinlock_rank_violation_names_both_locks() {
    TestBoot::new("rank-violation", 2)
        .must_contain("spinlock rank violation: taking `test-low` (rank 1) while holding `test-high` (rank 2)")
        .run();
}

struct Keys {
    sent: usize,
}

impl Responder for Keys {
    fn on_line(&mut self, line: &str) -> Option<Vec<u8>> {
        let next = match (self.sent, line) {
            (0, l) if l.contains("console: ready") => b"s",
            (1, l) if l.starts_with("stats:") && !l.contains("cpu ") => b"t",
            (2, l) if l.starts_with("trace ring of") => b"i",
            (3, l) if l.starts_with("intr: com1") => b"q",
            _ => return None,
        };
        self.sent += 1;
        Some(next.to_vec())
    }
}

apic_tests! {
    fn console_keys_print_counters_traces_and_interrupts(apic) {
        TestBoot::new("console", 2)
            .apic(apic)
            .responder(Keys { sent: 0 })
            .must_contain("stats: cpu   ticks")
            .must_contain("trace ring of cpu1")
            .must_contain("intr: com1")
            .must_contain("console: quit")
            .run();
    }

    fn token_stress_reports_every_cpu(apic) {
        TestBoot::new("stress", 2)
            .apic(apic)
            .must_contain("stress Token for 1 s on 2 CPUs")
            .must_contain("stress:  all")
            .run();
    }
}
