//! The listener: accept TCP, Unix or TLS connections, hand each to `connection::serve`,
//! and shut down cleanly on signals (runzeo's §7.3 behaviour).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use super::config::{ListenAddr, ServerConfig};
use super::connection;
use super::log::LogTarget;
use super::outbox::Sink;
use super::shards::Shards;
use super::shared::StorageState;
use super::stats::{Refused, SERVER};
use super::wire::Value;

const LOG_RUNZEO: &str = "ZEO.runzeo";

/// Everything connections share.
pub struct ServerCtx {
    pub config: ServerConfig,
    pub storages: BTreeMap<String, Arc<StorageState>>,
    /// Start time in ctime format, for `server_status`.
    pub start: String,
    pub next_conn: AtomicU64,
    pub shutdown: watch::Receiver<bool>,
    /// A replicated storage was promoted: the writable address may open now.
    pub promoted: tokio::sync::Notify,
}

impl ServerCtx {
    /// Some storage is still a replica: the writable address stays closed, so that plain
    /// writable clients, which retry a refused address only when every address is down,
    /// connect here only once this server is the primary.
    fn any_replica(&self) -> bool {
        self.storages
            .values()
            .any(|st| st.replication().is_some_and(|r| r.is_replica()))
    }
}

impl ServerCtx {
    /// The `ruok` answer: `{storage: status}` as Python's `json.dumps` writes it (§1.4).
    pub fn ruok_json(&self) -> String {
        let timeout = self.config.transaction_timeout.is_some();
        let mut out = String::from("{");
        for (i, (name, st)) in self.storages.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&json_str(name));
            out.push_str(": {");
            for (j, (k, v)) in st.status(&self.start, timeout).iter().enumerate() {
                if j > 0 {
                    out.push_str(", ");
                }
                out.push_str(&json_str(k));
                out.push_str(": ");
                out.push_str(&json_value(v));
            }
            out.push('}');
        }
        out.push('}');
        out
    }
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for u in c.encode_utf16(&mut buf) {
                    o.push_str(&format!("\\u{u:04x}"));
                }
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn json_value(v: &Value) -> String {
    match v {
        Value::Nil => "null".into(),
        Value::Bool(true) => "true".into(),
        Value::Bool(false) => "false".into(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => format!("{f:?}"),
        Value::Str(s) => json_str(s),
        Value::Bytes(b) => json_str(&String::from_utf8_lossy(b)),
        _ => "null".into(),
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

async fn bind(addr: &ListenAddr) -> Result<Listener> {
    match addr {
        ListenAddr::Tcp { host, port } if host.is_empty() => {
            // A bare port: runzeo hands host '' to asyncio's create_server, which listens on
            // every address getaddrinfo gives for it, 0.0.0.0 and [::] (seen with ZEO 6.2:
            // two sockets, the IPv6 one v6only). One dual-stack [::] socket serves both
            // families; a machine without IPv6 gets 0.0.0.0 alone.
            fn dual_stack(port: u16) -> std::io::Result<TcpListener> {
                let sock = tokio::net::TcpSocket::new_v6()?;
                // Off explicitly: the default follows net.ipv6.bindv6only.
                nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::Ipv6V6Only, &false)?;
                sock.set_reuseaddr(true)?;
                sock.bind((std::net::Ipv6Addr::UNSPECIFIED, port).into())?;
                sock.listen(1024)
            }
            let in_use = || format!("address {addr} already in use or not available");
            match dual_stack(*port) {
                Ok(l) => Ok(Listener::Tcp(l)),
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(
                            libc::EAFNOSUPPORT
                                | libc::EADDRNOTAVAIL
                                | libc::EPROTONOSUPPORT
                                | libc::EINVAL
                                | libc::ENOPROTOOPT
                        )
                    ) =>
                {
                    // No usable IPv6 here (no kernel support, disabled, or no dual stack).
                    let l = TcpListener::bind(("0.0.0.0", *port))
                        .await
                        .with_context(in_use)?;
                    Ok(Listener::Tcp(l))
                }
                Err(e) => Err(e).with_context(in_use),
            }
        }
        ListenAddr::Tcp { host, port } => {
            let l = TcpListener::bind((host.as_str(), *port))
                .await
                .with_context(|| format!("address {addr} already in use or not available"))?;
            Ok(Listener::Tcp(l))
        }
        ListenAddr::Unix(path) => {
            if path.exists() {
                // A socket file nobody accepts on is stale (runzeo's clear_socket).
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(anyhow!("address {} already in use", path.display()));
                }
                let _ = std::fs::remove_file(path);
            }
            let l = UnixListener::bind(path)
                .with_context(|| format!("cannot listen on {}", path.display()))?;
            Ok(Listener::Unix(l, path.clone()))
        }
    }
}

