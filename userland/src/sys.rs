//! System calls: [`raw`] issues one with any arguments (the fuzzer needs
//! that); the functions below wrap each call with typed arguments.

use wyvern_abi::syscall::{
    self, AccountInfo, AcpiInfo, CpuStats, Error, FbInfo, Info, MsiTarget, Priority, SpawnOpts,
    ThreadInfo, WaitStatus, hwinfo, nr,
};

/// Issues system call `n` with six arguments; returns the raw `rax`.
///
/// # Safety
///
/// The kernel checks every argument, so no call can harm the kernel; but a
/// call may write through a pointer argument or unmap memory, so the caller
/// answers for what the call does to its own memory.
#[inline(always)]
pub unsafe fn raw(n: u64, a: [u64; 6]) -> u64 {
    let rax: u64;
    // SAFETY: `syscall` enters the kernel, which preserves every register but
    // rax (the result), rcx and r11 (clobbered by the instruction); the
    // caller's contract covers what the call does to memory.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") n => rax,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            in("r9") a[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    rax
}

/// A call that only reads the memory its arguments describe.
fn call(n: u64, a: [u64; 6]) -> Result<u64, Error> {
    // SAFETY: every call this module makes through here reads or writes only
    // memory its typed wrapper passed and owns.
    syscall::decode(unsafe { raw(n, a) })
}

fn args0() -> [u64; 6] {
    [0; 6]
}

fn args1(a: u64) -> [u64; 6] {
    [a, 0, 0, 0, 0, 0]
}

fn args2(a: u64, b: u64) -> [u64; 6] {
    [a, b, 0, 0, 0, 0]
}

/// Does nothing in the kernel.
pub fn nop() -> Result<u64, Error> {
    call(nr::NOP, args0())
}

/// Writes bytes to the console.
pub fn debug_write(b: &[u8]) -> Result<u64, Error> {
    call(nr::DEBUG_WRITE, args2(b.as_ptr() as u64, b.len() as u64))
}

/// Ends the process.
pub fn exit(code: i64) -> ! {
    let _ = call(nr::EXIT, args1(code as u64));
    unreachable!("EXIT returned")
}

/// Starts a thread running `entry(arg)`; returns its id.
pub fn thread_create(entry: extern "C" fn(u64) -> !, arg: u64) -> Result<u64, Error> {
    call(nr::THREAD_CREATE, args2(entry as usize as u64, arg))
}

/// Ends the calling thread.
pub fn thread_exit(code: i64) -> ! {
    let _ = call(nr::THREAD_EXIT, args1(code as u64));
    unreachable!("THREAD_EXIT returned")
}

/// Waits for thread `tid` to end; returns its exit code.
pub fn thread_join(tid: u64) -> Result<i64, Error> {
    call(nr::THREAD_JOIN, args1(tid)).map(|c| c as i64)
}

/// Starts program `name` of the ramdisk with argument `arg`; returns its pid.
pub fn spawn(name: &str, arg: &str) -> Result<u64, Error> {
    call(
        nr::SPAWN,
        [
            name.as_ptr() as u64,
            name.len() as u64,
            arg.as_ptr() as u64,
            arg.len() as u64,
            0,
            0,
        ],
    )
}

/// Starts program `name` with `arg` and `opts` (limits, rights, ceiling).
pub fn spawn_with(name: &str, arg: &str, opts: &SpawnOpts) -> Result<u64, Error> {
    call(
        nr::SPAWN,
        [
            name.as_ptr() as u64,
            name.len() as u64,
            arg.as_ptr() as u64,
            arg.len() as u64,
            core::ptr::from_ref(opts) as u64,
            0,
        ],
    )
}

/// Waits for child `pid` to end.
pub fn wait(pid: u64) -> Result<WaitStatus, Error> {
    let mut st = WaitStatus::default();
    call(nr::WAIT, args2(pid, &raw mut st as u64))?;
    Ok(st)
}

