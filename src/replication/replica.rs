//! The replica's side: connect to the primary, prove the position, apply what it streams,
//! and reconnect when the link drops, until the replica is promoted.
//!
//! Applying a `Txns` frame: the engine validates the transactions, installs their blob files,
//! writes them at the same offset and syncs (`FileStorage::prepare_replicated`); then, under
//! the server's visibility lock, the replica's own clients get their invalidations and the
//! transactions become visible; only then is the `Ack` sent. A kill at any point leaves a
//! file that is a prefix of the primary's (a torn tail is cut at the next open, as after any
//! crash), and the next handshake resumes from there.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tracing::{error, info, warn};

use super::primary::{self, Fed};
use super::protocol::{self, Kind, ProtoError};
use super::state::{self, State};
use super::{AbortOnDrop, LOG, Replication, lock};
use crate::storage::{Oid, Tid};

/// Pause between connection attempts, doubled up to the maximum while they fail.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Start following `from` (the task ends when the replica is promoted).
pub fn spawn(f: Fed, from: String) {
    let repl = Arc::clone(&f.repl);
    let h = tokio::spawn(async move {
        let mut pause = RETRY_MIN;
        loop {
            let started = Instant::now();
            // `zodbctl resync` ends the session at once; the next handshake asks for a copy.
            let result = tokio::select! {
                res = session(&f, &from) => res,
                _ = f.repl.kicked.notified() => Ok(()),
            };
            {
                let mut l = lock(&f.repl.link);
                l.connected = false;
                match &result {
                    Ok(()) => {}
                    Err(SessionError::Refused { code, message }) if *code != "not-ready" => {
                        l.phase = "refused";
                        l.refused = Some(code);
                        if l.error.as_deref() != Some(message.as_str()) {
                            error!(target: LOG, "storage '{}': the primary {from} refused this replica: {message}", f.repl.storage);
                        }
                        l.error = Some(message.clone());
                    }
                    Err(e) => {
                        l.phase = "connecting";
                        let msg = e.to_string();
                        if l.error.as_deref() != Some(msg.as_str()) {
                            warn!(target: LOG, "storage '{}': replication from {from}: {msg}", f.repl.storage);
                        }
                        l.error = Some(msg);
                    }
                }
            }
            if started.elapsed() > Duration::from_secs(10) {
                pause = RETRY_MIN;
            }
            let refused =
                matches!(&result, Err(SessionError::Refused { code, .. }) if *code != "not-ready");
            let wait = if refused { RETRY_MAX } else { pause };
            if !f.repl.resync_requested.load(Ordering::SeqCst) {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = f.repl.kicked.notified() => {}
                }
            }
            pause = (pause * 2).min(RETRY_MAX);
        }
    });
    repl.set_task(h);
}

