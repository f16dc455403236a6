//! Reads: `loadBefore`, `history`, `record_iternext`, `lastTransaction`,
//! `getInvalidations`, and oid allocation.

use super::*;

impl Conn {
    pub(super) fn last_transaction(&self, req: &Request) -> Result<Option<Value>, Fail> {
        let st = self.storage()?;
        let _seq = st.seq();
        self.send_reply(&req.msgid, bv(&st.backend.last_transaction()));
        Ok(None)
    }

    pub(super) fn get_invalidations(&self, req: &Request) -> Result<Option<Value>, Fail> {
        let st = self.storage()?;
        let tid = oid_at(&req.args, 0, "tid")?;
        let seq = st.seq();
        let mut found = StorageState::invalidations_since(&seq, &tid);
        if found.is_none() {
            found = self.invalidations_by_age(st, &tid);
        }
        match found {
            Some((latest, oids)) => {
                info!(
                    target: LOG_STORAGE,
                    "({}) Return {} invalidations up to tid {}",
                    self.label,
                    oids.len(),
                    hex(&latest)
                );
                self.send_reply(&req.msgid, Value::Tuple(vec![bv(&latest), oid_list(&oids)]));
            }
            None => {
                info!(target: LOG_STORAGE, "({}) tid to old for invq {}", self.label, hex(&tid));
                self.send_reply(&req.msgid, Value::Nil);
            }
        }
        Ok(None)
    }

    /// The `invalidation-age` fallback: scan the storage's transactions after `tid`.
    pub(super) fn invalidations_by_age(
        &self,
        st: &StorageState,
        tid: &Tid,
    ) -> Option<(Tid, Vec<Oid>)> {
        let age = self.ctx.config.invalidation_age?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs_f64();
        if now - tid_time(tid) > age {
            return None;
        }
        let start = u64::from_be_bytes(*tid).checked_add(1)?.to_be_bytes();
        let mut cursor = st.backend.iterator(Some(start), None).ok()?;
        let mut latest = None;
        let mut seen = HashSet::new();
        let mut oids = Vec::new();
        while let Ok(Some(t)) = cursor.next_txn() {
            latest = Some(t.tid);
            for r in t.records {
                if seen.insert(r.oid) {
                    oids.push(r.oid);
                }
            }
        }
        latest.map(|l| (l, oids))
    }

    pub(super) fn load_before(&self, req: &Request) -> Result<Option<Value>, Fail> {
        let a = req.args.as_slice();
        let st = self.storage()?;
        st.stats.loads.fetch_add(1, Ordering::Relaxed);
        let oid = oid_at(a, 0, "oid")?;
        let before = oid_at(a, 1, "tid")?;
        let _visible = st.visibility.read().unwrap_or_else(|e| e.into_inner());
        let v = match st.backend.load_before(&oid, &before)? {
            Some((data, start, end)) => Value::Tuple(vec![
                Value::Bytes(data),
                bv(&start),
                end.map_or(Value::Nil, |e| bv(&e)),
            ]),
            None => Value::Nil,
        };
        self.send_reply(&req.msgid, v);
        Ok(None)
    }

    pub(super) fn history(&self, a: &[Value]) -> Result<Option<Value>, Fail> {
        let st = self.storage()?;
        let oid = oid_at(a, 0, "oid")?;
        let size = int_at(a, 1, 1, "size")?.max(1) as usize;
        let entries = st.backend.history(&oid, size)?;
        Ok(Some(Value::Tuple(
            entries
                .iter()
                .map(|e| {
                    // Standard keys override extension items here (§12.16).
                    let mut m = ext_items(&e.extension);
                    set_key(&mut m, "time", Value::Float(tid_time(&e.tid)));
                    set_key(&mut m, "user_name", bv(&e.user));
                    set_key(&mut m, "description", bv(&e.description));
                    set_key(&mut m, "tid", bv(&e.tid));
                    set_key(&mut m, "size", Value::Int(e.size as i64));
                    Value::Map(m)
                })
                .collect(),
        )))
    }

    pub(super) fn record_iternext(&self, a: &[Value]) -> Result<Option<Value>, Fail> {
        let st = self.storage()?;
        if !st.backend.info().supports_record_iternext {
            return Err(Fail::args(
                "builtins.AttributeError",
                "this storage has no record_iternext",
            ));
        }
        let next = opt_tid_at(a, 0, "next")?;
        let (oid, tid, data, next) = st.backend.record_iternext(next.as_ref())?;
        Ok(Some(Value::Tuple(vec![
            bv(&oid),
            bv(&tid),
            Value::Bytes(data),
            next.map_or(Value::Nil, |n| bv(&n)),
        ])))
    }

    pub(super) fn new_oids(&self, n: usize) -> Result<Value, Fail> {
        if self.read_only {
            return Err(Fail::read_only());
        }
        let oids = self.storage()?.backend.new_oids(n)?;
        Ok(oid_list(&oids))
    }
}
