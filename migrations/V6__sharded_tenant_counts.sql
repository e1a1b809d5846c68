-- Per-tenant counts in shards. With one row per tenant, every insert of a tenant updated that
-- row and held its lock until commit, so all of a tenant's creates were serialised. Each
-- database session now adds to its own shard (its backend pid modulo 16), so concurrent
-- writers of one tenant touch different rows; a list sums the tenant's shards, which is as
-- exact as before (one snapshot). A shard may go negative (a CSR created through one session
-- and deleted through another); only the sum is meaningful.
ALTER TABLE csr_counts ADD COLUMN shard smallint NOT NULL DEFAULT 0;
ALTER TABLE csr_counts DROP CONSTRAINT csr_counts_pkey;
ALTER TABLE csr_counts ADD PRIMARY KEY (owner_kind, owner_id, shard);
ALTER TABLE csr_counts DROP CONSTRAINT IF EXISTS csr_counts_n_check;
ALTER TABLE csr_counts ALTER COLUMN shard DROP DEFAULT;

CREATE OR REPLACE FUNCTION csr_counts_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO csr_counts AS c (owner_kind, owner_id, shard, n)
    SELECT owner_kind, owner_id, (pg_backend_pid() % 16)::smallint, count(*)
    FROM inserted GROUP BY owner_kind, owner_id
    ON CONFLICT (owner_kind, owner_id, shard) DO UPDATE SET n = c.n + EXCLUDED.n;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION csr_counts_after_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO csr_counts AS c (owner_kind, owner_id, shard, n)
    SELECT owner_kind, owner_id, (pg_backend_pid() % 16)::smallint, -count(*)
    FROM deleted GROUP BY owner_kind, owner_id
    ON CONFLICT (owner_kind, owner_id, shard) DO UPDATE SET n = c.n + EXCLUDED.n;
    RETURN NULL;
END $$;
