-- Indexes for the list orders (tenant-scoped, ties broken by id so pages never skip or repeat).
-- 0001 already has (owner_kind, owner_id, created_at, id).
CREATE INDEX custom_csrs_owner_name ON custom_csrs (owner_kind, owner_id, name, id);
CREATE INDEX custom_csrs_owner_id ON custom_csrs (owner_kind, owner_id, id);
