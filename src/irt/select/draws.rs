//! The two rules that draw with information: `Progressive` (information plus
//! a uniform per eligible item, [`progressive`]) and `Proportional` (a draw
//! with probability `∝ I^H`, [`proportional`]).
//!
//! This module owns their fast exact paths. It must never change a draw: the
//! same random numbers are consumed in the same order as the plain rules'
//! (module doc of [`super`] and `tests/irt/reference.rs`), and the item drawn
//! is the one the plain formulas give, proved for every step as follows.
//!
//! # Progressive
//!
//! The plain rule draws `U_j` for every eligible item in bank order and ranks
//! the scores `s_j = I_j·W + U_j·M·(1 − W)` (`M` the largest information). All
//! uniforms are drawn first (the same numbers: nothing else draws in
//! between), and `M` comes from the exact maximum-information search
//! ([`super::information::most_informative`], through the index when it
//! fits). Since `I_j ≤ M` and rounding is monotone, `h_j = M·W + U_j·M·(1 −
//! W)`, computed the same way, is at least the computed score `s_j`. The
//! `SEEDS` items of largest `h_j` are evaluated first; the `k`-th best of
//! their scores is a lower bound `L` of the final `k`-th best score, so an
//! item with `h_j < L` (or below the running `k`-th best) can neither enter
//! the top `k` nor tie with its last member, and its information is never
//! computed. The others are evaluated exactly, in bank order, as before.
//!
//! # Proportional
//!
//! The plain rule sums the weights `w_j = exp(H·(ln I_j − ln M))` in bank
//! order, draws one uniform `u`, and walks the weights subtracting them from
//! `u·Σw` until the remainder is below one. Here the weights are computed by
//! branch-free polynomial logarithms and exponentials (relative error a few
//! ulp, bounded below by a factor `2¹³` of slack), the walk is done on their
//! prefix sums, and the answer is accepted only when the drawn point lies
//! farther than a bound `E` from both ends of the chosen item's interval:
//! `E` covers the difference between the fast and the plain weights, the
//! rounding of the plain sum, of `u·Σw` and of every subtraction of the plain
//! walk (each within `u·Σw`, Higham 2002, §3.1), so the plain walk stops at
//! the same item. Otherwise (a drawn point within about `10⁻¹²` of a
//! boundary: practically never) the plain weights are computed, with the same
//! uniform.

use rand::Rng;

use super::super::model::exp_neg;
use super::information::{bank_information, most_informative};
use super::{SelectionContext, TopK};

