//! `cargo xtask ci`: the checks CI runs, in fastest-to-fail order.

use std::collections::BTreeSet;
use std::fmt::Display;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::postgres::Database;
use crate::process::{self, run, stdout_of};
use crate::workspace::Workspace;
use crate::{conformance, deny, deploy, image, reliability, schema};

/// Crates the domain crate must not depend on (it stays free of infrastructure).
const FORBIDDEN_IN_DOMAIN: [&str; 6] = ["diesel", "actix", "tokio", "deadpool", "reqwest", "hyper"];

/// Runs every check, stopping at the first failure. A throwaway cluster started here is
/// stopped again whatever happens.
pub fn run_all(workspace: &Workspace) -> Result<()> {
    let started = Instant::now();
    step("fmt", || {
        run(echo(
            workspace.cargo().args(["fmt", "--all", "--", "--check"]),
        ))
    })?;
    step("dependency rule", || domain_dependency_rule(workspace))?;
    step("clippy", || {
        let mut clippy = workspace.cargo();
        clippy.args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ]);
        run(echo(&mut clippy))
    })?;
    step("docs", || {
        let mut doc = workspace.cargo();
        doc.args([
            "doc",
            "--workspace",
            "--no-deps",
            "--all-features",
            "--locked",
        ])
        .env("RUSTDOCFLAGS", "-D warnings");
        run(echo(&mut doc))
    })?;
    step("supply chain", || deny::check(workspace))?;
    step("deploy check", || deploy::check(workspace))?;
    let database = step("postgres", || Database::provision(workspace))?;
    step("schema drift", || schema::check(workspace, database.url()))?;
    step("test", || {
        let mut test = workspace.cargo();
        test.args(["test", "--workspace", "--locked"])
            .env("DATABASE_URL", database.url());
        run(echo(&mut test))
    })?;
    step("reliability (fast)", || {
        reliability::build(workspace)?;
        reliability::run_on(workspace, &database, &["--fast"])
    })?;
    step("conformance", || conformance::run_conformance(workspace))?;
    step("image (smoke)", || {
        image::run_image(workspace, &["--smoke"])
    })?;
    drop(database);
    println!("==> ci passed in {}", Seconds(started.elapsed()));
    Ok(())
}

/// Runs one named step between a header line and a timing line.
fn step<T>(name: &str, body: impl FnOnce() -> Result<T>) -> Result<T> {
    println!("==> {name}");
    let started = Instant::now();
    let result = body();
    let elapsed = Seconds(started.elapsed());
    match result {
        Ok(value) => {
            println!("    {name} ok ({elapsed})");
            Ok(value)
        }
        Err(err) => {
            println!("    {name} FAILED ({elapsed})");
            Err(err.context(format!("ci step `{name}` failed")))
        }
    }
}

/// Prints the command line about to run (and hands the command back).
fn echo(cmd: &mut Command) -> &mut Command {
    println!("    $ {}", process::display_short(cmd));
    cmd
}

/// `iam-domain` must not (even transitively) depend on infrastructure crates.
fn domain_dependency_rule(workspace: &Workspace) -> Result<()> {
    let mut tree = workspace.cargo();
    tree.args([
        "tree",
        "-p",
        "iam-domain",
        "--edges",
        "normal,build",
        "--prefix",
        "none",
    ])
    .arg("--locked");
    let tree = stdout_of(echo(&mut tree))?;
    let offending: BTreeSet<&str> = tree
        .lines()
        .map(str::trim)
        .filter(|line| {
            let name = line.split_whitespace().next().unwrap_or_default();
            FORBIDDEN_IN_DOMAIN
                .iter()
                .any(|prefix| name.starts_with(prefix))
        })
        .collect();
    if offending.is_empty() {
        return Ok(());
    }
    let mut lines = String::new();
    for line in offending {
        lines.push_str("\n    ");
        lines.push_str(line);
    }
    bail!(
        "iam-domain must not depend on {} crates, but its dependency tree has:{lines}",
        FORBIDDEN_IN_DOMAIN.join("/")
    )
}

/// A duration shown as seconds with one decimal, e.g. `12.3s`.
struct Seconds(Duration);

impl Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1}s", self.0.as_secs_f64())
    }
}
