//! Items of every supported model behind one type: dichotomous 4PL items and the
//! polytomous graded response model (GRM) and generalized partial credit model (GPCM).
//!
//! A response is a category score `k` in `0..item.categories()`: for dichotomous
//! items 0 = wrong, 1 = right; for polytomous items the score of the category.
//! Throughout, `D` is the scaling constant, `a > 0` the discrimination and
//! `z_j = D·a·(θ − b_j)`; `σ(z) = 1/(1 + e^−z)` is the logistic function and
//! `σ̄(z) = 1 − σ(z) = σ(−z)`.
//!
//! * **GRM** (Samejima, 1969; Baker & Kim, 2004): with ordered boundaries
//!   `b_1 < … < b_m`, the cumulative probabilities are `P*_j = σ(z_j)` for
//!   `j = 1..m`, `P*_0 = 1`, `P*_{m+1} = 0`, and `P_k = P*_k − P*_{k+1}`.
//! * **GPCM** (Muraki, 1992): with step parameters `δ_1 … δ_m`,
//!   `P_k(θ) = exp(Σ_{v≤k} D·a·(θ − δ_v)) / Σ_{c=0..m} exp(Σ_{v≤c} D·a·(θ − δ_v))`
//!   (the empty sum is 0).
//! * **4PL** (see [`super::model`]): categories `0` (`Q = 1 − P`) and `1` (`P`).
//!
//! This is the catR parametrisation (`modelPar` "GRM" and "GPCM" with `D`; catR's
//! `Pi`, `Ii`, `Ji`). A GRM item with one boundary and a GPCM item with one step
//! are both the 2PL item `(a, b)`.
//!
//! # Derivatives of the log-probabilities
//!
//! The estimators need, for every category, `ℓ_k = ln P_k` and its first three
//! θ-derivatives ([`CategoryTerms`]). They are computed in closed forms that are
//! bounded for every `θ` (no `P_k` in a denominator), so nothing overflows or turns
//! NaN in the tails:
//!
//! * **GRM.** For `b_k < b_{k+1}`, `σ(x) − σ(y) = σ(x)·σ̄(y)·(1 − e^−(x−y))`, hence
//!   (with `Δ_k = D·a·(b_{k+1} − b_k) > 0`, `σ(z_0) = 1`, `σ̄(z_{m+1}) = 1`)
//!
//!   ```text
//!   ln P_k   = ln σ(z_k) + ln σ̄(z_{k+1}) + ln(1 − e^−Δ_k)      (last term 0 for k = 0, m)
//!   ℓ_k'     = D·a·(σ̄(z_k) − σ(z_{k+1}))
//!   ℓ_k''    = −(D·a)²·(v_k + v_{k+1}),            v_j = σ(z_j)·σ̄(z_j)   (v_0 = v_{m+1} = 0)
//!   ℓ_k'''   = −(D·a)³·(w_k + w_{k+1}),            w_j = v_j·(σ̄(z_j) − σ(z_j))
//!   ```
//!
//!   using `(ln σ(z))' = σ̄(z)`, `(ln σ̄(z))' = −σ(z)`, `σ' = v`, `v' = w` (in `z`).
//!   `ln σ(z) = min(z, 0) − ln(1 + e^−|z|)` is exact for every `z`, and
//!   `ln(1 − e^−Δ)` is evaluated as `ln(−expm1(−Δ))` for `Δ ≤ ln 2` and
//!   `ln1p(−e^−Δ)` above (Mächler, 2012). These agree with differentiating catR's
//!   `P_k = P*_k − P*_{k+1}`, `P*' = D·a·P*(1 − P*)` (Baker & Kim, 2004, on the graded response model).
//! * **GPCM.** `ln P_k = ζ_k − ln Σ_c e^ζ_c` with `ζ_k = Σ_{v≤k} D·a·(θ − δ_v)`, and
//!   `∂ζ_k/∂θ = D·a·k`, so (Muraki, 1992; the moments are those of `K | θ`)
//!
//!   ```text
//!   ℓ_k'   = D·a·(k − E[K])
//!   ℓ_k''  = −(D·a)²·Var(K)
//!   ℓ_k''' = −(D·a)³·E[(K − E[K])³]
//!   ```
//!
//!   (catR's GPCM derivatives in `Pi` omit `D` in the slope of `ζ`; they agree with
//!   these for `D = 1`.)
//! * **4PL.** `ℓ_1' = P'/P`, `ℓ_0' = −P'/Q`, and with the bounded ratios
//!   `κ = P''/P' = D·a·(1 − 2L)`, `μ = P'''/P' = (D·a)²·(1 − 6L(1 − L))` (`L` the
//!   logistic part): `ℓ'' = ℓ'·(κ − ℓ')`, `ℓ''' = ℓ'·(μ − 3ℓ'κ + 2ℓ'²)` for both
//!   categories.
//!
//! From them `P_k'/P_k = ℓ'`, `P_k''/P_k = ℓ'' + ℓ'²`, `P_k'''/P_k = ℓ''' + 3ℓ'ℓ'' + ℓ'³`.
//!
//! # Information and Warm's J
//!
//! With `r1 = P_k'/P_k`, `r2 = P_k''/P_k`, `r3 = P_k'''/P_k` ([`InformationTerms`];
//! Samejima, 1969, for `I`; catR's `Ii` and `Ji` for polytomous models; Samejima,
//! 1998, for `J`):
//!
//! ```text
//! I   = Σ_k P_k'²/P_k                                   = Σ_k P_k·r1²
//! I'  = Σ_k (2P_k'P_k''/P_k − P_k'³/P_k²)               = Σ_k P_k·(2·r1·r2 − r1³)
//! I'' = Σ_k P_k·(2·r2² + 2·r1·r3 − 5·r1²·r2 + 2·r1⁴)
//! J   = Σ_k P_k'·P_k''/P_k                              = Σ_k P_k·r1·r2
//! J'  = Σ_k P_k·(r2² + r1·r3 − r1²·r2)
//! ```
//!
//! For the 4PL these reduce to the expressions of [`super::model`] (`I = P'²/(PQ)`,
//! `J = P'P''/(PQ)`). For the GPCM `I = (D·a)²·Var(K)` and `J = I' = (D·a)³·E[(K − E[K])³]`
//! (because `ℓ''` does not depend on `k` and `Σ_k P_k·r1 = 0`), so Warm's WLE equals the
//! posterior mode under Jeffreys' prior, as for the 2PL. (catR 3.x's polytomous `d2Ii`
//! has a typo, `−2*dP^2*d2P/−3*dP*d2P/P^2`, for the `−5·r1²·r2` term; this is the
//! derivative of `I'` written out.)
//!
//! References:
//! * Samejima, F. (1969). Estimation of latent ability using a response pattern of
//!   graded scores. *Psychometrika Monograph Supplement*, 17.
//! * Muraki, E. (1992). A generalized partial credit model: application of an EM
//!   algorithm. *Applied Psychological Measurement*, 16(2).
//! * Baker, F. B. & Kim, S.-H. (2004). *Item Response Theory: Parameter Estimation
//!   Techniques* (2nd ed.). Dekker (the chapters on polytomous models).
//! * Samejima, F. (1998). Expansion of Warm's weighted likelihood estimator of ability
//!   for the three-parameter logistic model to general discrete responses. Paper
//!   presented at the annual meeting of the NCME, San Diego.
//! * Mächler, M. (2012). Accurately computing `log(1 − exp(−|a|))`. R package Rmpfr
//!   vignette.
//! * Magis, D. & Barrada, J. R. (2017). catR 3.x (`Pi`, `Ii`, `Ji`).

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::IrtError;
use super::model::{
    ItemParams, ItemTerms, information as dichotomous_information, logistic_pair, probability,
};