/// Wake the replica task (a resync was requested).
pub fn kick(r: &Replication) {
    r.kicked.notify_one();
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("{0}")]
    Proto(#[from] ProtoError),
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    #[error("{0}")]
    Apply(String),
    #[error("{0}")]
    Handshake(String),
    #[error("the primary was silent for {0:?}")]
    Silent(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn refusal_code(c: &str) -> &'static str {
    match c {
        "diverged" => "diverged",
        "unrelated" => "unrelated",
        "newer-epoch" => "newer-epoch",
        "version" => "version",
        "no-such-storage" => "no-such-storage",
        // A replica of a replica that has not synchronised yet: transient.
        "not-ready" => "not-ready",
        _ => "refused",
    }
}

async fn session(f: &Fed, from: &str) -> Result<(), SessionError> {
    let r = &f.repl;
    let (mut rd, mut wr) = tokio::time::timeout(
        Duration::from_secs(10),
        primary::connect(from, r.connector()),
    )
    .await
    .map_err(|_| SessionError::Connect(std::io::Error::from(std::io::ErrorKind::TimedOut)))?
    .map_err(SessionError::Connect)?;
    let end = r.fs.size();
    let tid = r.fs.last_transaction();
    let md5 = match r.fs.txn_ending_at(end) {
        Ok(Some(p)) => crate::zeo::backend::hex(&p.md5),
        _ => String::new(),
    };
    let st = r.state();
    let resync = r.resync_requested.load(Ordering::SeqCst);
    // The connection ended before any answer: TLS is the usual misconfiguration.
    let tls = r.connector().is_some();
    let ended = |e: std::io::Error| {
        SessionError::Handshake(if tls {
            format!(
                "TLS: the primary ended the connection before answering ({e}); it refuses \
                 this replica's certificate unless that is listed in, or chains to, the \
                 primary's [zeo.tls] authenticate"
            )
        } else {
            format!(
                "the primary ended the connection before answering ({e}); if it has \
                 [zeo.tls], this replica needs [zeo.tls] too (replication uses the same TLS)"
            )
        })
    };
    protocol::write_json(
        &mut *wr,
        Kind::Hello,
        &json!({
            "version": protocol::VERSION,
            "storage": r.storage,
            "database": st.as_ref().map(|s| s.database.clone()),
            "epoch": st.as_ref().map_or(0, State::epoch),
            "end": end,
            "tid": state::tid_hex(&tid),
            "md5": md5,
            "resync": resync,
        }),
    )
    .await
    .map_err(ended)?;
    let silent = r.config.keep_alive * 3 + Duration::from_secs(5);
    let welcome = tokio::time::timeout(Duration::from_secs(60), protocol::read_frame(&mut rd))
        .await
        .map_err(|_| SessionError::Silent(Duration::from_secs(60)))?
        .map_err(|e| match e {
            ProtoError::Io(e) => ended(e),
            e => e.into(),
        })?;
    let w = match welcome.kind {
        Kind::Welcome => welcome.json()?,
        Kind::Refuse => {
            let v = welcome.json()?;
            return Err(SessionError::Refused {
                code: refusal_code(v["code"].as_str().unwrap_or_default()),
                message: v["message"].as_str().unwrap_or("refused").to_string(),
            });
        }
        k => return Err(ProtoError::Unexpected(k).into()),
    };
    let lineage: Vec<state::Epoch> = serde_json::from_value(w["lineage"].clone())
        .map_err(|e| welcome.bad(format!("lineage: {e}")))?;
    let adopted = State {
        database: w["database"].as_str().unwrap_or_default().to_string(),
        lineage,
    };
    {
        let mut l = lock(&r.link);
        l.connected = true;
        l.error = None;
        l.refused = None;
        l.last_heard = Some(Instant::now());
    }
    if w["mode"] == "resync" {
        lock(&r.link).phase = "resyncing";
        info!(target: LOG, "storage '{}': full resynchronisation from {from} ({}): {} bytes",
            r.storage, w["reason"].as_str().unwrap_or(""), w["size"]);
        receive_file(f, &mut rd, w["size"].as_u64().unwrap_or(0), silent).await?;
        r.resync_requested.store(false, Ordering::SeqCst);
        send_ack(&mut *wr, r.fs.size(), r.fs.last_transaction()).await?;
        lock(&r.link).resyncs += 1;
    } else {
        info!(target: LOG, "storage '{}': replicating from {from}, resuming at byte {end}", r.storage);
    }
    r.adopt(adopted)
        .map_err(|e| SessionError::Apply(e.to_string()))?;
    lock(&r.link).phase = "streaming";
    let mut pending = PendingBlobs::default();
    let PendingBlobs { open: blobs, ready } = &mut pending;
    // Frames are read (and their checksums verified) by a task of their own, a couple ahead
    // of the apply loop: receiving the next chunk overlaps writing and syncing this one.
    // The channel's bound keeps memory to a few chunks.
    let (frames_tx, mut frames) = tokio::sync::mpsc::channel(2);
    let reader = tokio::spawn(async move {
        loop {
            let got = tokio::time::timeout(silent, protocol::read_frame(&mut rd))
                .await
                .map_err(|_| SessionError::Silent(silent))
                .and_then(|r| r.map_err(SessionError::from));
            let stop = got.is_err();
            if frames_tx.send(got).await.is_err() || stop {
                return;
            }
        }
    });
    let _reader = AbortOnDrop(reader);
    loop {
        let fr = match frames.recv().await {
            Some(got) => got?,
            None => return Ok(()),
        };
        lock(&r.link).last_heard = Some(Instant::now());
        match fr.kind {
            Kind::Blob => {
                let c = protocol::parse_blob(&fr)?;
                let key = (Oid::from_bytes(c.oid), Tid::from_bytes(c.tid));
                use std::io::Write;
                let slot = match blobs.entry(key) {
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        let dir = r.fs.blob_tmp_dir().map_err(|e| SessionError::Apply(format!(
                            "the primary sends blobs but this storage has no blob directory ({e}); configure blob-dir as on the primary")))?;
                        let path = dir.join(format!(
                            "repl-{}-{}.tmp",
                            crate::zeo::backend::hex(&c.oid),
                            crate::zeo::backend::hex(&c.tid)
                        ));
                        let file = std::fs::File::create(&path)?;
                        v.insert((path, file))
                    }
                };
                slot.1.write_all(c.bytes)?;
                if c.last
                    && let Some((path, file)) = blobs.remove(&key)
                {
                    file.sync_all()?;
                    ready.push((key.0, key.1, path));
                }
            }
            Kind::Txns => {
                let mut rest = fr.body.as_slice();
                let at = fr.u64_field(&mut rest)?;
                let body = fr.body;
                let fs = r.fs.clone();
                let files = std::mem::take(ready);
                let prepared = tokio::task::spawn_blocking(move || {
                    fs.prepare_replicated(at, &body[8..], files)
                })
                .await
                .map_err(|e| SessionError::Apply(format!("applying transactions: {e}")))?
                .map_err(|e| {
                    SessionError::Apply(format!(
                        "refusing the primary's transactions at byte {at}: {e}"
                    ))
                })?;
                let end = prepared.end();
                let last = prepared.last_tid();
                let n = prepared.txns().len() as u64;
                f.st.publish_replicated(prepared);
                // For this replica's own replicas (chaining).
                r.feed.durable(r.fs.generation(), end, last);
                send_ack(&mut *wr, end, last).await?;
                let mut l = lock(&r.link);
                l.applied_txns += n;
                if l.primary_end < end {
                    l.primary_end = end;
                    l.primary_tid = Some(last);
                }
            }
            Kind::Ping => {
                let v = fr.json()?;
                {
                    let mut l = lock(&r.link);
                    l.primary_end = v["end"].as_u64().unwrap_or(0);
                    l.primary_tid = v["tid"].as_str().and_then(state::parse_tid);
                    l.lag_txns = v["lag_txns"].as_u64().unwrap_or(0);
                }
                let end = r.fs.size();
                protocol::write_json(&mut *wr, Kind::Ping, &json!({
                    "end": end, "tid": state::tid_hex(&r.fs.last_transaction()), "time": super::now_seconds(),
                })).await?;
            }
            Kind::Rewritten => {
                let v = fr.json()?;
                info!(target: LOG, "storage '{}': {}; reconnecting", r.storage, v["message"].as_str().unwrap_or("the primary's file changed"));
                return Ok(());
            }
            k => return Err(ProtoError::Unexpected(k).into()),
        }
    }
}

