-- Custodian PostgreSQL schema, version 1. Migrations are append-only: never edit a migration
-- that has shipped; add a new file instead.
--
-- Times are BIGINT microseconds since the Unix epoch everywhere (the same representation as
-- the SQLite backend), so both backends compare and sort times identically.

-- Records: the current state of every record of every object. `fields` holds user fields as
-- JSON (sensitive values are encryption envelopes, never plaintext); `search` holds the
-- pre-tokenised search text (see custodian_core::search).
CREATE TABLE records (
    seq         BIGSERIAL NOT NULL,
    id          UUID PRIMARY KEY,
    object      TEXT NOT NULL,
    version     BIGINT NOT NULL,
    owner_id    UUID,
    team_id     UUID,
    created_at  BIGINT NOT NULL,
    created_by  UUID,
    updated_at  BIGINT NOT NULL,
    updated_by  UUID,
    deleted_at  BIGINT,
    fields      JSONB NOT NULL DEFAULT '{}'::jsonb,
    search      TSVECTOR NOT NULL DEFAULT ''::tsvector
);
CREATE INDEX records_object_id ON records (object, id);
CREATE INDEX records_object_owner ON records (object, owner_id);
CREATE INDEX records_object_team ON records (object, team_id);
CREATE INDEX records_search ON records USING GIN (search);

-- Immutable snapshots, one per change (invariant 4: nothing is overwritten).
CREATE TABLE record_versions (
    record_id   UUID NOT NULL,
    version     BIGINT NOT NULL,
    object      TEXT NOT NULL,
    action      TEXT NOT NULL CHECK (action IN ('create', 'update', 'delete', 'restore')),
    owner_id    UUID,
    team_id     UUID,
    deleted_at  BIGINT,
    fields      JSONB NOT NULL,
    changed_at  BIGINT NOT NULL,
    changed_by  UUID,
    PRIMARY KEY (record_id, version)
);

-- Versions are immutable once written.
CREATE FUNCTION custodian_versions_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'record_versions is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER record_versions_no_update BEFORE UPDATE OR DELETE ON record_versions
    FOR EACH ROW EXECUTE FUNCTION custodian_versions_immutable();
CREATE TRIGGER record_versions_no_truncate BEFORE TRUNCATE ON record_versions
    FOR EACH STATEMENT EXECUTE FUNCTION custodian_versions_immutable();

-- Keyed digests (HMAC of normalised values) of sensitive fields, for equality lookup.
CREATE TABLE blind_indexes (
    object      TEXT NOT NULL,
    field       TEXT NOT NULL,
    digest      BYTEA NOT NULL,
    record_id   UUID NOT NULL,
    PRIMARY KEY (object, field, digest, record_id)
);
CREATE INDEX blind_indexes_record ON blind_indexes (record_id);

-- Unique values: the primary key makes the database, not the service, the arbiter of
-- uniqueness, so two concurrent writers can never both hold the same value.
CREATE TABLE unique_keys (
    object      TEXT NOT NULL,
    field       TEXT NOT NULL,
    digest      BYTEA NOT NULL,
    record_id   UUID NOT NULL,
    PRIMARY KEY (object, field, digest)
);
CREATE INDEX unique_keys_record ON unique_keys (record_id);

-- The audit trail: one linear hash chain. `audit_head` is a single row locked FOR UPDATE by
-- every appending transaction, so several servers sharing this database still produce one
-- chain without gaps or forks.
CREATE TABLE audit_events (
    seq         BIGINT PRIMARY KEY,
    at          BIGINT NOT NULL,
    actor_id    UUID,
    action      TEXT NOT NULL,
    object      TEXT,
    record_id   UUID,
    request_id  TEXT,
    body        TEXT NOT NULL,
    prev_hash   BYTEA NOT NULL,
    hash        BYTEA NOT NULL
);
CREATE INDEX audit_events_record ON audit_events (record_id);
CREATE INDEX audit_events_actor_at ON audit_events (actor_id, at);

CREATE TABLE audit_head (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    seq         BIGINT NOT NULL,
    hash        BYTEA NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));

-- Append-only, enforced by the database itself (invariant 5): rewriting or removing audit
-- events fails even for code that bypasses the store.
CREATE FUNCTION custodian_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_events_no_update BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION custodian_audit_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION custodian_audit_append_only();
-- The head may move forward but never disappear or go back.
CREATE FUNCTION custodian_audit_head_forward_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' OR NEW.seq < OLD.seq OR NEW.id <> OLD.id THEN
        RAISE EXCEPTION 'audit_head only moves forward: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_head_forward_only BEFORE UPDATE OR DELETE ON audit_head
    FOR EACH ROW EXECUTE FUNCTION custodian_audit_head_forward_only();
CREATE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON audit_head
    FOR EACH STATEMENT EXECUTE FUNCTION custodian_audit_append_only();

-- A numeric reading of a JSON scalar's text that yields NULL instead of failing, so one
-- malformed value cannot break every query filtering or sorting on that field.
CREATE FUNCTION custodian_numeric(value TEXT) RETURNS NUMERIC
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN value ~ '^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]{1,3})?\s*$'
        THEN value::numeric
    END
$$;

-- People.
CREATE TABLE users (
    id              UUID PRIMARY KEY,
    username        TEXT NOT NULL UNIQUE,
    display_name    TEXT NOT NULL,
    password_hash   TEXT NOT NULL,
    role            TEXT NOT NULL,
    department_id   UUID,
    team_id         UUID,
    status          TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);

-- Sessions and API tokens: only the SHA-256 of the token is stored.
CREATE TABLE sessions (
    token_hash      TEXT PRIMARY KEY,
    user_id         UUID NOT NULL,
    created_at      BIGINT NOT NULL,
    last_seen_at    BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    ip              TEXT,
    user_agent      TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE departments (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL,
    parent_id   UUID,
    created_at  BIGINT NOT NULL
);

CREATE TABLE teams (
    id              UUID PRIMARY KEY,
    name            TEXT NOT NULL,
    department_id   UUID,
    created_at      BIGINT NOT NULL
);

CREATE TABLE custom_fields (
    object      TEXT NOT NULL,
    name        TEXT NOT NULL,
    definition  JSONB NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (object, name)
);

-- Data keys wrapped by the master key; the first writer of a label wins.
CREATE TABLE wrapped_keys (
    label       TEXT PRIMARY KEY,
    wrapped     BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);
