//! MFA rows of the SQLite store: TOTP factors, recovery codes, login challenges and the step-up
//! window of sessions. Mutations run in the writer task (one savepoint each, like every other
//! job), so a consumed factor, its effect and its audit events commit or roll back together.

use crate::read_pool::ReadPool;
use crate::{ChainHead, OpOut, append_events, insert_session, map_sqlx, uuid_col};
use custodian_store::{AuditDraft, MfaChallengeRow, MfaEffect, MfaFactor, StoreError, StoreResult, UserMfaRow};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use uuid::Uuid;

/// MFA jobs for the writer task.
pub(crate) enum MfaOp {
    Start(UserMfaRow, AuditDraft),
    Confirm { user_id: Uuid, step: i64, recovery_code_hashes: Vec<String>, now: i64, audit: AuditDraft },
    Use { user_id: Uuid, factor: MfaFactor, effect: MfaEffect, audit: Vec<AuditDraft> },
    Reset(Uuid, AuditDraft),
    CreateChallenge(MfaChallengeRow, AuditDraft),
}

pub(crate) async fn apply(conn: &mut SqliteConnection, op: MfaOp, head: &mut ChainHead) -> StoreResult<OpOut> {
    match op {
        MfaOp::Start(row, audit) => {
            let r = sqlx::query(
                "INSERT INTO user_mfa (user_id, secret, enabled, last_used_step, created_at, confirmed_at) \
                 VALUES (?, ?, 0, ?, ?, NULL) \
                 ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret, created_at = excluded.created_at, \
                 confirmed_at = NULL WHERE user_mfa.enabled = 0",
            )
            .bind(row.user_id.to_string())
            .bind(&row.secret)
            .bind(row.last_used_step)
            .bind(row.created_at)
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?;
            if r.rows_affected() == 0 {
                return Err(StoreError::AlreadyExists("mfa".into()));
            }
            append_events(conn, head, &[audit]).await?;
            Ok(OpOut::Unit)
        }
        MfaOp::Confirm { user_id, step, recovery_code_hashes, now, audit } => {
            let id = user_id.to_string();
            let r = sqlx::query(
                "UPDATE user_mfa SET enabled = 1, confirmed_at = ?, last_used_step = ? \
                 WHERE user_id = ? AND enabled = 0 AND last_used_step < ?",
            )
            .bind(now)
            .bind(step)
            .bind(&id)
            .bind(step)
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?;
            if r.rows_affected() == 0 {
                return Ok(OpOut::Bool(false));
            }
            sqlx::query("DELETE FROM mfa_recovery_codes WHERE user_id = ?")
                .bind(&id)
                .execute(&mut *conn)
                .await
                .map_err(map_sqlx)?;
            for hash in &recovery_code_hashes {
                sqlx::query("INSERT INTO mfa_recovery_codes (user_id, code_hash, used_at) VALUES (?, ?, NULL)")
                    .bind(&id)
                    .bind(hash)
                    .execute(&mut *conn)
                    .await
                    .map_err(map_sqlx)?;
            }
            append_events(conn, head, &[audit]).await?;
            Ok(OpOut::Bool(true))
        }
        MfaOp::Use { user_id, factor, effect, audit } => {
            let id = user_id.to_string();
            let accepted = match &factor {
                MfaFactor::Totp { step } => sqlx::query(
                    "UPDATE user_mfa SET last_used_step = ? WHERE user_id = ? AND enabled = 1 AND last_used_step < ?",
                )
                .bind(step)
                .bind(&id)
                .bind(step)
                .execute(&mut *conn)
                .await
                .map_err(map_sqlx)?
                .rows_affected(),
                MfaFactor::RecoveryCode { code_hash, now } => sqlx::query(
                    "UPDATE mfa_recovery_codes SET used_at = ? WHERE user_id = ? AND code_hash = ? AND used_at IS NULL \
                     AND EXISTS (SELECT 1 FROM user_mfa m WHERE m.user_id = mfa_recovery_codes.user_id AND m.enabled = 1)",
                )
                .bind(now)
                .bind(&id)
                .bind(code_hash)
                .execute(&mut *conn)
                .await
                .map_err(map_sqlx)?
                .rows_affected(),
            };
            if accepted == 0 {
                return Ok(OpOut::Bool(false));
            }
            match effect {
                MfaEffect::Login { challenge_hash, now, session } => {
                    let r = sqlx::query(
                        "DELETE FROM mfa_challenges WHERE challenge_hash = ? AND user_id = ? AND expires_at > ?",
                    )
                    .bind(&challenge_hash)
                    .bind(&id)
                    .bind(now)
                    .execute(&mut *conn)
                    .await
                    .map_err(map_sqlx)?;
                    if r.rows_affected() == 0 || session.user_id != user_id {
                        return Err(StoreError::NotFound);
                    }
                    insert_session(conn, &session).await?;
                }
                MfaEffect::StepUp { token_hash, until } => {
                    let r = sqlx::query("UPDATE sessions SET step_up_until = ? WHERE token_hash = ? AND user_id = ?")
                        .bind(until)
                        .bind(&token_hash)
                        .bind(&id)
                        .execute(&mut *conn)
                        .await
                        .map_err(map_sqlx)?;
                    if r.rows_affected() == 0 {
                        return Err(StoreError::NotFound);
                    }
                }
            }
            append_events(conn, head, &audit).await?;
            Ok(OpOut::Bool(true))
        }
        MfaOp::Reset(user_id, audit) => {
            let id = user_id.to_string();
            let r = sqlx::query("DELETE FROM user_mfa WHERE user_id = ?")
                .bind(&id)
                .execute(&mut *conn)
                .await
                .map_err(map_sqlx)?;
            for sql in [
                "DELETE FROM mfa_recovery_codes WHERE user_id = ?",
                "DELETE FROM mfa_challenges WHERE user_id = ?",
                "DELETE FROM sessions WHERE user_id = ?",
            ] {
                sqlx::query(sql).bind(&id).execute(&mut *conn).await.map_err(map_sqlx)?;
            }
            append_events(conn, head, &[audit]).await?;
            Ok(OpOut::Bool(r.rows_affected() > 0))
        }
        MfaOp::CreateChallenge(c, audit) => {
            sqlx::query("DELETE FROM mfa_challenges WHERE expires_at <= ?")
                .bind(c.created_at)
                .execute(&mut *conn)
                .await
                .map_err(map_sqlx)?;
            sqlx::query(
                "INSERT INTO mfa_challenges (challenge_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
            )
            .bind(&c.challenge_hash)
            .bind(c.user_id.to_string())
            .bind(c.created_at)
            .bind(c.expires_at)
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?;
            append_events(conn, head, &[audit]).await?;
            Ok(OpOut::Unit)
        }
    }
}

