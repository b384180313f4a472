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

mod assessment;
mod step;

use std::sync::Arc;

use chrono::Utc;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::engine::{EngineState, ExamDesign};
use crate::error::{AppError, AppResult};
use crate::irt::{ItemParams, StopReason};
use crate::storage::bank_cache::{Bank, BankCache, BankItem};
use crate::storage::db::DbPool;
use crate::storage::events::{EventBus, ThetaEvent};
use crate::storage::exposure::ExposureTracker;
use crate::storage::queries::{self, AttemptRow, ExamSessionRow};
use crate::storage::session_cache::{SessionCache, SessionFacts};
use crate::storage::state_store::StateStore;

pub use crate::design::MAX_EXAM_ITEMS;
pub use assessment::{AssessmentStatus, AssessmentView, Feedback, NewAssessment};
/// Largest bank accepted in one request.
pub const MAX_BANK_ITEMS: usize = 100_000;
/// Longest accepted string field (names, ids, keys, responses), in bytes.
pub const MAX_TEXT_LEN: usize = 10_000;

/// Status of an exam session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExamStatus {
    /// Taking answers.
    Active,
    /// Finished by its stopping rule.
    Completed,
    /// Given up (set by operators; no answer is taken).
    Abandoned,
}

impl ExamStatus {
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Completed => "COMPLETED",
            Self::Abandoned => "ABANDONED",
        }
    }

    /// Parses the database spelling.
    pub fn parse(raw: &str) -> AppResult<Self> {
        match raw {
            "ACTIVE" => Ok(Self::Active),
            "COMPLETED" => Ok(Self::Completed),
            "ABANDONED" => Ok(Self::Abandoned),
            other => Err(AppError::internal("unknown exam status", other)),
        }
    }
}

/// Where a summary's numbers came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateSource {
    /// The Redis engine state.
    Cache,
    /// Postgres (the cache was missing, stale, unreadable or down).
    Database,
}

/// The response model of an item, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ItemModel {
    /// 4PL right/wrong.
    #[default]
    Dichotomous,
    /// Graded response model.
    Grm,
    /// Generalized partial credit model.
    Gpcm,
}

impl ItemModel {
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dichotomous => "DICHOTOMOUS",
            Self::Grm => "GRM",
            Self::Gpcm => "GPCM",
        }
    }
}

/// One item of a new bank, before validation.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewBankItem {
    /// The author's id, unique in the bank.
    pub external_id: String,
    /// Discrimination.
    #[serde(default = "one")]
    pub a: f64,
    /// Difficulty.
    pub b: f64,
    /// Lower asymptote (guessing).
    #[serde(default)]
    pub c: f64,
    /// Upper asymptote (slipping).
    #[serde(default = "one")]
    pub d: f64,
    /// Content area.
    #[serde(default)]
    pub content_area: Option<String>,
    /// What the student sees.
    pub content: serde_json::Value,
    /// The correct response.
    pub answer_key: String,
    /// The response model.
    #[serde(default)]
    pub model: ItemModel,
    /// Polytomous thresholds.
    #[serde(default)]
    pub thresholds: Option<Vec<f64>>,
    /// Polytomous scoring: response → category score.
    #[serde(default)]
    pub scoring: Option<serde_json::Value>,
    /// Enemy group.
    #[serde(default)]
    pub enemy_group: Option<String>,
}

fn one() -> f64 {
    1.0
}

/// A new bank, before validation.
#[derive(Clone, Debug)]
pub struct NewBank {
    /// Its name.
    pub name: String,
    /// The scaling constant D (1.0, or 1.702 to approximate the normal ogive).
    pub scaling_constant: f64,
    /// Its items.
    pub items: Vec<NewBankItem>,
}

/// A bank as clients see it.
#[derive(Clone, Debug)]
pub struct BankInfo {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Number of items.
    pub item_count: i64,
    /// The scaling constant D.
    pub scaling_constant: f64,
}

/// An item as presented to the student: no key, no parameters.
#[derive(Clone, Debug)]
pub struct PresentedItem {
    /// The exam it is presented in.
    pub exam_session_id: i64,
    /// Item id (to send back with the answer).
    pub id: i64,
    /// 1-based position in the exam.
    pub position: i32,
    /// What the student sees.
    pub content: serde_json::Value,
    /// Content area.
    pub content_area: Option<String>,
}

impl PresentedItem {
    fn new(exam_session_id: i64, item: &BankItem, position: i32) -> Self {
        Self {
            exam_session_id,
            id: item.id,
            position,
            content: item.content.clone(),
            content_area: item.content_area.clone(),
        }
    }
}

/// An exam session as clients see it.
#[derive(Clone, Debug)]
pub struct ExamView {
    /// The row; its `config` is not kept (`Null`): the parsed design is in `design`.
    pub row: ExamSessionRow,
    /// Its status.
    pub status: ExamStatus,
    /// What the student sees of the estimates.
    pub feedback: Feedback,
    /// Its design.
    pub design: ExamDesign,
    /// The item presented now, for a client that resumes.
    pub current_item: Option<PresentedItem>,
}

