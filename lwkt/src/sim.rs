//! A simulated machine for the host tests.
//!
//! Every LWKT thread is an OS thread; a simulated CPU is a baton that exactly
//! one of them holds at a time. `switch(from, to)` hands `to` the baton (with
//! the CPU index and `from`) and waits for `from`'s to come back, so the
//! scheduler code runs unchanged, truly in parallel across CPUs, with real
//! races between them. Interrupts — IPIs, clock ticks, device vectors — are
//! posted to a CPU and delivered by whatever thread holds it at the next
//! *window*: `pause`, the idle halt, or a test's explicit [`poll`], and only if
//! that thread has interrupts enabled (tracked per thread, as the kernel's
//! switch saves and restores RFLAGS per thread). Delivery runs the same entry
//! points the kernel's trap path does, then `doreti`.

use std::boxed::Box;
use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;
use std::vec::Vec;

use crate::thread::Thread;
use crate::{Cpu, Machine, World};

/// The simulated machine.
pub struct Sim;

/// Unwinds the OS thread of a thread that exited (after handing its CPU on).
struct SimExit;

/// A baton hand-off: run on `cpu`, switched to by `prev`.
#[derive(Clone, Copy)]
struct Handoff {
    prev: usize,
    cpu: usize,
}

/// Per-thread saved "context": where the baton arrives.
pub struct SimContext {
    slot: Mutex<Option<Handoff>>,
    cv: Condvar,
}

impl SimContext {
    fn give(&self, h: Handoff) {
        *self.slot.lock().unwrap() = Some(h);
        self.cv.notify_one();
    }

    fn take(&self) -> Handoff {
        let mut g = self.slot.lock().unwrap();
        loop {
            if let Some(h) = g.take() {
                return h;
            }
            g = self.cv.wait(g).unwrap();
        }
    }
}

/// What a simulated CPU can be interrupted with.
struct SimCpu {
    ipi: AtomicBool,
    ticks: AtomicU32,
    vectors: AtomicU64,
    /// Idle halt waits here.
    halt: Mutex<()>,
    wake: Condvar,
}

/// One simulated machine.
pub struct Machine_ {
    pub cpus: Vec<&'static Cpu<Sim>>,
    pub world: &'static World<Sim>,
    hw: Vec<SimCpu>,
    pub stacks_alloced: AtomicUsize,
    pub stacks_freed: Arc_<AtomicUsize>,
    /// Device handlers, by vector.
    pub devices: Mutex<Vec<Device>>,
    pub shutdown: AtomicBool,
    /// Set when a simulated thread panicked: the machine is wedged (that
    /// thread held its CPU), so `run` fails the test at once.
    panicked: AtomicBool,
}

type Arc_<T> = std::sync::Arc<T>;

thread_local! {
    static MACHINE: Cell<Option<&'static Machine_>> = const { Cell::new(None) };
    static CPU: Cell<usize> = const { Cell::new(usize::MAX) };
    /// Interrupts enabled for the thread on this OS thread.
    static IF: Cell<bool> = const { Cell::new(true) };
    static IN_DELIVERY: RefCell<u32> = const { RefCell::new(0) };
}

fn machine() -> &'static Machine_ {
    MACHINE.with(Cell::get).expect("not on a simulated CPU")
}

/// A simulated stack: only counted.
pub struct SimStack(Arc_<AtomicUsize>);

impl Drop for SimStack {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl ipi::Platform for Sim {
    fn cpu() -> usize {
        CPU.with(Cell::get)
    }
    fn send_ipi(cpu: usize) {
        let m = machine();
        m.hw[cpu].ipi.store(true, Ordering::SeqCst);
        let _g = m.hw[cpu].halt.lock().unwrap();
        m.hw[cpu].wake.notify_all();
    }
    fn pause() {
        std::thread::yield_now();
        window();
    }
}

impl Machine for Sim {
    type Context = SimContext;
    type Stack = SimStack;

    #[allow(clippy::declare_interior_mutable_const)]
    const NEW_CONTEXT: SimContext = SimContext {
        slot: Mutex::new(None),
        cv: Condvar::new(),
    };

    fn mycpu() -> &'static Cpu<Sim> {
        machine().cpus[CPU.with(Cell::get)]
    }

