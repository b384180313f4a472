//! The one vocabulary of an exam design: [`ExamDesignInput`] and its parts, with their
//! defaults, as an admin sends them inside `createAssessment`, as `assessments.design`
//! stores them (every default written out) and as `simulate --design FILE` reads them.
//! The same Rust type is the GraphQL input object and the serde format, so the API, the
//! stored JSON and the simulator cannot drift apart; enums that name an `irt` option are
//! async-graphql `remote` enums of it, so an option added to `irt` does not compile until
//! it has a name here.
//!
//! Owns the design's names, defaults and validation into the engine's [`ExamDesign`];
//! must not run exams, touch storage beyond reading the bank it validates against, or know
//! who sends a design.

use std::collections::HashSet;

use async_graphql::{Enum, ID, InputObject};
use serde::{Deserialize, Serialize};

use crate::engine::{EngineBank, ExamDesign};
use crate::error::{AppError, AppResult};
use crate::irt::{self, ContentBalance, StoppingRule};
use crate::storage::bank_cache::Bank;

/// Default `maxItems`.
pub const DEFAULT_MAX_ITEMS: i32 = 20;
/// Default `minItems`.
pub const DEFAULT_MIN_ITEMS: i32 = 1;
/// Default `initialTheta`.
pub const DEFAULT_INITIAL_THETA: f64 = 0.0;
/// Default `randomesque`.
pub const DEFAULT_RANDOMESQUE: i32 = 1;
/// Default `confidenceLevel`.
pub const DEFAULT_CONFIDENCE_LEVEL: f64 = 0.95;
/// Default `priorMean`.
pub const DEFAULT_PRIOR_MEAN: f64 = 0.0;
/// Default `priorSd`.
pub const DEFAULT_PRIOR_SD: f64 = 1.0;
/// Default `quadraturePoints`.
pub const DEFAULT_QUADRATURE_POINTS: i32 = 33;
/// Default `thetaMin`.
pub const DEFAULT_THETA_MIN: f64 = -4.0;
/// Default `thetaMax`.
pub const DEFAULT_THETA_MAX: f64 = 4.0;
/// Largest exam length accepted.
pub const MAX_EXAM_ITEMS: i32 = 1_000;

/// How the exams of an assessment run and are scored. Every field is optional and takes
/// the default shown. The same JSON is a `simulate --design` file, where `startItemIds`
/// are the bank file's externalIds and `maxDurationSeconds` never stops an exam.
// `with_defaults` writes every default out (what `Assessment.design` shows).
#[derive(InputObject, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExamDesignInput {
    /// Stop after this many answers.
    #[graphql(default_with = "Some(DEFAULT_MAX_ITEMS)")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_items: Option<i32>,
    /// Never stop on precision before this many answers.
    #[graphql(default_with = "Some(DEFAULT_MIN_ITEMS)")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_items: Option<i32>,
    /// Stop once the standard error is at or below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub se_target: Option<f64>,
    /// Theta before any answer.
    #[graphql(default_with = "Some(DEFAULT_INITIAL_THETA)")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_theta: Option<f64>,
    /// Choose at random among this many most informative items.
    #[graphql(default_with = "Some(DEFAULT_RANDOMESQUE)")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub randomesque: Option<i32>,
    /// The ability estimator (EAP on 33 points over [-4, 4] with a N(0, 1) prior by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimator: Option<EstimatorInput>,
    /// How the next item is chosen.
    #[graphql(default_with = "Some(SelectionRule::MaxInfo)")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection_rule: Option<SelectionRule>,
    /// Fleet-wide item exposure control (none by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure: Option<ExposureInput>,
    /// Kingsbury–Zara content balancing: target proportion per content area.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_balance: Option<Vec<ContentBalanceInput>>,
    /// Items given first, in this order, before adaptive selection starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_item_ids: Option<Vec<ID>>,
    /// Classification: stop once the confidence interval of theta excludes this cut score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_score: Option<f64>,
    /// Confidence level of that interval.
    #[graphql(default_with = "Some(DEFAULT_CONFIDENCE_LEVEL)")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence_level: Option<f64>,
    /// Stop when no eligible item has at least this much Fisher information at theta.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_information: Option<f64>,
    /// Stop once this many seconds have passed since the exam started (checked at each answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration_seconds: Option<i32>,
    /// Pretest seeding: unscored new items of the bank presented at random positions
    /// (none by default). `maxItems` and every stopping rule count operational items only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretest: Option<PretestInput>,
}

