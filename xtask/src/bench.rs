//! `cargo xtask bench`: the server's throughput and latency next to `pgbench -S` on the
//! same PostgreSQL, with the same client count, in one run (SPEC §7).
//!
//! The run builds `iam-server` in release, provisions PostgreSQL (the throwaway cluster
//! unless `DATABASE_URL` is set) with two scratch databases — `iam_bench` for the server,
//! `iam_pgbench` for pgbench — prepares the server's database with its own commands
//! (`migrate`, `directory apply`, `token mint`), starts `iam-server serve`, seeds a service
//! account with a credential (plus filler accounts) over HTTP, and then measures one
//! scenario after the other: `pgbench -S`, `GET /service-accounts/{id}`, token mint. Every
//! scenario gets a warm-up first. While the server is under load its RSS is sampled.
//! Missed targets are reported, not failed; a broken measurement (for example more than 1 %
//! failed requests) fails the command.

use std::env;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};

use crate::loadgen::{self, Connection, LoadReport, Request};
use crate::postgres::{self, Database};
use crate::process::{self, find_in_path, run, run_quiet, stdout_of};
use crate::workspace::Workspace;

/// The example directory applied to the server's database.
const EXAMPLE_DIRECTORY: &str = "docs/examples/directory.toml";
/// The scratch database the server runs on.
const SERVER_DATABASE: &str = "iam_bench";
/// The scratch database pgbench runs on.
const PGBENCH_DATABASE: &str = "iam_pgbench";
/// `pgbench -i -s`: 10 → 1 000 000 rows in `pgbench_accounts`.
const PGBENCH_SCALE: &str = "10";
/// `pgbench -j`, capped at the client count.
const PGBENCH_THREADS: usize = 2;
/// The tenant everything is created in, and its admin role.
const TENANT: &str = "org-acme";
const ADMIN_ROLE: &str = "admin";
const ACCOUNTS_PATH: &str = "/v1/regions/global/iam/service-accounts";
const TOKEN_PATH: &str = "/v1/regions/global/auth/token";
/// The service account that is read and whose credential mints tokens.
const BENCH_ACCOUNT: &str = "sa-bench";
/// More accounts in the tenant, so the table isn't trivially small.
const FILLER_ACCOUNTS: usize = 1000;
/// Unmeasured load before each scenario.
const WARM_UP: Duration = Duration::from_secs(2);
/// How often the server's RSS is sampled under load.
const RSS_INTERVAL: Duration = Duration::from_millis(100);
/// How long the server may take to report ready, and to stop after SIGTERM.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// More failed requests than this share makes the measurement invalid.
const MAX_ERROR_RATIO: f64 = 0.01;
/// SPEC §7: the server's RSS under load.
const RSS_TARGET_MIB: f64 = 64.0;
/// SPEC §7: `GET /service-accounts/{id}`.
const READ_TARGET: Target = Target {
    min_share: 0.25,
    max_p99_ms: 5.0,
};
/// SPEC §7: token mint.
const MINT_TARGET: Target = Target {
    min_share: 0.15,
    max_p99_ms: 10.0,
};

