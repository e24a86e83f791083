//! End-to-end tests: the real server (as `iam-server serve` builds it) on port 0, a fresh
//! PostgreSQL database per test, and HTTP requests. Needs `DATABASE_URL` (`cargo xtask ci`
//! provides it).
#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod auth;
mod credentials;
mod federation;
mod hardening;
mod operations;
mod pagination;
mod service_accounts;
mod support;
mod tokens;
