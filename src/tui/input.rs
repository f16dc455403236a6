//! Input: the dashboard's own state ([`Ui`]: selection, sort, filter, log position, prompts)
//! and what keys and the mouse do to it. Nothing here waits: an action becomes a
//! [`Command::Run`] for the main loop to hand to a worker thread.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent, MouseEventKind};
use ratatui::layout::{Position, Rect};

use super::actions::{self, ActionKind, Request};
use super::state::{Focus, InstanceInfo, Kind, Snapshot};
use crate::supervisor::commands::parse_signal;

/// Messages kept for the activity line.
const ACTIVITY: usize = 50;
/// Lines a page key scrolls the log.
const PAGE: usize = 10;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Pane {
    #[default]
    Instances,
    Log,
}

/// Columns the instance table sorts by (`s` cycles, `S` reverses).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortKey {
    /// The configuration's start order.
    #[default]
    Order,
    Name,
    State,
    Cpu,
    Rss,
    Uptime,
    Restarts,
}

impl SortKey {
    pub fn name(self) -> &'static str {
        match self {
            SortKey::Order => "start order",
            SortKey::Name => "name",
            SortKey::State => "state",
            SortKey::Cpu => "cpu",
            SortKey::Rss => "rss",
            SortKey::Uptime => "uptime",
            SortKey::Restarts => "restarts",
        }
    }

    fn next(self) -> SortKey {
        match self {
            SortKey::Order => SortKey::Name,
            SortKey::Name => SortKey::State,
            SortKey::State => SortKey::Cpu,
            SortKey::Cpu => SortKey::Rss,
            SortKey::Rss => SortKey::Uptime,
            SortKey::Uptime => SortKey::Restarts,
            SortKey::Restarts => SortKey::Order,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Normal,
    Help,
    /// Typing an instance filter (`/` on the table).
    Filter(String),
    /// Typing a log search (`/` on the log).
    Search(String),
    /// Typing the signal for `kill`.
    Signal {
        instance: String,
        text: String,
    },
    /// Waiting for `y` before a destructive action.
    Confirm(Request),
}

#[derive(Debug, Clone, Default)]
pub struct Ui {
    /// The selected instance, by name (stable when the order changes).
    pub selected: Option<String>,
    pub pane: Pane,
    pub sort: SortKey,
    pub descending: bool,
    pub filter: String,
    pub search: String,
    /// Which of the selected instance's logs the pane shows.
    pub log_source: usize,
    /// Lines scrolled up from the end of the log; 0 follows it.
    pub log_scroll: usize,
    pub mode: Mode,
    pub read_only: bool,
    pub color: bool,
    /// What the actions said, newest last.
    pub activity: Vec<String>,
    /// Actions still running.
    pub running: usize,
    /// The latest progress of a long action (pack, backup): what, and how far.
    pub progress: Option<(String, String)>,
}

/// What the main loop has to do after an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Quit,
    Run(Request),
}

impl Ui {
    pub fn new(read_only: bool, color: bool) -> Ui {
        Ui {
            read_only,
            color,
            ..Default::default()
        }
    }

    pub fn note(&mut self, msg: impl Into<String>) {
        self.activity.push(msg.into());
        if self.activity.len() > ACTIVITY {
            self.activity.remove(0);
        }
    }

    /// What the collector should read the log of.
    pub fn focus(&self, snap: &Snapshot) -> Focus {
        Focus {
            instance: selected(snap, self)
                .map(|i| i.name.clone())
                .or_else(|| self.selected.clone()),
            log: self.log_source,
        }
    }
}

/// The activity line at an action's end: done or failed, with its last line when it has one
/// (pack and backup end with their one-line summary or error).
pub fn done_text(what: &str, result: &Result<u8, String>, summary: Option<&str>) -> String {
    let end = match result {
        Ok(0) => "done".to_owned(),
        Ok(code) => format!("failed (exit status {code})"),
        Err(e) => return format!("{what}: {e}"),
    };
    match summary {
        Some(s) => format!("{what}: {end}: {s}"),
        None => format!("{what}: {end}"),
    }
}

