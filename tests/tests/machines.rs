//! The machines users have, as far as QEMU shows them: hundreds of CPUs with
//! APIC ids above 255 behind an IOMMU's interrupt remapping, APIC ids above
//! 255 on a small machine, no HPET, neither HPET nor PIT, and the image
//! booted from a USB stick.

use std::time::Duration;

use wyvern_tests::apic_tests;
use wyvern_tests::harness::TestBoot;
use wyvern_tests::qemu::{Apic, Disk, Responder};

/// Types `wyvern` on COM1 when the guest is ready for it.
struct TypeWhenReady;

impl Responder for TypeWhenReady {
    fn on_line(&mut self, line: &str) -> Option<Vec<u8>> {
        line.contains("serial-rx: ready for input")
            .then(|| b"wyvern\r".to_vec())
    }
}

/// A two-socket server's worth of CPUs: 288, APIC ids up to 287, which
/// only x2APIC can address; the firmware hands over in x2APIC mode. Every
/// CPU online and ticking, an IPI to each, shootdowns from three CPUs
/// reaching all, COM1 input through the I/O APIC (whose interrupts go to a
/// CPU with an id below 255).
mod many_cpus {
    use super::*;

    #[test]
    fn x2apic() {
        TestBoot::new("many-cpus", 288)
            .apic(Apic::X2Apic)
            .memory(2048)
            .machine("kernel-irqchip=split")
            .qemu_args(&["-device", "intel-iommu,intremap=on,eim=on"])
            .deadline(Duration::from_secs(600))
            .responder(TypeWhenReady)
            .must_contain("288 of 288 CPUs online")
            .must_contain("APIC ids 0-287")
            .must_contain("firmware handed over the boot CPU in x2APIC")
            .must_contain("reached all 288 CPUs")
            .must_contain("serial-rx: received the input")
            .run();
    }
}

/// A small machine whose CPUs have APIC ids 0, 1 and 256 (a CPU in a
/// second socket of 256 cores): the firmware hands over in x2APIC mode, the
/// kernel refuses `apic=xapic` (it could not address CPU 256) and does
/// everything `many-cpus` checks.
mod apic_id_above_255 {
    use super::*;

    #[test]
    fn x2apic() {
        TestBoot::new("many-cpus", 2)
            .apic(Apic::X2Apic)
            .opt("apic=xapic")
            .qemu_args(&[
                "-smp",
                "2,maxcpus=512,sockets=2,cores=256,threads=1",
                "-device",
                "max-x86_64-cpu,socket-id=1,core-id=0,thread-id=0",
            ])
            .responder(TypeWhenReady)
            .must_contain("firmware handed over the boot CPU in x2APIC")
            .must_contain("apic=xapic, but APIC ids above 254 need x2APIC")
            .must_contain("3 of 3 CPUs online")
            .must_contain("APIC ids 0-1, 256")
            .must_contain("reached all 3 CPUs")
            .must_contain("serial-rx: received the input")
            .run();
    }
}

apic_tests! {
    /// No HPET: the TSC is measured against the ACPI PM timer, and the
    /// interactive system comes up (the host waits for the shell's prompt
    /// and quits it).
    fn no_hpet_reaches_the_shell(apic) {
        TestBoot::new("shell", 2)
            .apic(apic)
            .machine("hpet=off")
            .responder(QuitWhenReady)
            .must_contain("from PmTimer")
            .must_contain("shell: ready on 2 CPUs")
            .must_contain("shell: bye")
            .run();
    }

    /// Neither HPET nor PIT, and the PM timer not used either (`tscref=pit`):
    /// the PIT is found dead within a bounded wait, the kernel assumes a
    /// frequency, says so, and every CPU still comes up and ticks.
    fn no_reference_clock_is_survived(apic) {
        TestBoot::new("smp", 2)
            .apic(apic)
            .machine("hpet=off,pit=off")
            .opt("tscref=pit")
            .must_contain("tsc: the PIT does not count; not used")
            .must_contain("from Assumed")
            .must_contain("2 of 2 CPUs online")
            .run();
    }

    /// The PIT alone (`tscref=pit`, the HPET and PM timer skipped).
    fn pit_calibrates_the_tsc(apic) {
        TestBoot::new("boot", 1)
            .apic(apic)
            .opt("tscref=pit")
            .must_contain("from Pit")
            .run();
    }

    /// The image as a user boots it: on a USB stick behind an xHCI
    /// controller.
    fn boots_from_a_usb_stick(apic) {
        TestBoot::new("boot", 2)
            .apic(apic)
            .disk(Disk::UsbStick)
            .run();
    }
}

/// Quits the shell once it is ready.
struct QuitWhenReady;

impl Responder for QuitWhenReady {
    fn on_line(&mut self, line: &str) -> Option<Vec<u8>> {
        line.contains("shell: ready on").then(|| b"quit\r".to_vec())
    }
}
