//! Replication: a hot-standby `zodbctl serve` whose Data.fs stays a byte-identical copy of
//! the primary's, and promotion of that standby when the primary is gone.
//!
//! Operators read `docs/replication.md` (configuration, failover, the wire protocol);
//! this is the map of the code.
//!
//! * [`state`]: the replication state file beside each replicated `Data.fs`
//!   (`<Data.fs>.replication.json`): the database id and the epoch lineage that promotion
//!   extends and that decides, when a replica connects, between resume, full
//!   resynchronisation and refusal.
//! * [`protocol`]: the frames on the replication connection (the only reader and writer
//!   of the format documented in `docs/replication.md`).
//! * [`primary`]: the replication listener of a primary, one sender per replica, and the
//!   hub that the commit path tells about durable transactions (and, in sync mode, waits on
//!   for an acknowledgement).
//! * [`replica`]: the replica's connection to its primary: handshake, apply, full
//!   resynchronisation, reconnects.
//! * [`admin`]: the server's admin socket (`zodbctl promote`, `zodbctl resync`).
//!
//! TLS: with `[zeo.tls]`, [`start`] hands the ZEO listener's acceptor to the replication
//! listener ([`primary::listen`]) and keeps the connector of `crate::zeo::tls::connector` in
//! each [`Replication`] ([`Replication::connector`]) for the outgoing links
//! ([`primary::connect`]: the replica's, and the epoch probes). Unix sockets stay plain.
//!
//! The engine side (reading raw committed transactions, appending them on a replica,
//! swapping in a resynchronised file) is `storage::replica`; nothing here reads the file
//! format itself.

pub mod admin;
pub mod commands;
pub mod primary;
pub mod protocol;
pub mod replica;
pub mod state;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use tracing::{error, info, warn};

use crate::storage::{FileStorage, Tid};
use crate::zeo::config::{OnTimeout, ReplicationConfig, ReplicationMode};
use crate::zeo::shared::StorageState;

pub use state::State;

const LOG: &str = "zodbctl.replication";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data consistent; a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a replicated storage is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Primary,
    /// Following the primary whose replication address this is; writes refused.
    Replica {
        from: String,
    },
    /// A primary that learnt of a newer epoch: writes refused until an operator makes it a
    /// replica.
    Fenced {
        reason: String,
    },
}

/// What a replica knows about its link to the primary (for status, check and promotion).
#[derive(Debug, Clone, Default)]
pub struct Link {
    pub connected: bool,
    /// "connecting", "streaming", "resyncing" or "refused".
    pub phase: &'static str,
    /// The last error or refusal, with what to do.
    pub error: Option<String>,
    /// The refusal code (`state::Refusal::code`) of the last handshake, if refused.
    pub refused: Option<&'static str>,
    /// The primary's durable end and last tid as last heard (heartbeat or data).
    pub primary_end: u64,
    pub primary_tid: Option<Tid>,
    /// The primary's count of this replica's unacknowledged transactions, last heard.
    pub lag_txns: u64,
    pub last_heard: Option<Instant>,
    pub applied_txns: u64,
    pub resyncs: u64,
}

/// One replicated file storage: its role, state file, the feed for its own replicas and the
/// link to its primary.
pub struct Replication {
    pub storage: String,
    pub fs: FileStorage,
    pub config: ReplicationConfig,
    state_path: PathBuf,
    state: Mutex<Option<State>>,
    role: Mutex<Role>,
    pub feed: primary::Feed,
    pub link: Mutex<Link>,
    /// `zodbctl resync` / `serve --resync`: the next handshake asks for a full copy.
    pub resync_requested: AtomicBool,
    /// Wakes the replica task (`zodbctl resync`).
    pub kicked: tokio::sync::Notify,
    /// The replica task, stopped by promotion.
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Told when the role changes (the server opens its writable address on promotion).
    pub role_changed: tokio::sync::watch::Sender<u64>,
    /// The TLS connector of the outgoing links (to the primary, the epoch probes), set by
    /// [`start`] when the server has `[zeo.tls]`; unset, they are plain TCP.
    connector: OnceLock<tokio_rustls::TlsConnector>,
}

