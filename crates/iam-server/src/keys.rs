//! Loading the signing key, the secret pepper and the trusted verification keys.
//!
//! Production reads `IAM_SIGNING_KEY_FILE` and `IAM_SECRET_PEPPER_FILE`. Development without
//! them uses `{IAM_DEV_STATE_DIR}/signing-key.pem` and `{IAM_DEV_STATE_DIR}/pepper`, generating
//! each (mode 0600) on first use, so that `iam-server token mint`, restarts and several
//! instances agree.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use iam_domain::SecretHasher;
use iam_http::external_issuer::ExternalIssuer;
use iam_http::jwt::{Ed25519Key, TokenVerifier, VerificationKey};
use iam_oidc::JwksFetcher;

use crate::config::{Config, ExternalKeys};

/// Loads (or, in development, creates) the signing key.
///
/// # Errors
/// When the key file cannot be read or is not an Ed25519 PKCS#8 PEM key.
pub fn signing_key(config: &Config) -> anyhow::Result<Ed25519Key> {
    let path = configured_or_dev(config, config.signing_key_file.as_ref(), "signing-key.pem");
    let pem = read_or_create(&path, config.signing_key_file.is_none(), || {
        Ok(Ed25519Key::generate()?.to_pkcs8_pem()?.into_bytes())
    })?;
    let pem = String::from_utf8(pem).with_context(|| format!("{} is not PEM", path.display()))?;
    Ed25519Key::from_pkcs8_pem(&pem).with_context(|| format!("loading {}", path.display()))
}

/// Loads (or, in development, creates) the secret pepper.
///
/// # Errors
/// When the file cannot be read or holds fewer than 32 bytes.
pub fn secret_pepper(config: &Config) -> anyhow::Result<Vec<u8>> {
    let path = configured_or_dev(config, config.secret_pepper_file.as_ref(), "pepper");
    let raw = read_or_create(&path, config.secret_pepper_file.is_none(), || {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("OS random source: {e}"))?;
        let mut hex = String::with_capacity(65);
        for b in bytes {
            write!(hex, "{b:02x}")?;
        }
        hex.push('\n');
        Ok(hex.into_bytes())
    })?;
    let pepper = decode_pepper(raw);
    anyhow::ensure!(
        SecretHasher::new(&pepper).is_some(),
        "{} must hold at least {} bytes (64 hex digits, or 32 raw bytes)",
        path.display(),
        SecretHasher::MIN_PEPPER_LEN
    );
    Ok(pepper)
}

/// A pepper file holds hex digits (decoded), other text (used as is, trimmed), or raw bytes.
fn decode_pepper(raw: Vec<u8>) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(&raw) else {
        return raw;
    };
    let text = text.trim();
    let hex =
        text.len() % 2 == 0 && !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit());
    if hex {
        (0..text.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
            .collect()
    } else {
        text.as_bytes().to_vec()
    }
}

fn configured_or_dev(config: &Config, configured: Option<&PathBuf>, dev_name: &str) -> PathBuf {
    configured.map_or_else(|| config.dev_state_dir.join(dev_name), PathBuf::clone)
}

