-- Issue 3: custom roles stored as data, time-boxed grants, login-failure counters shared by
-- every server on this database.

CREATE TABLE roles (
    name        TEXT PRIMARY KEY,
    definition  JSONB NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE access_grants (
    id          UUID PRIMARY KEY,
    user_id     UUID NOT NULL,
    object      TEXT NOT NULL,
    record_id   UUID,
    team_id     UUID,
    access      TEXT NOT NULL CHECK (access IN ('read', 'write')),
    reason      TEXT NOT NULL,
    granted_by  UUID,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT,
    revoked_by  UUID,
    CHECK ((record_id IS NULL) <> (team_id IS NULL))
);
CREATE INDEX access_grants_active ON access_grants (expires_at) WHERE revoked_at IS NULL;
CREATE INDEX access_grants_user ON access_grants (user_id, created_at);

CREATE TABLE login_failures (
    key              TEXT PRIMARY KEY,
    failures         BIGINT NOT NULL,
    last_failure_at  BIGINT NOT NULL
);

CREATE INDEX users_role ON users (role);
