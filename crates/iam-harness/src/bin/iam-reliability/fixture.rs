//! What every scenario starts from: the server binary and its prepared database, an admin
//! token, and the ways to act on PostgreSQL (SQL through `psql`, locks, stopping and starting
//! the cluster, freezing backends).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use iam_harness::json_string;
use iam_harness::loadgen::{Connection, Request};
use iam_harness::process::run_quiet;
use iam_harness::server::{RunningServer, Server};

/// The tenant everything happens in, and its admin role.
pub(crate) const TENANT: &str = "org-acme";
pub(crate) const ADMIN_ROLE: &str = "admin";
pub(crate) const ACCOUNTS: &str = "/v1/regions/global/iam/service-accounts";
pub(crate) const TOKEN: &str = "/v1/regions/global/auth/token";
/// The server's `application_name`, to find its backends in `pg_stat_activity`.
pub(crate) const APPLICATION_NAME: &str = "iam-reliability-server";

/// The prepared environment.
#[derive(Debug)]
pub(crate) struct Fixture {
    server: Server,
    psql: PathBuf,
    database_url: String,
    pg_ctl: Option<PathBuf>,
    /// A tenant admin's token.
    pub(crate) admin: String,
    /// Makes ids unique across the scenarios of a run.
    serial: AtomicU32,
}

/// A service account with one client secret.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    pub(crate) account: String,
    pub(crate) credential: String,
    /// The JSON body of a token request with this secret.
    pub(crate) mint_body: String,
}

impl Fixture {
    /// Migrates the database, applies the directory and mints an admin token.
    pub(crate) fn prepare(
        server_bin: &Path,
        database_url: &str,
        psql: &Path,
        directory: &Path,
        work_dir: &Path,
        pg_ctl: Option<PathBuf>,
    ) -> Result<Self> {
        let separator = if database_url.contains('?') { '&' } else { '?' };
        let server_url = format!("{database_url}{separator}application_name={APPLICATION_NAME}");
        // One issuer for every instance (the default, the public URL, names the port).
        let server = Server::new(server_bin, server_url, work_dir, None)?
            .env("IAM_ISSUER", "https://iam-reliability.invalid");
        crate::progress("preparing the database (migrate, directory apply, token mint)");
        server.prepare_database(directory, "iam-reliability")?;
        let admin = server.token(TENANT, "reliability", ADMIN_ROLE)?;
        Ok(Self {
            server,
            psql: psql.to_owned(),
            database_url: database_url.to_owned(),
            pg_ctl,
            admin,
            serial: AtomicU32::new(0),
        })
    }

    /// A server on a free port with `env` set (on top of the defaults).
    pub(crate) fn server(&self, env: &[(&str, &str)]) -> Result<Server> {
        let mut server = self.server.another_instance()?.env("IAM_WORKERS", "2");
        for (name, value) in env {
            server = server.env(name, *value);
        }
        Ok(server)
    }

    /// Starts `server` and waits until it is ready.
    pub(crate) fn start(server: &Server) -> Result<RunningServer> {
        let mut running = server.spawn()?;
        running.wait_ready()?;
        Ok(running)
    }

    /// A fresh id with `prefix`, unique in this run.
    pub(crate) fn id(&self, prefix: &str) -> String {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{}-{serial}", std::process::id())
    }

    /// Creates an organization-scoped service account `id` holding the admin role (201
    /// expected).
    pub(crate) fn create_account(&self, addr: std::net::SocketAddr, id: &str) -> Result<()> {
        let response = Connection::new(addr)
            .send(&account_request(id, &self.admin).render(addr))
            .with_context(|| format!("creating {id}"))?;
        ensure!(
            response.status == 201,
            "creating {id}: {}",
            response.summary()
        );
        Ok(())
    }

    /// Creates a service account with one client secret.
    pub(crate) fn create_client(&self, addr: std::net::SocketAddr, prefix: &str) -> Result<Client> {
        let account = self.id(prefix);
        let mut connection = Connection::new(addr);
        let created = connection.send(&account_request(&account, &self.admin).render(addr))?;
        ensure!(
            created.status == 201,
            "creating {account}: {}",
            created.summary()
        );
        let client_id = json_string(&created.text(), "clientId").context("no clientId")?;
        let credential = connection.send(
            &Request::post(format!("{ACCOUNTS}/{account}/credentials"))
                .bearer(&self.admin)
                .render(addr),
        )?;
        ensure!(
            credential.status == 201,
            "a credential of {account}: {}",
            credential.summary()
        );
        let text = credential.text();
        let secret = json_string(&text, "clientSecret").context("no clientSecret")?;
        let credential = json_string(&text, "id").context("no credential id")?;
        Ok(Client {
            account,
            credential,
            mint_body: serde_json::json!({
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": secret,
            })
            .to_string(),
        })
    }

