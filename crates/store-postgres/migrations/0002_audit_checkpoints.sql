-- Signed audit checkpoints (issue 5). The checkpoints themselves live in a file outside the
-- database; this table only coordinates which server writes which range (claims are taken
-- under a transaction-scoped advisory lock), so that one server writes one checkpoint per
-- range unless a writer died holding its claim. It is not evidence: the verifier trusts only
-- the signed file.
CREATE TABLE audit_checkpoint_claims (
    seq_from    BIGINT PRIMARY KEY,
    seq_to      BIGINT NOT NULL,
    claimant    TEXT   NOT NULL,
    claimed_at  BIGINT NOT NULL,
    written_at  BIGINT
);
CREATE INDEX audit_checkpoint_claims_pending ON audit_checkpoint_claims (seq_from) WHERE written_at IS NULL;

-- Privileges as a second wall behind the triggers of 0001: no role other than the owner may
-- rewrite or remove audit events, or remove the chain head. (Deployments run the servers under
-- a role that does not own the tables; the owner keeps its rights, the triggers still refuse.)
REVOKE UPDATE, DELETE, TRUNCATE ON audit_events FROM PUBLIC;
REVOKE DELETE, TRUNCATE ON audit_head FROM PUBLIC;

-- Append-only also means append at the head: an event must take the next sequence number and
-- link to the current last event. Appenders hold the `audit_head` row lock, so the last event
-- read here is the one they extend.
CREATE FUNCTION custodian_audit_extend_head() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    last_seq  BIGINT;
    last_hash BYTEA;
BEGIN
    SELECT seq, hash INTO last_seq, last_hash FROM audit_events ORDER BY seq DESC LIMIT 1;
    IF NOT FOUND THEN
        last_seq := 0;
        last_hash := decode(repeat('00', 32), 'hex');
    END IF;
    IF NEW.seq IS DISTINCT FROM last_seq + 1 OR NEW.prev_hash IS DISTINCT FROM last_hash THEN
        RAISE EXCEPTION 'audit_events is append-only: event % does not extend the chain head %', NEW.seq, last_seq
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_events_extend_head BEFORE INSERT ON audit_events
    FOR EACH ROW EXECUTE FUNCTION custodian_audit_extend_head();
