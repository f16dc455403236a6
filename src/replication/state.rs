//! The replication state file, `<Data.fs>.replication.json`, and the rule that decides what
//! happens when a replica connects.
//!
//! ```json
//! {"database": "5f0c…(16 hex)", "lineage": [{"epoch": 1, "start": "0000000000000000"},
//!                                           {"epoch": 2, "start": "03ed…"}]}
//! ```
//!
//! * `database`: a random id made by the first primary and adopted by every replica; a
//!   replica of another database is refused instead of being "resynchronised" into a copy of
//!   the wrong one.
//! * `lineage`: one entry per epoch. Promotion appends `{epoch: last + 1, start: the last tid
//!   the promoted server had}`: epoch N's transactions are the ones after its `start` and up
//!   to the next epoch's `start`. A server that was primary in an older epoch and kept
//!   writing after the promotion has transactions beyond where its epoch ends in the new
//!   primary's lineage; that is how divergence is recognised without comparing files.
//!
//! The file is written to a temporary name, synced and renamed; it is small and changes only
//! on first start, on promotion and when a replica adopts its primary's lineage.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::storage::Tid;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read the replication state {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the replication state {path} is damaged ({msg}); move it away to let this server resynchronise from its primary"
    )]
    Damaged { path: PathBuf, msg: String },
    #[error("cannot write the replication state {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Epoch {
    pub epoch: u64,
    /// Hex tid: the last transaction before this epoch began.
    pub start: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub database: String,
    pub lineage: Vec<Epoch>,
}

pub fn path_for(data_fs: &Path) -> PathBuf {
    let mut s = data_fs.as_os_str().to_owned();
    s.push(".replication.json");
    PathBuf::from(s)
}

pub fn tid_hex(t: &Tid) -> String {
    crate::zeo::backend::hex(&t.to_bytes())
}

pub fn parse_tid(s: &str) -> Option<Tid> {
    if s.len() != 16 {
        return None;
    }
    let mut b = [0u8; 8];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(Tid::from_bytes(b))
}

impl State {
    /// A new database's state: a fresh id, epoch 1 from the beginning.
    pub fn new_database() -> State {
        State {
            database: random_id(),
            lineage: vec![Epoch {
                epoch: 1,
                start: tid_hex(&Tid::ZERO),
            }],
        }
    }

    pub fn epoch(&self) -> u64 {
        self.lineage.last().map_or(0, |e| e.epoch)
    }

    /// The last tid of epoch `e` in this lineage: None when `e` is the current epoch (it has
    /// not ended), Err(()) when this lineage has no epoch `e`.
    fn epoch_end(&self, e: u64) -> Result<Option<Tid>, ()> {
        let i = self.lineage.iter().position(|x| x.epoch == e).ok_or(())?;
        match self.lineage.get(i + 1) {
            None => Ok(None),
            Some(next) => parse_tid(&next.start).map(Some).ok_or(()),
        }
    }

    /// Promotion: a new epoch that starts after `last`.
    pub fn promote(&mut self, last: Tid) -> u64 {
        let epoch = self.epoch() + 1;
        self.lineage.push(Epoch {
            epoch,
            start: tid_hex(&last),
        });
        epoch
    }

