//! Linux beside Wyvern: Debian's stock kernel booted under the same QEMU,
//! the same `-icount` and the same machine as a benchmark boot, running
//! the counterparts of Wyvern's benchmarks (`xtask/linux/bench.c`) as the
//! `/init` of an initramfs.
//!
//! Everything is fetched and built under `target/linux/`: the versioned
//! package `linux-image-amd64` depends on, with `apt-get download` (cached:
//! a `.deb` already there is used), its sha256, its `vmlinuz` extracted with
//! `dpkg-deb -x`; the program, with `gcc -O2 -static -pthread`; the
//! initramfs, a newc cpio written here. Whatever is missing is an error that
//! says what to install, never a hang: each command has a deadline.
//!
//! The program prints the `BENCH` lines of Wyvern's bench mode
//! (`kernel/src/bench/mod.rs`), so [`crate::bench::parse`] reads them;
//! [`validate`] checks them against [`ROWS`]. `cargo xtask bench --vs
//! linux` reports them beside Wyvern's, and `tests/tests/linux.rs` checks
//! the plumbing.
//!
//! Linux boots with `maxcpus=1` and the program brings the other CPUs
//! online from `/sys`: QEMU 7.2's icount livelocks in Linux's SMP bring-up
//! (a spin-wait without `pause`), not in a running Linux.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use wait_timeout::ChildExt;
use wyvern_abi::bench::Cpus;

use crate::bench::BenchRun;
use crate::qemu::{Boot, DirectKernel};

/// One Linux benchmark, and the Wyvern benchmark it stands beside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// As the program prints it; a Wyvern benchmark's name where the
    /// operation corresponds.
    pub name: &'static str,
    pub unit: &'static str,
    pub cpus: Cpus,
    /// The Wyvern benchmark it is compared with.
    pub wyvern: Option<&'static str>,
    /// What the Linux operation is.
    pub what: &'static str,
}

const fn row(
    name: &'static str,
    unit: &'static str,
    cpus: Cpus,
    wyvern: Option<&'static str>,
    what: &'static str,
) -> Row {
    Row {
        name,
        unit,
        cpus,
        wyvern,
        what,
    }
}

/// The Linux benchmarks, in the order `xtask/linux/bench.c` runs them.
pub const ROWS: &[Row] = &[
    row(
        "switch",
        "switch",
        Cpus::Scaling,
        Some("switch"),
        "sched_yield between two threads of one process, a pair pinned to each CPU",
    ),
    row(
        "wakeup-local",
        "wakeup",
        Cpus::Scaling,
        Some("wakeup-local"),
        "futex wake/wait ping-pong, two threads pinned to each CPU",
    ),
    row(
        "wakeup-cross-near",
        "wakeup",
        Cpus::Pair,
        Some("wakeup-cross-near"),
        "futex wake/wait ping-pong, CPU 0 and CPU 1",
    ),
    row(
        "wakeup-cross-far",
        "wakeup",
        Cpus::Pair,
        Some("wakeup-cross-far"),
        "futex wake/wait ping-pong, CPU 0 and the last CPU",
    ),
    row(
        "null-syscall",
        "syscall",
        Cpus::One,
        Some("null-syscall"),
        "getppid() through syscall(2)",
    ),
    row(
        "user-thread-create-exit",
        "thread",
        Cpus::One,
        Some("user-thread-create-exit"),
        "pthread_create of an empty thread, pthread_join",
    ),
    row(
        "process-spawn-exit",
        "process",
        Cpus::All,
        Some("process-spawn-exit"),
        "fork; the child pins itself to CPU 1 and execs a static `true`; waitpid",
    ),
    row(
        "ipc-rtt-local",
        "round trip",
        Cpus::One,
        Some("ipc-rtt-local"),
        "one byte to a server process and one back through two pipes, both on CPU 0",
    ),
    row(
        "ipc-rtt-local-unix",
        "round trip",
        Cpus::One,
        Some("ipc-rtt-local"),
        "one-byte message each way over an AF_UNIX SOCK_SEQPACKET socketpair, both on CPU 0",
    ),
    row(
        "ipc-rtt-cross",
        "round trip",
        Cpus::Pair,
        Some("ipc-rtt-cross"),
        "pipe round trip, client on CPU 0, server process on CPU 1",
    ),
    row(
        "ipc-null",
        "round trip",
        Cpus::Scaling,
        Some("ipc-null"),
        "pipe round trips on every CPU at once: client threads of one process, servers of another",
    ),
    row(
        "loop",
        "turn",
        Cpus::One,
        None,
        "a loop of 2 instructions a turn: cost / 2 is the tick's and interrupts' inflation",
    ),
];

