-- Revoked access tokens, by `jti`. A row is needed only until the token expires (after that
-- the token is dead anyway): `expires_at` is the token's own expiry, and rows past it are
-- purged periodically.
--
-- No foreign key to organizations: a revocation is a fact about a token, not a resource.

CREATE TABLE revoked_tokens (
    jti text PRIMARY KEY,
    org_id text NOT NULL,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz NOT NULL DEFAULT now()
);

-- Purging records of tokens that expired: `DELETE … WHERE expires_at < $1`.
CREATE INDEX revoked_tokens_expires_at_idx ON revoked_tokens (expires_at);
