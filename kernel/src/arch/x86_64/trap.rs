//! The one trap frame, and the dispatch every vector goes through.
//!
//! Every vector's entry stub (see [`super::idt`]) pushes a dummy error code when
//! the CPU does not push one, then the vector number, then all fifteen general
//! registers, so every trap — exception, device interrupt, IPI, timer — reaches
//! [`trap_dispatch`] with the same [`TrapFrame`] on the interrupted stack. The
//! frame is the saved state of the interrupted context: handlers may edit it
//! (fault recovery moves `rip`), and the way out restores exactly what it holds.
//!
//! # Vectors
//!
//! | vectors   | use                                                        |
//! |-----------|------------------------------------------------------------|
//! | 0–31      | exceptions ([`super::exception`])                          |
//! | 32–47     | the legacy PICs, remapped and fully masked (spurious only) |
//! | 48–239    | device interrupts and kernel services, registered at boot  |
//! | 240–255   | local APIC: timer, IPIs, error, spurious                   |

use core::sync::atomic::{AtomicUsize, Ordering};

use super::exception;

/// Saved state of an interrupted context, lowest address first.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// Vector number, pushed by the stub.
    pub vector: u64,
    /// Error code, pushed by the CPU or 0 by the stub.
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// Byte offset of `cs` in the frame, used by the entry stubs.
pub const FRAME_CS_OFFSET: usize = core::mem::offset_of!(TrapFrame, cs);
/// Byte offset of `vector`: where the stubs' own pushes end.
pub const FRAME_VECTOR_OFFSET: usize = core::mem::offset_of!(TrapFrame, vector);

impl TrapFrame {
    /// Whether the trap came from user mode (ring 3).
    pub fn user_mode(&self) -> bool {
        self.cs & 3 == 3
    }
}

/// A handler for a vector at or above 32. Runs with interrupts disabled on the
/// interrupted context's stack; it must not block.
pub type Handler = fn(&mut TrapFrame);

const NO_HANDLER: usize = 0;
static HANDLERS: [AtomicUsize; 256] = [const { AtomicUsize::new(NO_HANDLER) }; 256];

/// Installs `handler` for `vector` (32–255). Panics if the vector is an
/// exception or already taken: two drivers on one vector is a boot-time bug.
///
/// Any context.
pub fn register(vector: u8, handler: Handler) {
    assert!(vector >= 32, "vector {vector} is an exception");
    let prev = HANDLERS[usize::from(vector)].swap(handler as usize, Ordering::AcqRel);
    assert!(prev == NO_HANDLER, "vector {vector} registered twice");
}

/// Called by the common entry stub with the frame it built.
///
/// # Safety
///
/// Only the entry stub calls it, with `frame` pointing to the frame it pushed.
#[unsafe(no_mangle)]
unsafe extern "C" fn trap_dispatch(frame: *mut TrapFrame) {
    // SAFETY: the stub passes the frame it just pushed on this stack (condition 1);
    // it stays there, unaliased, until this function returns.
    let frame = unsafe { &mut *frame };
    // SMAP in every kernel context: the user may have set AC, and a trap
    // taken inside the copy routine (between its `stac` and `clac`) arrives
    // with AC set too. The frame keeps the interrupted context's AC for
    // `iretq`.
    super::protect::clac();
    let vector = frame.vector as usize;
    if vector != 2 {
        // NMIs count themselves (they may interrupt this very increment).
        let cpu = crate::percpu::mycpu();
        cpu.traps.inc();
        cpu.vectors[vector].inc();
    }
    if vector < 32 {
        exception::handle(frame);
        // A user-mode exception that returns (a stack grown on demand) goes
        // back the way every other return to user mode does: `doreti` and
        // the user turn (the handler may have blocked and given it up). Not
        // the machine's own (NMI, double fault, machine check): they may
        // not block.
        if frame.user_mode() && !matches!(vector, 2 | 8 | 18) && crate::sched::ready() {
            super::cpu::interrupts_disable();
            crate::user::before_user_return(frame);
        }
        return;
    }
    let handler = HANDLERS[vector].load(Ordering::Acquire);
    if handler == NO_HANDLER {
        exception::unexpected_interrupt(frame);
        return;
    }
    // SAFETY: only `register` stores into HANDLERS, and it stores `Handler`
    // function pointers (non-zero), so a non-zero value is one.
    let handler: Handler = unsafe { core::mem::transmute::<usize, Handler>(handler) };
    handler(frame);
    // The way out: a preemption the handler asked for, deferred work; back to
    // user mode, what the thread owes first (a pending reschedule, the end of
    // a killed process).
    if crate::sched::ready() {
        if frame.user_mode() {
            crate::user::before_user_return(frame);
        } else {
            lwkt::doreti::<crate::sched::X86>(false);
        }
    }
}
