-- csrd's key types beyond Cloudflare's two: RSA-3072, RSA-4096 and P-384.
ALTER TABLE custom_csrs DROP CONSTRAINT custom_csrs_key_type_check;
ALTER TABLE custom_csrs ADD CONSTRAINT custom_csrs_key_type_check
    CHECK (key_type IN ('rsa2048', 'p256v1', 'rsa3072', 'rsa4096', 'p384'));
