//! The exam flow: create banks, start exams, record answers, summarize, recover. Used the
//! same way by GraphQL, the CLI and the tests.
//!
//! The order of operations is the product's promise:
//! 1. an answer is recorded in Postgres by one statement that inserts the attempt and moves
//!    the exam on only if the exam is still active, at the expected number of answers, with
//!    this item presented. Usually that is the whole answer (one round trip): the history
//!    comes from the cached engine state, the exam's fixed facts from memory. When either is
//!    missing or the statement finds the exam elsewhere, a transaction locks the row, checks
//!    everything in order (replay, status, presented item, response) and writes the same way;
//! 2. only after the commit is the engine state written to Redis (or deleted when the exam
//!    completes) and the theta update published;
//! 3. Redis is a cache: a missing, stale or unreadable state, or Redis down, means the
//!    history is read back from the attempts, and no request fails because of Redis.

mod admin;
mod answer;
mod assessment;
mod bank;
pub mod calibration;
pub mod pretest;
mod results;
mod state;
mod step;
mod view;

use std::sync::Arc;

use diesel_async::AsyncPgConnection;

use crate::auth::Caller;
use crate::error::{AppError, AppResult};
use crate::metrics::Metrics;
use crate::storage::bank_cache::BankCache;
use crate::storage::db::Db;
use crate::storage::events::EventBus;
use crate::storage::exposure::ExposureTracker;
use crate::storage::queries::{self, ExamSessionRow};
use crate::storage::session_cache::SessionCache;
use crate::storage::state_store::StateStore;

pub use crate::design::MAX_EXAM_ITEMS;
pub use crate::storage::enums::{
    AssessmentStatus, ExamStatus, Feedback, ItemModel, ItemStatus, StopCode,
};
pub use assessment::{AssessmentView, NewAssessment};
pub use bank::{
    BankInfo, MAX_BANK_ITEMS, MAX_TEXT_LEN, NewBank, NewBankItem, create_item_bank, validate_bank,
};
pub use results::{AttemptView, ExamAttempts, ExamPage, MAX_MY_EXAMS, MAX_PAGE};
pub use view::{Answered, ExamView, PresentedItem, Started, Summary, Watched};
#[expect(
    unused_imports,
    reason = "each submodule takes what it needs from here"
)]
use {admin::*, answer::*, bank::*, state::*, view::*};

/// Where a summary's numbers came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateSource {
    /// The Redis engine state.
    Cache,
    /// Postgres (the cache was missing, stale, unreadable or down).
    Database,
}

/// The exam flow, with everything it needs.
#[derive(Clone)]
pub struct ExamService {
    db: Db,
    states: StateStore,
    events: EventBus,
    banks: BankCache,
    sessions: SessionCache,
    exposure: ExposureTracker,
    /// Pretest answer counts per bank, for seeding the least-answered items.
    pretest_counts: Arc<pretest::PretestCounts>,
    /// Engine steps running on blocking threads (heavy designs), at most one per core.
    heavy_steps: Arc<tokio::sync::Semaphore>,
    /// What the flow counts (answers, exams, steps, cache, exposure).
    metrics: Arc<Metrics>,
}

impl ExamService {
    /// Assembles the service.
    /// `session_cache_capacity`: exams whose fixed facts are kept in memory; `metrics`:
    /// this instance's metrics.
    pub fn new(
        db: Db,
        states: StateStore,
        events: EventBus,
        session_cache_capacity: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        let exposure = ExposureTracker::new(states.redis().clone(), states.prefix());
        Self {
            db,
            states,
            events,
            banks: BankCache::default(),
            sessions: SessionCache::new(session_cache_capacity),
            exposure,
            pretest_counts: Arc::default(),
            heavy_steps: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
            )),
            metrics,
        }
    }

    /// This instance's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The Postgres pool.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The Redis state store.
    pub fn states(&self) -> &StateStore {
        &self.states
    }

    /// The event bus.
    pub fn events(&self) -> &EventBus {
        &self.events
    }
}

/// The row of exam `id` when `caller` may read it (see [`may_read`]).
async fn readable_row(
    conn: &mut AsyncPgConnection,
    caller: &Caller,
    id: i64,
) -> AppResult<ExamSessionRow> {
    let row = queries::find_exam_session(conn, id)
        .await?
        .ok_or_else(|| exam_not_found(id))?;
    may_read(caller, &row.student_id, row.id)?;
    Ok(row)
}

fn exam_not_found(id: i64) -> AppError {
    AppError::NotFound(format!("exam session {id} does not exist"))
}

/// Whether `caller` may read exam `id` of `student_id`. A student gets the very error of
/// a missing exam for another student's, so ids reveal nothing about other exams.
fn may_read(caller: &Caller, student_id: &str, id: i64) -> AppResult<()> {
    caller
        .require_reader(student_id)
        .map_err(|e| hide_from_students(caller, e, id))
}

/// Whether `caller` may answer or change exam `id` of `student_id` (its student or an
/// admin); students get `NOT_FOUND` for other students' exams.
fn may_act(caller: &Caller, student_id: &str, id: i64) -> AppResult<()> {
    caller
        .require_owner(student_id)
        .map_err(|e| hide_from_students(caller, e, id))
}

fn hide_from_students(caller: &Caller, error: AppError, id: i64) -> AppError {
    if caller.role == crate::auth::Role::Student {
        exam_not_found(id)
    } else {
        error
    }
}
