//! SMP bring-up in both local APIC modes: CPUs online at 1–64, ticks, idle
//! halting, APIC ids, NMIs, COM1 input through the I/O APIC, the periodic
//! timer, and the firmware's APIC hand-over states.

use std::time::Duration;

use wyvern_tests::apic_tests;
use wyvern_tests::harness::TestBoot;
use wyvern_tests::qemu::{Apic, Responder};

fn smp(cpus: u32, apic: Apic) {
    TestBoot::new("smp", cpus)
        .apic(apic)
        .must_contain(&format!("{cpus} of {cpus} CPUs online"))
        .run();
}

/// Types `wyvern` on the guest's COM1 once it says it is ready.
struct TypeWhenReady;

impl Responder for TypeWhenReady {
    fn on_line(&mut self, line: &str) -> Option<Vec<u8>> {
        line.contains("serial-rx: ready for input")
            .then(|| b"wyvern\r".to_vec())
    }
}

apic_tests! {
    fn smp_1(apic) {
        smp(1, apic);
    }

    fn smp_2(apic) {
        smp(2, apic);
    }

    fn smp_4(apic) {
        smp(4, apic);
    }

    fn smp_8(apic) {
        smp(8, apic);
    }

    fn smp_16(apic) {
        smp(16, apic);
    }

    fn smp_64(apic) {
        TestBoot::new("smp", 64)
            .apic(apic)
            .memory(512)
            .deadline(Duration::from_secs(240))
            .must_contain("64 of 64 CPUs online")
            .run();
    }

    fn cpu_and_apic_ids_agree_on_every_cpu(apic) {
        TestBoot::new("cpumap", 8).apic(apic).run();
    }

    fn nmi_and_spurious_vector_are_survived(apic) {
        TestBoot::new("nmi", 4)
            .apic(apic)
            .must_contain("took an NMI and go on")
            .run();
    }

    fn periodic_lapic_timer_ticks_every_cpu(apic) {
        TestBoot::new("smp", 4)
            .apic(apic)
            .opt("timer=periodic")
            .must_contain("Periodic timer at 100 Hz")
            .run();
    }

    fn com1_input_arrives_through_the_io_apic(apic) {
        TestBoot::new("serial-rx", 2)
            .apic(apic)
            .responder(TypeWhenReady)
            .must_contain("receive interrupts")
            .run();
    }
}
