//! The service's clock for time-based security decisions: TOTP time steps, the step-up window
//! and login challenge expiry. It is injectable so that tests can move time forward (a new TOTP
//! step every 30 seconds, a step-up window that ends after five minutes) without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Current time in microseconds since the Unix epoch.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    /// The system clock (the default).
    pub fn system() -> Self {
        Clock(Arc::new(custodian_store::now_micros))
    }

    /// A clock that starts at the system time and moves only when told (tests).
    pub fn manual() -> (Self, ManualClock) {
        let offset = Arc::new(AtomicI64::new(0));
        let read = offset.clone();
        (Clock(Arc::new(move || custodian_store::now_micros() + read.load(Ordering::SeqCst))), ManualClock(offset))
    }

    pub fn now_micros(&self) -> i64 {
        (self.0)()
    }

    pub fn now_secs(&self) -> i64 {
        self.now_micros().div_euclid(1_000_000)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// The handle that moves a manual clock: it runs with the system clock plus an offset.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn advance_secs(&self, secs: i64) {
        self.0.fetch_add(secs.saturating_mul(1_000_000), Ordering::SeqCst);
    }
}
