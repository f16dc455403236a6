//! The feeding side: the replication listener, one sender per connected replica, and the
//! [`Feed`] through which the commit path publishes durable transactions and, in sync mode,
//! waits for a replica's acknowledgement.
//!
//! A sender never buffers more than one chunk ([`CHUNK`], or one transaction when a
//! transaction is bigger): it reads the committed bytes from the file itself, so a replica
//! that is far behind costs the primary a file read position, not memory. TCP flow control
//! paces it to the replica's speed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::protocol::{self, Kind, LAST_CHUNK, ProtoError};
use super::state::{self, Claim, Verdict};
use super::{AbortOnDrop, LOG, Recent, Replication, Role, lock};
use crate::storage::{FileStorage, Tid};
use crate::zeo::config::{ListenAddr, OnTimeout, ReplicationMode};
use crate::zeo::shared::StorageState;

/// Bytes of whole transactions per `Txns` frame.
pub const CHUNK: u64 = 16 << 20;
/// Blob and resync file chunks.
const FILE_CHUNK: usize = 4 << 20;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The durable end of the file: what senders may ship.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durable {
    pub generation: u64,
    pub end: u64,
    pub tid: Tid,
}

/// One connected replica, as the primary sees it.
#[derive(Debug, Clone)]
struct Peer {
    addr: String,
    /// Durable on the replica up to here.
    acked: u64,
    /// Shipped up to here.
    sent: u64,
    /// The durable end when the sender last had shipped everything: acknowledging it makes
    /// the replica in sync.
    tip: Option<u64>,
    /// Caught up once since it connected: its acknowledgements count for sync commits.
    in_sync: bool,
    phase: &'static str,
    since: Instant,
}

pub struct Feed {
    durable: watch::Sender<Durable>,
    /// The highest end acknowledged by an in-sync replica (sync commits wait on it).
    acked: watch::Sender<u64>,
    peers: std::sync::Mutex<BTreeMap<u64, Peer>>,
    recent: std::sync::Mutex<Recent>,
    next_peer: AtomicU64,
    degraded: AtomicBool,
}

impl Feed {
    pub fn new(fs: &FileStorage) -> Feed {
        Feed {
            durable: watch::channel(snapshot(fs)).0,
            acked: watch::channel(0).0,
            peers: std::sync::Mutex::new(BTreeMap::new()),
            recent: std::sync::Mutex::new(Recent::new()),
            next_peer: AtomicU64::new(1),
            degraded: AtomicBool::new(false),
        }
    }

    /// The file was swapped (pack, resync) or the role changed: start again from its end.
    pub fn reset(&self, fs: &FileStorage) {
        lock(&self.recent).clear();
        self.acked.send_replace(0);
        self.durable.send_replace(snapshot(fs));
    }

    pub fn current(&self) -> Durable {
        *self.durable.borrow()
    }

    /// A transaction ending at `end` is durable (and, on a primary, not yet visible).
    pub fn durable(&self, generation: u64, end: u64, tid: Tid) {
        lock(&self.recent).push(end);
        self.durable.send_replace(Durable {
            generation,
            end,
            tid,
        });
    }

    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    pub fn any_in_sync(&self) -> bool {
        lock(&self.peers).values().any(|p| p.in_sync)
    }

