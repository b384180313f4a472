//! Pure psychometrics of the adaptive engine: item response theory (IRT).
//!
//! This module owns the maths of computerized adaptive testing and nothing
//! else. It does no I/O, holds no state, is not async and imports nothing from
//! the rest of the crate (only `std`, `serde`, `thiserror` and `rand`), so it can
//! be tested against reference values in isolation.
//!
//! * [`model`]: the dichotomous four-parameter logistic model (4PL): response
//!   probability and Fisher information of an item ([`probability`],
//!   [`information`]).
//! * [`mod@estimate`]: ability estimation from a response pattern: EAP, MAP
//!   (Bayes modal), MLE and WLE with their standard errors, matching the R
//!   package catR 3.17 (`thetaEst`, `semTheta`, `eapEst`, `eapSem`).
//! * [`select`]: next-item selection by maximum Fisher information with
//!   randomesque exposure control.
//! * [`stop`]: the stopping rule of a test (length, precision, bank exhausted).
//! * [`mod@calibrate`]: online calibration of pretest items (FIXED_THETA, OEM, MEM) on the
//!   operational scale.
//!
//! References used throughout:
//! * Magis, D. & Raîche, G. (2012). Random generation of response patterns
//!   under computerized adaptive testing with the R package catR. *Journal of
//!   Statistical Software*, 48(8). Magis, D. & Barrada, J. R. (2017).
//!   Computerized adaptive testing with R: recent updates of the package catR.
//!   *Journal of Statistical Software, Code Snippets*, 76(1).
//! * Lord, F. M. (1980). *Applications of item response theory to practical
//!   testing problems*. Erlbaum.
//! * Bock, R. D. & Mislevy, R. J. (1982). Adaptive EAP estimation of ability in
//!   a microcomputer environment. *Applied Psychological Measurement*, 6(4).
//! * Warm, T. A. (1989). Weighted likelihood estimation of ability in item
//!   response theory. *Psychometrika*, 54(3).
//! * Magis, D. (2016). Efficient standard error formulas of ability
//!   estimators with dichotomous item response models. *Psychometrika*, 81(1).

pub mod calibrate;
pub mod content;
pub mod estimate;
pub mod exposure;
pub mod item;
pub mod model;
pub mod quadrature;
pub mod select;
mod simd;
pub mod stop;

pub use calibrate::{
    Calibration, CalibrationMethod, CalibrationModel, CalibrationSettings, Examinee,
    ItemCalibration, StandardErrors, calibrate,
};
pub use content::{
    ContentBalance, exclude_enemies, exclude_enemies_indexed, group_indices,
    restrict_to_content_area, restrict_to_content_area_indexed,
};
pub use estimate::{
    CONSTANT_PATTERN_STEP, ConstantPatternRule, Estimate, EstimatorMethod, EstimatorSettings,
    MAX_QUADRATURE_POINTS, MIN_QUADRATURE_POINTS, Prior, SeType, estimate, try_estimate,
};
pub use estimate::{estimate_items, log_likelihood_on_grid, try_estimate_items};
pub use exposure::{
    ExposureControl, ExposureCounts, ExposureMethod, draw_ineligible_items,
    eligibility_probability, sympson_hetter_probability, sympson_hetter_select,
};
pub use item::{CategoryTerms, InformationTerms, draw_response};
pub use item::{Item, MAX_CATEGORIES, PolytomousItem, PolytomousModel};
pub use model::{ItemParams, information, probability};
pub use select::{
    IndexOptions, IndexPath, InformationIndex, Ranking, SelectionContext, SelectionRule,
    SelectionTables, TablesKey, best_information, best_items, criterion_values, progressive_weight,
    proportional_exponent, select_item,
};
pub use select::{MAX_RANDOMESQUE, select_next_item};
pub use stop::{StopInputs, normal_quantile};
pub use stop::{StopReason, StoppingRule};

/// Invalid input to the psychometric core (settings, item parameters, rules).
///
/// Every message names the offending field and the value that was given, so
/// it can be shown to whoever configured the test.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum IrtError {
    /// `quadrature_points` outside
    /// [`MIN_QUADRATURE_POINTS`]`..=`[`MAX_QUADRATURE_POINTS`].
    #[error(
        "quadrature_points must be between {MIN_QUADRATURE_POINTS} and {MAX_QUADRATURE_POINTS}, got {0}"
    )]
    QuadraturePoints(usize),
    /// The ability range is not finite or not increasing.
    #[error("theta_min ({min}) and theta_max ({max}) must be finite with theta_min < theta_max")]
    ThetaRange {
        /// The `theta_min` given.
        min: f64,
        /// The `theta_max` given.
        max: f64,
    },
    /// The scaling constant `D` is not finite and positive.
    #[error("scaling constant D must be finite and > 0, got {0}")]
    Scaling(f64),
    /// The normal prior's mean is not finite or its sd not finite and positive.
    #[error("normal prior needs a finite mean and a finite sd > 0, got mean {mean}, sd {sd}")]
    NormalPrior {
        /// The mean given.
        mean: f64,
        /// The standard deviation given.
        sd: f64,
    },
    /// The uniform prior's bounds are not finite and increasing, or they
    /// contain fewer than two quadrature nodes of `[theta_min, theta_max]`.
    #[error(
        "uniform prior needs finite bounds with lower < upper containing at least two quadrature nodes of [theta_min, theta_max], got [{lower}, {upper}]"
    )]
    UniformPrior {
        /// The lower bound given.
        lower: f64,
        /// The upper bound given.
        upper: f64,
    },
    /// An item's parameters are outside the 4PL model's domain.
    #[error("item {index}: {reason} (a = {a}, b = {b}, c = {c}, d = {d})")]
    Item {
        /// Position of the item in the slice that was checked (0 when a single
        /// item was checked).
        index: usize,
        /// What is wrong.
        reason: &'static str,
        /// Discrimination given.
        a: f64,
        /// Difficulty given.
        b: f64,
        /// Lower asymptote given.
        c: f64,
        /// Upper asymptote given.
        d: f64,
    },
    /// A polytomous item's parameters are outside its model's domain.
    #[error("item {index}: {reason}")]
    Polytomous {
        /// Position of the item in the slice that was checked.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// `items` and `responses` have different lengths.
    #[error(
        "{items} items but {responses} responses: every answered item needs exactly one response"
    )]
    LengthMismatch {
        /// Number of items.
        items: usize,
        /// Number of responses.
        responses: usize,
    },
    /// A response outside its item's categories `0..categories`.
    #[error("response {index}: category {response} is outside 0..{categories} of its item")]
    Response {
        /// Position of the response (and its item).
        index: usize,
        /// The category score given.
        response: u32,
        /// Number of categories of the item.
        categories: usize,
    },
    /// A stopping rule that can never be satisfied consistently.
    #[error("invalid stopping rule: {0}")]
    StoppingRule(&'static str),
    /// Invalid content-balancing targets.
    #[error("invalid content balancing: {0}")]
    ContentBalance(&'static str),
    /// Invalid exposure control settings.
    #[error("invalid exposure control: {0}")]
    Exposure(&'static str),
}
