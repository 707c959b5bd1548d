//! Tokens, interrupt threads and preemption, timeouts, and the kernel's
//! instruments, at 2 and 8 CPUs.

use wyvern_tests::harness::TestBoot;
use wyvern_tests::qemu::Responder;

fn at_2_and_8(name: &str) {
    for cpus in [2, 8] {
        TestBoot::new(name, cpus).run();
    }
}

#[test]
fn token_protected_pair_stays_equal_and_exact_on_all_cpus() {
    at_2_and_8("token-pair");
}

#[test]
fn blocking_token_holder_releases_and_reacquires() {
    at_2_and_8("token-block");
}

#[test]
fn abba_token_order_completes_across_cpus() {
    at_2_and_8("token-abba");
}

#[test]
fn interrupt_thread_preempts_and_critical_section_defers_it() {
    for cpus in [2, 8] {
        TestBoot::new("preempt", cpus)
            .must_contain("(a busy thread preempted; a critical section deferred it)")
            .run();
    }
}

#[test]
fn timeouts_fire_within_one_tick_on_every_cpu() {
    at_2_and_8("timeouts");
}

#[test]
fn periodic_callouts_run_on_their_tick() {
    at_2_and_8("callout");
}

#[test]
fn a_panic_prints_every_cpus_trace_ring() {
    TestBoot::new("trace-panic", 8)
        .must_contain("PANIC on CPU 7: deliberate panic on cpu7")
        .must_contain("trace ring of cpu0")
        .must_contain("trace ring of cpu7")
        .must_contain("stats: cpu")
        .run();
}

#[test]
fn spinlock_rank_violation_names_both_locks() {
    TestBoot::new("rank-violation", 2)
        .must_contain("spinlock rank violation: taking `test-low` (rank 1) while holding `test-high` (rank 2)")
        .run();
}

/// Types the console keys one at a time, each after the previous answer.
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

#[test]
fn console_keys_print_counters_traces_and_interrupts() {
    TestBoot::new("console", 2)
        .responder(Keys { sent: 0 })
        .must_contain("stats: cpu   ticks")
        .must_contain("trace ring of cpu1")
        .must_contain("intr: com1")
        .must_contain("console: quit")
        .run();
}

#[test]
fn token_stress_reports_every_cpu() {
    TestBoot::new("stress", 2)
        .must_contain("stress Token for 1 s on 2 CPUs")
        .must_contain("stress:  all")
        .run();
}
