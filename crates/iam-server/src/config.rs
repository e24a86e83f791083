//! Configuration from environment variables (the table lives in `docs/OPERATIONS.md`).
//!
//! Variables read here: `IAM_MODE`, `DATABASE_URL`, `IAM_LISTEN_ADDR`, `IAM_ISSUER`,
//! `IAM_AUDIENCE`, `IAM_SIGNING_KEY_FILE`, `IAM_SECRET_PEPPER_FILE`, `IAM_DEV_STATE_DIR`,
//! `IAM_EXTERNAL_ISSUER`, `IAM_EXTERNAL_JWKS_FILE`, `IAM_EXTERNAL_JWKS_URL`,
//! `IAM_JWKS_CA_FILE`, `IAM_ADMIN_ROLE`, `IAM_DB_MAX_CONNECTIONS`,
//! `IAM_DB_CONNECT_TIMEOUT_MS`, `IAM_DB_CHECKOUT_TIMEOUT_MS`, `IAM_WORKERS`,
//! `IAM_SHUTDOWN_TIMEOUT_SECS`, `IAM_LOG`, `IAM_LOG_FORMAT`, `IAM_ACCESS_TOKEN_TTL_SECS`,
//! `IAM_PUBLIC_URL`, `IAM_TRUSTED_PROXIES`, `IAM_VERIFICATION_KEY_FILES`,
//! `IAM_MINT_FAILURE_LIMIT`, `IAM_MINT_FAILURE_LIMIT_PER_IP`, `IAM_REQUEST_TIMEOUT`.
//!
//! Development mode has safe defaults and generates (and keeps) a signing key and a secret
//! pepper; production mode refuses to start without both given explicitly.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use iam_domain::RoleSlug;
use iam_postgres::PgConfig;

/// Development or production.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Local use: generated keys, readable logs.
    Development,
    /// Deployed: explicit keys required, JSON logs.
    Production,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// An external OIDC issuer whose JWKS is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIssuer {
    /// Its `iss`.
    pub issuer: String,
    /// Where its keys are.
    pub keys: ExternalKeys,
}

/// Where the external issuer's JWKS is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExternalKeys {
    /// `IAM_EXTERNAL_JWKS_FILE`: read once at start.
    File(PathBuf),
    /// `IAM_EXTERNAL_JWKS_URL`: fetched, cached and refetched by the JWKS fetcher.
    Url(String),
}

/// The server's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `IAM_MODE`: `development` (default) or `production`.
    pub mode: Mode,
    /// `DATABASE_URL`; required by `serve`, `migrate` and `directory apply`.
    pub database_url: Option<String>,
    /// `IAM_LISTEN_ADDR`, default `127.0.0.1:8080`.
    pub listen_addr: SocketAddr,
    /// `IAM_ISSUER`: `iss` of tokens this service signs, default `IAM_PUBLIC_URL` (RFC 8414
    /// wants the issuer to be the URL the metadata is served under).
    pub issuer: String,
    /// `IAM_AUDIENCE`: required `aud` of every token, default `k0rdent`.
    pub audience: String,
    /// `IAM_SIGNING_KEY_FILE`: Ed25519 PKCS#8 PEM private key. Required in production.
    pub signing_key_file: Option<PathBuf>,
    /// `IAM_SECRET_PEPPER_FILE`: the HMAC key of stored client-secret hashes (at least 32
    /// bytes; surrounding whitespace ignored). Required in production.
    pub secret_pepper_file: Option<PathBuf>,
    /// `IAM_DEV_STATE_DIR`: where development mode keeps its generated key and pepper, default
    /// `.iam-dev`.
    pub dev_state_dir: PathBuf,
    /// `IAM_EXTERNAL_ISSUER` + `IAM_EXTERNAL_JWKS_FILE` or `IAM_EXTERNAL_JWKS_URL` (the issuer
    /// and one of the two, or none of them).
    pub external_issuer: Option<ExternalIssuer>,
    /// `IAM_JWKS_CA_FILE`: PEM certificates trusted, besides the public web roots, when
    /// fetching JWKS (e.g. a cluster's CA for its in-cluster service-account issuer).
    pub jwks_ca_file: Option<PathBuf>,
    /// `IAM_ADMIN_ROLE`: the role that makes an org-scoped caller a tenant admin, default `admin`.
    pub admin_role: RoleSlug,
    /// `IAM_DB_MAX_CONNECTIONS` (default 16), `IAM_DB_CONNECT_TIMEOUT_MS` (2000),
    /// `IAM_DB_CHECKOUT_TIMEOUT_MS` (2000).
    pub db_max_connections: usize,
    /// See `db_max_connections`.
    pub db_connect_timeout: Duration,
    /// See `db_max_connections`.
    pub db_checkout_timeout: Duration,
    /// `IAM_WORKERS`: HTTP worker threads, default: the number of CPUs.
    pub workers: Option<usize>,
    /// `IAM_SHUTDOWN_TIMEOUT_SECS`: how long SIGTERM waits for in-flight requests, default 30.
    pub shutdown_timeout: Duration,
    /// `IAM_LOG`: tracing filter, default `info`.
    pub log_filter: String,
    /// `IAM_LOG_FORMAT`: `pretty` or `json`; default pretty in development, json in production.
    pub log_format: LogFormat,
    /// `IAM_ACCESS_TOKEN_TTL_SECS`: lifetime of minted access tokens, default 900.
    pub access_token_ttl: Duration,
    /// `IAM_PUBLIC_URL`: where clients reach this service (for RFC 8414 metadata), default
    /// `http://{IAM_LISTEN_ADDR}`.
    pub public_url: String,
    /// `IAM_TRUSTED_PROXIES`: comma-separated proxy IPs whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// `IAM_VERIFICATION_KEY_FILES`: comma-separated PEM files of earlier signing keys (public
    /// or private) whose tokens stay valid until they expire (key rotation).
    pub verification_key_files: Vec<PathBuf>,
    /// `IAM_MINT_FAILURE_LIMIT` (default 10) failed mints per client id and source IP, and
    /// `IAM_MINT_FAILURE_LIMIT_PER_IP` (default 100) per source IP, per minute; beyond them 429.
    pub mint_failure_limit: u32,
    /// See `mint_failure_limit`.
    pub mint_failure_limit_per_ip: u32,
    /// `IAM_REQUEST_TIMEOUT`: the request deadline, default 5 s (`250ms`, `5s`, or a number of
    /// seconds; 100 ms to 5 min). A request not done by then gets 503; it is also every
    /// database connection's `statement_timeout`.
    pub request_timeout: Duration,
}