/// `cargo xtask bench [--clients N] [--seconds S]`.
pub fn run_bench(workspace: &Workspace, args: &[&str]) -> Result<()> {
    let options = Options::parse(args)?;
    let pgbench = pgbench_program()?;

    progress("building iam-server in release");
    run(workspace
        .cargo()
        .args(["build", "--release", "-p", "iam-server"]))?;
    let binary = workspace.target_dir().join("release").join("iam-server");

    let database = Database::provision(workspace)?;
    let server_url = scratch_database(database.url(), SERVER_DATABASE)?;
    let pgbench_url = scratch_database(database.url(), PGBENCH_DATABASE)?;
    let state_dir = workspace.target_dir().join("bench");
    if state_dir.exists() {
        fs::remove_dir_all(&state_dir)
            .with_context(|| format!("could not remove {}", state_dir.display()))?;
    }
    fs::create_dir_all(&state_dir)
        .with_context(|| format!("could not create {}", state_dir.display()))?;
    let pool_size = env::var("IAM_DB_MAX_CONNECTIONS")
        .ok()
        .filter(|size| !size.trim().is_empty())
        .unwrap_or_else(|| options.clients.to_string());
    let server = Server {
        binary,
        root: workspace.root().to_path_buf(),
        database_url: server_url,
        state_dir,
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, postgres::free_port()?)),
        pool_size,
    };

    progress("preparing the server's database (migrate, directory apply, token mint)");
    run_quiet(&mut server.command(&["migrate"]))?;
    run_quiet(&mut server.command(&[
        "directory",
        "apply",
        EXAMPLE_DIRECTORY,
        "--actor",
        "xtask-bench",
    ]))?;
    let token = server.admin_token()?;
    progress(&format!("pgbench -i -s {PGBENCH_SCALE}"));
    run_quiet(
        Command::new(&pgbench)
            .args(["-i", "-q", "-s", PGBENCH_SCALE])
            .arg(&pgbench_url),
    )?;

    progress(&format!("starting iam-server on {}", server.addr));
    let mut serving = server.spawn()?;
    serving.wait_ready()?;
    progress(&format!(
        "seeding {BENCH_ACCOUNT}, {FILLER_ACCOUNTS} more accounts and a credential"
    ));
    let mint_body = seed(server.addr, &token)?;

    let clk_tck = clock_ticks_per_second();
    progress(&format!("measuring pgbench -S ({} s)", options.seconds));
    let baseline = measure_pgbench(&pgbench, &pgbench_url, options, clk_tck)?;
    let read = Request::get(format!("{ACCOUNTS_PATH}/{BENCH_ACCOUNT}")).bearer(&token);
    progress(&format!(
        "measuring GET service-accounts/{{id}} ({} s)",
        options.seconds
    ));
    let read = measure_http(&serving, &read, options, clk_tck)?;
    let mint = Request::post(TOKEN_PATH).json(mint_body);
    progress(&format!("measuring token mint ({} s)", options.seconds));
    let mint = measure_http(&serving, &mint, options, clk_tck)?;
    let high_water_kib = status_kib(serving.pid, "VmHWM:");
    serving.stop()?;

    for name in [SERVER_DATABASE, PGBENCH_DATABASE] {
        if let Err(err) = drop_database(database.url(), name) {
            eprintln!("warning: {err:#}");
        }
    }
    drop(database);

    let report = Report {
        options,
        pool_size: &server.pool_size,
        baseline,
        read: Row::new("GET service-accounts/{id}", read, READ_TARGET),
        mint: Row::new("token mint", mint, MINT_TARGET),
        high_water_kib,
    };
    print!("{}", report.render());
    report.check_validity()
}

/// The command line options.
#[derive(Debug, Clone, Copy)]
struct Options {
    clients: usize,
    seconds: u64,
}

impl Options {
    fn parse(args: &[&str]) -> Result<Self> {
        let mut options = Self {
            clients: 8,
            seconds: 10,
        };
        let mut args = args.iter().copied();
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (arg, None),
            };
            let mut value = || {
                inline
                    .or_else(|| args.next())
                    .with_context(|| format!("`{name}` needs a value"))
            };
            match name {
                "--clients" => {
                    options.clients = usize::try_from(positive(name, value()?)?)
                        .context("--clients is too large")?;
                }
                "--seconds" => options.seconds = positive(name, value()?)?,
                _ => bail!("unknown option `{arg}`; run `cargo xtask bench --help`"),
            }
        }
        Ok(options)
    }

    fn duration(self) -> Duration {
        Duration::from_secs(self.seconds)
    }
}

/// Parses a whole number of at least 1.
fn positive(name: &str, raw: &str) -> Result<u64> {
    match raw.parse::<u64>() {
        Ok(value) if value > 0 => Ok(value),
        _ => bail!("`{name}` needs a whole number of at least 1, not `{raw}`"),
    }
}

/// A progress line on stderr (stdout is kept for the results).
fn progress(message: &str) {
    eprintln!("==> {message}");
}

/// `pgbench` from the Postgres installation; fails early if there is none.
fn pgbench_program() -> Result<PathBuf> {
    let program = postgres::client_program("pgbench");
    let found = if program.is_absolute() {
        program.is_file().then_some(program)
    } else {
        find_in_path("pgbench")
    };
    found.context(
        "pgbench not found (install the PostgreSQL client tools, or set PG_BIN_DIR to \
         their directory)",
    )
}

/// (Re)creates the empty database `name` on the server at `server_url`; returns its URL.
fn scratch_database(server_url: &str, name: &str) -> Result<String> {
    drop_database(server_url, name)?;
    postgres::psql(server_url, &format!("CREATE DATABASE \"{name}\""))?;
    postgres::with_database(server_url, name)
}

fn drop_database(server_url: &str, name: &str) -> Result<()> {
    postgres::psql(
        server_url,
        &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
    )
    .map(drop)
    .with_context(|| format!("could not drop the scratch database {name}"))
}

