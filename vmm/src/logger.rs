//! The process's logger and Firecracker's `PUT /logger` and `PUT /metrics` sinks.
//!
//! One `log::Log` for the whole process: lines go to stderr (`microvm: LEVEL: message`) until a logger
//! configuration names a `log_path`; from then on they go to that file or FIFO, in Firecracker's shape
//! (`[ID:THREAD] message`, with `LEVEL` and `file:line` when `show_level` / `show_log_origin` ask for them).
//! The level and a module filter come from the same configuration. Metrics lines (`FlushMetrics`) go to the
//! `metrics_path` sink when one is configured. Files are opened as Firecracker opens them: read-write and
//! non-blocking, so a FIFO opens without a reader and a full FIFO drops the line instead of stalling a
//! vCPU or the VMM thread. Both are configured before the VM starts (pre-boot only, as in Firecracker), so
//! the open happens before any seccomp filter is installed; writing needs only `write`, which every
//! thread's filter allows.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Mutex, OnceLock, RwLock};

use crate::config::{LogLevel, LoggerConfig};

/// A sink that cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggerError {
    #[error("cannot open {what} {path}: {source}")]
    Open {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

struct State {
    level: log::LevelFilter,
    /// Modules whose records pass at `Info` whatever the level (the boot-time marker).
    info_modules: Vec<&'static str>,
    /// Only records whose target starts with this pass (Firecracker's `module`).
    module: Option<String>,
    show_level: bool,
    show_origin: bool,
    /// `[ID:THREAD]` prefix in the file's lines.
    id: String,
    file: Option<File>,
}

struct Logger {
    state: RwLock<State>,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();
static METRICS: Mutex<Option<File>> = Mutex::new(None);

fn state() -> Option<&'static RwLock<State>> {
    LOGGER.get().map(|l| &l.state)
}

impl Logger {
    fn passes(s: &State, meta: &log::Metadata) -> bool {
        if let Some(m) = &s.module {
            if !meta.target().starts_with(m.as_str()) {
                return false;
            }
        }
        meta.level() <= s.level
            || (meta.level() <= log::Level::Info
                && s.info_modules.iter().any(|m| meta.target().starts_with(m)))
    }
}

impl log::Log for Logger {
    fn enabled(&self, meta: &log::Metadata) -> bool {
        self.state
            .read()
            .map(|s| Self::passes(&s, meta))
            .unwrap_or(false)
    }

    fn log(&self, record: &log::Record) {
        let Ok(s) = self.state.read() else {
            return;
        };
        if !Self::passes(&s, record.metadata()) {
            return;
        }
        let level = record.level().as_str();
        let Some(mut file) = s.file.as_ref() else {
            let _ = writeln!(
                std::io::stderr(),
                "microvm: {}: {}",
                level.to_lowercase(),
                record.args()
            );
            return;
        };
        let mut line = format!(
            "[{}:{}] ",
            s.id,
            std::thread::current().name().unwrap_or("unnamed")
        );
        if s.show_level {
            line.push_str(level);
            line.push(' ');
        }
        if s.show_origin {
            line.push_str(&format!(
                "{}:{} ",
                record.file().unwrap_or("?"),
                record.line().unwrap_or(0)
            ));
        }
        line.push_str(&format!("{}\n", record.args()));
        // One write per line; a full FIFO drops it (EAGAIN) rather than blocking.
        let _ = file.write(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the process's logger: stderr, `level`, and `info_modules` at `Info` at least. Once per process.
pub fn init(level: log::LevelFilter, info_modules: Vec<&'static str>) {
    let logger = LOGGER.get_or_init(|| Logger {
        state: RwLock::new(State {
            level,
            info_modules,
            module: None,
            show_level: false,
            show_origin: false,
            id: String::new(),
            file: None,
        }),
    });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
}

/// Opens a log or metrics path as Firecracker does: read-write (a FIFO opens without a reader),
/// non-blocking, appending, created if absent.
fn open_sink(what: &'static str, path: &Path) -> Result<File, LoggerError> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| LoggerError::Open {
            what,
            path: path.display().to_string(),
            source,
        })
}

/// Applies `PUT /logger` (or a config file's `logger`): opens `log_path` first, so a path that does not
/// open changes nothing.
pub fn configure(id: &str, config: &LoggerConfig) -> Result<(), LoggerError> {
    let file = match &config.log_path {
        Some(p) => Some(open_sink("log_path", p)?),
        None => None,
    };
    let Some(lock) = state() else {
        return Ok(());
    };
    if let Ok(mut s) = lock.write() {
        if let Some(level) = config.level {
            s.level = match level {
                LogLevel::Off => log::LevelFilter::Off,
                LogLevel::Error => log::LevelFilter::Error,
                LogLevel::Warning => log::LevelFilter::Warn,
                LogLevel::Info => log::LevelFilter::Info,
                LogLevel::Debug => log::LevelFilter::Debug,
                LogLevel::Trace => log::LevelFilter::Trace,
            };
        }
        s.module = config.module.clone();
        s.show_level = config.show_level;
        s.show_origin = config.show_log_origin;
        s.id = id.to_owned();
        if file.is_some() {
            s.file = file;
        }
    }
    Ok(())
}

/// Applies `PUT /metrics`: later `FlushMetrics` lines go to `path`.
pub fn configure_metrics(path: &Path) -> Result<(), LoggerError> {
    let file = open_sink("metrics_path", path)?;
    if let Ok(mut m) = METRICS.lock() {
        *m = Some(file);
    }
    Ok(())
}

/// Writes one metrics line to the metrics sink; false when none is configured.
pub fn write_metrics(line: &str) -> bool {
    let Ok(m) = METRICS.lock() else {
        return false;
    };
    let Some(mut file) = m.as_ref() else {
        return false;
    };
    let _ = file.write(format!("{line}\n").as_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn sinks_open_fifos_without_a_reader_and_files() {
        let dir = std::env::temp_dir().join(format!("microvm-logger-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let fifo = dir.join("fifo");
        let _ = std::fs::remove_file(&fifo);
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo touches nothing else.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let mut f = open_sink("log_path", &fifo).unwrap();
        f.write_all(b"x\n").unwrap();
        let mut buf = [0u8; 2];
        f.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"x\n");
        configure_metrics(&dir.join("metrics")).unwrap();
        assert!(write_metrics("{\"a\":1}"));
        assert_eq!(
            std::fs::read_to_string(dir.join("metrics")).unwrap(),
            "{\"a\":1}\n"
        );
        let e = open_sink("log_path", &dir.join("no/such/dir")).unwrap_err();
        assert!(e.to_string().starts_with("cannot open log_path"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
