//! Replication as `status`, `check`, `/metrics` and `top` show it (docs/replication.md,
//! "Visibility").
//!
//! Everything here works on the JSON a replicated storage reports (`Replication::status()`,
//! per storage in the admin socket's `{"cmd": "status"}` answer): `role`, `epoch`, `mode`,
//! `degraded`, `replicas` on a primary; `primary`, `connected`, `phase`, `error`, `lag_*`,
//! `in_sync`, `last_heard_seconds` on a replica; `error` on a fenced server. So the words,
//! the verdicts and the gauges are the same whichever way the figures came, and they are
//! tested on JSON alone. A key a server does not send reads as unknown, never as a failure.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value as Json, json};

use super::check::{Level, age_text};
use crate::instance::Instance;

/// How long `status`, `check` and `top` wait for the admin socket.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);

/// A replica that has not heard from its primary for this long is cut off from it: the
/// link closes after three silent keep-alives and 5 s of grace (20 s at the default 5 s
/// keep-alive); see [`silence_limit`].
pub const SILENCE_LIMIT: f64 = 20.0;

/// The admin socket of a server instance (`[zeo] admin-socket`, default
/// `var/zeo-admin.sock` in the instance directory).
pub fn admin_socket(inst: &Instance) -> PathBuf {
    match inst.server() {
        Some(sc) => inst.resolve(&sc.zeo.admin_socket),
        None => inst.resolve(Path::new("var/zeo-admin.sock")),
    }
}

/// Whether a server instance replicates: a storage is a replica (`replicate-from`), or
/// replicas can connect (`[replication] address`).
pub fn configured(inst: &Instance) -> bool {
    inst.server()
        .is_some_and(|sc| sc.is_replica() || sc.replication.address.is_some())
}

/// How long a replica of this instance may go without hearing from its primary before
/// `check` calls it cut off: as long as the link itself waits (three keep-alives and 5 s).
pub fn silence_limit(inst: &Instance) -> f64 {
    inst.server().map_or(SILENCE_LIMIT, |sc| {
        sc.replication.keep_alive_delay.duration().as_secs_f64() * 3.0 + 5.0
    })
}

/// Each replicated storage's status, from a running server's admin socket; `None` when the
/// socket does not answer (server not running, or older than replication). Storages that are
/// not replicated are absent; a server without any answers an empty map.
pub fn fetch(socket: &Path, timeout: Duration) -> Option<Map<String, Json>> {
    if !socket.exists() {
        return None;
    }
    let v = crate::replication::admin::call(socket, &json!({"cmd": "status"}), timeout).ok()?;
    v.get("storages").and_then(Json::as_object).cloned()
}

/// The replication of a server instance, by storage name (see [`fetch`]).
pub fn of_instance(inst: &Instance, timeout: Duration) -> Option<Map<String, Json>> {
    inst.server()?;
    fetch(&admin_socket(inst), timeout)
}

fn text<'a>(s: &'a Json, key: &str) -> Option<&'a str> {
    s.get(key).and_then(Json::as_str).filter(|t| !t.is_empty())
}

fn num(s: &Json, key: &str) -> Option<f64> {
    s.get(key).and_then(Json::as_f64)
}

fn flag(s: &Json, key: &str) -> bool {
    s.get(key).and_then(Json::as_bool).unwrap_or(false)
}

