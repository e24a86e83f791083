//! `cargo xtask image [--smoke]`: the container image (`deploy/Dockerfile`), built with podman.
//!
//! 1. `rustup target add x86_64-unknown-linux-musl` if needed, and a static release build of
//!    `iam-server` for it (musl resolves DNS names in an empty image; static glibc cannot);
//! 2. podman, installed with apt if missing (with `runc`), configured by files xtask writes
//!    to `<target>/image/` (`runc`, the `cgroupfs` manager, lowered `nofile`/`nproc` limits,
//!    the `vfs` storage driver, host networking): the defaults do not run in these sandboxes;
//! 3. `podman build` of `deploy/Dockerfile` with only the binary as context, tagged
//!    `localhost/iam-server:<version>`, and a check of its user, entrypoint and size;
//! 4. with `--smoke`: on a scratch database of the throwaway PostgreSQL, reached as
//!    `localhost` (a DNS name), the image runs `migrate`, `directory apply` and `serve` in
//!    production mode; `/readyz` must answer 200, a service account's secret must mint a
//!    token, and `podman stop` (SIGTERM) must end it, exit code 0, within 5 s.

use std::fmt::Write as _;
use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};

use crate::http::{http, json_string};
use crate::postgres::{self, Database, drop_database, scratch_database};
use crate::process::{find_in_path, run, stdout_of};
use crate::workspace::Workspace;

/// The Rust target of the image's binary.
const TARGET: &str = "x86_64-unknown-linux-musl";

/// The C compiler the cc crate uses for [`TARGET`].
const CC_MUSL: &str = "CC_x86_64_unknown_linux_musl";
/// The image's name.
const IMAGE: &str = "localhost/iam-server";
/// The scratch database of the smoke test.
const SMOKE_DATABASE: &str = "iam_image_smoke";
/// The container of the smoke test.
const SMOKE_CONTAINER: &str = "iam-image-smoke";
/// How long `podman stop` may take (SIGTERM, then SIGKILL).
const STOP_WITHIN: Duration = Duration::from_secs(5);
/// How long the served container may take to be ready.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// `cargo xtask image [--smoke]`.
pub fn run_image(workspace: &Workspace, args: &[&str]) -> Result<()> {
    let smoke = match args {
        [] => false,
        ["--smoke"] => true,
        _ => bail!("usage: cargo xtask image [--smoke]"),
    };
    let binary = build_binary(workspace)?;
    let podman = Podman::prepare(workspace)?;
    let tag = format!("{IMAGE}:{}", env!("CARGO_PKG_VERSION"));
    podman.build(workspace, &binary, &tag)?;
    if smoke {
        smoke_test(workspace, &podman, &binary, &tag)?;
    }
    Ok(())
}

/// The static `iam-server` for [`TARGET`].
fn build_binary(workspace: &Workspace) -> Result<PathBuf> {
    if let Some(rustup) = find_in_path("rustup") {
        let installed = stdout_of(Command::new(&rustup).args(["target", "list", "--installed"]))
            .unwrap_or_default();
        if !installed.lines().any(|line| line.trim() == TARGET) {
            println!("    $ rustup target add {TARGET}");
            run(Command::new(&rustup)
                .current_dir(workspace.root())
                .args(["target", "add", TARGET]))?;
        }
    }
    println!("==> building iam-server for {TARGET} (static, release)");
    let mut cargo = workspace.cargo();
    // `ring` (rustls' crypto) compiles C and assembly; the cc crate would look for a
    // `x86_64-linux-musl-gcc` these machines lack. The host gcc builds it: ring's C needs
    // no libc headers, and the Rust side links against musl.
    if std::env::var_os(CC_MUSL).is_none() && find_in_path("x86_64-linux-musl-gcc").is_none() {
        cargo.env(CC_MUSL, "gcc");
    }
    run(cargo.args([
        "build",
        "--release",
        "--locked",
        "--target",
        TARGET,
        "-p",
        "iam-server",
        "--bin",
        "iam-server",
    ]))?;
    Ok(workspace
        .target_dir()
        .join(TARGET)
        .join("release")
        .join("iam-server"))
}

/// podman with the configuration these machines need.
struct Podman {
    program: PathBuf,
    containers_conf: PathBuf,
    storage_conf: PathBuf,
    dir: PathBuf,
}

impl Podman {
    fn prepare(workspace: &Workspace) -> Result<Self> {
        let program = if let Some(program) = find_in_path("podman") {
            program
        } else {
            install_podman()?;
            find_in_path("podman").context("podman is still not on PATH after installing it")?
        };
        let dir = workspace.target_dir().join("image");
        fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
        let containers_conf = dir.join("containers.conf");
        fs::write(
            &containers_conf,
            "# Written by cargo xtask image: what podman needs in these sandboxes.\n\
             [containers]\n\
             default_ulimits = [\"nofile=4096:4096\", \"nproc=4096:4096\"]\n\
             netns = \"host\"\n\
             [engine]\n\
             runtime = \"runc\"\n\
             cgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\n",
        )?;
        let storage_conf = dir.join("storage.conf");
        fs::write(
            &storage_conf,
            format!(
                "# Written by cargo xtask image.\n[storage]\ndriver = \"vfs\"\n\
                 runroot = \"{}\"\ngraphroot = \"{}\"\n",
                dir.join("run").display(),
                dir.join("storage").display()
            ),
        )?;
        Ok(Self {
            program,
            containers_conf,
            storage_conf,
            dir,
        })
    }

