//! The report: one table of the scenarios against the contract's targets.

use std::fmt::Write as _;
use std::thread;

use anyhow::{Result, ensure};

use crate::measure::{Baseline, HttpMeasurement};
use crate::{MAX_ERROR_RATIO, RSS_INTERVAL, RSS_TARGET_MIB, WARM_UP};

/// A contract target for one HTTP scenario.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target {
    /// Of pgbench's transactions per second.
    pub(crate) min_share: f64,
    pub(crate) max_p99_ms: f64,
}

impl Target {
    pub(crate) fn describe(self) -> String {
        format!(
            ">= {:.0} %, p99 <= {} ms",
            self.min_share * 100.0,
            self.max_p99_ms
        )
    }
}

/// One HTTP scenario's line of the report, measured against a pgbench baseline.
#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) scenario: String,
    pub(crate) clients: usize,
    pub(crate) measurement: HttpMeasurement,
    /// The contract's target, if it sets one for this scenario.
    pub(crate) target: Option<Target>,
    /// The baseline's transactions per second (same client count).
    pub(crate) baseline_tps: f64,
}

impl Row {
    fn share(&self) -> f64 {
        self.measurement.load.per_second() / self.baseline_tps
    }

    fn met(&self) -> Option<bool> {
        let target = self.target?;
        let load = &self.measurement.load;
        Some(
            self.share() >= target.min_share
                && load
                    .percentile_ms(990)
                    .is_some_and(|p99| p99 <= target.max_p99_ms),
        )
    }
}

/// A line of the report: a pgbench baseline or an HTTP scenario.
#[derive(Debug)]
pub(crate) enum Line {
    Baseline {
        name: &'static str,
        clients: usize,
        baseline: Baseline,
    },
    Http(Row),
}

/// The whole result, printed as a table.
#[derive(Debug)]
pub(crate) struct Report<'a> {
    pub(crate) seconds: u64,
    pub(crate) pool_size: &'a str,
    pub(crate) lines: Vec<Line>,
    /// Sentences printed under the table (comparisons between rows).
    pub(crate) notes: Vec<String>,
    pub(crate) high_water_kib: Option<u64>,
}

impl Report<'_> {
    fn rows(&self) -> impl Iterator<Item = &Row> {
        self.lines.iter().filter_map(|line| match line {
            Line::Http(row) => Some(row),
            Line::Baseline { .. } => None,
        })
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let cpus = thread::available_parallelism().map_or(0, usize::from);
        let _ = writeln!(
            out,
            "\ncargo xtask bench: {} s per scenario after a {} s warm-up, iam-server pool {} \
             connections, {cpus} CPUs; each row against the pgbench line above it\n",
            self.seconds,
            WARM_UP.as_secs(),
            self.pool_size,
        );
        table_line(
            &mut out,
            [
                "scenario",
                "clients",
                "req/s",
                "vs pgbench",
                "p50 ms",
                "p99 ms",
                "errors",
                "iam CPU",
                "pg CPU",
                "all CPU",
                "target",
                "met",
            ]
            .map(str::to_owned),
        );
        for line in &self.lines {
            match line {
                Line::Baseline {
                    name,
                    clients,
                    baseline,
                } => table_line(
                    &mut out,
                    [
                        (*name).to_owned(),
                        clients.to_string(),
                        format!("{:.1}", baseline.tps),
                        "100.0 %".to_owned(),
                        millis(baseline.latency_average_ms),
                        "-".to_owned(),
                        "-".to_owned(),
                        percent(baseline.cpu.server),
                        percent(baseline.cpu.postgres),
                        percent(baseline.cpu.machine),
                        "-".to_owned(),
                        "-".to_owned(),
                    ],
                ),
                Line::Http(row) => {
                    let load = &row.measurement.load;
                    table_line(
                        &mut out,
                        [
                            row.scenario.clone(),
                            row.clients.to_string(),
                            format!("{:.1}", load.per_second()),
                            format!("{:.1} %", row.share() * 100.0),
                            millis(load.percentile_ms(500)),
                            millis(load.percentile_ms(990)),
                            load.errors.to_string(),
                            percent(row.measurement.cpu.server),
                            percent(row.measurement.cpu.postgres),
                            percent(row.measurement.cpu.machine),
                            row.target.map_or_else(|| "-".to_owned(), Target::describe),
                            row.met().map_or("-", yes_no).to_owned(),
                        ],
                    );
                }
            }
        }
        out.push('\n');
        let _ = writeln!(
            out,
            "(pgbench rows: p50 ms is pgbench's latency average. iam CPU: the server process \
             and pg CPU: all postgres processes, each in % of one CPU; all CPU: the whole \
             machine, load generator included, in % of all {cpus} CPUs)"
        );
        for note in &self.notes {
            let _ = writeln!(out, "{note}");
        }
        let peak = mib(self
            .rows()
            .map(|row| row.measurement.peak_rss_kib)
            .max()
            .unwrap_or(0));
        let high_water = self.high_water_kib.map_or_else(
            || "unknown".to_owned(),
            |kib| format!("{:.1} MiB", mib(kib)),
        );
        let _ = writeln!(
            out,
            "iam-server RSS: peak {peak:.1} MiB under load (VmRSS every {} ms), \
             high-water mark {high_water} (VmHWM, whole run); target <= {RSS_TARGET_MIB} MiB: {}",
            RSS_INTERVAL.as_millis(),
            yes_no(peak <= RSS_TARGET_MIB),
        );
        out
    }

    /// Fails if a scenario had too many failed requests to count as a measurement.
    pub(crate) fn check_validity(&self) -> Result<()> {
        for row in self.rows() {
            let load = &row.measurement.load;
            ensure!(load.requests > 0, "{}: no request completed", row.scenario);
            ensure!(
                load.error_ratio() <= MAX_ERROR_RATIO,
                "{}: {} of {} requests failed (first: {}); the measurement is invalid",
                row.scenario,
                load.errors,
                load.requests,
                load.first_error.as_deref().unwrap_or("unknown")
            );
        }
        Ok(())
    }
}

/// One line of the results table: the scenario left-aligned, the numbers right-aligned,
/// then the target and whether it is met.
fn table_line(out: &mut String, cells: [String; 12]) {
    let [
        scenario,
        clients,
        rate,
        share,
        p50,
        p99,
        errors,
        own_cpu,
        pg_cpu,
        all_cpu,
        target,
        met,
    ] = cells;
    let _ = writeln!(
        out,
        "{scenario:<28} {clients:>7} {rate:>9} {share:>10} {p50:>6} {p99:>6} {errors:>6} \
         {own_cpu:>7} {pg_cpu:>6} {all_cpu:>7}  {target:<21} {met}"
    );
}

fn millis(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.2}"))
}

fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |pct| format!("{pct:.0} %"))
}

fn yes_no(met: bool) -> &'static str {
    if met { "yes" } else { "NO" }
}

#[expect(
    clippy::cast_precision_loss,
    reason = "memory sizes in KiB stay far below 2^53"
)]
fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
