//! The `iam-server` under test: its commands, starting it, waiting for it, stopping it.

use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};

use crate::loadgen::{Connection, Request};
use crate::process::{self, run_quiet};

/// How long the server may take to report ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the server may take to stop after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How to invoke the server binary.
#[derive(Debug, Clone)]
pub struct Server {
    binary: PathBuf,
    database_url: String,
    state_dir: PathBuf,
    /// Where `serve` listens.
    pub addr: SocketAddr,
    /// More configuration variables.
    env: Vec<(String, String)>,
}

impl Server {
    /// `binary` on `database_url`, keeping its development key and logs in `state_dir`,
    /// listening on `addr` (a free port on 127.0.0.1 when `None`).
    ///
    /// # Errors
    /// When no free port can be found.
    pub fn new(
        binary: impl Into<PathBuf>,
        database_url: impl Into<String>,
        state_dir: impl Into<PathBuf>,
        addr: Option<SocketAddr>,
    ) -> Result<Self> {
        let addr = match addr {
            Some(addr) => addr,
            None => SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, free_port()?)),
        };
        Ok(Self {
            binary: binary.into(),
            database_url: database_url.into(),
            state_dir: state_dir.into(),
            addr,
            env: Vec::new(),
        })
    }

    /// Sets configuration variable `name` (e.g. `IAM_DB_MAX_CONNECTIONS`).
    #[must_use]
    pub fn env(mut self, name: &str, value: impl Into<String>) -> Self {
        self.env.retain(|(existing, _)| existing != name);
        self.env.push((name.to_owned(), value.into()));
        self
    }

    /// The same server on another free port (a second instance on the same database).
    ///
    /// # Errors
    /// When no free port can be found.
    pub fn another_instance(&self) -> Result<Self> {
        Ok(Self {
            addr: SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, free_port()?)),
            ..self.clone()
        })
    }

    /// `iam-server <args>` in development mode.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.args(args)
            .env("DATABASE_URL", &self.database_url)
            .env("IAM_MODE", "development")
            .env("IAM_DEV_STATE_DIR", &self.state_dir)
            .env("IAM_LOG", "warn")
            .env("IAM_LISTEN_ADDR", self.addr.to_string());
        for (name, value) in &self.env {
            cmd.env(name, value);
        }
        cmd
    }

    /// Runs `migrate` and `directory apply FILE`.
    ///
    /// # Errors
    /// When either fails.
    pub fn prepare_database(&self, directory: &Path, actor: &str) -> Result<()> {
        run_quiet(&mut self.command(&["migrate"]))?;
        let directory = directory.display().to_string();
        run_quiet(&mut self.command(&["directory", "apply", &directory, "--actor", actor]))?;
        Ok(())
    }

    /// A token from `iam-server token mint` for `sub` in `tenant` with `roles`, valid 1 h.
    ///
    /// # Errors
    /// When the command fails or prints something else than one token.
    pub fn token(&self, tenant: &str, sub: &str, roles: &str) -> Result<String> {
        let output = run_quiet(&mut self.command(&[
            "token", "mint", "--tenant", tenant, "--sub", sub, "--roles", roles, "--ttl", "1h",
        ]))?;
        let token = output.trim();
        ensure!(
            !token.is_empty() && !token.contains(char::is_whitespace),
            "`iam-server token mint` printed {token:?}, not a single token"
        );
        Ok(token.to_owned())
    }

    /// Starts `iam-server serve` in a session of its own (through `setsid`, as a service
    /// runs: see `in_own_session`), with its output going to `serve-<port>.log` in the state
    /// dir.
    ///
    /// # Errors
    /// When the process cannot be started.
    pub fn spawn(&self) -> Result<RunningServer> {
        let log = self
            .state_dir
            .join(format!("serve-{}.log", self.addr.port()));
        let stdout =
            File::create(&log).with_context(|| format!("could not create {}", log.display()))?;
        let stderr = stdout.try_clone()?;
        let mut cmd = in_own_session(self.command(&["serve"]));
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
pub struct RunningServer {
    /// Its process id.
    pub pid: u32,
    child: Option<Child>,
    log: PathBuf,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl RunningServer {
    /// Polls `GET /readyz` until it answers 200.
    ///
    /// # Errors
    /// When the server exits first or is not ready within [`READY_TIMEOUT`].
    pub fn wait_ready(&mut self) -> Result<()> {
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

    /// Sends SIGTERM and waits up to `timeout` for the process to exit; returns its exit
    /// status and how long it took (it is killed, and an error returned, after `timeout`).
    ///
    /// # Errors
    /// When the signal cannot be sent or the process does not exit in time.
    pub fn terminate_within(&mut self, timeout: Duration) -> Result<(ExitStatus, Duration)> {
        let child = self
            .child
            .take()
            .context("the server was already stopped")?;
        let started = Instant::now();
        let status = terminate(child, timeout)?;
        Ok((status, started.elapsed()))
    }

    /// Kills the server with SIGKILL (`kill -9`: no shutdown at all) and reaps it.
    ///
    /// # Errors
    /// When the process cannot be killed.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Stops the server with SIGTERM and waits for it (a graceful shutdown).
    ///
    /// # Errors
    /// When it does not stop within [`STOP_TIMEOUT`].
    pub fn stop(mut self) -> Result<()> {
        let Some(child) = self.child.take() else {
            return Ok(());
        };
        let status = terminate(child, STOP_TIMEOUT)?;
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
            && let Err(err) = terminate(child, STOP_TIMEOUT)
        {
            eprintln!("warning: {err:#}");
        }
    }
}

/// `command` to be run in a session of its own, as a service runs in production (systemd, a
/// container), through util-linux's `setsid` when it is installed (std cannot call
/// `setsid(2)` without `unsafe`); `command` itself otherwise.
///
/// It matters on a machine shared with the load generator and PostgreSQL: with the kernel's
/// autogroup scheduling each session gets an equal share of the CPUs, and PostgreSQL has a
/// session of its own (`pg_ctl` starts it with `setsid`). A server in the load generator's
/// session competes with it for that share; under closed-loop load, descheduled lock holders
/// then stalled requests for seconds (docs/PERFORMANCE.md). The process id stays the
/// server's: `setsid` only forks when it is a process group leader, which a child is not.
///
/// Out of this process's session, the server no longer gets the terminal's Ctrl-C; so, when
/// util-linux's `setpriv` is there too, it is also given SIGTERM as its parent-death signal:
/// if this process dies without stopping it (Ctrl-C, a kill), the server stops as well
/// instead of running on. (The signal follows the thread that started it: every server is
/// started from the harnesses' main thread.)
fn in_own_session(command: Command) -> Command {
    let Some(setsid) = on_path("setsid") else {
        eprintln!("note: no `setsid` on PATH; the server shares this process's session");
        return command;
    };
    let mut own = match on_path("setpriv") {
        Some(setpriv) => {
            let mut own = Command::new(setpriv);
            own.args(["--pdeathsig", "TERM", "--"]).arg(setsid);
            own
        }
        None => Command::new(setsid),
    };
    own.arg(command.get_program()).args(command.get_args());
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => own.env(name, value),
            None => own.env_remove(name),
        };
    }
    own
}

/// The first file called `program` in a directory of `PATH`.
fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Sends SIGTERM (std has no signals, so via `kill`) and waits; kills after `timeout`.
fn terminate(mut child: Child, timeout: Duration) -> Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    run_quiet(Command::new("kill").args(["-TERM", &child.id().to_string()]))?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            child.kill()?;
            child.wait()?;
            bail!(
                "iam-server did not stop within {} ms of SIGTERM; killed it",
                timeout.as_millis()
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

/// A free TCP port on 127.0.0.1.
///
/// # Errors
/// When the system has none.
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .context("could not find a free port")?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use super::in_own_session;

    /// Field `index` (1-based, as in proc(5)) of `/proc/<pid>/stat`.
    fn stat_field(stat: &str, index: usize) -> String {
        let (pid, rest) = stat.split_once(" (").unwrap();
        if index == 1 {
            return pid.to_owned();
        }
        // The command name (field 2) may hold spaces; it ends at the last ')'.
        let after_name = &rest[rest.rfind(") ").unwrap() + 2..];
        after_name.split(' ').nth(index - 3).unwrap().to_owned()
    }

    #[test]
    fn the_child_gets_a_session_of_its_own_and_keeps_its_pid_and_environment() {
        let mut shell = Command::new("sh");
        shell
            .args(["-c", "cat /proc/$$/stat; echo; echo \"$IAM_TEST_MARK\""])
            .env("IAM_TEST_MARK", "kept");
        let child = in_own_session(shell)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success());
        let text = String::from_utf8(output.stdout).unwrap();
        let (stat, mark) = text.split_once('\n').unwrap();
        let ours = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert_eq!(stat_field(stat, 1), pid.to_string(), "{stat}");
        assert_eq!(
            stat_field(stat, 6),
            pid.to_string(),
            "a session led by the child: {stat}"
        );
        assert_ne!(stat_field(stat, 6), stat_field(&ours, 6));
        assert_eq!(mark.trim(), "kept");
    }

    #[test]
    fn the_child_is_stopped_when_the_thread_that_started_it_ends() {
        use std::os::unix::process::ExitStatusExt as _;
        use std::time::{Duration, Instant};

        assert!(super::on_path("setpriv").is_some(), "util-linux's setpriv");
        // Started from a thread that then ends, as if the harness died without stopping it.
        let mut child = std::thread::spawn(|| {
            let mut sleep = Command::new("sleep");
            sleep.arg("30");
            let child = in_own_session(sleep).spawn().unwrap();
            // Time for `setpriv` to set the signal (a parent that ends sooner escapes it; the
            // harnesses' main thread outlives its servers).
            std::thread::sleep(Duration::from_secs(1));
            child
        })
        .join()
        .unwrap();
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(10) {
                child.kill().unwrap();
                panic!("the child outlived its parent thread");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.signal(), Some(15), "{status:?}");
    }
}
