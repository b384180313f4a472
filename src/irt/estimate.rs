//! Ability estimation from a response pattern: dichotomous ([`estimate`]) or
//! any mix of 4PL, GRM and GPCM items ([`estimate_items`]).
//!
//! This module owns the estimators (EAP, MAP, MLE, WLE), their standard
//! errors, the prior distributions, the rule for constant patterns (all
//! answers right or all wrong; for polytomous items all in the lowest or all
//! in the highest category) and the likelihood on the quadrature grid
//! ([`log_likelihood_on_grid`]). It follows the R package catR 3.17
//! (`thetaEst`, `semTheta`, `eapEst`, `eapSem`; Magis & Barrada, 2017) and is
//! tested against its output (`tests/data/catr_estimates.json`).
//!
//! Notation: `x_i ∈ {0, 1}` the responses, `P_i = P_i(θ)` (see
//! [`super::model`]), `Q_i = 1 − P_i`,
//!
//! ```text
//! log L(θ) = Σ x_i ln P_i + (1 − x_i) ln Q_i
//! S(θ)     = Σ P_i'(x_i − P_i)/(P_i Q_i)       (score, catR's `r`)
//! I(θ)     = Σ P_i'²/(P_i Q_i)                 (test information)
//! J(θ)     = Σ P_i' P_i''/(P_i Q_i)            (Warm, 1989)
//! ```
//!
//! For polytomous items (and in general) with `k_i` the category score of
//! item `i` and `P_ik` its category probabilities (see [`super::item`]):
//!
//! ```text
//! log L(θ) = Σ_i ln P_{i k_i}
//! S(θ)     = Σ_i P_{i k_i}'/P_{i k_i}           (catR's `dl` for `model`)
//! I(θ)     = Σ_i Σ_k P_ik'²/P_ik                (Samejima, 1969)
//! J(θ)     = Σ_i Σ_k P_ik' P_ik''/P_ik          (Samejima, 1998; catR's `Ji`)
//! ```
//!
//! which reduce to the dichotomous expressions for two categories. Every
//! estimator below is the same for any mix of items: only these sums (and
//! `I'`, `I''`, `J'`, see [`InformationTerms`]) change. Per item they come
//! from [`Item::category_terms`]: closed forms of `ln P_k` and its
//! derivatives that stay finite in both tails, so the log-likelihood is
//! summed in log space (never as a product of probabilities) and thousands
//! of answers never underflow (catR's `thetaEst` returns NaN from about
//! 1,500 answers on).
//!
//! * **EAP** (Bock & Mislevy, 1982; catR `eapEst`/`eapSem`): posterior mean
//!   and posterior standard deviation on `quadrature_points` equally spaced
//!   nodes `x_0 = theta_min, …, x_{n−1} = theta_max`, integrated with catR's
//!   trapezoid rule `∫ y ≈ Σ_k (x_{k+1} − x_k)(y_k + y_{k+1})/2`:
//!   `θ̂ = ∫ θ L π / ∫ L π`, `SE = sqrt(∫ (θ − θ̂)² L π / ∫ L π)`. The
//!   likelihood at each node is accumulated as `mantissa · 2^exponent`,
//!   renormalized after every item (log space in effect, with one `ln` per
//!   node rather than per item and node); a polytomous item adds its exact
//!   `ln P_k` at every node instead. The maximum log posterior is
//!   subtracted before exponentiating, so thousands of answers never
//!   underflow. No allocation: the nodes live in stack buffers of
//!   [`MAX_QUADRATURE_POINTS`].
//! * **MAP** (Bayes modal, catR "BM"): the maximizer of `log L + log π` on
//!   `[theta_min, theta_max]` (on `[lower, upper] ∩ [theta_min, theta_max]`
//!   for a uniform prior, whose MAP is the MLE there), i.e. a root of
//!   `S(θ) + (log π)'(θ)`: `(μ − θ)/σ²` for the normal prior, `0` for the
//!   uniform one, `I'(θ)/(2 I(θ))` for Jeffreys' prior `π ∝ sqrt(I)`.
//! * **MLE** (catR "ML"): the maximizer of `log L` on the range (a root of
//!   `S`); all-correct and all-wrong patterns give the upper and lower bound
//!   (also all-highest and all-lowest polytomous patterns: the score of the
//!   top category, `D·a·σ̄(z_m)` for the GRM and `D·a·(m − E[K])` for the
//!   GPCM, is positive everywhere).
//! * **WLE** (Warm, 1989; catR "WL"): a root of `S(θ) + J(θ)/(2 I(θ))`, with
//!   the general `J` above for polytomous items (Samejima, 1998). It is
//!   finite for constant patterns. For GPCM items `J = I'`, so, as for the
//!   2PL, the WLE is the MAP under Jeffreys' prior.
//!
//! Standard errors (catR `semTheta`). Write the estimating equation as
//! `T(θ) = S(θ) + r(θ) = 0`, with `r = (log π)'` for MAP and `r = J/(2I)` for
//! WLE. "Classic" is the inverse square root of the (posterior) information;
//! "sandwich" is catR's `sem.type = "new"` (Magis, 2016): since
//! `Var(S) = I` and `E[−T'] = I − r'`, `Var(θ̂) ≈ I/(I − r')²`. That
//! derivation uses only `E[S] = 0` and `Var(S) = E[−S'] = I`, which hold for
//! every item model (`Σ_k P_k' = Σ_k P_k'' = 0`), so the same formulas apply
//! to polytomous and mixed patterns with their `I`, `I'`, `I''`, `J`, `J'`
//! (catR 3.17 computes only the classic SE for polytomous models):
//!
//! | estimator | classic | sandwich |
//! |---|---|---|
//! | MLE | `1/sqrt(I)` | `1/sqrt(I)` (same) |
//! | MAP | `1/sqrt(I − (log π)'')` | `sqrt(I)/abs(I − (log π)'')` |
//! | WLE | `1/sqrt(I)` | `sqrt(I)/abs(I − (J/(2I))')` |
//!
//! with `(log π)'' = −1/σ²` (normal), `0` (uniform),
//! `(½ ln I)'' = (I''·I − I'²)/(2I²)` (Jeffreys), and
//! `(J/(2I))' = (J'·I − J·I')/(2I²)`, all at `θ̂`. When the classic
//! denominator is not positive (possible for Jeffreys' prior far in the tails)
//! `1/sqrt(I)` is returned instead of catR's NaN. These match catR's output
//! to the last digit at catR's own root (reference cases
//! `2PL_10_prior_Jeffreys_BM`, `3PL_20_BM_semType_new`,
//! `3PL_20_WL_semType_new`). One deliberate difference: catR's `semTheta`
//! evaluates the Jeffreys and WLE correction terms `I'`, `I''`, `J`, `J'`
//! with `D = 1` whatever `D` is (its helper is called without `D`); here they
//! use `scaling`, consistently with the estimate itself. Results differ from
//! catR only for those two SEs with `D ≠ 1`.
//!
//! Roots are located as follows. The estimating function `T` is evaluated on
//! a scan grid of step ≤ 0.25 over the range; every sign change from `+` to
//! `−` (a local maximum of the objective) is refined with Brent's method
//! (R's `zeroin`, tolerance 1e-13), and a bound is a candidate when `T`
//! points outwards there (`T(lo) ≤ 0`, `T(hi) ≥ 0`). With a single candidate
//! (every unimodal case) this is exactly catR's rule (`uniroot` on the range,
//! or the bound when `T` has the same sign at both ends). With several
//! candidates (multimodal 3PL likelihoods) the one with the largest objective
//! wins: `log L + log π` for MAP and MLE; for WLE, which has no objective in
//! general, Warm's penalized likelihood `log L + ½ ln I` (exact for the
//! 1PL/2PL and the GPCM, a tie-breaker otherwise). Two roots closer than the
//! scan step can be missed. The same holds for polytomous patterns, where
//! the WLE can be bimodal too: one GRM item answered in its middle category
//! with widely spaced boundaries (`D·a·(b_2 − b_1)` above about 4) has two
//! WLE roots symmetric about `(b_1 + b_2)/2` (the information dips between
//! the boundaries), with equal penalized likelihoods; either may be
//! returned.

