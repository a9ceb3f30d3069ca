//! The table model of `hyper-stats top`: one row per guest (and per vCPU
//! of an expanded guest) built from the query socket's answers, sorted and
//! filtered. Pure: no I/O, no terminal.
//!
//! It receives one [`Answers`] per refresh (the `list`, the two latency
//! histograms and the gauge answers of [`GAUGES`], all over one window)
//! and makes a [`Snapshot`]. A guest that an answer does not mention keeps
//! `None` in that column (shown as `-`): a guest without disks has no disk
//! latency, an agent without eBPF probes no run-queue columns. Nothing here
//! fails: what the agent did not answer is simply not shown.

use std::collections::BTreeMap;

use hyper_stats_query::{GaugeAnswer, GaugeSeries, HistogramAnswer, HistogramValues, ListAnswer};

/// The run-queue wait histogram (eBPF): p50, p99 and max per guest.
pub(crate) const RUNQ: &str = "runq_latency_us";
/// The on-CPU slice histogram (eBPF): p99 per guest.
pub(crate) const ONCPU: &str = "oncpu_us";
/// The percentiles asked of [`RUNQ`], in the order of its `values`.
pub(crate) const RUNQ_PERCENTILES: [f64; 2] = [50.0, 99.0];
/// The percentile asked of [`ONCPU`].
pub(crate) const ONCPU_PERCENTILES: [f64; 1] = [99.0];

/// How a gauge pattern's series become one guest value (or one value per
/// vCPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fold {
    /// The newest value of the one series (a count or a size now).
    Last,
    /// The window average of the one series.
    Avg,
    /// The sum of the window averages of every matching series (all
    /// vCPUs' steal, all interfaces' traffic).
    SumAvg,
    /// The largest window average of the matching series: the worst disk.
    MaxAvg,
}

/// The libvirt gauges asked each refresh: the pattern, the column it
/// fills, how its series fold into one guest value, and the factor to the
/// column's unit (disk latencies come in ms, the column is in µs like the
/// other latencies). Patterns `vcpu.*.…` also fill the expanded vCPU rows.
pub(crate) const GAUGES: [(&str, Column, Fold, f64); 9] = [
    ("vcpu.current", Column::Vcpus, Fold::Last, 1.0),
    ("cpu.time_percent", Column::Cpu, Fold::Avg, 1.0),
    ("vcpu.*.delay_percent", Column::Steal, Fold::SumAvg, 1.0),
    // Only for the vCPU rows: a guest's CPU is all of QEMU's.
    ("vcpu.*.time_percent", Column::Cpu, Fold::SumAvg, 1.0),
    (
        "block.*.rd.latency_mean_ms",
        Column::DiskRd,
        Fold::MaxAvg,
        1e3,
    ),
    (
        "block.*.wr.latency_mean_ms",
        Column::DiskWr,
        Fold::MaxAvg,
        1e3,
    ),
    ("net.*.rx.bytes_per_s", Column::NetRx, Fold::SumAvg, 1.0),
    ("net.*.tx.bytes_per_s", Column::NetTx, Fold::SumAvg, 1.0),
    ("balloon.current_bytes", Column::Balloon, Fold::Last, 1.0),
];

/// The columns of the table, in display order. `Name` is the guest (or
/// vCPU) label; every other column holds one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Column {
    /// The guest's name (a vCPU row: `vcpu N`).
    Name,
    /// vCPUs now (`vcpu.current`).
    Vcpus,
    /// CPU of all QEMU threads, % of one host CPU, window average
    /// (`cpu.time_percent`); a vCPU row: `vcpu.N.time_percent`.
    Cpu,
    /// Steal: time runnable but waiting for a host CPU, % of one host CPU,
    /// summed over vCPUs (`vcpu.*.delay_percent`).
    Steal,
    /// Run-queue wait p50 over the window, µs.
    RqP50,
    /// Run-queue wait p99 over the window, µs: the default sort.
    RqP99,
    /// Longest run-queue wait in the window, µs.
    RqMax,
    /// On-CPU slice p99 over the window, µs.
    OnP99,
    /// Disk read latency, µs: the worst disk's window average of its
    /// per-second means.
    DiskRd,
    /// Disk write latency, µs, as `DiskRd`.
    DiskWr,
    /// Network receive, bytes/s, all interfaces.
    NetRx,
    /// Network transmit, bytes/s, all interfaces.
    NetTx,
    /// The guest's memory as ballooned now (`balloon.current_bytes`).
    Balloon,
}

