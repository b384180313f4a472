//! The dichotomous four-parameter logistic item response model (4PL).
//!
//! This module owns the item parameters and everything that is a function of
//! one item and one ability value: the response probability, its derivatives,
//! the log-probabilities of a response and the Fisher information.
//!
//! Model (Birnbaum, 1968, for the 3PL; Barton & Lord, 1981, for the upper
//! asymptote `d`; catR's `Pi`):
//!
//! ```text
//! P(θ) = c + (d − c) / (1 + exp(−D·a·(θ − b))),      Q(θ) = 1 − P(θ)
//! ```
//!
//! with discrimination `a > 0`, difficulty `b`, lower asymptote ("guessing")
//! `0 ≤ c`, upper asymptote `d ≤ 1`, `c < d`, and the scaling constant `D`
//! (1 for the logistic metric, 1.702 to approximate the normal ogive).
//!
//! Numerical stability: with `z = D·a·(θ − b)` the logistic is evaluated
//! through `e = exp(−|z|) ≤ 1` only, so it never overflows, and both `L` and
//! `1 − L` are obtained without cancellation. `z` is clamped to ±700 so that
//! `e > 0`: `P` and `Q` are then at least `(d − c)·e^−700 > 0`, which keeps
//! every logarithm finite (this is the "clamp P away from 0 and 1").

use serde::{Deserialize, Serialize};

use super::IrtError;

/// Largest `|D·a·(θ − b)|` used; beyond it the logistic is flat at double
/// precision anyway and `exp(−700) ≈ 1e−304` is still a normal number.
const MAX_EXPONENT: f64 = 700.0;

/// Parameters of one dichotomous 4PL item.
///
/// `d` may be omitted in serialized form (it then defaults to 1, i.e. a 3PL
/// item) and is not written when it equals 1.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemParams {
    /// Discrimination `a` (slope), `> 0`.
    pub a: f64,
    /// Difficulty `b` (location), on the ability scale.
    pub b: f64,
    /// Lower asymptote `c` (pseudo-guessing), `0 ≤ c < d`.
    pub c: f64,
    /// Upper asymptote `d` (inattention / slipping), `c < d ≤ 1`; defaults to 1.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub d: f64,
}

/// Serde default of [`ItemParams::d`].
fn one() -> f64 {
    1.0
}

/// Serde `skip_serializing_if` of [`ItemParams::d`] (serde passes a reference).
fn is_one(d: &f64) -> bool {
    *d == 1.0
}

impl ItemParams {
    /// A 4PL item.
    #[must_use]
    pub const fn new(a: f64, b: f64, c: f64, d: f64) -> Self {
        Self { a, b, c, d }
    }

    /// A 2PL item (`c = 0`, `d = 1`).
    #[must_use]
    pub const fn two_pl(a: f64, b: f64) -> Self {
        Self::new(a, b, 0.0, 1.0)
    }

    /// A 3PL item (`d = 1`).
    #[must_use]
    pub const fn three_pl(a: f64, b: f64, c: f64) -> Self {
        Self::new(a, b, c, 1.0)
    }

    /// Checks the 4PL domain: `a` finite and `> 0`, `b` finite,
    /// `0 ≤ c < d ≤ 1`. The error reports `index` as the item's position.
    ///
    /// # Errors
    /// [`IrtError::Item`] naming the first violated condition.
    pub fn validate_at(&self, index: usize) -> Result<(), IrtError> {
        let reason = if !(self.a.is_finite() && self.a > 0.0) {
            Some("discrimination a must be finite and > 0")
        } else if !self.b.is_finite() {
            Some("difficulty b must be finite")
        } else if !(self.c >= 0.0 && self.d <= 1.0 && self.c < self.d) {
            Some("asymptotes must satisfy 0 <= c < d <= 1")
        } else {
            None
        };
        match reason {
            None => Ok(()),
            Some(reason) => Err(IrtError::Item {
                index,
                reason,
                a: self.a,
                b: self.b,
                c: self.c,
                d: self.d,
            }),
        }
    }

    /// [`ItemParams::validate_at`] with index 0.
    ///
    /// # Errors
    /// [`IrtError::Item`] naming the first violated condition.
    pub fn validate(&self) -> Result<(), IrtError> {
        self.validate_at(0)
    }
}

/// Probability of a correct response to `item` at ability `theta`:
/// `P(θ) = c + (d − c) / (1 + exp(−D·a·(θ − b)))` with `D = scaling`.
///
/// Stable for any finite input (never NaN for valid items, even at `θ`
/// thousands of units from `b`).
#[must_use]
#[inline]
pub fn probability(item: &ItemParams, theta: f64, scaling: f64) -> f64 {
    let z = scaling * item.a * (theta - item.b);
    let (l, _) = logistic_pair(z);
    item.c + (item.d - item.c) * l
}

