//! `zodbctl bench ADDR`: a native ZEO load generator with zodbshootout-style phases.
//!
//! Every connection owns a disjoint share of the objects, so the writers never conflict with
//! each other. Phases, each bounded by its operation count and by `--max-seconds`:
//!
//! - `add`: create `--objects` new objects (oids from `new_oids`), `--objects-per-txn` per
//!   transaction; an operation is one object, the latency is the transaction's.
//! - `update`: write a new revision of every object, same transaction size.
//! - `cold-read`: load every object once (`loadBefore(oid, maxtid)`), `--pipeline` requests
//!   in flight per connection. The first reads after the writes: what the server has to
//!   find on its own (its caches and the OS page cache decide how cold that really is).
//! - `warm-read`: the same pass again, everything recently read.
//! - `mixed`: per connection, batches of 9 pipelined loads each followed by a 1-object
//!   commit (90 % reads), `--objects` operations in all.
//!
//! The objects are `persistent.mapping.PersistentMapping` records (class pickle + state
//! pickle, as ZODB writes them), so Python ZODB can load what the benchmark wrote. Nothing
//! links them to the root: on a database that matters they are garbage for the next pack,
//! but run benchmarks against a scratch storage anyway.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::client::{Client, ClientError, MAXTID, Oid, Tid};
use crate::cli::{BenchArgs, BenchPhase};
use crate::pickle;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a reply may take once sent (past the phase deadline, in-flight calls drain).
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
const LOADS_PER_MIXED_COMMIT: usize = 9;
/// Characters of filler text per object (records come out at about 160 bytes).
const PAYLOAD: usize = 100;

/// The class pickle of a PersistentMapping record, as ZODB writes it (without the memo put).
const MAPPING_CLASS: &[u8] = b"\x80\x03cpersistent.mapping\nPersistentMapping\n.";

/// A ZODB data record for object number `n` at revision `rev`:
/// `PersistentMapping({'n': n, 'rev': rev, 'payload': '...'})`.
pub fn mapping_record(n: u64, rev: u64) -> Vec<u8> {
    let data = pickle::Value::Dict(vec![
        (pickle::Value::Str("n".into()), pickle::Value::Int(n as i64)),
        (
            pickle::Value::Str("rev".into()),
            pickle::Value::Int(rev as i64),
        ),
        (
            pickle::Value::Str("payload".into()),
            pickle::Value::Str("x".repeat(PAYLOAD)),
        ),
    ]);
    let state = pickle::Value::Dict(vec![(pickle::Value::Str("data".into()), data)]);
    let mut record = MAPPING_CLASS.to_vec();
    // Plain data always pickles.
    record.extend(pickle::dumps(&state).unwrap_or_default());
    record
}

#[derive(Debug, Clone)]
struct Object {
    n: u64,
    oid: Oid,
    serial: Tid,
    rev: u64,
    created: bool,
}

struct Worker {
    client: Option<Client>,
    objects: Vec<Object>,
}

#[derive(Default)]
struct Stats {
    ops: u64,
    transactions: u64,
    errors: u64,
    first_error: Option<String>,
    latencies: Vec<Duration>,
}

impl Stats {
    fn error(&mut self, e: &ClientError) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }

    fn merge(&mut self, o: Stats) {
        self.ops += o.ops;
        self.transactions += o.transactions;
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        self.latencies.extend(o.latencies);
    }
}

/// One phase's figures, as printed.
#[derive(Debug, Serialize)]
pub struct PhaseReport {
    pub phase: String,
    pub ops: u64,
    pub transactions: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    /// This process's own CPU (all its threads) during the phase, user and system: what the
    /// load generator took from a machine it shares with the server.
    pub client_user_s: f64,
    pub client_sys_s: f64,
    /// `(client_user_s + client_sys_s) / ops`, in microseconds.
    pub client_cpu_us_per_op: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    address: &'a str,
    storage: &'a str,
    encoding: &'a str,
    connections: usize,
    objects: usize,
    objects_per_txn: usize,
    pipeline: usize,
    phases: Vec<PhaseReport>,
}