/// Pretest seeding: each exam presents `itemsPerExam` of the bank's live pretest items
/// (least-answered first, ties at random, never two of one enemy group) at random
/// positions in `[firstPosition, lastPosition]` (1-based, counting every item presented).
/// They look like any other item and are recorded as attempts, but never change theta,
/// its standard error, the stopping rule or which operational items are selected. An exam
/// always ends on an operational item: a full-length exam presents every drawn pretest
/// item, one that stops earlier (on precision) skips those drawn after its end; an exam of
/// a bank with fewer live pretest items presents those it has.
#[derive(InputObject, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PretestInput {
    /// Pretest items per exam (1 to 50).
    pub items_per_exam: i32,
    /// First position a pretest item may take (at least 2: the first item is operational).
    #[graphql(default_with = "Some(DEFAULT_PRETEST_FIRST_POSITION)")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_position: Option<i32>,
    /// Last position a pretest item may take (default and largest: `maxItems +
    /// itemsPerExam - 1`, the last but one item of a full-length exam).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_position: Option<i32>,
}

/// Default `pretest.firstPosition`.
pub const DEFAULT_PRETEST_FIRST_POSITION: i32 = 2;
/// Largest `pretest.itemsPerExam`.
pub const MAX_PRETEST_PER_EXAM: i32 = 50;

impl PretestInput {
    /// The positions pretest items may take in an exam of `max_items` operational items,
    /// checked.
    pub fn checked(&self, max_items: i32) -> AppResult<PretestPlanRange> {
        let per_exam = self.items_per_exam;
        if !(1..=MAX_PRETEST_PER_EXAM).contains(&per_exam) {
            return Err(AppError::bad_input(format!(
                "pretest.itemsPerExam must be between 1 and {MAX_PRETEST_PER_EXAM}"
            )));
        }
        let first = self
            .first_position
            .unwrap_or(DEFAULT_PRETEST_FIRST_POSITION);
        let longest = max_items + per_exam - 1;
        let last = self.last_position.unwrap_or(longest);
        if first < 2 {
            return Err(AppError::bad_input(
                "pretest.firstPosition must be at least 2 (the first item is operational)",
            ));
        }
        if last > longest {
            return Err(AppError::bad_input(format!(
                "pretest.lastPosition must be at most maxItems + itemsPerExam - 1 ({longest}): \
                 an exam ends on an operational item"
            )));
        }
        if last - first + 1 < per_exam {
            return Err(AppError::bad_input(
                "pretest: [firstPosition, lastPosition] must hold itemsPerExam positions",
            ));
        }
        Ok(PretestPlanRange {
            per_exam: per_exam as usize,
            first: first as u32,
            last: last as u32,
        })
    }
}

/// Checked pretest settings: how many items, and the positions they may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PretestPlanRange {
    /// Pretest items per exam.
    pub per_exam: usize,
    /// First allowed position (1-based, at least 2).
    pub first: u32,
    /// Last allowed position.
    pub last: u32,
}

