//! The shell, on a user-mode console: its argument names the console
//! server (`console`, COM1's driver, by default; `screen`, the framebuffer
//! terminal). The process manager starts one on every console there is.
//! Ctrl-C typed on the console ends the program the shell waits for (a
//! second thread waits for the console's `CON_INTR`). Commands:
//!
//! | command | does |
//! |---|---|
//! | `help` | lists the commands |
//! | `echo TEXT` | says TEXT |
//! | `ps` | every thread: CPU, process, priority, state, switches, name, what it sleeps on |
//! | `cpus` | the CPUs online, with their ticks, threads and switches |
//! | `mem` | memory: frames in use of the total, the kernel heap |
//! | `stats` | every CPU's counters |
//! | `trace` | every CPU's trace ring (printed by the kernel) |
//! | `spawn NAME [ARG…]` | runs a program of the ramdisk through the process manager and waits for it (`&` at the end: does not wait) |
//! | `kill PID` | ends a process the process manager started |
//! | `bench [N]` | N null IPC round trips from user space (same CPU, then across CPUs) |
//! | `reboot` | resets the machine (through the power server) |
//! | `poweroff` | turns the machine off (ACPI S5, through the power server) |
//! | `quit` | ends the shell (and with it the run) |
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec;

use core::sync::atomic::{AtomicU64, Ordering};

use wyvern_abi::syscall::{CpuStats, Error, ThreadInfo, WaitStatus};
use wyvern_user::svc::{Console, LINE_MAX, POWER, PWR_OFF, PWR_REBOOT, Procman};
use wyvern_user::{ipc, process, sys, thread};

wyvern_user::entry!(main);

const HELP: &str = "\
commands:
  help              this list
  echo TEXT         say TEXT
  ps                threads on every CPU: state, priority
  cpus              the CPUs online
  mem               memory in use
  stats             every CPU's counters
  trace             every CPU's trace ring
  spawn NAME [ARG]  run a program (add & to not wait)
  kill PID          end a process
  bench [N]         IPC round trips from user space
  reboot            reset the machine
  poweroff          turn the machine off
  quit              end the shell
";

/// The program the shell waits for (0: none): what Ctrl-C ends.
static FOREGROUND: AtomicU64 = AtomicU64::new(0);

struct Shell {
    con: Console,
    pm: Procman,
    /// What a command said, written with the next prompt in one request:
    /// the prompt then never trails output the person at the other end has
    /// already seen, so what they type after it is echoed after it.
    out: core::cell::RefCell<String>,
}

impl Shell {
    fn say(&self, s: &str) {
        self.out.borrow_mut().push_str(s);
    }

    /// Writes what was said, then the prompt, in one console write.
    fn prompt(&self) {
        let mut out = self.out.borrow_mut();
        out.push_str("wyvern> ");
        let _ = self.con.write(out.as_bytes());
        out.clear();
    }

    /// Writes what was said now.
    fn flush(&self) {
        let mut out = self.out.borrow_mut();
        if !out.is_empty() {
            let _ = self.con.write(out.as_bytes());
            out.clear();
        }
    }

    fn ps(&self) {
        let t0 = sys::clock_ns();
        let mut t = vec![ThreadInfo::default(); 512];
        let n = match sys::threads(&mut t) {
            Ok(n) => n,
            Err(e) => return self.say(&format!("ps: {e}\n")),
        };
        let mut out = String::from(
            "CPU   PID PRI STATE      SWITCHES NAME               TID   TICKS   EST PIN WAIT\n",
        );
        for i in &t[..n] {
            let state = match i.state {
                ThreadInfo::RUNNING => "running",
                ThreadInfo::RUNNABLE => "runnable",
                ThreadInfo::SLEEPING => "sleeping",
                ThreadInfo::WAITING => "waiting",
                _ => "blocked",
            };
            let name = cstr(&i.name);
            let wmesg = if i.state == ThreadInfo::SLEEPING {
                cstr(&i.wmesg)
            } else {
                ""
            };
            let (tid, ticks, est) = if i.pid == 0 {
                ("-".into(), "-".into(), "-".into())
            } else {
                (
                    format!("{}", i.tid),
                    format!("{}", i.ticks),
                    format!("{}", i.estcpu),
                )
            };
            let pin = if i.flags & ThreadInfo::PINNED != 0 {
                "pin"
            } else {
                "-"
            };
            out += &format!(
                "{:>3} {:>5} {:>3} {:<9} {:>9} {:<16} {:>5} {:>7} {:>5} {:>3} {}\n",
                i.cpu, i.pid, i.priority, state, i.switches, name, tid, ticks, est, pin, wmesg
            );
        }
        let ms = (sys::clock_ns() - t0) / 1_000_000;
        out += &format!("{n} threads (listed in {ms} ms)\n");
        self.say(&out);
    }