async fn send_ack(
    wr: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    end: u64,
    tid: Tid,
) -> std::io::Result<()> {
    protocol::write_frame(wr, Kind::Ack, &[&end.to_be_bytes(), &tid.to_bytes()]).await?;
    wr.flush().await
}

/// Blob files received for the next `Txns` frame: being written, and complete. What a
/// session leaves when it ends early is removed.
#[derive(Default)]
struct PendingBlobs {
    open: HashMap<(Oid, Tid), (PathBuf, std::fs::File)>,
    ready: Vec<(Oid, Tid, PathBuf)>,
}

impl Drop for PendingBlobs {
    fn drop(&mut self) {
        for (path, _) in self.open.values() {
            let _ = std::fs::remove_file(path);
        }
        for (_, _, path) in &self.ready {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Receive a full copy into `<Data.fs>.resync` (and the blob directory's `.resync`), then
/// swap it in. Until the swap the replica serves its old copy.
async fn receive_file(
    f: &Fed,
    rd: &mut (dyn tokio::io::AsyncRead + Unpin + Send),
    size: u64,
    silent: Duration,
) -> Result<(), SessionError> {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    let r = &f.repl;
    let path = crate::storage::replica::resync_path(r.fs.path());
    let blob_new =
        r.fs.blob_dir()
            .map(crate::storage::replica::resync_blob_dir);
    let _ = std::fs::remove_file(&path);
    if let Some(b) = &blob_new {
        let _ = std::fs::remove_dir_all(b);
        std::fs::create_dir_all(b)?;
    }
    let file = std::fs::File::create(&path)?;
    let mut blob_file: Option<(String, std::fs::File)> = None;
    let mut got = 0u64;
    loop {
        let fr = tokio::time::timeout(silent, protocol::read_frame(rd))
            .await
            .map_err(|_| SessionError::Silent(silent))??;
        lock(&r.link).last_heard = Some(Instant::now());
        match fr.kind {
            Kind::File => {
                let mut rest = fr.body.as_slice();
                let off = fr.u64_field(&mut rest)?;
                if off != got || off + rest.len() as u64 > size {
                    return Err(fr
                        .bad(format!(
                            "file chunk at {off} where {got} was expected (size {size})"
                        ))
                        .into());
                }
                file.write_all_at(rest, off)?;
                got += rest.len() as u64;
            }
            Kind::FileBlob => {
                let c = protocol::parse_file_blob(&fr)?;
                let Some(dir) = &blob_new else {
                    return Err(SessionError::Apply(
                        "the primary has blobs but this storage has no blob directory; configure blob-dir as on the primary".into()));
                };
                if blob_file.as_ref().is_none_or(|(p, _)| p != c.path) {
                    let dest = dir.join(c.path);
                    if let Some(parent) = dest.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    blob_file = Some((c.path.to_string(), std::fs::File::create(&dest)?));
                }
                if let Some((_, bf)) = blob_file.as_mut() {
                    bf.write_all(c.bytes)?;
                }
                if c.last {
                    blob_file = None;
                }
            }
            Kind::FileEnd => {
                let v = fr.json()?;
                if got != size || v["size"].as_u64() != Some(size) {
                    return Err(fr
                        .bad(format!("the copy ended at {got} of {size} bytes"))
                        .into());
                }
                break;
            }
            k => return Err(ProtoError::Unexpected(k).into()),
        }
    }
    file.sync_all()?;
    drop(file);
    let fs = r.fs.clone();
    let p = path.clone();
    let b = blob_new.clone();
    tokio::task::spawn_blocking(move || fs.install_file(&p, b.as_deref()))
        .await
        .map_err(|e| SessionError::Apply(format!("installing the copy: {e}")))?
        .map_err(|e| SessionError::Apply(format!("installing the copy {}: {e}", path.display())))?;
    f.st.reset_after_resync();
    r.feed.reset(&r.fs);
    info!(target: LOG, "storage '{}': full resynchronisation complete: {size} bytes", r.storage);
    Ok(())
}