    /// Sync mode: wait until an in-sync replica has `end` durable, per `sync-timeout` and
    /// `on-timeout`. Returns at once in async mode.
    pub async fn wait_replicated(&self, r: &Replication, end: u64) {
        if r.config.mode != ReplicationMode::Sync || r.is_replica() {
            return;
        }
        if self.is_degraded() && !self.any_in_sync() {
            // Already degraded with nobody in sync: do not make every commit pay the timeout.
            return;
        }
        let mut rx = self.acked.subscribe();
        loop {
            match tokio::time::timeout(r.config.sync_timeout, rx.wait_for(|a| *a >= end)).await {
                Ok(Ok(_)) => {
                    if self.degraded.swap(false, Ordering::Relaxed) {
                        info!(target: LOG, "storage '{}': a replica is in sync again; commits are synchronous again", r.storage);
                    }
                    return;
                }
                Ok(Err(_)) => return,
                Err(_) => match r.config.on_timeout {
                    OnTimeout::Degrade => {
                        if !self.degraded.swap(true, Ordering::Relaxed) {
                            warn!(target: LOG,
                                "storage '{}': no replica acknowledged within {:?}; degraded to asynchronous replication (on-timeout = \"degrade\")",
                                r.storage, r.config.sync_timeout);
                        }
                        return;
                    }
                    OnTimeout::Block => {
                        self.degraded.store(true, Ordering::Relaxed);
                        warn!(target: LOG,
                            "storage '{}': no replica acknowledged within {:?}; the commit waits (on-timeout = \"block\")",
                            r.storage, r.config.sync_timeout);
                    }
                },
            }
        }
    }

    fn recompute_acked(&self, peers: &BTreeMap<u64, Peer>) {
        let best = peers
            .values()
            .filter(|p| p.in_sync)
            .map(|p| p.acked)
            .max()
            .unwrap_or(0);
        self.acked.send_if_modified(|a| {
            if *a != best {
                *a = best;
                true
            } else {
                false
            }
        });
    }

    pub fn replicas_status(&self) -> Value {
        let cur = self.current();
        let peers = lock(&self.peers).clone();
        let recent = lock(&self.recent);
        let list: Vec<Value> = peers
            .values()
            .map(|p| {
                let (txns, age) = recent.behind(p.acked);
                let lag_bytes = cur.end.saturating_sub(p.acked);
                json!({
                    "peer": p.addr,
                    "phase": p.phase,
                    "acked": p.acked,
                    "sent": p.sent,
                    "in_sync": p.in_sync && lag_bytes == 0,
                    "lag_bytes": lag_bytes,
                    "lag_transactions": if lag_bytes == 0 { 0 } else { txns },
                    "lag_seconds": if lag_bytes == 0 { 0.0 } else { age.as_secs_f64() },
                    "connected_seconds": p.since.elapsed().as_secs_f64(),
                })
            })
            .collect();
        Value::Array(list)
    }

    fn lag_txns(&self, acked: u64) -> u64 {
        lock(&self.recent).behind(acked).0
    }
}

fn snapshot(fs: &FileStorage) -> Durable {
    Durable {
        generation: fs.generation(),
        end: fs.size(),
        tid: fs.last_transaction(),
    }
}

/// A replicated storage and the server state it belongs to.
#[derive(Clone)]
pub struct Fed {
    pub repl: Arc<Replication>,
    pub st: Arc<StorageState>,
}

pub type Streams = (
    Box<dyn AsyncRead + Unpin + Send>,
    Box<dyn AsyncWrite + Unpin + Send>,
);