/// User and system CPU seconds used so far by this process (all threads).
fn cpu_times() -> (f64, f64) {
    use nix::sys::resource::{UsageWho, getrusage};
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 * 1e-6;
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => (secs(u.user_time()), secs(u.system_time())),
        // getrusage(RUSAGE_SELF) cannot fail on Linux; zeros only blank the figure.
        Err(_) => (0.0, 0.0),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

pub fn run(args: &BenchArgs) -> Result<u8> {
    for (name, v) in [
        ("--connections", args.connections),
        ("--objects", args.objects),
        ("--objects-per-txn", args.objects_per_txn),
        ("--pipeline", args.pipeline),
    ] {
        if v == 0 {
            return Err(crate::error::usage(anyhow::anyhow!(
                "{name} must be at least 1"
            )));
        }
    }
    if args.max_seconds == 0 {
        return Err(crate::error::usage(anyhow::anyhow!(
            "--max-seconds must be at least 1"
        )));
    }
    run_bench(args)
}

fn run_bench(args: &BenchArgs) -> Result<u8> {
    let mut clients = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let mut c = Client::connect(&args.address, CONNECT_TIMEOUT).map_err(crate::error::usage)?;
        c.set_reply_timeout(REPLY_TIMEOUT)
            .context("setting the reply timeout")?;
        match c.register(&args.storage, false) {
            Ok(_) => {}
            // e.g. an unknown storage name or a read-only server: the user's to fix.
            Err(e @ ClientError::Remote { .. }) => {
                return Err(crate::error::usage(
                    anyhow::Error::new(e)
                        .context(format!("registering storage {:?}", args.storage)),
                ));
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("registering storage {:?}", args.storage)));
            }
        }
        clients.push(c);
    }
    let encoding = match clients[0].encoding() {
        super::wire::Encoding::Pickle => "pickle (Z5)",
        super::wire::Encoding::Msgpack => "msgpack (M5)",
    };

    // Oids for all objects, dealt round-robin to the connections.
    let mut oids = Vec::with_capacity(args.objects);
    while oids.len() < args.objects {
        let batch = clients[0].new_oids(100).context("new_oids")?;
        if batch.is_empty() {
            bail!("the server returned no new oids");
        }
        oids.extend(batch);
    }
    oids.truncate(args.objects);
    let mut workers: Vec<Worker> = clients
        .into_iter()
        .map(|c| Worker {
            client: Some(c),
            objects: Vec::new(),
        })
        .collect();
    for (n, oid) in oids.into_iter().enumerate() {
        workers[n % args.connections].objects.push(Object {
            n: n as u64,
            oid,
            serial: [0; 8],
            rev: 0,
            created: false,
        });
    }

    let mut phases = args.phases.clone();
    if !phases.contains(&BenchPhase::Add) {
        // Every other phase needs the objects: create them, unmeasured.
        if !args.json {
            eprintln!(
                "zodbctl bench: creating {} objects first (not measured)",
                args.objects
            );
        }
        let (w, stats) = run_phase(BenchPhase::Add, workers, args, None);
        workers = w;
        if let Some(e) = stats.first_error {
            bail!("creating the objects failed: {e}");
        }
    }
    let mut reports = Vec::new();
    let show_progress = std::io::stderr().is_terminal();
    let mut failed = false;
    for phase in phases.drain(..) {
        let bar = if show_progress {
            let bar = ProgressBar::with_draw_target(
                Some(args.objects as u64),
                ProgressDrawTarget::stderr(),
            );
            if let Ok(style) =
                ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} {per_sec} {elapsed}")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(phase.to_string());
            Some(bar)
        } else {
            None
        };
        let cpu0 = cpu_times();
        let started = Instant::now();
        let (w, mut stats) = run_phase(phase, workers, args, bar.clone());
        let seconds = started.elapsed().as_secs_f64();
        let cpu1 = cpu_times();
        let (user, sys) = ((cpu1.0 - cpu0.0).max(0.0), (cpu1.1 - cpu0.1).max(0.0));
        workers = w;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        stats.latencies.sort_unstable();
        failed |= stats.errors > 0;
        reports.push(PhaseReport {
            phase: phase.to_string(),
            ops: stats.ops,
            transactions: stats.transactions,
            seconds,
            ops_per_sec: if seconds > 0.0 {
                stats.ops as f64 / seconds
            } else {
                0.0
            },
            p50_ms: percentile(&stats.latencies, 0.50),
            p99_ms: percentile(&stats.latencies, 0.99),
            errors: stats.errors,
            client_user_s: user,
            client_sys_s: sys,
            client_cpu_us_per_op: if stats.ops > 0 {
                (user + sys) / stats.ops as f64 * 1e6
            } else {
                0.0
            },
            first_error: stats.first_error,
        });
        if workers.iter().all(|w| w.client.is_none()) {
            break;
        }
    }
    for w in workers {
        if let Some(c) = w.client {
            c.close();
        }
    }

    let report = Report {
        address: &args.address,
        storage: &args.storage,
        encoding,
        connections: args.connections,
        objects: args.objects,
        objects_per_txn: args.objects_per_txn,
        pipeline: args.pipeline,
        phases: reports,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    if failed {
        for p in &report.phases {
            if let Some(e) = &p.first_error {
                eprintln!(
                    "zodbctl bench: {}: {} errors, first: {e}",
                    p.phase, p.errors
                );
            }
        }
        return Ok(crate::error::EXIT_FAILURE);
    }
    Ok(0)
}

