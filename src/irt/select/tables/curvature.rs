//! Curvature bounds of the divergence family for polytomous buckets (module doc of
//! [`super`], "Envelopes"): per bucket, an upper envelope of the items' Fisher information
//! on [`CELLS`] cells spanning the grid, and a step's bound of every item's `KL`/`KLP`
//! criterion from it.
//!
//! # The bound
//!
//! For `θ̂` fixed and `p_k = P_k(θ̂)`, let `f(x) = KL(θ̂ ‖ x) = Σ_k p_k (ln p_k − ln P_k(x))`.
//! Then `f(θ̂) = 0`, `f'(θ̂) = −Σ_k P_k'(θ̂) = 0`, and by Taylor's formula with integral
//! remainder `f(x) = ∫_{θ̂}^{x} (x − t)·f''(t) dt`, where
//! `f''(t) = Σ_k p_k·(−(ln P_k)''(t)) = Σ_k (p_k / P_k(t))·J_k(t)` with
//! `J_k = P_k·(−(ln P_k)'') = P_k'²/P_k − P_k''` and `Σ_k J_k(t) = I(t)` (the Fisher
//! information, since `Σ_k P_k'' = 0`).
//!
//! * GPCM: an exponential family in `D·a·θ` with sufficient statistic `K`, so
//!   `−(ln P_k)'' = (D·a)²·Var_t(K)` whatever `k`, and `f''(t) = I(t)` exactly.
//! * GRM: `P_k(θ)` is the probability that a logistic variable shifted by `D·a·θ` lies
//!   in an interval; the logistic density is log-concave, hence so is `P_k` (Prékopa), so
//!   `J_k ≥ 0`; the score `d ln P_k/dθ = D·a·(1 − P*_k − P*_{k+1})` lies in `[−c, c]`
//!   (`c = D·a`), so `p_k / P_k(t) ≤ e^{c·|t − θ̂|}` and `f''(t) ≤ e^{c·|t − θ̂|}·I(t)`.
//!
//! With `M ≥ max I` between `θ̂` and `x` and `d = |x − θ̂|`:
//! `f(x) ≤ M·∫_0^d (d − s)·e^{c·s} ds = M·(e^{cd} − 1 − cd)/c² ≤ M·(d²/2)·(1 + (cd/3)·e^{cd})`
//! (`e^y − 1 − y = (y²/2)·Σ_{n≥0} 2yⁿ/(n+2)!` and `6/(n+2)! ≤ 1/(n−1)!` for `n ≥ 1`),
//! with `c = 0` for the GPCM. A bucket's bound is this with `M` its envelope over the
//! cells between `θ̂` and `x_g`, `c` its largest GRM slope, summed over the nodes with
//! their weights; skipped nodes add at most their cross-entropy (the step's tails), and
//! the plain formula's rounding at most `ROUNDING·(1 + 2 ln C + 2 max_k |ln P_jgk|)` per
//! node, as for the pivot envelopes.
//!
//! The cells' envelope: on a cell `[t_i, t_{i+1}]` of width `h`, every point is within
//! `h/2` of an end, so `I ≤ B(max(I(t_i), I(t_{i+1})), h/2)` with `B` the Lipschitz-type
//! bounds of [`super::super::blocks`] (`gpcm_bound`, `grm_bound`), times `1 + 10⁻⁹`.

use super::super::super::item::PolytomousModel;
use super::super::blocks::{gpcm_bound, grm_bound};
use super::step::Step;
use super::*;

/// Cells of the information envelope over `[theta_min, theta_max]`.
pub(super) const CELLS: usize = 512;
/// Relative slack on the envelope and on the bounds (far above their rounding).
const SLACK: f64 = 1e-9;
/// Slope levels of the GRM factor (see [`Curvature`]).
const LEVELS: usize = 32;

/// Cell of `y` (clamped; a cell's envelope also bounds the information within `h/2` of
/// the cell, so a point placed in a neighbouring cell by rounding is still covered).
#[inline]
fn cell_of(y: f64, lo: f64, width: f64) -> usize {
    let c = ((y - lo) / width).floor();
    if c >= 0.0 {
        (c as usize).min(CELLS - 1)
    } else {
        0
    }
}

/// The GRM's factor on `M·d²/2` at `y = c·d` (module doc): `2(e^y − 1 − y)/y²`, computed
/// directly for `y ≥ 1/8` (relative rounding below `10⁻¹⁴`), else its bound
/// `1 + (y/3)·e^y`.
#[inline]
pub(super) fn grm_factor(y: f64) -> f64 {
    if y >= 0.125 {
        2.0 * (y.exp_m1() - y) / (y * y)
    } else {
        1.0 + y / 3.0 * y.exp()
    }
}