/// Reads `path`; if it does not exist and `may_create`, writes `generate()` to it first
/// (mode 0600, never overwriting a file another process created meanwhile).
fn read_or_create(
    path: &Path,
    may_create: bool,
    generate: impl FnOnce() -> anyhow::Result<Vec<u8>>,
) -> anyhow::Result<Vec<u8>> {
    if !may_create || path.exists() {
        return fs::read(path).with_context(|| format!("reading {}", path.display()));
    }
    let content = generate()?;
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(&content)
                .with_context(|| format!("writing {}", path.display()))?;
            tracing::info!(path = %path.display(), "generated development key material");
            Ok(content)
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            fs::read(path).with_context(|| format!("reading {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// This service's verification keys: the current signing key's, then those of
/// `IAM_VERIFICATION_KEY_FILES` (earlier keys kept during a rotation).
///
/// # Errors
/// When a file cannot be read or holds no Ed25519 key.
pub fn verification_keys(
    config: &Config,
    own: &Ed25519Key,
) -> anyhow::Result<Vec<VerificationKey>> {
    let mut keys = vec![own.verification_key()];
    for path in &config.verification_key_files {
        let pem =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let key = VerificationKey::from_pem(&pem)
            .with_context(|| format!("loading {}", path.display()))?;
        if keys.iter().all(|k| k.kid() != key.kid()) {
            keys.push(key);
        }
    }
    Ok(keys)
}

/// The verifier trusting this service's keys and the configured external issuer's JWKS.
///
/// # Errors
/// When the JWKS file cannot be read or parsed.
pub fn verifier(config: &Config, own: &[VerificationKey]) -> TokenVerifier {
    let mut verifier = TokenVerifier::new(config.audience.clone());
    for key in own {
        verifier.trust_own_key(key, &config.issuer);
    }
    verifier
}

/// The external user-token issuer, if configured: its JWKS file read now, or its JWKS URL to
/// be fetched by `fetcher`.
///
/// # Errors
/// When the JWKS file cannot be read or holds no usable key.
pub fn external_issuer(
    config: &Config,
    fetcher: &Arc<JwksFetcher>,
) -> anyhow::Result<Option<Arc<ExternalIssuer>>> {
    let Some(external) = &config.external_issuer else {
        return Ok(None);
    };
    let trusted = match &external.keys {
        ExternalKeys::File(file) => {
            let jwks =
                fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
            ExternalIssuer::from_jwks(external.issuer.clone(), &jwks)
                .with_context(|| format!("loading {}", file.display()))?
        }
        ExternalKeys::Url(url) => {
            ExternalIssuer::from_url(external.issuer.clone(), url.clone(), Arc::clone(fetcher))
        }
    };
    tracing::info!(issuer = %external.issuer, "trusting external issuer");
    Ok(Some(Arc::new(trusted)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev_config(dir: &Path) -> Config {
        let dir = dir.display().to_string();
        Config::from_env(|k| (k == "IAM_DEV_STATE_DIR").then(|| dir.clone())).unwrap()
    }

    #[test]
    fn development_key_material_is_generated_once_then_reused() {
        let dir = std::env::temp_dir().join(format!("iam-keys-{}", uuid::Uuid::new_v4().simple()));
        let config = dev_config(&dir);
        let key = signing_key(&config).unwrap();
        assert_eq!(signing_key(&config).unwrap().kid(), key.kid());
        let pepper = secret_pepper(&config).unwrap();
        assert_eq!(pepper.len(), 32, "64 hex digits decode to 32 bytes");
        assert_eq!(secret_pepper(&config).unwrap(), pepper);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(dir.join("pepper"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn short_or_missing_configured_peppers_are_refused() {
        let dir = std::env::temp_dir().join(format!("iam-keys-{}", uuid::Uuid::new_v4().simple()));
        fs::create_dir_all(&dir).unwrap();
        let mut config = dev_config(&dir);
        config.secret_pepper_file = Some(dir.join("short"));
        fs::write(dir.join("short"), "too short\n").unwrap();
        assert!(secret_pepper(&config).is_err());
        fs::write(dir.join("short"), "ab".repeat(31)).unwrap();
        assert!(
            secret_pepper(&config).is_err(),
            "62 hex digits are only 31 bytes"
        );
        fs::write(dir.join("short"), [0xffu8; 32]).unwrap();
        assert_eq!(
            secret_pepper(&config).unwrap(),
            [0xff; 32],
            "raw bytes are used as is"
        );
        config.secret_pepper_file = Some(dir.join("missing"));
        assert!(
            secret_pepper(&config).is_err(),
            "a configured file is never generated"
        );
        fs::remove_dir_all(dir).unwrap();
    }
}
