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

/// The response model of an item.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum ItemModel {
    /// Right/wrong, 4PL (`a`, `b`, `c`, `d`); scored by exact match with `answerKey`.
    Dichotomous,
    /// Samejima's graded response model: `a` and ordered category boundaries `thresholds`.
    Grm,
    /// Muraki's generalized partial credit model: `a` and step parameters `thresholds`.
    Gpcm,
}

impl From<ItemModel> for exam::ItemModel {
    fn from(model: ItemModel) -> Self {
        match model {
            ItemModel::Dichotomous => Self::Dichotomous,
            ItemModel::Grm => Self::Grm,
            ItemModel::Gpcm => Self::Gpcm,
        }
    }
}

/// One item of a new bank: 4PL parameters, or a polytomous model with thresholds.
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
            model: item.model.unwrap_or(ItemModel::Dichotomous).into(),
            thresholds: item.thresholds,
            scoring: item.scoring.map(|s| s.0),
            enemy_group: item.enemy_group,
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
    /// How the next item is chosen.
    #[graphql(default_with = "Some(SelectionRule::MaxInfo)")]
    pub selection_rule: Option<SelectionRule>,
    /// Fleet-wide item exposure control (none by default).
    pub exposure: Option<ExposureInput>,
    /// Kingsbury–Zara content balancing: target proportion per content area.
    pub content_balance: Option<Vec<ContentBalanceInput>>,
    /// Items given first, in this order, before adaptive selection starts.
    pub start_item_ids: Option<Vec<ID>>,
    /// Classification: stop once the confidence interval of theta excludes this cut score.
    pub cut_score: Option<f64>,
    /// Confidence level of that interval.
    #[graphql(default = 0.95)]
    pub confidence_level: Option<f64>,
    /// Stop when no eligible item has at least this much Fisher information at theta.
    pub min_information: Option<f64>,
    /// Stop once this many seconds have passed since the exam started (checked at each answer).
    pub max_duration_seconds: Option<i32>,
}

/// Item selection rules (catR's `nextItem` criteria in brackets).
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum SelectionRule {
    /// Maximum Fisher information at the current theta ("MFI").
    MaxInfo,
    /// Difficulty closest to the current theta (Urry; "bOpt").
    Urry,
    /// Kullback–Leibler information over an interval around theta ("KL").
    Kl,
    /// Posterior-weighted Kullback–Leibler information ("KLP").
    Klp,
    /// Likelihood-weighted information ("MLWI").
    Mlwi,
    /// Posterior-weighted information ("MPWI").
    Mpwi,
    /// Minimum expected posterior variance ("MEPV").
    Mepv,
    /// Progressive method: random component fading into information ("progressive").
    Progressive,
    /// Proportional method: draw with probability growing with information ("proportional").
    Proportional,
    /// Uniformly at random ("random").
    Random,
}

impl From<SelectionRule> for irt::SelectionRule {
    fn from(rule: SelectionRule) -> Self {
        match rule {
            SelectionRule::MaxInfo => Self::MaxInfo,
            SelectionRule::Urry => Self::Urry,
            SelectionRule::Kl => Self::Kl,
            SelectionRule::Klp => Self::Klp,
            SelectionRule::Mlwi => Self::Mlwi,
            SelectionRule::Mpwi => Self::Mpwi,
            SelectionRule::Mepv => Self::Mepv,
            SelectionRule::Progressive => Self::Progressive,
            SelectionRule::Proportional => Self::Proportional,
            SelectionRule::Random => Self::Random,
        }
    }
}

/// Exposure control methods.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum ExposureMethod {
    /// Item eligibility (van der Linden & Veldkamp 2004): each exam draws which items it may see.
    ItemEligibility,
    /// Sympson–Hetter (1985) with live rates: a chosen item is given with probability K_i.
    SympsonHetter,
}

/// Fleet-wide exposure control: the share of exams that see an item stays at or below `maxRate`.
#[derive(InputObject)]
pub struct ExposureInput {
    /// The method.
    #[graphql(default_with = "Some(ExposureMethod::ItemEligibility)")]
    pub method: Option<ExposureMethod>,
    /// Largest share of exams that may see any one item, in (0, 1].
    pub max_rate: f64,
}

impl From<&ExposureInput> for irt::ExposureControl {
    fn from(input: &ExposureInput) -> Self {
        Self {
            method: match input.method.unwrap_or(ExposureMethod::ItemEligibility) {
                ExposureMethod::ItemEligibility => irt::ExposureMethod::ItemEligibility,
                ExposureMethod::SympsonHetter => irt::ExposureMethod::SympsonHetter,
            },
            max_rate: input.max_rate,
        }
    }
}