impl Replication {
    /// Open the replication side of a storage: `replicate_from` makes it a replica; else it is
    /// a primary (a new database id is made on its first start).
    pub fn open(
        storage: &str,
        fs: FileStorage,
        config: &ReplicationConfig,
        replicate_from: Option<&str>,
    ) -> Result<Arc<Replication>, state::StateError> {
        let state_path = state::path_for(fs.path());
        let mut st = State::load(&state_path)?;
        if st.is_none() && replicate_from.is_none() {
            let s = State::new_database();
            s.save(&state_path)?;
            info!(target: LOG, "storage '{storage}': new replication state, database {}", s.database);
            st = Some(s);
        }
        let role = match replicate_from {
            Some(from) => Role::Replica {
                from: from.to_string(),
            },
            None => Role::Primary,
        };
        Ok(Arc::new(Replication {
            storage: storage.to_string(),
            feed: primary::Feed::new(&fs),
            fs,
            config: config.clone(),
            state_path,
            state: Mutex::new(st),
            role: Mutex::new(role),
            link: Mutex::new(Link {
                phase: "connecting",
                ..Link::default()
            }),
            resync_requested: AtomicBool::new(config.resync),
            kicked: tokio::sync::Notify::new(),
            task: Mutex::new(None),
            role_changed: tokio::sync::watch::channel(0).0,
            connector: OnceLock::new(),
        }))
    }

    /// The TLS connector of this storage's outgoing replication links, if TLS is configured.
    pub fn connector(&self) -> Option<&tokio_rustls::TlsConnector> {
        self.connector.get()
    }

    pub fn role(&self) -> Role {
        lock(&self.role).clone()
    }

    pub fn is_replica(&self) -> bool {
        matches!(*lock(&self.role), Role::Replica { .. })
    }

    /// Why writes are refused now, if they are.
    pub fn writes_refused(&self) -> Option<String> {
        match &*lock(&self.role) {
            Role::Primary => None,
            Role::Replica { from } => Some(format!(
                "this server is a read-only replica of {from}; write through the primary"
            )),
            Role::Fenced { reason } => Some(reason.clone()),
        }
    }

    pub fn state(&self) -> Option<State> {
        lock(&self.state).clone()
    }

    pub fn epoch(&self) -> u64 {
        lock(&self.state).as_ref().map_or(0, State::epoch)
    }

    /// Adopt the primary's database id and lineage (a replica, after a handshake).
    pub fn adopt(&self, s: State) -> Result<(), state::StateError> {
        let mut cur = lock(&self.state);
        if cur.as_ref() != Some(&s) {
            s.save(&self.state_path)?;
            *cur = Some(s);
        }
        Ok(())
    }

    /// Stop accepting writes: a newer primary exists. Clients are disconnected so that they
    /// find the new primary (writable registrations are refused from now on).
    pub fn fence(&self, st: &StorageState, reason: String) {
        {
            let mut role = lock(&self.role);
            if !matches!(*role, Role::Primary) {
                return;
            }
            // The reasons name the storage already.
            error!(target: LOG, "{reason}");
            *role = Role::Fenced { reason };
        }
        st.disconnect_all();
        self.role_changed.send_modify(|n| *n += 1);
    }

    pub fn set_task(&self, h: tokio::task::JoinHandle<()>) {
        *lock(&self.task) = Some(h);
    }

    /// Make this replica the primary (`zodbctl promote`): refuses a stale or diverged copy
    /// unless `force`; returns the message for the operator.
    pub fn promote(&self, force: bool) -> Result<String, String> {
        let from = match self.role() {
            Role::Replica { from } => from,
            Role::Primary => {
                return Err(format!("storage '{}' is already the primary", self.storage));
            }
            Role::Fenced { reason } => {
                return Err(format!(
                    "storage '{}' is a fenced former primary ({reason}); it cannot be promoted",
                    self.storage
                ));
            }
        };
        let end = self.fs.size();
        if !force {
            let link = lock(&self.link).clone();
            if link.connected && link.phase == "streaming" {
                return Err(format!(
                    "the primary {from} is alive and streaming to this replica: stop it first \
                     (promoting now would leave two writable primaries), or promote with \
                     --force, which also tells that primary to stop accepting writes"
                ));
            }
            if let Some(code) = link.refused {
                return Err(format!(
                    "the primary refused this replica ({code}: {}); promoting it would \
                     publish a copy that is not the primary's; use --force if that is intended",
                    link.error.unwrap_or_default()
                ));
            }
            if lock(&self.state).is_none() {
                return Err(format!(
                    "storage '{}' never synchronised with its primary {from}: nothing to \
                     promote (use --force to promote this file as it is)",
                    self.storage
                ));
            }
            if link.phase == "resyncing" {
                return Err(
                    "a full resynchronisation was in progress: this copy is the old one; use \
                     --force to promote it anyway"
                        .into(),
                );
            }
            if link.primary_end > end {
                return Err(format!(
                    "this replica is stale: the primary was last heard at byte {} with {} \
                     transaction(s) this replica does not have (it stopped at byte {end}); \
                     those would be lost. Use --force to promote anyway",
                    link.primary_end, link.lag_txns
                ));
            }
        }
        if let Some(h) = lock(&self.task).take() {
            h.abort();
        }
        // Read after the replica task is stopped: the new epoch starts after the last
        // transaction this server will ever have received from the old primary.
        let last = self.fs.last_transaction();
        let epoch = {
            let mut st = lock(&self.state);
            let s = st.get_or_insert_with(State::new_database);
            let mut next = s.clone();
            let epoch = next.promote(last);
            next.save(&self.state_path).map_err(|e| e.to_string())?;
            *s = next;
            epoch
        };
        if force {
            // Tell the old primary, if it is still there, so it stops taking writes.
            let fence = primary::fence_remote(
                from.clone(),
                self.storage.clone(),
                epoch,
                self.state(),
                self.connector().cloned(),
            );
            tokio::spawn(fence);
        }
        {
            let mut l = lock(&self.link);
            l.connected = false;
            l.phase = "promoted";
        }
        *lock(&self.role) = Role::Primary;
        self.feed.reset(&self.fs);
        self.role_changed.send_modify(|n| *n += 1);
        let msg = format!(
            "storage '{}' promoted: now the primary, epoch {epoch}, last transaction {} (was a replica of {from})",
            self.storage,
            state::tid_hex(&last)
        );
        warn!(target: LOG, "{msg}");
        Ok(msg)
    }

