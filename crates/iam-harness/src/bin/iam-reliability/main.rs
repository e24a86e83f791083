//! `iam-reliability`, what `cargo xtask reliability` runs: the fault scenarios of SPEC §7
//! against real `iam-server` processes on a real PostgreSQL, each with its pass/fail checks.
//!
//! `cargo xtask reliability` builds the release server and this harness, provisions a scratch
//! database on the throwaway cluster (or `DATABASE_URL`), writes a script that stops and starts
//! that cluster, and runs this binary. Every scenario starts its own server process(es),
//! drives them with concurrent clients over HTTP, injects its fault (a PostgreSQL restart, a
//! lock, frozen backends, `kill -9`, SIGTERM, hostile clients, hours of traffic in minutes),
//! and checks the promise. The report is a table (scenario, fault, requests, outcomes by
//! status, worst latency, recovery time, data lost) printed on stdout and written to
//! `report.md` in the work directory; `docs/RELIABILITY.md` holds a full run's.
//!
//! `--fast` is the form `cargo xtask ci` runs: the same scenarios and checks with shorter
//! phases and a one-minute soak.

#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line harness: the report on stdout, progress on stderr"
)]
#![allow(
    clippy::too_many_lines,
    reason = "each scenario reads top to bottom as the script it is: set up, inject, check"
)]

mod cluster;
mod crash;
mod fixture;
mod hostile;
mod outcome;
mod restart;
mod soak;
mod stall;
mod traffic;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
pub(crate) use iam_harness::progress;

use crate::fixture::Fixture;
use crate::outcome::{Outcome, render};

const USAGE: &str = "\
Usage: iam-reliability --server-bin PATH --database-url URL --psql PATH --directory FILE
                       --work-dir DIR [--pg-ctl SCRIPT] [--fast] [--soak MINUTES]
                       [--only NAME[,NAME...]]

Scenarios: restart, stall, pool, kill, sigterm, two-instances, hostile, soak.
Run through `cargo xtask reliability`, which builds the binaries and provides the database.
";

/// Every scenario, in the order they run.
const SCENARIOS: &[&str] = &[
    "restart",
    "stall",
    "pool",
    "kill",
    "sigterm",
    "two-instances",
    "hostile",
    "soak",
];

/// How long the phases of the scenarios last.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pace {
    /// `--fast`: the CI form.
    pub(crate) fast: bool,
    /// The soak's length.
    pub(crate) soak: Duration,
}

impl Pace {
    /// `fast` in the CI form, else `full`.
    pub(crate) fn pick(self, fast: Duration, full: Duration) -> Duration {
        if self.fast { fast } else { full }
    }
}

/// The command line.
#[derive(Debug, Default)]
struct Args {
    server_bin: PathBuf,
    database_url: String,
    psql: PathBuf,
    directory: PathBuf,
    work_dir: PathBuf,
    pg_ctl: Option<PathBuf>,
    fast: bool,
    soak_minutes: Option<u64>,
    only: Vec<String>,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return Ok(());
    }
    let args = parse(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
    let pace = Pace {
        fast: args.fast,
        soak: Duration::from_secs(60 * args.soak_minutes.unwrap_or(if args.fast { 1 } else { 10 })),
    };
    let fixture = Fixture::prepare(
        &args.server_bin,
        &args.database_url,
        &args.psql,
        &args.directory,
        &args.work_dir,
        args.pg_ctl.clone(),
    )?;
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for &name in SCENARIOS {
        if !args.only.is_empty() && !args.only.iter().any(|only| only == name) {
            continue;
        }
        progress(&format!("scenario {name}"));
        let outcome = run_scenario(name, &fixture, pace)
            .unwrap_or_else(|err| Outcome::broken(name, &format!("{err:#}")));
        for check in &outcome.checks {
            eprintln!(
                "    [{}] {}{}",
                if check.ok { "ok" } else { "FAILED" },
                check.what,
                if check.detail.is_empty() {
                    String::new()
                } else {
                    format!(": {}", check.detail)
                }
            );
        }
        outcomes.push(outcome);
    }
    let report = render(&outcomes, pace, started.elapsed());
    print!("{report}");
    let path = args.work_dir.join("report.md");
    std::fs::write(&path, &report).with_context(|| format!("writing {}", path.display()))?;
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.passed())
        .map(|o| o.name)
        .collect();
    if !failed.is_empty() {
        bail!("scenarios failed: {}", failed.join(", "));
    }
    Ok(())
}

