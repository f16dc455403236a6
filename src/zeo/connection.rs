//! One client connection: handshake, then frame → message → command → storage.
//!
//! One task per connection, on the shard (thread) it was given at accept: it reads the
//! socket, cuts frames, and processes requests strictly in arrival order (§2.1), owning all
//! of the connection's state. Its replies go to the outbox, which the task writes itself
//! when a batch of requests is done (the outbox's writer task only takes over when the
//! client does not keep up). The only request that waits is `vote` (for the commit lock); it
//! waits inside the `select!` below so later requests (loads from other client threads,
//! `tpc_abort`) keep being served meanwhile.

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
/// closes.
pub async fn serve<R>(ctx: Arc<ServerCtx>, rd: R, sink: Sink, peer: String)
where
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
            error!(target: LOG_SERVER, "bad handshake {}", py_repr(&hs));
            out.kill();
            return;
        }
        Ok(Err(e)) => {
            error!(target: LOG_SERVER, "{peer}: {e}");
            out.kill();
            return;
        }
        Ok(Ok(None)) | Err(_) => {
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

/// The read side of a connection, cut into frames.
///
/// Requests are read into one buffer and processed as soon as they are complete, on the
/// connection's own task: a pipelining client's requests arrive many per segment, and one
/// wake-up and one `recv` then serve them all. Frames are processed before more is read, so
/// the buffer holds at most what one `recv` brought plus one incomplete frame, which is
/// bounded by `max-frame-size`.
struct FrameReader<R> {
    rd: R,
    buf: Vec<u8>,
    /// Start of the first unprocessed byte.
    pos: usize,
    max: usize,
}

/// Bytes asked of each `recv`.
const READ_CHUNK: usize = 64 << 10;
/// Buffer capacity kept between large frames.
const KEEP_READ_CAPACITY: usize = 1 << 20;

impl<R: AsyncRead + Unpin> FrameReader<R> {
    fn new(rd: R, max: usize) -> Self {
        FrameReader {
            rd,
            buf: Vec::with_capacity(READ_CHUNK),
            pos: 0,
            max,
        }
    }

    /// The next complete frame's payload, if the buffer holds one; an error for a frame
    /// larger than allowed.
    fn next_frame(&mut self) -> Result<Option<&[u8]>, String> {
        let avail = &self.buf[self.pos..];
        let Some(len) = avail.first_chunk::<4>() else {
            return Ok(None);
        };
        let n = u32::from_be_bytes(*len) as usize;
        if n > self.max {
            return Err(format!(
                "frame of {n} bytes exceeds the limit of {} bytes",
                self.max
            ));
        }
        if avail.len() < 4 + n {
            return Ok(None);
        }
        let start = self.pos + 4;
        self.pos = start + n;
        Ok(Some(&self.buf[start..start + n]))
    }

    /// Read more; false at end of stream. Cancel-safe (a read that did not finish took
    /// nothing), so it can wait in a `select!`.
    async fn fill(&mut self) -> std::io::Result<bool> {
        // Move the incomplete frame to the front, and give back a large frame's memory.
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            if self.buf.capacity() > KEEP_READ_CAPACITY {
                self.buf = Vec::with_capacity(READ_CHUNK);
            }
        } else if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        // Room for the frame being read, grown with the data actually received so a
        // lying length costs nothing.
        let want = match self.buf.first_chunk::<4>() {
            Some(len) => (4 + u32::from_be_bytes(*len) as usize).saturating_sub(self.buf.len()),
            None => 0,
        };
        self.buf.reserve(want.clamp(READ_CHUNK, 1 << 20));
        Ok(self.rd.read_buf(&mut self.buf).await? > 0)
    }

    /// The next frame, reading as needed (the handshake); None at end of stream.
    async fn next_owned(&mut self) -> Result<Option<Vec<u8>>, String> {
        loop {
            if let Some(f) = self.next_frame()? {
                return Ok(Some(f.to_vec()));
            }
            match self.fill().await {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

/// Python's repr of a bytes value, for log lines administrators know.
fn py_repr(b: &[u8]) -> String {
    let mut s = String::from("b'");
    for &c in b.iter().take(64) {
        match c {
            b'\\' => s.push_str("\\\\"),
            b'\'' => s.push_str("\\'"),
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s.push('\'');
    s
}

// ---------------------------------------------------------------------------------------
// Argument helpers: wrong types become TypeError replies, never panics.

fn arg(args: &[Value], i: usize) -> Option<&Value> {
    args.get(i)
}

fn need<'a>(args: &'a [Value], i: usize, what: &str) -> Result<&'a Value, Fail> {
    args.get(i)
        .ok_or_else(|| Fail::type_error(format!("missing argument {what}")))
}

fn id8(v: &Value, what: &str) -> Result<[u8; 8], Fail> {
    match v {
        Value::Bytes(b) if b.len() == 8 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            Ok(a)
        }
        // Old test code passes '\0' * 8 as a text serial; Python storages accept it.
        Value::Str(s) if s.chars().count() == 8 && s.chars().all(|c| (c as u32) < 256) => {
            let mut a = [0u8; 8];
            for (slot, c) in a.iter_mut().zip(s.chars()) {
                *slot = c as u32 as u8;
            }
            Ok(a)
        }
        _ => Err(Fail::type_error(format!("{what} must be 8 bytes"))),
    }
}

fn oid_at(args: &[Value], i: usize, what: &str) -> Result<Oid, Fail> {
    id8(need(args, i, what)?, what)
}

/// A store's serial: None means "new object" (z64), as Python storages take it.
fn serial_at(args: &[Value], i: usize) -> Result<Tid, Fail> {
    match args.get(i) {
        None | Some(Value::Nil) => Ok([0; 8]),
        Some(v) => id8(v, "serial"),
    }
}

fn opt_tid_at(args: &[Value], i: usize, what: &str) -> Result<Option<Tid>, Fail> {
    match args.get(i) {
        None | Some(Value::Nil) => Ok(None),
        Some(v) => id8(v, what).map(Some),
    }
}

fn bytes_of(v: &Value, what: &str) -> Result<Vec<u8>, Fail> {
    match v {
        Value::Bytes(b) => Ok(b.clone()),
        Value::Str(s) => Ok(s.as_bytes().to_vec()),
        Value::Nil => Ok(Vec::new()),
        _ => Err(Fail::type_error(format!("{what} must be bytes"))),
    }
}

fn str_of(v: &Value, what: &str) -> Result<String, Fail> {
    match v {
        Value::Str(s) => Ok(s.clone()),
        Value::Bytes(b) => Ok(String::from_utf8_lossy(b).into_owned()),
        _ => Err(Fail::type_error(format!("{what} must be a string"))),
    }
}

fn int_at(args: &[Value], i: usize, default: i64, what: &str) -> Result<i64, Fail> {
    match args.get(i) {
        None => Ok(default),
        Some(Value::Int(n)) => Ok(*n),
        Some(Value::Bool(b)) => Ok(i64::from(*b)),
        Some(_) => Err(Fail::type_error(format!("{what} must be an integer"))),
    }
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Nil) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Int(i)) => *i != 0,
        Some(Value::Float(f)) => *f != 0.0,
        Some(Value::Bytes(b)) => !b.is_empty(),
        Some(Value::Str(s)) => !s.is_empty(),
        Some(Value::List(l) | Value::Tuple(l)) => !l.is_empty(),
        Some(Value::Map(m)) => !m.is_empty(),
        Some(Value::Global { .. }) => true,
    }
}