/// Items evaluated first by [`progressive`] to find a lower bound of the
/// `k`-th best score.
const SEEDS: usize = 16;
/// Unit roundoff `u = 2⁻⁵³`.
const UNIT: f64 = f64::EPSILON / 2.0;
/// Relative error allowed for each fast logarithm and exponential of
/// [`proportional`] (per unit of argument size), `2¹³·u`: far above the few
/// ulp of both the fast functions and libm's.
const SLACK: f64 = 8192.0 * UNIT;

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
    let ceiling = max_info * weight;
    let reach = |n: f64| ceiling + n * (1.0 - weight);
    let score = |i: u32, n: f64| {
        ctx.bank[i as usize].information(theta, scaling) * weight + n * (1.0 - weight)
    };
    // Seeds: the largest reaches.
    let mut seeds = TopK::new(SEEDS.max(k));
    for (pos, &n) in noise.iter().enumerate() {
        let h = reach(n);
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
    for (&i, &n) in eligible.iter().zip(&noise) {
        let h = reach(n);
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
/// information are never drawn. Through the fast weights of the module doc
/// when `H > 0` and the largest information is positive and finite.
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
    let fast = exponent > 0.0
        && exponent.is_finite()
        && max.is_finite()
        && max >= f64::MIN_POSITIVE
        && infos.len() < 1 << 40;
    if fast {
        // The largest weight is exp(0) = 1, so the plain total is at least 1:
        // the plain rule draws one uniform and walks.
        let u = rng.random::<f64>();
        if let Some(i) = fast_walk(&infos, exponent, max, u) {
            return Some(i);
        }
        return plain_walk(&infos, exponent, max, Some(u), rng);
    }
    plain_walk(&infos, exponent, max, None, rng)
}

/// The plain weights and walk (the plain rule's arithmetic, same order); `u`:
/// the uniform when it was drawn already.
fn plain_walk<R: Rng + ?Sized>(
    infos: &[(usize, f64)],
    exponent: f64,
    max: f64,
    u: Option<f64>,
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
    let mut target = u.unwrap_or_else(|| rng.random::<f64>()) * total;
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

/// The item the plain walk stops at for the uniform `u`, when the fast
/// weights prove it (module doc); `None` when they cannot.
///
/// Requires `H > 0` finite and `max` normal, positive and finite. Every loop
/// is branch-free over contiguous `f64`s, so it vectorizes.
fn fast_walk(infos: &[(usize, f64)], exponent: f64, max: f64, u: f64) -> Option<usize> {
    let n = infos.len() as f64;
    let values: Vec<f64> = infos.iter().map(|x| x.1).collect();
    if values.iter().any(|&v| v > 0.0 && v < f64::MIN_POSITIVE) {
        // Subnormal information: its logarithm is not the fast one's.
        return None;
    }
    let ln_max = ln_normal(max);
    // The error bound below is first order in d ≤ this (|ln v| ≤ 710 for a
    // normal v, −x ≤ 700); beyond, decline.
    let worst = SLACK * (exponent * (712.0 + ln_max.abs()) + 706.0);
    if worst > 1e-3 {
        return None;
    }
    // Per item: the fast weight and a bound on its difference to the plain
    // one (the weights are non-negative, so the bounds add up to a bound on
    // every prefix sum).
    let mut weights = vec![0.0; values.len()];
    let mut errors = vec![0.0; values.len()];
    // Four lanes at a time (the remainder padded with zeros, weight 0).
    let mut vs = values.chunks_exact(LANES);
    let mut ws = weights.chunks_exact_mut(LANES);
    let mut es = errors.chunks_exact_mut(LANES);
    for ((v, w), e) in (&mut vs).zip(&mut ws).zip(&mut es) {
        fast_weights(v.try_into().ok()?, exponent, ln_max, w, e);
    }
    let rest = vs.remainder();
    let mut pad = [0.0; LANES];
    pad[..rest.len()].copy_from_slice(rest);
    let (mut w, mut e) = ([0.0; LANES], [0.0; LANES]);
    fast_weights(&pad, exponent, ln_max, &mut w, &mut e);
    ws.into_remainder().copy_from_slice(&w[..rest.len()]);
    es.into_remainder().copy_from_slice(&e[..rest.len()]);
    let error = sum(&errors);
    let total = sum(&weights);
    if !(total >= 1.0 - 1e-6 && total.is_finite()) {
        return None;
    }
    // |fast prefix − real prefix of the plain weights| ≤ error + n·u·T (any
    // summation order); the plain sum, the product u·total and the n
    // subtractions of the plain walk each add at most (n + 2)u·T more
    // (T ≤ 2·total: error ≪ total).
    let t = 2.0 * total;
    let margin = 4.0 * (error + (n + 1.0) * UNIT * t) + 4.0 * (3.0 * n + 8.0) * UNIT * t;
    let x = u * total;
    // The chunk, then the item, where the prefix sum passes x.
    let mut below = 0.0;
    for (c, chunk) in weights.chunks(CHUNK).enumerate() {
        let mass = sum(chunk);
        if below + mass <= x {
            below += mass;
            continue;
        }
        for (j, &w) in chunk.iter().enumerate() {
            let above = below + w;
            if x < above {
                let clear = x - below > margin && above - x > margin;
                return clear.then(|| infos[c * CHUNK + j].0);
            }
            below = above;
        }
        // Rounding: x lies within the margin of the chunk's end.
        return None;
    }
    None
}

/// Lanes of [`fast_weights`].
const LANES: usize = 4;

/// The fast weights `exp(H·(ln v − ln M))` of four informations `v` (0 for
/// `v ≤ 0`) and bounds on their differences to the plain weights: the plain
/// and the fast argument differ by a few ulp of each logarithm (each within
/// `2u·(|ln| + 1)`) times `H`, and of `x` itself; `e^d − 1 ≤ d(1 + d)` for
/// `d ≤ 1`. An argument below −700 is clamped (both weights below `e^−690`,
/// covered by `FLOOR`). Lane by lane, so the loops vectorize.
#[inline(always)]
fn fast_weights(v: &[f64; LANES], exponent: f64, ln_max: f64, w: &mut [f64], e: &mut [f64]) {
    const FLOOR: f64 = 1e-299;
    let mut ln_v = [0.0; LANES];
    for l in 0..LANES {
        ln_v[l] = ln_normal(v[l].max(f64::MIN_POSITIVE));
    }
    let mut x = [0.0; LANES];
    for l in 0..LANES {
        x[l] = (exponent * (ln_v[l] - ln_max)).clamp(-700.0, 0.0);
    }
    let mut fast = [0.0; LANES];
    for l in 0..LANES {
        fast[l] = exp_neg(x[l]);
    }
    for l in 0..LANES {
        let d = SLACK * (exponent * (ln_v[l].abs() + ln_max.abs() + 2.0) - x[l] + 6.0);
        let positive = v[l] > 0.0;
        w[l] = if positive { fast[l] } else { 0.0 };
        e[l] = if positive {
            fast[l] * d * (1.0 + d) + FLOOR
        } else {
            0.0
        };
    }
}

/// Items per chunk of the walk of [`fast_walk`].
const CHUNK: usize = 256;

/// `Σ xs` with four accumulators (vectorizes; any order is within `n·u` of
/// the exact sum of non-negative terms, which the bounds allow for).
fn sum(xs: &[f64]) -> f64 {
    let mut acc = [0.0_f64; 4];
    let chunks = xs.chunks_exact(4);
    let rest: f64 = chunks.remainder().iter().sum();
    for c in chunks {
        for l in 0..4 {
            acc[l] += c[l];
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + rest
}

/// `ln x` for a positive normal finite `x`, branch-free: `x = 2^e·m` with
/// `m ∈ [1, 2)`, `t = m/√2 ∈ [√½, √2)`, `ln x = (e + ½)·ln 2 + ln t`,
/// `ln t = 2·atanh(s)`, `s = (t − 1)/(t + 1)`, `|s| ≤ 0.1716`, by its series
/// to `s^23` (truncation below `0.0295^12/25 < 10⁻¹⁹`). Within `2u·(|ln x| +
/// 1)` of `ln x` (unit-tested; the absolute part from the rounding of `t`).
#[inline(always)]
fn ln_normal(x: f64) -> f64 {
    const MANTISSA: u64 = (1 << 52) - 1;
    const ONE: u64 = 0x3FF0_0000_0000_0000;
    /// `2^52` and its bits: `from_bits(BIAS_BITS | k) − 2^52 = k` for `k < 2^52`.
    const TWO_52: f64 = 4_503_599_627_370_496.0;
    const BIAS_BITS: u64 = 0x4330_0000_0000_0000;
    let bits = x.to_bits();
    let t = f64::from_bits(ONE | (bits & MANTISSA)) * std::f64::consts::FRAC_1_SQRT_2;
    let e = (f64::from_bits(BIAS_BITS | (bits >> 52)) - TWO_52) - 1022.5;
    let s = (t - 1.0) / (t + 1.0);
    let z = s * s;
    let mut p = 1.0 / 23.0;
    for k in (0..11).rev() {
        p = p * z + 1.0 / f64::from(2 * k + 1);
    }
    e * std::f64::consts::LN_2 + 2.0 * s * p
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::{fast_walk, ln_normal, plain_walk};

    /// Where the fast walk answers, it answers like the plain walk; at a
    /// boundary of the plain walk's intervals it declines.
    #[test]
    fn the_fast_walk_agrees_with_the_plain_walk_or_declines() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut answered = 0;
        for case in 0..300 {
            let n = rng.random_range(1..400);
            let infos: Vec<(usize, f64)> = (0..n)
                .map(|i| {
                    let info = if rng.random::<f64>() < 0.05 {
                        0.0
                    } else {
                        rng.random_range(1e-6..2.0)
                    };
                    (2 * i, info)
                })
                .collect();
            let max = infos.iter().map(|x| x.1).fold(0.0, f64::max);
            if max < f64::MIN_POSITIVE {
                continue;
            }
            let exponent = [0.3, 1.0, 7.5, 40.0, 400.0][case % 5];
            for _ in 0..50 {
                let u: f64 = rng.random();
                let plain = plain_walk(&infos, exponent, max, Some(u), &mut rng);
                if let Some(i) = fast_walk(&infos, exponent, max, u) {
                    answered += 1;
                    assert_eq!(Some(i), plain, "case {case} u {u}");
                }
            }
            // The drawn point on a boundary between two positive weights.
            let weights: Vec<f64> = infos
                .iter()
                .map(|&(_, v)| {
                    if v > 0.0 {
                        (exponent * (v.ln() - max.ln())).exp()
                    } else {
                        0.0
                    }
                })
                .collect();
            let total: f64 = weights.iter().sum();
            let cut = rng.random_range(0..n);
            let boundary: f64 = weights[..cut].iter().sum();
            if boundary > 0.0 && boundary < total {
                assert_eq!(fast_walk(&infos, exponent, max, boundary / total), None);
            }
        }
        assert!(answered > 10_000, "{answered}");
    }

    #[test]
    fn the_fast_logarithm_is_within_a_few_ulp() {
        let mut x = f64::MIN_POSITIVE;
        while x < 1e300 {
            for f in [1.0, 1.1, 1.414, 1.4143, 1.5, 1.9999, 1.000_000_1, 0.999_99] {
                let v = x * f;
                if v >= f64::MIN_POSITIVE {
                    let (fast, libm) = (ln_normal(v), v.ln());
                    let tolerance = 2.0 * f64::EPSILON * (libm.abs() + 1.0);
                    assert!((fast - libm).abs() <= tolerance, "ln {v}: {fast} vs {libm}");
                }
            }
            x *= 1.37;
        }
        for v in [
            1.0,
            1.0 + f64::EPSILON,
            1.0 - f64::EPSILON / 2.0,
            0.75,
            2.0,
            0.5,
        ] {
            let (fast, libm) = (ln_normal(v), v.ln());
            assert!(
                (fast - libm).abs() <= 2.0 * f64::EPSILON * (libm.abs() + 1.0),
                "{v}"
            );
        }
    }
}
