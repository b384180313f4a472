//! Per-item lower bounds of the expected posterior variance (MEPV) of
//! polytomous items from a few nodes of their rows (module doc of [`super`]):
//! what lets a step skip most polytomous items before their fast value and
//! their probabilities at `θ̂`.
//!
//! # The bound
//!
//! With the notation of [`Step::variance_bound`] (`π_k = Σ_g w_g P_kg`,
//! `V_k` the plain variance after answer `k`, all sums over the plain
//! formula's floats), in real arithmetic
//! `π_k·V_k = min_c Σ_g w_g P_kg (u_g − c)²`. If `m_g ≤ P_kg ≤ M_g` at every
//! node (`m_g` of any sign), then for every `c`, since `w_g (u_g − c)² ≥ 0`,
//! `Σ_g w_g P_kg (u_g − c)² ≥ X − 2cY + c²Z ≥ X − Y²/Z` when `Z > 0`, with
//! `X = Σ_g m_g w_g u_g²`, `Y = Σ_g m_g w_g u_g`, `Z = Σ_g m_g w_g`; and
//! `π_k ≤ Σ_g M_g w_g`. So `V_k ≥ (X − Y²/Z)/Σ_g M_g w_g`.
//!
//! The bounds `m`, `M` come from the cumulative probabilities
//! `S_k(θ) = P(X ≥ k | θ) = Σ_{j ≥ k} P_j(θ)`, non-decreasing in `θ` for the
//! GRM and the GPCM (their likelihood ratios are monotone in `(k, θ)`, module
//! doc of [`super`], and a monotone likelihood ratio orders the distributions
//! stochastically). On `[x_a, x_b]`, `P_k = S_k − S_{k+1}` lies in
//! `[S_k(x_a) − S_{k+1}(x_b), S_k(x_b) − S_{k+1}(x_a)]`, so a block of
//! consecutive nodes needs `S` at its two ends only: `X`, `Y`, `Z` and the
//! bound of `π_k` become sums over the step's blocks of the block moments
//! `Σ_{g∈β} w_g u_g^r` times `m_β` or `M_β` ([`Spread`]: single nodes where
//! the posterior has its mass, one block per tail of the kept window (a
//! tail of one node is a single node); the skipped nodes count with `m = 0`,
//! `M = 1`). Likewise `θ̂ ∈ [x_a, x_b]`
//! gives `p_k = P_k(θ̂) ≥ S_k(x_a) − S_{k+1}(x_b)`, and
//! `EPV = Σ_k p_k V_k ≥ Σ_k max(0, p_lo_k)·V_lo_k` (`V_k ≥ 0`).
//!
//! # Rounding
//!
//! The bound holds for the true probabilities; the plain formula uses
//! computed ones. Both kernels are within [`PROBABILITY_ERROR`]` / 2` of the
//! true values for an item with a [`slope`]: the GRM's are differences of two
//! logistics, each within about `20u` of the truth (and `z = D·a·(θ − b)`'s
//! relative rounding `3u` moves `σ(z)` by `σ'(z)·3u·|z| ≤ u`); the GPCM's are
//! `e^{ζ_k − max}/Σ_j e^{ζ_j − max}` whose exponents are within
//! `(m + 5)u·Z` of the truth, `Z = D·a·Σ_i (|θ| + |δ_i|)`, so within
//! `2.02·((m + 5)·Z + m + 4)·u` relatively; [`slope`] requires that to be
//! below `PROBABILITY_ERROR / 2`, at every `|θ|` up to the grid's. A sum
//! `S̃_k` of `C − 1` stored rows is then within `(C − 1)·PROBABILITY_ERROR/2
//! + C·u` of `S_k`, and every `m`, `M`, `p_lo` is widened by
//! `σ = (C + 1)·PROBABILITY_ERROR` (which also covers their own rounding).
//! The moments are sums of at most `q` products with `|m| ≤ 1 + 2σ`, so each
//! computed sum is within `ROUNDING` times the step's sums of absolute moments
//! ([`Spread::totals`]) of the real one; `Z`, `X`, `|Y|` are moved by that
//! much in the unfavourable direction before `(XZ − Y²)/(ZΠ)` (the bound of
//! `V_k`, `Π` that of `π_k`), whose numerator is within `3u·(|XZ| + Y²)` and
//! whose quotient is within `4u` relatively of their real values. The plain variance
//! of a category is within `8·ROUNDING·max u²` of `V_k` when `π_k > 10⁻²⁵⁰`
//! (as in [`Step::variance_bound`]; below that the category's bound is 0),
//! and the plain sum over categories within `2(C + 1)u` relative.