    /// `podman <args>` with the configuration.
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.env("CONTAINERS_CONF", &self.containers_conf)
            .env("CONTAINERS_STORAGE_CONF", &self.storage_conf);
        cmd
    }

    /// Builds the image `tag` with only `binary` in the context.
    fn build(&self, workspace: &Workspace, binary: &Path, tag: &str) -> Result<()> {
        let context = self.dir.join("context");
        if context.exists() {
            fs::remove_dir_all(&context)?;
        }
        fs::create_dir_all(&context)?;
        let copy = context.join("iam-server");
        fs::copy(binary, &copy).with_context(|| format!("could not copy {}", binary.display()))?;
        // The release profile keeps line tables for backtraces; the image need not carry them.
        if let Some(strip) = find_in_path("strip") {
            run(Command::new(strip).arg(&copy))?;
        }
        let revision = stdout_of(Command::new("git").current_dir(workspace.root()).args([
            "rev-parse",
            "--short",
            "HEAD",
        ]))
        .map_or_else(|_| "unknown".to_owned(), |rev| rev.trim().to_owned());
        println!("==> podman build {tag}");
        run(self
            .command()
            .arg("build")
            .arg("--file")
            .arg(workspace.path("deploy/Dockerfile"))
            .args(["--tag", tag])
            .args([
                "--build-arg",
                &format!("VERSION={}", env!("CARGO_PKG_VERSION")),
            ])
            .args(["--build-arg", &format!("REVISION={revision}")])
            .arg(&context))?;
        let config = stdout_of(self.command().args([
            "image",
            "inspect",
            "--format",
            "{{.Config.User}} {{json .Config.Entrypoint}} {{.Size}}",
            tag,
        ]))?;
        println!(
            "    image {tag}: user, entrypoint, size = {}",
            config.trim()
        );
        ensure!(
            config.starts_with("65532:65532 [\"/usr/local/bin/iam-server\"]"),
            "the image must run /usr/local/bin/iam-server as 65532:65532, not {config}"
        );
        Ok(())
    }
}