/// What `startExam` returns.
#[derive(Clone, Debug)]
pub struct Started {
    /// The new session, or the student's running one.
    pub exam: ExamView,
    /// Whether this is the student's running exam rather than a new one.
    pub resumed: bool,
}

/// What `submitAnswer` returns (also for a repeated submission).
#[derive(Clone, Debug)]
pub struct Answered {
    /// Theta after the answer.
    pub theta: f64,
    /// Its standard error.
    pub standard_error: f64,
    /// Answers recorded up to and including this one.
    pub items_completed: i32,
    /// Whether this answer completed the exam.
    pub completed: bool,
    /// The item presented after this answer.
    pub next_item: Option<PresentedItem>,
    /// Why the exam stopped, when it did.
    pub stop_reason: Option<StopReason>,
    /// The session now.
    pub exam: ExamView,
    /// Whether this call recorded the answer (false: it replayed a recorded one).
    pub recorded: bool,
}

/// What `engineSummary` returns.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The exam.
    pub exam_session_id: i64,
    /// Current theta.
    pub theta: f64,
    /// Its standard error.
    pub standard_error: f64,
    /// Answers recorded.
    pub items_completed: i32,
    /// Maximum length.
    pub max_items: i32,
    /// Status.
    pub status: ExamStatus,
    /// Where the numbers came from.
    pub source: StateSource,
    /// Remaining TTL of the cached state, when it came from the cache.
    pub ttl_seconds: Option<i64>,
    /// What the student sees of the estimates.
    pub feedback: Feedback,
}

/// The exam flow, with everything it needs.
#[derive(Clone)]
pub struct ExamService {
    db: DbPool,
    states: StateStore,
    events: EventBus,
    banks: BankCache,
    sessions: SessionCache,
    exposure: ExposureTracker,
    /// Engine steps running on blocking threads (heavy designs), at most one per core.
    heavy_steps: Arc<tokio::sync::Semaphore>,
}

