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
///
/// ```
/// use adaptive_engine::irt::{ItemParams, probability};
/// // At θ = b the 3PL probability is halfway between c and 1.
/// let item = ItemParams::three_pl(1.3, 0.5, 0.2);
/// assert!((probability(&item, 0.5, 1.0) - 0.6).abs() < 1e-15);
/// ```
#[must_use]
#[inline]
pub fn probability(item: &ItemParams, theta: f64, scaling: f64) -> f64 {
    let z = scaling * item.a * (theta - item.b);
    let (l, _) = logistic_pair(z);
    item.c + (item.d - item.c) * l
}

/// Fisher information of `item` at ability `theta` (Lord, 1980, ch. 5;
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
    let e = exp_neg(-z.abs());
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
#[inline(always)]
pub(crate) fn logistic_pair(z: f64) -> (f64, f64) {
    let (l, m, _) = logistic_parts(z);
    (l, m)
}

/// `(L, 1 − L, e)` with `e = exp(−|z|)`, for callers that also need
/// `ln(1 + e)` (then `ln L = min(z, 0) − ln(1 + e)` is exact): the one stable
/// logistic of the crate (`z` clamped to ±[`MAX_EXPONENT`]).
#[inline(always)]
pub(crate) fn logistic_parts(z: f64) -> (f64, f64, f64) {
    let z = z.clamp(-MAX_EXPONENT, MAX_EXPONENT);
    let e = exp_neg(-z.abs());
    let big = 1.0 / (1.0 + e);
    let small = e * big;
    if z >= 0.0 {
        (big, small, e)
    } else {
        (small, big, e)
    }
}

/// `exp(x)` for `x ∈ [−MAX_EXPONENT, 0]`, branch-free so that loops over items
/// or quadrature nodes vectorize (`f64::exp` is an opaque libm call, about
/// 9 ns on the reference machine).
///
/// Cody–Waite reduction `x = k·ln 2 + r`, `|r| ≤ ln 2 / 2`, with `k` rounded
/// by the `1.5·2^52` shift trick; `exp(r)` by its degree-13 Taylor polynomial
/// evaluated with Estrin's scheme (truncation error `< 0.35^14/14! ≈ 5e−18`); `2^k` assembled in the exponent
/// bits (`k ≥ −1010`, a normal number). Relative error within a few ulp of
/// `f64::exp` (unit-tested). Out-of-domain input gives an unspecified finite
/// value or NaN (NaN in, NaN out).
#[inline(always)]
#[must_use]
pub fn exp_neg(x: f64) -> f64 {
    const LOG2_E: f64 = std::f64::consts::LOG2_E;
    // ln 2 split so that k·LN2_HI is exact for |k| < 2^20 (fdlibm's `ln2HI`
    // 6.93147180369123816490e-01 and `ln2LO` 1.90821492927058770002e-10).
    const LN2_HI: f64 = f64::from_bits(0x3FE6_2E42_FEE0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3DEA_39EF_3579_3C76);
    const SHIFT: f64 = 6_755_399_441_055_744.0; // 1.5·2^52
    /// `1/i!`.
    const INV_FACT: [f64; 14] = [
        1.0,
        1.0,
        0.5,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5_040.0,
        1.0 / 40_320.0,
        1.0 / 362_880.0,
        1.0 / 3_628_800.0,
        1.0 / 39_916_800.0,
        1.0 / 479_001_600.0,
        1.0 / 6_227_020_800.0,
    ];
    let shifted = x * LOG2_E + SHIFT;
    let k = shifted - SHIFT;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    // Σ r^i/i!, i = 0..=13, by Estrin's scheme (short dependency chains).
    let r2 = r * r;
    let r4 = r2 * r2;
    let r8 = r4 * r4;
    let q0 = 1.0 + r;
    let q1 = INV_FACT[2] + INV_FACT[3] * r;
    let q2 = INV_FACT[4] + INV_FACT[5] * r;
    let q3 = INV_FACT[6] + INV_FACT[7] * r;
    let q4 = INV_FACT[8] + INV_FACT[9] * r;
    let q5 = INV_FACT[10] + INV_FACT[11] * r;
    let q6 = INV_FACT[12] + INV_FACT[13] * r;
    let s0 = q0 + q1 * r2;
    let s1 = q2 + q3 * r2;
    let s2 = q4 + q5 * r2;
    let t0 = s0 + s1 * r4;
    let t1 = s2 + q6 * r4;
    let poly = t0 + t1 * r8;
    // The low bits of `shifted` hold k (two's complement); shifting left by 52
    // keeps (k + 1023) mod 2^12 in the exponent field.
    let scale = f64::from_bits(shifted.to_bits().wrapping_add(1023) << 52);
    poly * scale
}

