-- A revocation names a token by (issuer, jti), not by jti alone: two issuers (this service
-- and an external OIDC issuer) choose their jti values independently, so revoking one
-- issuer's token must not revoke another issuer's token that happens to share its jti.
--
-- Rows recorded before this migration named only the jti. They get the issuer '' and keep
-- applying to that jti from every issuer, as they did when they were recorded, until they are
-- purged with the token's expiry (no issuer is ever '': issuers are configured URLs).

ALTER TABLE revoked_tokens ADD COLUMN issuer text NOT NULL DEFAULT '';
ALTER TABLE revoked_tokens ALTER COLUMN issuer DROP DEFAULT;
ALTER TABLE revoked_tokens DROP CONSTRAINT revoked_tokens_pkey;
-- jti first: the liveness check `WHERE jti = $1 AND issuer = ANY($2)` is one short range of
-- this index.
ALTER TABLE revoked_tokens ADD PRIMARY KEY (jti, issuer);
