//! The screen of `hyper-stats top`: a title line, the table, a status
//! line and the keys, drawn from an [`App`] into any ratatui backend (the
//! terminal, or a `TestBackend` in the tests).
//!
//! It owns how numbers print (every unit in at most 5 characters, see
//! [`number`]) and which columns fit the width ([`fit`]): the name column
//! keeps at least [`NAME_MIN_WIDTH`] characters and the least telling
//! columns are dropped first ([`DROP_ORDER`]), never the sort column nor
//! the run-queue p99. It draws whatever state it gets: no snapshot yet,
//! an agent that does not answer, a terminal too small for the table.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line as TextLine, Span, Text};
use ratatui::widgets::{Cell, Paragraph, Row, Table, Wrap};

use super::app::{App, Line};
use super::model::{Column, Unit};

/// The narrowest name column: at 80 terminal columns every number column
/// fits next to 9 characters of name, enough for `hs-lab-12` or
/// `vcpu 127` and the start of longer names (which end in `…`).
pub(crate) const NAME_MIN_WIDTH: u16 = 9;

/// The widest name column: longer names are cut, so that a host with one
/// long name does not push the numbers off screen.
pub(crate) const NAME_MAX_WIDTH: u16 = 32;

/// The number columns dropped first when the terminal is too narrow:
/// what the other columns already suggest (memory, the median, on-CPU
/// slices, traffic) before the CPU and the waits the tool exists for.
pub(crate) const DROP_ORDER: [Column; 11] = [
    Column::Balloon,
    Column::RqP50,
    Column::OnP99,
    Column::NetTx,
    Column::NetRx,
    Column::DiskRd,
    Column::DiskWr,
    Column::Vcpus,
    Column::Steal,
    Column::Cpu,
    Column::RqMax,
];

/// The keys, on the last line.
const KEYS: &str = "q quit  ↑↓ select  Enter vCPUs  s/S sort  r reverse  w window  / filter";

/// Which columns are shown and how wide the name column is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fit {
    /// The name column's width.
    pub(crate) name: u16,
    /// The number columns shown, in display order.
    pub(crate) columns: Vec<Column>,
}

/// The columns that fit `width` terminal columns, with the sort column
/// kept whatever the width; `longest_name` is the longest name (or vCPU
/// label) to show.
pub(crate) fn fit(width: u16, sort: Column, longest_name: usize) -> Fit {
    // Each number column takes its width and one space before it.
    let used = |columns: &[Column]| -> u16 { columns.iter().map(|c| c.width() + 1).sum() };
    let mut columns: Vec<Column> = Column::ALL[1..].to_vec();
    for drop in DROP_ORDER {
        if NAME_MIN_WIDTH + used(&columns) <= width {
            break;
        }
        if drop != sort {
            columns.retain(|c| *c != drop);
        }
    }
    let room = width.saturating_sub(used(&columns));
    let wanted = u16::try_from(longest_name)
        .unwrap_or(u16::MAX)
        .clamp(NAME_MIN_WIDTH, NAME_MAX_WIDTH);
    Fit {
        name: wanted.min(room),
        columns,
    }
}

/// A number as the column's unit prints it, in at most 5 characters;
/// `-` when unknown.
pub(crate) fn number(unit: Unit, value: Option<f64>) -> String {
    let Some(v) = value.filter(|v| v.is_finite()) else {
        return "-".into();
    };
    let v = v.max(0.0);
    match unit {
        Unit::Count => format!("{v:.0}"),
        Unit::Percent if v < 99.95 => format!("{v:.1}"),
        Unit::Percent => format!("{v:.0}"),
        Unit::Micros => micros(v),
        Unit::Bytes => bytes(v),
    }
}

/// µs as `9.5µ`, `850µ`, `8.5ms`, `850ms`, `1.2s`, `42s`: three
/// significant digits at most, the unit that keeps it short. Thresholds
/// are on the rounded value, so 999.7 µs is `1.0ms`, not `1000µ`.
fn micros(us: f64) -> String {
    if us < 9.95 {
        format!("{us:.1}µ")
    } else if us < 999.5 {
        format!("{us:.0}µ")
    } else if us < 9_950.0 {
        format!("{:.1}ms", us / 1e3)
    } else if us < 999_500.0 {
        format!("{:.0}ms", us / 1e3)
    } else if us < 9_950_000.0 {
        format!("{:.1}s", us / 1e6)
    } else {
        format!("{:.0}s", us / 1e6)
    }
}

