//! Commits one user-mode fault, named by the argument; the kernel must kill
//! this process (and only it) and report why. Exit code 1 means the fault did
//! not happen.
#![no_std]
#![no_main]

use core::arch::asm;

use wyvern_user::println;

wyvern_user::entry!(main);

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    let buf = [n; 64];
    core::hint::black_box(&buf);
    recurse(n + 1) + buf[3]
}

fn main(kind: &str) -> i64 {
    let _ = wyvern_user::NAME.set("ut-fault");
    // SAFETY: each arm does exactly the forbidden thing it is named after;
    // the kernel ends the process before anything else happens.
    unsafe {
        match kind {
            "read-null" => {
                core::hint::black_box(core::ptr::read_volatile(core::ptr::null::<u64>()));
            }
            "write-code" => {
                let p = main as *const () as *mut u8;
                core::ptr::write_volatile(p, 0xcc);
            }
            "exec-data" => {
                static mut DATA: [u8; 16] = [0xc3; 16];
                let f: extern "C" fn() = core::mem::transmute(&raw mut DATA);
                f();
            }
            "read-kernel" => {
                core::hint::black_box(core::ptr::read_volatile(
                    0xffff_ffff_8000_0000 as *const u64,
                ));
            }
            "noncanonical" => {
                core::hint::black_box(core::ptr::read_volatile(
                    0x0000_8000_0000_0000 as *const u64,
                ));
            }
            "divide" => {
                asm!("xor edx, edx", "xor eax, eax", "xor ecx, ecx", "div ecx", out("eax") _, out("edx") _, out("ecx") _);
            }
            "invalid-opcode" => asm!("ud2"),
            "privileged" => asm!("cli"),
            // COM1's data port: no I/O grant, so the TSS bitmap denies it.
            "port-io" => asm!("in al, dx", in("dx") 0x3f8u16, out("al") _),
            "breakpoint" => asm!("int3"),
            "stack-overflow" => {
                core::hint::black_box(recurse(0));
            }
            other => {
                println!("ut-fault: unknown kind `{other}`");
                return 2;
            }
        }
    }
    println!("ut-fault: `{kind}` did not fault");
    1
}
