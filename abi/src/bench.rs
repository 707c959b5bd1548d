//! The benchmarks of `bench=` mode: names, units, CPU counts and counters,
//! shared by the kernel that runs them and the host that reads their lines.
//!
//! The kernel prints one `BENCH <json>` line ([`crate::result::BENCH_TAG`])
//! per figure; the JSON fields are described in the kernel's `bench` module.

/// On how many CPUs a benchmark runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cpus {
    /// The boot CPU alone.
    One,
    /// The boot CPU and one other (skipped on a single CPU).
    Pair,
    /// Every online CPU.
    All,
    /// 1, 2, 4, 8, … up to the online CPUs: a scaling curve.
    Scaling,
}

impl Cpus {
    /// The CPU counts a benchmark runs at on `ncpus` online CPUs, ascending.
    pub fn counts(self, ncpus: usize) -> impl Iterator<Item = usize> {
        let (first, last, step_all) = match self {
            Cpus::One => (1, 1, false),
            Cpus::Pair => (2, if ncpus >= 2 { 2 } else { 0 }, false),
            Cpus::All => (ncpus, ncpus, false),
            Cpus::Scaling => (1, ncpus, true),
        };
        core::iter::successors(Some(first), move |&k| step_all.then_some(k * 2))
            .take_while(move |&k| k <= last && k >= 1)
    }
}

/// One benchmark: what it is called, what one operation is, where it runs and
/// what it measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub name: &'static str,
    /// What one operation is.
    pub unit: &'static str,
    pub cpus: Cpus,
    /// It runs user programs: each repetition starts a new process, whose
    /// costs depend on the kernel heap's state, so repetitions may differ by
    /// a few instructions (boots still repeat).
    pub user: bool,
    /// One line for tables and `docs/BENCHMARKS.md`.
    pub about: &'static str,
}

