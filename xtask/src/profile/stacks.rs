//! Inclusive counts from a pc trace: a shadow call stack, and the folded
//! stacks and the per-function table it yields.
//!
//! The trace has no frames, only one pc per instruction; the call stack is
//! inferred from how each instruction left the previous one ([`Flow`],
//! decoded from the previous instruction's bytes in the ELF) and from the
//! stack pointer:
//!
//! * **Threads.** A kernel stack is one 128 KiB slot (`kernel/src/mm/stack.rs`),
//!   so `(rsp - 1) >> 17` names the thread in kernel mode. The shadow stack
//!   is a list of *segments*, one per thread met, each with its own frames.
//!   When the kernel `rsp` moves to another thread's slot (a context switch
//!   returning into the other thread's frames), a new segment starts on top,
//!   drawn under a `[switch]` frame: what the thread switched to costs is
//!   part of what the switching operation costs. When it moves back to a
//!   thread of a lower segment, the segments above it end. A segment begun
//!   in user mode takes the first kernel slot its thread runs on (a user
//!   thread enters the kernel on its own stack; user `rsp` never names a
//!   thread).
//! * **Calls.** After a `call`, `syscall` (or a jump, an interrupt or an
//!   exception landing exactly on a function's first byte) the function
//!   reached is pushed: the kernel entry sits on top of the user frames
//!   that made the system call.
//! * **Returns.** After a `ret`, `iretq` or `sysret`, the frames above the
//!   function reached are popped. If it is not in the segment (a thread
//!   returning into frames entered before the trace began), the segment
//!   starts again from it.
//! * **Other.** A jump inside the function changes nothing; a jump into the
//!   middle of another function pops to it if it is in the segment, else
//!   pushes it.
//!
//! The trace starts at the marker, with the marker's caller (from the
//! return address) and the marker as the first segment, all under a root
//! frame named after the benchmark, so the root's inclusive count is the
//! total by construction and every function's is at most that.

use std::collections::BTreeMap;

/// The frame drawn where a thread switched to another.
pub const SWITCH: usize = usize::MAX;

/// How an instruction passes control on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// `call`, or `syscall` (entering the kernel).
    Call,
    /// `ret`, `iretq`, `sysret`.
    Return,
    /// Anything else: falling through, jumps, traps.
    Other,
}

/// How the instruction whose bytes start `code` passes control on.
pub fn classify(code: &[u8]) -> Flow {
    let mut i = 0;
    // Legacy and REX prefixes.
    while let Some(&b) = code.get(i) {
        if matches!(
            b,
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x66 | 0x67 | 0xf2 | 0xf3
        ) || (0x40..=0x4f).contains(&b)
        {
            i += 1;
        } else {
            break;
        }
    }
    match (code.get(i), code.get(i + 1)) {
        (Some(0xe8), _) => Flow::Call,
        // FF /2 (near call) and /3 (far call).
        (Some(0xff), Some(&m)) if matches!((m >> 3) & 7, 2 | 3) => Flow::Call,
        (Some(0xc3 | 0xc2 | 0xcb | 0xca | 0xcf), _) => Flow::Return,
        (Some(0x0f), Some(0x05)) => Flow::Call,
        (Some(0x0f), Some(0x07)) => Flow::Return,
        _ => Flow::Other,
    }
}

/// The kernel thread a kernel `rsp` is on: its stack slot.
pub fn stack_slot(rsp: u64) -> u64 {
    rsp.wrapping_sub(1) >> 17
}

#[derive(Debug, Clone)]
struct Segment {
    /// The thread's stack slot, once known.
    slot: Option<u64>,
    frames: Vec<usize>,
}

/// The inferred call stack (module docs).
#[derive(Debug, Clone)]
pub struct ShadowStack {
    segs: Vec<Segment>,
}

impl ShadowStack {
    /// A stack of `frames`, innermost last, on thread `slot` if known.
    pub fn new(frames: Vec<usize>, slot: Option<u64>) -> Self {
        ShadowStack {
            segs: vec![Segment { slot, frames }],
        }
    }

    /// The next instruction is in function `f` (at its first byte if
    /// `at_start`), reached by `flow`; `slot` is the kernel thread when the
    /// stack pointer was read and is a kernel one.
    pub fn step(&mut self, f: usize, at_start: bool, flow: Flow, slot: Option<u64>) {
        if let Some(k) = slot {
            let top = self.segs.last_mut().expect("a segment");
            match top.slot {
                None => top.slot = Some(k),
                Some(t) if t == k => {}
                Some(_) => match self.segs.iter().rposition(|s| s.slot == Some(k)) {
                    Some(i) => self.segs.truncate(i + 1),
                    None => self.segs.push(Segment {
                        slot: Some(k),
                        frames: Vec::new(),
                    }),
                },
            }
        }
        let frames = &mut self.segs.last_mut().expect("a segment").frames;
        let found = frames.iter().rposition(|&g| g == f);
        match flow {
            Flow::Call => frames.push(f),
            Flow::Return => match found {
                Some(i) => frames.truncate(i + 1),
                None => {
                    frames.clear();
                    frames.push(f);
                }
            },
            Flow::Other => {
                if frames.last() == Some(&f) {
                } else if at_start {
                    frames.push(f);
                } else if let Some(i) = found {
                    frames.truncate(i + 1);
                } else {
                    frames.push(f);
                }
            }
        }
    }

