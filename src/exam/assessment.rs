//! Assessments: the admin-owned definitions students take exams of (a bank, a design, a
//! feedback policy, a window and an attempt limit), and the start of an exam of one.
//!
//! The rules of a start, in order, under a per-(assessment, student) Postgres advisory lock
//! so that 20 simultaneous starts by one student see one consistent picture:
//! 1. a running exam of this assessment is returned as it is (resume: a reload or a second
//!    tab never burns an attempt), whatever the assessment's status or window now;
//! 2. otherwise the assessment must be `OPEN` and now inside [`opens_at`, `closes_at`)
//!    (`ASSESSMENT_CLOSED`), and the student must have started fewer than
//!    `max_attempts_per_student` exams of it (`ATTEMPT_LIMIT_REACHED`);
//! 3. the new exam runs on the assessment's stored design, copied into the session with a
//!    fresh seed, for its whole life. Unique indexes (one ACTIVE exam per student and
//!    assessment; attempt numbers) back the lock up.
//!
//! Owns the assessment rules and the feedback policy; must not decide items or estimates
//! (that is `engine`) nor know GraphQL.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use serde::Deserialize;

use super::step::StepHistory;
use super::{
    Answers, AssessmentStatus, ExamService, ExamStatus, Feedback, Started, StopCode, check_text,
    pretest, state_of,
};
use crate::auth::Caller;
use crate::design::{ExamDesignInput, database_item_id};
use crate::engine;
use crate::error::{AppError, AppResult};
use crate::ids::AssessmentId;
use crate::storage::bank_cache::Bank;
use crate::storage::events::{EventKind, ThetaEvent};
use crate::storage::queries::{self, AssessmentRow, ExamSessionRow};
use crate::storage::session_cache::SessionFacts;

impl Feedback {
    /// Whether `caller` may see theta and SE of an exam under this policy; `completed`:
    /// whether the estimate shown is the exam's final one.
    pub fn reveals_to(self, caller: &Caller, completed: bool) -> bool {
        if caller.is_staff() {
            return true;
        }
        match self {
            Self::Estimates => true,
            Self::Final => completed,
            Self::None => false,
        }
    }
}

/// A new assessment, before validation.
#[derive(Clone, Debug)]
pub struct NewAssessment {
    /// Display name.
    pub name: String,
    /// The bank its exams draw from.
    pub item_bank_id: i64,
    /// The design of its exams.
    pub design: ExamDesignInput,
    /// The feedback policy.
    pub feedback: Feedback,
    /// Exams one student may start (`None`: unlimited).
    pub max_attempts_per_student: Option<i32>,
    /// No start before this.
    pub opens_at: Option<DateTime<Utc>>,
    /// No start from this on.
    pub closes_at: Option<DateTime<Utc>>,
}

/// An assessment as clients see it.
#[derive(Clone, Debug)]
pub struct AssessmentView {
    /// Id.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// The bank its exams draw from.
    pub item_bank_id: i64,
    /// Open or archived.
    pub status: AssessmentStatus,
    /// The feedback policy.
    pub feedback: Feedback,
    /// Exams one student may start (`None`: unlimited).
    pub max_attempts_per_student: Option<i32>,
    /// No start before this.
    pub opens_at: Option<DateTime<Utc>>,
    /// No start from this on.
    pub closes_at: Option<DateTime<Utc>>,
    /// The design, every default written out.
    pub design: ExamDesignInput,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

impl AssessmentView {
    fn from_row(row: AssessmentRow) -> AppResult<Self> {
        Ok(Self {
            design: ExamDesignInput::deserialize(&row.design)
                .map_err(|e| AppError::internal("stored assessment design is unreadable", e))?,
            id: row.id,
            name: row.name,
            item_bank_id: row.item_bank_id,
            status: row.status,
            feedback: row.feedback,
            max_attempts_per_student: row.max_attempts_per_student,
            opens_at: row.opens_at,
            closes_at: row.closes_at,
            created_at: row.created_at,
        })
    }