use serde::{Deserialize, Serialize};

use super::IrtError;
use super::item::{
    CategoryTerms, InformationTerms, Item, MAX_CATEGORIES, PolytomousItem, add_log_probabilities,
    polytomous_terms,
};
use super::model::{ItemParams, ItemTerms, information, response_probability};

/// Smallest accepted [`EstimatorSettings::quadrature_points`].
pub const MIN_QUADRATURE_POINTS: usize = 2;
/// Largest accepted [`EstimatorSettings::quadrature_points`] (the EAP keeps its
/// nodes in a stack buffer of this size: no allocation per estimate).
pub const MAX_QUADRATURE_POINTS: usize = 1001;
/// Step of [`ConstantPatternRule::Step`] (catR's `constantPatt = "fixed7"`).
pub const CONSTANT_PATTERN_STEP: f64 = 0.7;

/// Largest distance between two points of the root scan grid.
const SCAN_STEP: f64 = 0.25;
/// Largest number of scan intervals (very wide ranges get a coarser scan).
const MAX_SCAN_INTERVALS: usize = 400;
/// Absolute tolerance passed to Brent's method.
const ROOT_TOLERANCE: f64 = 1e-13;
/// Iteration cap of Brent's method (it converges in far fewer).
const ROOT_MAX_ITERATIONS: usize = 500;

/// The ability estimator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EstimatorMethod {
    /// Expected a posteriori (posterior mean), catR "EAP".
    Eap,
    /// Maximum a posteriori (posterior mode), catR "BM".
    Map,
    /// Maximum likelihood, catR "ML".
    Mle,
    /// Warm's weighted likelihood, catR "WL".
    Wle,
}

/// Prior distribution of ability (used by EAP and MAP, and by the
/// [`ConstantPatternRule::Map`]/[`ConstantPatternRule::Eap`] fallbacks).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Prior {
    /// Normal `N(mean, sd²)`, catR `priorDist = "norm"`.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation, `> 0`.
        sd: f64,
    },
    /// Uniform on `[lower, upper]` (density `1/(upper − lower)` inside,
    /// endpoints included, 0 outside), catR `priorDist = "unif"`.
    Uniform {
        /// Lower bound.
        lower: f64,
        /// Upper bound, `> lower`.
        upper: f64,
    },
    /// Jeffreys' non-informative prior `π(θ) ∝ sqrt(I(θ))` over the answered
    /// items, catR `priorDist = "Jeffreys"`.
    Jeffreys,
}

/// Standard error formula of the MAP and WLE estimators (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeType {
    /// Inverse square root of the (posterior) information, catR
    /// `sem.type = "classic"`.
    Classic,
    /// Magis (2016) sandwich form `sqrt(I)/|T'|`, catR `sem.type = "new"`.
    /// Same as [`SeType::Classic`] for MLE.
    Sandwich,
}

/// What MLE and WLE do when all responses are equal (all right or all wrong).
/// Other estimators ignore it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConstantPatternRule {
    /// No special treatment (catR's default `constantPatt = NULL`): the MLE
    /// goes to `theta_max`/`theta_min`, the WLE keeps its own finite value.
    Bound,
    /// Use the MAP estimate and its standard error with the settings' prior
    /// (catR `constantPatt = "BM"`).
    Map,
    /// Use the EAP estimate and posterior SD (catR `constantPatt = "EAP"`).
    Eap,
    /// Move [`CONSTANT_PATTERN_STEP`] from `current_theta`, up after all
    /// correct and down after all wrong, clamped to the range (catR
    /// `constantPatt = "fixed7"`). catR then reports an infinite SE; this
    /// returns `1/sqrt(I)` at the new value instead, so it stays finite.
    Step,
}

