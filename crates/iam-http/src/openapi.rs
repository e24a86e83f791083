//! The `OpenAPI` 3.1 document, generated from the handlers' annotations and the DTO types.
//!
//! Every operation carries `x-visibility: [public, internal]`, as the published contract does.

use iam_domain::{
    Audience, Description, DisplayName, ExternalSubject, Issuer, RoleSlug, resource_id,
};
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{ErrorBody, ErrorDetail, ErrorEnvelope};
use crate::{credentials, federated_credentials, health, service_accounts, token_endpoints};

/// The API description served at `GET /openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "IAM service accounts",
        description = "Service accounts and machine credentials of the k0rdent API.",
    ),
    paths(
        service_accounts::list,
        service_accounts::create,
        service_accounts::get,
        service_accounts::update,
        service_accounts::delete,
        credentials::list,
        credentials::create,
        credentials::get,
        credentials::delete,
        federated_credentials::list,
        federated_credentials::create,
        federated_credentials::get,
        federated_credentials::delete,
        token_endpoints::mint,
        token_endpoints::oauth2_token,
        token_endpoints::introspect,
        token_endpoints::revoke,
        token_endpoints::jwks,
        token_endpoints::metadata,
        health::healthz,
        health::readyz,
        crate::metrics::metrics,
        serve,
    ),
    components(schemas(
        service_accounts::ServiceAccountView,
        service_accounts::ServiceAccountList,
        service_accounts::CreateServiceAccountBody,
        service_accounts::PatchServiceAccountBody,
        credentials::CredentialView,
        credentials::CreatedCredentialBody,
        credentials::CredentialList,
        credentials::CreateCredentialBody,
        federated_credentials::FederatedCredentialView,
        federated_credentials::FederatedCredentialList,
        federated_credentials::CreateFederatedCredentialBody,
        token_endpoints::TokenResponse,
        token_endpoints::TokenRequestBody,
        token_endpoints::TokenBody,
        token_endpoints::ScopeNarrowing,
        token_endpoints::GrantType,
        token_endpoints::OAuthTokenForm,
        token_endpoints::Introspection,
        token_endpoints::ActiveToken,
        token_endpoints::InactiveToken,
        token_endpoints::Revoked,
        ErrorEnvelope,
        ErrorBody,
        ErrorDetail,
    )),
    modifiers(&Conventions),
    tags(
        (name = "serviceaccounts", description = "Service accounts (machine principals of an organization), their client secrets as in the published k0rdent API, and their federated credentials (workload identity federation: tokens of a trusted issuer instead of a secret)."),
        (name = "Auth", description = "Tokens for service accounts (client credentials)."),
    )
)]
pub struct ApiDoc;

struct Conventions;

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearerAuth",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                let visibility = ExtensionsBuilder::new()
                    .add("x-visibility", serde_json::json!(["public", "internal"]))
                    .build();
                match &mut operation.extensions {
                    Some(extensions) => extensions.merge(visibility),
                    None => operation.extensions = Some(visibility),
                }
                declare_common_answers(operation);
                default_page_size(operation);
                link_created(operation);
            }
        }
    }
}

