//! One selection step over the grid tables: the exact top `k` of a rule
//! ([`SelectionTables::top`]), visiting buckets in decreasing upper bound and
//! evaluating only the items whose bound can still win (module doc of
//! [`super`]).

use super::super::super::item::{Item, MAX_CATEGORIES};
use super::super::grid::{self, Posterior};
use super::super::{SelectionContext, SelectionRule, TopK};
use super::curvature::Curvature;
use super::spread::Spread;
use super::variance::{Lanes, Reduction, variance_size};
use super::*;

impl SelectionTables {
    /// The exact top `k` of `rule` (signed so that larger is better) among the
    /// eligible items, the plain formula's values; `None` when the step's
    /// weights are degenerate (the caller then runs the plain scan, which
    /// handles every case).
    pub(in crate::irt::select) fn top(
        &self,
        ctx: &SelectionContext<'_>,
        rule: SelectionRule,
        posterior: &Posterior,
        k: usize,
    ) -> Option<TopK> {
        let step = Step::new(self, ctx, rule, posterior)?;
        let sign = if rule.larger_is_better() { 1.0 } else { -1.0 };
        let theta = ctx.theta;
        let exact = |i: usize| sign * posterior.criterion(&ctx.bank[i], theta);
        let mut lower = TopK::new(k);
        let mut candidates: Vec<(u32, f64)> = Vec::new();
        for &i in &self.extras {
            if ctx.is_eligible(i as usize) {
                // Exact already: its value is both bounds.
                let v = exact(i as usize);
                lower.offer(v, i as usize);
                candidates.push((i, v));
            }
        }

        // Buckets in decreasing bound; polytomous variance buckets: the
        // largest spread bound of their eligible items, kept per position.
        let mut order: Vec<(f64, u32, u32)> = Vec::new();
        let mut caps: Vec<Vec<f64>> = Vec::with_capacity(self.groups.len());
        for (gi, group) in self.groups.iter().enumerate() {
            let mut group_caps = Vec::new();
            if step.spread.is_some() && !group.slopes.is_empty() {
                group_caps.resize(group.ids.len(), 0.0);
                step.spread_caps(group, &mut group_caps);
            }
            for (b, &(start, end)) in group.buckets.iter().enumerate() {
                let bound = if group_caps.is_empty() {
                    step.bucket_bound(self, gi, group, b)
                } else {
                    let (start, end) = (start as usize, end as usize);
                    let mut lane_caps = [f64::NEG_INFINITY; BUCKET_SIZE];
                    // The largest eligible cap (caps are never NaN), four
                    // running maxima so that the loop vectorizes.
                    for ((cap, &c), &i) in lane_caps
                        .iter_mut()
                        .zip(&group_caps[start..end])
                        .zip(&group.ids[start..end])
                    {
                        if ctx.is_eligible(i as usize) {
                            *cap = c;
                        }
                    }
                    let mut best = [f64::NEG_INFINITY; 4];
                    for part in lane_caps.chunks_exact(4) {
                        for (b, &c) in best.iter_mut().zip(part) {
                            *b = if c > *b { c } else { *b };
                        }
                    }
                    best.into_iter().fold(f64::NEG_INFINITY, f64::max)
                };
                order.push((bound, gi as u32, b as u32));
            }
            caps.push(group_caps);
        }
        order.sort_unstable_by(|x, y| y.0.total_cmp(&x.0));

        let mut lanes = Lanes::new();
        for &(bound, gi, b) in &order {
            if lower.is_full() && bound < lower.threshold {
                break;
            }
            let group = &self.groups[gi as usize];
            let (start, end) = group.buckets[b as usize];
            let threshold = lower.threshold;
            let mut offer = |i: usize, lo: f64, hi: f64| {
                if lo.is_finite() && hi.is_finite() {
                    lower.offer(lo, i);
                    if hi >= lower.threshold {
                        candidates.push((i as u32, hi));
                    }
                } else {
                    candidates.push((i as u32, f64::INFINITY));
                }
            };
            match step.family {
                Family::Variance | Family::VarianceJeffreys => {
                    // The whole bucket at once (across lanes); minimized, so
                    // the signed value is −EPV.
                    // Lanes whose spread bound is below `L` are skipped.
                    let group_caps = &caps[gi as usize];
                    lanes.wanted.fill(false);
                    for (l, pos) in (start as usize..end as usize).enumerate() {
                        lanes.wanted[l] = ctx.is_eligible(group.ids[pos] as usize)
                            && group_caps.get(pos).is_none_or(|&c| c >= threshold);
                    }
                    if !lanes.wanted.contains(&true) {
                        continue;
                    }
                    let (mut lo, mut hi) = ([0.0; BUCKET_SIZE], [0.0; BUCKET_SIZE]);
                    step.variance_bucket(group, b as usize, ctx.bank, &mut lanes, &mut lo, &mut hi);
                    for (l, pos) in (start as usize..end as usize).enumerate() {
                        if lanes.wanted[l] {
                            offer(group.ids[pos] as usize, -hi[l], -lo[l]);
                        }
                    }
                }
                Family::Information | Family::Divergence => {
                    for pos in start as usize..end as usize {
                        let i = group.ids[pos] as usize;
                        if ctx.is_eligible(i) {
                            let rows = &group.rows[pos * group.stride..][..group.stride];
                            let (lo, hi) = step.bounds(gi as usize, group, rows, &ctx.bank[i]);
                            offer(i, lo, hi);
                        }
                    }
                }
            }
        }

        if std::env::var_os("CAT_DEBUG_TABLES").is_some() {
            let visited = order
                .iter()
                .take_while(|(b, _, _)| !(lower.is_full() && *b < lower.threshold))
                .count();
            let cut = lower.threshold;
            let mut bounds: Vec<(f64, usize)> = order
                .iter()
                .map(|&(b, g, _)| (b, self.groups[g as usize].categories))
                .collect();
            bounds.truncate(8);
            eprintln!(
                "  L {} top bounds {:?} median {:?}",
                cut,
                bounds,
                order.get(order.len() / 2)
            );
            if let Some(sp) = &step.spread {
                eprintln!("  spread {sp:?}");
            }
            let capped: usize = caps.iter().map(Vec::len).sum();
            let over = caps.iter().flatten().filter(|&&c| c >= cut).count();
            eprintln!("  spread caps {capped} of which reach L {over}");
            eprintln!(
                "tables {:?}: buckets {} visited {} candidates {} exact {}",
                self.key.family,
                order.len(),
                visited,
                candidates.len(),
                candidates.iter().filter(|c| c.1 >= cut).count()
            );
        }
        let mut top = TopK::new(k);
        let cut = if lower.is_full() {
            lower.threshold
        } else {
            f64::NEG_INFINITY
        };
        for &(i, hi) in &candidates {
            if hi >= cut {
                top.offer(exact(i as usize), i as usize);
            }
        }
        Some(top)
    }
}

