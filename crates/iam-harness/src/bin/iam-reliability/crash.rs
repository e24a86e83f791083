//! Scenarios 4 and 5: `kill -9` under writes, and SIGTERM under load.
//!
//! `kill -9`: clients create accounts and credentials, every one with an `Idempotency-Key`,
//! until the server is killed. Promise: after a restart every acknowledged write is there, no
//! account has more credentials than the cap, and retrying each request that was in flight
//! (same key, same body) replays or creates — exactly once.
//!
//! SIGTERM: requests in flight (held up by a short lock) complete, new connections are
//! refused, pending last-used records are written, and the process exits 0 within the
//! shutdown timeout.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;
use iam_harness::json_string;
use iam_harness::loadgen::{Connection, Request, Response};

use crate::fixture::{ACCOUNTS, Fixture, TOKEN, account_request, signal};
use crate::outcome::{Outcome, ms};
use crate::restart::lost_accounts;
use crate::traffic::{Mix, Sample, Traffic, concurrently, exchange, once};
use crate::{Pace, progress};

/// Writing clients.
const CLIENTS: usize = 6;
/// Credentials created per account before a client moves to a new one (the cap is 5).
const CREDENTIALS_PER_ACCOUNT: usize = 4;
/// The cap of the example directory's organization.
const CAP: u64 = 5;
/// How long a retry may keep meeting `IDEMPOTENCY_KEY_IN_PROGRESS` (three 5 s deadlines, and
/// margin).
const CLAIM_WAIT: Duration = Duration::from_secs(25);

/// One idempotent write a client sent.
#[derive(Debug, Clone)]
struct Write {
    /// The account it creates, or the account it adds a credential to.
    account: String,
    credential: bool,
    request: Request,
    /// `Some(id)` when acknowledged (201): the account's or the credential's id.
    acked: Option<String>,
}

pub(crate) fn kill(fixture: &Fixture, pace: Pace) -> Result<Outcome> {
    let server = fixture.server(&[("IAM_DB_MAX_CONNECTIONS", "8")])?;
    let mut running = Fixture::start(&server)?;
    let prefix = fixture.id("sa-rel-kill");
    let stop = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let (stop, admin, prefix) = (Arc::clone(&stop), fixture.admin.clone(), prefix.clone());
            thread::spawn(move || {
                writer(server.addr, &admin, &format!("{prefix}-{n}"), &stop, epoch)
            })
        })
        .collect();
    thread::sleep(pace.pick(Duration::from_secs(3), Duration::from_secs(8)));
    progress("kill -9 of the server under writes");
    running.kill()?;
    stop.store(true, Ordering::Relaxed);
    let mut writes = Vec::new();
    let mut samples = Vec::new();
    for client in clients {
        if let Ok((client_writes, client_samples)) = client.join() {
            writes.extend(client_writes);
            samples.extend(client_samples);
        }
    }
    let killed_at = epoch.elapsed();
    let _running = Fixture::start(&server)?;
    let restarted = epoch.elapsed();

    let mut outcome = Outcome::new(
        "kill",
        format!("`kill -9` after {CLIENTS} clients wrote with `Idempotency-Key` for a while"),
    );
    outcome.count(&samples);
    outcome.recovery = Some(restarted.saturating_sub(killed_at));
    let acked_accounts: Vec<String> = writes
        .iter()
        .filter(|w| !w.credential)
        .filter_map(|w| w.acked.clone())
        .collect();
    let acked_credentials: Vec<String> = writes
        .iter()
        .filter(|w| w.credential)
        .filter_map(|w| w.acked.clone())
        .collect();
    let lost_credentials = if acked_credentials.is_empty() {
        0
    } else {
        let list = acked_credentials
            .iter()
            .map(|id| format!("('{id}')"))
            .collect::<Vec<_>>();
        fixture.count(&format!(
            "SELECT count(*) FROM (VALUES {}) AS acked(id) \
             WHERE NOT EXISTS (SELECT 1 FROM credentials c WHERE c.id = acked.id)",
            list.join(",")
        ))?
    };
    outcome.lost = lost_accounts(fixture, &acked_accounts)? + lost_credentials;
    outcome.check(
        "every acknowledged write is there after the restart",
        outcome.lost == 0 && !acked_accounts.is_empty() && !acked_credentials.is_empty(),
        format!(
            "{} accounts and {} credentials acknowledged, {} missing",
            acked_accounts.len(),
            acked_credentials.len(),
            outcome.lost
        ),
    );

    // Retry what was in flight, exactly as it was sent.
    let in_flight: Vec<&Write> = writes.iter().filter(|w| w.acked.is_none()).collect();
    let mut retried_credentials: BTreeMap<&str, u64> = BTreeMap::new();
    let mut retry_failures = Vec::new();
    let mut replays = 0;
    for write in &in_flight {
        let response = retry(server.addr, &write.request, epoch, &mut outcome);
        match response {
            Some(response) if response.status == 201 => {
                if response.header("idempotent-replayed") == Some("true") {
                    replays += 1;
                }
                if write.credential {
                    *retried_credentials.entry(&write.account).or_default() += 1;
                }
            }
            Some(response) => retry_failures.push(response.summary()),
            None => retry_failures.push("no answer".to_owned()),
        }
    }
    outcome.check(
        "each write in flight at the kill, retried with its key, answers 201 (replayed or done now)",
        retry_failures.is_empty(),
        format!(
            "{} in flight, {replays} replayed, {} done by the retry{}",
            in_flight.len(),
            in_flight.len() - retry_failures.len() - replays,
            retry_failures.first().map_or_else(String::new, |f| format!("; e.g. {f}"))
        ),
    );

    // Exactly once: each account holds its acknowledged credentials plus one per retried one.
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    for write in writes.iter().filter(|w| w.credential && w.acked.is_some()) {
        *expected.entry(&write.account).or_default() += 1;
    }
    for (account, retried) in &retried_credentials {
        *expected.entry(account).or_default() += retried;
    }
    let stored = credential_counts(fixture, &prefix)?;
    let mismatched: Vec<String> = expected
        .iter()
        .filter(|(account, count)| stored.get(**account).copied().unwrap_or(0) != **count)
        .map(|(account, count)| {
            format!(
                "{account}: {count} expected, {} stored",
                stored.get(*account).copied().unwrap_or(0)
            )
        })
        .collect();
    outcome.check(
        "no write happened twice: each account has its acknowledged credentials plus one per retry",
        mismatched.is_empty(),
        mismatched.first().cloned().unwrap_or_default(),
    );
    let most = stored.values().copied().max().unwrap_or(0);
    outcome.check(
        format!("no account holds more than the cap of {CAP} credentials"),
        most <= CAP,
        format!("at most {most}"),
    );
    Ok(outcome)
}

