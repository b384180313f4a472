//! The two rules that draw with information: `Progressive` (information plus
//! a uniform per eligible item, [`progressive`]) and `Proportional` (a draw
//! with probability `∝ I^H`, [`proportional`]).
//!
//! This module owns both draws and the fast exact path of the progressive
//! rule. It must never change a draw: the same random numbers are consumed
//! in the same order as the plain rules' (module doc of [`super`] and
//! `tests/irt/reference.rs`), and the item drawn is the one the plain
//! formulas give.
//!
//! # Progressive
//!
//! The plain rule draws `U_j` for every eligible item in bank order and ranks
//! the scores `s_j = I_j·W + U_j·M·(1 − W)` (`M` the largest information). All
//! uniforms are drawn first (the same numbers: nothing else draws in
//! between), and `M` comes from the exact maximum-information search
//! ([`super::information::most_informative`], through the index when it
//! fits). Since `I_j ≤ C_j` for `C_j = M`, or for a polytomous item the
//! smaller of `M` and its chunk's envelope bound ([`super::blocks`]), and
//! rounding is monotone, `h_j = C_j·W + U_j·M·(1 − W)`, computed the same
//! way, is at least the computed score `s_j`. The
//! `SEEDS` items of largest `h_j` are evaluated first; the `k`-th best of
//! their scores is a lower bound `L` of the final `k`-th best score, so an
//! item with `h_j < L` (or below the running `k`-th best) can neither enter
//! the top `k` nor tie with its last member, and its information is never
//! computed. The others are evaluated exactly, in bank order, as before.
//!
//! # Proportional
//!
//! The plain rule sums the weights `w_j = exp(H·(ln I_j − ln M))` of the
//! eligible items in bank order, draws `U·total` and walks the items in bank
//! order subtracting their weights ([`plain_walk`]). Most weights are far
//! too small to change either floating-point sum: when `w < x·2⁻⁵⁵` (`x` the
//! running sum or the walk's remainder, positive), `x + w` and `x − w` round
//! to `x` (`w` is below a quarter of `x`'s ulp), and the walk cannot stop at
//! the item (`x > w`). So the fast path ([`proportional_pruned`]) takes the
//! logarithm and the exponential only of the items whose information reaches
//! the corresponding threshold `T(x) = M·(p·2⁻⁵⁵)^{1/H}·(1 − 10⁻⁶)`, `p ≤ x`
//! the power of two below `x` (recomputed when `x` leaves its binade; the
//! factor `1 − 10⁻⁶` is far above the rounding of the logarithms and the
//! exponential). Every weight computed is the plain one (same function,
//! same arithmetic), the sums and the walk are the plain ones, so the draw
//! and the random numbers consumed are the same
//! (`the_drawing_rules_draw_like_the_plain_rules`). When the walk runs past
//! the last item (rounding), the plain rule returns the last item of positive
//! weight: found backwards, weighing the items it skipped. With `H < 10⁻⁶`
//! or `M` not positive and finite, the plain walk runs. With the exponent of
//! the middle of a test (`H ≈ 11`) about a third of a 3PL bank's weights are
//! skipped.
//!
//! With the index ([`proportional_bounded`]), most informations are not
//! computed either: `M` comes from the exact maximum-information search, and
//! the index computes only the items whose bound (difficulty bucket,
//! polytomous chunk, or a polytomous item's own bound on its cell,
//! [`super::blocks`]) reaches `T(1)`, the threshold once the sum has passed
//! the best item (weight exactly 1); the others get their bound `U`. Such an
//! item is evaluated (same function, same value) only when the sum's or the
//! walk's threshold falls to `U` (`x < 1`); otherwise `U < T(x)` already
//! proves what its information would: it is skipped. The sum, the walk and
//! the draw are the plain ones (`bounds_in_place_of_informations_change_no_sum_and_no_walk`).
//!
//! # Certified draw
//!
//! Most of that exact path is the logarithm and the exponential of each
//! weight (`f64::ln`, `f64::exp`: opaque calls) and the GPCM exponentials of
//! the informations. But the plain rule's *item* depends on the weights only
//! through where the drawn point falls among their running sums, so the
//! index path first draws with approximate values and a proof
//! ([`Weights::approximate`], [`Approximate::pick`]):
//!
//! * the informations from the blocks' fast path (GPCM exponentials by
//!   `exp_neg`, each value `v` within its bound `e` of the exact one,
//!   [`super::blocks`]), for the items whose bound reaches the floor
//!   `F = M·(R/n)^{1/H}` (`R =` [`REST`]); every other item weighs less than
//!   `R/n`, all of them less than `R` (counted with `(F/M)^H·1.02`);
//! * the weights `w̃ = exp_neg(H·(ln_fast v − ln_fast M))`, branch-free so the
//!   loop vectorizes; each within `w̃·η·1.01` of the plain weight, with
//!   `η = H·(2·LN_FAST_ERROR + 2·10⁻¹³ + e/(v − e)) + 8u·(|y| + 2)`: both
//!   computations' logarithms (the plain `f64::ln` within an ulp of a value
//!   below 745), the roundings of `y = H·(ln v − ln M)` and both
//!   exponentials'; items with `e > 10⁻⁹·v` or `v ≤ 10⁻²⁸⁰` get their exact
//!   plain weight (no error), those with `y < −700` weigh `0` within
//!   `10⁻³⁰³`;
//! * `Δ`, the sum of those errors, bounds the distance between any running
//!   sum of the `w̃` and the real running sum of the plain weights; the plain
//!   floating-point total, the drawn point `U·total` and the walk's
//!   subtractions are within `(n + 2)·u` relatively of their real values, so
//!   if the drawn point `U·W̃` lies farther than
//!   `2Δ + 6(n + 2)·u·(W̃ + Δ)` from both ends of an item's interval of the
//!   `w̃`, the plain walk stops at that item.
//!
//! `U` is the plain rule's uniform (one `random::<f64>()`, drawn once the
//! total is known to be at least `1/2`, as the plain rule draws it once its
//! total is positive). When the point falls within the margin of an end, the
//! exact path above walks from the same `U`: the same item either way
//! (`the_certified_draw_is_the_plain_draw`).
//!
//! The margin is mostly the items left out (`2R` at most; the fast values'
//! errors are about `10⁻¹¹` relatively), so `R` trades the items evaluated
//! against the draws refused: each item's interval ends refuse `4R/W̃` of
//! the uniforms. With `R = 10⁻⁶`, on 5,000 random 3PL or GRM/GPCM items at
//! abilities across `±2.5` and `H` from 1 to 20, between 0 and 4.2 in 10⁴
//! draws were refused (200,000 uniforms per case), while the floor rose from
//! `0.028·M` (`R = 10⁻¹³`) to `0.13·M` at `H = 10.8`: the step's items
//! evaluated fell by more than half (polytomous proportional at 5,000 items
//! 180 → 110 µs). An earlier version of this idea
//! (for the dichotomous bank only, before the blocks) saved instructions but
//! no wall time; with the polytomous informations it is most of the step.

