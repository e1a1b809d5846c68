-- A certificate is its leaf's exact bytes: the SHA-256 of the leaf's DER identifies it, so a
-- different certificate with the same issuer and serial is another certificate, and the same
-- one sent again is found. (Issuer display name and decimal serial are not an identity: two
-- CAs may share a name.)
ALTER TABLE custom_certificates ADD COLUMN leaf_sha256 bytea;
-- The digest of the leaf of a stored chain (csrd's own normalised PEM, leaf first).
CREATE FUNCTION csrd_leaf_sha256(chain text) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256(decode(replace(
        split_part(split_part(chain, '-----END CERTIFICATE-----', 1),
                   '-----BEGIN CERTIFICATE-----', 2), E'\n', ''), 'base64'))
$$;
UPDATE custom_certificates SET leaf_sha256 = csrd_leaf_sha256(certificate);
ALTER TABLE custom_certificates ALTER COLUMN leaf_sha256 SET NOT NULL;
ALTER TABLE custom_certificates ADD CONSTRAINT custom_certificates_leaf_sha256_length
    CHECK (octet_length(leaf_sha256) = 32);
-- Also the in-use check on CSR delete, the per-CSR count, and the foreign key's lookups
-- (custom_csr_id leads).
CREATE UNIQUE INDEX custom_certificates_leaf_digest ON custom_certificates (custom_csr_id, leaf_sha256);
DROP INDEX custom_certificates_leaf;

-- What each tenant stores in certificates, kept by triggers so every path (upload, bulk,
-- edit, delete) counts: the per-tenant cap is checked against it without a scan.
CREATE TABLE tenant_certificate_usage (
    owner_kind   text   NOT NULL,
    owner_id     text   NOT NULL,
    certificates bigint NOT NULL DEFAULT 0,
    bytes        bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (owner_kind, owner_id)
);

-- The bytes a certificate row counts for: its chain, its hosts and its policy.
CREATE FUNCTION csrd_certificate_bytes(certificate text, hosts text[], policy text)
RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT octet_length(certificate)::bigint
         + coalesce((SELECT sum(octet_length(h)) FROM unnest(hosts) AS h), 0)::bigint
         + coalesce(octet_length(policy), 0)::bigint
$$;

CREATE FUNCTION csrd_count_certificate_usage() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        UPDATE tenant_certificate_usage u
        SET certificates = u.certificates - o.n, bytes = u.bytes - o.b
        FROM (SELECT owner_kind, owner_id, count(*) AS n,
                     sum(csrd_certificate_bytes(certificate, hosts, policy)) AS b
              FROM old_rows GROUP BY owner_kind, owner_id) o
        WHERE u.owner_kind = o.owner_kind AND u.owner_id = o.owner_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO tenant_certificate_usage AS u (owner_kind, owner_id, certificates, bytes)
        SELECT owner_kind, owner_id, count(*),
               sum(csrd_certificate_bytes(certificate, hosts, policy))
        FROM new_rows GROUP BY owner_kind, owner_id
        ON CONFLICT (owner_kind, owner_id) DO UPDATE
        SET certificates = u.certificates + excluded.certificates,
            bytes = u.bytes + excluded.bytes;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER custom_certificates_usage_insert AFTER INSERT ON custom_certificates
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION csrd_count_certificate_usage();
CREATE TRIGGER custom_certificates_usage_update AFTER UPDATE ON custom_certificates
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION csrd_count_certificate_usage();
CREATE TRIGGER custom_certificates_usage_delete AFTER DELETE ON custom_certificates
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION csrd_count_certificate_usage();

INSERT INTO tenant_certificate_usage (owner_kind, owner_id, certificates, bytes)
SELECT owner_kind, owner_id, count(*), sum(csrd_certificate_bytes(certificate, hosts, policy))
FROM custom_certificates GROUP BY owner_kind, owner_id;

-- Operators' per-tenant overrides of the certificate caps (`csrd tenant limits set
-- --certificates-per-csr N --certificate-bytes N`); NULL: the default.
ALTER TABLE tenant_limits
    ADD COLUMN certificates_per_csr bigint CHECK (certificates_per_csr >= 0),
    ADD COLUMN certificate_bytes    bigint CHECK (certificate_bytes >= 0);