/// Bytes with binary prefixes: `512`, `1.5K`, `12K`, `1023K`, `1.0M`.
fn bytes(b: f64) -> String {
    const PREFIXES: [&str; 6] = ["", "K", "M", "G", "T", "P"];
    let mut v = b;
    let mut i = 0;
    // 1023.5 and more prints as 4 digits plus a prefix: go up one.
    while v >= 1023.5 && i + 1 < PREFIXES.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0}")
    } else if v < 9.95 {
        format!("{v:.1}{}", PREFIXES[i])
    } else {
        format!("{v:.0}{}", PREFIXES[i])
    }
}

/// `text` cut to `width` characters, ending in `…` when cut.
fn cut(text: &str, width: u16) -> String {
    let width = usize::from(width);
    if text.chars().count() <= width {
        return text.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let mut s: String = text.chars().take(width - 1).collect();
    s.push('…');
    s
}

/// The label of a vCPU row.
fn vcpu_label(vcpu: u32) -> String {
    format!("  vcpu {vcpu}")
}

/// The title line: what is shown and how fresh it is.
fn title(app: &App) -> String {
    let shown = app.guests().len();
    let total = app.snapshot.as_ref().map_or(0, |s| s.guests.len());
    let guests = if shown == total {
        format!("{total} guests")
    } else {
        format!("{shown} of {total} guests")
    };
    let order = match (app.sort.column == Column::Name, app.sort.reversed) {
        (true, false) | (false, true) => "asc",
        (true, true) | (false, false) => "desc",
    };
    let mut t = format!(
        "hyper-stats top  {guests}  window {}  sort {} {order}",
        app.window.label(),
        app.sort.column.key()
    );
    match &app.snapshot {
        _ if app.error.is_some() => t.push_str(&format!("  no answer {}s", app.failures)),
        Some(s) => {
            if s.window_s != app.window.seconds() {
                t.push_str("  loading");
            } else if let Some(age) = s.newest_age_s {
                t.push_str(&format!("  data {age:.1}s old"));
            }
        }
        None => {}
    }
    t
}

/// The status lines: the agent's error, the filter being typed, or a
/// note about what is missing; each line a sentence.
fn status(app: &App) -> Vec<(String, Style)> {
    let mut lines = Vec::new();
    let socket = app.socket.display();
    if let Some(e) = &app.error {
        lines.push((
            format!("agent not answering at {socket}: {e}; retrying"),
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ));
    }
    if app.editing_filter {
        lines.push((
            format!("filter: {}▏ (Enter keeps, Esc clears)", app.filter),
            Style::new().fg(Color::Yellow),
        ));
    } else if !app.filter.is_empty() {
        lines.push((
            format!("filter: {} (/ edits, Esc clears)", app.filter),
            Style::new().fg(Color::Yellow),
        ));
    }
    match &app.snapshot {
        None if app.error.is_none() => {
            lines.push((format!("waiting for the agent at {socket}"), Style::new()));
        }
        Some(s) if s.guests.is_empty() => {
            lines.push(("the agent sees no running guests".into(), Style::new()));
        }
        Some(s) if !s.has_histograms => lines.push((
            "no run-queue data: the agent has no eBPF histograms (probes off? see its log)".into(),
            Style::new().fg(Color::Yellow),
        )),
        _ => {}
    }
    lines
}

/// Draws the whole screen.
pub(crate) fn draw(frame: &mut Frame, app: &mut App) {
    let area = frame.area();
    let status = status(app);
    // Status lines wrap: an error names a socket path and a cause.
    let status_height = status
        .iter()
        .map(|(s, _)| {
            let chars = u16::try_from(s.chars().count()).unwrap_or(u16::MAX);
            chars.div_ceil(area.width.max(1)).max(1)
        })
        .sum::<u16>()
        .min(area.height.saturating_sub(3).max(1));
    let [top, table, bottom, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(status_height),
        Constraint::Length(1),
    ])
    .areas(area);

    frame.render_widget(
        Paragraph::new(title(app)).style(Style::new().add_modifier(Modifier::BOLD)),
        top,
    );
    draw_table(frame, app, table);
    let text: Vec<TextLine> = status
        .into_iter()
        .map(|(s, style)| TextLine::from(Span::styled(s, style)))
        .collect();
    frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: false }), bottom);
    frame.render_widget(
        Paragraph::new(KEYS).style(Style::new().fg(Color::DarkGray)),
        keys,
    );
}

