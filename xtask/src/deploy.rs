//! `cargo xtask deploy-check`: renders the Kubernetes manifests (`deploy/kubernetes/`) with
//! `kubectl kustomize` and validates every object with `kubernetes-validate --strict` against
//! Kubernetes 1.30's schemas (from `PyPI`; it ships them, so this works offline). The validator lives
//! in a virtualenv in the tool cache, outside the clone, installed on first use.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::process::{find_in_path, run, stdout_of};
use crate::workspace::Workspace;

/// The validator, pinned.
const VALIDATOR: &str = "kubernetes-validate==1.37.0";
/// Its virtualenv in the tool cache (named after the pin, so a new pin gets a new one).
const VALIDATOR_DIR: &str = "kubernetes-validate-1.37.0";
/// The Kubernetes version the manifests must be valid for.
const KUBERNETES_VERSION: &str = "1.30";
/// The kustomizations that render on their own.
const KUSTOMIZATIONS: [&str; 2] = [
    "deploy/kubernetes/base",
    "deploy/kubernetes/overlays/production",
];

/// `cargo xtask deploy-check`.
pub fn check(workspace: &Workspace) -> Result<()> {
    let kubectl = find_in_path("kubectl").context(
        "kubectl not found: install it (it renders the manifests with `kubectl kustomize`)",
    )?;
    let validator = validator(workspace)?;
    let out_dir = workspace.target_dir().join("deploy-check");
    fs::create_dir_all(&out_dir)
        .with_context(|| format!("could not create {}", out_dir.display()))?;
    for kustomization in KUSTOMIZATIONS {
        let rendered = stdout_of(
            Command::new(&kubectl)
                .arg("kustomize")
                .arg(workspace.path(kustomization)),
        )
        .with_context(|| format!("kubectl kustomize {kustomization} failed"))?;
        let file = out_dir.join(format!("{}.yaml", kustomization.replace('/', "_")));
        fs::write(&file, &rendered)
            .with_context(|| format!("could not write {}", file.display()))?;
        println!("    rendered {kustomization} → {}", file.display());
        run(Command::new(&validator)
            .args([
                "--kubernetes-version",
                KUBERNETES_VERSION,
                "--strict",
                "--quiet",
            ])
            .arg(&file))
        .with_context(|| format!("{kustomization} is not valid Kubernetes {KUBERNETES_VERSION}"))?;
    }
    println!(
        "    every object is valid for Kubernetes {KUBERNETES_VERSION} (the ServiceMonitor, a \
         custom resource, has no schema to check against)"
    );
    Ok(())
}

/// The `kubernetes-validate` program, installed into its virtualenv if needed.
fn validator(workspace: &Workspace) -> Result<PathBuf> {
    let venv = workspace.tool_cache().join(VALIDATOR_DIR);
    let program = venv.join("bin").join("kubernetes-validate");
    if program.is_file() {
        return Ok(program);
    }
    let python =
        find_in_path("python3").context("python3 not found (it runs kubernetes-validate)")?;
    println!(
        "    installing {VALIDATOR} into {} (once per machine)",
        venv.display()
    );
    if venv.exists() {
        fs::remove_dir_all(&venv)
            .with_context(|| format!("could not remove {}", venv.display()))?;
    }
    run(Command::new(python).args(["-m", "venv"]).arg(&venv))
        .context("could not create the virtualenv")?;
    run(Command::new(venv.join("bin").join("pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        VALIDATOR,
    ]))
    .context("could not install kubernetes-validate")?;
    if !program.is_file() {
        bail!("{} was not installed", program.display());
    }
    Ok(program)
}
