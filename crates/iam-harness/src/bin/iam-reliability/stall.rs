//! Scenarios 2 and 3: a stalled database, and an exhausted pool.
//!
//! Stall: another session holds `ACCESS EXCLUSIVE` on `service_accounts` longer than the
//! request deadline; then the server's own backends are frozen (`SIGSTOP`: a hung
//! connection). Promise: each stalled request gets a proper 503 by the deadline (5 s), and
//! afterwards the pool serves at full speed — the stalled connections poison nothing, even
//! while their frozen backends still exist.
//!
//! Pool exhaustion: more concurrent requests than connections, some of them stalled on a lock.
//! Promise: the rest get a proper 503 after the checkout timeout (2 s), nothing hangs, and
//! throughput returns once the lock is gone.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;
use iam_harness::loadgen::{Connection, Request};

use crate::fixture::{ACCOUNTS, Fixture, TOKEN, signal};
use crate::outcome::{Outcome, ms};
use crate::restart::describe_first;
use crate::traffic::{Sample, concurrently, exchange};
use crate::{Pace, progress};

/// The default request deadline, and the leeway allowed on it.
const DEADLINE: Duration = Duration::from_secs(5);
const LEEWAY: Duration = Duration::from_millis(700);
/// The default checkout timeout.
const CHECKOUT: Duration = Duration::from_secs(2);
/// How fast the pool must answer once the fault is gone.
const HEALTHY_WORST: Duration = Duration::from_secs(1);

pub(crate) fn stall(fixture: &Fixture, pace: Pace) -> Result<Outcome> {
    let server = fixture.server(&[("IAM_DB_MAX_CONNECTIONS", "8")])?;
    let _running = Fixture::start(&server)?;
    let client = fixture.create_client(server.addr, "sa-rel-stall")?;
    let read = Request::get(format!("{ACCOUNTS}/{}", client.account)).bearer(&fixture.admin);
    let mint = Request::post(TOKEN).json(client.mint_body.clone());
    let mut outcome = Outcome::new(
        "stall",
        "`ACCESS EXCLUSIVE` lock on `service_accounts` held 8 s; then the server's backends \
         frozen with SIGSTOP",
    );

    // A lock held elsewhere.
    let lock = fixture.lock("service_accounts", Duration::from_secs(8))?;
    let epoch = Instant::now();
    let stalled_requests: Vec<Request> = (0..6)
        .map(|n| {
            if n % 3 == 2 {
                mint.clone()
            } else {
                read.clone()
            }
        })
        .collect();
    let stalled: Vec<Sample> = concurrently(server.addr, &stalled_requests, epoch)
        .into_iter()
        .map(|(sample, _)| sample)
        .collect();
    lock.wait()?;
    outcome.count(&stalled);
    check_deadline(&mut outcome, "behind a lock", &stalled);
    let after = healthy(server.addr, &[read.clone(), mint.clone()], pace, epoch);
    outcome.count(&after);
    check_healthy(&mut outcome, "after the lock", &after);

    // A hung connection: the server's backends stop answering altogether. First fill the
    // pool, so there are several to freeze.
    concurrently(server.addr, &vec![read.clone(); 8], epoch);
    let frozen = fixture.server_backends()?;
    progress(&format!(
        "freezing the server's {} backends (SIGSTOP)",
        frozen.len()
    ));
    signal("STOP", &frozen)?;
    // As many requests as the pool has connections: every frozen one is met (and closed);
    // the others get fresh connections and succeed.
    let hung: Vec<Sample> = concurrently(server.addr, &vec![read.clone(); 8], epoch)
        .into_iter()
        .map(|(sample, _)| sample)
        .collect();
    outcome.count(&hung);
    let wrong: Vec<&Sample> = hung
        .iter()
        .filter(|s| !(s.ok() || s.proper_503) || s.latency > DEADLINE + LEEWAY)
        .collect();
    outcome.check(
        format!(
            "requests on frozen backends get a proper 503 by the deadline ({} + {}), the \
             others succeed",
            ms(DEADLINE),
            ms(LEEWAY)
        ),
        wrong.is_empty() && hung.iter().any(|s| s.proper_503),
        format!(
            "{} requests, {} answered 503, slowest {}{}",
            hung.len(),
            hung.iter().filter(|s| s.proper_503).count(),
            ms(hung.iter().map(|s| s.latency).max().unwrap_or_default()),
            if wrong.is_empty() {
                String::new()
            } else {
                format!("; {}", describe_first(&wrong))
            }
        ),
    );
    // The frozen backends still exist; the pool must have replaced their connections.
    let fault_end = epoch.elapsed();
    let after = healthy(server.addr, &[read.clone(), mint.clone()], pace, epoch);
    outcome.count(&after);
    outcome.recovery = Some(recovery(&after, fault_end));
    check_healthy(&mut outcome, "while the frozen backends still hang", &after);
    signal("CONT", &frozen)?;
    outcome.check(
        "frozen backends were found to freeze",
        !frozen.is_empty(),
        format!("{} backends", frozen.len()),
    );
    Ok(outcome)
}