/// `0 B`, `512 B`, `1.5 KiB`, `3.0 MiB`.
pub fn bytes_text(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// `lag 0 B / 0 txn / 0.0 s` (the parts the status has).
fn lag_text(s: &Json) -> String {
    let mut parts = Vec::new();
    if let Some(b) = s.get("lag_bytes").and_then(Json::as_u64) {
        parts.push(bytes_text(b));
    }
    if let Some(t) = s.get("lag_transactions").and_then(Json::as_u64) {
        parts.push(format!("{t} txn"));
    }
    if let Some(secs) = num(s, "lag_seconds") {
        parts.push(format!("{secs:.1} s"));
    }
    if parts.is_empty() {
        "lag unknown".into()
    } else {
        format!("lag {}", parts.join(" / "))
    }
}

fn epoch_text(s: &Json) -> String {
    s.get("epoch")
        .filter(|e| !e.is_null())
        .map_or(String::new(), |e| format!(", epoch {e}"))
}

/// A replica not connected to its primary: for how long, in words (`unreachable for 45 s`).
fn silence_text(s: &Json) -> String {
    match num(s, "last_heard_seconds") {
        Some(secs) => format!("last heard {} ago", age_text(secs)),
        None => "never heard since the server started".into(),
    }
}

/// One line per replicated storage, as `status` prints it after `replication NAME: `:
///
/// * `replica of 127.0.0.1:8101, streaming, in sync, lag 0 B / 0 txn / 0.0 s, epoch 1`
/// * `primary (sync), 1 replica: 127.0.0.1:53412 in sync, lag 0 B, epoch 1`
/// * `replica of 127.0.0.1:8101, refused: <error>, epoch 1`
/// * `fenced: <error>, epoch 1`
pub fn summary(s: &Json) -> String {
    let epoch = epoch_text(s);
    match text(s, "role") {
        Some("replica") => {
            let from = text(s, "primary").unwrap_or("?");
            let phase = text(s, "phase").unwrap_or("?");
            if phase == "refused" {
                let why = text(s, "error").unwrap_or("no reason given");
                return format!("replica of {from}, refused: {why}{epoch}");
            }
            if !flag(s, "connected") {
                let why = text(s, "error").map_or(String::new(), |e| format!(": {e}"));
                return format!(
                    "replica of {from}, {phase}, not connected ({}){why}{epoch}",
                    silence_text(s)
                );
            }
            let sync = if flag(s, "in_sync") {
                "in sync"
            } else {
                "not in sync"
            };
            format!("replica of {from}, {phase}, {sync}, {}{epoch}", lag_text(s))
        }
        Some("primary") => {
            let mode = text(s, "mode").unwrap_or("async");
            let degraded = if flag(s, "degraded") {
                ", degraded"
            } else {
                ""
            };
            let replicas: &[Json] = s
                .get("replicas")
                .and_then(Json::as_array)
                .map_or(&[], Vec::as_slice);
            let list = if replicas.is_empty() {
                "no replica connected".to_owned()
            } else {
                let each: Vec<String> = replicas
                    .iter()
                    .map(|r| {
                        let peer = text(r, "peer").unwrap_or("?");
                        if flag(r, "in_sync") {
                            format!("{peer} in sync, lag {}", bytes_text(lag_bytes(r)))
                        } else {
                            let phase = text(r, "phase").unwrap_or("not in sync");
                            format!("{peer} {phase}, {}", lag_text(r))
                        }
                    })
                    .collect();
                format!(
                    "{} replica{}: {}",
                    replicas.len(),
                    if replicas.len() == 1 { "" } else { "s" },
                    each.join("; ")
                )
            };
            format!("primary ({mode}{degraded}), {list}{epoch}")
        }
        Some("fenced") => format!(
            "fenced: {}{epoch}",
            text(s, "error").unwrap_or("a newer primary exists")
        ),
        Some(other) => format!("{other}{epoch}"),
        None => "role unknown".into(),
    }
}

fn lag_bytes(s: &Json) -> u64 {
    s.get("lag_bytes").and_then(Json::as_u64).unwrap_or(0)
}

/// A short form for narrow places (`zodbctl top`): `replica ← 127.0.0.1:8101 streaming,
/// in sync, lag 0B 0s`.
pub fn short(s: &Json) -> String {
    match text(s, "role") {
        Some("replica") => {
            let from = text(s, "primary").unwrap_or("?");
            let phase = text(s, "phase").unwrap_or("?");
            if phase == "refused" {
                return format!(
                    "replica of {from}: refused: {}",
                    text(s, "error").unwrap_or("?")
                );
            }
            if !flag(s, "connected") {
                return format!(
                    "replica of {from}: not connected, {}",
                    silence_text(s).replace("since the server started", "")
                )
                .trim_end()
                .to_owned();
            }
            let sync = if flag(s, "in_sync") {
                "in sync"
            } else {
                "behind"
            };
            format!(
                "replica of {from}: {phase}, {sync}, {}",
                lag_text(s).replace(" / ", " ")
            )
        }
        Some("primary") => {
            let replicas: &[Json] = s
                .get("replicas")
                .and_then(Json::as_array)
                .map_or(&[], Vec::as_slice);
            let in_sync = replicas.iter().filter(|r| flag(r, "in_sync")).count();
            let worst = replicas
                .iter()
                .filter_map(|r| num(r, "lag_seconds"))
                .fold(0.0_f64, f64::max);
            let mut out = format!(
                "primary ({}{}): {} replica{}, {in_sync} in sync",
                text(s, "mode").unwrap_or("async"),
                if flag(s, "degraded") {
                    ", degraded"
                } else {
                    ""
                },
                replicas.len(),
                if replicas.len() == 1 { "" } else { "s" },
            );
            if in_sync < replicas.len() {
                out.push_str(&format!(", max lag {worst:.1} s"));
            }
            out
        }
        _ => summary(s),
    }
}

/// How bad a storage's replication looks, for the dashboard's colours (the same rules as
/// [`verdict`], with the default limits).
pub fn level(s: &Json) -> Level {
    verdict(s, &Limits::default()).0
}

/// `check`'s limits on a replica's lag.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub warn_lag: f64,
    pub crit_lag: f64,
    /// Silence from the primary after which a disconnected replica is critical.
    pub silence: f64,
    /// How long the server has been running, when known (a replica that has never heard from
    /// its primary is only a warning while the server is younger than `silence`).
    pub uptime: Option<f64>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            warn_lag: 30.0,
            crit_lag: 300.0,
            silence: SILENCE_LIMIT,
            uptime: None,
        }
    }
}

