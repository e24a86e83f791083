//! `cargo deny check licenses bans sources` (supply chain, SPEC §8) with a pinned cargo-deny,
//! installed on first use into the tool cache, outside the clone. The advisory database is
//! not checked: it cannot be fetched on the project's machines.

use std::path::PathBuf;

use anyhow::{Context as _, Result};

use crate::process::run;
use crate::workspace::Workspace;

/// The cargo-deny release used, and its folder in the tool cache.
const CARGO_DENY_VERSION: &str = "0.20.2";
const CARGO_DENY_DIR: &str = "cargo-deny-0.20.2";

/// Checks the dependency graph against `deny.toml`.
pub fn check(workspace: &Workspace) -> Result<()> {
    let cargo_deny = cargo_deny(workspace)?;
    run(std::process::Command::new(cargo_deny)
        .current_dir(workspace.root())
        .args([
            "--log-level",
            "error",
            "check",
            "licenses",
            "bans",
            "sources",
        ]))
    .context("cargo deny found a license, ban or source deny.toml does not allow")
}

/// The `cargo-deny` binary, installed if needed.
fn cargo_deny(workspace: &Workspace) -> Result<PathBuf> {
    let root = workspace.tool_cache().join(CARGO_DENY_DIR);
    let program = root.join("bin").join("cargo-deny");
    if program.is_file() {
        return Ok(program);
    }
    eprintln!(
        "installing cargo-deny {CARGO_DENY_VERSION} into {} (once per machine; this takes a few \
         minutes)",
        root.display()
    );
    run(workspace
        .cargo()
        .args([
            "install",
            "cargo-deny",
            "--version",
            CARGO_DENY_VERSION,
            "--locked",
        ])
        .arg("--root")
        .arg(&root))
    .context("could not install cargo-deny")?;
    Ok(program)
}