/// The step's vectors (weights and moments) shared by every item.
pub(super) struct Step<'a> {
    /// The family.
    pub(super) family: Family,
    /// `D`.
    pub(super) scaling: f64,
    /// `θ̂`.
    pub(super) theta: f64,
    /// Normalized weights `w_g`.
    pub(super) w: &'a [f64],
    /// The quadrature nodes `x_g`.
    pub(super) nodes: &'a [f64],
    /// `W = Σ_g w_g`.
    pub(super) total: f64,
    /// Variance family: `w_g·u_g`, `w_g·u_g²`, `|u_g|`, `u_g`, `u_g²`.
    pub(super) wu: Vec<f64>,
    pub(super) wuu: Vec<f64>,
    pub(super) abs_u: Vec<f64>,
    pub(super) u: Vec<f64>,
    pub(super) uu: Vec<f64>,
    /// Variance family: `T_r = Σ_g w_g u_g^r` and `Σ_g w_g |u_g|`.
    pub(super) moments: [f64; 3],
    /// Variance family: `max_g u_g²` (times `1 + 10⁻⁹`), above the variance of
    /// any weights on the nodes.
    pub(super) max_square: f64,
    pub(super) abs_moment: f64,
    /// Jeffreys: the answered items' information per node.
    pub(super) jeffreys: Option<&'a [f64]>,
    /// Per envelope block: `W_β`.
    pub(super) block_mass: Vec<f64>,
    /// Divergence: the pivots bracketing `θ̂` (`None`: no bound).
    pub(super) bracket: Option<usize>,
    /// The nodes `[start, end)` whose weight counts: outside them every
    /// weight is below [`cut`] times the largest, and the dot products skip
    /// them, their whole possible contribution being added to the bounds.
    pub(super) kept: (usize, usize),
    /// `Σ w_g` over the skipped nodes.
    pub(super) skipped_mass: f64,
    /// Variance family: `Σ w_g |u_g|^r` over the skipped nodes.
    pub(super) skipped_moments: [f64; 3],
    /// Per group, the most the skipped nodes can add to an item's criterion
    /// (information: `Σ w_g max I`; divergence: `Σ w_g max |ln P|`, the
    /// cross-entropy bounding the divergence).
    pub(super) tails: Vec<f64>,
    /// Divergence: the curvature bounds' nodes (`None`: none).
    pub(super) curvature: Option<Curvature>,
    /// Variance family, not under Jeffreys' prior: the bounds' vectors.
    pub(super) reduction: Option<Reduction>,
    /// Variance family, not under Jeffreys' prior: the blocks of the
    /// polytomous items' spread bounds.
    pub(super) spread: Option<Spread>,
}

