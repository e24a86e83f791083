-- Workload identity federation (SPEC §9): the issuers an operator lets each organization
-- trust (from the directory file), and the federated credentials that bind one issuer's
-- subject to a service account.

CREATE TABLE trusted_issuers (
    org_id text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    -- Compared exactly with a token's `iss`.
    issuer text NOT NULL CHECK (length(issuer) BETWEEN 1 AND 512),
    -- NULL: OIDC discovery at `{issuer}/.well-known/openid-configuration`.
    jwks_uri text NULL CHECK (length(jwks_uri) BETWEEN 1 AND 2048),
    PRIMARY KEY (org_id, issuer)
);

CREATE TABLE federated_credentials (
    uid uuid PRIMARY KEY,
    org_id text NOT NULL,
    -- CASCADE: deleting a service account deletes its federated credentials.
    service_account_uid uuid NOT NULL REFERENCES service_accounts (uid) ON DELETE CASCADE,
    id text NOT NULL
        CHECK (id ~ '^fc-[a-z0-9]([-a-z0-9]*[a-z0-9])?$' AND length(id) <= 63),
    issuer text NOT NULL CHECK (length(issuer) BETWEEN 1 AND 512),
    subject text NOT NULL CHECK (length(subject) BETWEEN 1 AND 512),
    audiences text[] NOT NULL
        CHECK (
            cardinality(audiences) BETWEEN 1 AND 10
            AND array_position(audiences, NULL) IS NULL
        ),
    description text NULL CHECK (length(description) BETWEEN 1 AND 1024),
    created_by text NOT NULL,
    created_at timestamptz NOT NULL,
    last_used_at timestamptz NULL,
    last_used_ip text NULL,
    CONSTRAINT federated_credentials_org_id_id_key UNIQUE (org_id, id)
);

-- Keyset pagination of one account's federated credentials, and counting them for the cap.
CREATE INDEX federated_credentials_page_idx
    ON federated_credentials (service_account_uid, created_at, uid);

-- An exchange: the account's credentials for the token's issuer and subject.
CREATE INDEX federated_credentials_match_idx
    ON federated_credentials (service_account_uid, issuer, subject);
