//! Message passing between user processes at 1, 2 and 8 CPUs (`ut-ipc`):
//! payloads of 0 B to 64 KiB and scatter/gather, many clients and a server
//! on every CPU, pulses in order and the queue's bound, a killed server, a
//! killed client, a destroyed channel, priority inheritance, bad buffers,
//! reply-and-receive, messages in registers (`MSG_CALL`, `MSG_REPLY_WAIT`)
//! against buffer parties and their refusals, a thread's remembered
//! look-ups never outliving a detach or destroy, the driver calls refused
//! without an I/O grant —
//! run twice, with no channel left and the kernel's memory back at its
//! baseline after the second run; and at 1 and 8 CPUs again with the fast
//! paths off (`ipcfast=off`), every message on the general path.

use wyvern_tests::apic_tests;
use wyvern_tests::harness::TestBoot;
use wyvern_tests::qemu::Apic;

const CASES: [&str; 12] = [
    "payloads",
    "many-clients",
    "pulses",
    "server-killed",
    "client-killed",
    "channel-destroyed",
    "priority-inheritance",
    "bad-buffers",
    "reply-receive",
    "registers",
    "remembered-lookups",
    "driver-calls-denied",
];

fn ipc(cpus: u32, apic: Apic) {
    run(TestBoot::new("ipc", cpus).apic(apic));
}

/// The same with the fast paths off (`ipcfast=off`): every message takes
/// the general path, whose results the fast paths must give.
fn ipc_general_path(cpus: u32, apic: Apic) {
    run(TestBoot::new("ipc", cpus)
        .apic(apic)
        .opt("ipcfast=off")
        .must_contain("IPC fast paths off"));
}

fn run(boot: TestBoot) {
    let mut boot = boot
        .must_contain("IPC done: 12 of 12 passed")
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

    fn ipc_general_path_at_1_cpu(apic) {
        ipc_general_path(1, apic);
    }

    fn ipc_general_path_at_8_cpus(apic) {
        ipc_general_path(8, apic);
    }
}