impl<'a> Step<'a> {
    /// The step's vectors, or `None` when the weights are not finite and
    /// non-negative with a positive finite total.
    pub(super) fn new(
        tables: &SelectionTables,
        ctx: &SelectionContext<'_>,
        rule: SelectionRule,
        posterior: &'a Posterior,
    ) -> Option<Self> {
        let family = Family::of(rule, ctx.estimator)?;
        let w = posterior.weights();
        if w.len() != tables.nodes.len()
            || posterior.nodes() != tables.nodes.as_slice()
            || !w.iter().all(|&x| x.is_finite() && x >= 0.0)
        {
            return None;
        }
        let total: f64 = w.iter().sum();
        if !(total > 0.0 && total.is_finite()) {
            return None;
        }
        let block_mass = tables
            .blocks
            .iter()
            .map(|&(b0, b1)| w[b0..b1].iter().sum())
            .collect();
        let mut step = Self {
            family,
            scaling: tables.scaling,
            theta: ctx.theta,
            w,
            nodes: posterior.nodes(),
            total,
            wu: Vec::new(),
            wuu: Vec::new(),
            abs_u: Vec::new(),
            u: Vec::new(),
            uu: Vec::new(),
            moments: [0.0; 3],
            max_square: 0.0,
            abs_moment: 0.0,
            jeffreys: None,
            block_mass,
            bracket: None,
            kept: (0, w.len()),
            skipped_mass: 0.0,
            skipped_moments: [0.0; 3],
            tails: Vec::new(),
            curvature: None,
            reduction: None,
            spread: None,
        };
        if family != Family::VarianceJeffreys {
            let max = w.iter().copied().fold(0.0, f64::max);
            let floor = cut(family) * max;
            let start = w.iter().position(|&x| x > floor).unwrap_or(0);
            let end = w
                .iter()
                .rposition(|&x| x > floor)
                .map_or(w.len(), |g| g + 1);
            step.kept = (start, end);
            let skipped = || (0..start).chain(end..w.len());
            step.skipped_mass = skipped().map(|g| w[g]).sum();
            step.tails = tables
                .groups
                .iter()
                .map(|group| skipped().map(|g| w[g] * group.node_max[g]).sum())
                .collect();
        }
        match family {
            Family::Information => {}
            Family::Divergence => {
                let t = ctx.theta;
                let p = &tables.pivots;
                if p.len() >= 2 && t >= p[0] && t <= p[p.len() - 1] {
                    let h = p.partition_point(|&x| x <= t).clamp(1, p.len() - 1) - 1;
                    debug_assert!(p[h] <= t && t <= p[h + 1]);
                    step.bracket = Some(h);
                }
                step.curvature = Curvature::new(tables, &step);
            }
            Family::Variance | Family::VarianceJeffreys => {
                let center = posterior.center();
                if !center.is_finite() {
                    return None;
                }
                // The same `u_g` as the plain formula.
                step.u = tables.nodes.iter().map(|&x| x - center).collect();
                step.uu = step.u.iter().map(|&u| u * u).collect();
                step.max_square = step.uu.iter().copied().fold(0.0, f64::max) * (1.0 + 1e-9);
                step.abs_u = step.u.iter().map(|u| u.abs()).collect();
                step.wu = w.iter().zip(&step.u).map(|(w, u)| w * u).collect();
                step.wuu = step.wu.iter().zip(&step.u).map(|(wu, u)| wu * u).collect();
                let (g0, g1) = step.kept;
                step.moments = [
                    w[g0..g1].iter().sum(),
                    step.wu[g0..g1].iter().sum(),
                    step.wuu[g0..g1].iter().sum(),
                ];
                step.abs_moment = dot(&w[g0..g1], &step.abs_u[g0..g1]);
                let skipped = (0..g0).chain(g1..w.len());
                for g in skipped {
                    step.skipped_moments[0] += w[g];
                    step.skipped_moments[1] += w[g] * step.abs_u[g];
                    step.skipped_moments[2] += w[g] * step.uu[g];
                }
                if family == Family::VarianceJeffreys {
                    step.jeffreys = Some(posterior.jeffreys_information()?);
                } else {
                    step.reduction = Reduction::new(&step);
                    step.spread = Spread::new(&step);
                }
            }
        }
        Some(step)
    }

