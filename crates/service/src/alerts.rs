//! Anomaly alerts (S9). Rules are data (one per metric, editable by admins, audited). Counters
//! are derived from the audit events in the database — never from memory — so every server
//! computes the same numbers; an alert is unique per metric, user and window in the database,
//! so several servers evaluating at once raise it once. The alert, its outbox messages and its
//! audit event commit together; an optional automatic suspension goes through the ordinary
//! suspend path afterwards.

use crate::error::{ServiceError, ServiceResult};
use crate::{RequestContext, Service};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use custodian_core::{ErrorCode, FieldError};
use custodian_store::{AlertRow, AlertRuleRow, BucketQuery, Measure, OutboxRow, now_micros};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

const MICROS_PER_SEC: i64 = 1_000_000;
/// The baseline is the user's own activity over this many days before the window.
pub const BASELINE_DAYS: i64 = 30;
/// Off-hours activity is classified in slots this long (every real time zone offset is a
/// multiple of it, so slot boundaries fall on local quarter hours).
const OFF_HOURS_SLOT_MICROS: i64 = 15 * 60 * MICROS_PER_SEC;

/// The name of the anomaly evaluation in the database's job leases.
pub const ALERT_JOB: &str = "anomaly_evaluation";

/// The metrics alerts can watch.
pub const METRICS: &[&str] = &["distinct_records_viewed", "reveals", "export_rows", "failed_logins", "off_hours"];

/// Actions that count as activity for the off-hours metric.
const ACTIVITY_ACTIONS: &[&str] = &[
    "auth.login",
    "record.view",
    "record.list",
    "record.search",
    "record.history",
    "record.reveal",
    "record.create",
    "record.update",
    "record.delete",
    "record.restore",
    "record.export",
    "record.import",
    "audit.query",
    "audit.export",
];

/// Working hours for the off-hours metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkingHours {
    /// IANA time zone name.
    pub timezone: String,
    /// Local start of the working day, "HH:MM".
    pub start: String,
    /// Local end of the working day, "HH:MM" (exclusive).
    pub end: String,
    /// Working weekdays, 1 = Monday … 7 = Sunday.
    pub weekdays: Vec<u8>,
}

impl Default for WorkingHours {
    fn default() -> Self {
        WorkingHours {
            timezone: "Asia/Shanghai".into(),
            start: "09:00".into(),
            end: "18:00".into(),
            weekdays: vec![1, 2, 3, 4, 5],
        }
    }
}

/// One alert rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    pub metric: String,
    pub enabled: bool,
    /// Length of the sliding window.
    pub window_secs: i64,
    /// Alert when the value in the window reaches this.
    pub absolute: Option<i64>,
    /// Alert when the value exceeds this multiple of the user's own 30-day p95 (per window) …
    pub baseline_multiple: Option<f64>,
    /// … and is at least this (a user with almost no history is judged by `absolute` only).
    pub baseline_min: i64,
    /// Suspend the user when the alert is raised.
    pub auto_suspend: bool,
    /// Only for `off_hours`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_hours: Option<WorkingHours>,
}

impl AlertRule {
    /// The rule of a metric when no administrator has changed it.
    pub fn default_for(metric: &str) -> Option<AlertRule> {
        let rule = |window_secs: i64, absolute: i64, multiple: Option<f64>, min: i64| AlertRule {
            metric: metric.to_owned(),
            enabled: true,
            window_secs,
            absolute: Some(absolute),
            baseline_multiple: multiple,
            baseline_min: min,
            auto_suspend: false,
            working_hours: None,
        };
        Some(match metric {
            "distinct_records_viewed" => rule(3600, 200, Some(3.0), 50),
            "reveals" => rule(3600, 30, Some(3.0), 10),
            "export_rows" => rule(24 * 3600, 5000, Some(3.0), 1000),
            "failed_logins" => rule(15 * 60, 10, None, 0),
            "off_hours" => AlertRule { working_hours: Some(WorkingHours::default()), ..rule(3600, 50, Some(3.0), 20) },
            _ => return None,
        })
    }

