//! The declarative directory file (TOML) applied by `iam-server directory apply FILE`.
//!
//! ```toml
//! [[organizations]]
//! id = "org-acme"
//! slug = "acme"                      # optional, defaults to the id
//!
//! [organizations.policy]             # optional, every key optional (contract defaults)
//! allowedScopes = ["organization", "project"]
//! credentialDefaultLifetime = "90d"  # <n>d | <n>h | <n>m | <n>s
//! credentialMaxLifetime = "365d"
//! maxActiveCredentials = 5
//!
//! [[organizations.projects]]
//! id = "web"
//! displayName = "Web shop"           # optional
//!
//! [[organizations.roles]]
//! slug = "compute.deployer"
//! description = "Deploys workloads"  # optional
//!
//! [[organizations.trustedIssuers]]   # workload identity federation (SPEC §9)
//! issuer = "https://token.actions.githubusercontent.com"
//! jwksUri = "https://token.actions.githubusercontent.com/.well-known/jwks"  # optional
//! ```
//!
//! Unknown keys are errors, so a typo never silently falls back to a default. A trusted
//! issuer and its `jwksUri` must be `https://` URLs (`http://` only for loopback hosts):
//! operators, not tenants, decide which URLs the service fetches; without `jwksUri` the keys
//! are found by OIDC discovery at `{issuer}/.well-known/openid-configuration`.

use std::collections::BTreeSet;