/// A link: its name, the operation it leads to, and that operation's parameters as runtime
/// expressions.
type Link = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// `OpenAPI` links from each create's 201 to what can be done with the created resource, so
/// clients (and stateful testing) can walk accounts → credentials.
fn link_created(operation: &mut utoipa::openapi::path::Operation) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::link::LinkBuilder;

    const ACCOUNT_ID: &str = "$response.body#/id";
    let links: &[Link] = match operation.operation_id.as_deref() {
        Some("createServiceAccount") => &[
            (
                "GetServiceAccount",
                "getServiceAccount",
                &[("id", ACCOUNT_ID)],
            ),
            (
                "UpdateServiceAccount",
                "updateServiceAccount",
                &[("id", ACCOUNT_ID)],
            ),
            (
                "DeleteServiceAccount",
                "deleteServiceAccount",
                &[("id", ACCOUNT_ID)],
            ),
            (
                "ListServiceAccountCredentials",
                "listServiceAccountCredentials",
                &[("serviceAccountId", ACCOUNT_ID)],
            ),
            (
                "CreateServiceAccountCredential",
                "createServiceAccountCredential",
                &[("serviceAccountId", ACCOUNT_ID)],
            ),
            (
                "ListServiceAccountFederatedCredentials",
                "listServiceAccountFederatedCredentials",
                &[("serviceAccountId", ACCOUNT_ID)],
            ),
            (
                "CreateServiceAccountFederatedCredential",
                "createServiceAccountFederatedCredential",
                &[("serviceAccountId", ACCOUNT_ID)],
            ),
        ],
        Some("createServiceAccountCredential") => &[
            (
                "GetServiceAccountCredential",
                "getServiceAccountCredential",
                &[
                    ("serviceAccountId", "$response.body#/serviceAccountId"),
                    ("id", "$response.body#/id"),
                ],
            ),
            (
                "DeleteServiceAccountCredential",
                "deleteServiceAccountCredential",
                &[
                    ("serviceAccountId", "$response.body#/serviceAccountId"),
                    ("id", "$response.body#/id"),
                ],
            ),
        ],
        Some("createServiceAccountFederatedCredential") => &[
            (
                "GetServiceAccountFederatedCredential",
                "getServiceAccountFederatedCredential",
                &[
                    ("serviceAccountId", "$response.body#/serviceAccountId"),
                    ("id", "$response.body#/id"),
                ],
            ),
            (
                "DeleteServiceAccountFederatedCredential",
                "deleteServiceAccountFederatedCredential",
                &[
                    ("serviceAccountId", "$response.body#/serviceAccountId"),
                    ("id", "$response.body#/id"),
                ],
            ),
        ],
        _ => return,
    };
    let Some(RefOr::T(created)) = operation.responses.responses.get_mut("201") else {
        return;
    };
    for (name, target, parameters) in links {
        let mut link = LinkBuilder::new().operation_id(*target);
        for (parameter, expression) in *parameters {
            link = link.parameter(*parameter, *expression);
        }
        created
            .links
            .insert((*name).to_owned(), RefOr::T(link.build()));
    }
}

/// Parameters as the parsers take them: `pageSize` defaults to the domain's
/// [`PageSize::DEFAULT`](iam_domain::PageSize::DEFAULT); a `scopeId` filter is not empty; an
/// `Idempotency-Key` is 1–255 visible ASCII characters.
fn default_page_size(operation: &mut utoipa::openapi::path::Operation) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::Schema;

    for parameter in operation.parameters.iter_mut().flatten() {
        let Some(RefOr::T(Schema::Object(schema))) = &mut parameter.schema else {
            continue;
        };
        match parameter.name.as_str() {
            "pageSize" => schema.default = Some(serde_json::json!(iam_domain::PageSize::DEFAULT)),
            "scopeId" => schema.min_length = Some(1),
            // `idempotency::key_of`: 1–255 visible ASCII characters.
            "Idempotency-Key" => {
                schema.min_length = Some(1);
                schema.max_length = Some(255);
                schema.pattern = Some("^[\\x21-\\x7E]+$".to_owned());
            }
            _ => {}
        }
    }
}

/// Declares the answers any operation can get from the server's common layers, where the
/// operation does not declare them itself: 405 (with `Allow`: the route serves other
/// methods), 500, 503 (with `Retry-After`: the database is unavailable or the request
/// deadline passed), and for operations with a body 413 (over 64 KiB) and 415 (not JSON).
fn declare_common_answers(operation: &mut utoipa::openapi::path::Operation) {
    use utoipa::openapi::header::HeaderBuilder;
    use utoipa::openapi::response::ResponseBuilder;
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    use utoipa::openapi::{ContentBuilder, Ref, RefOr};

    let error = |description: &str, header: Option<(&str, Type, &str)>| {
        let mut response = ResponseBuilder::new().description(description).content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Error")))
                .build(),
        );
        if let Some((name, kind, meaning)) = header {
            response = response.header(
                name,
                HeaderBuilder::new()
                    .schema(ObjectBuilder::new().schema_type(kind))
                    .description(Some(meaning))
                    .build(),
            );
        }
        RefOr::T(response.build())
    };
    let mut answers = vec![
        (
            "405",
            error(
                "The route does not serve this method.",
                Some(("Allow", Type::String, "The methods the route serves.")),
            ),
        ),
        (
            "500",
            error("An unexpected failure (the cause is logged).", None),
        ),
        (
            "503",
            error(
                "The database is unavailable or the request deadline passed; retry.",
                Some((
                    "Retry-After",
                    Type::Integer,
                    "Seconds to wait before retrying.",
                )),
            ),
        ),
    ];
    if operation.request_body.is_some() {
        answers.push(("413", error("The body exceeds 64 KiB.", None)));
        answers.push(("415", error("The body's media type is not accepted.", None)));
    }
    for (status, answer) in answers {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert(answer);
    }
}