/// Accept replicas on `addr` until the process ends; with `tls` (the server's `[zeo.tls]`),
/// each TCP connection is a TLS one first (a Unix socket stays plain, as ZEO's does). A failed
/// handshake is logged and that connection dropped.
pub async fn listen(
    addr: ListenAddr,
    fed: BTreeMap<String, Fed>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> anyhow::Result<()> {
    let fed = Arc::new(fed);
    match &addr {
        ListenAddr::Unix(p) => {
            let _ = std::fs::remove_file(p);
            let l = tokio::net::UnixListener::bind(p)
                .map_err(|e| anyhow::anyhow!("cannot listen for replicas on {addr}: {e}"))?;
            info!(target: LOG, "listening for replicas on {addr}");
            tokio::spawn(async move {
                loop {
                    match l.accept().await {
                        Ok((s, _)) => {
                            let (r, w) = s.into_split();
                            tokio::spawn(serve(
                                fed.clone(),
                                (Box::new(r), Box::new(w)),
                                "unix".into(),
                            ));
                        }
                        Err(e) => {
                            error!(target: LOG, "accepting a replica failed: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            });
        }
        ListenAddr::Tcp { host, port } => {
            let host = if host.is_empty() {
                "0.0.0.0"
            } else {
                host.as_str()
            };
            let l = tokio::net::TcpListener::bind((host, *port))
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen for replicas on {addr}: {e}"))?;
            let how = if tls.is_some() { " (TLS)" } else { "" };
            info!(target: LOG, "listening for replicas on {addr}{how}");
            tokio::spawn(async move {
                loop {
                    match l.accept().await {
                        Ok((s, peer)) => {
                            let _ = s.set_nodelay(true);
                            let peer = peer.to_string();
                            match &tls {
                                Some(acceptor) => {
                                    tokio::spawn(serve_tls(fed.clone(), acceptor.clone(), s, peer));
                                }
                                None => {
                                    let (r, w) = s.into_split();
                                    tokio::spawn(serve(
                                        fed.clone(),
                                        (Box::new(r), Box::new(w)),
                                        peer,
                                    ));
                                }
                            }
                        }
                        Err(e) => {
                            error!(target: LOG, "accepting a replica failed: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            });
        }
    }
    Ok(())
}

/// The TLS handshake of an accepted replication connection, then [`serve`].
async fn serve_tls(
    fed: Arc<BTreeMap<String, Fed>>,
    acceptor: tokio_rustls::TlsAcceptor,
    s: tokio::net::TcpStream,
    peer: String,
) {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(s)).await {
        Ok(Ok(s)) => {
            let (r, w) = tokio::io::split(s);
            serve(fed, (Box::new(r), Box::new(w)), peer).await;
        }
        Ok(Err(e)) => {
            warn!(target: LOG, "replication: TLS handshake with {peer} failed: {e}");
        }
        Err(_) => {
            warn!(target: LOG, "replication: TLS handshake with {peer} timed out after {HANDSHAKE_TIMEOUT:?}");
        }
    }
}

async fn refuse(w: &mut (dyn AsyncWrite + Unpin + Send), code: &str, message: &str) {
    let _ = protocol::write_json(w, Kind::Refuse, &json!({"code": code, "message": message})).await;
}

/// One replica connection: handshake, then stream.
async fn serve(fed: Arc<BTreeMap<String, Fed>>, (mut rd, mut wr): Streams, peer: String) {
    let hello = match tokio::time::timeout(HANDSHAKE_TIMEOUT, protocol::read_frame(&mut rd)).await {
        Ok(Ok(f)) if f.kind == Kind::Hello => match f.json() {
            Ok(v) => v,
            Err(e) => {
                warn!(target: LOG, "replica {peer}: {e}");
                return;
            }
        },
        Ok(Ok(f)) => {
            warn!(target: LOG, "replica {peer}: expected a hello, got {:?}", f.kind);
            return;
        }
        Ok(Err(e)) => {
            warn!(target: LOG, "replica {peer}: {e}");
            return;
        }
        Err(_) => {
            warn!(target: LOG, "replica {peer}: no hello within {HANDSHAKE_TIMEOUT:?}");
            return;
        }
    };
    if hello["version"].as_u64() != Some(protocol::VERSION) {
        refuse(&mut *wr, "version", &format!(
            "replication protocol version {} is not this server's {}; run the same zodbctl on both",
            hello["version"], protocol::VERSION)).await;
        return;
    }
    let name = hello["storage"].as_str().unwrap_or_default().to_string();
    let Some(f) = fed.get(&name).cloned() else {
        let known: Vec<&String> = fed.keys().collect();
        refuse(
            &mut *wr,
            "no-such-storage",
            &format!("this server replicates no storage {name:?} (it has {known:?})"),
        )
        .await;
        return;
    };
    let r = &f.repl;
    let their_epoch = hello["epoch"].as_u64().unwrap_or(0);
    let same_db = r.state().map(|s| s.database) == hello["database"].as_str().map(str::to_string);
    // A server that promoted itself, or a probe at start-up, tells us its epoch.
    if let Some(e) = hello["fence"].as_u64()
        && same_db
        && e > r.epoch()
    {
        r.fence(&f.st, format!(
            "storage '{}': a replica was promoted (epoch {e}, this server's is {}); this server \
             no longer accepts writes — make it a replica of the new primary (replicate-from) \
             and restart it", r.storage, r.epoch()));
    }
    if hello["probe"].as_bool() == Some(true) || hello.get("fence").is_some() {
        let role = match r.role() {
            Role::Primary => "primary",
            Role::Replica { .. } => "replica",
            Role::Fenced { .. } => "fenced",
        };
        let _ = protocol::write_json(
            &mut *wr,
            Kind::Status,
            &json!({
                "epoch": r.epoch(), "role": role, "database": r.state().map(|s| s.database)
            }),
        )
        .await;
        return;
    }
    let Some(pstate) = r.state() else {
        refuse(
            &mut *wr,
            "not-ready",
            "this replica has not synchronised with its own primary yet; try again later",
        )
        .await;
        return;
    };
    let end = hello["end"].as_u64().unwrap_or(0);
    let tid = hello["tid"]
        .as_str()
        .and_then(state::parse_tid)
        .unwrap_or(Tid::ZERO);
    let md5 = hello["md5"].as_str().unwrap_or_default().to_string();
    let is_prefix = match r.fs.txn_ending_at(end) {
        Ok(Some(p)) => p.tid == tid && crate::zeo::backend::hex(&p.md5) == md5,
        _ => false,
    };
    let claim = Claim {
        database: hello["database"].as_str().map(str::to_string),
        epoch: their_epoch,
        tid,
        end,
        is_prefix,
        resync: hello["resync"].as_bool() == Some(true),
    };
    let verdict = state::judge(&pstate, r.fs.last_transaction(), &claim);
    let full = match verdict {
        Verdict::Refuse(refusal) => {
            let msg = refusal.message(pstate.epoch());
            warn!(target: LOG, "storage '{name}': refusing replica {peer}: {msg}");
            refuse(&mut *wr, refusal.code(), &msg).await;
            if let state::Refusal::NewerEpoch(e) = refusal {
                r.fence(
                    &f.st,
                    format!(
                        "storage '{name}': replica {peer} has seen epoch {e}, newer than this \
                     server's {}: a newer primary exists; this server no longer accepts writes \
                     — make it a replica of the new primary (replicate-from) and restart it",
                        pstate.epoch()
                    ),
                );
            }
            return;
        }
        Verdict::Resume => None,
        Verdict::FullResync(why) => Some(why),
    };
    let id = r.feed.next_peer.fetch_add(1, Ordering::Relaxed);
    lock(&r.feed.peers).insert(
        id,
        Peer {
            addr: peer.clone(),
            acked: if full.is_some() { 0 } else { end },
            sent: 0,
            tip: None,
            in_sync: false,
            phase: if full.is_some() {
                "resyncing"
            } else {
                "streaming"
            },
            since: Instant::now(),
        },
    );
    let start = match full {
        None => Start::Resume(end),
        Some(why) => Start::Resync(why),
    };
    let result = stream(&f, id, start, &pstate, rd, &mut *wr, &peer).await;
    {
        let mut peers = lock(&r.feed.peers);
        peers.remove(&id);
        r.feed.recompute_acked(&peers);
    }
    match result {
        Ok(()) => info!(target: LOG, "storage '{name}': replica {peer} disconnected"),
        Err(e) => warn!(target: LOG, "storage '{name}': replica {peer}: {e}"),
    }
}

#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error(transparent)]
    Proto(#[from] ProtoError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Storage(#[from] crate::storage::StorageError),
    #[error("the file was rewritten (pack); the replica resynchronises")]
    Rewritten,
    #[error("the replica stopped answering (no heartbeat for {0:?})")]
    Silent(Duration),
}

/// How a replica's stream begins.
enum Start {
    /// From its proven end.
    Resume(u64),
    /// With a full copy, for this reason.
    Resync(String),
}

async fn stream(
    f: &Fed,
    id: u64,
    begin: Start,
    pstate: &state::State,
    rd: Box<dyn AsyncRead + Unpin + Send>,
    wr: &mut (dyn AsyncWrite + Unpin + Send),
    peer: &str,
) -> Result<(), SendError> {
    let r = &f.repl;
    let mut durable_rx = r.feed.durable.subscribe();
    let start = *durable_rx.borrow_and_update();
    let lineage = serde_json::to_value(&pstate.lineage).unwrap_or_default();
    let mut sent;
    match &begin {
        Start::Resume(claimed_end) => {
            let claimed_end = *claimed_end;
            info!(target: LOG, "storage '{}': replica {peer} resumes at byte {claimed_end}", r.storage);
            protocol::write_json(
                wr,
                Kind::Welcome,
                &json!({
                    "mode": "resume", "database": pstate.database, "lineage": lineage,
                    "from": claimed_end, "epoch": pstate.epoch(),
                }),
            )
            .await?;
            sent = claimed_end;
        }
        Start::Resync(why) => {
            info!(target: LOG, "storage '{}': full resynchronisation of replica {peer} ({why}): {} bytes", r.storage, start.end);
            protocol::write_json(
                wr,
                Kind::Welcome,
                &json!({
                    "mode": "resync", "database": pstate.database, "lineage": lineage,
                    "size": start.end, "tid": state::tid_hex(&start.tid), "epoch": pstate.epoch(),
                    "reason": why,
                }),
            )
            .await?;
            send_file(r, start, wr).await?;
            sent = start.end;
            if let Some(p) = lock(&r.feed.peers).get_mut(&id) {
                p.phase = "streaming";
                p.sent = sent;
            }
        }
    }
    let generation = start.generation;
    // Acknowledgements and heartbeats come back on the read half.
    let (heard_tx, mut heard_rx) =
        tokio::sync::mpsc::channel::<Result<(u64, bool), ProtoError>>(64);
    let reader = tokio::spawn(read_acks(rd, heard_tx));
    let _reader = AbortOnDrop(reader);
    let keep_alive = r.config.keep_alive;
    let mut tick = tokio::time::interval(keep_alive);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut buf = Vec::new();
    loop {
        let cur = *durable_rx.borrow_and_update();
        if cur.generation != generation {
            return Err(rewritten(wr).await);
        }
        while sent < cur.end {
            let Some(chunk) = r.fs.raw_chunk(generation, sent, cur.end, CHUNK)? else {
                return Err(rewritten(wr).await);
            };
            for (oid, tid, path) in &chunk.blobs {
                send_blob(wr, oid.to_bytes(), tid.to_bytes(), path).await?;
            }
            buf.resize((chunk.end - chunk.start) as usize, 0);
            if !r.fs.read_raw(generation, chunk.start, &mut buf)? {
                return Err(SendError::Rewritten);
            }
            protocol::write_frame(wr, Kind::Txns, &[&chunk.start.to_be_bytes(), &buf]).await?;
            wr.flush().await?;
            sent = chunk.end;
            if let Some(p) = lock(&r.feed.peers).get_mut(&id) {
                p.sent = sent;
                p.phase = "streaming";
            }
            if buf.len() > CHUNK as usize {
                buf = Vec::new();
            }
        }
        if let Some(p) = lock(&r.feed.peers).get_mut(&id) {
            p.tip = Some(sent);
        }
        tokio::select! {
            changed = durable_rx.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            _ = tick.tick() => {
                if last_heard.elapsed() > keep_alive * 3 + Duration::from_secs(5) {
                    return Err(SendError::Silent(last_heard.elapsed()));
                }
                let acked = lock(&r.feed.peers).get(&id).map_or(0, |p| p.acked);
                // The visible end, not the durable one: in sync mode a transaction durable
                // here but not yet acknowledged by a replica was seen by no client, and a
                // replica that lacks only that is not stale (promotion checks this figure).
                protocol::write_json(wr, Kind::Ping, &json!({
                    "end": r.fs.size(), "tid": state::tid_hex(&r.fs.last_transaction()), "time": super::now_seconds(),
                    "lag_txns": r.feed.lag_txns(acked), "epoch": r.epoch(),
                })).await?;
            }
            heard = heard_rx.recv() => match heard {
                None => return Ok(()),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok((acked, is_ack))) => {
                    last_heard = Instant::now();
                    if is_ack {
                        let mut peers = lock(&r.feed.peers);
                        if let Some(p) = peers.get_mut(&id) {
                            p.acked = p.acked.max(acked);
                            if p.tip.is_some_and(|tip| p.acked >= tip) && !p.in_sync {
                                p.in_sync = true;
                                info!(target: LOG, "storage '{}': replica {peer} is in sync", r.storage);
                            }
                        }
                        r.feed.recompute_acked(&peers);
                    }
                }
            }
        }
    }
}

/// Tell the replica that the file changed under the stream (it reconnects for a full copy).
async fn rewritten(wr: &mut (dyn AsyncWrite + Unpin + Send)) -> SendError {
    let msg = json!({"message": "the primary's file was rewritten (pack)"});
    let _ = protocol::write_json(wr, Kind::Rewritten, &msg).await;
    SendError::Rewritten
}

/// The replica's frames: `Ack` (end, tid) and `Ping`.
async fn read_acks(
    mut rd: Box<dyn AsyncRead + Unpin + Send>,
    tx: tokio::sync::mpsc::Sender<Result<(u64, bool), ProtoError>>,
) {
    loop {
        let f = match protocol::read_frame(&mut rd).await {
            Ok(f) => f,
            Err(ProtoError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        let item = match f.kind {
            Kind::Ack => {
                let mut rest = f.body.as_slice();
                f.u64_field(&mut rest).map(|end| (end, true))
            }
            Kind::Ping => f.json().map(|v| (v["end"].as_u64().unwrap_or(0), false)),
            k => Err(ProtoError::Unexpected(k)),
        };
        let stop = item.is_err();
        if tx.send(item).await.is_err() || stop {
            return;
        }
    }
}

async fn send_blob(
    wr: &mut (dyn AsyncWrite + Unpin + Send),
    oid: [u8; 8],
    tid: [u8; 8],
    path: &std::path::Path,
) -> Result<(), SendError> {
    use tokio::io::AsyncReadExt;
    let mut file = tokio::fs::File::open(path).await?;
    let mut buf = vec![0u8; FILE_CHUNK];
    let mut pending: Option<Vec<u8>> = None;
    let mut first = true;
    loop {
        let n = file.read(&mut buf).await?;
        if let Some(prev) = pending.take() {
            let last = if n == 0 { LAST_CHUNK } else { 0 };
            protocol::write_frame(wr, Kind::Blob, &[&oid, &tid, &[last], &prev]).await?;
        }
        if n == 0 {
            if first {
                // An empty blob file still exists on the primary: one empty last chunk.
                protocol::write_frame(wr, Kind::Blob, &[&oid, &tid, &[LAST_CHUNK]]).await?;
            }
            break;
        }
        first = false;
        pending = Some(buf[..n].to_vec());
    }
    Ok(())
}

/// A full resynchronisation: the committed file up to `at.end`, then every blob file.
async fn send_file(
    r: &Replication,
    at: Durable,
    wr: &mut (dyn AsyncWrite + Unpin + Send),
) -> Result<(), SendError> {
    let mut buf = vec![0u8; FILE_CHUNK];
    let mut off = 0u64;
    while off < at.end {
        let n = (at.end - off).min(FILE_CHUNK as u64) as usize;
        if !r.fs.read_raw(at.generation, off, &mut buf[..n])? {
            return Err(SendError::Rewritten);
        }
        protocol::write_frame(wr, Kind::File, &[&off.to_be_bytes(), &buf[..n]]).await?;
        off += n as u64;
    }
    if let Some(dir) = r.fs.blob_dir().map(std::path::Path::to_path_buf) {
        for rel in blob_files(&dir) {
            let Some(rel_str) = rel.to_str() else {
                continue;
            };
            let mut file = match tokio::fs::File::open(dir.join(&rel)).await {
                Ok(f) => f,
                // Removed by a pack meanwhile: the transactions that follow say what exists.
                Err(_) => continue,
            };
            send_file_blob(wr, rel_str, &mut file, &mut buf).await?;
        }
    }
    protocol::write_json(
        wr,
        Kind::FileEnd,
        &json!({"size": at.end, "tid": state::tid_hex(&at.tid)}),
    )
    .await?;
    Ok(())
}

async fn send_file_blob(
    wr: &mut (dyn AsyncWrite + Unpin + Send),
    rel: &str,
    file: &mut tokio::fs::File,
    buf: &mut [u8],
) -> Result<(), SendError> {
    use tokio::io::AsyncReadExt;
    let name = rel.as_bytes();
    let len = u16::try_from(name.len()).map_err(|_| std::io::Error::other("blob path too long"))?;
    let mut pending: Option<Vec<u8>> = None;
    let mut first = true;
    loop {
        let n = file.read(buf).await?;
        if let Some(prev) = pending.take() {
            let last = if n == 0 { LAST_CHUNK } else { 0 };
            protocol::write_frame(
                wr,
                Kind::FileBlob,
                &[&len.to_be_bytes(), name, &[last], &prev],
            )
            .await?;
        }
        if n == 0 {
            if first {
                protocol::write_frame(
                    wr,
                    Kind::FileBlob,
                    &[&len.to_be_bytes(), name, &[LAST_CHUNK]],
                )
                .await?;
            }
            break;
        }
        first = false;
        pending = Some(buf[..n].to_vec());
    }
    Ok(())
}

/// Every regular file of a blob directory, relative to it, except its temporary directory.
fn blob_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![std::path::PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(dir.join(&rel)) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            if rel.as_os_str().is_empty() && name == "tmp" {
                continue;
            }
            let p = rel.join(&name);
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(p),
                Ok(t) if t.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// Connect to a replication address (TCP `HOST:PORT` or a Unix socket path); over TLS with
/// `tls` (the server's `[zeo.tls]`, [`crate::zeo::tls::connector`]) when it is TCP. The
/// server name given to the verifier is the address's host: a pinned certificate is accepted
/// whatever it names, a chained one must name that host.
pub async fn connect(
    addr: &str,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> std::io::Result<Streams> {
    if addr.contains('/') {
        let s = tokio::net::UnixStream::connect(addr).await?;
        let (r, w) = s.into_split();
        Ok((Box::new(r), Box::new(w)))
    } else {
        let s = tokio::net::TcpStream::connect(addr).await?;
        let _ = s.set_nodelay(true);
        match tls {
            Some(connector) => {
                let name = server_name(addr)?;
                let s = connector.connect(name, s).await.map_err(|e| {
                    std::io::Error::new(e.kind(), format!("TLS handshake with {addr}: {e}"))
                })?;
                let (r, w) = tokio::io::split(s);
                Ok((Box::new(r), Box::new(w)))
            }
            None => {
                let (r, w) = s.into_split();
                Ok((Box::new(r), Box::new(w)))
            }
        }
    }
}

/// The host of `HOST:PORT` (`[V6]:PORT`) as a TLS server name; an empty host is the local
/// machine.
fn server_name(addr: &str) -> std::io::Result<rustls::pki_types::ServerName<'static>> {
    let host = match addr.rsplit_once(':') {
        Some((h, _)) => h,
        None => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host.is_empty() { "localhost" } else { host };
    rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{addr}: {host:?} is not a host name for TLS: {e}"),
        )
    })
}

/// Ask the server at `addr` for its epoch and role (a `probe` hello); with `fence`, tell it
/// a newer epoch exists.
pub async fn ask(
    addr: &str,
    storage: &str,
    database: Option<String>,
    fence: Option<u64>,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> Option<Value> {
    let go = async {
        let (mut rd, mut wr) = match connect(addr, tls).await {
            Ok(s) => s,
            Err(e) => {
                // Down is the usual reason and says nothing new; a TLS failure does.
                if e.to_string().starts_with("TLS handshake") {
                    warn!(target: LOG, "storage '{storage}': asking {addr} for its epoch: {e}");
                }
                return None;
            }
        };
        let mut hello = json!({"version": protocol::VERSION, "storage": storage, "database": database, "probe": true});
        if let Some(e) = fence {
            hello["fence"] = json!(e);
        }
        protocol::write_json(&mut *wr, Kind::Hello, &hello)
            .await
            .ok()?;
        let f = protocol::read_frame(&mut rd).await.ok()?;
        (f.kind == Kind::Status).then(|| f.json().ok()).flatten()
    };
    tokio::time::timeout(Duration::from_secs(3), go)
        .await
        .ok()
        .flatten()
}

/// After a forced promotion: tell the old primary (if it still runs) to stop writing.
pub async fn fence_remote(
    addr: String,
    storage: String,
    epoch: u64,
    state: Option<state::State>,
    tls: Option<tokio_rustls::TlsConnector>,
) {
    match ask(
        &addr,
        &storage,
        state.map(|s| s.database),
        Some(epoch),
        tls.as_ref(),
    )
    .await
    {
        Some(v) => {
            info!(target: LOG, "storage '{storage}': told the former primary {addr} about epoch {epoch} (it is now {})", v["role"])
        }
        None => {
            info!(target: LOG, "storage '{storage}': the former primary {addr} did not answer (down)")
        }
    }
}

/// A primary asks its peers for their epoch, at start-up (before it accepts a client) and
/// then periodically: a peer that is the primary of a newer epoch (promoted while this server
/// was down or cut off) fences this server; a peer that is a primary of an older epoch is
/// told to fence itself.
pub async fn check_peers(f: &Fed, peers: &[String]) {
    let r = &f.repl;
    if !matches!(r.role(), Role::Primary) {
        return;
    }
    let db = r.state().map(|s| s.database);
    for p in peers {
        let Some(v) = ask(p, &r.storage, db.clone(), None, r.connector()).await else {
            continue;
        };
        if v["database"].as_str().map(str::to_string) != db || v["role"] != "primary" {
            continue;
        }
        let theirs = v["epoch"].as_u64().unwrap_or(0);
        let ours = r.epoch();
        if theirs > ours {
            r.fence(&f.st, format!(
                "storage '{}': {p} is the primary of a newer epoch ({theirs}; this server's is {ours}): \
                 this server was the primary before a failover and no longer accepts writes. \
                 Make it a replica: set replicate-from = \"{p}\" for this storage and restart it \
                 (if it is then refused as diverged, `zodbctl resync` discards its extra transactions)",
                r.storage));
            return;
        }
        if theirs < ours {
            warn!(target: LOG, "storage '{}': {p} still acts as primary of the older epoch {theirs}; telling it to stop accepting writes", r.storage);
            let _ = ask(p, &r.storage, db.clone(), Some(ours), r.connector()).await;
        }
    }
}

/// Repeat [`check_peers`] while this server runs.
pub fn watch_peers(f: Fed, peers: Vec<String>, every: Duration) {
    if peers.is_empty() {
        return;
    }
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            check_peers(&f, &peers).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::server_name;
    use rustls::pki_types::ServerName;

    #[test]
    fn the_tls_server_name_is_the_host_of_the_address() {
        let ip = |s: &str| match server_name(s).expect("a name") {
            ServerName::IpAddress(a) => std::net::IpAddr::from(a).to_string(),
            ServerName::DnsName(d) => format!("dns:{}", d.as_ref()),
            _ => "other".into(),
        };
        assert_eq!(ip("127.0.0.1:8101"), "127.0.0.1");
        assert_eq!(ip("[::1]:8101"), "::1");
        assert_eq!(ip("primary.example:8101"), "dns:primary.example");
        assert_eq!(ip(":8101"), "dns:localhost");
        assert!(server_name("bad host!:8101").is_err());
    }
}
