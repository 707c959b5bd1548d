//! Where QEMU and OVMF are, and installing them when they are not.
//!
//! `WYVERN_QEMU` and `WYVERN_OVMF` override the search. Otherwise QEMU is
//! `qemu-system-x86_64` on `PATH` and OVMF the first of the usual distribution
//! paths that exists.
//!
//! # Which QEMU
//!
//! The x2APIC boots need a QEMU whose TCG emulates x2APIC: 9.0 or later
//! ([`X2APIC_MIN`]). [`ensure`] gets one when it can: when QEMU is missing
//! or older and we are root or have passwordless sudo, it installs Debian's
//! or Ubuntu's `qemu-system-x86` and `ovmf`; on Debian 12 (bookworm), whose
//! own QEMU is 7.2, it first adds the `bookworm-backports` suite and takes
//! `qemu-system-x86` with all its QEMU packages from there (a 10.x binary
//! beside 7.2's modules aborts at start). Where it cannot, it says what to
//! install, and a QEMU older than 9.0 still runs every xAPIC boot: the
//! x2APIC boots are then reported as skipped, with the reason
//! ([`QemuEnv::x2apic_unsupported`]).

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

/// The first QEMU whose TCG emulates x2APIC.
pub const X2APIC_MIN: (u32, u32) = (9, 0);

/// The tools a boot needs.
#[derive(Debug, Clone)]
pub struct QemuEnv {
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// A UEFI firmware image for `-bios`.
    pub ovmf: PathBuf,
    /// QEMU's version (major, minor, micro), when it could be read.
    pub version: Option<(u32, u32, u32)>,
}

impl QemuEnv {
    /// Why this QEMU cannot run a guest in x2APIC mode, if it cannot.
    pub fn x2apic_unsupported(&self) -> Option<String> {
        match self.version {
            Some((major, minor, _)) if (major, minor) >= X2APIC_MIN => None,
            Some((major, minor, micro)) => Some(format!(
                "QEMU {major}.{minor}.{micro} has no x2APIC under TCG (it came in {}.{}); \
                 on Debian 12 `cargo xtask test` installs QEMU 10 from bookworm-backports \
                 when it runs as root or with passwordless sudo",
                X2APIC_MIN.0, X2APIC_MIN.1
            )),
            None => Some(format!(
                "the version of {} could not be read",
                self.qemu.display()
            )),
        }
    }

    /// `major.minor.micro`, or `unknown`.
    pub fn version_string(&self) -> String {
        match self.version {
            Some((a, b, c)) => format!("{a}.{b}.{c}"),
            None => "unknown".into(),
        }
    }
}

/// Parses the first line of `qemu-system-x86_64 --version`
/// (`QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2…)`).
pub fn parse_version(line: &str) -> Option<(u32, u32, u32)> {
    let v = line.split("version ").nth(1)?.split_whitespace().next()?;
    let mut parts = v.split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u32>()
    });
    let major = parts.next()?.ok()?;
    let minor = parts.next().and_then(Result::ok).unwrap_or(0);
    let micro = parts.next().and_then(Result::ok).unwrap_or(0);
    Some((major, minor, micro))
}

fn read_version(qemu: &Path) -> Option<(u32, u32, u32)> {
    Command::new(qemu)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().and_then(parse_version))
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
        (Some(qemu), Some(ovmf)) => {
            let version = read_version(&qemu);
            Ok(QemuEnv {
                qemu,
                ovmf,
                version,
            })
        }
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

/// The Debian release this machine runs (`VERSION_CODENAME` of
/// /etc/os-release), if it is Debian.
fn debian_codename() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim_matches('"').to_owned())
    };
    (field("ID=")? == "debian").then(|| field("VERSION_CODENAME="))?
}

/// The apt source of Debian 12's backports suite, where QEMU 10 is.
const BACKPORTS_SOURCE: &str = "/etc/apt/sources.list.d/wyvern-bookworm-backports.sources";

fn backports_configured() -> bool {
    let listed = |path: &Path| {
        std::fs::read_to_string(path).is_ok_and(|t| {
            t.lines()
                .any(|l| !l.trim_start().starts_with('#') && l.contains("bookworm-backports"))
        })
    };
    listed(Path::new("/etc/apt/sources.list"))
        || std::fs::read_dir("/etc/apt/sources.list.d")
            .map(|d| d.flatten().any(|e| listed(&e.path())))
            .unwrap_or(false)
}

