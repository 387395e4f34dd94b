//! Accounts and sessions. Passwords are Argon2id PHC strings hashed on a bounded blocking pool
//! and must be long and not guessable (zxcvbn score ≥ 3 against the username and display name);
//! session tokens are 256 random bits handed to the client once and stored only as their
//! SHA-256. A user with a second factor gets a login challenge instead of a session (see `mfa`).

use crate::error::{ServiceError, ServiceResult};
use crate::{RequestContext, Service};
use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use custodian_core::{ErrorCode, FieldError};
use custodian_crypto::{random_bytes, sha256_hex};
use custodian_store::{AuditDraft, SessionRow, UserRow, now_micros};
use serde::Serialize;
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A user to create (see [`Service::add_user`]).
#[derive(Debug, Clone, Copy)]
pub struct NewUser<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub role: &'a str,
    pub team_id: Option<Uuid>,
    pub department_id: Option<Uuid>,
    /// Where the user's change notifications are mailed.
    pub email: Option<&'a str>,
}

/// A user's e-mail address, normalised, or the field error saying why it is not one.
pub(crate) fn user_email(raw: &str) -> Result<String, FieldError> {
    custodian_core::normalize::normalize_email(raw)
        .map_err(|e| FieldError::new("email", e.code, e.message_en, e.message_zh))
}

/// The id by which a session or token is shown (`GET /auth/sessions`) and named in audit
/// events: the first 12 hex digits of its hash, never the token itself.
pub(crate) fn public_session_id(token_hash: &str) -> String {
    token_hash.chars().take(12).collect()
}

/// Built-in roles (PRODUCT.md S3).
pub const ROLES: &[&str] = &["sales_rep", "sales_manager", "data_steward", "auditor", "admin"];

/// Prefix of session tokens, so that leaked tokens are recognisable by secret scanners.
const TOKEN_PREFIX: &str = "cst_";
/// Prefix of personal API tokens.
const API_TOKEN_PREFIX: &str = "cpt_";
/// Longest lifetime of a personal API token.
pub const MAX_API_TOKEN_DAYS: u32 = 365;

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
    /// A second-factor step-up on this session happened within the step-up window.
    pub stepped_up: bool,
    /// End of the session's step-up window (µs), if one was ever opened.
    pub step_up_until: Option<i64>,
    /// The role requires MFA and the user has not enrolled yet: only enrolment, "me" and logout
    /// are allowed.
    pub mfa_enrollment_required: bool,
    /// Authenticated with a read-only personal token: only safe methods are allowed.
    pub read_only: bool,
    /// Authenticated with a personal API token (not a login session).
    pub api_token: bool,
}

/// A newly created personal API token; the secret is shown once.
#[derive(Debug, Clone, Serialize)]
pub struct NewApiToken {
    pub token: String,
    pub id: String,
    pub name: String,
    pub scope: String,
    pub expires_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoginResult {
    pub token: String,
    pub expires_at: String,
    /// For browsers using the session cookie: send it as `X-CSRF-Token` with every unsafe
    /// request. Derived from the session with a keyed MAC, so it is never stored.
    pub csrf_token: String,
}

/// What a correct password leads to.
#[derive(Debug, Clone)]
pub enum LoginOutcome {
    /// No second factor: the session exists.
    Session(LoginResult),
    /// The user has a second factor: complete the login with `POST /auth/mfa`.
    MfaRequired(crate::MfaChallengeView),
}

/// The lowest zxcvbn score a new password may have (3: "safely unguessable", > 10^8 guesses).
pub const MIN_PASSWORD_SCORE: u8 = 3;
/// Characters of a password the strength estimator looks at (its cost grows with length; a
/// prefix this long that is strong makes the whole password strong).
const STRENGTH_CHECK_CHARS: usize = 128;

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