/// Everything an ability estimate depends on besides the responses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EstimatorSettings {
    /// The estimator.
    pub method: EstimatorMethod,
    /// The ability prior (EAP, MAP and the constant-pattern fallbacks).
    pub prior: Prior,
    /// Number of EAP quadrature nodes on `[theta_min, theta_max]`, in
    /// [`MIN_QUADRATURE_POINTS`]`..=`[`MAX_QUADRATURE_POINTS`] (catR `parInt[3]`).
    pub quadrature_points: usize,
    /// Lower end of the ability range: the search interval of MAP/MLE/WLE
    /// (catR `range`) and the first EAP node (catR `parInt[1]`).
    pub theta_min: f64,
    /// Upper end of the ability range (catR `range[2]` and `parInt[2]`).
    pub theta_max: f64,
    /// Scaling constant `D` of the logistic model (1 or 1.702).
    pub scaling: f64,
    /// Standard error formula for MAP and WLE.
    pub se_type: SeType,
    /// Rule for constant patterns under MLE and WLE.
    pub constant_pattern: ConstantPatternRule,
}

impl Default for EstimatorSettings {
    /// EAP with a standard normal prior, 33 nodes on `[-4, 4]`, `D = 1`,
    /// classic SE, [`ConstantPatternRule::Bound`] (catR's defaults).
    fn default() -> Self {
        Self {
            method: EstimatorMethod::Eap,
            prior: Prior::Normal { mean: 0.0, sd: 1.0 },
            quadrature_points: 33,
            theta_min: -4.0,
            theta_max: 4.0,
            scaling: 1.0,
            se_type: SeType::Classic,
            constant_pattern: ConstantPatternRule::Bound,
        }
    }
}

impl EstimatorSettings {
    /// Checks that the settings can be used: quadrature points in
    /// [`MIN_QUADRATURE_POINTS`]`..=`[`MAX_QUADRATURE_POINTS`], finite
    /// `theta_min < theta_max`, finite `scaling > 0`, a normal prior with a
    /// finite mean and finite `sd > 0`, a uniform prior with finite
    /// `lower < upper` containing at least two quadrature nodes (otherwise the
    /// EAP posterior would be a single point with a zero SD).
    ///
    /// # Errors
    /// The first violated condition, as an [`IrtError`].
    pub fn validate(&self) -> Result<(), IrtError> {
        if !(MIN_QUADRATURE_POINTS..=MAX_QUADRATURE_POINTS).contains(&self.quadrature_points) {
            return Err(IrtError::QuadraturePoints(self.quadrature_points));
        }
        if !(self.theta_min.is_finite()
            && self.theta_max.is_finite()
            && self.theta_min < self.theta_max)
        {
            return Err(IrtError::ThetaRange {
                min: self.theta_min,
                max: self.theta_max,
            });
        }
        if !(self.scaling.is_finite() && self.scaling > 0.0) {
            return Err(IrtError::Scaling(self.scaling));
        }
        match self.prior {
            Prior::Normal { mean, sd } => {
                if !(mean.is_finite() && sd.is_finite() && sd > 0.0) {
                    return Err(IrtError::NormalPrior { mean, sd });
                }
            }
            Prior::Uniform { lower, upper } => {
                let ok = lower.is_finite()
                    && upper.is_finite()
                    && lower < upper
                    && self
                        .nodes()
                        .filter(|x| (lower..=upper).contains(x))
                        .nth(1)
                        .is_some();
                if !ok {
                    return Err(IrtError::UniformPrior { lower, upper });
                }
            }
            Prior::Jeffreys => {}
        }
        Ok(())
    }
}

impl EstimatorSettings {
    /// The EAP quadrature nodes: `quadrature_points` equally spaced values
    /// from `theta_min` to `theta_max` (R's `seq(theta_min, theta_max,
    /// length.out = quadrature_points)`, the last one exactly `theta_max`).
    pub fn nodes(&self) -> impl Iterator<Item = f64> + use<> {
        grid(self.theta_min, self.theta_max, self.quadrature_points)
    }
}

/// `n.max(2)` equally spaced values from `lo` to `hi`, the last exactly `hi`.
fn grid(lo: f64, hi: f64, n: usize) -> impl Iterator<Item = f64> {
    let n = n.max(2);
    let step = (hi - lo) / (n - 1) as f64;
    (0..n).map(move |k| if k + 1 == n { hi } else { lo + k as f64 * step })
}

/// An ability estimate and its standard error.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Estimated ability, always within `[theta_min, theta_max]`.
    pub theta: f64,
    /// Its standard error (posterior SD for EAP). Positive; `+∞` only when the
    /// answered items carry no information at all at `theta` (degenerate
    /// items).
    pub standard_error: f64,
}

/// Estimates ability from `responses` (`true` = correct) to `items`.
///
/// * No responses: no estimator is run; the result is `current_theta`
///   clamped to `[theta_min, theta_max]` (the prior centre if `current_theta`
///   is not finite) with the prior's SD as standard error: `sd` for the
///   normal prior, `(upper − lower)/√12` for the uniform one and
///   `(theta_max − theta_min)/√12` for Jeffreys' (flat when nothing was
///   answered).
/// * Otherwise the estimator of `settings.method`, with
///   `settings.constant_pattern` applied to MLE/WLE when all responses are
///   equal; `current_theta` is only read by [`ConstantPatternRule::Step`].
///
/// `settings` and `items` are assumed valid ([`EstimatorSettings::validate`],
/// [`ItemParams::validate`]); [`try_estimate`] checks them. With invalid input
/// the result is unspecified but this does not panic (beyond the length check).
///
/// # Panics
/// If `items.len() != responses.len()`.
#[must_use]
pub fn estimate(
    settings: &EstimatorSettings,
    items: &[ItemParams],
    responses: &[bool],
    current_theta: f64,
) -> Estimate {
    assert_eq!(
        items.len(),
        responses.len(),
        "estimate: every answered item needs exactly one response"
    );
    run(settings, Binary { items, responses }, current_theta)
}