fn run_scenario(name: &str, fixture: &Fixture, pace: Pace) -> Result<Outcome> {
    match name {
        "restart" => restart::run(fixture, pace),
        "stall" => stall::stall(fixture, pace),
        "pool" => stall::pool_exhaustion(fixture, pace),
        "kill" => crash::kill(fixture, pace),
        "sigterm" => crash::sigterm(fixture, pace),
        "two-instances" => cluster::run(fixture, pace),
        "hostile" => hostile::run(fixture, pace),
        "soak" => soak::run(fixture, pace),
        _ => bail!("unknown scenario {name}"),
    }
}

/// Parses the command line.
fn parse(args: &[&str]) -> Result<Args> {
    let mut parsed = Args::default();
    let mut args = args.iter().copied();
    while let Some(arg) = args.next() {
        if arg == "--fast" {
            parsed.fast = true;
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (arg, None),
        };
        let value = inline
            .or_else(|| args.next())
            .with_context(|| format!("`{name}` needs a value"))?;
        match name {
            "--server-bin" => parsed.server_bin = value.into(),
            "--database-url" => parsed.database_url = value.into(),
            "--psql" => parsed.psql = value.into(),
            "--directory" => parsed.directory = value.into(),
            "--work-dir" => parsed.work_dir = value.into(),
            "--pg-ctl" => parsed.pg_ctl = Some(value.into()),
            "--soak" => match value.parse::<u64>() {
                Ok(minutes) if minutes > 0 => parsed.soak_minutes = Some(minutes),
                _ => bail!("--soak needs a whole number of minutes, at least 1, not `{value}`"),
            },
            "--only" => {
                for only in value.split(',').filter(|s| !s.is_empty()) {
                    if !SCENARIOS.contains(&only) {
                        bail!(
                            "unknown scenario `{only}`; the scenarios: {}",
                            SCENARIOS.join(", ")
                        );
                    }
                    parsed.only.push(only.to_owned());
                }
            }
            _ => bail!("unknown option `{arg}`; run `cargo xtask reliability --help`"),
        }
    }
    for (given, name) in [
        (!parsed.server_bin.as_os_str().is_empty(), "--server-bin"),
        (!parsed.database_url.is_empty(), "--database-url"),
        (!parsed.psql.as_os_str().is_empty(), "--psql"),
        (!parsed.directory.as_os_str().is_empty(), "--directory"),
        (!parsed.work_dir.as_os_str().is_empty(), "--work-dir"),
    ] {
        if !given {
            bail!("{name} is required (run the scenarios with `cargo xtask reliability`)");
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_options() {
        let required = [
            "--server-bin",
            "/s",
            "--database-url",
            "postgres://a",
            "--psql",
            "/p",
            "--directory",
            "d.toml",
            "--work-dir",
            "/w",
        ];
        let args = parse(&required).unwrap();
        assert!(!args.fast && args.only.is_empty() && args.pg_ctl.is_none());
        let mut more = required.to_vec();
        more.extend([
            "--fast",
            "--soak=3",
            "--only",
            "kill,soak",
            "--pg-ctl",
            "/c.sh",
        ]);
        let args = parse(&more).unwrap();
        assert!(args.fast);
        assert_eq!(args.soak_minutes, Some(3));
        assert_eq!(args.only, ["kill", "soak"]);
        for bad in [
            &["--soak", "0"][..],
            &["--only", "nap"],
            &["--verbose", "x"],
        ] {
            let mut args = required.to_vec();
            args.extend(bad);
            assert!(parse(&args).is_err(), "{bad:?}");
        }
        assert!(parse(&["--fast"]).is_err(), "the paths are required");
    }
}
