//! `/metrics` in the Prometheus text format (0.0.4), written by `prometheus-client` from a
//! collector that reads the server's statistics at scrape time (nothing is copied into a
//! registry on the hot paths).

use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::Exposed;
use super::records::{self, Kind, Last};
use crate::zeo::shared::StorageState;
use crate::zeo::stats::{HistogramSnapshot, SERVER};

/// The whole `/metrics` page.
pub fn render(exposed: &std::sync::Arc<Exposed>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(std::sync::Arc::clone(exposed))));
    let mut out = String::with_capacity(16 * 1024);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

struct Scrape(std::sync::Arc<Exposed>);

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scrape")
    }
}

/// What one storage looks like at scrape time.
struct Row<'a> {
    name: &'a str,
    st: &'a StorageState,
    objects: u64,
    size: u64,
    last_tid_time: Option<f64>,
    invalq: usize,
    /// The Data.fs, for file storages.
    file: Option<std::path::PathBuf>,
    /// (available, total) bytes beside the Data.fs.
    disk: Option<(f64, f64)>,
}

type Fmt = Result<(), std::fmt::Error>;

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Fmt {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> Fmt {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

/// One family with a value per storage (`storage` label); storages without a value are
/// left out.
fn per_storage(
    e: &mut DescriptorEncoder,
    rows: &[Row],
    name: &str,
    help: &str,
    kind: MetricType,
    value: impl Fn(&Row) -> Option<f64>,
) -> Fmt {
    let values: Vec<(&str, f64)> = rows
        .iter()
        .filter_map(|r| value(r).map(|v| (r.name, v)))
        .collect();
    if values.is_empty() {
        return Ok(());
    }
    let mut m = e.encode_descriptor(name, help, None, kind)?;
    for (storage, v) in values {
        let labels = [("storage", storage)];
        let mut f = m.encode_family(&labels)?;
        match kind {
            MetricType::Counter => f.encode_counter::<NoLabelSet, _, u64>(&(v as u64), None)?,
            _ => f.encode_gauge(&v)?,
        }
    }
    Ok(())
}

fn histogram(
    e: &mut DescriptorEncoder,
    rows: &[Row],
    name: &str,
    help: &str,
    h: impl Fn(&StorageState) -> HistogramSnapshot,
) -> Fmt {
    if rows.is_empty() {
        return Ok(());
    }
    let mut m = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for r in rows {
        let s = h(r.st);
        // The encoder wants each bucket's own count; the snapshot is cumulative.
        let mut prev = 0;
        let own: Vec<(f64, u64)> = s
            .buckets
            .iter()
            .map(|(b, c)| {
                let d = c - prev;
                prev = *c;
                (*b, d)
            })
            .collect();
        let labels = [("storage", r.name)];
        let mut f = m.encode_family(&labels)?;
        f.encode_histogram::<NoLabelSet>(
            s.sum_seconds,
            s.count,
            &own,
            None::<&std::collections::HashMap<usize, Exemplar<NoLabelSet, f64>>>,
        )?;
    }
    Ok(())
}

fn load_u(a: &AtomicU64) -> Option<f64> {
    Some(a.load(Ordering::Relaxed) as f64)
}

fn load_i(a: &AtomicI64) -> Option<f64> {
    Some(a.load(Ordering::Relaxed).max(0) as f64)
}

fn finished(file: &Path, kind: Kind) -> Option<f64> {
    match records::last(file, kind) {
        Last::Finished(t) => Some(t),
        Last::Absent | Last::Unreadable(_) => None,
    }
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows: Vec<Row> = self
            .0
            .storages()
            .iter()
            .map(|(name, st)| {
                let info = st.backend.info();
                let last = st.backend.last_transaction();
                let file = Some(std::path::PathBuf::from(&info.name)).filter(|p| p.is_file());
                Row {
                    name,
                    st,
                    objects: info.length,
                    size: info.size,
                    last_tid_time: (last != [0; 8])
                        .then(|| crate::storage::memory::tid_to_unix(&last)),
                    invalq: st.seq().invalq.len(),
                    disk: file.as_deref().and_then(disk_space),
                    file,
                }
            })
            .collect();
        let e = &mut e;
        use MetricType::{Counter as C, Gauge as G};

        // Server.
        let ready = if self.0.ready() { 1.0 } else { 0.0 };
        gauge(
            e,
            "zeo_up",
            "1 when every storage is open and the server accepts connections",
            ready,
        )?;
        if let Some(t) = SERVER.start_time() {
            gauge(
                e,
                "zeo_start_time_seconds",
                "Unix time the ZEO server started serving",
                t,
            )?;
        }
        counter(
            e,
            "zeo_received_bytes",
            "Bytes received from ZEO clients",
            SERVER.bytes_in.load(Ordering::Relaxed),
        )?;
        counter(
            e,
            "zeo_sent_bytes",
            "Bytes sent to ZEO clients",
            SERVER.bytes_out.load(Ordering::Relaxed),
        )?;
        counter(
            e,
            "zeo_connections_accepted",
            "ZEO connections accepted",
            SERVER.connections_total.load(Ordering::Relaxed),
        )?;
        {
            let mut m = e.encode_descriptor(
                "zeo_connections_refused",
                "Connections dropped before being served, by reason (tls: TLS handshake failed; handshake: bad or missing ZEO handshake; frame_size: request over max-frame-size)",
                None,
                C,
            )?;
            for (reason, a) in [
                ("tls", &SERVER.refused_tls),
                ("handshake", &SERVER.refused_handshake),
                ("frame_size", &SERVER.refused_frame_size),
            ] {
                let labels = [("reason", reason)];
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&a.load(Ordering::Relaxed), None)?;
            }
        }
        counter(
            e,
            "zeo_slow_clients_closed",
            "Connections closed because the client did not read its replies",
            SERVER.slow_closed.load(Ordering::Relaxed),
        )?;

        // Storages.
        let r = rows.as_slice();
        per_storage(
            e,
            r,
            "zeo_connections",
            "Registered client connections",
            G,
            |r| load_i(&r.st.stats.connections),
        )?;
        per_storage(e, r, "zeo_loads", "Objects loaded (loadBefore)", C, |r| {
            load_u(&r.st.stats.loads)
        })?;
        per_storage(e, r, "zeo_stores", "Object stores received", C, |r| {
            load_u(&r.st.stats.stores)
        })?;
        per_storage(e, r, "zeo_commits", "Transactions committed", C, |r| {
            load_u(&r.st.stats.commits)
        })?;
        per_storage(e, r, "zeo_aborts", "Transactions aborted", C, |r| {
            load_u(&r.st.stats.aborts)
        })?;
        per_storage(
            e,
            r,
            "zeo_conflicts",
            "Votes that failed with a conflict",
            C,
            |r| load_u(&r.st.stats.conflicts),
        )?;
        per_storage(e, r, "zeo_undos", "Transactions undone", C, |r| {
            load_u(&r.st.stats.undos)
        })?;
        per_storage(
            e,
            r,
            "zeo_active_transactions",
            "Transactions begun and not yet finished or aborted",
            G,
            |r| load_i(&r.st.stats.active_txns),
        )?;
        per_storage(
            e,
            r,
            "zeo_commit_lock_waiting",
            "Votes waiting for the commit lock",
            G,
            |r| load_i(&r.st.stats.waiting),
        )?;
        per_storage(
            e,
            r,
            "zeo_commit_lock_held_seconds",
            "How long the current holder has held the commit lock (0 when free)",
            G,
            |r| Some(r.st.stats.lock_held_seconds()),
        )?;
        histogram(
            e,
            r,
            "zeo_commit_lock_hold_seconds",
            "Time the commit lock was held, vote to finish or abort",
            |s| s.stats.lock_hold.snapshot(),
        )?;
        histogram(
            e,
            r,
            "zeo_commit_duration_seconds",
            "Commit latency, vote received to tpc_finish answered",
            |s| s.stats.commit_latency.snapshot(),
        )?;
        per_storage(
            e,
            r,
            "zeo_invalidation_queue_length",
            "Entries in the invalidation queue",
            G,
            |r| Some(r.invalq as f64),
        )?;
        per_storage(
            e,
            r,
            "zodb_objects",
            "Objects in the storage (len(storage))",
            G,
            |r| Some(r.objects as f64),
        )?;
        per_storage(
            e,
            r,
            "zodb_storage_size_bytes",
            "Size of the storage (the committed end of the Data.fs)",
            G,
            |r| Some(r.size as f64),
        )?;
        per_storage(
            e,
            r,
            "zodb_last_transaction_timestamp_seconds",
            "Unix time of the last committed transaction (its tid)",
            G,
            |r| r.last_tid_time,
        )?;
        per_storage(
            e,
            r,
            "zeo_last_commit_timestamp_seconds",
            "Unix time of the last commit through this server process",
            G,
            |r| match r.st.stats.last_commit_us.load(Ordering::Relaxed) {
                0 => None,
                us => Some(us as f64 / 1e6),
            },
        )?;
        per_storage(
            e,
            r,
            "zodb_filesystem_avail_bytes",
            "Bytes available to the server on the file system of the Data.fs",
            G,
            |r| r.disk.map(|d| d.0),
        )?;
        per_storage(
            e,
            r,
            "zodb_filesystem_size_bytes",
            "Size of the file system of the Data.fs",
            G,
            |r| r.disk.map(|d| d.1),
        )?;
        per_storage(
            e,
            r,
            "zodb_last_pack_timestamp_seconds",
            "Unix time the last successful pack finished (absent: no record)",
            G,
            |r| r.file.as_deref().and_then(|f| finished(f, Kind::Pack)),
        )?;
        per_storage(
            e,
            r,
            "zodb_last_backup_timestamp_seconds",
            "Unix time the last successful backup finished (absent: no record)",
            G,
            |r| r.file.as_deref().and_then(|f| finished(f, Kind::Backup)),
        )?;

        // Replication (replicated storages only).
        let replicated: Vec<(&str, serde_json::Value)> = self
            .0
            .storages()
            .iter()
            .filter_map(|(name, st)| st.replication().map(|r| (name.as_str(), r.status())))
            .collect();
        replication_metrics(e, &replicated)?;

        process_metrics(e)
    }
}