    /// Upper bound of the signed plain criterion of every item of bucket `b`
    /// (`+∞` when there is none).
    pub(super) fn bucket_bound(
        &self,
        tables: &SelectionTables,
        gi: usize,
        group: &Group,
        b: usize,
    ) -> f64 {
        let nb = self.block_mass.len();
        let bound = match self.family {
            Family::Information => {
                let env = &group.envelope[b * nb..(b + 1) * nb];
                dot(&self.block_mass, env)
            }
            Family::Divergence => match self.bracket {
                Some(h) => {
                    let hp = tables.pivots.len();
                    let env = &group.envelope[b * hp * nb..(b + 1) * hp * nb];
                    let (lo, hi) = (&env[h * nb..(h + 1) * nb], &env[(h + 1) * nb..(h + 2) * nb]);
                    self.block_mass
                        .iter()
                        .zip(lo.iter().zip(hi))
                        .map(|(m, (x, y))| m * x.max(*y))
                        .sum()
                }
                None => f64::INFINITY,
            }
            .min(match &self.curvature {
                Some(c) => c.bound(gi, group, b),
                None => f64::INFINITY,
            }),
            Family::Variance | Family::VarianceJeffreys => {
                let size = variance_size(group.categories, self.w.len());
                // Signed (−EPV) and already widened for every rounding.
                return match group.envelope.get(b * size..(b + 1) * size) {
                    Some(env) => self.variance_bound(group.categories, env),
                    None => f64::INFINITY,
                };
            }
        };
        if bound.is_nan() {
            f64::INFINITY
        } else {
            bound * (1.0 + ROUNDING) + TINY
        }
    }

    /// Bounds `(lo, hi)` of the signed plain criterion of one tabulated item
    /// from its rows (non-finite when they cannot be established).
    pub(super) fn bounds(&self, gi: usize, group: &Group, rows: &[f64], item: &Item) -> (f64, f64) {
        let q = self.w.len();
        let (g0, g1) = self.kept;
        let w = &self.w[g0..g1];
        match self.family {
            Family::Information => {
                // Skipped nodes add between 0 and the tail (I ≥ 0).
                let v = dot(w, &rows[g0..g1]);
                let tail = self.tails[gi];
                let e = ROUNDING * (v.abs() + tail) + TINY;
                (v - e, v + tail + e)
            }
            Family::Divergence => {
                let mut probs = [0.0; MAX_CATEGORIES];
                let m = grid::probabilities(item, self.theta, self.scaling, &mut probs);
                debug_assert_eq!(m, group.categories);
                // CE = Σ_k p_k (−D_k), W·H = −W Σ_k p_k ln p_k, over the kept
                // nodes; a skipped node adds a divergence between 0 and its
                // cross-entropy, at most max_k |ln P_jgk|.
                let (mut cross, mut entropy) = (0.0, 0.0);
                for (k, &p) in probs[..group.categories].iter().enumerate() {
                    if p != 0.0 {
                        cross -= p * dot(w, &rows[k * q + g0..k * q + g1]);
                        entropy -= p * p.ln();
                    }
                }
                let wh = (self.total - self.skipped_mass) * entropy;
                let v = cross - wh;
                let tail = self.tails[gi];
                let e =
                    ROUNDING * (cross.abs() + wh.abs() + tail + self.skipped_mass * entropy) + TINY;
                (v - e, v + tail + e)
            }
            Family::Variance | Family::VarianceJeffreys => {
                unreachable!("the variance family is evaluated by buckets")
            }
        }
    }
}

/// `Σ a_i b_i` with four accumulators (vectorizes; the order differs from a
/// sequential sum by rounding only, see the module doc).
#[inline]
pub(super) fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0_f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut rest = 0.0;
    for (x, y) in ra.iter().zip(rb) {
        rest += x * y;
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + rest
}