/// A content area's target share of the exam.
#[derive(InputObject)]
pub struct ContentBalanceInput {
    /// The area, as in `ItemInput.contentArea`.
    pub content_area: String,
    /// Its target proportion of the items given (targets are normalized to sum to 1).
    pub proportion: f64,
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
    /// The prior of EAP and MAP.
    #[graphql(default_with = "Some(PriorDistribution::Normal)")]
    pub prior: Option<PriorDistribution>,
    /// Lower bound of the UNIFORM prior (default thetaMin).
    pub prior_lower: Option<f64>,
    /// Upper bound of the UNIFORM prior (default thetaMax).
    pub prior_upper: Option<f64>,
    /// MLE/WLE when every answer so far is right (or every one wrong).
    #[graphql(default_with = "Some(ConstantPatternRule::Bound)")]
    pub constant_pattern_rule: Option<ConstantPatternRule>,
    /// Standard error formula of MAP/MLE/WLE.
    #[graphql(default_with = "Some(StandardErrorType::Classic)")]
    pub standard_error_type: Option<StandardErrorType>,
}

/// Priors of EAP and MAP.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum PriorDistribution {
    /// Normal(priorMean, priorSd).
    Normal,
    /// Uniform on [priorLower, priorUpper].
    Uniform,
    /// Jeffreys' non-informative prior, proportional to the square root of the test information.
    Jeffreys,
}

/// MLE/WLE for all-correct or all-wrong answers (catR's `constantPatt`).
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum ConstantPatternRule {
    /// No special rule: MLE goes to the bound of [thetaMin, thetaMax] (catR's default).
    Bound,
    /// Use the MAP estimate for such patterns.
    Map,
    /// Use the EAP estimate for such patterns.
    Eap,
    /// Step 0.7 up (all right) or down (all wrong) from the current theta (catR "fixed7").
    Step,
}

/// Standard error formulas (catR's `sem.type`).
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum StandardErrorType {
    /// Classic: 1/sqrt(information), plus the prior's curvature for MAP.
    Classic,
    /// Sandwich formula of Magis (2016), catR's "new".
    Sandwich,
}

impl EstimatorInput {
    /// The estimator settings (scaling is set from the bank later).
    pub fn settings(&self) -> irt::EstimatorSettings {
        irt::EstimatorSettings {
            method: self.method.unwrap_or(EstimatorMethod::Eap).into(),
            prior: match self.prior.unwrap_or(PriorDistribution::Normal) {
                PriorDistribution::Normal => irt::Prior::Normal {
                    mean: self.prior_mean.unwrap_or(0.0),
                    sd: self.prior_sd.unwrap_or(1.0),
                },
                PriorDistribution::Uniform => irt::Prior::Uniform {
                    lower: self.prior_lower.or(self.theta_min).unwrap_or(-4.0),
                    upper: self.prior_upper.or(self.theta_max).unwrap_or(4.0),
                },
                PriorDistribution::Jeffreys => irt::Prior::Jeffreys,
            },
            constant_pattern: match self
                .constant_pattern_rule
                .unwrap_or(ConstantPatternRule::Bound)
            {
                ConstantPatternRule::Bound => irt::ConstantPatternRule::Bound,
                ConstantPatternRule::Map => irt::ConstantPatternRule::Map,
                ConstantPatternRule::Eap => irt::ConstantPatternRule::Eap,
                ConstantPatternRule::Step => irt::ConstantPatternRule::Step,
            },
            se_type: match self
                .standard_error_type
                .unwrap_or(StandardErrorType::Classic)
            {
                StandardErrorType::Classic => irt::SeType::Classic,
                StandardErrorType::Sandwich => irt::SeType::Sandwich,
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
    /// The confidence interval of theta excludes `cutScore` (after at least `minItems`).
    Classification,
    /// No eligible item has `minInformation` at theta (after at least `minItems`).
    MinInformation,
    /// `maxDurationSeconds` have passed since the start.
    MaxDuration,
    /// The bank had no eligible item left.
    BankExhausted,
}

impl From<IrtStopReason> for StopReason {
    fn from(reason: IrtStopReason) -> Self {
        match reason {
            IrtStopReason::MaxItems => Self::MaxItems,
            IrtStopReason::SeTarget => Self::SeTarget,
            IrtStopReason::Classification => Self::Classification,
            IrtStopReason::MinInformation => Self::MinInformation,
            IrtStopReason::MaxDuration => Self::MaxDuration,
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
            max_items: view.design.stopping.max_items as i32,
            min_items: view.design.stopping.min_items as i32,
            se_target: view.design.stopping.se_target,
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
