-- Audit events by record (the record filter of the audit query) are indexed by the writer in
-- sorted batches, not by each append. An index on audit_events (record_id) put each event of a
-- group commit on a random leaf page of its own (record ids are random): a group of 32 audited
-- reads wrote some 32 more pages to the WAL, then to the database file, which was a third of
-- the cost of an audited GET. The writer now adds the events after `audit_record_index_mark`
-- in one sorted insert (`index_audit_records` in lib.rs), and the record filter reads this
-- index and the events after the mark (a range of the table's own key).
CREATE TABLE audit_record_index (
    record_id   TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (record_id, seq)
) WITHOUT ROWID;
CREATE TABLE audit_record_index_mark (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    seq         INTEGER NOT NULL
);
INSERT INTO audit_record_index (record_id, seq)
SELECT record_id, seq FROM audit_events WHERE record_id IS NOT NULL ORDER BY record_id, seq;
INSERT INTO audit_record_index_mark (id, seq) SELECT 1, COALESCE(MAX(seq), 0) FROM audit_events;
DROP INDEX audit_events_record;