    fn counters(&self) -> alloc::vec::Vec<CpuStats> {
        let mut s = vec![CpuStats::default(); 64];
        let n = sys::stats(&mut s).unwrap_or(0);
        s.truncate(n);
        s
    }

    fn cpus(&self) {
        let s = self.counters();
        let mut out = String::new();
        for c in &s {
            out += &format!(
                "cpu{}: ticks {} threads {} switches {} idle halts {}\n",
                c.cpu, c.ticks, c.threads, c.switches, c.idle_halts
            );
        }
        out += &format!("{} CPUs online\n", s.len());
        self.say(&out);
    }

    fn stats(&self) {
        let mut out = String::from(
            "cpu    ticks   intrs  syscalls  switches  p.hit p.miss  halts ipi.sent ipi.recv  colls handoffs\n",
        );
        for c in self.counters() {
            out += &format!(
                "{:>3} {:>8} {:>7} {:>9} {:>9} {:>6} {:>6} {:>6} {:>8} {:>8} {:>6} {:>8}\n",
                c.cpu,
                c.ticks,
                c.interrupts,
                c.syscalls,
                c.switches,
                c.preempt_hit,
                c.preempt_miss,
                c.idle_halts,
                c.ipi_sent,
                c.ipi_received,
                c.token_collisions,
                c.ipc_handoffs
            );
        }
        out += "end of counters\n";
        self.say(&out);
    }

    fn spawn(&self, args: &str) {
        let args = args.trim();
        let (args, wait) = match args.strip_suffix('&') {
            Some(a) => (a.trim(), false),
            None => (args, true),
        };
        let (name, arg) = args.split_once(' ').unwrap_or((args, ""));
        if name.is_empty() {
            return self.say("spawn: which program?\n");
        }
        let pid = match self.pm.spawn(name, arg.trim()) {
            Ok(p) => p,
            Err(e) => return self.say(&format!("spawn {name}: {e}\n")),
        };
        if !wait {
            return self.say(&format!("{name}: pid {pid}\n"));
        }
        FOREGROUND.store(pid, Ordering::Release);
        let r = self.pm.wait(pid);
        FOREGROUND.store(0, Ordering::Release);
        match r {
            Ok(st) => self.say(&format!("{name} (pid {pid}) {}\n", process::describe(&st))),
            Err(e) => self.say(&format!("wait {pid}: {e}\n")),
        }
    }

    fn kill(&self, arg: &str) {
        match arg.trim().parse::<u64>() {
            Ok(pid) => match self.pm.kill(pid) {
                Ok(_) => self.say(&format!("killed {pid}\n")),
                Err(e) => self.say(&format!("kill {pid}: {e}\n")),
            },
            Err(_) => self.say("kill: which pid?\n"),
        }
    }

    /// Null round trips through `ubench` (which exits with the TSC ticks
    /// they took).
    fn bench(&self, arg: &str) {
        let n: u64 = arg.trim().parse().unwrap_or(1000).clamp(1, 1_000_000);
        let mut runs = vec![("same CPU", "ipc-local")];
        if sys::info().ncpus > 1 {
            runs.push(("across CPUs", "ipc-cross"));
        }
        for (what, op) in runs {
            let r = self
                .pm
                .spawn("ubench", &format!("{op} {n} 0"))
                .and_then(|pid| self.pm.wait(pid));
            match r {
                Ok(st) if st.kind == WaitStatus::EXITED && st.code > 0 => self.say(&format!(
                    "bench: {n} IPC round trips {what}: {} TSC ticks per round trip\n",
                    st.code as u64 / n
                )),
                Ok(st) => self.say(&format!("bench: ubench {}\n", process::describe(&st))),
                Err(e) => self.say(&format!("bench: {e}\n")),
            }
        }
    }

    /// Asks the power server to turn the machine off or reset it; returns
    /// only if it could not.
    fn power(&self, op: u64, what: &str) {
        let coid = match self.pm.name_open(POWER, false) {
            Ok(c) => c,
            Err(e) => return self.say(&format!("{what}: no power server: {e}\n")),
        };
        self.say(&format!("shell: {what}\n"));
        self.flush();
        let r = ipc::send(coid, &op.to_le_bytes(), &mut []);
        let _ = ipc::disconnect(coid);
        match r {
            Ok(_) => self.say(&format!("{what}: the machine is still on\n")),
            Err(e) => self.say(&format!("{what}: {e}\n")),
        }
    }
}