    fn validate(&self) -> ServiceResult<()> {
        let err = |field: &str, en: &str, zh: &str| {
            Err(ServiceError::validation(vec![FieldError::new(field, "invalid", en, zh)]))
        };
        if !METRICS.contains(&self.metric.as_str()) {
            return err("metric", "Unknown metric.", "未知指标。");
        }
        if !(60..=BASELINE_DAYS * 24 * 3600).contains(&self.window_secs) {
            return err("window_secs", "The window is between 60 seconds and 30 days.", "窗口须在 60 秒到 30 天之间。");
        }
        if self.absolute.is_some_and(|a| a < 1) {
            return err("absolute", "Thresholds are at least 1.", "阈值至少为 1。");
        }
        if self.baseline_multiple.is_some_and(|m| !(m.is_finite() && m >= 1.0)) {
            return err("baseline_multiple", "The multiple is at least 1.", "倍数至少为 1。");
        }
        if self.absolute.is_none() && self.baseline_multiple.is_none() {
            return err(
                "absolute",
                "Give an absolute threshold, a baseline multiple, or both.",
                "须设置绝对阈值或基线倍数。",
            );
        }
        if self.baseline_min < 0 {
            return err("baseline_min", "Must not be negative.", "不能为负数。");
        }
        match (&self.working_hours, self.metric == "off_hours") {
            (Some(w), true) => {
                if parse_clock(&w.start).is_none() {
                    return err("working_hours.start", "Use HH:MM.", "格式为 HH:MM。");
                }
                if parse_clock(&w.end).is_none() {
                    return err("working_hours.end", "Use HH:MM.", "格式为 HH:MM。");
                }
                if jiff::tz::TimeZone::get(&w.timezone).is_err() {
                    return err("working_hours.timezone", "Unknown IANA time zone.", "未知时区。");
                }
                if w.weekdays.iter().any(|d| !(1..=7).contains(d)) {
                    return err("working_hours.weekdays", "Weekdays are 1 (Monday) to 7 (Sunday).", "星期为 1 到 7。");
                }
            }
            (None, true) => return err("working_hours", "Off-hours rules need working hours.", "须设置工作时间。"),
            (Some(_), false) => {
                return err("working_hours", "Only off-hours rules have working hours.", "仅非工作时间规则可设置。");
            }
            (None, false) => {}
        }
        Ok(())
    }

    /// The audit actions counted and how.
    fn measure(&self) -> (Vec<String>, Measure) {
        let actions = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        match self.metric.as_str() {
            "distinct_records_viewed" => (actions(&["record.view"]), Measure::DistinctRecords),
            "reveals" => (actions(&["record.reveal"]), Measure::Events),
            "export_rows" => (actions(&["record.export", "audit.export"]), Measure::SumDetail("rows".into())),
            "failed_logins" => (actions(&["auth.login_failed"]), Measure::Events),
            _ => (actions(ACTIVITY_ACTIONS), Measure::Events),
        }
    }
}

/// Minutes after midnight of "HH:MM".
fn parse_clock(text: &str) -> Option<i32> {
    let (h, m) = text.split_once(':')?;
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    ((0..=24).contains(&h) && (0..60).contains(&m) && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
}

/// Working-hours classification of instants.
struct Clock {
    tz: jiff::tz::TimeZone,
    start: i32,
    end: i32,
    weekdays: Vec<u8>,
}

impl Clock {
    fn new(w: &WorkingHours) -> Option<Clock> {
        Some(Clock {
            tz: jiff::tz::TimeZone::get(&w.timezone).ok()?,
            start: parse_clock(&w.start)?,
            end: parse_clock(&w.end)?,
            weekdays: w.weekdays.clone(),
        })
    }

    fn off_hours(&self, micros: i64) -> bool {
        let Ok(ts) = jiff::Timestamp::from_microsecond(micros) else { return false };
        let local = ts.to_zoned(self.tz.clone());
        let weekday = local.weekday().to_monday_one_offset() as u8;
        let minute = i32::from(local.hour()) * 60 + i32::from(local.minute());
        !self.weekdays.contains(&weekday) || minute < self.start || minute >= self.end
    }
}

/// The 95th percentile (nearest rank) of `values`.
fn p95(values: &mut [i64]) -> i64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    let rank = ((values.len() as f64) * 0.95).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

/// An alert as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AlertView {
    pub id: Uuid,
    pub metric: String,
    pub user_id: Uuid,
    pub raised_at: String,
    pub window_start: String,
    pub value: i64,
    pub details: Value,
    pub acked_at: Option<String>,
    pub acked_by: Option<Uuid>,
}