impl ExamService {
    /// Assembles the service.
    /// `session_cache_capacity`: exams whose fixed facts are kept in memory.
    pub fn new(
        db: DbPool,
        states: StateStore,
        events: EventBus,
        session_cache_capacity: usize,
    ) -> Self {
        let exposure = ExposureTracker::new(states.redis().clone(), states.prefix());
        Self {
            db,
            states,
            events,
            banks: BankCache::default(),
            sessions: SessionCache::new(session_cache_capacity),
            exposure,
            heavy_steps: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
            )),
        }
    }

    /// The Postgres pool.
    pub fn db(&self) -> &DbPool {
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

    /// Validates and stores a new bank with all its items, atomically.
    pub async fn create_item_bank(&self, bank: NewBank) -> AppResult<BankInfo> {
        create_item_bank(&self.db, bank).await
    }

    /// A bank's public description.
    pub async fn item_bank(&self, bank_id: i64) -> AppResult<BankInfo> {
        let mut conn = self.db.get().await?;
        let bank = self.bank(&mut conn, bank_id).await?;
        Ok(bank_info(&bank))
    }

    /// Every bank's public description.
    pub async fn item_banks(&self) -> AppResult<Vec<BankInfo>> {
        let mut conn = self.db.get().await?;
        let rows = queries::list_item_banks(&mut conn).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let item_count = queries::count_items(&mut conn, row.id).await?;
            out.push(BankInfo {
                id: row.id,
                name: row.name,
                item_count,
                scaling_constant: row.scaling_constant,
            });
        }
        Ok(out)
    }

    async fn bank(&self, conn: &mut AsyncPgConnection, bank_id: i64) -> AppResult<Arc<Bank>> {
        self.banks
            .get(conn, bank_id)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("item bank {bank_id} does not exist")))
    }

    /// Records an answer (or replays a recorded one) and moves the exam on.
    pub async fn submit_answer(
        &self,
        caller: &Caller,
        exam_session_id: i64,
        item_id: i64,
        response: &str,
    ) -> AppResult<Answered> {
        if response.len() > MAX_TEXT_LEN {
            return Err(AppError::bad_input(format!(
                "the response is longer than {MAX_TEXT_LEN} bytes"
            )));
        }
        check_text(response, "response")?;
        // The cached state is read before Postgres is touched. When it is there and this
        // instance knows the session, the answer is one conditional statement (no lock
        // held across round trips); otherwise, or when that statement finds the session
        // elsewhere than the state said, the locked transaction below decides.
        let cached = self.cached_state(exam_session_id).await;
        // A pooled connection may have died with a Postgres restart: the statement then
        // fails before anything is committed (or, if the commit itself was cut, the retry
        // finds the attempt and replays it), so one retry on a fresh connection is safe.
        let mut retried = false;
        let outcome = loop {
            let mut conn = self.db.get().await?;
            let fast = self
                .answer_from_cache(
                    &mut conn,
                    caller,
                    exam_session_id,
                    item_id,
                    response,
                    cached.as_ref(),
                )
                .await;
            let result = match fast {
                Ok(Some(new)) => Ok(Recorded::New(Box::new(new))),
                Ok(None) => {
                    conn.transaction(async |conn| {
                        self.record_answer(
                            conn,
                            caller,
                            exam_session_id,
                            item_id,
                            response,
                            cached.as_ref(),
                        )
                        .await
                    })
                    .await
                }
                Err(e) => Err(e),
            };
            match result {
                Err(AppError::Unavailable(_)) if !retried => retried = true,
                other => break other?,
            }
        };
        match outcome {
            Recorded::New(new) => {
                let NewAnswer {
                    answered,
                    state,
                    event,
                    exposure,
                } = *new;
                if let Some((bank_id, selected)) = exposure {
                    self.exposure.record_selections(bank_id, &selected).await;
                }
                if answered.completed {
                    if let Err(e) = self.states.complete(exam_session_id, &event).await {
                        tracing::warn!(exam.id = exam_session_id, error = %e, "cannot drop the completed exam's state");
                    }
                } else {
                    self.save_state(exam_session_id, &state, &event).await;
                }
                Ok(answered)
            }
            Recorded::Replay(answered) => Ok(*answered),
        }
    }

    /// The answer path without a lock: the history comes from the cached engine state and
    /// the session's fixed facts from this instance's memory, and the write only happens
    /// if Postgres still has the session where that state left it (active, as many answers,
    /// this item presented). `None` when anything is missing or doubtful (no state, a
    /// repeated or unknown item, an unscorable response, the session moved on): the locked
    /// path then gives the answer or the precise error.
    async fn answer_from_cache(
        &self,
        conn: &mut AsyncPgConnection,
        caller: &Caller,
        exam_session_id: i64,
        item_id: i64,
        response: &str,
        cached: Option<&EngineState>,
    ) -> AppResult<Option<NewAnswer>> {
        let (Some(state), Some(facts)) = (cached, self.sessions.get(exam_session_id)) else {
            return Ok(None);
        };
        may_act(caller, &facts.student_id, exam_session_id)?;
        if state.item_ids.contains(&item_id) {
            return Ok(None);
        }
        let bank = self.bank(conn, facts.item_bank_id).await?;
        let Some(index) = bank.index_of(item_id) else {
            return Ok(None);
        };
        let Ok(score) = bank.items[index].score(response) else {
            return Ok(None);
        };
        let Some((administered, scores)) = history_from_state(state, &bank) else {
            return Ok(None);
        };
        let before = Before {
            administered,
            scores,
            theta: state.theta,
        };
        let answer = Answer {
            index,
            score,
            response,
        };
        self.write_answer(conn, exam_session_id, &facts, &bank, before, answer)
            .await
    }

    /// The answer path under the row lock (inside the caller's transaction): every check,
    /// in order, then the same write as [`Self::answer_from_cache`].
    async fn record_answer(
        &self,
        conn: &mut AsyncPgConnection,
        caller: &Caller,
        exam_session_id: i64,
        item_id: i64,
        response: &str,
        cached: Option<&EngineState>,
    ) -> AppResult<Recorded> {
        let row = queries::lock_exam_session(conn, exam_session_id)
            .await?
            .ok_or_else(|| exam_not_found(exam_session_id))?;
        may_act(caller, &row.student_id, exam_session_id)?;
        let bank = self.bank(conn, row.item_bank_id).await?;
        let status = ExamStatus::parse(&row.status)?;
        // The presented item of an active exam has no answer yet by construction: only any
        // other item can be a repeat, so only then is it worth a look for the attempt.
        let presented = status == ExamStatus::Active && row.current_item_id == Some(item_id);
        if !presented
            && let Some(attempt) = queries::find_attempt(conn, exam_session_id, item_id).await?
        {
            if attempt.response != response {
                return Err(AppError::AlreadyAnswered);
            }
            let design = design_of(&row)?;
            let exam = self.view(row, design, &bank)?;
            return Ok(Recorded::Replay(Box::new(replay(&attempt, exam, &bank))));
        }
        if status != ExamStatus::Active {
            return Err(AppError::ExamNotActive(status.as_str().into()));
        }
        if row.current_item_id != Some(item_id) {
            return Err(AppError::ItemNotPresented);
        }
        let index = bank
            .index_of(item_id)
            .ok_or_else(|| AppError::internal("presented item is not in the bank", item_id))?;
        let score = bank.items[index]
            .score(response)
            .map_err(|e| AppError::bad_input(e.to_string()))?;
        let (administered, scores) = match cached
            .filter(|s| s.items_completed as i32 == row.items_completed)
            .and_then(|s| history_from_state(s, &bank))
        {
            Some(history) => history,
            None => {
                let attempts = queries::list_attempts(conn, exam_session_id).await?;
                history_from_attempts(&attempts, &bank)?
            }
        };
        let facts = self.facts_of(&row)?;
        let before = Before {
            administered,
            scores,
            theta: row.theta,
        };
        let answer = Answer {
            index,
            score,
            response,
        };
        self.write_answer(conn, exam_session_id, &facts, &bank, before, answer)
            .await?
            .map(|new| Recorded::New(Box::new(new)))
            .ok_or_else(|| AppError::internal("the locked session moved on", exam_session_id))
    }

    /// Scores nothing and checks nothing: decides what follows `answer` given the history,
    /// writes it with [`queries::record_attempt`] and returns what follows the commit, or
    /// `None` when Postgres did not have the session where `before` says (nothing written).
    async fn write_answer(
        &self,
        conn: &mut AsyncPgConnection,
        exam_session_id: i64,
        facts: &SessionFacts,
        bank: &Arc<Bank>,
        before: Before,
        answer: Answer<'_>,
    ) -> AppResult<Option<NewAnswer>> {
        let design = &facts.design;
        let item = &bank.items[answer.index];
        let Before {
            mut administered,
            mut scores,
            theta: previous_theta,
        } = before;
        // The write is conditional on this many answers: the history the decision uses.
        let items_completed = administered.len() as i32 + 1;
        administered.push(answer.index);
        scores.push(answer.score);
        let now = Utc::now();
        let counts = self.exposure_counts(conn, design, bank).await?;
        let history = step::StepHistory {
            administered: &administered,
            scores: &scores,
            previous_theta,
            elapsed_seconds: (now - facts.created_at).num_milliseconds().max(0) as f64 / 1000.0,
        };
        let decision = self.step(conn, design, bank, &history, counts).await?;
        ensure_finite(&decision.estimate)?;
        let next_item_id = decision.next_item.map(|i| bank.items[i].id);
        let completed = next_item_id.is_none();
        let stop_reason = decision.stop.filter(|_| completed);
        let progress = queries::SessionProgress {
            status: if completed { "COMPLETED" } else { "ACTIVE" },
            theta: decision.estimate.theta,
            standard_error: decision.estimate.standard_error,
            items_completed,
            current_item_id: next_item_id,
            stop_reason: stop_reason.map(stop_reason_str),
            updated_at: now,
            completed_at: completed.then_some(now),
        };
        let recorded = queries::record_attempt(
            conn,
            &queries::NewAttempt {
                exam_session_id,
                item_id: item.id,
                position: items_completed,
                response: answer.response,
                correct: answer.score + 1 == item.categories,
                score: answer.score as i32,
                theta: decision.estimate.theta,
                standard_error: decision.estimate.standard_error,
                next_item_id,
                completed,
            },
            &progress,
        )
        .await?;
        let Some(answered_at) = recorded else {
            return Ok(None);
        };
        let row = ExamSessionRow {
            id: exam_session_id,
            student_id: facts.student_id.clone(),
            item_bank_id: facts.item_bank_id,
            status: progress.status.to_owned(),
            config: serde_json::Value::Null,
            theta: progress.theta,
            standard_error: progress.standard_error,
            items_completed,
            current_item_id: next_item_id,
            stop_reason: progress.stop_reason.map(str::to_owned),
            created_at: facts.created_at,
            updated_at: now,
            completed_at: progress.completed_at,
            assessment_id: facts.assessment_id,
            attempt_number: facts.attempt_number,
            feedback: facts.feedback.as_str().to_owned(),
        };
        let exposure = design.exposure.is_some().then(|| {
            (
                bank.id,
                decision
                    .proposed
                    .iter()
                    .map(|&i| bank.items[i].id)
                    .collect(),
            )
        });
        let exam = self.view(row, design.clone(), bank)?;
        let state = state_of(&exam, bank, &administered, &scores);
        let event = ThetaEvent {
            exam_session_id,
            theta: decision.estimate.theta,
            standard_error: decision.estimate.standard_error,
            items_completed,
            completed,
            at: answered_at,
        };
        let event = serde_json::to_string(&event)
            .map_err(|e| AppError::internal("cannot serialize an event", e))?;
        Ok(Some(NewAnswer {
            answered: Answered {
                theta: decision.estimate.theta,
                standard_error: decision.estimate.standard_error,
                items_completed,
                completed,
                next_item: exam.current_item.clone(),
                stop_reason,
                exam,
                recorded: true,
            },
            state,
            event,
            exposure,
        }))
    }

    /// The fixed facts of a session, from this instance's cache or else from its row
    /// (and then kept).
    fn facts_of(&self, row: &ExamSessionRow) -> AppResult<Arc<SessionFacts>> {
        if let Some(facts) = self.sessions.get(row.id) {
            return Ok(facts);
        }
        let facts = Arc::new(SessionFacts::new(row, design_of(row)?));
        self.sessions.insert(row.id, Arc::clone(&facts));
        Ok(facts)
    }

    /// One exam session, for its owner or staff.
    pub async fn exam_session(&self, caller: &Caller, exam_session_id: i64) -> AppResult<ExamView> {
        let mut conn = self.db.get().await?;
        let row = queries::find_exam_session(&mut conn, exam_session_id)
            .await?
            .ok_or_else(|| exam_not_found(exam_session_id))?;
        may_read(caller, &row.student_id, row.id)?;
        let bank = self.bank(&mut conn, row.item_bank_id).await?;
        let design = design_of(&row)?;
        self.view(row, design, &bank)
    }

    /// Checks that the caller may watch an exam (it exists and is theirs, or they are
    /// staff); returns the exam's feedback policy.
    pub async fn authorize_exam(
        &self,
        caller: &Caller,
        exam_session_id: i64,
    ) -> AppResult<Feedback> {
        let mut conn = self.db.get().await?;
        let row = queries::find_exam_session(&mut conn, exam_session_id)
            .await?
            .ok_or_else(|| exam_not_found(exam_session_id))?;
        may_read(caller, &row.student_id, row.id)?;
        Feedback::parse(&row.feedback)
    }

    /// The engine's numbers for one exam, from the cache when it holds the exam's current
    /// state, else from Postgres (and then the cache is refilled for an active exam).
    pub async fn engine_summary(
        &self,
        caller: &Caller,
        exam_session_id: i64,
    ) -> AppResult<Summary> {
        let cached = async {
            let (json, ttl) = self.states.load_with_ttl(exam_session_id).await.ok()??;
            let state = parse_state(exam_session_id, &json)?;
            Some((state, ttl))
        };
        let mut conn = self.db.get().await?;
        let (cached, row) = tokio::join!(
            cached,
            queries::find_exam_session(&mut conn, exam_session_id)
        );
        let row = row?.ok_or_else(|| exam_not_found(exam_session_id))?;
        may_read(caller, &row.student_id, row.id)?;
        let status = ExamStatus::parse(&row.status)?;
        let feedback = Feedback::parse(&row.feedback)?;
        let design = design_of(&row)?;
        if let Some((state, ttl)) = cached
            && status == ExamStatus::Active
            && state.items_completed as i32 == row.items_completed
        {
            return Ok(Summary {
                exam_session_id,
                theta: state.theta,
                standard_error: state.standard_error,
                items_completed: state.items_completed as i32,
                max_items: state.max_items as i32,
                status,
                source: StateSource::Cache,
                ttl_seconds: Some(ttl).filter(|t| *t >= 0),
                feedback,
            });
        }
        if status == ExamStatus::Active {
            // Refill the cache so the next answer does not read the attempts again.
            let state = self.rebuild_state(&mut conn, &row, design.clone()).await?;
            drop(conn);
            self.save_state(exam_session_id, &state, "").await;
        }
        Ok(Summary {
            exam_session_id,
            theta: row.theta,
            standard_error: row.standard_error,
            items_completed: row.items_completed,
            max_items: design.stopping.max_items as i32,
            status,
            source: StateSource::Database,
            ttl_seconds: None,
            feedback,
        })
    }

    /// Ids of the exams whose state is live in Redis.
    pub async fn active_sessions(&self) -> AppResult<Vec<i64>> {
        self.states
            .active_sessions()
            .await
            .map_err(redis_unavailable)
    }

    /// Adds seconds to an active exam's state TTL (rebuilding the state first when Redis
    /// lost it); returns the new TTL.
    pub async fn extend_ttl(
        &self,
        exam_session_id: i64,
        additional_seconds: i32,
    ) -> AppResult<i64> {
        if !(1..=7 * 24 * 3600).contains(&additional_seconds) {
            return Err(AppError::bad_input(
                "additionalSeconds must be between 1 and 604800 (one week)",
            ));
        }
        let mut conn = self.db.get().await?;
        let row = queries::find_exam_session(&mut conn, exam_session_id)
            .await?
            .ok_or_else(|| exam_not_found(exam_session_id))?;
        let status = ExamStatus::parse(&row.status)?;
        if status != ExamStatus::Active {
            return Err(AppError::ExamNotActive(status.as_str().into()));
        }
        let additional = i64::from(additional_seconds);
        if let Some(ttl) = self
            .states
            .extend_ttl(exam_session_id, additional)
            .await
            .map_err(redis_unavailable)?
        {
            return Ok(ttl);
        }
        // No state in Redis: rebuild it, then extend.
        let state = self
            .rebuild_state(&mut conn, &row, design_of(&row)?)
            .await?;
        drop(conn);
        let json = state_json(&state)?;
        self.states
            .save(exam_session_id, &json, i64::from(state.items_completed), "")
            .await
            .map_err(redis_unavailable)?;
        self.states
            .extend_ttl(exam_session_id, additional)
            .await
            .map_err(redis_unavailable)?
            .ok_or_else(|| AppError::Unavailable("the engine state could not be written".into()))
    }

    /// Gives up an active exam (admin): it takes no answer after this, its attempts stay,
    /// its engine state is dropped. An answer racing with it either lands first or gets
    /// `EXAM_NOT_ACTIVE` (both take the row lock).
    pub async fn abandon_exam(&self, exam_session_id: i64) -> AppResult<ExamView> {
        let mut conn = self.db.get().await?;
        let Some(row) =
            queries::abandon_exam_session(&mut conn, exam_session_id, Utc::now()).await?
        else {
            let row = queries::find_exam_session(&mut conn, exam_session_id)
                .await?
                .ok_or_else(|| exam_not_found(exam_session_id))?;
            return Err(AppError::ExamNotActive(row.status));
        };
        let bank = self.bank(&mut conn, row.item_bank_id).await?;
        drop(conn);
        tracing::info!(exam.id = exam_session_id, "exam abandoned");
        // The completion marker also keeps a late state write from bringing it back.
        if let Err(e) = self.states.complete(exam_session_id, "").await {
            tracing::warn!(exam.id = exam_session_id, error = %e, "cannot drop the abandoned exam's state");
        }
        let design = design_of(&row)?;
        self.view(row, design, &bank)
    }

    /// Deletes every engine state; returns how many. Exams go on from Postgres.
    pub async fn clear_engine_cache(&self) -> AppResult<i64> {
        let deleted = self.states.clear().await.map_err(redis_unavailable)?;
        tracing::info!(deleted, "engine cache cleared");
        Ok(deleted)
    }

    /// The engine state of an exam, rebuilt from its attempts in Postgres.
    async fn rebuild_state(
        &self,
        conn: &mut AsyncPgConnection,
        row: &ExamSessionRow,
        design: ExamDesign,
    ) -> AppResult<EngineState> {
        let bank = self.bank(conn, row.item_bank_id).await?;
        let attempts = queries::list_attempts(conn, row.id).await?;
        let (administered, scores) = history_from_attempts(&attempts, &bank)?;
        let exam = self.view(row.clone(), design, &bank)?;
        Ok(state_of(&exam, &bank, &administered, &scores))
    }

    async fn cached_state(&self, exam_session_id: i64) -> Option<EngineState> {
        match self.states.load(exam_session_id).await {
            Ok(Some(json)) => parse_state(exam_session_id, &json),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(exam.id = exam_session_id, error = %e, "engine state unavailable");
                None
            }
        }
    }

    async fn save_state(&self, exam_session_id: i64, state: &EngineState, event: &str) {
        let json = match state_json(state) {
            Ok(json) => json,
            Err(_) => return,
        };
        if let Err(e) = self
            .states
            .save(
                exam_session_id,
                &json,
                i64::from(state.items_completed),
                event,
            )
            .await
        {
            tracing::warn!(exam.id = exam_session_id, error = %e, "engine state not cached");
        }
    }

    fn view(
        &self,
        mut row: ExamSessionRow,
        design: ExamDesign,
        bank: &Bank,
    ) -> AppResult<ExamView> {
        row.config = serde_json::Value::Null;
        let status = ExamStatus::parse(&row.status)?;
        let feedback = Feedback::parse(&row.feedback)?;
        let current_item = match row.current_item_id {
            Some(id) => {
                let index = bank
                    .index_of(id)
                    .ok_or_else(|| AppError::internal("current item is not in the bank", id))?;
                Some(PresentedItem::new(
                    row.id,
                    &bank.items[index],
                    row.items_completed + 1,
                ))
            }
            None => None,
        };
        Ok(ExamView {
            row,
            status,
            feedback,
            design,
            current_item,
        })
    }
}

