//! Running the tools the benchmark drives (pgbench, `iam-server` commands, `kill`).

use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

/// A command line for messages.
pub fn display(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Runs `cmd` to success and returns its stdout; its stderr is shown only on failure.
///
/// # Errors
/// When it cannot be started, fails, or prints non-UTF-8.
pub fn run_quiet(cmd: &mut Command) -> Result<String> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to run `{}`", display(cmd)))?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({}):\n{}",
            display(cmd),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8(output.stdout)
        .with_context(|| format!("`{}` printed non-UTF-8", display(cmd)))
}
