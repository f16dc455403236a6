//! repozo's repository format (spec `filestorage.md` §12.2–12.3), read and written here.
//!
//! ```text
//! <repo>/YYYY-MM-DD-HH-MM-SS.fs        full backup: bytes [0, pos) of Data.fs
//! <repo>/YYYY-MM-DD-HH-MM-SS.fsz       the same, gzip (any number of members)
//! <repo>/YYYY-MM-DD-HH-MM-SS.deltafs   incremental: bytes [start, pos)
//! <repo>/YYYY-MM-DD-HH-MM-SS.deltafsz  the same, gzip
//! <repo>/<full stem>.dat               one line per file of the chain that full backup starts:
//!                                      "<path> <start> <end> <md5 hex of the uncompressed chunk>\n"
//! <repo>/<stem>.index                  Data.fs.index of the source at <end> (4.1 format)
//! ```
//!
//! The stem is the UTC time the backup started. Only names matching
//! `^\d{4}(-\d\d){5}\.(delta)?fsz?$` are backup files; anything else in the directory (our
//! `<stem>.blobs/` directories, the `last-backup.json` record, a stray file) is ignored, as
//! repozo ignores it. In a `.dat` line only the basename of `<path>` counts (repozo writes
//! the repository path as it was typed); positions are decimal, chunks end at transaction
//! boundaries. A restore point ("chain") for a time `when` is repozo's `find_files`: the
//! backup files sorted by name, newest first, taken while `stem <= when` (a *string*
//! comparison, so `2026-11-21` excludes that whole day) up to and including the first full
//! backup, in chronological order.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::{BackupError, Result, io_err};
use crate::storage::TimeStamp;

/// One backup file of the repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupFile {
    pub name: String,
    /// `YYYY-MM-DD-HH-MM-SS`.
    pub stem: String,
    /// `.fs`/`.fsz` (a full backup, the start of a chain).
    pub full: bool,
    pub gzip: bool,
}

impl BackupFile {
    /// The file of a new backup.
    pub fn new(stem: &str, full: bool, gzip: bool) -> BackupFile {
        let ext = match (full, gzip) {
            (true, false) => "fs",
            (true, true) => "fsz",
            (false, false) => "deltafs",
            (false, true) => "deltafsz",
        };
        BackupFile {
            name: format!("{stem}.{ext}"),
            stem: stem.to_owned(),
            full,
            gzip,
        }
    }

    /// A backup file's name, or `None` for anything else.
    pub fn parse(name: &str) -> Option<BackupFile> {
        let (stem, ext) = name.split_once('.')?;
        let (full, gzip) = match ext {
            "fs" => (true, false),
            "fsz" => (true, true),
            "deltafs" => (false, false),
            "deltafsz" => (false, true),
            _ => return None,
        };
        is_stem(stem).then(|| BackupFile {
            name: name.to_owned(),
            stem: stem.to_owned(),
            full,
            gzip,
        })
    }
}

