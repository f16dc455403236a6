//! A non-historical in-memory storage for session data (Zope's temp_folder use case).
//!
//! A superseded revision is kept only for `history` (default 300 s) after it was superseded,
//! so that transactions that started before still read their snapshot; then it is dropped.
//! The storage therefore never grows with time and never needs packing. A read that would
//! need a dropped revision fails with [`MemError::ReadConflict`] (Zope retries the request).
//! Nothing survives a restart.
//!
//! Writes go through [`MemCommit`]; the caller (the ZEO server) serialises commits with its
//! commit lock, so at most one commit exists at a time. Reads take a shared lock.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub type Oid = [u8; 8];
pub type Tid = [u8; 8];

const Z64: Tid = [0; 8];

/// `load_before`'s answer: data, its tid, the tid of the next revision (None = current).
pub type Loaded = (Vec<u8>, Tid, Option<Tid>);
/// How many recent (tid, oids) are kept for the server's invalidation queue.
const RECENT: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemError {
    #[error("no such object")]
    NotFound,
    #[error("no such revision")]
    NoSuchRevision,
    /// The revision a reader needs was superseded more than `history` ago and dropped.
    #[error("revision no longer available")]
    ReadConflict,
    #[error("conflict")]
    Conflict { committed: Tid, read: Tid },
    #[error("explicit tid {} is not after the last transaction {}", hexs(.0), hexs(.1))]
    TidNotIncreasing(Tid, Tid),
}