fn print_table(r: &Report) {
    println!(
        "zodbctl bench {} (storage {}, {}): {} connections, {} objects, {} per transaction, pipeline {}",
        r.address, r.storage, r.encoding, r.connections, r.objects, r.objects_per_txn, r.pipeline
    );
    println!(
        "{:<10} {:>9} {:>7} {:>9} {:>11} {:>9} {:>9} {:>14} {:>7}",
        "phase", "ops", "txns", "seconds", "ops/s", "p50 ms", "p99 ms", "client CPU/op", "errors"
    );
    for p in &r.phases {
        println!(
            "{:<10} {:>9} {:>7} {:>9.3} {:>11.1} {:>9.3} {:>9.3} {:>11.2} µs {:>7}",
            p.phase,
            p.ops,
            p.transactions,
            p.seconds,
            p.ops_per_sec,
            p.p50_ms,
            p.p99_ms,
            p.client_cpu_us_per_op,
            p.errors
        );
    }
    println!("(client CPU/op: this process's user+system CPU in the phase, per operation)");
}

/// Run one phase on every connection at once; the workers come back for the next phase.
///
/// A thread per connection with blocking sockets, no async runtime: a read that waits costs
/// one wake-up and nothing else. (Driving every connection from one thread with `poll`
/// was measured too: a poll and a read per wake-up instead of a read, and one thread for
/// all of them, cost more CPU per load and gave fewer loads/s.)
fn run_phase(
    phase: BenchPhase,
    workers: Vec<Worker>,
    args: &BenchArgs,
    bar: Option<ProgressBar>,
) -> (Vec<Worker>, Stats) {
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let per_txn = args.objects_per_txn;
    let pipeline = args.pipeline;
    let mixed_ops = args.objects.div_ceil(args.connections);
    let run_one = |mut w: Worker| {
        let mut stats = Stats::default();
        if let Some(mut client) = w.client.take() {
            let alive = match phase {
                BenchPhase::Add | BenchPhase::Update => write_phase(
                    &mut client,
                    &mut w.objects,
                    phase,
                    per_txn,
                    deadline,
                    &mut stats,
                    &bar,
                ),
                BenchPhase::ColdRead | BenchPhase::WarmRead => {
                    let targets: Vec<usize> = (0..w.objects.len())
                        .filter(|&i| w.objects[i].created)
                        .collect();
                    read_pass(
                        &mut client,
                        &w.objects,
                        &targets,
                        pipeline,
                        deadline,
                        &mut stats,
                        &bar,
                    )
                }
                BenchPhase::Mixed => mixed_phase(
                    &mut client,
                    &mut w.objects,
                    mixed_ops,
                    deadline,
                    &mut stats,
                    &bar,
                ),
            };
            if alive {
                w.client = Some(client);
            }
        }
        (w, stats)
    };
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = workers
            .into_iter()
            .map(|w| scope.spawn(|| run_one(w)))
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    let mut workers = Vec::with_capacity(results.len());
    let mut total = Stats::default();
    // A worker thread only fails by panicking, which nothing in it does on server input.
    for (w, s) in results.into_iter().flatten() {
        workers.push(w);
        total.merge(s);
    }
    (workers, total)
}

