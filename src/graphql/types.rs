//! The API's object, input and enum types, and their conversions from the exam flow.
//! Nothing here carries an answer key or IRT parameters.

use async_graphql::{Enum, ID, InputObject, Json, SimpleObject};
use chrono::{DateTime, Utc};

use crate::exam::{self, BankInfo, ExamStatus as FlowStatus, ExamView, StateSource as FlowSource};
use crate::irt::{self, StopReason as IrtStopReason};
use crate::storage::events::ThetaEvent;

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

/// One item of a new bank (4PL parameters).
#[derive(InputObject)]
pub struct ItemInput {
    /// The author's id, unique in the bank.
    pub external_id: String,
    /// Discrimination.
    #[graphql(default = 1.0)]
    pub a: Option<f64>,
    /// Difficulty.
    pub b: f64,
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
    /// The correct response (exact string match); never shown to students.
    pub answer_key: String,
}

impl From<ItemInput> for exam::NewBankItem {
    fn from(item: ItemInput) -> Self {
        Self {
            external_id: item.external_id,
            a: item.a.unwrap_or(1.0),
            b: item.b,
            c: item.c.unwrap_or(0.0),
            d: item.d.unwrap_or(1.0),
            content_area: item.content_area,
            content: item.content.0,
            answer_key: item.answer_key,
        }
    }
}

/// A new exam's design.
#[derive(InputObject)]
pub struct StartExamInput {
    /// The bank to draw items from.
    pub item_bank_id: ID,
    /// Stop after this many answers.
    #[graphql(default = 20)]
    pub max_items: Option<i32>,
    /// Never stop on precision before this many answers.
    #[graphql(default = 1)]
    pub min_items: Option<i32>,
    /// Stop once the standard error is at or below this.
    pub se_target: Option<f64>,
    /// Theta before any answer.
    #[graphql(default = 0.0)]
    pub initial_theta: Option<f64>,
    /// Choose at random among this many most informative items.
    #[graphql(default = 1)]
    pub randomesque: Option<i32>,
    /// The ability estimator (EAP on 33 points over [-4, 4] with a N(0, 1) prior by default).
    pub estimator: Option<EstimatorInput>,
}

/// Ability estimation settings.
#[derive(InputObject)]
pub struct EstimatorInput {
    /// The estimator.
    #[graphql(default_with = "Some(EstimatorMethod::Eap)")]
    pub method: Option<EstimatorMethod>,
    /// Mean of the normal prior.
    #[graphql(default = 0.0)]
    pub prior_mean: Option<f64>,
    /// Standard deviation of the normal prior.
    #[graphql(default = 1.0)]
    pub prior_sd: Option<f64>,
    /// Quadrature points of EAP on [thetaMin, thetaMax].
    #[graphql(default = 33)]
    pub quadrature_points: Option<i32>,
    /// Lower bound of theta (EAP grid and MAP/MLE/WLE search range).
    #[graphql(default = -4.0)]
    pub theta_min: Option<f64>,
    /// Upper bound of theta.
    #[graphql(default = 4.0)]
    pub theta_max: Option<f64>,
}

impl EstimatorInput {
    /// The estimator settings (scaling is set from the bank later).
    pub fn settings(&self) -> irt::EstimatorSettings {
        irt::EstimatorSettings {
            method: self.method.unwrap_or(EstimatorMethod::Eap).into(),
            prior: irt::Prior::Normal {
                mean: self.prior_mean.unwrap_or(0.0),
                sd: self.prior_sd.unwrap_or(1.0),
            },
            // Out-of-range values fail validation with a clear message instead of wrapping.
            quadrature_points: usize::try_from(self.quadrature_points.unwrap_or(33)).unwrap_or(0),
            theta_min: self.theta_min.unwrap_or(-4.0),
            theta_max: self.theta_max.unwrap_or(4.0),
            ..irt::EstimatorSettings::default()
        }
    }
}

/// Ability estimators (catR's names in brackets).
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum EstimatorMethod {
    /// Expected a posteriori: posterior mean and SD on the quadrature grid (EAP).
    Eap,
    /// Maximum a posteriori: posterior mode (BM).
    Map,
    /// Maximum likelihood (ML).
    Mle,
    /// Warm's weighted likelihood (WL).
    Wle,
}

impl From<EstimatorMethod> for irt::EstimatorMethod {
    fn from(method: EstimatorMethod) -> Self {
        match method {
            EstimatorMethod::Eap => Self::Eap,
            EstimatorMethod::Map => Self::Map,
            EstimatorMethod::Mle => Self::Mle,
            EstimatorMethod::Wle => Self::Wle,
        }
    }
}

