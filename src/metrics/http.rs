//! A small HTTP/1.1 server for `/metrics`, `/healthz` and `/readyz`.
//!
//! Hand-written rather than a framework: three GET routes, one response per connection
//! (`Connection: close`), and hard limits so that nothing a peer sends can cost more than a
//! bounded amount of memory and time: the request head is at most [`MAX_HEAD`] bytes and must
//! arrive within [`READ_TIMEOUT`], a response must be taken within [`WRITE_TIMEOUT`], and at
//! most [`MAX_CONNECTIONS`] are served at once (more are answered 503 and closed). It runs on
//! its own thread and runtime, so it shares nothing with the ZEO connections but the
//! statistics it reads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{info, warn};

use super::Exposed;

const MAX_HEAD: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_CONNECTIONS: usize = 32;
const LOG: &str = "zodbctl.metrics";

#[derive(Debug, Error)]
pub enum MetricsError {
    #[error("metrics address {0:?} is not HOST:PORT")]
    Address(String),
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("starting the metrics thread: {0}")]
    Thread(std::io::Error),
}

/// Bind `addr` now (so a taken port is an error at start) and serve on a thread of its own.
/// Returns the bound address.
pub fn start(addr: &str, exposed: Arc<Exposed>) -> Result<SocketAddr, MetricsError> {
    use std::net::ToSocketAddrs;
    let sa = addr
        .to_socket_addrs()
        .map_err(|_| MetricsError::Address(addr.into()))?
        .next()
        .ok_or_else(|| MetricsError::Address(addr.into()))?;
    let std_listener = std::net::TcpListener::bind(sa).map_err(|source| MetricsError::Bind {
        addr: addr.into(),
        source,
    })?;
    std_listener
        .set_nonblocking(true)
        .map_err(MetricsError::Thread)?;
    let local = std_listener.local_addr().map_err(MetricsError::Thread)?;
    let dispatch = tracing::dispatcher::get_default(|d| d.clone());
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let _guard = tracing::dispatcher::set_default(&dispatch);
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    warn!(target: LOG, "metrics endpoint not started: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                match TcpListener::from_std(std_listener) {
                    Ok(l) => serve(l, exposed).await,
                    Err(e) => warn!(target: LOG, "metrics endpoint not started: {e}"),
                }
            });
        })
        .map_err(MetricsError::Thread)?;
    info!(target: LOG, "serving metrics on http://{local}/metrics");
    Ok(local)
}

async fn serve(listener: TcpListener, exposed: Arc<Exposed>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: wait rather than spin.
                warn!(target: LOG, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(permit) => {
                let exposed = Arc::clone(&exposed);
                tokio::spawn(async move {
                    handle(stream, &exposed).await;
                    drop(permit);
                });
            }
            Err(_) => {
                // Too many at once: say so without waiting for the request.
                let _ = stream.try_write(&response(503, "text/plain", b"busy\n", false));
            }
        }
    }
}

/// Read the request head: up to the blank line, bounded in size.
async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), u16> {
    let mut chunk = [0u8; 1024];
    loop {
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return Ok(());
        }
        if buf.len() > MAX_HEAD {
            return Err(431);
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err(0),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn handle(mut s: TcpStream, exposed: &Arc<Exposed>) {
    let mut buf = Vec::with_capacity(512);
    let reply = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut s, &mut buf)).await {
        Err(_) => response(408, "text/plain", b"request timeout\n", false),
        Ok(Err(0)) => return,
        Ok(Err(code)) => response(code, "text/plain", b"request header too large\n", false),
        Ok(Ok(())) => route(&buf, exposed),
    };
    let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
        s.write_all(&reply).await?;
        s.shutdown().await
    })
    .await;
}

fn route(head: &[u8], exposed: &Arc<Exposed>) -> Vec<u8> {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end().split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return response(400, "text/plain", b"bad request\n", false);
    };
    if parts.next().is_some() || !version.starts_with("HTTP/1.") {
        return response(400, "text/plain", b"bad request\n", false);
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return response(405, "text/plain", b"method not allowed\n", false),
    };
    let path = target.split('?').next().unwrap_or_default();
    match path {
        "/metrics" => {
            let body = super::render(exposed);
            response(
                200,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                body.as_bytes(),
                head_only,
            )
        }
        "/healthz" => response(200, "text/plain", b"ok\n", head_only),
        "/readyz" => {
            if exposed.ready() {
                response(200, "text/plain", b"ready\n", head_only)
            } else {
                response(
                    503,
                    "text/plain",
                    b"not ready: storages opening\n",
                    head_only,
                )
            }
        }
        _ => response(404, "text/plain", b"not found\n", head_only),
    }
}

fn response(code: u16, ctype: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_refusals() {
        let ex = Exposed::new();
        let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
        assert!(text(route(b"GET /healthz HTTP/1.1\r\n\r\n", &ex)).starts_with("HTTP/1.1 200"));
        // Nothing opened yet: not ready.
        assert!(text(route(b"GET /readyz HTTP/1.1\r\n\r\n", &ex)).starts_with("HTTP/1.1 503"));
        assert!(text(route(b"POST /metrics HTTP/1.1\r\n\r\n", &ex)).starts_with("HTTP/1.1 405"));
        assert!(text(route(b"GET /x HTTP/1.1\r\n\r\n", &ex)).starts_with("HTTP/1.1 404"));
        assert!(text(route(b"garbage\r\n\r\n", &ex)).starts_with("HTTP/1.1 400"));
        assert!(text(route(b"\xff\xfe x y z\r\n\r\n", &ex)).starts_with("HTTP/1.1 400"));
        let m = text(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", &ex));
        assert!(m.contains("zeo_up 0"), "{m}");
        assert!(m.contains("process_cpu_seconds_total"), "{m}");
    }
}
