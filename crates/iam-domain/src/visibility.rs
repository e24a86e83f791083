//! Who may address a service account at all, shared by the use cases naming one.
//!
//! Only tenant administrators may; to anyone else every account is "not found", exactly like
//! a missing one, so a non-admin cannot tell an existing account from a missing one.

use crate::principal::Principal;
use crate::resource_id::ServiceAccountId;
use crate::role::RoleSlug;
use crate::violation::{Violation, ViolationReason};

/// The parsed id of an account `caller` may address; `None` (not found) for a non-admin or
/// a malformed id.
pub(crate) fn visible_account_id(
    caller: &Principal,
    admin_role: &RoleSlug,
    raw: &str,
) -> Option<ServiceAccountId> {
    if !caller.is_tenant_admin(admin_role) {
        return None;
    }
    ServiceAccountId::parse(raw).ok()
}

/// The violation of a caller whose organization is not in the directory.
pub(crate) fn tenant_not_provisioned(caller: &Principal) -> Violation {
    Violation {
        reason: ViolationReason::TenantNotProvisioned,
        field: None,
        message: format!("organization {} is not provisioned", caller.tenant),
    }
}
