//! Health and metrics: the server's Prometheus endpoint (`/metrics`, `/healthz`, `/readyz`),
//! `zodbctl check` (zeoup and zeo-nagios), and the figures `status` shows ([`replication`]:
//! the replication of a storage, in words, verdicts and gauges).
//!
//! The endpoint runs on a thread of its own with its own single-threaded runtime, apart from
//! the ZEO shards: a scrape, a slow HTTP client or a flood of requests on the metrics port
//! takes nothing from the connections serving ZODB clients. It is started before the storages
//! are opened, so `/readyz` answers (503) while a large file is still being indexed.
//!
//! A scrape reads atomics (see `zeo::stats`), each storage's size, length and last tid (under
//! the engine's read lock, which loads share and a commit holds for an index update), one
//! `statvfs` and the small pack/backup record files beside each Data.fs, and `/proc/self`.

pub mod check;
mod exposition;
mod http;
pub mod records;
pub mod replication;
pub mod ruok;

use std::sync::{Arc, OnceLock};

pub use exposition::render;
pub use http::{MetricsError, start};

use crate::zeo::shared::StorageState;

/// What the endpoint exposes: the storages once they are open.
#[derive(Default)]
pub struct Exposed {
    storages: OnceLock<Vec<(String, Arc<StorageState>)>>,
}

impl Exposed {
    pub fn new() -> Arc<Exposed> {
        Arc::new(Exposed::default())
    }

    /// Publish the opened storages (once).
    pub fn set_storages(&self, storages: Vec<(String, Arc<StorageState>)>) {
        let _ = self.storages.set(storages);
    }

    pub fn storages(&self) -> &[(String, Arc<StorageState>)] {
        self.storages.get().map_or(&[], Vec::as_slice)
    }

    /// Every storage open and the ZEO listener accepting.
    pub fn ready(&self) -> bool {
        self.storages.get().is_some()
            && crate::zeo::stats::SERVER
                .serving
                .load(std::sync::atomic::Ordering::Relaxed)
    }
}
