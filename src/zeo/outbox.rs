//! A connection's outgoing bytes: one FIFO buffer, written to the socket by whichever thread
//! gets there first.
//!
//! Anyone may push a message without waiting: the connection's own replies, and other
//! connections' commits, which push invalidations to every connection while they hold the
//! storage's sequencer lock. Per-connection FIFO order (zeo-protocol.md §4.5) follows from
//! the single buffer, appended to under its mutex.
//!
//! Writing: on a plain TCP or Unix socket the pusher writes the buffer itself with a
//! non-blocking `send` when nobody else is writing (the socket's write half is shared, and
//! `try_write` needs no exclusive access). So a commit's invalidations are on the other
//! clients' sockets before the committer's own reply, as with runzeo, which writes from its
//! single thread, and no other thread has to be woken to send them. What the socket does not
//! take at once is left to the writer task, which waits for the socket to become writable.
//! A TLS stream needs exclusive access for every write, so there the writer task does all
//! the writing.
//!
//! Batching: while the connection processes a batch of requests that arrived together, its
//! outbox is *corked*: replies accumulate and go out with one `send` when the batch ends
//! (a pipelining client's 16 loads cost one system call, not 16). Pushes from other
//! connections meanwhile join the same buffer and go out with the batch.
//!
//! Bounds: once more than `limit` bytes wait because the client does not read, the
//! connection is marked dead and closed.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

/// Below this many queued bytes a paced sender (blob download) may push more.
const LOW_WATER: usize = 4 << 20;
/// A client that reads nothing for this long is gone; its socket buffer filled up.
const STALL: Duration = Duration::from_secs(120);
/// How long a closing connection waits for its client to take the last replies.
const CLOSE_WAIT: Duration = Duration::from_secs(10);
/// Writes of a plain socket's buffer are capped, so one huge backlog does not hold the
/// buffer's mutex (and the threads pushing to it) for a long copy into the kernel.
const MAX_WRITE: usize = 1 << 20;

/// Buffer capacity a connection keeps between bursts.
const KEEP_CAPACITY: usize = 256 << 10;

/// Where a connection's bytes go.
pub enum Sink {
    /// A socket any thread may write to without blocking.
    Tcp(tokio::net::tcp::OwnedWriteHalf),
    Unix(tokio::net::unix::OwnedWriteHalf),
    /// A stream only the writer task writes to (TLS).
    Stream(Box<dyn AsyncWrite + Unpin + Send>),
}

/// The shareable kind of sink.
enum Raw {
    Tcp(tokio::net::tcp::OwnedWriteHalf),
    Unix(tokio::net::unix::OwnedWriteHalf),
}

impl Raw {
    fn try_write(&self, b: &[u8]) -> io::Result<usize> {
        match self {
            Raw::Tcp(w) => w.try_write(b),
            Raw::Unix(w) => w.try_write(b),
        }
    }

    async fn writable(&self) -> io::Result<()> {
        match self {
            Raw::Tcp(w) => w.writable().await,
            Raw::Unix(w) => w.writable().await,
        }
    }
}

#[derive(Default)]
struct State {
    /// Framed messages not yet written; bytes before `sent` are written already.
    buf: Vec<u8>,
    sent: usize,
    /// The writer task holds bytes taken out of `buf` (a stream sink) or is waiting for the
    /// socket: nobody else may write until it is done.
    writing: bool,
    /// The connection is processing a batch of requests; it flushes when done.
    corked: bool,
}

impl State {
    fn pending(&self) -> usize {
        self.buf.len() - self.sent
    }

    /// Everything was written: empty the buffer, and give back the memory of a large burst.
    fn reset(&mut self) {
        self.sent = 0;
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
    }
}

struct Shared {
    state: Mutex<State>,
    /// `Some` for sockets that pushers may write to directly.
    raw: Option<Arc<Raw>>,
    limit: usize,
    dead: AtomicBool,
    /// Wakes the connection when the outbox died (overflow or write error).
    died: Notify,
    /// Wakes paced senders when the backlog shrank.
    drained: Notify,
    /// Wakes the writer task: there is something for it to write.
    work: Notify,
    /// The writer task, aborted when the connection is killed (it may be stuck writing to a
    /// client that does not read).
    writer: Mutex<Option<tokio::task::AbortHandle>>,
}

#[derive(Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
}

