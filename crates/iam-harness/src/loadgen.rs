//! A closed-loop HTTP/1.1 load generator for the benchmark, and the small blocking
//! HTTP client it is built on (also used to seed the benchmark's data).
//!
//! Every simulated client is a thread with one keep-alive connection that sends the same
//! request back to back and records each latency, in microseconds, in its own vector; the
//! vectors are merged and sorted at the end. Only what the benchmark needs is supported:
//! requests with `Content-Length` bodies, and responses with `Content-Length` or chunked
//! bodies (or bodies delimited by the server closing the connection).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};

/// How long connecting, sending or waiting for a response may take before it counts as a
/// failure.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// A pause after a failed exchange, so a refused connection doesn't become a busy loop.
const FAILURE_PAUSE: Duration = Duration::from_millis(10);
/// Latencies each client can record before its vector grows.
const LATENCY_CAPACITY: usize = 64 * 1024;
/// How much of an error response's body goes into a report.
const ERROR_BODY_PREVIEW: usize = 200;

/// An HTTP/1.1 request, rendered to bytes once with [`Request::render`].
#[derive(Debug, Clone)]
pub struct Request {
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    /// Content type and bytes.
    body: Option<(&'static str, Vec<u8>)>,
}

impl Request {
    /// A `GET` of `path`.
    pub fn get(path: impl Into<String>) -> Self {
        Self::new("GET", path.into())
    }

    /// A `POST` to `path` (with an empty body unless [`Request::json`] adds one).
    pub fn post(path: impl Into<String>) -> Self {
        Self::new("POST", path.into())
    }

    /// A `PATCH` of `path`.
    pub fn patch(path: impl Into<String>) -> Self {
        Self::new("PATCH", path.into())
    }

    /// A `DELETE` of `path`.
    pub fn delete(path: impl Into<String>) -> Self {
        Self::new("DELETE", path.into())
    }

    fn new(method: &'static str, path: String) -> Self {
        Self {
            method,
            path,
            headers: Vec::new(),
            body: None,
        }
    }

    /// Adds `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Self {
        self.header("Authorization", format!("Bearer {token}"))
    }

    /// Adds header `name: value`.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// Sends `body` as `application/json`.
    pub fn json(self, body: impl Into<String>) -> Self {
        self.body("application/json", body.into().into_bytes())
    }

    /// Sends `body` (any bytes) as `content_type`.
    pub fn body(mut self, content_type: &'static str, body: Vec<u8>) -> Self {
        self.body = Some((content_type, body));
        self
    }

    /// The request's bytes for a server at `addr` (a keep-alive request).
    pub fn render(&self, addr: SocketAddr) -> Vec<u8> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: iam-harness\r\n\
             Connection: keep-alive\r\n",
            self.method, self.path
        );
        for (name, value) in &self.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        if let Some((content_type, _)) = &self.body {
            let _ = write!(head, "Content-Type: {content_type}\r\n");
        }
        let body = self.body.as_ref().map_or(&[][..], |(_, body)| body);
        if self.body.is_some() || self.method != "GET" {
            let _ = write!(head, "Content-Length: {}\r\n", body.len());
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        bytes
    }
}

/// A response's status, headers and body.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, names in lower case.
    pub headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Whether the connection may be used for another request.
    keep_alive: bool,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The value of header `name` (lower case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.as_str())
    }

    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// `HTTP <status>: <start of the body>`, for error messages.
    pub fn summary(&self) -> String {
        let text = self.text();
        let end = text
            .char_indices()
            .nth(ERROR_BODY_PREVIEW)
            .map_or(text.len(), |(index, _)| index);
        format!("HTTP {}: {}", self.status, &text[..end])
    }
}

/// A keep-alive connection to one server; it reconnects on the next request after the
/// server closed it or an exchange failed.
#[derive(Debug)]
pub struct Connection {
    addr: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
    /// Scratch space for the status and header lines.
    line: String,
}

impl Connection {
    /// A connection to `addr`, opened on first use.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            stream: None,
            line: String::new(),
        }
    }

    /// Opens the connection now unless it is open.
    pub fn connect(&mut self) -> io::Result<()> {
        open_if_closed(&mut self.stream, self.addr).map(|_| ())
    }

    /// Sends `request` (as rendered by [`Request::render`]) and reads the response.
    pub fn send(&mut self, request: &[u8]) -> io::Result<Response> {
        let stream = open_if_closed(&mut self.stream, self.addr)?;
        let result = stream
            .get_mut()
            .write_all(request)
            .and_then(|()| read_response(stream, &mut self.line));
        if !result.as_ref().is_ok_and(|response| response.keep_alive) {
            self.stream = None;
        }
        result
    }
}

/// The open stream in `slot`, after connecting to `addr` if there is none.
fn open_if_closed(
    slot: &mut Option<BufReader<TcpStream>>,
    addr: SocketAddr,
) -> io::Result<&mut BufReader<TcpStream>> {
    Ok(match slot {
        Some(stream) => stream,
        none => none.insert(BufReader::new(open(addr)?)),
    })
}

