//! Where the workspace lives and how to invoke cargo inside it.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result};

/// The Cargo workspace this xtask belongs to.
#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
}

impl Workspace {
    /// The workspace root: the parent of the xtask crate's manifest directory.
    pub fn locate() -> Result<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("the xtask crate has no parent directory")?
            .to_path_buf();
        Ok(Self { root })
    }

    /// The workspace root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A path relative to the workspace root.
    pub fn path(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.root.join(relative)
    }

    /// The cargo target directory (`CARGO_TARGET_DIR`, else `<root>/target`).
    pub fn target_dir(&self) -> PathBuf {
        env::var_os("CARGO_TARGET_DIR")
            .filter(|dir| !dir.is_empty())
            .map_or_else(|| self.path("target"), |dir| self.path(dir))
    }

    /// Where installed tools are cached, outside the clone so that a fresh clone (CI) reuses
    /// them: `$IAM_XTASK_CACHE`, else `$XDG_CACHE_HOME/iam-xtask`, else
    /// `$HOME/.cache/iam-xtask`, else `<target>/tools` when there is no home at all.
    pub fn tool_cache(&self) -> PathBuf {
        let non_empty = |name: &str| env::var_os(name).filter(|v| !v.is_empty());
        non_empty("IAM_XTASK_CACHE")
            .map(PathBuf::from)
            .or_else(|| non_empty("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("iam-xtask")))
            .or_else(|| non_empty("HOME").map(|d| PathBuf::from(d).join(".cache/iam-xtask")))
            .unwrap_or_else(|| self.target_dir().join("tools"))
    }

    /// A `cargo` command (`$CARGO` if set) running in the workspace root.
    pub fn cargo(&self) -> Command {
        let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&self.root);
        cmd
    }
}

/// `DATABASE_URL` from the environment, if set to something non-empty.
pub fn database_url_from_env() -> Option<String> {
    env::var("DATABASE_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
}
