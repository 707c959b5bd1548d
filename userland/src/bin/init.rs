//! The first process. With no argument it greets and stays; with `test` it
//! runs the user-mode test programs, one verdict line each
//! (`USER <name> ok` or `USER <name> FAILED: <why>`), and exits 0 only if all
//! passed; with `spawn-cycles N` it spawns and waits for `true` N times.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use wyvern_user::{WaitStatus, println, process, sys};

wyvern_user::entry!(main);

fn main(arg: &str) -> i64 {
    let _ = wyvern_user::NAME.set("init");
    let mut words = arg.split_whitespace();
    match words.next() {
        None => interactive(),
        Some("test") => tests(),
        Some("spawn-cycles") => {
            spawn_cycles(words.next().and_then(|w| w.parse().ok()).unwrap_or(1000))
        }
        Some(other) => {
            println!("init: unknown argument `{other}` (test, spawn-cycles N)");
            2
        }
    }
}

fn interactive() -> i64 {
    let i = sys::info();
    println!(
        "init: pid {} running in user mode on cpu {} of {}; the kernel console keys still work (h)",
        i.pid, i.cpu, i.ncpus
    );
    // Nothing to serve yet: stay, without using a CPU.
    loop {
        let _ = sys::sleep_ns(3_600_000_000_000);
    }
}

/// How a test program must end.
enum Expect {
    Exit0,
    Killed(u64),
    Exited(i64),
}

fn verdict(name: &str, r: Result<(), String>) -> bool {
    match r {
        Ok(()) => {
            println!("USER {name} ok");
            true
        }
        Err(why) => {
            println!("USER {name} FAILED: {why}");
            false
        }
    }
}

fn run(prog: &str, arg: &str, expect: &Expect, within_ns: Option<u64>) -> Result<(), String> {
    let t0 = sys::clock_ns();
    let st = process::run(prog, arg).map_err(|e| format!("spawn/wait: {e}"))?;
    let took = sys::clock_ns() - t0;
    let ok = match *expect {
        Expect::Exit0 => st.kind == WaitStatus::EXITED && st.code == 0,
        Expect::Exited(c) => st.kind == WaitStatus::EXITED && st.code == c,
        Expect::Killed(v) => st.kind == WaitStatus::KILLED && st.vector == v,
    };
    if !ok {
        return Err(format!("`{prog} {arg}` {}", process::describe(&st)));
    }
    if let Some(limit) = within_ns
        && took > limit
    {
        return Err(format!("`{prog} {arg}` took {} ms", took / 1_000_000));
    }
    Ok(())
}

fn tests() -> i64 {
    let mut passed = 0;
    let mut total = 0;
    let mut check = |name: &str, r: Result<(), String>| {
        total += 1;
        if verdict(name, r) {
            passed += 1;
        }
    };
    for prog in ["ut-basic", "ut-fpu", "ut-preempt", "ut-shootdown"] {
        check(prog, run(prog, "", &Expect::Exit0, None));
    }
    // Faults: each kills only its process, with the vector it deserves.
    let faults: [(&str, u64); 11] = [
        ("read-null", 14),
        ("write-code", 14),
        ("exec-data", 14),
        ("read-kernel", 14),
        ("noncanonical", 13),
        ("divide", 0),
        ("invalid-opcode", 6),
        ("privileged", 13),
        ("port-io", 13),
        ("breakpoint", 3),
        ("stack-overflow", 14),
    ];
    for (kind, vector) in faults {
        check(
            &format!("fault-{kind}"),
            run("ut-fault", kind, &Expect::Killed(vector), None),
        );
    }
    // A process ends promptly whatever its threads do.
    check(
        "kill-busy-process",
        run("ut-kill", "fault", &Expect::Killed(14), Some(5_000_000_000)),
    );
    check(
        "exit-busy-process",
        run("ut-kill", "exit", &Expect::Exited(7), Some(5_000_000_000)),
    );
    // Several processes at once, their threads sharing CPUs: each keeps its
    // own FPU state.
    let n = sys::info().ncpus;
    let r = (|| {
        let pids: Vec<u64> = (0..2 * n)
            .map(|_| process::spawn("ut-fpu", "child"))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("spawn: {e}"))?;
        for pid in pids {
            let st = process::wait(pid).map_err(|e| format!("wait: {e}"))?;
            if st.kind != WaitStatus::EXITED || st.code != 0 {
                return Err(format!("a copy {}", process::describe(&st)));
            }
        }
        Ok(())
    })();
    check("concurrent-processes", r);
    println!("USER done: {passed} of {total} passed");
    if passed == total { 0 } else { 1 }
}

fn spawn_cycles(n: u64) -> i64 {
    let t0 = sys::clock_ns();
    for i in 0..n {
        match process::run("true", "") {
            Ok(st) if st.kind == WaitStatus::EXITED && st.code == 0 => {}
            Ok(st) => {
                println!("init: cycle {i}: true {}", process::describe(&st));
                return 1;
            }
            Err(e) => {
                println!("init: cycle {i}: {e}");
                return 1;
            }
        }
    }
    println!(
        "init: {n} spawn/exit cycles in {} ms",
        (sys::clock_ns() - t0) / 1_000_000
    );
    0
}
