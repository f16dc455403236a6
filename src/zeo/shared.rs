//! Per-storage state shared by all connections: the backend, the commit lock with its FIFO
//! queue, the commit sequencer (registered connections and the invalidation queue) and the
//! statistics of `server_status`.
//!
//! Ordering (zeo-protocol.md §4.5) rests on one rule: the sequencer mutex is held while a
//! commit publishes its invalidations and becomes visible, and while a `register`,
//! `lastTransaction` or `getInvalidations` reply is computed and queued. Since each
//! connection has one FIFO outbox, every connection sees a last tid and then exactly the
//! invalidations after it, in tid order.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::backend::{Backend, Oid, Tid, hex};
use super::outbox::Outbox;
use super::wire::{Encoding, Value};

pub use super::stats::Stats;

pub struct Registered {
    pub outbox: Outbox,
    pub encoding: Encoding,
}

pub struct Seq {
    pub conns: HashMap<u64, Registered>,
    /// (tid, oids) of the latest commits, newest first; `None` oids is the sentinel of a
    /// storage that cannot list its transactions (§6.3).
    pub invalq: VecDeque<(Tid, Option<Vec<Oid>>)>,
}

pub struct StorageState {
    pub id: String,
    pub backend: Arc<dyn Backend>,
    /// Fair (FIFO) by tokio's guarantee; taken at vote, released at finish/abort.
    pub commit_lock: Arc<tokio::sync::Mutex<()>>,
    pub lock_time: Mutex<Option<f64>>,
    pub seq: Mutex<Seq>,
    /// Held shared by a load from its read until its reply is queued, and exclusively by a
    /// commit while it publishes its invalidations and becomes visible. Without it a load
    /// could read the old current revision, the commit's invalidation could be queued, and
    /// only then the load's reply — and the client would cache stale data as current.
    pub visibility: std::sync::RwLock<()>,
    pub stats: Stats,
    pub queue_size: usize,
    /// How long this storage's recent syncs took (ns, a moving average); see
    /// [`StorageState::sync_inline`].
    sync_ns: AtomicU64,
    /// Set once at start-up for a replicated file storage (`crate::replication`).
    pub replication: std::sync::OnceLock<Arc<crate::replication::Replication>>,
}

/// A sync expected to take less than this runs on the connection's own thread.
const INLINE_SYNC_NS: u64 = 500_000;

impl StorageState {
    pub fn new(id: &str, backend: Arc<dyn Backend>, queue_size: usize) -> Self {
        let mut invalq = VecDeque::new();
        match backend.recent_transactions(queue_size) {
            Some(recent) => invalq.extend(recent.into_iter().map(|(t, o)| (t, Some(o)))),
            None => {
                let last = backend.last_transaction();
                if last != [0; 8] {
                    invalq.push_back((last, None));
                }
            }
        }
        StorageState {
            id: id.to_string(),
            backend,
            commit_lock: Arc::new(tokio::sync::Mutex::new(())),
            lock_time: Mutex::new(None),
            seq: Mutex::new(Seq {
                conns: HashMap::new(),
                invalq,
            }),
            visibility: std::sync::RwLock::new(()),
            stats: Stats::default(),
            queue_size,
            // Unknown until measured: the first sync leaves the thread.
            sync_ns: AtomicU64::new(u64::MAX),
            replication: std::sync::OnceLock::new(),
        }
    }

    pub fn replication(&self) -> Option<&Arc<crate::replication::Replication>> {
        self.replication.get()
    }

    /// Why writable registrations and commits are refused now: a replica, or a former
    /// primary that learnt of a newer one.
    pub fn writes_refused(&self) -> Option<String> {
        self.replication().and_then(|r| r.writes_refused())
    }

