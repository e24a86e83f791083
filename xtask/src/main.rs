//! `cargo xtask`: contributor tasks for the IAM workspace (a local dev server, the CI
//! checks, the benchmark's preparation, a throwaway Postgres, the Diesel schema file).
//!
//! Run `cargo xtask --help` for the commands. Only `anyhow` and std are used, so the tasks
//! build in seconds.

#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "xtask is a CLI that talks to a developer"
)]

mod bench;
mod ci;
mod conformance;
mod deny;
mod deploy;
mod dev;
mod http;
mod image;
mod postgres;
mod process;
mod reliability;
mod schema;
mod workspace;

use std::env;
use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};

use crate::postgres::Cluster;
use crate::workspace::{Workspace, database_url_from_env};

const USAGE: &str = "\
cargo xtask: contributor tasks for the IAM workspace

Usage: cargo xtask <COMMAND>

Commands:
  dev        Run iam-server locally with a throwaway database, the example
             directory and an admin token
  ci         Run the CI checks: fmt, dependency rule, clippy, docs, supply chain,
             manifests, schema drift, tests, fault scenarios, API conformance,
             image smoke test
  bench      Measure iam-server (release) next to pgbench on the same PostgreSQL
  reliability  Run the fault scenarios (PostgreSQL restart, stalls, kill -9,
             SIGTERM, two instances, hostile clients, soak) against iam-server
  conformance  Check the served OpenAPI document: openapi-spec-validator and
             schemathesis (all checks, all phases) against the running server
  image      Build the container image (deploy/Dockerfile) with podman;
             --smoke runs it against the throwaway PostgreSQL
  deploy-check  Render deploy/kubernetes with kubectl kustomize and validate it
             (kubernetes-validate --strict, Kubernetes 1.30)
  schema     Regenerate crates/iam-postgres/src/schema.rs from the migrations
  db start   Start (or reuse) the throwaway PostgreSQL and print its DATABASE_URL
  db url     Print the DATABASE_URL of the running throwaway PostgreSQL
  db stop    Stop the throwaway PostgreSQL and delete its data
  help       Print this help; `cargo xtask <COMMAND> --help` explains a command

Environment:
  DATABASE_URL   Use this PostgreSQL instead of a throwaway cluster
  PG_BIN_DIR     Directory of initdb/pg_ctl/psql (default: newest
                 /usr/lib/postgresql/<version>/bin, else PATH)
";

const DEV_HELP: &str = "\
Usage: cargo xtask dev

Runs iam-server locally, ready for curl:
  1. starts (or reuses) the throwaway PostgreSQL, unless DATABASE_URL is set;
  2. builds iam-server and runs, with IAM_MODE=development and
     IAM_DEV_STATE_DIR=.iam-dev:
       iam-server migrate
       iam-server directory apply docs/examples/directory.toml --actor xtask-dev
       iam-server token mint --tenant org-acme --sub alice@acme.example ...
  3. saves the admin token to .iam-dev/admin-token and prints how to use it
     (export TOKEN=$(cat .iam-dev/admin-token));
  4. runs `iam-server serve` in the foreground on IAM_LISTEN_ADDR (default
     127.0.0.1:8080) until Ctrl-C, then stops the throwaway PostgreSQL if it
     started it.
";

const CI_HELP: &str = "\
Usage: cargo xtask ci

Runs the CI checks, stopping at the first failure:
  fmt              cargo fmt --all -- --check
  dependency rule  iam-domain must not depend on diesel*, actix*, tokio*,
                   deadpool*, reqwest* or hyper* crates (cargo tree)
  clippy           cargo clippy --workspace --all-targets --locked -- -D warnings
  docs             RUSTDOCFLAGS=-D warnings cargo doc --workspace --no-deps --all-features
  supply chain     cargo deny check licenses bans sources (deny.toml; cargo-deny
                   0.20.2 installed on first use into ~/.cache/iam-xtask)
  deploy check     cargo xtask deploy-check: render and validate the Kubernetes
                   manifests (kubernetes-validate --strict, Kubernetes 1.30)
  postgres         start (or reuse) the throwaway PostgreSQL, unless DATABASE_URL is set
  schema drift     migrate a fresh database and compare `diesel print-schema` with
                   crates/iam-postgres/src/schema.rs (fix: cargo xtask schema)
  test             cargo test --workspace --locked, with DATABASE_URL set
  reliability      cargo xtask reliability --fast: the fault scenarios against
                   the release server (builds it; about 4 minutes on 2 cores)
  conformance      cargo xtask conformance: openapi-spec-validator, schemathesis
                   (all checks, all phases) and a generated client's tour
  image (smoke)    cargo xtask image --smoke: the container image, built with
                   podman and run against the throwaway PostgreSQL (installs
                   podman and the musl target if missing; about 4 minutes)