use rand::Rng;

use super::super::model::{LN_FAST_ERROR, exp_neg, ln_fast};
use super::super::simd::vectorized;
use super::information::{bank_information, most_informative};
use super::{InformationIndex, SelectionContext, TopK};

/// Items evaluated first by [`progressive`] to find a lower bound of the
/// `k`-th best score.
const SEEDS: usize = 16;

/// The progressive rule with weight `W = weight < 1` (module doc): the exact
/// top `k` of the scores, then a uniform pick among them.
pub(super) fn progressive<R: Rng + ?Sized>(
    ctx: &SelectionContext<'_>,
    k: usize,
    weight: f64,
    rng: &mut R,
) -> Option<usize> {
    let (theta, scaling) = (ctx.theta, ctx.estimator.scaling);
    let best = most_informative(ctx, 1);
    // The plain maximum folds with `f64::max`, which skips NaN; so does the
    // search (NaN is never ranked). No eligible value: −∞, no draw.
    let max_info = best.information().first().copied()?;
    let eligible: Vec<u32> = (0..ctx.bank.len())
        .filter(|&i| ctx.is_eligible(i))
        .map(|i| i as u32)
        .collect();
    // catR: runif(0, itemMaxInfo), drawn for every item, in bank order.
    let noise: Vec<f64> = eligible
        .iter()
        .map(|_| rng.random::<f64>() * max_info)
        .collect();
    // Per eligible item, an upper bound of its information: `M`, or the
    // envelope bound of a polytomous item when smaller.
    let mut caps = vec![max_info; eligible.len()];
    if let Some(index) = ctx.usable_index().filter(|ix| ix.has_polytomous()) {
        let mut bounds = vec![f64::INFINITY; ctx.bank.len()];
        if index.polytomous_bounds(theta, |i, b| bounds[i] = b) {
            for (cap, &i) in caps.iter_mut().zip(&eligible) {
                // f64::min skips NaN: a NaN bound leaves `M`.
                *cap = cap.min(bounds[i as usize]);
            }
        }
    }
    let reach = |cap: f64, n: f64| cap * weight + n * (1.0 - weight);
    let score = |i: u32, n: f64| {
        ctx.bank[i as usize].information(theta, scaling) * weight + n * (1.0 - weight)
    };
    // Seeds: the largest reaches.
    let mut seeds = TopK::new(SEEDS.max(k));
    for (pos, (&n, &cap)) in noise.iter().zip(&caps).enumerate() {
        let h = reach(cap, n);
        if h >= seeds.threshold {
            seeds.offer(h, pos);
        }
    }
    let mut lower = TopK::new(k);
    for &pos in &seeds.index[..seeds.len] {
        lower.offer(score(eligible[pos], noise[pos]), eligible[pos] as usize);
    }
    let floor = lower.threshold;
    let mut top = TopK::new(k);
    for ((&i, &n), &cap) in eligible.iter().zip(&noise).zip(&caps) {
        let h = reach(cap, n);
        if h >= floor && h >= top.threshold {
            top.offer(score(i, n), i as usize);
        }
    }
    top.pick(rng)
}

