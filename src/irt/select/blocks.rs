//! The Fisher information of many polytomous items at one ability, as
//! structure-of-arrays blocks so that the loops run across items (and
//! vectorize) instead of item by item.
//!
//! This module owns [`PolytomousBlocks`], built once per bank with the
//! [`super::InformationIndex`]. It must return exactly what
//! [`Item::information`] returns, bit for bit: each block repeats the
//! per-item formula's operations in the same order (IEEE arithmetic is
//! deterministic and Rust never contracts `a * b + c`), only across a block of
//! items at a time. A unit test holds the two together; any change to the
//! polytomous information formulas of [`super::super::item`] must be made
//! here too.
//!
//! * GRM: `P_k = σ(z_k) − σ(z_{k+1})` taken on its small side and
//!   `I = Σ_k P_k·(D·a·(σ̄(z_k) − σ(z_{k+1})))²`, with [`logistic_pair`]
//!   (branch-free, so the whole loop vectorizes).
//! * GPCM: `P_k = exp(ζ_k − max ζ)/Σ_c exp(ζ_c − max ζ)` and
//!   `I = (D·a)²·Σ_k P_k (k − E[K])²`; the exponentials are `f64::exp`, as in
//!   the per-item formula (one call per category and item), the rest runs
//!   across items.

use super::super::item::{Item, MAX_CATEGORIES, PolytomousModel};
use super::super::model::{exp_neg, logistic_pair};

/// Items evaluated at once (stack buffers of this many values per category).
const LANES: usize = 64;

/// Valid GRM and GPCM items grouped by model and number of thresholds.
#[derive(Clone, Debug, Default)]
pub(super) struct PolytomousBlocks {
    /// One block per (model, thresholds).
    blocks: Vec<Block>,
}

/// Items of one model and one number of thresholds.
#[derive(Clone, Debug)]
struct Block {
    /// The model.
    model: PolytomousModel,
    /// Thresholds per item (`1..MAX_CATEGORIES`).
    m: usize,
    /// Bank index of each position.
    ids: Vec<u32>,
    /// Discrimination of each position.
    a: Vec<f64>,
    /// Threshold `k` of position `j` at `k·len + j`.
    thresholds: Vec<f64>,
}

impl PolytomousBlocks {
    /// The blocks of the bank items `ids` that are valid polytomous items;
    /// returns them and the ids left out (dichotomous or invalid items).
    pub(super) fn new(bank: &[Item], ids: &[u32]) -> (Self, Vec<u32>) {
        let mut rest = Vec::new();
        let mut groups: Vec<(PolytomousModel, usize, Vec<u32>)> = Vec::new();
        for &i in ids {
            match &bank[i as usize] {
                Item::Polytomous(p) if bank[i as usize].validate_at(0).is_ok() => {
                    let m = p.thresholds.len();
                    match groups.iter_mut().find(|g| g.0 == p.model && g.1 == m) {
                        Some(group) => group.2.push(i),
                        None => groups.push((p.model, m, vec![i])),
                    }
                }
                _ => rest.push(i),
            }
        }
        let blocks = groups
            .into_iter()
            .map(|(model, m, ids)| {
                let n = ids.len();
                let mut a = Vec::with_capacity(n);
                let mut thresholds = vec![0.0; m * n];
                for (j, &i) in ids.iter().enumerate() {
                    if let Item::Polytomous(p) = &bank[i as usize] {
                        a.push(p.a);
                        for (k, &t) in p.thresholds.iter().enumerate() {
                            thresholds[k * n + j] = t;
                        }
                    }
                }
                Block {
                    model,
                    m,
                    ids,
                    a,
                    thresholds,
                }
            })
            .collect();
        (Self { blocks }, rest)
    }

    /// Number of items in the blocks.
    pub(super) fn len(&self) -> usize {
        self.blocks.iter().map(|b| b.ids.len()).sum()
    }

    /// Heap size in bytes.
    pub(super) fn memory_bytes(&self) -> usize {
        self.blocks
            .iter()
            .map(|b| 4 * b.ids.len() + 8 * (b.a.len() + b.thresholds.len()))
            .sum()
    }

    /// Calls `f(bank index, I(θ))` for every item of the blocks, with
    /// [`Item::information`]'s value.
    pub(super) fn for_each(&self, theta: f64, scaling: f64, mut f: impl FnMut(usize, f64)) {
        self.visit::<false>(theta, scaling, |i, v, _| f(i, v));
    }

    /// Calls `f(bank index, v, e)` for every item of the blocks, where
    /// [`Item::information`]'s value is within `e` of `v` (`e = 0`: `v` is
    /// that value). Faster than [`PolytomousBlocks::for_each`]: the GPCM
    /// exponentials are the branch-free [`exp_neg`] (within a few ulp of
    /// `f64::exp`), so the GPCM loops vectorize; see [`Block::gpcm`] for the
    /// bound.
    pub(super) fn for_each_bounded(
        &self,
        theta: f64,
        scaling: f64,
        f: impl FnMut(usize, f64, f64),
    ) {
        self.visit::<true>(theta, scaling, f);
    }