mod kernels;

pub(crate) use kernels::{add_log_probabilities, add_log_probabilities_on_grid, polytomous_terms};
use kernels::{dichotomous_terms, gpcm_probabilities, grm_difference, grm_probabilities};

/// Largest number of categories of a polytomous item.
pub const MAX_CATEGORIES: usize = 32;

/// The polytomous models.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PolytomousModel {
    /// Samejima's graded response model; `thresholds` are the ordered category boundaries.
    #[serde(rename = "GRM")]
    Grm,
    /// Muraki's generalized partial credit model; `thresholds` are the step parameters.
    #[serde(rename = "GPCM")]
    Gpcm,
}

/// A polytomous item: `thresholds.len() + 1` categories scored `0..=m`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolytomousItem {
    /// The model.
    pub model: PolytomousModel,
    /// Discrimination (slope), `> 0`.
    pub a: f64,
    /// GRM: boundaries `b_1 < … < b_m`; GPCM: steps `δ_1 … δ_m` (any order).
    pub thresholds: Vec<f64>,
}

impl PolytomousItem {
    /// The thresholds the computations use: all of them for a valid item (at most
    /// `MAX_CATEGORIES − 1`), so that fixed-size buffers never overflow even for an
    /// invalid item.
    fn used_thresholds(&self) -> &[f64] {
        &self.thresholds[..self.thresholds.len().min(MAX_CATEGORIES - 1)]
    }
}

