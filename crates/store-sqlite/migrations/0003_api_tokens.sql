-- Personal API tokens live beside login sessions: same hashing, same revocation, own expiry
-- and scope (read or read_write), no idle timeout.
ALTER TABLE sessions ADD COLUMN kind TEXT NOT NULL DEFAULT 'session';
ALTER TABLE sessions ADD COLUMN scope TEXT NOT NULL DEFAULT 'read_write';
ALTER TABLE sessions ADD COLUMN name TEXT;
