//! From a guest pc to a function: the symbols of the kernel ELF and of the
//! user program's, each at the address it runs at, and their code bytes
//! (what the shadow stack decodes the previous instruction from).
//!
//! The kernel is a static PIE loaded at [`KERNEL_BASE`]; position-independent
//! user programs at [`USER_BASE`] (`kernel/src/user/elf.rs`). The profiler
//! checks both against the guest's memory at the first breakpoint hit.
//! A pc belongs to the nearest symbol at or below it in an executable
//! section (so an assembler label inside a function names the code after
//! it, as `nm` would); a pc below every symbol, or past the end of the last
//! one's section, is an unknown function of its side (`[kernel ?]`,
//! `[user ?]`).

use std::path::Path;

use anyhow::{Context, Result};
use object::{Object, ObjectSection, ObjectSymbol, SectionKind, SymbolKind};

/// Where the kernel ELF's address 0 is in the guest.
pub const KERNEL_BASE: u64 = 0xffff_ffff_8000_0000;
/// Where a user program's address 0 is.
pub const USER_BASE: u64 = 0x40_0000;

/// Whether `addr` is in the kernel half.
pub fn is_kernel(addr: u64) -> bool {
    addr >= 0xffff_8000_0000_0000
}

/// One function (or assembler label) at its run-time address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Func {
    pub start: u64,
    pub name: String,
}

/// An executable section's bytes at their run-time address.
struct Code {
    start: u64,
    bytes: Vec<u8>,
}

/// The functions of the kernel and the user program, and their code.
pub struct Symbols {
    /// Sorted by `start`; the last two are the unknown kernel and user
    /// functions, whose `start` is never a pc's.
    funcs: Vec<Func>,
    /// The executable sections: a pc outside them is in no known function.
    code: Vec<Code>,
    known: usize,
}

/// The function name without its hash, shortened for a table: the
/// workspace's own crate names dropped (`wyvern::`, the kernel, and
/// `wyvern_user::`), and inside `<A as B>` and generic argument lists each
/// path cut to its last segment (two for a closure), with deeper generic
/// arguments folded (`<…>`). Still unambiguous in practice.
pub fn short_name(demangled: &str) -> String {
    let s = demangled
        .replace("wyvern_user::", "")
        .replace("wyvern::", "");
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let qualified = b[i] == b'<' && (i == 0 || b[i - 1] == b':' || b[i - 1] == b'<');
        let generic = b[i..].starts_with(b"::<");
        if !(qualified || generic) {
            out.push(b[i] as char);
            i += 1;
            continue;
        }
        let open = if generic { i + 2 } else { i };
        let close = matching(b, open);
        let inner = &s[open + 1..close];
        if generic {
            let args: Vec<String> = split_top(inner, ", ")
                .into_iter()
                .map(last_segment)
                .collect();
            out.push_str(&format!("::<{}>", args.join(", ")));
        } else {
            let parts: Vec<String> = split_top(inner, " as ")
                .into_iter()
                .map(last_segment)
                .collect();
            out.push_str(&format!("<{}>", parts.join(" as ")));
        }
        i = close + 1;
    }
    out
}

/// The index of the `>` closing the `<` at `open` (or the end).
fn matching(b: &[u8], open: usize) -> usize {
    let mut depth = 0;
    for (j, &c) in b.iter().enumerate().skip(open) {
        match c {
            b'<' => depth += 1,
            b'>' => {
                depth -= 1;
                if depth == 0 {
                    return j;
                }
            }
            _ => {}
        }
    }
    b.len().saturating_sub(1).max(open)
}

/// `s` split at `sep` where no bracket is open.
fn split_top<'a>(s: &'a str, sep: &str) -> Vec<&'a str> {
    let mut depth = 0i32;
    let mut parts = Vec::new();
    let mut from = 0;
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'<' | b'[' | b'(' | b'{' => depth += 1,
            b'>' | b']' | b')' | b'}' => depth -= 1,
            _ if depth == 0 && s[i..].starts_with(sep) => {
                parts.push(&s[from..i]);
                i += sep.len();
                from = i;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&s[from..]);
    parts
}