/// An item of any supported model.
///
/// Serialized untagged: a dichotomous item is the plain `{"a","b","c"(,"d")}` object of
/// the Redis state contract; a polytomous one is `{"model":"GRM","a":…,"thresholds":[…]}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Item {
    /// A 4PL item.
    Dichotomous(ItemParams),
    /// A GRM or GPCM item.
    Polytomous(PolytomousItem),
}

impl From<ItemParams> for Item {
    fn from(params: ItemParams) -> Self {
        Self::Dichotomous(params)
    }
}

/// `ln P_k` and the θ-derivatives of `ln P_k` of one response category at one
/// ability value (formulas in the [module doc](self)).
///
/// Every field is finite for a valid item and finite `θ`; `p` may underflow to 0
/// far in the tails (`|D·a·(θ − b)|` beyond about 745) while `log_p` stays exact.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CategoryTerms {
    /// `ln P_k(θ)`.
    pub log_p: f64,
    /// `P_k(θ)`.
    pub p: f64,
    /// `ℓ' = ∂ ln P_k/∂θ = P_k'/P_k`: the score of a response in this category.
    pub d1_log: f64,
    /// `ℓ'' = ∂² ln P_k/∂θ²`.
    pub d2_log: f64,
    /// `ℓ''' = ∂³ ln P_k/∂θ³`.
    pub d3_log: f64,
}

impl CategoryTerms {
    /// `P_k''/P_k = ℓ'' + ℓ'²`.
    #[must_use]
    pub fn d2_ratio(&self) -> f64 {
        self.d2_log + self.d1_log * self.d1_log
    }

    /// `P_k'''/P_k = ℓ''' + 3ℓ'ℓ'' + ℓ'³`.
    #[must_use]
    pub fn d3_ratio(&self) -> f64 {
        let r1 = self.d1_log;
        self.d3_log + 3.0 * r1 * self.d2_log + r1 * r1 * r1
    }

    /// `P_k' = ∂P_k/∂θ = P_k·ℓ'`.
    #[must_use]
    pub fn d1(&self) -> f64 {
        self.p * self.d1_log
    }

    /// `P_k'' = P_k·(ℓ'' + ℓ'²)`.
    #[must_use]
    pub fn d2(&self) -> f64 {
        self.p * self.d2_ratio()
    }

    /// `P_k''' = P_k·(ℓ''' + 3ℓ'ℓ'' + ℓ'³)`.
    #[must_use]
    pub fn d3(&self) -> f64 {
        self.p * self.d3_ratio()
    }
}

/// Fisher information of one item (or a sum of items), its first two
/// θ-derivatives and Warm's `J` with its derivative (formulas in the
/// [module doc](self)). Sums of these over items are the test's.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct InformationTerms {
    /// `I = Σ_k P_k'²/P_k`.
    pub info: f64,
    /// `I'`.
    pub d_info: f64,
    /// `I''`.
    pub d2_info: f64,
    /// `J = Σ_k P_k'·P_k''/P_k` (Warm, 1989; Samejima, 1998).
    pub j: f64,
    /// `J'`.
    pub d_j: f64,
}