/// The checks both `try_estimate*` make first, in this order: the settings, equal
/// lengths, then every item.
fn check_inputs<T>(
    settings: &EstimatorSettings,
    items: &[T],
    responses: usize,
    validate_at: impl Fn(&T, usize) -> Result<(), IrtError>,
) -> Result<(), IrtError> {
    settings.validate()?;
    if items.len() != responses {
        return Err(IrtError::LengthMismatch {
            items: items.len(),
            responses,
        });
    }
    items
        .iter()
        .enumerate()
        .try_for_each(|(index, item)| validate_at(item, index))
}

/// [`estimate`] after validating the settings, the items and the lengths.
///
/// # Errors
/// [`IrtError::LengthMismatch`], or the first error of
/// [`EstimatorSettings::validate`] or [`ItemParams::validate_at`].
pub fn try_estimate(
    settings: &EstimatorSettings,
    items: &[ItemParams],
    responses: &[bool],
    current_theta: f64,
) -> Result<Estimate, IrtError> {
    check_inputs(settings, items, responses.len(), ItemParams::validate_at)?;
    Ok(estimate(settings, items, responses, current_theta))
}

/// Estimates ability from the category scores `responses` to `items` of any
/// mix of models (4PL, GRM, GPCM): `responses[i]` is in
/// `0..items[i].categories()` (0/1 for a dichotomous item).
///
/// Same estimators, priors, standard errors and rules as [`estimate`] (see the
/// module doc for the polytomous formulas). A pattern is constant when every
/// response is the lowest category of its item, or every response is the
/// highest; [`ConstantPatternRule::Step`] then moves up after all-highest and
/// down after all-lowest.
///
/// When every item is dichotomous this runs the very code of [`estimate`]
/// (response `0` is wrong, anything else right) and returns bit for bit the
/// same result.
///
/// Input is assumed valid ([`try_estimate_items`] checks it); a response past
/// an item's last category is read as the last category. With invalid input
/// the result is unspecified but this does not panic (beyond the length check).
///
/// # Panics
/// If `items.len() != responses.len()`.
#[must_use]
pub fn estimate_items(
    settings: &EstimatorSettings,
    items: &[Item],
    responses: &[u32],
    current_theta: f64,
) -> Estimate {
    assert_eq!(
        items.len(),
        responses.len(),
        "estimate_items: every answered item needs exactly one response"
    );
    if items
        .iter()
        .all(|item| matches!(item, Item::Dichotomous(_)))
    {
        run(settings, Binary { items, responses }, current_theta)
    } else {
        run(settings, Mixed { items, responses }, current_theta)
    }
}

/// [`estimate_items`] after validating the settings, the lengths, the items
/// and the responses.
///
/// # Errors
/// The first error of [`EstimatorSettings::validate`], then
/// [`IrtError::LengthMismatch`], then the first item error of
/// [`Item::validate_at`], then [`IrtError::Response`] for the first response
/// outside its item's categories.
pub fn try_estimate_items(
    settings: &EstimatorSettings,
    items: &[Item],
    responses: &[u32],
    current_theta: f64,
) -> Result<Estimate, IrtError> {
    check_inputs(settings, items, responses.len(), Item::validate_at)?;
    for (index, (item, &response)) in items.iter().zip(responses).enumerate() {
        let categories = item.categories();
        if usize::try_from(response).map_or(true, |r| r >= categories) {
            return Err(IrtError::Response {
                index,
                response,
                categories,
            });
        }
    }
    Ok(estimate_items(settings, items, responses, current_theta))
}

/// The log-likelihood `Σ_i ln P(K_i = responses[i] | θ)` of the answers at
/// every quadrature node `θ` of [`EstimatorSettings::nodes`] (in that order),
/// written into `out` (cleared first; `out.len()` becomes the number of
/// nodes). No constant is dropped: `exp` of a value is the likelihood
/// itself, but with many answers it is far below the smallest double, so
/// subtract the maximum over the nodes before exponentiating (as the EAP
/// does).
///
/// This is the likelihood the EAP integrates (before the prior), for item
/// selection rules that integrate over the likelihood or the posterior
/// (KL, MLWI, MPWI, …) and for simulations. Dichotomous items contribute
/// `ln P` / `ln Q` with `P`, `Q` at least `(d − c)·e^−700` (see
/// [`super::model`]), accumulated as a product renormalized after every item
/// as in the EAP; polytomous items contribute their exact `ln P_k`
/// ([`Item::log_probability`]). The values are finite for valid input however
/// many answers there are; only `settings.theta_min`, `theta_max`,
/// `quadrature_points` and `scaling` are read (not validated here: fewer than
/// two points give two nodes, more than [`MAX_QUADRATURE_POINTS`] are
/// accepted). A response past an item's last category is read as the last.
///
/// # Panics
/// If `items.len() != responses.len()`.
pub fn log_likelihood_on_grid(
    settings: &EstimatorSettings,
    items: &[Item],
    responses: &[u32],
    out: &mut Vec<f64>,
) {
    assert_eq!(
        items.len(),
        responses.len(),
        "log_likelihood_on_grid: every answered item needs exactly one response"
    );
    out.clear();
    out.extend(settings.nodes());
    let mut node_buf = [0.0_f64; MAX_QUADRATURE_POINTS];
    for chunk in out.chunks_mut(MAX_QUADRATURE_POINTS) {
        let nodes = &mut node_buf[..chunk.len()];
        nodes.copy_from_slice(chunk);
        Mixed { items, responses }.log_likelihood(nodes, settings.scaling, chunk);
    }
}

