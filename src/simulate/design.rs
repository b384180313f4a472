//! The exam design of a simulation, read from a JSON file with the fields and defaults of
//! the GraphQL `StartExamInput` (camelCase, enum values spelled as in the schema), and
//! turned into the engine's [`ExamDesign`] through [`exam::design_from_request`], so the
//! simulator accepts and rejects exactly what `startExam` does.
//!
//! Owns the file format and its defaults only; it must not validate a design itself (that is
//! `exam`'s job) nor run anything.

use serde::{Deserialize, Serialize};

use super::bank::SimBank;
use crate::engine::ExamDesign;
use crate::exam::{self, ExamRequest};
use crate::irt;

/// Default `maxItems` (as in the GraphQL API).
pub const DEFAULT_MAX_ITEMS: i32 = 20;
/// Default `minItems`.
pub const DEFAULT_MIN_ITEMS: i32 = 1;
/// Default `randomesque`.
pub const DEFAULT_RANDOMESQUE: i32 = 1;
/// Default `confidenceLevel`.
pub const DEFAULT_CONFIDENCE_LEVEL: f64 = 0.95;

/// A design file: the GraphQL `StartExamInput` without `itemBankId` (accepted and ignored,
/// so a design copied from a real request works). Every field is optional, `null` included,
/// and takes the API's default when absent; [`DesignFile::resolved`] fills the defaults in.
///
/// `startItemIds` are the bank file's `externalId` strings. `maxDurationSeconds` is checked
/// like the API does but never stops a simulated exam: simulated time does not pass
/// (`elapsed_seconds` is always 0).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DesignFile {
    /// Ignored (the bank is `--bank` or the built-in one).
    #[serde(default, skip_serializing)]
    pub item_bank_id: Option<serde_json::Value>,
    /// Stop after this many answers (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_items: Option<i32>,
    /// Never stop on precision before this many answers (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_items: Option<i32>,
    /// Stop once the standard error is at or below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub se_target: Option<f64>,
    /// Theta before any answer (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_theta: Option<f64>,
    /// Choose at random among this many most informative items (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub randomesque: Option<i32>,
    /// The ability estimator (EAP, 33 points on [-4, 4], N(0, 1) prior by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimator: Option<EstimatorFile>,
    /// How the next item is chosen (default `MAX_INFO`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection_rule: Option<SelectionRuleName>,
    /// Fleet-wide exposure control (none by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure: Option<ExposureFile>,
    /// Content balancing targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_balance: Option<Vec<ContentBalanceFile>>,
    /// Items given first, in order, by `externalId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_item_ids: Option<Vec<String>>,
    /// Classification cut score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_score: Option<f64>,
    /// Confidence level of the classification interval (default 0.95).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence_level: Option<f64>,
    /// Stop when no eligible item has at least this much information at theta.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_information: Option<f64>,
    /// Checked, then ignored: simulated exams take no time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration_seconds: Option<i32>,
}

/// The GraphQL `EstimatorInput`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EstimatorFile {
    /// The estimator (default `EAP`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<EstimatorMethodName>,
    /// Mean of the normal prior (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_mean: Option<f64>,
    /// Standard deviation of the normal prior (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_sd: Option<f64>,
    /// EAP quadrature points (default 33).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quadrature_points: Option<i32>,
    /// Lower end of the theta range (default -4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theta_min: Option<f64>,
    /// Upper end of the theta range (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theta_max: Option<f64>,
    /// The prior (default `NORMAL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior: Option<PriorName>,
    /// Lower bound of the `UNIFORM` prior (default thetaMin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_lower: Option<f64>,
    /// Upper bound of the `UNIFORM` prior (default thetaMax).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_upper: Option<f64>,
    /// MLE/WLE on constant patterns (default `BOUND`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constant_pattern_rule: Option<ConstantPatternName>,
    /// Standard error formula of MAP/MLE/WLE (default `CLASSIC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standard_error_type: Option<StandardErrorName>,
}

/// The GraphQL `ExposureInput`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExposureFile {
    /// The method (default `ITEM_ELIGIBILITY`).
    #[serde(default)]
    pub method: Option<ExposureMethodName>,
    /// Largest share of exams that may see any one item, in (0, 1].
    pub max_rate: f64,
}

/// The GraphQL `ContentBalanceInput`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContentBalanceFile {
    /// The area, as in the bank's `contentArea`.
    pub content_area: String,
    /// Its target proportion of the items given.
    pub proportion: f64,
}

/// Item selection rules, spelled as the GraphQL `SelectionRule` enum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SelectionRuleName {
    /// Maximum Fisher information.
    #[default]
    MaxInfo,
    /// Difficulty closest to theta.
    Urry,
    /// Kullback–Leibler information.
    Kl,
    /// Posterior-weighted Kullback–Leibler information.
    Klp,
    /// Likelihood-weighted information.
    Mlwi,
    /// Posterior-weighted information.
    Mpwi,
    /// Minimum expected posterior variance.
    Mepv,
    /// Progressive method.
    Progressive,
    /// Proportional method.
    Proportional,
    /// Uniformly at random.
    Random,
}

