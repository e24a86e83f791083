//! The `OpenAPI` document is one source with the routes and the parsers: a snapshot of it,
//! every route documented, every documented operation routed, and the domain's limits in
//! its schemas.

use actix_web::http::Method;
use actix_web::test::TestRequest;
use iam_domain::{
    Audience, Description, DisplayName, ExternalSubject, Issuer, RoleSlug, resource_id,
};
use iam_http::routes;
use serde_json::Value;

use crate::support::{TestAdapters, World, send};

fn document() -> Value {
    serde_json::from_str(&iam_http::openapi::json()).unwrap()
}

#[test]
fn the_document_matches_its_snapshot() {
    // Review a change with `cargo insta review` (or INSTA_UPDATE=always) and commit it.
    insta::assert_json_snapshot!("openapi", document());
}

#[actix_web::test]
async fn every_route_is_documented_and_every_documented_operation_is_routed() {
    let document = document();
    let paths = document["paths"].as_object().unwrap();
    let routes = routes::<TestAdapters>();
    let mut routed: Vec<&str> = routes.iter().map(|r| r.path.as_str()).collect();
    let mut documented: Vec<&str> = paths.keys().map(String::as_str).collect();
    routed.sort_unstable();
    documented.sort_unstable();
    assert_eq!(routed, documented, "the same paths");

    let world = World::new();
    let app = world.app().await;
    for route in &routes {
        let mut operations: Vec<String> = paths[&route.path]
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| ["get", "put", "post", "delete", "patch"].contains(&k.as_str()))
            .map(|k| k.to_uppercase())
            .collect();
        operations.sort();
        let mut methods: Vec<String> = route.methods().map(str::to_owned).collect();
        methods.sort();
        assert_eq!(operations, methods, "{}", route.path);

        // What is registered answers exactly as declared: an unserved method is 405 naming
        // the declared methods.
        let concrete = route
            .path
            .replace("{id}", "x1")
            .replace("{serviceAccountId}", "sa-x");
        let answer = send(
            &app,
            TestRequest::default()
                .method(Method::OPTIONS)
                .uri(&concrete),
        )
        .await;
        assert_eq!(answer.status, 405, "{concrete}");
        assert_eq!(answer.header("allow"), Some(route.allow), "{concrete}");
    }
}

#[test]
fn schema_limits_are_the_domains_constants() {
    let document = document();
    let schema = |name: &str, property: &str| {
        document
            .pointer(&format!("/components/schemas/{name}/properties/{property}"))
            .unwrap()
            .clone()
    };
    for name in ["ServiceAccount", "CreateServiceAccountBody"] {
        let id = schema(name, "id");
        assert_eq!(id["maxLength"], resource_id::MAX_LEN);
        assert_eq!(id["pattern"], resource_id::PATTERN);
    }
    for name in [
        "ServiceAccount",
        "CreateServiceAccountBody",
        "PatchServiceAccountBody",
    ] {
        assert_eq!(
            schema(name, "displayName")["maxLength"],
            DisplayName::MAX_LEN
        );
        assert_eq!(schema(name, "displayName")["pattern"], DisplayName::PATTERN);
        assert_eq!(schema(name, "description")["pattern"], Description::PATTERN);
        assert_eq!(
            schema(name, "description")["maxLength"],
            Description::MAX_LEN
        );
        let roles = schema(name, "roles");
        assert_eq!(roles["items"]["maxLength"], RoleSlug::MAX_LEN);
        assert_eq!(roles["items"]["pattern"], RoleSlug::PATTERN);
    }
    for name in ["FederatedCredential", "CreateFederatedCredentialBody"] {
        assert_eq!(schema(name, "issuer")["maxLength"], Issuer::MAX_LEN);
        assert_eq!(schema(name, "issuer")["pattern"], Issuer::PATTERN);
        assert_eq!(
            schema(name, "subject")["maxLength"],
            ExternalSubject::MAX_LEN
        );
        assert_eq!(schema(name, "subject")["pattern"], ExternalSubject::PATTERN);
        let audiences = schema(name, "audiences");
        assert_eq!(audiences["items"]["maxLength"], Audience::MAX_LEN);
        assert_eq!(audiences["items"]["pattern"], Audience::PATTERN);
        assert_eq!(
            schema(name, "description")["maxLength"],
            Description::MAX_LEN
        );
    }
}

