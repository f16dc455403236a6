//! One client connection: handshake, then frame → message → command → storage.
//!
//! One task per connection, on the shard (thread) it was given at accept: it reads the
//! socket, cuts frames, and processes requests strictly in arrival order (§2.1), owning all
//! of the connection's state. Its replies go to the outbox, which the task writes itself
//! when a batch of requests is done (the outbox's writer task only takes over when the
//! client does not keep up). The only request that waits is `vote` (for the commit lock); it
//! waits inside the `select!` below so later requests (loads from other client threads,
//! `tpc_abort`) keep being served meanwhile.
//!
//! This file holds the connection's life (handshake, the request loop, dispatch, register,
//! disconnect); the methods live beside it by family: `loads`, `commit`, `undo`,
//! `iteration`, `blobs`, with `args` (argument decoding) and `frames` (the frame reader).

mod args;
mod blobs;
mod commit;
mod frames;
mod iteration;
mod loads;
mod pack;
mod undo;

use args::*;
use frames::FrameReader;
use undo::*;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::OwnedMutexGuard;
use tracing::{debug, error, info, warn};

use super::backend::{
    Commit, DataRecord, Oid, StoreError, Tid, TxnCursor, TxnMeta, TxnRecord, UndoEntry, hex,
};
use super::codec;
use super::errors::Fail;
use super::outbox::{Outbox, Sink};
use super::server::ServerCtx;
use super::shared::{Registered, StorageState};
use super::stats::{Refused, SERVER};
use super::wire::{Encoding, Incoming, Request, Value};

const LOG_SERVER: &str = "ZEO.asyncio.server";
const LOG_STORAGE: &str = "ZEO.StorageServer";
/// Blob chunks sent by `sendBlob`, as the reference server.
const BLOB_CHUNK: usize = 59_000;
/// A client that connects and says nothing is dropped after this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// Iterators one connection may keep open.
const MAX_ITERATORS: usize = 10_000;
/// Object data one transaction may buffer before its vote (large values travel as blobs,
/// which go to files); past it the transaction fails and the connection is closed.
const MAX_TXN_BYTES: usize = 1 << 30;

type LockWait = Pin<Box<dyn Future<Output = OwnedMutexGuard<()>> + Send>>;

enum Op {
    Store {
        oid: Oid,
        serial: Tid,
        data: Vec<u8>,
    },
    StoreBlob {
        oid: Oid,
        serial: Tid,
        data: Vec<u8>,
        file: PathBuf,
    },
    CheckCurrent {
        oid: Oid,
        serial: Tid,
    },
    Delete {
        oid: Oid,
        serial: Tid,
    },
    Restore {
        oid: Oid,
        serial: Tid,
        data: Option<Vec<u8>>,
        prev: Option<Tid>,
    },
    Undo {
        id: Vec<u8>,
    },
}

impl Op {
    /// The oid a store writes, for "last store per oid wins" (§3.3.5 step 4). Restores are
    /// copies and stay verbatim: a copied transaction may hold several records of one oid.
    fn superseding(&self) -> Option<Oid> {
        match self {
            Op::Store { oid, .. } | Op::StoreBlob { oid, .. } => Some(*oid),
            _ => None,
        }
    }

    /// The oid this op writes (for invalidations).
    fn written(&self) -> Option<Oid> {
        match self {
            Op::Store { oid, .. }
            | Op::StoreBlob { oid, .. }
            | Op::Delete { oid, .. }
            | Op::Restore { oid, .. } => Some(*oid),
            Op::CheckCurrent { .. } | Op::Undo { .. } => None,
        }
    }
}

struct Txn {
    id: Value,
    meta: TxnMeta,
    ops: Vec<Op>,
    /// Bytes of object data in `ops`.
    bytes: usize,
    /// Present between a successful vote and finish/abort.
    commit: Option<Box<dyn Commit>>,
    undo_oids: Vec<Oid>,
    /// When the vote arrived, for the commit latency histogram.
    voted_at: Option<std::time::Instant>,
}

enum Iter {
    Txn {
        cursor: Box<dyn TxnCursor>,
        last: Option<TxnRecord>,
    },
    Records(std::vec::IntoIter<DataRecord>),
}

struct Upload {
    file: std::fs::File,
    path: PathBuf,
}

enum VoteResult {
    Voted(Box<dyn Commit>, Vec<Oid>),
    Conflicts(Vec<Value>),
}