/// Draws the header and the rows into `area`, keeping the selected guest
/// in view.
fn draw_table(frame: &mut Frame, app: &mut App, area: Rect) {
    let lines = app.lines();
    let longest = lines
        .iter()
        .map(|l| match l {
            Line::Guest(g) => g.name.chars().count(),
            Line::Vcpu(v) => vcpu_label(v.vcpu).len(),
        })
        .max()
        .unwrap_or(0);
    let fit = fit(area.width, app.sort.column, longest);
    let right = |s: String| Cell::from(Text::from(s).right_aligned());
    let header_style = Style::new().add_modifier(Modifier::REVERSED);
    let sorted = Style::new()
        .add_modifier(Modifier::REVERSED)
        .add_modifier(Modifier::BOLD)
        .add_modifier(Modifier::UNDERLINED);
    let mut header =
        vec![
            Cell::from(Column::Name.header()).style(if app.sort.column == Column::Name {
                sorted
            } else {
                header_style
            }),
        ];
    header.extend(fit.columns.iter().map(|c| {
        right(c.header().to_owned()).style(if *c == app.sort.column {
            sorted
        } else {
            header_style
        })
    }));

    let selected = app.selected_uuid();
    let mut selected_line = None;
    let rows: Vec<Row> = lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let (label, values, style) = match line {
                Line::Guest(g) => {
                    if selected.as_deref() == Some(g.uuid.as_str()) {
                        selected_line = Some(i);
                    }
                    (g.name.clone(), &g.values, Style::new())
                }
                Line::Vcpu(v) => (vcpu_label(v.vcpu), &v.values, Style::new().fg(Color::Cyan)),
            };
            let mut cells = vec![Cell::from(cut(&label, fit.name))];
            cells.extend(
                fit.columns
                    .iter()
                    .map(|c| right(number(c.unit(), values[c.index()]))),
            );
            Row::new(cells).style(style)
        })
        .collect();

    let mut widths = vec![Constraint::Length(fit.name)];
    widths.extend(fit.columns.iter().map(|c| Constraint::Length(c.width())));
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(header_style))
        .column_spacing(1)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    app.table.select(selected_line);
    frame.render_stateful_widget(table, area, &mut app.table);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::app::tests::{app, press};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    #[test]
    fn numbers_print_in_five_characters() {
        let cases: &[(Unit, Option<f64>, &str)] = &[
            (Unit::Count, Some(2.0), "2"),
            (Unit::Count, None, "-"),
            (Unit::Percent, Some(0.04), "0.0"),
            (Unit::Percent, Some(12.345), "12.3"),
            (Unit::Percent, Some(99.96), "100"),
            (Unit::Percent, Some(1600.0), "1600"),
            (Unit::Percent, Some(f64::NAN), "-"),
            (Unit::Micros, Some(0.4), "0.4µ"),
            (Unit::Micros, Some(9.96), "10µ"),
            (Unit::Micros, Some(850.0), "850µ"),
            (Unit::Micros, Some(999.7), "1.0ms"),
            (Unit::Micros, Some(8_540.0), "8.5ms"),
            (Unit::Micros, Some(12_600.0), "13ms"),
            (Unit::Micros, Some(999_600.0), "1.0s"),
            (Unit::Micros, Some(4_294_967.0), "4.3s"),
            (Unit::Micros, Some(42_000_000.0), "42s"),
            (Unit::Bytes, Some(512.0), "512"),
            (Unit::Bytes, Some(1023.0), "1023"),
            (Unit::Bytes, Some(1023.6), "1.0K"),
            (Unit::Bytes, Some(1536.0), "1.5K"),
            (Unit::Bytes, Some(1_048_000.0), "1023K"),
            (Unit::Bytes, Some(2147483648.0), "2.0G"),
            (Unit::Bytes, Some(-3.0), "0"),
        ];
        for (unit, value, want) in cases {
            let got = number(*unit, *value);
            assert_eq!(got, *want, "{unit:?} {value:?}");
            assert!(got.chars().count() <= 5, "{got}");
        }
    }

    #[test]
    fn columns_fit_the_width() {
        let all: Vec<Column> = Column::ALL[1..].to_vec();
        // 80 columns: everything, 9 characters of name.
        let f = fit(80, Column::RqP99, 8);
        assert_eq!((f.name, &f.columns), (9, &all));
        // Wider: the name grows to the longest one, up to its maximum.
        assert_eq!(fit(200, Column::RqP99, 20).name, 20);
        assert_eq!(fit(200, Column::RqP99, 100).name, NAME_MAX_WIDTH);
        // Narrower: the least telling columns go first.
        let f = fit(70, Column::RqP99, 8);
        assert!(!f.columns.contains(&Column::Balloon));
        assert!(!f.columns.contains(&Column::RqP50));
        assert!(f.columns.contains(&Column::OnP99));
        // The sort column stays even when it would be dropped.
        let f = fit(70, Column::Balloon, 8);
        assert!(f.columns.contains(&Column::Balloon));
        // Very narrow: the name and the run-queue p99 remain.
        let f = fit(20, Column::RqP99, 8);
        assert_eq!(f.columns, [Column::RqP99]);
        assert_eq!(f.name, 9);
        assert_eq!(fit(3, Column::RqP99, 8).name, 0);
    }

    fn render(app: &mut App, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| draw(f, app)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        (0..height)
            .map(|y| {
                (0..width)
                    .map(|x| buffer[(x, y)].symbol().to_owned())
                    .collect::<String>()
                    .trim_end()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn screen_at_80x24() {
        let mut app = app();
        press(&mut app, "↓\n");
        let screen = render(&mut app, 80, 24);
        let want = [
            "hyper-stats top  3 guests  window 1m  sort rq-p99 desc  data 0.3s old",
            "GUEST     vCPU  CPU%  STL%  RQ50  RQ99 RQMAX  ON99 RDLAT WRLAT  RX/s  TX/s   MEM",
            "db           1  35.0   7.5   40µ  12ms  80ms 3.0ms     -     -     -     -     -",
            "web          2   150   3.5   20µ  950µ 4.0ms 4.0ms     -  12ms  1.0K     -  2.0G",
            "  vcpu 0     -  60.0   1.0   18µ  700µ 2.0ms     -     -     -     -     -     -",
            "  vcpu 1     -  80.0   2.5   22µ 1.1ms 4.0ms     -     -     -     -     -     -",
            "idle         1   0.5     -     -     -     -     -     -     -     -     -     -",
        ];
        assert_eq!(screen[..want.len()], want, "\n{}", screen.join("\n"));
        assert!(screen[7..23].iter().all(|l| l.is_empty()), "{screen:#?}");
        assert_eq!(screen[23], KEYS);
        for line in &screen {
            assert!(line.chars().count() <= 80, "{line}");
        }
    }

    #[test]
    fn agent_errors_and_filters_show_on_the_status_line() {
        let mut app = app();
        app.update(Err(
            "agent not running: connection refused on /run/hyper-stats/hyper-stats.sock".into(),
        ));
        press(&mut app, "/we");
        let screen = render(&mut app, 80, 24);
        assert!(screen[0].ends_with("no answer 1s"), "{}", screen[0]);
        let status = screen[20..23].join(" ");
        assert!(
            status.starts_with(
                "agent not answering at /run/hyper-stats/hyper-stats.sock: agent not running"
            ),
            "{screen:#?}"
        );
        assert!(status.contains("; retrying"), "{status}");
        assert_eq!(screen[22], "filter: we▏ (Enter keeps, Esc clears)");
        // The last table stays, filtered.
        assert!(screen[2].starts_with("web "), "{screen:#?}");
        assert!(screen[3].is_empty(), "{screen:#?}");
    }

    #[test]
    fn narrow_and_tiny_terminals_do_not_break() {
        let mut app = app();
        let screen = render(&mut app, 50, 10);
        assert!(screen[1].starts_with("GUEST"), "{screen:#?}");
        assert!(screen[1].contains("RQ99"), "{screen:#?}");
        assert!(!screen[1].contains("MEM"), "{screen:#?}");
        for (w, h) in [(1, 1), (5, 2), (80, 3), (0, 0)] {
            render(&mut app, w, h);
        }
        let mut empty = App::new("s".into(), app.window, app.sort);
        let screen = render(&mut empty, 80, 24);
        assert_eq!(screen[22], "waiting for the agent at s");
    }
}