impl InformationTerms {
    /// The terms of an item from the [`CategoryTerms`] of all its categories.
    #[must_use]
    pub fn from_categories(categories: &[CategoryTerms]) -> Self {
        let mut s = Self::default();
        for c in categories {
            let (p, r1, r2, r3) = (c.p, c.d1_log, c.d2_ratio(), c.d3_ratio());
            let r1r1 = r1 * r1;
            s.info += p * r1r1;
            s.d_info += p * r1 * (2.0 * r2 - r1r1);
            s.d2_info += p * (2.0 * r2 * r2 + 2.0 * r1 * r3 - 5.0 * r1r1 * r2 + 2.0 * r1r1 * r1r1);
            s.j += p * r1 * r2;
            s.d_j += p * (r2 * r2 + r1 * r3 - r1r1 * r2);
        }
        s
    }

    /// The terms of a 4PL item, from the model's own bounded expressions (identical
    /// to what the dichotomous estimators use).
    pub(crate) fn dichotomous(t: &ItemTerms) -> Self {
        Self {
            info: t.info,
            d_info: t.d_info,
            d2_info: t.d2_info,
            j: t.j,
            d_j: t.d_j,
        }
    }

    /// Adds `other` term by term.
    pub(crate) fn add(&mut self, other: &Self) {
        self.info += other.info;
        self.d_info += other.d_info;
        self.d2_info += other.d2_info;
        self.j += other.j;
        self.d_j += other.d_j;
    }
}

impl Item {
    /// A GRM item.
    #[must_use]
    pub fn grm(a: f64, thresholds: Vec<f64>) -> Self {
        Self::Polytomous(PolytomousItem {
            model: PolytomousModel::Grm,
            a,
            thresholds,
        })
    }

    /// A GPCM item.
    #[must_use]
    pub fn gpcm(a: f64, steps: Vec<f64>) -> Self {
        Self::Polytomous(PolytomousItem {
            model: PolytomousModel::Gpcm,
            a,
            thresholds: steps,
        })
    }

    /// Number of response categories (2 for a dichotomous item).
    #[must_use]
    pub fn categories(&self) -> usize {
        match self {
            Self::Dichotomous(_) => 2,
            Self::Polytomous(p) => p.thresholds.len() + 1,
        }
    }

    /// The dichotomous parameters, if this is a 4PL item.
    #[must_use]
    pub fn as_dichotomous(&self) -> Option<&ItemParams> {
        match self {
            Self::Dichotomous(p) => Some(p),
            Self::Polytomous(_) => None,
        }
    }

    /// A location summary on the theta scale: `b` for 4PL, the mean threshold for
    /// polytomous items (used by closest-difficulty selection).
    #[must_use]
    pub fn location(&self) -> f64 {
        match self {
            Self::Dichotomous(p) => p.b,
            Self::Polytomous(p) => {
                p.thresholds.iter().sum::<f64>() / p.thresholds.len().max(1) as f64
            }
        }
    }

    /// Checks the model's domain.
    ///
    /// # Errors
    /// [`IrtError::Item`] for a bad 4PL item, [`IrtError::Polytomous`] otherwise.
    pub fn validate_at(&self, index: usize) -> Result<(), IrtError> {
        match self {
            Self::Dichotomous(p) => p.validate_at(index),
            Self::Polytomous(p) => {
                let reason = if !(p.a.is_finite() && p.a > 0.0) {
                    Some("discrimination a must be finite and > 0")
                } else if p.thresholds.is_empty() || p.thresholds.len() >= MAX_CATEGORIES {
                    Some("a polytomous item needs 1 to 31 thresholds")
                } else if p.thresholds.iter().any(|t| !t.is_finite()) {
                    Some("thresholds must be finite")
                } else if p.model == PolytomousModel::Grm
                    && p.thresholds.windows(2).any(|w| w[0] >= w[1])
                {
                    Some("GRM thresholds must be strictly increasing")
                } else {
                    None
                };
                match reason {
                    None => Ok(()),
                    Some(reason) => Err(IrtError::Polytomous { index, reason }),
                }
            }
        }
    }