    /// Whether a new exam may start at `now`.
    fn takes_new_exams(&self, now: DateTime<Utc>) -> bool {
        self.status == AssessmentStatus::Open
            && self.opens_at.is_none_or(|t| now >= t)
            && self.closes_at.is_none_or(|t| now < t)
    }
}

/// How a start ended inside its transaction.
enum Begun {
    /// The student's running exam.
    Resumed(Box<ExamSessionRow>),
    /// A new exam, with the engine's first decision.
    New(Box<NewExam>),
}

/// A new exam as inserted, with what the engine decided.
struct NewExam {
    row: ExamSessionRow,
    design: engine::ExamDesign,
    /// Items the selection proposed (exposure counts).
    proposed: Vec<i64>,
}

fn assessment_not_found(id: i64) -> AppError {
    AppError::NotFound(format!("assessment {id} does not exist"))
}

impl ExamService {
    /// Validates and stores a new assessment (admin).
    pub async fn create_assessment(
        &self,
        caller: &Caller,
        new: NewAssessment,
    ) -> AppResult<AssessmentView> {
        let name = new.name.trim();
        check_text(name, "name")?;
        if name.is_empty() || name.len() > 256 {
            return Err(AppError::bad_input("name must be 1 to 256 bytes"));
        }
        if let Some(max) = new.max_attempts_per_student
            && !(1..=1_000_000).contains(&max)
        {
            return Err(AppError::bad_input(
                "maxAttemptsPerStudent must be between 1 and 1000000, or null for unlimited",
            ));
        }
        if let (Some(opens), Some(closes)) = (new.opens_at, new.closes_at)
            && opens >= closes
        {
            return Err(AppError::bad_input("opensAt must be before closesAt"));
        }
        let bank = self
            .db
            .run(async |conn| self.bank(conn, new.item_bank_id, 0).await)
            .await
            .map_err(|e| match e {
                AppError::NotFound(m) => AppError::bad_input(format!("itemBankId: {m}")),
                other => other,
            })?;
        let design = new.design.with_defaults();
        design
            .to_engine_design(&bank, 0, database_item_id)
            .map_err(|e| match e {
                AppError::BadUserInput(m) => AppError::bad_input(format!("design.{m}")),
                other => other,
            })?;
        let json = serde_json::to_value(&design)
            .map_err(|e| AppError::internal("cannot serialize a design", e))?;
        let new_row = queries::NewAssessment {
            name,
            item_bank_id: bank.id,
            design: json,
            feedback: new.feedback,
            max_attempts_per_student: new.max_attempts_per_student,
            opens_at: new.opens_at,
            closes_at: new.closes_at,
            created_by: &caller.sub,
        };
        let row = self
            .db
            .run(async |conn| Ok(queries::insert_assessment(conn, &new_row).await?))
            .await?;
        tracing::info!(
            assessment.id = row.id,
            bank.id = bank.id,
            "assessment created"
        );
        AssessmentView::from_row(row)
    }

    /// Archives an assessment: no new exam starts; running ones go on (admin). Archiving
    /// an archived assessment returns it unchanged.
    pub async fn archive_assessment(
        &self,
        assessment_id: AssessmentId,
    ) -> AppResult<AssessmentView> {
        let assessment_id = assessment_id.0;
        let row = self
            .db
            .run(async |conn| {
                match queries::archive_assessment(conn, assessment_id, Utc::now()).await? {
                    Some(row) => {
                        tracing::info!(assessment.id = assessment_id, "assessment archived");
                        Ok(row)
                    }
                    None => queries::find_assessment(conn, assessment_id)
                        .await?
                        .ok_or_else(|| assessment_not_found(assessment_id)),
                }
            })
            .await?;
        AssessmentView::from_row(row)
    }

