//! The per-category kernels of the item models: GRM and GPCM category
//! probabilities, their derivatives ([`CategoryTerms`]) and log-probabilities,
//! exact far in the tails.
//!
//! Owns: the arithmetic behind [`super::Item`]'s methods. Must not: be called with
//! unvalidated items (see [`super::Item::validate_at`]).

use super::super::model::{ItemParams, ItemTerms, exp_neg, ln_fast, logistic_pair, logistic_parts};
use super::super::simd::vectorized;
use super::{CategoryTerms, MAX_CATEGORIES, PolytomousItem, PolytomousModel};

/// `P_k` of a GRM item from the `(σ, σ̄)` pairs of its upper boundary `k` and lower
/// boundary `k + 1`, taking the difference on the side where both are small
/// (`lower_high` is `z_{k+1} ≥ 0`). Never negative.
#[inline]
pub(super) fn grm_difference(upper: (f64, f64), lower: (f64, f64), lower_high: bool) -> f64 {
    let d = if lower_high {
        lower.1 - upper.1
    } else {
        upper.0 - lower.0
    };
    d.max(0.0)
}

/// GRM category probabilities (see [`Item::category_probabilities`]), at least
/// `f64::MIN_POSITIVE`.
pub(super) fn grm_probabilities(da: f64, thresholds: &[f64], theta: f64, out: &mut [f64]) {
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
pub(super) fn gpcm_probabilities(da: f64, thresholds: &[f64], theta: f64, out: &mut [f64]) {
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
pub(super) fn ln_sigmoid(z: f64) -> f64 {
    z.min(0.0) - (-z.abs()).exp().ln_1p()
}

/// `ln(1 − e^−x)` for `x > 0` (Mächler, 2012): `ln(−expm1(−x))` up to `ln 2`,
/// `ln1p(−e^−x)` above. NaN or `−∞` for `x ≤ 0`.
#[inline]
pub(super) fn ln_one_minus_exp_neg(x: f64) -> f64 {
    if x <= std::f64::consts::LN_2 {
        (-(-x).exp_m1()).ln()
    } else {
        (-(-x).exp()).ln_1p()
    }
}

/// One GRM boundary `j` at one ability: `σ(z_j)`, `σ̄(z_j)`, their logarithms,
/// `v_j = σσ̄` and `w_j = v_j·(σ̄ − σ)`.
#[derive(Clone, Copy)]
pub(super) struct Boundary {
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
        let (s, t, e) = logistic_parts(z);
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
pub(super) fn dichotomous_terms(
    item: &ItemParams,
    theta: f64,
    scaling: f64,
    out: &mut [CategoryTerms],
) {
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

/// What the log-probability of `category` (read as the last when past it) of a
/// polytomous item needs: `D·a`, the thresholds, the category, and for the GRM
/// its two boundaries (`None` past either end) and `ln(1 − e^−Δ_k)` between
/// them (0 at either end).
struct Response<'a> {
    da: f64,
    thresholds: &'a [f64],
    k: usize,
    upper: Option<f64>,
    lower: Option<f64>,
    gap: f64,
}

impl<'a> Response<'a> {
    fn new(item: &'a PolytomousItem, category: usize, scaling: f64) -> Self {
        let da = scaling * item.a;
        let thresholds = item.used_thresholds();
        let k = category.min(thresholds.len());
        // ln σ(z_k) (k ≥ 1) + ln σ̄(z_{k+1}) (k < m) + ln(1 − e^−Δ_k) (0 < k < m).
        let upper = k.checked_sub(1).map(|i| thresholds[i]);
        let lower = thresholds.get(k).copied();
        let gap = match (upper, lower) {
            (Some(u), Some(l)) if item.model == PolytomousModel::Grm => {
                ln_one_minus_exp_neg(da * (l - u))
            }
            _ => 0.0,
        };
        Self {
            da,
            thresholds,
            k,
            upper,
            lower,
            gap,
        }
    }
}

/// Nodes per pass of [`add_log_probabilities_on_grid`] (stack buffers of this
/// many values per category).
const GRID_LANES: usize = 64;

/// [`add_log_probabilities`] across many nodes at once, branch-free so the loops
/// vectorize (the estimators' grid log-likelihood): the same formulas with the
/// exponentials by [`exp_neg`] (arguments clamped at `−700`, where they no
/// longer change a sum of at least 1 or a `ln(1 + e)` of a term that size in
/// any way that matters) and the logarithms by [`ln_fast`], `ln(1 + e)` as
/// `ln_fast(u)·e/(u − 1)` with `u = 1 + e` (Goldberg, 1991; `e` itself when
/// `u = 1`). Within a few ulp of [`add_log_probabilities`] per term (unit test
/// `grid_log_probabilities_match_the_scalar_ones`).
pub(crate) fn add_log_probabilities_on_grid(
    item: &PolytomousItem,
    category: usize,
    scaling: f64,
    nodes: &[f64],
    out: &mut [f64],
) {
    let r = Response::new(item, category, scaling);
    vectorized(
        #[inline(always)]
        || {
            for (nodes, out) in nodes.chunks(GRID_LANES).zip(out.chunks_mut(GRID_LANES)) {
                match item.model {
                    PolytomousModel::Grm => grm_log_lanes(&r, nodes, out),
                    PolytomousModel::Gpcm => gpcm_log_lanes(&r, nodes, out),
                }
            }
        },
    );
}

/// `ln(1 + e^−x)` for `x ≥ 0` (clamped at 700), branch-free (see
/// [`add_log_probabilities_on_grid`]).
#[inline(always)]
fn ln_one_plus_exp_neg(x: f64) -> f64 {
    let e = exp_neg((-x).max(-700.0));
    let u = 1.0 + e;
    let d = u - 1.0;
    let scaled = ln_fast(u) * (e / d);
    if d == 0.0 { e } else { scaled }
}

/// The GRM's `ln P_k` at up to [`GRID_LANES`] nodes, added to `out`.
#[inline(always)]
fn grm_log_lanes(r: &Response<'_>, nodes: &[f64], out: &mut [f64]) {
    let (da, upper, lower) = (r.da, r.upper, r.lower);
    let mut lp = [r.gap; GRID_LANES];
    let lp = &mut lp[..nodes.len()];
    if let Some(b) = upper {
        for (lp, &theta) in lp.iter_mut().zip(nodes) {
            let z = da * (theta - b);
            *lp += z.min(0.0) - ln_one_plus_exp_neg(z.abs());
        }
    }
    if let Some(b) = lower {
        for (lp, &theta) in lp.iter_mut().zip(nodes) {
            let z = -da * (theta - b);
            *lp += z.min(0.0) - ln_one_plus_exp_neg(z.abs());
        }
    }
    for (o, &lp) in out.iter_mut().zip(lp.iter()) {
        *o += lp;
    }
}

/// The GPCM's `ln P_k` at up to [`GRID_LANES`] nodes, added to `out`:
/// `ζ_k − ln Σ_j e^{ζ_j}`. When every node has `m·|D·a·θ| + Σ_j |D·a·δ_j| <
/// 600` (no `e^{ζ_j}` overflows), the sum takes one exponential per node:
/// `e^{ζ_j} = Π_{i<j} e^{D·a·θ}·e^{−D·a·δ_i}`, each factor within
/// `(|x| + |D·a·δ_i| + 10)u`, so the logarithm of the sum within about
/// `(m(|x| + 12) + Σ_i |D·a·δ_i|)u` of its value; otherwise each term is shifted
/// by the largest `ζ_j` and exponentiated.
#[inline(always)]
fn gpcm_log_lanes(r: &Response<'_>, nodes: &[f64], out: &mut [f64]) {
    let (da, thresholds, k) = (r.da, r.thresholds, r.k);
    let len = nodes.len();
    let m = thresholds.len();
    let mut z = [0.0_f64; GRID_LANES];
    let mut chosen = [0.0_f64; GRID_LANES];
    let (z, chosen) = (&mut z[..len], &mut chosen[..len]);
    let mut total = [0.0_f64; GRID_LANES];
    let total = &mut total[..len];
    let spread: f64 = thresholds.iter().map(|&d| (da * d).abs()).sum();
    let mf = m as f64;
    // NaN counts as wide.
    let wide = nodes.iter().fold(0, |n, &theta| {
        let span = mf * (da * theta).abs() + spread;
        n + usize::from(span.is_nan() || span >= 600.0)
    });
    if wide == 0 {
        // ζ_k per node (ζ_0 = 0), the running sums of D·a·(θ − δ_c).
        for (c, &delta) in thresholds.iter().enumerate() {
            for (z, &theta) in z.iter_mut().zip(nodes) {
                *z += da * (theta - delta);
            }
            if c + 1 == k {
                chosen.copy_from_slice(z);
            }
        }
        let mut factors = [0.0_f64; MAX_CATEGORIES];
        for (f, &d) in factors.iter_mut().zip(thresholds) {
            *f = (-(da * d)).exp();
        }
        // e^{D·a·θ} per node, then the running products.
        let mut rate = [0.0_f64; GRID_LANES];
        let mut q = [1.0_f64; GRID_LANES];
        let (rate, q) = (&mut rate[..len], &mut q[..len]);
        for ((r, &theta), t) in rate.iter_mut().zip(nodes).zip(total.iter_mut()) {
            let x = da * theta;
            let e = exp_neg(-x.abs());
            *r = if x > 0.0 { 1.0 / e } else { e };
            *t = 1.0;
        }
        for &f in &factors[..m] {
            for ((q, &r), t) in q.iter_mut().zip(rate.iter()).zip(total.iter_mut()) {
                *q *= r * f;
                *t += *q;
            }
        }
        for ((o, &c), &t) in out.iter_mut().zip(chosen.iter()).zip(total.iter()) {
            *o += c - ln_fast(t);
        }
        return;
    }
    // Wide: every ζ_c and their maximum per node.
    let mut zeta = [[0.0_f64; GRID_LANES]; MAX_CATEGORIES];
    let mut max = [0.0_f64; GRID_LANES];
    let max = &mut max[..len];
    for (c, &delta) in thresholds.iter().enumerate() {
        for (((z, mx), slot), &theta) in z
            .iter_mut()
            .zip(max.iter_mut())
            .zip(zeta[c + 1][..len].iter_mut())
            .zip(nodes)
        {
            *z += da * (theta - delta);
            *slot = *z;
            *mx = mx.max(*z);
        }
    }
    chosen.copy_from_slice(&zeta[k][..len]);
    for row in zeta.iter().take(m + 1) {
        for ((t, &v), &mx) in total.iter_mut().zip(&row[..len]).zip(max.iter()) {
            *t += exp_neg((v - mx).max(-700.0));
        }
    }
    for (((o, &c), &mx), &t) in out
        .iter_mut()
        .zip(chosen.iter())
        .zip(max.iter())
        .zip(total.iter())
    {
        *o += c - mx - ln_fast(t);
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
    let Response {
        da,
        thresholds,
        k,
        upper,
        lower,
        gap,
    } = Response::new(item, category, scaling);
    let m = thresholds.len();
    match item.model {
        PolytomousModel::Grm => {
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
