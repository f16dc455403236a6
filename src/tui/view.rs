//! Drawing: a pure function of the last [`Snapshot`] and the [`Ui`] state. Nothing here reads
//! a clock, a file or a socket (ages are measured against the snapshot's own time), so the
//! same inputs draw the same screen: that is what the snapshot tests rely on.
//!
//! At 80 columns every table keeps its essential columns; from [`WIDE`] columns on, more
//! columns appear (manager pid, back-off, last exit; stores, aborts, conflicts, last pack and
//! backup, the full last-transaction time).

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Sparkline, Table, TableState};

use super::actions::{ACTIONS, ActionKind};
use super::input::{self, Mode, Pane, Ui};
use super::state::{InstanceInfo, Kind, MaintenanceRecord, ServerInfo, Snapshot, StorageInfo};
use crate::storage::TimeStamp;

/// From this width on, the tables show their extra columns.
pub const WIDE: u16 = 120;
/// Problems listed in the banner before "and N more".
const BANNER_LINES: usize = 3;

/// Where the panes were drawn (for the mouse).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Areas {
    pub instances: Rect,
    pub log: Rect,
}

/// Colours, or their monochrome stand-ins (`NO_COLOR`): reverse video and bold only.
struct Theme {
    color: bool,
}

impl Theme {
    fn fg(&self, c: Color) -> Style {
        if self.color {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }
    fn header(&self) -> Style {
        if self.color {
            Style::new()
                .fg(Color::White)
                .bg(Color::Blue)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
        }
    }
    fn banner(&self) -> Style {
        if self.color {
            Style::new()
                .fg(Color::White)
                .bg(Color::Red)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
        }
    }
    fn state(&self, state: &str) -> Style {
        let bad = matches!(state, "backoff" | "not running" | "down" | "exited");
        if !self.color {
            return if bad {
                Style::new().add_modifier(Modifier::BOLD)
            } else {
                Style::new()
            };
        }
        match state {
            "running" | "up" => Style::new().fg(Color::Green),
            "starting" | "stopping" => Style::new().fg(Color::Yellow),
            "stopped" => Style::new().fg(Color::DarkGray),
            _ if bad => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            _ => Style::new(),
        }
    }
    fn selected(&self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }
    fn dim(&self) -> Style {
        self.fg(Color::DarkGray)
    }
    fn title(&self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }
    fn focused_border(&self) -> Style {
        if self.color {
            Style::new().fg(Color::Cyan)
        } else {
            Style::new().add_modifier(Modifier::BOLD)
        }
    }
    fn matched(&self) -> Style {
        if self.color {
            Style::new().fg(Color::Black).bg(Color::Yellow)
        } else {
            Style::new().add_modifier(Modifier::REVERSED)
        }
    }
}

/// Draw the whole screen.
pub fn draw(f: &mut Frame, snap: &Snapshot, ui: &Ui) -> Areas {
    let area = f.area();
    let t = Theme { color: ui.color };
    let wide = area.width >= WIDE;
    let rows = input::visible(snap, ui);
    let sel = input::selected(snap, ui);
    let storage_owner = storage_owner(snap, sel);
    let banner = banner_lines(snap);

    let inst_h = (rows.len().max(1) as u16 + 3).min(area.height.saturating_sub(8).max(4));
    let stor_h = storage_owner.map_or(0, |i| {
        let n = i.server.as_ref().map_or(0, |s| s.storages.len().max(1)) as u16;
        let repl = i.server.as_ref().map_or(0, replicated) as u16;
        let spark = if area.height >= 24 { 2 } else { 0 };
        (n + 3 + repl + spark).min(area.height / 3)
    });
    let [header, banner_area, inst_area, stor_area, log_area, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(banner.len() as u16),
        Constraint::Length(inst_h),
        Constraint::Length(stor_h),
        Constraint::Min(3),
        Constraint::Length(2),
    ])
    .areas(area);

