//! User mode at 1 and 8 CPUs: the user test programs under init (one verdict
//! line each), user faults killing only their process with a report, random
//! system calls on every CPU, a thousand process spawn/exit cycles — with
//! the kernel's memory back at its baseline afterwards — and the user
//! scheduler spreading and sharing the CPUs.

use wyvern_tests::apic_tests;
use wyvern_tests::harness::TestBoot;
use wyvern_tests::qemu::Apic;

/// The test programs `init test` runs, by their verdict names.
const PROGRAMS: [&str; 18] = [
    "ut-basic",
    "ut-fpu",
    "ut-preempt",
    "ut-shootdown",
    "fault-read-null",
    "fault-write-code",
    "fault-exec-data",
    "fault-read-kernel",
    "fault-noncanonical",
    "fault-divide",
    "fault-invalid-opcode",
    "fault-privileged",
    "fault-port-io",
    "fault-breakpoint",
    "fault-stack-overflow",
    "kill-busy-process",
    "exit-busy-process",
    "concurrent-processes",
];

fn user_programs(cpus: u32, apic: Apic) {
    let mut boot = TestBoot::new("user", cpus)
        .apic(apic)
        .must_contain("USER done: 18 of 18 passed");
    for p in PROGRAMS {
        boot = boot.must_contain(&format!("USER {p} ok"));
    }
    // Each fault is reported once, in one line, and only its process dies.
    for cause in [
        "#PF page fault at rip",
        "#GP general protection at rip",
        "#DE divide error at rip",
        "#UD invalid opcode at rip",
        "#BP breakpoint at rip",
    ] {
        boot = boot.must_contain(cause);
    }
    let out = boot.must_contain("`ut-fault` thread 1 on cpu").run();
    let kills = out
        .lines()
        .filter(|l| l.starts_with("user fault: ") && l.ends_with("process killed"))
        .count();
    // Eleven ut-fault kinds and ut-kill's fault: one report each.
    assert_eq!(kills, 12, "user fault reports:\n{}", out.tail(60));
}

apic_tests! {
    fn user_programs_at_1_cpu(apic) {
        user_programs(1, apic);
    }

    fn user_programs_at_8_cpus(apic) {
        user_programs(8, apic);
    }

    fn random_syscalls_on_every_cpu_leave_no_trace(apic) {
        for cpus in [1, 8] {
            TestBoot::new("user-fuzz", cpus)
                .apic(apic)
                .must_contain("kernel memory back to baseline")
                .run();
        }
    }

    fn chaos_of_processes_on_every_cpu_leaves_no_trace(apic) {
        for cpus in [1, 8] {
            TestBoot::new("user-chaos", cpus)
                .apic(apic)
                .deadline(std::time::Duration::from_secs(300))
                .must_contain("kernel memory back to baseline")
                .run();
        }
    }

    /// The user scheduler: 16 busy threads started on CPU 0 spread over
    /// every CPU within a bounded number of ticks, each gets its share of
    /// the CPUs' time within 10 %, a pinned thread stays pinned. With xAPIC
    /// under icount, where every vCPU gets the same guest time, shares are
    /// compared across all threads; QEMU cannot run x2APIC under icount
    /// ("Bad icount read"), so there vCPUs get what the busy host gives
    /// them and shares are compared among the threads of each CPU.
    fn busy_threads_from_one_cpu_spread_and_share_fairly(apic) {
        for cpus in [8, 4, 2, 1] {
            let mut boot = TestBoot::new("user-usched", cpus)
                .apic(apic)
                .deadline(std::time::Duration::from_secs(300))
                .must_contain("ut-usched: ok")
                .must_contain("user-usched: ok");
            if apic == Apic::XApic {
                boot = boot.icount(8).opt("global=1");
            }
            boot.run();
        }
    }

    fn a_thousand_processes_come_and_go_without_a_leak(apic) {
        for cpus in [1, 8] {
            TestBoot::new("user-spawn", cpus)
                .apic(apic)
                .must_contain("init: 1000 spawn/exit cycles in")
                .run();
        }
    }
}