/// The instances shown, filtered and sorted.
pub fn visible<'a>(snap: &'a Snapshot, ui: &Ui) -> Vec<&'a InstanceInfo> {
    let needle = ui.filter.to_lowercase();
    let mut v: Vec<&InstanceInfo> = snap
        .instances
        .iter()
        .filter(|i| needle.is_empty() || i.name.to_lowercase().contains(&needle))
        .collect();
    let cpu = |i: &InstanceInfo| i.process.and_then(|p| p.cpu_percent).unwrap_or(-1.0);
    let rss = |i: &InstanceInfo| i.process.map_or(0, |p| p.rss_bytes);
    let uptime = |i: &InstanceInfo| i.status.as_ref().and_then(|s| s.uptime).unwrap_or(-1.0);
    let restarts = |i: &InstanceInfo| i.status.as_ref().map_or(0, |s| s.restarts);
    match ui.sort {
        SortKey::Order => {}
        SortKey::Name => v.sort_by(|a, b| a.name.cmp(&b.name)),
        SortKey::State => v.sort_by_key(|i| i.state()),
        SortKey::Cpu => v.sort_by(|a, b| cpu(b).total_cmp(&cpu(a))),
        SortKey::Rss => v.sort_by_key(|i| std::cmp::Reverse(rss(i))),
        SortKey::Uptime => v.sort_by(|a, b| uptime(b).total_cmp(&uptime(a))),
        SortKey::Restarts => v.sort_by_key(|i| std::cmp::Reverse(restarts(i))),
    }
    if ui.descending {
        v.reverse();
    }
    v
}

/// The selected instance: the one named in `ui` if shown, else the first shown.
pub fn selected<'a>(snap: &'a Snapshot, ui: &Ui) -> Option<&'a InstanceInfo> {
    let v = visible(snap, ui);
    ui.selected
        .as_ref()
        .and_then(|name| v.iter().find(|i| &i.name == name).copied())
        .or_else(|| v.first().copied())
}

/// Lines of the log that match the search, oldest first.
pub fn matches(snap: &Snapshot, search: &str) -> Vec<usize> {
    let Some(log) = &snap.log else {
        return Vec::new();
    };
    if search.is_empty() {
        return Vec::new();
    }
    let needle = search.to_lowercase();
    log.lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.to_lowercase().contains(&needle))
        .map(|(i, _)| i)
        .collect()
}

fn log_len(snap: &Snapshot) -> usize {
    snap.log.as_ref().map_or(0, |l| l.lines.len())
}

pub fn on_key(ui: &mut Ui, snap: &Snapshot, key: KeyEvent) -> Option<Command> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        return Some(Command::Quit);
    }
    match std::mem::take(&mut ui.mode) {
        Mode::Normal => normal_key(ui, snap, key),
        Mode::Help => {
            if matches!(key.code, KeyCode::Char('q')) {
                return Some(Command::Quit);
            }
            None
        }
        Mode::Filter(mut text) => {
            match edit(&mut text, key) {
                Edit::Typing => {
                    ui.filter = text.clone();
                    ui.mode = Mode::Filter(text);
                }
                Edit::Enter => ui.filter = text,
                Edit::Cancel => ui.filter.clear(),
            }
            None
        }
        Mode::Search(mut text) => {
            match edit(&mut text, key) {
                Edit::Typing => ui.mode = Mode::Search(text),
                Edit::Enter => {
                    ui.search = text;
                    jump(ui, snap, Jump::Newest);
                }
                Edit::Cancel => {}
            }
            None
        }
        Mode::Signal { instance, mut text } => {
            match edit(&mut text, key) {
                Edit::Typing => ui.mode = Mode::Signal { instance, text },
                Edit::Enter => {
                    let word = if text.trim().is_empty() {
                        "TERM"
                    } else {
                        text.trim()
                    };
                    match parse_signal(word) {
                        Ok(sig) => {
                            ui.mode = Mode::Confirm(Request {
                                instance,
                                kind: ActionKind::Kill,
                                signal: Some(sig),
                            })
                        }
                        Err(e) => ui.note(format!("{e}")),
                    }
                }
                Edit::Cancel => {}
            }
            None
        }
        Mode::Confirm(req) => {
            if matches!(key.code, KeyCode::Char('y' | 'Y')) {
                Some(Command::Run(req))
            } else {
                ui.note(format!("{}: cancelled", req.describe()));
                None
            }
        }
    }
}

enum Edit {
    Typing,
    Enter,
    Cancel,
}

