//! Where QEMU and OVMF are, and installing them when they are not.
//!
//! `WYVERN_QEMU` and `WYVERN_OVMF` override the search. Otherwise QEMU is
//! `qemu-system-x86_64` on `PATH` and OVMF the first of the usual distribution
//! paths that exists. [`ensure`] installs Debian/Ubuntu's `qemu-system-x86` and
//! `ovmf` packages when something is missing and we are root or have
//! passwordless sudo; otherwise it says exactly what to install.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// Firmware images tried in order.
const OVMF_PATHS: &[&str] = &[
    "/usr/share/ovmf/OVMF.fd",
    "/usr/share/OVMF/OVMF.fd",
    "/usr/share/qemu/OVMF.fd",
    "/usr/share/edk2/x64/OVMF.fd",
    "/usr/share/edk2/ovmf/OVMF.fd",
    "/usr/share/edk2-ovmf/x64/OVMF.fd",
];

/// The tools a boot needs.
#[derive(Debug, Clone)]
pub struct QemuEnv {
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// A UEFI firmware image for `-bios`.
    pub ovmf: PathBuf,
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

fn find_qemu() -> Option<PathBuf> {
    match std::env::var_os("WYVERN_QEMU") {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
        None => on_path("qemu-system-x86_64"),
    }
}

fn find_ovmf() -> Option<PathBuf> {
    match std::env::var_os("WYVERN_OVMF") {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
        None => OVMF_PATHS
            .iter()
            .map(Path::new)
            .find(|p| p.is_file())
            .map(Path::to_path_buf),
    }
}

/// Finds QEMU and OVMF without installing anything.
pub fn detect() -> Result<QemuEnv> {
    let qemu = find_qemu();
    let ovmf = find_ovmf();
    match (qemu, ovmf) {
        (Some(qemu), Some(ovmf)) => Ok(QemuEnv { qemu, ovmf }),
        (q, o) => bail!(
            "missing {}: install them (Debian/Ubuntu: `sudo apt-get install qemu-system-x86 ovmf`), \
             or point WYVERN_QEMU / WYVERN_OVMF at them",
            match (q.is_none(), o.is_none()) {
                (true, true) => "QEMU (qemu-system-x86_64) and OVMF (UEFI firmware)",
                (true, false) => "QEMU (qemu-system-x86_64)",
                _ => "OVMF (UEFI firmware, e.g. /usr/share/ovmf/OVMF.fd)",
            }
        ),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn passwordless_sudo() -> bool {
    Command::new("sudo")
        .args(["-n", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Finds QEMU and OVMF, installing them with apt when they are missing and
/// this user may (root or passwordless sudo). Progress goes to stderr.
pub fn ensure() -> Result<QemuEnv> {
    if let Ok(env) = detect() {
        return Ok(env);
    }
    if on_path("apt-get").is_none() {
        return detect();
    }
    let sudo: &[&str] = if is_root() {
        &[]
    } else if passwordless_sudo() {
        &["sudo", "-n"]
    } else {
        return detect();
    };
    eprintln!("xtask: installing QEMU and OVMF with apt-get (qemu-system-x86, ovmf)...");
    let run = |args: &[&str]| -> Result<()> {
        let argv: Vec<&str> = sudo.iter().chain(args).copied().collect();
        let status = Command::new(argv[0])
            .args(&argv[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .with_context(|| format!("running `{}`", argv.join(" ")))?;
        if !status.success() {
            bail!("`{}` failed with {status}", argv.join(" "));
        }
        Ok(())
    };
    run(&["apt-get", "update", "-qq"])?;
    run(&["apt-get", "install", "-y", "-qq", "qemu-system-x86", "ovmf"])?;
    detect()
}

/// `qemu-system-x86_64 --version`, first line.
pub fn qemu_version(env: &QemuEnv) -> String {
    Command::new(&env.qemu)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown QEMU".into())
}
