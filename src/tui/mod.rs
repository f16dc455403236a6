//! `zodbctl top`: the live dashboard of a cluster, an instance, or any ZEO servers.
//!
//! Laid out as bottom and tokio-console are: collection ([`state`], on its own thread),
//! input ([`input`]: keys to UI changes and [`actions`]) and drawing ([`view`], a pure function
//! of the last [`state::Snapshot`] and the UI state) are apart. The main thread only waits for
//! events — a key, a resize, a new snapshot, an action's progress — and redraws; it never
//! waits for a socket or a file.
//!
//! The terminal is put back on every way out: a normal quit, an error (the guard's `Drop`), a
//! panic on any thread (the panic hook restores it before the message is printed, then ends
//! the process), and SIGTERM/SIGHUP/SIGINT/SIGQUIT (turned into a quit).

pub mod actions;
pub mod input;
pub mod probe;
pub mod state;
pub mod view;

use std::io::{self, IsTerminal, Write};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use crossterm::event::{self, DisableMouseCapture, EnableMouseCapture, Event as TermEvent};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::Terminal;
use ratatui::backend::{CrosstermBackend, TestBackend};

use self::actions::ActionEvent;
use self::input::{Command, Ui};
use self::state::{Collector, Focus, Snapshot, Target};
use crate::cli::{GlobalArgs, TopArgs};
use crate::error::usage;

/// Size of the `--once` frame when standard output is not a terminal and `$COLUMNS`/`$LINES`
/// do not say.
const ONCE_SIZE: (u16, u16) = (120, 36);

/// Everything the main loop waits for.
enum Event {
    Term(TermEvent),
    Snapshot(Box<Snapshot>),
    Action(ActionEvent),
    Quit,
}

pub fn run(g: &GlobalArgs, args: &TopArgs) -> Result<u8> {
    let target = if args.addresses.is_empty() {
        let inst = crate::instance::locate(g).map_err(usage)?;
        Target::from_instance(&inst)?
    } else {
        Target::from_addresses(&args.addresses)?
    };
    let target = Arc::new(target);
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    if args.json || args.once {
        return once(&target, args, color);
    }
    if !io::stdout().is_terminal() {
        return Err(usage(anyhow::anyhow!(
            "top needs a terminal; use --once for one frame as text, or --json"
        )));
    }
    interactive(target, args, color)
}

/// Two snapshots `interval` apart (rates need two), for `--once` and `--json`.
fn once(target: &Arc<Target>, args: &TopArgs, color: bool) -> Result<u8> {
    let mut c = Collector::new(Arc::clone(target));
    let focus = Focus::default();
    c.sample(&focus, args.interval);
    std::thread::sleep(args.interval);
    let snap = c.sample(&focus, args.interval);
    let mut stdout = io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut stdout, &snap)?;
        writeln!(stdout)?;
        return Ok(0);
    }
    let (w, h) = once_size();
    let mut ui = Ui::new(args.read_only, color);
    ui.selected = snap.instances.first().map(|i| i.name.clone());
    for line in render_text(&snap, &ui, w, h) {
        writeln!(stdout, "{line}")?;
    }
    Ok(0)
}

fn once_size() -> (u16, u16) {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u16>().ok());
    if let (Some(w), Some(h)) = (env("COLUMNS"), env("LINES")) {
        return (w.max(40), h.max(12));
    }
    if io::stdout().is_terminal()
        && let Ok((w, h)) = crossterm::terminal::size()
    {
        return (w.max(40), h.max(12));
    }
    ONCE_SIZE
}

/// One frame as plain text lines (trailing blanks trimmed): `--once` and the snapshot tests.
pub fn render_text(snap: &Snapshot, ui: &Ui, width: u16, height: u16) -> Vec<String> {
    let mut term = Terminal::new(TestBackend::new(width, height)).expect("a test backend");
    term.draw(|f| {
        view::draw(f, snap, ui);
    })
    .expect("drawing into memory");
    let buf = term.backend().buffer();
    (0..height)
        .map(|y| {
            let mut line = String::new();
            for x in 0..width {
                line.push_str(buf[(x, y)].symbol());
            }
            line.trim_end().to_owned()
        })
        .collect()
}

