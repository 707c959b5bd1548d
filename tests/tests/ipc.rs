//! Message passing between user processes at 1, 2 and 8 CPUs (`ut-ipc`):
//! payloads of 0 B to 64 KiB and scatter/gather, many clients and a server
//! on every CPU, pulses in order and the queue's bound, a killed server, a
//! killed client, a destroyed channel, priority inheritance, bad buffers,
//! the driver calls refused without an I/O grant —
//! run twice, with no channel left and the kernel's memory back at its
//! baseline after the second run.

use wyvern_tests::apic_tests;
use wyvern_tests::harness::TestBoot;
use wyvern_tests::qemu::Apic;

const CASES: [&str; 10] = [
    "payloads",
    "many-clients",
    "pulses",
    "server-killed",
    "client-killed",
    "channel-destroyed",
    "priority-inheritance",
    "bad-buffers",
    "reply-receive",
    "driver-calls-denied",
];

fn ipc(cpus: u32, apic: Apic) {
    let mut boot = TestBoot::new("ipc", cpus)
        .apic(apic)
        .must_contain("IPC done: 10 of 10 passed")
        .must_contain("no channel left, kernel memory back to baseline");
    for c in CASES {
        boot = boot.must_contain(&format!("IPC {c} ok"));
    }
    let out = boot.run();
    assert!(
        !out.lines().any(|l| l.contains("FAILED")),
        "a case failed:\n{}",
        out.tail(40)
    );
}

apic_tests! {
    fn ipc_at_1_cpu(apic) {
        ipc(1, apic);
    }

    fn ipc_at_2_cpus(apic) {
        ipc(2, apic);
    }

    fn ipc_at_8_cpus(apic) {
        ipc(8, apic);
    }
}
