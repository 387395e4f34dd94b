//! TOTP second factor and step-up (PRODUCT.md S2).
//!
//! - Enrolment: `start_mfa_enrolment` makes a secret (stored encrypted with the keyring, bound to
//!   the user's id) and returns it with its otpauth:// URI and QR code; `confirm_mfa_enrolment`
//!   activates it with a first valid code and hands out ten single-use recovery codes, shown
//!   once and stored only as hashes.
//! - Login: a user with a factor gets a short-lived, single-use challenge (stored hashed) instead
//!   of a session; `login_mfa` trades challenge + code for the session.
//! - Replay: the store accepts a TOTP time step only when it is later than the user's last
//!   accepted one (a conditional update in the database, so it holds across servers).
//! - Step-up: a fresh code opens a window on the session row; sensitive operations call
//!   `require_step_up` and answer 428 `step_up_required` without it.
//! - Admin, data steward and auditor must enrol before they can use anything else.
//!
//! Failed codes count toward the login throttle of the account and client address. Every
//! outcome is an audit event.

use crate::auth::LoginResult;
use crate::error::{ServiceError, ServiceResult};
use crate::{RequestContext, Service};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use custodian_core::ErrorCode;
use custodian_crypto::{random_bytes, sha256_hex, totp};
use custodian_store::{AuditDraft, MfaChallengeRow, MfaEffect, MfaFactor, StoreError, UserMfaRow, UserRow};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

/// Roles that cannot use the API before they have enrolled a second factor.
pub const MFA_REQUIRED_ROLES: &[&str] = &["admin", "data_steward", "auditor"];
/// Recovery codes handed out at enrolment.
pub const RECOVERY_CODE_COUNT: usize = 10;
/// Default length of the step-up window.
pub const STEP_UP_SECS: i64 = 5 * 60;
/// Prefix of login challenges.
const CHALLENGE_PREFIX: &str = "mfc_";
/// Where the encrypted TOTP secret lives, as associated data of its envelope.
const SECRET_OBJECT: &str = "user_mfa";
const SECRET_FIELD: &str = "totp_secret";

/// A started enrolment: what an authenticator app needs. Shown once.
#[derive(Debug, Clone, Serialize)]
pub struct MfaEnrolment {
    /// Base32 secret, for typing into an app by hand.
    pub secret: String,
    pub otpauth_uri: String,
    /// The otpauth URI as a QR code (a standalone SVG document).
    pub qr_svg: String,
}

/// A login that passed the password and waits for the second factor.
#[derive(Debug, Clone, Serialize)]
pub struct MfaChallengeView {
    pub mfa_required: bool,
    pub challenge: String,
    pub expires_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepUpView {
    pub step_up_until: String,
}

/// The caller's second-factor state (for `GET /me`).
#[derive(Debug, Clone, Serialize)]
pub struct MfaStatus {
    pub mfa_enabled: bool,
    pub mfa_required: bool,
    pub mfa_enrollment_required: bool,
    pub recovery_codes_left: i64,
    pub stepped_up: bool,
    pub step_up_until: Option<String>,
}

/// Sessions whose user was seen with an enabled factor. A factor only goes away through
/// `reset_mfa`, which ends every session of the user in the same transaction, so a session in
/// this set never needs the lookup again (a session created after a reset has a new hash).
#[derive(Debug, Default)]
pub(crate) struct EnrolledSessions(std::sync::Mutex<std::collections::HashSet<String>>);

/// Bound on remembered sessions; the set is simply emptied when it is full.
const MAX_REMEMBERED_SESSIONS: usize = 100_000;

/// A code as presented: a TOTP code that matched a time step, or a recovery code.
enum Presented {
    Totp { step: i64 },
    Recovery { hash: String },
}

impl Presented {
    fn kind(&self) -> &'static str {
        match self {
            Presented::Totp { .. } => "totp",
            Presented::Recovery { .. } => "recovery_code",
        }
    }
}