fn bv(b: &[u8]) -> Value {
    Value::Bytes(b.to_vec())
}

fn sv(s: &str) -> Value {
    Value::Str(s.to_string())
}

fn oid_list(oids: &[Oid]) -> Value {
    Value::Tuple(oids.iter().map(|o| bv(o)).collect())
}

fn tid_time(tid: &Tid) -> f64 {
    crate::storage::timestamp::tid_time(tid)
}

/// Extension items as map entries (an extension that is not a map contributes nothing).
fn ext_items(ext: &Value) -> Vec<(Value, Value)> {
    match ext {
        Value::Map(m) => m.clone(),
        _ => Vec::new(),
    }
}

fn set_key(map: &mut Vec<(Value, Value)>, key: &str, v: Value) {
    let k = sv(key);
    if let Some(slot) = map.iter_mut().find(|(mk, _)| *mk == k) {
        slot.1 = v;
    } else {
        map.push((k, v));
    }
}

fn undo_entry_map(e: &UndoEntry) -> Vec<(Value, Value)> {
    // Reference quirk kept (§12.16): extension items override the standard keys.
    let mut m = vec![
        (sv("id"), bv(&e.id)),
        (sv("time"), Value::Float(tid_time(&e.tid))),
        (sv("user_name"), bv(&e.user)),
        (sv("size"), Value::Int(e.size as i64)),
        (sv("description"), bv(&e.description)),
    ];
    for (k, v) in ext_items(&e.extension) {
        if let Some(slot) = m.iter_mut().find(|(mk, _)| *mk == k) {
            slot.1 = v;
        } else {
            m.push((k, v));
        }
    }
    m
}

/// undoInfo's specification: every (key, value) must match; a `ZopeUndo.Prefix` value
/// matches by prefix.
fn spec_matches(spec: &[(Value, Value)], entry: &[(Value, Value)]) -> bool {
    spec.iter().all(|(k, want)| {
        let Some((_, have)) = entry.iter().find(|(ek, _)| ek == k) else {
            return false;
        };
        match want {
            Value::Global { module, args, .. } if module == "ZopeUndo.Prefix" => {
                let prefix = match args.first() {
                    Some(Value::Str(s)) => s.as_bytes().to_vec(),
                    Some(Value::Bytes(b)) => b.clone(),
                    _ => return false,
                };
                match have {
                    Value::Str(s) => s.as_bytes().starts_with(&prefix),
                    Value::Bytes(b) => b.starts_with(&prefix),
                    _ => false,
                }
            }
            _ => {
                have == want
                    || match (have, want) {
                        (Value::Bytes(h), Value::Str(w)) => h == w.as_bytes(),
                        (Value::Str(h), Value::Bytes(w)) => h.as_bytes() == w.as_slice(),
                        _ => false,
                    }
            }
        }
    })
}

/// Only plain file names from the client's temporary-file scheme (§8.2).
fn valid_shared_blob_name(name: &str) -> bool {
    if name.contains('/') || name.contains('\\') || name.contains('\0') {
        return false;
    }
    name.ends_with(".tmp")
        || name
            .len()
            .checked_sub(5)
            .and_then(|i| name.get(i..i + 4))
            .is_some_and(|s| s == ".tmp")
}

