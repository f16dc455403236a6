//! The server's statistics: per-storage counters and histograms, and per-server figures.
//!
//! Everything here is an atomic updated with `Relaxed` ordering: the figures are read by
//! `server_status`, `ruok` and the Prometheus endpoint, none of which needs them mutually
//! consistent, and a load or a commit must never wait for a reader. The load path touches one
//! counter (`loads`); everything else is counted on the commit path, which already takes
//! locks of its own.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{LazyLock, OnceLock};
use std::time::Instant;

/// Upper bounds (seconds) of the histogram buckets; `+Inf` is implied. From a fast tmpfs
/// commit (well under a millisecond) to a commit lock held for half a minute.
pub const BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
    30.0,
];

/// A latency histogram with the fixed [`BUCKETS`]: one atomic per bucket, no lock.
pub struct Histogram {
    bounds_ns: [u64; BUCKETS.len()],
    /// Observations per bucket (not cumulative); the last slot is `+Inf`.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            bounds_ns: BUCKETS.map(|s| (s * 1e9) as u64),
            counts: Default::default(),
            sum_ns: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

/// What a histogram held at one moment: cumulative buckets, as Prometheus wants them.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    pub sum_seconds: f64,
    pub count: u64,
    /// `(upper bound, observations <= bound)` for every finite bound.
    pub buckets: Vec<(f64, u64)>,
}

impl Histogram {
    pub fn observe(&self, d: std::time::Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let slot = self
            .bounds_ns
            .iter()
            .position(|b| ns <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut acc = 0;
        let buckets = BUCKETS
            .iter()
            .zip(&self.counts)
            .map(|(b, c)| {
                acc += c.load(Ordering::Relaxed);
                (*b, acc)
            })
            .collect();
        acc += self.counts[BUCKETS.len()].load(Ordering::Relaxed);
        // The total is the sum of the buckets read, so `+Inf` always equals `count` even
        // while observations land during the read.
        HistogramSnapshot {
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            count: acc,
            buckets,
        }
    }
}

/// Monotonic nanoseconds since the first use, never 0 (0 means "not set" in the atomics).
pub fn mono_ns() -> u64 {
    static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
    u64::try_from(EPOCH.elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Per-storage statistics.
#[derive(Default)]
pub struct Stats {
    pub loads: AtomicU64,
    pub stores: AtomicU64,
    pub commits: AtomicU64,
    pub aborts: AtomicU64,
    pub active_txns: AtomicI64,
    pub conflicts: AtomicU64,
    /// Votes waiting for the commit lock.
    pub waiting: AtomicI64,
    pub undos: AtomicU64,
    /// Registered connections (the sequencer's map holds them too, behind its mutex).
    pub connections: AtomicI64,
    /// [`mono_ns`] when the current holder took the commit lock; 0 when free.
    pub lock_since: AtomicU64,
    /// Unix time (µs) of the last commit this server made; 0 before the first.
    pub last_commit_us: AtomicU64,
    /// From taking the commit lock to releasing it (finish, abort or conflicts).
    pub lock_hold: Histogram,
    /// From `vote` received to `tpc_finish` answered: lock wait, write, sync, publication.
    pub commit_latency: Histogram,
}

impl Stats {
    pub fn lock_taken(&self) {
        self.lock_since.store(mono_ns(), Ordering::Relaxed);
    }

    /// The commit lock was released: its hold time goes into the histogram.
    pub fn lock_released(&self) {
        let since = self.lock_since.swap(0, Ordering::Relaxed);
        if since != 0 {
            let ns = mono_ns().saturating_sub(since);
            self.lock_hold.observe(std::time::Duration::from_nanos(ns));
        }
    }

    /// How long the current holder has held the commit lock (0 when free).
    pub fn lock_held_seconds(&self) -> f64 {
        match self.lock_since.load(Ordering::Relaxed) {
            0 => 0.0,
            since => mono_ns().saturating_sub(since) as f64 / 1e9,
        }
    }

    pub fn committed(&self, latency: Option<std::time::Duration>) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.last_commit_us
            .store((unix_now() * 1e6) as u64, Ordering::Relaxed);
        if let Some(d) = latency {
            self.commit_latency.observe(d);
        }
    }
}

/// Why a connection was refused or dropped before it was served.
#[derive(Debug, Clone, Copy)]
pub enum Refused {
    /// TLS handshake failed or timed out.
    Tls,
    /// The ZEO handshake was wrong or never came.
    Handshake,
    /// A request frame over `max-frame-size`.
    FrameSize,
}

/// Per-server statistics. One server runs per process, so they are process-wide: the socket
/// code that counts bytes needs no handle to reach them.
pub struct ServerStats {
    /// Unix time the server started (set once, at start).
    start: OnceLock<f64>,
    /// True once every storage is open and the listener accepts (`/readyz`).
    pub serving: AtomicBool,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub connections_total: AtomicU64,
    pub refused_tls: AtomicU64,
    pub refused_handshake: AtomicU64,
    pub refused_frame_size: AtomicU64,
    /// Clients closed because they did not read their replies (`max_outbuf`).
    pub slow_closed: AtomicU64,
}

pub static SERVER: ServerStats = ServerStats {
    start: OnceLock::new(),
    serving: AtomicBool::new(false),
    bytes_in: AtomicU64::new(0),
    bytes_out: AtomicU64::new(0),
    connections_total: AtomicU64::new(0),
    refused_tls: AtomicU64::new(0),
    refused_handshake: AtomicU64::new(0),
    refused_frame_size: AtomicU64::new(0),
    slow_closed: AtomicU64::new(0),
};

impl ServerStats {
    pub fn mark_started(&self) {
        let _ = self.start.set(unix_now());
    }

    /// Unix time the server started, if it has.
    pub fn start_time(&self) -> Option<f64> {
        self.start.get().copied()
    }

    pub fn refused(&self, why: Refused) {
        let c = match why {
            Refused::Tls => &self.refused_tls,
            Refused::Handshake => &self.refused_handshake,
            Refused::FrameSize => &self.refused_frame_size,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn add_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn histogram_buckets_are_cumulative_and_count_everything() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50)); // first bucket
        h.observe(Duration::from_millis(1)); // exactly a bound: counts as <= 0.001
        h.observe(Duration::from_secs(60)); // +Inf only
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets[0], (0.0001, 1));
        assert_eq!(s.buckets[3], (0.001, 2));
        assert_eq!(s.buckets.last(), Some(&(30.0, 2)));
        assert!((s.sum_seconds - 60.00105).abs() < 1e-9);
    }

    #[test]
    fn lock_hold_is_measured_between_take_and_release() {
        let st = Stats::default();
        assert_eq!(st.lock_held_seconds(), 0.0);
        st.lock_taken();
        std::thread::sleep(Duration::from_millis(2));
        assert!(st.lock_held_seconds() > 0.0);
        st.lock_released();
        st.lock_released(); // a second release observes nothing
        assert_eq!(st.lock_hold.snapshot().count, 1);
        assert_eq!(st.lock_held_seconds(), 0.0);
    }
}
