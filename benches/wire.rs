//! The ZEO message codec on the server's per-request path: decoding a `loadBefore` request
//! and encoding its reply as a ready frame, in both encodings, plus the commit path's
//! `storea` request and `invalidateTransaction` call.
//!
//!     cargo bench --bench wire
//!
//! Payloads are what `zodbctl bench` sends and gets (its `PersistentMapping` record, 8-byte
//! oids and tids, the loadBefore msgid `(oid, tid)`). Each case runs in batches of about
//! 2 ms; the figure kept is the fastest batch's time per operation (with the median beside
//! it), because on a shared machine the slower batches measure the neighbours. An encode
//! consumes its value, as the server's does: the values are cloned before the batch starts.
//! Every operation includes dropping its result (the request, the frame), as the server
//! does once it is answered or written.
//! Figures go to docs/benchmarks.md ("Wire codec"). Built but never run by `cargo test`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use zodbctl::zeo::codec;
use zodbctl::zeo::wire::{self, Encoding, Value};

const OID: [u8; 8] = [0, 0, 0, 0, 0, 0, 0x12, 0x34];
const TID: [u8; 8] = [0x03, 0xf1, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77];
const MAXTID: [u8; 8] = [0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];

const BATCHES: usize = 60;
const BATCH_TIME: Duration = Duration::from_millis(2);

fn b(x: &[u8]) -> Value {
    Value::Bytes(x.to_vec())
}

/// Time `op` over batches of inputs made by `input` (outside the timing); returns the
/// fastest and the median batch's nanoseconds per operation.
fn measure<I, O>(mut input: impl FnMut() -> I, mut op: impl FnMut(I) -> O) -> (f64, f64) {
    // Size the batch to about BATCH_TIME, warming up on the way.
    let mut n = 16usize;
    loop {
        let inputs: Vec<I> = (0..n).map(|_| input()).collect();
        let t = Instant::now();
        for i in inputs {
            black_box(op(black_box(i)));
        }
        if t.elapsed() >= BATCH_TIME || n >= 1 << 20 {
            break;
        }
        n *= 2;
    }
    let mut per_op: Vec<f64> = (0..BATCHES)
        .map(|_| {
            let inputs: Vec<I> = (0..n).map(|_| input()).collect();
            let t = Instant::now();
            for i in inputs {
                black_box(op(black_box(i)));
            }
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    per_op.sort_by(f64::total_cmp);
    (per_op[0], per_op[per_op.len() / 2])
}

fn report(name: &str, (min, median): (f64, f64)) {
    println!("{name:<48} {min:>9.0} ns/op   (median {median:.0})");
}

/// Only the cases whose name contains `WIRE_BENCH` (for profiling one of them).
fn wanted(name: &str) -> bool {
    std::env::var("WIRE_BENCH").map_or(true, |f| name.contains(&f))
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing of ours.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let record = zodbctl::zeo::bench::mapping_record(4660, 1);
    let load_id = Value::Tuple(vec![b(&OID), b(&MAXTID)]);
    let load_reply = Value::Tuple(vec![b(&record), b(&TID), Value::Nil]);
    let txn = Value::Int((1 << 47) + 12345);
    let oids = Value::List((0..100u64).map(|i| b(&i.to_be_bytes())).collect());
    println!("record: {} bytes", record.len());
    for enc in [Encoding::Pickle, Encoding::Msgpack] {
        let n = match enc {
            Encoding::Pickle => "Z5",
            Encoding::Msgpack => "M5",
        };
        let load = wire::encode_request(enc, &load_id, false, "loadBefore", &[b(&OID), b(&MAXTID)])
            .expect("encodable");
        let name = format!("{n} decode loadBefore request");
        if wanted(&name) {
            report(&name, measure(|| &load, |p| codec::decode(enc, p)));
        }
        // What any decoder must spend: the request's values (six allocations), made and
        // dropped.
        let name = format!("{n} (floor: clone+drop of the decoded request)");
        if wanted(&name) {
            let decoded = codec::decode(enc, &load).expect("decodable");
            report(&name, measure(|| &decoded, |r| r.clone()));
        }
        let name = format!("{n} encode loadBefore reply frame");
        if wanted(&name) {
            report(
                &name,
                measure(
                    || load_reply.clone(),
                    |v| codec::reply_frame(enc, &load_id, v),
                ),
            );
        }
        // Into a connection's output buffer, as the outbox queues replies: the payload
        // encoded alone, then copied behind its length (the outbox's `send`), or the
        // frame encoded in place (`codec::reply_into`).
        let mut out: Vec<u8> = Vec::with_capacity(256 << 10);
        let name = format!("{n} reply queued: payload, then copied");
        if wanted(&name) {
            report(
                &name,
                measure(
                    || load_reply.clone(),
                    |v| {
                        if out.len() > 200 << 10 {
                            out.clear();
                        }
                        let p = codec::reply(enc, &load_id, v);
                        out.extend_from_slice(&(p.len() as u32).to_be_bytes());
                        out.extend_from_slice(&p);
                    },
                ),
            );
        }
        let name = format!("{n} reply queued: encoded in place (reply_into)");
        if wanted(&name) {
            report(
                &name,
                measure(
                    || load_reply.clone(),
                    |v| {
                        if out.len() > 200 << 10 {
                            out.clear();
                        }
                        codec::reply_into(enc, &load_id, v, &mut out);
                    },
                ),
            );
        }
        let storea = wire::encode_request(
            enc,
            &Value::Int(0),
            true,
            "storea",
            &[b(&OID), b(&TID), b(&record), txn.clone()],
        )
        .expect("encodable");
        let name = format!("{n} decode storea request");
        if wanted(&name) {
            report(&name, measure(|| &storea, |p| codec::decode(enc, p)));
        }
        let name = format!("{n} encode invalidateTransaction(100) frame");
        if wanted(&name) {
            report(
                &name,
                measure(
                    || vec![b(&TID), oids.clone()],
                    |args| codec::call_frame(enc, "invalidateTransaction", args),
                ),
            );
        }
    }
}
