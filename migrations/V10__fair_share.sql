-- Fair share without waste (README, "Limits and abuse").

-- Operators' per-tenant overrides (`csrd tenant limits set`). Every process reads the table
-- every few seconds, so every ingress and worker applies the same values. NULL: the default.
CREATE TABLE tenant_limits (
    owner_kind     text             NOT NULL CHECK (owner_kind IN ('account', 'zone')),
    owner_id       text             NOT NULL,
    -- Share of the keygen capacity against other busy tenants (default 1).
    weight         double precision CHECK (weight > 0),
    -- Requests per second, and the burst after a quiet spell (defaults: CSRD_TENANT_RATE,
    -- CSRD_TENANT_BURST; 0 disables the limit for this tenant).
    rate           double precision CHECK (rate >= 0),
    burst          double precision CHECK (burst >= 1),
    -- Items (single creates and batch items) accepted per clock hour; NULL: no quota.
    items_per_hour bigint           CHECK (items_per_hour >= 0),
    updated_at     timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_kind, owner_id)
);

-- The request-rate bucket of each tenant, shared by every ingress: an ingress leases a slice
-- of tokens at a time (csrd_lease_tokens) and spends it locally, so a tenant spreading its
-- requests over several ingresses gets one rate, not one per ingress.
CREATE TABLE rate_buckets (
    owner_kind text             NOT NULL,
    owner_id   text             NOT NULL,
    tokens     double precision NOT NULL,
    updated_at timestamptz      NOT NULL,
    PRIMARY KEY (owner_kind, owner_id)
);

-- Refills the bucket for the time since its last lease (at `rate`, up to `burst`), then takes
-- up to `want` tokens. Returns what was granted and what is left. One row lock, no debt.
CREATE FUNCTION csrd_lease_tokens(kind text, id text, want double precision,
                                  rate double precision, burst double precision)
RETURNS TABLE (granted double precision, remaining double precision)
LANGUAGE plpgsql AS $$
DECLARE
    available double precision;
    taken double precision;
BEGIN
    INSERT INTO rate_buckets AS b (owner_kind, owner_id, tokens, updated_at)
    VALUES (kind, id, burst, clock_timestamp())
    ON CONFLICT (owner_kind, owner_id) DO NOTHING;
    SELECT least(burst, b.tokens + rate * greatest(0, extract(epoch FROM clock_timestamp() - b.updated_at)))
      INTO available
      FROM rate_buckets b WHERE b.owner_kind = kind AND b.owner_id = id FOR UPDATE;
    taken := least(want, greatest(available, 0));
    UPDATE rate_buckets b SET tokens = available - taken, updated_at = clock_timestamp()
     WHERE b.owner_kind = kind AND b.owner_id = id;
    RETURN QUERY SELECT taken, available - taken;
END
$$;

-- Items accepted per tenant and clock hour, counted only for tenants with an hourly quota.
CREATE TABLE tenant_hourly_items (
    owner_kind text        NOT NULL,
    owner_id   text        NOT NULL,
    hour       timestamptz NOT NULL,
    items      bigint      NOT NULL,
    PRIMARY KEY (owner_kind, owner_id, hour)
);

