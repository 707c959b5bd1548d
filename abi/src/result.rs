//! Machine-readable lines a boot prints on serial.
//!
//! Every line the host parses starts with a fixed tag so it can be found among
//! OVMF's escape codes and the bootloader's log on the same port.

/// Prefix of a self-test's verdict: `TEST <name> ok` or `TEST <name> FAILED: <why>`.
pub const TEST_TAG: &str = "TEST";
/// Word after the test name in a passing verdict.
pub const TEST_OK: &str = "ok";
/// Word after the test name in a failing verdict.
pub const TEST_FAILED: &str = "FAILED:";

/// Prefix of a backtrace line: `BT #<n> <rip> +<offset>`, where `offset` is
/// `rip` minus the kernel image base, i.e. the address in the kernel ELF.
pub const BACKTRACE_TAG: &str = "BT";

/// Prefix of one benchmark figure: `BENCH <json object>`.
pub const BENCH_TAG: &str = "BENCH";

/// The line a passing test prints last, e.g. `TEST boot ok`.
pub fn is_test_ok(line: &str, name: &str) -> bool {
    let mut words = line.split_ascii_whitespace();
    words.next() == Some(TEST_TAG)
        && words.next() == Some(name)
        && words.next() == Some(TEST_OK)
        && words.next().is_none()
}

/// Parses a backtrace line into `(rip, offset in the kernel ELF)`.
pub fn parse_backtrace(line: &str) -> Option<(u64, u64)> {
    let line = line.trim_start();
    let rest = line.strip_prefix(BACKTRACE_TAG)?.trim_start();
    let mut words = rest.split_ascii_whitespace();
    words.next()?.strip_prefix('#')?.parse::<u32>().ok()?;
    let rip = u64::from_str_radix(words.next()?.strip_prefix("0x")?, 16).ok()?;
    let off = u64::from_str_radix(words.next()?.strip_prefix("+0x")?, 16).ok()?;
    Some((rip, off))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_verdicts() {
        assert!(is_test_ok("TEST boot ok", "boot"));
        assert!(is_test_ok("TEST boot ok  ", "boot"));
        assert!(!is_test_ok("TEST boot ok extra", "boot"));
        assert!(!is_test_ok("TEST bootx ok", "boot"));
        assert!(!is_test_ok("TEST boot FAILED: no", "boot"));
    }

    #[test]
    fn parses_backtrace_lines() {
        assert_eq!(
            parse_backtrace("  BT #3 0xffffffff80012345 +0x12345"),
            Some((0xffff_ffff_8001_2345, 0x12345))
        );
        assert_eq!(parse_backtrace("BT 3 0x1 +0x1"), None);
        assert_eq!(parse_backtrace("nothing"), None);
    }
}