/// The Linux benchmark called `name`.
pub fn row_of(name: &str) -> Option<&'static Row> {
    ROWS.iter().find(|r| r.name == name)
}

/// The (row, CPU count) pairs a run on `ncpus` CPUs reports, in order.
pub fn expected(ncpus: usize) -> Vec<(&'static Row, usize)> {
    ROWS.iter()
        .flat_map(|r| r.cpus.counts(ncpus).map(move |k| (r, k)))
        .collect()
}

/// The counters every Linux result carries.
pub const COUNTERS: [&str; 3] = ["ipis", "switches", "ticks"];

/// Checks a Linux run: every expected row in order with its unit, every
/// repetition, operations and time, and the counters; a same-CPU switch,
/// wakeup or round trip must have switched. Returns every problem found.
pub fn validate(run: &BenchRun, ncpus: u32) -> Result<(), Vec<String>> {
    let h = &run.header;
    let mut problems = Vec::new();
    if h.set != "linux" || h.ncpus != ncpus || h.reps == 0 || h.tsc_hz == 0 {
        problems.push(format!(
            "header {h:?}: expected set `linux` on {ncpus} CPUs, reps and TSC rate"
        ));
    }
    let got: Vec<(&str, &str, u32)> = run
        .results
        .iter()
        .map(|r| (r.name.as_str(), r.unit.as_str(), r.cpus))
        .collect();
    let want: Vec<(&str, &str, u32)> = expected(ncpus as usize)
        .into_iter()
        .map(|(r, k)| (r.name, r.unit, k as u32))
        .collect();
    if got != want {
        problems.push(format!("results {got:?}, expected {want:?}"));
    }
    for r in &run.results {
        let mut bad = |what: String| problems.push(format!("{} cpus={}: {what}", r.name, r.cpus));
        if r.ops == 0 {
            bad("no operations".into());
        }
        if r.tsc.len() != h.reps as usize || r.tsc.contains(&0) {
            bad(format!(
                "repetitions {:?}, expected {} non-zero",
                r.tsc, h.reps
            ));
        }
        let keys: Vec<&str> = r.counters.keys().map(String::as_str).collect();
        if keys != COUNTERS {
            bad(format!("counters {keys:?}, expected {COUNTERS:?}"));
        }
        // A same-CPU wakeup or round trip always switches. (A sched_yield
        // need not: CFS keeps running the yielder when its partner's
        // virtual runtime is far enough ahead, and with 8 CPUs busy fewer
        // than half the yields switched.)
        let total = r.ops * u64::from(h.reps);
        let switches = r.counter("switches");
        let local = matches!(
            r.name.as_str(),
            "wakeup-local" | "ipc-rtt-local" | "ipc-rtt-local-unix"
        );
        if local && switches < total {
            bad(format!("{switches} switches for {total} operations"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Debian's kernel package, fetched and unpacked.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The versioned package (`linux-image-6.1.0-57-amd64`).
    pub package: String,
    /// Its version (`6.1.192-3`).
    pub version: String,
    /// sha256 of the `.deb`, hex.
    pub sha256: String,
    pub deb: PathBuf,
    pub vmlinuz: PathBuf,
    /// `CONFIG_HZ` of its config (0: the package has no config).
    pub hz: u32,
}

/// Everything a Linux boot needs.
#[derive(Debug, Clone)]
pub struct Guest {
    pub kernel: Kernel,
    pub initrd: PathBuf,
}

/// Runs `cmd` with a deadline; its stdout, or an error with its stderr.
fn output(mut cmd: Command, deadline: Duration) -> Result<String> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {shown}"))?;
    let mut out = child.stdout.take().context("stdout")?;
    let mut err = child.stderr.take().context("stderr")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = match child.wait_timeout(deadline)? {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{shown} did not finish in {} s", deadline.as_secs());
        }
    };
    let stdout = reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    if !status.success() {
        bail!("{shown} failed ({status}): {}", stderr.trim());
    }
    Ok(stdout)
}

fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
}

/// The versioned package `apt-cache depends linux-image-amd64` names.
pub fn package_from_depends(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .map(str::trim)
        .find(|p| {
            p.strip_prefix("linux-image-")
                .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()))
        })
        .map(str::to_owned)
}