/// Ability estimation settings.
#[derive(InputObject, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EstimatorInput {
    /// The estimator.
    #[graphql(default_with = "Some(EstimatorMethod::Eap)")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<EstimatorMethod>,
    /// Mean of the normal prior.
    #[graphql(default_with = "Some(DEFAULT_PRIOR_MEAN)")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_mean: Option<f64>,
    /// Standard deviation of the normal prior.
    #[graphql(default_with = "Some(DEFAULT_PRIOR_SD)")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_sd: Option<f64>,
    /// Quadrature points of EAP on [thetaMin, thetaMax].
    #[graphql(default_with = "Some(DEFAULT_QUADRATURE_POINTS)")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quadrature_points: Option<i32>,
    /// Lower bound of theta (EAP grid and MAP/MLE/WLE search range).
    #[graphql(default_with = "Some(DEFAULT_THETA_MIN)")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theta_min: Option<f64>,
    /// Upper bound of theta.
    #[graphql(default_with = "Some(DEFAULT_THETA_MAX)")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theta_max: Option<f64>,
    /// The prior of EAP and MAP.
    #[graphql(default_with = "Some(PriorDistribution::Normal)")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior: Option<PriorDistribution>,
    /// Lower bound of the UNIFORM prior (default thetaMin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_lower: Option<f64>,
    /// Upper bound of the UNIFORM prior (default thetaMax).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_upper: Option<f64>,
    /// MLE/WLE when every answer so far is right (or every one wrong).
    #[graphql(default_with = "Some(ConstantPatternRule::Bound)")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constant_pattern_rule: Option<ConstantPatternRule>,
    /// Standard error formula of MAP/MLE/WLE.
    #[graphql(default_with = "Some(StandardErrorType::Classic)")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standard_error_type: Option<StandardErrorType>,
}

/// Fleet-wide exposure control: the share of exams that see an item stays at or below `maxRate`.
#[derive(InputObject, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExposureInput {
    /// The method.
    #[graphql(default_with = "Some(ExposureMethod::ItemEligibility)")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<ExposureMethod>,
    /// Largest share of exams that may see any one item, in (0, 1].
    pub max_rate: f64,
}

/// A content area's target share of the exam.
#[derive(InputObject, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContentBalanceInput {
    /// The area, as in `ItemInput.contentArea`.
    pub content_area: String,
    /// Its target proportion of the items given (targets are normalized to sum to 1).
    pub proportion: f64,
}

