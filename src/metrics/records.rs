//! When a storage was last packed and backed up, from the records the pack and backup
//! commands leave beside its Data.fs.
//!
//! `zodbctl pack` writes `<Data.fs>.pack.json`, `{"finished": <unix seconds>, ...}`, after a
//! successful pack. The backup command's record is read the same way from
//! `<Data.fs>.backup.json`; [`record_path`] is the one place that knows both names.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pack,
    Backup,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Pack => "pack",
            Kind::Backup => "backup",
        }
    }
}

/// The record file of `kind` for the storage at `datafs`.
pub fn record_path(datafs: &Path, kind: Kind) -> PathBuf {
    match kind {
        Kind::Pack => crate::storage::pack::record_path(datafs),
        Kind::Backup => {
            let mut p = datafs.as_os_str().to_owned();
            p.push(".backup.json");
            PathBuf::from(p)
        }
    }
}

/// What the record says.
#[derive(Debug, Clone, PartialEq)]
pub enum Last {
    /// Finished at this Unix time.
    Finished(f64),
    /// No record: never done (or done by a tool that leaves none).
    Absent,
    /// A record that cannot be read or has no `finished` number.
    Unreadable(String),
}

/// The last successful `kind` of the storage at `datafs`.
pub fn last(datafs: &Path, kind: Kind) -> Last {
    let path = record_path(datafs, kind);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Last::Absent,
        Err(e) => return Last::Unreadable(format!("{}: {e}", path.display())),
    };
    let v: serde_json::Value = match serde_json::from_slice(&text) {
        Ok(v) => v,
        Err(e) => return Last::Unreadable(format!("{}: {e}", path.display())),
    };
    match v.get("finished").and_then(serde_json::Value::as_f64) {
        Some(t) => Last::Finished(t),
        None => Last::Unreadable(format!("{}: no \"finished\" time", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_beside_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let fs = dir.path().join("Data.fs");
        assert_eq!(last(&fs, Kind::Pack), Last::Absent);
        std::fs::write(
            record_path(&fs, Kind::Pack),
            r#"{"finished": 1700000000.5}"#,
        )
        .unwrap();
        assert_eq!(last(&fs, Kind::Pack), Last::Finished(1700000000.5));
        std::fs::write(record_path(&fs, Kind::Backup), "{}").unwrap();
        assert!(matches!(last(&fs, Kind::Backup), Last::Unreadable(_)));
        assert!(
            record_path(&fs, Kind::Backup)
                .to_string_lossy()
                .ends_with("Data.fs.backup.json")
        );
    }
}