    /// One assessment.
    pub async fn assessment(&self, assessment_id: AssessmentId) -> AppResult<AssessmentView> {
        let assessment_id = assessment_id.0;
        let row = self
            .db
            .run(async |conn| Ok(queries::find_assessment(conn, assessment_id).await?))
            .await?
            .ok_or_else(|| assessment_not_found(assessment_id))?;
        AssessmentView::from_row(row)
    }

    /// Every assessment, newest first.
    pub async fn assessments(&self) -> AppResult<Vec<AssessmentView>> {
        self.db
            .run(async |conn| Ok(queries::list_assessments(conn).await?))
            .await?
            .into_iter()
            .map(AssessmentView::from_row)
            .collect()
    }

    /// Starts (or resumes) `student_id`'s exam of an assessment and presents its item; see
    /// the module doc for the rules.
    pub async fn start_exam(
        &self,
        student_id: &str,
        assessment_id: AssessmentId,
    ) -> AppResult<Started> {
        let assessment_id = assessment_id.0;
        check_text(student_id, "studentId")?;
        if student_id.is_empty() || student_id.len() > 256 {
            return Err(AppError::bad_input("the student id must be 1 to 256 bytes"));
        }
        let (bank, begun) = self
            .db
            .run(async |conn| {
                let assessment = queries::find_assessment(conn, assessment_id)
                    .await?
                    .ok_or_else(|| assessment_not_found(assessment_id))?;
                let assessment = AssessmentView::from_row(assessment)?;
                // The newest revision: a new exam sees every item added or retired so far.
                let bank = self.newest_bank(conn, assessment.item_bank_id).await?;
                let begun = conn
                    .transaction(async |conn| {
                        self.begin_exam(conn, &assessment, &bank, student_id).await
                    })
                    .await?;
                Ok((bank, begun))
            })
            .await?;
        let (row, design) = match begun {
            Begun::Resumed(row) => {
                tracing::info!(exam.id = row.id, student.id = student_id, "exam resumed");
                let design = super::design_of(&row)?;
                let exam = self.view(*row, design, &bank)?;
                return Ok(Started {
                    exam,
                    resumed: true,
                });
            }
            Begun::New(new) => {
                let NewExam {
                    row,
                    design,
                    proposed,
                } = *new;
                if design.exposure.is_some() {
                    self.exposure
                        .record_start(bank.id, &design.ineligible_item_ids, &proposed)
                        .await;
                }
                (row, design)
            }
        };
        tracing::info!(
            exam.id = row.id,
            student.id = student_id,
            assessment.id = assessment_id,
            "exam started"
        );
        self.metrics.exams_started.inc();
        self.sessions
            .insert(row.id, Arc::new(SessionFacts::new(&row, design.clone())));
        let exam = self.view(row, design, &bank)?;
        let event = ThetaEvent {
            kind: EventKind::Started,
            exam_session_id: exam.row.id,
            student_id: exam.row.student_id.clone(),
            assessment_id: exam.row.assessment_id,
            origin: self.events.origin(),
            theta: exam.row.theta,
            standard_error: exam.row.standard_error,
            items_completed: 0,
            completed: false,
            at: exam.row.created_at,
        };
        self.events.deliver_local(&event);
        if exam.status == ExamStatus::Active {
            let answers = Answers {
                next_item_id: exam.row.current_item_id,
                ..Answers::default()
            };
            let state = state_of(&exam, &bank, &answers);
            self.save_state(exam.row.id, &state, Some(&event.to_json()))
                .await;
        }
        Ok(Started {
            exam,
            resumed: false,
        })
    }