/// Item selection rules (catR's `nextItem` criteria in brackets).
#[derive(
    Enum, Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[graphql(remote = "irt::SelectionRule")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SelectionRule {
    /// Maximum Fisher information at the current theta ("MFI").
    #[default]
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

/// Exposure control methods.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[graphql(remote = "irt::ExposureMethod")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExposureMethod {
    /// Item eligibility (van der Linden & Veldkamp 2004): each exam draws which items it may see.
    #[default]
    ItemEligibility,
    /// Sympson–Hetter (1985) with live rates: a chosen item is given with probability K_i.
    SympsonHetter,
}

/// Ability estimators (catR's names in brackets).
#[derive(
    Enum, Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[graphql(remote = "irt::EstimatorMethod")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EstimatorMethod {
    /// Expected a posteriori: posterior mean and SD on the quadrature grid (EAP).
    #[default]
    Eap,
    /// Maximum a posteriori: posterior mode (BM).
    Map,
    /// Maximum likelihood (ML).
    Mle,
    /// Warm's weighted likelihood (WL).
    Wle,
}

/// Priors of EAP and MAP.
// `irt::Prior` carries the parameters, so this is not a remote enum of it.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PriorDistribution {
    /// Normal(priorMean, priorSd).
    #[default]
    Normal,
    /// Uniform on [priorLower, priorUpper].
    Uniform,
    /// Jeffreys' non-informative prior, proportional to the square root of the test information.
    Jeffreys,
}

/// MLE/WLE for all-correct or all-wrong answers (catR's `constantPatt`).
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[graphql(remote = "irt::ConstantPatternRule")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConstantPatternRule {
    /// No special rule: MLE goes to the bound of [thetaMin, thetaMax] (catR's default).
    #[default]
    Bound,
    /// Use the MAP estimate for such patterns.
    Map,
    /// Use the EAP estimate for such patterns.
    Eap,
    /// Step 0.7 up (all right) or down (all wrong) from the current theta (catR "fixed7").
    Step,
}

/// Standard error formulas (catR's `sem.type`).
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[graphql(remote = "irt::SeType")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StandardErrorType {
    /// Classic: 1/sqrt(information), plus the prior's curvature for MAP.
    #[default]
    Classic,
    /// Sandwich formula of Magis (2016), catR's "new".
    Sandwich,
}

impl EstimatorInput {
    /// The estimator settings (`scaling` is set from the bank later).
    pub fn settings(&self) -> irt::EstimatorSettings {
        let theta_min = self.theta_min.unwrap_or(DEFAULT_THETA_MIN);
        let theta_max = self.theta_max.unwrap_or(DEFAULT_THETA_MAX);
        irt::EstimatorSettings {
            method: self.method.unwrap_or_default().into(),
            prior: match self.prior.unwrap_or_default() {
                PriorDistribution::Normal => irt::Prior::Normal {
                    mean: self.prior_mean.unwrap_or(DEFAULT_PRIOR_MEAN),
                    sd: self.prior_sd.unwrap_or(DEFAULT_PRIOR_SD),
                },
                PriorDistribution::Uniform => irt::Prior::Uniform {
                    lower: self.prior_lower.unwrap_or(theta_min),
                    upper: self.prior_upper.unwrap_or(theta_max),
                },
                PriorDistribution::Jeffreys => irt::Prior::Jeffreys,
            },
            constant_pattern: self.constant_pattern_rule.unwrap_or_default().into(),
            se_type: self.standard_error_type.unwrap_or_default().into(),
            // Out-of-range values fail validation with a clear message instead of wrapping.
            quadrature_points: usize::try_from(
                self.quadrature_points.unwrap_or(DEFAULT_QUADRATURE_POINTS),
            )
            .unwrap_or(0),
            theta_min,
            theta_max,
            ..irt::EstimatorSettings::default()
        }
    }

    /// The same estimator with every default written out (priorLower/priorUpper only for a
    /// uniform prior, priorMean/priorSd only for a normal one).
    pub fn with_defaults(&self) -> Self {
        let prior = self.prior.unwrap_or_default();
        let theta_min = self.theta_min.unwrap_or(DEFAULT_THETA_MIN);
        let theta_max = self.theta_max.unwrap_or(DEFAULT_THETA_MAX);
        let normal = prior == PriorDistribution::Normal;
        let uniform = prior == PriorDistribution::Uniform;
        Self {
            method: Some(self.method.unwrap_or_default()),
            prior_mean: normal.then(|| self.prior_mean.unwrap_or(DEFAULT_PRIOR_MEAN)),
            prior_sd: normal.then(|| self.prior_sd.unwrap_or(DEFAULT_PRIOR_SD)),
            quadrature_points: Some(self.quadrature_points.unwrap_or(DEFAULT_QUADRATURE_POINTS)),
            theta_min: Some(theta_min),
            theta_max: Some(theta_max),
            prior: Some(prior),
            prior_lower: uniform.then(|| self.prior_lower.unwrap_or(theta_min)),
            prior_upper: uniform.then(|| self.prior_upper.unwrap_or(theta_max)),
            constant_pattern_rule: Some(self.constant_pattern_rule.unwrap_or_default()),
            standard_error_type: Some(self.standard_error_type.unwrap_or_default()),
        }
    }
}

/// Widest theta scale accepted (bounds, prior means and bounds, cut scores): IRT scales
/// live within a few units of 0, and wider values only overflow the arithmetic.
pub const MAX_ABS_THETA: f64 = 10.0;
/// Smallest prior SD accepted: a narrower normal prior underflows every posterior weight.
pub const MIN_PRIOR_SD: f64 = 0.01;

impl EstimatorInput {
    /// Refuses values that would make the estimator's arithmetic overflow or underflow
    /// into NaN or infinity: every estimate the engine emits stays finite.
    fn check_ranges(&self) -> AppResult<()> {
        let within = |value: Option<f64>, name: &str| match value {
            Some(v) if !(v.is_finite() && v.abs() <= MAX_ABS_THETA) => Err(AppError::bad_input(
                format!("estimator.{name} must be between -{MAX_ABS_THETA} and {MAX_ABS_THETA}"),
            )),
            _ => Ok(()),
        };
        within(self.theta_min, "thetaMin")?;
        within(self.theta_max, "thetaMax")?;
        within(self.prior_mean, "priorMean")?;
        within(self.prior_lower, "priorLower")?;
        within(self.prior_upper, "priorUpper")?;
        if let Some(sd) = self.prior_sd
            && !(sd.is_finite() && (MIN_PRIOR_SD..=MAX_ABS_THETA).contains(&sd))
        {
            return Err(AppError::bad_input(format!(
                "estimator.priorSd must be between {MIN_PRIOR_SD} and {MAX_ABS_THETA}"
            )));
        }
        Ok(())
    }
}

impl ExamDesignInput {
    /// Reads a design from JSON (unknown fields are refused, with their name).
    ///
    /// # Errors
    /// When the JSON does not match the format.
    pub fn from_json(text: &str) -> anyhow::Result<Self> {
        serde_json::from_str(text).map_err(|e| anyhow::anyhow!("invalid design: {e}"))
    }

    /// The same design with every default written out: what `Assessment.design` shows and
    /// what a simulation reports; reads back as the same design.
    pub fn with_defaults(&self) -> Self {
        Self {
            max_items: Some(self.max_items.unwrap_or(DEFAULT_MAX_ITEMS)),
            min_items: Some(self.min_items.unwrap_or(DEFAULT_MIN_ITEMS)),
            se_target: self.se_target,
            initial_theta: Some(self.initial_theta.unwrap_or(DEFAULT_INITIAL_THETA)),
            randomesque: Some(self.randomesque.unwrap_or(DEFAULT_RANDOMESQUE)),
            estimator: Some(self.estimator.clone().unwrap_or_default().with_defaults()),
            selection_rule: Some(self.selection_rule.unwrap_or_default()),
            exposure: self.exposure.as_ref().map(|e| ExposureInput {
                method: Some(e.method.unwrap_or_default()),
                max_rate: e.max_rate,
            }),
            content_balance: self.content_balance.clone(),
            start_item_ids: Some(self.start_item_ids.clone().unwrap_or_default()),
            cut_score: self.cut_score,
            confidence_level: Some(self.confidence_level.unwrap_or(DEFAULT_CONFIDENCE_LEVEL)),
            min_information: self.min_information,
            max_duration_seconds: self.max_duration_seconds,
            pretest: self.pretest.as_ref().map(|p| PretestInput {
                items_per_exam: p.items_per_exam,
                first_position: Some(p.first_position.unwrap_or(DEFAULT_PRETEST_FIRST_POSITION)),
                last_position: Some(
                    p.last_position
                        .unwrap_or(self.max_items() + p.items_per_exam - 1),
                ),
            }),
        }
    }

    /// The maximum exam length (`maxItems` or its default).
    pub fn max_items(&self) -> i32 {
        self.max_items.unwrap_or(DEFAULT_MAX_ITEMS)
    }

    /// Checks the design against `bank` and turns it into the engine's design with the
    /// bank's D and `seed`. `start_item` maps each `startItemIds` entry to a bank item id
    /// (the API parses database ids; the simulator looks up external ids).
    ///
    /// # Errors
    /// `BAD_USER_INPUT` naming the field, for anything out of range or not in the bank.
    pub fn to_engine_design(
        &self,
        bank: &Bank,
        seed: u64,
        start_item: impl Fn(&str) -> AppResult<i64>,
    ) -> AppResult<ExamDesign> {
        let max_items = self.max_items.unwrap_or(DEFAULT_MAX_ITEMS);
        let min_items = self.min_items.unwrap_or(DEFAULT_MIN_ITEMS);
        let initial_theta = self.initial_theta.unwrap_or(DEFAULT_INITIAL_THETA);
        let randomesque = self.randomesque.unwrap_or(DEFAULT_RANDOMESQUE);
        let confidence_level = self.confidence_level.unwrap_or(DEFAULT_CONFIDENCE_LEVEL);
        if !(1..=MAX_EXAM_ITEMS).contains(&max_items) {
            return Err(AppError::bad_input(format!(
                "maxItems must be between 1 and {MAX_EXAM_ITEMS}"
            )));
        }
        if min_items < 0 || min_items > max_items {
            return Err(AppError::bad_input(
                "minItems must be between 0 and maxItems",
            ));
        }
        let positive = |value: Option<f64>, name: &str| match value {
            Some(v) if !(v.is_finite() && v > 0.0) => Err(AppError::bad_input(format!(
                "{name} must be a positive number"
            ))),
            _ => Ok(()),
        };
        positive(self.se_target, "seTarget")?;
        positive(self.min_information, "minInformation")?;
        if !initial_theta.is_finite() || initial_theta.abs() > 10.0 {
            return Err(AppError::bad_input(
                "initialTheta must be between -10 and 10",
            ));
        }
        if !(1..=irt::MAX_RANDOMESQUE as i32).contains(&randomesque) {
            return Err(AppError::bad_input(format!(
                "randomesque must be between 1 and {}",
                irt::MAX_RANDOMESQUE
            )));
        }
        if let Some(cut) = self.cut_score
            && !(cut.is_finite() && cut.abs() <= 10.0)
        {
            return Err(AppError::bad_input("cutScore must be between -10 and 10"));
        }
        if !(confidence_level > 0.0 && confidence_level < 1.0) {
            return Err(AppError::bad_input(
                "confidenceLevel must be strictly between 0 and 1",
            ));
        }
        if let Some(seconds) = self.max_duration_seconds
            && !(1..=7 * 24 * 3600).contains(&seconds)
        {
            return Err(AppError::bad_input(
                "maxDurationSeconds must be between 1 and 604800",
            ));
        }
        if let Some(pretest) = &self.pretest {
            pretest.checked(max_items)?;
        }
        let start_ids = self.start_item_ids.as_deref().unwrap_or_default();
        if start_ids.len() > max_items as usize {
            return Err(AppError::bad_input(
                "startItemIds cannot be longer than maxItems",
            ));
        }
        let mut start_item_ids = Vec::with_capacity(start_ids.len());
        let mut seen = HashSet::new();
        for raw in start_ids {
            let id = start_item(raw.as_str())?;
            if bank.index_of(id).is_none() {
                return Err(AppError::bad_input(format!(
                    "startItemIds: item {} is not in this bank",
                    raw.as_str()
                )));
            }
            if !seen.insert(id) {
                return Err(AppError::bad_input(format!(
                    "startItemIds: item {} is listed twice",
                    raw.as_str()
                )));
            }
            start_item_ids.push(id);
        }
        let exposure = self.exposure.as_ref().map(|e| irt::ExposureControl {
            method: e.method.unwrap_or_default().into(),
            max_rate: e.max_rate,
        });
        if let Some(control) = &exposure
            && !(control.max_rate > 0.0 && control.max_rate <= 1.0)
        {
            return Err(AppError::bad_input("exposure.maxRate must be in (0, 1]"));
        }
        let content_balance = match &self.content_balance {
            None => None,
            Some(targets) => Some(content_balance(targets, bank)?),
        };
        if let Some(e) = &self.estimator {
            e.check_ranges()?;
        }
        let estimator = irt::EstimatorSettings {
            scaling: bank.scaling_constant,
            ..self
                .estimator
                .as_ref()
                .map_or_else(irt::EstimatorSettings::default, EstimatorInput::settings)
        };
        estimator
            .validate()
            .map_err(|e| AppError::bad_input(format!("estimator: {e}")))?;
        let stopping = StoppingRule {
            max_items: max_items as usize,
            min_items: min_items as usize,
            se_target: self.se_target,
            cut_score: self.cut_score,
            confidence_level,
            min_information: self.min_information,
            max_duration_seconds: self.max_duration_seconds.map(f64::from),
        };
        stopping
            .validate()
            .map_err(|e| AppError::bad_input(e.to_string()))?;
        let design = ExamDesign {
            stopping,
            initial_theta,
            randomesque: randomesque as u32,
            estimator,
            selection_rule: self.selection_rule.unwrap_or_default().into(),
            exposure,
            content_balance,
            start_item_ids,
            ineligible_item_ids: Vec::new(),
            pretest: Vec::new(),
            seed,
        };
        let cost = design_cost(&design, &bank.engine);
        if cost > MAX_DESIGN_COST {
            return Err(AppError::bad_input(format!(
                "this design is too costly for this bank: {cost} units per step (items x \
                 quadrature points for selectionRule {:?}) exceeds {MAX_DESIGN_COST}; use fewer \
                 quadraturePoints or MAX_INFO",
                SelectionRule::from(design.selection_rule)
            )));
        }
        Ok(design)
    }
}

/// Largest [`design_cost`] accepted: a step of such a design takes on the order of 100 ms
/// of one core (about 30 ns per unit for a plain scan of the grid rules).
pub const MAX_DESIGN_COST: u64 = 5_000_000;

/// How many times cheaper [`design_cost`] counts a grid rule's step when the bank's grid
/// tables serve it: a conservative bound (`cargo bench --bench step`: 50 to 160 times
/// faster on 5,000 and 50,000 items; the worst case, a posterior that prunes nothing, still
/// replaces an exponential and a logarithm per item and node by a multiply-add).
pub const TABLES_SPEEDUP: u64 = 8;

/// The work of one engine step of `design` on `bank`, in units of one item evaluated at one
/// quadrature point by the plain formulas: selection rules that integrate over the grid
/// (KL, KLP, MLWI, MPWI, MEPV) evaluate every item at every point (`1/TABLES_SPEEDUP` of
/// that when the bank's grid tables fit in memory, see
/// [`EngineBank::selection_tables_fit`]), the others evaluate each item once (maximum
/// information even less, through its index); estimation evaluates each answered item at
/// every point.
pub fn design_cost(design: &ExamDesign, bank: &EngineBank) -> u64 {
    use irt::SelectionRule as Rule;
    let points = design.estimator.quadrature_points as u64;
    let plain = match design.selection_rule {
        Rule::Kl | Rule::Klp | Rule::Mlwi | Rule::Mpwi => points,
        Rule::Mepv => 2 * points,
        Rule::MaxInfo | Rule::Urry | Rule::Progressive | Rule::Proportional | Rule::Random => 1,
    };
    let per_item =
        if plain > 1 && bank.selection_tables_fit(&design.estimator, design.selection_rule) {
            plain.div_ceil(TABLES_SPEEDUP)
        } else {
            plain
        };
    (bank.len() as u64)
        .saturating_mul(per_item)
        .saturating_add((design.stopping.max_items as u64).saturating_mul(points))
}

/// Parses a `startItemIds` entry of the API: a positive database id.
///
/// # Errors
/// `BAD_USER_INPUT` when it is not one.
pub fn database_item_id(raw: &str) -> AppResult<i64> {
    raw.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| AppError::bad_input("startItemIds must be positive integer item ids"))
}

/// Checks content-balancing targets against the bank.
fn content_balance(targets: &[ContentBalanceInput], bank: &Bank) -> AppResult<ContentBalance> {
    if targets.is_empty() || targets.len() > 256 {
        return Err(AppError::bad_input("contentBalance needs 1 to 256 areas"));
    }
    let mut areas = HashSet::new();
    for target in targets {
        let (area, proportion) = (&target.content_area, target.proportion);
        if !(proportion.is_finite() && (0.0..=1.0).contains(&proportion)) {
            return Err(AppError::bad_input(format!(
                "contentBalance: the proportion of {area:?} must be in [0, 1]"
            )));
        }
        if !areas.insert(area.as_str()) {
            return Err(AppError::bad_input(format!(
                "contentBalance: area {area:?} is listed twice"
            )));
        }
        if !bank
            .engine
            .areas
            .iter()
            .any(|a| a.as_deref() == Some(area.as_str()))
        {
            return Err(AppError::bad_input(format!(
                "contentBalance: no item of this bank is in area {area:?}"
            )));
        }
    }
    let balance = ContentBalance {
        targets: targets
            .iter()
            .map(|t| (t.content_area.clone(), t.proportion))
            .collect(),
    };
    balance
        .validate()
        .map_err(|e| AppError::bad_input(format!("contentBalance: {e}")))?;
    Ok(balance)
}

#[cfg(test)]
mod tests;
