//! The four credential routes under
//! `/v1/regions/global/iam/service-accounts/{serviceAccountId}/credentials`.
//!
//! The client secret appears in exactly one place: the 201 body of create (and its sealed
//! idempotency record). Every other representation omits it.
#![expect(
    clippy::missing_errors_doc,
    reason = "handler doc comments become OpenAPI summaries; their errors are the statuses listed in #[utoipa::path]"
)]

use actix_web::http::StatusCode;
use actix_web::http::header::LOCATION;
use actix_web::{HttpRequest, HttpResponse, web};
use iam_domain::ports::Recorder;
use iam_domain::{ClientSecret, CreatedCredential, Credential, CredentialFilter};
use serde::{Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::body::{self, Fields, Presence};
use crate::caller::{Caller, ReadCaller};
use crate::error::{ApiError, ErrorDetail, ErrorEnvelope};
use crate::idempotency;
use crate::paging::PageQuery;
use crate::reply::Reply;
use crate::service_accounts::{BASE_PATH, context};
use crate::{AppState, HttpAdapters};

/// A credential as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Credential)]
pub struct CredentialView<'a> {
    /// `/v1/regions/global/iam/service-accounts/{serviceAccountId}/credentials/{id}`.
    pub self_link: String,
    /// Server-made UUID v4.
    pub uid: Uuid,
    /// `cred-` + random lowercase base32.
    pub id: String,
    /// The owning service account.
    pub service_account_id: String,
    /// `active` until `expiresAt`, then `expired`.
    #[schema(value_type = CredentialStatusSchema)]
    pub status: &'static str,
    /// RFC 3339, UTC.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
    /// `sub` of the creator.
    pub created_by: String,
    /// RFC 3339, UTC.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// Last successful token mint; null until then.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<OffsetDateTime>,
    /// Client IP of the last successful token mint; null until then.
    pub last_used_ip: Option<String>,
    /// Only in the response that creates the credential; store it, it is never shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    pub client_secret: Option<Shown<'a>>,
}

/// The 201 of a credential create: the credential with its client secret, shown this once.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = CreatedCredential)]
#[expect(
    dead_code,
    reason = "documents the 201 body in the OpenAPI document only"
)]
pub struct CreatedCredentialBody {
    #[serde(flatten)]
    credential: CredentialView<'static>,
    /// `plt_cs_…`: store it, it is never shown again.
    client_secret: String,
}

/// A secret being shown: the one place a plaintext secret is serialized.
#[derive(Debug, Clone, Copy)]
pub struct Shown<'a>(&'a ClientSecret);

impl Serialize for Shown<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.expose())
    }
}

/// Status of a credential.
#[derive(ToSchema)]
#[schema(as = CredentialStatus)]
pub enum CredentialStatusSchema {
    /// Not yet expired.
    #[schema(rename = "active")]
    Active,
    /// Past `expiresAt`.
    #[schema(rename = "expired")]
    Expired,
}

impl<'a> CredentialView<'a> {
    fn new(credential: &Credential, now: OffsetDateTime, secret: Option<&'a ClientSecret>) -> Self {
        Self {
            self_link: self_link(credential),
            uid: credential.uid,
            id: credential.id.to_string(),
            service_account_id: credential.service_account_id.to_string(),
            status: credential.status(now).as_str(),
            expires_at: credential.expires_at,
            created_by: credential.created_by.to_string(),
            created_at: credential.created_at,
            last_used_at: credential.last_used_at,
            last_used_ip: credential.last_used_ip.map(|ip| ip.to_string()),
            client_secret: secret.map(Shown),
        }
    }
}

fn self_link(credential: &Credential) -> String {
    format!(
        "{BASE_PATH}/{}/credentials/{}",
        credential.service_account_id, credential.id
    )
}

/// A page of credentials.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialList<'a> {
    /// The page, ordered by `createdAt` then `uid`.
    pub credentials: Vec<CredentialView<'a>>,
    /// Cursor mode: present iff more results exist.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
    /// Offset mode: the number of all matching credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

