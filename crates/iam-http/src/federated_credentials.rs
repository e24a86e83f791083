//! The four federated credential routes under
//! `/v1/regions/global/iam/service-accounts/{serviceAccountId}/federated-credentials`
//! (SPEC §9): bind a trusted issuer's subject to a service account, so a workload holding a
//! token of that issuer for that subject gets access tokens without any stored secret.
#![expect(
    clippy::missing_errors_doc,
    reason = "handler doc comments become OpenAPI summaries; their errors are the statuses listed in #[utoipa::path]"
)]

use actix_web::http::StatusCode;
use actix_web::http::header::LOCATION;
use actix_web::{HttpRequest, HttpResponse, web};
use iam_domain::federated_credential::{MAX_AUDIENCES, distinct_audiences};
use iam_domain::ports::Recorder;
use iam_domain::service_account::Description;
use iam_domain::{Audience, ExternalSubject, FederatedCredential, Issuer, NewFederatedCredential};
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
use crate::service_accounts::{BASE_PATH, context};
use crate::{AppState, HttpAdapters};

/// A federated credential as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = FederatedCredential)]
pub struct FederatedCredentialView {
    /// `/v1/regions/global/iam/service-accounts/{serviceAccountId}/federated-credentials/{id}`.
    pub self_link: String,
    /// Server-made UUID v4.
    pub uid: Uuid,
    /// `fc-` + random lowercase base32.
    pub id: String,
    /// The owning service account.
    pub service_account_id: String,
    /// The trusted issuer whose tokens it accepts (compared exactly with `iss`).
    pub issuer: String,
    /// The subject those tokens must name (compared exactly with `sub`).
    pub subject: String,
    /// A token's `aud` must contain one of these.
    pub audiences: Vec<String>,
    /// Free text.
    pub description: Option<String>,
    /// `sub` of the creator.
    pub created_by: String,
    /// RFC 3339, UTC.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// Last successful exchange; null until then.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<OffsetDateTime>,
}

impl FederatedCredentialView {
    fn new(credential: &FederatedCredential) -> Self {
        Self {
            self_link: self_link(credential),
            uid: credential.uid,
            id: credential.id.to_string(),
            service_account_id: credential.service_account_id.to_string(),
            issuer: credential.issuer.to_string(),
            subject: credential.subject.to_string(),
            audiences: credential
                .audiences
                .iter()
                .map(ToString::to_string)
                .collect(),
            description: credential
                .description
                .as_ref()
                .map(|d| d.as_str().to_owned()),
            created_by: credential.created_by.to_string(),
            created_at: credential.created_at,
            last_used_at: credential.last_used_at,
        }
    }
}

fn self_link(credential: &FederatedCredential) -> String {
    format!(
        "{BASE_PATH}/{}/federated-credentials/{}",
        credential.service_account_id, credential.id
    )
}

/// A page of federated credentials.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FederatedCredentialList {
    /// The page, ordered by `createdAt` then `uid`.
    pub federated_credentials: Vec<FederatedCredentialView>,
    /// Cursor mode: present iff more results exist.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
    /// Offset mode: the number of all federated credentials of the account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

/// Body of `POST …/federated-credentials` (documentation, parsed field by field).
#[derive(ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "documents the request body in the OpenAPI document only"
)]
pub struct CreateFederatedCredentialBody {
    /// An issuer the organization trusts (the operator lists them in the directory file).
    #[schema(min_length = 1, max_length = 512)]
    issuer: String,
    /// The subject (`sub`) tokens must name, e.g. `system:serviceaccount:ci:deployer`.
    #[schema(min_length = 1, max_length = 512)]
    subject: String,
    /// Accepted `aud` values (1–10); default: this service's issuer URL.
    #[schema(min_items = 1, max_items = 10)]
    audiences: Option<Vec<String>>,
    /// Free text (at most 1024 characters).
    #[schema(max_length = 1024)]
    description: Option<String>,
}

const LIST_PARAMS: &[&str] = &["pageSize", "pageToken", "offset"];

/// List a service account's federated credentials. Non-admins get 404.
#[utoipa::path(
    get, path = "/v1/regions/global/iam/service-accounts/{serviceAccountId}/federated-credentials", operation_id = "listServiceAccountFederatedCredentials", tag = "serviceaccounts",
    params(
        ("serviceAccountId" = String, Path, description = "Service account id."),
        ("pageSize" = Option<u16>, Query, description = "1-500, default 50.", minimum = 1, maximum = 500),
        ("pageToken" = Option<String>, Query, description = "Cursor mode: the previous page's nextPageToken."),
        ("offset" = Option<u64>, Query, description = "Offset mode (reports total); excludes pageToken."),
    ),
    responses(
        (status = 200, body = FederatedCredentialList),
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
        let mut paging = PageQuery::default();
        for (name, value) in params {
            // body::query admits only LIST_PARAMS, all of them paging parameters.
            paging.take(&name, &value, &mut errors);
        }
        let binding = [
            "federated-credentials",
            caller.tenant.as_str(),
            account.as_str(),
        ];
        let request = paging.request(&state.page_tokens, &binding, &mut errors);
        if !errors.is_empty() {
            return Err(ApiError::bad_request(errors));
        }
        let page = state.federation.list(&caller, &account, request).await?;
        let body = FederatedCredentialList {
            federated_credentials: page
                .items
                .iter()
                .map(FederatedCredentialView::new)
                .collect(),
            next_page_token: page.next.map(|c| state.page_tokens.encode(&c, &binding)),
            total: page.total,
        };
        Ok(Reply::json(StatusCode::OK, &body)?.into_response())
    }
    .await;
    caller.answer(result).await
}

