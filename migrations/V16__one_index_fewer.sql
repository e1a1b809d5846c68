-- Every CSR insert kept four btree entries; the (owner, id) one served only lists in
-- account_tag order and `csrd keys verify --account`. account_tag is the same for every row
-- of a tenant, so that order is the creation order, and both now walk the tenant's
-- (owner, created_at, id) index: one entry fewer per insert.
DROP INDEX custom_csrs_owner_id;