use super::super::super::simd::vectorized;
use super::step::Step;
use super::*;

/// Bound on the distance between an item's computed category
/// probability (the plain formula's, and the tables') and the true one,
/// times 2.
const PROBABILITY_ERROR: f64 = 1e-10;

/// Nodes whose weight is at least this share of the largest are blocks of
/// their own (the posterior's mass); the others of the kept window form one
/// block per tail. Larger is cheaper (fewer nodes read) and looser.
const CORE: f64 = 1e-4;

/// For a polytomous item whose computed probabilities at any `|θ| ≤ radius`
/// are within `PROBABILITY_ERROR / 2` of the true ones (module doc), a bound
/// on the slope of its cumulative probabilities `S_k(θ)`: `D·a/4` for the GRM
/// (`S_k = σ(D·a·(θ − b_k))`), `D·a·m/4` for the GPCM (`S_k' = D·a·Cov(1{X ≥
/// k}, X) ≤ D·a·(1/2)·(m/2)` by Cauchy–Schwarz, `X ∈ [0, m]`), widened by
/// `10⁻⁶`. NaN otherwise (no spread bound for the item).
pub(super) fn slope(item: &Item, scaling: f64, radius: f64) -> f64 {
    let Item::Polytomous(p) = item else {
        return f64::NAN;
    };
    let m = p.thresholds.len() as f64;
    let rate = scaling * p.a * (1.0 + 1e-6) / 4.0;
    match p.model {
        super::super::super::item::PolytomousModel::Grm => rate,
        super::super::super::item::PolytomousModel::Gpcm => {
            let z: f64 = p
                .thresholds
                .iter()
                .map(|b| scaling * p.a * (radius + b.abs()))
                .sum();
            let error = 2.02 * ((m + 5.0) * z + m + 4.0) * UNIT;
            if error < 0.5 * PROBABILITY_ERROR {
                rate * m
            } else {
                f64::NAN
            }
        }
    }
}

/// A step's blocks for the spread bounds (module doc).
#[derive(Debug)]
pub(super) struct Spread {
    /// The nodes whose `S_k` are read, each once: the blocks' ends and the
    /// bracket's.
    ends: Vec<usize>,
    /// Per block: the indices in `ends` of its two ends, and its moments
    /// `[Σ w, Σ w u, Σ w u²]`; single nodes (both ends the same), then the
    /// tails.
    blocks: Vec<(usize, usize, [f64; 3])>,
    /// Number of single nodes at the start of `blocks`.
    singles: usize,
    /// The single nodes' moments, summed: a single node has `m = d − σ` and
    /// `M = d + σ` with the same `d = S_k(x_g) − S_{k+1}(x_g)`, so `σ` is
    /// applied once to the sums.
    single_moments: [f64; 3],
    /// The indices in `ends` of the nodes `x_a ≤ θ̂ ≤ x_b` bracketing `θ̂`
    /// (the same twice when `θ̂` is a node), and bounds of `θ̂ − x_a` and
    /// `x_b − θ̂`.
    slots: (usize, usize),
    gaps: (f64, f64),
    /// `Σ w`, `Σ w |u|`, `Σ w u²` over the blocks, times `1.01`: what the
    /// roundings of a category's moments are relative to.
    totals: [f64; 3],
    /// `Σ w` over the skipped nodes (`M = 1` there).
    skipped: f64,
}