impl Outbox {
    /// Create the outbox and spawn its writer task over `sink`.
    pub fn spawn(sink: Sink, limit: usize) -> Outbox {
        let (raw, stream) = match sink {
            Sink::Tcp(w) => (Some(Arc::new(Raw::Tcp(w))), None),
            Sink::Unix(w) => (Some(Arc::new(Raw::Unix(w))), None),
            Sink::Stream(s) => (None, Some(s)),
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            raw,
            limit,
            dead: AtomicBool::new(false),
            died: Notify::new(),
            drained: Notify::new(),
            work: Notify::new(),
            writer: Mutex::new(None),
        });
        let handle = match stream {
            Some(s) => tokio::spawn(stream_writer(s, Arc::clone(&shared))),
            None => tokio::spawn(raw_writer(Arc::clone(&shared))),
        };
        if let Ok(mut w) = shared.writer.lock() {
            *w = Some(handle.abort_handle());
        }
        Outbox { shared }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves `State` consistent.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue one message (payload without its length prefix) and, unless the connection is
    /// in the middle of a batch, start writing it. Returns false if the connection is dead,
    /// or has just been killed because the client does not read.
    pub fn send(&self, payload: &[u8]) -> bool {
        self.queue(payload, true)
    }

    /// Queue one message without writing anything yet: for pushes made under a lock that
    /// others wait for (a commit's invalidations); the pusher calls [`Outbox::flush`] once
    /// it released the lock.
    pub fn push(&self, payload: &[u8]) -> bool {
        self.queue(payload, false)
    }

    fn queue(&self, payload: &[u8], write: bool) -> bool {
        if self.is_dead() {
            return false;
        }
        if payload.is_empty() {
            return true;
        }
        let Ok(len) = u32::try_from(payload.len()) else {
            self.kill();
            return false;
        };
        self.append(write, |buf| {
            buf.extend_from_slice(&len.to_be_bytes());
            buf.extend_from_slice(payload);
        })
    }

    /// Queue the frames `encode` appends to the buffer (whole frames, length prefix
    /// included: the codec's `*_into` functions), then write as [`Outbox::send`] does. The
    /// encoder runs under the buffer's lock, so it must be quick and must not push to
    /// this outbox itself.
    pub fn send_with(&self, encode: impl FnOnce(&mut Vec<u8>)) -> bool {
        if self.is_dead() {
            return false;
        }
        self.append(true, encode)
    }

    fn append(&self, write: bool, encode: impl FnOnce(&mut Vec<u8>)) -> bool {
        let mut st = self.state();
        encode(&mut st.buf);
        let pending = st.pending();
        if pending > self.shared.limit {
            drop(st);
            tracing::warn!(
                target: "ZEO.asyncio.server",
                "closing a connection whose client does not read ({pending} bytes unsent)"
            );
            crate::zeo::stats::SERVER
                .slow_closed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.kill();
            return false;
        }
        if write && !st.corked {
            self.flush_locked(&mut st);
        }
        true
    }

    /// Write what is queued (unless the connection is in the middle of a batch, which
    /// writes it when done).
    pub fn flush(&self) {
        let mut st = self.state();
        if !st.corked {
            self.flush_locked(&mut st);
        }
    }

    /// Write what is queued now, batch or not (before the connection waits for something
    /// slow: the replies it holds should not wait with it).
    pub fn flush_now(&self) {
        self.flush_locked(&mut self.state());
    }

    /// The connection starts processing a batch of requests: hold its replies.
    pub fn cork(&self) {
        self.state().corked = true;
    }

    /// The batch is done: write what it queued.
    pub fn uncork(&self) {
        let mut st = self.state();
        st.corked = false;
        self.flush_locked(&mut st);
    }

