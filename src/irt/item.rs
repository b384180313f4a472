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

/// `P_k` of a GRM item from the `(σ, σ̄)` pairs of its upper boundary `k` and lower
/// boundary `k + 1`, taking the difference on the side where both are small
/// (`lower_high` is `z_{k+1} ≥ 0`). Never negative.
#[inline]
fn grm_difference(upper: (f64, f64), lower: (f64, f64), lower_high: bool) -> f64 {
    let d = if lower_high {
        lower.1 - upper.1
    } else {
        upper.0 - lower.0
    };
    d.max(0.0)
}

/// GRM category probabilities (see [`Item::category_probabilities`]), at least
/// `f64::MIN_POSITIVE`.
fn grm_probabilities(da: f64, thresholds: &[f64], theta: f64, out: &mut [f64]) {
    let mut upper = (1.0, 0.0);
    for (k, slot) in out.iter_mut().take(thresholds.len() + 1).enumerate() {
        let (lower, lower_high) = match thresholds.get(k) {
            Some(&b) => {
                let z = da * (theta - b);
                (logistic_pair(z), z >= 0.0)
            }
            None => ((0.0, 1.0), false),
        };
        *slot = grm_difference(upper, lower, lower_high).max(f64::MIN_POSITIVE);
        upper = lower;
    }
}

/// GPCM category probabilities, at least `f64::MIN_POSITIVE`: the cumulative sums
/// `ζ_k` are shifted by their maximum before exponentiating.
fn gpcm_probabilities(da: f64, thresholds: &[f64], theta: f64, out: &mut [f64]) {
    let m = thresholds.len();
    let mut z = 0.0;
    out[0] = 0.0;
    let mut max = 0.0f64;
    for k in 1..=m {
        z += da * (theta - thresholds[k - 1]);
        out[k] = z;
        max = max.max(z);
    }
    let mut total = 0.0;
    for v in out.iter_mut().take(m + 1) {
        *v = (*v - max).exp();
        total += *v;
    }
    for v in out.iter_mut().take(m + 1) {
        *v = (*v / total).max(f64::MIN_POSITIVE);
    }
}

/// `ln σ(z) = −ln(1 + e^−z)`, exact for every `z`.
#[inline]
fn ln_sigmoid(z: f64) -> f64 {
    z.min(0.0) - (-z.abs()).exp().ln_1p()
}

/// `ln(1 − e^−x)` for `x > 0` (Mächler, 2012): `ln(−expm1(−x))` up to `ln 2`,
/// `ln1p(−e^−x)` above. NaN or `−∞` for `x ≤ 0`.
#[inline]
fn ln_one_minus_exp_neg(x: f64) -> f64 {
    if x <= std::f64::consts::LN_2 {
        (-(-x).exp_m1()).ln()
    } else {
        (-(-x).exp()).ln_1p()
    }
}

/// One GRM boundary `j` at one ability: `σ(z_j)`, `σ̄(z_j)`, their logarithms,
/// `v_j = σσ̄` and `w_j = v_j·(σ̄ − σ)`.
#[derive(Clone, Copy)]
struct Boundary {
    s: f64,
    t: f64,
    ln_s: f64,
    ln_t: f64,
    v: f64,
    w: f64,
}

impl Boundary {
    /// Boundary 0 (`P*_0 = 1`).
    const TOP: Self = Self {
        s: 1.0,
        t: 0.0,
        ln_s: 0.0,
        ln_t: f64::NEG_INFINITY,
        v: 0.0,
        w: 0.0,
    };
    /// Boundary `m + 1` (`P*_{m+1} = 0`).
    const BOTTOM: Self = Self {
        s: 0.0,
        t: 1.0,
        ln_s: f64::NEG_INFINITY,
        ln_t: 0.0,
        v: 0.0,
        w: 0.0,
    };