impl Spread {
    /// The step's blocks (`None` when `θ̂` is outside the grid or anything
    /// is not finite).
    pub(super) fn new(step: &Step<'_>) -> Option<Self> {
        let w = step.w;
        let q = w.len();
        let (g0, g1) = step.kept;
        let nodes = step.nodes;
        let t = step.theta;
        if q < 2 || g1 <= g0 || !(t >= nodes[0] && t <= nodes[q - 1]) {
            return None;
        }
        let g = nodes.partition_point(|&x| x <= t).clamp(1, q - 1) - 1;
        let bracket = match (t == nodes[g], t == nodes[g + 1]) {
            (true, _) => (g, g),
            (_, true) => (g + 1, g + 1),
            _ => (g, g + 1),
        };
        let max = w[g0..g1].iter().copied().fold(0.0, f64::max);
        let n0 = (g0..g1).find(|&g| w[g] >= CORE * max)?;
        let n1 = (g0..g1).rev().find(|&g| w[g] >= CORE * max)? + 1;
        let moments = |from: usize, to: usize| {
            let mut m = [0.0; 3];
            let moments = w[from..to]
                .iter()
                .zip(&step.wu[from..to])
                .zip(&step.wuu[from..to]);
            for ((w, wu), wuu) in moments {
                m[0] += w;
                m[1] += wu;
                m[2] += wuu;
            }
            m
        };
        // One block per node of the core, one per tail (ends read apart); a
        // tail of one node is a single node too (the same `m` and `M`).
        let tails = [(g0, n0), (n1, g1)];
        let lone = tails.iter().filter(|&&(from, to)| to == from + 1);
        // Each node read once (the bracket's are core nodes or tails' ends).
        let mut ends: Vec<usize> = Vec::new();
        let mut slot = |g: usize| match ends.iter().position(|&p| p == g) {
            Some(j) => j,
            None => {
                ends.push(g);
                ends.len() - 1
            }
        };
        let mut blocks = Vec::new();
        for g in (n0..n1).chain(lone.clone().map(|&(from, _)| from)) {
            let j = slot(g);
            blocks.push((j, j, moments(g, g + 1)));
        }
        let singles = blocks.len();
        let mut single_moments = moments(n0, n1);
        for &(from, to) in lone {
            for (total, m) in single_moments.iter_mut().zip(moments(from, to)) {
                *total += m;
            }
        }
        for (from, to) in tails {
            if to > from + 1 {
                blocks.push((slot(from), slot(to - 1), moments(from, to)));
            }
        }
        let slots = (slot(bracket.0), slot(bracket.1));
        let abs: f64 = (g0..g1).map(|g| w[g] * step.abs_u[g]).sum();
        let totals = [1.01 * step.moments[0], 1.01 * abs, 1.01 * step.moments[2]];
        let finite = blocks.iter().all(|b| b.2.iter().all(|v| v.is_finite()))
            && totals.iter().all(|v| v.is_finite())
            && step.skipped_mass.is_finite();
        let widen = |d: f64| d * (1.0 + 1e-9) + TINY;
        let gaps = (widen(t - nodes[bracket.0]), widen(nodes[bracket.1] - t));
        finite.then_some(Self {
            ends,
            blocks,
            singles,
            single_moments,
            slots,
            gaps,
            totals,
            skipped: step.skipped_mass,
        })
    }
}