/// Waits for any child to end; returns its pid and status
/// ([`Error::NotFound`] when there is none).
pub fn wait_any() -> Result<(u64, WaitStatus), Error> {
    let mut st = WaitStatus::default();
    let pid = call(nr::WAIT, args2(0, &raw mut st as u64))?;
    Ok((pid, st))
}

/// This process's account: limits, use, rights, ceiling.
pub fn account() -> Result<AccountInfo, Error> {
    let mut a = AccountInfo::default();
    call(nr::ACCOUNT, args1(&raw mut a as u64))?;
    Ok(a)
}

/// Sets process `pid`'s rights and priority ceiling (process manager only).
pub fn set_rights(pid: u64, rights: u64, ceiling: Priority) -> Result<u64, Error> {
    call(nr::SET_RIGHTS, [pid, rights, ceiling as u64, 0, 0, 0])
}

/// Ends process `pid` (a child, or any with the kill right).
pub fn kill(pid: u64) -> Result<u64, Error> {
    call(nr::KILL, args1(pid))
}

/// Lets other threads of this CPU run.
pub fn yield_now() {
    let _ = call(nr::YIELD, args0());
}

/// Blocks for at least `ns` nanoseconds.
pub fn sleep_ns(ns: u64) -> Result<u64, Error> {
    call(nr::SLEEP, args1(ns))
}

/// Nanoseconds since boot.
pub fn clock_ns() -> u64 {
    call(nr::CLOCK, args0()).unwrap_or(0)
}

/// Maps `len` bytes of zeroed memory with `prot` bits; returns the address.
pub fn map(len: u64, prot: u64) -> Result<u64, Error> {
    call(nr::MAP, args2(len, prot))
}

/// Unmaps `len` bytes at `addr`.
///
/// # Safety
///
/// Nothing of the program may use the memory afterwards.
pub unsafe fn unmap(addr: u64, len: u64) -> Result<u64, Error> {
    // SAFETY: the caller promises nothing uses the range any more.
    syscall::decode(unsafe { raw(nr::UNMAP, args2(addr, len)) })
}

/// Sets thread `tid`'s priority (0: the calling thread).
pub fn set_priority(tid: u64, p: Priority) -> Result<u64, Error> {
    call(nr::SET_PRIORITY, args2(tid, p as u64))
}

/// Moves the calling thread to CPU `cpu`, where it stays.
pub fn set_cpu(cpu: u64) -> Result<u64, Error> {
    call(nr::SET_CPU, args1(cpu))
}

/// Who and where the caller is.
pub fn info() -> Info {
    let mut i = Info::default();
    let _ = call(nr::INFO, args1(&raw mut i as u64));
    i
}

/// Every CPU's counters, into `out`; returns how many were written.
pub fn stats(out: &mut [CpuStats]) -> Result<usize, Error> {
    call(nr::STATS, args2(out.as_mut_ptr() as u64, out.len() as u64)).map(|n| n as usize)
}

/// Opens ports `[first, first + count)` to process `pid` (the process
/// manager only).
pub fn io_grant(pid: u64, first: u64, count: u64) -> Result<u64, Error> {
    call(nr::IO_GRANT, [pid, first, count, 0, 0, 0])
}

/// Lets process `pid` map device memory `[phys, phys + len)` (the process
/// manager only; never RAM the kernel manages); `flags` may say
/// `devmap::READ_ONLY`.
pub fn device_grant(pid: u64, phys: u64, len: u64, flags: u64) -> Result<u64, Error> {
    call(nr::DEVICE_GRANT, [pid, phys, len, flags, 0, 0])
}

/// Maps granted device memory `[phys, phys + len)` (`flags`:
/// `wyvern_abi::syscall::devmap`); returns the address of `phys` (the
/// mapping covers whole pages around it). `UNMAP` of that address ends it.
pub fn map_device(phys: u64, len: u64, flags: u64) -> Result<u64, Error> {
    call(nr::MAP_DEVICE, [phys, len, flags, 0, 0, 0])
}

