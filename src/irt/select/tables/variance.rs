//! The expected posterior variance (MEPV) of a bucket's items, with bounds
//! that vouch for the plain formula's value (module doc of [`super`]).

use super::step::{Step, dot};
use super::*;

impl Step<'_> {
    /// Bounds `[lo, hi]` of the plain expected posterior variance of every
    /// lane of bucket `b` (module doc), computed across the lanes.
    #[expect(
        clippy::needless_range_loop,
        reason = "the three moments are indexed alike in several arrays"
    )]
    pub(super) fn variance_bucket(
        &self,
        group: &Group,
        b: usize,
        bank: &[Item],
        scratch: &mut Lanes,
        lo: &mut [f64; BUCKET_SIZE],
        hi: &mut [f64; BUCKET_SIZE],
    ) {
        const L: usize = BUCKET_SIZE;
        let q = self.w.len();
        let c = group.categories;
        let (start, end) = group.buckets[b];
        let (start, end) = (start as usize, end as usize);
        let n = end - start;
        let rows = group.lanes(b, q);
        let (g0, g1) = self.kept;
        let Lanes {
            probs,
            value,
            bound,
            unknown,
            others,
            rest,
            sums,
            own,
            moments,
            abs_moment,
        } = scratch;

        // P_jk(θ̂) per lane: across lanes for a dichotomous bucket (the
        // logistic of the model, within 20u of the plain formula's, see
        // `probability_slack`), else item by item (the plain formula's).
        let approximate = group.dichotomous[b];
        if approximate {
            let (p0, p1) = probs.split_at_mut(L);
            for ((p, q0), q1) in group.params[start..end].iter().zip(p0).zip(&mut p1[..L]) {
                let (big, small) = logistic_pair(self.scaling * p.a * (self.theta - p.b));
                let g = p.d - p.c;
                *q1 = p.c + g * big;
                *q0 = (1.0 - p.d) + g * small;
            }
        } else {
            let mut buf = [0.0; MAX_CATEGORIES];
            for (l, &i) in group.ids[start..end].iter().enumerate() {
                let m = grid::probabilities(&bank[i as usize], self.theta, self.scaling, &mut buf);
                debug_assert_eq!(m, c);
                for k in 0..c {
                    probs[k * L + l] = buf[k];
                }
            }
        }
        value.fill(0.0);
        bound.fill(0.0);
        unknown.fill(false);
        for r in 0..3 {
            others[r].fill(0.0);
            rest[r].fill(0.0);
        }

        // Jeffreys: each lane's own weights `w_g·√(J_g + I_jg)`, bit for bit
        // the plain formula's, and their moments.
        if let Some(info) = self.jeffreys {
            let info_rows = &rows[(c - 1) * q * L..c * q * L];
            own.clear();
            own.resize(q * L, 0.0);
            for r in 0..3 {
                moments[r].fill(0.0);
            }
            abs_moment.fill(0.0);
            for g in 0..q {
                let (w, j) = (self.w[g], info[g]);
                let (u, uu, au) = (self.u[g], self.uu[g], self.abs_u[g]);
                let lane = &info_rows[g * L..(g + 1) * L];
                let o = &mut own[g * L..(g + 1) * L];
                for l in 0..L {
                    o[l] = w * (j + lane[l]).sqrt();
                    moments[0][l] += o[l];
                    moments[1][l] += o[l] * u;
                    moments[2][l] += o[l] * uu;
                    abs_moment[l] += o[l] * au;
                }
            }
        } else {
            for r in 0..3 {
                moments[r].fill(self.moments[r]);
            }
            abs_moment.fill(self.abs_moment);
        }

        for k in 1..c {
            let row = &rows[(k - 1) * q * L..k * q * L];
            for s in sums.iter_mut() {
                s.fill(0.0);
            }
            let [s0, s1, s2] = sums;
            match self.jeffreys {
                None => {
                    for g in g0..g1 {
                        let (w, wu, wuu) = (self.w[g], self.wu[g], self.wuu[g]);
                        let lane = &row[g * L..(g + 1) * L];
                        for l in 0..L {
                            s0[l] += w * lane[l];
                            s1[l] += wu * lane[l];
                            s2[l] += wuu * lane[l];
                        }
                    }
                }
                Some(_) => {
                    for g in 0..q {
                        let (u, uu) = (self.u[g], self.uu[g]);
                        let lane = &row[g * L..(g + 1) * L];
                        let o = &own[g * L..(g + 1) * L];
                        for l in 0..L {
                            let wp = o[l] * lane[l];
                            s0[l] += wp;
                            s1[l] += wp * u;
                            s2[l] += wp * uu;
                        }
                    }
                }
            }
            let p = &probs[k * L..(k + 1) * L];
            let skipped = self.skipped_moments;
            for l in 0..L {
                let abs1 = (s0[l].max(0.0) * s2[l].max(0.0)).sqrt();
                let abs = [s0[l].abs(), abs1, s2[l].abs()];
                // Rounding, and the skipped nodes (0 ≤ P ≤ 1 there).
                let errs = [
                    ROUNDING * abs[0] + skipped[0],
                    ROUNDING * abs[1] + skipped[1],
                    ROUNDING * abs[2] + skipped[2],
                ];
                let (v, e, ok) = category_variance(p[l], [s0[l], s1[l], s2[l]], errs);
                value[l] += if ok { v } else { 0.0 };
                bound[l] += if ok { e } else { 0.0 };
                unknown[l] |= !ok;
                for r in 0..3 {
                    rest[r][l] += abs[r];
                }
                others[0][l] += s0[l];
                others[1][l] += s1[l];
                others[2][l] += s2[l];
            }
            // The rare lanes the fast formula cannot vouch for: the fallback.
            for l in 0..n {
                if unknown[l] && !value[l].is_nan() {
                    let errs = [
                        ROUNDING * s0[l].abs() + skipped[0],
                        ROUNDING * (s0[l].max(0.0) * s2[l].max(0.0)).sqrt() + skipped[1],
                        ROUNDING * s2[l].abs() + skipped[2],
                    ];
                    match self.fallback(p[l], [s0[l], s1[l], s2[l]], errs) {
                        Some((v, e)) => {
                            value[l] += v;
                            bound[l] += e;
                            unknown[l] = false;
                        }
                        // Poisons the lane: evaluated by the plain formula.
                        None => value[l] = f64::NAN,
                    }
                }
            }
        }
        // Category 0: Σ_k P_k = 1 up to (8C + 16)u per node. Across lanes,
        // then the fallback for the lanes that need it.
        let sum_slack = (8.0 * c as f64 + 16.0) * UNIT;
        let probability_slack = if approximate { 64.0 * UNIT } else { 0.0 };
        let p = &probs[..L];
        let skipped = self.skipped_moments;
        let [s0, s1, s2] = sums;
        for l in 0..L {
            let totals = [moments[0][l].abs(), abs_moment[l], moments[2][l].abs()];
            s0[l] = moments[0][l] - others[0][l];
            s1[l] = moments[1][l] - others[1][l];
            s2[l] = moments[2][l] - others[2][l];
            let errs = [
                ROUNDING * (totals[0] + rest[0][l]) + sum_slack * totals[0] + skipped[0],
                ROUNDING * (totals[1] + rest[1][l]) + sum_slack * totals[1] + skipped[1],
                ROUNDING * (totals[2] + rest[2][l]) + sum_slack * totals[2] + skipped[2],
            ];
            let (v, e, ok) = category_variance(p[l], [s0[l], s1[l], s2[l]], errs);
            value[l] += if ok { v } else { 0.0 };
            bound[l] += if ok { e } else { 0.0 };
            unknown[l] |= !ok;
            // Keep the errors for the fallback (in `rest`, no longer needed).
            rest[0][l] = errs[0];
        }
        for l in 0..n {
            if unknown[l] && !value[l].is_nan() {
                match self.fallback(p[l], [s0[l], s1[l], s2[l]], [rest[0][l], 0.0, 0.0]) {
                    Some((v, e)) => {
                        value[l] += v;
                        bound[l] += e;
                    }
                    None => value[l] = f64::NAN,
                }
            }
        }
        let sum_rounding = 2.0 * (c as f64 + 2.0) * UNIT + probability_slack;
        for l in 0..n {
            // The plain sum over the categories (terms ≥ 0), this one, and the
            // probabilities at θ̂ when they were computed across lanes.
            let e = bound[l] * (1.0 + probability_slack) + sum_rounding * value[l] + TINY;
            (lo[l], hi[l]) = if value[l].is_finite() && e.is_finite() {
                (value[l] - e, value[l] + e)
            } else {
                (f64::NEG_INFINITY, f64::INFINITY)
            };
        }
    }

    /// A category's term when [`category_variance`] cannot vouch for it: if
    /// `S_0` is surely above `10⁻²⁸⁰` (a category with next to no weight,
    /// whose sums are not known to within half of themselves), the plain
    /// variance is that of weights on the nodes (no subnormal terms, so
    /// rounding cannot push it out), which lies in `[0, max_g u_g²]`, and
    /// the term in `[0, p·max_g u_g²]`; else `None`.
    pub(super) fn fallback(
        &self,
        p: f64,
        [s0, _, _]: [f64; 3],
        [d0, _, _]: [f64; 3],
    ) -> Option<(f64, f64)> {
        (s0 - d0 > 1e-280 && p.is_finite()).then(|| {
            let half = 0.5 * p * self.max_square;
            (half, half)
        })
    }
}