    /// Writes `P(K = k | θ)` for every category into `out[..categories()]` (which must be
    /// at least that long). The values are positive and sum to 1.
    ///
    /// GRM probabilities are differences of the two cumulative probabilities on their
    /// small side (`σ(z_k) − σ(z_{k+1})` when `z_{k+1} < 0`, else
    /// `σ̄(z_{k+1}) − σ̄(z_k)`), so they keep their relative precision in both tails.
    ///
    /// # Panics
    /// If `out` is shorter than [`Item::categories`].
    pub fn category_probabilities(&self, theta: f64, scaling: f64, out: &mut [f64]) {
        match self {
            Self::Dichotomous(p) => {
                let p1 = probability(p, theta, scaling);
                out[0] = 1.0 - p1;
                out[1] = p1;
            }
            Self::Polytomous(p) => match p.model {
                PolytomousModel::Grm => {
                    grm_probabilities(scaling * p.a, &p.thresholds, theta, out);
                }
                PolytomousModel::Gpcm => {
                    gpcm_probabilities(scaling * p.a, &p.thresholds, theta, out);
                }
            },
        }
    }

    /// `P(K = category | θ)` (categories past the last are read as the last).
    #[must_use]
    pub fn category_probability(&self, theta: f64, scaling: f64, category: usize) -> f64 {
        match self {
            Self::Dichotomous(p) => {
                let p1 = probability(p, theta, scaling);
                if category >= 1 { p1 } else { 1.0 - p1 }
            }
            Self::Polytomous(p) => {
                let thresholds = p.used_thresholds();
                let mut buf = [0.0; MAX_CATEGORIES];
                let da = scaling * p.a;
                match p.model {
                    PolytomousModel::Grm => grm_probabilities(da, thresholds, theta, &mut buf),
                    PolytomousModel::Gpcm => gpcm_probabilities(da, thresholds, theta, &mut buf),
                }
                buf[category.min(thresholds.len())]
            }
        }
    }

    /// Fisher information at `theta`: `I(θ) = Σ_k P_k'²/P_k = Σ_k P_k·(∂ ln P_k/∂θ)²`
    /// (Samejima, 1969). For the 4PL see [`super::model::information`]; for the GRM
    /// each term is `P_k·(D·a)²·(σ̄(z_k) − σ(z_{k+1}))²` with `P_k` as in
    /// [`Item::category_probabilities`]; for the GPCM it is `(D·a)²·Var(K | θ)`
    /// (Muraki, 1992), the variance summed as `Σ_k P_k·(k − E[K])²` (no
    /// cancellation). Non-negative and finite for every valid item and finite `θ`;
    /// one exponential per threshold.
    #[must_use]
    pub fn information(&self, theta: f64, scaling: f64) -> f64 {
        match self {
            Self::Dichotomous(p) => dichotomous_information(p, theta, scaling),
            Self::Polytomous(p) => {
                let da = scaling * p.a;
                let thresholds = p.used_thresholds();
                match p.model {
                    PolytomousModel::Gpcm => {
                        let mut prob = [0.0; MAX_CATEGORIES];
                        gpcm_probabilities(da, thresholds, theta, &mut prob);
                        let prob = &prob[..=thresholds.len()];
                        let mean: f64 = prob.iter().enumerate().map(|(k, p)| k as f64 * p).sum();
                        let variance: f64 = prob
                            .iter()
                            .enumerate()
                            .map(|(k, p)| {
                                let u = k as f64 - mean;
                                p * u * u
                            })
                            .sum();
                        da * da * variance
                    }
                    PolytomousModel::Grm => {
                        let mut info = 0.0;
                        let mut upper = (1.0, 0.0); // (σ, σ̄) of boundary k (k = 0: P* = 1)
                        for k in 0..=thresholds.len() {
                            let (lower, lower_high) = match thresholds.get(k) {
                                Some(&b) => {
                                    let z = da * (theta - b);
                                    (logistic_pair(z), z >= 0.0)
                                }
                                None => ((0.0, 1.0), false),
                            };
                            let pk = grm_difference(upper, lower, lower_high);
                            let score = da * (upper.1 - lower.0);
                            info += pk * score * score;
                            upper = lower;
                        }
                        info
                    }
                }
            }
        }
    }

