//! The level of the resource hierarchy a service account (or a token) is scoped to, and the
//! organization or project it is scoped to ([`ScopeTarget`]).

use std::fmt;
use std::str::FromStr;

use crate::resource_id::{OrgId, ProjectId, TargetId};
use crate::validation::InvalidValue;

/// `organization` or `project`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// The whole organization; `scopeId` is the organization id.
    Organization,
    /// One project of the organization; `scopeId` is the project id.
    Project,
}

impl Scope {
    /// Both scopes, in a stable order.
    pub const ALL: [Scope; 2] = [Scope::Organization, Scope::Project];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Organization => "organization",
            Scope::Project => "project",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = InvalidValue;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "organization" => Ok(Scope::Organization),
            "project" => Ok(Scope::Project),
            _ => Err(InvalidValue::new(
                "INVALID_VALUE",
                "must be one of: organization, project",
            )),
        }
    }
}

/// What a service account or a token is scoped to: its whole organization, or one project of
/// it. Built once where a scope and an id come in (a request, a token, a stored row); nothing
/// downstream re-parses an id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ScopeTarget {
    /// The organization.
    Organization(OrgId),
    /// One project of the organization.
    Project(ProjectId),
}

impl ScopeTarget {
    /// Parses a `scope` and `scopeId` pair.
    ///
    /// # Errors
    /// [`InvalidValue`] when `id` is not a resource id.
    pub fn parse(scope: Scope, id: &str) -> Result<Self, InvalidValue> {
        Ok(match scope {
            Scope::Organization => ScopeTarget::Organization(OrgId::parse(id)?),
            Scope::Project => ScopeTarget::Project(ProjectId::parse(id)?),
        })
    }

    /// `organization` or `project`.
    pub fn scope(&self) -> Scope {
        match self {
            ScopeTarget::Organization(_) => Scope::Organization,
            ScopeTarget::Project(_) => Scope::Project,
        }
    }

    /// The organization or project id (`scopeId`).
    pub fn id(&self) -> &str {
        match self {
            ScopeTarget::Organization(org) => org.as_str(),
            ScopeTarget::Project(project) => project.as_str(),
        }
    }

    /// The id as a list filter names it.
    pub fn target_id(&self) -> TargetId {
        TargetId::from_valid(self.id())
    }
}

impl fmt::Display for ScopeTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.scope(), self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_a_scope_and_a_valid_id() {
        let web = ScopeTarget::parse(Scope::Project, "web").unwrap();
        assert_eq!(web, ScopeTarget::Project(ProjectId::parse("web").unwrap()));
        assert_eq!((web.scope(), web.id()), (Scope::Project, "web"));
        let org = ScopeTarget::parse(Scope::Organization, "org-acme").unwrap();
        assert_eq!(org.scope(), Scope::Organization);
        assert_ne!(
            ScopeTarget::parse(Scope::Organization, "web").unwrap(),
            web,
            "the same id at another scope is another target"
        );
        assert_eq!(
            ScopeTarget::parse(Scope::Project, "Not An Id")
                .unwrap_err()
                .reason,
            "INVALID_FORMAT"
        );
    }
}