impl From<irt::EstimatorMethod> for EstimatorMethod {
    fn from(method: irt::EstimatorMethod) -> Self {
        match method {
            irt::EstimatorMethod::Eap => Self::Eap,
            irt::EstimatorMethod::Map => Self::Map,
            irt::EstimatorMethod::Mle => Self::Mle,
            irt::EstimatorMethod::Wle => Self::Wle,
        }
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

/// An item as the student sees it.
#[derive(SimpleObject, Clone)]
pub struct PresentedItem {
    /// Item id, to send back with the answer.
    pub id: ID,
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
            id: item.id.into(),
            position: item.position,
            content: Json(item.content),
            content_area: item.content_area,
        }
    }
}

/// Status of an exam.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum ExamStatus {
    /// Taking answers.
    Active,
    /// Finished by its stopping rule.
    Completed,
    /// Given up.
    Abandoned,
}

impl From<FlowStatus> for ExamStatus {
    fn from(status: FlowStatus) -> Self {
        match status {
            FlowStatus::Active => Self::Active,
            FlowStatus::Completed => Self::Completed,
            FlowStatus::Abandoned => Self::Abandoned,
        }
    }
}

/// Why an exam stopped.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum StopReason {
    /// `maxItems` answers were given.
    MaxItems,
    /// The standard error reached `seTarget` after at least `minItems` answers.
    SeTarget,
    /// The bank had no item left.
    BankExhausted,
}

impl From<IrtStopReason> for StopReason {
    fn from(reason: IrtStopReason) -> Self {
        match reason {
            IrtStopReason::MaxItems => Self::MaxItems,
            IrtStopReason::SeTarget => Self::SeTarget,
            IrtStopReason::BankExhausted => Self::BankExhausted,
        }
    }
}

/// An exam session.
#[derive(SimpleObject)]
pub struct ExamSession {
    /// Id.
    pub id: ID,
    /// The student who owns it.
    pub student_id: String,
    /// Status.
    pub status: ExamStatus,
    /// Current ability estimate.
    pub theta: f64,
    /// Its standard error.
    pub standard_error: f64,
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
}

impl From<ExamView> for ExamSession {
    fn from(view: ExamView) -> Self {
        let row = view.row;
        Self {
            id: row.id.into(),
            student_id: row.student_id,
            status: view.status.into(),
            theta: row.theta,
            standard_error: row.standard_error,
            items_completed: row.items_completed,
            item_bank_id: row.item_bank_id.into(),
            max_items: view.design.max_items as i32,
            min_items: view.design.min_items as i32,
            se_target: view.design.se_target,
            estimator: view.design.estimator.method.into(),
            current_item: view.current_item.map(Into::into),
            stop_reason: row
                .stop_reason
                .as_deref()
                .and_then(exam::parse_stop_reason)
                .map(Into::into),
            created_at: row.created_at,
            completed_at: row.completed_at,
        }
    }
}

/// What `startExam` returns.
#[derive(SimpleObject)]
pub struct StartExamPayload {
    /// The new exam.
    pub exam_session: ExamSession,
    /// The first item (none only when the exam completed at once).
    pub next_item: Option<PresentedItem>,
}

/// What `submitAnswer` returns.
#[derive(SimpleObject)]
pub struct SubmitAnswerPayload {
    /// Theta after the answer.
    pub theta: f64,
    /// Its standard error.
    pub standard_error: f64,
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

impl From<exam::Answered> for SubmitAnswerPayload {
    fn from(a: exam::Answered) -> Self {
        Self {
            theta: a.theta,
            standard_error: a.standard_error,
            items_completed: a.items_completed,
            completed: a.completed,
            next_item: a.next_item.map(Into::into),
            exam_session: a.exam.into(),
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

/// The engine's numbers for one exam.
#[derive(SimpleObject)]
pub struct EngineSummary {
    /// The exam.
    pub exam_session_id: ID,
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
    /// Whether the numbers came from the Redis cache or Postgres.
    pub source: StateSource,
    /// Seconds the cached state has left (only with source CACHE).
    pub ttl_seconds: Option<i32>,
}

impl From<exam::Summary> for EngineSummary {
    fn from(s: exam::Summary) -> Self {
        Self {
            exam_session_id: s.exam_session_id.into(),
            theta: s.theta,
            standard_error: s.standard_error,
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

/// One recorded answer's effect, pushed to subscribers.
#[derive(SimpleObject)]
pub struct ThetaUpdate {
    /// The exam.
    pub exam_session_id: ID,
    /// Theta after the answer.
    pub theta: f64,
    /// Its standard error.
    pub standard_error: f64,
    /// Answers recorded (a gap means missed events: re-read `engineSummary`).
    pub items_completed: i32,
    /// Whether the exam completed with this answer.
    pub completed: bool,
    /// When the answer was committed.
    pub at: DateTime<Utc>,
}

impl From<ThetaEvent> for ThetaUpdate {
    fn from(e: ThetaEvent) -> Self {
        Self {
            exam_session_id: e.exam_session_id.into(),
            theta: e.theta,
            standard_error: e.standard_error,
            items_completed: e.items_completed,
            completed: e.completed,
            at: e.at,
        }
    }
}