/// Parses a request timeout: `<n>ms`, `<n>s` or a bare number of seconds.
fn request_timeout(raw: &str) -> anyhow::Result<Duration> {
    let raw = raw.trim();
    let (number, unit_ms) = if let Some(number) = raw.strip_suffix("ms") {
        (number, 1)
    } else {
        (raw.strip_suffix('s').unwrap_or(raw), 1000)
    };
    let timeout = number
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_ms))
        .map(Duration::from_millis)
        .filter(|t| (Duration::from_millis(100)..=Duration::from_mins(5)).contains(t));
    timeout.with_context(|| {
        format!("IAM_REQUEST_TIMEOUT={raw:?} is invalid: use e.g. 5s or 2500ms, from 100ms to 300s")
    })
}

fn parsed<T: FromStr>(
    env: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: T,
) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match env(name) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("{name}={raw:?} is invalid: {e}")),
    }
}

/// A comma-separated list (empty entries ignored); unset is empty.
fn comma_list<T: FromStr>(
    env: &impl Fn(&str) -> Option<String>,
    name: &str,
) -> anyhow::Result<Vec<T>>
where
    T::Err: std::fmt::Display,
{
    env(name)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|e| anyhow::anyhow!("{name}: {s:?}: {e}")))
        .collect()
}