/// The document as JSON.
/// The `OpenAPI` 3.1 document of this service.
#[utoipa::path(
    get, path = "/openapi.json", operation_id = "getOpenApiDocument", tag = "Operations",
    responses((status = 200, description = "The OpenAPI 3.1 document.", content_type = "application/json"))
)]
pub async fn serve() -> actix_web::HttpResponse {
    static DOCUMENT: std::sync::LazyLock<String> = std::sync::LazyLock::new(json);
    actix_web::HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT.as_str())
}

/// The document as JSON text.
pub fn json() -> String {
    let mut document = match serde_json::to_value(ApiDoc::openapi()) {
        Ok(document) => document,
        Err(e) => {
            tracing::error!(error = %e, "OpenAPI serialization failed");
            return "{}".to_owned();
        }
    };
    apply_domain_limits(&mut document);
    fix_link_keys(&mut document);
    // The form's `scope`: role slugs separated by white space (or nothing).
    let slug = RoleSlug::PATTERN
        .trim_start_matches('^')
        .trim_end_matches('$');
    if let Some(scope) = document
        .pointer_mut("/components/schemas/OAuthTokenForm/properties/scope")
        .and_then(serde_json::Value::as_object_mut)
    {
        scope.insert(
            "pattern".to_owned(),
            format!("^\\s*({slug}(\\s+{slug})*)?\\s*$").into(),
        );
    }
    client_authentication(&mut document);
    // A PATCH must name at least one field (else 400 `EMPTY_PATCH`).
    if let Some(patch) = document
        .pointer_mut("/components/schemas/PatchServiceAccountBody")
        .and_then(serde_json::Value::as_object_mut)
    {
        patch.insert("minProperties".to_owned(), 1.into());
    }
    document.to_string()
}

/// SPEC §9: `client_assertion_type` has one value. (That a request authenticates with a
/// secret or an assertion, never both, stays prose: a `oneOf` here would turn the body into
/// a union that generated clients handle badly; `schemathesis.toml` notes the rule.)
fn client_authentication(document: &mut serde_json::Value) {
    use serde_json::json;
    for schema in ["TokenRequestBody", "OAuthTokenForm"] {
        if let Some(kind) = document
            .pointer_mut(&format!(
                "/components/schemas/{schema}/properties/client_assertion_type"
            ))
            .and_then(serde_json::Value::as_object_mut)
        {
            kind.insert("enum".to_owned(), json!([crate::oauth_form::JWT_BEARER]));
        }
    }
}

/// utoipa 5 serializes a link's `operationId` as `operation_id` (and `requestBody` as
/// `request_body`); `OpenAPI` 3.1 spells them in camel case.
fn fix_link_keys(document: &mut serde_json::Value) {
    let Some(paths) = document
        .get_mut("paths")
        .and_then(serde_json::Value::as_object_mut)
    else {
        return;
    };
    let responses = paths
        .values_mut()
        .filter_map(serde_json::Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation.get_mut("responses"))
        .filter_map(serde_json::Value::as_object_mut)
        .flat_map(|responses| responses.values_mut());
    for response in responses {
        let Some(links) = response
            .get_mut("links")
            .and_then(serde_json::Value::as_object_mut)
        else {
            continue;
        };
        for link in links
            .values_mut()
            .filter_map(serde_json::Value::as_object_mut)
        {
            for (snake, camel) in [
                ("operation_id", "operationId"),
                ("request_body", "requestBody"),
            ] {
                if let Some(value) = link.remove(snake) {
                    link.insert(camel.to_owned(), value);
                }
            }
        }
    }
}

/// A string constraint of the domain.
#[derive(Clone, Copy)]
enum Limit {
    /// A resource id (service account, organization, project).
    ResourceId,
    /// A display name.
    DisplayName,
    /// A description.
    Description,
    /// A list of role slugs.
    Roles,
    /// An issuer, subject or audience of an external token (the same rules for each).
    ClaimValue,
    /// A list of audiences.
    Audiences,
}