/// A TCP connection to `addr` set up for request/response traffic.
fn open(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// Reads one response: status line, headers, body.
fn read_response(reader: &mut impl BufRead, line: &mut String) -> io::Result<Response> {
    next_line(reader, line)?;
    let (http_11, status) = parse_status_line(line)?;
    let mut keep_alive = http_11;
    let mut content_length = None;
    let mut chunked = false;
    let mut headers = Vec::new();
    loop {
        next_line(reader, line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| invalid(format!("malformed header line {header:?}")))?;
        let value = value.trim();
        headers.push((name.to_ascii_lowercase(), value.to_owned()));
        if name.eq_ignore_ascii_case("content-length") {
            let length = value
                .parse::<usize>()
                .map_err(|_| invalid(format!("bad Content-Length {value:?}")))?;
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            let value = value.to_ascii_lowercase();
            if value.contains("close") {
                keep_alive = false;
            } else if value.contains("keep-alive") {
                keep_alive = true;
            }
        }
    }
    let body = if chunked {
        read_chunked(reader, line)?
    } else if let Some(length) = content_length {
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        body
    } else if matches!(status, 100..=199 | 204 | 304) {
        Vec::new()
    } else {
        keep_alive = false;
        let mut body = Vec::new();
        reader.read_to_end(&mut body)?;
        body
    };
    Ok(Response {
        status,
        headers,
        body,
        keep_alive,
    })
}

/// Parses `HTTP/1.x <code> <reason>`; returns whether it is HTTP/1.1 and the code.
fn parse_status_line(line: &str) -> io::Result<(bool, u16)> {
    let mut words = line.split_whitespace();
    let version = words.next().unwrap_or_default();
    let code = words.next().and_then(|code| code.parse::<u16>().ok());
    match code {
        Some(code) if version.starts_with("HTTP/1.") => Ok((version == "HTTP/1.1", code)),
        _ => Err(invalid(format!(
            "malformed status line {:?}",
            line.trim_end()
        ))),
    }
}

/// Reads a chunked body (and its trailers).
fn read_chunked(reader: &mut impl BufRead, line: &mut String) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        next_line(reader, line)?;
        let size = line.trim_end();
        let size = size.split_once(';').map_or(size, |(size, _)| size).trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| invalid(format!("bad chunk size {size:?}")))?;
        if size == 0 {
            loop {
                next_line(reader, line)?;
                if line.trim_end().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        next_line(reader, line)?;
    }
}

/// Reads the next line into `line`; end of stream is an error.
fn next_line(reader: &mut impl BufRead, line: &mut String) -> io::Result<()> {
    line.clear();
    if reader.read_line(line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ));
    }
    Ok(())
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// What one load run measured.
#[derive(Debug)]
pub struct LoadReport {
    /// Requests completed (with any status) or failed (I/O errors).
    pub requests: u64,
    /// Non-2xx responses plus failed exchanges.
    pub errors: u64,
    /// From the start signal until the last client finished its last request.
    pub elapsed: Duration,
    /// The first error seen, for the report.
    pub first_error: Option<String>,
    /// Latencies of the completed requests in microseconds, sorted.
    latencies_us: Vec<u32>,
}

impl LoadReport {
    /// Requests per second.
    pub fn per_second(&self) -> f64 {
        as_f64(self.requests) / self.elapsed.as_secs_f64()
    }

    /// The share of requests that failed, 0–1.
    pub fn error_ratio(&self) -> f64 {
        if self.requests == 0 {
            return 0.0;
        }
        as_f64(self.errors) / as_f64(self.requests)
    }

    /// The latency percentile `per_mille` (500 = p50, 990 = p99) in milliseconds, by the
    /// nearest-rank method; `None` without any completed request.
    pub fn percentile_ms(&self, per_mille: usize) -> Option<f64> {
        let count = self.latencies_us.len();
        if count == 0 {
            return None;
        }
        let rank = (count * per_mille).div_ceil(1000).clamp(1, count);
        Some(f64::from(self.latencies_us[rank - 1]) / 1000.0)
    }
}

/// A count as a float, for rates and ratios (exact below 2^53).
#[expect(
    clippy::cast_precision_loss,
    reason = "request counts stay far below 2^53"
)]
fn as_f64(count: u64) -> f64 {
    count as f64
}

/// Runs `clients` concurrent clients, each sending `request` (rendered) to `addr` on its
/// own keep-alive connection back to back for `duration`. Connections are opened before
/// the clock starts. Fails only if a client cannot connect at all.
pub fn run(
    addr: SocketAddr,
    request: &[u8],
    clients: usize,
    duration: Duration,
) -> Result<LoadReport> {
    run_each(addr, &[request.to_vec()], clients, duration)
}

