//! Access-control rows (issue 3): custom role definitions stored as data, time-boxed grants
//! that widen one user's row scope until they expire, and login-failure counters shared by every
//! server on the same database.

use uuid::Uuid;

/// A custom role: its definition is `custodian_core::access::RoleDef` as JSON (the store does not
/// interpret it).
#[derive(Debug, Clone, PartialEq)]
pub struct RoleRow {
    pub name: String,
    pub definition: serde_json::Value,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A time-boxed grant: `user_id` may read (or read and update) one record, or a team's records,
/// of `object` until `expires_at`, unless revoked earlier.
#[derive(Debug, Clone, PartialEq)]
pub struct GrantRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub object: String,
    /// Exactly one of `record_id` and `team_id` is set.
    pub record_id: Option<Uuid>,
    pub team_id: Option<Uuid>,
    /// "read" or "write".
    pub access: String,
    pub reason: String,
    pub granted_by: Option<Uuid>,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<Uuid>,
}

impl GrantRow {
    /// In force at `now` (µs): not revoked and not expired.
    pub fn active_at(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }
}

/// Failed logins counted under one key (an account or a client address, hashed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginCounterRow {
    pub key: String,
    pub failures: i64,
    pub last_failure_at: i64,
}
