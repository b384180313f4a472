//! The lane kernels of [`super`]: the GRM and GPCM information of up to
//! [`LANES`] items side by side, one category at a time across the items, so
//! that the loops vectorize (exact, or with `FAST` within a stated error).

use super::super::super::item::PolytomousModel;
use super::super::super::model::{exp_neg, logistic_pair};
use super::super::super::simd::vectorized;
use super::LANES;

/// Items of one block side by side: their slopes, and their thresholds row by
/// row.
#[derive(Clone, Copy)]
pub(super) struct Lanes<'a> {
    /// Thresholds per item.
    pub(super) m: usize,
    /// Slope of each lane.
    pub(super) a: &'a [f64],
    /// Threshold `k` of lane `l` at `k·stride + offset + l`.
    pub(super) thresholds: &'a [f64],
    /// GPCM: `exp(−D·a·δ_k)` of each threshold, laid out as `thresholds`
    /// (the fast path of [`Lanes::gpcm`]).
    pub(super) factors: Option<&'a [f64]>,
    /// See `thresholds`.
    pub(super) stride: usize,
    /// See `thresholds`.
    pub(super) offset: usize,
}

impl Lanes<'_> {
    /// Information of every lane into `out` and its bound into `err` (0 for
    /// the GRM, and for the GPCM unless `FAST`).
    pub(super) fn evaluate<const FAST: bool>(
        &self,
        model: PolytomousModel,
        theta: f64,
        scaling: f64,
        out: &mut [f64],
        err: &mut [f64],
    ) {
        vectorized(
            #[inline(always)]
            || match model {
                PolytomousModel::Grm => {
                    self.grm(theta, scaling, out);
                    err.fill(0.0);
                }
                PolytomousModel::Gpcm => self.gpcm::<FAST>(theta, scaling, out, err),
            },
        );
    }

    /// Threshold `k` of every lane.
    fn row(&self, k: usize) -> &[f64] {
        let start = k * self.stride + self.offset;
        &self.thresholds[start..start + self.a.len()]
    }

    /// Factor `k` of every lane (see `factors`).
    fn factor_row<'b>(&self, factors: &'b [f64], k: usize) -> &'b [f64] {
        let start = k * self.stride + self.offset;
        &factors[start..start + self.a.len()]
    }

    /// GRM information of the lanes into `out` (the operations of
    /// `Item::information`, across items).
    #[inline(always)]
    fn grm(&self, theta: f64, scaling: f64, out: &mut [f64]) {
        let len = self.a.len();
        let mut da = [0.0_f64; LANES];
        // (σ, σ̄) of the upper boundary of the current category (P*_0 = 1).
        let mut up_s = [1.0_f64; LANES];
        let mut up_t = [0.0_f64; LANES];
        let (da, up_s, up_t) = (&mut da[..len], &mut up_s[..len], &mut up_t[..len]);
        for (d, &a) in da.iter_mut().zip(self.a) {
            *d = scaling * a;
        }
        out.fill(0.0);
        // Zipped slices of one length: no bounds checks, so the loops
        // vectorize.
        for k in 0..=self.m {
            if k < self.m {
                let b = self.row(k);
                for ((((o, &d), s_up), t_up), &b) in out
                    .iter_mut()
                    .zip(da.iter())
                    .zip(up_s.iter_mut())
                    .zip(up_t.iter_mut())
                    .zip(b)
                {
                    let z = d * (theta - b);
                    let (s, t) = logistic_pair(z);
                    let diff = if z >= 0.0 { t - *t_up } else { *s_up - s };
                    let pk = diff.max(0.0);
                    let score = d * (*t_up - s);
                    *o += pk * score * score;
                    *s_up = s;
                    *t_up = t;
                }
            } else {
                // P*_{m+1} = 0: (σ, σ̄) = (0, 1), never "high".
                for (((o, &d), &s_up), &t_up) in out
                    .iter_mut()
                    .zip(da.iter())
                    .zip(up_s.iter())
                    .zip(up_t.iter())
                {
                    let pk = (s_up - 0.0).max(0.0);
                    let score = d * (t_up - 0.0);
                    *o += pk * score * score;
                }
            }
        }
    }

    /// GPCM information of the lanes into `out` (the operations of
    /// `Item::information` and `gpcm_probabilities`, across items), and 0
    /// into `err`.
    ///
    /// `FAST`: the exponentials `exp(ζ_k − max ζ)` by [`exp_neg`] (argument
    /// clamped at −700) instead of `f64::exp`, and into `err` a bound on the
    /// difference to the exact formula's value. Each probability is then
    /// within a relative `δ ≤ 16u` of the exact formula's (a few ulp from the
    /// exponential, the same divisions), or below `e^−699` in absolute value
    /// where the clamp applies. The variance is a minimum over the centre,
    /// `Σ_k P_k (k − E[K])² = min_c Σ_k P_k (k − c)²`, so relative changes
    /// `δ` of the weights (and `≤ 2δ` of their sum) change it by at most
    /// `4δ` relatively; the rounding of either computation is within
    /// `γ_{m+3}·Var` plus `2·m·γ_{m+1}·√Var` (the mean's error, times
    /// `Σ P_k |k − E[K]| ≤ √Var`). `10⁻¹²·Var + 10⁻¹³·m·√Var + 10⁻²⁹⁰·m²`,
    /// times `(D·a)²`, covers it all with room for `m ≤ 31`.
    #[expect(
        clippy::needless_range_loop,
        reason = "categories index several arrays alike"
    )]
    #[inline(always)]
    fn gpcm<const FAST: bool>(&self, theta: f64, scaling: f64, out: &mut [f64], err: &mut [f64]) {
        if FAST
            && let Some(factors) = self.factors
            && self.gpcm_factored(factors, theta, scaling, out, err)
        {
            return;
        }
        let len = self.a.len();
        let m = self.m;
        let mut da = [0.0_f64; LANES];
        let mut z = [0.0_f64; LANES];
        let mut max = [0.0_f64; LANES];
        let mut total = [0.0_f64; LANES];
        let mut mean = [0.0_f64; LANES];
        // m + 1 rows only: a whole [[f64; LANES]; MAX_CATEGORIES] is 16 KB to
        // zero per call.
        let mut p = vec![[0.0_f64; LANES]; m + 1];
        let (da, z, max) = (&mut da[..len], &mut z[..len], &mut max[..len]);
        let (total, mean) = (&mut total[..len], &mut mean[..len]);
        for (d, &a) in da.iter_mut().zip(self.a) {
            *d = scaling * a;
        }
        // ζ_k, k = 0..=m (ζ_0 = 0), and their maximum (from 0).
        p[0][..len].fill(0.0);
        for k in 1..=m {
            let t = self.row(k - 1);
            for ((((pk, z), mx), &d), &t) in p[k][..len]
                .iter_mut()
                .zip(z.iter_mut())
                .zip(max.iter_mut())
                .zip(da.iter())
                .zip(t)
            {
                *z += d * (theta - t);
                *pk = *z;
                *mx = mx.max(*z);
            }
        }
        for pk in p.iter_mut().take(m + 1) {
            let pk = &mut pk[..len];
            for (v, &mx) in pk.iter_mut().zip(max.iter()) {
                *v -= mx;
            }
            if FAST {
                for v in pk.iter_mut() {
                    *v = exp_neg(v.max(-700.0));
                }
            } else {
                for v in pk.iter_mut() {
                    *v = v.exp();
                }
            }
            for (t, &v) in total.iter_mut().zip(pk.iter()) {
                *t += v;
            }
        }
        for (k, pk) in p.iter_mut().take(m + 1).enumerate() {
            let kf = k as f64;
            for ((v, mean), &t) in pk[..len].iter_mut().zip(mean.iter_mut()).zip(total.iter()) {
                *v = (*v / t).max(f64::MIN_POSITIVE);
                *mean += kf * *v;
            }
        }
        out.fill(0.0);
        for (k, pk) in p.iter().take(m + 1).enumerate() {
            let kf = k as f64;
            for ((o, &v), &mean) in out.iter_mut().zip(&pk[..len]).zip(mean.iter()) {
                let u = kf - mean;
                *o += v * u * u;
            }
        }
        if FAST {
            let mf = m as f64;
            for ((e, &o), &d) in err.iter_mut().zip(out.iter()).zip(da.iter()) {
                *e = d * d * (1e-12 * o + 1e-13 * mf * o.sqrt() + 1e-290 * mf * mf);
            }
        } else {
            err.fill(0.0);
        }
        for (o, &d) in out.iter_mut().zip(da.iter()) {
            *o *= d * d;
        }
    }

    /// [`Lanes::gpcm`]'s fast path with one exponential per item: with
    /// `r = e^{D·a·θ}` and the stored `c_k = e^{−D·a·δ_k}`, the unnormalized
    /// probabilities are `Q_0 = 1`, `Q_k = Q_{k−1}·(r·c_{k−1})` (that is
    /// `e^{ζ_k}`), `P_k = Q_k/Σ_j Q_j`. `false` (nothing written) unless every
    /// lane has `S = m·|D·a·θ| + Σ_k |D·a·δ_k| < 600`, so that no `Q_k`
    /// overflows or underflows.
    ///
    /// Error: `D·a·θ` is rounded (`|x|u`), `r` from [`exp_neg`] (within `8u`,
    /// and `u` more for `1/e^{−x}` when `x > 0`), each `c_k` within
    /// `(|D·a·δ_k| + 1)u` (its product and `f64::exp`), each product `u`: `Q_k`
    /// within `A·u`, `A = m(|x| + 12) + Σ_k |D·a·δ_k|`, relatively, and
    /// `P_k = Q_k·(1/Σ_j Q_j)` within `δ = (2A + m + 2)u·1.01` of the true
    /// probability; the exact
    /// formula's within `16u` ([`Lanes::gpcm`]). The same argument as there
    /// gives `4(δ + 16u)` relatively for the variance, on top of the roundings
    /// that `10⁻¹²·Var + 10⁻¹³·m·√Var + 10⁻²⁹⁰·m²` covers.
    #[inline(always)]
    fn gpcm_factored(
        &self,
        factors: &[f64],
        theta: f64,
        scaling: f64,
        out: &mut [f64],
        err: &mut [f64],
    ) -> bool {
        const UNIT: f64 = f64::EPSILON / 2.0;
        let len = self.a.len();
        let m = self.m;
        let mf = m as f64;
        let mut da = [0.0_f64; LANES];
        let mut x = [0.0_f64; LANES];
        let mut span = [0.0_f64; LANES];
        let (da, x, span) = (&mut da[..len], &mut x[..len], &mut span[..len]);
        for (((d, x), s), &a) in da
            .iter_mut()
            .zip(x.iter_mut())
            .zip(span.iter_mut())
            .zip(self.a)
        {
            *d = scaling * a;
            *x = *d * theta;
            *s = 0.0;
        }
        for k in 0..m {
            for ((s, &d), &t) in span.iter_mut().zip(da.iter()).zip(self.row(k)) {
                *s += (d * t).abs();
            }
        }
        // NaN fails the test too.
        let wide = span.iter().zip(x.iter()).fold(0, |n, (&s, &x)| {
            let span = mf * x.abs() + s;
            n + usize::from(span.is_nan() || span >= 600.0)
        });
        if wide > 0 {
            return false;
        }
        // q_k per lane, category by category; `r` in `x`.
        let mut q = vec![[0.0_f64; LANES]; m + 1];
        let mut total = [1.0_f64; LANES];
        let total = &mut total[..len];
        let mut delta = [0.0_f64; LANES];
        let delta = &mut delta[..len];
        for ((dl, r), &s) in delta.iter_mut().zip(x.iter_mut()).zip(span.iter()) {
            let a = mf * (r.abs() + 12.0) + s;
            *dl = ((2.0 * a + mf + 2.0) * 1.01 + 16.0) * UNIT;
            let e = exp_neg(-r.abs());
            *r = if *r > 0.0 { 1.0 / e } else { e };
        }
        q[0][..len].fill(1.0);
        for k in 1..=m {
            let (done, rest) = q.split_at_mut(k);
            let (prev, qk) = (&done[k - 1][..len], &mut rest[0][..len]);
            for ((((v, &p), &r), &c), t) in qk
                .iter_mut()
                .zip(prev)
                .zip(x.iter())
                .zip(self.factor_row(factors, k - 1))
                .zip(total.iter_mut())
            {
                *v = p * (r * c);
                *t += *v;
            }
        }
        let mut mean = [0.0_f64; LANES];
        let mean = &mut mean[..len];
        for t in total.iter_mut() {
            *t = 1.0 / *t;
        }
        for (k, qk) in q.iter_mut().take(m + 1).enumerate() {
            let kf = k as f64;
            for ((v, mean), &inverse) in qk[..len].iter_mut().zip(mean.iter_mut()).zip(total.iter())
            {
                *v = (*v * inverse).max(f64::MIN_POSITIVE);
                *mean += kf * *v;
            }
        }
        out.fill(0.0);
        for (k, pk) in q.iter().take(m + 1).enumerate() {
            let kf = k as f64;
            for ((o, &v), &mean) in out.iter_mut().zip(&pk[..len]).zip(mean.iter()) {
                let u = kf - mean;
                *o += v * u * u;
            }
        }
        for (((e, o), &d), &dl) in err
            .iter_mut()
            .zip(out.iter_mut())
            .zip(da.iter())
            .zip(delta.iter())
        {
            let var = *o;
            *e = d * d * ((1e-12 + 4.0 * dl) * var + 1e-13 * mf * var.sqrt() + 1e-290 * mf * mf);
            *o = var * (d * d);
        }
        true
    }
}
