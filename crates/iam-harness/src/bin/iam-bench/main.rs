//! `iam-bench`, what `cargo xtask bench` runs: the server's throughput and latency next to `pgbench -S` on the
//! same PostgreSQL, with the same client count, in one run (SPEC §7).
//!
//! `cargo xtask bench` builds `iam-server` and this harness in release, provisions PostgreSQL
//! (the throwaway cluster unless `DATABASE_URL` is set) with two scratch databases — one for
//! the server, one for pgbench — and runs this binary on them. It prepares the server's
//! database with the server's own commands
//! (`migrate`, `directory apply`, `token mint`), starts `iam-server serve`, seeds a service
//! account with a credential (plus filler accounts) over HTTP, and then measures one
//! scenario after the other: `pgbench -S`, `GET /service-accounts/{id}`, token mint. Every
//! scenario gets a warm-up first. While the server is under load its RSS is sampled.
//! Missed targets are reported, not failed; a broken measurement (for example more than 1 %
//! failed requests) fails the command.

#![expect(
    clippy::print_stdout,
    reason = "a command-line harness: results on stdout (progress goes to stderr)"
)]

mod measure;
mod report;
mod seed;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use iam_harness::loadgen::Request;
use iam_harness::process::run_quiet;
use iam_harness::procstat::{clock_ticks_per_second, status_kib};
pub(crate) use iam_harness::progress;
use iam_harness::server::{RunningServer, Server};

use crate::measure::{Script, measure_http, measure_pgbench};
use crate::report::{Line, Report, Row, Target};
use crate::seed::{Seeded, page_token, seed};

/// `pgbench -i -s`: 10 → 1 000 000 rows in `pgbench_accounts`.
pub(crate) const PGBENCH_SCALE: &str = "10";
/// `pgbench -j`, capped at the client count.
pub(crate) const PGBENCH_THREADS: usize = 2;
/// The tenant everything is created in, and its admin role.
pub(crate) const TENANT: &str = "org-acme";
pub(crate) const ADMIN_ROLE: &str = "admin";
pub(crate) const ACCOUNTS_PATH: &str = "/v1/regions/global/iam/service-accounts";
pub(crate) const TOKEN_PATH: &str = "/v1/regions/global/auth/token";
/// The service account that is read and whose credential mints tokens.
pub(crate) const BENCH_ACCOUNT: &str = "sa-bench";
/// More accounts in the tenant: listed page by page, and given credentials.
pub(crate) const LIST_ACCOUNTS: usize = 100_000;
/// The far page of the list scenario (default page size 50: in the middle of the tenant).
pub(crate) const FAR_PAGE: usize = 1000;
/// Credential creates a run takes from the seeded accounts (each account gets at most one
/// per pass; the cap is 5).
pub(crate) const CREATES_PER_RUN: usize = 50_000;
/// Unmeasured load before each scenario.
pub(crate) const WARM_UP: Duration = Duration::from_secs(2);
/// How often the server's RSS is sampled under load.
pub(crate) const RSS_INTERVAL: Duration = Duration::from_millis(100);
/// More failed requests than this share makes the measurement invalid.
pub(crate) const MAX_ERROR_RATIO: f64 = 0.01;
/// SPEC §7: the server's RSS under load.
pub(crate) const RSS_TARGET_MIB: f64 = 64.0;
/// SPEC §7: `GET /service-accounts/{id}`.
pub(crate) const READ_TARGET: Target = Target {
    min_share: 0.30,
    max_p99_ms: 5.0,
};
/// SPEC §7: token mint.
pub(crate) const MINT_TARGET: Target = Target {
    min_share: 0.20,
    max_p99_ms: 5.0,
};

const USAGE: &str = "\
Usage: iam-bench --server-bin PATH --server-database-url URL --pgbench PATH
                 --pgbench-database-url URL --directory FILE --work-dir DIR
                 --pool-size N [--clients N[,N…]] [--seconds S]

Run through `cargo xtask bench`, which builds the binaries and provides the databases.
";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return Ok(());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (plan, harness) = parse(&args)?;
    run(&plan, &harness)
}

