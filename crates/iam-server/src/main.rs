//! The `iam-server` command line: `serve`, `migrate`, `directory apply FILE`, `token mint`.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use iam_domain::ports::Clock as _;
use iam_domain::{OrgId, PrincipalKind, RoleSlug, Scope};
use iam_postgres::{Operator, PgStore};
use iam_server::clock::SystemClock;
use iam_server::config::Config;
use iam_server::config_args::ConfigArgs;
use iam_server::token::MintRequest;
use iam_server::{app, directory_file, keys, telemetry, token};

/// Multi-tenant IAM service for k0rdent service accounts. Configured through environment
/// variables (see docs/OPERATIONS.md).
#[derive(Debug, Parser)]
#[command(name = "iam-server", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API until SIGTERM or Ctrl-C (in-flight requests are drained).
    Serve,
    /// Apply pending database migrations.
    Migrate,
    /// Manage organizations, projects and roles.
    Directory {
        #[command(subcommand)]
        action: DirectoryAction,
    },
    /// Bootstrap tokens.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
}

#[derive(Debug, Subcommand)]
enum DirectoryAction {
    /// Upsert the organizations, projects and roles of a TOML directory file (idempotent).
    Apply {
        /// The directory file (see docs/examples/directory.toml).
        file: PathBuf,
        /// Also delete projects and roles of the listed organizations that the file omits.
        #[arg(long)]
        prune: bool,
        /// Who is applying it, for the audit events (recorded as `operator:NAME`); default:
        /// the login name ($USER, else $LOGNAME).
        #[arg(long, value_name = "NAME")]
        actor: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum TokenAction {
    /// Print a token signed with the server key (only the token goes to stdout).
    Mint {
        /// `tenant_id`: the organization.
        #[arg(long)]
        tenant: String,
        /// `sub`: who the token is for.
        #[arg(long)]
        sub: String,
        /// Comma-separated roles, e.g. `admin,compute.deployer`.
        #[arg(long, value_delimiter = ',', default_value = "")]
        roles: Vec<String>,
        /// `organization` or `project`.
        #[arg(long, default_value = "organization")]
        scope: String,
        /// The project id for project scope (defaults to the tenant for organization scope).
        #[arg(long)]
        scope_id: Option<String>,
        /// Lifetime: `<n>d`, `<n>h`, `<n>m` or `<n>s`.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// `user` or `api_key`.
        #[arg(long, default_value = "user")]
        principal_type: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::from_env(|name| cli.config.get(name))?;
    telemetry::init(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(cli.command, config))
}

/// The operator of a `directory apply`: `operator:{name}` with `name` from `--actor`, else
/// the login name, and a fresh run id shared by the apply's audit events.
fn operator(actor: Option<String>) -> anyhow::Result<Operator> {
    let name = actor
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .context("say who applies the directory: --actor NAME (no $USER or $LOGNAME is set)")?;
    anyhow::ensure!(
        name.chars().count() <= 200 && !name.chars().any(char::is_control),
        "--actor must be at most 200 characters without control characters"
    );
    Ok(Operator {
        actor: format!("operator:{name}"),
        run_id: format!("directory-apply-{}", uuid::Uuid::new_v4().simple()),
        at: SystemClock.now_micros(),
    })
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            let listener = TcpListener::bind(config.listen_addr)
                .with_context(|| format!("binding {}", config.listen_addr))?;
            tracing::info!(addr = %config.listen_addr, mode = ?config.mode, "serving");
            let mut built = app::build(&config, SystemClock, listener)?;
            (&mut built.server).await?;
            // In-flight requests are drained; write the last-use records they left behind.
            match built.flush_usage().await {
                Ok(written) => tracing::info!(written, "stopped"),
                Err(error) => tracing::warn!(%error, "stopped without writing last-use records"),
            }
        }
        Command::Migrate => {
            let applied = iam_postgres::run_migrations(&config.pg()?.url).await?;
            tracing::info!(count = applied.len(), versions = ?applied, "migrations applied");
        }
        Command::Directory {
            action: DirectoryAction::Apply { file, prune, actor },
        } => {
            let operator = operator(actor)?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let specs =
                directory_file::parse(&text).with_context(|| format!("in {}", file.display()))?;
            let summary = PgStore::connect(&config.pg()?)?
                .apply_directory(&specs, prune, &operator)
                .await?;
            tracing::info!(
                ?summary,
                file = %file.display(),
                actor = %operator.actor,
                run = %operator.run_id,
                "directory applied"
            );
        }
        Command::Token {
            action:
                TokenAction::Mint {
                    tenant,
                    sub,
                    roles,
                    scope,
                    scope_id,
                    ttl,
                    principal_type,
                },
        } => {
            let request = MintRequest {
                tenant: OrgId::parse(tenant.as_str())
                    .map_err(|e| anyhow::anyhow!("--tenant: {e}"))?,
                subject: sub,
                roles: roles
                    .iter()
                    .filter(|r| !r.is_empty())
                    .map(|r| {
                        RoleSlug::parse(r.as_str())
                            .map_err(|e| anyhow::anyhow!("--roles {r:?}: {e}"))
                    })
                    .collect::<anyhow::Result<_>>()?,
                scope: scope
                    .parse::<Scope>()
                    .map_err(|e| anyhow::anyhow!("--scope: {e}"))?,
                scope_id,
                ttl: directory_file::lifetime(&ttl).context("--ttl")?,
                kind: match PrincipalKind::parse(&principal_type) {
                    Some(PrincipalKind::ServiceAccount) => anyhow::bail!(
                        "service-account tokens come from the token endpoint, not from token mint"
                    ),
                    Some(kind) => kind,
                    None => anyhow::bail!("--principal-type must be user or api_key"),
                },
            };
            let key = keys::signing_key(&config)?;
            let jwt = token::mint(&config, &key, &request, SystemClock.now())?;
            writeln!(std::io::stdout(), "{jwt}")?;
        }
    }
    Ok(())
}