    /// Checks a new password against the policy: at least 12 characters, at most 1024 bytes, and
    /// not weak or common (zxcvbn score ≥ 3, with the user's own names counted as guessable).
    pub fn check_password_policy(password: &str, user_inputs: &[&str]) -> ServiceResult<()> {
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
        let checked: String = password.chars().take(STRENGTH_CHECK_CHARS).collect();
        let estimate = zxcvbn::zxcvbn(&checked, user_inputs);
        let score = u8::from(estimate.score());
        if score < MIN_PASSWORD_SCORE {
            let warning = estimate.feedback().and_then(|f| f.warning()).map(|w| w.to_string());
            let suggestions: Vec<String> = estimate
                .feedback()
                .map(|f| f.suggestions().iter().map(|s| s.to_string()).collect())
                .unwrap_or_default();
            let reason = warning.clone().unwrap_or_else(|| "This password is easy to guess.".to_owned());
            return Err(ServiceError::validation(vec![FieldError::new(
                "password",
                "password_weak",
                format!("The password is too weak: {reason} Use a longer phrase of unrelated words."),
                "密码过于简单或常见，请使用更长且不相关的词组。",
            )])
            .with_extra(json!({
                "password_strength": {
                    "score": score,
                    "min_score": MIN_PASSWORD_SCORE,
                    "warning": warning,
                    "suggestions": suggestions,
                }
            })));
        }
        Ok(())
    }

    /// Creates a user (CLI `user create`, first-start bootstrap, admin API) without an e-mail
    /// address.
    pub async fn create_user(
        &self,
        ctx: &RequestContext,
        username: &str,
        password: &str,
        role: &str,
        team_id: Option<Uuid>,
        department_id: Option<Uuid>,
    ) -> ServiceResult<UserRow> {
        self.add_user(ctx, NewUser { username, password, role, team_id, department_id, email: None }).await
    }

    /// Creates a user.
    pub async fn add_user(&self, ctx: &RequestContext, new: NewUser<'_>) -> ServiceResult<UserRow> {
        let NewUser { username, password, role, team_id, department_id, email } = new;
        self.admin_or_refuse(ctx, "user.create").await?;
        let username = username.trim();
        let mut errors = Vec::new();
        let email = match email.map(user_email).transpose() {
            Ok(email) => email,
            Err(e) => {
                errors.push(e);
                None
            }
        };
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
        if !self.role_exists(role).await? {
            errors.push(FieldError::new(
                "role",
                "unknown_role",
                format!("Role must be one of {} or a custom role.", ROLES.join(", ")),
                "角色不存在。",
            ));
        }
        let mut extra = None;
        if let Err(e) = Self::check_password_policy(password, &[username]) {
            errors.extend(e.details);
            extra = e.extra;
        }
        if !errors.is_empty() {
            let mut e = ServiceError::validation(errors);
            e.extra = extra;
            return Err(e);
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
            email,
        };
        let mut audit = self.audit_draft(ctx, "user.create");
        audit.details = json!({ "user_id": user.id, "username": user.username, "role": user.role,
            "email": user.email.is_some() });
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

    pub async fn login(&self, ctx: &RequestContext, username: &str, password: &str) -> ServiceResult<LoginOutcome> {
        // At most `login_concurrency` attempts at a time (FIFO): a flood waits here, idle.
        let _turn = self.logins.acquire().await.map_err(|_| ServiceError::new(ErrorCode::Unavailable))?;
        if let Some(wait) = self.login_wait(username, ctx.ip.as_deref()).await? {
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
                self.record_login_failure(username, ctx.ip.as_deref()).await?;
                let mut audit = self.audit_draft(ctx, "auth.login_failed");
                audit.actor_id = other.as_ref().map(|u| u.id);
                audit.details = json!({ "username_hash": sha256_hex(username.as_bytes()) });
                self.store.append_audit(vec![audit]).await?;
                return Err(ServiceError::new(ErrorCode::InvalidCredentials));
            }
        };
        // With a second factor the password alone opens nothing, and the account's failure
        // counter is cleared only when the second factor succeeds (so that a known password
        // does not buy unlimited code guesses).
        if self.store.get_user_mfa(user.id).await?.is_some_and(|m| m.enabled) {
            return Ok(LoginOutcome::MfaRequired(self.create_login_challenge(ctx, &user).await?));
        }
        self.record_login_success(username).await?;
        let (result, session) = self.new_session(ctx, user.id)?;
        let audit = self.login_event(ctx, &user, &session);
        self.store.create_session(session, audit).await?;
        Ok(LoginOutcome::Session(result))
    }

    /// The `auth.login` event of a new session: the user, their role and the session's id.
    pub(crate) fn login_event(&self, ctx: &RequestContext, user: &UserRow, session: &SessionRow) -> AuditDraft {
        let mut audit = self.audit_draft(ctx, "auth.login");
        audit.actor_id = Some(user.id);
        audit.actor_role = Some(user.role.clone());
        audit.session_id = Some(public_session_id(&session.token_hash));
        audit
    }

