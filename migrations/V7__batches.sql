-- Batches (beyond Cloudflare's API): many creates submitted at once. The items' jobs are kept
-- (public request data only, never key material) so that a submission interrupted before all
-- its chunks were confirmed can be published again, under the same CSR ids.
CREATE TABLE batches (
    id               uuid        PRIMARY KEY,
    owner_kind       text        NOT NULL,
    owner_id         text        NOT NULL,
    total            integer     NOT NULL CHECK (total > 0),
    -- Items created / failed so far; only the worker's commit that settles an item counts it,
    -- so a redelivered chunk never counts twice.
    done             integer     NOT NULL DEFAULT 0,
    failed           integer     NOT NULL DEFAULT 0,
    idempotency_key  text,
    request_hash     bytea,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- Set once the broker confirmed every chunk; NULL means a retry must publish again.
    published_at     timestamptz,
    finished_at      timestamptz
);
CREATE UNIQUE INDEX batches_idempotency ON batches (owner_kind, owner_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX batches_owner_created ON batches (owner_kind, owner_id, created_at, id);
CREATE INDEX batches_unpublished ON batches (created_at) WHERE published_at IS NULL;

CREATE TABLE batch_items (
    batch_id  uuid    NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    index     integer NOT NULL,
    csr_id    uuid    NOT NULL,
    job       jsonb   NOT NULL,
    PRIMARY KEY (batch_id, index)
);