use anyhow::{Context as _, bail};
use iam_domain::{
    Issuer, OrgId, OrgPolicy, OrgSlug, Organization, ProjectId, RoleSlug, Scope, TrustedIssuer,
};
use iam_postgres::{OrganizationSpec, ProjectSpec, RoleSpec};
use serde::Deserialize;
use time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    organizations: Vec<OrganizationEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrganizationEntry {
    id: String,
    slug: Option<String>,
    #[serde(default)]
    policy: PolicyEntry,
    #[serde(default)]
    projects: Vec<ProjectEntry>,
    #[serde(default)]
    roles: Vec<RoleEntry>,
    #[serde(default, rename = "trustedIssuers")]
    trusted_issuers: Vec<TrustedIssuerEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TrustedIssuerEntry {
    issuer: String,
    jwks_uri: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PolicyEntry {
    allowed_scopes: Option<Vec<String>>,
    credential_default_lifetime: Option<String>,
    credential_max_lifetime: Option<String>,
    max_active_credentials: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ProjectEntry {
    id: String,
    display_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleEntry {
    slug: String,
    description: Option<String>,
}

/// Parses a lifetime such as `90d`, `12h`, `30m` or `3600s`.
/// # Errors
/// When `raw` is not `<n>d`, `<n>h`, `<n>m` or `<n>s`.
pub fn lifetime(raw: &str) -> anyhow::Result<Duration> {
    let raw = raw.trim();
    let (number, unit) = raw.split_at(raw.len().saturating_sub(1));
    let n: i64 = number
        .parse()
        .with_context(|| format!("{raw:?} is not a lifetime like 90d, 12h, 30m or 3600s"))?;
    Ok(match unit {
        "d" => Duration::days(n),
        "h" => Duration::hours(n),
        "m" => Duration::minutes(n),
        "s" => Duration::seconds(n),
        _ => bail!("{raw:?} is not a lifetime like 90d, 12h, 30m or 3600s"),
    })
}

fn organization(entry: OrganizationEntry) -> anyhow::Result<OrganizationSpec> {
    let id = OrgId::parse(entry.id.as_str()).map_err(|e| anyhow::anyhow!("id: {e}"))?;
    let slug = match entry.slug {
        Some(slug) => OrgSlug::parse(slug).map_err(|e| anyhow::anyhow!("slug: {e}"))?,
        None => OrgSlug::from(&id),
    };
    let defaults = OrgPolicy::default();
    let scopes = match entry.policy.allowed_scopes {
        None => defaults.allowed_scopes().clone(),
        Some(raw) => raw
            .iter()
            .map(|s| {
                s.parse::<Scope>()
                    .map_err(|e| anyhow::anyhow!("policy.allowedScopes: {e}"))
            })
            .collect::<anyhow::Result<BTreeSet<_>>>()?,
    };
    let default_lifetime = match entry.policy.credential_default_lifetime {
        None => defaults.credential_default_lifetime(),
        Some(raw) => lifetime(&raw).context("policy.credentialDefaultLifetime")?,
    };
    let max_lifetime = match entry.policy.credential_max_lifetime {
        None => defaults.credential_max_lifetime(),
        Some(raw) => lifetime(&raw).context("policy.credentialMaxLifetime")?,
    };
    let policy = OrgPolicy::new(
        scopes,
        default_lifetime,
        max_lifetime,
        entry
            .policy
            .max_active_credentials
            .unwrap_or(defaults.max_active_credentials()),
    )
    .context("policy")?;
    let projects = entry
        .projects
        .into_iter()
        .map(|p| {
            Ok(ProjectSpec {
                id: ProjectId::parse(p.id.as_str())
                    .map_err(|e| anyhow::anyhow!("project {:?}: {e}", p.id))?,
                display_name: p.display_name,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let roles = entry
        .roles
        .into_iter()
        .map(|r| {
            Ok(RoleSpec {
                slug: RoleSlug::parse(r.slug.as_str())
                    .map_err(|e| anyhow::anyhow!("role {:?}: {e}", r.slug))?,
                description: r.description,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let trusted_issuers = entry
        .trusted_issuers
        .into_iter()
        .map(|t| {
            let label = format!("trustedIssuers {:?}", t.issuer);
            iam_oidc::check_fetch_url(&t.issuer).with_context(|| format!("{label}: issuer"))?;
            if let Some(uri) = &t.jwks_uri {
                iam_oidc::check_fetch_url(uri).with_context(|| format!("{label}: jwksUri"))?;
            }
            Ok(TrustedIssuer {
                issuer: Issuer::parse(t.issuer).map_err(|e| anyhow::anyhow!("{label}: {e}"))?,
                jwks_uri: t.jwks_uri,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(OrganizationSpec {
        organization: Organization { id, slug, policy },
        projects,
        roles,
        trusted_issuers,
    })
}

/// Parses a directory file.
///
/// # Errors
/// Syntax errors, unknown keys, and invalid values, naming the organization and field.
pub fn parse(text: &str) -> anyhow::Result<Vec<OrganizationSpec>> {
    let file: File = toml::from_str(text)?;
    let mut seen = BTreeSet::new();
    file.organizations
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            let label = format!("organizations[{i}] ({})", entry.id);
            if !seen.insert(entry.id.clone()) {
                bail!("{label}: listed twice");
            }
            organization(entry).with_context(|| label)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses() {
        let specs = parse(include_str!("../../../docs/examples/directory.toml")).unwrap();
        assert!(
            specs
                .iter()
                .any(|s| s.organization.id.as_str() == "org-acme")
        );
    }

    #[test]
    fn defaults_apply_and_lifetimes_parse() {
        let specs = parse(
            r#"
            [[organizations]]
            id = "org-a"
            [organizations.policy]
            credentialDefaultLifetime = "12h"
            "#,
        )
        .unwrap();
        let org = &specs[0].organization;
        assert_eq!(org.slug.as_str(), "org-a");
        assert_eq!(
            org.policy.credential_default_lifetime(),
            Duration::hours(12)
        );
        assert_eq!(org.policy.max_active_credentials(), 5);
    }

    #[test]
    fn typos_bad_values_and_broken_policies_are_errors_naming_the_place() {
        for (text, expected) in [
            ("[[organizations]]\nid = \"org-a\"\nslgu = \"x\"", "slgu"),
            ("[[organizations]]\nid = \"Org A\"", "id"),
            (
                "[[organizations]]\nid = \"org-a\"\n[organizations.policy]\ncredentialDefaultLifetime = \"400d\"",
                "policy",
            ),
            (
                "[[organizations]]\nid = \"org-a\"\n[organizations.policy]\ncredentialMaxLifetime = \"1y\"",
                "credentialMaxLifetime",
            ),
            (
                "[[organizations]]\nid = \"org-a\"\n[[organizations]]\nid = \"org-a\"",
                "twice",
            ),
            (
                "[[organizations]]\nid = \"org-a\"\n[[organizations.roles]]\nslug = \"Bad Role\"",
                "Bad Role",
            ),
            (
                "[[organizations]]\nid = \"org-a\"\n[[organizations.trustedIssuers]]\nissuer = \"http://idp.example\"",
                "trustedIssuers \"http://idp.example\": issuer",
            ),
            (
                "[[organizations]]\nid = \"org-a\"\n[[organizations.trustedIssuers]]\nissuer = \"https://idp.example\"\njwksUri = \"ftp://idp.example/keys\"",
                "jwksUri",
            ),
            (
                "[[organizations]]\nid = \"org-a\"\n[[organizations.trustedIssuers]]\nissuer = \"https://idp.example\"\njwks = \"x\"",
                "jwks",
            ),
        ] {
            let err = format!("{:#}", parse(text).unwrap_err());
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }

    #[test]
    fn trusted_issuers_parse_with_https_or_loopback_http() {
        let specs = parse(
            r#"
            [[organizations]]
            id = "org-a"
            [[organizations.trustedIssuers]]
            issuer = "https://token.actions.githubusercontent.com"
            [[organizations.trustedIssuers]]
            issuer = "http://127.0.0.1:8080"
            jwksUri = "http://localhost:8080/jwks"
            "#,
        )
        .unwrap();
        let issuers = &specs[0].trusted_issuers;
        assert_eq!(issuers.len(), 2);
        assert_eq!(issuers[0].jwks_uri, None);
        assert_eq!(issuers[1].issuer.as_str(), "http://127.0.0.1:8080");
        assert_eq!(
            issuers[1].jwks_uri.as_deref(),
            Some("http://localhost:8080/jwks")
        );
    }
}