    /// A new login session for a user (not yet stored) and what the client is told about it.
    pub(crate) fn new_session(&self, ctx: &RequestContext, user_id: Uuid) -> ServiceResult<(LoginResult, SessionRow)> {
        let token = format!(
            "{TOKEN_PREFIX}{}",
            B64.encode(random_bytes::<32>().map_err(|_| ServiceError::new(ErrorCode::Internal))?)
        );
        let now = now_micros();
        let expires_at = now + self.config.session_absolute_secs * 1_000_000;
        let token_hash = sha256_hex(token.as_bytes());
        let session = SessionRow {
            token_hash: token_hash.clone(),
            user_id,
            created_at: now,
            last_seen_at: now,
            expires_at,
            ip: ctx.ip.clone(),
            user_agent: ctx.user_agent.clone(),
            kind: "session".into(),
            scope: "read_write".into(),
            name: None,
            step_up_until: None,
        };
        let result = LoginResult {
            token,
            expires_at: crate::micros_to_rfc3339(expires_at),
            csrf_token: self.csrf_token_for(&token_hash),
        };
        Ok((result, session))
    }

    /// The CSRF token of a session: a keyed MAC of the session's token hash, so it is bound to
    /// the session, needs no storage, and cannot be computed without the server's keys.
    pub fn csrf_token_for(&self, session_hash: &str) -> String {
        B64.encode(self.keyring.keyed_mac("csrf", session_hash))
    }

    /// Checks the `X-CSRF-Token` of an unsafe request authenticated by cookie. A missing or
    /// wrong token is refused (403 `csrf_failed`) and audited.
    pub async fn check_csrf(&self, ctx: &RequestContext, presented: Option<&str>) -> ServiceResult<()> {
        let actor = ctx.actor.as_ref().ok_or_else(|| ServiceError::new(ErrorCode::Unauthenticated))?;
        let expected = self.csrf_token_for(&actor.session_hash);
        let ok = presented.is_some_and(|p| {
            p.len() == expected.len() && p.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
        });
        if ok {
            return Ok(());
        }
        let mut audit = self.audit_draft(ctx, "auth.csrf_failed");
        audit.details = json!({ "token_present": presented.is_some() });
        self.store.append_audit(vec![audit]).await?;
        Err(ServiceError::new(ErrorCode::CsrfFailed))
    }

    /// Resolves a bearer token to the caller. Expired, unknown and disabled all answer
    /// `unauthenticated` without saying which.
    pub async fn authenticate(&self, token: &str) -> ServiceResult<Actor> {
        let unauthenticated = || ServiceError::new(ErrorCode::Unauthenticated);
        if !(token.starts_with(TOKEN_PREFIX) || token.starts_with(API_TOKEN_PREFIX)) || token.len() > 128 {
            return Err(unauthenticated());
        }
        let hash = sha256_hex(token.as_bytes());
        // First learn whether another server ended or changed sessions (see `caches`).
        self.sync_caches().await?;
        let now = now_micros();
        let api_token = token.starts_with(API_TOKEN_PREFIX);
        let usable = |session: &SessionRow, user: &UserRow| {
            // Personal tokens have no idle timeout, only their expiry.
            let idle_limit = if session.kind == "api_token" {
                i64::MAX
            } else {
                session.last_seen_at + self.config.session_idle_secs * 1_000_000
            };
            now < session.expires_at
                && now < idle_limit
                && (session.kind == "api_token") == api_token
                && user.status == "active"
        };
        let (session, user) = match self.sessions.get(&hash, self.cache_sync.generation()) {
            Some((session, user)) if usable(&session, &user) => (session, user),
            // Not cached, or refused on what the cache holds (another server may have seen the
            // session since, moving `last_seen_at`): the store decides.
            _ => {
                let generation = self.cache_sync.generation();
                let (session, user) = self.store.get_session_user(&hash).await?.ok_or_else(unauthenticated)?;
                if !usable(&session, &user) {
                    self.sessions.forget(&hash);
                    return Err(unauthenticated());
                }
                self.sessions.put(&hash, &session, &user, generation);
                (session, user)
            }
        };
        // Record activity at most once a minute so that reads stay reads.
        if now - session.last_seen_at > 60 * 1_000_000 {
            self.store.touch_session(&hash, now).await?;
            self.sessions.touched(&hash, now);
        }
        // Only roles that must have MFA pay for the extra lookup. (Custom roles resolve from
        // the role snapshot: read again when another server changed roles, see `sync_caches`,
        // and at most every ROLE_TTL otherwise.)
        self.refresh_roles_if_stale().await?;
        let mfa_enrollment_required =
            self.role_requires_mfa(&user.role) && !self.session_user_enrolled(&hash, user.id).await?;
        let stepped_up = session.step_up_until.is_some_and(|until| until > self.config.clock.now_micros());
        Ok(Actor {
            user_id: user.id,
            username: user.username,
            role: user.role,
            team_id: user.team_id,
            department_id: user.department_id,
            session_hash: hash,
            stepped_up,
            step_up_until: session.step_up_until,
            mfa_enrollment_required,
            read_only: session.scope == "read",
            api_token,
        })
    }

