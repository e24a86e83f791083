//! Helpers for running child processes with error messages that name the command.

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

/// Renders a command line for messages, e.g. `/usr/bin/cargo fmt --all -- --check`.
pub fn display(cmd: &Command) -> String {
    render(cmd.get_program(), cmd)
}

/// Like [`display`], but names the program by its file name only (`cargo`, not the
/// toolchain's full path).
pub fn display_short(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program());
    render(program.file_name().unwrap_or(program.as_os_str()), cmd)
}

fn render(program: &OsStr, cmd: &Command) -> String {
    let mut line = shell_quote(program);
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&shell_quote(arg));
    }
    line
}

/// Quotes `word` for a POSIX shell; words made only of safe characters are left bare.
pub fn shell_quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let is_safe = |c: char| c.is_ascii_alphanumeric() || "-_./=:@,+%".contains(c);
    if !word.is_empty() && word.chars().all(is_safe) {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Runs `cmd` with inherited stdio and fails unless it exits successfully.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("failed to start `{}`", display(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", display(cmd));
    }
    Ok(())
}

/// Runs `cmd`, echoing its stdout to our stderr (so our stdout stays clean for results).
pub fn run_to_stderr(cmd: &mut Command) -> Result<()> {
    run(cmd.stdout(io::stderr()))
}

/// Runs `cmd` and returns its stdout; stderr is passed through to the terminal.
pub fn stdout_of(cmd: &mut Command) -> Result<String> {
    let output = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("failed to start `{}`", display(cmd)))?;
    if !output.status.success() {
        bail!("`{}` failed ({})", display(cmd), output.status);
    }
    String::from_utf8(output.stdout)
        .with_context(|| format!("`{}` printed non-UTF-8 output", display(cmd)))
}

/// Runs `cmd` silently; on failure its captured stdout and stderr become part of the error.
pub fn run_quiet(cmd: &mut Command) -> Result<String> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to start `{}`", display(cmd)))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!(
            "`{}` failed ({})\n{}{}",
            display(cmd),
            output.status,
            stdout,
            stderr
        );
    }
    Ok(stdout.into_owned())
}

/// Looks `name` up in the directories of `PATH`.
pub fn find_in_path(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_when_needed() {
        assert_eq!(shell_quote(OsStr::new("--edges")), "--edges");
        assert_eq!(shell_quote(OsStr::new("2.3.*")), "'2.3.*'");
        assert_eq!(shell_quote(OsStr::new("it's")), r"'it'\''s'");
        assert_eq!(shell_quote(OsStr::new("")), "''");
    }
}