impl From<&AlertRow> for AlertView {
    fn from(a: &AlertRow) -> Self {
        AlertView {
            id: a.id,
            metric: a.metric.clone(),
            user_id: a.user_id,
            raised_at: crate::micros_to_rfc3339(a.raised_at),
            window_start: crate::micros_to_rfc3339(a.window_start),
            value: a.value,
            details: a.details.clone(),
            acked_at: a.acked_at.map(crate::micros_to_rfc3339),
            acked_by: a.acked_by,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertPage {
    pub items: Vec<AlertView>,
    pub next_cursor: Option<String>,
}

/// What one evaluation of one rule for one user found.
struct Finding {
    value: i64,
    baseline_p95: i64,
    reason: &'static str,
    threshold: f64,
}

impl Service {
    /// Every rule: the stored ones, and the defaults for metrics nobody changed.
    pub async fn alert_rules(&self) -> ServiceResult<Vec<AlertRule>> {
        let stored = self.store.list_alert_rules().await?;
        let mut rules = Vec::new();
        for metric in METRICS {
            let from_store = stored
                .iter()
                .find(|r| r.metric == *metric)
                .and_then(|r| serde_json::from_value::<AlertRule>(r.definition.clone()).ok());
            if let Some(rule) = from_store.or_else(|| AlertRule::default_for(metric)) {
                rules.push(rule);
            }
        }
        Ok(rules)
    }

    /// Rules as admins and auditors read them.
    pub async fn list_alert_rules(&self, ctx: &RequestContext) -> ServiceResult<Vec<AlertRule>> {
        self.auditor_or_refuse(ctx, "alert.rules").await?;
        self.alert_rules().await
    }

    /// Replaces the rule of one metric (admins only; audited with the old and new rule).
    pub async fn put_alert_rule(&self, ctx: &RequestContext, metric: &str, rule: Value) -> ServiceResult<AlertRule> {
        self.admin_or_refuse(ctx, "alert.rule_update").await?;
        if ctx.actor.is_none() {
            return Err(ServiceError::new(ErrorCode::Forbidden));
        }
        if !METRICS.contains(&metric) {
            return Err(ServiceError::not_found());
        }
        let mut rule = rule;
        if let Value::Object(m) = &mut rule {
            m.entry("metric").or_insert_with(|| json!(metric));
        }
        let rule: AlertRule = serde_json::from_value(rule)
            .map_err(|e| ServiceError::with_message(ErrorCode::MalformedRequest, format!("Invalid alert rule: {e}")))?;
        if rule.metric != metric {
            return Err(ServiceError::with_message(
                ErrorCode::MalformedRequest,
                "The rule's metric must match the path.",
            ));
        }
        rule.validate()?;
        let old = self.alert_rules().await?.into_iter().find(|r| r.metric == metric);
        let mut audit = self.audit_draft(ctx, "alert.rule_update");
        audit.details = json!({ "metric": metric, "old": old, "new": rule });
        let row = AlertRuleRow { metric: metric.to_owned(), definition: json!(rule), updated_at: now_micros() };
        self.store.put_alert_rule(row, audit).await?;
        Ok(rule)
    }

    /// Alerts, newest first (admins and auditors).
    pub async fn list_alerts(
        &self,
        ctx: &RequestContext,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> ServiceResult<AlertPage> {
        self.auditor_or_refuse(ctx, "alert.list").await?;
        let limit = self.page_size(limit)?;
        let before = cursor.map(decode_cursor).transpose()?;
        let mut rows = self.store.list_alerts(before, limit + 1).await?;
        let next_cursor = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|a| encode_cursor(a.raised_at, a.id))
        } else {
            None
        };
        let ids: Vec<Uuid> = rows.iter().map(|a| a.id).collect();
        self.audit_read_event(ctx, "alert.list", None, None, json!({ "ids": ids })).await?;
        Ok(AlertPage { items: rows.iter().map(AlertView::from).collect(), next_cursor })
    }

    /// Acknowledges an alert (admins and auditors; audited).
    pub async fn ack_alert(&self, ctx: &RequestContext, id: Uuid) -> ServiceResult<AlertView> {
        self.auditor_or_refuse(ctx, "alert.ack").await?;
        let actor = ctx.actor.as_ref().ok_or_else(|| ServiceError::new(ErrorCode::Forbidden))?;
        let mut audit = self.audit_draft(ctx, "alert.ack");
        audit.details = json!({ "alert_id": id });
        let row = self.store.ack_alert(id, actor.user_id, now_micros(), audit).await?;
        Ok(AlertView::from(&row))
    }

    /// Evaluates every enabled rule for every user active in that rule's window; returns the
    /// alerts raised. Safe to run on several servers at once (alerts are unique per metric,
    /// user and window in the database); `evaluate_alerts_if_due` is what `serve` runs.
    ///
    /// Cost is bounded: per rule one index range scan finds the users with a counted event in
    /// the window; per such user one range scan of the `(actor_id, action, at)` index counts the
    /// window, and the 30-day baseline is read only when the window's value could exceed it
    /// (at least `baseline_min` and not already over the absolute threshold).
    pub async fn evaluate_alerts(&self, now: i64) -> ServiceResult<Vec<AlertRow>> {
        let rules: Vec<AlertRule> = self.alert_rules().await?.into_iter().filter(|r| r.enabled).collect();
        let mut raised = Vec::new();
        for rule in &rules {
            let (actions, _) = rule.measure();
            let users = self.store.active_actors(now - rule.window_secs * MICROS_PER_SEC, &actions).await?;
            for user in users {
                let Some(finding) = self.evaluate_rule(rule, user, now).await? else { continue };
                if let Some(alert) = self.raise_alert(rule, user, now, finding).await? {
                    raised.push(alert);
                }
            }
        }
        Ok(raised)
    }

    /// Runs `evaluate_alerts` when this server (`holder`) gets the evaluation lease in the
    /// database: at most once per `every_secs` across all servers sharing the database, one at
    /// a time. `None` when another server has it or the period has not elapsed.
    pub async fn evaluate_alerts_if_due(
        &self,
        holder: &str,
        now: i64,
        every_secs: u64,
    ) -> ServiceResult<Option<Vec<AlertRow>>> {
        let every = i64::try_from(every_secs).unwrap_or(i64::MAX / MICROS_PER_SEC).saturating_mul(MICROS_PER_SEC);
        // Long enough for any evaluation; if a server dies holding it, another takes over after.
        let lease = every.max(60 * MICROS_PER_SEC).saturating_mul(5);
        if !self.store.claim_periodic_job(ALERT_JOB, holder, now, lease, every).await? {
            return Ok(None);
        }
        let outcome = self.evaluate_alerts(now).await;
        self.store.release_periodic_job(ALERT_JOB, holder).await?;
        outcome.map(Some)
    }

    async fn evaluate_rule(&self, rule: &AlertRule, user: Uuid, now: i64) -> ServiceResult<Option<Finding>> {
        let window = rule.window_secs * MICROS_PER_SEC;
        let baseline_span = BASELINE_DAYS * 24 * 3600 * MICROS_PER_SEC;
        let slots = (baseline_span / window).max(1);
        let (actions, measure) = rule.measure();
        let bucket = |since: i64, until: i64, bucket_micros: i64| BucketQuery {
            actor_id: user,
            actions: actions.clone(),
            measure: measure.clone(),
            since,
            until,
            bucket_micros,
        };
        // Whether the baseline can change the verdict for a window value.
        let needs_baseline = |value: i64| {
            rule.baseline_multiple.is_some()
                && value > 0
                && value >= rule.baseline_min
                && rule.absolute.is_none_or(|a| value < a)
        };
        let mut history = vec![0i64; slots as usize];
        let value = if rule.metric == "off_hours" {
            let Some(clock) = rule.working_hours.as_ref().and_then(Clock::new) else { return Ok(None) };
            let base_start = now - window - baseline_span;
            let start = base_start.div_euclid(OFF_HOURS_SLOT_MICROS) * OFF_HOURS_SLOT_MICROS;
            // The first slot that starts inside the window: the window counts whole slots.
            let split = start
                + (now - window - start + OFF_HOURS_SLOT_MICROS - 1).max(0) / OFF_HOURS_SLOT_MICROS
                    * OFF_HOURS_SLOT_MICROS;
            let current = self.store.audit_buckets(&bucket(split, now + 1, OFF_HOURS_SLOT_MICROS)).await?;
            let value = current
                .iter()
                .filter(|(index, _)| clock.off_hours(split + index * OFF_HOURS_SLOT_MICROS))
                .map(|(_, count)| *count)
                .sum::<i64>();
            if needs_baseline(value) {
                for (index, count) in self.store.audit_buckets(&bucket(start, split, OFF_HOURS_SLOT_MICROS)).await? {
                    let slot_start = start + index * OFF_HOURS_SLOT_MICROS;
                    if !clock.off_hours(slot_start) {
                        continue;
                    }
                    let slot = ((slot_start - base_start).max(0) / window) as usize;
                    if let Some(h) = history.get_mut(slot) {
                        *h += count;
                    }
                }
            }
            value
        } else {
            let current = self.store.audit_buckets(&bucket(now - window, now + 1, window + 1)).await?;
            let value = current.iter().map(|(_, v)| *v).sum::<i64>();
            if needs_baseline(value) {
                let past =
                    self.store.audit_buckets(&bucket(now - window - slots * window, now - window, window)).await?;
                for (index, v) in past {
                    if let Some(h) = usize::try_from(index).ok().and_then(|i| history.get_mut(i)) {
                        *h = v;
                    }
                }
            }
            value
        };
        let baseline_p95 = p95(&mut history);
        if let Some(absolute) = rule.absolute
            && value >= absolute
        {
            return Ok(Some(Finding { value, baseline_p95, reason: "absolute", threshold: absolute as f64 }));
        }
        if let Some(multiple) = rule.baseline_multiple
            && baseline_p95 > 0
            && value >= rule.baseline_min
            && (value as f64) > multiple * baseline_p95 as f64
        {
            return Ok(Some(Finding {
                value,
                baseline_p95,
                reason: "baseline",
                threshold: multiple * baseline_p95 as f64,
            }));
        }
        Ok(None)
    }

    async fn raise_alert(
        &self,
        rule: &AlertRule,
        user: Uuid,
        now: i64,
        finding: Finding,
    ) -> ServiceResult<Option<AlertRow>> {
        let window = rule.window_secs * MICROS_PER_SEC;
        let username = self.store.get_user(user).await?.map(|u| u.username);
        let details = json!({
            "reason": finding.reason,
            "threshold": finding.threshold,
            "baseline_p95": finding.baseline_p95,
            "window_secs": rule.window_secs,
            "window_from": crate::micros_to_rfc3339(now - window),
            "window_to": crate::micros_to_rfc3339(now),
            "username": username,
            "auto_suspend": rule.auto_suspend,
        });
        let alert = AlertRow {
            id: Uuid::now_v7(),
            metric: rule.metric.clone(),
            user_id: user,
            window_start: now.div_euclid(window) * window,
            raised_at: now,
            value: finding.value,
            details,
            acked_at: None,
            acked_by: None,
        };
        let message = json!({ "type": "alert", "alert": AlertView::from(&alert) });
        let outbox = self.outbox_messages("alert", &message, now);
        let mut audit = self.audit_draft(&RequestContext::default(), "alert.raised");
        audit.details = json!({ "alert_id": alert.id, "metric": alert.metric, "user_id": user, "value": alert.value,
            "reason": finding.reason });
        if !self.store.insert_alert(alert.clone(), outbox, audit).await? {
            return Ok(None);
        }
        tracing::warn!(metric = %alert.metric, user = %user, value = alert.value, "anomaly alert raised");
        if rule.auto_suspend && self.last_active_admin(user).await? {
            // Suspending the only administrator would leave nobody to review the alert.
            tracing::error!(user = %user, "automatic suspension skipped: the user is the last active admin");
        } else if rule.auto_suspend {
            let ctx = RequestContext { user_agent: Some("custodian-alerts".into()), ..RequestContext::default() };
            let reason = json!({ "alert_id": alert.id, "metric": alert.metric });
            match self.set_user_active_because(&ctx, user, false, Some(reason)).await {
                Ok(_) => {}
                Err(e) if e.code == ErrorCode::Conflict => {}
                Err(e) => tracing::error!(error = %e, user = %user, "automatic suspension failed"),
            }
        }
        Ok(Some(alert))
    }

    async fn last_active_admin(&self, user: Uuid) -> ServiceResult<bool> {
        let users = self.store.list_users().await?;
        let admins: Vec<_> = users.iter().filter(|u| u.role == "admin" && u.status == "active").collect();
        Ok(admins.len() <= 1 && admins.iter().any(|u| u.id == user))
    }

    /// One outbox message per configured delivery channel.
    pub(crate) fn outbox_messages(&self, kind: &str, payload: &Value, now: i64) -> Vec<OutboxRow> {
        self.config.outbox_channels.iter().map(|channel| OutboxRow::new(channel, kind, payload.clone(), now)).collect()
    }
}

pub(crate) fn encode_cursor(at: i64, id: Uuid) -> String {
    B64.encode(format!("t:{at}:{id}"))
}

pub(crate) fn decode_cursor(text: &str) -> ServiceResult<(i64, Uuid)> {
    B64.decode(text.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            let rest = s.strip_prefix("t:")?;
            let (at, id) = rest.split_once(':')?;
            Some((at.parse().ok()?, Uuid::parse_str(id).ok()?))
        })
        .ok_or_else(|| {
            ServiceError::invalid_query("cursor", "invalid_cursor", "The cursor is invalid.", "分页游标无效。")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_and_clock() {
        assert_eq!(p95(&mut []), 0);
        let mut v: Vec<i64> = (1..=100).collect();
        assert_eq!(p95(&mut v), 95);
        let clock = Clock::new(&WorkingHours::default()).unwrap_or_else(|| panic!("clock"));
        // 2026-01-05 is a Monday. 02:00 UTC is 10:00 in Shanghai (working), 12:00 UTC is 20:00.
        let monday_10 = 1_767_578_400_000_000;
        assert!(!clock.off_hours(monday_10));
        assert!(clock.off_hours(monday_10 + 10 * 3_600_000_000));
        // Saturday 10:00 local.
        assert!(clock.off_hours(monday_10 + 5 * 24 * 3_600_000_000));
        assert_eq!(parse_clock("09:30"), Some(570));
        assert_eq!(parse_clock("25:00"), None);
    }

    #[test]
    fn defaults_validate() {
        for m in METRICS {
            let rule = AlertRule::default_for(m).unwrap_or_else(|| panic!("default {m}"));
            assert!(rule.validate().is_ok(), "{m}");
        }
    }
}