fn mfa_from_row(row: &SqliteRow) -> StoreResult<UserMfaRow> {
    let enabled: i64 = row.try_get("enabled").map_err(map_sqlx)?;
    Ok(UserMfaRow {
        user_id: uuid_col(row, "user_id")?,
        secret: row.try_get("secret").map_err(map_sqlx)?,
        enabled: enabled != 0,
        last_used_step: row.try_get("last_used_step").map_err(map_sqlx)?,
        created_at: row.try_get("created_at").map_err(map_sqlx)?,
        confirmed_at: row.try_get("confirmed_at").map_err(map_sqlx)?,
        recovery_codes_left: row.try_get("codes_left").map_err(map_sqlx)?,
    })
}

pub(crate) async fn get_user_mfa(pool: &ReadPool, user_id: Uuid) -> StoreResult<Option<UserMfaRow>> {
    let row = sqlx::query(
        "SELECT m.*, (SELECT COUNT(*) FROM mfa_recovery_codes c WHERE c.user_id = m.user_id AND c.used_at IS NULL) \
         AS codes_left FROM user_mfa m WHERE m.user_id = ?",
    )
    .bind(user_id.to_string())
    .fetch_optional(&mut *pool.get().await?)
    .await
    .map_err(map_sqlx)?;
    row.as_ref().map(mfa_from_row).transpose()
}

pub(crate) async fn get_mfa_challenge(pool: &ReadPool, hash: &str) -> StoreResult<Option<MfaChallengeRow>> {
    let row = sqlx::query("SELECT * FROM mfa_challenges WHERE challenge_hash = ?")
        .bind(hash)
        .fetch_optional(&mut *pool.get().await?)
        .await
        .map_err(map_sqlx)?;
    row.map(|row| {
        Ok(MfaChallengeRow {
            challenge_hash: row.try_get("challenge_hash").map_err(map_sqlx)?,
            user_id: uuid_col(&row, "user_id")?,
            created_at: row.try_get("created_at").map_err(map_sqlx)?,
            expires_at: row.try_get("expires_at").map_err(map_sqlx)?,
        })
    })
    .transpose()
}