    /// The whole stack, outermost first, with [`SWITCH`] between threads.
    pub fn frames(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, s) in self.segs.iter().enumerate() {
            if i > 0 {
                out.push(SWITCH);
            }
            out.extend_from_slice(&s.frames);
        }
        out
    }
}

/// Instructions per distinct stack (outermost first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Folded {
    pub stacks: BTreeMap<Vec<usize>, u64>,
}

/// One function's line of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub func: usize,
    pub inclusive: u64,
    pub exclusive: u64,
}

impl Folded {
    /// Counts one instruction executed with `stack`.
    pub fn add(&mut self, stack: Vec<usize>) {
        *self.stacks.entry(stack).or_default() += 1;
    }

    pub fn total(&self) -> u64 {
        self.stacks.values().sum()
    }

    /// Every function's inclusive count (instructions with it anywhere on
    /// the stack, counted once however often it is there) and exclusive
    /// count (with it on top); by inclusive, then exclusive, descending,
    /// then by id. [`SWITCH`] frames are left out.
    pub fn rows(&self) -> Vec<Row> {
        let mut by: BTreeMap<usize, (u64, u64)> = BTreeMap::new();
        for (stack, &n) in &self.stacks {
            let mut seen: Vec<usize> = stack.iter().copied().filter(|&f| f != SWITCH).collect();
            if let Some(&top) = stack.last().filter(|&&f| f != SWITCH) {
                by.entry(top).or_default().1 += n;
            }
            seen.sort_unstable();
            seen.dedup();
            for f in seen {
                by.entry(f).or_default().0 += n;
            }
        }
        let mut rows: Vec<Row> = by
            .into_iter()
            .map(|(func, (inclusive, exclusive))| Row {
                func,
                inclusive,
                exclusive,
            })
            .collect();
        rows.sort_by(|a, b| {
            b.inclusive
                .cmp(&a.inclusive)
                .then(b.exclusive.cmp(&a.exclusive))
                .then(a.func.cmp(&b.func))
        });
        rows
    }

