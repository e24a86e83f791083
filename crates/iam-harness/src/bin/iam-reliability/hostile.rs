//! Scenario 7: hostile clients.
//!
//! - Slowloris: connections trickling a request head one byte a second, and connections that
//!   send nothing at all, are closed once the client request timeout (5 s) passes; meanwhile
//!   other requests are served at once (no worker is held).
//! - Oversized headers → 431 (or 400); an oversized body → 413; deeply nested JSON → 400;
//!   invalid UTF-8 → 400.
//! - The server's resident memory and open files stay bounded: back near where they were once
//!   the hostile connections are gone.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use iam_harness::loadgen::{Connection, Request};
use iam_harness::procstat::{open_files, status_kib};

use crate::Pace;
use crate::fixture::{ACCOUNTS, Fixture, TENANT};
use crate::outcome::{Outcome, ms};
use crate::traffic::{Sample, exchange, once};

/// Connections trickling their head, and connections sending nothing.
const SLOW: usize = 20;
const IDLE: usize = 100;
/// actix-web's client request timeout (the server keeps the default), and the leeway on it.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
const LEEWAY: Duration = Duration::from_secs(2);
/// How much the server's memory may grow over the scenario.
const RSS_GROWTH_KIB: u64 = 16 * 1024;
/// How many more files the server may hold once the hostile connections are gone.
const FD_GROWTH: usize = 4;

pub(crate) fn run(fixture: &Fixture, _pace: Pace) -> Result<Outcome> {
    let server = fixture.server(&[])?;
    let running = Fixture::start(&server)?;
    let addr = server.addr;
    let account = fixture.id("sa-rel-hostile");
    fixture.create_account(addr, &account)?;
    let read = Request::get(format!("{ACCOUNTS}/{account}")).bearer(&fixture.admin);
    let epoch = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    // Warm up, then take the baseline.
    let mut connection = Connection::new(addr);
    for _ in 0..200 {
        samples.push(exchange(&mut connection, addr, &read, epoch).0);
    }
    drop(connection);
    thread::sleep(Duration::from_millis(200));
    let (rss_before, fds_before) = usage(running.pid);

    let mut outcome = Outcome::new(
        "hostile",
        format!(
            "{SLOW} slowloris + {IDLE} silent connections; 20 KiB and 1 MiB headers, 200 \
             headers, 100 KiB body, JSON nested 50 000 deep, invalid UTF-8"
        ),
    );

    // Slowloris and silent connections, with normal traffic alongside.
    let silent: Vec<TcpStream> = (0..IDLE)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok())
        .collect();
    let (slow, alongside) = thread::scope(|scope| {
        let slow: Vec<_> = (0..SLOW)
            .map(|_| scope.spawn(move || slowloris(addr)))
            .collect();
        thread::sleep(Duration::from_secs(1));
        let mut alongside = Vec::new();
        let mut connection = Connection::new(addr);
        for _ in 0..20 {
            alongside.push(exchange(&mut connection, addr, &read, epoch).0);
            thread::sleep(Duration::from_millis(100));
        }
        let slow: Vec<Option<Duration>> =
            slow.into_iter().map(|h| h.join().unwrap_or(None)).collect();
        (slow, alongside)
    });
    let held = slow
        .iter()
        .filter(|closed| closed.is_none_or(|t| t > HEAD_TIMEOUT + LEEWAY))
        .count();
    let slowest = slow.iter().flatten().max().copied().unwrap_or_default();
    outcome.check(
        format!(
            "slowloris connections are closed by the client request timeout ({} + {})",
            ms(HEAD_TIMEOUT),
            ms(LEEWAY)
        ),
        held == 0,
        format!(
            "{SLOW} connections, {held} held longer, the last closed after {}",
            ms(slowest)
        ),
    );
    let open_silent = silent.iter().filter(|stream| still_open(stream)).count();
    outcome.check(
        "silent connections are closed by the same timeout",
        open_silent == 0,
        format!("{} opened, {open_silent} still open", silent.len()),
    );
    drop(silent);
    let slow_answers = alongside
        .iter()
        .filter(|s| !s.ok() || s.latency > Duration::from_millis(500))
        .count();
    outcome.check(
        "meanwhile other requests are served at once (under 500 ms)",
        slow_answers == 0,
        format!(
            "{} requests, slowest {}",
            alongside.len(),
            ms(alongside
                .iter()
                .map(|s| s.latency)
                .max()
                .unwrap_or_default())
        ),
    );
    samples.extend(alongside);

    // Oversized heads: over the service's 16 KiB, over actix-web's own limits.
    let many = (0..200).fold(String::new(), |mut head, n| {
        let _ = write!(head, "X-H{n}: a\r\n");
        head
    });
    for (what, head) in [
        (
            "a 20 KiB header",
            format!("X-Big: {}\r\n", "a".repeat(20 * 1024)),
        ),
        (
            "a 1 MiB header",
            format!("X-Big: {}\r\n", "a".repeat(1024 * 1024)),
        ),
        ("a head of 200 headers", many),
    ] {
        let request = format!("GET {ACCOUNTS} HTTP/1.1\r\nHost: x\r\n{head}\r\n");
        let status = raw_status(addr, request.as_bytes())?;
        outcome.check(
            format!("{what} is refused with 431 (or 400)"),
            matches!(status, 431 | 400),
            format!("HTTP {status}"),
        );
    }
    let create = |body: Vec<u8>| {
        Request::post(ACCOUNTS)
            .bearer(&fixture.admin)
            .body("application/json", body)
    };
    let big_body = format!(
        r#"{{"id":"sa-big","displayName":"big","scope":"organization","scopeId":"{TENANT}","description":"{}"}}"#,
        "a".repeat(100 * 1024)
    );
    let nested = "[".repeat(50_000).into_bytes();
    let mut invalid_utf8 = br#"{"id":"sa-"#.to_vec();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe]);
    invalid_utf8
        .extend_from_slice(br#"","displayName":"x","scope":"organization","scopeId":"org-acme"}"#);
    for (what, request, expected) in [
        ("a 100 KiB body", create(big_body.into_bytes()), 413),
        ("JSON nested 50 000 deep", create(nested), 400),
        ("invalid UTF-8 in a JSON body", create(invalid_utf8), 400),
    ] {
        let (sample, response) = once(addr, &request, epoch);
        samples.push(sample);
        let envelope = response
            .as_ref()
            .is_some_and(|r| r.json()["error"]["code"] == expected);
        outcome.check(
            format!("{what} is refused with {expected} in the error envelope"),
            sample.status == Some(expected) && envelope,
            sample
                .status
                .map_or_else(|| "no answer".to_owned(), |s| format!("HTTP {s}")),
        );
    }

    // Still serving, and back to its footprint.
    let mut connection = Connection::new(addr);
    for _ in 0..50 {
        samples.push(exchange(&mut connection, addr, &read, epoch).0);
    }
    drop(connection);
    thread::sleep(Duration::from_millis(500));
    let (rss_after, fds_after) = usage(running.pid);
    outcome.check(
        format!(
            "memory and open files stay bounded (RSS within +{} MiB, files within +{FD_GROWTH})",
            RSS_GROWTH_KIB / 1024
        ),
        rss_after <= rss_before + RSS_GROWTH_KIB && fds_after <= fds_before + FD_GROWTH,
        format!(
            "RSS {} → {} MiB, open files {fds_before} → {fds_after}",
            rss_before / 1024,
            rss_after / 1024
        ),
    );
    outcome.count(&samples);
    drop(running);
    Ok(outcome)
}