/// Every benchmark, in the order a full run measures them.
pub const SPECS: &[Spec] = &[
    Spec {
        name: "switch",
        unit: "switch",
        cpus: Cpus::Scaling,
        user: false,
        about: "two threads on a CPU yield to each other (LWKT switch)",
    },
    Spec {
        name: "wakeup-local",
        unit: "wakeup",
        cpus: Cpus::Scaling,
        user: false,
        about: "tsleep/wakeup ping-pong between two threads of one CPU",
    },
    Spec {
        name: "wakeup-cross-near",
        unit: "wakeup",
        cpus: Cpus::Pair,
        user: false,
        about: "tsleep/wakeup ping-pong, boot CPU and its nearest CPU, through the IPI queue",
    },
    Spec {
        name: "wakeup-cross-far",
        unit: "wakeup",
        cpus: Cpus::Pair,
        user: false,
        about: "tsleep/wakeup ping-pong, boot CPU and its farthest CPU, through the IPI queue",
    },
    Spec {
        name: "ipi-rtt",
        unit: "round trip",
        cpus: Cpus::Pair,
        user: false,
        about: "a function queued to another CPU queues one back (IPI queue round trip)",
    },
    Spec {
        name: "cpusync-all",
        unit: "cpusync",
        cpus: Cpus::All,
        user: false,
        about: "cpusync of every CPU running an empty function",
    },
    Spec {
        name: "token",
        unit: "acquire+release",
        cpus: Cpus::Scaling,
        user: false,
        about: "one shared token taken and released on every CPU (contended beyond 1)",
    },
    Spec {
        name: "token-private",
        unit: "acquire+release",
        cpus: Cpus::Scaling,
        user: false,
        about: "a token per CPU taken and released (independent work)",
    },
    Spec {
        name: "preempt-intr",
        unit: "interrupt",
        cpus: Cpus::One,
        user: false,
        about: "device interrupt raised -> its interrupt thread running, preempting a busy thread",
    },
    Spec {
        name: "preempt-deferred",
        unit: "interrupt",
        cpus: Cpus::One,
        user: false,
        about: "end of a critical section with an interrupt deferred -> interrupt thread running",
    },
    Spec {
        name: "thread-create-exit",
        unit: "thread",
        cpus: Cpus::One,
        user: false,
        about: "create a thread that returns at once, and join it",
    },
    Spec {
        name: "tick",
        unit: "tick",
        cpus: Cpus::One,
        user: false,
        about: "the scheduler clock interrupt, on a CPU running a loop",
    },
    Spec {
        name: "null-syscall",
        unit: "syscall",
        cpus: Cpus::One,
        user: true,
        about: "a user thread's system call that does nothing, measured in user mode",
    },
    Spec {
        name: "user-thread-create-exit",
        unit: "thread",
        cpus: Cpus::One,
        user: true,
        about: "a user thread creates a thread that returns at once, and joins it",
    },
    Spec {
        name: "process-spawn-exit",
        unit: "process",
        cpus: Cpus::All,
        user: true,
        about: "a process spawns `true` from the ramdisk and waits for it (placed on the next CPU)",
    },
    Spec {
        name: "ipc-rtt-local",
        unit: "round trip",
        cpus: Cpus::One,
        user: true,
        about: "a null message in registers between two processes on one CPU: MSG_CALL, answered by MSG_REPLY_WAIT (the fast path)",
    },
    Spec {
        name: "ipc-rtt-local-buf",
        unit: "round trip",
        cpus: Cpus::One,
        user: true,
        about: "ipc-rtt-local with the buffer calls: MSG_SEND of empty lists, answered by MSG_REPLY_RECEIVE",
    },
    Spec {
        name: "ipc-rtt-cross",
        unit: "round trip",
        cpus: Cpus::Pair,
        user: true,
        about: "ipc-rtt-local's round trip, client on the boot CPU, server on CPU 1",
    },
    Spec {
        name: "ipc-pulse",
        unit: "pulse",
        cpus: Cpus::One,
        user: true,
        about: "MSG_SEND_PULSE to a server on the same CPU that receives it with MSG_REPLY_WAIT (sender yields when the queue is full)",
    },
    Spec {
        name: "ipc-null",
        unit: "round trip",
        cpus: Cpus::Scaling,
        user: true,
        about: "ipc-rtt-local's round trips, a client and its server on each CPU, all CPUs at once (flat = scaling)",
    },
    Spec {
        name: "usched-pull",
        unit: "move",
        cpus: Cpus::Pair,
        user: false,
        about: "the user scheduler's balancer: CPU 1's user side goes idle, asks the boot CPU (threads waiting there for its user turn) for one, and the thread moves and takes CPU 1's turn",
    },
];

/// The benchmark called `name`.
pub fn spec(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.name == name)
}

/// The counters every result carries, as deltas summed over all CPUs, in the
/// order the kernel prints them.
pub const COUNTERS: [&str; 20] = [
    "switches",
    "preempt_hit",
    "preempt_miss",
    "preempt_weird",
    "idle_halts",
    "wakeups",
    "token_collisions",
    "irqs_replayed",
    "ipiq_replayed",
    "ticks",
    "created",
    "exited",
    "syscalls",
    "ipi_sent",
    "ipi_received",
    "ipis",
    "ipi_avoided",
    "fifo_full",
    "cpusyncs",
    "ipc_handoffs",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(c: Cpus, n: usize) -> Vec<usize> {
        c.counts(n).collect()
    }

    #[test]
    fn cpu_counts() {
        assert_eq!(counts(Cpus::One, 8), [1]);
        assert_eq!(counts(Cpus::Pair, 8), [2]);
        assert_eq!(counts(Cpus::Pair, 1), Vec::<usize>::new());
        assert_eq!(counts(Cpus::All, 6), [6]);
        assert_eq!(counts(Cpus::Scaling, 8), [1, 2, 4, 8]);
        assert_eq!(counts(Cpus::Scaling, 6), [1, 2, 4]);
        assert_eq!(counts(Cpus::Scaling, 1), [1]);
    }

    #[test]
    fn names_are_unique_and_plain() {
        for (i, s) in SPECS.iter().enumerate() {
            assert!(SPECS[..i].iter().all(|t| t.name != s.name), "{}", s.name);
            assert!(
                s.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
                "{}",
                s.name
            );
            assert_eq!(spec(s.name), Some(s));
        }
        assert!(spec("nope").is_none());
    }
}
