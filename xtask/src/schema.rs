//! The Diesel schema file (`crates/iam-postgres/src/schema.rs`) and its drift check.
//!
//! Both `cargo xtask schema` and the CI check migrate a fresh database with the server's
//! own migrations (`iam-server migrate`) and ask `diesel print-schema` (configured by the
//! workspace's `diesel.toml`) what the schema file should say.

use std::fs;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

use crate::postgres::{self, Database};
use crate::process::{self, run, stdout_of};
use crate::workspace::Workspace;

/// The generated schema file, relative to the workspace root.
pub const SCHEMA_FILE: &str = "crates/iam-postgres/src/schema.rs";
/// The scratch database migrated to generate the schema.
const SCRATCH_DATABASE: &str = "iam_schema_check";
/// The `diesel_cli` versions accepted, and the cache folder they are installed in.
const DIESEL_CLI_VERSION: &str = "2.3.*";
const DIESEL_CLI_DIR: &str = "diesel_cli-2.3";

/// `cargo xtask schema`: regenerates the schema file.
pub fn regenerate(workspace: &Workspace) -> Result<()> {
    let database = Database::provision(workspace)?;
    let generated = generate(workspace, database.url())?;
    let path = workspace.path(SCHEMA_FILE);
    let current = fs::read_to_string(&path).unwrap_or_default();
    if current == generated {
        println!("{SCHEMA_FILE} is up to date");
    } else {
        fs::write(&path, generated).with_context(|| format!("could not write {SCHEMA_FILE}"))?;
        println!("regenerated {SCHEMA_FILE}");
    }
    Ok(())
}

/// Fails (after printing a unified diff) if the schema file doesn't match the migrations.
pub fn check(workspace: &Workspace, server_url: &str) -> Result<()> {
    let generated = generate(workspace, server_url)?;
    let path = workspace.path(SCHEMA_FILE);
    let current = fs::read(&path).with_context(|| format!("could not read {}", path.display()))?;
    if current == generated.as_bytes() {
        return Ok(());
    }
    print_diff(workspace, &generated)?;
    bail!("{SCHEMA_FILE} does not match the migrations; run `cargo xtask schema` to regenerate it")
}

/// Migrates a fresh scratch database on the server at `server_url` and returns what
/// `diesel print-schema` prints for it. The scratch database is dropped afterwards.
fn generate(workspace: &Workspace, server_url: &str) -> Result<String> {
    let diesel = diesel_cli(workspace)?;
    let url = postgres::with_database(server_url, SCRATCH_DATABASE)?;
    postgres::psql(
        server_url,
        &format!("DROP DATABASE IF EXISTS \"{SCRATCH_DATABASE}\" WITH (FORCE)"),
    )?;
    postgres::psql(
        server_url,
        &format!("CREATE DATABASE \"{SCRATCH_DATABASE}\""),
    )?;

    let generated = (|| {
        let mut migrate = workspace.cargo();
        migrate
            .args(["run", "--quiet", "-p", "iam-server", "--", "migrate"])
            .env("DATABASE_URL", &url);
        run(&mut migrate).context("could not migrate the scratch database")?;

        let mut print_schema = Command::new(&diesel);
        print_schema
            .args(["print-schema", "--database-url", &url])
            .current_dir(workspace.root());
        stdout_of(&mut print_schema)
    })();

    let dropped = postgres::psql(
        server_url,
        &format!("DROP DATABASE IF EXISTS \"{SCRATCH_DATABASE}\" WITH (FORCE)"),
    );
    if let Err(err) = dropped {
        eprintln!("warning: could not drop the scratch database: {err:#}");
    }
    generated
}

/// Prints `diff -u` between the schema file and `generated`.
fn print_diff(workspace: &Workspace, generated: &str) -> Result<()> {
    let mut diff = Command::new("diff");
    diff.args([
        "-u",
        "--label",
        SCHEMA_FILE,
        "--label",
        "diesel print-schema",
    ])
    .arg(workspace.path(SCHEMA_FILE))
    .arg("-")
    .stdin(Stdio::piped());
    let mut child = diff
        .spawn()
        .with_context(|| format!("failed to start `{}`", process::display(&diff)))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(generated.as_bytes())
            .context("could not feed the generated schema to diff")?;
    }
    let status = child.wait()?;
    // diff exits with 1 when the files differ, which is what we expect here.
    if status.code() == Some(1) {
        Ok(())
    } else {
        bail!("`{}` failed ({status})", process::display(&diff))
    }
}

/// The `diesel` binary in the tool cache ([`Workspace::tool_cache`]), installed on first use.
fn diesel_cli(workspace: &Workspace) -> Result<PathBuf> {
    let tools = workspace.tool_cache().join(DIESEL_CLI_DIR);
    let diesel = tools.join("bin").join("diesel");
    if diesel.is_file() {
        return Ok(diesel);
    }
    eprintln!(
        "installing diesel_cli into {} (once per machine; this takes a few minutes)",
        tools.display()
    );
    let mut install = workspace.cargo();
    install
        .args(["install", "diesel_cli", "--version", DIESEL_CLI_VERSION])
        .args([
            "--no-default-features",
            "--features",
            "postgres",
            "--locked",
        ])
        .arg("--root")
        .arg(&tools);
    run(&mut install).context("could not install diesel_cli")?;
    Ok(diesel)
}