/// The last `::` segment of a path (the last two when it is a closure),
/// its generic arguments folded.
fn last_segment(path: &str) -> String {
    let mut depth = 0i32;
    let b = path.as_bytes();
    let mut cuts = vec![0];
    let mut generic = None;
    for i in 0..b.len() {
        match b[i] {
            b'<' | b'{' | b'[' | b'(' => {
                if b[i] == b'<' && depth == 0 && generic.is_none() {
                    generic = Some(i);
                }
                depth += 1;
            }
            b'>' | b'}' | b']' | b')' => depth -= 1,
            b':' if depth == 0 && i + 1 < b.len() && b[i + 1] == b':' && generic.is_none() => {
                cuts.push(i + 2);
            }
            _ => {}
        }
    }
    let end = generic.unwrap_or(path.len());
    let mut cut = *cuts.last().expect("a cut");
    if path[cut..end].starts_with('{') && cuts.len() > 1 {
        cut = cuts[cuts.len() - 2];
    }
    match generic {
        Some(g) => format!("{}<…>", &path[cut..g]),
        None => path[cut..].to_owned(),
    }
}

impl Symbols {
    /// Reads the kernel ELF and, if any, the user program's.
    pub fn load(kernel: &Path, user: Option<(&Path, &str)>) -> Result<Self> {
        let mut funcs = Vec::new();
        let mut code = Vec::new();
        read_elf(kernel, KERNEL_BASE, "", &mut funcs, &mut code)?;
        if let Some((path, program)) = user {
            read_elf(
                path,
                USER_BASE,
                &format!("{program}`"),
                &mut funcs,
                &mut code,
            )?;
        }
        Ok(Self::from_funcs(funcs, code))
    }

    fn from_funcs(mut funcs: Vec<Func>, code: Vec<Code>) -> Self {
        funcs.sort_by_key(|f| f.start);
        // One name per address: the first (read_elf puts functions before
        // labels).
        funcs.dedup_by(|b, a| a.start == b.start);
        let known = funcs.len();
        funcs.push(Func {
            start: u64::MAX,
            name: "[kernel ?]".into(),
        });
        funcs.push(Func {
            start: u64::MAX,
            name: "[user ?]".into(),
        });
        Symbols { funcs, code, known }
    }

    /// Symbols from a list of `(address, name)`, for tests.
    #[cfg(test)]
    pub fn from_list(list: &[(u64, &str)]) -> Self {
        let funcs = list
            .iter()
            .map(|&(start, name)| Func {
                start,
                name: name.into(),
            })
            .collect();
        Self::from_funcs(funcs, Vec::new())
    }

    /// The function `pc` is in (an index for [`Symbols::func`]).
    pub fn find(&self, pc: u64) -> usize {
        let unknown = self.known + usize::from(!is_kernel(pc));
        let in_code = self.code.is_empty()
            || self
                .code
                .iter()
                .any(|c| pc >= c.start && pc - c.start < c.bytes.len() as u64);
        if !in_code {
            return unknown;
        }
        let i = self.funcs[..self.known].partition_point(|f| f.start <= pc);
        match i.checked_sub(1) {
            // Never attribute a user pc to a kernel symbol or the reverse.
            Some(i) if is_kernel(self.funcs[i].start) == is_kernel(pc) => i,
            _ => unknown,
        }
    }

    pub fn func(&self, id: usize) -> &Func {
        &self.funcs[id]
    }

    /// The id of the function named exactly `name` (as shortened).
    pub fn by_name(&self, name: &str) -> Option<usize> {
        self.funcs[..self.known].iter().position(|f| f.name == name)
    }

