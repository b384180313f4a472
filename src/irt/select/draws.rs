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
//! skipped; the informations themselves are all computed (exactly, as the
//! plain rule does).
//!
//! An earlier attempt (branch-free logarithm and exponential with a per-item
//! error bound, the walk's item accepted only when the drawn point is
//! farther than the bound from the ends of its interval) saved 11–13 % of the
//! instructions but no measurable wall time, so it was dropped.

use rand::Rng;

use super::information::{bank_information, most_informative};
use super::{SelectionContext, TopK};

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
    let (all, _) = bank_information(ctx, false);
    let infos: Vec<(usize, f64)> = all
        .iter()
        .enumerate()
        .filter(|&(i, _)| ctx.is_eligible(i))
        .map(|(i, &info)| (i, info))
        .filter(|(_, info)| !info.is_nan())
        .collect();
    if infos.is_empty() {
        return None;
    }
    let max = infos
        .iter()
        .map(|(_, v)| *v)
        .fold(f64::NEG_INFINITY, f64::max);
    if let Some(drawn) = proportional_pruned(&infos, exponent, max, rng) {
        return drawn;
    }
    plain_walk(&infos, exponent, max, rng)
}

/// The fast exact path of [`proportional`] (module doc) over the eligible
/// items' informations `infos` (bank order, NaN left out) and their maximum:
/// `None` when it does not apply (nothing drawn), else the plain rule's draw.
fn proportional_pruned<R: Rng + ?Sized>(
    infos: &[(usize, f64)],
    exponent: f64,
    max: f64,
    rng: &mut R,
) -> Option<Option<usize>> {
    /// Weight not computed yet.
    const UNKNOWN: f64 = f64::NAN;
    if !(exponent >= 1e-6 && exponent.is_finite() && max > 0.0 && max.is_finite()) {
        return None;
    }
    // The plain weight (plain_walk's arithmetic).
    let zero_below = max * (-750.0 / exponent).exp() * (1.0 - 1e-9);
    let ln_max = max.ln();
    let weight = |info: f64| -> f64 {
        if info <= 0.0 || info < zero_below {
            0.0
        } else {
            (exponent * (info.ln() - ln_max)).exp()
        }
    };
    // Information below which the weight cannot change a sum at `x`, and the
    // binade `[p, 2p)` of `x` it holds for.
    let cut = |x: f64| -> (f64, f64) {
        if !(x >= 1e-290 && x.is_finite()) {
            return (f64::NEG_INFINITY, 0.0);
        }
        let p = f64::from_bits(x.to_bits() & 0xFFF0_0000_0000_0000);
        let h = p * f64::powi(2.0, -55);
        (max * (h.ln() / exponent).exp() * (1.0 - 1e-6), p)
    };
    let mut weights = vec![UNKNOWN; infos.len()];
    let mut total = 0.0;
    let (mut below, mut binade) = (f64::NEG_INFINITY, 0.0);
    for (slot, &(_, info)) in weights.iter_mut().zip(infos) {
        if info >= below {
            let w = weight(info);
            *slot = w;
            total += w;
            if total >= 2.0 * binade {
                (below, binade) = cut(total);
            }
        }
    }
    if !(total > 0.0 && total.is_finite()) {
        // Not reached (the best item weighs 1); the plain rule decides.
        return None;
    }
    let mut target = rng.random::<f64>() * total;
    (below, binade) = cut(target);
    for (slot, &(i, info)) in weights.iter_mut().zip(infos) {
        if slot.is_nan() {
            if info < below {
                continue;
            }
            *slot = weight(info);
        }
        let w = *slot;
        if w > 0.0 {
            if target < w {
                return Some(Some(i));
            }
            target -= w;
            if target < binade {
                (below, binade) = cut(target);
            }
        }
    }
    // Rounding left `target` just above the last weight: the last item of
    // positive weight.
    for (slot, &(i, info)) in weights.iter().zip(infos).rev() {
        let w = if slot.is_nan() { weight(info) } else { *slot };
        if w > 0.0 {
            return Some(Some(i));
        }
    }
    Some(None)
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