/// The blob directory of an oid in the bushy layout: one `0x..` level per oid byte.
fn bushy_dir(blob_dir: &Path, oid: &Oid) -> PathBuf {
    let mut p = blob_dir.to_path_buf();
    for b in oid {
        p.push(format!("0x{b:02x}"));
    }
    p
}

/// The blob directory of an oid per the directory's `.layout` (bushy unless it says lawn).
pub fn oid_blob_dir(blob_dir: &Path, oid: &Oid) -> PathBuf {
    let layout = std::fs::read_to_string(blob_dir.join(".layout")).unwrap_or_default();
    if layout.trim() == "lawn" {
        blob_dir.join(repr_id(oid))
    } else {
        bushy_dir(blob_dir, oid)
    }
}

/// `oid_repr`/`tid_repr`: 0x + hex without leading zero bytes.
pub fn repr_id(id: &[u8; 8]) -> String {
    let v = u64::from_be_bytes(*id);
    let s = format!("{v:x}");
    if s.len() % 2 == 1 {
        format!("0x0{s}")
    } else {
        format!("0x{s}")
    }
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
            "pack" => Err(Fail::args(
                "builtins.NotImplementedError",
                "pack is not available on this zodbctl server yet; \
                 pack the storage offline or with runzeo",
            )),
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
        let server_ro = self.ctx.config.read_only || st.backend.is_read_only();
        if !want_ro && server_ro {
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
            // Honest about what this server cannot do yet: `pack` answers an error.
            (sv("supports_pack"), Value::Bool(false)),
            (sv("interfaces"), Value::Tuple(ifaces)),
        ]))
    }

    fn last_transaction(&self, req: &Request) -> Result<Option<Value>, Fail> {
        let st = self.storage()?;
        let _seq = st.seq();
        self.send_reply(&req.msgid, bv(&st.backend.last_transaction()));
        Ok(None)
    }

    fn get_invalidations(&self, req: &Request) -> Result<Option<Value>, Fail> {
        let st = self.storage()?;
        let tid = oid_at(&req.args, 0, "tid")?;
        let seq = st.seq();
        let mut found = StorageState::invalidations_since(&seq, &tid);
        if found.is_none() {
            found = self.invalidations_by_age(st, &tid);
        }
        match found {
            Some((latest, oids)) => {
                info!(
                    target: LOG_STORAGE,
                    "({}) Return {} invalidations up to tid {}",
                    self.label,
                    oids.len(),
                    hex(&latest)
                );
                self.send_reply(&req.msgid, Value::Tuple(vec![bv(&latest), oid_list(&oids)]));
            }
            None => {
                info!(target: LOG_STORAGE, "({}) tid to old for invq {}", self.label, hex(&tid));
                self.send_reply(&req.msgid, Value::Nil);
            }
        }
        Ok(None)
    }

    /// The `invalidation-age` fallback: scan the storage's transactions after `tid`.
    fn invalidations_by_age(&self, st: &StorageState, tid: &Tid) -> Option<(Tid, Vec<Oid>)> {
        let age = self.ctx.config.invalidation_age?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs_f64();
        if now - tid_time(tid) > age {
            return None;
        }
        let start = u64::from_be_bytes(*tid).checked_add(1)?.to_be_bytes();
        let mut cursor = st.backend.iterator(Some(start), None).ok()?;
        let mut latest = None;
        let mut seen = HashSet::new();
        let mut oids = Vec::new();
        while let Ok(Some(t)) = cursor.next_txn() {
            latest = Some(t.tid);
            for r in t.records {
                if seen.insert(r.oid) {
                    oids.push(r.oid);
                }
            }
        }
        latest.map(|l| (l, oids))
    }

    fn load_before(&self, req: &Request) -> Result<Option<Value>, Fail> {
        let a = req.args.as_slice();
        let st = self.storage()?;
        st.stats.loads.fetch_add(1, Ordering::Relaxed);
        let oid = oid_at(a, 0, "oid")?;
        let before = oid_at(a, 1, "tid")?;
        let _visible = st.visibility.read().unwrap_or_else(|e| e.into_inner());
        let v = match st.backend.load_before(&oid, &before)? {
            Some((data, start, end)) => Value::Tuple(vec![
                Value::Bytes(data),
                bv(&start),
                end.map_or(Value::Nil, |e| bv(&e)),
            ]),
            None => Value::Nil,
        };
        self.send_reply(&req.msgid, v);
        Ok(None)
    }

    fn history(&self, a: &[Value]) -> Result<Option<Value>, Fail> {
        let st = self.storage()?;
        let oid = oid_at(a, 0, "oid")?;
        let size = int_at(a, 1, 1, "size")?.max(1) as usize;
        let entries = st.backend.history(&oid, size)?;
        Ok(Some(Value::Tuple(
            entries
                .iter()
                .map(|e| {
                    // Standard keys override extension items here (§12.16).
                    let mut m = ext_items(&e.extension);
                    set_key(&mut m, "time", Value::Float(tid_time(&e.tid)));
                    set_key(&mut m, "user_name", bv(&e.user));
                    set_key(&mut m, "description", bv(&e.description));
                    set_key(&mut m, "tid", bv(&e.tid));
                    set_key(&mut m, "size", Value::Int(e.size as i64));
                    Value::Map(m)
                })
                .collect(),
        )))
    }

    fn record_iternext(&self, a: &[Value]) -> Result<Option<Value>, Fail> {
        let st = self.storage()?;
        if !st.backend.info().supports_record_iternext {
            return Err(Fail::args(
                "builtins.AttributeError",
                "this storage has no record_iternext",
            ));
        }
        let next = opt_tid_at(a, 0, "next")?;
        let (oid, tid, data, next) = st.backend.record_iternext(next.as_ref())?;
        Ok(Some(Value::Tuple(vec![
            bv(&oid),
            bv(&tid),
            Value::Bytes(data),
            next.map_or(Value::Nil, |n| bv(&n)),
        ])))
    }

    fn new_oids(&self, n: usize) -> Result<Value, Fail> {
        if self.read_only {
            return Err(Fail::read_only());
        }
        let oids = self.storage()?.backend.new_oids(n)?;
        Ok(oid_list(&oids))
    }

    async fn undo_info(
        // `&mut` although nothing changes: the future then needs `Conn: Send`, not `Sync`.
        &mut self,
        a: &[Value],
        spec: Option<Vec<(Value, Value)>>,
    ) -> Result<Option<Value>, Fail> {
        let st = self.storage()?;
        if !st.backend.info().supports_undo {
            return Ok(Some(Value::Tuple(vec![])));
        }
        let first = int_at(a, 0, 0, "first")?;
        let last = int_at(a, 1, -20, "last")?;
        // A filtered undo log may read far back into the file: off the shard's thread.
        let backend = Arc::clone(&st.backend);
        let entries = tokio::task::spawn_blocking(move || {
            let filter = |e: &UndoEntry| match &spec {
                Some(spec) => spec_matches(spec, &undo_entry_map(e)),
                None => true,
            };
            backend.undo_log(first, last, &filter)
        })
        .await
        .map_err(|e| Fail::Close(format!("undo log failed: {e}")))??;
        Ok(Some(Value::Tuple(
            entries
                .iter()
                .map(|e| Value::Map(undo_entry_map(e)))
                .collect(),
        )))
    }

    fn add_iter(&mut self, it: Iter) -> Result<Option<Value>, Fail> {
        if self.iters.len() >= MAX_ITERATORS {
            return Err(Fail::args(
                "builtins.ValueError",
                "too many open iterators on this connection",
            ));
        }
        let iid = self.next_iid;
        self.next_iid += 1;
        self.iters.insert(iid, it);
        Ok(Some(Value::Int(iid)))
    }

    fn iterator_start(&mut self, a: &[Value]) -> Result<Option<Value>, Fail> {
        let start = opt_tid_at(a, 0, "start")?;
        let stop = opt_tid_at(a, 1, "stop")?;
        let cursor = self.storage()?.backend.iterator(start, stop)?;
        self.add_iter(Iter::Txn { cursor, last: None })
    }

    fn iterator_next(&mut self, a: &[Value]) -> Result<Option<Value>, Fail> {
        let iid = int_at(a, 0, 0, "iid")?;
        let Some(Iter::Txn { cursor, last }) = self.iters.get_mut(&iid) else {
            return Err(Fail::new(
                "builtins.KeyError",
                Value::Tuple(vec![Value::Int(iid)]),
            ));
        };
        match cursor.next_txn()? {
            Some(t) => {
                let v = Value::Tuple(vec![
                    bv(&t.tid),
                    Value::Str((t.status as char).to_string()),
                    bv(&t.user),
                    bv(&t.description),
                    match &t.extension {
                        Value::Map(_) => t.extension.clone(),
                        _ => Value::Map(vec![]),
                    },
                ]);
                *last = Some(t);
                Ok(Some(v))
            }
            None => {
                self.iters.remove(&iid);
                Ok(Some(Value::Nil))
            }
        }
    }

    fn iterator_record_start(&mut self, a: &[Value]) -> Result<Option<Value>, Fail> {
        let iid = int_at(a, 0, 0, "iid")?;
        let tid = oid_at(a, 1, "tid")?;
        let records = match self.iters.get(&iid) {
            Some(Iter::Txn { last: Some(t), .. }) if t.tid == tid => t.records.clone(),
            _ => {
                return Err(Fail::args(
                    "builtins.Exception",
                    format!("Out-of-order request for record iterator for {}", hex(&tid)),
                ));
            }
        };
        self.add_iter(Iter::Records(records.into_iter()))
    }

    fn iterator_record_next(&mut self, a: &[Value]) -> Result<Option<Value>, Fail> {
        let iid = int_at(a, 0, 0, "iid")?;
        let Some(Iter::Records(it)) = self.iters.get_mut(&iid) else {
            return Err(Fail::new(
                "builtins.KeyError",
                Value::Tuple(vec![Value::Int(iid)]),
            ));
        };
        match it.next() {
            Some(r) => Ok(Some(Value::Tuple(vec![
                bv(&r.oid),
                bv(&r.tid),
                r.data.map_or(Value::Nil, Value::Bytes),
                r.data_txn.map_or(Value::Nil, |t| bv(&t)),
            ]))),
            None => {
                self.iters.remove(&iid);
                Ok(Some(Value::Nil))
            }
        }
    }

    fn tpc_begin(&mut self, a: &[Value]) -> Result<Option<Value>, Fail> {
        if self.read_only {
            return Err(Fail::read_only());
        }
        let id = need(a, 0, "txn")?.clone();
        if let Some(t) = &self.txn {
            if t.id == id {
                info!(target: LOG_STORAGE, "({}) duplicate tpc_begin", self.label);
                return Ok(Some(Value::Nil));
            }
            return Err(Fail::args(
                "ZODB.POSException.StorageTransactionError",
                "Multiple simultaneous tpc_begin requests from one client.",
            ));
        }
        let status = match arg(a, 5) {
            Some(Value::Str(s)) => s.bytes().next().unwrap_or(b' '),
            Some(Value::Bytes(b)) => b.first().copied().unwrap_or(b' '),
            _ => b' ',
        };
        let meta = TxnMeta {
            user: bytes_of(arg(a, 1).unwrap_or(&Value::Nil), "user")?,
            description: bytes_of(arg(a, 2).unwrap_or(&Value::Nil), "description")?,
            extension: match arg(a, 3) {
                None | Some(Value::Nil) => Value::Map(vec![]),
                Some(v) => v.clone(),
            },
            tid: opt_tid_at(a, 4, "tid")?,
            status,
        };
        self.txn = Some(Txn {
            id,
            meta,
            ops: Vec::new(),
            bytes: 0,
            commit: None,
            undo_oids: Vec::new(),
        });
        if let Some(st) = &self.storage {
            st.stats.active_txns.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Some(Value::Nil))
    }

    /// Check that `given` is the connection's transaction.
    fn txn_for(&mut self, given: &Value) -> Result<&mut Txn, Fail> {
        match &self.txn {
            Some(t) if t.id == *given => {}
            Some(t) => return Err(Fail::txn_error(Some(&t.id), given)),
            None => return Err(Fail::txn_error(None, given)),
        }
        self.txn
            .as_mut()
            .ok_or_else(|| Fail::txn_error(None, given))
    }

    fn record(&mut self, given: &Value, op: Op, counts: bool) -> Result<Option<Value>, Fail> {
        let txn = self.txn_for(given)?;
        if txn.commit.is_some() {
            return Err(Fail::args(
                "ZODB.POSException.StorageTransactionError",
                "the transaction has already voted",
            ));
        }
        txn.bytes += match &op {
            Op::Store { data, .. } | Op::StoreBlob { data, .. } => data.len(),
            Op::Restore { data, .. } => data.as_ref().map_or(0, Vec::len),
            _ => 0,
        };
        if txn.bytes > MAX_TXN_BYTES {
            return Err(Fail::args(
                "ZODB.POSException.StorageTransactionError",
                format!(
                    "transaction data exceeds {MAX_TXN_BYTES} bytes; store large values as blobs"
                ),
            ));
        }
        txn.ops.push(op);
        if counts {
            if let Some(st) = &self.storage {
                st.stats.stores.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(Some(Value::Nil))
    }

    fn blob_tmp_dir(&self) -> Result<PathBuf, Fail> {
        let st = self.storage()?;
        let dir = st
            .backend
            .blob_dir()
            .ok_or_else(|| {
                Fail::args(
                    "ZODB.POSException.Unsupported",
                    "this storage has no blob directory",
                )
            })?
            .join("tmp");
        std::fs::create_dir_all(&dir).map_err(|e| Fail::from(StoreError::from(e)))?;
        Ok(dir)
    }

    fn blob_start(&mut self) -> Result<Option<Value>, Fail> {
        if self.upload.is_some() {
            return Err(Fail::args(
                "builtins.ValueError",
                "a blob upload is already in progress",
            ));
        }
        let dir = self.blob_tmp_dir()?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        for attempt in 0..100u32 {
            let path = dir.join(format!(
                "zeo-{}-{}-{nanos:x}-{attempt}.tmp",
                std::process::id(),
                self.id
            ));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    self.upload = Some(Upload { file, path });
                    return Ok(Some(Value::Nil));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(StoreError::from(e).into()),
            }
        }
        Err(StoreError::Io("cannot create a blob temporary file".into()).into())
    }

    fn blob_end(&mut self, a: &[Value]) -> Result<Option<Value>, Fail> {
        let up = self
            .upload
            .take()
            .ok_or_else(|| Fail::args("builtins.ValueError", "no blob upload in progress"))?;
        let parsed = (|| {
            Ok::<_, Fail>((
                oid_at(a, 0, "oid")?,
                serial_at(a, 1)?,
                bytes_of(need(a, 2, "data")?, "data")?,
                need(a, 3, "txn")?.clone(),
            ))
        })();
        let (oid, serial, data, given) = match parsed {
            Ok(p) => p,
            Err(e) => {
                let _ = std::fs::remove_file(&up.path);
                return Err(e);
            }
        };
        drop(up.file);
        let op = Op::StoreBlob {
            oid,
            serial,
            data,
            file: up.path.clone(),
        };
        let r = self.record(&given, op, false);
        if r.is_err() {
            let _ = std::fs::remove_file(&up.path);
        }
        r
    }

    fn blob_shared(&mut self, a: &[Value]) -> Result<Option<Value>, Fail> {
        let oid = oid_at(a, 0, "oid")?;
        let serial = serial_at(a, 1)?;
        let data = bytes_of(need(a, 2, "data")?, "data")?;
        let name = str_of(need(a, 3, "filename")?, "filename")?;
        let given = need(a, 4, "txn")?.clone();
        if !valid_shared_blob_name(&name) {
            error!(
                target: LOG_STORAGE,
                "({}) We're under attack! (bad filename to storeBlobShared, {name:?})", self.label
            );
            return Err(Fail::args(
                "builtins.ValueError",
                format!("bad blob file name {name:?}"),
            ));
        }
        let blob_dir = self
            .storage()?
            .backend
            .blob_dir()
            .ok_or_else(|| {
                Fail::args(
                    "ZODB.POSException.Unsupported",
                    "this storage has no blob directory",
                )
            })?
            .to_path_buf();
        let file = oid_blob_dir(&blob_dir, &oid).join(name);
        let op = Op::StoreBlob {
            oid,
            serial,
            data,
            file,
        };
        self.record(&given, op, false)
    }

    fn vote(&mut self, req: &Request) -> Result<Option<Value>, Fail> {
        let given = need(&req.args, 0, "txn")?.clone();
        if self.read_only {
            return Err(Fail::read_only());
        }
        self.txn_for(&given)?;
        if self.vote_wait.is_some() {
            return Err(Fail::args(
                "ZODB.POSException.StorageTransactionError",
                "Already voting (waiting)",
            ));
        }
        if self.lock.is_some() {
            return Err(Fail::args(
                "ZODB.POSException.StorageTransactionError",
                "Already voting (locked)",
            ));
        }
        let st = Arc::clone(self.storage()?);
        let waiting = st.stats.waiting.fetch_add(1, Ordering::Relaxed) + 1;
        log_lock(&st.id, "queue lock", waiting);
        let fut: LockWait = Box::pin(Arc::clone(&st.commit_lock).lock_owned());
        self.vote_wait = Some((req.msgid.clone(), fut));
        Ok(None)
    }

    /// The commit lock was granted to this connection's pending vote.
    async fn on_lock(&mut self, guard: OwnedMutexGuard<()>) {
        let Some((msgid, _)) = self.vote_wait.take() else {
            return;
        };
        let Some(st) = self.storage.clone() else {
            return;
        };
        let waiting = st.stats.waiting.fetch_sub(1, Ordering::Relaxed) - 1;
        log_lock(&st.id, "dequeue lock", waiting);
        debug!(target: LOG_STORAGE, "({}) holds the commit lock", self.label);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        st.set_lock_time(Some(now));
        let Some(mut txn) = self.txn.take() else {
            st.set_lock_time(None);
            return;
        };
        // Small transactions are written in place (a pwrite; the sync comes at finish); large
        // ones, blob moves that may copy across file systems, and undo (which reads history)
        // leave the shard's thread, whose other connections go on meanwhile.
        let heavy = txn.bytes > (1 << 20)
            || txn
                .ops
                .iter()
                .any(|op| matches!(op, Op::StoreBlob { .. } | Op::Undo { .. }));
        let result = if heavy {
            let shared = Arc::clone(&st);
            match tokio::task::spawn_blocking(move || {
                let r = replay(&shared, &mut txn);
                (txn, r)
            })
            .await
            {
                Ok((t, r)) => {
                    txn = t;
                    r
                }
                Err(e) => {
                    // The transaction went down with the blocking task; nothing was
                    // published. Close, as for any server-side failure mid-commit.
                    st.set_lock_time(None);
                    error!(target: LOG_STORAGE, "({}) vote failed: {e}", self.label);
                    self.closing = true;
                    return;
                }
            }
        } else {
            replay(&st, &mut txn)
        };
        let txn = self.txn.insert(txn);
        match result {
            Ok(VoteResult::Voted(commit, undo_oids)) => {
                debug!(target: LOG_STORAGE, "({}) voted {}", self.label, hex(&commit.tid()));
                let reply = oid_list(&undo_oids);
                txn.commit = Some(commit);
                txn.undo_oids = undo_oids;
                self.lock = Some(guard);
                self.deadline = self
                    .ctx
                    .config
                    .transaction_timeout
                    .map(|d| tokio::time::Instant::now() + d);
                self.send_reply(&msgid, reply);
            }
            Ok(VoteResult::Conflicts(maps)) => {
                // Keep the transaction and its log: the client resolves and votes again.
                st.set_lock_time(None);
                drop(guard);
                log_lock(&st.id, "unlock", st.stats.waiting.load(Ordering::Relaxed));
                self.send_reply(&msgid, Value::List(maps));
            }
            Err(e) => {
                st.set_lock_time(None);
                drop(guard);
                log_lock(&st.id, "unlock", st.stats.waiting.load(Ordering::Relaxed));
                if matches!(e, StoreError::Conflict { .. }) {
                    st.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                }
                self.abort_txn();
                let f = Fail::from(e);
                if !f.is_routine() {
                    warn!(target: LOG_SERVER, "({}) vote() raised exception: {f:?}", self.label);
                }
                if let Fail::Error(class, state) = f {
                    self.send_error(&msgid, &class, state);
                }
            }
        }
    }

    async fn tpc_finish(&mut self, req: &Request) -> Result<Option<Value>, Fail> {
        let a = req.args.as_slice();
        let given = need(a, 0, "txn")?.clone();
        let st = Arc::clone(self.storage()?);
        let txn = self.txn_for(&given)?;
        let Some(commit) = txn.commit.take() else {
            return Err(Fail::args(
                "ZODB.POSException.StorageTransactionError",
                "tpc_finish called without a successful vote",
            ));
        };
        let mut seen = HashSet::new();
        let mut oids: Vec<Oid> = Vec::new();
        for oid in txn
            .ops
            .iter()
            .filter_map(Op::written)
            .chain(txn.undo_oids.iter().copied())
        {
            if seen.insert(oid) {
                oids.push(oid);
            }
        }
        let tid = commit.tid();
        let me = self.id;
        // The fsync happens first, outside the visibility lock and, unless it is known to be
        // quick, off the shard's thread, so other clients' loads go on during it; publishing is then an in-memory index update.
        // Loads hold the lock only for a synchronous read and the queueing of its reply (never
        // across an await), so taking it here waits microseconds.
        let sync = move |mut commit: Box<dyn Commit>| {
            let t = std::time::Instant::now();
            let r = commit.make_durable();
            (commit, r, t.elapsed())
        };
        let synced = if st.sync_inline() {
            Ok(sync(commit))
        } else {
            // Replies held for the batch should not wait for a slow disk.
            self.out.flush_now();
            tokio::task::spawn_blocking(move || sync(commit)).await
        };
        let (commit, durable) = match synced {
            Ok((commit, durable, took)) => {
                st.sync_took(took);
                (commit, durable)
            }
            Err(e) => {
                // The commit is lost with the task; whether it reached the disk is unknown,
                // and only a restart (which recovers the file) can tell. Say so and close.
                error!(target: LOG_STORAGE, "({}) tpc_finish failed: {e}", self.label);
                return Err(Fail::Close("the commit's sync failed".into()));
            }
        };
        let mut notified = std::mem::take(&mut self.held);
        let result = durable.and_then(|()| {
            let _visible = st.visibility.write().unwrap_or_else(|e| e.into_inner());
            let mut seq = st.seq();
            let mut encoded: [Option<Vec<u8>>; 2] = [None, None];
            for (id, r) in &seq.conns {
                if *id == me {
                    continue;
                }
                let slot = usize::from(r.encoding == Encoding::Msgpack);
                let msg = encoded[slot].get_or_insert_with(|| {
                    codec::call(
                        r.encoding,
                        "invalidateTransaction",
                        vec![bv(&tid), oid_list(&oids)],
                    )
                });
                r.outbox.push(msg);
                notified.push(r.outbox.clone());
            }
            st.push_invalidation(&mut seq, tid, oids);
            commit.finish()
        });
        // Written outside the locks when this batch ends, before this connection's own
        // reply: see `release_held`.
        self.held = notified;
        // The committer's info and reply are queued before the lock is released: the next
        // commit's invalidation must reach this client after its own tid (§4.5 rule 3).
        let reply = match result {
            Ok(tid) => {
                debug!(target: LOG_STORAGE, "({}) committed {}", self.label, hex(&tid));
                st.stats.commits.fetch_add(1, Ordering::Relaxed);
                let info = st.backend.info();
                self.out.send(&codec::call(
                    self.enc,
                    "info",
                    vec![Value::Map(vec![
                        (sv("length"), Value::Int(info.length as i64)),
                        (sv("size"), Value::Int(info.size as i64)),
                    ])],
                ));
                self.send_reply(&req.msgid, bv(&tid));
                Ok(None)
            }
            Err(e) => {
                error!(target: LOG_STORAGE, "({}) tpc_finish failed: {e}", self.label);
                let f = Fail::from(e);
                if let Fail::Error(class, state) = &f {
                    self.send_error(&req.msgid, class, state.clone());
                }
                Ok(None)
            }
        };
        self.txn = None;
        self.deadline = None;
        st.set_lock_time(None);
        self.lock = None;
        st.stats.active_txns.fetch_sub(1, Ordering::Relaxed);
        log_lock(&st.id, "unlock", st.stats.waiting.load(Ordering::Relaxed));
        reply
    }

    /// Abort the connection's transaction, wherever it is: recorded, waiting for the lock,
    /// or voted and holding it.
    fn abort_txn(&mut self) {
        let st = self.storage.clone();
        if self.vote_wait.take().is_some() {
            if let Some(st) = &st {
                st.stats.waiting.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if let Some(up) = self.upload.take() {
            drop(up.file);
            let _ = std::fs::remove_file(&up.path);
        }
        if let Some(txn) = self.txn.take() {
            if let Some(c) = txn.commit {
                c.abort();
            }
            for op in &txn.ops {
                if let Op::StoreBlob { file, .. } = op {
                    let _ = std::fs::remove_file(file);
                }
            }
            if let Some(st) = &st {
                st.stats.aborts.fetch_add(1, Ordering::Relaxed);
                st.stats.active_txns.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if self.lock.take().is_some() {
            if let Some(st) = &st {
                st.set_lock_time(None);
                log_lock(&st.id, "unlock", st.stats.waiting.load(Ordering::Relaxed));
            }
        }
        self.deadline = None;
    }

    async fn send_blob(&mut self, req: &Request) -> Result<Option<Value>, Fail> {
        let a = req.args.as_slice();
        let oid = oid_at(a, 0, "oid")?;
        let serial = oid_at(a, 1, "serial")?;
        let path = self.storage()?.backend.blob_file(&oid, &serial)?;
        let mut file = std::fs::File::open(&path).map_err(|_| {
            Fail::from(StoreError::BlobMissing {
                path: path.display().to_string(),
                oid,
                serial,
            })
        })?;
        let ids = || vec![bv(&oid), bv(&serial)];
        self.out
            .send(&codec::call(self.enc, "receiveBlobStart", ids()));
        let mut buf = vec![0u8; BLOB_CHUNK];
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    // The client is mid-download; only closing resets its state.
                    return Err(Fail::Close(format!("reading blob {}: {e}", path.display())));
                }
            };
            let mut args = ids();
            args.push(Value::Bytes(buf[..n].to_vec()));
            let msg = codec::call(self.enc, "receiveBlobChunk", args);
            if !self.out.send_paced(&msg).await {
                return Err(Fail::Close("client stopped reading a blob".into()));
            }
        }
        self.out
            .send(&codec::call(self.enc, "receiveBlobStop", ids()));
        Ok(Some(Value::Nil))
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

fn log_lock(storage: &str, what: &str, waiting: i64) {
    // Formatted only at a level that is logged: this runs twice per commit.
    if waiting >= 10 {
        error!(target: LOG_STORAGE, "({storage}) {what}: transactions waiting: {waiting}");
    } else if waiting >= 4 {
        warn!(target: LOG_STORAGE, "({storage}) {what}: transactions waiting: {waiting}");
    } else {
        debug!(target: LOG_STORAGE, "({storage}) {what}: transactions waiting: {waiting}");
    }
}

/// Begin the storage transaction and replay the recorded operations (§3.3.5).
fn replay(st: &StorageState, txn: &mut Txn) -> Result<VoteResult, StoreError> {
    let mut commit = st.backend.begin(&txn.meta)?;
    let mut last: HashMap<Oid, usize> = HashMap::new();
    for (i, op) in txn.ops.iter().enumerate() {
        if let Some(oid) = op.superseding() {
            last.insert(oid, i);
        }
    }
    let mut conflicts = Vec::new();
    let mut undo_oids = Vec::new();
    // The log in order, then the blob stores (as the reference): a blob file is moved into
    // place only once nothing else conflicts, so a conflict round keeps the uploads.
    let order = txn
        .ops
        .iter()
        .enumerate()
        .filter(|(_, op)| !matches!(op, Op::StoreBlob { .. }))
        .chain(
            txn.ops
                .iter()
                .enumerate()
                .filter(|(_, op)| matches!(op, Op::StoreBlob { .. })),
        );
    for (i, op) in order {
        if let Some(oid) = op.superseding() {
            if last.get(&oid) != Some(&i) {
                continue;
            }
        }
        if matches!(op, Op::StoreBlob { .. }) && !conflicts.is_empty() {
            continue;
        }
        let r = match op {
            Op::Store { oid, serial, data } => commit.store(oid, serial, data),
            Op::StoreBlob {
                oid,
                serial,
                data,
                file,
            } => commit.store_blob(oid, serial, data, file),
            Op::CheckCurrent { oid, serial } => commit.check_current(oid, serial),
            Op::Delete { oid, serial } => commit.delete(oid, serial),
            Op::Restore {
                oid,
                serial,
                data,
                prev,
            } => commit.restore(oid, serial, data.as_deref(), prev.as_ref()),
            Op::Undo { id } => match commit.undo(id) {
                Ok(oids) => {
                    undo_oids.extend(oids);
                    Ok(())
                }
                Err(e) => Err(e),
            },
        };
        match (r, op) {
            (Ok(()), _) => {}
            // Client-side conflict resolution (§3.3.7): hand the store back with both tids.
            (
                Err(StoreError::Conflict { oid, serials }),
                Op::Store { data, .. } | Op::StoreBlob { data, .. },
            ) => conflicts.push(Value::Map(vec![
                (sv("oid"), bv(&oid)),
                (
                    sv("serials"),
                    Value::Tuple(vec![bv(&serials.0), bv(&serials.1)]),
                ),
                (sv("data"), Value::Bytes(data.clone())),
            ])),
            (Err(e), _) => {
                commit.abort();
                return Err(e);
            }
        }
    }
    if !conflicts.is_empty() {
        commit.abort();
        return Ok(VoteResult::Conflicts(conflicts));
    }
    if let Err(e) = commit.vote() {
        commit.abort();
        return Err(e);
    }
    let mut seen = HashSet::new();
    undo_oids.retain(|o| seen.insert(*o));
    Ok(VoteResult::Voted(commit, undo_oids))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_blob_names() {
        assert!(valid_shared_blob_name("0x00igmk1ivy.tmp-"));
        assert!(valid_shared_blob_name("x.tmp"));
        assert!(!valid_shared_blob_name("../x.tmp"));
        assert!(!valid_shared_blob_name("x.tmpab"));
        assert!(!valid_shared_blob_name("x.blob"));
    }

    #[test]
    fn reprs() {
        assert_eq!(repr_id(&[0; 8]), "0x00");
        assert_eq!(repr_id(&[0, 0, 0, 0, 0, 0, 0, 0xcb]), "0xcb");
        assert_eq!(repr_id(&[0, 0, 0, 0, 0, 0, 1, 0]), "0x0100");
        assert_eq!(
            bushy_dir(Path::new("b"), &[0, 0, 0, 0, 0, 0, 0, 0xcb]),
            Path::new("b/0x00/0x00/0x00/0x00/0x00/0x00/0x00/0xcb")
        );
    }

    #[test]
    fn undo_spec_matching() {
        let entry = vec![(sv("user_name"), bv(b"/ alice")), (sv("x"), Value::Int(1))];
        assert!(spec_matches(&[(sv("x"), Value::Int(1))], &entry));
        assert!(!spec_matches(&[(sv("x"), Value::Int(2))], &entry));
        let prefix = Value::Global {
            module: "ZopeUndo.Prefix".into(),
            name: "Prefix".into(),
            args: vec![sv("/ al")],
        };
        assert!(spec_matches(&[(sv("user_name"), prefix)], &entry));
    }
}
