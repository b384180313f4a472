//! What clients read: an exam as a view (with its presented item), sessions, engine
//! summaries (cache first, Postgres otherwise), and the start of a subscription.
//!
//! Owns read paths and view types; must not change an exam.

use super::*;
use crate::auth::Caller;
use crate::engine::ExamDesign;
use crate::error::{AppError, AppResult};
use crate::ids::{AssessmentId, ExamId};
use crate::irt::StopReason;
use crate::storage::bank_cache::{Bank, BankItem};
use crate::storage::events::{EventKind, ThetaEvent};
use crate::storage::queries::{self, ExamSessionRow};

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
    pub(super) fn new(exam_session_id: i64, item: &BankItem, position: i32) -> Self {
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

/// An exam as a new subscriber finds it.
#[derive(Clone, Debug)]
pub struct Watched {
    /// What the student sees of the estimates.
    pub feedback: Feedback,
    /// Its status now.
    pub status: ExamStatus,
    /// Its numbers now, as an event (`completed` when it has completed).
    pub now: ThetaEvent,
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

impl ExamService {
    /// One exam session, for its owner or staff.
    pub async fn exam_session(
        &self,
        caller: &Caller,
        exam_session_id: ExamId,
    ) -> AppResult<ExamView> {
        let exam_session_id = exam_session_id.0;
        let (row, bank) = self
            .db
            .run(async |conn| {
                let row = readable_row(conn, caller, exam_session_id).await?;
                let bank = self.bank(conn, row.item_bank_id, row.bank_revision).await?;
                Ok((row, bank))
            })
            .await?;
        let design = design_of(&row)?;
        self.view(row, design, &bank)
    }

    /// Starts watching an exam the caller may read (it exists and is theirs, or they are
    /// staff): its events from now on, and its state now (read after subscribing, so no
    /// event falls between the two).
    pub async fn watch_exam(
        &self,
        caller: &Caller,
        exam_session_id: ExamId,
    ) -> AppResult<(Watched, crate::storage::events::ExamEvents)> {
        let exam_session_id = exam_session_id.0;
        let events = self.events.subscribe(exam_session_id);
        let row = self
            .db
            .run(async |conn| readable_row(conn, caller, exam_session_id).await)
            .await?;
        let watched = Watched {
            feedback: row.feedback,
            status: row.status,
            now: ThetaEvent {
                kind: EventKind::Answered,
                exam_session_id,
                student_id: row.student_id,
                assessment_id: row.assessment_id,
                origin: 0,
                theta: row.theta,
                standard_error: row.standard_error,
                items_completed: row.items_completed,
                completed: row.status == ExamStatus::Completed,
                at: row.completed_at.unwrap_or(row.updated_at),
            },
        };
        Ok((watched, events))
    }

    /// Starts watching every exam of an assessment (staff only).
    pub async fn watch_assessment(
        &self,
        caller: &Caller,
        assessment_id: AssessmentId,
    ) -> AppResult<crate::storage::events::ExamEvents> {
        let assessment_id = assessment_id.0;
        caller.require_staff()?;
        let events = self.events.subscribe_assessment(assessment_id);
        self.assessment(AssessmentId(assessment_id)).await?;
        Ok(events)
    }

    /// The engine's numbers for one exam, from the cache when it holds the exam's current
    /// state, else from Postgres (and then the cache is refilled for an active exam).
    pub async fn engine_summary(
        &self,
        caller: &Caller,
        exam_session_id: ExamId,
    ) -> AppResult<Summary> {
        let exam_session_id = exam_session_id.0;
        let cached = async {
            let loaded = self.states.load_with_ttl(exam_session_id).await;
            let state = match &loaded {
                Ok(Some((json, ttl))) => {
                    parse_state(exam_session_id, json).map(|state| (state, *ttl))
                }
                _ => None,
            };
            self.metrics
                .cache
                .lookup(lookup_result(&loaded, state.is_some()));
            state
        };
        let (cached, row) = tokio::join!(
            cached,
            self.db
                .run(async |conn| Ok(queries::find_exam_session(conn, exam_session_id).await?))
        );
        let row = row?.ok_or_else(|| exam_not_found(exam_session_id))?;
        may_read(caller, &row.student_id, row.id)?;
        let (status, feedback) = (row.status, row.feedback);
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
            let state = self
                .db
                .run(async |conn| self.rebuild_state(conn, &row, design.clone()).await)
                .await?;
            self.save_state(exam_session_id, &state, None).await;
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

    pub(super) fn view(
        &self,
        mut row: ExamSessionRow,
        design: ExamDesign,
        bank: &Bank,
    ) -> AppResult<ExamView> {
        row.config = serde_json::Value::Null;
        let (status, feedback) = (row.status, row.feedback);
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