pub struct Conn {
    ctx: Arc<ServerCtx>,
    id: u64,
    peer: String,
    label: String,
    enc: Encoding,
    out: Outbox,
    storage: Option<Arc<StorageState>>,
    read_only: bool,
    /// Accepted on the read-only address: writable registrations are refused.
    read_only_listener: bool,
    txn: Option<Txn>,
    vote_wait: Option<(Value, LockWait)>,
    lock: Option<OwnedMutexGuard<()>>,
    deadline: Option<tokio::time::Instant>,
    iters: HashMap<i64, Iter>,
    next_iid: i64,
    upload: Option<Upload>,
    closing: bool,
    /// Other connections' outboxes holding the invalidations of a commit this connection
    /// finished in its current batch; written when the batch ends, before its own reply.
    held: Vec<Outbox>,
}

/// Serve one accepted connection, its read side `rd` and its write side `sink`, until it
/// closes. `read_only_listener`: it came in on the read-only address.
pub async fn serve<R>(
    ctx: Arc<ServerCtx>,
    rd: R,
    sink: Sink,
    peer: String,
    read_only_listener: bool,
) where
    R: AsyncRead + Unpin + Send + 'static,
{
    let out = Outbox::spawn(sink, ctx.config.max_outbuf);
    let announce: &[u8] = match ctx.config.encoding {
        Encoding::Msgpack => b"M5",
        Encoding::Pickle => b"Z5",
    };
    out.send(announce);
    let mut input = FrameReader::new(rd, ctx.config.max_frame);
    let id = ctx.next_conn.fetch_add(1, Ordering::Relaxed);
    SERVER.connections_total.fetch_add(1, Ordering::Relaxed);
    info!(target: LOG_SERVER, "Connected server protocol {peer}");

    let first = tokio::time::timeout(HANDSHAKE_TIMEOUT, input.next_owned()).await;
    let enc = match first {
        Ok(Ok(Some(hs))) if hs == b"ruok" => {
            let status = ctx.ruok_json();
            out.send(status.as_bytes());
            out.close().await;
            return;
        }
        Ok(Ok(Some(hs))) if hs.len() == 2 && hs[1] == b'5' && hs[0] == b'M' => Encoding::Msgpack,
        Ok(Ok(Some(hs))) if hs.len() == 2 && hs[1] == b'5' && hs[0] == b'Z' => Encoding::Pickle,
        Ok(Ok(Some(hs))) => {
            SERVER.refused(Refused::Handshake);
            error!(target: LOG_SERVER, "bad handshake {}", py_repr(&hs));
            out.kill();
            return;
        }
        Ok(Err(e)) => {
            SERVER.refused(Refused::FrameSize);
            error!(target: LOG_SERVER, "{peer}: {e}");
            out.kill();
            return;
        }
        Ok(Ok(None)) | Err(_) => {
            SERVER.refused(Refused::Handshake);
            out.kill();
            return;
        }
    };
    info!(target: LOG_SERVER, "received handshake {}", py_repr(if enc == Encoding::Msgpack { b"M5" } else { b"Z5" }));

    let mut shutdown = ctx.shutdown.clone();
    let mut conn = Conn {
        label: peer.clone(),
        ctx,
        id,
        peer,
        enc,
        out,
        storage: None,
        read_only: false,
        read_only_listener,
        txn: None,
        vote_wait: None,
        lock: None,
        deadline: None,
        iters: HashMap::new(),
        next_iid: 0,
        upload: None,
        closing: false,
        held: Vec::new(),
    };
    // Frames that came with the handshake.
    conn.on_frames(&mut input).await;
    loop {
        if conn.closing {
            break;
        }
        tokio::select! {
            read = input.fill() => match read {
                Ok(true) => conn.on_frames(&mut input).await,
                Ok(false) => break,
                Err(e) => {
                    debug!(target: LOG_SERVER, "({}) reading: {e}", conn.label);
                    break;
                }
            },
            guard = async {
                match conn.vote_wait.as_mut() {
                    Some((_, f)) => f.await,
                    None => std::future::pending().await,
                }
            },
                if conn.vote_wait.is_some() => {
                conn.on_lock(guard).await;
            }
            () = async {
                match conn.deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            },
                if conn.deadline.is_some() => {
                let secs = conn.ctx.config.transaction_timeout.map_or(0.0, |d| d.as_secs_f64());
                error!(target: LOG_STORAGE, "({}) Transaction timeout after {secs} seconds", conn.label);
                conn.abort_txn();
                break;
            }
            () = conn.out.dead() => break,
            _ = shutdown.changed() => {
                conn.abort_txn();
                break;
            }
        }
    }
    conn.disconnect();
    // What was queued (an error reply, say) still goes out; then the socket closes.
    conn.out.close().await;
}