/// The `zodbctl_replication_*` gauges of the replicated storages, from their status (see
/// [`super::replication::gauges`]): one family per gauge, a `storage` label on each value.
fn replication_metrics(e: &mut DescriptorEncoder, storages: &[(&str, serde_json::Value)]) -> Fmt {
    type Values = Vec<(Vec<(&'static str, String)>, f64)>;
    let mut families: Vec<(&'static str, &'static str, Values)> = Vec::new();
    for (storage, status) in storages {
        for g in super::replication::gauges(status) {
            let mut labels = vec![("storage", (*storage).to_owned())];
            labels.extend(g.label);
            match families.iter_mut().find(|f| f.0 == g.name) {
                Some(f) => f.2.push((labels, g.value)),
                None => families.push((g.name, g.help, vec![(labels, g.value)])),
            }
        }
    }
    for (name, help, values) in families {
        let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, v) in values {
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            m.encode_family(&labels)?.encode_gauge(&v)?;
        }
    }
    Ok(())
}

/// (available, total) bytes of the file system holding `file`.
pub fn disk_space(file: &Path) -> Option<(f64, f64)> {
    let s = nix::sys::statvfs::statvfs(file).ok()?;
    let frag = s.fragment_size() as f64;
    Some((s.blocks_available() as f64 * frag, s.blocks() as f64 * frag))
}

/// The standard `process_*` metrics, from `/proc/self` (Linux); left out where unreadable.
fn process_metrics(e: &mut DescriptorEncoder) -> Fmt {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64;
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name, which is in parentheses and may hold spaces.
        if let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) {
            let f: Vec<&str> = rest.split(' ').collect();
            let num = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok());
            // Field numbers (proc(5)) minus 3: state is field 3.
            if let (Some(ut), Some(st)) = (num(11), num(12)) {
                let c = ConstCounter::new((ut + st) / ticks);
                c.encode(e.encode_descriptor(
                    "process_cpu_seconds",
                    "Total user and system CPU time spent in seconds",
                    None,
                    c.metric_type(),
                )?)?;
            }
            if let Some(n) = num(17) {
                gauge(
                    e,
                    "process_threads",
                    "Number of OS threads in the process",
                    n,
                )?;
            }
            if let Some(v) = num(20) {
                gauge(
                    e,
                    "process_virtual_memory_bytes",
                    "Virtual memory size in bytes",
                    v,
                )?;
            }
            if let Some(rss) = num(21) {
                gauge(
                    e,
                    "process_resident_memory_bytes",
                    "Resident memory size in bytes",
                    rss * page,
                )?;
            }
            if let (Some(start), Some(btime)) = (num(19), boot_time()) {
                gauge(
                    e,
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds",
                    btime + start / ticks,
                )?;
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        gauge(
            e,
            "process_open_fds",
            "Number of open file descriptors",
            dir.count() as f64,
        )?;
    }
    if let Ok((soft, _)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        gauge(
            e,
            "process_max_fds",
            "Maximum number of open file descriptors",
            soft as f64,
        )?;
    }
    Ok(())
}

