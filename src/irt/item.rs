//! Items of every supported model behind one type: dichotomous 4PL items and the
//! polytomous graded response model (GRM) and generalized partial credit model (GPCM).
//!
//! A response is a category score `k` in `0..item.categories()`: for dichotomous
//! items 0 = wrong, 1 = right; for polytomous items the score of the category.
//!
//! * GRM (Samejima, 1969): with ordered boundaries `b_1 < … < b_m`,
//!   `P*_k(θ) = 1 / (1 + exp(−D·a·(θ − b_k)))` for `k = 1..m`, `P*_0 = 1`,
//!   `P*_{m+1} = 0`, and `P_k = P*_k − P*_{k+1}`. Information (Samejima 1969; Baker &
//!   Kim 2004, eq. 8.17): `I(θ) = Σ_k P_k'² / P_k`.
//! * GPCM (Muraki, 1992): with step parameters `δ_1 … δ_m`,
//!   `P_k(θ) = exp(Σ_{v≤k} D·a·(θ − δ_v)) / Σ_{c=0..m} exp(Σ_{v≤c} D·a·(θ − δ_v))`
//!   (the empty sum is 0). Information: `I(θ) = D²a²·Var(K | θ)`; score
//!   `∂ ln P_k/∂θ = D·a·(k − E[K | θ])`.
//!
//! This is the catR parametrisation (`modelPar` "GRM" and "GPCM" with `D`).

use serde::{Deserialize, Serialize};

use super::IrtError;
use super::model::{ItemParams, information as dichotomous_information, probability};

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
            Self::Polytomous(p) => p.thresholds.iter().sum::<f64>() / p.thresholds.len().max(1) as f64,
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
                } else if p.model == PolytomousModel::Grm && p.thresholds.windows(2).any(|w| w[0] >= w[1]) {
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
    pub fn category_probabilities(&self, theta: f64, scaling: f64, out: &mut [f64]) {
        match self {
            Self::Dichotomous(p) => {
                let p1 = probability(p, theta, scaling);
                out[0] = 1.0 - p1;
                out[1] = p1;
            }
            Self::Polytomous(p) => match p.model {
                PolytomousModel::Grm => grm_probabilities(p, theta, scaling, out),
                PolytomousModel::Gpcm => gpcm_probabilities(p, theta, scaling, out),
            },
        }
    }

    /// `P(K = category | θ)`.
    #[must_use]
    pub fn category_probability(&self, theta: f64, scaling: f64, category: usize) -> f64 {
        match self {
            Self::Dichotomous(p) => {
                let p1 = probability(p, theta, scaling);
                if category >= 1 { p1 } else { 1.0 - p1 }
            }
            Self::Polytomous(_) => {
                let mut buf = [0.0; MAX_CATEGORIES];
                self.category_probabilities(theta, scaling, &mut buf);
                buf[category.min(self.categories() - 1)]
            }
        }
    }

    /// Fisher information at `theta`.
    #[must_use]
    pub fn information(&self, theta: f64, scaling: f64) -> f64 {
        match self {
            Self::Dichotomous(p) => dichotomous_information(p, theta, scaling),
            Self::Polytomous(p) => {
                let m = p.thresholds.len() + 1;
                let mut prob = [0.0; MAX_CATEGORIES];
                match p.model {
                    PolytomousModel::Gpcm => {
                        gpcm_probabilities(p, theta, scaling, &mut prob);
                        let (mean, second) = (0..m).fold((0.0, 0.0), |(s1, s2), k| {
                            let kf = k as f64;
                            (s1 + kf * prob[k], s2 + kf * kf * prob[k])
                        });
                        let da = scaling * p.a;
                        (da * da * (second - mean * mean)).max(0.0)
                    }
                    PolytomousModel::Grm => {
                        let da = scaling * p.a;
                        // P*_k' = D·a·P*_k·(1 − P*_k); P_k' = P*_k' − P*_{k+1}'.
                        let star = |k: usize| -> (f64, f64) {
                            if k == 0 {
                                (1.0, 0.0)
                            } else if k == m {
                                (0.0, 0.0)
                            } else {
                                let s = logistic(da * (theta - p.thresholds[k - 1]));
                                (s, da * s * (1.0 - s))
                            }
                        };
                        let mut info = 0.0;
                        let mut upper = star(0);
                        for k in 0..m {
                            let lower = star(k + 1);
                            let pk = (upper.0 - lower.0).max(f64::MIN_POSITIVE);
                            let dpk = upper.1 - lower.1;
                            info += dpk * dpk / pk;
                            upper = lower;
                        }
                        info
                    }
                }
            }
        }
    }
}

/// The logistic function, stable for any argument.
fn logistic(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

fn grm_probabilities(p: &PolytomousItem, theta: f64, scaling: f64, out: &mut [f64]) {
    let da = scaling * p.a;
    let m = p.thresholds.len();
    let mut upper = 1.0;
    for k in 0..=m {
        let lower = if k == m {
            0.0
        } else {
            logistic(da * (theta - p.thresholds[k]))
        };
        out[k] = (upper - lower).max(f64::MIN_POSITIVE);
        upper = lower;
    }
}

fn gpcm_probabilities(p: &PolytomousItem, theta: f64, scaling: f64, out: &mut [f64]) {
    let da = scaling * p.a;
    let m = p.thresholds.len();
    // Cumulative sums z_k = Σ_{v≤k} D·a·(θ − δ_v), normalised by their maximum.
    let mut z = 0.0;
    out[0] = 0.0;
    let mut max = 0.0f64;
    for k in 1..=m {
        z += da * (theta - p.thresholds[k - 1]);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric<F: Fn(f64) -> f64>(f: F, x: f64) -> f64 {
        let h = 1e-5;
        (f(x + h) - f(x - h)) / (2.0 * h)
    }

    #[test]
    fn category_probabilities_sum_to_one_and_information_is_the_score_variance() {
        let items = [
            Item::grm(1.4, vec![-1.0, 0.2, 1.5]),
            Item::gpcm(0.9, vec![0.5, -0.3, 1.1, 2.0]),
            Item::Dichotomous(ItemParams::new(1.1, 0.3, 0.2, 0.95)),
        ];
        for item in &items {
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
                assert!((info - expected).abs() < 1e-6, "{item:?} at {theta}: {info} vs {expected}");
            }
        }
    }

    #[test]
    fn serde_keeps_the_contract_shape_for_dichotomous_items() {
        let item = Item::Dichotomous(ItemParams::three_pl(1.5, 0.2, 0.2));
        assert_eq!(serde_json::to_string(&item).unwrap(), r#"{"a":1.5,"b":0.2,"c":0.2}"#);
        let poly: Item = serde_json::from_str(r#"{"model":"GPCM","a":1.0,"thresholds":[0.0,1.0]}"#).unwrap();
        assert_eq!(poly, Item::gpcm(1.0, vec![0.0, 1.0]));
        let back: Item = serde_json::from_str(r#"{"a":1.5,"b":0.2,"c":0.2}"#).unwrap();
        assert_eq!(back, item);
    }
}