/// Body of `POST …/credentials` (optional; documentation, parsed field by field).
#[derive(ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "documents the request body in the OpenAPI document only"
)]
pub struct CreateCredentialBody {
    /// RFC 3339; default now + the org's default lifetime; at most now + the org's maximum.
    #[schema(format = DateTime)]
    expires_at: Option<String>,
}

const LIST_PARAMS: &[&str] = &["pageSize", "pageToken", "offset", "status"];

/// List a service account's credentials (never with secrets). Non-admins get 404.
#[utoipa::path(
    get, path = "/v1/regions/global/iam/service-accounts/{serviceAccountId}/credentials", operation_id = "listServiceAccountCredentials", tag = "serviceaccounts",
    params(
        ("serviceAccountId" = String, Path, description = "Service account id."),
        ("status" = Option<CredentialStatusSchema>, Query, description = "Only this status (at the time of the request)."),
        ("pageSize" = Option<u16>, Query, description = "1-500, default 50.", minimum = 1, maximum = 500),
        ("pageToken" = Option<String>, Query, description = "Cursor mode: the previous page's nextPageToken."),
        ("offset" = Option<u64>, Query, description = "Offset mode (reports total); excludes pageToken."),
    ),
    responses(
        (status = 200, body = CredentialList),
        (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
    ),
    security(("bearerAuth" = []))
)]
pub async fn list<A: HttpAdapters>(
    state: web::Data<AppState<A>>,
    caller: ReadCaller,
    req: HttpRequest,
    account: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let result: Result<HttpResponse, ApiError> = async {
        // The uniform 404 comes before any validation of the query.
        state.admin.visible_id(&caller, &account)?;
        let params = body::query(req.query_string(), LIST_PARAMS)?;
        let mut errors: Vec<ErrorDetail> = Vec::new();
        let mut filter = CredentialFilter::default();
        let mut paging = PageQuery::default();
        for (name, value) in params {
            if paging.take(&name, &value, &mut errors) {
                continue;
            }
            // body::query admits only LIST_PARAMS: what is left is `status`.
            match value.parse() {
                Ok(status) => filter.status = Some(status),
                Err(e) => errors.push(ErrorDetail::invalid(name, e)),
            }
        }
        let binding = [
            "credentials",
            caller.tenant.as_str(),
            account.as_str(),
            filter.status.map_or("", |s| s.as_str()),
        ];
        let request = paging.request(&state.page_tokens, &binding, &mut errors);
        if !errors.is_empty() {
            return Err(ApiError::bad_request(errors));
        }
        let (page, now) = state
            .credentials
            .list(&caller, &account, filter, request)
            .await?;
        let body = CredentialList {
            credentials: page
                .items
                .iter()
                .map(|c| CredentialView::new(c, now, None))
                .collect(),
            next_page_token: page.next.map(|c| state.page_tokens.encode(&c, &binding)),
            total: page.total,
        };
        Ok(Reply::json(StatusCode::OK, &body)?.into_response())
    }
    .await;
    caller.answer(result).await
}

