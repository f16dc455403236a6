//! The server's threads: each runs its own single-threaded tokio runtime, and a connection
//! lives on one of them from accept to close.
//!
//! Why not tokio's work-stealing runtime: a ZEO request is a few microseconds of work, and
//! each connection is three tasks (reader, request processor, writer). On the multi-threaded
//! runtime those hand-offs, and every wake-up, often land on another worker: a futex wake and
//! a context switch each, several microseconds on a VM, which was 40 % of the server's CPU
//! per commit. Pinned to one thread, a connection's tasks hand work to each other without a
//! system call; different connections still run in parallel on different threads.
//!
//! Shard 0 is the runtime of the thread that calls [`Shards::start`] (the accept loop's);
//! the others get a thread each. Work that may block for long (fsync, large votes) leaves the
//! shard through `spawn_blocking`, so it never holds up the other connections of its shard.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

pub struct Shards {
    handles: Vec<Handle>,
    threads: Vec<(oneshot::Sender<()>, JoinHandle<()>)>,
    next: AtomicUsize,
}

impl Shards {
    /// `n` shards (at least one), the first being the caller's runtime. Must be called from
    /// inside a runtime. Each new thread logs through `dispatch`.
    pub fn start(n: usize, dispatch: &tracing::Dispatch) -> Result<Shards> {
        let mut handles = vec![Handle::current()];
        let mut threads = Vec::new();
        for i in 1..n.max(1) {
            let runtime = runtime(dispatch).context("starting a server thread's runtime")?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            let dispatch = dispatch.clone();
            let thread = std::thread::Builder::new()
                .name(format!("zeo-shard-{i}"))
                .spawn(move || {
                    let _log = tracing::dispatcher::set_default(&dispatch);
                    // Runs this shard's connections until told to stop; an error means the
                    // sender is gone, which is a stop too.
                    let _ = runtime.block_on(stopped);
                })
                .context("starting a server thread")?;
            threads.push((stop, thread));
        }
        Ok(Shards {
            handles,
            threads,
            next: AtomicUsize::new(0),
        })
    }

    /// The runtime the next connection goes to (round robin).
    pub fn next(&self) -> &Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[i]
    }

    /// Stop the extra threads once their connections are gone (the caller drained them).
    pub fn stop(self) {
        for (stop, thread) in self.threads {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
}

/// A shard's runtime. Its blocking-pool threads (fsync, large votes) log through `dispatch`.
pub fn runtime(dispatch: &tracing::Dispatch) -> std::io::Result<tokio::runtime::Runtime> {
    let dispatch = dispatch.clone();
    tokio::runtime::Builder::new_current_thread()
        .on_thread_start(move || {
            // The guard lives as long as the thread.
            std::mem::forget(tracing::dispatcher::set_default(&dispatch));
        })
        .enable_all()
        .build()
}

/// Default number of shards: one per two CPUs the process may use, at most 8. A ZEO
/// server's work is mostly the kernel's (its network stack runs on the same cores), and
/// its clients often share the machine; measured on 2 CPUs with the clients on the same
/// host, a second thread cost up to 1.7× the server CPU per commit (hand-offs of the commit
/// lock between threads) and cut pipelined loads/s to a third (server threads and clients
/// preempting each other). One thread serves about 40,000 unpipelined loads/s.
pub fn default_count() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cpus / 2).clamp(1, 8)
}