/// Finds QEMU and OVMF, installing them with apt when they are missing, or
/// QEMU when it is older than [`X2APIC_MIN`], and this user may (root or
/// passwordless sudo). Progress goes to stderr. An old QEMU that cannot be
/// replaced is returned as it is (its x2APIC boots are skipped).
pub fn ensure() -> Result<QemuEnv> {
    let found = detect();
    let bookworm = debian_codename().as_deref() == Some("bookworm");
    let old = match &found {
        Ok(env) => match env.x2apic_unsupported() {
            None => return found,
            // A QEMU the user chose, or one apt has nothing newer for.
            Some(why) if std::env::var_os("WYVERN_QEMU").is_some() || !bookworm => {
                eprintln!("xtask: {why}; the x2APIC boots will be skipped");
                return found;
            }
            Some(why) => Some(why),
        },
        Err(_) => None,
    };
    let Some(sudo) = apt_access() else {
        if let Some(why) = &old {
            eprintln!("xtask: {why}; the x2APIC boots will be skipped");
        }
        return found;
    };
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
    if bookworm && !backports_configured() {
        eprintln!(
            "xtask: Debian 12's QEMU (7.2) has no x2APIC under TCG; adding bookworm-backports \
             ({BACKPORTS_SOURCE}) for QEMU 10"
        );
        let source = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\n\
                      Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";
        let tmp = std::env::temp_dir().join("wyvern-bookworm-backports.sources");
        std::fs::write(&tmp, source).context("writing the backports source")?;
        run(&["cp", &tmp.to_string_lossy(), BACKPORTS_SOURCE])?;
    }
    eprintln!(
        "xtask: installing QEMU and OVMF with apt-get (qemu-system-x86{}, ovmf)...",
        if bookworm {
            " from bookworm-backports"
        } else {
            ""
        }
    );
    run(&["apt-get", "update", "-qq"])?;
    let mut install = vec!["apt-get", "install", "-y", "-qq", "--no-install-recommends"];
    if bookworm {
        // Every QEMU package from the same suite: modules must match the binary.
        install.extend(["-t", "bookworm-backports"]);
    }
    install.extend(["qemu-system-x86", "ovmf"]);
    if let Err(e) = run(&install) {
        if found.is_ok() {
            eprintln!("xtask: {e:#}; going on with the QEMU that is there");
            return found;
        }
        return Err(e);
    }
    let env = detect()?;
    if let Some(why) = env.x2apic_unsupported() {
        eprintln!("xtask: {why}; the x2APIC boots will be skipped");
    }
    Ok(env)
}

/// Refreshes apt's package lists (`apt-get update`), as root or through
/// passwordless sudo; false when that cannot be done or fails. For a fresh
/// machine whose lists were never fetched (the Linux kernel package).
pub fn apt_update() -> bool {
    let Some(sudo) = apt_access() else {
        return false;
    };
    let argv: Vec<&str> = sudo
        .iter()
        .copied()
        .chain(["apt-get", "update", "-qq"])
        .collect();
    eprintln!("xtask: `{}`", argv.join(" "));
    Command::new(argv[0])
        .args(&argv[1..])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// How to run apt: directly as root, through passwordless sudo, or not at all.
fn apt_access() -> Option<&'static [&'static str]> {
    if on_path("apt-get").is_none() {
        None
    } else if is_root() {
        Some(&[])
    } else if passwordless_sudo() {
        Some(&["sudo", "-n"])
    } else {
        None
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_qemu_versions() {
        assert_eq!(
            parse_version("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)"),
            Some((10, 0, 2))
        );
        assert_eq!(
            parse_version("QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)"),
            Some((7, 2, 19))
        );
        assert_eq!(
            parse_version("QEMU emulator version 9.1.50"),
            Some((9, 1, 50))
        );
        assert_eq!(parse_version("something else"), None);
    }

    #[test]
    fn x2apic_needs_nine() {
        let env = |v| QemuEnv {
            qemu: "q".into(),
            ovmf: "o".into(),
            version: v,
        };
        assert!(env(Some((10, 0, 2))).x2apic_unsupported().is_none());
        assert!(env(Some((9, 0, 0))).x2apic_unsupported().is_none());
        assert!(env(Some((8, 2, 2))).x2apic_unsupported().is_some());
        assert!(env(None).x2apic_unsupported().is_some());
    }
}