/// Validates and stores a new bank with all its items, atomically.
pub async fn create_item_bank(db: &DbPool, bank: NewBank) -> AppResult<BankInfo> {
    let new_items = validate_bank(&bank)?;
    let mut conn = db.get().await?;
    let new_bank = queries::NewItemBank {
        name: bank.name.trim(),
        scaling_constant: bank.scaling_constant,
    };
    let (row, count) = conn
        .transaction(async |conn| queries::insert_item_bank(conn, &new_bank, new_items).await)
        .await?;
    tracing::info!(bank.id = row.id, items = count, "item bank created");
    Ok(BankInfo {
        id: row.id,
        name: row.name,
        item_count: count as i64,
        scaling_constant: row.scaling_constant,
    })
}

/// A newly recorded answer, with what must follow the commit.
struct NewAnswer {
    /// The result for the client.
    answered: Answered,
    /// The engine state to cache.
    state: EngineState,
    /// The theta update to publish.
    event: String,
    /// Bank and items selected, for the exposure counts (the presented item was counted
    /// when it was reserved).
    exposure: Option<(i64, Vec<i64>)>,
}

/// Where a session stood when an answer came: the answers so far (bank indices and
/// category scores, in order) and theta after them.
struct Before {
    administered: Vec<usize>,
    scores: Vec<u32>,
    theta: f64,
}

