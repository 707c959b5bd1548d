//! SMP bring-up: CPUs online at 1–64, ticks, idle halting, APIC ids, NMIs,
//! COM1 input through the I/O APIC.

use std::time::Duration;

use wyvern_tests::harness::TestBoot;
use wyvern_tests::qemu::Responder;

fn smp(cpus: u32) {
    TestBoot::new("smp", cpus)
        .must_contain(&format!("{cpus} of {cpus} CPUs online"))
        .run();
}

#[test]
fn smp_1() {
    smp(1);
}

#[test]
fn smp_2() {
    smp(2);
}

#[test]
fn smp_4() {
    smp(4);
}

#[test]
fn smp_8() {
    smp(8);
}

#[test]
fn smp_16() {
    smp(16);
}

#[test]
fn smp_64() {
    TestBoot::new("smp", 64)
        .memory(512)
        .deadline(Duration::from_secs(240))
        .must_contain("64 of 64 CPUs online")
        .run();
}

#[test]
fn cpu_and_apic_ids_agree_on_every_cpu() {
    TestBoot::new("cpumap", 8).run();
}

#[test]
fn nmi_and_spurious_vector_are_survived() {
    TestBoot::new("nmi", 4)
        .must_contain("took an NMI and go on")
        .run();
}

#[test]
fn periodic_lapic_timer_ticks_every_cpu() {
    TestBoot::new("smp", 4)
        .opt("timer=periodic")
        .must_contain("Periodic timer at 100 Hz")
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

#[test]
fn com1_input_arrives_through_the_io_apic() {
    TestBoot::new("serial-rx", 2)
        .responder(TypeWhenReady)
        .must_contain("receive interrupts")
        .run();
}