/// Trust an external identity (issuer + subject) to act as a service account.
#[utoipa::path(
    post, path = "/v1/regions/global/iam/service-accounts/{serviceAccountId}/federated-credentials", operation_id = "createServiceAccountFederatedCredential", tag = "serviceaccounts",
    params(
        ("serviceAccountId" = String, Path, description = "Service account id."),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for 24 h (without using another slot)."),
    ),
    request_body = CreateFederatedCredentialBody,
    responses(
        (status = 201, body = FederatedCredentialView, headers(("Location" = String))),
        (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope, description = "The caller does not hold every role of the account."),
        (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope, description = "FEDERATED_CREDENTIAL_LIMIT_REACHED: the account has 20."),
        (status = 422, body = ErrorEnvelope, description = "ISSUER_NOT_TRUSTED: the organization does not trust the issuer."),
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
    let map = body::object(&req, &bytes)?
        .ok_or_else(|| ApiError::bad_request(vec![ErrorDetail::reason("BODY_REQUIRED")]))?;
    let request = parse_create(map)?;
    let context = context(&req);
    let may_replay = async || Ok(state.federation.check_may_create(&caller, &account).await?);
    idempotency::run(
        &state,
        &caller,
        &req,
        &bytes,
        may_replay,
        async |recording| {
            let recorder = recording.as_ref().map(|r| r.of(created));
            let credential = state
                .federation
                .create(
                    &caller,
                    &context,
                    &account,
                    request,
                    recorder
                        .as_ref()
                        .map(|r| r as &dyn Recorder<FederatedCredential>),
                )
                .await?;
            created(&credential)
        },
    )
    .await
}

/// The 201 of a create (sent, and recorded for an `Idempotency-Key`).
fn created(credential: &FederatedCredential) -> Result<Reply, ApiError> {
    Ok(Reply::json(
        StatusCode::CREATED,
        &FederatedCredentialView::new(credential),
    )?
    .header(LOCATION, self_link(credential)))
}

fn parse_create(
    map: serde_json::Map<String, serde_json::Value>,
) -> Result<NewFederatedCredential, ApiError> {
    let mut f = Fields::new(map);
    f.reject_unknown(&["issuer", "subject", "audiences", "description"], &[]);
    let issuer = f
        .required_string("issuer")
        .and_then(|raw| f.parse("issuer", raw, Issuer::parse));
    let subject = f
        .required_string("subject")
        .and_then(|raw| f.parse("subject", raw, ExternalSubject::parse));
    let audiences = match f.strings("audiences") {
        Presence::Value(raw) => {
            if raw.is_empty() {
                f.error(
                    "audiences",
                    "TOO_SHORT",
                    "name at least one audience, or omit it",
                );
            } else if raw.len() > MAX_AUDIENCES {
                f.error(
                    "audiences",
                    "TOO_LONG",
                    &format!("at most {MAX_AUDIENCES} audiences"),
                );
            }
            raw.into_iter()
                .filter_map(|(i, a)| f.parse(format!("audiences[{i}]"), a, Audience::parse))
                .collect()
        }
        Presence::Absent | Presence::Null | Presence::Invalid => Vec::new(),
    };
    let description = match f.string("description") {
        Presence::Value(raw) if !raw.is_empty() => f.parse("description", raw, Description::parse),
        _ => None,
    };
    f.finish()?;
    let (Some(issuer), Some(subject)) = (issuer, subject) else {
        tracing::error!("federated credential passed validation without its required fields");
        return Err(ApiError::internal());
    };
    Ok(NewFederatedCredential {
        issuer,
        subject,
        audiences: distinct_audiences(audiences),
        description,
    })
}

/// Get one federated credential. Non-admins get 404.
#[utoipa::path(
    get, path = "/v1/regions/global/iam/service-accounts/{serviceAccountId}/federated-credentials/{id}", operation_id = "getServiceAccountFederatedCredential", tag = "serviceaccounts",
    params(
        ("serviceAccountId" = String, Path, description = "Service account id."),
        ("id" = String, Path, description = "Federated credential id."),
    ),
    responses(
        (status = 200, body = FederatedCredentialView),
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
        let credential = state.federation.get(&caller, &account, &id).await?;
        Ok(
            Reply::json(StatusCode::OK, &FederatedCredentialView::new(&credential))?
                .into_response(),
        )
    }
    .await;
    caller.answer(result).await
}

/// Delete a federated credential; tokens minted with it stop working at once. Non-admins get 404.
#[utoipa::path(
    delete, path = "/v1/regions/global/iam/service-accounts/{serviceAccountId}/federated-credentials/{id}", operation_id = "deleteServiceAccountFederatedCredential", tag = "serviceaccounts",
    params(
        ("serviceAccountId" = String, Path, description = "Service account id."),
        ("id" = String, Path, description = "Federated credential id."),
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
        .federation
        .delete(&caller, &context(&req), &account, &id)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