/// Fisher information of `item` at ability `theta` (Lord, 1980, eq. 5-6;
/// catR's `Ii`):
///
/// ```text
/// I(θ) = P'(θ)² / (P(θ)·Q(θ)),   P'(θ) = D·a·(P − c)(d − P)/(d − c)
/// ```
///
/// Evaluated with one `exp` and one division: writing `e = exp(−|z|)`,
/// `s = 1 + e` and `(x, y) = (1, e)` if `z ≥ 0` else `(e, 1)` (so that
/// `L = x/s`, `1 − L = y/s`, `x·y = e`),
///
/// ```text
/// I = (D·a·(d − c)·e)² / (s² · (c·s + (d − c)·x) · ((1 − d)·s + (d − c)·y))
/// ```
///
/// where the last two factors are `P·s` and `Q·s`. Finite and non-negative
/// for every valid item and finite `theta`; it underflows to 0 only when
/// `|D·a·(θ − b)|` exceeds about 350.
#[must_use]
#[inline]
pub fn information(item: &ItemParams, theta: f64, scaling: f64) -> f64 {
    let da = scaling * item.a;
    let z = (da * (theta - item.b)).clamp(-MAX_EXPONENT, MAX_EXPONENT);
    let e = (-z.abs()).exp();
    let s = 1.0 + e;
    let (x, y) = if z >= 0.0 { (1.0, e) } else { (e, 1.0) };
    let g = item.d - item.c;
    let ps = item.c * s + g * x;
    let qs = (1.0 - item.d) * s + g * y;
    let num = da * g * e;
    num * num / (s * s * ps * qs)
}

/// `(L, 1 − L)` for the logistic `L = 1 / (1 + exp(−z))`, both computed
/// without overflow or cancellation (`z` clamped to ±[`MAX_EXPONENT`]).
#[inline]
fn logistic_pair(z: f64) -> (f64, f64) {
    let z = z.clamp(-MAX_EXPONENT, MAX_EXPONENT);
    let e = (-z.abs()).exp();
    let big = 1.0 / (1.0 + e);
    let small = e * big;
    if z >= 0.0 { (big, small) } else { (small, big) }
}

/// Everything the estimators need about one item at one ability value.
///
/// All quantities are built from bounded ratios so that none of them is NaN or
/// infinite in the tails, where `P·Q` underflows:
/// * `w = P'/(P·Q) = D·a·[(P − c)/P]·[(d − P)/Q]/(d − c)`, bounded by
///   `D·a/(d − c)`;
/// * `k = P''/P' = D·a·(1 − 2L)` and `m = P'''/P' = (D·a)²·(1 − 6·L·(1 − L))`
///   (derivatives of the logistic, `L' = D·a·L·(1 − L)`).
///
/// From them (per item, with `t = 1 − 2P`):
///
/// ```text
/// I   = P'²/(PQ)                        = P'·w
/// I'  = 2P'P''/(PQ) − P'³(1−2P)/(PQ)²   = P'·w·(2k − w·t)
/// I'' = P'·w·(2(k² + m) − 5·k·t·w + 2·P'·w + 2·w²·t²)
/// J   = P'P''/(PQ)                      = P'·w·k          (Warm, 1989)
/// J'  = P'·w·(k² + m − k·t·w)
/// ```
///
/// (`I''` and `J'` follow from the quotient rule with `(PQ)' = P'·t` and
/// `(PQ)'' = P''·t − 2P'²`.)
#[derive(Clone, Copy, Debug)]
pub(crate) struct ItemTerms {
    /// `ln P(θ)`.
    pub ln_p: f64,
    /// `ln Q(θ)`.
    pub ln_q: f64,
    /// Score of a correct answer, `∂ ln P/∂θ = P'/P`.
    pub score_correct: f64,
    /// Score of a wrong answer, `∂ ln Q/∂θ = −P'/Q`.
    pub score_wrong: f64,
    /// Fisher information `I`.
    pub info: f64,
    /// `I'`.
    pub d_info: f64,
    /// `I''`.
    pub d2_info: f64,
    /// Warm's `J = P'P''/(PQ)`.
    pub j: f64,
    /// `J'`.
    pub d_j: f64,
}

