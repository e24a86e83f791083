//! Loading the signing key and the trusted verification keys.
//!
//! Production reads `IAM_SIGNING_KEY_FILE`. Development without it uses
//! `{IAM_DEV_STATE_DIR}/signing-key.pem`, generating it (mode 0600) on first use, so that
//! `iam-server token mint` and `iam-server serve` agree on the key across restarts.

use std::fs;
use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use iam_http::jwt::{Ed25519Key, TokenVerifier};

use crate::config::{Config, Mode};

/// Loads (or, in development, creates) the signing key.
///
/// # Errors
/// When the key file cannot be read or is not an Ed25519 PKCS#8 PEM key.
pub fn signing_key(config: &Config) -> anyhow::Result<Ed25519Key> {
    if let Some(path) = &config.signing_key_file {
        return read_key(path);
    }
    debug_assert_eq!(
        config.mode,
        Mode::Development,
        "Config refuses production without a key"
    );
    let path = config.dev_state_dir.join("signing-key.pem");
    if path.exists() {
        return read_key(&path);
    }
    let key = Ed25519Key::generate()?;
    fs::create_dir_all(&config.dev_state_dir)
        .with_context(|| format!("creating {}", config.dev_state_dir.display()))?;
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(&path) {
        Ok(mut file) => {
            file.write_all(key.to_pkcs8_pem()?.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            tracing::info!(path = %path.display(), kid = key.kid(), "generated a development signing key");
            Ok(key)
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_key(&path),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

fn read_key(path: &Path) -> anyhow::Result<Ed25519Key> {
    let pem = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ed25519Key::from_pkcs8_pem(&pem).with_context(|| format!("loading {}", path.display()))
}

/// The verifier trusting this service's key and the configured external issuer's JWKS.
///
/// # Errors
/// When the JWKS file cannot be read or parsed.
pub fn verifier(config: &Config, own: &Ed25519Key) -> anyhow::Result<TokenVerifier> {
    let mut verifier = TokenVerifier::new(config.audience.clone());
    verifier.trust_own_key(own, &config.issuer);
    if let Some(external) = &config.external_issuer {
        let jwks = fs::read_to_string(&external.jwks_file)
            .with_context(|| format!("reading {}", external.jwks_file.display()))?;
        let added = verifier
            .trust_jwks(&jwks, &external.issuer)
            .with_context(|| format!("loading {}", external.jwks_file.display()))?;
        tracing::info!(issuer = %external.issuer, keys = added, "trusting external issuer");
    }
    Ok(verifier)
}