fn hexs(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct Rev {
    tid: Tid,
    /// None: the object was deleted in this transaction.
    data: Option<Arc<Vec<u8>>>,
}

#[derive(Default)]
struct Obj {
    /// Ascending tid.
    revs: Vec<Rev>,
    /// Older revisions were dropped: a read before `revs[0]` cannot be answered.
    truncated: bool,
    /// Entries of this oid still in the expiry queue.
    pending: usize,
}

#[derive(Default)]
struct Inner {
    objects: BTreeMap<Oid, Obj>,
    last_tid: Tid,
    next_oid: u64,
    /// Newest at the back.
    recent: VecDeque<(Tid, Vec<Oid>)>,
    /// Superseded revisions in the order they were superseded: (when, oid).
    expiry: VecDeque<(Instant, Oid)>,
    /// Sum of current record sizes.
    size: u64,
    /// Objects whose current revision is not a deletion (kept up to date by `finish`, so
    /// `len` is O(1): the server reports it after every commit).
    live: u64,
}

pub struct MemoryStorage {
    name: String,
    history: Duration,
    inner: RwLock<Inner>,
}

impl MemoryStorage {
    pub fn new(name: &str, history: Duration) -> Arc<Self> {
        Arc::new(MemoryStorage {
            name: name.to_string(),
            history,
            inner: RwLock::new(Inner::default()),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere; the data is still consistent
        // because every mutation below is completed before the guard drops.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn last_transaction(&self) -> Tid {
        self.read().last_tid
    }

    /// Number of live objects.
    pub fn len(&self) -> u64 {
        self.read().live
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn size(&self) -> u64 {
        self.read().size
    }

    /// Revision with the greatest tid < before: (data, tid, next tid).
    pub fn load_before(&self, oid: &Oid, before: &Tid) -> Result<Option<Loaded>, MemError> {
        let inner = self.read();
        let obj = inner.objects.get(oid).ok_or(MemError::NotFound)?;
        let idx = obj.revs.partition_point(|r| r.tid < *before);
        if idx == 0 {
            return if obj.truncated {
                Err(MemError::ReadConflict)
            } else {
                Ok(None)
            };
        }
        let rev = &obj.revs[idx - 1];
        let data = rev.data.as_ref().ok_or(MemError::NotFound)?;
        let end = obj.revs.get(idx).map(|r| r.tid);
        Ok(Some((data.as_ref().clone(), rev.tid, end)))
    }

    pub fn load_serial(&self, oid: &Oid, serial: &Tid) -> Result<Vec<u8>, MemError> {
        let inner = self.read();
        let obj = inner.objects.get(oid).ok_or(MemError::NotFound)?;
        match obj.revs.iter().find(|r| r.tid == *serial) {
            Some(Rev { data: Some(d), .. }) => Ok(d.as_ref().clone()),
            Some(_) => Err(MemError::NotFound),
            None if obj.truncated && obj.revs.first().is_some_and(|r| *serial < r.tid) => {
                Err(MemError::ReadConflict)
            }
            None => Err(MemError::NoSuchRevision),
        }
    }

    /// Current tid and record size.
    pub fn current(&self, oid: &Oid) -> Result<(Tid, Vec<u8>), MemError> {
        let inner = self.read();
        let obj = inner.objects.get(oid).ok_or(MemError::NotFound)?;
        match obj.revs.last() {
            Some(Rev { tid, data: Some(d) }) => Ok((*tid, d.as_ref().clone())),
            _ => Err(MemError::NotFound),
        }
    }

    /// Retained revisions, newest first: (tid, size).
    pub fn history(&self, oid: &Oid, size: usize) -> Result<Vec<(Tid, u64)>, MemError> {
        let inner = self.read();
        let obj = inner.objects.get(oid).ok_or(MemError::NotFound)?;
        Ok(obj
            .revs
            .iter()
            .rev()
            .take(size)
            .map(|r| (r.tid, r.data.as_ref().map_or(0, |d| d.len() as u64)))
            .collect())
    }

    /// The live object with the smallest oid >= `from`, and the next live oid after it.
    pub fn record_iternext(&self, from: Option<&Oid>) -> Option<(Oid, Tid, Vec<u8>, Option<Oid>)> {
        let inner = self.read();
        let start = from.copied().unwrap_or(Z64);
        let mut live = inner
            .objects
            .range(start..)
            .filter_map(|(oid, o)| match o.revs.last() {
                Some(Rev { tid, data: Some(d) }) => Some((*oid, *tid, d)),
                _ => None,
            });
        let (oid, tid, data) = live.next()?;
        let next = live.next().map(|(o, _, _)| o);
        Some((oid, tid, data.as_ref().clone(), next))
    }

    pub fn new_oids(&self, n: usize) -> Vec<Oid> {
        let mut inner = self.write();
        (0..n)
            .map(|_| {
                // Like Python's BaseStorage: oid 0 is the root, new oids start at 1.
                inner.next_oid = inner.next_oid.max(1);
                let oid = inner.next_oid.to_be_bytes();
                inner.next_oid += 1;
                oid
            })
            .collect()
    }

    /// The last `n` transactions, newest first.
    pub fn recent_transactions(&self, n: usize) -> Vec<(Tid, Vec<Oid>)> {
        self.read().recent.iter().rev().take(n).cloned().collect()
    }

    /// Begin a commit. `tid` is an explicit tid (restore), else one is assigned from the clock.
    pub fn begin(self: &Arc<Self>, tid: Option<Tid>) -> Result<MemCommit, MemError> {
        let last = self.last_transaction();
        let tid = match tid {
            Some(t) if t <= last => return Err(MemError::TidNotIncreasing(t, last)),
            Some(t) => t,
            None => new_tid(&last),
        };
        Ok(MemCommit {
            storage: Arc::clone(self),
            tid,
            writes: Vec::new(),
        })
    }

    /// Drop superseded revisions whose successor is older than `history`.
    fn prune(&self, inner: &mut Inner, now: Instant) {
        while let Some(&(when, oid)) = inner.expiry.front() {
            if now.duration_since(when) < self.history {
                break;
            }
            inner.expiry.pop_front();
            let Some(obj) = inner.objects.get_mut(&oid) else {
                continue;
            };
            // Keep every revision superseded within the window: those are the newest
            // `1 + (this oid's entries still in the queue)`; everything older goes.
            obj.pending = obj.pending.saturating_sub(1);
            let pending = obj.pending;
            let keep = pending + 1;
            if obj.revs.len() > keep {
                let drop = obj.revs.len() - keep;
                obj.revs.drain(..drop);
                obj.truncated = true;
            }
            if obj.revs.len() == 1 && obj.revs[0].data.is_none() && pending == 0 {
                inner.objects.remove(&oid);
            }
        }
    }
}

/// The root object a fresh ZODB database writes (`ZODB.DB` on an empty storage): an empty
/// `persistent.mapping.PersistentMapping`, as ZODB pickles it.
pub const EMPTY_ROOT: &[u8] = b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.\
\x80\x03}q\x01X\x04\x00\x00\x00dataq\x02}q\x03s.";

/// Magic of a snapshot file, then the format version.
const SNAPSHOT_MAGIC: &[u8; 8] = b"ZCTLMEM1";
/// Written last: a file without it was cut short.
const SNAPSHOT_END: &[u8; 8] = b"ZCTLEND1";

/// A snapshot file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {err}")]
    Io {
        path: std::path::PathBuf,
        err: std::io::Error,
    },
    #[error("{path}: not a zodbctl memory-storage snapshot, or cut short ({why})")]
    Format {
        path: std::path::PathBuf,
        why: &'static str,
    },
}

/// How a memory storage came up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Startup {
    /// From a snapshot: this many objects.
    Restored(u64),
    /// Nothing to restore: empty but for a root object.
    Empty,
}

