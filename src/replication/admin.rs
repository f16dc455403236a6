//! The server's admin socket: how `zodbctl promote`, `zodbctl resync` and `status` reach a
//! running `zodbctl serve` without going through ZEO (a ZEO client must never be able to
//! promote a server; the socket's file permissions decide who can).
//!
//! # Protocol
//!
//! A Unix stream socket (`[zeo] admin-socket`, default `var/zeo-admin.sock`). The client
//! writes one JSON object on one line; the server answers one JSON object on one line and
//! closes. Requests:
//!
//! * `{"cmd": "status"}` → `{"ok": true, "storages": {NAME: REPLICATION_STATUS}}`
//! * `{"cmd": "promote", "storage": NAME|null, "force": bool}` → `{"ok": true, "message": …}`
//! * `{"cmd": "resync", "storage": NAME|null}` → `{"ok": true, "message": …}`
//!
//! A refusal is `{"ok": false, "error": "what to do"}`. `storage` null means every
//! replicated storage of the server.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "cannot reach the server's admin socket {path}: {source} (is the server running? `zodbctl status` tells)"
    )]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("the server's admin socket {path} failed: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the server's admin socket {path} answered something that is not JSON: {answer:?}")]
    BadAnswer { path: String, answer: String },
    #[error("{0}")]
    Refused(String),
}

/// Send one request and return the answer's object (`ok` true), or the server's refusal.
pub fn call(path: &Path, req: &Value, timeout: Duration) -> Result<Value, AdminError> {
    let p = path.display().to_string();
    let io = |source| AdminError::Io {
        path: p.clone(),
        source,
    };
    let mut s =
        std::os::unix::net::UnixStream::connect(path).map_err(|source| AdminError::Connect {
            path: p.clone(),
            source,
        })?;
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut line = req.to_string();
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(&s)
        .take(16 << 20)
        .read_line(&mut answer)
        .map_err(io)?;
    let v: Value = serde_json::from_str(answer.trim()).map_err(|_| AdminError::BadAnswer {
        path: p.clone(),
        answer: answer.chars().take(200).collect(),
    })?;
    if v["ok"].as_bool() == Some(true) {
        Ok(v)
    } else {
        Err(AdminError::Refused(
            v["error"]
                .as_str()
                .unwrap_or("the server refused without saying why")
                .to_string(),
        ))
    }
}

/// Serve the admin socket of a running server (until the process ends).
pub async fn serve(
    path: &Path,
    ctx: std::sync::Arc<crate::zeo::server::ServerCtx>,
) -> std::io::Result<()> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another server is using it",
            ));
        }
        let _ = std::fs::remove_file(path);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let l = tokio::net::UnixListener::bind(path)?;
    // Promotion is for the server's own user (and root), not for anyone on the machine.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    tokio::spawn(async move {
        loop {
            match l.accept().await {
                Ok((s, _)) => {
                    tokio::spawn(handle(s, std::sync::Arc::clone(&ctx)));
                }
                Err(e) => {
                    tracing::error!(target: super::LOG, "admin socket: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(())
}

async fn handle(s: tokio::net::UnixStream, ctx: std::sync::Arc<crate::zeo::server::ServerCtx>) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let (rd, mut wr) = s.into_split();
    let mut line = String::new();
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::BufReader::new(rd.take(64 << 10)).read_line(&mut line),
    )
    .await;
    let answer = match read {
        Ok(Ok(_)) => match serde_json::from_str::<Value>(line.trim()) {
            Ok(req) => answer(&req, &ctx),
            Err(e) => {
                serde_json::json!({"ok": false, "error": format!("the request is not JSON: {e}")})
            }
        },
        _ => return,
    };
    let mut out = answer.to_string();
    out.push('\n');
    let _ = wr.write_all(out.as_bytes()).await;
}

fn answer(req: &Value, ctx: &crate::zeo::server::ServerCtx) -> Value {
    use serde_json::json;
    let replicated: Vec<(&String, &std::sync::Arc<super::Replication>)> = ctx
        .storages
        .iter()
        .filter_map(|(n, st)| st.replication().map(|r| (n, r)))
        .collect();
    let wanted = req["storage"].as_str();
    let targets: Vec<_> = replicated
        .iter()
        .filter(|(n, _)| wanted.is_none_or(|w| w == n.as_str()))
        .collect();
    let cmd = req["cmd"].as_str().unwrap_or_default();
    if cmd == "status" {
        let mut m = serde_json::Map::new();
        for (n, r) in &targets {
            m.insert((*n).clone(), r.status());
        }
        return json!({"ok": true, "storages": m});
    }
    if targets.is_empty() {
        let names: Vec<&String> = replicated.iter().map(|(n, _)| *n).collect();
        return json!({"ok": false, "error": match wanted {
            Some(w) => format!("no replicated storage {w:?} on this server (replicated: {names:?})"),
            None => "no storage of this server is replicated (replicate-from or [replication] address)".to_string(),
        }});
    }
    let results: Vec<Result<String, String>> = match cmd {
        "promote" => {
            let force = req["force"].as_bool() == Some(true);
            let only_replicas: Vec<_> = if wanted.is_some() {
                targets.clone()
            } else {
                targets
                    .iter()
                    .filter(|(_, r)| r.is_replica())
                    .copied()
                    .collect()
            };
            if only_replicas.is_empty() {
                return json!({"ok": false, "error": "no storage of this server is a replica: nothing to promote"});
            }
            let r: Vec<_> = only_replicas
                .iter()
                .map(|(_, r)| r.promote(force))
                .collect();
            ctx.promoted.notify_one();
            r
        }
        "resync" => targets.iter().map(|(_, r)| r.request_resync()).collect(),
        other => {
            return json!({"ok": false, "error": format!("unknown admin command {other:?} (status, promote, resync)")});
        }
    };
    let errors: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let done: Vec<&String> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    if errors.is_empty() {
        json!({"ok": true, "message": done.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")})
    } else {
        let mut all: Vec<String> = done.iter().map(|s| s.to_string()).collect();
        all.extend(errors.iter().map(|s| s.to_string()));
        json!({"ok": false, "error": all.join("\n")})
    }
}
