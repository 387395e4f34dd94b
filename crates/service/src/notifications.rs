//! Change notifications (S13). Important changes — owner, deal stage and amount — notify the
//! record's owner and the sales managers of the owner's team, in the application and through the
//! outbox (webhook; e-mail to the recipient's own address, or to the configured recipients for
//! a user without one). The notifications and their
//! outbox messages are part of the write's `WriteBatch`, so they commit with the change or not
//! at all. Recipients read their own notifications and acknowledge them (签字确认), which is an
//! audit event.

use crate::error::{ServiceError, ServiceResult};
use crate::records::Prepared;
use crate::{RequestContext, Service};
use custodian_core::ErrorCode;
use custodian_store::{NotificationRow, OutboxRow, UserRow, WriteAction, now_micros};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use uuid::Uuid;

/// Fields whose changes notify, per object (`*` = every object). Changes of fields locked on
/// the record (a lock override) notify too (`notice_locked`).
const WATCHED: &[(&str, &str)] = &[("deals", "stage"), ("deals", "amount")];

/// Adds the locked fields a write changed (under a lock override) to its notice, marked
/// `"locked": true`, so the owner and their managers hear of it even for unwatched fields.
pub(crate) fn notice_locked(
    prepared: &mut Prepared,
    def: &custodian_core::ObjectDef,
    locked: &[String],
    owner: Option<Uuid>,
) {
    let diff = prepared.audit.details.get("changes").cloned().unwrap_or(Value::Null);
    let notice =
        prepared.notice.get_or_insert_with(|| ChangeNotice { old_owner: owner, new_owner: owner, changes: Map::new() });
    for field in locked {
        let sensitive = def.field(field).is_some_and(|f| f.sensitive);
        let mut change = match diff.get(field) {
            Some(c) if !sensitive => c.clone(),
            _ => json!({ "changed": true }),
        };
        if let Value::Object(m) = &mut change {
            m.insert("locked".into(), Value::Bool(true));
        }
        notice.changes.insert(field.clone(), change);
    }
}

/// What a prepared write changes that people must hear about.
#[derive(Debug, Clone)]
pub(crate) struct ChangeNotice {
    pub old_owner: Option<Uuid>,
    pub new_owner: Option<Uuid>,
    /// `{"field": {"old": …, "new": …}}` of the watched fields (and `owner_id`).
    pub changes: Map<String, Value>,
}

/// The notice of an update, if it changes a watched field or the owner. `changes` is the
/// audit diff (sensitive values there are already keyed hashes; watched fields are not
/// sensitive, and a sensitive one would show by name only).
pub(crate) fn change_notice(
    object: &str,
    action: WriteAction,
    old_owner: Option<Uuid>,
    new_owner: Option<Uuid>,
    diff: &Value,
    sensitive: impl Fn(&str) -> bool,
) -> Option<ChangeNotice> {
    if action != WriteAction::Update {
        return None;
    }
    let mut changes = Map::new();
    if old_owner != new_owner {
        changes.insert("owner_id".into(), json!({ "old": old_owner, "new": new_owner }));
    }
    for (o, field) in WATCHED {
        if (*o == object || *o == "*")
            && let Some(change) = diff.get(*field)
        {
            let shown = if sensitive(field) { json!({ "changed": true }) } else { change.clone() };
            changes.insert((*field).to_owned(), shown);
        }
    }
    (!changes.is_empty()).then_some(ChangeNotice { old_owner, new_owner, changes })
}

#[derive(Debug, Clone, Serialize)]
pub struct NotificationView {
    pub id: Uuid,
    pub object: String,
    pub record_id: Uuid,
    pub version: i64,
    pub actor_id: Option<Uuid>,
    pub changes: Value,
    pub created_at: String,
    pub acked_at: Option<String>,
}

