//! Single creates of one object that arrive at once are prepared together, then written each
//! on its own.
//!
//! Preparing a create is mostly its duplicate check: a few reads of the store (blind indexes,
//! strong values, the blocks of its match keys, its candidates) and the scoring of the
//! candidates. Checked one by one, 32 concurrent creates made 32 times those reads, each a hop
//! to a read connection; checked together (`Service::check_duplicates_many`), they make the
//! reads once. So a create joins its object's queue, and whichever waiting create gets the
//! object's turn prepares everything queued (up to `GROUP_MAX`) and hands each its result. One
//! group of an object is prepared at a time: creates that arrive meanwhile wait in the queue
//! and make the next group, while the group before is being written.
//!
//! Nothing else changes for a create: each is validated and authorised with its own caller,
//! checked against the stored records only (`Within::Alone`: a refusal never names another
//! caller's unwritten record), and written by its own caller as its own write. Two creates of
//! one group that look alike both pass the check, as two concurrent single creates always
//! could; the writer's guards (`MatchGuard`) then find the later one stale and it is checked
//! again, against the earlier one now stored.
//!
//! A create whose request goes away while it prepares a group drops that group: the others
//! find their answer channel closed and queue again (nothing of theirs was written).

use crate::duplicates::Within;
use crate::error::{ServiceError, ServiceResult};
use crate::records::{CreateInput, CreateOptions, PreparedWrite};
use crate::{RequestContext, Service};
use custodian_core::ErrorCode;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{Semaphore, oneshot};
use uuid::Uuid;

/// Most creates prepared in one group.
const GROUP_MAX: usize = 64;

type Prepared = ServiceResult<(Uuid, PreparedWrite)>;

/// A create waiting for its group.
struct Waiting {
    ctx: RequestContext,
    fields: Map<String, Value>,
    options: CreateOptions,
    reply: oneshot::Sender<Prepared>,
}

/// One object's queue, and its turn: whoever holds the permit prepares the next group.
struct Lane {
    queue: Mutex<Vec<Waiting>>,
    turn: Semaphore,
}

impl Lane {
    fn push(&self, waiting: Waiting) {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner).push(waiting);
    }

    /// The first `GROUP_MAX` creates waiting, taken from the queue.
    fn take(&self) -> Vec<Waiting> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let n = queue.len().min(GROUP_MAX);
        queue.drain(..n).collect()
    }
}

/// The lanes of the objects created so far (one per object name the schema knows), and how
/// many groups and creates they prepared.
#[derive(Default)]
pub(crate) struct CreateGroups {
    lanes: Mutex<HashMap<String, Arc<Lane>>>,
    groups: AtomicU64,
    creates: AtomicU64,
}

impl CreateGroups {
    fn lane(&self, object: &str) -> Arc<Lane> {
        let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
        lanes
            .entry(object.to_owned())
            .or_insert_with(|| Arc::new(Lane { queue: Mutex::new(Vec::new()), turn: Semaphore::new(1) }))
            .clone()
    }
}

impl Service {
    /// Groups of single creates prepared so far, and the creates in them (their ratio is the
    /// mean group size; the bench reports it).
    #[doc(hidden)]
    pub fn create_groups_prepared(&self) -> (u64, u64) {
        (self.create_groups.groups.load(Ordering::Relaxed), self.create_groups.creates.load(Ordering::Relaxed))
    }

    /// `prepare_create`, prepared together with the other creates of `object` waiting at the
    /// same time (see the module's documentation). An object the schema does not know is
    /// prepared alone (and refused there), so that no request makes a lane for any name.
    pub(crate) async fn prepare_create_grouped(
        &self,
        ctx: &RequestContext,
        object: &str,
        fields: &Map<String, Value>,
        options: &CreateOptions,
    ) -> Prepared {
        if self.object_def(object).is_err() {
            return self.prepare_create(ctx, object, fields, options).await;
        }
        let lane = self.create_groups.lane(object);
        loop {
            let (reply, mut answer) = oneshot::channel();
            lane.push(Waiting { ctx: ctx.clone(), fields: fields.clone(), options: options.clone(), reply });
            loop {
                tokio::select! {
                    biased;
                    got = &mut answer => match got {
                        Ok(prepared) => return prepared,
                        // Its group was dropped unanswered: queue again.
                        Err(_) => break,
                    },
                    turn = lane.turn.acquire() => {
                        let Ok(_turn) = turn else {
                            return Err(ServiceError::with_message(ErrorCode::Internal, "create queue closed"));
                        };
                        // A group prepared before this turn may have answered already.
                        match answer.try_recv() {
                            Ok(prepared) => return prepared,
                            Err(oneshot::error::TryRecvError::Closed) => break,
                            Err(oneshot::error::TryRecvError::Empty) => {}
                        }
                        let group = lane.take();
                        self.prepare_group(object, group).await;
                    }
                }
            }
        }
    }

    /// Prepares `group` as one batch of independent creates and answers each.
    async fn prepare_group(&self, object: &str, group: Vec<Waiting>) {
        if group.is_empty() {
            return;
        }
        self.create_groups.groups.fetch_add(1, Ordering::Relaxed);
        self.create_groups.creates.fetch_add(group.len() as u64, Ordering::Relaxed);
        let inputs: Vec<CreateInput<'_>> =
            group.iter().map(|w| CreateInput { ctx: &w.ctx, fields: &w.fields, options: &w.options }).collect();
        let mut prepared = self.prepare_creates_of(object, &inputs, &[], Within::Alone).await.into_iter();
        drop(inputs);
        for waiting in group {
            let answer = prepared
                .next()
                .unwrap_or_else(|| Err(ServiceError::with_message(ErrorCode::Internal, "create left unprepared")));
            // A caller that went away takes its answer with it.
            let _ = waiting.reply.send(answer);
        }
    }
}