impl From<SelectionRuleName> for irt::SelectionRule {
    fn from(rule: SelectionRuleName) -> Self {
        match rule {
            SelectionRuleName::MaxInfo => Self::MaxInfo,
            SelectionRuleName::Urry => Self::Urry,
            SelectionRuleName::Kl => Self::Kl,
            SelectionRuleName::Klp => Self::Klp,
            SelectionRuleName::Mlwi => Self::Mlwi,
            SelectionRuleName::Mpwi => Self::Mpwi,
            SelectionRuleName::Mepv => Self::Mepv,
            SelectionRuleName::Progressive => Self::Progressive,
            SelectionRuleName::Proportional => Self::Proportional,
            SelectionRuleName::Random => Self::Random,
        }
    }
}

/// Ability estimators, spelled as the GraphQL `EstimatorMethod` enum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EstimatorMethodName {
    /// Expected a posteriori.
    #[default]
    Eap,
    /// Maximum a posteriori.
    Map,
    /// Maximum likelihood.
    Mle,
    /// Warm's weighted likelihood.
    Wle,
}

impl From<EstimatorMethodName> for irt::EstimatorMethod {
    fn from(method: EstimatorMethodName) -> Self {
        match method {
            EstimatorMethodName::Eap => Self::Eap,
            EstimatorMethodName::Map => Self::Map,
            EstimatorMethodName::Mle => Self::Mle,
            EstimatorMethodName::Wle => Self::Wle,
        }
    }
}

/// Priors, spelled as the GraphQL `PriorDistribution` enum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PriorName {
    /// Normal(priorMean, priorSd).
    #[default]
    Normal,
    /// Uniform on [priorLower, priorUpper].
    Uniform,
    /// Jeffreys' prior.
    Jeffreys,
}

/// Constant-pattern rules, spelled as the GraphQL `ConstantPatternRule` enum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConstantPatternName {
    /// No special rule.
    #[default]
    Bound,
    /// The MAP estimate.
    Map,
    /// The EAP estimate.
    Eap,
    /// Step 0.7 from the current theta.
    Step,
}

/// Standard error formulas, spelled as the GraphQL `StandardErrorType` enum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StandardErrorName {
    /// 1/sqrt(information).
    #[default]
    Classic,
    /// Magis (2016) sandwich formula.
    Sandwich,
}

/// Exposure control methods, spelled as the GraphQL `ExposureMethod` enum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExposureMethodName {
    /// Van der Linden–Veldkamp item eligibility.
    #[default]
    ItemEligibility,
    /// Sympson–Hetter.
    SympsonHetter,
}

impl EstimatorFile {
    /// The estimator settings, with the API's defaults (`scaling` is set from the bank later).
    pub fn settings(&self) -> irt::EstimatorSettings {
        let theta_min = self.theta_min.unwrap_or(-4.0);
        let theta_max = self.theta_max.unwrap_or(4.0);
        irt::EstimatorSettings {
            method: self.method.unwrap_or_default().into(),
            prior: match self.prior.unwrap_or_default() {
                PriorName::Normal => irt::Prior::Normal {
                    mean: self.prior_mean.unwrap_or(0.0),
                    sd: self.prior_sd.unwrap_or(1.0),
                },
                PriorName::Uniform => irt::Prior::Uniform {
                    lower: self.prior_lower.unwrap_or(theta_min),
                    upper: self.prior_upper.unwrap_or(theta_max),
                },
                PriorName::Jeffreys => irt::Prior::Jeffreys,
            },
            constant_pattern: match self.constant_pattern_rule.unwrap_or_default() {
                ConstantPatternName::Bound => irt::ConstantPatternRule::Bound,
                ConstantPatternName::Map => irt::ConstantPatternRule::Map,
                ConstantPatternName::Eap => irt::ConstantPatternRule::Eap,
                ConstantPatternName::Step => irt::ConstantPatternRule::Step,
            },
            se_type: match self.standard_error_type.unwrap_or_default() {
                StandardErrorName::Classic => irt::SeType::Classic,
                StandardErrorName::Sandwich => irt::SeType::Sandwich,
            },
            // Out-of-range values fail validation with a clear message instead of wrapping.
            quadrature_points: usize::try_from(self.quadrature_points.unwrap_or(33)).unwrap_or(0),
            theta_min,
            theta_max,
            ..irt::EstimatorSettings::default()
        }
    }

