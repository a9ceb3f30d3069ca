//! The state of `hyper-stats top` and what each key does to it. Pure: the
//! terminal loop (`top::run`) feeds it keys and refresh results, the view
//! draws it.
//!
//! It owns the window, the sort, the name filter, which guests are
//! expanded and which is selected (by UUID, so both survive re-sorting and
//! renames), the newest table and the agent's last error. A refresh that
//! fails keeps the last table on screen and records the error, which the
//! view shows until a refresh succeeds again.

use std::collections::BTreeSet;
use std::path::PathBuf;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::widgets::TableState;

use super::model::{self, Column, Guest, Snapshot, Sort, VcpuRow};

/// The windows `top` offers: what the agent keeps (the query socket's
/// 1, 5 and 15 minutes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Window {
    /// The last minute.
    #[value(name = "1m")]
    M1,
    /// The last 5 minutes.
    #[value(name = "5m")]
    M5,
    /// The last 15 minutes.
    #[value(name = "15m")]
    M15,
}

impl Window {
    /// The window in seconds, as the query socket takes it.
    pub(crate) fn seconds(self) -> u32 {
        match self {
            Window::M1 => 60,
            Window::M5 => 300,
            Window::M15 => 900,
        }
    }

    /// How the status line names it.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Window::M1 => "1m",
            Window::M5 => "5m",
            Window::M15 => "15m",
        }
    }

    /// The next longer window, wrapping around.
    fn next(self) -> Window {
        match self {
            Window::M1 => Window::M5,
            Window::M5 => Window::M15,
            Window::M15 => Window::M1,
        }
    }

    /// The next shorter window, wrapping around.
    fn previous(self) -> Window {
        self.next().next()
    }
}

/// What the loop must do after a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Only redraw.
    Redraw,
    /// The window changed: ask the agent again now.
    Refetch,
    /// Leave `top`.
    Quit,
}