/// Runs every scenario and prints the report.
fn run(plan: &Plan, harness: &Harness) -> Result<()> {
    let server = Server::new(
        &harness.server_bin,
        &harness.server_database_url,
        &harness.work_dir,
        None,
    )?
    .env("IAM_DB_MAX_CONNECTIONS", &harness.pool_size);
    progress("preparing the server's database (migrate, directory apply, token mint)");
    server.prepare_database(&harness.directory, "iam-bench")?;
    let token = server.token(TENANT, "bench", ADMIN_ROLE)?;
    progress(&format!("pgbench -i -s {PGBENCH_SCALE}"));
    run_quiet(
        Command::new(&harness.pgbench)
            .args(["-i", "-q", "-s", PGBENCH_SCALE])
            .arg(&harness.pgbench_database_url),
    )?;

    progress(&format!("starting iam-server on {}", server.addr));
    let mut serving = server.spawn()?;
    serving.wait_ready()?;
    progress(&format!(
        "seeding {BENCH_ACCOUNT} with a credential and {LIST_ACCOUNTS} more accounts"
    ));
    let seeded = seed(server.addr, &token, plan.clients[0])?;
    progress(&format!("walking to page {FAR_PAGE} of the accounts"));
    let far_page = page_token(server.addr, &token, FAR_PAGE)?;
    let scenarios = Scenarios::new(&token, &seeded, &far_page);

    let clk_tck = clock_ticks_per_second();
    let mut lines = Vec::new();
    let mut notes = Vec::new();
    // Creates take the accounts in turn across all runs, so none passes its cap.
    let mut creates = scenarios.creates.iter().cycle();
    for &clients in &plan.clients {
        let load = Load {
            clients,
            seconds: plan.seconds,
        };
        let batch: Vec<Request> = creates.by_ref().take(CREATES_PER_RUN).cloned().collect();
        let (run_lines, note) = measure_run(harness, &serving, &scenarios, &batch, load, clk_tck)?;
        lines.extend(run_lines);
        notes.push(note);
    }
    let high_water_kib = status_kib(serving.pid, "VmHWM:");
    serving.stop()?;

    let report = Report {
        seconds: plan.seconds,
        pool_size: &harness.pool_size,
        lines,
        notes,
        high_water_kib,
    };
    print!("{}", report.render());
    report.check_validity()
}

/// Every scenario with `load.clients` clients: the lines of the table, and a note comparing
/// the far list page with the first.
fn measure_run(
    harness: &Harness,
    serving: &RunningServer,
    scenarios: &Scenarios,
    creates: &[Request],
    load: Load,
    clk_tck: f64,
) -> Result<(Vec<Line>, String)> {
    let clients = load.clients;
    let mut lines = Vec::new();
    let measure = |name: &str, requests: &[Request]| {
        progress(&format!(
            "measuring {name}, {clients} clients ({} s)",
            load.seconds
        ));
        measure_http(serving, requests, load, clk_tck)
    };
    // pgbench with `script` as a baseline line; its rate, for the rows measured against it.
    let baseline = |lines: &mut Vec<Line>, flag: &str, name: &'static str, script| {
        progress(&format!("measuring pgbench {flag}, {clients} clients"));
        let baseline = measure_pgbench(
            &harness.pgbench,
            &harness.pgbench_database_url,
            script,
            load,
            clk_tck,
        )?;
        let tps = baseline.tps;
        lines.push(Line::Baseline {
            name,
            clients,
            baseline,
        });
        Ok::<_, anyhow::Error>(tps)
    };
    let select_tps = baseline(&mut lines, "-S", "pgbench -S (reads)", Script::SelectOnly)?;
    let row = |scenario: &str, measurement, target, baseline_tps| {
        Line::Http(Row {
            scenario: scenario.to_owned(),
            clients,
            measurement,
            target,
            baseline_tps,
        })
    };
    let read = measure(
        "GET service-accounts/{id}",
        std::slice::from_ref(&scenarios.read),
    )?;
    lines.push(row(
        "GET service-accounts/{id}",
        read,
        Some(READ_TARGET),
        select_tps,
    ));
    let mint = measure("token mint", std::slice::from_ref(&scenarios.mint))?;
    lines.push(row("token mint", mint, Some(MINT_TARGET), select_tps));
    let first = measure("list page 1", std::slice::from_ref(&scenarios.first_page))?;
    let far = measure("list page 1000", std::slice::from_ref(&scenarios.far_page))?;
    let note = format!(
        "list, {clients} clients: page {FAR_PAGE} of {LIST_ACCOUNTS} accounts at {:.1} % of \
         page 1's rate (p50 {} vs {} ms)",
        far.load.per_second() / first.load.per_second() * 100.0,
        far.load.percentile_ms(500).map_or(f64::NAN, |ms| ms),
        first.load.percentile_ms(500).map_or(f64::NAN, |ms| ms),
    );
    lines.push(row("list page 1 (cursor)", first, None, select_tps));
    lines.push(row("list page 1000 (cursor)", far, None, select_tps));

    let update_tps = baseline(
        &mut lines,
        "-N",
        "pgbench -N (writes)",
        Script::SimpleUpdate,
    )?;
    let create = measure("credential create", creates)?;
    lines.push(row("credential create", create, None, update_tps));
    Ok((lines, note))
}

/// The requests of the HTTP scenarios.
struct Scenarios {
    read: Request,
    mint: Request,
    first_page: Request,
    far_page: Request,
    /// One credential create per seeded account.
    creates: Vec<Request>,
}

