-- Who did what, to which tenant, when, from where: creates, deletes, batch submissions, denied
-- and failed authentications (rate-limited), token, user and KEK operations. Never a secret:
-- actors are token ids and emails.
--
-- Append-only: rows can be inserted and read, never changed or removed, whoever asks (the
-- triggers bind the table's owner too; only dropping them, a schema change, gets round them).
-- A service role that does not own the table is also denied by privilege.
CREATE TABLE audit_log (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    action      text        NOT NULL,
    outcome     text        NOT NULL,
    actor_kind  text        NOT NULL CHECK (actor_kind IN ('token', 'user', 'operator', 'anonymous')),
    actor       text,
    owner_kind  text        CHECK (owner_kind IN ('account', 'zone')),
    owner_id    text,
    target      text,
    remote_addr text,
    request_id  text,
    trace_id    text,
    detail      jsonb
);

CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_owner_at ON audit_log (owner_kind, owner_id, at);

CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER audit_log_no_update_or_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();

REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM PUBLIC;
