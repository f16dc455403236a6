//! Snapshot tests of the screen: fixed snapshots drawn into ratatui's `TestBackend` and
//! compared with the text frames in `src/tui/snapshots/`. After an intended change of the
//! layout, `UPDATE_SNAPSHOTS=1 cargo test --lib tui::` rewrites them; review the diff.

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::style::Color;

use super::*;
use crate::supervisor::protocol::InstanceStatus;
use crate::tui::input::Ui;
use crate::tui::render_text;
use crate::tui::state::{LogSource, LogTail, ProcessInfo, ServerInfo};

const NOW: f64 = 1_796_523_954.0;

fn status(name: &str, state: &str, pid: Option<u32>) -> InstanceStatus {
    InstanceStatus {
        name: name.into(),
        state: state.into(),
        manager_pid: pid.map(|p| p - 1),
        pid,
        uptime: pid.map(|_| 3725.0),
        manager_uptime: Some(4000.0),
        restarts: 0,
        ready: pid.is_some(),
        should_be_up: true,
        socket: format!("/srv/demo/{name}/var/zodbctl.sock"),
        ..Default::default()
    }
}

fn storage(name: &str, kind: &str, c: f64, l: f64) -> StorageInfo {
    StorageInfo {
        name: name.into(),
        kind: Some(kind.into()),
        path: Some(format!("/srv/demo/server/var/{name}.fs").into()),
        size_bytes: Some(48_345_678),
        objects: None,
        last_transaction: Some("03e5f0a1b2c3d4e5".into()),
        last_transaction_time: Some(NOW - 4.0),
        connections: Some(3),
        waiting: Some(0),
        active_txns: Some(0),
        commits: Some(1200),
        loads: Some(56_000),
        stores: Some(2400),
        aborts: Some(2),
        conflicts: Some(1),
        commits_per_s: Some(c),
        loads_per_s: Some(l),
        started: Some("Sun Dec  6 01:23:45 2026".into()),
        commits_history: (0..90).map(|i| ((i * 7) % 13) as f64 * c / 12.0).collect(),
        loads_history: (0..90).map(|i| ((i * 5) % 11) as f64 * l / 10.0).collect(),
        ..Default::default()
    }
}

fn healthy() -> Snapshot {
    let server = InstanceInfo {
        name: "server".into(),
        kind: Kind::Server,
        dir: Some("/srv/demo/server".into()),
        address: Some("127.0.0.1:8100".into()),
        status: Some(status("server", "running", Some(4242))),
        process: Some(ProcessInfo {
            pid: 4242,
            cpu_percent: Some(3.5),
            rss_bytes: 34 << 20,
        }),
        server: Some(ServerInfo {
            address: "127.0.0.1:8100".into(),
            error: None,
            storages: vec![storage("1", "file", 12.0, 340.0), {
                let mut s = storage("sessions", "memory", 3.0, 25.0);
                s.size_bytes = None;
                s.path = None;
                s.lock_time = Some(NOW - 1.0);
                s.waiting = Some(2);
                s
            }],
        }),
        logs: vec![
            LogSource {
                label: "server log".into(),
                path: "/srv/demo/server/log/zeo.log".into(),
            },
            LogSource {
                label: "transcript".into(),
                path: "/srv/demo/server/log/transcript.log".into(),
            },
        ],
    };
    let client = |n: &str, pid: u32, port: u16| InstanceInfo {
        name: n.into(),
        kind: Kind::Client,
        dir: Some(format!("/srv/demo/{n}").into()),
        address: Some(format!("127.0.0.1:{port}")),
        status: Some(status(n, "running", Some(pid))),
        process: Some(ProcessInfo {
            pid,
            cpu_percent: Some(0.5),
            rss_bytes: 120 << 20,
        }),
        server: None,
        logs: vec![],
    };
    Snapshot {
        title: "demo".into(),
        taken_at: NOW,
        seq: 7,
        instances: vec![
            server,
            client("client1", 4301, 8081),
            client("client2", 4302, 8082),
        ],
        commits_per_s: Some(15.0),
        loads_per_s: Some(365.0),
        log: Some(LogTail {
            instance: "server".into(),
            label: "server log".into(),
            path: "/srv/demo/server/log/zeo.log".into(),
            lines: (0..40)
                .map(|i| {
                    format!(
                        "2026-12-06T02:25:{:02} INFO ZEO.asyncio.server received handshake b'Z5' #{i}",
                        i % 60
                    )
                })
                .collect(),
            error: None,
        }),
    }
}

