//! A minimal HTTP/1.1 responder on a plain `TcpListener`: one GET per connection, answered
//! with a `Content-Length` (unless told to omit it) and `Connection: close`.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::Shared;

/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// How long a client has to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// An answer: status line, extra headers, body.
pub(super) struct Response {
    pub(super) status: &'static str,
    pub(super) headers: Vec<(&'static str, String)>,
    pub(super) body: Vec<u8>,
}

impl Response {
    /// A JSON answer.
    pub(super) fn json(status: &'static str, body: &serde_json::Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.to_string().into_bytes(),
        }
    }
}

/// Accepts connections until the task is aborted, answering each on its own task.
pub(super) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(respond(stream, Arc::clone(&shared)));
            }
            // Out of file descriptors or the like: do not spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Reads one request head and writes the answer.
async fn respond(mut stream: TcpStream, shared: Arc<Shared>) {
    let Ok(Some((method, path))) = tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await
    else {
        return;
    };
    let response = shared.answer(&method, &path);
    let omit_length = shared.omits_content_length();
    let mut lines = vec![
        format!("HTTP/1.1 {}", response.status),
        "Content-Type: application/json".to_owned(),
    ];
    if !omit_length {
        lines.push(format!("Content-Length: {}", response.body.len()));
    }
    lines.extend(
        response
            .headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}")),
    );
    lines.push("Connection: close\r\n\r\n".to_owned());
    let mut bytes = lines.join("\r\n").into_bytes();
    bytes.extend_from_slice(&response.body);
    // A client that went away is not an error of the fake.
    if stream.write_all(&bytes).await.is_ok() {
        let _ = stream.shutdown().await;
    }
}

/// The method and path (without query) of the request, once its head is complete.
async fn read_head(stream: &mut TcpStream) -> Option<(String, String)> {
    let mut head = Vec::with_capacity(1024);
    let mut buffer = [0_u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await.ok()?;
        if read == 0 || head.len() + read > MAX_HEAD {
            return None;
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut request_line = head.lines().next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let target = request_line.next()?;
    let path = target.split('?').next().unwrap_or(target).to_owned();
    Some((method, path))
}
