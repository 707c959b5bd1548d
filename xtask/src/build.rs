//! Building the kernel and the disk image.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use bootloader::{BootConfig, UefiBoot};
use bootloader_boot_config::LevelFilter;
use clap::{Args, ValueEnum};

/// Cargo profile of the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Profile {
    /// Unoptimized enough to debug, with debug assertions.
    Dev,
    /// Optimized, with debug assertions and overflow checks (what the tests boot).
    Ktest,
    /// Optimized, no debug assertions (what the benchmarks boot).
    Release,
}

impl Profile {
    fn cargo_name(self) -> &'static str {
        match self {
            Profile::Dev => "dev",
            Profile::Ktest => "ktest",
            Profile::Release => "release",
        }
    }

    fn dir(self) -> &'static str {
        match self {
            Profile::Dev => "debug",
            Profile::Ktest => "ktest",
            Profile::Release => "release",
        }
    }
}

#[derive(Args, Clone)]
pub struct BuildArgs {
    /// Build optimized, without debug assertions.
    #[arg(long)]
    pub release: bool,
}

impl BuildArgs {
    pub fn profile(&self) -> Profile {
        if self.release {
            Profile::Release
        } else {
            Profile::Dev
        }
    }
}

#[derive(Args)]
pub struct ImageArgs {
    #[command(flatten)]
    pub build: BuildArgs,
    /// Where to write the image.
    #[arg(long, short, default_value = "target/wyvern.img")]
    pub out: PathBuf,
}

/// The workspace root (the parent of `xtask/`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// `cargo`, as the one running xtask.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Builds the kernel; returns the ELF's path.
pub fn build_kernel(profile: Profile) -> Result<PathBuf> {
    let status = cargo()
        .args([
            "build",
            "--package",
            "wyvern-kernel",
            "--profile",
            profile.cargo_name(),
        ])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("building the kernel failed");
    }
    let elf = root()
        .join("target/x86_64-unknown-none")
        .join(profile.dir())
        .join("wyvern");
    if !elf.is_file() {
        bail!("cargo built the kernel but {} is missing", elf.display());
    }
    Ok(elf)
}

/// Names of the user programs (the `[[bin]]` targets of `userland/`).
fn user_programs() -> Result<Vec<String>> {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata failed");
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("reading cargo metadata")?;
    let pkg = meta["packages"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "wyvern-user"))
        .context("no wyvern-user package in the workspace")?;
    let names: Vec<String> = pkg["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
        })
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect();
    if names.is_empty() {
        bail!("userland has no programs");
    }
    Ok(names)
}

/// The toolchain's `llvm-objcopy` (component `llvm-tools`).
fn objcopy() -> Result<PathBuf> {
    let out = Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
        .current_dir(root())
        .args(["--print", "sysroot"])
        .output()
        .context("running rustc --print sysroot")?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let bin = sysroot
        .join("lib/rustlib")
        .join(env!("XTASK_HOST"))
        .join("bin/llvm-objcopy");
    if !bin.is_file() {
        bail!(
            "{} is missing: the llvm-tools component (rust-toolchain.toml) is not installed; \
             run `rustup component add llvm-tools`",
            bin.display()
        );
    }
    Ok(bin)
}

/// Builds the user programs, strips their debug information and packs them
/// into a cpio archive (newc, the format of Linux's initramfs): the ramdisk.
/// Returns its path.
pub fn build_ramdisk(profile: Profile) -> Result<PathBuf> {
    let status = cargo()
        .args([
            "build",
            "--package",
            "wyvern-user",
            "--profile",
            profile.cargo_name(),
        ])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("building the user programs failed");
    }
    let built = root()
        .join("target/x86_64-unknown-none")
        .join(profile.dir());
    let staging = root().join(format!("target/ramdisk-{}", profile.dir()));
    std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let objcopy = objcopy()?;
    let path = root().join(format!("target/wyvern-{}.ramdisk.cpio", profile.dir()));
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
    );
    for (ino, name) in user_programs()?.iter().enumerate() {
        let stripped = staging.join(name);
        let status = Command::new(&objcopy)
            .arg("--strip-debug")
            .arg(built.join(name))
            .arg(&stripped)
            .status()
            .context("running llvm-objcopy")?;
        if !status.success() {
            bail!("stripping user program {name} failed");
        }
        let data =
            std::fs::read(&stripped).with_context(|| format!("reading {}", stripped.display()))?;
        let mut w = cpio::newc::Builder::new(name)
            .ino(ino as u32 + 1)
            .mode(0o100_755)
            .nlink(1)
            .write(
                &mut out,
                u32::try_from(data.len()).context("user program over 4 GiB")?,
            );
        w.write_all(&data)
            .with_context(|| format!("adding {name} to the ramdisk"))?;
        w.finish().context("writing the ramdisk")?;
    }
    cpio::newc::trailer(&mut out).context("writing the ramdisk")?;
    out.flush().context("writing the ramdisk")?;
    Ok(path)
}

/// Wraps `kernel` and `ramdisk` into a UEFI disk image at `out`.
pub fn make_image(kernel: &Path, ramdisk: &Path, out: &Path) -> Result<()> {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut config = BootConfig::default();
    // The bootloader logs to the screen; on serial only its warnings, so the
    // transcript carries Wyvern's own lines.
    config.serial_logging = true;
    config.log_level = LevelFilter::Warn;
    UefiBoot::new(kernel)
        .set_boot_config(&config)
        .set_ramdisk(ramdisk)
        .create_disk_image(out)
        .with_context(|| format!("writing the disk image {}", out.display()))
}

/// Builds the kernel, the ramdisk and the image at the profile's default path.
pub fn build_image(profile: Profile) -> Result<(PathBuf, PathBuf)> {
    let kernel = build_kernel(profile)?;
    let ramdisk = build_ramdisk(profile)?;
    let image = root().join(format!("target/wyvern-{}.img", profile.dir()));
    make_image(&kernel, &ramdisk, &image)?;
    Ok((kernel, image))
}

pub fn build_cmd(args: &BuildArgs) -> Result<ExitCode> {
    let elf = build_kernel(args.profile())?;
    println!("kernel: {}", elf.display());
    Ok(ExitCode::SUCCESS)
}

pub fn image_cmd(args: &ImageArgs) -> Result<ExitCode> {
    let kernel = build_kernel(args.build.profile())?;
    let ramdisk = build_ramdisk(args.build.profile())?;
    let out = if args.out.is_absolute() {
        args.out.clone()
    } else {
        root().join(&args.out)
    };
    make_image(&kernel, &ramdisk, &out)?;
    println!("UEFI disk image: {}", out.display());
    println!();
    println!(
        "To boot it on a real x86_64 machine, write it to a USB stick (this erases the stick):"
    );
    println!("  lsblk                       # find the stick, e.g. /dev/sdX");
    println!(
        "  sudo dd if={} of=/dev/sdX bs=4M conv=fsync status=progress",
        out.display()
    );
    println!("then boot the machine from the stick in UEFI mode (Secure Boot off).");
    println!("Wyvern prints on the screen and, if the machine has one, on COM1 at 115200 8N1.");
    Ok(ExitCode::SUCCESS)
}
