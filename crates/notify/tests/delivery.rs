//! The outbox end to end on both backends: an anomaly alert raised by the service reaches a
//! local webhook receiver exactly once (two workers deliver at the same time) with a valid
//! signature, and a local SMTP listener receives the mail; a failing webhook is retried.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use custodian_notify::{DeliveryConfig, OutboxWorker, SmtpConfig, SmtpSecurity, WebhookConfig, signature};
use custodian_service::{RequestContext, Service, ServiceConfig, load_keyring};
use custodian_store::{AlertRuleRow, AuditDraft, OutboxRow, Store, WriteBatch, now_micros};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const SECRET: &[u8] = b"webhook secret for tests";

#[derive(Clone, Default)]
struct Received {
    /// (headers, body) of every request, accepted or not.
    requests: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    /// Requests to refuse (500) before accepting.
    refuse_first: Arc<Mutex<usize>>,
}

async fn receive(State(r): State<Received>, headers: HeaderMap, body: Bytes) -> StatusCode {
    r.requests.lock().unwrap().push((headers, body));
    let mut refuse = r.refuse_first.lock().unwrap();
    if *refuse > 0 {
        *refuse -= 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    StatusCode::NO_CONTENT
}

/// A webhook receiver on 127.0.0.1; returns its URL.
async fn webhook_receiver(received: Received) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/hook", post(receive)).with_state(received);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/hook")
}

/// A minimal SMTP server on 127.0.0.1 that accepts every message and keeps its DATA.
async fn smtp_listener(mails: Arc<Mutex<Vec<String>>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else { return };
            let mails = mails.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 localhost ESMTP test\r\n").await.unwrap();
                let mut data: Option<String> = None;
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(d) = &mut data {
                        if line == "." {
                            mails.lock().unwrap().push(std::mem::take(d));
                            data = None;
                            write.write_all(b"250 OK queued\r\n").await.unwrap();
                        } else {
                            d.push_str(&line);
                            d.push('\n');
                        }
                        continue;
                    }
                    let verb = line.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" | "HELO" => b"250-localhost\r\n250 8BITMIME\r\n",
                        "DATA" => {
                            data = Some(String::new());
                            b"354 go ahead\r\n"
                        }
                        "QUIT" => {
                            write.write_all(b"221 bye\r\n").await.unwrap();
                            return;
                        }
                        _ => b"250 OK\r\n",
                    };
                    write.write_all(reply).await.unwrap();
                }
            });
        }
    });
    port
}

async fn service(store: Arc<dyn Store>, channels: &[&str]) -> Service {
    let master = custodian_crypto::MasterKey::from_hex(&"ab".repeat(32)).unwrap();
    let keyring = load_keyring(store.as_ref(), &master).await.unwrap();
    let config =
        ServiceConfig { outbox_channels: channels.iter().map(|c| (*c).to_owned()).collect(), ..Default::default() };
    Service::new(store, keyring, config).await.unwrap()
}

fn config(name: &str, url: &str, smtp_port: Option<u16>) -> DeliveryConfig {
    let mut c = DeliveryConfig::new(name);
    c.webhook = Some(WebhookConfig { url: url.to_owned(), secret: SECRET.to_vec() });
    c.smtp = smtp_port.map(|port| SmtpConfig {
        host: "127.0.0.1".into(),
        port,
        security: SmtpSecurity::None,
        from: "Custodian <custodian@example.com>".into(),
        to: vec!["security@example.com".into()],
        credentials: None,
    });
    // Long enough that a loaded machine still checks "not before its time" inside it.
    c.backoff = Duration::from_millis(1500);
    c.timeout = Duration::from_secs(5);
    c
}