impl Step<'_> {
    /// Upper bounds of the signed plain criterion (`−EPV`) of every lane of
    /// bucket `b` of a polytomous group from the spread bound (module doc):
    /// `+∞` for the lanes of items without a [`slope`], or when there is no bound.
    pub(super) fn spread_caps(
        &self,
        group: &Group,
        b: usize,
        scratch: &mut Vec<f64>,
        caps: &mut [f64; BUCKET_SIZE],
    ) {
        vectorized(
            #[inline(always)]
            || self.spread_caps_lanes(group, b, scratch, caps),
        );
    }

    /// [`Step::spread_caps`], inlined into the dispatched closure.
    #[inline(always)]
    fn spread_caps_lanes(
        &self,
        group: &Group,
        b: usize,
        scratch: &mut Vec<f64>,
        caps: &mut [f64; BUCKET_SIZE],
    ) {
        const L: usize = BUCKET_SIZE;
        // Lanes per pass of the bound (an AVX2 vector): few enough that the
        // per-lane accumulators stay in registers.
        const W: usize = 4;
        caps.fill(f64::INFINITY);
        let Some(sp) = &self.spread else {
            return;
        };
        let q = self.w.len();
        let c = group.categories;
        let rows = group.lanes(b, q);
        // S_k at the nodes read: slot j, category k, lane l at
        // (j·(c + 1) + k)·L + l; S_0 = 1, S_c = 0.
        let e = sp.ends.len();
        scratch.resize(scratch.len().max(e * (c + 1) * L), 0.0);
        for (j, &g) in sp.ends.iter().enumerate() {
            let s = &mut scratch[j * (c + 1) * L..(j + 1) * (c + 1) * L];
            s[c * L..].fill(0.0);
            // In a fixed-size accumulator: through slices, this loop stayed
            // scalar.
            let mut sum = [0.0_f64; L];
            for k in (1..c).rev() {
                let lane: &[f64; L] = rows[((k - 1) * q + g) * L..][..L]
                    .try_into()
                    .expect("L lanes");
                for (v, &p) in sum.iter_mut().zip(lane) {
                    *v += p;
                }
                s[k * L..(k + 1) * L].copy_from_slice(&sum);
            }
            s[..L].fill(1.0);
        }
        let (start, end) = group.buckets[b];
        let (start, end) = (start as usize, end as usize);
        let mut slopes = [0.0; L];
        slopes[..end - start].copy_from_slice(&group.slopes[start..end]);
        let sigma = (c as f64 + 1.0) * PROBABILITY_ERROR;
        let r = ROUNDING;
        let [t0, t1, t2] = sp.totals;
        let floor = 8.0 * ROUNDING * self.max_square;
        // Σ_k p_k ≥ 1 − C·PROBABILITY_ERROR: the mass above Σ p_lo goes at
        // least to the smallest V_lo.
        let one = 1.0 - c as f64 * PROBABILITY_ERROR;
        let (singles, tails) = sp.blocks.split_at(sp.singles);
        let mut total = [0.0_f64; L];
        // `W` lanes at a time, so that the accumulators stay in registers.
        for h in 0..L / W {
            let s = |j: usize, k: usize| -> &[f64; W] {
                scratch[(j * (c + 1) + k) * L + h * W..][..W]
                    .try_into()
                    .expect("W lanes")
            };
            let slopes: &[f64; W] = slopes[h * W..][..W].try_into().expect("W lanes");
            // Per lane: Σ_k p_lo·V_lo, Σ_k p_lo and min_k V_lo.
            let (mut sum, mut mass, mut least) = ([0.0_f64; W], [0.0_f64; W], [f64::INFINITY; W]);
            for k in 0..c {
                let (mut x, mut y, mut z, mut big) = ([0.0; W], [0.0; W], [0.0; W], [0.0; W]);
                for &(ia, _, [mw, mu, muu]) in singles {
                    let (sk, sn) = (s(ia, k), s(ia, k + 1));
                    for l in 0..W {
                        let d = sk[l] - sn[l];
                        x[l] += d * muu;
                        y[l] += d * mu;
                        z[l] += d * mw;
                    }
                }
                let [cw, cu, cuu] = sp.single_moments;
                for l in 0..W {
                    big[l] = z[l] + sigma * cw;
                    x[l] -= sigma * cuu;
                    y[l] -= sigma * cu;
                    z[l] -= sigma * cw;
                }
                for &(ia, ib, [mw, mu, muu]) in tails {
                    let (ska, skb) = (s(ia, k), s(ib, k));
                    let (sna, snb) = (s(ia, k + 1), s(ib, k + 1));
                    for l in 0..W {
                        let m = (ska[l] - snb[l]) - sigma;
                        let hi = (skb[l] - sna[l]) + sigma;
                        x[l] += m * muu;
                        y[l] += m * mu;
                        z[l] += m * mw;
                        big[l] += hi * mw;
                    }
                }
                // S_k(θ̂) ≥ max(S_k(x_a), S_k(x_b) − λ·(x_b − θ̂)), S_{k+1}(θ̂) ≤
                // min(S_{k+1}(x_b), S_{k+1}(x_a) + λ·(θ̂ − x_a)).
                let (ka, kb) = (s(sp.slots.0, k), s(sp.slots.1, k));
                let (na, nb) = (s(sp.slots.0, k + 1), s(sp.slots.1, k + 1));
                for l in 0..W {
                    let (left, right) = (slopes[l] * sp.gaps.0, slopes[l] * sp.gaps.1);
                    let upper = ka[l].max(kb[l] - right);
                    let lower = nb[l].min(na[l] + left);
                    let x = x[l] - r * t2;
                    let y = y[l].abs() + r * t1;
                    let z = z[l] - r * t0;
                    let pi = (big[l] + r * t0 + sp.skipped) * (1.0 + r);
                    // (X − Y²/Z)/Π = (XZ − Y²)/(ZΠ), one division.
                    let (xz, yy) = (x * z, y * y);
                    let n = (xz - yy) - 3.0 * UNIT * (xz.abs() + yy);
                    let v = n / (z * pi) * (1.0 - 4.0 * UNIT) - floor;
                    // NaN (never for finite rows) fails the comparison: 0.
                    let v = if z > 1e-250 && v > 0.0 { v } else { 0.0 };
                    let p = ((upper - lower) - sigma).max(0.0);
                    sum[l] += p * v;
                    mass[l] += p;
                    least[l] = least[l].min(v);
                }
            }
            for l in 0..W {
                total[h * W + l] = sum[l] + (one - mass[l]).max(0.0) * least[l];
            }
        }
        for (l, pos) in (start..end).enumerate() {
            if !group.slopes[pos].is_nan() {
                let epv = total[l] * (1.0 - r) - TINY;
                caps[l] = if epv.is_finite() { -epv } else { f64::INFINITY };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::grid::Posterior;
    use super::super::step::dot;
    use super::super::variance::tests::{
        exam_context, random_answers, random_item, round_settings,
    };
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Every polytomous item's spread bound is at most its plain expected
    /// posterior variance, for random GRM and GPCM items (beside 4PL ones),
    /// posteriors from 0 to 80 answers (wide to a few nodes), estimates across
    /// the grid and on its nodes, two priors and scalings. The bound comes
    /// within 1 % of the plain value for some items, and the bound of the
    /// variance reduction `V_c − EPV` within 4 % of the true one for most (a
    /// typical item: 0.3 %), so a bound 5 % too small or too large fails
    /// (either on the value or on the reduction).
    #[test]
    fn the_spread_bounds_hold() {
        let mut rng = StdRng::seed_from_u64(15);
        let (mut checked, mut bounded) = (0_usize, 0_usize);
        let mut ratios = Vec::new();
        let mut closest = 0.0_f64;
        let mut scratch = Vec::new();
        for round in 0..8 {
            let mut bank: Vec<Item> = (0..900).map(|_| random_item(&mut rng)).collect();
            if round % 2 == 1 {
                // Whole buckets of one item.
                for _ in 0..4 {
                    let item = random_item(&mut rng);
                    bank.extend(std::iter::repeat_n(item, 2 * BUCKET_SIZE));
                }
            }
            let eligible = vec![true; bank.len()];
            let settings = round_settings(round);
            let rule = SelectionRule::Mepv;
            let tables = SelectionTables::new(&bank, &settings, rule).unwrap();
            for _ in 0..12 {
                let (administered, responses, truth) = random_answers(&mut rng, &bank);
                let answered = administered.len();
                let theta = match rng.random_range(0..3) {
                    0 => truth + rng.random_range(-0.2..0.2),
                    1 => tables.nodes[rng.random_range(0..tables.nodes.len())],
                    _ => rng.random_range(settings.theta_min - 0.5..settings.theta_max + 0.5),
                };
                let ctx = exam_context(
                    &bank,
                    &eligible,
                    &administered,
                    &responses,
                    theta,
                    &settings,
                );
                let posterior = Posterior::new(&ctx, rule);
                let Some(step) = Step::new(&tables, &ctx, rule, &posterior) else {
                    continue;
                };
                // The posterior variance.
                let vc = dot(step.w, &step.uu) / step.total;
                for group in tables.groups.iter().filter(|g| g.categories > 2) {
                    for (b, &(start, end)) in group.buckets.iter().enumerate() {
                        let mut caps = [0.0; BUCKET_SIZE];
                        step.spread_caps(group, b, &mut scratch, &mut caps);
                        for (l, &i) in group.ids[start as usize..end as usize].iter().enumerate() {
                            let value = posterior.criterion(&bank[i as usize], theta);
                            let cap = caps[l];
                            assert!(
                                -value <= cap,
                                "D={} θ̂={theta} t={answered} item {i} ({:?}): {value} < {}",
                                settings.scaling,
                                bank[i as usize],
                                -cap
                            );
                            checked += 1;
                            if cap.is_finite() {
                                bounded += 1;
                                if vc - value > 1e-6 * vc {
                                    ratios.push((vc - value) / (vc + cap));
                                }
                                if value > 0.0 {
                                    closest = closest.max(-cap / value);
                                }
                            }
                        }
                    }
                }
            }
        }
        ratios.sort_by(f64::total_cmp);
        let median = ratios[ratios.len() / 2];
        eprintln!("checked {checked} bounded {bounded} closest {closest} median {median}");
        assert!(
            checked > 20_000 && bounded > checked / 2,
            "{checked} {bounded}"
        );
        assert!(closest > 0.99, "{closest}");
        assert!(median > 0.96, "{median}");
    }
}
