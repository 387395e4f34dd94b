-- TOTP second factor (PRODUCT.md S2). The secret is an encryption envelope made by the service
-- (never plaintext); last_used_step is the replay guard: a code of that time step or an earlier
-- one is refused, on every server, because the check is a conditional UPDATE.
CREATE TABLE user_mfa (
    user_id         TEXT PRIMARY KEY,
    secret          TEXT NOT NULL,
    enabled         INTEGER NOT NULL DEFAULT 0,
    last_used_step  INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    confirmed_at    INTEGER
);

-- Single-use recovery codes, stored only as hashes.
CREATE TABLE mfa_recovery_codes (
    user_id    TEXT NOT NULL,
    code_hash  TEXT NOT NULL,
    used_at    INTEGER,
    PRIMARY KEY (user_id, code_hash)
);

-- Logins that passed the password and wait for the second factor; the challenge handed to the
-- client is stored only as its hash, and consumed by the login it completes.
CREATE TABLE mfa_challenges (
    challenge_hash  TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL
);
CREATE INDEX mfa_challenges_expiry ON mfa_challenges (expires_at);

-- The step-up window lives in the session row, so that every server sees it.
ALTER TABLE sessions ADD COLUMN step_up_until INTEGER;
