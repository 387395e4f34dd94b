//! MFA rows of the PostgreSQL store: TOTP factors, recovery codes, login challenges and the
//! step-up window of sessions. Each mutation is one transaction with its audit events; the
//! replay guard is a conditional `UPDATE … WHERE last_used_step < $step`, which row locking makes
//! decide exactly one winner when two servers see the same code at once.

use crate::{append_events, commit, insert_session, map_sqlx};
use custodian_store::{AuditDraft, MfaChallengeRow, MfaEffect, MfaFactor, StoreError, StoreResult, UserMfaRow};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

pub(crate) async fn get_user_mfa(pool: &PgPool, user_id: Uuid) -> StoreResult<Option<UserMfaRow>> {
    let row = sqlx::query(
        "SELECT m.*, (SELECT COUNT(*) FROM mfa_recovery_codes c WHERE c.user_id = m.user_id AND c.used_at IS NULL) \
         AS codes_left FROM user_mfa m WHERE m.user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(pool)
    .await
    .map_err(map_sqlx)?;
    row.as_ref().map(mfa_from_row).transpose()
}

fn mfa_from_row(row: &PgRow) -> StoreResult<UserMfaRow> {
    Ok(UserMfaRow {
        user_id: row.try_get("user_id").map_err(map_sqlx)?,
        secret: row.try_get("secret").map_err(map_sqlx)?,
        enabled: row.try_get("enabled").map_err(map_sqlx)?,
        last_used_step: row.try_get("last_used_step").map_err(map_sqlx)?,
        created_at: row.try_get("created_at").map_err(map_sqlx)?,
        confirmed_at: row.try_get("confirmed_at").map_err(map_sqlx)?,
        recovery_codes_left: row.try_get("codes_left").map_err(map_sqlx)?,
    })
}

pub(crate) async fn start_enrolment(pool: &PgPool, row: UserMfaRow, audit: AuditDraft) -> StoreResult<()> {
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    let r = sqlx::query(
        "INSERT INTO user_mfa (user_id, secret, enabled, last_used_step, created_at, confirmed_at) \
         VALUES ($1, $2, FALSE, $3, $4, NULL) \
         ON CONFLICT (user_id) DO UPDATE SET secret = EXCLUDED.secret, created_at = EXCLUDED.created_at, \
         confirmed_at = NULL WHERE user_mfa.enabled = FALSE",
    )
    .bind(row.user_id)
    .bind(&row.secret)
    .bind(row.last_used_step)
    .bind(row.created_at)
    .execute(&mut *tx)
    .await
    .map_err(map_sqlx)?;
    if r.rows_affected() == 0 {
        return Err(StoreError::AlreadyExists("mfa".into()));
    }
    append_events(&mut tx, &[audit]).await?;
    commit(tx).await
}

pub(crate) async fn confirm_enrolment(
    pool: &PgPool,
    user_id: Uuid,
    step: i64,
    recovery_code_hashes: Vec<String>,
    now: i64,
    audit: AuditDraft,
) -> StoreResult<bool> {
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    let r = sqlx::query(
        "UPDATE user_mfa SET enabled = TRUE, confirmed_at = $2, last_used_step = $3 \
         WHERE user_id = $1 AND enabled = FALSE AND last_used_step < $3",
    )
    .bind(user_id)
    .bind(now)
    .bind(step)
    .execute(&mut *tx)
    .await
    .map_err(map_sqlx)?;
    if r.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query("DELETE FROM mfa_recovery_codes WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
    sqlx::query("INSERT INTO mfa_recovery_codes (user_id, code_hash) SELECT $1, unnest($2::text[])")
        .bind(user_id)
        .bind(&recovery_code_hashes)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
    append_events(&mut tx, &[audit]).await?;
    commit(tx).await?;
    Ok(true)
}

pub(crate) async fn use_factor(
    pool: &PgPool,
    user_id: Uuid,
    factor: MfaFactor,
    effect: MfaEffect,
    audit: Vec<AuditDraft>,
) -> StoreResult<bool> {
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    let accepted = match &factor {
        MfaFactor::Totp { step } => sqlx::query(
            "UPDATE user_mfa SET last_used_step = $2 WHERE user_id = $1 AND enabled AND last_used_step < $2",
        )
        .bind(user_id)
        .bind(step)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?
        .rows_affected(),
        MfaFactor::RecoveryCode { code_hash, now } => sqlx::query(
            "UPDATE mfa_recovery_codes c SET used_at = $3 WHERE c.user_id = $1 AND c.code_hash = $2 \
             AND c.used_at IS NULL AND EXISTS (SELECT 1 FROM user_mfa m WHERE m.user_id = c.user_id AND m.enabled)",
        )
        .bind(user_id)
        .bind(code_hash)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?
        .rows_affected(),
    };
    if accepted == 0 {
        return Ok(false);
    }
    match effect {
        MfaEffect::Login { challenge_hash, now, session } => {
            let r = sqlx::query(
                "DELETE FROM mfa_challenges WHERE challenge_hash = $1 AND user_id = $2 AND expires_at > $3",
            )
            .bind(&challenge_hash)
            .bind(user_id)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
            if r.rows_affected() == 0 || session.user_id != user_id {
                return Err(StoreError::NotFound);
            }
            insert_session(&mut tx, &session).await?;
        }
        MfaEffect::StepUp { token_hash, until } => {
            let r = sqlx::query("UPDATE sessions SET step_up_until = $1 WHERE token_hash = $2 AND user_id = $3")
                .bind(until)
                .bind(&token_hash)
                .bind(user_id)
                .execute(&mut *tx)
                .await
                .map_err(map_sqlx)?;
            if r.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
        }
    }
    append_events(&mut tx, &audit).await?;
    commit(tx).await?;
    Ok(true)
}

pub(crate) async fn reset(pool: &PgPool, user_id: Uuid, audit: AuditDraft) -> StoreResult<bool> {
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    let r = sqlx::query("DELETE FROM user_mfa WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
    for sql in [
        "DELETE FROM mfa_recovery_codes WHERE user_id = $1",
        "DELETE FROM mfa_challenges WHERE user_id = $1",
        "DELETE FROM sessions WHERE user_id = $1",
    ] {
        sqlx::query(sql).bind(user_id).execute(&mut *tx).await.map_err(map_sqlx)?;
    }
    append_events(&mut tx, &[audit]).await?;
    commit(tx).await?;
    Ok(r.rows_affected() > 0)
}

pub(crate) async fn create_challenge(pool: &PgPool, c: MfaChallengeRow, audit: AuditDraft) -> StoreResult<()> {
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    sqlx::query("DELETE FROM mfa_challenges WHERE expires_at <= $1")
        .bind(c.created_at)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
    sqlx::query("INSERT INTO mfa_challenges (challenge_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(&c.challenge_hash)
        .bind(c.user_id)
        .bind(c.created_at)
        .bind(c.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
    append_events(&mut tx, &[audit]).await?;
    commit(tx).await
}

pub(crate) async fn get_challenge(pool: &PgPool, hash: &str) -> StoreResult<Option<MfaChallengeRow>> {
    let row = sqlx::query("SELECT * FROM mfa_challenges WHERE challenge_hash = $1")
        .bind(hash)
        .fetch_optional(pool)
        .await
        .map_err(map_sqlx)?;
    row.map(|row| {
        Ok(MfaChallengeRow {
            challenge_hash: row.try_get("challenge_hash").map_err(map_sqlx)?,
            user_id: row.try_get("user_id").map_err(map_sqlx)?,
            created_at: row.try_get("created_at").map_err(map_sqlx)?,
            expires_at: row.try_get("expires_at").map_err(map_sqlx)?,
        })
    })
    .transpose()
}