/// `\d{4}(-\d\d){5}`.
pub fn is_stem(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 19
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 | 10 | 13 | 16 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

/// The UTC time `t` (seconds since the epoch) as a stem, `time.gmtime` as repozo formats it.
pub fn stem_at(t: u64) -> String {
    // Half a second in: TimeStamp's seconds field is a fraction and must not round down
    // to the previous second.
    let ts = TimeStamp::from_unix(t as f64 + 0.5);
    format!(
        "{:04}-{:02}-{:02}-{:02}-{:02}-{:02}",
        ts.year(),
        ts.month(),
        ts.day(),
        ts.hour(),
        ts.minute(),
        ts.second().floor() as u32
    )
}

/// Seconds since the epoch, now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Check a `--date` value: `yyyy-mm-dd[-hh[-mm[-ss]]]`, as repozo accepts it.
pub fn check_date(s: &str) -> Result<()> {
    let parts: Vec<&str> = s.split('-').collect();
    let ok = (3..=6).contains(&parts.len())
        && parts.iter().enumerate().all(|(i, p)| {
            let len = if i == 0 { 4 } else { 2 };
            p.len() == len && p.bytes().all(|c| c.is_ascii_digit())
        });
    if ok {
        Ok(())
    } else {
        Err(BackupError::Input(format!(
            "bad date {s:?}: expected yyyy-mm-dd[-hh[-mm[-ss]]] (UTC)"
        )))
    }
}

/// An opened repository directory.
#[derive(Clone, Debug)]
pub struct Repo {
    pub dir: PathBuf,
}

impl Repo {
    /// The repository at `dir`, which must exist and be a directory (as repozo requires).
    pub fn open(dir: &Path) -> Result<Repo> {
        match fs::metadata(dir) {
            Ok(m) if m.is_dir() => Ok(Repo {
                dir: dir.to_path_buf(),
            }),
            Ok(_) => Err(BackupError::Input(format!(
                "{}: the backup repository is not a directory",
                dir.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BackupError::Input(format!(
                "{}: no such backup repository",
                dir.display()
            ))),
            Err(e) => Err(io_err(dir)(e)),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Every backup file, oldest first.
    pub fn files(&self) -> Result<Vec<BackupFile>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            if let Some(f) = entry.file_name().to_str().and_then(BackupFile::parse) {
                out.push(f);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// repozo's `find_files(when)`: the chain of the newest full backup not after `when`.
    pub fn chain(&self, when: &str) -> Result<Vec<BackupFile>> {
        Ok(select_chain(&self.files()?, when))
    }

    pub fn dat_path(&self, full_stem: &str) -> PathBuf {
        self.path(&format!("{full_stem}.dat"))
    }

    pub fn index_path(&self, stem: &str) -> PathBuf {
        self.path(&format!("{stem}.index"))
    }

    /// The `.dat` lines of the chain starting with the full backup `full_stem`; `None`
    /// when there is no `.dat`.
    pub fn read_dat(&self, full_stem: &str) -> Result<Option<Vec<DatLine>>> {
        let path = self.dat_path(full_stem);
        let file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let mut lines = Vec::new();
        for (n, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(io_err(&path))?;
            if line.trim().is_empty() {
                continue;
            }
            let parsed = DatLine::parse(&line).ok_or_else(|| {
                BackupError::Damaged(format!(
                    "{}:{}: not a repozo .dat line: {line:?}",
                    path.display(),
                    n + 1
                ))
            })?;
            lines.push(parsed);
        }
        Ok(Some(lines))
    }

    /// `chain` split into the files its `.dat` describes and a tail it does not: the newest
    /// incrementals of a backup killed between renaming its file into place and appending
    /// its `.dat` line (complete files, but not committed: no size or md5 to check them
    /// against). The tail is empty unless the `.dat` exists, parses, and names exactly the
    /// chain's first files.
    pub fn split_uncommitted(
        &self,
        mut chain: Vec<BackupFile>,
    ) -> Result<(Vec<BackupFile>, Vec<BackupFile>)> {
        let Some(first) = chain.first() else {
            return Ok((chain, Vec::new()));
        };
        let Ok(Some(lines)) = self.read_dat(&first.stem) else {
            return Ok((chain, Vec::new()));
        };
        let n = lines.len();
        let described = n >= 1
            && n < chain.len()
            && lines
                .iter()
                .zip(&chain)
                .all(|(l, f)| l.basename() == f.name)
            && chain[n..].iter().all(|f| !f.full);
        if !described {
            return Ok((chain, Vec::new()));
        }
        let tail = chain.split_off(n);
        Ok((chain, tail))
    }

    /// The `.dat` lines matched with the chain's files, in order: an error naming the
    /// `.dat` when it does not describe the chain (a file missing, a foreign line).
    pub fn chain_lines(&self, chain: &[BackupFile]) -> Result<Option<Vec<DatLine>>> {
        let Some(first) = chain.first() else {
            return Ok(None);
        };
        let Some(lines) = self.read_dat(&first.stem)? else {
            return Ok(None);
        };
        let dat = self.dat_path(&first.stem);
        let mut out = Vec::with_capacity(chain.len());
        let mut expected_start = 0;
        for (i, file) in chain.iter().enumerate() {
            let Some(line) = lines.get(i) else {
                return Err(BackupError::Damaged(format!(
                    "{} has no line for {} (the .dat disagrees with the repository)",
                    dat.display(),
                    self.path(&file.name).display()
                )));
            };
            if line.basename() != file.name {
                return Err(BackupError::Damaged(format!(
                    "{}: line {} names {}, but the repository's next file is {} ({} is missing?)",
                    dat.display(),
                    i + 1,
                    line.path,
                    file.name,
                    self.path(line.basename()).display()
                )));
            }
            if line.start != expected_start || line.end < line.start {
                return Err(BackupError::Damaged(format!(
                    "{}: line {} covers {}..{}, expected a chunk starting at {expected_start}",
                    dat.display(),
                    i + 1,
                    line.start,
                    line.end
                )));
            }
            expected_start = line.end;
            out.push(line.clone());
        }
        Ok(Some(out))
    }
}

/// [`Repo::chain`] on a sorted list of files.
pub fn select_chain(files: &[BackupFile], when: &str) -> Vec<BackupFile> {
    let mut needed = Vec::new();
    for f in files.iter().rev() {
        if f.stem.as_str() <= when {
            needed.push(f.clone());
            if f.full {
                break;
            }
        }
    }
    needed.reverse();
    // A chain that does not start with a full backup (its full backup was deleted) restores
    // nothing valid: repozo would concatenate the deltas; we refuse (the caller says why).
    needed
}

/// One line of a `.dat` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatLine {
    pub path: String,
    pub start: u64,
    pub end: u64,
    /// Lower-case hex.
    pub md5: String,
}

impl DatLine {
    pub fn parse(line: &str) -> Option<DatLine> {
        let mut it = line.split_whitespace();
        let path = it.next()?.to_owned();
        let start = it.next()?.parse().ok()?;
        let end = it.next()?.parse().ok()?;
        let md5 = it.next()?.to_ascii_lowercase();
        if it.next().is_some() || md5.len() != 32 || !md5.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        Some(DatLine {
            path,
            start,
            end,
            md5,
        })
    }

    pub fn basename(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }

    /// The line as repozo writes it, newline included.
    pub fn to_line(&self) -> String {
        format!("{} {} {} {}\n", self.path, self.start, self.end, self.md5)
    }

    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// The `<path>` column for a new backup file: the repository as given joined with the name,
/// like repozo; just the name when that path has whitespace (readers split on it).
pub fn dat_path_column(repo_as_given: &Path, name: &str) -> String {
    let joined = repo_as_given.join(name).to_string_lossy().into_owned();
    if joined.chars().any(char::is_whitespace) {
        name.to_owned()
    } else {
        joined
    }
}

pub fn hex(md5: &[u8; 16]) -> String {
    md5.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_chains() {
        assert!(BackupFile::parse("2026-11-21-02-59-17.fs").is_some());
        assert!(BackupFile::parse("2026-11-21-02-59-17.deltafsz").is_some());
        assert!(BackupFile::parse("2026-11-21-02-59-17.dat").is_none());
        assert!(BackupFile::parse("2026-11-21-02-59.fs").is_none());
        assert!(BackupFile::parse("tmp.tmp").is_none());
        let files: Vec<_> = [
            "2026-11-20-01-00-00.fs",
            "2026-11-20-02-00-00.deltafs",
            "2026-11-21-01-00-00.fsz",
            "2026-11-21-02-00-00.deltafsz",
        ]
        .iter()
        .filter_map(|n| BackupFile::parse(n))
        .collect();
        let names = |c: Vec<BackupFile>| c.into_iter().map(|f| f.name).collect::<Vec<_>>();
        assert_eq!(
            names(select_chain(&files, "2026-11-21")),
            ["2026-11-20-01-00-00.fs", "2026-11-20-02-00-00.deltafs"]
        );
        assert_eq!(
            names(select_chain(&files, "2026-11-21-01-00-00")),
            ["2026-11-21-01-00-00.fsz"]
        );
        assert_eq!(names(select_chain(&files, "9999")).len(), 2);
        assert!(select_chain(&files, "2026-11-19").is_empty());
    }

    #[test]
    fn dat_lines() {
        let l = DatLine::parse(
            "repo/2026-11-21-02-59-18.deltafs 1140 1315 4ca3d3c450596343fdf13e4e05f5d7b6",
        )
        .unwrap();
        assert_eq!(l.basename(), "2026-11-21-02-59-18.deltafs");
        assert_eq!((l.start, l.end), (1140, 1315));
        assert_eq!(
            l.to_line(),
            "repo/2026-11-21-02-59-18.deltafs 1140 1315 4ca3d3c450596343fdf13e4e05f5d7b6\n"
        );
        assert!(DatLine::parse("x 1 2").is_none());
        assert!(DatLine::parse("x a 2 4ca3d3c450596343fdf13e4e05f5d7b6").is_none());
    }

    #[test]
    fn stems_and_dates() {
        assert_eq!(stem_at(0), "1970-01-01-00-00-00");
        assert_eq!(stem_at(1_795_000_000 + 59), "2026-11-18-11-07-39");
        assert!(check_date("2026-11-21").is_ok());
        assert!(check_date("2026-11-21-02-59-17").is_ok());
        assert!(check_date("2026-11").is_err());
        assert!(check_date("2026-11-21-2").is_err());
    }
}