/// Resident memory (KiB) and open files of `pid`.
fn usage(pid: u32) -> (u64, usize) {
    (
        status_kib(pid, "VmRSS:").unwrap_or(0),
        open_files(pid).unwrap_or(0),
    )
}

/// A slowloris client: a request head trickled one byte a second. Returns when the server
/// closed the connection (or answered), `None` if it still held it after 30 s.
fn slowloris(addr: SocketAddr) -> Option<Duration> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .ok()?;
    let mut buffer = [0_u8; 512];
    while started.elapsed() < Duration::from_secs(30) {
        if stream.write_all(b"a").is_err() {
            return Some(started.elapsed());
        }
        match stream.read(&mut buffer) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // Closed, answered (408) or reset.
            _ => return Some(started.elapsed()),
        }
    }
    None
}

/// Whether the server still holds `stream` open (no close, no answer).
fn still_open(stream: &TcpStream) -> bool {
    let mut stream = stream;
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buffer = [0_u8; 512];
    matches!(
        stream.read(&mut buffer),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
    )
}

/// Sends raw `bytes` and returns the status of the answer.
fn raw_status(addr: SocketAddr, bytes: &[u8]) -> Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    // The server may answer and close before it has read everything.
    let _ = stream.write_all(bytes);
    let mut head = Vec::new();
    let mut buffer = [0_u8; 1024];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let read = stream.read(&mut buffer).context("no answer")?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .with_context(|| format!("not an HTTP answer: {line:?}"))
}