impl MemoryStorage {
    /// Write the current revision of every live object to `path` (atomically: a temporary
    /// file renamed over it, after fsync), so that a restart can carry on from there.
    ///
    /// Format, all integers big-endian: `ZCTLMEM1`, last tid (8), next oid (8), object count
    /// (8), then per object oid (8), tid (8), data length (4), data; then `ZCTLEND1`.
    /// Returns the number of objects written.
    pub fn save(&self, path: &std::path::Path) -> Result<u64, SnapshotError> {
        use std::io::Write;
        let io = |err| SnapshotError::Io {
            path: path.to_path_buf(),
            err,
        };
        let mut buf = Vec::new();
        let count;
        {
            let inner = self.read();
            buf.extend_from_slice(SNAPSHOT_MAGIC);
            buf.extend_from_slice(&inner.last_tid);
            buf.extend_from_slice(&inner.next_oid.to_be_bytes());
            let live: Vec<(&Oid, &Tid, &Arc<Vec<u8>>)> = inner
                .objects
                .iter()
                .filter_map(|(oid, o)| match o.revs.last() {
                    Some(Rev { tid, data: Some(d) }) => Some((oid, tid, d)),
                    _ => None,
                })
                .collect();
            count = live.len() as u64;
            buf.extend_from_slice(&count.to_be_bytes());
            for (oid, tid, data) in live {
                buf.extend_from_slice(oid);
                buf.extend_from_slice(tid);
                let len = u32::try_from(data.len())
                    .map_err(|_| io(std::io::Error::other("an object larger than 4 GB")))?;
                buf.extend_from_slice(&len.to_be_bytes());
                buf.extend_from_slice(data);
            }
            buf.extend_from_slice(SNAPSHOT_END);
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&buf).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok(count)
    }

    /// Replace the contents with those of a snapshot written by [`save`](Self::save).
    /// Nothing changes when the file is unusable.
    fn restore(&self, path: &std::path::Path) -> Result<u64, SnapshotError> {
        let bytes = std::fs::read(path).map_err(|err| SnapshotError::Io {
            path: path.to_path_buf(),
            err,
        })?;
        let bad = |why| SnapshotError::Format {
            path: path.to_path_buf(),
            why,
        };
        let mut r = bytes.as_slice();
        let mut take = |n: usize| -> Result<&[u8], SnapshotError> {
            if r.len() < n {
                return Err(bad("truncated"));
            }
            let (head, rest) = r.split_at(n);
            r = rest;
            Ok(head)
        };
        let word = |b: &[u8]| -> [u8; 8] {
            let mut w = [0u8; 8];
            w.copy_from_slice(b);
            w
        };
        if take(8)? != SNAPSHOT_MAGIC {
            return Err(bad("bad magic"));
        }
        let last_tid = word(take(8)?);
        let next_oid = u64::from_be_bytes(word(take(8)?));
        let count = u64::from_be_bytes(word(take(8)?));
        let mut objects = BTreeMap::new();
        let (mut size, mut live) = (0u64, 0u64);
        for _ in 0..count {
            let oid = word(take(8)?);
            let tid = word(take(8)?);
            let mut len = [0u8; 4];
            len.copy_from_slice(take(4)?);
            let data = take(u32::from_be_bytes(len) as usize)?.to_vec();
            size += data.len() as u64;
            live += 1;
            objects.insert(
                oid,
                Obj {
                    revs: vec![Rev {
                        tid,
                        data: Some(Arc::new(data)),
                    }],
                    truncated: true,
                    pending: 0,
                },
            );
        }
        if take(8)? != SNAPSHOT_END || !r.is_empty() {
            return Err(bad("no end marker"));
        }
        let mut inner = self.write();
        *inner = Inner {
            objects,
            last_tid,
            next_oid,
            size,
            live,
            ..Inner::default()
        };
        Ok(live)
    }

