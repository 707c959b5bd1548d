//! Foundation: boot at 1 and 8 CPUs, fatal-error reports, memory under stress
//! (booting and the panic's NMIs to other CPUs in both local APIC modes).

use wyvern_tests::apic_tests;
use wyvern_tests::harness::TestBoot;

apic_tests! {
    fn boots_on_one_cpu(apic) {
        TestBoot::new("boot", 1).apic(apic).run();
    }

    fn boots_on_eight_cpus(apic) {
        TestBoot::new("boot", 8).apic(apic).run();
    }

    fn panic_is_reported(apic) {
        TestBoot::new("panic", 4)
            .apic(apic)
            .must_contain("PANIC on CPU 0: deliberate panic from the panic self-test")
            .must_contain("BT #0 ")
            .run();
    }
}

#[test]
fn page_fault_is_caught_and_reported() {
    TestBoot::new("pagefault", 1)
        .must_contain("FATAL TRAP: #PF page fault (vector 14)")
        .must_contain("cr2=0xffffa17ffffff120 cause: read of a not-present page")
        .must_contain("BT #0 ")
        .run();
}

/// At 4 CPUs, so the dying CPU also stops the others (an NMI to each).
#[test]
fn stack_overflow_hits_the_guard_page() {
    TestBoot::new("stackoverflow", 1)
        .must_contain("KERNEL STACK OVERFLOW on CPU 0: kernel stack #")
        .run();
}

#[test]
fn frames_and_heap_return_to_baseline_under_stress() {
    TestBoot::new("memstress", 1).run();
}