/// Puts the terminal back as it was: raw mode off, main screen, cursor shown.
fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = execute!(
        io::stdout(),
        DisableMouseCapture,
        LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

struct TerminalGuard;

impl TerminalGuard {
    fn enter(mouse: bool) -> Result<TerminalGuard> {
        // Installed first, so that a panic anywhere from here on leaves a usable terminal.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
            // A panic on the collector or an action thread would leave the screen frozen:
            // end the whole dashboard, as a panic on the main thread does.
            std::process::exit(101);
        }));
        enable_raw_mode().context("switching the terminal to raw mode")?;
        let guard = TerminalGuard;
        execute!(io::stdout(), EnterAlternateScreen, crossterm::cursor::Hide)?;
        if mouse {
            execute!(io::stdout(), EnableMouseCapture)?;
        }
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

fn interactive(target: Arc<Target>, args: &TopArgs, color: bool) -> Result<u8> {
    let (tx, rx) = mpsc::channel::<Event>();
    quit_on_signals(tx.clone())?;
    let guard = TerminalGuard::enter(args.mouse)?;
    let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;

    // Input: its own thread, blocked in read().
    {
        let tx = tx.clone();
        std::thread::Builder::new()
            .name("top-input".into())
            .spawn(move || {
                while let Ok(ev) = event::read() {
                    if tx.send(Event::Term(ev)).is_err() {
                        break;
                    }
                }
            })?;
    }
    // Collection: its own thread, paced by the interval and woken on focus changes.
    let focus = Arc::new(Mutex::new(Focus::default()));
    let (wake_tx, wake_rx) = mpsc::channel::<()>();
    {
        let tx = tx.clone();
        let focus = Arc::clone(&focus);
        let collector = Collector::new(Arc::clone(&target));
        let interval = args.interval;
        std::thread::Builder::new()
            .name("top-collect".into())
            .spawn(move || {
                state::run(collector, interval, focus, wake_rx, |snap| {
                    tx.send(Event::Snapshot(Box::new(snap))).is_ok()
                })
            })?;
    }

    let mut ui = Ui::new(args.read_only, color);
    let mut snap = Snapshot {
        title: target.title.clone(),
        ..Default::default()
    };
    let mut areas = view::Areas::default();
    let mut last_focus = Focus::default();
    loop {
        terminal.draw(|f| areas = view::draw(f, &snap, &ui))?;
        let Ok(ev) = rx.recv() else { break };
        let cmd = match ev {
            Event::Quit => Some(Command::Quit),
            Event::Snapshot(s) => {
                snap = *s;
                None
            }
            Event::Term(TermEvent::Key(k)) => input::on_key(&mut ui, &snap, k),
            Event::Term(TermEvent::Mouse(m)) => input::on_mouse(&mut ui, &snap, &areas, m),
            Event::Term(_) => None, // resize: redrawn below
            Event::Action(ActionEvent::Line(l)) => {
                ui.note(l);
                None
            }
            Event::Action(ActionEvent::Progress { what, text }) => {
                ui.progress = Some((what, text));
                None
            }
            Event::Action(ActionEvent::Done {
                what,
                result,
                summary,
            }) => {
                ui.running = ui.running.saturating_sub(1);
                if ui.progress.as_ref().is_some_and(|p| p.0 == what) {
                    ui.progress = None;
                }
                ui.note(input::done_text(&what, &result, summary.as_deref()));
                let _ = wake_tx.send(());
                None
            }
        };
        match cmd {
            Some(Command::Quit) => break,
            Some(Command::Run(req)) => {
                if let Some(m) = target.members.iter().find(|m| m.name == req.instance) {
                    ui.running += 1;
                    ui.note(format!("{}…", req.describe()));
                    let tx = tx.clone();
                    actions::spawn(req, m, move |e| {
                        let _ = tx.send(Event::Action(e));
                    });
                }
            }
            None => {}
        }
        let f = ui.focus(&snap);
        if f != last_focus {
            if let Ok(mut shared) = focus.lock() {
                *shared = f.clone();
            }
            // The first snapshot has no focus yet: only a change the user made wakes.
            if snap.seq > 0 && f.instance.is_some() {
                let _ = wake_tx.send(());
            }
            last_focus = f;
        }
    }
    drop(terminal);
    drop(guard);
    Ok(0)
}

/// SIGTERM, SIGHUP, SIGINT and SIGQUIT end the dashboard through the normal way out, so the
/// terminal is restored (their default actions would leave it raw).
fn quit_on_signals(tx: Sender<Event>) -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGHUP, SIGINT, SIGQUIT])
        .context("installing signal handlers")?;
    std::thread::Builder::new()
        .name("top-signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                let _ = tx.send(Event::Quit);
            }
        })?;
    Ok(())
}