fn edit(text: &mut String, key: KeyEvent) -> Edit {
    match key.code {
        KeyCode::Enter => Edit::Enter,
        KeyCode::Esc => Edit::Cancel,
        KeyCode::Backspace => {
            text.pop();
            Edit::Typing
        }
        KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => {
            text.push(c);
            Edit::Typing
        }
        _ => Edit::Typing,
    }
}

enum Jump {
    Newest,
    Older,
    Newer,
}

/// Scroll the log so that a search match is its last visible line.
fn jump(ui: &mut Ui, snap: &Snapshot, how: Jump) {
    let m = matches(snap, &ui.search);
    let len = log_len(snap);
    if m.is_empty() || len == 0 {
        if !ui.search.is_empty() {
            ui.note(format!("not found in the log: {}", ui.search));
        }
        return;
    }
    let bottom = len - 1 - ui.log_scroll.min(len - 1);
    let target = match how {
        Jump::Newest => m.last().copied(),
        Jump::Older => m.iter().rev().find(|&&i| i < bottom).copied(),
        Jump::Newer => m.iter().find(|&&i| i > bottom).copied(),
    };
    match target {
        Some(i) => {
            ui.log_scroll = len - 1 - i;
            ui.pane = Pane::Log;
        }
        None => ui.note(format!("no more matches for {}", ui.search)),
    }
}

fn move_selection(ui: &mut Ui, snap: &Snapshot, delta: isize) {
    let v = visible(snap, ui);
    if v.is_empty() {
        return;
    }
    let cur = selected(snap, ui)
        .and_then(|s| v.iter().position(|i| i.name == s.name))
        .unwrap_or(0);
    let next = (cur as isize + delta).clamp(0, v.len() as isize - 1) as usize;
    if v[next].name != v[cur].name || ui.selected.is_none() {
        ui.selected = Some(v[next].name.clone());
        ui.log_scroll = 0;
    }
}

fn scroll_log(ui: &mut Ui, snap: &Snapshot, up: isize) {
    let max = log_len(snap).saturating_sub(1) as isize;
    ui.log_scroll = (ui.log_scroll as isize + up).clamp(0, max) as usize;
}

fn normal_key(ui: &mut Ui, snap: &Snapshot, key: KeyEvent) -> Option<Command> {
    let log = ui.pane == Pane::Log;
    match key.code {
        KeyCode::Char('q') => return Some(Command::Quit),
        KeyCode::Esc => {
            ui.filter.clear();
            ui.search.clear();
        }
        KeyCode::Char('?') | KeyCode::F(1) => ui.mode = Mode::Help,
        KeyCode::Tab | KeyCode::BackTab => {
            ui.pane = if log { Pane::Instances } else { Pane::Log };
        }
        KeyCode::Up | KeyCode::Char('k') if log => scroll_log(ui, snap, 1),
        KeyCode::Down | KeyCode::Char('j') if log => scroll_log(ui, snap, -1),
        KeyCode::Up | KeyCode::Char('k') => move_selection(ui, snap, -1),
        KeyCode::Down | KeyCode::Char('j') => move_selection(ui, snap, 1),
        KeyCode::PageUp => scroll_log(ui, snap, PAGE as isize),
        KeyCode::PageDown => scroll_log(ui, snap, -(PAGE as isize)),
        KeyCode::Home | KeyCode::Char('g') if log => {
            ui.log_scroll = log_len(snap).saturating_sub(1)
        }
        KeyCode::Home | KeyCode::Char('g') => {
            move_selection(ui, snap, -(snap.instances.len() as isize))
        }
        KeyCode::End | KeyCode::Char('G') if !log => {
            move_selection(ui, snap, snap.instances.len() as isize)
        }
        KeyCode::End | KeyCode::Char('G' | 'f') => ui.log_scroll = 0,
        KeyCode::Char('/') if log => ui.mode = Mode::Search(String::new()),
        KeyCode::Char('/') => ui.mode = Mode::Filter(ui.filter.clone()),
        KeyCode::Char('n') => jump(ui, snap, Jump::Older),
        KeyCode::Char('N') => jump(ui, snap, Jump::Newer),
        KeyCode::Char('s') => ui.sort = ui.sort.next(),
        KeyCode::Char('S') => ui.descending = !ui.descending,
        KeyCode::Char('l') => {
            ui.log_source = ui.log_source.wrapping_add(1);
            ui.log_scroll = 0;
        }
        KeyCode::Char(c) => {
            if let Some(spec) = actions::spec_for_key(c) {
                return action_key(ui, snap, spec);
            }
        }
        _ => {}
    }
    None
}