async fn alert_is_delivered_once_by_webhook_and_mail(store: Arc<dyn Store>) {
    let received = Received::default();
    let url = webhook_receiver(received.clone()).await;
    let mails = Arc::new(Mutex::new(Vec::new()));
    let smtp = smtp_listener(mails.clone()).await;
    let service = service(store.clone(), &["webhook", "email"]).await;
    let user = service
        .create_user(&RequestContext::cli(), "curious", "a long enough password", "sales_manager", None, None)
        .await
        .unwrap();
    let rule = json!({"metric": "reveals", "enabled": true, "window_secs": 3600, "absolute": 2,
        "baseline_multiple": null, "baseline_min": 0, "auto_suspend": false});
    store
        .put_alert_rule(
            AlertRuleRow { metric: "reveals".into(), definition: rule, updated_at: 1 },
            AuditDraft::new("t"),
        )
        .await
        .unwrap();
    let reveals = (0..3)
        .map(|_| {
            let mut d = AuditDraft::new("record.reveal");
            d.actor_id = Some(user.id);
            d
        })
        .collect();
    store.append_audit(reveals).await.unwrap();
    let raised = service.evaluate_alerts(now_micros()).await.unwrap();
    assert_eq!(raised.len(), 1);
    assert_eq!(store.list_outbox(10).await.unwrap().len(), 2);

    // Two servers' workers at once: each message goes out once.
    let a = OutboxWorker::new(store.clone(), config("server-a", &url, Some(smtp))).unwrap();
    let b = OutboxWorker::new(store.clone(), config("server-b", &url, Some(smtp))).unwrap();
    let (da, db) = tokio::join!(a.deliver_due(), b.deliver_due());
    assert_eq!(da.unwrap() + db.unwrap(), 2);
    assert_eq!(a.deliver_due().await.unwrap() + b.deliver_due().await.unwrap(), 0);

    let requests = received.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1, "the webhook received the alert exactly once");
    let (headers, body) = &requests[0];
    let payload: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(payload["type"], "alert");
    assert_eq!(payload["alert"]["id"], raised[0].id.to_string());
    assert_eq!(payload["alert"]["metric"], "reveals");
    let timestamp: i64 = headers["x-custodian-timestamp"].to_str().unwrap().parse().unwrap();
    assert_eq!(headers["x-custodian-signature"].to_str().unwrap(), signature(SECRET, timestamp, body));
    assert_ne!(headers["x-custodian-signature"].to_str().unwrap(), signature(b"wrong", timestamp, body));

    let mails = mails.lock().unwrap().clone();
    assert_eq!(mails.len(), 1, "one mail");
    assert!(mails[0].contains("Subject: [Custodian] anomaly alert: reveals (curious)"), "{}", mails[0]);
    assert!(mails[0].contains(&raised[0].id.to_string()));
    let outbox = store.list_outbox(10).await.unwrap();
    assert!(outbox.iter().all(|m| m.delivered_at.is_some() && m.attempts == 1 && m.last_error.is_none()));
}

/// A notification is mailed to its recipient's own address when the message names one, and to
/// the configured list otherwise; an address that does not parse fails that delivery only.
async fn notification_mail_goes_to_the_recipients_own_address(store: Arc<dyn Store>) {
    let mails = Arc::new(Mutex::new(Vec::new()));
    let smtp = smtp_listener(mails.clone()).await;
    let message = |email: Value| {
        let payload = json!({"type": "notification", "recipient_email": email, "notification": {"object": "deals"}});
        OutboxRow::new("email", "notification", payload, now_micros())
    };
    let (own, none, broken) =
        (message(json!("rep@example.cn")), message(Value::Null), message(json!("not an address")));
    store
        .write(WriteBatch { outbox: vec![own.clone(), none.clone(), broken.clone()], ..Default::default() })
        .await
        .unwrap();
    let worker = OutboxWorker::new(store.clone(), config("server-a", "http://127.0.0.1:9/hook", Some(smtp))).unwrap();
    assert_eq!(worker.deliver_due().await.unwrap(), 2);
    let mails = mails.lock().unwrap().clone();
    assert_eq!(mails.len(), 2, "{mails:?}");
    let to = |mail: &str| mail.lines().find(|l| l.starts_with("To: ")).unwrap_or_default().to_owned();
    let mut recipients: Vec<String> = mails.iter().map(|m| to(m)).collect();
    recipients.sort();
    assert_eq!(recipients, ["To: rep@example.cn", "To: security@example.com"]);
    assert!(mails.iter().all(|m| m.contains("Subject: [Custodian] deals changed: please sign off")));
    let outbox = store.list_outbox(10).await.unwrap();
    let row = outbox.iter().find(|m| m.id == broken.id).unwrap();
    assert!(row.delivered_at.is_none() && row.last_error.as_deref().unwrap().contains("recipient address"));
    assert!(outbox.iter().filter(|m| m.id != broken.id).all(|m| m.delivered_at.is_some()));
}