/// `apt-get install podman runc` (needs root, as on CI machines).
fn install_podman() -> Result<()> {
    println!("    installing podman and runc with apt-get (once per machine)");
    let apt = |args: &[&str]| {
        run(Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    apt(&["update", "-qq"]).context("apt-get update failed")?;
    apt(&[
        "install",
        "-y",
        "-qq",
        "--no-install-recommends",
        "podman",
        "runc",
    ])
    .context("could not install podman with apt-get (run as root, or install podman and runc)")
}

/// Runs the image against a real database: migrate, directory apply, serve, a token mint,
/// SIGTERM.
fn smoke_test(workspace: &Workspace, podman: &Podman, binary: &Path, tag: &str) -> Result<()> {
    println!("==> smoke test of {tag}");
    let database = Database::provision(workspace)?;
    let url = scratch_database(database.url(), SMOKE_DATABASE)?;
    // A DNS name, not an address: the static binary must resolve it inside the image.
    let url = url.replacen("@127.0.0.1:", "@localhost:", 1);
    let result = smoke_on(workspace, podman, binary, tag, &url);
    let _ = podman
        .command()
        .args(["rm", "--force", "--ignore", SMOKE_CONTAINER])
        .output();
    if let Err(err) = drop_database(database.url(), SMOKE_DATABASE) {
        eprintln!("warning: {err:#}");
    }
    drop(database);
    result?;
    println!("    smoke test passed");
    Ok(())
}

fn smoke_on(
    workspace: &Workspace,
    podman: &Podman,
    binary: &Path,
    tag: &str,
    url: &str,
) -> Result<()> {
    let port = postgres::free_port()?;
    let issuer = format!("http://localhost:{port}");
    let (keys, admin) = smoke_keys(&podman.dir, binary, &issuer)?;

    let base = |cmd: &mut Command| {
        cmd.args(["--network", "host", "--read-only"])
            .args(["--env", &format!("DATABASE_URL={url}")])
            .args(["--env", "IAM_MODE=production"])
            .args(["--env", "IAM_SIGNING_KEY_FILE=/keys/signing-key.pem"])
            .args(["--env", "IAM_SECRET_PEPPER_FILE=/keys/pepper"])
            .args(["--env", &format!("IAM_ISSUER={issuer}")])
            .args(["--env", &format!("IAM_LISTEN_ADDR=127.0.0.1:{port}")])
            .args(["--volume", &format!("{}:/keys:ro", keys.display())])
            .args([
                "--volume",
                &format!(
                    "{}:/directory:ro",
                    workspace.path("docs/examples").display()
                ),
            ]);
    };
    let mut migrate = podman.command();
    migrate.args(["run", "--rm"]);
    base(&mut migrate);
    run(migrate.args([tag, "migrate"])).context("`iam-server migrate` in the image failed")?;
    let mut apply = podman.command();
    apply.args(["run", "--rm"]);
    base(&mut apply);
    run(apply.args([
        tag,
        "directory",
        "apply",
        "/directory/directory.toml",
        "--actor",
        "image-smoke",
    ]))
    .context("`iam-server directory apply` in the image failed")?;

    let mut serve = podman.command();
    serve.args(["run", "--detach", "--name", SMOKE_CONTAINER]);
    base(&mut serve);
    run(serve.arg(tag)).context("could not start the image")?;
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        if http(&addr, "GET", "/readyz", None, "").is_ok_and(|(status, _)| status == 200) {
            break;
        }
        if Instant::now() >= deadline {
            let logs =
                stdout_of(podman.command().args(["logs", SMOKE_CONTAINER])).unwrap_or_default();
            bail!(
                "the image was not ready within {} s; its log:\n{logs}",
                READY_WITHIN.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("    /readyz: 200");

    mint_through(&addr, &admin)?;
    stop_within(podman)
}

/// Creates a service account with a client secret through the API at `addr` and mints a
/// token with it.
fn mint_through(addr: &str, admin: &str) -> Result<()> {
    let account = r#"{"id":"sa-image-smoke","displayName":"smoke","scope":"organization","scopeId":"org-acme","roles":["admin"]}"#;
    let (status, body) = http(
        addr,
        "POST",
        "/v1/regions/global/iam/service-accounts",
        Some(admin),
        account,
    )?;
    ensure!(
        status == 201,
        "creating a service account: HTTP {status}: {body}"
    );
    let client_id = json_string(&body, "clientId").context("no clientId")?;
    let (status, body) = http(
        addr,
        "POST",
        "/v1/regions/global/iam/service-accounts/sa-image-smoke/credentials",
        Some(admin),
        "",
    )?;
    ensure!(
        status == 201,
        "creating a credential: HTTP {status}: {body}"
    );
    let secret = json_string(&body, "clientSecret").context("no clientSecret")?;
    let mint = format!(
        r#"{{"grant_type":"client_credentials","client_id":"{client_id}","client_secret":"{secret}"}}"#
    );
    let (status, body) = http(addr, "POST", "/v1/regions/global/auth/token", None, &mint)?;
    ensure!(
        status == 200 && json_string(&body, "access_token").is_some(),
        "minting a token: HTTP {status}"
    );
    println!("    token mint: 200 with an access token");

    Ok(())
}

/// `podman stop` (SIGTERM, SIGKILL after 5 s) of the smoke container: it must exit 0 in time.
fn stop_within(podman: &Podman) -> Result<()> {
    let started = Instant::now();
    run(podman.command().args([
        "stop",
        "--time",
        &STOP_WITHIN.as_secs().to_string(),
        SMOKE_CONTAINER,
    ]))?;
    let took = started.elapsed();
    let exit = stdout_of(podman.command().args([
        "inspect",
        "--format",
        "{{.State.ExitCode}}",
        SMOKE_CONTAINER,
    ]))?;
    ensure!(
        exit.trim() == "0" && took < STOP_WITHIN,
        "SIGTERM: exit code {} after {} ms (want 0 within {} s)",
        exit.trim(),
        took.as_millis(),
        STOP_WITHIN.as_secs()
    );
    println!("    SIGTERM: exit code 0 after {} ms", took.as_millis());
    Ok(())
}

/// A signing key and pepper for the smoke test in `<dir>/smoke-keys`, readable by the image's
/// user, and an admin token signed with the key for `issuer`.
fn smoke_keys(dir: &Path, binary: &Path, issuer: &str) -> Result<(PathBuf, String)> {
    // A signing key (generated by the binary itself: development mode writes it) and a
    // pepper, made readable for the image's unprivileged user.
    let keys = dir.join("smoke-keys");
    if keys.exists() {
        fs::remove_dir_all(&keys)?;
    }
    let admin = stdout_of(
        Command::new(binary)
            .args([
                "token",
                "mint",
                "--tenant",
                "org-acme",
                "--sub",
                "image-smoke",
                "--roles",
                "admin",
            ])
            .env("IAM_MODE", "development")
            .env("IAM_DEV_STATE_DIR", &keys)
            .env("IAM_ISSUER", issuer)
            .env("IAM_LOG", "warn"),
    )?
    .trim()
    .to_owned();
    // `token mint` made the key; the pepper (which it does not need) comes from the kernel.
    let mut pepper = [0_u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut pepper))
        .context("could not read /dev/urandom")?;
    let pepper = pepper.iter().fold(String::new(), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    });
    fs::write(keys.join("pepper"), pepper)?;
    for file in ["signing-key.pem", "pepper"] {
        make_world_readable(&keys.join(file))?;
    }
    make_world_readable(&keys)?;

    Ok((keys, admin))
}

fn make_world_readable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = if path.is_dir() { 0o755 } else { 0o644 };
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("could not chmod {}", path.display()))
}
