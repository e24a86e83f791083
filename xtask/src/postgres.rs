//! A throwaway Postgres cluster for development and CI.
//!
//! The cluster lives in `/tmp/iam-xtask-pg-<hash of the workspace path>/` (so two clones
//! don't collide): `data/` is the data directory (its unix socket lives there too) and
//! `postgres.log` the server log. The TCP port is picked freshly at every start and read
//! back from `data/postmaster.pid`. It listens on 127.0.0.1 only, trusts every local
//! connection and runs with `fsync=off`: it is for tests, never for data you want to keep.
//!
//! `initdb` and `pg_ctl` refuse to run as root, so when we are root they run as the
//! `postgres` system user (via `runuser`, else `su`), which then owns the state directory.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail, ensure};

use crate::process::{self, find_in_path, run_quiet, run_to_stderr, shell_quote};
use crate::workspace::{self, Workspace};

/// The database created in the cluster for the application.
pub const DATABASE: &str = "iam";
/// The cluster's superuser (and, when we are root, the system user that owns the cluster).
const SUPERUSER: &str = "postgres";
/// Attempts at starting the server, in case another process grabs the port we picked.
const START_ATTEMPTS: u32 = 3;

/// Settings appended to `postgresql.conf` after `initdb`: fast, local-only, roomy.
const SETTINGS: &str = "
# Added by `cargo xtask`: a throwaway cluster for development and tests.
listen_addresses = '127.0.0.1'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
";

/// The throwaway cluster of one workspace.
#[derive(Debug)]
pub struct Cluster {
    state_dir: PathBuf,
    tools: Tools,
}

impl Cluster {
    /// The cluster belonging to `workspace` (whether or not it exists yet).
    pub fn for_workspace(workspace: &Workspace) -> Result<Self> {
        let hash = fnv1a(workspace.root().as_os_str().as_encoded_bytes());
        Ok(Self {
            state_dir: PathBuf::from(format!("/tmp/iam-xtask-pg-{:012x}", hash >> 16)),
            tools: Tools::detect()?,
        })
    }

    fn data_dir(&self) -> PathBuf {
        self.state_dir.join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.state_dir.join("postgres.log")
    }

    /// The `DATABASE_URL` of the running cluster, or `None` if it isn't running.
    pub fn running_url(&self) -> Result<Option<String>> {
        if !self.is_running()? {
            return Ok(None);
        }
        Ok(Some(url(self.port()?, DATABASE)))
    }

    /// Starts the cluster unless it is already running and makes sure the application
    /// database exists. Returns its `DATABASE_URL` and whether this call started it.
    pub fn start(&self) -> Result<(String, bool)> {
        let started = if self.is_running()? {
            eprintln!(
                "reusing the running throwaway PostgreSQL in {}",
                self.state_dir.display()
            );
            false
        } else {
            if !self.data_dir().join("PG_VERSION").is_file() {
                self.init()?;
            }
            self.launch()?;
            true
        };
        let url = url(self.port()?, DATABASE);
        ensure_database(&url)?;
        Ok((url, started))
    }

    /// Stops the cluster and deletes its directory. Returns whether there was one.
    pub fn stop(&self) -> Result<bool> {
        if !self.state_dir.exists() {
            return Ok(false);
        }
        if self.is_running()? {
            run_to_stderr(self.pg_ctl_stop().current_dir(&self.state_dir))
                .context("could not stop the throwaway PostgreSQL")?;
        }
        fs::remove_dir_all(&self.state_dir)
            .with_context(|| format!("could not remove {}", self.state_dir.display()))?;
        Ok(true)
    }

    /// A shell script that stops (`sh SCRIPT stop`: `pg_ctl stop -m fast`) and starts
    /// (`sh SCRIPT start`, on the same port) the running cluster, as its owner: for
    /// `cargo xtask reliability`, which restarts PostgreSQL under load.
    pub fn control_script(&self) -> Result<String> {
        let line = |cmd: Command| {
            let mut line = shell_quote(cmd.get_program());
            for arg in cmd.get_args() {
                line.push(' ');
                line.push_str(&shell_quote(arg));
            }
            line
        };
        let stop = line(self.pg_ctl_stop());
        let start = line(self.pg_ctl_start(self.port()?));
        Ok(format!(
            "#!/bin/sh\n# Written by cargo xtask reliability: stops or starts the throwaway PostgreSQL.\n\
             set -e\ncd {}\ncase \"$1\" in\n  stop) {stop} ;;\n  start) {start} ;;\n  \
             *) echo \"usage: $0 stop|start\" >&2; exit 2 ;;\nesac\n",
            shell_quote(self.state_dir.as_os_str())
        ))
    }

