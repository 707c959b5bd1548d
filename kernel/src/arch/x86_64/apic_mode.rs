//! Which mode the local APICs run in, and how a CPU gets there from the state
//! its firmware left: pure logic, no hardware access, so the host tests every
//! case (`tests/src/lib.rs` includes this file), including the locked state no
//! emulator shows.
//!
//! # The states (SDM vol. 3, 11.12.5)
//!
//! `IA32_APIC_BASE` (MSR 0x1b) bit 11 (EN) enables the APIC, bit 10 (EXTD)
//! selects x2APIC. Firmware may hand a CPU over in any of:
//!
//! | EN | EXTD | state |
//! |---|---|---|
//! | 0 | 0 | disabled |
//! | 1 | 0 | xAPIC: registers in an MMIO page |
//! | 1 | 1 | x2APIC: registers are MSRs 0x800–0x8ff |
//!
//! and, on CPUs that report `IA32_XAPIC_DISABLE_STATUS` (MSR 0xbd, enumerated
//! by `IA32_ARCH_CAPABILITIES` bit 21), x2APIC *locked*: bit 0 of that MSR
//! set means `IA32_APIC_BASE` refuses to leave x2APIC (a write #GPs). The legal
//! transitions are disabled → xAPIC → x2APIC and any enabled state →
//! disabled; x2APIC → xAPIC directly is a #GP. An INIT keeps the mode, so an AP
//! arrives in whatever state its firmware left it.
//!
//! # The choice
//!
//! x2APIC whenever the CPU has it: it is what firmware of big machines hands
//! over, its IPIs are one MSR write with no delivery-status poll, and APIC ids
//! above 254 need it. xAPIC only when the CPU lacks x2APIC, or when the boot
//! option `apic=xapic` asks for it and nothing forbids it (locked x2APIC, or a
//! CPU whose APIC id xAPIC cannot address). The boot CPU decides once; every
//! CPU then walks its own APIC to that mode before it touches a register.

/// The two register interfaces of a local APIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// MMIO registers, 8-bit APIC ids.
    XApic,
    /// MSR registers, 32-bit APIC ids.
    X2Apic,
}

/// What `IA32_APIC_BASE` says about a CPU's APIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// EN clear.
    Disabled,
    /// EN set, EXTD clear.
    XApic,
    /// EN and EXTD set.
    X2Apic,
    /// EXTD set without EN: reserved by the SDM; treated as disabled.
    Invalid,
}

/// `IA32_APIC_BASE` bit 10: x2APIC enable.
pub const BASE_EXTD: u64 = 1 << 10;
/// `IA32_APIC_BASE` bit 11: APIC global enable.
pub const BASE_EN: u64 = 1 << 11;
/// The highest APIC id xAPIC mode can address (0xff is its broadcast id).
pub const XAPIC_MAX_ID: u32 = 0xfe;

impl State {
    /// Decodes `IA32_APIC_BASE`.
    pub fn from_base(base: u64) -> Self {
        match (base & BASE_EN != 0, base & BASE_EXTD != 0) {
            (false, false) => State::Disabled,
            (true, false) => State::XApic,
            (true, true) => State::X2Apic,
            (false, true) => State::Invalid,
        }
    }

    /// How a report names the state.
    pub fn name(self) -> &'static str {
        match self {
            State::Disabled => "disabled",
            State::XApic => "xAPIC",
            State::X2Apic => "x2APIC",
            State::Invalid => "invalid (EXTD without EN)",
        }
    }
}

impl Mode {
    /// How a report names the mode.
    pub fn name(self) -> &'static str {
        match self {
            Mode::XApic => "xAPIC",
            Mode::X2Apic => "x2APIC",
        }
    }
}

/// What the boot option `apic=` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// x2APIC when the CPU has it (the default).
    Auto,
    /// xAPIC if the machine allows it.
    XApic,
    /// x2APIC; refused (with a note) when the CPU lacks it.
    X2Apic,
}

/// What the boot CPU knows when it chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// CPUID.1:ECX bit 21.
    pub cpu_has_x2apic: bool,
    /// The boot CPU's state as the firmware left it.
    pub handover: State,
    /// `IA32_XAPIC_DISABLE_STATUS` bit 0: x2APIC cannot be left.
    pub locked: bool,
    /// The highest APIC id the MADT lists.
    pub max_apic_id: u32,
}

/// The choice, and why a request was not followed (if it was not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub mode: Mode,
    pub overruled: Option<&'static str>,
}