fn backoff() -> Snapshot {
    let mut s = healthy();
    let c = &mut s.instances[1];
    let st = c.status.as_mut().unwrap();
    st.state = "backoff".into();
    st.pid = None;
    st.uptime = None;
    st.ready = false;
    st.restarts = 4;
    st.backoff = 8;
    st.delay = Some(6.4);
    st.last_exit = Some("exit status 1".into());
    c.process = None;
    s
}

fn unreachable() -> Snapshot {
    let mut s = healthy();
    let server = s.instances[0].server.as_mut().unwrap();
    server.error = Some("cannot connect: Connection refused (os error 111)".into());
    for st in &mut server.storages {
        *st = StorageInfo {
            name: st.name.clone(),
            kind: st.kind.clone(),
            path: st.path.clone(),
            size_bytes: st.size_bytes,
            commits_history: st.commits_history.clone(),
            loads_history: st.loads_history.clone(),
            ..Default::default()
        };
    }
    s.commits_per_s = None;
    s.loads_per_s = None;
    s.instances[2].status = Some(InstanceStatus::not_running(
        "client2",
        "/srv/demo/client2/var/zodbctl.sock",
        &[],
    ));
    s.instances[2].process = None;
    s
}

/// A replica server following its primary, and the primary's storage as it reports it.
fn replicated() -> Snapshot {
    let mut s = healthy();
    let server = s.instances[0].server.as_mut().unwrap();
    server.storages[0].replication = Some(serde_json::json!({
        "role": "replica", "epoch": 1, "database": "d1", "end": 48_345_678,
        "last_transaction": "03e5f0a1b2c3d4e5", "mode": "async", "on_timeout": "degrade",
        "degraded": false, "replicas": [],
        "primary": "127.0.0.1:8101", "connected": true, "phase": "streaming", "error": null,
        "lag_bytes": 2048, "lag_transactions": 3, "lag_seconds": 1.5, "in_sync": false,
        "last_heard_seconds": 0.4, "resyncs": 0
    }));
    server.storages[1].replication = Some(serde_json::json!({
        "role": "primary", "epoch": 1, "mode": "sync", "on_timeout": "degrade",
        "degraded": true,
        "replicas": [{"peer": "127.0.0.1:53412", "phase": "streaming", "acked": 10,
                      "sent": 20, "in_sync": false, "lag_bytes": 10,
                      "lag_transactions": 1, "lag_seconds": 2.5,
                      "connected_seconds": 12.0}]
    }));
    s
}

/// A replica refused by its primary.
fn refused() -> Snapshot {
    let mut s = healthy();
    let server = s.instances[0].server.as_mut().unwrap();
    server.storages[0].replication = Some(serde_json::json!({
        "role": "replica", "epoch": 1, "primary": "127.0.0.1:8101", "connected": false,
        "phase": "refused", "error": "diverged: this replica has transactions the primary never had",
        "lag_bytes": 0, "lag_transactions": 0, "lag_seconds": 0.0, "in_sync": false,
        "last_heard_seconds": 3.0
    }));
    s
}

fn check(name: &str, snap: &Snapshot, ui: &Ui, w: u16, h: u16) {
    let text = render_text(snap, ui, w, h).join("\n") + "\n";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/tui/snapshots")
        .join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_SNAPSHOTS=1 writes it)", path.display()));
    assert!(
        want == text,
        "{name}: the frame differs from {}\n--- got\n{text}--- want\n{want}",
        path.display()
    );
}

#[test]
fn healthy_cluster_80x24() {
    check("healthy_80x24", &healthy(), &Ui::new(false, true), 80, 24);
}

#[test]
fn healthy_cluster_wide() {
    check("healthy_160x40", &healthy(), &Ui::new(false, true), 160, 40);
}

#[test]
fn member_in_backoff() {
    let snap = backoff();
    let mut ui = Ui::new(false, true);
    ui.selected = Some("client1".into());
    check("backoff_80x24", &snap, &ui, 80, 24);
    check("backoff_160x40", &snap, &ui, 160, 40);
}

#[test]
fn unreachable_server_and_manager() {
    let snap = unreachable();
    check("unreachable_80x24", &snap, &Ui::new(false, true), 80, 24);
    check("unreachable_160x40", &snap, &Ui::new(false, true), 160, 40);
}

