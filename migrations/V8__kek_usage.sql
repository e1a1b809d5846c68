-- How many records each KEK has wrapped, ever (deletes do not give a nonce back): the nonce
-- budget. AES-GCM with random 96-bit nonces stays within NIST SP 800-38D's bound for at most
-- 2^32 encryptions under one key; csrd warns long before (src/custody.rs, `nonce_budget`).
-- Sharded by backend pid like csr_counts, so concurrent inserts do not queue on one row.
CREATE TABLE kek_usage (
    kek_id  text     NOT NULL,
    shard   smallint NOT NULL,
    wraps   bigint   NOT NULL,
    PRIMARY KEY (kek_id, shard)
);

INSERT INTO kek_usage (kek_id, shard, wraps)
SELECT kek_id, 0, count(*) FROM custom_csrs GROUP BY kek_id;

CREATE FUNCTION kek_usage_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO kek_usage AS u (kek_id, shard, wraps)
    SELECT kek_id, (pg_backend_pid() % 16)::smallint, count(*)
    FROM inserted GROUP BY kek_id
    ON CONFLICT (kek_id, shard) DO UPDATE SET wraps = u.wraps + EXCLUDED.wraps;
    RETURN NULL;
END $$;

CREATE TRIGGER custom_csrs_kek_usage AFTER INSERT ON custom_csrs
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION kek_usage_after_insert();