/// An answer to a bank item, scored.
struct Answer<'a> {
    index: usize,
    score: u32,
    response: &'a str,
}

/// What the answer transaction produced.
enum Recorded {
    /// A new attempt, with the state to cache and the event to publish.
    New(Box<NewAnswer>),
    /// The same answer again: the recorded result.
    Replay(Box<Answered>),
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

fn redis_unavailable(e: crate::storage::redis_pool::RedisUnavailable) -> AppError {
    tracing::warn!(error = %e, "redis unavailable");
    AppError::Unavailable("the engine-state cache (Redis) is unavailable".into())
}

fn stop_reason_str(reason: StopReason) -> &'static str {
    match reason {
        StopReason::MaxItems => "MAX_ITEMS",
        StopReason::SeTarget => "SE_TARGET",
        StopReason::Classification => "CLASSIFICATION",
        StopReason::MinInformation => "MIN_INFORMATION",
        StopReason::MaxDuration => "MAX_DURATION",
        StopReason::BankExhausted => "BANK_EXHAUSTED",
    }
}

/// Parses a stored stop reason.
pub fn parse_stop_reason(raw: &str) -> Option<StopReason> {
    match raw {
        "MAX_ITEMS" => Some(StopReason::MaxItems),
        "SE_TARGET" => Some(StopReason::SeTarget),
        "CLASSIFICATION" => Some(StopReason::Classification),
        "MIN_INFORMATION" => Some(StopReason::MinInformation),
        "MAX_DURATION" => Some(StopReason::MaxDuration),
        "BANK_EXHAUSTED" => Some(StopReason::BankExhausted),
        _ => None,
    }
}