#[test]
fn confirmation_help_and_read_only() {
    let snap = healthy();
    let mut ui = Ui::new(false, true);
    ui.mode = Mode::Confirm(crate::tui::actions::Request {
        instance: "server".into(),
        kind: crate::tui::actions::ActionKind::Restart,
        signal: None,
    });
    check("confirm_restart_80x24", &snap, &ui, 80, 24);
    let mut ui = Ui::new(true, true);
    ui.mode = Mode::Help;
    check("help_read_only_80x24", &snap, &ui, 80, 24);
}

#[test]
fn pack_confirmation_and_progress() {
    let snap = healthy();
    let mut ui = Ui::new(false, true);
    ui.mode = Mode::Confirm(crate::tui::actions::Request {
        instance: "server".into(),
        kind: crate::tui::actions::ActionKind::Pack,
        signal: None,
    });
    check("confirm_pack_80x24", &snap, &ui, 80, 24);
    let mut ui = Ui::new(false, true);
    ui.note("pack server…");
    ui.running = 1;
    ui.progress = Some((
        "pack server".into(),
        crate::tui::actions::progress_text("Data.fs: copy the rest", 31 << 20, 48 << 20),
    ));
    check("progress_pack_80x24", &snap, &ui, 80, 24);
    check("progress_pack_160x40", &snap, &ui, 160, 40);
}

#[test]
fn replication_role_lag_and_promote_confirmation() {
    let snap = replicated();
    let ui = Ui::new(false, true);
    check("replication_80x24", &snap, &ui, 80, 24);
    check("replication_160x40", &snap, &ui, 160, 40);
    check("replication_refused_80x24", &refused(), &ui, 80, 24);
    let mut ui = Ui::new(false, true);
    ui.mode = Mode::Confirm(crate::tui::actions::Request {
        instance: "server".into(),
        kind: crate::tui::actions::ActionKind::Promote,
        signal: None,
    });
    check("confirm_promote_80x24", &snap, &ui, 80, 24);
    let mut ui = Ui::new(false, true);
    ui.mode = Mode::Help;
    check("help_80x24", &snap, &ui, 80, 24);
    let mut ui = Ui::new(false, true);
    ui.note("promote server: done: storage 1 promoted, epoch 2");
    let text = render_text(&snap, &ui, 100, 30).join("\n");
    assert!(
        text.contains("promote server: done: storage 1 promoted, epoch 2"),
        "{text}"
    );
}

#[test]
fn tiny_and_empty_screens_do_not_panic() {
    for (w, h) in [(1, 1), (20, 5), (40, 12), (300, 100)] {
        for snap in [
            Snapshot::default(),
            healthy(),
            backoff(),
            unreachable(),
            replicated(),
            refused(),
        ] {
            let mut ui = Ui::new(false, true);
            ui.mode = Mode::Help;
            render_text(&snap, &ui, w, h);
            ui.mode = Mode::Normal;
            ui.log_scroll = 1000;
            render_text(&snap, &ui, w, h);
        }
    }
}

#[test]
fn no_color_is_monochrome() {
    let snap = unreachable();
    let draw = |color: bool| {
        let mut term = Terminal::new(TestBackend::new(100, 30)).unwrap();
        term.draw(|f| {
            draw(f, &snap, &Ui::new(false, color));
        })
        .unwrap();
        term.backend().buffer().clone()
    };
    let mono = draw(false);
    assert!(
        mono.content
            .iter()
            .all(|c| c.fg == Color::Reset && c.bg == Color::Reset),
        "a colour was used with NO_COLOR"
    );
    let colored = draw(true);
    assert!(
        colored
            .content
            .iter()
            .any(|c| c.fg == Color::Red || c.bg == Color::Red)
    );
    // Same text either way.
    let text = |b: &ratatui::buffer::Buffer| {
        b.content
            .iter()
            .map(|c| c.symbol().to_owned())
            .collect::<String>()
    };
    assert_eq!(text(&mono), text(&colored));
}

#[test]
fn formats() {
    assert_eq!(duration(45.0), "45s");
    assert_eq!(duration(725.0), "12m05s");
    assert_eq!(duration(3725.0), "1h02m");
    assert_eq!(duration(2.0 * 86400.0 + 3.0 * 3600.0), "2d03h");
    assert_eq!(bytes(512), "512B");
    assert_eq!(bytes(48_345_678), "46M");
    assert_eq!(bytes(1536), "1.5K");
    assert_eq!(rate(Some(12.34)), "12.3");
    assert_eq!(rate(Some(340.0)), "340");
    assert_eq!(rate(None), "–");
}
