//! The API's object, input and enum types, and their conversions from the exam flow.
//! Nothing here carries an answer key or IRT parameters.

use async_graphql::{
    Context, Enum, ID, InputObject, Json, MaybeUndefined, Object, Result, SimpleObject,
};
use chrono::{DateTime, Utc};

use super::{caller, gql};
use crate::auth::Caller;
pub use crate::design::{
    ConstantPatternRule, ContentBalanceInput, EstimatorInput, EstimatorMethod, ExamDesignInput,
    ExposureInput, ExposureMethod, PriorDistribution, SelectionRule, StandardErrorType,
};
use crate::error::AppError;
use crate::exam::{
    self, AssessmentView, BankInfo, ExamStatus as FlowStatus, ExamView, NewAssessment,
    StateSource as FlowSource,
};
use crate::irt::StopReason as IrtStopReason;
use crate::storage::events::ThetaEvent;

pub use super::results::{
    Attempt, ExamActivity, ExamActivityKind, ExamConnection, ExamEdge, ExamFilter, PageInfo,
};

/// A new bank and all its items.
#[derive(InputObject)]
pub struct CreateItemBankInput {
    /// Display name.
    pub name: String,
    /// The scaling constant D of the logistic model (1.0; 1.702 approximates the normal ogive).
    #[graphql(default = 1.0)]
    pub scaling_constant: Option<f64>,
    /// The items.
    pub items: Vec<ItemInput>,
}

/// The response model of an item.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "exam::ItemModel")]
pub enum ItemModel {
    /// Right/wrong, 4PL (`a`, `b`, `c`, `d`); scored by exact match with `answerKey`.
    Dichotomous,
    /// Samejima's graded response model: `a` and ordered category boundaries `thresholds`.
    Grm,
    /// Muraki's generalized partial credit model: `a` and step parameters `thresholds`.
    Gpcm,
}

/// One item of a new bank: 4PL parameters, or a polytomous model with thresholds.
#[derive(InputObject)]
pub struct ItemInput {
    /// The author's id, unique in the bank.
    pub external_id: String,
    /// Discrimination.
    #[graphql(default = 1.0)]
    pub a: Option<f64>,
    /// Difficulty; required, except for pretest items (stored as 0 until calibrated).
    pub b: Option<f64>,
    /// Lower asymptote (guessing).
    #[graphql(default = 0.0)]
    pub c: Option<f64>,
    /// Upper asymptote (slipping).
    #[graphql(default = 1.0)]
    pub d: Option<f64>,
    /// Content area.
    pub content_area: Option<String>,
    /// What the student sees (stem, options…), returned as is.
    pub content: Json<serde_json::Value>,
    /// The correct response (exact string match); never shown to students. For polytomous
    /// items, the full-credit response.
    pub answer_key: String,
    /// The response model.
    #[graphql(default_with = "Some(ItemModel::Dichotomous)")]
    pub model: Option<ItemModel>,
    /// GRM: ordered category boundaries; GPCM: step parameters (m thresholds give m + 1
    /// categories scored 0..m). Required for polytomous items.
    pub thresholds: Option<Vec<f64>>,
    /// Polytomous items: response option → category score, e.g. `{"none": 0, "some": 1,
    /// "all": 2}`; without it the response must be the category number itself.
    pub scoring: Option<Json<serde_json::Value>>,
    /// Enemy group: an exam never presents two items of one group.
    pub enemy_group: Option<String>,
    /// OPERATIONAL (selected and scored) or PRETEST (seeded into exams unscored, then
    /// calibrated and promoted).
    #[graphql(default_with = "Some(ItemStatus::Operational)")]
    pub status: Option<ItemStatus>,
}

/// Whether an item counts.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "exam::ItemStatus")]
pub enum ItemStatus {
    /// Selected by the engine and scored.
    Operational,
    /// Never selected nor scored: seeded into exams as pretest, calibrated, then promoted.
    Pretest,
}