fn bank_info(bank: &Bank) -> BankInfo {
    BankInfo {
        id: bank.id,
        name: bank.name.clone(),
        item_count: bank.items.len() as i64,
        scaling_constant: bank.scaling_constant,
    }
}

fn design_of(row: &ExamSessionRow) -> AppResult<ExamDesign> {
    // Deserialized from the borrowed value: no copy of the JSON tree on every answer.
    ExamDesign::deserialize(&row.config)
        .map_err(|e| AppError::internal("stored exam design is unreadable", e))
}

fn parse_state(exam_session_id: i64, json: &str) -> Option<EngineState> {
    match serde_json::from_str::<EngineState>(json) {
        Ok(state) => Some(state),
        Err(e) => {
            tracing::warn!(exam.id = exam_session_id, error = %e, "unreadable engine state ignored");
            None
        }
    }
}

fn state_json(state: &EngineState) -> AppResult<String> {
    serde_json::to_string(state).map_err(|e| AppError::internal("cannot serialize engine state", e))
}

/// The engine state of an exam after `administered`/`scores`.
fn state_of(exam: &ExamView, bank: &Bank, administered: &[usize], scores: &[u32]) -> EngineState {
    let polytomous = administered.iter().any(|&i| bank.items[i].categories != 2);
    EngineState {
        theta: exam.row.theta,
        standard_error: exam.row.standard_error,
        item_params_list: administered
            .iter()
            .map(|&i| bank.engine.items[i].clone())
            .collect(),
        responses: administered
            .iter()
            .zip(scores)
            .map(|(&i, &s)| s + 1 == bank.items[i].categories)
            .collect(),
        scores: polytomous.then(|| scores.to_vec()),
        max_items: exam.design.stopping.max_items as u32,
        items_completed: administered.len() as u32,
        item_ids: administered.iter().map(|&i| bank.items[i].id).collect(),
    }
}