impl Conn {
    /// Process every complete request in the buffer, in order; their replies go out
    /// together when the batch ends.
    async fn on_frames<R: AsyncRead + Unpin>(&mut self, input: &mut FrameReader<R>) {
        self.out.cork();
        while !self.closing {
            match input.next_frame() {
                Ok(Some(payload)) => self.on_frame(payload).await,
                Ok(None) => break,
                Err(e) => {
                    SERVER.refused(Refused::FrameSize);
                    error!(target: LOG_SERVER, "({}) {e}; closing", self.label);
                    self.closing = true;
                }
            }
        }
        if !self.held.is_empty() {
            self.release_held().await;
        }
        self.out.uncork();
    }

    /// Write the invalidations a commit of this batch pushed to the other clients, ahead of
    /// this connection's own reply (the other clients hear of a commit before the committer,
    /// as with runzeo).
    ///
    /// A client that waits for the commit lock the commit released is given one scheduler
    /// turn first. On this thread its vote then proceeds at once, and its vote reply leaves
    /// in the same `send` as the invalidation ahead of it, one system call and one client
    /// wake-up instead of two; the invalidation is later by that vote's processing, and
    /// still reaches its client before the committer's reply. A client waiting on another
    /// thread, or none, changes nothing.
    async fn release_held(&mut self) {
        let waiters = self
            .storage
            .as_ref()
            .is_some_and(|st| st.stats.waiting.load(Ordering::Relaxed) > 0);
        if waiters {
            tokio::task::yield_now().await;
        }
        for o in self.held.drain(..) {
            o.flush();
        }
    }

    fn send_reply(&self, msgid: &Value, v: Value) {
        let enc = self.enc;
        self.out
            .send_with(|buf| codec::reply_into(enc, msgid, v, buf));
    }

    fn send_error(&self, msgid: &Value, class: &str, state: Value) {
        let enc = self.enc;
        self.out
            .send_with(|buf| codec::error_into(enc, msgid, class, state, buf));
    }

    fn storage(&self) -> Result<&Arc<StorageState>, Fail> {
        self.storage
            .as_ref()
            .ok_or_else(|| Fail::Close("not registered".into()))
    }

    async fn on_frame(&mut self, payload: &[u8]) {
        let req = match codec::decode(self.enc, payload) {
            Ok(Incoming::Heartbeat) => return,
            Ok(Incoming::Call(req)) => req,
            Err(e) => {
                error!(target: LOG_SERVER, "({}) Can't deserialize message: {e}", self.label);
                self.closing = true;
                return;
            }
        };
        // These methods queue their replies themselves (ordered against invalidations, or
        // deferred): called one-way they would answer msgid 0, which a one-way call must never
        // get (§2.1). No real client does it; treat it as a malformed message.
        if req.oneway
            && matches!(
                req.method.as_str(),
                "register"
                    | "lastTransaction"
                    | "getInvalidations"
                    | "loadBefore"
                    | "vote"
                    | "tpc_finish"
            )
        {
            error!(target: LOG_SERVER, "({}) '{}' called one-way; closing", self.label, req.method);
            self.closing = true;
            return;
        }
        let result = self.dispatch(&req).await;
        match result {
            Ok(Some(v)) if !req.oneway => self.send_reply(&req.msgid, v),
            Ok(_) => {}
            Err(Fail::Error(class, state)) => {
                if req.oneway {
                    error!(
                        target: LOG_SERVER,
                        "({}) async '{}' raised exception: {class} {state:?}", self.label, req.method
                    );
                    self.closing = true;
                } else {
                    let f = Fail::Error(class, state);
                    if !f.is_routine() {
                        warn!(target: LOG_SERVER, "({}) {}() raised exception: {f:?}", self.label, req.method);
                    }
                    if let Fail::Error(class, state) = f {
                        self.send_error(&req.msgid, &class, state);
                    }
                }
            }
            Err(Fail::Close(reason)) => {
                error!(target: LOG_SERVER, "({}) {reason}", self.label);
                self.closing = true;
            }
        }
    }