fn action_key(ui: &mut Ui, snap: &Snapshot, spec: &actions::ActionSpec) -> Option<Command> {
    if ui.read_only {
        ui.note(format!("{}: actions are disabled (--read-only)", spec.name));
        return None;
    }
    let inst = selected(snap, ui)?;
    if inst.kind == Kind::Remote {
        ui.note(format!(
            "{}: a server given by address has no manager; use -i on its instance",
            spec.name
        ));
        return None;
    }
    if spec.kind.on_server() && inst.kind != Kind::Server {
        ui.note(format!(
            "{}: select a server instance; {} has no storages",
            spec.name, inst.name
        ));
        return None;
    }
    if spec.kind == ActionKind::Promote && replica_storages(inst).is_empty() {
        let why = if inst
            .server
            .as_ref()
            .is_some_and(|s| s.storages.iter().any(|s| s.replication.is_some()))
        {
            "it has no replica storage"
        } else {
            "it reports no replication (not running, or no replicated storage)"
        };
        ui.note(format!("{}: {} not promoted: {why}", spec.name, inst.name));
        return None;
    }
    let req = Request {
        instance: inst.name.clone(),
        kind: spec.kind,
        signal: None,
    };
    if spec.kind == ActionKind::Kill {
        ui.mode = Mode::Signal {
            instance: inst.name.clone(),
            text: String::new(),
        };
        None
    } else if spec.confirm {
        ui.mode = Mode::Confirm(req);
        None
    } else {
        Some(Command::Run(req))
    }
}

/// The names of an instance's storages that are replicas (as last collected).
pub fn replica_storages(inst: &InstanceInfo) -> Vec<String> {
    inst.server.as_ref().map_or_else(Vec::new, |s| {
        s.storages
            .iter()
            .filter(|s| {
                s.replication
                    .as_ref()
                    .is_some_and(|r| r["role"] == "replica")
            })
            .map(|s| s.name.clone())
            .collect()
    })
}

