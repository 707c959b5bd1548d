//! The `log` facade, printed on the console as `[seconds] [cpuN] LEVEL message`
//! (seconds since kernel entry, from the TSC; 0 before it is calibrated).

use log::{Level, LevelFilter, Log, Metadata, Record};
use wyvern_abi::bootopt::LogLevel;

struct ConsoleLogger;

impl Log for ConsoleLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            Level::Error => "ERROR",
            Level::Warn => "WARN ",
            Level::Info => "INFO ",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        };
        let us = crate::arch::tsc::uptime_ns() / 1000;
        crate::println!(
            "[{:>5}.{:06}] [cpu{}] {level} {}",
            us / 1_000_000,
            us % 1_000_000,
            crate::percpu::cpu_index(),
            record.args()
        );
    }

    fn flush(&self) {}
}

static LOGGER: ConsoleLogger = ConsoleLogger;

/// Installs the logger at the boot option's level.
pub fn init(level: LogLevel) {
    let filter = match level {
        LogLevel::Error => LevelFilter::Error,
        LogLevel::Warn => LevelFilter::Warn,
        LogLevel::Info => LevelFilter::Info,
        LogLevel::Debug => LevelFilter::Debug,
        LogLevel::Trace => LevelFilter::Trace,
    };
    // A second call (there is none) would keep the first logger.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(filter);
}