impl From<ItemInput> for exam::NewBankItem {
    fn from(item: ItemInput) -> Self {
        Self {
            external_id: item.external_id,
            a: item.a.unwrap_or(1.0),
            b: item.b.unwrap_or(f64::NAN),
            c: item.c.unwrap_or(0.0),
            d: item.d.unwrap_or(1.0),
            content_area: item.content_area,
            content: item.content.0,
            answer_key: item.answer_key,
            model: item.model.unwrap_or(ItemModel::Dichotomous).into(),
            thresholds: item.thresholds,
            scoring: item.scoring.map(|s| s.0),
            enemy_group: item.enemy_group,
            status: item.status.unwrap_or(ItemStatus::Operational).into(),
        }
    }
}

/// Starts (or resumes) an exam of an assessment. The design is the assessment's: nothing
/// here changes how the exam is scored.
#[derive(InputObject)]
pub struct StartExamInput {
    /// The assessment to take.
    pub assessment_id: ID,
    /// Admin only: the student to start the exam for (students start their own exams).
    pub student_id: Option<String>,
}

/// A new assessment: which bank, how its exams run and are scored, who sees what, when.
#[derive(InputObject)]
pub struct CreateAssessmentInput {
    /// Display name.
    pub name: String,
    /// The bank its exams draw from.
    pub item_bank_id: ID,
    /// The design of its exams (omitted: every default).
    pub design: Option<ExamDesignInput>,
    /// What students see of their estimates.
    #[graphql(default_with = "Some(Feedback::Estimates)")]
    pub feedback: Option<Feedback>,
    /// Exams one student may start (omitted: 1; null: unlimited). ACTIVE, COMPLETED and
    /// ABANDONED exams all count.
    #[graphql(default_with = "MaybeUndefined::Value(1)")]
    pub max_attempts_per_student: MaybeUndefined<i32>,
    /// No exam starts before this.
    pub opens_at: Option<DateTime<Utc>>,
    /// No exam starts from this on.
    pub closes_at: Option<DateTime<Utc>>,
}

impl CreateAssessmentInput {
    /// The assessment to create, with `item_bank_id` parsed.
    pub fn into_new(self, item_bank_id: i64) -> NewAssessment {
        NewAssessment {
            name: self.name,
            item_bank_id,
            design: self.design.unwrap_or_default(),
            feedback: self
                .feedback
                .map_or_else(exam::Feedback::default, Into::into),
            max_attempts_per_student: match self.max_attempts_per_student {
                MaybeUndefined::Undefined => Some(1),
                MaybeUndefined::Null => None,
                MaybeUndefined::Value(n) => Some(n),
            },
            opens_at: self.opens_at,
            closes_at: self.closes_at,
        }
    }
}

/// An assessment: what students take exams of.
pub struct Assessment(pub AssessmentView);

#[Object]
impl Assessment {
    /// Id (what students send to `startExam`).
    async fn id(&self) -> ID {
        self.0.id.into()
    }
    /// Display name.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The bank its exams draw from.
    async fn item_bank_id(&self) -> ID {
        self.0.item_bank_id.into()
    }
    /// OPEN (new exams start inside the window) or ARCHIVED (none do).
    async fn status(&self) -> AssessmentStatus {
        self.0.status.into()
    }
    /// What students see of their estimates.
    async fn feedback(&self) -> Feedback {
        self.0.feedback.into()
    }
    /// Exams one student may start (null: unlimited).
    async fn max_attempts_per_student(&self) -> Option<i32> {
        self.0.max_attempts_per_student
    }
    /// No exam starts before this.
    async fn opens_at(&self) -> Option<DateTime<Utc>> {
        self.0.opens_at
    }
    /// No exam starts from this on.
    async fn closes_at(&self) -> Option<DateTime<Utc>> {
        self.0.closes_at
    }
    /// The exams' maximum length.
    async fn max_items(&self) -> i32 {
        self.0.design.max_items()
    }
    /// When it was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// The design (an `ExamDesignInput`, every default written out); admin and proctor
    /// only: `FORBIDDEN` for students.
    async fn design(&self, ctx: &Context<'_>) -> Result<Option<Json<serde_json::Value>>> {
        caller(ctx)
            .and_then(super::super::auth::Caller::require_staff)
            .map_err(gql)?;
        let json = serde_json::to_value(&self.0.design)
            .map_err(|e| gql(AppError::internal("cannot serialize a design", e)))?;
        Ok(Some(Json(json)))
    }
}

