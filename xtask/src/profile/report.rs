//! A profile's table on the terminal and its files: `profile-NAME.txt` (the
//! table), `profile-NAME.folded` (`root;a;b count` lines, the input of any
//! flame graph tool), `profile-NAME.pcs` (every pc the operation ran, with
//! its count) and `profile-NAME.svg` (a flame graph by `inferno`).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use super::Trace;

/// Functions shown on the terminal; the file has them all.
const SHOWN: usize = 40;

/// `n` with thousands separators.
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The table: a heading, then one line per function by inclusive count.
pub fn table(t: &Trace, limit: Option<usize>) -> String {
    let total = t.folded.total();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "profile of {}: one operation, from one `{}` call to the next after {} warm-up \
         operations, on CPU {} of {} (-icount shift=8; {})",
        t.name, t.marker, t.warmup, t.cpu, t.smp, t.qemu
    );
    let _ = writeln!(
        out,
        "total: {} instructions ({} kernel, {} user)",
        group(total),
        group(t.kernel_insns),
        group(t.user_insns)
    );
    if t.smp > 1 {
        let _ = writeln!(
            out,
            "note: CPU {} only. Under gdbstub's all-stop the other CPUs do not run while it \
             steps; they run only while it halts, and their instructions are not counted.",
            t.cpu
        );
    }
    let _ = writeln!(
        out,
        "inclusive: with the function anywhere on the inferred stack; exclusive: in the \
         function itself; [switch] marks where a thread switched to another"
    );
    let _ = writeln!(
        out,
        "{:>9} {:>6} {:>9} {:>6}  function",
        "inclusive", "%", "exclusive", "%"
    );
    let pct = |n: u64| 100.0 * n as f64 / total.max(1) as f64;
    let _ = writeln!(
        out,
        "{:>9} {:>5.1}% {:>9} {:>5.1}%  [{} operation]",
        group(total),
        100.0,
        0,
        0.0,
        t.name
    );
    let rows = t.folded.rows();
    for r in rows.iter().take(limit.unwrap_or(usize::MAX)) {
        let _ = writeln!(
            out,
            "{:>9} {:>5.1}% {:>9} {:>5.1}%  {}",
            group(r.inclusive),
            pct(r.inclusive),
            group(r.exclusive),
            pct(r.exclusive),
            t.symbols.func(r.func).name
        );
    }
    if let Some(l) = limit
        && rows.len() > l
    {
        let _ = writeln!(out, "… and {} more functions", rows.len() - l);
    }
    out
}

/// Prints the table and writes the three files into `dir`.
pub fn write(t: &Trace, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    print!("{}", table(t, Some(SHOWN)));
    let base = dir.join(format!("profile-{}", t.name));
    let txt = base.with_extension("txt");
    std::fs::write(&txt, table(t, None)).with_context(|| format!("writing {}", txt.display()))?;
    let root = format!("[{} operation]", t.name);
    let folded = t.folded.text(&root, |f| t.symbols.func(f).name.clone());
    let folded_path = base.with_extension("folded");
    std::fs::write(&folded_path, &folded)
        .with_context(|| format!("writing {}", folded_path.display()))?;
    let pcs_path = base.with_extension("pcs");
    std::fs::write(&pcs_path, pcs(t)).with_context(|| format!("writing {}", pcs_path.display()))?;
    let svg = base.with_extension("svg");
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = format!(
        "{}: one operation, {} instructions (CPU {} of {})",
        t.name,
        group(t.folded.total()),
        t.cpu,
        t.smp
    );
    opts.count_name = "instructions".into();
    let file =
        std::fs::File::create(&svg).with_context(|| format!("creating {}", svg.display()))?;
    inferno::flamegraph::from_lines(&mut opts, folded.lines(), std::io::BufWriter::new(file))
        .with_context(|| format!("writing {}", svg.display()))?;
    println!(
        "\nprofile: {} (table), {} (folded stacks), {} (instructions by pc), {} (flame graph); {:.0} s",
        txt.display(),
        folded_path.display(),
        pcs_path.display(),
        svg.display(),
        t.seconds
    );
    Ok(())
}

/// Every pc the operation ran, in address order, with how many times it
/// ran and where it is (`function+offset`): for reading a hot function's
/// instructions against `objdump -d` of the same ELF.
fn pcs(t: &Trace) -> String {
    let mut out = String::from("count  pc                  function+offset\n");
    for (&pc, &n) in &t.pcs {
        let f = t.symbols.func(t.symbols.find(pc));
        let at = if f.start <= pc {
            format!("{}+{:#x}", f.name, pc - f.start)
        } else {
            f.name.clone()
        };
        out.push_str(&format!("{n:>5}  {pc:#018x}  {at}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_by_pc() {
        let t = Trace {
            name: "x".into(),
            folded: Default::default(),
            symbols: crate::profile::symbols::Symbols::from_list(&[
                (0xffff_ffff_8000_1000, "a"),
                (0xffff_ffff_8000_2000, "b"),
            ]),
            cpu: 0,
            smp: 1,
            warmup: 0,
            marker: "m",
            kernel_insns: 0,
            user_insns: 0,
            pcs: [
                (0xffff_ffff_8000_2000, 1),
                (0xffff_ffff_8000_1004, 3),
                (0x40_0000, 2),
            ]
            .into(),
            qemu: String::new(),
            seconds: 0.0,
        };
        let text = pcs(&t);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines[1].starts_with("    2  0x0000000000400000  "),
            "{text}"
        );
        assert_eq!(lines[2], "    3  0xffffffff80001004  a+0x4");
        assert_eq!(lines[3], "    1  0xffffffff80002000  b+0x0");
    }

    #[test]
    fn grouping() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(4735), "4,735");
        assert_eq!(group(1_234_567), "1,234,567");
    }
}