    /// A replica's apply step: the transactions that the primary streamed are durable; send
    /// their invalidations to this server's clients and make them visible, under the same
    /// locks and in the same order as a local commit (module documentation).
    pub fn publish_replicated(&self, applied: crate::storage::Replicated) {
        let _visible = self.visibility.write().unwrap_or_else(|e| e.into_inner());
        let mut seq = self.seq();
        for (tid, oids) in applied.txns() {
            let tid = tid.to_bytes();
            let oids: Vec<Oid> = oids.iter().map(|o| o.to_bytes()).collect();
            let mut encoded: [Option<Vec<u8>>; 2] = [None, None];
            for r in seq.conns.values() {
                let slot = usize::from(r.encoding == Encoding::Msgpack);
                let msg = encoded[slot].get_or_insert_with(|| {
                    super::codec::call(
                        r.encoding,
                        "invalidateTransaction",
                        vec![
                            Value::Bytes(tid.to_vec()),
                            Value::Tuple(oids.iter().map(|o| Value::Bytes(o.to_vec())).collect()),
                        ],
                    )
                });
                r.outbox.send(msg);
            }
            self.push_invalidation(&mut seq, tid, oids);
        }
        applied.publish();
    }

    /// After a full resynchronisation swapped the file: the invalidation queue restarts from
    /// the new file, and every client is disconnected — its cache may hold what the old copy
    /// had; reconnecting, it asks for invalidations since its last tid and, when that is
    /// older than the queue, drops its cache.
    pub fn reset_after_resync(&self) {
        let _visible = self.visibility.write().unwrap_or_else(|e| e.into_inner());
        let mut seq = self.seq();
        seq.invalq.clear();
        match self.backend.recent_transactions(self.queue_size) {
            Some(recent) => seq
                .invalq
                .extend(recent.into_iter().map(|(t, o)| (t, Some(o)))),
            None => {
                let last = self.backend.last_transaction();
                if last != [0; 8] {
                    seq.invalq.push_back((last, None));
                }
            }
        }
        for r in seq.conns.values() {
            r.outbox.kill();
        }
    }

    /// Close every client connection of this storage (a fenced primary sends its clients
    /// to the new one).
    pub fn disconnect_all(&self) {
        for r in self.seq().conns.values() {
            r.outbox.kill();
        }
    }

    /// Whether the next commit's sync may run on the connection's thread. Handing it to
    /// another thread costs two wake-ups (tens of µs of CPU on a VM), more than a whole commit
    /// when the sync itself is cheap (tmpfs, a battery-backed cache); when it is slow (a disk
    /// flush, milliseconds) that hand-off is what keeps the thread's other connections served.
    /// So: inline while recent syncs were short, a bounded stall; handed off otherwise.
    pub fn sync_inline(&self) -> bool {
        self.sync_ns.load(Ordering::Relaxed) < INLINE_SYNC_NS
    }

    /// Record how long a sync took.
    pub fn sync_took(&self, d: std::time::Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let old = self.sync_ns.load(Ordering::Relaxed);
        // A slow sync counts at once (the next one leaves the thread); fast ones bring the
        // average down gradually, so one lucky sync on a slow disk does not pull it back in.
        let new = if old == u64::MAX || ns >= old {
            ns
        } else {
            old - (old - ns) / 4
        };
        self.sync_ns.store(new, Ordering::Relaxed);
    }

    pub fn seq(&self) -> MutexGuard<'_, Seq> {
        // Every critical section leaves `Seq` consistent, so a poisoned lock is still usable.
        self.seq.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record that the commit lock was taken (`Some(unix time)`) or released (`None`); the
    /// statistics time the hold from here, so every release path is measured.
    pub fn set_lock_time(&self, t: Option<f64>) {
        match t {
            Some(_) => self.stats.lock_taken(),
            None => self.stats.lock_released(),
        }
        *self.lock_time.lock().unwrap_or_else(|e| e.into_inner()) = t;
    }

    /// `getInvalidations(tid)` from the queue (§6.3); None means "too old, drop your cache".
    pub fn invalidations_since(seq: &Seq, tid: &Tid) -> Option<(Tid, Vec<Oid>)> {
        let oldest = seq.invalq.back()?;
        if oldest.0 > *tid {
            return None;
        }
        let newest = seq.invalq.front()?.0;
        let mut seen = std::collections::HashSet::new();
        let mut oids = Vec::new();
        for (t, o) in &seq.invalq {
            if *t <= *tid {
                break;
            }
            // The sentinel entry cannot say what changed after it.
            let o = o.as_ref()?;
            for oid in o {
                if seen.insert(*oid) {
                    oids.push(*oid);
                }
            }
        }
        Some((newest, oids))
    }

