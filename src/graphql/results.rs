//! The API types of results and live monitoring: attempts, the Relay connection of
//! exams, and `examActivity` events. Staff-only fields are filled by the resolvers that
//! know the caller.

use async_graphql::{Enum, ID, InputObject, SimpleObject};
use chrono::{DateTime, Utc};

use super::types::{ExamSession, ExamStatus};
use crate::storage::events::ThetaEvent;

/// One recorded answer of an exam.
#[derive(SimpleObject)]
pub struct Attempt {
    /// 1-based position in the exam.
    pub position: i32,
    /// The item answered.
    pub item_id: ID,
    /// The item's external id (staff only).
    pub external_id: Option<String>,
    /// The response as sent.
    pub response: String,
    /// Its category score (staff only).
    pub score: Option<i32>,
    /// Whether it got full credit (staff only).
    pub correct: Option<bool>,
    /// Theta after this answer (per the feedback policy).
    pub theta: Option<f64>,
    /// Its standard error (per the feedback policy).
    pub standard_error: Option<f64>,
    /// When it was recorded.
    pub answered_at: DateTime<Utc>,
    /// Seconds since the previous answer (or the start).
    pub seconds_on_item: f64,
    /// Whether it answered a seeded pretest item, which changes no estimate (staff only).
    pub pretest: Option<bool>,
}

/// Which exams `exams` lists.
#[derive(InputObject, Default)]
pub struct ExamFilter {
    /// Only exams of this assessment.
    pub assessment_id: Option<ID>,
    /// Only this student's exams.
    pub student_id: Option<String>,
    /// Only exams with this status (`ACTIVE` is the source-of-truth view of running exams).
    pub status: Option<ExamStatus>,
}

/// A page of exams, newest first (Relay cursor connection).
#[derive(SimpleObject)]
pub struct ExamConnection {
    /// The exams with their cursors.
    pub edges: Vec<ExamEdge>,
    /// The exams.
    pub nodes: Vec<ExamSession>,
    /// Where this page is.
    pub page_info: PageInfo,
    /// Exams matching the filter, over all pages.
    pub total_count: i32,
}

/// An exam with its cursor.
#[derive(SimpleObject)]
pub struct ExamEdge {
    /// Pass as `after` to get the exams after this one.
    pub cursor: String,
    /// The exam.
    pub node: ExamSession,
}

/// Relay page information.
#[derive(SimpleObject)]
pub struct PageInfo {
    /// Whether exams come before this page (it was asked for with `after`).
    pub has_previous_page: bool,
    /// Whether older exams follow.
    pub has_next_page: bool,
    /// Cursor of the first exam of the page.
    pub start_cursor: Option<String>,
    /// Cursor of the last exam of the page.
    pub end_cursor: Option<String>,
}

/// What happened to an exam (`examActivity`).
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum ExamActivityKind {
    /// The exam started.
    Started,
    /// An answer was recorded.
    Answered,
    /// The exam completed (sent right after the completing answer's ANSWERED).
    Completed,
    /// An admin abandoned the exam.
    Abandoned,
}

/// One event of an exam of the watched assessment (staff only: theta and SE always shown).
#[derive(SimpleObject, Clone)]
pub struct ExamActivity {
    /// What happened.
    pub kind: ExamActivityKind,
    /// The exam.
    pub exam_session_id: ID,
    /// Its student.
    pub student_id: String,
    /// The assessment.
    pub assessment_id: ID,
    /// Answers recorded so far.
    pub items_completed: i32,
    /// Theta now.
    pub theta: Option<f64>,
    /// Its standard error.
    pub standard_error: Option<f64>,
    /// The exam's status after the event.
    pub status: ExamStatus,
    /// When it happened.
    pub at: DateTime<Utc>,
}

impl ExamActivity {
    /// The activity events of one exam event: a completing answer is ANSWERED then
    /// COMPLETED.
    pub fn from_event(e: &ThetaEvent) -> Vec<Self> {
        use crate::storage::events::EventKind;
        let one = |kind, status| Self {
            kind,
            exam_session_id: e.exam_session_id.into(),
            student_id: e.student_id.clone(),
            assessment_id: e.assessment_id.unwrap_or_default().into(),
            items_completed: e.items_completed,
            theta: Some(e.theta),
            standard_error: Some(e.standard_error),
            status,
            at: e.at,
        };
        match e.kind {
            EventKind::Started => vec![one(ExamActivityKind::Started, ExamStatus::Active)],
            EventKind::Abandoned => vec![one(ExamActivityKind::Abandoned, ExamStatus::Abandoned)],
            EventKind::Answered if e.completed => vec![
                one(ExamActivityKind::Answered, ExamStatus::Completed),
                one(ExamActivityKind::Completed, ExamStatus::Completed),
            ],
            EventKind::Answered => vec![one(ExamActivityKind::Answered, ExamStatus::Active)],
        }
    }
}