/// How to invoke the release server binary for the benchmark.
#[derive(Debug)]
struct Server {
    binary: PathBuf,
    root: PathBuf,
    database_url: String,
    state_dir: PathBuf,
    addr: SocketAddr,
    pool_size: String,
}

impl Server {
    /// `iam-server <args>` in the workspace root, in development mode.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.args(args)
            .current_dir(&self.root)
            .env("DATABASE_URL", &self.database_url)
            .env("IAM_MODE", "development")
            .env("IAM_DEV_STATE_DIR", &self.state_dir)
            .env("IAM_LOG", "warn")
            .env("IAM_LISTEN_ADDR", self.addr.to_string())
            .env("IAM_DB_MAX_CONNECTIONS", &self.pool_size);
        cmd
    }

    /// A tenant admin token from `iam-server token mint`.
    fn admin_token(&self) -> Result<String> {
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
    fn spawn(&self) -> Result<RunningServer> {
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
struct RunningServer {
    pid: u32,
    child: Option<Child>,
    log: PathBuf,
    addr: SocketAddr,
}

impl RunningServer {
    /// Polls `GET /readyz` until it answers 200.
    fn wait_ready(&mut self) -> Result<()> {
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
    fn stop(mut self) -> Result<()> {
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
fn seed(addr: SocketAddr, token: &str) -> Result<String> {
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
        .context("no clientId in the created service account")?
        .to_owned();
    for n in 1..=FILLER_ACCOUNTS {
        let id = format!("sa-filler-{n:04}");
        call(account(&id, &id), &format!("creating {id}"))?;
    }
    let credential = call(
        Request::post(format!("{ACCOUNTS_PATH}/{BENCH_ACCOUNT}/credentials")).bearer(token),
        "creating a credential of sa-bench",
    )?;
    let secret = json_string(&credential.text(), "clientSecret")
        .context("no clientSecret in the created credential")?
        .to_owned();
    Ok(format!(
        r#"{{"grant_type":"client_credentials","client_id":"{client_id}","client_secret":"{secret}"}}"#
    ))
}

/// The string value of the first `"field"` in `json`, if it has no escapes (enough for
/// the ids and secrets the benchmark reads; no JSON parser without dependencies).
fn json_string<'a>(json: &'a str, field: &str) -> Option<&'a str> {
    let key = format!("\"{field}\"");
    let rest = &json[json.find(&key)? + key.len()..];
    let value = rest
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    let end = value.find(['"', '\\'])?;
    value[end..].starts_with('"').then(|| &value[..end])
}

/// What `pgbench -S` measured.
#[derive(Debug)]
struct Baseline {
    tps: f64,
    latency_average_ms: Option<f64>,
    cpu: CpuUse,
}

/// A warm-up, then `pgbench -S` with the benchmark's client count and duration.
fn measure_pgbench(pgbench: &Path, url: &str, options: Options, clk_tck: f64) -> Result<Baseline> {
    let select = |seconds: u64| {
        let mut cmd = Command::new(pgbench);
        cmd.args(["-S", "-n", "-M", "prepared"])
            .arg("-c")
            .arg(options.clients.to_string())
            .arg("-j")
            .arg(options.clients.min(PGBENCH_THREADS).to_string())
            .arg("-T")
            .arg(seconds.to_string())
            .arg(url);
        run_quiet(&mut cmd)
    };
    select(WARM_UP.as_secs())?;
    let before = CpuSnapshot::take(None);
    let started = Instant::now();
    let output = select(options.seconds)?;
    let cpu = CpuSnapshot::take(None).use_since(before, started.elapsed(), clk_tck);
    let (tps, latency_average_ms) = parse_pgbench(&output)?;
    Ok(Baseline {
        tps,
        latency_average_ms,
        cpu,
    })
}

/// Reads `tps = …` (without initial connection time) and `latency average = … ms`.
fn parse_pgbench(output: &str) -> Result<(f64, Option<f64>)> {
    let value_after = |prefix: &str| {
        output
            .lines()
            .filter(|line| !line.contains("including connections"))
            .find_map(|line| {
                let rest = line.trim().strip_prefix(prefix)?;
                rest.split_whitespace().next()?.parse::<f64>().ok()
            })
    };
    let tps = value_after("tps = ")
        .with_context(|| format!("no `tps = …` in the pgbench output:\n{output}"))?;
    ensure!(tps > 0.0, "pgbench reported {tps} tps:\n{output}");
    Ok((tps, value_after("latency average = ")))
}

/// What one HTTP scenario measured.
#[derive(Debug)]
struct HttpMeasurement {
    load: LoadReport,
    peak_rss_kib: u64,
    cpu: CpuUse,
}

/// A warm-up, then the measured load, sampling the server's RSS and CPU meanwhile.
fn measure_http(
    server: &RunningServer,
    request: &Request,
    options: Options,
    clk_tck: f64,
) -> Result<HttpMeasurement> {
    let request = request.render(server.addr);
    loadgen::run(server.addr, &request, options.clients, WARM_UP)?;

    let stop = AtomicBool::new(false);
    let before = CpuSnapshot::take(Some(server.pid));
    let (load, peak_rss_kib) = thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(status_kib(server.pid, "VmRSS:").unwrap_or(0));
                thread::sleep(RSS_INTERVAL);
            }
            peak
        });
        let load = loadgen::run(server.addr, &request, options.clients, options.duration());
        stop.store(true, Ordering::Relaxed);
        let peak = sampler
            .join()
            .map_err(|_| anyhow!("the RSS sampler panicked"));
        (load, peak)
    });
    let after = CpuSnapshot::take(Some(server.pid));
    let load = load?;
    Ok(HttpMeasurement {
        cpu: after.use_since(before, load.elapsed, clk_tck),
        peak_rss_kib: peak_rss_kib?,
        load,
    })
}