    /// Bring a storage up for serving: restore `snapshot` if given and usable, then move the
    /// last transaction to a fresh tid from the clock, later than any tid given out before a
    /// restart or crash, so that ZEO clients find the server ahead of their caches (they then
    /// drop what they cached) instead of "behind" (which they refuse). An empty storage gets a
    /// root object, as a new ZODB database would: clients opened it long ago and will not
    /// create it again.
    pub fn start(
        self: &Arc<Self>,
        snapshot: Option<&std::path::Path>,
    ) -> (Startup, Option<SnapshotError>) {
        let mut problem = None;
        let mut how = Startup::Empty;
        if let Some(path) = snapshot.filter(|p| p.exists()) {
            match self.restore(path) {
                Ok(n) => how = Startup::Restored(n),
                Err(e) => problem = Some(e),
            }
        }
        let last = self.last_transaction();
        let mut c = match self.begin(Some(new_tid(&last))) {
            Ok(c) => c,
            // new_tid is after `last` by construction; nothing to do if that ever fails.
            Err(_) => return (how, problem),
        };
        if self.current(&Z64).is_err() {
            c.restore(&Z64, Some(EMPTY_ROOT));
        }
        let start = u64::from_be_bytes(c.tid());
        c.finish();
        // New oids start above every oid handed out before, even after a crash that lost
        // them: clients may still hold ghosts of those oids, which must never name a
        // different object. Oids from the start tid on qualify: a run hands out far fewer
        // oids than the tid advances between two starts (2^32 per minute).
        {
            let mut inner = self.write();
            inner.next_oid = inner.next_oid.max(start);
        }
        // The start transaction is not news to anyone: keep it out of the invalidation queue.
        self.write().recent.clear();
        (how, problem)
    }
}

/// One commit of the memory storage.
pub struct MemCommit {
    storage: Arc<MemoryStorage>,
    tid: Tid,
    /// Last write per oid wins.
    writes: Vec<(Oid, Option<Vec<u8>>)>,
}

impl MemCommit {
    pub fn tid(&self) -> Tid {
        self.tid
    }

    /// The committed tid of an object, None if it never existed.
    fn committed(&self, oid: &Oid) -> Option<Tid> {
        let inner = self.storage.read();
        inner
            .objects
            .get(oid)
            .and_then(|o| o.revs.last().map(|r| r.tid))
    }

    fn put(&mut self, oid: &Oid, data: Option<Vec<u8>>) {
        self.writes.retain(|(o, _)| o != oid);
        self.writes.push((*oid, data));
    }

    pub fn store(&mut self, oid: &Oid, serial: &Tid, data: &[u8]) -> Result<(), MemError> {
        if let Some(committed) = self.committed(oid) {
            if committed != *serial {
                return Err(MemError::Conflict {
                    committed,
                    read: *serial,
                });
            }
        }
        self.put(oid, Some(data.to_vec()));
        Ok(())
    }

    pub fn check_current(&self, oid: &Oid, serial: &Tid) -> Result<(), MemError> {
        match self.committed(oid) {
            Some(committed) if committed == *serial => Ok(()),
            Some(committed) => Err(MemError::Conflict {
                committed,
                read: *serial,
            }),
            None => Err(MemError::NotFound),
        }
    }

    pub fn delete(&mut self, oid: &Oid, serial: &Tid) -> Result<(), MemError> {
        let inner = self.storage.read();
        let cur = inner
            .objects
            .get(oid)
            .and_then(|o| o.revs.last())
            .filter(|r| r.data.is_some())
            .map(|r| r.tid)
            .ok_or(MemError::NotFound)?;
        drop(inner);
        if cur != *serial {
            return Err(MemError::Conflict {
                committed: cur,
                read: *serial,
            });
        }
        self.put(oid, None);
        Ok(())
    }

    pub fn restore(&mut self, oid: &Oid, data: Option<&[u8]>) {
        self.put(oid, data.map(<[u8]>::to_vec));
    }