/// An answer to the presented item.
#[derive(InputObject)]
pub struct SubmitAnswerInput {
    /// The exam.
    pub exam_session_id: ID,
    /// The item answered (must be the one presented).
    pub item_id: ID,
    /// The response, compared with the answer key by exact string match.
    pub response: String,
}

/// An item bank.
#[derive(SimpleObject)]
pub struct ItemBank {
    /// Id.
    pub id: ID,
    /// Name.
    pub name: String,
    /// Number of items.
    pub item_count: i32,
    /// The scaling constant D.
    pub scaling_constant: f64,
}

impl From<BankInfo> for ItemBank {
    fn from(bank: BankInfo) -> Self {
        Self {
            id: bank.id.into(),
            name: bank.name,
            item_count: i32::try_from(bank.item_count).unwrap_or(i32::MAX),
            scaling_constant: bank.scaling_constant,
        }
    }
}

/// An item as the student sees it, at one position of one exam.
#[derive(SimpleObject, Clone)]
pub struct PresentedItem {
    /// This presentation: unique per exam and position (a client cache key). Not what
    /// `submitAnswer` takes.
    pub id: ID,
    /// The item, to send back as `SubmitAnswerInput.itemId`.
    pub item_id: ID,
    /// 1-based position in the exam.
    pub position: i32,
    /// The item's content.
    pub content: Json<serde_json::Value>,
    /// Content area.
    pub content_area: Option<String>,
}

impl From<exam::PresentedItem> for PresentedItem {
    fn from(item: exam::PresentedItem) -> Self {
        Self {
            id: format!("{}:{}", item.exam_session_id, item.position).into(),
            item_id: item.id.into(),
            position: item.position,
            content: Json(item.content),
            content_area: item.content_area,
        }
    }
}

/// Status of an exam.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "FlowStatus")]
pub enum ExamStatus {
    /// Taking answers.
    Active,
    /// Finished by its stopping rule.
    Completed,
    /// Given up.
    Abandoned,
}

/// What students see of their estimates.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "exam::Feedback")]
pub enum Feedback {
    /// The student sees theta and SE after every answer.
    Estimates,
    /// The student sees theta and SE only once the exam has completed.
    Final,
    /// The student never sees theta or SE (staff always do).
    None,
}

/// Whether an assessment takes new exams.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "exam::AssessmentStatus")]
pub enum AssessmentStatus {
    /// New exams start (inside the window).
    Open,
    /// No new exam starts; running ones go on.
    Archived,
}

/// Why an exam stopped.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "IrtStopReason")]
pub enum StopReason {
    /// `maxItems` answers were given.
    MaxItems,
    /// The standard error reached `seTarget` after at least `minItems` answers.
    SeTarget,
    /// The confidence interval of theta excludes `cutScore` (after at least `minItems`).
    Classification,
    /// No eligible item has `minInformation` at theta (after at least `minItems`).
    MinInformation,
    /// `maxDurationSeconds` have passed since the start.
    MaxDuration,
    /// The bank had no eligible item left.
    BankExhausted,
}

/// An exam session. `theta` and `standardError` are null where the assessment's feedback
/// policy hides them from the caller (a student under NONE, or under FINAL before the exam
/// completed); staff always get numbers.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct ExamSession {
    /// Id.
    pub id: ID,
    /// The student who owns it.
    pub student_id: String,
    /// The assessment it is an exam of (null for exams started before assessments).
    pub assessment_id: Option<ID>,
    /// Status.
    pub status: ExamStatus,
    /// Current ability estimate (null where the feedback policy hides it).
    pub theta: Option<f64>,
    /// Its standard error (null where the feedback policy hides it).
    pub standard_error: Option<f64>,
    /// Answers recorded.
    pub items_completed: i32,
    /// The bank its items come from.
    pub item_bank_id: ID,
    /// Maximum length.
    pub max_items: i32,
    /// Minimum length before a precision stop.
    pub min_items: i32,
    /// Target standard error, if any.
    pub se_target: Option<f64>,
    /// The estimator in use.
    pub estimator: EstimatorMethod,
    /// The item presented now (for a client that resumes), if the exam is active.
    pub current_item: Option<PresentedItem>,
    /// Why the exam stopped, once it has.
    pub stop_reason: Option<StopReason>,
    /// When it started.
    pub created_at: DateTime<Utc>,
    /// When it completed.
    pub completed_at: Option<DateTime<Utc>>,
    /// Seconds from the start to completion (or to the last change of an exam that did not
    /// complete, or to now while it runs).
    pub duration_seconds: f64,
}

