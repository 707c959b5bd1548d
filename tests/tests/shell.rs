//! The interactive system at 1, 2 and 8 CPUs, driven from the host over the
//! serial line: the process manager starts the user-mode COM1 driver and
//! the shell; every command answers as documented (the console echoing
//! what is typed, backspace erasing); `quit` ends the shell, the process
//! manager ends the console, and COM1 goes back to the kernel.

use wyvern_tests::apic_tests;
use wyvern_tests::harness::TestBoot;
use wyvern_tests::qemu::{Apic, Responder};

/// Types the next command when the previous one's last line appears.
struct Typist {
    cpus: u32,
    step: usize,
}

impl Responder for Typist {
    fn on_line(&mut self, line: &str) -> Option<Vec<u8>> {
        let across = self.cpus > 1;
        let next: &[u8] = match self.step {
            0 if line.contains("shell: ready on") => b"help\r",
            1 if line.contains("quit              end the shell") => b"ps\r",
            2 if line.contains(" threads (listed in ") => b"cpus\r",
            3 if line.ends_with("CPUs online") => b"stats\r",
            4 if line.contains("end of counters") => b"spawn true\r",
            5 if line.contains("true (pid") => b"kill 999\r",
            6 if line.contains("kill 999: not found") => b"nosuch\x7f\x7fx\r",
            7 if line.contains("unknown command `nosux`") => b"bench 50\r",
            8 if line.contains("round trips same CPU") && !across => b"quit\r",
            8 if line.contains("round trips across CPUs") => b"quit\r",
            _ => return None,
        };
        self.step += 1;
        Some(next.to_vec())
    }
}

fn shell(cpus: u32, apic: Apic) {
    let out = TestBoot::new("shell", cpus)
        .apic(apic)
        .responder(Typist { cpus, step: 0 })
        .must_contain("wyvern> help")
        .must_contain("CPU   PID PRI STATE      SWITCHES NAME")
        .must_contain(&format!("{cpus} CPUs online"))
        .must_contain("cpu    ticks   intrs  syscalls  switches")
        .must_contain("true (pid")
        .must_contain("exited with 0")
        .must_contain("IPC round trips same CPU")
        .must_contain("shell: bye")
        .must_contain("shell: procman ended; COM1 back with the kernel")
        .run();
    // `ps` lists the servers, each with its priority and state.
    for name in ["procman", "console", "shell"] {
        assert!(
            out.lines().any(|l| l.contains(name) && l.contains(" 8 ")),
            "`ps` shows no {name} thread at priority 8 (real-time, given by the process manager):\n{}",
            out.tail(60)
        );
    }
    // The typed line was echoed and then erased by the two DELs.
    assert!(
        out.lines().any(|l| l.starts_with("wyvern> nosuch")),
        "no echo of the typed line:\n{}",
        out.tail(40)
    );
}

apic_tests! {
    fn shell_at_1_cpu(apic) {
        shell(1, apic);
    }

    fn shell_at_2_cpus(apic) {
        shell(2, apic);
    }

    fn shell_at_8_cpus(apic) {
        shell(8, apic);
    }
}
