//! `cargo xtask conformance`: the served `OpenAPI` document against the server, with tools
//! that trust it. On a scratch database of the throwaway PostgreSQL (or `DATABASE_URL`'s
//! server), xtask starts the release `iam-server` (migrated, the example directory applied,
//! an admin token of org-acme holding every role of its catalog), fetches `/openapi.json`,
//! and runs, from a virtualenv in the tool cache (pinned, installed on first use):
//!
//! 1. `openapi-spec-validator` on the document;
//! 2. schemathesis with every check (`--checks all`) in every phase (examples, coverage,
//!    fuzzing, stateful), a fixed seed so a run can be repeated, and the exceptions of the
//!    root `schemathesis.toml` (each a rule OpenAPI cannot express, citing its contract line).
//!
//! Any failure fails the task.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::http::http;
use crate::postgres::{self, Database, drop_database, scratch_database};
use crate::process::{find_in_path, run, stdout_of};
use crate::workspace::Workspace;

/// The tools, pinned, and their virtualenv in the tool cache.
const TOOLS: [&str; 2] = ["schemathesis==4.32.5", "openapi-spec-validator==0.9.0"];
const TOOLS_DIR: &str = "conformance-schemathesis-4.32.5";
/// The scratch database.
const DATABASE: &str = "iam_conformance";
/// Examples per operation and phase, and the seed of the generated data.
const MAX_EXAMPLES: &str = "100";
const SEED: &str = "20261202";
/// The example directory's organization and every role of its catalog.
const TENANT: &str = "org-acme";
const ROLES: &str = "admin,compute.deployer,storage.writer,storage.reader";

/// `cargo xtask conformance`.
pub fn run_conformance(workspace: &Workspace) -> Result<()> {
    let tools = tools(workspace)?;
    println!("==> building iam-server in release");
    run(workspace.cargo().args([
        "build",
        "--release",
        "--locked",
        "-p",
        "iam-server",
        "--bin",
        "iam-server",
    ]))?;
    let database = Database::provision(workspace)?;
    let url = scratch_database(database.url(), DATABASE)?;
    let result = check(workspace, &tools, &url);
    if let Err(err) = drop_database(database.url(), DATABASE) {
        eprintln!("warning: {err:#}");
    }
    drop(database);
    result
}

fn check(workspace: &Workspace, tools: &Path, url: &str) -> Result<()> {
    let work = workspace.target_dir().join("conformance");
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    fs::create_dir_all(&work)?;
    let port = postgres::free_port()?;
    let server = workspace.target_dir().join("release").join("iam-server");
    let command = |args: &[&str]| {
        let mut cmd = Command::new(&server);
        cmd.args(args)
            .env("DATABASE_URL", url)
            .env("IAM_MODE", "development")
            .env("IAM_DEV_STATE_DIR", work.join("state"))
            .env("IAM_LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("IAM_LOG", "warn");
        cmd
    };
    run(&mut command(&["migrate"]))?;
    let directory = workspace.path("docs/examples/directory.toml");
    let directory = directory.display().to_string();
    run(&mut command(&[
        "directory",
        "apply",
        &directory,
        "--actor",
        "xtask-conformance",
    ]))?;
    let token = stdout_of(&mut command(&[
        "token",
        "mint",
        "--tenant",
        TENANT,
        "--sub",
        "conformance",
        "--roles",
        ROLES,
    ]))?
    .trim()
    .to_owned();

    let log = work.join("serve.log");
    let mut serving = Serving(
        command(&["serve"])
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log)?)
            .stderr(fs::File::create(&log)?)
            .spawn()
            .context("could not start iam-server")?,
    );
    let addr = format!("127.0.0.1:{port}");
    wait_ready(&addr, &mut serving.0, &log)?;

    let (status, document) = http(&addr, "GET", "/openapi.json", None, "")?;
    if status != 200 {
        bail!("GET /openapi.json answered {status}");
    }
    let document_file = work.join("openapi.json");
    fs::write(&document_file, document)?;
    println!("==> openapi-spec-validator");
    run(Command::new(tools.join("bin").join("openapi-spec-validator")).arg(&document_file))?;

    println!("==> schemathesis (all checks; examples, coverage, fuzzing, stateful)");
    run(Command::new(tools.join("bin").join("schemathesis"))
        .current_dir(&work)
        .env("SCHEMATHESIS_HOOKS", "")
        .arg("--config-file")
        .arg(workspace.path("schemathesis.toml"))
        .arg("run")
        .arg(format!("http://{addr}/openapi.json"))
        .args(["--checks", "all"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args([
            "--max-examples",
            MAX_EXAMPLES,
            "--seed",
            SEED,
            "--workers",
            "1",
        ])
        .args(["--report", "junit", "--report-dir"])
        .arg(work.join("report")))
    .context("schemathesis found failures (its report is in <target>/conformance/report)")?;
    Ok(())
}

/// The server process, killed when dropped.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_ready(addr: &str, child: &mut Child, log: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if http(addr, "GET", "/readyz", None, "").is_ok_and(|(status, _)| status == 200) {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "iam-server exited ({status}); its log:\n{}",
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        if Instant::now() >= deadline {
            bail!("iam-server was not ready within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The virtualenv with the pinned tools, installed if needed.
fn tools(workspace: &Workspace) -> Result<PathBuf> {
    let venv = workspace.tool_cache().join(TOOLS_DIR);
    if venv.join("bin").join("schemathesis").is_file()
        && venv.join("bin").join("openapi-spec-validator").is_file()
    {
        return Ok(venv);
    }
    let python = find_in_path("python3").context("python3 not found (it runs schemathesis)")?;
    println!(
        "    installing {} into {} (once per machine)",
        TOOLS.join(", "),
        venv.display()
    );
    if venv.exists() {
        fs::remove_dir_all(&venv)?;
    }
    run(Command::new(python).args(["-m", "venv"]).arg(&venv))?;
    run(Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(TOOLS))
    .context("could not install schemathesis")?;
    Ok(venv)
}