impl ItemTerms {
    /// Evaluates every term of `item` at `theta` (see the type's doc for the
    /// formulas). `ln_p`/`ln_q` cost one `ln` each; callers that do not read
    /// them let the optimizer drop them.
    #[inline]
    pub(crate) fn new(item: &ItemParams, theta: f64, scaling: f64) -> Self {
        let da = scaling * item.a;
        let (l, lc) = logistic_pair(da * (theta - item.b));
        let g = item.d - item.c;
        let gl = g * l; // P − c
        let glc = g * lc; // d − P
        let p = item.c + gl;
        let q = (1.0 - item.d) + glc;
        // (P − c)/P and (d − P)/Q are in [0, 1]; P, Q > 0 thanks to the clamp.
        let rp = gl / p;
        let rq = glc / q;
        let d1 = da * gl * lc; // P' = D·a·(d − c)·L·(1 − L)
        let w = da * rp * rq / g;
        let k = da * (lc - l);
        let m = da * da * (1.0 - 6.0 * l * lc);
        let t = q - p;
        let info = d1 * w;
        Self {
            ln_p: p.ln(),
            ln_q: q.ln(),
            score_correct: da * lc * rp,
            score_wrong: -da * l * rq,
            info,
            d_info: info * (2.0 * k - w * t),
            d2_info: info * (2.0 * (k * k + m) - 5.0 * k * t * w + 2.0 * d1 * w + 2.0 * w * w * t * t),
            j: info * k,
            d_j: info * (k * k + m - k * t * w),
        }
    }

    /// `ln P` if `correct`, else `ln Q`.
    #[inline]
    pub(crate) fn log_prob(&self, correct: bool) -> f64 {
        if correct { self.ln_p } else { self.ln_q }
    }

    /// `∂/∂θ` of [`ItemTerms::log_prob`].
    #[inline]
    pub(crate) fn score(&self, correct: bool) -> f64 {
        if correct {
            self.score_correct
        } else {
            self.score_wrong
        }
    }
}

/// `ln P` if `correct`, else `ln Q`, for `item` at `theta` (one `exp`, one
/// `ln`). Used by the EAP quadrature.
#[inline]
pub(crate) fn log_prob(item: &ItemParams, theta: f64, scaling: f64, correct: bool) -> f64 {
    let (l, lc) = logistic_pair(scaling * item.a * (theta - item.b));
    let g = item.d - item.c;
    if correct {
        (item.c + g * l).ln()
    } else {
        ((1.0 - item.d) + g * lc).ln()
    }
}

#[cfg(test)]
mod tests {
    //! Internal derivative identities, checked against central differences.
    use super::*;

    fn numeric<F: Fn(f64) -> f64>(f: F, x: f64) -> f64 {
        let h = 1e-5;
        (f(x + h) - f(x - h)) / (2.0 * h)
    }

    #[test]
    fn derivatives_match_finite_differences() {
        let items = [
            ItemParams::new(1.3, 0.4, 0.0, 1.0),
            ItemParams::new(0.7, -1.2, 0.2, 1.0),
            ItemParams::new(2.1, 0.9, 0.15, 0.9),
        ];
        for item in &items {
            for &d in &[1.0, 1.702] {
                for &theta in &[-2.5, -0.3, 0.0, 0.8, 2.7] {
                    let t = ItemTerms::new(item, theta, d);
                    let p = |x: f64| probability(item, x, d);
                    let dp = numeric(p, theta);
                    let d2p = numeric(|x| numeric(p, x), theta);
                    let tol = 1e-6;
                    assert!((t.info - information(item, theta, d)).abs() < 1e-14);
                    let expected_info = dp * dp / (p(theta) * (1.0 - p(theta)));
                    assert!((t.info - expected_info).abs() < tol, "info {item:?} {theta}");
                    let di = numeric(|x| information(item, x, d), theta);
                    assert!((t.d_info - di).abs() < tol, "I' {item:?} {theta}");
                    let d2i = numeric(|x| ItemTerms::new(item, x, d).d_info, theta);
                    assert!((t.d2_info - d2i).abs() < tol, "I'' {item:?} {theta}");
                    let j = dp * d2p / (p(theta) * (1.0 - p(theta)));
                    assert!((t.j - j).abs() < 1e-4, "J {item:?} {theta}");
                    let dj = numeric(|x| ItemTerms::new(item, x, d).j, theta);
                    assert!((t.d_j - dj).abs() < tol, "J' {item:?} {theta}");
                    let lp = numeric(|x| ItemTerms::new(item, x, d).ln_p, theta);
                    let lq = numeric(|x| ItemTerms::new(item, x, d).ln_q, theta);
                    assert!((t.score_correct - lp).abs() < tol);
                    assert!((t.score_wrong - lq).abs() < tol);
                    assert!((t.ln_p - log_prob(item, theta, d, true)).abs() < 1e-15);
                    assert!((t.ln_q - log_prob(item, theta, d, false)).abs() < 1e-15);
                }
            }
        }
    }
}