/// Which schema properties the domain constrains: the lengths and patterns come from the
/// domain's constants, never from literals repeated here.
const LIMITS: &[(&str, &str, Limit)] = &[
    ("ServiceAccount", "id", Limit::ResourceId),
    ("ServiceAccount", "displayName", Limit::DisplayName),
    ("ServiceAccount", "description", Limit::Description),
    ("ServiceAccount", "roles", Limit::Roles),
    ("CreateServiceAccountBody", "id", Limit::ResourceId),
    (
        "CreateServiceAccountBody",
        "displayName",
        Limit::DisplayName,
    ),
    (
        "CreateServiceAccountBody",
        "description",
        Limit::Description,
    ),
    ("CreateServiceAccountBody", "roles", Limit::Roles),
    ("CreateServiceAccountBody", "scopeId", Limit::ResourceId),
    ("ScopeNarrowing", "roles", Limit::Roles),
    ("PatchServiceAccountBody", "displayName", Limit::DisplayName),
    ("PatchServiceAccountBody", "description", Limit::Description),
    ("PatchServiceAccountBody", "roles", Limit::Roles),
    ("FederatedCredential", "issuer", Limit::ClaimValue),
    ("FederatedCredential", "subject", Limit::ClaimValue),
    ("FederatedCredential", "audiences", Limit::Audiences),
    ("FederatedCredential", "description", Limit::Description),
    ("CreateFederatedCredentialBody", "issuer", Limit::ClaimValue),
    (
        "CreateFederatedCredentialBody",
        "subject",
        Limit::ClaimValue,
    ),
    (
        "CreateFederatedCredentialBody",
        "audiences",
        Limit::Audiences,
    ),
    (
        "CreateFederatedCredentialBody",
        "description",
        Limit::Description,
    ),
];

/// Writes the domain's constraints into the schemas [`LIMITS`] names.
fn apply_domain_limits(document: &mut serde_json::Value) {
    use serde_json::json;
    for (schema, property, limit) in LIMITS {
        let Some(target) = document
            .pointer_mut(&format!(
                "/components/schemas/{schema}/properties/{property}"
            ))
            .and_then(serde_json::Value::as_object_mut)
        else {
            tracing::error!(schema, property, "a constrained schema property is missing");
            continue;
        };
        let (target, constraints) = match limit {
            Limit::ResourceId => (
                target,
                json!({"minLength": 1, "maxLength": resource_id::MAX_LEN, "pattern": resource_id::PATTERN}),
            ),
            Limit::DisplayName => (
                target,
                json!({"minLength": 1, "maxLength": DisplayName::MAX_LEN, "pattern": DisplayName::PATTERN}),
            ),
            Limit::Description => (
                target,
                json!({"maxLength": Description::MAX_LEN, "pattern": Description::PATTERN}),
            ),
            Limit::ClaimValue => (target, claim_value_limits()),
            Limit::Audiences => {
                let items = target
                    .entry("items")
                    .or_insert_with(|| json!({"type": "string"}));
                let Some(items) = items.as_object_mut() else {
                    continue;
                };
                (items, claim_value_limits())
            }
            Limit::Roles => {
                let items = target
                    .entry("items")
                    .or_insert_with(|| json!({"type": "string"}));
                let Some(items) = items.as_object_mut() else {
                    continue;
                };
                (
                    items,
                    json!({"minLength": 1, "maxLength": RoleSlug::MAX_LEN, "pattern": RoleSlug::PATTERN}),
                )
            }
        };
        if let serde_json::Value::Object(constraints) = constraints {
            target.extend(constraints);
        }
    }
}

/// The rules of [`Issuer`], [`ExternalSubject`] and [`Audience`] (one set: they share it).
fn claim_value_limits() -> serde_json::Value {
    const _: () = assert!(
        Issuer::MAX_LEN == ExternalSubject::MAX_LEN && Issuer::MAX_LEN == Audience::MAX_LEN
    );
    serde_json::json!({"minLength": 1, "maxLength": Issuer::MAX_LEN, "pattern": Issuer::PATTERN})
}

#[cfg(test)]
mod tests {
    #[test]
    fn document_is_openapi_3_1_and_every_operation_has_x_visibility() {
        let doc: serde_json::Value = serde_json::from_str(&super::json()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let paths = doc["paths"].as_object().unwrap();
        assert!(paths.contains_key("/v1/regions/global/iam/service-accounts/{id}"));
        let mut operations = 0;
        for item in paths.values() {
            for (_, op) in item.as_object().unwrap() {
                assert_eq!(
                    op["x-visibility"],
                    serde_json::json!(["public", "internal"])
                );
                operations += 1;
            }
        }
        assert_eq!(operations, 23);
    }
}
