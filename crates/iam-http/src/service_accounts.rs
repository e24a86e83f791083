//! The five service-account routes under `/v1/regions/global/iam/service-accounts`.
//!
//! Handlers are thin: authenticate, parse and validate the request (collecting every bad
//! field), call [`ServiceAccountAdmin`](iam_domain::ServiceAccountAdmin), map the result.
#![expect(
    clippy::missing_errors_doc,
    reason = "handler doc comments become OpenAPI summaries; their errors are the statuses listed in #[utoipa::path]"
)]

use actix_web::http::StatusCode;
use actix_web::http::header::{ETAG, IF_MATCH, LOCATION};
use actix_web::{HttpRequest, HttpResponse, web};
use iam_domain::ports::Recorder;
use iam_domain::service_account_admin::{Precondition, entity_tag};
use iam_domain::{
    CreateServiceAccount, Description, DisplayName, RequestContext, RoleSlug, Scope,
    ServiceAccount, ServiceAccountFilter, ServiceAccountId, ServiceAccountPatch,
    ServiceAccountStatus, TargetId,
};
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::body::{self, Fields, Presence};
use crate::caller::{Caller, ReadCaller};
use crate::error::{ApiError, ErrorDetail, ErrorEnvelope};
use crate::idempotency;
use crate::paging::PageQuery;
use crate::reply::Reply;
use crate::request_id::RequestId;
use crate::{AppState, HttpAdapters};

/// Base path of the service-account collection.
pub const BASE_PATH: &str = "/v1/regions/global/iam/service-accounts";

/// A service account as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ServiceAccount)]
pub struct ServiceAccountView {
    /// `/v1/regions/global/iam/service-accounts/{id}`.
    pub self_link: String,
    /// Server-made UUID v4, immutable.
    pub uid: Uuid,
    /// Unique within the organization.
    pub id: String,
    /// Human-readable name.
    pub display_name: String,
    /// Free text; absent when not set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `{id}@{orgSlug}.iam`, server-made, immutable.
    pub client_id: String,
    /// `organization` or `project`.
    #[schema(value_type = ScopeSchema)]
    pub scope: &'static str,
    /// The organization id or project id.
    pub scope_id: String,
    /// Assigned roles.
    pub roles: Vec<String>,
    /// `active` or `disabled`.
    #[schema(value_type = StatusSchema)]
    pub status: &'static str,
    /// `sub` of the creator.
    pub created_by: String,
    /// RFC 3339, UTC.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// RFC 3339, UTC.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
    /// Non-expired credentials.
    pub active_credential_count: u32,
}

/// Scope of a service account.
#[derive(ToSchema)]
#[schema(as = Scope)]
pub enum ScopeSchema {
    /// The whole organization.
    #[schema(rename = "organization")]
    Organization,
    /// One project.
    #[schema(rename = "project")]
    Project,
}

/// Status of a service account.
#[derive(ToSchema)]
#[schema(as = ServiceAccountStatus)]
pub enum StatusSchema {
    /// May authenticate.
    #[schema(rename = "active")]
    Active,
    /// May not authenticate.
    #[schema(rename = "disabled")]
    Disabled,
}

impl From<&ServiceAccount> for ServiceAccountView {
    fn from(sa: &ServiceAccount) -> Self {
        Self {
            self_link: format!("{BASE_PATH}/{}", sa.id),
            uid: sa.uid,
            id: sa.id.to_string(),
            display_name: sa.display_name.as_str().to_owned(),
            description: sa.description.as_ref().map(|d| d.as_str().to_owned()),
            client_id: sa.client_id.as_str().to_owned(),
            scope: sa.target.scope().as_str(),
            scope_id: sa.target.id().to_owned(),
            roles: sa.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            status: sa.status.as_str(),
            created_by: sa.created_by.to_string(),
            created_at: sa.created_at,
            updated_at: sa.updated_at,
            active_credential_count: sa.active_credential_count,
        }
    }
}

/// A page of service accounts.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountList {
    /// The page, ordered by `createdAt` then `uid`.
    pub service_accounts: Vec<ServiceAccountView>,
    /// Cursor mode: present iff more results exist.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
    /// Offset mode: the number of all matching service accounts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

/// Body of `POST /service-accounts` (documentation; parsed field by field). Unknown fields
/// are refused (400 `UNKNOWN_FIELD`).
#[derive(ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({
    "displayName": "Build bot",
    "description": "Deploys from CI",
    "scope": "organization",
    "scopeId": "org-acme",
    "roles": ["compute.deployer"]
}))]
#[expect(
    dead_code,
    reason = "documents the request body in the OpenAPI document only"
)]
pub struct CreateServiceAccountBody {
    /// Generated (`sa-` + random base32) when omitted.
    id: Option<String>,
    display_name: String,
    description: Option<String>,
    #[schema(value_type = ScopeSchema)]
    scope: String,
    /// The caller's organization id (scope `organization`) or a project id of it.
    scope_id: String,
    /// Role slugs from the org catalog, each held by the caller.
    roles: Option<Vec<String>>,
}