/// Runs the estimator of `settings` on a response pattern (see [`estimate`]).
fn run<P: Pattern>(settings: &EstimatorSettings, pattern: P, current_theta: f64) -> Estimate {
    if pattern.is_empty() {
        return prior_estimate(settings, current_theta);
    }
    let mut method = settings.method;
    if matches!(method, EstimatorMethod::Mle | EstimatorMethod::Wle) {
        if let Some(highest) = pattern.constant() {
            match settings.constant_pattern {
                ConstantPatternRule::Bound => {}
                ConstantPatternRule::Map => method = EstimatorMethod::Map,
                ConstantPatternRule::Eap => method = EstimatorMethod::Eap,
                ConstantPatternRule::Step => {
                    let from = if current_theta.is_finite() {
                        current_theta
                    } else {
                        prior_center(settings)
                    };
                    let step = if highest {
                        CONSTANT_PATTERN_STEP
                    } else {
                        -CONSTANT_PATTERN_STEP
                    };
                    let theta = clamp_to_range(from + step, settings.theta_min, settings.theta_max);
                    let info = pattern.information(theta, settings.scaling);
                    return Estimate {
                        theta,
                        standard_error: 1.0 / info.sqrt(),
                    };
                }
            }
        }
    }
    match method {
        EstimatorMethod::Eap => {
            eap(settings, pattern).unwrap_or_else(|| prior_estimate(settings, current_theta))
        }
        EstimatorMethod::Map => match settings.prior {
            Prior::Normal { mean, sd } => {
                modal(settings, pattern, Equation::MapNormal { mean, sd })
            }
            Prior::Uniform { .. } => modal(settings, pattern, Equation::MapUniform),
            Prior::Jeffreys => modal(settings, pattern, Equation::MapJeffreys),
        },
        EstimatorMethod::Mle => modal(settings, pattern, Equation::Mle),
        EstimatorMethod::Wle => modal(settings, pattern, Equation::Wle),
    }
}

/// A response pattern as the estimators see it: everything they compute from
/// the items and the responses. Two implementations: [`Binary`] (4PL items and
/// right/wrong answers, the fast path of [`estimate`]) and [`Mixed`] (any
/// items and category scores).
trait Pattern: Copy {
    /// No answers.
    fn is_empty(self) -> bool;
    /// `Some(true)` when every response is its item's highest category,
    /// `Some(false)` when every one is the lowest, `None` otherwise.
    fn constant(self) -> Option<bool>;
    /// Test information `Σ I_i(θ)`.
    fn information(self, theta: f64, scaling: f64) -> f64;
    /// The sums of the modal estimators at `theta`.
    fn sums(self, theta: f64, scaling: f64) -> Sums;
    /// `(log L(θ), I(θ))`, for the objective of [`Equation::objective`].
    fn log_likelihood_and_information(self, theta: f64, scaling: f64) -> (f64, f64);
    /// Writes `log L` at every node into `out` (`nodes.len() == out.len() ≤`
    /// [`MAX_QUADRATURE_POINTS`]).
    fn log_likelihood(self, nodes: &[f64], scaling: f64, out: &mut [f64]);
}

/// A dichotomous item, stored as [`ItemParams`] or as [`Item::Dichotomous`].
trait AsParams {
    /// The 4PL parameters.
    fn params(&self) -> &ItemParams;
}

impl AsParams for ItemParams {
    #[inline(always)]
    fn params(&self) -> &ItemParams {
        self
    }
}

impl AsParams for Item {
    #[inline(always)]
    fn params(&self) -> &ItemParams {
        match self {
            Item::Dichotomous(p) => p,
            // `Binary` over `Item`s is only built after checking that every
            // item is dichotomous (`estimate_items`).
            Item::Polytomous(_) => unreachable!("Binary pattern with a polytomous item"),
        }
    }
}

/// A right/wrong response, stored as `bool` or as a category score.
trait AsCorrect: Copy {
    /// Whether the answer is right.
    fn correct(self) -> bool;
}

impl AsCorrect for bool {
    #[inline(always)]
    fn correct(self) -> bool {
        self
    }
}

impl AsCorrect for u32 {
    #[inline(always)]
    fn correct(self) -> bool {
        self != 0
    }
}

/// Dichotomous items and right/wrong responses (same lengths).
struct Binary<'a, T, R> {
    /// The items.
    items: &'a [T],
    /// The responses.
    responses: &'a [R],
}

// Not derived: the derive would require `T: Copy` and `R: Copy`.
impl<T, R> Clone for Binary<'_, T, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T, R> Copy for Binary<'_, T, R> {}

impl<T: AsParams, R: AsCorrect> Pattern for Binary<'_, T, R> {
    fn is_empty(self) -> bool {
        self.responses.is_empty()
    }

    fn constant(self) -> Option<bool> {
        let first = self.responses.first()?.correct();
        self.responses
            .iter()
            .all(|x| x.correct() == first)
            .then_some(first)
    }

    fn information(self, theta: f64, scaling: f64) -> f64 {
        self.items
            .iter()
            .map(|it| information(it.params(), theta, scaling))
            .sum()
    }

    fn sums(self, theta: f64, scaling: f64) -> Sums {
        let mut s = Sums::default();
        for (item, &x) in self.items.iter().zip(self.responses) {
            s.add_dichotomous(&ItemTerms::new(item.params(), theta, scaling), x.correct());
        }
        s
    }

    fn log_likelihood_and_information(self, theta: f64, scaling: f64) -> (f64, f64) {
        let mut log_lik = 0.0;
        let mut info = 0.0;
        for (item, &x) in self.items.iter().zip(self.responses) {
            let t = ItemTerms::new(item.params(), theta, scaling);
            log_lik += t.log_prob(x.correct());
            info += t.info;
        }
        (log_lik, info)
    }

    fn log_likelihood(self, nodes: &[f64], scaling: f64, out: &mut [f64]) {
        for (nodes, out) in nodes
            .chunks(LIKELIHOOD_CHUNK)
            .zip(out.chunks_mut(LIKELIHOOD_CHUNK))
        {
            let mut acc = Likelihood::new(nodes.len());
            for (item, &x) in self.items.iter().zip(self.responses) {
                acc.multiply(item.params(), x.correct(), nodes, scaling);
            }
            acc.write_log(out);
        }
    }
}

/// Items of any model and category scores (same lengths).
#[derive(Clone, Copy)]
struct Mixed<'a> {
    /// The items.
    items: &'a [Item],
    /// The category scores.
    responses: &'a [u32],
}

/// A category score as an index, saturating (it is clamped to the item's
/// categories where it is used).
fn category(response: u32) -> usize {
    usize::try_from(response).unwrap_or(usize::MAX)
}

