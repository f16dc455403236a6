//! Blob methods: uploads (`storeBlobStart/Chunk/End`, `storeBlobShared`) and downloads
//! (`sendBlob`), and the blob directory layouts they write into.

use super::*;

/// Only plain file names from the client's temporary-file scheme (§8.2).
pub(super) fn valid_shared_blob_name(name: &str) -> bool {
    if name.contains('/') || name.contains('\\') || name.contains('\0') {
        return false;
    }
    name.ends_with(".tmp")
        || name
            .len()
            .checked_sub(5)
            .and_then(|i| name.get(i..i + 4))
            .is_some_and(|s| s == ".tmp")
}

/// The blob directory of an oid in the bushy layout: one `0x..` level per oid byte.
pub(super) fn bushy_dir(blob_dir: &Path, oid: &Oid) -> PathBuf {
    let mut p = blob_dir.to_path_buf();
    for b in oid {
        p.push(format!("0x{b:02x}"));
    }
    p
}

/// The blob directory of an oid per the directory's `.layout` (bushy unless it says lawn).
pub(super) fn oid_blob_dir(blob_dir: &Path, oid: &Oid) -> PathBuf {
    let layout = std::fs::read_to_string(blob_dir.join(".layout")).unwrap_or_default();
    if layout.trim() == "lawn" {
        blob_dir.join(repr_id(oid))
    } else {
        bushy_dir(blob_dir, oid)
    }
}

impl Conn {
    pub(super) fn blob_tmp_dir(&self) -> Result<PathBuf, Fail> {
        let st = self.storage()?;
        let dir = st
            .backend
            .blob_dir()
            .ok_or_else(|| {
                Fail::args(
                    "ZODB.POSException.Unsupported",
                    "this storage has no blob directory",
                )
            })?
            .join("tmp");
        std::fs::create_dir_all(&dir).map_err(|e| Fail::from(StoreError::from(e)))?;
        Ok(dir)
    }

    pub(super) fn blob_start(&mut self) -> Result<Option<Value>, Fail> {
        if self.upload.is_some() {
            return Err(Fail::args(
                "builtins.ValueError",
                "a blob upload is already in progress",
            ));
        }
        let dir = self.blob_tmp_dir()?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        for attempt in 0..100u32 {
            let path = dir.join(format!(
                "zeo-{}-{}-{nanos:x}-{attempt}.tmp",
                std::process::id(),
                self.id
            ));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    self.upload = Some(Upload { file, path });
                    return Ok(Some(Value::Nil));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(StoreError::from(e).into()),
            }
        }
        Err(StoreError::Io("cannot create a blob temporary file".into()).into())
    }

    pub(super) fn blob_end(&mut self, a: &[Value]) -> Result<Option<Value>, Fail> {
        let up = self
            .upload
            .take()
            .ok_or_else(|| Fail::args("builtins.ValueError", "no blob upload in progress"))?;
        let parsed = (|| {
            Ok::<_, Fail>((
                oid_at(a, 0, "oid")?,
                serial_at(a, 1)?,
                bytes_of(need(a, 2, "data")?, "data")?,
                need(a, 3, "txn")?.clone(),
            ))
        })();
        let (oid, serial, data, given) = match parsed {
            Ok(p) => p,
            Err(e) => {
                let _ = std::fs::remove_file(&up.path);
                return Err(e);
            }
        };
        drop(up.file);
        let op = Op::StoreBlob {
            oid,
            serial,
            data,
            file: up.path.clone(),
        };
        let r = self.record(&given, op, false);
        if r.is_err() {
            let _ = std::fs::remove_file(&up.path);
        }
        r
    }

    pub(super) fn blob_shared(&mut self, a: &[Value]) -> Result<Option<Value>, Fail> {
        let oid = oid_at(a, 0, "oid")?;
        let serial = serial_at(a, 1)?;
        let data = bytes_of(need(a, 2, "data")?, "data")?;
        let name = str_of(need(a, 3, "filename")?, "filename")?;
        let given = need(a, 4, "txn")?.clone();
        if !valid_shared_blob_name(&name) {
            error!(
                target: LOG_STORAGE,
                "({}) We're under attack! (bad filename to storeBlobShared, {name:?})", self.label
            );
            return Err(Fail::args(
                "builtins.ValueError",
                format!("bad blob file name {name:?}"),
            ));
        }
        let blob_dir = self
            .storage()?
            .backend
            .blob_dir()
            .ok_or_else(|| {
                Fail::args(
                    "ZODB.POSException.Unsupported",
                    "this storage has no blob directory",
                )
            })?
            .to_path_buf();
        let file = oid_blob_dir(&blob_dir, &oid).join(name);
        let op = Op::StoreBlob {
            oid,
            serial,
            data,
            file,
        };
        self.record(&given, op, false)
    }

    pub(super) async fn send_blob(&mut self, req: &Request) -> Result<Option<Value>, Fail> {
        let a = req.args.as_slice();
        let oid = oid_at(a, 0, "oid")?;
        let serial = oid_at(a, 1, "serial")?;
        let path = self.storage()?.backend.blob_file(&oid, &serial)?;
        let mut file = std::fs::File::open(&path).map_err(|_| {
            Fail::from(StoreError::BlobMissing {
                path: path.display().to_string(),
                oid,
                serial,
            })
        })?;
        let ids = || vec![bv(&oid), bv(&serial)];
        self.out
            .send(&codec::call(self.enc, "receiveBlobStart", ids()));
        let mut buf = vec![0u8; BLOB_CHUNK];
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    // The client is mid-download; only closing resets its state.
                    return Err(Fail::Close(format!("reading blob {}: {e}", path.display())));
                }
            };
            let mut args = ids();
            args.push(Value::Bytes(buf[..n].to_vec()));
            let msg = codec::call(self.enc, "receiveBlobChunk", args);
            if !self.out.send_paced(&msg).await {
                return Err(Fail::Close("client stopped reading a blob".into()));
            }
        }
        self.out
            .send(&codec::call(self.enc, "receiveBlobStop", ids()));
        Ok(Some(Value::Nil))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_blob_names() {
        assert!(valid_shared_blob_name("0x00igmk1ivy.tmp-"));
        assert!(valid_shared_blob_name("x.tmp"));
        assert!(!valid_shared_blob_name("../x.tmp"));
        assert!(!valid_shared_blob_name("x.tmpab"));
        assert!(!valid_shared_blob_name("x.blob"));
    }

    #[test]
    fn bushy_layout() {
        assert_eq!(
            bushy_dir(Path::new("b"), &[0, 0, 0, 0, 0, 0, 0, 0xcb]),
            Path::new("b/0x00/0x00/0x00/0x00/0x00/0x00/0x00/0xcb")
        );
    }
}