    /// `pg_ctl stop --mode=fast` of the cluster, as its owner.
    fn pg_ctl_stop(&self) -> Command {
        let data_dir = self.data_dir();
        self.tools.as_owner(
            "pg_ctl",
            [
                "stop".as_ref(),
                "--silent".as_ref(),
                "--wait".as_ref(),
                "--mode=fast".as_ref(),
                "-D".as_ref(),
                data_dir.as_os_str(),
            ],
        )
    }

    /// `pg_ctl start` of the cluster on `port`, logging to its log file, as its owner.
    fn pg_ctl_start(&self, port: u16) -> Command {
        let (data_dir, log_file) = (self.data_dir(), self.log_file());
        let port_option = OsString::from(format!("-p {port}"));
        self.tools.as_owner(
            "pg_ctl",
            [
                "start".as_ref(),
                "--silent".as_ref(),
                "--wait".as_ref(),
                "--timeout=60".as_ref(),
                "-D".as_ref(),
                data_dir.as_os_str(),
                "-l".as_ref(),
                log_file.as_os_str(),
                "-o".as_ref(),
                port_option.as_os_str(),
            ],
        )
    }

    /// Whether a postmaster is running on our data directory (`pg_ctl status`).
    fn is_running(&self) -> Result<bool> {
        let data_dir = self.data_dir();
        if !data_dir.join("postmaster.pid").is_file() {
            return Ok(false);
        }
        let mut pg_ctl = self.tools.as_owner(
            "pg_ctl",
            ["status".as_ref(), "-D".as_ref(), data_dir.as_os_str()],
        );
        let cmd = pg_ctl
            .current_dir(&self.state_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let status = cmd
            .status()
            .with_context(|| format!("failed to start `{}`", process::display(cmd)))?;
        // 0: running; 3: not running; 4: no (accessible) data directory.
        match status.code() {
            Some(0) => Ok(true),
            Some(3 | 4) => Ok(false),
            _ => bail!("`{}` failed ({status})", process::display(cmd)),
        }
    }

    /// The port of the running server, from line 4 of `postmaster.pid`.
    fn port(&self) -> Result<u16> {
        let pid_file = self.data_dir().join("postmaster.pid");
        let contents = fs::read_to_string(&pid_file)
            .with_context(|| format!("could not read {}", pid_file.display()))?;
        contents
            .lines()
            .nth(3)
            .and_then(|line| line.trim().parse().ok())
            .with_context(|| format!("no port in {}", pid_file.display()))
    }

    /// Creates a fresh data directory (removing any half-made state first).
    fn init(&self) -> Result<()> {
        eprintln!(
            "creating a throwaway PostgreSQL cluster in {}",
            self.state_dir.display()
        );
        if self.state_dir.exists() {
            fs::remove_dir_all(&self.state_dir)
                .with_context(|| format!("could not remove {}", self.state_dir.display()))?;
        }
        fs::create_dir_all(&self.state_dir)
            .with_context(|| format!("could not create {}", self.state_dir.display()))?;
        self.tools.hand_over(&self.state_dir)?;

        let data_dir = self.data_dir();
        let mut initdb = self.tools.as_owner(
            "initdb",
            [
                "-D".as_ref(),
                data_dir.as_os_str(),
                "-U".as_ref(),
                SUPERUSER.as_ref(),
                "--auth=trust".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        run_quiet(initdb.current_dir(&self.state_dir))?;

        let conf = data_dir.join("postgresql.conf");
        let mut settings = SETTINGS.to_owned();
        let socket_dir = data_dir.to_string_lossy().replace('\'', "''");
        writeln!(settings, "unix_socket_directories = '{socket_dir}'")?;
        let mut contents = fs::read_to_string(&conf)
            .with_context(|| format!("could not read {}", conf.display()))?;
        contents.push_str(&settings);
        fs::write(&conf, contents).with_context(|| format!("could not write {}", conf.display()))
    }

    /// Starts the server on a free port, retrying if the port got taken meanwhile.
    fn launch(&self) -> Result<()> {
        let log_file = self.log_file();
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port()?;
            let log_start = fs::metadata(&log_file).map_or(0, |meta| meta.len());
            if run_to_stderr(self.pg_ctl_start(port).current_dir(&self.state_dir)).is_ok() {
                return Ok(());
            }
            let log = read_from(&log_file, log_start).unwrap_or_default();
            if attempt < START_ATTEMPTS && log.contains("already in use") {
                eprintln!("port {port} was taken meanwhile; trying another one");
                continue;
            }
            bail!(
                "could not start the throwaway PostgreSQL; server log ({}):\n{log}",
                log_file.display()
            );
        }
        bail!("could not start the throwaway PostgreSQL after {START_ATTEMPTS} attempts")
    }
}

/// A database server for ci/dev: `DATABASE_URL` if set, else the workspace's throwaway
/// cluster. A cluster started here is stopped (and deleted) on drop, also on failure.
#[derive(Debug)]
pub struct Database {
    url: String,
    started: Option<Cluster>,
    /// The throwaway cluster (started here or reused); `None` with `DATABASE_URL`.
    cluster: Option<Cluster>,
}

impl Database {
    /// Uses `DATABASE_URL`, or starts (or reuses) the workspace's throwaway cluster.
    pub fn provision(workspace: &Workspace) -> Result<Self> {
        if let Some(url) = workspace::database_url_from_env() {
            eprintln!("using DATABASE_URL from the environment");
            return Ok(Self {
                url,
                started: None,
                cluster: None,
            });
        }
        let cluster = Cluster::for_workspace(workspace)?;
        let (url, started) = cluster.start()?;
        Ok(Self {
            url,
            started: started.then_some(cluster),
            cluster: Some(Cluster::for_workspace(workspace)?),
        })
    }

    /// The throwaway cluster, unless `DATABASE_URL` named another server.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    /// The application database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the throwaway cluster was started here (and so is stopped on drop).
    pub fn started_here(&self) -> bool {
        self.started.is_some()
    }

    /// Keeps the cluster running past this value. Returns whether it was started here,
    /// i.e. whether the caller has taken over stopping it.
    pub fn release(mut self) -> bool {
        self.started.take().is_some()
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Some(cluster) = self.started.take() {
            eprintln!("stopping the throwaway PostgreSQL");
            if let Err(err) = cluster.stop() {
                eprintln!("warning: {err:#}; run `cargo xtask db stop` to clean up");
            }
        }
    }
}

/// (Re)creates the empty database `name` on the server at `server_url`; returns its URL.
pub fn scratch_database(server_url: &str, name: &str) -> Result<String> {
    drop_database(server_url, name)?;
    psql(server_url, &format!("CREATE DATABASE \"{name}\""))?;
    with_database(server_url, name)
}

/// Drops database `name` (and any connections to it) on the server at `server_url`.
pub fn drop_database(server_url: &str, name: &str) -> Result<()> {
    psql(
        server_url,
        &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
    )
    .map(drop)
    .with_context(|| format!("could not drop the scratch database {name}"))
}

/// `url` with its database name replaced by `database` (query parameters are kept).
pub fn with_database(url: &str, database: &str) -> Result<String> {
    let authority_start = url
        .find("://")
        .map(|index| index + 3)
        .with_context(|| format!("not a database URL: {url}"))?;
    let authority_end = url[authority_start..]
        .find(['/', '?'])
        .map_or(url.len(), |index| authority_start + index);
    let query = url[authority_end..]
        .find('?')
        .map_or("", |index| &url[authority_end + index..]);
    Ok(format!("{}/{database}{query}", &url[..authority_end]))
}

/// Runs `sql` with `psql` against the database at `url`; returns the unaligned output.
pub fn psql(url: &str, sql: &str) -> Result<String> {
    let mut cmd = Command::new(client_program("psql"));
    cmd.args(["--no-psqlrc", "--quiet", "--tuples-only", "--no-align"])
        .args(["--set=ON_ERROR_STOP=1", "--dbname", url, "--command", sql]);
    run_quiet(&mut cmd)
}

/// Creates the application database on a freshly started server if it doesn't exist.
fn ensure_database(url: &str) -> Result<()> {
    let maintenance = with_database(url, "postgres")?;
    let query = format!("SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'");
    if psql(&maintenance, &query)?.trim() != "1" {
        psql(&maintenance, &format!("CREATE DATABASE \"{DATABASE}\""))?;
    }
    Ok(())
}

/// The URL of `database` on the local cluster listening on `port`.
fn url(port: u16, database: &str) -> String {
    format!("postgres://{SUPERUSER}@127.0.0.1:{port}/{database}")
}

/// A client program of the Postgres installation (`psql`, `pgbench`): in the server
/// binaries' directory if we know it, else bare (looked up in `PATH`). Client programs
/// connect over TCP with the URL's user, so they run as the current user, also as root.
pub fn client_program(name: &str) -> PathBuf {
    program(name, bin_dir().as_deref())
}

/// A port that is free right now on 127.0.0.1 (asks the kernel for one).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("could not find a free port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

/// The contents of `path` from byte `offset` on.
fn read_from(path: &Path, offset: u64) -> io::Result<String> {
    let mut file = fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// 64-bit FNV-1a: a stable (toolchain-independent) hash for naming the state directory.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The Postgres server binaries' directory: `$PG_BIN_DIR`, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian/Ubuntu), else `None` (use `PATH`).
fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN_DIR").filter(|dir| !dir.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin)
}

/// `name` inside `bin_dir`, or bare (looked up in `PATH`).
fn program(name: &str, bin_dir: Option<&Path>) -> PathBuf {
    bin_dir.map_or_else(|| PathBuf::from(name), |dir| dir.join(name))
}

/// How to run the server binaries (`initdb`, `pg_ctl`).
#[derive(Debug)]
struct Tools {
    bin_dir: Option<PathBuf>,
    /// Set when we are root: the unprivileged user to run them as.
    owner: Option<Owner>,
}

/// The `postgres` system user, who owns the cluster when we are root.
#[derive(Debug)]
struct Owner {
    uid: u32,
    gid: u32,
    /// `runuser`, if installed; otherwise `su` is used.
    runuser: Option<PathBuf>,
}

impl Tools {
    fn detect() -> Result<Self> {
        let owner = if id(&["-u"])? == 0 {
            let uid = id(&["-u", SUPERUSER]).with_context(|| {
                format!("running as root needs a `{SUPERUSER}` system user to own the cluster")
            })?;
            let gid = id(&["-g", SUPERUSER])?;
            let runuser = ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
                .iter()
                .map(PathBuf::from)
                .find(|path| path.is_file())
                .or_else(|| find_in_path("runuser"));
            Some(Owner { uid, gid, runuser })
        } else {
            None
        };
        Ok(Self {
            bin_dir: bin_dir(),
            owner,
        })
    }

    /// A command running server binary `name` with `args` as the cluster's owner.
    fn as_owner<'a>(&self, name: &str, args: impl IntoIterator<Item = &'a OsStr>) -> Command {
        let program = program(name, self.bin_dir.as_deref());
        match &self.owner {
            None => {
                let mut cmd = Command::new(program);
                cmd.args(args);
                cmd
            }
            Some(Owner {
                runuser: Some(runuser),
                ..
            }) => {
                let mut cmd = Command::new(runuser);
                cmd.args(["-u", SUPERUSER, "--"]).arg(program).args(args);
                cmd
            }
            Some(Owner { runuser: None, .. }) => {
                let mut script = shell_quote(program.as_os_str());
                for arg in args {
                    script.push(' ');
                    script.push_str(&shell_quote(arg));
                }
                let mut cmd = Command::new("su");
                cmd.args([SUPERUSER, "-s", "/bin/sh", "-c", &script]);
                cmd
            }
        }
    }

    /// Gives `dir` to the cluster's owner (when we are root).
    fn hand_over(&self, dir: &Path) -> Result<()> {
        if let Some(owner) = &self.owner {
            chown(dir, Some(owner.uid), Some(owner.gid))
                .with_context(|| format!("could not chown {} to {SUPERUSER}", dir.display()))?;
        }
        Ok(())
    }
}

/// Runs `id` with `args` and parses the number it prints.
fn id(args: &[&str]) -> Result<u32> {
    let output = run_quiet(Command::new("id").args(args))?;
    let id = output.trim();
    ensure!(!id.is_empty(), "`id` printed nothing");
    id.parse()
        .with_context(|| format!("`id` printed {id:?}, not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_name() {
        let cases = [
            ("postgres://u@h:5432/iam", "postgres://u@h:5432/other"),
            ("postgres://u@h:5432", "postgres://u@h:5432/other"),
            (
                "postgres://u:p@h/iam?sslmode=disable",
                "postgres://u:p@h/other?sslmode=disable",
            ),
            (
                "postgresql://h?sslmode=disable",
                "postgresql://h/other?sslmode=disable",
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(with_database(url, "other").unwrap(), expected);
        }
        assert!(with_database("not a url", "other").is_err());
    }

    #[test]
    fn fnv1a_is_stable() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
