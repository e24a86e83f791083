//! Scenario 8: soak. Mixed traffic (read, list, create, mint, delete) for `--soak` minutes,
//! with the server's resident memory, open files, database connections and error count
//! sampled every 10 s. Promise: no errors, and no growth after the warm-up.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;
use iam_harness::procstat::{open_files, status_kib};

use crate::fixture::{APPLICATION_NAME, Fixture};
use crate::outcome::Outcome;
use crate::traffic::{Mix, Traffic};
use crate::{Pace, progress};

const CLIENTS: usize = 6;
const INTERVAL: Duration = Duration::from_secs(10);
/// The warm-up: samples before it are not held against growth.
const WARM_UP: Duration = Duration::from_secs(20);
/// Growth allowed after the warm-up: memory (allocator noise), files, connections.
const RSS_GROWTH_KIB: u64 = 8 * 1024;
const FD_GROWTH: usize = 4;
const POOL: u64 = 8;

/// One sample of the server.
#[derive(Debug, Clone, Copy)]
struct Point {
    at: Duration,
    rss_kib: u64,
    files: usize,
    connections: u64,
    requests: u64,
    errors: u64,
}

pub(crate) fn run(fixture: &Fixture, pace: Pace) -> Result<Outcome> {
    let server = fixture.server(&[("IAM_DB_MAX_CONNECTIONS", "8")])?;
    let running = Fixture::start(&server)?;
    let client = fixture.create_client(server.addr, "sa-rel-soak")?;
    let mix = Mix {
        addrs: vec![server.addr],
        admin: fixture.admin.clone(),
        read: client.account.clone(),
        mint_body: client.mint_body.clone(),
        prefix: fixture.id("sa-rel-soak-w"),
        delete_created: true,
    };
    let epoch = Instant::now();
    let traffic = Traffic::start(&mix, CLIENTS, epoch);
    let mut points = Vec::new();
    while epoch.elapsed() < pace.soak {
        thread::sleep(INTERVAL.min(pace.soak.saturating_sub(epoch.elapsed())));
        let point = Point {
            at: epoch.elapsed(),
            rss_kib: status_kib(running.pid, "VmRSS:").unwrap_or(0),
            files: open_files(running.pid).unwrap_or(0),
            connections: fixture.count(&format!(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{APPLICATION_NAME}'"
            ))?,
            requests: traffic.sent.load(Ordering::Relaxed),
            errors: traffic.failed.load(Ordering::Relaxed),
        };
        progress(&format!(
            "soak {:>4} s: {} requests, {} errors, RSS {:.1} MiB, {} files, {} connections",
            point.at.as_secs(),
            point.requests,
            point.errors,
            kib_to_mib(point.rss_kib),
            point.files,
            point.connections
        ));
        points.push(point);
    }
    let log = traffic.stop();
    drop(running);

    let mut outcome = Outcome::new(
        "soak",
        format!(
            "{} min of mixed traffic (read, list, create, mint, delete), {CLIENTS} clients",
            pace.soak.as_secs() / 60
        ),
    );
    outcome.count(&log.samples);
    let errors = log.samples.iter().filter(|s| !s.ok()).count();
    outcome.check(
        "no request fails",
        errors == 0,
        format!("{errors} of {}", log.samples.len()),
    );
    let warm: Vec<&Point> = points.iter().filter(|p| p.at >= WARM_UP).collect();
    if let (Some(first), Some(last)) = (warm.first(), warm.last()) {
        let most_rss = warm.iter().map(|p| p.rss_kib).max().unwrap_or(0);
        let most_files = warm.iter().map(|p| p.files).max().unwrap_or(0);
        outcome.check(
            format!(
                "no memory growth after the warm-up (within {} MiB)",
                RSS_GROWTH_KIB / 1024
            ),
            most_rss <= first.rss_kib + RSS_GROWTH_KIB,
            format!(
                "RSS {:.1} MiB at {} s, at most {:.1}, {:.1} at the end",
                kib_to_mib(first.rss_kib),
                first.at.as_secs(),
                kib_to_mib(most_rss),
                kib_to_mib(last.rss_kib)
            ),
        );
        outcome.check(
            format!("no file growth after the warm-up (within {FD_GROWTH})"),
            most_files <= first.files + FD_GROWTH,
            format!(
                "{} files at {} s, at most {most_files}",
                first.files,
                first.at.as_secs()
            ),
        );
    } else {
        outcome.check("samples after the warm-up", false, "the soak was too short");
    }
    let most_connections = points.iter().map(|p| p.connections).max().unwrap_or(0);
    outcome.check(
        format!("database connections stay within the pool ({POOL})"),
        most_connections <= POOL,
        format!("at most {most_connections}"),
    );
    outcome.notes = samples_table(&points);
    Ok(outcome)
}

#[expect(
    clippy::cast_precision_loss,
    reason = "memory sizes stay far below 2^53"
)]
fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The samples, for the report.
fn samples_table(points: &[Point]) -> String {
    let mut out = String::from(
        "| s | requests | errors | RSS (MiB) | open files | DB connections |\n\
         |---:|---:|---:|---:|---:|---:|\n",
    );
    for point in points {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} | {} | {} |",
            point.at.as_secs(),
            point.requests,
            point.errors,
            kib_to_mib(point.rss_kib),
            point.files,
            point.connections
        );
    }
    out
}