impl Pattern for Mixed<'_> {
    fn is_empty(self) -> bool {
        self.responses.is_empty()
    }

    fn constant(self) -> Option<bool> {
        let pairs = || self.items.iter().zip(self.responses);
        if pairs().all(|(_, &x)| x == 0) {
            Some(false)
        } else if pairs().all(|(item, &x)| category(x) >= item.categories() - 1) {
            Some(true)
        } else {
            None
        }
    }

    fn information(self, theta: f64, scaling: f64) -> f64 {
        self.items
            .iter()
            .map(|it| it.information(theta, scaling))
            .sum()
    }

    fn sums(self, theta: f64, scaling: f64) -> Sums {
        let mut s = Sums::default();
        for (item, &x) in self.items.iter().zip(self.responses) {
            match item {
                Item::Dichotomous(p) => {
                    s.add_dichotomous(&ItemTerms::new(p, theta, scaling), x != 0);
                }
                Item::Polytomous(p) => {
                    let (response, terms) = polytomous(p, theta, scaling, x);
                    s.score += response.d1_log;
                    s.terms.add(&terms);
                }
            }
        }
        s
    }

    fn log_likelihood_and_information(self, theta: f64, scaling: f64) -> (f64, f64) {
        let mut log_lik = 0.0;
        let mut info = 0.0;
        for (item, &x) in self.items.iter().zip(self.responses) {
            match item {
                Item::Dichotomous(p) => {
                    let t = ItemTerms::new(p, theta, scaling);
                    log_lik += t.log_prob(x != 0);
                    info += t.info;
                }
                Item::Polytomous(p) => {
                    let (response, terms) = polytomous(p, theta, scaling, x);
                    log_lik += response.log_p;
                    info += terms.info;
                }
            }
        }
        (log_lik, info)
    }

    fn log_likelihood(self, nodes: &[f64], scaling: f64, out: &mut [f64]) {
        for (nodes, out) in nodes
            .chunks(LIKELIHOOD_CHUNK)
            .zip(out.chunks_mut(LIKELIHOOD_CHUNK))
        {
            let mut acc = Likelihood::new(nodes.len());
            let mut poly_buf = [0.0_f64; LIKELIHOOD_CHUNK];
            let poly = &mut poly_buf[..nodes.len()];
            for (item, &x) in self.items.iter().zip(self.responses) {
                match item {
                    Item::Dichotomous(p) => acc.multiply(p, x != 0, nodes, scaling),
                    Item::Polytomous(p) => {
                        add_log_probabilities(p, category(x), scaling, nodes, poly);
                    }
                }
            }
            acc.write_log(out);
            for (o, &lp) in out.iter_mut().zip(poly.iter()) {
                *o += lp;
            }
        }
    }
}

/// The [`CategoryTerms`] of the response `x` to a polytomous item and the
/// item's [`InformationTerms`] at `theta`.
fn polytomous(
    item: &PolytomousItem,
    theta: f64,
    scaling: f64,
    x: u32,
) -> (CategoryTerms, InformationTerms) {
    let mut buf = [CategoryTerms::default(); MAX_CATEGORIES];
    polytomous_terms(item, theta, scaling, &mut buf);
    let m = item.thresholds.len().min(MAX_CATEGORIES - 1);
    (
        buf[category(x).min(m)],
        InformationTerms::from_categories(&buf[..=m]),
    )
}

/// Number of nodes whose likelihood is accumulated at once: the items are
/// looped over once per chunk of nodes, so the accumulators are small stack
/// arrays (cheap to initialize) whatever the number of nodes.
const LIKELIHOOD_CHUNK: usize = 64;

/// The likelihood of dichotomous answers at up to [`LIKELIHOOD_CHUNK`]
/// nodes, as `mantissa · 2^exponent` renormalized after every item: it never
/// underflows and costs no logarithm per item.
struct Likelihood {
    /// Mantissas in `[1, 2)`.
    mantissa: [f64; LIKELIHOOD_CHUNK],
    /// Binary exponents.
    exponent: [i64; LIKELIHOOD_CHUNK],
    /// Number of nodes in use.
    n: usize,
}

impl Likelihood {
    /// The empty product at `n` nodes.
    #[inline(always)]
    fn new(n: usize) -> Self {
        Self {
            mantissa: [1.0; LIKELIHOOD_CHUNK],
            exponent: [0; LIKELIHOOD_CHUNK],
            n: n.min(LIKELIHOOD_CHUNK),
        }
    }

    /// Multiplies in `P` (`correct`) or `Q` of `item` at every node.
    #[inline(always)]
    fn multiply(&mut self, item: &ItemParams, correct: bool, nodes: &[f64], scaling: f64) {
        let n = self.n;
        for ((m, e), &theta) in self.mantissa[..n]
            .iter_mut()
            .zip(self.exponent[..n].iter_mut())
            .zip(nodes)
        {
            let (mm, ee) = split_exponent(*m * response_probability(item, theta, scaling, correct));
            *m = mm;
            *e += ee;
        }
    }

    /// Writes `ln(mantissa · 2^exponent)` into `out`.
    #[inline(always)]
    fn write_log(&self, out: &mut [f64]) {
        let n = self.n;
        for ((lp, &m), &e) in out
            .iter_mut()
            .zip(self.mantissa[..n].iter())
            .zip(self.exponent[..n].iter())
        {
            *lp = m.ln() + e as f64 * std::f64::consts::LN_2;
        }
    }
}

/// Centre of the prior (normal mean, uniform midpoint, range midpoint for
/// Jeffreys).
fn prior_center(settings: &EstimatorSettings) -> f64 {
    match settings.prior {
        Prior::Normal { mean, .. } => mean,
        Prior::Uniform { lower, upper } => 0.5 * (lower + upper),
        Prior::Jeffreys => 0.5 * (settings.theta_min + settings.theta_max),
    }
}