/// The mouse, when enabled (`--mouse`): the wheel scrolls the pane under it, a click selects
/// a row of the instance table or focuses the log.
pub fn on_mouse(
    ui: &mut Ui,
    snap: &Snapshot,
    areas: &super::view::Areas,
    ev: MouseEvent,
) -> Option<Command> {
    let at = Position::new(ev.column, ev.row);
    let inside = |r: Rect| r.contains(at);
    match ev.kind {
        MouseEventKind::ScrollUp if inside(areas.log) => scroll_log(ui, snap, 3),
        MouseEventKind::ScrollDown if inside(areas.log) => scroll_log(ui, snap, -3),
        MouseEventKind::ScrollUp if inside(areas.instances) => move_selection(ui, snap, -1),
        MouseEventKind::ScrollDown if inside(areas.instances) => move_selection(ui, snap, 1),
        MouseEventKind::Down(_) if inside(areas.log) => ui.pane = Pane::Log,
        MouseEventKind::Down(_) if inside(areas.instances) => {
            ui.pane = Pane::Instances;
            // Border and header row come first.
            let row = ev.row.saturating_sub(areas.instances.y + 2) as usize;
            if ev.row >= areas.instances.y + 2
                && let Some(i) = visible(snap, ui).get(row)
            {
                ui.selected = Some(i.name.clone());
                ui.log_scroll = 0;
            }
        }
        _ => {}
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::state::InstanceInfo;

    fn snap() -> Snapshot {
        let inst = |n: &str| InstanceInfo {
            name: n.into(),
            kind: Kind::Client,
            ..Default::default()
        };
        let mut s = Snapshot {
            instances: vec![inst("server"), inst("client1"), inst("client2")],
            ..Default::default()
        };
        s.instances[0].kind = Kind::Server;
        s.log = Some(crate::tui::state::LogTail {
            lines: (0..30)
                .map(|i| format!("line {i} {}", if i % 10 == 3 { "ERROR" } else { "" }))
                .collect(),
            ..Default::default()
        });
        s
    }

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    fn typed(ui: &mut Ui, s: &Snapshot, text: &str) {
        for c in text.chars() {
            on_key(ui, s, key(KeyCode::Char(c)));
        }
    }

    #[test]
    fn selection_moves_within_the_filtered_rows() {
        let s = snap();
        let mut ui = Ui::new(false, true);
        assert_eq!(selected(&s, &ui).unwrap().name, "server");
        on_key(&mut ui, &s, key(KeyCode::Down));
        assert_eq!(selected(&s, &ui).unwrap().name, "client1");
        on_key(&mut ui, &s, key(KeyCode::Char('/')));
        typed(&mut ui, &s, "2");
        assert_eq!(ui.mode, Mode::Filter("2".into()));
        on_key(&mut ui, &s, key(KeyCode::Enter));
        assert_eq!(visible(&s, &ui).len(), 1);
        assert_eq!(selected(&s, &ui).unwrap().name, "client2");
        on_key(&mut ui, &s, key(KeyCode::Esc));
        assert_eq!(visible(&s, &ui).len(), 3);
        on_key(&mut ui, &s, key(KeyCode::Char('s')));
        assert_eq!(ui.sort, SortKey::Name);
        assert_eq!(visible(&s, &ui)[0].name, "client1");
    }

    #[test]
    fn destructive_actions_ask_first_and_read_only_refuses() {
        let s = snap();
        let mut ui = Ui::new(false, true);
        assert_eq!(on_key(&mut ui, &s, key(KeyCode::Char('R'))), None);
        assert!(matches!(ui.mode, Mode::Confirm(_)));
        let run = on_key(&mut ui, &s, key(KeyCode::Char('y')));
        assert_eq!(
            run,
            Some(Command::Run(Request {
                instance: "server".into(),
                kind: ActionKind::Restart,
                signal: None
            }))
        );
        on_key(&mut ui, &s, key(KeyCode::Char('R')));
        assert_eq!(on_key(&mut ui, &s, key(KeyCode::Char('n'))), None);
        assert_eq!(ui.mode, Mode::Normal);
        // kill asks for the signal, then confirms.
        on_key(&mut ui, &s, key(KeyCode::Char('K')));
        typed(&mut ui, &s, "hup");
        on_key(&mut ui, &s, key(KeyCode::Enter));
        assert!(
            matches!(&ui.mode, Mode::Confirm(r) if r.signal == Some(nix::sys::signal::Signal::SIGHUP))
        );
        on_key(&mut ui, &s, key(KeyCode::Esc));
        // logreopen runs at once.
        assert!(matches!(
            on_key(&mut ui, &s, key(KeyCode::Char('o'))),
            Some(Command::Run(_))
        ));

        let mut ro = Ui::new(true, true);
        assert_eq!(on_key(&mut ro, &s, key(KeyCode::Char('R'))), None);
        assert_eq!(ro.mode, Mode::Normal);
        assert!(ro.activity.last().unwrap().contains("--read-only"));
        assert_eq!(
            on_key(&mut ro, &s, key(KeyCode::Char('q'))),
            Some(Command::Quit)
        );
    }

    #[test]
    fn pack_and_backup_confirm_on_a_server_and_read_only_refuses() {
        let s = snap();
        let mut ui = Ui::new(false, true);
        for (c, kind) in [('P', ActionKind::Pack), ('B', ActionKind::Backup)] {
            assert_eq!(on_key(&mut ui, &s, key(KeyCode::Char(c))), None);
            let want = Request {
                instance: "server".into(),
                kind,
                signal: None,
            };
            assert_eq!(ui.mode, Mode::Confirm(want.clone()));
            assert_eq!(
                on_key(&mut ui, &s, key(KeyCode::Char('y'))),
                Some(Command::Run(want))
            );
            // Any other key cancels.
            on_key(&mut ui, &s, key(KeyCode::Char(c)));
            assert_eq!(on_key(&mut ui, &s, key(KeyCode::Esc)), None);
            assert_eq!(ui.mode, Mode::Normal);
            assert!(ui.activity.last().unwrap().contains("cancelled"));
        }
        // A client has no storages.
        on_key(&mut ui, &s, key(KeyCode::Down));
        assert_eq!(on_key(&mut ui, &s, key(KeyCode::Char('P'))), None);
        assert_eq!(ui.mode, Mode::Normal);
        assert!(ui.activity.last().unwrap().contains("select a server"));

        let mut ro = Ui::new(true, true);
        for c in ['P', 'B'] {
            assert_eq!(on_key(&mut ro, &s, key(KeyCode::Char(c))), None);
            assert_eq!(ro.mode, Mode::Normal);
            assert!(ro.activity.last().unwrap().contains("--read-only"));
        }
        assert_eq!(
            done_text("pack server", &Ok(0), Some("Data.fs: packed")),
            "pack server: done: Data.fs: packed"
        );
        assert_eq!(
            done_text("backup server", &Ok(1), None),
            "backup server: failed (exit status 1)"
        );
    }

    #[test]
    fn promote_asks_first_and_only_for_a_replica() {
        let mut s = snap();
        let mut ui = Ui::new(false, true);
        // No replication reported: nothing to promote, nothing asked.
        assert_eq!(on_key(&mut ui, &s, key(KeyCode::Char('O'))), None);
        assert_eq!(ui.mode, Mode::Normal);
        assert!(
            ui.activity
                .last()
                .unwrap()
                .contains("reports no replication"),
            "{:?}",
            ui.activity
        );
        // A primary is not promoted.
        let storage = |role: &str| crate::tui::state::StorageInfo {
            name: "1".into(),
            replication: Some(serde_json::json!({"role": role, "primary": "127.0.0.1:8101"})),
            ..Default::default()
        };
        s.instances[0].server = Some(crate::tui::state::ServerInfo {
            storages: vec![storage("primary")],
            ..Default::default()
        });
        assert_eq!(on_key(&mut ui, &s, key(KeyCode::Char('O'))), None);
        assert_eq!(ui.mode, Mode::Normal);
        assert!(ui.activity.last().unwrap().contains("no replica storage"));
        // A replica: confirm, then run.
        s.instances[0].server.as_mut().unwrap().storages = vec![storage("replica")];
        assert_eq!(replica_storages(&s.instances[0]), ["1"]);
        assert_eq!(on_key(&mut ui, &s, key(KeyCode::Char('O'))), None);
        let want = Request {
            instance: "server".into(),
            kind: ActionKind::Promote,
            signal: None,
        };
        assert_eq!(ui.mode, Mode::Confirm(want.clone()));
        assert_eq!(want.describe(), "promote server");
        assert_eq!(
            on_key(&mut ui, &s, key(KeyCode::Char('y'))),
            Some(Command::Run(want))
        );
        on_key(&mut ui, &s, key(KeyCode::Char('O')));
        assert_eq!(on_key(&mut ui, &s, key(KeyCode::Char('n'))), None);
        assert!(
            ui.activity
                .last()
                .unwrap()
                .contains("promote server: cancelled")
        );
        // A client is not a server.
        on_key(&mut ui, &s, key(KeyCode::Down));
        assert_eq!(on_key(&mut ui, &s, key(KeyCode::Char('O'))), None);
        assert!(ui.activity.last().unwrap().contains("select a server"));
        // Read-only refuses.
        let mut ro = Ui::new(true, true);
        assert_eq!(on_key(&mut ro, &s, key(KeyCode::Char('O'))), None);
        assert_eq!(ro.mode, Mode::Normal);
        assert!(ro.activity.last().unwrap().contains("--read-only"));
        // The result line.
        assert_eq!(
            done_text(
                "promote server",
                &Ok(0),
                Some("storage 1 promoted, epoch 2")
            ),
            "promote server: done: storage 1 promoted, epoch 2"
        );
        assert_eq!(
            done_text(
                "promote server",
                &Err("the primary is still streaming to this replica".into()),
                None
            ),
            "promote server: the primary is still streaming to this replica"
        );
    }

    #[test]
    fn log_search_jumps_between_matches() {
        let s = snap();
        let mut ui = Ui::new(false, true);
        on_key(&mut ui, &s, key(KeyCode::Tab));
        on_key(&mut ui, &s, key(KeyCode::Char('/')));
        typed(&mut ui, &s, "error");
        on_key(&mut ui, &s, key(KeyCode::Enter));
        // Matches at 3, 13, 23 of 30 lines: the newest is at the bottom.
        assert_eq!(ui.log_scroll, 6);
        on_key(&mut ui, &s, key(KeyCode::Char('n')));
        assert_eq!(ui.log_scroll, 16);
        on_key(&mut ui, &s, key(KeyCode::Char('N')));
        assert_eq!(ui.log_scroll, 6);
        on_key(&mut ui, &s, key(KeyCode::Char('f')));
        assert_eq!(ui.log_scroll, 0);
    }
}
