-- Back to revocations by jti alone: where several issuers' tokens share a jti, keep the row
-- that lasts longest (a revocation by jti alone then applies to every issuer, the stricter
-- reading, and is not purged before any of the tokens it stood for expires).
DELETE FROM revoked_tokens a USING revoked_tokens b
    WHERE a.jti = b.jti
      AND (a.expires_at < b.expires_at
           OR (a.expires_at = b.expires_at AND a.issuer > b.issuer));
ALTER TABLE revoked_tokens DROP CONSTRAINT revoked_tokens_pkey;
ALTER TABLE revoked_tokens DROP COLUMN issuer;
ALTER TABLE revoked_tokens ADD PRIMARY KEY (jti);