/// `ln x` for a normal positive `x`, branch-free so that loops over items
/// vectorize (`f64::ln` is an opaque libm call).
///
/// `x = 2^k·m` with `m ∈ [√½, √2)` (from the bits, no branch), then
/// `ln m = 2·atanh(s) = 2·Σ_{i=0}^{9} s^{2i+1}/(2i + 1)` with
/// `s = (m − 1)/(m + 1)`, `|s| ≤ 0.1716` (truncation `< 10⁻¹⁶` relatively),
/// and `ln x = k·ln 2 + ln m` with `ln 2` split (`k·LN2_HI` exact).
/// Within [`LN_FAST_ERROR`] of the true value (unit-tested against
/// `f64::ln`). Zero, subnormal, negative, infinite or NaN input gives an
/// unspecified value.
#[inline(always)]
#[must_use]
pub fn ln_fast(x: f64) -> f64 {
    const LN2_HI: f64 = f64::from_bits(0x3FE6_2E42_FEE0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3DEA_39EF_3579_3C76);
    const SQRT_HALF: u64 = 0x3FE6_A09E_667F_3BCD;
    // 2^52 + 2^11: k + 2^11 in the low mantissa bits gives k exactly.
    const K_BIAS: f64 = 4_503_599_627_372_544.0;
    let bits = x.to_bits();
    // (bits − bits(√½)) >> 52 is k (two's complement): m shares x's
    // mantissa bits, its exponent moved so that m ∈ [√½, √2).
    let t = bits.wrapping_sub(SQRT_HALF);
    let k_bits = (t >> 52).wrapping_add(2048) & 0xFFF;
    let m = f64::from_bits(bits.wrapping_sub((k_bits.wrapping_sub(2048)) << 52));
    let k = f64::from_bits(0x4330_0000_0000_0000 | k_bits) - K_BIAS;
    let f = m - 1.0;
    let s = f / (2.0 + f);
    let z = s * s;
    // Σ z^i/(2i + 1), i = 0..=9, by Horner.
    let mut p = 1.0 / 19.0;
    for d in [17.0, 15.0, 13.0, 11.0, 9.0, 7.0, 5.0, 3.0, 1.0] {
        p = p * z + 1.0 / d;
    }
    let ln_m = 2.0 * s * p;
    k * LN2_HI + (k * LN2_LO + ln_m)
}

/// Absolute error bound of [`ln_fast`] for normal positive input:
/// the polynomial's truncation `< 10⁻¹⁷`, the roundings of `ln m`
/// (`|ln m| ≤ 0.35`, a few ulp) and of `k·ln 2` (`|k| ≤ 1022`, `ln 2`'s split
/// within `10⁻²⁶`), with a wide margin.
pub const LN_FAST_ERROR: f64 = 1e-12;

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
            d2_info: info
                * (2.0 * (k * k + m) - 5.0 * k * t * w + 2.0 * d1 * w + 2.0 * w * w * t * t),
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

