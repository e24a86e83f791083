//! Requests and their samples, and the mixed traffic several scenarios run in the background.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use iam_harness::loadgen::{Connection, Request, Response};

use crate::fixture::{ACCOUNTS, TOKEN, account_request};

/// One exchange: when it started (since the scenario's epoch), how long it took, and how it
/// was answered.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) at: Duration,
    pub(crate) latency: Duration,
    /// `None`: no answer (connection refused, reset or timed out).
    pub(crate) status: Option<u16>,
    /// A 503 with `Retry-After` and the error envelope (`UNAVAILABLE`).
    pub(crate) proper_503: bool,
}

impl Sample {
    /// Answered 2xx.
    pub(crate) fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// When the exchange ended.
    pub(crate) fn end(&self) -> Duration {
        self.at + self.latency
    }
}

/// Whether `response` is a 503 as SPEC §7 wants it: `Retry-After` and the envelope.
pub(crate) fn is_proper_503(response: &Response) -> bool {
    let body = response.json();
    response.status == 503
        && response.header("retry-after").is_some()
        && body["error"]["code"] == 503
        && body["error"]["details"][0]["reason"] == "UNAVAILABLE"
}

/// Sends `request` on `connection`, timing it from `epoch`.
pub(crate) fn exchange(
    connection: &mut Connection,
    addr: SocketAddr,
    request: &Request,
    epoch: Instant,
) -> (Sample, Option<Response>) {
    let started = Instant::now();
    let result = connection.send(&request.render(addr));
    let latency = started.elapsed();
    let at = started.duration_since(epoch);
    match result {
        Ok(response) => (
            Sample {
                at,
                latency,
                status: Some(response.status),
                proper_503: is_proper_503(&response),
            },
            Some(response),
        ),
        Err(_) => (
            Sample {
                at,
                latency,
                status: None,
                proper_503: false,
            },
            None,
        ),
    }
}

/// Sends `request` once on a new connection.
pub(crate) fn once(
    addr: SocketAddr,
    request: &Request,
    epoch: Instant,
) -> (Sample, Option<Response>) {
    exchange(&mut Connection::new(addr), addr, request, epoch)
}

/// Sends each of `requests` on its own thread and connection at once; returns the samples
/// and responses in order.
pub(crate) fn concurrently(
    addr: SocketAddr,
    requests: &[Request],
    epoch: Instant,
) -> Vec<(Sample, Option<Response>)> {
    spread(&[addr], requests, epoch)
}

/// As [`concurrently`], the requests going to `addrs` in turn.
pub(crate) fn spread(
    addrs: &[SocketAddr],
    requests: &[Request],
    epoch: Instant,
) -> Vec<(Sample, Option<Response>)> {
    thread::scope(|scope| {
        let handles: Vec<_> = requests
            .iter()
            .enumerate()
            .map(|(n, request)| {
                let addr = addrs[n % addrs.len()];
                scope.spawn(move || once(addr, request, epoch))
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| unreachable!("a client panicked"))
            })
            .collect()
    })
}

/// What the background traffic does.
#[derive(Debug, Clone)]
pub(crate) struct Mix {
    /// The servers, used in turn.
    pub(crate) addrs: Vec<SocketAddr>,
    pub(crate) admin: String,
    /// An account to read.
    pub(crate) read: String,
    /// A token request body with a valid secret.
    pub(crate) mint_body: String,
    /// Prefix of the accounts the traffic creates.
    pub(crate) prefix: String,
    /// Whether created accounts are deleted again (keeps the tables' size steady in a soak).
    pub(crate) delete_created: bool,
}

/// Running background traffic: several clients, each on its own keep-alive connection,
/// cycling through read, list, create, mint (and delete).
pub(crate) struct Traffic {
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<ClientLog>>,
    /// Requests so far, and answers that were not 2xx (or no answer).
    pub(crate) sent: Arc<AtomicU64>,
    pub(crate) failed: Arc<AtomicU64>,
}

/// What one client did.
#[derive(Debug, Default)]
pub(crate) struct ClientLog {
    pub(crate) samples: Vec<Sample>,
    /// Accounts whose create was acknowledged (201) and not deleted again.
    pub(crate) created: Vec<String>,
}

impl Traffic {
    /// Starts `clients` clients; samples are timed from `epoch`.
    pub(crate) fn start(mix: &Mix, clients: usize, epoch: Instant) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let clients = (0..clients)
            .map(|n| {
                let (mix, stop) = (mix.clone(), Arc::clone(&stop));
                let (sent, failed) = (Arc::clone(&sent), Arc::clone(&failed));
                thread::spawn(move || client(&mix, n, &stop, epoch, &sent, &failed))
            })
            .collect();
        Self {
            stop,
            clients,
            sent,
            failed,
        }
    }

    /// Stops the clients (each finishes its current request) and merges their logs.
    pub(crate) fn stop(self) -> ClientLog {
        self.stop.store(true, Ordering::Relaxed);
        let mut log = ClientLog::default();
        for client in self.clients {
            if let Ok(client) = client.join() {
                log.samples.extend(client.samples);
                log.created.extend(client.created);
            }
        }
        log.samples.sort_by_key(|sample| sample.at);
        log
    }
}

fn client(
    mix: &Mix,
    n: usize,
    stop: &AtomicBool,
    epoch: Instant,
    sent: &AtomicU64,
    failed: &AtomicU64,
) -> ClientLog {
    let mut connections: Vec<Connection> = mix
        .addrs
        .iter()
        .map(|&addr| Connection::new(addr))
        .collect();
    let mut log = ClientLog::default();
    let read = Request::get(format!("{ACCOUNTS}/{}", mix.read)).bearer(&mix.admin);
    let list = Request::get(format!("{ACCOUNTS}?pageSize=10")).bearer(&mix.admin);
    let mint = Request::post(TOKEN).json(mix.mint_body.clone());
    let mut turn = 0_usize;
    while !stop.load(Ordering::Relaxed) {
        let server = turn % mix.addrs.len();
        let addr = mix.addrs[server];
        let mut created = None;
        let request = match turn % 5 {
            0 => read.clone(),
            1 => list.clone(),
            2 => {
                let id = format!("{}-{n}-{turn}", mix.prefix);
                let request = account_request(&id, &mix.admin);
                created = Some(id);
                request
            }
            3 => mint.clone(),
            _ => match log.created.last() {
                Some(newest) if mix.delete_created => {
                    Request::delete(format!("{ACCOUNTS}/{newest}")).bearer(&mix.admin)
                }
                _ => read.clone(),
            },
        };
        let deleting = turn % 5 == 4 && mix.delete_created && !log.created.is_empty();
        let (sample, _) = exchange(&mut connections[server], addr, &request, epoch);
        sent.fetch_add(1, Ordering::Relaxed);
        if !sample.ok() {
            failed.fetch_add(1, Ordering::Relaxed);
            // A refused connection must not become a busy loop.
            thread::sleep(Duration::from_millis(20));
        }
        match (sample.status, created) {
            (Some(201), Some(id)) => log.created.push(id),
            (Some(204), None) if deleting => {
                log.created.pop();
            }
            _ => {}
        }
        log.samples.push(sample);
        turn += 1;
    }
    log
}
