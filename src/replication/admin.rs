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