/// Sends `request` until it is not `IDEMPOTENCY_KEY_IN_PROGRESS` (the claim of the killed
/// request is taken over after three deadlines).
fn retry(
    addr: SocketAddr,
    request: &Request,
    epoch: Instant,
    outcome: &mut Outcome,
) -> Option<Response> {
    let until = Instant::now() + CLAIM_WAIT;
    loop {
        let (sample, response) = once(addr, request, epoch);
        outcome.count(&[sample]);
        let in_progress = response.as_ref().is_some_and(|r| {
            r.status == 409
                && r.json()["error"]["details"][0]["reason"] == "IDEMPOTENCY_KEY_IN_PROGRESS"
        });
        if !in_progress || Instant::now() >= until {
            return response;
        }
        thread::sleep(Duration::from_millis(500));
    }
}

/// Credentials per account of the accounts whose ids start with `prefix`.
fn credential_counts(fixture: &Fixture, prefix: &str) -> Result<BTreeMap<String, u64>> {
    let out = fixture.sql(&format!(
        "SELECT s.id, count(c.uid) FROM service_accounts s \
         LEFT JOIN credentials c ON c.service_account_uid = s.uid \
         WHERE s.id LIKE '{prefix}-%' GROUP BY s.id"
    ))?;
    Ok(out
        .lines()
        .filter_map(|line| {
            let (id, count) = line.split_once('|')?;
            Some((id.to_owned(), count.trim().parse().ok()?))
        })
        .collect())
}

/// One writing client: accounts, and credentials on its latest account, every write with an
/// `Idempotency-Key`, until its server stops answering.
fn writer(
    addr: SocketAddr,
    admin: &str,
    prefix: &str,
    stop: &AtomicBool,
    epoch: Instant,
) -> (Vec<Write>, Vec<Sample>) {
    let mut connection = Connection::new(addr);
    let (mut writes, mut samples) = (Vec::new(), Vec::new());
    let mut current: Option<(String, usize)> = None;
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let key = format!("{prefix}-key-{n}");
        let mut write = match &current {
            Some((account, credentials)) if *credentials < CREDENTIALS_PER_ACCOUNT => Write {
                account: account.clone(),
                credential: true,
                request: Request::post(format!("{ACCOUNTS}/{account}/credentials"))
                    .bearer(admin)
                    .header("Idempotency-Key", key),
                acked: None,
            },
            _ => {
                let account = format!("{prefix}-{n}");
                Write {
                    request: account_request(&account, admin).header("Idempotency-Key", key),
                    account,
                    credential: false,
                    acked: None,
                }
            }
        };
        let (sample, response) = exchange(&mut connection, addr, &write.request, epoch);
        samples.push(sample);
        let Some(response) = response else {
            // No answer: the server is gone; this write was in flight.
            writes.push(write);
            break;
        };
        // Refused (not a crash): nothing to retry; counted in the samples.
        if response.status != 201 {
            continue;
        }
        write.acked = json_string(&response.text(), "id");
        current = match (write.credential, current.take()) {
            (true, Some((account, credentials))) => Some((account, credentials + 1)),
            _ => Some((write.account.clone(), 0)),
        };
        writes.push(write);
    }
    (writes, samples)
}

