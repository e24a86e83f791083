-- Credentials: client secrets of a service account. Only the HMAC of a secret is stored;
-- there is no column that could hold the plaintext.

CREATE TABLE credentials (
    uid uuid PRIMARY KEY,
    org_id text NOT NULL,
    -- CASCADE: deleting a service account deletes its credentials (and so revokes them).
    service_account_uid uuid NOT NULL REFERENCES service_accounts (uid) ON DELETE CASCADE,
    id text NOT NULL
        CHECK (id ~ '^[a-z]([-a-z0-9]*[a-z0-9])?$' AND length(id) <= 63),
    -- HMAC-SHA256(pepper, secret).
    secret_hash bytea NOT NULL CHECK (length(secret_hash) = 32),
    expires_at timestamptz NOT NULL,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL,
    last_used_at timestamptz NULL,
    last_used_ip text NULL,
    CONSTRAINT credentials_org_id_id_key UNIQUE (org_id, id)
);

-- Keyset pagination of one account's credentials: `WHERE service_account_uid = $1 AND
-- (created_at, uid) > ($2, $3) ORDER BY created_at, uid` is an index range scan.
CREATE INDEX credentials_page_idx ON credentials (service_account_uid, created_at, uid);

-- Counting an account's active credentials (`expires_at > now`): for the cap check and for
-- `activeCredentialCount` of every service account read, an index-only range scan.
CREATE INDEX credentials_active_idx ON credentials (service_account_uid, expires_at);