impl SelectionTables {
    /// Divergence family: per bucket of `group`, the envelope of the information on the
    /// cells and the largest GRM slope `D·a` (0 when the bucket has no GRM item); empty
    /// when a bucket has an item that is not polytomous (no curvature bound for the
    /// group).
    pub(super) fn curvature_envelope(&self, group: &Group, bank: &[Item]) -> (Vec<f64>, Vec<f64>) {
        let (lo, hi) = self.cell_range;
        let width = (hi - lo) / CELLS as f64;
        if !(width > 0.0 && width.is_finite()) {
            return (Vec::new(), Vec::new());
        }
        let scaling = self.scaling;
        let mut cells = vec![0.0_f64; group.buckets.len() * CELLS];
        let mut rates = vec![0.0_f64; group.buckets.len()];
        let mut at = vec![0.0_f64; CELLS + 1];
        for (b, &(start, end)) in group.buckets.iter().enumerate() {
            let env = &mut cells[b * CELLS..(b + 1) * CELLS];
            for pos in start as usize..end as usize {
                let item = &bank[group.ids[pos] as usize];
                let Item::Polytomous(p) = item else {
                    return (Vec::new(), Vec::new());
                };
                let rate = (scaling * p.a).abs();
                let m = p.thresholds.len() as f64;
                for (i, v) in at.iter_mut().enumerate() {
                    let t = if i == CELLS {
                        hi
                    } else {
                        lo + i as f64 * width
                    };
                    *v = item.information(t, scaling);
                }
                if p.model == PolytomousModel::Grm {
                    rates[b] = rates[b].max(rate);
                }
                for (i, slot) in env.iter_mut().enumerate() {
                    let e = at[i].max(at[i + 1]);
                    let bound = match p.model {
                        PolytomousModel::Gpcm => gpcm_bound(e, width / 2.0, rate, m),
                        PolytomousModel::Grm => grm_bound(e, width / 2.0, rate),
                    } * (1.0 + SLACK);
                    *slot = if bound.is_nan() || e.is_nan() {
                        f64::INFINITY
                    } else {
                        slot.max(bound)
                    };
                }
            }
        }
        (cells, rates)
    }
}

/// A step's nodes for the curvature bounds: per side of `θ̂`, the kept nodes outward
/// with `w_g·d²/2` times the GRM factor at each slope level, and the last cell they
/// reach; and per group the rounding margin.
pub(super) struct Curvature {
    /// Cell of `θ̂`.
    start: usize,
    /// `c_max / LEVELS`: a bucket of largest GRM slope `c` uses the factor at
    /// `⌈c / level⌉·level ≥ c` (the factor increases with `c`).
    level: f64,
    /// Nodes above `θ̂`, increasing: last cell, then `w·d²/2·factor` per level
    /// (`LEVELS + 1` values) in `factors`.
    right: Vec<usize>,
    /// Nodes below `θ̂`, decreasing: first cell (factors after the right side's).
    left: Vec<usize>,
    /// Per node (right then left) and level: `w·d²/2·factor(level·ℓ·d)`.
    factors: Vec<f64>,
    /// Per group: the plain formula's rounding over every node plus the skipped
    /// nodes' tails.
    extra: Vec<f64>,
}

impl Curvature {
    /// The step's curvature nodes, or `None` when `θ̂` is outside the cells.
    pub(super) fn new(tables: &SelectionTables, step: &Step<'_>) -> Option<Self> {
        let (lo, hi) = tables.cell_range;
        let theta = step.theta;
        let width = (hi - lo) / CELLS as f64;
        if !(theta >= lo && theta <= hi && width > 0.0 && width.is_finite()) {
            return None;
        }
        let (g0, g1) = step.kept;
        let max_rate = tables
            .groups
            .iter()
            .flat_map(|g| g.rates.iter().copied())
            .fold(0.0, f64::max);
        if !max_rate.is_finite() {
            return None;
        }
        let level = max_rate / LEVELS as f64;
        let (mut right, mut left) = (Vec::new(), Vec::new());
        let (mut factors_right, mut factors_left) = (Vec::new(), Vec::new());
        for g in g0..g1 {
            let x = step.nodes[g];
            let d = (x - theta).abs();
            let wd = step.w[g] * d * d * 0.5;
            let (cells, factors) = if x >= theta {
                (&mut right, &mut factors_right)
            } else {
                (&mut left, &mut factors_left)
            };
            cells.push(cell_of(x, lo, width));
            let row: Vec<f64> = (0..=LEVELS)
                .map(|l| wd * grm_factor(l as f64 * level * d))
                .collect();
            factors.push(row);
        }
        left.reverse();
        factors_left.reverse();
        let factors = factors_right
            .into_iter()
            .chain(factors_left)
            .flatten()
            .collect();
        let extra = tables
            .groups
            .iter()
            .zip(&step.tails)
            .map(|(group, &tail)| {
                let ln_c = (group.categories as f64).ln();
                let rounding: f64 = step
                    .w
                    .iter()
                    .zip(&group.node_max)
                    .map(|(w, m)| w * (1.0 + 2.0 * ln_c + 2.0 * m))
                    .sum();
                ROUNDING * rounding + tail * (1.0 + ROUNDING)
            })
            .collect();
        Some(Self {
            start: cell_of(theta, lo, width),
            level,
            right,
            left,
            factors,
            extra,
        })
    }

