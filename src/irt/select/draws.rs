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
//! An earlier attempt (branch-free logarithm and exponential with a per-item
//! error bound, the walk's item accepted only when the drawn point is
//! farther than the bound from the ends of its interval) saved 11–13 % of the
//! instructions but no measurable wall time, so it was dropped.

use rand::Rng;

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
    let mut info = vec![f64::NAN; ctx.bank.len()];
    index.information_above(ctx.bank, theta, weights.cut(1.0).0, &mut info);
    for (i, v) in info.iter_mut().enumerate() {
        if !ctx.is_eligible(i) {
            *v = f64::NAN;
        }
    }
    weights.draw(&mut info, |i| ctx.bank[i].information(theta, scaling), rng)
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
}
