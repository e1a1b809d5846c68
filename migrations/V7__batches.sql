-- Batches (beyond Cloudflare's API): many creates submitted at once. The validated items are
-- kept in one column (JSON; public request data only, never key material) so that a batch whose
-- chunks were not all confirmed can be published again. Item i's CSR id is derived from the
-- batch id and i (see CsrId::for_batch_item), so no row per item is needed.
CREATE TABLE batches (
    id               uuid        PRIMARY KEY,
    owner_kind       text        NOT NULL,
    owner_id         text        NOT NULL,
    total            integer     NOT NULL CHECK (total > 0),
    -- Items created / failed so far; only the worker's commit that settles an item counts it,
    -- so a redelivered chunk never counts twice.
    done             integer     NOT NULL DEFAULT 0,
    failed           integer     NOT NULL DEFAULT 0,
    items            bytea       NOT NULL,
    idempotency_key  text,
    request_hash     bytea,
    -- Every item's created_at.
    created_at       timestamptz NOT NULL,
    -- Set once the broker confirmed every chunk; NULL means it must be published again.
    published_at     timestamptz,
    finished_at      timestamptz
);
CREATE UNIQUE INDEX batches_idempotency ON batches (owner_kind, owner_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX batches_owner_created ON batches (owner_kind, owner_id, created_at, id);
CREATE INDEX batches_unpublished ON batches (created_at) WHERE published_at IS NULL;
