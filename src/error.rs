//! How errors become exit statuses at the command edge.
//!
//! Library modules return their own `thiserror` types; commands wrap them in `anyhow`.
//! An error the user fixes by changing what they typed or wrote (a bad config key, a bad
//! address, a target directory that already has files) exits with status 2, like a usage
//! error; anything else exits with 1. Mark the former with [`usage`].

use std::fmt;

/// Exit status of a usage or input error (same as clap's and zdaemon's).
pub const EXIT_USAGE: u8 = 2;
/// Exit status of any other failure.
pub const EXIT_FAILURE: u8 = 1;

/// Marks an error as the user's to fix (exit status 2).
#[derive(Debug)]
pub struct UsageError(pub anyhow::Error);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `{:#}` keeps the whole chain on one line: "file:3: key 'x': not a known key".
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for UsageError {}

/// Wrap an error so that the command exits with status 2.
pub fn usage(err: impl Into<anyhow::Error>) -> anyhow::Error {
    anyhow::Error::new(UsageError(err.into()))
}

/// The exit status for an error that reached `main`.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.chain().any(|cause| cause.is::<UsageError>()) {
        EXIT_USAGE
    } else {
        EXIT_FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn usage_errors_exit_2_even_with_context() {
        let err: anyhow::Result<()> = Err(usage(anyhow::anyhow!("bad key")));
        let err = err.context("reading etc/zeo.toml").unwrap_err();
        assert_eq!(exit_code(&err), EXIT_USAGE);
        assert_eq!(exit_code(&anyhow::anyhow!("disk full")), EXIT_FAILURE);
    }
}