    /// Creates a personal API token for the caller (prefixed `cpt_`, stored hashed, scoped to
    /// `read` or `read_write`, expiring after at most a year). Tokens cannot mint tokens.
    pub async fn create_api_token(
        &self,
        ctx: &RequestContext,
        name: &str,
        scope: &str,
        days: u32,
    ) -> ServiceResult<NewApiToken> {
        let actor = ctx.actor.as_ref().ok_or_else(|| ServiceError::new(ErrorCode::Unauthenticated))?;
        if actor.api_token {
            return Err(ServiceError::with_message(
                ErrorCode::Forbidden,
                "API tokens cannot create API tokens; log in.",
            ));
        }
        let mut errors = Vec::new();
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            errors.push(FieldError::new(
                "name",
                "invalid_name",
                "Names need 1-100 characters.",
                "名称须为 1-100 个字符。",
            ));
        }
        if scope != "read" && scope != "read_write" {
            errors.push(FieldError::new(
                "scope",
                "not_allowed",
                "scope is read or read_write.",
                "scope 取值为 read 或 read_write。",
            ));
        }
        if days == 0 || days > MAX_API_TOKEN_DAYS {
            errors.push(FieldError::new(
                "expires_in_days",
                "out_of_range",
                format!("Tokens expire after 1-{MAX_API_TOKEN_DAYS} days."),
                format!("令牌有效期须为 1-{MAX_API_TOKEN_DAYS} 天。"),
            ));
        }
        if !errors.is_empty() {
            return Err(ServiceError::validation(errors));
        }
        let token = format!(
            "{API_TOKEN_PREFIX}{}",
            B64.encode(random_bytes::<32>().map_err(|_| ServiceError::new(ErrorCode::Internal))?)
        );
        let now = now_micros();
        let expires_at = now + i64::from(days) * 24 * 3600 * 1_000_000;
        let hash = sha256_hex(token.as_bytes());
        let row = SessionRow {
            token_hash: hash.clone(),
            user_id: actor.user_id,
            created_at: now,
            last_seen_at: now,
            expires_at,
            ip: ctx.ip.clone(),
            user_agent: ctx.user_agent.clone(),
            kind: "api_token".into(),
            scope: scope.to_owned(),
            name: Some(name.to_owned()),
            step_up_until: None,
        };
        let id = public_session_id(&hash);
        let mut audit = self.audit_draft(ctx, "auth.token_create");
        audit.details =
            json!({ "token_id": id, "name": name, "scope": scope, "expires_at": crate::micros_to_rfc3339(expires_at) });
        self.store.create_session(row, audit).await?;
        Ok(NewApiToken {
            token,
            id,
            name: name.to_owned(),
            scope: scope.to_owned(),
            expires_at: crate::micros_to_rfc3339(expires_at),
        })
    }

    /// Ends one of the caller's sessions or tokens, named by the id `my_sessions` shows.
    pub async fn end_my_session(&self, ctx: &RequestContext, id: &str) -> ServiceResult<()> {
        let actor = ctx.actor.as_ref().ok_or_else(|| ServiceError::new(ErrorCode::Unauthenticated))?;
        if id.len() != 12 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(ServiceError::not_found());
        }
        let sessions = self.store.list_user_sessions(actor.user_id).await?;
        let target = sessions.into_iter().find(|s| s.token_hash.starts_with(id)).ok_or_else(ServiceError::not_found)?;
        let mut audit =
            self.audit_draft(ctx, if target.kind == "api_token" { "auth.token_revoke" } else { "auth.session_end" });
        audit.details = json!({ "token_id": id });
        self.store.delete_session(&target.token_hash, audit).await?;
        self.drop_caches();
        Ok(())
    }

    pub async fn logout(&self, ctx: &RequestContext) -> ServiceResult<()> {
        let actor = ctx.actor.as_ref().ok_or_else(|| ServiceError::new(ErrorCode::Unauthenticated))?;
        let audit = self.audit_draft(ctx, "auth.logout");
        self.store.delete_session(&actor.session_hash, audit).await?;
        self.drop_caches();
        Ok(())
    }
}