/// `P` if `correct`, else `Q = 1 − P`, for `item` at `theta`, both computed
/// without cancellation and at least `f64::MIN_POSITIVE` (so their product with
/// a number in `[1, 2)` stays a normal number). Branch-free in the ability, for
/// the vectorized EAP quadrature.
#[inline(always)]
pub(crate) fn response_probability(
    item: &ItemParams,
    theta: f64,
    scaling: f64,
    correct: bool,
) -> f64 {
    let z = (scaling * item.a * (theta - item.b)).clamp(-MAX_EXPONENT, MAX_EXPONENT);
    let e = exp_neg(-z.abs());
    let big = 1.0 / (1.0 + e); // logistic of |z|
    let small = e * big; // logistic of −|z|
    let g = item.d - item.c;
    // P = c + g·L and Q = (1 − d) + g·(1 − L); L = big iff z ≥ 0.
    let (base, part) = if correct {
        (item.c, if z >= 0.0 { big } else { small })
    } else {
        (1.0 - item.d, if z >= 0.0 { small } else { big })
    };
    (base + g * part).max(f64::MIN_POSITIVE)
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
    fn exp_neg_matches_std_exp() {
        let mut worst: f64 = 0.0;
        let n = 200_000;
        for i in 0..=n {
            let x = -MAX_EXPONENT * (i as f64 / n as f64).powi(3);
            let expected = x.exp();
            let rel = ((exp_neg(x) - expected) / expected).abs();
            worst = worst.max(rel);
        }
        for x in [
            0.0,
            -1e-300,
            -1e-17,
            -0.5 * std::f64::consts::LN_2,
            -1.0,
            -MAX_EXPONENT,
        ] {
            let rel = ((exp_neg(x) - x.exp()) / x.exp()).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 4.0 * f64::EPSILON, "worst relative error {worst:e}");
        assert!(exp_neg(f64::NAN).is_nan());
        let ln2_hi = f64::from_bits(0x3FE6_2E42_FEE0_0000);
        let ln2_lo = f64::from_bits(0x3DEA_39EF_3579_3C76);
        assert!((ln2_hi - 0.693_147_180_369_123_8).abs() < 1e-16);
        assert!((ln2_hi + ln2_lo - std::f64::consts::LN_2).abs() < 1e-17);
    }

    /// `ln_fast` within `LN_FAST_ERROR` of `f64::ln` (itself within an ulp)
    /// over the whole normal range, near 1 and at the reduction's seams.
    #[test]
    fn ln_fast_matches_std_ln() {
        let mut worst: f64 = 0.0;
        let mut check = |x: f64| {
            let err = (ln_fast(x) - x.ln()).abs();
            // An ulp of the reference itself.
            worst = worst.max(err - f64::EPSILON * x.ln().abs());
            assert!(err < LN_FAST_ERROR, "ln_fast({x:e}) off by {err:e}");
        };
        let n = 200_000;
        for i in 0..=n {
            // log-uniform over the normal range
            let e = -1021.9 + 2045.8 * (i as f64 / n as f64);
            check(2f64.powf(e));
            check(1.0 + (i as f64 / n as f64 - 0.5) * 1e-3);
        }
        let seam = std::f64::consts::FRAC_1_SQRT_2;
        for x in [
            f64::MIN_POSITIVE,
            f64::MAX,
            1.0,
            seam,
            f64::from_bits(seam.to_bits() - 1),
            f64::from_bits(seam.to_bits() + 1),
            2.0 * seam,
            0.5,
            2.0,
            1.0 - f64::EPSILON,
            1.0 + f64::EPSILON,
        ] {
            check(x);
        }
        assert!(worst < 1e-15, "worst error beyond an ulp {worst:e}");
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
                    assert!(
                        (t.info - expected_info).abs() < tol,
                        "info {item:?} {theta}"
                    );
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
                    let p_direct = response_probability(item, theta, d, true);
                    let q_direct = response_probability(item, theta, d, false);
                    assert!((t.ln_p - p_direct.ln()).abs() < 1e-15);
                    assert!((t.ln_q - q_direct.ln()).abs() < 1e-15);
                    assert!((p_direct - probability(item, theta, d)).abs() < 1e-16);
                }
            }
        }
    }
}