#[async_graphql::ComplexObject]
impl ExamSession {
    /// The recorded answers, in position order (owner, proctor, admin). Students see no
    /// external id, score or correctness, and theta/SE per the feedback policy.
    async fn attempts(&self, ctx: &Context<'_>) -> Result<Vec<Attempt>> {
        let caller = caller(ctx).map_err(gql)?;
        let id = crate::ids::ExamId(self.id.parse::<i64>().unwrap_or_default());
        let found = super::service(ctx)
            .map_err(gql)?
            .attempts(caller, id)
            .await
            .map_err(gql)?;
        let reveal = found
            .feedback
            .reveals_to(caller, found.status == FlowStatus::Completed);
        let staff = caller.is_staff();
        Ok(found
            .attempts
            .into_iter()
            .map(|a| Attempt {
                position: a.position,
                item_id: a.item_id.into(),
                external_id: a.external_id.filter(|_| staff),
                response: a.response,
                score: staff.then_some(a.score),
                correct: staff.then_some(a.correct),
                theta: reveal.then_some(a.theta),
                standard_error: reveal.then_some(a.standard_error),
                answered_at: a.answered_at,
                seconds_on_item: a.seconds_on_item,
                pretest: staff.then_some(a.pretest),
            })
            .collect())
    }
}

impl ExamSession {
    /// The session as `caller` may see it.
    pub fn new(view: ExamView, caller: &Caller) -> Self {
        let reveal = view
            .feedback
            .reveals_to(caller, view.status == FlowStatus::Completed);
        let row = view.row;
        Self {
            id: row.id.into(),
            student_id: row.student_id,
            assessment_id: row.assessment_id.map(ID::from),
            status: view.status.into(),
            theta: reveal.then_some(row.theta),
            standard_error: reveal.then_some(row.standard_error),
            items_completed: row.items_completed,
            item_bank_id: row.item_bank_id.into(),
            max_items: view.design.stopping.max_items as i32,
            min_items: view.design.stopping.min_items as i32,
            se_target: view.design.stopping.se_target,
            estimator: view.design.estimator.method.into(),
            current_item: view.current_item.map(Into::into),
            stop_reason: row.stop_reason.map(|code| IrtStopReason::from(code).into()),
            duration_seconds: {
                let end = match view.status {
                    FlowStatus::Active => Utc::now(),
                    _ => row.completed_at.unwrap_or(row.updated_at),
                };
                (end - row.created_at).num_milliseconds().max(0) as f64 / 1000.0
            },
            created_at: row.created_at,
            completed_at: row.completed_at,
        }
    }
}

/// What `startExam` returns.
#[derive(SimpleObject)]
pub struct StartExamPayload {
    /// The new exam, or the student's running exam of this assessment (resume).
    pub exam_session: ExamSession,
    /// The item to answer (none only when the exam completed at once).
    pub next_item: Option<PresentedItem>,
    /// Whether this is the student's running exam rather than a new one.
    pub resumed: bool,
}

impl StartExamPayload {
    /// The payload as `caller` may see it.
    pub fn new(started: exam::Started, caller: &Caller) -> Self {
        let next_item = started.exam.current_item.clone().map(Into::into);
        Self {
            exam_session: ExamSession::new(started.exam, caller),
            next_item,
            resumed: started.resumed,
        }
    }
}