    /// A boundary at `z = D·a·(θ − b_j)` (one `exp` and one `ln1p`, exact for
    /// every finite `z`).
    #[inline]
    fn new(z: f64) -> Self {
        let e = (-z.abs()).exp();
        let big = 1.0 / (1.0 + e);
        let small = e * big;
        let (s, t) = if z >= 0.0 { (big, small) } else { (small, big) };
        let l = e.ln_1p();
        let v = s * t;
        Self {
            s,
            t,
            ln_s: z.min(0.0) - l,
            ln_t: (-z).min(0.0) - l,
            v,
            w: v * (t - s),
        }
    }
}

/// [`CategoryTerms`] of every category of a 4PL item (see the module doc).
fn dichotomous_terms(item: &ItemParams, theta: f64, scaling: f64, out: &mut [CategoryTerms]) {
    let t = ItemTerms::new(item, theta, scaling);
    let da = scaling * item.a;
    let (l, lc) = logistic_pair(da * (theta - item.b));
    let kappa = da * (lc - l);
    let mu = da * da * (1.0 - 6.0 * l * lc);
    let g = item.d - item.c;
    let p = item.c + g * l;
    let q = (1.0 - item.d) + g * lc;
    for (slot, (log_p, prob, r1)) in out
        .iter_mut()
        .zip([(t.ln_q, q, t.score_wrong), (t.ln_p, p, t.score_correct)])
    {
        *slot = CategoryTerms {
            log_p,
            p: prob,
            d1_log: r1,
            d2_log: r1 * (kappa - r1),
            d3_log: r1 * (mu - 3.0 * r1 * kappa + 2.0 * r1 * r1),
        };
    }
}

/// [`CategoryTerms`] of every category of a GRM or GPCM item (see the module doc).
pub(crate) fn polytomous_terms(
    item: &PolytomousItem,
    theta: f64,
    scaling: f64,
    out: &mut [CategoryTerms],
) {
    let da = scaling * item.a;
    let thresholds = item.used_thresholds();
    let m = thresholds.len();
    match item.model {
        PolytomousModel::Grm => {
            let (da2, da3) = (da * da, da * da * da);
            let mut upper = Boundary::TOP;
            for (k, slot) in out.iter_mut().take(m + 1).enumerate() {
                let lower = match thresholds.get(k) {
                    Some(&b) => Boundary::new(da * (theta - b)),
                    None => Boundary::BOTTOM,
                };
                let gap = if k == 0 || k == m {
                    0.0
                } else {
                    ln_one_minus_exp_neg(da * (thresholds[k] - thresholds[k - 1]))
                };
                let log_p = upper.ln_s + lower.ln_t + gap;
                *slot = CategoryTerms {
                    log_p,
                    p: log_p.exp(),
                    d1_log: da * (upper.t - lower.s),
                    d2_log: -da2 * (upper.v + lower.v),
                    d3_log: -da3 * (upper.w + lower.w),
                };
                upper = lower;
            }
        }
        PolytomousModel::Gpcm => {
            let out = &mut out[..=m];
            // ζ_k (stored in log_p for now) and their maximum.
            let mut zeta = 0.0;
            let mut max = 0.0_f64;
            out[0].log_p = 0.0;
            for (slot, &delta) in out[1..].iter_mut().zip(thresholds) {
                zeta += da * (theta - delta);
                slot.log_p = zeta;
                max = max.max(zeta);
            }
            let mut total = 0.0;
            for slot in out.iter_mut() {
                slot.p = (slot.log_p - max).exp();
                total += slot.p;
            }
            let ln_total = total.ln();
            let mut mean = 0.0;
            for (k, slot) in out.iter_mut().enumerate() {
                slot.log_p = slot.log_p - max - ln_total;
                slot.p /= total;
                mean += k as f64 * slot.p;
            }
            let (mut variance, mut third) = (0.0, 0.0);
            for (k, slot) in out.iter().enumerate() {
                let u = k as f64 - mean;
                variance += slot.p * u * u;
                third += slot.p * u * u * u;
            }
            let (d2_log, d3_log) = (-da * da * variance, -da * da * da * third);
            for (k, slot) in out.iter_mut().enumerate() {
                slot.d1_log = da * (k as f64 - mean);
                slot.d2_log = d2_log;
                slot.d3_log = d3_log;
            }
        }
    }
}

