//! The two-phase commit: `tpc_begin`, recorded stores, `vote` (waiting for the fair commit
//! lock, then replaying the recorded operations), `tpc_finish` and aborts.

use super::*;

impl Conn {
    pub(super) fn tpc_begin(&mut self, a: &[Value]) -> Result<Option<Value>, Fail> {
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
            voted_at: None,
        });
        if let Some(st) = &self.storage {
            st.stats.active_txns.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Some(Value::Nil))
    }

    /// Check that `given` is the connection's transaction.
    pub(super) fn txn_for(&mut self, given: &Value) -> Result<&mut Txn, Fail> {
        match &self.txn {
            Some(t) if t.id == *given => {}
            Some(t) => return Err(Fail::txn_error(Some(&t.id), given)),
            None => return Err(Fail::txn_error(None, given)),
        }
        self.txn
            .as_mut()
            .ok_or_else(|| Fail::txn_error(None, given))
    }

    pub(super) fn record(
        &mut self,
        given: &Value,
        op: Op,
        counts: bool,
    ) -> Result<Option<Value>, Fail> {
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

    pub(super) fn vote(&mut self, req: &Request) -> Result<Option<Value>, Fail> {
        let given = need(&req.args, 0, "txn")?.clone();
        if self.read_only {
            return Err(Fail::read_only());
        }
        let txn = self.txn_for(&given)?;
        // A vote repeated after conflict resolution keeps the first one's time.
        txn.voted_at.get_or_insert_with(std::time::Instant::now);
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
    pub(super) async fn on_lock(&mut self, guard: OwnedMutexGuard<()>) {
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

    pub(super) async fn tpc_finish(&mut self, req: &Request) -> Result<Option<Value>, Fail> {
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
        let undos = txn
            .ops
            .iter()
            .filter(|op| matches!(op, Op::Undo { .. }))
            .count();
        let voted_at = txn.voted_at;
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
        // Replication: the transaction is durable here; senders may ship it now, and in
        // sync mode it becomes visible (and is acknowledged) only once a replica has it, so
        // that no client ever sees a transaction the standby lacks.
        if durable.is_ok()
            && let Some(r) = st.replication()
            && let Some(end) = commit.end()
        {
            r.feed
                .durable(r.fs.generation(), end, crate::storage::Tid::from_bytes(tid));
            r.feed.wait_replicated(r, end).await;
        }
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
                st.stats.committed(voted_at.map(|t| t.elapsed()));
                st.stats.undos.fetch_add(undos as u64, Ordering::Relaxed);
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
    pub(super) fn abort_txn(&mut self) {
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
}

pub(super) fn log_lock(storage: &str, what: &str, waiting: i64) {
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
pub(super) fn replay(st: &StorageState, txn: &mut Txn) -> Result<VoteResult, StoreError> {
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
