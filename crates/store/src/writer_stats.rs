//! What a store's writer has done since it started: the groups it committed, the jobs in them,
//! and the time it spent on them and on its upkeep. Both backends funnel record writes and
//! audit appends through one writer task (group commit), so its share of busy time is the
//! capacity signal of a server: a writer busy nearly all the time is the limit of writes and
//! audited reads; one often idle leaves the limit to the requests' own work before it.
//! Exported by `/metrics` and printed by `custodian bench`. `spawn_writer` starts the writer
//! itself, the same way for both.

use crate::{StoreError, StoreResult};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Starts a store's writer loop (`writer()`) on a thread of its own, named `name`, in a
/// current-thread runtime of its own; both backends run theirs so. On the server's runtime each
/// answer from the database waited for a worker busy with requests before the writer could
/// send its next statement or answer its jobs, and every write and audited read waits for the
/// writer. The thread ends when the loop does (when the store's last job sender is dropped).
pub fn spawn_writer<F>(name: &str, writer: impl FnOnce() -> F + Send + 'static) -> StoreResult<()>
where
    F: std::future::Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError::Internal(format!("writer runtime: {e}")))?;
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || runtime.block_on(writer()))
        .map_err(|e| StoreError::Internal(format!("writer thread: {e}")))?;
    Ok(())
}

/// Totals since the writer started (monotonic; a rate over two readings is the load). A group
/// is counted right after its jobs are answered, so a reading taken as soon as a write returns
/// may not count that write yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Group transactions run (committed or rolled back).
    pub groups: u64,
    /// Jobs in them: one per record write batch or audit append submitted.
    pub jobs: u64,
    /// Time spent running the groups, from taking the first job to answering the last.
    pub busy: Duration,
    /// Time spent on the writer's own upkeep between groups while jobs may wait (SQLite:
    /// copying the WAL into the database file, indexing audit events by record, refreshing
    /// the planner's statistics; PostgreSQL: none, its server does that).
    pub upkeep: Duration,
}

impl WriterStats {
    /// What happened between `earlier` and this reading.
    pub fn since(&self, earlier: &WriterStats) -> WriterStats {
        WriterStats {
            groups: self.groups.saturating_sub(earlier.groups),
            jobs: self.jobs.saturating_sub(earlier.jobs),
            busy: self.busy.saturating_sub(earlier.busy),
            upkeep: self.upkeep.saturating_sub(earlier.upkeep),
        }
    }
}

/// The writer's counters, updated by the writer task and read by anyone.
#[derive(Debug, Default)]
pub struct WriterMeter {
    groups: AtomicU64,
    jobs: AtomicU64,
    busy_nanos: AtomicU64,
    upkeep_nanos: AtomicU64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl WriterMeter {
    /// One group of `jobs` jobs, run in `busy`.
    pub fn group(&self, jobs: usize, busy: Duration) {
        self.groups.fetch_add(1, Ordering::Relaxed);
        self.jobs.fetch_add(jobs as u64, Ordering::Relaxed);
        self.busy_nanos.fetch_add(nanos(busy), Ordering::Relaxed);
    }

    /// Upkeep that took `took`.
    pub fn upkeep(&self, took: Duration) {
        self.upkeep_nanos.fetch_add(nanos(took), Ordering::Relaxed);
    }

    pub fn read(&self) -> WriterStats {
        WriterStats {
            groups: self.groups.load(Ordering::Relaxed),
            jobs: self.jobs.load(Ordering::Relaxed),
            busy: Duration::from_nanos(self.busy_nanos.load(Ordering::Relaxed)),
            upkeep: Duration::from_nanos(self.upkeep_nanos.load(Ordering::Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meter_sums_groups_and_times() {
        let meter = WriterMeter::default();
        let start = meter.read();
        assert_eq!(start, WriterStats::default());
        meter.group(3, Duration::from_millis(2));
        meter.group(1, Duration::from_micros(500));
        meter.upkeep(Duration::from_millis(7));
        let now = meter.read();
        assert_eq!(
            now,
            WriterStats { groups: 2, jobs: 4, busy: Duration::from_micros(2500), upkeep: Duration::from_millis(7) }
        );
        meter.group(5, Duration::from_millis(1));
        let later = meter.read().since(&now);
        assert_eq!(later, WriterStats { groups: 1, jobs: 5, busy: Duration::from_millis(1), upkeep: Duration::ZERO });
    }
}