    /// `zodbctl resync`: discard this replica's copy at the next handshake.
    pub fn request_resync(&self) -> Result<String, String> {
        if !self.is_replica() {
            return Err(format!("storage '{}' is not a replica", self.storage));
        }
        self.resync_requested.store(true, Ordering::SeqCst);
        // Reconnect now rather than at the next retry.
        replica::kick(self);
        Ok(format!(
            "storage '{}': full resynchronisation requested; the replica keeps serving its \
             current copy until the new one is complete",
            self.storage
        ))
    }

    /// The replication figures of `status`, `check` and the metrics.
    pub fn status(&self) -> Value {
        let role = self.role();
        let end = self.fs.size();
        let last = self.fs.last_transaction();
        let mut v = json!({
            "role": match &role {
                Role::Primary => "primary",
                Role::Replica { .. } => "replica",
                Role::Fenced { .. } => "fenced",
            },
            "epoch": self.epoch(),
            "database": self.state().map(|s| s.database),
            "end": end,
            "last_transaction": state::tid_hex(&last),
            "mode": match self.config.mode {
                ReplicationMode::Async => "async",
                ReplicationMode::Sync => "sync",
            },
            "on_timeout": match self.config.on_timeout {
                OnTimeout::Degrade => "degrade",
                OnTimeout::Block => "block",
            },
            // Sync mode without a replica in sync: the next commit will not be synchronous.
            "degraded": self.feed.is_degraded()
                || (self.config.mode == ReplicationMode::Sync
                    && matches!(role, Role::Primary)
                    && !self.feed.any_in_sync()),
            "replicas": self.feed.replicas_status(),
        });
        match role {
            Role::Replica { from } => {
                let l = lock(&self.link).clone();
                let lag_bytes = l.primary_end.saturating_sub(end);
                let lag_seconds = match l.primary_tid {
                    Some(p) if p > last => tid_seconds(p) - tid_seconds(last),
                    _ => 0.0,
                };
                v["primary"] = json!(from);
                v["connected"] = json!(l.connected);
                v["phase"] = json!(l.phase);
                v["error"] = json!(l.error);
                v["lag_bytes"] = json!(lag_bytes);
                v["lag_transactions"] = json!(if lag_bytes == 0 { 0 } else { l.lag_txns.max(1) });
                v["lag_seconds"] = json!(lag_seconds);
                v["in_sync"] = json!(l.connected && l.phase == "streaming" && lag_bytes == 0);
                v["last_heard_seconds"] = json!(l.last_heard.map(|t| t.elapsed().as_secs_f64()));
                v["resyncs"] = json!(l.resyncs);
            }
            Role::Fenced { reason } => v["error"] = json!(reason),
            Role::Primary => {}
        }
        v
    }
}

/// A task that ends with its owner (a connection's reader half).
pub(crate) struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A tid's time in unix seconds.
pub fn tid_seconds(t: Tid) -> f64 {
    crate::storage::timestamp::tid_time(&t.to_bytes())
}

/// Unix seconds now.
pub fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Recent durable transactions of a feed, for lag in transactions and seconds.
pub(crate) struct Recent {
    entries: VecDeque<(u64, Instant)>,
}

impl Recent {
    const KEEP: usize = 100_000;

    fn new() -> Recent {
        Recent {
            entries: VecDeque::new(),
        }
    }

    fn push(&mut self, end: u64) {
        self.entries.push_back((end, Instant::now()));
        while self.entries.len() > Self::KEEP {
            self.entries.pop_front();
        }
    }

