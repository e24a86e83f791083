//! The configuration variables as command-line arguments: every environment variable that
//! [`Config::from_env`](crate::config::Config::from_env) reads is also a global `--flag`, so
//! `iam-server serve --help` (and every other command's help) lists them all, with the
//! variable each one is read from. A flag overrides its variable. Values set in the
//! environment are never shown in the help (a `DATABASE_URL` may hold a password).

use clap::Args;

macro_rules! config_args {
    ($( $(#[doc = $doc:literal])* $field:ident = $env:literal, )*) => {
        /// The configuration, from flags or (usually) environment variables.
        #[derive(Debug, Clone, Default, Args)]
        #[command(next_help_heading = "Configuration (environment variables; docs/OPERATIONS.md)")]
        pub struct ConfigArgs {
            $(
                $(#[doc = $doc])*
                #[arg(long, env = $env, global = true, value_name = "VALUE", hide_env_values = true)]
                pub $field: Option<String>,
            )*
        }

        impl ConfigArgs {
            /// Every variable, in the order of the help.
            pub const VARIABLES: &[&str] = &[$($env),*];

            /// The value of variable `name`, as [`Config::from_env`](crate::config::Config::from_env)
            /// asks for it.
            pub fn get(&self, name: &str) -> Option<String> {
                match name {
                    $( $env => self.$field.clone(), )*
                    _ => None,
                }
            }
        }
    };
}

config_args! {
    /// `development` (default) or `production` (requires a signing key and a pepper).
    mode = "IAM_MODE",
    /// PostgreSQL URL; required by serve, migrate and directory apply.
    database_url = "DATABASE_URL",
    /// Address to listen on [default: 127.0.0.1:8080].
    listen_addr = "IAM_LISTEN_ADDR",
    /// `iss` of the tokens this service signs [default: the public URL].
    issuer = "IAM_ISSUER",
    /// `aud` every token must carry [default: k0rdent].
    audience = "IAM_AUDIENCE",
    /// Ed25519 PKCS#8 PEM private key file (required in production).
    signing_key_file = "IAM_SIGNING_KEY_FILE",
    /// File of the pepper of client-secret hashes, at least 32 bytes (required in production).
    secret_pepper_file = "IAM_SECRET_PEPPER_FILE",
    /// Development only: where a generated key and pepper are kept [default: .iam-dev].
    dev_state_dir = "IAM_DEV_STATE_DIR",
    /// `iss` of an external OIDC issuer whose tokens are accepted (with its JWKS file or URL).
    external_issuer = "IAM_EXTERNAL_ISSUER",
    /// JWKS file of the external issuer (RS256, ES256 or EdDSA keys).
    external_jwks_file = "IAM_EXTERNAL_JWKS_FILE",
    /// JWKS URL of the external issuer (instead of the file; https, or http on loopback).
    external_jwks_url = "IAM_EXTERNAL_JWKS_URL",
    /// PEM CA certificates trusted, besides the public roots, when fetching JWKS.
    jwks_ca_file = "IAM_JWKS_CA_FILE",
    /// Role that makes an organization-scoped caller a tenant admin [default: admin].
    admin_role = "IAM_ADMIN_ROLE",
    /// Connection pool size [default: 16].
    db_max_connections = "IAM_DB_MAX_CONNECTIONS",
    /// Longest time to open one database connection, ms [default: 2000].
    db_connect_timeout_ms = "IAM_DB_CONNECT_TIMEOUT_MS",
    /// Longest wait for a pooled connection, ms [default: 2000].
    db_checkout_timeout_ms = "IAM_DB_CHECKOUT_TIMEOUT_MS",
    /// HTTP worker threads [default: the CPU count].
    workers = "IAM_WORKERS",
    /// How long shutdown waits for in-flight requests, s [default: 30].
    shutdown_timeout_secs = "IAM_SHUTDOWN_TIMEOUT_SECS",
    /// Log filter (`tracing` `EnvFilter` syntax) [default: info].
    log = "IAM_LOG",
    /// `pretty` or `json` [default: pretty in development, json in production].
    log_format = "IAM_LOG_FORMAT",
    /// Lifetime of minted access tokens, s, 60-86400 [default: 900].
    access_token_ttl_secs = "IAM_ACCESS_TOKEN_TTL_SECS",
    /// Where clients reach the service, for RFC 8414 metadata [default: `http://` + listen address].
    public_url = "IAM_PUBLIC_URL",
    /// Comma-separated proxy IPs whose X-Forwarded-For is believed.
    trusted_proxies = "IAM_TRUSTED_PROXIES",
    /// Comma-separated PEM files of other trusted signing keys (key rotation).
    verification_key_files = "IAM_VERIFICATION_KEY_FILES",
    /// Failed mints per minute per (client id, source IP) before 429 [default: 10].
    mint_failure_limit = "IAM_MINT_FAILURE_LIMIT",
    /// Failed mints per minute per source IP before 429 [default: 100].
    mint_failure_limit_per_ip = "IAM_MINT_FAILURE_LIMIT_PER_IP",
    /// Request deadline: `5s`, `2500ms` or seconds; then 503 (also the statement timeout) [default: 5s].
    request_timeout = "IAM_REQUEST_TIMEOUT",
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    use super::*;
    use crate::config::Config;

    #[test]
    fn every_variable_the_configuration_reads_is_a_listed_flag() {
        let asked = RefCell::new(BTreeSet::new());
        // Production mode without files fails early; development reads everything.
        let _ = Config::from_env(|name| {
            asked.borrow_mut().insert(name.to_owned());
            None
        });
        let listed: BTreeSet<String> = ConfigArgs::VARIABLES
            .iter()
            .map(|v| (*v).to_owned())
            .collect();
        assert_eq!(asked.into_inner(), listed);
    }

    #[test]
    fn a_flag_or_its_variable_is_what_the_configuration_sees() {
        let args = ConfigArgs {
            listen_addr: Some("127.0.0.1:9999".into()),
            ..ConfigArgs::default()
        };
        let config = Config::from_env(|name| args.get(name)).unwrap();
        assert_eq!(config.listen_addr.to_string(), "127.0.0.1:9999");
        assert_eq!(args.get("IAM_NO_SUCH_VARIABLE"), None);
    }
}