/// Body of `PATCH /service-accounts/{id}` (documentation; parsed field by field). Unknown and
/// immutable fields are refused; only `description` may be `null`.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "documents the request body in the OpenAPI document only"
)]
pub struct PatchServiceAccountBody {
    #[schema(nullable = false)]
    display_name: Option<String>,
    /// `null` or `""` clears it.
    description: Option<String>,
    /// Replaces the whole list; added roles must be in the catalog and held by the caller.
    #[schema(nullable = false)]
    roles: Option<Vec<String>>,
    #[schema(value_type = StatusSchema, required = false)]
    status: Option<String>,
}

const LIST_PARAMS: &[&str] = &[
    "pageSize",
    "pageToken",
    "offset",
    "scope",
    "scopeId",
    "status",
];
const CREATE_FIELDS: &[&str] = &[
    "id",
    "displayName",
    "description",
    "scope",
    "scopeId",
    "roles",
];
const PATCH_FIELDS: &[&str] = &["displayName", "description", "roles", "status"];
const READ_ONLY_FIELDS: &[&str] = &[
    "selfLink",
    "uid",
    "id",
    "clientId",
    "scope",
    "scopeId",
    "createdBy",
    "createdAt",
    "updatedAt",
    "activeCredentialCount",
];

/// The audit context of a request.
pub(crate) fn context(req: &HttpRequest) -> RequestContext {
    RequestContext {
        request_id: RequestId::of(req),
        source_ip: crate::client_ip::of(req),
    }
}

fn etag(sa: &ServiceAccount) -> String {
    format!("\"{}\"", entity_tag(sa))
}

fn reply(status: StatusCode, sa: &ServiceAccount) -> Result<Reply, ApiError> {
    Ok(Reply::json(status, &ServiceAccountView::from(sa))?.header(ETAG, etag(sa)))
}

fn page_binding<'a>(tenant: &'a str, filter: &'a ServiceAccountFilter) -> [&'a str; 5] {
    [
        "service-accounts",
        tenant,
        filter.scope.map_or("", Scope::as_str),
        filter.target_id.as_ref().map_or("", TargetId::as_str),
        filter.status.map_or("", ServiceAccountStatus::as_str),
    ]
}

fn parse_roles(fields: &mut Fields, raw: Vec<(usize, String)>) -> Vec<RoleSlug> {
    raw.into_iter()
        .filter_map(|(i, r)| fields.parse(format!("roles[{i}]"), r, RoleSlug::parse))
        .collect()
}

/// List service accounts of the caller's tenant (tenant administrators only).
#[utoipa::path(
    get, path = "/v1/regions/global/iam/service-accounts", operation_id = "listServiceAccounts", tag = "serviceaccounts",
    params(
        ("scope" = Option<ScopeSchema>, Query, description = "Only this scope."),
        ("scopeId" = Option<String>, Query, description = "Only this scope target."),
        ("status" = Option<StatusSchema>, Query, description = "Only this status."),
        ("pageSize" = Option<u16>, Query, description = "1-500, default 50.", minimum = 1, maximum = 500),
        ("pageToken" = Option<String>, Query, description = "Cursor mode: the previous page's nextPageToken."),
        ("offset" = Option<u64>, Query, description = "Offset mode (reports total); excludes pageToken."),
    ),
    responses(
        (status = 200, body = ServiceAccountList),
        (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
    ),
    security(("bearerAuth" = []))
)]
pub async fn list<A: HttpAdapters>(
    state: web::Data<AppState<A>>,
    caller: ReadCaller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let result: Result<HttpResponse, ApiError> = async {
        let params = body::query(req.query_string(), LIST_PARAMS)?;
        let mut errors: Vec<ErrorDetail> = Vec::new();
        let mut filter = ServiceAccountFilter::default();
        let mut paging = PageQuery::default();
        for (name, value) in params {
            if paging.take(&name, &value, &mut errors) {
                continue;
            }
            match name.as_str() {
                "scope" => match value.parse() {
                    Ok(scope) => filter.scope = Some(scope),
                    Err(e) => errors.push(ErrorDetail::invalid(name, e)),
                },
                "status" => match value.parse() {
                    Ok(status) => filter.status = Some(status),
                    Err(e) => errors.push(ErrorDetail::invalid(name, e)),
                },
                "scopeId" => match TargetId::parse(value) {
                    Ok(id) => filter.target_id = Some(id),
                    Err(e) => errors.push(ErrorDetail::invalid(name, e)),
                },
                // body::query admits only LIST_PARAMS, all handled above.
                _ => {}
            }
        }
        let binding = page_binding(caller.tenant.as_str(), &filter);
        let request = paging.request(&state.page_tokens, &binding, &mut errors);
        if !errors.is_empty() {
            return Err(ApiError::bad_request(errors));
        }
        let page = state.admin.list(&caller, &filter, request).await?;
        let body = ServiceAccountList {
            service_accounts: page.items.iter().map(ServiceAccountView::from).collect(),
            next_page_token: page.next.map(|c| state.page_tokens.encode(&c, &binding)),
            total: page.total,
        };
        Ok(Reply::json(StatusCode::OK, &body)?.into_response())
    }
    .await;
    caller.answer(result).await
}

