//! # iam-server
//!
//! The deployed binary of the IAM service: configuration from the environment, logging, the
//! CLI (`serve`, `migrate`, `directory apply`, `token mint`), and the wiring of the domain
//! (`iam-domain`) with its PostgreSQL (`iam-postgres`), HTTP (`iam-http`) and outbound OIDC
//! (`iam-oidc`) adapters.
//!
//! The library half exists so the end-to-end tests start exactly the server the binary runs.

pub mod app;
pub mod clock;
pub mod config;
pub mod config_args;
pub mod directory_file;
pub mod federation;
pub mod ids;
pub mod keys;
pub mod telemetry;
pub mod token;
