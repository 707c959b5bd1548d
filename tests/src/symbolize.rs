//! Symbolizes the kernel's backtrace lines against the kernel ELF.
//!
//! The kernel prints `BT #n <rip> +<offset>`, where `offset` is the address in
//! the ELF (see `wyvern_abi::result`). Each such line gets the function (inlined
//! frames included) and `file:line` appended. Return addresses point after the
//! call, so the lookup uses `offset - 1`, which lands in the call instruction.

use std::path::Path;

use anyhow::{Result, anyhow};
use wyvern_abi::result::parse_backtrace;

/// A loaded kernel ELF with its debug info.
pub struct Symbolizer {
    loader: addr2line::Loader,
}

impl Symbolizer {
    /// Loads `elf`.
    pub fn new(elf: &Path) -> Result<Self> {
        let loader = addr2line::Loader::new(elf)
            .map_err(|e| anyhow!("cannot read {}: {e}", elf.display()))?;
        Ok(Symbolizer { loader })
    }

    /// `function at file:line` for an ELF address, inlined frames joined by
    /// ` <- `.
    pub fn describe(&self, addr: u64) -> Option<String> {
        let mut parts = Vec::new();
        if let Ok(mut frames) = self.loader.find_frames(addr) {
            while let Ok(Some(f)) = frames.next() {
                let func = f
                    .function
                    .as_ref()
                    .and_then(|n| n.demangle().ok().map(|s| s.into_owned()))
                    .unwrap_or_else(|| "??".into());
                let loc = f
                    .location
                    .map(|l| format!("{}:{}", l.file.unwrap_or("??"), l.line.unwrap_or(0)))
                    .unwrap_or_default();
                parts.push(format!("{func} at {loc}"));
            }
        }
        if parts.is_empty() {
            return self.loader.find_symbol(addr).map(str::to_owned);
        }
        Some(parts.join(" <- "))
    }

    /// The transcript with every `BT` line annotated.
    pub fn annotate(&self, transcript: &str) -> String {
        let mut out = String::with_capacity(transcript.len());
        for line in transcript.lines() {
            out.push_str(line);
            if let Some((_, off)) = parse_backtrace(line)
                && let Some(what) = self.describe(off.saturating_sub(1))
            {
                out.push_str("  ");
                out.push_str(&what);
            }
            out.push('\n');
        }
        out
    }
}
