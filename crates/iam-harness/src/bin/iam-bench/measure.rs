//! The scenarios: `pgbench -S` as the baseline, and one HTTP request under closed-loop load.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Instant;

use anyhow::{Context as _, Result, anyhow, ensure};

use crate::{Load, PGBENCH_THREADS, RSS_INTERVAL, WARM_UP};
use iam_harness::loadgen::{self, LoadReport, Request};
use iam_harness::process::run_quiet;
use iam_harness::procstat::{CpuSnapshot, CpuUse, status_kib};
use iam_harness::server::RunningServer;

/// What `pgbench -S` measured.
#[derive(Debug)]
pub(crate) struct Baseline {
    pub(crate) tps: f64,
    pub(crate) latency_average_ms: Option<f64>,
    pub(crate) cpu: CpuUse,
}

/// pgbench's built-in scripts used as baselines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Script {
    /// `-S`: one primary-key `SELECT` per transaction (the baseline of reads).
    SelectOnly,
    /// `-N`: three `UPDATE`/`INSERT`s and a `SELECT` per transaction, without the contended
    /// branch and teller updates (the baseline of writes).
    SimpleUpdate,
}

impl Script {
    pub(crate) fn flag(self) -> &'static str {
        match self {
            Script::SelectOnly => "-S",
            Script::SimpleUpdate => "-N",
        }
    }
}

/// A warm-up, then pgbench's `script` with the benchmark's client count and duration.
pub(crate) fn measure_pgbench(
    pgbench: &Path,
    url: &str,
    script: Script,
    load: Load,
    clk_tck: f64,
) -> Result<Baseline> {
    let select = |seconds: u64| {
        let mut cmd = Command::new(pgbench);
        cmd.args([script.flag(), "-n", "-M", "prepared"])
            .arg("-c")
            .arg(load.clients.to_string())
            .arg("-j")
            .arg(load.clients.min(PGBENCH_THREADS).to_string())
            .arg("-T")
            .arg(seconds.to_string())
            .arg(url);
        run_quiet(&mut cmd)
    };
    select(WARM_UP.as_secs())?;
    let before = CpuSnapshot::take(None);
    let started = Instant::now();
    let output = select(load.seconds)?;
    let cpu = CpuSnapshot::take(None).use_since(before, started.elapsed(), clk_tck);
    let (tps, latency_average_ms) = parse_pgbench(&output)?;
    Ok(Baseline {
        tps,
        latency_average_ms,
        cpu,
    })
}

/// Reads `tps = …` (without initial connection time) and `latency average = … ms`.
fn parse_pgbench(output: &str) -> Result<(f64, Option<f64>)> {
    let value_after = |prefix: &str| {
        output
            .lines()
            .filter(|line| !line.contains("including connections"))
            .find_map(|line| {
                let rest = line.trim().strip_prefix(prefix)?;
                rest.split_whitespace().next()?.parse::<f64>().ok()
            })
    };
    let tps = value_after("tps = ")
        .with_context(|| format!("no `tps = …` in the pgbench output:\n{output}"))?;
    ensure!(tps > 0.0, "pgbench reported {tps} tps:\n{output}");
    Ok((tps, value_after("latency average = ")))
}

/// What one HTTP scenario measured.
#[derive(Debug)]
pub(crate) struct HttpMeasurement {
    pub(crate) load: LoadReport,
    pub(crate) peak_rss_kib: u64,
    pub(crate) cpu: CpuUse,
}

/// A warm-up, then the measured load, sampling the server's RSS and CPU meanwhile. The
/// clients take turns through `requests` (see [`loadgen::run_each`]).
pub(crate) fn measure_http(
    server: &RunningServer,
    requests: &[Request],
    load: Load,
    clk_tck: f64,
) -> Result<HttpMeasurement> {
    let requests: Vec<Vec<u8>> = requests.iter().map(|r| r.render(server.addr)).collect();
    loadgen::run_each(server.addr, &requests, load.clients, WARM_UP)?;

    let stop = AtomicBool::new(false);
    let before = CpuSnapshot::take(Some(server.pid));
    let (load, peak_rss_kib) = thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(status_kib(server.pid, "VmRSS:").unwrap_or(0));
                thread::sleep(RSS_INTERVAL);
            }
            peak
        });
        let load = loadgen::run_each(server.addr, &requests, load.clients, load.duration());
        stop.store(true, Ordering::Relaxed);
        let peak = sampler
            .join()
            .map_err(|_| anyhow!("the RSS sampler panicked"));
        (load, peak)
    });
    let after = CpuSnapshot::take(Some(server.pid));
    let load = load?;
    Ok(HttpMeasurement {
        cpu: after.use_since(before, load.elapsed, clk_tck),
        peak_rss_kib: peak_rss_kib?,
        load,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pgbench_output() {
        let output = "\
transaction type: <builtin: select only>
number of clients: 8
latency average = 0.321 ms
initial connection time = 12.345 ms
tps = 24901.123456 (without initial connection time)
";
        let (tps, latency) = parse_pgbench(output).unwrap();
        assert!((tps - 24_901.123_456).abs() < 1e-6);
        assert_eq!(latency, Some(0.321));
        assert!(parse_pgbench("no numbers here").is_err());
    }
}
