//! Login throttling: failed logins (wrong passwords and wrong second-factor codes) are counted
//! per account and per client address; after a few failures each further attempt must wait an
//! exponentially growing delay (capped), during which it is answered 429 without computing a
//! password hash. A flood of bad logins therefore neither succeeds nor takes hashing capacity
//! from other users.
//!
//! The counters live in the database (`login_failures`, keyed by a hash of the account name or
//! the address), so every server on one database sees the same counts and delays; each
//! increment is atomic in the store. Each process keeps a small front cache of the blocks it has
//! learnt, so that a flood against a blocked key is refused without a database read.

use crate::Service;
use crate::error::ServiceResult;
use custodian_crypto::sha256_hex;
use custodian_store::{LoginCounterRow, now_micros};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed before delays start.
const FREE_FAILURES_ACCOUNT: u32 = 5;
const FREE_FAILURES_IP: u32 = 20;
/// First delay after the free failures, doubled per further failure.
const BASE_DELAY: Duration = Duration::from_secs(1);
const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// Counters idle this long start again from zero.
const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);
/// Bound on the front cache, so a flood of random usernames cannot exhaust memory.
const MAX_KEYS: usize = 100_000;

/// Delay owed after `failures` failures when `free` are allowed.
fn delay_for(failures: i64, free: u32) -> Duration {
    let free = i64::from(free);
    if failures < free {
        return Duration::ZERO;
    }
    let exp = (failures - free).min(20) as u32;
    BASE_DELAY.saturating_mul(1u32 << exp).min(MAX_DELAY)
}

/// The store keys of an attempt and the failures each allows: account and (when known) address,
/// hashed so that a password typed into the username box is not stored.
fn keys(username: &str, ip: Option<&str>) -> Vec<(String, u32)> {
    let mut keys =
        vec![(format!("user:{}", sha256_hex(username.trim().to_lowercase().as_bytes())), FREE_FAILURES_ACCOUNT)];
    if let Some(ip) = ip {
        keys.push((format!("ip:{}", sha256_hex(ip.as_bytes())), FREE_FAILURES_IP));
    }
    keys
}

/// The remaining wait (if any) a counter imposes at `now_us`.
fn wait_of(row: &LoginCounterRow, free: u32, now_us: i64) -> Option<Duration> {
    if now_us - row.last_failure_at > FORGET_AFTER.as_micros() as i64 {
        return None;
    }
    let until = row.last_failure_at.saturating_add(delay_for(row.failures, free).as_micros() as i64);
    (until > now_us).then(|| Duration::from_micros((until - now_us) as u64))
}

/// Blocks learnt from the database, per key.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    blocked: Mutex<HashMap<String, Instant>>,
}

impl LoginThrottle {
    fn check(&self, keys: &[(String, u32)], now: Instant) -> Option<Duration> {
        let blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter().filter_map(|(k, _)| blocked.get(k)).filter(|until| **until > now).map(|until| *until - now).max()
    }

    fn block(&self, key: &str, wait: Duration, now: Instant) {
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        if blocked.len() >= MAX_KEYS {
            blocked.retain(|_, until| *until > now);
        }
        if blocked.len() < MAX_KEYS {
            blocked.insert(key.to_owned(), now + wait);
        }
    }

    fn forget(&self, key: &str) {
        self.blocked.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

impl Service {
    /// `Some(wait)` when a login (or second-factor) attempt must be refused now.
    pub(crate) async fn login_wait(&self, username: &str, ip: Option<&str>) -> ServiceResult<Option<Duration>> {
        let keys = keys(username, ip);
        let now = Instant::now();
        if let Some(wait) = self.throttle.check(&keys, now) {
            return Ok(Some(wait));
        }
        let names: Vec<String> = keys.iter().map(|(k, _)| k.clone()).collect();
        let rows = self.store.login_counters(&names).await?;
        Ok(self.learn(&keys, &rows, now))
    }

    /// Counts a failed attempt under the account and the address.
    pub(crate) async fn record_login_failure(&self, username: &str, ip: Option<&str>) -> ServiceResult<()> {
        let keys = keys(username, ip);
        let names: Vec<String> = keys.iter().map(|(k, _)| k.clone()).collect();
        let now_us = now_micros();
        let rows = self.store.record_login_failure(&names, now_us, now_us - FORGET_AFTER.as_micros() as i64).await?;
        self.learn(&keys, &rows, Instant::now());
        Ok(())
    }

    /// A successful login clears the account's counter (not the address's).
    pub(crate) async fn record_login_success(&self, username: &str) -> ServiceResult<()> {
        let (key, _) = keys(username, None).remove(0);
        self.throttle.forget(&key);
        self.store.clear_login_failures(&key).await?;
        Ok(())
    }

    /// Turns counters into blocks (remembered in the front cache) and returns the longest wait.
    fn learn(&self, keys: &[(String, u32)], rows: &[LoginCounterRow], now: Instant) -> Option<Duration> {
        let now_us = now_micros();
        let mut longest: Option<Duration> = None;
        for row in rows {
            let Some((key, free)) = keys.iter().find(|(k, _)| *k == row.key) else { continue };
            if let Some(wait) = wait_of(row, *free, now_us) {
                self.throttle.block(key, wait, now);
                longest = Some(longest.map_or(wait, |l| l.max(wait)));
            }
        }
        longest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(failures: i64, last: i64) -> LoginCounterRow {
        LoginCounterRow { key: "k".into(), failures, last_failure_at: last }
    }

    #[test]
    fn delays_start_after_the_free_failures_and_grow() {
        let now = 1_000_000_000_000i64;
        assert!(wait_of(&row(i64::from(FREE_FAILURES_ACCOUNT) - 1, now), FREE_FAILURES_ACCOUNT, now).is_none());
        let first = wait_of(&row(i64::from(FREE_FAILURES_ACCOUNT), now), FREE_FAILURES_ACCOUNT, now);
        let first = first.unwrap_or_default();
        assert!(first >= BASE_DELAY - Duration::from_micros(1));
        let second = wait_of(&row(i64::from(FREE_FAILURES_ACCOUNT) + 1, now), FREE_FAILURES_ACCOUNT, now);
        assert!(second.unwrap_or_default() > first);
        // Capped, and ends by itself.
        assert_eq!(delay_for(1_000, FREE_FAILURES_ACCOUNT), MAX_DELAY);
        let later = now + MAX_DELAY.as_micros() as i64 + 1;
        assert!(wait_of(&row(1_000, now), FREE_FAILURES_ACCOUNT, later).is_none());
        // Addresses get more free failures than accounts.
        assert!(wait_of(&row(i64::from(FREE_FAILURES_ACCOUNT), now), FREE_FAILURES_IP, now).is_none());
    }

    #[test]
    fn keys_hide_the_typed_name_and_ignore_case() {
        let k = keys(" Alice ", Some("10.0.0.1"));
        assert_eq!(k.len(), 2);
        assert_eq!(k[0].0, keys("alice", None)[0].0);
        assert!(!k[0].0.contains("alice") && !k[1].0.contains("10.0.0.1"));
    }

    #[test]
    fn front_cache_blocks_until_the_wait_ends() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        let k = keys("bob", None);
        assert!(t.check(&k, now).is_none());
        t.block(&k[0].0, Duration::from_secs(2), now);
        assert!(t.check(&k, now).is_some());
        assert!(t.check(&k, now + Duration::from_secs(3)).is_none());
        t.forget(&k[0].0);
        assert!(t.check(&k, now).is_none());
    }
}
