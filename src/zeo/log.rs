//! The server's event log: runzeo's line format (`time LEVEL logger message`, with the logger
//! names administrators grep for, §7.6), to standard error or to a file that SIGUSR2 reopens.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// Where log lines go; a file target can be reopened in place (logrotate's `create` mode).
#[derive(Clone)]
pub struct LogTarget {
    file: Option<(PathBuf, Arc<Mutex<File>>)>,
}

impl LogTarget {
    pub fn stderr() -> Self {
        LogTarget { file: None }
    }

    pub fn file(path: &Path) -> io::Result<Self> {
        let f = open_append(path)?;
        Ok(LogTarget {
            file: Some((path.to_path_buf(), Arc::new(Mutex::new(f)))),
        })
    }

    /// Reopen the log file (after rotation). Returns false when logging to stderr.
    pub fn reopen(&self) -> io::Result<bool> {
        let Some((path, slot)) = &self.file else {
            return Ok(false);
        };
        let f = open_append(path)?;
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = f;
        Ok(true)
    }

    /// The server's subscriber (level from `ZODBCTL_LOG`, default info). `main` already
    /// installed a global stderr subscriber, so the server sets this one as the default of
    /// each of its threads instead (see `commands::serve`).
    pub fn dispatch(&self, level: Option<&str>) -> tracing::Dispatch {
        let filter = EnvFilter::try_from_env(crate::logging::LOG_ENV)
            .unwrap_or_else(|_| EnvFilter::new(level.unwrap_or("info")));
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .event_format(RunzeoFormat)
            .with_writer(self.clone())
            .finish();
        tracing::Dispatch::new(subscriber)
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

pub enum LogWriter {
    Stderr(io::Stderr),
    File(Arc<Mutex<File>>),
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            LogWriter::Stderr(s) => s.write(buf),
            LogWriter::File(f) => f.lock().unwrap_or_else(|e| e.into_inner()).write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            LogWriter::Stderr(s) => s.flush(),
            LogWriter::File(f) => f.lock().unwrap_or_else(|e| e.into_inner()).flush(),
        }
    }
}

impl<'a> MakeWriter<'a> for LogTarget {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        match &self.file {
            Some((_, f)) => LogWriter::File(Arc::clone(f)),
            None => LogWriter::Stderr(io::stderr()),
        }
    }
}

/// `2026-11-21T02:58:35 INFO ZEO.StorageServer message`
struct RunzeoFormat;

impl<S, N> FormatEvent<S, N> for RunzeoFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let level = match *meta.level() {
            Level::ERROR => "ERROR",
            Level::WARN => "WARNING",
            Level::INFO => "INFO",
            Level::DEBUG => "DEBUG",
            Level::TRACE => "TRACE",
        };
        let target = meta.target();
        let name = if target.starts_with("zodbctl") {
            "ZEO.runzeo"
        } else {
            target
        };
        write!(writer, "{} {level} {name} ", local_time())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Local time as `%Y-%m-%dT%H:%M:%S`, like runzeo's default log format.
fn local_time() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as libc::time_t;
    // SAFETY: localtime_r writes only into the struct we pass.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&now, &mut tm).is_null() };
    if !ok {
        return now.to_string();
    }
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// C `ctime()` of now, without the newline: `Sat Nov 21 02:58:35 2026` (server_status).
pub fn ctime_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as libc::time_t;
    let mut buf = [0 as libc::c_char; 64];
    // SAFETY: ctime_r needs a buffer of at least 26 bytes; ours has 64.
    let p = unsafe { libc::ctime_r(&now, buf.as_mut_ptr()) };
    if p.is_null() {
        return now.to_string();
    }
    // SAFETY: ctime_r wrote a NUL-terminated string into buf.
    let s = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    s.to_string_lossy().trim_end().to_string()
}