pub(crate) fn sigterm(fixture: &Fixture, _pace: Pace) -> Result<Outcome> {
    const SHUTDOWN: Duration = Duration::from_secs(10);
    let server = fixture.server(&[
        ("IAM_DB_MAX_CONNECTIONS", "8"),
        ("IAM_SHUTDOWN_TIMEOUT_SECS", "10"),
    ])?;
    let mut running = Fixture::start(&server)?;
    let client = fixture.create_client(server.addr, "sa-rel-term")?;
    // A credential used for the first time just before SIGTERM: its last use is pending.
    let fresh = fixture.create_client(server.addr, "sa-rel-term-fresh")?;
    let mix = Mix {
        addrs: vec![server.addr],
        admin: fixture.admin.clone(),
        read: client.account.clone(),
        mint_body: client.mint_body.clone(),
        prefix: fixture.id("sa-rel-term-w"),
        delete_created: true,
    };
    let epoch = Instant::now();
    let traffic = Traffic::start(&mix, CLIENTS, epoch);
    thread::sleep(Duration::from_secs(1));
    // Hold requests in flight: reads wait for a lock that ends after SIGTERM.
    let lock = fixture.lock("service_accounts", Duration::from_millis(1500))?;
    let read = Request::get(format!("{ACCOUNTS}/{}", client.account)).bearer(&fixture.admin);
    let mint = Request::post(TOKEN).json(fresh.mint_body.clone());
    let (in_flight, refused, exit) = thread::scope(|scope| {
        let in_flight = scope.spawn(|| {
            concurrently(
                server.addr,
                &[read.clone(), read.clone(), mint.clone()],
                epoch,
            )
        });
        thread::sleep(Duration::from_millis(300));
        progress("SIGTERM with requests in flight");
        let exit = scope.spawn(|| running.terminate_within(SHUTDOWN + Duration::from_secs(5)));
        thread::sleep(Duration::from_millis(300));
        let refused = TcpStream::connect_timeout(&server.addr, Duration::from_secs(1)).is_err();
        (in_flight.join().unwrap_or_default(), refused, exit.join())
    });
    drop(lock);
    let log = traffic.stop();

    let mut outcome = Outcome::new(
        "sigterm",
        format!("SIGTERM under {CLIENTS} clients, 3 requests held in flight by a 1.5 s lock"),
    );
    outcome.count(&log.samples);
    let held: Vec<Sample> = in_flight.iter().map(|(s, _)| *s).collect();
    outcome.count(&held);
    outcome.check(
        "the requests in flight at SIGTERM complete with 2xx",
        held.iter().all(Sample::ok),
        held.iter()
            .map(|s| {
                format!(
                    "{} in {}",
                    s.status.map_or("no answer".to_owned(), |st| st.to_string()),
                    ms(s.latency)
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
    );
    outcome.check("a new connection after SIGTERM is refused", refused, "");
    match exit {
        Ok(Ok((status, took))) => {
            outcome.recovery = None;
            outcome.check(
                format!(
                    "the process exits 0 within the shutdown timeout ({})",
                    ms(SHUTDOWN)
                ),
                status.success() && took <= SHUTDOWN,
                format!("{status} after {}", ms(took)),
            );
        }
        Ok(Err(err)) => outcome.check("the process exits after SIGTERM", false, format!("{err:#}")),
        Err(_) => outcome.check(
            "the process exits after SIGTERM",
            false,
            "the waiting thread panicked",
        ),
    }
    let recorded = fixture.count(&format!(
        "SELECT count(*) FROM credentials WHERE id = '{}' AND last_used_at IS NOT NULL",
        fresh.credential
    ))?;
    outcome.check(
        "the last use of a credential first used just before SIGTERM is written",
        recorded == 1,
        "",
    );

    // SIGTERM while the database hangs: the last-use records cannot be written, and the
    // process must not wait for them beyond the request deadline.
    let hung = fixture.server(&[
        ("IAM_SHUTDOWN_TIMEOUT_SECS", "10"),
        ("IAM_REQUEST_TIMEOUT", "2s"),
    ])?;
    let mut running = Fixture::start(&hung)?;
    let (minted, _) = once(
        hung.addr,
        &Request::post(TOKEN).json(client.mint_body.clone()),
        epoch,
    );
    let frozen = fixture.server_backends()?;
    signal("STOP", &frozen)?;
    let exit = running.terminate_within(SHUTDOWN + Duration::from_secs(5));
    signal("CONT", &frozen)?;
    outcome.count(&[minted]);
    outcome.check(
        "with the database frozen at SIGTERM, the process still exits 0 within the shutdown timeout",
        minted.ok() && !frozen.is_empty() && exit.as_ref().is_ok_and(|(status, took)| status.success() && *took <= SHUTDOWN),
        match exit {
            Ok((status, took)) => format!("{} backends frozen; {status} after {}", frozen.len(), ms(took)),
            Err(err) => format!("{err:#}"),
        },
    );
    Ok(outcome)
}