    /// The two above.
    fn visit<const FAST: bool>(
        &self,
        theta: f64,
        scaling: f64,
        mut f: impl FnMut(usize, f64, f64),
    ) {
        let mut info = [0.0_f64; LANES];
        let mut err = [0.0_f64; LANES];
        for block in &self.blocks {
            let n = block.ids.len();
            for start in (0..n).step_by(LANES) {
                let end = (start + LANES).min(n);
                let out = &mut info[..end - start];
                let err = &mut err[..end - start];
                match block.model {
                    PolytomousModel::Grm => {
                        block.grm(start, end, theta, scaling, out);
                        err.fill(0.0);
                    }
                    PolytomousModel::Gpcm => {
                        block.gpcm::<FAST>(start, end, theta, scaling, out, err);
                    }
                }
                for ((&i, &v), &e) in block.ids[start..end].iter().zip(out.iter()).zip(err.iter()) {
                    f(i as usize, v, e);
                }
            }
        }
    }
}

impl Block {
    /// Threshold `k` of positions `start..end`.
    fn thresholds(&self, k: usize, start: usize, end: usize) -> &[f64] {
        let n = self.ids.len();
        &self.thresholds[k * n + start..k * n + end]
    }

    /// GRM information of positions `start..end` into `out` (the operations
    /// of `Item::information`, across items).
    fn grm(&self, start: usize, end: usize, theta: f64, scaling: f64, out: &mut [f64]) {
        let len = end - start;
        let mut da = [0.0_f64; LANES];
        // (σ, σ̄) of the upper boundary of the current category (P*_0 = 1).
        let mut up_s = [1.0_f64; LANES];
        let mut up_t = [0.0_f64; LANES];
        let (da, up_s, up_t) = (&mut da[..len], &mut up_s[..len], &mut up_t[..len]);
        for (d, &a) in da.iter_mut().zip(&self.a[start..end]) {
            *d = scaling * a;
        }
        out.fill(0.0);
        // Zipped slices of one length: no bounds checks, so the loops
        // vectorize.
        for k in 0..=self.m {
            if k < self.m {
                let b = self.thresholds(k, start, end);
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

    /// GPCM information of positions `start..end` into `out` (the operations
    /// of `Item::information` and `gpcm_probabilities`, across items), and 0
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
    fn gpcm<const FAST: bool>(
        &self,
        start: usize,
        end: usize,
        theta: f64,
        scaling: f64,
        out: &mut [f64],
        err: &mut [f64],
    ) {
        let len = end - start;
        let m = self.m;
        let mut da = [0.0_f64; LANES];
        let mut z = [0.0_f64; LANES];
        let mut max = [0.0_f64; LANES];
        let mut total = [0.0_f64; LANES];
        let mut mean = [0.0_f64; LANES];
        let mut p = [[0.0_f64; LANES]; MAX_CATEGORIES];
        let (da, z, max) = (&mut da[..len], &mut z[..len], &mut max[..len]);
        let (total, mean) = (&mut total[..len], &mut mean[..len]);
        for (d, &a) in da.iter_mut().zip(&self.a[start..end]) {
            *d = scaling * a;
        }
        // ζ_k, k = 0..=m (ζ_0 = 0), and their maximum (from 0).
        p[0][..len].fill(0.0);
        for k in 1..=m {
            let t = self.thresholds(k - 1, start, end);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    #[test]
    fn blocks_give_item_information_bit_for_bit() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut bank: Vec<Item> = Vec::new();
        for _ in 0..700 {
            let m = rng.random_range(1..8);
            let mut t: Vec<f64> = (0..m).map(|_| rng.random_range(-5.0..5.0)).collect();
            let a = rng.random_range(0.2..3.5);
            bank.push(if rng.random::<bool>() {
                t.sort_by(f64::total_cmp);
                t.dedup();
                Item::grm(a, t)
            } else {
                Item::gpcm(a, t)
            });
        }
        bank.push(Item::grm(1.0, vec![1.0, 0.0])); // invalid: left out
        let ids: Vec<u32> = (0..bank.len() as u32).collect();
        let (blocks, rest) = PolytomousBlocks::new(&bank, &ids);
        assert_eq!(rest, vec![700]);
        assert_eq!(blocks.len(), 700);
        for theta in [-40.0, -6.0, -1.3, 0.0, 0.77, 2.5, 9.0, 300.0] {
            for scaling in [1.0, 1.702] {
                let mut seen = 0;
                blocks.for_each(theta, scaling, |i, v| {
                    let expected = bank[i].information(theta, scaling);
                    assert_eq!(v.to_bits(), expected.to_bits(), "{:?} at {theta}", bank[i]);
                    seen += 1;
                });
                assert_eq!(seen, 700);
                blocks.for_each_bounded(theta, scaling, |i, v, e| {
                    let expected = bank[i].information(theta, scaling);
                    assert!(
                        (v - expected).abs() <= e,
                        "{:?} at {theta}: {v} ± {e} vs {expected}",
                        bank[i]
                    );
                    if let Item::Polytomous(p) = &bank[i] {
                        if p.model == PolytomousModel::Grm {
                            assert_eq!((v.to_bits(), e), (expected.to_bits(), 0.0));
                        }
                    }
                });
            }
        }
    }
}