/// How a column's numbers are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    /// A whole number.
    Count,
    /// A percentage of one host CPU.
    Percent,
    /// A duration in µs, printed with the unit that fits (`850µ`, `12ms`).
    Micros,
    /// Bytes or bytes/s, binary prefixes (`1.5K`, `12M`, `1.0G`).
    Bytes,
}

impl Column {
    /// Every column, in display order.
    pub(crate) const ALL: [Column; 13] = [
        Column::Name,
        Column::Vcpus,
        Column::Cpu,
        Column::Steal,
        Column::RqP50,
        Column::RqP99,
        Column::RqMax,
        Column::OnP99,
        Column::DiskRd,
        Column::DiskWr,
        Column::NetRx,
        Column::NetTx,
        Column::Balloon,
    ];

    /// The header text; at most [`Column::width`] wide.
    pub(crate) fn header(self) -> &'static str {
        match self {
            Column::Name => "GUEST",
            Column::Vcpus => "vCPU",
            Column::Cpu => "CPU%",
            Column::Steal => "STL%",
            Column::RqP50 => "RQ50",
            Column::RqP99 => "RQ99",
            Column::RqMax => "RQMAX",
            Column::OnP99 => "ON99",
            Column::DiskRd => "RDLAT",
            Column::DiskWr => "WRLAT",
            Column::NetRx => "RX/s",
            Column::NetTx => "TX/s",
            Column::Balloon => "MEM",
        }
    }

    /// The name `--sort` takes and the status line shows.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Column::Name => "name",
            Column::Vcpus => "vcpus",
            Column::Cpu => "cpu",
            Column::Steal => "steal",
            Column::RqP50 => "rq-p50",
            Column::RqP99 => "rq-p99",
            Column::RqMax => "rq-max",
            Column::OnP99 => "oncpu-p99",
            Column::DiskRd => "disk-rd",
            Column::DiskWr => "disk-wr",
            Column::NetRx => "net-rx",
            Column::NetTx => "net-tx",
            Column::Balloon => "mem",
        }
    }

    /// The column `--sort NAME` means.
    pub(crate) fn from_key(key: &str) -> Option<Column> {
        Column::ALL.into_iter().find(|c| c.key() == key)
    }

    /// The printed width of a number column (the name column's width is
    /// fitted, see `view`): every [`Unit`] prints in at most 5 characters.
    pub(crate) fn width(self) -> u16 {
        match self {
            Column::Name => 0,
            Column::Vcpus => 4,
            _ => 5,
        }
    }

    /// How the column's numbers print.
    pub(crate) fn unit(self) -> Unit {
        match self {
            Column::Name | Column::Vcpus => Unit::Count,
            Column::Cpu | Column::Steal => Unit::Percent,
            Column::RqP50
            | Column::RqP99
            | Column::RqMax
            | Column::OnP99
            | Column::DiskRd
            | Column::DiskWr => Unit::Micros,
            Column::NetRx | Column::NetTx | Column::Balloon => Unit::Bytes,
        }
    }

    /// The index of the column's value in [`Values`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// One number per column (`None`: not known), indexed by [`Column`]; the
/// `Name` slot is unused.
pub(crate) type Values = [Option<f64>; Column::ALL.len()];

/// One vCPU of a guest, shown under it when the guest is expanded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VcpuRow {
    /// The vCPU id.
    pub(crate) vcpu: u32,
    /// Its CPU, steal and latency columns; the guest-only ones are `None`.
    pub(crate) values: Values,
}

/// One guest's row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Guest {
    /// The domain's UUID: what selection and expansion follow across
    /// refreshes (names can change).
    pub(crate) uuid: String,
    /// The domain's current name.
    pub(crate) name: String,
    /// Its numbers.
    pub(crate) values: Values,
    /// Its vCPUs, sorted by id: every vCPU any answer names.
    pub(crate) vcpus: Vec<VcpuRow>,
}

impl Guest {
    /// The value of `column`.
    pub(crate) fn value(&self, column: Column) -> Option<f64> {
        self.values[column.index()]
    }
}

#[cfg(test)]
impl VcpuRow {
    /// The value of `column`.
    pub(crate) fn value(&self, column: Column) -> Option<f64> {
        self.values[column.index()]
    }
}