/// Create a client secret for a service account; the secret is in this response only.
#[utoipa::path(
    post, path = "/v1/regions/global/iam/service-accounts/{serviceAccountId}/credentials", operation_id = "createServiceAccountCredential", tag = "serviceaccounts",
    params(
        ("serviceAccountId" = String, Path, description = "Service account id."),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for 24 h (without using another slot)."),
    ),
    request_body(content = Option<CreateCredentialBody>),
    responses(
        (status = 201, body = CreatedCredentialBody, headers(("Location" = String), ("Cache-Control" = String, description = "`no-store`: the body holds a secret."), ("Pragma" = String, description = "`no-cache`"))),
        (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope, description = "The caller does not hold every role of the account."),
        (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    ),
    security(("bearerAuth" = []))
)]
pub async fn create<A: HttpAdapters>(
    state: web::Data<AppState<A>>,
    Caller(caller): Caller,
    req: HttpRequest,
    account: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // The uniform 404 comes before any validation of the body or headers.
    state.admin.visible_id(&caller, &account)?;
    let bytes = body::read(payload).await?;
    let expires_at = match body::optional_object(&req, &bytes)? {
        None => None,
        Some(map) => parse_create(map)?,
    };
    let context = context(&req);
    // A replay hands out the secret again: only to a caller who could create it now.
    let may_replay = async || {
        Ok(state
            .credentials
            .check_may_create(&caller, &account)
            .await?)
    };
    idempotency::run(
        &state,
        &caller,
        &req,
        &bytes,
        may_replay,
        async |recording| {
            let recorder = recording.as_ref().map(|r| r.of(shown_once));
            let created = state
                .credentials
                .create(
                    &caller,
                    &context,
                    &account,
                    expires_at,
                    recorder
                        .as_ref()
                        .map(|r| r as &dyn Recorder<CreatedCredential>),
                )
                .await?;
            shown_once(&created)
        },
    )
    .await
}

/// The 201 of a create, the one response showing the secret (sent, and recorded sealed for an
/// `Idempotency-Key`).
fn shown_once(created: &CreatedCredential) -> Result<Reply, ApiError> {
    let credential = &created.credential;
    let view = CredentialView::new(credential, credential.created_at, Some(&created.secret));
    Ok(Reply::json(StatusCode::CREATED, &view)?
        .header(LOCATION, self_link(credential))
        .no_store())
}

fn parse_create(
    map: serde_json::Map<String, serde_json::Value>,
) -> Result<Option<OffsetDateTime>, ApiError> {
    let mut f = Fields::new(map);
    f.reject_unknown(&["expiresAt"], &[]);
    let expires_at = match f.string("expiresAt") {
        Presence::Value(raw) => f.parse("expiresAt", raw, |raw| {
            OffsetDateTime::parse(&raw, &Rfc3339)
                .ok()
                .and_then(|at| at.checked_to_offset(time::UtcOffset::UTC))
                .ok_or_else(|| iam_domain::InvalidValue {
                    reason: "INVALID_FORMAT",
                    message: "must be an RFC 3339 timestamp such as 2027-01-31T00:00:00Z".into(),
                })
        }),
        Presence::Absent | Presence::Null | Presence::Invalid => None,
    };
    f.finish()?;
    Ok(expires_at)
}

/// Get one credential (never with its secret). Non-admins get 404.
#[utoipa::path(
    get, path = "/v1/regions/global/iam/service-accounts/{serviceAccountId}/credentials/{id}", operation_id = "getServiceAccountCredential", tag = "serviceaccounts",
    params(
        ("serviceAccountId" = String, Path, description = "Service account id."),
        ("id" = String, Path, description = "Credential id."),
    ),
    responses(
        (status = 200, body = CredentialView),
        (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
    ),
    security(("bearerAuth" = []))
)]
pub async fn get<A: HttpAdapters>(
    state: web::Data<AppState<A>>,
    caller: ReadCaller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let result: Result<HttpResponse, ApiError> = async {
        let (account, id) = path.into_inner();
        let (credential, now) = state.credentials.get(&caller, &account, &id).await?;
        Ok(
            Reply::json(StatusCode::OK, &CredentialView::new(&credential, now, None))?
                .into_response(),
        )
    }
    .await;
    caller.answer(result).await
}

/// Delete a credential; its secret stops working at once. Non-admins get 404.
#[utoipa::path(
    delete, path = "/v1/regions/global/iam/service-accounts/{serviceAccountId}/credentials/{id}", operation_id = "deleteServiceAccountCredential", tag = "serviceaccounts",
    params(
        ("serviceAccountId" = String, Path, description = "Service account id."),
        ("id" = String, Path, description = "Credential id."),
    ),
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
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (account, id) = path.into_inner();
    state
        .credentials
        .delete(&caller, &context(&req), &account, &id)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