    pub fn push_invalidation(&self, seq: &mut Seq, tid: Tid, oids: Vec<Oid>) {
        seq.invalq.push_front((tid, Some(oids)));
        while seq.invalq.len() > self.queue_size.max(1) {
            seq.invalq.pop_back();
        }
    }

    /// The `server_status` map (§7.5).
    pub fn status(&self, start: &str, timeout_configured: bool) -> Vec<(String, Value)> {
        let s = &self.stats;
        let connections = self.seq().conns.len() as i64;
        let lock_time = self
            .lock_time
            .lock()
            .map(|t| *t)
            .unwrap_or(None)
            .map_or(Value::Nil, Value::Float);
        let int = |a: &AtomicU64| Value::Int(a.load(Ordering::Relaxed) as i64);
        let info = self.backend.info();
        vec![
            ("connections".into(), Value::Int(connections)),
            ("loads".into(), int(&s.loads)),
            ("stores".into(), int(&s.stores)),
            ("commits".into(), int(&s.commits)),
            ("aborts".into(), int(&s.aborts)),
            (
                "active_txns".into(),
                Value::Int(s.active_txns.load(Ordering::Relaxed).max(0)),
            ),
            ("lock_time".into(), lock_time),
            ("conflicts".into(), int(&s.conflicts)),
            ("conflicts_resolved".into(), Value::Int(0)),
            ("start".into(), Value::Str(start.to_string())),
            (
                "waiting".into(),
                Value::Int(s.waiting.load(Ordering::Relaxed).max(0)),
            ),
            (
                "timeout-thread-is-alive".into(),
                if timeout_configured {
                    Value::Bool(true)
                } else {
                    Value::Str("stub".into())
                },
            ),
            (
                "last-transaction".into(),
                Value::Str(hex(&self.backend.last_transaction())),
            ),
            // Beyond runzeo's keys (clients that know only those ignore them).
            ("size".into(), Value::Int(info.size as i64)),
            ("objects".into(), Value::Int(info.length as i64)),
            ("undos".into(), int(&s.undos)),
            ("lock-held".into(), Value::Float(s.lock_held_seconds())),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u64) -> Tid {
        n.to_be_bytes()
    }

    fn queue(entries: &[(u64, &[u64])]) -> Seq {
        Seq {
            conns: HashMap::new(),
            // newest first
            invalq: entries
                .iter()
                .rev()
                .map(|(tid, oids)| (t(*tid), Some(oids.iter().map(|o| t(*o)).collect())))
                .collect(),
        }
    }

    #[test]
    fn get_invalidations_follows_the_reference_queue() {
        let q = queue(&[(10, &[1]), (20, &[2, 3]), (30, &[3])]);
        // Current tid: nothing newer.
        assert_eq!(
            StorageState::invalidations_since(&q, &t(30)),
            Some((t(30), vec![]))
        );
        // One behind: the newer entries' oids, once each, the entry itself excluded.
        assert_eq!(
            StorageState::invalidations_since(&q, &t(10)),
            Some((t(30), vec![t(3), t(2)]))
        );
        // A tid between entries counts as "after" the older one.
        assert_eq!(
            StorageState::invalidations_since(&q, &t(25)),
            Some((t(30), vec![t(3)]))
        );
        // Older than the oldest entry: too old, the client drops its cache.
        assert_eq!(StorageState::invalidations_since(&q, &t(5)), None);
        // A tid in the future: nothing newer (the client checks that case itself).
        assert_eq!(
            StorageState::invalidations_since(&q, &t(99)),
            Some((t(30), vec![]))
        );
        // Empty queue (empty storage).
        assert_eq!(StorageState::invalidations_since(&queue(&[]), &t(1)), None);
    }

    #[test]
    fn a_sentinel_entry_cannot_answer_for_newer_tids() {
        let mut q = queue(&[]);
        q.invalq.push_back((t(40), None));
        assert_eq!(
            StorageState::invalidations_since(&q, &t(40)),
            Some((t(40), vec![]))
        );
        assert_eq!(StorageState::invalidations_since(&q, &t(39)), None);
    }
}