    /// Make the commit visible; returns its tid.
    pub fn finish(self) -> Tid {
        let storage = Arc::clone(&self.storage);
        let mut inner = storage.write();
        let now = Instant::now();
        let mut oids = Vec::with_capacity(self.writes.len());
        for (oid, data) in self.writes {
            let new_len = data.as_ref().map_or(0, |d| d.len() as u64);
            let obj = inner.objects.entry(oid).or_default();
            let old = obj.revs.last().and_then(|r| r.data.as_ref());
            let was_live = old.is_some();
            let old_len = old.map_or(0, |d| d.len() as u64);
            let now_live = data.is_some();
            let superseded = !obj.revs.is_empty();
            obj.revs.push(Rev {
                tid: self.tid,
                data: data.map(Arc::new),
            });
            if superseded || new_len == 0 {
                // A deletion marker of a new object (restore of "no data") is also only
                // needed within the history window.
                obj.pending += 1;
                inner.expiry.push_back((now, oid));
            }
            inner.size = (inner.size + new_len).saturating_sub(old_len);
            match (was_live, now_live) {
                (false, true) => inner.live += 1,
                (true, false) => inner.live = inner.live.saturating_sub(1),
                _ => {}
            }
            let next = u64::from_be_bytes(oid).saturating_add(1);
            if next > inner.next_oid {
                inner.next_oid = next;
            }
            oids.push(oid);
        }
        inner.last_tid = self.tid;
        inner.recent.push_back((self.tid, oids));
        if inner.recent.len() > RECENT {
            inner.recent.pop_front();
        }
        storage.prune(&mut inner, now);
        self.tid
    }
}

/// The TimeStamp of a moment (zeo-protocol.md §5.1): minutes since 1900 in a 31-day-month
/// calendar in the high word, the fraction of the minute scaled to 2^32 in the low word.
pub fn tid_from_unix(secs: f64) -> Tid {
    let whole = secs.floor() as i64;
    let days = whole.div_euclid(86400);
    let rem = whole.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    let hour = rem / 3600;
    let minute = (rem % 3600) / 60;
    let second = (rem % 60) as f64 + (secs - whole as f64);
    let a = ((((y - 1900) * 12 + (m - 1)) * 31 + (d - 1)) * 24 + hour) * 60 + minute;
    let b = (second * (4294967296.0 / 60.0)) as u64;
    let v = ((a as u64) << 32) | b.min(0xffff_ffff);
    v.to_be_bytes()
}

/// Seconds since the epoch of a tid, exactly as Python's `TimeStamp(tid).timeTime()`.
pub fn tid_to_unix(tid: &Tid) -> f64 {
    crate::storage::timestamp::tid_time(tid)
}

/// A fresh tid from the clock, strictly after `last`.
pub fn new_tid(last: &Tid) -> Tid {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let t = tid_from_unix(now);
    if t > *last {
        t
    } else {
        u64::from_be_bytes(*last).saturating_add(1).to_be_bytes()
    }
}

