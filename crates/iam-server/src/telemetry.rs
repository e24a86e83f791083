//! Structured logging: readable lines in development, JSON in production.
//!
//! Every line of a request carries the request span's fields (request id, method, route,
//! tenant, principal). No secret ever reaches a log: the types that hold secrets redact
//! themselves and handlers never log bodies or headers.

use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

/// Installs the global subscriber (a second call is a no-op).
pub fn init(config: &Config) {
    let filter = EnvFilter::try_new(&config.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match config.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
    // Already installed (tests start several servers in one process): keep the first.
    drop(result);
}