/// Create a service account in the caller's tenant (tenant administrators only).
#[utoipa::path(
    post, path = "/v1/regions/global/iam/service-accounts", operation_id = "createServiceAccount", tag = "serviceaccounts",
    request_body = CreateServiceAccountBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for 24 h.")),
    responses(
        (status = 201, body = ServiceAccountView, headers(("Location" = String), ("ETag" = String))),
        (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    ),
    security(("bearerAuth" = []))
)]
pub async fn create<A: HttpAdapters>(
    state: web::Data<AppState<A>>,
    Caller(caller): Caller,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let bytes = body::read(payload).await?;
    let map = body::object(&req, &bytes)?
        .ok_or_else(|| ApiError::bad_request(vec![ErrorDetail::reason("BODY_REQUIRED")]))?;
    let request = parse_create(map)?;
    let context = context(&req);
    // A replay shows the created account again to an admin of the tenant (the same as GET).
    let may_replay = async || Ok(());
    idempotency::run(
        &state,
        &caller,
        &req,
        &bytes,
        may_replay,
        async |recording| {
            let recorder = recording.as_ref().map(|r| r.of(created));
            let sa = state
                .admin
                .create(
                    &caller,
                    &context,
                    request,
                    recorder
                        .as_ref()
                        .map(|r| r as &dyn Recorder<ServiceAccount>),
                )
                .await?;
            created(&sa)
        },
    )
    .await
}

/// The 201 of a create (what is sent and what an `Idempotency-Key` records).
fn created(sa: &ServiceAccount) -> Result<Reply, ApiError> {
    Ok(reply(StatusCode::CREATED, sa)?.header(LOCATION, format!("{BASE_PATH}/{}", sa.id)))
}

fn parse_create(
    map: serde_json::Map<String, serde_json::Value>,
) -> Result<CreateServiceAccount, ApiError> {
    let mut f = Fields::new(map);
    f.reject_unknown(CREATE_FIELDS, &[]);
    let id = match f.string("id") {
        Presence::Value(raw) => f.parse("id", raw, ServiceAccountId::parse),
        _ => None,
    };
    let display_name = f
        .required_string("displayName")
        .and_then(|raw| f.parse("displayName", raw, DisplayName::parse));
    let description = match f.string("description") {
        Presence::Value(raw) if !raw.is_empty() => f.parse("description", raw, Description::parse),
        _ => None,
    };
    let scope = f
        .required_string("scope")
        .and_then(|raw| f.parse("scope", raw, |s| s.parse::<Scope>()));
    // Any string: whether it names an organization or project is a business rule (422).
    let scope_id = f.required_string("scopeId");
    let roles = match f.strings("roles") {
        Presence::Value(raw) => parse_roles(&mut f, raw),
        _ => Vec::new(),
    };
    f.finish()?;
    let (Some(display_name), Some(scope), Some(scope_id)) = (display_name, scope, scope_id) else {
        tracing::error!("create body passed validation without its required fields");
        return Err(ApiError::internal());
    };
    Ok(CreateServiceAccount {
        id,
        display_name,
        description,
        scope,
        scope_id,
        roles,
    })
}

/// Get one service account. Non-admins get 404, exactly as for a missing id.
#[utoipa::path(
    get, path = "/v1/regions/global/iam/service-accounts/{id}", operation_id = "getServiceAccount", tag = "serviceaccounts",
    params(("id" = String, Path, description = "Service account id.")),
    responses(
        (status = 200, body = ServiceAccountView, headers(("ETag" = String))),
        (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
    ),
    security(("bearerAuth" = []))
)]
pub async fn get<A: HttpAdapters>(
    state: web::Data<AppState<A>>,
    caller: ReadCaller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let result: Result<HttpResponse, ApiError> = async {
        let sa = state.admin.get(&caller, &id).await?;
        Ok(reply(StatusCode::OK, &sa)?.into_response())
    }
    .await;
    caller.answer(result).await
}