/// Draws an eligible item with probability `∝ I_j(θ̂)^H` (`0^0 = 1`, as in R).
/// Computed as `exp(H·(ln I_j − ln max I))` so that large `H` neither
/// overflows nor underflows to all zeros; if every weight is 0 (all
/// informations 0 with `H > 0`) the draw is uniform. Items with NaN
/// information are never drawn.
pub(super) fn proportional<R: Rng + ?Sized>(
    ctx: &SelectionContext<'_>,
    exponent: f64,
    rng: &mut R,
) -> Option<usize> {
    if let Some(index) = ctx.usable_index()
        && let Some(drawn) = proportional_bounded(ctx, index, exponent, rng)
    {
        return drawn;
    }
    let mut info = bank_information(ctx);
    for (i, v) in info.iter_mut().enumerate() {
        if !ctx.is_eligible(i) {
            *v = f64::NAN;
        }
    }
    // The plain maximum skips NaN (`f64::max`); none left: nothing to draw.
    let max = info
        .iter()
        .filter(|v| !v.is_nan())
        .fold(None, |m: Option<f64>, &v| Some(m.map_or(v, |m| m.max(v))))?;
    if let Some(weights) = Weights::new(exponent, max)
        && let Some(drawn) = weights.draw(&mut info, |_| f64::NAN, rng)
    {
        return drawn;
    }
    let infos: Vec<(usize, f64)> = info
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_nan())
        .map(|(i, &v)| (i, v))
        .collect();
    plain_walk(&infos, exponent, max, rng)
}