/// Allocates `len` bytes (rounded up to pages, at most
/// `wyvern_abi::syscall::MAX_DMA`) of zeroed, physically contiguous,
/// write-back memory for DMA; returns `(virtual address, physical address)`.
/// Needs the DMA right; charged to the caller's memory. `UNMAP` frees it.
pub fn dma_alloc(len: u64) -> Result<(u64, u64), Error> {
    let mut phys = 0u64;
    let va = call(nr::DMA_ALLOC, [len, &raw mut phys as u64, 0, 0, 0, 0])?;
    Ok((va, phys))
}

/// Allocates a message-signalled interrupt delivering pulse `code` through
/// connection `coid`; returns the handle (`>= MSI_BASE`, for
/// `interrupt_unmask`/`interrupt_detach`) and what the device must write
/// where to raise it. Needs a device grant. Like an attached IRQ, one pulse
/// is delivered and the next waits until `interrupt_unmask(handle)` (an
/// interrupt meanwhile is remembered, not lost).
pub fn msi_attach(coid: u64, code: u64) -> Result<(u64, MsiTarget), Error> {
    let mut t = MsiTarget::default();
    let h = call(nr::MSI_ATTACH, [coid, code, &raw mut t as u64, 0, 0, 0])?;
    Ok((h, t))
}

/// `HWINFO` of `kind`, whose answer is a `T` (a `repr(C)` struct of
/// `u64`s).
fn hwinfo<T: Default>(kind: u64) -> Result<T, Error> {
    let mut i = T::default();
    call(
        nr::HWINFO,
        [kind, &raw mut i as u64, size_of::<T>() as u64, 0, 0, 0],
    )?;
    Ok(i)
}

/// The boot framebuffer.
pub fn fb_info() -> Result<FbInfo, Error> {
    hwinfo(hwinfo::FRAMEBUFFER)
}

/// The machine's memory now (needs the OBSERVE right).
pub fn mem_info() -> Result<wyvern_abi::syscall::MemInfo, Error> {
    hwinfo(hwinfo::MEMORY)
}

/// What ACPI says about PCI configuration space and power.
pub fn acpi_info() -> Result<AcpiInfo, Error> {
    hwinfo(hwinfo::ACPI)
}

/// Turns ISA IRQ `irq` into pulses with `code` through connection `coid`.
pub fn interrupt_attach(irq: u64, coid: u64, code: u64) -> Result<u64, Error> {
    call(nr::INTERRUPT_ATTACH, [irq, coid, code, 0, 0, 0])
}

/// Re-arms attached IRQ `irq`.
pub fn interrupt_unmask(irq: u64) -> Result<u64, Error> {
    call(nr::INTERRUPT_UNMASK, args1(irq))
}

/// Gives IRQ `irq` back to the kernel.
pub fn interrupt_detach(irq: u64) -> Result<u64, Error> {
    call(nr::INTERRUPT_DETACH, args1(irq))
}

/// Takes kernel output into `buf`, waiting while there is none.
pub fn klog_read(buf: &mut [u8]) -> Result<usize, Error> {
    call(
        nr::KLOG_READ,
        args2(buf.as_mut_ptr() as u64, buf.len() as u64),
    )
    .map(|n| n as usize)
}

/// Takes kernel output into `buf` if there is any (0: none now).
pub fn klog_read_now(buf: &mut [u8]) -> Result<usize, Error> {
    call(
        nr::KLOG_READ,
        [buf.as_mut_ptr() as u64, buf.len() as u64, 1, 0, 0, 0],
    )
    .map(|n| n as usize)
}

/// Every thread of the system, into `out`; returns how many were written.
pub fn threads(out: &mut [ThreadInfo]) -> Result<usize, Error> {
    call(
        nr::THREADS,
        args2(out.as_mut_ptr() as u64, out.len() as u64),
    )
    .map(|n| n as usize)
}

/// Makes the kernel print every CPU's trace ring to its log.
pub fn trace() -> Result<u64, Error> {
    call(nr::TRACE, args0())
}

/// Reads the time-stamp counter (allowed in user mode).
#[inline(always)]
pub fn rdtsc() -> u64 {
    let lo: u32;
    let hi: u32;
    // SAFETY: `rdtsc` reads a counter; it has no other effect.
    unsafe {
        core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}
