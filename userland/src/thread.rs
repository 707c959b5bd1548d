//! Threads of the process: [`spawn`] a closure, [`JoinHandle::join`] it.

use alloc::boxed::Box;

use wyvern_abi::syscall::Error;

use crate::sys;

/// A thread started by [`spawn`].
#[derive(Debug)]
pub struct JoinHandle {
    tid: u64,
}

impl JoinHandle {
    /// The thread's id.
    pub fn id(&self) -> u64 {
        self.tid
    }

    /// Waits for the thread to end; returns its exit code (0 when its
    /// closure returned).
    pub fn join(self) -> Result<i64, Error> {
        sys::thread_join(self.tid)
    }
}

type Job = Box<dyn FnOnce() + Send + 'static>;

extern "C" fn trampoline(arg: u64) -> ! {
    // SAFETY: `spawn` passed the address of a leaked `Box<Job>`, and this
    // thread is its only user.
    let job = unsafe { Box::from_raw(arg as *mut Job) };
    job();
    sys::thread_exit(0)
}

/// Starts a thread running `f`.
/// `NoMemory` when the program's heap cannot hold the closure (as when the
/// kernel refuses the thread), never an allocation-failure panic.
pub fn spawn(f: impl FnOnce() + Send + 'static) -> Result<JoinHandle, Error> {
    let inner: Job = Box::try_new(f).map_err(|_| Error::NoMemory)?;
    let job: Box<Job> = Box::try_new(inner).map_err(|_| Error::NoMemory)?;
    let arg = Box::into_raw(job);
    match sys::thread_create(trampoline, arg as u64) {
        Ok(tid) => Ok(JoinHandle { tid }),
        Err(e) => {
            // SAFETY: the thread was not created: the box is still ours.
            drop(unsafe { Box::from_raw(arg) });
            Err(e)
        }
    }
}