/// Chooses the mode every CPU will run in.
pub fn choose(facts: Facts, request: Request) -> Choice {
    let pick = |mode, overruled| Choice { mode, overruled };
    if !facts.cpu_has_x2apic {
        return match request {
            Request::X2Apic => pick(Mode::XApic, Some("apic=x2apic, but the CPU has no x2APIC")),
            _ => pick(Mode::XApic, None),
        };
    }
    match request {
        Request::Auto | Request::X2Apic => pick(Mode::X2Apic, None),
        Request::XApic if facts.locked => pick(
            Mode::X2Apic,
            Some("apic=xapic, but the firmware locked x2APIC mode"),
        ),
        Request::XApic if facts.max_apic_id > XAPIC_MAX_ID => pick(
            Mode::X2Apic,
            Some("apic=xapic, but APIC ids above 254 need x2APIC"),
        ),
        Request::XApic => pick(Mode::XApic, None),
    }
}

/// The `IA32_APIC_BASE` values to write, in order, to take a CPU from the
/// value `base` to `mode`; empty when it is there already. Every step is a
/// transition the SDM allows: out of x2APIC only through disabled, into
/// x2APIC only from xAPIC. The address and BSP bits are kept.
///
/// Fails when `locked` and the move would leave x2APIC.
pub fn transition(base: u64, mode: Mode, locked: bool) -> Result<Steps, &'static str> {
    let keep = base & !(BASE_EN | BASE_EXTD);
    let disabled = keep;
    let xapic = keep | BASE_EN;
    let x2apic = keep | BASE_EN | BASE_EXTD;
    let mut steps = Steps::new();
    match (State::from_base(base), mode) {
        (State::XApic, Mode::XApic) | (State::X2Apic, Mode::X2Apic) => {}
        (State::Disabled, Mode::XApic) => steps.push(xapic),
        (State::XApic, Mode::X2Apic) => steps.push(x2apic),
        (State::Disabled, Mode::X2Apic) => {
            steps.push(xapic);
            steps.push(x2apic);
        }
        (State::X2Apic, Mode::XApic) if locked => {
            return Err("x2APIC is locked: cannot return to xAPIC");
        }
        (State::X2Apic, Mode::XApic) => {
            steps.push(disabled);
            steps.push(xapic);
        }
        (State::Invalid, Mode::XApic) => {
            steps.push(disabled);
            steps.push(xapic);
        }
        (State::Invalid, Mode::X2Apic) => {
            steps.push(disabled);
            steps.push(xapic);
            steps.push(x2apic);
        }
    }
    Ok(steps)
}

/// A fixed-capacity list of `IA32_APIC_BASE` writes (at most three).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steps {
    vals: [u64; 3],
    len: usize,
}

impl Steps {
    const fn new() -> Self {
        Steps {
            vals: [0; 3],
            len: 0,
        }
    }

    fn push(&mut self, v: u64) {
        self.vals[self.len] = v;
        self.len += 1;
    }

    /// The values, in order.
    pub fn as_slice(&self) -> &[u64] {
        &self.vals[..self.len]
    }
}

