//! Child processes and the end of this one.

use wyvern_abi::syscall::{Error, WaitStatus};

use crate::sys;

/// Starts program `name` of the ramdisk with argument `arg`.
pub fn spawn(name: &str, arg: &str) -> Result<u64, Error> {
    sys::spawn(name, arg)
}

/// Waits for child `pid`.
pub fn wait(pid: u64) -> Result<WaitStatus, Error> {
    sys::wait(pid)
}

/// Runs `name arg` and waits for it.
pub fn run(name: &str, arg: &str) -> Result<WaitStatus, Error> {
    wait(spawn(name, arg)?)
}

/// Ends child `pid` (it need not be waited for yet).
pub fn kill(pid: u64) -> Result<u64, Error> {
    sys::kill(pid)
}

/// Ends the process with `code`.
pub fn exit(code: i64) -> ! {
    sys::exit(code)
}

/// Describes how a child ended, for messages.
pub fn describe(st: &WaitStatus) -> alloc::string::String {
    match st.kind {
        WaitStatus::EXITED => alloc::format!("exited with {}", st.code),
        WaitStatus::KILLED => alloc::format!(
            "killed by vector {} at rip {:#x} (addr {:#x})",
            st.vector,
            st.rip,
            st.addr
        ),
        WaitStatus::TERMINATED => alloc::string::String::from("terminated by its parent"),
        k => alloc::format!("ended in an unknown way {k}"),
    }
}
