-- csrd schema, version 1.

-- One row per custom CSR. The private key is stored only sealed (see src/crypto/envelope.rs):
-- kek_id names the key-encryption key, wrapped_dek is the per-record data key wrapped by it,
-- key_ciphertext is the PKCS#8 DER encrypted under that data key. Deleting the row destroys
-- the wrapped data key, which is what makes delete a crypto-shred.
CREATE TABLE custom_csrs (
    id                  uuid        PRIMARY KEY,
    owner_kind          text        NOT NULL CHECK (owner_kind IN ('account', 'zone')),
    owner_id            text        NOT NULL CHECK (owner_id ~ '^[0-9a-f]{32}$'),
    key_type            text        NOT NULL CHECK (key_type IN ('rsa2048', 'p256v1')),
    common_name         text        NOT NULL,
    country             text        NOT NULL,
    state               text        NOT NULL,
    locality            text        NOT NULL,
    organization        text        NOT NULL,
    organizational_unit text,
    sans                text[]      NOT NULL,
    name                text,
    description         text,
    csr_pem             text        NOT NULL,
    envelope_version    smallint    NOT NULL,
    kek_id              text        NOT NULL,
    wrapped_dek         bytea       NOT NULL,
    dek_nonce           bytea       NOT NULL,
    key_nonce           bytea       NOT NULL,
    key_ciphertext      bytea       NOT NULL,
    created_at          timestamptz NOT NULL
);

-- Tenant-scoped listing in creation order, ties broken by id.
CREATE INDEX custom_csrs_owner_created ON custom_csrs (owner_kind, owner_id, created_at, id);

-- API tokens. Only the SHA-256 of the token is kept; lookup_id is its public prefix.
CREATE TABLE api_tokens (
    id          uuid        PRIMARY KEY,
    lookup_id   text        NOT NULL UNIQUE,
    token_hash  bytea       NOT NULL,
    name        text,
    permission  text        NOT NULL CHECK (permission IN ('read', 'write')),
    accounts    text[]      NOT NULL DEFAULT '{}',
    zones       text[]      NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    revoked_at  timestamptz
);

-- Users of the legacy X-Auth-Email + X-Auth-Key scheme. Only the key's SHA-256 is kept.
CREATE TABLE api_users (
    email       text        PRIMARY KEY,
    key_hash    bytea       NOT NULL,
    accounts    text[]      NOT NULL DEFAULT '{}',
    zones       text[]      NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- One check value per KEK id, so a wrong key under a known id is refused at start-up.
CREATE TABLE kek_checks (
    kek_id      text        PRIMARY KEY,
    nonce       bytea       NOT NULL,
    ciphertext  bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