/// The fast exact path of [`proportional`] through the index (module doc):
/// the maximum from the index's search, and the information of the items
/// whose bucket or chunk bound reaches `T(1)` (the threshold once the sum
/// has reached the best item's weight 1), the others only when the sum or
/// the walk reaches their bound. `None` (nothing drawn) when it does not
/// apply.
fn proportional_bounded<R: Rng + ?Sized>(
    ctx: &SelectionContext<'_>,
    index: &InformationIndex,
    exponent: f64,
    rng: &mut R,
) -> Option<Option<usize>> {
    let (theta, scaling) = (ctx.theta, ctx.estimator.scaling);
    if !theta.is_finite() {
        return None;
    }
    let best = most_informative(ctx, 1);
    // No eligible item of a number: the plain rule draws nothing.
    let Some(&max) = best.information().first() else {
        return Some(None);
    };
    let weights = Weights::new(exponent, max)?;
    let n = ctx.bank.len();
    let exact = |i: usize| ctx.bank[i].information(theta, scaling);
    let eligible_only = |info: &mut [f64]| {
        for (i, v) in info.iter_mut().enumerate() {
            if !ctx.is_eligible(i) {
                *v = f64::NAN;
            }
        }
    };
    // The certified draw first (module doc): fast informations, fast weights.
    let mut u = None;
    if let Some(floor) = weights.certified_floor(n) {
        let (mut info, mut err) = (vec![f64::NAN; n], vec![0.0; n]);
        index.information_above::<true>(ctx.bank, theta, floor, &mut info, &mut err);
        eligible_only(&mut info);
        if let Some(approximate) = weights.approximate(info, err, floor, &exact) {
            let drawn = rng.random::<f64>();
            if let Some(i) = approximate.pick(drawn) {
                return Some(Some(i));
            }
            u = Some(drawn);
        }
    }
    let mut info = vec![f64::NAN; n];
    index.information_above::<false>(ctx.bank, theta, weights.cut(1.0).0, &mut info, &mut []);
    eligible_only(&mut info);
    match u {
        // Not certified: the exact weights from the same point.
        Some(u) => Some(weights.walk_from(&mut info, &exact, u)),
        None => weights.draw(&mut info, exact, rng),
    }
}

/// The weights of the plain rule for one exponent `H` and maximum `M`, and
/// the thresholds below which a weight cannot change a sum (module doc).
struct Weights {
    /// `H`.
    exponent: f64,
    /// `M`.
    max: f64,
    /// `ln M`.
    ln_max: f64,
    /// Information below which the weight is exactly 0.
    zero_below: f64,
}

impl Weights {
    /// `None` when the fast path does not apply (`H < 10⁻⁶`, or `M` not
    /// positive and finite).
    fn new(exponent: f64, max: f64) -> Option<Self> {
        (exponent >= 1e-6 && exponent.is_finite() && max > 0.0 && max.is_finite()).then(|| Self {
            exponent,
            max,
            ln_max: max.ln(),
            zero_below: max * (-750.0 / exponent).exp() * (1.0 - 1e-9),
        })
    }

    /// The plain weight of an item of information `info` (plain_walk's
    /// arithmetic).
    fn weight(&self, info: f64) -> f64 {
        if info <= 0.0 || info < self.zero_below {
            0.0
        } else {
            (self.exponent * (info.ln() - self.ln_max)).exp()
        }
    }

    /// The information `T(x)` below which a weight cannot change a sum at
    /// `x`, and the binade `[p, 2p)` of `x` it holds for.
    fn cut(&self, x: f64) -> (f64, f64) {
        if !(x >= 1e-290 && x.is_finite()) {
            return (f64::NEG_INFINITY, 0.0);
        }
        let p = f64::from_bits(x.to_bits() & 0xFFF0_0000_0000_0000);
        let h = p * f64::powi(2.0, -55);
        (self.max * (h.ln() / self.exponent).exp() * (1.0 - 1e-6), p)
    }

    /// The plain rule's draw (module doc) over `info`, one entry per bank
    /// item: NaN for the items never drawn (ineligible, or NaN information),
    /// the item's information, or `−U` (`U > 0` a bound of it) for an item
    /// not evaluated yet, evaluated by `exact(bank index)` only when a sum
    /// reaches `U`. `None` when the total weight is not positive and finite
    /// (nothing drawn).
    fn draw<R: Rng + ?Sized>(
        &self,
        info: &mut [f64],
        exact: impl Fn(usize) -> f64,
        rng: &mut R,
    ) -> Option<Option<usize>> {
        let (mut weights, total) = self.sum(info, &exact);
        if !(total > 0.0 && total.is_finite()) {
            // Not reached (the best item weighs 1); the plain rule decides.
            return None;
        }
        let target = rng.random::<f64>() * total;
        Some(self.walk(info, &exact, &mut weights, target))
    }

