//! Transaction and record iterators (`iterator_start`, `iterator_next`, ...).

use super::*;

impl Conn {
    pub(super) fn add_iter(&mut self, it: Iter) -> Result<Option<Value>, Fail> {
        if self.iters.len() >= MAX_ITERATORS {
            return Err(Fail::args(
                "builtins.ValueError",
                "too many open iterators on this connection",
            ));
        }
        let iid = self.next_iid;
        self.next_iid += 1;
        self.iters.insert(iid, it);
        Ok(Some(Value::Int(iid)))
    }

    pub(super) fn iterator_start(&mut self, a: &[Value]) -> Result<Option<Value>, Fail> {
        let start = opt_tid_at(a, 0, "start")?;
        let stop = opt_tid_at(a, 1, "stop")?;
        let cursor = self.storage()?.backend.iterator(start, stop)?;
        self.add_iter(Iter::Txn { cursor, last: None })
    }

    pub(super) fn iterator_next(&mut self, a: &[Value]) -> Result<Option<Value>, Fail> {
        let iid = int_at(a, 0, 0, "iid")?;
        let Some(Iter::Txn { cursor, last }) = self.iters.get_mut(&iid) else {
            return Err(Fail::new(
                "builtins.KeyError",
                Value::Tuple(vec![Value::Int(iid)]),
            ));
        };
        match cursor.next_txn()? {
            Some(t) => {
                let v = Value::Tuple(vec![
                    bv(&t.tid),
                    Value::Str((t.status as char).to_string()),
                    bv(&t.user),
                    bv(&t.description),
                    match &t.extension {
                        Value::Map(_) => t.extension.clone(),
                        _ => Value::Map(vec![]),
                    },
                ]);
                *last = Some(t);
                Ok(Some(v))
            }
            None => {
                self.iters.remove(&iid);
                Ok(Some(Value::Nil))
            }
        }
    }

    pub(super) fn iterator_record_start(&mut self, a: &[Value]) -> Result<Option<Value>, Fail> {
        let iid = int_at(a, 0, 0, "iid")?;
        let tid = oid_at(a, 1, "tid")?;
        let records = match self.iters.get(&iid) {
            Some(Iter::Txn { last: Some(t), .. }) if t.tid == tid => t.records.clone(),
            _ => {
                return Err(Fail::args(
                    "builtins.Exception",
                    format!("Out-of-order request for record iterator for {}", hex(&tid)),
                ));
            }
        };
        self.add_iter(Iter::Records(records.into_iter()))
    }

    pub(super) fn iterator_record_next(&mut self, a: &[Value]) -> Result<Option<Value>, Fail> {
        let iid = int_at(a, 0, 0, "iid")?;
        let Some(Iter::Records(it)) = self.iters.get_mut(&iid) else {
            return Err(Fail::new(
                "builtins.KeyError",
                Value::Tuple(vec![Value::Int(iid)]),
            ));
        };
        match it.next() {
            Some(r) => Ok(Some(Value::Tuple(vec![
                bv(&r.oid),
                bv(&r.tid),
                r.data.map_or(Value::Nil, Value::Bytes),
                r.data_txn.map_or(Value::Nil, |t| bv(&t)),
            ]))),
            None => {
                self.iters.remove(&iid);
                Ok(Some(Value::Nil))
            }
        }
    }
}