/// Buffers of [`Step::variance_bucket`], one set per step.
pub(super) struct Lanes {
    /// `P_jk(θ̂)` of category `k`, lane `l` at `k·BUCKET_SIZE + l`.
    pub(super) probs: Vec<f64>,
    /// Per lane: the sum of the category terms, and of their bounds.
    pub(super) value: [f64; BUCKET_SIZE],
    pub(super) bound: [f64; BUCKET_SIZE],
    /// Per lane: a category term is not yet vouched for.
    pub(super) unknown: [bool; BUCKET_SIZE],
    /// Per lane: `Σ S_r` and `Σ |S_r|` over the categories `1..`.
    pub(super) others: [[f64; BUCKET_SIZE]; 3],
    pub(super) rest: [[f64; BUCKET_SIZE]; 3],
    /// Per lane: one category's `S_r`.
    pub(super) sums: [[f64; BUCKET_SIZE]; 3],
    /// Jeffreys: each lane's own weights, node-major.
    pub(super) own: Vec<f64>,
    /// Per lane: the weights' moments `Σ w u^r` and `Σ w |u|`.
    pub(super) moments: [[f64; BUCKET_SIZE]; 3],
    pub(super) abs_moment: [f64; BUCKET_SIZE],
}

impl Lanes {
    /// Empty buffers.
    pub(super) fn new() -> Self {
        Self {
            probs: vec![0.0; MAX_CATEGORIES * BUCKET_SIZE],
            value: [0.0; BUCKET_SIZE],
            bound: [0.0; BUCKET_SIZE],
            unknown: [false; BUCKET_SIZE],
            others: [[0.0; BUCKET_SIZE]; 3],
            rest: [[0.0; BUCKET_SIZE]; 3],
            sums: [[0.0; BUCKET_SIZE]; 3],
            own: Vec::new(),
            moments: [[0.0; BUCKET_SIZE]; 3],
            abs_moment: [0.0; BUCKET_SIZE],
        }
    }
}