    /// Transactions after `acked`, and how long the oldest of them has waited.
    fn behind(&self, acked: u64) -> (u64, Duration) {
        let i = self.entries.partition_point(|(e, _)| *e <= acked);
        let n = (self.entries.len() - i) as u64;
        let age = self
            .entries
            .get(i)
            .map_or(Duration::ZERO, |(_, t)| t.elapsed());
        (n, age)
    }

    fn clear(&mut self) {
        self.entries.clear();
    }
}

/// Wire up replication for a server about to listen: replica tasks, the peers check of
/// primaries, and the replication listener.
///
/// With `[zeo.tls]`, `acceptor` is the ZEO listener's own (the replication listener's TCP
/// connections are TLS, client certificates verified against `authenticate`) and `connector`
/// the one of the outgoing links ([`crate::zeo::tls::connector`]), kept in each
/// [`Replication`]. Unix-socket links stay plain, as ZEO's are.
pub async fn start(
    ctx: &Arc<crate::zeo::server::ServerCtx>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    connector: Option<tokio_rustls::TlsConnector>,
) -> anyhow::Result<()> {
    let mut fed = std::collections::BTreeMap::new();
    for (name, st) in &ctx.storages {
        if let Some(r) = st.replication() {
            if let Some(c) = &connector {
                let _ = r.connector.set(c.clone());
            }
            fed.insert(
                name.clone(),
                primary::Fed {
                    repl: Arc::clone(r),
                    st: Arc::clone(st),
                },
            );
        }
    }
    for f in fed.values() {
        match f.repl.role() {
            Role::Replica { from } => replica::spawn(f.clone(), from),
            Role::Primary => primary::check_peers(f, &ctx.config.replication.peers).await,
            Role::Fenced { .. } => {}
        }
        // A replica promoted later checks its peers from then on, too.
        let every = (ctx.config.replication.keep_alive * 2).max(Duration::from_secs(10));
        primary::watch_peers(f.clone(), ctx.config.replication.peers.clone(), every);
    }
    if let Some(addr) = &ctx.config.replication.listen {
        primary::listen(addr.clone(), fed, acceptor).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(dir: &std::path::Path) -> Arc<Replication> {
        let fs = crate::storage::OpenOptions::new()
            .progress(false)
            .open(dir.join("Data.fs"))
            .unwrap();
        Replication::open("1", fs, &ReplicationConfig::default(), Some("127.0.0.1:1")).unwrap()
    }

    #[test]
    fn promotion_refuses_what_would_lose_or_split() {
        let dir = tempfile::tempdir().unwrap();
        let r = replica(dir.path());
        assert!(r.writes_refused().unwrap().contains("read-only replica"));
        // Never synchronised: no state file.
        assert!(r.promote(false).unwrap_err().contains("never synchronised"));
        r.adopt(State::new_database()).unwrap();
        lock(&r.link).connected = true;
        lock(&r.link).phase = "streaming";
        assert!(
            r.promote(false)
                .unwrap_err()
                .contains("alive and streaming")
        );
        {
            let mut l = lock(&r.link);
            l.connected = false;
            l.phase = "connecting";
            l.primary_end = 9999;
            l.lag_txns = 3;
        }
        let stale = r.promote(false).unwrap_err();
        assert!(
            stale.contains("stale") && stale.contains("--force"),
            "{stale}"
        );
        {
            let mut l = lock(&r.link);
            l.primary_end = 4;
            l.refused = Some("diverged");
            l.error = Some("the replica has diverged".into());
        }
        assert!(r.promote(false).unwrap_err().contains("diverged"));
        lock(&r.link).refused = None;
        let msg = r.promote(false).unwrap();
        assert!(msg.contains("epoch 2"), "{msg}");
        assert_eq!(r.role(), Role::Primary);
        assert_eq!(r.writes_refused(), None);
        // The new epoch is on disk, for the next start and for the peers.
        let saved = State::load(&state::path_for(&dir.path().join("Data.fs")))
            .unwrap()
            .unwrap();
        assert_eq!(saved.epoch(), 2);
        assert!(
            r.promote(false)
                .unwrap_err()
                .contains("already the primary")
        );
        assert_eq!(r.status()["role"], "primary");
    }

    #[test]
    fn lag_in_transactions_and_seconds() {
        let mut recent = Recent::new();
        for end in [100, 200, 300] {
            recent.push(end);
        }
        assert_eq!(recent.behind(300).0, 0);
        assert_eq!(recent.behind(100).0, 2);
        assert_eq!(recent.behind(0).0, 3);
        recent.clear();
        assert_eq!(recent.behind(0), (0, Duration::ZERO));
    }
}