/// What one refresh asked the agent, over one window.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Answers {
    /// The window every answer is over, in seconds.
    pub(crate) window_s: u32,
    /// The domains and the histogram metrics the agent has.
    pub(crate) list: ListAnswer,
    /// [`RUNQ`] with [`RUNQ_PERCENTILES`] per vCPU, if the agent has it.
    pub(crate) runq: Option<HistogramAnswer>,
    /// [`ONCPU`] with [`ONCPU_PERCENTILES`] per vCPU, if the agent has it.
    pub(crate) oncpu: Option<HistogramAnswer>,
    /// The answers to [`GAUGES`] the agent had series for, by pattern.
    pub(crate) gauges: BTreeMap<String, GaugeAnswer>,
}

/// The table of one refresh.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Snapshot {
    /// The window of its numbers, in seconds.
    pub(crate) window_s: u32,
    /// Seconds since the agent's newest datapoint, when it answered.
    pub(crate) newest_age_s: Option<f64>,
    /// Whether the agent has the eBPF latency histograms at all (no:
    /// its probes are off, and the RQ/ON columns stay empty).
    pub(crate) has_histograms: bool,
    /// Every guest, in the agent's order (by name).
    pub(crate) guests: Vec<Guest>,
}

/// The vCPU id of a per-vCPU series name (`vcpu.3.delay_percent` → 3).
fn vcpu_of(metric: &str) -> Option<u32> {
    let mut parts = metric.split('.');
    match (parts.next(), parts.next()) {
        (Some("vcpu"), Some(n)) => n.parse().ok(),
        _ => None,
    }
}

/// Folds a domain's matching series into one value.
fn fold(series: &[GaugeSeries], how: Fold) -> Option<f64> {
    let avgs = || series.iter().filter_map(|s| s.avg);
    match how {
        Fold::Last => series.first().map(|s| s.last),
        Fold::Avg => series.first().and_then(|s| s.avg),
        Fold::SumAvg => avgs().reduce(|a, b| a + b),
        Fold::MaxAvg => avgs().reduce(f64::max),
    }
}

impl Snapshot {
    /// Builds the table from one refresh's answers.
    pub(crate) fn build(answers: &Answers) -> Snapshot {
        // Guests by UUID, in the order `list` gives (by name); a guest
        // that appears only in a later answer (it started between two
        // requests) is added at the end.
        let mut guests: Vec<Guest> = Vec::new();
        let mut by_uuid: BTreeMap<String, usize> = BTreeMap::new();
        let mut guest = |uuid: &str, name: &str| -> usize {
            *by_uuid.entry(uuid.to_owned()).or_insert_with(|| {
                guests.push(Guest {
                    uuid: uuid.to_owned(),
                    name: name.to_owned(),
                    values: [None; Column::ALL.len()],
                    vcpus: Vec::new(),
                });
                guests.len() - 1
            })
        };
        for d in &answers.list.domains {
            guest(&d.uuid, &d.domain);
        }
        // (guest index, column, value) and (guest, vCPU, column, value),
        // applied once every guest has its index.
        let mut sets: Vec<(usize, Column, f64)> = Vec::new();
        let mut vcpu_sets: Vec<(usize, u32, Column, f64)> = Vec::new();

        let histograms = [
            (
                &answers.runq,
                [
                    (Some(0), Column::RqP50),
                    (Some(1), Column::RqP99),
                    (None, Column::RqMax),
                ]
                .as_slice(),
            ),
            (&answers.oncpu, [(Some(0), Column::OnP99)].as_slice()),
        ];
        for (answer, columns) in histograms {
            let Some(answer) = answer else { continue };
            let pick = |v: &HistogramValues, at: Option<usize>| match at {
                Some(i) => v.values.get(i).copied().flatten(),
                None => v.max,
            };
            for d in &answer.domains {
                let g = guest(&d.uuid, &d.domain);
                for &(at, column) in columns {
                    if let Some(x) = pick(&d.all, at) {
                        sets.push((g, column, x));
                    }
                    for v in &d.vcpus {
                        if let Some(x) = pick(&v.values, at) {
                            vcpu_sets.push((g, v.vcpu, column, x));
                        }
                    }
                }
            }
        }

        for (pattern, column, how, scale) in GAUGES {
            let Some(answer) = answers.gauges.get(pattern) else {
                continue;
            };
            let per_vcpu = pattern.starts_with("vcpu.*.");
            for d in &answer.domains {
                let g = guest(&d.uuid, &d.domain);
                if per_vcpu {
                    for s in &d.series {
                        if let (Some(n), Some(avg)) = (vcpu_of(&s.metric), s.avg) {
                            vcpu_sets.push((g, n, column, avg * scale));
                        }
                    }
                    // The guest's CPU is QEMU's whole (cpu.time_percent),
                    // not only its vCPUs: the sum fills only the steal.
                    if column == Column::Cpu {
                        continue;
                    }
                }
                if let Some(x) = fold(&d.series, how) {
                    sets.push((g, column, x * scale));
                }
            }
        }

        for (g, column, x) in sets {
            guests[g].values[column.index()] = Some(x);
        }
        for (g, n, column, x) in vcpu_sets {
            let vcpus = &mut guests[g].vcpus;
            let i = match vcpus.binary_search_by_key(&n, |v| v.vcpu) {
                Ok(i) => i,
                Err(i) => {
                    vcpus.insert(
                        i,
                        VcpuRow {
                            vcpu: n,
                            values: [None; Column::ALL.len()],
                        },
                    );
                    i
                }
            };
            vcpus[i].values[column.index()] = Some(x);
        }
        Snapshot {
            window_s: answers.window_s,
            newest_age_s: answers.list.newest_age_s,
            has_histograms: answers.list.histograms.iter().any(|h| h == RUNQ),
            guests,
        }
    }
}