/// Update display name, description, roles or status. Non-admins get 404.
#[utoipa::path(
    patch, path = "/v1/regions/global/iam/service-accounts/{id}", operation_id = "updateServiceAccount", tag = "serviceaccounts",
    params(
        ("id" = String, Path, description = "Service account id."),
        ("If-Match" = Option<String>, Header, description = "ETag of the version this change is based on."),
    ),
    request_body = PatchServiceAccountBody,
    responses(
        (status = 200, body = ServiceAccountView, headers(("ETag" = String))),
        (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope, description = "Re-enabling an account without holding all its roles."),
        (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope),
        (status = 412, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope),
    ),
    security(("bearerAuth" = []))
)]
pub async fn update<A: HttpAdapters>(
    state: web::Data<AppState<A>>,
    Caller(caller): Caller,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // The uniform 404 comes before any validation of the body or headers.
    state.admin.visible_id(&caller, &id)?;
    let bytes = body::read(payload).await?;
    let map = body::object(&req, &bytes)?.unwrap_or_default();
    let patch = parse_patch(map)?;
    let precondition = precondition(&req);
    let sa = state
        .admin
        .update(&caller, &context(&req), &id, patch, &precondition)
        .await?;
    Ok(reply(StatusCode::OK, &sa)?.into_response())
}

fn parse_patch(
    map: serde_json::Map<String, serde_json::Value>,
) -> Result<ServiceAccountPatch, ApiError> {
    if map.is_empty() {
        return Err(ApiError::bad_request(vec![ErrorDetail {
            reason: "EMPTY_PATCH".into(),
            field: None,
            message: Some("name at least one of: displayName, description, roles, status".into()),
        }]));
    }
    let mut f = Fields::new(map);
    f.reject_unknown(PATCH_FIELDS, READ_ONLY_FIELDS);
    let mut patch = ServiceAccountPatch::default();
    match f.string("displayName") {
        Presence::Value(raw) => {
            patch.display_name = f.parse("displayName", raw, DisplayName::parse);
        }
        Presence::Null => f.error("displayName", "NULL_NOT_ALLOWED", "cannot be null"),
        Presence::Absent | Presence::Invalid => {}
    }
    match f.string("description") {
        Presence::Value(raw) if !raw.is_empty() => {
            patch.description = f.parse("description", raw, Description::parse).map(Some);
        }
        Presence::Value(_) | Presence::Null => patch.description = Some(None),
        Presence::Absent | Presence::Invalid => {}
    }
    match f.strings("roles") {
        Presence::Value(raw) => patch.roles = Some(parse_roles(&mut f, raw)),
        Presence::Null => f.error(
            "roles",
            "NULL_NOT_ALLOWED",
            "cannot be null; use [] to remove all roles",
        ),
        Presence::Absent | Presence::Invalid => {}
    }
    match f.string("status") {
        Presence::Value(raw) => {
            patch.status = f.parse("status", raw, |s| s.parse::<ServiceAccountStatus>());
        }
        Presence::Null => f.error("status", "NULL_NOT_ALLOWED", "cannot be null"),
        Presence::Absent | Presence::Invalid => {}
    }
    f.finish()?;
    Ok(patch)
}

/// `If-Match` as a precondition: `*` or absent means none; otherwise the listed strong tags.
/// Weak or malformed tags can never match, so they make the PATCH fail with 412.
fn precondition(req: &HttpRequest) -> Precondition {
    let values: Vec<&str> = req
        .headers()
        .get_all(IF_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    if values.is_empty() || values.contains(&"*") {
        return Precondition::None;
    }
    Precondition::OneOf(
        values
            .into_iter()
            .filter_map(|v| v.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
            .map(str::to_owned)
            .collect(),
    )
}

/// Delete a service account and all its credentials. Non-admins get 404.
#[utoipa::path(
    delete, path = "/v1/regions/global/iam/service-accounts/{id}", operation_id = "deleteServiceAccount", tag = "serviceaccounts",
    params(("id" = String, Path, description = "Service account id.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
    ),
    security(("bearerAuth" = []))
)]
pub async fn delete<A: HttpAdapters>(
    state: web::Data<AppState<A>>,
    Caller(caller): Caller,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.admin.delete(&caller, &context(&req), &id).await?;
    Ok(HttpResponse::NoContent().finish())
}
