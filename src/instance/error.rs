//! Configuration errors and notices. Both name the file and, when known, the line and key,
//! so that one line tells the administrator what to fix and where.

use std::fmt;
use std::path::{Path, PathBuf};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Bad content: syntax, an unknown key, a value outside what is allowed.
    #[error("{}", Place { file, line: *line, key: key.as_deref() }.with(message))]
    Invalid {
        file: PathBuf,
        line: Option<usize>,
        key: Option<String>,
        message: String,
    },
    /// No configuration where one was looked for.
    #[error("{}", message)]
    NotFound { message: String },
}

impl ConfigError {
    pub fn invalid(
        file: &Path,
        line: Option<usize>,
        key: Option<&str>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            file: file.to_path_buf(),
            line,
            key: key.map(str::to_owned),
            message: message.into(),
        }
    }

    pub fn io(path: &Path, source: std::io::Error) -> ConfigError {
        ConfigError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The line the error points at, if any.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Invalid { line, .. } => *line,
            _ => None,
        }
    }
}

/// Something in a configuration that zodbctl read but does not act on (a legacy zdaemon key,
/// a Python-only setting). Reported to the user, never silently dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub file: PathBuf,
    pub line: usize,
    pub key: String,
    pub message: String,
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place = Place {
            file: &self.file,
            line: Some(self.line),
            key: Some(&self.key),
        };
        f.write_str(&place.with(&self.message))
    }
}

struct Place<'a> {
    file: &'a Path,
    line: Option<usize>,
    key: Option<&'a str>,
}

impl Place<'_> {
    fn with(&self, message: &str) -> String {
        let mut s = self.file.display().to_string();
        if let Some(line) = self.line {
            s.push_str(&format!(":{line}"));
        }
        s.push_str(": ");
        if let Some(key) = self.key {
            s.push_str(&format!("{key}: "));
        }
        s.push_str(message);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_with_place() {
        let e = ConfigError::invalid(
            Path::new("etc/zeo.toml"),
            Some(3),
            Some("zeo.address"),
            "bad address",
        );
        assert_eq!(e.to_string(), "etc/zeo.toml:3: zeo.address: bad address");
        let e = ConfigError::invalid(Path::new("x.toml"), None, None, "empty");
        assert_eq!(e.to_string(), "x.toml: empty");
    }
}