// Howard Hinnant's civil-date algorithms.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oid(n: u64) -> Oid {
        n.to_be_bytes()
    }

    #[test]
    fn timestamp_matches_python() {
        // zeo-protocol.md §5.1: 040d27f2e3269966 = 1795229933.2384634
        let tid = [0x04, 0x0d, 0x27, 0xf2, 0xe3, 0x26, 0x99, 0x66];
        let t = tid_to_unix(&tid);
        assert!((t - 1795229933.2384634).abs() < 1e-6, "{t}");
        assert_eq!(t, 1795229933.2384634);
        let back = tid_from_unix(t);
        let diff = u64::from_be_bytes(back) as i128 - u64::from_be_bytes(tid) as i128;
        // A double near 1.8e9 resolves 2.4e-7 s: about 17 units of the tid's low word.
        assert!(diff.abs() <= 17, "{back:?}");
    }

    #[test]
    fn snapshots_survive_a_restart_and_the_clock_moves_on() {
        let dir = tempfile::tempdir().unwrap();
        let snap = dir.path().join("sessions.snapshot");
        let s = MemoryStorage::new("m", Duration::from_secs(300));
        assert_eq!(s.start(Some(&snap)).0, Startup::Empty);
        // A fresh start has a root object, as a new ZODB database.
        assert_eq!(s.current(&Z64).unwrap().1, EMPTY_ROOT);
        let mut c = s.begin(None).unwrap();
        let root_tid = s.current(&Z64).unwrap().0;
        c.store(&Z64, &root_tid, b"root v2").unwrap();
        c.store(&oid(5), &Z64, b"five").unwrap();
        let t = c.finish();
        assert_eq!(s.save(&snap).unwrap(), 2);

        let again = MemoryStorage::new("m", Duration::from_secs(300));
        assert_eq!(again.start(Some(&snap)).0, Startup::Restored(2));
        assert_eq!(again.current(&oid(5)).unwrap(), (t, b"five".to_vec()));
        assert_eq!(again.current(&Z64).unwrap().1, b"root v2");
        assert!(
            again.last_transaction() > t,
            "the last tid moves past every tid given"
        );
        assert!(again.recent_transactions(10).is_empty());
        assert!(again.new_oids(1)[0] > oid(5));

        // After a crash without a snapshot: empty, a root, and a tid after everything before.
        let crashed = MemoryStorage::new("m", Duration::from_secs(300));
        assert_eq!(crashed.start(None).0, Startup::Empty);
        assert!(crashed.last_transaction() > t);
        assert!(crashed.current(&Z64).is_ok());
        // ... and no oid given out before the crash is given out again.
        assert!(crashed.new_oids(1)[0] > again.new_oids(1)[0]);

        // A damaged file is reported, and the storage starts empty.
        let bytes = std::fs::read(&snap).unwrap();
        std::fs::write(&snap, &bytes[..bytes.len() - 3]).unwrap();
        let damaged = MemoryStorage::new("m", Duration::from_secs(300));
        let (how, problem) = damaged.start(Some(&snap));
        assert_eq!(how, Startup::Empty);
        assert!(problem.unwrap().to_string().contains("cut short"));
        std::fs::write(&snap, b"nonsense").unwrap();
        assert!(
            MemoryStorage::new("m", Duration::from_secs(1))
                .start(Some(&snap))
                .1
                .is_some()
        );
    }

    #[test]
    fn commit_load_and_conflict() {
        let s = MemoryStorage::new("m", Duration::from_secs(300));
        let mut c = s.begin(None).unwrap();
        c.store(&oid(0), &Z64, b"a").unwrap();
        let t1 = c.finish();
        assert_eq!(s.last_transaction(), t1);
        let (d, tid, end) = s
            .load_before(&oid(0), &[0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
            .unwrap()
            .unwrap();
        assert_eq!((d.as_slice(), tid, end), (&b"a"[..], t1, None));
        let mut c = s.begin(None).unwrap();
        assert!(matches!(
            c.store(&oid(0), &Z64, b"b"),
            Err(MemError::Conflict { .. })
        ));
        c.store(&oid(0), &t1, b"b").unwrap();
        let t2 = c.finish();
        let (d, _, end) = s.load_before(&oid(0), &t2).unwrap().unwrap();
        assert_eq!((d.as_slice(), end), (&b"a"[..], Some(t2)));
        assert_eq!(s.load_before(&oid(0), &t1).unwrap(), None);
        assert_eq!(s.load_before(&oid(1), &t1), Err(MemError::NotFound));
    }

    #[test]
    fn superseded_revisions_are_dropped_after_the_window() {
        let s = MemoryStorage::new("m", Duration::from_millis(0));
        let mut c = s.begin(None).unwrap();
        c.store(&oid(0), &Z64, b"a").unwrap();
        let t1 = c.finish();
        let mut c = s.begin(None).unwrap();
        c.store(&oid(0), &t1, b"b").unwrap();
        let t2 = c.finish();
        // The first revision is gone: a snapshot read before t2 cannot be answered.
        assert_eq!(s.load_before(&oid(0), &t2), Err(MemError::ReadConflict));
        assert_eq!(s.history(&oid(0), 10).unwrap().len(), 1);
        let mut c = s.begin(None).unwrap();
        c.delete(&oid(0), &t2).unwrap();
        c.finish();
        let mut c = s.begin(None).unwrap();
        c.store(&oid(1), &Z64, b"x").unwrap();
        c.finish();
        assert_eq!(s.load_before(&oid(0), &[0xff; 8]), Err(MemError::NotFound));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn explicit_tids_must_increase() {
        let s = MemoryStorage::new("m", Duration::from_secs(1));
        let c = s.begin(Some([0, 0, 0, 0, 0, 0, 0, 5])).unwrap();
        c.finish();
        assert!(matches!(
            s.begin(Some([0, 0, 0, 0, 0, 0, 0, 5])),
            Err(MemError::TidNotIncreasing(..))
        ));
    }
}