/// Why the server stopped.
pub enum Exit {
    /// SIGTERM / SIGINT: status 0.
    Terminated,
    /// SIGHUP: status 1, so a supervisor restarts it.
    Restart,
}

/// Run until a terminating signal. `storages` are already open.
pub async fn run(
    config: ServerConfig,
    storages: Vec<(String, Arc<StorageState>)>,
    log: LogTarget,
    shards: Shards,
    tls: Option<tokio_rustls::TlsAcceptor>,
    replication_tls: Option<tokio_rustls::TlsConnector>,
) -> Result<Exit> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let names: Vec<String> = storages
        .iter()
        .map(|(n, st)| {
            format!(
                "{n}:{}:{}",
                if config.read_only || st.backend.is_read_only() {
                    "RO"
                } else {
                    "RW"
                },
                st.backend.info().name
            )
        })
        .collect();
    let ctx = Arc::new(ServerCtx {
        storages: storages.into_iter().collect(),
        start: super::log::ctime_now(),
        next_conn: AtomicU64::new(1),
        shutdown: shutdown_rx,
        promoted: tokio::sync::Notify::new(),
        config,
    });
    // Replication first: a primary that finds a newer one among its peers starts fenced,
    // before any client can register writable.
    crate::replication::start(&ctx, tls.clone(), replication_tls).await?;
    let mut listener = if ctx.any_replica() {
        info!(target: "ZEO.StorageServer",
            "replica: the writable address {} opens when this server is promoted", ctx.config.address);
        None
    } else {
        Some(bind(&ctx.config.address).await?)
    };
    let ro_listener = match &ctx.config.read_only_address {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    if let Some(path) = &ctx.config.admin_socket {
        crate::replication::admin::serve(path, Arc::clone(&ctx))
            .await
            .with_context(|| format!("cannot open the admin socket {}", path.display()))?;
    }
    info!(
        target: "ZEO.StorageServer",
        "StorageServer created {} with storages: {}",
        if ctx.config.read_only { "RO" } else { "RW" },
        names.join(", ")
    );
    if let Some(l) = &listener {
        log_listening(l, &ctx.config.address)?;
    }
    if let (Some(l), Some(a)) = (&ro_listener, &ctx.config.read_only_address) {
        log_listening(l, a)?;
    }

    // Every storage is open and the listener accepts: ready (`/readyz`).
    SERVER.mark_started();
    SERVER
        .serving
        .store(true, std::sync::atomic::Ordering::Relaxed);

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let mut conns = JoinSet::new();
    let pid = std::process::id();

    let exit = loop {
        tokio::select! {
            _ = term.recv() => {
                info!(target: LOG_RUNZEO, "({pid}) terminated by SIGTERM");
                break Exit::Terminated;
            }
            _ = int.recv() => {
                info!(target: LOG_RUNZEO, "({pid}) terminated by SIGINT");
                break Exit::Terminated;
            }
            _ = hup.recv() => {
                info!(target: LOG_RUNZEO, "({pid}) restarted by SIGHUP");
                break Exit::Restart;
            }
            _ = usr2.recv() => match log.reopen() {
                Ok(true) => info!(target: LOG_RUNZEO, "Log files reopened successfully"),
                Ok(false) => warn!(target: LOG_RUNZEO, "received SIGUSR2, but it was not handled!"),
                Err(e) => error!(target: LOG_RUNZEO, "reopening the log file failed: {e}"),
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            () = ctx.promoted.notified(), if listener.is_none() => {
                if !ctx.any_replica() {
                    match bind(&ctx.config.address).await {
                        Ok(l) => {
                            log_listening(&l, &ctx.config.address)?;
                            listener = Some(l);
                        }
                        Err(e) => error!(target: "ZEO.asyncio.server",
                            "promoted, but the writable address cannot open: {e:#}"),
                    }
                }
            }
            accepted = accept_some(listener.as_ref()) => {
                spawn_conn(&mut conns, &ctx, &shards, &tls, accepted, false).await;
            }
            accepted = accept_some(ro_listener.as_ref()) => {
                spawn_conn(&mut conns, &ctx, &shards, &tls, accepted, true).await;
            }
        }
    };

    SERVER
        .serving
        .store(false, std::sync::atomic::Ordering::Relaxed);
    // Connections abort any transaction in progress and close; a commit already in its
    // finish step completes first (it runs to the end before the connection looks again).
    let _ = shutdown_tx.send(true);
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(target: LOG_RUNZEO, "connections did not close within 10 s; closing anyway");
        conns.abort_all();
    }
    for (name, st) in &ctx.storages {
        info!(target: LOG_RUNZEO, "closing storage '{name}'");
        if let Err(e) = st.backend.close() {
            error!(target: LOG_RUNZEO, "closing storage '{name}' failed: {e}");
        }
    }
    for l in [&listener, &ro_listener].into_iter().flatten() {
        if let Listener::Unix(_, p) = l {
            let _ = std::fs::remove_file(p);
        }
    }
    if let Some(p) = &ctx.config.admin_socket {
        let _ = std::fs::remove_file(p);
    }
    shards.stop();
    Ok(exit)
}