A throwaway PostgreSQL started by ci is stopped again at the end, pass or fail.
diesel_cli, cargo-deny and the kubernetes-validate and schemathesis virtualenvs are installed on
first use into ~/.cache/iam-xtask (override: IAM_XTASK_CACHE), outside the clone,
so later clones reuse them.
";

const BENCH_HELP: &str = "\
Usage: cargo xtask bench [--clients N[,N…]] [--seconds S]

Measures iam-server against the performance contract (SPEC §7), in one run
next to pgbench on the same PostgreSQL with the same client count:
  1. builds iam-server and the harness iam-bench (crates/iam-harness) in release;
  2. starts (or reuses) the throwaway PostgreSQL, unless DATABASE_URL is set,
     and (re)creates the scratch databases iam_bench and iam_pgbench on it;
  then iam-bench:
  3. migrates iam_bench, applies docs/examples/directory.toml, mints an admin
     token and starts `iam-server serve` (development mode, IAM_LOG=warn,
     twice as many connections as the most clients, plus one, so that no
     worker's share runs short, unless IAM_DB_MAX_CONNECTIONS is set; state
     and server log in <target>/bench/);
  4. creates sa-bench with a credential and 100 000 more accounts (through the
     API), and walks the account list to page 1000 for its page token;
  5. for each client count N, measures one after the other, each after a 2 s
     warm-up:
       pgbench -S -M prepared -c N -j min(N,2) -T S   (pgbench -i -s 10 first)
       GET  /v1/regions/global/iam/service-accounts/sa-bench  (admin token)
       POST /v1/regions/global/auth/token  (client_credentials of sa-bench)
       GET  /v1/regions/global/iam/service-accounts  (page 1, then page 1000)
       pgbench -N -M prepared -c N -j min(N,2) -T S
       POST …/service-accounts/{id}/credentials  (a new account each time)
     with N client threads, one keep-alive connection each, sampling the
     server's RSS every 100 ms;
  6. prints one table: requests/s, the share of the pgbench line above (-S for
     reads and mints, -N for creates), p50/p99 latency, errors, CPU use and
     peak RSS against the targets, and stops the server (SIGTERM);
  and finally xtask drops the scratch databases and stops a throwaway
  PostgreSQL it started.

Missed targets are reported, not failed (it is a measurement); the command
fails if the harness breaks, e.g. more than 1 % of requests fail.

Options:
  --clients N[,N…]  Client counts, one run each (default 8,16)
  --seconds S       Measured seconds per scenario (default 10)
";

const RELIABILITY_HELP: &str = "\
Usage: cargo xtask reliability [--fast] [--soak MINUTES] [--only NAME[,NAME...]]

Runs the fault scenarios of SPEC §7 (docs/RELIABILITY.md) against real
iam-server processes (release build) on a scratch database (iam_reliability)
of the throwaway PostgreSQL (or of DATABASE_URL's server):
  restart        pg_ctl stop -m fast, 3 s away, pg_ctl start, under 6 clients
  stall          a lock held past the request deadline; frozen (SIGSTOP) backends
  pool           more requests than connections, some stalled on a lock
  kill           kill -9 under idempotent writes; restart; retry what was in flight
  sigterm        SIGTERM with requests in flight
  two-instances  two servers on one database: cap, disable, revocation, one key
  hostile        slowloris, silent connections, oversized and malformed requests
  soak           mixed traffic, RSS/files/connections sampled every 10 s

Each scenario checks its promise and the command fails if any check fails. The
report (a table: scenario, fault, requests, outcomes by status, worst latency,
recovery, data lost; then every check) is printed and written to
<target>/reliability/report.md, next to the servers' logs.

The restart scenario stops and starts the throwaway cluster (through a script
xtask writes to <target>/reliability/pg-ctl.sh); with DATABASE_URL set it
cannot, and fails saying so. The stall scenario freezes the server's backends
with SIGSTOP, which needs permission to signal PostgreSQL's processes (root,
or the user owning the throwaway cluster).