    /// [`Weights::draw`] from the uniform `u` already drawn, for a list whose
    /// total weight is positive and finite (the certified draw proved it: its
    /// total is within its margin of the plain one and at least `1/2`).
    fn walk_from(&self, info: &mut [f64], exact: &impl Fn(usize) -> f64, u: f64) -> Option<usize> {
        let (mut weights, total) = self.sum(info, exact);
        self.walk(info, exact, &mut weights, u * total)
    }

    /// The information below which every item's weight is below
    /// [`REST`]` / n`, so that all such items together weigh less than
    /// [`REST`]: `M·(REST/n)^{1/H}`. `None` when the certified draw does not
    /// apply (`M` subnormal, or `H` above [`MAX_CERTIFIED_EXPONENT`]).
    fn certified_floor(&self, n: usize) -> Option<f64> {
        (self.max >= 1e-280 && self.exponent <= MAX_CERTIFIED_EXPONENT)
            .then(|| self.max * ((REST / n.max(1) as f64).ln() / self.exponent).exp())
    }

    /// The certified draw's weights (module doc) over `info` and `err` as
    /// [`InformationIndex::information_above`] leaves them with `FAST` and
    /// `floor` (NaN: never drawn; `−U`: below `floor`; else within `err` of
    /// the information). `None` when no draw can be certified (the total or
    /// the margin out of range).
    fn approximate(
        &self,
        mut values: Vec<f64>,
        mut errors: Vec<f64>,
        floor: f64,
        exact: &impl Fn(usize) -> f64,
    ) -> Option<Approximate> {
        let n = values.len();
        // The items that count, gathered branch-free (their pattern is
        // unpredictable) to the front of `values` and `errors` (position
        // `len ≤ i` is read before it is written): neither NaN nor below the
        // floor (by their bound, or by their value within its error).
        let mut ids = vec![0_u32; n];
        let (mut len, mut present) = (0, 0);
        for i in 0..n {
            let (v, e) = (values[i], errors[i]);
            ids[len] = i as u32;
            values[len] = v;
            errors[len] = e;
            len += usize::from(v + e >= floor);
            present += usize::from(!v.is_nan());
        }
        // The others (`−U`, or a value below the floor) weigh in `rest`.
        let bounded = present - len;
        ids.truncate(len);
        values.truncate(len);
        errors.truncate(len);
        let (h, ln_max) = (self.exponent, ln_fast(self.max));
        // Relative error of a weight per unit of `e/(v − e)` and beyond it
        // (module doc): both logarithms of both computations, the exponent's
        // roundings, the exponentials'.
        let per_log = 2.0 * LN_FAST_ERROR + 2e-13;
        let mut weights = vec![0.0; len];
        let mut slack = vec![0.0; len];
        let hard = vectorized(
            #[inline(always)]
            || {
                let mut hard = 0;
                for (((w, d), &v), &e) in weights
                    .iter_mut()
                    .zip(slack.iter_mut())
                    .zip(&values)
                    .zip(&errors)
                {
                    // Otherwise the exact plain weight, below.
                    let easy = close_enough(v, e);
                    hard += usize::from(!easy);
                    let x = if easy { v } else { 1.0 };
                    let y = h * (ln_fast(x) - ln_max);
                    let eta = h * (per_log + e / (x - e))
                        + 8.0 * f64::EPSILON * (y.abs() + 2.0)
                        + y.max(0.0);
                    let kept = easy && y >= -700.0;
                    *w = if kept { exp_neg(y.min(0.0)) } else { 0.0 };
                    *d = if kept {
                        *w * eta * 1.01
                    } else if easy {
                        1e-303
                    } else {
                        0.0
                    };
                }
                hard
            },
        );
        if hard > 0 {
            for j in 0..len {
                if !close_enough(values[j], errors[j]) {
                    weights[j] = self.weight(exact(ids[j] as usize));
                    slack[j] = 0.0;
                }
            }
        }
        let total = sum(&weights);
        let rest = bounded as f64 * ((h * (floor.ln() - self.ln_max)).exp() * 1.02);
        let delta = sum(&slack) * (1.0 + 1e-9) + rest;
        let margin = 2.0 * delta + 6.0 * (n as f64 + 2.0) * f64::EPSILON * (total + delta) + 1e-300;
        (total >= 0.5 && total.is_finite() && margin < 1e-3 * total).then_some(Approximate {
            ids,
            weights,
            total,
            margin,
        })
    }