    /// Upper bound of the plain criterion of every item of bucket `b` of group `gi`
    /// (`+∞` when the group has no curvature envelope).
    pub(super) fn bound(&self, gi: usize, group: &Group, b: usize) -> f64 {
        let Some(env) = group.cells.get(b * CELLS..(b + 1) * CELLS) else {
            return f64::INFINITY;
        };
        let rate = group.rates[b];
        let l = if rate > 0.0 {
            // Rounded up (and the factor increases with the slope).
            ((rate / self.level * (1.0 + 1e-12)).ceil() as usize).min(LEVELS)
        } else {
            0
        };
        let around = env[self.start];
        let mut sum = 0.0;
        let mut factors = self.factors[l..].iter().step_by(LEVELS + 1);
        let (mut max, mut i) = (around, self.start);
        for &reach in &self.right {
            while i < reach {
                i += 1;
                max = max.max(env[i]);
            }
            sum += factors.next().unwrap_or(&f64::INFINITY) * max;
        }
        let (mut max, mut i) = (around, self.start);
        for &reach in &self.left {
            while i > reach {
                i -= 1;
                max = max.max(env[i]);
            }
            sum += factors.next().unwrap_or(&f64::INFINITY) * max;
        }
        let bound = sum * (1.0 + SLACK) + self.extra[gi];
        if bound.is_nan() { f64::INFINITY } else { bound }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::blocks::random_polytomous_item;
    use super::super::super::grid::Posterior;
    use super::super::variance::tests::{exam_context, random_answers};
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Every bucket's curvature bound is above the plain criterion of each of its
    /// items, for random GRM and GPCM items (2 to 6 categories, slopes up to 4), posteriors
    /// from 0 to 80 answers (so from wide to one node), estimates across the grid, both
    /// rules and scalings; and the GRM factor is above its series.
    #[test]
    fn the_curvature_bounds_hold() {
        for y in [0.0, 1e-9, 0.01, 0.1, 0.124_999, 0.125, 0.5, 1.0, 3.0, 20.0] {
            // (e^y − 1 − y)·2/y² by its series, summed far enough.
            let (mut term, mut series) = (1.0_f64, 0.0_f64);
            for n in 0..60 {
                series += term;
                term *= y / f64::from(n + 3);
            }
            assert!(grm_factor(y) >= series * (1.0 - 1e-12), "{y}");
        }
        let mut rng = StdRng::seed_from_u64(15);
        let mut bank: Vec<Item> = Vec::new();
        for _ in 0..1_200 {
            bank.push(random_polytomous_item(&mut rng, 6, -4.5..4.5, 4.0));
        }
        let eligible = vec![true; bank.len()];
        let mut checked = 0_usize;
        let mut tightest = 0.0_f64;
        for scaling in [1.0, 1.702] {
            let settings = EstimatorSettings {
                scaling,
                ..EstimatorSettings::default()
            };
            for rule in [SelectionRule::Kl, SelectionRule::Klp] {
                let tables = SelectionTables::new(&bank, &settings, rule).unwrap();
                assert!(tables.groups.iter().all(|g| !g.cells.is_empty()));
                for _ in 0..12 {
                    let (administered, responses, truth) = random_answers(&mut rng, &bank);
                    let answered = administered.len();
                    let theta = if rng.random::<bool>() {
                        truth + rng.random_range(-0.2..0.2)
                    } else {
                        rng.random_range(settings.theta_min..settings.theta_max)
                    }
                    .clamp(settings.theta_min, settings.theta_max);
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
                    let curvature = step.curvature.as_ref().unwrap();
                    for (gi, group) in tables.groups.iter().enumerate() {
                        for (b, &(start, end)) in group.buckets.iter().enumerate() {
                            let bound = curvature.bound(gi, group, b);
                            for &i in &group.ids[start as usize..end as usize] {
                                let value = posterior.criterion(&bank[i as usize], theta);
                                assert!(
                                    value <= bound,
                                    "{rule:?} D={scaling} θ̂={theta} t={answered} item {i}: \
                                     {value} > {bound}"
                                );
                                checked += 1;
                                tightest = tightest.max(value / bound);
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 10_000);
        // Some buckets come within a few percent of their bound, so a bound even
        // 5 % too small fails above.
        assert!(tightest > 0.95, "{tightest}");
    }
}
