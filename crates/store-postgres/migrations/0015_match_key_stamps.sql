-- Match keys carry the stamp of the write that stored them: a per-object counter moved by every
-- write of match keys, whose row lock is held to commit (so stamps commit in order across
-- servers). A duplicate check reads the counter before it looks its keys up; when its write
-- commits, keys stamped later were not seen by the check, and the write is refused if their
-- record would have been a candidate (see MatchGuard in the store crate).
ALTER TABLE match_keys ADD COLUMN stamp BIGINT NOT NULL DEFAULT 0;
CREATE INDEX match_keys_stamp ON match_keys (object, stamp);
CREATE TABLE match_key_stamps (
    object  TEXT PRIMARY KEY,
    stamp   BIGINT NOT NULL
);
