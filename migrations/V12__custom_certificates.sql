-- Certificates a CA signed for csrd's CSRs, uploaded against their custom CSR (Cloudflare's
-- custom_certificates with `custom_csr_id`). The key is never uploaded: it is the CSR's.
-- RESTRICT: a CSR whose key a certificate uses cannot be deleted (409/1420); the use case
-- checks first and answers, the key stops a race between the check and an upload.
CREATE TABLE custom_certificates (
    id              uuid        PRIMARY KEY,
    owner_kind      text        NOT NULL CHECK (owner_kind IN ('account', 'zone')),
    owner_id        text        NOT NULL CHECK (owner_id ~ '^[0-9a-f]{32}$'),
    custom_csr_id   uuid        NOT NULL REFERENCES custom_csrs (id) ON DELETE RESTRICT,
    certificate     text        NOT NULL,
    hosts           text[]      NOT NULL,
    issuer          text        NOT NULL,
    signature       text        NOT NULL,
    serial_number   text        NOT NULL,
    bundle_method   text        NOT NULL CHECK (bundle_method IN ('ubiquitous', 'optimal', 'force')),
    cert_type       text        NOT NULL CHECK (cert_type IN ('legacy_custom', 'sni_custom')),
    geo_label       text        CHECK (geo_label IN ('us', 'eu', 'highest_security')),
    policy          text,
    priority        integer     NOT NULL DEFAULT 0,
    not_before      timestamptz NOT NULL,
    expires_on      timestamptz NOT NULL,
    uploaded_on     timestamptz NOT NULL,
    modified_on     timestamptz NOT NULL
);

-- Tenant-scoped listing in upload order; the expiry filter and `certs expiring`.
CREATE INDEX custom_certificates_owner_uploaded
    ON custom_certificates (owner_kind, owner_id, uploaded_on, id);
CREATE INDEX custom_certificates_expires ON custom_certificates (expires_on);
-- One leaf (issuer, serial) once per CSR; also the in-use check on CSR delete and the
-- foreign key's own lookups (custom_csr_id leads): an upload sent again finds it (a single upload
-- answers 400/1220, a bulk upload returns the stored one).
CREATE UNIQUE INDEX custom_certificates_leaf ON custom_certificates (custom_csr_id, serial_number, issuer);