/// `check`'s verdict on one replicated storage: the level and the message.
pub fn verdict(s: &Json, limits: &Limits) -> (Level, String) {
    match text(s, "role") {
        Some("fenced") => (
            Level::Critical,
            format!(
                "fenced: {}",
                text(s, "error").unwrap_or("a newer primary exists")
            ),
        ),
        Some("replica") => {
            let from = text(s, "primary").unwrap_or("?");
            if text(s, "phase") == Some("refused") {
                return (
                    Level::Critical,
                    format!(
                        "primary {from} refused this replica: {}",
                        text(s, "error").unwrap_or("no reason given")
                    ),
                );
            }
            if !flag(s, "connected") {
                let why = text(s, "error").map_or(String::new(), |e| format!(": {e}"));
                let silent = match num(s, "last_heard_seconds") {
                    Some(secs) => secs,
                    // Never heard: as long as the server has been trying.
                    None => limits.uptime.unwrap_or(f64::INFINITY),
                };
                let level = if silent > limits.silence {
                    Level::Critical
                } else {
                    Level::Warning
                };
                return (
                    level,
                    format!("primary {from} unreachable ({}){why}", silence_text(s)),
                );
            }
            let lag = num(s, "lag_seconds").unwrap_or(0.0);
            let level = if lag > limits.crit_lag {
                Level::Critical
            } else if lag > limits.warn_lag {
                Level::Warning
            } else {
                Level::Ok
            };
            (level, summary(s))
        }
        Some("primary") => {
            if text(s, "mode") == Some("sync") && flag(s, "degraded") {
                (
                    Level::Warning,
                    format!(
                        "sync replication degraded: no replica in sync ({})",
                        summary(s)
                    ),
                )
            } else {
                (Level::Ok, summary(s))
            }
        }
        _ => (Level::Unknown, format!("unknown replication status {s}")),
    }
}