pub(crate) fn pool_exhaustion(fixture: &Fixture, pace: Pace) -> Result<Outcome> {
    const POOL: usize = 4;
    let server = fixture.server(&[("IAM_DB_MAX_CONNECTIONS", "4")])?;
    let _running = Fixture::start(&server)?;
    let account = fixture.id("sa-rel-pool");
    fixture.create_account(server.addr, &account)?;
    let read = Request::get(format!("{ACCOUNTS}/{account}")).bearer(&fixture.admin);
    let mut outcome = Outcome::new(
        "pool",
        format!(
            "pool of {POOL}: {POOL} idempotent creates stalled on a lock of `idempotency_keys` \
             (7 s), plus 8 reads"
        ),
    );

    let lock = fixture.lock("idempotency_keys", Duration::from_secs(7))?;
    let epoch = Instant::now();
    let creates: Vec<Request> = (0..POOL)
        .map(|n| {
            crate::fixture::account_request(&fixture.id("sa-rel-pool-c"), &fixture.admin).header(
                "Idempotency-Key",
                format!("pool-{}-{n}", std::process::id()),
            )
        })
        .collect();
    let (stalled, starved) = thread::scope(|scope| {
        let stalled = scope.spawn(|| concurrently(server.addr, &creates, epoch));
        // Let the creates take every connection first.
        thread::sleep(Duration::from_millis(500));
        let reads = vec![read.clone(); 8];
        let starved = concurrently(server.addr, &reads, epoch);
        (stalled.join().unwrap_or_default(), starved)
    });
    let stalled: Vec<Sample> = stalled.into_iter().map(|(s, _)| s).collect();
    let starved: Vec<Sample> = starved.into_iter().map(|(s, _)| s).collect();
    outcome.count(&stalled);
    outcome.count(&starved);
    check_deadline(&mut outcome, "holding the connections", &stalled);
    check_503_within(
        &mut outcome,
        "the requests left without a connection get a proper 503 within the checkout timeout",
        CHECKOUT,
        &starved,
    );
    lock.wait()?;
    let fault_end = epoch.elapsed();
    let after = healthy(server.addr, &[read], pace, epoch);
    outcome.count(&after);
    outcome.recovery = Some(recovery(&after, fault_end));
    check_healthy(&mut outcome, "after the lock", &after);
    Ok(outcome)
}

/// From `fault_end` until the first of `samples` that succeeded had its answer.
fn recovery(samples: &[Sample], fault_end: Duration) -> Duration {
    samples
        .iter()
        .find(|s| s.ok())
        .map_or(Duration::ZERO, |s| s.end().saturating_sub(fault_end))
}

/// Every sample is a proper 503 answered by the deadline.
fn check_deadline(outcome: &mut Outcome, how: &str, samples: &[Sample]) {
    check_503_within(
        outcome,
        &format!("requests stalled {how} get a proper 503 by the deadline"),
        DEADLINE,
        samples,
    );
}

/// Every one of `samples` (at least one) is a proper 503 answered within `bound` (+ leeway).
fn check_503_within(outcome: &mut Outcome, what: &str, bound: Duration, samples: &[Sample]) {
    let wrong: Vec<&Sample> = samples
        .iter()
        .filter(|s| !s.proper_503 || s.latency > bound + LEEWAY)
        .collect();
    outcome.check(
        format!("{what} ({} + {})", ms(bound), ms(LEEWAY)),
        wrong.is_empty() && !samples.is_empty(),
        if wrong.is_empty() {
            format!(
                "{} requests, slowest {}",
                samples.len(),
                ms(samples.iter().map(|s| s.latency).max().unwrap_or_default())
            )
        } else {
            describe_first(&wrong)
        },
    );
}

/// Requests in a row on one connection, cycling through `requests`.
fn healthy(
    addr: std::net::SocketAddr,
    requests: &[Request],
    pace: Pace,
    epoch: Instant,
) -> Vec<Sample> {
    let count = if pace.fast { 40 } else { 200 };
    let mut connection = Connection::new(addr);
    (0..count)
        .map(|n| exchange(&mut connection, addr, &requests[n % requests.len()], epoch).0)
        .collect()
}

/// Every sample succeeded, quickly.
fn check_healthy(outcome: &mut Outcome, when: &str, samples: &[Sample]) {
    let failed: Vec<&Sample> = samples.iter().filter(|s| !s.ok()).collect();
    let worst = samples.iter().map(|s| s.latency).max().unwrap_or_default();
    outcome.check(
        format!(
            "{when}, the pool serves every request at once (none over {})",
            ms(HEALTHY_WORST)
        ),
        failed.is_empty() && worst <= HEALTHY_WORST,
        format!(
            "{} requests, {} failed, slowest {}{}",
            samples.len(),
            failed.len(),
            ms(worst),
            if failed.is_empty() {
                String::new()
            } else {
                format!("; {}", describe_first(&failed))
            }
        ),
    );
}