/// Whether the connection is still usable after an error.
fn survivable(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Remote { .. } | ClientError::Conflict(_) | ClientError::Unexpected { .. }
    )
}

fn write_phase(
    client: &mut Client,
    objects: &mut [Object],
    phase: BenchPhase,
    per_txn: usize,
    deadline: Instant,
    stats: &mut Stats,
    bar: &Option<ProgressBar>,
) -> bool {
    let add = phase == BenchPhase::Add;
    for chunk in objects.chunks_mut(per_txn) {
        if Instant::now() >= deadline {
            break;
        }
        let todo: Vec<&mut Object> = chunk.iter_mut().filter(|o| o.created != add).collect();
        if todo.is_empty() {
            continue;
        }
        let stores: Vec<(Oid, Tid, Vec<u8>)> = todo
            .iter()
            .map(|o| (o.oid, o.serial, mapping_record(o.n, o.rev + 1)))
            .collect();
        let t0 = Instant::now();
        match client.commit(&format!("zodbctl bench {phase}"), &stores) {
            Ok(tid) => {
                stats.latencies.push(t0.elapsed());
                stats.transactions += 1;
                stats.ops += todo.len() as u64;
                if let Some(bar) = bar {
                    bar.inc(todo.len() as u64);
                }
                for o in todo {
                    o.serial = tid;
                    o.rev += 1;
                    o.created = true;
                }
            }
            Err(e) => {
                stats.error(&e);
                if !survivable(&e) {
                    return false;
                }
            }
        }
    }
    true
}

/// One connection's pass over some of its objects: `loadBefore(oid, maxtid)` for each, up
/// to `pipeline` requests in flight.
///
/// Requests are written in batches: once half the pipeline is free (or nothing is in
/// flight), everything it has room for goes out in one write; the replies a read brings in
/// are all taken before the next write. Fewer, larger writes and reads on both sides,
/// instead of a write and a wake-up for every reply or two. A request's latency runs from
/// its batch's write to the read that brought its reply: one clock reading per batch and
/// per read, not two per request.
struct ReadPass<'a> {
    objects: &'a [Object],
    targets: &'a [usize],
    next: usize,
    pipeline: usize,
    in_flight: VecDeque<(i64, Instant)>,
}

impl<'a> ReadPass<'a> {
    fn new(objects: &'a [Object], targets: &'a [usize], pipeline: usize) -> Self {
        ReadPass {
            objects,
            targets,
            next: 0,
            pipeline,
            in_flight: VecDeque::with_capacity(pipeline),
        }
    }

    /// Send the next batch of requests if it is time to; `now` is their send time.
    fn refill(
        &mut self,
        client: &mut Client,
        now: Instant,
        deadline: Instant,
    ) -> Result<(), ClientError> {
        let refill_at = if self.in_flight.is_empty() {
            0
        } else {
            self.pipeline / 2
        };
        if self.in_flight.len() > refill_at || now >= deadline || self.next >= self.targets.len() {
            return Ok(());
        }
        while self.in_flight.len() < self.pipeline && self.next < self.targets.len() {
            let o = &self.objects[self.targets[self.next]];
            self.next += 1;
            let id = client.queue_load(&o.oid, &MAXTID)?;
            self.in_flight.push_back((id, now));
        }
        client.flush()
    }

