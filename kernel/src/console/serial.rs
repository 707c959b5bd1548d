//! COM1 (`uart_16550`), output side.
//!
//! Transmission polls the line-status register. On real hardware a UART can sit
//! with its transmitter never ready (nothing on the line, flow control); each
//! byte gives up after a bounded wait, so a missing console never hangs the
//! kernel.

use uart_16550::Uart16550;
use uart_16550::backend::PioBackend;

/// Base port of COM1.
pub const COM1: u16 = 0x3f8;
/// Polls of the transmitter before a byte is dropped.
const SEND_TRIES: u32 = 100_000;

/// The serial console: COM1 if it answered at boot, nothing otherwise.
pub struct Serial {
    uart: Option<Uart16550<PioBackend>>,
}

impl Serial {
    /// No port.
    pub const fn absent() -> Self {
        Serial { uart: None }
    }

    /// Probes and initializes COM1 at 115200 8N1 with FIFOs.
    pub fn probe_com1() -> Self {
        // SAFETY: 0x3f8–0x3ff are COM1's registers on every PC; the console lock
        // held by our caller makes this the only user.
        let Ok(mut uart) = (unsafe { Uart16550::new_port(COM1) }) else {
            return Serial::absent();
        };
        match uart.init(uart_16550::Config::default()) {
            Ok(()) => Serial { uart: Some(uart) },
            Err(_) => Serial::absent(),
        }
    }

    /// Whether COM1 answered.
    pub fn present(&self) -> bool {
        self.uart.is_some()
    }

    fn put(uart: &mut Uart16550<PioBackend>, byte: u8) {
        for _ in 0..SEND_TRIES {
            if uart.try_send_byte(byte).is_ok() {
                return;
            }
            core::hint::spin_loop();
        }
    }

    /// Writes `s`, turning `\n` into `\r\n`.
    pub fn write_str(&mut self, s: &str) {
        self.write_bytes(s.as_bytes());
    }

    /// Writes `bytes` (UTF-8 cut anywhere, say), turning `\n` into `\r\n`.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        let Some(uart) = self.uart.as_mut() else {
            return;
        };
        for &b in bytes {
            if b == b'\n' {
                Self::put(uart, b'\r');
            }
            Self::put(uart, b);
        }
    }
}

/// Enables the receive-data interrupt of COM1.
pub fn enable_rx_interrupt(serial: &mut Serial) {
    if let Some(uart) = serial.uart.as_mut() {
        uart.enable_interrupts(uart_16550::spec::registers::IER::DATA_READY);
    }
}
