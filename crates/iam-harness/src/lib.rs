//! The out-of-process harnesses of `iam-server`: what `cargo xtask bench` and `cargo xtask
//! reliability` run. Both drive the release server binary as a real process, over real HTTP,
//! on the PostgreSQL xtask prepared.
//!
//! - [`loadgen`]: a small blocking HTTP/1.1 client and a closed-loop load generator (std only);
//! - [`server`]: the server's commands, starting, waiting for, signalling and stopping it;
//! - [`procstat`]: resident memory, CPU time and open files of processes, from `/proc`;
//! - [`process`]: running the tools the harnesses drive.
//!
//! The binaries: `iam-bench` (throughput and latency next to `pgbench`, SPEC §7) and
//! `iam-reliability` (the fault scenarios of SPEC §7, `docs/RELIABILITY.md`).

#![allow(
    clippy::missing_errors_doc,
    clippy::return_self_not_must_use,
    clippy::print_stderr,
    reason = "an internal harness, not a published library: its functions fail with anyhow \
              errors that say why, builders are obviously used, and warnings go to stderr"
)]

pub mod loadgen;
pub mod process;
pub mod procstat;
pub mod server;

/// A progress line on stderr (stdout is kept for results and reports).
pub fn progress(message: &str) {
    eprintln!("==> {message}");
}

/// The string `field` of a JSON object.
pub fn json_string(json: &str, field: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(json).ok()?[field]
        .as_str()
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_json_strings() {
        let json = r#"{"id":"cred-x","clientSecret" : "plt_cs_cred-x_abc","n":1,"e":"a\"b"}"#;
        assert_eq!(
            json_string(json, "clientSecret").as_deref(),
            Some("plt_cs_cred-x_abc")
        );
        assert_eq!(json_string(json, "e").as_deref(), Some("a\"b"));
        assert_eq!(json_string(json, "n"), None);
        assert_eq!(json_string(json, "missing"), None);
    }
}