    fn world() -> &'static World<Sim> {
        machine().world
    }

    fn stack_alloc() -> Option<SimStack> {
        let m = machine();
        m.stacks_alloced.fetch_add(1, Ordering::SeqCst);
        Some(SimStack(m.stacks_freed.clone()))
    }

    fn context_init(td: &'static Thread<Sim>, _stack: &SimStack) {
        let m = machine();
        std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || {
                let h = td.ctx.take();
                MACHINE.with(|c| c.set(Some(m)));
                CPU.with(|c| c.set(h.cpu));
                IF.with(|c| c.set(true));
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let prev = crate::slab::deref(h.prev as *mut Thread<Sim>).unwrap();
                    crate::thread_start::<Sim>(prev);
                }));
                if let Err(e) = r
                    && !e.is::<SimExit>()
                {
                    m.panicked.store(true, Ordering::SeqCst);
                    std::panic::resume_unwind(e);
                }
            })
            .expect("spawning a simulated thread");
    }

    #[allow(unsafe_code)]
    unsafe fn switch(from: &'static Thread<Sim>, to: &'static Thread<Sim>) -> &'static Thread<Sim> {
        let cpu = CPU.with(Cell::get);
        let my_if = IF.with(Cell::get);
        to.ctx.give(Handoff {
            prev: crate::slab::ptr(from) as usize,
            cpu,
        });
        let h = from.ctx.take();
        CPU.with(|c| c.set(h.cpu));
        IF.with(|c| c.set(my_if));
        crate::slab::deref(h.prev as *mut Thread<Sim>).unwrap()
    }

    #[allow(unsafe_code)]
    unsafe fn switch_exit(from: &'static Thread<Sim>, to: &'static Thread<Sim>) -> ! {
        let cpu = CPU.with(Cell::get);
        to.ctx.give(Handoff {
            prev: crate::slab::ptr(from) as usize,
            cpu,
        });
        CPU.with(|c| c.set(usize::MAX));
        std::panic::resume_unwind(Box::new(SimExit))
    }

    fn idle_halt() {
        let m = machine();
        let cpu = CPU.with(Cell::get);
        let hw = &m.hw[cpu];
        {
            let mut g = hw.halt.lock().unwrap();
            while !pending(hw) {
                if m.shutdown.load(Ordering::SeqCst) {
                    drop(g);
                    CPU.with(|c| c.set(usize::MAX));
                    std::panic::resume_unwind(Box::new(SimExit));
                }
                g = hw
                    .wake
                    .wait_timeout(g, Duration::from_millis(50))
                    .unwrap()
                    .0;
            }
        }
        IF.with(|c| c.set(true));
        window();
    }

    fn interrupts_disable() -> bool {
        IF.with(|c| c.replace(false))
    }

    fn interrupts_restore(enabled: bool) {
        IF.with(|c| c.set(enabled));
        if enabled {
            window();
        }
    }

    fn local_or(word: &std::sync::atomic::AtomicU32, bits: u32) {
        word.fetch_or(bits, Ordering::SeqCst);
    }

    fn local_and_not(word: &std::sync::atomic::AtomicU32, bits: u32) {
        word.fetch_and(!bits, Ordering::SeqCst);
    }

    fn interrupt_window() {
        window();
    }

    fn dispatch_device(vector: u8) {
        let f = machine()
            .devices
            .lock()
            .unwrap()
            .iter()
            .find(|(v, _)| *v == vector)
            .map(|(_, f)| *f)
            .unwrap_or_else(|| panic!("no simulated device on vector {vector}"));
        f(vector);
    }
}

fn pending(hw: &SimCpu) -> bool {
    hw.ipi.load(Ordering::SeqCst)
        || hw.ticks.load(Ordering::SeqCst) != 0
        || hw.vectors.load(Ordering::SeqCst) != 0
}

/// An interrupt window: if interrupts are enabled on this thread, deliver what
/// is pending for this CPU, as the hardware would.
pub fn window() {
    let Some(m) = MACHINE.with(Cell::get) else {
        return;
    };
    let cpu = CPU.with(Cell::get);
    if cpu == usize::MAX || !IF.with(Cell::get) {
        return;
    }
    let hw = &m.hw[cpu];
    if !pending(hw) {
        return;
    }
    // The trap: interrupts off for the handler and doreti.
    IF.with(|c| c.set(false));
    if hw.ticks.load(Ordering::SeqCst) != 0 {
        hw.ticks.fetch_sub(1, Ordering::SeqCst);
        crate::clock_interrupt::<Sim>();
        crate::doreti::<Sim>(false);
    } else if hw.ipi.swap(false, Ordering::SeqCst) {
        crate::ipi_interrupt::<Sim>();
        crate::doreti::<Sim>(false);
    } else {
        let v = hw.vectors.load(Ordering::SeqCst);
        if v != 0 {
            let b = v.trailing_zeros();
            hw.vectors.fetch_and(!(1 << b), Ordering::SeqCst);
            crate::device_interrupt::<Sim>(b as u8);
            crate::doreti::<Sim>(false);
        }
    }
    // The CPU may have changed under us (we were preempted and resumed); the
    // restored flag is this thread's own.
    IF.with(|c| c.set(true));
    let _ = IN_DELIVERY.with(|d| *d.borrow());
}

/// Lets pending interrupts in (a test thread's explicit window).
pub fn poll() {
    window();
}

impl Machine_ {
    /// Posts a clock tick to `cpu`.
    pub fn tick(&self, cpu: usize) {
        self.hw[cpu].ticks.fetch_add(1, Ordering::SeqCst);
        let _g = self.hw[cpu].halt.lock().unwrap();
        self.hw[cpu].wake.notify_all();
    }

    /// Raises device vector `v` (< 64) on `cpu`.
    pub fn raise(&self, cpu: usize, v: u8) {
        self.hw[cpu].vectors.fetch_or(1 << v, Ordering::SeqCst);
        let _g = self.hw[cpu].halt.lock().unwrap();
        self.hw[cpu].wake.notify_all();
    }

