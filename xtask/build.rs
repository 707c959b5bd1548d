//! Records the host triple, for finding the toolchain's own binaries
//! (`llvm-objcopy` in `lib/rustlib/<host>/bin`).
fn main() {
    let target = std::env::var("TARGET").expect("cargo sets TARGET for build scripts");
    println!("cargo:rustc-env=XTASK_HOST={target}");
}