Options:
  --fast          The form cargo xtask ci runs: shorter phases, 1-minute soak
  --soak MINUTES  Length of the soak (default 10; 1 with --fast)
  --only NAMES    Run only these scenarios (comma-separated)
";

const CONFORMANCE_HELP: &str = "\
Usage: cargo xtask conformance

Checks that the OpenAPI document the server serves is one tools can trust:
  1. builds iam-server (release) and starts it on a scratch database
     (iam_conformance) of the throwaway PostgreSQL (or DATABASE_URL's server),
     migrated, with docs/examples/directory.toml applied, and mints an admin
     token of org-acme holding every role of its catalog;
  2. openapi-spec-validator on GET /openapi.json;
  3. schemathesis --checks all, phases examples, coverage, fuzzing and
     stateful, 100 examples, a fixed seed, one worker, with the exceptions of
     the root schemathesis.toml (each cites the contract rule OpenAPI cannot
     express). Its JUnit report goes to <target>/conformance/report;
  4. a Python client generated from the document by openapi-python-client,
     driven through the README's tour (xtask/conformance/client_tour.py).
The tools are pinned and installed on first use into a virtualenv in
~/.cache/iam-xtask (IAM_XTASK_CACHE overrides).
";

const IMAGE_HELP: &str = "\
Usage: cargo xtask image [--smoke]

Builds the container image localhost/iam-server:<version> from deploy/Dockerfile:
  1. a static release build of iam-server for x86_64-unknown-linux-musl
     (`rustup target add` first if needed);
  2. podman (installed with apt-get, with runc, if missing), configured by
     files written to <target>/image/: runc, the cgroupfs manager, lowered
     nofile/nproc limits, the vfs storage driver (image storage in
     <target>/image/storage), host networking;
  3. podman build with only the binary in the context (FROM scratch: nothing
     is pulled), and a check that it runs as 65532:65532.
With --smoke, on a scratch database (iam_image_smoke) of the throwaway
PostgreSQL (or DATABASE_URL's server), reached as `localhost`: the image runs
migrate, directory apply and serve (production mode, read-only root, a key and
pepper generated for the test); /readyz must answer 200, a service account's
client secret must mint a token, and `podman stop` (SIGTERM) must end it with
exit code 0 within 5 s.
";

const DEPLOY_CHECK_HELP: &str = "\
Usage: cargo xtask deploy-check

Renders the Kubernetes manifests with `kubectl kustomize` (deploy/kubernetes/base
and deploy/kubernetes/overlays/production, which includes the monitoring
component) into <target>/deploy-check/, and validates every object with
`kubernetes-validate --strict` against Kubernetes 1.30 (its schemas ship with it:
no cluster and no network needed). kubernetes-validate (pinned) is installed on
first use into a virtualenv in ~/.cache/iam-xtask (IAM_XTASK_CACHE overrides);
kubectl must be installed. Custom resources (the ServiceMonitor) have no schema
and are reported as such, not failed.
";

const SCHEMA_HELP: &str = "\
Usage: cargo xtask schema

Regenerates crates/iam-postgres/src/schema.rs: migrates a fresh database
(iam_schema_check) with `iam-server migrate` and writes what
`diesel print-schema` prints for it. Uses DATABASE_URL's server if set, else the
throwaway PostgreSQL (started, and stopped again, if it isn't running).
diesel_cli is installed on first use into ~/.cache/iam-xtask (override:
IAM_XTASK_CACHE), outside the clone, so later clones reuse it.
";

const DB_HELP: &str = "\
Usage: cargo xtask db <start|url|stop>

Manages a throwaway PostgreSQL cluster for this workspace, listening on
127.0.0.1 (a free port) and kept in /tmp/iam-xtask-pg-<hash>/. It trusts all
local connections and runs with fsync=off: for development and tests only.

  start  Start the cluster (or reuse it if it is running), create the `iam`
         database and print its DATABASE_URL, e.g.
           export DATABASE_URL=$(cargo xtask db start)
  url    Print the DATABASE_URL of the running cluster (fails if it is not running)
  stop   Stop the cluster and delete its data

If DATABASE_URL is set, `start` and `url` print it and `stop` does nothing.
";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args = env::args_os()
        .skip(1)
        .map(|arg| {
            arg.into_string()
                .map_err(|arg| anyhow!("argument `{}` is not valid UTF-8", arg.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    if let Some(help_at) = args.iter().position(|arg| matches!(*arg, "-h" | "--help")) {
        return help(&args[..help_at]);
    }
    match args.as_slice() {
        [] => help(&[]),
        ["help", topic @ ..] => help(topic),
        ["dev"] => dev::run_dev(&Workspace::locate()?),
        ["ci"] => ci::run_all(&Workspace::locate()?),
        ["bench", options @ ..] => bench::run_bench(&Workspace::locate()?, options),
        ["reliability", options @ ..] => {
            reliability::run_reliability(&Workspace::locate()?, options)
        }
        ["deploy-check"] => deploy::check(&Workspace::locate()?),
        ["conformance"] => conformance::run_conformance(&Workspace::locate()?),
        ["image", options @ ..] => image::run_image(&Workspace::locate()?, options),
        ["schema"] => schema::regenerate(&Workspace::locate()?),
        ["db", "start"] => db_start(&Workspace::locate()?),
        ["db", "url"] => db_url(&Workspace::locate()?),
        ["db", "stop"] => db_stop(&Workspace::locate()?),
        ["db", ..] => bail!("usage: cargo xtask db <start|url|stop>"),
        _ => bail!(
            "unknown command `{}`; run `cargo xtask --help`",
            args.join(" ")
        ),
    }
}

/// Prints the help for `topic` (the words before `--help`).
fn help(topic: &[&str]) -> Result<()> {
    let text = match topic.first() {
        None => USAGE,
        Some(&"dev") => DEV_HELP,
        Some(&"ci") => CI_HELP,
        Some(&"bench") => BENCH_HELP,
        Some(&"reliability") => RELIABILITY_HELP,
        Some(&"deploy-check") => DEPLOY_CHECK_HELP,
        Some(&"conformance") => CONFORMANCE_HELP,
        Some(&"image") => IMAGE_HELP,
        Some(&"schema") => SCHEMA_HELP,
        Some(&"db") => DB_HELP,
        Some(other) => bail!("unknown command `{other}`; run `cargo xtask --help`"),
    };
    print!("{text}");
    Ok(())
}

/// `cargo xtask db start`: the URL goes to stdout, everything else to stderr.
fn db_start(workspace: &Workspace) -> Result<()> {
    if let Some(url) = database_url_from_env() {
        eprintln!("DATABASE_URL is set; not starting a throwaway PostgreSQL");
        println!("{url}");
        return Ok(());
    }
    let (url, _) = Cluster::for_workspace(workspace)?.start()?;
    println!("{url}");
    Ok(())
}

/// `cargo xtask db url`.
fn db_url(workspace: &Workspace) -> Result<()> {
    if let Some(url) = database_url_from_env() {
        println!("{url}");
        return Ok(());
    }
    match Cluster::for_workspace(workspace)?.running_url()? {
        Some(url) => {
            println!("{url}");
            Ok(())
        }
        None => {
            bail!("the throwaway PostgreSQL is not running; start it with `cargo xtask db start`")
        }
    }
}

/// `cargo xtask db stop`.
fn db_stop(workspace: &Workspace) -> Result<()> {
    if database_url_from_env().is_some() {
        eprintln!("DATABASE_URL is set; there is no throwaway PostgreSQL to stop");
        return Ok(());
    }
    if Cluster::for_workspace(workspace)?.stop()? {
        eprintln!("stopped the throwaway PostgreSQL and deleted its data");
    } else {
        eprintln!("the throwaway PostgreSQL is not running");
    }
    Ok(())
}