#[test]
fn names_are_the_published_documents_and_operation_ids_are_unique() {
    let document = document();
    let mut ids = Vec::new();
    for item in document["paths"].as_object().unwrap().values() {
        for operation in item.as_object().unwrap().values() {
            ids.push(operation["operationId"].as_str().unwrap().to_owned());
        }
    }
    let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "duplicated operationIds: {ids:?}");
    for published in [
        "listServiceAccounts",
        "createServiceAccount",
        "getServiceAccount",
        "updateServiceAccount",
        "deleteServiceAccount",
        "listServiceAccountCredentials",
        "createServiceAccountCredential",
        "getServiceAccountCredential",
        "deleteServiceAccountCredential",
        "listServiceAccountFederatedCredentials",
        "createServiceAccountFederatedCredential",
        "getServiceAccountFederatedCredential",
        "deleteServiceAccountFederatedCredential",
        "mintToken",
        "introspectToken",
        "revokeToken",
    ] {
        assert!(ids.iter().any(|id| id == published), "{published} missing");
    }
    assert!(
        document
            .pointer("/components/securitySchemes/bearerAuth")
            .is_some()
    );
    for schema in ["ServiceAccount", "Credential", "Error"] {
        assert!(
            document
                .pointer(&format!("/components/schemas/{schema}"))
                .is_some(),
            "{schema}"
        );
    }
}

#[test]
fn every_operation_declares_the_common_answers_and_bodies_are_closed() {
    let document = document();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = &operation["responses"];
            for status in ["405", "500", "503"] {
                assert!(
                    responses.get(status).is_some(),
                    "{method} {path}: no {status}"
                );
            }
            // `/readyz` answers its own 503 (`{"status": "unavailable"}`, for probes).
            if path != "/readyz" {
                assert!(
                    responses["503"]["headers"].get("Retry-After").is_some(),
                    "{method} {path}"
                );
            }
            assert!(
                responses["405"]["headers"].get("Allow").is_some(),
                "{method} {path}"
            );
            if operation.get("requestBody").is_some() {
                for status in ["413", "415"] {
                    assert!(
                        responses.get(status).is_some(),
                        "{method} {path}: no {status}"
                    );
                }
            }
        }
    }
    for body in [
        "CreateServiceAccountBody",
        "PatchServiceAccountBody",
        "CreateCredentialBody",
        "TokenRequestBody",
    ] {
        let schema = &document["components"]["schemas"][body];
        assert_eq!(schema["additionalProperties"], false, "{body}");
    }
    // A PATCH names at least one field; only `description` may be null.
    assert_eq!(
        document["components"]["schemas"]["PatchServiceAccountBody"]["minProperties"],
        1
    );
    let patch = &document["components"]["schemas"]["PatchServiceAccountBody"]["properties"];
    for field in ["displayName", "roles", "status"] {
        assert!(
            !patch[field].to_string().contains("null"),
            "{field}: {}",
            patch[field]
        );
    }
    for list in [
        "/v1/regions/global/iam/service-accounts",
        "/v1/regions/global/iam/service-accounts/{serviceAccountId}/credentials",
    ] {
        let parameters = document["paths"][list]["get"]["parameters"]
            .as_array()
            .unwrap();
        let page_size = parameters.iter().find(|p| p["name"] == "pageSize").unwrap();
        assert_eq!(
            page_size["schema"]["default"],
            iam_domain::PageSize::DEFAULT,
            "{list}"
        );
    }
}

#[test]
fn creates_link_to_what_can_be_done_with_the_created_resource() {
    let document = document();
    let mut ids = std::collections::BTreeSet::new();
    for item in document["paths"].as_object().unwrap().values() {
        for operation in item.as_object().unwrap().values() {
            ids.insert(operation["operationId"].as_str().unwrap().to_owned());
        }
    }
    let links = |path: &str| {
        document["paths"][path]["post"]["responses"]["201"]["links"]
            .as_object()
            .unwrap()
            .clone()
    };
    let accounts = links("/v1/regions/global/iam/service-accounts");
    let credentials =
        links("/v1/regions/global/iam/service-accounts/{serviceAccountId}/credentials");
    let federated =
        links("/v1/regions/global/iam/service-accounts/{serviceAccountId}/federated-credentials");
    assert_eq!(accounts.len(), 7);
    assert_eq!(credentials.len(), 2);
    assert_eq!(federated.len(), 2);
    for link in accounts
        .values()
        .chain(credentials.values())
        .chain(federated.values())
    {
        let target = link["operationId"].as_str().unwrap();
        assert!(
            ids.contains(target),
            "a link to the unknown operation {target}"
        );
    }
    assert_eq!(
        accounts["ListServiceAccountCredentials"]["parameters"]["serviceAccountId"],
        "$response.body#/id"
    );
}
