-- Back to revocations by jti alone: keep one row per jti (any issuer's; a revocation by jti
-- alone then applies to every issuer, the stricter reading).
DELETE FROM revoked_tokens a USING revoked_tokens b
    WHERE a.jti = b.jti AND a.issuer > b.issuer;
ALTER TABLE revoked_tokens DROP CONSTRAINT revoked_tokens_pkey;
ALTER TABLE revoked_tokens DROP COLUMN issuer;
ALTER TABLE revoked_tokens ADD PRIMARY KEY (jti);
