//! `pack(t, wait)` (zeo-protocol.md §3.9): through the backend, off the shard threads.
//!
//! The pack runs on a thread of its own, at a lower CPU priority (nice +10): it reads and
//! writes the whole file, and a pack competing for the CPU on equal terms would show in the
//! commit latency of every client. The engine takes its commit lock only for the final swap
//! (storage/pack), so commits of every connection go on meanwhile.
//!
//! The connection never waits for the pack: with `wait` true the reply is sent by the pack's
//! task when it is done (as ZEO's server replies through a future), and the connection keeps
//! processing its other requests meanwhile. That matters: a client that packs from one
//! thread and commits from another through the same ClientStorage has its transaction's
//! `tpc_finish` queued on this connection while the pack waits for that transaction's
//! commit lock. With `wait` false the reply is sent at once. Progress and the result go to the server
//! log (`pack(time=…) started...`, `pack(time=…) complete: …`, as operators grep for
//! them); after a pack that changed the file every connection of the storage gets
//! `info({length, size})`, as ZEO sends it.

use super::*;

impl Conn {
    pub(super) fn pack(&mut self, msgid: &Value, a: &[Value]) -> Result<Option<Value>, Fail> {
        let st = Arc::clone(self.storage()?);
        let t = match need(a, 0, "t")? {
            Value::Float(f) => *f,
            Value::Int(i) => *i as f64,
            _ => return Err(Fail::type_error("pack time must be a number")),
        };
        // ClientStorage sends wait=1 unless told otherwise; a missing argument waits too.
        let wait = a.get(1).is_none() || truthy(arg(a, 1));
        if st.backend.is_read_only() {
            return Err(StoreError::ReadOnly.into());
        }
        if let Some(why) = st.writes_refused() {
            // A replica follows its primary's packs (a full resynchronisation); packing it
            // alone would make its file differ from the primary's.
            warn!(target: LOG_STORAGE, "({}) pack refused: {why}", self.label);
            return Err(Fail::read_only());
        }
        let label = self.label.clone();
        info!(target: LOG_STORAGE, "({label}) pack(time={t}) started...");
        let job = async move {
            let backend = Arc::clone(&st.backend);
            let (tx, rx) = tokio::sync::oneshot::channel();
            let spawned = std::thread::Builder::new()
                .name("zodbctl-pack".into())
                .spawn(move || {
                    lower_priority();
                    let _ = tx.send(backend.pack(t));
                });
            let done = match spawned {
                Ok(_) => rx
                    .await
                    .map_err(|_| StoreError::Io("the pack thread ended without a result".into()))
                    .and_then(|r| r),
                Err(e) => Err(StoreError::Io(format!("cannot start the pack thread: {e}"))),
            };
            match done {
                Ok(summary) => {
                    info!(target: LOG_STORAGE, "({label}) pack(time={t}) complete: {summary}");
                    // Replicas of a rewritten file start again with a full copy.
                    if let Some(r) = st.replication()
                        && r.feed.current().generation != r.fs.generation()
                    {
                        r.feed.reset(&r.fs);
                    }
                    let info = st.backend.info();
                    let seq = st.seq();
                    for r in seq.conns.values() {
                        let msg = codec::call(
                            r.encoding,
                            "info",
                            vec![Value::Map(vec![
                                (sv("length"), Value::Int(info.length as i64)),
                                (sv("size"), Value::Int(info.size as i64)),
                            ])],
                        );
                        r.outbox.push(&msg);
                        r.outbox.flush();
                    }
                    Ok(())
                }
                Err(e) => {
                    error!(target: LOG_STORAGE, "({label}) pack(time={t}) failed: {e}");
                    Err(e)
                }
            }
        };
        if !wait {
            tokio::spawn(job);
            return Ok(Some(Value::Nil));
        }
        let (out, enc, msgid) = (self.out.clone(), self.enc, msgid.clone());
        tokio::spawn(async move {
            match job.await {
                Ok(()) => {
                    out.send_with(|buf| codec::reply_into(enc, &msgid, Value::Nil, buf));
                }
                Err(e) => {
                    if let Fail::Error(class, state) = Fail::from(e) {
                        out.send_with(|buf| codec::error_into(enc, &msgid, &class, state, buf));
                    }
                }
            }
            out.flush();
        });
        Ok(None)
    }
}

/// Nice the calling thread by 10 (Linux: `setpriority` on a thread id affects that thread
/// only). Best effort: a failure leaves the pack at normal priority.
fn lower_priority() {
    // SAFETY: gettid and setpriority take no pointers.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}