    /// Writes the [`CategoryTerms`] (`ln P_k`, `P_k` and the first three
    /// θ-derivatives of `ln P_k`) of every category into `out[..categories()]`.
    /// Formulas and sources in the [module doc](self).
    ///
    /// # Panics
    /// If `out` is shorter than [`Item::categories`] (or than
    /// [`MAX_CATEGORIES`] for an item with more thresholds than allowed).
    pub fn category_terms(&self, theta: f64, scaling: f64, out: &mut [CategoryTerms]) {
        match self {
            Self::Dichotomous(p) => dichotomous_terms(p, theta, scaling, out),
            Self::Polytomous(p) => polytomous_terms(p, theta, scaling, out),
        }
    }

    /// `I`, `I'`, `I''`, `J`, `J'` of the item at `theta` ([`InformationTerms`]).
    #[must_use]
    pub fn information_terms(&self, theta: f64, scaling: f64) -> InformationTerms {
        match self {
            Self::Dichotomous(p) => {
                InformationTerms::dichotomous(&ItemTerms::new(p, theta, scaling))
            }
            Self::Polytomous(p) => {
                let mut buf = [CategoryTerms::default(); MAX_CATEGORIES];
                polytomous_terms(p, theta, scaling, &mut buf);
                InformationTerms::from_categories(&buf[..=p.used_thresholds().len()])
            }
        }
    }

    /// `ln P(K = category | θ)`, exact in both tails for polytomous items (see the
    /// [module doc](self)); for the 4PL `ln P` or `ln Q` with `P`, `Q` at least
    /// `(d − c)·e^−700` ([`super::model`]). Categories past the last are read as the last.
    #[must_use]
    pub fn log_probability(&self, theta: f64, scaling: f64, category: usize) -> f64 {
        match self {
            Self::Dichotomous(p) => ItemTerms::new(p, theta, scaling).log_prob(category >= 1),
            Self::Polytomous(p) => {
                let mut out = 0.0;
                add_log_probabilities(
                    p,
                    category,
                    scaling,
                    &[theta],
                    std::slice::from_mut(&mut out),
                );
                out
            }
        }
    }

    /// The score `∂ ln P(K = category | θ)/∂θ` (see [`CategoryTerms::d1_log`]).
    /// Categories past the last are read as the last.
    #[must_use]
    pub fn score(&self, theta: f64, scaling: f64, category: usize) -> f64 {
        match self {
            Self::Dichotomous(p) => ItemTerms::new(p, theta, scaling).score(category >= 1),
            Self::Polytomous(p) => {
                let mut buf = [CategoryTerms::default(); MAX_CATEGORIES];
                polytomous_terms(p, theta, scaling, &mut buf);
                buf[category.min(p.used_thresholds().len())].d1_log
            }
        }
    }
}

/// Draws a response to `item` from its model at ability `theta` (scaling constant
/// `D = scaling`), for simulations.
///
/// One uniform `u ∈ [0, 1)` is drawn. A dichotomous item returns `1` iff `u < P(θ)`
/// (the usual convention: `rng.random::<f64>() < probability(..)`); a polytomous
/// item returns the first category `k` with `u < P_0 + … + P_k` (inverse-CDF sampling),
/// the last category if rounding leaves the sum just below `u`.
pub fn draw_response<R: Rng + ?Sized>(item: &Item, theta: f64, scaling: f64, rng: &mut R) -> u32 {
    let u: f64 = rng.random();
    match item {
        Item::Dichotomous(p) => u32::from(u < probability(p, theta, scaling)),
        Item::Polytomous(p) => {
            let m = p.used_thresholds().len();
            let mut prob = [0.0; MAX_CATEGORIES];
            let da = scaling * p.a;
            match p.model {
                PolytomousModel::Grm => {
                    grm_probabilities(da, p.used_thresholds(), theta, &mut prob);
                }
                PolytomousModel::Gpcm => {
                    gpcm_probabilities(da, p.used_thresholds(), theta, &mut prob);
                }
            }
            let mut cumulative = 0.0;
            for (k, pk) in prob[..m].iter().enumerate() {
                cumulative += pk;
                if u < cumulative {
                    return k as u32;
                }
            }
            m as u32
        }
    }
}

#[cfg(test)]
mod tests;