    /// Stacks allocated minus stacks freed.
    pub fn live_stacks(&self) -> usize {
        self.stacks_alloced.load(Ordering::SeqCst) - self.stacks_freed.load(Ordering::SeqCst)
    }
}

/// A device handler on its vector.
pub type Device = (u8, fn(u8));

/// The machine the calling simulated thread runs on.
pub fn this_machine() -> &'static Machine_ {
    machine()
}

/// Boots a simulated machine of `ncpus` CPUs, runs `main` as a kernel thread on
/// CPU 0, and returns what it returns once it exits. A background thread posts
/// a clock tick to every CPU each `tick` (if given).
pub fn run<R: Send + 'static>(
    ncpus: usize,
    tick: Option<Duration>,
    main: impl FnOnce() -> R + Send + 'static,
) -> R {
    let cpus: Vec<&'static Cpu<Sim>> = (0..ncpus)
        .map(|i| &*Box::leak(Box::new(Cpu::new(i as u32))))
        .collect();
    let m: &'static Machine_ = Box::leak(Box::new(Machine_ {
        cpus: cpus.clone(),
        world: crate::init::<Sim>(cpus),
        hw: (0..ncpus)
            .map(|_| SimCpu {
                ipi: AtomicBool::new(false),
                ticks: AtomicU32::new(0),
                vectors: AtomicU64::new(0),
                halt: Mutex::new(()),
                wake: Condvar::new(),
            })
            .collect(),
        stacks_alloced: AtomicUsize::new(0),
        stacks_freed: Arc_::new(AtomicUsize::new(0)),
        devices: Mutex::new(Vec::new()),
        shutdown: AtomicBool::new(false),
        panicked: AtomicBool::new(false),
    }));
    let (tx, rx) = std::sync::mpsc::channel::<std::thread::Result<R>>();
    let main = Mutex::new(Some(main));
    let main: &'static Mutex<Option<_>> = Box::leak(Box::new(main));
    let booted: &'static std::sync::Barrier = Box::leak(Box::new(std::sync::Barrier::new(ncpus)));
    for i in 0..ncpus {
        let tx = tx.clone();
        std::thread::Builder::new()
            .name(format!("sim-cpu{i}"))
            .spawn(move || {
                MACHINE.with(|c| c.set(Some(m)));
                CPU.with(|c| c.set(i));
                IF.with(|c| c.set(true));
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    crate::bootstrap_cpu::<Sim>(m.cpus[i]);
                    booted.wait();
                    crate::start_cpu::<Sim>();
                    if i == 0 {
                        let f = main.lock().unwrap().take().unwrap();
                        crate::Builder::new("test-main")
                            .cpu(0)
                            .spawn::<Sim>(move || {
                                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
                                if let Err(e) = &r
                                    && e.is::<SimExit>()
                                {
                                    std::panic::resume_unwind(r.err().unwrap());
                                }
                                let _ = tx.send(r);
                            })
                            .unwrap();
                    }
                    crate::idle_loop::<Sim>();
                }));
                if let Err(e) = r
                    && !e.is::<SimExit>()
                {
                    m.panicked.store(true, Ordering::SeqCst);
                    std::panic::resume_unwind(e);
                }
            })
            .unwrap();
    }
    let ticker = tick.map(|t| {
        std::thread::spawn(move || {
            while !m.shutdown.load(Ordering::SeqCst) {
                std::thread::sleep(t);
                for c in 0..ncpus {
                    m.tick(c);
                }
            }
        })
    });
    let mut waited = Duration::ZERO;
    let r = loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(r) => break r,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                if m.panicked.load(Ordering::SeqCst) =>
            {
                m.shutdown.store(true, Ordering::SeqCst);
                panic!("a simulated thread panicked (see above)");
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if waited < Duration::from_secs(20) => {
                waited += Duration::from_millis(100);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                waited = Duration::ZERO;
                eprintln!("simulated machine stalled? state:");
                for c in &m.cpus {
                    let cur = crate::slab::deref(c.curthread.load(Ordering::Relaxed));
                    eprintln!(
                        "  cpu{} cur={:?} runq={} reqflags={:#x} ipi_pending={} ticks={} callouts={} stats={:?}",
                        c.index(),
                        cur,
                        c.runq.len(),
                        c.reqflags(),
                        m.hw[c.index()].ipi.load(Ordering::SeqCst),
                        c.ticks(),
                        c.callouts.armed(),
                        c.stats.snapshot(),
                    );
                    let mut p = c.runq.best();
                    while let Some(t) = p {
                        eprintln!("    runq: {t:?} tokens={}", t.tokens.len());
                        p = c.runq.next_after(t);
                    }
                }
            }
            Err(e) => panic!("simulated machine: {e}"),
        }
    };
    m.shutdown.store(true, Ordering::SeqCst);
    for c in 0..ncpus {
        let _g = m.hw[c].halt.lock().unwrap();
        m.hw[c].wake.notify_all();
    }
    if let Some(t) = ticker {
        t.join().unwrap();
    }
    match r {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e),
    }
}