impl From<&NotificationRow> for NotificationView {
    fn from(n: &NotificationRow) -> Self {
        NotificationView {
            id: n.id,
            object: n.object.clone(),
            record_id: n.record_id,
            version: n.version,
            actor_id: n.actor_id,
            changes: n.changes.clone(),
            created_at: crate::micros_to_rfc3339(n.created_at),
            acked_at: n.acked_at.map(crate::micros_to_rfc3339),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct NotificationPage {
    pub items: Vec<NotificationView>,
    pub next_cursor: Option<String>,
}

impl Service {
    /// The notifications and outbox messages of a batch of prepared writes.
    pub(crate) async fn notifications_for(
        &self,
        prepared: &[Prepared],
    ) -> ServiceResult<(Vec<NotificationRow>, Vec<OutboxRow>)> {
        let mut notifications = Vec::new();
        let mut outbox = Vec::new();
        if prepared.iter().all(|p| p.notice.is_none()) {
            return Ok((notifications, outbox));
        }
        let users = self.store.list_users().await?;
        let now = now_micros();
        for p in prepared {
            let Some(notice) = &p.notice else { continue };
            let actor = p.audit.actor_id;
            let mut recipients = BTreeSet::new();
            for owner in [notice.old_owner, notice.new_owner].into_iter().flatten() {
                recipients.insert(owner);
                recipients.extend(managers_of(&users, owner));
            }
            // The person who made the change knows about it.
            if let Some(a) = actor {
                recipients.remove(&a);
            }
            for user_id in recipients {
                let row = NotificationRow {
                    id: Uuid::now_v7(),
                    user_id,
                    object: p.write.record.object.clone(),
                    record_id: p.write.record.id,
                    version: p.write.record.version,
                    actor_id: actor,
                    changes: Value::Object(notice.changes.clone()),
                    created_at: now,
                    acked_at: None,
                };
                let recipient = users.iter().find(|u| u.id == user_id);
                // The e-mail channel mails it to the recipient's own address when they have one.
                let message = json!({ "type": "notification", "recipient": user_id,
                    "recipient_username": recipient.map(|u| &u.username),
                    "recipient_email": recipient.and_then(|u| u.email.as_ref()),
                    "notification": NotificationView::from(&row) });
                outbox.extend(self.outbox_messages("notification", &message, now));
                notifications.push(row);
            }
        }
        Ok((notifications, outbox))
    }

    /// The caller's own notifications, newest first.
    pub async fn list_notifications(
        &self,
        ctx: &RequestContext,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> ServiceResult<NotificationPage> {
        let actor = ctx.actor.as_ref().ok_or_else(|| ServiceError::new(ErrorCode::Unauthenticated))?;
        let limit = self.page_size(limit)?;
        let before = cursor.map(crate::alerts::decode_cursor).transpose()?;
        let mut rows = self.store.list_notifications(actor.user_id, before, limit + 1).await?;
        let next_cursor = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|n| crate::alerts::encode_cursor(n.created_at, n.id))
        } else {
            None
        };
        // A change of a field the caller may not see is left out, and of one they see masked,
        // masked: the notification shows record values like any other read.
        let viewer = self.field_viewer(ctx);
        let items: Vec<NotificationView> = rows
            .iter()
            .map(|row| {
                let mut view = NotificationView::from(row);
                let mut shown = json!({ "changes": view.changes.take() });
                viewer.apply(&view.object, &mut shown, &mut Vec::new());
                view.changes = shown.get_mut("changes").map(Value::take).unwrap_or(Value::Null);
                view
            })
            .collect();
        let ids: Vec<Uuid> = items.iter().map(|n| n.id).collect();
        let records: Vec<Value> = items.iter().map(|n| json!({ "object": n.object, "id": n.record_id })).collect();
        self.audit_read_event(ctx, "notification.list", None, None, json!({ "ids": ids, "records": records })).await?;
        Ok(NotificationPage { items, next_cursor })
    }

    /// Signs off one of the caller's notifications (签字确认): an audit event naming the record
    /// and version. Someone else's notification is 404, like a missing one.
    pub async fn ack_notification(&self, ctx: &RequestContext, id: Uuid) -> ServiceResult<NotificationView> {
        let actor = ctx.actor.as_ref().ok_or_else(|| ServiceError::new(ErrorCode::Unauthenticated))?;
        let mut audit = self.audit_draft(ctx, "notification.ack");
        audit.details = json!({ "notification_id": id });
        let row = self.store.ack_notification(id, actor.user_id, now_micros(), audit).await?;
        Ok(NotificationView::from(&row))
    }
}

/// Active sales managers of the owner's team.
fn managers_of(users: &[UserRow], owner: Uuid) -> Vec<Uuid> {
    let Some(team) = users.iter().find(|u| u.id == owner).and_then(|u| u.team_id) else { return Vec::new() };
    users
        .iter()
        .filter(|u| u.role == "sales_manager" && u.status == "active" && u.team_id == Some(team) && u.id != owner)
        .map(|u| u.id)
        .collect()
}
