-- A replay of an Idempotency-Key whose CSR was deleted answers 404/1419 at once: delete marks
-- the record (in the same statement), found by the CSR id.
ALTER TABLE idempotency_keys ADD COLUMN csr_deleted_at timestamptz;
CREATE INDEX idempotency_keys_csr ON idempotency_keys (csr_id);