/// `IAM_EXTERNAL_ISSUER` with its keys (`IAM_EXTERNAL_JWKS_FILE` or `IAM_EXTERNAL_JWKS_URL`).
fn external_issuer(env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<ExternalIssuer>> {
    Ok(
        match (
            env("IAM_EXTERNAL_ISSUER"),
            env("IAM_EXTERNAL_JWKS_FILE"),
            env("IAM_EXTERNAL_JWKS_URL"),
        ) {
            (None, None, None) => None,
            (Some(issuer), Some(file), None) => Some(ExternalIssuer {
                issuer,
                keys: ExternalKeys::File(PathBuf::from(file)),
            }),
            (Some(issuer), None, Some(url)) => {
                iam_oidc::check_fetch_url(&url)
                    .with_context(|| format!("IAM_EXTERNAL_JWKS_URL={url:?}"))?;
                Some(ExternalIssuer {
                    issuer,
                    keys: ExternalKeys::Url(url),
                })
            }
            _ => bail!(
                "set IAM_EXTERNAL_ISSUER with one of IAM_EXTERNAL_JWKS_FILE or \
             IAM_EXTERNAL_JWKS_URL, or none of them"
            ),
        },
    )
}

/// Whether two issuer identifiers name the same issuer (a trailing `/` does not make another).
fn same_issuer(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

impl Config {
    /// Reads the configuration through `env` (normally `std::env::var`).
    ///
    /// # Errors
    /// Names the first invalid variable.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let mode = match env("IAM_MODE").as_deref().map(str::trim) {
            None | Some("development" | "dev") => Mode::Development,
            Some("production" | "prod") => Mode::Production,
            Some(other) => bail!("IAM_MODE={other:?} is invalid: use development or production"),
        };
        let signing_key_file = env("IAM_SIGNING_KEY_FILE").map(PathBuf::from);
        if mode == Mode::Production && signing_key_file.is_none() {
            bail!(
                "production mode requires IAM_SIGNING_KEY_FILE (an Ed25519 PKCS#8 PEM private key)"
            );
        }
        let secret_pepper_file = env("IAM_SECRET_PEPPER_FILE").map(PathBuf::from);
        if mode == Mode::Production && secret_pepper_file.is_none() {
            bail!("production mode requires IAM_SECRET_PEPPER_FILE (at least 32 random bytes)");
        }
        let external_issuer = external_issuer(env)?;
        let jwks_ca_file = env("IAM_JWKS_CA_FILE").map(PathBuf::from);
        let admin_role = env("IAM_ADMIN_ROLE").unwrap_or_else(|| "admin".to_owned());
        let admin_role = RoleSlug::parse(admin_role.as_str())
            .map_err(|e| anyhow::anyhow!("IAM_ADMIN_ROLE={admin_role:?} is invalid: {e}"))?;
        let log_format = match env("IAM_LOG_FORMAT").as_deref() {
            None if mode == Mode::Production => LogFormat::Json,
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => bail!("IAM_LOG_FORMAT={other:?} is invalid: use pretty or json"),
        };
        let millis = |name, default| parsed(&env, name, default).map(Duration::from_millis);
        let workers: usize = parsed(&env, "IAM_WORKERS", 0)?;
        let listen_addr = parsed(
            &env,
            "IAM_LISTEN_ADDR",
            SocketAddr::from(([127, 0, 0, 1], 8080)),
        )?;
        let ttl_secs: u64 = parsed(&env, "IAM_ACCESS_TOKEN_TTL_SECS", 900)?;
        if !(60..=86_400).contains(&ttl_secs) {
            bail!("IAM_ACCESS_TOKEN_TTL_SECS must be between 60 and 86400");
        }
        let trusted_proxies: Vec<IpAddr> = comma_list(&env, "IAM_TRUSTED_PROXIES")?;
        let public_url = env("IAM_PUBLIC_URL")
            .unwrap_or_else(|| format!("http://{listen_addr}"))
            .trim_end_matches('/')
            .to_owned();
        let verification_key_files: Vec<PathBuf> = comma_list(&env, "IAM_VERIFICATION_KEY_FILES")?;
        let config = Self {
            mode,
            database_url: env("DATABASE_URL"),
            listen_addr,
            access_token_ttl: Duration::from_secs(ttl_secs),
            trusted_proxies,
            verification_key_files,
            mint_failure_limit: parsed(&env, "IAM_MINT_FAILURE_LIMIT", 10)?,
            mint_failure_limit_per_ip: parsed(&env, "IAM_MINT_FAILURE_LIMIT_PER_IP", 100)?,
            request_timeout: env("IAM_REQUEST_TIMEOUT")
                .map_or(Ok(Duration::from_secs(5)), |raw| request_timeout(&raw))?,
            issuer: env("IAM_ISSUER").unwrap_or_else(|| public_url.clone()),
            public_url,
            audience: env("IAM_AUDIENCE").unwrap_or_else(|| "k0rdent".to_owned()),
            signing_key_file,
            secret_pepper_file,
            dev_state_dir: env("IAM_DEV_STATE_DIR")
                .map_or_else(|| PathBuf::from(".iam-dev"), PathBuf::from),
            external_issuer,
            jwks_ca_file,
            admin_role,
            db_max_connections: parsed(
                &env,
                "IAM_DB_MAX_CONNECTIONS",
                PgConfig::DEFAULT_MAX_CONNECTIONS,
            )?,
            db_connect_timeout: millis("IAM_DB_CONNECT_TIMEOUT_MS", 2000)?,
            db_checkout_timeout: millis("IAM_DB_CHECKOUT_TIMEOUT_MS", 2000)?,
            workers: (workers > 0).then_some(workers),
            shutdown_timeout: Duration::from_secs(parsed(&env, "IAM_SHUTDOWN_TIMEOUT_SECS", 30)?),
            log_filter: env("IAM_LOG").unwrap_or_else(|| "info".to_owned()),
            log_format,
        };
        if config.db_max_connections == 0 {
            bail!("IAM_DB_MAX_CONNECTIONS must be at least 1");
        }
        if let Some(external) = &config.external_issuer
            && same_issuer(&external.issuer, &config.issuer)
        {
            bail!(
                "IAM_EXTERNAL_ISSUER={:?} is this service's own issuer (IAM_ISSUER): an external \
                 key could then sign as this service; give the external issuer its own URL",
                external.issuer
            );
        }
        Ok(config)
    }

    /// The pool configuration.
    ///
    /// # Errors
    /// When `DATABASE_URL` is not set.
    pub fn pg(&self) -> anyhow::Result<PgConfig> {
        let url = self.database_url.clone().context(
            "DATABASE_URL is not set (e.g. export DATABASE_URL=$(cargo xtask db start))",
        )?;
        Ok(PgConfig {
            url,
            max_connections: self.db_max_connections,
            connect_timeout: self.db_connect_timeout,
            checkout_timeout: self.db_checkout_timeout,
            statement_timeout: Some(self.request_timeout),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> anyhow::Result<Config> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_env(|k| vars.get(k).cloned())
    }

    #[test]
    fn development_defaults_are_local_and_safe() {
        let c = config(&[]).unwrap();
        assert_eq!(c.mode, Mode::Development);
        assert_eq!(c.listen_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.admin_role.as_str(), "admin");
        assert_eq!(c.log_format, LogFormat::Pretty);
        assert!(c.pg().is_err(), "no DATABASE_URL, no pool");
    }

    #[test]
    fn production_refuses_to_start_without_a_signing_key_and_a_pepper() {
        let err = config(&[("IAM_MODE", "production")]).unwrap_err();
        assert!(err.to_string().contains("IAM_SIGNING_KEY_FILE"), "{err}");
        let err = config(&[
            ("IAM_MODE", "production"),
            ("IAM_SIGNING_KEY_FILE", "/k.pem"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("IAM_SECRET_PEPPER_FILE"), "{err}");
        let c = config(&[
            ("IAM_MODE", "production"),
            ("IAM_SIGNING_KEY_FILE", "/k.pem"),
            ("IAM_SECRET_PEPPER_FILE", "/pepper"),
        ])
        .unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn an_external_issuer_equal_to_our_own_is_refused() {
        for external in ["https://iam.example", "https://iam.example/"] {
            let err = config(&[
                ("IAM_ISSUER", "https://iam.example"),
                ("IAM_EXTERNAL_ISSUER", external),
                ("IAM_EXTERNAL_JWKS_FILE", "/jwks.json"),
            ])
            .unwrap_err()
            .to_string();
            assert!(err.contains("IAM_EXTERNAL_ISSUER"), "{err}");
        }
        // The default issuer is the public URL: the same rule holds for it.
        let err = config(&[
            ("IAM_PUBLIC_URL", "https://iam.example"),
            ("IAM_EXTERNAL_ISSUER", "https://iam.example"),
            ("IAM_EXTERNAL_JWKS_FILE", "/jwks.json"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("own issuer"), "{err}");
        assert!(
            config(&[
                ("IAM_ISSUER", "https://iam.example"),
                ("IAM_EXTERNAL_ISSUER", "https://idp.example"),
                ("IAM_EXTERNAL_JWKS_FILE", "/jwks.json"),
            ])
            .is_ok()
        );
    }

    #[test]
    fn the_request_timeout_takes_seconds_or_milliseconds() {
        assert_eq!(config(&[]).unwrap().request_timeout, Duration::from_secs(5));
        for (raw, expected) in [
            ("7", 7000),
            ("2s", 2000),
            ("250ms", 250),
            (" 300s ", 300_000),
        ] {
            let c = config(&[("IAM_REQUEST_TIMEOUT", raw)]).unwrap();
            assert_eq!(c.request_timeout, Duration::from_millis(expected), "{raw}");
            assert_eq!(c.pg().map(|pg| pg.statement_timeout).ok(), None, "no URL");
        }
        let c = config(&[
            ("DATABASE_URL", "postgres://x/y"),
            ("IAM_REQUEST_TIMEOUT", "2s"),
        ])
        .unwrap();
        assert_eq!(
            c.pg().unwrap().statement_timeout,
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn invalid_values_are_named() {
        for (name, value) in [
            ("IAM_MODE", "staging"),
            ("IAM_LISTEN_ADDR", "nowhere"),
            ("IAM_ADMIN_ROLE", "Admin!"),
            ("IAM_DB_MAX_CONNECTIONS", "0"),
            ("IAM_LOG_FORMAT", "xml"),
            ("IAM_EXTERNAL_ISSUER", "https://idp"),
            ("IAM_REQUEST_TIMEOUT", "5m"),
            ("IAM_REQUEST_TIMEOUT", "50ms"),
            ("IAM_REQUEST_TIMEOUT", "301"),
        ] {
            let err = config(&[(name, value)]).unwrap_err().to_string();
            assert!(err.contains(name), "{name}: {err}");
        }
    }
}
