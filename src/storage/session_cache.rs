//! What never changes about an exam session, held in memory per instance: who takes it,
//! on which bank, under which design, since when. Written once by `startExam` and never
//! updated, so a cached entry cannot go stale and any instance may keep one; the changing
//! part (answers, theta, presented item) is in Redis and Postgres. With it, an answer whose
//! engine state is in Redis needs no read of the session row before its one conditional
//! write (see [`crate::storage::queries::record_attempt`]).

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::enums::Feedback;
use super::queries::ExamSessionRow;
use crate::engine::ExamDesign;

/// The immutable columns of one exam session, with its design parsed.
#[derive(Debug)]
pub struct SessionFacts {
    /// Who takes the exam.
    pub student_id: String,
    /// The bank it draws from.
    pub item_bank_id: i64,
    /// Its design (the `config` column, parsed).
    pub design: ExamDesign,
    /// When it started.
    pub created_at: DateTime<Utc>,
    /// The assessment it is an exam of (none for exams of the first version).
    pub assessment_id: Option<i64>,
    /// Which of the student's exams of that assessment it is.
    pub attempt_number: Option<i32>,
    /// The feedback policy.
    pub feedback: Feedback,
    /// The bank revision it started at.
    pub bank_revision: i64,
}

impl SessionFacts {
    /// The facts of a session row whose design has been parsed.
    pub fn new(row: &ExamSessionRow, design: ExamDesign) -> Self {
        Self {
            student_id: row.student_id.clone(),
            item_bank_id: row.item_bank_id,
            design,
            created_at: row.created_at,
            assessment_id: row.assessment_id,
            attempt_number: row.attempt_number,
            feedback: row.feedback,
            bank_revision: row.bank_revision,
        }
    }
}

/// A bounded map from exam id to [`SessionFacts`] (least recently used out first).
#[derive(Clone)]
pub struct SessionCache {
    sessions: Arc<quick_cache::sync::Cache<i64, Arc<SessionFacts>>>,
}

impl SessionCache {
    /// A cache holding at most `capacity` sessions (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            sessions: Arc::new(quick_cache::sync::Cache::new(capacity.max(1))),
        }
    }

    /// The facts of one session, when this instance has them.
    pub fn get(&self, exam_session_id: i64) -> Option<Arc<SessionFacts>> {
        self.sessions.get(&exam_session_id)
    }

    /// Keeps the facts of one session.
    pub fn insert(&self, exam_session_id: i64, facts: Arc<SessionFacts>) {
        self.sessions.insert(exam_session_id, facts);
    }
}