/// Recovery codes: 80 random bits as 16 base32 letters in groups of four.
fn new_recovery_code() -> ServiceResult<String> {
    let bytes = random_bytes::<10>().map_err(|_| ServiceError::new(ErrorCode::Internal))?;
    let text = totp::secret_to_base32(&bytes).to_ascii_lowercase();
    let groups: Vec<String> = text.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
    Ok(groups.join("-"))
}

/// A recovery code as typed (any case, with or without dashes and spaces), or `None` when it
/// cannot be one.
fn normalise_recovery_code(code: &str) -> Option<String> {
    let text: String = code.chars().filter(|c| !matches!(c, '-' | ' ')).collect::<String>().to_ascii_lowercase();
    (text.len() == 16 && text.bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))).then_some(text)
}

fn recovery_code_hash(user_id: Uuid, normalised: &str) -> String {
    sha256_hex(format!("custodian-recovery:{user_id}:{normalised}").as_bytes())
}

fn invalid_code() -> ServiceError {
    ServiceError::new(ErrorCode::InvalidMfaCode)
}

impl Service {
    fn mfa_secret(&self, row: &UserMfaRow) -> ServiceResult<Vec<u8>> {
        let b32 = self
            .keyring
            .decrypt_field(SECRET_OBJECT, SECRET_FIELD, &row.user_id.to_string(), &row.secret)
            .map_err(|e| {
                tracing::error!(user_id = %row.user_id, error = %e, "a TOTP secret could not be decrypted");
                ServiceError::new(ErrorCode::Internal)
            })?;
        totp::secret_from_base32(&b32).ok_or_else(|| ServiceError::new(ErrorCode::Internal))
    }