    /// Up to 16 code bytes at `pc`, from the ELF files.
    pub fn code_at(&self, pc: u64) -> Option<&[u8]> {
        self.code.iter().find_map(|c| {
            let off = usize::try_from(pc.checked_sub(c.start)?).ok()?;
            let end = (off + 16).min(c.bytes.len());
            (off < c.bytes.len()).then(|| &c.bytes[off..end])
        })
    }
}

/// Adds the functions and code of the ELF at `path`, loaded at `base`, with
/// `prefix` before every name.
fn read_elf(
    path: &Path,
    base: u64,
    prefix: &str,
    funcs: &mut Vec<Func>,
    code: &mut Vec<Code>,
) -> Result<()> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let file =
        object::File::parse(&*data).with_context(|| format!("parsing {}", path.display()))?;
    for s in file.sections() {
        if s.kind() == SectionKind::Text {
            code.push(Code {
                start: base + s.address(),
                bytes: s.data()?.to_vec(),
            });
        }
    }
    let mut labels = Vec::new();
    for sym in file.symbols() {
        let Some(idx) = sym.section_index() else {
            continue;
        };
        let Ok(section) = file.section_by_index(idx) else {
            continue;
        };
        let Ok(raw) = sym.name() else { continue };
        if section.kind() != SectionKind::Text || raw.is_empty() || raw.starts_with(".L") {
            continue;
        }
        let f = Func {
            start: base + sym.address(),
            name: format!(
                "{prefix}{}",
                short_name(&format!("{:#}", rustc_demangle::demangle(raw)))
            ),
        };
        if sym.kind() == SymbolKind::Text {
            funcs.push(f);
        } else {
            labels.push(f);
        }
    }
    funcs.extend(labels);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(short_name("wyvern::user::ipc::send"), "user::ipc::send");
        assert_eq!(
            short_name("<wyvern::sched::X86 as lwkt::Machine>::switch_to"),
            "<X86 as Machine>::switch_to"
        );
        assert_eq!(
            short_name("lwkt::intr::doreti::<wyvern::sched::X86>"),
            "lwkt::intr::doreti::<X86>"
        );
        assert_eq!(
            short_name("core::ptr::drop_glue::<alloc::sync::Arc<lwkt::Thread>>"),
            "core::ptr::drop_glue::<Arc<…>>"
        );
        assert_eq!(
            short_name(
                "<ubench::ipc_bench::{closure#0} as core::ops::function::FnOnce<()>>::call_once"
            ),
            "<ipc_bench::{closure#0} as FnOnce<…>>::call_once"
        );
        assert_eq!(
            short_name("<lwkt::TokenCell<T>>::with::<u64, wyvern::user::ipc::send::{closure#1}>"),
            "<TokenCell<…>>::with::<u64, send::{closure#1}>"
        );
        assert_eq!(
            short_name("<alloc::sync::Arc<T, A> as core::ops::drop::Drop>::drop"),
            "<Arc<…> as Drop>::drop"
        );
        assert_eq!(short_name("memset"), "memset");
    }

    #[test]
    fn lookup() {
        let k = KERNEL_BASE;
        let s = Symbols::from_list(&[
            (k + 0x100, "a"),
            (k + 0x200, "b"),
            (k + 0x200, "b_alias"),
            (USER_BASE + 0x10, "ubench`main"),
        ]);
        let name = |pc| s.func(s.find(pc)).name.as_str();
        assert_eq!(name(k + 0x100), "a");
        assert_eq!(name(k + 0x1ff), "a");
        assert_eq!(name(k + 0x200), "b");
        assert_eq!(name(k + 0x5000), "b");
        assert_eq!(name(k + 0x50), "[kernel ?]");
        assert_eq!(name(USER_BASE + 0x12), "ubench`main");
        assert_eq!(name(USER_BASE), "[user ?]");
        // A user pc above the user program is not in it, but never in the
        // kernel either.
        assert_eq!(name(0x7fff_0000_0000), "ubench`main");
        assert_eq!(s.by_name("b"), Some(s.find(k + 0x200)));
    }
}