/// How the rows are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sort {
    /// The column sorted on.
    pub(crate) column: Column,
    /// Reversed from the column's natural order (names A→Z, numbers
    /// largest first: the worst guest on top).
    pub(crate) reversed: bool,
}

/// Orders `guests` by `sort`: numbers largest first, names A→Z (each
/// flipped when reversed); a guest without the value comes last either
/// way, and ties go by name, so the order is stable across refreshes.
pub(crate) fn sort(guests: &mut [&Guest], sort: Sort) {
    use std::cmp::Ordering;
    guests.sort_by(|a, b| {
        let by_name = a.name.cmp(&b.name).then_with(|| a.uuid.cmp(&b.uuid));
        let primary = if sort.column == Column::Name {
            by_name
        } else {
            match (a.value(sort.column), b.value(sort.column)) {
                (Some(x), Some(y)) => y.total_cmp(&x),
                (Some(_), None) => return Ordering::Less,
                (None, Some(_)) => return Ordering::Greater,
                (None, None) => Ordering::Equal,
            }
        };
        let primary = if sort.reversed {
            primary.reverse()
        } else {
            primary
        };
        primary.then(by_name)
    });
}

/// Whether `name` passes the filter: a case-insensitive substring; the
/// empty filter passes everything.
pub(crate) fn matches(filter: &str, name: &str) -> bool {
    filter.is_empty() || name.to_lowercase().contains(&filter.to_lowercase())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hyper_stats_query::{DomainSeries, GaugeDomain, HistogramDomain, VcpuValues};

    fn series(metric: &str, avg: Option<f64>, last: f64) -> GaugeSeries {
        GaugeSeries {
            metric: metric.into(),
            samples: u64::from(avg.is_some()),
            avg,
            max: avg,
            min: avg,
            last,
            age_s: 0.5,
        }
    }

    fn gauge(pattern: &str, domains: Vec<(&str, Vec<GaugeSeries>)>) -> (String, GaugeAnswer) {
        (
            pattern.into(),
            GaugeAnswer {
                metric: pattern.into(),
                window_s: 60,
                newest_age_s: Some(0.5),
                domains_total: 3,
                domains: domains
                    .into_iter()
                    .map(|(name, series)| GaugeDomain {
                        uuid: format!("uuid-{name}"),
                        domain: name.into(),
                        series,
                    })
                    .collect(),
                agent: Vec::new(),
            },
        )
    }

    fn hist(values: &[Option<f64>], max: Option<f64>) -> HistogramValues {
        HistogramValues {
            count: 100,
            values: values.to_vec(),
            max,
        }
    }

    /// Three guests as the agent answers them: `web` busy on 2 vCPUs with
    /// two disks and two NICs, `db` waiting longest, `idle` with no
    /// histogram data and no disks.
    pub(crate) fn answers() -> Answers {
        let names = ["db", "idle", "web"];
        let list = ListAnswer {
            newest_age_s: Some(0.3),
            histograms: vec![RUNQ.into(), ONCPU.into()],
            domains: names
                .iter()
                .map(|n| DomainSeries {
                    uuid: format!("uuid-{n}"),
                    domain: (*n).into(),
                    age_s: 0.3,
                    metrics: Vec::new(),
                })
                .collect(),
            agent: Vec::new(),
        };
        let hdomain =
            |name: &str, all: HistogramValues, vcpus: Vec<HistogramValues>| HistogramDomain {
                uuid: format!("uuid-{name}"),
                domain: name.into(),
                age_s: Some(0.3),
                all,
                vcpus: vcpus
                    .into_iter()
                    .enumerate()
                    .map(|(i, values)| VcpuValues {
                        vcpu: i as u32,
                        values,
                    })
                    .collect(),
            };
        let runq = HistogramAnswer {
            metric: RUNQ.into(),
            window_s: 60,
            percentiles: RUNQ_PERCENTILES.to_vec(),
            newest_age_s: Some(0.3),
            domains_total: 3,
            domains: vec![
                hdomain(
                    "db",
                    hist(&[Some(40.0), Some(12_500.0)], Some(80_000.0)),
                    vec![hist(&[Some(40.0), Some(12_500.0)], Some(80_000.0))],
                ),
                hdomain(
                    "web",
                    hist(&[Some(20.0), Some(950.0)], Some(4_000.0)),
                    vec![
                        hist(&[Some(18.0), Some(700.0)], Some(2_000.0)),
                        hist(&[Some(22.0), Some(1_100.0)], Some(4_000.0)),
                    ],
                ),
            ],
        };
        let oncpu = HistogramAnswer {
            metric: ONCPU.into(),
            window_s: 60,
            percentiles: ONCPU_PERCENTILES.to_vec(),
            newest_age_s: Some(0.3),
            domains_total: 3,
            domains: vec![
                hdomain("db", hist(&[Some(3_000.0)], Some(9_000.0)), vec![]),
                hdomain("web", hist(&[Some(4_000.0)], Some(9_000.0)), vec![]),
            ],
        };
        let gauges = [
            gauge(
                "vcpu.current",
                vec![
                    ("db", vec![series("vcpu.current", Some(1.0), 1.0)]),
                    ("idle", vec![series("vcpu.current", Some(1.0), 1.0)]),
                    ("web", vec![series("vcpu.current", Some(2.0), 2.0)]),
                ],
            ),
            gauge(
                "cpu.time_percent",
                vec![
                    ("db", vec![series("cpu.time_percent", Some(35.0), 30.0)]),
                    ("idle", vec![series("cpu.time_percent", Some(0.5), 0.4)]),
                    ("web", vec![series("cpu.time_percent", Some(150.0), 1.0)]),
                ],
            ),
            gauge(
                "vcpu.*.delay_percent",
                vec![
                    ("db", vec![series("vcpu.0.delay_percent", Some(7.5), 1.0)]),
                    (
                        "web",
                        vec![
                            series("vcpu.0.delay_percent", Some(1.0), 1.0),
                            series("vcpu.1.delay_percent", Some(2.5), 1.0),
                        ],
                    ),
                ],
            ),
            gauge(
                "vcpu.*.time_percent",
                vec![(
                    "web",
                    vec![
                        series("vcpu.0.time_percent", Some(60.0), 1.0),
                        series("vcpu.1.time_percent", Some(80.0), 1.0),
                    ],
                )],
            ),
            gauge(
                "block.*.wr.latency_mean_ms",
                vec![(
                    "web",
                    vec![
                        series("block.vda.wr.latency_mean_ms", Some(1.5), 1.0),
                        series("block.vdb.wr.latency_mean_ms", Some(12.0), 1.0),
                    ],
                )],
            ),
            gauge(
                "net.*.rx.bytes_per_s",
                vec![(
                    "web",
                    vec![
                        series("net.tap0.rx.bytes_per_s", Some(1000.0), 1.0),
                        series("net.tap1.rx.bytes_per_s", Some(24.0), 1.0),
                    ],
                )],
            ),
            gauge(
                "balloon.current_bytes",
                vec![(
                    "web",
                    vec![series("balloon.current_bytes", Some(1.0), 2147483648.0)],
                )],
            ),
        ];
        Answers {
            window_s: 60,
            list,
            runq: Some(runq),
            oncpu: Some(oncpu),
            gauges: gauges.into_iter().collect(),
        }
    }

    fn by_name<'a>(s: &'a Snapshot, name: &str) -> &'a Guest {
        s.guests.iter().find(|g| g.name == name).unwrap()
    }

    #[test]
    fn answers_fold_into_one_row_per_guest() {
        let s = Snapshot::build(&answers());
        assert_eq!(s.window_s, 60);
        assert!(s.has_histograms);
        let names: Vec<_> = s.guests.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["db", "idle", "web"]);

        let web = by_name(&s, "web");
        let want = [
            (Column::Vcpus, Some(2.0)),
            // QEMU's whole CPU, not the sum of the vCPUs' 140.
            (Column::Cpu, Some(150.0)),
            (Column::Steal, Some(3.5)),
            (Column::RqP50, Some(20.0)),
            (Column::RqP99, Some(950.0)),
            (Column::RqMax, Some(4_000.0)),
            (Column::OnP99, Some(4_000.0)),
            (Column::DiskRd, None),
            // The worst disk, 12 ms, in µs.
            (Column::DiskWr, Some(12_000.0)),
            (Column::NetRx, Some(1024.0)),
            (Column::NetTx, None),
            (Column::Balloon, Some(2147483648.0)),
        ];
        for (column, value) in want {
            assert_eq!(web.value(column), value, "web {column:?}");
        }
        assert_eq!(web.vcpus.len(), 2);
        let v1 = &web.vcpus[1];
        assert_eq!(v1.vcpu, 1);
        assert_eq!(v1.value(Column::Cpu), Some(80.0));
        assert_eq!(v1.value(Column::Steal), Some(2.5));
        assert_eq!(v1.value(Column::RqP99), Some(1_100.0));
        assert_eq!(v1.value(Column::RqMax), Some(4_000.0));
        assert_eq!(v1.value(Column::Balloon), None);

        let idle = by_name(&s, "idle");
        assert_eq!(idle.value(Column::RqP99), None);
        assert_eq!(idle.value(Column::Cpu), Some(0.5));
        assert!(idle.vcpus.is_empty());
    }

    #[test]
    fn a_guest_missing_from_list_still_gets_a_row() {
        let mut a = answers();
        a.list.domains.retain(|d| d.domain != "web");
        let s = Snapshot::build(&a);
        assert_eq!(by_name(&s, "web").value(Column::RqP99), Some(950.0));
    }

    #[test]
    fn without_probes_the_latency_columns_are_empty() {
        let mut a = answers();
        a.list.histograms.clear();
        a.runq = None;
        a.oncpu = None;
        let s = Snapshot::build(&a);
        assert!(!s.has_histograms);
        assert!(s.guests.iter().all(|g| g.value(Column::RqP99).is_none()));
        assert_eq!(by_name(&s, "db").value(Column::Steal), Some(7.5));
    }

    #[test]
    fn sort_puts_the_worst_first_and_unknowns_last() {
        let s = Snapshot::build(&answers());
        let order = |column, reversed| {
            let mut g: Vec<&Guest> = s.guests.iter().collect();
            sort(&mut g, Sort { column, reversed });
            g.into_iter().map(|g| g.name.as_str()).collect::<Vec<_>>()
        };
        assert_eq!(order(Column::RqP99, false), ["db", "web", "idle"]);
        assert_eq!(order(Column::RqP99, true), ["web", "db", "idle"]);
        assert_eq!(order(Column::Cpu, false), ["web", "db", "idle"]);
        assert_eq!(order(Column::Name, false), ["db", "idle", "web"]);
        assert_eq!(order(Column::Name, true), ["web", "idle", "db"]);
        // Ties (all unknown) go by name.
        assert_eq!(order(Column::NetTx, false), ["db", "idle", "web"]);
        // One value known: it comes first, the rest by name.
        assert_eq!(order(Column::DiskWr, true), ["web", "db", "idle"]);
    }

    #[test]
    fn sort_keys_round_trip() {
        for c in Column::ALL {
            assert_eq!(Column::from_key(c.key()), Some(c));
            assert!(c.header().len() <= 5, "{c:?}");
        }
        assert_eq!(Column::from_key("p99"), None);
    }

    #[test]
    fn filter_is_a_case_insensitive_substring() {
        assert!(matches("", "web-1"));
        assert!(matches("WEB", "web-1"));
        assert!(matches("b-1", "web-1"));
        assert!(!matches("db", "web-1"));
    }
}
