-- Servers also cache authenticated sessions with their users (one store read less per
-- request). Whatever ends or changes a session — logout, revocation, offboarding, an MFA reset,
-- a step-up window opened — or changes what a session's user may do — suspension, a new name —
-- bumps the cache epoch in the changing transaction, so every server drops its cached sessions
-- within `CACHE_EPOCH_POLL`. Moving `last_seen_at` (once a minute per session) does not.
CREATE TRIGGER sessions_epoch_delete AFTER DELETE ON sessions BEGIN UPDATE cache_epoch SET n = n + 1; END;
CREATE TRIGGER sessions_epoch_update AFTER UPDATE OF user_id, expires_at, kind, scope, step_up_until ON sessions
BEGIN UPDATE cache_epoch SET n = n + 1; END;
CREATE TRIGGER users_session_epoch_update AFTER UPDATE OF status, username, display_name ON users
BEGIN UPDATE cache_epoch SET n = n + 1; END;
