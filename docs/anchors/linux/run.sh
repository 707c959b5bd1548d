#!/bin/sh
# Measures the Linux anchor of docs/BENCHMARKS.md: Debian's stock kernel
# booted under the same QEMU as `cargo xtask bench`, one CPU, -icount
# shift=0 (TSC = guest instructions; shift 0 so that Linux's 250 Hz tick
# comes once per 4 million instructions), running anchor.c as /init.
#
# Usage: docs/anchors/linux/run.sh [WORKDIR]   (needs apt, gcc, python3)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=${1:-$(mktemp -d)}
mkdir -p "$work"
cd "$work"
pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -f "$pkg.deb" ] || { apt-get download "$pkg" && mv "$pkg"_*.deb "$pkg.deb"; }
dpkg-deb -x "$pkg.deb" kernel
vmlinuz=$(ls kernel/boot/vmlinuz-*)
gcc -O2 -Wall -Wextra -static -pthread -o init "$here/anchor.c"
# An initramfs with /init and /dev/console (newc format).
python3 - <<'PY'
import os
def entry(name, mode, data=b"", rdev=(0, 0)):
    hdr = "070701" + "".join("%08x" % v for v in (
        0, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0))
    out = hdr.encode() + name.encode() + b"\0"
    out += b"\0" * (-len(out) % 4) + data
    return out + b"\0" * (-len(out) % 4)
blob = entry("dev", 0o040755) + entry("dev/console", 0o020600, rdev=(5, 1))
blob += entry("init", 0o100755, open("init", "rb").read()) + entry("TRAILER!!!", 0)
open("initrd.cpio", "wb").write(blob)
PY
qemu-system-x86_64 --version | head -1
echo "kernel: $pkg"
qemu-system-x86_64 -machine q35 -cpu max -seed 1 -smp 1 -m 512M \
    -icount shift=0,align=off,sleep=off \
    -rtc base=2024-01-01T00:00:00,clock=vm \
    -display none -nic none -monitor none -serial stdio -no-reboot \
    -kernel "$vmlinuz" -initrd initrd.cpio \
    -append "console=ttyS0 quiet panic=-1" | grep '^LINUX'
