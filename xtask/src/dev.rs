//! `cargo xtask dev`: a local IAM server with a database, the example directory and an
//! admin token, ready for curl.

use std::env;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::postgres::Database;
use crate::process::{run, stdout_of};
use crate::workspace::Workspace;

/// Where the server keeps development state (signing keys, the admin token), relative to
/// the workspace root.
const STATE_DIR: &str = ".iam-dev";
/// The example directory applied to the development database.
const EXAMPLE_DIRECTORY: &str = "docs/examples/directory.toml";
/// The listen address unless `IAM_LISTEN_ADDR` says otherwise.
const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:8080";

/// Sets everything up, then serves in the foreground until the server exits (Ctrl-C).
pub fn run_dev(workspace: &Workspace) -> Result<()> {
    let database = Database::provision(workspace)?;
    let state_dir = workspace.path(STATE_DIR);
    fs::create_dir_all(&state_dir)
        .with_context(|| format!("could not create {}", state_dir.display()))?;

    run(workspace.cargo().args(["build", "-p", "iam-server"]))?;
    let server = Server {
        binary: workspace.target_dir().join("debug").join("iam-server"),
        workspace,
        database_url: database.url(),
        state_dir: &state_dir,
    };
    run(&mut server.command(["migrate"]))?;
    run(&mut server.command([
        "directory",
        "apply",
        EXAMPLE_DIRECTORY,
        "--actor",
        "xtask-dev",
    ]))?;
    let token = stdout_of(&mut server.command([
        "token",
        "mint",
        "--tenant",
        "org-acme",
        "--sub",
        "alice@acme.example",
        "--roles",
        "admin,compute.deployer,storage.writer,storage.reader",
        "--ttl",
        "12h",
    ]))?;
    let token = token.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        bail!("`iam-server token mint` printed {token:?}, not a single token");
    }
    let token_file = state_dir.join("admin-token");
    write_private(&token_file, token)?;

    let listen_addr = env::var("IAM_LISTEN_ADDR")
        .ok()
        .filter(|addr| !addr.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_LISTEN_ADDR.to_owned());
    print_banner(database.url(), token, &listen_addr, database.started_here());

    let mut serve = server.command(["serve"]);
    serve.env("IAM_LISTEN_ADDR", &listen_addr);
    // `exec` replaces this process, so nothing after it (such as `database`'s Drop) runs:
    // take over stopping a cluster we started. Ctrl-C goes to the whole foreground process
    // group; the server shuts down gracefully on it, while a shell that traps SIGINT waits
    // for the server and then runs `cargo xtask db stop` (this binary, without the
    // server's DATABASE_URL).
    let xtask = env::current_exe().context("could not find the xtask binary")?;
    let err = if database.release() {
        stop_cluster_after(&serve, &xtask).exec()
    } else {
        serve.exec()
    };
    Err(err).context("could not start `iam-server serve`")
}

/// How to invoke the freshly built server binary.
struct Server<'a> {
    binary: PathBuf,
    workspace: &'a Workspace,
    database_url: &'a str,
    state_dir: &'a Path,
}

impl Server<'_> {
    /// `iam-server <args>` in the workspace root, in development mode.
    fn command<const N: usize>(&self, args: [&str; N]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.args(args)
            .current_dir(self.workspace.root())
            .env("DATABASE_URL", self.database_url)
            .env("IAM_MODE", "development")
            .env("IAM_DEV_STATE_DIR", self.state_dir);
        cmd
    }
}

/// Writes `contents` (plus a newline) to `path`, readable by the owner only.
fn write_private(path: &Path, contents: &str) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("could not open {}", path.display()))?;
    writeln!(file, "{contents}").with_context(|| format!("could not write {}", path.display()))
}

/// Tells the developer how to talk to the server.
fn print_banner(database_url: &str, token: &str, listen_addr: &str, stops_database: bool) {
    let base_url = match listen_addr.strip_prefix("0.0.0.0:") {
        Some(port) => format!("http://127.0.0.1:{port}"),
        None => format!("http://{listen_addr}"),
    };
    println!();
    println!("IAM dev environment is ready.");
    println!();
    println!("  DATABASE_URL  {database_url}");
    println!("  server        {base_url}");
    println!(
        "  admin token   alice@acme.example in org-acme (12h), saved to {STATE_DIR}/admin-token"
    );
    println!();
    println!("In another shell:");
    println!();
    println!("  export TOKEN={token}");
    println!(
        "  curl -s -H \"Authorization: Bearer $TOKEN\" {base_url}/v1/regions/global/iam/service-accounts"
    );
    println!();
    let and_database = if stops_database {
        " (and the throwaway database)"
    } else {
        ""
    };
    println!("Starting iam-server on {listen_addr}; Ctrl-C stops it{and_database}.");
    println!();
}

/// A command running `serve` under a shell that survives Ctrl-C (it traps SIGINT, so it
/// waits for the server to exit) and then stops the throwaway cluster via `xtask db stop`,
/// passing on the server's exit status.
fn stop_cluster_after(serve: &Command, xtask: &Path) -> Command {
    const SCRIPT: &str = r#"xtask=$1
shift
trap ':' INT
"$@"
status=$?
unset DATABASE_URL
"$xtask" db stop
exit "$status""#;
    let mut cmd = Command::new("sh");
    cmd.args(["-c", SCRIPT, "iam-xtask-dev"])
        .arg(xtask)
        .arg(serve.get_program())
        .args(serve.get_args());
    if let Some(dir) = serve.get_current_dir() {
        cmd.current_dir(dir);
    }
    for (key, value) in serve.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    cmd
}