/// A `kB` field (`VmRSS:`, `VmHWM:`) of `/proc/<pid>/status`.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        line.strip_prefix(field)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// Where the CPU time went during a scenario, in percent.
#[derive(Debug, Clone, Copy, Default)]
struct CpuUse {
    /// The server process, of one CPU.
    server: Option<f64>,
    /// Every `postgres` process on the machine, of one CPU.
    postgres: Option<f64>,
    /// Everything on the machine, of all CPUs.
    machine: Option<f64>,
}

/// CPU time counters at one moment (Linux `/proc`), in clock ticks.
#[derive(Debug, Clone, Copy)]
struct CpuSnapshot {
    /// All CPUs: (busy, total).
    machine: Option<(u64, u64)>,
    /// The server process.
    server: Option<u64>,
    /// All `postgres` processes, including the exited backends their postmaster reaped.
    postgres: Option<u64>,
}

impl CpuSnapshot {
    fn take(server: Option<u32>) -> Self {
        Self {
            machine: machine_ticks(),
            server: server.and_then(|pid| process_ticks(pid).map(|ticks| ticks.own)),
            postgres: postgres_ticks(),
        }
    }

    /// The CPU use between `before` and this snapshot, `elapsed` apart.
    fn use_since(self, before: Self, elapsed: Duration, clk_tck: f64) -> CpuUse {
        let of_one_cpu = |now: Option<u64>, then: Option<u64>| {
            let ticks = now?.checked_sub(then?)?;
            Some(ticks_f64(ticks) / clk_tck / elapsed.as_secs_f64() * 100.0)
        };
        let machine = self.machine.zip(before.machine).and_then(
            |((busy, total), (busy_before, total_before))| {
                let total = total.checked_sub(total_before).filter(|&ticks| ticks > 0)?;
                let busy = busy.checked_sub(busy_before)?;
                Some(ticks_f64(busy) / ticks_f64(total) * 100.0)
            },
        );
        CpuUse {
            server: of_one_cpu(self.server, before.server),
            postgres: of_one_cpu(self.postgres, before.postgres),
            machine,
        }
    }
}

#[expect(
    clippy::cast_precision_loss,
    reason = "tick counts stay far below 2^53"
)]
fn ticks_f64(ticks: u64) -> f64 {
    ticks as f64
}

/// Busy and total ticks of all CPUs from the first line of `/proc/stat`.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    Some((total.checked_sub(idle)?, total))
}

/// One process's CPU time from `/proc/<pid>/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcessTicks {
    /// utime + stime.
    own: u64,
    /// cutime + cstime: the children it has waited for.
    children: u64,
}

fn process_ticks(pid: u32) -> Option<ProcessTicks> {
    parse_process_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?).map(|(_, t)| t)
}

/// The command name and CPU times of a `/proc/<pid>/stat` line.
fn parse_process_stat(stat: &str) -> Option<(&str, ProcessTicks)> {
    // The command name (field 2) is in parentheses and may contain spaces or parentheses.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    let fields: Vec<u64> = stat
        .get(close + 1..)?
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // Counting from field 3 (state): utime, stime, cutime, cstime are fields 14 to 17.
    match fields[..] {
        [user, system, children_user, children_system] => Some((
            name,
            ProcessTicks {
                own: user + system,
                children: children_user + children_system,
            },
        )),
        _ => None,
    }
}

