-- Sealed key delivery: a CSR created with "key_delivery": "sealed" may have its key released,
-- sealed to a recipient an operator approved, for a certificate the recipient's hosts cover.
-- NULL is "none" (the key never leaves), so ordinary rows carry nothing more. Fixed at
-- creation: nothing updates it.
ALTER TABLE custom_csrs ADD COLUMN key_delivery text CHECK (key_delivery = 'sealed');
-- A recipient's deliveries are read from the tenant's deliverable CSRs only, in id order.
CREATE INDEX custom_csrs_deliverable ON custom_csrs (owner_kind, owner_id, id)
    WHERE key_delivery = 'sealed';

-- A certificate's generation: strictly increasing in upload order (one sequence for every
-- CSR, so a generation is never handed out twice, even after deletes). The current
-- certificate of a CSR is its highest generation; an agent never installs a lower one.
CREATE SEQUENCE custom_certificate_generation AS bigint;
ALTER TABLE custom_certificates ADD COLUMN generation bigint;
UPDATE custom_certificates c SET generation = g.n
FROM (SELECT id, nextval('custom_certificate_generation') AS n
      FROM (SELECT id FROM custom_certificates ORDER BY uploaded_on, id) o) g
WHERE c.id = g.id;
ALTER TABLE custom_certificates
    ALTER COLUMN generation SET DEFAULT nextval('custom_certificate_generation'),
    ALTER COLUMN generation SET NOT NULL;
ALTER SEQUENCE custom_certificate_generation OWNED BY custom_certificates.generation;
-- The current certificate of each CSR, found without sorting a tenant's certificates.
CREATE INDEX custom_certificates_current ON custom_certificates (custom_csr_id, generation DESC);

-- A token that may only enroll recipients and take deliveries.
ALTER TABLE api_tokens DROP CONSTRAINT api_tokens_permission_check;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_permission_check
    CHECK (permission IN ('read', 'write', 'key-delivery'));

-- Where keys may go: an age X25519 recipient a tenant enrolled (pending) and an operator
-- approved (active) with its fingerprint, until revoked. `hosts` bounds what it can ever
-- receive.
CREATE TABLE key_recipients (
    id          uuid        PRIMARY KEY,
    owner_kind  text        NOT NULL CHECK (owner_kind IN ('account', 'zone')),
    owner_id    text        NOT NULL CHECK (owner_id ~ '^[0-9a-f]{32}$'),
    name        text        NOT NULL,
    recipient   text        NOT NULL,
    -- SHA-256 of `recipient`, hex: what the operator compares before approving.
    fingerprint text        NOT NULL CHECK (fingerprint ~ '^[0-9a-f]{64}$'),
    hosts       text[]      NOT NULL CHECK (cardinality(hosts) BETWEEN 1 AND 100),
    status      text        NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'active', 'revoked')),
    created_at  timestamptz NOT NULL,
    enrolled_by text,
    approved_at timestamptz,
    approved_by text,
    revoked_at  timestamptz,
    revoked_by  text,
    CHECK ((status = 'active') = (approved_at IS NOT NULL AND revoked_at IS NULL)),
    CHECK ((status = 'revoked') = (revoked_at IS NOT NULL))
);
CREATE INDEX key_recipients_owner_created ON key_recipients (owner_kind, owner_id, created_at, id);