/// `CONFIG_HZ=` of a kernel config.
pub fn config_hz(config: &str) -> Option<u32> {
    config
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_HZ="))
        .and_then(|v| v.trim().parse().ok())
}

fn sha256(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn find_in(dir: &Path, pred: impl Fn(&str) -> bool) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&pred))
        .collect();
    found.sort();
    found.pop()
}

/// The packages that depend on the distribution's current kernel: Debian's,
/// then Ubuntu's (Ubuntu's has not been tried on this project's machines).
const META: [&str; 2] = ["linux-image-amd64", "linux-image-generic"];

/// Fetches Debian's kernel package into `dir` (once) and unpacks it.
pub fn fetch(dir: &Path) -> Result<Kernel> {
    for tool in ["apt-cache", "apt-get", "dpkg-deb"] {
        if !have(tool) {
            bail!(
                "`{tool}` is missing: Linux beside Wyvern is Debian's kernel package \
                 (linux-image-amd64), fetched with apt-get download; it needs Debian or Ubuntu"
            );
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let minute = Duration::from_secs(60);
    let find = || {
        META.iter().find_map(|meta| {
            let mut depends = Command::new("apt-cache");
            depends.args(["depends", meta]);
            output(depends, minute)
                .ok()
                .and_then(|text| package_from_depends(&text))
        })
    };
    // A fresh machine may never have fetched apt's lists.
    let package = find()
        .or_else(|| crate::env::apt_update().then(find).flatten())
        .with_context(|| {
            format!(
                "apt-cache names no kernel package for {} (run `apt-get update`)",
                META.join(" or ")
            )
        })?;
    let prefix = format!("{package}_");
    let deb = match find_in(dir, |n| n.starts_with(&prefix) && n.ends_with(".deb")) {
        Some(deb) => deb,
        None => {
            eprintln!("linux: apt-get download {package} into {}", dir.display());
            let mut get = Command::new("apt-get");
            get.args(["download", "-q", &package]).current_dir(dir);
            output(get, Duration::from_secs(600))
                .with_context(|| format!("downloading {package} (network or apt sources?)"))?;
            find_in(dir, |n| n.starts_with(&prefix) && n.ends_with(".deb"))
                .with_context(|| format!("apt-get download left no {prefix}*.deb"))?
        }
    };
    let mut field = Command::new("dpkg-deb");
    field.args(["-f"]).arg(&deb).arg("Version");
    let version = output(field, minute)?.trim().to_owned();
    let sha256 = sha256(&deb)?;
    let unpacked = dir.join(&package);
    let boot = unpacked.join("boot");
    if find_in(&boot, |n| n.starts_with("vmlinuz-")).is_none() {
        let mut x = Command::new("dpkg-deb");
        x.arg("-x").arg(&deb).arg(&unpacked);
        output(x, minute)?;
    }
    let vmlinuz = find_in(&boot, |n| n.starts_with("vmlinuz-"))
        .with_context(|| format!("no vmlinuz in {}", deb.display()))?;
    // Debian's package carries the config; Ubuntu's has it elsewhere.
    let hz = find_in(&boot, |n| n.starts_with("config-"))
        .and_then(|c| std::fs::read_to_string(c).ok())
        .and_then(|c| config_hz(&c))
        .unwrap_or(0);
    Ok(Kernel {
        package,
        version,
        sha256,
        deb,
        vmlinuz,
        hz,
    })
}

/// Compiles the program with `gcc -O2 -static -pthread`.
pub fn build_program(source: &Path, out: &Path) -> Result<()> {
    const HOW: &str = "the Linux benchmark program needs gcc and a static C library: \
                       sudo apt-get install gcc libc6-dev";
    if !have("gcc") {
        bail!("gcc is missing: {HOW}");
    }
    let mut libc = Command::new("gcc");
    libc.arg("-print-file-name=libc.a");
    if !output(libc, Duration::from_secs(30))?.contains('/') {
        bail!("no static libc.a: {HOW}");
    }
    let mut gcc = Command::new("gcc");
    gcc.args(["-O2", "-Wall", "-Wextra", "-static", "-pthread", "-o"])
        .arg(out)
        .arg(source);
    output(gcc, Duration::from_secs(120))
        .with_context(|| format!("compiling {}", source.display()))?;
    Ok(())
}

/// One file of a newc cpio archive.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub name: &'a str,
    /// File type and permissions (`0o100755`, `0o040755`, `0o020600`).
    pub mode: u32,
    pub data: &'a [u8],
    /// (major, minor) of a device node.
    pub rdev: (u32, u32),
}

/// A newc ("070701") cpio archive of `entries` and its trailer, as the
/// kernel's initramfs unpacker reads it.
pub fn newc(entries: &[Entry]) -> Vec<u8> {
    let trailer = Entry {
        name: "TRAILER!!!",
        mode: 0,
        data: &[],
        rdev: (0, 0),
    };
    let mut out = Vec::new();
    let pad = |out: &mut Vec<u8>| out.resize(out.len().next_multiple_of(4), 0);
    for (ino, e) in entries.iter().chain([&trailer]).enumerate() {
        let fields = [
            ino as u32 + 1,
            e.mode,
            0,
            0,
            1,
            0,
            e.data.len() as u32,
            0,
            0,
            e.rdev.0,
            e.rdev.1,
            e.name.len() as u32 + 1,
            0,
        ];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        out.extend_from_slice(e.name.as_bytes());
        out.push(0);
        pad(&mut out);
        out.extend_from_slice(e.data);
        pad(&mut out);
    }
    out
}

/// The initramfs: `/init` and the directories and console it needs.
pub fn initramfs(init: &[u8]) -> Vec<u8> {
    let dir = |name: &'static str| Entry {
        name,
        mode: 0o040755,
        data: &[],
        rdev: (0, 0),
    };
    newc(&[
        dir("dev"),
        Entry {
            name: "dev/console",
            mode: 0o020600,
            data: &[],
            rdev: (5, 1),
        },
        dir("proc"),
        dir("sys"),
        Entry {
            name: "init",
            mode: 0o100755,
            data: init,
            rdev: (0, 0),
        },
    ])
}

