//! Accounts and sessions (minimal; roles, MFA and lockout come with the access work).
//! Passwords are Argon2id PHC strings hashed on a bounded blocking pool; session tokens are 256
//! random bits handed to the client once and stored only as their SHA-256.

use crate::error::{ServiceError, ServiceResult};
use crate::{RequestContext, Service};
use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use custodian_core::{ErrorCode, FieldError};
use custodian_crypto::{random_bytes, sha256_hex};
use custodian_store::{SessionRow, UserRow, now_micros};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

/// Built-in roles (PRODUCT.md S3).
pub const ROLES: &[&str] = &["sales_rep", "sales_manager", "data_steward", "auditor", "admin"];

/// Prefix of session tokens, so that leaked tokens are recognisable by secret scanners.
const TOKEN_PREFIX: &str = "cst_";

/// Minimum password length.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub user_id: Uuid,
    pub username: String,
    pub role: String,
    pub team_id: Option<Uuid>,
    pub department_id: Option<Uuid>,
    /// SHA-256 of the session token used.
    pub session_hash: String,
    /// A second-factor step-up happened within the last five minutes (MFA comes with the
    /// access work; until then this is always false).
    pub stepped_up: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoginResult {
    pub token: String,
    pub expires_at: String,
}

/// A fixed Argon2id hash verified when the username does not exist, so that the response time
/// does not tell whether an account exists.
const DUMMY_HASH_PASSWORD: &str = "custodian-dummy-password-for-timing";

