//! `cargo xtask bench`: prepares what the benchmark needs and runs the `iam-bench` harness
//! (`crates/iam-harness`), which measures `iam-server` next to `pgbench -S` (SPEC §7).
//!
//! Here: build `iam-server` and `iam-bench` in release, provision PostgreSQL (the throwaway
//! cluster unless `DATABASE_URL` is set) with two scratch databases — `iam_bench` for the
//! server, `iam_pgbench` for pgbench — find `pgbench`, run the harness, and clean up.

use std::env;
use std::fs;
use std::path::PathBuf;

use anyhow::{Context as _, Result};

use crate::postgres::{self, Database, drop_database, scratch_database};
use crate::process::{find_in_path, run};
use crate::workspace::Workspace;

/// The example directory applied to the server's database.
const EXAMPLE_DIRECTORY: &str = "docs/examples/directory.toml";
/// The scratch database the server runs on.
const SERVER_DATABASE: &str = "iam_bench";
/// The scratch database pgbench runs on.
const PGBENCH_DATABASE: &str = "iam_pgbench";

/// `cargo xtask bench [--clients N[,N…]] [--seconds S]`.
pub fn run_bench(workspace: &Workspace, args: &[&str]) -> Result<()> {
    let pgbench = pgbench_program()?;
    eprintln!("==> building iam-server and iam-bench in release");
    run(workspace.cargo().args([
        "build",
        "--release",
        "-p",
        "iam-server",
        "-p",
        "iam-harness",
        "--bin",
        "iam-bench",
    ]))?;
    let release = workspace.target_dir().join("release");

    let database = Database::provision(workspace)?;
    let server_url = scratch_database(database.url(), SERVER_DATABASE)?;
    let pgbench_url = scratch_database(database.url(), PGBENCH_DATABASE)?;
    let work_dir = workspace.target_dir().join("bench");
    if work_dir.exists() {
        fs::remove_dir_all(&work_dir)
            .with_context(|| format!("could not remove {}", work_dir.display()))?;
    }
    fs::create_dir_all(&work_dir)
        .with_context(|| format!("could not create {}", work_dir.display()))?;
    let pool_size = env::var("IAM_DB_MAX_CONNECTIONS")
        .ok()
        .filter(|size| !size.trim().is_empty())
        .unwrap_or_else(|| pool_size(args));

    let mut bench = std::process::Command::new(release.join("iam-bench"));
    bench
        .current_dir(workspace.root())
        .arg("--server-bin")
        .arg(release.join("iam-server"))
        .args(["--server-database-url", &server_url])
        .arg("--pgbench")
        .arg(&pgbench)
        .args(["--pgbench-database-url", &pgbench_url])
        .arg("--directory")
        .arg(workspace.path(EXAMPLE_DIRECTORY))
        .arg("--work-dir")
        .arg(&work_dir)
        .args(["--pool-size", &pool_size])
        .args(args);
    let result = run(&mut bench);

    for name in [SERVER_DATABASE, PGBENCH_DATABASE] {
        if let Err(err) = drop_database(database.url(), name) {
            eprintln!("warning: {err:#}");
        }
    }
    drop(database);
    result
}

/// The server's connections (`IAM_DB_MAX_CONNECTIONS`) for the most clients the harness will
/// use (`--clients N[,N…]`; its default is 8 and 16): twice that plus one, so that no run
/// waits for a connection however the clients fall on the HTTP workers, each of which has
/// its own share of the connections (docs/OPERATIONS.md).
fn pool_size(args: &[&str]) -> String {
    let mut args = args.iter();
    let mut given = None;
    while let Some(arg) = args.next() {
        if let Some(value) = arg.strip_prefix("--clients=") {
            given = Some(value);
        } else if *arg == "--clients" {
            given = args.next().copied();
        }
    }
    given
        .and_then(|list| {
            list.split(',')
                .filter_map(|n| n.trim().parse::<u32>().ok())
                .max()
        })
        .map_or(33, |clients| clients.saturating_mul(2).saturating_add(1))
        .to_string()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_follows_the_largest_client_count() {
        assert_eq!(pool_size(&[]), "33");
        assert_eq!(pool_size(&["--clients", "8"]), "17");
        assert_eq!(pool_size(&["--seconds", "3", "--clients=4"]), "9");
        assert_eq!(pool_size(&["--clients", "8,32,16"]), "65");
    }
}