    draw_header(f, header, snap, ui, &t);
    if !banner.is_empty() {
        let lines: Vec<Line> = banner.into_iter().map(Line::from).collect();
        f.render_widget(Paragraph::new(lines).style(t.banner()), banner_area);
    }
    draw_instances(f, inst_area, snap, ui, &rows, sel, wide, &t);
    if let Some(owner) = storage_owner {
        draw_storages(f, stor_area, snap, owner, sel, wide, &t);
    }
    draw_log(f, log_area, snap, ui, &t);
    draw_footer(f, footer, ui, &t);
    match &ui.mode {
        Mode::Help => draw_help(f, area, ui, &t),
        Mode::Confirm(req) if req.kind == ActionKind::Promote => {
            let which: Vec<String> = snap
                .instances
                .iter()
                .find(|i| i.name == req.instance)
                .and_then(|i| i.server.as_ref())
                .map(|s| {
                    s.storages
                        .iter()
                        .filter_map(|s| {
                            let r = s.replication.as_ref()?;
                            (r["role"] == "replica").then(|| match r["primary"].as_str() {
                                Some(p) => format!("{} (replica of {p})", s.name),
                                None => s.name.clone(),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            let text = format!(
                "Promote {} to primary: storage{} {}?",
                req.instance,
                if which.len() == 1 { "" } else { "s" },
                which.join(", ")
            );
            draw_modal(
                f,
                area,
                " Confirm ",
                &[
                    text,
                    "Only when its primary is lost: clients will write here.".into(),
                    "y: yes    any other key: no".into(),
                ],
                &t,
            );
        }
        Mode::Confirm(req) if req.kind.on_storages() => {
            let files: Vec<String> = snap
                .instances
                .iter()
                .find(|i| i.name == req.instance)
                .and_then(|i| i.server.as_ref())
                .map(|s| {
                    s.storages
                        .iter()
                        .filter(|s| s.kind.as_deref() == Some("file"))
                        .map(|s| s.name.clone())
                        .collect()
                })
                .unwrap_or_default();
            let name = ACTIONS
                .iter()
                .find(|a| a.kind == req.kind)
                .map_or("?", |a| a.name);
            let which = if files.is_empty() {
                String::new()
            } else {
                format!(" ({})", files.join(", "))
            };
            let text = format!(
                "{} the file storages{which} of {}?",
                capitalise(name),
                req.instance
            );
            draw_modal(
                f,
                area,
                " Confirm ",
                &[text, "y: yes    any other key: no".into()],
                &t,
            );
        }
        Mode::Confirm(req) => {
            let pid = snap
                .instances
                .iter()
                .find(|i| i.name == req.instance)
                .and_then(|i| i.pid())
                .map_or(String::new(), |p| format!(" (pid {p})"));
            let text = format!("{}{pid}?", capitalise(&req.describe()));
            draw_modal(
                f,
                area,
                " Confirm ",
                &[text, "y: yes    any other key: no".into()],
                &t,
            );
        }
        _ => {}
    }
    Areas {
        instances: inst_area,
        log: log_area,
    }
}

/// The server whose storages are shown: the selected one, else (a client is selected) the
/// first server.
fn storage_owner<'a>(
    snap: &'a Snapshot,
    sel: Option<&'a InstanceInfo>,
) -> Option<&'a InstanceInfo> {
    sel.filter(|i| i.server.is_some())
        .or_else(|| snap.instances.iter().find(|i| i.server.is_some()))
}

fn draw_header(f: &mut Frame, area: Rect, snap: &Snapshot, ui: &Ui, t: &Theme) {
    let up = snap.instances.iter().filter(|i| i.is_up()).count();
    let mut left = format!(
        " zodbctl top │ {} │ up {up}/{} │ commits/s {} │ loads/s {}",
        snap.title,
        snap.instances.len(),
        rate(snap.commits_per_s),
        rate(snap.loads_per_s),
    );
    let mut right = clock(snap.taken_at);
    if ui.read_only {
        right = format!("read-only │ {right}");
    }
    right.push(' ');
    let width = area.width as usize;
    let rlen = right.chars().count();
    if left.chars().count() + rlen > width {
        left = truncate(&left, width.saturating_sub(rlen));
    }
    let pad = width.saturating_sub(left.chars().count() + rlen);
    let line = format!("{left}{}{right}", " ".repeat(pad));
    f.render_widget(Paragraph::new(line).style(t.header()), area);
}

/// One line per instance that cannot be reached.
fn banner_lines(snap: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for i in &snap.instances {
        if let Some(st) = &i.status
            && st.state == "not running"
        {
            out.push(format!(
                " ⚠ {}: manager not running (no answer on {})",
                i.name, st.socket
            ));
            continue;
        }
        let running = i.status.as_ref().is_none_or(|s| s.pid.is_some());
        if let Some(s) = &i.server
            && let Some(e) = &s.error
            && running
        {
            out.push(format!(" ⚠ {} unreachable at {}: {e}", i.name, s.address));
        }
    }
    if out.len() > BANNER_LINES {
        let more = out.len() - (BANNER_LINES - 1);
        out.truncate(BANNER_LINES - 1);
        out.push(format!(" ⚠ … and {more} more"));
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn draw_instances(
    f: &mut Frame,
    area: Rect,
    snap: &Snapshot,
    ui: &Ui,
    rows: &[&InstanceInfo],
    sel: Option<&InstanceInfo>,
    wide: bool,
    t: &Theme,
) {
    let mut title = format!(
        " Instances · sort: {}{}",
        ui.sort.name(),
        if ui.descending { " ▼" } else { "" }
    );
    if !ui.filter.is_empty() {
        title.push_str(&format!(" · filter: {}", ui.filter));
    }
    title.push(' ');
    let mut header = vec![
        "NAME", "KIND", "STATE", "RDY", "PID", "UPTIME", "RST", "CPU%", "RSS",
    ];
    let name_w = rows
        .iter()
        .map(|i| i.name.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(6, if wide { 24 } else { 14 }) as u16;
    let mut widths = vec![
        Constraint::Length(name_w),
        Constraint::Length(6),
        Constraint::Length(if wide { 14 } else { 11 }),
        Constraint::Length(3),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Length(3),
        Constraint::Length(5),
        Constraint::Length(6),
    ];
    if wide {
        header.extend(["MANAGER", "LAST EXIT"]);
        widths.extend([Constraint::Length(7), Constraint::Length(22)]);
    }
    header.push("ADDRESS");
    widths.push(Constraint::Fill(1));
    let body: Vec<Row> = rows
        .iter()
        .map(|i| {
            let st = i.status.as_ref();
            let state = i.state();
            let mut shown = state.clone();
            if let Some(s) = st
                && state == "backoff"
                && let Some(d) = s.delay
            {
                shown = format!("backoff {}", duration(d));
            }
            if let Some(s) = st
                && state == "stopped"
                && let Some(why) = &s.last_exit
            {
                // How it ended, in the state column's width: `exited 1`, `SIGKILL`.
                shown = match why.strip_prefix("exit status ") {
                    Some(code) => format!("exited {code}"),
                    None => why.rsplit(' ').next().unwrap_or(why).to_owned(),
                };
            }
            let kind = i.kind.name();
            let ready = match st {
                Some(s) if s.pid.is_some() => {
                    if s.ready {
                        "yes"
                    } else {
                        "no"
                    }
                }
                Some(_) => "–",
                None => {
                    if i.is_up() {
                        "yes"
                    } else {
                        "–"
                    }
                }
            };
            let mut cells = vec![
                Cell::from(i.name.clone()),
                Cell::from(kind),
                Cell::from(shown).style(t.state(&state)),
                Cell::from(ready),
                Cell::from(opt(i.pid())),
                Cell::from(st.and_then(|s| s.uptime).map_or("–".into(), duration)),
                Cell::from(st.map_or("–".into(), |s| s.restarts.to_string())),
                Cell::from(
                    i.process
                        .and_then(|p| p.cpu_percent)
                        .map_or("–".into(), |c| format!("{c:.1}")),
                ),
                Cell::from(i.process.map_or("–".into(), |p| bytes(p.rss_bytes))),
            ];
            if wide {
                cells.push(Cell::from(opt(st.and_then(|s| s.manager_pid))));
                cells.push(Cell::from(
                    st.and_then(|s| s.last_exit.clone())
                        .unwrap_or_else(|| "–".into()),
                ));
            }
            cells.push(Cell::from(i.address.clone().unwrap_or_else(|| "–".into())));
            Row::new(cells)
        })
        .collect();
    let border = if ui.pane == Pane::Instances {
        t.focused_border()
    } else {
        Style::new()
    };
    let table = Table::new(body, widths)
        .header(Row::new(header).style(t.title()))
        .block(
            Block::new()
                .borders(Borders::ALL)
                .border_style(border)
                .title(title),
        )
        .row_highlight_style(t.selected());
    let mut state = TableState::default();
    state.select(sel.and_then(|s| rows.iter().position(|i| i.name == s.name)));
    f.render_stateful_widget(table, area, &mut state);
    if rows.is_empty() && area.height > 3 {
        let msg = if snap.instances.is_empty() {
            " nothing to watch"
        } else {
            " no instance matches the filter"
        };
        f.render_widget(
            Paragraph::new(msg).style(t.dim()),
            Rect::new(area.x + 1, area.y + 2, area.width.saturating_sub(2), 1),
        );
    }
}

fn draw_storages(
    f: &mut Frame,
    area: Rect,
    snap: &Snapshot,
    owner: &InstanceInfo,
    sel: Option<&InstanceInfo>,
    wide: bool,
    t: &Theme,
) {
    if area.height < 3 {
        return;
    }
    let Some(server) = &owner.server else {
        return;
    };
    let via = match sel {
        Some(s) if s.name != owner.name => format!(" (selected: {})", s.name),
        _ => String::new(),
    };
    let title = format!(" Storages of {} · {}{via} ", owner.name, server.address);
    let block = Block::new().borders(Borders::ALL).title(title);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let repl_n = replicated(server) as u16;
    let spark_h = if inner.height >= server.storages.len().max(1) as u16 + 3 + repl_n {
        2
    } else {
        0
    };
    // The replication lines right under the table, what is left over at the bottom.
    let table_h = server.storages.len().max(1) as u16 + 1;
    let [table_area, repl_area, spark_area, _] = Layout::vertical([
        Constraint::Max(table_h),
        Constraint::Length(repl_n),
        Constraint::Length(spark_h),
        Constraint::Fill(1),
    ])
    .areas(inner);
    if repl_n > 0 {
        draw_replication(f, repl_area, server, t);
    }

    let now = snap.taken_at;
    let name_w = server
        .storages
        .iter()
        .map(|s| s.name.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(7, 20) as u16;
    let mut header = vec![
        "STORAGE", "TYPE", "SIZE", "OBJECTS", "LAST TXN", "AGE", "C/S", "L/S", "CONN", "LOCK",
        "WAIT",
    ];
    let mut widths = vec![
        Constraint::Length(name_w),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(if wide { 19 } else { 8 }),
        Constraint::Length(5),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(4),
        Constraint::Length(if wide { 16 } else { 6 }),
        Constraint::Length(4),
    ];
    if wide {
        header.extend([
            "STORES",
            "ABORTS",
            "CONFL",
            "ACTIVE",
            "LAST PACK",
            "LAST BACKUP",
        ]);
        widths.extend([
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Length(5),
            Constraint::Length(6),
            Constraint::Length(11),
            Constraint::Length(11),
        ]);
    }
    let rows: Vec<Row> = server
        .storages
        .iter()
        .map(|s| storage_row(s, now, wide))
        .collect();
    let table = Table::new(rows, widths).header(Row::new(header).style(t.title()));
    f.render_widget(table, table_area);
    if server.storages.is_empty() && table_area.height > 1 {
        let msg = match &server.error {
            Some(e) => format!("no storages known: {e}"),
            None => "the server reports no storages".into(),
        };
        f.render_widget(
            Paragraph::new(msg).style(t.dim()),
            Rect::new(table_area.x, table_area.y + 1, table_area.width, 1),
        );
    }
    if spark_h == 2 {
        let [c_area, l_area] =
            Layout::vertical([Constraint::Length(1), Constraint::Length(1)]).areas(spark_area);
        let sum = |pick: fn(&StorageInfo) -> &Vec<f64>| -> Vec<f64> {
            let n = server
                .storages
                .iter()
                .map(|s| pick(s).len())
                .max()
                .unwrap_or(0);
            (0..n)
                .map(|k| {
                    server
                        .storages
                        .iter()
                        .map(|s| {
                            let h = pick(s);
                            // Align on the newest sample.
                            let off = n - h.len();
                            if k >= off { h[k - off] } else { 0.0 }
                        })
                        .sum()
                })
                .collect()
        };
        let commits = sum(|s| &s.commits_history);
        let loads = sum(|s| &s.loads_history);
        draw_spark(f, c_area, "commits/s", &commits, t.fg(Color::Cyan), t);
        draw_spark(f, l_area, "loads/s", &loads, t.fg(Color::Magenta), t);
    }
}

/// How many of a server's storages are replicated.
fn replicated(server: &ServerInfo) -> usize {
    server
        .storages
        .iter()
        .filter(|s| s.replication.is_some())
        .count()
}

/// One line per replicated storage: its role and lag, coloured by what `check` would say.
fn draw_replication(f: &mut Frame, area: Rect, server: &ServerInfo, t: &Theme) {
    use crate::metrics::check::Level;
    use crate::metrics::replication;
    let width = area.width as usize;
    let lines: Vec<Line> = server
        .storages
        .iter()
        .filter_map(|s| {
            let r = s.replication.as_ref()?;
            let head = format!("⇄ {} ", s.name);
            let body = truncate(
                &replication::short(r),
                width.saturating_sub(head.chars().count()),
            );
            let style = match replication::level(r) {
                Level::Ok => t.fg(Color::Green),
                Level::Warning => t.fg(Color::Yellow),
                Level::Critical | Level::Unknown => t.fg(Color::Red).add_modifier(Modifier::BOLD),
            };
            Some(Line::from(vec![
                Span::styled(head, t.title()),
                Span::styled(body, style),
            ]))
        })
        .collect();
    f.render_widget(Paragraph::new(lines), area);
}

fn storage_row(s: &StorageInfo, now: f64, wide: bool) -> Row<'static> {
    let txn = match s.last_transaction_time {
        Some(tt) if wide => datetime(tt),
        Some(tt) => clock_short(tt),
        None if s.last_transaction.is_some() => "none".into(),
        None => "–".into(),
    };
    let age = s
        .last_transaction_time
        .map_or("–".into(), |tt| duration((now - tt).max(0.0)));
    let lock = match (&s.lock_holder, s.lock_time) {
        (Some(h), Some(lt)) if wide => format!("{h} {}", duration((now - lt).max(0.0))),
        (Some(h), _) => h.clone(),
        (None, Some(lt)) if wide => format!("held {}", duration((now - lt).max(0.0))),
        (None, Some(lt)) => duration((now - lt).max(0.0)),
        (None, None) if s.connections.is_some() => "free".into(),
        (None, None) => "–".into(),
    };
    let mut cells = vec![
        s.name.clone(),
        s.kind.clone().unwrap_or_else(|| "–".into()),
        s.size_bytes.map_or("–".into(), bytes),
        opt(s.objects),
        txn,
        age,
        rate(s.commits_per_s),
        rate(s.loads_per_s),
        opt(s.connections),
        lock,
        opt(s.waiting),
    ];
    if wide {
        cells.extend([
            opt(s.stores),
            opt(s.aborts),
            opt(s.conflicts),
            opt(s.active_txns),
            record_age(s.last_pack.as_ref(), now),
            record_age(s.last_backup.as_ref(), now),
        ]);
    }
    Row::new(cells)
}

fn record_age(r: Option<&MaintenanceRecord>, now: f64) -> String {
    match r {
        None => "–".into(),
        Some(r) => {
            let age = r.time.map_or("?".into(), |t| {
                format!("{} ago", duration((now - t).max(0.0)))
            });
            match r.status.as_deref() {
                Some(s) if s != "ok" => format!("{age} {s}"),
                _ => age,
            }
        }
    }
}

fn draw_spark(f: &mut Frame, area: Rect, label: &str, data: &[f64], style: Style, t: &Theme) {
    let last = data.last().copied();
    let max = data.iter().copied().fold(0.0_f64, f64::max);
    let text = format!(
        "{label:<9} {:>6} max {:>6} ",
        rate(last),
        rate(data.first().map(|_| max))
    );
    let label_w = (text.chars().count() as u16).min(area.width);
    let [l, r] = Layout::horizontal([Constraint::Length(label_w), Constraint::Fill(1)]).areas(area);
    f.render_widget(Paragraph::new(text).style(t.dim()), l);
    let n = r.width as usize;
    let tail = &data[data.len().saturating_sub(n)..];
    // Sparklines take integers: hundredths keep small rates visible.
    let points: Vec<u64> = tail
        .iter()
        .map(|v| (v * 100.0).round().max(0.0) as u64)
        .collect();
    f.render_widget(Sparkline::default().data(&points).style(style), r);
}

fn draw_log(f: &mut Frame, area: Rect, snap: &Snapshot, ui: &Ui, t: &Theme) {
    let border = if ui.pane == Pane::Log {
        t.focused_border()
    } else {
        Style::new()
    };
    let block = Block::new().borders(Borders::ALL).border_style(border);
    let Some(log) = &snap.log else {
        let msg = match input::selected(snap, ui) {
            Some(i) if i.kind == Kind::Remote => " no log: a server given by address",
            Some(_) => " no log file configured",
            None => "",
        };
        f.render_widget(
            Paragraph::new(msg)
                .style(t.dim())
                .block(block.title(" Log ")),
            area,
        );
        return;
    };
    let position = if ui.log_scroll == 0 {
        "following".to_owned()
    } else {
        format!("{} lines up", ui.log_scroll)
    };
    let mut title = format!(
        " Log · {} · {} · {} · {position} ",
        log.instance,
        log.label,
        log.path.display()
    );
    if !ui.search.is_empty() {
        title.push_str(&format!("· search: {} ", ui.search));
    }
    let inner_h = area.height.saturating_sub(2) as usize;
    let block = block.title(truncate(&title, area.width.saturating_sub(2) as usize));
    if let Some(e) = &log.error {
        f.render_widget(
            Paragraph::new(format!(" cannot read {}: {e}", log.path.display()))
                .style(t.dim())
                .block(block),
            area,
        );
        return;
    }
    let len = log.lines.len();
    let end = len - ui.log_scroll.min(len);
    let start = end.saturating_sub(inner_h);
    let needle = ui.search.to_lowercase();
    let lines: Vec<Line> = log.lines[start..end]
        .iter()
        .map(|l| {
            if !needle.is_empty() && l.to_lowercase().contains(&needle) {
                Line::from(Span::styled(l.clone(), t.matched()))
            } else {
                Line::from(l.clone())
            }
        })
        .collect();
    f.render_widget(Paragraph::new(lines).block(block), area);
}

fn draw_footer(f: &mut Frame, area: Rect, ui: &Ui, t: &Theme) {
    let [status, keys] =
        Layout::vertical([Constraint::Length(1), Constraint::Length(1)]).areas(area);
    let line = match &ui.mode {
        Mode::Filter(text) => Line::from(vec![
            Span::styled(" filter instances: ", t.title()),
            Span::raw(format!("{text}▏")),
        ]),
        Mode::Search(text) => Line::from(vec![
            Span::styled(" search the log: ", t.title()),
            Span::raw(format!("{text}▏")),
        ]),
        Mode::Signal { instance, text } => Line::from(vec![
            Span::styled(
                format!(" signal to send to {instance} (Enter: TERM): "),
                t.title(),
            ),
            Span::raw(format!("{text}▏")),
        ]),
        _ => {
            let mut s = String::new();
            if ui.running > 0 {
                s.push_str(&format!(
                    " ⏳ {} action{} running",
                    ui.running,
                    if ui.running == 1 { "" } else { "s" }
                ));
                if ui.activity.last().is_some() || ui.progress.is_some() {
                    s.push_str(" │");
                }
            }
            if let (true, Some((what, text))) = (ui.running > 0, &ui.progress) {
                s.push_str(&format!(" {what}: {text}"));
            } else if let Some(last) = ui.activity.last() {
                s.push(' ');
                s.push_str(last);
            }
            Line::from(s)
        }
    };
    f.render_widget(Paragraph::new(line), status);
    let mut k = String::from(" q quit  ? help  ↑↓ select  Tab pane  / filter  s sort  l log  ");
    if ui.read_only {
        k.push_str("[read-only]  ");
    } else {
        for a in ACTIONS {
            k.push_str(&format!("{} {}  ", a.key, a.name));
        }
    }
    f.render_widget(
        Paragraph::new(truncate(&k, area.width as usize)).style(t.dim()),
        keys,
    );
}

fn draw_help(f: &mut Frame, area: Rect, ui: &Ui, t: &Theme) {
    let mut lines: Vec<String> = vec![
        "q, Ctrl-C      quit".into(),
        "↑ ↓  j k       select an instance (or scroll the log)".into(),
        "Tab            switch between the instances and the log".into(),
        "/              filter instances (table) or search (log)".into(),
        "n  N           older / newer search match".into(),
        "PgUp PgDn      scroll the log;  f or End: follow it".into(),
        "l              next log: server log, transcript".into(),
        "s  S           sort column / reverse the order".into(),
        "Esc            clear the filter and the search".into(),
    ];
    if ui.read_only {
        lines.push("actions are disabled (--read-only)".into());
    } else {
        for a in ACTIONS {
            lines.push(format!(
                "{:<14} {}{}",
                a.key,
                a.help,
                if a.confirm { " (asks y)" } else { "" }
            ));
        }
    }
    lines.push(String::new());
    lines.push("any key closes this help".into());
    draw_modal(f, area, " Keys ", &lines, t);
}

fn draw_modal(f: &mut Frame, area: Rect, title: &str, lines: &[String], t: &Theme) {
    let w =
        (lines.iter().map(|l| l.chars().count()).max().unwrap_or(10) as u16 + 4).min(area.width);
    let h = (lines.len() as u16 + 2).min(area.height);
    let r = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    f.render_widget(Clear, r);
    let text: Vec<Line> = lines.iter().map(|l| Line::from(format!(" {l}"))).collect();
    f.render_widget(
        Paragraph::new(text).alignment(Alignment::Left).block(
            Block::new()
                .borders(Borders::ALL)
                .border_style(t.focused_border())
                .title(title),
        ),
        r,
    );
}

// ---------------------------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------------------------

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map_or_else(String::new, |f| f.to_uppercase().chain(c).collect())
}

fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    if width > 0 {
        out.push('…');
    }
    out
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "–".into(), |v| v.to_string())
}

pub fn rate(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v >= 99.95 => format!("{v:.0}"),
        Some(v) => format!("{v:.1}"),
    }
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if n < 1024 {
        return format!("{n}B");
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
    if v < 10.0 {
        format!("{v:.1}{unit}")
    } else {
        format!("{v:.0}{unit}")
    }
}

/// `45s`, `12m05s`, `3h02m`, `2d03h`.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// `02:14:05 UTC`.
fn clock(t: f64) -> String {
    format!("{} UTC", clock_short(t))
}

fn clock_short(t: f64) -> String {
    let s = t.max(0.0) as u64;
    format!("{:02}:{:02}:{:02}", s / 3600 % 24, s / 60 % 60, s % 60)
}

fn datetime(t: f64) -> String {
    let ts = TimeStamp::from_unix(t.floor());
    format!(
        "{}-{:02}-{:02} {}",
        ts.year(),
        ts.month(),
        ts.day(),
        clock_short(t)
    )
}

#[cfg(test)]
#[path = "view_tests.rs"]
mod tests;
