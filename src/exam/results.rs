//! Results: listings of exams (a student's own; staff's filtered, paginated view) and the
//! record of one exam's attempts. Postgres is the source of truth here, so these listings
//! see every exam whatever Redis holds (unlike `activeSessions`, the cache's view).
//!
//! Owns who may list what; must not decide what a student may see of an estimate (the
//! GraphQL boundary applies the feedback policy to what this returns).

use chrono::{DateTime, Utc};

use super::{ExamService, ExamStatus, ExamView, Feedback, design_of, readable_row};
use crate::auth::Caller;
use crate::error::{AppError, AppResult};
use crate::ids::ExamId;
use crate::storage::queries::{self, ExamFilter, ExamSessionRow};

/// Most exams `myExams` returns (newest first).
pub const MAX_MY_EXAMS: i64 = 200;
/// Largest page of `exams`.
pub const MAX_PAGE: i64 = 500;

/// One page of exams, newest first.
#[derive(Clone, Debug)]
pub struct ExamPage {
    /// The exams of the page.
    pub exams: Vec<ExamView>,
    /// Whether older exams follow.
    pub has_next: bool,
    /// Exams matching the filter, over all pages.
    pub total: i64,
}

/// One recorded answer, as the results show it (the GraphQL boundary hides what the
/// caller may not see).
#[derive(Clone, Debug)]
pub struct AttemptView {
    /// 1-based position in the exam.
    pub position: i32,
    /// The item answered.
    pub item_id: i64,
    /// The item's external id (staff only).
    pub external_id: Option<String>,
    /// The response as sent.
    pub response: String,
    /// Its category score.
    pub score: i32,
    /// Whether it got full credit.
    pub correct: bool,
    /// Theta after it.
    pub theta: f64,
    /// Its standard error.
    pub standard_error: f64,
    /// When it was recorded.
    pub answered_at: DateTime<Utc>,
    /// Seconds since the previous answer (or the start).
    pub seconds_on_item: f64,
    /// Whether it answered a seeded pretest item.
    pub pretest: bool,
}

/// An exam's attempts with what decides their visibility.
#[derive(Clone, Debug)]
pub struct ExamAttempts {
    /// The exam's feedback policy.
    pub feedback: Feedback,
    /// Its status now.
    pub status: ExamStatus,
    /// The attempts, in position order.
    pub attempts: Vec<AttemptView>,
}

impl ExamService {
    /// The caller's own exams, newest first.
    pub async fn my_exams(&self, caller: &Caller) -> AppResult<Vec<ExamView>> {
        let filter = ExamFilter {
            student_id: Some(caller.sub.clone()),
            ..ExamFilter::default()
        };
        self.db
            .run(async |conn| {
                let rows = queries::list_exams(conn, &filter, None, MAX_MY_EXAMS).await?;
                self.views(conn, rows).await
            })
            .await
    }

    /// A page of exams matching `filter`, newest first, older than the exam `after`
    /// (admin, proctor).
    pub async fn exams(
        &self,
        caller: &Caller,
        filter: &ExamFilter,
        first: i32,
        after: Option<i64>,
    ) -> AppResult<ExamPage> {
        caller.require_staff()?;
        if !(1..=MAX_PAGE).contains(&i64::from(first)) {
            return Err(AppError::bad_input(format!(
                "first must be between 1 and {MAX_PAGE}"
            )));
        }
        self.db
            .run(async |conn| {
                let mut rows =
                    queries::list_exams(conn, filter, after, i64::from(first) + 1).await?;
                let has_next = rows.len() > first as usize;
                rows.truncate(first as usize);
                let total = queries::count_exams(conn, filter).await?;
                let exams = self.views(conn, rows).await?;
                Ok(ExamPage {
                    exams,
                    has_next,
                    total,
                })
            })
            .await
    }

    /// The attempts of an exam the caller may read, in position order.
    pub async fn attempts(
        &self,
        caller: &Caller,
        exam_session_id: ExamId,
    ) -> AppResult<ExamAttempts> {
        let exam_session_id = exam_session_id.0;
        let (row, bank, rows) = self
            .db
            .run(async |conn| {
                let row = readable_row(conn, caller, exam_session_id).await?;
                let bank = self.bank(conn, row.item_bank_id, row.bank_revision).await?;
                let rows = queries::list_attempts(conn, exam_session_id).await?;
                Ok((row, bank, rows))
            })
            .await?;
        let mut previous = row.created_at;
        let attempts = rows
            .into_iter()
            .map(|a| {
                let seconds = (a.created_at - previous).num_milliseconds().max(0) as f64 / 1000.0;
                previous = a.created_at;
                AttemptView {
                    position: a.position,
                    item_id: a.item_id,
                    external_id: bank
                        .index_of(a.item_id)
                        .map(|i| bank.items[i].external_id.clone()),
                    response: a.response,
                    score: a.score,
                    correct: a.correct,
                    theta: a.theta,
                    standard_error: a.standard_error,
                    answered_at: a.created_at,
                    seconds_on_item: seconds,
                    pretest: a.pretest,
                }
            })
            .collect();
        Ok(ExamAttempts {
            feedback: row.feedback,
            status: row.status,
            attempts,
        })
    }

    async fn views(
        &self,
        conn: &mut diesel_async::AsyncPgConnection,
        rows: Vec<ExamSessionRow>,
    ) -> AppResult<Vec<ExamView>> {
        let mut views = Vec::with_capacity(rows.len());
        for row in rows {
            let bank = self.bank(conn, row.item_bank_id, row.bank_revision).await?;
            let design = design_of(&row)?;
            views.push(self.view(row, design, &bank)?);
        }
        Ok(views)
    }
}
