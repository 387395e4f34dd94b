//! Keeping this server's caches of shared configuration — roles, grants, the organisation,
//! custom fields, field rules and the data keys — in step with the store, which other servers (or the CLI on
//! the same database) change too.
//!
//! The store keeps a counter, the cache epoch, that triggers move forward in every transaction
//! changing one of those tables. `Service::sync_caches` reads it at most every
//! [`CACHE_EPOCH_POLL`] (on the request path: authentication and every write call it, so an idle
//! server costs nothing) and, when it moved, starts a new cache *generation*: the role snapshot and
//! the schema are read again at once, and the organisation and grant caches, which remember the
//! generation they were read in, are read again on their next use. A cache read that was already
//! under way when the generation changed keeps its old generation (the role snapshot and the
//! schema remember theirs too), so it cannot bring back what the change replaced. The caches' own lifetimes (`ROLE_TTL`, `GRANT_TTL`, …) stay as a
//! backstop.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{Service, ServiceResult};

/// How often a server reads the store's cache epoch: the longest a change made elsewhere is
/// unseen here.
pub const CACHE_EPOCH_POLL: Duration = Duration::from_millis(250);

#[derive(Default)]
pub(crate) struct CacheSync {
    /// The current cache generation.
    generation: AtomicU64,
    /// The store's epoch last read, and when.
    seen: Mutex<Option<(i64, Instant)>>,
    /// One epoch read at a time; requests arriving meanwhile use the caches as they are.
    checking: tokio::sync::Mutex<()>,
}

impl CacheSync {
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Starts a new generation: every cache read before now is stale.
    pub(crate) fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn recently_checked(&self) -> bool {
        match self.seen.lock() {
            Ok(seen) => seen.is_some_and(|(_, at)| at.elapsed() < CACHE_EPOCH_POLL),
            Err(_) => false,
        }
    }

    /// Forgets the epoch seen, so that the next check treats any epoch as moved.
    fn forget(&self) {
        if let Ok(mut seen) = self.seen.lock() {
            *seen = None;
        }
    }

    /// Records the epoch just read; true when it differs from the one seen before.
    fn observe(&self, epoch: i64) -> bool {
        match self.seen.lock() {
            Ok(mut seen) => {
                let moved = seen.is_none_or(|(e, _)| e != epoch);
                *seen = Some((epoch, Instant::now()));
                moved
            }
            Err(_) => true,
        }
    }
}

impl Service {
    /// Reads the store's cache epoch (at most every `CACHE_EPOCH_POLL`) and, when another server
    /// or process changed shared configuration, drops this server's caches of it and reads the
    /// roles and the schema again.
    pub(crate) async fn sync_caches(&self) -> ServiceResult<()> {
        if self.cache_sync.recently_checked() {
            return Ok(());
        }
        let Ok(_guard) = self.cache_sync.checking.try_lock() else { return Ok(()) };
        if self.cache_sync.recently_checked() {
            return Ok(());
        }
        let epoch = self.store.cache_epoch().await?;
        if self.cache_sync.observe(epoch) {
            self.cache_sync.bump();
            let reloaded = async {
                self.refresh_schema().await?;
                self.reload_roles().await?;
                // A data key another server added (a rotation).
                self.refresh_keys().await.map(|_| ())
            };
            if let Err(e) = reloaded.await {
                // Not reloaded: the next request reads the epoch again and retries.
                self.cache_sync.forget();
                return Err(e);
            }
        }
        Ok(())
    }

    /// Notes the store's current epoch without dropping anything (at start-up, before the
    /// caches are first filled).
    pub(crate) async fn note_cache_epoch(&self) -> ServiceResult<()> {
        let epoch = self.store.cache_epoch().await?;
        self.cache_sync.observe(epoch);
        Ok(())
    }

    /// Drops the organisation and grant caches of this server (after a change made here).
    pub(crate) fn drop_caches(&self) {
        self.cache_sync.bump();
    }
}