    /// The folded-stack text (`root;a;b count` lines, sorted), naming
    /// frames with `name`.
    pub fn text(&self, root: &str, name: impl Fn(usize) -> String) -> String {
        let mut lines: Vec<String> = self
            .stacks
            .iter()
            .map(|(stack, n)| {
                let mut line = root.to_owned();
                for &f in stack {
                    line.push(';');
                    line.push_str(&if f == SWITCH {
                        "[switch]".to_owned()
                    } else {
                        name(f).replace(';', ":")
                    });
                }
                format!("{line} {n}")
            })
            .collect();
        lines.sort();
        let mut out = lines.join("\n");
        out.push('\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        assert_eq!(classify(&[0xe8, 1, 2, 3, 4]), Flow::Call);
        assert_eq!(classify(&[0xff, 0xd0]), Flow::Call); // call rax
        assert_eq!(classify(&[0x41, 0xff, 0xd3]), Flow::Call); // call r11
        assert_eq!(classify(&[0xff, 0x15, 0, 0, 0, 0]), Flow::Call); // call [rip+x]
        assert_eq!(classify(&[0xff, 0xe0]), Flow::Other); // jmp rax
        assert_eq!(classify(&[0xc3]), Flow::Return);
        assert_eq!(classify(&[0xf3, 0xc3]), Flow::Return); // rep ret
        assert_eq!(classify(&[0x48, 0xcf]), Flow::Return); // iretq
        assert_eq!(classify(&[0x0f, 0x05]), Flow::Call); // syscall
        assert_eq!(classify(&[0x48, 0x0f, 0x07]), Flow::Return); // sysretq
        assert_eq!(classify(&[0xe9, 0, 0, 0, 0]), Flow::Other); // jmp
        assert_eq!(classify(&[0x0f, 0x84, 0, 0, 0, 0]), Flow::Other); // je
        assert_eq!(classify(&[]), Flow::Other);
        assert_eq!(stack_slot(0x2_0000), 0);
        assert_eq!(stack_slot(0x2_0001), 1);
    }

    // Functions of the synthetic traces.
    const LOOP: usize = 0;
    const MARK: usize = 1;
    const SEND: usize = 2;
    const ENTRY: usize = 3;
    const DISPATCH: usize = 4;
    const SWITCHFN: usize = 5;
    const TSLEEP: usize = 6;
    const SERVER: usize = 7;

    /// Runs a trace of (function, at start, flow, slot) from a stack of
    /// the loop and the marker, as the profiler does.
    fn run(trace: &[(usize, bool, Flow, Option<u64>)]) -> Folded {
        let mut s = ShadowStack::new(vec![LOOP, MARK], None);
        let mut f = Folded::default();
        f.add(s.frames());
        for &(func, start, flow, slot) in trace {
            s.step(func, start, flow, slot);
            f.add(s.frames());
        }
        f
    }

    fn row(f: &Folded, func: usize) -> (u64, u64) {
        let r = f.rows().into_iter().find(|r| r.func == func).unwrap();
        (r.inclusive, r.exclusive)
    }

    #[test]
    fn a_system_call() {
        use Flow::*;
        let f = run(&[
            (LOOP, false, Return, None),     // ret from the marker
            (SEND, true, Call, None),        // call send
            (SEND, false, Other, None),      // syscall instruction
            (ENTRY, true, Call, None),       // the kernel entry
            (ENTRY, false, Other, Some(9)),  // on the thread's stack
            (DISPATCH, true, Call, Some(9)), // call dispatch
            (DISPATCH, false, Other, None),  // ret
            (ENTRY, false, Return, Some(9)), // back in the entry; sysret
            (SEND, false, Return, None),     // back in user mode
            (LOOP, false, Return, None),     // ret to the loop
        ]);
        assert_eq!(f.total(), 11);
        assert_eq!(row(&f, LOOP), (11, 2));
        assert_eq!(row(&f, MARK), (1, 1));
        assert_eq!(row(&f, SEND), (8, 3));
        assert_eq!(row(&f, ENTRY), (5, 3));
        assert_eq!(row(&f, DISPATCH), (2, 2));
        let names = ["loop", "mark", "send", "entry", "dispatch"];
        let text = f.text("op", |i| names[i].to_owned());
        assert!(text.contains("op;loop;send;entry;dispatch 2\n"));
        assert!(text.contains("op;loop;mark 1\n"));
    }

    #[test]
    fn a_switch_and_back() {
        use Flow::*;
        let f = run(&[
            (LOOP, false, Return, None),
            (SEND, true, Call, None),
            (ENTRY, true, Call, None),
            (ENTRY, false, Other, Some(9)), // adopts slot 9
            (SWITCHFN, true, Call, Some(9)),
            // The switch returns on the server's stack (slot 4) into
            // frames entered before the trace.
            (TSLEEP, false, Return, Some(4)),
            (SERVER, false, Return, Some(4)),
            (SERVER, false, Other, None),
            (SWITCHFN, true, Call, Some(4)),
            // Back on the client's stack: the server's segment ends.
            (ENTRY, false, Return, Some(9)),
            (SEND, false, Return, None),
            (LOOP, false, Return, None),
        ]);
        assert_eq!(f.total(), 13);
        let rows = f.rows();
        assert_eq!(rows[0].func, LOOP);
        assert_eq!(rows[0].inclusive, 13);
        // Everything the server did is under the client's switch.
        assert_eq!(row(&f, SWITCHFN), (5, 2));
        assert_eq!(row(&f, SERVER), (3, 2));
        assert!(
            f.stacks
                .contains_key(&vec![LOOP, SEND, ENTRY, SWITCHFN, SWITCH, SERVER])
        );
        assert!(
            f.stacks
                .contains_key(&vec![LOOP, SEND, ENTRY, SWITCHFN, SWITCH, SERVER, SWITCHFN])
        );
        assert_eq!(row(&f, SEND), (10, 2));
    }

    #[test]
    fn jumps_and_recursion() {
        use Flow::*;
        let f = run(&[
            (LOOP, false, Return, None),
            (SEND, true, Call, None),
            // A tail call: a jump to a function's start pushes it.
            (DISPATCH, true, Other, None),
            // Its `ret` returns past the caller to the loop.
            (LOOP, false, Return, None),
            // A recursive call counts the function once for inclusive.
            (SEND, true, Call, None),
            (SEND, true, Call, None),
            (SEND, false, Return, None),
            // A jump into the middle of a function not on the stack.
            (TSLEEP, false, Other, None),
        ]);
        assert_eq!(row(&f, DISPATCH), (1, 1));
        assert_eq!(row(&f, SEND), (6, 4));
        // The return from the inner call cannot be told from a jump inside
        // the outer one: the stack stays one deeper until the outer returns.
        assert!(f.stacks.contains_key(&vec![LOOP, SEND, SEND, TSLEEP]));
        assert_eq!(row(&f, LOOP), (f.total(), 2));
    }
}