impl Service {
    async fn hash_password(&self, password: &str) -> ServiceResult<String> {
        let _permit = self.hashing.acquire().await.map_err(|_| ServiceError::new(ErrorCode::Unavailable))?;
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || {
            let salt = random_bytes::<16>().map_err(|_| ServiceError::new(ErrorCode::Internal))?;
            PasswordHasher::<argon2::password_hash::phc::PasswordHash>::hash_password_with_salt(
                &Argon2::default(),
                password.as_bytes(),
                &salt,
            )
            .map(|h| h.to_string())
            .map_err(|_| ServiceError::new(ErrorCode::Internal))
        })
        .await
        .map_err(|_| ServiceError::new(ErrorCode::Internal))?
    }

    async fn verify_password(&self, password: &str, phc: Option<String>) -> ServiceResult<bool> {
        let _permit = self.hashing.acquire().await.map_err(|_| ServiceError::new(ErrorCode::Unavailable))?;
        let password = password.to_owned();
        let dummy = self.dummy_hash().await?;
        tokio::task::spawn_blocking(move || {
            let (phc, real) = match phc {
                Some(p) => (p, true),
                None => (dummy, false),
            };
            let ok =
                PasswordVerifier::<str>::verify_password(&Argon2::default(), password.as_bytes(), phc.as_str()).is_ok();
            Ok(ok && real)
        })
        .await
        .map_err(|_| ServiceError::new(ErrorCode::Internal))?
    }

    async fn dummy_hash(&self) -> ServiceResult<String> {
        static DUMMY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
        DUMMY
            .get_or_try_init(|| async {
                PasswordHasher::<argon2::password_hash::phc::PasswordHash>::hash_password_with_salt(
                    &Argon2::default(),
                    DUMMY_HASH_PASSWORD.as_bytes(),
                    b"custodian-dummy!",
                )
                .map(|h| h.to_string())
                .map_err(|_| ServiceError::new(ErrorCode::Internal))
            })
            .await
            .cloned()
    }

    /// Checks a new password against the policy (length now; strength with the access work).
    pub fn check_password_policy(password: &str) -> ServiceResult<()> {
        if password.chars().count() < MIN_PASSWORD_CHARS {
            return Err(ServiceError::validation(vec![FieldError::new(
                "password",
                "password_too_short",
                format!("Passwords need at least {MIN_PASSWORD_CHARS} characters."),
                format!("密码至少需要 {MIN_PASSWORD_CHARS} 个字符。"),
            )]));
        }
        if password.len() > 1_024 {
            return Err(ServiceError::validation(vec![FieldError::new(
                "password",
                "password_too_long",
                "Passwords are limited to 1024 bytes.",
                "密码最长 1024 字节。",
            )]));
        }
        Ok(())
    }

    /// Creates a user (CLI `user create`, first-start bootstrap, admin API).
    pub async fn create_user(
        &self,
        ctx: &RequestContext,
        username: &str,
        password: &str,
        role: &str,
        team_id: Option<Uuid>,
        department_id: Option<Uuid>,
    ) -> ServiceResult<UserRow> {
        self.require_admin(ctx)?;
        let username = username.trim();
        let mut errors = Vec::new();
        if username.is_empty()
            || username.chars().count() > 64
            || !username.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'))
        {
            errors.push(FieldError::new(
                "username",
                "invalid_username",
                "Usernames are 1-64 letters, digits, _ - . or @.",
                "用户名须为 1-64 个字母、数字或 _ - . @。",
            ));
        }
        if !ROLES.contains(&role) {
            errors.push(FieldError::new(
                "role",
                "unknown_role",
                format!("Role must be one of {}.", ROLES.join(", ")),
                "角色不存在。",
            ));
        }
        if let Err(e) = Self::check_password_policy(password) {
            errors.extend(e.details);
        }
        if !errors.is_empty() {
            return Err(ServiceError::validation(errors));
        }
        let user = UserRow {
            id: Uuid::now_v7(),
            username: username.to_owned(),
            display_name: username.to_owned(),
            password_hash: self.hash_password(password).await?,
            role: role.to_owned(),
            department_id,
            team_id,
            status: "active".into(),
            created_at: now_micros(),
        };
        let mut audit = self.audit_draft(ctx, "user.create");
        audit.details = json!({ "user_id": user.id, "username": user.username, "role": user.role });
        self.store.create_user(user.clone(), audit).await.map_err(|e| match e {
            custodian_store::StoreError::AlreadyExists(_) => ServiceError {
                details: vec![FieldError::new("username", "taken", "This username is taken.", "该用户名已被使用。")],
                ..ServiceError::new(ErrorCode::Conflict)
            },
            other => other.into(),
        })?;
        self.invalidate_org();
        Ok(user)
    }

    /// On an empty store, creates `admin` with the given password, or a random one that is
    /// returned so the caller can print it once.
    pub async fn ensure_admin(&self, password: Option<String>) -> ServiceResult<Option<String>> {
        if self.store.count_users().await? > 0 {
            return Ok(None);
        }
        let (password, generated) = match password {
            Some(p) => (p, false),
            None => (B64.encode(random_bytes::<18>().map_err(|_| ServiceError::new(ErrorCode::Internal))?), true),
        };
        match self.create_user(&RequestContext::cli(), "admin", &password, "admin", None, None).await {
            Ok(_) => Ok(generated.then_some(password)),
            // Another server created it at the same moment.
            Err(e) if e.code == ErrorCode::Conflict => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn login(&self, ctx: &RequestContext, username: &str, password: &str) -> ServiceResult<LoginResult> {
        let now = std::time::Instant::now();
        if let Some(wait) = self.throttle.check(username, ctx.ip.as_deref(), now) {
            let mut audit = self.audit_draft(ctx, "auth.login_throttled");
            audit.details =
                json!({ "username_hash": sha256_hex(username.as_bytes()), "retry_after_secs": wait.as_secs().max(1) });
            self.store.append_audit(vec![audit]).await?;
            return Err(ServiceError::new(ErrorCode::Throttled)
                .with_extra(json!({ "retry_after_secs": wait.as_secs().max(1) })));
        }
        let user = if username.len() <= 256 && !username.contains('\0') {
            self.store.get_user_by_username(username.trim()).await?
        } else {
            None
        };
        let ok = self.verify_password(password, user.as_ref().map(|u| u.password_hash.clone())).await?;
        let user = match user {
            Some(u) if ok && u.status == "active" => u,
            other => {
                self.throttle.record_failure(username, ctx.ip.as_deref(), now);
                let mut audit = self.audit_draft(ctx, "auth.login_failed");
                audit.actor_id = other.as_ref().map(|u| u.id);
                audit.details = json!({ "username_hash": sha256_hex(username.as_bytes()) });
                self.store.append_audit(vec![audit]).await?;
                return Err(ServiceError::new(ErrorCode::InvalidCredentials));
            }
        };
        self.throttle.record_success(username);
        let token = format!(
            "{TOKEN_PREFIX}{}",
            B64.encode(random_bytes::<32>().map_err(|_| ServiceError::new(ErrorCode::Internal))?)
        );
        let now = now_micros();
        let expires_at = now + self.config.session_absolute_secs * 1_000_000;
        let session = SessionRow {
            token_hash: sha256_hex(token.as_bytes()),
            user_id: user.id,
            created_at: now,
            last_seen_at: now,
            expires_at,
            ip: ctx.ip.clone(),
            user_agent: ctx.user_agent.clone(),
        };
        let mut audit = self.audit_draft(ctx, "auth.login");
        audit.actor_id = Some(user.id);
        self.store.create_session(session, audit).await?;
        Ok(LoginResult { token, expires_at: crate::micros_to_rfc3339(expires_at) })
    }

    /// Resolves a bearer token to the caller. Expired, unknown and disabled all answer
    /// `unauthenticated` without saying which.
    pub async fn authenticate(&self, token: &str) -> ServiceResult<Actor> {
        let unauthenticated = || ServiceError::new(ErrorCode::Unauthenticated);
        if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
            return Err(unauthenticated());
        }
        let hash = sha256_hex(token.as_bytes());
        let session = self.store.get_session(&hash).await?.ok_or_else(unauthenticated)?;
        let now = now_micros();
        let idle_limit = session.last_seen_at + self.config.session_idle_secs * 1_000_000;
        if now >= session.expires_at || now >= idle_limit {
            return Err(unauthenticated());
        }
        let user = self.store.get_user(session.user_id).await?.ok_or_else(unauthenticated)?;
        if user.status != "active" {
            return Err(unauthenticated());
        }
        // Record activity at most once a minute so that reads stay reads.
        if now - session.last_seen_at > 60 * 1_000_000 {
            self.store.touch_session(&hash, now).await?;
        }
        Ok(Actor {
            user_id: user.id,
            username: user.username,
            role: user.role,
            team_id: user.team_id,
            department_id: user.department_id,
            session_hash: hash,
            stepped_up: false,
        })
    }

    pub async fn logout(&self, ctx: &RequestContext) -> ServiceResult<()> {
        let actor = ctx.actor.as_ref().ok_or_else(|| ServiceError::new(ErrorCode::Unauthenticated))?;
        let audit = self.audit_draft(ctx, "auth.logout");
        self.store.delete_session(&actor.session_hash, audit).await?;
        Ok(())
    }
}
