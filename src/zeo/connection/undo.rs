//! `undoLog` / `undoInfo` and the maps they answer.

use super::*;

/// Extension items as map entries (an extension that is not a map contributes nothing).
pub(super) fn ext_items(ext: &Value) -> Vec<(Value, Value)> {
    match ext {
        Value::Map(m) => m.clone(),
        _ => Vec::new(),
    }
}

pub(super) fn set_key(map: &mut Vec<(Value, Value)>, key: &str, v: Value) {
    let k = sv(key);
    if let Some(slot) = map.iter_mut().find(|(mk, _)| *mk == k) {
        slot.1 = v;
    } else {
        map.push((k, v));
    }
}

pub(super) fn undo_entry_map(e: &UndoEntry) -> Vec<(Value, Value)> {
    // Reference quirk kept (§12.16): extension items override the standard keys.
    let mut m = vec![
        (sv("id"), bv(&e.id)),
        (sv("time"), Value::Float(tid_time(&e.tid))),
        (sv("user_name"), bv(&e.user)),
        (sv("size"), Value::Int(e.size as i64)),
        (sv("description"), bv(&e.description)),
    ];
    for (k, v) in ext_items(&e.extension) {
        if let Some(slot) = m.iter_mut().find(|(mk, _)| *mk == k) {
            slot.1 = v;
        } else {
            m.push((k, v));
        }
    }
    m
}

/// undoInfo's specification: every (key, value) must match; a `ZopeUndo.Prefix` value
/// matches by prefix.
pub(super) fn spec_matches(spec: &[(Value, Value)], entry: &[(Value, Value)]) -> bool {
    spec.iter().all(|(k, want)| {
        let Some((_, have)) = entry.iter().find(|(ek, _)| ek == k) else {
            return false;
        };
        match want {
            Value::Global { module, args, .. } if module == "ZopeUndo.Prefix" => {
                let prefix = match args.first() {
                    Some(Value::Str(s)) => s.as_bytes().to_vec(),
                    Some(Value::Bytes(b)) => b.clone(),
                    _ => return false,
                };
                match have {
                    Value::Str(s) => s.as_bytes().starts_with(&prefix),
                    Value::Bytes(b) => b.starts_with(&prefix),
                    _ => false,
                }
            }
            _ => {
                have == want
                    || match (have, want) {
                        (Value::Bytes(h), Value::Str(w)) => h == w.as_bytes(),
                        (Value::Str(h), Value::Bytes(w)) => h.as_bytes() == w.as_slice(),
                        _ => false,
                    }
            }
        }
    })
}

impl Conn {
    pub(super) async fn undo_info(
        // `&mut` although nothing changes: the future then needs `Conn: Send`, not `Sync`.
        &mut self,
        a: &[Value],
        spec: Option<Vec<(Value, Value)>>,
    ) -> Result<Option<Value>, Fail> {
        let st = self.storage()?;
        if !st.backend.info().supports_undo {
            return Ok(Some(Value::Tuple(vec![])));
        }
        let first = int_at(a, 0, 0, "first")?;
        let last = int_at(a, 1, -20, "last")?;
        // A filtered undo log may read far back into the file: off the shard's thread.
        let backend = Arc::clone(&st.backend);
        let entries = tokio::task::spawn_blocking(move || {
            let filter = |e: &UndoEntry| match &spec {
                Some(spec) => spec_matches(spec, &undo_entry_map(e)),
                None => true,
            };
            backend.undo_log(first, last, &filter)
        })
        .await
        .map_err(|e| Fail::Close(format!("undo log failed: {e}")))??;
        Ok(Some(Value::Tuple(
            entries
                .iter()
                .map(|e| Value::Map(undo_entry_map(e)))
                .collect(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undo_spec_matching() {
        let entry = vec![(sv("user_name"), bv(b"/ alice")), (sv("x"), Value::Int(1))];
        assert!(spec_matches(&[(sv("x"), Value::Int(1))], &entry));
        assert!(!spec_matches(&[(sv("x"), Value::Int(2))], &entry));
        let prefix = Value::Global {
            module: "ZopeUndo.Prefix".into(),
            name: "Prefix".into(),
            args: vec![sv("/ al")],
        };
        assert!(spec_matches(&[(sv("user_name"), prefix)], &entry));
    }
}
