//! Scenario 1: PostgreSQL stopped (`pg_ctl stop -m fast`) and started again under load.
//!
//! Promise (SPEC §7): every answer is 2xx or a proper 503, none takes longer than 3 s,
//! `/readyz` is 503 while the database is away, every request started 2 s after it is back
//! succeeds — without restarting the server — and no acknowledged write is lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;
use iam_harness::loadgen::{Connection, Request};

use crate::fixture::Fixture;
use crate::outcome::{Outcome, ms};
use crate::traffic::{Mix, Sample, Traffic, exchange};
use crate::{Pace, progress};

/// Concurrent clients (SPEC: 6 or more).
const CLIENTS: usize = 6;
/// The longest any answer may take.
const MAX_LATENCY: Duration = Duration::from_secs(3);
/// After this long with the database back, every request must succeed.
const RECOVERY: Duration = Duration::from_secs(2);
/// How long the database stays away.
const AWAY: Duration = Duration::from_secs(3);

pub(crate) fn run(fixture: &Fixture, pace: Pace) -> Result<Outcome> {
    let server = fixture.server(&[("IAM_DB_MAX_CONNECTIONS", "8")])?;
    let mut running = Fixture::start(&server)?;
    let client = fixture.create_client(server.addr, "sa-rel-restart")?;
    let mix = Mix {
        addrs: vec![server.addr],
        admin: fixture.admin.clone(),
        read: client.account.clone(),
        mint_body: client.mint_body.clone(),
        prefix: fixture.id("sa-rel-restart-w"),
        delete_created: false,
    };
    let epoch = Instant::now();
    let traffic = Traffic::start(&mix, CLIENTS, epoch);
    let readyz = ReadyzPoller::start(server.addr, epoch);

    thread::sleep(pace.pick(Duration::from_secs(2), Duration::from_secs(5)));
    progress("stopping PostgreSQL (pg_ctl stop -m fast) under load");
    fixture.pg_ctl("stop")?;
    let down = epoch.elapsed();
    thread::sleep(AWAY);
    let starting = epoch.elapsed();
    progress("starting PostgreSQL again");
    fixture.pg_ctl("start")?;
    let up = epoch.elapsed();
    thread::sleep(pace.pick(Duration::from_secs(6), Duration::from_secs(15)));
    let log = traffic.stop();
    let ready_samples = readyz.stop();
    let server_alive = running.wait_ready().is_ok();
    drop(running);

    let mut outcome = Outcome::new(
        "restart",
        format!(
            "`pg_ctl stop -m fast`, {} s away, `pg_ctl start`, under {CLIENTS} clients",
            AWAY.as_secs()
        ),
    );
    outcome.count(&log.samples);
    let improper: Vec<&Sample> = log
        .samples
        .iter()
        .filter(|s| !s.ok() && !s.proper_503)
        .collect();
    outcome.check(
        "every answer is 2xx or 503 with Retry-After and the envelope",
        improper.is_empty(),
        describe_first(&improper),
    );
    outcome.check(
        format!("no answer takes longer than {}", ms(MAX_LATENCY)),
        outcome.worst <= MAX_LATENCY,
        format!("worst {}", ms(outcome.worst)),
    );
    let away: Vec<&(Duration, u16)> = ready_samples
        .iter()
        .filter(|(at, _)| *at >= down && *at < starting)
        .collect();
    outcome.check(
        "/readyz is 503 while the database is away",
        !away.is_empty() && away.iter().all(|(_, status)| *status == 503),
        format!(
            "{} probes while away, {} of them 503",
            away.len(),
            away.iter().filter(|(_, s)| *s == 503).count()
        ),
    );
    let late: Vec<&Sample> = log
        .samples
        .iter()
        .filter(|s| s.at >= up + RECOVERY)
        .collect();
    let late_failures: Vec<&Sample> = late.iter().copied().filter(|s| !s.ok()).collect();
    outcome.check(
        format!(
            "every request started {} after the database is back succeeds",
            ms(RECOVERY)
        ),
        !late.is_empty() && late_failures.is_empty(),
        format!(
            "{} requests, {} failed{}",
            late.len(),
            late_failures.len(),
            if late_failures.is_empty() {
                String::new()
            } else {
                format!("; {}", describe_first(&late_failures))
            }
        ),
    );
    outcome.recovery = Some(
        log.samples
            .iter()
            .filter(|s| s.at >= up && !s.ok())
            .map(Sample::end)
            .max()
            .map_or(Duration::ZERO, |end| end.saturating_sub(up)),
    );
    outcome.check("the server kept running (not restarted)", server_alive, "");
    outcome.lost = lost_accounts(fixture, &log.created)?;
    outcome.check(
        "every acknowledged create is stored",
        outcome.lost == 0,
        format!(
            "{} acknowledged, {} missing",
            log.created.len(),
            outcome.lost
        ),
    );
    Ok(outcome)
}

/// How many of `ids` are not in the database.
pub(crate) fn lost_accounts(fixture: &Fixture, ids: &[String]) -> Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let list = ids
        .iter()
        .map(|id| format!("('{id}')"))
        .collect::<Vec<_>>()
        .join(",");
    fixture.count(&format!(
        "SELECT count(*) FROM (VALUES {list}) AS acked(id) \
         WHERE NOT EXISTS (SELECT 1 FROM service_accounts s WHERE s.id = acked.id)"
    ))
}

/// The first of `samples`, for a check's detail.
pub(crate) fn describe_first(samples: &[&Sample]) -> String {
    samples.first().map_or_else(String::new, |s| {
        format!(
            "e.g. at {}: {} after {}",
            ms(s.at),
            s.status
                .map_or_else(|| "no answer".to_owned(), |st| format!("HTTP {st}")),
            ms(s.latency)
        )
    })
}

/// `GET /readyz` every 100 ms on its own thread.
struct ReadyzPoller {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Vec<(Duration, u16)>>,
}

impl ReadyzPoller {
    fn start(addr: std::net::SocketAddr, epoch: Instant) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut samples = Vec::new();
            let mut connection = Connection::new(addr);
            let request = Request::get("/readyz");
            while !flag.load(Ordering::Relaxed) {
                let (sample, _) = exchange(&mut connection, addr, &request, epoch);
                samples.push((sample.at, sample.status.unwrap_or(0)));
                thread::sleep(Duration::from_millis(100));
            }
            samples
        });
        Self { stop, thread }
    }

    fn stop(self) -> Vec<(Duration, u16)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}
