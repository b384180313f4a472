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
//! `I'`, `I''`, `J'`, see [`super::InformationTerms`]) change. Per item they come
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
use super::item::Item;
use super::model::ItemParams;

mod eap;
mod modal;
mod pattern;

use eap::eap;
use modal::{Equation, modal};
use pattern::{Binary, Mixed, Pattern};

/// Smallest accepted [`EstimatorSettings::quadrature_points`].
pub const MIN_QUADRATURE_POINTS: usize = 2;
/// Largest accepted [`EstimatorSettings::quadrature_points`] (the EAP keeps its
/// nodes in a stack buffer of this size: no allocation per estimate).
pub const MAX_QUADRATURE_POINTS: usize = 1001;
/// Step of [`ConstantPatternRule::Step`] (catR's `constantPatt = "fixed7"`).
pub const CONSTANT_PATTERN_STEP: f64 = 0.7;

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
                        settings.prior_center()
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

/// The estimate before any answer (see [`estimate`]).
fn prior_estimate(settings: &EstimatorSettings, current_theta: f64) -> Estimate {
    let from = if current_theta.is_finite() {
        current_theta
    } else {
        settings.prior_center()
    };
    Estimate {
        theta: clamp_to_range(from, settings.theta_min, settings.theta_max),
        standard_error: settings.prior_standard_deviation(),
    }
}

/// `x` clamped to `[lo, hi]` without panicking on an inverted range.
fn clamp_to_range(x: f64, lo: f64, hi: f64) -> f64 {
    x.min(hi).max(lo)
}