    /// The start's transaction: lock, resume or check, decide, insert.
    async fn begin_exam(
        &self,
        conn: &mut AsyncPgConnection,
        assessment: &AssessmentView,
        bank: &Arc<Bank>,
        student_id: &str,
    ) -> AppResult<Begun> {
        queries::lock_student_assessment(conn, assessment.id, student_id).await?;
        if let Some(row) = queries::find_active_exam(conn, assessment.id, student_id).await? {
            return Ok(Begun::Resumed(Box::new(row)));
        }
        let now = Utc::now();
        if !assessment.takes_new_exams(now) {
            return Err(AppError::AssessmentClosed(format!(
                "assessment {} takes no new exams now",
                assessment.id
            )));
        }
        let started = queries::count_student_exams(conn, assessment.id, student_id).await?;
        if let Some(max) = assessment.max_attempts_per_student
            && started >= i64::from(max)
        {
            return Err(AppError::AttemptLimitReached(format!(
                "{started} of {max} allowed exams of assessment {} already started",
                assessment.id
            )));
        }
        let mut design =
            assessment
                .design
                .to_engine_design(bank, rand::random(), database_item_id)?;
        // The pretest plan first: nothing is counted yet if reading the counts fails.
        if let Some(settings) = &assessment.design.pretest {
            let range = settings.checked(assessment.design.max_items())?;
            let candidates = self.pretest_counts.candidates(conn, bank).await?;
            design.pretest =
                pretest::draw_plan(&candidates, range, &mut pretest::plan_rng(design.seed));
        }
        // Under exposure control the exam counts in its own limits (undone below if it
        // cannot start). A missing hash is rebuilt by the read (without this exam, which
        // is not inserted yet), then the exam is counted.
        let mut counted = design.exposure.is_some() && self.exposure.count_exam(bank.id, 1).await;
        let counts = self.exposure_counts(conn, &design, bank).await?;
        if design.exposure.is_some() && !counted {
            counted = self.exposure.count_exam(bank.id, 1).await;
        }
        if let Some(counts) = &counts {
            design.ineligible_item_ids = engine::draw_ineligible(&design, &bank.engine, counts);
        }
        // Pretest and retired items never reach a new exam; items retired later still may
        // (running exams are unaffected), items added later never (see `bank_cache`).
        design.ineligible_item_ids.extend(bank.unselectable());
        // No operational item may be an enemy of a seeded pretest item.
        design
            .ineligible_item_ids
            .extend(pretest::enemies_of_plan(bank, &design.pretest));
        let history = StepHistory {
            administered: &[],
            scores: &[],
            previous_theta: design.initial_theta,
            elapsed_seconds: 0.0,
            bank_revision: bank.revision,
        };
        let decision = self.step(conn, &design, bank, &history, counts).await;
        let decision = match decision {
            Ok(decision) if decision.next_item.is_some() => decision,
            other => {
                if counted {
                    self.exposure.count_exam(bank.id, -1).await;
                }
                other?;
                return Err(AppError::NoItemAvailable(format!(
                    "no item of assessment {} can be presented now (the bank is exhausted for \
                     this design, or every item is at its exposure limit); nothing was started",
                    assessment.id
                )));
            }
        };
        super::ensure_finite(&decision.estimate)?;
        let next = decision.next_item.map(|i| bank.items[i].id);
        let completed = next.is_none();
        let config = serde_json::to_value(&design)
            .map_err(|e| AppError::internal("cannot serialize the exam design", e))?;
        let stop_reason = decision.stop.filter(|_| completed).map(StopCode::from);
        let row = queries::insert_exam_session(
            conn,
            &queries::NewExamSession {
                student_id,
                item_bank_id: bank.id,
                status: if completed {
                    ExamStatus::Completed
                } else {
                    ExamStatus::Active
                },
                config,
                theta: decision.estimate.theta,
                standard_error: decision.estimate.standard_error,
                items_completed: 0,
                current_item_id: next,
                stop_reason,
                completed_at: completed.then(Utc::now),
                assessment_id: assessment.id,
                attempt_number: i32::try_from(started + 1).unwrap_or(i32::MAX),
                feedback: assessment.feedback,
                bank_revision: bank.revision,
            },
        )
        .await?;
        self.pretest_counts.seeded(bank.id, &design.pretest);
        let proposed = decision
            .proposed
            .iter()
            .map(|&i| bank.items[i].id)
            .collect();
        Ok(Begun::New(Box::new(NewExam {
            row,
            design,
            proposed,
        })))
    }
}