    /// Take one reply (reading if none is buffered), then every reply already buffered.
    fn take_replies(&mut self, client: &mut Client, stats: &mut Stats) -> Result<u64, ClientError> {
        let mut done = 0;
        loop {
            let (id, result) = client.next_load_reply()?;
            // Replies come in order from both servers; a search covers any other order.
            let sent = match self.in_flight.front() {
                Some(&(first, t)) if first == id => {
                    self.in_flight.pop_front();
                    Some(t)
                }
                _ => self
                    .in_flight
                    .iter()
                    .position(|&(x, _)| x == id)
                    .and_then(|i| self.in_flight.remove(i))
                    .map(|(_, t)| t),
            };
            if let Some(t0) = sent {
                match result {
                    Ok(()) => {
                        stats
                            .latencies
                            .push(client.read_at().saturating_duration_since(t0));
                        stats.ops += 1;
                        done += 1;
                    }
                    Err(e) => stats.error(&e),
                }
            }
            if self.in_flight.is_empty() || !client.reply_ready() {
                return Ok(done);
            }
        }
    }
}

/// Load `objects[targets]` on one connection.
fn read_pass(
    client: &mut Client,
    objects: &[Object],
    targets: &[usize],
    pipeline: usize,
    deadline: Instant,
    stats: &mut Stats,
    bar: &Option<ProgressBar>,
) -> bool {
    let mut pass = ReadPass::new(objects, targets, pipeline);
    loop {
        if let Err(e) = pass.refill(client, Instant::now(), deadline) {
            stats.error(&e);
            return false;
        }
        if pass.in_flight.is_empty() {
            return true;
        }
        match pass.take_replies(client, stats) {
            Ok(done) => {
                if let Some(bar) = bar {
                    bar.inc(done);
                }
            }
            Err(e) => {
                stats.error(&e);
                return false;
            }
        }
    }
}

fn mixed_phase(
    client: &mut Client,
    objects: &mut [Object],
    target_ops: usize,
    deadline: Instant,
    stats: &mut Stats,
    bar: &Option<ProgressBar>,
) -> bool {
    let created: Vec<usize> = (0..objects.len()).filter(|&i| objects[i].created).collect();
    if created.is_empty() {
        return true;
    }
    let mut cursor = 0;
    let mut done = 0usize;
    while done < target_ops && Instant::now() < deadline {
        let loads = LOADS_PER_MIXED_COMMIT.min(target_ops - done);
        let batch: Vec<usize> = (0..loads)
            .map(|k| created[(cursor + k) % created.len()])
            .collect();
        cursor += loads;
        if !read_pass(client, objects, &batch, loads, deadline, stats, bar) {
            return false;
        }
        done += loads;
        if done >= target_ops || Instant::now() >= deadline {
            break;
        }
        let i = created[cursor % created.len()];
        let o = &mut objects[i];
        let store = [(o.oid, o.serial, mapping_record(o.n, o.rev + 1))];
        let t0 = Instant::now();
        match client.commit("zodbctl bench mixed", &store) {
            Ok(tid) => {
                stats.latencies.push(t0.elapsed());
                stats.transactions += 1;
                stats.ops += 1;
                if let Some(bar) = bar {
                    bar.inc(1);
                }
                o.serial = tid;
                o.rev += 1;
            }
            Err(e) => {
                stats.error(&e);
                if !survivable(&e) {
                    return false;
                }
            }
        }
        done += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_two_pickles_of_a_mapping() {
        let r = mapping_record(7, 2);
        assert_eq!(
            pickle::record_class(&r).unwrap(),
            ("persistent.mapping".into(), "PersistentMapping".into())
        );
        let rec = pickle::decode_record(&r).unwrap();
        let pickle::Value::Dict(state) = rec.state else {
            panic!()
        };
        assert_eq!(state[0].0, pickle::Value::Str("data".into()));
        assert!(pickle::references(&r).unwrap().is_empty());
    }

    #[test]
    fn percentiles() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&d, 0.5), 51.0);
        assert_eq!(percentile(&d, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
