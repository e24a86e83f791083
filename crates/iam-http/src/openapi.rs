//! The `OpenAPI` 3.1 document, generated from the handlers' annotations and the DTO types.
//!
//! Every operation carries `x-visibility: [public, internal]`, as the published contract does.

use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{ErrorBody, ErrorDetail, ErrorEnvelope};
use crate::{credentials, health, service_accounts, token_endpoints};

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
        token_endpoints::mint,
        token_endpoints::oauth2_token,
        token_endpoints::introspect,
        token_endpoints::revoke,
        token_endpoints::jwks,
        token_endpoints::metadata,
        health::healthz,
        health::readyz,
    ),
    components(schemas(
        service_accounts::ServiceAccountView,
        service_accounts::ServiceAccountList,
        service_accounts::CreateServiceAccountBody,
        service_accounts::PatchServiceAccountBody,
        credentials::CredentialView,
        credentials::CredentialList,
        credentials::CreateCredentialBody,
        token_endpoints::TokenResponse,
        token_endpoints::TokenRequestBody,
        ErrorEnvelope,
        ErrorBody,
        ErrorDetail,
    )),
    modifiers(&Conventions),
    tags(
        (name = "ServiceAccounts", description = "Machine principals of an organization."),
        (name = "Credentials", description = "Client secrets of a service account."),
        (name = "Auth", description = "Tokens for service accounts (client credentials)."),
    )
)]
pub struct ApiDoc;

struct Conventions;

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
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
            }
        }
    }
}

/// The document as JSON.
pub fn json() -> String {
    ApiDoc::openapi().to_json().unwrap_or_else(|e| {
        tracing::error!(error = %e, "OpenAPI serialization failed");
        "{}".to_owned()
    })
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
        assert_eq!(operations, 17);
    }
}
