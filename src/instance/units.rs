//! Value types shared by the configuration files: byte sizes, durations, umasks, command
//! lines, log levels and exit-code lists. Each accepts the spellings a ZConfig file uses, so
//! imported values keep their meaning, and writes one canonical spelling back.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A size in bytes: `134217728`, `"128MB"`, `"20 kb"`, `"1GB"` (units are powers of 1024, as in
/// ZConfig's `byte-size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

const SIZE_UNITS: [(&str, u64); 5] = [
    ("TB", 1 << 40),
    ("GB", 1 << 30),
    ("MB", 1 << 20),
    ("KB", 1 << 10),
    ("B", 1),
];

impl ByteSize {
    pub const fn mib(n: u64) -> ByteSize {
        ByteSize(n << 20)
    }
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<ByteSize, String> {
        let text = s.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let bad = || {
            format!(
                "bad size {s:?} (expected a number of bytes, optionally followed by KB, MB, GB or TB)"
            )
        };
        if digits.is_empty() {
            return Err(bad());
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let unit = unit.trim().to_ascii_uppercase();
        let mult = match unit.as_str() {
            "" | "B" => 1,
            "K" | "KB" | "KIB" => 1 << 10,
            "M" | "MB" | "MIB" => 1 << 20,
            "G" | "GB" | "GIB" => 1 << 30,
            "T" | "TB" | "TIB" => 1 << 40,
            _ => return Err(bad()),
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(bad)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, mult) in SIZE_UNITS {
            if self.0 != 0 && self.0 % mult == 0 && mult > 1 {
                return write!(f, "{}{name}", self.0 / mult);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.to_string().bytes().all(|b| b.is_ascii_digit()) {
            // Plain byte counts stay integers in TOML when they fit.
            if let Ok(n) = i64::try_from(self.0) {
                return s.serialize_i64(n);
            }
        }
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size: a number of bytes or a string like \"128MB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration: an integer or float number of seconds, or a string with a unit:
/// `"500ms"`, `"30s"`, `"5m"`, `"2h"`, `"1d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Seconds(pub Duration);

impl Seconds {
    pub const fn secs(n: u64) -> Seconds {
        Seconds(Duration::from_secs(n))
    }
    pub fn duration(self) -> Duration {
        self.0
    }
    pub fn as_secs_f64(self) -> f64 {
        self.0.as_secs_f64()
    }
    fn from_f64(v: f64) -> Result<Seconds, String> {
        if v.is_finite() && (0.0..1e12).contains(&v) {
            Ok(Seconds(Duration::from_secs_f64(v)))
        } else {
            Err(format!(
                "bad duration {v} (expected a number of seconds ≥ 0)"
            ))
        }
    }
}

impl FromStr for Seconds {
    type Err = String;
    fn from_str(s: &str) -> Result<Seconds, String> {
        let text = s.trim();
        let bad = || {
            format!(
                "bad duration {s:?} (expected seconds, or a number followed by ms, s, m, h or d)"
            )
        };
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (num, unit) = text.split_at(split);
        if num.is_empty() {
            return Err(bad());
        }
        let n: f64 = num.parse().map_err(|_| bad())?;
        let mult = match unit.trim().to_ascii_lowercase().as_str() {
            "ms" => 0.001,
            "" | "s" | "sec" | "secs" | "seconds" => 1.0,
            "m" | "min" | "minutes" => 60.0,
            "h" | "hours" => 3600.0,
            "d" | "days" => 86400.0,
            _ => return Err(bad()),
        };
        Seconds::from_f64(n * mult).map_err(|_| bad())
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.subsec_nanos() == 0 {
            write!(f, "{}", self.0.as_secs())
        } else {
            write!(f, "{}", self.0.as_secs_f64())
        }
    }
}

impl Serialize for Seconds {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.subsec_nanos() == 0 {
            if let Ok(n) = i64::try_from(self.0.as_secs()) {
                return s.serialize_i64(n);
            }
        }
        s.serialize_f64(self.0.as_secs_f64())
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Seconds, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration: seconds, or a string like \"30s\" or \"5m\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
                u64::try_from(v)
                    .map(Seconds::secs)
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seconds, E> {
                Ok(Seconds::secs(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Seconds, E> {
                Seconds::from_f64(v).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Seconds, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A file-creation mask, written in octal: `"022"`, `"0o027"`. A TOML integer is taken as
/// its numeric value (`0o022`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Umask(pub u32);

impl Default for Umask {
    fn default() -> Umask {
        Umask(0o022)
    }
}

impl FromStr for Umask {
    type Err = String;
    fn from_str(s: &str) -> Result<Umask, String> {
        let t = s.trim();
        let digits = t.strip_prefix("0o").unwrap_or(t);
        u32::from_str_radix(digits, 8)
            .ok()
            .filter(|v| *v <= 0o777 && !digits.is_empty())
            .map(Umask)
            .ok_or_else(|| format!("bad umask {s:?} (expected an octal number from 000 to 777)"))
    }
}

impl fmt::Display for Umask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:03o}", self.0)
    }
}

impl Serialize for Umask {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Umask {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Umask, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Umask;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an octal umask such as \"022\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Umask, E> {
                u32::try_from(v)
                    .ok()
                    .filter(|v| *v <= 0o777)
                    .map(Umask)
                    .ok_or_else(|| E::custom("bad umask (expected 0o000 to 0o777)"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Umask, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A command line: a string split with shell-style quoting (`"runwsgi -v etc/zope.ini"`), or
/// an array of words. Written back as a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CommandLine(pub Vec<String>);

impl CommandLine {
    pub fn words(&self) -> &[String] {
        &self.0
    }
    pub fn program(&self) -> &str {
        self.0.first().map(String::as_str).unwrap_or("")
    }
}

impl FromStr for CommandLine {
    type Err = String;
    fn from_str(s: &str) -> Result<CommandLine, String> {
        let words = shell_words::split(s).map_err(|e| format!("bad command line {s:?}: {e}"))?;
        if words.is_empty() {
            return Err("the command line is empty".into());
        }
        Ok(CommandLine(words))
    }
}

impl fmt::Display for CommandLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&shell_words::join(&self.0))
    }
}

impl Serialize for CommandLine {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CommandLine {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<CommandLine, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Words(Vec<String>),
        }
        match Raw::deserialize(d).map_err(|_| {
            de::Error::custom("expected a command line: a string or an array of strings")
        })? {
            Raw::Text(t) => t.parse().map_err(de::Error::custom),
            Raw::Words(w) if w.is_empty() => Err(de::Error::custom("the command line is empty")),
            Raw::Words(w) => Ok(CommandLine(w)),
        }
    }
}

/// Exit codes, as an array `[0, 2]` or a string `"0, 2"` (zdaemon's spelling).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExitCodes(pub Vec<i32>);

impl Default for ExitCodes {
    fn default() -> ExitCodes {
        ExitCodes(vec![0, 2])
    }
}

impl FromStr for ExitCodes {
    type Err = String;
    fn from_str(s: &str) -> Result<ExitCodes, String> {
        s.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|w| !w.is_empty())
            .map(|w| {
                w.parse::<i32>().map_err(|_| {
                    format!("bad exit code {w:?} in {s:?} (expected integers such as \"0, 2\")")
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(ExitCodes)
    }
}

impl Serialize for ExitCodes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ExitCodes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ExitCodes, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Codes(Vec<i32>),
        }
        match Raw::deserialize(d).map_err(|_| {
            de::Error::custom("expected exit codes: an array of integers or a string \"0, 2\"")
        })? {
            Raw::Text(t) => t.parse().map_err(de::Error::custom),
            Raw::Codes(c) => Ok(ExitCodes(c)),
        }
    }
}

/// Severity threshold of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    #[default]
    Info,
    Warning,
    Error,
    Critical,
}

impl LogLevel {
    /// Python logging's numeric level.
    pub fn python_level(self) -> i64 {
        match self {
            LogLevel::Trace => 5,
            LogLevel::Debug => 10,
            LogLevel::Info => 20,
            LogLevel::Warning => 30,
            LogLevel::Error => 40,
            LogLevel::Critical => 50,
        }
    }

    /// The `tracing` filter directive for this level.
    pub fn tracing_directive(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warning => "warn",
            LogLevel::Error | LogLevel::Critical => "error",
        }
    }

    /// The level for a Python numeric level (ZConfig accepts integers).
    pub fn from_python_level(n: i64) -> LogLevel {
        match n {
            i64::MIN..=9 => LogLevel::Trace,
            10..=19 => LogLevel::Debug,
            20..=29 => LogLevel::Info,
            30..=39 => LogLevel::Warning,
            40..=49 => LogLevel::Error,
            _ => LogLevel::Critical,
        }
    }
}

impl FromStr for LogLevel {
    type Err = String;
    /// Accepts ZConfig's names too (`blather`, `all`, `notset`, `fatal`, `warn`) and integers.
    fn from_str(s: &str) -> Result<LogLevel, String> {
        let t = s.trim().to_ascii_lowercase();
        Ok(match t.as_str() {
            "trace" | "blather" | "all" | "notset" => LogLevel::Trace,
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warn" | "warning" => LogLevel::Warning,
            "error" => LogLevel::Error,
            "critical" | "fatal" => LogLevel::Critical,
            _ => match t.parse::<i64>() {
                Ok(n) => LogLevel::from_python_level(n),
                Err(_) => {
                    return Err(format!(
                        "bad log level {s:?} (expected trace, debug, info, warning, error or critical)"
                    ));
                }
            },
        })
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warning => "warning",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
        })
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<LogLevel, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// ZConfig's booleans: true/false, yes/no, on/off (any case).
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" => Some(true),
        "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes() {
        assert_eq!("128MB".parse(), Ok(ByteSize::mib(128)));
        assert_eq!("20 kb".parse(), Ok(ByteSize(20 * 1024)));
        assert_eq!("7".parse(), Ok(ByteSize(7)));
        assert!("MB".parse::<ByteSize>().is_err());
        assert!("12XB".parse::<ByteSize>().is_err());
        assert!("99999999999999TB".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize::mib(128).to_string(), "128MB");
        assert_eq!(ByteSize(1536).to_string(), "1536");
        assert_eq!(ByteSize(0).to_string(), "0");
    }

    #[test]
    fn durations() {
        assert_eq!("30".parse(), Ok(Seconds::secs(30)));
        assert_eq!("5m".parse(), Ok(Seconds::secs(300)));
        assert_eq!("500ms".parse(), Ok(Seconds(Duration::from_millis(500))));
        assert_eq!("1.5".parse(), Ok(Seconds(Duration::from_millis(1500))));
        assert!("soon".parse::<Seconds>().is_err());
        assert!("-1".parse::<Seconds>().is_err());
    }

    #[test]
    fn umask_exit_codes_levels() {
        assert_eq!("022".parse(), Ok(Umask(0o22)));
        assert_eq!(Umask(0o27).to_string(), "027");
        assert!("089".parse::<Umask>().is_err());
        assert_eq!("0, 2".parse(), Ok(ExitCodes(vec![0, 2])));
        assert_eq!("0,2 3".parse(), Ok(ExitCodes(vec![0, 2, 3])));
        assert!("0, x".parse::<ExitCodes>().is_err());
        assert_eq!("BLATHER".parse(), Ok(LogLevel::Trace));
        assert_eq!("warn".parse(), Ok(LogLevel::Warning));
        assert_eq!("35".parse(), Ok(LogLevel::Warning));
        assert!("loud".parse::<LogLevel>().is_err());
        assert_eq!(parse_bool("On"), Some(true));
        assert_eq!(parse_bool("maybe"), None);
    }

    proptest! {
        #[test]
        fn byte_size_display_round_trips(n in any::<u32>(), shift in 0u32..30) {
            let v = ByteSize(u64::from(n) << shift);
            prop_assert_eq!(v.to_string().parse::<ByteSize>(), Ok(v));
        }

        #[test]
        fn command_line_round_trips(words in proptest::collection::vec("[ -~]{1,12}", 1..5)) {
            let c = CommandLine(words);
            prop_assert_eq!(c.to_string().parse::<CommandLine>(), Ok(c));
        }
    }
}