    /// The plain total weight, in bank order, of the items of `info` (see
    /// [`Weights::draw`]), and the weights it computed (NaN: not computed,
    /// too small to change the sum).
    fn sum(&self, info: &mut [f64], exact: &impl Fn(usize) -> f64) -> (Vec<f64>, f64) {
        let mut weights = vec![UNKNOWN; info.len()];
        let mut total = 0.0;
        let (mut below, mut binade) = (f64::NEG_INFINITY, 0.0);
        for (i, slot) in weights.iter_mut().enumerate() {
            if reaches(info, exact, i, below) {
                let w = self.weight(info[i]);
                *slot = w;
                total += w;
                if total >= 2.0 * binade {
                    (below, binade) = self.cut(total);
                }
            }
        }
        (weights, total)
    }

    /// The plain walk from `target` (the drawn point, `U·total`) over the
    /// items of `info` with the weights [`Weights::sum`] computed.
    fn walk(
        &self,
        info: &mut [f64],
        exact: &impl Fn(usize) -> f64,
        weights: &mut [f64],
        mut target: f64,
    ) -> Option<usize> {
        let (mut below, mut binade) = self.cut(target);
        for (i, slot) in weights.iter_mut().enumerate() {
            if slot.is_nan() {
                if !reaches(info, exact, i, below) {
                    continue;
                }
                *slot = self.weight(info[i]);
            }
            let w = *slot;
            if w > 0.0 {
                if target < w {
                    return Some(i);
                }
                target -= w;
                if target < binade {
                    (below, binade) = self.cut(target);
                }
            }
        }
        // Rounding left `target` just above the last weight: the last item of
        // positive weight.
        (0..info.len()).rev().find(|&i| {
            let w = if weights[i].is_nan() {
                reaches(info, exact, i, f64::NEG_INFINITY);
                self.weight(info[i])
            } else {
                weights[i]
            };
            w > 0.0
        })
    }
}

/// Weight not computed yet.
const UNKNOWN: f64 = f64::NAN;

/// What all the items the certified draw does not evaluate weigh at most,
/// together (the best item weighs 1): larger evaluates fewer items and
/// refuses more draws (module doc).
const REST: f64 = 1e-6;

/// Largest exponent `H` of the certified draw (its error bounds grow with
/// `H`; the schedules stay far below).
const MAX_CERTIFIED_EXPONENT: f64 = 1e4;

/// The certified draw's weights (module doc): the items that count, in bank
/// order, with their weights `w̃`, their total `W̃`, and the margin within
/// which the plain sums may lie from these.
struct Approximate {
    /// Bank index of each weight.
    ids: Vec<u32>,
    /// `w̃`.
    weights: Vec<f64>,
    /// `W̃`, their floating-point sum.
    total: f64,
    /// Distance the drawn point must keep from both ends of its item's
    /// interval.
    margin: f64,
}

impl Approximate {
    /// The item the plain walk stops at from `u·total` (`u` the uniform the
    /// plain rule draws), when the drawn point lies farther than the margin
    /// from both ends of its item's interval; `None` otherwise.
    fn pick(&self, u: f64) -> Option<usize> {
        let target = u * self.total;
        let mut below = 0.0;
        for (&i, &w) in self.ids.iter().zip(&self.weights) {
            let above = below + w;
            if above > target {
                return (target - below >= self.margin && above - target >= self.margin)
                    .then_some(i as usize);
            }
            below = above;
        }
        None
    }
}

/// Whether the certified draw weighs an information `v` known within `e`
/// by its fast weight (else by the exact plain weight): not tiny, and close.
#[inline(always)]
fn close_enough(v: f64, e: f64) -> bool {
    v > 1e-280 && e <= 1e-9 * v
}