/// Fetches the kernel, builds the program and writes the initramfs, all
/// under `root/target/linux`.
pub fn prepare(root: &Path) -> Result<Guest> {
    let dir = root.join("target/linux");
    let kernel = fetch(&dir)?;
    // Built under a name of this process's, then renamed: boots that
    // prepare at once each see a whole file.
    let init = dir.join(format!("bench-init.{}", std::process::id()));
    build_program(&root.join("xtask/linux/bench.c"), &init)?;
    let bytes = std::fs::read(&init)?;
    std::fs::remove_file(&init)?;
    let initrd = dir.join("initrd.cpio");
    let tmp = dir.join(format!("initrd.cpio.{}", std::process::id()));
    std::fs::write(&tmp, initramfs(&bytes))
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &initrd)?;
    Ok(Guest { kernel, initrd })
}

/// Makes `machine` (a benchmark boot's machine) boot Linux: `-kernel`,
/// `-initrd`, `-append`, with `reps` measured repetitions and `percent` of
/// each benchmark's default operations. `nowatchdog`: at `shift=8` a
/// virtual second is 3.9 M instructions, and the lockup detector reported
/// the boot's long stretches as soft lockups (and woke every 4 s).
/// Linux's tick itself keeps running: the `loop` row shows what it adds.
pub fn boot(mut machine: Boot, guest: &Guest, reps: u32, percent: u32) -> Boot {
    machine.direct = Some(DirectKernel {
        kernel: guest.kernel.vmlinuz.clone(),
        initrd: guest.initrd.clone(),
        append: format!(
            "console=ttyS0 maxcpus=1 quiet nowatchdog panic=-1 wyvern_reps={reps} \
             wyvern_percent={percent} wyvern_hz={}",
            guest.kernel.hz
        ),
    });
    machine
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let a = newc(&[Entry {
            name: "init",
            mode: 0o100755,
            data: b"abcde",
            rdev: (0, 0),
        }]);
        // Header (110) + "init\0" padded to 116, data 5 padded to 8.
        assert_eq!(&a[..6], b"070701");
        assert_eq!(&a[6..14], b"00000001");
        assert_eq!(&a[14..22], b"000081ed");
        assert_eq!(&a[54..62], b"00000005");
        assert_eq!(&a[94..102], b"00000005", "name size with its NUL");
        assert_eq!(&a[110..115], b"init\0");
        assert_eq!(&a[116..121], b"abcde");
        assert_eq!(a[121..124], [0, 0, 0]);
        assert_eq!(&a[124..130], b"070701");
        assert_eq!(&a[124 + 110..124 + 121], b"TRAILER!!!\0");
        assert_eq!(a.len() % 4, 0);
        let dev = newc(&[Entry {
            name: "dev/console",
            mode: 0o020600,
            data: &[],
            rdev: (5, 1),
        }]);
        assert_eq!(&dev[78..94], b"0000000500000001", "rdev major, minor");
    }

    #[test]
    fn reads_apt_and_config() {
        let deps = "linux-image-amd64\n  Depends: linux-image-6.1.0-57-amd64\n";
        assert_eq!(
            package_from_depends(deps).as_deref(),
            Some("linux-image-6.1.0-57-amd64")
        );
        assert_eq!(package_from_depends("linux-image-amd64\n"), None);
        assert_eq!(
            config_hz("# x\nCONFIG_HZ_250=y\nCONFIG_HZ=250\n"),
            Some(250)
        );
    }

    fn result(name: &str, unit: &str, cpus: usize, switches: u64) -> String {
        format!(
            "BENCH {{\"type\":\"result\",\"name\":\"{name}\",\"cpus\":{cpus},\"unit\":\"{unit}\",\
             \"ops\":10,\"tsc\":[2560,2561],\"counters\":{{\"ipis\":0,\"switches\":{switches},\
             \"ticks\":0}}}}\n"
        )
    }

    fn transcript(ncpus: usize, edit: impl Fn(&str, String) -> String) -> String {
        let rows = expected(ncpus);
        let mut t = format!(
            "BENCH {{\"type\":\"header\",\"version\":\"6.1.0-57-amd64\",\"ncpus\":{ncpus},\
             \"tsc_hz\":1000,\"hz\":250,\"set\":\"linux\",\"reps\":2,\"count\":{}}}\n",
            rows.len()
        );
        for (r, k) in &rows {
            t += &edit(r.name, result(r.name, r.unit, *k, 40));
        }
        t + &format!("BENCH {{\"type\":\"end\",\"count\":{}}}\n", rows.len())
    }

    #[test]
    fn validates_runs() {
        let parse = |t: &str| crate::bench::parse(t).unwrap();
        validate(&parse(&transcript(2, |_, l| l)), 2).unwrap();
        assert!(validate(&parse(&transcript(2, |_, l| l)), 4).is_err());
        let lazy = transcript(1, |n, l| {
            if n == "wakeup-local" {
                l.replace("\"switches\":40", "\"switches\":3")
            } else {
                l
            }
        });
        let p = validate(&parse(&lazy), 1).unwrap_err();
        assert!(p[0].contains("3 switches"), "{p:?}");
        let zero = transcript(1, |n, l| {
            if n == "loop" {
                l.replace("2561", "0")
            } else {
                l
            }
        });
        assert!(validate(&parse(&zero), 1).unwrap_err()[0].contains("non-zero"));
        let renamed = transcript(1, |n, l| l.replace(&format!("\"{n}\""), "\"x\""));
        assert!(validate(&parse(&renamed), 1).is_err());
        assert_eq!(expected(8).len(), 21);
        assert_eq!(expected(1).len(), 9);
    }
}
