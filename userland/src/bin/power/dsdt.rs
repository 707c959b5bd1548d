//! The DSDT, parsed once at start by the `aml` interpreter, and what S5
//! needs from it: `\_S5`'s sleep types, and whether `\_PTS` can be run.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use aml::value::{Args, RegionSpace};
use aml::{AmlContext, AmlError, AmlName, AmlValue, DebugVerbosity};
use wyvern_abi::syscall::{AcpiInfo, devmap};
use wyvern_user::sys;

use crate::firmware::{Firmware, Io};

/// A DSDT larger than this is not believed.
const DSDT_MAX: u64 = 16 << 20;
/// AML's `NoopOp`, and how many of them follow a DSDT that needs room
/// (see [`parse`]): room for a field element 64 Kibit (8 KiB) wide.
const DEF_NOOP: u8 = 0xa3;
const FIELD_PAD: usize = 8 << 10;

/// The DSDT parsed, and what S5 needs from it.
pub(crate) struct S5 {
    pub(crate) ctx: AmlContext,
    /// SLP_TYPa and SLP_TYPb (3 bits each).
    pub(crate) typ: (u32, u32),
    /// `\_PTS` exists and the interpreter can run it (module docs).
    pub(crate) pts: bool,
}

/// The DSDT's AML, copied out of a read-only mapping that lasts only for
/// the copy. The kernel names the AML after the 36-byte header (what the
/// `acpi` crate reports); a range that starts with the DSDT's own header is
/// accepted too.
fn dsdt_aml(info: &AcpiInfo) -> Result<Vec<u8>, String> {
    let len = info.dsdt_len;
    if info.dsdt_phys == 0 || len == 0 || len > DSDT_MAX {
        return Err(format!("no DSDT ({len} bytes)"));
    }
    let mut aml = Vec::new();
    aml.try_reserve_exact(len as usize + FIELD_PAD)
        .map_err(|_| format!("no memory for the DSDT ({len} bytes)"))?;
    let va = sys::map_device(info.dsdt_phys, len, devmap::READ_ONLY)
        .map_err(|e| format!("DSDT not mapped: {e}"))?;
    {
        // SAFETY: `map_device` mapped `len` bytes at `va` read-only; firmware
        // tables do not change while the OS runs, and the slice dies before
        // the unmap below.
        let table = unsafe { core::slice::from_raw_parts(va as *const u8, len as usize) };
        let whole = table.len() >= 36
            && table.starts_with(b"DSDT")
            && table[4..8] == (len as u32).to_le_bytes();
        aml.extend_from_slice(if whole { &table[36..] } else { table });
    }
    let page = va & !0xfff;
    // SAFETY: the slice over the mapping is gone; nothing else uses it.
    let _ = unsafe { sys::unmap(page, ((va + len + 0xfff) & !0xfff) - page) };
    Ok(aml)
}

/// Parses the DSDT and reads `\_S5`.
pub(crate) fn parse(info: &AcpiInfo, io: Io) -> Result<S5, String> {
    let mut aml = dsdt_aml(info)?;
    let fresh = || AmlContext::new(Box::new(Firmware { io }), DebugVerbosity::None);
    let mut ctx = fresh();
    let mut parsed = ctx.parse_table(&aml);
    if parsed == Err(AmlError::InvalidPkgLength) {
        // aml 0.16.4 checks a field element's length, which counts bits,
        // against the bytes left in the table (rust-osdev/acpi#187, fixed
        // after the standalone crate's last release): a wide `Offset()` gap
        // near the table's end fails. No-ops behind the table make room.
        aml.resize(aml.len() + FIELD_PAD, DEF_NOOP);
        ctx = fresh();
        parsed = ctx.parse_table(&aml);
    }
    drop(aml);
    parsed.map_err(|e| format!("DSDT does not parse: {e:?}"))?;

    let name = |s: &str| AmlName::from_str(s).map_err(|e| format!("{s}: {e:?}"));
    let s5 = ctx
        .invoke_method(&name("\\_S5")?, Args::EMPTY)
        .map_err(|e| format!("no \\_S5: {e:?}"))?;
    let AmlValue::Package(p) = s5 else {
        return Err(format!("\\_S5 is a {:?}", s5.type_of()));
    };
    let int = |i: usize| p.get(i).map(|v| v.as_integer(&ctx)).transpose();
    let typ = match (int(0), int(1)) {
        (Ok(Some(a)), Ok(Some(b))) => (a, b),
        // One integer: SLP_TYPa in its low byte, SLP_TYPb in the next (as
        // ACPICA reads such firmware).
        (Ok(Some(ab)), Ok(None)) => (ab, ab >> 8),
        _ => return Err(format!("\\_S5 has no sleep types ({} elements)", p.len())),
    };
    let typ = ((typ.0 & 7) as u32, (typ.1 & 7) as u32);
    let pts = ctx.namespace.get_by_path(&name("\\_PTS")?).is_ok();
    let pts = pts && regions_supported(&mut ctx);
    Ok(S5 { ctx, typ, pts })
}

/// Whether every operation region of the namespace is of a kind the `aml`
/// crate implements (it panics on the others).
fn regions_supported(ctx: &mut AmlContext) -> bool {
    let mut handles = Vec::new();
    let _ = ctx.namespace.traverse(|_, level| {
        handles.extend(level.values.values().copied());
        Ok(true)
    });
    handles.iter().all(|&h| match ctx.namespace.get(h) {
        Ok(AmlValue::OpRegion {
            region,
            parent_device,
            ..
        }) => match region {
            RegionSpace::SystemMemory | RegionSpace::SystemIo => true,
            RegionSpace::PciConfig => parent_device.is_some(),
            other => {
                note!("\\_PTS skipped: the firmware has a {other:?} region");
                false
            }
        },
        _ => true,
    })
}
