//! `cargo xtask reliability`: prepares what the fault scenarios need and runs the
//! `iam-reliability` harness (`crates/iam-harness`), which checks SPEC §7's promises against
//! real `iam-server` processes.
//!
//! Here: build `iam-server` and the harness in release, provision PostgreSQL (the throwaway
//! cluster unless `DATABASE_URL` is set) with the scratch database `iam_reliability`, write the
//! script that stops and starts the throwaway cluster (the restart scenario needs it; with
//! `DATABASE_URL` that scenario fails and says why), run the harness, and clean up.

use std::fs;

use anyhow::{Context as _, Result};

use crate::postgres::{self, Database, drop_database, scratch_database};
use crate::process::run;
use crate::workspace::Workspace;

/// The example directory applied to the scratch database.
const EXAMPLE_DIRECTORY: &str = "docs/examples/directory.toml";
/// The scratch database the servers run on.
const DATABASE: &str = "iam_reliability";

/// `cargo xtask reliability [--fast] [--soak MINUTES] [--only NAMES]`, on a database of its own.
pub fn run_reliability(workspace: &Workspace, args: &[&str]) -> Result<()> {
    build(workspace)?;
    let database = Database::provision(workspace)?;
    let result = run_on(workspace, &database, args);
    drop(database);
    result
}

/// Builds the release server and harness.
pub fn build(workspace: &Workspace) -> Result<()> {
    eprintln!("==> building iam-server and iam-reliability in release");
    run(workspace.cargo().args([
        "build",
        "--release",
        "--locked",
        "-p",
        "iam-server",
        "--bin",
        "iam-server",
        "-p",
        "iam-harness",
        "--bin",
        "iam-reliability",
    ]))
}

/// Runs the harness (already built) on `database`.
pub fn run_on(workspace: &Workspace, database: &Database, args: &[&str]) -> Result<()> {
    let release = workspace.target_dir().join("release");
    let work_dir = workspace.target_dir().join("reliability");
    if work_dir.exists() {
        fs::remove_dir_all(&work_dir)
            .with_context(|| format!("could not remove {}", work_dir.display()))?;
    }
    fs::create_dir_all(&work_dir)
        .with_context(|| format!("could not create {}", work_dir.display()))?;
    let url = scratch_database(database.url(), DATABASE)?;

    let mut harness = std::process::Command::new(release.join("iam-reliability"));
    harness
        .current_dir(workspace.root())
        .arg("--server-bin")
        .arg(release.join("iam-server"))
        .args(["--database-url", &url])
        .arg("--psql")
        .arg(postgres::client_program("psql"))
        .arg("--directory")
        .arg(workspace.path(EXAMPLE_DIRECTORY))
        .arg("--work-dir")
        .arg(&work_dir);
    if let Some(cluster) = database.cluster() {
        let script = work_dir.join("pg-ctl.sh");
        fs::write(&script, cluster.control_script()?)
            .with_context(|| format!("could not write {}", script.display()))?;
        harness.arg("--pg-ctl").arg(&script);
    }
    harness.args(args);
    let result = run(&mut harness);
    if let Err(err) = drop_database(database.url(), DATABASE) {
        eprintln!("warning: {err:#}");
    }
    result
}
