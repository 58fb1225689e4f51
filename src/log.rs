//! Log lines from the library (and from ONNX Runtime) go to one process-wide sink: stderr by default
//! (warnings and errors only), or a host callback installed through the runtime options.

use std::sync::{Arc, RwLock};

/// Severity of a log line; the numeric values are those of `MirageLogLevel` in the C API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum Level {
    Debug = 0,
    Info = 1,
    Warn = 2,
    Error = 3,
}

/// A log sink. Called from whichever thread logs; must not call back into mirage.
pub type Sink = Arc<dyn Fn(Level, &str) + Send + Sync>;

struct Logger {
    sink: Option<Sink>,
    min: Level,
}

static LOGGER: RwLock<Logger> = RwLock::new(Logger { sink: None, min: Level::Warn });

/// Installs a sink (None = stderr) and the lowest level that reaches it.
pub fn set_sink(sink: Option<Sink>, min: Level) {
    {
        let mut l = LOGGER.write().unwrap_or_else(|p| p.into_inner());
        l.sink = sink;
        l.min = min;
    }
    crate::runtime::sync_log_level();
}

/// Whether a line of this level would be delivered.
pub fn enabled(level: Level) -> bool {
    level >= LOGGER.read().unwrap_or_else(|p| p.into_inner()).min
}

/// Delivers one line.
pub fn log(level: Level, msg: &str) {
    let sink = {
        let l = LOGGER.read().unwrap_or_else(|p| p.into_inner());
        if level < l.min {
            return;
        }
        l.sink.clone()
    };
    match sink {
        Some(f) => f(level, msg),
        None => eprintln!("mirage {}: {msg}", format!("{level:?}").to_lowercase()),
    }
}

/// `log_at!(Level::Info, "format {}", args)`.
#[macro_export]
macro_rules! log_at {
    ($lvl:expr, $($arg:tt)*) => {
        if $crate::log::enabled($lvl) { $crate::log::log($lvl, &format!($($arg)*)) }
    };
}
