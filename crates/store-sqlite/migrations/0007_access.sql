-- Issue 3: custom roles stored as data, time-boxed grants, login-failure counters shared by
-- every process on this database.

CREATE TABLE roles (
    name        TEXT PRIMARY KEY,
    definition  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE access_grants (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    object      TEXT NOT NULL,
    record_id   TEXT,
    team_id     TEXT,
    access      TEXT NOT NULL CHECK (access IN ('read', 'write')),
    reason      TEXT NOT NULL,
    granted_by  TEXT,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked_at  INTEGER,
    revoked_by  TEXT,
    CHECK ((record_id IS NULL) <> (team_id IS NULL))
);
CREATE INDEX access_grants_active ON access_grants (expires_at) WHERE revoked_at IS NULL;
CREATE INDEX access_grants_user ON access_grants (user_id, created_at);

CREATE TABLE login_failures (
    key              TEXT PRIMARY KEY,
    failures         INTEGER NOT NULL,
    last_failure_at  INTEGER NOT NULL
);

CREATE INDEX users_role ON users (role);