    /// Turns the code a user typed into what it is, or `None` when it matches nothing. A TOTP
    /// code of an already used step is reported separately, for the audit trail.
    fn parse_code(&self, row: &UserMfaRow, code: &str) -> ServiceResult<Result<Presented, &'static str>> {
        let code = code.trim();
        if code.len() == usize::from(totp::DIGITS) && code.bytes().all(|b| b.is_ascii_digit()) {
            let secret = self.mfa_secret(row)?;
            return Ok(match totp::verify(&secret, code, self.config.clock.now_secs()) {
                Some(step) if step <= row.last_used_step => Err("replayed"),
                Some(step) => Ok(Presented::Totp { step }),
                None => Err("wrong_code"),
            });
        }
        Ok(match normalise_recovery_code(code) {
            Some(n) => Ok(Presented::Recovery { hash: recovery_code_hash(row.user_id, &n) }),
            None => Err("wrong_code"),
        })
    }

    fn factor_of(&self, presented: &Presented) -> MfaFactor {
        match presented {
            Presented::Totp { step } => MfaFactor::Totp { step: *step },
            Presented::Recovery { hash } => {
                MfaFactor::RecoveryCode { code_hash: hash.clone(), now: self.config.clock.now_micros() }
            }
        }
    }

    /// Refuses while the account or address is throttled (429, no code is checked).
    async fn check_code_throttle(&self, ctx: &RequestContext, username: &str) -> ServiceResult<()> {
        if let Some(wait) = self.login_wait(username, ctx.ip.as_deref()).await? {
            let mut audit = self.audit_draft(ctx, "auth.mfa_throttled");
            audit.details = json!({ "retry_after_secs": wait.as_secs().max(1) });
            self.store.append_audit(vec![audit]).await?;
            return Err(ServiceError::new(ErrorCode::Throttled)
                .with_extra(json!({ "retry_after_secs": wait.as_secs().max(1) })));
        }
        Ok(())
    }

    /// Records a refused code: throttle counter, audit event (`auth.mfa_replay_refused` for a
    /// code whose time step was already used, else `action`), 401 `invalid_mfa_code`.
    async fn refuse_code(
        &self,
        ctx: &RequestContext,
        user: &UserRow,
        action: &str,
        reason: &str,
        factor: Option<&str>,
    ) -> ServiceError {
        if let Err(e) = self.record_login_failure(&user.username, ctx.ip.as_deref()).await {
            return e;
        }
        let mut audit = self.audit_draft(ctx, if reason == "replayed" { "auth.mfa_replay_refused" } else { action });
        audit.actor_id = Some(user.id);
        audit.details = json!({ "user_id": user.id, "reason": reason, "factor": factor, "during": action });
        if let Err(e) = self.store.append_audit(vec![audit]).await {
            return e.into();
        }
        invalid_code()
    }

    fn caller(&self, ctx: &RequestContext) -> ServiceResult<crate::Actor> {
        ctx.actor.clone().ok_or_else(|| ServiceError::new(ErrorCode::Unauthenticated))
    }

    async fn caller_user(&self, ctx: &RequestContext) -> ServiceResult<UserRow> {
        let actor = self.caller(ctx)?;
        self.store.get_user(actor.user_id).await?.ok_or_else(|| ServiceError::new(ErrorCode::Unauthenticated))
    }

    /// Whether the user of a session has an enabled factor (remembered per session).
    pub(crate) async fn session_user_enrolled(&self, session_hash: &str, user_id: Uuid) -> ServiceResult<bool> {
        let known = |s: &Self| s.mfa_sessions.0.lock().map(|set| set.contains(session_hash)).unwrap_or(false);
        if known(self) {
            return Ok(true);
        }
        let enabled = self.store.get_user_mfa(user_id).await?.is_some_and(|m| m.enabled);
        if enabled && let Ok(mut set) = self.mfa_sessions.0.lock() {
            if set.len() >= MAX_REMEMBERED_SESSIONS {
                set.clear();
            }
            set.insert(session_hash.to_owned());
        }
        Ok(enabled)
    }

    // ---- enrolment -----------------------------------------------------------------------

    /// Starts (or restarts) TOTP enrolment for the caller. Refused with 409 when a factor is
    /// already active (an admin resets it), and for personal API tokens (enrol from a login).
    pub async fn start_mfa_enrolment(&self, ctx: &RequestContext) -> ServiceResult<MfaEnrolment> {
        let actor = self.caller(ctx)?;
        if actor.api_token {
            return Err(ServiceError::with_message(ErrorCode::Forbidden, "Enrol from a login session."));
        }
        if self.store.get_user_mfa(actor.user_id).await?.is_some_and(|m| m.enabled) {
            return Err(ServiceError::with_message(
                ErrorCode::Conflict,
                "Two-factor authentication is already set up; an admin can reset it.",
            ));
        }
        let secret = totp::generate_secret().map_err(|_| ServiceError::new(ErrorCode::Internal))?;
        let b32 = totp::secret_to_base32(&secret);
        let envelope = self
            .keyring
            .encrypt_field(SECRET_OBJECT, SECRET_FIELD, &actor.user_id.to_string(), &b32)
            .map_err(|_| ServiceError::new(ErrorCode::Internal))?;
        let otpauth_uri =
            totp::otpauth_uri(&secret, &actor.username).map_err(|_| ServiceError::new(ErrorCode::Internal))?;
        let qr_svg = totp::qr_svg(&otpauth_uri).map_err(|_| ServiceError::new(ErrorCode::Internal))?;
        let row = UserMfaRow {
            user_id: actor.user_id,
            secret: envelope,
            enabled: false,
            last_used_step: 0,
            created_at: self.config.clock.now_micros(),
            confirmed_at: None,
            recovery_codes_left: 0,
        };
        let mut audit = self.audit_draft(ctx, "mfa.enroll_start");
        audit.details = json!({ "user_id": actor.user_id });
        self.store.start_mfa_enrolment(row, audit).await.map_err(|e| match e {
            StoreError::AlreadyExists(_) => {
                ServiceError::with_message(ErrorCode::Conflict, "Two-factor authentication is already set up.")
            }
            other => other.into(),
        })?;
        Ok(MfaEnrolment { secret: b32, otpauth_uri, qr_svg })
    }

    /// Confirms the caller's pending enrolment with a valid code and returns the recovery
    /// codes (shown once; only their hashes are stored).
    pub async fn confirm_mfa_enrolment(&self, ctx: &RequestContext, code: &str) -> ServiceResult<Vec<String>> {
        let user = self.caller_user(ctx).await?;
        let row = self.store.get_user_mfa(user.id).await?.filter(|m| !m.enabled).ok_or_else(|| {
            ServiceError::with_message(ErrorCode::Conflict, "There is no enrolment to confirm; start one first.")
        })?;
        self.check_code_throttle(ctx, &user.username).await?;
        let code = code.trim();
        // Only a TOTP code proves the app has the secret (there are no recovery codes yet).
        let step = if code.len() == usize::from(totp::DIGITS) {
            let secret = self.mfa_secret(&row)?;
            totp::verify(&secret, code, self.config.clock.now_secs())
        } else {
            None
        };
        let Some(step) = step else {
            return Err(self.refuse_code(ctx, &user, "mfa.enroll_failed", "wrong_code", Some("totp")).await);
        };
        let mut codes = Vec::with_capacity(RECOVERY_CODE_COUNT);
        for _ in 0..RECOVERY_CODE_COUNT {
            codes.push(new_recovery_code()?);
        }
        let hashes = codes.iter().map(|c| recovery_code_hash(user.id, &c.replace('-', ""))).collect();
        let mut audit = self.audit_draft(ctx, "mfa.enroll_confirm");
        audit.details = json!({ "user_id": user.id, "recovery_codes": RECOVERY_CODE_COUNT });
        let now = self.config.clock.now_micros();
        if !self.store.confirm_mfa_enrolment(user.id, step, hashes, now, audit).await? {
            return Err(self.refuse_code(ctx, &user, "mfa.enroll_failed", "replayed", Some("totp")).await);
        }
        self.record_login_success(&user.username).await?;
        Ok(codes)
    }

    // ---- login ---------------------------------------------------------------------------

    pub(crate) async fn create_login_challenge(
        &self,
        ctx: &RequestContext,
        user: &UserRow,
    ) -> ServiceResult<MfaChallengeView> {
        let challenge = format!(
            "{CHALLENGE_PREFIX}{}",
            B64.encode(random_bytes::<32>().map_err(|_| ServiceError::new(ErrorCode::Internal))?)
        );
        let now = self.config.clock.now_micros();
        let expires_at = now + self.config.mfa_challenge_secs * 1_000_000;
        let row = MfaChallengeRow {
            challenge_hash: sha256_hex(challenge.as_bytes()),
            user_id: user.id,
            created_at: now,
            expires_at,
        };
        let mut audit = self.audit_draft(ctx, "auth.mfa_challenge");
        audit.actor_id = Some(user.id);
        self.store.create_mfa_challenge(row, audit).await?;
        Ok(MfaChallengeView { mfa_required: true, challenge, expires_at: crate::micros_to_rfc3339(expires_at) })
    }

    /// Completes a login with the challenge from `login` and a TOTP or recovery code. The
    /// challenge is single-use; a wrong code leaves it usable until it expires, but counts
    /// toward the throttle.
    pub async fn login_mfa(&self, ctx: &RequestContext, challenge: &str, code: &str) -> ServiceResult<LoginResult> {
        let invalid_challenge = || ServiceError::new(ErrorCode::MfaChallengeInvalid);
        if !challenge.starts_with(CHALLENGE_PREFIX) || challenge.len() > 128 {
            return Err(invalid_challenge());
        }
        let challenge_hash = sha256_hex(challenge.as_bytes());
        let now = self.config.clock.now_micros();
        let row = self
            .store
            .get_mfa_challenge(&challenge_hash)
            .await?
            .filter(|c| c.expires_at > now)
            .ok_or_else(invalid_challenge)?;
        let user =
            self.store.get_user(row.user_id).await?.filter(|u| u.status == "active").ok_or_else(invalid_challenge)?;
        let mfa = self.store.get_user_mfa(user.id).await?.filter(|m| m.enabled).ok_or_else(invalid_challenge)?;
        self.check_code_throttle(ctx, &user.username).await?;
        let presented = match self.parse_code(&mfa, code)? {
            Ok(p) => p,
            Err(reason) => return Err(self.refuse_code(ctx, &user, "auth.mfa_failed", reason, None).await),
        };
        let (result, session) = self.new_session(ctx, user.id)?;
        let mut events = Vec::new();
        let mut success = self.audit_draft(ctx, "auth.mfa_success");
        success.actor_id = Some(user.id);
        success.details = json!({ "factor": presented.kind(), "during": "login" });
        events.push(success);
        if let Presented::Recovery { .. } = presented {
            events.push(self.recovery_used_event(ctx, &user, mfa.recovery_codes_left - 1));
        }
        events.push(self.login_event(ctx, &user, &session));
        let effect = MfaEffect::Login { challenge_hash, now, session };
        match self.store.use_mfa_factor(user.id, self.factor_of(&presented), effect, events).await {
            Ok(true) => {}
            Ok(false) => {
                let reason = if matches!(presented, Presented::Totp { .. }) { "replayed" } else { "wrong_code" };
                return Err(self.refuse_code(ctx, &user, "auth.mfa_failed", reason, Some(presented.kind())).await);
            }
            // Consumed by a concurrent login, or expired meanwhile.
            Err(StoreError::NotFound) => return Err(invalid_challenge()),
            Err(e) => return Err(e.into()),
        }
        self.record_login_success(&user.username).await?;
        Ok(result)
    }

    fn recovery_used_event(&self, ctx: &RequestContext, user: &UserRow, left: i64) -> AuditDraft {
        let mut audit = self.audit_draft(ctx, "mfa.recovery_code_used");
        audit.actor_id = Some(user.id);
        audit.details = json!({ "user_id": user.id, "recovery_codes_left": left.max(0) });
        audit
    }

    // ---- step-up -------------------------------------------------------------------------

    /// Opens the step-up window on the caller's session with a fresh TOTP (or recovery) code.
    pub async fn step_up(&self, ctx: &RequestContext, code: &str) -> ServiceResult<StepUpView> {
        let actor = self.caller(ctx)?;
        let user = self.caller_user(ctx).await?;
        let Some(mfa) = self.store.get_user_mfa(user.id).await?.filter(|m| m.enabled) else {
            let mut audit = self.audit_draft(ctx, "auth.step_up_failed");
            audit.details = json!({ "reason": "not_enrolled" });
            self.store.append_audit(vec![audit]).await?;
            return Err(ServiceError::with_message(
                ErrorCode::Conflict,
                "Set up two-factor authentication before stepping up.",
            ));
        };
        self.check_code_throttle(ctx, &user.username).await?;
        let presented = match self.parse_code(&mfa, code)? {
            Ok(p) => p,
            Err(reason) => return Err(self.refuse_code(ctx, &user, "auth.step_up_failed", reason, None).await),
        };
        let until = self.config.clock.now_micros() + self.config.step_up_secs * 1_000_000;
        let mut events = Vec::new();
        let mut audit = self.audit_draft(ctx, "auth.step_up");
        audit.details = json!({ "factor": presented.kind(), "until": crate::micros_to_rfc3339(until) });
        events.push(audit);
        if let Presented::Recovery { .. } = presented {
            events.push(self.recovery_used_event(ctx, &user, mfa.recovery_codes_left - 1));
        }
        let effect = MfaEffect::StepUp { token_hash: actor.session_hash.clone(), until };
        match self.store.use_mfa_factor(user.id, self.factor_of(&presented), effect, events).await {
            // The cached session does not hold the new window yet.
            Ok(true) => self.drop_caches(),
            Ok(false) => {
                let reason = if matches!(presented, Presented::Totp { .. }) { "replayed" } else { "wrong_code" };
                return Err(self.refuse_code(ctx, &user, "auth.step_up_failed", reason, Some(presented.kind())).await);
            }
            // The session ended meanwhile.
            Err(StoreError::NotFound) => return Err(ServiceError::new(ErrorCode::Unauthenticated)),
            Err(e) => return Err(e.into()),
        }
        self.record_login_success(&user.username).await?;
        Ok(StepUpView { step_up_until: crate::micros_to_rfc3339(until) })
    }

    /// The guard of sensitive operations (PRODUCT.md S2): passes when the caller's session has
    /// an open step-up window, otherwise answers 428 `step_up_required` and records the refusal.
    /// Offline CLI work (no actor) runs with the operator's access to the machine and passes.
    /// Callers: reveal of restricted fields, role changes, suspension, offboarding, MFA reset;
    /// bulk delete, ownership transfer and export call it when they arrive.
    pub async fn require_step_up(&self, ctx: &RequestContext, operation: &str) -> ServiceResult<()> {
        match &ctx.actor {
            None => Ok(()),
            Some(actor) if actor.stepped_up => Ok(()),
            Some(_) => {
                let mut audit = self.audit_draft(ctx, "access.denied");
                audit.details = json!({ "operation": operation, "code": ErrorCode::StepUpRequired.as_str() });
                self.store.append_audit(vec![audit]).await?;
                Err(ServiceError::new(ErrorCode::StepUpRequired))
            }
        }
    }

    /// The gate for roles that must have MFA: refuses (403 `mfa_enrollment_required`, audited)
    /// a caller who has not enrolled yet. The HTTP layer applies it to every route except
    /// enrolment, "me" and logout.
    pub async fn require_mfa_enrolled(&self, ctx: &RequestContext) -> ServiceResult<()> {
        if !ctx.actor.as_ref().is_some_and(|a| a.mfa_enrollment_required) {
            return Ok(());
        }
        let mut audit = self.audit_draft(ctx, "access.denied");
        audit.details = json!({ "code": ErrorCode::MfaEnrollmentRequired.as_str() });
        self.store.append_audit(vec![audit]).await?;
        Err(ServiceError::new(ErrorCode::MfaEnrollmentRequired))
    }

    /// The caller's second-factor state.
    pub async fn mfa_status(&self, ctx: &RequestContext) -> ServiceResult<MfaStatus> {
        let actor = self.caller(ctx)?;
        let row = self.store.get_user_mfa(actor.user_id).await?;
        let enabled = row.as_ref().is_some_and(|m| m.enabled);
        Ok(MfaStatus {
            mfa_enabled: enabled,
            mfa_required: self.role_requires_mfa(&actor.role),
            mfa_enrollment_required: actor.mfa_enrollment_required,
            recovery_codes_left: row.filter(|m| m.enabled).map(|m| m.recovery_codes_left).unwrap_or(0),
            stepped_up: actor.stepped_up,
            step_up_until: actor.step_up_until.filter(|_| actor.stepped_up).map(crate::micros_to_rfc3339),
        })
    }

    // ---- administration ------------------------------------------------------------------

    /// Removes a user's second factor and recovery codes and ends all of the user's sessions
    /// (admin, with step-up; nobody resets their own). A user whose role requires MFA must
    /// enrol again at the next login. Returns whether a factor existed.
    pub async fn reset_user_mfa(&self, ctx: &RequestContext, user_id: Uuid) -> ServiceResult<bool> {
        self.admin_or_refuse(ctx, "mfa.reset").await?;
        if ctx.actor.as_ref().is_some_and(|a| a.user_id == user_id) {
            return Err(ServiceError::with_message(
                ErrorCode::Forbidden,
                "You cannot reset your own second factor; ask another admin.",
            ));
        }
        self.store.get_user(user_id).await?.ok_or_else(ServiceError::not_found)?;
        self.require_step_up(ctx, "mfa.reset").await?;
        let mut audit = self.audit_draft(ctx, "mfa.reset");
        audit.details = json!({ "user_id": user_id });
        let reset = self.store.reset_mfa(user_id, audit).await?;
        self.drop_caches();
        Ok(reset)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn recovery_codes_have_the_documented_shape_and_normalise() {
        let code = new_recovery_code().unwrap();
        assert_eq!(code.len(), 19, "{code}");
        assert_eq!(code.matches('-').count(), 3, "{code}");
        let n = normalise_recovery_code(&code).unwrap();
        assert_eq!(normalise_recovery_code(&code.to_uppercase().replace('-', " ")), Some(n.clone()));
        assert_eq!(n.len(), 16);
        assert_eq!(normalise_recovery_code("123456"), None);
        assert_eq!(normalise_recovery_code("abcd-efgh-ijkl-mno1"), None, "1 is not base32");
        let user = Uuid::now_v7();
        assert_ne!(recovery_code_hash(user, &n), recovery_code_hash(Uuid::now_v7(), &n), "hashes are per user");
    }
}