/// As [`run`], but the clients take turns through `requests` (rendered): each request sent
/// takes the next one of the list, all clients together, starting over after the last. For
/// loads that may not repeat a request too often (creates under a cap).
///
/// # Errors
/// When `requests` is empty or a client cannot connect at all.
pub fn run_each(
    addr: SocketAddr,
    requests: &[Vec<u8>],
    clients: usize,
    duration: Duration,
) -> Result<LoadReport> {
    if requests.is_empty() {
        return Err(anyhow!("no request to send"));
    }
    let start = Barrier::new(clients + 1);
    let next = AtomicUsize::new(0);
    let (tallies, elapsed) = thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|_| scope.spawn(|| client(addr, requests, &next, duration, &start)))
            .collect();
        start.wait();
        let started = Instant::now();
        let tallies = workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .map_err(|_| anyhow!("a load generator thread panicked"))?
            })
            .collect::<Result<Vec<_>>>();
        (tallies, started.elapsed())
    });
    let tallies = tallies?;

    let mut report = LoadReport {
        requests: 0,
        errors: 0,
        elapsed,
        first_error: None,
        latencies_us: Vec::with_capacity(tallies.iter().map(|t| t.latencies_us.len()).sum()),
    };
    for tally in tallies {
        report.requests += tally.requests;
        report.errors += tally.errors;
        report.first_error = report.first_error.or(tally.first_error);
        report.latencies_us.extend(tally.latencies_us);
    }
    report.latencies_us.sort_unstable();
    Ok(report)
}

/// What one client saw.
#[derive(Debug, Default)]
struct Tally {
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    latencies_us: Vec<u32>,
}

impl Tally {
    fn error(&mut self, describe: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(describe());
        }
    }
}

/// One client: connect, wait for the start signal, send until `duration` has passed.
fn client(
    addr: SocketAddr,
    requests: &[Vec<u8>],
    next: &AtomicUsize,
    duration: Duration,
    start: &Barrier,
) -> Result<Tally> {
    let mut connection = Connection::new(addr);
    let connected = connection.connect();
    // Wait even when the connection failed, or the other threads would wait forever.
    start.wait();
    connected.with_context(|| format!("could not connect to {addr}"))?;

    let deadline = Instant::now() + duration;
    let mut tally = Tally {
        latencies_us: Vec::with_capacity(LATENCY_CAPACITY),
        ..Tally::default()
    };
    loop {
        let sent = Instant::now();
        if sent >= deadline {
            return Ok(tally);
        }
        tally.requests += 1;
        let request = &requests[next.fetch_add(1, Ordering::Relaxed) % requests.len()];
        match connection.send(request) {
            Ok(response) => {
                let micros = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
                tally.latencies_us.push(micros);
                if !response.is_success() {
                    tally.error(|| response.summary());
                }
            }
            Err(err) => {
                tally.error(|| format!("request failed: {err}"));
                thread::sleep(FAILURE_PAUSE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> io::Result<Response> {
        read_response(&mut raw.as_bytes(), &mut String::new())
    }

    #[test]
    fn reads_content_length_bodies() {
        let response =
            parse("HTTP/1.1 201 Created\r\ncontent-length: 7\r\nx-a: b\r\n\r\n{\"a\":1}extra")
                .unwrap();
        assert_eq!(response.status, 201);
        assert_eq!(response.text(), "{\"a\":1}");
        assert!(response.keep_alive);
        assert!(response.is_success());
        assert_eq!(response.header("x-a"), Some("b"));
    }

    #[test]
    fn reads_chunked_bodies_and_connection_close() {
        let response = parse(
            "HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(response.status, 503);
        assert_eq!(response.text(), "abcde");
        assert!(!response.keep_alive);
        assert!(!response.is_success());
    }

    #[test]
    fn rejects_garbage_and_truncation() {
        assert!(parse("SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn renders_requests() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 8080));
        let request = Request::post("/x").bearer("t").json("{}").render(addr);
        assert_eq!(
            String::from_utf8(request).unwrap(),
            "POST /x HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: iam-harness\r\n\
             Connection: keep-alive\r\nAuthorization: Bearer t\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
        let empty_post = String::from_utf8(Request::post("/y").render(addr)).unwrap();
        assert!(
            empty_post.ends_with("Content-Length: 0\r\n\r\n"),
            "{empty_post}"
        );
        let get = String::from_utf8(Request::get("/z").render(addr)).unwrap();
        assert!(!get.contains("Content-Length"), "{get}");
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let report = LoadReport {
            requests: 100,
            errors: 1,
            elapsed: Duration::from_secs(2),
            first_error: None,
            latencies_us: (1..=100).map(|n| n * 1000).collect(),
        };
        assert_eq!(report.percentile_ms(500), Some(50.0));
        assert_eq!(report.percentile_ms(990), Some(99.0));
        assert_eq!(report.percentile_ms(1000), Some(100.0));
        assert!((report.per_second() - 50.0).abs() < 1e-9);
        assert!((report.error_ratio() - 0.01).abs() < 1e-9);
    }
}