    pub fn load(path: &Path) -> Result<Option<State>, StateError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Read {
                    path: path.into(),
                    source,
                });
            }
        };
        let s: State = serde_json::from_str(&text).map_err(|e| StateError::Damaged {
            path: path.into(),
            msg: e.to_string(),
        })?;
        let ordered = s.lineage.windows(2).all(|w| w[0].epoch < w[1].epoch);
        if s.lineage.is_empty()
            || !ordered
            || s.lineage.iter().any(|e| parse_tid(&e.start).is_none())
        {
            return Err(StateError::Damaged {
                path: path.into(),
                msg: "the lineage must list increasing epochs with 16-hex-digit tids".into(),
            });
        }
        Ok(Some(s))
    }

    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let err = |source| StateError::Write {
            path: path.into(),
            source,
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        let mut text = serde_json::to_string(self).unwrap_or_default();
        text.push('\n');
        f.write_all(text.as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// 8 random bytes from the kernel, as hex; the clock and pid if /dev/urandom is missing.
fn random_id() -> String {
    use std::io::Read;
    let mut b = [0u8; 8];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok();
    if !ok {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        b = (t ^ (u64::from(std::process::id()) << 40)).to_be_bytes();
    }
    crate::zeo::backend::hex(&b)
}

/// What a replica claims when it connects.
#[derive(Debug, Clone)]
pub struct Claim {
    pub database: Option<String>,
    /// The replica's current epoch (0 when it has no state).
    pub epoch: u64,
    /// The replica's last transaction and the end of its file.
    pub tid: Tid,
    pub end: u64,
    /// The primary found a transaction ending at `end` with the replica's tid and hash.
    pub is_prefix: bool,
    /// The replica asked to discard its copy (`--resync`, `zodbctl resync`).
    pub resync: bool,
}

/// Why a replica is turned away; each says what the operator should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Another database altogether.
    Unrelated(String),
    /// The replica has transactions the primary never had.
    Diverged(String),
    /// The replica has seen a newer epoch than this server: this server is a stale primary.
    NewerEpoch(u64),
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Unrelated(_) => "unrelated",
            Refusal::Diverged(_) => "diverged",
            Refusal::NewerEpoch(_) => "newer-epoch",
        }
    }

    pub fn message(&self, primary_epoch: u64) -> String {
        match self {
            Refusal::Unrelated(m) | Refusal::Diverged(m) => m.clone(),
            Refusal::NewerEpoch(e) => format!(
                "this server's epoch {primary_epoch} is older than the replica's epoch {e}: a \
                 newer primary exists; this server no longer accepts writes — make it a replica \
                 of the new primary (replicate-from) and restart it"
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Resume,
    /// Stream the whole file; the reason is logged on both sides.
    FullResync(String),
    Refuse(Refusal),
}

/// The primary's decision for a replica's claim (`docs/replication.md`, "Handshake").
pub fn judge(primary: &State, primary_last: Tid, c: &Claim) -> Verdict {
    let replica_tid = tid_hex(&c.tid);
    if c.resync {
        return Verdict::FullResync("the replica asked for a full resynchronisation".into());
    }
    if c.end <= 4 {
        return Verdict::FullResync("the replica is empty".into());
    }
    let Some(db) = &c.database else {
        // A copy made by hand (cp, a restore) of this database attaches as it is.
        return if c.is_prefix {
            Verdict::Resume
        } else {
            Verdict::Refuse(Refusal::Unrelated(format!(
                "the replica's Data.fs (last transaction {replica_tid}) is not a copy of this \
                 database and has no replication state: move it away, or resynchronise it \
                 with `zodbctl resync` (its contents are discarded)"
            )))
        };
    };
    if *db != primary.database {
        return Verdict::Refuse(Refusal::Unrelated(format!(
            "the replica holds database {db}, this primary database {}: they are unrelated; \
             point replicate-from at the right primary, or discard the replica's copy with \
             `zodbctl resync`",
            primary.database
        )));
    }
    if c.epoch > primary.epoch() {
        return Verdict::Refuse(Refusal::NewerEpoch(c.epoch));
    }
    let diverged = |end: &str| {
        Verdict::Refuse(Refusal::Diverged(format!(
            "the replica has diverged: its last transaction {replica_tid} (epoch {}) is after \
             {end}, so it has transactions this primary never had (a former primary that \
             went on writing after a failover?); refusing rather than skipping them. To \
             discard them and copy this primary, run `zodbctl resync` on the replica",
            c.epoch
        )))
    };
    match primary.epoch_end(c.epoch) {
        Err(()) => {
            return diverged(&format!(
                "the epochs this primary knows (its lineage has no epoch {})",
                c.epoch
            ));
        }
        Ok(Some(end)) if c.tid > end => {
            return diverged(&format!(
                "the end of epoch {} on this primary ({})",
                c.epoch,
                tid_hex(&end)
            ));
        }
        Ok(_) if c.tid > primary_last => {
            return diverged(&format!(
                "this primary's last transaction {}",
                tid_hex(&primary_last)
            ));
        }
        Ok(_) => {}
    }
    if c.is_prefix {
        Verdict::Resume
    } else {
        Verdict::FullResync(
            "the primary's file was rewritten since the replica's position (packed)".into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u64) -> Tid {
        Tid::from_bytes(n.to_be_bytes())
    }

    fn claim(db: Option<&str>, epoch: u64, tid: u64, prefix: bool) -> Claim {
        Claim {
            database: db.map(str::to_string),
            epoch,
            tid: t(tid),
            end: 1000,
            is_prefix: prefix,
            resync: false,
        }
    }

    fn primary() -> State {
        let mut s = State::new_database();
        s.database = "d".into();
        s
    }

    #[test]
    fn resume_resync_and_refusals() {
        let p = primary();
        assert_eq!(
            judge(&p, t(50), &claim(Some("d"), 1, 40, true)),
            Verdict::Resume
        );
        assert!(matches!(
            judge(&p, t(50), &claim(Some("d"), 1, 40, false)),
            Verdict::FullResync(_)
        ));
        assert!(matches!(
            judge(&p, t(50), &claim(Some("x"), 1, 40, true)),
            Verdict::Refuse(Refusal::Unrelated(_))
        ));
        assert!(matches!(
            judge(&p, t(50), &claim(None, 0, 40, false)),
            Verdict::Refuse(Refusal::Unrelated(_))
        ));
        assert_eq!(judge(&p, t(50), &claim(None, 0, 40, true)), Verdict::Resume);
        // Ahead of the primary in its own epoch.
        assert!(matches!(
            judge(&p, t(50), &claim(Some("d"), 1, 60, false)),
            Verdict::Refuse(Refusal::Diverged(_))
        ));
        let mut c = claim(Some("x"), 9, 60, false);
        c.resync = true;
        assert!(matches!(judge(&p, t(50), &c), Verdict::FullResync(_)));
    }

    #[test]
    fn former_primary_with_extra_transactions_is_refused() {
        // B was promoted after tid 40; A (epoch 1) went on to 45.
        let mut b = primary();
        b.promote(t(40));
        assert!(matches!(
            judge(&b, t(70), &claim(Some("d"), 1, 45, false)),
            Verdict::Refuse(Refusal::Diverged(_))
        ));
        // A replica of A that stopped at 38 is consistent: B packed → resync; else resume.
        assert!(matches!(
            judge(&b, t(70), &claim(Some("d"), 1, 38, false)),
            Verdict::FullResync(_)
        ));
        assert_eq!(
            judge(&b, t(70), &claim(Some("d"), 1, 40, true)),
            Verdict::Resume
        );
        // A stale primary hears of epoch 2 from a replica.
        let a = primary();
        assert_eq!(
            judge(&a, t(45), &claim(Some("d"), 2, 60, false)),
            Verdict::Refuse(Refusal::NewerEpoch(2))
        );
    }

    #[test]
    fn state_round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let p = path_for(&dir.path().join("Data.fs"));
        assert_eq!(State::load(&p).unwrap(), None);
        let mut s = State::new_database();
        assert_eq!(s.database.len(), 16);
        s.promote(t(7));
        s.save(&p).unwrap();
        assert_eq!(State::load(&p).unwrap(), Some(s));
        std::fs::write(&p, "{\"database\": \"d\", \"lineage\": []}").unwrap();
        assert!(matches!(State::load(&p), Err(StateError::Damaged { .. })));
        std::fs::write(&p, "nonsense").unwrap();
        assert!(
            State::load(&p)
                .unwrap_err()
                .to_string()
                .contains("move it away")
        );
    }
}
