//! The `iam-server` under test: preparing its database, starting, seeding and stopping it.

use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};

use crate::loadgen::{Connection, Request};
use crate::process::{self, run_quiet, stdout_of};
use crate::{
    ACCOUNTS_PATH, ADMIN_ROLE, BENCH_ACCOUNT, FILLER_ACCOUNTS, Harness, READY_TIMEOUT,
    STOP_TIMEOUT, TENANT,
};

/// How to invoke the release server binary for the benchmark.
#[derive(Debug)]
pub(crate) struct Server {
    binary: PathBuf,
    database_url: String,
    state_dir: PathBuf,
    pub(crate) addr: SocketAddr,
    pool_size: String,
}

impl Server {
    /// The server of `harness`, to listen on `addr`.
    pub(crate) fn new(harness: &Harness, addr: SocketAddr) -> Self {
        Self {
            binary: harness.server_bin.clone(),
            database_url: harness.server_database_url.clone(),
            state_dir: harness.work_dir.clone(),
            addr,
            pool_size: harness.pool_size.clone(),
        }
    }

    /// `iam-server <args>` in development mode.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.args(args)
            .env("DATABASE_URL", &self.database_url)
            .env("IAM_MODE", "development")
            .env("IAM_DEV_STATE_DIR", &self.state_dir)
            .env("IAM_LOG", "warn")
            .env("IAM_LISTEN_ADDR", self.addr.to_string())
            .env("IAM_DB_MAX_CONNECTIONS", &self.pool_size);
        cmd
    }

    /// A tenant admin token from `iam-server token mint`.
    pub(crate) fn admin_token(&self) -> Result<String> {
        let output = stdout_of(&mut self.command(&[
            "token", "mint", "--tenant", TENANT, "--sub", "bench", "--roles", ADMIN_ROLE, "--ttl",
            "1h",
        ]))?;
        let token = output.trim();
        ensure!(
            !token.is_empty() && !token.contains(char::is_whitespace),
            "`iam-server token mint` printed {token:?}, not a single token"
        );
        Ok(token.to_owned())
    }

    /// Starts `iam-server serve` with its output going to `serve.log` in the state dir.
    pub(crate) fn spawn(&self) -> Result<RunningServer> {
        let log = self.state_dir.join("serve.log");
        let stdout =
            File::create(&log).with_context(|| format!("could not create {}", log.display()))?;
        let stderr = stdout.try_clone()?;
        let mut cmd = self.command(&["serve"]);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("failed to start `{}`", process::display(&cmd)))?;
        Ok(RunningServer {
            pid: child.id(),
            child: Some(child),
            log,
            addr: self.addr,
        })
    }
}

/// A running `iam-server serve`, stopped with SIGTERM when dropped.
#[derive(Debug)]
pub(crate) struct RunningServer {
    pub(crate) pid: u32,
    child: Option<Child>,
    log: PathBuf,
    pub(crate) addr: SocketAddr,
}

impl RunningServer {
    /// Polls `GET /readyz` until it answers 200.
    pub(crate) fn wait_ready(&mut self) -> Result<()> {
        let readyz = Request::get("/readyz").render(self.addr);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "iam-server exited ({status}) before it was ready; its log:\n{}",
                    log_tail(&self.log)
                );
            }
            let ready = Connection::new(self.addr)
                .send(&readyz)
                .is_ok_and(|response| response.status == 200);
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "iam-server was not ready within {} s; its log:\n{}",
                    READY_TIMEOUT.as_secs(),
                    log_tail(&self.log)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server with SIGTERM and waits for it (a graceful shutdown).
    pub(crate) fn stop(mut self) -> Result<()> {
        let Some(child) = self.child.take() else {
            return Ok(());
        };
        let status = terminate(child)?;
        if !status.success() {
            eprintln!(
                "warning: iam-server exited with {status} after SIGTERM; see {}",
                self.log.display()
            );
        }
        Ok(())
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.take()
            && let Err(err) = terminate(child)
        {
            eprintln!("warning: {err:#}");
        }
    }
}

/// Sends SIGTERM (std has no signals, so via `kill`) and waits; kills after a timeout.
fn terminate(mut child: Child) -> Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    run_quiet(Command::new("kill").args(["-TERM", &child.id().to_string()]))?;
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            child.kill()?;
            child.wait()?;
            bail!(
                "iam-server did not stop within {} s of SIGTERM; killed it",
                STOP_TIMEOUT.as_secs()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The last lines of the server log, for error messages.
fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Creates the benchmark's service account (with a credential) and the filler accounts;
/// returns the JSON body of a token mint request for that credential.
pub(crate) fn seed(addr: SocketAddr, token: &str) -> Result<String> {
    let mut connection = Connection::new(addr);
    let mut call = |request: Request, what: &str| {
        let response = connection
            .send(&request.render(addr))
            .with_context(|| format!("{what}: the request failed"))?;
        ensure!(
            response.status == 201,
            "{what}: expected HTTP 201, got {}",
            response.summary()
        );
        Ok(response)
    };
    let account = |id: &str, name: &str| {
        Request::post(ACCOUNTS_PATH).bearer(token).json(format!(
            r#"{{"id":"{id}","displayName":"{name}","scope":"organization","scopeId":"{TENANT}","roles":["{ADMIN_ROLE}"]}}"#
        ))
    };

    let created = call(account(BENCH_ACCOUNT, "bench"), "creating sa-bench")?;
    let client_id = json_string(&created.text(), "clientId")
        .context("no clientId in the created service account")?;
    for n in 1..=FILLER_ACCOUNTS {
        let id = format!("sa-filler-{n:04}");
        call(account(&id, &id), &format!("creating {id}"))?;
    }
    let credential = call(
        Request::post(format!("{ACCOUNTS_PATH}/{BENCH_ACCOUNT}/credentials")).bearer(token),
        "creating a credential of sa-bench",
    )?;
    let secret = json_string(&credential.text(), "clientSecret")
        .context("no clientSecret in the created credential")?;
    Ok(serde_json::json!({
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_secret": secret,
    })
    .to_string())
}

/// The string `field` of a JSON object.
fn json_string(json: &str, field: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(json).ok()?[field]
        .as_str()
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_json_strings() {
        let json = r#"{"id":"cred-x","clientSecret" : "plt_cs_cred-x_abc","n":1,"e":"a\"b"}"#;
        assert_eq!(
            json_string(json, "clientSecret").as_deref(),
            Some("plt_cs_cred-x_abc")
        );
        assert_eq!(json_string(json, "e").as_deref(), Some("a\"b"));
        assert_eq!(json_string(json, "n"), None);
        assert_eq!(json_string(json, "missing"), None);
    }
}