/// The CPU time of every `postgres` process on the machine, with the children each has
/// reaped: a postmaster's reaped children are the backends of closed connections, so the
/// sum keeps counting them after they exit.
fn postgres_ticks() -> Option<u64> {
    let mut total = 0;
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some(("postgres", ticks)) = parse_process_stat(&stat) {
            total += ticks.own + ticks.children;
        }
    }
    Some(total)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on practically every Linux).
fn clock_ticks_per_second() -> f64 {
    run_quiet(Command::new("getconf").arg("CLK_TCK"))
        .ok()
        .and_then(|output| output.trim().parse::<u32>().ok())
        .filter(|&ticks| ticks > 0)
        .map_or(100.0, f64::from)
}

/// A contract target for one HTTP scenario.
#[derive(Debug, Clone, Copy)]
struct Target {
    /// Of pgbench's transactions per second.
    min_share: f64,
    max_p99_ms: f64,
}

impl Target {
    fn describe(self) -> String {
        format!(
            ">= {:.0} %, p99 <= {} ms",
            self.min_share * 100.0,
            self.max_p99_ms
        )
    }
}

/// One HTTP scenario's line of the report.
#[derive(Debug)]
struct Row {
    scenario: &'static str,
    measurement: HttpMeasurement,
    target: Target,
}

impl Row {
    fn new(scenario: &'static str, measurement: HttpMeasurement, target: Target) -> Self {
        Self {
            scenario,
            measurement,
            target,
        }
    }

    fn met(&self, baseline_tps: f64) -> bool {
        let load = &self.measurement.load;
        load.per_second() >= self.target.min_share * baseline_tps
            && load
                .percentile_ms(990)
                .is_some_and(|p99| p99 <= self.target.max_p99_ms)
    }
}

/// The whole result, printed as a table.
#[derive(Debug)]
struct Report<'a> {
    options: Options,
    pool_size: &'a str,
    baseline: Baseline,
    read: Row,
    mint: Row,
    high_water_kib: Option<u64>,
}

impl Report<'_> {
    fn render(&self) -> String {
        let mut out = String::new();
        let cpus = thread::available_parallelism().map_or(0, usize::from);
        let _ = writeln!(
            out,
            "\ncargo xtask bench: {} clients, {} s per scenario after a {} s warm-up, \
             iam-server pool {} connections, {cpus} CPUs\n",
            self.options.clients,
            self.options.seconds,
            WARM_UP.as_secs(),
            self.pool_size,
        );
        table_line(
            &mut out,
            [
                "scenario",
                "clients",
                "req/s",
                "vs pgbench",
                "p50 ms",
                "p99 ms",
                "errors",
                "iam CPU",
                "pg CPU",
                "all CPU",
                "target",
                "met",
            ]
            .map(str::to_owned),
        );
        let clients = self.options.clients.to_string();
        table_line(
            &mut out,
            [
                "pgbench -S (baseline)".to_owned(),
                clients.clone(),
                format!("{:.1}", self.baseline.tps),
                "100.0 %".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
                percent(self.baseline.cpu.server),
                percent(self.baseline.cpu.postgres),
                percent(self.baseline.cpu.machine),
                "-".to_owned(),
                "-".to_owned(),
            ],
        );
        for row in [&self.read, &self.mint] {
            let load = &row.measurement.load;
            table_line(
                &mut out,
                [
                    row.scenario.to_owned(),
                    clients.clone(),
                    format!("{:.1}", load.per_second()),
                    format!("{:.1} %", load.per_second() / self.baseline.tps * 100.0),
                    millis(load.percentile_ms(500)),
                    millis(load.percentile_ms(990)),
                    load.errors.to_string(),
                    percent(row.measurement.cpu.server),
                    percent(row.measurement.cpu.postgres),
                    percent(row.measurement.cpu.machine),
                    row.target.describe(),
                    yes_no(row.met(self.baseline.tps)).to_owned(),
                ],
            );
        }
        out.push('\n');
        if let Some(latency) = self.baseline.latency_average_ms {
            let _ = writeln!(out, "pgbench latency average: {latency:.3} ms");
        }
        let peak = mib(self
            .read
            .measurement
            .peak_rss_kib
            .max(self.mint.measurement.peak_rss_kib));
        let high_water = self.high_water_kib.map_or_else(
            || "unknown".to_owned(),
            |kib| format!("{:.1} MiB", mib(kib)),
        );
        let _ = writeln!(
            out,
            "iam-server RSS: peak {peak:.1} MiB under load (VmRSS every {} ms), \
             high-water mark {high_water} (VmHWM, whole run); target <= {RSS_TARGET_MIB} MiB: {}",
            RSS_INTERVAL.as_millis(),
            yes_no(peak <= RSS_TARGET_MIB),
        );
        let _ = writeln!(
            out,
            "(iam CPU: the server process and pg CPU: all postgres processes, each in % of \
             one CPU; all CPU: the whole machine, load generator included, in % of all {cpus} \
             CPUs)"
        );
        out
    }

    /// Fails if a scenario had too many failed requests to count as a measurement.
    fn check_validity(&self) -> Result<()> {
        for row in [&self.read, &self.mint] {
            let load = &row.measurement.load;
            ensure!(load.requests > 0, "{}: no request completed", row.scenario);
            ensure!(
                load.error_ratio() <= MAX_ERROR_RATIO,
                "{}: {} of {} requests failed (first: {}); the measurement is invalid",
                row.scenario,
                load.errors,
                load.requests,
                load.first_error.as_deref().unwrap_or("unknown")
            );
        }
        Ok(())
    }
}