/// One category's term `p·max(0, S_2/S_0 − (S_1/S_0)²)` of the expected
/// posterior variance from fast sums `S_r` within `d_r` of the plain ones,
/// with a bound on the difference to the plain term: `(value, bound, ok)`;
/// not `ok` when `S_0` is not known to within half of itself (or anything is
/// not finite). Branch-free, so the loop over lanes vectorizes.
///
/// With `ρ = d_0/S_0 ≤ 1/2`, `A = S_2/S_0` and `m = S_1/S_0`: the plain `A`
/// is within `ΔA = (d_2 + A·d_0)/(S_0 − d_0) ≤ (d_2 + A·d_0)(1 + 2ρ)/S_0`,
/// the plain `m` within `Δm = (d_1 + |m|·d_0)(1 + 2ρ)/S_0`, so the plain
/// `m²` within `2|m|·Δm + Δm²`; `8u·(A + m²)` covers the rounding of the
/// plain division, square and subtraction, and `max(0, ·)` is 1-Lipschitz.
#[inline(always)]
fn category_variance(p: f64, [s0, s1, s2]: [f64; 3], [d0, d1, d2]: [f64; 3]) -> (f64, f64, bool) {
    let r0 = 1.0 / s0;
    let rho = d0 * r0;
    let widen = (1.0 + 2.0 * rho) * r0;
    let a = s2 * r0;
    let m = s1 * r0;
    let b = m * m;
    let da = (d2 + a.abs() * d0) * widen;
    let dm = (d1 + m.abs() * d0) * widen;
    let db = (2.0 * m.abs() + dm) * dm;
    let slack = 8.0 * UNIT * (a.abs() + b);
    let v = p * (a - b).max(0.0);
    let e = p * (da + db + slack);
    // NaN fails every comparison.
    let ok = (s0 > 1e-250) & (rho <= 0.5) & ((v + e).abs() < f64::INFINITY);
    (v, e, ok)
}

