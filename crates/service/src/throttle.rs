//! Login throttling: failed logins are counted per account and per client IP; after a few
//! failures each further attempt must wait an exponentially growing delay (capped), during which
//! it is answered 429 without computing a password hash. A flood of bad logins therefore neither
//! succeeds nor takes hashing capacity from other users.
//!
//! The counters live in this process. With several servers behind a load balancer each keeps
//! its own, so an attacker gets at most (servers × threshold) free attempts before the delays
//! start everywhere.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed before delays start.
const FREE_FAILURES_ACCOUNT: u32 = 5;
const FREE_FAILURES_IP: u32 = 20;
/// First delay after the free failures, doubled per further failure.
const BASE_DELAY: Duration = Duration::from_secs(1);
const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// Counters idle this long are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);
/// Bound on tracked keys, so a flood of random usernames cannot exhaust memory.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    blocked_until: Instant,
    last: Instant,
}

#[derive(Debug, Default)]
pub struct LoginThrottle {
    entries: Mutex<HashMap<String, Entry>>,
}

fn delay_for(failures: u32, free: u32) -> Duration {
    if failures < free {
        return Duration::ZERO;
    }
    let exp = (failures - free).min(20);
    BASE_DELAY.saturating_mul(1u32 << exp).min(MAX_DELAY)
}

impl LoginThrottle {
    fn keys(username: &str, ip: Option<&str>) -> Vec<(String, u32)> {
        let mut keys = vec![(format!("user:{}", username.trim().to_lowercase()), FREE_FAILURES_ACCOUNT)];
        if let Some(ip) = ip {
            keys.push((format!("ip:{ip}"), FREE_FAILURES_IP));
        }
        keys
    }

    /// `Some(wait)` when the attempt must be refused now.
    pub fn check(&self, username: &str, ip: Option<&str>, now: Instant) -> Option<Duration> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        Self::keys(username, ip)
            .iter()
            .filter_map(|(k, _)| entries.get(k))
            .filter(|e| e.blocked_until > now)
            .map(|e| e.blocked_until - now)
            .max()
    }

    pub fn record_failure(&self, username: &str, ip: Option<&str>, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_KEYS {
            entries.retain(|_, e| now.duration_since(e.last) < FORGET_AFTER && e.blocked_until > now);
        }
        for (key, free) in Self::keys(username, ip) {
            let e = entries.entry(key).or_insert(Entry { failures: 0, blocked_until: now, last: now });
            if now.duration_since(e.last) > FORGET_AFTER {
                e.failures = 0;
            }
            e.failures = e.failures.saturating_add(1);
            e.last = now;
            e.blocked_until = now + delay_for(e.failures, free);
        }
    }

    /// A successful login clears the account's counter (not the IP's).
    pub fn record_success(&self, username: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.remove(&format!("user:{}", username.trim().to_lowercase()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_start_after_the_free_failures_and_grow() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for _ in 0..FREE_FAILURES_ACCOUNT - 1 {
            t.record_failure("alice", Some("10.0.0.1"), now);
        }
        assert!(t.check("alice", Some("10.0.0.1"), now).is_none());
        t.record_failure("alice", Some("10.0.0.1"), now);
        let first = t.check("Alice", Some("10.0.0.9"), now).unwrap_or_default();
        assert!(first >= BASE_DELAY);
        t.record_failure("alice", None, now);
        assert!(t.check("alice", None, now).unwrap_or_default() > first);
        // Another account from another address is not affected.
        assert!(t.check("bob", Some("10.0.0.2"), now).is_none());
        // The delay ends by itself.
        assert!(t.check("alice", None, now + MAX_DELAY).is_none());
    }

    #[test]
    fn many_accounts_from_one_address_block_the_address() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..FREE_FAILURES_IP {
            t.record_failure(&format!("user{i}"), Some("10.9.9.9"), now);
        }
        assert!(t.check("fresh-user", Some("10.9.9.9"), now).is_some());
        assert!(t.check("fresh-user", Some("10.1.1.1"), now).is_none());
    }

    #[test]
    fn success_clears_the_account() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for _ in 0..10 {
            t.record_failure("carol", None, now);
        }
        t.record_success("carol");
        assert!(t.check("carol", None, now).is_none());
    }
}
