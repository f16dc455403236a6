//! Log output through `tracing`.
//!
//! Commands log to standard error; the level comes from `ZODBCTL_LOG` (a `tracing` filter
//! such as `info` or `zodbctl::zeo=debug`), default `info`. The server and the supervisor
//! install their own file writers (reopened on SIGUSR2/SIGHUP) instead.

use tracing_subscriber::EnvFilter;

/// Environment variable holding the log filter.
pub const LOG_ENV: &str = "ZODBCTL_LOG";

/// Log to standard error. Calling it twice is harmless.
pub fn init_stderr() {
    let filter = EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