impl SelectionTables {
    /// Variance family, two-category groups: per bucket, per node, the
    /// smallest and largest `P_j0(x_g)` and `P_j1(x_g)` over the bucket's
    /// items (the plain formula's values), laid out `[lo₀, hi₀, lo₁, hi₁]`,
    /// `q` each; empty for other groups (no bound).
    pub(super) fn variance_envelope(&self, group: &Group, bank: &[Item]) -> Vec<f64> {
        if group.categories != 2 || self.key.family != Family::Variance {
            return Vec::new();
        }
        let q = self.nodes.len();
        let mut env = Vec::with_capacity(group.buckets.len() * 4 * q);
        let mut probs = [0.0; MAX_CATEGORIES];
        for &(start, end) in &group.buckets {
            let mut rows = [
                vec![f64::INFINITY; q],
                vec![f64::NEG_INFINITY; q],
                vec![f64::INFINITY; q],
                vec![f64::NEG_INFINITY; q],
            ];
            for &i in &group.ids[start as usize..end as usize] {
                for (g, &x) in self.nodes.iter().enumerate() {
                    grid::probabilities(&bank[i as usize], x, self.scaling, &mut probs);
                    for k in 0..2 {
                        rows[2 * k][g] = rows[2 * k][g].min(probs[k]);
                        rows[2 * k + 1][g] = rows[2 * k + 1][g].max(probs[k]);
                    }
                }
            }
            for row in &rows {
                env.extend_from_slice(row);
            }
        }
        env
    }
}

impl Step<'_> {
    /// Upper bound of the signed plain criterion (`−EPV`) of every item of a
    /// two-category bucket with envelope `env` (`[lo₀, hi₀, lo₁, hi₁]`), or
    /// `+∞`.
    ///
    /// With `lo_g ≤ P_jgk ≤ hi_g` at every node, the plain posterior variance
    /// after answer `k` is `min_c Σ_g w_g P_jgk (x_g − c)² / Σ_g w_g P_jgk`;
    /// the numerator is at least `Σ_kept w_g lo_g (u_g − c)²` (non-negative
    /// terms dropped), minimized at the `lo`-weighted mean, and the
    /// denominator at most `Σ_kept w_g hi_g` plus the skipped mass (`P ≤ 1`):
    /// `V_k ≥ (S₂ − S₁²/S₀)/(H₀ + skipped)` with `S_r = Σ_kept w_g lo_g u_g^r`,
    /// `H₀ = Σ_kept w_g hi_g`. Both items' categories are monotone in `θ`
    /// (`P_j1` increases for the 4PL and the two-category GRM and GPCM), so
    /// `P_j1(θ̂)` lies between the envelope at the nodes bracketing `θ̂`, and
    /// `EPV = p₀V₀ + p₁V₁` with `p₀ = 1 − p₁` (within `4u`) is at least the
    /// smaller of its values at the two ends. Every rounding (these sums, the
    /// plain sums and divisions, within `ROUNDING·max u²`) is subtracted.
    pub(super) fn variance_bound(&self, env: &[f64]) -> f64 {
        let q = self.w.len();
        let (g0, g1) = self.kept;
        let (lo0, rest) = env.split_at(q);
        let (hi0, rest) = rest.split_at(q);
        let (lo1, hi1) = rest.split_at(q);
        let w = &self.w[g0..g1];
        let (wu, wuu) = (&self.wu[g0..g1], &self.wuu[g0..g1]);
        let skipped = self.skipped_moments[0];
        let slack = 8.0 * ROUNDING * self.max_square;
        let variance = |lo: &[f64], hi: &[f64]| -> f64 {
            let lo = &lo[g0..g1];
            let (s0, s1, s2) = (dot(w, lo), dot(wu, lo), dot(wuu, lo));
            let h0 = dot(w, &hi[g0..g1]) + skipped;
            if s0.is_nan() || s0 <= 1e-250 {
                return 0.0;
            }
            let shift = s1 * s1 / s0;
            let num = s2 - shift - 4.0 * ROUNDING * (s2.abs() + shift) - TINY;
            (num / (h0 * (1.0 + ROUNDING)) - slack).max(0.0)
        };
        let (v0, v1) = (variance(lo0, hi0), variance(lo1, hi1));
        // P_j1(θ̂) between the envelope at the bracketing nodes.
        let nodes = &self.nodes;
        let t = self.theta;
        let (p_lo, p_hi) = if t.is_nan() {
            return f64::INFINITY;
        } else if t < nodes[0] {
            (0.0, hi1[0])
        } else if t > nodes[q - 1] {
            (lo1[q - 1], 1.0)
        } else {
            let g = nodes.partition_point(|&x| x <= t).clamp(1, q) - 1;
            let next = (g + 1).min(q - 1);
            (lo1[g], hi1[next])
        };
        let (p_lo, p_hi) = (
            (p_lo * (1.0 - 1e-12)).max(0.0),
            (p_hi * (1.0 + 1e-12) + TINY).min(1.0),
        );
        let at = |p: f64| (1.0 - p) * v0 + p * v1;
        let epv = at(p_lo).min(at(p_hi)) * (1.0 - 16.0 * UNIT) - 8.0 * UNIT * self.max_square;
        if epv.is_nan() { f64::INFINITY } else { -epv }
    }
}