/// The estimate before any answer (see [`estimate`]).
fn prior_estimate(settings: &EstimatorSettings, current_theta: f64) -> Estimate {
    let sqrt12 = 12.0_f64.sqrt();
    let standard_error = match settings.prior {
        Prior::Normal { sd, .. } => sd,
        Prior::Uniform { lower, upper } => (upper - lower) / sqrt12,
        Prior::Jeffreys => (settings.theta_max - settings.theta_min) / sqrt12,
    };
    let from = if current_theta.is_finite() {
        current_theta
    } else {
        prior_center(settings)
    };
    Estimate {
        theta: clamp_to_range(from, settings.theta_min, settings.theta_max),
        standard_error,
    }
}

/// `x` clamped to `[lo, hi]` without panicking on an inverted range.
fn clamp_to_range(x: f64, lo: f64, hi: f64) -> f64 {
    x.min(hi).max(lo)
}

/// `x = m·2^e` with `m ∈ [1, 2)`, for a positive normal `x` (bit operations
/// only, so the EAP loop vectorizes).
#[inline(always)]
fn split_exponent(x: f64) -> (f64, i64) {
    const FRACTION: u64 = (1 << 52) - 1;
    const ONE: u64 = 1023 << 52;
    let bits = x.to_bits();
    let exponent = (bits >> 52) as i64 - 1023;
    (f64::from_bits((bits & FRACTION) | ONE), exponent)
}

/// EAP estimate and posterior SD (catR `eapEst`/`eapSem`), or `None` when the
/// posterior has no mass on the nodes (only with invalid settings or items).
fn eap<P: Pattern>(settings: &EstimatorSettings, pattern: P) -> Option<Estimate> {
    let n = settings
        .quadrature_points
        .clamp(MIN_QUADRATURE_POINTS, MAX_QUADRATURE_POINTS);
    let scaling = settings.scaling;
    let mut node_buf = [0.0_f64; MAX_QUADRATURE_POINTS];
    let nodes = &mut node_buf[..n];
    for (x, value) in nodes
        .iter_mut()
        .zip(grid(settings.theta_min, settings.theta_max, n))
    {
        *x = value;
    }
    let nodes: &[f64] = nodes;

    // Log posterior (up to a constant) at every node.
    let mut buffer = [0.0_f64; MAX_QUADRATURE_POINTS];
    let log_post = &mut buffer[..n];
    pattern.log_likelihood(nodes, scaling, log_post);
    match settings.prior {
        Prior::Normal { mean, sd } => {
            for (lp, &theta) in log_post.iter_mut().zip(nodes) {
                let u = (theta - mean) / sd;
                *lp -= 0.5 * u * u;
            }
        }
        Prior::Uniform { lower, upper } => {
            for (lp, theta) in log_post.iter_mut().zip(nodes) {
                if !(lower..=upper).contains(theta) {
                    *lp = f64::NEG_INFINITY;
                }
            }
        }
        Prior::Jeffreys => {
            for (lp, &theta) in log_post.iter_mut().zip(nodes) {
                *lp += 0.5 * pattern.information(theta, scaling).ln();
            }
        }
    }

    let max = log_post.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return None;
    }
    for lp in log_post.iter_mut() {
        *lp = (*lp - max).exp();
    }
    let weights: &[f64] = log_post;
    // catR's integrate.catR: Σ (x[k+1] − x[k])·(y[k] + y[k+1])/2.
    let integrate = |f: &dyn Fn(usize) -> f64| -> f64 {
        (0..n - 1)
            .map(|k| (nodes[k + 1] - nodes[k]) * (f(k) + f(k + 1)) * 0.5)
            .sum()
    };
    let mass = integrate(&|k| weights[k]);
    if !(mass > 0.0 && mass.is_finite()) {
        return None;
    }
    // A convex combination of the nodes, but rounding can put it an ulp
    // outside the range when the posterior sits on an end node.
    let theta = clamp_to_range(
        integrate(&|k| nodes[k] * weights[k]) / mass,
        settings.theta_min,
        settings.theta_max,
    );
    let variance = integrate(&|k| {
        let u = nodes[k] - theta;
        u * u * weights[k]
    }) / mass;
    Some(Estimate {
        theta,
        standard_error: variance.sqrt(),
    })
}

/// The estimating equation of a modal estimator.
#[derive(Clone, Copy, Debug)]
enum Equation {
    /// `S(θ) = 0`.
    Mle,
    /// `S(θ) + (μ − θ)/σ² = 0`.
    MapNormal {
        /// Prior mean.
        mean: f64,
        /// Prior SD.
        sd: f64,
    },
    /// `S(θ) = 0` on the prior's support intersected with the range.
    MapUniform,
    /// `S(θ) + I'(θ)/(2 I(θ)) = 0`.
    MapJeffreys,
    /// `S(θ) + J(θ)/(2 I(θ)) = 0`.
    Wle,
}

/// Sums over the answered items at one ability value.
#[derive(Clone, Copy, Debug, Default)]
struct Sums {
    /// Score `S`.
    score: f64,
    /// `I`, `I'`, `I''`, `J`, `J'`.
    terms: InformationTerms,
}

impl Sums {
    /// Adds a 4PL item's terms for a right (`correct`) or wrong answer.
    #[inline(always)]
    fn add_dichotomous(&mut self, t: &ItemTerms, correct: bool) {
        self.score += t.score(correct);
        self.terms.info += t.info;
        self.terms.d_info += t.d_info;
        self.terms.d2_info += t.d2_info;
        self.terms.j += t.j;
        self.terms.d_j += t.d_j;
    }

    /// `a / (2 I)`, 0 when there is no information.
    fn over_two_info(&self, a: f64) -> f64 {
        if self.terms.info > 0.0 {
            a / (2.0 * self.terms.info)
        } else {
            0.0
        }
    }
}

impl Equation {
    /// The estimating function `T(θ)` whose root is the estimate.
    fn value(self, s: &Sums, theta: f64) -> f64 {
        match self {
            Self::Mle | Self::MapUniform => s.score,
            Self::MapNormal { mean, sd } => s.score + (mean - theta) / (sd * sd),
            Self::MapJeffreys => s.score + s.over_two_info(s.terms.d_info),
            Self::Wle => s.score + s.over_two_info(s.terms.j),
        }
    }