    async fn dispatch(&mut self, req: &Request) -> Result<Option<Value>, Fail> {
        let a = req.args.as_slice();
        if self.storage.is_none() {
            return match req.method.as_str() {
                "register" => self.register(req),
                m => Err(Fail::Close(format!("Invalid method, '{m}'"))),
            };
        }
        match req.method.as_str() {
            "get_info" => Ok(Some(self.get_info()?)),
            "lastTransaction" => self.last_transaction(req),
            "getInvalidations" => self.get_invalidations(req),
            "loadBefore" => self.load_before(req),
            "loadSerial" => {
                let st = self.storage()?;
                let data = st
                    .backend
                    .load_serial(&oid_at(a, 0, "oid")?, &oid_at(a, 1, "serial")?)?;
                Ok(Some(Value::Bytes(data)))
            }
            "getTid" => {
                let tid = self.storage()?.backend.get_tid(&oid_at(a, 0, "oid")?)?;
                Ok(Some(bv(&tid)))
            }
            "history" => self.history(a),
            "record_iternext" => self.record_iternext(a),
            "new_oids" => {
                let n = int_at(a, 0, 100, "n")?.clamp(1, 100) as usize;
                self.new_oids(n).map(Some)
            }
            "new_oid" => match self.new_oids(1)? {
                Value::Tuple(mut v) if !v.is_empty() => Ok(Some(v.swap_remove(0))),
                _ => Err(StoreError::Io("no oid allocated".into()).into()),
            },
            "ping" => Ok(Some(Value::Nil)),
            "server_status" => {
                let st = self.storage()?;
                Ok(Some(Value::Map(
                    st.status(
                        &self.ctx.start,
                        self.ctx.config.transaction_timeout.is_some(),
                    )
                    .into_iter()
                    .map(|(k, v)| (Value::Str(k), v))
                    .collect(),
                )))
            }
            "pack" => self.pack(&req.msgid, a),
            "undoLog" => self.undo_info(a, None).await,
            "undoInfo" => {
                let spec = match arg(a, 2) {
                    Some(Value::Map(m)) => Some(m.clone()),
                    _ => None,
                };
                self.undo_info(a, spec).await
            }
            "iterator_start" => self.iterator_start(a),
            "iterator_next" => self.iterator_next(a),
            "iterator_record_start" => self.iterator_record_start(a),
            "iterator_record_next" => self.iterator_record_next(a),
            "iterator_gc" => {
                if let Some(Value::Tuple(ids) | Value::List(ids)) = arg(a, 0) {
                    for id in ids {
                        if let Value::Int(i) = id {
                            self.iters.remove(i);
                        }
                    }
                }
                Ok(Some(Value::Nil))
            }
            "set_client_label" => {
                let label = str_of(need(a, 0, "label")?, "label")?;
                self.label = format!("{label} {}", self.peer);
                Ok(Some(Value::Nil))
            }
            "tpc_begin" => self.tpc_begin(a),
            "storea" => {
                let op = Op::Store {
                    oid: oid_at(a, 0, "oid")?,
                    serial: serial_at(a, 1)?,
                    data: bytes_of(need(a, 2, "data")?, "data")?,
                };
                self.record(need(a, 3, "txn")?, op, true)
            }
            "checkCurrentSerialInTransaction" => {
                let op = Op::CheckCurrent {
                    oid: oid_at(a, 0, "oid")?,
                    serial: serial_at(a, 1)?,
                };
                self.record(need(a, 2, "txn")?, op, false)
            }
            "deleteObject" => {
                let op = Op::Delete {
                    oid: oid_at(a, 0, "oid")?,
                    serial: serial_at(a, 1)?,
                };
                self.record(need(a, 2, "txn")?, op, true)
            }
            "restorea" => {
                let data = match need(a, 2, "data")? {
                    Value::Nil => None,
                    v => Some(bytes_of(v, "data")?),
                };
                let op = Op::Restore {
                    oid: oid_at(a, 0, "oid")?,
                    serial: serial_at(a, 1)?,
                    data,
                    prev: opt_tid_at(a, 3, "prev_txn")?,
                };
                self.record(need(a, 4, "txn")?, op, true)
            }
            "undoa" => {
                let op = Op::Undo {
                    id: bytes_of(need(a, 0, "transaction id")?, "transaction id")?,
                };
                self.record(need(a, 1, "txn")?, op, false)
            }
            "storeBlobStart" => self.blob_start(),
            "storeBlobChunk" => {
                let chunk = match need(a, 0, "chunk")? {
                    Value::Bytes(b) => b,
                    _ => return Err(Fail::type_error("blob chunk must be bytes")),
                };
                let up = self.upload.as_mut().ok_or_else(|| {
                    Fail::args("builtins.ValueError", "no blob upload in progress")
                })?;
                up.file
                    .write_all(chunk)
                    .map_err(|e| Fail::from(StoreError::from(e)))?;
                Ok(Some(Value::Nil))
            }
            "storeBlobEnd" => self.blob_end(a),
            "storeBlobShared" => self.blob_shared(a),
            "vote" => self.vote(req),
            "tpc_finish" => self.tpc_finish(req).await,
            "tpc_abort" => {
                let given = need(a, 0, "txn")?;
                if self.read_only {
                    return Err(Fail::read_only());
                }
                if self.txn.as_ref().is_some_and(|t| t.id == *given) {
                    self.abort_txn();
                }
                Ok(Some(Value::Nil))
            }
            "sendBlob" => self.send_blob(req).await,
            m => Err(Fail::Close(format!("Invalid method, '{m}'"))),
        }
    }

