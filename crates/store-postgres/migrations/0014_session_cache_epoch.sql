-- Servers also cache authenticated sessions with their users (one store read less per
-- request). Whatever ends or changes a session — logout, revocation, offboarding, an MFA reset,
-- a step-up window opened — or changes what a session's user may do — suspension, a new name —
-- bumps the cache epoch in the changing transaction, so every server drops its cached sessions
-- within `CACHE_EPOCH_POLL`. Moving `last_seen_at` (once a minute per session) does not.
CREATE TRIGGER sessions_epoch_delete AFTER DELETE ON sessions
    FOR EACH STATEMENT EXECUTE FUNCTION custodian_bump_cache_epoch();
CREATE TRIGGER sessions_epoch_update AFTER UPDATE OF user_id, expires_at, kind, scope, step_up_until ON sessions
    FOR EACH STATEMENT EXECUTE FUNCTION custodian_bump_cache_epoch();
CREATE TRIGGER users_session_epoch_update AFTER UPDATE OF status, username, display_name ON users
    FOR EACH STATEMENT EXECUTE FUNCTION custodian_bump_cache_epoch();