    /// The objective used to choose among several roots (see the module doc),
    /// from `(log L(θ), I(θ))`.
    fn objective(self, (log_lik, info): (f64, f64), theta: f64) -> f64 {
        match self {
            Self::Mle | Self::MapUniform => log_lik,
            Self::MapNormal { mean, sd } => {
                let u = (theta - mean) / sd;
                log_lik - 0.5 * u * u
            }
            Self::MapJeffreys | Self::Wle => log_lik + 0.5 * info.ln(),
        }
    }

    /// Standard error at the estimate (table in the module doc).
    fn standard_error(self, s: &Sums, se_type: SeType) -> f64 {
        let t = &s.terms;
        let i = t.info;
        let classic = 1.0 / i.sqrt();
        // Denominator `−T'(θ̂)` of the estimating function.
        let denominator = match self {
            Self::Mle | Self::MapUniform => return classic,
            Self::MapNormal { sd, .. } => i + 1.0 / (sd * sd),
            Self::MapJeffreys => i - (t.d2_info * i - t.d_info * t.d_info) / (2.0 * i * i),
            Self::Wle => match se_type {
                SeType::Classic => return classic,
                SeType::Sandwich => i - (t.d_j * i - t.j * t.d_info) / (2.0 * i * i),
            },
        };
        let se = match se_type {
            SeType::Classic => 1.0 / denominator.sqrt(),
            SeType::Sandwich => i.sqrt() / denominator.abs(),
        };
        if se.is_finite() && se > 0.0 {
            se
        } else {
            classic
        }
    }
}

/// MAP, MLE or WLE: the root of `equation` on the range (see the module doc)
/// and its standard error.
fn modal<P: Pattern>(settings: &EstimatorSettings, pattern: P, equation: Equation) -> Estimate {
    let (mut lo, mut hi) = (settings.theta_min, settings.theta_max);
    if let (Equation::MapUniform, Prior::Uniform { lower, upper }) = (equation, settings.prior) {
        let (l, u) = (lo.max(lower), hi.min(upper));
        if l < u {
            (lo, hi) = (l, u);
        }
    }
    let scaling = settings.scaling;
    let t = |theta: f64| equation.value(&pattern.sums(theta, scaling), theta);
    let objective = |theta: f64| {
        equation.objective(
            pattern.log_likelihood_and_information(theta, scaling),
            theta,
        )
    };

    // Best candidate so far and its objective (computed only when needed).
    let mut best: Option<(f64, Option<f64>)> = None;
    let mut consider = |theta: f64| match best {
        None => best = Some((theta, None)),
        Some((b, b_obj)) => {
            let b_obj = b_obj.unwrap_or_else(|| objective(b));
            let obj = objective(theta);
            best = Some(if obj > b_obj {
                (theta, Some(obj))
            } else {
                (b, Some(b_obj))
            });
        }
    };

    let intervals = (((hi - lo) / SCAN_STEP).ceil() as usize).clamp(1, MAX_SCAN_INTERVALS);
    let mut prev = (lo, t(lo));
    if prev.1 <= 0.0 {
        consider(lo);
    }
    for x in grid(lo, hi, intervals + 1).skip(1) {
        let fx = t(x);
        if prev.1 > 0.0 && fx <= 0.0 {
            consider(brent(&t, prev.0, x, prev.1, fx));
        }
        prev = (x, fx);
    }
    let last = prev.1;
    if last >= 0.0 {
        consider(hi);
    }
    // Only reachable when T is NaN somewhere (invalid items): stay in range.
    let theta = best.map_or(0.5 * (lo + hi), |(b, _)| b);
    let sums = pattern.sums(theta, scaling);
    Estimate {
        theta,
        standard_error: equation.standard_error(&sums, settings.se_type),
    }
}

/// Brent's root finder (Brent, 1973, ch. 4; the `zeroin` of R's `uniroot`)
/// on `[a, b]` with `f(a) = fa`, `f(b) = fb` of opposite signs (or one zero).
fn brent(f: &impl Fn(f64) -> f64, a: f64, b: f64, fa: f64, fb: f64) -> f64 {
    let (mut a, mut b, mut fa, mut fb) = (a, b, fa, fb);
    if fa == 0.0 {
        return a;
    }
    if fb == 0.0 {
        return b;
    }
    let (mut c, mut fc) = (a, fa);
    for _ in 0..ROOT_MAX_ITERATIONS {
        let prev_step = b - a;
        if fc.abs() < fb.abs() {
            (a, b, c) = (b, c, b);
            (fa, fb, fc) = (fb, fc, fb);
        }
        let tol_act = 2.0 * f64::EPSILON * b.abs() + ROOT_TOLERANCE / 2.0;
        let mut new_step = (c - b) / 2.0;
        if new_step.abs() <= tol_act || fb == 0.0 {
            return b;
        }
        if prev_step.abs() >= tol_act && fa.abs() > fb.abs() {
            let cb = c - b;
            let (mut p, mut q);
            if a == c {
                // Secant step.
                let t1 = fb / fa;
                p = cb * t1;
                q = 1.0 - t1;
            } else {
                // Inverse quadratic interpolation.
                let qq = fa / fc;
                let t1 = fb / fc;
                let t2 = fb / fa;
                p = t2 * (cb * qq * (qq - t1) - (b - a) * (t1 - 1.0));
                q = (qq - 1.0) * (t1 - 1.0) * (t2 - 1.0);
            }
            if p > 0.0 {
                q = -q;
            } else {
                p = -p;
            }
            if p < 0.75 * cb * q - (tol_act * q).abs() / 2.0 && p < (prev_step * q / 2.0).abs() {
                new_step = p / q;
            }
        }
        if new_step.abs() < tol_act {
            new_step = if new_step > 0.0 { tol_act } else { -tol_act };
        }
        (a, fa) = (b, fb);
        b += new_step;
        fb = f(b);
        if (fb > 0.0 && fc > 0.0) || (fb < 0.0 && fc < 0.0) {
            (c, fc) = (a, fa);
        }
    }
    b
}