/// How long a cached session is used without reading it again. A backstop only: whatever
/// ends or changes a session or its user moves the cache generation — at once on the server
/// that made the change, within `CACHE_EPOCH_POLL` on the others (see `caches`).
const SESSION_CACHE_TTL: Duration = Duration::from_secs(30);
/// Most sessions cached; a full cache starts again empty.
const MAX_CACHED_SESSIONS: usize = 10_000;

/// Sessions with their users as last read from the store, by token hash, so that an
/// authenticated request costs no store read for its session. Entries carry the cache
/// generation current before they were read; an entry of an older generation is never used.
/// Only sessions found are kept (an unknown token is asked again every time).
#[derive(Default)]
pub(crate) struct SessionCache(std::sync::Mutex<HashMap<String, CachedSession>>);

struct CachedSession {
    session: SessionRow,
    user: UserRow,
    generation: u64,
    at: Instant,
}

impl SessionCache {
    fn get(&self, hash: &str, generation: u64) -> Option<(SessionRow, UserRow)> {
        let map = self.0.lock().ok()?;
        let hit = map.get(hash)?;
        (hit.generation == generation && hit.at.elapsed() < SESSION_CACHE_TTL)
            .then(|| (hit.session.clone(), hit.user.clone()))
    }

    fn put(&self, hash: &str, session: &SessionRow, user: &UserRow, generation: u64) {
        if let Ok(mut map) = self.0.lock() {
            if map.len() >= MAX_CACHED_SESSIONS {
                map.clear();
            }
            let entry = CachedSession { session: session.clone(), user: user.clone(), generation, at: Instant::now() };
            map.insert(hash.to_owned(), entry);
        }
    }

    /// Notes a `touch_session` made here.
    fn touched(&self, hash: &str, now: i64) {
        if let Ok(mut map) = self.0.lock()
            && let Some(hit) = map.get_mut(hash)
        {
            hit.session.last_seen_at = hit.session.last_seen_at.max(now);
        }
    }

    fn forget(&self, hash: &str) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_and_common_passwords_are_refused_with_the_reason() {
        for (password, inputs) in [
            ("password1234", &[][..]),
            ("123456789012", &[][..]),
            ("qwertyuiopasdf", &[][..]),
            ("Password123!", &[][..]),
            ("alice.wang1985", &["alice.wang"][..]),
            ("zhangwei.custodian", &["zhangwei.custodian"][..]),
        ] {
            let e = Service::check_password_policy(password, inputs).err();
            let e = e.unwrap_or_else(|| panic!("{password} was accepted"));
            assert_eq!(e.code, ErrorCode::ValidationFailed);
            assert_eq!(e.details[0].code, "password_weak", "{password}");
            let strength = &e.extra.as_ref().map(|x| x["password_strength"].clone()).unwrap_or_default();
            assert!(strength["score"].as_u64().unwrap_or(9) < u64::from(MIN_PASSWORD_SCORE), "{strength}");
        }
        assert_eq!(
            Service::check_password_policy("short", &[]).err().map(|e| e.details[0].code.clone()).as_deref(),
            Some("password_too_short")
        );
        for password in [
            "correct horse battery staple",
            "a long enough password",
            "Vq3#kd8!Lp2@xz",
            "蓝色的大海上有三只白色的海鸥在飞翔",
        ] {
            assert!(Service::check_password_policy(password, &["alice"]).is_ok(), "{password} was refused");
        }
        // The longest allowed password is judged quickly (only a prefix goes to the estimator),
        // and a repeated pattern is weak however long it is.
        let long = "aZ3$".repeat(256);
        let started = std::time::Instant::now();
        let refused = Service::check_password_policy(&long, &[]).err().map(|e| e.details[0].code.clone());
        assert_eq!(refused.as_deref(), Some("password_weak"));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}
