-- The initial schema: the directory (organizations, projects, roles), service accounts,
-- idempotency records and the audit log.
--
-- CHECK constraints repeat the domain's invariants so that a row written by hand (or by a
-- buggy release) cannot violate what the code assumes when it reads it back.

CREATE TABLE organizations (
    id text PRIMARY KEY
        CHECK (id ~ '^[a-z]([-a-z0-9]*[a-z0-9])?$' AND length(id) <= 63),
    slug text NOT NULL UNIQUE
        CHECK (slug ~ '^[a-z]([-a-z0-9]*[a-z0-9])?$' AND length(slug) <= 63),
    allowed_scopes text[] NOT NULL
        CHECK (
            cardinality(allowed_scopes) > 0
            AND allowed_scopes <@ ARRAY['organization', 'project']::text[]
        ),
    credential_default_lifetime_seconds bigint NOT NULL,
    credential_max_lifetime_seconds bigint NOT NULL,
    max_active_credentials integer NOT NULL
        CHECK (max_active_credentials BETWEEN 1 AND 100),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT organizations_lifetimes_check CHECK (
        credential_default_lifetime_seconds > 0
        AND credential_default_lifetime_seconds <= credential_max_lifetime_seconds
    )
);

CREATE TABLE projects (
    org_id text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    id text NOT NULL
        CHECK (id ~ '^[a-z]([-a-z0-9]*[a-z0-9])?$' AND length(id) <= 63),
    display_name text NULL,
    PRIMARY KEY (org_id, id)
);

CREATE TABLE roles (
    org_id text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    slug text NOT NULL
        CHECK (slug ~ '^[a-z0-9]+([.-][a-z0-9]+)*$' AND length(slug) <= 128),
    description text NULL,
    PRIMARY KEY (org_id, slug)
);

CREATE TABLE service_accounts (
    uid uuid PRIMARY KEY,
    -- RESTRICT: an organization with service accounts cannot disappear underneath them.
    org_id text NOT NULL REFERENCES organizations (id) ON DELETE RESTRICT,
    id text NOT NULL
        CHECK (id ~ '^[a-z]([-a-z0-9]*[a-z0-9])?$' AND length(id) <= 63),
    display_name text NOT NULL,
    description text NULL,
    client_id text NOT NULL UNIQUE,
    scope text NOT NULL CHECK (scope IN ('organization', 'project')),
    scope_id text NOT NULL,
    roles text[] NOT NULL DEFAULT '{}'
        CHECK (array_position(roles, NULL) IS NULL),
    status text NOT NULL CHECK (status IN ('active', 'disabled')),
    created_by text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    revision bigint NOT NULL CHECK (revision >= 1),
    -- The adapter inserts with `ON CONFLICT (org_id, id) DO NOTHING`: a taken id is an outcome.
    CONSTRAINT service_accounts_org_id_id_key UNIQUE (org_id, id)
);

-- Keyset pagination: `WHERE org_id = $1 AND (created_at, uid) > ($2, $3)
-- ORDER BY created_at, uid` is an index range scan, so page 10 000 costs like page 1.
CREATE INDEX service_accounts_page_idx ON service_accounts (org_id, created_at, uid);

CREATE TABLE idempotency_keys (
    org_id text NOT NULL,
    subject text NOT NULL,
    key text NOT NULL,
    fingerprint bytea NOT NULL,
    status_code integer NULL CHECK (status_code BETWEEN 100 AND 599),
    -- A JSON array of [name, value] pairs.
    response_headers jsonb NULL,
    response_body bytea NULL,
    created_at timestamptz NOT NULL,
    completed_at timestamptz NULL,
    PRIMARY KEY (org_id, subject, key),
    CONSTRAINT idempotency_keys_completion_check CHECK (
        (completed_at IS NULL) = (status_code IS NULL)
    )
);

-- Purging records past their retention.
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);

-- No foreign key to organizations: the history outlives its subject.
CREATE TABLE audit_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id text NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    resource text NOT NULL,
    changed_fields text[] NOT NULL DEFAULT '{}',
    request_id text NOT NULL,
    source_ip text NULL,
    occurred_at timestamptz NOT NULL
);

CREATE INDEX audit_events_org_id_occurred_at_idx ON audit_events (org_id, occurred_at);
