//! Audit queries, anomaly alerts, change notifications and the transactional outbox as the
//! store sees them (issue 5). The service decides what is an alert, who is notified and what a
//! caller may see; stores filter audit events in SQL, count activity from the audit events
//! themselves (so several servers agree), and keep alerts, notifications and outbox messages in
//! the same transaction as the change that caused them.

use serde_json::Value;
use uuid::Uuid;

/// How audit events are matched on their action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionFilter {
    Exact(String),
    /// Every action starting with this text (`record.` → `record.view`, `record.update`, …).
    Prefix(String),
}

/// Filters of an audit query, all pushed into SQL. Results are newest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditQuery {
    pub actor_id: Option<Uuid>,
    pub object: Option<String>,
    pub record_id: Option<Uuid>,
    pub action: Option<ActionFilter>,
    /// Events at or after this time (µs).
    pub from: Option<i64>,
    /// Events at or before this time (µs).
    pub to: Option<i64>,
    /// Only events with a sequence number below this one (the cursor; also bounds an export to
    /// the events that existed when it began).
    pub before_seq: Option<i64>,
    pub limit: u32,
}

/// The upper bound (exclusive) of a prefix range: `record.` → `record/`. Prefix filters are
/// range scans on the action index on both backends (no LIKE, no collation surprises).
pub fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = char::from_u32(last as u32 + 1) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// What an activity bucket measures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Measure {
    /// Number of events.
    Events,
    /// Number of distinct `record_id`s.
    DistinctRecords,
    /// Sum of an integer in the event details (`details.<key>`; `key` is an identifier).
    SumDetail(String),
}

/// Activity of one actor, counted from the audit events in `since..until` (µs) and grouped in
/// buckets of `bucket_micros` starting at `since`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketQuery {
    pub actor_id: Uuid,
    /// Actions counted (exact names).
    pub actions: Vec<String>,
    pub measure: Measure,
    pub since: i64,
    pub until: i64,
    pub bucket_micros: i64,
}

/// One non-empty bucket: `(index, value)` where the bucket starts at `since + index * bucket`.
pub type Bucket = (i64, i64);

/// An alert rule as stored: its definition is the service's `AlertRule`, serialised.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRuleRow {
    pub metric: String,
    pub definition: Value,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlertRow {
    pub id: Uuid,
    pub metric: String,
    /// The user whose activity raised it.
    pub user_id: Uuid,
    /// Start (µs) of the fixed window the alert belongs to: one alert per metric, user and window.
    pub window_start: i64,
    pub raised_at: i64,
    pub value: i64,
    pub details: Value,
    pub acked_at: Option<i64>,
    pub acked_by: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NotificationRow {
    pub id: Uuid,
    /// Recipient.
    pub user_id: Uuid,
    pub object: String,
    pub record_id: Uuid,
    pub version: i64,
    /// Who made the change.
    pub actor_id: Option<Uuid>,
    /// Changed fields (`{"stage": {"old": …, "new": …}}`); sensitive values never appear.
    pub changes: Value,
    pub created_at: i64,
    pub acked_at: Option<i64>,
}

/// A message waiting for delivery (or delivered).
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: Uuid,
    /// "webhook" or "email".
    pub channel: String,
    /// "alert" or "notification".
    pub kind: String,
    pub payload: Value,
    pub created_at: i64,
    pub next_attempt_at: i64,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub delivered_at: Option<i64>,
}

impl OutboxRow {
    pub fn new(channel: &str, kind: &str, payload: Value, now: i64) -> OutboxRow {
        OutboxRow {
            id: Uuid::now_v7(),
            channel: channel.to_owned(),
            kind: kind.to_owned(),
            payload,
            created_at: now,
            next_attempt_at: now,
            attempts: 0,
            last_error: None,
            delivered_at: None,
        }
    }
}

/// What a delivery attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryOutcome {
    Delivered {
        at: i64,
    },
    /// Try again at `retry_at` (µs), or never when `None` (attempts exhausted).
    Failed {
        error: String,
        retry_at: Option<i64>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_bounds() {
        assert_eq!(prefix_upper_bound("record.").as_deref(), Some("record/"));
        assert_eq!(prefix_upper_bound("a").as_deref(), Some("b"));
        assert_eq!(prefix_upper_bound(""), None);
    }
}