    fn register(&mut self, req: &Request) -> Result<Option<Value>, Fail> {
        let a = req.args.as_slice();
        let name = str_of(need(a, 0, "storage id")?, "storage id")?;
        if a.len() > 2 {
            return Err(Fail::type_error(
                "register() takes 2 arguments (credentials are not supported)",
            ));
        }
        let Some(st) = self.ctx.storages.get(&name).cloned() else {
            warn!(target: LOG_STORAGE, "({}) unknown storage_id: {name}", self.label);
            return Err(Fail::args(
                "builtins.ValueError",
                format!("unknown storage: {name}"),
            ));
        };
        let want_ro = truthy(arg(a, 1));
        let server_ro = self.ctx.config.read_only
            || st.backend.is_read_only()
            || self.read_only_listener
            || st.writes_refused().is_some();
        if !want_ro && server_ro {
            // ReadOnlyError is what makes a client with read-only-fallback register
            // read-only here and look for a writable server meanwhile.
            if let Some(why) = st.writes_refused() {
                info!(target: LOG_STORAGE, "({}) writable registration refused: {why}", self.label);
            }
            return Err(Fail::read_only());
        }
        self.read_only = want_ro || server_ro;
        {
            let mut seq = st.seq();
            let last = st.backend.last_transaction();
            seq.conns.insert(
                self.id,
                Registered {
                    outbox: self.out.clone(),
                    encoding: self.enc,
                },
            );
            // Queued under the sequencer: no invalidation after `last` can precede it.
            self.send_reply(&req.msgid, bv(&last));
        }
        st.stats.connections.fetch_add(1, Ordering::Relaxed);
        self.storage = Some(st);
        Ok(None)
    }

    fn get_info(&self) -> Result<Value, Fail> {
        let st = self.storage()?;
        let info = st.backend.info();
        let ifaces = info
            .interfaces
            .iter()
            .map(|(m, n)| Value::Tuple(vec![sv(m), sv(n)]))
            .collect();
        Ok(Value::Map(vec![
            (sv("length"), Value::Int(info.length as i64)),
            (sv("size"), Value::Int(info.size as i64)),
            (sv("name"), Value::Str(info.name)),
            (sv("supportsUndo"), Value::Bool(info.supports_undo)),
            (
                sv("supports_record_iternext"),
                Value::Bool(info.supports_record_iternext),
            ),
            (sv("supports_pack"), Value::Bool(true)),
            (sv("interfaces"), Value::Tuple(ifaces)),
        ]))
    }

    fn disconnect(&mut self) {
        let in_txn = if self.lock.is_some() {
            Some("locked")
        } else if self.txn.is_some() {
            Some("unlocked")
        } else {
            None
        };
        self.abort_txn();
        // Normally written when the batch ended; never left unsent.
        for o in self.held.drain(..) {
            o.flush();
        }
        if let Some(st) = &self.storage {
            st.seq().conns.remove(&self.id);
            st.stats.connections.fetch_sub(1, Ordering::Relaxed);
        }
        self.iters.clear();
        match in_txn {
            Some(kind) => info!(
                target: LOG_SERVER,
                "({}) disconnected during {kind} transaction", self.label
            ),
            None => info!(target: LOG_SERVER, "({}) disconnected", self.label),
        }
    }
}
