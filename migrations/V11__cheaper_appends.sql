-- Every single create appends an audit row (in the CSR's own transaction since this
-- version). The log is appended in time order, so a BRIN index on `at` serves
-- `csrd audit --since` (which also walks the primary key) at a fraction of the cost of
-- keeping a btree up to date on every append.
DROP INDEX audit_log_at;
CREATE INDEX audit_log_at ON audit_log USING brin (at);