/// One line of the results table: the scenario left-aligned, the numbers right-aligned,
/// then the target and whether it is met.
fn table_line(out: &mut String, cells: [String; 12]) {
    let [
        scenario,
        clients,
        rate,
        share,
        p50,
        p99,
        errors,
        own_cpu,
        pg_cpu,
        all_cpu,
        target,
        met,
    ] = cells;
    let _ = writeln!(
        out,
        "{scenario:<26} {clients:>7} {rate:>9} {share:>10} {p50:>6} {p99:>6} {errors:>6} \
         {own_cpu:>7} {pg_cpu:>6} {all_cpu:>7}  {target:<21} {met}"
    );
}

fn millis(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.2}"))
}

fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |pct| format!("{pct:.0} %"))
}

fn yes_no(met: bool) -> &'static str {
    if met { "yes" } else { "NO" }
}

#[expect(
    clippy::cast_precision_loss,
    reason = "memory sizes in KiB stay far below 2^53"
)]
fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_options() {
        let default = Options::parse(&[]).unwrap();
        assert_eq!((default.clients, default.seconds), (8, 10));
        let set = Options::parse(&["--clients", "16", "--seconds=3"]).unwrap();
        assert_eq!((set.clients, set.seconds), (16, 3));
        assert!(Options::parse(&["--clients", "0"]).is_err());
        assert!(Options::parse(&["--clients"]).is_err());
        assert!(Options::parse(&["--verbose"]).is_err());
    }

    #[test]
    fn reads_json_strings() {
        let json = r#"{"id":"cred-x","clientSecret" : "plt_cs_cred-x_abc","n":1,"e":"a\"b"}"#;
        assert_eq!(json_string(json, "clientSecret"), Some("plt_cs_cred-x_abc"));
        assert_eq!(json_string(json, "id"), Some("cred-x"));
        assert_eq!(json_string(json, "n"), None);
        assert_eq!(json_string(json, "e"), None);
        assert_eq!(json_string(json, "missing"), None);
    }

    #[test]
    fn parses_pgbench_output() {
        let output = "\
transaction type: <builtin: select only>
number of clients: 8
latency average = 0.321 ms
initial connection time = 12.345 ms
tps = 24901.123456 (without initial connection time)
";
        let (tps, latency) = parse_pgbench(output).unwrap();
        assert!((tps - 24_901.123_456).abs() < 1e-6);
        assert_eq!(latency, Some(0.321));
        assert!(parse_pgbench("no numbers here").is_err());
    }

    #[test]
    fn reads_our_own_proc_files() {
        let pid = std::process::id();
        assert!(status_kib(pid, "VmRSS:").is_some_and(|kib| kib > 0));
        assert!(process_ticks(pid).is_some());
        assert!(postgres_ticks().is_some());
        let stat = "42 (post gres) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18";
        let (name, ticks) = parse_process_stat(stat).unwrap();
        assert_eq!(name, "post gres");
        assert_eq!(
            ticks,
            ProcessTicks {
                own: 11 + 12,
                children: 13 + 14
            }
        );
        let (busy, total) = machine_ticks().unwrap();
        assert!(busy <= total);
    }
}