/// Waits for Ctrl-C on console `name` and ends the foreground program.
fn interrupter(name: &'static str) {
    let _ = sys::set_priority(0, wyvern_abi::syscall::Priority::Realtime);
    let Ok(pm) = Procman::connect() else { return };
    let Ok(con) = Console::open_named(&pm, name) else {
        return;
    };
    loop {
        match con.wait_intr() {
            Ok(_) => {
                let pid = FOREGROUND.load(Ordering::Acquire);
                if pid != 0 {
                    let _ = pm.kill(pid);
                }
            }
            Err(_) => {
                // Busy (another shell waits there) or the console is gone
                // for good: nothing to do but look again later.
                let _ = sys::sleep_ns(1_000_000_000);
            }
        }
    }
}

fn cstr(b: &[u8]) -> &str {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    core::str::from_utf8(&b[..end]).unwrap_or("?")
}

fn main(arg: &str) -> i64 {
    let _ = wyvern_user::NAME.set("shell");
    let name: &'static str = match arg.trim() {
        "" | "console" => "console",
        "screen" => wyvern_user::svc::SCREEN,
        other => {
            wyvern_user::println!("shell: no console `{other}`");
            return 1;
        }
    };
    // Above the programs it starts (the process manager gives it the
    // ceiling): `ps` and `kill` answer while they run.
    let _ = sys::set_priority(0, wyvern_abi::syscall::Priority::Realtime);
    let pm = Procman::connect().expect("no process manager");
    let con = Console::open_named(&pm, name).expect("no console");
    if thread::spawn(move || interrupter(name)).is_err() {
        wyvern_user::println!("shell: no Ctrl-C on {name}");
    }
    let sh = Shell {
        con,
        pm,
        out: core::cell::RefCell::new(String::new()),
    };
    let i = sys::info();
    sh.say(&format!(
        "shell: ready on {} CPUs (help lists the commands)\n",
        i.ncpus
    ));
    let mut line = [0u8; LINE_MAX];
    loop {
        sh.prompt();
        let n = match sh.con.read_line(&mut line) {
            Ok(n) => n.min(line.len()),
            Err(Error::Gone | Error::NotFound) if sh.con.reopen().is_ok() => {
                // The console's server was restarted: prompt on the new one.
                continue;
            }
            Err(e) => {
                sh.say(&format!("shell: console: {e}\n"));
                sh.flush();
                return 1;
            }
        };
        let text = core::str::from_utf8(&line[..n]).unwrap_or("");
        let (cmd, rest) = text.trim().split_once(' ').unwrap_or((text.trim(), ""));
        match cmd {
            "" => {}
            "help" => sh.say(HELP),
            "echo" => {
                sh.say(rest.trim());
                sh.say("\n");
            }
            "ps" => sh.ps(),
            "cpus" => sh.cpus(),
            "mem" => match sys::mem_info() {
                Ok(m) => sh.say(&format!(
                    "mem: {} of {} KiB in use, kernel heap {} bytes in {} allocations\n\
                     kernel stacks: {} in use, at most {} at once, {} slots made; \
                     IPI FIFOs: {} made, {} bytes\n",
                    (m.total_frames - m.free_frames) * 4,
                    m.total_frames * 4,
                    m.heap_bytes,
                    m.heap_allocations,
                    m.kernel_stacks,
                    m.kernel_stack_peak,
                    m.kernel_stack_slots,
                    m.ipi_fifos,
                    m.ipi_fifo_bytes
                )),
                Err(e) => sh.say(&format!("mem: {e}\n")),
            },
            "stats" => sh.stats(),
            "trace" => match sys::trace() {
                Ok(_) => sh.say("trace: the kernel's log follows\n"),
                Err(e) => sh.say(&format!("trace: {e}\n")),
            },
            "spawn" => sh.spawn(rest),
            "kill" => sh.kill(rest),
            "bench" => sh.bench(rest),
            "reboot" => sh.power(PWR_REBOOT, "reboot"),
            "poweroff" => sh.power(PWR_OFF, "poweroff"),
            "quit" | "exit" => {
                sh.say("shell: bye\n");
                sh.flush();
                return 0;
            }
            other => sh.say(&format!("unknown command `{other}` (help lists them)\n")),
        }
    }
}