/// One gauge of a replicated storage (the `storage` label is the caller's).
#[derive(Debug, Clone, PartialEq)]
pub struct Gauge {
    pub name: &'static str,
    pub help: &'static str,
    /// A label besides `storage` (`role` for the role gauge).
    pub label: Option<(&'static str, String)>,
    pub value: f64,
}

fn gauge(
    name: &'static str,
    help: &'static str,
    label: Option<(&'static str, String)>,
    value: f64,
) -> Gauge {
    Gauge {
        name,
        help,
        label,
        value,
    }
}

/// The gauges `/metrics` exposes for one replicated storage.
pub fn gauges(s: &Json) -> Vec<Gauge> {
    let b = |v: bool| if v { 1.0 } else { 0.0 };
    let role = text(s, "role").unwrap_or("unknown");
    let mut out = Vec::new();
    for r in ["primary", "replica", "fenced"] {
        out.push(gauge(
            "zodbctl_replication_role",
            "Replication role of the storage (1 for its current role: primary, replica, fenced)",
            Some(("role", r.to_owned())),
            b(r == role),
        ));
    }
    if let Some(e) = num(s, "epoch") {
        out.push(gauge(
            "zodbctl_replication_epoch",
            "Replication epoch (incremented by every promotion)",
            None,
            e,
        ));
    }
    let replica = role == "replica";
    let lag_source: Option<(f64, f64, f64)> = if replica {
        Some((
            num(s, "lag_bytes").unwrap_or(0.0),
            num(s, "lag_transactions").unwrap_or(0.0),
            num(s, "lag_seconds").unwrap_or(0.0),
        ))
    } else if role == "primary" {
        // The replica furthest behind (0 without replicas).
        let rs: &[Json] = s
            .get("replicas")
            .and_then(Json::as_array)
            .map_or(&[], Vec::as_slice);
        let max = |k: &str| rs.iter().filter_map(|r| num(r, k)).fold(0.0_f64, f64::max);
        Some((
            max("lag_bytes"),
            max("lag_transactions"),
            max("lag_seconds"),
        ))
    } else {
        None
    };
    if let Some((bytes, txns, secs)) = lag_source {
        out.push(gauge(
            "zodbctl_replication_lag_bytes",
            "Bytes the replica is behind its primary (on a primary: the replica furthest behind)",
            None,
            bytes,
        ));
        out.push(gauge(
            "zodbctl_replication_lag_transactions",
            "Transactions the replica is behind its primary (on a primary: the replica furthest behind)",
            None,
            txns,
        ));
        out.push(gauge(
            "zodbctl_replication_lag_seconds",
            "Age of the oldest transaction the replica lacks (on a primary: the replica furthest behind)",
            None,
            secs,
        ));
    }
    match role {
        "replica" => {
            out.push(gauge(
                "zodbctl_replication_in_sync",
                "1 when the replica (on a primary: at least one replica) has every transaction",
                None,
                b(flag(s, "in_sync")),
            ));
            out.push(gauge(
                "zodbctl_replication_connected",
                "1 when the replica is connected to its primary",
                None,
                b(flag(s, "connected")),
            ));
        }
        "primary" => {
            let rs: &[Json] = s
                .get("replicas")
                .and_then(Json::as_array)
                .map_or(&[], Vec::as_slice);
            out.push(gauge(
                "zodbctl_replication_in_sync",
                "1 when the replica (on a primary: at least one replica) has every transaction",
                None,
                b(rs.iter().any(|r| flag(r, "in_sync"))),
            ));
            out.push(gauge(
                "zodbctl_replication_replicas",
                "Replicas connected to the primary",
                None,
                rs.len() as f64,
            ));
            out.push(gauge(
                "zodbctl_replication_degraded",
                "1 when sync replication fell back to async (no replica acknowledged in time)",
                None,
                b(flag(s, "degraded")),
            ));
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica() -> Json {
        json!({
            "role": "replica", "epoch": 1, "database": "d1", "end": 4096,
            "last_transaction": "03e5f0a1b2c3d4e5", "mode": "async", "on_timeout": "degrade",
            "degraded": false, "replicas": [],
            "primary": "127.0.0.1:8101", "connected": true, "phase": "streaming", "error": null,
            "lag_bytes": 0, "lag_transactions": 0, "lag_seconds": 0.0, "in_sync": true,
            "last_heard_seconds": 0.4, "resyncs": 0
        })
    }

    fn primary() -> Json {
        json!({
            "role": "primary", "epoch": 1, "database": "d1", "end": 4096,
            "last_transaction": "03e5f0a1b2c3d4e5", "mode": "sync", "on_timeout": "degrade",
            "degraded": false,
            "replicas": [{"peer": "127.0.0.1:53412", "phase": "streaming", "acked": 4096,
                          "sent": 4096, "in_sync": true, "lag_bytes": 0,
                          "lag_transactions": 0, "lag_seconds": 0.0,
                          "connected_seconds": 12.5}]
        })
    }

    #[test]
    fn status_lines() {
        assert_eq!(
            summary(&replica()),
            "replica of 127.0.0.1:8101, streaming, in sync, lag 0 B / 0 txn / 0.0 s, epoch 1"
        );
        assert_eq!(
            summary(&primary()),
            "primary (sync), 1 replica: 127.0.0.1:53412 in sync, lag 0 B, epoch 1"
        );
        let mut p = primary();
        p["degraded"] = json!(true);
        p["replicas"] = json!([]);
        assert_eq!(
            summary(&p),
            "primary (sync, degraded), no replica connected, epoch 1"
        );
        let mut r = replica();
        r["phase"] = json!("refused");
        r["connected"] = json!(false);
        r["error"] = json!("diverged: transaction 03e5… is not in the primary's file");
        assert_eq!(
            summary(&r),
            "replica of 127.0.0.1:8101, refused: diverged: transaction 03e5… is not in the primary's file, epoch 1"
        );
        let f = json!({"role": "fenced", "epoch": 1, "error": "127.0.0.1:8111 is primary with epoch 2"});
        assert_eq!(
            summary(&f),
            "fenced: 127.0.0.1:8111 is primary with epoch 2, epoch 1"
        );
        assert_eq!(bytes_text(1536), "1.5 KiB");
        assert_eq!(bytes_text(3 << 20), "3.0 MiB");
    }

    #[test]
    fn verdicts() {
        let l = Limits::default();
        assert_eq!(verdict(&replica(), &l).0, Level::Ok);
        assert_eq!(verdict(&primary(), &l).0, Level::Ok);

        let mut r = replica();
        r["in_sync"] = json!(false);
        r["lag_seconds"] = json!(45.0);
        r["lag_bytes"] = json!(2048);
        r["lag_transactions"] = json!(3);
        assert_eq!(verdict(&r, &l).0, Level::Warning);
        r["lag_seconds"] = json!(301.0);
        assert_eq!(verdict(&r, &l).0, Level::Critical);
        let strict = Limits {
            warn_lag: 400.0,
            crit_lag: 500.0,
            ..l
        };
        assert_eq!(verdict(&r, &strict).0, Level::Ok);

        // Cut off from the primary: a warning at first, critical after a few keep-alives.
        let mut r = replica();
        r["connected"] = json!(false);
        r["phase"] = json!("connecting");
        r["error"] = json!("cannot connect: Connection refused (os error 111)");
        r["last_heard_seconds"] = json!(8.0);
        let (lv, msg) = verdict(&r, &l);
        assert_eq!(lv, Level::Warning);
        assert_eq!(
            msg,
            "primary 127.0.0.1:8101 unreachable (last heard 8 s ago): cannot connect: Connection refused (os error 111)"
        );
        r["last_heard_seconds"] = json!(95.0);
        assert_eq!(verdict(&r, &l).0, Level::Critical);
        r["last_heard_seconds"] = Json::Null;
        assert_eq!(verdict(&r, &l).0, Level::Critical);
        let young = Limits {
            uptime: Some(3.0),
            ..l
        };
        assert_eq!(verdict(&r, &young).0, Level::Warning);

        let mut r = replica();
        r["phase"] = json!("refused");
        r["error"] = json!("unrelated: another database");
        let (lv, msg) = verdict(&r, &l);
        assert_eq!(lv, Level::Critical);
        assert_eq!(
            msg,
            "primary 127.0.0.1:8101 refused this replica: unrelated: another database"
        );

        let mut p = primary();
        p["degraded"] = json!(true);
        p["replicas"][0]["in_sync"] = json!(false);
        let (lv, msg) = verdict(&p, &l);
        assert_eq!(lv, Level::Warning);
        assert!(
            msg.starts_with("sync replication degraded: no replica in sync"),
            "{msg}"
        );
        // Degraded only means something in sync mode.
        p["mode"] = json!("async");
        assert_eq!(verdict(&p, &l).0, Level::Ok);

        let f = json!({"role": "fenced", "epoch": 1, "error": "a newer primary exists"});
        assert_eq!(
            verdict(&f, &l),
            (Level::Critical, "fenced: a newer primary exists".into())
        );
        assert_eq!(verdict(&json!({}), &l).0, Level::Unknown);
    }

    #[test]
    fn short_forms() {
        assert_eq!(
            short(&replica()),
            "replica of 127.0.0.1:8101: streaming, in sync, lag 0 B 0 txn 0.0 s"
        );
        assert_eq!(short(&primary()), "primary (sync): 1 replica, 1 in sync");
        let mut r = replica();
        r["connected"] = json!(false);
        r["last_heard_seconds"] = Json::Null;
        assert_eq!(
            short(&r),
            "replica of 127.0.0.1:8101: not connected, never heard"
        );
    }

    #[test]
    fn gauge_values() {
        let find = |g: &[Gauge], n: &str| {
            g.iter()
                .filter(|x| x.name == n)
                .map(|x| (x.label.clone().map(|l| l.1), x.value))
                .collect::<Vec<_>>()
        };
        let g = gauges(&replica());
        assert_eq!(
            find(&g, "zodbctl_replication_role"),
            [
                (Some("primary".into()), 0.0),
                (Some("replica".into()), 1.0),
                (Some("fenced".into()), 0.0)
            ]
        );
        assert_eq!(find(&g, "zodbctl_replication_connected"), [(None, 1.0)]);
        assert_eq!(find(&g, "zodbctl_replication_replicas"), []);
        let g = gauges(&primary());
        assert_eq!(find(&g, "zodbctl_replication_replicas"), [(None, 1.0)]);
        assert_eq!(find(&g, "zodbctl_replication_degraded"), [(None, 0.0)]);
        assert_eq!(find(&g, "zodbctl_replication_in_sync"), [(None, 1.0)]);
        assert_eq!(find(&g, "zodbctl_replication_epoch"), [(None, 1.0)]);
    }
}