/// One line of the table.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Line<'a> {
    /// A guest.
    Guest(&'a Guest),
    /// A vCPU of an expanded guest, right under it.
    Vcpu(&'a VcpuRow),
}

/// Everything on screen.
#[derive(Debug)]
pub(crate) struct App {
    /// The agent's socket, named when it does not answer.
    pub(crate) socket: PathBuf,
    /// The window asked for.
    pub(crate) window: Window,
    /// The row order.
    pub(crate) sort: Sort,
    /// The name filter (case-insensitive substring; empty: all).
    pub(crate) filter: String,
    /// Whether keys go into the filter (after `/`, until Enter or Esc).
    pub(crate) editing_filter: bool,
    /// UUIDs of the guests shown with their vCPUs.
    pub(crate) expanded: BTreeSet<String>,
    /// The selected guest's UUID; the first shown guest when `None` or
    /// no longer shown.
    pub(crate) selected: Option<String>,
    /// The newest table the agent answered.
    pub(crate) snapshot: Option<Snapshot>,
    /// Why the last refresh failed; `None` once one succeeds.
    pub(crate) error: Option<String>,
    /// Refreshes failed in a row (about seconds without an answer).
    pub(crate) failures: u32,
    /// The table's scroll position, kept between frames so the view does
    /// not jump.
    pub(crate) table: TableState,
}

impl App {
    /// A `top` with nothing received yet.
    pub(crate) fn new(socket: PathBuf, window: Window, sort: Sort) -> App {
        App {
            socket,
            window,
            sort,
            filter: String::new(),
            editing_filter: false,
            expanded: BTreeSet::new(),
            selected: None,
            snapshot: None,
            error: None,
            failures: 0,
            table: TableState::new(),
        }
    }

    /// Takes one refresh's outcome. A snapshot of another window than
    /// the current one (asked before a window change) is dropped.
    pub(crate) fn update(&mut self, result: Result<Snapshot, String>) {
        match result {
            Ok(s) if s.window_s != self.window.seconds() => {}
            Ok(s) => {
                self.snapshot = Some(s);
                self.error = None;
                self.failures = 0;
            }
            Err(e) => {
                self.error = Some(e);
                self.failures = self.failures.saturating_add(1);
            }
        }
    }

    /// The guests shown, filtered and sorted.
    pub(crate) fn guests(&self) -> Vec<&Guest> {
        let Some(s) = &self.snapshot else {
            return Vec::new();
        };
        let mut shown: Vec<&Guest> = s
            .guests
            .iter()
            .filter(|g| model::matches(&self.filter, &g.name))
            .collect();
        model::sort(&mut shown, self.sort);
        shown
    }

    /// The table's lines: the shown guests, each expanded one followed
    /// by its vCPUs.
    pub(crate) fn lines(&self) -> Vec<Line<'_>> {
        let mut lines = Vec::new();
        for g in self.guests() {
            lines.push(Line::Guest(g));
            if self.expanded.contains(&g.uuid) {
                lines.extend(g.vcpus.iter().map(Line::Vcpu));
            }
        }
        lines
    }

    /// The UUID of the selected guest, if any guest is shown.
    pub(crate) fn selected_uuid(&self) -> Option<String> {
        let guests = self.guests();
        let chosen = self
            .selected
            .as_ref()
            .and_then(|u| guests.iter().find(|g| &g.uuid == u))
            .or(guests.first());
        chosen.map(|g| g.uuid.clone())
    }

    /// Moves the selection by `by` guests, stopping at either end.
    fn select_by(&mut self, by: isize) {
        let guests = self.guests();
        if guests.is_empty() {
            return;
        }
        let current = self
            .selected_uuid()
            .and_then(|u| guests.iter().position(|g| g.uuid == u))
            .unwrap_or(0);
        let to = current
            .saturating_add_signed(by)
            .min(guests.len().saturating_sub(1));
        self.selected = Some(guests[to].uuid.clone());
    }

    /// The next (or previous) sort column, in display order.
    fn cycle_sort(&mut self, forward: bool) {
        let all = Column::ALL;
        let i = all.iter().position(|c| *c == self.sort.column).unwrap_or(0);
        let n = all.len();
        let j = if forward {
            (i + 1) % n
        } else {
            (i + n - 1) % n
        };
        self.sort.column = all[j];
    }

    /// What `key` does.
    pub(crate) fn key(&mut self, key: KeyEvent) -> Action {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        if self.editing_filter {
            match key.code {
                KeyCode::Enter => self.editing_filter = false,
                KeyCode::Esc => {
                    self.filter.clear();
                    self.editing_filter = false;
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) if !c.is_control() => self.filter.push(c),
                _ => {}
            }
            return Action::Redraw;
        }
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Esc => self.filter.clear(),
            KeyCode::Char('/') => self.editing_filter = true,
            KeyCode::Up | KeyCode::Char('k') => self.select_by(-1),
            KeyCode::Down | KeyCode::Char('j') => self.select_by(1),
            KeyCode::PageUp => self.select_by(-10),
            KeyCode::PageDown => self.select_by(10),
            KeyCode::Home | KeyCode::Char('g') => self.select_by(isize::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => self.select_by(isize::MAX / 2),
            KeyCode::Enter | KeyCode::Char(' ') => {
                if let Some(u) = self.selected_uuid()
                    && !self.expanded.remove(&u)
                {
                    self.expanded.insert(u);
                }
            }
            KeyCode::Char('s') | KeyCode::Char('>') => self.cycle_sort(true),
            KeyCode::Char('S') | KeyCode::Char('<') => self.cycle_sort(false),
            KeyCode::Char('r') => self.sort.reversed = !self.sort.reversed,
            KeyCode::Char('w') => {
                self.window = self.window.next();
                return Action::Refetch;
            }
            KeyCode::Char('W') => {
                self.window = self.window.previous();
                return Action::Refetch;
            }
            _ => {}
        }
        Action::Redraw
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::top::model::tests::answers;

    pub(crate) fn app() -> App {
        let mut app = App::new(
            PathBuf::from("/run/hyper-stats/hyper-stats.sock"),
            Window::M1,
            Sort {
                column: Column::RqP99,
                reversed: false,
            },
        );
        app.update(Ok(Snapshot::build(&answers())));
        app
    }

    pub(crate) fn press(app: &mut App, keys: &str) -> Action {
        let mut last = Action::Redraw;
        for c in keys.chars() {
            let code = match c {
                '\n' => KeyCode::Enter,
                '\x1b' => KeyCode::Esc,
                '\x08' => KeyCode::Backspace,
                '↓' => KeyCode::Down,
                '↑' => KeyCode::Up,
                c => KeyCode::Char(c),
            };
            last = app.key(KeyEvent::new(code, KeyModifiers::NONE));
        }
        last
    }

    fn names(app: &App) -> Vec<String> {
        app.lines()
            .iter()
            .map(|l| match l {
                Line::Guest(g) => g.name.clone(),
                Line::Vcpu(v) => format!("  vcpu {}", v.vcpu),
            })
            .collect()
    }

    #[test]
    fn rows_follow_sort_keys() {
        let mut app = app();
        assert_eq!(names(&app), ["db", "web", "idle"]);
        press(&mut app, "r");
        assert_eq!(names(&app), ["web", "db", "idle"]);
        press(&mut app, "r<<<<<");
        assert_eq!(app.sort.column, Column::Name);
        assert_eq!(names(&app), ["db", "idle", "web"]);
        press(&mut app, "<");
        assert_eq!(app.sort.column, Column::Balloon);
        press(&mut app, "s");
        assert_eq!(app.sort.column, Column::Name);
    }

    #[test]
    fn enter_expands_the_selected_guest() {
        let mut app = app();
        press(&mut app, "↓\n");
        assert_eq!(names(&app), ["db", "web", "  vcpu 0", "  vcpu 1", "idle"]);
        // The selection follows the guest, not the position, when the
        // order changes.
        press(&mut app, "r");
        assert_eq!(app.selected_uuid().as_deref(), Some("uuid-web"));
        press(&mut app, "\n");
        assert_eq!(names(&app), ["web", "db", "idle"]);
        press(&mut app, "↓↓↓↓↓↓");
        assert_eq!(app.selected_uuid().as_deref(), Some("uuid-idle"));
        press(&mut app, "↑g");
        assert_eq!(app.selected_uuid().as_deref(), Some("uuid-web"));
    }

    #[test]
    fn slash_filters_by_name_and_esc_clears() {
        let mut app = app();
        press(&mut app, "/WE");
        assert!(app.editing_filter);
        assert_eq!(names(&app), ["web"]);
        // Keys are text while editing: q does not quit.
        assert_eq!(press(&mut app, "q"), Action::Redraw);
        assert_eq!(names(&app), [] as [&str; 0]);
        press(&mut app, "\x08\n");
        assert!(!app.editing_filter);
        assert_eq!(names(&app), ["web"]);
        press(&mut app, "\x1b");
        assert_eq!(names(&app), ["db", "web", "idle"]);
    }

    #[test]
    fn window_keys_refetch_and_drop_answers_for_the_old_window() {
        let mut app = app();
        assert_eq!(press(&mut app, "w"), Action::Refetch);
        assert_eq!(app.window, Window::M5);
        // A refresh asked before the change still arrives: not shown as 5m.
        let mut old = Snapshot::build(&answers());
        old.guests.clear();
        app.update(Ok(old));
        assert_eq!(app.snapshot.as_ref().unwrap().guests.len(), 3);
        press(&mut app, "W");
        press(&mut app, "W");
        assert_eq!(app.window, Window::M15);
    }

    #[test]
    fn quit_keys_and_errors() {
        let mut app = app();
        assert_eq!(press(&mut app, "q"), Action::Quit);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        press(&mut app, "/");
        assert_eq!(app.key(ctrl_c), Action::Quit);
        app.update(Err("agent not running".into()));
        app.update(Err("agent not running".into()));
        assert_eq!(app.failures, 2);
        // The last table stays; the error goes with the next answer.
        assert!(app.snapshot.is_some());
        app.update(Ok(Snapshot::build(&answers())));
        assert_eq!((app.error.as_deref(), app.failures), (None, 0));
    }
}