/// The sum of `values` (four running sums; any order is within the same
/// rounding bound).
fn sum(values: &[f64]) -> f64 {
    let mut acc = [0.0; 4];
    let chunks = values.chunks_exact(4);
    let tail: f64 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// Whether the information of item `i` of `info` (see [`Weights::draw`])
/// reaches `below` (NaN never does), evaluating it by `exact` when only its
/// bound does.
fn reaches(info: &mut [f64], exact: &impl Fn(usize) -> f64, i: usize, below: f64) -> bool {
    if info[i] < 0.0 {
        if -info[i] < below {
            return false;
        }
        info[i] = exact(i);
    }
    info[i] >= below
}

/// The plain weights and walk (the plain rule's arithmetic, same order).
fn plain_walk<R: Rng + ?Sized>(
    infos: &[(usize, f64)],
    exponent: f64,
    max: f64,
    rng: &mut R,
) -> Option<usize> {
    // Below this the weight underflows to exactly 0 (its exponent is below
    // −750 even after the rounding of both logarithms), so the two
    // logarithms and the exponential are skipped.
    let zero_below = max * (-750.0 / exponent).exp() * (1.0 - 1e-9);
    let weight = |info: f64| -> f64 {
        if exponent == 0.0 {
            1.0
        } else if info <= 0.0 || info < zero_below {
            0.0
        } else {
            (exponent * (info.ln() - max.ln())).exp()
        }
    };
    // Each weight once (the same values, summed in the same order, as
    // recomputing them in the walk).
    let weights: Vec<f64> = infos.iter().map(|(_, v)| weight(*v)).collect();
    let total: f64 = weights.iter().sum();
    if !(total > 0.0 && total.is_finite()) {
        return Some(infos[rng.random_range(0..infos.len())].0);
    }
    let mut target = rng.random::<f64>() * total;
    let mut last = None;
    for (&(i, _), &w) in infos.iter().zip(&weights) {
        if w > 0.0 {
            last = Some(i);
            if target < w {
                return Some(i);
            }
            target -= w;
        }
    }
    // Rounding left `target` just above the last weight.
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rand::seq::SliceRandom;

    /// Bounds in place of informations (as the index leaves them for the
    /// items it did not evaluate) change neither the total weight, bit for
    /// bit, nor the item walked to from any point: on lists whose weights
    /// span 25 orders of magnitude and start tiny, so that the sum's threshold
    /// moves past many items, with bounds from exact to 6 times too large.
    #[test]
    fn bounds_in_place_of_informations_change_no_sum_and_no_walk() {
        let mut rng = StdRng::seed_from_u64(15);
        let (mut evaluated, mut left) = (0, 0);
        for round in 0..60 {
            let exponent = [1.5, 11.0, 40.0][round % 3];
            let max = 3.0;
            let n = 400;
            let mut exact: Vec<f64> = (0..n)
                .map(|i| {
                    // The first items weigh little: the sum starts small.
                    let e: f64 = if i < 5 {
                        40.0
                    } else {
                        rng.random_range(0.0..60.0)
                    };
                    max * (-e / exponent).exp()
                })
                .collect();
            exact[rng.random_range(5..n)] = max;
            exact[rng.random_range(0..n)] = f64::NAN;
            exact[rng.random_range(0..n)] = 0.0;
            let weights = Weights::new(exponent, max).expect("applies");
            let mut known = exact.clone();
            let mut bounded: Vec<f64> = exact
                .iter()
                .map(|&v| {
                    let slack = [0.0, 1e-12, 1e-3, 0.3, 5.0][rng.random_range(0..5)];
                    if v.is_nan() || rng.random::<bool>() {
                        v
                    } else {
                        -(v * (1.0 + slack)).max(f64::MIN_POSITIVE)
                    }
                })
                .collect();
            let calls = std::cell::Cell::new(0);
            let lookup = |i: usize| {
                calls.set(calls.get() + 1);
                exact[i]
            };
            let (mut w_known, total) = weights.sum(&mut known, &lookup);
            let (w_bounded, total_bounded) = weights.sum(&mut bounded, &lookup);
            assert_eq!(total.to_bits(), total_bounded.to_bits(), "round {round}");
            evaluated += calls.get();
            left += bounded.iter().filter(|&&v| v < 0.0).count();
            for k in 0..=200 {
                let target = total * f64::from(k) / 200.0;
                let target = if k == 200 {
                    f64::from_bits(target.to_bits() - 1)
                } else {
                    target
                };
                assert_eq!(
                    weights.walk(&mut known, &lookup, &mut w_known, target),
                    weights.walk(
                        &mut bounded.clone(),
                        &lookup,
                        &mut w_bounded.clone(),
                        target
                    ),
                    "round {round}, target {target}"
                );
            }
        }
        // Both paths taken: bounds evaluated on demand, and bounds left alone.
        assert!(evaluated > 1_000 && left > 1_000, "{evaluated} {left}");
    }

    /// The certified draw picks the plain walk's item or nothing: on lists
    /// whose informations come with errors up to their bounds (in either
    /// direction, as the blocks' fast values), with items below the floor,
    /// exact zeros, NaN and tiny ones, for uniforms at random and at every
    /// end of the plain walk's intervals (and the floats around them). Red
    /// when the margin is dropped or the floor does not bound the rest.
    #[test]
    fn the_certified_draw_is_the_plain_draw() {
        let mut rng = StdRng::seed_from_u64(16);
        let (mut certified, mut tried, mut refused_at_ends) = (0, 0, 0);
        for round in 0..90 {
            let exponent = [0.7, 11.0, 35.0][round % 3];
            let max = [2.5, 0.04][round % 2];
            let n = [50, 700][round % 2];
            let mut exact: Vec<f64> = (0..n)
                .map(|_| max * (-rng.random_range(0.0_f64..80.0) / exponent).exp())
                .collect();
            exact[..3].copy_from_slice(&[f64::NAN, 0.0, 1e-300]);
            exact.shuffle(&mut rng);
            exact[rng.random_range(0..n)] = max;
            let weights = Weights::new(exponent, max).expect("applies");
            let floor = weights.certified_floor(n).expect("applies");
            // As the index leaves them: −U below the floor, else a value
            // within its error bound (or exact).
            let mut info = Vec::with_capacity(n);
            let mut err = vec![0.0; n];
            for (i, &v) in exact.iter().enumerate() {
                if v.is_nan() {
                    info.push(v);
                } else if v < floor && rng.random::<bool>() {
                    info.push(-(v.max(f64::MIN_POSITIVE) * 1.5).min(floor * 0.999));
                } else {
                    let e = v * [0.0, 1e-12, 1e-10][rng.random_range(0..3)];
                    err[i] = e;
                    info.push(v + e * rng.random_range(-1.0..=1.0));
                }
            }
            let lookup = |i: usize| exact[i];
            let approximate = weights
                .approximate(info, err, floor, &lookup)
                .unwrap_or_else(|| panic!("round {round}: not certifiable"));
            // The plain walk's interval ends, as uniforms.
            let mut plain = exact.clone();
            let (w, total) = weights.sum(&mut plain, &lookup);
            let mut points: Vec<f64> = (0..200).map(|_| rng.random::<f64>()).collect();
            let mut end = 0.0;
            for &w in w.iter().filter(|w| **w > 0.0) {
                end += w;
                let u = end / total;
                for u in [
                    u,
                    f64::from_bits(u.to_bits() - 1),
                    f64::from_bits(u.to_bits() + 1),
                ] {
                    if u < 1.0 {
                        points.push(u);
                    }
                }
            }
            for (k, &u) in points.iter().enumerate() {
                let expected = weights.walk_from(&mut exact.clone(), &lookup, u);
                match approximate.pick(u) {
                    Some(i) => assert_eq!(Some(i), expected, "round {round}, u {u}"),
                    None => refused_at_ends += usize::from(k >= 200),
                }
                if k < 200 {
                    tried += 1;
                    certified += usize::from(approximate.pick(u).is_some());
                }
            }
        }
        // Random points are certified (all but a few in 10⁴: the items left
        // out widen the margin, module doc); points at the ends mostly not.
        assert!(tried - certified <= tried / 2_000, "{certified} of {tried}");
        assert!(refused_at_ends > 1_000, "{refused_at_ends}");
    }
}