    /// The same estimator with every default written out (priorLower/priorUpper only for a
    /// uniform prior, priorMean/priorSd only for a normal one).
    pub fn resolved(&self) -> Self {
        let prior = self.prior.unwrap_or_default();
        let theta_min = self.theta_min.unwrap_or(-4.0);
        let theta_max = self.theta_max.unwrap_or(4.0);
        let normal = prior == PriorName::Normal;
        let uniform = prior == PriorName::Uniform;
        Self {
            method: Some(self.method.unwrap_or_default()),
            prior_mean: normal.then(|| self.prior_mean.unwrap_or(0.0)),
            prior_sd: normal.then(|| self.prior_sd.unwrap_or(1.0)),
            quadrature_points: Some(self.quadrature_points.unwrap_or(33)),
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

impl DesignFile {
    /// Reads a design file (a JSON object).
    ///
    /// # Errors
    /// When the JSON does not match the format (unknown fields are refused, with their name).
    pub fn from_json(text: &str) -> anyhow::Result<Self> {
        serde_json::from_str(text).map_err(|e| anyhow::anyhow!("invalid design: {e}"))
    }

    /// The same design with every API default written out: what the simulation ran, in the
    /// file's own format (echoed in the summary; can be read back as a design file).
    pub fn resolved(&self) -> Self {
        Self {
            item_bank_id: None,
            max_items: Some(self.max_items.unwrap_or(DEFAULT_MAX_ITEMS)),
            min_items: Some(self.min_items.unwrap_or(DEFAULT_MIN_ITEMS)),
            se_target: self.se_target,
            initial_theta: Some(self.initial_theta.unwrap_or(0.0)),
            randomesque: Some(self.randomesque.unwrap_or(DEFAULT_RANDOMESQUE)),
            estimator: Some(self.estimator.clone().unwrap_or_default().resolved()),
            selection_rule: Some(self.selection_rule.unwrap_or_default()),
            exposure: self.exposure.as_ref().map(|e| ExposureFile {
                method: Some(e.method.unwrap_or_default()),
                max_rate: e.max_rate,
            }),
            content_balance: self.content_balance.clone(),
            start_item_ids: Some(self.start_item_ids.clone().unwrap_or_default()),
            cut_score: self.cut_score,
            confidence_level: Some(self.confidence_level.unwrap_or(DEFAULT_CONFIDENCE_LEVEL)),
            min_information: self.min_information,
            max_duration_seconds: self.max_duration_seconds,
        }
    }

    /// The request `startExam` would make of this design on `bank` (`item_bank_id` 0),
    /// with the API's defaults.
    ///
    /// # Errors
    /// When a start item is not an `externalId` of the bank.
    pub fn to_request(&self, bank: &SimBank) -> anyhow::Result<ExamRequest> {
        let start_item_ids = self
            .start_item_ids
            .iter()
            .flatten()
            .map(|external| {
                bank.id_of(external).ok_or_else(|| {
                    anyhow::anyhow!("startItemIds: no item of the bank has externalId {external:?}")
                })
            })
            .collect::<anyhow::Result<Vec<i64>>>()?;
        Ok(ExamRequest {
            item_bank_id: 0,
            max_items: self.max_items.unwrap_or(DEFAULT_MAX_ITEMS),
            min_items: self.min_items.unwrap_or(DEFAULT_MIN_ITEMS),
            se_target: self.se_target,
            initial_theta: self.initial_theta.unwrap_or(0.0),
            randomesque: self.randomesque.unwrap_or(DEFAULT_RANDOMESQUE),
            estimator: self
                .estimator
                .as_ref()
                .map_or_else(irt::EstimatorSettings::default, EstimatorFile::settings),
            selection_rule: self.selection_rule.unwrap_or_default().into(),
            exposure: self.exposure.as_ref().map(|e| irt::ExposureControl {
                method: match e.method.unwrap_or_default() {
                    ExposureMethodName::ItemEligibility => irt::ExposureMethod::ItemEligibility,
                    ExposureMethodName::SympsonHetter => irt::ExposureMethod::SympsonHetter,
                },
                max_rate: e.max_rate,
            }),
            content_balance: self.content_balance.as_ref().map(|targets| {
                targets
                    .iter()
                    .map(|t| (t.content_area.clone(), t.proportion))
                    .collect()
            }),
            start_item_ids,
            cut_score: self.cut_score,
            confidence_level: self.confidence_level.unwrap_or(DEFAULT_CONFIDENCE_LEVEL),
            min_information: self.min_information,
            max_duration_seconds: self.max_duration_seconds,
        })
    }

    /// The engine design, checked by [`exam::design_from_request`] against `bank` exactly as
    /// `startExam` checks it. Its seed is 0: each simulated exam sets its own.
    ///
    /// # Errors
    /// Whatever `startExam` would refuse, with the API's message.
    pub fn to_design(&self, bank: &SimBank) -> anyhow::Result<ExamDesign> {
        let request = self.to_request(bank)?;
        exam::design_from_request(&request, &bank.bank, 0)
            .map_err(|e| anyhow::anyhow!("invalid design: {e}"))
    }
}
