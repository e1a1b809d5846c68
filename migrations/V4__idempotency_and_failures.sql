-- Idempotency-Key records: one per (tenant, key). The job is kept (public request data only,
-- never key material) so a retry can republish it under the same CSR id, also after a restart.
CREATE TABLE idempotency_keys (
    owner_kind   text        NOT NULL,
    owner_id     text        NOT NULL,
    key          text        NOT NULL,
    request_hash bytea       NOT NULL,
    csr_id       uuid        NOT NULL,
    job          jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- Set once the broker confirmed the job; NULL means a retry must publish it again.
    published_at timestamptz,
    PRIMARY KEY (owner_kind, owner_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- Creates that ended in the dead-letter queue: the waiting client (or a retry with the same
-- Idempotency-Key) is told 1500 instead of waiting for ever.
CREATE TABLE failed_jobs (
    id         uuid        PRIMARY KEY,
    owner_kind text        NOT NULL,
    owner_id   text        NOT NULL,
    reason     text        NOT NULL,
    failed_at  timestamptz NOT NULL DEFAULT now()
);
