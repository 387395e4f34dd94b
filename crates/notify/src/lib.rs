//! Delivery of the transactional outbox (X4): alert and notification messages are committed
//! to the `outbox` table with the change they announce; this worker leases due messages
//! (`Store::claim_outbox`, so several servers deliver each message once), posts webhooks signed
//! with HMAC-SHA256 and sends mail over SMTP, and records every attempt: delivered, or failed
//! with its error and the time of the next try (exponential back-off, then given up).
//!
//! Delivery is at least once: a server that dies after the receiver accepted a message but
//! before recording it delivers it again when the lease ends. Receivers deduplicate on the
//! `X-Custodian-Delivery` header (the message id).

use custodian_store::{DeliveryOutcome, OutboxRow, Store, now_micros};
use hmac::{KeyInit, Mac};
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Header carrying `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub const SIGNATURE_HEADER: &str = "x-custodian-signature";
/// Header carrying the Unix time (seconds) that the signature covers; receivers refuse old ones.
pub const TIMESTAMP_HEADER: &str = "x-custodian-timestamp";
/// Header carrying the outbox message id (the same on every retry).
pub const DELIVERY_HEADER: &str = "x-custodian-delivery";

/// Where webhooks go.
#[derive(Clone)]
pub struct WebhookConfig {
    pub url: String,
    /// Shared secret of the signature.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig").field("url", &self.url).finish_non_exhaustive()
    }
}

/// How mail is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain SMTP (a relay on the same host or network only).
    None,
    /// STARTTLS on the submission port (587).
    StartTls,
    /// TLS from the first byte (465).
    Tls,
}

#[derive(Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub from: String,
    pub to: Vec<String>,
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("from", &self.from)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub webhook: Option<WebhookConfig>,
    pub smtp: Option<SmtpConfig>,
    /// Who leases (host/process), recorded in the outbox.
    pub claimant: String,
    /// A message leased by a worker that died is handed out again after this long.
    pub lease: Duration,
    /// How often to look for due messages.
    pub poll: Duration,
    /// First retry after this long, doubling per attempt up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Attempts before a message is given up (kept, with its last error).
    pub max_attempts: i64,
    /// Timeout of one webhook request or SMTP session.
    pub timeout: Duration,
}

impl DeliveryConfig {
    pub fn new(claimant: impl Into<String>) -> DeliveryConfig {
        DeliveryConfig {
            webhook: None,
            smtp: None,
            claimant: claimant.into(),
            lease: Duration::from_secs(120),
            poll: Duration::from_secs(2),
            backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(3600),
            max_attempts: 12,
            timeout: Duration::from_secs(20),
        }
    }

    /// The outbox channels this configuration delivers (the service writes one message per
    /// channel).
    pub fn channels(&self) -> Vec<String> {
        let mut c = Vec::new();
        if self.webhook.is_some() {
            c.push("webhook".to_owned());
        }
        if self.smtp.is_some() {
            c.push("email".to_owned());
        }
        c
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Store(#[from] custodian_store::StoreError),
}

/// `sha256=<hex>` over `"<timestamp>.<body>"`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = match <HmacSha256 as KeyInit>::new_from_slice(secret) {
        Ok(m) => m,
        // HMAC accepts keys of any length; this branch cannot be taken.
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub struct OutboxWorker {
    store: Arc<dyn Store>,
    config: DeliveryConfig,
    http: reqwest::Client,
    smtp: Option<(AsyncSmtpTransport<Tokio1Executor>, Mailbox, Vec<Mailbox>)>,
}

impl OutboxWorker {
    pub fn new(store: Arc<dyn Store>, config: DeliveryConfig) -> Result<OutboxWorker, NotifyError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            // Webhooks go straight to the configured URL, never through a proxy taken from
            // the environment.
            .no_proxy()
            .user_agent("custodian-outbox")
            .build()
            .map_err(|e| NotifyError::Config(e.to_string()))?;
        let smtp = match &config.smtp {
            None => None,
            Some(s) => {
                let tls =
                    |host: &str| TlsParameters::new(host.to_owned()).map_err(|e| NotifyError::Config(e.to_string()));
                let tls = match s.security {
                    SmtpSecurity::None => Tls::None,
                    SmtpSecurity::StartTls => Tls::Required(tls(&s.host)?),
                    SmtpSecurity::Tls => Tls::Wrapper(tls(&s.host)?),
                };
                let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host)
                    .port(s.port)
                    .tls(tls)
                    .timeout(Some(config.timeout));
                if let Some((user, password)) = &s.credentials {
                    builder = builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
                        user.clone(),
                        password.clone(),
                    ));
                }
                let parse = |a: &str| a.parse::<Mailbox>().map_err(|e| NotifyError::Config(format!("{a}: {e}")));
                let from = parse(&s.from)?;
                let to = s.to.iter().map(|a| parse(a)).collect::<Result<Vec<_>, _>>()?;
                if to.is_empty() {
                    return Err(NotifyError::Config("SMTP needs at least one recipient".into()));
                }
                Some((builder.build(), from, to))
            }
        };
        Ok(OutboxWorker { store, config, http, smtp })
    }

    pub fn config(&self) -> &DeliveryConfig {
        &self.config
    }

    /// One pass: leases due messages and attempts each once. Returns how many were delivered.
    pub async fn deliver_due(&self) -> Result<usize, NotifyError> {
        let now = now_micros();
        let lease = i64::try_from(self.config.lease.as_micros()).unwrap_or(i64::MAX);
        let batch = self.store.claim_outbox(&self.config.claimant, now, lease, 50).await?;
        let mut delivered = 0;
        for message in batch {
            let outcome = match self.attempt(&message).await {
                Ok(()) => {
                    delivered += 1;
                    DeliveryOutcome::Delivered { at: now_micros() }
                }
                Err(error) => {
                    tracing::warn!(id = %message.id, channel = %message.channel, attempts = message.attempts, %error, "outbox delivery failed");
                    DeliveryOutcome::Failed { error, retry_at: self.retry_at(message.attempts) }
                }
            };
            self.store.finish_outbox(message.id, &self.config.claimant, outcome).await?;
        }
        Ok(delivered)
    }

    /// When to try again after `attempts` attempts, or never.
    fn retry_at(&self, attempts: i64) -> Option<i64> {
        if attempts >= self.config.max_attempts {
            return None;
        }
        let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        let delay = self.config.backoff.saturating_mul(2u32.saturating_pow(exponent)).min(self.config.max_backoff);
        Some(now_micros().saturating_add(i64::try_from(delay.as_micros()).unwrap_or(i64::MAX)))
    }

    async fn attempt(&self, message: &OutboxRow) -> Result<(), String> {
        match message.channel.as_str() {
            "webhook" => self.post_webhook(message).await,
            "email" => self.send_mail(message).await,
            other => Err(format!("unknown channel {other}")),
        }
    }

    async fn post_webhook(&self, message: &OutboxRow) -> Result<(), String> {
        let Some(hook) = &self.config.webhook else { return Err("no webhook is configured".into()) };
        let body = serde_json::to_vec(&message.payload).map_err(|e| e.to_string())?;
        let timestamp = now_micros() / 1_000_000;
        let response = self
            .http
            .post(&hook.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature(&hook.secret, timestamp, &body))
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(DELIVERY_HEADER, message.id.to_string())
            .body(body)
            .send()
            .await
            .map_err(|e| format!("webhook request failed: {e}"))?;
        let status = response.status();
        if status.is_success() { Ok(()) } else { Err(format!("webhook answered {status}")) }
    }

    async fn send_mail(&self, message: &OutboxRow) -> Result<(), String> {
        let Some((transport, from, to)) = &self.smtp else { return Err("no SMTP server is configured".into()) };
        let subject = match message.payload["type"].as_str() {
            Some("alert") => format!(
                "[Custodian] anomaly alert: {} ({})",
                message.payload["alert"]["metric"].as_str().unwrap_or("?"),
                message.payload["alert"]["details"]["username"].as_str().unwrap_or("unknown user"),
            ),
            Some("notification") => format!(
                "[Custodian] {} changed: please sign off",
                message.payload["notification"]["object"].as_str().unwrap_or("record")
            ),
            _ => "[Custodian] message".to_owned(),
        };
        let text = serde_json::to_string_pretty(&message.payload).map_err(|e| e.to_string())?;
        let mut builder = Message::builder()
            .from(from.clone())
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .message_id(Some(format!("<{}@custodian>", message.id)));
        // A notification goes to its recipient's own address when they have one; everything
        // else (alerts, notifications of users without an address) to the configured list.
        match message.payload.get("recipient_email").and_then(|v| v.as_str()) {
            Some(address) => {
                builder = builder.to(address.parse::<Mailbox>().map_err(|e| format!("recipient address: {e}"))?)
            }
            None => {
                for recipient in to {
                    builder = builder.to(recipient.clone());
                }
            }
        }
        let email = builder.body(text).map_err(|e| e.to_string())?;
        transport.send(email).await.map(|_| ()).map_err(|e| format!("SMTP: {e}"))
    }

    /// Delivers until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.deliver_due().await {
                tracing::error!(error = %e, "outbox delivery pass failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.poll) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_and_body() {
        // RFC 4231 test case 2 shape: key "Jefe", data "what do ya want for nothing?".
        let s = signature(b"Jefe", 0, b"what do ya want for nothing?");
        assert!(s.starts_with("sha256=") && s.len() == 7 + 64);
        assert_ne!(s, signature(b"Jefe", 1, b"what do ya want for nothing?"));
        assert_ne!(s, signature(b"other", 0, b"what do ya want for nothing?"));
        assert_eq!(s, signature(b"Jefe", 0, b"what do ya want for nothing?"));
    }
}
