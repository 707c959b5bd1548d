//! This boot's options, read from QEMU's `fw_cfg` (see `wyvern_abi::bootopt`).
//!
//! A malformed option line is fatal: under QEMU it always comes from the test
//! harness, and booting with a misread line would turn a typo into a hang.

use wyvern_abi::bootopt::{BootOptions, FW_CFG_NAME, MAX_LEN};

use crate::arch::qemu;
use crate::println;
use crate::sync::Once;

static TEXT: Once<([u8; MAX_LEN], usize)> = Once::new();

/// Reads and parses the options (boot CPU, once).
pub fn load() -> BootOptions<'static> {
    let (buf, len) = TEXT.call_once(|| {
        let mut buf = [0u8; MAX_LEN];
        let len = match qemu::fw_cfg_file(FW_CFG_NAME, &mut buf) {
            None => 0,
            Some(Ok(n)) => n,
            Some(Err(size)) => panic!("boot options are {size} bytes, more than {MAX_LEN}"),
        };
        (buf, len)
    });
    let text = core::str::from_utf8(&buf[..*len])
        .unwrap_or_else(|_| panic!("boot options are not UTF-8"))
        .trim_end_matches('\0');
    if !text.is_empty() {
        println!("boot options: {text}");
    }
    match BootOptions::parse(text) {
        Ok(o) => o,
        Err(e) => panic!("bad boot options `{text}`: {e}"),
    }
}