fn log_listening(l: &Listener, addr: &ListenAddr) -> Result<()> {
    match l {
        Listener::Tcp(l) => {
            let a = l.local_addr()?;
            // A bare port is all interfaces, which runzeo writes as ''.
            let host = match addr {
                ListenAddr::Tcp { host, .. } if host.is_empty() => String::new(),
                _ => a.ip().to_string(),
            };
            info!(target: "ZEO.asyncio.server", "listening on ('{host}', {})", a.port());
        }
        Listener::Unix(_, p) => {
            info!(target: "ZEO.asyncio.server", "listening on {}", p.display());
        }
    }
    Ok(())
}

/// Accept on a listener that may not exist yet (a replica's writable address).
async fn accept_some(l: Option<&Listener>) -> std::io::Result<(Stream, String)> {
    match l {
        Some(l) => accept(l).await,
        None => std::future::pending().await,
    }
}

async fn spawn_conn(
    conns: &mut JoinSet<()>,
    ctx: &Arc<ServerCtx>,
    shards: &Shards,
    tls: &Option<tokio_rustls::TlsAcceptor>,
    accepted: std::io::Result<(Stream, String)>,
    read_only: bool,
) {
    match accepted {
        Ok((stream, peer)) => {
            // The connection is registered with its shard's reactor, not this one's.
            let ctx = Arc::clone(ctx);
            let tls = tls.clone();
            conns.spawn_on(
                serve_on_shard(ctx, stream, peer, tls, read_only),
                shards.next(),
            );
        }
        Err(e) => {
            // EMFILE and friends: keep serving the connections we have.
            error!(target: "ZEO.asyncio.server", "accept failed: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// An accepted socket, detached from the accepting reactor so that another shard can
/// take it.
enum Stream {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

/// Serve one accepted socket on the shard this runs on: TLS handshake if configured, then
/// the connection.
async fn serve_on_shard(
    ctx: Arc<ServerCtx>,
    stream: Stream,
    peer: String,
    tls: Option<tokio_rustls::TlsAcceptor>,
    read_only: bool,
) {
    match stream {
        Stream::Tcp(s) => {
            let s = match tokio::net::TcpStream::from_std(s) {
                Ok(s) => s,
                Err(e) => {
                    error!(target: "ZEO.asyncio.server", "{peer}: registering the socket failed: {e}");
                    return;
                }
            };
            let _ = s.set_nodelay(true);
            match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(Duration::from_secs(30), acceptor.accept(s)).await {
                        Ok(Ok(s)) => {
                            let (rd, wr) = tokio::io::split(s);
                            connection::serve(ctx, rd, Sink::Stream(Box::new(wr)), peer, read_only)
                                .await;
                        }
                        Ok(Err(e)) => {
                            SERVER.refused(Refused::Tls);
                            warn!(target: "ZEO.asyncio.server", "TLS handshake with {peer} failed: {e}")
                        }
                        Err(_) => {
                            SERVER.refused(Refused::Tls);
                            warn!(target: "ZEO.asyncio.server", "TLS handshake with {peer} timed out")
                        }
                    }
                }
                None => {
                    let (rd, wr) = s.into_split();
                    connection::serve(ctx, rd, Sink::Tcp(wr), peer, read_only).await;
                }
            }
        }
        Stream::Unix(s) => match tokio::net::UnixStream::from_std(s) {
            Ok(s) => {
                let (rd, wr) = s.into_split();
                connection::serve(ctx, rd, Sink::Unix(wr), peer, read_only).await;
            }
            Err(e) => {
                error!(target: "ZEO.asyncio.server", "{peer}: registering the socket failed: {e}");
            }
        },
    }
}

async fn accept(l: &Listener) -> std::io::Result<(Stream, String)> {
    match l {
        Listener::Tcp(l) => {
            let (s, a) = l.accept().await?;
            Ok((
                Stream::Tcp(s.into_std()?),
                // IPv4 clients of the dual-stack socket as runzeo names them.
                format!("('{}', {})", a.ip().to_canonical(), a.port()),
            ))
        }
        Listener::Unix(l, p) => {
            let (s, _) = l.accept().await?;
            Ok((Stream::Unix(s.into_std()?), p.display().to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_like_python() {
        assert_eq!(json_str("a\"é"), "\"a\\\"\\u00e9\"");
        assert_eq!(json_value(&Value::Nil), "null");
        assert_eq!(json_value(&Value::Float(1.5)), "1.5");
    }
}