fn history_from_state(state: &EngineState, bank: &Bank) -> Option<(Vec<usize>, Vec<u32>)> {
    let scores = state.category_scores();
    if state.item_ids.len() != scores.len() {
        return None;
    }
    let administered = state
        .item_ids
        .iter()
        .map(|&id| bank.index_of(id))
        .collect::<Option<Vec<usize>>>()?;
    Some((administered, scores))
}

fn history_from_attempts(
    attempts: &[AttemptRow],
    bank: &Bank,
) -> AppResult<(Vec<usize>, Vec<u32>)> {
    let administered = attempts
        .iter()
        .map(|a| {
            bank.index_of(a.item_id)
                .ok_or_else(|| AppError::internal("attempted item is not in the bank", a.item_id))
        })
        .collect::<AppResult<Vec<usize>>>()?;
    Ok((
        administered,
        attempts.iter().map(|a| a.score.max(0) as u32).collect(),
    ))
}

/// The recorded result of an attempt, for a repeated submission.
fn replay(attempt: &AttemptRow, exam: ExamView, bank: &Bank) -> Answered {
    let next_item = attempt
        .next_item_id
        .and_then(|id| bank.index_of(id))
        .map(|i| PresentedItem::new(exam.row.id, &bank.items[i], attempt.position + 1));
    let stop_reason = if attempt.completed {
        exam.row.stop_reason.as_deref().and_then(parse_stop_reason)
    } else {
        None
    };
    Answered {
        theta: attempt.theta,
        standard_error: attempt.standard_error,
        items_completed: attempt.position,
        completed: attempt.completed,
        next_item,
        stop_reason,
        exam,
        recorded: false,
    }
}

/// Refuses to store an estimate that is not a finite number (designs are validated so
/// this cannot happen; if it ever did, the answer fails whole instead of storing NaN).
pub(crate) fn ensure_finite(estimate: &crate::irt::Estimate) -> AppResult<()> {
    if estimate.theta.is_finite() && estimate.standard_error.is_finite() {
        Ok(())
    } else {
        Err(AppError::internal(
            "the engine produced a non-finite estimate; nothing was stored",
            format!("{estimate:?}"),
        ))
    }
}

/// Whether a JSON value holds a NUL character in a string or key (Postgres cannot store
/// it in `jsonb`).
fn json_has_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(json_has_nul),
        serde_json::Value::Object(map) => {
            map.iter().any(|(k, v)| k.contains('\0') || json_has_nul(v))
        }
        _ => false,
    }
}

/// Refuses text that Postgres cannot store (NUL characters), naming the field.
pub(crate) fn check_text(text: &str, field: &str) -> AppResult<()> {
    if text.contains('\0') {
        return Err(AppError::bad_input(format!(
            "{field} must not contain NUL characters"
        )));
    }
    Ok(())
}