impl Scenarios {
    fn new(token: &str, seeded: &Seeded, far_page: &str) -> Self {
        Self {
            read: Request::get(format!("{ACCOUNTS_PATH}/{BENCH_ACCOUNT}")).bearer(token),
            mint: Request::post(TOKEN_PATH).json(seeded.mint_body.clone()),
            first_page: Request::get(ACCOUNTS_PATH).bearer(token),
            far_page: Request::get(format!("{ACCOUNTS_PATH}?pageToken={far_page}")).bearer(token),
            creates: seeded
                .accounts
                .iter()
                .map(|id| {
                    Request::post(format!("{ACCOUNTS_PATH}/{id}/credentials"))
                        .bearer(token)
                        .json("{}")
                })
                .collect(),
        }
    }
}

/// What to run: each client count in turn, each scenario for `seconds`.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) clients: Vec<usize>,
    pub(crate) seconds: u64,
}

/// The load: how many clients, for how long.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    pub(crate) clients: usize,
    pub(crate) seconds: u64,
}

impl Load {
    pub(crate) fn duration(self) -> Duration {
        Duration::from_secs(self.seconds)
    }
}

/// What `cargo xtask bench` prepared: the binaries, databases and folders to use.
#[derive(Debug, Default)]
pub(crate) struct Harness {
    pub(crate) server_bin: PathBuf,
    pub(crate) server_database_url: String,
    pub(crate) pgbench: PathBuf,
    pub(crate) pgbench_database_url: String,
    pub(crate) directory: PathBuf,
    pub(crate) work_dir: PathBuf,
    pub(crate) pool_size: String,
}

/// Parses the command line.
fn parse(args: &[&str]) -> Result<(Plan, Harness)> {
    let mut load = Plan {
        clients: vec![8, 16],
        seconds: 10,
    };
    let mut harness = Harness::default();
    let mut args = args.iter().copied();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (arg, None),
        };
        let value = inline
            .or_else(|| args.next())
            .with_context(|| format!("`{name}` needs a value"))?;
        match name {
            "--clients" => {
                load.clients = value
                    .split(',')
                    .map(|n| {
                        usize::try_from(positive(name, n.trim())?).context("--clients is too large")
                    })
                    .collect::<Result<_>>()?;
            }
            "--seconds" => load.seconds = positive(name, value)?,
            "--server-bin" => harness.server_bin = value.into(),
            "--server-database-url" => harness.server_database_url = value.into(),
            "--pgbench" => harness.pgbench = value.into(),
            "--pgbench-database-url" => harness.pgbench_database_url = value.into(),
            "--directory" => harness.directory = value.into(),
            "--work-dir" => harness.work_dir = value.into(),
            "--pool-size" => harness.pool_size = positive(name, value)?.to_string(),
            _ => bail!("unknown option `{arg}`; run `cargo xtask bench --help`"),
        }
    }
    for (given, name) in [
        (!harness.server_bin.as_os_str().is_empty(), "--server-bin"),
        (
            !harness.server_database_url.is_empty(),
            "--server-database-url",
        ),
        (!harness.pgbench.as_os_str().is_empty(), "--pgbench"),
        (
            !harness.pgbench_database_url.is_empty(),
            "--pgbench-database-url",
        ),
        (!harness.directory.as_os_str().is_empty(), "--directory"),
        (!harness.work_dir.as_os_str().is_empty(), "--work-dir"),
        (!harness.pool_size.is_empty(), "--pool-size"),
    ] {
        if !given {
            bail!("{name} is required (run the benchmark with `cargo xtask bench`)");
        }
    }
    Ok((load, harness))
}

/// Parses a whole number of at least 1.
fn positive(name: &str, raw: &str) -> Result<u64> {
    match raw.parse::<u64>() {
        Ok(value) if value > 0 => Ok(value),
        _ => bail!("`{name}` needs a whole number of at least 1, not `{raw}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_options() {
        let required = [
            "--server-bin",
            "/s",
            "--server-database-url",
            "postgres://a",
            "--pgbench",
            "/p",
            "--pgbench-database-url",
            "postgres://b",
            "--directory",
            "d.toml",
            "--work-dir",
            "/w",
            "--pool-size",
            "8",
        ];
        let (plan, harness) = parse(&required).unwrap();
        assert_eq!((plan.clients, plan.seconds), (vec![8, 16], 10));
        assert_eq!(harness.pool_size, "8");
        let mut set = required.to_vec();
        set.extend(["--clients", "16", "--seconds=3"]);
        let (plan, _) = parse(&set).unwrap();
        assert_eq!((plan.clients, plan.seconds), (vec![16], 3));
        let mut set = required.to_vec();
        set.extend(["--clients", "4,32"]);
        assert_eq!(parse(&set).unwrap().0.clients, vec![4, 32]);
        for bad in [
            &["--clients", "0"][..],
            &["--clients", "8,"],
            &["--clients"],
            &["--verbose", "x"],
        ] {
            let mut args = required.to_vec();
            args.extend(bad);
            assert!(parse(&args).is_err(), "{bad:?}");
        }
        assert!(
            parse(&["--clients", "4"]).is_err(),
            "the harness paths are required"
        );
    }
}