async fn failing_webhook_is_retried_with_backoff(store: Arc<dyn Store>) {
    let received = Received::default();
    *received.refuse_first.lock().unwrap() = 1;
    let url = webhook_receiver(received.clone()).await;
    let message = OutboxRow::new("webhook", "notification", json!({"type": "notification", "n": 1}), now_micros());
    store.write(WriteBatch { outbox: vec![message.clone()], ..Default::default() }).await.unwrap();
    let worker = OutboxWorker::new(store.clone(), config("server-a", &url, None)).unwrap();
    assert_eq!(worker.deliver_due().await.unwrap(), 0);
    let row = store.list_outbox(10).await.unwrap().remove(0);
    assert_eq!(row.attempts, 1);
    assert!(row.delivered_at.is_none());
    assert!(row.last_error.as_deref().unwrap().contains("500"), "{:?}", row.last_error);
    assert!(row.next_attempt_at > now_micros(), "backed off");
    // Not before its time…
    assert_eq!(worker.deliver_due().await.unwrap(), 0);
    assert_eq!(received.requests.lock().unwrap().len(), 1);
    // …then delivered.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(worker.deliver_due().await.unwrap(), 1);
    let row = store.list_outbox(10).await.unwrap().remove(0);
    assert_eq!(row.attempts, 2);
    assert!(row.delivered_at.is_some());
    let requests = received.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2);
    // The same delivery id on every attempt, so receivers can deduplicate.
    assert_eq!(requests[0].0["x-custodian-delivery"], requests[1].0["x-custodian-delivery"]);
    assert_eq!(requests[1].0["x-custodian-delivery"].to_str().unwrap(), message.id.to_string());
}

async fn unreachable_webhook_gives_up_after_max_attempts(store: Arc<dyn Store>) {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let message = OutboxRow::new("webhook", "alert", json!({"type": "alert"}), now_micros());
    store.write(WriteBatch { outbox: vec![message], ..Default::default() }).await.unwrap();
    let mut c = config("server-a", &format!("http://127.0.0.1:{port}/hook"), None);
    c.max_attempts = 2;
    c.backoff = Duration::from_millis(1);
    let worker = OutboxWorker::new(store.clone(), c).unwrap();
    for _ in 0..2 {
        worker.deliver_due().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let row = store.list_outbox(10).await.unwrap().remove(0);
    assert_eq!(row.attempts, 2);
    assert!(row.delivered_at.is_none());
    assert!(row.last_error.as_deref().unwrap().contains("webhook request failed"));
    assert_eq!(row.next_attempt_at, i64::MAX, "given up");
    assert_eq!(worker.deliver_due().await.unwrap(), 0);
    assert_eq!(store.list_outbox(10).await.unwrap()[0].attempts, 2);
}

macro_rules! both {
    ($($case:ident),*) => {
        mod sqlite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (store, _dir) = custodian_store_tests::sqlite_test_store().await;
                    super::$case(Arc::new(store)).await;
                }
            )*
        }
        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some((store, _db)) = custodian_store_tests::postgres_test_store().await else { return };
                    super::$case(Arc::new(store)).await;
                }
            )*
        }
    };
}

both!(
    alert_is_delivered_once_by_webhook_and_mail,
    notification_mail_goes_to_the_recipients_own_address,
    failing_webhook_is_retried_with_backoff,
    unreachable_webhook_gives_up_after_max_attempts
);