/// Checks a new bank and returns its rows (bank id filled in on insert).
pub fn validate_bank(bank: &NewBank) -> AppResult<Vec<queries::NewItem>> {
    let name = bank.name.trim();
    if name.is_empty() || name.len() > 256 {
        return Err(AppError::bad_input("the bank name must be 1 to 256 bytes"));
    }
    check_text(name, "name")?;
    if !(bank.scaling_constant.is_finite()
        && bank.scaling_constant > 0.0
        && bank.scaling_constant <= 10.0)
    {
        return Err(AppError::bad_input("scalingConstant must be in (0, 10]"));
    }
    if bank.items.is_empty() || bank.items.len() > MAX_BANK_ITEMS {
        return Err(AppError::bad_input(format!(
            "a bank holds 1 to {MAX_BANK_ITEMS} items"
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(bank.items.len());
    bank.items
        .iter()
        .enumerate()
        .map(|(n, item)| {
            let at = |msg: &str| {
                AppError::bad_input(format!("items[{n}] ({:?}): {msg}", item.external_id))
            };
            if item.external_id.trim().is_empty() || item.external_id.len() > 256 {
                return Err(at("externalId must be 1 to 256 bytes"));
            }
            if !seen.insert(item.external_id.as_str()) {
                return Err(at("duplicate externalId"));
            }
            let texts = [
                Some(item.external_id.as_str()),
                Some(item.answer_key.as_str()),
                item.content_area.as_deref(),
                item.enemy_group.as_deref(),
            ];
            if texts.into_iter().flatten().any(|t| t.contains('\0'))
                || json_has_nul(&item.content)
                || item.scoring.as_ref().is_some_and(json_has_nul)
            {
                return Err(at("text must not contain NUL characters"));
            }
            check_item(item).map_err(|m| at(&m))?;
            if item.answer_key.is_empty() || item.answer_key.len() > MAX_TEXT_LEN {
                return Err(at("answerKey must be 1 to 10000 bytes"));
            }
            if item.content_area.as_ref().is_some_and(|c| c.len() > 256) {
                return Err(at("contentArea must be at most 256 bytes"));
            }
            if item
                .enemy_group
                .as_ref()
                .is_some_and(|c| c.is_empty() || c.len() > 256)
            {
                return Err(at("enemyGroup must be 1 to 256 bytes"));
            }
            if item.content.to_string().len() > 100_000 {
                return Err(at("content must be at most 100000 bytes of JSON"));
            }
            Ok(queries::NewItem {
                item_bank_id: 0,
                external_id: item.external_id.clone(),
                a: item.a,
                b: item.b,
                c: item.c,
                d: item.d,
                content_area: item.content_area.clone(),
                content: item.content.clone(),
                answer_key: item.answer_key.clone(),
                model: item.model.as_str().to_owned(),
                thresholds: item.thresholds.clone(),
                scoring: item.scoring.clone(),
                enemy_group: item.enemy_group.clone(),
            })
        })
        .collect()
}

/// Checks one item's model, parameters and scoring.
fn check_item(item: &NewBankItem) -> Result<(), String> {
    if !item.b.is_finite() || item.b.abs() > 10.0 {
        return Err("b must be in [-10, 10]".into());
    }
    if item.model == ItemModel::Dichotomous {
        if item.thresholds.is_some() || item.scoring.is_some() {
            return Err("thresholds and scoring are for GRM and GPCM items only".into());
        }
        return check_params(&ItemParams {
            a: item.a,
            b: item.b,
            c: item.c,
            d: item.d,
        });
    }
    let thresholds = item
        .thresholds
        .as_ref()
        .ok_or("a polytomous item needs thresholds")?;
    if !(item.a.is_finite() && item.a > 0.0 && item.a <= 10.0) {
        return Err("a must be in (0, 10]".into());
    }
    if thresholds.iter().any(|t| !t.is_finite() || t.abs() > 10.0) {
        return Err("thresholds must be in [-10, 10]".into());
    }
    let model = match item.model {
        ItemModel::Grm => crate::irt::Item::grm(item.a, thresholds.clone()),
        _ => crate::irt::Item::gpcm(item.a, thresholds.clone()),
    };
    model.validate_at(0).map_err(|e| match e {
        crate::irt::IrtError::Polytomous { reason, .. } => reason.to_owned(),
        other => other.to_string(),
    })?;
    if let Some(scoring) = &item.scoring {
        let map = scoring
            .as_object()
            .ok_or("scoring must be an object of response -> category score")?;
        if map.is_empty() || map.len() > 256 {
            return Err("scoring must have 1 to 256 responses".into());
        }
        let categories = thresholds.len() as u64 + 1;
        if map
            .iter()
            .any(|(k, v)| k.len() > MAX_TEXT_LEN || v.as_u64().is_none_or(|s| s >= categories))
        {
            return Err(format!(
                "scoring values must be category scores 0..{}",
                categories - 1
            ));
        }
    }
    Ok(())
}

/// Checks one item's 4PL parameters.
fn check_params(p: &ItemParams) -> Result<(), String> {
    if !(p.a.is_finite() && p.a > 0.0 && p.a <= 10.0) {
        return Err("a must be in (0, 10]".into());
    }
    if !(p.b.is_finite() && p.b.abs() <= 10.0) {
        return Err("b must be in [-10, 10]".into());
    }
    if !(p.c.is_finite() && (0.0..1.0).contains(&p.c)) {
        return Err("c must be in [0, 1)".into());
    }
    if !(p.d.is_finite() && p.d <= 1.0 && p.d > p.c) {
        return Err("d must be in (c, 1]".into());
    }
    Ok(())
}