-- Batches are stored as chunks at submission and dispatched to the bulk lane one at a time,
-- as the workers take them, in fair-share order across tenants (start-time fair queuing:
-- bulk_shares holds each tenant's finish tag, bulk_clock the clock). The broker's bulk queue
-- stays short, so a batch submitted later is not behind everything submitted before it.
ALTER TABLE batches ALTER COLUMN items DROP NOT NULL;
-- The submitting request's W3C trace context: chunks dispatched later join its trace.
ALTER TABLE batches ADD COLUMN trace_context jsonb;

CREATE TABLE batch_chunks (
    batch_id         uuid        NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    seq              integer     NOT NULL,
    owner_kind       text        NOT NULL,
    owner_id         text        NOT NULL,
    batch_created_at timestamptz NOT NULL,
    -- Index of the chunk's first item in its batch; its items follow in order.
    first_index      integer     NOT NULL,
    item_count       integer     NOT NULL CHECK (item_count > 0),
    -- Sum of its items' cost units (P-256 1, RSA-2048 256).
    cost             integer     NOT NULL CHECK (cost > 0),
    -- The validated create bodies (public request data only), a JSON array.
    items            bytea       NOT NULL,
    -- Handed to the broker (after its confirm), and settled by a worker (every item made or
    -- failed). A batch's chunks are deleted once the batch is finished.
    dispatched_at    timestamptz,
    settled_at       timestamptz,
    PRIMARY KEY (batch_id, seq)
);
-- Each tenant's next chunk: its oldest batch first, in order.
CREATE INDEX batch_chunks_waiting ON batch_chunks
    (owner_kind, owner_id, batch_created_at, batch_id, seq) WHERE dispatched_at IS NULL;
-- Each tenant's chunks with the workers (dispatched, not settled).
CREATE INDEX batch_chunks_in_flight ON batch_chunks (owner_kind, owner_id)
    WHERE dispatched_at IS NOT NULL AND settled_at IS NULL;

CREATE TABLE bulk_shares (
    owner_kind text             NOT NULL,
    owner_id   text             NOT NULL,
    finish     double precision NOT NULL,
    PRIMARY KEY (owner_kind, owner_id)
);

CREATE TABLE bulk_clock (
    only_row boolean          PRIMARY KEY DEFAULT true CHECK (only_row),
    now      double precision NOT NULL
);
INSERT INTO bulk_clock (only_row, now) VALUES (true, 0);

-- What a tenant has outstanding (items accepted, not yet settled), at each submission.
CREATE INDEX batches_unfinished ON batches (owner_kind, owner_id) WHERE finished_at IS NULL;

-- Batches accepted by an earlier release whose chunks the broker never confirmed (or accepted
-- during a rolling upgrade by a process of that release, which stores its items in
-- `batches.items` and leaves `published_at` NULL until it has published them): stored as
-- chunks of 64 items, to be dispatched like any other. The dispatchers call this every 30 s;
-- a batch its own (old) process publishes meanwhile is made once all the same (the workers
-- skip items that exist).
CREATE FUNCTION csrd_adopt_legacy_batches(older_than interval) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    adopted bigint;
BEGIN
    WITH legacy AS (
        SELECT id FROM batches
        WHERE published_at IS NULL AND items IS NOT NULL AND created_at < now() - older_than
        FOR UPDATE SKIP LOCKED
    ), chunks AS (
        INSERT INTO batch_chunks (batch_id, seq, owner_kind, owner_id, batch_created_at,
                                  first_index, item_count, cost, items)
        SELECT b.id, (e.n - 1) / 64, b.owner_kind, b.owner_id, b.created_at, min(e.n - 1),
               count(*), sum(CASE WHEN e.item ->> 'key_type' = 'rsa2048' THEN 256 ELSE 1 END),
               convert_to(jsonb_agg(e.item ORDER BY e.n)::text, 'UTF8')
        FROM batches b
        JOIN legacy l ON l.id = b.id,
             jsonb_array_elements(convert_from(b.items, 'UTF8')::jsonb) WITH ORDINALITY AS e (item, n)
        GROUP BY b.id, (e.n - 1) / 64, b.owner_kind, b.owner_id, b.created_at
        ON CONFLICT DO NOTHING
    )
    UPDATE batches SET published_at = now(), items = NULL
    WHERE id IN (SELECT id FROM legacy);
    GET DIAGNOSTICS adopted = ROW_COUNT;
    RETURN adopted;
END
$$;

SELECT csrd_adopt_legacy_batches(interval '0 seconds');
-- Confirmed ones are in the broker already.
UPDATE batches SET published_at = now() WHERE published_at IS NULL;
DROP INDEX batches_unpublished;
