//! The LWKT scheduler and IPI queues on the real (emulated) machine, at 1, 2,
//! 4 and 8 CPUs.

use wyvern_tests::harness::TestBoot;

/// Boots self-test `name` at every CPU count.
fn at_all_cpu_counts(name: &str) {
    for cpus in [1, 2, 4, 8] {
        TestBoot::new(name, cpus).run();
    }
}

#[test]
fn yield_ping_pong_on_each_cpu() {
    at_all_cpu_counts("yield");
}

#[test]
fn wakeup_ping_pong_across_every_cpu_pair() {
    at_all_cpu_counts("wakeup-pairs");
}

#[test]
fn thread_migrates_round_robin_over_all_cpus() {
    at_all_cpu_counts("migrate");
}

#[test]
fn ten_thousand_threads_leave_frames_and_heap_at_baseline() {
    at_all_cpu_counts("thread-churn");
}

#[test]
fn wakeup_storm_loses_no_wakeup() {
    at_all_cpu_counts("wakeup-storm");
}

#[test]
fn ticks_in_a_critical_section_are_deferred_and_replayed() {
    at_all_cpu_counts("crit-ticks");
}

#[test]
fn cpusync_over_all_cpus_from_all_cpus() {
    at_all_cpu_counts("cpusync");
}

#[test]
fn ipi_fifos_driven_full_from_every_cpu_do_not_deadlock() {
    at_all_cpu_counts("ipi-flood");
}