/// The x2APIC id of the calling CPU from CPUID: leaf 0x1f (V2 extended
/// topology) or 0xb when the CPU has them, else the 8-bit initial id of leaf
/// 1. `cpuid(leaf, subleaf)` returns (eax, ebx, ecx, edx).
pub fn cpuid_apic_id(cpuid: impl Fn(u32, u32) -> (u32, u32, u32, u32)) -> u32 {
    let max = cpuid(0, 0).0;
    for leaf in [0x1f, 0xb] {
        // A leaf is implemented when its subleaf 0 reports a level type
        // (ECX[15:8] != 0) — EBX may be 0 on some CPUs.
        if max >= leaf && (cpuid(leaf, 0).2 >> 8) & 0xff != 0 {
            return cpuid(leaf, 0).3;
        }
    }
    cpuid(1, 0).1 >> 24
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDR: u64 = 0xfee0_0000 | (1 << 8); // base and BSP bit

    fn facts(has: bool, handover: State, locked: bool, max_id: u32) -> Facts {
        Facts {
            cpu_has_x2apic: has,
            handover,
            locked,
            max_apic_id: max_id,
        }
    }

    #[test]
    fn decodes_the_base_register() {
        assert_eq!(State::from_base(ADDR), State::Disabled);
        assert_eq!(State::from_base(ADDR | BASE_EN), State::XApic);
        assert_eq!(State::from_base(ADDR | BASE_EN | BASE_EXTD), State::X2Apic);
        assert_eq!(State::from_base(ADDR | BASE_EXTD), State::Invalid);
    }

    #[test]
    fn x2apic_whenever_the_cpu_has_it() {
        for handover in [State::Disabled, State::XApic, State::X2Apic] {
            for locked in [false, true] {
                let c = choose(facts(true, handover, locked, 7), Request::Auto);
                assert_eq!(
                    c,
                    Choice {
                        mode: Mode::X2Apic,
                        overruled: None
                    }
                );
            }
        }
        let c = choose(facts(false, State::XApic, false, 7), Request::Auto);
        assert_eq!(
            c,
            Choice {
                mode: Mode::XApic,
                overruled: None
            }
        );
    }

    #[test]
    fn requests_are_followed_unless_the_machine_forbids_them() {
        let ok = choose(facts(true, State::X2Apic, false, 200), Request::XApic);
        assert_eq!(
            ok,
            Choice {
                mode: Mode::XApic,
                overruled: None
            }
        );
        let locked = choose(facts(true, State::X2Apic, true, 7), Request::XApic);
        assert_eq!(locked.mode, Mode::X2Apic);
        assert!(locked.overruled.unwrap().contains("locked"));
        let big = choose(facts(true, State::X2Apic, false, 300), Request::XApic);
        assert_eq!(big.mode, Mode::X2Apic);
        assert!(big.overruled.unwrap().contains("above 254"));
        let edge = choose(facts(true, State::XApic, false, 254), Request::XApic);
        assert_eq!(edge.mode, Mode::XApic);
        let none = choose(facts(false, State::XApic, false, 7), Request::X2Apic);
        assert_eq!(none.mode, Mode::XApic);
        assert!(none.overruled.is_some());
    }

    /// Replays `steps` on a model of the SDM's state machine, failing on any
    /// move it forbids.
    fn replay(mut base: u64, steps: &[u64], locked: bool) -> Result<u64, String> {
        for &next in steps {
            let (from, to) = (State::from_base(base), State::from_base(next));
            let legal = match (from, to) {
                (a, b) if a == b => true,
                (State::Disabled | State::Invalid, State::XApic | State::Disabled) => true,
                (State::XApic, State::X2Apic | State::Disabled) => true,
                (State::X2Apic, State::Disabled) => !locked,
                _ => false,
            };
            if !legal {
                return Err(format!("{} -> {} is not allowed", from.name(), to.name()));
            }
            assert_eq!(next & !(BASE_EN | BASE_EXTD), ADDR, "address bits kept");
            base = next;
        }
        Ok(base)
    }

    #[test]
    fn every_transition_is_legal_and_arrives() {
        for from in [0, BASE_EN, BASE_EN | BASE_EXTD, BASE_EXTD] {
            for mode in [Mode::XApic, Mode::X2Apic] {
                for locked in [false, true] {
                    let base = ADDR | from;
                    let locked = locked && State::from_base(base) == State::X2Apic;
                    match transition(base, mode, locked) {
                        Ok(steps) => {
                            let end = replay(base, steps.as_slice(), locked).unwrap();
                            let want = match mode {
                                Mode::XApic => State::XApic,
                                Mode::X2Apic => State::X2Apic,
                            };
                            assert_eq!(State::from_base(end), want);
                        }
                        Err(_) => assert!(locked && mode == Mode::XApic),
                    }
                }
            }
        }
        assert!(
            transition(ADDR | BASE_EN, Mode::XApic, false)
                .unwrap()
                .as_slice()
                .is_empty()
        );
    }

    #[test]
    fn apic_id_from_the_best_leaf() {
        // Leaf 0x1f present: its EDX wins over the 8-bit id.
        let id = cpuid_apic_id(|leaf, _| match leaf {
            0 => (0x1f, 0, 0, 0),
            0x1f => (1, 0, 0x100, 300),
            0xb => (1, 1, 0x100, 300),
            1 => (0, 44 << 24, 0, 0),
            _ => (0, 0, 0, 0),
        });
        assert_eq!(id, 300);
        // Only leaf 1.
        let id = cpuid_apic_id(|leaf, _| match leaf {
            0 => (0xa, 0, 0, 0),
            1 => (0, 44 << 24, 0, 0),
            _ => (0, 0, 0, 0),
        });
        assert_eq!(id, 44);
        // Leaf 0xb listed but not implemented (level type 0).
        let id = cpuid_apic_id(|leaf, _| match leaf {
            0 => (0xd, 0, 0, 0),
            1 => (0, 5 << 24, 0, 0),
            _ => (0, 0, 0, 0),
        });
        assert_eq!(id, 5);
    }
}
