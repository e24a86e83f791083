//! The level of the resource hierarchy a service account (or a token) is scoped to.

use std::fmt;
use std::str::FromStr;

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
