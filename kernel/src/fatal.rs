//! The end of a boot that went wrong: panics and fatal traps.
//!
//! Every fatal path — the panic handler, a fatal exception, a stack overflow —
//! ends in [`die`]. The first CPU to get there owns the ending: it puts the
//! console in panic mode, stops the other CPUs, lets a running self-test decide
//! whether this was the failure it provoked, and exits QEMU (or halts on real
//! hardware). A CPU that dies while another is already dying just halts; a CPU
//! that faults again while dying exits at once rather than recurse.

use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::arch::backtrace;
use crate::arch::cpu;
use crate::arch::qemu::{self, ExitCode};
use crate::arch::trap::TrapFrame;
use crate::{console, percpu, println, selftest};

/// What killed the boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fatal {
    /// A kernel panic.
    Panic,
    /// A fatal exception or unexpected interrupt.
    Trap { vector: u8, addr: Option<u64> },
    /// A kernel stack ran into its guard.
    StackOverflow { addr: u64 },
}

/// Set by the first CPU in `die`.
static STOPPING: AtomicBool = AtomicBool::new(false);
/// Index of that CPU.
static DYING_CPU: AtomicU32 = AtomicU32::new(u32::MAX);

/// Whether a CPU is already ending the boot.
pub fn stopping() -> bool {
    STOPPING.load(Ordering::Acquire)
}

/// Ends the boot. Any context.
pub fn die(kind: Fatal) -> ! {
    console::enter_panic_mode();
    let me = percpu::cpu_index();
    if STOPPING.swap(true, Ordering::AcqRel) {
        if DYING_CPU.load(Ordering::Acquire) == me {
            println!("fatal error on CPU {me} while handling a fatal error; exiting");
            qemu::exit(ExitCode::Failure);
        }
        // Another CPU owns the ending and will stop us.
        cpu::halt_forever();
    }
    DYING_CPU.store(me, Ordering::Release);
    crate::smp::stop_others();
    crate::stats::dump();
    crate::trace::dump_all();
    let code = selftest::verdict_on_fatal(kind);
    qemu::exit(code)
}

/// An NMI sent by the dying CPU reached this one: stop here.
pub fn stopped_by_nmi(_frame: &mut TrapFrame) -> ! {
    cpu::halt_forever()
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    cpu::interrupts_disable();
    console::enter_panic_mode();
    let cpu = percpu::cpu_index();
    match info.location() {
        Some(loc) => println!(
            "PANIC on CPU {cpu}: {} at {}:{}:{}",
            info.message(),
            loc.file(),
            loc.line(),
            loc.column()
        ),
        None => println!("PANIC on CPU {cpu}: {}", info.message()),
    }
    backtrace::print_current();
    die(Fatal::Panic)
}
