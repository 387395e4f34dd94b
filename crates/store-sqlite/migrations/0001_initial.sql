-- Custodian SQLite schema, version 1. Migrations are append-only: never edit a released file.
-- Times are microseconds since the Unix epoch; ids are hyphenated UUID text.

CREATE TABLE records (
    seq         INTEGER PRIMARY KEY,
    id          TEXT    NOT NULL UNIQUE,
    object      TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    owner_id    TEXT,
    team_id     TEXT,
    created_at  INTEGER NOT NULL,
    created_by  TEXT,
    updated_at  INTEGER NOT NULL,
    updated_by  TEXT,
    deleted_at  INTEGER,
    fields      TEXT    NOT NULL
);
CREATE INDEX records_object_id ON records (object, id);
CREATE INDEX records_object_owner ON records (object, owner_id);
CREATE INDEX records_object_updated ON records (object, updated_at);

-- Search text of non-sensitive fields, pre-tokenised by custodian_core::search (CJK bigrams).
CREATE VIRTUAL TABLE record_search USING fts5 (
    tokens,
    content = '',
    contentless_delete = 1,
    tokenize = 'unicode61 remove_diacritics 0'
);

CREATE TABLE record_versions (
    record_id   TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    object      TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    owner_id    TEXT,
    team_id     TEXT,
    deleted_at  INTEGER,
    fields      TEXT    NOT NULL,
    changed_at  INTEGER NOT NULL,
    changed_by  TEXT,
    PRIMARY KEY (record_id, version)
) WITHOUT ROWID;

CREATE TRIGGER record_versions_no_update BEFORE UPDATE ON record_versions
BEGIN SELECT RAISE(ABORT, 'record_versions is append-only'); END;
CREATE TRIGGER record_versions_no_delete BEFORE DELETE ON record_versions
BEGIN SELECT RAISE(ABORT, 'record_versions is append-only'); END;

CREATE TABLE blind_indexes (
    object      TEXT NOT NULL,
    field       TEXT NOT NULL,
    digest      BLOB NOT NULL,
    record_id   TEXT NOT NULL,
    PRIMARY KEY (object, field, digest, record_id)
) WITHOUT ROWID;
CREATE INDEX blind_indexes_record ON blind_indexes (record_id);

CREATE TABLE unique_keys (
    object      TEXT NOT NULL,
    field       TEXT NOT NULL,
    digest      BLOB NOT NULL,
    record_id   TEXT NOT NULL,
    PRIMARY KEY (object, field, digest)
) WITHOUT ROWID;
CREATE INDEX unique_keys_record ON unique_keys (record_id);

CREATE TABLE audit_events (
    seq         INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    actor_id    TEXT,
    action      TEXT    NOT NULL,
    object      TEXT,
    record_id   TEXT,
    request_id  TEXT,
    body        TEXT    NOT NULL,
    prev_hash   BLOB    NOT NULL,
    hash        BLOB    NOT NULL
);
CREATE INDEX audit_events_record ON audit_events (record_id);
CREATE INDEX audit_events_actor ON audit_events (actor_id, at);

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL,
    department_id TEXT,
    team_id       TEXT,
    status        TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE TABLE sessions (
    token_hash    TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    ip            TEXT,
    user_agent    TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE departments (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    parent_id   TEXT,
    created_at  INTEGER NOT NULL
);

CREATE TABLE teams (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    department_id TEXT,
    created_at    INTEGER NOT NULL
);

CREATE TABLE custom_fields (
    object      TEXT NOT NULL,
    name        TEXT NOT NULL,
    definition  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (object, name)
);

CREATE TABLE wrapped_keys (
    label       TEXT PRIMARY KEY,
    wrapped     BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);
