//! A connection's outgoing queue and the task that writes it to the socket.
//!
//! Anyone may push a message without waiting (the commit path pushes invalidations to every
//! connection while it holds the storage's sequencer lock), so the queue itself is unbounded;
//! what bounds it is the byte count: once more than `limit` bytes are waiting because the
//! client does not read, the connection is marked dead and closed. Per-connection FIFO order
//! (zeo-protocol.md §4.5) follows from the single queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{Notify, mpsc};

struct Shared {
    queued: AtomicUsize,
    limit: usize,
    dead: AtomicBool,
    /// Wakes the connection when the outbox died (overflow or write error).
    died: Notify,
    /// Wakes paced senders when the queue drained.
    drained: Notify,
    /// The writer task, aborted when the connection is killed (it may be stuck writing to a
    /// client that does not read).
    writer: std::sync::Mutex<Option<tokio::task::AbortHandle>>,
}

#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    shared: Arc<Shared>,
}

/// Below this many queued bytes a paced sender (blob download) may push more.
const LOW_WATER: usize = 4 << 20;

impl Outbox {
    /// Create the queue and spawn its writer over `sink`.
    pub fn spawn<W>(sink: W, limit: usize) -> Outbox
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            queued: AtomicUsize::new(0),
            limit,
            dead: AtomicBool::new(false),
            died: Notify::new(),
            drained: Notify::new(),
            writer: std::sync::Mutex::new(None),
        });
        let handle = tokio::spawn(writer(sink, rx, Arc::clone(&shared)));
        if let Ok(mut w) = shared.writer.lock() {
            *w = Some(handle.abort_handle());
        }
        Outbox { tx, shared }
    }

    /// Queue one message (payload without its length prefix). Returns false if the connection
    /// is dead, or has just been killed because the client does not read.
    pub fn send(&self, payload: &[u8]) -> bool {
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
        let mut frame = Vec::with_capacity(4 + payload.len());
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(payload);
        let n = frame.len();
        let queued = self.shared.queued.fetch_add(n, Ordering::SeqCst) + n;
        if queued > self.shared.limit {
            tracing::warn!(
                target: "ZEO.asyncio.server",
                "closing a connection whose client does not read ({queued} bytes unsent)"
            );
            self.kill();
            return false;
        }
        if self.tx.send(frame).is_err() {
            self.kill();
            return false;
        }
        true
    }

    /// Queue a message, first waiting until the backlog is small (for large downloads).
    pub async fn send_paced(&self, payload: &[u8]) -> bool {
        loop {
            if self.is_dead() {
                return false;
            }
            let drained = self.shared.drained.notified();
            if self.shared.queued.load(Ordering::SeqCst) < LOW_WATER {
                break;
            }
            // Bounded wait: a client that stops reading mid-download is dropped.
            if tokio::time::timeout(std::time::Duration::from_secs(60), drained)
                .await
                .is_err()
            {
                self.kill();
                return false;
            }
        }
        self.send(payload)
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
        self.shared.dead.store(true, Ordering::SeqCst);
        self.shared.died.notify_waiters();
        self.shared.died.notify_one();
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
}

async fn writer<W>(sink: W, mut rx: mpsc::UnboundedReceiver<Vec<u8>>, shared: Arc<Shared>)
where
    W: AsyncWrite + Unpin,
{
    let mut out = BufWriter::with_capacity(64 << 10, sink);
    'outer: while let Some(frame) = rx.recv().await {
        let mut batch = frame.len();
        if out.write_all(&frame).await.is_err() {
            break;
        }
        // A client that reads nothing for this long is gone; its socket buffer filled up.
        let stall = std::time::Duration::from_secs(120);
        // Coalesce whatever else is ready into the same flush.
        while batch < (1 << 20) {
            match rx.try_recv() {
                Ok(frame) => {
                    batch += frame.len();
                    if out.write_all(&frame).await.is_err() {
                        break 'outer;
                    }
                }
                Err(_) => break,
            }
        }
        match tokio::time::timeout(stall, out.flush()).await {
            Ok(Ok(())) => {}
            _ => break,
        }
        shared.queued.fetch_sub(batch, Ordering::SeqCst);
        shared.drained.notify_waiters();
        if shared.dead.load(Ordering::SeqCst) {
            break;
        }
    }
    shared.dead.store(true, Ordering::SeqCst);
    shared.died.notify_waiters();
    shared.died.notify_one();
    shared.drained.notify_waiters();
    let _ = out.shutdown().await;
}