/// What `submitAnswer` returns. `theta`/`standardError` follow the feedback policy.
#[derive(SimpleObject)]
pub struct SubmitAnswerPayload {
    /// Theta after the answer (null where the feedback policy hides it).
    pub theta: Option<f64>,
    /// Its standard error (null where the feedback policy hides it).
    pub standard_error: Option<f64>,
    /// Answers recorded, this one included.
    pub items_completed: i32,
    /// Whether this answer completed the exam.
    pub completed: bool,
    /// The next item, when the exam goes on.
    pub next_item: Option<PresentedItem>,
    /// The exam now.
    pub exam_session: ExamSession,
    /// Why the exam stopped, when this answer completed it.
    pub stop_reason: Option<StopReason>,
}

impl SubmitAnswerPayload {
    /// The payload as `caller` may see it (a replay follows the same policy).
    pub fn new(a: exam::Answered, caller: &Caller) -> Self {
        let reveal = a.exam.feedback.reveals_to(caller, a.completed);
        Self {
            theta: reveal.then_some(a.theta),
            standard_error: reveal.then_some(a.standard_error),
            items_completed: a.items_completed,
            completed: a.completed,
            next_item: a.next_item.map(Into::into),
            exam_session: ExamSession::new(a.exam, caller),
            stop_reason: a.stop_reason.map(Into::into),
        }
    }
}

/// Where a summary came from.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum StateSource {
    /// The Redis engine state.
    Cache,
    /// Postgres (the cache was missing, stale or down).
    Database,
}

/// The engine's numbers for one exam (`theta`/`standardError` per the feedback policy).
#[derive(SimpleObject)]
pub struct EngineSummary {
    /// The exam.
    pub exam_session_id: ID,
    /// Current theta (null where the feedback policy hides it).
    pub theta: Option<f64>,
    /// Its standard error (null where the feedback policy hides it).
    pub standard_error: Option<f64>,
    /// Answers recorded.
    pub items_completed: i32,
    /// Maximum length.
    pub max_items: i32,
    /// Status.
    pub status: ExamStatus,
    /// Whether the numbers came from the Redis cache or Postgres.
    pub source: StateSource,
    /// Seconds the cached state has left (only with source CACHE).
    pub ttl_seconds: Option<i32>,
}

impl EngineSummary {
    /// The summary as `caller` may see it.
    pub fn new(s: exam::Summary, caller: &Caller) -> Self {
        let reveal = s
            .feedback
            .reveals_to(caller, s.status == FlowStatus::Completed);
        Self {
            exam_session_id: s.exam_session_id.into(),
            theta: reveal.then_some(s.theta),
            standard_error: reveal.then_some(s.standard_error),
            items_completed: s.items_completed,
            max_items: s.max_items,
            status: s.status.into(),
            source: match s.source {
                FlowSource::Cache => StateSource::Cache,
                FlowSource::Database => StateSource::Database,
            },
            ttl_seconds: s.ttl_seconds.map(|t| i32::try_from(t).unwrap_or(i32::MAX)),
        }
    }
}

/// One recorded answer's effect, pushed to subscribers (`theta`/`standardError` per the
/// feedback policy).
#[derive(SimpleObject)]
pub struct ThetaUpdate {
    /// The exam.
    pub exam_session_id: ID,
    /// Theta after the answer (null where the feedback policy hides it).
    pub theta: Option<f64>,
    /// Its standard error (null where the feedback policy hides it).
    pub standard_error: Option<f64>,
    /// Answers recorded (a gap means missed events: re-read `engineSummary`).
    pub items_completed: i32,
    /// Whether the exam completed with this answer.
    pub completed: bool,
    /// When the answer was committed.
    pub at: DateTime<Utc>,
}

impl ThetaUpdate {
    /// The event as a subscriber with `caller`'s rights sees it under `feedback`.
    pub fn new(e: ThetaEvent, feedback: exam::Feedback, caller: &Caller) -> Self {
        let reveal = feedback.reveals_to(caller, e.completed);
        Self {
            exam_session_id: e.exam_session_id.into(),
            theta: reveal.then_some(e.theta),
            standard_error: reveal.then_some(e.standard_error),
            items_completed: e.items_completed,
            completed: e.completed,
            at: e.at,
        }
    }
}