/// Adds `ln P(K = category | θ)` of a polytomous item to `out[i]` for every node
/// `θ = nodes[i]` (formulas of the module doc; exact in both tails). `category` is
/// read as the last category when past it.
pub(crate) fn add_log_probabilities(
    item: &PolytomousItem,
    category: usize,
    scaling: f64,
    nodes: &[f64],
    out: &mut [f64],
) {
    let da = scaling * item.a;
    let thresholds = item.used_thresholds();
    let m = thresholds.len();
    let k = category.min(m);
    match item.model {
        PolytomousModel::Grm => {
            // ln σ(z_k) (k ≥ 1) + ln σ̄(z_{k+1}) (k < m) + ln(1 − e^−Δ_k) (0 < k < m).
            let upper = k.checked_sub(1).map(|i| thresholds[i]);
            let lower = thresholds.get(k).copied();
            let gap = match (upper, lower) {
                (Some(u), Some(l)) => ln_one_minus_exp_neg(da * (l - u)),
                _ => 0.0,
            };
            for (o, &theta) in out.iter_mut().zip(nodes) {
                let mut lp = gap;
                if let Some(b) = upper {
                    lp += ln_sigmoid(da * (theta - b));
                }
                if let Some(b) = lower {
                    lp += ln_sigmoid(-da * (theta - b));
                }
                *o += lp;
            }
        }
        PolytomousModel::Gpcm => {
            let mut zeta = [0.0_f64; MAX_CATEGORIES];
            for (o, &theta) in out.iter_mut().zip(nodes) {
                let mut z = 0.0;
                let mut max = 0.0_f64;
                for (slot, &delta) in zeta[1..=m].iter_mut().zip(thresholds) {
                    z += da * (theta - delta);
                    *slot = z;
                    max = max.max(z);
                }
                let total: f64 = zeta[..=m].iter().map(|&z| (z - max).exp()).sum();
                *o += zeta[k] - max - total.ln();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric<F: Fn(f64) -> f64>(f: F, x: f64) -> f64 {
        let h = 1e-5;
        (f(x + h) - f(x - h)) / (2.0 * h)
    }

    fn test_items() -> Vec<Item> {
        vec![
            Item::grm(1.4, vec![-1.0, 0.2, 1.5]),
            Item::grm(0.6, vec![0.3]),
            Item::gpcm(0.9, vec![0.5, -0.3, 1.1, 2.0]),
            Item::gpcm(2.2, vec![-0.4]),
            Item::Dichotomous(ItemParams::new(1.1, 0.3, 0.2, 0.95)),
        ]
    }

    #[test]
    fn category_probabilities_sum_to_one_and_information_is_the_score_variance() {
        for item in &test_items() {
            for &theta in &[-3.0, -0.7, 0.0, 0.9, 2.5] {
                let mut p = [0.0; MAX_CATEGORIES];
                item.category_probabilities(theta, 1.0, &mut p);
                let m = item.categories();
                let total: f64 = p[..m].iter().sum();
                assert!((total - 1.0).abs() < 1e-12, "{item:?} at {theta}");
                // Fisher information = E[(∂ ln P_K/∂θ)²], by finite differences.
                let expected: f64 = (0..m)
                    .map(|k| {
                        let score = numeric(|t| item.category_probability(t, 1.0, k).ln(), theta);
                        p[k] * score * score
                    })
                    .sum();
                let info = item.information(theta, 1.0);
                assert!(
                    (info - expected).abs() < 1e-6,
                    "{item:?} at {theta}: {info} vs {expected}"
                );
            }
        }
    }

    #[test]
    fn category_terms_match_finite_differences_and_probabilities() {
        for item in &test_items() {
            let m = item.categories();
            for &d in &[1.0, 1.702] {
                for &theta in &[-2.5, -0.3, 0.0, 0.8, 2.7] {
                    let mut terms = [CategoryTerms::default(); MAX_CATEGORIES];
                    item.category_terms(theta, d, &mut terms);
                    let mut probs = [0.0; MAX_CATEGORIES];
                    item.category_probabilities(theta, d, &mut probs);
                    for k in 0..m {
                        let t = terms[k];
                        let at = |x: f64| {
                            let mut buf = [CategoryTerms::default(); MAX_CATEGORIES];
                            item.category_terms(x, d, &mut buf);
                            buf[k]
                        };
                        let ctx = format!("{item:?} D={d} θ={theta} k={k}");
                        assert!((t.p - probs[k]).abs() < 1e-15, "P {ctx}");
                        assert!(((t.log_p.exp() - t.p) / t.p).abs() < 1e-14, "ln P {ctx}");
                        assert!((t.log_p - item.log_probability(theta, d, k)).abs() < 1e-15);
                        assert!((t.d1_log - item.score(theta, d, k)).abs() < 1e-15);
                        let l1 = numeric(|x| at(x).log_p, theta);
                        let l2 = numeric(|x| at(x).d1_log, theta);
                        let l3 = numeric(|x| at(x).d2_log, theta);
                        assert!((t.d1_log - l1).abs() < 1e-7, "ℓ' {ctx}");
                        assert!((t.d2_log - l2).abs() < 1e-7, "ℓ'' {ctx}");
                        assert!((t.d3_log - l3).abs() < 1e-7, "ℓ''' {ctx}");
                        let dp = numeric(|x| at(x).p, theta);
                        let d2p = numeric(|x| at(x).d1(), theta);
                        let d3p = numeric(|x| at(x).d2(), theta);
                        assert!((t.d1() - dp).abs() < 1e-7, "P' {ctx}");
                        assert!((t.d2() - d2p).abs() < 1e-7, "P'' {ctx}");
                        assert!((t.d3() - d3p).abs() < 1e-7, "P''' {ctx}");
                    }
                    let it = item.information_terms(theta, d);
                    let from = InformationTerms::from_categories(&terms[..m]);
                    let ctx = format!("{item:?} D={d} θ={theta}");
                    assert!(
                        (it.info - item.information(theta, d)).abs() < 1e-14,
                        "I {ctx}"
                    );
                    for (a, b) in [
                        (it.info, from.info),
                        (it.d_info, from.d_info),
                        (it.d2_info, from.d2_info),
                        (it.j, from.j),
                        (it.d_j, from.d_j),
                    ] {
                        assert!((a - b).abs() < 1e-12, "{a} vs {b}: {ctx}");
                    }
                    let di = numeric(|x| item.information(x, d), theta);
                    let d2i = numeric(|x| item.information_terms(x, d).d_info, theta);
                    let dj = numeric(|x| item.information_terms(x, d).j, theta);
                    assert!((it.d_info - di).abs() < 1e-7, "I' {ctx}");
                    assert!((it.d2_info - d2i).abs() < 1e-7, "I'' {ctx}");
                    assert!((it.d_j - dj).abs() < 1e-7, "J' {ctx}");
                    let j: f64 = (0..m)
                        .map(|k| terms[k].d1() * terms[k].d2() / terms[k].p)
                        .sum();
                    assert!((it.j - j).abs() < 1e-12, "J {ctx}");
                }
            }
        }
    }

    #[test]
    fn gpcm_warm_j_equals_the_information_derivative() {
        let item = Item::gpcm(1.3, vec![0.5, -0.3, 1.1]);
        for &theta in &[-2.0, 0.0, 0.7, 3.0] {
            let t = item.information_terms(theta, 1.702);
            assert!((t.j - t.d_info).abs() < 1e-13, "{t:?}");
            assert!((t.d_j - t.d2_info).abs() < 1e-12, "{t:?}");
        }
    }

    #[test]
    fn log_probabilities_stay_exact_far_in_the_tails() {
        // GRM: ln P_0 at θ far above every boundary is ln σ̄(z_1) = −z_1 − ln(1 + e^−z_1).
        let item = Item::grm(2.0, vec![-1.0, 0.0, 1.0]);
        let lp = item.log_probability(1000.0, 1.0, 0);
        assert!((lp - (-2.0 * 1001.0)).abs() < 1e-9, "{lp}");
        // P_1 = σ(z_1) − σ(z_2): ln ≈ −z_2 + ln(1 − e^−Δ) for large θ.
        let lp = item.log_probability(1000.0, 1.0, 1);
        let expected = -2.0 * 1000.0 + (1.0 - (-2.0_f64).exp()).ln();
        assert!((lp - expected).abs() < 1e-9, "{lp} vs {expected}");
        let gpcm = Item::gpcm(1.0, vec![0.0, 1.0]);
        // ζ = (0, θ, 2θ − 1): ln P_0 ≈ −(2θ − 1) for large θ.
        let lp = gpcm.log_probability(500.0, 1.0, 0);
        assert!((lp + 999.0).abs() < 1e-9, "{lp}");
        for item in &test_items() {
            for theta in [-800.0, -40.0, 40.0, 800.0] {
                let info = item.information(theta, 1.0);
                assert!(info.is_finite() && info >= 0.0);
                let mut terms = [CategoryTerms::default(); MAX_CATEGORIES];
                item.category_terms(theta, 1.0, &mut terms);
                for t in &terms[..item.categories()] {
                    assert!(t.log_p.is_finite() && t.d1_log.is_finite() && t.d3_log.is_finite());
                }
            }
        }
    }

    #[test]
    fn one_threshold_items_are_the_2pl() {
        let two_pl = ItemParams::two_pl(1.7, -0.4);
        for item in [Item::grm(1.7, vec![-0.4]), Item::gpcm(1.7, vec![-0.4])] {
            for &theta in &[-3.0, -0.4, 0.1, 2.0] {
                let p = probability(&two_pl, theta, 1.702);
                assert!((item.category_probability(theta, 1.702, 1) - p).abs() < 1e-15);
                let i = dichotomous_information(&two_pl, theta, 1.702);
                assert!((item.information(theta, 1.702) - i).abs() < 1e-14);
                let a = item.information_terms(theta, 1.702);
                let b = Item::Dichotomous(two_pl).information_terms(theta, 1.702);
                assert!((a.d_info - b.d_info).abs() < 1e-13);
                assert!((a.d2_info - b.d2_info).abs() < 1e-13);
                assert!((a.j - b.j).abs() < 1e-13);
                assert!((a.d_j - b.d_j).abs() < 1e-13);
            }
        }
    }

    #[test]
    fn draw_response_follows_the_category_probabilities() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for item in &test_items() {
            let theta = 0.4;
            let n = 200_000;
            let mut counts = [0_usize; MAX_CATEGORIES];
            for _ in 0..n {
                counts[draw_response(item, theta, 1.0, &mut rng) as usize] += 1;
            }
            for (k, &count) in counts.iter().enumerate().take(item.categories()) {
                let p = item.category_probability(theta, 1.0, k);
                let freq = count as f64 / n as f64;
                let sd = (p * (1.0 - p) / n as f64).sqrt();
                assert!(
                    (freq - p).abs() < 5.0 * sd + 1e-12,
                    "{item:?} k={k}: {freq} vs {p}"
                );
            }
            assert_eq!(counts[item.categories()..].iter().sum::<usize>(), 0);
        }
    }

    #[test]
    fn serde_keeps_the_contract_shape_for_dichotomous_items() {
        let item = Item::Dichotomous(ItemParams::three_pl(1.5, 0.2, 0.2));
        assert_eq!(
            serde_json::to_string(&item).unwrap(),
            r#"{"a":1.5,"b":0.2,"c":0.2}"#
        );
        let poly: Item =
            serde_json::from_str(r#"{"model":"GPCM","a":1.0,"thresholds":[0.0,1.0]}"#).unwrap();
        assert_eq!(poly, Item::gpcm(1.0, vec![0.0, 1.0]));
        let back: Item = serde_json::from_str(r#"{"a":1.5,"b":0.2,"c":0.2}"#).unwrap();
        assert_eq!(back, item);
    }
}