fn boot_time() -> Option<f64> {
    static BTIME: std::sync::OnceLock<Option<f64>> = std::sync::OnceLock::new();
    *BTIME.get_or_init(|| {
        let s = std::fs::read_to_string("/proc/stat").ok()?;
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes the replication gauges of fixed statuses.
    #[derive(Debug)]
    struct Fixed(Vec<(&'static str, serde_json::Value)>);

    impl Collector for Fixed {
        fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            replication_metrics(&mut e, &self.0)
        }
    }

    #[test]
    fn replication_gauges_per_storage() {
        let replica = serde_json::json!({
            "role": "replica", "epoch": 3, "mode": "async", "degraded": false, "replicas": [],
            "primary": "127.0.0.1:8101", "connected": true, "phase": "streaming",
            "lag_bytes": 2048, "lag_transactions": 3, "lag_seconds": 1.5, "in_sync": false,
            "last_heard_seconds": 0.2
        });
        let primary = serde_json::json!({
            "role": "primary", "epoch": 3, "mode": "sync", "degraded": true,
            "replicas": [
                {"peer": "a", "in_sync": false, "lag_bytes": 10, "lag_transactions": 1,
                 "lag_seconds": 2.5},
                {"peer": "b", "in_sync": false, "lag_bytes": 30, "lag_transactions": 2,
                 "lag_seconds": 0.5}
            ]
        });
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Fixed(vec![("1", replica), ("main", primary)])));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).unwrap();
        for want in [
            "# HELP zodbctl_replication_role Replication role of the storage",
            "# TYPE zodbctl_replication_role gauge",
            "zodbctl_replication_role{storage=\"1\",role=\"replica\"} 1",
            "zodbctl_replication_role{storage=\"1\",role=\"primary\"} 0",
            "zodbctl_replication_role{storage=\"main\",role=\"primary\"} 1",
            "zodbctl_replication_epoch{storage=\"1\"} 3",
            "zodbctl_replication_lag_bytes{storage=\"1\"} 2048",
            "zodbctl_replication_lag_transactions{storage=\"1\"} 3",
            "zodbctl_replication_lag_seconds{storage=\"1\"} 1.5",
            "zodbctl_replication_in_sync{storage=\"1\"} 0",
            "zodbctl_replication_connected{storage=\"1\"} 1",
            // A primary: the replica furthest behind, and how many are connected.
            "zodbctl_replication_lag_bytes{storage=\"main\"} 30",
            "zodbctl_replication_lag_seconds{storage=\"main\"} 2.5",
            "zodbctl_replication_replicas{storage=\"main\"} 2",
            "zodbctl_replication_degraded{storage=\"main\"} 1",
        ] {
            assert!(out.contains(want), "{want}:\n{out}");
        }
        // One family each, not one per storage.
        assert_eq!(
            out.matches("# TYPE zodbctl_replication_lag_bytes ").count(),
            1
        );
        assert!(!out.contains("zodbctl_replication_connected{storage=\"main\"}"));
        assert!(!out.contains("zodbctl_replication_replicas{storage=\"1\"}"));
    }
}