    /// Write what the socket takes now, on this thread; hand the rest to the writer task.
    fn flush_locked(&self, st: &mut State) {
        if st.writing || st.pending() == 0 || self.is_dead() {
            return;
        }
        if let Some(raw) = &self.shared.raw {
            while st.pending() > 0 {
                let end = st.buf.len().min(st.sent + MAX_WRITE);
                match raw.try_write(&st.buf[st.sent..end]) {
                    Ok(0) => {
                        self.kill();
                        return;
                    }
                    Ok(n) => {
                        st.sent += n;
                        crate::zeo::stats::SERVER.add_out(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.kill();
                        return;
                    }
                }
            }
            if st.pending() == 0 {
                st.reset();
                self.shared.drained.notify_waiters();
                return;
            }
        }
        st.writing = true;
        self.shared.work.notify_one();
    }

    /// Queue a message, first waiting until the backlog is small (for large downloads).
    pub async fn send_paced(&self, payload: &[u8]) -> bool {
        loop {
            if self.is_dead() {
                return false;
            }
            let drained = self.shared.drained.notified();
            if self.state().pending() < LOW_WATER {
                break;
            }
            // Bounded wait: a client that stops reading mid-download is dropped.
            if tokio::time::timeout(Duration::from_secs(60), drained)
                .await
                .is_err()
            {
                self.kill();
                return false;
            }
        }
        // Paced messages go out now even inside a batch: the sender waits on the backlog.
        let ok = self.push(payload);
        self.flush_now();
        ok
    }

    pub fn is_dead(&self) -> bool {
        self.shared.dead.load(Ordering::SeqCst)
    }

    pub fn kill(&self) {
        if let Ok(mut w) = self.shared.writer.lock() {
            if let Some(h) = w.take() {
                h.abort();
            }
        }
        mark_dead(&self.shared);
    }

    /// Resolves once the outbox is dead.
    pub async fn dead(&self) {
        loop {
            let n = self.shared.died.notified();
            if self.is_dead() {
                return;
            }
            n.await;
        }
    }

    /// Write everything queued, then let the socket go (for `ruok` answers and closes):
    /// once the writer task is gone and the connection drops its clone, nothing holds the
    /// socket. A client that does not take the rest within `CLOSE_WAIT` loses it.
    pub async fn close(&self) {
        self.uncork();
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            loop {
                let drained = self.shared.drained.notified();
                if self.is_dead() || self.state().pending() == 0 {
                    return;
                }
                drained.await;
            }
        })
        .await;
        self.kill();
    }
}

fn mark_dead(shared: &Shared) {
    shared.dead.store(true, Ordering::SeqCst);
    shared.died.notify_waiters();
    shared.died.notify_one();
    shared.drained.notify_waiters();
}

/// Writes a plain socket's backlog once the socket can take it.
async fn raw_writer(shared: Arc<Shared>) {
    let Some(raw) = shared.raw.clone() else {
        return;
    };
    loop {
        shared.work.notified().await;
        loop {
            if shared.dead.load(Ordering::SeqCst) {
                return;
            }
            let ready = tokio::time::timeout(STALL, raw.writable()).await;
            if !matches!(ready, Ok(Ok(()))) {
                mark_dead(&shared);
                return;
            }
            let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            while st.pending() > 0 {
                let end = st.buf.len().min(st.sent + MAX_WRITE);
                match raw.try_write(&st.buf[st.sent..end]) {
                    Ok(0) => {
                        drop(st);
                        mark_dead(&shared);
                        return;
                    }
                    Ok(n) => {
                        st.sent += n;
                        crate::zeo::stats::SERVER.add_out(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        drop(st);
                        mark_dead(&shared);
                        return;
                    }
                }
            }
            // Keep the buffer from growing without end behind a slow reader.
            if st.pending() == 0 {
                st.reset();
            } else if st.sent >= MAX_WRITE {
                let sent = st.sent;
                st.buf.drain(..sent);
                st.sent = 0;
            }
            shared.drained.notify_waiters();
            if st.pending() == 0 {
                st.writing = false;
                break;
            }
        }
    }
}

/// Writes everything for a stream that needs exclusive access (TLS).
async fn stream_writer(mut sink: Box<dyn AsyncWrite + Unpin + Send>, shared: Arc<Shared>) {
    let mut chunk = Vec::new();
    'outer: loop {
        shared.work.notified().await;
        loop {
            {
                let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
                if st.pending() == 0 {
                    st.writing = false;
                    break;
                }
                // Swap buffers: pushers go on appending while this one is written.
                chunk.clear();
                std::mem::swap(&mut chunk, &mut st.buf);
                let sent = st.sent;
                st.sent = 0;
                chunk.drain(..sent);
            }
            let wrote = tokio::time::timeout(STALL, async {
                sink.write_all(&chunk).await?;
                crate::zeo::stats::SERVER.add_out(chunk.len());
                sink.flush().await
            })
            .await;
            if !matches!(wrote, Ok(Ok(()))) {
                break 'outer;
            }
            shared.drained.notify_waiters();
            if shared.dead.load(Ordering::SeqCst) {
                break 'outer;
            }
        }
    }
    mark_dead(&shared);
    let _ = sink.shutdown().await;
}
