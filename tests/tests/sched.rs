//! The LWKT scheduler and IPI queues on the real (emulated) machine, at 1, 2,
//! 4 and 8 CPUs.

use wyvern_tests::apic_tests;
use wyvern_tests::harness::TestBoot;
use wyvern_tests::qemu::Apic;

/// Boots self-test `name` at every CPU count.
fn at_all_cpu_counts(name: &str, apic: Apic) {
    for cpus in [1, 2, 4, 8] {
        TestBoot::new(name, cpus).apic(apic).run();
    }
}

apic_tests! {
    fn yield_ping_pong_on_each_cpu(apic) {
        at_all_cpu_counts("yield", apic);
    }

    fn wakeup_ping_pong_across_every_cpu_pair(apic) {
        at_all_cpu_counts("wakeup-pairs", apic);
    }

    fn thread_migrates_round_robin_over_all_cpus(apic) {
        at_all_cpu_counts("migrate", apic);
    }

    fn ten_thousand_threads_leave_frames_and_heap_at_baseline(apic) {
        at_all_cpu_counts("thread-churn", apic);
    }

    fn wakeup_storm_loses_no_wakeup(apic) {
        at_all_cpu_counts("wakeup-storm", apic);
    }

    fn ticks_in_a_critical_section_are_deferred_and_replayed(apic) {
        at_all_cpu_counts("crit-ticks", apic);
    }

    fn cpusync_over_all_cpus_from_all_cpus(apic) {
        at_all_cpu_counts("cpusync", apic);
    }

    fn ipi_fifos_driven_full_from_every_cpu_do_not_deadlock(apic) {
        at_all_cpu_counts("ipi-flood", apic);
    }
}