    /// Runs `sql` with `psql` on the database (given on stdin: it may be long); returns its
    /// unaligned output.
    pub(crate) fn sql(&self, sql: &str) -> Result<String> {
        let mut child = self
            .psql_command()
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting psql")?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(sql.as_bytes())
                .context("writing SQL to psql")?;
        }
        let output = child.wait_with_output().context("running psql")?;
        let shown: String = sql.chars().take(200).collect();
        ensure!(
            output.status.success(),
            "psql failed on {shown:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).context("psql printed non-UTF-8")
    }

    /// A number `sql` selects.
    pub(crate) fn count(&self, sql: &str) -> Result<u64> {
        let out = self.sql(sql)?;
        out.trim().parse().with_context(|| {
            format!(
                "{} gave {out:?}, not a number",
                sql.chars().take(200).collect::<String>()
            )
        })
    }

    fn psql_command(&self) -> Command {
        let mut cmd = Command::new(&self.psql);
        cmd.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &self.database_url,
        ]);
        cmd
    }

    /// Another session takes `ACCESS EXCLUSIVE` on `table` and holds it for `hold`; returns
    /// once the lock is granted.
    pub(crate) fn lock(&self, table: &str, hold: Duration) -> Result<Lock> {
        let sql = format!(
            "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep({}); COMMIT;",
            hold.as_secs_f64()
        );
        let child = self
            .psql_command()
            .args(["-c", &sql])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the psql session that holds the lock")?;
        let lock = Lock { child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(10);
        let granted = format!(
            "SELECT count(*) FROM pg_locks WHERE granted AND mode = 'AccessExclusiveLock' \
             AND relation = '{table}'::regclass"
        );
        while self.count(&granted)? == 0 {
            ensure!(
                Instant::now() < deadline,
                "the lock on {table} was not granted in 10 s"
            );
            thread::sleep(Duration::from_millis(20));
        }
        Ok(lock)
    }

    /// Process ids of the server's backends (by `application_name`).
    pub(crate) fn server_backends(&self) -> Result<Vec<u32>> {
        let out = self.sql(&format!(
            "SELECT pid FROM pg_stat_activity WHERE application_name = '{APPLICATION_NAME}'"
        ))?;
        out.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| line.trim().parse().context("a pid"))
            .collect()
    }

    /// Stops (`stop`) or starts (`start`) the PostgreSQL cluster; fails when the run has no
    /// control over it (`DATABASE_URL` given).
    pub(crate) fn pg_ctl(&self, action: &str) -> Result<()> {
        let Some(script) = &self.pg_ctl else {
            bail!(
                "this run cannot stop and start PostgreSQL (DATABASE_URL was given); run it on \
                 the throwaway cluster"
            );
        };
        run_quiet(Command::new("sh").arg(script).arg(action))
            .with_context(|| format!("pg_ctl {action}"))?;
        Ok(())
    }
}

/// `POST /service-accounts` for `id` (organization scope, admin role).
pub(crate) fn account_request(id: &str, admin: &str) -> Request {
    Request::post(ACCOUNTS).bearer(admin).json(format!(
        r#"{{"id":"{id}","displayName":"{id}","scope":"organization","scopeId":"{TENANT}","roles":["{ADMIN_ROLE}"]}}"#
    ))
}

/// A lock held by another session; released (the session ends) when dropped.
#[derive(Debug)]
pub(crate) struct Lock {
    child: Option<Child>,
}

impl Lock {
    /// Waits until the session committed and ended.
    pub(crate) fn wait(mut self) -> Result<()> {
        if let Some(child) = self.child.take() {
            let output = child.wait_with_output()?;
            ensure!(
                output.status.success(),
                "the locking session failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends `signal` (`STOP`, `CONT`, `KILL`, `TERM`) to `pids`.
pub(crate) fn signal(signal: &str, pids: &[u32]) -> Result<()> {
    if pids.is_empty() {
        return Ok(());
    }
    let mut cmd = Command::new("kill");
    cmd.arg(format!("-{signal}"));
    for pid in pids {
        cmd.arg(pid.to_string());
    }
    run_quiet(&mut cmd)?;
    Ok(())
}
