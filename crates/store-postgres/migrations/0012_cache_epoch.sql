-- Issue 3: servers cache roles, grants, the organisation (departments, teams, users' places and
-- roles), custom fields and field rules. Every change to one of them bumps this counter in the
-- changing transaction (by a statement trigger, so no write path can forget it, and the new value
-- is visible only once the change is committed); each server reads the counter at most every
-- `CACHE_EPOCH_POLL` and drops its caches when it moved, so a change made on one server applies
-- on every other within that interval instead of a cache lifetime.
CREATE TABLE cache_epoch (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  BIGINT NOT NULL
);
INSERT INTO cache_epoch (id, n) VALUES (1, 0);

CREATE FUNCTION custodian_bump_cache_epoch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE cache_epoch SET n = n + 1 WHERE id = 1;
    RETURN NULL;
END;
$$;

CREATE TRIGGER roles_epoch AFTER INSERT OR UPDATE OR DELETE ON roles
    FOR EACH STATEMENT EXECUTE FUNCTION custodian_bump_cache_epoch();
CREATE TRIGGER access_grants_epoch AFTER INSERT OR UPDATE OR DELETE ON access_grants
    FOR EACH STATEMENT EXECUTE FUNCTION custodian_bump_cache_epoch();
CREATE TRIGGER departments_epoch AFTER INSERT OR UPDATE OR DELETE ON departments
    FOR EACH STATEMENT EXECUTE FUNCTION custodian_bump_cache_epoch();
CREATE TRIGGER teams_epoch AFTER INSERT OR UPDATE OR DELETE ON teams
    FOR EACH STATEMENT EXECUTE FUNCTION custodian_bump_cache_epoch();
-- Users: only what the caches hold (status, password and the like are read per request).
CREATE TRIGGER users_epoch AFTER INSERT OR DELETE OR UPDATE OF role, department_id, team_id ON users
    FOR EACH STATEMENT EXECUTE FUNCTION custodian_bump_cache_epoch();
CREATE TRIGGER custom_fields_epoch AFTER INSERT OR UPDATE OR DELETE ON custom_fields
    FOR EACH STATEMENT EXECUTE FUNCTION custodian_bump_cache_epoch();
CREATE TRIGGER field_rules_epoch AFTER INSERT OR UPDATE OR DELETE ON field_rules
    FOR EACH STATEMENT EXECUTE FUNCTION custodian_bump_cache_epoch();
