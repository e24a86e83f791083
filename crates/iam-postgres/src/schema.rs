// @generated automatically by Diesel CLI.

diesel::table! {
    audit_events (id) {
        id -> Int8,
        org_id -> Text,
        actor -> Text,
        action -> Text,
        resource -> Text,
        changed_fields -> Array<Nullable<Text>>,
        request_id -> Text,
        source_ip -> Nullable<Text>,
        occurred_at -> Timestamptz,
    }
}

diesel::table! {
    credentials (uid) {
        uid -> Uuid,
        org_id -> Text,
        service_account_uid -> Uuid,
        id -> Text,
        secret_hash -> Bytea,
        expires_at -> Timestamptz,
        created_by -> Text,
        created_at -> Timestamptz,
        last_used_at -> Nullable<Timestamptz>,
        last_used_ip -> Nullable<Text>,
    }
}

diesel::table! {
    federated_credentials (uid) {
        uid -> Uuid,
        org_id -> Text,
        service_account_uid -> Uuid,
        id -> Text,
        issuer -> Text,
        subject -> Text,
        audiences -> Array<Nullable<Text>>,
        description -> Nullable<Text>,
        created_by -> Text,
        created_at -> Timestamptz,
        last_used_at -> Nullable<Timestamptz>,
        last_used_ip -> Nullable<Text>,
    }
}

diesel::table! {
    idempotency_keys (org_id, subject, key) {
        org_id -> Text,
        subject -> Text,
        key -> Text,
        fingerprint -> Bytea,
        status_code -> Nullable<Int4>,
        response_headers -> Nullable<Jsonb>,
        response_body -> Nullable<Bytea>,
        created_at -> Timestamptz,
        completed_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    organizations (id) {
        id -> Text,
        slug -> Text,
        allowed_scopes -> Array<Nullable<Text>>,
        credential_default_lifetime_seconds -> Int8,
        credential_max_lifetime_seconds -> Int8,
        max_active_credentials -> Int4,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    projects (org_id, id) {
        org_id -> Text,
        id -> Text,
        display_name -> Nullable<Text>,
    }
}

diesel::table! {
    revoked_tokens (jti, issuer) {
        jti -> Text,
        org_id -> Text,
        expires_at -> Timestamptz,
        revoked_at -> Timestamptz,
        issuer -> Text,
    }
}

diesel::table! {
    roles (org_id, slug) {
        org_id -> Text,
        slug -> Text,
        description -> Nullable<Text>,
    }
}

diesel::table! {
    service_accounts (uid) {
        uid -> Uuid,
        org_id -> Text,
        id -> Text,
        display_name -> Text,
        description -> Nullable<Text>,
        client_id -> Text,
        scope -> Text,
        scope_id -> Text,
        roles -> Array<Nullable<Text>>,
        status -> Text,
        created_by -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        revision -> Int8,
    }
}

diesel::table! {
    trusted_issuers (org_id, issuer) {
        org_id -> Text,
        issuer -> Text,
        jwks_uri -> Nullable<Text>,
    }
}

diesel::joinable!(credentials -> service_accounts (service_account_uid));
diesel::joinable!(federated_credentials -> service_accounts (service_account_uid));
diesel::joinable!(projects -> organizations (org_id));
diesel::joinable!(roles -> organizations (org_id));
diesel::joinable!(service_accounts -> organizations (org_id));
diesel::joinable!(trusted_issuers -> organizations (org_id));

diesel::allow_tables_to_appear_in_same_query!(
    audit_events,
    credentials,
    federated_credentials,
    idempotency_keys,
    organizations,
    projects,
    revoked_tokens,
    roles,
    service_accounts,
    trusted_issuers,
);
