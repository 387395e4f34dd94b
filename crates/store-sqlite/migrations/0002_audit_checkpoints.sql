-- Signed audit checkpoints (issue 5). The checkpoints themselves live in a file outside the
-- database; this table only coordinates who writes which range, so that several writers
-- (a server and `custodian audit checkpoint`) never sign the same range twice unless a writer
-- died holding its claim. It is not evidence: the verifier trusts only the signed file.
CREATE TABLE audit_checkpoint_claims (
    seq_from    INTEGER PRIMARY KEY,
    seq_to      INTEGER NOT NULL,
    claimant    TEXT    NOT NULL,
    claimed_at  INTEGER NOT NULL,
    written_at  INTEGER
);
CREATE INDEX audit_checkpoint_claims_pending ON audit_checkpoint_claims (seq_from) WHERE written_at IS NULL;

-- Append-only also means append at the head: an event must take the next sequence number and
-- link to the current last event, so that nothing can be slipped into the chain by an INSERT
-- (UPDATE and DELETE are refused since 0001).
CREATE TRIGGER audit_events_extend_head BEFORE INSERT ON audit_events
WHEN NEW.seq IS NOT (SELECT COALESCE(MAX(seq), 0) + 1 FROM audit_events)
  OR NEW.prev_hash IS NOT COALESCE((SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1), zeroblob(32))
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: an event must extend the chain head'); END;
